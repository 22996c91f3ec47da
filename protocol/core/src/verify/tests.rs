use proptest::prelude::*;

use super::*;

fn data(len: usize) -> Vec<u8> {
    // Not a repeating pattern: every group must hash differently.
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect()
}

/// Streams `file` from `start` in chunks of `chunk` bytes, the server's way (each chunk's
/// nodes just before it), through `tamper` (chunk index, nodes, bytes), into a verifier.
/// Returns the verified bytes and how the stream ended.
fn stream(
    file: &[u8],
    start: u64,
    chunk: usize,
    mut tamper: impl FnMut(usize, &mut Vec<u8>, &mut Vec<u8>),
) -> (Vec<u8>, Result<(), VerifyError>) {
    let ob = Outboard::from_bytes(file);
    let mut v = Verifier::new(ob.root(), file.len() as u64, start).unwrap();
    let mut out = Vec::new();
    let result = (|| {
        for (i, piece) in file[start as usize..].chunks(chunk).enumerate() {
            let from = start + (i * chunk) as u64;
            let mut nodes = ob.proof(start, from, from + piece.len() as u64);
            let mut bytes = piece.to_vec();
            tamper(i, &mut nodes, &mut bytes);
            v.add_nodes(&nodes)?;
            v.push(Bytes::from(bytes))?;
            while let Some(b) = v.poll_verified() {
                out.extend_from_slice(&b);
            }
        }
        v.finish()?;
        v.check_prefix(&file[..start as usize])
    })();
    while let Some(b) = v.poll_verified() {
        out.extend_from_slice(&b);
    }
    (out, result)
}

const G: usize = GROUP_LEN as usize;

#[test]
fn which_streams_are_verified() {
    let v = Caps::LZ4 | Caps::VERIFIED;
    assert_eq!(verified_start(v, Resume::Start), Some(0));
    assert_eq!(
        verified_start(v, Resume::Offset(3 * GROUP_LEN)),
        Some(3 * GROUP_LEN)
    );
    assert_eq!(verified_start(v, Resume::Offset(3 * GROUP_LEN + 1)), None);
    assert_eq!(verified_start(v, Resume::Seq(0)), None);
    assert_eq!(verified_start(Caps::LZ4, Resume::Start), None);
}

#[test]
fn root_is_blake3_of_the_file_and_outboard_is_one_node_per_group() {
    for len in [
        0,
        1,
        1024,
        G - 1,
        G,
        G + 1,
        2 * G,
        3 * G + 5,
        16 * G,
        37 * G + 999,
    ] {
        let file = data(len);
        let ob = Outboard::from_bytes(&file);
        assert_eq!(ob.root(), *blake3::hash(&file).as_bytes(), "len {len}");
        assert_eq!(
            ob.size() as u64,
            (group_count(len as u64) - 1) * 64,
            "len {len}"
        );
        let read = Outboard::from_reader(&file[..], len as u64).unwrap();
        assert_eq!(read, ob);
    }
}

#[test]
fn every_node_is_sent_once_from_the_start() {
    let file = data(37 * G + 999);
    let ob = Outboard::from_bytes(&file);
    let all = ob.proof(0, 0, file.len() as u64);
    assert_eq!(all.len(), ob.size());
    // Chunk by chunk, the same nodes in the same order.
    let mut pieces = Vec::new();
    for from in (0..file.len() as u64).step_by(5000) {
        pieces.extend(ob.proof(0, from, from + 5000));
    }
    assert_eq!(pieces, all);
}

#[test]
fn verifies_from_every_group_offset() {
    for len in [1, G, G + 1, 2 * G, 3 * G + 5, 9 * G, 37 * G + 999] {
        let file = data(len);
        for start in (0..len).step_by(G) {
            for chunk in [1000, G, 3 * G + 7, 1 << 20] {
                let (out, r) = stream(&file, start as u64, chunk, |_, _, _| {});
                assert_eq!(r, Ok(()), "len {len} start {start} chunk {chunk}");
                assert_eq!(out, file[start..], "len {len} start {start} chunk {chunk}");
            }
        }
    }
}

#[test]
fn the_empty_file_verifies() {
    let ob = Outboard::from_bytes(b"");
    let mut v = Verifier::new(ob.root(), 0, 0).unwrap();
    assert_eq!(v.finish(), Ok(()));
    let mut v = Verifier::new([1; 32], 0, 0).unwrap();
    assert_eq!(v.finish(), Err(VerifyError::Data { offset: 0 }));
}

#[test]
fn nodes_that_come_after_the_bytes_still_verify() {
    // QUIC: the control stream's nodes may arrive after the media stream's bytes.
    let file = data(21 * G + 3);
    let ob = Outboard::from_bytes(&file);
    let start = 4 * G as u64;
    let mut v = Verifier::new(ob.root(), file.len() as u64, start).unwrap();
    v.push(Bytes::copy_from_slice(&file[start as usize..]))
        .unwrap();
    assert!(v.needs_nodes());
    assert_eq!(v.poll_verified(), None, "nothing unverified comes out");
    v.add_nodes(&ob.proof(start, start, file.len() as u64))
        .unwrap();
    let mut out = Vec::new();
    while let Some(b) = v.poll_verified() {
        out.extend_from_slice(&b);
    }
    assert_eq!(out, file[start as usize..]);
    v.finish().unwrap();
}

#[test]
fn a_flipped_byte_fails_at_its_group_and_nothing_of_it_comes_out() {
    let file = data(21 * G + 3);
    for at in [0, 1, G - 1, G, 5 * G + 77, 16 * G, 21 * G + 2] {
        let chunk = 3 * G + 7;
        let (out, r) = stream(&file, 0, chunk, |i, _, bytes| {
            if i == at / chunk {
                bytes[at % chunk] ^= 0x01;
            }
        });
        let group = (at / G * G) as u64;
        assert_eq!(r, Err(VerifyError::Data { offset: group }), "flip at {at}");
        assert_eq!(out, file[..group as usize], "only the groups before it");
    }
}

#[test]
fn a_flipped_node_is_refused() {
    let file = data(21 * G + 3);
    let ob = Outboard::from_bytes(&file);
    let total = ob.size() * 8;
    for bit in (0..total).step_by(97) {
        let mut seen = 0;
        let (_, r) = stream(&file, 0, 2 * G, |_, nodes, _| {
            let here = nodes.len() * 8;
            if (seen..seen + here).contains(&bit) {
                nodes[(bit - seen) / 8] ^= 1 << ((bit - seen) % 8);
            }
            seen += here;
        });
        assert!(
            matches!(r, Err(VerifyError::Proof { .. } | VerifyError::Data { .. })),
            "bit {bit}: {r:?}"
        );
    }
}

#[test]
fn a_prefix_on_disk_that_differs_is_caught() {
    let file = data(21 * G + 3);
    let ob = Outboard::from_bytes(&file);
    let start = 13 * G as u64;
    let mut v = Verifier::new(ob.root(), file.len() as u64, start).unwrap();
    v.add_nodes(&ob.proof(start, start, file.len() as u64))
        .unwrap();
    v.push(Bytes::copy_from_slice(&file[start as usize..]))
        .unwrap();
    v.finish().unwrap();
    v.check_prefix(&file[..start as usize]).unwrap();
    let mut disk = file[..start as usize].to_vec();
    disk[9 * G + 1] ^= 0x80;
    assert_eq!(
        v.check_prefix(&disk[..]),
        Err(VerifyError::Prefix {
            offset: 8 * G as u64,
            end: 12 * G as u64
        })
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let file = data(3 * G);
    let ob = Outboard::from_bytes(&file);
    assert_eq!(
        Verifier::new(ob.root(), 3 * GROUP_LEN, 100).unwrap_err(),
        VerifyError::Misaligned(100)
    );
    let mut v = Verifier::new(ob.root(), 3 * GROUP_LEN, 0).unwrap();
    assert_eq!(v.add_nodes(&[0; 63]), Err(VerifyError::BadProofLength(63)));
    assert!(matches!(
        v.push(Bytes::from(vec![0; 3 * G + 1])),
        Err(VerifyError::Excess(_))
    ));
    let mut v = Verifier::new(ob.root(), 3 * GROUP_LEN, 0).unwrap();
    v.add_nodes(&ob.proof(0, 0, GROUP_LEN)).unwrap();
    v.push(Bytes::copy_from_slice(&file[..G])).unwrap();
    assert!(matches!(v.finish(), Err(VerifyError::Incomplete { .. })));
    let too_many = vec![0; (MAX_PENDING_NODES + 1) * NODE_LEN];
    assert_eq!(v.add_nodes(&too_many), Err(VerifyError::TooMuchProof));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any file, any start group, any chunking: the stream verifies and yields the file's
    /// bytes from the start.
    #[test]
    fn any_stream_verifies(len in 0usize..40 * G, start in 0usize..40, chunk in 1usize..5 * G) {
        let file = data(len);
        let start = (start % group_count(len as u64) as usize) * G;
        let (out, r) = stream(&file, start as u64, chunk, |_, _, _| {});
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(&out[..], &file[start.min(len)..]);
    }

    /// Any flipped bit in the bytes or in the nodes is refused, and what came out before the
    /// refusal is the file's own bytes.
    #[test]
    fn any_flipped_bit_is_refused(
        len in 1usize..30 * G,
        start in 0usize..30,
        chunk in 1000usize..4 * G,
        pick in any::<u64>(),
        in_nodes in any::<bool>(),
    ) {
        let file = data(len);
        let start = (start % group_count(len as u64) as usize) * G;
        let ob = Outboard::from_bytes(&file);
        let node_bits = ob.proof(start as u64, start as u64, len as u64).len() * 8;
        let in_nodes = in_nodes && node_bits > 0;
        let bit = if in_nodes { pick as usize % node_bits } else { pick as usize % ((len - start) * 8) };
        let mut seen = 0;
        let (out, r) = stream(&file, start as u64, chunk, |_, nodes, bytes| {
            let target: &mut Vec<u8> = if in_nodes { nodes } else { bytes };
            let here = target.len() * 8;
            if (seen..seen + here).contains(&bit) {
                target[(bit - seen) / 8] ^= 1 << ((bit - seen) % 8);
            }
            seen += here;
        });
        prop_assert!(r.is_err());
        prop_assert_eq!(&out[..], &file[start..start + out.len()]);
    }
}
