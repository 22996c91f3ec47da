//! The dialling side of every transport: one [`connect`] for TCP, TLS and QUIC, giving the
//! same [`LinkTx`]/[`LinkRx`] pair whatever the transport.
//!
//! Errors are typed ([`DialError`]) and carry no advice: what to tell a user (which flag
//! fixes an untrusted certificate) is the client's business.

use std::net::SocketAddr;

use bytes::BytesMut;
use chunkcast_protocol::wire::Limits;
use rustls::pki_types::ServerName;

use crate::link::{self, LinkRx, LinkTx};
use crate::tls::{self, TlsError, Trust};
use crate::{BoxedIo, quic, tcp};

/// Which transport to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// Plain chunkcast frames over TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// QUIC.
    Quic,
    /// QUIC for a realtime stream (playback, a call): a network path's packet size even to a
    /// loopback address ([`quic::Path::Network`]). Its rate gains nothing from 64 KiB datagrams,
    /// and a slow hop behind a loopback address (a relay, a tunnel) would hold each one for
    /// its whole serialisation time: 260 ms at 2 Mbit/s.
    QuicRealtime,
}

/// Why dialling failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The error.
        source: std::io::Error,
    },
    /// Nothing answered at the address (refused, unreachable, or no QUIC answer in time).
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    /// The host cannot be a TLS server name.
    #[error("{0:?} is not a valid host name")]
    BadName(String),
    /// TLS could not be set up locally (a bad CA file, ...).
    #[error(transparent)]
    TlsSetup(#[from] TlsError),
    /// The QUIC endpoint could not be set up locally.
    #[error("{0}")]
    QuicSetup(#[source] quic::QuicSetupError),
    /// The TLS or QUIC handshake failed because the server's certificate is not trusted
    /// (unknown issuer, no pin): the trust settings need changing, not the certificate.
    #[error("{0}")]
    Untrusted(String),
    /// The TLS or QUIC handshake failed otherwise (a pin or name mismatch, no common
    /// parameters, ...).
    #[error("{0}")]
    Handshake(String),
    /// The QUIC connection failed before its control stream was open.
    #[error("{0}")]
    Lost(String),
}

/// Resolves `host:port` to its first address.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, DialError> {
    let resolve_error = |source| DialError::Resolve {
        host: host.to_owned(),
        source,
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(resolve_error)?;
    addrs.next().ok_or_else(|| {
        resolve_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address",
        ))
    })
}

/// Connects to `addr` over `how`, checking the certificate against `trust` for `host`
/// (TLS, QUIC), and starts the link with `limits`. The QUIC endpoint is returned so that
/// the caller keeps it alive as long as the connection. No chunkcast handshake yet: that is
/// the connection machine's.
///
/// Unbounded in time (a silent TLS server): the caller puts its own timeout around it.
pub async fn connect(
    addr: SocketAddr,
    host: &str,
    how: Dial,
    trust: &Trust,
    limits: Limits,
) -> Result<(LinkTx, LinkRx, Option<quinn::Endpoint>), DialError> {
    match how {
        Dial::Tcp | Dial::Tls => {
            let sock = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(DialError::Connect)?;
            tcp::configure(&sock).map_err(DialError::Connect)?;
            let io: BoxedIo = if how == Dial::Tls {
                let cfg = tls::client_config(trust)?;
                let name = server_name(host)?;
                let sock = tokio::io::BufReader::with_capacity(tls::SOCKET_READ, sock);
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, sock)
                    .await
                    .map_err(|e| handshake_error(e.to_string()))?;
                Box::new(s)
            } else {
                Box::new(sock)
            };
            let (tx, rx) = link::tcp(io, limits, BytesMut::new());
            Ok((tx, rx, None))
        }
        Dial::Quic | Dial::QuicRealtime => {
            let path = if how == Dial::QuicRealtime {
                quic::Path::Network
            } else {
                quic::Path::to(addr.ip())
            };
            let ep = quic::client_endpoint_on(addr, trust, path).map_err(DialError::QuicSetup)?;
            let conn = ep
                .connect(addr, host)
                .map_err(|e| handshake_error(e.to_string()))?
                .await
                .map_err(quic_connect_error)?;
            let (send, recv) = conn
                .open_bi()
                .await
                .map_err(|e| DialError::Lost(e.to_string()))?;
            let (tx, rx) = link::quic(conn, send, recv, limits);
            Ok((tx, rx, Some(ep)))
        }
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, DialError> {
    ServerName::try_from(host.to_owned()).map_err(|_| DialError::BadName(host.to_owned()))
}

/// Sorts a failed TLS handshake by whether trust is the problem. rustls names an untrusted
/// certificate `UnknownIssuer`; our pin verifier reports a pin mismatch as an invalid peer
/// certificate whose message says "mismatch", which is not fixed by trusting more.
fn handshake_error(raw: String) -> DialError {
    if raw.contains("UnknownIssuer")
        || raw.contains("invalid peer certificate") && !raw.contains("mismatch")
    {
        DialError::Untrusted(raw)
    } else {
        DialError::Handshake(raw)
    }
}

fn quic_connect_error(e: quinn::ConnectionError) -> DialError {
    match e {
        quinn::ConnectionError::TimedOut => DialError::Connect(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer over QUIC",
        )),
        other => handshake_error(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_sorted_by_whether_trust_would_fix_them() {
        let untrusted = "invalid peer certificate: UnknownIssuer";
        assert!(matches!(
            handshake_error(untrusted.into()),
            DialError::Untrusted(_)
        ));
        let pin = "unexpected error: certificate mismatch: the server's certificate has sha256 ab, not the pinned cd";
        assert!(matches!(
            handshake_error(pin.into()),
            DialError::Handshake(_)
        ));
        assert!(matches!(
            handshake_error("peer closed connection".into()),
            DialError::Handshake(_)
        ));
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        // A port that was free a moment ago: bind, note it, close.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dialled = connect(
            addr,
            "127.0.0.1",
            Dial::Tcp,
            &Trust::System,
            Limits::default(),
        )
        .await;
        let Err(err) = dialled else {
            panic!("connected to {addr}, where nothing listens");
        };
        assert!(matches!(err, DialError::Connect(_)), "{err:?}");
    }

    #[test]
    fn a_bad_host_name_is_named() {
        let err = server_name("not a name").expect_err("spaces are not a host name");
        assert_eq!(err.to_string(), "\"not a name\" is not a valid host name");
    }
}
