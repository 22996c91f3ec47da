//! The browser viewer's transport (`--web`): the page over HTTP, and the protocol over a
//! WebSocket, one binary message per frame, with the token, path confinement and handshake of
//! the other transports.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::wire::{
    Caps, Decoder, FileDigest, Frame, Hello, Limits, Mode, Open, Resume, encode,
};
use chunkcast_protocol::{ChunkFlags, ErrorCode, StreamId};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use chunkcast_testkit::server_with;

const TIMEOUT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<TcpStream>;

/// Sends one HTTP request and returns the whole response (the server closes after it).
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    String::from_utf8(out).unwrap()
}

async fn ws_connect(addr: SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

async fn send(ws: &mut Ws, frame: &Frame) {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf);
    ws.send(Message::Binary(buf.freeze())).await.unwrap();
}

/// The next frame, checking that its message holds exactly that one frame.
async fn recv(ws: &mut Ws) -> Frame {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a message in time")
            .expect("the WebSocket is open")
            .expect("a good message");
        let data = match msg {
            Message::Binary(b) => b,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        };
        let mut buf = BytesMut::from(&data[..]);
        let frame = Decoder::new(Limits::default())
            .decode(&mut buf)
            .expect("a valid frame")
            .expect("a whole frame in one message");
        assert!(buf.is_empty(), "one message holds one frame, no more");
        return frame;
    }
}

fn hello(token: &str) -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        caps: Caps(0),
        token: token.to_owned(),
        client_name: "web-test".to_owned(),
    })
}

fn open(request: u32, stream: u32, path: &str) -> Frame {
    Frame::Open(Open {
        request,
        stream: StreamId(stream),
        path: path.to_owned(),
        mode: Mode::Download,
        resume: Resume::Start,
        compress: false,
        raw: false,
        fragment: false,
        header_crc: false,
        chunk_size: 0,
    })
}

#[tokio::test]
async fn page_is_served() {
    let server = server_with(|c| c.web = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = server.web_addr().expect("web address");
    assert!(server.listening_line().ends_with(&format!(" web={addr}")));

    let page = http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(
        page.contains("<script type=\"module\" src=\"/app.js\">"),
        "{page}"
    );
    // Every module the entry imports, and every module those import, is served as JavaScript.
    let mut todo = vec!["app.js".to_owned()];
    let mut served = Vec::new();
    while let Some(module) = todo.pop() {
        if served.contains(&module) {
            continue;
        }
        let js = http(addr, &format!("GET /{module} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(
            js.starts_with("HTTP/1.1 200 OK\r\n") && js.contains("text/javascript"),
            "{module}: {js}"
        );
        todo.extend(
            js.split("from './")
                .skip(1)
                .filter_map(|rest| rest.split_once('\'').map(|(m, _)| m.to_owned())),
        );
        served.push(module);
    }
    for module in ["wire.js", "connection.js", "audio.js", "video.js", "ui.js"] {
        assert!(served.iter().any(|m| m == module), "{module}: {served:?}");
    }
    let missing = http(addr, "GET /../Cargo.toml HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    // Another site's page may not open the protocol through a visitor's browser.
    let cross = http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(cross.starts_with("HTTP/1.1 403 "), "{cross}");
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_over_websocket() {
    let server = server_with(|c| c.web = Some("127.0.0.1:0".parse().unwrap())).await;
    let mut ws = ws_connect(server.web_addr().unwrap()).await;
    send(&mut ws, &hello("")).await;
    assert!(matches!(recv(&mut ws).await, Frame::Welcome(_)));

    send(
        &mut ws,
        &Frame::List {
            request: 1,
            prefix: String::new(),
        },
    )
    .await;
    let mut paths = Vec::new();
    loop {
        let Frame::Catalog(c) = recv(&mut ws).await else {
            panic!("expected CATALOG");
        };
        paths.extend(c.entries.into_iter().map(|e| e.path));
        if c.last {
            break;
        }
    }
    assert!(
        paths
            .iter()
            .any(|p| p == chunkcast_media_samples::CLIP_MJPEG)
    );
    assert!(
        paths
            .iter()
            .any(|p| p == chunkcast_media_samples::TONE_8K_WAV)
    );

    let name = chunkcast_media_samples::TONE_8K_WAV;
    send(&mut ws, &open(2, 7, name)).await;
    let Frame::Opened(opened) = recv(&mut ws).await else {
        panic!("expected OPENED");
    };
    let mut file = Vec::new();
    let mut chunks = 0u64;
    loop {
        let Frame::Chunk(c) = recv(&mut ws).await else {
            continue; // a PING may come between chunks
        };
        assert_eq!(c.stream, StreamId(7));
        chunks += 1;
        file.extend_from_slice(&c.payload);
        if c.has(ChunkFlags::END_OF_STREAM) {
            break;
        }
    }
    assert_eq!(Some(chunks), opened.chunk_count);
    assert_eq!(
        blake3::hash(&file).as_bytes(),
        &chunkcast_testkit::digest_of(name),
        "the file arrives whole"
    );
    // The page does not offer DIGEST_AT_END: a file never hashed before gets its digest in
    // OPENED (the server hashes it first), never in a DIGEST frame the page does not expect.
    assert_eq!(
        opened.digest,
        FileDigest::Known(chunkcast_testkit::digest_of(name)),
        "a client without DIGEST_AT_END gets the digest up front"
    );

    // Path confinement is the library's, as on every transport.
    send(&mut ws, &open(3, 8, "../../etc/passwd")).await;
    let Frame::Error(e) = recv(&mut ws).await else {
        panic!("expected ERROR");
    };
    assert_eq!((e.request, e.code), (3, ErrorCode::BadRequest), "{e:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn token_is_required() {
    let server = server_with(|c| {
        c.web = Some("127.0.0.1:0".parse().unwrap());
        c.token = Some("sesame".to_owned());
    })
    .await;
    let addr = server.web_addr().unwrap();
    for wrong in ["", "open"] {
        let mut ws = ws_connect(addr).await;
        send(&mut ws, &hello(wrong)).await;
        let Frame::Error(e) = recv(&mut ws).await else {
            panic!("expected ERROR for token {wrong:?}");
        };
        assert_eq!((e.request, e.code), (0, ErrorCode::Unauthorized));
    }
    let mut ws = ws_connect(addr).await;
    send(&mut ws, &hello("sesame")).await;
    assert!(matches!(recv(&mut ws).await, Frame::Welcome(_)));
    server.shutdown().await;
}

#[tokio::test]
async fn exposed_web_needs_a_token() {
    let mut c = chunkcast_server::Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(chunkcast_testkit::samples().to_owned());
    c.web = Some("0.0.0.0:0".parse().unwrap());
    match chunkcast_server::Server::start(c).await {
        Err(chunkcast_server::ServerError::NeedsToken(a)) => assert!(!a.ip().is_loopback()),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an exposed --web without a token must be refused"),
    }
}

#[tokio::test]
async fn exposed_web_needs_allow_plaintext_even_with_a_token() {
    let mut c = chunkcast_server::Config::on("127.0.0.1:0".parse().unwrap());
    c.root = Some(chunkcast_testkit::samples().to_owned());
    c.web = Some("0.0.0.0:0".parse().unwrap());
    c.token = Some("t".into());
    match chunkcast_server::Server::start(c).await {
        Err(e @ chunkcast_server::ServerError::WebPlaintext(_)) => {
            assert!(e.to_string().contains("--allow-plaintext"), "{e}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an exposed plain-HTTP --web must be refused"),
    }
}
