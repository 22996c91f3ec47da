//! Golden byte vectors: `docs/golden/frames.json` holds, for every frame type and notable
//! variant (each flag, each error code, a compressed chunk, the capability bits), the exact
//! bytes on the wire and their decoded meaning. This test encodes the frames below and compares
//! with the file's bytes, decodes the file's bytes and compares with the frames, and renders
//! each frame's meaning and compares with the file's. The browser test
//! (`server/tests/browser.rs`) checks the page's JavaScript codec against the same file.
//!
//! The file is the specification's examples, so it changes only with the wire format: after a
//! deliberate wire change (which bumps the version), regenerate it with
//! `CHUNKCAST_BLESS=1 cargo test -p chunkcast-protocol --test golden` and review the diff.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use chunkcast_protocol::compress::decompress;
use chunkcast_protocol::wire::{
    Caps, Catalog, Chat, ChatKind, Decoder, Entry, ErrorFrame, FileDigest, Frame, Hello, Mode,
    Open, Opened, Resume, Welcome, encode,
};
use chunkcast_protocol::{
    AudioParams, Chunk, ChunkFlags, Codec, CodedAudio, ErrorCode, ImageParams, SampleFormat,
    StreamId, VideoParams, VisualFormat,
};
use serde_json::{Value, json};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/golden/frames.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// u64 fields are decimal strings in the file: a JSON number (a JavaScript double) holds only
/// 53 bits.
fn big(v: u64) -> Value {
    json!(v.to_string())
}

fn opt_big(v: Option<u64>) -> Value {
    v.map_or(Value::Null, big)
}

fn code(c: ErrorCode) -> (Value, Value) {
    (json!(c.to_u16()), json!(c.to_string()))
}

fn codec_meaning(c: &Codec) -> Value {
    match c {
        Codec::Bytes => json!({ "kind": "bytes" }),
        Codec::Audio(a) => {
            let format = match a.sample_format {
                SampleFormat::Int => json!("int"),
                SampleFormat::Float => json!("float"),
                SampleFormat::MuLaw => json!("mulaw"),
                SampleFormat::ALaw => json!("alaw"),
                SampleFormat::Coded(c) => json!({ "coded": {
                    "tag": c.tag, "block_align": c.block_align,
                    "samples_per_block": c.samples_per_block,
                }}),
            };
            json!({
                "kind": "audio", "sample_rate": a.sample_rate, "channels": a.channels,
                "bits_per_sample": a.bits_per_sample, "sample_format": format,
            })
        }
        Codec::Video(v) => json!({
            "kind": "video", "format": format_name(v.format), "width": v.width,
            "height": v.height, "fps_num": v.fps_num, "fps_den": v.fps_den,
        }),
        Codec::Image(i) => json!({
            "kind": "image", "format": format_name(i.format), "width": i.width,
            "height": i.height, "color": i.color,
        }),
    }
}

fn format_name(f: VisualFormat) -> &'static str {
    match f {
        VisualFormat::Mjpeg => "mjpeg",
        VisualFormat::Y4m => "y4m",
        VisualFormat::Mp4 => "mp4",
        VisualFormat::Png => "png",
        VisualFormat::Jpeg => "jpeg",
        VisualFormat::Gif => "gif",
        VisualFormat::Bmp => "bmp",
        VisualFormat::WebP => "webp",
        VisualFormat::Tiff => "tiff",
        VisualFormat::Fmp4 => "fmp4",
    }
}

fn caps_names(c: Caps) -> Value {
    let names = [
        (Caps::LZ4, "LZ4"),
        (Caps::DATAGRAMS, "DATAGRAMS"),
        (Caps::DIGEST_AT_END, "DIGEST_AT_END"),
        (Caps::ANY_FILE, "ANY_FILE"),
        (Caps::VERIFIED, "VERIFIED"),
        (Caps::CHAT, "CHAT"),
        (Caps::HEADER_CRC, "HEADER_CRC"),
        (Caps::RELAY, "RELAY"),
    ];
    json!(
        names
            .iter()
            .filter(|(bit, _)| c.contains(*bit))
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
    )
}

fn flag_names(f: ChunkFlags) -> Value {
    let names = [
        (ChunkFlags::KEY, "KEY"),
        (ChunkFlags::INIT, "INIT"),
        (ChunkFlags::END_OF_UNIT, "END_OF_UNIT"),
        (ChunkFlags::END_OF_STREAM, "END_OF_STREAM"),
        (ChunkFlags::COMPRESSED, "COMPRESSED"),
        (ChunkFlags::HEADER_CRC, "HEADER_CRC"),
    ];
    json!(
        names
            .iter()
            .filter(|(bit, _)| f.contains(*bit))
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
    )
}

/// A frame's meaning, in the file's language-neutral form (the browser test renders the
/// page's decoded frames the same way).
fn meaning(frame: &Frame) -> Value {
    let mut m = match frame {
        Frame::Hello(h) => json!({
            "min_version": h.min_version, "max_version": h.max_version, "caps": h.caps.0,
            "caps_names": caps_names(h.caps), "token": h.token, "client_name": h.client_name,
        }),
        Frame::Welcome(w) => json!({
            "version": w.version, "caps": w.caps.0, "caps_names": caps_names(w.caps),
            "session_id": big(w.session_id), "server_name": w.server_name,
        }),
        Frame::Error(e) => {
            let (c, n) = code(e.code);
            json!({ "request": e.request, "code": c, "code_name": n, "message": e.message })
        }
        Frame::Ping { nonce, time_us } => json!({ "nonce": big(*nonce), "time_us": big(*time_us) }),
        Frame::Pong {
            nonce,
            echo_us,
            time_us,
        } => json!({
            "nonce": big(*nonce), "echo_us": big(*echo_us), "time_us": big(*time_us),
        }),
        Frame::List { request, prefix } => json!({ "request": request, "prefix": prefix }),
        Frame::Catalog(c) => json!({
            "request": c.request,
            "last": c.last,
            "entries": c.entries.iter().map(|e| json!({
                "path": e.path, "codec": codec_meaning(&e.codec), "size": opt_big(e.size),
                "duration_us": opt_big(e.duration_us), "viewers": e.viewers, "note": e.note,
            })).collect::<Vec<_>>(),
        }),
        Frame::Open(o) => json!({
            "request": o.request,
            "stream": o.stream.0,
            "path": o.path,
            "mode": match o.mode { Mode::Download => "download", Mode::Realtime => "realtime" },
            "resume": match o.resume {
                Resume::Start => json!("start"),
                Resume::Seq(s) => json!({ "seq": big(s) }),
                Resume::Offset(at) => json!({ "offset": big(at) }),
            },
            "compress": o.compress,
            "raw": o.raw,
            "fragment": o.fragment,
            "header_crc": o.header_crc,
            "chunk_size": o.chunk_size,
        }),
        Frame::Opened(o) => json!({
            "request": o.request,
            "stream": o.stream.0,
            "codec": codec_meaning(&o.codec),
            "total_len": opt_big(o.total_len),
            "chunk_count": opt_big(o.chunk_count),
            "duration_us": opt_big(o.duration_us),
            "digest": match o.digest {
                FileDigest::None => json!("none"),
                FileDigest::Known(d) => json!({ "known": hex(&d) }),
                FileDigest::AtEnd => json!("at_end"),
            },
            "start_seq": big(o.start_seq),
            "start_offset": big(o.start_offset),
            "chunk_size": o.chunk_size,
            "note": o.note,
        }),
        Frame::Chunk(c) => json!({
            "stream": c.stream.0, "seq": big(c.seq), "offset": big(c.offset),
            "pts_us": big(c.pts_us), "duration_us": c.duration_us, "flags": c.flags.0,
            "flag_names": flag_names(c.flags), "raw_len": c.raw_len, "payload": hex(&c.payload),
        }),
        Frame::Close {
            stream,
            code: c,
            message,
        } => {
            let (c, n) = code(*c);
            json!({ "stream": stream.0, "code": c, "code_name": n, "message": message })
        }
        Frame::Publish {
            request,
            stream,
            channel,
            codec,
        } => json!({
            "request": request, "stream": stream.0, "channel": channel,
            "codec": codec_meaning(codec),
        }),
        Frame::Subscribe {
            request,
            stream,
            channel,
        } => json!({ "request": request, "stream": stream.0, "channel": channel }),
        Frame::Digest { stream, digest } => json!({ "stream": stream.0, "digest": hex(digest) }),
        Frame::Goodbye { code: c, message } => {
            let (c, n) = code(*c);
            json!({ "code": c, "code_name": n, "message": message })
        }
        Frame::Proof { stream, nodes } => json!({ "stream": stream.0, "nodes": hex(nodes) }),
        Frame::Chat(c) => json!({
            "kind": c.kind.to_u8(), "room": c.room, "author": big(c.author), "seq": big(c.seq),
            "sent_us": big(c.sent_us), "text": c.text,
        }),
        Frame::Relay { path } => {
            json!({ "path": path.iter().map(|&id| big(id)).collect::<Vec<_>>() })
        }
        _ => unreachable!("every frame type is rendered"),
    };
    m["type"] = json!(frame.name());
    m
}

const PCM16: Codec = Codec::Audio(AudioParams {
    sample_rate: 8_000,
    channels: 1,
    bits_per_sample: 16,
    sample_format: SampleFormat::Int,
});

fn digest() -> [u8; 32] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(0xa0))
}

fn chunk(seq: u64, flags: ChunkFlags, payload: &'static [u8]) -> Frame {
    Frame::Chunk(Chunk::new(
        StreamId(3),
        seq,
        seq * 4,
        seq * 20_000,
        20_000,
        flags,
        Bytes::from_static(payload),
    ))
}

fn open(name: &str, o: Open) -> (String, Frame) {
    (name.to_owned(), Frame::Open(o))
}

fn opened(stream: u32, codec: Codec, digest: FileDigest, note: Option<&str>) -> Opened {
    Opened {
        request: 4,
        stream: StreamId(stream),
        codec,
        total_len: Some(48_044),
        chunk_count: Some(150),
        duration_us: Some(3_000_000),
        digest,
        start_seq: 0,
        start_offset: 0,
        chunk_size: 320,
        note: note.map(str::to_owned),
    }
}

/// "abcd" × 16 as one hand-made lz4 block: 4 literals, a 55-byte match at offset 4, then the
/// 5 literals the block format requires at its end.
const LZ4_BLOCK: &[u8] = &[
    0x4f, b'a', b'b', b'c', b'd', 0x04, 0x00, 36, 0x50, b'd', b'a', b'b', b'c', b'd',
];

/// Every vector: a name and the frame.
fn vectors() -> Vec<(String, Frame)> {
    let mut v: Vec<(String, Frame)> = vec![
        (
            "hello".into(),
            Frame::Hello(Hello {
                min_version: 1,
                max_version: 1,
                caps: Caps::LZ4 | Caps::DATAGRAMS | Caps::DIGEST_AT_END | Caps::ANY_FILE,
                token: "s3cret".into(),
                client_name: "chunkcast/0.1.0".into(),
            }),
        ),
        (
            "hello_browser".into(),
            Frame::Hello(Hello {
                min_version: 1,
                max_version: 1,
                caps: Caps(0),
                token: String::new(),
                client_name: "chunkcast-web/1".into(),
            }),
        ),
        (
            "hello_v2".into(),
            Frame::Hello(Hello {
                min_version: 1,
                max_version: 2,
                caps: Caps::LZ4 | Caps::DIGEST_AT_END | Caps::ANY_FILE | Caps::VERIFIED,
                token: String::new(),
                client_name: "chunkcast/0.1.0".into(),
            }),
        ),
        (
            "hello_v2_header_crc".into(),
            Frame::Hello(Hello {
                min_version: 1,
                max_version: 2,
                caps: Caps::LZ4 | Caps::VERIFIED | Caps::HEADER_CRC,
                token: String::new(),
                client_name: "chunkcast/0.1.0".into(),
            }),
        ),
        (
            "welcome".into(),
            Frame::Welcome(Welcome {
                version: 1,
                caps: Caps::LZ4 | Caps::DIGEST_AT_END,
                session_id: 0x0123_4567_89ab_cdef,
                server_name: "chunkcast-server/0.1.0".into(),
            }),
        ),
        (
            "welcome_v2".into(),
            Frame::Welcome(Welcome {
                version: 2,
                caps: Caps::LZ4 | Caps::DIGEST_AT_END | Caps::ANY_FILE | Caps::VERIFIED,
                session_id: 0x0123_4567_89ab_cdef,
                server_name: "chunkcast-server/0.1.0".into(),
            }),
        ),
    ];
    for &c in ErrorCode::ALL.iter().chain(&[ErrorCode::Unknown(999)]) {
        v.push((
            format!("error_{}", c.label()),
            Frame::Error(ErrorFrame {
                request: 7,
                code: c,
                message: format!("{c}: détail"),
            }),
        ));
    }
    v.extend([
        (
            "ping".into(),
            Frame::Ping {
                nonce: 1,
                time_us: 2_000_000,
            },
        ),
        (
            "ping_wide".into(),
            Frame::Ping {
                nonce: u64::MAX,
                time_us: (1 << 53) + 1,
            },
        ),
        (
            "pong".into(),
            Frame::Pong {
                nonce: 1,
                echo_us: 2_000_000,
                time_us: 0xfedc_ba98_7654_3210,
            },
        ),
        (
            "list".into(),
            Frame::List {
                request: 1,
                prefix: String::new(),
            },
        ),
        (
            "list_live".into(),
            Frame::List {
                request: 2,
                prefix: "live/".into(),
            },
        ),
        (
            "catalog".into(),
            Frame::Catalog(Catalog {
                request: 1,
                last: true,
                entries: vec![
                    Entry {
                        path: "tone.wav".into(),
                        codec: PCM16,
                        size: Some(48_044),
                        duration_us: Some(3_000_000),
                        viewers: 0,
                        note: None,
                    },
                    Entry {
                        path: "clip.mjpeg".into(),
                        codec: Codec::Video(VideoParams {
                            format: VisualFormat::Mjpeg,
                            width: 160,
                            height: 120,
                            fps_num: 25,
                            fps_den: 1,
                        }),
                        size: Some(90_000),
                        duration_us: None,
                        viewers: 0,
                        note: None,
                    },
                    Entry {
                        path: "card.png".into(),
                        codec: Codec::Image(ImageParams {
                            format: VisualFormat::Png,
                            width: 640,
                            height: 480,
                            color: 2,
                        }),
                        size: Some(1_234),
                        duration_us: None,
                        viewers: 0,
                        note: None,
                    },
                    Entry {
                        path: "live/radio".into(),
                        codec: PCM16,
                        size: None,
                        duration_us: None,
                        viewers: 2,
                        note: None,
                    },
                ],
            }),
        ),
        (
            "catalog_part_with_notes".into(),
            Frame::Catalog(Catalog {
                request: 1,
                last: false,
                entries: vec![
                    Entry {
                        path: "notes.txt".into(),
                        codec: Codec::Bytes,
                        size: Some(5),
                        duration_us: None,
                        viewers: 0,
                        note: None,
                    },
                    Entry {
                        path: "broken.wav".into(),
                        codec: Codec::Bytes,
                        size: Some(44),
                        duration_us: None,
                        viewers: 0,
                        note: Some("served as bytes: wav: 0 channels".into()),
                    },
                ],
            }),
        ),
        (
            "catalog_empty_last".into(),
            Frame::Catalog(Catalog {
                request: 2,
                last: true,
                entries: vec![],
            }),
        ),
        open(
            "open_download",
            Open {
                request: 3,
                stream: StreamId(1),
                path: "tone.wav".into(),
                mode: Mode::Download,
                resume: Resume::Start,
                compress: false,
                raw: false,
                fragment: false,
                header_crc: false,
                chunk_size: 0,
            },
        ),
        open(
            "open_realtime_from_seq",
            Open {
                request: 4,
                stream: StreamId(2),
                path: "tone.wav".into(),
                mode: Mode::Realtime,
                resume: Resume::Seq(100),
                compress: false,
                raw: false,
                fragment: false,
                header_crc: false,
                chunk_size: 0,
            },
        ),
        open(
            "open_compress_from_offset",
            Open {
                request: 5,
                stream: StreamId(3),
                path: "dir/ça.bin".into(),
                mode: Mode::Download,
                resume: Resume::Offset(1 << 40),
                compress: true,
                raw: false,
                fragment: false,
                header_crc: false,
                chunk_size: 65_536,
            },
        ),
        open(
            "open_raw",
            Open {
                request: 6,
                stream: StreamId(4),
                path: "clip.mjpeg".into(),
                mode: Mode::Realtime,
                resume: Resume::Start,
                compress: true,
                raw: true,
                fragment: false,
                header_crc: false,
                chunk_size: 1 << 20,
            },
        ),
        open(
            "open_fragment",
            Open {
                request: 7,
                stream: StreamId(5),
                path: "film.mp4".into(),
                mode: Mode::Realtime,
                resume: Resume::Start,
                compress: false,
                raw: false,
                fragment: true,
                header_crc: false,
                chunk_size: 0,
            },
        ),
        open(
            "open_header_crc",
            Open {
                request: 8,
                stream: StreamId(6),
                path: "big.bin".into(),
                mode: Mode::Download,
                resume: Resume::Offset(1 << 20),
                compress: false,
                raw: false,
                fragment: false,
                header_crc: true,
                chunk_size: 0,
            },
        ),
        (
            "opened_digest_none".into(),
            Frame::Opened(opened(1, PCM16, FileDigest::None, None)),
        ),
        (
            "opened_digest_known".into(),
            Frame::Opened(opened(1, PCM16, FileDigest::Known(digest()), None)),
        ),
        (
            "opened_digest_at_end_note".into(),
            Frame::Opened(opened(
                1,
                Codec::Bytes,
                FileDigest::AtEnd,
                Some("served as bytes: corrupt png"),
            )),
        ),
        (
            "opened_unknown_sizes".into(),
            Frame::Opened(Opened {
                total_len: None,
                chunk_count: None,
                duration_us: None,
                start_seq: 7,
                start_offset: 2_240,
                ..opened(5, PCM16, FileDigest::None, None)
            }),
        ),
        (
            "opened_audio_float".into(),
            Frame::Opened(opened(
                2,
                Codec::Audio(AudioParams {
                    sample_rate: 48_000,
                    channels: 2,
                    bits_per_sample: 32,
                    sample_format: SampleFormat::Float,
                }),
                FileDigest::None,
                None,
            )),
        ),
        (
            "opened_audio_mulaw".into(),
            Frame::Opened(opened(
                2,
                Codec::Audio(AudioParams {
                    sample_rate: 8_000,
                    channels: 1,
                    bits_per_sample: 8,
                    sample_format: SampleFormat::MuLaw,
                }),
                FileDigest::None,
                None,
            )),
        ),
        (
            "opened_audio_alaw".into(),
            Frame::Opened(opened(
                2,
                Codec::Audio(AudioParams {
                    sample_rate: 8_000,
                    channels: 1,
                    bits_per_sample: 8,
                    sample_format: SampleFormat::ALaw,
                }),
                FileDigest::None,
                None,
            )),
        ),
        (
            "opened_audio_coded".into(),
            Frame::Opened(opened(
                2,
                Codec::Audio(AudioParams {
                    sample_rate: 22_050,
                    channels: 1,
                    bits_per_sample: 4,
                    sample_format: SampleFormat::Coded(CodedAudio {
                        tag: 0x0011,
                        block_align: 512,
                        samples_per_block: 1_017,
                    }),
                }),
                FileDigest::None,
                None,
            )),
        ),
        (
            "opened_video_y4m".into(),
            Frame::Opened(opened(
                3,
                Codec::Video(VideoParams {
                    format: VisualFormat::Y4m,
                    width: 160,
                    height: 120,
                    fps_num: 30_000,
                    fps_den: 1_001,
                }),
                FileDigest::None,
                None,
            )),
        ),
        (
            "opened_image_jpeg".into(),
            Frame::Opened(opened(
                4,
                Codec::Image(ImageParams {
                    format: VisualFormat::Jpeg,
                    width: 1,
                    height: 1,
                    color: 1,
                }),
                FileDigest::None,
                None,
            )),
        ),
        (
            "chunk_no_flags".into(),
            chunk(0, ChunkFlags::empty(), b"data"),
        ),
        (
            "chunk_key".into(),
            chunk(1, ChunkFlags::KEY, b"\x00\x01\xfe\xff"),
        ),
        ("chunk_init".into(), chunk(2, ChunkFlags::INIT, b"RIFF")),
        (
            "chunk_end_of_unit".into(),
            chunk(3, ChunkFlags::KEY | ChunkFlags::END_OF_UNIT, b"unit"),
        ),
        (
            "chunk_end_of_stream".into(),
            chunk(
                4,
                ChunkFlags::KEY | ChunkFlags::END_OF_UNIT | ChunkFlags::END_OF_STREAM,
                b"last",
            ),
        ),
        (
            "chunk_header_crc".into(),
            chunk(
                6,
                ChunkFlags::KEY | ChunkFlags::END_OF_UNIT | ChunkFlags::HEADER_CRC,
                b"proven by the tree",
            ),
        ),
        (
            "chunk_empty".into(),
            chunk(5, ChunkFlags::END_OF_STREAM, b""),
        ),
        (
            "chunk_compressed".into(),
            Frame::Chunk(Chunk {
                flags: ChunkFlags::KEY | ChunkFlags::END_OF_UNIT | ChunkFlags::COMPRESSED,
                raw_len: 64,
                payload: Bytes::from_static(LZ4_BLOCK),
                ..Chunk::new(
                    StreamId(9),
                    6,
                    1 << 33,
                    u64::MAX,
                    u32::MAX,
                    ChunkFlags::empty(),
                    Bytes::new(),
                )
            }),
        ),
        (
            "close_cancel".into(),
            Frame::Close {
                stream: StreamId(2),
                code: ErrorCode::None,
                message: String::new(),
            },
        ),
        (
            "close_lagged".into(),
            Frame::Close {
                stream: StreamId(2),
                code: ErrorCode::Lagged,
                message: "viewer fell 5 s behind".into(),
            },
        ),
        (
            "publish".into(),
            Frame::Publish {
                request: 8,
                stream: StreamId(10),
                channel: "live/radio".into(),
                codec: PCM16,
            },
        ),
        (
            "subscribe".into(),
            Frame::Subscribe {
                request: 9,
                stream: StreamId(11),
                channel: "live/radio".into(),
            },
        ),
        (
            "digest".into(),
            Frame::Digest {
                stream: StreamId(1),
                digest: digest(),
            },
        ),
        (
            "goodbye".into(),
            Frame::Goodbye {
                code: ErrorCode::None,
                message: String::new(),
            },
        ),
        (
            "goodbye_draining".into(),
            Frame::Goodbye {
                code: ErrorCode::Busy,
                message: "server is shutting down".into(),
            },
        ),
        (
            // The two nodes a 3-group file's stream from 0 needs before its first group: the
            // root (left: groups 0-1, right: group 2), then groups 0 and 1's parent.
            "proof".into(),
            Frame::Proof {
                stream: StreamId(1),
                nodes: Bytes::from(
                    chunkcast_protocol::verify::Outboard::from_bytes(&[0x5a; 3 * 16384])
                        .proof(0, 0, 1),
                ),
            },
        ),
        (
            "hello_chat".into(),
            Frame::Hello(Hello {
                min_version: 1,
                max_version: 1,
                caps: Caps::CHAT,
                token: String::new(),
                client_name: "chunkcast/0.1.0".into(),
            }),
        ),
        (
            "close_bad_input".into(),
            Frame::Close {
                stream: StreamId(14),
                code: ErrorCode::BadInput,
                message: "corrupt mjpeg: expected a marker 2 bytes into a frame".into(),
            },
        ),
        (
            "publish_fmp4".into(),
            Frame::Publish {
                request: 12,
                stream: StreamId(14),
                channel: "live/cam".into(),
                codec: Codec::Video(VideoParams {
                    format: VisualFormat::Fmp4,
                    width: 320,
                    height: 180,
                    fps_num: 30,
                    fps_den: 1,
                }),
            },
        ),
    ]);
    let chat = |kind, author, seq, sent_us, text: &str| Chat {
        kind,
        room: "call/standup".into(),
        author,
        seq,
        sent_us,
        text: text.into(),
    };
    let author = 0x0123_4567_89ab_cdef;
    v.extend([
        (
            "chat_send".into(),
            Frame::Chat(chat(ChatKind::Send, author, 3, 1_500_000, "héllo")),
        ),
        (
            "chat_ack".into(),
            Frame::Chat(chat(ChatKind::Ack, author, 3, 0, "")),
        ),
        (
            "chat_join".into(),
            Frame::Chat(chat(ChatKind::Join, author, 41, 0, "")),
        ),
        (
            "chat_message".into(),
            Frame::Chat(chat(ChatKind::Message, author, 42, 1_500_000, "héllo")),
        ),
    ]);
    // An edge relay's hello: the usual capabilities and `RELAY` (0x80).
    v.push((
        "hello_relay".into(),
        Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            caps: Caps::LZ4 | Caps::DIGEST_AT_END | Caps::ANY_FILE | Caps::RELAY,
            token: String::new(),
            client_name: "chunkcast/0.1.0".into(),
        }),
    ));
    // An edge's path before its subscriptions: two relays, the sender last.
    v.push((
        "relay".into(),
        Frame::Relay {
            path: vec![0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
        },
    ));
    v
}

fn render() -> Value {
    let vectors: Vec<Value> = vectors()
        .iter()
        .map(|(name, frame)| {
            let mut buf = BytesMut::new();
            encode(frame, &mut buf);
            json!({ "name": name, "hex": hex(&buf), "frame": meaning(frame) })
        })
        .collect();
    json!({
        "about": "chunkcast protocol v1 and v2 golden vectors (docs/PROTOCOL.md). `hex` is the whole \
                  frame, length prefix included; `frame` is its meaning: u64 fields are decimal \
                  strings, optional fields absent on the wire are null, byte fields are hex. \
                  Checked by protocol/core/tests/golden.rs and by the browser test \
                  (server/tests/browser.rs).",
        "vectors": vectors,
    })
}

#[test]
fn golden_vectors_match_the_codec() {
    let path = golden_path();
    let ours = render();
    if std::env::var_os("CHUNKCAST_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&ours).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        eprintln!("wrote {}", path.display());
    }
    let text = std::fs::read_to_string(&path).expect("docs/golden/frames.json");
    let file: Value = serde_json::from_str(&text).expect("the golden file is JSON");
    let file = file["vectors"].as_array().expect("a vectors array");
    let frames = vectors();
    let names: Vec<&str> = file.iter().map(|v| v["name"].as_str().unwrap()).collect();
    let ours_names: Vec<&str> = frames.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ours_names, "the file holds exactly these vectors");
    for ((name, frame), v) in frames.iter().zip(file) {
        let bytes = unhex(v["hex"].as_str().unwrap());
        // Encode: the same bytes.
        let mut buf = BytesMut::new();
        encode(frame, &mut buf);
        assert_eq!(hex(&buf), v["hex"].as_str().unwrap(), "{name}: encoding");
        // Decode: the same frame, all of the bytes consumed.
        let mut src = BytesMut::from(&bytes[..]);
        let decoded = Decoder::default()
            .decode(&mut src)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert!(src.is_empty(), "{name}: bytes left over");
        assert_eq!(&decoded, frame, "{name}: decoding");
        // Meaning: as written in the file.
        assert_eq!(meaning(&decoded), v["frame"], "{name}: meaning");
    }
}

/// Every frame type, chunk flag, error code and capability bit has a vector: a new one cannot
/// be added without its golden bytes.
#[test]
fn golden_vectors_cover_every_type_flag_and_code() {
    let frames = vectors();
    let mut types: Vec<_> = frames.iter().map(|(_, f)| f.frame_type()).collect();
    types.sort();
    types.dedup();
    assert_eq!(types, chunkcast_protocol::wire::FrameType::ALL);
    let mut flags = 0;
    let mut caps = 0;
    let mut codes = Vec::new();
    for (_, f) in &frames {
        match f {
            Frame::Chunk(c) => flags |= c.flags.0,
            Frame::Hello(h) => caps |= h.caps.0,
            Frame::Error(e) => codes.push(e.code),
            _ => {}
        }
    }
    assert_eq!(flags, ChunkFlags::ALL.0);
    assert_eq!(caps, 0x7f | Caps::RELAY.0);
    for c in ErrorCode::ALL {
        assert!(codes.contains(c), "{c:?}");
    }
}

#[test]
fn the_compressed_vector_expands_to_its_raw_bytes() {
    let Frame::Chunk(c) = vectors()
        .into_iter()
        .find(|(n, _)| n == "chunk_compressed")
        .unwrap()
        .1
    else {
        unreachable!()
    };
    let raw = decompress(c, 1 << 20).unwrap();
    assert_eq!(&raw.payload[..], "abcd".repeat(16).as_bytes());
}
