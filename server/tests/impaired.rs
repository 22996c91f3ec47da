//! QUIC on an impaired path (issue 19, defect 8): with quinn's RFC 9002 defaults a jittery path
//! made QUIC 18–21× slower than TCP and realtime audio over QUIC late-dropped nearly every unit.
//!
//! The path is impaired in userspace by `impair` (this kernel has no netem): a UDP relay for
//! the QUIC playback test, and two TUN devices into a namespace this test creates for the
//! TCP/QUIC comparison (root only: skipped with a message elsewhere, a failure under `CI`).
//! Every impairment is seeded.
//!
//! The measurements behind BENCHMARKS.md ("QUIC on an impaired path") are the ignored
//! `measure_*` tests; they print one line per run and read the QUIC tuning from the
//! environment (`CHUNKCAST_QUIC_CONGESTION`, `..._PACKET_THRESHOLD`, `..._TIME_THRESHOLD`),
//! which the in-process client and the server child both see. `IMPAIRED_SERVER_LOG=1` shows
//! the server's log (with `RUST_LOG=quinn_proto=trace`, every loss quinn declares).

mod impair;

use std::path::Path;
use std::time::{Duration, Instant};

use chunkcast_client::get::{GetOptions, get};
use chunkcast_client::play::{PlayOptions, PlayReport, play};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};
use chunkcast_media_samples::SWEEP_48K_WAV;
use impair::ns::{namespaces_or_skip, server_in};
use impair::tun::TunPath;
use impair::{Impairment, Line, QUEUE_LIMIT, UdpRelay};

use chunkcast_testkit::{pinned, samples, server_with, url_at};

const SEED: u64 = 19;

/// Connects, downloads the 1.9 MB WAV sample, verifies it and closes. Returns the time until
/// the verified file was under its name (connection set-up included), and the time the close
/// took after that (QUIC's close waits for the connection's draining period, up to 1 s).
async fn timed_get(url: &Url, opts: &ConnectOptions, out: &Path) -> (Duration, Duration) {
    let _ = std::fs::remove_file(out);
    let start = Instant::now();
    let s = Session::connect(url, opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url:?}: {e}"));
    let r = get(
        &s,
        SWEEP_48K_WAV,
        &GetOptions {
            out: Some(out.to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("get over {:?}: {e}", url.scheme));
    let took = start.elapsed();
    s.close().await;
    let close = start.elapsed() - took;
    assert!(r.verified, "the digest was not verified");
    assert_eq!(
        r.len,
        std::fs::metadata(samples().join(SWEEP_48K_WAV))
            .unwrap()
            .len()
    );
    (took, close)
}

/// Plays the 10 s WAV sample in real time (default 100 ms buffer, no sink).
async fn timed_play(url: &Url, opts: &ConnectOptions) -> PlayReport {
    let s = Session::connect(url, opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url:?}: {e}"));
    let r = play(&s, SWEEP_48K_WAV, &PlayOptions::default())
        .await
        .unwrap_or_else(|e| panic!("play over {:?}: {e}", url.scheme));
    s.close().await;
    r
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The user-visible promise: on 30 ms ± 2 ms (no loss) a QUIC download takes at most 1.5×
/// what TCP takes on the same path in the same run. quinn's defaults took 18–21×: every
/// reordering counted as a loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_download_keeps_up_with_tcp_on_a_jittery_path() {
    let Some(path) = namespaces_or_skip(TunPath::new(Impairment::jittery(SEED)).await) else {
        return;
    };
    let server = server_in(&path, samples()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep.wav");
    let (mut tcp, mut quic) = (Vec::new(), Vec::new());
    let rounds = async {
        // Alternated, so that a slow moment of the machine falls on both; medians of 5.
        for _ in 0..5 {
            tcp.push(
                timed_get(&server.url(Scheme::Tcp, ""), &server.opts, &out)
                    .await
                    .0,
            );
            quic.push(
                timed_get(&server.url(Scheme::Quic, ""), &server.opts, &out)
                    .await
                    .0,
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(180), rounds)
        .await
        .expect("ten 1.9 MB downloads finish within 3 minutes");
    let (to_server, to_client) = path.stats();
    eprintln!("tcp {tcp:?}\nquic {quic:?}\npath {to_server:?} {to_client:?}");
    assert!(
        to_client.reordered > 100,
        "the path must reorder for this test to mean anything: {to_client:?}"
    );
    let (tcp, quic) = (median(tcp), median(quic));
    assert!(
        quic.as_secs_f64() <= 1.5 * tcp.as_secs_f64(),
        "QUIC took {quic:?}, more than 1.5× TCP's {tcp:?}, on 30 ms ± 2 ms"
    );
}

/// The user-visible promise: 10 s of 48 kHz stereo audio played in real time over QUIC on
/// 30 ms ± 10 ms with 2 % loss and 1 % reordering loses under 1 % of its units. quinn's
/// defaults late-dropped 497 of 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_realtime_audio_plays_on_a_lossy_jittery_path() {
    let server = server_with(|_| {}).await;
    let relay = UdpRelay::start(server.quic_addr(), Impairment::lossy(SEED))
        .await
        .unwrap();
    let url = url_at(relay.addr(), Scheme::Quic, "");
    // As `chunkcast play` connects: a realtime session (small packets even through this
    // loopback relay).
    let opts = ConnectOptions {
        realtime: true,
        ..pinned(&server)
    };
    let report = tokio::time::timeout(Duration::from_secs(60), timed_play(&url, &opts))
        .await
        .expect("10 s of audio plays within a minute");
    let (to_server, to_client) = relay.stats();
    eprintln!("{}\npath {to_server:?} {to_client:?}", report.to_json());
    assert!(
        to_client.lost > 0 && to_client.reordered > 0,
        "the path must lose and reorder for this test to mean anything: {to_client:?}"
    );
    assert!(!report.interrupted);
    let units = report.stats.received.max(500);
    assert!(
        report.stats.late_drops * 100 < units,
        "{} of {units} audio units arrived too late over QUIC",
        report.stats.late_drops
    );
    assert!(report.played >= 495, "played {}", report.played);
    server.shutdown().await;
}

/// The path model itself: seeded, delays within `delay ± jitter`, the asked loss rate, a
/// bounded queue, and reordering.
#[tokio::test(start_paused = true)]
async fn the_impaired_line_is_seeded_and_bounded() {
    let imp = Impairment::lossy(7);
    let now = tokio::time::Instant::now();
    let run = || {
        let mut line = Line::new(imp, 7);
        let fates: Vec<_> = (0..100_000).map(|_| line.admit(now, 0)).collect();
        (fates, line.stats())
    };
    let (a, stats) = run();
    assert_eq!(a, run().0, "the same seed gives the same path");
    let lo = now + imp.delay - imp.jitter;
    let hi = now + imp.delay + imp.jitter;
    let undelayed = a.iter().flatten().filter(|&&t| t == now).count();
    assert!(
        a.iter()
            .flatten()
            .all(|&t| t == now || (lo..=hi).contains(&t)),
        "a delay outside 30 ± 10 ms"
    );
    let lost = a.iter().filter(|f| f.is_none()).count();
    assert!((1_700..2_300).contains(&lost), "lost {lost} of 100 000");
    assert!((800..1_200).contains(&undelayed), "{undelayed} undelayed");
    assert_eq!(stats.lost, lost as u64);
    assert!(stats.reordered > 1_000, "{stats:?}");

    let mut line = Line::new(Impairment::jittery(1), 1);
    assert!(line.admit(now, QUEUE_LIMIT - 1).is_some());
    assert_eq!(line.admit(now, QUEUE_LIMIT), None, "a full queue drops");
    assert_eq!(line.stats().overflow, 1);
}

/// Runs of the 1.9 MB download over TCP and QUIC on 30 ms ± 2 ms, printed one per line with
/// the QUIC tuning in force (BENCHMARKS.md). `IMPAIRED_RUNS` runs of each (default 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_download_on_a_jittery_path() {
    let Some(path) = namespaces_or_skip(TunPath::new(Impairment::jittery(SEED)).await) else {
        return;
    };
    let server = server_in(&path, samples()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep.wav");
    let tuning = chunkcast_transport::quic::Tuning::from_env().unwrap();
    let (mut tcp, mut quic, mut close) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        tcp.push(
            timed_get(&server.url(Scheme::Tcp, ""), &server.opts, &out)
                .await
                .0,
        );
        let (took, closing) = timed_get(&server.url(Scheme::Quic, ""), &server.opts, &out).await;
        quic.push(took);
        close.push(closing);
    }
    let ms = |v: &[Duration]| {
        let v: Vec<_> = v.iter().map(|d| d.as_millis()).collect();
        format!("{v:?}")
    };
    println!(
        "download path=30ms±2ms {tuning:?} tcp_median_s={:.3} quic_median_s={:.3} quic_close_median_s={:.3} tcp_ms={} quic_ms={}",
        median(tcp.clone()).as_secs_f64(),
        median(quic.clone()).as_secs_f64(),
        median(close).as_secs_f64(),
        ms(&tcp),
        ms(&quic),
    );
}

/// Realtime playback of the WAV over TCP and QUIC on 30 ms ± 10 ms, 2 % loss, 1 %
/// reordering (the same TUN path for both), printed one per line (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_playback_on_a_lossy_path() {
    let Some(path) = namespaces_or_skip(TunPath::new(Impairment::lossy(SEED)).await) else {
        return;
    };
    let server = server_in(&path, samples()).await;
    let tuning = chunkcast_transport::quic::Tuning::from_env().unwrap();
    for _ in 0..runs().min(3) {
        for scheme in [Scheme::Tcp, Scheme::Quic] {
            let r = timed_play(&server.url(scheme, ""), &server.opts).await;
            println!(
                "play path=30ms±10ms,2%loss,1%reorder {tuning:?} transport={scheme:?} late_drops={} played={} received={} underruns={} jitter_p99_ms={:.1}",
                r.stats.late_drops,
                r.played,
                r.stats.received,
                r.stats.underruns,
                r.stats.jitter_p99.as_secs_f64() * 1e3
            );
        }
    }
}

fn runs() -> usize {
    std::env::var("IMPAIRED_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Issue 16's first path for a call: one side behind 30 ms ± 5 ms with 2 % loss each way.
/// Its audio goes as QUIC datagrams, so a lost packet costs one concealed frame rather than a
/// retransmission every later frame waits behind: the other side's audio one-way latency p99
/// stays under 150 ms, the losses are counted (concealed), and video keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_datagram_audio_holds_its_latency_on_a_lossy_path() {
    use chunkcast_client::live::{CallOptions, call_with};
    let server = server_with(|_| {}).await;
    let path = Impairment {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        loss: 0.02,
        reorder: 0.0,
        seed: SEED,
    };
    let relay = UdpRelay::start(server.quic_addr(), path).await.unwrap();
    let connect = pinned(&server);
    let room = "call/lossy";
    let a_url = url_at(relay.addr(), Scheme::Quic, room);
    let b_url = chunkcast_testkit::url(&server, Scheme::Quic, room);
    let dir = samples();
    let from = vec![
        dir.join(chunkcast_media_samples::CLIP_MJPEG),
        dir.join(chunkcast_media_samples::TONE_8K_WAV),
    ];
    let opts = CallOptions::default();
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            call_with(&a_url, &connect, &from, &opts),
            call_with(&b_url, &connect, &from, &opts)
        )
    })
    .await
    .expect("the call ends within a minute");
    let (a, b) = (a.unwrap(), b.unwrap());
    let (to_server, to_client) = relay.stats();
    let a_audio = a.sent.iter().find(|s| s.track == "audio").unwrap();
    let a_audio = a_audio.report.as_ref().unwrap();
    let heard = b.received.iter().find(|t| t.track == "audio").unwrap();
    let seen = b.received.iter().find(|t| t.track == "video").unwrap();
    let back = a.received.iter().find(|t| t.track == "audio").unwrap();
    let a_video = a.sent.iter().find(|s| s.track == "video").unwrap();
    let a_video = a_video.report.as_ref().unwrap();
    eprintln!(
        "video a→b: {} of {} units sent, lowest level {}, {} changes",
        a_video.units_sent,
        a_video.units_sent + a_video.units_dropped,
        a_video.lowest_level.name(),
        a_video.level_changes
    );
    eprintln!(
        "audio a→b: {} chunks ({} as datagrams), received {}, lost {}, late {}, concealed {}, \
         p50 {:?} p95 {:?} p99 {:?} max {:?}; b→a audio p99 {:?} lost {}; video a→b {} chunks \
         p99 {:?}; path {to_server:?} {to_client:?}",
        a_audio.chunks,
        a_audio.datagrams,
        heard.chunks,
        heard.lost,
        heard.late,
        heard.concealed,
        heard.latency_p50,
        heard.latency_p95,
        heard.latency_p99,
        heard.latency_max,
        back.latency_p99,
        back.lost,
        seen.chunks,
        seen.latency_p99,
    );
    assert!(to_server.lost > 0, "the path must lose: {to_server:?}");
    assert!(
        a_audio.datagrams * 10 >= a_audio.chunks * 9,
        "audio went as datagrams: {} of {}",
        a_audio.datagrams,
        a_audio.chunks
    );
    // Which datagrams the seeded path drops depends on timing: over one run a direction may
    // lose none (a few per cent of 150), so the losses are counted over both directions.
    assert!(
        heard.lost + back.lost > 0,
        "losses are counted: a→b {}, b→a {}",
        heard.lost,
        back.lost
    );
    assert!(
        heard.concealed >= heard.lost && back.concealed >= back.lost,
        "every lost audio frame is concealed"
    );
    assert!(
        heard.latency_p99 < Duration::from_millis(150),
        "audio p99 {:?}",
        heard.latency_p99
    );
    // QUIC counts this path's reordering as loss, so the call may adapt its video down to a
    // quarter of the frame rate (48 of 124 units sent in one run): flowing means at least a
    // fifth of the clip's units arrive, not that none were dropped.
    assert!(
        seen.chunks * 5 >= a_video.units_sent + a_video.units_dropped,
        "video kept flowing: {} chunks of {} units",
        seen.chunks,
        a_video.units_sent + a_video.units_dropped
    );
    server.shutdown().await;
}
