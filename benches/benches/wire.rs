//! The wire layer alone, without sockets: what framing, CRC32C and lz4 cost per payload byte.
//!
//! Isolates, for chunk payloads of 1 KiB, 16 KiB, 64 KiB and 1 MiB:
//! - `decode`: `wire::Decoder::decode` taking many pre-encoded `CHUNK` frames off one `BytesMut`
//!   (length check, header parse, CRC32C over header and payload, zero-copy payload split), and
//!   with lz4 the same plus `compress::decompress` of each chunk. No allocation besides lz4's
//!   output; the copy of the encoded stream into a fresh buffer is set-up, not measured.
//! - `encode`: `encode_chunk_head` alone (header + CRC32C, the payload left to a vectored write
//!   by reference) and the full `encode` (which also copies the payload into the buffer).
//! - `lz4`: `Compressor::apply` and `compress::decompress` on (a) compressible PCM-like data,
//!   a dithered 16-bit stereo 1 kHz sine at 48 kHz, and (b) random bytes, where `apply` costs
//!   one failed lz4 attempt (a fresh compressor per chunk, so its pause never kicks in).
//!
//! Throughput is in payload bytes as the application sees them (uncompressed), so figures with
//! and without lz4 compare directly. Run:
//! `cargo bench -p chunkcast-benches --bench wire -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use chunkcast_protocol::compress::{self, Compressor};
use chunkcast_protocol::wire::{DEFAULT_MAX_PAYLOAD, Decoder, encode, encode_chunk_head};
use chunkcast_protocol::{Chunk, ChunkFlags, Frame, StreamId};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(usize, &str); 4] = [
    (1 << 10, "1KiB"),
    (16 << 10, "16KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
];

/// Encoded bytes per decode batch: enough frames that per-batch overhead vanishes.
const DECODE_BATCH_BYTES: usize = 4 << 20;

/// xorshift64: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` bytes of 16-bit little-endian stereo PCM: a 1 kHz sine at half scale, 48 kHz, with
/// ±1 LSB of rectangular dither per sample (lz4 keeps it at about 0.45-0.85 of its size).
fn pcm(len: usize) -> Bytes {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(len + 4);
    let mut i = 0u64;
    while out.len() < len {
        let t = i as f64 / 48_000.0;
        let s = (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).round() as i32;
        for _ in 0..2 {
            let dither = (noise.next() % 3) as i32 - 1;
            out.extend_from_slice(&((s + dither).clamp(-32768, 32767) as i16).to_le_bytes());
        }
        i += 1;
    }
    out.truncate(len);
    out.into()
}

/// `len` random bytes: lz4 cannot shrink them.
fn random(len: usize) -> Bytes {
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    (0..len)
        .map(|_| noise.next() as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn chunk(seq: u64, payload: Bytes) -> Chunk {
    let offset = seq * payload.len() as u64;
    Chunk::new(
        StreamId(1),
        seq,
        offset,
        seq * 1000,
        1000,
        ChunkFlags::KEY,
        payload,
    )
}

/// The stream of `CHUNK` frames for one decode batch, and the raw payload bytes it carries.
fn encoded_stream(payload: &Bytes, lz4: bool) -> (Bytes, u64, f64) {
    let n = (DECODE_BATCH_BYTES / payload.len()).max(4);
    let mut compressor = Compressor::new();
    let mut buf = BytesMut::new();
    let mut wire_payload = 0usize;
    for seq in 0..n as u64 {
        let mut c = chunk(seq, payload.clone());
        if lz4 {
            c = compressor.apply(c);
        }
        wire_payload += c.payload.len();
        encode(&Frame::Chunk(c), &mut buf);
    }
    let raw = (n * payload.len()) as u64;
    (buf.freeze(), raw, wire_payload as f64 / raw as f64)
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let max = DEFAULT_MAX_PAYLOAD as usize;
    for (size, name) in SIZES {
        let payload = pcm(size);
        for lz4 in [false, true] {
            let (stream, raw, ratio) = encoded_stream(&payload, lz4);
            let id = if lz4 { "lz4" } else { "plain" };
            if lz4 {
                eprintln!("decode/{id}/{name}: wire payload is {ratio:.3} of raw");
            }
            g.throughput(Throughput::Bytes(raw));
            g.bench_function(BenchmarkId::new(id, name), |b| {
                b.iter_batched(
                    || BytesMut::from(&stream[..]),
                    |mut buf| {
                        let mut decoder = Decoder::default();
                        let mut bytes = 0usize;
                        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                            let Frame::Chunk(chunk) = frame else {
                                unreachable!()
                            };
                            let chunk = if lz4 {
                                compress::decompress(chunk, max).unwrap()
                            } else {
                                chunk
                            };
                            bytes += black_box(chunk).payload.len();
                        }
                        assert_eq!(bytes as u64, raw);
                        buf
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    }
    g.finish();
}

fn encode_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (size, name) in SIZES {
        let ch = chunk(7, pcm(size));
        let frame = Frame::Chunk(ch.clone());
        let mut dst = BytesMut::with_capacity(size + 64);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("head", name), |b| {
            b.iter(|| {
                dst.clear();
                encode_chunk_head(black_box(&ch), &mut dst);
                // The payload goes out by reference, after the head: nothing to copy here.
                black_box((&dst, &ch.payload));
            });
        });
        g.bench_function(BenchmarkId::new("full", name), |b| {
            b.iter(|| {
                dst.clear();
                encode(black_box(&frame), &mut dst);
                black_box(&dst);
            });
        });
    }
    g.finish();
}

fn lz4(c: &mut Criterion) {
    let mut g = c.benchmark_group("lz4");
    let max = DEFAULT_MAX_PAYLOAD as usize;
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for (kind, payload) in [("pcm", pcm(size)), ("random", random(size))] {
            let raw = chunk(3, payload);
            let sent = Compressor::new().apply(raw.clone());
            let kept = sent.has(ChunkFlags::COMPRESSED);
            eprintln!(
                "lz4/{kind}/{name}: {} ({} -> {} bytes)",
                if kept { "kept compressed" } else { "sent raw" },
                raw.payload.len(),
                sent.payload.len()
            );
            g.bench_function(BenchmarkId::new(format!("apply/{kind}"), name), |b| {
                b.iter_batched(
                    || raw.clone(),
                    |c| Compressor::new().apply(black_box(c)),
                    BatchSize::SmallInput,
                );
            });
            if kept {
                g.bench_function(BenchmarkId::new(format!("decompress/{kind}"), name), |b| {
                    b.iter_batched(
                        || sent.clone(),
                        |c| compress::decompress(black_box(c), max).unwrap(),
                        BatchSize::SmallInput,
                    );
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, decode, encode_group, lz4);
criterion_main!(benches);
