//! The MP4 → fMP4 fragmenter against ffmpeg: progressive files ffmpeg writes come out as
//! fragmented files ffprobe reads with the same frames and duration, and ffmpeg decodes
//! without error.

mod media_common;

use std::path::Path;
use std::process::Command;

use chunkcast_media::MediaError;
use chunkcast_media::fragment::Fragmenter;
use media_common::have_ffmpeg;

/// Runs ffmpeg with `args` (quiet, overwrite); panics on failure.
fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ffprobe` of stream `sel` (`v:0`, `a:0`): (frames decoded, duration in seconds).
///
/// Frames are counted with the edit list ignored: ffmpeg's demuxer drops AAC's priming frame
/// through the edit list of a progressive file but not of a fragmented one, so with the edit
/// list applied the same samples would count one apart.
fn probe(path: &Path, sel: &str) -> (u64, f64) {
    let frames = probe_with(path, sel, true).0;
    (frames, probe_with(path, sel, false).1)
}

fn probe_with(path: &Path, sel: &str, ignore_editlist: bool) -> (u64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", sel])
        .args(["-ignore_editlist", if ignore_editlist { "1" } else { "0" }])
        .args([
            "-show_entries",
            "stream=nb_read_frames,duration",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .trim()
            .to_owned()
    };
    let frames = field("nb_read_frames").parse().expect("frame count");
    // A fragmented file's stream may not state its duration: fall back to the container's.
    let duration = field("duration")
        .parse()
        .unwrap_or_else(|_| format_duration(path));
    (frames, duration)
}

fn format_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("format duration")
}

/// Decodes every stream of `path` with ffmpeg; panics on any decoder complaint.
fn decodes_clean(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "decode errors: {err}"
    );
}

/// Fragments `src` into `dst` (init then every fragment); returns the fragmenter.
fn fragment_file(src: &Path, dst: &Path) -> Fragmenter {
    let mut f = std::fs::File::open(src).unwrap();
    let len = f.metadata().unwrap().len();
    let frag = Fragmenter::open(&mut f, len).expect("fragmenter opens");
    let mut out = frag.init_segment().to_vec();
    for i in 0..frag.len() {
        let bytes = frag.read_fragment(i, &mut f).expect("read fragment");
        assert_eq!(bytes.len() as u64, frag.fragment_info(i).len);
        out.extend_from_slice(&bytes);
    }
    std::fs::write(dst, out).unwrap();
    frag
}

/// Same frame count, and duration within one frame.
fn same_stream(a: &Path, b: &Path, sel: &str, frame_s: f64) {
    let (fa, da) = probe(a, sel);
    let (fb, db) = probe(b, sel);
    assert_eq!(fa, fb, "{sel}: frame count of {a:?} vs {b:?}");
    assert!(
        (da - db).abs() <= frame_s + 1e-6,
        "{sel}: duration {da} vs {db}"
    );
}

const X264: [&str; 10] = [
    "-c:v",
    "libx264",
    "-g",
    "25",
    "-pix_fmt",
    "yuv420p",
    "-preset",
    "veryfast",
    "-movflags",
    "+faststart",
];

#[test]
fn h264_aac_fragments_decode_with_the_same_frames_and_duration() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.mp4");
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "4",
        "-c:a",
        "aac",
    ];
    args.extend(X264);
    args.push(src.to_str().unwrap());
    ffmpeg(&args);
    let dst = dir.path().join("out.mp4");
    let frag = fragment_file(&src, &dst);
    same_stream(&src, &dst, "v:0", 1.0 / 25.0);
    same_stream(&src, &dst, "a:0", 1024.0 / 48_000.0);
    decodes_clean(&dst);

    // 100 frames, a keyframe every 25: four key fragments, and the audio rides along.
    assert_eq!(frag.len(), 4);
    assert!((0..4).all(|i| frag.fragment_info(i).key));
    assert_eq!(frag.fragment_info(1).start_us, 1_000_000);
    let v = frag.video().expect("video params");
    assert_eq!((v.width, v.height, v.fps_num, v.fps_den), (320, 240, 25, 1));
    assert!(frag.has_audio());
    assert!(
        (3_990_000..=4_100_000).contains(&frag.duration_us()),
        "{}",
        frag.duration_us()
    );

    // What OPENED announces (chunk count, length) is what the chunker cuts.
    let mut file = std::fs::File::open(&src).unwrap();
    let mut chunker =
        chunkcast_media::fragment::Chunker::new(chunkcast_protocol::StreamId(0), 1000);
    let mut chunks = Vec::new();
    chunker.init(frag.init_segment().clone(), &mut chunks);
    for i in 0..frag.len() {
        let bytes = frag.read_fragment(i, &mut file).unwrap();
        chunker.fragment(
            frag.fragment_info(i),
            bytes,
            i + 1 == frag.len(),
            &mut chunks,
        );
    }
    assert_eq!(chunks.len() as u64, frag.chunk_count(1000));
    let total: u64 = chunks.iter().map(|c| c.payload.len() as u64).sum();
    assert_eq!(total, frag.total_len());
    assert_eq!(total, std::fs::metadata(&dst).unwrap().len());
}

#[test]
fn video_only_and_moov_last_fragment_too() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.mp4");
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=30",
        "-t",
        "3",
    ];
    // moov at the end this time: the fragmenter finds it anyway.
    args.extend(&X264[..8]);
    args.push(src.to_str().unwrap());
    ffmpeg(&args);
    let dst = dir.path().join("out.mp4");
    let frag = fragment_file(&src, &dst);
    same_stream(&src, &dst, "v:0", 1.0 / 30.0);
    decodes_clean(&dst);
    assert!(!frag.has_audio());
    // 90 frames with a keyframe every 25: 4 groups.
    assert_eq!(frag.len(), 4);
}

#[test]
fn audio_only_fragments_every_second_all_key() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "3.5",
        "-c:a",
        "aac",
        src.to_str().unwrap(),
    ]);
    let dst = dir.path().join("out.m4a");
    let frag = fragment_file(&src, &dst);
    same_stream(&src, &dst, "a:0", 1024.0 / 44_100.0);
    decodes_clean(&dst);
    assert!(frag.video().is_none());
    assert_eq!(frag.len(), 4);
    assert!((0..frag.len()).all(|i| frag.fragment_info(i).key));
}

#[test]
fn a_long_keyframe_group_is_split_into_bounded_fragments() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.mp4");
    // One keyframe in 900 frames: more than MAX_FRAGMENT_SAMPLES.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=30",
        "-t",
        "30",
        "-c:v",
        "libx264",
        "-g",
        "1000",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "ultrafast",
        src.to_str().unwrap(),
    ]);
    let dst = dir.path().join("out.mp4");
    let frag = fragment_file(&src, &dst);
    same_stream(&src, &dst, "v:0", 1.0 / 30.0);
    assert_eq!(frag.len(), 2);
    assert!(frag.fragment_info(0).key);
    assert!(!frag.fragment_info(1).key);
}

#[test]
fn hostile_input_gets_typed_errors() {
    // Not MP4 at all.
    let junk = vec![0xA5u8; 1000];
    assert!(Fragmenter::open(&mut std::io::Cursor::new(&junk), 1000).is_err());
    // A moov box claiming more bytes than the file has.
    let mut lying = 0x7fff_0000u32.to_be_bytes().to_vec();
    lying.extend_from_slice(b"moov");
    lying.extend_from_slice(&[0; 64]);
    let len = lying.len() as u64;
    assert!(matches!(
        Fragmenter::open(&mut std::io::Cursor::new(&lying), len),
        Err(MediaError::Truncated { .. })
    ));
    // An empty moov: parsed, but nothing to fragment.
    let mut empty = 8u32.to_be_bytes().to_vec();
    empty.extend_from_slice(b"moov");
    assert!(Fragmenter::from_moov(&empty, 8).is_err());
    // A moov cut anywhere fails cleanly, never panics.
    if have_ffmpeg() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.mp4");
        let mut args = vec!["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1"];
        args.extend(X264);
        args.push(src.to_str().unwrap());
        ffmpeg(&args);
        let file = std::fs::read(&src).unwrap();
        let at = file.windows(4).position(|w| w == b"moov").unwrap() - 4;
        let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let moov = &file[at..at + size];
        for cut in (8..size).step_by(7) {
            let mut m = moov[..cut].to_vec();
            m[..4].copy_from_slice(&(cut as u32).to_be_bytes());
            let _ = Fragmenter::from_moov(&m, file.len() as u64);
        }
        // Sample offsets beyond the file: refused.
        assert!(Fragmenter::from_moov(moov, 100).is_err());
        // An already fragmented file is refused with a reason.
        let fragged = dir.path().join("frag.mp4");
        let mut args = vec!["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "1"];
        args.extend(&X264[..8]);
        args.extend([
            "-movflags",
            "frag_keyframe+empty_moov",
            fragged.to_str().unwrap(),
        ]);
        ffmpeg(&args);
        let mut f = std::fs::File::open(&fragged).unwrap();
        let len = f.metadata().unwrap().len();
        assert!(matches!(
            Fragmenter::open(&mut f, len),
            Err(MediaError::Unsupported { .. })
        ));
    }
}

#[test]
fn live_audio_only_fmp4_is_cut_into_key_fragments() {
    use chunkcast_media::ingest::{InputFormat, Limits, LiveInput};
    use chunkcast_protocol::media::{Codec, VisualFormat};
    use chunkcast_protocol::{ChunkFlags, StreamId};
    if !have_ffmpeg() {
        return;
    }
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
            "-t",
            "3",
        ])
        .args(["-c:a", "aac", "-f", "mp4", "-frag_duration", "500000"])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-",
        ])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success());
    let mut li = LiveInput::new(
        chunkcast_media::Config::new(StreamId(0)),
        Some(InputFormat::Fmp4),
        Limits::default(),
    )
    .unwrap();
    let mut chunks = Vec::new();
    for (i, piece) in out.stdout.chunks(1000).enumerate() {
        li.push(piece, i as u64 * 1000, &mut chunks)
            .expect("audio-only fMP4 is taken");
    }
    li.finish(&mut chunks).unwrap();
    assert!(matches!(
        li.codec(),
        Some(Codec::Video(v)) if v.format == VisualFormat::Fmp4 && v.width == 0
    ));
    let starts: Vec<_> = chunks.iter().filter(|c| !c.has(ChunkFlags::INIT)).collect();
    let units = starts
        .iter()
        .filter(|c| c.has(ChunkFlags::END_OF_UNIT))
        .count();
    // 3 s in fragments of half a second: about six, every one a place to start.
    assert!((5..=8).contains(&units), "{units} fragments");
    assert!(starts.iter().all(|c| c.has(ChunkFlags::KEY)));
    // The bytes are ffmpeg's, up to its `mfra` index trailer.
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.payload.to_vec()).collect();
    assert!(out.stdout.starts_with(&joined));
    let rest = &out.stdout[joined.len()..];
    assert!(
        rest.is_empty() || &rest[4..8] == b"mfra",
        "{} bytes left",
        rest.len()
    );
}

#[test]
fn the_chunker_cuts_init_and_fragments_into_flagged_pieces() {
    use bytes::Bytes;
    use chunkcast_media::fragment::{Chunker, FragmentInfo};
    use chunkcast_protocol::{ChunkFlags, StreamId};
    let mut c = Chunker::new(StreamId(3), 4);
    let mut out = Vec::new();
    c.init(Bytes::from_static(b"initseg"), &mut out);
    let key = FragmentInfo {
        key: true,
        start_us: 0,
        duration_us: 1_000_000,
        len: 9,
    };
    let delta = FragmentInfo {
        key: false,
        start_us: 1_000_000,
        duration_us: 500_000,
        len: 3,
    };
    c.fragment(key, Bytes::from_static(b"fragment1"), false, &mut out);
    c.fragment(delta, Bytes::from_static(b"ff2"), true, &mut out);
    let joined: Vec<u8> = out.iter().flat_map(|c| c.payload.to_vec()).collect();
    assert_eq!(joined, b"initsegfragment1ff2");
    let mut offset = 0;
    for (i, ch) in out.iter().enumerate() {
        assert_eq!(ch.seq, i as u64);
        assert_eq!(ch.offset, offset);
        assert_eq!(ch.stream, StreamId(3));
        assert!(ch.payload.len() <= 4);
        offset += ch.payload.len() as u64;
    }
    let flags: Vec<_> = out.iter().map(|c| c.flags).collect();
    // init: 2 pieces; fragment 1: 3 pieces, KEY, the last END_OF_UNIT; fragment 2: 1 piece,
    // not KEY, END_OF_UNIT and END_OF_STREAM.
    assert_eq!(out.len(), 6);
    assert!(flags[..2].iter().all(|f| *f == ChunkFlags::INIT));
    assert!(flags[2..5].iter().all(|f| f.contains(ChunkFlags::KEY)));
    assert!(!flags[2].contains(ChunkFlags::END_OF_UNIT));
    assert!(flags[4].contains(ChunkFlags::END_OF_UNIT));
    assert_eq!(out[4].pts_us, 0);
    assert!(!flags[5].contains(ChunkFlags::KEY));
    assert!(
        flags[5].contains(ChunkFlags::END_OF_UNIT) && flags[5].contains(ChunkFlags::END_OF_STREAM)
    );
    assert_eq!((out[5].pts_us, out[5].duration_us), (1_000_000, 500_000));
    assert!(
        out[..5]
            .iter()
            .all(|c| !c.flags.contains(ChunkFlags::END_OF_STREAM))
    );
}
