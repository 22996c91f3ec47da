use std::time::{Duration, Instant};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn unit(seq: u64, pts_us: u64, duration_us: u32) -> Unit<u64> {
    Unit {
        seq,
        pts_us,
        duration_us,
        key: true,
        payload: seq,
    }
}

/// A 20 ms unit with seq `i` at pts `20 ms * i`.
fn u20(i: u64) -> Unit<u64> {
    unit(i, i * 20_000, 20_000)
}

/// Poll at `now` until Wait/Idle; returns the outputs and the terminal one.
fn drain(pb: &mut PlayoutBuffer<u64>, now: Instant) -> (Vec<Output<u64>>, Output<u64>) {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match pb.poll(now) {
            o @ (Output::Wait(_) | Output::Idle) => return (out, o),
            o => out.push(o),
        }
    }
    panic!("poll did not settle");
}

/// Follow Wait instants until Idle (or `limit` outputs), recording when each
/// output came out.
fn run_to_idle(pb: &mut PlayoutBuffer<u64>, mut now: Instant) -> Vec<(Instant, Output<u64>)> {
    let mut log = Vec::new();
    loop {
        let (outs, term) = drain(pb, now);
        log.extend(outs.into_iter().map(|o| (now, o)));
        match term {
            Output::Wait(at) => {
                assert!(at > now, "Wait must be in the future");
                now = at;
            }
            _ => return log,
        }
        assert!(log.len() < 1_000_000);
    }
}

fn played_pts(log: &[(Instant, Output<u64>)]) -> Vec<u64> {
    log.iter()
        .filter_map(|(_, o)| match o {
            Output::Play(u) => Some(u.pts_us),
            _ => None,
        })
        .collect()
}

fn conceals(log: &[(Instant, Output<u64>)]) -> Vec<(u64, u32, Concealment)> {
    log.iter()
        .filter_map(|(_, o)| match *o {
            Output::Conceal {
                pts_us,
                duration_us,
                kind,
            } => Some((pts_us, duration_us, kind)),
            _ => None,
        })
        .collect()
}

#[test]
fn idle_before_first_push() {
    let mut pb = PlayoutBuffer::<u64>::new(Config::default());
    assert_eq!(pb.poll(Instant::now()), Output::Idle);
    assert_eq!(pb.play_instant(0), None);
    assert_eq!(pb.stats().startup_delay, None);
}

#[test]
fn steady_on_time_releases_exactly_at_play_instant() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    let mut released = Vec::new();
    let mut now = t0;
    let mut i = 0;
    // Event loop: arrivals every 20 ms, wake-ups at Wait instants.
    while released.len() < 50 {
        let next_arrival = t0 + 20 * MS * i as u32;
        if i < 50 && next_arrival <= now {
            pb.push_sized(now, u20(i), 160);
            i += 1;
            if i == 50 {
                pb.end_of_stream();
            }
        }
        let (outs, term) = drain(&mut pb, now);
        for o in outs {
            match o {
                Output::Play(u) => released.push((u.pts_us, now)),
                other => panic!("unexpected {other:?}"),
            }
        }
        let arrival = (i < 50).then(|| t0 + 20 * MS * i as u32);
        now = match (term, arrival) {
            (Output::Wait(w), Some(a)) => w.min(a),
            (Output::Wait(w), None) => w,
            (Output::Idle, Some(a)) => a,
            (Output::Idle, None) => break,
            _ => unreachable!(),
        };
    }
    assert_eq!(released.len(), 50);
    for (k, &(pts, at)) in released.iter().enumerate() {
        assert_eq!(pts, k as u64 * 20_000);
        assert_eq!(at, t0 + 100 * MS + Duration::from_micros(pts));
        assert_eq!(pb.play_instant(pts), Some(at));
    }
    let s = pb.stats();
    assert_eq!(s.underruns, 0);
    assert_eq!(s.concealed, 0);
    assert_eq!(s.played, 50);
    assert_eq!(s.bytes, 50 * 160);
    assert_eq!(s.startup_delay, Some(100 * MS));
    assert_eq!(s.jitter_max, Duration::ZERO);
    // 160 bytes per 20 ms = 64 kbit/s.
    assert!((s.bitrate_bps - 64_000.0).abs() < 1e-6, "{}", s.bitrate_bps);
    assert_eq!(pb.poll(now + Duration::from_secs(10)), Output::Idle);
}

#[test]
fn reordering_within_window_plays_in_pts_order() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    for (k, i) in [0u64, 2, 1, 4, 3, 5].into_iter().enumerate() {
        pb.push_sized(t0 + MS * k as u32, u20(i), 0);
    }
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(
        played_pts(&log),
        [0, 20_000, 40_000, 60_000, 80_000, 100_000]
    );
    let s = pb.stats();
    assert_eq!(s.reordered, 2);
    assert_eq!(s.underruns, 0);
    assert_eq!(s.late_drops, 0);
}

#[test]
fn earlier_pts_than_the_anchor_still_plays_first() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.push_sized(t0, u20(1), 0);
    pb.push_sized(t0 + 5 * MS, u20(0), 0);
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(played_pts(&log), [0, 20_000]);
    // Unit 0 is due 20 ms before the anchor's own unit.
    assert_eq!(log[0].0, t0 + 80 * MS);
    assert_eq!(log[1].0, t0 + 100 * MS);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.push_sized(t0, u20(0), 0);
    pb.push_sized(t0, u20(1), 0);
    pb.push_sized(t0, u20(1), 0); // queued duplicate
    let (outs, _) = drain(&mut pb, t0 + 100 * MS);
    assert_eq!(outs, [Output::Play(u20(0))]);
    pb.push_sized(t0 + 101 * MS, u20(0), 0); // played duplicate
    pb.push_sized(t0 + 101 * MS, u20(2), 0);
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0 + 101 * MS);
    assert_eq!(played_pts(&log), [20_000, 40_000]);
    let s = pb.stats();
    assert_eq!(s.duplicates, 2);
    assert_eq!(s.late_drops, 0);
    assert_eq!(s.played, 3);
    assert_eq!(s.received, 5);
}

fn lose(config: Config, lost: &[u64], n: u64) -> (Vec<(Instant, Output<u64>)>, Stats) {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(config);
    for i in (0..n).filter(|i| !lost.contains(i)) {
        pb.push_sized(t0, u20(i), 0);
    }
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    (log, pb.stats())
}

#[test]
fn lost_audio_unit_is_concealed_with_silence() {
    let (log, s) = lose(Config::default(), &[2], 5);
    assert_eq!(played_pts(&log), [0, 20_000, 60_000, 80_000]);
    assert_eq!(conceals(&log), [(40_000, 20_000, Concealment::Silence)]);
    // The concealment is emitted when the missing unit was due.
    let t0 = log[0].0 - 100 * MS;
    assert!(matches!(log[2], (at, Output::Conceal { .. }) if at == t0 + 140 * MS));
    assert_eq!(s.underruns, 1);
    assert_eq!(s.underrun_time, 20 * MS);
    assert_eq!(s.concealed, 1);
}

#[test]
fn repeat_then_silence_is_cut_at_max_repeat() {
    let config = Config {
        conceal: Conceal::RepeatThenSilence {
            max_repeat: 30 * MS,
        },
        ..Config::default()
    };
    let (log, s) = lose(config, &[2, 3], 6);
    assert_eq!(
        conceals(&log),
        [
            (40_000, 20_000, Concealment::Repeat),
            (60_000, 10_000, Concealment::Repeat),
            (70_000, 10_000, Concealment::Silence),
        ]
    );
    assert_eq!(s.underruns, 1);
    assert_eq!(s.underrun_time, 40 * MS);
    // A short gap is repeated only; the budget restarts with each underrun.
    let (log, s) = lose(config, &[1, 3], 5);
    assert_eq!(
        conceals(&log),
        [
            (20_000, 20_000, Concealment::Repeat),
            (60_000, 20_000, Concealment::Repeat),
        ]
    );
    assert_eq!(s.underruns, 2);
}

#[test]
fn lost_video_frame_freezes() {
    let config = Config {
        kind: Kind::Video,
        ..Config::default()
    };
    let (log, s) = lose(config, &[1, 2], 4);
    assert_eq!(
        conceals(&log),
        [
            (20_000, 20_000, Concealment::Freeze),
            (40_000, 20_000, Concealment::Freeze)
        ]
    );
    assert_eq!(played_pts(&log), [0, 60_000]);
    assert_eq!(s.underruns, 1);
    assert_eq!(s.underrun_time, 40 * MS);
}

#[test]
fn late_arrival_after_concealment_is_dropped() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.push_sized(t0, u20(0), 0);
    pb.push_sized(t0, u20(2), 0);
    let (outs, _) = drain(&mut pb, t0 + 120 * MS);
    assert_eq!(
        outs,
        [
            Output::Play(u20(0)),
            Output::Conceal {
                pts_us: 20_000,
                duration_us: 20_000,
                kind: Concealment::Silence
            }
        ]
    );
    pb.push_sized(t0 + 125 * MS, u20(1), 0);
    assert_eq!(pb.len(), 1);
    let s = pb.stats();
    assert_eq!((s.late_drops, s.reordered), (1, 0));
    assert_eq!(pb.poll(t0 + 125 * MS), Output::Wait(t0 + 140 * MS));
    assert_eq!(pb.poll(t0 + 140 * MS), Output::Play(u20(2)));
}

#[test]
fn stalled_stream_conceals_in_real_time_until_data_or_eos() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config {
        kind: Kind::Video,
        ..Config::default()
    });
    pb.push_sized(t0, unit(0, 0, 40_000), 0);
    assert_eq!(pb.poll(t0), Output::Wait(t0 + 100 * MS));
    assert_eq!(pb.poll(t0 + 100 * MS), Output::Play(unit(0, 0, 40_000)));
    // Nothing else arrives: a Freeze per frame period, each when it is due.
    assert_eq!(pb.poll(t0 + 100 * MS), Output::Wait(t0 + 140 * MS));
    for k in 0..3u32 {
        let at = t0 + 140 * MS + 40 * MS * k;
        assert_eq!(
            pb.poll(at),
            Output::Conceal {
                pts_us: 40_000 * u64::from(k + 1),
                duration_us: 40_000,
                kind: Concealment::Freeze
            }
        );
        assert_eq!(pb.poll(at), Output::Wait(at + 40 * MS));
    }
    pb.end_of_stream();
    assert_eq!(pb.poll(t0 + Duration::from_secs(1)), Output::Idle);
    let s = pb.stats();
    assert_eq!((s.underruns, s.concealed), (1, 3));
    assert_eq!(s.underrun_time, 120 * MS);
}

#[test]
fn end_of_stream_drains_then_idles_without_trailing_concealment() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    for i in 0..3 {
        pb.push_sized(t0, u20(i), 0);
    }
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(played_pts(&log), [0, 20_000, 40_000]);
    assert!(conceals(&log).is_empty());
    assert_eq!(pb.poll(t0 + Duration::from_secs(3600)), Output::Idle);
    assert!(pb.is_empty());
}

#[test]
fn queue_never_exceeds_max_units() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config {
        max_units: 8,
        ..Config::default()
    });
    for i in 0..100 {
        pb.push_sized(t0, u20(i), 0);
        assert!(pb.len() <= 8);
    }
    let s = pb.stats();
    assert_eq!((s.overflow_drops, s.queued), (92, 8));
    // The newest survive.
    let (outs, _) = drain(&mut pb, t0 + Duration::from_secs(10));
    assert_eq!(outs.first(), Some(&Output::Play(u20(92))));
}

#[test]
fn rounding_gaps_and_overlaps_within_tolerance_are_ignored() {
    // 30 fps with pts rounded to µs and an approximate duration.
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config {
        kind: Kind::Video,
        ..Config::default()
    });
    for i in 0..90u64 {
        let duration = if i % 2 == 0 { 33_333 } else { 33_334 };
        pb.push_sized(t0, unit(i, (i * 1_000_000).div_ceil(30), duration), 0);
    }
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(played_pts(&log).len(), 90);
    let s = pb.stats();
    assert_eq!((s.underruns, s.late_drops, s.concealed), (0, 0, 0));
}

#[test]
fn overlap_beyond_tolerance_is_a_late_drop() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.push_sized(t0, u20(0), 0);
    pb.push_sized(t0, unit(1, 10_000, 20_000), 0); // overlaps unit 0 by 10 ms
    pb.push_sized(t0, u20(1), 0); // seq 1 again: duplicate
    pb.push_sized(t0, unit(2, 20_000, 20_000), 0);
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(played_pts(&log), [0, 20_000]);
    let s = pb.stats();
    assert_eq!((s.late_drops, s.duplicates, s.played), (1, 1, 2));
    assert_eq!(s.received, s.played + s.late_drops + s.duplicates);
}

#[test]
fn startup_delay_from_request_instant() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.set_request_instant(t0);
    pb.push_sized(t0 + 30 * MS, u20(0), 0);
    assert_eq!(pb.poll(t0 + 130 * MS), Output::Play(u20(0)));
    assert_eq!(pb.stats().startup_delay, Some(130 * MS));
}

#[test]
fn clock_going_backwards_releases_nothing() {
    let t0 = Instant::now() + Duration::from_secs(1);
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.push_sized(t0, u20(0), 0);
    let earlier = t0 - Duration::from_millis(500);
    assert_eq!(pb.poll(earlier), Output::Wait(t0 + 100 * MS));
    assert_eq!(pb.poll(t0 + 100 * MS), Output::Play(u20(0)));
    assert!(matches!(pb.poll(earlier), Output::Wait(at) if at == t0 + 120 * MS));
}

#[test]
fn zero_and_huge_durations_and_extreme_pts_do_not_hang() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(Config::default());
    pb.push_sized(t0, unit(0, 0, 0), 0);
    pb.push_sized(t0, unit(1, 0, 0), 0);
    pb.push_sized(t0, unit(2, 5_000, u32::MAX), 0);
    pb.push_sized(t0, unit(3, u64::MAX - 10, u32::MAX), 0);
    pb.push_sized(t0, unit(4, u64::MAX, 7), 0);
    // Zero-length units end where they start: the 5 ms gap after them is
    // concealed in 1 ms steps, each when it is due.
    let (outs, _) = drain(&mut pb, t0 + 100 * MS);
    assert_eq!(
        outs,
        [
            Output::Play(unit(0, 0, 0)),
            Output::Play(unit(1, 0, 0)),
            Output::Conceal {
                pts_us: 0,
                duration_us: 1_000,
                kind: Concealment::Silence
            }
        ]
    );
    // The last piece absorbs what would be left under the 1 ms tolerance.
    let (outs, _) = drain(&mut pb, t0 + 105 * MS);
    let pieces: Vec<_> = outs
        .iter()
        .filter_map(|o| match *o {
            Output::Conceal {
                pts_us,
                duration_us,
                ..
            } => Some((pts_us, duration_us)),
            _ => None,
        })
        .collect();
    assert_eq!(pieces, [(1_000, 1_000), (2_000, 1_000), (3_000, 2_000)]);
    assert_eq!(outs[3], Output::Play(unit(2, 5_000, u32::MAX)));
    // Far in the future: concealment pieces of at most 1 s, then the rest.
    let (outs, term) = drain(&mut pb, t0 + Duration::from_secs(3 * 3600));
    assert!(
        outs.iter()
            .all(|o| matches!(o, Output::Conceal { duration_us, .. } if *duration_us <= 1_000_000))
    );
    assert!(matches!(term, Output::Wait(_)));
    assert!(pb.play_instant(u64::MAX).is_some());
}

#[test]
fn seq_window_remembers_recent_played_seqs() {
    let mut w = SeqWindow::new();
    assert!(!w.contains(0));
    w.insert(5);
    w.insert(3);
    assert!(w.contains(5) && w.contains(3) && !w.contains(4) && !w.contains(6));
    w.insert(5 + SeqWindow::SPAN - 1);
    assert!(w.contains(5) && !w.contains(3));
    w.insert(u64::MAX);
    assert!(w.contains(u64::MAX) && !w.contains(5));
    w.insert(0); // too old: ignored
    assert!(!w.contains(0));
}

/// A 40 ms video frame with seq `i` at pts `40 ms * i`, a keyframe every `gop` frames.
fn frame(i: u64, gop: u64) -> Unit<u64> {
    Unit {
        key: i % gop == 0,
        ..unit(i, i * 40_000, 40_000)
    }
}

fn video() -> Config {
    Config {
        kind: Kind::Video,
        ..Config::default()
    }
}

#[test]
fn a_restarted_source_resumes_at_its_next_keyframe_without_concealing_the_wait() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(video());
    for i in 0..10 {
        pb.push_sized(t0 + 40 * i as u32 * MS, frame(i, 5), 0);
    }
    // The publisher goes away after frame 9 arrived at 360 ms.
    pb.restart();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(
        log.len(),
        10,
        "what was queued plays out, then idles: {log:?}"
    );
    assert!(conceals(&log).is_empty());
    // 3 s later, while the new publisher is away, nothing is concealed either.
    let (outs, term) = drain(&mut pb, t0 + 3000 * MS);
    assert!(outs.is_empty() && term == Output::Idle, "{outs:?} {term:?}");
    // It comes back mid-group (pts continue, as a live channel renumbers them): frames
    // before its first keyframe are skipped, and that keyframe plays `buffer` after it
    // arrived, not 3 s late.
    let back = t0 + 5000 * MS;
    for i in 10..20 {
        pb.push_sized(back + 40 * (i - 10) as u32 * MS, frame(i + 2, 5), 0);
    }
    let log = run_to_idle_or(&mut pb, back, 7);
    let pts = played_pts(&log);
    assert_eq!(pts.first(), Some(&(15 * 40_000)), "starts at the keyframe");
    assert_eq!(log[0].0, back + 3 * 40 * MS + 100 * MS);
    assert_eq!(pts.len(), 7);
    let stats = pb.stats();
    assert_eq!(stats.skipped, 3);
    assert_eq!(
        (stats.late_drops, stats.underruns, stats.concealed),
        (0, 0, 0)
    );
    assert_eq!(stats.played, 17);
}

#[test]
fn a_paused_player_skips_to_the_newest_keyframe_instead_of_bursting() {
    for catch_up in [None, Some(Duration::from_secs(1))] {
        let t0 = Instant::now();
        let mut pb = PlayoutBuffer::new(video());
        pb.set_catch_up(catch_up);
        let mut now = t0;
        // Half a second played on time.
        for i in 0..12 {
            now = t0 + 40 * i as u32 * MS;
            pb.push_sized(now, frame(i, 25), 0);
            drain(&mut pb, now);
        }
        // The player is stopped for 20 s while the server keeps sending: on waking it finds
        // 20 s of frames in its socket, read all at once.
        let woke = now + Duration::from_secs(20);
        for i in 12..512 {
            pb.push_sized(woke, frame(i, 25), 0);
        }
        let (outs, term) = drain(&mut pb, woke);
        let stats = pb.stats();
        match catch_up {
            None => {
                // Every overdue frame comes out at once.
                assert!(outs.len() > 400, "{}", outs.len());
            }
            Some(_) => {
                assert!(outs.is_empty(), "nothing in a burst: {outs:?}");
                // The newest keyframe is frame 500: it plays a buffer from now, then on.
                assert_eq!(term, Output::Wait(woke + 100 * MS));
                assert_eq!(stats.skips, 1);
                // Frames 0..=8 were played before the pause; the rest up to 500 is skipped.
                assert_eq!((stats.played, stats.skipped), (9, 500 - 9));
                let log = run_to_idle_or(&mut pb, woke, 12);
                assert_eq!(played_pts(&log)[0], 500 * 40_000);
                assert_eq!(log[0].0, woke + 100 * MS);
                assert_eq!(pb.stats().late_drops, 0);
            }
        }
    }
}

#[test]
fn units_left_overdue_in_the_queue_are_skipped_to_the_newest_keyframe() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(video());
    pb.set_catch_up(Some(Duration::from_secs(1)));
    for i in 0..30 {
        pb.push_sized(t0 + 40 * i as u32 * MS, frame(i, 10), 0);
    }
    // Nobody polled for 15 s: every queued frame is overdue.
    let late = t0 + 15_000 * MS;
    let (outs, term) = drain(&mut pb, late);
    assert!(outs.is_empty(), "{outs:?}");
    assert_eq!(term, Output::Wait(late + 100 * MS));
    assert_eq!(pb.stats().skipped, 20);
    // On time and at a keyframe: no skip while playing normally.
    let log = run_to_idle_or(&mut pb, late, 10);
    assert_eq!(
        played_pts(&log),
        (20..30).map(|i| i * 40_000).collect::<Vec<_>>()
    );
    assert_eq!(pb.stats().skips, 1);
}

#[test]
fn catching_up_never_skips_a_stream_that_keeps_up() {
    let t0 = Instant::now();
    let mut pb = PlayoutBuffer::new(video());
    pb.set_catch_up(Some(Duration::from_secs(1)));
    // A late joiner's backlog: a 3 s group arrives at once, one keyframe at its start.
    for i in 0..75 {
        pb.push_sized(t0, frame(i, 1000), 0);
    }
    pb.end_of_stream();
    let log = run_to_idle(&mut pb, t0);
    assert_eq!(played_pts(&log).len(), 75);
    assert_eq!((pb.stats().skips, pb.stats().skipped), (0, 0));
}

/// Follow Wait instants until `n` units were played (or Idle).
fn run_to_idle_or(
    pb: &mut PlayoutBuffer<u64>,
    mut now: Instant,
    n: usize,
) -> Vec<(Instant, Output<u64>)> {
    let mut log = Vec::new();
    while played_pts(&log).len() < n {
        let (outs, term) = drain(pb, now);
        log.extend(outs.into_iter().map(|o| (now, o)));
        match term {
            Output::Wait(at) => now = at,
            _ => break,
        }
    }
    log
}
