//! Byte streams and vectored frame output shared by every transport.

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use chunkcast_protocol::wire::{Frame, encode, encode_chunk_head};

/// A bidirectional byte stream: plain TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`], so that plain and TLS connections share one code path.
pub type BoxedIo = Box<dyn Io>;

/// Frames waiting to be written: small headers encoded into one reused buffer, chunk payloads
/// kept by reference, so that a batch goes out as one vectored write with no payload copy.
#[derive(Debug, Default)]
pub struct Outbox {
    scratch: BytesMut,
    parts: Vec<Bytes>,
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
                encode_chunk_head(c, &mut self.scratch);
                let head = self.scratch.split().freeze();
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
    pub async fn write_to<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        // At most this many slices per writev: Linux's IOV_MAX is 1024.
        const MAX_SLICES: usize = 512;
        let mut first = 0;
        while first < self.parts.len() {
            let end = (first + MAX_SLICES).min(self.parts.len());
            let slices: Vec<IoSlice<'_>> = self.parts[first..end]
                .iter()
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let part = &mut self.parts[first];
                let take = n.min(part.len());
                part.advance(take);
                n -= take;
                if part.is_empty() {
                    first += 1;
                }
            }
        }
        self.clear();
        Ok(())
    }

    /// Writes everything queued to a QUIC stream, payloads by reference.
    pub async fn write_to_quic(
        &mut self,
        s: &mut quinn::SendStream,
    ) -> Result<(), quinn::WriteError> {
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
        self.len = 0;
        self.frames = 0;
    }
}
