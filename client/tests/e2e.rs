//! End to end: the real server and the real client code, in-process, on loopback.
//! Every behaviour is checked over plain TCP, TLS over TCP and QUIC.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, get, get_resuming, partial_path};
use chunkcast_client::session::{ConnectOptions, OpenOptions, Session};
use chunkcast_client::url::Scheme;
use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::wire::FileDigest;
use chunkcast_testkit::proxy::cutting_proxy;
use chunkcast_testkit::{connect, pinned, samples, server_with, url, url_at};

use chunkcast_server::{Config, Server};
use chunkcast_transport::tls::Trust;

const ALL: [Scheme; 3] = [Scheme::Tcp, Scheme::Tcps, Scheme::Quic];
/// Every test is bounded: a hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(60);

fn out_opts(path: PathBuf) -> GetOptions {
    GetOptions {
        out: Some(path),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_arrives_byte_identical_over_every_transport() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        for scheme in ALL {
            let s = connect(&server, scheme).await;
            let entries = s.list("").await.unwrap();
            assert_eq!(entries.len(), chunkcast_media_samples::SAMPLES.len());
            for e in entries {
                // lz4 on for TLS, so that the compressed path is covered end to end too.
                let mut opts = out_opts(dir.path().join(format!("{}-{}", scheme.name(), e.path)));
                opts.compress = scheme == Scheme::Tcps;
                let r = get(&s, &e.path, &opts)
                    .await
                    .unwrap_or_else(|err| panic!("{scheme:?} {}: {err}", e.path));
                assert!(r.verified);
                let got = std::fs::read(&r.path).unwrap();
                let want = std::fs::read(samples().join(&e.path)).unwrap();
                assert!(got == want, "{scheme:?} {} differs", e.path);
                assert!(!partial_path(&r.path).exists(), "partial file left behind");
            }
            s.close().await;
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// A file the server has not hashed yet starts streaming at once and is verified with the
/// digest the server computes while sending it (`DIGEST`, after the last chunk); the server
/// keeps that digest and announces it in `OPENED` the next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_download_is_verified_by_the_digest_sent_after_it() {
    tokio::time::timeout(LIMIT, async {
        let name = "clip-320x240-25fps.mjpeg";
        let want = *blake3::hash(&std::fs::read(samples().join(name)).unwrap()).as_bytes();
        for scheme in ALL {
            // A new server: nothing hashed yet; a version 1 client (verified streaming always
            // announces the digest, from the tree it builds first).
            let server = server_with(|_| {}).await;
            let v1 = ConnectOptions {
                max_version: 1,
                ..pinned(&server)
            };
            let s = Session::connect(&url(&server, scheme, ""), &v1)
                .await
                .unwrap();
            for announced in [FileDigest::AtEnd, FileDigest::Known(want)] {
                let mut incoming = s.open(&OpenOptions::download(name)).await.unwrap();
                assert_eq!(incoming.opened.digest, announced, "{scheme:?}");
                let mut chunks = 0;
                while let Some(c) = incoming.next().await {
                    c.unwrap();
                    chunks += 1;
                }
                assert!(chunks > 1);
                assert_eq!(incoming.file_digest().await.unwrap(), Some(want));
            }
            // And `get` checks it: a verified, byte-identical file.
            let dir = tempfile::tempdir().unwrap();
            let server2 = server_with(|_| {}).await;
            let s2 = connect(&server2, scheme).await;
            let r = get(&s2, name, &out_opts(dir.path().join(name)))
                .await
                .unwrap();
            assert!(r.verified);
            assert_eq!(
                std::fs::read(&r.path).unwrap(),
                std::fs::read(samples().join(name)).unwrap()
            );
            s2.close().await;
            server2.shutdown().await;
            s.close().await;
            server.shutdown().await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_viewers_all_get_the_file() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let want = std::fs::read(samples().join(chunkcast_media_samples::CLIP_MJPEG)).unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let scheme = ALL[i % 3];
            let u = url(&server, scheme, chunkcast_media_samples::CLIP_MJPEG);
            let opts = pinned(&server);
            let out = dir.path().join(format!("viewer-{i}"));
            tasks.push(tokio::spawn(async move {
                let s = Session::connect(&u, &opts).await.unwrap();
                let r = get(&s, &u.path, &out_opts(out)).await.unwrap();
                s.close().await;
                r
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert!(r.verified);
            assert!(std::fs::read(&r.path).unwrap() == want);
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// For [`cutting_proxy`]: connections after the first pass everything.
fn pass_later() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(usize::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_resuming_recovers_from_a_cut_by_itself() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let name = chunkcast_media_samples::CLIP_Y4M;
        let dir = tempfile::tempdir().unwrap();
        let proxy = cutting_proxy(server.tcp_addr(), 2_000_000, pass_later()).await;
        let u = url_at(proxy, Scheme::Tcp, name);
        let opts = out_opts(dir.path().join("clip.y4m"));
        let r = get_resuming(&u, &ConnectOptions::default(), &opts, 2)
            .await
            .unwrap();
        assert!(r.verified);
        assert!(r.resumed_from > 0, "it resumed rather than starting over");
        assert!(std::fs::read(&r.path).unwrap() == std::fs::read(samples().join(name)).unwrap());
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_cut_connection_completes_the_file() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let name = chunkcast_media_samples::RANDOM_BIN;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("resumed.bin");
        let proxy = cutting_proxy(server.tcp_addr(), 7_000_000, pass_later()).await;
        let s = Session::connect(&url_at(proxy, Scheme::Tcp, ""), &ConnectOptions::default())
            .await
            .unwrap();
        let err = get(&s, name, &out_opts(out.clone())).await.unwrap_err();
        assert!(matches!(err.cause(), ClientError::Lost(_)), "{err}");
        let partial = partial_path(&out);
        assert!(
            err.to_string().contains("--resume")
                && err.to_string().contains(&partial.display().to_string()),
            "names the partial file and says what to do: {err}"
        );
        assert!(!out.exists(), "no file under the final name after a cut");
        let have = std::fs::metadata(partial_path(&out)).unwrap().len();
        assert!(
            have > 0 && have < 7_000_000,
            "partial holds what arrived: {have}"
        );

        for scheme in [Scheme::Quic] {
            let s = connect(&server, scheme).await;
            let r = get(
                &s,
                name,
                &GetOptions {
                    resume: true,
                    ..out_opts(out.clone())
                },
            )
            .await
            .unwrap();
            assert_eq!(r.resumed_from, have);
            assert!(r.verified);
            s.close().await;
        }
        assert!(std::fs::read(&out).unwrap() == std::fs::read(samples().join(name)).unwrap());
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_on_every_transport() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|c| c.token = Some("sesame".into())).await;
        let dir = tempfile::tempdir().unwrap();
        for scheme in ALL {
            let u = url(&server, scheme, "");
            // No token, then a wrong one.
            for token in [None, Some("open".to_owned())] {
                let opts = ConnectOptions {
                    token,
                    ..pinned(&server)
                };
                let err = Session::connect(&u, &opts).await.err().expect("refused");
                assert_eq!(
                    err.code(),
                    Some(ErrorCode::Unauthorized),
                    "{scheme:?}: {err}"
                );
            }
            let opts = ConnectOptions {
                token: Some("sesame".into()),
                ..pinned(&server)
            };
            let s = Session::connect(&u, &opts).await.unwrap();
            for (path, code) in [
                ("../etc/passwd", ErrorCode::BadRequest),
                ("/etc/passwd", ErrorCode::BadRequest),
                ("no-such-file.wav", ErrorCode::NotFound),
            ] {
                let err = get(&s, path, &out_opts(dir.path().join("x")))
                    .await
                    .unwrap_err();
                assert_eq!(err.code(), Some(code), "{scheme:?} {path}: {err}");
            }
            // The connection is still good after refusals.
            assert!(!s.list("").await.unwrap().is_empty());
            s.close().await;
        }
        // A wrong pin is refused before any byte of chunkcast is exchanged.
        let wrong = ConnectOptions {
            trust: Trust::Pin([7; 32]),
            ..Default::default()
        };
        for scheme in [Scheme::Tcps, Scheme::Quic] {
            let err = Session::connect(&url(&server, scheme, ""), &wrong)
                .await
                .err()
                .expect("refused");
            assert!(
                err.to_string().contains("certificate mismatch"),
                "{scheme:?}: {err}"
            );
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_stream_does_not_disturb_others() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        for scheme in ALL {
            let s = connect(&server, scheme).await;
            let mut inc = s
                .open(&OpenOptions::download(chunkcast_media_samples::RANDOM_BIN))
                .await
                .unwrap();
            for _ in 0..5 {
                inc.next().await.unwrap().unwrap();
            }
            drop(inc);
            drop(s); // no goodbye: the client just disappears
            let other = connect(&server, scheme).await;
            let r = get(
                &other,
                chunkcast_media_samples::SWEEP_48K_WAV,
                &out_opts(dir.path().join("ok.wav")),
            )
            .await
            .unwrap();
            assert!(r.verified);
            other.close().await;
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn exposed_address_without_a_token_is_refused_before_binding() {
    let mut c = Config::on("0.0.0.0:0".parse().unwrap());
    c.root = Some(std::env::temp_dir());
    let err = Server::start(c).await.err().expect("refused");
    assert!(err.to_string().contains("--allow-anonymous"), "{err}");
}
