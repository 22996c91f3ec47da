//! `call --sink`: what the other side sends is rendered, as `play` renders a stream.

use std::time::Duration;

use chunkcast_client::live::{CallOptions, call_with};
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::sink::Spec;
use chunkcast_client::url::Scheme;
use chunkcast_testkit::{samples, server_with, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_renders_the_other_sides_picture_and_sound() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = server_with(|_| {}).await;
        let dir = samples();
        let from = vec![
            dir.join(chunkcast_media_samples::CLIP_MJPEG),
            dir.join(chunkcast_media_samples::TONE_8K_WAV),
        ];
        let out = tempfile::tempdir().unwrap();
        let frames = out.path().join("frames");
        let wav = out.path().join("heard.wav");
        let rendering = CallOptions {
            sinks: vec![
                format!("frames:{}", frames.display())
                    .parse::<Spec>()
                    .unwrap(),
                format!("wav:{}", wav.display()).parse::<Spec>().unwrap(),
            ],
            ..Default::default()
        };
        let u = url(&server, Scheme::Tcp, "call/seen");
        let connect = ConnectOptions::default();
        let plain = CallOptions::default();
        let (a, b) = tokio::join!(
            call_with(&u, &connect, &from, &rendering),
            call_with(&u, &connect, &from, &plain)
        );
        let (a, _) = (a.unwrap(), b.unwrap());
        let video = a.received.iter().find(|t| t.track == "video").unwrap();
        let pngs = std::fs::read_dir(&frames).unwrap().count() as u64;
        assert!(
            pngs > 100 && pngs + 2 >= video.chunks,
            "{pngs} frames of {}",
            video.chunks
        );
        let heard = hound::WavReader::open(&wav).unwrap();
        let secs = heard.duration() as f64 / f64::from(heard.spec().sample_rate);
        assert!(secs > 2.5, "{secs} s of sound");
        server.shutdown().await;
    })
    .await
    .unwrap();
}
