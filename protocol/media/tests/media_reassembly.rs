//! The reassembler's bookkeeping (gaps, duplicates, reorder bound, digests, resume) and the
//! unit assembler's resynchronisation after losses.

mod media_common;

use bytes::Bytes;
use chunkcast_media::{Expect, Reassembler, ReassemblyError, UnitAssembler, UnitError};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, StreamId};
use media_common::*;

/// A bytes stream of `data` cut at `size`.
fn chunks(data: &[u8], size: usize) -> Vec<Chunk> {
    let mut c = config();
    c.chunk_size = size;
    packetize(data, "f.bin", c, Pieces::Random(size * 3), 1).1
}

fn expect(data: &[u8], n: usize) -> Expect {
    let mut e = Expect::new();
    e.total_len = Some(data.len() as u64);
    e.chunk_count = Some(n as u64);
    e.digest = Some(*blake3::hash(data).as_bytes());
    e
}

fn drain(r: &mut Reassembler, out: &mut Vec<u8>) {
    while let Some((off, b)) = r.poll_write() {
        assert_eq!(off, out.len() as u64);
        out.extend_from_slice(&b);
    }
}

#[test]
fn gaps_are_reported_exactly() {
    let data = Rng::new(1).bytes(10_000);
    let cs = chunks(&data, 1000);
    let mut r = Reassembler::new(expect(&data, cs.len()));
    for i in [0, 1, 4, 7] {
        r.push(cs[i].clone()).unwrap();
    }
    assert_eq!(r.missing(), vec![2..4, 5..7]);
    assert_eq!(r.bytes_done(), 2000);
    r.push(cs[9].clone()).unwrap(); // END_OF_STREAM: the end is known.
    assert_eq!(r.missing(), vec![2..4, 5..7, 8..9]);
    let mut out = Vec::new();
    drain(&mut r, &mut out);
    assert!(!r.is_complete());
    match r.finish() {
        Err(ReassemblyError::Gap { missing }) => assert_eq!(missing, vec![2..4, 5..7, 8..9]),
        other => panic!("{other:?}"),
    }
    // Without the end of stream, the last range is open-ended.
    let mut r = Reassembler::new(Expect::new());
    r.push(cs[0].clone()).unwrap();
    r.push(cs[3].clone()).unwrap();
    match r.finish() {
        Err(ReassemblyError::Gap { missing }) => assert_eq!(missing, vec![1..3, 4..u64::MAX]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicates_are_ignored_and_digest_checked() {
    let data = Rng::new(2).bytes(5000);
    let cs = chunks(&data, 700);
    let mut r = Reassembler::new(expect(&data, cs.len()));
    let mut out = Vec::new();
    for c in cs.iter().chain(cs.iter().rev()) {
        r.push(c.clone()).unwrap();
        drain(&mut r, &mut out);
    }
    let s = r.finish().unwrap();
    assert_eq!(
        (s.len, s.chunks, s.received, s.duplicates),
        (5000, cs.len() as u64, cs.len() as u64, cs.len() as u64)
    );
    assert!(out == data);
    // A flipped byte in transit (CRC would catch it; here the digest does).
    let mut e = expect(&data, cs.len());
    e.digest = Some(*blake3::hash(b"other").as_bytes());
    let mut r = Reassembler::new(e);
    let mut out = Vec::new();
    for c in &cs {
        r.push(c.clone()).unwrap();
        drain(&mut r, &mut out);
    }
    assert!(matches!(
        r.finish(),
        Err(ReassemblyError::DigestMismatch { .. })
    ));
}

#[test]
fn a_digest_announced_after_the_stream_is_checked() {
    let data = Rng::new(9).bytes(5000);
    let cs = chunks(&data, 700);
    for (digest, ok) in [
        (*blake3::hash(&data).as_bytes(), true),
        (*blake3::hash(b"other").as_bytes(), false),
    ] {
        let mut e = expect(&data, cs.len());
        e.digest = None;
        let mut r = Reassembler::new(e);
        let mut out = Vec::new();
        for c in &cs {
            r.push(c.clone()).unwrap();
            drain(&mut r, &mut out);
        }
        r.expect_digest(digest);
        match r.finish() {
            Ok(s) => assert!(ok && s.digest == Some(digest)),
            Err(e) => assert!(!ok && matches!(e, ReassemblyError::DigestMismatch { .. })),
        }
    }
}

#[test]
fn reorder_bound_is_enforced() {
    let data = Rng::new(3).bytes(10_000);
    let cs = chunks(&data, 1000);
    let mut e = expect(&data, cs.len());
    e.max_pending_bytes = 2500;
    let mut r = Reassembler::new(e);
    r.push(cs[1].clone()).unwrap();
    r.push(cs[2].clone()).unwrap();
    let err = r.push(cs[3].clone()).unwrap_err();
    assert!(matches!(
        err,
        ReassemblyError::ReorderWindowExceeded {
            pending: 2000,
            incoming: 1000,
            limit: 2500
        }
    ));
    // The chunk needed next is always taken, and frees the buffer once polled.
    r.push(cs[0].clone()).unwrap();
    let mut out = Vec::new();
    drain(&mut r, &mut out);
    for c in &cs[3..] {
        r.push(c.clone()).unwrap();
        drain(&mut r, &mut out);
    }
    r.finish().unwrap();
    assert!(out == data);
}

#[test]
fn inconsistent_chunks_are_refused() {
    let data = Rng::new(4).bytes(3000);
    let cs = chunks(&data, 1000);
    let mut r = Reassembler::new(expect(&data, cs.len()));
    let mut bad = cs[0].clone();
    bad.offset = 5;
    assert!(matches!(
        r.push(bad),
        Err(ReassemblyError::Inconsistent { seq: 0, .. })
    ));
    let mut bad = cs[1].clone();
    bad.flags = bad.flags | ChunkFlags::COMPRESSED;
    assert!(matches!(
        r.push(bad),
        Err(ReassemblyError::Compressed { seq: 1 })
    ));
    let mut bad = cs[1].clone();
    bad.raw_len += 1;
    assert!(r.push(bad).is_err());
    // Held neighbours must touch.
    r.push(cs[2].clone()).unwrap();
    let mut bad = cs[1].clone();
    bad.payload = bad.payload.slice(..999);
    bad.raw_len = 999;
    assert!(matches!(
        r.push(bad),
        Err(ReassemblyError::Inconsistent { seq: 1, .. })
    ));
    // Beyond the announced length or count, or after the end of stream.
    let beyond = Chunk::new(
        StreamId(7),
        3,
        3000,
        0,
        0,
        ChunkFlags::empty(),
        Bytes::from_static(b"x"),
    );
    assert!(r.push(beyond).is_err());
    // Length mismatch when nothing was announced but the file on disk is checked after.
    let mut e = Expect::new();
    e.total_len = Some(2999);
    let mut r = Reassembler::new(e);
    r.push(cs[0].clone()).unwrap();
    assert!(
        r.push(cs[2].clone()).is_err(),
        "end of stream past the announced length"
    );
}

#[test]
fn resume_with_a_prefix_hasher_checks_the_whole_file() {
    let data = Rng::new(5).bytes(20_000);
    let cs = chunks(&data, 1500);
    let split = 6;
    let start_offset = cs[split].offset;
    let mut prefix = blake3::Hasher::new();
    prefix.update(&data[..start_offset as usize]);
    let mut e = expect(&data, cs.len());
    e.start_seq = split as u64;
    e.start_offset = start_offset;
    e.prefix = Some(prefix);
    let mut r = Reassembler::new(e.clone());
    let mut out = data[..start_offset as usize].to_vec();
    // The server resends from the start; already-written chunks count as duplicates.
    for c in cs.iter().rev() {
        r.push(c.clone()).unwrap();
    }
    drain(&mut r, &mut out);
    let s = r.finish().unwrap();
    assert_eq!(s.digest, Some(*blake3::hash(&data).as_bytes()));
    assert_eq!(s.duplicates, split as u64);
    assert!(out == data);
    // Without the prefix the digest cannot be checked.
    e.prefix = None;
    let mut r = Reassembler::new(e);
    for c in &cs[split..] {
        r.push(c.clone()).unwrap();
    }
    drain(&mut r, &mut data[..start_offset as usize].to_vec());
    assert_eq!(r.finish(), Err(ReassemblyError::NoPrefix));
}

#[test]
fn unflushed_bytes_are_an_error() {
    let data = Rng::new(6).bytes(100);
    let cs = chunks(&data, 64);
    let mut r = Reassembler::new(Expect::new());
    for c in &cs {
        r.push(c.clone()).unwrap();
    }
    assert!(r.is_complete());
    assert_eq!(r.finish(), Err(ReassemblyError::Unflushed { bytes: 100 }));
}

#[test]
fn units_resync_after_losses_and_bound_size() {
    // Y4M frames of 48 bytes + "FRAME\n", cut at 20 bytes: 3 pieces per unit.
    let mut data = b"YUV4MPEG2 W4 H4 F25:1 C444\n".to_vec();
    for i in 0..6u8 {
        data.extend_from_slice(b"FRAME\n");
        data.extend_from_slice(&[i; 48]);
    }
    let mut c = config();
    c.chunk_size = 20;
    let (p, cs) = packetize(&data, "v.y4m", c, Pieces::Random(50), 1);
    // The 27-byte header is two INIT chunks.
    assert_eq!(cs.len(), 2 + 6 * 3);
    let mut a = UnitAssembler::new(p.codec(), 1000);
    let mut got = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        // Lose the middle piece of frame 1 (chunks 5..=7): frame 1 is dropped, 2 is whole.
        if i == 6 {
            continue;
        }
        if let Some(u) = a.push(c.clone()).unwrap() {
            assert!(u.data.iter().all(|&b| u64::from(b) == u.pts_us / 40_000));
            got.push(u.pts_us / 40_000);
        }
    }
    assert_eq!(got, [0, 2, 3, 4, 5]);
    assert_eq!(a.init_bytes(), b"YUV4MPEG2 W4 H4 F25:1 C444\n");
    // A bound below the unit size drops every unit with an error, then recovers.
    let mut a = UnitAssembler::new(Codec::Bytes, 30);
    let mut errors = 0;
    for c in &cs[2..] {
        match a.push(c.clone()) {
            Err(UnitError::TooLarge { limit: 30, .. }) => errors += 1,
            Ok(None) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(errors, 6);
}
