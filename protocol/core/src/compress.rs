//! Per-chunk lz4: applied only where it pays, and expanded only up to a bound.
//!
//! lz4 on PCM audio runs near 0.5 GB/s on the reference machine, slower than loopback TCP
//! (see `../shared/machine-limits.md`), so [`Compressor`] keeps a chunk compressed only when it
//! shrinks by at least an eighth, and after a run of misses stops trying for a while: a random
//! or already-compressed stream then costs almost nothing.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::wire::chunk::{Chunk, ChunkFlags};

/// A chunk is kept compressed only when its lz4 block is at most 7/8 of the raw size: below
/// that saving the receiver's decompression costs more time than the bytes saved on loopback.
const KEEP_NUMERATOR: usize = 7;
const KEEP_DENOMINATOR: usize = 8;
/// Misses in a row after which the compressor pauses.
const MISSES_BEFORE_PAUSE: u32 = 4;
/// Chunks sent uncompressed during a pause before trying again, so that a stream whose
/// content changes (a WAV's silence after its music) is re-probed.
const PAUSE_CHUNKS: u32 = 64;

/// The sender's per-stream compression state.
#[derive(Debug, Clone, Default)]
pub struct Compressor {
    misses: u32,
    paused_for: u32,
    /// Chunks sent compressed.
    pub compressed: u64,
    /// Raw bytes of the chunks sent compressed.
    pub raw_bytes: u64,
    /// Wire bytes of the chunks sent compressed.
    pub wire_bytes: u64,
}

impl Compressor {
    /// A compressor that tries every chunk until it learns otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns `chunk` compressed if that pays, otherwise unchanged.
    pub fn apply(&mut self, chunk: Chunk) -> Chunk {
        if chunk.payload.len() < 64 || chunk.has(ChunkFlags::COMPRESSED) {
            return chunk;
        }
        if self.paused_for > 0 {
            self.paused_for -= 1;
            return chunk;
        }
        let block = lz4_flex::block::compress(&chunk.payload);
        if block.len() * KEEP_DENOMINATOR > chunk.payload.len() * KEEP_NUMERATOR {
            self.misses += 1;
            if self.misses >= MISSES_BEFORE_PAUSE {
                self.misses = 0;
                self.paused_for = PAUSE_CHUNKS;
            }
            return chunk;
        }
        self.misses = 0;
        self.compressed += 1;
        self.raw_bytes += chunk.payload.len() as u64;
        self.wire_bytes += block.len() as u64;
        Chunk {
            flags: chunk.flags.with(ChunkFlags::COMPRESSED),
            raw_len: chunk.raw_len,
            payload: Bytes::from(block),
            ..chunk
        }
    }
}

/// Expands a compressed chunk; returns an uncompressed one unchanged.
///
/// `max_len` bounds the output (the session's maximum payload): the declared `raw_len` is
/// checked before anything is allocated, and the block must expand to exactly `raw_len`.
pub fn decompress(chunk: Chunk, max_len: usize) -> Result<Chunk, DecodeError> {
    if !chunk.has(ChunkFlags::COMPRESSED) {
        return Ok(chunk);
    }
    let fail = |reason| DecodeError::Decompress {
        stream: chunk.stream,
        seq: chunk.seq,
        reason,
    };
    let raw_len = chunk.raw_len as usize;
    if raw_len > max_len {
        return Err(fail("declared size above the limit"));
    }
    let mut out = vec![0; raw_len];
    let n = lz4_flex::block::decompress_into(&chunk.payload, &mut out)
        .map_err(|_| fail("not a valid lz4 block"))?;
    if n != raw_len {
        return Err(fail("expands to fewer bytes than declared"));
    }
    Ok(Chunk {
        flags: chunk.flags.without(ChunkFlags::COMPRESSED),
        payload: Bytes::from(out),
        ..chunk
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::chunk::StreamId;

    fn chunk(payload: Vec<u8>) -> Chunk {
        Chunk::new(
            StreamId(1),
            0,
            0,
            0,
            0,
            ChunkFlags::empty(),
            Bytes::from(payload),
        )
    }

    #[test]
    fn compressible_chunk_round_trips() {
        let raw: Vec<u8> = (0..65536u32).map(|i| (i / 64) as u8).collect();
        let mut c = Compressor::new();
        let sent = c.apply(chunk(raw.clone()));
        assert!(sent.has(ChunkFlags::COMPRESSED));
        assert!(sent.payload.len() < raw.len() / 8);
        let back = decompress(sent, 1 << 20).unwrap();
        assert_eq!(back.payload, raw);
        assert!(!back.has(ChunkFlags::COMPRESSED));
    }

    #[test]
    fn incompressible_chunks_stay_raw_and_pause_the_compressor() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut noise = || {
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<u8>>()
        };
        let mut c = Compressor::new();
        for _ in 0..MISSES_BEFORE_PAUSE {
            assert!(!c.apply(chunk(noise())).has(ChunkFlags::COMPRESSED));
        }
        assert_eq!(c.paused_for, PAUSE_CHUNKS);
        // While paused even a compressible chunk goes raw: the point of pausing is not to try.
        assert!(!c.apply(chunk(vec![0; 4096])).has(ChunkFlags::COMPRESSED));
    }

    #[test]
    fn decompression_bomb_is_refused_before_allocating() {
        let mut bomb = chunk(lz4_flex::block::compress(&[0u8; 1024]));
        bomb.flags = ChunkFlags::COMPRESSED;
        bomb.raw_len = u32::MAX;
        assert!(matches!(
            decompress(bomb, 1 << 20),
            Err(DecodeError::Decompress { .. })
        ));
    }

    #[test]
    fn short_or_garbage_blocks_are_errors() {
        let mut lying = chunk(lz4_flex::block::compress(&[7u8; 1000]));
        lying.flags = ChunkFlags::COMPRESSED;
        lying.raw_len = 2000;
        assert!(decompress(lying, 1 << 20).is_err());
        let mut garbage = chunk(vec![0xff; 100]);
        garbage.flags = ChunkFlags::COMPRESSED;
        garbage.raw_len = 1000;
        assert!(decompress(garbage, 1 << 20).is_err());
    }
}
