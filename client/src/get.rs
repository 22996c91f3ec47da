//! `chunkcast get`: save a file byte for byte, verified, resumable.
//!
//! Bytes go to `FILE.partial` as they arrive (never the whole file in memory) and the file is
//! renamed to its final name only once the whole-file digest matches, so a failed or cut
//! download never leaves a wrong file under the final name; `--resume` continues the partial.

use std::fs::{File, OpenOptions as FsOpen};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_protocol::chunk::{Expect, Reassembler};
use chunkcast_protocol::wire::{Mode, Resume};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::session::{OpenOptions, Session};

/// Bytes gathered before they go to the writer thread as one vectored write: one wake-up and
/// one syscall per MiB instead of per chunk (per-chunk writes cost 15 000 `write`s and twice
/// as many futex wake-ups per GB, a third of the client's CPU).
const WRITE_BATCH: usize = 1 << 20;
/// Batches queued towards the writer thread: 2 MiB, plus the one being written. With the
/// stream's buffer this keeps what a download holds in flight (about 6 MiB) within the
/// connection's pool of read buffers, so that steady downloading allocates nothing.
const WRITE_QUEUE: usize = 2;

/// How to get a file.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Where to save; default: the path's last component in the current directory.
    pub out: Option<PathBuf>,
    /// Continue `OUT.partial` if it exists.
    pub resume: bool,
    /// Paced by timestamps instead of as fast as possible.
    pub realtime: bool,
    /// Payload bytes per chunk (0: the server's default).
    pub chunk_size: u32,
    /// Ask for lz4 where it pays.
    pub compress: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a finished download did.
#[derive(Debug, Clone)]
pub struct GetReport {
    /// Where it was saved.
    pub path: PathBuf,
    /// Size of the file.
    pub len: u64,
    /// Bytes that were already on disk (resume).
    pub resumed_from: u64,
    /// Time from open to rename.
    pub elapsed: Duration,
    /// Whether the whole-file digest was checked and matched.
    pub verified: bool,
    /// The server's note about the file (`OPENED.note`): why it was served as bytes, or what
    /// is damaged in it. The file is saved byte for byte all the same.
    pub note: Option<String>,
}

impl GetReport {
    /// Transfer rate of the bytes fetched this time, in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        (self.len - self.resumed_from) as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The partial file that belongs to `out`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// The default output file for a library path.
pub fn default_out(path: &str) -> Result<PathBuf, ClientError> {
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            ClientError::Usage(
                "the URL names no file: add its path, e.g. tcp://HOST:PORT/file.wav".into(),
            )
        })
}

/// Downloads `path` from `session` according to `opts`.
pub async fn get(
    session: &Session,
    path: &str,
    opts: &GetOptions,
) -> Result<GetReport, ClientError> {
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => default_out(path)?,
    };
    let partial = partial_path(&out);
    let started = Instant::now();

    // What is already on disk, and the hash of it, so that the final digest covers it.
    let (have, prefix) = if opts.resume {
        let p = partial.clone();
        tokio::task::spawn_blocking(move || hash_prefix(&p))
            .await
            .map_err(|e| ClientError::Usage(e.to_string()))??
    } else {
        (0, None)
    };
    let open = OpenOptions {
        path: path.to_owned(),
        mode: if opts.realtime {
            Mode::Realtime
        } else {
            Mode::Download
        },
        resume: if have > 0 {
            Resume::Offset(have)
        } else {
            Resume::Start
        },
        compress: opts.compress,
        raw: have > 0,
        chunk_size: opts.chunk_size,
    };
    let mut incoming = session.open(&open).await?;
    let info = incoming.opened.clone();
    if info.start_offset != have {
        return Err(ClientError::Usage(format!(
            "server resumed at {} instead of {have}",
            info.start_offset
        )));
    }
    let mut expect = Expect::new();
    expect.total_len = info.total_len;
    expect.chunk_count = if have == 0 { info.chunk_count } else { None };
    expect.start_seq = info.start_seq;
    expect.start_offset = have;
    expect.prefix = prefix;
    let mut reasm = Reassembler::new(expect);

    let file = FsOpen::new()
        .create(true)
        .append(have > 0)
        .write(true)
        .truncate(have == 0)
        .open(&partial)
        .map_err(|e| ClientError::file(&partial, e))?;
    let (wtx, wrx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
    let wpath = partial.clone();
    let writer = tokio::task::spawn_blocking(move || write_all(file, wrx, &wpath));

    let bar = opts
        .progress
        .then(|| progress_bar(info.total_len.unwrap_or(0), have));
    let mut batch = Vec::new();
    let mut batch_len = 0;
    let mut verified = false;
    let received = async {
        while let Some(chunk) = incoming.next().await {
            reasm.push(chunk?)?;
            while let Some((_, bytes)) = reasm.poll_write() {
                if let Some(b) = &bar {
                    b.inc(bytes.len() as u64);
                }
                batch_len += bytes.len();
                batch.push(bytes);
                if batch_len >= WRITE_BATCH {
                    batch_len = 0;
                    if wtx.send(std::mem::take(&mut batch)).await.is_err() {
                        return Ok(()); // the writer failed; its error is reported below
                    }
                }
            }
        }
        // Announced in OPENED, or sent after the last chunk: checked by `finish` below.
        if let Some(d) = incoming.file_digest().await? {
            reasm.expect_digest(d);
            verified = true;
        }
        Ok::<(), ClientError>(())
    }
    .await;
    // What arrived in order passed its checksum: keep it on disk, whatever ended the stream,
    // so that a resume continues after it.
    if !batch.is_empty() {
        let _ = wtx.send(batch).await;
    }
    drop(wtx);
    let written = writer
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    written?;
    received?;
    // Nothing is renamed unless every byte arrived and the digest matches.
    let summary = reasm.finish()?;
    std::fs::rename(&partial, &out).map_err(|e| ClientError::file(&out, e))?;
    Ok(GetReport {
        path: out,
        len: summary.len,
        resumed_from: have,
        elapsed: started.elapsed(),
        verified: verified && summary.digest.is_some(),
        note: info.note,
    })
}

fn hash_prefix(partial: &Path) -> Result<(u64, Option<blake3::Hasher>), ClientError> {
    let mut f = match File::open(partial) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, None)),
        Err(e) => return Err(ClientError::file(partial, e)),
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| ClientError::file(partial, e))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, Some(hasher)))
}

fn write_all(
    mut file: File,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    path: &Path,
) -> Result<(), ClientError> {
    while let Some(mut parts) = rx.blocking_recv() {
        let mut first = 0;
        while first < parts.len() {
            let slices: Vec<std::io::IoSlice<'_>> = parts[first..]
                .iter()
                .take(512)
                .map(|b| std::io::IoSlice::new(b))
                .collect();
            let mut n = match file.write_vectored(&slices) {
                Ok(0) => {
                    return Err(ClientError::file(
                        path,
                        std::io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::file(path, e)),
            };
            while n > 0 {
                let take = n.min(parts[first].len());
                bytes::Buf::advance(&mut parts[first], take);
                n -= take;
                if parts[first].is_empty() {
                    first += 1;
                }
            }
        }
    }
    // Durable before the rename that gives it its final name.
    file.sync_all().map_err(|e| ClientError::file(path, e))
}

fn progress_bar(total: u64, done: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}

/// How many times [`get_resuming`] reconnects and resumes after a cut or corrupted transfer.
pub const DEFAULT_RETRIES: u32 = 3;

/// Like [`get`], but on a lost connection or a corrupted chunk it reconnects and resumes from
/// what is on disk (the partial file is always consistent: bytes are written in order and
/// only after their chunk's checksum passed), up to `retries` times.
pub async fn get_resuming(
    url: &crate::url::Url,
    connect: &crate::session::ConnectOptions,
    opts: &GetOptions,
    retries: u32,
) -> Result<GetReport, ClientError> {
    let mut opts = opts.clone();
    let mut attempt = 0;
    loop {
        let session = Session::connect(url, connect).await?;
        let result = get(&session, &url.path, &opts).await;
        session.close().await;
        match result {
            Err(e @ (ClientError::Lost(_) | ClientError::Corrupt(_))) if attempt < retries => {
                attempt += 1;
                tracing::warn!("{e}; resuming (attempt {attempt} of {retries})");
                opts.resume = true;
            }
            other => return other,
        }
    }
}
