//! Reassembly: chunks in any order → in-order writes, with gap reporting and a BLAKE3 check.
//!
//! Sans-IO: [`Reassembler::push`] takes chunks as they arrive (out of order, duplicated);
//! [`Reassembler::poll_write`] hands out the bytes that are now contiguous, in file order, for
//! the driver to append to the output file, so the file is never held in memory. Out-of-order
//! chunks wait in a reorder buffer bounded by [`Expect::max_pending_bytes`] (which also counts
//! bytes ready but not yet polled). The digest is computed as bytes leave `poll_write`.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags};

/// The default bound of the reorder buffer: 32 MiB.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 32 << 20;

/// What the receiver knows about the file before its chunks arrive.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Expect {
    /// The file length, when announced.
    pub total_len: Option<u64>,
    /// The number of chunks, when announced.
    pub chunk_count: Option<u64>,
    /// The BLAKE3 hash of the whole file, when announced.
    pub digest: Option<[u8; 32]>,
    /// The first chunk expected (0, or where a resumed transfer restarts).
    pub start_seq: u64,
    /// The file offset of chunk `start_seq` (the bytes already on disk when resuming).
    pub start_offset: u64,
    /// A hasher fed with the bytes `0..start_offset` already on disk, so that the digest can be
    /// checked over the whole file after a resume.
    pub prefix: Option<blake3::Hasher>,
    /// Bound on bytes held (out-of-order chunks plus in-order bytes not yet polled).
    pub max_pending_bytes: usize,
    /// Whether to hash the bytes for a whole-file digest as they leave `poll_write`; off when
    /// the caller verifies them another way (a verified stream's tree), so that each byte is
    /// hashed once.
    pub digest_pass: bool,
}

impl Expect {
    /// Nothing known, starting at 0, with [`DEFAULT_MAX_PENDING_BYTES`].
    pub fn new() -> Self {
        Self {
            total_len: None,
            chunk_count: None,
            digest: None,
            start_seq: 0,
            start_offset: 0,
            prefix: None,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            digest_pass: true,
        }
    }
}

impl Default for Expect {
    fn default() -> Self {
        Self::new()
    }
}

/// Why chunks could not be reassembled into the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// A chunk still compressed: decompress before pushing.
    #[error("chunk {seq} is still compressed")]
    Compressed {
        /// Its sequence number.
        seq: u64,
    },
    /// A chunk that contradicts what is known (offset, length, end of stream).
    #[error("chunk {seq} is inconsistent: {reason}")]
    Inconsistent {
        /// Its sequence number.
        seq: u64,
        /// What does not fit.
        reason: &'static str,
    },
    /// Holding this chunk would exceed [`Expect::max_pending_bytes`]; it was dropped (state is
    /// unchanged, so it can be pushed again once earlier chunks arrive and are polled).
    #[error("reorder buffer full: {pending} + {incoming} bytes exceed {limit}")]
    ReorderWindowExceeded {
        /// Bytes held.
        pending: usize,
        /// The dropped chunk's size.
        incoming: usize,
        /// The bound.
        limit: usize,
    },
    /// `finish` before every chunk up to `END_OF_STREAM` arrived.
    #[error("missing chunks: {missing:?}")]
    Gap {
        /// Missing sequence ranges; the last is open-ended (`..u64::MAX`) when the end of the
        /// stream was never seen.
        missing: Vec<Range<u64>>,
    },
    /// `finish` with in-order bytes not yet taken by `poll_write`.
    #[error("{bytes} bytes were never polled")]
    Unflushed {
        /// Bytes left.
        bytes: u64,
    },
    /// The stream's length differs from the announced one.
    #[error("length mismatch: expected {expected}, got {actual}")]
    LengthMismatch {
        /// Announced.
        expected: u64,
        /// Received (from offset 0).
        actual: u64,
    },
    /// The stream's chunk count differs from the announced one.
    #[error("chunk count mismatch: expected {expected}, got {actual}")]
    CountMismatch {
        /// Announced.
        expected: u64,
        /// Received (from seq 0).
        actual: u64,
    },
    /// The BLAKE3 of the bytes written differs from the announced digest.
    #[error("digest mismatch")]
    DigestMismatch {
        /// Announced.
        expected: [u8; 32],
        /// Computed.
        actual: [u8; 32],
    },
    /// A digest to check after a resume (`start_offset > 0`) without a prefix hasher.
    #[error("cannot check the digest: resumed without a prefix hasher")]
    NoPrefix,
}

/// The outcome of a complete reassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// File length.
    pub len: u64,
    /// Chunks in the stream (from seq 0).
    pub chunks: u64,
    /// Chunks received this session (excluding duplicates).
    pub received: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// BLAKE3 of the whole file (`None` after a resume without a prefix hasher).
    pub digest: Option<[u8; 32]>,
}

/// Chunks in, in-order writes out.
///
/// [`push`](Self::push) takes chunks as they arrive (out of order, duplicated);
/// [`poll_write`](Self::poll_write) hands out the bytes that are now contiguous, in file order,
/// for the driver to append to the output file, so the file is never held in memory.
/// Out-of-order chunks wait in a reorder buffer bounded by [`Expect::max_pending_bytes`]
/// (which also counts bytes ready but not yet polled; the chunk needed next is always taken,
/// so the bound holds as long as the driver polls after each push). The BLAKE3 digest is
/// computed as bytes leave `poll_write`.
#[derive(Debug)]
pub struct Reassembler {
    expect: Expect,
    hasher: Option<blake3::Hasher>,
    /// The next seq to deliver, and its offset.
    next_seq: u64,
    next_offset: u64,
    /// Out-of-order chunks by seq.
    pending: BTreeMap<u64, Chunk>,
    /// In-order bytes not yet polled: (offset, bytes).
    ready: VecDeque<(u64, Bytes)>,
    held: usize,
    highest: Option<u64>,
    end_seq: Option<u64>,
    received: u64,
    duplicates: u64,
}

impl Reassembler {
    /// A reassembler expecting chunk `expect.start_seq` at `expect.start_offset` next.
    pub fn new(mut expect: Expect) -> Self {
        let hasher = match expect.prefix.take() {
            _ if !expect.digest_pass => None,
            Some(h) => Some(h),
            None if expect.start_offset == 0 => Some(blake3::Hasher::new()),
            None => None,
        };
        Self {
            next_seq: expect.start_seq,
            next_offset: expect.start_offset,
            expect,
            hasher,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            held: 0,
            highest: None,
            end_seq: None,
            received: 0,
            duplicates: 0,
        }
    }

    /// Sets the digest that [`Self::finish`] checks, for one announced after the stream
    /// ([`chunkcast_protocol::wire::FileDigest::AtEnd`]).
    pub fn expect_digest(&mut self, digest: [u8; 32]) {
        self.expect.digest = Some(digest);
    }

    /// Accepts a decompressed chunk: duplicates are ignored (counted), out-of-order chunks
    /// wait, in-order ones become ready for [`Self::poll_write`].
    pub fn push(&mut self, chunk: Chunk) -> Result<(), ReassemblyError> {
        let seq = chunk.seq;
        let bad = |reason| Err(ReassemblyError::Inconsistent { seq, reason });
        if chunk.has(ChunkFlags::COMPRESSED) {
            return Err(ReassemblyError::Compressed { seq });
        }
        if chunk.raw_len as usize != chunk.payload.len() {
            return bad("raw_len differs from the payload length");
        }
        if seq < self.next_seq || self.pending.contains_key(&seq) {
            self.duplicates += 1;
            return Ok(());
        }
        let end = chunk.offset.checked_add(chunk.payload.len() as u64);
        let Some(end) = end else {
            return bad("offset overflows");
        };
        if self.end_seq.is_some_and(|e| seq > e) {
            return bad("after the end of the stream");
        }
        if chunk.has(ChunkFlags::END_OF_STREAM) {
            if self.end_seq.is_some_and(|e| e != seq) {
                return bad("a second end of stream");
            }
            if self.highest.is_some_and(|h| h > seq) {
                return bad("end of stream below a chunk already received");
            }
            if self.expect.total_len.is_some_and(|t| t != end) {
                return bad("end of stream before or after the announced length");
            }
            if self.expect.chunk_count.is_some_and(|c| c != seq + 1) {
                return bad("end of stream at the wrong seq for the announced chunk count");
            }
        }
        if self.expect.total_len.is_some_and(|t| end > t) {
            return bad("beyond the announced length");
        }
        if self.expect.chunk_count.is_some_and(|c| seq >= c) {
            return bad("beyond the announced chunk count");
        }
        if chunk.offset < self.next_offset
            || (seq == self.next_seq && chunk.offset != self.next_offset)
        {
            return bad("offset does not follow the previous chunk");
        }
        // Neighbours already held must touch this chunk exactly.
        if let Some(prev) = seq.checked_sub(1).and_then(|p| self.pending.get(&p)) {
            if prev.offset + prev.payload.len() as u64 != chunk.offset {
                return bad("offset does not follow the previous chunk");
            }
        }
        if let Some(next) = seq.checked_add(1).and_then(|n| self.pending.get(&n)) {
            if next.offset != end {
                return bad("offset does not meet the next chunk");
            }
        }
        // The chunk needed next is always taken: it is what lets the buffer drain.
        if seq != self.next_seq && self.held + chunk.payload.len() > self.expect.max_pending_bytes {
            return Err(ReassemblyError::ReorderWindowExceeded {
                pending: self.held,
                incoming: chunk.payload.len(),
                limit: self.expect.max_pending_bytes,
            });
        }
        if chunk.has(ChunkFlags::END_OF_STREAM) {
            self.end_seq = Some(seq);
        }
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.received += 1;
        self.held += chunk.payload.len();
        self.pending.insert(seq, chunk);
        self.drain();
        Ok(())
    }

    /// Moves the chunks that are now in order to the ready queue.
    fn drain(&mut self) {
        while let Some(c) = self.pending.remove(&self.next_seq) {
            self.next_seq += 1;
            self.next_offset += c.payload.len() as u64;
            if c.payload.is_empty() {
                continue;
            }
            self.ready.push_back((c.offset, c.payload));
        }
    }

    /// The next in-order bytes to append to the output file: (file offset, bytes).
    pub fn poll_write(&mut self) -> Option<(u64, Bytes)> {
        let (offset, data) = self.ready.pop_front()?;
        self.held -= data.len();
        if let Some(h) = &mut self.hasher {
            h.update(&data);
        }
        Some((offset, data))
    }

    /// Missing sequence ranges below the highest seq seen (or the end of stream).
    pub fn missing(&self) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let Some(highest) = self.highest else {
            return out;
        };
        let mut at = self.next_seq;
        for &seq in self.pending.keys() {
            if seq > at {
                out.push(at..seq);
            }
            at = seq.saturating_add(1);
        }
        let top = self.end_seq.unwrap_or(highest).saturating_add(1);
        if at < top {
            out.push(at..top);
        }
        out
    }

    /// The file offset up to which bytes are in order (including a resumed prefix).
    pub fn bytes_done(&self) -> u64 {
        self.next_offset
    }

    /// The next sequence number needed in order.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Duplicates ignored so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Whether every chunk up to `END_OF_STREAM` is in order (some bytes may still await
    /// [`Self::poll_write`]).
    pub fn is_complete(&self) -> bool {
        self.end_seq.is_some_and(|e| self.next_seq > e)
    }

    /// Checks the finished stream: no gaps, everything polled, the announced length, chunk
    /// count and digest.
    pub fn finish(self) -> Result<Summary, ReassemblyError> {
        if !self.is_complete() {
            let mut missing = self.missing();
            if self.end_seq.is_none() {
                let from = self.highest.map_or(self.next_seq, |h| h.saturating_add(1));
                missing.push(from.max(self.next_seq)..u64::MAX);
            }
            return Err(ReassemblyError::Gap { missing });
        }
        if !self.ready.is_empty() {
            return Err(ReassemblyError::Unflushed {
                bytes: self.held as u64,
            });
        }
        if let Some(expected) = self.expect.total_len.filter(|&t| t != self.next_offset) {
            return Err(ReassemblyError::LengthMismatch {
                expected,
                actual: self.next_offset,
            });
        }
        if let Some(expected) = self.expect.chunk_count.filter(|&c| c != self.next_seq) {
            return Err(ReassemblyError::CountMismatch {
                expected,
                actual: self.next_seq,
            });
        }
        let digest = self.hasher.map(|h| *h.finalize().as_bytes());
        match (self.expect.digest, digest) {
            (Some(expected), Some(actual)) if expected != actual => {
                return Err(ReassemblyError::DigestMismatch { expected, actual });
            }
            (Some(_), None) => return Err(ReassemblyError::NoPrefix),
            _ => {}
        }
        Ok(Summary {
            len: self.next_offset,
            chunks: self.next_seq,
            received: self.received,
            duplicates: self.duplicates,
            digest,
        })
    }
}
