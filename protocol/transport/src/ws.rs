//! The WebSocket transport's accept side: [`upgrade`] answers an HTTP upgrade request, and
//! [`WsIo`] is the WebSocket seen as the byte stream the TCP link speaks.
//!
//! - Reading: each binary message's bytes are appended to the stream; the frames' own length
//!   prefixes delimit them, so a client may split or batch frames over messages as it likes
//!   (the page sends one frame per message).
//! - Writing: the link writes whole frames, several per write; the bytes are cut back into
//!   frames at their `u32` length prefixes and each goes out as one binary message, length
//!   prefix included, exactly as on TCP.
//!
//! Backpressure: a write is taken only once every complete frame before it has been handed
//! to the WebSocket, which accepts messages until its own write buffer is full and then waits
//! for the socket, so a browser that stops reading stalls the link as a TCP client would.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Completes a WebSocket upgrade whose request head has been read: answers `101` for the
/// client's `Sec-WebSocket-Key`, and wraps the stream as chunkcast's byte stream. Messages
/// over `max_message` bytes (one frame and its length prefix, at most) are refused.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    key: &str,
    max_message: usize,
) -> io::Result<WsIo<S>> {
    let accept = derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    io.write_all(answer.as_bytes()).await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    Ok(WsIo::new(ws))
}

/// A WebSocket as a byte stream of chunkcast frames.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The rest of the last binary message received.
    incoming: Bytes,
    /// Received a close (or the socket ended): reads return end of stream.
    eof: bool,
    /// Bytes written and not yet sent as messages (at most one frame is incomplete).
    outgoing: BytesMut,
}

impl<S> WsIo<S> {
    /// Wraps an upgraded WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            incoming: Bytes::new(),
            eof: false,
            outgoing: BytesMut::new(),
        }
    }
}

/// The length of the first complete frame in `buf`, prefix included, if there is one.
fn complete_frame(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let total = 4 + u32::from_be_bytes(prefix) as usize;
    (buf.len() >= total).then_some(total)
}

fn ws_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Hands every complete frame buffered to the WebSocket, one message each.
    fn poll_send_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(len) = complete_frame(&self.outgoing) {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
            let frame = self.outgoing.split_to(len).freeze();
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(frame))
                .map_err(ws_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> crate::io::Io for WsIo<S> {}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming[..n]);
                this.incoming.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => this.incoming = b,
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: chunkcast frames are binary",
                    );
                    return Poll::Ready(Err(e));
                }
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_frames(cx))?;
        let mut n = 0;
        for b in bufs {
            this.outgoing.extend_from_slice(b);
            n += b.len();
        }
        // Send what is complete now; what the WebSocket cannot take yet waits for the next
        // write or flush (the waker is registered).
        if let Poll::Ready(Err(e)) = this.poll_send_frames(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frames(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frames(cx))?;
        Pin::new(&mut this.ws).poll_close(cx).map_err(ws_error)
    }
}

#[cfg(test)]
mod tests {
    use super::complete_frame;

    #[test]
    fn frames_are_cut_at_their_length_prefix() {
        assert_eq!(complete_frame(&[0, 0, 0]), None);
        assert_eq!(complete_frame(&[0, 0, 0, 2, 9]), None);
        assert_eq!(complete_frame(&[0, 0, 0, 2, 9, 9, 1]), Some(6));
    }
}
