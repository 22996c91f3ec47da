//! An in-process server on loopback, and clients for it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chunkcast_client::get::{GetOptions, get, partial_path};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};
use chunkcast_server::{Config, Server};
use chunkcast_transport::tls::Trust;

use crate::library::{BIG, digest_of, file_digest, samples};
use crate::metrics::POLL_EVERY;

/// Every transport, for tests that check a behaviour over each.
pub const ALL: [Scheme; 3] = [Scheme::Tcp, Scheme::Tcps, Scheme::Quic];

/// A server on 127.0.0.1, port 0, serving the samples, after `f` adjusts its configuration.
pub async fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    // Generating the samples the first time blocks for seconds: not on a runtime thread.
    let root = tokio::task::spawn_blocking(|| samples().to_owned())
        .await
        .expect("generating samples");
    let mut c = Config::on(([127, 0, 0, 1], 0).into());
    c.root = Some(root);
    f(&mut c);
    Server::start(c).await.expect("server starts")
}

/// `scheme://ADDR/path` for `server` (its QUIC address for QUIC, else its TCP address).
pub fn url(server: &Server, scheme: Scheme, path: &str) -> Url {
    let addr = if scheme == Scheme::Quic {
        server.quic_addr()
    } else {
        server.tcp_addr()
    };
    url_at(addr, scheme, path)
}

/// `scheme://addr/path`.
pub fn url_at(addr: SocketAddr, scheme: Scheme, path: &str) -> Url {
    Url {
        scheme,
        host: addr.ip().to_string(),
        port: addr.port(),
        path: path.to_owned(),
    }
}

/// Options that trust exactly `server`'s certificate.
pub fn pinned(server: &Server) -> ConnectOptions {
    ConnectOptions {
        trust: Trust::pin_from_hex(server.fingerprint()).expect("the server's fingerprint"),
        ..Default::default()
    }
}

/// A session with `server` over `scheme`.
pub async fn connect(server: &Server, scheme: Scheme) -> Session {
    Session::connect(&url(server, scheme, ""), &pinned(server))
        .await
        .expect("connects")
}

/// A well-behaved client: downloads the 50 MB sample over `scheme` and checks it is byte for
/// byte the original (BLAKE3 of the saved file against the sample's).
pub async fn good_download(server: &Server, scheme: Scheme, token: Option<&str>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("good.bin");
    let opts = ConnectOptions {
        token: token.map(str::to_owned),
        ..pinned(server)
    };
    let s = Session::connect(&url(server, scheme, ""), &opts)
        .await
        .unwrap_or_else(|e| panic!("the good client cannot connect over {scheme:?}: {e}"));
    let r = get(
        &s,
        BIG,
        &GetOptions {
            out: Some(out.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the good download over {scheme:?} failed: {e}"));
    s.close().await;
    assert!(r.verified);
    assert!(!partial_path(&out).exists());
    assert_eq!(
        file_digest(&out),
        digest_of(BIG),
        "the good download differs"
    );
}

/// Runs `attack` while a well-behaved client downloads the big sample; both must finish.
pub async fn beside<T>(server: &Server, scheme: Scheme, attack: impl Future<Output = T>) -> T {
    let (t, ()) = tokio::join!(attack, good_download(server, scheme, None));
    t
}

/// Lists `channel`'s folder (`live/`, `call/ROOM/`) until it shows `viewers` viewers of
/// `channel`, for at most `within`: how a test waits for its subscribers to be waiting before
/// it publishes. Panics with the last count if they never are.
pub async fn await_viewers(s: &Session, channel: &str, viewers: u32, within: Duration) {
    let folder = channel.rsplit_once('/').map_or("", |(f, _)| f);
    let folder = format!("{folder}/");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let entries = s.list(&folder).await.expect("LIST answers");
        let now = entries
            .iter()
            .find(|e| e.path == channel)
            .map(|e| e.viewers);
        if now == Some(viewers) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} has {now:?} viewers after {within:?}, not {viewers}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
