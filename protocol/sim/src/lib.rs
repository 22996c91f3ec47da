//! A deterministic simulation of a chunkcast server and many clients, in one thread, over a
//! simulated network, on virtual time.
//!
//! FoundationDB's and TigerBeetle's simulators are the models: everything that is not the
//! system under test is simulated and driven by one seed, so a failure found once is found
//! again by replaying its seed. The system under test is the real code: the sans-IO connection
//! machines (`chunkcast_protocol::conn::{ServerConn, ClientConn}`), the wire codec with its
//! CRC32C, and the media crate's packetizers, reassembly, units, playout and fan-out.
//!
//! Where things are:
//! - [`time`]: the virtual clock (one read of the real clock, for a base `Instant`) and the
//!   event queue, ordered by (time, insertion) so ties are deterministic;
//! - [`rng`]: one seed, split per component by label;
//! - [`net`]: paths with loss, delay, jitter, duplication, corruption, bandwidth, partitions;
//! - [`tcp`]: a small reliable byte stream over those paths;
//! - [`library`]: the server's media, generated in memory;
//! - [`server`]: the server application around `ServerConn`: file streams, live channels;
//! - [`client`]: the client applications around `ClientConn`: downloader, player, publisher,
//!   viewer, slow viewer, caller;
//! - [`invariants`]: the oracle and the violations it reports;
//! - [`trace`]: the BLAKE3 hash over every event;
//! - [`scenario`]: who does what in a run, the run loop, and its report.
//!
//! Nothing here reads the clock after the start, spawns a thread or iterates a `HashMap`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod invariants;
pub mod library;
pub mod net;
pub mod rng;
pub mod scenario;
pub mod server;
pub mod tcp;
pub mod time;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use scenario::{Report, Sabotage, Scenario, run};

use crate::invariants::Oracle;
use crate::library::Library;
use crate::net::{FaultCounts, HostId, Packet, Path};
use crate::time::{Clock, Queue};
use crate::trace::Trace;

/// Something that runs when an event reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    /// A connection on the server.
    Server(u64),
    /// A client host.
    Client(HostId),
}

/// What the event queue holds.
#[derive(Debug)]
pub(crate) enum Event {
    /// A packet arrives.
    Deliver(Packet),
    /// A timer of a target.
    Wake(Target),
    /// The periodic invariant check.
    Check,
}

/// Everything the hosts share: time, the network, the truth, the record.
pub struct World {
    /// Virtual time now.
    pub now: Duration,
    /// The clock, for the machines' `Instant`s.
    pub clock: Clock,
    /// The run's trace.
    pub trace: Trace,
    /// The truth and the record.
    pub oracle: Oracle,
    /// The server's media.
    pub library: Library,
    /// Faults injected.
    pub faults: FaultCounts,
    /// The network loses nothing (no loss, corruption or partition): no peer may time out.
    pub clean: bool,
    queue: Queue<Event>,
    paths: BTreeMap<(HostId, HostId), Path>,
    in_flight: usize,
    publisher_files: BTreeMap<HostId, usize>,
    /// Clients on whose paths a corruption slipped past the transport checksum.
    slipped: BTreeSet<HostId>,
}

impl World {
    /// Puts a segment on the path from `from` to `to`.
    pub fn send(&mut self, from: HostId, to: HostId, segment: tcp::Segment) {
        let len = segment.payload.len();
        self.trace
            .event(self.now, from, "tx", segment.seq, len as u64);
        let Some(path) = self.paths.get_mut(&(from, to)) else {
            return;
        };
        let packet = Packet { from, to, segment };
        let slipped = self.faults.slipped;
        let arrivals = path.send(self.now, packet, &mut self.faults);
        if self.faults.slipped > slipped {
            self.slipped.insert(from.max(to));
        }
        for (at, p) in arrivals {
            self.in_flight += len;
            self.queue.push(at, Event::Deliver(p));
        }
    }

    /// The library file a publisher host publishes.
    pub fn publisher_file(&self, host: HostId) -> usize {
        self.publisher_files.get(&host).copied().unwrap_or(0)
    }

    /// Whether a corruption slipped past the transport checksum on a path of client `host`:
    /// then its control frames, which carry no CRC, may have been altered.
    pub fn slipped(&self, host: HostId) -> bool {
        self.slipped.contains(&host)
    }

    /// Payload bytes in flight on the network.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}
