//! The bytes layout: opaque files (MKV, WebM, AVI, unknown, anything with [`Config::raw`]) cut
//! at the chunk size, every chunk its own key unit with pts 0.
//!
//! [`Config::raw`]: super::Config::raw

use super::packetizer::{Kind, Layout, Probed};
use chunkcast_protocol::media::Codec;

/// How many pieces of at most `chunk_size` bytes `len` bytes make (0 for 0).
pub(crate) fn pieces(len: u64, chunk_size: usize) -> u64 {
    len.div_ceil(chunk_size as u64)
}

/// A bytes stream of `len` bytes; `warning` says why a file that looked like media is served
/// as bytes.
pub(crate) fn probed(len: u64, chunk_size: usize, warning: Option<String>) -> Probed {
    Probed {
        codec: Codec::Bytes,
        layout: Layout::Whole(Kind::Bytes),
        duration_us: None,
        // An empty file is still one (empty, END_OF_STREAM) chunk.
        chunk_count: Some(pieces(len, chunk_size).max(1)),
        warning,
    }
}
