//! CORS on the HTTP interface (docs/HTTP.md, "Transport"): a page from another origin (the
//! `--web` viewer, a CDN) may read files, indexes, chunks and errors, and a preflight for a
//! request with a token is answered without the token. The browser side is in
//! `browser.rs` (the page plays over `--http` from the `--web` port).

use std::net::SocketAddr;
use std::time::Duration;

use chunkcast_server::{Config, Server};
use chunkcast_testkit::server_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);
const CLIP: &str = chunkcast_media_samples::CLIP_MJPEG;

async fn server(f: impl FnOnce(&mut Config)) -> Server {
    server_with(|c| {
        c.http = Some("127.0.0.1:0".parse().unwrap());
        f(c);
    })
    .await
}

/// One HTTP/1.0 request; the status and the lower-cased header lines.
async fn ask(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let run = async {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(LIMIT, run).await.expect("answered");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The comma-separated list in header `name`, lower-cased.
    fn list(&self, name: &str) -> Vec<String> {
        self.header(name)
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[tokio::test]
async fn anonymous_server_answers_cors_on_files_indexes_chunks_and_errors() {
    let s = server(|_| {}).await;
    let addr = s.http_addr().unwrap();
    let origin = ("Origin", "http://page.example");
    let file = ask(
        addr,
        "GET",
        &format!("/v1/files/{CLIP}"),
        &[origin, ("Range", "bytes=0-9")],
    )
    .await;
    assert_eq!(file.status, 206);
    assert_eq!(file.header("access-control-allow-origin"), Some("*"));
    let exposed = file.list("access-control-expose-headers");
    for h in ["etag", "content-range"] {
        assert!(exposed.contains(&h.to_owned()), "{h} exposed: {exposed:?}");
    }
    let index = ask(addr, "GET", &format!("/v1/index/{CLIP}"), &[origin]).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.header("access-control-allow-origin"), Some("*"));
    let missing = ask(addr, "GET", "/v1/index/no-such-file.wav", &[origin]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("access-control-allow-origin"),
        Some("*"),
        "a page reads the error's JSON too"
    );
    // A preflight, as Chromium sends it before a GET with a Range header.
    let pre = ask(
        addr,
        "OPTIONS",
        &format!("/v1/files/{CLIP}"),
        &[
            origin,
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(
        pre.list("access-control-allow-methods")
            .contains(&"get".to_owned())
    );
    assert!(
        pre.list("access-control-allow-headers")
            .contains(&"range".to_owned())
    );
    // Other methods stay refused.
    let post = ask(addr, "POST", &format!("/v1/files/{CLIP}"), &[origin]).await;
    assert_eq!(post.status, 405);
    s.shutdown().await;
}

#[tokio::test]
async fn a_token_server_answers_the_preflight_without_the_token_and_allows_authorization() {
    let s = server(|c| {
        c.token = Some("s3cret".into());
    })
    .await;
    let addr = s.http_addr().unwrap();
    let origin = ("Origin", "http://page.example");
    let path = format!("/v1/index/{CLIP}");
    // The browser's question carries no token; the answer lets the page send one.
    let pre = ask(
        addr,
        "OPTIONS",
        &path,
        &[
            origin,
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(
        pre.list("access-control-allow-headers")
            .contains(&"authorization".to_owned()),
        "{:?}",
        pre.headers
    );
    assert!(pre.header("access-control-max-age").is_some());
    // Without the token the GET is still refused (and the page can read why) ...
    let refused = ask(addr, "GET", &path, &[origin]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), Some("*"));
    let exposed = refused.list("access-control-expose-headers");
    assert!(exposed.contains(&"www-authenticate".to_owned()));
    // ... and with it served.
    let ok = ask(
        addr,
        "GET",
        &path,
        &[origin, ("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some("*"));
    s.shutdown().await;
}
