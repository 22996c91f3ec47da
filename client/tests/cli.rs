//! The `chunkcast` binary as a user meets it: flags, messages, exit statuses, files on disk,
//! against an in-process server on 127.0.0.1:0.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chunkcast_client::url::Scheme;
use chunkcast_media_samples as media;
use chunkcast_testkit::process::{signal, text, wait_bounded, wait_until};
use chunkcast_testkit::proxy::cutting_proxy;
use chunkcast_testkit::{samples, server_with, url, url_at};

/// Every test is bounded: a hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(90);

/// The binary as the shared tests start it, without `RUST_LOG`: what it prints here is what a
/// user sees by default.
fn bin() -> Command {
    let mut c = chunkcast_testkit::bin!("chunkcast");
    c.env_remove("RUST_LOG");
    c
}

/// Runs `chunkcast ARGS` in `dir` (off the async runtime, bounded).
async fn run_in(dir: &Path, args: Vec<String>) -> Output {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let child = bin()
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(samples().join(name)).unwrap()
}

/// Sends SIGINT (Ctrl-C) to `child`, by its pid.
#[cfg(unix)]
// ---- help, completions, man ----
#[test]
fn help_names_the_default_port_rust_log_and_every_sink_without_internal_names() {
    let out = bin().arg("--help").output().unwrap();
    let top = text(&out.stdout);
    assert!(out.status.success());
    assert!(top.contains("7700") && top.contains("RUST_LOG"), "{top}");
    let play = text(&bin().args(["play", "--help"]).output().unwrap().stdout);
    for sink in [
        "file:PATH",
        "file:-",
        "wav:PATH",
        "pcm:-",
        "pcm:PATH",
        "mjpeg:-",
        "mjpeg:PATH",
        "frames:DIR",
        "null",
    ] {
        assert!(play.contains(sink), "play --help lacks {sink}: {play}");
    }
    let get = text(&bin().args(["get", "--help"]).output().unwrap().stdout);
    assert!(
        get.contains("-o, --output") && get.contains("-q, --quiet"),
        "{get}"
    );
    assert!(!get.contains("--o ") && !get.contains("--q "), "{get}");
    for cmd in [
        "ls",
        "get",
        "play",
        "watch",
        "publish",
        "call",
        "demo",
        "bench",
        "completions",
        "man",
    ] {
        let out = bin().args([cmd, "--help"]).output().unwrap();
        let help = text(&out.stdout);
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
        assert!(
            !help.contains("::") && !help.contains("()"),
            "{cmd} --help names code: {help}"
        );
        if cmd != "demo" && cmd != "completions" && cmd != "man" {
            assert!(help.contains("7700"), "{cmd} --help: {help}");
        }
    }
}

#[test]
fn completions_and_man_pages_come_from_the_flags() {
    let bash = bin().args(["completions", "bash"]).output().unwrap();
    let script = text(&bash.stdout);
    assert!(bash.status.success());
    assert!(
        script.contains("complete") && script.contains("--output") && script.contains("--resume"),
        "{script}"
    );
    let zsh = text(&bin().args(["completions", "zsh"]).output().unwrap().stdout);
    assert!(zsh.starts_with("#compdef chunkcast"), "{zsh}");
    let fish = text(&bin().args(["completions", "fish"]).output().unwrap().stdout);
    assert!(fish.contains("complete -c chunkcast"), "{fish}");
    let man = text(&bin().arg("man").output().unwrap().stdout);
    assert!(
        man.contains(".TH chunkcast 1") && man.contains("completions"),
        "{man}"
    );
    let get = text(&bin().args(["man", "get"]).output().unwrap().stdout);
    assert!(
        get.contains(".TH chunkcast-get") && get.contains("\\-\\-output"),
        "{get}"
    );
    let bad = bin().args(["man", "nope"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("no command \"nope\""));
}

#[test]
fn chunk_sizes_take_units_and_out_of_range_is_refused_up_front() {
    // Nothing listens on port 9: a refusal must come before any connection is tried.
    for (cmd, value) in [
        ("get", "2MiB"),
        ("get", "0"),
        ("bench", "0"),
        ("bench", "4MiB"),
    ] {
        let out = bin()
            .args([cmd, "--chunk-size", value, "tcp://127.0.0.1:9/x.bin"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd} {value}: {err}");
        assert!(err.contains("1 B to 1 MiB"), "{cmd} {value}: {err}");
        assert!(!err.contains("cannot connect"), "{err}");
    }
}

// ---- get ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_saves_into_a_directory_or_to_stdout_and_checks_the_target_first() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let name = media::SWEEP_48K_WAV;
        let u = url(&server, Scheme::Tcp, name).to_string();
        std::fs::create_dir(d.join("into")).unwrap();

        // An existing directory, with and without the slash: saved under the file's name.
        for o in ["into", "into/"] {
            let out = run_in(d, args(&["get", &u, "-o", o, "--chunk-size", "16KiB"])).await;
            assert!(out.status.success(), "-o {o}: {}", text(&out.stderr));
            assert!(std::fs::read(d.join("into").join(name)).unwrap() == sample(name));
            std::fs::remove_file(d.join("into").join(name)).unwrap();
        }
        // A directory that does not exist: refused before anything is fetched.
        for (o, says) in [
            ("missing/", "no such directory"),
            ("missing/x.wav", "no directory missing"),
        ] {
            let out = run_in(d, args(&["get", &u, "--output", o])).await;
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains(says), "-o {o}: {err}");
            assert!(!d.join("missing").exists());
        }
        // Stdout: the bytes, nothing on disk, no file named "-".
        let out = run_in(d, args(&["get", &u, "-o", "-"])).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(out.stdout == sample(name), "stdout holds the file");
        // Decimal units, as in `ls` and the progress bar.
        let err = text(&out.stderr);
        assert!(
            err.contains("wrote 1.92 MB to stdout") && err.contains("B/s, digest verified"),
            "{err}"
        );
        assert!(!d.join("-").exists() && !d.join("-.partial").exists());
        let entries: Vec<_> = std::fs::read_dir(d).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the directory made above");
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_says_what_it_did_and_what_to_do_when_it_cannot() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let name = media::SWEEP_48K_WAV;
        let src = sample(name);
        let u = url(&server, Scheme::Tcp, name).to_string();
        let partial = d.join(format!("{name}.partial"));
        let get = |extra: &[&str]| {
            let mut a = args(&["get", &u]);
            a.extend(args(extra));
            run_in(d, a)
        };

        // A prefix on disk: resumed, and said so with the bytes and the share.
        let half = src.len() / 2;
        std::fs::write(&partial, &src[..half]).unwrap();
        let out = get(&["--resume"]).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(&format!("from {half} bytes")) && err.contains(", 50 %)"),
            "{err}"
        );
        assert!(std::fs::read(d.join(name)).unwrap() == src);
        assert!(!partial.exists());

        // The complete file: verified, nothing downloaded.
        let out = get(&["--resume"]).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("already complete") && err.contains("digest verified"),
            "{err}"
        );

        // A partial that is not a prefix of the file: say to delete it or start over.
        let mut wrong = src[..half].to_vec();
        wrong[100] ^= 0xff;
        std::fs::write(&partial, &wrong).unwrap();
        let out = get(&["--resume"]).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        // Verified streaming (v2) checks the kept bytes against the tree and names where.
        assert!(
            err.contains("the bytes already on disk differ from the server's file in 0..")
                && err.contains(&format!("delete {name}.partial"))
                && err.contains("without --resume"),
            "{err}"
        );
        // Longer than the file on the server (it shrank): the same advice.
        let mut longer = src.clone();
        longer.extend_from_slice(b"more");
        std::fs::write(&partial, &longer).unwrap();
        let out = get(&["--resume"]).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("more than the file on the server") && err.contains("without --resume"),
            "{err}"
        );
        // A plain get over the partial says it starts over, and does.
        let out = get(&[]).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("starting over"), "{err}");
        assert!(std::fs::read(d.join(name)).unwrap() == src);
        assert!(!partial.exists());
        // -q keeps the notes and the summary to itself.
        std::fs::write(&partial, &src[..half]).unwrap();
        let out = get(&["-q"]).await;
        assert!(out.status.success());
        assert_eq!(text(&out.stderr), "");
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_resumes_go_on_while_they_progress() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let name = media::SWEEP_48K_WAV;
        let src = sample(name);
        // Every connection is cut after 150 kB: more cuts than the 3 retries, each one
        // bringing new bytes.
        let cut = 150_000;
        let proxy = cutting_proxy(server.tcp_addr(), cut, Arc::new(AtomicUsize::new(cut))).await;
        let u = url_at(proxy, Scheme::Tcp, name).to_string();
        let out = run_in(dir.path(), args(&["get", &u, "-o", "s.wav"])).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        let resumes = err.matches("resuming from").count();
        assert!(
            resumes > 3 && resumes >= src.len() / cut - 1,
            "{resumes} resumes: {err}"
        );
        assert!(std::fs::read(dir.path().join("s.wav")).unwrap() == src);
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_that_does_not_heal_names_the_partial_and_the_command_that_resumes() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let name = media::SWEEP_48K_WAV;
        let src = sample(name);
        // The first connection is cut after 300 kB; the next ones after the handshake, so
        // that no resume makes progress.
        let later = Arc::new(AtomicUsize::new(600));
        let proxy = cutting_proxy(server.tcp_addr(), 300_000, later.clone()).await;
        let u = url_at(proxy, Scheme::Tcp, name).to_string();
        let out = run_in(d, args(&["get", &u, "-o", "cut.wav"])).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("attempt 3 of 3 without progress"), "{err}");
        let last = err.lines().last().unwrap();
        let have = std::fs::metadata(d.join("cut.wav.partial")).unwrap().len();
        assert!(have > 0 && have < 300_000, "{have}");
        assert!(
            last.contains(&format!("cut.wav.partial keeps the first {have} bytes")),
            "{last}"
        );
        let (_, command) = last.split_once("resume with: ").expect("a command");
        assert_eq!(command, format!("chunkcast get --resume {u} -o cut.wav"));
        assert!(!d.join("cut.wav").exists());

        // The path heals: the command as printed completes the file.
        later.store(usize::MAX, Ordering::SeqCst);
        let mut words: Vec<String> = command.split(' ').map(str::to_owned).collect();
        words.remove(0);
        let out = run_in(d, words).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(&format!("from {have} bytes")), "{err}");
        assert!(std::fs::read(d.join("cut.wav")).unwrap() == src);
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_logs_only_under_rust_log_and_without_colour_in_a_pipe() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let u = url(&server, Scheme::Tcp, media::TONE_8K_WAV).to_string();
        let quiet = run_in(dir.path(), args(&["get", &u, "-o", "a.wav"])).await;
        assert!(quiet.status.success());
        assert!(
            !text(&quiet.stderr).contains("INFO"),
            "{}",
            text(&quiet.stderr)
        );
        let logged = tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            move || {
                bin()
                    .args(["get", &u, "-o", "b.wav"])
                    .env("RUST_LOG", "info")
                    .current_dir(dir)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let err = text(&logged.stderr);
        assert!(logged.status.success(), "{err}");
        assert!(err.contains("INFO") && err.contains("opened"), "{err}");
        assert!(!err.contains('\u{1b}'), "ANSI escapes in a pipe: {err:?}");
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_get_exits_130_and_says_how_to_resume() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let u = url(&server, Scheme::Tcp, media::SWEEP_48K_WAV).to_string();
        let d = dir.path().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            let child = bin()
                .args(["get", "--realtime", &u, "-o", "rt.wav"])
                .current_dir(&d)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Ctrl-C once the download is under way: its partial file has bytes.
            let partial = d.join("rt.wav.partial");
            let started = wait_until(Duration::from_secs(10), || {
                std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
            });
            assert!(started, "{} never had a byte", partial.display());
            signal(&child, "INT");
            wait_bounded(child, Duration::from_secs(10))
        })
        .await
        .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{err}");
        assert!(
            err.contains("interrupted; rt.wav.partial keeps the first")
                && err.contains("resume with: chunkcast get --resume"),
            "{err}"
        );
        assert!(dir.path().join("rt.wav.partial").exists());
        assert!(!dir.path().join("rt.wav").exists());
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

// ---- play, call: exit statuses ----

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_the_pipe_early_is_a_quiet_success() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let play = url(&server, Scheme::Tcp, media::SWEEP_48K_WAV).to_string();
        let get = url(&server, Scheme::Tcp, media::RANDOM_BIN).to_string();
        for a in [
            args(&["play", &play, "--sink", "pcm:-"]),
            args(&["get", &get, "-o", "-"]),
        ] {
            let out = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut child = bin()
                    .args(&a)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                // `| head -c 1000`: take 1000 bytes, then close the pipe.
                let mut stdout = child.stdout.take().unwrap();
                let mut first = [0u8; 1000];
                stdout.read_exact(&mut first).unwrap();
                drop(stdout);
                wait_bounded(child, Duration::from_secs(20))
            })
            .await
            .unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{err}");
            assert!(!err.contains("chunkcast:"), "no error line: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_call_says_it_waits_and_ctrl_c_prints_both_directions_and_exits_130() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let room = url(&server, Scheme::Tcp, "call/alone").to_string();
        let wav = samples().join(media::TONE_8K_WAV);
        let out = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, BufReader};
            let mut child = bin()
                .args(["call", &room, "--from"])
                .arg(&wav)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let mut first = String::new();
            stderr.read_line(&mut first).unwrap();
            signal(&child, "INT");
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
            (first, rest, wait_bounded(child, Duration::from_secs(10)))
        })
        .await
        .unwrap();
        let (first, rest, out) = out;
        assert!(
            first.contains("waiting for the other participant"),
            "{first}"
        );
        assert_eq!(out.status.code(), Some(130), "{first}{rest}");
        let table = text(&out.stdout);
        assert!(
            table.contains("audio   sent →") && table.contains("audio   ← received"),
            "{table}"
        );
        assert!(table.contains("(interrupted)"), "{table}");
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[test]
fn a_wrong_output_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("afile"), "x").unwrap();
    // Nothing listens on port 9: each refusal must come before a connection is tried.
    for (o, extra, says) in [
        ("missing/", None, "-o missing/: no such directory"),
        ("afile/x.wav", None, "no directory afile"),
        ("-", Some("--resume"), "cannot be used with -o -"),
    ] {
        let out = bin()
            .args(["get", "tcp://127.0.0.1:9/x.wav", "-o", o])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(says) && !err.contains("connect"),
            "-o {o}: {err}"
        );
    }
}

#[test]
fn a_call_refuses_a_file_that_is_not_media_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a video\n").unwrap();
    // Nothing listens on port 9: the refusal must not need the server.
    let out = bin()
        .args(["call", "tcp://127.0.0.1:9/call/r", "--from"])
        .arg(&notes)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("notes.txt: a call sends audio or video"),
        "{err}"
    );
    assert!(!err.contains("connect"), "{err}");
}

// ---- ls ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_shows_one_file_says_when_there_are_no_channels_and_speaks_json() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let file = url(&server, Scheme::Tcp, media::SWEEP_48K_WAV).to_string();
        let out = run_in(d, args(&["ls", &file])).await;
        let table = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(table.lines().count(), 2, "a header and one row: {table}");
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with(media::SWEEP_48K_WAV),
            "{table}"
        );
        let live = url(&server, Scheme::Tcp, "live/").to_string();
        let out = run_in(d, args(&["ls", &live])).await;
        assert_eq!(text(&out.stdout), "no live channels\n");

        let all = url(&server, Scheme::Tcp, "").to_string();
        let out = run_in(d, args(&["ls", "--json", &all])).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON value");
        let rows = v.as_array().expect("an array");
        assert_eq!(rows.len(), media::SAMPLES.len());
        let wav = rows
            .iter()
            .find(|r| r["path"] == media::SWEEP_48K_WAV)
            .expect("the sweep");
        assert_eq!(wav["kind"], "audio");
        assert_eq!(
            wav["size_bytes"].as_u64(),
            Some(sample(media::SWEEP_48K_WAV).len() as u64)
        );
        assert!(wav["duration_us"].as_u64().is_some_and(|d| d > 0), "{wav}");
        for key in ["codec", "viewers"] {
            assert!(wav.get(key).is_some(), "no {key}: {wav}");
        }
        let out = run_in(d, args(&["ls", "--json", &live])).await;
        assert_eq!(text(&out.stdout), "[]\n");
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_on_plain_tcp_is_warned_about() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let pin = server.fingerprint().to_owned();
        let plain = url(&server, Scheme::Tcp, "").to_string();
        let out = run_in(dir.path(), args(&["ls", &plain, "--cert-sha256", &pin])).await;
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("--cert-sha256 is ignored: plain tcp:// has no certificate")
                && err.contains("tcps://"),
            "{err}"
        );
        let tls = url(&server, Scheme::Tcps, "").to_string();
        let out = run_in(dir.path(), args(&["ls", &tls, "--cert-sha256", &pin])).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "no warning where the pin is checked");
        server.shutdown().await;
    })
    .await
    .expect("within the time limit");
}
