//! Live: `publish` a file to a channel in real time, and `call`: two peers exchange media
//! through a room, each measuring one-way latency.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chunkcast_media::adapt::{AdaptConfig, Adapter, Level, PathSample, UnitFilter};
use chunkcast_media::ingest::{InputFormat, Limits as IngestLimits, LiveInput};
use chunkcast_media::pace::Pacer;
use chunkcast_media::reader::{self, Shaping};
use chunkcast_media::{Config as ChunkConfig, MediaError, Packetizer};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, ErrorCode, MediaKind, StreamId};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::session::{ConnectOptions, Publisher, Session};
use crate::url::Url;

/// Chunks read ahead of the pacer.
const AHEAD: usize = 16;

/// How to publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Start over at the end, forever (until cancelled).
    pub looped: bool,
    /// Stop after this many passes over the file when looping (`None`: forever).
    pub passes: Option<u32>,
    /// Payload bytes per chunk (0: the packetizer's default).
    pub chunk_size: usize,
    /// Call mode: stamp each chunk with the send time on the server's clock (this offset,
    /// server minus local, in µs) instead of its media time, so that receivers can measure
    /// one-way latency.
    pub stamp_server_clock: Option<i64>,
    /// Stops the publish cleanly when cancelled (Ctrl-C): the channel is ended as the end of
    /// the file ends it (an `END_OF_STREAM` chunk, so viewers see the end of the stream rather
    /// than a lost publisher) and the stream is finished.
    pub stop: CancellationToken,
    /// Adapt to the path (a call's video): measure the sender's queueing, and on QUIC the
    /// RTT and loss, and drop whole units as [`chunkcast_media::adapt`] decides; a unit that
    /// would leave more than [`LATE_DROP`] late is dropped too, so that latency cannot grow
    /// with a bottleneck.
    pub adapt: bool,
    /// Send media chunks as QUIC datagrams where the connection allows (a call's audio):
    /// see [`crate::session::Publisher::use_datagrams`].
    pub datagrams: bool,
}

/// A call's video unit that could only leave this late is dropped rather than sent: behind
/// it, every later unit would wait as well.
pub const LATE_DROP: Duration = Duration::from_millis(250);

/// What a publish did.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// Chunks sent.
    pub chunks: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Passes over the file.
    pub passes: u32,
    /// Whether [`PublishOptions::stop`] ended it before the file did.
    pub stopped: bool,
    /// Units dropped by the adaptation ([`PublishOptions::adapt`]).
    pub units_dropped: u64,
    /// Units sent, when adapting.
    pub units_sent: u64,
    /// Units skipped because the one before was still not all sent (a call's video on QUIC,
    /// a unit per stream: [`crate::session::Publisher::use_unit_streams`]). Never numbered,
    /// so never counted lost by a receiver; also in `units_dropped`.
    pub units_skipped: u64,
    /// Units whose stream was reset: not acknowledged within their deadline (see
    /// [`chunkcast_transport::link::UnitGate`]). A receiver counts them lost.
    pub units_reset: u64,
    /// The adaptation's level at the end.
    pub level: Level,
    /// The lowest level it went down to.
    pub lowest_level: Level,
    /// Its level changes.
    pub level_changes: u64,
    /// Chunks sent as QUIC datagrams ([`PublishOptions::datagrams`]).
    pub datagrams: u64,
    /// Each level change: when (from [`PublishReport::started_at`]) and to what.
    pub level_log: Vec<(Duration, Level)>,
    /// When the publish began (the channel open): the origin of `level_log`'s times.
    pub started_at: Option<Instant>,
}

/// The path measurements of a publish: the sender's queueing, and what QUIC knows.
struct Meter {
    adapter: Adapter,
    filter: UnitFilter,
    /// Packets lost and sent at the last loss sample.
    counted: Option<(u64, u64)>,
    loss: Option<f64>,
    /// Bytes admitted since media time `since_us`, for the offered rate.
    bytes: u64,
    since_us: Option<u64>,
    /// Bytes a second of media offered, over the last measured span.
    rate: Option<f64>,
    /// The least RTT seen: the path's, without the queueing that a larger send queue would
    /// only feed.
    min_rtt: Option<Duration>,
    /// The level `rate` was measured at.
    measured_at: Level,
    skips: Skips,
    /// What the send queue holds beyond one least round trip of the offered rate.
    margin: Duration,
}

/// [`Meter`]'s send queue beyond a round trip when units wait behind one another on one
/// stream: less made the sender wait at every jitter and step down.
const QUEUE_MARGIN: Duration = Duration::from_millis(50);
/// The same with a unit per stream, where a unit that cannot leave at once is skipped rather
/// than waited for: what the queue holds beyond a round trip only fills the bottleneck's
/// queue when a cap comes, ahead of the audio and of every later frame.
const UNIT_QUEUE_MARGIN: Duration = Duration::from_millis(20);

/// The units a sender skips because the one before is not all sent yet (a unit per stream),
/// decided before they are numbered.
#[derive(Debug, Default)]
struct Skips {
    /// The unit under way was skipped (its other chunks go the same way).
    skipping: bool,
    /// A unit is under way.
    in_unit: bool,
    /// Units skipped, in all.
    skipped: u64,
    /// Whether each of the last [`SKIP_WINDOW`] units offered to the path was skipped, and
    /// the share that was: the adaptation's sign that the path does not carry the rate.
    recent: std::collections::VecDeque<bool>,
    share: Option<f64>,
}

/// The units over which the share of skipped units is measured: a third of a second at 25
/// frames a second, so that a cap is met in a few frames (a window of half a second met it
/// 450–550 ms after it came, by which time the bottleneck's queue was full).
const SKIP_WINDOW: usize = 8;

impl Meter {
    fn new(session: &Session) -> Self {
        Self {
            adapter: Adapter::new(AdaptConfig::default()),
            filter: UnitFilter::new(),
            counted: session.path_stats().map(|(_, lost, sent)| (lost, sent)),
            loss: None,
            bytes: 0,
            since_us: None,
            rate: None,
            min_rtt: None,
            measured_at: Level::Full,
            skips: Skips::default(),
            margin: QUEUE_MARGIN,
        }
    }
}

impl Skips {
    /// Whether `chunk`, admitted by the level, still goes: a unit is skipped whole when it
    /// starts while `busy` (the unit before it is not all sent: see
    /// [`crate::session::Publisher::busy`]). Decided before the unit is numbered, so that the
    /// receiver sees no hole.
    fn pass(&mut self, chunk: &Chunk, busy: bool) -> bool {
        if chunk.has(ChunkFlags::INIT) || chunk.has(ChunkFlags::END_OF_STREAM) {
            return true;
        }
        if !self.in_unit {
            self.skipping = busy;
            self.skipped += u64::from(busy);
            if self.recent.len() == SKIP_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(busy);
            if self.recent.len() == SKIP_WINDOW {
                let n = self.recent.iter().filter(|&&b| b).count();
                self.share = Some(n as f64 / SKIP_WINDOW as f64);
            }
        }
        self.in_unit = !chunk.has(ChunkFlags::END_OF_UNIT);
        !self.skipping
    }
}

impl Meter {
    /// A level change changes the offered rate at once: the rate (and so the send queue) is
    /// scaled by the share of units kept, and measured afresh. Without it a step back up to
    /// full video doubled what was offered into a send queue sized for half, for the second
    /// the measure takes: the sender waited 200–300 ms behind it, took that for congestion,
    /// and stepped down again (measured between namespaces, 30 ms ± 5 ms).
    fn rescale(&mut self, level: Level) {
        if level == self.measured_at {
            return;
        }
        if let Some(rate) = self.rate.as_mut() {
            *rate *= self.measured_at.keep_every() as f64 / level.keep_every() as f64;
        }
        self.measured_at = level;
        self.bytes = 0;
        self.since_us = None;
    }

    /// QUIC's send queue for what is offered now: the offered rate for the path's least
    /// round trip plus its margin ([`QUEUE_MARGIN`], or [`UNIT_QUEUE_MARGIN`] with a unit per
    /// stream), at least [`CALL_SEND_QUEUE`]. Enough to keep a long path busy at the stream's
    /// rate; no more, so that a slow path makes the sender wait (and adapt) at once.
    /// The rate is measured in media time (bytes over the span of their timestamps), so it is
    /// known after the first 200 ms of media, before the path has had a say.
    fn size_send_queue(&mut self, session: &Session, pts_us: u64, rtt: Option<Duration>) {
        let since = *self.since_us.get_or_insert(pts_us);
        let span = pts_us.saturating_sub(since);
        let measure = if self.rate.is_none() {
            200_000
        } else {
            1_000_000
        };
        if span >= measure {
            self.rate = Some(self.bytes as f64 * 1e6 / span as f64);
            self.bytes = 0;
            self.since_us = Some(pts_us);
        }
        if let Some(rtt) = rtt {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        if let (Some(rate), Some(rtt)) = (self.rate, self.min_rtt) {
            let want = rate * (rtt + self.margin).as_secs_f64();
            session.limit_send_queue((want as u64).max(CALL_SEND_QUEUE));
        }
    }

    /// Whether to send `chunk`, which was due at `due` and can leave now.
    fn admit(&mut self, session: &Session, chunk: &Chunk, due: Instant) -> bool {
        let now = Instant::now();
        let late = now.saturating_duration_since(due);
        let mut rtt = None;
        if let Some((r, lost, sent)) = session.path_stats() {
            rtt = Some(r);
            let (lost0, sent0) = self.counted.unwrap_or((lost, sent));
            // A loss rate over at least 50 packets, so that one loss is not 100 %.
            if sent.saturating_sub(sent0) >= 50 {
                let l = lost.saturating_sub(lost0) as f64 / (sent - sent0) as f64;
                self.loss = Some(l.min(1.0));
                self.counted = Some((lost, sent));
            } else if self.counted.is_none() {
                self.counted = Some((lost, sent));
            }
        }
        let sample = PathSample {
            queue_delay: late,
            rtt,
            loss: self.loss,
            skipped: self.skips.share,
        };
        let mut level = self.adapter.on_sample(now, sample);
        self.rescale(self.adapter.level());
        if late > LATE_DROP {
            level = Level::KeyframesOnly;
        }
        let admitted = self.filter.admit(chunk, level);
        if admitted {
            self.bytes += chunk.payload.len() as u64;
        }
        if !chunk.has(ChunkFlags::INIT) {
            self.size_send_queue(session, chunk.pts_us, rtt);
        }
        admitted
    }
}

fn open_packetizer(path: &Path, chunk_size: usize) -> Result<(File, Packetizer), ClientError> {
    let mut file = File::open(path).map_err(|e| ClientError::file(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| ClientError::file(path, e))?
        .len();
    let mut cfg = ChunkConfig::new(StreamId(0));
    if chunk_size > 0 {
        cfg.chunk_size = chunk_size;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p = Packetizer::open(cfg, &mut file, len, &name)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    use std::io::Seek;
    file.rewind().map_err(|e| ClientError::file(path, e))?;
    Ok((file, p))
}

/// The codec a file would be published with.
pub fn probe(path: &Path) -> Result<Codec, ClientError> {
    Ok(open_packetizer(path, 0)?.1.codec())
}

/// Publishes `path` to `channel` in real time (paced by its timestamps).
pub async fn publish_file(
    session: &Session,
    channel: &str,
    path: &Path,
    opts: &PublishOptions,
) -> Result<PublishReport, ClientError> {
    let (file, packetizer) = open_packetizer(path, opts.chunk_size)?;
    let mut publisher = session.publish(channel, packetizer.codec()).await?;
    if opts.datagrams {
        publisher.use_datagrams(session.established().caps);
    }
    let units = opts.adapt && publisher.use_unit_streams(&packetizer.codec());
    // When adapting or looping, what is sent is numbered afresh, so that a unit dropped here
    // is not taken for a loss on the way.
    let mut renumbered = 0u64;
    let mut report = PublishReport::default();
    let mut pacer = Pacer::new();
    let mut meter = opts.adapt.then(|| Meter::new(session));
    if let Some(m) = meter.as_mut().filter(|_| units) {
        m.margin = UNIT_QUEUE_MARGIN;
    }
    let started = Instant::now();
    report.started_at = Some(started);
    // Media time already played by earlier passes, so that a loop's pts keep increasing.
    let mut pts_base = 0u64;
    let mut next = Some((file, packetizer));
    // Where the end-of-stream chunk of a stopped publish goes: after the last chunk sent.
    let (mut next_seq, mut next_offset, mut end_us) = (0u64, 0u64, 0u64);
    'passes: while let Some((file, packetizer)) = next.take() {
        report.passes += 1;
        let last_pass = !opts.looped || opts.passes.is_some_and(|p| report.passes >= p);
        let mut chunks = reader::spawn(file, packetizer, Shaping::default(), AHEAD);
        let mut pass_end = pts_base;
        loop {
            // A chunk is either sent whole or not at all: the stop is only looked at while
            // waiting for the file or the pacer, never in the middle of a send.
            let item = tokio::select! {
                biased;
                () = opts.stop.cancelled() => {
                    report.stopped = true;
                    break 'passes;
                }
                item = chunks.recv() => item,
            };
            let Some(item) = item else { break };
            let mut chunk =
                item.map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
            chunk.pts_us += pts_base;
            if !chunk.has(ChunkFlags::INIT) {
                pass_end = pass_end.max(chunk.pts_us + u64::from(chunk.duration_us));
            }
            if chunk.has(ChunkFlags::INIT) && report.passes > 1 {
                continue; // the header was sent on the first pass
            }
            let mut due = Instant::now();
            if chunk.duration_us > 0 {
                due = pacer.due(Instant::now(), chunk.pts_us);
                tokio::select! {
                    biased;
                    () = opts.stop.cancelled() => {
                    report.stopped = true;
                    break 'passes;
                }
                    () = tokio::time::sleep_until(due.into()) => {}
                }
            }
            if let Some(m) = meter.as_mut() {
                let before = m.adapter.level();
                let admitted = m.admit(session, &chunk, due);
                let level = m.adapter.level();
                if level != before && report.level_log.len() < 1024 {
                    report.level_log.push((started.elapsed(), level));
                }
                report.lowest_level = report.lowest_level.max(level);
                if !admitted || !m.skips.pass(&chunk, publisher.busy()) {
                    continue;
                }
            }
            // A loop's seq keeps increasing across passes too (each pass's packetizer starts
            // at 0, and its header is not sent again): a receiver counts a hole as a loss and
            // a seq that starts over as overtaken chunks (a looped call's audio counted ~40
            // losses a run on a loss-free path).
            if meter.is_some() || opts.looped {
                chunk.seq = renumbered;
                renumbered += 1;
            }
            if !last_pass {
                chunk.flags = chunk.flags.without(ChunkFlags::END_OF_STREAM);
            }
            if let Some(offset) = opts.stamp_server_clock {
                chunk.pts_us = session.clock_us().saturating_add_signed(offset);
            }
            report.bytes += chunk.payload.len() as u64;
            next_seq = chunk.seq + 1;
            next_offset = chunk.offset + u64::from(chunk.raw_len);
            end_us = end_us.max(chunk.pts_us + u64::from(chunk.duration_us));
            publisher.send(chunk).await?;
            report.chunks += 1;
        }
        pts_base = pass_end;
        if !last_pass {
            next = Some(open_packetizer(path, opts.chunk_size)?);
        }
    }
    if report.stopped {
        // Empty and INIT, like the channel's own end: no media, so no player takes it for a
        // unit, and a unit cut short by the stop is dropped whole by every viewer.
        let end = Chunk::new(
            StreamId(0),
            next_seq,
            next_offset,
            end_us,
            0,
            ChunkFlags::END_OF_STREAM | ChunkFlags::INIT,
            bytes::Bytes::new(),
        );
        publisher.send(end).await?;
    }
    report.datagrams = publisher.sent_as_datagrams();
    let units = publisher.unit_counts().unwrap_or_default();
    publisher.finish().await?;
    if let Some(m) = &meter {
        report.units_skipped = m.skips.skipped + units.skipped;
        report.units_dropped = m.filter.dropped() + report.units_skipped;
        report.units_sent = m.filter.kept().saturating_sub(report.units_skipped);
        report.units_reset = units.reset;
        report.level = m.adapter.level();
        report.level_changes = m.adapter.changes();
    }
    Ok(report)
}

/// How to publish a live input (a pipe).
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// The input's format; `None`: detected from its first bytes.
    pub format: Option<InputFormat>,
    /// Payload bytes per chunk (0: the packetizer's default).
    pub chunk_size: usize,
    /// Ends the channel cleanly when cancelled (Ctrl-C), as the end of the input does.
    pub stop: CancellationToken,
    /// Call mode, as [`PublishOptions::stamp_server_clock`].
    pub stamp_server_clock: Option<i64>,
    /// Adapt to the path (a call's video), as [`PublishOptions::adapt`].
    pub adapt: bool,
    /// Media chunks as QUIC datagrams where allowed (a call's audio), as
    /// [`PublishOptions::datagrams`].
    pub datagrams: bool,
}

/// What a publish from a live input did.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// The codec the channel was announced with (`None` if the input ended before its header).
    pub codec: Option<Codec>,
    /// Chunks sent.
    pub chunks: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Media units sent.
    pub units: u64,
    /// Bytes of a unit cut short by the end of the input, dropped.
    pub dropped: usize,
    /// Whether [`StreamOptions::stop`] ended it before the input did.
    pub stopped: bool,
    /// The call mode's figures (adaptation, datagrams, chunks and bytes sent), as
    /// [`publish_file`] reports them.
    pub call: PublishReport,
}

/// Bytes read from the input at a time.
const READ_SIZE: usize = 64 * 1024;

/// Publishes a live input (`--from -`: a pipe) to `channel` as it arrives: units go out as
/// soon as they are complete, paced by their timestamps when the input runs ahead of real
/// time. The channel is announced once the input's header has told its codec. A stalled input
/// leaves the channel idle (nothing times out: the connection's keepalive goes on); the end of
/// the input ends the channel cleanly (its viewers see the end of the stream). Input that is
/// not the format, or breaks a limit, stops the publish after the last whole unit with `CLOSE`
/// code 17 (bad input) and the reason, which the server tells the channel's viewers (they keep
/// their connections); it is also the error returned.
pub async fn publish_stream<R: AsyncRead + Unpin>(
    session: &Session,
    channel: &str,
    mut input: R,
    opts: &StreamOptions,
) -> Result<StreamReport, ClientError> {
    let mut cfg = ChunkConfig::new(StreamId(0));
    if opts.chunk_size > 0 {
        cfg.chunk_size = opts.chunk_size;
    }
    let mut live = LiveInput::new(cfg, opts.format, IngestLimits::default())
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let mut report = StreamReport::default();
    let mut publisher: Option<Publisher> = None;
    let mut pending: Vec<Chunk> = Vec::new();
    let mut pacer = Pacer::new();
    let start = Instant::now();
    report.call.started_at = Some(start);
    let mut meter = opts.adapt.then(|| Meter::new(session));
    // Adapting: what is sent is numbered afresh, so that a dropped unit is not a loss.
    let mut renumbered = 0u64;
    let mut buf = vec![0u8; READ_SIZE];
    let outcome: Result<(), MediaError> = loop {
        let n = tokio::select! {
            biased;
            () = opts.stop.cancelled() => {
                report.stopped = true;
                break Ok(());
            }
            n = input.read(&mut buf) => n.map_err(|e| ClientError::Usage(format!("reading the input: {e}")))?,
        };
        let now_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let pushed = if n == 0 {
            live.finish(&mut pending)
                .map(|dropped| report.dropped = dropped)
        } else {
            live.push(&buf[..n], now_us, &mut pending)
        };
        // What came out before an error still goes out: viewers get every whole unit.
        if publisher.is_none()
            && let Some(codec) = live.codec()
        {
            report.codec = Some(codec);
            let mut p = session.publish(channel, codec).await?;
            if opts.datagrams {
                p.use_datagrams(session.established().caps);
            }
            let units = opts.adapt && p.use_unit_streams(&codec);
            if let Some(m) = meter.as_mut().filter(|_| units) {
                m.margin = UNIT_QUEUE_MARGIN;
            }
            publisher = Some(p);
        }
        if let Some(p) = publisher.as_mut() {
            for mut chunk in pending.drain(..) {
                let mut due = Instant::now();
                if !chunk.has(ChunkFlags::INIT) && chunk.duration_us > 0 {
                    due = pacer.due(Instant::now(), chunk.pts_us);
                    tokio::select! {
                        biased;
                        () = opts.stop.cancelled() => {
                            report.stopped = true;
                            break;
                        }
                        () = tokio::time::sleep_until(due.into()) => {}
                    }
                }
                if let Some(m) = meter.as_mut() {
                    let before = m.adapter.level();
                    let admitted = m.admit(session, &chunk, due);
                    let level = m.adapter.level();
                    if level != before && report.call.level_log.len() < 1024 {
                        report.call.level_log.push((start.elapsed(), level));
                    }
                    report.call.lowest_level = report.call.lowest_level.max(level);
                    if !admitted || !m.skips.pass(&chunk, p.busy()) {
                        continue;
                    }
                    chunk.seq = renumbered;
                    renumbered += 1;
                }
                if let Some(offset) = opts.stamp_server_clock {
                    chunk.pts_us = session.clock_us().saturating_add_signed(offset);
                }
                report.bytes += chunk.payload.len() as u64;
                report.chunks += 1;
                p.send(chunk).await?;
            }
        }
        if let Err(e) = pushed {
            break Err(e);
        }
        if report.stopped || n == 0 {
            break Ok(());
        }
    };
    report.units = live.units();
    report.call.chunks = report.chunks;
    report.call.bytes = report.bytes;
    report.call.passes = 1;
    report.call.stopped = report.stopped;
    let units = publisher
        .as_ref()
        .and_then(Publisher::unit_counts)
        .unwrap_or_default();
    if let Some(m) = &meter {
        report.call.units_skipped = m.skips.skipped + units.skipped;
        report.call.units_dropped = m.filter.dropped() + report.call.units_skipped;
        report.call.units_sent = m.filter.kept().saturating_sub(report.call.units_skipped);
        report.call.units_reset = units.reset;
        report.call.level = m.adapter.level();
        report.call.level_changes = m.adapter.changes();
    }
    if let Some(p) = &publisher {
        report.call.datagrams = p.sent_as_datagrams();
    }
    let Some(mut p) = publisher else {
        return match outcome {
            Err(e) => Err(ClientError::Usage(format!("the input: {e}"))),
            Ok(()) if report.stopped => Ok(report),
            Ok(()) => Err(ClientError::Usage(
                "the input ended before its header told what it carries".into(),
            )),
        };
    };
    if let Err(e) = outcome {
        // The channel ends with the reason: its viewers are told (code 17, bad input), and
        // keep their connections.
        let why = format!("{e}");
        p.abort(ErrorCode::BadInput, why.clone()).await?;
        return Err(ClientError::Usage(format!("the input: {why}")));
    }
    // Empty and INIT, as the channel's own end: no media, so no player takes it for a unit.
    let end = Chunk::new(
        StreamId(0),
        if meter.is_some() {
            renumbered
        } else {
            live.next_seq()
        },
        live.next_offset(),
        live.end_us(),
        0,
        ChunkFlags::END_OF_STREAM | ChunkFlags::INIT,
        bytes::Bytes::new(),
    );
    p.send(end).await?;
    p.finish().await?;
    Ok(report)
}

/// One received track of a call.
#[derive(Debug, Clone)]
pub struct TrackReport {
    /// `video` or `audio`.
    pub track: String,
    /// Chunks received.
    pub chunks: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// One-way latency (send on the peer → arrival here), p50.
    pub latency_p50: Duration,
    /// p99.
    pub latency_p99: Duration,
    /// Largest.
    pub latency_max: Duration,
    /// p95.
    pub latency_p95: Duration,
    /// Chunks missing (holes in the channel's `seq`: dropped on the way, by a lagging
    /// viewer's queue, or lost).
    pub lost: u64,
    /// Audio chunks a player would conceal: the lost ones, and those that came later than
    /// [`LATE_AFTER`] (too late to play). 0 for video, which freezes instead.
    pub concealed: u64,
    /// Chunks that arrived more than [`LATE_AFTER`] after they were sent.
    pub late: u64,
    /// Video chunks that arrived after a later one (a frame on its own QUIC stream,
    /// overtaken by the next): not shown, and not in the latency figures, which are those of
    /// the frames shown. Not lost either.
    pub overtaken: u64,
    /// What arrived in each second from the first chunk on (at most [`TIMELINE_SECONDS`]):
    /// a frame rate that drops and comes back, or latency that grows, shows here.
    pub per_second: Vec<Second>,
    /// When the first chunk arrived: the origin of `per_second`.
    pub first_at: Option<Instant>,
}

/// One second of a received track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Chunks received.
    pub chunks: u64,
    /// Media units completed (a chunk that ends a unit arrived): for video, the frame rate.
    pub units: u64,
    /// The largest one-way latency of its chunks.
    pub latency_max: Duration,
}

/// [`TrackReport::per_second`] keeps the first hour; a longer call's later seconds are only in
/// the totals.
pub const TIMELINE_SECONDS: usize = 3600;

/// What a call lets QUIC hold unacknowledged towards the server: 32 KiB is 125 ms of a
/// 2 Mbit/s path, and still 8 Mbit/s of throughput at a 30 ms round trip (a call's video is
/// a few).
pub const CALL_SEND_QUEUE: u64 = 32 << 10;

/// A call's one-way budget: a chunk later than this is late (for audio, concealed).
pub const LATE_AFTER: Duration = Duration::from_millis(150);

/// One sent track of a call.
#[derive(Debug, Clone)]
pub struct SentTrack {
    /// `video` or `audio`.
    pub track: String,
    /// The file sent.
    pub file: PathBuf,
    /// What was sent; `None` when the call was interrupted before the file was sent.
    pub report: Option<PublishReport>,
}

/// What a call did.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// What we sent, per track.
    pub sent: Vec<SentTrack>,
    /// What we received, per track.
    pub received: Vec<TrackReport>,
    /// Round-trip time to the server when the call started.
    pub rtt: Duration,
    /// Whether the call was interrupted ([`CallOptions::cancel`]).
    pub interrupted: bool,
}

/// How to call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Tell the user on stderr what the call is doing (waiting for the other participant,
    /// who joined).
    pub notes: bool,
    /// Ends the call when cancelled (Ctrl-C), still reporting what was received.
    pub cancel: CancellationToken,
    /// Send each file this many times over, back to back (`None`: once).
    pub passes: Option<u32>,
    /// Where to render what is received, as `play`'s sinks: `wav:`/`pcm:` take the audio
    /// track, `mjpeg:`/`frames:` the video track. Units are rendered as they complete (a call
    /// keeps no playout buffer: latency first); a hole in the audio is filled with silence.
    pub sinks: Vec<crate::sink::Spec>,
    /// With `-` among the files (standard input, live, as `publish --from -` takes it): its
    /// format; `None`: detected from its first bytes.
    pub format: Option<InputFormat>,
}

/// The track a live input feeds: audio for WAV and PCM, video for the rest (an fMP4 input
/// is taken for video).
fn pipe_track(format: InputFormat) -> &'static str {
    match format {
        InputFormat::Wav | InputFormat::Pcm(_) => "audio",
        InputFormat::Mjpeg | InputFormat::Y4m | InputFormat::Fmp4 => "video",
    }
}

/// A live input whose format is known, with the bytes read to learn it put back in front.
type PipeInput = (InputFormat, Box<dyn AsyncRead + Unpin + Send>);

/// Reads `input`'s first bytes when `format` is not given, to tell which track it feeds.
async fn open_pipe<R: AsyncRead + Unpin + Send + 'static>(
    format: Option<InputFormat>,
    mut input: R,
) -> Result<PipeInput, ClientError> {
    if let Some(f) = format {
        return Ok((f, Box::new(input)));
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while head.len() < 12 {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| ClientError::Usage(format!("reading the input: {e}")))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let format = InputFormat::detect(&head).ok_or_else(|| {
        ClientError::Usage(
            "--from -: the input's first bytes are no format a call sends (MJPEG, Y4M, WAV, \
             fMP4); give it with --format (headerless PCM always needs it)"
                .into(),
        )
    })?;
    Ok((format, Box::new(std::io::Cursor::new(head).chain(input))))
}

/// The sinks of `specs` that render `track` (`audio` or `video`).
fn track_sinks(specs: &[crate::sink::Spec], track: &str) -> Vec<crate::sink::Spec> {
    use crate::sink::Spec;
    specs
        .iter()
        .filter(|s| match s {
            Spec::Wav(_) | Spec::Pcm(_) => track == "audio",
            Spec::Mjpeg(_) | Spec::Frames(_) => track == "video",
            Spec::File(_) | Spec::Null => false,
        })
        .cloned()
        .collect()
}

/// A received track rendered as it arrives.
struct Render {
    sink: Box<dyn crate::sink::Sink>,
    assembler: chunkcast_media::UnitAssembler,
    units: u64,
    /// The last chunk's duration, to size the silence for a hole.
    last_duration_us: u32,
}

impl Render {
    fn chunk(&mut self, c: Chunk, missing: u64) -> Result<(), ClientError> {
        use chunkcast_media::playout::{Concealment, Unit};
        if missing > 0 && self.last_duration_us > 0 {
            let duration = (u64::from(self.last_duration_us) * missing).min(u64::from(u32::MAX));
            self.sink
                .conceal(c.pts_us, duration as u32, Concealment::Silence)?;
        }
        if c.duration_us > 0 {
            self.last_duration_us = c.duration_us;
        }
        if let Ok(Some(u)) = self.assembler.push(c) {
            let unit = Unit {
                seq: self.units,
                pts_us: u.pts_us,
                duration_us: u.duration_us,
                key: u.key,
                payload: u.data,
            };
            self.units += 1;
            self.sink.play(&unit)?;
        }
        Ok(())
    }
}

/// The call tracks for `from`: `video` or `audio` by each file's kind, one of each at most.
/// Checked before connecting, so that a wrong file is refused at once.
pub fn call_tracks(from: &[PathBuf]) -> Result<Vec<(&'static str, PathBuf)>, ClientError> {
    let mut tracks = Vec::new();
    for f in from {
        let codec = probe(f)?;
        let track = match codec.kind() {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            other => {
                return Err(ClientError::Usage(format!(
                    "--from {}: a call sends audio or video (WAV, MJPEG, Y4M or MP4), and \
                     this is {} ({})",
                    f.display(),
                    other.name(),
                    codec.summary()
                )));
            }
        };
        if tracks.iter().any(|(t, _)| *t == track) {
            return Err(ClientError::Usage(format!(
                "two {track} files: a call has one of each"
            )));
        }
        tracks.push((track, f.clone()));
    }
    Ok(tracks)
}

/// Joins the room named by `url` (`…/call/ROOM`), sends each file as a track (`video` or
/// `audio`, by its kind) and receives the other participant's same tracks, until both sides
/// have sent everything.
pub async fn call(
    url: &Url,
    connect: &ConnectOptions,
    from: &[PathBuf],
) -> Result<CallReport, ClientError> {
    call_with(url, connect, from, &CallOptions::default()).await
}

/// [`call`], with notes for the user and a way to end it early.
pub async fn call_with(
    url: &Url,
    connect: &ConnectOptions,
    from: &[PathBuf],
    opts: &CallOptions,
) -> Result<CallReport, ClientError> {
    let room = url.path.trim_matches('/');
    if !room.starts_with("call/") || room.matches('/').count() != 1 {
        return Err(ClientError::Usage(format!(
            "{url} is not a call room: use …/call/ROOM"
        )));
    }
    let stdin = Path::new("-");
    let files: Vec<PathBuf> = from.iter().filter(|f| *f != stdin).cloned().collect();
    let mut tracks = call_tracks(&files)?;
    let mut pipe = None;
    match from.len() - files.len() {
        0 if opts.format.is_some() => {
            return Err(ClientError::Usage(
                "--format is for --from - (a file's format is read from the file)".into(),
            ));
        }
        0 => {}
        1 => {
            let (format, input) = open_pipe(opts.format, tokio::io::stdin()).await?;
            let track = pipe_track(format);
            if tracks.iter().any(|(t, _)| *t == track) {
                return Err(ClientError::Usage(format!(
                    "two {track} inputs (a file and standard input): a call has one of each"
                )));
            }
            tracks.push((track, stdin.to_owned()));
            pipe = Some((format, input));
        }
        _ => {
            return Err(ClientError::Usage(
                "--from - twice: standard input is one input".into(),
            ));
        }
    }
    crate::sink::check(&opts.sinks)?;
    if opts
        .sinks
        .iter()
        .any(|s| matches!(s, crate::sink::Spec::File(_)))
    {
        return Err(ClientError::Usage(
            "call --sink takes wav:, pcm:, mjpeg:, frames: or null (file: would mix two tracks)"
                .into(),
        ));
    }
    let cancel = &opts.cancel;
    // A call is realtime: small packets even on loopback (see `ConnectOptions::realtime`).
    let realtime = ConnectOptions {
        realtime: true,
        ..connect.clone()
    };
    let owned = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(ClientError::Interrupted),
        s = Session::connect(url, &realtime) => s?,
    };
    let (rtt, offset) = owned.clock().await?;
    owned.limit_send_queue(CALL_SEND_QUEUE);
    if opts.notes {
        let sending: Vec<String> = tracks
            .iter()
            .map(|(t, f)| format!("{t} from {}", f.display()))
            .collect();
        eprintln!(
            "joined {room}, sending {}; waiting for the other participant (Ctrl-C to leave)",
            sending.join(" and ")
        );
    }
    let joined = std::sync::atomic::AtomicBool::new(false);
    let session = &owned;
    let pipe = &std::sync::Mutex::new(pipe);
    let sends = tracks.iter().map(|(track, file)| async move {
        let channel = format!("{room}/{track}");
        let taken = if file == Path::new("-") {
            pipe.lock().ok().and_then(|mut p| p.take())
        } else {
            None
        };
        if let Some((format, input)) = taken {
            let opts = StreamOptions {
                format: Some(format),
                stamp_server_clock: Some(offset),
                adapt: *track == "video",
                datagrams: *track == "audio",
                stop: cancel.child_token(),
                ..Default::default()
            };
            let r = publish_stream(session, &channel, input, &opts).await?;
            return Ok::<_, ClientError>(SentTrack {
                track: (*track).to_owned(),
                file: file.clone(),
                report: Some(r.call),
            });
        }
        let opts = PublishOptions {
            stamp_server_clock: Some(offset),
            adapt: *track == "video",
            datagrams: *track == "audio",
            looped: opts.passes.is_some_and(|p| p > 1),
            passes: opts.passes,
            ..Default::default()
        };
        let sent = tokio::select! {
            r = publish_file(session, &channel, file, &opts) => Some(r?),
            () = cancel.cancelled() => None,
        };
        Ok::<_, ClientError>(SentTrack {
            track: (*track).to_owned(),
            file: file.clone(),
            report: sent,
        })
    });
    let joined = &joined;
    let receives = tracks.iter().map(|(track, _)| async move {
        let mut latencies = Vec::new();
        let (mut chunks, mut bytes) = (0u64, 0u64);
        let (mut lost, mut late, mut overtaken_video) = (0u64, 0u64, 0u64);
        let mut next_seq: Option<u64> = None;
        let mut per_second: Vec<Second> = Vec::new();
        let mut first_at: Option<Instant> = None;
        let channel = format!("{room}/{track}");
        let subscribed = tokio::select! {
            s = session.subscribe(&channel) => Some(s?),
            () = cancel.cancelled() => None,
        };
        if let Some(mut incoming) = subscribed {
            let specs = track_sinks(&opts.sinks, track);
            let mut render = if specs.is_empty() {
                None
            } else {
                let codec = incoming.opened.codec;
                let sink = crate::sink::open(&specs, &codec)?;
                if let Some(note) = sink.note() {
                    eprintln!("{note}");
                }
                Some(Render {
                    sink,
                    assembler: chunkcast_media::UnitAssembler::new(codec, 64 << 20),
                    units: 0,
                    last_duration_us: 0,
                })
            };
            loop {
                let c = tokio::select! {
                    c = incoming.next() => c,
                    () = cancel.cancelled() => break,
                };
                let Some(c) = c else { break };
                let c = c?;
                if opts.notes && !joined.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!("the other participant joined");
                }
                let now = session.clock_us().saturating_add_signed(offset);
                let lost_before = lost;
                // Its place has passed: the renderer concealed it (the server relays a datagram
                // overtaken on the way into its hole, after the chunks that overtook it).
                let overtaken = !c.has(ChunkFlags::INIT) && next_seq.is_some_and(|n| c.seq < n);
                // Holes between media chunks only: a late joiner's first media chunk comes
                // after the channel's set-up with a jump that is not a loss.
                if !c.has(ChunkFlags::INIT) {
                    match next_seq {
                        // A datagram overtaken by a later one: counted lost when the hole
                        // was seen, it is not (though a player would have concealed it).
                        Some(expected) if c.seq < expected => lost = lost.saturating_sub(1),
                        Some(expected) => lost += c.seq - expected,
                        None => {}
                    }
                    next_seq = Some(next_seq.map_or(c.seq + 1, |n| n.max(c.seq + 1)));
                }
                // A video frame overtaken by a newer one is never shown: counted, and left
                // out of the latency of the frames that are.
                let unshown = overtaken && *track == "video";
                overtaken_video += u64::from(unshown);
                if !c.has(ChunkFlags::INIT) && !c.has(ChunkFlags::END_OF_STREAM) && !unshown {
                    let latency = now.saturating_sub(c.pts_us);
                    if latency > LATE_AFTER.as_micros() as u64 {
                        late += 1;
                    }
                    if latencies.len() < 1 << 20 {
                        latencies.push(latency);
                    }
                    let since = first_at.get_or_insert_with(Instant::now).elapsed();
                    let i = since.as_secs() as usize;
                    if i < TIMELINE_SECONDS {
                        if per_second.len() <= i {
                            per_second.resize(i + 1, Second::default());
                        }
                        let s = &mut per_second[i];
                        s.chunks += 1;
                        s.units += u64::from(c.has(ChunkFlags::END_OF_UNIT));
                        s.latency_max = s.latency_max.max(Duration::from_micros(latency));
                    }
                }
                chunks += 1;
                bytes += c.payload.len() as u64;
                if let Some(r) = render.as_mut().filter(|_| !overtaken) {
                    r.chunk(c, lost.saturating_sub(lost_before))?;
                }
            }
            if let Some(r) = render {
                r.sink.finish()?;
            }
        }
        latencies.sort_unstable();
        let pick = |q: f64| {
            let i =
                ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
            Duration::from_micros(latencies.get(i).copied().unwrap_or(0))
        };
        Ok::<_, ClientError>(TrackReport {
            track: (*track).to_owned(),
            chunks,
            bytes,
            latency_p50: pick(0.50),
            latency_p99: pick(0.99),
            latency_max: Duration::from_micros(latencies.last().copied().unwrap_or(0)),
            latency_p95: pick(0.95),
            lost,
            concealed: if *track == "audio" { lost + late } else { 0 },
            late,
            overtaken: overtaken_video,
            per_second,
            first_at,
        })
    });
    let (sent, received) = tokio::join!(
        futures_util::future::join_all(sends),
        futures_util::future::join_all(receives)
    );
    owned.close().await;
    let sent = sent.into_iter().collect::<Result<Vec<_>, _>>()?;
    let received = received.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(CallReport {
        sent,
        received,
        rtt,
        interrupted: cancel.is_cancelled(),
    })
}

/// `chunkcast publish`: sends `from` to `url`'s channel in real time; `-` is standard input,
/// a live input in `format` (detected from its first bytes when `None`). Ctrl-C ends the
/// channel cleanly (its viewers see the end of the stream) and returns
/// [`ClientError::Interrupted`].
pub async fn run_publish(
    url: &Url,
    connect: &ConnectOptions,
    from: &Path,
    looped: bool,
    format: Option<InputFormat>,
) -> Result<(), ClientError> {
    let channel = url.path.trim_matches('/');
    if !channel.starts_with("live/") {
        return Err(ClientError::Usage(format!(
            "{url} is not a live channel: use …/live/NAME"
        )));
    }
    let pipe = from == Path::new("-");
    if !pipe && format.is_some() {
        return Err(ClientError::Usage(
            "--format is for --from - (a file's format is read from the file)".into(),
        ));
    }
    if pipe && looped {
        return Err(ClientError::Usage(
            "--loop needs a file: standard input cannot start over".into(),
        ));
    }
    let session = Session::connect(url, connect).await?;
    if pipe {
        let opts = StreamOptions {
            format,
            ..Default::default()
        };
        let ctrl_c = crate::play::stop_on_ctrl_c(opts.stop.clone());
        let result = publish_stream(&session, channel, tokio::io::stdin(), &opts).await;
        ctrl_c.abort();
        session.close().await;
        let r = result?;
        eprintln!(
            "published {} units in {} chunks ({} bytes) of {}{}{}",
            r.units,
            r.chunks,
            r.bytes,
            r.codec
                .map_or_else(|| "nothing".to_owned(), |c| c.summary()),
            if r.dropped > 0 {
                format!(
                    "; the last {} bytes were a partial unit, dropped",
                    r.dropped
                )
            } else {
                String::new()
            },
            if r.stopped {
                ", stopped: channel ended"
            } else {
                ""
            }
        );
        if r.stopped {
            return Err(ClientError::Interrupted);
        }
        return Ok(());
    }
    let fragmented = open_packetizer(from, 0)?
        .1
        .warning()
        .is_some_and(|w| w.contains("fragmented MP4"));
    if fragmented {
        // A fragmented MP4 file has no sample tables to cut by: it goes as a live input does,
        // fragment by fragment, paced by its decode times.
        if looped {
            return Err(ClientError::Usage(format!(
                "{}: a fragmented MP4 is published as a live input, once: --loop is not \
                 supported for it",
                from.display()
            )));
        }
        let file = tokio::fs::File::open(from)
            .await
            .map_err(|e| ClientError::file(from, e))?;
        let opts = StreamOptions {
            format: Some(InputFormat::Fmp4),
            ..Default::default()
        };
        let ctrl_c = crate::play::stop_on_ctrl_c(opts.stop.clone());
        let result = publish_stream(&session, channel, file, &opts).await;
        ctrl_c.abort();
        session.close().await;
        let r = result?;
        eprintln!(
            "published {} fragments in {} chunks ({} bytes){}",
            r.units,
            r.chunks,
            r.bytes,
            if r.stopped {
                ", stopped: channel ended"
            } else {
                ""
            }
        );
        return if r.stopped {
            Err(ClientError::Interrupted)
        } else {
            Ok(())
        };
    }
    let opts = PublishOptions {
        looped,
        ..Default::default()
    };
    let ctrl_c = crate::play::stop_on_ctrl_c(opts.stop.clone());
    let result = publish_file(&session, channel, from, &opts).await;
    ctrl_c.abort();
    // After the end-of-stream chunk and the flush: the goodbye cannot overtake them.
    session.close().await;
    let r = result?;
    eprintln!(
        "published {} chunks ({} bytes) in {} pass(es){}",
        r.chunks,
        r.bytes,
        r.passes,
        if r.stopped {
            ", stopped: channel ended"
        } else {
            ""
        }
    );
    if r.stopped {
        return Err(ClientError::Interrupted);
    }
    Ok(())
}

/// `chunkcast call`: joins a room, prints per-track counts and latency percentiles (also
/// after Ctrl-C, which then ends it with [`ClientError::Interrupted`]). With `chat`, also
/// chats in the room: stdin's lines out, the other side's lines printed as they come; the
/// call then ends at the end of stdin (once every line is acknowledged) as well as when the
/// media is done. A `-` among `from` is standard input, a live input in `format` (detected
/// from its first bytes when `None`).
pub async fn run_call(
    url: &Url,
    connect: &ConnectOptions,
    from: &[PathBuf],
    chat: bool,
    stats: crate::play::StatsFormat,
    sinks: Vec<crate::sink::Spec>,
    format: Option<InputFormat>,
) -> Result<(), ClientError> {
    if from.is_empty() && !chat {
        return Err(ClientError::Usage(
            "a call needs at least one --from FILE, or --chat".into(),
        ));
    }
    if chat && from.iter().any(|f| f == Path::new("-")) {
        return Err(ClientError::Usage(
            "--chat reads its lines from standard input, so --from - cannot: send the pipe's \
             media or chat, or give the media as a file"
                .into(),
        ));
    }
    // Stdout belongs to a sink that writes there; the figures and chat then go to stderr.
    let stdout_taken = sinks.iter().any(crate::sink::Spec::is_stdout);
    let opts = CallOptions {
        notes: true,
        sinks,
        format,
        ..Default::default()
    };
    let ctrl_c = crate::console::cancel_on_ctrl_c(opts.cancel.clone());
    // With media, the chat lasts as long as the media does, even after the end of stdin, so
    // that the other side's lines still arrive.
    let media_done = CancellationToken::new();
    let media = async {
        if from.is_empty() {
            return Ok(None);
        }
        let r = call_with(url, connect, from, &opts).await.map(Some);
        media_done.cancel();
        r
    };
    let hold = (!from.is_empty()).then(|| media_done.clone());
    let chatting = async {
        if !chat {
            return Ok(None);
        }
        chat_stdin(url, connect, &opts.cancel, hold, stdout_taken)
            .await
            .map(Some)
    };
    let (report, chatted) = tokio::join!(media, chatting);
    ctrl_c.abort();
    let chatted = chatted?;
    let report = report?;
    if let Some(report) = &report {
        let text = match stats {
            crate::play::StatsFormat::Table => call_table(report),
            crate::play::StatsFormat::Json => call_json(report) + "\n",
        };
        if stdout_taken {
            eprint!("{text}");
        } else {
            crate::console::print_stdout(&text)?;
        }
    }
    if let Some(c) = &chatted {
        eprintln!(
            "chat: {} line(s) sent, {} received, {} connection(s)",
            c.sent, c.received, c.connections
        );
    }
    if report.is_some_and(|r| r.interrupted) || chatted.is_some_and(|c| c.interrupted) {
        return Err(ClientError::Interrupted);
    }
    Ok(())
}

/// The chat of `call --chat`: stdin's lines to the room of `url`, the other side's lines to
/// stdout. It ends at the end of stdin, or, with `hold`, once `hold` is also cancelled.
async fn chat_stdin(
    url: &Url,
    connect: &ConnectOptions,
    cancel: &CancellationToken,
    hold: Option<CancellationToken>,
    to_stderr: bool,
) -> Result<crate::chat::ChatReport, ClientError> {
    use crate::chat::{ChatOptions, format_line, run_chat};
    let room = url.path.trim_matches('/').to_owned();
    let (read_tx, mut read) = tokio::sync::mpsc::channel(64);
    // Blocking reads on their own thread; it ends with stdin (or the process).
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if read_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let (lines_tx, lines) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(line) = read.recv().await {
            if lines_tx.send(line).await.is_err() {
                return;
            }
        }
        if let Some(hold) = hold {
            hold.cancelled().await;
        }
    });
    let (out, mut shown) = tokio::sync::mpsc::channel(64);
    let printer = tokio::spawn(async move {
        while let Some(line) = shown.recv().await {
            let line: crate::chat::ChatLine = line;
            if !line.mine {
                if to_stderr {
                    eprintln!("{}", format_line(&line));
                } else {
                    println!("{}", format_line(&line));
                }
            }
        }
    });
    let opts = ChatOptions {
        notes: true,
        cancel: cancel.clone(),
        ..Default::default()
    };
    let report = run_chat(url, connect, &room, lines, out, &opts).await;
    let _ = printer.await;
    report
}

/// The call's summary: what went out (sent →) and what came in (← received), with the
/// one-way latency of what came in.
pub fn call_table(report: &CallReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rtt to server: {:.2} ms{}",
        report.rtt.as_secs_f64() * 1e3,
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<6}  {:<10}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}",
        "TRACK", "DIRECTION", "CHUNKS", "BYTES", "LAT P50", "LAT P99", "LAT MAX"
    );
    for s in &report.sent {
        let (chunks, bytes) = s.report.as_ref().map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |r| (r.chunks.to_string(), r.bytes.to_string()),
        );
        let _ = writeln!(
            out,
            "{:<6}  {:<10}  {chunks:>7}  {bytes:>10}  {:>10}  {:>10}  {:>10}",
            s.track, "sent →", "-", "-", "-"
        );
    }
    for t in &report.received {
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        let _ = writeln!(
            out,
            "{:<6}  {:<10}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}",
            t.track,
            "← received",
            t.chunks,
            t.bytes,
            ms(t.latency_p50),
            ms(t.latency_p99),
            ms(t.latency_max)
        );
    }
    for s in &report.sent {
        if let Some(r) = s
            .report
            .as_ref()
            .filter(|r| r.units_sent + r.units_dropped > 0)
        {
            let _ = writeln!(
                out,
                "{} adaptation: now {}, lowest {}, {} change(s), {} of {} units dropped \
                 ({} skipped behind an unsent one), {} reset",
                s.track,
                r.level.name(),
                r.lowest_level.name(),
                r.level_changes,
                r.units_dropped,
                r.units_sent + r.units_dropped,
                r.units_skipped,
                r.units_reset
            );
        }
    }
    for t in &report.received {
        if t.lost + t.late + t.overtaken > 0 {
            let _ = writeln!(
                out,
                "{} received: {} lost, {} late (over {} ms), {} concealed, {} overtaken (not shown)",
                t.track,
                t.lost,
                t.late,
                LATE_AFTER.as_millis(),
                t.concealed,
                t.overtaken
            );
        }
    }
    out.push_str("latency: one way, from the other participant's send to arrival here\n");
    out
}

/// The call's figures as one line of JSON (durations in integer microseconds): per track,
/// what was sent (chunks, bytes, adaptation) and what was received (chunks, lost, late,
/// concealed, one-way latency percentiles, and each second's chunks, units and largest
/// latency).
pub fn call_json(report: &CallReport) -> String {
    let us = |d: Duration| d.as_micros().to_string();
    let sent: Vec<String> = report
        .sent
        .iter()
        .map(|s| match &s.report {
            None => format!("{{\"track\":\"{}\",\"sent\":null}}", s.track),
            Some(r) => format!(
                "{{\"track\":\"{}\",\"chunks\":{},\"bytes\":{},\"units_sent\":{},\
                 \"units_dropped\":{},\"level\":\"{}\",\"lowest_level\":\"{}\",\
                 \"level_changes\":{},\"datagrams\":{},\"units_skipped\":{},\"units_reset\":{}}}",
                s.track,
                r.chunks,
                r.bytes,
                r.units_sent,
                r.units_dropped,
                r.level.name(),
                r.lowest_level.name(),
                r.level_changes,
                r.datagrams,
                r.units_skipped,
                r.units_reset
            ),
        })
        .collect();
    let received: Vec<String> = report
        .received
        .iter()
        .map(|t| {
            let seconds: Vec<String> = t
                .per_second
                .iter()
                .map(|s| {
                    format!(
                        "{{\"chunks\":{},\"units\":{},\"latency_max_us\":{}}}",
                        s.chunks,
                        s.units,
                        us(s.latency_max)
                    )
                })
                .collect();
            format!(
                "{{\"track\":\"{}\",\"chunks\":{},\"bytes\":{},\"lost\":{},\"late\":{},\
                 \"overtaken\":{},\"concealed\":{},\"latency_p50_us\":{},\"latency_p95_us\":{},\
                 \"latency_p99_us\":{},\"latency_max_us\":{},\"per_second\":[{}]}}",
                t.track,
                t.chunks,
                t.bytes,
                t.lost,
                t.late,
                t.overtaken,
                t.concealed,
                us(t.latency_p50),
                us(t.latency_p95),
                us(t.latency_p99),
                us(t.latency_max),
                seconds.join(",")
            )
        })
        .collect();
    format!(
        "{{\"rtt_us\":{},\"interrupted\":{},\"sent\":[{}],\"received\":[{}]}}",
        us(report.rtt),
        report.interrupted,
        sent.join(","),
        received.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_chunks(seq: u64, pieces: usize) -> Vec<Chunk> {
        (0..pieces)
            .map(|i| {
                let mut flags = ChunkFlags::KEY;
                if i + 1 == pieces {
                    flags = flags | ChunkFlags::END_OF_UNIT;
                }
                Chunk::new(
                    StreamId(0),
                    seq,
                    0,
                    0,
                    0,
                    flags,
                    bytes::Bytes::from_static(b"x"),
                )
            })
            .collect()
    }

    /// A unit that starts while the one before is not all sent is skipped whole (its later
    /// chunks too, even once the path is free), set-up always goes, and the share skipped
    /// over a window is what the adaptation reads.
    #[test]
    fn units_are_skipped_whole_and_their_share_is_measured() {
        let mut s = Skips::default();
        let init = Chunk::new(
            StreamId(0),
            0,
            0,
            0,
            0,
            ChunkFlags::INIT,
            bytes::Bytes::new(),
        );
        assert!(s.pass(&init, true), "set-up is never skipped");
        // A unit that starts on a free path goes whole, though the path fills meanwhile.
        let a = unit_chunks(1, 2);
        assert!(s.pass(&a[0], false));
        assert!(s.pass(&a[1], true));
        // Busy at a unit's start: skipped whole, although the path is free again.
        let b = unit_chunks(2, 3);
        assert!(!s.pass(&b[0], true));
        assert!(!s.pass(&b[1], false));
        assert!(!s.pass(&b[2], false));
        assert_eq!(s.skipped, 1);
        assert_eq!(s.share, None, "fewer units than the window");
        for seq in 3..=SKIP_WINDOW as u64 {
            assert!(s.pass(&unit_chunks(seq, 1)[0], false));
        }
        assert_eq!(s.share, Some(1.0 / SKIP_WINDOW as f64));
        // The window slides: the skipped unit leaves it, a new one comes in.
        assert!(s.pass(&unit_chunks(9, 1)[0], false));
        assert!(!s.pass(&unit_chunks(10, 1)[0], true));
        assert_eq!(s.share, Some(1.0 / SKIP_WINDOW as f64));
        assert!(s.pass(&unit_chunks(11, 1)[0], false));
        assert!(!s.pass(&unit_chunks(12, 1)[0], true));
        assert_eq!(s.share, Some(2.0 / SKIP_WINDOW as f64));
        assert_eq!(s.skipped, 3);
    }
}
