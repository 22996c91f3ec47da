//! Helpers shared by the `media_*` integration tests: a tiny PRNG, file builders, and the
//! packetize → shuffle → reassemble pipeline with its invariant checks.
#![allow(dead_code, unreachable_pub)]

use std::io::Cursor;

use bytes::Bytes;
use chunkcast_media::{Config, Expect, MediaError, Packetizer, Reassembler};
use chunkcast_protocol::{Chunk, ChunkFlags, StreamId};

/// xorshift64*: deterministic, dependency-free randomness for piece sizes and shuffles.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// How the file is fed to the packetizer.
#[derive(Debug, Clone, Copy)]
pub enum Pieces {
    /// Random sizes in 1..=max.
    Random(usize),
    /// Fixed size.
    Fixed(usize),
}

pub fn config() -> Config {
    Config::new(StreamId(7))
}

pub fn open(data: &[u8], name: &str, config: Config) -> Result<Packetizer, MediaError> {
    Packetizer::open(config, &mut Cursor::new(data), data.len() as u64, name)
}

/// Feeds `data` to `p` in pieces and finishes.
pub fn feed(
    p: &mut Packetizer,
    data: &[u8],
    pieces: Pieces,
    rng: &mut Rng,
) -> Result<Vec<Chunk>, MediaError> {
    let data = Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = match pieces {
            Pieces::Random(max) => 1 + rng.below(max as u64) as usize,
            Pieces::Fixed(n) => n,
        }
        .min(data.len() - at);
        p.push(data.slice(at..at + n), &mut out)?;
        at += n;
    }
    p.finish(&mut out)?;
    Ok(out)
}

/// Opens, feeds and checks the invariants every stream must hold.
pub fn packetize(
    data: &[u8],
    name: &str,
    config: Config,
    pieces: Pieces,
    seed: u64,
) -> (Packetizer, Vec<Chunk>) {
    let mut p = open(data, name, config.clone()).unwrap_or_else(|e| panic!("open {name}: {e}"));
    let chunks = feed(&mut p, data, pieces, &mut Rng::new(seed))
        .unwrap_or_else(|e| panic!("feed {name}: {e}"));
    check_stream(&p, &chunks, data, &config);
    (p, chunks)
}

/// seq from 0 without gaps, offsets, sizes, flags, and the concatenation is the file.
pub fn check_stream(p: &Packetizer, chunks: &[Chunk], data: &[u8], config: &Config) {
    assert!(!chunks.is_empty());
    let mut offset = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.seq, i as u64);
        assert_eq!(c.stream, config.stream);
        assert_eq!(c.offset, offset, "chunk {i}");
        assert_eq!(c.raw_len as usize, c.payload.len());
        assert!(c.payload.len() <= config.chunk_size);
        assert!(!c.has(ChunkFlags::COMPRESSED));
        assert_eq!(
            c.has(ChunkFlags::END_OF_STREAM),
            i + 1 == chunks.len(),
            "EOS on chunk {i}"
        );
        assert!(!c.payload.is_empty() || data.is_empty(), "empty chunk {i}");
        assert!(!(c.has(ChunkFlags::INIT) && c.has(ChunkFlags::KEY)));
        assert_eq!(
            &data[offset as usize..offset as usize + c.payload.len()],
            &c.payload[..]
        );
        offset += c.payload.len() as u64;
    }
    assert_eq!(offset, data.len() as u64);
    if let Some(n) = p.chunk_count() {
        assert_eq!(n, chunks.len() as u64, "announced chunk count");
    }
}

/// Shuffles within windows, duplicates some chunks, reassembles, and checks bytes and digest.
pub fn reassemble(chunks: &[Chunk], data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut order: Vec<Chunk> = chunks.to_vec();
    for w in order.chunks_mut(16) {
        rng.shuffle(w);
    }
    let dups: Vec<Chunk> = (0..order.len() / 10 + 1)
        .map(|_| chunks[rng.below(chunks.len() as u64) as usize].clone())
        .collect();
    for d in dups {
        let at = rng.below(order.len() as u64 + 1) as usize;
        order.insert(at, d);
    }
    let mut expect = Expect::new();
    expect.total_len = Some(data.len() as u64);
    expect.chunk_count = Some(chunks.len() as u64);
    expect.digest = Some(*blake3::hash(data).as_bytes());
    let mut r = Reassembler::new(expect);
    let mut out = Vec::with_capacity(data.len());
    for c in order {
        r.push(c).expect("push");
        while let Some((off, bytes)) = r.poll_write() {
            assert_eq!(off, out.len() as u64);
            out.extend_from_slice(&bytes);
        }
    }
    assert!(r.is_complete());
    let summary = r.finish().expect("finish");
    assert_eq!(summary.len, data.len() as u64);
    assert_eq!(summary.digest, Some(*blake3::hash(data).as_bytes()));
    assert!(out == data, "reassembled bytes differ");
}

/// A WAV description for [`wav`].
#[derive(Debug, Clone, Copy)]
pub struct WavSpec {
    pub channels: u16,
    pub rate: u32,
    /// Container bits: 8, 16, 24, 32.
    pub bits: u16,
    pub float: bool,
    pub extensible: bool,
    /// Valid bits for EXTENSIBLE (0 = same as `bits`).
    pub valid_bits: u16,
}

impl WavSpec {
    pub fn pcm(channels: u16, rate: u32, bits: u16) -> Self {
        Self {
            channels,
            rate,
            bits,
            float: false,
            extensible: false,
            valid_bits: 0,
        }
    }

    pub fn frame_bytes(&self) -> usize {
        usize::from(self.channels) * usize::from(self.bits / 8)
    }
}

fn riff_chunk(out: &mut Vec<u8>, id: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(id);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(0);
    }
}

pub fn fmt_body(s: &WavSpec) -> Vec<u8> {
    let block = s.channels * (s.bits / 8);
    let tag: u16 = if s.extensible {
        0xFFFE
    } else if s.float {
        3
    } else {
        1
    };
    let mut b = Vec::new();
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&s.channels.to_le_bytes());
    b.extend_from_slice(&s.rate.to_le_bytes());
    b.extend_from_slice(&(s.rate * u32::from(block)).to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    b.extend_from_slice(&s.bits.to_le_bytes());
    if s.extensible {
        b.extend_from_slice(&22u16.to_le_bytes());
        let valid = if s.valid_bits == 0 {
            s.bits
        } else {
            s.valid_bits
        };
        b.extend_from_slice(&valid.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        // KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT.
        b.extend_from_slice(&[
            if s.float { 3 } else { 1 },
            0,
            0,
            0,
            0,
            0,
            0x10,
            0,
            0x80,
            0,
            0,
            0xAA,
            0,
            0x38,
            0x9B,
            0x71,
        ]);
    }
    b
}

/// A WAV file of `frames` frames of `spec`, with optional LIST chunks before and after `data`
/// and an optional `data` size override (0 or 0xFFFFFFFF as streaming writers leave it).
pub fn wav(
    spec: &WavSpec,
    frames: usize,
    list_before: bool,
    list_after: bool,
    seed: u64,
) -> Vec<u8> {
    let audio = Rng::new(seed).bytes(frames * spec.frame_bytes());
    wav_with(spec, &audio, list_before, list_after, None)
}

pub fn wav_with(
    spec: &WavSpec,
    audio: &[u8],
    list_before: bool,
    list_after: bool,
    data_size: Option<u32>,
) -> Vec<u8> {
    let mut body = b"WAVE".to_vec();
    riff_chunk(&mut body, b"fmt ", &fmt_body(spec));
    if list_before {
        riff_chunk(
            &mut body,
            b"LIST",
            b"INFOISFT\x0b\x00\x00\x00chunkcast\x00\x00",
        );
        riff_chunk(&mut body, b"fact", &(audio.len() as u32).to_le_bytes());
    }
    body.extend_from_slice(b"data");
    body.extend_from_slice(&data_size.unwrap_or(audio.len() as u32).to_le_bytes());
    body.extend_from_slice(audio);
    if audio.len() % 2 == 1 {
        body.push(0);
    }
    if list_after {
        riff_chunk(&mut body, b"LIST", b"INFOICMT\x05\x00\x00\x00odd!\x00\x00");
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Whether `ffmpeg` is on PATH. Outside CI, tests that need it skip, with a message, when it
/// is not; under CI (which installs it) a missing ffmpeg fails the test instead.
pub fn have_ffmpeg() -> bool {
    let found = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "ffmpeg is required under CI (apt-get install ffmpeg)"
    );
    found
}

/// Makes a 2 s 160x120 25 fps H.264 + AAC MP4 (GOP 12) with ffmpeg in `dir`; returns its
/// bytes and whether it is H.264 (Debian's ffmpeg may lack libx264: then MPEG-4 part 2).
pub fn ffmpeg_mp4(dir: &std::path::Path, name: &str, extra: &[&str]) -> Option<(Vec<u8>, bool)> {
    let out = dir.join(name);
    let mut args = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-g",
        "12",
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
    ];
    args.extend_from_slice(extra);
    let run = |args: &[&str]| {
        std::process::Command::new("ffmpeg")
            .args(args)
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut h264 = true;
    if !run(&args) {
        eprintln!("note: libx264 unavailable, {name} falls back to -c:v mpeg4");
        let args: Vec<&str> = args
            .iter()
            .filter(|a| **a != "-sc_threshold" && **a != "0")
            .map(|a| if *a == "libx264" { "mpeg4" } else { a })
            .collect();
        if !run(&args) {
            return None;
        }
        h264 = false;
    }
    std::fs::read(out).ok().map(|d| (d, h264))
}
