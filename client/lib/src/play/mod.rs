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
//! # async fn demo() -> Result<(), chunkcast_client::error::ClientError> {
//! use chunkcast_client::play::{PlayOptions, play};
//! use chunkcast_client::session::{ConnectOptions, Session};
//!
//! let url = chunkcast_client::url::Url::parse("tcp://127.0.0.1:7700/sweep-48k-stereo-s16.wav")?;
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_media::UnitAssembler;
use chunkcast_media::playout::{Config, Kind, Output, PlayoutBuffer, Unit};
use chunkcast_protocol::wire::{Mode, Opened, Resume};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, ErrorCode};
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

/// Times the receive path is let run before a stall is declared.
const JUDGE_ROUNDS: usize = 8;

/// How long playback waits for the server's next chunk (concealing all the while) before
/// giving up. Realtime streams send at least one chunk per frame or audio block.
const STALL: Duration = Duration::from_secs(15);

/// How far a live stream's playout may fall behind (the player paused or starved while the
/// channel went on) before it skips to the newest keyframe it has.
const CATCH_UP: Duration = Duration::from_secs(2);

/// How long `watch` waits for a lost publisher to come back when `--wait-publisher` is not
/// given: long enough for a publisher to be restarted by hand.
pub const DEFAULT_WAIT_PUBLISHER: Duration = Duration::from_secs(300);

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
    /// Live channels ([`Player::watch`]): how long to wait, after the publisher is lost, for
    /// one to come back (subscribing again on the same session); zero ends playback with the
    /// loss. Playback goes on at the new publisher's first keyframe, the gap counted in
    /// [`PlayReport::publisher_gaps`] and [`PlayReport::gap_time`].
    pub wait_publisher: Duration,
    /// Say on stderr, in one line each, when the publisher is lost and when it is back.
    pub notices: bool,
    /// Live channels: where to connect again if the connection itself is lost (within the
    /// same [`wait_publisher`](Self::wait_publisher) bound); `None` ends playback instead.
    pub reconnect: Option<(Url, ConnectOptions)>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            buffer: DEFAULT_BUFFER,
            sinks: Vec::new(),
            cancel: CancellationToken::new(),
            wait_publisher: DEFAULT_WAIT_PUBLISHER,
            notices: false,
            reconnect: None,
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

/// A subscription being made again, until a publisher answers it; with the new session when
/// it had to connect again.
type Resubscribe<'s> =
    Pin<Box<dyn Future<Output = Result<(Source, Option<Session>), ClientError>> + Send + 's>>;

/// Where a player's chunks come from: a native stream, or a live channel's feed over HTTP.
enum Source {
    Native(Incoming),
    Http(crate::http::live::Feed),
}

impl Source {
    fn opened(&self) -> &Opened {
        match self {
            Self::Native(i) => &i.opened,
            Self::Http(f) => &f.opened,
        }
    }

    /// Cancel-safe, as both sources' `next` are.
    async fn next(&mut self) -> Option<Result<Chunk, ClientError>> {
        match self {
            Self::Native(i) => i.next().await,
            Self::Http(f) => f.next().await,
        }
    }

    async fn cancel(self) {
        match self {
            Self::Native(i) => i.cancel().await,
            // Dropping a feed stops its requests.
            Self::Http(f) => drop(f),
        }
    }
}

/// How long a player that lost its connection waits between attempts to connect again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// How long `watch` waits for the server's answer before saying that it waits for a
/// publisher: far above a subscription's round trip, short enough not to look hung.
const WAITING_NOTICE: Duration = Duration::from_secs(1);

/// The session a live player subscribes on: the caller's, or one it connected again itself.
enum Via<'s> {
    Borrowed(&'s Session),
    Owned(Arc<Session>),
    /// A channel over HTTP: its next feed goes on where the last one stopped.
    Http(Arc<crate::http::live::Channel>),
}

/// What a live channel's player needs to outlive its publisher.
struct Live<'s> {
    via: Via<'s>,
    reconnect: Option<(Url, ConnectOptions)>,
    channel: String,
    wait: Duration,
    notices: bool,
    /// While the publisher is away: the new subscription, and until when it may take.
    waiting: Option<(Resubscribe<'s>, Instant)>,
    gaps: u32,
    gap_time: Duration,
    /// While a gap is open: when the screen froze (the last unit before the loss ended).
    gap_from: Option<Instant>,
}

/// An opened stream with its sinks, ready to play.
pub struct Player<'s> {
    incoming: Source,
    sink: Box<dyn Sink>,
    buffer: PlayoutBuffer<Bytes>,
    assembler: UnitAssembler,
    codec: Codec,
    cancel: CancellationToken,
    request_at: Instant,
    dropped_units: u64,
    /// Units assembled so far, over every subscription: the next unit's number.
    units: u64,
    /// Media time at which the last played unit ends.
    last_end_us: Option<u64>,
    /// Media time at which the last assembled unit ends.
    last_queued_end_us: Option<u64>,
    /// Bounds a stall: nothing arriving for [`STALL`] of this task's running time.
    stall: StallClock,
    live: Option<Live<'s>>,
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

impl<'s> Player<'s> {
    /// Asks for `path` in realtime mode and opens the sinks for its codec.
    pub async fn open(
        session: &Session,
        path: &str,
        opts: &PlayOptions,
    ) -> Result<Self, ClientError> {
        Self::open_as(session, path, opts, false).await
    }

    /// Like [`open`](Self::open), asking the server to serve a progressive MP4 as fragmented
    /// MP4 (`OPEN` flag `FRAGMENT`): the `file:` sink then writes an fMP4 that players and
    /// Media Source Extensions take as it streams.
    pub async fn open_fragmented(
        session: &Session,
        path: &str,
        opts: &PlayOptions,
    ) -> Result<Self, ClientError> {
        Self::open_as(session, path, opts, true).await
    }

    async fn open_as(
        session: &Session,
        path: &str,
        opts: &PlayOptions,
        fragment: bool,
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
                fragment,
                header_crc: false,
                chunk_size: 0,
            })
            .await?;
        Self::with(Source::Native(incoming), path, opts, request_at).await
    }

    /// Subscribes to a live channel (`live/NAME`) and opens the sinks for its codec: the
    /// player behind `chunkcast watch`. It starts at the channel's latest keyframe.
    ///
    /// If the publisher is lost, it subscribes again and waits up to
    /// [`PlayOptions::wait_publisher`] for a new one, then goes on at its first keyframe.
    /// Playback that falls far behind the channel (the process paused or starved) skips to the
    /// newest keyframe it has instead of playing the backlog late.
    pub async fn watch(
        session: &'s Session,
        channel: &str,
        opts: &PlayOptions,
    ) -> Result<Self, ClientError> {
        sink::check(&opts.sinks)?;
        let request_at = now();
        let incoming = session.subscribe(channel).await?;
        let mut player = Self::with(Source::Native(incoming), channel, opts, request_at).await?;
        player.buffer.set_catch_up(Some(CATCH_UP.max(opts.buffer)));
        player.live = Some(Live {
            via: Via::Borrowed(session),
            reconnect: opts.reconnect.clone(),
            channel: channel.to_owned(),
            wait: opts.wait_publisher,
            notices: opts.notices,
            waiting: None,
            gaps: 0,
            gap_time: Duration::ZERO,
            gap_from: None,
        });
        Ok(player)
    }

    /// [`Player::watch`] over HTTP: the channel's chunks from its server's HTTP interface,
    /// or any cache in front of it (see [`crate::http::live`]). It starts at the last
    /// segment's first chunk (a keyframe); when the channel goes quiet, is replaced or starts
    /// a new run, it waits up to [`PlayOptions::wait_publisher`] as for a lost publisher.
    pub async fn watch_http(
        channel: Arc<crate::http::live::Channel>,
        opts: &PlayOptions,
    ) -> Result<Player<'static>, ClientError> {
        sink::check(&opts.sinks)?;
        let request_at = now();
        let feed = channel.next_feed().await?;
        let name = channel.name().to_owned();
        let mut player = Player::with(Source::Http(feed), &name, opts, request_at).await?;
        player.buffer.set_catch_up(Some(CATCH_UP.max(opts.buffer)));
        player.live = Some(Live {
            via: Via::Http(channel),
            reconnect: None,
            channel: name,
            wait: opts.wait_publisher,
            notices: opts.notices,
            waiting: None,
            gaps: 0,
            gap_time: Duration::ZERO,
            gap_from: None,
        });
        Ok(player)
    }

    async fn with(
        incoming: Source,
        path: &str,
        opts: &PlayOptions,
        request_at: Instant,
    ) -> Result<Self, ClientError> {
        let codec = incoming.opened().codec;
        let (kind, buffer) = match codec {
            Codec::Audio(_) => (Kind::Audio, opts.buffer),
            Codec::Video(_) => (Kind::Video, opts.buffer),
            // One unit: shown as soon as it is complete.
            Codec::Image(_) => (Kind::Video, Duration::ZERO),
            Codec::Bytes => {
                let total = incoming.opened().total_len;
                let note = incoming.opened().note.clone();
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
            .opened()
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
            units: 0,
            last_end_us: None,
            last_queued_end_us: None,
            stall: StallClock::new(now()),
            live: None,
            damage,
            broken: None,
            unit_offset: None,
            path: path.to_owned(),
        })
    }

    /// What the server said about the stream.
    pub fn opened(&self) -> &Opened {
        self.incoming.opened()
    }

    /// The sinks' notes for the user (e.g. the PCM format on stdout), one per line.
    pub fn note(&self) -> Option<String> {
        self.sink.note()
    }

    /// Plays to the end (or until cancelled), then finishes the sinks.
    ///
    /// On an error the sinks are not finished: their files stay as `PATH.partial`.
    pub async fn run(self) -> Result<PlayReport, ClientError> {
        let (report, result) = self.run_to_end().await;
        result.map(|()| report)
    }

    /// Plays to the end, until cancelled or until an error, and reports in every case: the
    /// report (with [`error`](PlayReport::error) set if one ended playback) and that error.
    ///
    /// On an error the sinks are not finished: their files stay as `PATH.partial`.
    pub async fn run_to_end(mut self) -> (PlayReport, Result<(), ClientError>) {
        let result = self.drive().await;
        let end = now();
        let Self {
            incoming,
            sink,
            buffer,
            codec,
            request_at,
            dropped_units,
            live,
            damage,
            broken,
            path,
            last_end_us,
            ..
        } = self;
        // Stops the server sending if the stream did not end (Ctrl-C or an error).
        incoming.cancel().await;
        let (interrupted, result) = match result {
            Ok(interrupted) => (interrupted, sink.finish()),
            Err(e) => (false, Err(e)),
        };
        let stats = buffer.stats();
        let (publisher_gaps, mut gap_time) = live
            .as_ref()
            .map_or((0, Duration::ZERO), |l| (l.gaps, l.gap_time));
        if let Some(from) = live.as_ref().and_then(|l| l.gap_from) {
            // Playback ended in a gap: it lasted until now.
            gap_time += end.saturating_duration_since(from);
        }
        if let Some(Live { via, waiting, .. }) = live {
            drop(waiting);
            // A session this player connected itself says goodbye like the caller's would.
            if let Via::Owned(session) = via {
                if let Some(session) = Arc::into_inner(session) {
                    session.close().await;
                }
            }
        }
        // Everything before the damage was played (and the sinks kept it); now say where it
        // is, and fail.
        let result = match (result, broken.or(damage)) {
            (Ok(()), Some(what)) if !interrupted => {
                let secs = last_end_us.unwrap_or(0) as f64 / 1e6;
                Err(ClientError::Damaged(format!(
                    "{path}: played {} units ({secs:.2} s), then {what}",
                    stats.played
                )))
            }
            (result, _) => result,
        };
        let report = PlayReport {
            transport: None,
            codec,
            played: stats.played,
            startup_delay: stats.startup_delay,
            stats,
            elapsed: end.saturating_duration_since(request_at),
            interrupted,
            dropped_units,
            publisher_gaps,
            gap_time,
            error: result.as_ref().err().map(ToString::to_string),
        };
        (report, result)
    }

    /// Whether the publisher is away and a new subscription waits for one.
    fn waiting(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.waiting.is_some())
    }

    /// The drive loop of the playout buffer's contract: push every arrival, poll until
    /// `Wait`/`Idle` after every arrival and wake-up, sleep until the `Wait` instant or the
    /// next arrival. Returns whether it was cancelled.
    async fn drive(&mut self) -> Result<bool, ClientError> {
        let mut wake: Option<Instant> = None;
        let mut ended = false;
        loop {
            let deadline = match self.live.as_ref().and_then(|l| l.waiting.as_ref()) {
                Some((_, until)) => *until,
                None => self.stall.deadline(),
            };
            let until = match wake {
                Some(at) if ended => at,
                Some(at) => at.min(deadline),
                None => deadline,
            };
            let waiting = self.waiting();
            let slept_at = now();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ok(true),
                item = self.incoming.next(), if !ended && !waiting => ended = self.take(item)?,
                back = resubscribed(&mut self.live), if waiting => match back {
                    Ok(back) => self.resumed(back)?,
                    Err(e) => self.wait_on_a_new_connection(e)?,
                },
                () = tokio::time::sleep_until(until.into()) => {
                    if self.stall.woke(until.max(slept_at), now()) {
                        // This task was not running (the process was stopped, suspended or
                        // starved): neither was the receive path. Let it deliver what arrived
                        // before judging a gap.
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
            if !ended && self.stalled() {
                // Judge the stall against what has arrived, not against what this task has
                // looked at: let the receive path run and take what it delivers first.
                for _ in 0..JUDGE_ROUNDS {
                    tokio::task::yield_now().await;
                    ended = self.take_ready()?;
                    if ended || !self.stalled() {
                        break;
                    }
                }
                if !ended && self.stalled() {
                    return Err(ClientError::Timeout("waiting for media from the server"));
                }
            }
            if let Some((_, until)) = self.live.as_ref().and_then(|l| l.waiting.as_ref()) {
                if now() >= *until {
                    return Err(self.gave_up_waiting());
                }
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

    /// Whether nothing arrived for [`STALL`] while a publisher is there to send.
    fn stalled(&self) -> bool {
        !self.waiting() && self.stall.stalled(now())
    }

    /// The error when no publisher came back in time.
    fn gave_up_waiting(&self) -> ClientError {
        let (channel, wait) = self
            .live
            .as_ref()
            .map_or((String::new(), Duration::ZERO), |l| {
                (l.channel.clone(), l.wait)
            });
        ClientError::Server {
            code: ErrorCode::PublisherLost,
            message: format!(
                "the publisher of {channel} went away and none came back within {} s (--wait-publisher)",
                wait.as_secs()
            ),
        }
    }

    /// The publisher is lost: subscribe again, and let what is queued play out meanwhile.
    fn publisher_lost(&mut self, why: ClientError) -> Result<(), ClientError> {
        let at = now();
        // The screen freezes once what is queued has played out.
        let frozen_at = self
            .last_queued_end_us
            .and_then(|us| self.buffer.play_instant(us))
            .map_or(at, |end| end.max(at));
        let connection_lost = matches!(why, ClientError::Lost(_) | ClientError::Silent(_));
        let Some(live) = self
            .live
            .as_mut()
            .filter(|l| !l.wait.is_zero() && (!connection_lost || l.reconnect.is_some()))
        else {
            return Err(why);
        };
        if live.notices {
            let what = if connection_lost {
                format!("the connection to the server was lost ({why})")
            } else {
                format!("the publisher of {} went away", live.channel)
            };
            eprintln!(
                "chunkcast: {what}; waiting up to {} s for it to come back",
                live.wait.as_secs()
            );
        }
        let channel = live.channel.clone();
        let resubscribe: Resubscribe<'s> = match (&live.via, &live.reconnect) {
            (_, Some((url, opts))) if connection_lost => {
                Box::pin(reconnect(url.clone(), opts.clone(), channel))
            }
            (Via::Borrowed(session), _) => {
                let session: &'s Session = session;
                Box::pin(
                    async move { Ok((Source::Native(session.subscribe(&channel).await?), None)) },
                )
            }
            (Via::Owned(session), _) => {
                let session = Arc::clone(session);
                Box::pin(
                    async move { Ok((Source::Native(session.subscribe(&channel).await?), None)) },
                )
            }
            (Via::Http(ch), _) => {
                let ch = Arc::clone(ch);
                Box::pin(async move { Ok((Source::Http(ch.next_feed().await?), None)) })
            }
        };
        live.waiting = Some((resubscribe, at + live.wait));
        live.gaps += 1;
        live.gap_from.get_or_insert(frozen_at);
        self.buffer.restart();
        Ok(())
    }

    /// The subscription waiting for a publisher failed: if the connection was lost and may
    /// be made again, wait on a new one (within the same deadline), else give up with `why`.
    fn wait_on_a_new_connection(&mut self, why: ClientError) -> Result<(), ClientError> {
        let Some(live) = self.live.as_mut() else {
            return Err(why);
        };
        // A server that is shutting down refuses new subscriptions (`busy`) before it closes:
        // as good as a lost connection, and its successor may be up soon.
        let going = matches!(why, ClientError::Lost(_) | ClientError::Silent(_))
            || why.code() == Some(ErrorCode::Busy);
        let Some((url, opts)) = live.reconnect.as_ref().filter(|_| going) else {
            return Err(why);
        };
        if live.notices {
            eprintln!("chunkcast: the connection to the server was lost ({why}); connecting again");
        }
        let until = live.waiting.as_ref().map_or_else(now, |(_, until)| *until);
        let resubscribe = Box::pin(reconnect(url.clone(), opts.clone(), live.channel.clone()));
        live.waiting = Some((resubscribe, until));
        Ok(())
    }

    /// A publisher is back: play its channel stream from its first keyframe.
    fn resumed(
        &mut self,
        (incoming, session): (Source, Option<Session>),
    ) -> Result<(), ClientError> {
        if let (Some(live), Some(session)) = (self.live.as_mut(), session) {
            // The old connection is gone: its session (if ours) goes with it.
            live.via = Via::Owned(Arc::new(session));
        }
        let codec = incoming.opened().codec;
        if codec != self.codec {
            return Err(ClientError::Usage(format!(
                "the channel's new publisher sends {}, not {} as before: watch it again",
                codec.summary(),
                self.codec.summary()
            )));
        }
        let old = std::mem::replace(&mut self.incoming, incoming);
        drop(old);
        // A new stream: its first chunk may follow a gap in seq, but starts a unit.
        self.assembler = UnitAssembler::new(self.codec, MAX_UNIT_BYTES);
        self.stall.arrived(now());
        if let Some(live) = self.live.as_mut() {
            live.waiting = None;
            if live.notices {
                eprintln!("chunkcast: {} has a publisher again", live.channel);
            }
        }
        Ok(())
    }

    /// Takes one item from the stream; returns whether the stream ended.
    fn take(&mut self, item: Option<Result<Chunk, ClientError>>) -> Result<bool, ClientError> {
        let at = now();
        self.stall.arrived(at);
        match item {
            None => {
                self.buffer.end_of_stream();
                Ok(true)
            }
            Some(Err(e)) if self.live.is_some() && lost_source(&e) => {
                self.publisher_lost(e)?;
                Ok(false)
            }
            Some(chunk) => self.arrived(chunk?, at),
        }
    }

    /// Takes the chunks that are already there, up to [`MAX_BURST`]; returns whether the
    /// stream ended.
    fn take_ready(&mut self) -> Result<bool, ClientError> {
        for _ in 0..MAX_BURST {
            if self.waiting() {
                return Ok(false); // this subscription is over
            }
            // `Source::next` is cancel-safe: dropping it unfinished loses nothing.
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
                // Numbered over every subscription, so that a frame's number never repeats.
                let seq = self.units;
                self.units += 1;
                self.last_queued_end_us = Some(u.pts_us.saturating_add(u64::from(u.duration_us)));
                let unit = Unit {
                    seq,
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
                    // The first unit after the publisher is back closes the gap (not what was
                    // still queued when it went away).
                    if let Some(live) = self.live.as_mut().filter(|l| l.waiting.is_none()) {
                        if let Some(from) = live.gap_from.take() {
                            live.gap_time += now.saturating_duration_since(from);
                        }
                    }
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

/// When playback gives up on a server that sends nothing: [`STALL`] after the last arrival,
/// counting only the time this task was running. A process stopped (SIGSTOP, a suspended
/// laptop) or starved for longer than [`STALL`] finds on waking that its timer fired late;
/// that time is no silence of the server's, whose media may be waiting in the socket.
#[derive(Debug, Clone, Copy)]
struct StallClock {
    /// The last arrival, moved forward by the time the task was not running since.
    since: Instant,
}

impl StallClock {
    fn new(now: Instant) -> Self {
        Self { since: now }
    }

    /// Something arrived at `now`.
    fn arrived(&mut self, now: Instant) {
        self.since = self.since.max(now);
    }

    /// A timer due at `due` fired at `now`; returns whether it fired late (the task was not
    /// running), in which case the time lost does not count towards a stall.
    fn woke(&mut self, due: Instant, now: Instant) -> bool {
        let late = now.saturating_duration_since(due);
        if late <= LATE_WAKE {
            return false;
        }
        self.since = (self.since + late).min(now);
        true
    }

    /// When the stall will be declared, if nothing arrives.
    fn deadline(&self) -> Instant {
        self.since + STALL
    }

    /// Whether nothing arrived for [`STALL`] of running time.
    fn stalled(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// Whether a live player may wait for this end of its stream to be repaired: the publisher
/// went away, or the connection to the server was lost.
fn lost_source(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::PublisherLost) || matches!(e, ClientError::Lost(_))
}

/// Connects again (every [`RECONNECT_EVERY`] while the server cannot be reached) and
/// subscribes; the caller bounds how long.
async fn reconnect(
    url: Url,
    opts: ConnectOptions,
    channel: String,
) -> Result<(Source, Option<Session>), ClientError> {
    loop {
        match Session::connect(&url, &opts).await {
            Ok(session) => match session.subscribe(&channel).await {
                Ok(incoming) => return Ok((Source::Native(incoming), Some(session))),
                // Still the old server, draining, or one at its viewer limit: try again.
                Err(e) if e.code() == Some(ErrorCode::Busy) => {
                    session.close().await;
                    tokio::time::sleep(RECONNECT_EVERY).await;
                }
                Err(e) => return Err(e),
            },
            Err(ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Lost(_)) => {
                tokio::time::sleep(RECONNECT_EVERY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The new subscription of a player waiting for its publisher (pending forever otherwise).
async fn resubscribed(
    live: &mut Option<Live<'_>>,
) -> Result<(Source, Option<Session>), ClientError> {
    match live.as_mut().and_then(|l| l.waiting.as_mut()) {
        Some((subscribe, _)) => subscribe.await,
        None => std::future::pending().await,
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
    /// One line of JSON with the table's figures.
    Json,
}

/// `chunkcast play` and `chunkcast watch`: connects, plays `url` with Ctrl-C wired to a clean
/// stop, and prints the sinks' notes and the statistics (on stdout, or on stderr when a sink
/// writes to stdout). The statistics are printed however playback ends, once the stream is
/// open: at its end, on an error (then returned) and on Ctrl-C.
///
/// `wait_publisher` is `Some` for `watch` (see [`PlayOptions::wait_publisher`]); a watch
/// stopped by Ctrl-C returns [`ClientError::Interrupted`] after printing its statistics.
pub async fn run(
    url: &Url,
    connect: &ConnectOptions,
    buffer: Duration,
    sinks: Vec<Spec>,
    format: StatsFormat,
    wait_publisher: Option<Duration>,
) -> Result<(), ClientError> {
    run_as(url, connect, buffer, sinks, format, wait_publisher, false).await
}

/// [`run`], for a file, with `fragment`: a progressive MP4 comes as fragmented MP4 (see
/// [`Player::open_fragmented`]).
pub async fn run_as(
    url: &Url,
    connect: &ConnectOptions,
    buffer: Duration,
    sinks: Vec<Spec>,
    format: StatsFormat,
    wait_publisher: Option<Duration>,
    fragment: bool,
) -> Result<(), ClientError> {
    sink::check(&sinks)?;
    // Playback is realtime: small packets even on loopback (see `ConnectOptions::realtime`).
    let connect = &ConnectOptions {
        realtime: true,
        ..connect.clone()
    };
    let stdout_taken = sinks.iter().any(Spec::is_stdout);
    let watch = wait_publisher.is_some();
    let opts = PlayOptions {
        buffer,
        sinks,
        cancel: CancellationToken::new(),
        wait_publisher: wait_publisher.unwrap_or(Duration::ZERO),
        notices: true,
        reconnect: watch.then(|| (url.clone(), connect.clone())),
    };
    let ctrl_c = stop_on_ctrl_c(opts.cancel.clone());
    let channel = url.path.trim_matches('/');
    let live = channel.starts_with("live/");
    let result = async {
        if url.scheme.is_http() {
            if !(watch && live) {
                return Err(ClientError::Usage(format!(
                    "{url}: over {}:// only `get` and `watch …/live/NAME` are served",
                    url.scheme.name()
                )));
            }
            let client = crate::http::HttpClient::new(url, connect)?;
            let ch = Arc::new(crate::http::live::Channel::new(client, channel));
            return start(Player::watch_http(ch, &opts), channel, live, &opts.cancel).await;
        }
        let session = Session::connect(url, connect).await?;
        let open = async {
            if live {
                Player::watch(&session, channel, &opts).await
            } else {
                Player::open_as(&session, &url.path, &opts, fragment).await
            }
        };
        let played = start(open, channel, live, &opts.cancel).await;
        session.close().await;
        played
    }
    .await;
    ctrl_c.abort();
    let (mut report, result) = result?;
    report.transport = Some(url.scheme);
    let text = match format {
        StatsFormat::Json => report.to_json(),
        StatsFormat::Table => report.to_string().trim_end().to_owned(),
    };
    if stdout_taken {
        eprintln!("{text}");
    } else {
        crate::console::print_stdout(&format!("{text}\n"))?;
    }
    // Ctrl-C: the statistics are out; the exit status says it was interrupted (130).
    if report.interrupted {
        return Err(ClientError::Interrupted);
    }
    result?;
    Ok(())
}

/// Waits for `open` (a watch may wait for its first publisher, as the server answers a
/// subscription once there is one: says so if the answer is slow, and lets Ctrl-C stop the
/// wait), then plays to the end.
async fn start<'s>(
    open: impl Future<Output = Result<Player<'s>, ClientError>>,
    channel: &str,
    live: bool,
    cancel: &CancellationToken,
) -> Result<(PlayReport, Result<(), ClientError>), ClientError> {
    tokio::pin!(open);
    let notice = tokio::time::sleep(WAITING_NOTICE);
    tokio::pin!(notice);
    let mut told = !live;
    let player = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(ClientError::Interrupted),
            player = &mut open => break player?,
            () = &mut notice, if !told => {
                told = true;
                eprintln!("chunkcast: waiting for {channel} to have a publisher (Ctrl-C to stop)");
            }
        }
    };
    if let Some(note) = player.note() {
        eprintln!("{note}");
    }
    Ok(player.run_to_end().await)
}

/// Cancels `token` on Ctrl-C; a second Ctrl-C (while finishing) exits at once with 130.
/// Abort the returned task once the work is done.
pub fn stop_on_ctrl_c(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_stopped_process_is_not_a_stalled_server() {
        let t0 = Instant::now();
        let mut stall = StallClock::new(t0);
        stall.arrived(t0 + 10 * MS);
        // The process is stopped for 20 s while a 40 ms playout timer is pending: on waking,
        // that timer fires 20 s late. Before the fix this judged a 20 s stall at once.
        let woke = t0 + 20_000 * MS;
        assert!(stall.woke(t0 + 50 * MS, woke));
        assert!(!stall.stalled(woke), "the stopped time is no stall");
        // The media queued in the socket meanwhile arrives: playback goes on.
        stall.arrived(woke + MS);
        assert!(!stall.stalled(woke + 14_000 * MS));
        // A server silent for 15 s of running time after that is a stall.
        assert!(stall.stalled(woke + MS + STALL));
    }

    #[test]
    fn a_silent_server_is_a_stall_after_15_s_of_timely_wakes() {
        let t0 = Instant::now();
        let mut stall = StallClock::new(t0);
        // Woken on time every 40 ms (concealing): nothing is excused.
        let mut now = t0;
        while !stall.stalled(now) {
            now += 40 * MS;
            assert!(!stall.woke(now, now + MS));
        }
        assert_eq!(now, t0 + STALL);
        assert_eq!(stall.deadline(), t0 + STALL);
    }
}
