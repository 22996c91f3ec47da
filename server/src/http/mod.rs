//! `--http ADDR`: the library and live channels over HTTP/1.1 and HTTP/2, so that any HTTP
//! cache or CDN does the fan-out (docs/HTTP.md is the contract, byte for byte).
//!
//! One port speaks plain HTTP and TLS, told apart by the first byte as the native TCP port
//! does. Every connection passes the native server's door ([`Policy`]: the same connection
//! slots, per-address limits and plaintext rule), and every request the same token, path
//! confinement and per-connection request rate. Routes: `files.rs` (plain bytes, the index,
//! verified chunk frames), `live.rs` (the live index and chunk URLs that block for what is
//! not yet published).

mod files;
mod hls;
mod live;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::conn::rate::{RateLimit, Verdict};
use chunkcast_transport::accept::{Gate, Port};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::conn::Shared;
use crate::listen::Policy;

/// A response body: whole (JSON, chunk frames) or streamed (file bytes).
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// The key signed URLs are keyed with is derived from the token under this context.
const SIGN_CONTEXT: &str = "chunkcast http signed url v1";
/// Cache policy of everything that is not immutable but may be shared a little while.
const SHORT_CACHE: &str = "public, max-age=10";
/// Cache policy of content-addressed URLs: never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Requests one HTTP/2 connection may run at once: a browser or a cache multiplexes, but one
/// connection must not hold the server's blocking slots by itself.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Refused connections being told why at once; past it they are just closed.
const REFUSALS_IN_FLIGHT: usize = 64;
/// Time one refusal may take.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP interface's state, shared by its connections.
pub(crate) struct Http {
    shared: Arc<Shared>,
    live: live::Rings,
    plans: Arc<hls::Plans>,
}

/// Starts serving `listener` (plain HTTP and TLS) through `policy`, on `tracker`.
pub(crate) fn start(
    shared: Arc<Shared>,
    policy: Arc<Policy>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    tracker: &TaskTracker,
) {
    let mut cfg = (*tls).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = TlsAcceptor::from(Arc::new(cfg));
    let http = Arc::new(Http {
        live: live::Rings::new(shared.clone()),
        plans: Arc::default(),
        shared,
    });
    tracker.spawn(accept_loop(http, policy, listener, tls, tracker.clone()));
}

async fn accept_loop(
    http: Arc<Http>,
    policy: Arc<Policy>,
    listener: TcpListener,
    tls: TlsAcceptor,
    tracker: TaskTracker,
) {
    let draining = http.shared.draining.clone();
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT));
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    debug!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = draining.cancelled() => return,
        };
        // The native door: one budget of connections for every transport.
        let permit = match policy.admit(peer.ip(), Port::Web) {
            Ok(p) => p,
            Err(refusal) => {
                debug!(%peer, "http connection refused: {}", refusal.message);
                // Told why when it speaks plain HTTP and few refusals are in flight; a flood
                // is just closed.
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _ = tokio::time::timeout(REFUSE_TIMEOUT, refuse(sock, refusal)).await;
                    });
                }
                continue;
            }
        };
        let http = http.clone();
        let tls = tls.clone();
        let policy = policy.clone();
        tracker.spawn(async move {
            let _permit = permit;
            serve_conn(http, policy, sock, peer, tls).await;
        });
    }
}

/// Answers a refused plain-HTTP connection with 503 and the refusal's JSON, then closes. A
/// TLS client is closed without a word (telling it would cost a handshake).
async fn refuse(mut sock: TcpStream, refusal: chunkcast_transport::accept::Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    if !matches!(sock.peek(&mut first).await, Ok(1)) || first[0] == 0x16 {
        return;
    }
    let body = serde_json::json!({
        "code": refusal.code.to_u16(),
        "error": refusal.code.to_string(),
        "message": refusal.message,
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    // Read (some of) the request first, so that closing does not reset the answer away.
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut buf)).await;
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

async fn serve_conn(
    http: Arc<Http>,
    policy: Arc<Policy>,
    sock: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
) {
    let limits = &http.shared.config.limits;
    let _ = sock.set_nodelay(true);
    let mut first = [0u8; 1];
    let sniffed = tokio::time::timeout(limits.handshake_timeout, sock.peek(&mut first)).await;
    if !matches!(sniffed, Ok(Ok(1))) {
        return;
    }
    let rate = Arc::new(Mutex::new(RateLimit::new(
        limits.max_requests_per_sec,
        std::time::Instant::now(),
    )));
    let stop = http.shared.stop.clone();
    let tls_first = first[0] == 0x16;
    if !tls_first && policy.admit_plain(peer).is_err() {
        return;
    }
    // The native byte stream guard: a client that stops reading a response is closed after
    // the idle timeout rather than holding its slot, and its bytes are counted.
    let (sock, handle) = policy.guard(sock);
    if tls_first {
        let Ok(Ok(stream)) = tokio::time::timeout(limits.handshake_timeout, tls.accept(sock)).await
        else {
            handle.kill();
            return;
        };
        let conn = run_hyper(http, TokioIo::new(stream), peer, rate);
        tokio::select! { () = conn => {}, () = stop.cancelled() => {} }
    } else {
        let conn = run_hyper(http, TokioIo::new(sock), peer, rate);
        tokio::select! { () = conn => {}, () = stop.cancelled() => {} }
    }
    handle.kill();
}

async fn run_hyper<I>(http: Arc<Http>, io: I, peer: SocketAddr, rate: Arc<Mutex<RateLimit>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let idle_timeout = http.shared.config.limits.idle_timeout;
    // Requests running, and when the last one started or ended: an HTTP/2 connection that
    // asks for nothing for the idle timeout is closed (gracefully), as an idle native
    // connection is; HTTP/1's keep-alive wait is bounded by the header timeout already.
    let activity = Arc::new(Mutex::new((0usize, tokio::time::Instant::now())));
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let http = http.clone();
        let rate = rate.clone();
        let activity = seen.clone();
        async move {
            let running = Running::start(activity);
            let resp = http.handle(req, peer, &rate).await;
            // Running until its body is sent (or dropped), not only until its head is.
            Ok::<_, Infallible>(resp.map(|body| {
                body.map_frame(move |f| {
                    let _ = &running;
                    f
                })
                .boxed()
            }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(Some(Duration::from_secs(10)))
        .timer(hyper_util::rt::TokioTimer::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .timer(hyper_util::rt::TokioTimer::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let check = tokio::time::sleep(idle_timeout / 4);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, "http connection ended: {e}");
                }
                return;
            }
            () = check => {
                let (running, last) = *activity.lock().unwrap_or_else(|e| e.into_inner());
                match closing {
                    None if running == 0 && last.elapsed() >= idle_timeout => {
                        debug!(%peer, "http connection idle for {idle_timeout:?}: closing");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now());
                    }
                    // HTTP/2's graceful close waits for the client's PING answer: one that
                    // gives none, with nothing running, is closed anyway.
                    Some(at) if running == 0 && at.elapsed() >= crate::guard::LINGER => return,
                    _ => {}
                }
            }
        }
    }
}

/// One request running on a connection, for its idle timer.
struct Running(Arc<Mutex<(usize, tokio::time::Instant)>>);

impl Running {
    fn start(activity: Arc<Mutex<(usize, tokio::time::Instant)>>) -> Self {
        {
            let mut a = activity.lock().unwrap_or_else(|e| e.into_inner());
            a.0 += 1;
            a.1 = tokio::time::Instant::now();
        }
        Self(activity)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut a = self.0.lock().unwrap_or_else(|e| e.into_inner());
        a.0 -= 1;
        a.1 = tokio::time::Instant::now();
    }
}

/// A refusal: the status, the native code, and the text, as the JSON error body.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    code: ErrorCode,
    name: Option<&'static str>,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            name: None,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }

    /// The same failure with another `error` string than the code's name (`"ended"`).
    pub(crate) fn named(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    fn response(&self) -> Response<Body> {
        let name = match self.name {
            Some(n) => n.to_owned(),
            None => self.code.to_string(),
        };
        let body = serde_json::json!({
            "code": self.code.to_u16(),
            "error": name,
            "message": self.message,
        })
        .to_string();
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<crate::library::PathError> for Failure {
    fn from(e: crate::library::PathError) -> Self {
        let status = match e {
            crate::library::PathError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::NOT_FOUND,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

/// A whole body.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// The route a request took, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Files,
    Index,
    Chunks,
    LiveIndex,
    LiveInit,
    LiveChunk,
    Hls,
    LiveHls,
    Other,
}

impl Route {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Index => "index",
            Self::Chunks => "chunks",
            Self::LiveIndex => "live_index",
            Self::LiveInit => "live_init",
            Self::LiveChunk => "live_chunk",
            Self::Hls => "hls",
            Self::LiveHls => "live_hls",
            Self::Other => "other",
        }
    }

    /// Immutable chunk URLs (files' and live channels'), which the request rate does not count.
    fn is_chunk(self) -> bool {
        matches!(self, Self::Chunks | Self::LiveInit | Self::LiveChunk)
    }

    /// Every route, so that the metrics show them all from the start.
    pub(crate) const ALL: [Self; 9] = [
        Self::Files,
        Self::Index,
        Self::Chunks,
        Self::LiveIndex,
        Self::LiveInit,
        Self::LiveChunk,
        Self::Hls,
        Self::LiveHls,
        Self::Other,
    ];
}

impl Http {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        rate: &Mutex<RateLimit>,
    ) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let route = route_of(&path);
        // A chunk URL is the HTTP form of one chunk of an open stream, which the native
        // limit does not count either: counting them capped one HTTP/2 connection at
        // 50 × 256 KiB/s. They stay bounded by the streams per connection and the
        // connection's write backpressure; index, playlist and file requests are counted.
        let verdict = if route.is_chunk() {
            Verdict::Serve
        } else {
            rate.lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(std::time::Instant::now())
        };
        let resp = match verdict {
            Verdict::Serve => match self.route(&req, &path, route).await {
                Ok(r) => r,
                Err(f) => f.response(),
            },
            Verdict::Refuse | Verdict::Close => {
                self.shared.metrics.request_limited();
                let f = Failure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::Busy,
                    format!(
                        "over {} requests per second on this connection; slow down",
                        self.shared.config.limits.max_requests_per_sec
                    ),
                );
                f.response()
            }
        };
        let mut resp = resp;
        cors(resp.headers_mut());
        debug!(%peer, %path, status = resp.status().as_u16(), "http");
        // Streamed bodies (file bytes) say their length in the header, whole ones in the body.
        let len = hyper::body::Body::size_hint(resp.body())
            .exact()
            .or_else(|| {
                header_str(resp.headers(), header::CONTENT_LENGTH)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        let bytes = if req.method() == Method::HEAD { 0 } else { len };
        self.shared
            .metrics
            .http_request(route.label(), resp.status().as_u16(), bytes);
        resp
    }

    async fn route(
        &self,
        req: &Request<Incoming>,
        path: &str,
        route: Route,
    ) -> Result<Response<Body>, Failure> {
        // A browser asks before a cross-origin GET with an Authorization or Range header,
        // and never sends the token with that question: answered without one.
        if req.method() == Method::OPTIONS {
            return Ok(preflight());
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::BadRequest,
                "only GET and HEAD",
            ));
        }
        let signed = self.authorize(req, path)?;
        // A playlist fetched with a signed URL names its init and segments signed alike:
        // HLS players cannot add an Authorization header.
        let signer = match (signed, &self.shared.config.token) {
            (Some(exp), Some(token)) => Some(hls::UriSigner {
                token: token.clone(),
                exp,
                dir: path.rsplit_once('/').map_or("", |(d, _)| d).to_owned(),
            }),
            _ => None,
        };
        let query = req.uri().query().unwrap_or("");
        let head = req.method() == Method::HEAD;
        let shared = &self.shared;
        match route {
            Route::Files => {
                let rest = &path["/v1/files/".len()..];
                files::file(shared, rest, req.headers(), head).await
            }
            Route::Index => {
                let rest = &path["/v1/index/".len()..];
                files::index(shared, rest, query, req.headers()).await
            }
            Route::Chunks => files::chunk(shared, &path["/v1/chunks/".len()..]).await,
            Route::LiveIndex | Route::LiveInit | Route::LiveChunk => {
                self.live.serve(&path["/v1/live/".len()..], route).await
            }
            Route::Hls => hls::file(shared, &self.plans, &path["/v1/hls/".len()..], signer).await,
            Route::LiveHls => {
                self.live
                    .hls(&path["/v1/hls/live/".len()..], signer.as_ref())
                    .await
            }
            Route::Other => Err(Failure::not_found(format!("no such route: {path}"))),
        }
    }

    /// The token check: none needed without a token; else a Bearer token, or a signed URL
    /// that has not expired.
    /// `Some(exp)` when the request came with a signed URL valid until `exp`.
    fn authorize(&self, req: &Request<Incoming>, path: &str) -> Result<Option<u64>, Failure> {
        let Some(token) = &self.shared.config.token else {
            return Ok(None);
        };
        let unauthorized =
            |m: &str| Failure::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m);
        if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
            let given = auth
                .to_str()
                .ok()
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or("");
            use subtle::ConstantTimeEq;
            if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                return Ok(None);
            }
            return Err(unauthorized("wrong token"));
        }
        let (mut exp, mut sig) = (None, None);
        for pair in req.uri().query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = v.parse::<u64>().ok(),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return Err(unauthorized(
                "this server needs a token: send Authorization: Bearer TOKEN, or use a signed URL",
            ));
        };
        let want = sign(token, exp, path);
        use subtle::ConstantTimeEq;
        if !bool::from(want.as_bytes().ct_eq(sig.to_ascii_lowercase().as_bytes())) {
            return Err(unauthorized("the URL's signature does not match"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if exp < now {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Unauthorized,
                "the signed URL has expired",
            ));
        }
        Ok(Some(exp))
    }
}

/// CORS on every answer, so that a page from anywhere (a CDN, the `--web` viewer on another
/// port) may read it. `*` even with a token: the token is a header the page adds itself, never
/// a cookie the browser would add for it, so another site's page gets nothing it did not have
/// (and `*` forbids credentialed requests altogether). ETag and Content-Range are exposed for
/// resuming and validating; errors carry the header too, so the page can read their JSON.
fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSED),
    );
}

/// Headers a page may read beyond the CORS-safelisted ones.
const CORS_EXPOSED: &str = "ETag, Content-Range, Accept-Ranges, WWW-Authenticate";
/// Request headers a page may send: the token, ranges and validators.
const CORS_ALLOWED: &str = "Authorization, Range, If-None-Match, If-Range";
/// How long a browser may keep a preflight's answer (Chromium keeps at most 2 h): chunk URLs
/// fetched with a token are each asked about once, not once per fetch.
const CORS_MAX_AGE: &str = "7200";

/// The answer to a CORS preflight (`OPTIONS`): GET and HEAD, with the headers above.
fn preflight() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(CORS_ALLOWED),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(CORS_MAX_AGE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The signature of a signed URL: `path` exactly as sent (percent-encoded, no query), valid
/// until `exp` (Unix seconds).
pub(crate) fn sign(token: &str, exp: u64, path: &str) -> String {
    let key = blake3::derive_key(SIGN_CONTEXT, token.as_bytes());
    let mac = blake3::keyed_hash(&key, format!("{exp}\n{path}").as_bytes());
    hex::encode(mac.as_bytes())
}

fn route_of(path: &str) -> Route {
    if path.starts_with("/v1/files/") {
        Route::Files
    } else if path.starts_with("/v1/index/") {
        Route::Index
    } else if path.starts_with("/v1/chunks/") {
        Route::Chunks
    } else if path.starts_with("/v1/hls/live/") {
        Route::LiveHls
    } else if path.starts_with("/v1/hls/") {
        Route::Hls
    } else if let Some(rest) = path.strip_prefix("/v1/live/") {
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [_, "index.json"] => Route::LiveIndex,
            [_, _, "init", _] => Route::LiveInit,
            [_, _, _] => Route::LiveChunk,
            _ => Route::Other,
        }
    } else {
        Route::Other
    }
}

/// The value of a header as text, if present and text.
pub(crate) fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A percent-encoded path segment run, decoded (and refused when not UTF-8).
pub(crate) fn decode_path(p: &str) -> Result<String, Failure> {
    percent_encoding::percent_decode_str(p)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Failure::bad("the path is not UTF-8"))
}
