//! The server: one [`ServerConn`] per connection over the simulated TCP, file streams from the
//! in-memory library, and live channels through the media crate's fan-out.
//!
//! It does what `chunkcast-server` does around the machine (`server/src/conn.rs`,
//! `stream.rs`, `live.rs`), in the same order on the wire: `OPENED`, the chunks (paced by
//! their timestamps in realtime mode, bounded by the transport's send buffer), then `DIGEST`
//! when the digest was announced for the end; a channel's chunks go to every viewer's bounded
//! queue, whose policy handles a slow viewer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Cursor;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chunkcast_media::fanout::{Channel, Config as FanoutConfig, ViewerQueue};
use chunkcast_media::pace::Pacer;
use chunkcast_media::{Config as ChunkConfig, DEFAULT_CHUNK_SIZE, Packetizer};
use chunkcast_protocol::compress::{self, Compressor};
use chunkcast_protocol::conn::ServerConn;
use chunkcast_protocol::conn::server::{Ending, ServerConnConfig, ServerEvent};
use chunkcast_protocol::session::ServerConfig;
use chunkcast_protocol::wire::{
    Decoder, Entry, FileDigest, Frame, Mode, Open, Opened, Resume, encode, encode_chunk_head,
};
use chunkcast_protocol::{Caps, Chunk, ChunkFlags, Codec, ErrorCode, StreamId};

use crate::World;
use crate::net::HostId;
use crate::tcp::{self, Tcp};

/// Bytes of a file fed to its packetizer at a time: the read-ahead.
const FEED: usize = 32 << 10;

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The connection machine's settings (the epoch is the simulation's).
    pub conn: ServerConnConfig,
    /// The fan-out's bounds.
    pub fanout: FanoutConfig,
    /// Transport buffers per connection.
    pub tcp: tcp::Config,
    /// Sabotage: answer `OPEN` with `OPENED`, then never send the stream.
    pub forget_streams: bool,
    /// Sabotage: lose every Nth chunk on its way from a viewer's queue to its connection,
    /// behind the fan-out's back.
    pub skip_viewer_chunks: Option<u64>,
}

/// A stream's task on the server.
enum Task {
    File(Box<FileStream>),
    /// A viewer's queue lives in its hub; this names the hub.
    Viewer(String),
    Publisher {
        hub: String,
        file: Option<usize>,
    },
}

struct FileStream {
    stream: StreamId,
    file: usize,
    packetizer: Packetizer,
    data: Bytes,
    fed: usize,
    /// File offset of `data`'s first byte (a resumed download's start).
    base: u64,
    ready: VecDeque<Chunk>,
    realtime: bool,
    pacer: Pacer,
    compressor: Option<Compressor>,
    digest_at_end: Option<[u8; 32]>,
    finished: bool,
}

/// One client connection on the server.
struct Side {
    host: HostId,
    tcp: Tcp,
    machine: ServerConn,
    decoder: Decoder,
    inbuf: BytesMut,
    out: BytesMut,
    tasks: BTreeMap<StreamId, Task>,
    caps: Caps,
    /// Nothing more is read: the machine closed.
    closed: Option<Ending>,
    fin_sent: bool,
}

struct Viewer {
    conn: u64,
    stream: StreamId,
    queue: ViewerQueue,
    /// `OPENED` waits for the channel's first publisher (for its codec).
    request: Option<u32>,
}

struct Hub {
    channel: Channel,
    publisher: Option<(u64, StreamId)>,
    viewers: Vec<Viewer>,
}

/// The server host.
pub struct Server {
    config: Config,
    conns: BTreeMap<u64, Side>,
    /// Connections that ended, so late segments get a RST instead of a new connection.
    gone: BTreeSet<u64>,
    hubs: BTreeMap<String, Hub>,
    /// Call rooms: the two sessions seated in each.
    rooms: BTreeMap<String, [Option<u64>; 2]>,
    digests_known: BTreeSet<usize>,
    next_session: u64,
    viewer_chunks: u64,
}

impl Server {
    /// A server with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            conns: BTreeMap::new(),
            gone: BTreeSet::new(),
            hubs: BTreeMap::new(),
            rooms: BTreeMap::new(),
            digests_known: BTreeSet::new(),
            next_session: 1,
            viewer_chunks: 0,
        }
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A segment arrived from `from`; returns its connection if it has one.
    pub fn handle_segment(
        &mut self,
        w: &mut World,
        from: HostId,
        seg: tcp::Segment,
    ) -> Option<u64> {
        let conn = seg.conn;
        if !self.conns.contains_key(&conn) {
            if self.gone.contains(&conn) || seg.flags & tcp::RST != 0 || !seg.intact() {
                if self.gone.contains(&conn) && seg.flags & tcp::RST == 0 {
                    let mut t = Tcp::new(conn, self.config.tcp);
                    t.reset();
                    let mut segs = Vec::new();
                    t.poll_transmit(w.now, &mut segs);
                    for s in segs {
                        w.send(0, from, s);
                    }
                }
                return None;
            }
            let machine =
                ServerConn::new(self.config.conn.clone(), w.clock.now(), self.next_session);
            self.next_session += 1;
            w.trace.event(w.now, 0, "accept", conn, 0);
            self.conns.insert(
                conn,
                Side {
                    host: from,
                    tcp: Tcp::new(conn, self.config.tcp),
                    machine,
                    decoder: Decoder::default(),
                    inbuf: BytesMut::new(),
                    out: BytesMut::new(),
                    tasks: BTreeMap::new(),
                    caps: Caps(0),
                    closed: None,
                    fin_sent: false,
                },
            );
        }
        let side = self.conns.get_mut(&conn)?;
        side.tcp.handle_segment(w.now, seg);
        Some(conn)
    }

    /// When connection `conn` needs to run next.
    pub fn poll_timeout(&self, w: &World, conn: u64) -> Option<Duration> {
        let side = self.conns.get(&conn)?;
        let mut next = side.tcp.poll_timeout();
        if side.closed.is_none() {
            if let Some(t) = side.machine.poll_timeout() {
                next = min(next, Some(w.clock.since_start(t)));
            }
        }
        for task in side.tasks.values() {
            if let Task::File(f) = task {
                if let Some(due) = f.due(w) {
                    next = min(next, Some(due));
                }
            }
        }
        next
    }

    /// Bytes held for connection `conn`: transport buffers, decode buffer, queued chunks and
    /// its viewers' queues.
    pub fn memory(&self, conn: u64) -> usize {
        let Some(side) = self.conns.get(&conn) else {
            return 0;
        };
        let mut n = side.tcp.memory() + side.inbuf.len() + side.out.len();
        for task in side.tasks.values() {
            match task {
                Task::File(f) => n += f.ready.iter().map(|c| c.payload.len()).sum::<usize>(),
                Task::Viewer(hub) => {
                    if let Some(h) = self.hubs.get(hub) {
                        n += h
                            .viewers
                            .iter()
                            .filter(|v| v.conn == conn)
                            .map(|v| v.queue.len() * 64)
                            .sum::<usize>();
                    }
                }
                Task::Publisher { .. } => {}
            }
        }
        n
    }

    /// Runs connection `conn` at `w.now`: input, machine, tasks, output. Connections whose
    /// viewers were handed chunks are added to `dirty`.
    pub fn pump(&mut self, w: &mut World, conn: u64, dirty: &mut BTreeSet<u64>) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let now_i = w.clock.now();
        side.tcp.handle_timeout(w.now);
        // Input: what the client sent, as frames.
        if side.closed.is_none() {
            side.tcp.read(&mut side.inbuf, usize::MAX);
        }
        let mut chunks = Vec::new();
        while side.closed.is_none() {
            match side.decoder.decode(&mut side.inbuf) {
                Ok(Some(Frame::Chunk(c))) => {
                    if matches!(side.tasks.get(&c.stream), Some(Task::Publisher { .. })) {
                        side.machine.handle_data(now_i);
                        chunks.push(c);
                    } else {
                        side.machine.handle_frame(now_i, Frame::Chunk(c));
                    }
                }
                Ok(Some(frame)) => side.machine.handle_frame(now_i, frame),
                Ok(None) => break,
                // A publisher's chunk that fails its CRC is dropped, as loss, as the real
                // server's relay does; the channel's numbering skips nothing.
                Err(chunkcast_protocol::DecodeError::Checksum { stream, seq })
                    if matches!(side.tasks.get(&stream), Some(Task::Publisher { .. })) =>
                {
                    w.oracle.counts.crc_caught += 1;
                    w.trace.event(w.now, 0, "crc-caught", conn, seq);
                }
                Err(e) => {
                    if matches!(e, chunkcast_protocol::DecodeError::Checksum { .. }) {
                        w.oracle.counts.crc_caught += 1;
                    }
                    w.trace.event(w.now, 0, "decode-error", conn, 0);
                    side.machine.handle_decode_error(now_i, e);
                    break;
                }
            }
            if side.machine.is_closed() {
                break;
            }
        }
        if side.closed.is_none() {
            match side.tcp.state() {
                tcp::State::Reset | tcp::State::GaveUp => side.machine.handle_link_lost(now_i),
                _ if side.tcp.at_eof() => side.machine.handle_eof(now_i),
                _ => {}
            }
            if side.machine.poll_timeout().is_some_and(|t| t <= now_i) {
                side.machine.handle_timeout(now_i);
            }
        }
        for c in chunks {
            self.relay(w, conn, c, dirty);
        }
        self.events(w, conn, dirty);
        self.send_tasks(w, conn);
        self.flush(w, conn, dirty);
    }

    /// Acts on the machine's events.
    fn events(&mut self, w: &mut World, conn: u64, dirty: &mut BTreeSet<u64>) {
        loop {
            let Some(side) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(event) = side.machine.poll_event() else {
                return;
            };
            match event {
                ServerEvent::Connected(est) => {
                    side.caps = est.caps;
                    w.trace.event(w.now, 0, "connected", conn, est.session_id);
                }
                ServerEvent::List { request, prefix } => {
                    let entries = w
                        .library
                        .files()
                        .iter()
                        .filter(|f| f.name.starts_with(&prefix))
                        .map(|f| Entry {
                            path: f.name.clone(),
                            codec: Codec::Bytes,
                            size: Some(f.data.len() as u64),
                            duration_us: None,
                            viewers: 0,
                            note: None,
                        })
                        .collect();
                    side.machine.send_catalog(request, entries);
                }
                ServerEvent::Open(open) => self.open_file(w, conn, open),
                ServerEvent::Publish {
                    request,
                    stream,
                    channel,
                    codec,
                } => self.publish(w, conn, request, stream, &channel, codec, dirty),
                ServerEvent::Subscribe {
                    request,
                    stream,
                    channel,
                } => self.subscribe(w, conn, request, stream, &channel),
                ServerEvent::Cancel { stream, .. } => {
                    self.end_task(conn, stream);
                }
                ServerEvent::Closed(ending) => {
                    w.trace.event(w.now, 0, "closed", conn, ending as u64);
                    side.closed = Some(ending);
                    let streams: Vec<StreamId> = side
                        .tasks
                        .iter()
                        .filter(|(_, t)| ending != Ending::PeerLeft || !matches!(t, Task::File(_)))
                        .map(|(s, _)| *s)
                        .collect();
                    for s in streams {
                        self.end_task(conn, s);
                    }
                }
                _ => {}
            }
        }
    }

    fn open_file(&mut self, w: &mut World, conn: u64, open: Open) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some((file, f)) = w.library.find(&open.path) else {
            side.machine.refuse(
                open.request,
                ErrorCode::NotFound,
                format!("{}: not found", open.path),
            );
            return;
        };
        let mut cfg = ChunkConfig::new(open.stream);
        cfg.chunk_size = match open.chunk_size as usize {
            0 => DEFAULT_CHUNK_SIZE,
            n => n.min(1 << 20),
        };
        cfg.raw = open.raw;
        // A resumed download gets the rest of the file as plain bytes, placed at their file
        // offsets, with the whole file's digest announced (as `server/src/stream.rs` does).
        let base = match open.resume {
            Resume::Offset(x) if x > f.data.len() as u64 => {
                let len = f.data.len();
                side.machine.refuse(
                    open.request,
                    ErrorCode::BadRequest,
                    format!("resume offset {x} is past the end ({len} bytes)"),
                );
                return;
            }
            Resume::Offset(x) => {
                cfg.raw = true;
                x as usize
            }
            _ => 0,
        };
        let data = f.data.slice(base..);
        let packetizer = match Packetizer::open_any(
            cfg.clone(),
            &mut Cursor::new(&data[..]),
            data.len() as u64,
            &open.path,
        ) {
            Ok(p) => p,
            Err(e) => {
                side.machine.refuse(
                    open.request,
                    ErrorCode::Internal,
                    format!("{}: {e}", open.path),
                );
                return;
            }
        };
        let at_end = base == 0
            && side.caps.contains(Caps::DIGEST_AT_END)
            && !self.digests_known.contains(&file);
        let digest = if at_end {
            FileDigest::AtEnd
        } else {
            FileDigest::Known(f.digest)
        };
        let opened = Opened {
            request: open.request,
            stream: open.stream,
            codec: packetizer.codec(),
            total_len: Some(f.data.len() as u64),
            chunk_count: packetizer.chunk_count(),
            duration_us: packetizer.duration_us(),
            digest,
            start_seq: 0,
            start_offset: base as u64,
            chunk_size: cfg.chunk_size as u32,
            note: packetizer
                .warning()
                .map(chunkcast_protocol::wire::clip_note),
        };
        encode(&Frame::Opened(opened), &mut side.out);
        if self.config.forget_streams {
            return;
        }
        let compressor = (open.compress
            && side.caps.contains(Caps::LZ4)
            && packetizer.codec().worth_compressing())
        .then(Compressor::new);
        w.trace.event(w.now, 0, "open", conn, file as u64);
        side.tasks.insert(
            open.stream,
            Task::File(Box::new(FileStream {
                stream: open.stream,
                file,
                packetizer,
                data,
                fed: 0,
                base: base as u64,
                ready: VecDeque::new(),
                realtime: open.mode == Mode::Realtime,
                pacer: Pacer::new(),
                compressor,
                digest_at_end: at_end.then_some(f.digest),
                finished: false,
            })),
        );
    }

    /// The hub behind a requested channel: `live/NAME` as is; `call/ROOM/TRACK` to the
    /// caller's own leg when publishing, the other seat's when subscribing.
    fn hub_name(&mut self, channel: &str, session: u64, publish: bool) -> Result<String, String> {
        let parts: Vec<&str> = channel.split('/').collect();
        match parts.as_slice() {
            ["live", name] if !name.is_empty() => Ok(channel.to_owned()),
            ["call", room, track] => {
                let seats = self.rooms.entry((*room).to_owned()).or_default();
                let mine = match seats.iter().position(|s| *s == Some(session)) {
                    Some(i) => i,
                    None => {
                        let free = seats.iter().position(Option::is_none).ok_or("room full")?;
                        seats[free] = Some(session);
                        free
                    }
                };
                let leg = if publish { mine } else { 1 - mine };
                Ok(format!("call/{room}/{track}#{leg}"))
            }
            _ => Err(format!("bad channel {channel:?}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        w: &mut World,
        conn: u64,
        request: u32,
        stream: StreamId,
        channel: &str,
        codec: Codec,
        dirty: &mut BTreeSet<u64>,
    ) {
        let session = self.session(conn);
        let hub_name = match self.hub_name(channel, session, true) {
            Ok(h) => h,
            Err(e) => {
                if let Some(side) = self.conns.get_mut(&conn) {
                    side.machine.refuse(request, ErrorCode::BadRequest, e);
                }
                return;
            }
        };
        let fanout = self.config.fanout;
        let hub = self.hubs.entry(hub_name.clone()).or_insert_with(|| Hub {
            channel: Channel::new(fanout),
            publisher: None,
            viewers: Vec::new(),
        });
        // A new publisher takes the channel over; the old one is told.
        let evicted = hub.publisher.replace((conn, stream));
        hub.channel.begin(codec);
        let mut waiting = Vec::new();
        for v in &mut hub.viewers {
            v.queue.set_codec(codec);
            v.queue.skip_to_keyframe();
            if let Some(r) = v.request.take() {
                waiting.push((v.conn, v.stream, r));
            }
        }
        let start_seq = hub.channel.next_seq();
        if let Some((old, s)) = evicted {
            if let Some(side) = self.conns.get_mut(&old) {
                side.tasks.remove(&s);
                side.machine.stream_ended(s);
                encode(
                    &Frame::Close {
                        stream: s,
                        code: ErrorCode::Busy,
                        message: "another publisher took the channel over".into(),
                    },
                    &mut side.out,
                );
                dirty.insert(old);
            }
        }
        for (vc, vs, r) in waiting {
            if let Some(side) = self.conns.get_mut(&vc) {
                encode(
                    &Frame::Opened(live_opened(r, vs, codec, start_seq)),
                    &mut side.out,
                );
                dirty.insert(vc);
            }
        }
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        encode(
            &Frame::Opened(live_opened(request, stream, codec, start_seq)),
            &mut side.out,
        );
        w.trace
            .event(w.now, 0, "publish", conn, u64::from(stream.0));
        side.tasks.insert(
            stream,
            Task::Publisher {
                hub: hub_name,
                file: None,
            },
        );
    }

    fn subscribe(
        &mut self,
        w: &mut World,
        conn: u64,
        request: u32,
        stream: StreamId,
        channel: &str,
    ) {
        let session = self.session(conn);
        let hub_name = match self.hub_name(channel, session, false) {
            Ok(h) => h,
            Err(e) => {
                if let Some(side) = self.conns.get_mut(&conn) {
                    side.machine.refuse(request, ErrorCode::BadRequest, e);
                }
                return;
            }
        };
        let fanout = self.config.fanout;
        let hub = self.hubs.entry(hub_name.clone()).or_insert_with(|| Hub {
            channel: Channel::new(fanout),
            publisher: None,
            viewers: Vec::new(),
        });
        let codec = hub.channel.codec();
        let mut queue = ViewerQueue::new(fanout, codec, stream);
        let backlog = hub.channel.backlog(stream);
        let start_seq = backlog
            .first()
            .map_or(hub.channel.next_seq(), |f| f.chunk.seq);
        if backlog.is_empty() {
            queue.skip_to_keyframe();
        }
        for f in &backlog {
            let _ = queue.push(f);
        }
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let pending = match codec {
            Some(codec) => {
                encode(
                    &Frame::Opened(live_opened(request, stream, codec, start_seq)),
                    &mut side.out,
                );
                None
            }
            None => Some(request),
        };
        w.trace
            .event(w.now, 0, "subscribe", conn, u64::from(stream.0));
        w.oracle.subscribed(conn, stream.0, &hub_name);
        hub.viewers.push(Viewer {
            conn,
            stream,
            queue,
            request: pending,
        });
        side.tasks.insert(stream, Task::Viewer(hub_name));
    }

    fn session(&self, conn: u64) -> u64 {
        self.conns
            .get(&conn)
            .and_then(|s| s.machine.established())
            .map_or(0, |e| e.session_id)
    }

    /// A publisher's chunk: into the channel, and to every viewer's queue.
    fn relay(&mut self, w: &mut World, conn: u64, chunk: Chunk, dirty: &mut BTreeSet<u64>) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(Task::Publisher { hub, file }) = side.tasks.get_mut(&chunk.stream) else {
            return;
        };
        let Ok(chunk) = compress::decompress(chunk, 1 << 20) else {
            side.machine
                .close(w.clock.now(), ErrorCode::BadMedia, "bad lz4 block");
            return;
        };
        // The publisher's file is the one its chunks' bytes come from: named by the client in
        // its pts-free offset space, known to the simulation by the stream's first chunk.
        let source = *file.get_or_insert_with(|| w.publisher_file(side.host));
        let Some(h) = self.hubs.get_mut(hub.as_str()) else {
            return;
        };
        let len = w.library.file(source).data.len().max(1) as u64;
        let orig_offset = chunk.offset % len;
        let fanned = h.channel.ingest(chunk, StreamId(0));
        w.oracle
            .published(hub, fanned.chunk.seq, source, orig_offset);
        let mut lagged = Vec::new();
        for v in &mut h.viewers {
            if v.request.is_some() {
                continue;
            }
            match v.queue.push(&fanned) {
                Ok(()) => {}
                Err(_) => lagged.push((v.conn, v.stream)),
            }
            w.oracle.viewer_drops(v.conn, v.stream.0, v.queue.drops());
            dirty.insert(v.conn);
        }
        for (vc, vs) in lagged {
            w.oracle.counts.lagged += 1;
            w.trace.event(w.now, 0, "lagged", vc, u64::from(vs.0));
            self.end_task(vc, vs);
            if let Some(side) = self.conns.get_mut(&vc) {
                side.machine.stream_ended(vs);
                encode(
                    &Frame::Close {
                        stream: vs,
                        code: ErrorCode::Lagged,
                        message: "viewer fell behind".into(),
                    },
                    &mut side.out,
                );
            }
        }
    }

    /// Removes a stream's task (and a viewer's queue, a publisher's claim on its hub).
    fn end_task(&mut self, conn: u64, stream: StreamId) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        match side.tasks.remove(&stream) {
            Some(Task::Viewer(hub)) => {
                if let Some(h) = self.hubs.get_mut(&hub) {
                    h.viewers
                        .retain(|v| !(v.conn == conn && v.stream == stream));
                }
            }
            Some(Task::Publisher { hub, .. }) => {
                if let Some(h) = self.hubs.get_mut(&hub) {
                    if h.publisher == Some((conn, stream)) {
                        h.publisher = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// Moves chunks from the file streams and viewer queues into the transport while it has
    /// room.
    fn send_tasks(&mut self, w: &mut World, conn: u64) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        let streams: Vec<StreamId> = side.tasks.keys().copied().collect();
        for s in streams {
            let Some(side) = self.conns.get_mut(&conn) else {
                return;
            };
            match side.tasks.get_mut(&s) {
                Some(Task::File(f)) => {
                    let done = f.send(w, &mut side.tcp, &mut side.out);
                    if done {
                        let file = f.file;
                        side.tasks.remove(&s);
                        if side.closed.is_none() {
                            side.machine.stream_ended(s);
                        }
                        self.digests_known.insert(file);
                    }
                }
                Some(Task::Viewer(hub)) => {
                    let Some(h) = self.hubs.get_mut(hub.as_str()) else {
                        continue;
                    };
                    let Some(v) = h
                        .viewers
                        .iter_mut()
                        .find(|v| v.conn == conn && v.stream == s)
                    else {
                        continue;
                    };
                    while side.tcp.space() > 0 {
                        let Some(c) = v.queue.pop() else { break };
                        w.oracle.sent(conn, s.0, c.seq, v.queue.drops());
                        self.viewer_chunks += 1;
                        if let Some(n) = self.config.skip_viewer_chunks {
                            if self.viewer_chunks % n == 0 && !c.has(ChunkFlags::INIT) {
                                continue;
                            }
                        }
                        write_chunk(&c, &mut side.tcp);
                    }
                }
                _ => {}
            }
        }
    }

    /// Writes the machine's control frames and the app's, sends segments, and retires a
    /// finished connection.
    fn flush(&mut self, w: &mut World, conn: u64, dirty: &mut BTreeSet<u64>) {
        let Some(side) = self.conns.get_mut(&conn) else {
            return;
        };
        side.machine.poll_transmit(&mut side.out);
        if !side.out.is_empty() {
            side.tcp.write(&side.out);
            side.out.clear();
        }
        if side.closed.is_some() && side.tasks.is_empty() && !side.fin_sent {
            side.fin_sent = true;
            side.tcp.close();
        }
        let mut segs = Vec::new();
        side.tcp.poll_transmit(w.now, &mut segs);
        let host = side.host;
        for s in segs {
            w.send(0, host, s);
        }
        if side.tcp.is_done() {
            if side.closed.is_none() {
                side.machine.handle_link_lost(w.clock.now());
                self.events(w, conn, dirty);
            }
            let streams: Vec<StreamId> = self
                .conns
                .get(&conn)
                .map(|s| s.tasks.keys().copied().collect())
                .unwrap_or_default();
            for s in streams {
                self.end_task(conn, s);
            }
            let session = self.session(conn);
            for seats in self.rooms.values_mut() {
                for s in seats.iter_mut() {
                    if *s == Some(session) {
                        *s = None;
                    }
                }
            }
            self.conns.remove(&conn);
            self.gone.insert(conn);
            w.trace.event(w.now, 0, "gone", conn, 0);
        }
    }
}

impl FileStream {
    /// When the next paced chunk is due, if the stream waits for its time (not for room in
    /// the transport: an ACK wakes the connection then).
    fn due(&self, w: &World) -> Option<Duration> {
        if !self.realtime {
            return None;
        }
        let c = self.ready.front()?;
        let mut pacer = self.pacer.clone();
        let due = w.clock.since_start(pacer.due(w.clock.now(), c.pts_us));
        (c.duration_us > 0 && due > w.now).then_some(due)
    }

    /// Sends what the transport and the pace allow; true once the stream is over.
    fn send(&mut self, w: &mut World, tcp: &mut Tcp, out: &mut BytesMut) -> bool {
        loop {
            if self.ready.is_empty() && !self.finished {
                let end = (self.fed + FEED).min(self.data.len());
                let mut chunks = Vec::new();
                let res = if self.fed < end {
                    let piece = self.data.slice(self.fed..end);
                    self.fed = end;
                    self.packetizer.push(piece, &mut chunks)
                } else {
                    self.finished = true;
                    self.packetizer.finish(&mut chunks)
                };
                if let Err(e) = res {
                    encode(
                        &Frame::Close {
                            stream: self.stream,
                            code: ErrorCode::BadMedia,
                            message: format!("stream failed: {e}"),
                        },
                        out,
                    );
                    return true;
                }
                let base = self.base;
                self.ready.extend(chunks.into_iter().map(|c| Chunk {
                    offset: c.offset + base,
                    ..c
                }));
                continue;
            }
            let Some(c) = self.ready.front() else {
                break;
            };
            if self.realtime && c.duration_us > 0 {
                let due = self.pacer.due(w.clock.now(), c.pts_us);
                if due > w.clock.now() {
                    return false;
                }
            }
            if tcp.space() == 0 {
                return false;
            }
            let Some(c) = self.ready.pop_front() else {
                break;
            };
            let c = match &mut self.compressor {
                Some(z) => z.apply(c),
                None => c,
            };
            // Control frames (the OPENED) go first, in order with the chunks.
            if !out.is_empty() {
                tcp.write(out);
                out.clear();
            }
            write_chunk(&c, tcp);
        }
        if let Some(digest) = self.digest_at_end {
            encode(
                &Frame::Digest {
                    stream: self.stream,
                    digest,
                },
                out,
            );
        }
        true
    }
}

fn write_chunk(c: &Chunk, tcp: &mut Tcp) {
    let mut head = BytesMut::with_capacity(64);
    encode_chunk_head(c, &mut head);
    tcp.write(&head);
    tcp.write(&c.payload);
}

fn live_opened(request: u32, stream: StreamId, codec: Codec, start_seq: u64) -> Opened {
    Opened {
        request,
        stream,
        codec,
        total_len: None,
        chunk_count: None,
        duration_us: None,
        digest: FileDigest::None,
        start_seq,
        start_offset: 0,
        chunk_size: 0,
        note: None,
    }
}

fn min(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The server's defaults for the simulation: the machine's own, with a shorter idle timeout
/// so that a minute of simulated time sees silent peers dropped.
pub fn default_config(epoch: Instant) -> Config {
    Config {
        // Every field named: the machine's `Default` reads the real clock for its epoch.
        conn: ServerConnConfig {
            handshake: ServerConfig::default(),
            epoch,
            idle_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(2),
            max_streams: 16,
            max_requests_per_sec: 50,
            // Small pages, so that every listing of the 8-file library takes three.
            catalog_page: 3,
            relay_id: None,
            max_relay_hops: chunkcast_protocol::conn::server::DEFAULT_MAX_RELAY_HOPS,
        },
        fanout: FanoutConfig {
            viewer_queue_bytes: 256 << 10,
            max_lag_events: 8,
            gop_cache_bytes: 256 << 10,
            init_cache_bytes: 64 << 10,
        },
        tcp: tcp::Config::default(),
        forget_streams: false,
        skip_viewer_chunks: None,
    }
}
