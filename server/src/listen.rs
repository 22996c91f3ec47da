//! The server's door policy, and the one loop that serves what the transport crate accepts.
//!
//! The accept loops themselves (TCP with its plain/TLS demux, QUIC, the web viewer's
//! WebSocket upgrades) are `chunkcast_transport::accept`'s; they ask [`Policy`] whom to admit
//! (the connection limits; plain TCP on an exposed address), and hand every connection set up
//! to [`serve_accepted`], which runs [`conn::serve`] on it whatever its transport.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::ErrorCode;
use chunkcast_transport::accept::{
    self, Accepted, Acceptor, Ending, Gate, Port, Refusal, SetupFailure,
};
use chunkcast_transport::{BoxedIo, link};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::conn::{self, Shared};
use crate::guard::{Guarded, Handle};
use crate::limit::{Admission, Admitted};
use crate::metrics::{HandshakeFailed, Metrics, OpenGuard, Refused, Transport};

/// How often a QUIC connection's traffic is added to the byte counters.
const QUIC_STATS_EVERY: Duration = Duration::from_secs(1);

/// The server's door: the connection limits, plain TCP's rule, and the books kept on both.
pub(crate) struct Policy {
    shared: Arc<Shared>,
    admission: Admission,
}

/// An admitted connection's slot in the limits and in the open-connections gauge.
pub(crate) struct Permit {
    _admitted: Admitted,
    _open: OpenGuard,
}

impl Policy {
    /// The policy for `shared`'s limits.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let limits = &shared.config.limits;
        let admission = Admission::new(limits.max_connections, limits.max_connections_per_ip);
        Self { shared, admission }
    }

    fn refusal(&self, why: Refused, code: ErrorCode) -> Refusal {
        self.shared.metrics.refused(why);
        Refusal {
            code,
            message: refusal_message(why, &self.shared),
        }
    }
}

impl Gate for Policy {
    type Permit = Permit;
    type Stream = Guarded<TcpStream>;
    type Guard = Handle;

    fn admit(&self, ip: IpAddr, port: Port) -> Result<Permit, Refusal> {
        let admitted = self
            .admission
            .admit(ip)
            .map_err(|why| self.refusal(why, ErrorCode::Busy))?;
        let transport = match port {
            Port::Tcp | Port::Web => Transport::Tcp,
            Port::Quic => Transport::Quic,
        };
        Ok(Permit {
            _admitted: admitted,
            _open: self.shared.metrics.connection_opened(transport),
        })
    }

    fn admit_plain(&self, peer: SocketAddr) -> Result<(), Refusal> {
        let config = &self.shared.config;
        if !peer.ip().is_loopback() && config.exposed() && !config.allow_plaintext {
            return Err(self.refusal(Refused::Plaintext, ErrorCode::Unauthorized));
        }
        Ok(())
    }

    fn under_pressure(&self, ip: IpAddr) -> bool {
        self.admission.under_pressure(ip)
    }

    fn guard(&self, sock: TcpStream) -> (Guarded<TcpStream>, Handle) {
        let idle = self.shared.config.limits.idle_timeout;
        Guarded::new(sock, idle, self.shared.metrics.clone())
    }

    fn setup_failed(&self, why: SetupFailure, quic: Option<&quinn::Connection>) {
        let why = match why {
            SetupFailure::Timeout => HandshakeFailed::Refused(ErrorCode::Timeout),
            SetupFailure::Closed => HandshakeFailed::Closed,
            SetupFailure::Tls => HandshakeFailed::Tls,
            SetupFailure::Quic => HandshakeFailed::Quic,
        };
        self.shared.metrics.handshake_failed(why);
        if let Some(conn) = quic {
            QuicTraffic::new(&self.shared.metrics).add(conn);
        }
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

/// The server's listeners, for [`start`].
pub(crate) struct Listeners {
    /// The TCP port (plain and TLS).
    pub(crate) tcp: TcpListener,
    /// TLS for the TCP port.
    pub(crate) tls: TlsAcceptor,
    /// The QUIC endpoint.
    pub(crate) quic: quinn::Endpoint,
    /// The web viewer's HTTP port, if `--web` was given.
    pub(crate) web: Option<TcpListener>,
}

/// Starts accepting on every listener through one [`Policy`], and serving what is accepted,
/// until draining starts; every connection runs on `tracker`. Returns the policy, for the
/// HTTP interface's door (one budget of connections for every transport).
pub(crate) fn start(
    shared: &Arc<Shared>,
    listeners: Listeners,
    tracker: &TaskTracker,
) -> Arc<Policy> {
    let limits = &shared.config.limits;
    let policy = Arc::new(Policy::new(shared.clone()));
    let (acceptor, accepted) = Acceptor::new(
        policy.clone(),
        listeners.tls,
        limits.wire,
        limits.handshake_timeout,
        shared.draining.clone(),
        tracker.clone(),
    );
    tokio::spawn(acceptor.clone().tcp(listeners.tcp));
    tokio::spawn(acceptor.clone().quic(listeners.quic));
    if let Some(web) = listeners.web {
        let shared = shared.clone();
        tokio::spawn(acceptor.http(web, move |acceptor, conn| {
            crate::web::conn(acceptor, conn, shared.clone())
        }));
    }
    // Tracked, so that shutdown waits for connections still being set up as it does for
    // those being served: the loop ends once every accept loop and set-up is over.
    tracker.spawn(serve_accepted(shared.clone(), accepted, tracker.clone()));
    policy
}

/// The one loop that serves: every accepted connection, whatever its transport.
async fn serve_accepted(
    shared: Arc<Shared>,
    mut accepted: mpsc::Receiver<Accepted<Policy>>,
    tracker: TaskTracker,
) {
    while let Some(a) = accepted.recv().await {
        tracker.spawn(serve_one(shared.clone(), a));
    }
}

async fn serve_one(shared: Arc<Shared>, a: Accepted<Policy>) {
    let _permit = a.permit;
    let peer = match a.transport {
        accept::Transport::WebSocket => format!("{} (web)", a.peer),
        _ => a.peer.to_string(),
    };
    match a.ending {
        Ending::Stream(handle) => {
            conn::serve(shared, a.tx, a.rx, peer, a.deadline).await;
            handle.close().await;
        }
        Ending::Quic(quic) => {
            let mut traffic = QuicTraffic::new(&shared.metrics);
            let serving = conn::serve(shared, a.tx, a.rx, peer, a.deadline);
            tokio::pin!(serving);
            let mut tick = tokio::time::interval(QUIC_STATS_EVERY);
            loop {
                tokio::select! {
                    () = &mut serving => break,
                    _ = tick.tick() => traffic.add(&quic),
                }
            }
            accept::finish_quic(&quic).await;
            traffic.add(&quic);
        }
    }
}

/// Serves a byte stream (the fuzzer's in-memory pipe) until the connection is over, then
/// makes sure nothing of it outlives [`crate::guard::LINGER`].
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
