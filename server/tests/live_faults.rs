//! Live channels under faults: the channel table goes back to its idle size, viewers leave
//! with their connections, a waiting subscriber's connection closes when its client leaves, a
//! new publisher takes a channel over, and the per-connection stream checks hold for
//! `PUBLISH` and `SUBSCRIBE`. Every test runs an in-process server on loopback, observed
//! through its metrics and `LIST live/`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chunkcast_client::error::ClientError;
use chunkcast_client::session::{Incoming, Session};
use chunkcast_client::url::Scheme;
use chunkcast_protocol::wire::Frame;
use chunkcast_protocol::{
    Chunk, ChunkFlags, Codec, ErrorCode, StreamId, VideoParams, VisualFormat,
};
use chunkcast_server::{Config, Server};
use chunkcast_testkit::{
    End, POLL_EVERY, connect, encoded, metric, poll_until, raw_session, read_frames, scrape,
    server_with,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Hard bound on each test.
const LIMIT: Duration = Duration::from_secs(120);
/// Time a condition the server should reach "at once" is given before the test fails: far
/// below the 30 s idle timeout the defects waited for, far above any scheduling delay.
const PROMPT: Duration = Duration::from_secs(5);

const CHANNELS: &str = "chunkcast_live_channels";
const VIEWERS: &str = "chunkcast_live_viewers";
const EVICTED: &str = "chunkcast_live_publishers_evicted_total";

/// A server with metrics on, and room for every test client from 127.0.0.1.
async fn server(f: impl FnOnce(&mut Config)) -> Server {
    server_with(|c| {
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
        c.limits.max_connections_per_ip = 512;
        f(c);
    })
    .await
}

async fn gauge(server: &Server, series: &str) -> f64 {
    metric(&scrape(server.metrics_addr().unwrap()).await, series)
}

/// Waits until `series` reads `want`, for at most `within`; returns how long it took.
async fn settles(server: &Server, series: &str, want: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = gauge(server, series).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{series} is {got} after {within:?}, expected {want}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The viewer count `LIST live/` shows for `channel`, `None` when it is not listed.
async fn listed(s: &Session, channel: &str) -> Option<u32> {
    let entries = s.list("live/").await.unwrap();
    entries
        .iter()
        .find(|e| e.path == channel)
        .map(|e| e.viewers)
}

fn video() -> Codec {
    Codec::Video(VideoParams {
        format: VisualFormat::Mjpeg,
        width: 64,
        height: 64,
        fps_num: 25,
        fps_den: 1,
    })
}

/// Frame `n`: one chunk carrying `n`, a keyframe when `n` is a multiple of 10, at pts `n`
/// frames in.
fn frame(n: u64) -> Chunk {
    let key = if n % 10 == 0 {
        ChunkFlags::KEY
    } else {
        ChunkFlags::empty()
    };
    let mut payload = vec![(n % 251) as u8; 200];
    payload[..8].copy_from_slice(&n.to_be_bytes());
    Chunk::new(
        StreamId(0),
        n,
        0,
        n * 40_000,
        40_000,
        key | ChunkFlags::END_OF_UNIT,
        Bytes::from(payload),
    )
}

fn number(c: &Chunk) -> u64 {
    u64::from_be_bytes(c.payload[..8].try_into().unwrap())
}

/// The next media chunk (empty end chunks skipped), or the error that ended the stream.
async fn next_media(inc: &mut Incoming) -> Result<Option<Chunk>, ClientError> {
    loop {
        match tokio::time::timeout(PROMPT, inc.next()).await {
            Err(_) => panic!("no chunk within {PROMPT:?}"),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(e),
            Ok(Some(Ok(c))) if c.payload.is_empty() => {}
            Ok(Some(Ok(c))) => return Ok(Some(c)),
        }
    }
}

/// Publishes `chunks` bytes-chunks to `channel` and ends it.
async fn publish_and_end(s: &Session, channel: &str, chunks: u64) {
    let mut p = s.publish(channel, Codec::Bytes).await.unwrap();
    for n in 0..chunks {
        let mut flags = ChunkFlags::KEY | ChunkFlags::END_OF_UNIT;
        if n + 1 == chunks {
            flags = flags.with(ChunkFlags::END_OF_STREAM);
        }
        let payload = Bytes::from(n.to_be_bytes().to_vec());
        p.send(Chunk::new(
            StreamId(0),
            n,
            0,
            n * 1000,
            1000,
            flags,
            payload,
        ))
        .await
        .unwrap();
    }
    p.finish().await.unwrap();
}

fn subscribe(request: u32, stream: u32, channel: &str) -> Frame {
    Frame::Subscribe {
        request,
        stream: StreamId(stream),
        channel: channel.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_subscribes_and_a_thousand_publishes_leave_the_table_at_its_idle_size() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|c| {
            // The flood is the point here, not the rate limit (adversarial.rs tests that).
            c.limits.max_requests_per_sec = 1_000_000;
            c.limits.max_streams_per_connection = 2_000;
            // The call publisher at the end leaves without ending its track, which lingers.
            c.limits.live_linger = Duration::from_secs(1);
        })
        .await;
        let idle = gauge(&server, CHANNELS).await;
        assert_eq!(idle, 0.0);
        // 10 000 SUBSCRIBEs to made-up names over 8 connections: each waits for a publisher.
        let mut socks: Vec<TcpStream> = Vec::new();
        for c in 0..8u32 {
            let mut sock = raw_session(&server).await;
            let frames: Vec<Frame> = (1..=1250u32)
                .map(|i| subscribe(i, i, &format!("live/made-up-{c}-{i}")))
                .collect();
            sock.write_all(&encoded(&frames)).await.unwrap();
            socks.push(sock);
        }
        settles(&server, VIEWERS, 10_000.0, Duration::from_secs(30)).await;
        let waiting = gauge(&server, CHANNELS).await;
        println!("channel table while 10 000 subscribers wait: {waiting}");
        // Names only subscribers wait for take no publishing slot: publishing still works.
        let publisher = connect(&server, Scheme::Tcp).await;
        publish_and_end(&publisher, "live/while-waiting", 3).await;
        // Half the connections cancel their subscriptions, the other half just go.
        for sock in &mut socks[..4] {
            let closes: Vec<Frame> = (1..=1250u32)
                .map(|i| Frame::Close {
                    stream: StreamId(i),
                    code: ErrorCode::None,
                    message: String::new(),
                })
                .collect();
            sock.write_all(&encoded(&closes)).await.unwrap();
        }
        socks.truncate(4);
        settles(&server, VIEWERS, 0.0, Duration::from_secs(30)).await;
        settles(&server, CHANNELS, idle, PROMPT).await;
        drop(socks);

        // 1 000 distinct publishes, each ending its channel: 950 over TCP, 50 over QUIC.
        let quic = connect(&server, Scheme::Quic).await;
        for i in 0..1000 {
            let s = if i % 20 == 0 { &quic } else { &publisher };
            publish_and_end(s, &format!("live/distinct-{i}"), 2).await;
        }
        let took = settles(&server, CHANNELS, idle, PROMPT).await;
        println!("channel table after 1 000 ended publishes: idle ({idle}) within {took:?}");
        assert!(publisher.list("live/").await.unwrap().is_empty());

        // And the server still takes a new channel, with a viewer, and a new call room.
        let viewer = connect(&server, Scheme::Tcp).await;
        let (inc, ()) = tokio::join!(viewer.subscribe("live/after"), async {
            settles(&server, VIEWERS, 1.0, PROMPT).await;
            publish_and_end(&publisher, "live/after", 5).await;
        });
        let mut inc = inc.unwrap();
        let mut got = 0u64;
        while let Some(c) = next_media(&mut inc).await.unwrap() {
            assert_eq!(c.payload, Bytes::from(got.to_be_bytes().to_vec()));
            got += 1;
        }
        assert_eq!(got, 5);
        let call = connect(&server, Scheme::Tcp).await;
        let p = call.publish("call/after/audio", Codec::Bytes).await;
        assert!(p.is_ok(), "a new call room: {:?}", p.err());
        drop(p);
        call.close().await;
        viewer.close().await;
        publisher.close().await;
        quic.close().await;
        settles(&server, CHANNELS, idle, PROMPT).await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_publishers_channel_keeps_its_numbering_for_the_linger_then_goes() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|c| c.limits.live_linger = Duration::from_secs(3)).await;
        let channel = "live/linger";
        let a = connect(&server, Scheme::Tcp).await;
        let mut pa = a.publish(channel, video()).await.unwrap();
        for n in 0..6 {
            pa.send(frame(n)).await.unwrap();
        }
        // A sleep, not a condition: nothing the server shows says it has taken the frames in
        // (the publisher's chunks reach the channel apart from its control frames).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let viewer = connect(&server, Scheme::Tcp).await;
        let mut inc = viewer.subscribe(channel).await.unwrap();
        for n in 0..6 {
            assert_eq!(number(&next_media(&mut inc).await.unwrap().unwrap()), n);
        }
        // The publisher's process dies: no end of stream, no goodbye.
        drop(pa);
        drop(a);
        let e = next_media(&mut inc).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PublisherLost), "{e}");
        drop(inc);
        // The channel lingers, and a viewer that subscribes again waits for the next
        // publisher, which continues the channel's numbering.
        assert_eq!(listed(&viewer, channel).await, Some(0));
        let b = connect(&server, Scheme::Tcp).await;
        let (inc, pb) = tokio::join!(viewer.subscribe(channel), async {
            settles(&server, VIEWERS, 1.0, PROMPT).await;
            b.publish(channel, video()).await
        });
        let (mut inc, mut pb) = (inc.unwrap(), pb.unwrap());
        assert_eq!(inc.opened.start_seq, 6, "seq continues");
        for n in 20..22 {
            let mut f = frame(n);
            f.pts_us = (n - 20) * 40_000;
            pb.send(f).await.unwrap();
        }
        let c = next_media(&mut inc).await.unwrap().unwrap();
        assert_eq!((number(&c), c.seq), (20, 6));
        assert_eq!(
            c.pts_us,
            6 * 40_000,
            "pts continue after the lost publisher's"
        );
        // Lost again; once nobody is left the channel goes after the linger.
        drop(pb);
        drop(b);
        let e = next_media(&mut inc)
            .await
            .map(|c| c.map(|c| number(&c)))
            .err();
        let e = match e {
            Some(e) => e,
            None => next_media(&mut inc).await.unwrap_err(),
        };
        assert_eq!(e.code(), Some(ErrorCode::PublisherLost), "{e}");
        drop(inc);
        assert_eq!(gauge(&server, CHANNELS).await, 1.0, "lingering");
        let took = settles(&server, CHANNELS, 0.0, Duration::from_secs(15)).await;
        println!("a lost publisher's channel went {took:?} after its last user");
        assert_eq!(listed(&viewer, channel).await, None);
        viewer.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// A publisher of video to `channel` over TCP, three frames sent, the stream left open.
async fn steady_publisher(
    server: &Server,
    channel: &str,
) -> (Session, chunkcast_client::session::Publisher) {
    let s = connect(server, Scheme::Tcp).await;
    let mut p = s.publish(channel, video()).await.unwrap();
    for n in 0..3 {
        p.send(frame(n)).await.unwrap();
    }
    (s, p)
}

/// A raw viewer of `channel`: subscribed, `OPENED` read.
async fn raw_viewer(server: &Server, channel: &str) -> TcpStream {
    let mut sock = raw_session(server).await;
    sock.write_all(&encoded(&[subscribe(1, 1, channel)]))
        .await
        .unwrap();
    settles(server, VIEWERS, 1.0, PROMPT).await;
    sock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_client_vanishes_is_counted_out_at_once() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let channel = "live/abrupt";
        let (s, _p) = steady_publisher(&server, channel).await;
        // Over TCP: the client's socket goes.
        let sock = raw_viewer(&server, channel).await;
        assert_eq!(listed(&s, channel).await, Some(1));
        drop(sock);
        let took = settles(&server, VIEWERS, 0.0, PROMPT).await;
        println!("tcp viewer counted out {took:?} after its socket closed");
        assert_eq!(listed(&s, channel).await, Some(0));
        // Over QUIC: the client leaves (goodbye, then the connection is closed), which aborts
        // its streams.
        let q = connect(&server, Scheme::Quic).await;
        let inc = q.subscribe(channel).await.unwrap();
        settles(&server, VIEWERS, 1.0, PROMPT).await;
        drop(inc);
        q.close().await;
        let took = settles(&server, VIEWERS, 0.0, PROMPT).await;
        println!("quic viewer counted out {took:?} after its connection closed");
        assert_eq!(listed(&s, channel).await, Some(0));
        s.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_dropped_for_idleness_is_counted_out() {
    tokio::time::timeout(LIMIT, async {
        let idle = Duration::from_secs(2);
        let server = server(|c| c.limits.idle_timeout = idle).await;
        let channel = "live/idle";
        let (s, mut p) = steady_publisher(&server, channel).await;
        // The viewer's client stops answering (a paused or vanished host): the server drops
        // it after the idle timeout, aborting its streams.
        let _sock = raw_viewer(&server, channel).await;
        let start = Instant::now();
        while start.elapsed() < idle * 3 && gauge(&server, VIEWERS).await != 0.0 {
            // The publisher stays alive and sending meanwhile.
            s.clock().await.unwrap();
            p.send(frame(3)).await.unwrap();
            // real time: the idle timeout runs on the server's clock; this paces the publisher
            // while the loop polls the condition (the viewer counted out).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(gauge(&server, VIEWERS).await, 0.0, "viewer still counted");
        println!("idle viewer counted out after {:?}", start.elapsed());
        assert_eq!(listed(&s, channel).await, Some(0));
        s.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_subscriber_whose_client_leaves_has_its_connection_closed_at_once() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let mut sock = raw_viewer(&server, "live/nobody-home").await;
        assert_eq!(gauge(&server, CHANNELS).await, 1.0);
        // The client is done sending (EOF); the server must not sit on the connection.
        let start = Instant::now();
        sock.shutdown().await.unwrap();
        let (_, end) = read_frames(&mut sock, PROMPT).await;
        let took = start.elapsed();
        assert_eq!(end, End::Eof, "the server kept the connection open");
        println!("waiting subscriber's connection closed {took:?} after its client's EOF");
        settles(&server, VIEWERS, 0.0, PROMPT).await;
        settles(&server, CHANNELS, 0.0, PROMPT).await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_publisher_takes_over_and_the_viewer_carries_on() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        for (k, scheme) in [Scheme::Tcp, Scheme::Quic].into_iter().enumerate() {
            let channel = format!("live/takeover-{}", scheme.name());
            let a = connect(&server, scheme).await;
            let mut pa = a.publish(&channel, video()).await.unwrap();
            for n in 0..4 {
                pa.send(frame(n)).await.unwrap();
            }
            // A sleep, not a condition: nothing the server shows says it has taken the frames
            // in (on QUIC they travel apart from the control stream).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let viewer = connect(&server, scheme).await;
            let mut inc = viewer.subscribe(&channel).await.unwrap();
            for n in 4..8 {
                pa.send(frame(n)).await.unwrap();
            }
            let mut last = None;
            for n in 0..8 {
                let c = next_media(&mut inc).await.unwrap().unwrap();
                assert_eq!(number(&c), n);
                last = Some(c);
            }
            let last = last.unwrap();
            // A second publisher, as a restarted process would, while the first one's
            // connection is still up: it is accepted and the first is evicted.
            let b = connect(&server, scheme).await;
            let mut pb = b
                .publish(&channel, video())
                .await
                .unwrap_or_else(|e| panic!("{scheme:?}: takeover refused: {e}"));
            assert_eq!(gauge(&server, EVICTED).await, (k + 1) as f64);
            // Whatever the evicted publisher still sends goes nowhere.
            for n in 100..104 {
                let _ = pa.send(frame(n)).await;
            }
            // The new one starts mid-group: the viewer goes on at its first keyframe.
            for n in [203, 204, 210, 211, 212] {
                let mut f = frame(n);
                f.pts_us = (n - 203) * 40_000;
                if n == 212 {
                    f.flags = f.flags.with(ChunkFlags::END_OF_STREAM);
                }
                pb.send(f).await.unwrap();
            }
            pb.finish().await.unwrap();
            let mut got = Vec::new();
            while let Some(c) = next_media(&mut inc)
                .await
                .unwrap_or_else(|e| panic!("{scheme:?}: the viewer was closed: {e}"))
            {
                got.push(c);
            }
            let numbers: Vec<u64> = got.iter().map(number).collect();
            assert_eq!(numbers, [210, 211, 212], "{scheme:?}");
            // Frames 203 and 204 were skipped: the gap in seq marks the discontinuity.
            assert_eq!(got[0].seq, last.seq + 3, "{scheme:?}");
            assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
            assert!(got[0].pts_us > last.pts_us, "pts continue");
            drop(pa);
            a.close().await;
            b.close().await;
            viewer.close().await;
        }
        settles(&server, CHANNELS, 0.0, PROMPT).await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evicted_publisher_is_told_and_its_connection_stays_usable() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|_| {}).await;
        let channel = "live/evict-raw";
        let mut a = raw_session(&server).await;
        let publish = Frame::Publish {
            request: 1,
            stream: StreamId(7),
            channel: channel.to_owned(),
            codec: Codec::Bytes,
        };
        a.write_all(&encoded(&[publish])).await.unwrap();
        let (frames, _) = read_frames(&mut a, Duration::from_millis(300)).await;
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::Opened(o) if o.stream == StreamId(7))),
            "{frames:?}"
        );
        let b = connect(&server, Scheme::Tcp).await;
        let pb = b.publish(channel, Codec::Bytes).await;
        assert!(pb.is_ok(), "takeover refused: {:?}", pb.err());
        // A hears it on its stream, and what it still sends is no protocol error.
        let chunk = Chunk::new(
            StreamId(7),
            0,
            0,
            0,
            0,
            ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
            Bytes::from_static(b"late"),
        );
        a.write_all(&encoded(&[
            Frame::Chunk(chunk),
            Frame::List {
                request: 2,
                prefix: "live/".into(),
            },
        ]))
        .await
        .unwrap();
        let (frames, end) = read_frames(&mut a, Duration::from_millis(500)).await;
        assert_eq!(end, End::Open, "{frames:?}");
        let close = frames.iter().find_map(|f| match f {
            Frame::Close {
                stream,
                code,
                message,
            } => Some((*stream, *code, message.clone())),
            _ => None,
        });
        let (stream, code, message) = close.expect("a CLOSE for the evicted stream");
        assert_eq!((stream, code), (StreamId(7), ErrorCode::Busy));
        assert!(message.contains("taken over"), "{message}");
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::Catalog(c) if c.request == 2)),
            "{frames:?}"
        );
        drop(pb);
        drop(a);
        b.close().await;
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// The answers (by request id) among frames read for `within`.
async fn errors(sock: &mut TcpStream, within: Duration) -> Vec<(u32, ErrorCode, String)> {
    let (frames, _) = read_frames(sock, within).await;
    frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Error(e) => Some((e.request, e.code, e.message)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_obey_the_stream_checks() {
    tokio::time::timeout(LIMIT, async {
        let server = server(|c| {
            c.limits.max_streams_per_connection = 2;
            c.grace = Duration::from_secs(3);
        })
        .await;
        let mut sock = raw_session(&server).await;
        let publish = |request: u32, stream: u32| Frame::Publish {
            request,
            stream: StreamId(stream),
            channel: format!("live/checks-{request}"),
            codec: Codec::Bytes,
        };
        let frames = [
            subscribe(1, 1, "live/checks-1"),
            subscribe(2, 1, "live/checks-2"), // id in use
            publish(3, 1),                    // id in use
            subscribe(4, 2, "live/checks-4"),
            subscribe(5, 3, "live/checks-5"), // over the limit
            publish(6, 4),                    // over the limit
        ];
        sock.write_all(&encoded(&frames)).await.unwrap();
        let got = errors(&mut sock, Duration::from_secs(1)).await;
        let codes: Vec<(u32, ErrorCode)> = got.iter().map(|(r, c, _)| (*r, *c)).collect();
        assert_eq!(
            codes,
            [
                (2, ErrorCode::BadRequest),
                (3, ErrorCode::BadRequest),
                (5, ErrorCode::Busy),
                (6, ErrorCode::Busy)
            ],
            "{got:?}"
        );
        // While the server drains, nothing new starts.
        let mut other = raw_session(&server).await;
        let addr: SocketAddr = server.tcp_addr();
        let shutdown = tokio::spawn(server.shutdown());
        // Draining has begun once the TCP port stops accepting (its listener is dropped).
        let draining =
            poll_until(PROMPT, || async { TcpStream::connect(addr).await.is_err() }).await;
        assert!(
            draining,
            "{addr} still accepts after {PROMPT:?} of shutdown"
        );
        other
            .write_all(&encoded(&[subscribe(1, 1, "live/late"), publish(2, 2)]))
            .await
            .unwrap();
        let got = errors(&mut other, Duration::from_secs(1)).await;
        let codes: Vec<(u32, ErrorCode)> = got.iter().map(|(r, c, _)| (*r, *c)).collect();
        assert_eq!(
            codes,
            [(1, ErrorCode::Busy), (2, ErrorCode::Busy)],
            "{addr}: {got:?}"
        );
        assert!(got.iter().all(|(_, _, m)| m.contains("shutting down")));
        shutdown.await.unwrap();
    })
    .await
    .unwrap();
}
