//! Command-line flags (`chunkcast-server --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::config::{Config, DEFAULT_LISTEN, Limits, SetupError};

/// The largest `--max-frame-bytes`: a plain connection is told from TLS by its first byte,
/// which is a frame length's high byte and must stay 0.
const MAX_FRAME_BYTES: u64 = (1 << 24) - 1;
/// The smallest `--max-frame-bytes`: room for a `HELLO` with a long token and for small chunks.
const MIN_FRAME_BYTES: u64 = 4096;

fn default_limits() -> Limits {
    Limits::default()
}

/// What `--help` adds after the flags.
const AFTER_HELP: &str = "\
Every flag can also be set in a TOML file given with --config, as a key named like the flag
without its leading dashes (`listen = \"0.0.0.0:7700\"`, `max-connections = 100`, `allow-anonymous = true`);
flags on the command line override the file.

Logs go to stderr, one line per request at the default level (info). Set RUST_LOG to change
it: RUST_LOG=debug for more, RUST_LOG=warn for refusals and failures only.";

/// Serves a media library over TCP (plain and TLS on one port) and QUIC.
#[derive(Debug, Parser)]
#[command(name = "chunkcast-server", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Read settings from this TOML file (keys: the flags' names without the leading `--`);
    /// flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Read verified downloads' bytes before sending them on plain TCP, instead of letting
    /// the kernel send them from the page cache (sendfile). For filesystems whose sendfile
    /// misbehaves, and to measure what it saves.
    #[arg(long)]
    pub no_sendfile: bool,
    /// Save every publisher run of every live channel into DIR, a file each
    /// (CHANNEL-STARTMS-N.mjpeg, .y4m, .wav or .mp4), finished when the run ends.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// PEM certificate chain (with --key). Default: a self-signed certificate.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where the self-signed certificate and its key are kept, so that the cert-sha256 that
    /// clients pin stays the same across restarts. Default: `chunkcast` in the user's data
    /// directory (~/.local/share/chunkcast on Linux).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// Serve the library and live channels over HTTP/1.1 and HTTP/2 at ADDR (plain and TLS
    /// on one port), for HTTP caches, CDNs, curl and HLS players: docs/HTTP.md. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
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
    /// Milliseconds a live channel whose publisher went away without ending it is kept for a
    /// returning publisher, which then continues its numbering; 0: removed at once.
    #[arg(long, value_name = "MS",
          default_value_t = default_limits().live_linger.as_millis() as u64)]
    pub live_linger_ms: u64,
    /// Be an edge relay of URL: a directory (redis://HOST:PORT) or a fixed origin
    /// (tcp://, tcps://, quic://HOST:PORT). Live channels are subscribed to there on their
    /// first local viewer and fanned out here; publishing them here is refused.
    #[arg(long, value_name = "URL")]
    pub edge_of: Option<String>,
    /// Register every live channel published here in this directory (redis://HOST:PORT),
    /// so that edges find it.
    #[arg(long, value_name = "URL")]
    pub directory: Option<String>,
    /// The URL edges should dial to reach this server, as registered in --directory.
    /// Default: tcp:// and the TCP listening address.
    #[arg(long, value_name = "URL", requires = "directory")]
    pub advertise: Option<String>,
    /// Milliseconds a directory entry lives unrefreshed: edges follow a publisher that moved
    /// to another origin within it.
    #[arg(long, value_name = "MS",
          default_value_t = crate::config::DEFAULT_DIRECTORY_TTL.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub directory_ttl_ms: u64,
    /// With --edge-of redis://: milliseconds a viewer of a channel no origin has yet is held
    /// (the directory looked at again meanwhile) before it is refused as not found.
    #[arg(long, value_name = "MS",
          default_value_t = crate::config::DEFAULT_EDGE_WAIT_PUBLISHER.as_millis() as u64)]
    pub edge_wait_publisher_ms: u64,
    /// With --edge-of: the SHA-256 (hex) of the origins' certificate to pin for tcps:// and
    /// quic:// (origins sharing one --state-dir certificate). Default: the system's roots.
    #[arg(long, value_name = "HEX")]
    pub origin_cert_sha256: Option<String>,
    /// The most edge relays a subscription may come through (an edge of an edge of ... this
    /// server): a longer chain is refused with error 18 `relay`.
    #[arg(long, value_name = "N",
          default_value_t = chunkcast_protocol::conn::server::DEFAULT_MAX_RELAY_HOPS as u8,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub max_relay_hops: u8,
}

/// The `--config` file: every flag, by its long name without `--`, each optional. Unknown keys are refused
/// (with their name), so that a typo cannot silently leave a default in place.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    root: Option<PathBuf>,
    listen: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    quic: Option<SocketAddr>,
    token: Option<String>,
    allow_anonymous: Option<bool>,
    allow_plaintext: Option<bool>,
    serve_hidden: Option<bool>,
    no_sendfile: Option<bool>,
    record: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    grace: Option<u64>,
    metrics: Option<SocketAddr>,
    web: Option<SocketAddr>,
    http: Option<SocketAddr>,
    max_connections: Option<u64>,
    max_connections_per_ip: Option<u64>,
    max_streams: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_frame_bytes: Option<u64>,
    max_requests_per_sec: Option<u64>,
    live_linger_ms: Option<u64>,
    edge_of: Option<String>,
    directory: Option<String>,
    advertise: Option<String>,
    directory_ttl_ms: Option<u64>,
    edge_wait_publisher_ms: Option<u64>,
    origin_cert_sha256: Option<String>,
    max_relay_hops: Option<u64>,
}

impl Args {
    /// Parses the process's command line (exiting with clap's message on a usage error or
    /// `--help`), reads `--config` if given, and returns the configuration.
    pub fn load() -> Result<Config, SetupError> {
        let matches = Self::command().get_matches();
        Self::from_matches(&matches)
    }

    /// [`Args::load`] for a given command line; usage errors are returned, not printed.
    pub fn load_from<I, T>(args: I) -> Result<Config, SetupError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command()
            .try_get_matches_from(args)
            .map_err(|e| SetupError::Flags(e.to_string()))?;
        Self::from_matches(&matches)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Config, SetupError> {
        let mut args =
            Self::from_arg_matches(matches).map_err(|e| SetupError::Flags(e.to_string()))?;
        if let Some(path) = args.config.clone() {
            args.merge_file(&path, matches)?;
        }
        if args.state_dir.is_none() {
            args.state_dir = crate::state::default_dir();
        }
        Ok(args.into_config())
    }

    /// Takes from the file every setting not given on the command line (or in its
    /// environment variable).
    fn merge_file(
        &mut self,
        path: &std::path::Path,
        matches: &ArgMatches,
    ) -> Result<(), SetupError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| SetupError::ConfigRead {
            path: shown.clone(),
            cause,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| SetupError::ConfigParse {
            path: shown.clone(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        // Relative paths in the file are relative to the file, as a service's would be.
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let rel = |p: PathBuf| base.join(p);
        let bad = |key: &'static str, message: String| SetupError::ConfigValue {
            path: shown.clone(),
            key,
            message,
        };
        let ranged = |key: &'static str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(bad(key, format!("{v} is out of range {min}..={max}")))
            }
        };
        macro_rules! take {
            ($field:ident, $v:ident => $e:expr) => {
                if let Some($v) = file.$field {
                    if !given(stringify!($field)) {
                        self.$field = $e;
                    }
                }
            };
        }
        take!(root, v => Some(rel(v)));
        take!(listen, v => v);
        take!(tcp, v => Some(v));
        take!(quic, v => Some(v));
        take!(token, v => Some(v));
        take!(allow_anonymous, v => v);
        take!(allow_plaintext, v => v);
        take!(serve_hidden, v => v);
        take!(no_sendfile, v => v);
        take!(record, v => Some(rel(v)));
        take!(cert, v => Some(rel(v)));
        take!(key, v => Some(rel(v)));
        take!(state_dir, v => Some(rel(v)));
        take!(grace, v => v);
        take!(metrics, v => Some(v));
        take!(web, v => Some(v));
        take!(http, v => Some(v));
        let big = usize::MAX as u64;
        take!(max_connections, v => ranged("max-connections", v, 1, big)? as usize);
        take!(max_connections_per_ip, v => ranged("max-connections-per-ip", v, 1, big)? as usize);
        take!(max_streams, v => ranged("max-streams", v, 1, big)? as usize);
        take!(handshake_timeout_ms, v => ranged("handshake-timeout-ms", v, 1, u64::MAX)?);
        take!(idle_timeout_ms, v => ranged("idle-timeout-ms", v, 1, u64::MAX)?);
        take!(max_frame_bytes, v => ranged("max-frame-bytes", v, MIN_FRAME_BYTES, MAX_FRAME_BYTES)?);
        take!(max_requests_per_sec, v =>
            ranged("max-requests-per-sec", v, 1, u64::from(u32::MAX))? as u32);
        take!(live_linger_ms, v => v);
        take!(edge_of, v => Some(v));
        take!(directory, v => Some(v));
        take!(advertise, v => Some(v));
        take!(directory_ttl_ms, v => ranged("directory-ttl-ms", v, 100, u64::MAX)?);
        take!(edge_wait_publisher_ms, v => v);
        take!(origin_cert_sha256, v => Some(v));
        take!(max_relay_hops, v => ranged("max-relay-hops", v, 1, 255)? as u8);
        if self.cert.is_some() != self.key.is_some() {
            let key = if self.cert.is_some() { "key" } else { "cert" };
            return Err(bad(
                key,
                "cert and key go together: give both, or neither".into(),
            ));
        }
        Ok(())
    }

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
        c.sendfile = !self.no_sendfile;
        c.record = self.record;
        c.cert = self.cert.zip(self.key);
        c.state_dir = self.state_dir;
        c.grace = std::time::Duration::from_secs(self.grace);
        c.metrics = self.metrics;
        c.web = self.web;
        c.http = self.http;
        let l = &mut c.limits;
        l.max_connections = self.max_connections;
        l.max_connections_per_ip = self.max_connections_per_ip;
        l.max_streams_per_connection = self.max_streams;
        l.handshake_timeout = std::time::Duration::from_millis(self.handshake_timeout_ms);
        l.idle_timeout = std::time::Duration::from_millis(self.idle_timeout_ms);
        // In range: clap checked it against MAX_FRAME_BYTES.
        l.wire.max_frame_len = self.max_frame_bytes as u32;
        l.max_requests_per_sec = self.max_requests_per_sec;
        l.live_linger = std::time::Duration::from_millis(self.live_linger_ms);
        c.edge_of = self.edge_of;
        c.directory = self.directory;
        c.advertise = self.advertise;
        c.directory_ttl = std::time::Duration::from_millis(self.directory_ttl_ms);
        c.edge_wait_publisher = std::time::Duration::from_millis(self.edge_wait_publisher_ms);
        c.origin_cert_sha256 = self.origin_cert_sha256;
        c.max_relay_hops = usize::from(self.max_relay_hops);
        c
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A flag added without its `--config` key would be refused in the file as unknown.
    #[test]
    fn every_flag_is_a_config_key() {
        for arg in Args::command().get_arguments() {
            let Some(name) = arg.get_long() else { continue };
            if matches!(name, "config" | "help" | "version") {
                continue;
            }
            // The value's type may be wrong for the key; the key itself must be known.
            if let Err(e) = toml::from_str::<FileConfig>(&format!("{name} = 0")) {
                assert!(!e.to_string().contains("unknown field"), "--{name}: {e}");
            }
        }
    }

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
        assert_eq!(c.limits.live_linger, d.live_linger);
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
            "--live-linger-ms=250",
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
        assert_eq!(l.live_linger.as_millis(), 250);
        assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn tier_flags_set_the_tiers() {
        let c = Args::parse_from([
            "chunkcast-server",
            "--edge-of=redis://10.0.0.9:6379",
            "--directory=redis://10.0.0.9:6379",
            "--advertise=tcp://10.0.0.1:7700",
            "--directory-ttl-ms=1500",
            "--max-relay-hops=2",
            "--edge-wait-publisher-ms=3000",
        ])
        .into_config();
        assert_eq!(c.edge_wait_publisher.as_millis(), 3000);
        assert_eq!(c.max_relay_hops, 2);
        assert_eq!(c.edge_of.as_deref(), Some("redis://10.0.0.9:6379"));
        assert_eq!(c.directory.as_deref(), Some("redis://10.0.0.9:6379"));
        assert_eq!(c.advertise.as_deref(), Some("tcp://10.0.0.1:7700"));
        assert_eq!(c.directory_ttl.as_millis(), 1500);
        // An advertised URL means nothing without a directory to advertise it in.
        assert!(
            Args::try_parse_from(["chunkcast-server", "--advertise=tcp://10.0.0.1:7700"]).is_err()
        );
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

    fn with_file(toml: &str, extra: &[&str]) -> Result<Config, SetupError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, toml).unwrap();
        let mut args = vec!["chunkcast-server", "--config", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        Args::load_from(args)
    }

    #[test]
    fn the_config_file_sets_every_kind_of_flag_and_the_command_line_wins() {
        let c = with_file(
            "listen = \"127.0.0.1:7811\"\nallow-anonymous = true\nmax-streams = 3\n\
             idle-timeout-ms = 2500\nweb = \"127.0.0.1:8080\"\nstate-dir = \"/var/lib/cc\"\n\
             http = \"127.0.0.1:8081\"\n",
            &["--max-streams=5"],
        )
        .unwrap();
        assert_eq!(c.tcp, "127.0.0.1:7811".parse().unwrap());
        assert_eq!(c.quic, c.tcp);
        assert!(c.allow_anonymous);
        assert_eq!(c.limits.max_streams_per_connection, 5, "the flag wins");
        assert_eq!(c.limits.idle_timeout.as_millis(), 2500);
        assert_eq!(c.web, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.http, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/cc")));
    }

    #[test]
    fn config_file_mistakes_name_the_key() {
        let e = with_file("max-conections = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max-conections"), "{e}");
        let e = with_file("max-frame-bytes = 100\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max-frame-bytes") && e.contains("out of range"),
            "{e}"
        );
        let e = with_file("cert = \"c.pem\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key") && e.contains("go together"), "{e}");
        let e = with_file("listen = 7700\n", &[]).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
    }
}
