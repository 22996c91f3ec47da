//! Byte streams and vectored frame output shared by every transport.

use std::cell::RefCell;
use std::fs::File;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags};
use chunkcast_protocol::wire::{Frame, encode, encode_chunk_head, encode_detached_chunk_head};

/// A bidirectional byte stream: plain TCP, TLS over TCP, or a WebSocket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether [`Io::poll_send_file`] sends a file's pages without reading them into user
    /// space: a plain TCP socket on Linux. Where it does not, a [`FileRegion`] is read and
    /// written like any other bytes.
    fn sends_files(&self) -> bool {
        false
    }

    /// Writes up to `len` bytes of `file` from `offset` straight from the page cache
    /// (`sendfile(2)`), as `poll_write` writes from a buffer: the count written, 0 if the
    /// file ends before `offset`. Only called where [`Io::sends_files`] says so.
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        let _ = (cx, file, offset, len);
        Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }

    /// Holds partial segments back until `false` (`TCP_CORK`), so that a chunk's head and the
    /// file bytes sent after it by another call leave in the same segments, not the head in
    /// one of its own. Nothing where the stream writes through a buffer of its own.
    fn cork(&mut self, on: bool) -> std::io::Result<()> {
        let _ = on;
        Ok(())
    }
}

impl Io for tokio::net::TcpStream {
    fn sends_files(&self) -> bool {
        cfg!(target_os = "linux")
    }

    #[cfg(target_os = "linux")]
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_write_ready(cx))?;
            let mut at = offset;
            let sent = self.try_io(tokio::io::Interest::WRITABLE, || {
                rustix::fs::sendfile(&*self, file, Some(&mut at), len).map_err(Into::into)
            });
            match sent {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn cork(&mut self, on: bool) -> std::io::Result<()> {
        socket2::SockRef::from(&*self).set_tcp_cork(on)
    }
}

impl Io for Box<dyn Io> {
    fn sends_files(&self) -> bool {
        (**self).sends_files()
    }

    fn cork(&mut self, on: bool) -> std::io::Result<()> {
        (**self).cork(on)
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        (**self).poll_send_file(cx, file, offset, len)
    }
}

impl<T: Io> Io for tokio_rustls::server::TlsStream<T> {}
impl<T: Io> Io for tokio_rustls::client::TlsStream<T> {}
impl Io for tokio::io::DuplexStream {}
impl<T: Io> Io for tokio::io::BufReader<T> {}

/// A boxed [`Io`], so that plain and TLS connections share one code path.
pub type BoxedIo = Box<dyn Io>;

/// One half of a split [`BoxedIo`]: a link's reader task holds one, its writer task the
/// other. Like tokio's `split`, but the writer's half still sends files.
pub(crate) struct Half(Arc<std::sync::Mutex<BoxedIo>>);

/// Splits `io` for a reader and a writer. The lock is held for one poll at a time, never
/// across an await.
pub(crate) fn split(io: BoxedIo) -> (Half, Half) {
    let shared = Arc::new(std::sync::Mutex::new(io));
    (Half(shared.clone()), Half(shared))
}

impl Half {
    fn io(&self) -> std::sync::MutexGuard<'_, BoxedIo> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **self.io()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **self.io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut **self.io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **self.io()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **self.io()).poll_shutdown(cx)
    }
}

impl Io for Half {
    fn sends_files(&self) -> bool {
        self.io().sends_files()
    }

    fn cork(&mut self, on: bool) -> std::io::Result<()> {
        self.io().cork(on)
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_send_file(cx, file, offset, len)
    }
}

/// Bytes of a file to send as they are, without reading them here: a verified download's
/// payload on plain TCP, which the kernel sends from the page cache.
#[derive(Debug, Clone)]
pub struct FileRegion {
    /// The open file.
    pub file: Arc<File>,
    /// Where the bytes start.
    pub offset: u64,
    /// How many.
    pub len: usize,
}

impl FileRegion {
    /// The region's bytes, read: for a stream that cannot send files. A file that ends
    /// before the region does is `UnexpectedEof`.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; self.len];
        self.file.read_exact_at(&mut buf, self.offset)?;
        Ok(buf)
    }
}

/// Writes all of `region` to `w`: from the page cache where `w` can, else read and written.
/// A file that ends early is an error (`UnexpectedEof`): the frame around it is then broken,
/// so the connection cannot go on.
async fn send_region<W: Io + ?Sized>(w: &mut W, region: &FileRegion) -> std::io::Result<()> {
    let (mut offset, mut left) = (region.offset, region.len);
    if !w.sends_files() {
        return w.write_all(&region.read()?).await;
    }
    while left > 0 {
        let n = std::future::poll_fn(|cx| w.poll_send_file(cx, &region.file, offset, left)).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ended while it was sent",
            ));
        }
        offset += n as u64;
        left -= n;
    }
    Ok(())
}

/// Frames waiting to be written: small headers encoded into one reused buffer (a live chunk's
/// head shared with the other viewers' outboxes), chunk payloads kept by reference, so that a
/// batch goes out as one vectored write with no payload copy.
#[derive(Debug, Default)]
pub struct Outbox {
    scratch: BytesMut,
    parts: Vec<Bytes>,
    /// File regions, each sent before the part at its index (TCP only).
    files: Vec<(usize, FileRegion)>,
    len: usize,
    frames: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame.
    pub fn push(&mut self, frame: &Frame) {
        match frame {
            Frame::Chunk(c) => {
                let head = chunk_head(c, &mut self.scratch);
                self.push_bytes(head);
                if !c.payload.is_empty() {
                    self.push_bytes(c.payload.clone());
                }
            }
            other => {
                encode(other, &mut self.scratch);
                let bytes = self.scratch.split().freeze();
                self.push_bytes(bytes);
            }
        }
        self.frames += 1;
    }

    /// Queues a chunk whose payload is `region` of a file (`chunk` carries `HEADER_CRC`, no
    /// payload, and `raw_len == region.len`): its head now, the bytes from the file when the
    /// outbox is written. TCP only ([`Outbox::write_to`]).
    pub fn push_file_chunk(&mut self, chunk: &Chunk, region: FileRegion) {
        encode_detached_chunk_head(chunk, &mut self.scratch);
        let head = self.scratch.split().freeze();
        self.push_bytes(head);
        self.len += region.len;
        self.files.push((self.parts.len(), region));
        self.frames += 1;
    }

    /// Queues bytes that are already encoded frames (a handshake state machine's output).
    pub fn push_bytes(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.parts.push(bytes);
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frames queued.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Writes everything queued with vectored writes.
    ///
    /// Not cancel-safe: dropping the future mid-write loses track of what was written.
    pub async fn write_to<W: Io + ?Sized>(&mut self, w: &mut W) -> std::io::Result<()> {
        let files = std::mem::take(&mut self.files);
        let corked = !files.is_empty() && w.sends_files();
        if corked {
            w.cork(true)?;
        }
        let mut first = 0;
        for (at, region) in &files {
            self.write_parts(w, &mut first, *at).await?;
            send_region(w, region).await?;
        }
        let all = self.parts.len();
        self.write_parts(w, &mut first, all).await?;
        if corked {
            // Uncorking sends what is held: the batch's tail goes out now.
            w.cork(false)?;
        }
        self.clear();
        Ok(())
    }

    /// Writes the parts from `*first` up to `end` with vectored writes.
    async fn write_parts<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
        first: &mut usize,
        end: usize,
    ) -> std::io::Result<()> {
        // At most this many slices per writev: Linux's IOV_MAX is 1024.
        const MAX_SLICES: usize = 512;
        while *first < end {
            let stop = (*first + MAX_SLICES).min(end);
            let slices: Vec<IoSlice<'_>> = self.parts[*first..stop]
                .iter()
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let part = &mut self.parts[*first];
                let take = n.min(part.len());
                part.advance(take);
                n -= take;
                if part.is_empty() {
                    *first += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes everything queued to a QUIC stream, payloads by reference.
    pub async fn write_to_quic(
        &mut self,
        s: &mut quinn::SendStream,
    ) -> Result<(), quinn::WriteError> {
        debug_assert!(self.files.is_empty(), "file regions go on TCP only");
        s.write_all_chunks(&mut self.parts).await?;
        self.clear();
        Ok(())
    }

    /// Flushes a writer after [`Outbox::write_to`] (TLS buffers records).
    pub async fn flush<W: AsyncWrite + Unpin + ?Sized>(w: &mut W) -> std::io::Result<()> {
        w.flush().await
    }

    fn clear(&mut self) {
        self.parts.clear();
        self.files.clear();
        self.len = 0;
        self.frames = 0;
    }
}

/// Chunk heads this thread encoded last. A live chunk goes out to every viewer with the same
/// header (viewers' first subscription is stream 1 alike), and the header's CRC covers the
/// payload: encoded once per chunk instead of once per viewer, 1 000 viewers of a 4 Mbit/s
/// stream stop computing 500 MB/s of CRC32C.
const HEADS: usize = 8;
/// Larger payloads (a download's) are not kept alive for the sake of their head.
const HEAD_PAYLOAD_MAX: usize = 1 << 20;

thread_local! {
    static RECENT_HEADS: RefCell<RecentHeads> = const { RefCell::new(RecentHeads::new()) };
}

struct RecentHead {
    /// Its payload's `Bytes` keeps the allocation alive (and, being shared, unchanged), so
    /// that no other payload can take the address the entry is looked up by.
    chunk: Chunk,
    head: Bytes,
}

struct RecentHeads {
    entries: Vec<RecentHead>,
    next: usize,
}

impl RecentHeads {
    const fn new() -> Self {
        Self {
            entries: Vec::new(),
            next: 0,
        }
    }

    fn get(&self, c: &Chunk) -> Option<Bytes> {
        self.entries
            .iter()
            .find(|e| same_head(&e.chunk, c))
            .map(|e| e.head.clone())
    }

    fn put(&mut self, chunk: Chunk, head: Bytes) {
        let e = RecentHead { chunk, head };
        if self.entries.len() < HEADS {
            self.entries.push(e);
        } else {
            self.entries[self.next] = e;
            self.next = (self.next + 1) % HEADS;
        }
    }
}

/// Whether `a` and `b` encode to the same head: the same header fields and the very same
/// payload bytes (by address: what is compared is where they are, not what they hold).
fn same_head(a: &Chunk, b: &Chunk) -> bool {
    // Every field by name: a field added to `Chunk` fails to compile here until it is weighed.
    let Chunk {
        stream,
        seq,
        offset,
        pts_us,
        duration_us,
        flags,
        raw_len,
        payload,
    } = a;
    *stream == b.stream
        && *seq == b.seq
        && *offset == b.offset
        && *pts_us == b.pts_us
        && *duration_us == b.duration_us
        && *flags == b.flags
        && *raw_len == b.raw_len
        && payload.as_ptr() == b.payload.as_ptr()
        && payload.len() == b.payload.len()
}

/// The `CHUNK` frame's head for `c`: a recent one if this thread encoded it already, else
/// encoded now (into `scratch`, or on its own when it is kept for the next viewers).
fn chunk_head(c: &Chunk, scratch: &mut BytesMut) -> Bytes {
    // A head whose CRC covers its 37 header bytes only (`HEADER_CRC`: a verified download's,
    // which goes to one peer) costs nothing worth keeping it for.
    let keep = !c.payload.is_empty()
        && c.payload.len() <= HEAD_PAYLOAD_MAX
        && !c.has(ChunkFlags::HEADER_CRC);
    if !keep {
        encode_chunk_head(c, scratch);
        return scratch.split().freeze();
    }
    if let Some(head) = RECENT_HEADS.with_borrow(|r| r.get(c)) {
        return head;
    }
    encode_chunk_head(c, scratch);
    // Its own allocation: a kept head must not pin this outbox's scratch buffer.
    let head = Bytes::copy_from_slice(&scratch.split());
    RECENT_HEADS.with_borrow_mut(|r| r.put(c.clone(), head.clone()));
    head
}

#[cfg(test)]
mod tests {

    use chunkcast_protocol::wire::CHUNK_OVERHEAD;
    use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags, StreamId};

    use super::*;

    /// A socket that takes everything and remembers, for each write call, where each slice
    /// pointed and how long it was.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Vec<(usize, usize)>>,
        bytes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.calls.push(vec![(buf.as_ptr() as usize, buf.len())]);
            self.bytes += buf.len();
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let slices: Vec<(usize, usize)> = bufs
                .iter()
                .map(|b| (b.as_ptr() as usize, b.len()))
                .collect();
            let n = slices.iter().map(|s| s.1).sum();
            self.calls.push(slices);
            self.bytes += n;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Reads nothing (end of stream): only its writes matter.
    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Io for Recorder {}

    fn chunk(stream: u32, seq: u64, payload: &Bytes) -> Chunk {
        Chunk::new(
            StreamId(stream),
            seq,
            0,
            seq * 40_000,
            40_000,
            ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
            payload.clone(),
        )
    }

    /// A live chunk shared by a thousand viewers: each viewer's outbox writes its own header
    /// and the shared payload in one vectored write, the payload slice pointing into the one
    /// allocation (a copy anywhere between the fan-out and the socket would move it).
    #[tokio::test]
    async fn a_shared_payload_goes_to_each_viewer_as_one_vectored_write_of_the_same_bytes() {
        let payload = Bytes::from(vec![7u8; 20_000]);
        let shared = (payload.as_ptr() as usize, payload.len());
        for viewer in 0..1000u32 {
            let mut out = Outbox::new();
            out.push(&Frame::Chunk(chunk(viewer + 1, 5, &payload)));
            let mut socket = Recorder::default();
            out.write_to(&mut socket).await.unwrap();
            assert_eq!(socket.calls.len(), 1, "viewer {viewer}: one write");
            let call = &socket.calls[0];
            assert_eq!(
                call.len(),
                2,
                "viewer {viewer}: its header, then the payload"
            );
            assert_eq!(call[0].1, CHUNK_OVERHEAD);
            assert_eq!(call[1], shared, "viewer {viewer}: the payload was copied");
            assert!(out.is_empty());
        }
    }

    /// Viewers with the same stream id get the same head, encoded once; a head is never
    /// reused for other header fields or other payload bytes, even at the same address.
    #[tokio::test]
    async fn a_shared_chunks_head_is_encoded_once_and_only_ever_matches_its_own_chunk() {
        let payload = Bytes::from(vec![7u8; 20_000]);
        let mut heads = Vec::new();
        for viewer in 0..1000 {
            let mut out = Outbox::new();
            out.push(&Frame::Chunk(chunk(1, 5, &payload)));
            let mut socket = Recorder::default();
            out.write_to(&mut socket).await.unwrap();
            let call = &socket.calls[0];
            assert_eq!(call[1].0, payload.as_ptr() as usize, "viewer {viewer}");
            heads.push(call[0]);
        }
        assert!(
            heads.windows(2).all(|w| w[0] == w[1]),
            "every viewer's head is the one encoded first"
        );
        let fresh = |c: &Chunk| {
            let mut b = BytesMut::new();
            encode_chunk_head(c, &mut b);
            b.freeze()
        };
        let head = |c: &Chunk| {
            let mut out = Outbox::new();
            out.push(&Frame::Chunk(c.clone()));
            out.parts[0].clone()
        };
        let same_len = Bytes::from(vec![8u8; 20_000]);
        let cases = [
            chunk(1, 5, &payload),
            chunk(2, 5, &payload),
            chunk(1, 6, &payload),
            Chunk {
                flags: ChunkFlags::END_OF_UNIT,
                ..chunk(1, 5, &payload)
            },
            chunk(1, 5, &payload.slice(1..)),
            chunk(1, 5, &same_len),
            chunk(1, 5, &Bytes::new()),
        ];
        // Twice: encoded, then from the recent heads.
        for _ in 0..2 {
            for c in &cases {
                assert_eq!(head(c), fresh(c), "{c:?}");
            }
        }
        // A payload freed and another at its address, with the same length and fields: the
        // kept entry holds the first one, so the second cannot be mistaken for it.
        let first = Bytes::from(vec![1u8; 4096]);
        let h1 = head(&chunk(3, 9, &first));
        drop(first);
        let second = Bytes::from(vec![2u8; 4096]);
        let c2 = chunk(3, 9, &second);
        assert_eq!(head(&c2), fresh(&c2));
        assert_ne!(h1, fresh(&c2));
    }

    /// What an outbox holding a chunk whose payload is a file region writes: a ping, the
    /// chunk, a ping.
    async fn file_chunk_through<W: Io>(w: &mut W, file: &Arc<File>, c: &Chunk, at: u64) {
        let ping = Frame::Ping {
            nonce: 1,
            time_us: 2,
        };
        let mut out = Outbox::new();
        out.push(&ping);
        let region = FileRegion {
            file: file.clone(),
            offset: at,
            len: c.raw_len as usize,
        };
        out.push_file_chunk(c, region);
        out.push(&ping);
        assert_eq!(out.frames(), 3);
        out.write_to(w).await.unwrap();
        w.shutdown().await.unwrap();
    }

    /// A chunk whose payload is a region of a file goes out as the very bytes of the same
    /// chunk held in memory: from the page cache on a TCP socket, read and written on a
    /// stream that cannot send files. A file that ends before the region does is an error,
    /// not a short frame followed by the next one.
    #[tokio::test]
    async fn a_file_chunk_is_the_same_bytes_from_the_page_cache_as_from_memory() {
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let file = Arc::new(f);
        let (at, len) = (1000u64, 200_000usize);
        let flags = ChunkFlags::KEY | ChunkFlags::END_OF_UNIT | ChunkFlags::HEADER_CRC;
        let payload = Bytes::copy_from_slice(&data[at as usize..at as usize + len]);
        let in_memory = Chunk::new(StreamId(3), 7, at, 0, 0, flags, payload);
        let ping = Frame::Ping {
            nonce: 1,
            time_us: 2,
        };
        let mut expected = BytesMut::new();
        encode(&ping, &mut expected);
        encode(&Frame::Chunk(in_memory.clone()), &mut expected);
        encode(&ping, &mut expected);
        let detached = Chunk {
            payload: Bytes::new(),
            ..in_memory
        };

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            sock.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(tcp.sends_files());
        file_chunk_through(&mut tcp, &file, &detached, at).await;
        assert!(
            reader.await.unwrap() == expected[..],
            "sent from the page cache"
        );

        let (mut near, mut far) = tokio::io::duplex(1 << 16);
        assert!(!near.sends_files());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            got
        });
        file_chunk_through(&mut near, &file, &detached, at).await;
        assert!(reader.await.unwrap() == expected[..], "read and written");

        // The file shrank under the region.
        file.set_len(at + 10).unwrap();
        let shrunk = || {
            let mut out = Outbox::new();
            let region = FileRegion {
                file: file.clone(),
                offset: at,
                len,
            };
            out.push_file_chunk(&detached, region);
            out
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _peer = tokio::spawn(async move { listener.accept().await });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let e = shrunk().write_to(&mut tcp).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        let (mut near, _far) = tokio::io::duplex(1 << 20);
        let e = shrunk().write_to(&mut near).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }

    /// A batch of frames (what the TCP writer gathers) is one vectored write holding every
    /// payload where it already is.
    #[tokio::test]
    async fn a_batch_is_one_vectored_write_with_every_payload_by_reference() {
        let payloads: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let mut out = Outbox::new();
        out.push(&Frame::Ping {
            nonce: 9,
            time_us: 1,
        });
        for (seq, p) in payloads.iter().enumerate() {
            out.push(&Frame::Chunk(chunk(1, seq as u64, p)));
        }
        assert_eq!(out.frames(), 4);
        let mut socket = Recorder::default();
        out.write_to(&mut socket).await.unwrap();
        assert_eq!(socket.calls.len(), 1);
        let call = &socket.calls[0];
        for p in &payloads {
            assert!(
                call.contains(&(p.as_ptr() as usize, p.len())),
                "a payload was copied: {call:?}"
            );
        }
        assert_eq!(socket.bytes, 3 * (CHUNK_OVERHEAD + 1000) + call[0].1);
    }
}
