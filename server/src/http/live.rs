//! Live channels over HTTP: per channel, one ring of its latest chunks, filled by one viewer
//! of the channel (whatever the number of HTTP viewers and caches asking), from which the
//! index, the init and the immutable chunk URLs are answered. A request for a chunk not yet
//! published blocks until it is (at most [`BLOCK_FOR`]), so that viewers do not poll.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::wire::{Frame, encode};
use chunkcast_protocol::{Chunk, ChunkFlags};
use chunkcast_protocol::{Codec, ErrorCode, MediaKind, VisualFormat};
use http::{HeaderValue, Response, StatusCode, header};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::files::{FRAMES_TYPE, codec_json};
use super::{Body, Failure, IMMUTABLE, Route, full, hls};
use crate::conn::Shared;

/// Longest a request for a chunk not yet published waits before a 503 (the client retries).
pub(crate) const BLOCK_FOR: Duration = Duration::from_secs(10);
/// How far past the next seq a request may block: further is not published "soon".
const BLOCK_AHEAD: u64 = 64;
/// Requests blocked at once, over all channels; past it, 503 at once. Behind a cache each
/// URL blocks once however many viewers wait, so this bounds caches, not viewers.
const MAX_BLOCKED: usize = 4096;
/// Payload bytes a ring keeps; older chunks are evicted (410).
const RING_BYTES: usize = 32 << 20;
/// Chunks a ring keeps.
const RING_CHUNKS: usize = 8192;
/// Segments a ring keeps (and the index lists at most).
const RING_SEGMENTS: usize = 8;
/// A segment is at least about this long (video cuts at the next keyframe after it).
const SEGMENT_US: u64 = 1_000_000;
/// Untimed channels cut a segment every this many chunks.
const UNTIMED_SEGMENT_CHUNKS: u64 = 16;
/// A ring nobody asked anything for this long lets go of its channel.
const RING_IDLE: Duration = Duration::from_secs(30);
/// How often a ring whose channel has no source looks for one again.
const SOURCE_POLL: Duration = Duration::from_millis(50);
/// The init URL's last part for a channel without init chunks.
const NO_INIT: &str = "none";
/// Cache policy of the live index: about one segment.
const INDEX_CACHE: &str = "public, max-age=1";

/// Every channel's ring.
pub(crate) struct Rings {
    shared: Arc<Shared>,
    rings: Mutex<HashMap<String, Arc<Ring>>>,
    blocked: Arc<Semaphore>,
}

struct Ring {
    state: Mutex<RingState>,
    /// Bumped on every change, for the blocked requests.
    changed: watch::Sender<u64>,
    /// Its filler runs: cleared when it stops (the channel ended, or the ring went idle).
    filling: AtomicBool,
}

/// Clears [`Ring::filling`] when the filler stops, however it stops.
struct Filling(std::sync::Weak<Ring>);

impl Drop for Filling {
    fn drop(&mut self) {
        if let Some(r) = self.0.upgrade() {
            r.filling.store(false, Ordering::Release);
            // Requests blocked on a ring nobody fills any more look again (and time out).
            r.changed.send_modify(|v| *v += 1);
        }
    }
}

#[derive(Debug, Clone)]
struct Segment {
    /// Counted from the ring's first: HLS's media sequence number.
    number: u64,
    first_seq: u64,
    pts_us: u64,
}

struct RingState {
    run: String,
    codec: Codec,
    /// The current init chunks (the latest publisher's), in order.
    init: Vec<Chunk>,
    /// Whether the chunk before the next one closed a run of init chunks.
    after_media: bool,
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// The seq the next chunk will carry.
    next_seq: u64,
    segments: VecDeque<Segment>,
    /// The previous chunk ended its unit: the next starts one.
    prev_ended: bool,
    /// Where the media of the last chunk ends.
    end_us: u64,
    /// Why the channel ended, once it did.
    ended: Option<(ErrorCode, String)>,
    last_used: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RingState {
    fn push(&mut self, c: Chunk) {
        if c.has(ChunkFlags::END_OF_STREAM) && c.payload.is_empty() {
            self.ended = Some((
                ErrorCode::None,
                "the channel ended: its publisher finished".to_owned(),
            ));
            return;
        }
        if c.seq < self.next_seq && !self.chunks.is_empty() {
            // Already held (a re-attached tap starts with the backlog again).
            return;
        }
        let init = c.has(ChunkFlags::INIT);
        if init {
            if self.after_media {
                self.init.clear();
                self.after_media = false;
            }
            self.init.push(c.clone());
        } else {
            self.after_media = true;
            let starts_unit = self.prev_ended;
            let long = self
                .segments
                .back()
                .is_none_or(|s| c.pts_us.saturating_sub(s.pts_us) >= SEGMENT_US);
            let cut = match self.codec.kind() {
                // At a keyframe, once the segment is about a second long: intra-only video
                // (MJPEG) would otherwise make a segment of every frame.
                MediaKind::Video => starts_unit && c.has(ChunkFlags::KEY) && long,
                MediaKind::Audio => long,
                _ => self
                    .segments
                    .back()
                    .is_none_or(|s| c.seq - s.first_seq >= UNTIMED_SEGMENT_CHUNKS),
            };
            if cut {
                let number = self.segments.back().map_or(0, |s| s.number + 1);
                self.segments.push_back(Segment {
                    number,
                    first_seq: c.seq,
                    pts_us: c.pts_us,
                });
                while self.segments.len() > RING_SEGMENTS {
                    self.segments.pop_front();
                }
            }
        }
        self.prev_ended = init || c.has(ChunkFlags::END_OF_UNIT);
        if !init {
            self.end_us = self.end_us.max(c.pts_us + u64::from(c.duration_us));
        }
        self.next_seq = c.seq + 1;
        self.bytes += c.payload.len();
        self.chunks.push_back(c);
        let oldest_segment = self.segments.front().map_or(0, |s| s.first_seq);
        while self.chunks.len() > RING_CHUNKS
            || self.bytes > RING_BYTES
            || self
                .chunks
                .front()
                .is_some_and(|f| f.seq < oldest_segment && !f.has(ChunkFlags::INIT))
        {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.bytes -= old.payload.len();
        }
        while self
            .segments
            .front()
            .is_some_and(|s| self.chunks.front().is_some_and(|f| f.seq > s.first_seq))
        {
            self.segments.pop_front();
        }
    }

    fn get(&self, seq: u64) -> Option<&Chunk> {
        let first = self.chunks.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.chunks.get(i).filter(|c| c.seq == seq).or_else(|| {
            // Init chunks of a relayed channel keep old seqs: search.
            self.chunks.iter().find(|c| c.seq == seq)
        })
    }
}

impl Rings {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            rings: Mutex::default(),
            blocked: Arc::new(Semaphore::new(MAX_BLOCKED)),
        }
    }

    /// The ring of `name`, started (attached to the channel) if needed; 404 while the
    /// channel has no source.
    async fn ring(&self, name: &str) -> Result<Arc<Ring>, Failure> {
        let held = lock(&self.rings).get(name).cloned();
        if let Some(r) = held.as_ref().filter(|r| r.filling.load(Ordering::Acquire)) {
            lock(&r.state).last_used = Instant::now();
            return Ok(r.clone());
        }
        // No ring, or its filler stopped: the channel ended, or nobody asked for a while.
        let Some(tap) = self.shared.live.tap(name) else {
            if let Some(r) = held.filter(|r| lock(&r.state).ended.is_some()) {
                // Ended and not published again: go on telling so (410 ended).
                lock(&r.state).last_used = Instant::now();
                return Ok(r);
            }
            lock(&self.rings).remove(name);
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no live channel live/{name} is being published"),
            ));
        };
        let mut rings = lock(&self.rings);
        if let Some(r) = rings
            .get(name)
            .filter(|r| r.filling.load(Ordering::Acquire))
        {
            // Another request started one meanwhile.
            return Ok(r.clone());
        }
        let (changed, _) = watch::channel(0);
        let ring = Arc::new(Ring {
            state: Mutex::new(RingState {
                run: format!("{:016x}", tap.run),
                codec: tap.codec,
                init: Vec::new(),
                after_media: false,
                chunks: VecDeque::new(),
                bytes: 0,
                next_seq: tap.start_seq,
                segments: VecDeque::new(),
                end_us: 0,
                prev_ended: true,
                ended: None,
                last_used: Instant::now(),
            }),
            changed,
            filling: AtomicBool::new(true),
        });
        rings.insert(name.to_owned(), ring.clone());
        let shared = self.shared.clone();
        let name = name.to_owned();
        let me = Arc::downgrade(&ring);
        tokio::spawn(fill(shared, name, me, tap));
        Ok(ring)
    }

    /// Forgets rings whose filler stopped and that nobody asked for in a while.
    fn sweep(&self) {
        lock(&self.rings).retain(|_, r| {
            r.filling.load(Ordering::Acquire) || r.changed.receiver_count() > 0 || !r.stale()
        });
    }

    /// `/v1/live/...` (the part after `/v1/live/`).
    pub(crate) async fn serve(&self, rest: &str, route: Route) -> Result<Response<Body>, Failure> {
        self.sweep();
        let parts: Vec<&str> = rest.split('/').collect();
        let name = parts[0];
        let ring = self.ring(name).await?;
        match (route, parts.as_slice()) {
            (Route::LiveIndex, _) => Ok(index(name, &ring)),
            (Route::LiveInit, [_, run, "init", seq]) => init(&ring, run, seq),
            (Route::LiveChunk, [_, run, seq]) => self.chunk(&ring, run, seq).await,
            _ => Err(Failure::not_found("no such live URL")),
        }
    }

    async fn chunk(&self, ring: &Ring, run: &str, seq: &str) -> Result<Response<Body>, Failure> {
        let seq: u64 = seq
            .parse()
            .map_err(|_| Failure::bad(format!("seq {seq}: not a number")))?;
        let mut rx = ring.changed.subscribe();
        let deadline = Instant::now() + BLOCK_FOR;
        let mut slot = None;
        loop {
            {
                let s = lock(&ring.state);
                if s.run != run {
                    return Err(gone(
                        "this run of the channel is over: fetch its index again",
                    ));
                }
                if let Some(c) = s.get(seq) {
                    return Ok(frames_response(std::slice::from_ref(c)));
                }
                if seq < s.next_seq {
                    return Err(gone(format!(
                        "chunk {seq} is no longer held (the oldest is {}): fetch the index again",
                        s.chunks.front().map_or(s.next_seq, |c| c.seq)
                    )));
                }
                if let Some((_, why)) = &s.ended {
                    return Err(ended(why));
                }
                if seq > s.next_seq + BLOCK_AHEAD {
                    return Err(Failure::not_found(format!(
                        "chunk {seq} is too far ahead (next is {})",
                        s.next_seq
                    )));
                }
            }
            if slot.is_none() {
                let Ok(p) = self.blocked.clone().try_acquire_owned() else {
                    return Err(busy("too many requests waiting for live chunks; retry"));
                };
                slot = Some((p, self.shared.metrics.http_blocked()));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The ring is gone (its channel ended and it was dropped) or time is up.
                Ok(Err(_)) => {
                    return Err(ended("the channel ended"));
                }
                Err(_) => {
                    return Err(busy(format!(
                        "chunk {seq} was not published within {BLOCK_FOR:?}; retry"
                    )));
                }
            }
        }
    }
}

impl Rings {
    /// `/v1/hls/live/NAME/(index.m3u8 | RUN-init-SEQ.mp4 | RUN-FIRSTSEQ.m4s)`.
    pub(crate) async fn hls(
        &self,
        rest: &str,
        signer: Option<&hls::UriSigner>,
    ) -> Result<Response<Body>, Failure> {
        self.sweep();
        let Some((name, leaf)) = rest.split_once('/') else {
            return Err(Failure::not_found(
                "live HLS URLs are /v1/hls/live/NAME/index.m3u8",
            ));
        };
        let ring = self.ring(name).await?;
        {
            let s = lock(&ring.state);
            if !matches!(s.codec, Codec::Video(v) if v.format == VisualFormat::Fmp4) {
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::BadMedia,
                    format!("live/{name} is not fMP4: HLS serves fMP4 channels"),
                ));
            }
            if leaf == "index.m3u8" {
                let segs: Vec<hls::LiveSegment> = s
                    .segments
                    .iter()
                    .enumerate()
                    .map(|(i, g)| hls::LiveSegment {
                        number: g.number,
                        first_seq: g.first_seq,
                        duration_us: s
                            .segments
                            .get(i + 1)
                            .map(|n| n.pts_us.saturating_sub(g.pts_us))
                            .or_else(|| {
                                s.ended.as_ref().map(|_| s.end_us.saturating_sub(g.pts_us))
                            }),
                    })
                    .collect();
                let init_seq = s.init.first().map_or(s.next_seq, |c| c.seq);
                return Ok(hls::playlist_response(hls::live_playlist(
                    &s.run,
                    init_seq,
                    &segs,
                    s.ended.is_some(),
                    signer,
                )));
            }
            if let Some(init) = leaf
                .strip_suffix(".mp4")
                .and_then(|l| l.strip_prefix(&format!("{}-init-", s.run)))
            {
                let first = s.init.first().map_or(s.next_seq, |c| c.seq);
                if init.parse::<u64>().ok() != Some(first) || s.init.is_empty() {
                    return Err(gone(
                        "not the channel's init segment any more: reload the playlist",
                    ));
                }
                let mut out = BytesMut::new();
                for c in &s.init {
                    out.extend_from_slice(&c.payload);
                }
                return Ok(hls::init_response(out.freeze()));
            }
        }
        let first_seq = leaf
            .strip_suffix(".m4s")
            .and_then(|l| l.split_once('-'))
            .filter(|(run, _)| *run == lock(&ring.state).run)
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .ok_or_else(|| gone("no such segment in this run: reload the playlist"))?;
        let mut rx = ring.changed.subscribe();
        let deadline = Instant::now() + BLOCK_FOR;
        let mut slot = None;
        loop {
            {
                let s = lock(&ring.state);
                let Some(i) = s.segments.iter().position(|g| g.first_seq == first_seq) else {
                    return Err(gone(format!(
                        "segment {first_seq} is not held: reload the playlist"
                    )));
                };
                let end = s.segments.get(i + 1).map(|n| n.first_seq);
                if end.is_some() || s.ended.is_some() {
                    let end = end.unwrap_or(s.next_seq);
                    let mut out = BytesMut::new();
                    for c in s
                        .chunks
                        .iter()
                        .filter(|c| c.seq >= first_seq && c.seq < end && !c.has(ChunkFlags::INIT))
                    {
                        out.extend_from_slice(&c.payload);
                    }
                    return Ok(hls::segment_response(out.freeze()));
                }
            }
            if slot.is_none() {
                let Ok(p) = self.blocked.clone().try_acquire_owned() else {
                    return Err(busy("too many requests waiting for live segments; retry"));
                };
                slot = Some((p, self.shared.metrics.http_blocked()));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ended("the channel ended")),
                Err(_) => {
                    return Err(busy(format!(
                        "segment {first_seq} was not complete within {BLOCK_FOR:?}; retry"
                    )));
                }
            }
        }
    }
}

fn gone(message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::GONE, ErrorCode::NotFound, message)
}

fn ended(why: &str) -> Failure {
    Failure::new(StatusCode::GONE, ErrorCode::None, why).named("ended")
}

fn busy(message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, message)
}

impl Ring {
    fn stale(&self) -> bool {
        lock(&self.state).last_used.elapsed() > RING_IDLE
    }
}

fn frames_response(chunks: &[Chunk]) -> Response<Body> {
    let mut out = BytesMut::new();
    for c in chunks {
        encode(&Frame::Chunk(c.clone()), &mut out);
    }
    let mut resp = Response::new(full(out.freeze()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FRAMES_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    resp
}

fn index(name: &str, ring: &Ring) -> Response<Body> {
    let s = lock(&ring.state);
    let run = &s.run;
    let segments: Vec<serde_json::Value> = s
        .segments
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let complete = i + 1 < s.segments.len() || s.ended.is_some();
            serde_json::json!({"first_seq": g.first_seq, "pts_us": g.pts_us, "complete": complete})
        })
        .collect();
    let init_seq = s
        .init
        .first()
        .map_or_else(|| NO_INIT.to_owned(), |c| c.seq.to_string());
    let body = serde_json::json!({
        "version": 1,
        "channel": format!("live/{name}"),
        "run": run,
        "codec": codec_json(&s.codec),
        "init_url": format!("/v1/live/{name}/{run}/init/{init_seq}"),
        "segments": segments,
        "next_seq": s.next_seq,
        "ended": s.ended.is_some(),
        "chunk_url": format!("/v1/live/{name}/{run}/{{seq}}"),
    })
    .to_string();
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(INDEX_CACHE));
    resp
}

fn init(ring: &Ring, run: &str, seq: &str) -> Result<Response<Body>, Failure> {
    let s = lock(&ring.state);
    if s.run != run {
        return Err(gone(
            "this run of the channel is over: fetch its index again",
        ));
    }
    // A channel without init chunks (MJPEG, WAV-less PCM) names `none`: an empty body, the
    // same whatever its seq has reached.
    let current = s
        .init
        .first()
        .map_or_else(|| NO_INIT.to_owned(), |c| c.seq.to_string());
    if seq != current {
        return Err(gone(
            "these init chunks are not the channel's any more: fetch the index again",
        ));
    }
    Ok(frames_response(&s.init))
}

/// The ring's one viewer of the channel: moves its chunks into the ring until the channel
/// ends or nobody has asked for anything in [`RING_IDLE`]; while the channel has no source
/// (its publisher is away and may come back), waits for one.
async fn fill(
    shared: Arc<Shared>,
    name: String,
    ring: std::sync::Weak<Ring>,
    first: crate::live::Tap,
) {
    let _filling = Filling(ring.clone());
    let mut tap = Some(first);
    loop {
        let Some(r) = ring.upgrade() else {
            return;
        };
        if r.stale() {
            return;
        }
        let Some(t) = tap.take() else {
            drop(r);
            tokio::time::sleep(SOURCE_POLL).await;
            tap = shared.live.tap(&name);
            if let Some(t) = &tap {
                let Some(r) = ring.upgrade() else {
                    return;
                };
                if format!("{:016x}", t.run) != lock(&r.state).run {
                    // The channel was removed and made anew: another run, another ring.
                    let mut s = lock(&r.state);
                    s.ended = Some((ErrorCode::None, "the channel ended".into()));
                    drop(s);
                    r.changed.send_modify(|v| *v += 1);
                    return;
                }
                lock(&r.state).codec = t.codec;
            }
            continue;
        };
        let viewer = t.attached.viewer();
        loop {
            let ready = viewer.ready();
            match viewer.next() {
                Ok(Some(c)) => {
                    let mut s = lock(&r.state);
                    s.push(c);
                    let done = s.ended.is_some();
                    drop(s);
                    r.changed.send_modify(|v| *v += 1);
                    if done {
                        return;
                    }
                }
                Ok(None) => {
                    if tokio::time::timeout(RING_IDLE, ready).await.is_err() && r.stale() {
                        return;
                    }
                }
                // The publisher may come back; a ring that fell behind (the runtime starved)
                // takes up the channel again: neither ends it.
                Err((ErrorCode::PublisherLost | ErrorCode::Lagged, _)) => break,
                Err((code, message)) => {
                    lock(&r.state).ended = Some((code, message));
                    r.changed.send_modify(|v| *v += 1);
                    return;
                }
            }
        }
        drop(t);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chunkcast_protocol::{AudioParams, SampleFormat, StreamId};

    use super::*;

    fn ring(codec: Codec) -> RingState {
        RingState {
            run: "0".repeat(16),
            codec,
            init: Vec::new(),
            after_media: false,
            chunks: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            segments: VecDeque::new(),
            end_us: 0,
            prev_ended: true,
            ended: None,
            last_used: Instant::now(),
        }
    }

    fn chunk(seq: u64, pts_us: u64, flags: ChunkFlags, len: usize) -> Chunk {
        Chunk::new(
            StreamId(1),
            seq,
            0,
            pts_us,
            20_000,
            flags,
            Bytes::from(vec![0u8; len]),
        )
    }

    #[test]
    fn a_ring_keeps_eight_segments_within_its_byte_cap_and_the_current_init() {
        let mut r = ring(Codec::Audio(AudioParams {
            sample_rate: 48_000,
            channels: 2,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        }));
        r.push(chunk(0, 0, ChunkFlags::INIT, 44));
        // 20 ms audio chunks of 128 KiB: a segment per second is 50 chunks, 6.5 MB, so the byte
        // cap (32 MiB) bites before the eight segments do.
        for seq in 1..=2000u64 {
            let c = chunk(
                seq,
                (seq - 1) * 20_000,
                ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
                128 << 10,
            );
            r.push(c);
            assert!(r.bytes <= RING_BYTES && r.chunks.len() <= RING_CHUNKS);
            assert!(r.segments.len() <= RING_SEGMENTS);
        }
        assert_eq!(r.next_seq, 2001);
        assert_eq!(r.init.len(), 1, "the init chunk is kept apart");
        // The oldest held segment starts at a chunk still held, and what is older is gone.
        let oldest = r.segments.front().unwrap().first_seq;
        assert!(r.get(oldest).is_some());
        assert!(r.get(oldest - 1).is_none());
        assert!(r.get(1).is_none());
        assert!(r.get(2000).is_some());
        // Segments are about a second apart.
        let s: Vec<u64> = r.segments.iter().map(|g| g.pts_us).collect();
        assert!(s.windows(2).all(|w| w[1] - w[0] == 1_000_000), "{s:?}");
        assert!(
            r.segments.len() < RING_SEGMENTS,
            "the byte cap evicted whole segments"
        );
    }

    #[test]
    fn a_new_publisher_s_init_replaces_the_old_and_the_end_chunk_ends_the_ring() {
        let mut r = ring(Codec::Bytes);
        r.push(chunk(0, 0, ChunkFlags::INIT, 10));
        r.push(chunk(1, 0, ChunkFlags::KEY | ChunkFlags::END_OF_UNIT, 10));
        r.push(chunk(2, 0, ChunkFlags::INIT, 10));
        r.push(chunk(3, 0, ChunkFlags::INIT, 10));
        assert_eq!(r.init.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3]);
        r.push(Chunk::new(
            StreamId(1),
            4,
            0,
            0,
            0,
            ChunkFlags::END_OF_STREAM | ChunkFlags::INIT,
            Bytes::new(),
        ));
        assert!(r.ended.is_some());
        assert_eq!(r.next_seq, 4, "the end chunk is no chunk to fetch");
    }
}
