//! Frame encoding and decoding over `BytesMut`, sans-IO.
//!
//! A frame is a big-endian `u32` length, then that many bytes: a type byte and the body.
//! The decoder checks the length against [`Limits`] *before* reserving memory, and hands out
//! chunk payloads as slices of the read buffer (`split_to(n).freeze()`), so decoding a chunk
//! costs its CRC32C and no copy.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::wire::chunk::{Chunk, ChunkFlags};
use crate::wire::frame::{Frame, FrameType};
use crate::wire::layout::{self, CHUNK_HEADER_LEN, Reader};

/// Bytes of a chunk frame before its payload: length (4), type (1) and the chunk header (41).
pub const CHUNK_OVERHEAD: usize = 4 + 1 + CHUNK_HEADER_LEN;

/// The bounds the decoder enforces, so that a hostile peer cannot make it allocate at will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest length prefix accepted: type byte + body. The default admits a 1 MiB chunk
    /// payload plus its header.
    pub max_frame_len: u32,
    /// Largest string (path, token, message) in bytes.
    pub max_string_len: usize,
    /// Most entries in one catalog frame.
    pub max_list_len: usize,
}

/// Largest chunk payload by default: 1 MiB, where loopback TCP throughput stops growing with
/// write size on the reference machine (see BENCHMARKS.md).
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_PAYLOAD + 1 + CHUNK_HEADER_LEN as u32,
            max_string_len: 4096,
            max_list_len: 4096,
        }
    }
}

impl Limits {
    /// Largest chunk payload these limits admit.
    pub fn max_payload(&self) -> usize {
        (self.max_frame_len as usize).saturating_sub(1 + CHUNK_HEADER_LEN)
    }
}

/// Streaming frame decoder: call [`Decoder::decode`] whenever bytes arrive.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Body(usize),
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Head,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The length of the frame being decoded, once its length prefix has been taken off
    /// `src`: `src` must hold that many bytes before the frame comes out (already checked
    /// against the limits). `None` between frames.
    pub fn frame_len(&self) -> Option<usize> {
        match self.state {
            State::Head => None,
            State::Body(len) => Some(len),
        }
    }

    /// Takes one frame off the front of `src`, `Ok(None)` if more bytes are needed.
    ///
    /// On any error but [`DecodeError::Checksum`] the stream is out of sync: close the
    /// connection. A checksum error consumes the bad frame, so decoding may go on.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let len = match self.state {
            State::Head => {
                if src.len() < 4 {
                    return Ok(None);
                }
                let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
                if len == 0 {
                    return Err(DecodeError::EmptyFrame);
                }
                if len > self.limits.max_frame_len {
                    return Err(DecodeError::FrameTooLarge {
                        len: len.into(),
                        max: self.limits.max_frame_len.into(),
                    });
                }
                src.advance(4);
                let len = len as usize;
                self.state = State::Body(len);
                len
            }
            State::Body(len) => len,
        };
        if src.len() < len {
            // Making room is the caller's choice (see `frame_len`): a read loop that recycles
            // its buffers must not have a fresh one allocated behind its back.
            return Ok(None);
        }
        self.state = State::Head;
        let body = src.split_to(len).freeze();
        parse(body, &self.limits).map(Some)
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Decodes one whole frame body (type byte first), as found after the length prefix.
///
/// Each frame's layout is read in `wire/layout.rs`, next to the code that writes it.
pub fn parse(mut body: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::EmptyFrame);
    }
    let ty = body.get_u8();
    let ty = FrameType::from_u8(ty).ok_or(DecodeError::UnknownFrameType(ty))?;
    if ty == FrameType::Chunk {
        // The payload is the rest of the body: nothing can trail it.
        return layout::read_chunk(body).map(Frame::Chunk);
    }
    let mut r = Reader {
        buf: body,
        what: ty.name(),
        limits,
    };
    let frame = match ty {
        FrameType::Hello => Frame::Hello(layout::read_hello(&mut r)?),
        FrameType::Welcome => Frame::Welcome(layout::read_welcome(&mut r)?),
        FrameType::Error => Frame::Error(layout::read_error(&mut r)?),
        FrameType::Ping => layout::read_ping(&mut r)?,
        FrameType::Pong => layout::read_pong(&mut r)?,
        FrameType::List => layout::read_list(&mut r)?,
        FrameType::Catalog => Frame::Catalog(layout::read_catalog(&mut r)?),
        FrameType::Open => Frame::Open(layout::read_open(&mut r)?),
        FrameType::Opened => Frame::Opened(layout::read_opened(&mut r)?),
        FrameType::Chunk => unreachable!("read above"),
        FrameType::Close => layout::read_close(&mut r)?,
        FrameType::Publish => layout::read_publish(&mut r)?,
        FrameType::Subscribe => layout::read_subscribe(&mut r)?,
        FrameType::Goodbye => layout::read_goodbye(&mut r)?,
        FrameType::Digest => layout::read_digest(&mut r)?,
        FrameType::Proof => layout::read_proof(&mut r)?,
        FrameType::Chat => layout::read_chat(&mut r)?,
        FrameType::Relay => layout::read_relay(&mut r)?,
    };
    if r.buf.has_remaining() {
        return Err(DecodeError::TrailingBytes(r.what, r.buf.remaining()));
    }
    Ok(frame)
}

/// Appends `frame`, length prefix included, to `dst`.
///
/// Strings longer than the peer's limit are the caller's bug; they are truncated at 65535
/// bytes (the field's width) so that encoding itself never fails.
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    if let Frame::Chunk(c) = frame {
        encode_chunk_head(c, dst);
        dst.extend_from_slice(&c.payload);
        return;
    }
    let start = dst.len();
    dst.put_u32(0); // patched below, once the body's length is known
    dst.put_u8(frame.frame_type().to_u8());
    match frame {
        Frame::Hello(h) => layout::write_hello(h, dst),
        Frame::Welcome(w) => layout::write_welcome(w, dst),
        Frame::Error(e) => layout::write_error(e, dst),
        Frame::Ping { nonce, time_us } => layout::write_ping(*nonce, *time_us, dst),
        Frame::Pong {
            nonce,
            echo_us,
            time_us,
        } => layout::write_pong(*nonce, *echo_us, *time_us, dst),
        Frame::List { request, prefix } => layout::write_list(*request, prefix, dst),
        Frame::Catalog(c) => layout::write_catalog(c, dst),
        Frame::Open(o) => layout::write_open(o, dst),
        Frame::Opened(o) => layout::write_opened(o, dst),
        Frame::Chunk(_) => unreachable!("written above"),
        Frame::Close {
            stream,
            code,
            message,
        } => layout::write_close(*stream, *code, message, dst),
        Frame::Publish {
            request,
            stream,
            channel,
            codec,
        } => layout::write_publish(*request, *stream, channel, codec, dst),
        Frame::Subscribe {
            request,
            stream,
            channel,
        } => layout::write_subscribe(*request, *stream, channel, dst),
        Frame::Digest { stream, digest } => layout::write_digest(*stream, digest, dst),
        Frame::Goodbye { code, message } => layout::write_goodbye(*code, message, dst),
        Frame::Proof { stream, nodes } => layout::write_proof(*stream, nodes, dst),
        Frame::Chat(c) => layout::write_chat(c, dst),
        Frame::Relay { path } => layout::write_relay(path, dst),
    }
    let len = (dst.len() - start - 4) as u32;
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a chunk frame's length prefix, type and header (CRC included) to `dst`, but not
/// its payload: the caller sends `chunk.payload` right after, by reference (vectored write),
/// instead of copying it into `dst`.
pub fn encode_chunk_head(c: &Chunk, dst: &mut BytesMut) {
    dst.reserve(CHUNK_OVERHEAD);
    let len = (1 + CHUNK_HEADER_LEN + c.payload.len()) as u32;
    dst.put_u32(len);
    dst.put_u8(FrameType::Chunk.to_u8());
    layout::write_chunk_header(c, dst);
}

/// Appends the head of a `CHUNK` whose payload is not in memory: `c.raw_len` bytes that the
/// caller sends right after it from elsewhere (a file's pages, by the kernel's `sendfile`).
/// `c` has no payload, no `COMPRESSED` flag, and `HEADER_CRC`: its CRC covers the header
/// only, so nothing needs the payload's bytes to encode it.
pub fn encode_detached_chunk_head(c: &Chunk, dst: &mut BytesMut) {
    debug_assert!(c.payload.is_empty() && c.has(ChunkFlags::HEADER_CRC));
    debug_assert!(!c.has(ChunkFlags::COMPRESSED));
    dst.reserve(CHUNK_OVERHEAD);
    let len = (1 + CHUNK_HEADER_LEN) as u32 + c.raw_len;
    dst.put_u32(len);
    dst.put_u8(FrameType::Chunk.to_u8());
    layout::write_chunk_header(c, dst);
}
