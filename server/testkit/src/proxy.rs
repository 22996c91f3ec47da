//! TCP proxies that misbehave as networks and middle boxes do: one cuts its connections, one
//! alters a chunk on the way (recomputing its CRC, as a tampering cache or edge would).

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

/// A plain-TCP proxy to `target` that passes every frame as it is except the server's `CHUNK`
/// with sequence number `seq` (of any stream, each connection): it flips the lowest bit of
/// that chunk's payload byte `at` (clamped to the payload) and re-encodes the frame, so that
/// its CRC32C is right again: only a check against the file's digest can catch it. It serves
/// at most 64 connections. The returned counter says how many chunks it altered.
pub async fn tampering_proxy(
    target: SocketAddr,
    seq: u64,
    at: usize,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let altered = Arc::new(AtomicUsize::new(0));
    let count = altered.clone();
    let addr = frame_proxy(target, move |frame| alter(frame, seq, at, &count)).await;
    (addr, altered)
}

/// A plain-TCP proxy to `target` that re-encodes every `CHUNK` from the server with
/// `HEADER_CRC`: a CRC over its header only, the payload left to a tree check that a stream
/// opened without asking for it does not have. It serves at most 64 connections.
pub async fn crc_stripping_proxy(target: SocketAddr) -> SocketAddr {
    frame_proxy(target, |frame| {
        map_chunk(frame, |c| {
            c.flags = c.flags.with(chunkcast_protocol::ChunkFlags::HEADER_CRC);
        })
    })
    .await
}

/// A plain-TCP proxy to `target` that passes the server's frames through `f` (each with its
/// length prefix) and the client's bytes as they are. At most 64 connections.
async fn frame_proxy(
    target: SocketAddr,
    f: impl Fn(Vec<u8>) -> Vec<u8> + Clone + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let f = f.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                // Frame by frame: a u32 length, then the type byte and body.
                loop {
                    let mut len = [0u8; 4];
                    if sr.read_exact(&mut len).await.is_err() {
                        break;
                    }
                    let mut frame = vec![0u8; 4 + u32::from_be_bytes(len) as usize];
                    frame[..4].copy_from_slice(&len);
                    if sr.read_exact(&mut frame[4..]).await.is_err() {
                        break;
                    }
                    if cw.write_all(&f(frame)).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    addr
}

/// `frame` (length prefix included), re-encoded after `f` had its say if it is a `CHUNK`
/// (so that its CRC is right for what it then holds); any other frame untouched.
fn map_chunk(frame: Vec<u8>, f: impl FnOnce(&mut chunkcast_protocol::Chunk)) -> Vec<u8> {
    use chunkcast_protocol::Frame;
    use chunkcast_protocol::wire::{Decoder, encode};
    if frame.get(4) != Some(&chunkcast_protocol::wire::FrameType::Chunk.to_u8()) {
        return frame;
    }
    let mut src = bytes::BytesMut::from(&frame[..]);
    let Ok(Some(Frame::Chunk(mut c))) = Decoder::default().decode(&mut src) else {
        return frame;
    };
    f(&mut c);
    let mut out = bytes::BytesMut::new();
    encode(&Frame::Chunk(c), &mut out);
    out.to_vec()
}

/// `frame` (length prefix included), with chunk `seq`'s payload byte `at` flipped and its
/// CRC recomputed; any other frame untouched.
fn alter(frame: Vec<u8>, seq: u64, at: usize, count: &AtomicUsize) -> Vec<u8> {
    map_chunk(frame, |c| {
        if c.seq != seq || c.payload.is_empty() {
            return;
        }
        let mut payload = c.payload.to_vec();
        let i = at.min(payload.len() - 1);
        payload[i] ^= 0x01;
        c.payload = payload.into();
        count.fetch_add(1, Ordering::SeqCst);
    })
}
