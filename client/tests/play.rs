//! `play` end to end: the real server in-process on loopback, the real playout loop and sinks,
//! and the real binary where a pipe to ffmpeg is the point. Every test has a hard timeout.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chunkcast_client::play::{PlayOptions, PlayReport, play};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::sink::{Spec, frames::frame_path};
use chunkcast_client::url::{Scheme, Url};
use chunkcast_media_samples as samples;
use chunkcast_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use chunkcast_testkit::process::{signal, text, wait_bounded};
use chunkcast_testkit::{pinned, require_tool, samples, server_with, url, url_at};

/// The `chunkcast` binary, as the test suites start it.
fn bin() -> Command {
    chunkcast_testkit::bin!("chunkcast")
}

async fn server() -> Server {
    server_with(|_| {}).await
}

/// A hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(120);
/// The default playout buffer.
const BUFFER: Duration = Duration::from_millis(100);

/// Connects to `url`, plays its path to `sinks`, and returns the report with the wall time of
/// the play call (open request to the end of the last unit).
async fn play_at(url: &Url, connect: &ConnectOptions, sinks: &[&str]) -> (PlayReport, Duration) {
    let session = Session::connect(url, connect).await.expect("connects");
    let opts = PlayOptions {
        sinks: sinks.iter().map(|s| s.parse().unwrap()).collect(),
        ..PlayOptions::default()
    };
    let t0 = Instant::now();
    let report = play(&session, &url.path, &opts).await.expect("plays");
    let wall = t0.elapsed();
    session.close().await;
    eprintln!(
        "{} {}: startup {:?}, wall {wall:?}, underruns {}, played {}, jitter max {:?}",
        url.scheme.name(),
        url.path,
        report.startup_delay.unwrap_or_default(),
        report.stats.underruns,
        report.played,
        report.stats.jitter_max,
    );
    (report, wall)
}

/// Attempts at a realtime play before a host stall fails the test.
const ATTEMPTS: usize = 3;

/// Whether `report` played without an underrun. An underrun is a bug when every arrival
/// was within the buffer (the jitter, measured from the fastest arrival, stayed below it):
/// then this panics. When the jitter exceeded the buffer, the precondition failed: on a
/// loaded machine the in-process server itself was starved for longer than the buffer, and
/// the caller may try again.
fn clean(report: &PlayReport) -> bool {
    if report.stats.underruns == 0 {
        return true;
    }
    assert!(
        report.stats.jitter_max >= BUFFER,
        "an underrun although every arrival was within the buffer:\n{report}"
    );
    eprintln!(
        "host stall: jitter {:?} exceeded the {BUFFER:?} buffer; trying again",
        report.stats.jitter_max
    );
    false
}

/// Plays `path` over TCP and QUIC at once, each to the sinks `sinks` gives it, until both
/// play without an underrun (see [`clean`]).
async fn play_both(
    server: &Server,
    path: &str,
    sinks: impl Fn(Scheme) -> Vec<String>,
) -> Vec<(PlayReport, Duration)> {
    for _ in 0..ATTEMPTS {
        let plays = [Scheme::Tcp, Scheme::Quic].map(|scheme| {
            let u = url(server, scheme, path);
            let connect = pinned(server);
            let sinks = sinks(scheme);
            async move {
                let sinks: Vec<&str> = sinks.iter().map(String::as_str).collect();
                play_at(&u, &connect, &sinks).await
            }
        });
        let results = futures_util::future::join_all(plays).await;
        if results.iter().all(|(r, _)| clean(r)) {
            return results;
        }
    }
    panic!("{path}: the host stalled longer than the buffer in {ATTEMPTS} attempts");
}

fn pcm_i16(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let samples = r.samples::<i16>().map(Result::unwrap).collect();
    (r.spec(), samples)
}

fn png_frame_number(dir: &Path, index: u64) -> Option<u32> {
    let img = image::open(frame_path(dir, index))
        .expect("frame decodes")
        .to_rgb8();
    samples::read_clip_frame_number(&img)
}

fn pngs_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_clip_plays_in_real_time_to_frames_over_tcp_and_quic() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let results = play_both(&server, samples::CLIP_MJPEG, |scheme| {
            let dir = &dirs[usize::from(scheme == Scheme::Quic)];
            vec![format!("frames:{}", dir.path().display())]
        })
        .await;
        for ((report, wall), dir) in results.iter().zip(&dirs) {
            let clip = Duration::from_secs(5);
            assert!(
                wall >= &clip && *wall <= clip + BUFFER + Duration::from_millis(600),
                "a 5 s clip played in {wall:?}"
            );
            assert_eq!(report.played, u64::from(samples::MJPEG_FRAMES));
            let startup = report.startup_delay.expect("something played");
            assert!(startup >= BUFFER, "{startup:?}");
            assert_eq!(pngs_in(dir.path()), samples::MJPEG_FRAMES as usize);
            for i in [0, 1, 31, 62, 100, 124] {
                assert_eq!(png_frame_number(dir.path(), i), Some(i as u32), "frame {i}");
            }
        }
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_wav_plays_every_frame_over_tcp_and_quic() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        let outs = [dir.path().join("tcp.wav"), dir.path().join("quic.wav")];
        let results = play_both(&server, samples::SWEEP_48K_WAV, |scheme| {
            let out = &outs[usize::from(scheme == Scheme::Quic)];
            vec![format!("wav:{}", out.display())]
        })
        .await;
        let (src_spec, src) = pcm_i16(&samples().join(samples::SWEEP_48K_WAV));
        for ((_, wall), out) in results.iter().zip(&outs) {
            assert!(*wall >= Duration::from_secs(10), "{wall:?}");
            let (spec, got) = pcm_i16(out);
            assert_eq!(spec, src_spec);
            assert_eq!(got.len() / 2, 480_000, "10 s at 48 kHz");
            assert!(got == src, "played samples differ from the source");
            assert!(!chunkcast_client::get::partial_path(out).exists());
        }
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

/// A TCP proxy that delays every read by a random 0..`max` (keeping order: a read is never
/// released before the one before it).
async fn jitter_proxy(upstream: SocketAddr, max: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            seed = seed.wrapping_add(1);
            tokio::spawn(delay_pipe(dr, uw, max, seed));
            tokio::spawn(delay_pipe(ur, dw, max, seed ^ 0xff));
        }
    });
    addr
}

async fn delay_pipe(
    mut r: impl tokio::io::AsyncRead + Unpin,
    mut w: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    max: Duration,
    mut rng: u64,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            // real time: the jitter is latency on a real socket, against real-time playout.
            tokio::time::sleep_until(at).await;
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut last = tokio::time::Instant::now();
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        // xorshift64*: reproducible, no dependency.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let unit = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        let at = (tokio::time::Instant::now() + max.mul_f64(unit)).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_below_the_buffer_causes_no_underrun() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let proxy = jitter_proxy(server.tcp_addr(), Duration::from_millis(40)).await;
        let dir = tempfile::tempdir().unwrap();
        let (wav, file) = (dir.path().join("out.wav"), dir.path().join("copy.wav"));
        let u = url_at(proxy, Scheme::Tcp, samples::TONE_8K_WAV);
        let sinks = [
            format!("wav:{}", wav.display()),
            format!("file:{}", file.display()),
        ];
        let sinks: Vec<&str> = sinks.iter().map(String::as_str).collect();
        let mut attempts = 0;
        let report = loop {
            let (report, _) = play_at(&u, &ConnectOptions::default(), &sinks).await;
            attempts += 1;
            if clean(&report) {
                break report;
            }
            assert!(
                attempts < ATTEMPTS,
                "the host stalled in {ATTEMPTS} attempts"
            );
        };
        assert_eq!(report.stats.late_drops, 0, "{}", report.stats);
        assert!(
            report.stats.jitter_max >= Duration::from_millis(10),
            "the proxy added jitter: {}",
            report.stats
        );
        let (_, got) = pcm_i16(&wav);
        let (_, src) = pcm_i16(&samples().join(samples::TONE_8K_WAV));
        assert_eq!(got.len(), 24_000, "3 s at 8 kHz mono");
        assert!(got == src);
        // The file sink keeps the stream's bytes, header included: the WAV, rebuilt.
        let original = std::fs::read(samples().join(samples::TONE_8K_WAV)).unwrap();
        assert!(std::fs::read(&file).unwrap() == original);
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn y4m_frames_convert_to_rgb() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        let u = url(&server, Scheme::Tcp, samples::CLIP_Y4M);
        let sink = format!("frames:{}", dir.path().display());
        let (report, _) = play_at(&u, &pinned(&server), &[sink.as_str()]).await;
        assert_eq!(report.played, u64::from(samples::Y4M_FRAMES));
        assert_eq!(pngs_in(dir.path()), samples::Y4M_FRAMES as usize);
        for i in [0, 7, 25, 49] {
            assert_eq!(png_frame_number(dir.path(), i), Some(i as u32), "frame {i}");
        }
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_render_the_stream_says_so() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let session = Session::connect(&url(&server, Scheme::Tcp, ""), &pinned(&server))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = PlayOptions {
            sinks: vec![Spec::Wav(dir.path().join("x.wav"))],
            ..PlayOptions::default()
        };
        let e = play(&session, samples::CLIP_MJPEG, &opts)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wav sink plays audio"), "{e}");
        let opts = PlayOptions::default();
        let e = play(&session, "no-such-file.wav", &opts).await.unwrap_err();
        assert!(e.code().is_some(), "{e}");
        // The session is still usable after both refusals.
        let opts = PlayOptions {
            sinks: vec![format!("frames:{}", dir.path().display()).parse().unwrap()],
            ..PlayOptions::default()
        };
        let report = play(&session, samples::TESTCARD_PNG, &opts).await.unwrap();
        assert_eq!(report.played, 1);
        let got = image::open(frame_path(dir.path(), 0)).unwrap().to_rgba8();
        let want = image::open(samples().join(samples::TESTCARD_PNG))
            .unwrap()
            .to_rgba8();
        assert!(got == want, "the image is written as it was served");
        session.close().await;
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

// ---- the binary ----

/// Runs `chunkcast play ARGS` with its stdout piped into `consumer`; returns both outputs.
async fn pipe_into(args: Vec<String>, mut consumer: Command) -> (Output, Output) {
    tokio::task::spawn_blocking(move || {
        let mut player = bin()
            .arg("play")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = player.stdout.take().unwrap();
        let consumer = consumer
            .stdin(Stdio::from(stdout))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let player = wait_bounded(player, Duration::from_secs(40));
        let consumer = wait_bounded(consumer, Duration::from_secs(10));
        (player, consumer)
    })
    .await
    .unwrap()
}

/// The JSON statistics line has the documented keys (a string check: no serde here).
fn assert_stats_json(line: &str, transport: &str) {
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(
        line.starts_with(&format!("{{\"transport\":\"{transport}\",")),
        "{line}"
    );
    for key in [
        "codec",
        "interrupted",
        "elapsed_us",
        "startup_delay_us",
        "underruns",
        "underrun_time_us",
        "late_drops",
        "played",
        "concealed",
        "jitter_p99_us",
        "bitrate_bps",
    ] {
        assert!(line.contains(&format!("\"{key}\":")), "no {key} in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcm_on_stdout_decodes_with_ffmpeg_sample_for_sample() {
    if !require_tool("ffmpeg", "apt-get install ffmpeg") {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        let decoded = dir.path().join("decoded.wav");
        let u = url(&server, Scheme::Tcp, samples::TONE_8K_WAV);
        let args = vec![
            u.to_string(),
            "--sink".into(),
            "pcm:-".into(),
            "--stats".into(),
            "json".into(),
            // The pipe's format is the point here, not the jitter: a generous buffer keeps a
            // loaded machine from cutting the audio.
            "--buffer-ms".into(),
            "400".into(),
        ];
        let mut ffmpeg = Command::new("ffmpeg");
        ffmpeg.args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "s16le",
            "-ar",
            "8000",
            "-ac",
            "1",
        ]);
        ffmpeg.args(["-i", "-", "-y"]).arg(&decoded);
        let (player, ffmpeg) = pipe_into(args, ffmpeg).await;
        let err = text(&player.stderr);
        assert!(player.status.success(), "{err}");
        assert!(ffmpeg.status.success(), "{}", text(&ffmpeg.stderr));
        assert!(err.contains("pcm: s16le 8000 Hz 1 ch"), "{err}");
        assert!(err.contains("ffplay -f s16le -ar 8000 -ac 1 -"), "{err}");
        // stdout carries the audio, so the statistics went to stderr.
        let json = err
            .lines()
            .find(|l| l.starts_with('{'))
            .expect("a JSON line on stderr");
        assert_stats_json(json, "tcp");
        assert!(json.contains("\"underruns\":0,"), "{json}");
        let (_, got) = pcm_i16(&decoded);
        let (_, src) = pcm_i16(&samples().join(samples::TONE_8K_WAV));
        assert_eq!(got.len(), src.len());
        assert!(got == src);
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_on_stdout_has_every_frame_for_ffprobe() {
    if !require_tool("ffprobe", "apt-get install ffmpeg") {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let u = url(&server, Scheme::Quic, samples::CLIP_MJPEG);
        let args = vec![
            u.to_string(),
            "--sink".into(),
            "mjpeg:-".into(),
            "--cert-sha256".into(),
            server.fingerprint().to_owned(),
            "--buffer-ms".into(),
            "400".into(),
        ];
        let mut ffprobe = Command::new("ffprobe");
        ffprobe.args(["-v", "error", "-f", "mjpeg", "-count_frames"]);
        ffprobe.args([
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            "-i",
            "-",
        ]);
        let (player, ffprobe) = pipe_into(args, ffprobe).await;
        let err = text(&player.stderr);
        assert!(player.status.success(), "{err}");
        assert!(
            err.contains("underruns       0 "),
            "the table goes to stderr: {err}"
        );
        assert_eq!(
            text(&ffprobe.stdout).trim(),
            "125",
            "{}",
            text(&ffprobe.stderr)
        );
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_is_one_line_on_stdout() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        let u = url(&server, Scheme::Tcp, samples::TESTCARD_PNG);
        let sink = format!("frames:{}", dir.path().display());
        let out = tokio::task::spawn_blocking(move || {
            let child = bin()
                .args(["play", &u.to_string(), "--sink", &sink, "--stats", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_bounded(child, Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let line = stdout.trim_end();
        assert_stats_json(line, "tcp");
        assert!(
            line.contains("\"played\":1,") && line.contains("\"interrupted\":false"),
            "{line}"
        );
        assert!(frame_path(dir.path(), 0).exists());
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn an_unknown_sink_is_a_usage_error() {
    let out = bin()
        .args(["play", "tcp://127.0.0.1:9/x.wav", "--sink", "speaker:left"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("unknown sink \"speaker\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = bin()
        .args([
            "play",
            "tcp://127.0.0.1:9/x.wav",
            "--sink",
            "pcm:-",
            "--sink",
            "mjpeg:-",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only one sink can write to stdout"),
        "{}",
        text(&out.stderr)
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_finishes_the_wav_and_prints_the_statistics() {
    tokio::time::timeout(LIMIT, async {
        let server = server().await;
        let dir = tempfile::tempdir().unwrap();
        let wav: PathBuf = dir.path().join("cut.wav");
        let u = url(&server, Scheme::Tcp, samples::SWEEP_48K_WAV);
        let sink = format!("wav:{}", wav.display());
        let out = tokio::task::spawn_blocking(move || {
            let child = bin()
                .args(["play", &u.to_string(), "--sink", &sink, "--stats", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // real time: the sweep plays in real time; Ctrl-C comes 1.5 s into it, and the
            // WAV must then hold about that much.
            std::thread::sleep(Duration::from_millis(1500));
            signal(&child, "INT");
            wait_bounded(child, Duration::from_secs(10))
        })
        .await
        .unwrap();
        // The shell's convention for Ctrl-C, after the statistics.
        assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("chunkcast:"),
            "{}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        let line = stdout.trim_end();
        assert_stats_json(line, "tcp");
        assert!(line.contains("\"interrupted\":true"), "{line}");
        let (spec, got) = pcm_i16(&wav);
        let seconds = got.len() as f64 / f64::from(spec.channels) / f64::from(spec.sample_rate);
        assert!((0.5..3.0).contains(&seconds), "{seconds} s written");
        assert!(!chunkcast_client::get::partial_path(&wav).exists());
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}
