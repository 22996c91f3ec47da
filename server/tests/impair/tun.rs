//! [`TunPath`]: a network namespace made by the test, joined to this one by two TUN devices
//! whose packets this process forwards through two [`Line`]s, so that TCP and QUIC cross the
//! same impaired path.
//!
//! ```text
//! this namespace                         namespace NS
//! CLIENT_IP on tunA ──(this process: Line a→b)──> tunB with SERVER_IP
//!                   <─(this process: Line b→a)───
//! ```
//!
//! Both devices are opened here before tunB moves into NS, so one process holds both file
//! descriptors. Everything is removed on drop (the namespace by name; the devices vanish with
//! their descriptors).

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
        let to_server = Arc::new(Mutex::new(LineStats::default()));
        let to_client = Arc::new(Mutex::new(LineStats::default()));
        // From here on, drop cleans up.
        let mut path = Self {
            ns,
            server_ip,
            client_ip,
            tasks: Vec::new(),
            to_server: to_server.clone(),
            to_client: to_client.clone(),
        };
        let (cip, sip) = (client_ip.to_string(), server_ip.to_string());
        let ns = path.ns.clone();
        ip(&["link", "set", &b, "netns", &ns])?;
        ip(&["addr", "add", &cip, "peer", &sip, "dev", &a])?;
        ip(&["link", "set", &a, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["addr", "add", &sip, "peer", &cip, "dev", &b])?;
        in_ns(&["link", "set", &b, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
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
        if let Err(e) = ip(&["netns", "del", &self.ns]) {
            eprintln!("cleaning up: {e}");
        }
    }
}
