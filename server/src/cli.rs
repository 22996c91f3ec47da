//! Command-line flags (`chunkcast-server --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, DEFAULT_LISTEN};

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
    /// PEM certificate chain (with --key). Default: a self-signed certificate.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Seconds that shutdown lets running streams finish.
    #[arg(long, default_value_t = 5)]
    pub grace: u64,
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
        c.cert = self.cert.zip(self.key);
        c.grace = std::time::Duration::from_secs(self.grace);
        c
    }
}
