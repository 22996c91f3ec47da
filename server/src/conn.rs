//! One client connection, whatever its transport: a short loop that moves frames and time
//! between the link and the connection machine (`chunkcast_protocol::conn::ServerConn`, which
//! holds every rule), and does the work it asks for: listings, file streams, live channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use chunkcast_protocol::conn::ServerConn;
use chunkcast_protocol::conn::server::{
    DEFAULT_CATALOG_PAGE, DropReason, Ending, ServerConnConfig, ServerEvent, StreamKind,
};
use chunkcast_protocol::session::{DEFAULT_PING_INTERVAL, ServerConfig};
use chunkcast_protocol::wire::{Caps, ChatKind, ErrorFrame, Frame, Open};
use chunkcast_protocol::{Codec, ErrorCode, StreamId};
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
    /// Chat rooms beside them.
    pub(crate) chats: crate::chat::Chats,
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
            live: {
                let live = Live::new(Default::default(), linger, metrics.live_gauges());
                if let Some(dir) = &config.record {
                    live.record_into(dir.clone());
                }
                Arc::new(live)
            },
            chats: crate::chat::Chats::default(),
            // The drivers' one clock: tokio's (paused in tests), read as std.
            epoch: Instant::now().into_std(),
            metrics,
            config,
        }
    }

    /// The same state with the live registry of an edge (`edge`) and/or of an origin that
    /// registers its publishers (`registry`: the directory and the URL it advertises).
    pub(crate) fn with_tiers(
        mut self,
        edge: Option<Arc<crate::edge::Edge>>,
        registry: Option<(Arc<crate::directory::Directory>, String)>,
    ) -> Self {
        let linger = self.config.limits.live_linger;
        let mut live = Live::new(Default::default(), linger, self.metrics.live_gauges());
        if let Some(edge) = edge {
            live = live.with_edge(edge);
        }
        if let Some((dir, origin)) = registry {
            live = live.with_registry(dir, origin);
        }
        if let Some(dir) = &self.config.record {
            live.record_into(dir.clone());
        }
        self.live = Arc::new(live);
        self
    }

    fn handshake_config(&self, timeout: std::time::Duration) -> ServerConfig {
        // The capabilities offered are the protocol crate's server default (one place).
        // Plus `RELAY`, which only a server can offer: edges relay from it.
        let caps = ServerConfig::default().caps | Caps::RELAY;
        ServerConfig {
            token: self.config.token.clone(),
            timeout,
            caps,
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
    let now = Instant::now();
    let limits = &shared.config.limits;
    let config = ServerConnConfig {
        handshake: shared.handshake_config(deadline.saturating_duration_since(now)),
        epoch: shared.epoch,
        ping_interval: DEFAULT_PING_INTERVAL,
        idle_timeout: limits.idle_timeout,
        max_streams: limits.max_streams_per_connection,
        max_requests_per_sec: limits.max_requests_per_sec,
        catalog_page: DEFAULT_CATALOG_PAGE,
        relay_id: shared.live.edge().map(|e| e.id()),
        max_relay_hops: shared.config.max_relay_hops,
    };
    let mut conn = ServerConn::new(config, now.into_std(), id);
    let mut driver = Driver {
        shared: shared.clone(),
        peer,
        tx,
        tasks: HashMap::new(),
    };
    let ending = driver.run(&mut conn, &mut rx).await;
    if conn.established().is_none() {
        debug!(peer = %driver.peer, session = id, "handshake failed");
        return;
    }
    driver.finish(ending).await;
    shared.live.leave(id);
    shared.chats.leave(id);
    info!(peer = %driver.peer, session = id, "disconnected");
}

/// How long a publisher's relay may still run after its client left, to take the chunks that
/// were on their way (see [`Driver::finish`]).
const PUBLISHER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The drivers' one clock, as the machine takes it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A stream's task.
struct Running {
    task: JoinHandle<()>,
    kind: StreamKind,
    /// A publisher's: where its own reason for stopping goes, for its viewers.
    reason: Option<live::EndReason>,
}

/// What the machine cannot do itself: the link, the tasks, the library, the live channels.
struct Driver {
    shared: Arc<Shared>,
    /// The client's address, for the log.
    peer: String,
    tx: LinkTx,
    /// The running streams' tasks. The machine's table decides admission; this one holds the
    /// handles, and a task it no longer holds (a cancelled publisher still relaying) cannot
    /// free a slot that its stream id has since been given to.
    tasks: HashMap<StreamId, Running>,
}

impl Driver {
    /// Feeds the machine until it says the connection is over, and how.
    async fn run(&mut self, conn: &mut ServerConn, rx: &mut LinkRx) -> Ending {
        let mut out = BytesMut::new();
        loop {
            // Slots are only asked for when a frame arrives, so freeing them here is in time.
            self.tasks.retain(|&stream, r| {
                let finished = r.task.is_finished();
                if finished {
                    conn.stream_ended(stream);
                }
                !finished
            });
            let mut ending = None;
            while let Some(event) = conn.poll_event() {
                match event {
                    ServerEvent::Closed(how) => ending = Some(how),
                    event => self.on_event(conn, event).await,
                }
            }
            if conn.poll_transmit(&mut out) && self.tx.send_raw(out.split().freeze()).await.is_err()
            {
                return ending.unwrap_or(Ending::PeerLeft);
            }
            if let Some(ending) = ending {
                return ending;
            }
            let Some(wake) = conn.poll_timeout() else {
                return Ending::Aborted;
            };
            tokio::select! {
                frame = rx.recv() => match frame {
                    Some(Ok(frame)) => {
                        if self.shared.draining.is_cancelled() {
                            conn.drain();
                        }
                        conn.handle_frame(now(), frame);
                    }
                    Some(Err(LinkError::Decode(e))) => {
                        warn!(peer = %self.peer, "closing: the client's bytes: {e}");
                        conn.handle_decode_error(now(), e);
                    }
                    Some(Err(e)) => {
                        debug!(peer = %self.peer, "link failed: {e}");
                        conn.handle_link_lost(now());
                    }
                    None => conn.handle_eof(now()),
                },
                () = tokio::time::sleep_until(Instant::from_std(wake)) => {
                    // A publisher's chunks go straight to its relay, yet prove it alive.
                    if rx.take_routed() > 0 {
                        conn.handle_data(now());
                    }
                    conn.handle_timeout(now());
                }
                () = self.shared.stop.cancelled() => {
                    conn.close(now(), ErrorCode::None, "server shutting down");
                }
            }
        }
    }

    /// Acts on one event of the machine.
    async fn on_event(&mut self, conn: &mut ServerConn, event: ServerEvent) {
        let metrics = &self.shared.metrics;
        let session = conn.established().map_or(0, |e| e.session_id);
        match event {
            ServerEvent::Connected(est) => {
                info!(peer = %self.peer, session, client = %est.peer_name, "connected");
            }
            ServerEvent::HandshakeFailed(Some(e)) => {
                info!(peer = %self.peer, "refused: {e}");
                metrics.handshake_failed(HandshakeFailed::Refused(e.code()));
            }
            ServerEvent::HandshakeFailed(None) => metrics.handshake_failed(HandshakeFailed::Closed),
            ServerEvent::List { request, prefix } => self.list(conn, request, prefix).await,
            ServerEvent::Open(open) => {
                let task = self.spawn_file(conn, open.clone());
                self.tasks.insert(
                    open.stream,
                    Running {
                        task,
                        kind: StreamKind::File,
                        reason: None,
                    },
                );
            }
            ServerEvent::Publish {
                request,
                stream,
                channel,
                codec,
            } => {
                self.publish(conn, request, stream, channel, codec).await;
            }
            ServerEvent::Subscribe {
                request,
                stream,
                channel,
            } => {
                let relay = conn
                    .established()
                    .is_some_and(|e| e.caps.contains(Caps::RELAY));
                let at = live::Request {
                    session,
                    request,
                    stream,
                    channel: &channel,
                    relay,
                    path: conn.relay_path(),
                };
                // Calls only: a live channel's viewer is a player with a buffer, better served
                // by the stream's reliability than by datagrams' timeliness.
                let datagrams = channel.starts_with("call/")
                    && conn
                        .established()
                        .is_some_and(|e| e.caps.contains(Caps::DATAGRAMS));
                match self.shared.live.subscribe(self.tx.clone(), at, datagrams) {
                    Ok(task) => {
                        self.logged(session, "watch", &channel, "subscribed");
                        self.tasks.insert(
                            stream,
                            Running {
                                task,
                                kind: StreamKind::Viewer,
                                reason: None,
                            },
                        );
                    }
                    Err((code, message)) => {
                        let outcome = format!("refused: {code}: {message}");
                        self.logged(session, "watch", &channel, &outcome);
                        conn.refuse(request, code, message);
                    }
                }
            }
            ServerEvent::Cancel {
                stream,
                kind,
                code,
                message,
            } => {
                if let Some(r) = self.tasks.remove(&stream) {
                    if kind == StreamKind::Publisher {
                        // A publisher that cancels is lost, unless its end already came; one
                        // whose input broke says so, and its viewers are told why.
                        if code == ErrorCode::BadInput
                            && let Some(reason) = &r.reason
                        {
                            let message = format!("the channel's input broke: {message}");
                            *reason.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some((code, message));
                        }
                        self.tx.unroute(stream);
                    } else {
                        r.task.abort();
                    }
                }
            }
            ServerEvent::Refused {
                request,
                code,
                message,
            } => {
                info!(peer = %self.peer, session, request, "refused: {code}: {message}");
            }
            ServerEvent::Chat(chat) => {
                let chats = &self.shared.chats;
                let done = match chat.kind {
                    ChatKind::Join => chats.join(session, &chat, &self.tx),
                    _ => chats
                        .send(session, &chat)
                        .map(|ack| conn.send_frame(&Frame::Chat(ack))),
                };
                if let Err((code, message)) = done {
                    warn!(peer = %self.peer, session, "closing: chat: {message}");
                    conn.close(now(), code, &message);
                }
            }
            ServerEvent::RateLimited => metrics.request_limited(),
            ServerEvent::ErrorSent(code) => metrics.error_sent(code),
            ServerEvent::Dropped(why) => {
                warn!(peer = %self.peer, session, "closing: {why:?}");
                metrics.dropped(match why {
                    DropReason::IdleTimeout => Dropped::IdleTimeout,
                    DropReason::RateLimit => Dropped::RateLimit,
                    DropReason::TooLarge => Dropped::TooLarge,
                    _ => Dropped::Protocol,
                });
            }
            _ => {}
        }
    }

    /// Answers a `LIST`: live channels, or the library (read on a blocking thread).
    async fn list(&self, conn: &mut ServerConn, request: u32, prefix: String) {
        let session = conn.established().map_or(0, |e| e.session_id);
        let listed = if prefix.trim_matches('/') == "live" {
            match self.shared.live.edge() {
                // An edge lists what the tier above has: the directory, or its origin.
                Some(edge) => edge.list().await,
                None => Ok(self.shared.live.list()),
            }
        } else {
            let lib = self.shared.library.clone();
            let path = prefix.clone();
            match tokio::task::spawn_blocking(move || lib.list(&path)).await {
                Ok(Ok(entries)) => Ok(entries),
                Ok(Err(e)) => Err((e.code(), e.to_string())),
                Err(_) => Err((ErrorCode::Internal, "listing failed".to_owned())),
            }
        };
        match listed {
            Ok(entries) => {
                let outcome = format!("{} entries", entries.len());
                self.logged(session, "list", &prefix, &outcome);
                conn.send_catalog(request, entries);
            }
            Err((code, message)) => {
                self.logged(session, "list", &prefix, &format!("refused: {message}"));
                conn.refuse(request, code, message);
            }
        }
    }

    /// Takes a `PUBLISH` the machine admitted to the live channels, or refuses it.
    async fn publish(
        &mut self,
        conn: &mut ServerConn,
        request: u32,
        stream: StreamId,
        channel: String,
        codec: Codec,
    ) {
        let session = conn.established().map_or(0, |e| e.session_id);
        let max_payload = self.shared.config.limits.wire.max_payload();
        let at = live::Request {
            session,
            request,
            stream,
            channel: &channel,
            relay: false,
            path: &[],
        };
        let live = self.shared.live.clone();
        match live.publish(&self.tx, at, codec, max_payload).await {
            Ok((task, reason)) => {
                self.tasks.insert(
                    stream,
                    Running {
                        task,
                        kind: StreamKind::Publisher,
                        reason: Some(reason),
                    },
                );
            }
            Err((code, message)) => {
                let outcome = format!("refused: {code}: {message}");
                self.logged(session, "publish", &channel, &outcome);
                conn.refuse(request, code, message);
            }
        }
    }

    /// Starts the task that sends a file for an admitted `OPEN`. It answers the `OPEN` itself
    /// (`OPENED`, or an `ERROR` if the file cannot be served) and logs how it went.
    fn spawn_file(&self, conn: &ServerConn, open: Open) -> JoinHandle<()> {
        let caps = conn.established().map_or(Caps::default(), |e| e.caps);
        let session = conn.established().map_or(0, |e| e.session_id);
        let lz4 = open.compress && caps.contains(Caps::LZ4);
        let wants = stream::Wants {
            lz4,
            digest_at_end: caps.contains(Caps::DIGEST_AT_END),
            any_file: caps.contains(Caps::ANY_FILE),
            verified: caps.contains(Caps::VERIFIED),
            header_crc: caps.contains(Caps::HEADER_CRC) && open.header_crc,
            sendfile: self.shared.config.sendfile && self.tx.sends_files(),
        };
        let max_payload = self.shared.config.limits.wire.max_payload();
        let lib = self.shared.library.clone();
        let tx = self.tx.clone();
        let path = open.path.clone();
        let m = self.shared.metrics.clone();
        let stall = self.shared.config.limits.idle_timeout;
        let peer = self.peer.clone();
        let started = Instant::now();
        tokio::spawn(metrics::scope(m.clone(), async move {
            let request = open.request;
            match stream::prepare(lib, open, max_payload, wants).await {
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
        }))
    }

    /// Ends the connection's streams by how it ended. Live viewers never finish: the client
    /// that asked for them is gone (or is being dropped), so they go now; their tasks' guards
    /// detach them. Publishers' routes close so that their relays finish with what has
    /// arrived. Files finish, for at most the idle timeout, if the client only stopped
    /// sending (a half-closed client may still be reading).
    async fn finish(&mut self, ending: Ending) {
        let tx = self.tx.clone();
        // A publisher that ended its stream and then said goodbye may still have its last
        // chunks on the way: on QUIC they travel on a stream of their own, which the GOODBYE
        // can overtake. Its relay gets a moment to take them and end the channel itself; cut
        // now, its viewers were told the publisher was lost (a pipe test over QUIC, once). A
        // client that vanished without a word is a lost publisher at once.
        let publishing = async {
            for r in self.tasks.values_mut() {
                if r.kind == StreamKind::Publisher {
                    let _ = (&mut r.task).await;
                }
            }
        };
        if ending == Ending::Goodbye {
            let _ = tokio::time::timeout(PUBLISHER_GRACE, publishing).await;
        }
        self.tasks.retain(|&stream, r| match r.kind {
            StreamKind::File => {
                if ending != Ending::PeerLeft {
                    r.task.abort();
                }
                ending == Ending::PeerLeft
            }
            StreamKind::Viewer => {
                r.task.abort();
                false
            }
            StreamKind::Publisher => {
                tx.unroute(stream);
                false
            }
        });
        let finish = async {
            for r in self.tasks.values_mut() {
                let _ = (&mut r.task).await;
            }
        };
        let idle = self.shared.config.limits.idle_timeout;
        if tokio::time::timeout(idle, finish).await.is_err() {
            debug!(peer = %self.peer, "streams still running after the client left");
        }
        for (_, r) in self.tasks.drain() {
            r.task.abort();
        }
    }

    /// One request's line in the log: who, what, how it went.
    fn logged(&self, session: u64, what: &str, path: &str, outcome: &str) {
        info!(peer = %self.peer, session, %path, "{what}: {outcome}");
    }
}

/// The whole driver over an in-memory link on tokio's paused clock: since the machine takes
/// only the time the driver reads, every timer lands on the exact virtual instant.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chunkcast_protocol::wire::{Decoder, Hello, VERSION, encode};
    use chunkcast_transport::link;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const HANDSHAKE: Duration = Duration::from_secs(10);

    /// A raw client: writes frames, reads what the server sends.
    struct Client {
        io: DuplexStream,
        buf: BytesMut,
        decoder: Decoder,
        shared: Arc<Shared>,
        serving: JoinHandle<()>,
        start: Instant,
        _dir: tempfile::TempDir,
    }

    impl Client {
        async fn connect() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config::on(([127, 0, 0, 1], 0).into());
            config.limits.idle_timeout = IDLE;
            let library = Library::new(dir.path()).unwrap();
            let shared = Arc::new(Shared::new(config, library));
            let (io, server) = tokio::io::duplex(64 << 10);
            let wire = shared.config.limits.wire;
            let (tx, rx) = link::tcp(Box::new(server), wire, BytesMut::new());
            let start = Instant::now();
            let peer = "test".to_owned();
            let serving = tokio::spawn(serve(shared.clone(), tx, rx, peer, start + HANDSHAKE));
            Self {
                io,
                buf: BytesMut::new(),
                decoder: Decoder::default(),
                shared,
                serving,
                start,
                _dir: dir,
            }
        }

        async fn established() -> Self {
            let mut c = Self::connect().await;
            c.send(Frame::Hello(Hello {
                min_version: VERSION,
                max_version: VERSION,
                caps: Caps::default(),
                token: String::new(),
                client_name: "test".into(),
            }))
            .await;
            assert!(matches!(c.recv().await, Some(Frame::Welcome(_))));
            c
        }

        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            encode(&frame, &mut out);
            self.io.write_all(&out).await.unwrap();
        }

        /// The next frame, or `None` once the server closed the link.
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        }

        fn elapsed(&self) -> Duration {
            self.start.elapsed()
        }

        /// The server's side ends (and lets go of the link).
        async fn ended(mut self) {
            assert_eq!(self.recv().await, None, "the server closes the link");
            self.serving.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_then_dropped_at_the_idle_timeout() {
        let mut c = Client::established().await;
        for n in 1..=5 {
            let f = c.recv().await.unwrap();
            assert!(matches!(f, Frame::Ping { .. }), "{f:?}");
            assert_eq!(c.elapsed(), DEFAULT_PING_INTERVAL * n);
        }
        let f = c.recv().await.unwrap();
        assert!(
            matches!(
                &f,
                Frame::Goodbye {
                    code: ErrorCode::Timeout,
                    ..
                }
            ),
            "{f:?}"
        );
        assert_eq!(c.elapsed(), IDLE);
        c.ended().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_says_hello_is_refused_at_the_deadline() {
        let mut c = Client::connect().await;
        let f = c.recv().await.unwrap();
        assert!(
            matches!(&f, Frame::Error(e) if e.code == ErrorCode::Timeout && e.request == 0),
            "{f:?}"
        );
        assert_eq!(c.elapsed(), HANDSHAKE);
        c.ended().await;
    }

    #[tokio::test(start_paused = true)]
    async fn draining_refuses_new_streams_and_stopping_says_goodbye() {
        let mut c = Client::established().await;
        c.shared.draining.cancel();
        c.send(Frame::Subscribe {
            request: 1,
            stream: StreamId(1),
            channel: "live/cam".into(),
        })
        .await;
        let f = c.recv().await.unwrap();
        assert!(
            matches!(&f, Frame::Error(e)
                if e.request == 1 && e.code == ErrorCode::Busy
                    && e.message == "server is shutting down"),
            "{f:?}"
        );
        // Listings are still answered.
        c.send(Frame::List {
            request: 2,
            prefix: String::new(),
        })
        .await;
        let f = c.recv().await.unwrap();
        assert!(
            matches!(&f, Frame::Catalog(cat) if cat.request == 2 && cat.last),
            "{f:?}"
        );
        c.shared.stop.cancel();
        let f = c.recv().await.unwrap();
        assert!(
            matches!(&f, Frame::Goodbye { code: ErrorCode::None, message }
                if message == "server shutting down"),
            "{f:?}"
        );
        c.ended().await;
    }
}
