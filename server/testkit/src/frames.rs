//! Raw frame I/O, for tests that speak the wire themselves (a hostile or broken client).

use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::session::{ClientConfig, ClientHandshake};
use chunkcast_protocol::wire::{Decoder, Frame, encode};
use chunkcast_server::Server;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `HELLO` as a client with these versions and token sends it.
pub fn hello(min: u16, max: u16, token: Option<&str>) -> BytesMut {
    let config = ClientConfig {
        min_version: min,
        max_version: max,
        token: token.map(str::to_owned),
        ..ClientConfig::default()
    };
    let mut out = BytesMut::new();
    ClientHandshake::new(config, std::time::Instant::now()).poll_transmit(&mut out);
    out
}

/// Frames encoded back to back.
pub fn encoded(fs: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in fs {
        encode(f, &mut b);
    }
    b
}

/// How a raw read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The server closed (FIN).
    Eof,
    /// The connection was reset or failed.
    Reset,
    /// Still open when the time was up.
    Open,
}

/// Reads and decodes whatever the server sends until it closes or `within` passes.
pub async fn read_frames<R: AsyncRead + Unpin>(
    sock: &mut R,
    within: Duration,
) -> (Vec<Frame>, End) {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let end = tokio::time::timeout(within, async {
        loop {
            while let Ok(Some(f)) = decoder.decode(&mut buf) {
                out.push(f);
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) => return End::Eof,
                Ok(_) => {}
                Err(_) => return End::Reset,
            }
        }
    })
    .await
    .unwrap_or(End::Open);
    while let Ok(Some(f)) = decoder.decode(&mut buf) {
        out.push(f);
    }
    (out, end)
}

/// A raw plain-TCP connection that has completed the handshake.
pub async fn raw_session(server: &Server) -> TcpStream {
    let mut sock = TcpStream::connect(server.tcp_addr())
        .await
        .expect("connects");
    sock.write_all(&hello(1, 1, None))
        .await
        .expect("HELLO sent");
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = decoder
            .decode(&mut buf)
            .expect("the server's frames decode")
        {
            assert!(matches!(f, Frame::Welcome(_)), "{f:?}");
            assert!(buf.is_empty());
            return sock;
        }
        let n = sock.read_buf(&mut buf).await.expect("reads");
        assert!(n > 0, "closed");
    }
}
