//! Command-line flags (`chunkcast-server --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, DEFAULT_LISTEN, Limits};

/// The largest `--max-frame-bytes`: a plain connection is told from TLS by its first byte,
/// which is a frame length's high byte and must stay 0.
const MAX_FRAME_BYTES: u64 = (1 << 24) - 1;
/// The smallest `--max-frame-bytes`: room for a `HELLO` with a long token and for small chunks.
const MIN_FRAME_BYTES: u64 = 4096;

fn default_limits() -> Limits {
    Limits::default()
}

/// Serves a media library over TCP (plain and TLS on one port) and QUIC.
#[derive(Debug, Parser)]
#[command(name = "chunkcast-server", version, about)]
pub struct Args {
    /// Directory to serve, read-only. Default: the built-in sample library.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Address for both TCP and QUIC (UDP); port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// TCP address, overriding --listen for TCP.
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// QUIC (UDP) address, overriding --listen for QUIC.
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    /// Token every client must present.
    #[arg(long, env = "CHUNKCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Allow a non-loopback address without a token.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Allow plain (unencrypted) TCP on a non-loopback address.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Serve and list hidden files (a path component starting with '.', such as .env or
    /// .git/). Default: they are answered as not found.
    #[arg(long)]
    pub serve_hidden: bool,
    /// PEM certificate chain (with --key). Default: a self-signed certificate.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Seconds that shutdown lets running streams finish.
    #[arg(long, default_value_t = 5)]
    pub grace: u64,
    /// Serve Prometheus metrics over HTTP at ADDR (GET /metrics). Unauthenticated: keep it
    /// on loopback or a private network. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve the browser viewer at ADDR: the page over HTTP (GET /), the protocol over a
    /// WebSocket (GET /ws), with the same token and limits as the other transports.
    /// Default: off.
    #[arg(long, value_name = "ADDR")]
    pub web: Option<SocketAddr>,
    /// Connections open at once, over TCP and QUIC together.
    #[arg(long, value_name = "N", default_value_t = default_limits().max_connections,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[arg(long, value_name = "N", default_value_t = default_limits().max_connections_per_ip,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_ip: usize,
    /// Media streams open at once on one connection.
    #[arg(long, value_name = "N", default_value_t = default_limits().max_streams_per_connection,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_streams: usize,
    /// Milliseconds a new connection has to complete TLS and the handshake.
    #[arg(long, value_name = "MS",
          default_value_t = default_limits().handshake_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout_ms: u64,
    /// Milliseconds a connection may stay silent, or take none of the data sent to it,
    /// before it is closed.
    #[arg(long, value_name = "MS",
          default_value_t = default_limits().idle_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Largest frame a client may send, in bytes; also caps the server's chunk payloads.
    #[arg(long, value_name = "BYTES",
          default_value_t = u64::from(default_limits().wire.max_frame_len),
          value_parser = clap::value_parser!(u64).range(MIN_FRAME_BYTES..=MAX_FRAME_BYTES))]
    pub max_frame_bytes: u64,
    /// Requests (list, open, publish, subscribe) per second one connection may make.
    #[arg(long, value_name = "N", default_value_t = default_limits().max_requests_per_sec,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_sec: u32,
}

impl Args {
    /// The configuration these flags describe.
    pub fn into_config(self) -> Config {
        let mut c = Config::on(self.listen);
        c.root = self.root;
        c.tcp = self.tcp.unwrap_or(self.listen);
        c.quic = self.quic.unwrap_or(self.listen);
        c.token = self.token.filter(|t| !t.is_empty());
        c.allow_anonymous = self.allow_anonymous;
        c.allow_plaintext = self.allow_plaintext;
        c.serve_hidden = self.serve_hidden;
        c.cert = self.cert.zip(self.key);
        c.grace = std::time::Duration::from_secs(self.grace);
        c.metrics = self.metrics;
        c.web = self.web;
        let l = &mut c.limits;
        l.max_connections = self.max_connections;
        l.max_connections_per_ip = self.max_connections_per_ip;
        l.max_streams_per_connection = self.max_streams;
        l.handshake_timeout = std::time::Duration::from_millis(self.handshake_timeout_ms);
        l.idle_timeout = std::time::Duration::from_millis(self.idle_timeout_ms);
        // In range: clap checked it against MAX_FRAME_BYTES.
        l.wire.max_frame_len = self.max_frame_bytes as u32;
        l.max_requests_per_sec = self.max_requests_per_sec;
        c
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_are_the_library_defaults() {
        let c = Args::parse_from(["chunkcast-server"]).into_config();
        let d = Limits::default();
        assert_eq!(c.limits.max_connections, d.max_connections);
        assert_eq!(c.limits.max_connections_per_ip, d.max_connections_per_ip);
        assert_eq!(
            c.limits.max_streams_per_connection,
            d.max_streams_per_connection
        );
        assert_eq!(c.limits.handshake_timeout, d.handshake_timeout);
        assert_eq!(c.limits.idle_timeout, d.idle_timeout);
        assert_eq!(c.limits.wire, d.wire);
        assert_eq!(c.limits.max_requests_per_sec, d.max_requests_per_sec);
        assert_eq!(c.metrics, None);
        assert_eq!(c.web, None);
    }

    #[test]
    fn limit_flags_set_the_limits() {
        let c = Args::parse_from([
            "chunkcast-server",
            "--max-connections=10",
            "--max-connections-per-ip=2",
            "--max-streams=3",
            "--handshake-timeout-ms=1500",
            "--idle-timeout-ms=2500",
            "--max-frame-bytes=65536",
            "--max-requests-per-sec=7",
            "--metrics=127.0.0.1:9100",
        ])
        .into_config();
        let l = &c.limits;
        assert_eq!((l.max_connections, l.max_connections_per_ip), (10, 2));
        assert_eq!(l.max_streams_per_connection, 3);
        assert_eq!(l.handshake_timeout.as_millis(), 1500);
        assert_eq!(l.idle_timeout.as_millis(), 2500);
        assert_eq!(l.wire.max_frame_len, 65536);
        assert_eq!(l.max_requests_per_sec, 7);
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn nonsense_limits_are_refused() {
        for bad in [
            "--max-connections=0",
            "--max-streams=0",
            "--handshake-timeout-ms=0",
            "--max-frame-bytes=100",
            "--max-frame-bytes=16777216",
            "--max-requests-per-sec=0",
        ] {
            assert!(
                Args::try_parse_from(["chunkcast-server", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
