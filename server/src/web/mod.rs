//! The browser viewer (`--web ADDR`): a small page embedded in the binary, and the protocol
//! over a WebSocket at `GET /ws`, one binary message per frame.
//!
//! The WebSocket is one more transport, not a second protocol: `chunkcast_transport::ws`
//! turns it back into the byte stream the TCP link reads and writes, so that the handshake,
//! the token, path confinement, pings and every limit are those of [`crate::conn::serve`].
//! Every HTTP connection takes a connection slot like any other (the transport crate's
//! accept loop asks [`crate::listen::Policy`]) and has the handshake timeout to send its
//! request head.
//!
//! The HTTP side is deliberately tiny: `GET` (or `HEAD`) of a handful of fixed paths, one
//! request per connection (`Connection: close`). A WebSocket upgrade whose `Origin` names
//! another host than the one asked for is refused, so that another web site cannot use a
//! visitor's browser to reach a server on their machine or network.

use std::sync::Arc;
use std::time::Duration;

use chunkcast_transport::accept::{Acceptor, HttpConn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::conn::Shared;
use crate::listen::Policy;
use crate::metrics::HandshakeFailed;

/// The largest request head read: a browser's is well under 2 KiB.
const MAX_HEAD: usize = 8 << 10;
/// Time an HTTP response (the page) may take to write.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of the page, embedded in the binary: (path, content type, bytes). The scripts
/// are ES modules: `app.js` is the entry and imports the others by these paths.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("app.js"),
    ),
    (
        "/wire.js",
        "text/javascript; charset=utf-8",
        include_bytes!("wire.js"),
    ),
    (
        "/connection.js",
        "text/javascript; charset=utf-8",
        include_bytes!("connection.js"),
    ),
    (
        "/playout.js",
        "text/javascript; charset=utf-8",
        include_bytes!("playout.js"),
    ),
    (
        "/player.js",
        "text/javascript; charset=utf-8",
        include_bytes!("player.js"),
    ),
    (
        "/audio.js",
        "text/javascript; charset=utf-8",
        include_bytes!("audio.js"),
    ),
    (
        "/video.js",
        "text/javascript; charset=utf-8",
        include_bytes!("video.js"),
    ),
    (
        "/mse.js",
        "text/javascript; charset=utf-8",
        include_bytes!("mse.js"),
    ),
    (
        "/chat.js",
        "text/javascript; charset=utf-8",
        include_bytes!("chat.js"),
    ),
    (
        "/httpsource.js",
        "text/javascript; charset=utf-8",
        include_bytes!("httpsource.js"),
    ),
    (
        "/ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("ui.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("style.css"),
    ),
];

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// One of [`FILES`]; `head`: without the body.
    File { index: usize, head: bool },
    /// The protocol over a WebSocket; the client's `Sec-WebSocket-Key`.
    Upgrade { key: String },
    /// An error response: status line and a short text.
    Fail(&'static str, &'static str),
}

/// Serves one admitted connection to the web port: a file, an error, or the protocol over
/// a WebSocket (handed back to the acceptor, which hands it to the server's one serving loop).
pub(crate) async fn conn(
    acceptor: Arc<Acceptor<Policy>>,
    mut conn: HttpConn<Policy>,
    shared: Arc<Shared>,
) {
    let metrics = &shared.metrics;
    let peer = conn.peer;
    let head = match tokio::time::timeout_at(conn.deadline, read_head(&mut conn.io)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            let _ = respond_fail(&mut conn.io, "431 Request Header Fields Too Large", "").await;
            return;
        }
        Ok(Err(_)) => {
            metrics.handshake_failed(HandshakeFailed::Closed);
            return;
        }
        Err(_) => {
            debug!(%peer, "no HTTP request within the handshake timeout");
            return;
        }
    };
    match route(&head) {
        Route::File { index, head } => {
            let (_, ctype, body) = FILES[index];
            let write = respond(&mut conn.io, "200 OK", ctype, body, head);
            let _ = tokio::time::timeout(RESPONSE_TIMEOUT, write).await;
        }
        Route::Fail(status, text) => {
            let write = respond_fail(&mut conn.io, status, text);
            let _ = tokio::time::timeout(RESPONSE_TIMEOUT, write).await;
        }
        Route::Upgrade { key } => acceptor.websocket(conn, &key).await,
    }
}

/// A parsed request head: method, path and the headers this server looks at.
#[derive(Debug, Default)]
struct Head {
    method: String,
    path: String,
    host: Option<String>,
    origin: Option<String>,
    upgrade: Option<String>,
    key: Option<String>,
    version: Option<String>,
}

/// Reads a request head; `None` when it is longer than [`MAX_HEAD`].
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 512];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            break;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        // A browser sends nothing before the answer to its request (a WebSocket client waits
        // for the 101), so reading past the head loses nothing that matters.
        let n = r.read(&mut byte).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&byte[..n]);
    }
    Ok(Some(parse_head(&String::from_utf8_lossy(&buf))))
}

fn parse_head(text: &str) -> Head {
    let mut lines = text.split("\r\n");
    let mut head = Head::default();
    let mut first = lines.next().unwrap_or("").split(' ');
    head.method = first.next().unwrap_or("").to_owned();
    head.path = first.next().unwrap_or("").to_owned();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_owned());
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => head.host = value,
            "origin" => head.origin = value,
            "upgrade" => head.upgrade = value,
            "sec-websocket-key" => head.key = value,
            "sec-websocket-version" => head.version = value,
            _ => {}
        }
    }
    head
}

fn route(head: &Head) -> Route {
    let get = head.method == "GET";
    if !get && head.method != "HEAD" {
        return Route::Fail("405 Method Not Allowed", "only GET\n");
    }
    // The query string, if any, means nothing here.
    let path = head.path.split('?').next().unwrap_or("");
    if path == "/ws" {
        let websocket = head
            .upgrade
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let (Some(key), true, true) = (&head.key, websocket, get) else {
            return Route::Fail("400 Bad Request", "expected a WebSocket upgrade\n");
        };
        if head.version.as_deref() != Some("13") {
            return Route::Fail("426 Upgrade Required", "WebSocket version 13 only\n");
        }
        if !same_origin(head.origin.as_deref(), head.host.as_deref()) {
            return Route::Fail("403 Forbidden", "cross-origin WebSocket refused\n");
        }
        return Route::Upgrade { key: key.clone() };
    }
    match FILES.iter().position(|(p, _, _)| *p == path) {
        Some(index) => Route::File { index, head: !get },
        None => Route::Fail("404 Not Found", "not found\n"),
    }
}

/// Whether a WebSocket's `Origin` (absent for non-browser clients) is the page's own host.
fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    authority.eq_ignore_ascii_case(host)
}

// `connect-src` lets the page fetch from an `--http` origin or cache elsewhere (`?http=URL`,
// httpsource.js); scripts, images and media stay the page's own.
async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'; connect-src 'self' http: https:; img-src 'self' blob:; media-src 'self' blob:\r\nConnection: close\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    if !head_only {
        w.write_all(body).await?;
    }
    w.shutdown().await
}

async fn respond_fail<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: &str,
    text: &str,
) -> std::io::Result<()> {
    respond(
        w,
        status,
        "text/plain; charset=utf-8",
        text.as_bytes(),
        false,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text)
    }

    #[test]
    fn routes_files_and_upgrades() {
        let r = route(&head("GET / HTTP/1.1\r\nHost: a:1"));
        assert_eq!(
            r,
            Route::File {
                index: 0,
                head: false
            }
        );
        let r = route(&head("GET /app.js?x=1 HTTP/1.1\r\nHost: a:1"));
        assert_eq!(
            r,
            Route::File {
                index: 1,
                head: false
            }
        );
        let r = route(&head("GET /../etc/passwd HTTP/1.1"));
        assert_eq!(r, Route::Fail("404 Not Found", "not found\n"));
        let r = route(&head("POST / HTTP/1.1"));
        assert!(matches!(r, Route::Fail("405 Method Not Allowed", _)));
        let up = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13";
        assert_eq!(route(&head(up)), Route::Upgrade { key: "k".into() });
        let same = format!("{up}\r\nOrigin: http://127.0.0.1:8");
        assert_eq!(route(&head(&same)), Route::Upgrade { key: "k".into() });
        let cross = format!("{up}\r\nOrigin: https://evil.example");
        assert!(matches!(
            route(&head(&cross)),
            Route::Fail("403 Forbidden", _)
        ));
        let plain = "GET /ws HTTP/1.1\r\nHost: a";
        assert!(matches!(
            route(&head(plain)),
            Route::Fail("400 Bad Request", _)
        ));
    }
}
