//! The client side of a connection: `ClientConn`.
//!
//! One machine from the first `HELLO` to the end: the handshake, keepalive (the client pings
//! too, and gives up on a server silent for the idle timeout), request and stream ids, the
//! table of open streams, catalog paging and the mapping of the server's answers to events.
//!
//! Driving it (the order matters only in that output is polled after every input):
//!
//! 1. [`ClientConn::new`] queues the `HELLO`;
//! 2. feed each control frame with [`ClientConn::handle_frame`], a decode failure with
//!    [`ClientConn::handle_decode_error`], the end of the server's bytes with
//!    [`ClientConn::handle_eof`], and call [`ClientConn::handle_timeout`] once the instant of
//!    [`ClientConn::poll_timeout`] has come;
//! 3. after each, write what [`ClientConn::poll_transmit`] appends and take every
//!    [`ClientConn::poll_event`];
//! 4. after [`ClientEvent::Closed`] write the last bytes and close the transport.
//!
//! Chunks never enter: the transport routes them to the stream's reader, which tells the
//! machine when it is done with [`ClientConn::stream_done`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::error::{DecodeError, ErrorCode};
use crate::media::Codec;
use crate::session::{
    ClientConfig, ClientHandshake, DEFAULT_IDLE_TIMEOUT, DEFAULT_PING_INTERVAL, Established,
    HandshakeError, Keepalive,
};
use crate::wire::chunk::StreamId;
use crate::wire::{
    Caps, Catalog, Chat, ChatKind, Entry, ErrorFrame, Frame, Mode, Open, Opened, Resume, encode,
};

/// Catalog entries one listing may gather before the request fails: a library of 100 000
/// files lists in ~20 MB; a server streaming pages without end must not grow the client
/// without bound.
pub const DEFAULT_MAX_CATALOG_ENTRIES: usize = 100_000;
/// Requests awaiting their answer at once. Far above what a client does (a player holds two,
/// the bench a few dozen), low enough that a server that never answers costs little memory.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// How a client connection behaves.
#[derive(Debug, Clone)]
pub struct ClientConnConfig {
    /// What the handshake offers, and how long it may take.
    pub handshake: ClientConfig,
    /// The instant our `PING` clocks count from (the zero of `time_us`).
    pub epoch: Instant,
    /// How often the server is pinged.
    pub ping_interval: Duration,
    /// A server silent this long (nothing received, pings unanswered) is given up.
    pub idle_timeout: Duration,
    /// Entries one listing may gather; beyond, the request fails with
    /// [`ConnError::CatalogTooLarge`].
    pub max_catalog_entries: usize,
    /// Requests awaiting an answer at once; beyond, a request fails with
    /// [`ConnError::TooManyPending`].
    pub max_pending: usize,
}

impl Default for ClientConnConfig {
    /// The defaults, with the epoch at the moment of the call: a driver with its own clock (a
    /// paused tokio clock, a simulation) sets `epoch` from it.
    fn default() -> Self {
        Self {
            handshake: ClientConfig::default(),
            epoch: Instant::now(),
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_catalog_entries: DEFAULT_MAX_CATALOG_ENTRIES,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// What to open: the fields of an `OPEN` but its ids, which the machine allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// Path in the server's library.
    pub path: String,
    /// Download or realtime pacing.
    pub mode: Mode,
    /// Where to start.
    pub resume: Resume,
    /// Ask for lz4.
    pub compress: bool,
    /// Serve as bytes whatever the format.
    pub raw: bool,
    /// Serve a progressive MP4 as fragmented MP4.
    pub fragment: bool,
    /// The application checks every chunk against the stream's tree: header-only CRCs are
    /// welcome ([`Open::header_crc`]).
    pub header_crc: bool,
    /// Payload bytes per chunk; 0 lets the server choose.
    pub chunk_size: u32,
}

/// What happened on the connection, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The handshake succeeded; requests may be made.
    Connected(Established),
    /// A `LIST` answered: the whole catalog, its pages put together.
    Listed {
        /// The request.
        request: u32,
        /// Every entry of every page, in order.
        entries: Vec<Entry>,
    },
    /// An `OPEN`, `SUBSCRIBE` or `PUBLISH` answered: the stream is open.
    Opened {
        /// The request.
        request: u32,
        /// The server's description of the stream.
        opened: Opened,
    },
    /// The server refused a request (`ERROR` with its id); its stream, if it had one, is
    /// forgotten.
    Refused {
        /// The request.
        request: u32,
        /// The stream the request would have opened.
        stream: Option<StreamId>,
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// A request failed on our side (a catalog beyond [`ClientConnConfig::max_catalog_entries`]).
    Failed {
        /// The request.
        request: u32,
        /// Why.
        error: ConnError,
    },
    /// The server ended an open stream (`CLOSE`): it failed or was stopped.
    StreamClosed {
        /// The stream.
        stream: StreamId,
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The whole file's digest for a stream whose `OPENED` announced it for the end.
    Digest {
        /// The stream.
        stream: StreamId,
        /// BLAKE3-256 of the file.
        digest: [u8; 32],
    },
    /// BLAKE3 tree nodes for a verified stream (`PROOF`), for its [`crate::verify::Verifier`].
    Proof {
        /// The stream.
        stream: StreamId,
        /// Whole 64-byte nodes, in the order the verifier needs them.
        nodes: bytes::Bytes,
    },
    /// The answer to [`ClientConn::ping`].
    Clock {
        /// Round-trip time.
        rtt: Duration,
        /// The server's clock minus ours, in microseconds (symmetric-path assumption).
        offset_us: i64,
    },
    /// A chat `Ack` or `Message` from the server (see [`crate::chat`]).
    Chat(Chat),
    /// The connection is over; every pending request and open stream with it.
    Closed(ConnError),
}

/// Why a connection ended, or why a request could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The handshake failed: refused by the server, timed out, or answered with nonsense.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The server said goodbye (it shuts down, or dropped us: idle, rate, protocol).
    #[error("server closed the connection: {code}: {message}")]
    Goodbye {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server failed the connection with an `ERROR` for request 0.
    #[error("{code}: {message}")]
    Fatal {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server sent nothing, not even a `PONG`, for this long: it or the path is gone.
    #[error("the server has been silent for {0:?} (pings unanswered)")]
    Idle(Duration),
    /// The server's bytes did not decode; the stream is out of sync.
    #[error("the server sent malformed data: {0}")]
    Decode(DecodeError),
    /// The server sent a frame that breaks the protocol (an answer of the wrong kind).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The server's byte stream ended without a `GOODBYE`.
    #[error("closed by the server")]
    Eof,
    /// The transport failed under the connection (reset, QUIC error), as the driver saw it.
    #[error("{0}")]
    Transport(String),
    /// We closed the connection ([`ClientConn::close`]).
    #[error("connection closed locally")]
    LocallyClosed,
    /// A request before the handshake finished.
    #[error("not connected yet")]
    NotConnected,
    /// Chat on a connection whose server did not agree to [`Caps::CHAT`].
    #[error("the server does not offer chat")]
    NoChat,
    /// More than [`ClientConnConfig::max_pending`] requests await answers.
    #[error("too many requests awaiting an answer (at most {0})")]
    TooManyPending(usize),
    /// A listing with more entries than [`ClientConnConfig::max_catalog_entries`].
    #[error("the server's catalog has more than {max} entries (the client's limit)")]
    CatalogTooLarge {
        /// The limit.
        max: usize,
    },
}

/// A client connection, sans IO.
#[derive(Debug)]
pub struct ClientConn {
    state: State,
    epoch: Instant,
    ping_interval: Duration,
    idle_timeout: Duration,
    max_catalog_entries: usize,
    max_pending: usize,
    out: BytesMut,
    events: VecDeque<ClientEvent>,
    next_request: u32,
    next_stream: u32,
    /// Requests awaiting their answer, by id.
    requests: BTreeMap<u32, Pending>,
    /// Streams asked for or open, by id: where `CLOSE` and `DIGEST` go. The value is the
    /// request still awaiting `OPENED`, if any.
    streams: BTreeMap<StreamId, Option<u32>>,
    /// An explicit [`ClientConn::ping`] awaits its pong.
    probing: bool,
}

#[derive(Debug)]
enum State {
    /// `None` only for the instant the handshake is consumed.
    Handshaking(Option<ClientHandshake>),
    Established(Established, Keepalive),
    Closed(ConnError),
}

#[derive(Debug)]
enum Pending {
    List(Vec<Entry>),
    Stream(StreamId),
}

impl ClientConn {
    /// Starts a connection at `now`: the `HELLO` is queued for [`ClientConn::poll_transmit`].
    pub fn new(config: ClientConnConfig, now: Instant) -> Self {
        let mut handshake = ClientHandshake::new(config.handshake, now);
        let mut out = BytesMut::new();
        handshake.poll_transmit(&mut out);
        Self {
            state: State::Handshaking(Some(handshake)),
            epoch: config.epoch,
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            max_catalog_entries: config.max_catalog_entries,
            max_pending: config.max_pending,
            out,
            events: VecDeque::new(),
            next_request: 1,
            next_stream: 1,
            requests: BTreeMap::new(),
            streams: BTreeMap::new(),
            probing: false,
        }
    }

    /// Takes a control frame from the server.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        match &mut self.state {
            State::Closed(_) => {}
            State::Handshaking(hs) => {
                let Some(hs) = hs.take() else { return };
                match hs.handle_frame(now, frame) {
                    Ok(est) => {
                        let keepalive =
                            Keepalive::new(now, self.epoch, self.ping_interval, self.idle_timeout);
                        self.events.push_back(ClientEvent::Connected(est.clone()));
                        self.state = State::Established(est, keepalive);
                    }
                    Err(e) => self.fail(ConnError::Handshake(e)),
                }
            }
            State::Established(_, keepalive) => {
                keepalive.handle_rx(now);
                self.handle_established(now, frame);
            }
        }
    }

    fn handle_established(&mut self, now: Instant, frame: Frame) {
        let State::Established(_, keepalive) = &mut self.state else {
            return;
        };
        match frame {
            Frame::Ping { nonce, time_us } => {
                keepalive.handle_ping(now, nonce, time_us, &mut self.out);
            }
            Frame::Pong {
                nonce,
                echo_us,
                time_us,
            } => {
                let awaited = keepalive.awaiting_pong();
                keepalive.handle_pong(now, nonce, echo_us, time_us);
                let answered = awaited && !keepalive.awaiting_pong();
                if answered && std::mem::take(&mut self.probing) {
                    if let (Some(rtt), Some(offset_us)) =
                        (keepalive.rtt(), keepalive.clock_offset_us())
                    {
                        self.events.push_back(ClientEvent::Clock { rtt, offset_us });
                    }
                }
            }
            Frame::Catalog(c) => self.handle_catalog(now, c),
            Frame::Opened(o) => match self.requests.remove(&o.request) {
                None => {} // cancelled meanwhile
                Some(Pending::Stream(stream)) if stream == o.stream => {
                    self.streams.insert(stream, None);
                    self.events.push_back(ClientEvent::Opened {
                        request: o.request,
                        opened: o,
                    });
                }
                Some(Pending::Stream(stream)) => self.violation(
                    now,
                    format!(
                        "OPENED for request {} names stream {}, not {}",
                        o.request, o.stream.0, stream.0
                    ),
                ),
                Some(Pending::List(_)) => {
                    self.violation(now, format!("OPENED answers request {}, a LIST", o.request))
                }
            },
            Frame::Error(ErrorFrame {
                request: 0,
                code,
                message,
            }) => self.fail(ConnError::Fatal { code, message }),
            Frame::Error(ErrorFrame {
                request,
                code,
                message,
            }) => {
                let stream = match self.requests.remove(&request) {
                    None => return, // cancelled meanwhile
                    Some(Pending::List(_)) => None,
                    Some(Pending::Stream(stream)) => {
                        self.streams.remove(&stream);
                        Some(stream)
                    }
                };
                self.events.push_back(ClientEvent::Refused {
                    request,
                    stream,
                    code,
                    message,
                });
            }
            Frame::Close {
                stream,
                code,
                message,
            } => {
                if let Some(request) = self.streams.remove(&stream) {
                    // A CLOSE before OPENED ends the request too.
                    if let Some(request) = request {
                        self.requests.remove(&request);
                    }
                    self.events.push_back(ClientEvent::StreamClosed {
                        stream,
                        code,
                        message,
                    });
                }
            }
            Frame::Digest { stream, digest } if self.streams.contains_key(&stream) => {
                self.events
                    .push_back(ClientEvent::Digest { stream, digest });
            }
            Frame::Proof { stream, nodes } => {
                let verified = self
                    .established()
                    .is_some_and(|e| e.caps.contains(Caps::VERIFIED));
                if !verified {
                    let what = "a PROOF frame on a connection without VERIFIED".to_owned();
                    return self.violation(now, what);
                }
                if self.streams.contains_key(&stream) {
                    self.events.push_back(ClientEvent::Proof { stream, nodes });
                }
            }
            Frame::Goodbye { code, message } => self.fail(ConnError::Goodbye { code, message }),
            Frame::Chat(chat) => match chat.kind {
                ChatKind::Ack | ChatKind::Message => self.events.push_back(ClientEvent::Chat(chat)),
                kind => self.violation(now, format!("CHAT kind {kind:?} from the server")),
            },
            // Chunks of streams nobody reads any more (cancelled), and frames only a client
            // sends: nothing to do, as before the machine existed.
            _ => {}
        }
    }

    fn handle_catalog(&mut self, now: Instant, c: Catalog) {
        let Some(pending) = self.requests.get_mut(&c.request) else {
            return; // cancelled meanwhile
        };
        let Pending::List(entries) = pending else {
            return self.violation(
                now,
                format!("CATALOG answers request {}, not a LIST", c.request),
            );
        };
        if entries.len().saturating_add(c.entries.len()) > self.max_catalog_entries {
            self.requests.remove(&c.request);
            self.events.push_back(ClientEvent::Failed {
                request: c.request,
                error: ConnError::CatalogTooLarge {
                    max: self.max_catalog_entries,
                },
            });
            return;
        }
        entries.extend(c.entries);
        if c.last {
            let Some(Pending::List(entries)) = self.requests.remove(&c.request) else {
                return;
            };
            self.events.push_back(ClientEvent::Listed {
                request: c.request,
                entries,
            });
        }
    }

    /// The server's bytes did not decode: the connection ends (a `GOODBYE` says why).
    pub fn handle_decode_error(&mut self, _now: Instant, error: DecodeError) {
        if self.is_closed() {
            return;
        }
        self.goodbye(ErrorCode::from(&error), &error.to_string());
        self.fail(ConnError::Decode(error));
    }

    /// Chunk bytes arrived from the server. Chunks bypass the machine, but they prove the
    /// server alive, so they count for the idle timeout as a control frame does: a client that
    /// reads slowly finds the server's `PING`s queued behind the chunks it has not read yet,
    /// and without this took a busy server for a silent one. Call it for every chunk (or every
    /// read that brought bytes).
    pub fn handle_data(&mut self, now: Instant) {
        if let State::Established(_, keepalive) = &mut self.state {
            keepalive.handle_rx(now);
        }
    }

    /// The server's byte stream ended.
    pub fn handle_eof(&mut self, _now: Instant) {
        self.fail(ConnError::Eof);
    }

    /// The transport failed under the connection (what the driver saw, for the user).
    pub fn handle_transport_error(&mut self, _now: Instant, message: String) {
        self.fail(ConnError::Transport(message));
    }

    /// Runs the timers: the handshake's deadline, pings, the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Closed(_) => {}
            State::Handshaking(hs) => {
                if let Some(Err(e)) = hs.as_ref().map(|hs| hs.handle_timeout(now)) {
                    self.fail(ConnError::Handshake(e));
                }
            }
            State::Established(_, keepalive) => {
                if let Err(idle) = keepalive.handle_timeout(now, &mut self.out) {
                    self.goodbye(ErrorCode::Timeout, &format!("no answer for {:?}", idle.0));
                    self.fail(ConnError::Idle(idle.0));
                }
            }
        }
    }

    /// When [`ClientConn::handle_timeout`] must be called next; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Handshaking(hs) => hs.as_ref().map(ClientHandshake::poll_timeout),
            State::Established(_, keepalive) => Some(keepalive.poll_timeout()),
            State::Closed(_) => None,
        }
    }

    /// Appends the encoded control frames waiting to go to `out`; whether there were any.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if self.out.is_empty() {
            return false;
        }
        out.extend_from_slice(&self.out);
        self.out.clear();
        true
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Queues a chat `Send` or `Join` (made by [`crate::chat::Outbox`] and
    /// [`crate::chat::Inbox`]).
    pub fn chat(&mut self, chat: &Chat) -> Result<(), ConnError> {
        let State::Established(est, _) = &self.state else {
            return Err(match &self.state {
                State::Closed(e) => e.clone(),
                _ => ConnError::NotConnected,
            });
        };
        if !est.caps.contains(Caps::CHAT) {
            return Err(ConnError::NoChat);
        }
        self.send(&Frame::Chat(chat.clone()));
        Ok(())
    }

    /// Queues a `RELAY` frame: the relays this edge's subscriptions come through, itself
    /// last. `false` (nothing sent) when the server did not agree to [`Caps::RELAY`]: it knows
    /// no relays, so it has no loops or hop limit to check.
    pub fn relay(&mut self, path: &[u64]) -> Result<bool, ConnError> {
        let State::Established(est, _) = &self.state else {
            return Err(match &self.state {
                State::Closed(e) => e.clone(),
                _ => ConnError::NotConnected,
            });
        };
        if !est.caps.contains(Caps::RELAY) {
            return Ok(false);
        }
        self.send(&Frame::Relay {
            path: path.to_vec(),
        });
        Ok(true)
    }

    /// Asks for the catalog under `prefix`; answered by [`ClientEvent::Listed`],
    /// [`ClientEvent::Refused`] or [`ClientEvent::Failed`].
    pub fn list(&mut self, prefix: &str) -> Result<u32, ConnError> {
        let request = self.next_request()?;
        self.requests.insert(request, Pending::List(Vec::new()));
        self.send(&Frame::List {
            request,
            prefix: prefix.to_owned(),
        });
        Ok(request)
    }

    /// Opens a stream of a file; answered by [`ClientEvent::Opened`] or
    /// [`ClientEvent::Refused`].
    pub fn open(&mut self, open: OpenRequest) -> Result<(u32, StreamId), ConnError> {
        let (request, stream) = self.next_stream_request()?;
        self.send(&Frame::Open(Open {
            request,
            stream,
            path: open.path,
            mode: open.mode,
            resume: open.resume,
            compress: open.compress,
            raw: open.raw,
            fragment: open.fragment,
            header_crc: open.header_crc,
            chunk_size: open.chunk_size,
        }));
        Ok((request, stream))
    }

    /// Receives a live channel or a call track; answered as [`ClientConn::open`].
    pub fn subscribe(&mut self, channel: &str) -> Result<(u32, StreamId), ConnError> {
        let (request, stream) = self.next_stream_request()?;
        self.send(&Frame::Subscribe {
            request,
            stream,
            channel: channel.to_owned(),
        });
        Ok((request, stream))
    }

    /// Announces a live source on a new stream; answered as [`ClientConn::open`].
    pub fn publish(&mut self, channel: &str, codec: Codec) -> Result<(u32, StreamId), ConnError> {
        let (request, stream) = self.next_stream_request()?;
        self.send(&Frame::Publish {
            request,
            stream,
            channel: channel.to_owned(),
            codec,
        });
        Ok((request, stream))
    }

    /// Stops a stream: `CLOSE` to the server, and the stream (and its request, if still
    /// unanswered) is forgotten. Nothing for a stream already over.
    pub fn cancel(&mut self, stream: StreamId) {
        self.abort(stream, ErrorCode::None, String::new());
    }

    /// Like [`ClientConn::cancel`], telling the server why (`CLOSE` with `code`): e.g.
    /// [`ErrorCode::Unverified`] for a stream whose bytes failed verification.
    pub fn abort(&mut self, stream: StreamId, code: ErrorCode, message: String) {
        let Some(request) = self.streams.remove(&stream) else {
            return;
        };
        if let Some(request) = request {
            self.requests.remove(&request);
        }
        self.send(&Frame::Close {
            stream,
            code,
            message,
        });
    }

    /// Stops a stream this client publishes, saying why: a publisher whose input broke sends
    /// [`ErrorCode::BadInput`] and the reason, which the server passes on to the channel's
    /// viewers. Published streams are not in the table (the server answers them once), so
    /// the `CLOSE` goes out whatever it holds; the server ignores one for a stream it no
    /// longer runs.
    pub fn abort_publish(&mut self, stream: StreamId, code: ErrorCode, message: String) {
        self.streams.remove(&stream);
        self.send(&Frame::Close {
            stream,
            code,
            message,
        });
    }

    /// The application is done with a stream (it read its end): forgotten, without a word to
    /// the server.
    pub fn stream_done(&mut self, stream: StreamId) {
        if let Some(Some(request)) = self.streams.remove(&stream) {
            self.requests.remove(&request);
        }
    }

    /// Pings the server now to measure the round-trip time and the clocks' offset; answered by
    /// [`ClientEvent::Clock`].
    pub fn ping(&mut self, now: Instant) {
        if let State::Established(_, keepalive) = &mut self.state {
            keepalive.ping_now(now, &mut self.out);
            self.probing = true;
        }
    }

    /// Says goodbye: `GOODBYE` is queued, and the connection is closed
    /// ([`ClientEvent::Closed`] with [`ConnError::LocallyClosed`]).
    pub fn close(&mut self, _now: Instant) {
        if self.is_closed() {
            return;
        }
        self.goodbye(ErrorCode::None, "");
        self.fail(ConnError::LocallyClosed);
    }

    /// What the handshake agreed, once it has.
    pub fn established(&self) -> Option<&Established> {
        match &self.state {
            State::Established(est, _) => Some(est),
            _ => None,
        }
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// Why the connection is over, once it is.
    pub fn close_reason(&self) -> Option<&ConnError> {
        match &self.state {
            State::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// Requests awaiting their answer.
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Streams asked for or open.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    fn next_request(&mut self) -> Result<u32, ConnError> {
        match &self.state {
            State::Established(..) => {}
            State::Handshaking(_) => return Err(ConnError::NotConnected),
            State::Closed(e) => return Err(e.clone()),
        }
        if self.requests.len() >= self.max_pending {
            return Err(ConnError::TooManyPending(self.max_pending));
        }
        // Request 0 means "the connection" in ERROR; ids still awaited are not reused.
        loop {
            let id = self.next_request;
            self.next_request = self.next_request.wrapping_add(1);
            if id != 0 && !self.requests.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    fn next_stream_request(&mut self) -> Result<(u32, StreamId), ConnError> {
        let request = self.next_request()?;
        // The server refuses a stream id in use; after wrapping, skip the ones still open.
        let stream = loop {
            let id = StreamId(self.next_stream);
            self.next_stream = self.next_stream.wrapping_add(1);
            if id.0 != 0 && !self.streams.contains_key(&id) {
                break id;
            }
        };
        self.requests.insert(request, Pending::Stream(stream));
        self.streams.insert(stream, Some(request));
        Ok((request, stream))
    }

    fn send(&mut self, frame: &Frame) {
        encode(frame, &mut self.out);
    }

    fn goodbye(&mut self, code: ErrorCode, message: &str) {
        self.send(&Frame::Goodbye {
            code,
            message: message.to_owned(),
        });
    }

    /// A server that breaks the protocol is not trusted further: the connection ends.
    fn violation(&mut self, _now: Instant, what: String) {
        self.goodbye(ErrorCode::Protocol, &what);
        self.fail(ConnError::Protocol(what));
    }

    fn fail(&mut self, error: ConnError) {
        if self.is_closed() {
            return;
        }
        self.requests.clear();
        self.streams.clear();
        self.probing = false;
        self.events.push_back(ClientEvent::Closed(error.clone()));
        self.state = State::Closed(error);
    }
}

#[cfg(test)]
mod tests;
