//! Command-line flags (`chunkcast --help`) and the commands they run.

use std::io::IsTerminal;
use std::path::PathBuf;

use chunkcast_transport::tls::Trust;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use tokio_util::sync::CancellationToken;

use chunkcast_client::console::{cancel_on_ctrl_c, print_stdout};
use chunkcast_client::error::ClientError;
use chunkcast_client::get::{DEFAULT_RETRIES, Destination, GetOptions, get_resuming};
use chunkcast_client::ls::human_bytes;
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};

/// Lists, gets, plays, publishes, watches, calls and benchmarks media on a chunkcast server.
///
/// URLs are tcp://HOST:PORT/PATH (plain TCP), tcps://… (TLS over TCP) or quic://…; without
/// :PORT the port is 7700, the server's default. `get` and `watch` also take
/// http://HOST:PORT/PATH and https://… (the server's --http interface, or any HTTP cache or
/// CDN in front of it; without :PORT, 80 and 443).
#[derive(Debug, Parser)]
#[command(name = "chunkcast", version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Shown after every `--help`: what the environment changes.
const AFTER_HELP: &str = "Environment:
  CHUNKCAST_TOKEN  the server's token (same as --token)
  RUST_LOG         log to stderr, e.g. RUST_LOG=debug or RUST_LOG=chunkcast=trace (default: off)

Exit status: 0 on success, 130 after Ctrl-C, 1 on any other failure.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a server's library, a directory of it, one file, or its live channels.
    Ls {
        /// tcp://HOST:PORT/PREFIX (PREFIX: empty for everything, a directory, a file, or
        /// live/ for the live channels), tcps://… or quic://…; without :PORT, port 7700.
        url: String,
        /// One JSON array on stdout instead of the table: objects with the fields path, kind,
        /// codec, size_bytes, duration_us (null when unknown) and viewers.
        #[arg(long)]
        json: bool,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Save a file byte for byte, verified against the server's digest.
    Get {
        /// tcp://HOST:PORT/PATH, tcps://… or quic://…; without :PORT, port 7700. Or
        /// http(s)://HOST:PORT/PATH: the server's --http interface or a cache in front of it,
        /// every chunk verified against the file's digest all the same.
        url: String,
        /// Where to save: a file, an existing directory or DIR/ (saved there under the file's
        /// name), or - for stdout. Default: the file's name, in the current directory.
        #[arg(short, long, value_name = "FILE|DIR/|-")]
        output: Option<PathBuf>,
        /// Continue an interrupted download from FILE.partial (or verify a complete FILE).
        #[arg(long)]
        resume: bool,
        /// Have the server pace chunks by their timestamps.
        #[arg(long)]
        realtime: bool,
        /// Payload bytes per chunk, 1 B to 1 MiB: a number of bytes or with a unit (64KiB,
        /// 1MiB, 16KB). Default: the server's (64 KiB).
        #[arg(long, value_name = "SIZE", value_parser = crate::bench::parse_chunk_size)]
        chunk_size: Option<u32>,
        /// Compress chunks where it pays.
        #[arg(long, value_enum, default_value_t = Compress::None)]
        compress: Compress,
        /// No progress bar and no notes: only errors and warnings.
        #[arg(short, long)]
        quiet: bool,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Play a stream in real time through a playout buffer, then print its statistics.
    Play {
        /// tcp://HOST:PORT/PATH, tcps://… or quic://…; without :PORT, port 7700.
        url: String,
        /// Buffer, sinks, statistics, trust and auth.
        #[command(flatten)]
        playback: PlaybackArgs,
    },
    /// Watch a live channel (URL/live/NAME) in real time, from its latest keyframe.
    Watch {
        /// tcp://HOST:PORT/live/NAME, tcps://… or quic://…; without :PORT, port 7700. Or
        /// http(s)://HOST:PORT/live/NAME: over the server's --http interface or a cache.
        url: String,
        /// When the publisher goes away, wait this long for one to come back (and go on at its
        /// first keyframe); 0 ends the watch instead.
        #[arg(long, value_name = "SECONDS", default_value_t = chunkcast_client::play::DEFAULT_WAIT_PUBLISHER.as_secs())]
        wait_publisher: u64,
        /// Buffer, sinks, statistics, trust and auth.
        #[command(flatten)]
        playback: PlaybackArgs,
    },
    /// Publish a file, or a pipe (`--from -`), to a live channel (URL/live/NAME) in real time;
    /// viewers join with `watch`.
    Publish {
        /// tcp://HOST:PORT/live/NAME, tcps://… or quic://…; without :PORT, port 7700.
        url: String,
        /// The media file to send (WAV, MJPEG, Y4M, MP4, ...), or `-`: standard input, live
        /// (e.g. `ffmpeg … -f mjpeg - | chunkcast publish URL --from -`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// With `--from -`: the input's format, mjpeg, y4m, wav, fmp4 or
        /// pcm:RATE:CHANNELS:FORMAT (FORMAT u8, s16le, s24le, s32le, f32le, mulaw, alaw);
        /// detected from the first bytes when absent (all but pcm).
        #[arg(long, value_name = "FORMAT")]
        format: Option<chunkcast_media::ingest::InputFormat>,
        /// Start over at the end, until Ctrl-C (which ends the channel: viewers see its end).
        #[arg(long = "loop")]
        looped: bool,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Record a live channel (URL/live/NAME) to a file players open: MJPEG to .mjpeg, Y4M to
    /// .y4m, PCM audio to .wav (header finished on stop, Ctrl-C included), fMP4 to .mp4. Goes
    /// on across publisher restarts; a changed stream starts FILE-2.EXT, and so on.
    Record {
        /// tcp://HOST:PORT/live/NAME, tcps://… or quic://…; without :PORT, port 7700.
        url: String,
        /// The file to write (under FILE.partial until finished).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Start a new file (FILE-2.EXT, …) at the first keyframe after this many seconds of
        /// media.
        #[arg(long, value_name = "SECONDS")]
        segment: Option<f64>,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Join a one-to-one call (URL/call/ROOM): send your files, receive the other side's, and
    /// print the one-way latency; with --chat, chat beside it.
    Call {
        /// tcp://HOST:PORT/call/ROOM, tcps://… or quic://…; without :PORT, port 7700.
        url: String,
        /// A video and/or an audio file to send (one of each at most): WAV, MJPEG, Y4M or MP4;
        /// `-` is standard input, live (e.g. `ffmpeg … -f mjpeg - | chunkcast call URL
        /// --from - --from voice.wav`).
        #[arg(long, value_name = "FILE", required_unless_present = "chat")]
        from: Vec<PathBuf>,
        /// With `--from -`: the input's format, as `publish --format` takes it; detected from
        /// the first bytes when absent (all but pcm).
        #[arg(long, value_name = "FORMAT")]
        format: Option<chunkcast_media::ingest::InputFormat>,
        /// Chat in the room: send each line of stdin, print the other side's lines with
        /// their send time. Survives a lost connection (it connects again and resends what
        /// the server had not acknowledged). The call ends at the end of stdin.
        #[arg(long)]
        chat: bool,
        /// Statistics format: per track sent, received, lost, late, concealed, one-way
        /// latency percentiles, and the video's adaptation level.
        #[arg(long, value_enum, value_name = "FORMAT", default_value_t = chunkcast_client::play::StatsFormat::Table)]
        stats: chunkcast_client::play::StatsFormat,
        /// Render what the other side sends, as `play` does: wav:PATH or pcm:- (or pcm:PATH)
        /// for its audio, mjpeg:- (or mjpeg:PATH) or frames:DIR for its video. Repeat for
        /// both; at most one may write to stdout (-), and then statistics and chat go to
        /// stderr.
        #[arg(long, value_name = "SINK")]
        sink: Vec<chunkcast_client::sink::Spec>,
        /// Trust and auth.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Start a server on loopback, get every sample over TCP, TLS and QUIC, and verify them.
    Demo,
    /// Print a shell completion script on stdout, e.g.
    /// `chunkcast completions bash > ~/.local/share/bash-completion/completions/chunkcast`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g. `chunkcast man | man -l -`, or
    /// `chunkcast man get` for one command's.
    Man {
        /// A command (ls, get, play, …): its own page, chunkcast-COMMAND(1).
        command: Option<String>,
    },
    /// Measure download throughput, latency, CPU and memory per transport and chunk size.
    Bench(crate::bench::Args),
}

/// What `play` and `watch` share.
#[derive(Debug, Clone, Args)]
pub struct PlaybackArgs {
    /// Playout buffer: the first unit plays this long after it arrives.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub buffer_ms: u64,
    /// Where to render: file:PATH or file:- (the stream's bytes), wav:PATH (a WAV of what
    /// played), pcm:- or pcm:PATH (raw PCM), mjpeg:- or mjpeg:PATH (the played JPEGs),
    /// frames:DIR (one PNG per frame), or null (the default: discard, still in real time).
    /// Repeat for several; at most one may write to stdout (-).
    #[arg(long, value_name = "SINK")]
    pub sink: Vec<chunkcast_client::sink::Spec>,
    /// Statistics format (printed on stderr when a sink writes to stdout).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = chunkcast_client::play::StatsFormat::Table)]
    pub stats: chunkcast_client::play::StatsFormat,
    /// play: ask for a progressive MP4 as fragmented MP4 (init segment, then one fragment per
    /// keyframe group), e.g. `--fragment --sink file:- | ffplay -`.
    #[arg(long)]
    pub fragment: bool,
    /// Trust and auth.
    #[command(flatten)]
    pub conn: ConnArgs,
}

impl PlaybackArgs {
    /// `wait_publisher`: `Some` for `watch`.
    async fn run(
        self,
        url: &Url,
        wait_publisher: Option<std::time::Duration>,
    ) -> Result<(), ClientError> {
        let buffer = std::time::Duration::from_millis(self.buffer_ms);
        chunkcast_client::play::run_as(
            url,
            &self.conn.options_for(url)?,
            buffer,
            self.sink,
            self.stats,
            wait_publisher,
            self.fragment,
        )
        .await
    }
}

/// Compression choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compress {
    /// Per-chunk lz4, kept only where it shrinks the chunk.
    Lz4,
    /// No compression.
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
    /// The highest protocol version to offer; 1 turns verified streaming off (for A/B
    /// measurements against version 1 behaviour). Hidden: not a user's choice to make.
    #[arg(long, value_name = "N", default_value_t = chunkcast_protocol::wire::VERSION, hide = true)]
    pub protocol_version: u16,
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
            max_version: self.protocol_version,
            ..Default::default()
        })
    }

    /// The connect options for `url`: as [`ConnArgs::options`], with a warning when a trust
    /// flag cannot apply because the URL's transport has no certificate (plain `tcp://`).
    pub fn options_for(&self, url: &Url) -> Result<ConnectOptions, ClientError> {
        if let Some(warning) = self.unused_trust(url.scheme) {
            eprintln!("chunkcast: warning: {warning}");
        }
        self.options()
    }

    /// Why the trust flags are ignored on `scheme`, if they are.
    pub fn unused_trust(&self, scheme: Scheme) -> Option<String> {
        if scheme != Scheme::Tcp && scheme != Scheme::Http {
            return None;
        }
        let flag = if self.cert_sha256.is_some() {
            "--cert-sha256"
        } else if self.ca.is_some() {
            "--ca"
        } else {
            return None;
        };
        let secure = if scheme == Scheme::Http {
            "https://"
        } else {
            "tcps:// or quic://"
        };
        Some(format!(
            "{flag} is ignored: plain {}:// has no certificate to check (use {secure} to \
             verify the server)",
            scheme.name()
        ))
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
        Command::Ls { url, json, conn } => {
            let url = Url::parse(&url)?;
            let session = Session::connect(&url, &conn.options_for(&url)?).await?;
            let listed = chunkcast_client::ls::list(&session, &url.path).await;
            session.close().await;
            let entries = listed?;
            let text = if json {
                chunkcast_client::ls::json(&entries)
            } else {
                chunkcast_client::ls::table_for(&url.path, &entries)
            };
            print_stdout(&text)
        }
        Command::Get {
            url,
            output,
            resume,
            realtime,
            chunk_size,
            compress,
            quiet,
            conn,
        } => {
            let url = Url::parse(&url)?;
            // Where it goes is checked before connecting: a wrong -o costs no download.
            let to_stdout = chunkcast_client::get::destination(output.as_deref(), &url.path)?
                == Destination::Stdout;
            if to_stdout && resume {
                return Err(ClientError::Usage(
                    "--resume continues a file on disk: it cannot be used with -o -".into(),
                ));
            }
            let opts = GetOptions {
                out: output,
                resume,
                realtime,
                chunk_size: chunk_size.unwrap_or(0),
                compress: compress == Compress::Lz4,
                progress: !quiet && !to_stdout && std::io::stderr().is_terminal(),
                notes: !quiet,
                cancel: CancellationToken::new(),
            };
            let ctrl_c = cancel_on_ctrl_c(opts.cancel.clone());
            let connect = conn.options_for(&url)?;
            let result = if url.scheme.is_http() {
                for (set, flag) in [
                    (realtime, "--realtime"),
                    (compress == Compress::Lz4, "--compress"),
                ] {
                    if set {
                        eprintln!("chunkcast: warning: {flag} does not apply over HTTP");
                    }
                }
                match chunkcast_client::http::HttpClient::new(&url, &connect) {
                    Ok(client) => chunkcast_client::http::get::get(&client, &url.path, &opts).await,
                    Err(e) => Err(e),
                }
            } else {
                get_resuming(&url, &connect, &opts, DEFAULT_RETRIES).await
            };
            ctrl_c.abort();
            let report = result.map_err(|e| match e {
                ClientError::Cut {
                    cause,
                    partial,
                    have,
                    ..
                } => ClientError::Cut {
                    cause,
                    partial,
                    have,
                    hint: format!("resume with: {}", resume_command()),
                },
                e => e,
            })?;
            if let Some(note) = &report.note {
                eprintln!("chunkcast: warning: {note}");
            }
            if !quiet {
                eprintln!("{}", get_summary(&report));
            }
            Ok(())
        }
        Command::Play { url, playback } => playback.run(&Url::parse(&url)?, None).await,
        Command::Watch {
            url,
            wait_publisher,
            playback,
        } => {
            let url = Url::parse(&url)?;
            if !url.path.trim_matches('/').starts_with("live/") {
                return Err(ClientError::Usage(format!(
                    "{url} is not a live channel: use …/live/NAME"
                )));
            }
            let wait = std::time::Duration::from_secs(wait_publisher);
            playback.run(&url, Some(wait)).await
        }
        Command::Publish {
            url,
            from,
            format,
            looped,
            conn,
        } => {
            let url = Url::parse(&url)?;
            let opts = conn.options_for(&url)?;
            chunkcast_client::live::run_publish(&url, &opts, &from, looped, format).await
        }
        Command::Record {
            url,
            output,
            segment,
            conn,
        } => {
            let url = Url::parse(&url)?;
            let segment = match segment {
                Some(s) if !(s.is_finite() && s > 0.0) => {
                    return Err(ClientError::Usage(
                        "--segment takes a positive number of seconds".into(),
                    ));
                }
                s => s.map(std::time::Duration::from_secs_f64),
            };
            let opts = conn.options_for(&url)?;
            chunkcast_client::record::run_record(&url, &opts, &output, segment).await
        }
        Command::Call {
            url,
            from,
            format,
            chat,
            stats,
            sink,
            conn,
        } => {
            let url = Url::parse(&url)?;
            let options = conn.options_for(&url)?;
            chunkcast_client::live::run_call(&url, &options, &from, chat, stats, sink, format).await
        }
        Command::Demo => crate::demo::run().await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "chunkcast", &mut script);
            print_stdout(&String::from_utf8_lossy(&script))
        }
        Command::Man { command } => print_stdout(&man_page(command.as_deref())?),
    }
}

/// The manual page of `chunkcast`, or of one of its commands (`chunkcast-get(1)`), as roff.
pub fn man_page(command: Option<&str>) -> Result<String, ClientError> {
    let mut cli = Cli::command();
    cli.build();
    let cmd = match command {
        None => cli,
        Some(name) => {
            let names: Vec<String> = cli
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            let sub = cli.find_subcommand(name).cloned().ok_or_else(|| {
                ClientError::Usage(format!(
                    "no command {name:?}: man takes one of {}",
                    names.join(", ")
                ))
            })?;
            // `build` named it chunkcast-NAME for display, the page's title.
            sub.version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(ClientError::stdout)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// The line `get` ends with: what was saved, how big (decimal units, as everywhere), how
/// fast, and whether the digest was checked.
fn get_summary(r: &chunkcast_client::get::GetReport) -> String {
    let check = if r.verified {
        "digest verified"
    } else {
        "no digest to verify"
    };
    let size = format!("{} bytes", r.len);
    if r.already_complete {
        return format!(
            "{} was already complete ({}, {size}): {check}, nothing downloaded",
            r.path.display(),
            human_bytes(r.len)
        );
    }
    let resumed = if r.resumed_from > 0 {
        format!(", {} of it resumed", human_bytes(r.resumed_from))
    } else {
        String::new()
    };
    let rate = format!("{}/s", human_bytes((r.mb_per_s() * 1e6) as u64));
    if r.path.as_os_str() == "-" {
        format!(
            "wrote {} to stdout ({size}, {rate}, {check})",
            human_bytes(r.len)
        )
    } else {
        format!(
            "saved {} ({}, {size}{resumed}, {rate}, {check})",
            r.path.display(),
            human_bytes(r.len)
        )
    }
}

/// The command line that resumes this `get`: the one that ran, with `--resume` added and a
/// token given on it replaced by `"$CHUNKCAST_TOKEN"` (never echo a secret).
fn resume_command() -> String {
    let mut out = vec!["chunkcast".to_owned()];
    let mut args = std::env::args().skip(1);
    let has_resume = std::env::args().any(|a| a == "--resume");
    while let Some(a) = args.next() {
        if a == "--token" {
            out.push(a);
            if args.next().is_some() {
                out.push("\"$CHUNKCAST_TOKEN\"".into());
            }
            continue;
        }
        if a.starts_with("--token=") {
            out.push("--token=\"$CHUNKCAST_TOKEN\"".into());
            continue;
        }
        let get = a == "get" && out.len() == 1;
        out.push(shell_quote(&a));
        if get && !has_resume {
            out.push("--resume".into());
        }
    }
    out.join(" ")
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
