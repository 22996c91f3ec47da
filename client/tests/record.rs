//! `record`: live channels fed by ffmpeg pipes, saved to files that ffprobe reads with the
//! right duration, also across a publisher restart.
//!
//! The default tests record 4 s; the 30 s ones are ignored (quiet machine):
//! `cargo test -p chunkcast --test record -- --ignored --nocapture`

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chunkcast_client::live::{StreamOptions, publish_stream};
use chunkcast_client::record::{RecordOptions, RecordReport, record};
use chunkcast_client::url::Scheme;
use chunkcast_server::Server;
use chunkcast_testkit::{await_viewers, connect, require_tool, server_with};

const PROMPT: Duration = Duration::from_secs(10);
const INSTALL: &str = "apt-get install ffmpeg";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Src {
    Mjpeg,
    Fmp4,
    Wav,
}

fn ffmpeg(src: Src, secs: f64) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-re", "-f", "lavfi", "-i"]);
    match src {
        Src::Wav => cmd.arg("sine=frequency=440:sample_rate=48000"),
        _ => cmd.arg("testsrc2=size=320x180:rate=30"),
    };
    cmd.args(["-t", &secs.to_string()]);
    match src {
        Src::Mjpeg => cmd.args(["-f", "mjpeg", "-q:v", "5", "-"]),
        Src::Fmp4 => cmd
            .args([
                "-c:v", "libx264", "-g", "30", "-pix_fmt", "yuv420p", "-f", "mp4",
            ])
            .args([
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
                "-",
            ]),
        Src::Wav => cmd.args(["-f", "wav", "-"]),
    };
    cmd.stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts")
}

/// ffprobe's (duration in s, decoded frames of the first stream) of `file`.
fn probe(file: &Path) -> (f64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "0"])
        .args(["-show_entries", "format=duration:stream=nb_read_frames"])
        .args(["-of", "default=nw=1"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    (
        field("duration=").unwrap_or(0.0),
        field("nb_read_frames=").unwrap_or(0.0) as u64,
    )
}

/// Publishes `src` for `secs` (or, with `restart`, two runs of `secs / 2`, the first one's
/// publisher killed rather than ended) while `record` saves the channel; returns the report.
async fn run(server: &Server, src: Src, secs: f64, restart: bool, out: &Path) -> RecordReport {
    let scheme = Scheme::Tcp;
    let channel = format!("live/rec-{src:?}-{restart}");
    let recorder = connect(server, scheme).await;
    let ch = channel.clone();
    let path = out.to_path_buf();
    let recording = tokio::spawn(async move {
        let r = record(&recorder, &ch, &path, &RecordOptions::default()).await;
        recorder.close().await;
        r
    });
    let lister = connect(server, scheme).await;
    await_viewers(&lister, &channel, 1, PROMPT).await;
    if restart {
        // Run 1: killed mid-stream (its connection dropped), so the channel's publisher is lost.
        let mut child = ffmpeg(src, secs);
        let stdout = child.stdout.take().unwrap();
        let publisher = connect(server, scheme).await;
        let ch = channel.clone();
        let first = tokio::spawn(async move {
            let _ = publish_stream(&publisher, &ch, stdout, &StreamOptions::default()).await;
        });
        tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
        first.abort();
        let _ = first.await;
        child.kill().await.unwrap();
        // The recorder is back to waiting for a publisher.
        await_viewers(&lister, &channel, 1, PROMPT).await;
    }
    let mut child = ffmpeg(src, if restart { secs / 2.0 } else { secs });
    let stdout = child.stdout.take().unwrap();
    let publisher = connect(server, scheme).await;
    publish_stream(&publisher, &channel, stdout, &StreamOptions::default())
        .await
        .expect("publish");
    publisher.close().await;
    assert!(child.wait().await.unwrap().success());
    let report = recording.await.unwrap().expect("record");
    lister.close().await;
    report
}

async fn check(src: Src, secs: f64, restart: bool) {
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ext = match src {
        Src::Mjpeg => "mjpeg",
        Src::Fmp4 => "mp4",
        Src::Wav => "wav",
    };
    let out = dir.path().join(format!("rec.{ext}"));
    let server = server_with(|c| c.limits.max_connections_per_ip = 64).await;
    let limit = Duration::from_secs_f64(secs * 2.0 + 60.0);
    let report = tokio::time::timeout(limit, run(&server, src, secs, restart, &out))
        .await
        .unwrap();
    server.shutdown().await;
    assert_eq!(report.files, std::slice::from_ref(&out), "one file");
    assert_eq!(report.gaps, u32::from(restart));
    assert!(
        !dir.path().join(format!("rec.{ext}.partial")).exists(),
        "no partial file left"
    );
    let (duration, frames) = probe(&out);
    let recorded = report.duration_us as f64 / 1e6;
    eprintln!(
        "{src:?} restart={restart}: {} units, recorded {recorded:.3} s; ffprobe: {duration:.3} s, {frames} frames",
        report.units
    );
    let frame = if src == Src::Wav {
        0.021
    } else {
        1.0 / 30.0 + 0.001
    };
    match src {
        Src::Mjpeg => assert_eq!(frames, report.units, "every recorded frame decodes"),
        // A unit is a fragment: every frame of the recorded time decodes.
        Src::Fmp4 => assert!(
            (frames as f64 - recorded * 30.0).abs() <= 1.0,
            "{frames} frames in {recorded} s"
        ),
        Src::Wav => {}
    }
    if !restart && src == Src::Mjpeg {
        // Subscribed before the first byte: every frame is in the file. MJPEG is timed by
        // arrival, so its count is what says the duration.
        assert!(
            (frames as f64 - secs * 30.0).abs() <= 1.0,
            "{frames} frames of {secs} s"
        );
    } else if !restart {
        // Subscribed before the first byte: the whole run is in the file.
        assert!(
            (recorded - secs).abs() <= frame,
            "recorded {recorded} s of {secs} s"
        );
    } else {
        assert!(recorded > secs / 4.0, "both runs: {recorded} s");
    }
    if src == Src::Mjpeg {
        // A raw MJPEG file has no timestamps: its duration is its frame count at 30 fps.
        assert!((frames as f64 / 30.0 - recorded).abs() <= frame);
    } else {
        assert!(
            (duration - recorded).abs() <= frame,
            "ffprobe says {duration} s, the recording {recorded} s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_records_to_a_file_ffprobe_reads() {
    check(Src::Mjpeg, 4.0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_records_to_an_mp4_with_the_right_duration() {
    check(Src::Fmp4, 4.0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_records_with_its_header_finished() {
    check(Src::Wav, 4.0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_recording_goes_on_across_a_publisher_restart() {
    check(Src::Fmp4, 6.0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_recording_goes_on_across_a_publisher_restart() {
    check(Src::Mjpeg, 6.0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 s each: cargo test -p chunkcast --test record -- --ignored --nocapture"]
async fn thirty_seconds_of_each() {
    for src in [Src::Mjpeg, Src::Fmp4, Src::Wav] {
        check(src, 30.0, false).await;
        check(src, 30.0, true).await;
    }
}

/// `--segment 2` over 6 s of fMP4 (a keyframe a second): three files, each starting with the
/// init segment at decode time 0, that ffprobe reads, adding up to the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_at_keyframes_into_files_that_each_play() {
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seg.mp4");
        let server = server_with(|_| {}).await;
        let channel = "live/segments".to_owned();
        let recorder = connect(&server, Scheme::Tcp).await;
        let (ch, path) = (channel.clone(), out.clone());
        let recording = tokio::spawn(async move {
            let opts = RecordOptions {
                segment: Some(Duration::from_secs(2)),
                ..Default::default()
            };
            let r = record(&recorder, &ch, &path, &opts).await;
            recorder.close().await;
            r
        });
        let lister = connect(&server, Scheme::Tcp).await;
        await_viewers(&lister, &channel, 1, PROMPT).await;
        let mut child = ffmpeg(Src::Fmp4, 6.0);
        let stdout = child.stdout.take().unwrap();
        let publisher = connect(&server, Scheme::Tcp).await;
        publish_stream(&publisher, &channel, stdout, &StreamOptions::default())
            .await
            .unwrap();
        publisher.close().await;
        let report = recording.await.unwrap().unwrap();
        let names: Vec<String> = report
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["seg.mp4", "seg-2.mp4", "seg-3.mp4"]);
        let mut total = 0.0;
        for f in &report.files {
            let (duration, frames) = probe(f);
            assert!(
                (duration - 2.0).abs() < 0.04,
                "{}: {duration} s",
                f.display()
            );
            assert_eq!(frames, 60, "{}", f.display());
            total += duration;
        }
        assert!((total - 6.0).abs() < 0.04);
        lister.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// Ctrl-C on `chunkcast record` of a WAV channel: exit 130, and the file under its final name
/// has a header that says exactly how much audio it holds.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_record_leaves_a_wav_with_a_correct_header() {
    use chunkcast_testkit::process::{command, signal, text, wait_bounded, wait_until};
    use chunkcast_testkit::url;
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let server = server_with(|_| {}).await;
        let channel = "live/ctrl-c";
        let u = url(&server, Scheme::Tcp, channel).to_string();
        let d = dir.path().to_owned();
        let record = tokio::task::spawn_blocking(move || {
            let child = command(env!("CARGO_BIN_EXE_chunkcast"))
                .args(["record", &u, "-o", "radio.wav"])
                .current_dir(&d)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let partial = d.join("radio.wav.partial");
            let started = wait_until(Duration::from_secs(20), || {
                std::fs::metadata(&partial).is_ok_and(|m| m.len() > 48_000)
            });
            assert!(started, "{} never grew", partial.display());
            signal(&child, "INT");
            wait_bounded(child, Duration::from_secs(10))
        });
        let lister = connect(&server, Scheme::Tcp).await;
        await_viewers(&lister, channel, 1, PROMPT).await;
        let mut child = ffmpeg(Src::Wav, 30.0);
        let stdout = child.stdout.take().unwrap();
        let publisher = connect(&server, Scheme::Tcp).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let opts = StreamOptions {
            stop: stop.clone(),
            ..Default::default()
        };
        let publishing =
            tokio::spawn(async move { publish_stream(&publisher, channel, stdout, &opts).await });
        let out = record.await.unwrap();
        stop.cancel();
        let _ = publishing.await;
        child.kill().await.unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{err}");
        let file = dir.path().join("radio.wav");
        assert!(!dir.path().join("radio.wav.partial").exists(), "{err}");
        let wav = hound::WavReader::open(&file).unwrap();
        let frames = wav.duration();
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(
            u64::from(frames) * 2 + 44,
            len,
            "the header's size is the file's"
        );
        let (duration, _) = probe(&file);
        assert!((duration - f64::from(frames) / 48_000.0).abs() < 0.001);
        lister.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// `chunkcast-server --record DIR`: a file per channel and publisher run, each finished when
/// its run ends, that ffprobe reads with the run's duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_records_a_file_per_publisher_run() {
    if !require_tool("ffmpeg", INSTALL) || !require_tool("ffprobe", INSTALL) {
        return;
    }
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec");
        let r = rec.clone();
        let server = server_with(move |c| c.record = Some(r)).await;
        let channel = "live/studio";
        for secs in [3.0, 2.0] {
            let mut child = ffmpeg(Src::Fmp4, secs);
            let stdout = child.stdout.take().unwrap();
            let publisher = connect(&server, Scheme::Tcp).await;
            publish_stream(&publisher, channel, stdout, &StreamOptions::default())
                .await
                .unwrap();
            publisher.close().await;
        }
        let finished = || {
            let mut files: Vec<_> = std::fs::read_dir(&rec)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files
        };
        let deadline = tokio::time::Instant::now() + PROMPT;
        while finished()
            .iter()
            .any(|f| f.extension().unwrap() == "partial")
            || finished().len() < 2
        {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", finished());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let files = finished();
        assert_eq!(files.len(), 2, "{files:?}");
        let mut durations: Vec<f64> = files.iter().map(|f| probe(f).0).collect();
        durations.sort_by(f64::total_cmp);
        assert!((durations[0] - 2.0).abs() < 0.04, "{durations:?}");
        assert!((durations[1] - 3.0).abs() < 0.04, "{durations:?}");
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            assert!(
                name.starts_with("live_studio-") && name.ends_with(".mp4"),
                "{name}"
            );
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}
