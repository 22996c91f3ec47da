//! The HTTP client's codec and checks, on bodies built with the protocol's own encoder and
//! `Outboard::proof`, as `docs/HTTP.md` says the server builds them.

use bytes::{Bytes, BytesMut};
use chunkcast_protocol::verify::{Outboard, VerifyError};
use chunkcast_protocol::wire::codec::encode;
use chunkcast_protocol::{Chunk, ChunkFlags, Frame, StreamId};

use super::get::{FileIndex, IndexJson, verify_chunk};
use super::*;

/// Deterministic bytes that do not repeat within a group.
fn file(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn index_of(data: &[u8], chunk_size: u64) -> FileIndex {
    let size = data.len() as u64;
    FileIndex {
        size,
        digest: *blake3::hash(data).as_bytes(),
        chunk_size,
        chunks: size.div_ceil(chunk_size).max(1),
        chunk_url: "/v1/chunks/x/{seq}/f".into(),
    }
}

/// Chunk `seq`'s body as the server builds it: its PROOF frames (1024 nodes each at most),
/// then its CHUNK frame; `tamper` changes the nodes, the payload or the chunk's header
/// before they are encoded (so the CRC32C matches the altered bytes, as a tampering proxy
/// would make it).
fn body(
    data: &[u8],
    index: &FileIndex,
    seq: u64,
    tamper: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>, &mut Chunk),
) -> BytesMut {
    let outboard = Outboard::from_bytes(data);
    let offset = index.offset(seq);
    let len = index.len(seq);
    let mut nodes = outboard.proof(offset, offset, offset + len);
    let last = seq + 1 == index.chunks;
    let flags = if last {
        ChunkFlags::END_OF_STREAM
    } else {
        ChunkFlags(0)
    };
    let mut payload = data[offset as usize..(offset + len) as usize].to_vec();
    let mut chunk = Chunk::new(StreamId(1), seq, offset, 0, 0, flags, Bytes::new());
    tamper(&mut nodes, &mut payload, &mut chunk);
    chunk.raw_len = payload.len() as u32;
    chunk.payload = Bytes::from(payload);
    let mut out = BytesMut::new();
    for part in nodes.chunks(1024 * 64) {
        encode(
            &Frame::Proof {
                stream: StreamId(1),
                nodes: Bytes::copy_from_slice(part),
            },
            &mut out,
        );
    }
    encode(&Frame::Chunk(chunk), &mut out);
    out
}

fn as_is(_: &mut Vec<u8>, _: &mut Vec<u8>, _: &mut Chunk) {}

fn verified(data: &[u8], index: &FileIndex, seq: u64) -> Result<Vec<u8>, ClientError> {
    let frames = decode_frames(body(data, index, seq, as_is), 8 << 20)?;
    let (bytes, _) = verify_chunk(index, seq, frames)?;
    Ok(bytes.concat())
}

#[test]
fn every_chunk_verifies_alone_and_they_make_the_file() {
    // 4 chunks of 32 KiB (2 groups each), the last one short; and a file of one group.
    for (len, cs) in [
        (100 * 1024 + 5, 32 * 1024),
        (10_000, 16 * 1024),
        (1 << 20, 256 * 1024),
    ] {
        let data = file(len);
        let index = index_of(&data, cs);
        // In any order: each chunk carries what proves it.
        let mut parts: Vec<(u64, Vec<u8>)> = (0..index.chunks)
            .rev()
            .map(|seq| (seq, verified(&data, &index, seq).unwrap()))
            .collect();
        parts.sort();
        let whole: Vec<u8> = parts.into_iter().flat_map(|(_, b)| b).collect();
        assert_eq!(whole, data, "{len} bytes in chunks of {cs}");
    }
}

#[test]
fn an_empty_file_is_one_empty_chunk() {
    let index = index_of(&[], 16 * 1024);
    assert_eq!(index.chunks, 1);
    assert_eq!(verified(&[], &index, 0).unwrap(), Vec::<u8>::new());
}

#[test]
fn an_altered_byte_is_caught_at_its_chunk() {
    let data = file(100 * 1024);
    let index = index_of(&data, 32 * 1024);
    let frames = decode_frames(body(&data, &index, 2, |_, p, _| p[0] ^= 1), 8 << 20).unwrap();
    let e = verify_chunk(&index, 2, frames).unwrap_err();
    assert!(
        matches!(e, ClientError::Unverified { seq: 2, error: VerifyError::Data { offset } } if offset == 64 * 1024),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("chunk 2 failed verification"),
        "{e}"
    );
}

#[test]
fn an_altered_tree_node_or_a_missing_one_is_caught() {
    let data = file(100 * 1024);
    let index = index_of(&data, 32 * 1024);
    let frames = decode_frames(body(&data, &index, 1, |n, _, _| n[5] ^= 0x40), 8 << 20).unwrap();
    let e = verify_chunk(&index, 1, frames).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Unverified {
                seq: 1,
                error: VerifyError::Proof { .. } | VerifyError::Data { .. }
            }
        ),
        "{e}"
    );
    let frames = decode_frames(body(&data, &index, 1, |n, _, _| n.clear()), 8 << 20).unwrap();
    let e = verify_chunk(&index, 1, frames).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Unverified {
                seq: 1,
                error: VerifyError::Incomplete { .. }
            }
        ),
        "{e}"
    );
}

#[test]
fn a_chunk_in_the_wrong_place_or_without_its_end_mark_is_refused() {
    let data = file(100 * 1024);
    let index = index_of(&data, 32 * 1024);
    let frames = decode_frames(body(&data, &index, 1, |_, _, c| c.seq = 2), 8 << 20).unwrap();
    let e = verify_chunk(&index, 1, frames).unwrap_err();
    assert!(
        matches!(e, ClientError::BadResponse(ref m) if m.contains("got chunk 2")),
        "{e}"
    );
    let frames = decode_frames(
        body(&data, &index, 3, |_, _, c| c.flags = ChunkFlags(0)),
        8 << 20,
    )
    .unwrap();
    let e = verify_chunk(&index, 3, frames).unwrap_err();
    assert!(
        matches!(e, ClientError::BadResponse(ref m) if m.contains("END_OF_STREAM")),
        "{e}"
    );
}

#[test]
fn a_body_cut_short_or_with_a_bad_checksum_does_not_decode() {
    let data = file(40 * 1024);
    let index = index_of(&data, 16 * 1024);
    let mut b = body(&data, &index, 0, as_is);
    b.truncate(b.len() - 1);
    assert!(matches!(
        decode_frames(b, 8 << 20),
        Err(ClientError::Corrupt(
            chunkcast_protocol::DecodeError::Truncated(_)
        ))
    ));
    let mut b = body(&data, &index, 0, as_is);
    let at = b.len() - 10;
    b[at] ^= 1; // a payload byte, its CRC32C not fixed
    assert!(matches!(
        decode_frames(b, 8 << 20),
        Err(ClientError::Corrupt(
            chunkcast_protocol::DecodeError::Checksum { seq: 0, .. }
        ))
    ));
    // A frame over the limit is refused before it is held.
    let b = body(&data, &index, 0, as_is);
    assert!(matches!(
        decode_frames(b, 1024),
        Err(ClientError::Corrupt(
            chunkcast_protocol::DecodeError::FrameTooLarge { .. }
        ))
    ));
}

#[test]
fn a_resume_checks_the_kept_bytes_with_the_first_chunks_nodes() {
    let data = file(300 * 1024);
    let index = index_of(&data, 64 * 1024);
    let frames = decode_frames(body(&data, &index, 3, as_is), 8 << 20).unwrap();
    let (_, v) = verify_chunk(&index, 3, frames).unwrap();
    let kept = &data[..3 * 64 * 1024];
    v.check_prefix(kept).unwrap();
    let mut damaged = kept.to_vec();
    damaged[70_000] ^= 1;
    let frames = decode_frames(body(&data, &index, 3, as_is), 8 << 20).unwrap();
    let (_, v) = verify_chunk(&index, 3, frames).unwrap();
    assert!(matches!(
        v.check_prefix(&damaged[..]),
        Err(VerifyError::Prefix { offset, end }) if offset <= 70_000 && 70_000 < end
    ));
}

#[test]
fn an_index_is_checked_against_the_rules() {
    let good = || IndexJson {
        version: 1,
        size: 100_000,
        digest: "ab".repeat(32),
        group_size: 16384,
        chunk_size: 32768,
        chunks: 4,
        chunk_url: "/v1/chunks/d/32768/{seq}/a.bin".into(),
    };
    let i = FileIndex::from_json(good()).unwrap();
    assert_eq!(
        (i.len(3), i.url(2).as_str()),
        (100_000 - 3 * 32768, "/v1/chunks/d/32768/2/a.bin")
    );
    for (what, j) in [
        (
            "chunk count",
            IndexJson {
                chunks: 3,
                ..good()
            },
        ),
        (
            "chunk size",
            IndexJson {
                chunk_size: 20_000,
                chunks: 5,
                ..good()
            },
        ),
        (
            "digest",
            IndexJson {
                digest: "ab".into(),
                ..good()
            },
        ),
        (
            "chunk url",
            IndexJson {
                chunk_url: "/v1/chunks/x".into(),
                ..good()
            },
        ),
        (
            "version",
            IndexJson {
                version: 2,
                ..good()
            },
        ),
    ] {
        assert!(
            matches!(FileIndex::from_json(j), Err(ClientError::BadResponse(_))),
            "{what}"
        );
    }
    let empty = IndexJson {
        size: 0,
        chunks: 1,
        ..good()
    };
    assert_eq!(FileIndex::from_json(empty).unwrap().len(0), 0);
}

#[test]
fn error_statuses_carry_the_servers_code_and_message() {
    let e = http_error(
        "/v1/index/x",
        reqwest::StatusCode::NOT_FOUND,
        br#"{"code":3,"error":"not found","message":"no such file: x"}"#,
    );
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    assert_eq!(
        e.to_string(),
        "/v1/index/x: HTTP 404: not found: no such file: x"
    );
    // A cache's own error page: the status says what it can.
    let e = http_error(
        "/v1/index/x",
        reqwest::StatusCode::BAD_GATEWAY,
        b"<html>oops</html>",
    );
    assert_eq!(
        (e.code(), e.to_string().as_str()),
        (None, "/v1/index/x: HTTP 502: bad gateway")
    );
    let e = http_error("/p", reqwest::StatusCode::UNAUTHORIZED, b"");
    assert!(e.to_string().contains("--token"), "{e}");
    // A live channel's end, and a 410 that only says to look again.
    let e = http_error(
        "/v1/live/a/r/9",
        reqwest::StatusCode::GONE,
        br#"{"code":17,"error":"ended","message":"bad input: not MJPEG"}"#,
    );
    assert_eq!(ended_reason(&e).as_deref(), Some("bad input: not MJPEG"));
    let e = http_error(
        "/v1/live/a/r/9",
        reqwest::StatusCode::GONE,
        br#"{"code":3,"error":"not found","message":"evicted"}"#,
    );
    assert_eq!(ended_reason(&e), None);
}

#[test]
fn signed_urls_follow_the_spec() {
    let path = "/v1/files/films/a%20b.mp4";
    let signed = sign_url("sesame", path, 1_900_000_000);
    let key = blake3::derive_key("chunkcast http signed url v1", b"sesame");
    let want = blake3::keyed_hash(&key, b"1900000000\n/v1/files/films/a%20b.mp4");
    assert_eq!(
        signed,
        format!("{path}?exp=1900000000&sig={}", want.to_hex())
    );
    // Bound to the token, the expiry and the path.
    let sig = url_signature("sesame", 1_900_000_000, path);
    assert_ne!(sig, url_signature("sesame!", 1_900_000_000, path));
    assert_ne!(sig, url_signature("sesame", 1_900_000_001, path));
    assert_ne!(
        sig,
        url_signature("sesame", 1_900_000_000, "/v1/files/films/a b.mp4")
    );
    assert_eq!(encode_path("films/a b+ç.mp4"), "films/a%20b%2B%C3%A7.mp4");
}

/// The codec objects of the golden vectors, read with [`codec_from_json`], equal the codecs
/// the protocol's decoder reads from the same vectors' bytes.
#[test]
fn codecs_read_from_json_match_the_golden_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/golden/frames.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for v in golden["vectors"].as_array().unwrap() {
        let Some(hex) = v["hex"].as_str() else {
            continue;
        };
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let Ok(Some(frame)) = Decoder::default().decode(&mut BytesMut::from(&bytes[..])) else {
            continue;
        };
        let pairs: Vec<(&serde_json::Value, Codec)> = match &frame {
            Frame::Opened(o) => vec![(&v["frame"]["codec"], o.codec)],
            Frame::Publish { codec, .. } => vec![(&v["frame"]["codec"], *codec)],
            Frame::Catalog(c) => c
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (&v["frame"]["entries"][i]["codec"], e.codec))
                .collect(),
            _ => continue,
        };
        for (json, codec) in pairs {
            assert_eq!(codec_from_json(json).unwrap(), codec, "{json}");
            seen.insert(codec.kind().name());
        }
    }
    assert!(seen.len() >= 3, "the vectors cover several kinds: {seen:?}");
    // The server's flat form of coded audio and G.711 reads the same.
    let flat = serde_json::json!({"kind": "audio", "sample_rate": 8000, "channels": 1,
        "bits_per_sample": 4, "sample_format": "coded", "tag": 17, "block_align": 256,
        "samples_per_block": 505});
    assert_eq!(
        codec_from_json(&flat).unwrap(),
        Codec::Audio(chunkcast_protocol::AudioParams {
            sample_rate: 8000,
            channels: 1,
            bits_per_sample: 4,
            sample_format: chunkcast_protocol::SampleFormat::Coded(
                chunkcast_protocol::CodedAudio {
                    tag: 17,
                    block_align: 256,
                    samples_per_block: 505,
                }
            ),
        })
    );
    let mu = serde_json::json!({"kind": "audio", "sample_rate": 8000, "channels": 1,
        "bits_per_sample": 8, "sample_format": "mu-law"});
    assert!(matches!(
        codec_from_json(&mu),
        Ok(Codec::Audio(a)) if a.sample_format == chunkcast_protocol::SampleFormat::MuLaw
    ));
    assert!(codec_from_json(&serde_json::json!({"kind": "smell"})).is_err());
}
