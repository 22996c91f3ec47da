use super::*;
use chunkcast_protocol::wire::chunk::StreamId;

fn input(format: Option<InputFormat>) -> LiveInput {
    LiveInput::new(Config::new(StreamId(0)), format, Limits::default()).unwrap()
}

/// Pushes `data` in pieces of `step` bytes, one ms apart; returns the chunks and what
/// `finish` dropped.
fn run(mut li: LiveInput, data: &[u8], step: usize) -> (LiveInput, Vec<Chunk>, usize) {
    let mut out = Vec::new();
    for (i, piece) in data.chunks(step).enumerate() {
        li.push(piece, i as u64 * 1000, &mut out).unwrap();
    }
    let dropped = li.finish(&mut out).unwrap();
    (li, out, dropped)
}

/// Whole units: (bytes, key, pts) from the chunks, init bytes apart.
type Units = Vec<(Vec<u8>, bool, u64)>;

fn units(chunks: &[Chunk]) -> (Vec<u8>, Units) {
    let mut init = Vec::new();
    let mut units = Vec::new();
    let mut cur: Option<(Vec<u8>, bool, u64)> = None;
    let mut offset = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.seq, i as u64);
        assert_eq!(c.offset, offset);
        offset += c.payload.len() as u64;
        if c.has(ChunkFlags::INIT) {
            assert!(cur.is_none(), "init inside a unit");
            init.extend_from_slice(&c.payload);
            continue;
        }
        let u = cur.get_or_insert_with(|| (Vec::new(), c.has(ChunkFlags::KEY), c.pts_us));
        u.0.extend_from_slice(&c.payload);
        if c.has(ChunkFlags::END_OF_UNIT) {
            units.push(cur.take().unwrap());
        }
    }
    assert!(cur.is_none(), "a unit without its end");
    (init, units)
}

/// A small JPEG: SOI, SOF0 of `w`×`h`, SOS, entropy data with stuffing and a restart marker
/// (and an FF D9 inside an APP segment, which must not end the frame), EOI.
fn jpeg(w: u16, h: u16, fill: u8) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    j.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00]);
    j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 8]);
    j.extend_from_slice(&h.to_be_bytes());
    j.extend_from_slice(&w.to_be_bytes());
    j.extend_from_slice(&[1, 1, 0x11, 0]);
    j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0]);
    j.extend_from_slice(&[fill, 0xFF, 0x00, fill, 0xFF, 0xD0, fill, fill]);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

#[test]
fn mjpeg_frames_are_key_units_timed_by_arrival_whatever_the_pieces() {
    let frames: Vec<Vec<u8>> = (0..5).map(|i| jpeg(320, 180, i)).collect();
    let stream: Vec<u8> = frames.concat();
    for step in [1, 3, 7, 64, stream.len()] {
        let (li, chunks, dropped) = run(input(None), &stream, step);
        assert_eq!(dropped, 0);
        assert_eq!(li.format(), Some(InputFormat::Mjpeg));
        let Some(Codec::Video(v)) = li.codec() else {
            panic!("{:?}", li.codec())
        };
        assert_eq!(
            (v.width, v.height, v.format),
            (320, 180, VisualFormat::Mjpeg)
        );
        let (init, got) = units(&chunks);
        assert!(init.is_empty());
        assert_eq!(got.len(), 5, "step {step}");
        for (i, (bytes, key, _)) in got.iter().enumerate() {
            assert_eq!(bytes, &frames[i], "step {step} frame {i}");
            assert!(key);
        }
        let pts: Vec<u64> = got.iter().map(|u| u.2).collect();
        assert!(pts.windows(2).all(|w| w[0] < w[1]), "{pts:?}");
    }
}

#[test]
fn mjpeg_arrival_time_is_the_frames_last_byte() {
    let mut li = input(Some(InputFormat::Mjpeg));
    let f = jpeg(16, 16, 1);
    let mut out = Vec::new();
    li.push(&f[..10], 5_000, &mut out).unwrap();
    li.push(&f[10..], 45_000, &mut out).unwrap();
    li.push(&f, 85_000, &mut out).unwrap();
    let (_, u) = units(&out);
    assert_eq!(u.iter().map(|u| u.2).collect::<Vec<_>>(), [40_000, 80_000]);
}

#[test]
fn a_truncated_last_frame_is_dropped_and_said() {
    let mut stream = jpeg(16, 16, 1);
    let second = jpeg(16, 16, 2);
    stream.extend_from_slice(&second[..second.len() - 3]);
    let (_, chunks, dropped) = run(input(None), &stream, 5);
    assert_eq!(units(&chunks).1.len(), 1);
    assert_eq!(dropped, second.len() - 3);
}

#[test]
fn garbage_is_a_clear_error_not_a_guess() {
    let mut out = Vec::new();
    let mut li = input(None);
    let e = li
        .push(b"hello, this is not media at all", 0, &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("not MJPEG, Y4M, WAV"), "{e}");

    // MJPEG whose frame breaks: a byte where a marker must be.
    let mut li = input(Some(InputFormat::Mjpeg));
    let e = li
        .push(&[0xFF, 0xD8, 0x12, 0x34, 0x56, 0x78], 0, &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("corrupt mjpeg"), "{e}");

    // Bytes that never show a start of image: refused after the skip limit, not buffered.
    let mut li = LiveInput::new(
        Config::new(StreamId(0)),
        Some(InputFormat::Mjpeg),
        Limits {
            max_skip_bytes: 1000,
            ..Limits::default()
        },
    )
    .unwrap();
    let mut err = None;
    for _ in 0..10 {
        if let Err(e) = li.push(&[0x55; 200], 0, &mut out) {
            err = Some(e);
            break;
        }
    }
    assert!(err.unwrap().to_string().contains("no JPEG start-of-image"));
    assert!(out.is_empty());
}

#[test]
fn a_unit_over_the_limit_is_refused_before_it_is_buffered() {
    let limits = Limits {
        max_unit_bytes: 4096,
        ..Limits::default()
    };
    // A JPEG that never ends: refused once it passes the limit.
    let mut li =
        LiveInput::new(Config::new(StreamId(0)), Some(InputFormat::Mjpeg), limits).unwrap();
    let mut out = Vec::new();
    let mut head = jpeg(16, 16, 1);
    head.truncate(head.len() - 2);
    li.push(&head, 0, &mut out).unwrap();
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = li.push(&[0x11; 100], 0, &mut out) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(MediaError::TooLarge { .. })), "{err:?}");
    assert!(li.buffered() < 4096 + 200);

    // An fMP4 fragment whose header announces 1 GiB: refused at its header.
    let init = init_segment(90_000, 3000, 0);
    let mut li = LiveInput::new(Config::new(StreamId(0)), Some(InputFormat::Fmp4), limits).unwrap();
    li.push(&init, 0, &mut out).unwrap();
    let mut huge = (1u32 << 30).to_be_bytes().to_vec();
    huge.extend_from_slice(b"moof");
    let e = li.push(&huge, 0, &mut out).unwrap_err();
    assert!(matches!(e, MediaError::TooLarge { .. }), "{e}");
}

#[test]
fn y4m_header_is_init_and_frames_are_timed_by_their_rate() {
    let mut s = b"YUV4MPEG2 W4 H2 F30:1 C444\n".to_vec();
    let frame = 4 * 2 * 3;
    for i in 0..4u8 {
        s.extend_from_slice(if i == 2 {
            b"FRAME Ixyz\n" as &[u8]
        } else {
            b"FRAME\n"
        });
        s.extend(std::iter::repeat_n(i, frame));
    }
    for step in [1, 5, 1000] {
        let (li, chunks, dropped) = run(input(None), &s, step);
        assert_eq!(dropped, 0);
        let Some(Codec::Video(v)) = li.codec() else {
            panic!()
        };
        assert_eq!((v.width, v.height, v.fps_num, v.fps_den), (4, 2, 30, 1));
        let (init, u) = units(&chunks);
        assert_eq!(init, b"YUV4MPEG2 W4 H2 F30:1 C444\n");
        assert_eq!(u.len(), 4);
        assert_eq!(u[3].2, 100_000);
        assert!(u[2].0.starts_with(b"FRAME Ixyz\n"));
    }
    let mut li = input(Some(InputFormat::Y4m));
    let mut out = Vec::new();
    li.push(b"YUV4MPEG2 W4 H2 F30:1 C444\n", 0, &mut out)
        .unwrap();
    let e = li.push(b"FRAMX\n", 0, &mut out).unwrap_err();
    assert!(e.to_string().contains("FRAME line"), "{e}");
}

/// A WAV header as ffmpeg writes it to a pipe: sizes 0xFFFFFFFF, a LIST chunk before data.
fn wav_header(rate: u32, channels: u16) -> Vec<u8> {
    let mut h = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    h.extend_from_slice(&(channels * 2).to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"LIST\x05\x00\x00\x00abcde\x00");
    h.extend_from_slice(b"data\xff\xff\xff\xff");
    h
}

#[test]
fn wav_from_a_pipe_is_timed_by_sample_count_and_its_tail_kept() {
    let header = wav_header(48_000, 2);
    let mut s = header.clone();
    // 50 ms and a half frame.
    s.extend(std::iter::repeat_n(7u8, 2400 * 4 + 2));
    let (li, chunks, dropped) = run(input(None), &s, 333);
    assert_eq!(dropped, 2, "the half frame");
    assert_eq!(
        li.codec(),
        Some(Codec::Audio(AudioParams {
            sample_rate: 48_000,
            channels: 2,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int
        }))
    );
    let (init, u) = units(&chunks);
    assert_eq!(init, header);
    // 20 ms units: 960 frames, 960, then the 480 left at the end.
    assert_eq!(
        u.iter().map(|u| (u.0.len(), u.2)).collect::<Vec<_>>(),
        [(3840, 0), (3840, 20_000), (1920, 40_000)]
    );
    assert_eq!(li.end_us(), 50_000);
}

#[test]
fn a_wav_data_size_is_obeyed_and_what_follows_is_not_audio() {
    let mut s = wav_header(8000, 1);
    let n = s.len();
    s[n - 4..].copy_from_slice(&100u32.to_le_bytes());
    s.extend(std::iter::repeat_n(1u8, 100));
    s.extend_from_slice(b"id3 \x04\x00\x00\x00junk");
    let (li, chunks, _) = run(input(None), &s, 17);
    let (_, u) = units(&chunks);
    assert_eq!(u.iter().map(|u| u.0.len()).sum::<usize>(), 100);
    assert_eq!(li.end_us(), 50 * 125);
}

#[test]
fn lying_wav_headers_are_refused() {
    let mut out = Vec::new();
    let mut h = wav_header(48_000, 2);
    h[22] = 0; // 0 channels
    h[23] = 0;
    let e = input(None).push(&h, 0, &mut out).unwrap_err();
    assert!(e.to_string().contains("wav"), "{e}");
    // A chunk before data that claims 4 GiB: refused at its header, nothing buffered for it.
    let mut h = b"RIFF\xff\xff\xff\xffWAVEjunk\xf0\xff\xff\xff".to_vec();
    h.extend_from_slice(&[0; 64]);
    let e = input(None).push(&h, 0, &mut out).unwrap_err();
    assert!(matches!(e, MediaError::TooLarge { .. }), "{e}");
}

#[test]
fn headerless_pcm_needs_its_format_and_is_cut_like_wav() {
    let f: InputFormat = "pcm:8000:1:s16le".parse().unwrap();
    let (li, chunks, _) = run(input(Some(f)), &[0u8; 640], 64);
    assert!(matches!(li.codec(), Some(Codec::Audio(a)) if a.sample_rate == 8000));
    let (init, u) = units(&chunks);
    assert!(init.is_empty());
    assert_eq!(u.len(), 2);
    assert_eq!(u[1].2, 20_000);
    assert!("pcm:8000:0:s16le".parse::<InputFormat>().is_err());
    assert!("pcm:8000:1:s12".parse::<InputFormat>().is_err());
    assert!("flac".parse::<InputFormat>().is_err());
}

// ---- fMP4, built box by box -------------------------------------------------------------

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = ((u32::from(version)) << 24 | flags).to_be_bytes().to_vec();
    b.extend_from_slice(body);
    boxed(kind, &b)
}

/// ftyp + moov with one 320×180 avc1 video track (id 1) and one audio track (id 2), and trex
/// defaults for the video track: `duration`, and `flags` (0x10000: non-sync).
fn init_segment(timescale: u32, duration: u32, flags: u32) -> Vec<u8> {
    let mut tkhd = vec![0u8; 80];
    tkhd[8..12].copy_from_slice(&1u32.to_be_bytes());
    tkhd[72..76].copy_from_slice(&(320u32 << 16).to_be_bytes());
    tkhd[76..80].copy_from_slice(&(180u32 << 16).to_be_bytes());
    let mut mdhd = vec![0u8; 20];
    mdhd[8..12].copy_from_slice(&timescale.to_be_bytes());
    let mut hdlr = vec![0u8; 21];
    hdlr[4..8].copy_from_slice(b"vide");
    let mut avc1 = vec![0u8; 78];
    avc1[24..26].copy_from_slice(&320u16.to_be_bytes());
    avc1[26..28].copy_from_slice(&180u16.to_be_bytes());
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend_from_slice(&boxed(b"avc1", &avc1));
    let stbl = boxed(b"stbl", &full(b"stsd", 0, 0, &stsd));
    let minf = boxed(b"minf", &stbl);
    let mdia = [full(b"mdhd", 0, 0, &mdhd), full(b"hdlr", 0, 0, &hdlr), minf].concat();
    let video = boxed(
        b"trak",
        &[full(b"tkhd", 0, 3, &tkhd), boxed(b"mdia", &mdia)].concat(),
    );
    let mut atkhd = vec![0u8; 80];
    atkhd[8..12].copy_from_slice(&2u32.to_be_bytes());
    let mut ahdlr = vec![0u8; 21];
    ahdlr[4..8].copy_from_slice(b"soun");
    let audio = boxed(
        b"trak",
        &[
            full(b"tkhd", 0, 3, &atkhd),
            boxed(
                b"mdia",
                &[full(b"mdhd", 0, 0, &mdhd), full(b"hdlr", 0, 0, &ahdlr)].concat(),
            ),
        ]
        .concat(),
    );
    let trex = |id: u32, d: u32, f: u32| {
        let mut b = Vec::new();
        for v in [id, 1, d, 0, f] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        full(b"trex", 0, 0, &b)
    };
    let mvex = boxed(
        b"mvex",
        &[trex(2, 1024, 0), trex(1, duration, flags)].concat(),
    );
    let moov = boxed(
        b"moov",
        &[full(b"mvhd", 0, 0, &[0; 96]), video, audio, mvex].concat(),
    );
    [boxed(b"ftyp", b"isomiso6"), moov].concat()
}

/// A fragment of `n` video samples from `dts`: its first sample's flags given in the trun
/// (`first`), the rest from the trex defaults; an audio traf first, to be skipped.
fn fragment(dts: u64, n: u32, first: Option<u32>, payload: u8) -> Vec<u8> {
    let mut atraf = full(b"tfhd", 0, 0x20000, &2u32.to_be_bytes());
    atraf.extend_from_slice(&full(b"tfdt", 1, 0, &0u64.to_be_bytes()));
    let mut trun = n.to_be_bytes().to_vec();
    let mut flags = 0x200; // sizes
    trun.extend_from_slice(&0u32.to_be_bytes()); // data offset
    flags |= 1;
    if let Some(f) = first {
        trun.extend_from_slice(&f.to_be_bytes());
        flags |= 4;
    }
    for _ in 0..n {
        trun.extend_from_slice(&10u32.to_be_bytes());
    }
    let vtraf = [
        full(b"tfhd", 0, 0x20000, &1u32.to_be_bytes()),
        full(b"tfdt", 1, 0, &dts.to_be_bytes()),
        full(b"trun", 0, flags, &trun),
    ]
    .concat();
    let moof = boxed(
        b"moof",
        &[
            full(b"mfhd", 0, 0, &1u32.to_be_bytes()),
            boxed(b"traf", &atraf),
            boxed(b"traf", &vtraf),
        ]
        .concat(),
    );
    let mdat = boxed(b"mdat", &vec![payload; (n * 10) as usize]);
    [boxed(b"styp", b"msdh"), moof, mdat].concat()
}

#[test]
fn fmp4_init_is_init_and_each_fragment_one_unit_keyed_by_its_first_sample() {
    const NON_SYNC: u32 = 0x0001_0000;
    let init = init_segment(90_000, 3000, NON_SYNC);
    let frags = [
        fragment(900_000, 30, Some(0x0200_0000), 1), // sync (first-sample flags)
        fragment(990_000, 30, None, 2),              // trex default: non-sync
        fragment(1_080_000, 30, Some(NON_SYNC), 3),  // explicitly non-sync
        fragment(1_170_000, 30, Some(0), 4),
    ];
    // ffmpeg ends a fragmented MP4 with an `mfra` index, even on a pipe: a trailer.
    let mfra = boxed(b"mfra", &full(b"mfro", 0, 0, &16u32.to_be_bytes()));
    let stream = [init.clone(), frags.concat(), mfra].concat();
    for step in [1, 13, 4096] {
        let mut cfg = Config::new(StreamId(0));
        cfg.chunk_size = 100;
        let li = LiveInput::new(cfg, None, Limits::default()).unwrap();
        let (li, chunks, dropped) = run(li, &stream, step);
        assert_eq!(dropped, 0);
        assert_eq!(
            li.codec(),
            Some(Codec::Video(VideoParams {
                format: VisualFormat::Fmp4,
                width: 320,
                height: 180,
                fps_num: 30,
                fps_den: 1
            }))
        );
        assert!(chunks.iter().all(|c| c.payload.len() <= 100));
        let (got_init, u) = units(&chunks);
        assert_eq!(got_init, init);
        assert_eq!(u.len(), 4);
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(&u[i].0, f);
        }
        assert_eq!(
            u.iter().map(|u| (u.1, u.2)).collect::<Vec<_>>(),
            [
                (true, 0),
                (false, 1_000_000),
                (false, 2_000_000),
                (true, 3_000_000)
            ]
        );
    }
}

#[test]
fn a_non_fragmented_or_broken_mp4_says_why() {
    let mut out = Vec::new();
    // moov without mvex.
    let s = [
        boxed(b"ftyp", b"isom"),
        boxed(b"moov", &full(b"mvhd", 0, 0, &[0; 96])),
    ]
    .concat();
    let e = input(None).push(&s, 0, &mut out).unwrap_err();
    assert!(e.to_string().contains("not a fragmented MP4"), "{e}");
    // mdat first (moov at the end).
    let s = [boxed(b"ftyp", b"isom"), boxed(b"mdat", &[0; 16])].concat();
    let e = input(None).push(&s, 0, &mut out).unwrap_err();
    assert!(e.to_string().contains("before the moov"), "{e}");
    // A child box larger than its parent.
    let mut moov = boxed(b"moov", &boxed(b"trak", &[0; 8]));
    moov[11] = 200;
    let e = input(None)
        .push(&[boxed(b"ftyp", b"isom"), moov].concat(), 0, &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("larger than its parent"), "{e}");
    // A trun that claims more samples than it holds.
    let mut li = input(None);
    li.push(&init_segment(90_000, 3000, 0), 0, &mut out)
        .unwrap();
    let mut f = fragment(0, 2, None, 1);
    let at = f.windows(4).position(|w| w == b"trun").unwrap() + 8;
    f[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
    let e = li.push(&f, 0, &mut out).unwrap_err();
    assert!(e.to_string().contains("larger than its box"), "{e}");
}

#[test]
fn detection_and_format_names() {
    assert_eq!(
        InputFormat::detect(&jpeg(1, 1, 0)),
        Some(InputFormat::Mjpeg)
    );
    assert_eq!(
        InputFormat::detect(b"YUV4MPEG2 W1 H1"),
        Some(InputFormat::Y4m)
    );
    assert_eq!(
        InputFormat::detect(&wav_header(8000, 1)),
        Some(InputFormat::Wav)
    );
    assert_eq!(
        InputFormat::detect(&init_segment(1, 1, 0)),
        Some(InputFormat::Fmp4)
    );
    assert_eq!(InputFormat::detect(b"short"), None);
    assert_eq!("mp4".parse(), Ok(InputFormat::Fmp4));
}

// ---- recording ------------------------------------------------------------------------

mod recording {
    use super::*;
    use crate::ingest::record::{Recorder, Written};

    /// Chunks of `data` cut by a live input, renumbered from `seq` and shifted to `pts`, as a
    /// channel continues a new publisher's stream.
    fn channel(data: &[u8], seq: u64, pts: u64) -> Vec<Chunk> {
        let mut cfg = Config::new(StreamId(0));
        cfg.chunk_size = 64;
        let (_, chunks, _) = run(
            LiveInput::new(cfg, None, Limits::default()).unwrap(),
            data,
            50,
        );
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c.seq = seq + i as u64;
                if !c.has(ChunkFlags::INIT) {
                    c.pts_us += pts;
                }
                c
            })
            .collect()
    }

    fn tfdts(file: &[u8]) -> Vec<u64> {
        // Every tfdt v1 of the video track (id 1): the box follows that track's tfhd.
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(p) = file[i..].windows(4).position(|w| w == b"tfdt") {
            let at = i + p;
            let track = u32::from_be_bytes(file[at - 8..at - 4].try_into().unwrap());
            if track == 1 {
                out.push(u64::from_be_bytes(
                    file[at + 8..at + 16].try_into().unwrap(),
                ));
            }
            i = at + 4;
        }
        out
    }

    fn codec() -> Codec {
        Codec::Video(VideoParams {
            format: VisualFormat::Fmp4,
            width: 320,
            height: 180,
            fps_num: 30,
            fps_den: 1,
        })
    }

    #[test]
    fn fmp4_decode_times_start_at_zero_and_continue_across_a_restart() {
        let init = init_segment(90_000, 3000, 0);
        let run1 = [
            init.clone(),
            fragment(900_000, 30, Some(0), 1),
            fragment(990_000, 30, Some(0), 2),
        ]
        .concat();
        // The second publisher's encoder starts again at 0; the channel continues at 2 s.
        let run2 = [init.clone(), fragment(0, 30, Some(0), 3)].concat();
        let mut rec = Recorder::new(codec()).unwrap();
        let mut file = Vec::new();
        let c1 = channel(&run1, 0, 7_000_000);
        for c in &c1 {
            assert_eq!(rec.chunk(c, &mut file).unwrap(), Written::Appended);
        }
        rec.restart();
        for c in channel(&run2, c1.len() as u64 + 5, 9_000_000) {
            assert_eq!(rec.chunk(&c, &mut file).unwrap(), Written::Appended);
        }
        assert!(file.starts_with(&init));
        assert_eq!(
            file.windows(4).filter(|w| w == b"moov").count(),
            1,
            "one init"
        );
        assert_eq!(tfdts(&file), [0, 90_000, 180_000]);
        assert_eq!((rec.units(), rec.duration_us()), (3, 3_000_000));
    }

    #[test]
    fn a_changed_header_asks_for_a_new_file_and_a_gap_drops_the_cut_unit() {
        let init = init_segment(90_000, 3000, 0);
        let mut rec = Recorder::new(codec()).unwrap();
        let mut file = Vec::new();
        let c = channel(
            &[
                init,
                fragment(0, 30, Some(0), 1),
                fragment(90_000, 30, Some(0), 2),
            ]
            .concat(),
            0,
            0,
        );
        // Lose a piece of the second fragment: it must not reach the file.
        let second = c.iter().position(|c| c.pts_us == 1_000_000).unwrap();
        for (i, ch) in c.iter().enumerate() {
            if i != second + 1 {
                rec.chunk(ch, &mut file).unwrap();
            }
        }
        assert_eq!(rec.units(), 1);
        rec.restart();
        let other = init_segment(60_000, 2000, 0);
        let c2 = channel(
            &[other.clone(), fragment(0, 30, Some(0), 3)].concat(),
            100,
            2_000_000,
        );
        let first_unit = c2.iter().position(|c| !c.has(ChunkFlags::INIT)).unwrap();
        for ch in &c2[..first_unit] {
            assert_eq!(rec.chunk(ch, &mut file).unwrap(), Written::Appended);
        }
        assert_eq!(
            rec.chunk(&c2[first_unit], &mut file).unwrap(),
            Written::NewFile
        );
        let mut next = Recorder::new(codec()).unwrap();
        rec.hand_over(&mut next);
        let mut file2 = Vec::new();
        for ch in &c2[first_unit..] {
            next.chunk(ch, &mut file2).unwrap();
        }
        assert!(file2.starts_with(&other));
        assert_eq!(next.units(), 1);
    }

    #[test]
    fn wav_header_is_streaming_until_finished_then_exact() {
        let params = AudioParams {
            sample_rate: 8000,
            channels: 1,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let mut rec = Recorder::new(Codec::Audio(params)).unwrap();
        let mut file = Vec::new();
        let mut s = wav_header(8000, 1);
        s.extend(std::iter::repeat_n(3u8, 1600));
        for c in channel(&s, 0, 0) {
            rec.chunk(&c, &mut file).unwrap();
        }
        assert_eq!(
            &file[40..44],
            &u32::MAX.to_le_bytes(),
            "unknown size while recording"
        );
        let h = rec.header().unwrap();
        file[..44].copy_from_slice(&h);
        assert_eq!(file.len(), 44 + 1600);
        let r = hound::WavReader::new(std::io::Cursor::new(file)).unwrap();
        assert_eq!(r.duration(), 800);
        assert_eq!(rec.duration_us(), 100_000);
        assert!(Recorder::new(Codec::Bytes).is_err());
    }
}
