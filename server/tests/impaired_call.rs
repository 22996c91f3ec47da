//! Issue 16's Done-when, measured between network namespaces: the two ends of a call each in a
//! namespace this test makes (the server beside the second end), the path between them
//! impaired in userspace by the TUN forwarder (`impair`: 30 ms ± 5 ms one way, 2 % loss,
//! seeded) and, for the capped tests, rate-limited by a `tbf` qdisc on the first end's uplink.
//! No netem (this kernel has none). Root only: skipped with a message elsewhere, a failure
//! under `CI`.
//!
//! The call ends run in this process, each on a thread that joined its namespace, so their
//! reports (per-second arrivals, the sender's level changes with their times) are at hand.
//! The tests take turns: they measure latency, so they must not share the two cores.
//!
//! `cargo test -p chunkcast-server --test impaired_call -- --nocapture` prints every figure;
//! the longer cycle is `… -- --ignored --nocapture`.

mod impair;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chunkcast_client::chat::{ChatLine, ChatOptions, ChatReport, run_chat};
use chunkcast_client::error::ClientError;
use chunkcast_client::live::{CallOptions, CallReport, PublishReport, TrackReport, call_with};
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::url::{Scheme, Url};
use chunkcast_media::adapt::Level;
use chunkcast_testkit::samples;
use impair::Impairment;
use impair::ns::{NsServer, namespaces_or_skip, server_in};
use impair::tun::{TunPath, run_in};
use tokio::sync::mpsc;

/// The path: 30 ms ± 5 ms one way, 2 % loss each way.
const fn impaired(seed: u64) -> Impairment {
    Impairment {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        loss: 0.02,
        reorder: 0.0,
        seed,
    }
}

/// The clip's video: 2 619 505 bytes in 5 s (125 frames at 25 fps), ~4.2 Mbit/s.
const VIDEO_BPS: u64 = 4_190_000;
/// The cap's queue: ~250 ms at half the video rate, a home router's.
const CAP_QUEUE: u64 = 64 << 10;

/// One test at a time: both measure latency on two cores.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn media() -> Vec<PathBuf> {
    let dir = samples();
    vec![
        dir.join(chunkcast_media_samples::CLIP_MJPEG),
        dir.join(chunkcast_media_samples::TONE_8K_WAV),
    ]
}

/// A call end in namespace `ns`.
async fn call_in(ns: &str, url: Url, connect: ConnectOptions, opts: CallOptions) -> CallReport {
    let from = media();
    run_in(
        ns,
        async move { call_with(&url, &connect, &from, &opts).await },
    )
    .await
    .unwrap_or_else(|e| panic!("the call end in {ns}: {e}"))
}

fn received<'a>(r: &'a CallReport, track: &str) -> &'a TrackReport {
    r.received.iter().find(|t| t.track == track).unwrap()
}

fn sent<'a>(r: &'a CallReport, track: &str) -> &'a PublishReport {
    let s = r.sent.iter().find(|s| s.track == track).unwrap();
    s.report.as_ref().unwrap()
}

/// The video frames that arrived in each second.
fn fps(t: &TrackReport) -> Vec<u64> {
    t.per_second.iter().map(|s| s.units).collect()
}

/// A chat writer in a namespace: lines in, the room's lines out.
struct Writer {
    input: mpsc::Sender<String>,
    output: mpsc::Receiver<ChatLine>,
    task: tokio::task::JoinHandle<Result<ChatReport, ClientError>>,
}

const CHAT_LINES: usize = 30;

fn writer(ns: &str, url: Url, connect: ConnectOptions, room: &'static str) -> Writer {
    let (input, lines) = mpsc::channel(CHAT_LINES);
    let (out, output) = mpsc::channel(4 * CHAT_LINES);
    let fut =
        async move { run_chat(&url, &connect, room, lines, out, &ChatOptions::default()).await };
    let task = tokio::spawn(run_in(ns, fut));
    Writer {
        input,
        output,
        task,
    }
}

/// Reads `n` lines; after the `cut_after`-th, runs `cut` once.
async fn read(w: &mut Writer, n: usize, cut_after: usize, cut: impl Fn()) -> Vec<ChatLine> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(w.output.recv().await.expect("the chat delivers every line"));
        if got.len() == cut_after {
            cut();
        }
    }
    got
}

/// Every line once, in the order written, in one room order for both.
fn check_chat(seen_a: &[ChatLine], seen_b: &[ChatLine]) {
    for seen in [seen_a, seen_b] {
        let seqs: Vec<u64> = seen.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (1..=2 * CHAT_LINES as u64).collect::<Vec<_>>());
        assert!(seen.iter().all(|l| l.missed == 0));
        for w in ["a", "b"] {
            let theirs: Vec<&str> = seen
                .iter()
                .map(|l| l.text.as_str())
                .filter(|t| t.starts_with(w))
                .collect();
            let written: Vec<String> = (0..CHAT_LINES).map(|i| format!("{w}{i}")).collect();
            assert_eq!(theirs, written, "{w}'s lines");
        }
    }
    let texts = |s: &[ChatLine]| s.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(seen_a), texts(seen_b), "one room order");
}

/// Kills end A's TCP connections to the server (`ss -K`: the kernel aborts them, as a
/// middlebox's reset would), forcing the chat to connect again.
fn cut_tcp(path: &TunPath, server: &NsServer) {
    let ns = path.client_netns().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-K", "dst"])
        .arg(server.tcp.ip().to_string())
        .args(["dport", "=", &server.tcp.port().to_string()])
        .output()
        .expect("running ss");
    assert!(
        out.status.success(),
        "ss -K: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lossy path: A's audio reaches B (and B's reaches A) as QUIC datagrams with one-way p99
/// under 150 ms, every loss counted and concealed; video keeps flowing both ways; and a chat
/// beside the call (over TCP, across the same path) whose connection is killed mid-way
/// delivers every line once, in order, to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_namespaces_keeps_audio_under_150_ms_and_chat_whole() {
    let _turn = TURN.lock().await;
    let Some(path) = namespaces_or_skip(TunPath::between(impaired(16)).await) else {
        return;
    };
    let server = server_in(&path, samples()).await;
    let (a_ns, b_ns) = (
        path.client_netns().unwrap().to_owned(),
        path.netns().to_owned(),
    );
    let room = "call/netns";
    let quic = server.url(Scheme::Quic, room);
    let tcp = server.url(Scheme::Tcp, room);

    let mut chat_a = writer(&a_ns, tcp.clone(), server.opts.clone(), room);
    let mut chat_b = writer(&b_ns, tcp, server.opts.clone(), room);
    let (ai, bi) = (chat_a.input.clone(), chat_b.input.clone());
    let typing = tokio::spawn(async move {
        for i in 0..CHAT_LINES {
            ai.send(format!("a{i}")).await.unwrap();
            bi.send(format!("b{i}")).await.unwrap();
        }
    });
    let cut = AtomicBool::new(false);
    let opts = CallOptions::default();
    let (a, b, (seen_a, seen_b)) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            call_in(&a_ns, quic.clone(), server.opts.clone(), opts.clone()),
            call_in(&b_ns, quic.clone(), server.opts.clone(), opts.clone()),
            async {
                tokio::join!(
                    read(&mut chat_a, 2 * CHAT_LINES, 20, || {
                        if !cut.swap(true, Ordering::Relaxed) {
                            cut_tcp(&path, &server);
                        }
                    }),
                    read(&mut chat_b, 2 * CHAT_LINES, usize::MAX, || {})
                )
            }
        )
    })
    .await
    .expect("the call and the chat end within a minute");
    typing.await.unwrap();
    drop((chat_a.input, chat_b.input));
    let chat_a = chat_a.task.await.unwrap().unwrap();
    let chat_b = chat_b.task.await.unwrap().unwrap();
    let (to_server, to_client) = path.stats();

    let (heard, back) = (received(&b, "audio"), received(&a, "audio"));
    let (seen, seen_back) = (received(&b, "video"), received(&a, "video"));
    let (a_audio, a_video, b_video) = (sent(&a, "audio"), sent(&a, "video"), sent(&b, "video"));
    let units = |r: &PublishReport| r.units_sent + r.units_dropped;
    eprintln!(
        "audio a→b: {} sent ({} as datagrams), {} received, {} lost, {} late, {} concealed, \
         p50 {:?} p95 {:?} p99 {:?} max {:?}\n\
         audio b→a: {} received, {} lost, {} concealed, p99 {:?} max {:?}\n\
         video a→b: {} of {} units sent (lowest level {}), {} chunks received, p99 {:?}, \
         frames/s {:?}\n\
         video b→a: {} of {} units sent (lowest level {}), {} chunks received, p99 {:?}, \
         frames/s {:?}\n\
         chat: a {chat_a:?}, b {chat_b:?}\n\
         path a→server {to_server:?}, server→a {to_client:?}",
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
        back.chunks,
        back.lost,
        back.concealed,
        back.latency_p99,
        back.latency_max,
        a_video.units_sent,
        units(a_video),
        a_video.lowest_level.name(),
        seen.chunks,
        seen.latency_p99,
        fps(seen),
        b_video.units_sent,
        units(b_video),
        b_video.lowest_level.name(),
        seen_back.chunks,
        seen_back.latency_p99,
        fps(seen_back),
    );
    assert!(
        to_server.lost > 0 && to_client.lost > 0,
        "the path must lose both ways: {to_server:?} {to_client:?}"
    );
    assert!(
        a_audio.datagrams * 10 >= a_audio.chunks * 9,
        "audio went as datagrams: {} of {}",
        a_audio.datagrams,
        a_audio.chunks
    );
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
    for (dir, t) in [("a→b", heard), ("b→a", back)] {
        assert!(
            t.latency_p99 < Duration::from_millis(150),
            "audio {dir} p99 {:?}",
            t.latency_p99
        );
    }
    // Flowing: frames arrived in every second of the clip, each way, and at least a fifth of
    // them (QUIC counts this path's reordering as loss; the call may step its video down).
    for (dir, t, s) in [("a→b", seen, a_video), ("b→a", seen_back, b_video)] {
        let f = fps(t);
        assert!(
            f.len() >= 5 && f[..5].iter().all(|&n| n > 0),
            "video {dir} froze: frames/s {f:?}"
        );
        assert!(
            f.iter().sum::<u64>() * 5 >= units(s),
            "video {dir}: {f:?} of {} units",
            units(s)
        );
    }
    assert!(chat_a.connections >= 2, "the chat was cut: {chat_a:?}");
    assert_eq!(
        (chat_a.sent, chat_b.sent),
        (CHAT_LINES as u64, CHAT_LINES as u64)
    );
    check_chat(&seen_a, &seen_b);
}

/// The cap's queue, sampled every 100 ms while capped: its largest once the call had 2 s to
/// adapt, then its mean over the 1.5 s before the last 1.5 s and over the last 1.5 s.
fn queue_phases(backlog: &[u64]) -> (u64, u64, u64) {
    let adapted = backlog.get(20..).unwrap_or(&[]);
    let n = backlog.len();
    let later = &backlog[n.saturating_sub(15)..];
    let late = &backlog[n.saturating_sub(30)..n.saturating_sub(15)];
    (
        adapted.iter().copied().max().unwrap_or(0),
        mean_of(late),
        mean_of(later),
    )
}

fn mean_of(v: &[u64]) -> u64 {
    v.iter().sum::<u64>() / v.len().max(1) as u64
}

/// Whether the cap's queue was still climbing at the end of the cap: the mean of its last
/// 0.7 s above that of the 0.8 s before by more than `margin` (a sender even 3 % over the cap
/// climbs by more).
fn still_climbing(backlog: &[u64], margin: u64) -> bool {
    let n = backlog.len();
    let first = &backlog[n.saturating_sub(15)..n.saturating_sub(7)];
    let last = &backlog[n.saturating_sub(7)..];
    mean_of(last) > mean_of(first) + margin
}

/// When the sender's level was `level` first at or after `from` (both on the sender's clock).
fn first_at(r: &PublishReport, from: Instant, pred: impl Fn(Level) -> bool) -> Option<Instant> {
    let start = r.started_at.unwrap();
    r.level_log
        .iter()
        .map(|(t, l)| (start + *t, *l))
        .find(|(t, l)| *t >= from && pred(*l))
        .map(|(t, _)| t)
}

/// The level in force at `at`.
fn level_at(r: &PublishReport, at: Instant) -> Level {
    let start = r.started_at.unwrap();
    r.level_log
        .iter()
        .take_while(|(t, _)| start + *t <= at)
        .last()
        .map_or(Level::Full, |(_, l)| *l)
}

/// A's uplink capped at half the video rate from `cap` to `lift` after the call starts, on
/// `imp`. Prints the figures and asserts the bounds on them: a step down within 2 s,
/// video p99 under 300 ms, no growing queue, full video within 5 s of the lift.
async fn capped_call(imp: Impairment, passes: u32, cap: Duration, lift: Duration) {
    let Some(path) = namespaces_or_skip(TunPath::between(imp).await) else {
        return;
    };
    let server = server_in(&path, samples()).await;
    let (a_ns, b_ns) = (
        path.client_netns().unwrap().to_owned(),
        path.netns().to_owned(),
    );
    let url = server.url(Scheme::Quic, "call/capped");
    let opts = CallOptions {
        passes: Some(passes),
        ..Default::default()
    };
    let rate = VIDEO_BPS / 2;
    let path = Arc::new(path);
    let t0 = Instant::now();
    // Applies the cap and lifts it on time, sampling the cap's queue every 100 ms meanwhile.
    let schedule = {
        let path = path.clone();
        async move {
            tokio::time::sleep_until((t0 + cap).into()).await;
            path.cap_uplink(rate, CAP_QUEUE).expect("tbf");
            let capped_at = Instant::now();
            let mut backlog = Vec::new();
            while t0.elapsed() < lift {
                tokio::time::sleep(Duration::from_millis(100)).await;
                backlog.push(path.uplink_backlog().expect("tc -s").0);
            }
            let drops = path.uplink_backlog().expect("tc -s").1;
            path.lift_cap().expect("tc qdisc del");
            (capped_at, Instant::now(), backlog, drops)
        }
    };
    let total = Duration::from_secs(5 * u64::from(passes) + 40);
    let (a, b, (capped_at, lifted_at, backlog, drops)) = tokio::time::timeout(total, async {
        tokio::join!(
            call_in(&a_ns, url.clone(), server.opts.clone(), opts.clone()),
            call_in(&b_ns, url.clone(), server.opts.clone(), opts.clone()),
            schedule
        )
    })
    .await
    .expect("the call ends in time");
    let video = sent(&a, "video");
    let seen = received(&b, "video");
    let heard = received(&b, "audio");
    let ms = |t: Instant| t.saturating_duration_since(t0).as_millis();
    let levels: Vec<(u128, &str)> = video
        .level_log
        .iter()
        .map(|(t, l)| (ms(video.started_at.unwrap() + *t), l.name()))
        .collect();
    // The receiver's seconds, on the test's clock.
    let first = seen.first_at.unwrap();
    let half = backlog.len() / 2;
    let down_after = first_at(video, capped_at, |l| l > Level::Full)
        .map(|t| t.saturating_duration_since(capped_at).as_millis());
    let up_after = first_at(video, lifted_at, |l| l == Level::Full)
        .or_else(|| (level_at(video, lifted_at) == Level::Full).then_some(lifted_at))
        .map(|t| t.saturating_duration_since(lifted_at).as_millis());
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len().max(1) as u64;
    eprintln!(
        "cap {} bit/s from {} ms to {} ms (queue {CAP_QUEUE} B; {drops} packets dropped by it)\n\
         video a→b: {} of {} units sent ({} skipped behind an unsent one, {} reset), \
         level changes (ms from start, level) {levels:?}\n\
         stepped down {down_after:?} ms after the cap, full video {up_after:?} ms after the lift\n\
         received video: p50 {:?} p95 {:?} p99 {:?} max {:?}; {} lost, {} overtaken (not shown); \
         frames/s from {} ms: {:?}\n\
         latency max per second (ms): {:?}\n\
         audio a→b while video capped: {} sent ({} as datagrams), {} received, p50 {:?} p99 {:?} \
         max {:?}, {} lost, {} late\n\
         cap queue (bytes, every 100 ms): first half mean {}, second half mean {}, max {}; \
         once adapted: max {}, last 3 s' means {} then {}",
        rate,
        ms(capped_at),
        ms(lifted_at),
        video.units_sent,
        video.units_sent + video.units_dropped,
        video.units_skipped,
        video.units_reset,
        seen.latency_p50,
        seen.latency_p95,
        seen.latency_p99,
        seen.latency_max,
        seen.lost,
        seen.overtaken,
        ms(first),
        fps(seen),
        seen.per_second
            .iter()
            .map(|s| s.latency_max.as_millis())
            .collect::<Vec<_>>(),
        sent(&a, "audio").chunks,
        sent(&a, "audio").datagrams,
        heard.chunks,
        heard.latency_p50,
        heard.latency_p99,
        heard.latency_max,
        heard.lost,
        heard.late,
        mean(&backlog[..half]),
        mean(&backlog[half..]),
        backlog.iter().max().copied().unwrap_or(0),
        queue_phases(&backlog).0,
        queue_phases(&backlog).1,
        queue_phases(&backlog).2,
    );
    if imp.loss == 0.0 && drops == 0 {
        // Nothing on the path dropped a packet, so every audio chunk arrives (the receiver
        // counts the channel's init and end too); the capped uplink's bursts reorder some
        // datagrams (3–9 %), which the server's relay once dropped.
        let audio = sent(&a, "audio");
        assert!(
            heard.chunks >= audio.chunks,
            "audio lost although the path lost none: {} sent, {} received",
            audio.chunks,
            heard.chunks
        );
    }
    let p99_bound = Duration::from_millis(300);
    // Adapts within 2 s: the frame rate is down (a level below full) by then.
    let down = first_at(video, capped_at, |l| l > Level::Full)
        .or_else(|| (level_at(video, capped_at) > Level::Full).then_some(capped_at));
    let down = down.expect("the video never stepped down under the cap");
    assert!(
        down.duration_since(capped_at) <= Duration::from_secs(2),
        "stepped down {} ms after the cap",
        down.duration_since(capped_at).as_millis()
    );
    assert!(video.units_dropped > 0, "frames were dropped at the sender");
    // The receiver sees it: fewer frames a second while capped than before the cap.
    let second = |t: Instant| t.saturating_duration_since(first).as_secs() as usize;
    let f = fps(seen);
    let before = f[..second(capped_at).min(f.len())].iter().copied().max();
    let during = f
        .get(second(capped_at) + 2..second(lifted_at))
        .and_then(|s| s.iter().copied().min());
    // Asked of a call at full video when the cap came: on the lossy path the call may have
    // stepped down before it (6 frames/s seen before the cap in one run of 5).
    if level_at(video, capped_at) == Level::Full {
        assert!(
            matches!((before, during), (Some(b), Some(d)) if d < b),
            "the frame rate seen did not drop: {f:?}"
        );
    }
    assert!(
        seen.latency_p99 < p99_bound,
        "video p99 {:?}",
        seen.latency_p99
    );
    // No growing queue: once the call has adapted (2 s into the cap) the cap's queue stays
    // under half its limit (125 ms at the capped rate), and it is not both longer in the last
    // 1.5 s of the cap than in the 1.5 s before (beyond a few packets) and still climbing at
    // the end; and the video's latency in the last capped second is within the budget. A
    // level that the cap just carries keeps a standing queue of 40–90 ms: bounded, so not
    // growing. A probe up to it can come to rest inside the last 1.5 s, making them longer
    // than the 1.5 s before while the queue is flat by their end (a CI run: 3.9 kB, then
    // 15.4 kB, of which 14.4 kB in the first 0.8 s and 16.6 kB in the last 0.7 s).
    let (adapted, late, later) = queue_phases(&backlog);
    let grew = later > late + 4_500 && still_climbing(&backlog, 4_500);
    assert!(
        adapted <= CAP_QUEUE / 2 && !grew,
        "the queue grew: {backlog:?}"
    );
    let last_capped = seen.per_second.get(second(lifted_at).saturating_sub(1));
    assert!(
        last_capped.is_some_and(|s| s.latency_max < Duration::from_millis(300)),
        "latency at the end of the cap: {last_capped:?}"
    );
    // The receiver sees the frame rate come back after the lift: above anything it saw
    // while capped.
    let capped_max = f
        .get(second(capped_at) + 2..second(lifted_at).min(f.len()))
        .and_then(|s| s.iter().copied().max())
        .unwrap_or(0);
    let back = f
        .get(second(lifted_at) + 1..f.len())
        .and_then(|s| s.iter().copied().max())
        .unwrap_or(0);
    assert!(back > capped_max, "frames/s after the lift: {f:?}");
    // Full video within 5 s of the lift; the receiver sees (nearly) full frame rate. (It
    // need not hold: a later probe may step down again, as the BBR window follows.)
    let up = first_at(video, lifted_at, |l| l == Level::Full)
        .or_else(|| (level_at(video, lifted_at) == Level::Full).then_some(lifted_at))
        .expect("back at full video after the lift");
    assert!(
        up.duration_since(lifted_at) <= Duration::from_secs(5),
        "full video {} ms after the lift",
        up.duration_since(lifted_at).as_millis()
    );
    // On the lossy path about one frame in three loses a packet on one of its two legs
    // and comes after the next one (not shown) or not at all: 13–20 frames/s at full
    // video before the cap. After the lift it sees as many again.
    let enough = if imp.loss == 0.0 {
        20
    } else {
        before.unwrap_or(0) * 4 / 5
    };
    assert!(back >= enough, "frames/s after the lift: {f:?}");
}

/// The capped cycle in CI's time: 20 s of call, capped from 2 s to 8 s, on 30 ms ± 5 ms
/// without random loss (with it, see `a_call_on_the_lossy_path_adapts_to_a_capped_link_and_recovers`), with the
/// issue's bounds (full video 0.6–2.0 s after the lift in 7 runs, p99
/// 249–285 ms, since QUIC's time threshold stopped taking jitter for loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_namespaces_adapts_to_a_capped_link_and_recovers() {
    let _turn = TURN.lock().await;
    let imp = Impairment {
        loss: 0.0,
        ..impaired(161)
    };
    capped_call(imp, 4, Duration::from_secs(2), Duration::from_secs(8)).await;
}

/// The same for longer, with the bounds: 40 s of call, capped from 5 s to 25 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "40 s of call: cargo test -p chunkcast-server --test impaired_call -- --ignored --nocapture"]
async fn a_long_call_between_namespaces_adapts_to_a_capped_link_and_recovers() {
    let _turn = TURN.lock().await;
    let imp = Impairment {
        loss: 0.0,
        ..impaired(162)
    };
    capped_call(imp, 8, Duration::from_secs(5), Duration::from_secs(25)).await;
}

/// The capped cycle on the whole path, 2 % loss included, with the bounds.
/// A call's video goes a unit per QUIC stream (a lost packet holds back its
/// own frame only), its send queue holds 20 ms beyond a round trip, and the adaptation takes
/// neither skipped units without queueing nor the coarse loss rate of a low level for
/// congestion: video p99 200–264 ms, a step down 342–453 ms after the cap, full video 0.9–2.5 s
/// after the lift in 8 runs (BENCHMARKS.md, "A unit per QUIC stream"). Before, skips on the
/// lossy path stepped the call down at random: full video came back 0.9–6.0 s after the lift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_the_lossy_path_adapts_to_a_capped_link_and_recovers() {
    let _turn = TURN.lock().await;
    capped_call(
        impaired(163),
        3,
        Duration::from_secs(2),
        Duration::from_secs(8),
    )
    .await;
}
