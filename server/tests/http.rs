//! The HTTP interface (`--http`, docs/HTTP.md): files with ranges and validators (curl
//! resumes), chunk frames that verify alone, tokens and signed URLs, live channels with
//! blocking chunk URLs; and behind a real nginx cache, the origin serving each chunk once
//! however many clients ask. Every test runs an in-process server on loopback, bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chunkcast_client::url::Scheme;
use chunkcast_protocol::verify::Verifier;
use chunkcast_protocol::wire::{Decoder, Frame, Limits};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, StreamId, VideoParams, VisualFormat};
use chunkcast_server::{Config, Server};
use chunkcast_testkit::nginx::{self, CacheOptions, HttpResponse, Nginx, get};
use chunkcast_testkit::{connect, metric, require_tool, samples, scrape, server_with};

/// Hard bound on each test.
const LIMIT: Duration = Duration::from_secs(60);
/// One request's bound.
const REQ: Duration = Duration::from_secs(20);
const CLIP: &str = chunkcast_media_samples::CLIP_MJPEG;

async fn server(f: impl FnOnce(&mut Config)) -> Server {
    server_with(|c| {
        c.http = Some("127.0.0.1:0".parse().unwrap());
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
        c.limits.max_connections_per_ip = 4096;
        c.limits.max_connections = 4096;
        c.limits.max_requests_per_sec = 10_000;
        f(c);
    })
    .await
}

fn http(server: &Server) -> SocketAddr {
    server.http_addr().expect("--http is on")
}

async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    get(addr, path, headers, REQ)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// Origin requests answered on `route` with `status`, from the origin's metrics.
async fn origin_requests(server: &Server, route: &str, status: u16) -> f64 {
    let text = scrape(server.metrics_addr().unwrap()).await;
    metric(
        &text,
        &format!("chunkcast_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
    )
}

/// Decodes a frames body; every frame, in order.
fn frames(body: &[u8]) -> Vec<Frame> {
    let mut d = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(body);
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut buf).expect("frames decode") {
        out.push(f);
    }
    assert!(buf.is_empty(), "trailing bytes after the frames");
    out
}

/// Verifies a chunk body alone against the file's root, returning its verified bytes.
fn verified(body: &[u8], root: [u8; 32], size: u64, offset: u64) -> Vec<u8> {
    let mut v = Verifier::new(root, size, offset).expect("a verifier");
    let mut out = Vec::new();
    for f in frames(body) {
        match f {
            Frame::Proof { nodes, .. } => v.add_nodes(&nodes).expect("nodes fit"),
            Frame::Chunk(c) => {
                assert_eq!(c.offset, offset, "the chunk's offset");
                v.push(c.payload).expect("the chunk verifies");
            }
            f => panic!("unexpected frame {f:?}"),
        }
        while let Some(b) = v.poll_verified() {
            out.extend_from_slice(&b);
        }
    }
    out
}

fn root_of(index: &serde_json::Value) -> [u8; 32] {
    let mut root = [0u8; 32];
    hex::decode_to_slice(index["digest"].as_str().unwrap(), &mut root).unwrap();
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_answer_ranges_validators_and_curl_resumes() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let addr = http(&server);
        let original = std::fs::read(samples().join(CLIP)).unwrap();
        let len = original.len();
        let path = format!("/v1/files/{CLIP}");

        let whole = fetch(addr, &path, &[]).await;
        assert_eq!(whole.status, 200);
        assert_eq!(whole.body, original);
        let etag = whole.header("etag").unwrap().to_owned();
        let digest = hex::encode(chunkcast_testkit::digest_of(CLIP));
        assert_eq!(etag, format!("\"b3-{digest}\""));
        assert_eq!(whole.header("accept-ranges"), Some("bytes"));
        assert_eq!(whole.header("content-type"), Some("video/x-motion-jpeg"));

        let part = fetch(addr, &path, &[("Range", "bytes=100-199")]).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.body, &original[100..200]);
        assert_eq!(
            part.header("content-range"),
            Some(format!("bytes 100-199/{len}").as_str())
        );
        let tail = fetch(addr, &path, &[("Range", "bytes=-10")]).await;
        assert_eq!(tail.body, &original[len - 10..]);

        let not_modified = fetch(addr, &path, &[("If-None-Match", &etag)]).await;
        assert_eq!(not_modified.status, 304);
        assert!(not_modified.body.is_empty());

        let outside = fetch(addr, &path, &[("Range", &format!("bytes={len}-"))]).await;
        assert_eq!(outside.status, 416);
        assert_eq!(
            outside.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        assert_eq!(json(&outside)["code"], 1);

        // If-Range with another version's tag: the whole file, not a piece of the wrong one.
        let stale = fetch(
            addr,
            &path,
            &[("Range", "bytes=0-9"), ("If-Range", "\"b3-00\"")],
        )
        .await;
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body.len(), len);

        let missing = fetch(addr, "/v1/files/nope.bin", &[]).await;
        assert_eq!(missing.status, 404);
        assert_eq!(json(&missing)["error"], "not found");
        assert_eq!(missing.header("cache-control"), Some("no-store"));
        let escape = fetch(addr, "/v1/files/..%2F..%2Fetc%2Fpasswd", &[]).await;
        assert_eq!(escape.status, 400, "a path leaving the root is refused");

        // curl: the first 1 MB, then a resume (-C -) that fetches the rest by range.
        if !require_tool("curl", "apt-get install curl") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("clip.mjpeg");
        let url = format!("http://{addr}{path}");
        let first = tokio::process::Command::new("curl")
            .args(["-sS", "-f", "-r", "0-999999", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .await
            .unwrap();
        assert!(first.success());
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 1_000_000);
        let resumed = tokio::process::Command::new("curl")
            .args(["-sS", "-f", "-C", "-", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .await
            .unwrap();
        assert!(resumed.success());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            original,
            "resumed file differs"
        );
        // The two ranges above, curl's first piece and its resume.
        assert_eq!(origin_requests(&server, "files", 206).await, 4.0);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_verify_alone_in_any_order_and_a_stale_digest_is_source_changed() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let addr = http(&server);
        let original = std::fs::read(samples().join(CLIP)).unwrap();
        let r = fetch(addr, &format!("/v1/index/{CLIP}?chunk_size=131072"), &[]).await;
        assert_eq!(r.status, 200);
        let index = json(&r);
        assert_eq!(index["size"], original.len());
        assert_eq!(index["chunk_size"], 131072);
        let chunks = index["chunks"].as_u64().unwrap();
        assert_eq!(chunks, (original.len() as u64).div_ceil(131072));
        assert_eq!(index["codec"]["kind"], "video");
        assert_eq!(index["codec"]["format"], "mjpeg");
        let root = root_of(&index);
        let url = index["chunk_url"].as_str().unwrap().to_owned();

        // Last to first: each stands alone.
        let mut pieces = vec![Vec::new(); chunks as usize];
        for seq in (0..chunks).rev() {
            let r = fetch(addr, &url.replace("{seq}", &seq.to_string()), &[]).await;
            assert_eq!(r.status, 200, "chunk {seq}");
            assert_eq!(
                r.header("cache-control"),
                Some("public, max-age=31536000, immutable")
            );
            assert_eq!(
                r.header("content-type"),
                Some("application/x-chunkcast-frames")
            );
            let last = frames(&r.body).into_iter().last().unwrap();
            let Frame::Chunk(c) = last else {
                panic!("the last frame is the chunk")
            };
            assert_eq!(c.seq, seq);
            assert_eq!(c.has(ChunkFlags::END_OF_STREAM), seq + 1 == chunks);
            pieces[seq as usize] = verified(&r.body, root, original.len() as u64, seq * 131072);
        }
        assert_eq!(pieces.concat(), original);

        // A cache or tamperer that flips one payload byte: the verifier refuses it.
        let r = fetch(addr, &url.replace("{seq}", "1"), &[]).await;
        let mut bad = r.body.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let caught =
            std::panic::catch_unwind(|| verified(&bad, root, original.len() as u64, 131072));
        assert!(caught.is_err(), "a flipped byte must not verify");

        let stale = url.replace(&hex::encode(root), &"ab".repeat(32));
        let r = fetch(addr, &stale.replace("{seq}", "0"), &[]).await;
        assert_eq!(r.status, 404);
        assert_eq!(json(&r)["code"], 14);
        assert_eq!(json(&r)["error"], "source changed");
        let r = fetch(addr, &format!("/v1/index/{CLIP}?chunk_size=1000"), &[]).await;
        assert_eq!(r.status, 400);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_server_takes_bearer_tokens_and_signed_urls() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|c| c.token = Some("s3cret".into())).await;
        let addr = http(&server);
        let path = format!("/v1/index/{CLIP}");
        let none = fetch(addr, &path, &[]).await;
        assert_eq!(none.status, 401);
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert_eq!(json(&none)["error"], "unauthorized");
        let wrong = fetch(addr, &path, &[("Authorization", "Bearer nope")]).await;
        assert_eq!(wrong.status, 401);
        let right = fetch(addr, &path, &[("Authorization", "Bearer s3cret")]).await;
        assert_eq!(right.status, 200);

        let sign = |exp: u64| {
            let key = blake3::derive_key("chunkcast http signed url v1", b"s3cret");
            let mac = blake3::keyed_hash(&key, format!("{exp}\n{path}").as_bytes());
            format!("{path}?exp={exp}&sig={}", hex::encode(mac.as_bytes()))
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(fetch(addr, &sign(now + 60), &[]).await.status, 200);
        assert_eq!(fetch(addr, &sign(now - 60), &[]).await.status, 403);
        let forged =
            sign(now + 60).replace(&format!("exp={}", now + 60), &format!("exp={}", now + 6000));
        assert_eq!(fetch(addr, &forged, &[]).await.status, 401);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

/// nginx in front of `server`'s `--http` port, or `None` (skipped) without nginx.
fn cache(server: &Server) -> Option<Nginx> {
    if !nginx::nginx_or_skip() {
        return None;
    }
    Some(Nginx::start(http(server), &CacheOptions::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_for_one_chunk_reach_the_origin_once() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let Some(nginx) = cache(&server) else {
            return;
        };
        let proxy = nginx.addr();
        let index = json(&fetch(proxy, &format!("/v1/index/{CLIP}"), &[]).await);
        let root = root_of(&index);
        let size = index["size"].as_u64().unwrap();
        let url = index["chunk_url"].as_str().unwrap().replace("{seq}", "3");
        let url = Arc::new(url);
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { get(proxy, &url, &[], REQ).await })
            })
            .collect();
        let mut bodies = std::collections::HashSet::new();
        for t in tasks {
            let r = t.await.unwrap().expect("a response through nginx");
            assert_eq!(r.status, 200);
            bodies.insert(r.body);
        }
        let took = t0.elapsed();
        assert_eq!(bodies.len(), 1, "every client got the same bytes");
        let body = bodies.into_iter().next().unwrap();
        let chunk_size = index["chunk_size"].as_u64().unwrap();
        let got = verified(&body, root, size, 3 * chunk_size);
        assert_eq!(got.len() as u64, chunk_size);
        let hits = origin_requests(&server, "chunks", 200).await;
        eprintln!("1000 concurrent requests through nginx in {took:?}: {hits} reached the origin");
        assert_eq!(hits, 1.0, "nginx log: {}", nginx.error_log());
        drop(nginx);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

fn mjpeg() -> Codec {
    Codec::Video(VideoParams {
        format: VisualFormat::Mjpeg,
        width: 64,
        height: 64,
        fps_num: 25,
        fps_den: 1,
    })
}

/// A frame of the synthetic channel: a keyframe of its own, 40 ms long.
fn frame(i: u64) -> Chunk {
    let payload = Bytes::from(vec![(i % 251) as u8; 2000]);
    Chunk::new(
        StreamId(0),
        i,
        0,
        i * 40_000,
        40_000,
        ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
        payload,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_chunks_block_until_published_and_the_end_is_410() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let addr = http(&server);
        let r = fetch(addr, "/v1/live/cam/index.json", &[]).await;
        assert_eq!(r.status, 404, "no channel yet");
        assert_eq!(json(&r)["code"], 3);

        let session = connect(&server, Scheme::Tcp).await;
        let mut publisher = session.publish("live/cam", mjpeg()).await.unwrap();
        for i in 0..30 {
            publisher.send(frame(i)).await.unwrap();
        }
        // The index appears once the ring holds what was published.
        let index = loop {
            let r = fetch(addr, "/v1/live/cam/index.json", &[]).await;
            if r.status == 200 {
                let v = json(&r);
                if v["next_seq"].as_u64() == Some(30) {
                    break v;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(index["channel"], "live/cam");
        assert_eq!(index["run"].as_str().unwrap().len(), 16);
        let segments = index["segments"].as_array().unwrap();
        let start = segments.last().unwrap()["first_seq"].as_u64().unwrap();
        assert!(start < 30);
        let chunk_url = index["chunk_url"].as_str().unwrap().to_owned();
        let at = |seq: u64| chunk_url.replace("{seq}", &seq.to_string());
        // MJPEG has no init chunks: an empty init, at a URL that stays the same.
        let init_url = index["init_url"].as_str().unwrap().to_owned();
        assert!(init_url.ends_with("/init/none"), "{init_url}");
        let init = fetch(addr, &init_url, &[]).await;
        assert_eq!((init.status, init.body.len()), (200, 0));
        let r = fetch(addr, &at(start), &[]).await;
        assert_eq!(r.status, 200);
        let Frame::Chunk(c) = frames(&r.body).remove(0) else {
            panic!("a chunk frame")
        };
        assert_eq!(c.seq, start);

        // Seq 30 is not published: the request waits for it, and gets it once it is.
        let url = at(30);
        let waiting = tokio::spawn(async move {
            let r = get(addr, &url, &[], REQ).await.unwrap();
            (r, Instant::now())
        });
        let blocked = "chunkcast_http_blocked_now";
        while metric(&scrape(server.metrics_addr().unwrap()).await, blocked) < 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sent = Instant::now();
        publisher.send(frame(30)).await.unwrap();
        let (r, arrived) = waiting.await.unwrap();
        assert_eq!(r.status, 200);
        let Frame::Chunk(c) = frames(&r.body).remove(0) else {
            panic!("a chunk frame")
        };
        assert_eq!(c.seq, 30);
        eprintln!(
            "a blocked live request answered {:?} after the chunk was published",
            arrived - sent
        );

        let r = fetch(addr, &at(200), &[]).await;
        assert_eq!(r.status, 404, "far ahead of the channel");
        let stale_run = chunk_url.replace(index["run"].as_str().unwrap(), "0000000000000000");
        let r = fetch(addr, &stale_run.replace("{seq}", "5"), &[]).await;
        assert_eq!(r.status, 410);

        // The publisher ends the channel (its last chunk says so): a request blocked for what
        // would have come next gets 410 ended.
        let url = at(32);
        let waiting = tokio::spawn(async move { get(addr, &url, &[], REQ).await.unwrap() });
        while metric(&scrape(server.metrics_addr().unwrap()).await, blocked) < 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut last = frame(31);
        last.flags = last.flags | ChunkFlags::END_OF_STREAM;
        publisher.send(last).await.unwrap();
        let r = waiting.await.unwrap();
        assert_eq!(r.status, 410);
        assert_eq!(json(&r)["error"], "ended");
        assert_eq!(
            fetch(addr, &at(31), &[]).await.status,
            200,
            "the last chunk is kept"
        );

        // Published again: a new run, and the old run's URLs are gone.
        let mut again = session.publish("live/cam", mjpeg()).await.unwrap();
        again.send(frame(0)).await.unwrap();
        let old_run = index["run"].as_str().unwrap().to_owned();
        let new = loop {
            let r = fetch(addr, "/v1/live/cam/index.json", &[]).await;
            if r.status == 200 {
                let v = json(&r);
                if v["run"] != old_run.as_str() && v["next_seq"] == 1 {
                    break v;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(new["ended"], false);
        assert_eq!(
            fetch(addr, &at(31), &[]).await.status,
            410,
            "the old run is over"
        );
        session.close().await;
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_through_nginx_cost_the_origin_one_copy_of_each_chunk() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let Some(nginx) = cache(&server) else {
            return;
        };
        let proxy = nginx.addr();
        let session = connect(&server, Scheme::Tcp).await;
        let mut publisher = session.publish("live/show", mjpeg()).await.unwrap();
        publisher.send(frame(0)).await.unwrap();
        let index = loop {
            // Straight to the origin: the index is cacheable for a second, and an early 404
            // must not be what the viewers' first look finds.
            let r = fetch(http(&server), "/v1/live/show/index.json", &[]).await;
            if r.status == 200 && json(&r)["next_seq"].as_u64() == Some(1) {
                break json(&r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let chunk_url = index["chunk_url"].as_str().unwrap().to_owned();
        const VIEWERS: usize = 200;
        const WATCH: u64 = 20;
        // Every viewer asks for seq 1.. as the native `watch` would: one blocking request
        // ahead, in order, through the cache.
        let viewers: Vec<_> = (0..VIEWERS)
            .map(|_| {
                let chunk_url = chunk_url.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for seq in 1..=WATCH {
                        let url = chunk_url.replace("{seq}", &seq.to_string());
                        let r = get(proxy, &url, &[], REQ).await.expect("through nginx");
                        assert_eq!(r.status, 200, "seq {seq}: {}", String::from_utf8_lossy(&r.body));
                        let Frame::Chunk(c) = frames(&r.body).remove(0) else {
                            panic!("a chunk frame")
                        };
                        got.push(c.seq);
                    }
                    got
                })
            })
            .collect();
        // Publish in real time (25 fps) while they watch.
        for i in 1..=WATCH {
            tokio::time::sleep(Duration::from_millis(40)).await;
            publisher.send(frame(i)).await.unwrap();
        }
        let published = Instant::now();
        for v in viewers {
            assert_eq!(v.await.unwrap(), (1..=WATCH).collect::<Vec<_>>());
        }
        let tail = published.elapsed();
        let copies = origin_requests(&server, "live_chunk", 200).await;
        let waits = metric(
            &scrape(server.metrics_addr().unwrap()).await,
            "chunkcast_http_blocked_waits_total",
        );
        eprintln!(
            "{VIEWERS} viewers x {WATCH} chunks through nginx: the origin answered {copies} chunk requests ({waits} of them blocked first); the last chunk reached all viewers {tail:?} after it was published"
        );
        assert_eq!(copies, WATCH as f64, "one origin copy per chunk; nginx: {}", nginx.error_log());
        publisher.finish().await.unwrap();
        session.close().await;
        drop(nginx);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_tls_cache_to_a_tls_origin_is_byte_identical() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        if !nginx::nginx_or_skip() || !require_tool("curl", "apt-get install curl") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, key) =
            chunkcast_transport::tls::Identity::self_signed_pem(&["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let opts = CacheOptions {
            tls: Some((cert_path.clone(), key_path)),
            origin_tls: true,
            ..CacheOptions::default()
        };
        let nginx = Nginx::start(http(&server), &opts);
        let url = format!("https://localhost:{}/v1/files/{CLIP}", nginx.addr().port());
        let out = dir.path().join("clip");
        let run = tokio::process::Command::new("curl")
            .args(["-sS", "-f", "--http2", "--cacert"])
            .arg(&cert_path)
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", nginx.addr().port()),
            ])
            .arg("-o")
            .arg(&out)
            .arg(&url)
            .output()
            .await
            .unwrap();
        assert!(
            run.status.success(),
            "{}: {}",
            String::from_utf8_lossy(&run.stderr),
            nginx.error_log()
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(samples().join(CLIP)).unwrap()
        );
        // nginx fetched it from the origin over TLS (plain HTTP there would fail: proxy_pass
        // https:// speaks TLS only), once.
        assert_eq!(origin_requests(&server, "files", 200).await, 1.0);
        drop(nginx);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_share_the_native_connection_budget() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|c| {
            c.limits.max_connections = 1;
        })
        .await;
        let addr = http(&server);
        let session = connect(&server, Scheme::Tcp).await;
        let refused = fetch(addr, &format!("/v1/index/{CLIP}"), &[]).await;
        assert_eq!(
            refused.status, 503,
            "the native connection holds the only slot"
        );
        assert_eq!(json(&refused)["code"], 5);
        assert!(
            json(&refused)["message"]
                .as_str()
                .unwrap()
                .contains("connection limit")
        );
        session.close().await;
        let served = loop {
            let r = fetch(addr, &format!("/v1/index/{CLIP}"), &[]).await;
            if r.status == 200 {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            json(&served)["size"],
            std::fs::metadata(samples().join(CLIP)).unwrap().len()
        );

        // HTTP/2 over TLS (ALPN) and in the clear (prior knowledge) on the same port.
        if require_tool("curl", "apt-get install curl") {
            for args in [
                vec![
                    "-k".to_owned(),
                    "--http2".to_owned(),
                    format!("https://{addr}/v1/files/{CLIP}"),
                ],
                vec![
                    "--http2-prior-knowledge".to_owned(),
                    format!("http://{addr}/v1/files/{CLIP}"),
                ],
            ] {
                let out = tokio::process::Command::new("curl")
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_version} %{http_code}",
                    ])
                    .args(&args)
                    .output()
                    .await
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{args:?}");
            }
        }
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test]
async fn an_exposed_http_port_needs_a_token() {
    let mut c = Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(samples().to_owned());
    c.http = Some("0.0.0.0:0".parse().unwrap());
    let refused = Server::start(c)
        .await
        .err()
        .expect("refused without a token");
    assert!(
        matches!(refused, chunkcast_server::ServerError::NeedsToken(a) if a.port() == 0 && a.ip().is_unspecified()),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(LIMIT, async {
        let idle = Duration::from_millis(800);
        let server = server(|c| c.limits.idle_timeout = idle).await;
        let mut sock = tokio::net::TcpStream::connect(http(&server)).await.unwrap();
        // HTTP/2 in the clear: the preface and an empty SETTINGS frame, then nothing.
        sock.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        sock.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let t0 = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(idle * 10, sock.read_to_end(&mut got)).await;
        assert!(
            read.is_ok(),
            "still open {:?} after the idle timeout",
            idle * 10
        );
        let took = t0.elapsed();
        assert!(
            took >= idle,
            "closed after {took:?}, before the idle timeout"
        );
        // The server's SETTINGS, then a GOAWAY (frame type 7) before the close.
        assert!(
            got.windows(4).any(|w| w[3] == 7 && w[0] == 0),
            "no GOAWAY in {got:?}"
        );
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}
