//! Simulated-time runs of the playout buffer: seeded network delay, loss,
//! an hour of audio, and property tests over arbitrary push/poll sequences.
//!
//! No sleeps and no clock reads beyond one `Instant::now()` as the base.

// Test names are `playout::*` so `cargo test -p chunkcast-protocol playout`
// selects them.
mod playout {
    use std::time::{Duration, Instant};

    use chunkcast_media::playout::{
        Conceal, Concealment, Config, Kind, Output, PlayoutBuffer, Stats, Unit,
    };
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);
    const UNIT_US: u64 = 20_000;

    /// xorshift64: a tiny seeded PRNG so runs are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn u20(i: u64) -> Unit<u64> {
        Unit {
            seq: i,
            pts_us: i * UNIT_US,
            duration_us: UNIT_US as u32,
            key: true,
            payload: i,
        }
    }

    struct Sim {
        outputs: Vec<(Instant, Output<u64>)>,
        stats: Stats,
        max_len: usize,
        /// Arrival instant and pts of the first arrival: the clock anchor.
        anchor: (Instant, u64),
    }

    /// Drives a buffer by the contract: push each arrival at its instant, poll
    /// until Wait/Idle after every event, wake at the earlier of the Wait instant
    /// and the next arrival. `end_of_stream` follows the last arrival.
    fn simulate(config: Config, mut arrivals: Vec<(Instant, Unit<u64>)>) -> Sim {
        arrivals.sort_by_key(|(at, _)| *at); // stable: equal instants keep their order
        let anchor = (arrivals[0].0, arrivals[0].1.pts_us);
        let mut pb = PlayoutBuffer::new(config);
        let mut outputs = Vec::new();
        let mut max_len = 0;
        let mut now = arrivals[0].0;
        let mut arrivals = arrivals.into_iter().peekable();
        loop {
            while let Some((at, _)) = arrivals.peek() {
                if *at > now {
                    break;
                }
                let (at, unit) = arrivals.next().unwrap();
                pb.push_sized(at, unit, 160);
                max_len = max_len.max(pb.len());
                if arrivals.peek().is_none() {
                    pb.end_of_stream();
                }
            }
            let wake = loop {
                match pb.poll(now) {
                    Output::Wait(at) => {
                        assert!(at > now, "Wait({at:?}) not after now");
                        break Some(at);
                    }
                    Output::Idle => break None,
                    out => outputs.push((now, out)),
                }
            };
            now = match (wake, arrivals.peek().map(|(at, _)| *at)) {
                (Some(w), Some(a)) => w.min(a),
                (Some(w), None) => w,
                (None, Some(a)) => a,
                (None, None) => break,
            };
        }
        Sim {
            outputs,
            stats: pb.stats(),
            max_len,
            anchor,
        }
    }

    impl Sim {
        /// Where pts `p` is due: anchor + buffer + (p - first_pts).
        fn due(&self, buffer: Duration, pts_us: u64) -> Instant {
            let (at, first) = self.anchor;
            if pts_us >= first {
                at + buffer + Duration::from_micros(pts_us - first)
            } else {
                at + buffer - Duration::from_micros(first - pts_us)
            }
        }

        fn played(&self) -> Vec<(Instant, u64)> {
            self.outputs
                .iter()
                .filter_map(|(at, o)| match o {
                    Output::Play(u) => Some((*at, u.pts_us)),
                    _ => None,
                })
                .collect()
        }

        /// Checks that outputs tile media time with no gap and no overlap, each
        /// released exactly when due; returns total (played, concealed) time.
        fn check_tiling(&self, buffer: Duration) -> (u64, u64) {
            let (mut played, mut concealed) = (0, 0);
            let mut pos: Option<u64> = None;
            for (at, out) in &self.outputs {
                let (pts, dur) = match out {
                    Output::Play(u) => {
                        played += u64::from(u.duration_us);
                        (u.pts_us, u.duration_us)
                    }
                    Output::Conceal {
                        pts_us,
                        duration_us,
                        ..
                    } => {
                        concealed += u64::from(*duration_us);
                        (*pts_us, *duration_us)
                    }
                    other => panic!("unexpected {other:?}"),
                };
                if let Some(pos) = pos {
                    assert_eq!(pts, pos, "outputs must be contiguous");
                }
                assert_eq!(
                    *at,
                    self.due(buffer, pts),
                    "output at pts {pts} not on time"
                );
                pos = Some(pts + u64::from(dur));
            }
            (played, concealed)
        }
    }

    fn jittered(n: u64, max_delay_us: u64, seed: u64, t0: Instant) -> Vec<(Instant, Unit<u64>)> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|i| {
                // Unit 0 is on time so the anchor is not itself delayed.
                let delay = if i == 0 { 0 } else { rng.below(max_delay_us) };
                (t0 + Duration::from_micros(i * UNIT_US + delay), u20(i))
            })
            .collect()
    }

    #[test]
    fn steady_audio_on_time_plays_exactly_when_due() {
        let t0 = Instant::now();
        let arrivals = (0..500)
            .map(|i| (t0 + Duration::from_micros(i * UNIT_US), u20(i)))
            .collect();
        let sim = simulate(Config::default(), arrivals);
        let played = sim.played();
        assert_eq!(played.len(), 500);
        for (k, &(at, pts)) in played.iter().enumerate() {
            assert_eq!(pts, k as u64 * UNIT_US);
            assert_eq!(at, t0 + 100 * MS + Duration::from_micros(pts));
        }
        let s = &sim.stats;
        assert_eq!((s.underruns, s.late_drops, s.concealed), (0, 0, 0));
        assert_eq!(s.startup_delay, Some(100 * MS));
        assert_eq!(s.jitter_p99, Duration::ZERO);
        assert!(sim.max_len <= 6, "{}", sim.max_len);
    }

    #[test]
    fn jitter_below_the_buffer_is_absorbed() {
        let t0 = Instant::now();
        for seed in [1, 0x9e37_79b9_7f4a_7c15, 42] {
            let sim = simulate(Config::default(), jittered(500, 80_000, seed, t0));
            let played = sim.played();
            assert_eq!(played.len(), 500);
            for (k, &(at, pts)) in played.iter().enumerate() {
                assert_eq!(pts, k as u64 * UNIT_US, "pts order");
                assert_eq!(at, t0 + 100 * MS + Duration::from_micros(pts));
            }
            let s = &sim.stats;
            assert_eq!((s.underruns, s.late_drops, s.concealed), (0, 0, 0), "{s}");
            assert!(s.reordered > 0, "{s}");
            assert!(s.jitter_max < 80 * MS, "{s}");
            assert!(
                (70 * MS..=85 * MS).contains(&s.jitter_p99),
                "p99 of uniform 0..80 ms: {s}"
            );
            assert!((30 * MS..=50 * MS).contains(&s.jitter_mean), "{s}");
            assert!(s.jitter_rfc3550 > 10 * MS, "{s}");
            // 160 bytes per 20 ms.
            assert!((s.bitrate_bps - 64_000.0).abs() < 1e-6, "{s}");
        }
    }

    #[test]
    fn jitter_above_the_buffer_underruns_and_drops() {
        let t0 = Instant::now();
        for (kind, conceal) in [
            (Kind::Audio, Conceal::Silence),
            (
                Kind::Audio,
                Conceal::RepeatThenSilence {
                    max_repeat: 30 * MS,
                },
            ),
            (Kind::Video, Conceal::Silence),
        ] {
            let config = Config {
                kind,
                conceal,
                ..Config::default()
            };
            let n = 500;
            let sim = simulate(config, jittered(n, 250_000, 7, t0));
            let s = &sim.stats;
            assert!(s.late_drops > 0, "{s}");
            assert!(s.underruns > 0, "{s}");
            assert_eq!(s.received, n);
            assert_eq!(
                s.received,
                s.played + s.late_drops + s.duplicates + s.overflow_drops
            );
            assert_eq!(s.queued, 0);

            // Played and concealed time tile the media span exactly, on time.
            let (played, concealed) = sim.check_tiling(Duration::from_millis(100));
            // (Concealment may follow the last played unit: the stream's last
            // units can be late too; end of stream comes after the last arrival.)
            let last_end = match sim.outputs.last().unwrap().1 {
                Output::Play(ref u) => u.end_us(),
                Output::Conceal {
                    pts_us,
                    duration_us,
                    ..
                } => pts_us + u64::from(duration_us),
                _ => unreachable!(),
            };
            assert!(last_end >= sim.played().last().unwrap().1 + UNIT_US);
            assert_eq!(sim.played().first().unwrap().1, 0);
            assert_eq!(played + concealed, last_end);
            assert_eq!(played, s.played * UNIT_US);
            assert_eq!(Duration::from_micros(concealed), s.underrun_time);
            // Concealment stays on the 20 ms grid: no piece straddles two slots
            // (the repeat budget may split one slot into a Repeat and a Silence).
            for (_, out) in &sim.outputs {
                if let Output::Conceal {
                    pts_us,
                    duration_us,
                    ..
                } = *out
                {
                    let end = pts_us + u64::from(duration_us);
                    assert_eq!(
                        pts_us / UNIT_US,
                        (end - 1) / UNIT_US,
                        "{out:?} off the grid"
                    );
                }
            }

            // Underrun episodes are the maximal runs of concealment.
            let mut runs = 0;
            let mut in_run = false;
            let mut run_repeat = 0u64;
            for (_, out) in &sim.outputs {
                match out {
                    Output::Conceal {
                        duration_us, kind, ..
                    } => {
                        if !in_run {
                            runs += 1;
                            run_repeat = 0;
                        }
                        in_run = true;
                        match (config.kind, config.conceal, kind) {
                            (Kind::Video, _, Concealment::Freeze) => {}
                            (Kind::Audio, Conceal::Silence, Concealment::Silence) => {}
                            (
                                Kind::Audio,
                                Conceal::RepeatThenSilence { .. },
                                Concealment::Repeat,
                            ) => {
                                assert_eq!(run_repeat, run_repeat.min(30_000));
                                run_repeat += u64::from(*duration_us);
                                assert!(run_repeat <= 30_000);
                            }
                            (
                                Kind::Audio,
                                Conceal::RepeatThenSilence { .. },
                                Concealment::Silence,
                            ) => {
                                assert_eq!(
                                    run_repeat, 30_000,
                                    "silence only after the repeat budget"
                                );
                            }
                            other => panic!("wrong concealment {other:?}"),
                        }
                    }
                    _ => in_run = false,
                }
            }
            assert_eq!(runs, s.underruns);
            assert!(s.concealed >= u64::from(s.underruns));
            assert!(s.jitter_p99 > 100 * MS, "{s}");
        }
    }

    #[test]
    fn reordering_and_duplicates_in_transit() {
        let t0 = Instant::now();
        let mut rng = Rng(99);
        let mut arrivals = Vec::new();
        for i in 0..300u64 {
            let at = t0 + Duration::from_micros(i * UNIT_US + rng.below(60_000));
            arrivals.push((at, u20(i)));
            if rng.below(10) == 0 {
                // A duplicate arriving up to 200 ms after the original.
                arrivals.push((at + Duration::from_micros(rng.below(200_000)), u20(i)));
            }
        }
        let dups = arrivals.len() as u64 - 300;
        let sim = simulate(Config::default(), arrivals);
        let s = &sim.stats;
        assert_eq!(s.played, 300);
        assert_eq!(s.duplicates, dups);
        assert_eq!((s.late_drops, s.underruns), (0, 0));
        assert!(s.reordered > 0);
        let pts: Vec<u64> = sim.played().iter().map(|p| p.1).collect();
        assert!(pts.windows(2).all(|w| w[0] + UNIT_US == w[1]));
    }

    #[test]
    fn an_hour_of_audio_does_not_drift() {
        let t0 = Instant::now();
        let n = 180_000; // 3600 s of 20 ms units
        let sim = simulate(Config::default(), jittered(n, 50_000, 3, t0));
        let s = &sim.stats;
        assert_eq!(s.played, n);
        assert_eq!((s.underruns, s.late_drops, s.concealed), (0, 0, 0));
        let last = *sim.played().last().unwrap();
        assert_eq!(last.1, 3600 * 1_000_000 - UNIT_US);
        assert_eq!(
            last.0,
            t0 + 100 * MS + Duration::from_secs(3600) - 20 * MS,
            "last unit released exactly at anchor + buffer + 3600 s - 20 ms"
        );
        assert!(sim.max_len <= 10, "queue stays small: {}", sim.max_len);
        assert!(s.to_json().contains("\"played\":180000,"));
    }

    #[test]
    fn max_units_bounds_the_queue() {
        let t0 = Instant::now();
        let config = Config {
            max_units: 256,
            ..Config::default()
        };
        let mut pb = PlayoutBuffer::new(config);
        for i in 0..10_000 {
            pb.push_sized(t0 + Duration::from_micros(i), u20(i), 160);
            assert!(pb.len() <= 256);
        }
        let s = pb.stats();
        assert_eq!((s.overflow_drops, s.queued), (10_000 - 256, 256));
        pb.end_of_stream();
        // The 256 newest survive and play back to back.
        let mut now = t0;
        let mut played = Vec::new();
        loop {
            match pb.poll(now) {
                Output::Play(u) => played.push(u.pts_us),
                Output::Conceal { .. } => panic!("no gap among the survivors"),
                Output::Wait(at) => now = at,
                Output::Idle => break,
            }
        }
        assert_eq!(played.len(), 256);
        assert_eq!(played[0], (10_000 - 256) * UNIT_US);
        assert_eq!(pb.stats().played, 256);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push {
            at_ms: u32,
            seq: u64,
            pts_us: u64,
            duration_us: u32,
        },
        Poll {
            at_ms: u32,
        },
        EndOfStream,
    }

    fn config_strategy() -> impl Strategy<Value = Config> {
        (
            0u64..500,
            any::<bool>(),
            prop_oneof![
                Just(Conceal::Silence),
                (0u64..100).prop_map(|ms| Conceal::RepeatThenSilence {
                    max_repeat: Duration::from_millis(ms)
                }),
            ],
            0usize..16,
            prop_oneof![Just(1_000u64), 0u64..5_000, Just(u64::MAX / 2)],
        )
            .prop_map(|(buffer, video, conceal, max_units, tol)| Config {
                buffer: Duration::from_millis(buffer),
                kind: if video { Kind::Video } else { Kind::Audio },
                conceal,
                max_units,
                gap_tolerance: Duration::from_micros(tol),
            })
    }

    fn op_strategy(monotone: bool) -> impl Strategy<Value = Op> {
        let at = if monotone { 0u32..200 } else { 0u32..20_000 };
        prop_oneof![
            4 => (
                at.clone(),
                prop_oneof![0u64..64, any::<u64>()],
                prop_oneof![4 => (0u64..100).prop_map(|k| k * UNIT_US), 2 => 0u64..3_000_000, 1 => any::<u64>()],
                prop_oneof![4 => Just(20_000u32), 2 => 0u32..100_000, 1 => any::<u32>()],
            )
                .prop_map(|(at_ms, seq, pts_us, duration_us)| Op::Push { at_ms, seq, pts_us, duration_us }),
            3 => at.prop_map(|at_ms| Op::Poll { at_ms }),
            1 => Just(Op::EndOfStream),
        ]
    }

    /// Runs `ops` and checks the invariants that hold for any input. With
    /// `monotone`, `at_ms` is a step forward instead of an absolute time.
    fn check_ops(config: Config, ops: &[Op], monotone: bool) {
        let t0 = Instant::now();
        let mut pb = PlayoutBuffer::new(config);
        let mut clock = t0;
        let mut time = |at_ms: u32| {
            if monotone {
                clock += Duration::from_millis(u64::from(at_ms));
                clock
            } else {
                t0 + Duration::from_millis(u64::from(at_ms))
            }
        };
        let mut last_play: Option<u64> = None;
        // The end of everything output so far: where a concealment must start.
        let mut end: Option<u64> = None;
        for op in ops {
            match *op {
                Op::Push {
                    at_ms,
                    seq,
                    pts_us,
                    duration_us,
                } => {
                    let unit = Unit {
                        seq,
                        pts_us,
                        duration_us,
                        key: false,
                        payload: vec![0u8; (seq % 7) as usize],
                    };
                    pb.push(time(at_ms), unit);
                    assert!(pb.len() <= config.max_units);
                }
                Op::EndOfStream => pb.end_of_stream(),
                Op::Poll { at_ms } => {
                    let now = time(at_ms);
                    for _ in 0..2_000 {
                        match pb.poll(now) {
                            Output::Play(u) => {
                                assert!(last_play.is_none_or(|p| p <= u.pts_us), "pts went back");
                                assert!(pb.play_instant(u.pts_us).unwrap() <= now, "played early");
                                last_play = Some(u.pts_us);
                                end = Some(end.map_or(u.end_us(), |e| e.max(u.end_us())));
                            }
                            Output::Conceal {
                                pts_us,
                                duration_us,
                                ..
                            } => {
                                assert_eq!(
                                    Some(pts_us),
                                    end,
                                    "concealment starts at the play head"
                                );
                                assert!(duration_us >= 1);
                                assert!(pb.play_instant(pts_us).unwrap() <= now, "concealed early");
                                end = Some(pts_us + u64::from(duration_us));
                            }
                            Output::Wait(at) => {
                                assert!(at > now);
                                break;
                            }
                            Output::Idle => break,
                        }
                    }
                }
            }
            let s = pb.stats();
            assert_eq!(
                s.received,
                s.played + s.late_drops + s.duplicates + s.overflow_drops + s.queued
            );
            assert!(s.bitrate_bps.is_finite() && s.bitrate_bps >= 0.0);
        }
        let s = pb.stats();
        assert!(!s.to_json().contains('\n'));
        assert!(s.jitter_p99 <= s.jitter_max);
        let _ = s.to_string();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_ops_never_panic(
            config in config_strategy(),
            ops in proptest::collection::vec(op_strategy(false), 0..120),
        ) {
            check_ops(config, &ops, false);
        }

        #[test]
        fn arbitrary_ops_with_a_forward_clock(
            config in config_strategy(),
            ops in proptest::collection::vec(op_strategy(true), 0..200),
        ) {
            check_ops(config, &ops, true);
        }
    }
}
