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
//!   audio never waits behind video.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::io::{BoxedIo, Outbox};
use chunkcast_protocol::error::DecodeError;
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags, StreamId};
use chunkcast_protocol::wire::{Decoder, Frame, Limits};

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
}

impl RouteMap {
    fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, stream: StreamId, tx: mpsc::Sender<ChunkResult>) {
        self.map.insert(stream, tx);
    }

    fn remove(&mut self, stream: &StreamId) {
        self.map.remove(stream);
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
        }
    }

    /// Abandons the stream (the peer sees it end early).
    pub fn abort(self) {
        if let Media::Quic { mut send, .. } = self.0 {
            let _ = send.reset(quinn::VarInt::from_u32(1));
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
}

/// Runs a link over a TCP or TLS byte stream. `leftover` holds bytes already read from it.
pub fn tcp(io: BoxedIo, limits: Limits, leftover: BytesMut) -> (LinkTx, LinkRx) {
    let (rd, wr) = tokio::io::split(io);
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
        },
        LinkRx { rx: in_rx, routes },
    )
}

async fn tcp_writer(mut wr: tokio::io::WriteHalf<BoxedIo>, mut out_rx: mpsc::Receiver<Outgoing>) {
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
    let route = {
        let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
        let route = routes.get(&stream).cloned();
        routes.routed += u64::from(route.is_some());
        route
    };
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
