//! What the client's integration tests share: the sample library, an in-process server on
//! 127.0.0.1:0, and URLs and trust for it.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};
use chunkcast_server::{Config, Server};
use chunkcast_transport::tls::Trust;

pub(crate) mod process;
pub(crate) mod proxy;

/// The sample library, generated once per test binary.
pub(crate) fn samples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chunkcast-tests-{}", std::process::id()));
        chunkcast_media_samples::ensure(&dir).expect("generating samples");
        dir
    })
}

/// A server on loopback serving the samples, after `f` adjusts its configuration.
pub(crate) async fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let root = tokio::task::spawn_blocking(|| samples().to_owned())
        .await
        .unwrap();
    let mut c = Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(root);
    f(&mut c);
    Server::start(c).await.expect("server starts")
}

/// `scheme://ADDR/path` for `server`.
pub(crate) fn url(server: &Server, scheme: Scheme, path: &str) -> Url {
    let addr = if scheme == Scheme::Quic {
        server.quic_addr()
    } else {
        server.tcp_addr()
    };
    url_at(addr, scheme, path)
}

/// `scheme://addr/path`.
pub(crate) fn url_at(addr: SocketAddr, scheme: Scheme, path: &str) -> Url {
    Url {
        scheme,
        host: addr.ip().to_string(),
        port: addr.port(),
        path: path.to_owned(),
    }
}

/// Options that trust exactly `server`'s certificate.
pub(crate) fn pinned(server: &Server) -> ConnectOptions {
    ConnectOptions {
        trust: Trust::pin_from_hex(server.fingerprint()).unwrap(),
        ..Default::default()
    }
}

/// A session with `server` over `scheme`.
pub(crate) async fn connect(server: &Server, scheme: Scheme) -> Session {
    Session::connect(&url(server, scheme, ""), &pinned(server))
        .await
        .expect("connects")
}
