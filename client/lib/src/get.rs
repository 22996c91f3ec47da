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
use chunkcast_media::{Expect, Reassembler, ReassemblyError};
use chunkcast_protocol::verify::{GROUP_LEN, Verifier, VerifyError, verified_start};
use chunkcast_protocol::wire::{Mode, Resume};
use chunkcast_protocol::{Caps, ChunkFlags, DecodeError, ErrorCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::ls::human_bytes;
use crate::session::{OpenOptions, Session};

/// Bytes gathered before they go to the writer thread as one vectored write: one wake-up and
/// one syscall per MiB instead of per chunk (per-chunk writes cost 15 000 `write`s and twice
/// as many futex wake-ups per GB, a third of the client's CPU).
const WRITE_BATCH: usize = 1 << 20;
/// Batches queued towards the writer thread: 2 MiB, plus the one being written. With the
/// stream's buffer this keeps what a download holds in flight (about 6 MiB) within the
/// connection's pool of read buffers, so that steady downloading allocates nothing.
pub(crate) const WRITE_QUEUE: usize = 2;
/// How long a verified download waits for the tree nodes of bytes it holds: they travel
/// ahead of the chunks on TCP and beside them on QUIC, so a server that sends none within
/// this is broken, and the download fails instead of hanging.
const NODE_WAIT: Duration = Duration::from_secs(30);

/// How to get a file.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Where to save: a file, an existing directory or `DIR/` (saved there under the file's
    /// name), or `-` for stdout; default: the path's last component in the current directory.
    pub out: Option<PathBuf>,
    /// Continue `OUT.partial` if it exists, or verify `OUT` if it is already complete.
    pub resume: bool,
    /// Paced by timestamps instead of as fast as possible.
    pub realtime: bool,
    /// Payload bytes per chunk (0: the server's default).
    pub chunk_size: u32,
    /// Ask for lz4 where it pays.
    pub compress: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Tell the user on stderr what happens besides the download itself: a resume and where
    /// it starts, a partial file started over, an automatic resume after a cut.
    pub notes: bool,
    /// Stops the download cleanly when cancelled (Ctrl-C): what arrived stays in the partial
    /// file and the result is [`ClientError::Cut`] caused by [`ClientError::Interrupted`].
    pub cancel: CancellationToken,
}

/// What a finished download did.
#[derive(Debug, Clone)]
pub struct GetReport {
    /// Where it was saved (`-` for stdout).
    pub path: PathBuf,
    /// Size of the file.
    pub len: u64,
    /// Bytes that were already on disk (resume).
    pub resumed_from: u64,
    /// Time from open to rename.
    pub elapsed: Duration,
    /// Whether the whole-file digest was checked and matched.
    pub verified: bool,
    /// Whether the file was complete on disk already (`--resume` over a finished download):
    /// it was verified and nothing was transferred.
    pub already_complete: bool,
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

/// Where a download goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// This file (written as `FILE.partial`, renamed when verified).
    File(PathBuf),
    /// Standard output, as the bytes arrive (`-o -`).
    Stdout,
}

/// Resolves `-o` for the library path `path`, the way `cp` and curl's `--output-dir` do: an
/// existing directory, or any name ending in `/`, receives the file under its own name; `-`
/// is stdout. Checks what can be checked before downloading: the directory to write in
/// exists, and the target is not a directory.
pub fn destination(out: Option<&Path>, path: &str) -> Result<Destination, ClientError> {
    let file = match out {
        None => default_out(path)?,
        Some(o) if o.as_os_str() == "-" => return Ok(Destination::Stdout),
        Some(o) if o.is_dir() => o.join(default_out(path)?),
        Some(o) if o.as_os_str().as_encoded_bytes().ends_with(b"/") => {
            return Err(ClientError::Usage(format!(
                "-o {}: no such directory",
                o.display()
            )));
        }
        Some(o) => o.to_owned(),
    };
    if file.is_dir() {
        return Err(ClientError::Usage(format!(
            "cannot save to {}: it is a directory",
            file.display()
        )));
    }
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(ClientError::Usage(format!(
            "cannot save to {}: no directory {}",
            file.display(),
            parent.display()
        )));
    }
    Ok(Destination::File(file))
}

/// The percentage `part` is of `whole`, for the user.
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// What is on disk before a download starts.
struct OnDisk {
    /// Bytes to continue after.
    have: u64,
    /// The BLAKE3 state over them, so that the final digest covers them.
    prefix: Option<blake3::Hasher>,
    /// `--resume` over a complete file under its final name: verify it, download nothing.
    verify_only: bool,
}

/// Downloads `path` from `session` according to `opts`.
///
/// A download that stops before its end (connection lost, corrupted chunk, Ctrl-C) keeps
/// what arrived in `FILE.partial` and fails with [`ClientError::Cut`], naming it.
pub async fn get(
    session: &Session,
    path: &str,
    opts: &GetOptions,
) -> Result<GetReport, ClientError> {
    let dest = destination(opts.out.as_deref(), path)?;
    let out = match &dest {
        Destination::File(f) => f.clone(),
        Destination::Stdout if opts.resume => {
            return Err(ClientError::Usage(
                "--resume continues a file on disk: it cannot be used with -o -".into(),
            ));
        }
        Destination::Stdout => PathBuf::from("-"),
    };
    let partial = partial_path(&out);
    let started = Instant::now();

    // Verified streaming: every chunk is checked against the file's digest as it arrives,
    // and a partial file's bytes against the tree once the stream has proved it.
    let tree = session.established().caps.contains(Caps::VERIFIED);
    let disk = match &dest {
        Destination::Stdout => OnDisk {
            have: 0,
            prefix: None,
            verify_only: false,
        },
        Destination::File(_) => {
            let (p, o, notes, resume) = (partial.clone(), out.clone(), opts.notes, opts.resume);
            tokio::task::spawn_blocking(move || on_disk(&p, &o, resume, notes, !tree))
                .await
                .map_err(|e| ClientError::Usage(e.to_string()))??
        }
    };
    let have = disk.have;
    let verify = tree && !disk.verify_only;
    // A verified stream starts on a group boundary: back to the one before the last byte on
    // disk, so that at least one group comes (and proves the tree above the bytes kept).
    let from = if verify && have > 0 {
        (have - 1) / GROUP_LEN * GROUP_LEN
    } else {
        have
    };
    // Opened before the request, so that a directory that cannot be written fails at once.
    let mut file = match &dest {
        Destination::File(_) if !disk.verify_only => Some(PartialFile::open(&partial, have > 0)?),
        _ => None,
    };
    let open = OpenOptions {
        path: path.to_owned(),
        mode: if opts.realtime {
            Mode::Realtime
        } else {
            Mode::Download
        },
        resume: if from > 0 {
            Resume::Offset(from)
        } else {
            Resume::Start
        },
        compress: opts.compress,
        raw: have > 0,
        fragment: false,
        header_crc: verify && session.established().caps.contains(Caps::HEADER_CRC),
        chunk_size: opts.chunk_size,
    };
    let opened = session.open(&open).await;
    let mut incoming = match opened {
        Ok(i) => i,
        Err(e) => {
            if let Some(f) = file.take() {
                f.abandon();
            }
            return Err(resume_refused(e, &disk, &partial, &out));
        }
    };
    let info = incoming.opened.clone();
    tracing::info!(
        path,
        total_len = info.total_len,
        start_offset = info.start_offset,
        chunk_size = info.chunk_size,
        "opened"
    );
    if info.start_offset != from {
        if let Some(f) = file.take() {
            f.abandon();
        }
        incoming.cancel().await;
        return Err(ClientError::Usage(format!(
            "server resumed at {} instead of {from}",
            info.start_offset
        )));
    }
    if let Some(len) = info.total_len.filter(|&len| verify && have > len) {
        // Rounded down, the resume point fell within the file: the partial is still longer
        // than it, so the file changed on the server, as a resume past the end says.
        if let Some(f) = file.take() {
            f.abandon();
        }
        incoming.cancel().await;
        return Err(ClientError::Resume {
            file: partial.display().to_string(),
            reason: format!(
                "{} has {have} bytes, more than the file on the server ({len} bytes)",
                partial.display()
            ),
        });
    }
    let open_resume = if from > 0 {
        Resume::Offset(from)
    } else {
        Resume::Start
    };
    // The server decides by the same rule.
    let verify = verify && verified_start(session.established().caps, open_resume).is_some();
    let mut verifier = match (verify, info.digest.known(), info.total_len) {
        (false, ..) => None,
        (true, Some(root), Some(len)) => match Verifier::new(root, len, from) {
            Ok(v) => Some(v),
            Err(error) => {
                incoming.cancel().await;
                let seq = info.start_seq;
                return Err(ClientError::Unverified { seq, error });
            }
        },
        (true, ..) => {
            incoming.cancel().await;
            return Err(ClientError::Unverified {
                seq: info.start_seq,
                error: VerifyError::Excess("a verified stream opened without its digest"),
            });
        }
    };
    if disk.verify_only && info.total_len != Some(have) {
        incoming.cancel().await;
        return Err(ClientError::Resume {
            file: out.display().to_string(),
            reason: format!(
                "{} exists but has {have} bytes where the server's has {}",
                out.display(),
                info.total_len
                    .map_or_else(|| "an unknown length".into(), |n| n.to_string()),
            ),
        });
    }
    if opts.notes && have > 0 && !disk.verify_only {
        let total = info.total_len.unwrap_or(have);
        eprintln!(
            "resuming {} from {have} bytes ({} of {}, {:.0} %)",
            partial.display(),
            human_bytes(have),
            human_bytes(total),
            percent(have, total)
        );
    }
    let mut expect = Expect::new();
    expect.total_len = info.total_len;
    expect.chunk_count = if have == 0 { info.chunk_count } else { None };
    expect.start_seq = info.start_seq;
    expect.start_offset = from;
    expect.prefix = disk.prefix;
    // The tree check hashes every byte already: no second pass for a whole-file digest.
    expect.digest_pass = verifier.is_none();
    let mut reasm = Reassembler::new(expect);

    let sink = match (&dest, file) {
        (Destination::Stdout, _) => Some(Writer::Stdout(std::io::stdout())),
        (_, Some(f)) => Some(Writer::File(f.start(from)?, partial.clone())),
        (_, None) => None, // verify only: nothing arrives but the digest
    };
    let (wtx, wrx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
    let writer = sink.map(|w| tokio::task::spawn_blocking(move || write_all(w, wrx)));

    let bar = (opts.progress && dest != Destination::Stdout)
        .then(|| progress_bar(info.total_len.unwrap_or(0), have));
    let mut batch = Vec::new();
    let mut batch_len = 0;
    let mut verified = false;
    let mut last_seq = info.start_seq;
    let received = async {
        loop {
            let chunk = tokio::select! {
                biased;
                () = opts.cancel.cancelled() => return Err(ClientError::Interrupted),
                c = incoming.next() => c,
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            let seq = chunk.seq;
            if chunk.has(ChunkFlags::HEADER_CRC) && verifier.is_none() {
                // Asked for, but the server gave no tree to check the payload against.
                let stream = chunk.stream;
                return Err(ClientError::Corrupt(DecodeError::Unproven { stream, seq }));
            }
            last_seq = seq;
            reasm.push(chunk)?;
            let mut ready = Vec::new();
            let mut failed = None;
            while let Some((_, bytes)) = reasm.poll_write() {
                match verifier.as_mut() {
                    None => ready.push(bytes),
                    Some(v) => {
                        let r = verify_bytes(v, &mut incoming, bytes, seq, &opts.cancel).await;
                        // The groups verified before a failing one are kept, like any others.
                        ready.extend(std::iter::from_fn(|| v.poll_verified()));
                        if let Err(e) = r {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            for bytes in ready {
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
            if let Some(e) = failed {
                return Err(e);
            }
        }
        if let Some(v) = verifier.as_mut() {
            let end = last_seq;
            while let Some(n) = incoming.try_proof() {
                v.add_nodes(&n)
                    .map_err(|error| ClientError::Unverified { seq: end, error })?;
            }
            v.finish()
                .map_err(|error| ClientError::Unverified { seq: end, error })?;
            verified = true;
            return Ok(());
        }
        // Announced in OPENED, or sent after the last chunk: checked by `finish` below.
        let digest = tokio::select! {
            biased;
            () = opts.cancel.cancelled() => return Err(ClientError::Interrupted),
            d = incoming.file_digest() => d?,
        };
        if let Some(d) = digest {
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
    match &received {
        Err(e @ ClientError::Unverified { .. }) => {
            incoming.abort(ErrorCode::Unverified, e.to_string()).await;
        }
        Err(_) => incoming.cancel().await,
        Ok(()) => {}
    }
    let written = match writer {
        Some(w) => w.await.map_err(|e| ClientError::Usage(e.to_string()))?,
        None => Ok(()),
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    written?;
    if let Err(e) = received {
        return Err(match (&dest, e) {
            (
                Destination::File(_),
                cause @ (ClientError::Lost(_)
                | ClientError::Silent(_)
                | ClientError::Corrupt(_)
                | ClientError::Unverified { .. }
                | ClientError::Interrupted),
            ) => ClientError::Cut {
                cause: Box::new(cause),
                have: std::fs::metadata(&partial).map_or(have, |m| m.len()),
                partial: partial.display().to_string(),
                hint: "run again with --resume to continue".into(),
            },
            (_, e) => e,
        });
    }
    // Nothing is renamed unless every byte arrived and the digest matches.
    let summary = reasm.finish().map_err(|e| match e {
        e @ (ReassemblyError::DigestMismatch { .. } | ReassemblyError::LengthMismatch { .. })
            if have > 0 =>
        {
            let file = if disk.verify_only { &out } else { &partial };
            ClientError::Resume {
                file: file.display().to_string(),
                reason: e.to_string(),
            }
        }
        e => ClientError::Reassembly(e),
    })?;
    // A resumed verified download: the bytes kept on disk against the tree's subtrees
    // before the stream's start, which the stream's nodes proved.
    if let Some(v) = verifier.filter(|v| v.start() > 0) {
        let p = partial.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let f = File::open(&p).map_err(|e| ClientError::file(&p, e))?;
            let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
            v.check_prefix(&mut reader)
                .map_err(|e| ClientError::Resume {
                    file: p.display().to_string(),
                    reason: e.to_string(),
                })
        })
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))?;
        checked?;
    }
    if !disk.verify_only && dest != Destination::Stdout {
        std::fs::rename(&partial, &out).map_err(|e| ClientError::file(&out, e))?;
    }
    tracing::info!(len = summary.len, verified, "saved to {}", out.display());
    Ok(GetReport {
        path: out,
        len: summary.len,
        resumed_from: have,
        elapsed: started.elapsed(),
        verified: verified && (verify || summary.digest.is_some()),
        already_complete: disk.verify_only,
        note: info.note,
    })
}

/// Feeds in-order `bytes` (which chunk `seq` completed) to the verifier with the tree nodes
/// already there, and waits for the nodes of the groups it holds if they have not come yet
/// (QUIC: they travel on the control stream, beside the chunks).
async fn verify_bytes(
    v: &mut Verifier,
    incoming: &mut crate::session::Incoming,
    bytes: Bytes,
    seq: u64,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    let fail = |error| ClientError::Unverified { seq, error };
    while let Some(n) = incoming.try_proof() {
        v.add_nodes(&n).map_err(fail)?;
    }
    v.push(bytes).map_err(fail)?;
    while v.needs_nodes() {
        let nodes = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(ClientError::Interrupted),
            n = tokio::time::timeout(NODE_WAIT, incoming.proof()) => n,
        };
        match nodes {
            Ok(Some(n)) => v.add_nodes(&n).map_err(fail)?,
            Ok(None) => {
                return Err(fail(VerifyError::Excess(
                    "the server stopped sending the tree nodes",
                )));
            }
            Err(_) => {
                return Err(ClientError::Lost(format!(
                    "the server sent no tree nodes for chunk {seq} within {NODE_WAIT:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Looks at what is on disk for a download to `out`: the partial file to continue
/// (`--resume`), a complete file to verify (`--resume` with no partial file), or nothing.
///
/// `hash_partial`: hash a partial file for the whole-file digest; a verified download checks
/// it against the tree instead, after the stream, and only needs its length here.
fn on_disk(
    partial: &Path,
    out: &Path,
    resume: bool,
    notes: bool,
    hash_partial: bool,
) -> Result<OnDisk, ClientError> {
    let fresh = OnDisk {
        have: 0,
        prefix: None,
        verify_only: false,
    };
    if !resume {
        if notes && partial.exists() {
            eprintln!(
                "{} exists: starting over (--resume continues it)",
                partial.display()
            );
        }
        return Ok(fresh);
    }
    if !hash_partial {
        match std::fs::metadata(partial) {
            Ok(m) => {
                return Ok(OnDisk {
                    have: m.len(),
                    prefix: None,
                    verify_only: false,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClientError::file(partial, e)),
        }
    } else if let Some((have, prefix)) = hash_prefix(partial)? {
        return Ok(OnDisk {
            have,
            prefix: Some(prefix),
            verify_only: false,
        });
    }
    if let Some((have, prefix)) = hash_prefix(out)? {
        if notes {
            eprintln!(
                "{} is already there ({}): verifying it against the server's digest",
                out.display(),
                human_bytes(have)
            );
        }
        return Ok(OnDisk {
            have,
            prefix: Some(prefix),
            verify_only: true,
        });
    }
    if notes {
        eprintln!(
            "no {} to resume: downloading from the start",
            partial.display()
        );
    }
    Ok(fresh)
}

/// The server refused to open: a resume past the end of the file means it changed.
fn resume_refused(e: ClientError, disk: &OnDisk, partial: &Path, out: &Path) -> ClientError {
    match e {
        ClientError::Server {
            code: ErrorCode::BadRequest,
            message,
        } if disk.have > 0 && message.contains("past the end") => {
            let file = if disk.verify_only { out } else { partial };
            ClientError::Resume {
                file: file.display().to_string(),
                reason: format!(
                    "{} has {} bytes, more than the file on the server ({message})",
                    file.display(),
                    disk.have
                ),
            }
        }
        e => e,
    }
}

/// `FILE.partial`, opened before the download so that an unwritable target fails before any
/// byte is fetched, and removed again if it was created for a request the server refused.
pub(crate) struct PartialFile {
    file: File,
    path: PathBuf,
    created: bool,
    append: bool,
}

impl PartialFile {
    pub(crate) fn open(path: &Path, append: bool) -> Result<Self, ClientError> {
        let created = !path.exists();
        let file = FsOpen::new()
            .create(true)
            .write(true)
            .append(append)
            .open(path)
            .map_err(|e| ClientError::file(path, e))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            created,
            append,
        })
    }

    /// The download starts: a fresh one truncates what an earlier attempt left, a resumed one
    /// what it will fetch again (from `keep`: a verified resume starts on a group boundary).
    pub(crate) fn start(self, keep: u64) -> Result<File, ClientError> {
        let keep = if self.append { keep } else { 0 };
        let len = self
            .file
            .metadata()
            .map_err(|e| ClientError::file(&self.path, e))?
            .len();
        if len != keep {
            self.file
                .set_len(keep)
                .map_err(|e| ClientError::file(&self.path, e))?;
        }
        Ok(self.file)
    }

    /// The download did not start: leave the disk as it was.
    pub(crate) fn abandon(self) {
        if self.created {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where the writer thread puts the bytes.
pub(crate) enum Writer {
    File(File, PathBuf),
    Stdout(std::io::Stdout),
}

impl Writer {
    fn error(&self, e: std::io::Error) -> ClientError {
        match self {
            Self::File(_, path) => ClientError::file(path, e),
            Self::Stdout(_) => ClientError::stdout(e),
        }
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::File(f, _) => f.write(buf),
            Self::Stdout(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Self::File(f, _) => f.write_vectored(bufs),
            Self::Stdout(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::File(f, _) => f.flush(),
            Self::Stdout(s) => s.flush(),
        }
    }
}

/// The length and BLAKE3 state of the file at `path`, or `None` if there is none.
pub(crate) fn hash_prefix(path: &Path) -> Result<Option<(u64, blake3::Hasher)>, ClientError> {
    let partial = path;
    let mut f = match File::open(partial) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
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
    Ok(Some((n, hasher)))
}

pub(crate) fn write_all(
    mut file: Writer,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
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
                Ok(0) => return Err(file.error(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(file.error(e)),
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
    match &file {
        // Durable before the rename that gives it its final name.
        Writer::File(f, path) => f.sync_all().map_err(|e| ClientError::file(path, e)),
        Writer::Stdout(_) => file.flush().map_err(|e| file.error(e)),
    }
}

pub(crate) fn progress_bar(total: u64, done: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40.cyan/blue} {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}

/// How many automatic resumes in a row [`get_resuming`] tries without getting a byte further.
pub const DEFAULT_RETRIES: u32 = 3;

/// Like [`get`], but on a lost connection or a corrupted chunk it reconnects and resumes from
/// what is on disk (the partial file is always consistent: bytes are written in order and
/// only after their chunk's checksum passed). It gives up after `retries` attempts in a row
/// that brought no new byte, however many attempts made progress before.
pub async fn get_resuming(
    url: &crate::url::Url,
    connect: &crate::session::ConnectOptions,
    opts: &GetOptions,
    retries: u32,
) -> Result<GetReport, ClientError> {
    let mut opts = opts.clone();
    let mut stalled = 0;
    // Bytes on disk when the current attempt started.
    let mut before = match destination(opts.out.as_deref(), &url.path) {
        Ok(Destination::File(f)) if opts.resume => {
            std::fs::metadata(partial_path(&f)).map_or(0, |m| m.len())
        }
        _ => 0,
    };
    // The last cut: its partial file and size, to tell the user if reconnecting fails.
    let mut last: Option<(String, u64, String)> = None;
    loop {
        let connected = tokio::select! {
            biased;
            () = opts.cancel.cancelled() => Err(ClientError::Interrupted),
            s = Session::connect(url, connect) => s,
        };
        let session = match (connected, last.take()) {
            (Ok(s), _) => s,
            (Err(cause), Some((partial, have, hint))) => {
                return Err(ClientError::Cut {
                    cause: Box::new(cause),
                    partial,
                    have,
                    hint,
                });
            }
            (Err(e), None) => return Err(e),
        };
        let result = get(&session, &url.path, &opts).await;
        session.close().await;
        match result {
            Err(ClientError::Cut {
                cause,
                partial,
                have,
                hint,
            }) if !cause.is_interrupted() => {
                stalled = if have > before { 0 } else { stalled + 1 };
                before = have;
                if stalled > retries {
                    return Err(ClientError::Cut {
                        cause,
                        partial,
                        have,
                        hint,
                    });
                }
                if opts.notes {
                    eprintln!(
                        "{cause}; resuming from {have} bytes ({}){}",
                        human_bytes(have),
                        if stalled > 0 {
                            format!(" (attempt {stalled} of {retries} without progress)")
                        } else {
                            String::new()
                        }
                    );
                }
                tracing::debug!(have, stalled, "resuming after {cause}");
                if stalled > 0 {
                    // The same failure again at once is likely: give the path a moment.
                    tokio::time::sleep(Duration::from_millis(250) * stalled).await;
                }
                opts.resume = true;
                last = Some((partial, have, hint));
            }
            other => return other,
        }
    }
}
