//! `OPEN` with `FRAGMENT` (the native side of MP4 in the browser): a progressive MP4 comes as
//! fragmented MP4 that ffprobe reads with every frame and ffmpeg decodes cleanly; any other
//! file comes as usual, with a note saying why it was not fragmented.

use std::process::Command;
use std::time::Duration;

use chunkcast_client::play::{PlayOptions, Player};
use chunkcast_client::url::Scheme;
use chunkcast_protocol::media::{Codec, VisualFormat};
use chunkcast_testkit::{connect, require_tool, server_with};

const TIMEOUT: Duration = Duration::from_secs(60);

fn ffprobe_frames(path: &std::path::Path, sel: &str) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-ignore_editlist", "1", "-count_frames"])
        .args([
            "-select_streams",
            sel,
            "-show_entries",
            "stream=nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe {path:?}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progressive_mp4_opened_with_fragment_plays_as_fmp4() {
    if !require_tool("ffmpeg", "apt-get install ffmpeg") {
        return;
    }
    let lib = tempfile::tempdir().unwrap();
    let film = lib.path().join("film.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "4"])
        .args([
            "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
        ])
        .arg(&film)
        .status()
        .unwrap();
    assert!(made.success());
    let tone = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=8000",
            "-t",
            "1",
        ])
        .arg(lib.path().join("tone.wav"))
        .status()
        .unwrap();
    assert!(tone.success());
    let root = lib.path().to_owned();
    let server = server_with(move |c| c.root = Some(root)).await;
    for scheme in [Scheme::Tcp, Scheme::Quic] {
        let session = connect(&server, scheme).await;
        let out = lib.path().join(format!("out-{scheme:?}.mp4"));
        let opts = PlayOptions {
            buffer: Duration::from_millis(20),
            sinks: vec![format!("file:{}", out.display()).parse().unwrap()],
            ..PlayOptions::default()
        };
        let player = tokio::time::timeout(
            TIMEOUT,
            Player::open_fragmented(&session, "film.mp4", &opts),
        )
        .await
        .expect("opens in time")
        .expect("opens");
        let opened = player.opened();
        assert!(opened.note.is_none(), "{:?}", opened.note);
        assert!(
            matches!(opened.codec, Codec::Video(v) if v.format == VisualFormat::Fmp4
                && (v.width, v.height, v.fps_num, v.fps_den) == (320, 240, 25, 1)),
            "{:?}",
            opened.codec
        );
        let report = tokio::time::timeout(TIMEOUT, player.run())
            .await
            .expect("plays in time")
            .expect("plays");
        assert!(!report.interrupted);
        let bytes = std::fs::read(&out).unwrap();
        // Fragmented: an mvex in the init segment, then moof boxes.
        assert!(bytes.windows(4).any(|w| w == b"mvex"));
        assert!(bytes.windows(4).filter(|w| *w == b"moof").count() >= 4);
        assert_eq!(ffprobe_frames(&out, "v:0"), ffprobe_frames(&film, "v:0"));
        assert_eq!(ffprobe_frames(&out, "a:0"), ffprobe_frames(&film, "a:0"));
        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&out)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            decode.status.success() && decode.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&decode.stderr)
        );

        // Not an MP4: served as it is (and plays), and the note says why.
        let opts = PlayOptions {
            buffer: Duration::from_millis(20),
            ..PlayOptions::default()
        };
        let p = Player::open_fragmented(&session, "tone.wav", &opts)
            .await
            .expect("a WAV opens");
        let note = p.opened().note.clone();
        assert!(
            note.as_ref().is_some_and(|n| n.contains("not fragmented")),
            "{note:?}"
        );
        assert!(p.run().await.is_ok());
        session.close().await;
    }
}
