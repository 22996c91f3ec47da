//! A TCP proxy that cuts its connections, as a failing network would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `target`: its first connection carries `first` bytes from the server, each
/// later one `later` (read when it is accepted), then both sides are dropped. It serves at
/// most 64 connections, so that a test's retry loop cannot make it run forever.
pub async fn cutting_proxy(
    target: SocketAddr,
    first: usize,
    later: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        for i in 0..64 {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let limit = if i == 0 {
                first
            } else {
                later.load(Ordering::SeqCst)
            };
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return; // dropping the client cuts it, as the test wants
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut left = limit;
                let mut buf = vec![0u8; 16 << 10];
                while left > 0 {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(left),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    left -= n;
                }
                up.abort();
            });
        }
    });
    addr
}
