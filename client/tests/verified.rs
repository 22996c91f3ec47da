//! Verified streaming end to end (protocol version 2, `VERIFIED`): a chunk altered on the way
//! (by a proxy that fixes its CRC, as a tampering cache or edge would) fails the download at
//! that chunk, with only verified bytes kept; a resumed download is verified from its offset,
//! the bytes it kept on disk included; a version 1 client still works (and catches the same
//! alteration only at the end, by the whole-file digest).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, get, partial_path};
use chunkcast_client::session::{ConnectOptions, OpenOptions, Session};
use chunkcast_client::url::Scheme;
use chunkcast_media::ReassemblyError;
use chunkcast_protocol::verify::{GROUP_LEN, VerifyError};
use chunkcast_protocol::{Caps, ChunkFlags, DecodeError};
use chunkcast_server::Server;
use chunkcast_testkit::proxy::{crc_stripping_proxy, cutting_proxy, tampering_proxy};
use chunkcast_testkit::{server_with, url_at};

/// Every test is bounded: a hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(60);
/// Payload bytes per chunk the tests ask for, so that chunk `n` starts at `n × CHUNK`.
const CHUNK: u64 = 64 << 10;
/// The file: 4 MiB and a bit, so that the last group is short.
const LEN: usize = (4 << 20) + 1234;

/// Not a repeating pattern: every group hashes differently.
fn blob() -> Vec<u8> {
    (0..LEN as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9) >> 11) as u8)
        .collect()
}

/// A server whose library is one file, `blob.bin`.
async fn blob_server() -> (Server, tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let data = blob();
    std::fs::write(dir.path().join("blob.bin"), &data).unwrap();
    let root = dir.path().to_owned();
    let server = server_with(move |c| c.root = Some(root)).await;
    (server, dir, data)
}

async fn session_at(addr: std::net::SocketAddr, max_version: u16) -> Session {
    let opts = ConnectOptions {
        max_version,
        ..ConnectOptions::default()
    };
    Session::connect(&url_at(addr, Scheme::Tcp, ""), &opts)
        .await
        .unwrap()
}

fn opts(out: &Path, resume: bool) -> GetOptions {
    GetOptions {
        out: Some(out.to_owned()),
        resume,
        chunk_size: CHUNK as u32,
        ..GetOptions::default()
    }
}

fn out_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("blob.bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampering_proxy_is_caught_at_the_altered_chunk() {
    tokio::time::timeout(LIMIT, async {
        let (server, _lib, data) = blob_server().await;
        let n = 20;
        // The byte flipped lies in the chunk's second group.
        let (proxy, altered) = tampering_proxy(server.tcp_addr(), n, 20_000).await;
        let dir = tempfile::tempdir().unwrap();
        let out = out_path(&dir);
        let s = session_at(proxy, 2).await;
        assert!(s.established().caps.contains(Caps::VERIFIED));
        let err = get(&s, "blob.bin", &opts(&out, false)).await.unwrap_err();
        assert_eq!(altered.load(Ordering::SeqCst), 1);
        let bad_group = n * CHUNK + GROUP_LEN;
        match &err {
            ClientError::Cut { cause, have, .. } => {
                match cause.as_ref() {
                    ClientError::Unverified { seq, error } => {
                        assert_eq!(*seq, n, "{err}");
                        assert_eq!(*error, VerifyError::Data { offset: bad_group }, "{err}");
                    }
                    other => panic!("not a verification failure: {other}"),
                }
                // Everything before the altered group, and nothing of it or after it.
                assert_eq!(*have, bad_group, "{err}");
            }
            other => panic!("{other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("chunk {n}")), "{msg}");
        assert!(msg.contains(&format!("offset {bad_group}")), "{msg}");
        let kept = std::fs::read(partial_path(&out)).unwrap();
        assert!(
            kept == data[..bad_group as usize],
            "only verified bytes on disk"
        );
        assert!(!out.exists(), "a bad file is never renamed into place");
        s.close().await;

        // Straight to the server, `--resume` completes it, verified.
        let s = session_at(server.tcp_addr(), 2).await;
        let r = get(&s, "blob.bin", &opts(&out, true)).await.unwrap();
        assert!(r.verified);
        assert!(r.resumed_from > 0);
        assert!(std::fs::read(&out).unwrap() == data);
        s.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_download_is_verified_from_any_offset_and_so_are_its_kept_bytes() {
    tokio::time::timeout(LIMIT, async {
        let (server, _lib, data) = blob_server().await;
        let dir = tempfile::tempdir().unwrap();
        let out = out_path(&dir);
        // A cut download: some verified bytes on disk.
        let cut = cutting_proxy(server.tcp_addr(), 1_500_000, Arc::new(AtomicUsize::new(0))).await;
        let s = session_at(cut, 2).await;
        let err = get(&s, "blob.bin", &opts(&out, false)).await.unwrap_err();
        assert!(matches!(err, ClientError::Cut { .. }), "{err}");
        drop(s);
        let partial = partial_path(&out);
        let have = std::fs::metadata(&partial).unwrap().len();
        assert!(have > 0 && have < LEN as u64, "{have}");
        assert_eq!(
            have % GROUP_LEN,
            0,
            "only whole verified groups were written"
        );
        // Any offset: cut it back to an odd length.
        let odd = have - 12_345;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .unwrap()
            .set_len(odd)
            .unwrap();

        // Resumed through a tampering proxy: caught at the altered chunk, past the resume.
        let resume_at = (odd - 1) / GROUP_LEN * GROUP_LEN;
        let m = resume_at / CHUNK + 10;
        let (proxy, _) = tampering_proxy(server.tcp_addr(), m, 0).await;
        let s = session_at(proxy, 2).await;
        let err = get(&s, "blob.bin", &opts(&out, true)).await.unwrap_err();
        match &err {
            ClientError::Cut { cause, .. } => match cause.as_ref() {
                ClientError::Unverified {
                    error: VerifyError::Data { offset },
                    ..
                } => assert_eq!(*offset, resume_at + m * CHUNK, "{err}"),
                other => panic!("not a verification failure: {other}"),
            },
            other => panic!("{other}"),
        }
        s.close().await;
        let kept = std::fs::read(&partial).unwrap();
        assert_eq!(kept.len() as u64, resume_at + m * CHUNK);
        assert!(kept == data[..kept.len()], "only verified bytes on disk");

        // Bytes kept on disk that differ from the server's file are caught too (against the
        // tree's subtrees before the resume point), and nothing is renamed.
        let mut damaged = kept.clone();
        damaged[1000] ^= 0x40;
        std::fs::write(&partial, &damaged).unwrap();
        let s = session_at(server.tcp_addr(), 2).await;
        let err = get(&s, "blob.bin", &opts(&out, true)).await.unwrap_err();
        assert!(matches!(err, ClientError::Resume { .. }), "{err}");
        assert!(err.to_string().contains("differ"), "{err}");
        assert!(!out.exists());

        // Repaired, the resume completes, verified, byte for byte.
        std::fs::write(&partial, &kept).unwrap();
        let r = get(&s, "blob.bin", &opts(&out, true)).await.unwrap();
        assert!(r.verified);
        assert!(r.resumed_from > 0);
        assert!(std::fs::read(&out).unwrap() == data);
        s.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// A version 1 client is served as before: no `PROOF`, the digest checked at the end, so the
/// same alteration is caught only once the whole file has arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_client_is_served_as_before_and_catches_it_only_at_the_end() {
    tokio::time::timeout(LIMIT, async {
        let (server, _lib, data) = blob_server().await;
        let dir = tempfile::tempdir().unwrap();
        let out = out_path(&dir);
        let s = session_at(server.tcp_addr(), 1).await;
        assert_eq!(s.established().version, 1);
        assert!(!s.established().caps.contains(Caps::VERIFIED));
        let r = get(&s, "blob.bin", &opts(&out, false)).await.unwrap();
        assert!(r.verified);
        assert!(std::fs::read(&out).unwrap() == data);
        s.close().await;

        std::fs::remove_file(&out).unwrap();
        let (proxy, _) = tampering_proxy(server.tcp_addr(), 3, 0).await;
        let s = session_at(proxy, 1).await;
        let err = get(&s, "blob.bin", &opts(&out, false)).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Reassembly(ReassemblyError::DigestMismatch { .. })
            ),
            "{err}"
        );
        // Every byte arrived (and was written) before the digest could say so.
        let partial = partial_path(&out);
        assert_eq!(std::fs::metadata(&partial).unwrap().len(), LEN as u64);
        assert!(!out.exists());
        s.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// A verified download's chunks carry a CRC of their header only (`HEADER_CRC`: the tree
/// proves the payload, so neither end passes over it for a CRC), on every transport, and only
/// when the client asked for it: a stream opened without asking gets full CRCs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_stream_that_asks_gets_chunks_without_a_payload_crc() {
    tokio::time::timeout(LIMIT, async {
        let (server, _dir, data) = blob_server().await;
        for scheme in chunkcast_testkit::ALL {
            let s = Session::connect(
                &chunkcast_testkit::url(&server, scheme, ""),
                &chunkcast_testkit::pinned(&server),
            )
            .await
            .unwrap();
            assert!(s.established().caps.contains(Caps::HEADER_CRC));
            for ask in [false, true] {
                let mut incoming = s
                    .open(&OpenOptions {
                        header_crc: ask,
                        ..OpenOptions::download("blob.bin")
                    })
                    .await
                    .unwrap();
                let mut bytes = Vec::new();
                while let Some(c) = incoming.next().await {
                    let c = c.unwrap();
                    assert_eq!(
                        c.has(ChunkFlags::HEADER_CRC),
                        ask,
                        "{scheme:?}, asked: {ask}"
                    );
                    bytes.extend_from_slice(&c.payload);
                }
                assert!(bytes == data, "{scheme:?}: the bytes differ");
            }
            s.close().await;
        }
        server.shutdown().await;
    })
    .await
    .expect("in time");
}

/// A verified download on plain TCP goes from the page cache (`sendfile`): the server counts
/// every payload byte of it there, from the start and from a resume offset, and the file
/// arrives verified, byte for byte. Over TLS and QUIC the bytes must pass through user space
/// (encryption), and a server told not to (`--no-sendfile`) reads them: nothing is counted,
/// and the same file arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_download_on_plain_tcp_goes_from_the_page_cache() {
    use chunkcast_testkit::metrics::{metric, scrape};
    const SENDFILE: &str = "chunkcast_chunk_payload_bytes_sendfile_total";
    const SENT: &str = "chunkcast_chunk_payload_bytes_sent_total";
    tokio::time::timeout(LIMIT, async {
        let data = blob();
        for sendfile in [true, false] {
            let lib = tempfile::tempdir().unwrap();
            std::fs::write(lib.path().join("blob.bin"), &data).unwrap();
            let root = lib.path().to_owned();
            let server = server_with(move |c| {
                c.root = Some(root);
                c.metrics = Some("127.0.0.1:0".parse().unwrap());
                c.sendfile = sendfile;
            })
            .await;
            let maddr = server.metrics_addr().unwrap();
            for scheme in chunkcast_testkit::ALL {
                let dir = tempfile::tempdir().unwrap();
                let out = out_path(&dir);
                let before = scrape(maddr).await;
                let s = Session::connect(
                    &chunkcast_testkit::url(&server, scheme, ""),
                    &chunkcast_testkit::pinned(&server),
                )
                .await
                .unwrap();
                let r = get(&s, "blob.bin", &opts(&out, false)).await.unwrap();
                assert!(r.verified);
                assert!(std::fs::read(&out).unwrap() == data, "{scheme:?}");

                // Resumed from an odd offset.
                let odd = 1_234_567;
                std::fs::rename(&out, partial_path(&out)).unwrap();
                let partial = std::fs::OpenOptions::new()
                    .write(true)
                    .open(partial_path(&out))
                    .unwrap();
                partial.set_len(odd).unwrap();
                let r = get(&s, "blob.bin", &opts(&out, true)).await.unwrap();
                assert!(r.verified && r.resumed_from > 0 && r.resumed_from <= odd);
                assert!(std::fs::read(&out).unwrap() == data, "{scheme:?}, resumed");
                s.close().await;

                let after = scrape(maddr).await;
                let counted = |series| metric(&after, series) - metric(&before, series);
                // The resume starts at the verification group holding the last kept byte.
                let resent_from = (r.resumed_from - 1) / GROUP_LEN * GROUP_LEN;
                let both = (2 * LEN as u64 - resent_from) as f64;
                assert_eq!(counted(SENT), both, "{scheme:?}");
                let from_file = if sendfile && scheme == Scheme::Tcp {
                    both
                } else {
                    0.0
                };
                assert_eq!(
                    counted(SENDFILE),
                    from_file,
                    "{scheme:?}, sendfile {sendfile}"
                );
            }
            server.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// A file that shrinks while a verified download sends it from the page cache cuts the
/// stream: the client gets an error, never a short chunk or an early end it could take for
/// the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_shrinks_under_sendfile_cuts_the_stream() {
    tokio::time::timeout(LIMIT, async {
        // Larger than what the socket buffers and the stream's queue hold.
        let data: Vec<u8> = (0..64u64 << 20)
            .map(|i| (i.wrapping_mul(31) >> 7) as u8)
            .collect();
        let lib = tempfile::tempdir().unwrap();
        let path = lib.path().join("big.bin");
        std::fs::write(&path, &data).unwrap();
        let root = lib.path().to_owned();
        let server = server_with(move |c| c.root = Some(root)).await;
        let s = session_at(server.tcp_addr(), 2).await;
        let mut incoming = s
            .open(&OpenOptions {
                header_crc: true,
                chunk_size: CHUNK as u32,
                ..OpenOptions::download("big.bin")
            })
            .await
            .unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        assert!(first.has(ChunkFlags::HEADER_CRC));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let mut bytes = first.payload.len();
        let end = loop {
            match incoming.next().await {
                Some(Ok(c)) => bytes += c.payload.len(),
                other => break other,
            }
        };
        assert!(matches!(end, Some(Err(_))), "the stream is cut: {end:?}");
        assert!(bytes < data.len() - (16 << 20), "{bytes}");
        drop(s);
        server.shutdown().await;
    })
    .await
    .expect("in time");
}

/// A chunk without its payload CRC on a stream that nothing verifies is refused, so that a
/// middle box cannot turn the check off: a proxy that re-encodes every chunk with `HEADER_CRC`
/// fails a plain stream at its first chunk, while a verified download through it completes
/// (the tree checks every byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_without_its_payload_crc_is_refused_on_a_stream_that_did_not_ask() {
    tokio::time::timeout(LIMIT, async {
        let (server, dir, data) = blob_server().await;
        let proxy = crc_stripping_proxy(server.tcp_addr()).await;
        let s = session_at(proxy, 2).await;
        let mut incoming = s.open(&OpenOptions::download("blob.bin")).await.unwrap();
        let first = incoming.next().await.expect("a chunk");
        assert!(
            matches!(
                first,
                Err(ClientError::Corrupt(DecodeError::Unproven { seq: 0, .. }))
            ),
            "{first:?}"
        );
        drop(incoming);
        let out = out_path(&dir).with_extension("got");
        let r = get(&s, "blob.bin", &opts(&out, false)).await.unwrap();
        assert!(r.verified);
        assert!(std::fs::read(&out).unwrap() == data);
        s.close().await;
        server.shutdown().await;
    })
    .await
    .expect("in time");
}
