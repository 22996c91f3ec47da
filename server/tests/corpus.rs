//! Every file comes back: a corpus of real, coded and damaged files, generated here, each
//! downloaded over TCP, TLS and QUIC from one in-process server and compared byte for byte;
//! the short ones also played, which either plays, or names the damage, never panics nor
//! hangs; and the server keeps serving throughout.
//!
//! The coded WAVs come from sox and ffmpeg: under `CI` they must be installed, elsewhere the
//! test skips them with a message.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, get};
use chunkcast_client::play::{PlayOptions, play};
use chunkcast_client::session::Session;
use chunkcast_client::url::Scheme;
use chunkcast_protocol::session::{ClientConfig, ClientHandshake};
use chunkcast_protocol::wire::{Caps, Frame, Mode, Open, Resume};
use chunkcast_protocol::{Codec, SampleFormat, StreamId, VisualFormat};
use chunkcast_testkit::*;
use tokio::io::AsyncWriteExt;

/// Files at most this large are also played (the longest of them lasts 3 s).
const PLAY_MAX_BYTES: u64 = 100_000;

fn write(dir: &Path, name: &str, data: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Runs a tool; whether it made `out`. Missing tools fail under `CI`.
fn tool(program: &str, args: &[&str], out: &Path) -> bool {
    if !require_tool(program, "apt-get install sox ffmpeg") {
        return false;
    }
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() && out.exists() => true,
        Ok(o) => {
            eprintln!(
                "skipping {}: {program} failed: {}",
                out.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            false
        }
        Err(e) => panic!("{program} is on PATH but does not run: {e}"),
    }
}

/// A paletted (PhotometricInterpretation 3) 8×4 TIFF, which the `image` crate cannot write.
fn paletted_tiff() -> Vec<u8> {
    let (w, h) = (8u32, 4u32);
    let pixels: Vec<u8> = (0..w * h).map(|i| (i % 4) as u8).collect();
    let entries: Vec<(u16, u16, u32, u32)> = vec![
        (256, 3, 1, w),     // ImageWidth
        (257, 3, 1, h),     // ImageLength
        (258, 3, 1, 8),     // BitsPerSample
        (259, 3, 1, 1),     // Compression: none
        (262, 3, 1, 3),     // Photometric: palette
        (273, 4, 1, 0),     // StripOffsets (patched)
        (277, 3, 1, 1),     // SamplesPerPixel
        (278, 3, 1, h),     // RowsPerStrip
        (279, 4, 1, w * h), // StripByteCounts
        (320, 3, 768, 0),   // ColorMap (patched: offset)
    ];
    let ifd_at = 8u32;
    let ifd_len = 2 + entries.len() as u32 * 12 + 4;
    let map_at = ifd_at + ifd_len;
    let data_at = map_at + 768 * 2;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd_at.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, ty, count, value) in entries {
        let value = match tag {
            273 => data_at,
            320 => map_at,
            _ => value,
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        if ty == 3 && count == 1 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    for i in 0..768u32 {
        out.extend_from_slice(&((i % 256) as u16 * 257).to_le_bytes());
    }
    out.extend_from_slice(&pixels);
    out
}

fn png16() -> Vec<u8> {
    let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(16, 8, |x, y| {
        image::Rgb([x as u16 * 4000, y as u16 * 8000, 12345])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb16(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        let frames = (0..3).map(|i| {
            image::Frame::new(image::RgbaImage::from_pixel(
                10,
                6,
                image::Rgba([i * 80, 0, 255 - i * 80, 255]),
            ))
        });
        enc.encode_frames(frames).unwrap();
    }
    out
}

/// Builds the corpus in `dir`; returns the names by kind, for the report.
fn build(dir: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let mut kinds: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut add = |kind: &'static str, name: String, data: &[u8]| {
        if !dir.join(&name).exists() {
            write(dir, &name, data);
            kinds.entry(kind).or_default().push(name);
        }
    };
    let samples = samples();
    let mut names: Vec<String> = std::fs::read_dir(samples)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != BIG)
        .collect();
    names.sort();
    for name in &names {
        let data = std::fs::read(samples.join(name)).unwrap();
        let len = data.len();
        add("sample", format!("orig/{name}"), &data);
        for cut in [7, 100, 1001, 30_001, len / 2, len - 1] {
            if cut < len {
                add("cut", format!("cut/{cut}-{name}"), &data[..cut]);
            }
        }
        // Flipped header bytes, in a prefix (the damage is in the header either way).
        let head = &data[..len.min(64 << 10)];
        for at in [0usize, 5, 12, 22, 40] {
            let mut d = head.to_vec();
            d[at] ^= 0xA5;
            add("flipped", format!("flip/{at}-{name}"), &d);
        }
        let ext = name.rsplit('.').next().unwrap();
        add("empty", format!("empty/zero.{ext}"), &[]);
    }
    let text = b"this is a text file, not a picture\n".repeat(20);
    add("wrong-ext", "wrong/notes.png".into(), &text);
    add("wrong-ext", "wrong/notes.wav".into(), &text);
    let jpg = std::fs::read(samples.join(chunkcast_media_samples::PHOTO_JPG)).unwrap();
    add("wrong-ext", "wrong/photo.wav".into(), &jpg);
    let wav = std::fs::read(samples.join(chunkcast_media_samples::TONE_8K_WAV)).unwrap();
    add("wrong-ext", "wrong/tone.jpg".into(), &wav);
    let mut zero_ch = wav.clone();
    zero_ch[22..24].copy_from_slice(&[0, 0]);
    add("damaged-wav", "damaged/zero-channels.wav".into(), &zero_ch);
    // Cut in the middle of a sample, in the first 3 KB of audio: a short play.
    add(
        "damaged-wav",
        "damaged/mid-sample.wav".into(),
        &wav[..44 + 3001],
    );
    let mut png = std::fs::read(samples.join(chunkcast_media_samples::TESTCARD_PNG)).unwrap();
    png[29] ^= 0xFF; // inside IHDR: its CRC no longer matches
    add("damaged-image", "damaged/bad-crc.png".into(), &png);
    let mut sig = png.clone();
    sig[1] = b'X';
    add("damaged-image", "damaged/bad-signature.png".into(), &sig);
    add("image", "images/palette.tif".into(), &paletted_tiff());
    add("image", "images/rgb16.png".into(), &png16());
    add("image", "images/animated.gif".into(), &animated_gif());

    // Coded WAVs, half a second of the 8 kHz tone (so they are played too).
    let tone = samples.join(chunkcast_media_samples::TONE_8K_WAV);
    let tone = tone.to_str().unwrap();
    let coded = dir.join("coded");
    std::fs::create_dir_all(&coded).unwrap();
    let sox = |enc: &str, name: &str, extra: &[&str]| {
        let out = coded.join(name);
        let mut args = vec![tone];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-e", enc, out.to_str().unwrap(), "trim", "0", "0.5"]);
        tool("sox", &args, &out)
    };
    for (enc, name, extra) in [
        ("ms-adpcm", "sox-ms-adpcm.wav", &[][..]),
        ("ima-adpcm", "sox-ima-adpcm.wav", &[]),
        ("u-law", "sox-mu-law.wav", &[]),
        ("a-law", "sox-a-law.wav", &[]),
        ("gsm-full-rate", "sox-gsm.wav", &[]),
    ] {
        if sox(enc, name, extra) {
            kinds
                .entry("coded-wav")
                .or_default()
                .push(format!("coded/{name}"));
        }
    }
    let ff = |codec: &str, name: &str| {
        let out = coded.join(name);
        let args = [
            "-v",
            "error",
            "-y",
            "-i",
            tone,
            "-t",
            "0.5",
            "-c:a",
            codec,
            out.to_str().unwrap(),
        ];
        tool("ffmpeg", &args, &out)
    };
    for (codec, name) in [
        ("adpcm_ms", "ff-ms-adpcm.wav"),
        ("adpcm_ima_wav", "ff-ima-adpcm.wav"),
        ("pcm_mulaw", "ff-mu-law.wav"),
        ("pcm_alaw", "ff-a-law.wav"),
        ("libgsm_ms", "ff-gsm.wav"),
        ("mp2", "ff-mp2.wav"),
        ("libmp3lame", "ff-mp3.wav"),
    ] {
        if ff(codec, name) {
            kinds
                .entry("coded-wav")
                .or_default()
                .push(format!("coded/{name}"));
        }
    }
    // Animated images ffmpeg can write, from the MJPEG clip's first frames.
    let clip = samples.join(chunkcast_media_samples::CLIP_MJPEG);
    let images = dir.join("images");
    for (name, extra) in [
        ("anim.apng", &["-f", "apng", "-plays", "0"][..]),
        ("anim.webp", &["-c:v", "libwebp_anim", "-loop", "0"][..]),
    ] {
        let out = images.join(name);
        let mut args = vec!["-v", "error", "-y", "-i", clip.to_str().unwrap()];
        args.extend_from_slice(&["-frames:v", "3", "-vf", "scale=64:48"]);
        args.extend_from_slice(extra);
        args.push(out.to_str().unwrap());
        if tool("ffmpeg", &args, &out) {
            kinds
                .entry("image")
                .or_default()
                .push(format!("images/{name}"));
        }
    }
    kinds
}

fn digest(path: &Path) -> [u8; 32] {
    file_digest(path)
}

/// How a play ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Played {
    /// Played to the end.
    Whole,
    /// Played up to the damage, then said where.
    Damaged(String),
    /// Refused: not media (served as bytes, empty), with the reason.
    Refused(String),
}

async fn play_one(session: &Session, path: &str) -> Played {
    let opts = PlayOptions {
        buffer: Duration::from_millis(20),
        ..PlayOptions::default()
    };
    let run = tokio::time::timeout(Duration::from_secs(20), play(session, path, &opts));
    match run.await {
        Err(_) => panic!("{path}: play hung"),
        Ok(Ok(r)) => {
            assert!(!r.interrupted, "{path}");
            Played::Whole
        }
        Ok(Err(ClientError::Damaged(m))) => {
            assert!(m.contains("damaged at byte "), "{path}: {m}");
            Played::Damaged(m)
        }
        Ok(Err(ClientError::Usage(m))) => {
            assert!(
                m.contains("served as bytes")
                    || m.contains("is empty")
                    || m.contains("not audio, video or an image"),
                "{path}: {m}"
            );
            Played::Refused(m)
        }
        Ok(Err(e)) => panic!("{path}: play failed unexpectedly: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_comes_back_and_damage_is_named() {
    let corpus = tempfile::tempdir().unwrap();
    let kinds = build(corpus.path());
    let server = server_with(|c| {
        c.root = Some(corpus.path().to_owned());
        // One connection per transport fetches the whole corpus back to back.
        c.limits.max_requests_per_sec = 100_000;
    })
    .await;
    let out = tempfile::tempdir().unwrap();

    // The listing: every file, coded WAVs as audio, images as images, damage with a note.
    let session = connect(&server, Scheme::Tcp).await;
    let listed = session.list("").await.unwrap();
    let files: Vec<PathBuf> = kinds.values().flatten().map(PathBuf::from).collect();
    assert_eq!(listed.len(), files.len(), "every file is listed");
    let entry = |p: &str| listed.iter().find(|e| e.path == p).unwrap();
    for name in kinds.get("coded-wav").into_iter().flatten() {
        let e = entry(name);
        assert!(
            matches!(e.codec, Codec::Audio(_)) && e.note.is_none(),
            "{name}: {e:?}"
        );
    }
    for name in kinds.get("image").into_iter().flatten() {
        let e = entry(name);
        assert!(
            matches!(e.codec, Codec::Image(_)) && e.note.is_none(),
            "{name}: {e:?}"
        );
    }
    for name in [
        "wrong/notes.png",
        "damaged/zero-channels.wav",
        "damaged/bad-crc.png",
        "damaged/bad-signature.png",
    ] {
        let e = entry(name);
        let note = e.note.as_deref().unwrap_or_default();
        assert!(
            e.codec == Codec::Bytes && note.starts_with("served as bytes: "),
            "{name}: {e:?}"
        );
    }
    assert!(
        entry("damaged/mid-sample.wav")
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("damaged at byte 3045: ")),
        "{:?}",
        entry("damaged/mid-sample.wav")
    );
    assert!(
        matches!(entry("wrong/photo.wav").codec, Codec::Image(i) if i.format == VisualFormat::Jpeg)
    );
    session.close().await;

    // Every file over every transport, byte for byte, digest verified.
    let mut downloads = 0;
    let mut noted = 0;
    for scheme in ALL {
        let session = connect(&server, scheme).await;
        for (i, f) in files.iter().enumerate() {
            let name = f.to_str().unwrap();
            let dest = out.path().join(format!("{scheme:?}-{i}"));
            let r = get(
                &session,
                name,
                &GetOptions {
                    out: Some(dest.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("get {name} over {scheme:?}: {e}"));
            assert!(r.verified, "{name} over {scheme:?}: not verified");
            assert_eq!(
                digest(&dest),
                digest(&corpus.path().join(f)),
                "{name} over {scheme:?} differs"
            );
            noted += usize::from(r.note.is_some());
            downloads += 1;
            std::fs::remove_file(&dest).unwrap();
        }
        session.close().await;
    }

    // Play the short ones, a few at a time on one connection each batch.
    let short: Vec<String> = listed
        .iter()
        .filter(|e| e.size.is_some_and(|s| s <= PLAY_MAX_BYTES))
        .map(|e| e.path.clone())
        .collect();
    let mut outcomes: BTreeMap<String, Played> = BTreeMap::new();
    for batch in short.chunks(12) {
        let session = connect(&server, Scheme::Tcp).await;
        let played =
            futures_util::future::join_all(batch.iter().map(|p| play_one(&session, p))).await;
        session.close().await;
        outcomes.extend(batch.iter().cloned().zip(played));
    }
    let damaged_wav = &outcomes["damaged/mid-sample.wav"];
    assert!(
        matches!(damaged_wav, Played::Damaged(m) if m.contains("played ") && m.contains("byte 3045")),
        "{damaged_wav:?}"
    );
    let cut_mjpeg = outcomes
        .iter()
        .find(|(p, _)| p.starts_with("cut/30001-") && p.ends_with(".mjpeg"))
        .map(|(_, o)| o)
        .unwrap();
    assert!(
        matches!(cut_mjpeg, Played::Damaged(m) if m.contains("cut short")),
        "{cut_mjpeg:?}"
    );
    assert!(
        matches!(&outcomes["empty/zero.wav"], Played::Refused(m) if m.contains("is empty")),
        "{:?}",
        outcomes["empty/zero.wav"]
    );
    assert!(
        matches!(&outcomes["wrong/notes.png"], Played::Refused(m) if m.contains("served as bytes")),
        "{:?}",
        outcomes["wrong/notes.png"]
    );
    for name in kinds.get("coded-wav").into_iter().flatten() {
        assert_eq!(outcomes[name.as_str()], Played::Whole, "{name}");
    }

    // The server still serves a normal request.
    let session = connect(&server, Scheme::Quic).await;
    let photo = format!("orig/{}", chunkcast_media_samples::PHOTO_JPG);
    let dest = out.path().join("after.jpg");
    let opts = GetOptions {
        out: Some(dest.clone()),
        ..Default::default()
    };
    let r = get(&session, &photo, &opts).await.unwrap();
    assert!(r.verified && r.note.is_none());
    assert_eq!(digest(&dest), digest(&corpus.path().join(&photo)));
    session.close().await;

    let counts: Vec<String> = kinds
        .iter()
        .map(|(k, v)| format!("{k} {}", v.len()))
        .collect();
    let whole = outcomes.values().filter(|o| **o == Played::Whole).count();
    let damaged = outcomes
        .values()
        .filter(|o| matches!(o, Played::Damaged(_)))
        .count();
    let refused = outcomes.len() - whole - damaged;
    eprintln!(
        "corpus: {} files ({}); {downloads} downloads over tcp/tcps/quic, all identical and \
         verified ({noted} with a note); played {}: {whole} whole, {damaged} up to named \
         damage, {refused} refused with the reason",
        files.len(),
        counts.join(", "),
        outcomes.len()
    );
    server.shutdown().await;
}

/// Plays coded WAVs to `wav:` sinks and compares with sox's own decoding to 16-bit PCM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coded_wavs_decode_like_sox() {
    let dir = tempfile::tempdir().unwrap();
    let tone = samples().join(chunkcast_media_samples::TONE_8K_WAV);
    let mut made = Vec::new();
    for (enc, name) in [
        ("u-law", "mu.wav"),
        ("a-law", "a.wav"),
        ("ima-adpcm", "ima.wav"),
        ("ms-adpcm", "ms.wav"),
    ] {
        let out = dir.path().join(name);
        let args = [
            tone.to_str().unwrap(),
            "-e",
            enc,
            out.to_str().unwrap(),
            "trim",
            "0",
            "0.3",
        ];
        if tool("sox", &args, &out) {
            made.push(name);
        }
    }
    let server = server_with(|c| c.root = Some(dir.path().to_owned())).await;
    let session = connect(&server, Scheme::Tcp).await;
    for name in made {
        let played = dir.path().join(format!("played-{name}"));
        let opts = PlayOptions {
            sinks: vec![format!("wav:{}", played.display()).parse().unwrap()],
            ..PlayOptions::default()
        };
        play(&session, name, &opts)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = dir.path().join(format!("sox-{name}"));
        let src = dir.path().join(name);
        let args = [
            src.to_str().unwrap(),
            "-e",
            "signed",
            "-b",
            "16",
            reference.to_str().unwrap(),
        ];
        assert!(tool("sox", &args, &reference));
        let ours: Vec<i16> = hound::WavReader::open(&played)
            .unwrap()
            .into_samples()
            .map(Result::unwrap)
            .collect();
        let theirs: Vec<i16> = hound::WavReader::open(&reference)
            .unwrap()
            .into_samples()
            .map(Result::unwrap)
            .collect();
        // The last ADPCM block is padded: compare what both have.
        let n = theirs.len().min(ours.len());
        assert!(
            n > 2000 && ours.len() >= theirs.len(),
            "{name}: {} vs {}",
            ours.len(),
            theirs.len()
        );
        let worst = ours[..n]
            .iter()
            .zip(&theirs[..n])
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert_eq!(worst, 0, "{name}: differs from sox by up to {worst}");
    }
    // A codec it cannot decode: refused up front, naming it and the sink that takes it as is.
    let gsm = dir.path().join("gsm.wav");
    let args = [
        tone.to_str().unwrap(),
        "-r",
        "8000",
        "-c",
        "1",
        "-e",
        "gsm-full-rate",
        gsm.to_str().unwrap(),
    ];
    if tool("sox", &args, &gsm) {
        let opts = PlayOptions {
            sinks: vec!["wav:never.wav".parse().unwrap()],
            ..PlayOptions::default()
        };
        let e = play(&session, "gsm.wav", &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("gsm610") && e.contains("file:PATH"), "{e}");
    }
    session.close().await;
    server.shutdown().await;
}

/// A client that predates `ANY_FILE` gets the old layouts: no notes, coded audio as bytes.
#[tokio::test]
async fn an_old_client_gets_the_old_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut mu = Vec::new();
    mu.extend_from_slice(b"RIFF\x2e\x00\x00\x00WAVEfmt \x12\x00\x00\x00");
    mu.extend_from_slice(&[
        7, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x40, 0x1f, 0, 0, 1, 0, 8, 0, 0, 0,
    ]);
    mu.extend_from_slice(b"data\x08\x00\x00\x00");
    mu.extend_from_slice(&[0xFF, 0x80, 0x00, 0x7F, 1, 2, 3, 4]);
    std::fs::write(dir.path().join("mu.wav"), &mu).unwrap();
    std::fs::write(dir.path().join("notes.png"), b"not a picture").unwrap();
    let server = server_with(|c| c.root = Some(dir.path().to_owned())).await;

    // A new client sees µ-law audio and the note.
    let session = connect(&server, Scheme::Tcp).await;
    let listed = session.list("").await.unwrap();
    session.close().await;
    let mu_entry = listed.iter().find(|e| e.path == "mu.wav").unwrap();
    assert!(matches!(mu_entry.codec, Codec::Audio(a) if a.sample_format == SampleFormat::MuLaw));
    assert!(
        listed
            .iter()
            .any(|e| e.path == "notes.png" && e.note.is_some())
    );

    let mut sock = tokio::net::TcpStream::connect(server.tcp_addr())
        .await
        .unwrap();
    let mut hello = BytesMut::new();
    let config = ClientConfig {
        caps: Caps::LZ4 | Caps::DIGEST_AT_END,
        ..ClientConfig::default()
    };
    ClientHandshake::new(config, std::time::Instant::now()).poll_transmit(&mut hello);
    sock.write_all(&hello).await.unwrap();
    let mut requests = encoded(&[Frame::List {
        request: 1,
        prefix: String::new(),
    }]);
    for (i, path) in ["mu.wav", "notes.png"].into_iter().enumerate() {
        let open = Frame::Open(Open {
            request: 2 + i as u32,
            stream: StreamId(1 + i as u32),
            path: path.into(),
            mode: Mode::Download,
            resume: Resume::Start,
            compress: false,
            raw: false,
            fragment: false,
            header_crc: false,
            chunk_size: 0,
        });
        requests.extend_from_slice(&encoded(&[open]));
    }
    sock.write_all(&requests).await.unwrap();
    // The default decoder is the old one's layout plus optional fields: what matters is that
    // nothing new is on the wire, which these checks see.
    let (frames, _) = read_frames(&mut sock, Duration::from_secs(2)).await;
    let mut opened = 0;
    for f in &frames {
        match f {
            Frame::Welcome(w) => assert!(!w.caps.contains(Caps::ANY_FILE)),
            Frame::Catalog(c) => {
                for e in &c.entries {
                    assert!(e.note.is_none() && e.codec.is_v1_base(), "{e:?}");
                }
                assert!(
                    c.entries
                        .iter()
                        .any(|e| e.path == "mu.wav" && e.codec == Codec::Bytes)
                );
            }
            Frame::Opened(o) => {
                assert!(o.note.is_none() && o.codec == Codec::Bytes, "{o:?}");
                opened += 1;
            }
            _ => {}
        }
    }
    assert_eq!(opened, 2, "{frames:?}");
    server.shutdown().await;
}
