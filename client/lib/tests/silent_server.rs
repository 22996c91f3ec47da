//! Servers that handshake and then go quiet, scripted over raw TCP: a silent one is given up
//! after the idle timeout with a typed error instead of being waited for forever; a slow one
//! that answers pings is waited for. On a paused clock: the minutes pass in no time, exactly.

use std::time::Duration;

use bytes::BytesMut;
use chunkcast_client::error::ClientError;
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::Url;
use chunkcast_protocol::session::DEFAULT_IDLE_TIMEOUT;
use chunkcast_protocol::wire::{Caps, Catalog, Decoder, Frame, VERSION, Welcome, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Reads frames from the client, forwarding each to `seen`, until it hangs up.
async fn read_frames(sock: &mut TcpStream, seen: &mpsc::UnboundedSender<Frame>) {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            if seen.send(frame).is_err() {
                return;
            }
        }
        match sock.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Accepts one client and answers its `HELLO` with a `WELCOME`.
async fn welcome(listener: &TcpListener) -> TcpStream {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    let hello = loop {
        if let Some(frame) = decoder.decode(&mut buf).unwrap() {
            break frame;
        }
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0, "no HELLO");
    };
    assert!(matches!(hello, Frame::Hello(_)), "{hello:?}");
    assert!(buf.is_empty(), "nothing but the HELLO before the WELCOME");
    let mut out = BytesMut::new();
    encode(
        &Frame::Welcome(Welcome {
            version: VERSION,
            caps: Caps::LZ4,
            session_id: 1,
            server_name: "mute".into(),
        }),
        &mut out,
    );
    sock.write_all(&out).await.unwrap();
    sock
}

/// A peer that answers the `HELLO` with a `WELCOME`, then reads and never answers.
async fn mute_server() -> (Url, mpsc::UnboundedReceiver<Frame>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("tcp://{}/", listener.local_addr().unwrap())).unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut sock = welcome(&listener).await;
        read_frames(&mut sock, &seen_tx).await;
    });
    (url, seen)
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_fails_a_request_with_a_typed_error_after_the_idle_timeout() {
    let (url, mut seen) = mute_server().await;
    let session = Session::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = session.list("").await.unwrap_err();
    let waited = start.elapsed();
    let told = err.to_string();
    assert!(
        told.starts_with("connection lost") && told.contains("silent"),
        "{told}"
    );
    match err {
        ClientError::Silent(silent) => assert_eq!(silent, DEFAULT_IDLE_TIMEOUT),
        other => panic!("not the silent-server error: {other:?}"),
    }
    assert!(
        waited >= DEFAULT_IDLE_TIMEOUT && waited < DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1),
        "gave up after {waited:?}"
    );
    // Later requests fail at once with the same reason.
    assert!(matches!(
        session.list("").await,
        Err(ClientError::Silent(_))
    ));
    drop(session);
    // The client asked, pinged meanwhile (every 5 s), and said why it left.
    let mut frames = Vec::new();
    while let Some(f) = seen.recv().await {
        frames.push(f);
    }
    assert!(
        matches!(frames.first(), Some(Frame::List { .. })),
        "{frames:?}"
    );
    let pings = frames
        .iter()
        .filter(|f| matches!(f, Frame::Ping { .. }))
        .count();
    assert_eq!(pings, 5, "{frames:?}");
    match frames.last() {
        Some(Frame::Goodbye { code, .. }) => {
            assert_eq!(*code, chunkcast_protocol::ErrorCode::Timeout)
        }
        other => panic!("{other:?}"),
    }
}

/// A server that is slow but alive (it answers pings at once and a listing after 60 s) is
/// waited for: only silence ends a connection.
#[tokio::test(start_paused = true)]
async fn a_slow_server_that_answers_pings_is_waited_for() {
    const SLOW: Duration = Duration::from_secs(60);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("tcp://{}/", listener.local_addr().unwrap())).unwrap();
    let peer = tokio::spawn(async move {
        let mut sock = welcome(&listener).await;
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::with_capacity(4096);
        let mut listing = None;
        let mut pongs = 0;
        loop {
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                let mut out = BytesMut::new();
                match frame {
                    Frame::Ping { nonce, time_us } => {
                        pongs += 1;
                        encode(
                            &Frame::Pong {
                                nonce,
                                echo_us: time_us,
                                time_us: 0,
                            },
                            &mut out,
                        );
                    }
                    Frame::List { request, .. } => {
                        listing = Some((request, tokio::time::Instant::now() + SLOW));
                    }
                    Frame::Goodbye { .. } => return pongs,
                    other => panic!("{other:?}"),
                }
                sock.write_all(&out).await.unwrap();
            }
            let due = listing.map(|(_, at)| at);
            tokio::select! {
                n = sock.read_buf(&mut buf) => if n.unwrap() == 0 { return pongs },
                () = async { tokio::time::sleep_until(due.unwrap()).await }, if due.is_some() => {
                    let (request, _) = listing.take().unwrap();
                    let mut out = BytesMut::new();
                    encode(
                        &Frame::Catalog(Catalog {
                            request,
                            last: true,
                            entries: Vec::new(),
                        }),
                        &mut out,
                    );
                    sock.write_all(&out).await.unwrap();
                }
            }
        }
    });
    let session = Session::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(session.list("").await.unwrap(), Vec::new());
    assert!(start.elapsed() >= SLOW, "{:?}", start.elapsed());
    session.close().await;
    let pongs = peer.await.unwrap();
    assert!(pongs >= 11, "pinged every 5 s while waiting: {pongs}");
}
