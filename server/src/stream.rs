//! Serving one opened file: a blocking thread reads and packetizes, the connection's task
//! paces (realtime) and sends, with a bounded queue between them for backpressure.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use chunkcast_protocol::chunk::{
    Config as ChunkConfig, DEFAULT_CHUNK_SIZE, MediaError, Packetizer,
};
use chunkcast_protocol::compress::Compressor;
use chunkcast_protocol::net::{LinkError, LinkTx};
use chunkcast_protocol::wire::{ErrorFrame, Frame, Mode, Open, Opened, Resume};
use chunkcast_protocol::{Chunk, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::library::{Library, read_full};

/// Bytes read from the file at a time: large reads keep the disk and the page cache busy with
/// few syscalls; chunks are slices of them.
const READ_SIZE: usize = 1 << 20;
/// Chunks the reader thread may run ahead of the socket.
const AHEAD: usize = 32;

type Produced = Result<Chunk, MediaError>;

/// A stream ready to send: what `OPENED` says, and its chunks.
pub(crate) struct Prepared {
    pub(crate) opened: Opened,
    chunks: mpsc::Receiver<Produced>,
    mode: Mode,
}

fn err(request: u32, code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame {
        request,
        code,
        message: message.into(),
    }
}

/// Resolves and probes the requested file and starts its reader thread.
pub(crate) async fn prepare(
    library: Arc<Library>,
    open: Open,
    max_payload: usize,
    lz4: bool,
) -> Result<Prepared, ErrorFrame> {
    let path = library
        .resolve(&open.path)
        .map_err(|e| err(open.request, e.code(), e.to_string()))?;
    let (info_tx, info_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(AHEAD);
    let mode = open.mode;
    let request = open.request;
    tokio::task::spawn_blocking(move || {
        produce(&library, path, open, max_payload, lz4, info_tx, tx)
    });
    match info_rx.await {
        Ok(Ok(opened)) => Ok(Prepared {
            opened,
            chunks: rx,
            mode,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(err(request, ErrorCode::Internal, "reader thread failed")),
    }
}

fn produce(
    library: &Library,
    path: PathBuf,
    open: Open,
    max_payload: usize,
    lz4: bool,
    info_tx: oneshot::Sender<Result<Opened, ErrorFrame>>,
    tx: mpsc::Sender<Produced>,
) {
    let request = open.request;
    let io_err = |e: std::io::Error| {
        err(
            request,
            ErrorCode::Internal,
            format!("reading {}: {e}", open.path),
        )
    };
    let setup = || -> Result<(File, Packetizer, Opened), ErrorFrame> {
        let digest = library.digest(&path).map_err(io_err)?;
        let mut file = File::open(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut cfg = ChunkConfig::new(open.stream);
        cfg.chunk_size = match open.chunk_size as usize {
            0 => DEFAULT_CHUNK_SIZE,
            n => n.min(max_payload),
        };
        cfg.raw = open.raw;
        let (start_offset, start_seq) = match open.resume {
            Resume::Start => (0, 0),
            Resume::Seq(n) => (0, n),
            Resume::Offset(x) if x > len => {
                return Err(err(
                    request,
                    ErrorCode::BadRequest,
                    format!("resume offset {x} is past the end ({len} bytes)"),
                ));
            }
            // The rest of the file, as plain bytes: a resumed download needs bytes, not units.
            Resume::Offset(x) => {
                cfg.raw = true;
                (x, 0)
            }
        };
        let packetizer =
            Packetizer::open(cfg.clone(), &mut file, len - start_offset, &open.path)
                .map_err(|e| err(request, ErrorCode::BadMedia, format!("{}: {e}", open.path)))?;
        file.seek(SeekFrom::Start(start_offset)).map_err(io_err)?;
        let opened = Opened {
            request,
            stream: open.stream,
            codec: packetizer.codec(),
            total_len: Some(len),
            chunk_count: packetizer.chunk_count(),
            duration_us: packetizer.duration_us(),
            digest: Some(digest),
            start_seq,
            start_offset,
            chunk_size: cfg.chunk_size as u32,
        };
        Ok((file, packetizer, opened))
    };
    let (mut file, mut packetizer, opened) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let _ = info_tx.send(Err(e));
            return;
        }
    };
    let start_offset = opened.start_offset;
    let skip_below = opened.start_seq;
    let mut compressor = (lz4 && opened.codec.worth_compressing()).then(Compressor::new);
    if info_tx.send(Ok(opened)).is_err() {
        return;
    }
    let mut out = Vec::new();
    let mut send = |out: &mut Vec<Chunk>| -> bool {
        for mut c in out.drain(..) {
            if c.seq < skip_below {
                continue;
            }
            c.offset += start_offset;
            let c = match compressor.as_mut() {
                Some(z) => z.apply(c),
                None => c,
            };
            if tx.blocking_send(Ok(c)).is_err() {
                return false; // the stream was cancelled
            }
        }
        true
    };
    loop {
        let mut buf = BytesMut::zeroed(READ_SIZE);
        let n = match read_full(&mut file, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if let Err(e) = packetizer.push(buf.freeze(), &mut out) {
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

/// How a stream ended on the server's side.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Every chunk was handed to the transport.
    Complete,
    /// The file could not be read or cut; the client was sent a `CLOSE`.
    Failed(MediaError),
    /// The link is gone.
    Link(LinkError),
}

impl Prepared {
    /// Sends `OPENED`, then every chunk, paced by timestamps in realtime mode.
    pub(crate) async fn run(mut self, tx: &LinkTx) -> Ended {
        let stream = self.opened.stream;
        if let Err(e) = tx.send(Frame::Opened(self.opened.clone())).await {
            return Ended::Link(e);
        }
        let mut media = match tx.open_media().await {
            Ok(m) => m,
            Err(e) => return Ended::Link(e),
        };
        let mut clock: Option<(Instant, u64)> = None;
        while let Some(item) = self.chunks.recv().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    media.abort();
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
                // Release each unit at its presentation time, measured from the first unit's.
                let (t0, pts0) = *clock.get_or_insert((Instant::now(), chunk.pts_us));
                let due = t0 + std::time::Duration::from_micros(chunk.pts_us.saturating_sub(pts0));
                tokio::time::sleep_until(due).await;
            }
            if let Err(e) = media.send(chunk).await {
                return Ended::Link(e);
            }
        }
        match media.finish().await {
            Ok(()) => Ended::Complete,
            Err(e) => Ended::Link(e),
        }
    }
}
