//! One client connection, whatever its transport: the handshake, then the control loop that
//! answers listings and runs streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use chunkcast_protocol::net::{LinkRx, LinkTx};
use chunkcast_protocol::session::{
    DEFAULT_PING_INTERVAL, Established, Keepalive, ServerConfig, ServerHandshake,
};
use chunkcast_protocol::wire::{Caps, Catalog, ErrorFrame, Frame};
use chunkcast_protocol::{ErrorCode, StreamId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::library::Library;
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
}

impl Shared {
    fn handshake_config(&self) -> ServerConfig {
        ServerConfig {
            caps: Caps::LZ4,
            token: self.config.token.clone(),
            timeout: self.config.limits.handshake_timeout,
            ..ServerConfig::default()
        }
    }
}

/// Serves one connection until the client leaves, the link fails, or the server stops.
pub(crate) async fn serve(shared: Arc<Shared>, tx: LinkTx, mut rx: LinkRx, peer: String) {
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let Some(est) = handshake(&shared, &tx, &mut rx, id).await else {
        debug!(%peer, session = id, "handshake failed");
        return;
    };
    info!(%peer, session = id, client = %est.peer_name, "connected");
    let mut conn = Conn {
        shared: shared.clone(),
        tx,
        est,
        streams: HashMap::new(),
    };
    conn.run(&mut rx).await;
    info!(%peer, session = id, "disconnected");
}

async fn handshake(shared: &Shared, tx: &LinkTx, rx: &mut LinkRx, id: u64) -> Option<Established> {
    let now = std::time::Instant::now();
    let hs = ServerHandshake::new(shared.handshake_config(), now, id);
    let deadline = tokio::time::Instant::from_std(hs.poll_timeout());
    let mut out = BytesMut::new();
    let first = tokio::select! {
        f = rx.recv() => f,
        () = tokio::time::sleep_until(deadline) => {
            let _ = hs.handle_timeout(std::time::Instant::now(), &mut out);
            let _ = tx.send_raw(out.freeze()).await;
            return None;
        }
        () = shared.stop.cancelled() => return None,
    };
    let result = match first {
        Some(Ok(frame)) => hs.handle_frame(std::time::Instant::now(), frame, &mut out),
        Some(Err(e)) => {
            // Garbage: say so in a frame the client can show, then close.
            let code = ErrorCode::Protocol;
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
        None => return None,
    };
    let _ = tx.send_raw(out.freeze()).await;
    result.ok()
}

struct Conn {
    shared: Arc<Shared>,
    tx: LinkTx,
    est: Established,
    streams: HashMap<StreamId, JoinHandle<()>>,
}

impl Conn {
    async fn run(&mut self, rx: &mut LinkRx) {
        let now = std::time::Instant::now();
        let idle = self.shared.config.limits.idle_timeout;
        let mut keepalive = Keepalive::new(now, now, DEFAULT_PING_INTERVAL, idle);
        let mut out = BytesMut::new();
        loop {
            self.streams.retain(|_, h| !h.is_finished());
            let wake = tokio::time::Instant::from_std(keepalive.poll_timeout());
            tokio::select! {
                frame = rx.recv() => {
                    let frame = match frame {
                        Some(Ok(f)) => f,
                        Some(Err(e)) => {
                            warn!(session = self.est.session_id, "closing: {e}");
                            let message = e.to_string();
                            let _ = self.tx.send(Frame::Goodbye { code: ErrorCode::Protocol, message }).await;
                            break;
                        }
                        None => break,
                    };
                    keepalive.handle_rx(std::time::Instant::now());
                    match frame {
                        Frame::Ping { nonce, time_us } => {
                            keepalive.handle_ping(std::time::Instant::now(), nonce, time_us, &mut out);
                        }
                        Frame::Pong { nonce, echo_us, time_us } => {
                            keepalive.handle_pong(std::time::Instant::now(), nonce, echo_us, time_us);
                        }
                        Frame::Goodbye { .. } => break,
                        other => {
                            if !self.handle(other).await {
                                break;
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if let Err(e) = keepalive.handle_timeout(std::time::Instant::now(), &mut out) {
                        debug!(session = self.est.session_id, "idle: {e}");
                        let message = format!("closing an idle connection: {e}");
                        let _ = self.tx.send(Frame::Goodbye { code: ErrorCode::Timeout, message }).await;
                        break;
                    }
                }
                () = self.shared.stop.cancelled() => break,
            }
            if !out.is_empty() && self.tx.send_raw(out.split().freeze()).await.is_err() {
                break;
            }
        }
        if self.shared.stop.is_cancelled() {
            let message = "server shutting down".to_owned();
            let _ = self
                .tx
                .send(Frame::Goodbye {
                    code: ErrorCode::None,
                    message,
                })
                .await;
            for (_, h) in self.streams.drain() {
                h.abort();
            }
        }
        // Let running streams finish (they hold their own link handle); the connection closes
        // once all of them are done.
        for (_, h) in self.streams.drain() {
            let _ = h.await;
        }
    }

    /// Handles one request; `false` closes the connection.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::List { request, prefix } => {
                let lib = self.shared.library.clone();
                let listed = tokio::task::spawn_blocking(move || lib.list(&prefix)).await;
                match listed {
                    Ok(Ok(entries)) => self.send_catalog(request, entries).await,
                    Ok(Err(e)) => self.error(request, e.code(), e.to_string()).await,
                    Err(_) => {
                        self.error(request, ErrorCode::Internal, "listing failed")
                            .await
                    }
                }
            }
            Frame::Open(open) => {
                if self.shared.draining.is_cancelled() {
                    return self
                        .error(open.request, ErrorCode::Busy, "server is shutting down")
                        .await;
                }
                if self.streams.len() >= self.shared.config.limits.max_streams_per_connection {
                    let msg = format!(
                        "too many streams on one connection (limit {})",
                        self.shared.config.limits.max_streams_per_connection
                    );
                    return self.error(open.request, ErrorCode::Busy, msg).await;
                }
                if self.streams.contains_key(&open.stream) {
                    return self
                        .error(
                            open.request,
                            ErrorCode::BadRequest,
                            "stream id already in use",
                        )
                        .await;
                }
                let lz4 = open.compress && self.est.caps.contains(Caps::LZ4);
                let max_payload = self.shared.config.limits.wire.max_payload();
                let lib = self.shared.library.clone();
                let tx = self.tx.clone();
                let stream = open.stream;
                let path = open.path.clone();
                let session = self.est.session_id;
                let task = tokio::spawn(async move {
                    let request = open.request;
                    match stream::prepare(lib, open, max_payload, lz4).await {
                        Ok(prepared) => match prepared.run(&tx).await {
                            Ended::Complete => debug!(session, %path, "stream complete"),
                            Ended::Failed(e) => warn!(session, %path, "stream failed: {e}"),
                            Ended::Link(e) => debug!(session, %path, "stream cut: {e}"),
                        },
                        Err(e) => {
                            debug!(session, %path, "open refused: {}", e.message);
                            let _ = tx.send(Frame::Error(ErrorFrame { request, ..e })).await;
                        }
                    }
                });
                self.streams.insert(stream, task);
                true
            }
            Frame::Close { stream, .. } => {
                if let Some(h) = self.streams.remove(&stream) {
                    h.abort();
                }
                true
            }
            Frame::Publish { request, .. } | Frame::Subscribe { request, .. } => {
                self.error(
                    request,
                    ErrorCode::BadRequest,
                    "live channels are not supported by this server yet",
                )
                .await
            }
            Frame::Chunk(c) => {
                let msg = format!("chunk for stream {} that is not being published", c.stream);
                self.error(0, ErrorCode::BadRequest, msg).await;
                false
            }
            other => {
                let msg = format!("unexpected {} frame", other.name());
                self.error(0, ErrorCode::Protocol, msg).await;
                false
            }
        }
    }

    async fn send_catalog(
        &self,
        request: u32,
        entries: Vec<chunkcast_protocol::wire::Entry>,
    ) -> bool {
        let pages = entries.len().div_ceil(CATALOG_PAGE).max(1);
        let mut it = entries.into_iter();
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
        self.tx.send(frame).await.is_ok()
    }
}
