//! [`TunPath`]: a network namespace made by the test, joined to this one by two TUN devices
//! whose packets this process forwards through two [`Line`]s, so that TCP and QUIC cross the
//! same impaired path.
//!
//! ```text
//! this namespace (or namespace CNS)      namespace NS
//! CLIENT_IP on tunA ──(this process: Line a→b)──> tunB with SERVER_IP
//!                   <─(this process: Line b→a)───
//! ```
//!
//! Both devices are opened here before they move into their namespaces, so one process holds
//! both file descriptors. [`TunPath::between`] puts the client side into a namespace of its own
//! too, so that two ends of a call each have one; [`run_in`] runs a future on a thread that
//! joined a namespace. The client side's egress can be rate-limited by a `tbf` qdisc
//! ([`TunPath::cap_uplink`]). Everything is removed on drop (the namespaces by name; the
//! devices vanish with their descriptors).

use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::{Impairment, Line, LineStats, Port, forward};

/// One TUN device as a [`Port`].
struct Device(tun::AsyncDevice);

impl Port for Device {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf).await
    }

    async fn send(&self, packet: &[u8]) {
        let _ = self.0.send(packet).await;
    }
}

/// The impaired path to a namespace; see the module's documentation.
pub struct TunPath {
    ns: String,
    /// The client side's namespace, when it has one of its own ([`TunPath::between`]).
    client_ns: Option<String>,
    /// The client side's device, whose egress is the uplink towards the server.
    client_dev: String,
    server_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
    tasks: Vec<JoinHandle<()>>,
    to_server: Arc<Mutex<LineStats>>,
    to_client: Arc<Mutex<LineStats>>,
}

/// Namespaces are named `PREFIX<pid>-<n>`.
const NS_PREFIX: &str = "ccimp-";

/// Removes the namespaces of test processes that no longer run (killed before their drop
/// ran). Their TUN devices went with their file descriptors.
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

impl TunPath {
    /// Makes the namespace and the devices, and starts forwarding. `Err` says why the
    /// machine does not allow it (not root, no `ip`, no TUN): the caller skips, or fails
    /// under `CI`.
    pub async fn new(imp: Impairment) -> Result<Self, String> {
        Self::make(imp, false).await
    }

    /// As [`TunPath::new`], with the client side in a namespace of its own as well
    /// ([`TunPath::client_netns`]): nothing of this namespace is on the path.
    pub async fn between(imp: Impairment) -> Result<Self, String> {
        Self::make(imp, true).await
    }

    async fn make(imp: Impairment, client_in_ns: bool) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
        remove_orphans();
        // Unique per process and per path: device names are at most 15 bytes, addresses are
        // a /30 of 10.100.0.0/9 picked by the pid.
        let ns = format!("{NS_PREFIX}{pid}-{k}");
        let (a, b) = (format!("cca{pid}x{k}"), format!("ccb{pid}x{k}"));
        let (hi, lo) = (((pid >> 8) % 100) as u8, (pid & 0xff) as u8);
        let host = |n: u8| Ipv4Addr::new(10, 100 + hi, lo, (k as u8) * 4 + n);
        let (client_ip, server_ip) = (host(1), host(2));

        let open = |name: &str| {
            let mut cfg = tun::Configuration::default();
            cfg.tun_name(name);
            tun::create_as_async(&cfg).map_err(|e| format!("opening TUN device {name}: {e}"))
        };
        let dev_a = Arc::new(Device(open(&a)?));
        let dev_b = Arc::new(Device(open(&b)?));
        ip(&["netns", "add", &ns])?;
        let client_ns = format!("{ns}c");
        if client_in_ns {
            if let Err(e) = ip(&["netns", "add", &client_ns]) {
                let _ = ip(&["netns", "del", &ns]);
                return Err(e);
            }
        }
        let to_server = Arc::new(Mutex::new(LineStats::default()));
        let to_client = Arc::new(Mutex::new(LineStats::default()));
        // From here on, drop cleans up.
        let mut path = Self {
            ns,
            client_ns: client_in_ns.then_some(client_ns),
            client_dev: a.clone(),
            server_ip,
            client_ip,
            tasks: Vec::new(),
            to_server: to_server.clone(),
            to_client: to_client.clone(),
        };
        let (cip, sip) = (client_ip.to_string(), server_ip.to_string());
        let ns = path.ns.clone();
        ip(&["link", "set", &b, "netns", &ns])?;
        let in_ns = |ns: Option<&str>, args: &[&str]| match ns {
            Some(ns) => {
                let mut all = vec!["-n", ns];
                all.extend_from_slice(args);
                ip(&all)
            }
            None => ip(args),
        };
        let cns = path.client_ns.clone();
        if let Some(cns) = &cns {
            ip(&["link", "set", &a, "netns", cns])?;
            in_ns(Some(cns), &["link", "set", "lo", "up"])?;
        }
        in_ns(
            cns.as_deref(),
            &["addr", "add", &cip, "peer", &sip, "dev", &a],
        )?;
        in_ns(cns.as_deref(), &["link", "set", &a, "up"])?;
        in_ns(Some(&ns), &["addr", "add", &sip, "peer", &cip, "dev", &b])?;
        in_ns(Some(&ns), &["link", "set", &b, "up"])?;
        in_ns(Some(&ns), &["link", "set", "lo", "up"])?;
        path.tasks = vec![
            tokio::spawn(forward(
                dev_a.clone(),
                dev_b.clone(),
                Line::new(imp, imp.seed),
                to_server,
            )),
            tokio::spawn(forward(
                dev_b,
                dev_a,
                Line::new(imp, imp.seed + 1),
                to_client,
            )),
        ];
        Ok(path)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The client side's namespace, when it has one ([`TunPath::between`]).
    pub fn client_netns(&self) -> Option<&str> {
        self.client_ns.as_deref()
    }

    /// Caps the client side's egress (its uplink towards the server) at `rate_bps` with a
    /// `tbf` qdisc holding at most `queue_bytes` (beyond: dropped, as a router's tail drop).
    /// Replaces an earlier cap.
    pub fn cap_uplink(&self, rate_bps: u64, queue_bytes: u64) -> Result<(), String> {
        // 10 ms of the rate per burst, at least two full packets: a bucket smaller than a
        // packet would pass nothing.
        let burst = (rate_bps / 8 / 100).max(3_000);
        let (rate, burst, limit) = (
            format!("{rate_bps}bit"),
            burst.to_string(),
            queue_bytes.to_string(),
        );
        self.tc(&[
            "qdisc",
            "replace",
            "dev",
            &self.client_dev,
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            &burst,
            "limit",
            &limit,
        ])
        .map(drop)
    }

    /// Lifts [`TunPath::cap_uplink`]'s cap: the rate goes to 10 Gbit/s, so that what waits
    /// in the queue leaves rather than being dropped (deleting the qdisc would drop it: a
    /// burst of losses the cap's end does not cause on a real link).
    pub fn lift_cap(&self) -> Result<(), String> {
        self.tc(&[
            "qdisc",
            "change",
            "dev",
            &self.client_dev,
            "root",
            "tbf",
            "rate",
            "10gbit",
            "burst",
            "1000000",
            "limit",
            "1000000",
        ])
        .map(drop)
    }

    /// Bytes waiting in the uplink's cap now, and packets it dropped so far (0, 0 without a
    /// cap).
    pub fn uplink_backlog(&self) -> Result<(u64, u64), String> {
        let out = self.tc(&["-s", "-j", "qdisc", "show", "dev", &self.client_dev])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("reading tc's JSON {out:?}: {e}"))?;
        let tbf = v
            .as_array()
            .and_then(|a| a.iter().find(|q| q["kind"] == "tbf"));
        Ok(tbf.map_or((0, 0), |q| {
            (
                q["backlog"].as_u64().unwrap_or(0),
                q["drops"].as_u64().unwrap_or(0),
            )
        }))
    }

    /// Runs `tc ARGS` on the client side, returning its stdout.
    fn tc(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("tc");
        if let Some(ns) = &self.client_ns {
            c.args(["-n", ns]);
        }
        let out = c
            .args(args)
            .output()
            .map_err(|e| format!("running `tc`: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`tc {}`: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The address inside the namespace, where a server listens.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }

    /// The address on this side.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.client_ip
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// What each direction did: (towards the server, towards the client).
    pub fn stats(&self) -> (LineStats, LineStats) {
        (
            *self.to_server.lock().unwrap(),
            *self.to_client.lock().unwrap(),
        )
    }
}

impl Drop for TunPath {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let namespaces = std::iter::once(&self.ns).chain(&self.client_ns);
        for ns in namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleaning up: {e}");
            }
        }
    }
}

/// Runs `fut` to its end on a thread of its own that joined the network namespace `ns`
/// first: every socket it opens is in `ns`. (A namespace is per thread, so the thread has its
/// own single-threaded runtime.) The thread starts at once; the returned future is its
/// result. Panics if the namespace cannot be joined, or if `fut` panics.
pub fn run_in<T: Send + 'static>(
    ns: &str,
    fut: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> + Send + 'static {
    let ns_file = format!("/run/netns/{ns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&ns_file).unwrap_or_else(|e| panic!("opening {ns_file}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("joining {ns_file}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = tx.send(rt.block_on(fut));
    });
    let ns = ns.to_owned();
    async move {
        rx.await
            .unwrap_or_else(|_| panic!("the task in namespace {ns} panicked"))
    }
}
