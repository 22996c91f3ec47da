//! TCP sockets: options, and telling TLS from plain chunkcast on the one port.

use std::time::Duration;

use tokio::net::TcpStream;

/// The first byte of a TLS record carrying a handshake (the ClientHello). A plain chunkcast
/// connection starts with a frame's length prefix, whose first byte is 0 for any frame under
/// 16 MiB, so one byte tells them apart.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// How a client opened a connection on the shared TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// TLS (the first byte is a TLS handshake record).
    Tls,
    /// Plain chunkcast frames.
    Plain,
}

/// Sets the options every chunkcast TCP socket uses: `TCP_NODELAY`, since chunks are written
/// whole and a realtime chunk must not wait for Nagle's timer.
pub fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)
}

/// Waits for the client's first byte without consuming it and says which flavor it is.
/// `Ok(None)` if the client closed or sent nothing within `timeout`.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> std::io::Result<Option<Flavor>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Err(_) | Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) if first[0] == TLS_HANDSHAKE_BYTE => Ok(Some(Flavor::Tls)),
        Ok(Ok(_)) => Ok(Some(Flavor::Plain)),
        Ok(Err(e)) => Err(e),
    }
}
