//! A connection to a server, over any transport: connect, handshake, then requests.
//!
//! The connection's logic is [`ClientConn`], the protocol crate's sans-IO machine; a
//! driver task moves control frames, the [`Session`] methods' commands and time into it, and
//! its bytes and events out, each event to the caller that waits for it (by request id, or by
//! stream id for a stream's `CLOSE` and `DIGEST`). Chunks bypass it: the link routes them to
//! the stream's [`Incoming`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chunkcast_protocol::compress;
use chunkcast_protocol::conn::ClientConn;
use chunkcast_protocol::conn::client::{ClientConnConfig, ClientEvent, ConnError, OpenRequest};
use chunkcast_protocol::session::{ClientConfig, Established, HandshakeError};
use chunkcast_protocol::wire::{Caps, Chat, Entry, FileDigest, Limits, Mode, Opened, Resume};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, DecodeError, ErrorCode, StreamId};
use chunkcast_transport::dial::{self, Dial, DialError};
use chunkcast_transport::link::{ChunkResult, LinkError};
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
    /// The highest protocol version to offer: 1 speaks as a version 1 client (no verified
    /// streaming; the digest is checked once, at the end), for comparisons and old servers.
    pub max_version: u16,
    /// A realtime session (play, watch, a call): over QUIC, a network path's packet size even
    /// to a loopback address ([`Dial::QuicRealtime`]).
    pub realtime: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            trust: Trust::System,
            token: None,
            timeout: Duration::from_secs(10),
            max_version: chunkcast_protocol::wire::VERSION,
            realtime: false,
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
    /// Serve a progressive MP4 as fragmented MP4 (init segment, then fragments).
    pub fragment: bool,
    /// The caller checks every chunk against the stream's tree (`PROOF` frames), so the server
    /// may leave payloads out of the chunks' CRC. Chunks without a payload CRC are refused on
    /// a stream opened without it. Set it only when the session has `Caps::HEADER_CRC`.
    pub header_crc: bool,
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
            fragment: false,
            header_crc: false,
            chunk_size: 0,
        }
    }
}

/// What the control stream may still tell an open stream besides its chunks.
struct StreamEnd {
    /// The server's `CLOSE` (the stream failed or was stopped).
    close: oneshot::Sender<(ErrorCode, String)>,
    /// The server's `DIGEST` (the whole file's, after the last chunk).
    digest: Option<oneshot::Sender<[u8; 32]>>,
    /// The server's `PROOF`s (tree nodes of a verified stream); dropped if the reader falls
    /// [`PROOF_QUEUE`] frames behind, which a well-behaved server never makes it.
    proof: Option<mpsc::Sender<Bytes>>,
}

/// `PROOF` frames a stream buffers ahead of its reader: a server sends one before each chunk
/// that starts a 16 KiB group, so this is more than the chunks a stream has in flight; with
/// at most 64 KiB of nodes in a frame it bounds what a hostile server can make the client
/// hold (16 MiB).
const PROOF_QUEUE: usize = 256;

/// How long a finished stream waits for a `DIGEST` its `OPENED` announced. The server sends
/// it right after the last chunk; a server that never does is broken, and the download fails
/// with a clear error instead of hanging.
const DIGEST_WAIT: Duration = Duration::from_secs(30);
/// How long [`Session::clock`] waits for its pong: a server that takes longer is not one whose
/// clock is worth relating to (the measure would be mostly queueing).
const PONG_WAIT: Duration = Duration::from_secs(5);
/// Commands queued towards the driver: each is one small request, answered in microseconds;
/// a caller beyond this waits its turn (backpressure, not memory).
const COMMAND_QUEUE: usize = 64;
/// Chat frames (acks, messages) queued towards the reader. A full queue drops the message;
/// the reader sees the hole in the room's numbers and joins again (see
/// `chunkcast_protocol::chat`), so this bounds memory, not delivery.
const CHAT_QUEUE: usize = 1024;

/// An established connection.
pub struct Session {
    tx: LinkTx,
    commands: mpsc::Sender<Command>,
    established: Established,
    limits: Limits,
    down: watch::Receiver<Option<ConnError>>,
    endpoint: Option<quinn::Endpoint>,
    epoch: Instant,
    driver: tokio::task::JoinHandle<()>,
    chat: std::sync::Mutex<Option<mpsc::Receiver<Chat>>>,
}

impl Drop for Session {
    /// A dropped session closes its connection: the driver (which holds a sender) is
    /// stopped, so the TCP writer ends once the last stream handle is gone, and a QUIC
    /// connection is closed outright.
    fn drop(&mut self) {
        self.driver.abort();
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
        Self::connect_with(url, opts, Caps::default()).await
    }

    /// [`Session::connect`], offering the capabilities `extra` besides the usual ones (an
    /// edge relay offers `RELAY`).
    pub async fn connect_with(
        url: &Url,
        opts: &ConnectOptions,
        extra: Caps,
    ) -> Result<Self, ClientError> {
        let limits = Limits::default();
        let addr = dial::resolve(&url.host, url.port)
            .await
            .map_err(|e| dial_error(url, e))?;
        let how = match url.scheme {
            Scheme::Tcp => Dial::Tcp,
            Scheme::Tcps => Dial::Tls,
            Scheme::Quic if opts.realtime => Dial::QuicRealtime,
            Scheme::Quic => Dial::Quic,
            Scheme::Http | Scheme::Https => {
                return Err(ClientError::Usage(format!(
                    "{url}: {} URLs are fetched with chunkcast_client::http, not a native session \
                     (only get and watch speak HTTP)",
                    url.scheme.name()
                )));
            }
        };
        let connecting = dial::connect(addr, &url.host, how, &opts.trust, limits);
        let (tx, rx, endpoint) = tokio::time::timeout(opts.timeout, connecting)
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|e| dial_error(url, e))?;
        let epoch = now();
        let config = ClientConnConfig {
            handshake: ClientConfig {
                token: opts.token.clone(),
                timeout: opts.timeout,
                max_version: opts.max_version.clamp(
                    chunkcast_protocol::wire::MIN_VERSION,
                    chunkcast_protocol::wire::VERSION,
                ),
                caps: ClientConfig::default().caps | extra,
                ..ClientConfig::default()
            },
            epoch,
            ..ClientConnConfig::default()
        };
        let conn = ClientConn::new(config, epoch);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (down_tx, down) = watch::channel(None);
        let (connected_tx, connected) = oneshot::channel();
        let (chat_tx, chat) = mpsc::channel(CHAT_QUEUE);
        let driver = tokio::spawn(drive(
            conn,
            rx,
            tx.clone(),
            command_rx,
            down_tx,
            connected_tx,
            chat_tx,
        ));
        let established = match connected.await {
            Ok(Ok(est)) => est,
            Ok(Err(ConnError::Handshake(HandshakeError::Timeout))) => {
                return Err(ClientError::Timeout("waiting for the server's handshake"));
            }
            Ok(Err(ConnError::Handshake(e))) => return Err(ClientError::Handshake(e)),
            Ok(Err(ConnError::Eof)) => {
                return Err(ClientError::Lost(
                    "the server closed the connection during the handshake".into(),
                ));
            }
            Ok(Err(e)) => return Err(conn_error(e)),
            Err(_) => return Err(ClientError::Lost("the connection's driver failed".into())),
        };
        Ok(Self {
            tx,
            commands,
            established,
            limits,
            down,
            endpoint,
            epoch,
            driver,
            chat: std::sync::Mutex::new(Some(chat)),
        })
    }

    /// The chat frames (acks and messages) the server sends on this connection; `None` after
    /// the first call. The receiver ends when the connection does.
    pub fn chat_frames(&self) -> Option<mpsc::Receiver<Chat>> {
        self.chat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Sends a chat frame (a `Send` or a `Join`, from `chunkcast_protocol::chat`).
    pub async fn chat(&self, chat: Chat) -> Result<(), ClientError> {
        self.ask(|reply| Command::Chat { chat, reply }).await
    }

    /// Tells a server agreeing to `RELAY` which relays this session's subscriptions come
    /// through (this edge last), so that it refuses loops and overlong chains; nothing is sent
    /// to a server that did not agree to it.
    pub async fn relay(&self, path: Vec<u64>) -> Result<(), ClientError> {
        self.ask(|reply| Command::Relay { path, reply }).await
    }

    /// What the handshake agreed.
    pub fn established(&self) -> &Established {
        &self.established
    }

    fn lost(&self) -> ClientError {
        lost(&self.down)
    }

    /// Hands `command` to the driver and waits for its answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| self.lost())?;
        answer.await.map_err(|_| self.lost())?
    }

    /// Lists what the server has under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, ClientError> {
        let prefix = prefix.to_owned();
        self.ask(|reply| Command::List { prefix, reply }).await
    }

    /// Opens a stream; its chunks arrive through the returned [`Incoming`].
    pub async fn open(&self, opts: &OpenOptions) -> Result<Incoming, ClientError> {
        let capacity = match opts.chunk_size as usize {
            0 => STREAM_BUFFER,
            n => (STREAM_BUFFER_BYTES / n).clamp(4, STREAM_BUFFER),
        };
        let open = OpenRequest {
            path: opts.path.clone(),
            mode: opts.mode,
            resume: opts.resume,
            compress: opts.compress,
            raw: opts.raw,
            fragment: opts.fragment,
            header_crc: opts.header_crc,
            chunk_size: opts.chunk_size,
        };
        self.incoming(StreamAsk::Open(open), capacity).await
    }

    /// Receives a live channel (`live/NAME`) or the other side of a call (`call/ROOM/TRACK`),
    /// from its latest keyframe. Waits for a publisher if the channel has none yet.
    pub async fn subscribe(&self, channel: &str) -> Result<Incoming, ClientError> {
        self.incoming(StreamAsk::Subscribe(channel.to_owned()), STREAM_BUFFER)
            .await
    }

    async fn incoming(&self, ask: StreamAsk, capacity: usize) -> Result<Incoming, ClientError> {
        let header_crc = matches!(&ask, StreamAsk::Open(o) if o.header_crc);
        let opened = self
            .ask(|reply| Command::Stream {
                ask,
                capacity,
                reply,
            })
            .await?;
        let StreamOpened {
            opened,
            chunks,
            close,
            digest,
            proofs,
        } = opened;
        let max_payload = self.limits.max_payload().max(opened.chunk_size as usize);
        Ok(Incoming {
            opened,
            chunks,
            close,
            digest,
            proofs,
            max_payload,
            header_crc,
            tx: self.tx.clone(),
            commands: self.commands.clone(),
            down: self.down.clone(),
            done: false,
        })
    }

    /// Starts publishing to a live channel or a call track; send chunks on the returned
    /// [`Publisher`].
    pub async fn publish(&self, channel: &str, codec: Codec) -> Result<Publisher, ClientError> {
        let ask = StreamAsk::Publish(channel.to_owned(), codec);
        let opened = self
            .ask(|reply| Command::Stream {
                ask,
                capacity: 0,
                reply,
            })
            .await?;
        let media = self
            .tx
            .open_media()
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))?;
        Ok(Publisher {
            stream: opened.opened.stream,
            media,
            sent: 0,
            link: self.tx.clone(),
            datagrams: false,
            as_datagrams: 0,
            commands: self.commands.clone(),
        })
    }

    /// Measures the round-trip time to the server and the server's clock minus ours (in
    /// microseconds, on the symmetric-path assumption), from one ping.
    pub async fn clock(&self) -> Result<(Duration, i64), ClientError> {
        tokio::time::timeout(PONG_WAIT, self.ask(|reply| Command::Clock { reply }))
            .await
            .map_err(|_| ClientError::Timeout("waiting for a pong"))?
    }

    /// The QUIC path as the connection sees it: its RTT estimate, and packets lost and sent
    /// so far. `None` on TCP (where the sender measures its own queueing instead).
    pub fn path_stats(&self) -> Option<(Duration, u64, u64)> {
        let stats = self.tx.quic()?.stats();
        Some((
            stats.path.rtt,
            stats.path.lost_packets,
            stats.path.sent_packets,
        ))
    }

    /// Bounds what QUIC buffers towards the server, unacknowledged, to `bytes` (every stream
    /// together): a realtime sender then waits, and sees the wait, as soon as the path is
    /// slower than its stream, instead of filling a deep buffer that every later chunk waits
    /// behind. No effect on TCP, whose queue is the writer's bounded one and the socket's.
    pub fn limit_send_queue(&self, bytes: u64) {
        if let Some(conn) = self.tx.quic() {
            conn.set_send_window(bytes);
        }
    }

    /// Microseconds on this session's clock (the one [`Session::clock`] relates to the
    /// server's).
    pub fn clock_us(&self) -> u64 {
        now().saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Says goodbye and waits briefly for the transport to close.
    pub async fn close(mut self) {
        let _ = self.ask(|reply| Command::Close { reply }).await;
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
    link: LinkTx,
    datagrams: bool,
    as_datagrams: u64,
    commands: mpsc::Sender<Command>,
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

    /// Sends media chunks as QUIC datagrams where the connection agreed on
    /// [`Caps::DATAGRAMS`](chunkcast_protocol::Caps::DATAGRAMS) and a chunk fits in one
    /// (realtime audio: a lost packet then costs one frame, not a wait for its
    /// retransmission); the stream carries the rest, and always the set-up and the end.
    /// Returns whether datagrams will be used.
    pub fn use_datagrams(&mut self, caps: Caps) -> bool {
        self.datagrams = caps.contains(Caps::DATAGRAMS) && self.link.quic().is_some();
        self.datagrams
    }

    /// Chunks sent as datagrams so far.
    pub fn sent_as_datagrams(&self) -> u64 {
        self.as_datagrams
    }

    /// Sends each unit on its own QUIC stream (a call's intra-only video: see
    /// [`chunkcast_transport::link::UnitGate`]), so that a lost packet holds back its own
    /// frame and no later one, and a frame that cannot arrive in time is given up. Only for a
    /// `codec` whose units decode alone, and only on QUIC; returns whether it is in use. Call
    /// it before the first chunk.
    pub fn use_unit_streams(&mut self, codec: &Codec) -> bool {
        if !chunkcast_transport::link::unit_streams_for(codec) {
            return false;
        }
        match self.link.open_unit_media() {
            Some(units) => {
                // The stream `publish` opened carries nothing: it just ends.
                let unused = std::mem::replace(&mut self.media, units);
                drop(unused);
                true
            }
            None => false,
        }
    }

    /// Whether a unit starting now would be skipped (unit streams only: the unit before it is
    /// not all sent yet). Ask before numbering a unit, so that a skipped one leaves no hole.
    pub fn busy(&self) -> bool {
        self.media.busy()
    }

    /// With unit streams: units sent, skipped and reset so far.
    pub fn unit_counts(&self) -> Option<chunkcast_transport::link::UnitCounts> {
        self.media.unit_counts()
    }

    /// Sends a chunk (its stream id is set to this publisher's), waiting under backpressure.
    pub async fn send(&mut self, mut chunk: Chunk) -> Result<(), ClientError> {
        chunk.stream = self.stream;
        let framing = ChunkFlags::INIT | ChunkFlags::END_OF_STREAM;
        if self.datagrams && chunk.flags.0 & framing.0 == 0 {
            match self.link.send_datagram(&chunk) {
                Ok(true) => {
                    self.sent += 1;
                    self.as_datagrams += 1;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => return Err(ClientError::Lost(e.to_string())),
            }
        }
        self.media
            .send(chunk)
            .await
            .map_err(|e| ClientError::Lost(e.to_string()))?;
        self.sent += 1;
        Ok(())
    }

    /// Stops publishing and tells the server why (`CLOSE` with `code` and `message`), which
    /// it passes on to the channel's viewers: for a publisher whose input broke
    /// ([`ErrorCode::BadInput`]). What was sent before reaches them first on TCP; on QUIC,
    /// chunks still in flight may be dropped.
    pub async fn abort(self, code: ErrorCode, message: String) -> Result<(), ClientError> {
        self.commands
            .send(Command::Abort(self.stream, code, message))
            .await
            .map_err(|_| ClientError::Lost("the connection is gone".into()))
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
    proofs: mpsc::Receiver<Bytes>,
    max_payload: usize,
    /// Opened with [`OpenOptions::header_crc`]: chunks may leave their payload out of the CRC.
    header_crc: bool,
    tx: LinkTx,
    commands: mpsc::Sender<Command>,
    down: watch::Receiver<Option<ConnError>>,
    done: bool,
}

impl Drop for Incoming {
    /// The driver forgets the stream. If its queue is full the note is dropped: the driver
    /// also sweeps streams whose reader is gone before it opens another.
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Done(self.opened.stream));
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
            Some(Ok(c)) if c.has(ChunkFlags::HEADER_CRC) && !self.header_crc => {
                Err(ClientError::Corrupt(DecodeError::Unproven {
                    stream: c.stream,
                    seq: c.seq,
                }))
            }
            Some(Ok(c)) => compress::decompress(c, self.max_payload).map_err(ClientError::Corrupt),
            Some(Err(e)) => Err(ClientError::Corrupt(e)),
            None => Err(self.lost()),
        };
        match &result {
            Ok(c) if c.has(ChunkFlags::END_OF_STREAM) => self.done = true,
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

    /// The next `PROOF` frame's tree nodes of a verified stream, if one is there already.
    pub fn try_proof(&mut self) -> Option<Bytes> {
        self.proofs.try_recv().ok()
    }

    /// The next `PROOF` frame's tree nodes of a verified stream, waiting for it; `None` once
    /// none can come (the stream or connection is over, or the reader fell too far behind).
    ///
    /// Cancel-safe.
    pub async fn proof(&mut self) -> Option<Bytes> {
        self.proofs.recv().await
    }

    /// Asks the server to stop sending.
    pub async fn cancel(self) {
        self.abort(ErrorCode::None, String::new()).await;
    }

    /// Asks the server to stop sending, saying why (`CLOSE` with `code` and `message`).
    pub async fn abort(mut self, code: ErrorCode, message: String) {
        if !self.done {
            self.done = true;
            let stream = self.opened.stream;
            self.tx.unroute(stream);
            let _ = self
                .commands
                .send(Command::Cancel(stream, code, message))
                .await;
        }
    }
}

/// The error for a connection that went down, with the reason its driver recorded.
fn lost(down: &watch::Receiver<Option<ConnError>>) -> ClientError {
    match down.borrow().clone() {
        Some(e) => conn_error(e),
        None => ClientError::Lost("closed by the server".to_owned()),
    }
}

/// The client's error for the connection machine's.
fn conn_error(e: ConnError) -> ClientError {
    match e {
        ConnError::Idle(silent) => ClientError::Silent(silent),
        e @ (ConnError::TooManyPending(_) | ConnError::CatalogTooLarge { .. }) => {
            ClientError::Limit(e)
        }
        e => ClientError::Lost(e.to_string()),
    }
}

/// The tokio clock as a std `Instant`: the one clock of the driver, paused in tests.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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

/// What a [`Session`] method asks of the driver.
enum Command {
    List {
        prefix: String,
        reply: oneshot::Sender<Result<Vec<Entry>, ClientError>>,
    },
    Stream {
        ask: StreamAsk,
        /// Chunks the route buffers; 0 for a published stream (nothing to route).
        capacity: usize,
        reply: oneshot::Sender<Result<StreamOpened, ClientError>>,
    },
    Clock {
        reply: oneshot::Sender<Result<(Duration, i64), ClientError>>,
    },
    Cancel(StreamId, ErrorCode, String),
    /// Cancel a published stream, saying why.
    Abort(StreamId, ErrorCode, String),
    /// The stream's reader is gone.
    Done(StreamId),
    Close {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Chat {
        chat: Chat,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Relay {
        path: Vec<u64>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

enum StreamAsk {
    Open(OpenRequest),
    Subscribe(String),
    Publish(String, Codec),
}

/// An answered `OPEN`, `SUBSCRIBE` or `PUBLISH`, with the stream's receiving ends.
struct StreamOpened {
    opened: Opened,
    chunks: mpsc::Receiver<ChunkResult>,
    close: oneshot::Receiver<(ErrorCode, String)>,
    digest: oneshot::Receiver<[u8; 32]>,
    proofs: mpsc::Receiver<Bytes>,
}

/// A request's caller, waiting.
enum Waiter {
    List(oneshot::Sender<Result<Vec<Entry>, ClientError>>),
    Stream {
        reply: oneshot::Sender<Result<StreamOpened, ClientError>>,
        /// Routed before the request went out (QUIC chunks may overtake `OPENED`); `None`
        /// for a published stream.
        parts: Option<StreamParts>,
    },
}

struct StreamParts {
    chunks: mpsc::Receiver<ChunkResult>,
    close: oneshot::Receiver<(ErrorCode, String)>,
    digest: oneshot::Receiver<[u8; 32]>,
    proofs: mpsc::Receiver<Bytes>,
}

/// The driver's side of the callers: who waits for what.
#[derive(Default)]
struct Callers {
    requests: HashMap<u32, Waiter>,
    ends: HashMap<StreamId, StreamEnd>,
    clocks: Vec<oneshot::Sender<Result<(Duration, i64), ClientError>>>,
    connected: Option<oneshot::Sender<Result<Established, ConnError>>>,
    closing: Option<oneshot::Sender<Result<(), ClientError>>>,
    chat: Option<mpsc::Sender<Chat>>,
}

/// The connection's one task: moves control frames, commands and time into the machine, and
/// its bytes and events out. Ends when the machine closes.
async fn drive(
    mut conn: ClientConn,
    mut rx: LinkRx,
    tx: LinkTx,
    mut commands: mpsc::Receiver<Command>,
    down: watch::Sender<Option<ConnError>>,
    connected: oneshot::Sender<Result<Established, ConnError>>,
    chat: mpsc::Sender<Chat>,
) {
    let mut callers = Callers {
        connected: Some(connected),
        chat: Some(chat),
        ..Callers::default()
    };
    let mut out = BytesMut::new();
    loop {
        while let Some(event) = conn.poll_event() {
            callers.deliver(&mut conn, &tx, event);
        }
        // After the events: delivering one may queue a frame (a CLOSE, the last GOODBYE).
        if conn.poll_transmit(&mut out) && tx.send_raw(out.split().freeze()).await.is_err() {
            conn.handle_transport_error(now(), "connection closed".into());
        }
        if conn.is_closed() {
            break;
        }
        let timer = conn.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(Ok(frame)) => conn.handle_frame(now(), frame),
                Some(Err(LinkError::Decode(e))) => conn.handle_decode_error(now(), e),
                Some(Err(e)) => conn.handle_transport_error(now(), e.to_string()),
                None => conn.handle_eof(now()),
            },
            () = sleep_until(timer) => {
                // Chunks go straight to their streams, yet prove the server alive: a reader
                // slower than the server finds its pings queued behind them.
                if rx.take_routed() > 0 {
                    conn.handle_data(now());
                }
                conn.handle_timeout(now());
            }
            command = commands.recv() => match command {
                Some(command) => callers.command(&mut conn, &tx, command),
                // The session is gone (its drop aborts this task; this is the race).
                None => conn.close(now()),
            },
        }
    }
    while let Some(event) = conn.poll_event() {
        callers.deliver(&mut conn, &tx, event);
    }
    // The reason first: a caller woken by its dropped reply reads it.
    let _ = down.send(conn.close_reason().cloned());
    if let Some(reply) = callers.closing.take() {
        let _ = reply.send(Ok(()));
    }
}

/// Sleeps until `deadline`, or forever without one.
///
/// Cancel-safe (nothing happens until it completes).
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Callers {
    fn command(&mut self, conn: &mut ClientConn, tx: &LinkTx, command: Command) {
        match command {
            Command::List { prefix, reply } => match conn.list(&prefix) {
                Ok(request) => {
                    self.requests.insert(request, Waiter::List(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(conn_error(e)));
                }
            },
            Command::Stream {
                ask,
                capacity,
                reply,
            } => self.stream(conn, tx, ask, capacity, reply),
            Command::Clock { reply } => {
                conn.ping(now());
                self.clocks.push(reply);
            }
            Command::Cancel(stream, code, message) => {
                conn.abort(stream, code, message);
                self.ends.remove(&stream);
            }
            Command::Abort(stream, code, message) => {
                conn.abort_publish(stream, code, message);
                self.ends.remove(&stream);
            }
            Command::Done(stream) => {
                conn.stream_done(stream);
                self.ends.remove(&stream);
            }
            Command::Close { reply } => {
                conn.close(now());
                self.closing = Some(reply);
            }
            Command::Chat { chat, reply } => {
                let _ = reply.send(conn.chat(&chat).map_err(|e| match e {
                    ConnError::NoChat => ClientError::Usage(
                        "the server does not offer chat (an older chunkcast-server?)".into(),
                    ),
                    e => conn_error(e),
                }));
            }
            Command::Relay { path, reply } => {
                let _ = reply.send(conn.relay(&path).map(drop).map_err(conn_error));
            }
        }
    }

    fn stream(
        &mut self,
        conn: &mut ClientConn,
        tx: &LinkTx,
        ask: StreamAsk,
        capacity: usize,
        reply: oneshot::Sender<Result<StreamOpened, ClientError>>,
    ) {
        // Readers dropped while the command queue was full: forget their streams now.
        self.ends.retain(|&stream, end| {
            let gone = end.close.is_closed();
            if gone {
                conn.stream_done(stream);
            }
            !gone
        });
        let asked = match ask {
            StreamAsk::Open(open) => conn.open(open),
            StreamAsk::Subscribe(channel) => conn.subscribe(&channel),
            StreamAsk::Publish(channel, codec) => conn.publish(&channel, codec),
        };
        let (request, stream) = match asked {
            Ok(ids) => ids,
            Err(e) => {
                let _ = reply.send(Err(conn_error(e)));
                return;
            }
        };
        // Routed and registered before the request leaves (it leaves when the loop next
        // writes the machine's bytes).
        let parts = (capacity > 0).then(|| {
            let chunks = tx.route(stream, capacity);
            let (close_tx, close) = oneshot::channel();
            let (digest_tx, digest) = oneshot::channel();
            let (proof_tx, proofs) = mpsc::channel(PROOF_QUEUE);
            self.ends.insert(
                stream,
                StreamEnd {
                    close: close_tx,
                    digest: Some(digest_tx),
                    proof: Some(proof_tx),
                },
            );
            StreamParts {
                chunks,
                close,
                digest,
                proofs,
            }
        });
        self.requests
            .insert(request, Waiter::Stream { reply, parts });
    }

    /// Answers `request`'s caller with `error`.
    fn fail(&mut self, request: u32, error: ClientError) {
        match self.requests.remove(&request) {
            Some(Waiter::List(reply)) => drop(reply.send(Err(error))),
            Some(Waiter::Stream { reply, .. }) => drop(reply.send(Err(error))),
            None => {}
        }
    }

    fn deliver(&mut self, conn: &mut ClientConn, tx: &LinkTx, event: ClientEvent) {
        match event {
            ClientEvent::Connected(est) => {
                let waiting = self
                    .connected
                    .take()
                    .is_some_and(|c| c.send(Ok(est)).is_ok());
                if !waiting {
                    // `Session::connect` was dropped (Ctrl-C while connecting): nobody will
                    // use the connection.
                    conn.close(now());
                }
            }
            ClientEvent::Listed { request, entries } => {
                if let Some(Waiter::List(reply)) = self.requests.remove(&request) {
                    let _ = reply.send(Ok(entries));
                }
            }
            ClientEvent::Opened { request, opened } => {
                let Some(Waiter::Stream { reply, parts }) = self.requests.remove(&request) else {
                    return;
                };
                let stream = opened.stream;
                let answer = match parts {
                    Some(p) => StreamOpened {
                        opened,
                        chunks: p.chunks,
                        close: p.close,
                        digest: p.digest,
                        proofs: p.proofs,
                    },
                    None => {
                        // A published stream: the server's CLOSE for it has no reader.
                        conn.stream_done(stream);
                        let (_, close) = oneshot::channel();
                        let (_, digest) = oneshot::channel();
                        StreamOpened {
                            opened,
                            chunks: mpsc::channel(1).1,
                            close,
                            digest,
                            proofs: mpsc::channel(1).1,
                        }
                    }
                };
                if reply.send(Ok(answer)).is_err() {
                    // The caller gave up waiting: stop the stream it will never read.
                    conn.cancel(stream);
                    tx.unroute(stream);
                    self.ends.remove(&stream);
                }
            }
            ClientEvent::Refused {
                request,
                stream,
                code,
                message,
            } => {
                if let Some(stream) = stream {
                    tx.unroute(stream);
                    self.ends.remove(&stream);
                }
                self.fail(request, ClientError::Server { code, message });
            }
            ClientEvent::Failed { request, error } => self.fail(request, conn_error(error)),
            ClientEvent::StreamClosed {
                stream,
                code,
                message,
            } => {
                if let Some(end) = self.ends.remove(&stream) {
                    let _ = end.close.send((code, message));
                }
            }
            ClientEvent::Digest { stream, digest } => {
                if let Some(d) = self.ends.get_mut(&stream).and_then(|e| e.digest.take()) {
                    let _ = d.send(digest);
                }
            }
            ClientEvent::Proof { stream, nodes } => {
                if let Some(end) = self.ends.get_mut(&stream) {
                    let full = end
                        .proof
                        .as_ref()
                        .is_some_and(|p| p.try_send(nodes).is_err());
                    if full {
                        // The reader then sees the nodes end and fails the stream.
                        end.proof = None;
                    }
                }
            }
            ClientEvent::Clock { rtt, offset_us } => {
                for reply in self.clocks.drain(..) {
                    let _ = reply.send(Ok((rtt, offset_us)));
                }
            }
            ClientEvent::Chat(chat) => {
                if let Some(queue) = &self.chat {
                    // Full: dropped, and recovered by the reader's rejoin (see CHAT_QUEUE).
                    let _ = queue.try_send(chat);
                }
            }
            ClientEvent::Closed(error) => {
                if let Some(c) = self.connected.take() {
                    let _ = c.send(Err(error));
                }
                // Everyone else learns the reason from `down` when their reply is dropped.
            }
            _ => {}
        }
    }
}
