//! A server that handshakes and then says nothing more: the client gives up after the idle
//! timeout with a typed error, instead of waiting forever. On a paused clock: the 30 s pass
//! in no time, and exactly.

use std::time::Duration;

use bytes::BytesMut;
use chunkcast_client::error::ClientError;
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::Url;
use chunkcast_protocol::session::DEFAULT_IDLE_TIMEOUT;
use chunkcast_protocol::wire::{Caps, Decoder, Frame, VERSION, Welcome, encode};
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

/// A peer that answers the `HELLO` with a `WELCOME`, then reads and never answers.
async fn mute_server() -> (Url, mpsc::UnboundedReceiver<Frame>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("tcp://{}/", listener.local_addr().unwrap())).unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
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
    match err {
        ClientError::Silent(silent) => assert_eq!(silent, DEFAULT_IDLE_TIMEOUT),
        other => panic!("not the silent-server error: {other:?}"),
    }
    assert!(err_is_reported_as_lost(&ClientError::Silent(waited)));
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

/// What the user reads: a lost connection, and why.
fn err_is_reported_as_lost(e: &ClientError) -> bool {
    let text = e.to_string();
    text.starts_with("connection lost") && text.contains("silent")
}
