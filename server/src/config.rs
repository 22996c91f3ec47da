//! The server's configuration, from flags or built by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chunkcast_protocol::wire::Limits as WireLimits;

/// Resource limits, each with a safe default. SECURITY.md lists them with the flag that sets
/// each one and what a client sees when it hits one.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a new connection has, from accept to `WELCOME`, for the first byte, TLS (or QUIC's
    /// setup) and the chunkcast handshake together: the slowloris bound. Past it the server
    /// sends an `ERROR` (timeout) where it can and closes.
    pub handshake_timeout: Duration,
    /// Time a connection may stay silent (pings unanswered), and time its socket may refuse to
    /// take any of the bytes the server is sending (a client that stopped reading), before it
    /// is closed.
    pub idle_timeout: Duration,
    /// Connections open at once, over both transports, handshaking ones included.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Media streams one connection may have open at once.
    pub max_streams_per_connection: usize,
    /// Requests (`LIST`, `OPEN`, `PUBLISH`, `SUBSCRIBE`) per second one connection may make,
    /// with bursts of as many; one over gets a busy `ERROR`, and a connection that gets more
    /// than this many such refusals within about a second is closed.
    pub max_requests_per_sec: u32,
    /// Time a live channel whose publisher went away without ending it (and that nobody
    /// watches or waits for) is kept, so that a restarting publisher finds its viewers'
    /// numbering (`seq`, `pts_us`) where it left it. Ended channels and channels that never
    /// had a publisher go as soon as nobody uses them.
    pub live_linger: Duration,
    /// Frame limits (frame, string and list sizes) on what clients send. `max_frame_len` also
    /// caps the payload of the chunks the server sends.
    pub wire: WireLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            // Each connection costs a socket, two link tasks and at most a few MiB of queued
            // chunks per stream: 1024 stays far below the default file-descriptor limit's
            // practical share and a few GiB of memory in the worst case.
            max_connections: 1024,
            // Enough for a household or an office behind one NAT, few enough that one host
            // cannot take the whole server's connection budget.
            max_connections_per_ip: 64,
            max_streams_per_connection: 16,
            // A player or `get` makes a handful of requests per connection; 50 per second
            // leaves room for scripted listings while a flood costs the server little.
            max_requests_per_sec: 50,
            // Long enough for a publisher's supervisor to restart it, short enough that
            // abandoned names free their slot in the channel table quickly.
            live_linger: Duration::from_secs(10),
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
    /// PEM certificate chain and key; `None` uses a self-signed certificate (kept in
    /// `state_dir` if there is one).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Where the self-signed certificate and its key are kept, so that its SHA-256 (what
    /// clients pin) survives restarts; `None`: a new one on every start.
    pub state_dir: Option<PathBuf>,
    /// How long shutdown lets streams finish before closing them.
    pub grace: Duration,
    /// Resource limits.
    pub limits: Limits,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`); `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// Where to serve the browser viewer over HTTP (the page, and the protocol over a
    /// WebSocket at `GET /ws`); `None`: nowhere.
    pub web: Option<SocketAddr>,
    /// Where to serve the HTTP interface (files, chunks, live channels; plain HTTP and TLS
    /// on one port); `None`: nowhere.
    pub http: Option<SocketAddr>,
    /// Serve (and list) paths with a component starting with `.` (`.env`, `.git/config`);
    /// off by default, when such a path is answered as not found.
    pub serve_hidden: bool,
    /// Be an edge of this: a directory (`redis://HOST:PORT`) or a fixed origin
    /// (`tcp://`, `tcps://`, `quic://HOST:PORT`). `live/` channels are then subscribed to
    /// there on their first local viewer, and publishing them here is refused.
    pub edge_of: Option<String>,
    /// Register every publisher accepted here in this directory (`redis://HOST:PORT`).
    pub directory: Option<String>,
    /// The URL registered for this server in the directory; `None`: `tcp://` and the TCP
    /// listening address.
    pub advertise: Option<String>,
    /// How long a directory entry lives unrefreshed: how soon edges follow a publisher that
    /// moved to another origin.
    pub directory_ttl: Duration,
    /// How long a directory edge holds a subscriber to a channel no origin has yet, looking it
    /// up again meanwhile, before refusing it as not found (a single server holds it until a
    /// publisher comes; an edge bounds that, each wait costing directory lookups).
    pub edge_wait_publisher: Duration,
    /// The SHA-256 (hex) of the origin's certificate an edge pins for `tcps://` and `quic://`
    /// origins; `None`: the system's roots.
    pub origin_cert_sha256: Option<String>,
    /// Save every publisher run of every live channel into this directory (one file each:
    /// `.mjpeg`, `.y4m`, `.wav` or `.mp4`); `None`: record nothing.
    pub record: Option<PathBuf>,
    /// The most edge relays a subscription may come through before it is refused.
    pub max_relay_hops: usize,
    /// Send a verified download's payload on plain TCP with `sendfile(2)`, from the page
    /// cache, instead of reading it first. Off: for filesystems whose `sendfile` misbehaves,
    /// and to measure what it saves.
    pub sendfile: bool,
}

/// How long a directory entry lives unrefreshed by default: a publisher that moved is
/// followed within it, and origins refresh three times per TTL.
pub const DEFAULT_DIRECTORY_TTL: Duration = Duration::from_secs(10);

/// How long a directory edge waits for an unpublished channel by default: a publisher being
/// started by hand, or by a supervisor after a crash, is found within it.
pub const DEFAULT_EDGE_WAIT_PUBLISHER: Duration = Duration::from_secs(60);

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
            state_dir: None,
            grace: Duration::from_secs(5),
            limits: Limits::default(),
            metrics: None,
            web: None,
            http: None,
            serve_hidden: false,
            edge_of: None,
            directory: None,
            advertise: None,
            directory_ttl: DEFAULT_DIRECTORY_TTL,
            edge_wait_publisher: DEFAULT_EDGE_WAIT_PUBLISHER,
            origin_cert_sha256: None,
            record: None,
            max_relay_hops: chunkcast_protocol::conn::server::DEFAULT_MAX_RELAY_HOPS,
            sendfile: true,
        }
    }

    /// Whether any listening address is reachable from beyond this machine.
    pub fn exposed(&self) -> bool {
        !self.tcp.ip().is_loopback()
            || !self.quic.ip().is_loopback()
            || self.web.is_some_and(|w| !w.ip().is_loopback())
            || self.http.is_some_and(|h| !h.ip().is_loopback())
    }
}

/// Why the configuration file or the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The command line is wrong (clap's message, usage included).
    #[error("{0}")]
    Flags(String),
    /// The configuration file could not be read.
    #[error("config file {path}: {cause}")]
    ConfigRead {
        /// The file.
        path: String,
        /// The error.
        cause: std::io::Error,
    },
    /// The configuration file is not valid TOML or has a key no flag has (the message says
    /// where, and which key).
    #[error("config file {path}: {message}")]
    ConfigParse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key's value is out of the range its flag accepts, or keys that go together are not.
    #[error("config file {path}: {key}: {message}")]
    ConfigValue {
        /// The file.
        path: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The state directory or the certificate kept in it is unusable.
    #[error("state directory {dir}: {message}")]
    State {
        /// The directory.
        dir: String,
        /// What is wrong, and what to do.
        message: String,
    },
}
