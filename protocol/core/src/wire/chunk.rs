//! The chunk: one timed, sequenced piece of a stream, as it travels on the wire.

use bytes::Bytes;

/// Identifies one stream within a connection. The client chooses it at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The per-chunk flag bits (see `docs/PROTOCOL.md`, "Chunk").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChunkFlags(pub u8);

impl ChunkFlags {
    /// The unit this chunk belongs to can be decoded on its own (every audio chunk, every
    /// MJPEG/Y4M frame, MP4 sync samples).
    pub const KEY: Self = Self(0x01);
    /// Not media: container header or trailer bytes (WAV header, MP4 `moov`, ...), needed to
    /// rebuild the file byte for byte.
    pub const INIT: Self = Self(0x02);
    /// The last piece of a media unit (a frame split over several chunks).
    pub const END_OF_UNIT: Self = Self(0x04);
    /// The last chunk of the stream.
    pub const END_OF_STREAM: Self = Self(0x08);
    /// The payload is one lz4 block; `raw_len` is its decompressed size.
    pub const COMPRESSED: Self = Self(0x10);
    /// The `crc` covers the header fields only, not the payload: the payload is proven by the
    /// stream's hash tree instead (`PROOF` frames, [`crate::verify`]). Only on a verified
    /// stream, to a peer that offered [`crate::Caps::HEADER_CRC`]; a receiver refuses it on any
    /// other stream. Neither end then passes over the payload for a CRC (over TLS and QUIC,
    /// whose AEAD already rejects altered bytes, it was a second check of the same bytes).
    pub const HEADER_CRC: Self = Self(0x20);
    /// Every bit this version defines; others are rejected by the decoder.
    pub const ALL: Self = Self(0x3f);

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags with `other`'s bits set too.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These flags with `other`'s bits cleared.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl std::ops::BitOr for ChunkFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

/// One chunk of a stream.
///
/// `payload` is a slice of the buffer it was decoded from (no copy); when `flags` has
/// [`ChunkFlags::COMPRESSED`] it is an lz4 block that [`crate::compress::decompress`] expands to
/// `raw_len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Position in the stream, from 0 at the stream's first chunk, without gaps.
    pub seq: u64,
    /// Byte offset of the (uncompressed) payload in the source file, so that a receiver can
    /// place it without counting, and resume from a byte offset.
    pub offset: u64,
    /// Presentation time of the unit this chunk belongs to, in microseconds from the stream's
    /// start. Init chunks and bytes streams carry 0.
    pub pts_us: u64,
    /// Duration of that unit in microseconds (0 when untimed).
    pub duration_us: u32,
    /// See [`ChunkFlags`].
    pub flags: ChunkFlags,
    /// Length of the payload once decompressed (equal to `payload.len()` when uncompressed).
    pub raw_len: u32,
    /// The bytes.
    pub payload: Bytes,
}

impl Chunk {
    /// An uncompressed chunk with `raw_len` set from the payload.
    pub fn new(
        stream: StreamId,
        seq: u64,
        offset: u64,
        pts_us: u64,
        duration_us: u32,
        flags: ChunkFlags,
        payload: Bytes,
    ) -> Self {
        let raw_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        Self {
            stream,
            seq,
            offset,
            pts_us,
            duration_us,
            flags,
            raw_len,
            payload,
        }
    }

    /// Whether this chunk carries the given flag(s).
    pub fn has(&self, flag: ChunkFlags) -> bool {
        self.flags.contains(flag)
    }
}
