//! `OPEN` with `FRAGMENT`: a progressive MP4 served as fragmented MP4 (PROTOCOL.md §4.8).
//!
//! The fragmenter plans from the `moov`; a blocking thread reads each fragment's samples and
//! cuts init segment and fragments into chunks, with the same bounded queue, digest and
//! resume-by-seq as a plain file stream. The digest is the fragmented stream's, so it is
//! never cached as the file's.

use std::fs::File;
use std::sync::Arc;

use chunkcast_media::Config as ChunkConfig;
use chunkcast_media::fragment::{Chunker, Fragmenter};
use chunkcast_protocol::media::Codec;
use chunkcast_protocol::wire::{ErrorFrame, FileDigest, Open, Opened, Resume};
use chunkcast_protocol::{Chunk, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::{AHEAD_BYTES, PendingDigest, Produced, Setup, Source, Wants, err};
use crate::library::Library;

/// The fragmenter's plan for the file, or why it cannot be fragmented (the file is then
/// served as if the flag were clear).
pub(super) fn plan(file: &mut File, len: u64) -> Result<Fragmenter, String> {
    let frag = Fragmenter::open(file, len).map_err(|e| e.to_string())?;
    if frag.video().is_none() {
        return Err("no video track".to_owned());
    }
    if frag.is_empty() {
        return Err("no samples".to_owned());
    }
    Ok(frag)
}

/// Where the file came from, for a digest computed while sending.
pub(super) struct Origin {
    pub(super) library: Arc<Library>,
    pub(super) path: std::path::PathBuf,
    pub(super) meta: std::fs::Metadata,
}

/// `OPENED` and the producer thread of a fragmented stream.
pub(super) fn setup(
    frag: Fragmenter,
    mut file: File,
    open: &Open,
    cfg: &ChunkConfig,
    source: Source,
    origin: Origin,
    wants: Wants,
) -> Result<Setup, ErrorFrame> {
    let request = open.request;
    let start_seq = match open.resume {
        Resume::Start => 0,
        Resume::Seq(n) => n,
        // The machine refuses this; kept as a guard for other callers.
        Resume::Offset(_) => {
            return Err(err(
                request,
                ErrorCode::BadRequest,
                "a fragmented stream cannot resume at a byte offset",
            ));
        }
    };
    let Some(video) = frag.video() else {
        return Err(err(request, ErrorCode::Internal, "no video track"));
    };
    let total_len = frag.total_len();
    let (digest, pending) = if wants.digest_at_end {
        let (tx, rx) = oneshot::channel();
        let pending = PendingDigest {
            rx,
            library: origin.library,
            path: origin.path,
            meta: origin.meta,
            remember: false,
        };
        (FileDigest::AtEnd, Some((tx, pending)))
    } else {
        // A client that cannot take the digest later gets it now: one pass over the samples.
        let mut h = blake3::Hasher::new();
        h.update(frag.init_segment());
        for i in 0..frag.len() {
            let bytes = frag.read_fragment(i, &mut file).map_err(|e| {
                err(
                    request,
                    ErrorCode::Internal,
                    format!("reading {}: {e}", open.path),
                )
            })?;
            h.update(&bytes);
        }
        (FileDigest::Known(*h.finalize().as_bytes()), None)
    };
    let (digest_tx, pending) = pending.unzip();
    let opened = Opened {
        request,
        stream: open.stream,
        codec: Codec::Video(video),
        total_len: Some(total_len),
        chunk_count: Some(frag.chunk_count(cfg.chunk_size)),
        duration_us: Some(frag.duration_us()),
        digest,
        start_seq,
        start_offset: 0,
        chunk_size: cfg.chunk_size as u32,
        note: None,
    };
    let ahead = (AHEAD_BYTES / cfg.chunk_size.max(1)).clamp(2, 64);
    let (tx, rx) = mpsc::channel(ahead);
    let chunker = Chunker::new(open.stream, cfg.chunk_size);
    tokio::task::spawn_blocking(move || produce(frag, file, chunker, start_seq, digest_tx, &tx));
    Ok((opened, super::Chunks::Read(rx), pending, source, None))
}

/// Reads and cuts every fragment into `tx`, skipping chunks below `skip_below`; hashes the
/// whole stream for `digest` and sends it before the last chunk.
fn produce(
    frag: Fragmenter,
    mut file: File,
    mut chunker: Chunker,
    skip_below: u64,
    digest: Option<oneshot::Sender<[u8; 32]>>,
    tx: &mpsc::Sender<Produced>,
) {
    let mut hasher = digest.is_some().then(blake3::Hasher::new);
    let mut digest = digest;
    let mut out: Vec<Chunk> = Vec::new();
    let mut send = |out: &mut Vec<Chunk>, hasher: &mut Option<blake3::Hasher>| -> bool {
        for c in out.drain(..) {
            if let Some(h) = hasher.as_mut() {
                h.update(&c.payload);
            }
            if c.flags
                .contains(chunkcast_protocol::ChunkFlags::END_OF_STREAM)
            {
                if let (Some(h), Some(d)) = (hasher.take(), digest.take()) {
                    let _ = d.send(*h.finalize().as_bytes());
                }
            }
            if c.seq < skip_below {
                continue;
            }
            if tx.blocking_send(Ok(c)).is_err() {
                return false; // the consumer is gone
            }
        }
        true
    };
    chunker.init(frag.init_segment().clone(), &mut out);
    if !send(&mut out, &mut hasher) {
        return;
    }
    for i in 0..frag.len() {
        let bytes = match frag.read_fragment(i, &mut file) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        chunker.fragment(frag.fragment_info(i), bytes, i + 1 == frag.len(), &mut out);
        if !send(&mut out, &mut hasher) {
            return;
        }
    }
}
