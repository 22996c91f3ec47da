//! HLS with CMAF (fMP4) segments, so that ffplay, VLC, Safari and hls.js play the library
//! and live fMP4 channels with no chunkcast code.
//!
//! - Files: `/v1/hls/PATH/index.m3u8`, a VOD playlist. A progressive MP4 goes through
//!   [`chunkcast_media::fragment::Fragmenter`] (an init segment, one fragment per keyframe
//!   group); a fragmented MP4 is cut where it is (its `ftyp`…`moov` the init segment, its
//!   fragments read in place). A segment runs from a keyframe fragment to the next. The init
//!   and segment URLs carry the file's digest (`init-D16.mp4`, `D16-N.m4s`), so they are
//!   immutable and a rewritten file never aliases.
//! - Live: `/v1/hls/live/NAME/index.m3u8` for channels whose codec is fMP4: a sliding
//!   playlist of the ring's complete segments (each from a keyframe fragment to the next),
//!   `EXT-X-MAP` the channel's init chunks. The segment still being published may be asked
//!   for: the request blocks until it is complete (the next one started).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use chunkcast_media::fragment::Fragmenter;
use chunkcast_media::ingest::{InputFormat, Limits as IngestLimits, LiveInput};
use chunkcast_media::{Config as ChunkConfig, MediaError};
use chunkcast_protocol::{ChunkFlags, Codec, ErrorCode, StreamId, VisualFormat};
use http::{HeaderValue, Response, StatusCode, header};

use super::{Body, Failure, IMMUTABLE, decode_path, full};
use crate::conn::Shared;
use crate::library::Stamp;

/// Plans kept (per file version); past it, one is forgotten (a miss re-reads the `moov`).
const MAX_PLANS: usize = 64;
/// Bytes read per push when cutting a fragmented file.
const READ_PIECE: usize = 1 << 20;
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// A live playlist changes with each segment: cached about that long.
const LIVE_PLAYLIST_CACHE: &str = "public, max-age=1";
/// A file's playlist names its version's digest: shared a little while, like the index.
const FILE_PLAYLIST_CACHE: &str = "public, max-age=10";

/// Signs the URIs a playlist names, for a playlist fetched with a signed URL.
#[derive(Debug, Clone)]
pub(crate) struct UriSigner {
    /// The server's token.
    pub(crate) token: String,
    /// The playlist URL's expiry, given to every URI in it.
    pub(crate) exp: u64,
    /// The playlist's directory, as sent (percent-encoded): where relative URIs resolve.
    pub(crate) dir: String,
}

/// `leaf` as a playlist names it: signed when the playlist was.
fn uri(signer: Option<&UriSigner>, leaf: &str) -> String {
    match signer {
        Some(s) => {
            let sig = super::sign(&s.token, s.exp, &format!("{}/{leaf}", s.dir));
            format!("{leaf}?exp={}&sig={sig}", s.exp)
        }
        None => leaf.to_owned(),
    }
}

/// One segment of a file: where its bytes come from, and its time.
#[derive(Debug, Clone)]
struct FileSegment {
    duration_us: u64,
    /// Fragmenter fragments `first..end`, or byte ranges of a fragmented file.
    source: SegmentSource,
}

#[derive(Debug, Clone)]
enum SegmentSource {
    Fragments(usize, usize),
    Bytes(u64, u64),
}

/// A file as HLS: its init segment and segments.
struct Plan {
    digest16: String,
    init: Bytes,
    fragmenter: Option<Fragmenter>,
    segments: Vec<FileSegment>,
}

/// The plans of files asked for, per version.
#[derive(Default)]
pub(crate) struct Plans {
    plans: Mutex<HashMap<PathBuf, (Stamp, Arc<Plan>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unsupported(rel: &str, why: impl std::fmt::Display) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ErrorCode::BadMedia,
        format!("{rel} has no HLS form: {why}"),
    )
}

fn io_fail(rel: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        format!("reading {rel}: {e}"),
    )
}

impl Plans {
    fn plan(&self, shared: &Shared, path: &Path, rel: &str) -> Result<Arc<Plan>, Failure> {
        let mut file = File::open(path).map_err(|e| io_fail(rel, e))?;
        let meta = file.metadata().map_err(|e| io_fail(rel, e))?;
        let stamp = Stamp::of(&meta);
        if let Some((s, p)) = lock(&self.plans).get(path) {
            if *s == stamp {
                return Ok(p.clone());
            }
        }
        let digest = shared.library.digest(path).map_err(|e| io_fail(rel, e))?;
        let digest16 = hex::encode(&digest[..8]);
        let len = meta.len();
        let plan = match Fragmenter::open(&mut file, len) {
            Ok(f) => progressive(f, digest16),
            // Already fragmented (or not MP4 at all): cut where it is, if it is fMP4.
            Err(e @ (MediaError::Unsupported { .. } | MediaError::Corrupt { .. })) => {
                fragmented(&mut file, len, rel, digest16).map_err(|_| unsupported(rel, e))?
            }
            Err(e) => return Err(unsupported(rel, e)),
        };
        let plan = Arc::new(plan);
        let mut plans = lock(&self.plans);
        if plans.len() >= MAX_PLANS {
            if let Some(k) = plans.keys().next().cloned() {
                plans.remove(&k);
            }
        }
        plans.insert(path.to_owned(), (stamp, plan.clone()));
        Ok(plan)
    }
}

/// Segments of a progressive MP4: runs of fragments from one keyframe fragment to the next.
fn progressive(f: Fragmenter, digest16: String) -> Plan {
    let mut segments: Vec<FileSegment> = Vec::new();
    for i in 0..f.len() {
        let info = f.fragment_info(i);
        match segments.last_mut() {
            Some(FileSegment {
                duration_us,
                source: SegmentSource::Fragments(_, end),
            }) if !info.key => {
                *end = i + 1;
                *duration_us += u64::from(info.duration_us);
            }
            _ => segments.push(FileSegment {
                duration_us: u64::from(info.duration_us),
                source: SegmentSource::Fragments(i, i + 1),
            }),
        }
    }
    Plan {
        digest16,
        init: f.init_segment().clone(),
        fragmenter: Some(f),
        segments,
    }
}

/// Segments of a fragmented MP4, found by the live cutter (the same rules as a live fMP4
/// input): its init chunks are the init segment, its units the fragments.
fn fragmented(file: &mut File, len: u64, rel: &str, digest16: String) -> Result<Plan, Failure> {
    file.seek(SeekFrom::Start(0)).map_err(|e| io_fail(rel, e))?;
    let mut cut = LiveInput::new(
        ChunkConfig::new(StreamId(1)),
        Some(InputFormat::Fmp4),
        IngestLimits::default(),
    )
    .map_err(|e| unsupported(rel, e))?;
    let mut init = BytesMut::new();
    // (offset, len, key, pts_us, end_us) per fragment.
    let mut units: Vec<(u64, u64, bool, u64, u64)> = Vec::new();
    let mut open_unit = false;
    let mut take = |chunks: &mut Vec<chunkcast_protocol::Chunk>| {
        for c in chunks.drain(..) {
            if c.has(ChunkFlags::INIT) {
                init.extend_from_slice(&c.payload);
                continue;
            }
            let n = u64::from(c.raw_len);
            let end_us = c.pts_us + u64::from(c.duration_us);
            match units.last_mut() {
                Some(u) if open_unit => {
                    u.1 += n;
                    u.4 = u.4.max(end_us);
                }
                _ => units.push((c.offset, n, c.has(ChunkFlags::KEY), c.pts_us, end_us)),
            }
            open_unit = !c.has(ChunkFlags::END_OF_UNIT);
        }
    };
    let mut buf = vec![0u8; READ_PIECE];
    let mut chunks = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = file.read(&mut buf).map_err(|e| io_fail(rel, e))?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n as u64);
        cut.push(&buf[..n], 0, &mut chunks)
            .map_err(|e| unsupported(rel, e))?;
        take(&mut chunks);
    }
    cut.finish(&mut chunks).map_err(|e| unsupported(rel, e))?;
    take(&mut chunks);
    let fmp4 = matches!(cut.codec(), Some(Codec::Video(v)) if v.format == VisualFormat::Fmp4);
    if !fmp4 || init.is_empty() || units.is_empty() {
        return Err(unsupported(rel, "not an MP4 with media fragments"));
    }
    let mut segments: Vec<(u64, u64, u64, u64)> = Vec::new(); // offset, len, start, end
    for (offset, n, key, pts, end) in units {
        match segments.last_mut() {
            Some(s) if !key && s.0 + s.1 == offset => {
                s.1 += n;
                s.3 = s.3.max(end);
            }
            _ => segments.push((offset, n, pts, end)),
        }
    }
    let mut out = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map_or(s.3, |n| n.2);
        out.push(FileSegment {
            duration_us: end.saturating_sub(s.2),
            source: SegmentSource::Bytes(s.0, s.1),
        });
    }
    Ok(Plan {
        digest16,
        init: init.freeze(),
        fragmenter: None,
        segments: out,
    })
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn response(
    body: impl Into<Bytes>,
    content_type: &'static str,
    cache: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

/// `/v1/hls/PATH/(index.m3u8 | init-D16.mp4 | D16-N.m4s)` (the part after `/v1/hls/`).
pub(super) async fn file(
    shared: &Arc<Shared>,
    plans: &Arc<Plans>,
    rest: &str,
    signer: Option<UriSigner>,
) -> Result<Response<Body>, Failure> {
    let Some((raw, leaf)) = rest.rsplit_once('/') else {
        return Err(Failure::not_found("HLS URLs are /v1/hls/PATH/index.m3u8"));
    };
    let rel = decode_path(raw)?;
    let path = shared.library.resolve(&rel)?;
    let leaf = leaf.to_owned();
    let s = shared.clone();
    let plans = plans.clone();
    tokio::task::spawn_blocking(move || {
        let plan = plans.plan(&s, &path, &rel)?;
        if leaf == "index.m3u8" {
            return Ok(response(
                vod_playlist(&plan, signer.as_ref()),
                PLAYLIST_TYPE,
                FILE_PLAYLIST_CACHE,
            ));
        }
        if leaf == format!("init-{}.mp4", plan.digest16) {
            return Ok(response(plan.init.clone(), "video/mp4", IMMUTABLE));
        }
        let n = leaf
            .strip_suffix(".m4s")
            .and_then(|l| l.strip_prefix(&format!("{}-", plan.digest16)))
            .and_then(|n| n.parse::<usize>().ok());
        let Some(seg) = n.and_then(|n| plan.segments.get(n)) else {
            return Err(Failure::not_found(format!(
                "no such HLS URL for this version of {rel}: fetch index.m3u8 again"
            )));
        };
        let mut f = File::open(&path).map_err(|e| io_fail(&rel, e))?;
        let bytes = match (&seg.source, &plan.fragmenter) {
            (SegmentSource::Fragments(a, b), Some(fr)) => {
                let mut out = BytesMut::new();
                for i in *a..*b {
                    let frag = fr.read_fragment(i, &mut f).map_err(|e| io_fail(&rel, e))?;
                    out.extend_from_slice(&frag);
                }
                out.freeze()
            }
            (SegmentSource::Bytes(at, n), _) => {
                let mut out = vec![0u8; *n as usize];
                f.seek(SeekFrom::Start(*at)).map_err(|e| io_fail(&rel, e))?;
                f.read_exact(&mut out).map_err(|e| io_fail(&rel, e))?;
                Bytes::from(out)
            }
            (SegmentSource::Fragments(..), None) => {
                return Err(Failure::not_found("no such segment"));
            }
        };
        // A rewritten file must not pass its new bytes off under the old digest.
        let now = std::fs::metadata(&path).map_err(|e| io_fail(&rel, e))?;
        if s.library
            .cached_digest(&path, &now)
            .is_none_or(|d| hex::encode(&d[..8]) != plan.digest16)
        {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                ErrorCode::Changed,
                format!("{rel} changed: fetch index.m3u8 again"),
            ));
        }
        Ok(response(bytes, "video/iso.segment", IMMUTABLE))
    })
    .await
    .map_err(|e| Failure::internal(format!("HLS task failed: {e}")))?
}

fn vod_playlist(plan: &Plan, signer: Option<&UriSigner>) -> String {
    let target = plan
        .segments
        .iter()
        .map(|s| s.duration_us.div_ceil(1_000_000))
        .max()
        .unwrap_or(1)
        .max(1);
    let init = uri(signer, &format!("init-{}.mp4", plan.digest16));
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{init}\"\n"
    );
    for (i, s) in plan.segments.iter().enumerate() {
        out.push_str(&format!(
            "#EXTINF:{:.6},\n{}\n",
            secs(s.duration_us),
            uri(signer, &format!("{}-{i}.m4s", plan.digest16))
        ));
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// A live segment as the ring lists it: its number, first seq, start, and (complete ones)
/// its duration.
pub(super) struct LiveSegment {
    pub(super) number: u64,
    pub(super) first_seq: u64,
    pub(super) duration_us: Option<u64>,
}

/// The live playlist: the complete segments, sliding.
pub(super) fn live_playlist(
    run: &str,
    init_seq: u64,
    segments: &[LiveSegment],
    ended: bool,
    signer: Option<&UriSigner>,
) -> String {
    let complete: Vec<&LiveSegment> = segments
        .iter()
        .filter(|s| s.duration_us.is_some())
        .collect();
    let target = complete
        .iter()
        .filter_map(|s| s.duration_us)
        .map(|d| d.div_ceil(1_000_000))
        .max()
        .unwrap_or(1)
        .max(1);
    let first = complete.first().map_or(0, |s| s.number);
    let init = uri(signer, &format!("{run}-init-{init_seq}.mp4"));
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{init}\"\n"
    );
    for s in complete {
        out.push_str(&format!(
            "#EXTINF:{:.6},\n{}\n",
            secs(s.duration_us.unwrap_or(0)),
            uri(signer, &format!("{run}-{}.m4s", s.first_seq))
        ));
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

pub(super) fn playlist_response(body: String) -> Response<Body> {
    response(body, PLAYLIST_TYPE, LIVE_PLAYLIST_CACHE)
}

pub(super) fn segment_response(body: Bytes) -> Response<Body> {
    response(body, "video/iso.segment", IMMUTABLE)
}

pub(super) fn init_response(body: Bytes) -> Response<Body> {
    response(body, "video/mp4", IMMUTABLE)
}
