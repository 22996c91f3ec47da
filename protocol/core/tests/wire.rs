//! The wire format: every frame round-trips; hostile, truncated and split input is handled.

use bytes::{Bytes, BytesMut};
use chunkcast_protocol::wire::{
    Caps, Catalog, Chat, ChatKind, Decoder, Entry, ErrorFrame, FileDigest, Frame, FrameType, Hello,
    Limits, Mode, Open, Opened, Resume, Welcome, encode, encode_chunk_head,
};
use chunkcast_protocol::{
    AudioParams, Chunk, ChunkFlags, Codec, CodedAudio, DecodeError, ErrorCode, ImageParams,
    SampleFormat, StreamId, VideoParams, VisualFormat,
};
use proptest::prelude::*;

fn audio() -> Codec {
    Codec::Audio(AudioParams {
        sample_rate: 48_000,
        channels: 2,
        bits_per_sample: 16,
        sample_format: SampleFormat::Int,
    })
}

fn one_of_each() -> Vec<Frame> {
    vec![
        Frame::Hello(Hello {
            min_version: 1,
            max_version: 3,
            caps: Caps::LZ4 | Caps::DATAGRAMS,
            token: "tøken".into(),
            client_name: "test".into(),
        }),
        Frame::Welcome(Welcome {
            version: 1,
            caps: Caps::LZ4,
            session_id: u64::MAX - 1,
            server_name: "srv".into(),
        }),
        Frame::Error(ErrorFrame {
            request: 9,
            code: ErrorCode::NotFound,
            message: "no such file: a b/ç.wav".into(),
        }),
        Frame::Ping {
            nonce: 1,
            time_us: 2,
        },
        Frame::Pong {
            nonce: 1,
            echo_us: 2,
            time_us: 3,
        },
        Frame::List {
            request: 3,
            prefix: "live/".into(),
        },
        Frame::Catalog(Catalog {
            request: 3,
            last: true,
            entries: vec![
                Entry {
                    path: "a.wav".into(),
                    codec: audio(),
                    size: Some(1234),
                    duration_us: Some(10_000_000),
                    viewers: 0,
                    note: None,
                },
                Entry {
                    path: "clip.mjpeg".into(),
                    codec: Codec::Video(VideoParams {
                        format: VisualFormat::Mjpeg,
                        width: 320,
                        height: 240,
                        fps_num: 25,
                        fps_den: 1,
                    }),
                    size: None,
                    duration_us: None,
                    viewers: 7,
                    note: None,
                },
                Entry {
                    path: "card.png".into(),
                    codec: Codec::Image(ImageParams {
                        format: VisualFormat::Png,
                        width: 640,
                        height: 480,
                        color: 3,
                    }),
                    size: Some(0),
                    duration_us: Some(0),
                    viewers: 0,
                    note: None,
                },
                Entry {
                    path: "x".into(),
                    codec: Codec::Bytes,
                    size: None,
                    duration_us: None,
                    viewers: 0,
                    note: Some("served as bytes: wav: the header says 0 channels".into()),
                },
            ],
        }),
        Frame::Open(Open {
            request: 4,
            stream: StreamId(2),
            path: "dir/file.bin".into(),
            mode: Mode::Realtime,
            resume: Resume::Offset(1 << 40),
            compress: true,
            raw: true,
            fragment: false,
            header_crc: false,
            chunk_size: 65536,
        }),
        Frame::Open(Open {
            request: 5,
            stream: StreamId(3),
            path: String::new(),
            mode: Mode::Download,
            resume: Resume::Seq(17),
            compress: false,
            raw: false,
            fragment: false,
            header_crc: false,
            chunk_size: 0,
        }),
        Frame::Opened(Opened {
            request: 4,
            stream: StreamId(2),
            codec: audio(),
            total_len: Some(50_000_000),
            chunk_count: None,
            duration_us: Some(5),
            digest: FileDigest::Known([0xab; 32]),
            start_seq: 3,
            start_offset: 4096,
            chunk_size: 65536,
            note: None,
        }),
        Frame::Chunk(Chunk::new(
            StreamId(2),
            99,
            1 << 33,
            20_000,
            20_000,
            ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
            Bytes::from_static(b"payload bytes"),
        )),
        Frame::Chunk(Chunk::new(
            StreamId(0),
            0,
            0,
            0,
            0,
            ChunkFlags::END_OF_STREAM,
            Bytes::new(),
        )),
        Frame::Close {
            stream: StreamId(2),
            code: ErrorCode::None,
            message: String::new(),
        },
        Frame::Opened(Opened {
            request: 5,
            stream: StreamId(4),
            codec: Codec::Bytes,
            total_len: Some(1_000_000_000),
            chunk_count: Some(15_259),
            duration_us: None,
            digest: FileDigest::AtEnd,
            start_seq: 0,
            start_offset: 0,
            chunk_size: 65536,
            note: Some("served as bytes: corrupt png: CRC error in IHDR".into()),
        }),
        Frame::Digest {
            stream: StreamId(4),
            digest: [0x5c; 32],
        },
        Frame::Proof {
            stream: StreamId(4),
            nodes: Bytes::from(vec![0x3c; 128]),
        },
        Frame::Chat(Chat {
            kind: ChatKind::Message,
            room: "call/r".into(),
            author: 9,
            seq: 2,
            sent_us: 77,
            text: "hi".into(),
        }),
        Frame::Relay {
            path: vec![0x0102_0304_0506_0708, 9],
        },
        Frame::Publish {
            request: 6,
            stream: StreamId(8),
            channel: "live/cam".into(),
            codec: audio(),
        },
        Frame::Subscribe {
            request: 7,
            stream: StreamId(9),
            channel: "live/cam".into(),
        },
        Frame::Goodbye {
            code: ErrorCode::Timeout,
            message: "idle".into(),
        },
    ]
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
    let mut d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn every_frame_type_round_trips() {
    for frame in one_of_each() {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        assert_eq!(
            decode_all(&buf).unwrap(),
            vec![frame.clone()],
            "{}",
            frame.name()
        );
    }
}

#[test]
fn chunk_payload_is_a_slice_of_the_read_buffer() {
    let payload = Bytes::from(vec![7u8; 65536]);
    let chunk = Chunk::new(StreamId(1), 0, 0, 0, 0, ChunkFlags::KEY, payload);
    let mut buf = BytesMut::new();
    encode(&Frame::Chunk(chunk), &mut buf);
    let frozen_start = buf.as_ptr() as usize;
    let frozen_end = frozen_start + buf.len();
    let Some(Frame::Chunk(c)) = Decoder::default().decode(&mut buf).unwrap() else {
        panic!()
    };
    let p = c.payload.as_ptr() as usize;
    assert!(
        p >= frozen_start && p + c.payload.len() <= frozen_end,
        "payload was copied"
    );
}

#[test]
fn head_then_payload_equals_whole_encoding() {
    let chunk = Chunk::new(
        StreamId(5),
        1,
        2,
        3,
        4,
        ChunkFlags::INIT,
        Bytes::from_static(b"abc"),
    );
    let mut whole = BytesMut::new();
    encode(&Frame::Chunk(chunk.clone()), &mut whole);
    let mut split = BytesMut::new();
    encode_chunk_head(&chunk, &mut split);
    split.extend_from_slice(&chunk.payload);
    assert_eq!(whole, split);
}

#[test]
fn corrupt_chunk_is_reported_and_decoding_goes_on() {
    let chunk = Chunk::new(
        StreamId(5),
        1,
        2,
        3,
        4,
        ChunkFlags::KEY,
        Bytes::from_static(b"abcdef"),
    );
    let mut buf = BytesMut::new();
    encode(&Frame::Chunk(chunk.clone()), &mut buf);
    let good_len = buf.len();
    encode(&Frame::Chunk(chunk.clone()), &mut buf);
    buf[good_len - 2] ^= 0x01; // a bit flip in the first chunk's payload
    let mut d = Decoder::default();
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::Checksum {
            stream: StreamId(5),
            seq: 1
        })
    );
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Frame::Chunk(chunk)));
    // A flipped header bit is caught too: the CRC covers the header fields.
    let mut buf = BytesMut::new();
    encode(
        &Frame::Chunk(Chunk::new(
            StreamId(5),
            1,
            2,
            3,
            4,
            ChunkFlags::KEY,
            Bytes::new(),
        )),
        &mut buf,
    );
    buf[10] ^= 0x80;
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Err(DecodeError::Checksum { .. })
    ));
}

/// With `HEADER_CRC` the CRC covers the 37 header bytes only: a flipped payload bit passes
/// the decoder (the tree check is what catches it), a flipped header bit still does not.
#[test]
fn a_header_crc_chunk_leaves_its_payload_to_the_tree() {
    let chunk = Chunk::new(
        StreamId(5),
        1,
        2,
        3,
        4,
        ChunkFlags::KEY | ChunkFlags::HEADER_CRC,
        Bytes::from_static(b"abcdef"),
    );
    let mut buf = BytesMut::new();
    encode(&Frame::Chunk(chunk.clone()), &mut buf);
    let len = buf.len();
    let mut flipped = buf.clone();
    flipped[len - 2] ^= 0x01;
    let Ok(Some(Frame::Chunk(got))) = Decoder::default().decode(&mut flipped) else {
        panic!("a payload outside the CRC decodes");
    };
    assert_eq!(&got.payload[..], b"abcddf");
    let mut header = buf.clone();
    header[10] ^= 0x80;
    assert!(matches!(
        Decoder::default().decode(&mut header),
        Err(DecodeError::Checksum { .. })
    ));
    // Without the flag the same flip is a checksum error.
    let mut full = BytesMut::new();
    encode(
        &Frame::Chunk(Chunk {
            flags: ChunkFlags::KEY,
            ..chunk
        }),
        &mut full,
    );
    full[len - 2] ^= 0x01;
    assert!(matches!(
        Decoder::default().decode(&mut full),
        Err(DecodeError::Checksum { .. })
    ));
}

#[test]
fn limits_are_enforced_before_allocation() {
    let limits = Limits {
        max_frame_len: 100,
        max_string_len: 8,
        max_list_len: 1,
    };
    let mut d = Decoder::new(limits);
    let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x0a][..]);
    assert!(matches!(
        d.decode(&mut huge),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    assert!(
        huge.capacity() < 1024,
        "reserved memory for a refused frame"
    );

    let mut long = BytesMut::new();
    encode(
        &Frame::List {
            request: 1,
            prefix: "123456789".into(),
        },
        &mut long,
    );
    assert_eq!(
        Decoder::new(limits).decode(&mut long),
        Err(DecodeError::StringTooLong { len: 9, max: 8 })
    );
    let mut list = BytesMut::new();
    let e = Entry {
        path: "a".into(),
        codec: Codec::Bytes,
        size: None,
        duration_us: None,
        viewers: 0,
        note: None,
    };
    encode(
        &Frame::Catalog(Catalog {
            request: 1,
            last: true,
            entries: vec![e.clone(), e],
        }),
        &mut list,
    );
    assert_eq!(
        Decoder::new(limits).decode(&mut list),
        Err(DecodeError::ListTooLong { len: 2, max: 1 })
    );
}

#[test]
fn malformed_frames_get_typed_errors() {
    assert_eq!(decode_all(&[0, 0, 0, 0]), Err(DecodeError::EmptyFrame));
    assert_eq!(
        decode_all(&[0, 0, 0, 1, 0x7f]),
        Err(DecodeError::UnknownFrameType(0x7f))
    );
    assert_eq!(
        decode_all(&[0, 0, 0, 2, 0x04, 0]),
        Err(DecodeError::Truncated("PING"))
    );
    let mut ping = BytesMut::new();
    encode(
        &Frame::Ping {
            nonce: 1,
            time_us: 2,
        },
        &mut ping,
    );
    ping[3] += 1;
    ping.extend_from_slice(&[0]);
    assert_eq!(
        decode_all(&ping),
        Err(DecodeError::TrailingBytes("PING", 1))
    );
    let mut list = BytesMut::new();
    encode(
        &Frame::List {
            request: 1,
            prefix: "ab".into(),
        },
        &mut list,
    );
    let n = list.len();
    list[n - 1] = 0xff;
    assert_eq!(decode_all(&list), Err(DecodeError::BadUtf8));
}

#[test]
fn unknown_chunk_flags_are_rejected() {
    let mut c = Chunk::new(StreamId(1), 0, 0, 0, 0, ChunkFlags::empty(), Bytes::new());
    c.flags = ChunkFlags(0x40);
    let mut buf = BytesMut::new();
    encode(&Frame::Chunk(c), &mut buf);
    assert!(matches!(
        decode_all(&buf),
        Err(DecodeError::InvalidField {
            field: "chunk flags",
            ..
        })
    ));
}

fn arb_string() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 /._ç€-]{0,40}").unwrap()
}

fn arb_codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::Bytes),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            0u8..5,
            (any::<u16>(), 1u16.., any::<u32>())
        )
            .prop_map(|(r, c, b, f, (tag, block_align, samples_per_block))| {
                Codec::Audio(AudioParams {
                    sample_rate: r,
                    channels: c,
                    bits_per_sample: b,
                    sample_format: match f {
                        0 => SampleFormat::Int,
                        1 => SampleFormat::Float,
                        2 => SampleFormat::MuLaw,
                        3 => SampleFormat::ALaw,
                        _ => SampleFormat::Coded(CodedAudio {
                            tag,
                            block_align,
                            samples_per_block,
                        }),
                    },
                })
            }),
        (0u8..3, any::<u32>(), any::<u32>(), any::<u32>(), 1u32..).prop_map(|(f, w, h, n, d)| {
            Codec::Video(VideoParams {
                format: VisualFormat::from_code(f).unwrap(),
                width: w,
                height: h,
                fps_num: n,
                fps_den: d,
            })
        }),
        (3u8..9, any::<u32>(), any::<u32>(), any::<u8>()).prop_map(|(f, w, h, c)| {
            Codec::Image(ImageParams {
                format: VisualFormat::from_code(f).unwrap(),
                width: w,
                height: h,
                color: c,
            })
        }),
    ]
}

/// A note as it survives the wire: absent, or a non-empty string (an empty one means none).
fn arb_note() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), "[a-z :é]{1,20}".prop_map(Some)]
}

fn arb_opt() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), (0..u64::MAX).prop_map(Some)]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            arb_string(),
            arb_string()
        )
            .prop_map(|(a, b, c, t, n)| Frame::Hello(Hello {
                min_version: a,
                max_version: b,
                caps: Caps(c),
                token: t,
                client_name: n
            })),
        (any::<u32>(), any::<u16>(), arb_string()).prop_map(|(r, c, m)| Frame::Error(ErrorFrame {
            request: r,
            code: ErrorCode::from_u16(c),
            message: m
        })),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(n, e, t)| Frame::Pong {
            nonce: n,
            echo_us: e,
            time_us: t
        }),
        (
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec(
                (
                    arb_string(),
                    arb_codec(),
                    arb_opt(),
                    arb_opt(),
                    any::<u32>(),
                    arb_note()
                ),
                0..5
            )
        )
            .prop_map(|(r, last, es)| Frame::Catalog(Catalog {
                request: r,
                last,
                entries: es
                    .into_iter()
                    .map(|(path, codec, size, duration_us, viewers, note)| Entry {
                        path,
                        codec,
                        size,
                        duration_us,
                        viewers,
                        note
                    })
                    .collect()
            })),
        (
            any::<u32>(),
            any::<u32>(),
            arb_string(),
            any::<bool>(),
            0u8..3,
            any::<u64>(),
            any::<bool>(),
            any::<(bool, bool, bool)>(),
            any::<u32>()
        )
            .prop_map(
                |(r, s, p, rt, rk, at, z, (raw, fragment, header_crc), cs)| Frame::Open(Open {
                    request: r,
                    stream: StreamId(s),
                    path: p,
                    mode: if rt { Mode::Realtime } else { Mode::Download },
                    resume: match rk {
                        0 => Resume::Start,
                        1 => Resume::Seq(at),
                        _ => Resume::Offset(at),
                    },
                    compress: z,
                    raw,
                    fragment,
                    header_crc,
                    chunk_size: cs
                })
            ),
        (
            any::<u32>(),
            any::<u32>(),
            arb_codec(),
            arb_opt(),
            arb_opt(),
            arb_opt(),
            prop_oneof![
                Just(FileDigest::None),
                Just(FileDigest::AtEnd),
                any::<[u8; 32]>().prop_map(FileDigest::Known)
            ],
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            arb_note()
        )
            .prop_map(|(r, s, codec, t, c, d, g, ss, so, cs, note)| Frame::Opened(
                Opened {
                    request: r,
                    stream: StreamId(s),
                    codec,
                    total_len: t,
                    chunk_count: c,
                    duration_us: d,
                    digest: g,
                    start_seq: ss,
                    start_offset: so,
                    chunk_size: cs,
                    note
                }
            )),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            0u8..0x10,
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(s, q, o, p, d, f, data)| Frame::Chunk(Chunk::new(
                StreamId(s),
                q,
                o,
                p,
                d,
                ChunkFlags(f),
                Bytes::from(data)
            ))),
        (any::<u32>(), any::<u32>(), arb_string(), arb_codec()).prop_map(|(r, s, c, codec)| {
            Frame::Publish {
                request: r,
                stream: StreamId(s),
                channel: c,
                codec,
            }
        }),
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(s, d)| Frame::Digest {
            stream: StreamId(s),
            digest: d,
        }),
        (any::<u32>(), 0usize..8, any::<u8>()).prop_map(|(s, n, b)| Frame::Proof {
            stream: StreamId(s),
            nodes: Bytes::from(vec![b; n * 64]),
        }),
        (any::<u16>(), arb_string()).prop_map(|(c, m)| Frame::Goodbye {
            code: ErrorCode::from_u16(c),
            message: m
        }),
        (
            0u8..4,
            arb_string(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            arb_string()
        )
            .prop_map(|(k, room, author, seq, sent_us, text)| Frame::Chat(Chat {
                kind: ChatKind::from_u8(k).unwrap(),
                room,
                author,
                seq,
                sent_us,
                text,
            })),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(frames in proptest::collection::vec(arb_frame(), 1..6)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            encode(f, &mut buf);
        }
        prop_assert_eq!(decode_all(&buf).unwrap(), frames);
    }

    #[test]
    fn split_input_decodes_the_same_as_whole(
        frames in proptest::collection::vec(arb_frame(), 1..4),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let mut whole = BytesMut::new();
        for f in &frames {
            encode(f, &mut whole);
        }
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &whole[..];
        let mut cuts = cuts.into_iter().cycle();
        while !rest.is_empty() {
            let n = cuts.next().unwrap().min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_over_reserve(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let limits = Limits::default();
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::new();
        // One byte at a time: the slowest link, and every split point at once.
        for b in data {
            buf.extend_from_slice(&[b]);
            if d.decode(&mut buf).is_err() {
                break;
            }
            prop_assert!(buf.capacity() <= limits.max_frame_len as usize + 4096);
        }
    }

    #[test]
    fn truncated_frames_are_need_more_never_wrong(frame in arb_frame(), keep in 0.0f64..1.0) {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        let n = ((buf.len() as f64) * keep) as usize;
        let mut part = BytesMut::from(&buf[..n.min(buf.len() - 1)]);
        prop_assert_eq!(Decoder::default().decode(&mut part), Ok(None));
    }
}

#[test]
fn digest_frame_is_laid_out_as_specified() {
    // docs/PROTOCOL.md, section 11.
    let mut b = BytesMut::new();
    encode(
        &Frame::Digest {
            stream: StreamId(4),
            digest: [0x5c; 32],
        },
        &mut b,
    );
    let mut want = vec![0, 0, 0, 0x25, 0x0f, 0, 0, 0, 4];
    want.extend([0x5c; 32]);
    assert_eq!(&b[..], &want[..]);
}

/// The `ANY_FILE` additions, byte for byte as PROTOCOL.md §2, §4.7, §4.9 and §11 give them.
#[test]
fn any_file_layouts_are_as_documented() {
    let note = "served as bytes: corrupt png: CRC error in IHDR";
    let opened = Frame::Opened(Opened {
        request: 2,
        stream: StreamId(1),
        codec: Codec::Bytes,
        total_len: Some(13),
        chunk_count: Some(1),
        duration_us: None,
        digest: FileDigest::AtEnd,
        start_seq: 0,
        start_offset: 0,
        chunk_size: 65536,
        note: Some(note.into()),
    });
    let mut b = BytesMut::new();
    encode(&opened, &mut b);
    let mut want = vec![0, 0, 0, 0x68, 0x09, 0, 0, 0, 2, 0, 0, 0, 1, 0];
    want.extend_from_slice(&13u64.to_be_bytes());
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&[0xff; 8]);
    want.push(2);
    want.extend_from_slice(&[0; 16]);
    want.extend_from_slice(&65536u32.to_be_bytes());
    want.extend_from_slice(&(note.len() as u16).to_be_bytes());
    want.extend_from_slice(note.as_bytes());
    assert_eq!(&b[..], &want[..]);
    assert_eq!(Decoder::default().decode(&mut b).unwrap(), Some(opened));

    // Without a note, OPENED is exactly the old layout.
    let plain = Opened {
        request: 2,
        stream: StreamId(1),
        codec: Codec::Bytes,
        total_len: Some(13),
        chunk_count: Some(1),
        duration_us: None,
        digest: FileDigest::AtEnd,
        start_seq: 0,
        start_offset: 0,
        chunk_size: 65536,
        note: None,
    };
    let mut b = BytesMut::new();
    encode(&Frame::Opened(plain), &mut b);
    assert_eq!(b.len(), 4 + 1 + 53 + 1);

    // IMA-ADPCM, 8 kHz mono, 256-byte blocks of 505 samples: 18 bytes.
    let ima = Codec::Audio(AudioParams {
        sample_rate: 8000,
        channels: 1,
        bits_per_sample: 4,
        sample_format: SampleFormat::Coded(CodedAudio {
            tag: 0x11,
            block_align: 256,
            samples_per_block: 505,
        }),
    });
    let e = Entry {
        path: String::new(),
        codec: ima,
        size: None,
        duration_us: None,
        viewers: 0,
        note: Some("n".into()),
    };
    let mut b = BytesMut::new();
    encode(
        &Frame::Catalog(Catalog {
            request: 1,
            last: true,
            entries: vec![e],
        }),
        &mut b,
    );
    // flags: LAST | NOTES; then the entry: path, codec, size, duration, viewers, note.
    assert_eq!(b[9], 0x03);
    assert_eq!(
        &b[14..32],
        &[
            1, 0, 0, 0x1f, 0x40, 0, 1, 0, 4, 4, 0, 0x11, 1, 0, 0, 0, 1, 0xf9
        ]
    );
    assert_eq!(&b[b.len() - 3..], &[0, 1, b'n']);
    // A block alignment of 0 does not decode.
    let at = 14 + 12;
    b[at] = 0;
    b[at + 1] = 0;
    assert!(matches!(
        Decoder::default().decode(&mut b),
        Err(DecodeError::InvalidField {
            field: "block_align",
            ..
        })
    ));
    // Unknown catalog flag bits are refused.
    let mut b = BytesMut::new();
    encode(
        &Frame::Catalog(Catalog {
            request: 1,
            last: true,
            entries: vec![],
        }),
        &mut b,
    );
    b[9] = 0x04;
    assert!(Decoder::default().decode(&mut b).is_err());
}

/// The type bytes and names written out literally, apart from the table that declares them,
/// so that renumbering or renaming a frame type fails here; and every frame encodes with the
/// type byte its `frame_type()` says.
#[test]
fn frame_types_are_stable() {
    let pinned = [
        (0x01, FrameType::Hello, "HELLO"),
        (0x02, FrameType::Welcome, "WELCOME"),
        (0x03, FrameType::Error, "ERROR"),
        (0x04, FrameType::Ping, "PING"),
        (0x05, FrameType::Pong, "PONG"),
        (0x06, FrameType::List, "LIST"),
        (0x07, FrameType::Catalog, "CATALOG"),
        (0x08, FrameType::Open, "OPEN"),
        (0x09, FrameType::Opened, "OPENED"),
        (0x0a, FrameType::Chunk, "CHUNK"),
        (0x0b, FrameType::Close, "CLOSE"),
        (0x0c, FrameType::Publish, "PUBLISH"),
        (0x0d, FrameType::Subscribe, "SUBSCRIBE"),
        (0x0e, FrameType::Goodbye, "GOODBYE"),
        (0x0f, FrameType::Digest, "DIGEST"),
        (0x10, FrameType::Proof, "PROOF"),
        (0x11, FrameType::Chat, "CHAT"),
        (0x13, FrameType::Relay, "RELAY"),
    ];
    assert_eq!(FrameType::ALL.len(), pinned.len());
    for ((value, ty, name), listed) in pinned.into_iter().zip(FrameType::ALL) {
        assert_eq!(*listed, ty, "ALL is in value order");
        assert_eq!((ty.to_u8(), ty.name()), (value, name));
        assert_eq!(FrameType::from_u8(value), Some(ty));
    }
    assert_eq!(FrameType::from_u8(0x00), None);
    assert_eq!(FrameType::from_u8(0xff), None);
    let frames = one_of_each();
    for f in &frames {
        let mut buf = BytesMut::new();
        encode(f, &mut buf);
        assert_eq!(buf[4], f.frame_type().to_u8(), "{}", f.name());
    }
    let mut seen: Vec<FrameType> = frames.iter().map(Frame::frame_type).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, FrameType::ALL, "one_of_each covers every type");
}
