//! `chunkcast get http(s)://HOST:PORT/PATH`: a file over HTTP, verified chunk by chunk.
//!
//! The index (`/v1/index/PATH`) gives the file's size, digest and chunk URLs; each chunk's
//! body carries the tree nodes that prove it alone (`docs/HTTP.md`), so chunks are fetched a
//! few at a time, in any order the connections deliver them, and each is checked against the
//! digest with its own [`Verifier`] before its bytes go, in file order, to `FILE.partial`
//! (renamed once every chunk is in). A cache that alters a byte is caught at that chunk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_protocol::verify::{GROUP_LEN, Verifier, VerifyError};
use chunkcast_protocol::wire::codec::CHUNK_OVERHEAD;
use chunkcast_protocol::{ChunkFlags, Frame};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{HttpClient, bad, digest_from_hex, encode_path};
use crate::error::ClientError;
use crate::get::{
    Destination, GetOptions, GetReport, PartialFile, WRITE_QUEUE, Writer, destination, hash_prefix,
    partial_path, percent, progress_bar, write_all,
};
use crate::ls::human_bytes;

/// Chunk requests in flight: enough to hide a request's round trip behind the others'
/// transfers (HTTP/2 multiplexes them on one connection; HTTP/1.1 opens that many), few
/// enough that what waits to be written stays a few chunks (1 MiB at the default size).
pub const IN_FLIGHT: usize = 4;

/// Attempts at one chunk when the path fails (a lost connection, a 5xx or 429 from a cache)
/// before the download stops; a chunk that fails verification is not asked again.
const ATTEMPTS: u32 = 3;

/// The chunk sizes the server accepts (`docs/HTTP.md`): whole groups, 16 KiB to 4 MiB.
const MAX_CHUNK: u64 = 4 << 20;

/// A file's index, checked (`GET /v1/index/PATH`).
#[derive(Debug, Clone)]
pub struct FileIndex {
    /// The file's length.
    pub size: u64,
    /// Its BLAKE3 digest, the root every chunk is verified against.
    pub digest: [u8; 32],
    /// Payload bytes per chunk (the last may be shorter).
    pub chunk_size: u64,
    /// How many chunks (1 for an empty file: one empty chunk).
    pub chunks: u64,
    /// The chunk URL, with `{seq}` where each chunk's number goes.
    pub chunk_url: String,
}

/// The index as sent (`docs/HTTP.md`); keys the client does not use are ignored.
#[derive(Debug, serde::Deserialize)]
pub(super) struct IndexJson {
    pub(super) version: u32,
    pub(super) size: u64,
    pub(super) digest: String,
    pub(super) group_size: u64,
    pub(super) chunk_size: u64,
    pub(super) chunks: u64,
    pub(super) chunk_url: String,
}

impl FileIndex {
    /// Checks what the server sent against the rules of `docs/HTTP.md`.
    pub(super) fn from_json(j: IndexJson) -> Result<Self, ClientError> {
        let digest = digest_from_hex(&j.digest)
            .ok_or_else(|| bad(format!("index digest {:?} is not 64 hex digits", j.digest)))?;
        if j.version != 1 {
            return Err(bad(format!(
                "index version {} (this client reads 1)",
                j.version
            )));
        }
        if j.group_size != GROUP_LEN {
            return Err(bad(format!("index group_size {}", j.group_size)));
        }
        if !valid_chunk_size(j.chunk_size) {
            return Err(bad(format!("index chunk_size {}", j.chunk_size)));
        }
        if j.chunks != j.size.div_ceil(j.chunk_size).max(1) {
            return Err(bad(format!(
                "index says {} chunks of {} for {} bytes",
                j.chunks, j.chunk_size, j.size
            )));
        }
        if !j.chunk_url.starts_with('/') || !j.chunk_url.contains("{seq}") {
            return Err(bad(format!("index chunk_url {:?}", j.chunk_url)));
        }
        Ok(Self {
            size: j.size,
            digest,
            chunk_size: j.chunk_size,
            chunks: j.chunks,
            chunk_url: j.chunk_url,
        })
    }

    /// Where chunk `seq` starts in the file.
    pub fn offset(&self, seq: u64) -> u64 {
        seq * self.chunk_size
    }

    /// Chunk `seq`'s payload length.
    pub fn len(&self, seq: u64) -> u64 {
        self.chunk_size
            .min(self.size - self.offset(seq).min(self.size))
    }

    /// Chunk `seq`'s request path.
    pub fn url(&self, seq: u64) -> String {
        self.chunk_url.replace("{seq}", &seq.to_string())
    }
}

/// Whether the server accepts `n` as a chunk size.
pub fn valid_chunk_size(n: u64) -> bool {
    (GROUP_LEN..=MAX_CHUNK).contains(&n) && n % GROUP_LEN == 0
}

/// Fetches and checks the index of `path`; `chunk_size` 0 takes the server's default.
pub async fn index(
    client: &HttpClient,
    path: &str,
    chunk_size: u32,
) -> Result<FileIndex, ClientError> {
    let mut url = format!("/v1/index/{}", encode_path(path.trim_start_matches('/')));
    if chunk_size != 0 {
        url.push_str(&format!("?chunk_size={chunk_size}"));
    }
    FileIndex::from_json(client.json(&url).await?)
}

/// Decodes and verifies chunk `seq`'s body: its tree nodes, then its one CHUNK frame, whose
/// bytes must hash to the file's digest through those nodes. Returns the verified bytes and
/// the verifier (which knows the subtrees before the chunk, for a resume's check).
pub fn verify_chunk(
    index: &FileIndex,
    seq: u64,
    frames: Vec<Frame>,
) -> Result<(Vec<Bytes>, Verifier), ClientError> {
    let fail = |error| ClientError::Unverified { seq, error };
    let offset = index.offset(seq);
    let last = seq + 1 == index.chunks;
    let mut v = Verifier::new(index.digest, index.size, offset).map_err(fail)?;
    let mut chunk = None;
    for frame in frames {
        match frame {
            Frame::Proof { nodes, .. } if chunk.is_none() => v.add_nodes(&nodes).map_err(fail)?,
            Frame::Chunk(c) if chunk.is_none() => chunk = Some(c),
            other => {
                return Err(bad(format!(
                    "chunk {seq}: a {} frame where its body ends",
                    other.name()
                )));
            }
        }
    }
    let c = chunk.ok_or_else(|| bad(format!("chunk {seq}: a body without its CHUNK frame")))?;
    if c.seq != seq || c.offset != offset {
        return Err(bad(format!(
            "asked for chunk {seq} at offset {offset}, got chunk {} at offset {}",
            c.seq, c.offset
        )));
    }
    if c.has(ChunkFlags::COMPRESSED) {
        return Err(bad(format!(
            "chunk {seq} is lz4-compressed, which HTTP bodies never are"
        )));
    }
    if c.payload.len() as u64 != index.len(seq) {
        return Err(fail(VerifyError::Incomplete {
            verified: c.payload.len() as u64,
            len: index.len(seq),
        }));
    }
    if c.has(ChunkFlags::END_OF_STREAM) != last {
        return Err(bad(format!(
            "chunk {seq} of {}: END_OF_STREAM {}",
            index.chunks,
            if last { "missing" } else { "before the end" }
        )));
    }
    v.push(c.payload).map_err(fail)?;
    if last {
        v.finish().map_err(fail)?;
    } else if v.needs_nodes() {
        return Err(fail(VerifyError::Incomplete {
            verified: v.verified_to() - offset,
            len: index.len(seq),
        }));
    }
    let bytes = std::iter::from_fn(|| v.poll_verified()).collect();
    Ok((bytes, v))
}

/// Whether asking again may help: the path or a cache failed, not the data.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Lost(_) | ClientError::Connect { .. } | ClientError::Timeout(_) => true,
        ClientError::Http { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// Fetches and verifies chunk `seq`, asking again (`ATTEMPTS` in all) when the path fails.
pub async fn fetch_chunk(
    client: &HttpClient,
    index: &FileIndex,
    seq: u64,
) -> Result<(Vec<Bytes>, Verifier), ClientError> {
    let cs = index.chunk_size as usize;
    // Its nodes (1024 a frame) and its one CHUNK frame.
    let max_frame = (cs + CHUNK_OVERHEAD).max(1 + 4 + 4 + 1024 * 64);
    let max_body = cs + cs / 128 + 64 * 1024;
    let url = index.url(seq);
    let mut attempt = 1;
    loop {
        let fetched = client.frames(&url, max_frame, max_body).await;
        match fetched {
            Ok(frames) => return verify_chunk(index, seq, frames),
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                tracing::debug!(seq, attempt, "asking again for chunk: {e}");
                tokio::time::sleep(Duration::from_millis(250) * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Downloads `path` from the HTTP server of `client` according to `opts` (its `realtime`
/// and `compress` do not apply over HTTP; `chunk_size`, when set, must be a multiple of
/// 16 KiB from 16 KiB to 4 MiB).
///
/// A download that stops before its end keeps the verified chunks that arrived in
/// `FILE.partial` and fails with [`ClientError::Cut`]; `resume` continues it from the chunk
/// holding the first missing byte, after checking the bytes kept against the digest.
pub async fn get(
    client: &HttpClient,
    path: &str,
    opts: &GetOptions,
) -> Result<GetReport, ClientError> {
    if opts.chunk_size != 0 && !valid_chunk_size(u64::from(opts.chunk_size)) {
        return Err(ClientError::Usage(format!(
            "--chunk-size {} over HTTP: a multiple of 16 KiB from 16 KiB to 4 MiB",
            opts.chunk_size
        )));
    }
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
    let index = index(client, path, opts.chunk_size).await?;
    tracing::info!(path, size = index.size, chunks = index.chunks, "index");

    let have = match &dest {
        Destination::File(_) if opts.resume => match std::fs::metadata(&partial) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(report) = already_complete(&index, &out, opts.notes, started).await? {
                    return Ok(report);
                }
                if opts.notes {
                    eprintln!(
                        "no {} to resume: downloading from the start",
                        partial.display()
                    );
                }
                0
            }
            Err(e) => return Err(ClientError::file(&partial, e)),
        },
        Destination::File(_) => {
            if opts.notes && partial.exists() {
                eprintln!(
                    "{} exists: starting over (--resume continues it)",
                    partial.display()
                );
            }
            0
        }
        Destination::Stdout => 0,
    };
    if have > index.size {
        return Err(ClientError::Resume {
            file: partial.display().to_string(),
            reason: format!(
                "{} has {have} bytes, more than the file on the server ({} bytes)",
                partial.display(),
                index.size
            ),
        });
    }
    // The chunk holding the first missing byte (the last one when all are there: it proves
    // the tree above the bytes kept); the bytes before it are kept and checked.
    let first = if have == 0 {
        0
    } else {
        (have / index.chunk_size).min(index.chunks - 1)
    };
    let keep = index.offset(first);
    if opts.notes && have > 0 {
        eprintln!(
            "resuming {} from {keep} bytes ({} of {}, {:.0} %)",
            partial.display(),
            human_bytes(keep),
            human_bytes(index.size),
            percent(keep, index.size)
        );
    }
    let sink = match &dest {
        Destination::Stdout => Writer::Stdout(std::io::stdout()),
        Destination::File(_) => {
            let file = PartialFile::open(&partial, have > 0)?;
            Writer::File(file.start(keep)?, partial.clone())
        }
    };
    let (wtx, wrx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_all(sink, wrx));
    let bar =
        (opts.progress && dest != Destination::Stdout).then(|| progress_bar(index.size, keep));

    let received = async {
        let mut chunks = futures_util::stream::iter(first..index.chunks)
            .map(|seq| {
                let index = &index;
                async move { (seq, fetch_chunk(client, index, seq).await) }
            })
            .buffered(IN_FLIGHT);
        let mut written = keep;
        loop {
            let next = tokio::select! {
                biased;
                () = opts.cancel.cancelled() => return Err(ClientError::Interrupted),
                n = chunks.next() => n,
            };
            let Some((seq, fetched)) = next else { break };
            let (bytes, verifier) = fetched?;
            if seq == first && keep > 0 {
                check_kept(verifier, &partial).await?;
            }
            let len: u64 = bytes.iter().map(|b| b.len() as u64).sum();
            if wtx.send(bytes).await.is_err() {
                break; // the writer failed: its error says why
            }
            written += len;
            if let Some(b) = &bar {
                b.inc(len);
            }
        }
        Ok(written)
    }
    .await;
    drop(wtx);
    let wrote = writer
        .await
        .map_err(|e| ClientError::Usage(format!("the writer thread failed: {e}")))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    wrote?;
    let written = match received {
        Ok(n) => n,
        Err(e @ ClientError::Resume { .. }) => return Err(e),
        Err(cause) if dest != Destination::Stdout => {
            return Err(ClientError::Cut {
                cause: Box::new(cause),
                have: std::fs::metadata(&partial).map_or(keep, |m| m.len()),
                partial: partial.display().to_string(),
                hint: "run again with --resume to continue".into(),
            });
        }
        Err(e) => return Err(e),
    };
    if written != index.size {
        return Err(ClientError::BadResponse(format!(
            "{written} bytes arrived for a file of {}",
            index.size
        )));
    }
    if dest != Destination::Stdout {
        std::fs::rename(&partial, &out).map_err(|e| ClientError::file(&out, e))?;
    }
    tracing::info!(len = index.size, "saved to {}", out.display());
    Ok(GetReport {
        path: out,
        len: index.size,
        resumed_from: keep,
        elapsed: started.elapsed(),
        verified: true,
        already_complete: false,
        note: None,
    })
}

/// Checks the bytes kept in `partial` (those before the verifier's start) against the
/// subtrees its chunk's nodes proved.
async fn check_kept(verifier: Verifier, partial: &std::path::Path) -> Result<(), ClientError> {
    let p = partial.to_owned();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&p).map_err(|e| ClientError::file(&p, e))?;
        let reader = std::io::BufReader::with_capacity(1 << 20, f);
        verifier
            .check_prefix(reader)
            .map_err(|e| ClientError::Resume {
                file: p.display().to_string(),
                reason: e.to_string(),
            })
    })
    .await
    .map_err(|e| ClientError::Usage(e.to_string()))?
}

/// `--resume` with no partial file but a complete `out`: verify it against the index's
/// digest, download nothing. `None` when there is no `out`.
async fn already_complete(
    index: &FileIndex,
    out: &std::path::Path,
    notes: bool,
    started: Instant,
) -> Result<Option<GetReport>, ClientError> {
    let o = out.to_owned();
    let hashed = tokio::task::spawn_blocking(move || hash_prefix(&o))
        .await
        .map_err(|e| ClientError::Usage(e.to_string()))??;
    let Some((len, hasher)) = hashed else {
        return Ok(None);
    };
    if notes {
        eprintln!(
            "{} is already there ({}): verifying it against the server's digest",
            out.display(),
            human_bytes(len)
        );
    }
    let reason = if len != index.size {
        Some(format!(
            "{} exists but has {len} bytes where the server's has {}",
            out.display(),
            index.size
        ))
    } else if *hasher.finalize().as_bytes() != index.digest {
        Some(format!("{}: BLAKE3 digest mismatch", out.display()))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(ClientError::Resume {
            file: out.display().to_string(),
            reason,
        });
    }
    Ok(Some(GetReport {
        path: out.to_owned(),
        len,
        resumed_from: len,
        elapsed: started.elapsed(),
        verified: true,
        already_complete: true,
        note: None,
    }))
}
