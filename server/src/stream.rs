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
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, ErrorCode};
use chunkcast_transport::{FileRegion, LinkError, LinkTx};
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
    chunks: Chunks,
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
    /// The link sends files from the page cache ([`LinkTx::sends_files`]) and the server
    /// may ([`crate::Config::sendfile`]).
    pub(crate) sendfile: bool,
}

/// Where a stream's chunks come from.
enum Chunks {
    /// The reader thread: read, cut (and compressed) in memory.
    Read(mpsc::Receiver<Produced>),
    /// Never read here: a verified download of bytes on a link that sends files, cut by
    /// arithmetic and sent by the kernel from the page cache.
    File(FileChunks),
}

/// A byte stream's chunks as regions of its file: what the packetizer's bytes layout cuts
/// (pieces of the chunk size, each a key unit, the last one `END_OF_STREAM`), without the
/// bytes. Their CRC covers the header only (`HEADER_CRC`): the tree proves the payload.
struct FileChunks {
    file: Arc<File>,
    stream: chunkcast_protocol::StreamId,
    chunk_size: u64,
    seq: u64,
    /// The next chunk's first byte, and the file's end.
    at: u64,
    end: u64,
}

impl FileChunks {
    /// The chunks of `file` from `start` (a resumed download's offset) to `end`, from the
    /// `skip`th piece on (a download resumed from a sequence number). The file back when
    /// that leaves nothing: the reader's path says what an empty stream is.
    fn new(
        file: File,
        stream: chunkcast_protocol::StreamId,
        chunk_size: usize,
        (start, end): (u64, u64),
        skip: u64,
    ) -> Result<Self, File> {
        let chunk_size = (chunk_size as u64).max(1);
        match skip
            .checked_mul(chunk_size)
            .and_then(|n| n.checked_add(start))
        {
            Some(at) if at < end => Ok(Self {
                file: Arc::new(file),
                stream,
                chunk_size,
                seq: skip,
                at,
                end,
            }),
            _ => Err(file),
        }
    }
}

impl Iterator for FileChunks {
    type Item = (Chunk, FileRegion);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let len = self.chunk_size.min(self.end - self.at);
        let mut flags = ChunkFlags::KEY | ChunkFlags::END_OF_UNIT | ChunkFlags::HEADER_CRC;
        if self.at + len == self.end {
            flags = flags | ChunkFlags::END_OF_STREAM;
        }
        let chunk = Chunk {
            // At most the chunk size, itself at most MAX_CHUNK_SIZE.
            raw_len: len as u32,
            ..Chunk::new(self.stream, self.seq, self.at, 0, 0, flags, Bytes::new())
        };
        let region = FileRegion {
            file: self.file.clone(),
            offset: self.at,
            len: len as usize,
        };
        self.seq += 1;
        self.at += len;
        Some((chunk, region))
    }
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
    Chunks,
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
        header_crc,
        sendfile,
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
    // Nothing to read for: the client checks the payload against the tree (no CRC over
    // it), the bytes go as they are in the file (no compression, no units to find), and the
    // digest is the tree's root (no hashing as the file is read).
    let unread = sendfile
        && header_crc
        && outboard.is_some()
        && opened.codec == Codec::Bytes
        && shaping.compressor.is_none()
        && shaping.digest.is_none();
    let regions = match unread {
        true => FileChunks::new(
            file,
            open.stream,
            cfg.chunk_size,
            (start_offset, len),
            start_seq,
        ),
        false => Err(file),
    };
    let chunks = match regions {
        Ok(regions) => Chunks::File(regions),
        Err(file) => Chunks::Read(spawn_reader(file, packetizer, shaping, cfg.chunk_size)),
    };
    let proof = outboard.map(|ob| (ob, start_offset));
    Ok((opened, chunks, pending, source, proof))
}

/// The reader thread for `file`, read from where it is.
fn spawn_reader(
    file: File,
    packetizer: Packetizer,
    shaping: Shaping,
    chunk_size: usize,
) -> mpsc::Receiver<Produced> {
    let ahead = (AHEAD_BYTES / chunk_size.max(1)).clamp(2, 64);
    reader::spawn(file, packetizer, shaping, ahead)
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
        loop {
            let item = match &mut self.chunks {
                Chunks::Read(rx) => rx.recv().await.map(|r| r.map(|c| (c, None))),
                Chunks::File(regions) => regions.next().map(|(c, r)| Ok((c, Some(r)))),
            };
            let Some(item) = item else { break };
            let (chunk, region) = match item {
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
            let len = region.as_ref().map_or(chunk.payload.len(), |r| r.len);
            let from_file = region.is_some();
            let sent = async {
                match region {
                    Some(region) => media.send_file(chunk, region).await,
                    None => media.send(chunk).await,
                }
            };
            match tokio::time::timeout(stall, sent).await {
                Ok(Ok(())) => crate::metrics::chunk_sent(len, from_file),
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use chunkcast_protocol::StreamId;

    use super::*;

    /// What the reader's path sends for the bytes of a file from `start`, from the `skip`th
    /// chunk on: the packetizer's bytes layout, as `setup` shapes it.
    fn read_path(data: &[u8], chunk_size: usize, start: usize, skip: u64) -> Vec<Chunk> {
        let mut cfg = ChunkConfig::new(StreamId(5));
        cfg.chunk_size = chunk_size;
        cfg.raw = true;
        let rest = &data[start..];
        let mut src = std::io::Cursor::new(rest);
        let mut p = Packetizer::open_any(cfg, &mut src, rest.len() as u64, "x.bin").unwrap();
        let mut out = Vec::new();
        p.push(Bytes::copy_from_slice(rest), &mut out).unwrap();
        p.finish(&mut out).unwrap();
        out.into_iter()
            .filter(|c| c.seq >= skip)
            .map(|c| Chunk {
                offset: c.offset + start as u64,
                ..c
            })
            .collect()
    }

    /// The chunks cut by arithmetic for `sendfile` are the reader's, header for header (with
    /// `HEADER_CRC`), and each region holds that chunk's bytes: for whole files, short last
    /// chunks, resumed offsets and sequence numbers.
    #[test]
    fn file_chunks_are_the_readers_chunks_without_their_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let cases = [
            (1000, 0, 0),
            (1024, 0, 0),
            (10_000, 0, 0),
            (20_000, 0, 0),
            (1000, 4321, 0),
            (1024, 0, 3),
            (1024, 9999, 0),
        ];
        for (chunk_size, start, skip) in cases {
            let want = read_path(&data, chunk_size, start, skip);
            let file = f.try_clone().unwrap();
            let span = (start as u64, data.len() as u64);
            let Ok(got) = FileChunks::new(file, StreamId(5), chunk_size, span, skip) else {
                panic!("{chunk_size} {start} {skip}: nothing to send");
            };
            let got: Vec<(Chunk, FileRegion)> = got.collect();
            assert_eq!(got.len(), want.len(), "{chunk_size} {start} {skip}");
            for ((c, region), w) in got.iter().zip(&want) {
                let with_crc = Chunk {
                    flags: w.flags.with(ChunkFlags::HEADER_CRC),
                    payload: Bytes::new(),
                    ..w.clone()
                };
                assert_eq!(*c, with_crc, "{chunk_size} {start} {skip}");
                let (a, b) = (region.offset as usize, region.offset as usize + region.len);
                assert!(data[a..b] == w.payload[..], "{chunk_size} {start} {skip}");
            }
        }
        // Nothing left: the reader's path takes it (an empty stream is one empty chunk).
        for (start, skip) in [(10_000, 0), (0, 10)] {
            let span = (start, data.len() as u64);
            let file = f.try_clone().unwrap();
            assert!(FileChunks::new(file, StreamId(5), 1000, span, skip).is_err());
        }
    }
}
