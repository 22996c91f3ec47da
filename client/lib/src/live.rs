//! Live: `publish` a file to a channel in real time, and `call`: two peers exchange media
//! through a room, each measuring one-way latency.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
}

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
    let mut report = PublishReport::default();
    let mut pacer = Pacer::new();
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
            if chunk.duration_us > 0 {
                let due = pacer.due(Instant::now(), chunk.pts_us);
                tokio::select! {
                    biased;
                    () = opts.stop.cancelled() => {
                    report.stopped = true;
                    break 'passes;
                }
                    () = tokio::time::sleep_until(due.into()) => {}
                }
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
    publisher.finish().await?;
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
            publisher = Some(session.publish(channel, codec).await?);
        }
        if let Some(p) = publisher.as_mut() {
            for chunk in pending.drain(..) {
                if !chunk.has(ChunkFlags::INIT) && chunk.duration_us > 0 {
                    let due = pacer.due(Instant::now(), chunk.pts_us);
                    tokio::select! {
                        biased;
                        () = opts.stop.cancelled() => {
                            report.stopped = true;
                            break;
                        }
                        () = tokio::time::sleep_until(due.into()) => {}
                    }
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
        live.next_seq(),
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
}

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
    let tracks = call_tracks(from)?;
    let cancel = &opts.cancel;
    let owned = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(ClientError::Interrupted),
        s = Session::connect(url, connect) => s?,
    };
    let (rtt, offset) = owned.clock().await?;
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
    let sends = tracks.iter().map(|(track, file)| async move {
        let opts = PublishOptions {
            stamp_server_clock: Some(offset),
            ..Default::default()
        };
        let channel = format!("{room}/{track}");
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
        let channel = format!("{room}/{track}");
        let subscribed = tokio::select! {
            s = session.subscribe(&channel) => Some(s?),
            () = cancel.cancelled() => None,
        };
        if let Some(mut incoming) = subscribed {
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
                if !c.has(ChunkFlags::INIT)
                    && !c.has(ChunkFlags::END_OF_STREAM)
                    && latencies.len() < 1 << 20
                {
                    latencies.push(now.saturating_sub(c.pts_us));
                }
                chunks += 1;
                bytes += c.payload.len() as u64;
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
/// after Ctrl-C, which then ends it with [`ClientError::Interrupted`]).
pub async fn run_call(
    url: &Url,
    connect: &ConnectOptions,
    from: &[PathBuf],
) -> Result<(), ClientError> {
    if from.is_empty() {
        return Err(ClientError::Usage(
            "a call needs at least one --from FILE".into(),
        ));
    }
    let opts = CallOptions {
        notes: true,
        ..Default::default()
    };
    let ctrl_c = crate::console::cancel_on_ctrl_c(opts.cancel.clone());
    let report = call_with(url, connect, from, &opts).await;
    ctrl_c.abort();
    let report = report?;
    crate::console::print_stdout(&call_table(&report))?;
    if report.interrupted {
        return Err(ClientError::Interrupted);
    }
    Ok(())
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
    out.push_str("latency: one way, from the other participant's send to arrival here\n");
    out
}
