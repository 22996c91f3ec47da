//! chunkcast's server: serves a media library over TCP (plain and TLS on one port) and QUIC.
//!
//! - [`config`]: the [`Config`] and its limits; [`cli`]: the flags that build it.
//! - [`library`]: the served tree, path confinement, catalog and digests.
//! - `listen`: accept loops; `limit`: connection limits and request rates; `guard`: the byte
//!   stream wrapper that bounds stalled writes and kills finished connections; `conn`: one
//!   connection's handshake and control loop; `stream`: reading, cutting, pacing and sending
//!   one file; `metrics`: the counters `--metrics` serves; `web`: the browser viewer that
//!   `--web` serves (a page, and the protocol over a WebSocket).
//!
//! The binary is a thin shell around [`Server::start`], so tests run the very same server
//! in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), chunkcast_server::ServerError> {
//! let config = chunkcast_server::Config::on("127.0.0.1:0".parse().unwrap());
//! let server = chunkcast_server::Server::start(config).await?;
//! println!("{}", server.listening_line());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod chat;
pub mod cli;
pub mod config;
mod conn;
mod directory;
mod edge;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod http;
pub mod library;
mod limit;
mod listen;
mod live;
mod metrics;
mod record;
pub mod state;
mod stream;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use chunkcast_transport::{quic, tls};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::{Config, Limits};

use crate::conn::Shared;
use crate::library::Library;

/// Why the server could not start.
///
/// Each message includes its cause, so the cause is not also exposed as `source()`: the binary
/// prints errors with `anyhow`'s `{:#}`, which would print it twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A non-loopback address without a token.
    #[error(
        "refusing to listen on {0} without a token: pass --token (or set CHUNKCAST_TOKEN), or --allow-anonymous to serve anyone"
    )]
    NeedsToken(SocketAddr),
    /// `--web` on a non-loopback address: the page and its token travel unencrypted.
    #[error(
        "refusing to serve the web viewer on {0}: it is plain HTTP, so the token and the media would cross the network unencrypted; keep --web on loopback (behind a TLS proxy), or pass --allow-plaintext"
    )]
    WebPlaintext(SocketAddr),
    /// The library could not be opened or generated.
    #[error("library {path}: {cause}")]
    Library {
        /// The directory.
        path: String,
        /// The error.
        cause: std::io::Error,
    },
    /// The built-in sample library could not be generated.
    #[error("generating the sample library: {}", chain(.0))]
    Samples(chunkcast_media_samples::Error),
    /// Binding a socket failed.
    #[error("{}", bind_message(.flag, *.addr, .cause))]
    Bind {
        /// The flag that sets the address (`--listen`, `--web`, ...), for the advice.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        cause: std::io::Error,
    },
    /// The configuration file or the state directory is unusable.
    #[error(transparent)]
    Setup(#[from] config::SetupError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// QUIC setup failed.
    #[error(transparent)]
    Quic(#[from] quic::QuicSetupError),
    /// `--edge-of`, `--directory`, `--advertise` or `--origin-cert-sha256` is unusable (the
    /// message names the flag and says why).
    #[error("{0}")]
    Tiers(String),
}

impl From<chunkcast_media_samples::Error> for ServerError {
    fn from(e: chunkcast_media_samples::Error) -> Self {
        Self::Samples(e)
    }
}

/// The edge and the directory registration `config` asks for, checked.
#[allow(clippy::type_complexity)]
fn tiers(
    config: &Config,
    tcp_addr: SocketAddr,
) -> Result<
    (
        Option<Arc<edge::Edge>>,
        Option<(Arc<directory::Directory>, String)>,
    ),
    ServerError,
> {
    use chunkcast_client::url::Url;
    let ttl = config.directory_ttl;
    let open_dir = |flag: &str, url: &str| {
        directory::Directory::new(url, ttl)
            .map(Arc::new)
            .map_err(|e| ServerError::Tiers(format!("{flag} {url}: {e}; use redis://HOST:PORT")))
    };
    let registry = match &config.directory {
        Some(url) => {
            let dir = open_dir("--directory", url)?;
            let advertise = match &config.advertise {
                Some(a) => a.clone(),
                None if tcp_addr.ip().is_unspecified() => {
                    return Err(ServerError::Tiers(format!(
                        "--directory: this server listens on {tcp_addr}, which edges cannot dial: \
                         give the URL they should use with --advertise tcp://HOST:PORT"
                    )));
                }
                None => format!("tcp://{tcp_addr}"),
            };
            Url::parse(&advertise)
                .map_err(|e| ServerError::Tiers(format!("--advertise {advertise}: {e}")))?;
            Some((dir, advertise))
        }
        None => None,
    };
    let edge = match &config.edge_of {
        Some(url) => {
            let source = if url.starts_with("redis://") || url.starts_with("rediss://") {
                let dir = directory::Directory::new(url, ttl).map_err(|e| {
                    ServerError::Tiers(format!("--edge-of {url}: {e}; use redis://HOST:PORT"))
                })?;
                edge::Source::Directory(dir)
            } else {
                let origin = Url::parse(url).map_err(|e| {
                    ServerError::Tiers(format!(
                        "--edge-of {url}: {e}; use redis://HOST:PORT, tcp://, tcps:// or quic://HOST:PORT"
                    ))
                })?;
                edge::Source::Origin(origin)
            };
            let trust = match &config.origin_cert_sha256 {
                Some(hex_pin) => {
                    let mut pin = [0u8; 32];
                    hex::decode_to_slice(hex_pin, &mut pin).map_err(|_| {
                        ServerError::Tiers(format!(
                            "--origin-cert-sha256 {hex_pin}: not 64 hex digits"
                        ))
                    })?;
                    tls::Trust::Pin(pin)
                }
                None => tls::Trust::System,
            };
            Some(Arc::new(edge::Edge::new(
                source,
                url.clone(),
                config.token.clone(),
                trust,
            )))
        }
        None => None,
    };
    Ok((edge, registry))
}

/// `e` and its causes, joined by `: `, for an error kept out of the source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// What a failed bind says: the common causes get their fix.
fn bind_message(flag: &str, addr: SocketAddr, cause: &std::io::Error) -> String {
    let port = addr.port();
    let free = SocketAddr::new(addr.ip(), 0);
    match cause.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {port} is in use (another chunkcast-server?): pick another with {flag} {free} or stop the other server"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {addr}: {cause}; {} is not an address of this machine (see `ip addr`)",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied if port < 1024 => format!(
            "cannot listen on {addr}: {cause}; ports below 1024 need root or CAP_NET_BIND_SERVICE: pick another with {flag}"
        ),
        _ => format!("cannot listen on {addr} ({flag}): {cause}"),
    }
}

/// A running server.
pub struct Server {
    tcp_addr: SocketAddr,
    quic_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    web_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    fingerprint: String,
    root: std::path::PathBuf,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    endpoint: quinn::Endpoint,
}

impl Server {
    /// Opens the library, binds both transports and starts accepting.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        if config.exposed() && config.token.is_none() && !config.allow_anonymous {
            let addr = [Some(config.tcp), Some(config.quic), config.web, config.http]
                .into_iter()
                .flatten()
                .find(|a| !a.ip().is_loopback())
                .unwrap_or(config.tcp);
            return Err(ServerError::NeedsToken(addr));
        }
        if let Some(web) = config.web.filter(|w| !w.ip().is_loopback()) {
            if !config.allow_plaintext {
                return Err(ServerError::WebPlaintext(web));
            }
        }
        let root = match &config.root {
            Some(r) => r.clone(),
            None => {
                let dir = chunkcast_media_samples::default_cache_dir();
                let d = dir.clone();
                tokio::task::spawn_blocking(move || chunkcast_media_samples::ensure(&d))
                    .await
                    .map_err(|e| ServerError::Library {
                        path: dir.display().to_string(),
                        cause: std::io::Error::other(e),
                    })??;
                dir
            }
        };
        let library = Library::new(&root)
            .map_err(|cause| ServerError::Library {
                path: root.display().to_string(),
                cause,
            })?
            .serve_hidden(config.serve_hidden);
        let identity = match &config.cert {
            Some((c, k)) => tls::Identity::from_pem_files(c, k)?,
            None => {
                let names = [config.tcp.ip().to_string(), config.quic.ip().to_string()];
                match &config.state_dir {
                    Some(dir) => state::identity(dir, &names)?,
                    None => tls::Identity::self_signed(&names)?,
                }
            }
        };
        // Which flag set each address, for the advice when it cannot be bound.
        let (tcp_flag, quic_flag) = if config.tcp == config.quic {
            ("--listen", "--listen")
        } else {
            ("--tcp", "--quic")
        };
        let listener = TcpListener::bind(config.tcp)
            .await
            .map_err(|cause| ServerError::Bind {
                flag: tcp_flag,
                addr: config.tcp,
                cause,
            })?;
        let tcp_addr = listener.local_addr().map_err(|cause| ServerError::Bind {
            flag: tcp_flag,
            addr: config.tcp,
            cause,
        })?;
        // "--listen" means one port for both: with port 0, QUIC takes the port TCP got.
        let mut quic_want = config.quic;
        if quic_want.port() == 0 && quic_want.ip() == tcp_addr.ip() {
            quic_want.set_port(tcp_addr.port());
        }
        let quic_bind = |r: Result<quinn::Endpoint, quic::QuicSetupError>| match r {
            Err(quic::QuicSetupError::Bind { addr, cause }) => Err(ServerError::Bind {
                flag: quic_flag,
                addr,
                cause,
            }),
            r => Ok(r?),
        };
        let endpoint = match quic::server_endpoint(quic_want, &identity) {
            Ok(ep) => ep,
            Err(_) if config.quic.port() == 0 => {
                quic_bind(quic::server_endpoint(config.quic, &identity))?
            }
            Err(e) => quic_bind(Err(e))?,
        };
        let quic_addr = endpoint.local_addr().map_err(|cause| ServerError::Bind {
            flag: quic_flag,
            addr: quic_want,
            cause,
        })?;
        let acceptor = TlsAcceptor::from(tls::server_config(&identity)?);

        let metrics_listener = match config.metrics {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|cause| ServerError::Bind {
                            flag: "--metrics",
                            addr,
                            cause,
                        })?,
                )
            }
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|cause| ServerError::Bind {
                flag: "--metrics",
                addr: config.metrics.unwrap_or(tcp_addr),
                cause,
            })?),
            None => None,
        };

        let web_listener = match config.web {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|cause| ServerError::Bind {
                            flag: "--web",
                            addr,
                            cause,
                        })?,
                )
            }
            None => None,
        };
        let web_addr = match &web_listener {
            Some(l) => Some(l.local_addr().map_err(|cause| ServerError::Bind {
                flag: "--web",
                addr: config.web.unwrap_or(tcp_addr),
                cause,
            })?),
            None => None,
        };

        let http_listener = match config.http {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|cause| ServerError::Bind {
                            flag: "--http",
                            addr,
                            cause,
                        })?,
                )
            }
            None => None,
        };
        let http_addr = match &http_listener {
            Some(l) => Some(l.local_addr().map_err(|cause| ServerError::Bind {
                flag: "--http",
                addr: config.http.unwrap_or(tcp_addr),
                cause,
            })?),
            None => None,
        };
        let http_tls = tls::server_config(&identity)?;

        let (edge, registry) = tiers(&config, tcp_addr)?;
        let shared = Arc::new(Shared::new(config, library).with_tiers(edge, registry));
        if let Some(listener) = metrics_listener {
            tokio::spawn(metrics::serve(
                listener,
                shared.metrics.clone(),
                shared.stop.clone(),
            ));
        }
        let tracker = TaskTracker::new();
        let policy = listen::start(
            &shared,
            listen::Listeners {
                tcp: listener,
                tls: acceptor,
                quic: endpoint.clone(),
                web: web_listener,
            },
            &tracker,
        );
        if let Some(listener) = http_listener {
            http::start(shared.clone(), policy, listener, http_tls, &tracker);
        }
        let server = Self {
            tcp_addr,
            quic_addr,
            metrics_addr,
            web_addr,
            http_addr,
            fingerprint: identity.fingerprint_hex(),
            root,
            shared,
            tracker,
            endpoint,
        };
        info!(root = %server.root.display(), "serving");
        info!(
            "connect with: {} ls --cert-sha256 {} quic://{}/",
            client_command(),
            server.fingerprint,
            server.quic_addr
        );
        if let Some(url) = server.web_url() {
            info!("web viewer: open {url} in a browser");
        }
        if let Some(addr) = server.metrics_addr {
            info!("metrics: http://{addr}/metrics");
        }
        Ok(server)
    }

    /// The TCP address (plain and TLS).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// Where the metrics are served (`GET /metrics`), if `--metrics` was given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the browser viewer is served (`GET /`, WebSocket at `/ws`), if `--web` was given.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// Where the HTTP interface is served (`--http`), if it is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The web viewer's address as a URL to open, if `--web` was given.
    pub fn web_url(&self) -> Option<String> {
        self.web_addr.map(|a| format!("http://{a}/"))
    }

    /// SHA-256 of the certificate, hex: what clients pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The directory served.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The one line the binary prints on stdout once bound (the product contract), with
    /// ` metrics=IP:PORT` appended when metrics are served, ` web=IP:PORT` when the browser
    /// viewer is and ` http=IP:PORT` when the HTTP interface is.
    pub fn listening_line(&self) -> String {
        let mut line = format!(
            "listening tcp={} quic={} cert-sha256={}",
            self.tcp_addr, self.quic_addr, self.fingerprint
        );
        if let Some(addr) = self.metrics_addr {
            line.push_str(&format!(" metrics={addr}"));
        }
        if let Some(addr) = self.web_addr {
            line.push_str(&format!(" web={addr}"));
        }
        if let Some(addr) = self.http_addr {
            line.push_str(&format!(" http={addr}"));
        }
        line
    }

    /// Graceful shutdown: stop accepting and refuse new streams, let running streams finish
    /// for the configured grace period, then close everything.
    pub async fn shutdown(self) {
        self.shared.draining.cancel();
        self.tracker.close();
        let grace = self.shared.config.grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            info!("grace period over; closing remaining connections");
        }
        self.shared.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.tracker.wait()).await;
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
    }
}

/// How to run the client, for the hint in the log: `chunkcast` when it is on `PATH`, else the
/// client binary built beside this one (`target/release/chunkcast` after the README's first
/// command), so that the hint works when pasted as it is.
fn client_command() -> String {
    const CLIENT: &str = "chunkcast";
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(CLIENT).is_file()));
    if on_path {
        return CLIENT.to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(CLIENT)))
        .filter(|c| c.is_file())
        .map_or_else(|| CLIENT.to_owned(), |c| c.display().to_string())
}
