//! quinn endpoints for both sides, with the transport tuned for bulk media.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};

use super::tls::{self, Identity, TlsError, Trust};

/// Receive window of one stream. quinn's default (1.25 MB) caps one stream near 100 MB/s at
/// 10 ms RTT; 8 MiB keeps a loopback or LAN download window-bound only beyond the CPU's rate.
const STREAM_WINDOW: u32 = 8 << 20;
/// Receive window of the whole connection: several concurrent media streams at full rate.
const CONNECTION_WINDOW: u32 = 32 << 20;
/// Unidirectional streams a peer may have open at once: one per media stream, so this also
/// bounds the media streams of a QUIC connection.
const MAX_UNI_STREAMS: u32 = 64;
/// UDP socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
/// With the system default (about 208 KiB) a receiver that is a few milliseconds late drops
/// datagrams (hundreds per GB on loopback), and each loss costs a congestion back-off.
const SOCKET_BUFFER: usize = 8 << 20;

/// The transport configuration both sides use.
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS));
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    // The protocol's own keepalive runs on the control stream; quinn's keeps NAT bindings.
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    t
}

/// Why a QUIC endpoint could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicSetupError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// rustls' configuration is not usable for QUIC.
    #[error("TLS configuration not usable for QUIC: {0}")]
    Crypto(String),
    /// The UDP socket could not be bound.
    #[error("binding UDP {addr}: {cause}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// The error (in the message, not a `source()`: see [`TlsError`]).
        cause: std::io::Error,
    },
}

/// A server endpoint on `addr` presenting `identity`.
pub fn server_endpoint(addr: SocketAddr, identity: &Identity) -> Result<Endpoint, QuicSetupError> {
    let crypto = QuicServerConfig::try_from(tls::server_config(identity)?)
        .map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let socket = udp_socket(addr).map_err(|cause| QuicSetupError::Bind { addr, cause })?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|cause| QuicSetupError::Bind { addr, cause })
}

/// A client endpoint bound to an ephemeral port of `peer`'s address family.
pub fn client_endpoint(peer: SocketAddr, trust: &Trust) -> Result<Endpoint, QuicSetupError> {
    let crypto = QuicClientConfig::try_from(tls::client_config(trust)?)
        .map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let bind: SocketAddr = if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let bind_err = |cause| QuicSetupError::Bind { addr: bind, cause };
    let socket = udp_socket(bind).map_err(bind_err)?;
    let mut ep = Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// A UDP socket bound to `addr` with large buffers where the system allows them.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer is slower, not wrong.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
