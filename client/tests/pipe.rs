//! `publish --from -`: live input from a pipe (ffmpeg, a camera), end to end on loopback over
//! TCP and QUIC, with viewers checked by ffprobe.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chunkcast_client::error::ClientError;
use chunkcast_client::live::{StreamOptions, publish_stream};
use chunkcast_client::session::Incoming;
use chunkcast_client::url::Scheme;
use chunkcast_media::ingest::InputFormat;
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, ErrorCode, VisualFormat};
use chunkcast_server::Server;
use chunkcast_testkit::{await_viewers, connect, require_tool, server_with};
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(120);
const PROMPT: Duration = Duration::from_secs(10);
const INSTALL: &str = "apt-get install ffmpeg";

async fn server() -> Server {
    server_with(|c| c.limits.max_connections_per_ip = 512).await
}

/// A viewer's chunks with their arrival times, or the error that ended it.
async fn drain(mut inc: Incoming) -> (Vec<(Instant, Chunk)>, Option<ClientError>) {
    let mut got = Vec::new();
    while let Some(c) = inc.next().await {
        match c {
            Ok(c) => got.push((Instant::now(), c)),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// ffprobe's count of decoded video frames and the codec name, for `file`.
fn probe(file: &Path) -> (u64, String) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let (codec, frames) = text.split_once(',').unwrap_or((&text, "0"));
    (frames.trim().parse().unwrap_or(0), codec.to_owned())
}

/// ffmpeg's testsrc2 at 320×180, 30 fps, in real time for `secs`, to stdout as `format`.
fn ffmpeg(secs: u32, fmp4: bool) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=30")
        .args(["-t", &secs.to_string()]);
    if fmp4 {
        cmd.args([
            "-c:v", "libx264", "-g", "30", "-pix_fmt", "yuv420p", "-f", "mp4",
        ])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-",
        ]);
    } else {
        cmd.args(["-f", "mjpeg", "-q:v", "5", "-"]);
    }
    cmd.stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts")
}

/// An ffmpeg pipeline publishes through `publish_stream` to `per_scheme` viewers on each of
/// TCP and QUIC; half subscribe before it starts, half join `late`. Every viewer's first
/// media chunk is a keyframe, its bytes decode with ffprobe, and late joiners start within a
/// group. Returns the late joiners' startup times (subscribe → first media chunk).
async fn pipeline(fmp4: bool, per_scheme: usize, late: Duration) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let name = if fmp4 { "fmp4" } else { "mjpeg" };
    let mut startups = Vec::new();
    for scheme in [Scheme::Tcp, Scheme::Quic] {
        let channel = format!("live/pipe-{name}-{}", scheme.name());
        let mut viewers = Vec::new();
        let early = per_scheme / 2;
        for _ in 0..early {
            let s = connect(&server, scheme).await;
            let ch = channel.clone();
            viewers.push(tokio::spawn(async move {
                let t = Instant::now();
                let inc = s.subscribe(&ch).await.unwrap();
                let r = drain(inc).await;
                s.close().await;
                (t, r)
            }));
        }
        let lister = connect(&server, scheme).await;
        await_viewers(&lister, &channel, early as u32, PROMPT).await;
        let mut child = ffmpeg(4, fmp4);
        let stdout = child.stdout.take().unwrap();
        let publisher = connect(&server, scheme).await;
        let ch = channel.clone();
        let publishing = tokio::spawn(async move {
            let r = publish_stream(&publisher, &ch, stdout, &StreamOptions::default()).await;
            publisher.close().await;
            r
        });
        tokio::time::sleep(late).await;
        for _ in early..per_scheme {
            let s = connect(&server, scheme).await;
            let ch = channel.clone();
            viewers.push(tokio::spawn(async move {
                let t = Instant::now();
                let inc = s.subscribe(&ch).await.unwrap();
                let r = drain(inc).await;
                s.close().await;
                (t, r)
            }));
        }
        let sent = publishing.await.unwrap().expect("the publish succeeds");
        assert!(child.wait().await.unwrap().success());
        let codec = sent.codec.expect("the channel was announced");
        let Codec::Video(v) = codec else {
            panic!("{codec:?}")
        };
        assert_eq!((v.width, v.height), (320, 180));
        assert_eq!(
            v.format,
            if fmp4 {
                VisualFormat::Fmp4
            } else {
                VisualFormat::Mjpeg
            }
        );
        for (i, viewer) in viewers.into_iter().enumerate() {
            let (subscribed, (chunks, err)) = viewer.await.unwrap();
            assert!(err.is_none(), "{scheme:?} viewer {i}: {err:?}");
            let (_, last) = chunks.last().expect("chunks");
            assert!(last.has(ChunkFlags::END_OF_STREAM), "the channel's end");
            let (arrived, first_media) = chunks
                .iter()
                .find(|(_, c)| !c.has(ChunkFlags::INIT))
                .expect("media");
            assert!(
                first_media.has(ChunkFlags::KEY),
                "{scheme:?} viewer {i} starts at a keyframe"
            );
            if i >= early {
                startups.push(arrived.duration_since(subscribed));
            }
            let file = dir.path().join(format!(
                "{name}-{}-{i}.{}",
                scheme.name(),
                if fmp4 { "mp4" } else { "mjpeg" }
            ));
            let bytes: Vec<u8> = chunks
                .iter()
                .flat_map(|(_, c)| c.payload.iter().copied())
                .collect();
            std::fs::write(&file, bytes).unwrap();
            let (frames, codec) = probe(&file);
            assert_eq!(codec, if fmp4 { "h264" } else { "mjpeg" });
            // 4 s at 30 fps: an early viewer gets every frame; a late one at least the last
            // time after it joined, minus a group.
            let least = if i < early { 120 } else { 30 };
            assert!(
                frames >= least,
                "{scheme:?} viewer {i}: ffprobe decoded {frames} frames"
            );
        }
        lister.close().await;
    }
    server.shutdown().await;
    startups
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    if let (Some(min), Some(max)) = (d.first(), d.last()) {
        eprintln!(
            "{what}: late joiner startup (subscribe → first media chunk) min {:.1} ms, median {:.1} ms, max {:.1} ms over {}",
            min.as_secs_f64() * 1e3,
            d[d.len() / 2].as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            d.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_pipe_reaches_viewers_that_decode_it() {
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    let d = tokio::time::timeout(LIMIT, pipeline(false, 10, Duration::from_millis(1500)))
        .await
        .unwrap();
    report("mjpeg", d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_fmp4_pipe_reaches_viewers_that_start_at_a_keyframe_and_decode_it() {
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    let d = tokio::time::timeout(LIMIT, pipeline(true, 10, Duration::from_millis(1500)))
        .await
        .unwrap();
    report("fmp4", d);
}

/// Glass-to-glass of the pipe path: each MJPEG frame is written into the pipe at a recorded
/// instant and its arrival at a viewer is timed; frames carry their index in an APP segment.
/// Also: a pipe that stalls longer than the server's idle timeout leaves the channel idle,
/// not dead, and the end of the pipe ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipe_idles_the_channel_and_its_end_ends_it_cleanly() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|c| {
            c.limits.max_connections_per_ip = 512;
            // Above the client's 5 s ping interval, below the stall.
            c.limits.idle_timeout = Duration::from_secs(6);
        })
        .await;
        for scheme in [Scheme::Tcp, Scheme::Quic] {
            let channel = format!("live/stall-{}", scheme.name());
            let viewer = connect(&server, scheme).await;
            let ch = channel.clone();
            let watching = tokio::spawn(async move {
                let inc = viewer.subscribe(&ch).await.unwrap();
                let r = drain(inc).await;
                viewer.close().await;
                r
            });
            let lister = connect(&server, scheme).await;
            await_viewers(&lister, &channel, 1, PROMPT).await;
            let (mut w, r) = tokio::io::duplex(1 << 20);
            let publisher = connect(&server, scheme).await;
            let ch = channel.clone();
            let publishing = tokio::spawn(async move {
                let opts = StreamOptions {
                    format: Some(InputFormat::Mjpeg),
                    ..Default::default()
                };
                let r = publish_stream(&publisher, &ch, r, &opts).await;
                publisher.close().await;
                r
            });
            let mut written = Vec::new();
            for i in 0..40u32 {
                if i == 20 {
                    // Longer than the server's idle timeout: nothing may give up.
                    tokio::time::sleep(Duration::from_secs(7)).await;
                }
                w.write_all(&jpeg(i)).await.unwrap();
                written.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(w);
            let sent = publishing.await.unwrap().expect("publish ends cleanly");
            assert_eq!(sent.units, 40);
            let (chunks, err) = watching.await.unwrap();
            assert!(err.is_none(), "{scheme:?}: {err:?}");
            assert!(chunks.last().unwrap().1.has(ChunkFlags::END_OF_STREAM));
            let mut lat: Vec<Duration> = chunks
                .iter()
                .filter(|(_, c)| c.has(ChunkFlags::END_OF_UNIT))
                .map(|(t, c)| {
                    let i = u32::from_be_bytes(c.payload[6..10].try_into().unwrap());
                    t.duration_since(written[i as usize])
                })
                .collect();
            assert_eq!(lat.len(), 40, "every frame, across the stall");
            lat.sort();
            eprintln!(
                "{scheme:?}: pipe → viewer latency p50 {:.2} ms, max {:.2} ms",
                lat[20].as_secs_f64() * 1e3,
                lat[39].as_secs_f64() * 1e3
            );
            lister.close().await;
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// Garbage from the publisher: the publish fails with a clear error, and the viewer gets the
/// whole frames before it, then the channel's end with the reason (code 17, bad input), and
/// keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_pipe_ends_the_channel_and_says_why() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let scheme = Scheme::Tcp;
        let channel = "live/garbage".to_owned();
        let viewer = connect(&server, scheme).await;
        let ch = channel.clone();
        let inc = viewer.subscribe(&ch);
        let lister = connect(&server, scheme).await;
        let (inc, ()) = tokio::join!(inc, async {
            await_viewers(&lister, &channel, 1, PROMPT).await;
            let (mut w, r) = tokio::io::duplex(1 << 20);
            let publisher = connect(&server, scheme).await;
            let mut input = jpeg(0);
            input.extend_from_slice(&jpeg(1));
            // A frame whose structure breaks: a non-marker byte after SOI.
            input.extend_from_slice(&[0xFF, 0xD8, 0x00, 0x01, 0x02]);
            w.write_all(&input).await.unwrap();
            let e = publish_stream(&publisher, &channel, r, &StreamOptions::default())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("corrupt mjpeg"), "{e}");
            drop(w);
            publisher.close().await;
        });
        let (chunks, err) = drain(inc.unwrap()).await;
        let err = err.expect("the channel ends with a reason");
        assert_eq!(err.code(), Some(ErrorCode::BadInput), "{err}");
        assert!(err.to_string().contains("corrupt mjpeg"), "{err}");
        let units = chunks
            .iter()
            .filter(|(_, c)| c.has(ChunkFlags::END_OF_UNIT))
            .count();
        assert_eq!(units, 2, "the whole frames before the garbage");
        // The viewer's connection is still good.
        assert!(viewer.list("live/").await.is_ok());
        viewer.close().await;
        lister.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// A minimal JPEG structure carrying `index` in an APP0 segment (bytes 6..10).
fn jpeg(index: u32) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x06];
    j.extend_from_slice(&index.to_be_bytes());
    j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 8, 0, 16, 0, 16, 1, 1, 0x11, 0]);
    j.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0]);
    j.extend_from_slice(&[1, 2, 0xFF, 0x00, 3, 4]);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// The Done-when run at full size: 20 viewers on each of TCP and QUIC, for each pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "40 viewers per pipeline: cargo test -p chunkcast --test pipe -- --ignored --nocapture"]
async fn twenty_viewers_on_each_transport() {
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    for fmp4 in [false, true] {
        // Late joiners come once the first fragment is out (x264's look-ahead holds the first
        // one back about 2.3 s): they start from the cached group at once.
        let d = tokio::time::timeout(LIMIT * 2, pipeline(fmp4, 20, Duration::from_secs(3)))
            .await
            .unwrap();
        report(if fmp4 { "fmp4 x40" } else { "mjpeg x40" }, d);
    }
}

/// `chunkcast publish --from film.mp4` of a *fragmented* MP4 file goes fragment by fragment,
/// as a live input: a viewer gets the init segment and fragments that ffprobe decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_mp4_file_is_published_fragment_by_fragment() {
    use chunkcast_testkit::process::{command, wait_bounded};
    use chunkcast_testkit::url;
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let film = dir.path().join("film.mp4");
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x180:rate=30",
            ])
            .args([
                "-t", "2", "-c:v", "libx264", "-g", "15", "-pix_fmt", "yuv420p",
            ])
            .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
            .arg(&film)
            .status()
            .unwrap();
        assert!(made.success());
        let server = server().await;
        let channel = "live/film";
        let viewer = connect(&server, Scheme::Tcp).await;
        let watching = tokio::spawn(async move {
            let inc = viewer.subscribe(channel).await.unwrap();
            let codec = inc.opened.codec;
            let r = drain(inc).await;
            viewer.close().await;
            (codec, r)
        });
        let lister = connect(&server, Scheme::Tcp).await;
        await_viewers(&lister, channel, 1, PROMPT).await;
        let u = url(&server, Scheme::Tcp, channel).to_string();
        let f = film.clone();
        let out = tokio::task::spawn_blocking(move || {
            let child = command(env!("CARGO_BIN_EXE_chunkcast"))
                .args(["publish", &u, "--from"])
                .arg(&f)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_bounded(child, Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (codec, (chunks, err)) = watching.await.unwrap();
        assert!(err.is_none(), "{err:?}");
        assert!(
            matches!(codec, Codec::Video(v) if v.format == VisualFormat::Fmp4),
            "{codec:?}"
        );
        let bytes: Vec<u8> = chunks
            .iter()
            .flat_map(|(_, c)| c.payload.iter().copied())
            .collect();
        // The file, byte for byte, but its closing `mfra` (a seek index, no use live).
        let whole = std::fs::read(&film).unwrap();
        assert!(whole.starts_with(&bytes), "a prefix of the file");
        assert_eq!(&whole[bytes.len() + 4..bytes.len() + 8], b"mfra");
        let copy = dir.path().join("copy.mp4");
        std::fs::write(&copy, bytes).unwrap();
        assert_eq!(probe(&copy), (60, "h264".to_owned()));
        lister.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}
