//! A file as a stream of chunks: a blocking thread reads it in large pieces and packetizes
//! it, ahead of the consumer by a bounded number of chunks. Used by the server to serve files
//! and by the client to publish them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::packetize::{MediaError, Packetizer};
use chunkcast_protocol::compress::Compressor;
use chunkcast_protocol::wire::chunk::Chunk;

/// Bytes read from the file at a time: large reads keep the disk and the page cache busy with
/// few syscalls; chunks are slices of them, not copies.
pub const READ_SIZE: usize = 1 << 20;
/// Read buffers kept for reuse: enough to cover what is in flight between the file and the
/// socket (the read-ahead queue and the writer's batch, a few MiB), so that steady streaming
/// allocates nothing.
const POOL: usize = 8;

/// What the reader thread does to each chunk on its way out.
#[derive(Debug, Default)]
pub struct Shaping {
    /// Added to every chunk's offset (a resumed download reads from the middle).
    pub offset_base: u64,
    /// Chunks with a lower seq are cut but not sent (resume from a sequence number).
    pub skip_below: u64,
    /// Compress where it pays.
    pub compressor: Option<Compressor>,
    /// Hash every byte read with BLAKE3 and send the digest here once the whole file has been
    /// read (the file must be read from offset 0 for it to be the file's digest). Hashing the
    /// buffer just read costs less than a separate pass over the file, and the first chunk
    /// does not wait for it.
    pub digest: Option<oneshot::Sender<[u8; 32]>>,
}

/// Starts a blocking thread that reads `file` from its current position, cuts it with
/// `packetizer` and sends the chunks, `ahead` at most queued. The thread stops when the
/// receiver is dropped.
pub fn spawn(
    file: File,
    packetizer: Packetizer,
    shaping: Shaping,
    ahead: usize,
) -> mpsc::Receiver<Result<Chunk, MediaError>> {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    tokio::task::spawn_blocking(move || produce(file, packetizer, shaping, &tx));
    rx
}

fn produce(
    mut file: File,
    mut packetizer: Packetizer,
    mut shaping: Shaping,
    tx: &mpsc::Sender<Result<Chunk, MediaError>>,
) {
    let digest = shaping.digest.take();
    let mut hasher = digest.is_some().then(blake3::Hasher::new);
    let mut out = Vec::new();
    let mut send = |out: &mut Vec<Chunk>| -> bool {
        for mut c in out.drain(..) {
            if c.seq < shaping.skip_below {
                continue;
            }
            c.offset += shaping.offset_base;
            let c = match shaping.compressor.as_mut() {
                Some(z) => z.apply(c),
                None => c,
            };
            if tx.blocking_send(Ok(c)).is_err() {
                return false; // the consumer is gone
            }
        }
        true
    };
    let mut pool = ReadPool::default();
    loop {
        // `read_to_end` on a `Take` fills the spare capacity without zeroing it first (a
        // memset of every byte read, which profiles showed at ~4 % of the server's time).
        let mut buf = pool.take();
        if let Err(e) = (&mut file).take(READ_SIZE as u64).read_to_end(&mut buf) {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
        if buf.is_empty() {
            break;
        }
        if let Some(h) = &mut hasher {
            h.update(&buf);
        }
        let buf = Bytes::from(buf);
        pool.keep(&buf);
        if let Err(e) = packetizer.push(buf, &mut out) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if !send(&mut out) {
            return;
        }
    }
    if let (Some(h), Some(done)) = (hasher, digest) {
        let _ = done.send(*h.finalize().as_bytes());
    }
    match packetizer.finish(&mut out) {
        Ok(()) => {
            send(&mut out);
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
        }
    }
}

/// Read buffers that come back once every chunk cut from them has been sent and dropped.
///
/// A fresh 1 MiB buffer per read is fresh memory from the allocator: page faults and the
/// kernel zeroing each page, about 6 % of the server's time in profiles (74 000 faults per GB
/// served). Holding one handle to each buffer and taking it back when that handle is the last
/// one (`Bytes::try_into_mut`) reads into memory that is already mapped and likely in cache.
#[derive(Default)]
struct ReadPool {
    held: VecDeque<Bytes>,
}

impl ReadPool {
    /// An empty buffer of at least [`READ_SIZE`] capacity: a released one if any.
    fn take(&mut self) -> Vec<u8> {
        // Oldest first: the first to have been sent.
        for _ in 0..self.held.len() {
            let Some(whole) = self.held.pop_front() else {
                break;
            };
            match whole.try_into_mut() {
                Ok(mut free) => {
                    free.clear();
                    let v = Vec::from(free);
                    if v.capacity() >= READ_SIZE {
                        return v;
                    }
                }
                Err(busy) => self.held.push_back(busy),
            }
        }
        Vec::with_capacity(READ_SIZE)
    }

    /// Remembers `whole` (a buffer just filled) so that it can be taken back later.
    fn keep(&mut self, whole: &Bytes) {
        if self.held.len() < POOL {
            self.held.push_back(whole.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_only_when_every_slice_is_gone() {
        let mut pool = ReadPool::default();
        let mut v = pool.take();
        v.extend_from_slice(&[7u8; 1000]);
        let first = v.as_ptr();
        let whole = Bytes::from(v);
        pool.keep(&whole);
        let slice = whole.slice(10..20);
        drop(whole);
        // A chunk still refers to it: a different buffer, and the chunk's bytes intact.
        let other = pool.take();
        assert_ne!(other.as_ptr(), first);
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        let again = pool.take();
        assert_eq!(again.as_ptr(), first, "the released buffer is reused");
        assert!(again.is_empty() && again.capacity() >= READ_SIZE);
    }
}
