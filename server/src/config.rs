//! The server's configuration, from flags or built by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chunkcast_protocol::wire::Limits as WireLimits;

/// Resource limits, each with a safe default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a new connection has to finish TLS and the chunkcast handshake (slowloris bound).
    pub handshake_timeout: Duration,
    /// Time a connection may stay silent (pings unanswered) before it is closed.
    pub idle_timeout: Duration,
    /// Connections open at once, over both transports.
    pub max_connections: usize,
    /// Media streams one connection may have open at once.
    pub max_streams_per_connection: usize,
    /// Frame limits (frame, string and list sizes).
    pub wire: WireLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_streams_per_connection: 16,
            wire: WireLimits::default(),
        }
    }
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The library's root; `None` serves the built-in sample library.
    pub root: Option<PathBuf>,
    /// TCP (plain and TLS) address.
    pub tcp: SocketAddr,
    /// QUIC (UDP) address.
    pub quic: SocketAddr,
    /// Token every client must present.
    pub token: Option<String>,
    /// Serve a non-loopback address without a token.
    pub allow_anonymous: bool,
    /// Accept plain (unencrypted) TCP on a non-loopback address.
    pub allow_plaintext: bool,
    /// PEM certificate chain and key; `None` generates a self-signed certificate.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// How long shutdown lets streams finish before closing them.
    pub grace: Duration,
    /// Resource limits.
    pub limits: Limits,
}

/// The default address: loopback only, so that nothing is exposed unless the user says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

impl Config {
    /// Defaults with both transports on `addr`.
    pub fn on(addr: SocketAddr) -> Self {
        Self {
            root: None,
            tcp: addr,
            quic: addr,
            token: None,
            allow_anonymous: false,
            allow_plaintext: false,
            cert: None,
            grace: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }

    /// Whether any listening address is reachable from beyond this machine.
    pub fn exposed(&self) -> bool {
        !self.tcp.ip().is_loopback() || !self.quic.ip().is_loopback()
    }
}
