//! Files over HTTP: the plain bytes (`/v1/files`, ranges and validators for curl and
//! browsers), the index (`/v1/index`) and the verified chunk frames (`/v1/chunks`, immutable,
//! each verifiable alone against the file's BLAKE3 tree).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chunkcast_media::{Config as ChunkConfig, Packetizer};
use chunkcast_protocol::verify::{MAX_PROOF_NODES, NODE_LEN, Outboard};
use chunkcast_protocol::wire::{Frame, encode};
use chunkcast_protocol::{Chunk, ChunkFlags};
use chunkcast_protocol::{Codec, ErrorCode, StreamId};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::{Body, Failure, IMMUTABLE, SHORT_CACHE, decode_path, empty, full, header_str};
use crate::conn::Shared;

/// The content type of bodies made of native frames.
pub(crate) const FRAMES_TYPE: &str = "application/x-chunkcast-frames";
/// The chunk size of an index asked for without one.
const DEFAULT_CHUNK_SIZE: u64 = 256 << 10;
/// Chunk sizes are whole 16 KiB groups, so that no group straddles two chunks.
const GROUP: u64 = 16 << 10;
/// The largest chunk size an index may ask for.
const MAX_CHUNK_SIZE: u64 = 4 << 20;
/// Bytes read per piece of a streamed file body.
const READ_PIECE: usize = 256 << 10;

/// The strong ETag of a file version: its BLAKE3.
fn file_etag(digest: &[u8; 32]) -> String {
    format!("\"b3-{}\"", hex::encode(digest))
}

/// Runs blocking file work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::internal(format!("file task failed: {e}")))?
}

fn io_fail(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::internal(format!("reading {what}: {e}"))
}

/// The resolved file for a percent-encoded request path.
fn resolve(shared: &Shared, raw: &str) -> Result<(String, PathBuf), Failure> {
    let rel = decode_path(raw)?;
    let path = shared.library.resolve(&rel)?;
    Ok((rel, path))
}

/// A byte range asked for, checked against the file's length.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    All,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses `Range: bytes=A-B | A- | -N` for a file of `len` bytes. Anything else (other units,
/// several ranges, garbage) is answered with the whole file, as RFC 9110 allows.
fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let Some(n) = parse(b) else {
                return Wanted::All;
            };
            if n == 0 || len == 0 {
                return Wanted::Unsatisfiable;
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let Some(s) = parse(a) else {
                return Wanted::All;
            };
            let e = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match parse(b) {
                    Some(e) if e >= s => e.min(len.saturating_sub(1)),
                    _ => return Wanted::All,
                }
            };
            if s >= len {
                return Wanted::Unsatisfiable;
            }
            (s, e)
        }
        (true, true) => return Wanted::All,
    };
    Wanted::Part(start, end)
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("m4a") => "audio/mp4",
        Some("m4s") => "video/iso.segment",
        Some("wav") => "audio/wav",
        Some("mjpeg" | "mjpg") => "video/x-motion-jpeg",
        Some("y4m") => "video/x-yuv4mpeg",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        Some("webp") => "image/webp",
        Some("tif" | "tiff") => "image/tiff",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether an `If-None-Match` or `If-Range` list names `etag` (weak comparison for the
/// former, as RFC 9110 says; `*` matches any).
fn etag_listed(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// `GET|HEAD /v1/files/PATH`.
pub(super) async fn file(
    shared: &Arc<Shared>,
    raw: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, Failure> {
    let (rel, path) = resolve(shared, raw)?;
    let library = shared.library.clone();
    let p = path.clone();
    let r = rel.clone();
    let (digest, len) = blocking(move || {
        let meta = std::fs::metadata(&p).map_err(io_fail(&r))?;
        let digest = library.digest(&p).map_err(io_fail(&r))?;
        Ok((digest, meta.len()))
    })
    .await?;
    let etag = file_etag(&digest);
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(SHORT_CACHE));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&rel)),
    );
    if header_str(headers, header::IF_NONE_MATCH).is_some_and(|l| etag_listed(l, &etag)) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    // If-Range with another validator (or a date): the whole file, not a range of the old one.
    let range_ok = header_str(headers, header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let range = header_str(headers, header::RANGE).filter(|_| range_ok);
    let (start, end) = match wanted(range, len) {
        Wanted::All => (0, len),
        Wanted::Part(a, b) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes {a}-{b}/{len}")));
            (a, b + 1)
        }
        Wanted::Unsatisfiable => {
            let mut f = Failure::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BadRequest,
                format!("the range is outside the file ({len} bytes)"),
            )
            .response();
            f.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{len}")));
            return Ok(f);
        }
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, hv(&(end - start).to_string()));
    if head {
        return Ok(resp);
    }
    *resp.body_mut() = stream_file(path, start, end);
    Ok(resp)
}

/// The bytes `start..end` of `path`, read piece by piece on a blocking thread as the client
/// takes them (a slow client holds one piece, not the file).
fn stream_file(path: PathBuf, start: u64, end: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let mut file = match File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(start))?;
            Ok(f)
        }) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut left = end - start;
        while left > 0 {
            let n = READ_PIECE.min(usize::try_from(left).unwrap_or(READ_PIECE));
            let mut buf = vec![0u8; n];
            let piece = match file.read_exact(&mut buf) {
                Ok(()) => Ok(Bytes::from(buf)),
                // Shrunk under us: the response cannot be what its headers promised.
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
            left -= n as u64;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(hyper::body::Frame::data), rx))
    });
    http_body_util::StreamBody::new(stream).boxed()
}

fn hv(s: &str) -> HeaderValue {
    // Every value built here is ASCII (hex, digits, fixed text).
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A chunk size from a query's `chunk_size`, or the default; `None`: not allowed.
fn chunk_size_of(query: &str) -> Result<u64, Failure> {
    let given = query.split('&').find_map(|p| p.strip_prefix("chunk_size="));
    let Some(v) = given else {
        return Ok(DEFAULT_CHUNK_SIZE);
    };
    match v.parse::<u64>() {
        Ok(n) if valid_chunk_size(n) => Ok(n),
        _ => Err(Failure::bad(format!(
            "chunk_size {v}: a multiple of 16384 from 16384 to 4194304"
        ))),
    }
}

fn valid_chunk_size(n: u64) -> bool {
    (GROUP..=MAX_CHUNK_SIZE).contains(&n) && n % GROUP == 0
}

/// The codec as the index's JSON (http-spec.md: the struct fields, by name).
pub(super) fn codec_json(codec: &Codec) -> serde_json::Value {
    use chunkcast_protocol::media::SampleFormat;
    use serde_json::json;
    match codec {
        Codec::Bytes => json!({"kind": "bytes"}),
        Codec::Audio(a) => {
            let name = match a.sample_format {
                SampleFormat::Int => "int",
                SampleFormat::Float => "float",
                SampleFormat::MuLaw => "mu-law",
                SampleFormat::ALaw => "a-law",
                SampleFormat::Coded(_) => "coded",
            };
            let mut v = json!({
                "kind": "audio",
                "sample_rate": a.sample_rate,
                "channels": a.channels,
                "bits_per_sample": a.bits_per_sample,
                "sample_format": name,
            });
            if let SampleFormat::Coded(c) = a.sample_format {
                v["tag"] = json!(c.tag);
                v["block_align"] = json!(c.block_align);
                v["samples_per_block"] = json!(c.samples_per_block);
            }
            v
        }
        Codec::Video(v) => json!({
            "kind": "video",
            "format": v.format.name(),
            "width": v.width,
            "height": v.height,
            "fps_num": v.fps_num,
            "fps_den": v.fps_den,
        }),
        Codec::Image(i) => json!({
            "kind": "image",
            "format": i.format.name(),
            "width": i.width,
            "height": i.height,
            "color": i.color,
        }),
    }
}

/// What the index needs of a file: its tree and its media facts.
struct Facts {
    outboard: Arc<Outboard>,
    codec: Codec,
    chunk_count: Option<u64>,
    duration_us: Option<u64>,
}

fn facts(shared: &Shared, path: &std::path::Path, rel: &str) -> Result<Facts, Failure> {
    let mut file = File::open(path).map_err(io_fail(rel))?;
    let meta = file.metadata().map_err(io_fail(rel))?;
    let outboard = shared
        .library
        .outboard(path, &meta, &mut file)
        .map_err(io_fail(rel))?;
    file.seek(SeekFrom::Start(0)).map_err(io_fail(rel))?;
    let cfg = ChunkConfig::new(StreamId(1));
    // Every readable file opens (as bytes at worst); only I/O fails here.
    let packetizer = Packetizer::open_any(cfg, &mut file, meta.len(), rel)
        .map_err(|e| Failure::internal(format!("reading {rel}: {e}")))?;
    Ok(Facts {
        outboard,
        codec: packetizer.codec(),
        chunk_count: packetizer.chunk_count(),
        duration_us: packetizer.duration_us(),
    })
}

/// `GET /v1/index/PATH[?chunk_size=N]`.
pub(super) async fn index(
    shared: &Arc<Shared>,
    raw: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, Failure> {
    let chunk_size = chunk_size_of(query)?;
    let (rel, path) = resolve(shared, raw)?;
    let s = shared.clone();
    let r = rel.clone();
    let f = blocking(move || facts(&s, &path, &r)).await?;
    let size = f.outboard.len();
    let digest = f.outboard.root();
    let hex_digest = hex::encode(digest);
    let chunks = size.div_ceil(chunk_size).max(1);
    // Already percent-encoded as the request sent it: the client substitutes `{seq}` only.
    let raw_path = raw.trim_start_matches('/');
    let body = serde_json::json!({
        "version": 1,
        "path": rel,
        "size": size,
        "digest": hex_digest,
        "group_size": GROUP,
        "chunk_size": chunk_size,
        "chunks": chunks,
        "codec": codec_json(&f.codec),
        "chunk_count_native": f.chunk_count,
        "duration_us": f.duration_us,
        "chunk_url": format!("/v1/chunks/{hex_digest}/{chunk_size}/{{seq}}/{raw_path}"),
    })
    .to_string();
    let etag = file_etag(&digest);
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(SHORT_CACHE));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if header_str(headers, header::IF_NONE_MATCH).is_some_and(|l| etag_listed(l, &etag)) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    *resp.body_mut() = full(body);
    Ok(resp)
}

/// `GET /v1/chunks/DIGEST/CHUNK_SIZE/SEQ/PATH`.
pub(super) async fn chunk(shared: &Arc<Shared>, rest: &str) -> Result<Response<Body>, Failure> {
    let mut parts = rest.splitn(4, '/');
    let (Some(d), Some(cs), Some(seq), Some(raw)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::not_found(
            "chunk URLs are /v1/chunks/DIGEST/CHUNK_SIZE/SEQ/PATH",
        ));
    };
    let mut want = [0u8; 32];
    hex::decode_to_slice(d, &mut want)
        .map_err(|_| Failure::bad(format!("digest {d}: not 64 hex digits")))?;
    let chunk_size = cs
        .parse::<u64>()
        .ok()
        .filter(|n| valid_chunk_size(*n))
        .ok_or_else(|| Failure::bad(format!("chunk size {cs}: a multiple of 16384 up to 4 MiB")))?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| Failure::bad(format!("seq {seq}: not a number")))?;
    let (rel, path) = resolve(shared, raw)?;
    let s = shared.clone();
    let body = blocking(move || {
        let mut file = File::open(&path).map_err(io_fail(&rel))?;
        let meta = file.metadata().map_err(io_fail(&rel))?;
        let ob = s
            .library
            .outboard(&path, &meta, &mut file)
            .map_err(io_fail(&rel))?;
        if ob.root() != want {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                ErrorCode::Changed,
                format!("{rel} is not this version any more: fetch its index again"),
            ));
        }
        let size = ob.len();
        let chunks = size.div_ceil(chunk_size).max(1);
        if seq >= chunks {
            return Err(Failure::not_found(format!(
                "{rel} has {chunks} chunks of {chunk_size} bytes; there is no chunk {seq}"
            )));
        }
        let offset = seq * chunk_size;
        let len = chunk_size.min(size - offset);
        let mut payload = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(offset)).map_err(io_fail(&rel))?;
        file.read_exact(&mut payload).map_err(io_fail(&rel))?;
        // Read after the tree was checked: a file rewritten in between must not pass as this
        // version (the client's verifier would refuse it, but the cache would keep it).
        let now = std::fs::metadata(&path).map_err(io_fail(&rel))?;
        if crate::library::Stamp::of(&now) != crate::library::Stamp::of(&meta) {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                ErrorCode::Changed,
                format!("{rel} changed while it was read: fetch its index again"),
            ));
        }
        Ok(chunk_body(&ob, seq, offset, payload, seq + 1 == chunks))
    })
    .await?;
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FRAMES_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(header::ETAG, hv(&format!("\"c-{d}-{chunk_size}-{seq}\"")));
    Ok(resp)
}

/// The PROOF frames a verified stream starting at `offset` needs, then the CHUNK frame.
fn chunk_body(ob: &Outboard, seq: u64, offset: u64, payload: Vec<u8>, last: bool) -> Bytes {
    let stream = StreamId(1);
    let end = offset + payload.len() as u64;
    let nodes = Bytes::from(ob.proof(offset, offset, end));
    let mut out = BytesMut::with_capacity(payload.len() + nodes.len() + 128);
    for part in nodes.chunks(MAX_PROOF_NODES * NODE_LEN) {
        let frame = Frame::Proof {
            stream,
            nodes: nodes.slice_ref(part),
        };
        encode(&frame, &mut out);
    }
    let flags = if last {
        ChunkFlags::END_OF_STREAM
    } else {
        ChunkFlags::empty()
    };
    let chunk = Chunk::new(stream, seq, offset, 0, 0, flags, Bytes::from(payload));
    encode(&Frame::Chunk(chunk), &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(wanted(None, 100), Wanted::All);
        assert_eq!(wanted(Some("bytes=0-9"), 100), Wanted::Part(0, 9));
        assert_eq!(wanted(Some("bytes=90-"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=-10"), 100), Wanted::Part(90, 99));
        assert_eq!(wanted(Some("bytes=-500"), 100), Wanted::Part(0, 99));
        assert_eq!(wanted(Some("bytes=50-500"), 100), Wanted::Part(50, 99));
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::All);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::All);
        assert_eq!(wanted(Some("bytes=9-2"), 100), Wanted::All);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
    }

    #[test]
    fn chunk_sizes_are_whole_groups_within_bounds() {
        assert_eq!(chunk_size_of("").unwrap(), 256 << 10);
        assert_eq!(chunk_size_of("chunk_size=16384").unwrap(), 16384);
        assert!(chunk_size_of("chunk_size=16385").is_err());
        assert!(chunk_size_of("chunk_size=0").is_err());
        assert!(chunk_size_of("chunk_size=8388608").is_err());
    }

    #[test]
    fn a_chunk_body_verifies_alone_from_its_offset() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ob = Outboard::from_bytes(&data);
        let cs = 65536u64;
        let seq = 1;
        let offset = seq * cs;
        let payload = data[offset as usize..(offset + cs) as usize].to_vec();
        let body = chunk_body(&ob, seq, offset, payload.clone(), false);
        let mut decoder =
            chunkcast_protocol::wire::Decoder::new(chunkcast_protocol::wire::Limits::default());
        let mut buf = BytesMut::from(&body[..]);
        let mut v = chunkcast_protocol::verify::Verifier::new(ob.root(), data.len() as u64, offset)
            .unwrap();
        let mut got = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            match frame {
                Frame::Proof { nodes, .. } => v.add_nodes(&nodes).unwrap(),
                Frame::Chunk(c) => {
                    assert_eq!((c.seq, c.offset), (seq, offset));
                    v.push(c.payload).unwrap();
                }
                f => panic!("unexpected {f:?}"),
            }
        }
        while let Some(b) = v.poll_verified() {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, payload);
    }
}
