//! Frame encoding and decoding over `BytesMut`, sans-IO.
//!
//! A frame is a big-endian `u32` length, then that many bytes: a type byte and the body.
//! The decoder checks the length against [`Limits`] *before* reserving memory, and hands out
//! chunk payloads as slices of the read buffer (`split_to(n).freeze()`), so decoding a chunk
//! costs its CRC32C and no copy.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, ErrorCode};
use crate::media::{
    AudioParams, Codec, CodedAudio, ImageParams, MediaKind, SampleFormat, VideoParams, VisualFormat,
};
use crate::wire::chunk::{Chunk, ChunkFlags, StreamId};
use crate::wire::frame::{
    Caps, Catalog, Entry, ErrorFrame, FileDigest, Frame, FrameType, Hello, MAGIC, Mode, Open,
    Opened, Resume, Welcome,
};

/// Bytes of a chunk frame before its payload: length (4), type (1) and the chunk header (41).
pub const CHUNK_OVERHEAD: usize = 4 + 1 + CHUNK_HEADER_LEN;

/// Bytes of the chunk header fields after the type byte, the CRC included.
const CHUNK_HEADER_LEN: usize = 41;

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

/// Sentinel for "unknown" in optional `u64` fields.
const UNKNOWN: u64 = u64::MAX;

/// `CATALOG` flags byte (formerly the `last` bool): the listing's final part.
const CATALOG_LAST: u8 = 0x01;
/// `CATALOG` flags: every entry ends with a note string (only sent with `Caps::ANY_FILE`).
const CATALOG_NOTES: u8 = 0x02;
const CATALOG_FLAGS: u8 = CATALOG_LAST | CATALOG_NOTES;

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
pub fn parse(mut body: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::EmptyFrame);
    }
    let ty = body.get_u8();
    let mut r = Reader {
        buf: body,
        what: "",
        limits,
    };
    let frame = match FrameType::from_u8(ty) {
        Some(FrameType::Hello) => {
            r.what = "HELLO";
            if r.bytes(4)? != MAGIC[..] {
                return Err(DecodeError::BadMagic);
            }
            Frame::Hello(Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                caps: Caps(r.u32()?),
                token: r.string()?,
                client_name: r.string()?,
            })
        }
        Some(FrameType::Welcome) => {
            r.what = "WELCOME";
            Frame::Welcome(Welcome {
                version: r.u16()?,
                caps: Caps(r.u32()?),
                session_id: r.u64()?,
                server_name: r.string()?,
            })
        }
        Some(FrameType::Error) => {
            r.what = "ERROR";
            Frame::Error(ErrorFrame {
                request: r.u32()?,
                code: ErrorCode::from_u16(r.u16()?),
                message: r.string()?,
            })
        }
        Some(FrameType::Ping) => {
            r.what = "PING";
            Frame::Ping {
                nonce: r.u64()?,
                time_us: r.u64()?,
            }
        }
        Some(FrameType::Pong) => {
            r.what = "PONG";
            Frame::Pong {
                nonce: r.u64()?,
                echo_us: r.u64()?,
                time_us: r.u64()?,
            }
        }
        Some(FrameType::List) => {
            r.what = "LIST";
            Frame::List {
                request: r.u32()?,
                prefix: r.string()?,
            }
        }
        Some(FrameType::Catalog) => {
            r.what = "CATALOG";
            let request = r.u32()?;
            let flags = r.u8()?;
            if flags & !CATALOG_FLAGS != 0 {
                return Err(DecodeError::InvalidField {
                    field: "catalog flags",
                    value: flags.into(),
                });
            }
            let last = flags & CATALOG_LAST != 0;
            let notes = flags & CATALOG_NOTES != 0;
            let count = usize::from(r.u16()?);
            if count > limits.max_list_len {
                return Err(DecodeError::ListTooLong {
                    len: count,
                    max: limits.max_list_len,
                });
            }
            // Each entry takes at least 22 bytes, so a count the body cannot hold is refused
            // before the Vec is sized by it.
            if count.saturating_mul(22) > r.buf.remaining() {
                return Err(DecodeError::Truncated("CATALOG"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push(Entry {
                    path: r.string()?,
                    codec: r.codec()?,
                    size: r.opt_u64()?,
                    duration_us: r.opt_u64()?,
                    viewers: r.u32()?,
                    note: if notes { r.note()? } else { None },
                });
            }
            Frame::Catalog(Catalog {
                request,
                last,
                entries,
            })
        }
        Some(FrameType::Open) => {
            r.what = "OPEN";
            let request = r.u32()?;
            let stream = StreamId(r.u32()?);
            let flags = r.u8()?;
            if flags & !0x07 != 0 {
                return Err(DecodeError::InvalidField {
                    field: "open flags",
                    value: flags.into(),
                });
            }
            let resume_kind = r.u8()?;
            let resume_at = r.u64()?;
            let resume = match resume_kind {
                0 => Resume::Start,
                1 => Resume::Seq(resume_at),
                2 => Resume::Offset(resume_at),
                v => {
                    return Err(DecodeError::InvalidField {
                        field: "resume",
                        value: v.into(),
                    });
                }
            };
            let chunk_size = r.u32()?;
            let path = r.string()?;
            Frame::Open(Open {
                request,
                stream,
                path,
                mode: if flags & 0x01 != 0 {
                    Mode::Realtime
                } else {
                    Mode::Download
                },
                resume,
                compress: flags & 0x02 != 0,
                raw: flags & 0x04 != 0,
                chunk_size,
            })
        }
        Some(FrameType::Opened) => {
            r.what = "OPENED";
            let request = r.u32()?;
            let stream = StreamId(r.u32()?);
            let codec = r.codec()?;
            let total_len = r.opt_u64()?;
            let chunk_count = r.opt_u64()?;
            let duration_us = r.opt_u64()?;
            let digest = match r.u8()? {
                0 => FileDigest::None,
                1 => FileDigest::Known(r.array32()?),
                2 => FileDigest::AtEnd,
                v => {
                    return Err(DecodeError::InvalidField {
                        field: "digest kind",
                        value: v.into(),
                    });
                }
            };
            Frame::Opened(Opened {
                request,
                stream,
                codec,
                total_len,
                chunk_count,
                duration_us,
                digest,
                start_seq: r.u64()?,
                start_offset: r.u64()?,
                chunk_size: r.u32()?,
                // Present only when sent to a peer with `Caps::ANY_FILE`: the rest of the body.
                note: if r.buf.has_remaining() {
                    r.note()?
                } else {
                    None
                },
            })
        }
        Some(FrameType::Chunk) => return parse_chunk(r.buf).map(Frame::Chunk),
        Some(FrameType::Close) => {
            r.what = "CLOSE";
            Frame::Close {
                stream: StreamId(r.u32()?),
                code: ErrorCode::from_u16(r.u16()?),
                message: r.string()?,
            }
        }
        Some(FrameType::Publish) => {
            r.what = "PUBLISH";
            Frame::Publish {
                request: r.u32()?,
                stream: StreamId(r.u32()?),
                channel: r.string()?,
                codec: r.codec()?,
            }
        }
        Some(FrameType::Subscribe) => {
            r.what = "SUBSCRIBE";
            Frame::Subscribe {
                request: r.u32()?,
                stream: StreamId(r.u32()?),
                channel: r.string()?,
            }
        }
        Some(FrameType::Digest) => {
            r.what = "DIGEST";
            Frame::Digest {
                stream: StreamId(r.u32()?),
                digest: r.array32()?,
            }
        }
        Some(FrameType::Goodbye) => {
            r.what = "GOODBYE";
            Frame::Goodbye {
                code: ErrorCode::from_u16(r.u16()?),
                message: r.string()?,
            }
        }
        None => return Err(DecodeError::UnknownFrameType(ty)),
    };
    if r.buf.has_remaining() {
        return Err(DecodeError::TrailingBytes(r.what, r.buf.remaining()));
    }
    Ok(frame)
}

fn parse_chunk(mut body: Bytes) -> Result<Chunk, DecodeError> {
    if body.len() < CHUNK_HEADER_LEN {
        return Err(DecodeError::Truncated("CHUNK"));
    }
    let covered = crc32c::crc32c(&body[..CHUNK_HEADER_LEN - 4]);
    let stream = StreamId(body.get_u32());
    let seq = body.get_u64();
    let offset = body.get_u64();
    let pts_us = body.get_u64();
    let duration_us = body.get_u32();
    let flags = ChunkFlags(body.get_u8());
    let raw_len = body.get_u32();
    let crc = body.get_u32();
    if crc32c::crc32c_append(covered, &body) != crc {
        return Err(DecodeError::Checksum { stream, seq });
    }
    if !ChunkFlags::ALL.contains(flags) {
        return Err(DecodeError::InvalidField {
            field: "chunk flags",
            value: flags.0.into(),
        });
    }
    if !flags.contains(ChunkFlags::COMPRESSED) && raw_len as usize != body.len() {
        return Err(DecodeError::InvalidField {
            field: "chunk raw_len",
            value: raw_len.into(),
        });
    }
    Ok(Chunk {
        stream,
        seq,
        offset,
        pts_us,
        duration_us,
        flags,
        raw_len,
        payload: body,
    })
}

struct Reader<'a> {
    buf: Bytes,
    what: &'static str,
    limits: &'a Limits,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(Some(self.u64()?).filter(|&v| v != UNKNOWN))
    }
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn array32(&mut self) -> Result<[u8; 32], DecodeError> {
        let b = self.bytes(32)?;
        let mut out = [0; 32];
        out.copy_from_slice(&b);
        Ok(out)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > self.limits.max_string_len {
            return Err(DecodeError::StringTooLong {
                len,
                max: self.limits.max_string_len,
            });
        }
        let b = self.bytes(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadUtf8)
    }
    /// A note string; empty means none.
    fn note(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(Some(self.string()?).filter(|s| !s.is_empty()))
    }
    fn codec(&mut self) -> Result<Codec, DecodeError> {
        let kind = self.u8()?;
        let kind = MediaKind::from_code(kind).ok_or(DecodeError::InvalidField {
            field: "media kind",
            value: kind.into(),
        })?;
        Ok(match kind {
            MediaKind::Bytes => Codec::Bytes,
            MediaKind::Audio => {
                let sample_rate = self.u32()?;
                let channels = self.u16()?;
                let bits_per_sample = self.u16()?;
                let sample_format = match self.u8()? {
                    0 => SampleFormat::Int,
                    1 => SampleFormat::Float,
                    2 => SampleFormat::MuLaw,
                    3 => SampleFormat::ALaw,
                    4 => SampleFormat::Coded(CodedAudio {
                        tag: self.u16()?,
                        block_align: match self.u16()? {
                            0 => {
                                return Err(DecodeError::InvalidField {
                                    field: "block_align",
                                    value: 0,
                                });
                            }
                            b => b,
                        },
                        samples_per_block: self.u32()?,
                    }),
                    v => {
                        return Err(DecodeError::InvalidField {
                            field: "sample format",
                            value: v.into(),
                        });
                    }
                };
                Codec::Audio(AudioParams {
                    sample_rate,
                    channels,
                    bits_per_sample,
                    sample_format,
                })
            }
            MediaKind::Video => Codec::Video(VideoParams {
                format: self.format()?,
                width: self.u32()?,
                height: self.u32()?,
                fps_num: self.u32()?,
                fps_den: match self.u32()? {
                    0 => {
                        return Err(DecodeError::InvalidField {
                            field: "fps_den",
                            value: 0,
                        });
                    }
                    d => d,
                },
            }),
            MediaKind::Image => Codec::Image(ImageParams {
                format: self.format()?,
                width: self.u32()?,
                height: self.u32()?,
                color: self.u8()?,
            }),
        })
    }
    fn format(&mut self) -> Result<VisualFormat, DecodeError> {
        let v = self.u8()?;
        VisualFormat::from_code(v).ok_or(DecodeError::InvalidField {
            field: "visual format",
            value: v.into(),
        })
    }
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
    match frame {
        Frame::Hello(h) => {
            dst.put_u8(FrameType::Hello.to_u8());
            dst.put_slice(&MAGIC);
            dst.put_u16(h.min_version);
            dst.put_u16(h.max_version);
            dst.put_u32(h.caps.0);
            put_string(dst, &h.token);
            put_string(dst, &h.client_name);
        }
        Frame::Welcome(w) => {
            dst.put_u8(FrameType::Welcome.to_u8());
            dst.put_u16(w.version);
            dst.put_u32(w.caps.0);
            dst.put_u64(w.session_id);
            put_string(dst, &w.server_name);
        }
        Frame::Error(e) => {
            dst.put_u8(FrameType::Error.to_u8());
            dst.put_u32(e.request);
            dst.put_u16(e.code.to_u16());
            put_string(dst, &e.message);
        }
        Frame::Ping { nonce, time_us } => {
            dst.put_u8(FrameType::Ping.to_u8());
            dst.put_u64(*nonce);
            dst.put_u64(*time_us);
        }
        Frame::Pong {
            nonce,
            echo_us,
            time_us,
        } => {
            dst.put_u8(FrameType::Pong.to_u8());
            dst.put_u64(*nonce);
            dst.put_u64(*echo_us);
            dst.put_u64(*time_us);
        }
        Frame::List { request, prefix } => {
            dst.put_u8(FrameType::List.to_u8());
            dst.put_u32(*request);
            put_string(dst, prefix);
        }
        Frame::Catalog(c) => {
            dst.put_u8(FrameType::Catalog.to_u8());
            dst.put_u32(c.request);
            let n = c.entries.len().min(usize::from(u16::MAX));
            let entries = &c.entries[..n];
            let notes = entries.iter().any(|e| e.note.is_some());
            let mut flags = if c.last { CATALOG_LAST } else { 0 };
            if notes {
                flags |= CATALOG_NOTES;
            }
            dst.put_u8(flags);
            dst.put_u16(n as u16);
            for e in entries {
                put_string(dst, &e.path);
                put_codec(dst, &e.codec);
                dst.put_u64(e.size.unwrap_or(UNKNOWN));
                dst.put_u64(e.duration_us.unwrap_or(UNKNOWN));
                dst.put_u32(e.viewers);
                if notes {
                    put_string(dst, e.note.as_deref().unwrap_or(""));
                }
            }
        }
        Frame::Open(o) => {
            dst.put_u8(FrameType::Open.to_u8());
            dst.put_u32(o.request);
            dst.put_u32(o.stream.0);
            let flags = u8::from(o.mode == Mode::Realtime)
                | u8::from(o.compress) << 1
                | u8::from(o.raw) << 2;
            dst.put_u8(flags);
            let (kind, at) = match o.resume {
                Resume::Start => (0, 0),
                Resume::Seq(s) => (1, s),
                Resume::Offset(o) => (2, o),
            };
            dst.put_u8(kind);
            dst.put_u64(at);
            dst.put_u32(o.chunk_size);
            put_string(dst, &o.path);
        }
        Frame::Opened(o) => {
            dst.put_u8(FrameType::Opened.to_u8());
            dst.put_u32(o.request);
            dst.put_u32(o.stream.0);
            put_codec(dst, &o.codec);
            dst.put_u64(o.total_len.unwrap_or(UNKNOWN));
            dst.put_u64(o.chunk_count.unwrap_or(UNKNOWN));
            dst.put_u64(o.duration_us.unwrap_or(UNKNOWN));
            match &o.digest {
                FileDigest::None => dst.put_u8(0),
                FileDigest::Known(d) => {
                    dst.put_u8(1);
                    dst.put_slice(d);
                }
                FileDigest::AtEnd => dst.put_u8(2),
            }
            dst.put_u64(o.start_seq);
            dst.put_u64(o.start_offset);
            dst.put_u32(o.chunk_size);
            if let Some(note) = o.note.as_deref().filter(|n| !n.is_empty()) {
                put_string(dst, note);
            }
        }
        Frame::Chunk(_) => unreachable!("handled above"),
        Frame::Close {
            stream,
            code,
            message,
        } => {
            dst.put_u8(FrameType::Close.to_u8());
            dst.put_u32(stream.0);
            dst.put_u16(code.to_u16());
            put_string(dst, message);
        }
        Frame::Publish {
            request,
            stream,
            channel,
            codec,
        } => {
            dst.put_u8(FrameType::Publish.to_u8());
            dst.put_u32(*request);
            dst.put_u32(stream.0);
            put_string(dst, channel);
            put_codec(dst, codec);
        }
        Frame::Subscribe {
            request,
            stream,
            channel,
        } => {
            dst.put_u8(FrameType::Subscribe.to_u8());
            dst.put_u32(*request);
            dst.put_u32(stream.0);
            put_string(dst, channel);
        }
        Frame::Digest { stream, digest } => {
            dst.put_u8(FrameType::Digest.to_u8());
            dst.put_u32(stream.0);
            dst.put_slice(digest);
        }
        Frame::Goodbye { code, message } => {
            dst.put_u8(FrameType::Goodbye.to_u8());
            dst.put_u16(code.to_u16());
            put_string(dst, message);
        }
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
    let fields = dst.len();
    dst.put_u32(c.stream.0);
    dst.put_u64(c.seq);
    dst.put_u64(c.offset);
    dst.put_u64(c.pts_us);
    dst.put_u32(c.duration_us);
    dst.put_u8(c.flags.0);
    dst.put_u32(c.raw_len);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&dst[fields..]), &c.payload);
    dst.put_u32(crc);
}

fn put_string(dst: &mut BytesMut, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst.put_u16(end as u16);
    dst.put_slice(&s.as_bytes()[..end]);
}

fn put_codec(dst: &mut BytesMut, codec: &Codec) {
    dst.put_u8(codec.kind() as u8);
    match codec {
        Codec::Bytes => {}
        Codec::Audio(a) => {
            dst.put_u32(a.sample_rate);
            dst.put_u16(a.channels);
            dst.put_u16(a.bits_per_sample);
            dst.put_u8(a.sample_format.code());
            if let SampleFormat::Coded(c) = a.sample_format {
                dst.put_u16(c.tag);
                dst.put_u16(c.block_align.max(1));
                dst.put_u32(c.samples_per_block);
            }
        }
        Codec::Video(v) => {
            dst.put_u8(v.format as u8);
            dst.put_u32(v.width);
            dst.put_u32(v.height);
            dst.put_u32(v.fps_num);
            dst.put_u32(v.fps_den.max(1));
        }
        Codec::Image(i) => {
            dst.put_u8(i.format as u8);
            dst.put_u32(i.width);
            dst.put_u32(i.height);
            dst.put_u8(i.color);
        }
    }
}
