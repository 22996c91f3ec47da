//! Each frame's byte layout, its read and its write side by side (one section per frame type,
//! in type order), with a named constant for every flag bit and enumerated value. The
//! specification of the same layouts is `docs/PROTOCOL.md`; `docs/golden/frames.json` holds
//! their bytes.
//!
//! Every body starts after the type byte. All integers are big-endian; a string is a `u16`
//! byte length then UTF-8; an optional `u64` is [`UNKNOWN`] when absent.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, ErrorCode};
use crate::media::{
    AudioParams, Codec, CodedAudio, ImageParams, MediaKind, SampleFormat, VideoParams, VisualFormat,
};
use crate::wire::chunk::{Chunk, ChunkFlags, StreamId};
use crate::wire::codec::Limits;
use crate::wire::frame::{
    Caps, Catalog, Chat, ChatKind, Entry, ErrorFrame, FileDigest, Frame, FrameType, Hello, MAGIC,
    MAX_CHAT_TEXT, MAX_RELAY_PATH, Mode, Open, Opened, Resume, Welcome,
};

/// Sentinel for "unknown" in optional `u64` fields.
pub(crate) const UNKNOWN: u64 = u64::MAX;

/// A frame body being read: each read checks that the bytes are there, and names the frame in
/// the error when they are not.
pub(crate) struct Reader<'a> {
    pub(crate) buf: Bytes,
    pub(crate) what: &'static str,
    pub(crate) limits: &'a Limits,
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
    fn stream(&mut self) -> Result<StreamId, DecodeError> {
        Ok(StreamId(self.u32()?))
    }
    fn code(&mut self) -> Result<ErrorCode, DecodeError> {
        Ok(ErrorCode::from_u16(self.u16()?))
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
    /// Whether the body has bytes left (an optional trailing field is present).
    fn has_more(&self) -> bool {
        self.buf.has_remaining()
    }
}

fn invalid(field: &'static str, value: impl Into<u64>) -> DecodeError {
    DecodeError::InvalidField {
        field,
        value: value.into(),
    }
}

/// Writes a string, cut at 65535 bytes (the length field's width) on a character boundary, so
/// that encoding never fails; a string over the peer's limit is the caller's bug.
fn put_string(dst: &mut BytesMut, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst.put_u16(end as u16);
    dst.put_slice(&s.as_bytes()[..end]);
}

fn put_opt_u64(dst: &mut BytesMut, v: Option<u64>) {
    dst.put_u64(v.unwrap_or(UNKNOWN));
}

// --- HELLO: magic [4] | min_version u16 | max_version u16 | caps u32 | token str | client_name str

pub(crate) fn read_hello(r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
    if r.bytes(MAGIC.len())? != MAGIC[..] {
        return Err(DecodeError::BadMagic);
    }
    Ok(Hello {
        min_version: r.u16()?,
        max_version: r.u16()?,
        caps: Caps(r.u32()?),
        token: r.string()?,
        client_name: r.string()?,
    })
}

pub(crate) fn write_hello(h: &Hello, dst: &mut BytesMut) {
    dst.put_slice(&MAGIC);
    dst.put_u16(h.min_version);
    dst.put_u16(h.max_version);
    dst.put_u32(h.caps.0);
    put_string(dst, &h.token);
    put_string(dst, &h.client_name);
}

// --- WELCOME: version u16 | caps u32 | session_id u64 | server_name str

pub(crate) fn read_welcome(r: &mut Reader<'_>) -> Result<Welcome, DecodeError> {
    Ok(Welcome {
        version: r.u16()?,
        caps: Caps(r.u32()?),
        session_id: r.u64()?,
        server_name: r.string()?,
    })
}

pub(crate) fn write_welcome(w: &Welcome, dst: &mut BytesMut) {
    dst.put_u16(w.version);
    dst.put_u32(w.caps.0);
    dst.put_u64(w.session_id);
    put_string(dst, &w.server_name);
}

// --- ERROR: request u32 | code u16 | message str

pub(crate) fn read_error(r: &mut Reader<'_>) -> Result<ErrorFrame, DecodeError> {
    Ok(ErrorFrame {
        request: r.u32()?,
        code: r.code()?,
        message: r.string()?,
    })
}

pub(crate) fn write_error(e: &ErrorFrame, dst: &mut BytesMut) {
    dst.put_u32(e.request);
    dst.put_u16(e.code.to_u16());
    put_string(dst, &e.message);
}

// --- PING: nonce u64 | time_us u64

pub(crate) fn read_ping(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Ping {
        nonce: r.u64()?,
        time_us: r.u64()?,
    })
}

pub(crate) fn write_ping(nonce: u64, time_us: u64, dst: &mut BytesMut) {
    dst.put_u64(nonce);
    dst.put_u64(time_us);
}

// --- PONG: nonce u64 | echo_us u64 | time_us u64

pub(crate) fn read_pong(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Pong {
        nonce: r.u64()?,
        echo_us: r.u64()?,
        time_us: r.u64()?,
    })
}

pub(crate) fn write_pong(nonce: u64, echo_us: u64, time_us: u64, dst: &mut BytesMut) {
    dst.put_u64(nonce);
    dst.put_u64(echo_us);
    dst.put_u64(time_us);
}

// --- LIST: request u32 | prefix str

pub(crate) fn read_list(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::List {
        request: r.u32()?,
        prefix: r.string()?,
    })
}

pub(crate) fn write_list(request: u32, prefix: &str, dst: &mut BytesMut) {
    dst.put_u32(request);
    put_string(dst, prefix);
}

// --- CATALOG: request u32 | flags u8 | count u16 | count × entry
//     entry: path str | codec | size opt_u64 | duration_us opt_u64 | viewers u32
//            [| note str, when flags has CATALOG_NOTES]

/// `CATALOG` flags: this is the listing's final part.
pub(crate) const CATALOG_LAST: u8 = 0x01;
/// `CATALOG` flags: every entry ends with a note string (only sent with `Caps::ANY_FILE`).
pub(crate) const CATALOG_NOTES: u8 = 0x02;
/// Every `CATALOG` flag this version defines; others are rejected.
const CATALOG_FLAGS: u8 = CATALOG_LAST | CATALOG_NOTES;
/// The fewest bytes an entry takes (empty path, bytes codec, no note), so that a count the
/// body cannot hold is refused before a `Vec` is sized by it.
const MIN_ENTRY_LEN: usize = 2 + 1 + 8 + 8 + 4;

pub(crate) fn read_catalog(r: &mut Reader<'_>) -> Result<Catalog, DecodeError> {
    let request = r.u32()?;
    let flags = r.u8()?;
    if flags & !CATALOG_FLAGS != 0 {
        return Err(invalid("catalog flags", flags));
    }
    let notes = flags & CATALOG_NOTES != 0;
    let count = usize::from(r.u16()?);
    if count > r.limits.max_list_len {
        return Err(DecodeError::ListTooLong {
            len: count,
            max: r.limits.max_list_len,
        });
    }
    if count.saturating_mul(MIN_ENTRY_LEN) > r.buf.remaining() {
        return Err(DecodeError::Truncated(r.what));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(Entry {
            path: r.string()?,
            codec: read_codec(r)?,
            size: r.opt_u64()?,
            duration_us: r.opt_u64()?,
            viewers: r.u32()?,
            note: if notes { r.note()? } else { None },
        });
    }
    Ok(Catalog {
        request,
        last: flags & CATALOG_LAST != 0,
        entries,
    })
}

pub(crate) fn write_catalog(c: &Catalog, dst: &mut BytesMut) {
    dst.put_u32(c.request);
    let n = c.entries.len().min(usize::from(u16::MAX));
    let entries = &c.entries[..n];
    let notes = entries.iter().any(|e| e.note.is_some());
    let mut flags = 0;
    if c.last {
        flags |= CATALOG_LAST;
    }
    if notes {
        flags |= CATALOG_NOTES;
    }
    dst.put_u8(flags);
    dst.put_u16(n as u16);
    for e in entries {
        put_string(dst, &e.path);
        write_codec(&e.codec, dst);
        put_opt_u64(dst, e.size);
        put_opt_u64(dst, e.duration_us);
        dst.put_u32(e.viewers);
        if notes {
            put_string(dst, e.note.as_deref().unwrap_or(""));
        }
    }
}

// --- OPEN: request u32 | stream u32 | flags u8 | resume_kind u8 | resume_at u64
//           | chunk_size u32 | path str

/// `OPEN` flags: paced by timestamps ([`Mode::Realtime`]); clear for [`Mode::Download`].
pub(crate) const OPEN_REALTIME: u8 = 0x01;
/// `OPEN` flags: lz4 where it pays.
pub(crate) const OPEN_COMPRESS: u8 = 0x02;
/// `OPEN` flags: serve as bytes whatever the format.
pub(crate) const OPEN_RAW: u8 = 0x04;
/// `OPEN` flags: serve a progressive MP4 as fragmented MP4 (init segment, then fragments).
pub(crate) const OPEN_FRAGMENT: u8 = 0x08;
/// `OPEN` flags: the client verifies every chunk against the tree; header-only CRCs welcome.
pub(crate) const OPEN_HEADER_CRC: u8 = 0x10;
/// Every `OPEN` flag this version defines; others are rejected.
const OPEN_FLAGS: u8 = OPEN_REALTIME | OPEN_COMPRESS | OPEN_RAW | OPEN_FRAGMENT | OPEN_HEADER_CRC;
/// `OPEN` resume kind: from the start (`resume_at` ignored, sent as 0).
pub(crate) const RESUME_START: u8 = 0;
/// `OPEN` resume kind: from chunk sequence number `resume_at`.
pub(crate) const RESUME_SEQ: u8 = 1;
/// `OPEN` resume kind: from byte offset `resume_at`.
pub(crate) const RESUME_OFFSET: u8 = 2;

pub(crate) fn read_open(r: &mut Reader<'_>) -> Result<Open, DecodeError> {
    let request = r.u32()?;
    let stream = r.stream()?;
    let flags = r.u8()?;
    if flags & !OPEN_FLAGS != 0 {
        return Err(invalid("open flags", flags));
    }
    let kind = r.u8()?;
    let at = r.u64()?;
    let resume = match kind {
        RESUME_START => Resume::Start,
        RESUME_SEQ => Resume::Seq(at),
        RESUME_OFFSET => Resume::Offset(at),
        v => return Err(invalid("resume", v)),
    };
    Ok(Open {
        request,
        stream,
        chunk_size: r.u32()?,
        path: r.string()?,
        mode: if flags & OPEN_REALTIME != 0 {
            Mode::Realtime
        } else {
            Mode::Download
        },
        resume,
        compress: flags & OPEN_COMPRESS != 0,
        raw: flags & OPEN_RAW != 0,
        fragment: flags & OPEN_FRAGMENT != 0,
        header_crc: flags & OPEN_HEADER_CRC != 0,
    })
}

pub(crate) fn write_open(o: &Open, dst: &mut BytesMut) {
    dst.put_u32(o.request);
    dst.put_u32(o.stream.0);
    let mut flags = 0;
    if o.mode == Mode::Realtime {
        flags |= OPEN_REALTIME;
    }
    if o.compress {
        flags |= OPEN_COMPRESS;
    }
    if o.raw {
        flags |= OPEN_RAW;
    }
    if o.fragment {
        flags |= OPEN_FRAGMENT;
    }
    if o.header_crc {
        flags |= OPEN_HEADER_CRC;
    }
    dst.put_u8(flags);
    let (kind, at) = match o.resume {
        Resume::Start => (RESUME_START, 0),
        Resume::Seq(s) => (RESUME_SEQ, s),
        Resume::Offset(o) => (RESUME_OFFSET, o),
    };
    dst.put_u8(kind);
    dst.put_u64(at);
    dst.put_u32(o.chunk_size);
    put_string(dst, &o.path);
}

// --- OPENED: request u32 | stream u32 | codec | total_len opt_u64 | chunk_count opt_u64
//             | duration_us opt_u64 | digest_kind u8 [| digest [32], when DIGEST_KNOWN]
//             | start_seq u64 | start_offset u64 | chunk_size u32 [| note str]

/// `OPENED` digest kind: no digest (live channels).
pub(crate) const DIGEST_NONE: u8 = 0;
/// `OPENED` digest kind: the 32-byte digest follows.
pub(crate) const DIGEST_KNOWN: u8 = 1;
/// `OPENED` digest kind: a `DIGEST` frame follows the stream's last chunk.
pub(crate) const DIGEST_AT_END: u8 = 2;

pub(crate) fn read_opened(r: &mut Reader<'_>) -> Result<Opened, DecodeError> {
    Ok(Opened {
        request: r.u32()?,
        stream: r.stream()?,
        codec: read_codec(r)?,
        total_len: r.opt_u64()?,
        chunk_count: r.opt_u64()?,
        duration_us: r.opt_u64()?,
        digest: match r.u8()? {
            DIGEST_NONE => FileDigest::None,
            DIGEST_KNOWN => FileDigest::Known(r.array32()?),
            DIGEST_AT_END => FileDigest::AtEnd,
            v => return Err(invalid("digest kind", v)),
        },
        start_seq: r.u64()?,
        start_offset: r.u64()?,
        chunk_size: r.u32()?,
        // Present only when sent to a peer with `Caps::ANY_FILE`: the rest of the body.
        note: if r.has_more() { r.note()? } else { None },
    })
}

pub(crate) fn write_opened(o: &Opened, dst: &mut BytesMut) {
    dst.put_u32(o.request);
    dst.put_u32(o.stream.0);
    write_codec(&o.codec, dst);
    put_opt_u64(dst, o.total_len);
    put_opt_u64(dst, o.chunk_count);
    put_opt_u64(dst, o.duration_us);
    match &o.digest {
        FileDigest::None => dst.put_u8(DIGEST_NONE),
        FileDigest::Known(d) => {
            dst.put_u8(DIGEST_KNOWN);
            dst.put_slice(d);
        }
        FileDigest::AtEnd => dst.put_u8(DIGEST_AT_END),
    }
    dst.put_u64(o.start_seq);
    dst.put_u64(o.start_offset);
    dst.put_u32(o.chunk_size);
    if let Some(note) = o.note.as_deref().filter(|n| !n.is_empty()) {
        put_string(dst, note);
    }
}

// --- CHUNK: stream u32 | seq u64 | offset u64 | pts_us u64 | duration_us u32 | flags u8
//            | raw_len u32 | crc u32 | payload (the rest)
//     crc: CRC32C over the header fields before it, then the payload (the header fields only
//     with HEADER_CRC).

/// Bytes of the chunk header after the type byte, the CRC included.
pub(crate) const CHUNK_HEADER_LEN: usize = 4 + 8 + 8 + 8 + 4 + 1 + 4 + CHUNK_CRC_LEN;
/// Width of the CRC32C field, the header's last.
const CHUNK_CRC_LEN: usize = 4;

/// Reads a chunk body. The payload is a slice of `body`: no copy, whatever its size.
#[inline]
pub(crate) fn read_chunk(mut body: Bytes) -> Result<Chunk, DecodeError> {
    if body.len() < CHUNK_HEADER_LEN {
        return Err(DecodeError::Truncated(FrameType::Chunk.name()));
    }
    let covered = crc32c::crc32c(&body[..CHUNK_HEADER_LEN - CHUNK_CRC_LEN]);
    let stream = StreamId(body.get_u32());
    let seq = body.get_u64();
    let offset = body.get_u64();
    let pts_us = body.get_u64();
    let duration_us = body.get_u32();
    let flags = ChunkFlags(body.get_u8());
    let raw_len = body.get_u32();
    let crc = body.get_u32();
    let expected = if flags.contains(ChunkFlags::HEADER_CRC) {
        covered
    } else {
        crc32c::crc32c_append(covered, &body)
    };
    if expected != crc {
        return Err(DecodeError::Checksum { stream, seq });
    }
    if !ChunkFlags::ALL.contains(flags) {
        return Err(invalid("chunk flags", flags.0));
    }
    if !flags.contains(ChunkFlags::COMPRESSED) && raw_len as usize != body.len() {
        return Err(invalid("chunk raw_len", raw_len));
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

/// Writes a chunk's header, CRC included, but not its payload (which the CRC covers, unless
/// [`ChunkFlags::HEADER_CRC`]): the caller sends the payload by reference.
#[inline]
pub(crate) fn write_chunk_header(c: &Chunk, dst: &mut BytesMut) {
    let fields = dst.len();
    dst.put_u32(c.stream.0);
    dst.put_u64(c.seq);
    dst.put_u64(c.offset);
    dst.put_u64(c.pts_us);
    dst.put_u32(c.duration_us);
    dst.put_u8(c.flags.0);
    dst.put_u32(c.raw_len);
    let mut crc = crc32c::crc32c(&dst[fields..]);
    if !c.flags.contains(ChunkFlags::HEADER_CRC) {
        crc = crc32c::crc32c_append(crc, &c.payload);
    }
    dst.put_u32(crc);
}

// --- CLOSE: stream u32 | code u16 | message str

pub(crate) fn read_close(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Close {
        stream: r.stream()?,
        code: r.code()?,
        message: r.string()?,
    })
}

pub(crate) fn write_close(stream: StreamId, code: ErrorCode, message: &str, dst: &mut BytesMut) {
    dst.put_u32(stream.0);
    dst.put_u16(code.to_u16());
    put_string(dst, message);
}

// --- PUBLISH: request u32 | stream u32 | channel str | codec

pub(crate) fn read_publish(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Publish {
        request: r.u32()?,
        stream: r.stream()?,
        channel: r.string()?,
        codec: read_codec(r)?,
    })
}

pub(crate) fn write_publish(
    request: u32,
    stream: StreamId,
    channel: &str,
    codec: &Codec,
    dst: &mut BytesMut,
) {
    dst.put_u32(request);
    dst.put_u32(stream.0);
    put_string(dst, channel);
    write_codec(codec, dst);
}

// --- SUBSCRIBE: request u32 | stream u32 | channel str

pub(crate) fn read_subscribe(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Subscribe {
        request: r.u32()?,
        stream: r.stream()?,
        channel: r.string()?,
    })
}

pub(crate) fn write_subscribe(request: u32, stream: StreamId, channel: &str, dst: &mut BytesMut) {
    dst.put_u32(request);
    dst.put_u32(stream.0);
    put_string(dst, channel);
}

// --- GOODBYE: code u16 | message str

pub(crate) fn read_goodbye(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Goodbye {
        code: r.code()?,
        message: r.string()?,
    })
}

pub(crate) fn write_goodbye(code: ErrorCode, message: &str, dst: &mut BytesMut) {
    dst.put_u16(code.to_u16());
    put_string(dst, message);
}

// --- DIGEST: stream u32 | digest [32]

pub(crate) fn read_digest(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(Frame::Digest {
        stream: r.stream()?,
        digest: r.array32()?,
    })
}

pub(crate) fn write_digest(stream: StreamId, digest: &[u8; 32], dst: &mut BytesMut) {
    dst.put_u32(stream.0);
    dst.put_slice(digest);
}

// --- PROOF: stream u32 | count u16 | count × node [64]
//     node: left child CV [32] | right child CV [32]

use crate::verify::MAX_PROOF_NODES;

pub(crate) fn read_proof(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let stream = r.stream()?;
    let count = usize::from(r.u16()?);
    if count > MAX_PROOF_NODES {
        return Err(DecodeError::ListTooLong {
            len: count,
            max: MAX_PROOF_NODES,
        });
    }
    Ok(Frame::Proof {
        stream,
        nodes: r.bytes(count * crate::verify::NODE_LEN)?,
    })
}

pub(crate) fn write_proof(stream: StreamId, nodes: &Bytes, dst: &mut BytesMut) {
    let count = (nodes.len() / crate::verify::NODE_LEN).min(MAX_PROOF_NODES);
    dst.put_u32(stream.0);
    dst.put_u16(count as u16);
    dst.put_slice(&nodes[..count * crate::verify::NODE_LEN]);
}

// --- CHAT: kind u8 | room str | author u64 | seq u64 | sent_us u64 | text str

pub(crate) fn read_chat(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let kind = r.u8()?;
    let kind = ChatKind::from_u8(kind).ok_or(invalid("chat kind", kind))?;
    let room = r.string()?;
    let (author, seq, sent_us) = (r.u64()?, r.u64()?, r.u64()?);
    let text = r.string()?;
    if text.len() > MAX_CHAT_TEXT {
        return Err(DecodeError::StringTooLong {
            len: text.len(),
            max: MAX_CHAT_TEXT,
        });
    }
    Ok(Frame::Chat(Chat {
        kind,
        room,
        author,
        seq,
        sent_us,
        text,
    }))
}

pub(crate) fn write_chat(c: &Chat, dst: &mut BytesMut) {
    dst.put_u8(c.kind.to_u8());
    put_string(dst, &c.room);
    dst.put_u64(c.author);
    dst.put_u64(c.seq);
    dst.put_u64(c.sent_us);
    put_string(dst, &c.text);
}

// --- RELAY: count u8 | id u64 × count

pub(crate) fn read_relay(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let count = r.u8()?;
    let path = (0..count).map(|_| r.u64()).collect::<Result<_, _>>()?;
    Ok(Frame::Relay { path })
}

pub(crate) fn write_relay(path: &[u64], dst: &mut BytesMut) {
    let path = &path[..path.len().min(MAX_RELAY_PATH)];
    dst.put_u8(path.len() as u8);
    for &id in path {
        dst.put_u64(id);
    }
}

// --- codec (in OPENED, CATALOG entries, PUBLISH): kind u8, then by kind:
//     bytes: nothing
//     audio: sample_rate u32 | channels u16 | bits_per_sample u16 | sample_format u8
//            [| tag u16 | block_align u16 | samples_per_block u32, when SAMPLE_CODED]
//     video: format u8 | width u32 | height u32 | fps_num u32 | fps_den u32
//     image: format u8 | width u32 | height u32 | color u8

/// Audio sample format: linear integer PCM.
const SAMPLE_INT: u8 = 0;
/// Audio sample format: IEEE float PCM.
const SAMPLE_FLOAT: u8 = 1;
/// Audio sample format: G.711 µ-law.
const SAMPLE_MULAW: u8 = 2;
/// Audio sample format: G.711 A-law.
const SAMPLE_ALAW: u8 = 3;
/// Audio sample format: any other WAVE format tag, its block layout following.
const SAMPLE_CODED: u8 = 4;

fn read_codec(r: &mut Reader<'_>) -> Result<Codec, DecodeError> {
    let kind = r.u8()?;
    let kind = MediaKind::from_code(kind).ok_or(invalid("media kind", kind))?;
    Ok(match kind {
        MediaKind::Bytes => Codec::Bytes,
        MediaKind::Audio => {
            let sample_rate = r.u32()?;
            let channels = r.u16()?;
            let bits_per_sample = r.u16()?;
            let sample_format = match r.u8()? {
                SAMPLE_INT => SampleFormat::Int,
                SAMPLE_FLOAT => SampleFormat::Float,
                SAMPLE_MULAW => SampleFormat::MuLaw,
                SAMPLE_ALAW => SampleFormat::ALaw,
                SAMPLE_CODED => SampleFormat::Coded(CodedAudio {
                    tag: r.u16()?,
                    block_align: match r.u16()? {
                        0 => return Err(invalid("block_align", 0u8)),
                        b => b,
                    },
                    samples_per_block: r.u32()?,
                }),
                v => return Err(invalid("sample format", v)),
            };
            Codec::Audio(AudioParams {
                sample_rate,
                channels,
                bits_per_sample,
                sample_format,
            })
        }
        MediaKind::Video => Codec::Video(VideoParams {
            format: read_format(r)?,
            width: r.u32()?,
            height: r.u32()?,
            fps_num: r.u32()?,
            fps_den: match r.u32()? {
                0 => return Err(invalid("fps_den", 0u8)),
                d => d,
            },
        }),
        MediaKind::Image => Codec::Image(ImageParams {
            format: read_format(r)?,
            width: r.u32()?,
            height: r.u32()?,
            color: r.u8()?,
        }),
    })
}

fn write_codec(codec: &Codec, dst: &mut BytesMut) {
    dst.put_u8(codec.kind() as u8);
    match codec {
        Codec::Bytes => {}
        Codec::Audio(a) => {
            dst.put_u32(a.sample_rate);
            dst.put_u16(a.channels);
            dst.put_u16(a.bits_per_sample);
            match a.sample_format {
                SampleFormat::Int => dst.put_u8(SAMPLE_INT),
                SampleFormat::Float => dst.put_u8(SAMPLE_FLOAT),
                SampleFormat::MuLaw => dst.put_u8(SAMPLE_MULAW),
                SampleFormat::ALaw => dst.put_u8(SAMPLE_ALAW),
                SampleFormat::Coded(c) => {
                    dst.put_u8(SAMPLE_CODED);
                    dst.put_u16(c.tag);
                    // 0 is refused by the reader: a block has at least one byte.
                    dst.put_u16(c.block_align.max(1));
                    dst.put_u32(c.samples_per_block);
                }
            }
        }
        Codec::Video(v) => {
            dst.put_u8(v.format as u8);
            dst.put_u32(v.width);
            dst.put_u32(v.height);
            dst.put_u32(v.fps_num);
            // 0 is refused by the reader: it would divide by zero.
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

fn read_format(r: &mut Reader<'_>) -> Result<VisualFormat, DecodeError> {
    let v = r.u8()?;
    VisualFormat::from_code(v).ok_or(invalid("visual format", v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample format codes here and `SampleFormat::code` (which the media layer uses for
    /// the same numbers) agree.
    #[test]
    fn sample_format_codes_agree_with_media() {
        let coded = SampleFormat::Coded(CodedAudio {
            tag: 0x11,
            block_align: 1,
            samples_per_block: 1,
        });
        let pairs = [
            (SampleFormat::Int, SAMPLE_INT),
            (SampleFormat::Float, SAMPLE_FLOAT),
            (SampleFormat::MuLaw, SAMPLE_MULAW),
            (SampleFormat::ALaw, SAMPLE_ALAW),
            (coded, SAMPLE_CODED),
        ];
        for (format, code) in pairs {
            assert_eq!(format.code(), code, "{format:?}");
        }
    }

    #[test]
    fn chunk_header_is_41_bytes() {
        assert_eq!(CHUNK_HEADER_LEN, 41);
    }
}
