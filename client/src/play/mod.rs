//! `chunkcast play`: open a stream in realtime mode and render it at its play times.
//!
//! Chunks are assembled into units ([`UnitAssembler`]), each unit goes into a
//! [`PlayoutBuffer`] on arrival, and the buffer releases units at their play time on this
//! machine's clock (first arrival + buffer + pts offset), concealing any gap; a
//! [`Sink`] renders what it releases. Time is read through tokio, so tests with a
//! paused clock drive it too.
//!
//! The startup delay is measured from the open request to the first unit played: the open's
//! round trip, the first unit's transfer, then the buffer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chunkcast::error::ClientError> {
//! use chunkcast::play::{PlayOptions, play};
//! use chunkcast::session::{ConnectOptions, Session};
//!
//! let url = chunkcast::url::Url::parse("tcp://127.0.0.1:7700/sweep-48k-stereo-s16.wav")?;
//! let session = Session::connect(&url, &ConnectOptions::default()).await?;
//! let opts = PlayOptions {
//!     sinks: vec!["wav:out.wav".parse()?],
//!     ..PlayOptions::default()
//! };
//! let report = play(&session, &url.path, &opts).await?;
//! println!("{}", report.stats);
//! session.close().await;
//! # Ok(()) }
//! ```

mod report;

use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_protocol::chunk::UnitAssembler;
use chunkcast_protocol::playout::{Config, Kind, Output, PlayoutBuffer, Unit};
use chunkcast_protocol::wire::{Mode, Opened, Resume};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

pub use report::PlayReport;

use crate::error::ClientError;
use crate::session::{ConnectOptions, Incoming, OpenOptions, Session};
use crate::sink::{self, Sink, Spec};
use crate::url::Url;

/// The playout buffer when `--buffer-ms` is not given: absorbs the jitter of a loaded LAN or
/// a good Internet path while keeping the startup delay short.
pub const DEFAULT_BUFFER: Duration = Duration::from_millis(100);

/// The largest unit assembled: a 4K 4:4:4 Y4M frame is 25 MB, and a larger still image
/// would not decode within the `image` crate's default memory limit anyway.
const MAX_UNIT_BYTES: usize = 64 << 20;

/// Chunks taken per wake-up beyond the first, so a flood cannot hold off the playout timer:
/// 5 s of 20 ms audio blocks, far more than any burst a playout buffer absorbs.
const MAX_BURST: usize = 256;

/// A timer that fires this much after its instant means the task was starved.
const LATE_WAKE: Duration = Duration::from_millis(2);

/// How long playback waits for the server's next chunk (concealing all the while) before
/// giving up. Realtime streams send at least one chunk per frame or audio block.
const STALL: Duration = Duration::from_secs(15);

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Playout delay: the first unit plays this long after it arrived.
    pub buffer: Duration,
    /// Where to render; none means [`sink::Null`].
    pub sinks: Vec<Spec>,
    /// Stops playback cleanly when cancelled (Ctrl-C): the stream is cancelled, the sinks
    /// are finished and a report is still returned, with
    /// [`interrupted`](PlayReport::interrupted) set.
    pub cancel: CancellationToken,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            buffer: DEFAULT_BUFFER,
            sinks: Vec::new(),
            cancel: CancellationToken::new(),
        }
    }
}

/// The clock, read through tokio (so a paused test clock drives playout too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Opens `path` on `session` in realtime mode and plays it to `opts.sinks` until it ends or
/// `opts.cancel` is cancelled.
pub async fn play(
    session: &Session,
    path: &str,
    opts: &PlayOptions,
) -> Result<PlayReport, ClientError> {
    Player::open(session, path, opts).await?.run().await
}

/// An opened stream with its sinks, ready to play.
pub struct Player {
    incoming: Incoming,
    sink: Box<dyn Sink>,
    buffer: PlayoutBuffer<Bytes>,
    assembler: UnitAssembler,
    codec: Codec,
    cancel: CancellationToken,
    request_at: Instant,
    dropped_units: u64,
    /// Media time at which the last played unit ends.
    last_end_us: Option<u64>,
    /// When the last chunk arrived (or the stream was opened): bounds a stall.
    last_arrival: Instant,
    /// The server's note that the file is damaged (`damaged at byte N: …`).
    damage: Option<String>,
    /// A unit found broken here (an MJPEG frame without its end marker): nothing after it is
    /// played.
    broken: Option<String>,
    /// File offset of the unit being gathered.
    unit_offset: Option<u64>,
    /// What is played, for messages.
    path: String,
}

/// How a note about a damaged file starts (PROTOCOL.md §4.9): `damaged at byte N: what`.
const DAMAGED: &str = "damaged at byte ";

impl Player {
    /// Asks for `path` in realtime mode and opens the sinks for its codec.
    pub async fn open(
        session: &Session,
        path: &str,
        opts: &PlayOptions,
    ) -> Result<Self, ClientError> {
        sink::check(&opts.sinks)?;
        let request_at = now();
        let incoming = session
            .open(&OpenOptions {
                path: path.to_owned(),
                mode: Mode::Realtime,
                resume: Resume::Start,
                compress: false,
                raw: false,
                chunk_size: 0,
            })
            .await?;
        Self::with(incoming, path, opts, request_at).await
    }

    /// Subscribes to a live channel (`live/NAME`) and opens the sinks for its codec: the
    /// player behind `chunkcast watch`. It starts at the channel's latest keyframe.
    pub async fn watch(
        session: &Session,
        channel: &str,
        opts: &PlayOptions,
    ) -> Result<Self, ClientError> {
        sink::check(&opts.sinks)?;
        let request_at = now();
        let incoming = session.subscribe(channel).await?;
        Self::with(incoming, channel, opts, request_at).await
    }

    async fn with(
        incoming: Incoming,
        path: &str,
        opts: &PlayOptions,
        request_at: Instant,
    ) -> Result<Self, ClientError> {
        let codec = incoming.opened.codec;
        let (kind, buffer) = match codec {
            Codec::Audio(_) => (Kind::Audio, opts.buffer),
            Codec::Video(_) => (Kind::Video, opts.buffer),
            // One unit: shown as soon as it is complete.
            Codec::Image(_) => (Kind::Video, Duration::ZERO),
            Codec::Bytes => {
                let total = incoming.opened.total_len;
                let note = incoming.opened.note.clone();
                incoming.cancel().await;
                if total == Some(0) {
                    return Err(ClientError::Usage(format!(
                        "{path} is empty (0 bytes): nothing to play"
                    )));
                }
                let why = note.map(|n| format!(" ({n})")).unwrap_or_default();
                return Err(ClientError::Usage(format!(
                    "{path} is not audio, video or an image{why}; save it with `chunkcast get`"
                )));
            }
        };
        // A note saying where the file is damaged: what comes before plays, then it is reported.
        let damage = incoming
            .opened
            .note
            .clone()
            .filter(|n| n.starts_with(DAMAGED));
        let sink = match sink::open(&opts.sinks, &codec) {
            Ok(s) => s,
            Err(e) => {
                incoming.cancel().await;
                return Err(e);
            }
        };
        let mut buffer = PlayoutBuffer::new(Config {
            buffer,
            kind,
            ..Config::default()
        });
        buffer.set_request_instant(request_at);
        Ok(Self {
            incoming,
            sink,
            buffer,
            assembler: UnitAssembler::new(codec, MAX_UNIT_BYTES),
            codec,
            cancel: opts.cancel.clone(),
            request_at,
            dropped_units: 0,
            last_end_us: None,
            last_arrival: now(),
            damage,
            broken: None,
            unit_offset: None,
            path: path.to_owned(),
        })
    }

    /// What the server said about the stream.
    pub fn opened(&self) -> &Opened {
        &self.incoming.opened
    }

    /// The sinks' notes for the user (e.g. the PCM format on stdout), one per line.
    pub fn note(&self) -> Option<String> {
        self.sink.note()
    }

    /// Plays to the end (or until cancelled), then finishes the sinks.
    ///
    /// On an error the sinks are not finished: their files stay as `PATH.partial`.
    pub async fn run(mut self) -> Result<PlayReport, ClientError> {
        let result = self.drive().await;
        let end = now();
        let Self {
            incoming,
            sink,
            buffer,
            codec,
            request_at,
            dropped_units,
            damage,
            broken,
            path,
            last_end_us,
            ..
        } = self;
        // Stops the server sending if the stream did not end (Ctrl-C or an error).
        incoming.cancel().await;
        let interrupted = result?;
        sink.finish()?;
        let stats = buffer.stats();
        if !interrupted {
            // Everything before the damage was played (and the sinks kept it); now say where
            // it is, and fail.
            if let Some(what) = broken.or(damage) {
                let secs = last_end_us.unwrap_or(0) as f64 / 1e6;
                return Err(ClientError::Damaged(format!(
                    "{path}: played {} units ({secs:.2} s), then {what}",
                    stats.played
                )));
            }
        }
        Ok(PlayReport {
            transport: None,
            codec,
            played: stats.played,
            startup_delay: stats.startup_delay,
            stats,
            elapsed: end.saturating_duration_since(request_at),
            interrupted,
            dropped_units,
        })
    }

    /// The drive loop of the playout buffer's contract: push every arrival, poll until
    /// `Wait`/`Idle` after every arrival and wake-up, sleep until the `Wait` instant or the
    /// next arrival. Returns whether it was cancelled.
    async fn drive(&mut self) -> Result<bool, ClientError> {
        let mut wake: Option<Instant> = None;
        let mut ended = false;
        loop {
            let stall = self.last_arrival + STALL;
            let until = match wake {
                Some(at) if ended => at,
                Some(at) => at.min(stall),
                None => stall,
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ok(true),
                item = self.incoming.next(), if !ended => ended = self.take(item)?,
                () = tokio::time::sleep_until(until.into()) => {
                    if now().saturating_duration_since(until) > LATE_WAKE {
                        // This task was not running: the receive path may not have run
                        // either. Let it deliver what arrived before judging a gap.
                        tokio::task::yield_now().await;
                    }
                }
            }
            // A burst (after a stall, or a TCP retransmission) delivers many chunks at once:
            // take every one that is ready before polling, or the buffer would conceal slots
            // whose units are already here.
            if !ended {
                ended = self.take_ready()?;
            }
            if !ended && now() >= self.last_arrival + STALL {
                return Err(ClientError::Timeout("waiting for media from the server"));
            }
            wake = self.release(now())?;
            if ended && wake.is_none() {
                break;
            }
        }
        // Let the last unit play out: playback ends when it does.
        let end = self.last_end_us.and_then(|us| self.buffer.play_instant(us));
        if let Some(end) = end.filter(|&e| e > now()) {
            tokio::select! {
                () = self.cancel.cancelled() => {}
                () = tokio::time::sleep_until(end.into()) => {}
            }
        }
        Ok(false)
    }

    /// Takes one item from the stream; returns whether the stream ended.
    fn take(&mut self, item: Option<Result<Chunk, ClientError>>) -> Result<bool, ClientError> {
        self.last_arrival = now();
        match item {
            None => {
                self.buffer.end_of_stream();
                Ok(true)
            }
            Some(chunk) => self.arrived(chunk?, self.last_arrival),
        }
    }

    /// Takes the chunks that are already there, up to [`MAX_BURST`]; returns whether the
    /// stream ended.
    fn take_ready(&mut self) -> Result<bool, ClientError> {
        for _ in 0..MAX_BURST {
            // `Incoming::next` is cancel-safe: dropping it unfinished loses nothing.
            let Some(item) = self.incoming.next().now_or_never() else {
                return Ok(false);
            };
            if self.take(item)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Feeds one chunk to the sinks and the assembler, and a completed unit to the buffer.
    /// Returns whether it ends the stream.
    fn arrived(&mut self, chunk: Chunk, at: Instant) -> Result<bool, ClientError> {
        self.sink.arrived(&chunk)?;
        let eos = chunk.has(ChunkFlags::END_OF_STREAM);
        if !chunk.has(ChunkFlags::INIT) && self.unit_offset.is_none() {
            self.unit_offset = Some(chunk.offset);
        }
        let unit_offset = self.unit_offset;
        if chunk.has(ChunkFlags::END_OF_UNIT) {
            self.unit_offset = None;
        }
        if self.broken.is_some() {
            // Past the damage: nothing more is played.
            if eos {
                self.buffer.end_of_stream();
            }
            return Ok(eos);
        }
        match self.assembler.push(chunk) {
            Ok(Some(u)) if is_cut_jpeg(&self.codec, &u.data) => {
                self.broken = Some(format!(
                    "damaged at byte {}: frame {} is cut short (no JPEG end-of-image marker)",
                    unit_offset.unwrap_or(0),
                    u.index
                ));
            }
            Ok(Some(u)) => {
                let unit = Unit {
                    seq: u.index,
                    pts_us: u.pts_us,
                    duration_us: u.duration_us,
                    key: u.key,
                    payload: u.data,
                };
                self.buffer.push(at, unit);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("dropped a unit: {e}");
                self.dropped_units += 1;
            }
        }
        if eos {
            self.buffer.end_of_stream();
        }
        Ok(eos)
    }

    /// Polls the buffer at `now` until it waits or idles, rendering what it releases; returns
    /// when to wake up next (`None`: on the next arrival).
    fn release(&mut self, now: Instant) -> Result<Option<Instant>, ClientError> {
        loop {
            match self.buffer.poll(now) {
                Output::Play(unit) => {
                    self.sink.play(&unit)?;
                    self.last_end_us = Some(unit.end_us());
                }
                Output::Conceal {
                    pts_us,
                    duration_us,
                    kind,
                } => self.sink.conceal(pts_us, duration_us, kind)?,
                Output::Wait(at) => return Ok(Some(at)),
                Output::Idle => return Ok(None),
            }
        }
    }
}

/// Whether `data` is an MJPEG frame that stops before its end-of-image marker (`FF D9`): the
/// last frame of a truncated file, which a decoder would show half grey.
fn is_cut_jpeg(codec: &Codec, data: &[u8]) -> bool {
    matches!(codec, Codec::Video(v) if v.format == chunkcast_protocol::VisualFormat::Mjpeg)
        && !data.ends_with(&[0xFF, 0xD9])
}

/// How `chunkcast play` prints its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StatsFormat {
    /// A human-readable table.
    #[default]
    Table,
    /// One line of JSON with the table's figures (see `PlayReport::to_json`).
    Json,
}

/// `chunkcast play`: connects, plays `url` with Ctrl-C wired to a clean stop, and prints the
/// sinks' notes and the statistics (on stdout, or on stderr when a sink writes to stdout).
pub async fn run(
    url: &Url,
    connect: &ConnectOptions,
    buffer: Duration,
    sinks: Vec<Spec>,
    format: StatsFormat,
) -> Result<(), ClientError> {
    sink::check(&sinks)?;
    let stdout_taken = sinks.iter().any(Spec::is_stdout);
    let opts = PlayOptions {
        buffer,
        sinks,
        cancel: CancellationToken::new(),
    };
    let cancel = opts.cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
            // A second Ctrl-C while finishing: give up at once.
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let result = async {
        let session = Session::connect(url, connect).await?;
        let played = async {
            let player = if url.path.trim_matches('/').starts_with("live/") {
                Player::watch(&session, url.path.trim_matches('/'), &opts).await?
            } else {
                Player::open(&session, &url.path, &opts).await?
            };
            if let Some(note) = player.note() {
                eprintln!("{note}");
            }
            player.run().await
        }
        .await;
        session.close().await;
        played
    }
    .await;
    ctrl_c.abort();
    let mut report = result?;
    report.transport = Some(url.scheme);
    let text = match format {
        StatsFormat::Json => report.to_json(),
        StatsFormat::Table => report.to_string().trim_end().to_owned(),
    };
    if stdout_taken {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    Ok(())
}
