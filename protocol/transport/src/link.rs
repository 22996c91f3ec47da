//! A connection after accept/connect, the same for TCP, TLS and QUIC: control frames in and
//! out, media streams multiplexed with backpressure.
//!
//! - TCP/TLS: one byte stream. A writer task sends control frames first, then chunks taken
//!   round-robin, one per stream per turn, from each media stream's bounded queue, so that one
//!   busy stream cannot starve another; a batch (up to [`WRITE_BATCH`] bytes) goes out as one
//!   vectored write. A reader task decodes frames and routes chunks to their stream's bounded
//!   queue: a slow consumer blocks the reader, and TCP's window pushes back on the sender.
//! - QUIC: control frames on one bidirectional stream; each media stream on its own
//!   unidirectional stream, so that QUIC's per-stream flow control gives the backpressure and
//!   audio never waits behind video. A call's intra-only video ([`unit_streams_for`]) goes
//!   further: each unit (frame) on its own unidirectional stream ([`LinkTx::open_unit_media`]),
//!   reset when it cannot arrive in time ([`UnitGate`]), so that a lost packet holds back its
//!   own frame and no later one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::io::{BoxedIo, FileRegion, Half, Io, Outbox};
use chunkcast_protocol::error::DecodeError;
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags, StreamId};
use chunkcast_protocol::wire::{Decoder, Frame, Limits};
use chunkcast_protocol::{Codec, VisualFormat};

/// Bytes gathered into one vectored write. 1 MiB: on the reference machine loopback TCP runs
/// 4× faster with 1 MiB writes than with 64 KiB ones (`shared/machine-limits.md`).
pub const WRITE_BATCH: usize = 1 << 20;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 512 << 10;
/// Read buffers a connection keeps for reuse (8 MiB at most): what a fast download holds in
/// flight between the socket and the consumer, so that it allocates nothing in steady state.
const READ_POOL: usize = 16;
/// Chunks queued per media stream on the TCP writer: with 64 KiB chunks, 1 MiB per stream.
pub const STREAM_QUEUE: usize = 16;
/// Control frames queued towards the writer.
const CONTROL_QUEUE: usize = 64;

/// Why a link failed.
///
/// Each message includes its cause, so the cause is not also exposed as `source()` (an error
/// chain printer would print it twice).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer's bytes did not decode.
    #[error("peer sent malformed data: {0}")]
    Decode(DecodeError),
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// The QUIC connection failed or was closed.
    #[error("QUIC connection: {0}")]
    Quic(quinn::ConnectionError),
    /// Writing a QUIC stream failed.
    #[error("QUIC stream: {0}")]
    QuicWrite(quinn::WriteError),
    /// The link is closed.
    #[error("connection closed")]
    Closed,
}

impl From<DecodeError> for LinkError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<quinn::ConnectionError> for LinkError {
    fn from(e: quinn::ConnectionError) -> Self {
        Self::Quic(e)
    }
}

impl From<quinn::WriteError> for LinkError {
    fn from(e: quinn::WriteError) -> Self {
        Self::QuicWrite(e)
    }
}

/// What arrives on a routed media stream: chunks, or the corruption of one.
pub type ChunkResult = Result<Chunk, DecodeError>;

/// What a TCP media stream's queue carries.
enum StreamItem {
    Chunk(Chunk),
    /// A chunk whose payload is a file's bytes, sent from the page cache
    /// ([`MediaTx::send_file`]).
    File(Chunk, FileRegion),
    /// Answered once every chunk queued before it has been written to the socket, so that a
    /// control frame sent afterwards (`GOODBYE`) cannot overtake them.
    Flush(oneshot::Sender<()>),
}

enum Outgoing {
    Frame(Frame),
    Raw(Bytes),
    Stream(mpsc::Receiver<StreamItem>),
}

/// Where each routed stream's chunks go, and how many chunks went there since the driver
/// last asked (chunks bypass the control path, but they prove the peer alive).
#[derive(Default)]
struct RouteMap {
    map: HashMap<StreamId, mpsc::Sender<ChunkResult>>,
    routed: u64,
    /// The last [`ENDED_REMEMBERED`] streams whose route ended: a chunk of theirs that comes
    /// later (a unit on its own QUIC stream, overtaken by the stream's end or sent before a
    /// cancel took effect) is dropped, not taken for a chunk of a stream nobody opened.
    ended: VecDeque<StreamId>,
}

/// Ended streams a link remembers (see `RouteMap::ended`): a call's video units in flight at
/// its end are a handful; 64 also covers a connection that ends many streams at once.
pub const ENDED_REMEMBERED: usize = 64;

impl RouteMap {
    fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, stream: StreamId, tx: mpsc::Sender<ChunkResult>) {
        self.ended.retain(|s| *s != stream);
        self.map.insert(stream, tx);
    }

    fn remove(&mut self, stream: &StreamId) {
        if self.map.remove(stream).is_some() {
            if self.ended.len() >= ENDED_REMEMBERED {
                self.ended.pop_front();
            }
            self.ended.push_back(*stream);
        }
    }

    /// Whether `stream`'s route ended lately (its late chunks are dropped).
    fn ended(&self, stream: &StreamId) -> bool {
        self.ended.contains(stream)
    }

    fn get(&self, stream: &StreamId) -> Option<&mpsc::Sender<ChunkResult>> {
        self.map.get(stream)
    }
}

/// The sending half of a link; cheap to clone, one per task that sends.
#[derive(Clone)]
pub struct LinkTx {
    out: mpsc::Sender<Outgoing>,
    routes: Arc<Mutex<RouteMap>>,
    quic: Option<quinn::Connection>,
    /// The byte stream underneath sends files from the page cache ([`Io::sends_files`]).
    sends_files: bool,
}

/// The receiving half: control frames (and chunks of streams nobody routed) in arrival order.
pub struct LinkRx {
    rx: mpsc::Receiver<Result<Frame, LinkError>>,
    routes: Arc<Mutex<RouteMap>>,
}

impl LinkRx {
    /// The next control frame; `None` once the peer closed cleanly.
    ///
    /// Cancel-safe: a frame is never lost if the future is dropped.
    pub async fn recv(&mut self) -> Option<Result<Frame, LinkError>> {
        self.rx.recv().await
    }

    /// How many chunks were routed to their streams since the last call. The connection
    /// machines count them as signs of life (`handle_data`): a peer whose pings wait behind
    /// chunks that a slow reader has not taken yet is busy, not silent.
    pub fn take_routed(&self) -> u64 {
        std::mem::take(&mut self.routes.lock().unwrap_or_else(|e| e.into_inner()).routed)
    }
}

/// Sends one media stream's chunks.
pub struct MediaTx(Media);

enum Media {
    /// Into the TCP writer's round-robin.
    Tcp(mpsc::Sender<StreamItem>),
    /// On a QUIC unidirectional stream, with a reused encoding buffer.
    Quic {
        send: quinn::SendStream,
        out: Box<Outbox>,
    },
    /// Each unit on its own QUIC unidirectional stream.
    Units(Box<Units>),
}

/// Whether a stream of `codec` may go one unit per QUIC stream ([`LinkTx::open_unit_media`]):
/// video whose every frame decodes alone (MJPEG, Y4M), so that a frame lost or reset costs
/// that frame only. Inter-coded video (H.264 in MP4 or fMP4) needs every frame in order, and
/// keeps one stream.
pub fn unit_streams_for(codec: &Codec) -> bool {
    matches!(codec, Codec::Video(v) if matches!(v.format, VisualFormat::Mjpeg | VisualFormat::Y4m))
}

/// How long past one round trip a unit's stream may wait, unsent or unacknowledged, before it
/// is reset: a call's one-way budget is ~150 ms, and a frame that is still being retransmitted
/// after this would arrive too late to show, while taking the path from the frames behind it.
pub const UNIT_DEADLINE: Duration = Duration::from_millis(100);

/// Unit streams open at once at most; a new unit is skipped beyond it. At 25 frames a second
/// and a deadline of 100 ms past the round trip a path keeps about six open; the peer allows
/// 64 unidirectional streams in all (`quic::MAX_UNI_STREAMS`).
pub const MAX_OPEN_UNITS: usize = 16;

/// Chunks of one unit queued towards its stream's task.
const UNIT_QUEUE: usize = 16;

/// What a unit-stream sender did, for stats and for the adaptation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCounts {
    /// Units given a stream of their own.
    pub sent: u64,
    /// Units skipped: the one before was still not all sent (never on the wire).
    pub skipped: u64,
    /// Units whose stream was reset: not delivered and acknowledged within their deadline.
    pub reset: u64,
    /// Units the peer acknowledged whole.
    pub delivered: u64,
}

/// What [`UnitGate::start`] decides for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Open a stream for it, numbered `id`, to reset if not acknowledged by `deadline`
    /// (`None`: never reset, for set-up and the end of the stream).
    Send {
        /// The unit's number, for [`UnitGate::written`] and the rest.
        id: u64,
        /// When its stream is reset if still not acknowledged.
        deadline: Option<Instant>,
    },
    /// Drop it: the path has not taken the unit before it yet.
    Skip,
}

#[derive(Debug, Clone, Copy)]
struct OpenUnit {
    id: u64,
    /// All its bytes were taken by the transport (they may still wait for acknowledgement).
    written: bool,
}

/// The per-unit streams' policy, sans IO (time is passed in): which unit gets a stream, which
/// is skipped, and when an open one is given up.
///
/// - A unit is skipped while the one before it has not all been taken by the transport: QUIC
///   is holding it back (its send window is full of unacknowledged bytes), so the path does
///   not carry the rate, and a second frame queued behind it would only be later still. The
///   share of skipped units is the adaptation's sign of it.
/// - A unit's stream is reset when it is not acknowledged by its deadline ([`UNIT_DEADLINE`]
///   past one round trip from its start): it would come too late to show, and what QUIC
///   still retransmits of it takes the path from the newer frames.
/// - Set-up (`INIT`) and the end of the stream are never skipped nor reset.
#[derive(Debug, Default)]
pub struct UnitGate {
    open: VecDeque<OpenUnit>,
    next_id: u64,
    counts: UnitCounts,
}

impl UnitGate {
    /// Nothing open.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was done so far.
    pub fn counts(&self) -> UnitCounts {
        self.counts
    }

    /// Units whose streams are open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Whether a unit that may be dropped would be skipped now.
    pub fn busy(&self) -> bool {
        self.open.len() >= MAX_OPEN_UNITS || self.open.back().is_some_and(|u| !u.written)
    }

    /// A unit is ready at `now` on a path with round trip `rtt`; `framing` for set-up and the
    /// end of the stream (always sent, never reset).
    pub fn start(&mut self, now: Instant, rtt: Duration, framing: bool) -> Verdict {
        if !framing && self.busy() {
            self.counts.skipped += 1;
            return Verdict::Skip;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.counts.sent += 1;
        self.open.push_back(OpenUnit { id, written: false });
        Verdict::Send {
            id,
            deadline: (!framing).then(|| now + rtt + UNIT_DEADLINE),
        }
    }

    /// Unit `id`'s bytes were all taken by the transport.
    pub fn written(&mut self, id: u64) {
        if let Some(u) = self.open.iter_mut().find(|u| u.id == id) {
            u.written = true;
        }
    }

    /// Unit `id` was acknowledged whole.
    pub fn delivered(&mut self, id: u64) {
        if self.close(id) {
            self.counts.delivered += 1;
        }
    }

    /// Unit `id`'s stream was reset at its deadline.
    pub fn reset(&mut self, id: u64) {
        if self.close(id) {
            self.counts.reset += 1;
        }
    }

    /// Unit `id`'s stream failed otherwise (the peer stopped it, the connection went).
    pub fn failed(&mut self, id: u64) {
        self.close(id);
    }

    fn close(&mut self, id: u64) -> bool {
        let before = self.open.len();
        self.open.retain(|u| u.id != id);
        self.open.len() < before
    }
}

/// A [`Media::Units`] sender: the connection, the policy, and the unit being sent.
struct Units {
    conn: quinn::Connection,
    gate: Arc<Mutex<UnitGate>>,
    /// The open unit's feed to its stream's task.
    feed: Option<mpsc::Sender<Chunk>>,
    /// A unit is under way (its first chunk came, its last not yet).
    in_unit: bool,
    tasks: tokio::task::JoinSet<()>,
}

fn gate(g: &Mutex<UnitGate>) -> std::sync::MutexGuard<'_, UnitGate> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

impl Units {
    async fn send(&mut self, chunk: Chunk) -> Result<(), LinkError> {
        // Tasks that ended are reaped here, so the set stays as small as what is open.
        while self.tasks.try_join_next().is_some() {}
        let framing = chunk.has(ChunkFlags::INIT) || chunk.has(ChunkFlags::END_OF_STREAM);
        let ends = framing || chunk.has(ChunkFlags::END_OF_UNIT);
        if chunk.has(ChunkFlags::END_OF_STREAM) {
            // The end goes after every unit before it has arrived or been given up, so that
            // it does not overtake them (the receiver drops what comes after the end).
            self.feed = None;
            while self.tasks.join_next().await.is_some() {}
        }
        if !self.in_unit || framing {
            // A skipped unit leaves no feed: its other chunks are dropped too.
            self.feed = None;
            let verdict = gate(&self.gate).start(Instant::now(), self.conn.rtt(), framing);
            match verdict {
                Verdict::Skip => {}
                Verdict::Send { id, deadline } => {
                    let send = self.conn.open_uni().await?;
                    let (tx, rx) = mpsc::channel(UNIT_QUEUE);
                    self.tasks
                        .spawn(unit_stream(send, rx, self.gate.clone(), id, deadline));
                    self.feed = Some(tx);
                }
            }
        }
        self.in_unit = !ends;
        if let Some(feed) = &self.feed {
            // A stream already given up (reset) takes nothing more of its unit.
            if feed.send(chunk).await.is_err() {
                self.feed = None;
            }
        }
        if ends {
            // Its task learns that the unit is whole, finishes the stream and waits for it.
            self.feed = None;
        }
        Ok(())
    }

    async fn finish(mut self) {
        self.feed = None;
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Sends one unit on `send`, within `deadline`: its chunks as they come, then the stream's
/// end, then waits for the peer's acknowledgement of all of it; resets the stream if the
/// deadline comes first.
async fn unit_stream(
    mut send: quinn::SendStream,
    mut feed: mpsc::Receiver<Chunk>,
    units: Arc<Mutex<UnitGate>>,
    id: u64,
    deadline: Option<Instant>,
) {
    let mut out = Outbox::new();
    let work = async {
        while let Some(chunk) = feed.recv().await {
            out.push(&Frame::Chunk(chunk));
            out.write_to_quic(&mut send).await.map_err(drop)?;
        }
        gate(&units).written(id);
        send.finish().map_err(drop)?;
        match send.stopped().await {
            // Finished and acknowledged; a stop code is the peer refusing it.
            Ok(None) => Ok(()),
            _ => Err(()),
        }
    };
    let outcome = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), work).await.ok(),
        None => Some(work.await),
    };
    match outcome {
        Some(Ok(())) => gate(&units).delivered(id),
        Some(Err(())) => gate(&units).failed(id),
        None => {
            let _ = send.reset(quinn::VarInt::from_u32(0));
            gate(&units).reset(id);
        }
    }
}

impl MediaTx {
    /// Sends a chunk, waiting while the peer or the link is behind (backpressure).
    ///
    /// Not cancel-safe on QUIC (a chunk may be half written).
    pub async fn send(&mut self, chunk: Chunk) -> Result<(), LinkError> {
        match &mut self.0 {
            Media::Tcp(tx) => tx
                .send(StreamItem::Chunk(chunk))
                .await
                .map_err(|_| LinkError::Closed),
            Media::Quic { send, out } => {
                out.push(&Frame::Chunk(chunk));
                out.write_to_quic(send).await?;
                Ok(())
            }
            Media::Units(u) => u.send(chunk).await,
        }
    }

    /// Sends a chunk whose payload is `region` of a file, which the kernel sends from the page
    /// cache: `chunk` has no payload, `raw_len == region.len`, and [`ChunkFlags::HEADER_CRC`]
    /// (its CRC does not cover the bytes). Only on a link whose
    /// [`LinkTx::sends_files`] says so; anywhere else the bytes are read and sent as a chunk.
    pub async fn send_file(&mut self, chunk: Chunk, region: FileRegion) -> Result<(), LinkError> {
        match &mut self.0 {
            Media::Tcp(tx) => tx
                .send(StreamItem::File(chunk, region))
                .await
                .map_err(|_| LinkError::Closed),
            _ => {
                let chunk = Chunk {
                    payload: Bytes::from(region.read()?),
                    ..chunk
                };
                self.send(chunk).await
            }
        }
    }

    /// Whether a unit starting now would be skipped ([`UnitGate::busy`]); always `false` but
    /// for a unit-stream sender. A sender that numbers its units asks before numbering one,
    /// so that a skipped unit leaves no hole that a receiver would count as lost.
    pub fn busy(&self) -> bool {
        match &self.0 {
            Media::Units(u) => gate(&u.gate).busy(),
            _ => false,
        }
    }

    /// A unit-stream sender's counts (`None` for the others).
    pub fn unit_counts(&self) -> Option<UnitCounts> {
        match &self.0 {
            Media::Units(u) => Some(gate(&u.gate).counts()),
            _ => None,
        }
    }

    /// Ends the stream after everything sent so far.
    pub async fn finish(self) -> Result<(), LinkError> {
        match self.0 {
            Media::Tcp(tx) => {
                // On TCP control frames go ahead of queued media: wait until the stream's
                // chunks are on the wire before the caller may say goodbye.
                let (done, written) = oneshot::channel();
                tx.send(StreamItem::Flush(done))
                    .await
                    .map_err(|_| LinkError::Closed)?;
                written.await.map_err(|_| LinkError::Closed)
            }
            Media::Quic { mut send, .. } => {
                send.finish().map_err(|_| LinkError::Closed)?;
                // Wait until the peer has it all, so that closing the connection right after
                // cannot cut the stream's tail.
                let _ = send.stopped().await;
                Ok(())
            }
            Media::Units(u) => {
                u.finish().await;
                Ok(())
            }
        }
    }

    /// Abandons the stream (the peer sees it end early).
    pub fn abort(self) {
        match self.0 {
            Media::Quic { mut send, .. } => {
                let _ = send.reset(quinn::VarInt::from_u32(1));
            }
            // Dropping the tasks ends their streams where they are: the peer decodes whole
            // chunks only, so at most a unit is missing.
            Media::Units(u) => drop(u),
            Media::Tcp(_) => {}
        }
    }
}

impl LinkTx {
    /// Sends a control frame (queued behind earlier control frames, ahead of media).
    pub async fn send(&self, frame: Frame) -> Result<(), LinkError> {
        self.out
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// Sends bytes that already hold encoded frames (handshake output).
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), LinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.out
            .send(Outgoing::Raw(bytes))
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// Routes incoming chunks of `stream` to the returned receiver (bounded by `capacity`
    /// chunks). The route ends after the stream's `END_OF_STREAM` chunk.
    pub fn route(&self, stream: StreamId, capacity: usize) -> mpsc::Receiver<ChunkResult> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream, tx);
        rx
    }

    /// Stops routing `stream`; its chunks then arrive on [`LinkRx`] (and are usually dropped).
    pub fn unroute(&self, stream: StreamId) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&stream);
    }

    /// Starts sending a media stream.
    pub async fn open_media(&self) -> Result<MediaTx, LinkError> {
        match &self.quic {
            Some(conn) => {
                let send = conn.open_uni().await?;
                Ok(MediaTx(Media::Quic {
                    send,
                    out: Box::default(),
                }))
            }
            None => {
                let (tx, rx) = mpsc::channel::<StreamItem>(STREAM_QUEUE);
                self.out
                    .send(Outgoing::Stream(rx))
                    .await
                    .map_err(|_| LinkError::Closed)?;
                Ok(MediaTx(Media::Tcp(tx)))
            }
        }
    }

    /// Starts sending a media stream one unit per QUIC stream ([`UnitGate`]'s policy), for a
    /// stream whose units decode alone ([`unit_streams_for`]); `None` on TCP, where the caller
    /// uses [`LinkTx::open_media`].
    pub fn open_unit_media(&self) -> Option<MediaTx> {
        let conn = self.quic.clone()?;
        Some(MediaTx(Media::Units(Box::new(Units {
            conn,
            gate: Arc::new(Mutex::new(UnitGate::new())),
            feed: None,
            in_unit: false,
            tasks: tokio::task::JoinSet::new(),
        }))))
    }

    /// Sends `chunk` as one QUIC datagram (the `DATAGRAMS` format of `docs/PROTOCOL.md`: the
    /// `CHUNK` frame without its length prefix): unreliable, unordered, never waiting behind
    /// anything. `Ok(false)` when it cannot go that way (TCP, a peer without datagrams, or a
    /// chunk larger than the path's datagrams): the caller sends it on its stream instead.
    pub fn send_datagram(&self, chunk: &Chunk) -> Result<bool, LinkError> {
        let Some(conn) = &self.quic else {
            return Ok(false);
        };
        // The type byte, the chunk header and the payload: the frame less its length prefix.
        let len = chunkcast_protocol::wire::CHUNK_OVERHEAD - 4 + chunk.payload.len();
        if conn.max_datagram_size().is_none_or(|max| len > max) {
            return Ok(false);
        }
        let mut buf = BytesMut::with_capacity(len + 4);
        chunkcast_protocol::wire::encode_chunk_head(chunk, &mut buf);
        buf.extend_from_slice(&chunk.payload);
        let body = buf.freeze().slice(4..);
        match conn.send_datagram(body) {
            Ok(()) => Ok(true),
            Err(quinn::SendDatagramError::ConnectionLost(e)) => Err(LinkError::Quic(e)),
            // Too large after all, or disabled by the peer: the stream takes it.
            Err(_) => Ok(false),
        }
    }

    /// The QUIC connection underneath, if any.
    pub fn quic(&self) -> Option<&quinn::Connection> {
        self.quic.as_ref()
    }

    /// Whether [`MediaTx::send_file`] sends from the page cache on this link (plain TCP on
    /// Linux), so that a sender need not read what it sends.
    pub fn sends_files(&self) -> bool {
        self.sends_files
    }
}

/// Runs a link over a TCP or TLS byte stream. `leftover` holds bytes already read from it.
pub fn tcp(io: BoxedIo, limits: Limits, leftover: BytesMut) -> (LinkTx, LinkRx) {
    let sends_files = io.sends_files();
    let (rd, wr) = super::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(CONTROL_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(CONTROL_QUEUE);
    let routes = Arc::new(Mutex::new(RouteMap::new()));
    tokio::spawn(tcp_writer(wr, out_rx));
    tokio::spawn(read_loop(
        rd,
        leftover,
        limits,
        routes.clone(),
        in_tx,
        Scope::Connection,
    ));
    (
        LinkTx {
            out: out_tx,
            routes: routes.clone(),
            quic: None,
            sends_files,
        },
        LinkRx { rx: in_rx, routes },
    )
}

/// Runs a link over a QUIC connection whose control stream is `(send, recv)`.
pub fn quic(
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    limits: Limits,
) -> (LinkTx, LinkRx) {
    let (out_tx, out_rx) = mpsc::channel(CONTROL_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(CONTROL_QUEUE);
    let routes = Arc::new(Mutex::new(RouteMap::new()));
    tokio::spawn(quic_control_writer(send, out_rx));
    let control = read_loop(
        recv,
        BytesMut::new(),
        limits,
        routes.clone(),
        in_tx.clone(),
        Scope::Connection,
    );
    tokio::spawn(control);
    tokio::spawn(accept_media(conn.clone(), limits, routes.clone(), in_tx));
    tokio::spawn(read_datagrams(conn.clone(), limits, routes.clone()));
    (
        LinkTx {
            out: out_tx,
            routes: routes.clone(),
            quic: Some(conn),
            sends_files: false,
        },
        LinkRx { rx: in_rx, routes },
    )
}

async fn tcp_writer(mut wr: Half, mut out_rx: mpsc::Receiver<Outgoing>) {
    let mut streams: Vec<mpsc::Receiver<StreamItem>> = Vec::new();
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    let mut next = 0usize;
    let mut control_open = true;
    let mut batch = Outbox::new();
    loop {
        let progressed = std::future::poll_fn(|cx| {
            use std::task::Poll;
            while control_open && batch.len() < WRITE_BATCH {
                match out_rx.poll_recv(cx) {
                    Poll::Ready(Some(Outgoing::Frame(f))) => batch.push(&f),
                    Poll::Ready(Some(Outgoing::Raw(b))) => batch.push_bytes(b),
                    Poll::Ready(Some(Outgoing::Stream(rx))) => streams.push(rx),
                    Poll::Ready(None) => control_open = false,
                    Poll::Pending => break,
                }
            }
            // Round-robin: one chunk per stream per turn until the batch is full or a whole
            // turn finds nothing ready.
            while batch.len() < WRITE_BATCH && !streams.is_empty() {
                let mut took = false;
                let n = streams.len();
                let mut i = 0;
                while i < n && batch.len() < WRITE_BATCH && !streams.is_empty() {
                    let idx = (next + i) % streams.len();
                    match streams[idx].poll_recv(cx) {
                        Poll::Ready(Some(StreamItem::Chunk(c))) => {
                            batch.push(&Frame::Chunk(c));
                            took = true;
                        }
                        Poll::Ready(Some(StreamItem::File(c, region))) => {
                            batch.push_file_chunk(&c, region);
                            took = true;
                        }
                        Poll::Ready(Some(StreamItem::Flush(done))) => {
                            flushed.push(done);
                            took = true;
                        }
                        Poll::Ready(None) => {
                            streams.swap_remove(idx);
                            continue;
                        }
                        Poll::Pending => {}
                    }
                    i += 1;
                }
                next = next.wrapping_add(1);
                if !took {
                    break;
                }
            }
            if !batch.is_empty() || !flushed.is_empty() {
                Poll::Ready(true)
            } else if !control_open && streams.is_empty() {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        })
        .await;
        if !progressed {
            break;
        }
        if batch.write_to(&mut wr).await.is_err() || wr.flush().await.is_err() {
            // A frame may be cut short (a file that ended early): the peer must see the
            // stream end here, not wait for the connection's end.
            // Bounded: a peer that stopped reading can hold a TLS close_notify back forever.
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
            return;
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
    let _ = wr.shutdown().await;
}

async fn quic_control_writer(mut send: quinn::SendStream, mut out_rx: mpsc::Receiver<Outgoing>) {
    let mut batch = Outbox::new();
    while let Some(first) = out_rx.recv().await {
        let mut item = Some(first);
        while let Some(o) = item.take() {
            match o {
                Outgoing::Frame(f) => batch.push(&f),
                Outgoing::Raw(b) => batch.push_bytes(b),
                Outgoing::Stream(_) => {} // QUIC media goes on its own streams
            }
            if batch.len() < WRITE_BATCH {
                item = out_rx.try_recv().ok();
            }
        }
        if batch.write_to_quic(&mut send).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

/// Routes the chunks that arrive as datagrams. A datagram never waits: one whose stream's
/// queue is full, whose stream nobody reads, or that is not a whole `CHUNK` (a corrupt or
/// hostile one) is dropped, as the network might have dropped it.
async fn read_datagrams(conn: quinn::Connection, limits: Limits, routes: Arc<Mutex<RouteMap>>) {
    while let Ok(body) = conn.read_datagram().await {
        let Ok(Frame::Chunk(chunk)) = chunkcast_protocol::wire::parse(body, &limits) else {
            continue;
        };
        if chunk.payload.len() > limits.max_payload() {
            continue;
        }
        if let Some(tx) = lookup(&routes, chunk.stream) {
            let _ = tx.try_send(Ok(chunk));
        }
    }
}

async fn accept_media(
    conn: quinn::Connection,
    limits: Limits,
    routes: Arc<Mutex<RouteMap>>,
    in_tx: mpsc::Sender<Result<Frame, LinkError>>,
) {
    while let Ok(recv) = conn.accept_uni().await {
        let media = read_loop(
            recv,
            BytesMut::new(),
            limits,
            routes.clone(),
            in_tx.clone(),
            Scope::Stream,
        );
        tokio::spawn(media);
    }
}

/// What a read error ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The byte stream carries the connection (TCP, or QUIC's control stream).
    Connection,
    /// One QUIC media stream: its reset or truncation ends that stream only; the sender
    /// explains why on the control stream (`CLOSE`).
    Stream,
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    mut buf: BytesMut,
    limits: Limits,
    routes: Arc<Mutex<RouteMap>>,
    in_tx: mpsc::Sender<Result<Frame, LinkError>>,
    scope: Scope,
) {
    let mut decoder = Decoder::new(limits);
    let mut pool = ReadPool::default();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if scope == Scope::Stream && !matches!(frame, Frame::Chunk(_)) {
                        // Media streams carry chunks only; anything else is a peer's bug.
                        let field = "frame type on a media stream";
                        let e = DecodeError::InvalidField { field, value: 0 };
                        let _ = in_tx.send(Err(e.into())).await;
                        return;
                    }
                    if !dispatch(frame, &routes, &in_tx).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(DecodeError::Checksum { stream, seq }) => {
                    // In sync still: tell the stream's owner, who decides (resume or fail).
                    let route = lookup(&routes, stream);
                    let err = DecodeError::Checksum { stream, seq };
                    match route {
                        Some(tx) => {
                            let _ = tx.send(Err(err)).await;
                        }
                        None => {
                            let _ = in_tx.send(Err(err.into())).await;
                        }
                    }
                }
                Err(e) => {
                    let _ = in_tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        let frame = decoder.frame_len().unwrap_or(0);
        if buf.capacity() - buf.len() < READ_SIZE / 4 || buf.capacity() < frame {
            pool.refill(&mut buf, frame);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                if !buf.is_empty() && scope == Scope::Connection {
                    let _ = in_tx
                        .send(Err(DecodeError::Truncated("final").into()))
                        .await;
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if scope == Scope::Connection {
                    let _ = in_tx.send(Err(e.into())).await;
                }
                return;
            }
        }
    }
}

/// The read loop's buffers. Decoded payloads are slices of the buffer they were read into, so
/// a buffer stays alive until the consumer drops its last chunk; reading into fresh memory each
/// time costs page faults and zeroed pages (87 000 faults per GB received, 6 % of a download's
/// CPU). Buffers whose chunks are all gone are taken back instead.
#[derive(Default)]
struct ReadPool {
    spare: Vec<BytesMut>,
}

impl ReadPool {
    /// Gives `buf` room for half a [`READ_SIZE`] more and for the whole of a `frame`-byte frame
    /// it holds the start of, keeping its contents: in a released buffer if there is one, else
    /// in a new one.
    fn refill(&mut self, buf: &mut BytesMut, frame: usize) {
        let more = (READ_SIZE / 2).max(frame.saturating_sub(buf.len()));
        // Unshared (every chunk read into it is gone): reused in place.
        if buf.try_reclaim(more) {
            return;
        }
        let need = buf.len() + more;
        let mut next = match self.spare.iter_mut().position(|b| b.try_reclaim(need)) {
            Some(i) => self.spare.swap_remove(i),
            None => BytesMut::with_capacity(need.max(READ_SIZE)),
        };
        next.extend_from_slice(buf);
        let mut old = std::mem::replace(buf, next);
        old.clear();
        if self.spare.len() < READ_POOL {
            self.spare.push(old);
        }
    }
}

fn lookup(routes: &Mutex<RouteMap>, stream: StreamId) -> Option<mpsc::Sender<ChunkResult>> {
    routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&stream)
        .cloned()
}

/// Delivers one frame; `false` when nobody listens any more.
async fn dispatch(
    frame: Frame,
    routes: &Mutex<RouteMap>,
    in_tx: &mpsc::Sender<Result<Frame, LinkError>>,
) -> bool {
    let Frame::Chunk(chunk) = frame else {
        return in_tx.send(Ok(frame)).await.is_ok();
    };
    let stream = chunk.stream;
    let (route, late) = {
        let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
        let route = routes.get(&stream).cloned();
        routes.routed += u64::from(route.is_some());
        let late = route.is_none() && routes.ended(&stream);
        (route, late)
    };
    if late {
        // Its stream is over: a unit that came on its own QUIC stream after the end.
        return true;
    }
    let Some(tx) = route else {
        return in_tx.send(Ok(Frame::Chunk(chunk))).await.is_ok();
    };
    let last = chunk.has(ChunkFlags::END_OF_STREAM);
    if tx.send(Ok(chunk)).await.is_err() || last {
        // The receiver is gone (cancelled) or the stream is complete.
        routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&stream);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks routed to a stream are counted for the driver (signs of life); chunks nobody
    /// routed and control frames are not, and each count is taken once.
    #[tokio::test]
    async fn routed_chunks_are_counted_once_for_the_driver() {
        use chunkcast_protocol::wire::encode;
        let (near, far) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = tcp(Box::new(near), Limits::default(), BytesMut::new());
        let (peer_tx, _peer_rx) = tcp(Box::new(far), Limits::default(), BytesMut::new());
        let mut chunks = tx.route(StreamId(1), 8);
        let chunk = |stream, seq| {
            let payload = Bytes::from_static(b"abc");
            Frame::Chunk(Chunk::new(
                StreamId(stream),
                seq,
                0,
                0,
                0,
                ChunkFlags::KEY,
                payload,
            ))
        };
        let mut out = BytesMut::new();
        encode(&chunk(1, 0), &mut out);
        encode(&chunk(1, 1), &mut out);
        encode(&chunk(2, 0), &mut out); // nobody routed stream 2: it goes to `recv`
        encode(
            &Frame::Ping {
                nonce: 1,
                time_us: 0,
            },
            &mut out,
        );
        peer_tx.send_raw(out.freeze()).await.unwrap();
        assert!(matches!(chunks.recv().await, Some(Ok(c)) if c.seq == 0));
        assert!(matches!(chunks.recv().await, Some(Ok(c)) if c.seq == 1));
        assert!(matches!(rx.recv().await, Some(Ok(Frame::Chunk(c))) if c.stream == StreamId(2)));
        assert!(matches!(rx.recv().await, Some(Ok(Frame::Ping { .. }))));
        assert_eq!(rx.take_routed(), 2);
        assert_eq!(rx.take_routed(), 0);
    }

    fn chunk(stream: u32, seq: u64, flags: ChunkFlags) -> Frame {
        Frame::Chunk(Chunk::new(
            StreamId(stream),
            seq,
            0,
            0,
            0,
            flags,
            Bytes::from_static(b"abc"),
        ))
    }

    /// A unit that comes on its own QUIC stream after its stream's end (or after a cancel)
    /// is dropped, not handed to the connection as a chunk of a stream nobody opened (the
    /// server's machine takes that for a protocol error and closes the connection). A stream
    /// that never had a route still goes to the connection.
    #[tokio::test]
    async fn chunks_of_a_stream_that_ended_are_dropped() {
        use chunkcast_protocol::wire::encode;
        let (near, far) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = tcp(Box::new(near), Limits::default(), BytesMut::new());
        let (peer_tx, _peer_rx) = tcp(Box::new(far), Limits::default(), BytesMut::new());
        let mut ended = tx.route(StreamId(1), 8);
        let _cancelled = tx.route(StreamId(2), 8);
        tx.unroute(StreamId(2));
        let mut out = BytesMut::new();
        encode(&chunk(1, 0, ChunkFlags::END_OF_STREAM), &mut out);
        encode(&chunk(1, 1, ChunkFlags::KEY), &mut out); // late, after the end
        encode(&chunk(2, 5, ChunkFlags::KEY), &mut out); // late, after the cancel
        encode(&chunk(3, 0, ChunkFlags::KEY), &mut out); // never routed
        encode(
            &Frame::Ping {
                nonce: 7,
                time_us: 0,
            },
            &mut out,
        );
        peer_tx.send_raw(out.freeze()).await.unwrap();
        assert!(matches!(ended.recv().await, Some(Ok(c)) if c.seq == 0));
        assert!(matches!(rx.recv().await, Some(Ok(Frame::Chunk(c))) if c.stream == StreamId(3)));
        assert!(matches!(
            rx.recv().await,
            Some(Ok(Frame::Ping { nonce: 7, .. }))
        ));
        assert!(ended.try_recv().is_err(), "nothing after the end");
    }

    /// The ended streams remembered are the last [`ENDED_REMEMBERED`]; routing an id again
    /// forgets that it ended.
    #[test]
    fn ended_streams_are_remembered_boundedly() {
        let mut routes = RouteMap::new();
        let n = ENDED_REMEMBERED as u32 + 10;
        for s in 0..n {
            routes.insert(StreamId(s), mpsc::channel(1).0);
            routes.remove(&StreamId(s));
        }
        assert_eq!(routes.ended.len(), ENDED_REMEMBERED);
        assert!(!routes.ended(&StreamId(0)));
        assert!(routes.ended(&StreamId(n - 1)));
        routes.insert(StreamId(n - 1), mpsc::channel(1).0);
        assert!(!routes.ended(&StreamId(n - 1)));
        // Removing a stream that had no route remembers nothing.
        routes.remove(&StreamId(n + 100));
        assert!(!routes.ended(&StreamId(n + 100)));
    }

    const RTT: Duration = Duration::from_millis(60);

    /// A unit is skipped while the one before it is still being written, never while it only
    /// waits for its acknowledgement; skipped units are counted, not numbered.
    #[test]
    fn a_unit_is_skipped_while_the_one_before_is_unsent() {
        let t0 = Instant::now();
        let mut g = UnitGate::new();
        let Verdict::Send { id: a, deadline } = g.start(t0, RTT, false) else {
            panic!("the first unit goes");
        };
        assert_eq!(deadline, Some(t0 + RTT + UNIT_DEADLINE));
        assert!(g.busy());
        assert_eq!(
            g.start(t0 + Duration::from_millis(40), RTT, false),
            Verdict::Skip
        );
        g.written(a);
        assert!(!g.busy(), "written, waiting for its ack: the next may go");
        let Verdict::Send { id: b, .. } = g.start(t0 + Duration::from_millis(80), RTT, false)
        else {
            panic!("the path took the unit before");
        };
        assert_ne!(a, b);
        assert_eq!(g.open(), 2);
        g.delivered(a);
        g.written(b);
        g.delivered(b);
        assert_eq!(g.open(), 0);
        assert_eq!(
            g.counts(),
            UnitCounts {
                sent: 2,
                skipped: 1,
                reset: 0,
                delivered: 2
            }
        );
    }

    /// Set-up and the end of the stream go even when busy, and are never reset.
    #[test]
    fn framing_is_never_skipped_nor_reset() {
        let t0 = Instant::now();
        let mut g = UnitGate::new();
        assert!(matches!(g.start(t0, RTT, false), Verdict::Send { .. }));
        assert!(g.busy());
        assert!(matches!(
            g.start(t0, RTT, true),
            Verdict::Send { deadline: None, .. }
        ));
        assert_eq!(g.counts().skipped, 0);
    }

    /// A unit reset at its deadline is counted as reset, frees its place, and only once (a
    /// late acknowledgement does not count it again).
    #[test]
    fn a_unit_reset_at_its_deadline_frees_its_place() {
        let t0 = Instant::now();
        let mut g = UnitGate::new();
        let Verdict::Send { id, .. } = g.start(t0, RTT, false) else {
            panic!();
        };
        g.reset(id);
        g.delivered(id);
        assert!(!g.busy());
        assert_eq!(g.counts().reset, 1);
        assert_eq!(g.counts().delivered, 0);
        g.failed(12345); // unknown: nothing
        assert_eq!(g.open(), 0);
    }

    /// At most [`MAX_OPEN_UNITS`] streams are open: beyond, units are skipped even when each
    /// one was written (a path that acknowledges nothing).
    #[test]
    fn open_units_are_bounded() {
        let t0 = Instant::now();
        let mut g = UnitGate::new();
        for i in 0..MAX_OPEN_UNITS {
            let Verdict::Send { id, .. } = g.start(t0, RTT, false) else {
                panic!("unit {i} should go");
            };
            g.written(id);
        }
        assert_eq!(g.start(t0, RTT, false), Verdict::Skip);
        assert_eq!(g.open(), MAX_OPEN_UNITS);
    }

    #[test]
    fn only_intra_only_video_goes_a_unit_per_stream() {
        use chunkcast_protocol::VideoParams;
        let video = |format| {
            Codec::Video(VideoParams {
                format,
                width: 320,
                height: 240,
                fps_num: 25,
                fps_den: 1,
            })
        };
        assert!(unit_streams_for(&video(VisualFormat::Mjpeg)));
        assert!(unit_streams_for(&video(VisualFormat::Y4m)));
        assert!(!unit_streams_for(&video(VisualFormat::Mp4)));
        assert!(!unit_streams_for(&video(VisualFormat::Fmp4)));
        assert!(!unit_streams_for(&Codec::Bytes));
    }

    #[test]
    fn read_buffers_are_reused_once_their_chunks_are_gone() {
        let mut pool = ReadPool::default();
        let mut buf = BytesMut::new();
        // What the read loop does: fill the buffer, decode a frame out of it, keep the start
        // of the next frame.
        let fill_and_cut = |buf: &mut BytesMut| {
            let room = buf.capacity() - buf.len();
            buf.extend_from_slice(&vec![1u8; room - 10]);
            buf.split_to(buf.len() - 10).freeze()
        };
        pool.refill(&mut buf, 0);
        let first = buf.as_ptr();
        let chunk = fill_and_cut(&mut buf);
        // The chunk is alive: the frame's start moves to another buffer, intact.
        pool.refill(&mut buf, 0);
        assert_ne!(buf.as_ptr(), first);
        assert_eq!(&buf[..], &[1u8; 10]);
        assert!(buf.capacity() - buf.len() >= READ_SIZE / 2);
        let chunk2 = fill_and_cut(&mut buf);
        drop(chunk);
        // The first buffer's chunk is gone: it comes back, with the frame's start.
        pool.refill(&mut buf, 0);
        assert_eq!(buf.as_ptr(), first);
        assert_eq!(&buf[..], &[1u8; 10]);
        assert!(buf.capacity() - buf.len() >= READ_SIZE / 2);
        assert!(
            chunk2.iter().all(|&b| b == 1),
            "a live chunk is never overwritten"
        );
    }

    #[test]
    fn a_frame_larger_than_a_read_gets_room_for_all_of_it() {
        let mut pool = ReadPool::default();
        let mut buf = BytesMut::new();
        pool.refill(&mut buf, 0);
        buf.extend_from_slice(&[2u8; 100]);
        pool.refill(&mut buf, 3 * READ_SIZE);
        assert!(buf.capacity() >= 3 * READ_SIZE);
        assert_eq!(&buf[..], &[2u8; 100]);
    }
}
