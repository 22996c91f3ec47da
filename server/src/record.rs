//! `--record DIR`: the server saves every publisher run of every live channel to a file of
//! its own, `DIR/CHANNEL-RUN.EXT` (`live_cam-1733150000123-7.mp4`: the channel with `/` as
//! `_`, the run's start in Unix milliseconds and the publisher's number), in the formats of
//! [`chunkcast_media::ingest::record`]. Each file is written as `NAME.partial` and renamed when
//! the run ends (the publisher ends the channel, goes away, or is taken over), its WAV header
//! finished; a file is never renamed half-written. The recorder is one more viewer of the
//! channel (listed in its viewer count), with a viewer's bounded queue: a disk slower than the
//! stream loses whole units, never the publisher's pace.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chunkcast_media::ingest::record::{Recorder, Written};
use chunkcast_protocol::{ChunkFlags, Codec};
use tracing::{info, warn};

use crate::live::Attached;

/// Starts recording the run of publisher `id` on `channel`, as the viewer `attached`.
pub(crate) fn spawn(dir: PathBuf, channel: &str, id: u64, codec: Codec, attached: Attached) {
    let stem = format!(
        "{}-{}-{id}",
        channel.replace('/', "_"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let channel = channel.to_owned();
    tokio::spawn(async move {
        match run(&dir, &stem, codec, &attached).await {
            Ok(files) => info!(channel = %channel, ?files, "recorded"),
            Err(e) => warn!(channel = %channel, "recording failed: {e}"),
        }
        drop(attached);
    });
}

/// One file being written.
struct Out {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    rec: Recorder,
}

impl Out {
    fn create(path: PathBuf, codec: Codec) -> std::io::Result<Self> {
        let rec = Recorder::new(codec).map_err(std::io::Error::other)?;
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = BufWriter::new(File::create(&partial)?);
        Ok(Self {
            path,
            partial,
            file,
            rec,
        })
    }

    fn finish(self) -> std::io::Result<PathBuf> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        if let Some(h) = self.rec.header() {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&h)?;
        }
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        Ok(self.path)
    }
}

async fn run(
    dir: &Path,
    stem: &str,
    codec: Codec,
    attached: &Attached,
) -> std::io::Result<Vec<PathBuf>> {
    let ext = Recorder::new(codec)
        .map_err(std::io::Error::other)?
        .extension();
    let name = |n: usize| {
        if n == 1 {
            dir.join(format!("{stem}.{ext}"))
        } else {
            dir.join(format!("{stem}-{n}.{ext}"))
        }
    };
    let mut files = Vec::new();
    let mut out = Out::create(name(1), codec)?;
    let mut buf = Vec::new();
    let viewer = attached.viewer();
    loop {
        let ready = viewer.ready();
        let chunk = match viewer.next() {
            Ok(Some(c)) => c,
            Ok(None) => {
                ready.await;
                continue;
            }
            // Closed: the publisher went away or was replaced, or the disk lagged.
            Err(_) => break,
        };
        if chunk.has(ChunkFlags::END_OF_STREAM) && chunk.payload.is_empty() {
            break;
        }
        buf.clear();
        let written = out
            .rec
            .chunk(&chunk, &mut buf)
            .map_err(std::io::Error::other)?;
        if written == Written::NewFile {
            let mut next = Out::create(name(files.len() + 2), codec)?;
            out.rec.hand_over(&mut next.rec);
            files.push(std::mem::replace(&mut out, next).finish()?);
            out.rec
                .chunk(&chunk, &mut buf)
                .map_err(std::io::Error::other)?;
        }
        out.file.write_all(&buf)?;
    }
    files.push(out.finish()?);
    Ok(files)
}
