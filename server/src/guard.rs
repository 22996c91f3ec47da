//! [`Guarded`]: the byte stream under every TCP connection (plain or TLS), with a kill switch,
//! a bound on how long a write may wait, and byte counting.
//!
//! The link runs its reader and writer as tasks of their own; once the connection is over,
//! the server kills the stream so that neither can outlive it (a client that keeps its socket
//! open but sends nothing would otherwise pin the reader, and one that stops reading would pin
//! the writer). The write bound is what closes a client that stops reading: when the socket
//! has taken no byte for the idle timeout, writes fail and the whole stream is killed.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::metrics::{Dropped, Metrics, Transport};

/// Time a finished connection's stream gets to flush its last frames and see the client
/// close before it is killed: a `GOODBYE` or `ERROR` is a few bytes, a second is plenty.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// A byte stream with a kill switch, a write-stall bound and byte counters.
pub(crate) struct Guarded<T> {
    inner: T,
    kill: CancellationToken,
    killed_read: Pin<Box<WaitForCancellationFutureOwned>>,
    killed_write: Pin<Box<WaitForCancellationFutureOwned>>,
    stall_limit: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    sent: Counter,
    received: Counter,
    _gone: DropGuard,
}

/// The server's side of a [`Guarded`] stream, kept while the link owns the stream.
pub(crate) struct Handle {
    kill: CancellationToken,
    gone: CancellationToken,
}

impl<T> Guarded<T> {
    /// Wraps `inner`: writes that make no progress for `stall_limit` fail.
    pub(crate) fn new(inner: T, stall_limit: Duration, metrics: Arc<Metrics>) -> (Self, Handle) {
        let kill = CancellationToken::new();
        let gone = CancellationToken::new();
        let (sent, received) = metrics.byte_counters(Transport::Tcp);
        let guarded = Self {
            inner,
            killed_read: Box::pin(kill.clone().cancelled_owned()),
            killed_write: Box::pin(kill.clone().cancelled_owned()),
            kill: kill.clone(),
            stall_limit,
            stall: None,
            metrics,
            sent,
            received,
            _gone: gone.clone().drop_guard(),
        };
        (guarded, Handle { kill, gone })
    }

    fn killed(&mut self, cx: &mut Context<'_>, write: bool) -> bool {
        let f = if write {
            &mut self.killed_write
        } else {
            &mut self.killed_read
        };
        self.kill.is_cancelled() || f.as_mut().poll(cx).is_ready()
    }

    /// Turns a write's outcome into the stream's: progress resets the stall timer, a wait
    /// runs it, and a wait past the limit kills the stream.
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.stall_limit;
                let timer = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.metrics.dropped(Dropped::WriteStall);
                self.kill.cancel();
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client took no data for {limit:?}"),
                )))
            }
        }
    }
}

impl<T> Guarded<T> {
    /// One write to the inner stream (`write` is `poll_write`, `poll_write_vectored` or
    /// `poll_send_file`), through the kill switch, the byte count and the stall bound.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        if self.killed(cx, true) {
            return Poll::Ready(Err(killed_error()));
        }
        let r = write(&mut self.inner, cx);
        if let Poll::Ready(Ok(n)) = r {
            self.sent.inc_by(n as u64);
        }
        self.after_write(cx, r)
    }
}

fn killed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by the server",
    )
}

impl Handle {
    /// Kills the stream at once: every pending and later read or write fails.
    pub(crate) fn kill(&self) {
        self.kill.cancel();
    }

    /// Gives the link [`LINGER`] to finish with the stream by itself, then kills it.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(LINGER, self.gone.cancelled()).await;
        self.kill();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx, false) {
            return Poll::Ready(Err(killed_error()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.received.inc_by((buf.filled().len() - before) as u64);
        }
        r
    }
}

/// Files go through the same kill switch, stall bound and byte count as any other write.
impl<T: chunkcast_transport::Io> chunkcast_transport::Io for Guarded<T> {
    fn sends_files(&self) -> bool {
        self.inner.sends_files()
    }

    fn cork(&mut self, on: bool) -> std::io::Result<()> {
        self.inner.cork(on)
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        self.write_with(cx, |inner, cx| inner.poll_send_file(cx, file, offset, len))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| Pin::new(inner).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().write_with(cx, |inner, cx| {
            Pin::new(inner).poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx, true) {
            return Poll::Ready(Err(killed_error()));
        }
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.killed(cx, true) {
            return Poll::Ready(Err(killed_error()));
        }
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.after_write(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_writes_after_the_limit() {
        let (near, _far) = tokio::io::duplex(1024);
        let metrics = Arc::new(Metrics::new());
        let (mut g, _h) = Guarded::new(near, Duration::from_secs(3), metrics.clone());
        let started = tokio::time::Instant::now();
        let e = g.write_all(&[0u8; 64 << 10]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // The whole stream is dead now, reads included.
        let mut b = [0u8; 1];
        assert!(g.read(&mut b).await.is_err());
        assert!(metrics.encode().contains("reason=\"write_stall\"} 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        let (near, mut far) = tokio::io::duplex(1024);
        let (mut g, _h) = Guarded::new(near, Duration::from_secs(3), Arc::new(Metrics::new()));
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 512];
            let mut n = 0;
            while n < 16 << 10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                n += far.read(&mut b).await.unwrap();
            }
        });
        g.write_all(&[0u8; 16 << 10]).await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn kill_wakes_a_pending_read() {
        let (near, _far) = tokio::io::duplex(1024);
        let (mut g, h) = Guarded::new(near, Duration::from_secs(3), Arc::new(Metrics::new()));
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 1];
            g.read(&mut b).await
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        h.kill();
        assert!(reader.await.unwrap().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn close_waits_for_the_stream_to_go_then_kills() {
        let (near, _far) = tokio::io::duplex(1024);
        let (g, h) = Guarded::new(near, Duration::from_secs(3), Arc::new(Metrics::new()));
        drop(g);
        let t = tokio::time::Instant::now();
        h.close().await;
        assert!(t.elapsed() < LINGER, "a dropped stream needs no linger");
    }
}
