//! The playout (jitter) buffer alone, on a virtual clock: what `push` + `poll` cost per unit.
//!
//! Isolates `playout::PlayoutBuffer` driven as its drive contract says (push each arrival,
//! then poll until `Wait`/`Idle`), with one hour of 20 ms audio units (180 000 units of
//! 3840 bytes, payloads sharing one buffer) and the default 100 ms buffer:
//! - `steady`: every unit arrives in order, exactly at its presentation time;
//! - `jittered`: units arrive in pairs, the second first (every other unit is reordered),
//!   0-30 ms late, and every 100th unit is lost, so the buffer also conceals (1 % of units).
//!
//! No real time passes: the clock is `t0 + arrival`, so the figures are pure CPU per unit
//! (throughput in units; an hour of audio in the time shown × 180 000). Cloning the unit
//! vector is set-up, not measured. Run: `cargo bench -p chunkcast-benches --bench playout`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_media::playout::{Config, Output, PlayoutBuffer, Unit};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// One hour of 20 ms units.
const UNITS: u64 = 180_000;
/// 20 ms of 48 kHz 16-bit stereo.
const UNIT_US: u32 = 20_000;
const UNIT_BYTES: usize = 3840;

/// (arrival µs after t0, unit), in arrival order.
type Arrivals = Vec<(u64, Unit<Bytes>)>;

fn unit(payload: &Bytes, seq: u64) -> Unit<Bytes> {
    Unit {
        seq,
        pts_us: seq * u64::from(UNIT_US),
        duration_us: UNIT_US,
        key: true,
        payload: payload.clone(),
    }
}

fn steady(payload: &Bytes) -> Arrivals {
    (0..UNITS)
        .map(|s| (s * u64::from(UNIT_US), unit(payload, s)))
        .collect()
}

fn jittered(payload: &Bytes) -> Arrivals {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out: Arrivals = Vec::with_capacity(UNITS as usize);
    for first in (0..UNITS).step_by(2) {
        // The pair arrives together, the second unit first, 0-30 ms after the second's pts
        // (under the 40 ms pair spacing, so arrival times never go back).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let second = first + 1;
        let at = second * u64::from(UNIT_US) + x % 30_000;
        for s in [second, first] {
            if s < UNITS && s % 100 != 99 {
                out.push((at, unit(payload, s)));
            }
        }
    }
    out
}

/// Drives the buffer through every arrival and drains it; returns (played, concealed).
fn drive(arrivals: Arrivals) -> (u64, u64) {
    let t0 = Instant::now();
    let mut buf = PlayoutBuffer::new(Config::default());
    let (mut played, mut concealed) = (0u64, 0u64);
    let mut poll = |buf: &mut PlayoutBuffer<Bytes>, now: Instant| loop {
        match buf.poll(now) {
            Output::Play(u) => {
                black_box(&u);
                played += 1;
            }
            Output::Conceal { .. } => concealed += 1,
            Output::Wait(at) => return Some(at),
            Output::Idle => return None,
        }
    };
    for (at, u) in arrivals {
        let now = t0 + Duration::from_micros(at);
        buf.push(now, u);
        poll(&mut buf, now);
    }
    buf.end_of_stream();
    let mut now = t0 + Duration::from_micros(UNITS * u64::from(UNIT_US));
    while let Some(at) = poll(&mut buf, now) {
        now = at;
    }
    (played, concealed)
}

fn bench(c: &mut Criterion) {
    let payload = Bytes::from(vec![0u8; UNIT_BYTES]);
    let mut g = c.benchmark_group("playout");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(UNITS));
    for (name, arrivals) in [
        ("steady", steady(&payload)),
        ("jittered", jittered(&payload)),
    ] {
        let (played, concealed) = drive(arrivals.clone());
        assert!(played > UNITS * 98 / 100, "{name}: {played} played");
        assert!(name == "jittered" || concealed == 0);
        g.bench_function(name, |b| {
            b.iter_batched(|| arrivals.clone(), drive, BatchSize::LargeInput);
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
