//! Arbitrary bytes through `wire::Decoder`, delivered in input-chosen pieces.
//!
//! Input layout: byte 0's low nibble is `k`, the number of split-size bytes that follow; each
//! of those bytes `b` is a piece of `b + 1` bytes (cycled); the rest is the byte stream. `k = 0`
//! delivers the stream in one piece. When byte 0 has bit 4 set, the CRC32C of every whole
//! `CHUNK` frame in the stream is first recomputed (with the crate's own encoder), so that the
//! checksum does not hide the chunk-field checks and lz4 from the fuzzer.
//!
//! Properties checked, besides "never panics":
//! - decoding in pieces yields exactly what decoding in one piece yields (frames and errors);
//! - decoding stops at the first error that is not `Checksum` (the stream is out of sync);
//! - every decoded frame re-encodes to bytes that decode to the same frame, and for chunks
//!   `encode_chunk_head` + payload equals `encode`;
//! - `compress::decompress` with the default max payload either fails with
//!   `DecodeError::Decompress` (compressed chunks only) or returns an uncompressed chunk of
//!   exactly `raw_len` bytes, which itself re-encodes and survives `Compressor::apply` +
//!   `decompress` unchanged.
#![no_main]

use bytes::{Bytes, BytesMut};
use chunkcast_protocol::compress::{self, Compressor};
use chunkcast_protocol::wire::{DEFAULT_MAX_PAYLOAD, Decoder, encode, encode_chunk_head};
use chunkcast_protocol::{Chunk, ChunkFlags, DecodeError, Frame, StreamId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(first & 0x0f).min(rest.len());
    let (sizes, stream) = rest.split_at(k);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    let mut stream = stream.to_vec();
    if first & 0x10 != 0 {
        fix_chunk_crcs(&mut stream);
    }
    let stream = &stream[..];

    let whole = decode_in_pieces(stream, &[]);
    let pieces = decode_in_pieces(stream, &sizes);
    assert_eq!(
        whole, pieces,
        "decoding depends on how the bytes were split"
    );

    for frame in whole.iter().flatten() {
        check_frame(frame);
    }
});

/// Feeds `stream` to a fresh decoder in pieces of `sizes` (cycled; one piece when empty),
/// decoding after every piece as a driver would, and returns every outcome.
fn decode_in_pieces(stream: &[u8], sizes: &[usize]) -> Vec<Result<Frame, DecodeError>> {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    'feed: while pos < stream.len() {
        let n = if sizes.is_empty() {
            stream.len()
        } else {
            sizes[i % sizes.len()]
        };
        i += 1;
        let end = (pos + n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e @ DecodeError::Checksum { .. }) => out.push(Err(e)),
                Err(e) => {
                    out.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    out
}

/// Encodes `frame` and decodes it back, asserting it is unchanged; returns the encoding.
fn round_trip(frame: &Frame) -> BytesMut {
    let mut encoded = BytesMut::new();
    encode(frame, &mut encoded);
    let mut buf = encoded.clone();
    let again = Decoder::default()
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("re-encoded {} does not decode: {e}", frame.name()))
        .unwrap_or_else(|| panic!("re-encoded {} is incomplete", frame.name()));
    assert!(
        buf.is_empty(),
        "re-encoded {} has {} bytes left over",
        frame.name(),
        buf.len()
    );
    assert_eq!(
        &again,
        frame,
        "re-encoded {} decodes differently",
        frame.name()
    );
    encoded
}

fn check_frame(frame: &Frame) {
    let encoded = round_trip(frame);
    let Frame::Chunk(chunk) = frame else { return };

    let mut by_ref = BytesMut::new();
    encode_chunk_head(chunk, &mut by_ref);
    by_ref.extend_from_slice(&chunk.payload);
    assert_eq!(
        by_ref, encoded,
        "encode_chunk_head + payload differs from encode"
    );

    let max = DEFAULT_MAX_PAYLOAD as usize;
    match compress::decompress(chunk.clone(), max) {
        Ok(plain) => {
            assert!(!plain.has(ChunkFlags::COMPRESSED));
            assert_eq!(plain.payload.len(), plain.raw_len as usize);
            assert!(plain.payload.len() <= max);
            if !chunk.has(ChunkFlags::COMPRESSED) {
                assert_eq!(&plain, chunk, "decompress changed an uncompressed chunk");
            }
            round_trip(&Frame::Chunk(plain.clone()));
            let sent = Compressor::new().apply(plain.clone());
            let back = compress::decompress(sent, max).expect("our own lz4 block expands");
            assert_eq!(
                back, plain,
                "Compressor::apply + decompress is not the identity"
            );
        }
        Err(DecodeError::Decompress { stream, seq, .. }) => {
            assert!(
                chunk.has(ChunkFlags::COMPRESSED),
                "decompress failed on a raw chunk"
            );
            assert_eq!((stream, seq), (chunk.stream, chunk.seq));
        }
        Err(other) => panic!("decompress returned an unexpected error: {other:?}"),
    }
}

/// Rewrites the CRC field of every whole `CHUNK` frame (walking the length prefixes) to the
/// CRC32C that `encode_chunk_head` computes for its header fields and payload.
fn fix_chunk_crcs(stream: &mut [u8]) {
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
    let mut pos = 0;
    while stream.len() - pos >= 4 {
        let len = be32(&stream[pos..pos + 4]) as usize;
        let Some(frame) = stream.get_mut(pos + 4..pos + 4 + len) else {
            return;
        };
        if len == 0 {
            return;
        }
        if frame[0] == 0x0a && len >= 42 {
            let h = &frame[1..];
            let chunk = Chunk {
                stream: StreamId(be32(&h[0..4])),
                seq: be64(&h[4..12]),
                offset: be64(&h[12..20]),
                pts_us: be64(&h[20..28]),
                duration_us: be32(&h[28..32]),
                flags: ChunkFlags(h[32]),
                raw_len: be32(&h[33..37]),
                payload: Bytes::copy_from_slice(&h[41..]),
            };
            let mut head = BytesMut::new();
            encode_chunk_head(&chunk, &mut head);
            frame[38..42].copy_from_slice(&head[42..46]);
        }
        pos += 4 + len;
    }
}
