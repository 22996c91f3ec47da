//! The receiver's reassembly alone, without sockets or disk: what `Reassembler::push` +
//! `poll_write` cost per byte, BLAKE3 of every byte included, and how much of it is BLAKE3.
//!
//! Isolates, for 64 MiB streams of 1 KiB, 64 KiB and 1 MiB chunks whose payloads are slices
//! of one shared buffer (as the wire decoder's `split_to` makes them):
//! - `in_order`: every chunk pushed in order, `poll_write` drained after each push (the bytes
//!   dropped instead of written), then `finish` with its length, count and digest checks.
//! - `pairs_swapped`: chunks arriving as 1, 0, 3, 2, …: every other chunk waits in the
//!   reorder buffer (a `BTreeMap`) for its predecessor.
//! - `blake3_only`: `blake3::Hasher::update` over the same payload slices, the share of the
//!   above that is hashing (the client verifies the whole-file digest as bytes leave
//!   `poll_write`; the server hashed the file the same way at open).
//!
//! Cloning the chunk vector (reference counts) is set-up, not measured. Throughput is file
//! bytes. Run: `cargo bench -p chunkcast-benches --bench reassemble`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use chunkcast_media::{Expect, Reassembler};
use chunkcast_protocol::{Chunk, ChunkFlags, StreamId};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Bytes per reassembled stream: 64 MiB, larger than the caches, small enough to repeat.
const STREAM: usize = 64 << 20;

fn data() -> Bytes {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v = Vec::with_capacity(STREAM);
    while v.len() < STREAM {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(STREAM);
    Bytes::from(v)
}

fn chunks(data: &Bytes, size: usize) -> Vec<Chunk> {
    let n = data.len().div_ceil(size);
    (0..n)
        .map(|i| {
            let start = i * size;
            let end = (start + size).min(data.len());
            let mut flags = ChunkFlags::KEY | ChunkFlags::END_OF_UNIT;
            if i + 1 == n {
                flags = flags | ChunkFlags::END_OF_STREAM;
            }
            Chunk::new(
                StreamId(1),
                i as u64,
                start as u64,
                0,
                0,
                flags,
                data.slice(start..end),
            )
        })
        .collect()
}

fn reassemble(chunks: Vec<Chunk>, digest: [u8; 32]) -> u64 {
    let mut expect = Expect::new();
    expect.total_len = Some(STREAM as u64);
    expect.chunk_count = Some(chunks.len() as u64);
    expect.digest = Some(digest);
    let mut r = Reassembler::new(expect);
    let mut written = 0u64;
    for c in chunks {
        r.push(c).expect("push");
        while let Some((_, bytes)) = r.poll_write() {
            written += bytes.len() as u64;
            black_box(&bytes);
        }
    }
    r.finish().expect("finish");
    written
}

fn bench(c: &mut Criterion) {
    let data = data();
    let digest = *blake3::hash(&data).as_bytes();
    let mut g = c.benchmark_group("reassemble");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(STREAM as u64));
    for (size, name) in [
        (1usize << 10, "1KiB"),
        (64 << 10, "64KiB"),
        (1 << 20, "1MiB"),
    ] {
        let in_order = chunks(&data, size);
        let mut swapped = in_order.clone();
        for pair in swapped.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
        g.bench_function(BenchmarkId::new("in_order", name), |b| {
            b.iter_batched(
                || in_order.clone(),
                |v| reassemble(v, digest),
                BatchSize::LargeInput,
            );
        });
        g.bench_function(BenchmarkId::new("pairs_swapped", name), |b| {
            b.iter_batched(
                || swapped.clone(),
                |v| reassemble(v, digest),
                BatchSize::LargeInput,
            );
        });
        g.bench_function(BenchmarkId::new("blake3_only", name), |b| {
            b.iter(|| {
                let mut h = blake3::Hasher::new();
                for c in &in_order {
                    h.update(&c.payload);
                }
                h.finalize()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
