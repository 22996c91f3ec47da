//! `record`: a live channel saved to files players open (see
//! [`chunkcast_media::ingest::record`] for the format per codec).
//!
//! Each file is written under `NAME.partial` and renamed once finished (its WAV header
//! rewritten with the final sizes), also after Ctrl-C, so a final name never holds a
//! truncated file. A publisher that goes away and comes back continues the same file (the gap
//! is noted on stderr) unless its stream's header changed, which starts the next file
//! (`NAME-2.EXT`, `NAME-3.EXT`, …); so does `--segment SECONDS`, at the first keyframe after
//! that much media time.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chunkcast_media::ingest::record::{Recorder, Written};
use chunkcast_protocol::{ChunkFlags, Codec, ErrorCode};
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::session::{ConnectOptions, Session};
use crate::url::Url;

/// How to record.
#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// Start a new file at the first keyframe after this much media time.
    pub segment: Option<Duration>,
    /// Finishes the files and stops when cancelled (Ctrl-C).
    pub stop: CancellationToken,
    /// Tell the user on stderr about gaps and new files.
    pub notes: bool,
}

/// What a recording did.
#[derive(Debug, Clone, Default)]
pub struct RecordReport {
    /// The files written, in order, each under its final name.
    pub files: Vec<PathBuf>,
    /// Whole units written.
    pub units: u64,
    /// Media time recorded, summed over the files.
    pub duration_us: u64,
    /// Times the publisher went away and the recording went on with the next one.
    pub gaps: u32,
    /// Whether [`RecordOptions::stop`] ended it before the channel ended.
    pub stopped: bool,
}

/// The file being written.
struct Open {
    path: PathBuf,
    partial: PathBuf,
    file: File,
    rec: Recorder,
    codec: Codec,
    /// pts of the file's first unit, for `--segment`.
    start_pts: Option<u64>,
}

impl Open {
    fn create(path: PathBuf, codec: Codec) -> Result<Self, ClientError> {
        let rec = Recorder::new(codec).map_err(|e| ClientError::Usage(e.to_string()))?;
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| ClientError::file(&partial, e))?;
        Ok(Self {
            path,
            partial,
            file,
            rec,
            codec,
            start_pts: None,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.file
            .write_all(bytes)
            .map_err(|e| ClientError::file(&self.partial, e))
    }

    /// Rewrites the header, syncs, and renames to the final name.
    fn finish(mut self, report: &mut RecordReport) -> Result<(), ClientError> {
        let err = |e| ClientError::file(&self.partial, e);
        if let Some(h) = self.rec.header() {
            self.file.seek(SeekFrom::Start(0)).map_err(err)?;
            self.file.write_all(&h).map_err(err)?;
        }
        self.file.sync_all().map_err(err)?;
        drop(self.file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| ClientError::file(&self.path, e))?;
        report.units += self.rec.units();
        report.duration_us += self.rec.duration_us();
        report.files.push(self.path);
        Ok(())
    }
}

/// `FILE` for the first file, `STEM-N.EXT` for the n-th.
fn nth(out: &Path, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match out.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    out.with_file_name(name)
}

/// Records `channel` into `out` (and its successors) until the channel ends or `opts.stop`.
pub async fn record(
    session: &Session,
    channel: &str,
    out: &Path,
    opts: &RecordOptions,
) -> Result<RecordReport, ClientError> {
    let mut report = RecordReport::default();
    let mut open: Option<Open> = None;
    let result = record_into(session, channel, out, opts, &mut open, &mut report).await;
    // However it ended, the file written so far is finished under its final name.
    if let Some(o) = open.take() {
        o.finish(&mut report)?;
    }
    result.map(|()| report)
}

async fn record_into(
    session: &Session,
    channel: &str,
    out: &Path,
    opts: &RecordOptions,
    open: &mut Option<Open>,
    report: &mut RecordReport,
) -> Result<(), ClientError> {
    let mut files = 0usize;
    let mut lost_at: Option<Instant> = None;
    let mut buf = Vec::new();
    loop {
        let subscribed = tokio::select! {
            biased;
            () = opts.stop.cancelled() => {
                report.stopped = true;
                return Ok(());
            }
            s = session.subscribe(channel) => s?,
        };
        let mut inc = subscribed;
        let codec = inc.opened.codec;
        match open.as_mut() {
            Some(o) if o.codec == codec => o.rec.restart(),
            Some(_) | None => {
                if let Some(o) = open.take() {
                    o.finish(report)?;
                }
                files += 1;
                *open = Some(Open::create(nth(out, files), codec)?);
            }
        }
        if let Some(t) = lost_at.take()
            && opts.notes
        {
            eprintln!(
                "record: the publisher is back after {:.1} s; the recording goes on",
                t.elapsed().as_secs_f64()
            );
        }
        loop {
            let next = tokio::select! {
                biased;
                () = opts.stop.cancelled() => {
                    report.stopped = true;
                    inc.cancel().await;
                    return Ok(());
                }
                c = inc.next() => c,
            };
            let c = match next {
                None => return Ok(()),
                Some(Err(e))
                    if matches!(
                        e.code(),
                        Some(ErrorCode::PublisherLost | ErrorCode::BadInput)
                    ) =>
                {
                    // A publisher that went away, or whose input broke, may come back.
                    report.gaps += 1;
                    lost_at = Some(Instant::now());
                    if opts.notes {
                        eprintln!("record: {e}; waiting for a publisher (Ctrl-C stops)");
                    }
                    break;
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) => c,
            };
            if c.has(ChunkFlags::END_OF_STREAM) && c.payload.is_empty() {
                return Ok(());
            }
            let Some(o) = open.as_mut() else {
                return Ok(());
            };
            let rotate = opts.segment.is_some_and(|seg| {
                o.rec.at_key(&c)
                    && o.start_pts
                        .is_some_and(|s| c.pts_us.saturating_sub(s) >= seg.as_micros() as u64)
            });
            buf.clear();
            let written = if rotate {
                Written::NewFile
            } else {
                o.rec
                    .chunk(&c, &mut buf)
                    .map_err(|e| ClientError::Damaged(format!("recording {channel}: {e}")))?
            };
            if written == Written::NewFile {
                files += 1;
                let mut next = Open::create(nth(out, files), codec)?;
                o.rec.hand_over(&mut next.rec);
                if opts.notes {
                    eprintln!("record: next file {}", next.path.display());
                }
                let done = std::mem::replace(o, next);
                done.finish(report)?;
                let o = open.as_mut().expect("just replaced");
                o.rec
                    .chunk(&c, &mut buf)
                    .map_err(|e| ClientError::Damaged(format!("recording {channel}: {e}")))?;
            }
            let o = open.as_mut().expect("open");
            if !c.has(ChunkFlags::INIT) && o.start_pts.is_none() {
                o.start_pts = Some(c.pts_us);
            }
            o.write(&buf)?;
        }
    }
}

/// `chunkcast record URL -o FILE [--segment SECONDS]`.
pub async fn run_record(
    url: &Url,
    connect: &ConnectOptions,
    out: &Path,
    segment: Option<Duration>,
) -> Result<(), ClientError> {
    let channel = url.path.trim_matches('/');
    if !channel.starts_with("live/") {
        return Err(ClientError::Usage(format!(
            "{url} is not a live channel: use …/live/NAME"
        )));
    }
    let session = Session::connect(url, connect).await?;
    let opts = RecordOptions {
        segment,
        notes: true,
        ..Default::default()
    };
    let ctrl_c = crate::play::stop_on_ctrl_c(opts.stop.clone());
    let result = record(&session, channel, out, &opts).await;
    ctrl_c.abort();
    session.close().await;
    let r = result?;
    let names: Vec<String> = r.files.iter().map(|f| f.display().to_string()).collect();
    eprintln!(
        "recorded {} units, {:.3} s, into {}{}",
        r.units,
        r.duration_us as f64 / 1e6,
        if names.is_empty() {
            "no file".to_owned()
        } else {
            names.join(", ")
        },
        if r.gaps > 0 {
            format!(" ({} publisher gap(s))", r.gaps)
        } else {
            String::new()
        }
    );
    if r.stopped {
        return Err(ClientError::Interrupted);
    }
    Ok(())
}
