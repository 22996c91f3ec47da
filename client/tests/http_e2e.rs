//! `get` and `watch` over the real server's HTTP interface (`--http`), on loopback: files
//! byte-identical over http:// and https:// (pinned certificate), a resume, a tampering
//! cache between client and server caught at the first chunk it alters, and a live channel
//! received chunk by chunk, in order, over blocking requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, partial_path};
use chunkcast_client::http::HttpClient;
use chunkcast_client::http::get::get;
use chunkcast_client::http::live::Channel;
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::url::{Scheme, Url};
use chunkcast_protocol::verify::VerifyError;
use chunkcast_protocol::wire::codec::encode;
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, Frame, StreamId, VideoParams, VisualFormat};
use chunkcast_server::Server;
use chunkcast_testkit::{
    BIG, connect, digest_of, file_digest, pinned, samples, server_with, url_at,
};

mod http_support;
use http_support::{Answer, serve};

const LIMIT: Duration = Duration::from_secs(120);

async fn server() -> Server {
    server_with(|c| {
        c.http = Some(([127, 0, 0, 1], 0).into());
        c.limits.max_connections_per_ip = 512;
    })
    .await
}

fn at(addr: SocketAddr, scheme: Scheme) -> Url {
    url_at(addr, scheme, "")
}

fn opts(out: &std::path::Path, resume: bool) -> GetOptions {
    GetOptions {
        out: Some(out.to_owned()),
        resume,
        ..GetOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_http_and_https_is_byte_identical_and_resumes() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let addr = server.http_addr().expect("--http is served");
        let dir = tempfile::tempdir().unwrap();
        let len = std::fs::metadata(samples().join(BIG)).unwrap().len();
        for scheme in [Scheme::Http, Scheme::Https] {
            let client = HttpClient::new(&at(addr, scheme), &pinned(&server)).unwrap();
            let out = dir.path().join(format!("{}.bin", scheme.name()));
            let r = get(&client, BIG, &opts(&out, false)).await.unwrap();
            assert!(r.verified, "{scheme:?}");
            assert_eq!(r.len, len);
            assert_eq!(
                file_digest(&out),
                digest_of(BIG),
                "{scheme:?}: byte-identical"
            );
            eprintln!(
                "{}: {} MB in {:?} ({:.0} MB/s, debug build)",
                scheme.name(),
                len / 1_000_000,
                r.elapsed,
                r.mb_per_s()
            );
        }
        // An untrusted certificate is refused, saying how to trust it.
        let e = HttpClient::new(
            &at(addr, Scheme::Https),
            &ConnectOptions {
                trust: chunkcast_transport::tls::Trust::pin_from_hex(&"ab".repeat(32)).unwrap(),
                ..ConnectOptions::default()
            },
        )
        .unwrap();
        let err = get(&e, BIG, &opts(&dir.path().join("no.bin"), false))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Secure { .. }), "{err}");

        // Resume: a partial cut in the middle of a chunk goes on from that chunk's start.
        let client = HttpClient::new(&at(addr, Scheme::Http), &pinned(&server)).unwrap();
        let out = dir.path().join("resumed.bin");
        let data = std::fs::read(samples().join(BIG)).unwrap();
        let have = 7_000_123;
        std::fs::write(partial_path(&out), &data[..have]).unwrap();
        let r = get(&client, BIG, &opts(&out, true)).await.unwrap();
        assert_eq!(r.resumed_from, have as u64 / (256 * 1024) * (256 * 1024));
        assert_eq!(file_digest(&out), digest_of(BIG));
        // A missing file: the server's 404, clearly.
        let e = get(&client, "no/such.bin", &opts(&dir.path().join("x"), false))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 404: not found"), "{e}");
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampering_cache_between_is_caught_at_the_first_altered_chunk() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let origin = HttpClient::new(
            &at(server.http_addr().unwrap(), Scheme::Http),
            &pinned(&server),
        )
        .unwrap();
        let origin = Arc::new(origin);
        // A cache that passes the index on and changes one byte of every chunk from the 10th
        // on, re-encoding the frame (its CRC32C then matches: only the tree can tell).
        let (proxy, task) = serve(Arc::new(move |path: String| {
            let origin = Arc::clone(&origin);
            Box::pin(async move {
                if path.starts_with("/v1/index/") {
                    let v: serde_json::Value = origin.json(&path).await.unwrap();
                    return Answer {
                        status: 200,
                        ty: "application/json",
                        body: v.to_string().into_bytes(),
                    };
                }
                let frames = origin.frames(&path, 8 << 20, 8 << 20).await.unwrap();
                let mut out = BytesMut::new();
                for f in frames {
                    let f = match f {
                        Frame::Chunk(mut c) if c.seq >= 10 => {
                            let mut p = c.payload.to_vec();
                            p[1000] ^= 0x01;
                            c.payload = Bytes::from(p);
                            Frame::Chunk(c)
                        }
                        f => f,
                    };
                    encode(&f, &mut out);
                }
                Answer {
                    status: 200,
                    ty: "application/x-chunkcast-frames",
                    body: out.to_vec(),
                }
            })
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("big.bin");
        let client = HttpClient::new(&at(proxy, Scheme::Http), &ConnectOptions::default()).unwrap();
        let e = get(&client, BIG, &opts(&out, false)).await.unwrap_err();
        let ClientError::Cut { cause, have, .. } = &e else {
            panic!("not a cut download: {e}");
        };
        assert!(
            matches!(
                cause.as_ref(),
                ClientError::Unverified { seq: 10, error: VerifyError::Data { offset } }
                    if *offset == 10 * 256 * 1024
            ),
            "{cause}"
        );
        // The nine... ten chunks before it, verified, and nothing after.
        assert_eq!(*have, 10 * 256 * 1024);
        let data = std::fs::read(samples().join(BIG)).unwrap();
        assert!(std::fs::read(partial_path(&out)).unwrap() == data[..10 * 256 * 1024]);
        task.abort();
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

fn video() -> Codec {
    Codec::Video(VideoParams {
        format: VisualFormat::Mjpeg,
        width: 64,
        height: 64,
        fps_num: 25,
        fps_den: 1,
    })
}

/// Frame `n`: one chunk, its number in the first 8 bytes, a keyframe every 10th.
fn frame(n: u64) -> Chunk {
    let key = if n % 10 == 0 {
        ChunkFlags::KEY
    } else {
        ChunkFlags::empty()
    };
    let mut payload = vec![(n % 251) as u8; 3000];
    payload[..8].copy_from_slice(&n.to_be_bytes());
    Chunk::new(
        StreamId(0),
        n,
        0,
        n * 40_000,
        40_000,
        key | ChunkFlags::END_OF_UNIT,
        Bytes::from(payload),
    )
}

fn number(c: &Chunk) -> u64 {
    u64::from_be_bytes(c.payload[..8].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_channel_over_http_arrives_chunk_by_chunk_in_order() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let publisher = connect(&server, Scheme::Tcp).await;
        let mut p = publisher.publish("live/h", video()).await.unwrap();
        for n in 0..5 {
            p.send(frame(n)).await.unwrap();
        }
        let client = HttpClient::new(
            &at(server.http_addr().unwrap(), Scheme::Http),
            &pinned(&server),
        )
        .unwrap();
        let ch = Arc::new(Channel::new(client, "live/h"));
        let mut feed = ch.next_feed().await.unwrap();
        let viewer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = feed.next().await {
                let c = c.unwrap();
                // The media; not the empty INIT chunk that comes before the channel's end.
                if !c.has(ChunkFlags::INIT) {
                    got.push((c, Instant::now()));
                }
            }
            got
        });
        // Published in real time, 20 ms apart: each arrives through a request that waited.
        let mut sent = Vec::new();
        for n in 5..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sent.push(Instant::now());
            p.send(frame(n)).await.unwrap();
        }
        // The channel's end, as `publish` sends it: empty, END_OF_STREAM.
        let end = Chunk::new(
            StreamId(0),
            100,
            0,
            100 * 40_000,
            0,
            ChunkFlags::END_OF_STREAM | ChunkFlags::INIT,
            Bytes::new(),
        );
        p.send(end).await.unwrap();
        p.finish().await.unwrap();
        let got = viewer.await.unwrap();
        let numbers: Vec<u64> = got.iter().map(|(c, _)| number(c)).collect();
        let first = numbers[0];
        assert_eq!(first % 10, 0, "starts at a keyframe: {numbers:?}");
        assert!(first < 5, "at the last segment's start");
        assert_eq!(
            numbers,
            (first..100).collect::<Vec<_>>(),
            "every chunk, in order"
        );
        assert!(got.windows(2).all(|w| w[1].0.seq == w[0].0.seq + 1));
        // Publish → viewer latency over HTTP, for the report (not a test of speed).
        let mut lat: Vec<Duration> = got
            .iter()
            .filter(|(c, _)| number(c) >= 5)
            .map(|(c, at)| at.saturating_duration_since(sent[(number(c) - 5) as usize]))
            .collect();
        lat.sort();
        eprintln!(
            "publish → HTTP viewer latency: median {:?}, p95 {:?}, max {:?} (debug build)",
            lat[lat.len() / 2],
            lat[lat.len() * 95 / 100],
            lat[lat.len() - 1]
        );
        publisher.close().await;
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_https_through_an_nginx_cache_is_byte_identical() {
    use chunkcast_testkit::nginx::{self, CacheOptions, Nginx};
    use chunkcast_transport::tls::{Identity, Trust};
    if !nginx::nginx_or_skip() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        // The cache's own certificate, as a CDN edge has its own: the client pins it.
        let (identity, cert, key) = Identity::self_signed_pem(&["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let cache = Nginx::start(
            server.http_addr().unwrap(),
            &CacheOptions {
                tls: Some((cert_path, key_path)),
                ..CacheOptions::default()
            },
        );
        let opts_edge = ConnectOptions {
            trust: Trust::pin_from_hex(&identity.fingerprint_hex()).unwrap(),
            ..ConnectOptions::default()
        };
        let client = HttpClient::new(&at(cache.addr(), Scheme::Https), &opts_edge).unwrap();
        // Twice: the first fills the cache from the origin, the second is served from it.
        for round in ["cold", "warm"] {
            let out = dir.path().join(format!("{round}.bin"));
            let r = get(&client, BIG, &opts(&out, false)).await.unwrap();
            assert!(r.verified);
            assert_eq!(
                file_digest(&out),
                digest_of(BIG),
                "{round}: byte-identical through nginx; its log: {}",
                cache.error_log()
            );
            eprintln!(
                "https through nginx, {round} cache: {:.0} MB/s (debug build)",
                r.mb_per_s()
            );
        }
        drop(cache);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// `watch http://…/live/NAME`: the native watch's player (sinks, reassembly, playout,
/// statistics) fed over HTTP, ending cleanly when the publisher ends the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_player_plays_a_channel_over_http_to_its_end() {
    use chunkcast_client::live::{PublishOptions, publish_file};
    use chunkcast_client::play::{PlayOptions, Player};
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let file = samples().join(chunkcast_media_samples::CLIP_MJPEG);
        let publisher = connect(&server, Scheme::Tcp).await;
        let publishing = tokio::spawn(async move {
            let r = publish_file(&publisher, "live/clip", &file, &PublishOptions::default()).await;
            publisher.close().await;
            r
        });
        let client = HttpClient::new(
            &at(server.http_addr().unwrap(), Scheme::Http),
            &pinned(&server),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("frames");
        std::fs::create_dir(&frames).unwrap();
        let opts = PlayOptions {
            sinks: vec![format!("frames:{}", frames.display()).parse().unwrap()],
            wait_publisher: Duration::from_secs(5),
            ..PlayOptions::default()
        };
        let ch = Arc::new(Channel::new(client, "live/clip"));
        let player = Player::watch_http(ch, &opts).await.unwrap();
        let (report, result) = player.run_to_end().await;
        result.unwrap();
        let sent = publishing.await.unwrap().unwrap();
        let pngs = std::fs::read_dir(&frames).unwrap().count() as u64;
        eprintln!(
            "published {} chunks; played {} over HTTP, {pngs} frames written",
            sent.chunks, report.played
        );
        assert!(report.played > 10 && pngs == report.played, "{report:?}");
        assert_eq!(report.publisher_gaps, 0);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// The binary as a user runs it: `chunkcast get https://…` with the pin from the listening
/// line, its summary, and a missing file's clear message and exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chunkcast_binary_gets_over_https_and_says_what_went_wrong() {
    use chunkcast_testkit::process::{text, wait_bounded};
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        let base = format!("https://{}", server.http_addr().unwrap());
        let run = |args: Vec<String>| {
            let d = dir.path().to_owned();
            tokio::task::spawn_blocking(move || {
                let child = chunkcast_testkit::bin!("chunkcast")
                    .env_remove("RUST_LOG")
                    .args(&args)
                    .current_dir(d)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                wait_bounded(child, Duration::from_secs(60))
            })
        };
        let pin = server.fingerprint().to_owned();
        let out = run(vec![
            "get".into(),
            "--cert-sha256".into(),
            pin.clone(),
            format!("{base}/{BIG}"),
            "-o".into(),
            "got.bin".into(),
        ])
        .await
        .unwrap();
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("saved got.bin") && err.contains("digest verified"),
            "{err}"
        );
        assert_eq!(file_digest(&dir.path().join("got.bin")), digest_of(BIG));
        let out = run(vec![
            "get".into(),
            "--cert-sha256".into(),
            pin,
            format!("{base}/missing.bin"),
        ])
        .await
        .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("HTTP 404: not found"), "{err}");
        assert!(!dir.path().join("missing.bin.partial").exists());
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A server with a token: the client sends it as `Authorization: Bearer`; without it the
/// refusal says which flag gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_as_a_bearer_header() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|c| {
            c.http = Some(([127, 0, 0, 1], 0).into());
            c.token = Some("sesame".into());
        })
        .await;
        let u = at(server.http_addr().unwrap(), Scheme::Http);
        let dir = tempfile::tempdir().unwrap();
        let name = chunkcast_media_samples::TONE_8K_WAV;
        let with = ConnectOptions {
            token: Some("sesame".into()),
            ..pinned(&server)
        };
        let out = dir.path().join("tone.wav");
        get(
            &HttpClient::new(&u, &with).unwrap(),
            name,
            &opts(&out, false),
        )
        .await
        .unwrap();
        assert_eq!(file_digest(&out), digest_of(name));
        for token in [None, Some("wrong".to_owned())] {
            let without = ConnectOptions {
                token,
                ..pinned(&server)
            };
            let e = get(
                &HttpClient::new(&u, &without).unwrap(),
                name,
                &opts(&dir.path().join("no.wav"), false),
            )
            .await
            .unwrap_err();
            assert_eq!(
                e.code(),
                Some(chunkcast_protocol::ErrorCode::Unauthorized),
                "{e}"
            );
            assert!(
                e.to_string().contains("HTTP 401") && e.to_string().contains("--token"),
                "{e}"
            );
        }
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// Viewers through an nginx cache (`proxy_cache_lock`): their blocking requests for the next
/// chunk wait in the cache, and each still gets every chunk from its start, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_viewers_through_an_nginx_cache_get_every_chunk_in_order() {
    use chunkcast_testkit::nginx::{self, CacheOptions, Nginx};
    if !nginx::nginx_or_skip() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let cache = Nginx::start(server.http_addr().unwrap(), &CacheOptions::default());
        let publisher = connect(&server, Scheme::Tcp).await;
        let mut p = publisher.publish("live/n", video()).await.unwrap();
        for n in 0..5 {
            p.send(frame(n)).await.unwrap();
        }
        let mut viewers = Vec::new();
        for _ in 0..3 {
            let client =
                HttpClient::new(&at(cache.addr(), Scheme::Http), &ConnectOptions::default())
                    .unwrap();
            let ch = Arc::new(Channel::new(client, "live/n"));
            let mut feed = ch.next_feed().await.unwrap();
            viewers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(c) = feed.next().await {
                    let c = c.unwrap();
                    if !c.has(ChunkFlags::INIT) {
                        got.push(number(&c));
                    }
                }
                got
            }));
        }
        for n in 5..60 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            p.send(frame(n)).await.unwrap();
        }
        let end = Chunk::new(
            StreamId(0),
            60,
            0,
            60 * 40_000,
            0,
            ChunkFlags::END_OF_STREAM | ChunkFlags::INIT,
            Bytes::new(),
        );
        p.send(end).await.unwrap();
        p.finish().await.unwrap();
        for v in viewers {
            let got = v.await.unwrap();
            let first = got[0];
            assert!(first % 10 == 0 && first < 5, "{got:?}");
            assert_eq!(
                got,
                (first..60).collect::<Vec<_>>(),
                "nginx: {}",
                cache.error_log()
            );
        }
        drop(cache);
        publisher.close().await;
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}
