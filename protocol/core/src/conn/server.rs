//! The server side of a connection: `ServerConn`.
//!
//! One machine per client, from the first byte to the last: the handshake
//! ([`session::ServerHandshake`]), then keepalive ([`session::Keepalive`]), the request rate
//! ([`RateLimit`]), the stream table with its admission rules, draining, catalog paging, the
//! `ERROR` and `GOODBYE` frames the server sends, and how the connection ends ([`Ending`]).
//!
//! What it does not do is the work: listing a library, reading a file, relaying a live channel.
//! It says what was asked ([`ServerEvent`]) and the application answers through
//! [`ServerConn::send_catalog`], [`ServerConn::refuse`] and [`ServerConn::stream_ended`].
//!
//! The drive loop, once per wake-up (a frame, a decode error, EOF, or the timer):
//! 1. feed what happened with the current time (`handle_*`);
//! 2. drain [`ServerConn::poll_event`], acting on each (which may call back into the machine);
//! 3. write what [`ServerConn::poll_transmit`] appends;
//! 4. stop after [`ServerEvent::Closed`] (once its bytes are written), else sleep until
//!    [`ServerConn::poll_timeout`] or the next input.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::rate::{RateLimit, Verdict};
use crate::chat::{SERVER_CHAT_BURST, SERVER_CHAT_PER_SEC, TokenBucket};
use crate::error::{DecodeError, ErrorCode};
use crate::session::{
    self, DEFAULT_IDLE_TIMEOUT, DEFAULT_PING_INTERVAL, Established, HandshakeError, Keepalive,
    ServerHandshake,
};
use crate::wire::{Caps, Catalog, Chat, ChatKind, Entry, ErrorFrame, Frame, Open, encode};
use crate::{Codec, StreamId};

/// Catalog entries per `CATALOG` frame by default: keeps each frame far below the frame size
/// limit.
pub const DEFAULT_CATALOG_PAGE: usize = 256;

/// Relay hops a subscription may come through by default (`--max-relay-hops`).
pub const DEFAULT_MAX_RELAY_HOPS: usize = 4;

/// What a server connection runs with.
#[derive(Debug, Clone)]
pub struct ServerConnConfig {
    /// The handshake's parameters (token, capabilities, how long a client has to say `HELLO`).
    pub handshake: session::ServerConfig,
    /// The instant `PING`/`PONG` timestamps count from. One per server, so that clients
    /// estimating their offset to the server's clock (calls) share one reference.
    pub epoch: Instant,
    /// How often an established connection is pinged.
    pub ping_interval: Duration,
    /// A client silent for this long is dropped.
    pub idle_timeout: Duration,
    /// Streams (files, viewers, publishers) one connection may run at once.
    pub max_streams: usize,
    /// Requests (and pings) a second before they are refused, then the connection closed.
    pub max_requests_per_sec: u32,
    /// Entries per `CATALOG` frame.
    pub catalog_page: usize,
    /// This server's id in relay paths, if it is an edge (only a server that relays upstream
    /// can close a loop): a subscription whose `RELAY` path holds it is refused.
    pub relay_id: Option<u64>,
    /// The most relays a subscription may come through (the `RELAY` path's length).
    pub max_relay_hops: usize,
}

impl Default for ServerConnConfig {
    /// The server's defaults. The epoch is the moment this is called: a driver sets its own
    /// (the machine itself never reads a clock).
    fn default() -> Self {
        Self {
            handshake: session::ServerConfig::default(),
            epoch: Instant::now(),
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_streams: 16,
            max_requests_per_sec: 50,
            catalog_page: DEFAULT_CATALOG_PAGE,
            relay_id: None,
            max_relay_hops: DEFAULT_MAX_RELAY_HOPS,
        }
    }
}

/// What a stream's task does, which decides how it ends with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Sends a file (`OPEN`): may finish after the client stopped sending, since a
    /// half-closed client may still be reading.
    File,
    /// Sends a live channel (`SUBSCRIBE`): stopped as soon as the client is gone, since a live
    /// stream never finishes on its own.
    Viewer,
    /// Relays a publisher's chunks (`PUBLISH`): never aborted by the connection; its route is
    /// closed instead, and the task relays what had arrived and ends.
    Publisher,
}

/// Why the server dropped an established connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The client was silent past the idle timeout.
    IdleTimeout,
    /// The client kept sending requests over its rate.
    RateLimit,
    /// The client sent bytes that do not decode, or a frame out of place.
    Protocol,
    /// The client sent a frame above the size limits.
    TooLarge,
}

/// How a connection ended, which decides what becomes of its running streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    /// The client stopped sending (EOF). Files may finish (it may still be reading); viewers
    /// stop; publishers' routes close.
    PeerLeft,
    /// The connection is over for everyone: stop every stream.
    Aborted,
    /// The client said `GOODBYE`: as [`Ending::Aborted`], but a publisher that ended its stream
    /// first may still have its last chunks on the way (on QUIC they travel on a stream of
    /// their own, which the `GOODBYE` can overtake), so its relay may take them before it stops.
    Goodbye,
}

/// What the application hears from a [`ServerConn`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The handshake succeeded (`WELCOME` is queued).
    Connected(Established),
    /// The handshake failed: with the error whose `ERROR` frame is queued, or `None` if the
    /// client left (or the link failed) before its `HELLO`. [`ServerEvent::Closed`] follows.
    HandshakeFailed(Option<HandshakeError>),
    /// `LIST`: answer with [`ServerConn::send_catalog`] or [`ServerConn::refuse`].
    List {
        /// The request to answer.
        request: u32,
        /// The prefix listed.
        prefix: String,
    },
    /// `OPEN`, already admitted into the stream table as a [`StreamKind::File`].
    Open(Open),
    /// `PUBLISH`, already admitted as a [`StreamKind::Publisher`]; [`ServerConn::refuse`]
    /// frees it if the application will not take it.
    Publish {
        /// The request to answer.
        request: u32,
        /// The stream the client's chunks come on.
        stream: StreamId,
        /// The channel.
        channel: String,
        /// What the source carries.
        codec: Codec,
    },
    /// `SUBSCRIBE`, already admitted as a [`StreamKind::Viewer`]; [`ServerConn::refuse`]
    /// frees it if the application will not take it.
    Subscribe {
        /// The request to answer.
        request: u32,
        /// The stream to send the channel on.
        stream: StreamId,
        /// The channel.
        channel: String,
    },
    /// The client's `CLOSE` for a running stream, now gone from the table: stop its task (a
    /// publisher: close its route, so what arrived is still relayed).
    Cancel {
        /// The stream.
        stream: StreamId,
        /// What it was.
        kind: StreamKind,
        /// Why, as the client said: `None` for a plain cancel; a publisher that stops for its
        /// input's sake says `BadInput`, which its channel's viewers are told.
        code: ErrorCode,
        /// The client's explanation.
        message: String,
    },
    /// The machine refused a request itself (draining, a limit, a reused id, the rate): the
    /// `ERROR` is queued. For the log.
    Refused {
        /// The request refused.
        request: u32,
        /// The code sent.
        code: ErrorCode,
        /// The message sent.
        message: String,
    },
    /// A chat `Send` or `Join` from a client with [`Caps::CHAT`], within the chat rate: the
    /// application stores and relays it (`Send`, then acknowledges it) or starts relaying the
    /// room (`Join`), or ends the connection with [`ServerConn::close`] if the room refuses it.
    Chat(Chat),
    /// A request or ping came over the connection's rate (refused, or the connection closed).
    RateLimited,
    /// An `ERROR` or `GOODBYE` with this code is queued (for the metrics).
    ErrorSent(ErrorCode),
    /// The server drops the established connection for this reason (its `GOODBYE` is queued).
    Dropped(DropReason),
    /// The connection is over: write what `poll_transmit` still has, then end the streams by
    /// the [`Ending`]'s policy. Nothing more is read.
    Closed(Ending),
}

/// A stream in the table.
#[derive(Debug, Clone, Copy)]
struct Slot {
    kind: StreamKind,
    /// The request that opened it, so that a refusal of that request frees it.
    request: u32,
    /// Admission order, so that a refusal finds the latest stream of a reused request id.
    seq: u64,
}

enum State {
    /// Waiting for `HELLO`; `None` only for the instant `handle_frame` consumes it.
    Handshake(Option<ServerHandshake>),
    Open {
        keepalive: Keepalive,
        rate: RateLimit,
        chat: TokenBucket,
    },
    Closed,
}

/// One client connection on the server, sans-IO. See the [module docs](self) for the loop.
pub struct ServerConn {
    config: ServerConnConfig,
    state: State,
    established: Option<Established>,
    streams: BTreeMap<StreamId, Slot>,
    admitted: u64,
    draining: bool,
    /// The relays this client's subscriptions come through (its `RELAY` frame), it last.
    relay_path: Vec<u64>,
    /// Encoded control frames not yet taken by `poll_transmit`.
    out: BytesMut,
    events: VecDeque<ServerEvent>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("established", &self.established)
            .field("streams", &self.streams)
            .field("draining", &self.draining)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl ServerConn {
    /// A connection accepted at `now`, which the server calls `session_id`; the client's
    /// `HELLO` is due within `config.handshake.timeout`.
    pub fn new(config: ServerConnConfig, now: Instant, session_id: u64) -> Self {
        let hs = ServerHandshake::new(config.handshake.clone(), now, session_id);
        Self {
            config,
            state: State::Handshake(Some(hs)),
            established: None,
            streams: BTreeMap::new(),
            admitted: 0,
            draining: false,
            relay_path: Vec::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
        }
    }

    /// Takes one decoded frame from the client.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        match &mut self.state {
            State::Closed => {}
            State::Handshake(hs) => {
                let Some(hs) = hs.take() else { return };
                match hs.handle_frame(now, frame, &mut self.out) {
                    Ok(est) => {
                        let c = &self.config;
                        self.state = State::Open {
                            keepalive: Keepalive::new(
                                now,
                                c.epoch,
                                c.ping_interval,
                                c.idle_timeout,
                            ),
                            rate: RateLimit::new(c.max_requests_per_sec, now),
                            chat: TokenBucket::new(SERVER_CHAT_BURST, SERVER_CHAT_PER_SEC, now),
                        };
                        self.established = Some(est.clone());
                        self.events.push_back(ServerEvent::Connected(est));
                    }
                    Err(e) => self.handshake_failed(Some(e), Ending::Aborted),
                }
            }
            State::Open { keepalive, .. } => {
                keepalive.handle_rx(now);
                self.on_frame(now, frame);
            }
        }
    }

    /// The client's bytes did not decode: the connection ends with a code saying why (an
    /// `ERROR` during the handshake, which the client is waiting on; a `GOODBYE` after it).
    pub fn handle_decode_error(&mut self, _now: Instant, error: DecodeError) {
        let code = ErrorCode::from(&error);
        match self.state {
            State::Closed => {}
            State::Handshake(_) => {
                let message = format!("not a chunkcast hello: {error}");
                self.encode_error(0, code, message);
                self.handshake_failed(Some(HandshakeError::Decode(error)), Ending::Aborted);
            }
            State::Open { .. } => {
                let why = if code == ErrorCode::TooLarge {
                    DropReason::TooLarge
                } else {
                    DropReason::Protocol
                };
                self.events.push_back(ServerEvent::Dropped(why));
                // The words of the transport's own error, as the client has always seen them.
                self.goodbye(code, format!("peer sent malformed data: {error}"));
                self.closed(Ending::Aborted);
            }
        }
    }

    /// Chunk bytes arrived from the client (a publisher's). Chunks bypass the machine, but
    /// they prove the client alive, so they count for the idle timeout as a control frame
    /// does: a publisher on a slow uplink has its `PING`s queued behind its chunks. Call it for
    /// every chunk (or every read that brought bytes).
    pub fn handle_data(&mut self, now: Instant) {
        if let State::Open { keepalive, .. } = &mut self.state {
            keepalive.handle_rx(now);
        }
    }

    /// The client stopped sending (EOF). Its running files may finish: a half-closed client
    /// may still be reading.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.state {
            State::Closed => {}
            State::Handshake(_) => self.handshake_failed(None, Ending::PeerLeft),
            State::Open { .. } => self.closed(Ending::PeerLeft),
        }
    }

    /// The link failed under the connection (a socket error, not the client's bytes): nothing
    /// more can be sent, and every stream stops.
    pub fn handle_link_lost(&mut self, _now: Instant) {
        match self.state {
            State::Closed => {}
            State::Handshake(_) => self.handshake_failed(None, Ending::Aborted),
            State::Open { .. } => self.closed(Ending::Aborted),
        }
    }

    /// The instant from [`ServerConn::poll_timeout`] has come (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Closed => {}
            State::Handshake(hs) => {
                let Some(hs) = hs.as_ref() else { return };
                if let Err(e) = hs.handle_timeout(now, &mut self.out) {
                    self.handshake_failed(Some(e), Ending::Aborted);
                }
            }
            State::Open { keepalive, .. } => {
                if let Err(e) = keepalive.handle_timeout(now, &mut self.out) {
                    self.events
                        .push_back(ServerEvent::Dropped(DropReason::IdleTimeout));
                    self.goodbye(
                        ErrorCode::Timeout,
                        format!("closing an idle connection: {e}"),
                    );
                    self.closed(Ending::Aborted);
                }
            }
        }
    }

    /// When [`ServerConn::handle_timeout`] is due; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Handshake(hs) => hs.as_ref().map(ServerHandshake::poll_timeout),
            State::Open { keepalive, .. } => Some(keepalive.poll_timeout()),
            State::Closed => None,
        }
    }

    /// Appends the encoded control frames due to the client to `out`; `true` if there were any.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if self.out.is_empty() {
            return false;
        }
        out.extend_from_slice(&self.out);
        self.out.clear();
        true
    }

    /// The next thing the application must hear about.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Answers `LIST` `request` with `entries`, in `CATALOG` frames of at most
    /// `catalog_page` entries (one empty frame for none), each entry shown as the client's
    /// capabilities allow.
    pub fn send_catalog(&mut self, request: u32, entries: Vec<Entry>) {
        let Some(est) = &self.established else { return };
        if self.is_closed() {
            return;
        }
        let caps = est.caps;
        let page = self.config.catalog_page.max(1);
        let pages = entries.len().div_ceil(page).max(1);
        let mut it = entries.into_iter().map(|e| e.for_peer(caps));
        for n in 0..pages {
            let entries: Vec<_> = it.by_ref().take(page).collect();
            let last = n + 1 == pages;
            let frame = Frame::Catalog(Catalog {
                request,
                last,
                entries,
            });
            encode(&frame, &mut self.out);
        }
    }

    /// Queues a frame the application answers with outside the request rules (a chat `Ack`),
    /// unless the connection is closed.
    pub fn send_frame(&mut self, frame: &Frame) {
        if !self.is_closed() {
            encode(frame, &mut self.out);
        }
    }

    /// Refuses `request` with an `ERROR`. If the request had admitted a stream (a `PUBLISH`
    /// or `SUBSCRIBE` the application will not take), the stream is freed; if the client
    /// reused the request id, the latest such stream is.
    pub fn refuse(&mut self, request: u32, code: ErrorCode, message: String) {
        let latest = self
            .streams
            .iter()
            .filter(|(_, s)| s.request == request)
            .max_by_key(|(_, s)| s.seq)
            .map(|(&id, _)| id);
        if let Some(stream) = latest {
            self.streams.remove(&stream);
        }
        if !self.is_closed() {
            self.send_error(request, code, message);
        }
    }

    /// The task running `stream` finished: its slot is free.
    pub fn stream_ended(&mut self, stream: StreamId) {
        self.streams.remove(&stream);
    }

    /// Refuses new streams from now on (the server is shutting down); running ones go on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Ends the connection from the server's side: a `GOODBYE` with `code` and `message` if
    /// it is established (a client still in its handshake is simply let go), then
    /// [`ServerEvent::Closed`] with [`Ending::Aborted`].
    pub fn close(&mut self, _now: Instant, code: ErrorCode, message: &str) {
        match self.state {
            State::Closed => {}
            State::Handshake(_) => self.closed(Ending::Aborted),
            State::Open { .. } => {
                self.goodbye(code, message.to_owned());
                self.closed(Ending::Aborted);
            }
        }
    }

    /// What the handshake agreed, once it has.
    pub fn established(&self) -> Option<&Established> {
        self.established.as_ref()
    }

    /// The streams in the table, by id.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, StreamKind)> + '_ {
        self.streams.iter().map(|(&id, s)| (id, s.kind))
    }

    /// Whether the connection is over ([`ServerEvent::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The relays this client's subscriptions come through, as its `RELAY` frame said (the
    /// client itself last); empty for a viewer. An edge passes it on upstream, itself added.
    pub fn relay_path(&self) -> &[u64] {
        &self.relay_path
    }

    /// The latest round-trip time measured by keepalive.
    pub fn rtt(&self) -> Option<Duration> {
        match &self.state {
            State::Open { keepalive, .. } => keepalive.rtt(),
            _ => None,
        }
    }

    /// An established connection's frame.
    fn on_frame(&mut self, now: Instant, frame: Frame) {
        match frame {
            Frame::Pong {
                nonce,
                echo_us,
                time_us,
            } => {
                if let State::Open { keepalive, .. } = &mut self.state {
                    keepalive.handle_pong(now, nonce, echo_us, time_us);
                }
            }
            // Nobody will read what its streams would send.
            Frame::Goodbye { .. } => self.closed(Ending::Goodbye),
            Frame::Ping { nonce, time_us } => {
                if !self.within_rate(now, None) {
                    return;
                }
                if let State::Open { keepalive, .. } = &mut self.state {
                    keepalive.handle_ping(now, nonce, time_us, &mut self.out);
                }
            }
            Frame::List { request, prefix } => {
                if self.within_rate(now, Some(request)) {
                    self.events.push_back(ServerEvent::List { request, prefix });
                }
            }
            Frame::Open(open) => {
                let (request, stream) = (open.request, open.stream);
                // FRAGMENT is a version 2 flag; a version 1 peer setting it sent garbage.
                let v1 = self.established.as_ref().is_some_and(|e| e.version < 2);
                let offset = matches!(open.resume, crate::wire::Resume::Offset(_));
                if open.fragment && (v1 || open.raw || offset) {
                    let why = if v1 {
                        "the FRAGMENT open flag needs protocol version 2"
                    } else if offset {
                        "a FRAGMENT stream resumes at a chunk seq, not a byte offset"
                    } else {
                        "the RAW and FRAGMENT open flags exclude each other"
                    };
                    if self.within_rate(now, Some(request)) {
                        self.refused(request, ErrorCode::BadRequest, why.to_owned());
                    }
                } else if self.within_rate(now, Some(request))
                    && self.admit(request, stream, StreamKind::File)
                {
                    self.events.push_back(ServerEvent::Open(open));
                }
            }
            Frame::Publish {
                request,
                stream,
                channel,
                codec,
            } => {
                if self.within_rate(now, Some(request))
                    && self.admit(request, stream, StreamKind::Publisher)
                {
                    self.events.push_back(ServerEvent::Publish {
                        request,
                        stream,
                        channel,
                        codec,
                    });
                }
            }
            Frame::Subscribe {
                request,
                stream,
                channel,
            } => {
                if self.within_rate(now, Some(request))
                    && self.relay_allowed(request, &channel)
                    && self.admit(request, stream, StreamKind::Viewer)
                {
                    self.events.push_back(ServerEvent::Subscribe {
                        request,
                        stream,
                        channel,
                    });
                }
            }
            Frame::Chat(chat) => self.on_chat(now, chat),
            Frame::Relay { path } => {
                let relay = self
                    .established
                    .as_ref()
                    .is_some_and(|e| e.caps.contains(Caps::RELAY));
                if relay {
                    self.relay_path = path;
                } else {
                    let msg = "RELAY without the RELAY capability".to_owned();
                    self.protocol_error(ErrorCode::Relay, msg);
                }
            }
            // A CLOSE for a stream not (or no longer) running is late, not wrong.
            Frame::Close {
                stream,
                code,
                message,
            } => {
                if let Some(slot) = self.streams.remove(&stream) {
                    let kind = slot.kind;
                    self.events.push_back(ServerEvent::Cancel {
                        stream,
                        kind,
                        code,
                        message,
                    });
                }
            }
            // The transport routes a publisher's chunks to its task; one that reaches the
            // connection belongs to no stream.
            Frame::Chunk(c) => {
                let msg = format!("chunk for stream {} that is not being published", c.stream);
                self.protocol_error(ErrorCode::BadRequest, msg);
            }
            other => {
                let msg = format!("unexpected {} frame", other.name());
                self.protocol_error(ErrorCode::Protocol, msg);
            }
        }
    }

    /// A chat frame: only with the capability, only the kinds a client sends, within the
    /// chat rate; anything else ends the connection (a client that breaks these is broken or
    /// hostile, and the chat rules have no request to refuse).
    fn on_chat(&mut self, now: Instant, chat: Chat) {
        let caps = self
            .established
            .as_ref()
            .map_or(Caps::default(), |e| e.caps);
        if !caps.contains(Caps::CHAT) {
            let msg = "CHAT without the CHAT capability".to_owned();
            return self.protocol_error(ErrorCode::ChatRefused, msg);
        }
        if !matches!(chat.kind, ChatKind::Send | ChatKind::Join) {
            let msg = format!("CHAT kind {:?} is the server's to send", chat.kind);
            return self.protocol_error(ErrorCode::ChatRefused, msg);
        }
        let State::Open { chat: bucket, .. } = &mut self.state else {
            return;
        };
        if bucket.take(now).is_err() {
            self.events.push_back(ServerEvent::RateLimited);
            self.events
                .push_back(ServerEvent::Dropped(DropReason::RateLimit));
            let msg = format!(
                "closing: chat over the limit of {SERVER_CHAT_PER_SEC} a second \
                 ({SERVER_CHAT_BURST} at once)"
            );
            self.goodbye(ErrorCode::ChatRefused, msg);
            return self.closed(Ending::Aborted);
        }
        self.events.push_back(ServerEvent::Chat(chat));
    }

    /// Draws a request (`Some`) or a ping (`None`) from the connection's rate; `false` if it
    /// is over: the request is refused (a ping goes unanswered), or the connection closed.
    fn within_rate(&mut self, now: Instant, request: Option<u32>) -> bool {
        let State::Open { rate, .. } = &mut self.state else {
            return false;
        };
        let verdict = rate.check(now);
        if verdict == Verdict::Serve {
            return true;
        }
        self.events.push_back(ServerEvent::RateLimited);
        let limit = self.config.max_requests_per_sec;
        if verdict == Verdict::Close {
            self.events
                .push_back(ServerEvent::Dropped(DropReason::RateLimit));
            let msg = format!("closing: requests kept coming over the limit of {limit} per second");
            self.goodbye(ErrorCode::Busy, msg);
            self.closed(Ending::Aborted);
        } else if let Some(request) = request {
            let msg = format!("too many requests (limit {limit} per second): slow down");
            self.refused(request, ErrorCode::Busy, msg);
        }
        false
    }

    /// Whether a subscription may come through this client's relay path: not past the hop
    /// limit, not through this server already (a loop would wait forever for a channel no
    /// tier of it publishes). Refuses it with `relay` otherwise.
    fn relay_allowed(&mut self, request: u32, channel: &str) -> bool {
        let hops = self.relay_path.len();
        let limit = self.config.max_relay_hops;
        let message = if self
            .config
            .relay_id
            .is_some_and(|id| self.relay_path.contains(&id))
        {
            format!(
                "relay loop: the subscription to {channel} came through this edge already \
                 ({hops} hops); check the edges' --edge-of"
            )
        } else if hops > limit {
            format!(
                "relay chain too long: the subscription to {channel} came through {hops} \
                 relays, more than this server's --max-relay-hops {limit}"
            )
        } else {
            return true;
        };
        self.refused(request, ErrorCode::Relay, message);
        false
    }

    /// Admits a new stream (`OPEN`, `PUBLISH` or `SUBSCRIBE` alike): not while draining, not
    /// past the per-connection limit, not on an id in use. Refuses it otherwise.
    fn admit(&mut self, request: u32, stream: StreamId, kind: StreamKind) -> bool {
        let limit = self.config.max_streams;
        let refusal = if self.draining {
            Some((ErrorCode::Busy, "server is shutting down".to_owned()))
        } else if self.streams.len() >= limit {
            let msg = format!("too many streams on one connection (limit {limit})");
            Some((ErrorCode::Busy, msg))
        } else if self.streams.contains_key(&stream) {
            Some((ErrorCode::BadRequest, "stream id already in use".to_owned()))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            self.refused(request, code, message);
            return false;
        }
        self.admitted += 1;
        let seq = self.admitted;
        self.streams.insert(stream, Slot { kind, request, seq });
        true
    }

    /// A frame out of place: say so and end the connection.
    fn protocol_error(&mut self, code: ErrorCode, message: String) {
        self.events
            .push_back(ServerEvent::Dropped(DropReason::Protocol));
        self.send_error(0, code, message);
        self.closed(Ending::Aborted);
    }

    /// The machine's own refusal of a request.
    fn refused(&mut self, request: u32, code: ErrorCode, message: String) {
        self.send_error(request, code, message.clone());
        self.events.push_back(ServerEvent::Refused {
            request,
            code,
            message,
        });
    }

    fn send_error(&mut self, request: u32, code: ErrorCode, message: String) {
        self.encode_error(request, code, message);
        self.events.push_back(ServerEvent::ErrorSent(code));
    }

    fn encode_error(&mut self, request: u32, code: ErrorCode, message: String) {
        let frame = Frame::Error(ErrorFrame {
            request,
            code,
            message,
        });
        encode(&frame, &mut self.out);
    }

    fn goodbye(&mut self, code: ErrorCode, message: String) {
        encode(&Frame::Goodbye { code, message }, &mut self.out);
        self.events.push_back(ServerEvent::ErrorSent(code));
    }

    fn handshake_failed(&mut self, error: Option<HandshakeError>, ending: Ending) {
        // Every handshake error has queued its ERROR frame by now.
        if let Some(e) = &error {
            self.events.push_back(ServerEvent::ErrorSent(e.code()));
        }
        self.events.push_back(ServerEvent::HandshakeFailed(error));
        self.closed(ending);
    }

    fn closed(&mut self, ending: Ending) {
        self.state = State::Closed;
        self.events.push_back(ServerEvent::Closed(ending));
    }
}

#[cfg(test)]
mod tests;
