//! Command-line flags (`chunkcast --help`) and the commands they run.

use std::io::IsTerminal;
use std::path::PathBuf;

use chunkcast_protocol::net::tls::Trust;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::ClientError;
use crate::get::{DEFAULT_RETRIES, GetOptions, get_resuming};
use crate::session::{ConnectOptions, Session};
use crate::url::Url;

/// Lists, gets and benchmarks media from a chunkcast server.
#[derive(Debug, Parser)]
#[command(name = "chunkcast", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a server's library.
    Ls {
        /// tcp://HOST:PORT/PREFIX (PREFIX may be empty, or live/ for channels), tcps://… or quic://…
        url: String,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Save a file byte for byte, verified.
    Get {
        /// tcp://HOST:PORT/PATH, tcps://… or quic://…
        url: String,
        /// Output file (default: the file's name, in the current directory).
        #[arg(short, long)]
        o: Option<PathBuf>,
        /// Continue an interrupted download from what is on disk.
        #[arg(long)]
        resume: bool,
        /// Have the server pace chunks by their timestamps.
        #[arg(long)]
        realtime: bool,
        /// Payload bytes per chunk (default: the server's).
        #[arg(long, default_value_t = 0)]
        chunk_size: u32,
        /// Compress chunks where it pays.
        #[arg(long, value_enum, default_value_t = Compress::None)]
        compress: Compress,
        /// No progress bar.
        #[arg(short, long)]
        q: bool,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Play a stream in real time through a playout buffer, then print its statistics.
    Play {
        /// tcp://HOST:PORT/PATH, tcps://… or quic://…
        url: String,
        /// Buffer, sinks, statistics, trust and auth.
        #[command(flatten)]
        playback: PlaybackArgs,
    },
    /// Watch a live channel (URL/live/NAME) in real time, from its latest keyframe.
    Watch {
        /// tcp://HOST:PORT/live/NAME, tcps://… or quic://…
        url: String,
        /// Buffer, sinks, statistics, trust and auth.
        #[command(flatten)]
        playback: PlaybackArgs,
    },
    /// Publish a file to a live channel (URL/live/NAME) in real time; viewers join with `watch`.
    Publish {
        /// tcp://HOST:PORT/live/NAME, tcps://… or quic://…
        url: String,
        /// The media file to send (WAV, MJPEG, Y4M, MP4, ...).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Start over at the end, until Ctrl-C.
        #[arg(long = "loop")]
        looped: bool,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Join a one-to-one call (URL/call/ROOM): send your files, receive the other side's, and
    /// print the one-way latency.
    Call {
        /// tcp://HOST:PORT/call/ROOM, tcps://… or quic://…
        url: String,
        /// A video and/or an audio file to send (one of each at most).
        #[arg(long, value_name = "FILE", required = true)]
        from: Vec<PathBuf>,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Start a server on loopback, get every sample over TCP, TLS and QUIC, and verify them.
    Demo,
    /// Measure download throughput, latency, CPU and memory per transport and chunk size.
    Bench(crate::bench::Args),
}

/// What `play` and `watch` share.
#[derive(Debug, Clone, Args)]
pub struct PlaybackArgs {
    /// Playout buffer: the first unit plays this long after it arrives.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub buffer_ms: u64,
    /// Where to render: file:PATH, wav:PATH, pcm:-, mjpeg:-, frames:DIR, or null (the
    /// default: discard, still in real time). Repeat for several; one may use stdout (-).
    #[arg(long, value_name = "SINK")]
    pub sink: Vec<crate::sink::Spec>,
    /// Statistics format (printed on stderr when a sink writes to stdout).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = crate::play::StatsFormat::Table)]
    pub stats: crate::play::StatsFormat,
    /// Trust and auth.
    #[command(flatten)]
    pub conn: ConnArgs,
}

impl PlaybackArgs {
    async fn run(self, url: &Url) -> Result<(), ClientError> {
        let buffer = std::time::Duration::from_millis(self.buffer_ms);
        crate::play::run(url, &self.conn.options()?, buffer, self.sink, self.stats).await
    }
}

/// Compression choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compress {
    /// Per-chunk lz4, kept only where it shrinks the chunk.
    Lz4,
    /// None.
    None,
}

/// Trust and auth flags shared by every networked command.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Trust only the certificate with this SHA-256 (the server's listening line prints it).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["ca", "insecure"])]
    pub cert_sha256: Option<String>,
    /// Trust certificates signed by the CA(s) in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's certificate (anyone on the path can read and change the data).
    #[arg(long)]
    pub insecure: bool,
    /// The server's token.
    #[arg(long, env = "CHUNKCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ConnArgs {
    /// The connect options these flags describe.
    pub fn options(&self) -> Result<ConnectOptions, ClientError> {
        let trust = if let Some(pin) = &self.cert_sha256 {
            Trust::pin_from_hex(pin)?
        } else if let Some(ca) = &self.ca {
            Trust::Ca(ca.clone())
        } else if self.insecure {
            eprintln!("chunkcast: warning: --insecure: the server's certificate is not verified");
            Trust::Insecure
        } else {
            Trust::System
        };
        Ok(ConnectOptions {
            trust,
            token: self.token.clone().filter(|t| !t.is_empty()),
            ..Default::default()
        })
    }
}

impl Cli {
    /// Whether the command runs a server in this process too (`demo`, and `bench`, which
    /// embeds one unless given a URL), and so wants a worker thread per core. Every other
    /// command is one client session, which runs best on one thread: its read loop and its
    /// consumer then hand chunks over without cross-thread wake-ups, while the data is still
    /// in cache (measured on a 1 GB get: 14 % less client CPU over TCP, 15 % over QUIC).
    pub fn embeds_server(&self) -> bool {
        matches!(self.command, Command::Demo | Command::Bench(_))
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    match cli.command {
        Command::Ls { url, conn } => {
            let url = Url::parse(&url)?;
            let session = Session::connect(&url, &conn.options()?).await?;
            let entries = session.list(&url.path).await?;
            session.close().await;
            print!("{}", crate::ls::table(&entries));
            Ok(())
        }
        Command::Get {
            url,
            o,
            resume,
            realtime,
            chunk_size,
            compress,
            q,
            conn,
        } => {
            let url = Url::parse(&url)?;
            let opts = GetOptions {
                out: o,
                resume,
                realtime,
                chunk_size,
                compress: compress == Compress::Lz4,
                progress: !q && std::io::stderr().is_terminal(),
            };
            let report = get_resuming(&url, &conn.options()?, &opts, DEFAULT_RETRIES).await?;
            if let Some(note) = &report.note {
                eprintln!("chunkcast: warning: {note}");
            }
            if !q {
                eprintln!(
                    "saved {} ({} bytes, {:.1} MB/s, {})",
                    report.path.display(),
                    report.len,
                    report.mb_per_s(),
                    if report.verified {
                        "digest verified"
                    } else {
                        "no digest to verify"
                    }
                );
            }
            Ok(())
        }
        Command::Play { url, playback } => playback.run(&Url::parse(&url)?).await,
        Command::Watch { url, playback } => {
            let url = Url::parse(&url)?;
            if !url.path.trim_matches('/').starts_with("live/") {
                return Err(ClientError::Usage(format!(
                    "{url} is not a live channel: use …/live/NAME"
                )));
            }
            playback.run(&url).await
        }
        Command::Publish {
            url,
            from,
            looped,
            conn,
        } => crate::live::run_publish(&Url::parse(&url)?, &conn.options()?, &from, looped).await,
        Command::Call { url, from, conn } => {
            crate::live::run_call(&Url::parse(&url)?, &conn.options()?, &from).await
        }
        Command::Demo => crate::demo::run().await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}
