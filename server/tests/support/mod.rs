//! What the hostile-client and fault-injection suites share: the sample library, an
//! in-process server, URLs with a pinned certificate, a well-behaved download to run beside an
//! attack, raw frame I/O and metric scraping.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_client::get::{GetOptions, get, partial_path};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};
use chunkcast_protocol::session::{ClientConfig, ClientHandshake};
use chunkcast_protocol::wire::{Decoder, Frame, encode};
use chunkcast_server::{Config, Server};
use chunkcast_transport::tls::Trust;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ALL: [Scheme; 3] = [Scheme::Tcp, Scheme::Tcps, Scheme::Quic];
/// The file every well-behaved download fetches: the largest sample.
pub const BIG: &str = chunkcast_media_samples::RANDOM_BIN;

/// The sample library, generated once per test binary and kept between runs (60 MB: one
/// per run would fill the temporary directory).
pub fn samples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let name = format!("chunkcast-{}-samples", env!("CARGO_CRATE_NAME"));
        let dir = std::env::temp_dir().join(name);
        chunkcast_media_samples::ensure(&dir).expect("generating samples");
        dir
    })
}

/// BLAKE3 of a sample, computed once.
pub fn digest_of(name: &str) -> [u8; 32] {
    static BIG_DIGEST: OnceLock<[u8; 32]> = OnceLock::new();
    let compute = || file_digest(&samples().join(name));
    if name == BIG {
        *BIG_DIGEST.get_or_init(compute)
    } else {
        compute()
    }
}

pub fn file_digest(path: &Path) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    h.update_reader(f).unwrap();
    *h.finalize().as_bytes()
}

pub async fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let mut c = Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(samples().to_owned());
    f(&mut c);
    Server::start(c).await.expect("server starts")
}

pub fn url(server: &Server, scheme: Scheme, path: &str) -> Url {
    let addr = if scheme == Scheme::Quic {
        server.quic_addr()
    } else {
        server.tcp_addr()
    };
    url_at(addr, scheme, path)
}

pub fn url_at(addr: SocketAddr, scheme: Scheme, path: &str) -> Url {
    Url {
        scheme,
        host: addr.ip().to_string(),
        port: addr.port(),
        path: path.to_owned(),
    }
}

pub fn pinned(server: &Server) -> ConnectOptions {
    ConnectOptions {
        trust: Trust::pin_from_hex(server.fingerprint()).unwrap(),
        ..Default::default()
    }
}

pub async fn connect(server: &Server, scheme: Scheme) -> Session {
    Session::connect(&url(server, scheme, ""), &pinned(server))
        .await
        .expect("connects")
}

/// A well-behaved client: downloads the 50 MB sample over `scheme` and checks it is byte for
/// byte the original (BLAKE3 of the saved file against the sample's).
pub async fn good_download(server: &Server, scheme: Scheme, token: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
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

/// A `HELLO` as a client with these versions and token sends it.
pub fn hello(min: u16, max: u16, token: Option<&str>) -> BytesMut {
    let config = ClientConfig {
        min_version: min,
        max_version: max,
        token: token.map(str::to_owned),
        ..ClientConfig::default()
    };
    let mut out = BytesMut::new();
    ClientHandshake::new(config, std::time::Instant::now()).poll_transmit(&mut out);
    out
}

pub fn encoded(fs: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in fs {
        encode(f, &mut b);
    }
    b
}

/// How a raw read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed (FIN).
    Eof,
    /// The connection was reset or failed.
    Reset,
    /// Still open when the time was up.
    Open,
}

/// Reads and decodes whatever the server sends until it closes or `within` passes.
pub async fn read_frames<R: AsyncRead + Unpin>(
    sock: &mut R,
    within: Duration,
) -> (Vec<Frame>, End) {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let end = tokio::time::timeout(within, async {
        loop {
            while let Ok(Some(f)) = decoder.decode(&mut buf) {
                out.push(f);
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) => return End::Eof,
                Ok(_) => {}
                Err(_) => return End::Reset,
            }
        }
    })
    .await
    .unwrap_or(End::Open);
    while let Ok(Some(f)) = decoder.decode(&mut buf) {
        out.push(f);
    }
    (out, end)
}

/// A raw plain-TCP connection that has completed the handshake.
pub async fn raw_session(server: &Server) -> TcpStream {
    let mut sock = TcpStream::connect(server.tcp_addr()).await.unwrap();
    sock.write_all(&hello(1, 1, None)).await.unwrap();
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            assert!(matches!(f, Frame::Welcome(_)), "{f:?}");
            assert!(buf.is_empty());
            return sock;
        }
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0, "closed");
    }
}

/// `GET /metrics` over plain HTTP/1.0: the whole response.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the sample `series` (name with its labels, as printed) in a scrape; 0 when
/// it is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
