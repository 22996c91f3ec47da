//! A file as a stream of chunks: a blocking thread reads it in large pieces and packetizes
//! it, ahead of the consumer by a bounded number of chunks. Used by the server to serve files
//! and by the client to publish them.

use std::fs::File;
use std::io::Read;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::chunk::{MediaError, Packetizer};
use crate::compress::Compressor;
use crate::wire::chunk::Chunk;

/// Bytes read from the file at a time: large reads keep the disk and the page cache busy with
/// few syscalls; chunks are slices of them, not copies.
pub const READ_SIZE: usize = 1 << 20;

/// What the reader thread does to each chunk on its way out.
#[derive(Debug, Default)]
pub struct Shaping {
    /// Added to every chunk's offset (a resumed download reads from the middle).
    pub offset_base: u64,
    /// Chunks with a lower seq are cut but not sent (resume from a sequence number).
    pub skip_below: u64,
    /// Compress where it pays.
    pub compressor: Option<Compressor>,
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
    loop {
        // `read_to_end` on a `Take` fills the spare capacity without zeroing it first (a
        // memset of every byte read, which profiles showed at ~4 % of the server's time).
        let mut buf = Vec::with_capacity(READ_SIZE);
        if let Err(e) = (&mut file).take(READ_SIZE as u64).read_to_end(&mut buf) {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
        if buf.is_empty() {
            break;
        }
        if let Err(e) = packetizer.push(Bytes::from(buf), &mut out) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if !send(&mut out) {
            return;
        }
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
