//! The simulated network: packets between hosts over paths with seeded faults.
//!
//! Each direction between a client and the server is a [`Path`] with its own loss, delay,
//! jitter (which reorders, as netem's does), duplication, corruption (a flipped bit, which the
//! receiving transport's checksum drops, unless a broken middlebox fixed the checksum up),
//! a bandwidth limit (a serialisation queue with a bounded buffer: tail drop) and partitions
//! (windows in which the path drops everything).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

use crate::rng;
use crate::tcp::Segment;

/// A host's address in the simulation (0 is the server).
pub type HostId = u32;

/// Bytes a packet adds to its payload on the wire (IP and TCP headers).
pub const HEADER_BYTES: usize = 40;

/// One direction's impairments.
#[derive(Debug, Clone, PartialEq)]
pub struct PathConfig {
    /// Probability a packet is lost.
    pub loss: f64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly in `0..=jitter` per packet; reorders packets.
    pub jitter: Duration,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability one bit of a packet's payload is flipped.
    pub corrupt: f64,
    /// Probability a corrupted packet has its checksum fixed up (it reaches the application).
    pub slip: f64,
    /// Bytes per second the path serialises.
    pub bandwidth: u64,
    /// Bytes that may wait for serialisation; more are dropped at the tail.
    pub buffer: usize,
    /// Windows `[start, end)` of virtual time in which everything is dropped.
    pub partitions: Vec<(Duration, Duration)>,
}

impl PathConfig {
    /// A clean, fast path (for tests that want no faults).
    pub fn clean() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            duplicate: 0.0,
            corrupt: 0.0,
            slip: 0.0,
            bandwidth: 10_000_000,
            buffer: 1 << 20,
            partitions: Vec::new(),
        }
    }

    /// A path drawn from `rng`: mostly mild, sometimes harsh, with up to two partitions
    /// within `seconds`.
    pub fn draw(rng: &mut StdRng, seconds: u64, faults: Faults) -> Self {
        let harsh = rng.random_bool(0.2);
        let mut partitions = Vec::new();
        if faults.partitions && seconds >= 4 {
            for _ in 0..rng.random_range(0..=2u32) {
                if !rng.random_bool(0.35) {
                    continue;
                }
                let start = rng.random_range(1_000..seconds * 1000);
                let len = if rng.random_bool(0.15) {
                    rng.random_range(5_000..20_000)
                } else {
                    rng.random_range(100..3_000)
                };
                let start = Duration::from_millis(start);
                partitions.push((start, start + Duration::from_millis(len)));
            }
        }
        partitions.sort();
        let scale = if faults.lossy { 1.0 } else { 0.0 };
        Self {
            loss: scale
                * if harsh {
                    rng.random_range(0.02..0.08)
                } else {
                    rng.random_range(0.0..0.01)
                },
            delay: rng::millis(rng, 2, if harsh { 150 } else { 40 }),
            jitter: rng::millis(rng, 0, if harsh { 60 } else { 10 }),
            duplicate: scale * rng.random_range(0.0..0.01),
            corrupt: scale * rng.random_range(0.0..if harsh { 0.01 } else { 0.002 }),
            slip: if faults.slip {
                rng.random_range(0.05..0.3)
            } else {
                0.0
            },
            bandwidth: rng.random_range(if harsh { 60_000 } else { 250_000 }..2_000_000),
            buffer: rng.random_range(16_384..262_144),
            partitions,
        }
    }

    /// The longest partition, for the viewer's in-order invariant.
    pub fn longest_partition(&self) -> Duration {
        self.partitions
            .iter()
            .map(|(a, b)| *b - *a)
            .max()
            .unwrap_or_default()
    }

    fn partitioned(&self, at: Duration) -> bool {
        self.partitions.iter().any(|(a, b)| (*a..*b).contains(&at))
    }
}

/// Which kinds of faults a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Loss, duplication and corruption.
    pub lossy: bool,
    /// Partitions.
    pub partitions: bool,
    /// Corruptions that slip past the transport checksum.
    pub slip: bool,
}

impl Faults {
    /// Every fault.
    pub const ALL: Self = Self {
        lossy: true,
        partitions: true,
        slip: true,
    };
    /// None: a clean network (delay, jitter and bandwidth only).
    pub const NONE: Self = Self {
        lossy: false,
        partitions: false,
        slip: false,
    };
}

/// Faults injected so far, for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Packets lost at random.
    pub lost: u64,
    /// Packets dropped by a partition.
    pub partitioned: u64,
    /// Packets dropped at the tail of a full bottleneck buffer.
    pub tail_dropped: u64,
    /// Packets delivered twice.
    pub duplicated: u64,
    /// Packets with a flipped bit.
    pub corrupted: u64,
    /// Corrupted packets whose checksum was fixed up on the way.
    pub slipped: u64,
}

impl FaultCounts {
    /// All faults.
    pub fn total(&self) -> u64 {
        self.lost + self.partitioned + self.tail_dropped + self.duplicated + self.corrupted
    }
}

/// A packet in flight.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Sender.
    pub from: HostId,
    /// Receiver.
    pub to: HostId,
    /// The transport segment it carries.
    pub segment: Segment,
}

/// One direction between two hosts.
#[derive(Debug)]
pub struct Path {
    config: PathConfig,
    rng: StdRng,
    /// When the serialiser is free again.
    busy_until: Duration,
}

impl Path {
    /// A path with `config`, drawing its per-packet faults from `rng`.
    pub fn new(config: PathConfig, rng: StdRng) -> Self {
        Self {
            config,
            rng,
            busy_until: Duration::ZERO,
        }
    }

    /// The path's settings.
    pub fn config(&self) -> &PathConfig {
        &self.config
    }

    /// Bytes waiting in the bottleneck buffer at `now`.
    pub fn queued(&self, now: Duration) -> usize {
        let wait = self.busy_until.saturating_sub(now);
        (wait.as_secs_f64() * self.config.bandwidth as f64) as usize
    }

    /// Sends `packet` at `now`; returns its arrivals (none if dropped, two if duplicated).
    pub fn send(
        &mut self,
        now: Duration,
        mut packet: Packet,
        faults: &mut FaultCounts,
    ) -> Vec<(Duration, Packet)> {
        let size = packet.segment.payload.len() + HEADER_BYTES;
        if self.config.partitioned(now) {
            faults.partitioned += 1;
            return Vec::new();
        }
        if self.queued(now) + size > self.config.buffer {
            faults.tail_dropped += 1;
            return Vec::new();
        }
        let start = self.busy_until.max(now);
        let depart = start + Duration::from_secs_f64(size as f64 / self.config.bandwidth as f64);
        self.busy_until = depart;
        if self.rng.random_bool(self.config.loss) {
            faults.lost += 1;
            return Vec::new();
        }
        if !packet.segment.payload.is_empty() && self.rng.random_bool(self.config.corrupt) {
            faults.corrupted += 1;
            let mut bytes = BytesMut::from(&packet.segment.payload[..]);
            let bit = self.rng.random_range(0..bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            packet.segment.payload = Bytes::from(bytes);
            if self.rng.random_bool(self.config.slip) {
                faults.slipped += 1;
                packet.segment.seal();
            }
        }
        let mut out = Vec::with_capacity(1);
        let copies = if self.rng.random_bool(self.config.duplicate) {
            faults.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = match u64::try_from(self.config.jitter.as_micros()).unwrap_or(0) {
                0 => Duration::ZERO,
                j => Duration::from_micros(self.rng.next_u64() % (j + 1)),
            };
            out.push((depart + self.config.delay + jitter, packet.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Segment;

    fn packet(len: usize) -> Packet {
        Packet {
            from: 1,
            to: 0,
            segment: Segment::data(1, 0, Bytes::from(vec![7u8; len])),
        }
    }

    #[test]
    fn bandwidth_spaces_packets_and_a_full_buffer_drops_the_tail() {
        let mut cfg = PathConfig::clean();
        cfg.bandwidth = 1_000_000;
        cfg.buffer = 3_000;
        let mut path = Path::new(cfg, rng::derive(1, "t"));
        let mut faults = FaultCounts::default();
        let a = path.send(Duration::ZERO, packet(960), &mut faults);
        let b = path.send(Duration::ZERO, packet(960), &mut faults);
        assert_eq!(
            a[0].0,
            Duration::from_millis(11),
            "1 ms on the wire + 10 ms delay"
        );
        assert_eq!(b[0].0, Duration::from_millis(12));
        let c = path.send(Duration::ZERO, packet(960), &mut faults);
        let d = path.send(Duration::ZERO, packet(960), &mut faults);
        assert_eq!(c.len(), 1);
        assert!(
            d.is_empty(),
            "the fourth packet overflows 3000 bytes of buffer"
        );
        assert_eq!(faults.tail_dropped, 1);
    }

    #[test]
    fn a_partition_drops_everything_inside_its_window() {
        let mut cfg = PathConfig::clean();
        cfg.partitions = vec![(Duration::from_secs(1), Duration::from_secs(2))];
        let mut path = Path::new(cfg, rng::derive(1, "t"));
        let mut faults = FaultCounts::default();
        assert_eq!(
            path.send(Duration::from_millis(999), packet(10), &mut faults)
                .len(),
            1
        );
        assert!(
            path.send(Duration::from_millis(1000), packet(10), &mut faults)
                .is_empty()
        );
        assert_eq!(
            path.send(Duration::from_secs(2), packet(10), &mut faults)
                .len(),
            1
        );
        assert_eq!(faults.partitioned, 1);
    }

    #[test]
    fn a_corrupted_packet_fails_its_checksum_unless_it_slipped() {
        let mut cfg = PathConfig::clean();
        cfg.corrupt = 1.0;
        let mut faults = FaultCounts::default();
        let mut path = Path::new(cfg.clone(), rng::derive(1, "t"));
        let got = path.send(Duration::ZERO, packet(100), &mut faults);
        assert!(!got[0].1.segment.intact());
        cfg.slip = 1.0;
        let mut path = Path::new(cfg, rng::derive(1, "t"));
        let got = path.send(Duration::ZERO, packet(100), &mut faults);
        assert!(got[0].1.segment.intact());
        assert_ne!(got[0].1.segment.payload, packet(100).segment.payload);
        assert_eq!((faults.corrupted, faults.slipped), (2, 1));
    }
}
