//! End to end in a real browser: headless Chromium loads the `--web` page, lists the samples,
//! plays the tone WAV, the MJPEG and Y4M clips and the test card to the end, and the page's own counters must match
//! the sources; a screenshot of the canvas must show the frame number the page says it drew.
//!
//! Chromium is driven over the DevTools protocol (JSON over the WebSocket it opens with
//! `--remote-debugging-port=0`), so nothing but the browser is needed. Without a Chromium
//! (`chromium`, `chromium-browser`, `google-chrome`, or `CHUNKCAST_CHROMIUM`), the test fails
//! when `CI` is set and otherwise says so and skips. With `CHUNKCAST_SCREENSHOT_OUT=PATH` it
//! also saves a screenshot of the page.
//!
//! Also checked: nothing but the library before anything plays; pictures fit the player box;
//! the live list's viewer counts update by themselves; `#/PATH` opens PATH; pause, seek and
//! volume; and the page's wire module (`wire.js`) decodes and encodes the golden vectors of
//! `docs/golden/frames.json` exactly as the Rust codec does.
//!
//! With ffmpeg too: an H.264 + AAC MP4 file and a live fMP4 channel (ffmpeg on a pipe into the
//! publish path) play through Media Source Extensions, frames advancing at the media's rate;
//! the live channel's chat carries a line each way between the page and a library peer, each
//! exactly once; and a live AAC-only fMP4 channel plays as `audio/mp4`.
//!
//! Over the HTTP interface (the page opened with `?http=`, another origin, through a caching
//! nginx when there is one): the MP4 file, a live fMP4 and a live MJPEG channel play and the
//! latter ends cleanly, with no WebSocket; with a token, the token form, preflights, the test
//! card from its chunk URLs and a damaged chunk caught by its CRC32C; a publisher's pause past
//! the server's blocking wait outlasted. One Chromium runs at a time.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use chunkcast_media_samples::{
    CLIP_FPS, CLIP_HEIGHT, CLIP_MJPEG, CLIP_WIDTH, CLIP_Y4M, MJPEG_FRAMES, TESTCARD_PNG,
    TONE_8K_WAV, Y4M_FRAMES,
};

/// The whole test's bound.
const HARD_TIMEOUT: Duration = Duration::from_secs(120);
/// The tone: 3 s in 20 ms chunks, one unit each.
const TONE_UNITS: u64 = 3_000 / 20;

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHUNKCAST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(chunkcast_testkit::tools::find_tool)
}

/// Chromium, or `None` after saying the test is skipped; under `CI` a missing Chromium fails
/// the test instead (CI installs it).
fn chromium_or_skip() -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Chromium found, and CI is set: install chromium or set CHUNKCAST_CHROMIUM"
        );
        eprintln!(
            "skipping: no Chromium found (apt-get install chromium, or set CHUNKCAST_CHROMIUM)"
        );
    }
    found
}

#[tokio::test]
async fn plays_in_headless_chromium() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let server =
        chunkcast_testkit::server_with(|c| c.web = Some("127.0.0.1:0".parse().unwrap())).await;
    let page = format!("http://{}/", server.web_addr().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&chromium, profile.path()).await;
    let result = tokio::time::timeout(HARD_TIMEOUT, drive(&mut browser, &page, &server)).await;
    browser.close().await;
    server.shutdown().await;
    result.expect("the browser test finishes within its time bound");
}

/// The page's modules against the Rust core. Its wire module against the golden vectors
/// (`docs/golden/frames.json`, which the Rust codec is checked against too): it decodes every
/// vector's bytes to the vector's meaning, and encodes every vector's meaning (the frames the
/// page sends among them: HELLO, LIST, OPEN, SUBSCRIBE, PING, PONG, CLOSE) to the vector's
/// bytes. Its playout rules against the Rust playout buffer: one arrival trace, the same
/// units played at the same instants and the same ones dropped as late.
#[tokio::test]
async fn page_modules_match_the_rust_core() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let server =
        chunkcast_testkit::server_with(|c| c.web = Some("127.0.0.1:0".parse().unwrap())).await;
    let page = format!("http://{}/", server.web_addr().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&chromium, profile.path()).await;
    let checks = async {
        let cdp = browser.cdp.as_mut().unwrap();
        let mut page = open(cdp, &page).await;
        page.wait_for("the page to connect", |c| c["state"] == json!("ready"))
            .await;
        check_vectors(&mut page).await;
        check_playout(&mut page).await;
    };
    let result = tokio::time::timeout(HARD_TIMEOUT, checks).await;
    browser.close().await;
    server.shutdown().await;
    result.expect("the checks finish within their time bound");
}

/// Media Source Extensions: a progressive H.264 + AAC MP4 file (fragmented by the server on
/// the `FRAGMENT` open) and a live fMP4 channel (ffmpeg testsrc → libx264 fragmented MP4 →
/// the real publish path) both play in the page's `<video>`: its `currentTime` advances and
/// `getVideoPlaybackQuality().totalVideoFrames` grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_mp4_and_live_fmp4_through_mse() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    if !chunkcast_testkit::require_tool("ffmpeg", "apt-get install ffmpeg") {
        return;
    }
    let lib = tempfile::tempdir().unwrap();
    let film = lib.path().join("film.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "8"])
        .args([
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-profile:v",
            "high",
        ])
        .args(["-c:a", "aac", "-movflags", "+faststart"])
        .arg(&film)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg made the MP4");
    let root = lib.path().to_owned();
    let server = chunkcast_testkit::server_with(move |c| {
        c.root = Some(root);
        c.web = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let page_url = format!("http://{}/", server.web_addr().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&chromium, profile.path()).await;

    // The live channel: ffmpeg's fragmented H.264 on a pipe, published as `chunkcast
    // publish --from -` does.
    let mut ffmpeg = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args([
            "-t", "60", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p",
        ])
        .args(["-preset", "veryfast", "-tune", "zerolatency", "-f", "mp4"])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts");
    // And an audio-only one: AAC in fragmented MP4, half-second fragments.
    let mut ffmpeg_audio = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
        ])
        .args([
            "-t",
            "60",
            "-c:a",
            "aac",
            "-f",
            "mp4",
            "-frag_duration",
            "500000",
        ])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut publishers = Vec::new();
    for (channel, pipe) in [
        ("live/cam", ffmpeg.stdout.take().unwrap()),
        ("live/radio", ffmpeg_audio.stdout.take().unwrap()),
    ] {
        let session = chunkcast_testkit::connect(&server, chunkcast_client::url::Scheme::Tcp).await;
        let publish_opts = chunkcast_client::live::StreamOptions {
            stop: stop.clone(),
            ..Default::default()
        };
        publishers.push(tokio::spawn(async move {
            let r = chunkcast_client::live::publish_stream(&session, channel, pipe, &publish_opts)
                .await;
            session.close().await;
            r
        }));
    }

    let checks = async {
        let cdp = browser.cdp.as_mut().unwrap();
        let mut page = open(cdp, &page_url).await;
        page.wait_for("the page to connect", |c| c["state"] == json!("ready"))
            .await;
        let (t, frames, _) = page.mse_plays("film.mp4", true).await;
        eprintln!("film.mp4 through MSE: {t:.2} s played, {frames} frames");
        let (t, frames, first_frame_ms) = page.mse_plays("live/cam", true).await;
        eprintln!(
            "live/cam through MSE: first frame {first_frame_ms} ms after opening, \
             {t:.2} s played, {frames} frames"
        );
        chat_both_ways(&mut page, &server).await;
        let (t, _, _) = page.mse_plays("live/radio", false).await;
        eprintln!("live/radio (AAC only) through MSE: {t:.2} s played");
    };
    let result = tokio::time::timeout(HARD_TIMEOUT, checks).await;
    browser.close().await;
    stop.cancel();
    let _ = ffmpeg.kill().await;
    let _ = ffmpeg_audio.kill().await;
    for p in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
    }
    server.shutdown().await;
    result.expect("the MSE checks finish within their time bound");
}

/// The page from `--web`, opened with `?http=` naming a caching nginx in front of the same
/// server's `--http` port (another origin: CORS headers through the cache), plays an MP4 file (its HLS CMAF segments) and a live fMP4 channel (index,
/// init, blocking chunk URLs) through the same player and MSE as over the WebSocket, and never
/// opens the WebSocket; the origin's metrics show the HTTP routes it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_a_file_and_a_live_channel_over_the_http_interface() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    if !chunkcast_testkit::require_tool("ffmpeg", "apt-get install ffmpeg") {
        return;
    }
    let lib = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc=size=320x240:rate=25", "-t", "8"])
        .args(["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-movflags", "+faststart"])
        .arg(lib.path().join("film.mp4"))
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg made the MP4");
    let root = lib.path().to_owned();
    let server = chunkcast_testkit::server_with(move |c| {
        c.root = Some(root);
        c.web = Some("127.0.0.1:0".parse().unwrap());
        c.http = Some("127.0.0.1:0".parse().unwrap());
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    // Through a caching nginx, as a CDN would serve it (CI has nginx; without it, from the
    // origin directly: the token test below always is).
    let cache = chunkcast_testkit::nginx::nginx_or_skip().then(|| {
        chunkcast_testkit::nginx::Nginx::start(
            server.http_addr().unwrap(),
            &chunkcast_testkit::nginx::CacheOptions::default(),
        )
    });
    let base = cache
        .as_ref()
        .map_or(server.http_addr().unwrap(), |c| c.addr());
    eprintln!(
        "the page plays from {}",
        if cache.is_some() {
            "nginx"
        } else {
            "the origin"
        }
    );
    let page_url = format!("http://{}/?http=http://{base}", server.web_addr().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&chromium, profile.path()).await;
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi"])
        .args(["-i", "testsrc=size=320x240:rate=25", "-t", "60"])
        .args(["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-preset", "veryfast", "-tune", "zerolatency", "-f", "mp4"])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts");
    let stop = tokio_util::sync::CancellationToken::new();
    let session = chunkcast_testkit::connect(&server, chunkcast_client::url::Scheme::Tcp).await;
    let pipe = ffmpeg.stdout.take().unwrap();
    let publish_opts = chunkcast_client::live::StreamOptions {
        stop: stop.clone(),
        ..Default::default()
    };
    let publisher = tokio::spawn(async move {
        let r =
            chunkcast_client::live::publish_stream(&session, "live/cam", pipe, &publish_opts).await;
        session.close().await;
        r
    });

    let checks = async {
        let cdp = browser.cdp.as_mut().unwrap();
        let mut page = open(cdp, &page_url).await;
        page.wait_for("the page to be ready over HTTP", |c| {
            c["state"] == json!("ready")
        })
        .await;
        let (t, frames, _) = page.mse_plays("film.mp4", true).await;
        eprintln!(
            "film.mp4 over HTTP (HLS segments) through MSE: {t:.2} s played, {frames} frames"
        );
        // The channel exists once the publisher's first chunk is in: until then 404, shown.
        let (t, frames, first_frame_ms) = page.mse_plays("live/cam", true).await;
        eprintln!(
            "live/cam over HTTP through MSE: first frame {first_frame_ms} ms after opening, \
             {t:.2} s played, {frames} frames"
        );
        let c = page.counters().await;
        assert_eq!(c["crcFailures"], json!(0), "{c}");
        assert_eq!(c["gaps"], json!(0), "{c}");
        assert!(
            c["connections"].is_null(),
            "the page never opened the WebSocket: {c}"
        );
        // A live MJPEG channel (no init chunks: `init/none`) drawn on the canvas, 4 s long:
        // its end reaches the page as the blocked request's 410 "ended", a clean end.
        let mut mjpeg = Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-f", "lavfi"])
            .args(["-i", "testsrc=size=320x240:rate=25", "-t", "4"])
            .args(["-f", "mjpeg", "-q:v", "5", "-flush_packets", "1", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ffmpeg starts");
        let session = chunkcast_testkit::connect(&server, chunkcast_client::url::Scheme::Tcp).await;
        let pipe = mjpeg.stdout.take().unwrap();
        let mj = tokio::spawn(async move {
            let opts = chunkcast_client::live::StreamOptions::default();
            let r = chunkcast_client::live::publish_stream(&session, "live/mj", pipe, &opts).await;
            session.close().await;
            r
        });
        let http = server.http_addr().unwrap();
        let within = Duration::from_secs(5);
        while chunkcast_testkit::nginx::get(http, "/v1/live/mj/index.json", &[], within)
            .await
            .map_or(0, |r| r.status)
            != 200
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        page.eval("window.chunkcastPlay('live/mj')").await;
        let c = page
            .wait_for("live/mj to end", |c| {
                c["path"] == json!("live/mj") && c["ended"] == json!(true)
            })
            .await;
        let report = mj.await.unwrap().expect("the MJPEG publish");
        eprintln!(
            "live/mj over HTTP on the canvas: {} of {} frames drawn ({} published; drops {}, \
             gaps {}, jitter {:.1} ms), ended cleanly",
            c["unitsPlayed"],
            c["unitsReceived"],
            report.units,
            c["drops"],
            c["gaps"],
            c["jitterMs"].as_f64().unwrap_or(0.0)
        );
        assert!(c["error"].is_null(), "{c}");
        assert_eq!(c["kind"], json!("video/mjpeg"), "{c}");
        assert!(c["unitsPlayed"].as_u64().unwrap() >= 25, "{c}");
        // From the channel's first frame to its last (the page joined at once).
        assert!(c["lastPtsUs"].as_u64().unwrap() >= 3_500_000, "{c}");
        assert_eq!(c["crcFailures"], json!(0), "{c}");
    };
    let result = tokio::time::timeout(HARD_TIMEOUT, checks).await;
    browser.close().await;
    drop(cache);
    let text = chunkcast_testkit::scrape(server.metrics_addr().unwrap()).await;
    stop.cancel();
    let _ = ffmpeg.kill().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    server.shutdown().await;
    result.expect("the HTTP checks finish within their time bound");
    let ok = |route: &str| {
        chunkcast_testkit::metric(
            &text,
            &format!("chunkcast_http_requests_total{{route=\"{route}\",status=\"200\"}}"),
        )
    };
    for route in ["index", "hls", "live_index", "live_init", "live_chunk"] {
        eprintln!("origin: {route} 200 × {}", ok(route));
        assert!(ok(route) >= 1.0, "the page asked for {route} over HTTP");
    }
    // A fragment (a 1 s GOP here) is a chunk: the segment started at and those after it.
    assert!(
        ok("live_chunk") >= 2.0,
        "live chunks after the first segment's"
    );
}

/// The same over HTTP with a token: the page's first request is refused (401) and the token
/// form shows; with the token typed in, the page's requests carry `Authorization: Bearer`
/// (the browser asks the origin first: a CORS preflight, answered 204) and the test card PNG
/// comes by its index and chunk URLs, each chunk's CRC32C checked, and is shown whole; a
/// chunk damaged on its way is counted as a CRC failure and the file said not whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_an_image_over_the_http_interface_with_a_token() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let server = chunkcast_testkit::server_with(|c| {
        c.web = Some("127.0.0.1:0".parse().unwrap());
        c.http = Some("127.0.0.1:0".parse().unwrap());
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
        c.token = Some("s3cret".into());
    })
    .await;
    let page_url = format!(
        "http://{}/?http=http://{}#/{TESTCARD_PNG}",
        server.web_addr().unwrap(),
        server.http_addr().unwrap()
    );
    let size = std::fs::metadata(chunkcast_testkit::samples().join(TESTCARD_PNG))
        .unwrap()
        .len();
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&chromium, profile.path()).await;
    let checks = async {
        let cdp = browser.cdp.as_mut().unwrap();
        let mut page = open(cdp, &page_url).await;
        page.wait_for("the token form", |c| c["state"] == json!("login"))
            .await;
        assert!(page.shown("login").await, "the token form is shown");
        page.eval(
            "document.getElementById('token').value = 's3cret'; \
             document.getElementById('login').requestSubmit()",
        )
        .await;
        let card = page
            .wait_for(TESTCARD_PNG, |c| {
                c["path"] == json!(TESTCARD_PNG) && c["ended"] == json!(true)
            })
            .await;
        assert_eq!(card["unitsPlayed"], json!(1), "{card}");
        assert_eq!(card["crcFailures"], json!(0), "{card}");
        assert_eq!(card["bytes"], json!(size), "every byte of the file: {card}");
        let width = page
            .eval("new Promise(r => { const i = document.getElementById('image'); i.complete ? r(i.naturalWidth) : i.onload = () => r(i.naturalWidth); })")
            .await;
        assert_eq!(width, json!(640), "the image decodes whole");
        // A chunk damaged on its way (a bad cache, say): one payload bit flipped under the
        // page's fetch. The page counts the CRC failure and says the file is not whole.
        page.eval(
            "(() => { const f = window.fetch; window.fetch = async (u, o) => { \
               const r = await f(u, o); if (!String(u).includes('/v1/chunks/')) return r; \
               const b = new Uint8Array(await r.arrayBuffer()); b[b.length - 1] ^= 1; \
               return new Response(b, { status: r.status, headers: r.headers }); }; })()",
        )
        .await;
        page.eval(&format!("window.chunkcastPlay({TESTCARD_PNG:?})"))
            .await;
        let c = page
            .wait_for_state("the damaged chunk's error", "error")
            .await;
        assert_eq!(c["crcFailures"], json!(1), "{c}");
        assert_eq!(c["unitsPlayed"], json!(0), "nothing damaged is shown: {c}");
        assert!(c["error"].as_str().unwrap_or("").contains("CRC32C"), "{c}");
    };
    let result = tokio::time::timeout(HARD_TIMEOUT, checks).await;
    browser.close().await;
    let text = chunkcast_testkit::scrape(server.metrics_addr().unwrap()).await;
    server.shutdown().await;
    result.expect("the checks finish within their time bound");
    let answered = |route: &str, status: u16| {
        chunkcast_testkit::metric(
            &text,
            &format!("chunkcast_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert!(answered("index", 401) >= 1.0, "refused without the token");
    assert!(
        answered("index", 204) >= 1.0,
        "the browser's preflight answered"
    );
    assert!(answered("index", 200) >= 1.0, "the index with the token");
    let chunks = size.div_ceil(256 * 1024) as f64;
    // Once each, though asked for twice: the second time from the browser's cache (the
    // chunk URLs are immutable).
    assert_eq!(answered("chunks", 200), chunks, "each chunk URL once");
    eprintln!(
        "testcard over HTTP with a token: {size} bytes in {chunks} chunk(s), preflights {}",
        answered("index", 204) + answered("chunks", 204)
    );
}

/// A live channel over HTTP whose publisher pauses longer than the server's 10 s blocking wait:
/// the page's waiting request gets 503, the page asks again, and takes the channel up where
/// it resumes, without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_channel_over_http_outlasts_a_pause_past_the_blocking_wait() {
    use chunkcast_protocol::{Chunk, ChunkFlags, Codec, StreamId, VideoParams, VisualFormat};
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let server = chunkcast_testkit::server_with(|c| {
        c.web = Some("127.0.0.1:0".parse().unwrap());
        c.http = Some("127.0.0.1:0".parse().unwrap());
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let page_url = format!(
        "http://{}/?http=http://{}",
        server.web_addr().unwrap(),
        server.http_addr().unwrap()
    );
    let profile = tempfile::tempdir().unwrap();
    let mut browser = launch(&chromium, profile.path()).await;
    let codec = Codec::Video(VideoParams {
        format: VisualFormat::Mjpeg,
        width: 64,
        height: 64,
        fps_num: 25,
        fps_den: 1,
    });
    // Frames the page receives as units (their bytes are no JPEG: drawing them fails, which
    // is counted as a drop, not an error).
    let frame = |i: u64| {
        Chunk::new(
            StreamId(0),
            i,
            0,
            i * 40_000,
            40_000,
            ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
            bytes::Bytes::from(vec![(i % 251) as u8; 500]),
        )
    };
    let session = chunkcast_testkit::connect(&server, chunkcast_client::url::Scheme::Tcp).await;
    let mut publisher = session.publish("live/slow", codec).await.unwrap();
    for i in 0..10 {
        publisher.send(frame(i)).await.unwrap();
    }
    let metrics = server.metrics_addr().unwrap();
    let checks = async {
        let cdp = browser.cdp.as_mut().unwrap();
        let mut page = open(cdp, &page_url).await;
        page.wait_for("ready", |c| c["state"] == json!("ready"))
            .await;
        page.eval("window.chunkcastPlay('live/slow')").await;
        let before = page
            .wait_for("the first frames", |c| {
                c["path"] == json!("live/slow") && c["unitsReceived"].as_u64() > Some(0)
            })
            .await;
        // Past the server's 10 s wait: the page's request for frame 10 is answered 503.
        let status503 = "chunkcast_http_requests_total{route=\"live_chunk\",status=\"503\"}";
        while chunkcast_testkit::metric(&chunkcast_testkit::scrape(metrics).await, status503) < 1.0
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for i in 10..20 {
            publisher.send(frame(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let after = page
            .wait_for("the frames after the pause", |c| {
                c["unitsReceived"].as_u64().unwrap_or(0)
                    >= before["unitsReceived"].as_u64().unwrap() + 10
            })
            .await;
        assert_eq!(after["state"], json!("playing"), "{after}");
        assert!(after["error"].is_null(), "{after}");
        assert_eq!(after["gaps"], json!(0), "{after}");
        eprintln!(
            "live/slow over HTTP: {} units before the pause, {} after it (503 answered, asked again)",
            before["unitsReceived"], after["unitsReceived"]
        );
    };
    let result = tokio::time::timeout(HARD_TIMEOUT, checks).await;
    browser.close().await;
    drop(publisher);
    session.close().await;
    server.shutdown().await;
    result.expect("the checks finish within their time bound");
}

/// The page watching `live/cam` shows its chat: a line typed in the page reaches a library
/// chat peer in the room, and the peer's line shows in the page, each exactly once; the
/// page's line is acknowledged (nothing left pending); the same through a forced
/// reconnection of the page.
async fn chat_both_ways(page: &mut Page<'_>, server: &chunkcast_server::Server) {
    use chunkcast_client::chat::{ChatOptions, run_chat};
    assert!(
        page.shown("chat").await,
        "the chat panel is shown for a live channel"
    );
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(8);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(64);
    let url = chunkcast_testkit::url(server, chunkcast_client::url::Scheme::Tcp, "");
    let connect = chunkcast_testkit::pinned(server);
    let peer = tokio::spawn(async move {
        run_chat(
            &url,
            &connect,
            "live/cam",
            in_rx,
            out_tx,
            &ChatOptions::default(),
        )
        .await
    });
    // Markup in chat text must stay text.
    let from_page = "hello from the page <b>bold?</b>";
    let from_peer = "hello from the peer <img src=x onerror=alert(1)>";
    page.eval(&format!(
        "document.getElementById('chat-text').value = {from_page:?}; \
         document.querySelector('#chat-form button').click()"
    ))
    .await;
    in_tx.send(from_peer.to_owned()).await.unwrap();
    let log = "JSON.stringify({ lines: Array.from(document.querySelectorAll('#chat-log li span'), \
        (s) => s.textContent), imgs: document.querySelectorAll('#chat-log img').length, \
        pending: window.chunkcastChatPending() })";
    let mut peer_lines = Vec::new();
    let start = std::time::Instant::now();
    loop {
        while let Ok(line) = out_rx.try_recv() {
            peer_lines.push(line);
        }
        let v: Value = serde_json::from_str(page.eval(log).await.as_str().unwrap()).unwrap();
        let lines: Vec<String> = serde_json::from_value(v["lines"].clone()).unwrap();
        let count = |t: &str| lines.iter().filter(|l| *l == t).count();
        let peer_has = peer_lines.iter().any(|l| l.text == from_page && !l.mine);
        if count(from_peer) >= 1 && count(from_page) >= 1 && peer_has && v["pending"] == json!(0) {
            // A moment more for any duplicate to show, then exactly once each.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let v: Value = serde_json::from_str(page.eval(log).await.as_str().unwrap()).unwrap();
            let lines: Vec<String> = serde_json::from_value(v["lines"].clone()).unwrap();
            assert_eq!(
                lines.iter().filter(|l| *l == from_page).count(),
                1,
                "{lines:?}"
            );
            assert_eq!(
                lines.iter().filter(|l| *l == from_peer).count(),
                1,
                "{lines:?}"
            );
            assert_eq!(v["imgs"], json!(0), "chat text is shown as text");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chat: page {v}, peer {peer_lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A forced reconnection: the page's connection drops, a line is typed while it is down
    // and the peer writes one meanwhile; the page connects again, rejoins the room and
    // resends, and each line still shows exactly once on each side.
    let after_page = "typed while the page was cut off";
    let after_peer = "written while the page was away";
    page.eval(&format!(
        "window.chunkcastDropConnection(); \
         document.getElementById('chat-text').value = {after_page:?}; \
         document.querySelector('#chat-form button').click()"
    ))
    .await;
    in_tx.send(after_peer.to_owned()).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        while let Ok(line) = out_rx.try_recv() {
            peer_lines.push(line);
        }
        let v: Value = serde_json::from_str(page.eval(log).await.as_str().unwrap()).unwrap();
        let lines: Vec<String> = serde_json::from_value(v["lines"].clone()).unwrap();
        let count = |t: &str| lines.iter().filter(|l| *l == t).count();
        let peer_has = peer_lines.iter().any(|l| l.text == after_page);
        if count(after_peer) >= 1 && count(after_page) >= 1 && peer_has && v["pending"] == json!(0)
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let v: Value = serde_json::from_str(page.eval(log).await.as_str().unwrap()).unwrap();
            let lines: Vec<String> = serde_json::from_value(v["lines"].clone()).unwrap();
            for t in [from_page, from_peer, after_page, after_peer] {
                assert_eq!(
                    lines.iter().filter(|l| *l == t).count(),
                    1,
                    "{t}: {lines:?}"
                );
            }
            let c = page.counters().await;
            assert_eq!(c["connections"], json!(2), "the page connected again: {c}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chat across a reconnection: page {v}, peer {peer_lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(in_tx);
    let report = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .expect("the peer's chat ends once its line is acknowledged")
        .unwrap()
        .expect("the peer's chat");
    while let Ok(line) = out_rx.try_recv() {
        peer_lines.push(line);
    }
    for t in [from_page, after_page] {
        let n = peer_lines.iter().filter(|l| l.text == t).count();
        assert_eq!(
            n, 1,
            "the page's line reaches the peer once: {peer_lines:?}"
        );
    }
    assert_eq!(report.sent, 2);
    eprintln!("chat: page ↔ peer, each line once; peer report {report:?}");
}

impl Page<'_> {
    /// Plays `path` and waits until the `<video>` has played a second of it: returns its
    /// `currentTime`, its decoded frame count, and the milliseconds from asking to play to
    /// the first frame shown. `currentTime` must advance with the wall clock, and for `video`
    /// frames at more than 15 a second (measured over a second of wall time).
    async fn mse_plays(&mut self, path: &str, video: bool) -> (f64, u64, u64) {
        let asked = std::time::Instant::now();
        self.eval(&format!("window.chunkcastPlay({path:?})")).await;
        let probe = "JSON.stringify((() => { const v = document.getElementById('mse'); \
            return { t: v.currentTime, f: v.getVideoPlaybackQuality().totalVideoFrames, \
            s: window.chunkcast.state, e: window.chunkcast.error, hidden: v.hidden }; })())";
        let mut first_frame_ms = None;
        let mut sample = None;
        loop {
            let v: Value = serde_json::from_str(self.eval(probe).await.as_str().unwrap()).unwrap();
            assert!(v["s"] != json!("error"), "{path}: page error {v}");
            let frames = v["f"].as_u64().unwrap_or(0);
            let t = v["t"].as_f64().unwrap_or(0.0);
            if first_frame_ms.is_none() && (frames > 0 || (!video && t > 0.0)) {
                first_frame_ms = Some(asked.elapsed().as_millis() as u64);
            }
            if t >= 1.0 && sample.is_none() {
                sample = Some((std::time::Instant::now(), t, frames));
            }
            if let Some((at, t0, f0)) = sample {
                let wall = at.elapsed().as_secs_f64();
                if wall >= 1.0 {
                    assert_eq!(v["hidden"], json!(false), "{path}: the <video> is shown");
                    let rate = (frames - f0) as f64 / wall;
                    let advance = (t - t0) / wall;
                    eprintln!("{path}: {rate:.1} frames/s, media {advance:.2} s per s");
                    assert!(
                        !video || rate > 15.0,
                        "{path}: frames advance ({rate:.1}/s)"
                    );
                    assert!(
                        advance > 0.6,
                        "{path}: currentTime advances ({advance:.2} s/s)"
                    );
                    return (t, frames, first_frame_ms.unwrap_or(0));
                }
            }
            assert!(
                asked.elapsed() < Duration::from_secs(40),
                "{path}: the video did not play: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The JavaScript that runs each vector through the page's wire module and returns, per
/// vector, the decoded meaning (rendered as the file renders it) and the encoded bytes.
const CHECK_VECTORS_JS: &str = r#"
(async (file) => {
  const w = await import('/wire.js');
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
  const render = (v) => typeof v === 'bigint' ? v.toString()
    : v instanceof Uint8Array ? hex(v)
    : Array.isArray(v) ? v.map(render)
    : v !== null && typeof v === 'object'
      ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, render(x)]))
      : v;
  const out = [];
  for (const v of file.vectors) {
    const r = { name: v.name };
    try {
      const f = w.decodeFrame(unhex(v.hex));
      if (f.type === 'CHUNK') {
        r.crc_ok = f.crc_ok;
        delete f.crc_ok;
        f.flag_names = w.flagNames(f.flags);
      }
      if ('caps' in f) f.caps_names = w.capsNames(f.caps);
      if ('code' in f) f.code_name = w.errorName(f.code);
      r.frame = render(f);
    } catch (e) {
      r.decode_error = String(e);
    }
    try {
      // The meaning's byte fields (hex in the file) as bytes.
      const m = structuredClone(v.frame);
      if (m.type === 'CHUNK') m.payload = unhex(m.payload);
      if (m.type === 'DIGEST') m.digest = unhex(m.digest);
      if (m.type === 'PROOF') m.nodes = unhex(m.nodes);
      if (m.type === 'OPENED' && m.digest.known) m.digest = { known: unhex(m.digest.known) };
      r.hex = hex(w.encodeFrame(m));
    } catch (e) {
      r.encode_error = String(e);
    }
    out.push(r);
  }
  return JSON.stringify(out);
})
"#;

async fn check_vectors(page: &mut Page<'_>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/golden/frames.json");
    let text = std::fs::read_to_string(&path).expect("docs/golden/frames.json");
    let file: Value = serde_json::from_str(&text).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    let got = page.eval(&format!("{CHECK_VECTORS_JS}({text})")).await;
    let got: Vec<Value> = serde_json::from_str(got.as_str().expect("a JSON string")).unwrap();
    assert_eq!(got.len(), vectors.len());
    let mut sent = Vec::new();
    for (v, g) in vectors.iter().zip(&got) {
        let name = v["name"].as_str().unwrap();
        assert_eq!(g["name"], v["name"]);
        assert_eq!(
            g["decode_error"],
            Value::Null,
            "{name}: the page cannot decode it"
        );
        assert_eq!(g["frame"], v["frame"], "{name}: decoded meaning");
        if v["frame"]["type"] == json!("CHUNK") {
            assert_eq!(g["crc_ok"], json!(true), "{name}: checksum");
        }
        assert_eq!(
            g["encode_error"],
            Value::Null,
            "{name}: the page cannot encode it"
        );
        assert_eq!(g["hex"], v["hex"], "{name}: encoded bytes");
        sent.push(v["frame"]["type"].as_str().unwrap());
    }
    for ty in [
        "HELLO",
        "LIST",
        "OPEN",
        "SUBSCRIBE",
        "PING",
        "PONG",
        "CLOSE",
        "GOODBYE",
    ] {
        assert!(sent.contains(&ty), "no {ty} vector");
    }
    // A corrupted chunk is flagged, not accepted; an unknown frame type is refused.
    let bad = page
        .eval(
            "import('/wire.js').then((w) => { \
               const c = w.encodeFrame({ type: 'CHUNK', stream: 1, seq: 0, offset: 0, pts_us: 0, \
                 duration_us: 0, flags: 0, raw_len: 1, payload: new Uint8Array([7]) }); \
               c[c.length - 1] ^= 1; \
               let unknown; \
               try { w.decodeFrame(new Uint8Array([0, 0, 0, 1, 0xff])); } catch (e) { unknown = String(e); } \
               return JSON.stringify({ crc: w.decodeFrame(c).crc_ok, unknown }); })",
        )
        .await;
    let bad: Value = serde_json::from_str(bad.as_str().unwrap()).unwrap();
    assert_eq!(bad["crc"], json!(false), "{bad}");
    assert!(
        bad["unknown"]
            .as_str()
            .is_some_and(|e| e.contains("unknown frame type 0xff")),
        "{bad}"
    );
}

/// Arrivals (seq, pts µs, duration µs, arrival ms): in order, one reordered within the
/// buffer, one a little late (its slot began 5 ms before), one late after a later unit came, a
/// 0.5 ms overlap (under the tolerance), and a gap.
const PLAYOUT_TRACE: &[(u64, u64, u32, f64)] = &[
    (0, 0, 20_000, 0.0),
    (1, 20_000, 20_000, 10.0),
    (3, 60_000, 20_000, 30.0),
    (2, 40_000, 20_000, 50.0),
    (4, 80_000, 20_000, 185.0),
    (5, 100_000, 20_000, 190.0),
    (7, 140_000, 20_000, 230.0),
    (8, 160_000, 20_000, 245.0),
    (9, 179_500, 20_000, 250.0),
    (10, 240_000, 20_000, 290.0),
    (6, 120_000, 20_000, 300.0),
];

/// What the Rust playout buffer does with the trace, driven as its docs say (push on arrival,
/// poll after each push and at each `Wait` instant): per seq, the play instant in ms, or None
/// when dropped.
fn rust_playout() -> Vec<(u64, Option<f64>)> {
    use chunkcast_media::playout::{Config, Output, PlayoutBuffer, Unit};
    use std::time::Instant;
    let t0 = Instant::now();
    let at = |ms: f64| t0 + Duration::from_micros((ms * 1000.0) as u64);
    let mut pb = PlayoutBuffer::new(Config::default());
    let mut played = Vec::new();
    let mut wake = None;
    let mut arrivals = PLAYOUT_TRACE.iter();
    let mut next = arrivals.next();
    loop {
        let now = match (next, wake) {
            (Some(a), Some(w)) if w < at(a.3) => w,
            (Some(a), _) => {
                let unit = Unit {
                    seq: a.0,
                    pts_us: a.1,
                    duration_us: a.2,
                    key: true,
                    payload: [0u8; 1],
                };
                pb.push(at(a.3), unit);
                next = arrivals.next();
                if next.is_none() {
                    pb.end_of_stream();
                }
                at(a.3)
            }
            (None, Some(w)) => w,
            (None, None) => break,
        };
        wake = loop {
            match pb.poll(now) {
                Output::Play(u) => {
                    played.push((u.seq, (now - t0).as_secs_f64() * 1000.0));
                }
                Output::Conceal { .. } => {}
                Output::Wait(w) => break Some(w),
                Output::Idle => break None,
            }
        };
    }
    let mut out: Vec<(u64, Option<f64>)> = PLAYOUT_TRACE
        .iter()
        .map(|u| (u.0, played.iter().find(|p| p.0 == u.0).map(|p| p.1)))
        .collect();
    out.sort_by_key(|u| u.0);
    out
}

/// The same trace through the page's `PlayoutClock`, scheduled as `video.js` schedules
/// frames: a unit late on arrival is dropped, the others are drawn at their due instant unless
/// a later unit took their slot first.
const PAGE_PLAYOUT_JS: &str = r#"
(async (trace) => {
  const { PlayoutClock } = await import('/playout.js');
  const clock = new PlayoutClock();
  const out = [];
  const draws = [];
  let i = 0;
  while (i < trace.length || draws.length) {
    draws.sort((a, b) => a.at - b.at);
    const a = trace[i];
    if (draws.length && (!a || draws[0].at <= a[3])) {
      const d = draws.shift();
      if (clock.late(d.pts, d.at)) out.push([d.seq, null]);
      else { clock.played(d.pts, d.dur); out.push([d.seq, d.at]); }
    } else {
      i++;
      const [seq, pts, dur, at] = a;
      if (clock.late(pts, at)) out.push([seq, null]);
      else draws.push({ at: clock.due(pts, at), seq, pts, dur });
    }
  }
  out.sort((a, b) => a[0] - b[0]);
  return JSON.stringify(out);
})
"#;

async fn check_playout(page: &mut Page<'_>) {
    let rust = rust_playout();
    let trace = serde_json::to_string(PLAYOUT_TRACE).unwrap();
    let got = page.eval(&format!("{PAGE_PLAYOUT_JS}({trace})")).await;
    let page: Vec<(u64, Option<f64>)> = serde_json::from_str(got.as_str().unwrap()).unwrap();
    assert_eq!(page.len(), rust.len(), "page {page:?}, Rust {rust:?}");
    for (p, r) in page.iter().zip(&rust) {
        let same = p.0 == r.0
            && match (p.1, r.1) {
                (Some(a), Some(b)) => (a - b).abs() < 0.01,
                (None, None) => true,
                _ => false,
            };
        assert!(
            same,
            "seq {}: page {p:?}, Rust {r:?}\npage {page:?}\nRust {rust:?}",
            r.0
        );
    }
    // The trace means something: some units dropped as late, the rest played.
    assert!(rust.iter().any(|u| u.1.is_none()) && rust.iter().any(|u| u.1.is_some()));
}

struct Browser {
    child: Child,
    cdp: Option<Cdp>,
    /// One Chromium at a time: five at once (with their ffmpegs) on two cores made the
    /// playout checks (no frame dropped) fail now and then.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Browser {
    async fn close(&mut self) {
        if let Some(cdp) = &mut self.cdp {
            let close = cdp.call("Browser.close", json!({}), None);
            let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn launch(chromium: &std::path::Path, profile: &std::path::Path) -> Browser {
    let turn = ONE_BROWSER.lock().await;
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1000,700",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting Chromium");
    let stderr = child.stderr.take().unwrap();
    let mut browser = Browser {
        child,
        cdp: None,
        _turn: turn,
    };
    let mut lines = BufReader::new(stderr).lines();
    let find = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                return Some(url.trim().to_owned());
            }
        }
        None
    };
    let Ok(Some(url)) = tokio::time::timeout(Duration::from_secs(20), find).await else {
        browser.close().await;
        panic!("Chromium did not open its DevTools endpoint");
    };
    // Keep draining Chromium's stderr so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let host = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let tcp = TcpStream::connect(&host).await.unwrap();
    let (ws, _) = client_async(url.as_str(), tcp)
        .await
        .expect("DevTools WebSocket");
    browser.cdp = Some(Cdp { ws, next: 1 });
    browser
}

/// A DevTools protocol client: one call at a time, events ignored.
struct Cdp {
    ws: WebSocketStream<TcpStream>,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("DevTools send");
        loop {
            let Some(Ok(Message::Text(text))) = self.ws.next().await else {
                panic!("DevTools connection ended during {method}");
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }
}

/// A page session: evaluates JavaScript and takes screenshots.
struct Page<'a> {
    cdp: &'a mut Cdp,
    session: String,
}

impl Page<'_> {
    async fn eval(&mut self, expression: &str) -> Value {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let r = self
            .cdp
            .call("Runtime.evaluate", params, Some(&self.session))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    async fn counters(&mut self) -> Value {
        let json = self.eval("JSON.stringify(window.chunkcast || null)").await;
        serde_json::from_str(json.as_str().unwrap_or("null")).unwrap()
    }

    /// Polls the page's counters until its state is `state` (an error state too).
    async fn wait_for_state(&mut self, what: &str, state: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let c = self.counters().await;
            if c["state"] == json!(state) {
                return c;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waiting for {what}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the page's counters until `done` holds for them.
    async fn wait_for(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = std::time::Instant::now();
        loop {
            let c = self.counters().await;
            if done(&c) {
                return c;
            }
            assert!(
                c["state"] != json!("error"),
                "page error while waiting for {what}: {c}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waiting for {what}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&mut self, clip: Option<Value>) -> Vec<u8> {
        let mut params = json!({ "format": "png" });
        if let Some(c) = clip {
            params["clip"] = c;
        }
        let r = self
            .cdp
            .call("Page.captureScreenshot", params, Some(&self.session))
            .await;
        decode_base64(r["data"].as_str().expect("screenshot data"))
    }

    /// Reads the frame number from the canvas's pixels: it must be the last frame the page
    /// says it drew. The canvas is drawn at the clip's native size, one pixel per pixel.
    async fn check_canvas(&mut self, counters: &Value) {
        let rect = self
            .eval("JSON.stringify(document.getElementById('video').getBoundingClientRect())")
            .await;
        let rect: Value = serde_json::from_str(rect.as_str().unwrap()).unwrap();
        let region = json!({
            "x": rect["x"], "y": rect["y"],
            "width": CLIP_WIDTH, "height": CLIP_HEIGHT, "scale": 1,
        });
        let png = self.screenshot(Some(region)).await;
        let shot = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(shot.dimensions(), (CLIP_WIDTH, CLIP_HEIGHT));
        let pts = counters["lastPtsUs"].as_u64().expect("a frame was drawn");
        let expected = (pts * u64::from(CLIP_FPS) + 500_000) / 1_000_000;
        let seen = chunkcast_media_samples::read_clip_frame_number(&shot);
        assert_eq!(
            seen,
            Some(expected as u32),
            "the canvas shows the last frame drawn"
        );
    }

    async fn play(&mut self, path: &str) -> Value {
        self.eval(&format!(
            "document.querySelector('[data-path=\"{path}\"]').click()"
        ))
        .await;
        self.wait_for(path, |c| {
            c["path"] == json!(path) && c["ended"] == json!(true)
        })
        .await
    }
}

/// Opens `url` in a new tab.
async fn open<'a>(cdp: &'a mut Cdp, url: &str) -> Page<'a> {
    let target = cdp
        .call("Target.createTarget", json!({ "url": url }), None)
        .await;
    let attach = json!({ "targetId": target["targetId"], "flatten": true });
    let session = cdp.call("Target.attachToTarget", attach, None).await;
    let session = session["sessionId"].as_str().unwrap().to_owned();
    Page { cdp, session }
}

impl Page<'_> {
    /// Whether the element is laid out (not `display: none` through `hidden`).
    async fn shown(&mut self, id: &str) -> bool {
        let js = format!("document.getElementById('{id}').getClientRects().length > 0");
        self.eval(&js).await == json!(true)
    }

    async fn rect(&mut self, id: &str) -> Value {
        let js = format!("JSON.stringify(document.getElementById('{id}').getBoundingClientRect())");
        serde_json::from_str(self.eval(&js).await.as_str().unwrap()).unwrap()
    }
}

async fn drive(browser: &mut Browser, url: &str, server: &chunkcast_server::Server) {
    let cdp = browser.cdp.as_mut().unwrap();
    let mut page = open(cdp, url).await;

    // The page connects and lists the library.
    let c = page
        .wait_for("the catalog", |c| {
            c["state"] == json!("ready") && c["catalog"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let listed: Vec<&str> = c["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        listed.contains(&TONE_8K_WAV) && listed.contains(&CLIP_MJPEG),
        "{listed:?}"
    );
    // Before anything plays: no empty black box, no empty stats panel.
    for id in ["player", "stage", "stats"] {
        assert!(!page.shown(id).await, "#{id} shows before anything plays");
    }

    // The viewer count updates without a click: a channel appears, then gets a viewer.
    let s = chunkcast_testkit::connect(server, chunkcast_client::url::Scheme::Tcp).await;
    let codec =
        chunkcast_client::live::probe(&chunkcast_testkit::samples().join(TONE_8K_WAV)).unwrap();
    let _publisher = s.publish("live/poll", codec).await.expect("publish");
    let watcher = chunkcast_testkit::connect(server, chunkcast_client::url::Scheme::Tcp).await;
    let _viewer = watcher.subscribe("live/poll").await.expect("subscribe");
    page.wait_for("the live list to show the viewer", |c| {
        c["live"].as_array().is_some_and(|l| {
            l.iter()
                .any(|e| e["path"] == json!("live/poll") && e["viewers"] == json!(1))
        })
    })
    .await;
    let text = page
        .eval("document.getElementById('live').textContent")
        .await;
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("live/poll") && t.contains("1 watching")),
        "{text}"
    );

    let tone = page.play(TONE_8K_WAV).await;
    assert!(!page.shown("stage").await, "a black box for audio");
    assert!(page.shown("stats").await && page.shown("volume").await);
    assert_eq!(tone["unitsPlayed"], json!(TONE_UNITS), "{tone}");
    assert_eq!(
        (tone["drops"].clone(), tone["gaps"].clone()),
        (json!(0), json!(0)),
        "{tone}"
    );
    assert_eq!(tone["crcFailures"], json!(0), "{tone}");

    let clip = page.play(CLIP_MJPEG).await;
    assert_eq!(clip["unitsPlayed"], json!(MJPEG_FRAMES), "{clip}");
    assert_eq!(
        (clip["drops"].clone(), clip["gaps"].clone()),
        (json!(0), json!(0)),
        "{clip}"
    );
    assert_eq!(clip["crcFailures"], json!(0), "{clip}");

    page.check_canvas(&clip).await;

    let y4m = page.play(CLIP_Y4M).await;
    assert_eq!(y4m["unitsPlayed"], json!(Y4M_FRAMES), "{y4m}");
    assert_eq!(
        (y4m["drops"].clone(), y4m["crcFailures"].clone()),
        (json!(0), json!(0)),
        "{y4m}"
    );
    page.check_canvas(&y4m).await;
    if let Some(out) = std::env::var_os("CHUNKCAST_SCREENSHOT_OUT") {
        let whole = page.screenshot(None).await;
        std::fs::write(&out, whole).expect("writing the screenshot");
        eprintln!("screenshot saved to {}", PathBuf::from(out).display());
    }

    let card = page.play(TESTCARD_PNG).await;
    assert_eq!(card["unitsPlayed"], json!(1), "{card}");
    let width = page
        .eval("new Promise(r => { const i = document.getElementById('image'); i.complete ? r(i.naturalWidth) : i.onload = () => r(i.naturalWidth); })")
        .await;
    assert!(
        width.as_u64().is_some_and(|w| w > 0),
        "the image decodes: {width}"
    );
    // The picture is inside the player box, and the video canvas is not drawn beside it.
    assert!(
        !page.shown("video").await,
        "the video canvas shows with an image"
    );
    let (img, stage) = (page.rect("image").await, page.rect("stage").await);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    assert!(
        f(&img, "left") >= f(&stage, "left") - 0.5
            && f(&img, "top") >= f(&stage, "top") - 0.5
            && f(&img, "right") <= f(&stage, "right") + 0.5
            && f(&img, "bottom") <= f(&stage, "bottom") + 0.5
            && f(&img, "width") > 0.0,
        "the image overflows the player box: {img} in {stage}"
    );

    // Seek: the tone from 2 s plays its last second only.
    page.eval(&format!("window.chunkcastPlay('{TONE_8K_WAV}')"))
        .await;
    page.wait_for("the tone to start", |c| c["unitsPlayed"].as_u64() > Some(2))
        .await;
    page.eval("window.chunkcastSeek(2.0)").await;
    let sought = page
        .wait_for("the sought tone to end", |c| {
            c["ended"] == json!(true) && c["firstPtsUs"].as_u64() > Some(0)
        })
        .await;
    let first = sought["firstPtsUs"].as_u64().unwrap();
    assert!((1_900_000..=2_100_000).contains(&first), "{sought}");
    let played = sought["unitsPlayed"].as_u64().unwrap();
    assert!((40..=60).contains(&played), "1 s of 20 ms units: {sought}");

    // Pause stops it where it is; play goes on from there. Volume reaches the gain.
    page.eval(&format!("window.chunkcastPlay('{TONE_8K_WAV}')"))
        .await;
    page.eval("(() => { const v = document.getElementById('volume'); v.value = '0.25'; v.dispatchEvent(new Event('input')); })()").await;
    page.wait_for("the tone to play 1 s", |c| {
        c["lastPtsUs"].as_u64() >= Some(1_000_000)
    })
    .await;
    assert_eq!(page.eval("window.chunkcastGain()").await, json!(0.25));
    page.eval("window.chunkcastPause()").await;
    let paused = page
        .wait_for("pause", |c| c["state"] == json!("paused"))
        .await;
    // real time: proves an absence (no units while paused) in a real browser.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = page.counters().await;
    assert_eq!(
        paused["unitsReceived"], later["unitsReceived"],
        "units kept coming while paused"
    );
    let at = paused["lastPtsUs"].as_u64().unwrap();
    page.eval("window.chunkcastPause()").await;
    let resumed = page
        .wait_for("the resumed tone to end", |c| c["ended"] == json!(true))
        .await;
    let first = resumed["firstPtsUs"].as_u64().unwrap();
    assert!(
        first.abs_diff(at) <= 100_000,
        "resumed at {first}, paused at {at}: {resumed}"
    );
    assert_eq!(
        page.eval("window.chunkcastGain()").await,
        json!(0.25),
        "volume kept"
    );

    // A link to a file: `#/PATH` plays PATH once the page is connected.
    let link = format!("{url}#/{TESTCARD_PNG}");
    let mut linked = open(page.cdp, &link).await;
    let card = linked
        .wait_for("the linked image", |c| {
            c["path"] == json!(TESTCARD_PNG) && c["ended"] == json!(true)
        })
        .await;
    assert_eq!(card["unitsPlayed"], json!(1), "{card}");
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for b in s.bytes().filter(|&b| b != b'=') {
        let v = ALPHABET.iter().position(|&a| a == b).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
