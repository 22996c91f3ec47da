//! `call --from -`: a call whose video is a live pipe (ffmpeg's test pattern as MJPEG), the
//! way `publish --from -` takes one, against a call end that sends files.

use std::process::Stdio;
use std::time::Duration;

use chunkcast_client::live::{CallOptions, call_with};
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::sink::Spec;
use chunkcast_client::url::Scheme;
use chunkcast_testkit::{require_tool, samples, server_with, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sends_a_piped_camera_and_the_other_side_sees_it() {
    if !require_tool("ffmpeg", "apt-get install ffmpeg") {
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = server_with(|_| {}).await;
        let dir = samples();
        let tone = dir.join(chunkcast_media_samples::TONE_8K_WAV);
        let u = url(&server, Scheme::Tcp, "call/piped");
        // 3 s of 320×180 at 25 fps, in real time, as a camera would give it.
        let mut camera = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x180:rate=25")
            .args(["-t", "3", "-f", "mjpeg", "-q:v", "5", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ffmpeg starts");
        let piped = tokio::process::Command::new(env!("CARGO_BIN_EXE_chunkcast"))
            .arg("call")
            .arg(u.to_string())
            .args(["--from", "-", "--from"])
            .arg(&tone)
            .args(["--stats", "json"])
            .stdin(Stdio::from(camera.stdout.take().unwrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tempfile::tempdir().unwrap();
        let frames = out.path().join("frames");
        let other = CallOptions {
            sinks: vec![
                format!("frames:{}", frames.display())
                    .parse::<Spec>()
                    .unwrap(),
            ],
            ..Default::default()
        };
        let from = vec![dir.join(chunkcast_media_samples::CLIP_MJPEG), tone];
        let connect = ConnectOptions::default();
        let (piped, b) = tokio::join!(piped, call_with(&u, &connect, &from, &other));
        let (piped, b) = (piped.unwrap(), b.unwrap());
        assert!(camera.wait().unwrap().success());
        let stderr = String::from_utf8_lossy(&piped.stderr);
        assert!(piped.status.success(), "call --from - failed: {stderr}");
        let stats: serde_json::Value = serde_json::from_slice(&piped.stdout)
            .unwrap_or_else(|e| panic!("--stats json: {e}: {stderr}"));
        let sent_video = stats["sent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["track"] == "video")
            .expect("the pipe went as the video track");
        let seen = b.received.iter().find(|t| t.track == "video").unwrap();
        let pngs = std::fs::read_dir(&frames).unwrap().count() as u64;
        let got_back = stats["received"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["track"] == "video")
            .unwrap();
        eprintln!(
            "pipe side sent {sent_video}; the other side received {} video chunks, {pngs} \
             frames decoded, p99 {:?}; the pipe side received {}",
            seen.chunks, seen.latency_p99, got_back
        );
        // 3 s at 25 fps, every frame a decodable picture on the other side.
        assert!(
            (70..=76).contains(&pngs),
            "{pngs} frames seen of the pipe's 75"
        );
        assert!(sent_video["units_sent"].as_u64().unwrap() >= 70);
        assert!(seen.latency_p99 < Duration::from_millis(500), "{seen:?}");
        // And the call went both ways.
        assert!(got_back["chunks"].as_u64().unwrap() > 100, "{got_back}");
        server.shutdown().await;
    })
    .await
    .expect("the call ends within a minute");
}

/// A pipe that is no format a call sends is refused before anything is sent, saying what to
/// do; so is `--from -` beside `--chat` (both would read stdin).
#[tokio::test]
async fn a_pipe_of_no_known_format_and_a_pipe_beside_chat_are_refused() {
    use tokio::io::AsyncWriteExt;
    let server = server_with(|_| {}).await;
    let u = url(&server, Scheme::Tcp, "call/refused");
    for extra in [&[][..], &["--chat"][..]] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chunkcast"))
            .arg("call")
            .arg(u.to_string())
            .args(["--from", "-"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The refusal may come before the write: a closed pipe is not this test's failure.
        let _ = stdin
            .write_all(b"this is not a picture, nor a sound\n")
            .await;
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("refused at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {stderr}");
        let why = if extra.is_empty() {
            "give it with --format"
        } else {
            "--chat reads its lines from standard input"
        };
        assert!(stderr.contains(why), "{extra:?}: {stderr}");
    }
    server.shutdown().await;
}
