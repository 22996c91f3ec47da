//! An impaired network path for tests, in userspace (this kernel has no `netem`): each
//! direction delays every packet by `delay ± uniform jitter` (so packets reorder, as netem's
//! do), drops a fraction, and sends a fraction at once with no delay (netem's `reorder`), from
//! a seeded RNG; its queue is bounded.
//!
//! Two carriers share that model ([`Line`]):
//! - [`UdpRelay`]: a UDP port on loopback that forwards one client's datagrams to a server's
//!   UDP port and back. Enough for QUIC; needs no privilege.
//! - [`TunPath`] (module `tun`): a network namespace joined to this one by two TUN devices,
//!   whose IP packets this process forwards. TCP and QUIC cross the same impaired path, so
//!   their times compare. Needs root; when namespaces are not permitted it says so and the
//!   caller skips (or fails under `CI`).
#![allow(dead_code, unreachable_pub)] // each test binary uses its own part

pub mod ns;
pub mod tun;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Packets one direction holds at most; beyond it arrivals are dropped (a router's tail drop).
/// 4096 full-size packets are 6 MB: more than any window here puts in flight in 40 ms.
pub const QUEUE_LIMIT: usize = 4096;

/// What the path does to each packet, in each direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// One-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform value in `[-jitter, +jitter]`.
    pub jitter: Duration,
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// Probability that a packet is sent at once, overtaking those in the queue.
    pub reorder: f64,
    /// Seed of the first direction's RNG (the second uses `seed + 1`).
    pub seed: u64,
}

impl Impairment {
    /// The first path: 30 ms ± 2 ms, no loss.
    pub const fn jittery(seed: u64) -> Self {
        Self {
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(2),
            loss: 0.0,
            reorder: 0.0,
            seed,
        }
    }

    /// The second path: 30 ms ± 10 ms, 2 % loss, 1 % reordering.
    pub const fn lossy(seed: u64) -> Self {
        Self {
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(10),
            loss: 0.02,
            reorder: 0.01,
            seed,
        }
    }
}

/// What one direction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Packets offered.
    pub packets: u64,
    /// Dropped at random.
    pub lost: u64,
    /// Dropped because the queue was full.
    pub overflow: u64,
    /// Sent with no delay.
    pub undelayed: u64,
    /// Packets that left after a packet that arrived after them.
    pub reordered: u64,
}

/// One direction of the path: decides each packet's fate. Pure, so its tests need no
/// sockets.
#[derive(Debug)]
pub struct Line {
    imp: Impairment,
    rng: StdRng,
    stats: LineStats,
    /// The latest departure time given so far: a packet leaving before it was overtaken.
    latest: Option<Instant>,
}

impl Line {
    /// A direction with its own RNG seeded by `seed`.
    pub fn new(imp: Impairment, seed: u64) -> Self {
        Self {
            imp,
            rng: StdRng::seed_from_u64(seed),
            stats: LineStats::default(),
            latest: None,
        }
    }

    /// A packet arrives at `now` with `queued` packets waiting: when it leaves, or `None` if
    /// it is dropped.
    pub fn admit(&mut self, now: Instant, queued: usize) -> Option<Instant> {
        self.stats.packets += 1;
        if queued >= QUEUE_LIMIT {
            self.stats.overflow += 1;
            return None;
        }
        if self.imp.loss > 0.0 && self.rng.random_bool(self.imp.loss) {
            self.stats.lost += 1;
            return None;
        }
        let at = if self.imp.reorder > 0.0 && self.rng.random_bool(self.imp.reorder) {
            self.stats.undelayed += 1;
            now
        } else {
            let jitter = u64::try_from(self.imp.jitter.as_micros()).unwrap_or(u64::MAX);
            let offset = self.rng.random_range(0..=2 * jitter);
            // delay - jitter + offset, never before `now`.
            (now + self.imp.delay + Duration::from_micros(offset))
                .checked_sub(self.imp.jitter)
                .map_or(now, |t| t.max(now))
        };
        match self.latest {
            Some(latest) if at < latest => self.stats.reordered += 1,
            _ => self.latest = Some(at),
        }
        Some(at)
    }

    /// What this direction did so far.
    pub fn stats(&self) -> LineStats {
        self.stats
    }
}

/// Where packets come from and go to in one direction.
pub trait Port: Send + Sync + 'static {
    /// Receives one packet into `buf`.
    fn recv<'a>(&'a self, buf: &'a mut [u8])
    -> impl Future<Output = io::Result<usize>> + Send + 'a;
    /// Sends one packet (best effort: a packet that cannot be sent is lost, as on a wire).
    fn send<'a>(&'a self, packet: &'a [u8]) -> impl Future<Output = ()> + Send + 'a;
}

/// Forwards packets from `input` to `output` through `line` until `input` fails. The line's
/// statistics are published in `stats`.
pub async fn forward<I: Port, O: Port>(
    input: Arc<I>,
    output: Arc<O>,
    mut line: Line,
    stats: Arc<Mutex<LineStats>>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut seq = 0u64;
    // (departure, arrival order) orders the heap; the packet rides along.
    let mut queue: BinaryHeap<Reverse<(Instant, u64, Bytes)>> = BinaryHeap::new();
    loop {
        let next = queue.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            r = input.recv(&mut buf) => {
                let Ok(n) = r else { return };
                if let Some(at) = line.admit(Instant::now(), queue.len()) {
                    seq += 1;
                    queue.push(Reverse((at, seq, Bytes::copy_from_slice(&buf[..n]))));
                }
                *stats.lock().unwrap() = line.stats();
            }
            () = sleep_until(next), if next.is_some() => {}
        }
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = queue.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, _, packet)) = queue.pop().unwrap();
            output.send(&packet).await;
        }
    }
}

/// real time: the impaired link lets each packet out at its due time, as a real one would.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A UDP relay on loopback between one client and a server's UDP port, impairing both
/// directions. Stops when dropped.
pub struct UdpRelay {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    to_server: Arc<Mutex<LineStats>>,
    to_client: Arc<Mutex<LineStats>>,
}

/// The relay's client side: receives from whoever sent last (the one client), replies to it.
struct Front {
    socket: UdpSocket,
    client: Mutex<Option<SocketAddr>>,
}

impl Port for Front {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, from) = self.socket.recv_from(buf).await?;
        *self.client.lock().unwrap() = Some(from);
        Ok(n)
    }

    async fn send(&self, packet: &[u8]) {
        let to = *self.client.lock().unwrap();
        if let Some(to) = to {
            let _ = self.socket.send_to(packet, to).await;
        }
    }
}

/// The relay's server side: a socket connected to the server.
struct Back(UdpSocket);

impl Port for Back {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.recv(buf).await {
                // ICMP port unreachable (the server not yet or no longer there) is not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                r => return r,
            }
        }
    }

    async fn send(&self, packet: &[u8]) {
        let _ = self.0.send(packet).await;
    }
}

impl UdpRelay {
    /// A relay on an ephemeral loopback port towards `server`.
    pub async fn start(server: SocketAddr, imp: Impairment) -> io::Result<Self> {
        let front = Arc::new(Front {
            socket: UdpSocket::bind((server.ip(), 0)).await?,
            client: Mutex::new(None),
        });
        let back_socket = UdpSocket::bind((server.ip(), 0)).await?;
        back_socket.connect(server).await?;
        let back = Arc::new(Back(back_socket));
        let addr = front.socket.local_addr()?;
        let to_server = Arc::new(Mutex::new(LineStats::default()));
        let to_client = Arc::new(Mutex::new(LineStats::default()));
        let tasks = vec![
            tokio::spawn(forward(
                front.clone(),
                back.clone(),
                Line::new(imp, imp.seed),
                to_server.clone(),
            )),
            tokio::spawn(forward(
                back,
                front,
                Line::new(imp, imp.seed + 1),
                to_client.clone(),
            )),
        ];
        Ok(Self {
            addr,
            tasks,
            to_server,
            to_client,
        })
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What each direction did: (client to server, server to client).
    pub fn stats(&self) -> (LineStats, LineStats) {
        (
            *self.to_server.lock().unwrap(),
            *self.to_client.lock().unwrap(),
        )
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
