//! Serving one opened file: a blocking thread reads and packetizes, the connection's task
//! paces (realtime) and sends, with a bounded queue between them for backpressure.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use chunkcast_media::pace::Pacer;
use chunkcast_media::reader::{self, Shaping};
use chunkcast_media::{Config as ChunkConfig, DEFAULT_CHUNK_SIZE, MediaError, Packetizer};
use chunkcast_protocol::Caps;
use chunkcast_protocol::compress::Compressor;
use chunkcast_protocol::verify::{self, MAX_PROOF_NODES, NODE_LEN, Outboard};
use chunkcast_protocol::wire::{ErrorFrame, FileDigest, Frame, Mode, Open, Opened, Resume};
use chunkcast_protocol::{Chunk, ChunkFlags, ErrorCode};
use chunkcast_transport::{LinkError, LinkTx};
use tokio::sync::{mpsc, oneshot};

use crate::library::{Library, Stamp};

mod fragment;

/// Bytes the reader thread may run ahead of the socket, as whole chunks (at least 2): bounded
/// in bytes, since a chunk count alone let 1 MiB chunks hold 32 MiB per stream.
const AHEAD_BYTES: usize = 4 << 20;

type Produced = Result<Chunk, MediaError>;

/// A stream ready to send: what `OPENED` says, and its chunks.
pub(crate) struct Prepared {
    pub(crate) opened: Opened,
    chunks: mpsc::Receiver<Produced>,
    mode: Mode,
    /// For [`FileDigest::AtEnd`]: the digest the reader thread computes as it reads.
    digest: Option<PendingDigest>,
    /// The file as it was at open, to tell whether it changed while it was sent.
    source: Source,
    /// For a verified stream: the file's tree and the stream's first byte, whose nodes go
    /// out in a `PROOF` before each chunk.
    proof: Option<(Arc<Outboard>, u64)>,
    /// The chunks go with [`ChunkFlags::HEADER_CRC`]: the stream is verified, and the client
    /// checks it.
    header_crc: bool,
}

/// What the client's capabilities let a stream use.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wants {
    /// lz4 where it pays (asked for, and `Caps::LZ4`).
    pub(crate) lz4: bool,
    /// The digest may come after the stream (`Caps::DIGEST_AT_END`).
    pub(crate) digest_at_end: bool,
    /// Notes and coded audio (`Caps::ANY_FILE`).
    pub(crate) any_file: bool,
    /// Verified streaming (`Caps::VERIFIED`): tree nodes with the chunks.
    pub(crate) verified: bool,
    /// The client checks every chunk of this stream against the tree (`Caps::HEADER_CRC` and
    /// `OPEN`'s flag): a verified stream's chunks leave their payload out of the CRC.
    pub(crate) header_crc: bool,
}

/// A file being sent and its [`Stamp`] at open. A writer that rewrites it in place meanwhile
/// makes the reader send a mix of two versions; a digest computed while reading would then
/// match that mix, so it must not be sent (issue 19, defect 7).
struct Source {
    path: std::path::PathBuf,
    at_open: Stamp,
}

impl Source {
    /// Whether the file at the path is still the one opened, unmodified.
    fn unchanged(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| Stamp::of(&m).same_version(&self.at_open))
    }

    /// `CLOSE` for a stream whose file changed under it.
    fn changed(&self, stream: chunkcast_protocol::StreamId) -> Frame {
        Frame::Close {
            stream,
            code: ErrorCode::Changed,
            message: CHANGED.to_owned(),
        }
    }
}

/// What a client is told when the file changed while it was being sent.
const CHANGED: &str =
    "the file changed on the server during the download; run again (without --resume)";

/// A digest being computed while the file is sent, and what to cache it under.
struct PendingDigest {
    rx: oneshot::Receiver<[u8; 32]>,
    library: Arc<Library>,
    path: std::path::PathBuf,
    meta: std::fs::Metadata,
    /// The digest is the file's (not a fragmented stream's): cache it.
    remember: bool,
}

fn err(request: u32, code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame {
        request,
        code,
        message: message.into(),
    }
}

/// Resolves and probes the requested file and starts its reader thread, as `wants` allows.
pub(crate) async fn prepare(
    library: Arc<Library>,
    open: Open,
    max_payload: usize,
    wants: Wants,
) -> Result<Prepared, ErrorFrame> {
    let path = library
        .resolve(&open.path)
        .map_err(|e| err(open.request, e.code(), e.to_string()))?;
    let mode = open.mode;
    let request = open.request;
    let setup =
        tokio::task::spawn_blocking(move || setup(library, path, &open, max_payload, wants));
    match setup.await {
        Ok(Ok((opened, chunks, digest, source, proof))) => Ok(Prepared {
            opened,
            chunks,
            mode,
            digest,
            source,
            header_crc: wants.header_crc && proof.is_some(),
            proof,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(err(request, ErrorCode::Internal, "reader thread failed")),
    }
}

/// What [`setup`] gives [`Prepared`]: `OPENED`, the reader's queue, the digest to come, the
/// file at open, and a verified stream's tree and first byte.
type Setup = (
    Opened,
    mpsc::Receiver<Produced>,
    Option<PendingDigest>,
    Source,
    Option<(Arc<Outboard>, u64)>,
);

/// Probe, position and digest: everything that must happen before `OPENED` can be sent.
fn setup(
    library: Arc<Library>,
    path: std::path::PathBuf,
    open: &Open,
    max_payload: usize,
    wants: Wants,
) -> Result<Setup, ErrorFrame> {
    let Wants {
        lz4,
        digest_at_end,
        any_file,
        verified,
        header_crc: _,
    } = wants;
    let request = open.request;
    let io_err = |e: std::io::Error| {
        err(
            request,
            ErrorCode::Internal,
            format!("reading {}: {e}", open.path),
        )
    };
    let mut file = File::open(&path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let len = meta.len();
    let source = Source {
        path: path.clone(),
        at_open: Stamp::of(&meta),
    };
    let mut cfg = ChunkConfig::new(open.stream);
    cfg.chunk_size = match open.chunk_size as usize {
        0 => DEFAULT_CHUNK_SIZE,
        n => n.min(max_payload),
    };
    cfg.raw = open.raw;
    let mut not_fragmented = None;
    if open.fragment {
        match fragment::plan(&mut file, len) {
            Ok(frag) => {
                let origin = fragment::Origin {
                    library,
                    path,
                    meta,
                };
                return fragment::setup(frag, file, open, &cfg, source, origin, wants);
            }
            Err(why) => {
                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                not_fragmented = Some(format!("not fragmented: {why}"));
            }
        }
    }
    let (start_offset, start_seq) = match open.resume {
        Resume::Start => (0, 0),
        Resume::Seq(n) => (0, n),
        Resume::Offset(x) if x > len => {
            let msg = format!("resume offset {x} is past the end ({len} bytes)");
            return Err(err(request, ErrorCode::BadRequest, msg));
        }
        // The rest of the file, as plain bytes: a resumed download needs bytes, not units.
        Resume::Offset(x) => {
            cfg.raw = true;
            (x, 0)
        }
    };
    let caps = if verified {
        Caps::VERIFIED
    } else {
        Caps::default()
    };
    let outboard = if verify::verified_start(caps, open.resume).is_some() {
        let ob = library.outboard(&path, &meta, &mut file).map_err(io_err)?;
        // The probe below reads from where a fresh file starts.
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        Some(ob)
    } else {
        None
    };
    // Every readable file opens: what cannot be cut as media is cut as bytes, and the
    // packetizer's warning says why. Only I/O can fail here.
    let media_err = |e: MediaError| {
        err(
            request,
            ErrorCode::Internal,
            format!("reading {}: {e}", open.path),
        )
    };
    let mut packetizer =
        Packetizer::open_any(cfg.clone(), &mut file, len - start_offset, &open.path)
            .map_err(media_err)?;
    if !any_file && !packetizer.codec().is_v1_base() {
        // A client that predates coded audio could not parse its codec: bytes it is.
        cfg.raw = true;
        packetizer = Packetizer::open_any(cfg.clone(), &mut file, len - start_offset, &open.path)
            .map_err(media_err)?;
    }
    if let Some(w) = packetizer.warning() {
        tracing::debug!(path = %open.path, "{w}");
    }
    file.seek(SeekFrom::Start(start_offset)).map_err(io_err)?;
    // The whole-file digest: cached, or computed now when the stream starts mid-file (the
    // reader will not see the start) or the client cannot take it later, or else by the
    // reader thread as it goes and sent after the last chunk, so that the first chunk does
    // not wait for a pass over the whole file.
    let (digest, pending) = match (&outboard, library.cached_digest(&path, &meta)) {
        // The tree's root is the file's BLAKE3: what every chunk is checked against.
        (Some(ob), _) => (FileDigest::Known(ob.root()), None),
        (None, Some(d)) => (FileDigest::Known(d), None),
        (None, None) if start_offset > 0 || !digest_at_end => (
            FileDigest::Known(library.digest(&path).map_err(io_err)?),
            None,
        ),
        (None, None) => {
            let (tx, rx) = oneshot::channel();
            let pending = PendingDigest {
                rx,
                library: library.clone(),
                path: path.clone(),
                meta,
                remember: true,
            };
            (FileDigest::AtEnd, Some((tx, pending)))
        }
    };
    let (digest_tx, pending) = pending.unzip();
    let opened = Opened {
        request,
        stream: open.stream,
        codec: packetizer.codec(),
        total_len: Some(len),
        chunk_count: packetizer.chunk_count(),
        duration_us: packetizer.duration_us(),
        digest,
        start_seq,
        start_offset,
        chunk_size: cfg.chunk_size as u32,
        // Notes only to a client that offered ANY_FILE (PROTOCOL.md §10).
        note: match (not_fragmented, packetizer.warning()) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b.map(str::to_owned)),
        }
        .filter(|_| any_file)
        .map(|n| chunkcast_protocol::wire::clip_note(&n)),
    };
    let shaping = Shaping {
        offset_base: start_offset,
        skip_below: start_seq,
        compressor: (lz4 && opened.codec.worth_compressing()).then(Compressor::new),
        digest: digest_tx,
    };
    let ahead = (AHEAD_BYTES / cfg.chunk_size.max(1)).clamp(2, 64);
    let chunks = reader::spawn(file, packetizer, shaping, ahead);
    let proof = outboard.map(|ob| (ob, start_offset));
    Ok((opened, chunks, pending, source, proof))
}

/// How a stream ended on the server's side.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Every chunk was handed to the transport.
    Complete,
    /// The file could not be read or cut; the client was sent a `CLOSE`.
    Failed(MediaError),
    /// The file changed while it was sent; the client was sent a `CLOSE` instead of its digest.
    Changed,
    /// The link is gone.
    Link(LinkError),
}

impl Prepared {
    /// Sends `OPENED`, then every chunk, paced by timestamps in realtime mode.
    ///
    /// A peer that takes no chunk for `stall` (it stopped reading, but keeps its connection
    /// alive) loses the stream, so that it cannot pin the read-ahead and window forever.
    pub(crate) async fn run(mut self, tx: &LinkTx, stall: std::time::Duration) -> Ended {
        let stream = self.opened.stream;
        if let Err(e) = tx.send(Frame::Opened(self.opened.clone())).await {
            return Ended::Link(e);
        }
        let mut media = match tx.open_media().await {
            Ok(m) => m,
            Err(e) => return Ended::Link(e),
        };
        let mut pacer = Pacer::new();
        while let Some(item) = self.chunks.recv().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    media.abort();
                    // A file that shrank or grew under the reader fails to cut: say why.
                    if !self.source.unchanged() {
                        let _ = tx.send(self.source.changed(stream)).await;
                        return Ended::Changed;
                    }
                    let message = format!("stream failed: {e}");
                    let _ = tx
                        .send(Frame::Close {
                            stream,
                            code: ErrorCode::BadMedia,
                            message,
                        })
                        .await;
                    return Ended::Failed(e);
                }
            };
            if self.mode == Mode::Realtime && chunk.duration_us > 0 {
                let due = pacer.due(std::time::Instant::now(), chunk.pts_us);
                tokio::time::sleep_until(due.into()).await;
            }
            if let Some((tree, start)) = &self.proof {
                // Ahead of the chunk on the control channel: on TCP it arrives first.
                let end = chunk.offset + u64::from(chunk.raw_len);
                let nodes = Bytes::from(tree.proof(*start, chunk.offset, end));
                for part in nodes.chunks(MAX_PROOF_NODES * NODE_LEN) {
                    let frame = Frame::Proof {
                        stream,
                        nodes: nodes.slice_ref(part),
                    };
                    if let Err(e) = tx.send(frame).await {
                        return Ended::Link(e);
                    }
                }
            }
            // The tree proves the payload (and TLS's or QUIC's AEAD protects it in transit):
            // the CRC covers the header only, and neither end passes over the bytes for it.
            let chunk = if self.header_crc {
                Chunk {
                    flags: chunk.flags.with(ChunkFlags::HEADER_CRC),
                    ..chunk
                }
            } else {
                chunk
            };
            let len = chunk.payload.len();
            match tokio::time::timeout(stall, media.send(chunk)).await {
                Ok(Ok(())) => crate::metrics::chunk_sent(len),
                Ok(Err(e)) => return Ended::Link(e),
                Err(_) => {
                    media.abort();
                    let message = format!("stream stalled: nothing read for {stall:?}");
                    let _ = tx
                        .send(Frame::Close {
                            stream,
                            code: ErrorCode::Timeout,
                            message,
                        })
                        .await;
                    return Ended::Link(LinkError::Closed);
                }
            }
        }
        if let Err(e) = media.finish().await {
            return Ended::Link(e);
        }
        if let Some(p) = self.digest {
            // Sent by the reader thread before its last chunk, so it is there by now.
            let Ok(digest) = p.rx.await else {
                return Ended::Link(LinkError::Closed);
            };
            // The reader has read every byte by now: if the file is still the one opened, the
            // digest is the file's; otherwise it may be a mix's, which no client must verify.
            // One stat: cheap enough not to leave the task for.
            if !self.source.unchanged() {
                let _ = tx.send(self.source.changed(stream)).await;
                return Ended::Changed;
            }
            if p.remember {
                p.library.remember_digest(&p.path, &p.meta, digest);
            }
            if let Err(e) = tx.send(Frame::Digest { stream, digest }).await {
                return Ended::Link(e);
            }
        }
        Ended::Complete
    }
}
