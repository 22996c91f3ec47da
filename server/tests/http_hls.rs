//! HLS over the HTTP interface, played by ffmpeg with no chunkcast code: a progressive MP4
//! file (through the fragmenter), a fragmented MP4 file (cut in place), and a live fMP4
//! channel whose playlist slides while ffmpeg reads it. ffmpeg decodes to the null muxer
//! (`-f null -`: ffplay needs a display, and ffplay is ffmpeg's demuxers and decoders).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chunkcast_client::url::Scheme;
use chunkcast_media::ingest::{InputFormat, Limits, LiveInput};
use chunkcast_protocol::{ChunkFlags, StreamId};
use chunkcast_server::Server;
use chunkcast_testkit::nginx::get;
use chunkcast_testkit::{connect, require_tool, server_with};

const LIMIT: Duration = Duration::from_secs(60);
const FFMPEG: &str = "apt-get install ffmpeg";
/// Frames in each generated clip: 3 s at 25 fps, a keyframe every 25.
const FRAMES: u32 = 75;

/// Makes `name` in `dir` with ffmpeg: 3 s of H.264 test pattern, `movflags` as given.
fn make_mp4(dir: &Path, name: &str, movflags: &str) {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
        ])
        .args([
            "-frames:v",
            &FRAMES.to_string(),
            "-c:v",
            "libx264",
            "-g",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-movflags", movflags, "-f", "mp4"])
        .arg(dir.join(name))
        .output()
        .expect("runs ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frames ffmpeg decodes from `url` (its progress line's last `frame=`).
async fn decoded_frames(url: &str, extra: &[&str]) -> (u32, String) {
    let child = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "info"])
        .args(extra)
        .args(["-i", url, "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("runs ffmpeg");
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("ffmpeg ends")
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg failed: {log}");
    let frames = log
        .rsplit("frame=")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (frames, log)
}

async fn server(root: &Path) -> Server {
    let root = root.to_owned();
    server_with(move |c| {
        c.root = Some(root);
        c.http = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

fn base(server: &Server) -> SocketAddr {
    server.http_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_the_hls_playlists_of_mp4_and_fmp4_files() {
    if !require_tool("ffmpeg", FFMPEG) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        make_mp4(dir.path(), "progressive.mp4", "+faststart");
        make_mp4(
            dir.path(),
            "fragmented.mp4",
            "frag_keyframe+empty_moov+default_base_moof",
        );
        let server = server(dir.path()).await;
        let addr = base(&server);
        for name in ["progressive.mp4", "fragmented.mp4"] {
            let playlist = get(addr, &format!("/v1/hls/{name}/index.m3u8"), &[], LIMIT)
                .await
                .unwrap();
            assert_eq!(playlist.status, 200, "{name}");
            assert_eq!(
                playlist.header("content-type"),
                Some("application/vnd.apple.mpegurl")
            );
            let text = String::from_utf8(playlist.body).unwrap();
            assert!(text.contains("#EXT-X-MAP:URI=\"init-"), "{text}");
            assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
            // A keyframe every second: three segments of about a second.
            assert_eq!(text.matches("#EXTINF:").count(), 3, "{name}: {text}");
            let url = format!("http://{addr}/v1/hls/{name}/index.m3u8");
            let (frames, log) = decoded_frames(&url, &[]).await;
            eprintln!("ffmpeg decoded {frames} frames of {name} over HLS");
            assert_eq!(frames, FRAMES, "{name}: {log}");
        }
        let plain = get(addr, "/v1/hls/nope.mp4/index.m3u8", &[], LIMIT)
            .await
            .unwrap();
        assert_eq!(plain.status, 404);
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_follows_the_sliding_hls_playlist_of_a_live_fmp4_channel() {
    if !require_tool("ffmpeg", FFMPEG) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        make_mp4(
            dir.path(),
            "cam.mp4",
            "frag_keyframe+empty_moov+default_base_moof",
        );
        let server = server(dir.path()).await;
        let addr = base(&server);
        // The camera: the fMP4 cut as a live input is, fragment by fragment.
        let bytes = std::fs::read(dir.path().join("cam.mp4")).unwrap();
        let mut input = LiveInput::new(
            chunkcast_media::Config::new(StreamId(0)),
            Some(InputFormat::Fmp4),
            Limits::default(),
        )
        .unwrap();
        let mut chunks = Vec::new();
        input.push(&bytes, 0, &mut chunks).unwrap();
        input.finish(&mut chunks).unwrap();
        let codec = input.codec().expect("the init segment was read");
        let session = connect(&server, Scheme::Tcp).await;
        let mut publisher = session.publish("live/cam", codec).await.unwrap();
        // The first two seconds now; the rest while ffmpeg watches.
        let split = chunks
            .iter()
            .position(|c| c.pts_us >= 2_000_000 && c.has(ChunkFlags::KEY))
            .expect("a keyframe at 2 s");
        let mut rest = chunks.split_off(split);
        // An HTTP viewer's ring starts at the channel's latest keyframe: ask for the playlist
        // once the first fragment is out, so that the ring holds the clip from its start.
        let first_media = chunks
            .iter()
            .position(|c| !c.has(ChunkFlags::INIT))
            .expect("media");
        let later = chunks.split_off(first_media + 1);
        for c in chunks {
            publisher.send(c).await.unwrap();
        }
        while get(addr, "/v1/hls/live/cam/index.m3u8", &[], LIMIT)
            .await
            .unwrap()
            .status
            != 200
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for c in later {
            publisher.send(c).await.unwrap();
        }
        let playlist = loop {
            let r = get(addr, "/v1/hls/live/cam/index.m3u8", &[], LIMIT)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&r.body).into_owned();
            if r.status == 200 && text.matches("#EXTINF:").count() >= 1 {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!playlist.contains("#EXT-X-ENDLIST"), "live: {playlist}");
        assert!(playlist.contains("#EXT-X-MAP:URI="), "{playlist}");

        let url = format!("http://{addr}/v1/hls/live/cam/index.m3u8");
        let watcher =
            tokio::spawn(async move { decoded_frames(&url, &["-live_start_index", "0"]).await });
        // ffmpeg reads what is listed, then reloads: the rest arrives, and the end.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let last = rest.len() - 1;
        rest[last].flags = rest[last].flags | ChunkFlags::END_OF_STREAM;
        for c in rest {
            publisher.send(c).await.unwrap();
        }
        let (frames, log) = watcher.await.unwrap();
        eprintln!("ffmpeg decoded {frames} frames of the live channel over HLS");
        // Every frame: the ring held the channel from its first fragment.
        assert_eq!(frames, FRAMES, "{log}");
        session.close().await;
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_playlist_url_signs_its_segments_so_players_need_no_header() {
    if !require_tool("ffmpeg", FFMPEG) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        make_mp4(dir.path(), "a.mp4", "+faststart");
        let root = dir.path().to_owned();
        let server = server_with(move |c| {
            c.root = Some(root);
            c.http = Some("127.0.0.1:0".parse().unwrap());
            c.token = Some("s3cret".into());
        })
        .await;
        let addr = base(&server);
        let path = "/v1/hls/a.mp4/index.m3u8";
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 300;
        let key = blake3::derive_key("chunkcast http signed url v1", b"s3cret");
        let sig = blake3::keyed_hash(&key, format!("{exp}\n{path}").as_bytes());
        let signed = format!("{path}?exp={exp}&sig={}", hex::encode(sig.as_bytes()));
        let unsigned = get(addr, path, &[], LIMIT).await.unwrap();
        assert_eq!(unsigned.status, 401);
        let playlist = get(addr, &signed, &[], LIMIT).await.unwrap();
        assert_eq!(playlist.status, 200);
        let text = String::from_utf8(playlist.body).unwrap();
        assert!(text.contains(&format!(".m4s?exp={exp}&sig=")), "{text}");
        let (frames, log) = decoded_frames(&format!("http://{addr}{signed}"), &[]).await;
        assert_eq!(frames, FRAMES, "{log}");
        server.shutdown().await;
    })
    .await
    .expect("within the limit");
}
