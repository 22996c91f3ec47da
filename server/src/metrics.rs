//! What the server counts, and the tiny HTTP responder that serves it (`--metrics ADDR`,
//! `GET /metrics`, the Prometheus/OpenMetrics text format).
//!
//! Every metric is named `chunkcast_*`; SECURITY.md and the README list them. Counting is an
//! atomic add on a handle taken once, so the data path pays nothing measurable.

use std::sync::Arc;
use std::time::Duration;

use chunkcast_protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Scrapes served at once; more wait in the listen backlog. A scrape takes microseconds, so a
/// few slots serve any real Prometheus while a flood of idle sockets cannot pile up tasks.
const HTTP_SLOTS: usize = 8;
/// Time one scrape may take, reading the request included: a client that connects and
/// sends nothing holds a slot this long at most.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 << 10;
/// The content type of what `prometheus_client::encoding::text` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The TCP port, plain or TLS.
    Tcp,
    /// QUIC.
    Quic,
}

/// Why a connection was refused before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` reached.
    MaxConnections,
    /// `max_connections_per_ip` reached.
    MaxConnectionsPerIp,
    /// Plain TCP on an exposed address without `--allow-plaintext`.
    Plaintext,
}

/// Why a connection never got past its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailed {
    /// The peer closed before a `HELLO`.
    Closed,
    /// TLS failed (not TLS, bad ClientHello, no common parameters).
    Tls,
    /// QUIC's setup failed (before the control stream).
    Quic,
    /// The chunkcast handshake was refused with this code (timeout, unauthorized, ...).
    Refused(ErrorCode),
}

/// Why the server closed an established connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The client was silent past the idle timeout.
    IdleTimeout,
    /// The client took none of the bytes sent to it for the idle timeout.
    WriteStall,
    /// The client kept sending requests over its rate.
    RateLimit,
    /// The client sent bytes that do not decode, or a frame out of place.
    Protocol,
    /// The client sent a frame above the size limits.
    TooLarge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

impl Transport {
    fn label(self) -> TransportLabel {
        let transport = match self {
            Self::Tcp => "tcp",
            Self::Quic => "quic",
        };
        TransportLabel { transport }
    }
}

impl Refused {
    fn label(self) -> ReasonLabel {
        let reason = match self {
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerIp => "max_connections_per_ip",
            Self::Plaintext => "plaintext",
        };
        ReasonLabel { reason }
    }
}

impl HandshakeFailed {
    fn label(self) -> ReasonLabel {
        let reason = match self {
            Self::Closed => "closed",
            Self::Tls => "tls",
            Self::Quic => "quic",
            Self::Refused(code) => code.label(),
        };
        ReasonLabel { reason }
    }
}

impl Dropped {
    fn label(self) -> ReasonLabel {
        let reason = match self {
            Self::IdleTimeout => "idle_timeout",
            Self::WriteStall => "write_stall",
            Self::RateLimit => "rate_limit",
            Self::Protocol => "protocol",
            Self::TooLarge => "too_large",
        };
        ReasonLabel { reason }
    }
}

/// The server's counters and gauges; one per server, shared by every connection.
pub(crate) struct Metrics {
    registry: Registry,
    connections_open: Family<TransportLabel, Gauge>,
    connections: Family<TransportLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
    drops: Family<ReasonLabel, Counter>,
    errors: Family<CodeLabel, Counter>,
    bytes_sent: Family<TransportLabel, Counter>,
    bytes_received: Family<TransportLabel, Counter>,
    chunks_sent: Counter,
    chunk_bytes_sent: Counter,
    chunk_bytes_from_file: Counter,
    streams_open: Gauge,
    streams: Counter,
    requests_limited: Counter,
    live_channels: Gauge,
    live_viewers: Gauge,
    live_evicted: Counter,
    live_relays: Gauge,
    live_relay_bytes: Counter,
    edge_upstreams: Gauge,
    edge_upstream_bytes: Counter,
    edge_upstream_lag_ms: Gauge,
    http_requests: Family<HttpLabel, Counter>,
    http_bytes: Family<RouteLabel, Counter>,
    http_blocked_now: Gauge,
    http_blocked: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabel {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The metrics the live-channel registry keeps up to date itself.
#[derive(Clone)]
pub(crate) struct LiveGauges {
    /// Entries in the channel table.
    pub(crate) channels: Gauge,
    /// Subscriptions running, waiting ones included.
    pub(crate) viewers: Gauge,
    /// Publishers replaced by a new publisher of their channel.
    pub(crate) evicted: Counter,
    /// Subscriptions from edge relays now (of [`LiveGauges::viewers`]).
    pub(crate) relays: Gauge,
    /// Payload bytes sent to edge relays: what this server, as an origin, sends its edges.
    pub(crate) relay_bytes: Counter,
    /// This edge's upstream subscriptions now, reconnecting ones included.
    pub(crate) upstreams: Gauge,
    /// Payload bytes this edge received from its origins.
    pub(crate) upstream_bytes: Counter,
    /// How far behind real time the last chunk from upstream came, in milliseconds.
    pub(crate) upstream_lag_ms: Gauge,
}

impl Metrics {
    /// Registers every metric, with each label value that can occur already at 0, so that a
    /// scrape shows the full set from the start.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("chunkcast");
        let m = Self {
            connections_open: Family::default(),
            connections: Family::default(),
            refused: Family::default(),
            handshake_failures: Family::default(),
            drops: Family::default(),
            errors: Family::default(),
            bytes_sent: Family::default(),
            bytes_received: Family::default(),
            chunks_sent: Counter::default(),
            chunk_bytes_sent: Counter::default(),
            chunk_bytes_from_file: Counter::default(),
            streams_open: Gauge::default(),
            streams: Counter::default(),
            requests_limited: Counter::default(),
            live_channels: Gauge::default(),
            live_viewers: Gauge::default(),
            live_evicted: Counter::default(),
            live_relays: Gauge::default(),
            live_relay_bytes: Counter::default(),
            edge_upstreams: Gauge::default(),
            edge_upstream_bytes: Counter::default(),
            edge_upstream_lag_ms: Gauge::default(),
            http_requests: Family::default(),
            http_bytes: Family::default(),
            http_blocked_now: Gauge::default(),
            http_blocked: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_open",
            "Connections open now, handshaking ones included",
            m.connections_open.clone(),
        );
        r.register(
            "connections",
            "Connections accepted (past the connection limits)",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused by a limit or policy, by reason",
            m.refused.clone(),
        );
        r.register(
            "handshake_failures",
            "Connections that never completed the handshake, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "connections_dropped",
            "Established connections the server closed on its own, by reason",
            m.drops.clone(),
        );
        r.register(
            "errors_sent",
            "ERROR, CLOSE and GOODBYE frames sent with an error code, by code",
            m.errors.clone(),
        );
        r.register(
            "bytes_sent",
            "Bytes written to clients, transport overhead (TLS, QUIC) included",
            m.bytes_sent.clone(),
        );
        r.register(
            "bytes_received",
            "Bytes read from clients, transport overhead (TLS, QUIC) included",
            m.bytes_received.clone(),
        );
        r.register(
            "chunks_sent",
            "Media chunks handed to the transport",
            m.chunks_sent.clone(),
        );
        r.register(
            "chunk_payload_bytes_sent",
            "Payload bytes of the media chunks handed to the transport",
            m.chunk_bytes_sent.clone(),
        );
        r.register(
            "chunk_payload_bytes_sendfile",
            "Of those, bytes the kernel sent from the page cache (sendfile: verified downloads on plain TCP)",
            m.chunk_bytes_from_file.clone(),
        );
        r.register(
            "streams_open",
            "Media streams open now",
            m.streams_open.clone(),
        );
        r.register("streams", "Media streams opened", m.streams.clone());
        r.register(
            "requests_rate_limited",
            "Requests refused because their connection was over its request rate",
            m.requests_limited.clone(),
        );
        r.register(
            "live_channels",
            "Live channels and call tracks in the channel table now: published, lingering after \
             their publisher left, or awaited by subscribers",
            m.live_channels.clone(),
        );
        r.register(
            "live_viewers",
            "Subscriptions to live channels and call tracks now, those waiting for a publisher \
             included",
            m.live_viewers.clone(),
        );
        r.register(
            "live_publishers_evicted",
            "Live publishers replaced by a new publisher of their channel (a takeover)",
            m.live_evicted.clone(),
        );
        r.register(
            "live_relay_viewers",
            "Subscriptions from edge relays now (one per channel per edge), of live_viewers",
            m.live_relays.clone(),
        );
        r.register(
            "live_relay_payload_bytes",
            "Payload bytes of the live chunks sent to edge relays (an origin's output to its edges)",
            m.live_relay_bytes.clone(),
        );
        r.register(
            "edge_upstreams",
            "Upstream subscriptions this edge holds at its origins now, reconnecting ones              included",
            m.edge_upstreams.clone(),
        );
        r.register(
            "edge_upstream_payload_bytes",
            "Payload bytes this edge received from its origins",
            m.edge_upstream_bytes.clone(),
        );
        r.register(
            "edge_upstream_lag_ms",
            "How far behind real time the latest chunk from upstream arrived, in milliseconds              (wall time since the upstream subscription minus media time)",
            m.edge_upstream_lag_ms.clone(),
        );
        r.register(
            "http_requests",
            "Requests the HTTP interface answered, by route and status (behind a cache: what \
             reached the origin)",
            m.http_requests.clone(),
        );
        r.register(
            "http_body_bytes_sent",
            "Response body bytes the HTTP interface sent, by route",
            m.http_bytes.clone(),
        );
        r.register(
            "http_blocked_now",
            "HTTP requests for live chunks not yet published, waiting now",
            m.http_blocked_now.clone(),
        );
        r.register(
            "http_blocked_waits",
            "HTTP requests for live chunks that had to wait for them",
            m.http_blocked.clone(),
        );
        for route in crate::http::Route::ALL {
            let _ = m.http_bytes.get_or_create(&RouteLabel {
                route: route.label(),
            });
        }
        for t in [Transport::Tcp, Transport::Quic] {
            let _ = m.connections_open.get_or_create(&t.label());
            let _ = m.connections.get_or_create(&t.label());
            let _ = m.bytes_sent.get_or_create(&t.label());
            let _ = m.bytes_received.get_or_create(&t.label());
        }
        for r in [
            Refused::MaxConnections,
            Refused::MaxConnectionsPerIp,
            Refused::Plaintext,
        ] {
            let _ = m.refused.get_or_create(&r.label());
        }
        for d in [
            Dropped::IdleTimeout,
            Dropped::WriteStall,
            Dropped::RateLimit,
            Dropped::Protocol,
            Dropped::TooLarge,
        ] {
            let _ = m.drops.get_or_create(&d.label());
        }
        Self { registry, ..m }
    }

    /// The metrics in the text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A connection was admitted; the gauge goes down when the returned guard drops.
    pub(crate) fn connection_opened(&self, transport: Transport) -> OpenGuard {
        self.connections.get_or_create(&transport.label()).inc();
        let gauge = self
            .connections_open
            .get_or_create_owned(&transport.label());
        gauge.inc();
        OpenGuard(gauge)
    }

    /// A connection was refused.
    pub(crate) fn refused(&self, why: Refused) {
        self.refused.get_or_create(&why.label()).inc();
    }

    /// A connection failed its handshake.
    pub(crate) fn handshake_failed(&self, why: HandshakeFailed) {
        self.handshake_failures.get_or_create(&why.label()).inc();
    }

    /// The server closed an established connection.
    pub(crate) fn dropped(&self, why: Dropped) {
        self.drops.get_or_create(&why.label()).inc();
    }

    /// An error code went to a client.
    pub(crate) fn error_sent(&self, code: ErrorCode) {
        if code != ErrorCode::None {
            self.errors
                .get_or_create(&CodeLabel { code: code.label() })
                .inc();
        }
    }

    /// A request was refused for its connection's rate.
    pub(crate) fn request_limited(&self) {
        self.requests_limited.inc();
    }

    /// Handles on the live-channel gauges, for the registry that maintains them.
    pub(crate) fn live_gauges(&self) -> LiveGauges {
        LiveGauges {
            channels: self.live_channels.clone(),
            viewers: self.live_viewers.clone(),
            evicted: self.live_evicted.clone(),
            relays: self.live_relays.clone(),
            relay_bytes: self.live_relay_bytes.clone(),
            upstreams: self.edge_upstreams.clone(),
            upstream_bytes: self.edge_upstream_bytes.clone(),
            upstream_lag_ms: self.edge_upstream_lag_ms.clone(),
        }
    }

    /// The counters a byte stream adds its traffic to.
    pub(crate) fn byte_counters(&self, transport: Transport) -> (Counter, Counter) {
        (
            self.bytes_sent.get_or_create_owned(&transport.label()),
            self.bytes_received.get_or_create_owned(&transport.label()),
        )
    }

    /// A media stream started; the gauge goes down when the returned guard drops (however
    /// the stream ends, an abort included).
    pub(crate) fn stream_opened(&self) -> OpenGuard {
        self.streams.inc();
        self.streams_open.inc();
        OpenGuard(self.streams_open.clone())
    }

    /// One media chunk of `payload_len` bytes went to the transport.
    /// One HTTP request answered on `route` with `status` and `bytes` of body.
    pub(crate) fn http_request(&self, route: &'static str, status: u16, bytes: u64) {
        self.http_requests
            .get_or_create(&HttpLabel { route, status })
            .inc();
        self.http_bytes
            .get_or_create(&RouteLabel { route })
            .inc_by(bytes);
    }

    /// An HTTP request starts waiting for a live chunk: counted, and held in the gauge
    /// until the guard drops.
    pub(crate) fn http_blocked(&self) -> OpenGuard {
        self.http_blocked.inc();
        self.http_blocked_now.inc();
        OpenGuard(self.http_blocked_now.clone())
    }

    pub(crate) fn chunk_sent(&self, payload_len: usize, from_file: bool) {
        self.chunks_sent.inc();
        self.chunk_bytes_sent.inc_by(payload_len as u64);
        if from_file {
            self.chunk_bytes_from_file.inc_by(payload_len as u64);
        }
    }
}

/// Holds a gauge up by one while alive.
#[must_use]
pub(crate) struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

tokio::task_local! {
    static CURRENT: Arc<Metrics>;
    /// Payload bytes the current stream task has handed to the transport, for its log line.
    static SENT: std::cell::Cell<u64>;
}

/// Runs a stream task and returns, with its output, the payload bytes it sent (what
/// [`chunk_sent`] counted inside it).
pub(crate) async fn counted<F: Future>(task: F) -> (F::Output, u64) {
    SENT.scope(std::cell::Cell::new(0), async {
        let out = task.await;
        (out, SENT.with(std::cell::Cell::get))
    })
    .await
}

/// Runs a stream task with `metrics` as the one [`chunk_sent`] counts into.
pub(crate) fn scope<F: Future>(metrics: Arc<Metrics>, task: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(metrics, task)
}

/// Counts one media chunk of `payload_len` bytes handed to the transport by the current
/// stream task (see [`scope`]); does nothing outside one. The stream code calls this so that
/// it needs no handle of its own.
/// `from_file`: its payload goes from the page cache (`sendfile`), not from memory.
pub(crate) fn chunk_sent(payload_len: usize, from_file: bool) {
    let _ = CURRENT.try_with(|m| m.chunk_sent(payload_len, from_file));
    let _ = SENT.try_with(|s| s.set(s.get() + payload_len as u64));
}

/// Answers scrapes on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(HTTP_SLOTS));
    loop {
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    debug!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        // Wait for a slot rather than refuse: scrapes are short.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(HTTP_TIMEOUT, respond(sock, &metrics)).await;
        });
    }
}

/// Reads one request head and answers it; `GET /metrics` (or `HEAD`) is the only resource.
async fn respond(mut sock: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head_complete(&head) && head.len() < MAX_REQUEST_HEAD {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, metrics.encode()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    sock.write_all(response.as_bytes()).await?;
    sock.shutdown().await
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_as_documented() {
        let m = Metrics::new();
        m.refused(Refused::MaxConnectionsPerIp);
        m.error_sent(ErrorCode::Busy);
        m.error_sent(ErrorCode::None);
        m.handshake_failed(HandshakeFailed::Refused(ErrorCode::UnsupportedVersion));
        m.chunk_sent(100, false);
        let guard = m.stream_opened();
        let text = m.encode();
        for want in [
            "chunkcast_connections_refused_total{reason=\"max_connections_per_ip\"} 1",
            "chunkcast_connections_refused_total{reason=\"plaintext\"} 0",
            "chunkcast_errors_sent_total{code=\"busy\"} 1",
            "chunkcast_handshake_failures_total{reason=\"unsupported_version\"} 1",
            "chunkcast_chunks_sent_total 1",
            "chunkcast_chunk_payload_bytes_sent_total 100",
            "chunkcast_streams_open 1",
            "chunkcast_streams_total 1",
            "chunkcast_connections_open{transport=\"quic\"} 0",
            "chunkcast_connections_dropped_total{reason=\"write_stall\"} 0",
            "chunkcast_live_channels 0",
            "chunkcast_live_viewers 0",
            "chunkcast_live_publishers_evicted_total 0",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(!text.contains("code=\"none\""));
        drop(guard);
        assert!(m.encode().contains("chunkcast_streams_open 0"));
    }

    #[tokio::test]
    async fn chunk_sent_counts_inside_a_scope_only() {
        let m = Arc::new(Metrics::new());
        chunk_sent(5, false);
        scope(m.clone(), async { chunk_sent(7, false) }).await;
        assert_eq!(m.chunks_sent.get(), 1);
        assert_eq!(m.chunk_bytes_sent.get(), 7);
    }
}
