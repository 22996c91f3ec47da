//! Live channels: one publisher's chunks fanned out to many viewers, sans-IO.
//!
//! [`Channel`] renumbers what each publisher sends into one continuous channel stream (so a
//! publisher restart does not send viewers back to seq 0 or pts 0), keeps what a late joiner
//! needs — the init chunks and, for video, the group of pictures since the last keyframe — and
//! tells each chunk whether it starts a unit. [`ViewerQueue`] is one viewer's bounded queue
//! with the drop policy that keeps a slow viewer from slowing anyone else:
//!
//! - video: on overflow, drop every queued media chunk and then everything up to the next
//!   keyframe, so that the viewer never receives half a group;
//! - audio and bytes: on overflow, drop the oldest chunks;
//! - a viewer that overflows [`Config::max_lag_events`] times without ever catching up (its
//!   queue running empty) is [`Lagged`]: the server disconnects it with a clear error.
//!
//! Payloads are `Bytes`: a chunk pushed to a thousand queues is one allocation and a thousand
//! reference counts.

use std::collections::VecDeque;

use chunkcast_protocol::media::{Codec, MediaKind};
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags, StreamId};

/// Bounds of the fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes one viewer may have queued. 4 MiB is about 8 s of a 4 Mbit/s stream: enough to
    /// ride out a stall, small enough that 1000 viewers fit in 4 GiB at worst.
    pub viewer_queue_bytes: usize,
    /// Overflows without catching up before a viewer is disconnected.
    pub max_lag_events: u32,
    /// Bytes of group-of-pictures cache kept for late joiners; a longer group is not cached
    /// (late joiners then wait for the next keyframe).
    pub gop_cache_bytes: usize,
    /// Bytes of init chunks kept for late joiners.
    pub init_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            viewer_queue_bytes: 4 << 20,
            max_lag_events: 16,
            gop_cache_bytes: 8 << 20,
            init_cache_bytes: 1 << 20,
        }
    }
}

/// A chunk on its way to viewers, with what the queues need to know about it.
#[derive(Debug, Clone)]
pub struct Fanned {
    /// The chunk, renumbered into the channel's stream.
    pub chunk: Chunk,
    /// Whether it is the first piece of a unit (or an init chunk): where a viewer may start.
    pub starts_unit: bool,
}

/// One live channel's publisher-independent state.
#[derive(Debug)]
pub struct Channel {
    config: Config,
    codec: Option<Codec>,
    next_seq: u64,
    next_offset: u64,
    pts_base: u64,
    pts_end: u64,
    prev_ended_unit: bool,
    init: Vec<Chunk>,
    init_bytes: usize,
    gop: Vec<Chunk>,
    gop_bytes: usize,
    gop_valid: bool,
    /// The source is an edge's upstream: its chunks are the origin's, numbered already.
    relayed: bool,
    /// An upstream (re)started and its first new chunk has not come yet.
    resync: bool,
    /// Added to the origin's (seq, offset, pts_us): nonzero once an origin's numbering went
    /// back (a restarted origin, or another one the publisher moved to).
    shift: (u64, u64, u64),
    /// The seq of the last keyframe that started a unit (kept across publishers).
    last_key_seq: Option<u64>,
}

impl Channel {
    /// An empty channel.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            codec: None,
            next_seq: 0,
            next_offset: 0,
            pts_base: 0,
            pts_end: 0,
            prev_ended_unit: true,
            init: Vec::new(),
            init_bytes: 0,
            gop: Vec::new(),
            gop_bytes: 0,
            gop_valid: false,
            relayed: false,
            resync: false,
            shift: (0, 0, 0),
            last_key_seq: None,
        }
    }

    /// What the current (or last) publisher sends.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// The seq the next chunk will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A publisher starts: its pts continue where the previous publisher's ended, and its init
    /// chunks replace the previous ones.
    pub fn begin(&mut self, codec: Codec) {
        self.codec = Some(codec);
        self.pts_base = self.pts_end;
        self.prev_ended_unit = true;
        self.init.clear();
        self.init_bytes = 0;
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_valid = false;
        self.relayed = false;
    }

    /// An edge's upstream subscription (re)starts: its chunks keep the origin's `seq`,
    /// `offset` and `pts_us`, so that the numbering a viewer sees is the origin's through
    /// upstream reconnects, and the same on every edge (a viewer moved to another edge by its
    /// balancer finds it where it left it).
    ///
    /// Where the origin's numbering goes back (the origin restarted, or the publisher moved to
    /// another origin, whose channel starts afresh), it is shifted to continue this channel's:
    /// see [`Channel::relayed_stale`].
    pub fn begin_relayed(&mut self, codec: Codec) {
        self.begin(codec);
        self.relayed = true;
        self.resync = true;
    }

    /// For a relayed channel: whether the upstream's `chunk` is one the channel already has
    /// (an upstream that reconnects gets the origin's cached group again), to drop. The first
    /// new chunk after [`Channel::begin_relayed`] also decides whether the origin's numbering
    /// went back past this channel's last keyframe: a new numbering, which is then shifted to
    /// continue this one.
    pub fn relayed_stale(&mut self, chunk: &Chunk) -> bool {
        if !self.relayed || chunk.has(ChunkFlags::INIT) {
            return false;
        }
        let seq = chunk.seq + self.shift.0;
        if !self.resync {
            return seq < self.next_seq;
        }
        if seq >= self.next_seq {
            self.resync = false;
            return false;
        }
        if self.last_key_seq.is_some_and(|k| seq >= k) {
            return true;
        }
        self.shift = (
            self.next_seq - chunk.seq,
            self.next_offset.saturating_sub(chunk.offset),
            self.pts_end.saturating_sub(chunk.pts_us),
        );
        self.resync = false;
        false
    }

    /// Leaves `n` numbers unused before the next chunk: chunks the publisher sent that never
    /// arrived (datagrams lost on the way), so that viewers see the hole and count the loss.
    pub fn skip(&mut self, n: u64) {
        self.next_seq += n;
    }

    /// The offset the next chunk will carry.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Takes a publisher's chunk that arrives after later ones (a datagram overtaken on the
    /// way) into the hole [`Channel::skip`] left for it at channel `seq` and `offset`: returns
    /// it renumbered to that place, stamped `stream`. The channel's numbering does not move and
    /// nothing is cached (a joining viewer starts after it); viewers get it after chunks with
    /// higher `seq` and play it or drop it as their jitter buffer allows. For whole-unit
    /// chunks (audio) only, the only ones that come as datagrams.
    pub fn fill(&mut self, chunk: Chunk, seq: u64, offset: u64, stream: StreamId) -> Fanned {
        let out = Chunk {
            stream,
            seq,
            offset,
            pts_us: self.pts_base + chunk.pts_us,
            flags: chunk.flags.without(ChunkFlags::END_OF_STREAM),
            ..chunk
        };
        Fanned {
            chunk: out,
            starts_unit: true,
        }
    }

    /// Takes a publisher's chunk and returns it renumbered for the channel, stamped `stream`.
    pub fn ingest(&mut self, chunk: Chunk, stream: StreamId) -> Fanned {
        let starts_unit = self.prev_ended_unit || chunk.has(ChunkFlags::INIT);
        self.prev_ended_unit = chunk.has(ChunkFlags::END_OF_UNIT) || chunk.has(ChunkFlags::INIT);
        // A relayed init chunk keeps its (old) place: it is not the stream moving on.
        let relayed_init = self.relayed && chunk.has(ChunkFlags::INIT);
        let (seq_shift, offset_shift, pts_shift) = self.shift;
        if self.relayed && !relayed_init {
            // The origin numbered it: what comes next follows it here too.
            self.next_seq = chunk.seq + seq_shift;
            self.next_offset = chunk.offset + offset_shift;
        }
        let pts_us = if self.relayed {
            chunk.pts_us + pts_shift
        } else if chunk.has(ChunkFlags::INIT) {
            self.pts_base
        } else {
            self.pts_base + chunk.pts_us
        };
        self.pts_end = self.pts_end.max(pts_us + u64::from(chunk.duration_us));
        let (seq, offset) = if relayed_init {
            (chunk.seq + seq_shift, chunk.offset + offset_shift)
        } else {
            (self.next_seq, self.next_offset)
        };
        let out = Chunk {
            stream,
            seq,
            offset,
            pts_us,
            // A publisher's end is not the channel's: the next publisher may follow.
            flags: chunk.flags.without(ChunkFlags::END_OF_STREAM),
            ..chunk
        };
        if !relayed_init {
            self.next_seq += 1;
            self.next_offset += u64::from(out.raw_len);
        }
        if starts_unit && out.has(ChunkFlags::KEY) && !out.has(ChunkFlags::INIT) {
            self.last_key_seq = Some(out.seq);
        }
        let len = out.payload.len();
        if out.has(ChunkFlags::INIT) {
            if self.init_bytes + len <= self.config.init_cache_bytes {
                self.init.push(out.clone());
                self.init_bytes += len;
            }
        } else if self.is_video() {
            if starts_unit && out.has(ChunkFlags::KEY) {
                self.gop.clear();
                self.gop_bytes = 0;
                self.gop_valid = true;
            }
            if self.gop_valid {
                if self.gop_bytes + len <= self.config.gop_cache_bytes {
                    self.gop.push(out.clone());
                    self.gop_bytes += len;
                } else {
                    self.gop_valid = false;
                    self.gop.clear();
                    self.gop_bytes = 0;
                }
            }
        }
        Fanned {
            chunk: out,
            starts_unit,
        }
    }

    fn is_video(&self) -> bool {
        self.codec.is_some_and(|c| c.kind() == MediaKind::Video)
    }

    /// What a viewer joining now receives first: the init chunks, then (video) the group of
    /// pictures since the last keyframe. Audio joins at the next chunk.
    pub fn backlog(&self, stream: StreamId) -> Vec<Fanned> {
        let mut out: Vec<Fanned> = self
            .init
            .iter()
            .map(|c| Fanned {
                chunk: Chunk {
                    stream,
                    ..c.clone()
                },
                starts_unit: true,
            })
            .collect();
        if self.gop_valid {
            let mut prev_end = true;
            for c in &self.gop {
                out.push(Fanned {
                    chunk: Chunk {
                        stream,
                        ..c.clone()
                    },
                    starts_unit: prev_end,
                });
                prev_end = c.has(ChunkFlags::END_OF_UNIT);
            }
        }
        out
    }

    /// The chunk that ends the channel for its viewers (the publisher sent `END_OF_STREAM`).
    pub fn end_chunk(&mut self, stream: StreamId) -> Chunk {
        let c = Chunk::new(
            stream,
            self.next_seq,
            self.next_offset,
            self.pts_end,
            0,
            // Empty and INIT: it carries no media, so players do not take it for a unit.
            ChunkFlags::END_OF_STREAM | ChunkFlags::INIT,
            bytes::Bytes::new(),
        );
        self.next_seq += 1;
        c
    }
}

/// The longest hole in a datagram publisher's numbering kept in the channel's (datagrams lost
/// or not yet arrived); a longer jump is a new numbering. Also how many holes are remembered
/// for a datagram that comes late: at 50 audio frames a second, over a second of them.
pub const MAX_HOLE: u64 = 64;

/// Where a datagram publisher's chunk goes in the channel (see [`Holes::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Next in the channel, after leaving `skip` numbers unused for the chunks the publisher
    /// sent before it that have not arrived ([`Channel::skip`], then [`Channel::ingest`]).
    Next {
        /// Numbers to leave unused.
        skip: u64,
    },
    /// Into the hole left for it ([`Channel::fill`]): it was overtaken on the way.
    Fill {
        /// Its channel seq.
        seq: u64,
        /// Its channel offset.
        offset: u64,
    },
    /// Nowhere: a duplicate, or so late that its hole is forgotten.
    Drop,
}

/// A datagram publisher's numbering, as the relay into a [`Channel`] sees it: datagrams may
/// be lost, duplicated or reordered on the way. A jump in `seq` of up to [`MAX_HOLE`] leaves
/// a hole in the channel's numbering, so that viewers count the loss; a datagram that comes
/// after a later one (jitter reorders packets: measured between namespaces, 3–9 % of a call's
/// audio under a capped uplink, whose bursts leave back to back) fills its hole, instead of
/// being lost although it arrived.
#[derive(Debug, Default)]
pub struct Holes {
    /// The publisher's last (seq, pts_us) placed next.
    last: Option<(u64, u64)>,
    /// Holes not filled yet, oldest first: publisher seq, channel seq and offset.
    open: VecDeque<(u64, u64, u64)>,
}

impl Holes {
    /// No numbering seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where `chunk` (a media chunk, not `INIT`) goes in `channel`.
    pub fn place(&mut self, chunk: &Chunk, channel: &Channel) -> Place {
        let Some((seq, pts)) = self.last else {
            self.last = Some((chunk.seq, chunk.pts_us));
            return Place::Next { skip: 0 };
        };
        if chunk.seq <= seq && chunk.pts_us <= pts {
            // Behind the last one (or it again): its hole's, if it left one still remembered.
            return match self.open.iter().position(|h| h.0 == chunk.seq) {
                Some(i) => {
                    let (_, seq, offset) = self.open.remove(i).unwrap_or_default();
                    Place::Fill { seq, offset }
                }
                None => Place::Drop,
            };
        }
        self.last = Some((chunk.seq, chunk.pts_us));
        let gap = chunk.seq.saturating_sub(seq + 1);
        if gap > MAX_HOLE || chunk.seq <= seq {
            // A new numbering (a looping or restarted publisher): the old holes are no one's.
            self.open.clear();
            return Place::Next { skip: 0 };
        }
        let (next, offset) = (channel.next_seq(), channel.next_offset());
        self.open
            .extend((0..gap).map(|k| (seq + 1 + k, next + k, offset)));
        while self.open.len() as u64 > MAX_HOLE {
            self.open.pop_front();
        }
        Place::Next { skip: gap }
    }
}

/// A viewer fell too far behind and must be disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("viewer fell behind: {drops} chunks dropped over {events} overflows")]
pub struct Lagged {
    /// Chunks dropped in all.
    pub drops: u64,
    /// Overflows since the viewer last caught up.
    pub events: u32,
}

/// One viewer's bounded queue.
#[derive(Debug)]
pub struct ViewerQueue {
    config: Config,
    video: bool,
    queue: VecDeque<Chunk>,
    bytes: usize,
    skipping: bool,
    lag_events: u32,
    drops: u64,
    stream: StreamId,
}

impl ViewerQueue {
    /// An empty queue for a stream of `codec`, stamping chunks with the viewer's `stream`.
    pub fn new(config: Config, codec: Option<Codec>, stream: StreamId) -> Self {
        Self {
            config,
            video: codec.is_some_and(|c| c.kind() == MediaKind::Video),
            queue: VecDeque::new(),
            bytes: 0,
            skipping: false,
            lag_events: 0,
            drops: 0,
            stream,
        }
    }

    /// The publisher changed the codec (a new publisher).
    pub fn set_codec(&mut self, codec: Codec) {
        self.video = codec.kind() == MediaKind::Video;
    }

    /// Makes a video viewer start over at the next keyframe that starts a unit: what comes
    /// before it is skipped (counted as dropped; the viewer sees the gap in `seq`). For a
    /// viewer joining while the channel has no cached group, or when a new publisher takes
    /// over mid-group, so that nobody is handed frames it cannot decode. Init chunks still
    /// pass. Audio and bytes need no keyframe: nothing changes for them.
    pub fn skip_to_keyframe(&mut self) {
        if self.video {
            self.skipping = true;
        }
    }

    /// Chunks dropped for this viewer so far.
    pub fn drops(&self) -> u64 {
        self.drops
    }

    /// Chunks queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a chunk, dropping by the policy when full.
    pub fn push(&mut self, f: &Fanned) -> Result<(), Lagged> {
        let chunk = &f.chunk;
        let len = chunk.payload.len();
        let init = chunk.has(ChunkFlags::INIT);
        if self.skipping && !init {
            if f.starts_unit && chunk.has(ChunkFlags::KEY) {
                self.skipping = false;
            } else {
                self.drops += 1;
                return Ok(());
            }
        }
        if self.bytes + len > self.config.viewer_queue_bytes && !init {
            self.lag_events += 1;
            if self.lag_events > self.config.max_lag_events {
                return Err(Lagged {
                    drops: self.drops,
                    events: self.lag_events,
                });
            }
            if self.video {
                // Whole groups only: everything queued goes, and so does everything until the
                // next keyframe (unless this very chunk starts one).
                self.drop_media(|_| true);
                if !(f.starts_unit && chunk.has(ChunkFlags::KEY)) {
                    self.skipping = true;
                    self.drops += 1;
                    return Ok(());
                }
            } else {
                let need = self.bytes + len - self.config.viewer_queue_bytes;
                let mut freed = 0;
                self.drop_media(|c| {
                    let go = freed < need;
                    if go {
                        freed += c.payload.len();
                    }
                    go
                });
            }
        }
        self.bytes += len;
        self.queue.push_back(Chunk {
            stream: self.stream,
            ..chunk.clone()
        });
        Ok(())
    }

    fn drop_media(&mut self, mut pick: impl FnMut(&Chunk) -> bool) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for c in self.queue.drain(..) {
            if !c.has(ChunkFlags::INIT) && pick(&c) {
                self.bytes -= c.payload.len();
                self.drops += 1;
            } else {
                kept.push_back(c);
            }
        }
        self.queue = kept;
    }

    /// Takes the oldest chunk. A viewer whose queue runs empty has caught up.
    pub fn pop(&mut self) -> Option<Chunk> {
        let c = self.queue.pop_front()?;
        self.bytes -= c.payload.len();
        if self.queue.is_empty() {
            self.lag_events = 0;
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use chunkcast_protocol::media::{VideoParams, VisualFormat};

    fn video() -> Codec {
        Codec::Video(VideoParams {
            format: VisualFormat::Mjpeg,
            width: 8,
            height: 8,
            fps_num: 25,
            fps_den: 1,
        })
    }

    /// Frame `n` of a publisher: two pieces, every 5th frame a keyframe.
    fn frame(n: u64, size: usize) -> [Chunk; 2] {
        let key = if n % 5 == 0 {
            ChunkFlags::KEY
        } else {
            ChunkFlags::empty()
        };
        let p = Bytes::from(vec![n as u8; size]);
        [
            Chunk::new(StreamId(9), 2 * n, 0, n * 40_000, 40_000, key, p.clone()),
            Chunk::new(
                StreamId(9),
                2 * n + 1,
                0,
                n * 40_000,
                40_000,
                key | ChunkFlags::END_OF_UNIT,
                p,
            ),
        ]
    }

    /// Audio frame `seq` of a datagram publisher: 20 ms each.
    fn datagram(seq: u64) -> Chunk {
        let p = Bytes::from(vec![seq as u8; 4]);
        Chunk::new(
            StreamId(9),
            seq,
            seq * 4,
            seq * 20_000,
            20_000,
            ChunkFlags::END_OF_UNIT,
            p,
        )
    }

    /// What the server's relay does with each arrival: the channel seqs (and pts) the viewers
    /// get, in the order they get them.
    fn relay(ch: &mut Channel, holes: &mut Holes, arrivals: &[Chunk]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for c in arrivals {
            let f = match holes.place(c, ch) {
                Place::Next { skip } => {
                    ch.skip(skip);
                    ch.ingest(c.clone(), StreamId(1))
                }
                Place::Fill { seq, offset } => ch.fill(c.clone(), seq, offset, StreamId(1)),
                Place::Drop => continue,
            };
            out.push((f.chunk.seq, f.chunk.pts_us));
        }
        out
    }

    #[test]
    fn an_overtaken_datagram_fills_its_hole_instead_of_being_lost() {
        let mut ch = Channel::new(Config::default());
        // A later publisher: the channel's numbers are not the publisher's.
        ch.skip(100);
        let mut holes = Holes::new();
        let order = [0, 1, 3, 2, 4, 7, 5, 6, 8].map(datagram);
        let got = relay(&mut ch, &mut holes, &order);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, [100, 101, 103, 102, 104, 107, 105, 106, 108]);
        // Each keeps its own time, and its place is its own publisher seq's.
        assert!(got.iter().all(|&(seq, pts)| pts == (seq - 100) * 20_000));
        assert_eq!(ch.next_seq(), 109);
    }

    #[test]
    fn duplicates_and_datagrams_later_than_remembered_holes_are_dropped() {
        let mut ch = Channel::new(Config::default());
        let mut holes = Holes::new();
        // 1 never comes in time: 66 chunks later, over MAX_HOLE holes (1, then 64 lost ones
        // after 3) have been opened since.
        let mut order: Vec<Chunk> = [0, 2, 2, 3].map(datagram).to_vec();
        order.push(datagram(3 + MAX_HOLE + 1));
        order.extend([1, 2, 3 + MAX_HOLE + 1, 5].map(datagram));
        let got = relay(&mut ch, &mut holes, &order);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        // 0; 2 after a hole; 3; 68 after 64 holes; 5 into its hole. Not: the second 2, the
        // forgotten 1, 2 and 68 again.
        assert_eq!(seqs, [0, 2, 3, 68, 5]);
    }

    #[test]
    fn a_new_numbering_is_not_taken_for_a_late_datagram() {
        let mut ch = Channel::new(Config::default());
        let mut holes = Holes::new();
        let mut order: Vec<Chunk> = [0, 1, 3].map(datagram).to_vec();
        // A looping publisher starts at 0 again, later in time.
        order.extend((0..2).map(|s| Chunk {
            pts_us: 1_000_000 + s * 20_000,
            ..datagram(s)
        }));
        // A jump beyond MAX_HOLE is a new numbering too: no hole, and 2 finds none after it.
        order.push(datagram(1 + MAX_HOLE + 10));
        order.push(datagram(2));
        let got = relay(&mut ch, &mut holes, &order);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, [0, 1, 3, 4, 5, 6]);
    }

    #[test]
    fn late_joiner_starts_with_init_and_the_current_group() {
        let mut ch = Channel::new(Config::default());
        ch.begin(video());
        let init = Chunk::new(
            StreamId(9),
            0,
            0,
            0,
            0,
            ChunkFlags::INIT,
            Bytes::from_static(b"hdr"),
        );
        ch.ingest(init, StreamId(1));
        for n in 0..13 {
            for c in frame(n, 10) {
                ch.ingest(c, StreamId(1));
            }
        }
        let b = ch.backlog(StreamId(4));
        assert!(b[0].chunk.has(ChunkFlags::INIT));
        // Frames 10, 11, 12: the group since the keyframe at 10, two pieces each.
        assert_eq!(b.len(), 1 + 6);
        assert!(b[1].starts_unit && b[1].chunk.has(ChunkFlags::KEY));
        assert_eq!(b[1].chunk.pts_us, 10 * 40_000);
        assert!(b.iter().all(|f| f.chunk.stream == StreamId(4)));
    }

    #[test]
    fn a_new_publisher_continues_seq_and_pts() {
        let mut ch = Channel::new(Config::default());
        ch.begin(video());
        for c in frame(0, 1) {
            ch.ingest(c, StreamId(1));
        }
        ch.begin(video());
        let f = ch.ingest(frame(0, 1)[0].clone(), StreamId(1));
        assert_eq!(f.chunk.seq, 2);
        assert_eq!(
            f.chunk.pts_us, 40_000,
            "pts continue after the previous publisher's end"
        );
        assert!(f.starts_unit);
    }

    #[test]
    fn a_relayed_source_keeps_the_origins_numbering_through_a_restart() {
        let mut ch = Channel::new(Config::default());
        ch.begin_relayed(video());
        let mut c = frame(0, 1)[0].clone();
        (c.seq, c.offset, c.pts_us) = (500, 9_000, 7_000_000);
        let f = ch.ingest(c.clone(), StreamId(1));
        assert_eq!(
            (f.chunk.seq, f.chunk.offset, f.chunk.pts_us),
            (500, 9_000, 7_000_000)
        );
        assert_eq!(ch.next_seq(), 501);
        // The upstream reconnects and resumes a little later in the origin's numbering.
        ch.begin_relayed(video());
        (c.seq, c.offset, c.pts_us) = (520, 9_900, 7_800_000);
        let f = ch.ingest(c, StreamId(1));
        assert_eq!(
            (f.chunk.seq, f.chunk.pts_us),
            (520, 7_800_000),
            "not rebased"
        );
        assert_eq!(ch.end_chunk(StreamId(1)).seq, 521);
    }

    #[test]
    fn a_relayed_reconnect_drops_the_replayed_group_and_a_new_numbering_is_continued() {
        let mut ch = Channel::new(Config::default());
        ch.begin_relayed(video());
        let at = |seq: u64| {
            let mut c = frame(seq / 2, 1)[(seq % 2) as usize].clone();
            (c.seq, c.pts_us) = (seq, seq * 20_000);
            c
        };
        for seq in 100..106 {
            let c = at(seq);
            assert!(!ch.relayed_stale(&c));
            ch.ingest(c, StreamId(1));
        }
        // Reconnected to the same origin: its cached group (from the keyframe at 100) again,
        // then new chunks.
        ch.begin_relayed(video());
        for seq in 100..106 {
            assert!(ch.relayed_stale(&at(seq)), "{seq} is a replay");
        }
        assert!(!ch.relayed_stale(&at(106)));
        assert_eq!(ch.ingest(at(106), StreamId(1)).chunk.seq, 106);
        // Then an origin that starts afresh (restarted, or the publisher moved): continued.
        ch.begin_relayed(video());
        let fresh = at(0);
        assert!(!ch.relayed_stale(&fresh));
        let f = ch.ingest(fresh, StreamId(1));
        assert_eq!(f.chunk.seq, 107, "seq continues");
        assert!(
            f.chunk.pts_us >= 107 * 20_000,
            "pts continue: {}",
            f.chunk.pts_us
        );
        assert_eq!(ch.ingest(at(1), StreamId(1)).chunk.seq, 108);
    }

    /// The module's promise: a chunk fanned out to a thousand viewers is one allocation.
    /// Every viewer's copy (and a late joiner's, from the group cache) must point into the
    /// publisher's payload; a copy anywhere on the way would move it.
    #[test]
    fn a_chunk_fanned_out_to_a_thousand_viewers_shares_one_payload() {
        let mut ch = Channel::new(Config::default());
        ch.begin(video());
        let mut viewers: Vec<ViewerQueue> = (0..1000)
            .map(|v| ViewerQueue::new(Config::default(), Some(video()), StreamId(v + 1)))
            .collect();
        let sent = frame(0, 20_000);
        let shared: Vec<(usize, usize)> = sent
            .iter()
            .map(|c| (c.payload.as_ptr() as usize, c.payload.len()))
            .collect();
        for c in sent {
            let f = ch.ingest(c, StreamId(0));
            for q in &mut viewers {
                q.push(&f).unwrap();
            }
        }
        for (v, q) in viewers.iter_mut().enumerate() {
            for &want in &shared {
                let c = q.pop().unwrap();
                assert_eq!(c.stream, StreamId(v as u32 + 1), "stamped for its viewer");
                assert_eq!(
                    (c.payload.as_ptr() as usize, c.payload.len()),
                    want,
                    "viewer {v} got a copy"
                );
            }
        }
        let late: Vec<(usize, usize)> = ch
            .backlog(StreamId(5000))
            .iter()
            .map(|f| (f.chunk.payload.as_ptr() as usize, f.chunk.payload.len()))
            .collect();
        assert_eq!(late, shared, "the late joiner's group is the same bytes");
    }

    #[test]
    fn slow_video_viewer_drops_whole_groups_and_resumes_at_a_keyframe() {
        let cfg = Config {
            viewer_queue_bytes: 100,
            ..Config::default()
        };
        let mut ch = Channel::new(cfg);
        ch.begin(video());
        let mut q = ViewerQueue::new(cfg, Some(video()), StreamId(2));
        for n in 0..12 {
            for c in frame(n, 10) {
                q.push(&ch.ingest(c, StreamId(1))).unwrap();
            }
        }
        assert!(q.drops() > 0);
        // What is left is whole frames starting at a keyframe, in order.
        let left: Vec<Chunk> = std::iter::from_fn(|| q.pop()).collect();
        assert!(left[0].has(ChunkFlags::KEY), "{:?}", left[0]);
        assert_eq!(left.len() % 2, 0);
        assert!(left.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn a_viewer_told_to_skip_starts_at_the_next_keyframe_and_init_still_passes() {
        let mut ch = Channel::new(Config::default());
        ch.begin(video());
        let mut q = ViewerQueue::new(Config::default(), Some(video()), StreamId(2));
        q.skip_to_keyframe();
        let init = Chunk::new(StreamId(9), 0, 0, 0, 0, ChunkFlags::INIT, Bytes::new());
        q.push(&ch.ingest(init, StreamId(1))).unwrap();
        // Frames 3 and 4 are mid-group; 5 is a keyframe.
        for n in 3..7 {
            for c in frame(n, 10) {
                q.push(&ch.ingest(c, StreamId(1))).unwrap();
            }
        }
        let got: Vec<Chunk> = std::iter::from_fn(|| q.pop()).collect();
        assert!(got[0].has(ChunkFlags::INIT));
        assert!(got[1].has(ChunkFlags::KEY), "{:?}", got[1]);
        assert_eq!(got[1].pts_us, 5 * 40_000);
        assert_eq!(got.len(), 1 + 4, "init, then frames 5 and 6");
        assert_eq!(q.drops(), 4);
        // Audio never waits for a keyframe.
        let mut a = ViewerQueue::new(Config::default(), None, StreamId(2));
        a.skip_to_keyframe();
        a.push(&ch.ingest(frame(7, 10)[0].clone(), StreamId(1)))
            .unwrap();
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn slow_audio_viewer_drops_oldest_and_lagging_forever_disconnects() {
        let cfg = Config {
            viewer_queue_bytes: 100,
            max_lag_events: 3,
            ..Config::default()
        };
        let mut q = ViewerQueue::new(cfg, None, StreamId(2));
        let mut ch = Channel::new(cfg);
        let mut result = Ok(());
        for n in 0..20u64 {
            let c = Chunk::new(
                StreamId(9),
                n,
                0,
                n,
                1,
                ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
                Bytes::from(vec![0; 30]),
            );
            result = q.push(&ch.ingest(c, StreamId(1)));
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(Lagged { events: 4, .. })));
        // A viewer that keeps up is never lagged.
        let mut q = ViewerQueue::new(cfg, None, StreamId(2));
        for n in 0..1000u64 {
            let c = Chunk::new(
                StreamId(9),
                n,
                0,
                n,
                1,
                ChunkFlags::KEY,
                Bytes::from(vec![0; 30]),
            );
            q.push(&ch.ingest(c, StreamId(1))).unwrap();
            q.pop().unwrap();
        }
        assert_eq!(q.drops(), 0);
    }
}
