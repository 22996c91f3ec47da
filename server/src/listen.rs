//! Accept loops: TCP (plain or TLS, told apart by the first byte) and QUIC.
//!
//! Every connection is admitted against the connection limits first (refused ones get an
//! `ERROR` they can show, within a small budget of refusals in flight), then has one deadline,
//! [`crate::Limits::handshake_timeout`] from accept, for its first byte, TLS or QUIC setup and
//! the chunkcast handshake together.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::wire::{ErrorFrame, Frame, encode};
use chunkcast_transport::tcp::{self, Flavor};
use chunkcast_transport::{BoxedIo, link};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::conn::{self, Shared};
use crate::guard::{Guarded, Handle};
use crate::limit::{Admission, Admitted};
use crate::metrics::{HandshakeFailed, Metrics, Refused, Transport};

/// Refusals being delivered at once. Telling a refused client why costs a TLS or QUIC
/// handshake; past this many in flight (a flood), refused connections are just closed.
const REFUSALS_IN_FLIGHT: usize = 64;
/// Time one refusal may take, handshake and linger included.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read and discarded from a refused client before closing, so that its unread `HELLO`
/// does not turn the close into a reset that destroys the refusal before the client reads it.
const REFUSE_DRAIN: usize = 64 << 10;
/// How often a QUIC connection's traffic is added to the byte counters.
const QUIC_STATS_EVERY: Duration = Duration::from_secs(1);
/// Time a finished QUIC connection gives the client to read its last frames and close.
const QUIC_LINGER: Duration = Duration::from_secs(2);

/// The door: connection limits and the budget for refusing politely.
pub(crate) struct Gate {
    admission: Admission,
    refusing: Arc<Semaphore>,
}

impl Gate {
    /// The gate for `shared`'s limits.
    pub(crate) fn new(shared: &Shared) -> Self {
        let limits = &shared.config.limits;
        Self {
            admission: Admission::new(limits.max_connections, limits.max_connections_per_ip),
            refusing: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
        }
    }

    /// Takes a connection slot for `ip` (the web viewer's connections count too).
    pub(crate) fn admit(&self, ip: std::net::IpAddr) -> Result<Admitted, Refused> {
        self.admission.admit(ip)
    }
}

fn refusal_message(why: Refused, shared: &Shared) -> String {
    let limits = &shared.config.limits;
    match why {
        Refused::MaxConnections => format!(
            "server is at its connection limit ({}); try again later",
            limits.max_connections
        ),
        Refused::MaxConnectionsPerIp => format!(
            "too many connections from your address (limit {}); close some or try again later",
            limits.max_connections_per_ip
        ),
        Refused::Plaintext => "plain TCP is refused on this address: use tcps:// or quic:// (or start the server with --allow-plaintext)".to_owned(),
    }
}

/// The next TCP connection, or `None` once draining starts. Accept errors (EMFILE and
/// friends) back off rather than spin.
pub(crate) async fn next_tcp(
    listener: &TcpListener,
    shared: &Shared,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => return Some(v),
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shared.draining.cancelled() => return None,
        }
    }
}

/// Accepts TCP connections until draining starts.
pub(crate) async fn tcp_loop(
    listener: TcpListener,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    tracker: TaskTracker,
) {
    while let Some((sock, peer)) = next_tcp(&listener, &shared).await {
        let deadline = Instant::now() + shared.config.limits.handshake_timeout;
        let admitted = match gate.admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                shared.metrics.refused(why);
                let message = refusal_message(why, &shared);
                info!(%peer, "refused: {message}");
                let Ok(permit) = gate.refusing.clone().try_acquire_owned() else {
                    continue; // dropping the socket closes it
                };
                let tls = tls.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
                        let io: BoxedIo = match tcp::sniff(&sock, REFUSE_TIMEOUT).await {
                            Ok(Some(Flavor::Tls)) => Box::new(tls.accept(sock).await?),
                            Ok(Some(Flavor::Plain)) => Box::new(sock),
                            _ => return Ok(()),
                        };
                        refuse(io, ErrorCode::Busy, message).await
                    })
                    .await;
                });
                continue;
            }
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            tcp_conn(sock, peer, tls, shared, deadline, admitted).await;
        });
    }
}

async fn tcp_conn(
    sock: TcpStream,
    peer: std::net::SocketAddr,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    deadline: Instant,
    admitted: Admitted,
) {
    let _admitted = admitted;
    let _open = shared.metrics.connection_opened(Transport::Tcp);
    let metrics = &shared.metrics;
    let _ = tcp::configure(&sock);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let flavor = match tcp::sniff(&sock, remaining).await {
        Ok(Some(f)) => f,
        Ok(None) if Instant::now() >= deadline => {
            debug!(%peer, "no first byte within the handshake timeout");
            metrics.handshake_failed(HandshakeFailed::Refused(ErrorCode::Timeout));
            return;
        }
        Ok(None) | Err(_) => {
            metrics.handshake_failed(HandshakeFailed::Closed);
            return;
        }
    };
    if flavor == Flavor::Plain
        && !peer.ip().is_loopback()
        && shared.config.exposed()
        && !shared.config.allow_plaintext
    {
        metrics.refused(Refused::Plaintext);
        let message = refusal_message(Refused::Plaintext, &shared);
        info!(%peer, "refused: {message}");
        let refusal = refuse(Box::new(sock), ErrorCode::Unauthorized, message);
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, refusal).await;
        return;
    }
    let idle = shared.config.limits.idle_timeout;
    let (guarded, handle) = Guarded::new(sock, idle, metrics.clone());
    let io: BoxedIo = match flavor {
        Flavor::Tls => match tokio::time::timeout_at(deadline, tls.accept(guarded)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => {
                debug!(%peer, "TLS handshake failed: {e}");
                metrics.handshake_failed(HandshakeFailed::Tls);
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                metrics.handshake_failed(HandshakeFailed::Refused(ErrorCode::Timeout));
                return;
            }
        },
        Flavor::Plain => Box::new(guarded),
    };
    serve_io(shared, io, handle, peer.to_string(), deadline).await;
}

/// Serves a byte stream (TCP or TLS after accept, or the fuzzer's in-memory pipe) until the
/// connection is over, then makes sure nothing of it outlives [`crate::guard::LINGER`].
pub(crate) async fn serve_io(
    shared: Arc<Shared>,
    io: BoxedIo,
    handle: Handle,
    peer: String,
    deadline: Instant,
) {
    let (tx, rx) = link::tcp(io, shared.config.limits.wire, BytesMut::new());
    conn::serve(shared, tx, rx, peer, deadline).await;
    handle.close().await;
}

/// Tells a client it is refused, in a frame its handshake shows, then closes.
async fn refuse(mut io: BoxedIo, code: ErrorCode, message: String) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    encode(
        &Frame::Error(ErrorFrame {
            request: 0,
            code,
            message,
        }),
        &mut out,
    );
    io.write_all(&out).await?;
    io.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSE_DRAIN {
        match io.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

/// Accepts QUIC connections until draining starts.
pub(crate) async fn quic_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
            () = shared.draining.cancelled() => return,
        };
        let peer = incoming.remote_address();
        // Under pressure, make a client prove its address (a Retry round trip) before it
        // counts against that address's limit: otherwise spoofed Initials could use up a
        // victim's connections.
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && gate.admission.under_pressure(peer.ip())
        {
            let _ = incoming.retry();
            continue;
        }
        let deadline = Instant::now() + shared.config.limits.handshake_timeout;
        let admitted = match gate.admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                shared.metrics.refused(why);
                let message = refusal_message(why, &shared);
                info!(%peer, "refused: {message}");
                let Ok(permit) = gate.refusing.clone().try_acquire_owned() else {
                    incoming.refuse();
                    continue;
                };
                tracker.spawn(async move {
                    let _permit = permit;
                    let _ =
                        tokio::time::timeout(REFUSE_TIMEOUT, refuse_quic(incoming, message)).await;
                });
                continue;
            }
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            quic_conn(incoming, shared, deadline, admitted).await;
        });
    }
}

async fn quic_conn(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    deadline: Instant,
    admitted: Admitted,
) {
    let _admitted = admitted;
    let metrics = shared.metrics.clone();
    let _open = metrics.connection_opened(Transport::Quic);
    let peer = incoming.remote_address();
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(%peer, "QUIC setup failed: {e}");
            metrics.handshake_failed(HandshakeFailed::Quic);
            return;
        }
        Err(_) => {
            debug!(%peer, "QUIC setup timed out");
            metrics.handshake_failed(HandshakeFailed::Refused(ErrorCode::Timeout));
            return;
        }
    };
    let mut traffic = QuicTraffic::new(&metrics);
    let (send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            debug!(%peer, "QUIC connection closed before its control stream: {e}");
            metrics.handshake_failed(HandshakeFailed::Closed);
            traffic.add(&conn);
            return;
        }
        Err(_) => {
            debug!(%peer, "no control stream within the handshake timeout");
            metrics.handshake_failed(HandshakeFailed::Refused(ErrorCode::Timeout));
            conn.close(quic_code(ErrorCode::Timeout), b"no control stream in time");
            traffic.add(&conn);
            return;
        }
    };
    let (tx, rx) = link::quic(conn.clone(), send, recv, shared.config.limits.wire);
    let serving = conn::serve(shared, tx, rx, peer.to_string(), deadline);
    tokio::pin!(serving);
    let mut tick = tokio::time::interval(QUIC_STATS_EVERY);
    loop {
        tokio::select! {
            () = &mut serving => break,
            _ = tick.tick() => traffic.add(&conn),
        }
    }
    // Give the client a moment to read the last frames, then close: the link's tasks hold
    // the connection open otherwise.
    let _ = tokio::time::timeout(QUIC_LINGER, conn.closed()).await;
    conn.close(quic_code(ErrorCode::None), b"");
    traffic.add(&conn);
}

/// The chunkcast error code as a QUIC application close code.
fn quic_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(u32::from(code.to_u16()))
}

/// Adds a QUIC connection's UDP traffic to the byte counters as it grows.
struct QuicTraffic {
    sent: prometheus_client::metrics::counter::Counter,
    received: prometheus_client::metrics::counter::Counter,
    seen: (u64, u64),
}

impl QuicTraffic {
    fn new(metrics: &Metrics) -> Self {
        let (sent, received) = metrics.byte_counters(Transport::Quic);
        Self {
            sent,
            received,
            seen: (0, 0),
        }
    }

    fn add(&mut self, conn: &quinn::Connection) {
        let s = conn.stats();
        let now = (s.udp_tx.bytes, s.udp_rx.bytes);
        self.sent.inc_by(now.0.saturating_sub(self.seen.0));
        self.received.inc_by(now.1.saturating_sub(self.seen.1));
        self.seen = now;
    }
}

/// Completes a refused client's QUIC handshake to tell it why, in an `ERROR` on its control
/// stream, then closes.
async fn refuse_quic(incoming: quinn::Incoming, message: String) {
    let Ok(conn) = incoming.await else {
        return;
    };
    if let Ok((mut send, _recv)) = conn.accept_bi().await {
        let mut out = BytesMut::new();
        let code = ErrorCode::Busy;
        encode(
            &Frame::Error(ErrorFrame {
                request: 0,
                code,
                message,
            }),
            &mut out,
        );
        if send.write_all(&out).await.is_ok() && send.finish().is_ok() {
            let _ = send.stopped().await;
        }
    }
    conn.close(quic_code(ErrorCode::Busy), b"busy");
}
