//! The edge tier's "done when", in one run across hosts: one publisher, origins A and B, a
//! Redis directory, two edges behind HAProxy (`mode tcp`) and 200 viewers, each tier in a
//! network namespace of its own. Every packet between two tiers crosses a switch in this
//! process that delays it (userspace: this kernel has no netem), so the tiers talk as hosts
//! on a LAN with a few milliseconds between them, not over loopback.
//!
//! ```text
//!  publisher ─┐                       ┌─ edge1 (process) ─┐
//!  origin-a  ─┤                       │                   │
//!  origin-b  ─┼── switch (this test: ─┼─ edge2 (process) ─┤
//!  directory ─┤   delay per uplink)   │                   │
//!  (redis)    │                       └─ balancer ────────┴─ viewers (200 `watch` players)
//! ```
//!
//! In that one run it checks: each edge holds one subscription at the origin whatever its
//! number of viewers, and the origins' payload bytes are at most twice (two edges) what was
//! published; every viewer starts at a keyframe and gets every chunk in order with its
//! payload intact, to the end of the channel; killing an edge moves its viewers to the other
//! within 3 s with no corrupt chunk; a publisher restarted on origin B is followed by both
//! edges within the directory TTL.
//!
//! The viewers are the code path of `chunkcast watch` (`Player::watch` with the same options
//! `play::run` gives it: reconnection to the balancer's URL, a `file:` sink), run in a
//! thread that entered the viewers' namespace. Needs root (namespaces, TUN): skipped with a
//! message where that is not allowed, failed under `CI`.

mod impair;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_client::play::{PlayOptions, Player};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::sink::{Spec, Target};
use chunkcast_client::url::Url;
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, StreamId, VideoParams, VisualFormat};
use chunkcast_server::Server;
use chunkcast_testkit::{POLL_EVERY, metric, require_tool, scrape, server_with};
use impair::{Impairment, Line, LineStats, Port, forward};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Hard bound on the whole run.
const LIMIT: Duration = Duration::from_secs(150);
/// Time a condition that should hold promptly is given.
const PROMPT: Duration = Duration::from_secs(10);
const CHANNEL: &str = "live/cam";
const VIEWERS: usize = 200;
/// The directory entries' TTL: edges must follow a moved publisher within it.
const TTL: Duration = Duration::from_millis(2000);
/// The issue's bound on moving a killed edge's viewers to the other one.
const MOVE_WITHIN: Duration = Duration::from_secs(3);
/// 25 frames per second, a keyframe every 10th (a group is 400 ms).
const FRAME: Duration = Duration::from_millis(40);
const GROUP: u64 = 10;
/// Each frame's payload: its tagged number, a fill derived from it, a JPEG end marker (the
/// player checks MJPEG frames for it).
const PAYLOAD: usize = 300;

// The hosts, by index (their address is 10.77.0.<index + 1>).
const PUBLISHER: usize = 0;
const ORIGIN_A: usize = 1;
const ORIGIN_B: usize = 2;
const DIRECTORY: usize = 3;
const EDGE1: usize = 4;
const EDGE2: usize = 5;
const BALANCER: usize = 6;
const VIEWER_HOST: usize = 7;
const HOSTS: usize = 8;

/// Ports inside the namespaces (each host has its own, so fixed ports cannot clash).
const PORT: u16 = 7700;
const METRICS_PORT: u16 = 9100;
const REDIS_PORT: u16 = 6379;

const RELAYS: &str = "chunkcast_live_relay_viewers";
const VIEWERS_NOW: &str = "chunkcast_live_viewers";
const UPSTREAM_BYTES: &str = "chunkcast_edge_upstream_payload_bytes_total";
const SENT_BYTES: &str = "chunkcast_live_relay_payload_bytes_total";

// ---------------------------------------------------------------------------------------
// The network: one TUN device per host, each moved into the host's namespace, and a switch
// here that sends every IPv4 packet to the device of its destination, after its sender's
// uplink delay.

/// Namespaces are named `PREFIX<pid>-<host>`.
const NS_PREFIX: &str = "cctier-";
/// The hosts' /24; only the namespaces made here route it, so it cannot clash with the
/// machine's own addresses.
const SUBNET: [u8; 3] = [10, 77, 0];

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the namespaces of earlier runs that were killed before their drop ran.
fn remove_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One TUN device as a [`Port`].
struct Device(tun::AsyncDevice);

impl Port for Device {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf).await
    }

    async fn send(&self, packet: &[u8]) {
        let _ = self.0.send(packet).await;
    }
}

/// Hands each packet to the device of the host it is addressed to.
struct Switch(Vec<Arc<Device>>);

impl Port for Switch {
    async fn recv(&self, _: &mut [u8]) -> io::Result<usize> {
        // Only ever an output: packets come in through the devices.
        std::future::pending().await
    }

    async fn send(&self, packet: &[u8]) {
        // IPv4 to one of the hosts; anything else (IPv6 router solicitations) goes nowhere.
        if packet.len() < 20 || packet[0] >> 4 != 4 || packet[16..19] != SUBNET {
            return;
        }
        let host = usize::from(packet[19]).checked_sub(1);
        if let Some(device) = host.and_then(|h| self.0.get(h)) {
            device.send(packet).await;
        }
    }
}

/// The hosts: their namespaces, and the switch's forwarding tasks. Dropping it stops the
/// forwarding and removes the namespaces (their devices go with the file descriptors).
struct Hosts {
    namespaces: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
    uplinks: Vec<Arc<Mutex<LineStats>>>,
}

impl Hosts {
    /// `n` hosts, each sending through `imp` (its own seed). `Err` says why the machine does
    /// not allow it (not root, no `ip`, no TUN).
    async fn new(n: usize, imp: Impairment) -> Result<Self, String> {
        let pid = std::process::id();
        remove_orphans();
        let mut hosts = Self {
            namespaces: Vec::new(),
            tasks: Vec::new(),
            uplinks: Vec::new(),
        };
        let mut devices = Vec::new();
        for h in 0..n {
            let name = format!("cct{pid}h{h}");
            let mut cfg = tun::Configuration::default();
            cfg.tun_name(&name);
            let device = tun::create_as_async(&cfg)
                .map_err(|e| format!("opening TUN device {name}: {e}"))?;
            devices.push(Arc::new(Device(device)));
            let ns = format!("{NS_PREFIX}{pid}-{h}");
            ip(&["netns", "add", &ns])?;
            hosts.namespaces.push(ns.clone());
            ip(&["link", "set", &name, "netns", &ns])?;
            let addr = format!("{}/24", Self::ip(h));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &name])?;
            ip(&["-n", &ns, "link", "set", &name, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let switch = Arc::new(Switch(devices.clone()));
        for (h, device) in devices.into_iter().enumerate() {
            let stats = Arc::new(Mutex::new(LineStats::default()));
            let line = Line::new(imp, imp.seed + h as u64);
            hosts.tasks.push(tokio::spawn(forward(
                device,
                switch.clone(),
                line,
                stats.clone(),
            )));
            hosts.uplinks.push(stats);
        }
        Ok(hosts)
    }

    /// Host `h`'s address.
    fn ip(h: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], h as u8 + 1)
    }

    fn addr(h: usize, port: u16) -> SocketAddr {
        (Self::ip(h), port).into()
    }

    /// `program`, to be run on host `h`.
    fn command(&self, h: usize, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.namespaces[h], program]);
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// A tokio runtime whose threads are on host `h`.
    fn runtime(&self, h: usize) -> Result<HostRuntime, String> {
        HostRuntime::enter(&self.namespaces[h])
    }

    /// Packets the switch carried, and those it dropped (a full queue).
    fn packets(&self) -> (u64, u64) {
        self.uplinks.iter().fold((0, 0), |(p, o), s| {
            let s = *s.lock().unwrap();
            (p + s.packets, o + s.overflow)
        })
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleaning up: {e}");
            }
        }
    }
}

/// A multi-threaded tokio runtime on a thread that entered a namespace: a network
/// namespace is per thread, and the runtime's workers (spawned from that thread) inherit it,
/// so every socket its tasks open is on that host. Stopped when dropped.
struct HostRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostRuntime {
    fn enter(ns: &str) -> Result<Self, String> {
        let file = std::fs::File::open(format!("/run/netns/{ns}"))
            .map_err(|e| format!("opening namespace {ns}: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("host {ns}"))
            .spawn(move || {
                let runtime = rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| format!("entering the namespace: {e}"))
                .and_then(|()| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .map_err(|e| format!("a runtime: {e}"))
                });
                match runtime {
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stopped.await;
                        });
                        rt.shutdown_timeout(Duration::from_secs(2));
                    }
                }
            })
            .map_err(|e| format!("a thread: {e}"))?;
        let handle = rx
            .recv()
            .map_err(|_| "the host's thread died".to_owned())??;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }

    /// Runs `f` on this host and waits for it.
    async fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(f).await.expect("the task on the host")
    }
}

impl Drop for HostRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The media: frames whose payload says what they are, so that every viewer checks each one.

fn video() -> Codec {
    Codec::Video(VideoParams {
        format: VisualFormat::Mjpeg,
        width: 64,
        height: 64,
        fps_num: 25,
        fps_den: 1,
    })
}

/// Frame `n` of publisher `tag`: its number (`tag << 32 | n`), then a fill of `n % 251`,
/// then the JPEG end marker.
fn frame(tag: u64, n: u64, last: bool) -> Chunk {
    let mut flags = ChunkFlags::END_OF_UNIT;
    if n % GROUP == 0 {
        flags = flags.with(ChunkFlags::KEY);
    }
    if last {
        flags = flags.with(ChunkFlags::END_OF_STREAM);
    }
    let mut payload = vec![(n % 251) as u8; PAYLOAD];
    payload[..8].copy_from_slice(&(tag << 32 | n).to_be_bytes());
    payload[PAYLOAD - 2..].copy_from_slice(&[0xFF, 0xD9]);
    Chunk::new(
        StreamId(0),
        n,
        0,
        n * FRAME.as_micros() as u64,
        FRAME.as_micros() as u32,
        flags,
        Bytes::from(payload),
    )
}

/// The tagged frame numbers in what a `file:` sink saved; `Err` at the first record that is
/// not a frame as [`frame`] made it.
fn frames_in(saved: &[u8]) -> Result<Vec<u64>, String> {
    if saved.len() % PAYLOAD != 0 {
        return Err(format!("{} bytes: not whole frames", saved.len()));
    }
    saved
        .chunks(PAYLOAD)
        .enumerate()
        .map(|(i, f)| {
            let tagged = u64::from_be_bytes(f[..8].try_into().unwrap());
            let fill = ((tagged & 0xffff_ffff) % 251) as u8;
            let intact =
                f[8..PAYLOAD - 2].iter().all(|&b| b == fill) && f[PAYLOAD - 2..] == [0xFF, 0xD9];
            if intact {
                Ok(tagged)
            } else {
                Err(format!("frame {i} (numbered {tagged:#x}) is corrupt"))
            }
        })
        .collect()
}

/// What a viewer's frames must look like: it starts at a keyframe; each frame follows the one
/// before, except (at a keyframe) where the publisher changed (a higher tag: the edge goes on
/// at the new publisher's first keyframe it has) or where the viewer resubscribed after a
/// lost connection (the other edge starts at its cached keyframe: at most a group back, or
/// forward past what went by meanwhile). The last frame is `last`. Returns the resubscriptions
/// seen, which must be at most `reconnects`, and the most frames one of them skipped.
fn check_order(frames: &[u64], reconnects: u32, last: u64) -> Result<(u32, u64), String> {
    let key = |f: u64| (f & 0xffff_ffff) % GROUP == 0;
    let first = *frames.first().ok_or("no frame at all")?;
    if !key(first) {
        return Err(format!("starts at {first:#x}, not a keyframe"));
    }
    let mut resumed = 0;
    let mut skipped = 0;
    for w in frames.windows(2) {
        let (prev, next) = (w[0], w[1]);
        if next == prev + 1 {
            continue;
        }
        if !key(next) {
            return Err(format!(
                "{next:#x} after {prev:#x}: a gap, not at a keyframe"
            ));
        }
        match (next >> 32).cmp(&(prev >> 32)) {
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal if next + GROUP > prev => {
                resumed += 1;
                skipped = skipped.max(next.saturating_sub(prev + 1));
            }
            _ => return Err(format!("{next:#x} after {prev:#x}: goes back")),
        }
    }
    if resumed > reconnects {
        return Err(format!(
            "{resumed} breaks in the order, {reconnects} reconnections"
        ));
    }
    match frames.last() {
        Some(&f) if f == last => Ok((resumed, skipped)),
        f => Err(format!("ends at {f:#x?}, not at the last frame {last:#x}")),
    }
}

#[test]
fn viewer_order_rules() {
    let group = |tag: u64, from: u64, to: u64| (from..to).map(move |n| tag << 32 | n);
    let ok: Vec<u64> = group(1, 10, 25).chain(group(2, 20, 31)).collect();
    assert_eq!(check_order(&ok, 0, 2 << 32 | 30), Ok((0, 0)));
    // A resubscription one group back is one break, allowed with one reconnection only.
    let back: Vec<u64> = group(1, 10, 25).chain(group(1, 20, 41)).collect();
    assert_eq!(check_order(&back, 1, 1 << 32 | 40), Ok((1, 0)));
    // One forward past frames that went by while it reconnected: they are counted.
    let ahead: Vec<u64> = group(1, 10, 25).chain(group(1, 30, 41)).collect();
    assert_eq!(check_order(&ahead, 1, 1 << 32 | 40), Ok((1, 5)));
    assert!(check_order(&back, 0, 1 << 32 | 40).is_err());
    // A missing frame inside a group, a start off a keyframe, a short end: refused.
    let gap: Vec<u64> = group(1, 10, 15).chain(group(1, 16, 30)).collect();
    assert!(check_order(&gap, 5, 1 << 32 | 29).is_err());
    assert!(check_order(&ok[1..], 0, 2 << 32 | 30).is_err());
    assert!(check_order(&ok, 0, 2 << 32 | 31).is_err());
    // Two groups back is older than any edge's cache: refused.
    let old: Vec<u64> = group(1, 10, 35).chain(group(1, 10, 20)).collect();
    assert!(check_order(&old, 1, 1 << 32 | 19).is_err());
    // A corrupt byte is found.
    let mut saved: Vec<u8> = [frame(1, 10, false), frame(1, 11, false)]
        .iter()
        .flat_map(|c| c.payload.to_vec())
        .collect();
    assert_eq!(frames_in(&saved), Ok(vec![1 << 32 | 10, 1 << 32 | 11]));
    saved[PAYLOAD + 100] ^= 1;
    assert!(frames_in(&saved).is_err());
}

// ---------------------------------------------------------------------------------------
// The tiers.

/// Publishes tagged frames to `origin` every [`FRAME`], counting them in `sent`, until
/// `stop`; then ends the channel with one last frame. Aborting the task is the publisher
/// dying (its connection goes).
async fn feed(origin: SocketAddr, tag: u64, sent: Arc<AtomicU64>, stop: CancellationToken) {
    let url = Url::parse(&format!("tcp://{origin}/")).unwrap();
    let s = Session::connect(&url, &ConnectOptions::default())
        .await
        .expect("the publisher connects");
    let mut p = s.publish(CHANNEL, video()).await.expect("publishes");
    let mut next = tokio::time::Instant::now();
    for n in 0.. {
        let last = stop.is_cancelled();
        p.send(frame(tag, n, last))
            .await
            .expect("the origin takes frames");
        sent.fetch_add(1, Ordering::Relaxed);
        if last {
            break;
        }
        next += FRAME;
        tokio::time::sleep_until(next).await;
    }
    p.finish().await.expect("ends the channel");
    s.close().await;
}

/// What one viewer saw.
struct Watched {
    frames: Vec<u64>,
    /// Resubscriptions after a lost connection (the watch's own count).
    reconnects: u32,
}

/// One `chunkcast watch tcp://BALANCER/live/cam --sink file:OUT`, in-process: the same player
/// and options as `play::run` makes for `watch`, its statistics returned instead of printed.
async fn watch(via: SocketAddr, out: PathBuf) -> Result<Watched, String> {
    let url = Url::parse(&format!("tcp://{via}/{CHANNEL}")).unwrap();
    let connect = ConnectOptions::default();
    let opts = PlayOptions {
        sinks: vec![Spec::File(Target::Path(out.clone()))],
        wait_publisher: Duration::from_secs(30),
        reconnect: Some((url.clone(), connect.clone())),
        ..PlayOptions::default()
    };
    let session = Session::connect(&url, &connect)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let player = Player::watch(&session, CHANNEL, &opts)
        .await
        .map_err(|e| format!("subscribing: {e}"))?;
    let (report, result) = player.run_to_end().await;
    session.close().await;
    result.map_err(|e| format!("the watch failed: {e}"))?;
    // The sink keeps the final name for a stream that reached its end only.
    let saved = std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Watched {
        frames: frames_in(&saved)?,
        reconnects: report.publisher_gaps,
    })
}

/// Subscribes straight at an edge and notes when the first chunk of publisher `tag` arrives;
/// reads on until the stream ends or fails.
async fn probe(edge: SocketAddr, tag: u64, seen: Arc<Mutex<Option<Instant>>>) {
    let url = Url::parse(&format!("tcp://{edge}/")).unwrap();
    let Ok(s) = Session::connect(&url, &ConnectOptions::default()).await else {
        return;
    };
    let Ok(mut inc) = s.subscribe(CHANNEL).await else {
        return;
    };
    while let Some(Ok(c)) = inc.next().await {
        if c.payload.len() >= 8
            && u64::from_be_bytes(c.payload[..8].try_into().unwrap()) >> 32 == tag
        {
            seen.lock().unwrap().get_or_insert_with(Instant::now);
        }
    }
}

/// The edges and the origins' metrics, scraped from the viewers' host.
struct Gauges<'a> {
    on: &'a HostRuntime,
}

impl Gauges<'_> {
    async fn read(&self, host: usize, series: &'static str) -> f64 {
        let addr = Hosts::addr(host, METRICS_PORT);
        let text = self.on.run(scrape(addr)).await;
        metric(&text, series)
    }

    /// Waits until `ok` holds of `series` on `host`; how long that took.
    async fn until(
        &self,
        host: usize,
        series: &'static str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let got = self.read(host, series).await;
            if ok(got) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "{series} on host {host} is {got} after {within:?}"
            );
            tokio::time::sleep(POLL_EVERY * 5).await;
        }
    }
}

/// Waits until something listens at `addr` (tried from `on`).
async fn listening(on: &HostRuntime, addr: SocketAddr, what: &str) {
    let t0 = Instant::now();
    while on
        .run(async move { tokio::net::TcpStream::connect(addr).await.is_err() })
        .await
    {
        assert!(t0.elapsed() < PROMPT, "{what} is not listening at {addr}");
        tokio::time::sleep(POLL_EVERY * 5).await;
    }
}

/// An edge: the real binary on its host, a directory edge. Killed when dropped.
async fn edge(hosts: &Hosts, h: usize, state: &std::path::Path) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let redis = format!("redis://{}", Hosts::addr(DIRECTORY, REDIS_PORT));
    let mut child = hosts
        .command(h, env!("CARGO_BIN_EXE_chunkcast-server"))
        .args(["--listen", &Hosts::addr(h, PORT).to_string()])
        .args(["--metrics", &Hosts::addr(h, METRICS_PORT).to_string()])
        .args(["--edge-of", &redis])
        .args(["--directory-ttl-ms", &TTL.as_millis().to_string()])
        .args(["--allow-anonymous", "--allow-plaintext"])
        .args([
            "--live-linger-ms",
            "2000",
            "--max-connections-per-ip",
            "1000",
        ])
        .arg("--root")
        .arg(chunkcast_testkit::samples())
        .arg("--state-dir")
        .arg(state)
        .env_remove("CHUNKCAST_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("chunkcast-server runs");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = out.next_line().await.unwrap().expect("a listening line");
    assert!(line.starts_with("listening "), "{line}");
    child
}

/// HAProxy on the balancer's host in front of both edges: the configuration docs/SCALING.md
/// shows. Killed when dropped.
fn haproxy(hosts: &Hosts, dir: &std::path::Path) -> tokio::process::Child {
    let cfg = format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n\
         \x20   timeout server 1h\n    retries 3\n    option redispatch\n\
         frontend viewers\n    bind {}\n    default_backend edges\n\
         backend edges\n    balance roundrobin\n\
         \x20   default-server check inter 200ms fall 1 rise 2\n\
         \x20   server edge1 {}\n    server edge2 {}\n",
        Hosts::addr(BALANCER, PORT),
        Hosts::addr(EDGE1, PORT),
        Hosts::addr(EDGE2, PORT),
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, cfg).unwrap();
    hosts
        .command(BALANCER, "haproxy")
        .arg("-f")
        .arg(&file)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy starts")
}

/// An origin on its host, registering its publishers in the directory.
async fn origin(on: &HostRuntime, h: usize) -> Server {
    on.run(async move {
        server_with(|c| {
            (c.tcp, c.quic) = (Hosts::addr(h, PORT), Hosts::addr(h, PORT));
            c.metrics = Some(Hosts::addr(h, METRICS_PORT));
            c.allow_anonymous = true;
            c.allow_plaintext = true;
            c.limits.max_connections_per_ip = 1000;
            c.directory = Some(format!("redis://{}", Hosts::addr(DIRECTORY, REDIS_PORT)));
            c.directory_ttl = TTL;
        })
        .await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_two_edges_two_origins_one_run_across_hosts() {
    for tool in ["haproxy", "redis-server"] {
        if !require_tool(tool, &format!("apt-get install {tool}")) {
            return;
        }
    }
    // A LAN between the tiers: 5 ms ± 1 ms on every host's uplink, so 10 ms per round trip
    // between two hosts and 20 ms from a viewer to an edge through the balancer.
    let imp = Impairment {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        ..Impairment::jittery(18)
    };
    let hosts = match Hosts::new(HOSTS, imp).await {
        Ok(h) => h,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("this test needs network namespaces and TUN (root): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: this test needs network namespaces and TUN (root): {why}");
            return;
        }
    };
    tokio::time::timeout(LIMIT, one_run(&hosts))
        .await
        .expect("within the limit");
    let (packets, overflow) = hosts.packets();
    eprintln!("the switch carried {packets} packets ({overflow} dropped by a full queue)");
}

async fn one_run(hosts: &Hosts) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let rt = |h| hosts.runtime(h).expect("a runtime on the host");
    let (publisher, host_a, host_b, viewers) =
        (rt(PUBLISHER), rt(ORIGIN_A), rt(ORIGIN_B), rt(VIEWER_HOST));
    let gauges = Gauges { on: &viewers };

    // The directory, the origins, the edges, the balancer.
    let _redis = hosts
        .command(DIRECTORY, "redis-server")
        .args(["--port", &REDIS_PORT.to_string()])
        .args(["--bind", &Hosts::ip(DIRECTORY).to_string()])
        .args(["--save", "", "--appendonly", "no"])
        // Off loopback without a password, Redis refuses clients unless told it is on a
        // private network, as this one is.
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    listening(&viewers, Hosts::addr(DIRECTORY, REDIS_PORT), "redis-server").await;
    let origin_a = origin(&host_a, ORIGIN_A).await;
    let origin_b = origin(&host_b, ORIGIN_B).await;
    let (state1, state2) = (dir.path().join("edge1"), dir.path().join("edge2"));
    let mut edge1 = edge(hosts, EDGE1, &state1).await;
    let _edge2 = edge(hosts, EDGE2, &state2).await;
    let _balancer = haproxy(hosts, dir.path());
    let via = Hosts::addr(BALANCER, PORT);
    listening(&viewers, via, "haproxy").await;

    // The publisher, on origin A; viewers once the directory has the channel.
    let sent_a = Arc::new(AtomicU64::new(0));
    let feed_a = publisher.spawn(feed(
        Hosts::addr(ORIGIN_A, PORT),
        1,
        sent_a.clone(),
        CancellationToken::new(),
    ));
    let edge_url = Url::parse(&format!("tcp://{}/", Hosts::addr(EDGE1, PORT))).unwrap();
    let t0 = Instant::now();
    loop {
        let url = edge_url.clone();
        let listed = viewers
            .run(async move {
                let s = match Session::connect(&url, &ConnectOptions::default()).await {
                    Ok(s) => s,
                    Err(e) => return Err(format!("connecting: {e}")),
                };
                let l = s.list("live/").await.map_err(|e| e.to_string());
                s.close().await;
                l
            })
            .await;
        let listed = listed.ok();
        if listed.is_some_and(|l| l.iter().any(|e| e.path == CHANNEL)) {
            break;
        }
        assert!(
            t0.elapsed() < PROMPT,
            "the channel never reached the directory"
        );
        tokio::time::sleep(POLL_EVERY * 5).await;
    }
    let watching: Vec<_> = (0..VIEWERS)
        .map(|i| viewers.spawn(watch(via, dir.path().join(format!("viewer{i}.bin")))))
        .collect();
    // A probe on each edge, straight, to time the edges' following the publisher.
    let follows: Vec<Arc<Mutex<Option<Instant>>>> = (0..2).map(|_| Arc::default()).collect();
    let probes: Vec<_> = [EDGE1, EDGE2]
        .iter()
        .zip(&follows)
        .map(|(&h, seen)| viewers.spawn(probe(Hosts::addr(h, PORT), 2, seen.clone())))
        .collect();

    // Spread over both edges; each edge subscribed once at the origin.
    let all = (VIEWERS + 1) as f64;
    let t0 = Instant::now();
    loop {
        let (v1, v2) = (
            gauges.read(EDGE1, VIEWERS_NOW).await,
            gauges.read(EDGE2, VIEWERS_NOW).await,
        );
        if v1 + v2 == all + 1.0 {
            eprintln!(
                "viewers on edge1: {}, on edge2: {} (each with a probe)",
                v1 - 1.0,
                v2 - 1.0
            );
            assert!(v1 > 1.0 && v2 > 1.0, "both edges have viewers");
            break;
        }
        assert!(
            t0.elapsed() < PROMPT * 2,
            "{v1} + {v2} viewers on the edges"
        );
        tokio::time::sleep(POLL_EVERY * 10).await;
    }
    let joined = t0.elapsed();
    assert_eq!(
        gauges.read(ORIGIN_A, RELAYS).await,
        2.0,
        "one subscription per edge"
    );
    assert_eq!(
        gauges.read(ORIGIN_A, VIEWERS_NOW).await,
        2.0,
        "and no other"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The publisher restarts on origin B: its process dies, a new one starts there.
    feed_a.abort();
    let _ = feed_a.await;
    let restarted = Instant::now();
    let sent_b = Arc::new(AtomicU64::new(0));
    let end = CancellationToken::new();
    let feed_b = publisher.spawn(feed(
        Hosts::addr(ORIGIN_B, PORT),
        2,
        sent_b.clone(),
        end.clone(),
    ));
    gauges
        .until(ORIGIN_B, RELAYS, TTL + PROMPT, |n| n == 2.0)
        .await;
    let t0 = Instant::now();
    while follows.iter().any(|f| f.lock().unwrap().is_none()) {
        assert!(
            t0.elapsed() < TTL + PROMPT,
            "an edge never followed the publisher"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    let followed: Vec<Duration> = follows
        .iter()
        .map(|f| f.lock().unwrap().unwrap().duration_since(restarted))
        .collect();
    eprintln!(
        "the edges followed the publisher to origin B in {:?} and {:?} (TTL {TTL:?})",
        followed[0], followed[1]
    );
    for f in &followed {
        assert!(
            *f <= TTL,
            "followed in {f:?}, beyond the directory TTL {TTL:?}"
        );
    }
    // Origin A no longer sends anything: its relays went over to B.
    gauges.until(ORIGIN_A, RELAYS, PROMPT, |n| n == 0.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Edge 1 dies outright; its viewers come back through the balancer to edge 2.
    let up1 = gauges.read(EDGE1, UPSTREAM_BYTES).await;
    let on_edge1 = gauges.read(EDGE1, VIEWERS_NOW).await - 1.0;
    let killed = Instant::now();
    edge1.start_kill().unwrap();
    let _ = edge1.wait().await;
    gauges.until(EDGE2, VIEWERS_NOW, PROMPT, |n| n == all).await;
    let all_moved = killed.elapsed();
    eprintln!(
        "edge1 killed: its {on_edge1} viewers were all subscribed on edge2 {all_moved:?} later"
    );
    assert!(
        all_moved <= MOVE_WITHIN,
        "moved within {MOVE_WITHIN:?}: {all_moved:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The channel ends: every viewer's watch ends with it.
    end.cancel();
    feed_b.await.expect("the second publisher");
    let published = sent_a.load(Ordering::Relaxed) + sent_b.load(Ordering::Relaxed);
    let last = 2 << 32 | (sent_b.load(Ordering::Relaxed) - 1);
    let mut moved = 0;
    let mut most_skipped = 0;
    let mut received = 0u64;
    for (i, w) in watching.into_iter().enumerate() {
        let seen = w
            .await
            .expect("the viewer task")
            .unwrap_or_else(|e| panic!("viewer {i}: {e}"));
        let (_, skipped) = check_order(&seen.frames, seen.reconnects, last)
            .unwrap_or_else(|e| panic!("viewer {i}: {e}"));
        received += (seen.frames.len() * PAYLOAD) as u64;
        if seen.reconnects > 0 {
            moved += 1;
            most_skipped = most_skipped.max(skipped);
        }
    }
    for p in probes {
        let _ = p.await;
    }
    let sent_by_origins =
        gauges.read(ORIGIN_A, SENT_BYTES).await + gauges.read(ORIGIN_B, SENT_BYTES).await;
    let up2 = gauges.read(EDGE2, UPSTREAM_BYTES).await;
    let published_bytes = (published * PAYLOAD as u64) as f64;
    // What a moved viewer lost: the frames that went by between its last one from edge1 and
    // the keyframe edge2 started it at (none when that keyframe is one it had).
    let longest_gap = FRAME * most_skipped as u32;
    eprintln!(
        "{VIEWERS} viewers joined in {joined:?}; {moved} moved to edge2 (edge1 had {on_edge1}), \
         the most media one skipped {longest_gap:?} ({most_skipped} frames); killed at {:?} \
         into the run",
        killed.duration_since(started)
    );
    eprintln!(
        "published {published_bytes} payload bytes; the origins sent {sent_by_origins} \
         ({:.2} per published byte); upstream bytes: edge1 {up1} (until killed), edge2 {up2}; \
         viewers received {received} ({:.0} per published byte); the run took {:?}",
        sent_by_origins / published_bytes,
        received as f64 / published_bytes,
        started.elapsed()
    );
    assert_eq!(
        moved as f64, on_edge1,
        "every viewer of the killed edge moved, none other"
    );
    assert!(
        longest_gap <= MOVE_WITHIN,
        "skipped {longest_gap:?} of media"
    );
    assert!(
        sent_by_origins <= 2.0 * published_bytes,
        "the origins sent each byte at most once per edge"
    );
    assert!(up2 <= published_bytes, "edge2 took each byte once");
    assert!(
        sent_by_origins >= up2,
        "edge2's bytes came from the origins"
    );
    drop((origin_a, origin_b));
}
