//! One client connection, whatever its transport: the handshake, then the control loop that
//! answers listings and runs streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use chunkcast_protocol::conn::rate::{RateLimit, Verdict};
use chunkcast_protocol::session::{
    DEFAULT_PING_INTERVAL, Established, Keepalive, ServerConfig, ServerHandshake,
};
use chunkcast_protocol::wire::{Caps, Catalog, ErrorFrame, Frame};
use chunkcast_protocol::{ErrorCode, StreamId};
use chunkcast_transport::{LinkError, LinkRx, LinkTx};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::library::Library;
use crate::live::{self, Live};
use crate::metrics::{self, Dropped, HandshakeFailed, Metrics};
use crate::stream::{self, Ended};

/// Catalog entries per `CATALOG` frame: keeps each frame far below the frame size limit.
const CATALOG_PAGE: usize = 256;

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) library: Arc<Library>,
    pub(crate) next_session: AtomicU64,
    /// Cancelled when shutdown begins: no new streams.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the grace period is over: everything stops.
    pub(crate) stop: CancellationToken,
    /// Live channels and call rooms.
    pub(crate) live: Arc<Live>,
    /// The instant every connection's ping timestamps count from, so that clients estimating
    /// their offset to the server's clock (calls) share one reference.
    pub(crate) epoch: std::time::Instant,
    /// What `--metrics` serves.
    pub(crate) metrics: Arc<Metrics>,
}

impl Shared {
    /// The state for a server with `config` serving `library`.
    pub(crate) fn new(config: Config, library: Library) -> Self {
        let metrics = Arc::new(Metrics::new());
        let linger = config.limits.live_linger;
        Self {
            library: Arc::new(library),
            next_session: AtomicU64::new(1),
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            live: Arc::new(Live::new(Default::default(), linger, metrics.live_gauges())),
            epoch: std::time::Instant::now(),
            metrics,
            config,
        }
    }

    fn handshake_config(&self, timeout: std::time::Duration) -> ServerConfig {
        // The capabilities offered are the protocol crate's server default (one place).
        ServerConfig {
            token: self.config.token.clone(),
            timeout,
            ..ServerConfig::default()
        }
    }
}

/// Serves one connection until the client leaves, the link fails, or the server stops. The
/// client's `HELLO` must arrive before `deadline` (what is left of the handshake timeout).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tx: LinkTx,
    mut rx: LinkRx,
    peer: String,
    deadline: Instant,
) {
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let Some(est) = handshake(&shared, &tx, &mut rx, id, deadline, &peer).await else {
        debug!(%peer, session = id, "handshake failed");
        return;
    };
    info!(%peer, session = id, client = %est.peer_name, "connected");
    let mut conn = Conn {
        shared: shared.clone(),
        peer: peer.clone(),
        tx,
        est,
        streams: HashMap::new(),
        rate: RateLimit::new(
            shared.config.limits.max_requests_per_sec,
            std::time::Instant::now(),
        ),
    };
    conn.run(&mut rx).await;
    shared.live.leave(id);
    info!(%peer, session = id, "disconnected");
}

async fn handshake(
    shared: &Shared,
    tx: &LinkTx,
    rx: &mut LinkRx,
    id: u64,
    deadline: Instant,
    peer: &str,
) -> Option<Established> {
    let metrics = &shared.metrics;
    let now = std::time::Instant::now();
    let left = deadline.saturating_duration_since(Instant::now());
    let hs = ServerHandshake::new(shared.handshake_config(left), now, id);
    let mut out = BytesMut::new();
    let first = tokio::select! {
        f = rx.recv() => f,
        () = tokio::time::sleep_until(deadline) => {
            let at = hs.poll_timeout().max(std::time::Instant::now());
            let _ = hs.handle_timeout(at, &mut out);
            metrics.handshake_failed(HandshakeFailed::Refused(ErrorCode::Timeout));
            metrics.error_sent(ErrorCode::Timeout);
            let _ = tx.send_raw(out.freeze()).await;
            return None;
        }
        () = shared.stop.cancelled() => return None,
    };
    let result = match first {
        Some(Ok(frame)) => hs.handle_frame(std::time::Instant::now(), frame, &mut out),
        Some(Err(LinkError::Decode(e))) => {
            // Garbage: say so in a frame the client can show, then close.
            let code = ErrorCode::from(&e);
            metrics.handshake_failed(HandshakeFailed::Refused(code));
            metrics.error_sent(code);
            let message = format!("not a chunkcast hello: {e}");
            let _ = tx
                .send(Frame::Error(ErrorFrame {
                    request: 0,
                    code,
                    message,
                }))
                .await;
            return None;
        }
        Some(Err(_)) | None => {
            metrics.handshake_failed(HandshakeFailed::Closed);
            return None;
        }
    };
    if let Err(e) = &result {
        info!(%peer, session = id, "refused: {e}");
        metrics.handshake_failed(HandshakeFailed::Refused(e.code()));
        metrics.error_sent(e.code());
    }
    let _ = tx.send_raw(out.freeze()).await;
    result.ok()
}

/// What the control loop does after a frame or a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Carry on.
    Continue,
    /// The client stopped sending (EOF): stop reading, let running file streams finish for
    /// at most the idle timeout (a half-closed client may still be reading); live viewers go
    /// at once.
    Close,
    /// The server ends the connection: stop reading, abort running streams.
    Abort,
}

/// What a stream's task does, which decides how it ends with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Sends a file: may finish after the client stopped sending (a half-closed client may
    /// still be reading).
    File,
    /// Sends a live channel (or waits for its publisher): aborted as soon as the client is
    /// gone, since a live stream never finishes on its own.
    Viewer,
    /// Relays a publisher's chunks: never aborted by the connection, whose end closes the
    /// route the task reads from; the task then relays what had arrived and ends.
    Publisher,
}

/// A stream's task.
struct Running {
    task: JoinHandle<()>,
    kind: Kind,
}

struct Conn {
    shared: Arc<Shared>,
    /// The client's address, for the log.
    peer: String,
    tx: LinkTx,
    est: Established,
    streams: HashMap<StreamId, Running>,
    rate: RateLimit,
}

impl Conn {
    async fn run(&mut self, rx: &mut LinkRx) {
        let now = std::time::Instant::now();
        let idle = self.shared.config.limits.idle_timeout;
        let mut keepalive = Keepalive::new(now, self.shared.epoch, DEFAULT_PING_INTERVAL, idle);
        let mut out = BytesMut::new();
        let flow = loop {
            self.streams.retain(|_, r| !r.task.is_finished());
            let wake = Instant::from_std(keepalive.poll_timeout());
            let flow = tokio::select! {
                frame = rx.recv() => match frame {
                    Some(Ok(frame)) => {
                        keepalive.handle_rx(std::time::Instant::now());
                        self.on_frame(frame, &mut keepalive, &mut out).await
                    }
                    Some(Err(e)) => self.link_failed(e).await,
                    None => Flow::Close,
                },
                () = tokio::time::sleep_until(wake) => {
                    match keepalive.handle_timeout(std::time::Instant::now(), &mut out) {
                        Ok(()) => Flow::Continue,
                        Err(e) => {
                            debug!(session = self.est.session_id, "idle: {e}");
                            self.shared.metrics.dropped(Dropped::IdleTimeout);
                            let message = format!("closing an idle connection: {e}");
                            self.goodbye(ErrorCode::Timeout, message).await;
                            Flow::Abort
                        }
                    }
                }
                () = self.shared.stop.cancelled() => Flow::Abort,
            };
            if flow != Flow::Continue {
                break flow;
            }
            if !out.is_empty() && self.tx.send_raw(out.split().freeze()).await.is_err() {
                break Flow::Close;
            }
        };
        if self.shared.stop.is_cancelled() {
            self.goodbye(ErrorCode::None, "server shutting down").await;
        }
        // Live viewers never finish: the client that asked for them is gone (or is being
        // dropped), so they go now, whatever the flow; their tasks' guards detach them.
        // Publishers' routes close so that their relays finish with what has arrived.
        let tx = self.tx.clone();
        self.streams.retain(|&stream, r| match r.kind {
            Kind::File if flow == Flow::Abort => {
                r.task.abort();
                false
            }
            Kind::File => true,
            Kind::Viewer => {
                r.task.abort();
                false
            }
            Kind::Publisher => {
                tx.unroute(stream);
                false
            }
        });
        // Let running file streams finish (they hold their own link handle), for at most the
        // idle timeout: a half-closed client may still be reading.
        let finish = async {
            for r in self.streams.values_mut() {
                let _ = (&mut r.task).await;
            }
        };
        if tokio::time::timeout(idle, finish).await.is_err() {
            debug!(
                session = self.est.session_id,
                "streams still running after the client left"
            );
        }
        for (_, r) in self.streams.drain() {
            r.task.abort();
        }
    }

    /// Takes one frame from the client.
    async fn on_frame(
        &mut self,
        frame: Frame,
        keepalive: &mut Keepalive,
        out: &mut BytesMut,
    ) -> Flow {
        let request = match &frame {
            Frame::List { request, .. }
            | Frame::Open(chunkcast_protocol::wire::Open { request, .. })
            | Frame::Publish { request, .. }
            | Frame::Subscribe { request, .. } => Some(*request),
            Frame::Ping { .. } => None,
            Frame::Pong {
                nonce,
                echo_us,
                time_us,
            } => {
                keepalive.handle_pong(std::time::Instant::now(), *nonce, *echo_us, *time_us);
                return Flow::Continue;
            }
            // Nobody will read what its streams would send.
            Frame::Goodbye { .. } => return Flow::Abort,
            _ => {
                return if self.handle(frame).await {
                    Flow::Continue
                } else {
                    Flow::Abort
                };
            }
        };
        // Requests and pings draw on the connection's rate.
        match self.rate.check(std::time::Instant::now()) {
            Verdict::Serve => {}
            Verdict::Refuse => {
                self.shared.metrics.request_limited();
                let Some(request) = request else {
                    return Flow::Continue; // a ping over the rate goes unanswered
                };
                let limit = self.shared.config.limits.max_requests_per_sec;
                let msg = format!("too many requests (limit {limit} per second): slow down");
                info!(peer = %self.peer, session = self.est.session_id, "refused: {msg}");
                return if self.error(request, ErrorCode::Busy, msg).await {
                    Flow::Continue
                } else {
                    Flow::Close
                };
            }
            Verdict::Close => {
                self.shared.metrics.request_limited();
                self.shared.metrics.dropped(Dropped::RateLimit);
                let limit = self.shared.config.limits.max_requests_per_sec;
                warn!(
                    session = self.est.session_id,
                    "closing: over its request rate"
                );
                let msg =
                    format!("closing: requests kept coming over the limit of {limit} per second");
                self.goodbye(ErrorCode::Busy, msg).await;
                return Flow::Abort;
            }
        }
        if let Frame::Ping { nonce, time_us } = frame {
            keepalive.handle_ping(std::time::Instant::now(), nonce, time_us, out);
            return Flow::Continue;
        }
        if self.handle(frame).await {
            Flow::Continue
        } else {
            Flow::Abort
        }
    }

    /// The link failed: say why if it was the client's bytes, and end the connection.
    async fn link_failed(&mut self, e: LinkError) -> Flow {
        let LinkError::Decode(d) = &e else {
            debug!(session = self.est.session_id, "link failed: {e}");
            return Flow::Abort;
        };
        warn!(session = self.est.session_id, "closing: {e}");
        let code = ErrorCode::from(d);
        let why = if code == ErrorCode::TooLarge {
            Dropped::TooLarge
        } else {
            Dropped::Protocol
        };
        self.shared.metrics.dropped(why);
        self.goodbye(code, e.to_string()).await;
        Flow::Abort
    }

    /// Handles one request; `false` closes the connection.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::List { request, prefix } if prefix.trim_matches('/') == "live" => {
                let entries = self.shared.live.list();
                self.logged("list", &prefix, &format!("{} entries", entries.len()));
                self.send_catalog(request, entries).await
            }
            Frame::List { request, prefix } => {
                let lib = self.shared.library.clone();
                let path = prefix.clone();
                let listed = tokio::task::spawn_blocking(move || lib.list(&prefix)).await;
                match listed {
                    Ok(Ok(entries)) => {
                        self.logged("list", &path, &format!("{} entries", entries.len()));
                        self.send_catalog(request, entries).await
                    }
                    Ok(Err(e)) => {
                        self.logged("list", &path, &format!("refused: {e}"));
                        self.error(request, e.code(), e.to_string()).await
                    }
                    Err(_) => {
                        self.error(request, ErrorCode::Internal, "listing failed")
                            .await
                    }
                }
            }
            Frame::Open(open) => {
                if let Err((code, msg)) = self.admit(open.stream) {
                    self.logged("get", &open.path, &format!("refused: {msg}"));
                    return self.error(open.request, code, msg).await;
                }
                let lz4 = open.compress && self.est.caps.contains(Caps::LZ4);
                let digest_at_end = self.est.caps.contains(Caps::DIGEST_AT_END);
                let any_file = self.est.caps.contains(Caps::ANY_FILE);
                let max_payload = self.shared.config.limits.wire.max_payload();
                let lib = self.shared.library.clone();
                let tx = self.tx.clone();
                let stream = open.stream;
                let path = open.path.clone();
                let session = self.est.session_id;
                let m = self.shared.metrics.clone();
                let stall = self.shared.config.limits.idle_timeout;
                let peer = self.peer.clone();
                let started = std::time::Instant::now();
                let task = tokio::spawn(metrics::scope(m.clone(), async move {
                    let request = open.request;
                    match stream::prepare(lib, open, max_payload, lz4, digest_at_end, any_file)
                        .await
                    {
                        Ok(prepared) => {
                            let _open = m.stream_opened();
                            let (ended, bytes) = metrics::counted(prepared.run(&tx, stall)).await;
                            let ms = started.elapsed().as_millis() as u64;
                            match ended {
                                Ended::Complete => {
                                    info!(%peer, session, %path, bytes, ms, "get: complete");
                                }
                                Ended::Failed(e) => {
                                    m.error_sent(ErrorCode::BadMedia);
                                    warn!(%peer, session, %path, bytes, ms, "get: failed: {e}");
                                }
                                Ended::Changed => {
                                    m.error_sent(ErrorCode::Changed);
                                    warn!(
                                        %peer, session, %path, bytes, ms,
                                        "get: failed: the file changed while it was sent; no digest sent"
                                    );
                                }
                                Ended::Link(e) => {
                                    info!(%peer, session, %path, bytes, ms, "get: cut: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            info!(%peer, session, %path, "get: refused: {}: {}", e.code, e.message);
                            m.error_sent(e.code);
                            let _ = tx.send(Frame::Error(ErrorFrame { request, ..e })).await;
                        }
                    }
                }));
                let kind = Kind::File;
                self.streams.insert(stream, Running { task, kind });
                true
            }
            Frame::Close { stream, .. } => {
                if let Some(r) = self.streams.remove(&stream) {
                    if r.kind == Kind::Publisher {
                        // A publisher that cancels is lost, unless its end already came.
                        self.tx.unroute(stream);
                    } else {
                        r.task.abort();
                    }
                }
                true
            }
            Frame::Publish {
                request,
                stream,
                channel,
                codec,
            } => {
                if let Err((code, msg)) = self.admit(stream) {
                    return self.error(request, code, msg).await;
                }
                let max_payload = self.shared.config.limits.wire.max_payload();
                let live = self.shared.live.clone();
                let session = self.est.session_id;
                let at = live::Request {
                    session,
                    request,
                    stream,
                    channel: &channel,
                };
                match live.publish(&self.tx, at, codec, max_payload).await {
                    Ok(task) => {
                        let kind = Kind::Publisher;
                        self.streams.insert(stream, Running { task, kind });
                        true
                    }
                    Err(r) => {
                        let refusal = live::refusal(request, r);
                        self.log_refusal("publish", &channel, &refusal);
                        self.send(refusal).await
                    }
                }
            }
            Frame::Subscribe {
                request,
                stream,
                channel,
            } => {
                if let Err((code, msg)) = self.admit(stream) {
                    return self.error(request, code, msg).await;
                }
                let live = self.shared.live.clone();
                let session = self.est.session_id;
                let at = live::Request {
                    session,
                    request,
                    stream,
                    channel: &channel,
                };
                match live.subscribe(self.tx.clone(), at) {
                    Ok(task) => {
                        self.logged("watch", &channel, "subscribed");
                        let kind = Kind::Viewer;
                        self.streams.insert(stream, Running { task, kind });
                        true
                    }
                    Err(r) => {
                        let refusal = live::refusal(request, r);
                        self.log_refusal("watch", &channel, &refusal);
                        self.send(refusal).await
                    }
                }
            }
            Frame::Chunk(c) => {
                let msg = format!("chunk for stream {} that is not being published", c.stream);
                self.shared.metrics.dropped(Dropped::Protocol);
                self.error(0, ErrorCode::BadRequest, msg).await;
                false
            }
            other => {
                let msg = format!("unexpected {} frame", other.name());
                self.shared.metrics.dropped(Dropped::Protocol);
                self.error(0, ErrorCode::Protocol, msg).await;
                false
            }
        }
    }

    /// Whether a new stream (`OPEN`, `PUBLISH` or `SUBSCRIBE`) may start on `stream`: not
    /// while draining, not past the per-connection limit, not on an id in use.
    fn admit(&self, stream: StreamId) -> Result<(), (ErrorCode, String)> {
        if self.shared.draining.is_cancelled() {
            return Err((ErrorCode::Busy, "server is shutting down".into()));
        }
        let limit = self.shared.config.limits.max_streams_per_connection;
        if self.streams.len() >= limit {
            let msg = format!("too many streams on one connection (limit {limit})");
            return Err((ErrorCode::Busy, msg));
        }
        if self.streams.contains_key(&stream) {
            return Err((ErrorCode::BadRequest, "stream id already in use".into()));
        }
        Ok(())
    }

    /// One request's line in the log: who, what, how it went.
    fn logged(&self, what: &str, path: &str, outcome: &str) {
        let session = self.est.session_id;
        info!(peer = %self.peer, session, %path, "{what}: {outcome}");
    }

    /// A refusal's line in the log, with the reason the client is given.
    fn log_refusal(&self, what: &str, path: &str, refusal: &Frame) {
        if let Frame::Error(e) = refusal {
            self.logged(what, path, &format!("refused: {}: {}", e.code, e.message));
        }
    }

    async fn send_catalog(
        &self,
        request: u32,
        entries: Vec<chunkcast_protocol::wire::Entry>,
    ) -> bool {
        let pages = entries.len().div_ceil(CATALOG_PAGE).max(1);
        let caps = self.est.caps;
        let mut it = entries.into_iter().map(|e| e.for_peer(caps));
        for page in 0..pages {
            let entries: Vec<_> = it.by_ref().take(CATALOG_PAGE).collect();
            let last = page + 1 == pages;
            if self
                .tx
                .send(Frame::Catalog(Catalog {
                    request,
                    last,
                    entries,
                }))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    async fn error(&self, request: u32, code: ErrorCode, message: impl Into<String>) -> bool {
        let frame = Frame::Error(ErrorFrame {
            request,
            code,
            message: message.into(),
        });
        self.send(frame).await
    }

    async fn goodbye(&self, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        let _ = self.send(Frame::Goodbye { code, message }).await;
    }

    /// Sends a control frame, counting the error code it carries; `false` if the link is gone.
    async fn send(&self, frame: Frame) -> bool {
        match &frame {
            Frame::Error(e) => self.shared.metrics.error_sent(e.code),
            Frame::Goodbye { code, .. } | Frame::Close { code, .. } => {
                self.shared.metrics.error_sent(*code);
            }
            _ => {}
        }
        self.tx.send(frame).await.is_ok()
    }
}
