//! The accepting side of every transport, with one admit/refuse [`Gate`].
//!
//! An [`Acceptor`] runs the accept loops: the TCP port (plain or TLS, told apart by the first
//! byte), the QUIC endpoint, and the HTTP port whose WebSocket upgrades become connections.
//! Each asks the server's [`Gate`] first, so one place decides who is let in; a refused
//! client is told why in an `ERROR` frame its handshake shows (within a small budget of
//! refusals in flight). Every admitted connection then has one deadline, the handshake
//! timeout from accept, for its first byte, TLS or QUIC setup and the chunkcast handshake
//! together, and arrives as one [`Accepted`] on one channel, so the server has one loop that
//! serves, whatever the transport.
//!
//! Nothing here knows the library, live channels or metrics: the gate is told what happened
//! and keeps its own books.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::wire::{ErrorFrame, Frame, Limits, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::link::{self, LinkRx, LinkTx};
use crate::tcp::{self, Flavor};
use crate::{BoxedIo, ws};

/// Refusals being delivered at once. Telling a refused client why costs a TLS or QUIC
/// handshake; past this many in flight (a flood), refused connections are just closed.
const REFUSALS_IN_FLIGHT: usize = 64;
/// Time one refusal may take, handshake and linger included.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read and discarded from a refused client before closing, so that its unread `HELLO`
/// does not turn the close into a reset that destroys the refusal before the client reads it.
const REFUSE_DRAIN: usize = 64 << 10;
/// Time a finished QUIC connection gives the client to read its last frames and close.
const QUIC_LINGER: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (EMFILE and friends), so that the loop backs off rather
/// than spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Admitted connections waiting for the server's serving loop.
const HANDOVER_QUEUE: usize = 64;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The TCP port (plain chunkcast or TLS).
    Tcp,
    /// The QUIC endpoint.
    Quic,
    /// The HTTP port of the browser viewer (pages and WebSocket upgrades).
    Web,
}

/// What an accepted connection runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain chunkcast frames over TCP.
    Plain,
    /// TLS over TCP.
    Tls,
    /// QUIC: a control stream, and a stream per media stream.
    Quic,
    /// A WebSocket, one binary message per frame.
    WebSocket,
}

/// Why the gate refuses a connection: the code and text its client is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `ERROR` frame's code.
    pub code: ErrorCode,
    /// What the client shows its user.
    pub message: String,
}

/// Why an admitted connection failed before it was handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFailure {
    /// Nothing (first byte, TLS, QUIC, control stream) within the handshake timeout.
    Timeout,
    /// The peer closed (or reset) before it was set up.
    Closed,
    /// The TLS handshake failed.
    Tls,
    /// QUIC's setup failed.
    Quic,
}

/// The server's door policy, which every accept path calls: who is admitted, what a
/// connection's byte stream is wrapped in, and what to record when set-up fails.
pub trait Gate: Send + Sync + 'static {
    /// Held for an admitted connection's whole life (its slot in the connection limits).
    type Permit: Send + 'static;
    /// A TCP socket as the server wants it read and written (byte counting, a stall bound).
    type Stream: crate::io::Io;
    /// The server's handle on a [`Gate::Stream`], kept while the link owns the stream.
    type Guard: Send + 'static;

    /// The one admit/refuse decision: a connection from `ip` arrived on `port`.
    fn admit(&self, ip: IpAddr, port: Port) -> Result<Self::Permit, Refusal>;
    /// Whether plain (unencrypted) chunkcast from `peer` is accepted on the TCP port.
    fn admit_plain(&self, peer: SocketAddr) -> Result<(), Refusal>;
    /// Whether `ip` should prove its address (a QUIC Retry) before it counts against the
    /// limits: under pressure, spoofed Initials could otherwise use up a victim's slots.
    fn under_pressure(&self, ip: IpAddr) -> bool;
    /// Wraps an admitted TCP socket.
    fn guard(&self, sock: TcpStream) -> (Self::Stream, Self::Guard);
    /// An admitted connection failed before it was handed over; `quic` is the QUIC
    /// connection, when there was one, for its traffic counters.
    fn setup_failed(&self, why: SetupFailure, quic: Option<&quinn::Connection>);
}

/// How an [`Accepted`] connection is wound up once served.
pub enum Ending<G> {
    /// A byte stream (plain, TLS, WebSocket): the server's guard on it.
    Stream(G),
    /// A QUIC connection: close it with [`finish_quic`] (the link's tasks hold it open).
    Quic(quinn::Connection),
}

/// A connection set up and ready for the chunkcast handshake.
pub struct Accepted<G: Gate> {
    /// Frames to the client.
    pub tx: LinkTx,
    /// Frames from the client.
    pub rx: LinkRx,
    /// The client's address.
    pub peer: SocketAddr,
    /// What it runs over.
    pub transport: Transport,
    /// When the handshake must be complete (the handshake timeout from accept).
    pub deadline: Instant,
    /// Its slot in the connection limits.
    pub permit: G::Permit,
    /// How to wind it up.
    pub ending: Ending<G::Guard>,
}

/// An admitted connection to the HTTP port, for the server to read its request from.
pub struct HttpConn<G: Gate> {
    /// The guarded socket.
    pub io: G::Stream,
    /// The server's handle on it.
    pub guard: G::Guard,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the request head (and, after an upgrade, the chunkcast handshake) must be done.
    pub deadline: Instant,
    /// Its slot in the connection limits.
    pub permit: G::Permit,
}

/// What the accept loops share: the gate, TLS, the limits, and the channel to the server.
pub struct Acceptor<G: Gate> {
    gate: Arc<G>,
    tls: TlsAcceptor,
    wire: Limits,
    handshake_timeout: Duration,
    draining: CancellationToken,
    tracker: TaskTracker,
    refusing: Arc<Semaphore>,
    out: mpsc::Sender<Accepted<G>>,
}

impl<G: Gate> Acceptor<G> {
    /// An acceptor admitting through `gate`, serving TLS with `tls` and links with `wire`
    /// limits; its loops stop accepting once `draining` is cancelled, and run every
    /// connection's set-up on `tracker`. The receiver yields every connection set up, until
    /// the loops and set-ups are all over.
    pub fn new(
        gate: Arc<G>,
        tls: TlsAcceptor,
        wire: Limits,
        handshake_timeout: Duration,
        draining: CancellationToken,
        tracker: TaskTracker,
    ) -> (Arc<Self>, mpsc::Receiver<Accepted<G>>) {
        let (out, accepted) = mpsc::channel(HANDOVER_QUEUE);
        let acceptor = Self {
            gate,
            tls,
            wire,
            handshake_timeout,
            draining,
            tracker,
            refusing: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
            out,
        };
        (Arc::new(acceptor), accepted)
    }

    /// The next TCP connection, or `None` once draining starts.
    async fn next_tcp(&self, listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(v) => return Some(v),
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                () = self.draining.cancelled() => return None,
            }
        }
    }

    async fn hand_over(&self, accepted: Accepted<G>) {
        // The server's loop is gone only when the server is: dropping the connection
        // closes it.
        let _ = self.out.send(accepted).await;
    }

    /// Accepts on the TCP port until draining starts.
    pub async fn tcp(self: Arc<Self>, listener: TcpListener) {
        while let Some((sock, peer)) = self.next_tcp(&listener).await {
            let deadline = Instant::now() + self.handshake_timeout;
            match self.gate.admit(peer.ip(), Port::Tcp) {
                Ok(permit) => {
                    let this = self.clone();
                    self.tracker
                        .spawn(async move { this.tcp_conn(sock, peer, deadline, permit).await });
                }
                Err(refusal) => self.refuse_tcp(sock, peer, refusal),
            }
        }
    }

    fn refuse_tcp(&self, sock: TcpStream, peer: SocketAddr, refusal: Refusal) {
        info!(%peer, "refused: {}", refusal.message);
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            return; // dropping the socket closes it
        };
        let tls = self.tls.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
                let io: BoxedIo = match tcp::sniff(&sock, REFUSE_TIMEOUT).await {
                    Ok(Some(Flavor::Tls)) => Box::new(tls.accept(sock).await?),
                    Ok(Some(Flavor::Plain)) => Box::new(sock),
                    _ => return Ok(()),
                };
                refuse(io, refusal).await
            })
            .await;
        });
    }

    async fn tcp_conn(
        self: Arc<Self>,
        sock: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
        permit: G::Permit,
    ) {
        let _ = tcp::configure(&sock);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let flavor = match tcp::sniff(&sock, remaining).await {
            Ok(Some(f)) => f,
            Ok(None) if Instant::now() >= deadline => {
                debug!(%peer, "no first byte within the handshake timeout");
                self.gate.setup_failed(SetupFailure::Timeout, None);
                return;
            }
            Ok(None) | Err(_) => {
                self.gate.setup_failed(SetupFailure::Closed, None);
                return;
            }
        };
        if flavor == Flavor::Plain {
            if let Err(refusal) = self.gate.admit_plain(peer) {
                info!(%peer, "refused: {}", refusal.message);
                let _ = tokio::time::timeout(REFUSE_TIMEOUT, refuse(Box::new(sock), refusal)).await;
                return;
            }
        }
        let (stream, guard) = self.gate.guard(sock);
        let (io, transport): (BoxedIo, _) = match flavor {
            Flavor::Tls => match tokio::time::timeout_at(deadline, self.tls.accept(stream)).await {
                Ok(Ok(s)) => (Box::new(s), Transport::Tls),
                Ok(Err(e)) => {
                    debug!(%peer, "TLS handshake failed: {e}");
                    self.gate.setup_failed(SetupFailure::Tls, None);
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    self.gate.setup_failed(SetupFailure::Timeout, None);
                    return;
                }
            },
            Flavor::Plain => (Box::new(stream), Transport::Plain),
        };
        let (tx, rx) = link::tcp(io, self.wire, BytesMut::new());
        self.hand_over(Accepted {
            tx,
            rx,
            peer,
            transport,
            deadline,
            permit,
            ending: Ending::Stream(guard),
        })
        .await;
    }

    /// Accepts on the QUIC endpoint until draining starts (or the endpoint closes).
    pub async fn quic(self: Arc<Self>, endpoint: quinn::Endpoint) {
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => match i {
                    Some(i) => i,
                    None => return,
                },
                () = self.draining.cancelled() => return,
            };
            let peer = incoming.remote_address();
            if !incoming.remote_address_validated()
                && incoming.may_retry()
                && self.gate.under_pressure(peer.ip())
            {
                let _ = incoming.retry();
                continue;
            }
            let deadline = Instant::now() + self.handshake_timeout;
            match self.gate.admit(peer.ip(), Port::Quic) {
                Ok(permit) => {
                    let this = self.clone();
                    self.tracker
                        .spawn(async move { this.quic_conn(incoming, deadline, permit).await });
                }
                Err(refusal) => {
                    info!(%peer, "refused: {}", refusal.message);
                    let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
                        incoming.refuse();
                        continue;
                    };
                    self.tracker.spawn(async move {
                        let _permit = permit;
                        let _ =
                            tokio::time::timeout(REFUSE_TIMEOUT, refuse_quic(incoming, refusal))
                                .await;
                    });
                }
            }
        }
    }

    async fn quic_conn(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        deadline: Instant,
        permit: G::Permit,
    ) {
        let peer = incoming.remote_address();
        let conn = match tokio::time::timeout_at(deadline, incoming).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(%peer, "QUIC setup failed: {e}");
                self.gate.setup_failed(SetupFailure::Quic, None);
                return;
            }
            Err(_) => {
                debug!(%peer, "QUIC setup timed out");
                self.gate.setup_failed(SetupFailure::Timeout, None);
                return;
            }
        };
        let (send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                debug!(%peer, "QUIC connection closed before its control stream: {e}");
                self.gate.setup_failed(SetupFailure::Closed, Some(&conn));
                return;
            }
            Err(_) => {
                debug!(%peer, "no control stream within the handshake timeout");
                conn.close(quic_code(ErrorCode::Timeout), b"no control stream in time");
                self.gate.setup_failed(SetupFailure::Timeout, Some(&conn));
                return;
            }
        };
        let (tx, rx) = link::quic(conn.clone(), send, recv, self.wire);
        self.hand_over(Accepted {
            tx,
            rx,
            peer,
            transport: Transport::Quic,
            deadline,
            permit,
            ending: Ending::Quic(conn),
        })
        .await;
    }

    /// Accepts on the HTTP port until draining starts, handing each admitted connection to
    /// `serve` (which reads its request and, for a WebSocket, calls
    /// [`Acceptor::websocket`]). A refused one is closed: a browser shows a failed WebSocket
    /// as closed, and the page says so.
    pub async fn http<F, Fut>(self: Arc<Self>, listener: TcpListener, serve: F)
    where
        F: Fn(Arc<Self>, HttpConn<G>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        while let Some((sock, peer)) = self.next_tcp(&listener).await {
            let deadline = Instant::now() + self.handshake_timeout;
            let permit = match self.gate.admit(peer.ip(), Port::Web) {
                Ok(p) => p,
                Err(refusal) => {
                    debug!(%peer, "web connection refused: {}", refusal.message);
                    continue;
                }
            };
            let _ = tcp::configure(&sock);
            let (io, guard) = self.gate.guard(sock);
            let conn = HttpConn {
                io,
                guard,
                peer,
                deadline,
                permit,
            };
            self.tracker.spawn(serve(self.clone(), conn));
        }
    }

    /// Completes a WebSocket upgrade on an HTTP connection whose request head has been read
    /// (the client's `Sec-WebSocket-Key`) and hands the connection over.
    pub async fn websocket(&self, conn: HttpConn<G>, key: &str) {
        // Nothing the client may send is bigger than one frame (plus its prefix).
        let max = self.wire.max_frame_len as usize + 4;
        let Ok(io) = ws::upgrade(conn.io, key, max).await else {
            return;
        };
        let (tx, rx) = link::tcp(Box::new(io), self.wire, BytesMut::new());
        self.hand_over(Accepted {
            tx,
            rx,
            peer: conn.peer,
            transport: Transport::WebSocket,
            deadline: conn.deadline,
            permit: conn.permit,
            ending: Ending::Stream(conn.guard),
        })
        .await;
    }
}

/// Winds up a served QUIC connection: gives the client a moment to read the last frames,
/// then closes (the link's tasks hold the connection open otherwise).
pub async fn finish_quic(conn: &quinn::Connection) {
    let _ = tokio::time::timeout(QUIC_LINGER, conn.closed()).await;
    conn.close(quic_code(ErrorCode::None), b"");
}

/// The chunkcast error code as a QUIC application close code.
fn quic_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(u32::from(code.to_u16()))
}

fn refusal_frame(refusal: Refusal) -> BytesMut {
    let mut out = BytesMut::new();
    encode(
        &Frame::Error(ErrorFrame {
            request: 0,
            code: refusal.code,
            message: refusal.message,
        }),
        &mut out,
    );
    out
}

/// Tells a client it is refused, in a frame its handshake shows, then closes.
async fn refuse(mut io: BoxedIo, refusal: Refusal) -> std::io::Result<()> {
    io.write_all(&refusal_frame(refusal)).await?;
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

/// Completes a refused client's QUIC handshake to tell it why, in an `ERROR` on its control
/// stream, then closes.
async fn refuse_quic(incoming: quinn::Incoming, refusal: Refusal) {
    let Ok(conn) = incoming.await else {
        return;
    };
    let code = quic_code(refusal.code);
    if let Ok((mut send, _recv)) = conn.accept_bi().await {
        let out = refusal_frame(refusal);
        if send.write_all(&out).await.is_ok() && send.finish().is_ok() {
            let _ = send.stopped().await;
        }
    }
    conn.close(code, b"busy");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chunkcast_protocol::wire::Decoder;

    use super::*;
    use crate::tls::Identity;

    /// A gate that admits the first `admit` connections and refuses the rest, and records
    /// what it is told.
    struct TestGate {
        admit: Mutex<usize>,
        plain: bool,
        failures: Mutex<Vec<SetupFailure>>,
    }

    impl Gate for TestGate {
        type Permit = ();
        type Stream = TcpStream;
        type Guard = ();

        fn admit(&self, _ip: IpAddr, _port: Port) -> Result<(), Refusal> {
            let mut left = self.admit.lock().unwrap();
            if *left == 0 {
                return Err(Refusal {
                    code: ErrorCode::Busy,
                    message: "full".into(),
                });
            }
            *left -= 1;
            Ok(())
        }

        fn admit_plain(&self, _peer: SocketAddr) -> Result<(), Refusal> {
            if self.plain {
                Ok(())
            } else {
                Err(Refusal {
                    code: ErrorCode::Unauthorized,
                    message: "use TLS".into(),
                })
            }
        }

        fn under_pressure(&self, _ip: IpAddr) -> bool {
            false
        }

        fn guard(&self, sock: TcpStream) -> (TcpStream, ()) {
            (sock, ())
        }

        fn setup_failed(&self, why: SetupFailure, _quic: Option<&quinn::Connection>) {
            self.failures.lock().unwrap().push(why);
        }
    }

    struct Running {
        addr: SocketAddr,
        gate: Arc<TestGate>,
        accepted: mpsc::Receiver<Accepted<TestGate>>,
        draining: CancellationToken,
    }

    async fn start(admit: usize, plain: bool) -> Running {
        let identity = Identity::self_signed(&["127.0.0.1".to_owned()]).unwrap();
        let tls = TlsAcceptor::from(crate::tls::server_config(&identity).unwrap());
        let gate = Arc::new(TestGate {
            admit: Mutex::new(admit),
            plain,
            failures: Mutex::default(),
        });
        let draining = CancellationToken::new();
        let (acceptor, accepted) = Acceptor::new(
            gate.clone(),
            tls,
            Limits::default(),
            Duration::from_secs(5),
            draining.clone(),
            TaskTracker::new(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(acceptor.tcp(listener));
        Running {
            addr,
            gate,
            accepted,
            draining,
        }
    }

    /// Everything the server sends until it closes, decoded.
    async fn frames_until_eof(sock: &mut TcpStream) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        while sock.read_buf(&mut buf).await.unwrap() > 0 {}
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        while let Some(f) = decoder.decode(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn ping(nonce: u64) -> Frame {
        Frame::Ping { nonce, time_us: 0 }
    }

    fn error_of(frames: &[Frame]) -> Option<(ErrorCode, &str)> {
        match frames {
            [Frame::Error(e)] => Some((e.code, e.message.as_str())),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_admitted_plain_client_is_handed_over_and_frames_flow() {
        let mut run = start(1, true).await;
        let mut sock = TcpStream::connect(run.addr).await.unwrap();
        let mut out = BytesMut::new();
        encode(&ping(7), &mut out);
        sock.write_all(&out).await.unwrap();
        let mut a = run.accepted.recv().await.expect("handed over");
        assert_eq!(a.transport, Transport::Plain);
        assert_eq!(a.peer, sock.local_addr().unwrap());
        assert!(matches!(a.ending, Ending::Stream(())));
        match a.rx.recv().await {
            Some(Ok(Frame::Ping { nonce: 7, .. })) => {}
            other => panic!("expected the client's PING, got {other:?}"),
        }
        a.tx.send(ping(8)).await.unwrap();
        drop(a);
        assert_eq!(frames_until_eof(&mut sock).await, [ping(8)]);
        run.draining.cancel();
    }

    #[tokio::test]
    async fn a_refused_client_reads_the_gates_reason_in_an_error_frame() {
        let mut run = start(0, true).await;
        let mut sock = TcpStream::connect(run.addr).await.unwrap();
        sock.write_all(&[0u8, 0, 0, 1, 0]).await.unwrap();
        let frames = frames_until_eof(&mut sock).await;
        assert_eq!(error_of(&frames), Some((ErrorCode::Busy, "full")));
        run.draining.cancel();
        assert!(run.accepted.recv().await.is_none(), "nothing handed over");
    }

    #[tokio::test]
    async fn plain_tcp_is_refused_when_the_gate_says_so_and_a_silent_close_is_recorded() {
        let run = start(2, false).await;
        let mut sock = TcpStream::connect(run.addr).await.unwrap();
        sock.write_all(&[0u8, 0, 0, 1, 0]).await.unwrap();
        let frames = frames_until_eof(&mut sock).await;
        assert_eq!(
            error_of(&frames),
            Some((ErrorCode::Unauthorized, "use TLS"))
        );
        // A client that closes before its first byte: set-up failed, closed.
        drop(TcpStream::connect(run.addr).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while run.gate.failures.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no set-up failure recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*run.gate.failures.lock().unwrap(), [SetupFailure::Closed]);
        run.draining.cancel();
    }

    #[tokio::test]
    async fn draining_stops_the_accept_loop_and_ends_the_stream_of_connections() {
        let mut run = start(1, true).await;
        run.draining.cancel();
        assert!(run.accepted.recv().await.is_none());
        assert!(
            TcpStream::connect(run.addr).await.is_err(),
            "still accepting"
        );
    }
}
