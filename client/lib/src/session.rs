//! A connection to a server, over any transport: connect, handshake, then requests.
//!
//! A background task reads control frames: it answers pings and hands each response to the
//! request that waits for it (by request id) or to the stream it ends (by stream id).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chunkcast_protocol::compress;
use chunkcast_protocol::session::{ClientConfig, ClientHandshake, Established, Keepalive};
use chunkcast_protocol::wire::{Entry, FileDigest, Frame, Limits, Mode, Open, Opened, Resume};
use chunkcast_protocol::{Chunk, Codec, ErrorCode, StreamId};
use chunkcast_transport::dial::{self, Dial, DialError};
use chunkcast_transport::link::ChunkResult;
use chunkcast_transport::tls::Trust;
use chunkcast_transport::{LinkRx, LinkTx, MediaTx};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ClientError;
use crate::url::{Scheme, Url};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How to trust the server's certificate (tcps, quic).
    pub trust: Trust,
    /// The server's token, if it needs one.
    pub token: Option<String>,
    /// Bound on connecting plus handshaking.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            trust: Trust::System,
            token: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What to open.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Path in the library.
    pub path: String,
    /// Download or realtime pacing.
    pub mode: Mode,
    /// Where to start.
    pub resume: Resume,
    /// Ask for lz4.
    pub compress: bool,
    /// Serve as bytes.
    pub raw: bool,
    /// Payload bytes per chunk; 0 lets the server choose.
    pub chunk_size: u32,
}

impl OpenOptions {
    /// Download `path` from the start, server's chunk size, no compression.
    pub fn download(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            mode: Mode::Download,
            resume: Resume::Start,
            compress: false,
            raw: false,
            chunk_size: 0,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u32, mpsc::Sender<Frame>>>>;
type Ends = Arc<Mutex<HashMap<StreamId, StreamEnd>>>;

/// What the control stream may still tell an open stream besides its chunks.
struct StreamEnd {
    /// The server's `CLOSE` (the stream failed or was stopped).
    close: oneshot::Sender<(ErrorCode, String)>,
    /// The server's `DIGEST` (the whole file's, after the last chunk).
    digest: Option<oneshot::Sender<[u8; 32]>>,
}

/// How long a finished stream waits for a `DIGEST` its `OPENED` announced. The server sends
/// it right after the last chunk; a server that never does is broken, and the download fails
/// with a clear error instead of hanging.
const DIGEST_WAIT: Duration = Duration::from_secs(30);

/// An established connection.
pub struct Session {
    tx: LinkTx,
    pending: Pending,
    ends: Ends,
    next_request: AtomicU32,
    next_stream: AtomicU32,
    established: Established,
    limits: Limits,
    down: watch::Receiver<Option<String>>,
    endpoint: Option<quinn::Endpoint>,
    pongs: tokio::sync::Mutex<mpsc::Receiver<Frame>>,
    epoch: Instant,
    demux: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    /// A dropped session closes its connection: the control task (which holds a sender) is
    /// stopped, so the TCP writer ends once the last stream handle is gone, and a QUIC
    /// connection is closed outright.
    fn drop(&mut self) {
        self.demux.abort();
        if let Some(conn) = self.tx.quic() {
            conn.close(quinn::VarInt::from_u32(0), b"closed");
        }
    }
}

/// Chunks a stream may buffer in the client before the reader waits (small chunks: audio).
const STREAM_BUFFER: usize = 64;
/// The same bound in bytes, for streams opened with larger chunks: 2 MiB, 32 chunks of
/// 64 KiB. A slow disk is ridden out by the writer's queue and the socket's buffers behind
/// it; more here only holds more read buffers (see `net::link`'s read pool).
const STREAM_BUFFER_BYTES: usize = 2 << 20;

impl Session {
    /// Connects to the server named by `url` and completes the handshake.
    pub async fn connect(url: &Url, opts: &ConnectOptions) -> Result<Self, ClientError> {
        let limits = Limits::default();
        let addr = dial::resolve(&url.host, url.port)
            .await
            .map_err(|e| dial_error(url, e))?;
        let how = match url.scheme {
            Scheme::Tcp => Dial::Tcp,
            Scheme::Tcps => Dial::Tls,
            Scheme::Quic => Dial::Quic,
        };
        let connecting = dial::connect(addr, &url.host, how, &opts.trust, limits);
        let (tx, rx, endpoint) = tokio::time::timeout(opts.timeout, connecting)
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|e| dial_error(url, e))?;
        let (established, rx) = tokio::time::timeout(opts.timeout, handshake(&tx, rx, opts))
            .await
            .map_err(|_| ClientError::Timeout("waiting for the server's handshake"))??;
        let pending = Pending::default();
        let ends = Ends::default();
        let (down_tx, down) = watch::channel(None);
        let (pong_tx, pongs) = mpsc::channel(4);
        let demux = tokio::spawn(demux(
            rx,
            tx.clone(),
            pending.clone(),
            ends.clone(),
            pong_tx,
            down_tx,
        ));
        Ok(Self {
            tx,
            pending,
            ends,
            next_request: AtomicU32::new(1),
            next_stream: AtomicU32::new(1),
            established,
            limits,
            down,
            endpoint,
            pongs: tokio::sync::Mutex::new(pongs),
            epoch: Instant::now(),
            demux,
        })
    }

    /// What the handshake agreed.
    pub fn established(&self) -> &Established {
        &self.established
    }

    fn lost(&self) -> ClientError {
        lost(&self.down)
    }

    async fn request(
        &self,
        build: impl FnOnce(u32) -> Frame,
    ) -> Result<mpsc::Receiver<Frame>, ClientError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(16);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if self.down.borrow().is_some() {
            return Err(self.lost());
        }
        self.tx.send(build(id)).await.map_err(|_| self.lost())?;
        Ok(rx)
    }

    /// Lists what the server has under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, ClientError> {
        let prefix = prefix.to_owned();
        let mut rx = self
            .request(|request| Frame::List { request, prefix })
            .await?;
        let mut entries = Vec::new();
        loop {
            match rx.recv().await {
                Some(Frame::Catalog(c)) => {
                    entries.extend(c.entries);
                    if c.last {
                        return Ok(entries);
                    }
                }
                Some(Frame::Error(e)) => {
                    return Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    });
                }
                Some(other) => {
                    return Err(ClientError::Lost(format!(
                        "unexpected {} answer",
                        other.name()
                    )));
                }
                None => return Err(self.lost()),
            }
        }
    }

    /// Opens a stream; its chunks arrive through the returned [`Incoming`].
    pub async fn open(&self, opts: &OpenOptions) -> Result<Incoming, ClientError> {
        let capacity = match opts.chunk_size as usize {
            0 => STREAM_BUFFER,
            n => (STREAM_BUFFER_BYTES / n).clamp(4, STREAM_BUFFER),
        };
        self.incoming(capacity, |request, stream| {
            Frame::Open(Open {
                request,
                stream,
                path: opts.path.clone(),
                mode: opts.mode,
                resume: opts.resume,
                compress: opts.compress,
                raw: opts.raw,
                chunk_size: opts.chunk_size,
            })
        })
        .await
    }

    /// Receives a live channel (`live/NAME`) or the other side of a call (`call/ROOM/TRACK`),
    /// from its latest keyframe. Waits for a publisher if the channel has none yet.
    pub async fn subscribe(&self, channel: &str) -> Result<Incoming, ClientError> {
        let channel = channel.to_owned();
        self.incoming(STREAM_BUFFER, |request, stream| Frame::Subscribe {
            request,
            stream,
            channel,
        })
        .await
    }

    async fn incoming(
        &self,
        capacity: usize,
        build: impl FnOnce(u32, StreamId) -> Frame,
    ) -> Result<Incoming, ClientError> {
        let stream = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        // Route before asking: on QUIC the chunks may overtake the OPENED frame.
        let chunks = self.tx.route(stream, capacity);
        let (close_tx, close_rx) = oneshot::channel();
        let (digest_tx, digest_rx) = oneshot::channel();
        self.ends.lock().unwrap_or_else(|e| e.into_inner()).insert(
            stream,
            StreamEnd {
                close: close_tx,
                digest: Some(digest_tx),
            },
        );
        let mut rx = self.request(|request| build(request, stream)).await?;
        let opened = match self.answer(&mut rx).await {
            Ok(o) => o,
            Err(e) => {
                self.tx.unroute(stream);
                return Err(e);
            }
        };
        let max_payload = self.limits.max_payload().max(opened.chunk_size as usize);
        Ok(Incoming {
            opened,
            chunks,
            close: close_rx,
            digest: digest_rx,
            max_payload,
            tx: self.tx.clone(),
            down: self.down.clone(),
            done: false,
            ends: self.ends.clone(),
        })
    }

    async fn answer(&self, rx: &mut mpsc::Receiver<Frame>) -> Result<Opened, ClientError> {
        match rx.recv().await {
            Some(Frame::Opened(o)) => Ok(o),
            Some(Frame::Error(e)) => Err(ClientError::Server {
                code: e.code,
                message: e.message,
            }),
            Some(other) => Err(ClientError::Lost(format!(
                "unexpected {} answer",
                other.name()
            ))),
            None => Err(self.lost()),
        }
    }

    /// Starts publishing to a live channel or a call track; send chunks on the returned
    /// [`Publisher`].
    pub async fn publish(&self, channel: &str, codec: Codec) -> Result<Publisher, ClientError> {
        let stream = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let channel = channel.to_owned();
        let mut rx = self
            .request(|request| Frame::Publish {
                request,
                stream,
                channel,
                codec,
            })
            .await?;
        let opened = self.answer(&mut rx).await?;
        let media = self
            .tx
            .open_media()
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))?;
        Ok(Publisher {
            stream: opened.stream,
            media,
            sent: 0,
        })
    }

    /// Measures the round-trip time to the server and the server's clock minus ours (in
    /// microseconds, on the symmetric-path assumption), from one ping.
    pub async fn clock(&self) -> Result<(Duration, i64), ClientError> {
        let mut pongs = self.pongs.lock().await;
        let mut ka = Keepalive::new(
            Instant::now(),
            self.epoch,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        let mut out = BytesMut::new();
        ka.ping_now(Instant::now(), &mut out);
        self.tx
            .send_raw(out.freeze())
            .await
            .map_err(|_| self.lost())?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), pongs.recv()).await {
                Ok(Some(Frame::Pong {
                    nonce,
                    echo_us,
                    time_us,
                })) => {
                    ka.handle_pong(Instant::now(), nonce, echo_us, time_us);
                    if let (Some(rtt), Some(offset)) = (ka.rtt(), ka.clock_offset_us()) {
                        return Ok((rtt, offset));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(self.lost()),
                Err(_) => return Err(ClientError::Timeout("waiting for a pong")),
            }
        }
    }

    /// Microseconds on this session's clock (the one [`Session::clock`] relates to the
    /// server's).
    pub fn clock_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Says goodbye and waits briefly for the transport to close.
    pub async fn close(mut self) {
        let _ = self
            .tx
            .send(Frame::Goodbye {
                code: ErrorCode::None,
                message: String::new(),
            })
            .await;
        if let Some(conn) = self.tx.quic() {
            // Let the GOODBYE reach the server before the close cuts the streams.
            tokio::time::sleep(Duration::from_millis(5)).await;
            conn.close(quinn::VarInt::from_u32(0), b"bye");
        }
        if let Some(ep) = self.endpoint.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        }
    }
}

/// Sends one published stream's chunks.
pub struct Publisher {
    stream: StreamId,
    media: MediaTx,
    sent: u64,
}

impl Publisher {
    /// The stream id chunks must carry (set by [`Publisher::send`]).
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Chunks sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends a chunk (its stream id is set to this publisher's), waiting under backpressure.
    pub async fn send(&mut self, mut chunk: Chunk) -> Result<(), ClientError> {
        chunk.stream = self.stream;
        self.media
            .send(chunk)
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))?;
        self.sent += 1;
        Ok(())
    }

    /// Ends the stream after everything sent.
    pub async fn finish(self) -> Result<(), ClientError> {
        self.media
            .finish()
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))
    }
}

/// An open stream's chunks, decompressed and checked.
pub struct Incoming {
    /// What the server said about the stream.
    pub opened: Opened,
    chunks: mpsc::Receiver<ChunkResult>,
    close: oneshot::Receiver<(ErrorCode, String)>,
    digest: oneshot::Receiver<[u8; 32]>,
    max_payload: usize,
    tx: LinkTx,
    down: watch::Receiver<Option<String>>,
    done: bool,
    ends: Ends,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.opened.stream);
    }
}

impl Incoming {
    /// The next chunk; `None` after the `END_OF_STREAM` chunk.
    ///
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Chunk, ClientError>> {
        if self.done {
            return None;
        }
        let item = tokio::select! {
            biased;
            c = self.chunks.recv() => c,
            closed = &mut self.close => {
                self.done = true;
                return Some(Err(match closed {
                    Ok((code, message)) => ClientError::Server { code, message },
                    Err(_) => self.lost(),
                }));
            }
        };
        let result = match item {
            Some(Ok(c)) => compress::decompress(c, self.max_payload).map_err(ClientError::Corrupt),
            Some(Err(e)) => Err(ClientError::Corrupt(e)),
            None => Err(self.lost()),
        };
        match &result {
            Ok(c) if c.has(chunkcast_protocol::ChunkFlags::END_OF_STREAM) => self.done = true,
            Err(_) => self.done = true,
            Ok(_) => {}
        }
        Some(result)
    }

    fn lost(&self) -> ClientError {
        lost(&self.down)
    }

    /// The BLAKE3 digest of the whole file, to check once the last chunk is in: the one
    /// `OPENED` carried, or the server's `DIGEST` frame when `OPENED` announced it for the end
    /// (waited for here); `None` for streams without one (live channels).
    pub async fn file_digest(&mut self) -> Result<Option<[u8; 32]>, ClientError> {
        match self.opened.digest {
            FileDigest::None => Ok(None),
            FileDigest::Known(d) => Ok(Some(d)),
            FileDigest::AtEnd => match tokio::time::timeout(DIGEST_WAIT, &mut self.digest).await {
                Ok(Ok(d)) => Ok(Some(d)),
                // A `CLOSE` instead of the digest (the file changed on the server): its reason.
                Ok(Err(_)) => Err(match self.close.try_recv() {
                    Ok((code, message)) => ClientError::Server { code, message },
                    Err(_) => self.lost(),
                }),
                Err(_) => Err(ClientError::Lost(format!(
                    "the server did not send the file's digest within {DIGEST_WAIT:?} of its \
                     last chunk"
                ))),
            },
        }
    }

    /// Asks the server to stop sending.
    pub async fn cancel(mut self) {
        if !self.done {
            self.done = true;
            let stream = self.opened.stream;
            self.tx.unroute(stream);
            let _ = self
                .tx
                .send(Frame::Close {
                    stream,
                    code: ErrorCode::None,
                    message: String::new(),
                })
                .await;
        }
    }
}

/// The error for a connection that went down, with the reason its control task recorded.
fn lost(down: &watch::Receiver<Option<String>>) -> ClientError {
    let why = down
        .borrow()
        .clone()
        .unwrap_or_else(|| "closed by the server".to_owned());
    ClientError::Lost(why)
}

/// A dialling failure as the client reports it: today's messages, with the fix where known.
fn dial_error(url: &Url, e: DialError) -> ClientError {
    let secure = |reason: String| ClientError::Secure {
        addr: url.authority(),
        reason,
    };
    match e {
        DialError::Resolve { host, source } => ClientError::Resolve { host, source },
        DialError::Connect(source) => ClientError::Connect {
            addr: url.authority(),
            source,
        },
        DialError::BadName(host) => {
            ClientError::Usage(format!("{host:?} is not a valid host name"))
        }
        DialError::TlsSetup(e) => ClientError::TlsSetup(e),
        DialError::Untrusted(raw) => secure(format!(
            "{raw}: the server's certificate is not trusted; pass --cert-sha256 HEX (from the server's listening line) or --ca FILE"
        )),
        DialError::QuicSetup(e) => secure(e.to_string()),
        DialError::Handshake(raw) => secure(raw),
        DialError::Lost(why) => ClientError::Lost(why),
        other => ClientError::Lost(other.to_string()),
    }
}

async fn handshake(
    tx: &LinkTx,
    mut rx: LinkRx,
    opts: &ConnectOptions,
) -> Result<(Established, LinkRx), ClientError> {
    let config = ClientConfig {
        token: opts.token.clone(),
        ..ClientConfig::default()
    };
    let mut hs = ClientHandshake::new(config, Instant::now());
    let mut out = BytesMut::new();
    hs.poll_transmit(&mut out);
    tx.send_raw(out.freeze())
        .await
        .map_err(|e| ClientError::Lost(e.to_string()))?;
    let frame = match rx.recv().await {
        Some(Ok(f)) => f,
        Some(Err(e)) => return Err(ClientError::Lost(e.to_string())),
        None => {
            return Err(ClientError::Lost(
                "the server closed the connection during the handshake".into(),
            ));
        }
    };
    let est = hs.handle_frame(Instant::now(), frame)?;
    Ok((est, rx))
}

async fn demux(
    mut rx: LinkRx,
    tx: LinkTx,
    pending: Pending,
    ends: Ends,
    pongs: mpsc::Sender<Frame>,
    down: watch::Sender<Option<String>>,
) {
    let epoch = Instant::now();
    let why = loop {
        let frame = match rx.recv().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => break e.to_string(),
            None => break "closed by the server".to_owned(),
        };
        let request = match &frame {
            Frame::Ping { nonce, time_us } => {
                let time = epoch.elapsed().as_micros() as u64;
                let _ = tx
                    .send(Frame::Pong {
                        nonce: *nonce,
                        echo_us: *time_us,
                        time_us: time,
                    })
                    .await;
                continue;
            }
            Frame::Pong { .. } => {
                // Only `Session::clock` pings; if nobody waits, the pong is stale.
                let _ = pongs.try_send(frame);
                continue;
            }
            Frame::Catalog(c) => c.request,
            Frame::Opened(o) => o.request,
            Frame::Error(e) if e.request != 0 => e.request,
            Frame::Error(e) => break format!("{}: {}", e.code, e.message),
            Frame::Goodbye { code, message } => {
                break format!("server closed the connection: {code}: {message}");
            }
            Frame::Close {
                stream,
                code,
                message,
            } => {
                let waiter = ends
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(stream);
                if let Some(w) = waiter {
                    let _ = w.close.send((*code, message.clone()));
                }
                continue;
            }
            Frame::Digest { stream, digest } => {
                let waiter = ends
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(stream)
                    .and_then(|w| w.digest.take());
                if let Some(w) = waiter {
                    let _ = w.send(*digest);
                }
                continue;
            }
            _ => continue,
        };
        let last = !matches!(&frame, Frame::Catalog(c) if !c.last);
        let waiter = {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            if last {
                p.remove(&request)
            } else {
                p.get(&request).cloned()
            }
        };
        if let Some(w) = waiter {
            let _ = w.send(frame).await;
        }
    };
    let _ = down.send(Some(why));
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ends.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
