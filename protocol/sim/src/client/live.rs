//! Live parts: a publisher that sends a file at its media pace, looping, and a viewer that
//! checks what the fan-out hands it.

use std::collections::VecDeque;
use std::io::Cursor;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_media::pace::Pacer;
use chunkcast_media::{Config as ChunkConfig, Packetizer};
use chunkcast_protocol::conn::client::ClientEvent;
use chunkcast_protocol::media::MediaKind;
use chunkcast_protocol::wire::encode_chunk_head;
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, ErrorCode, StreamId};
use rand::Rng;

use super::{Link, Part};
use crate::World;
use crate::invariants::Violation;

/// Publishes library file `file` to `channel`, looping it with continuous timestamps.
pub struct Publish {
    channel: String,
    file: usize,
    codec: Option<Codec>,
    request: Option<u32>,
    stream: Option<StreamId>,
    pacer: Pacer,
    queue: VecDeque<Chunk>,
    round: u64,
    retry_at: Option<Duration>,
    due: Option<Duration>,
}

impl Publish {
    /// A publisher of `file` on `channel`.
    pub fn new(channel: String, file: usize) -> Self {
        Self {
            channel,
            file,
            codec: None,
            request: None,
            stream: None,
            pacer: Pacer::new(),
            queue: VecDeque::new(),
            round: 0,
            retry_at: None,
            due: None,
        }
    }

    /// The file's next round of chunks, shifted to follow the previous round.
    fn refill(&mut self, w: &World, stream: StreamId) {
        let f = w.library.file(self.file);
        let Ok(mut p) = Packetizer::open(
            ChunkConfig::new(stream),
            &mut Cursor::new(&f.data[..]),
            f.data.len() as u64,
            &f.name,
        ) else {
            return;
        };
        let duration = p.duration_us().unwrap_or(1_000_000);
        let mut chunks = Vec::new();
        if p.push(f.data.clone(), &mut chunks).is_err() || p.finish(&mut chunks).is_err() {
            return;
        }
        let len = f.data.len() as u64;
        for c in chunks {
            // A header repeated every round would be init bytes mid-stream: only the first.
            if self.round > 0 && c.has(ChunkFlags::INIT) {
                continue;
            }
            self.queue.push_back(Chunk {
                pts_us: c.pts_us + self.round * duration,
                offset: c.offset + self.round * len,
                flags: c.flags.without(ChunkFlags::END_OF_STREAM),
                ..c
            });
        }
        self.round += 1;
    }

    fn request(&mut self, w: &mut World, c: &mut Link<'_>) {
        let codec = match self.codec {
            Some(codec) => codec,
            None => {
                let f = w.library.file(self.file);
                let Ok(p) = Packetizer::open(
                    ChunkConfig::new(StreamId(0)),
                    &mut Cursor::new(&f.data[..]),
                    f.data.len() as u64,
                    &f.name,
                ) else {
                    return;
                };
                *self.codec.insert(p.codec())
            }
        };
        if let Ok((request, stream)) = c.machine.publish(&self.channel, codec) {
            w.trace
                .event(w.now, c.id, "publish", u64::from(stream.0), 0);
            self.request = Some(request);
            self.stream = Some(stream);
            self.retry_at = None;
        }
    }

    fn reset(&mut self) {
        self.request = None;
        self.stream = None;
        self.queue.clear();
        self.pacer = Pacer::new();
        self.round = 0;
        self.due = None;
    }
}

impl Part for Publish {
    fn connected(&mut self, w: &mut World, c: &mut Link<'_>) {
        self.request(w, c);
    }

    fn event(&mut self, w: &mut World, c: &mut Link<'_>, event: &ClientEvent) {
        match event {
            ClientEvent::Opened { request, opened } if Some(*request) == self.request => {
                self.request = None;
                self.refill(w, opened.stream);
            }
            ClientEvent::Refused { request, .. } if Some(*request) == self.request => {
                self.reset();
                self.retry_at = Some(w.now + Duration::from_secs(1));
            }
            ClientEvent::StreamClosed { stream, .. } if Some(*stream) == self.stream => {
                // Another publisher took the channel over: take it back later.
                self.reset();
                self.retry_at =
                    Some(w.now + Duration::from_millis(c.rng.random_range(1_000..5_000)));
            }
            _ => {}
        }
    }

    fn corrupted(&mut self, _w: &mut World, _c: &mut Link<'_>, _stream: StreamId) {}

    fn owns(&self, _stream: StreamId) -> bool {
        false
    }

    fn chunk(&mut self, _w: &mut World, _c: &mut Link<'_>, _chunk: Chunk) {}

    fn work(&mut self, w: &mut World, c: &mut Link<'_>) {
        self.due = None;
        if self.stream.is_none() {
            if self.retry_at.is_some_and(|t| w.now >= t) {
                self.request(w, c);
            }
            return;
        }
        let Some(stream) = self.stream.filter(|_| self.request.is_none()) else {
            return;
        };
        loop {
            if self.queue.is_empty() {
                self.refill(w, stream);
            }
            let Some(front) = self.queue.front() else {
                return;
            };
            if front.duration_us > 0 {
                let due = w
                    .clock
                    .since_start(self.pacer.due(w.clock.now(), front.pts_us));
                if due > w.now {
                    self.due = Some(due);
                    return;
                }
            }
            if c.tcp.space() == 0 {
                return;
            }
            let Some(chunk) = self.queue.pop_front() else {
                return;
            };
            let mut head = BytesMut::with_capacity(64);
            encode_chunk_head(&chunk, &mut head);
            c.tcp.write(&head);
            c.tcp.write(&chunk.payload);
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.due.or(self.retry_at)
    }

    fn closed(&mut self, _w: &mut World) {
        self.reset();
    }

    fn waiting(&self) -> Option<(Duration, String)> {
        None
    }

    fn memory(&self) -> usize {
        // The queue's payloads are slices of the library's file: no copy.
        self.queue.len() * 64
    }
}

/// Watches `channel`, checking every chunk against its source and its order against the
/// fan-out's drops.
pub struct View {
    channel: String,
    /// Whether the path lets it keep up: then it must never be dropped as lagging.
    keeps_up: bool,
    request: Option<u32>,
    stream: Option<StreamId>,
    expected: Option<u64>,
    accounted: u64,
    after_gap: bool,
    video: bool,
    retry_at: Option<Duration>,
}

impl View {
    /// A viewer of `channel`; `keeps_up` when its path and reading are fast enough.
    pub fn new(channel: String, keeps_up: bool) -> Self {
        Self {
            channel,
            keeps_up,
            request: None,
            stream: None,
            expected: None,
            accounted: 0,
            after_gap: false,
            video: false,
            retry_at: None,
        }
    }

    fn subscribe(&mut self, w: &mut World, c: &mut Link<'_>) {
        if let Ok((request, stream)) = c.machine.subscribe(&self.channel) {
            w.trace
                .event(w.now, c.id, "subscribe", u64::from(stream.0), 0);
            self.request = Some(request);
            self.stream = Some(stream);
            self.expected = None;
            self.retry_at = None;
        }
    }
}

impl Part for View {
    fn connected(&mut self, w: &mut World, c: &mut Link<'_>) {
        self.subscribe(w, c);
    }

    fn event(&mut self, w: &mut World, c: &mut Link<'_>, event: &ClientEvent) {
        match event {
            ClientEvent::Opened { request, opened } if Some(*request) == self.request => {
                self.request = None;
                self.video = opened.codec.kind() == MediaKind::Video;
            }
            ClientEvent::Refused { request, .. } if Some(*request) == self.request => {
                self.stream = None;
                self.request = None;
                self.retry_at = Some(w.now + Duration::from_secs(1));
            }
            ClientEvent::StreamClosed { stream, code, .. } if Some(*stream) == self.stream => {
                if *code == ErrorCode::Lagged && self.keeps_up {
                    w.oracle.violate(Violation::SlowViewerPolicy {
                        client: c.id,
                        detail: format!(
                            "{}: a viewer that keeps up was dropped as lagging",
                            self.channel
                        ),
                    });
                }
                self.stream = None;
                self.retry_at = Some(w.now + Duration::from_millis(c.rng.random_range(500..3_000)));
            }
            _ => {}
        }
    }

    fn corrupted(&mut self, w: &mut World, c: &mut Link<'_>, stream: StreamId) {
        // A hole in a live stream: leave and join again (the fan-out starts a joiner at a
        // keyframe), rather than play on past a missing chunk.
        c.machine.cancel(stream);
        self.stream = None;
        self.request = None;
        self.expected = None;
        self.retry_at = Some(w.now + Duration::from_millis(c.rng.random_range(100..1_000)));
    }

    fn owns(&self, stream: StreamId) -> bool {
        self.stream == Some(stream)
    }

    fn chunk(&mut self, w: &mut World, c: &mut Link<'_>, mut chunk: Chunk) {
        let Some(stream) = self.stream else { return };
        w.oracle.tamper(&mut chunk);
        let hub = w
            .oracle
            .hub_of(c.conn, stream.0)
            .unwrap_or(&self.channel)
            .to_owned();
        w.oracle.live_chunk(&w.library, c.id, &hub, &chunk);
        let init = chunk.has(ChunkFlags::INIT);
        let Some(expected) = self.expected else {
            // The joiner's backlog (init chunks, the group in progress) comes first; order
            // counts from the first media chunk on.
            if !init {
                self.expected = Some(chunk.seq + 1);
                self.accounted = w.oracle.drops_before(c.conn, stream.0, chunk.seq);
            }
            return;
        };
        let dropped = w.oracle.drops_before(c.conn, stream.0, chunk.seq);
        if chunk.seq != expected {
            let gap = chunk.seq.saturating_sub(expected);
            if chunk.seq < expected || self.accounted + gap > dropped {
                w.oracle.violate(Violation::OutOfOrder {
                    client: c.id,
                    channel: hub.clone(),
                    expected,
                    got: chunk.seq,
                    dropped: dropped.saturating_sub(self.accounted),
                });
            }
            self.accounted += gap;
            self.after_gap = true;
        }
        if self.after_gap && !init {
            // The policy: a video viewer never gets half a group after a drop.
            if self.video && !chunk.has(ChunkFlags::KEY) {
                w.oracle.violate(Violation::SlowViewerPolicy {
                    client: c.id,
                    detail: format!("{hub}: chunk {} after a drop is not a keyframe", chunk.seq),
                });
            }
            self.after_gap = false;
        }
        self.expected = Some(chunk.seq + 1);
    }

    fn work(&mut self, w: &mut World, c: &mut Link<'_>) {
        if self.stream.is_none() && self.retry_at.is_some_and(|t| w.now >= t) {
            self.subscribe(w, c);
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.stream.is_none() {
            self.retry_at
        } else {
            None
        }
    }

    fn closed(&mut self, _w: &mut World) {
        self.stream = None;
        self.request = None;
        self.expected = None;
    }

    fn waiting(&self) -> Option<(Duration, String)> {
        None
    }

    fn memory(&self) -> usize {
        0
    }
}
