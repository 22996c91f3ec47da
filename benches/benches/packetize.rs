//! The packetizer alone, without files or sockets: what cutting a file into chunks costs.
//!
//! Isolates `chunk::Packetizer::push` + `finish` as the server's reader thread drives them:
//! the file arrives as 1 MiB `Bytes` pieces (the server's read size), and every chunk is
//! appended to a reused `Vec<Chunk>` which is cleared after each push (the server hands them
//! to the socket). No disk: the pieces are slices of one shared buffer, so the figures are
//! the packetizer's own cost, with no page cache or `read` in them.
//!
//! - `bytes_1GB/{1KiB,64KiB,1MiB}`: a 1 GB opaque file (the bytes layout) at three chunk
//!   sizes. Every chunk lies inside one piece, so every payload is a zero-copy slice.
//! - `bytes_1GB/1000B`: the same with a chunk size that does not divide the pieces, so one
//!   chunk per piece is joined by copying across two pieces.
//! - `wav_1h`: one hour of 48 kHz 16-bit stereo WAV (44-byte header + 691.2 MB of PCM) in
//!   20 ms audio chunks (3840 bytes): the WAV layout, whose chunks straddle the piece
//!   boundaries (the 44-byte header shifts them), so one chunk per piece is a copy.
//!
//! - `server_read_256MiB/{zeroed_each,recycled}`: the server's reader loop around the
//!   packetizer (64 KiB chunks): each 1 MiB piece is a fresh `BytesMut::zeroed` buffer filled
//!   by a copy (standing in for `read(2)` from the page cache, from a 64 MiB source so that it
//!   is not cache-hot), as `server/src/stream.rs` does today; and the same with the buffer
//!   recycled once its chunks are gone (`Bytes::try_into_mut`), so neither the zeroing nor
//!   the fresh pages' faults are paid. Here every chunk is dropped right after its push, so
//!   recycling always succeeds: the best case of a small buffer pool.
//!
//! Throughput is file bytes. Run:
//! `cargo bench -p chunkcast-benches --bench packetize`.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chunkcast_media::{Config, Packetizer};
use chunkcast_protocol::{Chunk, StreamId};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// The server's file read size, and so the size of the pieces pushed.
const PIECE: usize = 1 << 20;
/// The synthetic bytes file: 1 GB.
const BYTES_LEN: u64 = 1_000_000_000;
/// One hour of 48 kHz 16-bit stereo: 3600 × 48000 × 4 bytes.
const WAV_DATA: u64 = 3600 * 48_000 * 4;

/// A 44-byte canonical PCM WAV header for `data_len` bytes of 48 kHz 16-bit stereo.
fn wav_header(data_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data_len).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&2u16.to_le_bytes()); // channels
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&(48_000u32 * 4).to_le_bytes()); // byte rate
    h.extend_from_slice(&4u16.to_le_bytes()); // block align
    h.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

/// Pushes a whole file of `len` bytes: `head` first, then slices of `body` (1 MiB pieces,
/// the first shortened so that pieces stay aligned to the file's 1 MiB boundaries).
fn run(mut p: Packetizer, head: &Bytes, body: &Bytes, len: u64) -> u64 {
    let mut out: Vec<Chunk> = Vec::with_capacity(1100);
    let mut chunks = 0u64;
    let mut pos = 0u64;
    let mut push = |p: &mut Packetizer, piece: Bytes, out: &mut Vec<Chunk>| {
        p.push(piece, out).expect("push");
        chunks += out.len() as u64;
        black_box(&out);
        out.clear();
    };
    if !head.is_empty() {
        pos = head.len() as u64;
        push(&mut p, head.clone(), &mut out);
    }
    while pos < len {
        let n = (PIECE as u64 - pos % PIECE as u64).min(len - pos) as usize;
        push(&mut p, body.slice(..n), &mut out);
        pos += n as u64;
    }
    p.finish(&mut out).expect("finish");
    chunks + out.len() as u64
}

fn bytes_file(c: &mut Criterion) {
    let body = Bytes::from((0..PIECE).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>());
    let mut g = c.benchmark_group("packetize/bytes_1GB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(BYTES_LEN));
    for (size, name) in [
        (1usize << 10, "1KiB"),
        (1000, "1000B"),
        (64 << 10, "64KiB"),
        (1 << 20, "1MiB"),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut cfg = Config::new(StreamId(1));
                cfg.chunk_size = size;
                let mut src = Cursor::new(body[..32].to_vec());
                let p = Packetizer::open(cfg, &mut src, BYTES_LEN, "bench.bin").expect("open");
                run(p, &Bytes::new(), &body, BYTES_LEN)
            });
        });
    }
    g.finish();
}

fn wav_hour(c: &mut Criterion) {
    let header = wav_header(WAV_DATA as u32);
    let len = header.len() as u64 + WAV_DATA;
    // Silence: the packetizer never looks at PCM values.
    let body = Bytes::from(vec![0u8; PIECE]);
    let head = Bytes::from(header.clone());
    let mut g = c.benchmark_group("packetize");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(len));
    g.bench_function("wav_1h_20ms", |b| {
        b.iter(|| {
            let mut src = Cursor::new(header.clone());
            let p = Packetizer::open(Config::new(StreamId(1)), &mut src, len, "hour.wav")
                .expect("open");
            run(p, &head, &body, len)
        });
    });
    g.finish();
}

/// The server's read loop: `pieces` 1 MiB reads from `source`, packetized at 64 KiB.
fn read_loop(source: &[u8], pieces: usize, recycle: bool) -> u64 {
    let len = (pieces * PIECE) as u64;
    let mut src = Cursor::new(source[..32].to_vec());
    let mut p =
        Packetizer::open(Config::new(StreamId(1)), &mut src, len, "bench.bin").expect("open");
    let mut out: Vec<Chunk> = Vec::with_capacity(32);
    let mut spare: Option<Bytes> = None;
    let mut chunks = 0u64;
    for i in 0..pieces {
        let mut buf = match spare.take().map(Bytes::try_into_mut) {
            Some(Ok(b)) => b,
            _ => BytesMut::zeroed(PIECE),
        };
        let at = (i * PIECE) % source.len();
        buf.copy_from_slice(&source[at..at + PIECE]);
        let buf = buf.freeze();
        if recycle {
            spare = Some(buf.clone());
        }
        p.push(buf, &mut out).expect("push");
        chunks += out.len() as u64;
        black_box(&out);
        out.clear();
    }
    p.finish(&mut out).expect("finish");
    chunks + out.len() as u64
}

fn server_read(c: &mut Criterion) {
    const SOURCE: usize = 64 << 20;
    const PIECES: usize = 256;
    let source: Vec<u8> = (0..SOURCE).map(|i| (i * 13 + 7) as u8).collect();
    let mut g = c.benchmark_group("packetize/server_read_256MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes((PIECES * PIECE) as u64));
    for (name, recycle) in [("zeroed_each", false), ("recycled", true)] {
        g.bench_function(name, |b| b.iter(|| read_loop(&source, PIECES, recycle)));
    }
    g.finish();
}

criterion_group!(benches, bytes_file, wav_hour, server_read);
criterion_main!(benches);
