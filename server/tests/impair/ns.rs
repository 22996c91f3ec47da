//! What the namespace tests share: the skip-or-fail rule, and a server inside a path's
//! namespace.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chunkcast_client::session::ConnectOptions;
use chunkcast_client::url::{Scheme, Url};
use chunkcast_testkit::url_at;
use chunkcast_transport::tls::Trust;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::tun::TunPath;

/// The token of the servers in namespaces.
pub const TOKEN: &str = "impaired-path-token";

/// Whether the namespace tests can run: `Err` is why not; skipped with a message, except
/// under `CI`, where every test must run.
pub fn namespaces_or_skip(path: Result<TunPath, String>) -> Option<TunPath> {
    match path {
        Ok(p) => Some(p),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the impaired-path tests need network namespaces and TUN (root): {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: the impaired-path tests need network namespaces and TUN: {why}");
            None
        }
    }
}

/// `chunkcast-server` running inside the path's namespace.
pub struct NsServer {
    _child: Child,
    /// Its TCP address.
    pub tcp: SocketAddr,
    /// Its QUIC address.
    pub quic: SocketAddr,
    /// How to connect to it (its pinned certificate, the token).
    pub opts: ConnectOptions,
}

/// Starts `chunkcast-server` in `path`'s namespace, listening on its server address.
pub async fn server_in(path: &TunPath, root: &Path) -> NsServer {
    let mut child = path
        .command(env!("CARGO_BIN_EXE_chunkcast-server"))
        .arg("--listen")
        .arg(format!("{}:0", path.server_ip()))
        .arg("--root")
        .arg(root)
        .args(["--allow-plaintext", "--token", TOKEN])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("IMPAIRED_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("starting chunkcast-server in the namespace");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the server prints its listening line")
    .unwrap();
    // listening tcp=IP:PORT quic=IP:PORT cert-sha256=HEX
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_owned()
    };
    NsServer {
        tcp: field("tcp=").parse().unwrap(),
        quic: field("quic=").parse().unwrap(),
        opts: ConnectOptions {
            trust: Trust::pin_from_hex(&field("cert-sha256=")).unwrap(),
            token: Some(TOKEN.to_owned()),
            ..Default::default()
        },
        _child: child,
    }
}

impl NsServer {
    /// The URL of `path` on this server over `scheme`.
    pub fn url(&self, scheme: Scheme, path: &str) -> Url {
        let addr = if scheme == Scheme::Quic {
            self.quic
        } else {
            self.tcp
        };
        url_at(addr, scheme, path)
    }
}
