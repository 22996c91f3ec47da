//! Accept loops: TCP (plain or TLS, told apart by the first byte) and QUIC.

use std::sync::Arc;

use bytes::BytesMut;
use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::net::tcp::{self, Flavor};
use chunkcast_protocol::net::{BoxedIo, link};
use chunkcast_protocol::wire::{ErrorFrame, Frame, encode};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::conn::{self, Shared};

/// Accepts TCP connections until draining starts.
pub(crate) async fn tcp_loop(
    listener: TcpListener,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shared.draining.cancelled() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracker.spawn(refuse(
                sock,
                ErrorCode::Busy,
                "server is at its connection limit; try again later",
            ));
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_conn(sock, peer, tls, shared).await {
                debug!(%peer, "connection setup failed: {e}");
            }
        });
    }
}

async fn tcp_conn(
    sock: TcpStream,
    peer: std::net::SocketAddr,
    tls: TlsAcceptor,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    tcp::configure(&sock)?;
    let timeout = shared.config.limits.handshake_timeout;
    let io: BoxedIo = match tcp::sniff(&sock, timeout).await? {
        None => return Ok(()),
        Some(Flavor::Tls) => {
            let accepted = tokio::time::timeout(timeout, tls.accept(sock)).await;
            match accepted {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
        }
        Some(Flavor::Plain) => {
            if !peer.ip().is_loopback() && shared.config.exposed() && !shared.config.allow_plaintext
            {
                refuse(
                    sock,
                    ErrorCode::Unauthorized,
                    "plain TCP is refused on this address: use tcps:// or quic:// (or start the server with --allow-plaintext)",
                )
                .await;
                return Ok(());
            }
            Box::new(sock)
        }
    };
    let (tx, rx) = link::tcp(io, shared.config.limits.wire, BytesMut::new());
    conn::serve(shared, tx, rx, peer.to_string()).await;
    Ok(())
}

async fn refuse(mut sock: TcpStream, code: ErrorCode, message: &str) {
    let mut out = BytesMut::new();
    encode(
        &Frame::Error(ErrorFrame {
            request: 0,
            code,
            message: message.to_owned(),
        }),
        &mut out,
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sock.write_all(&out)).await;
    let _ = sock.shutdown().await;
}

/// Accepts QUIC connections until draining starts.
pub(crate) async fn quic_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let peer = incoming.remote_address();
            let timeout = shared.config.limits.handshake_timeout;
            let setup = async {
                let conn = incoming.await?;
                let (send, recv) = conn.accept_bi().await?;
                Ok::<_, quinn::ConnectionError>((conn, send, recv))
            };
            let (conn, send, recv) = match tokio::time::timeout(timeout, setup).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    debug!(%peer, "QUIC setup failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "QUIC setup timed out");
                    return;
                }
            };
            let (tx, rx) = link::quic(conn.clone(), send, recv, shared.config.limits.wire);
            conn::serve(shared, tx, rx, peer.to_string()).await;
            // Give the client a moment to read the last frames before the close.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        });
    }
}
