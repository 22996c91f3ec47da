//! Debian's nginx as a caching reverse proxy in front of a server's `--http` port, the way a
//! CDN edge or a site's cache sits in front of an origin; and a minimal HTTP/1.0 GET to talk
//! to either.
//!
//! The configuration is written into a temporary directory (cache, temp paths, logs and pid
//! there too), nginx runs in the foreground as one process (`master_process off`), on a port
//! picked free, and is stopped by its pid when the [`Nginx`] drops.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to install nginx, for the message when it is missing.
pub const INSTALL: &str = "apt-get install nginx";

/// A running nginx, stopped (by pid) on drop.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// How the proxy caches.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// `proxy_cache_lock_timeout`: how long requests for a URL being fetched wait for it
    /// before going to the origin themselves. Above the origin's blocking wait, so that one
    /// blocked request per URL reaches the origin.
    pub lock_timeout: Duration,
    /// `proxy_read_timeout`: above the origin's blocking wait too.
    pub read_timeout: Duration,
    /// Serve viewers over TLS (HTTP/1.1 and HTTP/2) with this PEM certificate chain and key
    /// instead of plain HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Reach the origin over TLS (its certificate is not checked: loopback tests).
    pub origin_tls: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(15),
            tls: None,
            origin_tls: false,
        }
    }
}

/// Finds nginx (`/usr/sbin` is not on every user's `PATH`).
fn nginx_path() -> Option<std::path::PathBuf> {
    crate::tools::find_tool("nginx").or_else(|| {
        let p = std::path::PathBuf::from("/usr/sbin/nginx");
        p.is_file().then_some(p)
    })
}

/// Whether nginx is installed: under `CI` its absence fails the test; elsewhere the caller
/// skips.
pub fn nginx_or_skip() -> bool {
    if nginx_path().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx is required under CI ({INSTALL})"
    );
    eprintln!("skipped: nginx is not installed ({INSTALL})");
    false
}

impl Nginx {
    /// Starts nginx caching `origin` (plain HTTP) on a loopback port of its own. Panics when
    /// it does not come up (its error log is in the message).
    pub fn start(origin: SocketAddr, opts: &CacheOptions) -> Self {
        let nginx = nginx_path().expect("nginx is installed (check nginx_or_skip first)");
        let dir = tempfile::tempdir().expect("makes nginx's directory");
        let d = dir.path().display().to_string();
        // Picked free, then let go for nginx: a race with other tests is possible but rare,
        // and shows as nginx failing to bind (in the panic message).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("picks a port")
            .port();
        let lock = opts.lock_timeout.as_secs().max(1);
        let read = opts.read_timeout.as_secs().max(1);
        let listen = match &opts.tls {
            Some((cert, key)) => format!(
                "listen 127.0.0.1:{port} ssl http2 backlog=4096;\n        ssl_certificate {};\n        ssl_certificate_key {};",
                cert.display(),
                key.display()
            ),
            None => format!("listen 127.0.0.1:{port} backlog=4096;"),
        };
        let scheme = if opts.origin_tls { "https" } else { "http" };
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=cc:10m max_size=1g inactive=10m use_temp_path=off;
    server {{
        {listen}
        location / {{
            proxy_pass {scheme}://{origin};
            proxy_ssl_verify off;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache cc;
            proxy_cache_key $request_uri;
            proxy_cache_lock on;
            proxy_cache_lock_timeout {lock}s;
            proxy_cache_lock_age {lock}s;
            proxy_read_timeout {read}s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writes nginx.conf");
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let mut me = Self { child, addr, dir };
        let up = crate::process::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
                || me.child.try_wait().ok().flatten().is_some()
        });
        let exited = me.child.try_wait().ok().flatten();
        assert!(
            up && exited.is_none(),
            "nginx did not come up on {addr} ({exited:?}): {}",
            me.error_log()
        );
        me
    }

    /// Where nginx listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as [`get`] reads it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.0 (the server closes after the body, so no chunked framing), with
/// `headers` added; bounded by `within`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    within: Duration,
) -> std::io::Result<HttpResponse> {
    let run = async {
        let mut sock = TcpStream::connect(addr).await?;
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw).await?;
        parse(&raw)
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("GET {path}")))?
}

fn parse(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}
