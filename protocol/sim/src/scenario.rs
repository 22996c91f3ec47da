//! A run: who does what, the event loop, and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::client::{self, Client, Download, Part, Play, Publish, Role, View};
use crate::invariants::{Counts, Oracle, Violation};
use crate::library::{Kind, Library};
use crate::net::{FaultCounts, Faults, HostId, Path, PathConfig};
use crate::server::{self, Server};
use crate::time::{Clock, Queue};
use crate::trace::Trace;
use crate::{Event, Target, World, rng};

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Client hosts.
    pub clients: usize,
    /// Simulated seconds.
    pub seconds: u64,
    /// Faults to inject.
    pub faults: Faults,
    /// Print every event.
    pub trace: bool,
    /// For the invariant tests: break the system on purpose, to show the checks notice.
    pub sabotage: Option<Sabotage>,
    /// The memory cap; by default 2 MiB per client plus 16 MiB.
    pub memory_cap: Option<usize>,
}

/// Ways to break the system on purpose, so that the tests show each invariant check can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Flip a bit in every Nth chunk on its way to a sink, as a client that skipped the CRC
    /// check would let through.
    CorruptChunks(u64),
    /// The server answers every `OPEN` and then forgets the stream: no chunk, no `CLOSE`,
    /// while the connection stays alive with pings.
    ForgetStreams,
    /// The server loses every Nth chunk between a viewer's queue and its connection, behind
    /// the fan-out's back.
    SkipViewerChunks(u64),
}

impl Scenario {
    /// `clients` clients for `seconds` with every fault, from `seed`.
    pub fn new(seed: u64, clients: usize, seconds: u64) -> Self {
        Self {
            seed,
            clients,
            seconds,
            faults: Faults::ALL,
            trace: false,
            sabotage: None,
            memory_cap: None,
        }
    }

    /// The command line that replays this run.
    pub fn replay_line(&self) -> String {
        let clean = if self.faults == Faults::NONE {
            " --clean"
        } else {
            ""
        };
        format!(
            "cargo run -p chunkcast-sim --release -- --seed {} --clients {} --seconds {}{clean}",
            self.seed, self.clients, self.seconds
        )
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// What ran.
    pub scenario: Scenario,
    /// The trace's hash.
    pub hash: String,
    /// Events in the trace.
    pub events: u64,
    /// What happened.
    pub counts: Counts,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Clients by role.
    pub roles: BTreeMap<&'static str, usize>,
    /// Most bytes held at once (buffers, queues, in flight).
    pub memory_peak: usize,
    /// The memory cap.
    pub memory_cap: usize,
    /// How client connections ended, by the machine's error.
    pub closes: BTreeMap<String, u64>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let s = &self.scenario;
        writeln!(
            f,
            "seed {} | {} clients | {} s | trace {} | {} events",
            s.seed, s.clients, s.seconds, self.hash, self.events
        )?;
        let roles: Vec<String> = self.roles.iter().map(|(r, n)| format!("{n} {r}")).collect();
        writeln!(f, "  roles: {}", roles.join(", "))?;
        writeln!(
            f,
            "  listings: {} | downloads: {} completed ({} resumed), {} failed | plays: {} completed, {} units | chunks delivered: {} ({} bytes) | published: {}",
            c.listings,
            c.downloads_completed,
            c.resumed,
            c.downloads_failed,
            c.plays_completed,
            c.units_played,
            c.chunks_delivered,
            c.bytes_delivered,
            c.chunks_published
        )?;
        let x = &self.faults;
        writeln!(
            f,
            "  faults: {} (lost {}, partitioned {}, tail-dropped {}, duplicated {}, corrupted {}, slipped past the checksum {}) | CRC32C caught {} | requests unanswered {}, answers altered {} | fan-out dropped {}, lagged {} | connections {} ({} ended in error)",
            x.total(),
            x.lost,
            x.partitioned,
            x.tail_dropped,
            x.duplicated,
            x.corrupted,
            x.slipped,
            c.crc_caught,
            c.request_timeouts,
            c.bad_answers,
            c.fanout_drops,
            c.lagged,
            c.connections,
            c.connection_errors
        )?;
        let closes: Vec<String> = self
            .closes
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        writeln!(f, "  client connections ended: {}", closes.join(", "))?;
        write!(
            f,
            "  memory peak {} KiB (cap {} KiB)",
            self.memory_peak >> 10,
            self.memory_cap >> 10
        )?;
        for v in &self.violations {
            write!(f, "\n  VIOLATION: {v}")?;
        }
        Ok(())
    }
}

/// How long a download may neither progress nor fail: twice the idle timeout, by which both
/// machines' keepalives must have given up on a dead connection.
const STUCK_AFTER: Duration = Duration::from_secs(20);

/// Runs a scenario to its end.
pub fn run(s: &Scenario) -> Report {
    let clock = Clock::new();
    let library = Library::generate(&mut rng::derive(s.seed, "library"));
    let mut oracle = Oracle::new();
    if let Some(Sabotage::CorruptChunks(n)) = s.sabotage {
        oracle.sabotage_every = Some(n);
    }
    let mut world = World {
        now: Duration::ZERO,
        clock,
        trace: Trace::new(s.trace),
        oracle,
        library,
        faults: FaultCounts::default(),
        clean: !s.faults.lossy && !s.faults.partitions,
        queue: Queue::new(),
        paths: BTreeMap::new(),
        in_flight: 0,
        publisher_files: BTreeMap::new(),
        slipped: BTreeSet::new(),
    };
    let epoch = world.clock.at(Duration::ZERO);
    let mut config = server::default_config(epoch);
    config.forget_streams = s.sabotage == Some(Sabotage::ForgetStreams);
    if let Some(Sabotage::SkipViewerChunks(n)) = s.sabotage {
        config.skip_viewer_chunks = Some(n);
    }
    let mut server = Server::new(config);
    let (mut clients, roles) = cast(s, &mut world, epoch);
    let mut sim = Loop {
        wakes: BTreeMap::new(),
        memory: BTreeMap::new(),
        held: 0,
        peak: 0,
        cap: s.memory_cap.unwrap_or(s.clients * (2 << 20) + (16 << 20)),
        stuck: BTreeSet::new(),
    };
    for (i, c) in clients.iter().enumerate() {
        let at = c.poll_timeout(&world).unwrap_or_default();
        sim.wake(&mut world, Target::Client(i as HostId + 1), Some(at));
    }
    world.queue.push(Duration::from_secs(1), Event::Check);
    let end = Duration::from_secs(s.seconds);
    while let Some((at, event)) = world.queue.pop_until(end) {
        world.clock.advance_to(at);
        world.now = at;
        match event {
            Event::Deliver(p) => {
                world.in_flight -= p.segment.payload.len();
                world.trace.event(
                    at,
                    p.to,
                    "rx",
                    p.segment.seq,
                    p.segment.payload.len() as u64,
                );
                if p.to == 0 {
                    if let Some(conn) = server.handle_segment(&mut world, p.from, p.segment) {
                        sim.server(&mut world, &mut server, conn);
                    }
                } else {
                    let i = p.to;
                    clients[i as usize - 1].handle_segment(&mut world, p.segment);
                    sim.client(&mut world, &mut clients, i);
                }
            }
            Event::Wake(target) => {
                if sim.wakes.get(&target) != Some(&at) {
                    continue;
                }
                sim.wakes.remove(&target);
                match target {
                    Target::Server(conn) => sim.server(&mut world, &mut server, conn),
                    Target::Client(i) => sim.client(&mut world, &mut clients, i),
                }
            }
            Event::Check => {
                sim.check_stuck(&mut world, &clients);
                world.queue.push(at + Duration::from_secs(1), Event::Check);
            }
        }
    }
    world.now = end;
    sim.check_stuck(&mut world, &clients);
    Report {
        scenario: s.clone(),
        hash: world.trace.hash(),
        events: world.trace.events(),
        counts: world.oracle.counts,
        faults: world.faults,
        roles,
        memory_peak: sim.peak,
        memory_cap: sim.cap,
        closes: world.oracle.closes.clone(),
        violations: world.oracle.violations().to_vec(),
    }
}

/// The loop's bookkeeping: timers, memory, stuck clients already reported.
struct Loop {
    wakes: BTreeMap<Target, Duration>,
    memory: BTreeMap<Target, usize>,
    held: usize,
    peak: usize,
    cap: usize,
    stuck: BTreeSet<(HostId, Duration)>,
}

impl Loop {
    /// Makes sure `target` runs at `at` (or earlier, if already due earlier).
    fn wake(&mut self, w: &mut World, target: Target, at: Option<Duration>) {
        let Some(at) = at else {
            return;
        };
        // Never in the past: what is due now runs at the next microsecond.
        let at = at.max(w.now + Duration::from_micros(1));
        match self.wakes.get(&target) {
            Some(&t) if t <= at && t > w.now => {}
            _ => {
                self.wakes.insert(target, at);
                w.queue.push(at, Event::Wake(target));
            }
        }
    }

    fn server(&mut self, w: &mut World, server: &mut Server, conn: u64) {
        let mut dirty = BTreeSet::from([conn]);
        let mut runs = 0;
        while let Some(c) = dirty.pop_first() {
            runs += 1;
            if runs > 10_000 {
                break;
            }
            server.pump(w, c, &mut dirty);
            let next = server.poll_timeout(w, c);
            self.wake(w, Target::Server(c), next);
            self.account(w, Target::Server(c), server.memory(c));
        }
    }

    fn client(&mut self, w: &mut World, clients: &mut [Client], id: HostId) {
        let c = &mut clients[id as usize - 1];
        c.pump(w);
        let next = c.poll_timeout(w);
        self.wake(w, Target::Client(id), next);
        self.account(w, Target::Client(id), c.memory());
    }

    fn account(&mut self, w: &mut World, target: Target, bytes: usize) {
        let old = self.memory.insert(target, bytes).unwrap_or(0);
        self.held = self.held + bytes - old;
        let total = self.held + w.in_flight();
        self.peak = self.peak.max(total);
        if total > self.cap
            && !w
                .oracle
                .violations()
                .iter()
                .any(|v| matches!(v, Violation::Memory { .. }))
        {
            w.oracle.violate(Violation::Memory {
                at: w.now,
                held: total,
                cap: self.cap,
            });
        }
    }

    fn check_stuck(&mut self, w: &mut World, clients: &[Client]) {
        for (i, c) in clients.iter().enumerate() {
            let Some((since, what)) = c.waiting() else {
                continue;
            };
            let id = i as HostId + 1;
            if w.now.saturating_sub(since) > STUCK_AFTER && self.stuck.insert((id, since)) {
                w.oracle.violate(Violation::Stuck {
                    client: id,
                    what,
                    since,
                    at: w.now,
                });
            }
        }
    }
}

/// Casts the clients: roles, paths, what each plays or publishes.
fn cast(
    s: &Scenario,
    w: &mut World,
    epoch: std::time::Instant,
) -> (Vec<Client>, BTreeMap<&'static str, usize>) {
    let n = s.clients;
    let mut rng = rng::derive(s.seed, "cast");
    let mut roles = Vec::with_capacity(n);
    let channels = n.div_ceil(25).max(1);
    let calls = if n >= 6 { n.div_ceil(50) } else { 0 };
    for _ in 0..calls {
        roles.extend([Role::Caller, Role::Caller]);
    }
    roles.extend(std::iter::repeat_n(Role::Publisher, channels));
    roles.extend(std::iter::repeat_n(Role::SlowViewer, n.div_ceil(25)));
    let rest = n.saturating_sub(roles.len());
    roles.extend(std::iter::repeat_n(Role::Viewer, rest * 3 / 10));
    roles.extend(std::iter::repeat_n(Role::Player, rest.div_ceil(5)));
    roles.truncate(n);
    while roles.len() < n {
        roles.push(Role::Downloader);
    }
    // Callers stay in pairs at the front; the others are shuffled.
    let pairs = (calls * 2).min(n);
    roles[pairs..].shuffle(&mut rng);
    let live_files: Vec<usize> = w
        .library
        .of_kind(Kind::Audio)
        .into_iter()
        .chain(w.library.of_kind(Kind::Video))
        .collect();
    let all: Vec<usize> = (0..w.library.files().len()).collect();
    let mut channel_files = Vec::new();
    for ch in 0..channels {
        channel_files
            .push(live_files[(ch + rng.random_range(0..live_files.len())) % live_files.len()]);
    }
    let config = client::Config::new(epoch);
    let mut clients = Vec::with_capacity(n);
    let mut counts = BTreeMap::new();
    let (mut publishers, mut viewers) = (0usize, 0usize);
    for (i, &role) in roles.iter().enumerate() {
        let id = i as HostId + 1;
        *counts.entry(role.name()).or_default() += 1;
        let mut crng = rng::derive(s.seed, &format!("client/{id}"));
        let good = matches!(role, Role::Viewer | Role::Publisher | Role::Caller);
        for (from, to) in [(id, 0), (0, id)] {
            let mut prng = rng::derive(s.seed, &format!("path/{from}/{to}"));
            let mut cfg = PathConfig::draw(&mut prng, s.seconds, s.faults);
            if good {
                keep_up(&mut cfg);
            }
            w.paths.insert((from, to), Path::new(cfg, prng));
        }
        let parts: Vec<Box<dyn Part>> = match role {
            Role::Downloader => vec![Box::new(Download::new(all.clone()))],
            Role::Player => vec![Box::new(Play::new(live_files.clone()))],
            Role::Publisher => {
                let ch = publishers % channels;
                publishers += 1;
                w.publisher_files.insert(id, channel_files[ch]);
                vec![Box::new(Publish::new(
                    format!("live/ch{ch}"),
                    channel_files[ch],
                ))]
            }
            Role::Viewer | Role::SlowViewer => {
                let ch = viewers % channels;
                viewers += 1;
                vec![Box::new(View::new(
                    format!("live/ch{ch}"),
                    role == Role::Viewer,
                ))]
            }
            Role::Caller => {
                let room = i / 2;
                let file = live_files[rng.random_range(0..live_files.len())];
                w.publisher_files.insert(id, file);
                vec![
                    Box::new(Publish::new(format!("call/room{room}/media"), file)),
                    Box::new(View::new(format!("call/room{room}/media"), true)),
                ]
            }
        };
        let start = Duration::from_millis(crng.random_range(0..2_000));
        clients.push(Client::new(id, role, config.clone(), crng, parts, start));
    }
    (clients, counts)
}

/// A path good enough to keep up with a live channel: not harsh, and no partition longer
/// than the fan-out's queue absorbs.
fn keep_up(cfg: &mut PathConfig) {
    cfg.loss = cfg.loss.min(0.01);
    cfg.delay = cfg.delay.min(Duration::from_millis(60));
    cfg.jitter = cfg.jitter.min(Duration::from_millis(15));
    cfg.bandwidth = cfg.bandwidth.max(400_000);
    cfg.buffer = cfg.buffer.max(64 << 10);
    for p in &mut cfg.partitions {
        p.1 = p.1.min(p.0 + Duration::from_secs(2));
    }
}
