//! The server's connection machine as a conversation: frames in, the bytes it would send
//! decoded back into frames, on a clock the tests advance.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::session::ServerConfig;
use crate::wire::{Caps, Decoder, Hello, Mode, Resume, VERSION};
use crate::{Chunk, ChunkFlags};

const PING: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(30);
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A connection and the virtual time it runs on.
struct Peer {
    conn: ServerConn,
    t0: Instant,
    now: Instant,
}

fn config() -> ServerConnConfig {
    ServerConnConfig {
        handshake: ServerConfig {
            token: Some("secret".into()),
            timeout: HANDSHAKE,
            ..ServerConfig::default()
        },
        epoch: Instant::now(),
        ping_interval: PING,
        idle_timeout: IDLE,
        max_streams: 3,
        max_requests_per_sec: 5,
        catalog_page: 256,
        relay_id: None,
        max_relay_hops: 4,
    }
}

fn hello(token: &str, caps: Caps) -> Frame {
    Frame::Hello(Hello {
        min_version: VERSION,
        max_version: VERSION,
        caps,
        token: token.into(),
        client_name: "test-client".into(),
    })
}

fn open(request: u32, stream: u32) -> Frame {
    Frame::Open(Open {
        request,
        stream: StreamId(stream),
        path: "a.bin".into(),
        mode: Mode::Download,
        resume: Resume::Start,
        compress: false,
        raw: false,
        fragment: false,
        header_crc: false,
        chunk_size: 0,
    })
}

fn publish(request: u32, stream: u32) -> Frame {
    Frame::Publish {
        request,
        stream: StreamId(stream),
        channel: "live/cam".into(),
        codec: Codec::Bytes,
    }
}

fn subscribe(request: u32, stream: u32) -> Frame {
    Frame::Subscribe {
        request,
        stream: StreamId(stream),
        channel: "live/cam".into(),
    }
}

fn error(request: u32, code: ErrorCode, message: &str) -> Frame {
    Frame::Error(ErrorFrame {
        request,
        code,
        message: message.into(),
    })
}

fn goodbye(code: ErrorCode, message: &str) -> Frame {
    Frame::Goodbye {
        code,
        message: message.into(),
    }
}

fn entry(n: usize) -> Entry {
    Entry {
        path: format!("f{n}.bin"),
        codec: Codec::Bytes,
        size: Some(n as u64),
        duration_us: None,
        viewers: 0,
        note: Some("served as bytes".into()),
    }
}

impl Peer {
    /// A connection just accepted.
    fn accepted() -> Self {
        Self::with(config())
    }

    fn with(config: ServerConnConfig) -> Self {
        let t0 = config.epoch;
        Self {
            conn: ServerConn::new(config, t0, 7),
            t0,
            now: t0,
        }
    }

    /// A connection past its handshake, its WELCOME and events taken.
    fn connected() -> Self {
        let mut p = Self::accepted();
        p.send(hello("secret", Caps::LZ4 | Caps::ANY_FILE));
        assert!(matches!(p.sent()[..], [Frame::Welcome(_)]));
        assert!(matches!(p.events()[..], [ServerEvent::Connected(_)]));
        p
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn send(&mut self, frame: Frame) {
        self.conn.handle_frame(self.now, frame);
    }

    /// What the machine would write, decoded as the client would.
    fn sent(&mut self) -> Vec<Frame> {
        let mut wire = BytesMut::new();
        let wrote = self.conn.poll_transmit(&mut wire);
        assert_eq!(wrote, !wire.is_empty());
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        while let Some(f) = decoder
            .decode(&mut wire)
            .expect("the server's bytes decode")
        {
            frames.push(f);
        }
        assert!(wire.is_empty(), "a partial frame was left");
        frames
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Runs the timer if it is due at the current time.
    fn tick(&mut self) {
        if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
        }
    }
}

#[test]
fn a_good_hello_is_welcomed_and_the_connection_is_established() {
    let mut p = Peer::accepted();
    assert_eq!(p.conn.poll_timeout(), Some(p.t0 + HANDSHAKE));
    assert!(p.conn.established().is_none());
    p.advance(Duration::from_millis(20));
    p.send(hello("secret", Caps::LZ4 | Caps(0x8000_0000)));
    let Frame::Welcome(w) = &p.sent()[0] else {
        panic!("no WELCOME")
    };
    assert_eq!(w.session_id, 7);
    assert_eq!(w.caps, Caps::LZ4, "only the capabilities both have");
    let est = p.conn.established().cloned().unwrap();
    assert_eq!(est.peer_name, "test-client");
    assert_eq!(p.events(), [ServerEvent::Connected(est)]);
    // From now on the timer is keepalive's.
    assert_eq!(p.conn.poll_timeout(), Some(p.now + PING));
    assert!(!p.conn.is_closed());
}

#[test]
fn a_wrong_token_is_refused_and_the_connection_closed() {
    let mut p = Peer::accepted();
    p.send(hello("guess", Caps::default()));
    assert_eq!(p.sent(), [error(0, ErrorCode::Unauthorized, "wrong token")]);
    assert_eq!(
        p.events(),
        [
            ServerEvent::ErrorSent(ErrorCode::Unauthorized),
            ServerEvent::HandshakeFailed(Some(HandshakeError::Unauthorized)),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
    assert!(p.conn.is_closed());
    assert_eq!(p.conn.poll_timeout(), None);
    // A closed connection ignores whatever still comes.
    p.send(hello("secret", Caps::default()));
    p.send(Frame::List {
        request: 1,
        prefix: String::new(),
    });
    assert!(p.sent().is_empty());
    assert!(p.events().is_empty());
}

#[test]
fn a_first_frame_other_than_hello_is_a_protocol_error() {
    let mut p = Peer::accepted();
    p.send(open(1, 1));
    assert_eq!(
        p.sent(),
        [error(
            0,
            ErrorCode::Protocol,
            "the first frame must be HELLO"
        )]
    );
    assert!(p.conn.is_closed());
}

#[test]
fn no_hello_within_the_timeout_is_refused_with_timeout() {
    let mut p = Peer::accepted();
    p.advance(HANDSHAKE - Duration::from_millis(1));
    p.conn.handle_timeout(p.now); // early: nothing happens
    assert!(p.sent().is_empty() && p.events().is_empty());
    p.advance(Duration::from_millis(1));
    p.tick();
    assert_eq!(
        p.sent(),
        [error(
            0,
            ErrorCode::Timeout,
            "no HELLO within the handshake timeout"
        )]
    );
    assert_eq!(
        p.events(),
        [
            ServerEvent::ErrorSent(ErrorCode::Timeout),
            ServerEvent::HandshakeFailed(Some(HandshakeError::Timeout)),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
}

#[test]
fn a_hello_after_the_deadline_is_too_late() {
    let mut p = Peer::accepted();
    p.advance(HANDSHAKE);
    p.send(hello("secret", Caps::default()));
    assert_eq!(
        p.sent(),
        [error(
            0,
            ErrorCode::Timeout,
            "no HELLO within the handshake timeout"
        )]
    );
    assert!(p.conn.established().is_none());
}

#[test]
fn a_client_leaving_before_hello_sends_nothing() {
    let mut p = Peer::accepted();
    p.conn.handle_eof(p.now);
    assert!(p.sent().is_empty());
    assert_eq!(
        p.events(),
        [
            ServerEvent::HandshakeFailed(None),
            ServerEvent::Closed(Ending::PeerLeft),
        ]
    );
}

#[test]
fn server_shutdown_during_the_handshake_lets_the_client_go_without_a_frame() {
    let mut p = Peer::accepted();
    p.conn.close(p.now, ErrorCode::None, "server shutting down");
    assert!(p.sent().is_empty());
    assert_eq!(p.events(), [ServerEvent::Closed(Ending::Aborted)]);
}

#[test]
fn garbage_instead_of_hello_is_answered_with_an_error_frame() {
    let mut p = Peer::accepted();
    p.conn
        .handle_decode_error(p.now, DecodeError::UnknownFrameType(0x7f));
    assert_eq!(
        p.sent(),
        [error(
            0,
            ErrorCode::Protocol,
            "not a chunkcast hello: unknown frame type 0x7f"
        )]
    );
    assert_eq!(
        p.events(),
        [
            ServerEvent::ErrorSent(ErrorCode::Protocol),
            ServerEvent::HandshakeFailed(Some(HandshakeError::Decode(
                DecodeError::UnknownFrameType(0x7f)
            ))),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
}

#[test]
fn decode_errors_after_the_handshake_say_goodbye_with_the_mapped_code() {
    let mut p = Peer::connected();
    p.conn.handle_decode_error(p.now, DecodeError::BadUtf8);
    assert_eq!(
        p.sent(),
        [goodbye(
            ErrorCode::Protocol,
            "peer sent malformed data: string is not valid UTF-8"
        )]
    );
    assert_eq!(
        p.events(),
        [
            ServerEvent::Dropped(DropReason::Protocol),
            ServerEvent::ErrorSent(ErrorCode::Protocol),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );

    let mut p = Peer::connected();
    let big = DecodeError::FrameTooLarge {
        len: 1 << 30,
        max: 1 << 20,
    };
    p.conn.handle_decode_error(p.now, big.clone());
    assert_eq!(
        p.sent(),
        [goodbye(
            ErrorCode::TooLarge,
            &format!("peer sent malformed data: {big}")
        )]
    );
    assert_eq!(
        p.events()[0],
        ServerEvent::Dropped(DropReason::TooLarge),
        "counted apart from other protocol errors"
    );
}

#[test]
fn an_idle_link_is_pinged_and_a_silent_client_dropped() {
    let mut p = Peer::connected();
    p.advance(PING);
    p.tick();
    let [Frame::Ping { nonce, time_us }] = p.sent()[..] else {
        panic!("no PING")
    };
    assert_eq!(time_us, PING.as_micros() as u64, "counted from the epoch");
    // The client answers 40 ms later: the RTT is measured, the client counts as alive.
    p.advance(Duration::from_millis(40));
    p.send(Frame::Pong {
        nonce,
        echo_us: time_us,
        time_us: 0,
    });
    assert_eq!(p.conn.rtt(), Some(Duration::from_millis(40)));
    let heard = p.now;
    // Then silence: pings every interval, no goodbye before the idle timeout.
    let mut pings = 0;
    while p.now < heard + IDLE - Duration::from_millis(1) {
        p.advance(Duration::from_millis(500));
        if p.now >= heard + IDLE {
            break;
        }
        p.tick();
        for f in p.sent() {
            assert!(matches!(f, Frame::Ping { .. }), "{f:?}");
            pings += 1;
        }
        assert!(!p.conn.is_closed());
    }
    // Every interval from the first ping (at 10, 15, 20, 25 and 30 s); the next would be at
    // 35 s, when the client has been silent for the idle timeout.
    assert_eq!(pings, 5);
    p.now = heard + IDLE;
    p.tick();
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [Frame::Goodbye { code: ErrorCode::Timeout, message }]
            if message.starts_with("closing an idle connection: peer silent for")),
        "{sent:?}"
    );
    assert_eq!(
        p.events(),
        [
            ServerEvent::Dropped(DropReason::IdleTimeout),
            ServerEvent::ErrorSent(ErrorCode::Timeout),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
}

#[test]
fn any_frame_from_the_client_keeps_it_alive_and_pings_are_answered() {
    let mut p = Peer::connected();
    for _ in 0..10 {
        p.advance(IDLE / 2);
        p.tick();
        p.send(Frame::Ping {
            nonce: 9,
            time_us: 1234,
        });
    }
    assert!(!p.conn.is_closed(), "a client that talks is never idle");
    let pongs = p
        .sent()
        .into_iter()
        .filter(|f| {
            matches!(f, Frame::Pong { nonce: 9, echo_us: 1234, time_us }
                if *time_us > 0)
        })
        .count();
    assert_eq!(pongs, 10);
}

#[test]
fn requests_over_the_rate_are_refused_then_the_connection_closed() {
    let mut p = Peer::connected();
    let list = |request| Frame::List {
        request,
        prefix: String::new(),
    };
    for r in 1..=5 {
        p.send(list(r));
    }
    let served = p.events();
    assert_eq!(served.len(), 5);
    assert!(served.iter().all(|e| matches!(e, ServerEvent::List { .. })));
    // A ping over the rate goes unanswered, and counts as a refusal.
    p.send(Frame::Ping {
        nonce: 1,
        time_us: 0,
    });
    assert!(p.sent().is_empty());
    assert_eq!(p.events(), [ServerEvent::RateLimited]);
    // CLOSE and PONG do not draw on the rate.
    p.send(Frame::Close {
        stream: StreamId(9),
        code: ErrorCode::None,
        message: String::new(),
    });
    assert!(p.events().is_empty());
    let busy = "too many requests (limit 5 per second): slow down";
    for r in 6..=9 {
        p.send(list(r));
    }
    assert_eq!(
        p.sent(),
        (6..=9)
            .map(|r| error(r, ErrorCode::Busy, busy))
            .collect::<Vec<_>>()
    );
    assert!(!p.conn.is_closed());
    p.events();
    p.send(open(10, 1));
    assert_eq!(
        p.sent(),
        [goodbye(
            ErrorCode::Busy,
            "closing: requests kept coming over the limit of 5 per second"
        )]
    );
    assert_eq!(
        p.events(),
        [
            ServerEvent::RateLimited,
            ServerEvent::Dropped(DropReason::RateLimit),
            ServerEvent::ErrorSent(ErrorCode::Busy),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
    assert_eq!(p.conn.streams().count(), 0, "the refused OPEN took no slot");
}

#[test]
fn a_client_within_its_rate_is_always_served() {
    let mut p = Peer::connected();
    for r in 0..100 {
        p.advance(Duration::from_millis(200));
        p.send(Frame::List {
            request: r,
            prefix: String::new(),
        });
        assert!(matches!(p.events()[..], [ServerEvent::List { request, .. }] if request == r));
    }
}

/// The three requests that start a stream, each on a given request id and stream id.
fn starters() -> [fn(u32, u32) -> Frame; 3] {
    [open, publish, subscribe]
}

#[test]
fn every_kind_of_stream_counts_against_one_limit() {
    for (i, start) in starters().into_iter().enumerate() {
        let mut p = Peer::connected();
        // The table is filled with one stream of each kind, then the fourth of any is refused.
        p.send(open(1, 1));
        p.send(publish(2, 2));
        p.send(subscribe(3, 3));
        let kinds: Vec<_> = p.conn.streams().collect();
        assert_eq!(
            kinds,
            [
                (StreamId(1), StreamKind::File),
                (StreamId(2), StreamKind::Publisher),
                (StreamId(3), StreamKind::Viewer),
            ]
        );
        p.events();
        p.advance(Duration::from_secs(1));
        p.send(start(4, 4));
        let msg = "too many streams on one connection (limit 3)";
        assert_eq!(p.sent(), [error(4, ErrorCode::Busy, msg)], "kind {i}");
        assert_eq!(
            p.events(),
            [
                ServerEvent::ErrorSent(ErrorCode::Busy),
                ServerEvent::Refused {
                    request: 4,
                    code: ErrorCode::Busy,
                    message: msg.into()
                },
            ]
        );
        // A stream that ends frees its slot.
        p.conn.stream_ended(StreamId(2));
        p.send(start(5, 4));
        assert!(p.sent().is_empty(), "kind {i}");
        assert_eq!(p.events().len(), 1);
        assert_eq!(p.conn.streams().count(), 3);
    }
}

#[test]
fn a_stream_id_in_use_is_refused_for_every_kind() {
    for (running, first) in starters().into_iter().enumerate() {
        for (i, start) in starters().into_iter().enumerate() {
            let mut p = Peer::connected();
            p.send(first(1, 7));
            p.events();
            p.send(start(2, 7));
            assert_eq!(
                p.sent(),
                [error(2, ErrorCode::BadRequest, "stream id already in use")],
                "{running} then {i}"
            );
            assert_eq!(p.conn.streams().count(), 1);
            // Once it has ended, the id is free again.
            p.conn.stream_ended(StreamId(7));
            p.send(start(3, 7));
            assert!(p.sent().is_empty());
            assert_eq!(p.conn.streams().count(), 1);
        }
    }
}

#[test]
fn draining_refuses_new_streams_but_not_listings_or_running_streams() {
    let mut p = Peer::connected();
    p.send(open(1, 1));
    p.events();
    p.conn.drain();
    p.advance(Duration::from_secs(1));
    for (r, start) in starters().into_iter().enumerate() {
        let r = r as u32 + 2;
        p.send(start(r, 10 + r));
        assert_eq!(
            p.sent(),
            [error(r, ErrorCode::Busy, "server is shutting down")]
        );
    }
    p.send(Frame::List {
        request: 9,
        prefix: String::new(),
    });
    let events = p.events();
    assert!(matches!(
        events.last(),
        Some(ServerEvent::List { request: 9, .. })
    ));
    assert_eq!(
        p.conn.streams().collect::<Vec<_>>(),
        [(StreamId(1), StreamKind::File)]
    );
}

#[test]
fn catalogs_are_paged_by_256() {
    for (n, pages) in [(0, 1), (1, 1), (256, 1), (257, 2), (600, 3)] {
        let mut p = Peer::connected();
        p.conn.send_catalog(4, (0..n).map(entry).collect());
        let sent = p.sent();
        assert_eq!(sent.len(), pages, "{n} entries");
        let mut seen = 0;
        for (i, f) in sent.iter().enumerate() {
            let Frame::Catalog(c) = f else {
                panic!("{f:?}")
            };
            assert_eq!(c.request, 4);
            assert_eq!(c.last, i + 1 == pages, "{n} entries, page {i}");
            assert!(c.entries.len() <= 256);
            for e in &c.entries {
                assert_eq!(e.path, format!("f{seen}.bin"), "in order, none lost");
                seen += 1;
            }
        }
        assert_eq!(seen, n);
    }
}

#[test]
fn catalog_entries_are_shown_as_the_client_can_read_them() {
    let mut p = Peer::accepted();
    p.send(hello("secret", Caps::LZ4)); // without ANY_FILE: no notes
    p.sent();
    p.conn.send_catalog(1, vec![entry(1)]);
    let Frame::Catalog(c) = &p.sent()[0] else {
        panic!()
    };
    assert_eq!(c.entries[0].note, None);

    let mut p = Peer::connected(); // with ANY_FILE
    p.conn.send_catalog(1, vec![entry(1)]);
    let Frame::Catalog(c) = &p.sent()[0] else {
        panic!()
    };
    assert_eq!(c.entries[0].note.as_deref(), Some("served as bytes"));
}

#[test]
fn a_client_close_cancels_a_publisher_and_a_file_differently() {
    let mut p = Peer::connected();
    p.send(open(1, 1));
    p.send(publish(2, 2));
    p.events();
    let close = |stream| Frame::Close {
        stream: StreamId(stream),
        code: ErrorCode::None,
        message: String::new(),
    };
    p.send(close(2));
    p.send(close(1));
    p.send(close(1)); // late: the stream is already gone
    p.send(close(77)); // never was
    assert_eq!(
        p.events(),
        [
            ServerEvent::Cancel {
                stream: StreamId(2),
                kind: StreamKind::Publisher,
                code: ErrorCode::None,
                message: String::new(),
            },
            ServerEvent::Cancel {
                stream: StreamId(1),
                kind: StreamKind::File,
                code: ErrorCode::None,
                message: String::new(),
            },
        ]
    );
    assert!(p.sent().is_empty(), "a cancel is not answered");
    assert_eq!(p.conn.streams().count(), 0);
    assert!(!p.conn.is_closed());
}

#[test]
fn the_application_refusing_a_live_request_frees_its_stream() {
    let mut p = Peer::connected();
    p.send(open(1, 1));
    p.send(subscribe(2, 2));
    let events = p.events();
    assert_eq!(
        events[1],
        ServerEvent::Subscribe {
            request: 2,
            stream: StreamId(2),
            channel: "live/cam".into()
        }
    );
    p.conn
        .refuse(2, ErrorCode::NotFound, "no channel live/cam".into());
    assert_eq!(
        p.sent(),
        [error(2, ErrorCode::NotFound, "no channel live/cam")]
    );
    assert_eq!(p.events(), [ServerEvent::ErrorSent(ErrorCode::NotFound)]);
    assert_eq!(
        p.conn.streams().collect::<Vec<_>>(),
        [(StreamId(1), StreamKind::File)],
        "the file is untouched"
    );
    // Refusing a LIST frees nothing.
    p.conn.refuse(3, ErrorCode::NotFound, "not found".into());
    assert_eq!(p.conn.streams().count(), 1);
}

#[test]
fn a_chunk_for_no_published_stream_ends_the_connection() {
    let mut p = Peer::connected();
    let chunk = Chunk::new(
        StreamId(5),
        0,
        0,
        0,
        0,
        ChunkFlags::default(),
        Bytes::from_static(b"x"),
    );
    p.send(Frame::Chunk(chunk));
    assert_eq!(
        p.sent(),
        [error(
            0,
            ErrorCode::BadRequest,
            "chunk for stream #5 that is not being published"
        )]
    );
    assert_eq!(
        p.events(),
        [
            ServerEvent::Dropped(DropReason::Protocol),
            ServerEvent::ErrorSent(ErrorCode::BadRequest),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
}

#[test]
fn a_frame_only_a_server_sends_ends_the_connection() {
    let mut p = Peer::connected();
    p.send(hello("secret", Caps::default()));
    assert_eq!(
        p.sent(),
        [error(0, ErrorCode::Protocol, "unexpected HELLO frame")]
    );
    assert_eq!(
        p.events().last(),
        Some(&ServerEvent::Closed(Ending::Aborted))
    );
}

#[test]
fn the_clients_goodbye_aborts_and_its_eof_lets_files_finish() {
    let mut p = Peer::connected();
    p.send(open(1, 1));
    p.events();
    p.send(goodbye(ErrorCode::None, "bye"));
    assert!(p.sent().is_empty());
    assert_eq!(p.events(), [ServerEvent::Closed(Ending::Goodbye)]);

    let mut p = Peer::connected();
    p.send(open(1, 1));
    p.events();
    p.conn.handle_eof(p.now);
    assert!(p.sent().is_empty());
    assert_eq!(p.events(), [ServerEvent::Closed(Ending::PeerLeft)]);
    assert_eq!(p.conn.poll_timeout(), None);
    // The table still knows the file that may finish.
    assert_eq!(p.conn.streams().count(), 1);
}

#[test]
fn a_server_close_says_goodbye_once() {
    let mut p = Peer::connected();
    p.conn.close(p.now, ErrorCode::None, "server shutting down");
    p.conn.close(p.now, ErrorCode::Internal, "again");
    assert_eq!(p.sent(), [goodbye(ErrorCode::None, "server shutting down")]);
    assert_eq!(
        p.events(),
        [
            ServerEvent::ErrorSent(ErrorCode::None),
            ServerEvent::Closed(Ending::Aborted),
        ]
    );
}

#[test]
fn a_whole_session_as_a_conversation() {
    let mut p = Peer::accepted();
    p.advance(Duration::from_millis(3));
    p.send(hello("secret", Caps::LZ4 | Caps::ANY_FILE));
    assert!(matches!(p.sent()[..], [Frame::Welcome(_)]));
    p.events();
    // LIST → the application lists → CATALOG.
    p.advance(Duration::from_millis(3));
    p.send(Frame::List {
        request: 1,
        prefix: "music/".into(),
    });
    let [ServerEvent::List { request, prefix }] = &p.events()[..] else {
        panic!()
    };
    assert_eq!((*request, prefix.as_str()), (1, "music/"));
    p.conn.send_catalog(1, vec![entry(0), entry(1)]);
    assert!(matches!(&p.sent()[..], [Frame::Catalog(c)] if c.last && c.entries.len() == 2));
    // OPEN → admitted, handed over; the stream runs, then ends.
    p.send(open(2, 1));
    assert!(matches!(&p.events()[..], [ServerEvent::Open(o)] if o.stream == StreamId(1)));
    p.advance(PING);
    p.tick();
    let [Frame::Ping { nonce, time_us }] = p.sent()[..] else {
        panic!()
    };
    p.send(Frame::Pong {
        nonce,
        echo_us: time_us,
        time_us: 1,
    });
    p.conn.stream_ended(StreamId(1));
    assert_eq!(p.conn.streams().count(), 0);
    p.send(goodbye(ErrorCode::None, ""));
    assert_eq!(p.events(), [ServerEvent::Closed(Ending::Goodbye)]);
    assert!(p.sent().is_empty());
}

fn chat_send(seq: u64) -> Frame {
    Frame::Chat(Chat {
        kind: ChatKind::Send,
        room: "call/r".into(),
        author: 1,
        seq,
        sent_us: 0,
        text: "hi".into(),
    })
}

#[test]
fn chat_is_passed_on_within_its_rate_then_the_connection_is_closed() {
    use crate::chat::{SERVER_CHAT_BURST, SERVER_CHAT_PER_SEC};
    let mut p = Peer::accepted();
    p.send(hello("secret", Caps::CHAT));
    p.sent();
    p.events();
    for seq in 1..=u64::from(SERVER_CHAT_BURST) {
        p.send(chat_send(seq));
    }
    let events = p.events();
    assert_eq!(events.len(), SERVER_CHAT_BURST as usize);
    assert!(events.iter().all(|e| matches!(e, ServerEvent::Chat(_))));
    // A second later the rate has refilled that much, and no more.
    p.advance(Duration::from_secs(1));
    for seq in 0..u64::from(SERVER_CHAT_PER_SEC) {
        p.send(chat_send(1000 + seq));
    }
    assert_eq!(p.events().len(), SERVER_CHAT_PER_SEC as usize);
    assert!(p.sent().is_empty());
    p.send(chat_send(2000));
    let sent = p.sent();
    assert!(
        matches!(
            &sent[..],
            [Frame::Goodbye {
                code: ErrorCode::ChatRefused,
                ..
            }]
        ),
        "{sent:?}"
    );
    assert!(p.conn.is_closed());
}

#[test]
fn chat_without_the_capability_or_of_a_server_kind_closes_the_connection() {
    let mut p = Peer::connected(); // LZ4 | ANY_FILE: no CHAT
    p.send(chat_send(1));
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [Frame::Error(e)] if e.code == ErrorCode::ChatRefused && e.request == 0),
        "{sent:?}"
    );
    assert!(p.conn.is_closed());

    let mut p = Peer::accepted();
    p.send(hello("secret", Caps::CHAT));
    p.sent();
    p.send(Frame::Chat(Chat {
        kind: ChatKind::Message,
        room: "call/r".into(),
        author: 1,
        seq: 1,
        sent_us: 0,
        text: "forged".into(),
    }));
    assert!(matches!(&p.sent()[..], [Frame::Error(e)] if e.code == ErrorCode::ChatRefused));
    assert!(p.conn.is_closed());
}

/// A relay (an edge) connected to a server that is itself the edge `relay_id`, allowing
/// `max_relay_hops`.
fn relay_peer(relay_id: Option<u64>, max_relay_hops: usize) -> Peer {
    let mut c = config();
    c.handshake.caps = c.handshake.caps | Caps::RELAY;
    c.relay_id = relay_id;
    c.max_relay_hops = max_relay_hops;
    let mut p = Peer::with(c);
    p.send(hello("secret", Caps::RELAY));
    assert!(matches!(p.sent()[..], [Frame::Welcome(_)]));
    p.events();
    p
}

#[test]
fn a_subscription_through_this_edge_again_is_a_loop_refused_with_relay() {
    let mut p = relay_peer(Some(0xa), 4);
    p.send(Frame::Relay {
        path: vec![0xa, 0xb],
    });
    p.advance(Duration::from_millis(10));
    p.send(subscribe(1, 2));
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [Frame::Error(e)]
            if e.code == ErrorCode::Relay && e.request == 1 && e.message.contains("loop")),
        "{sent:?}"
    );
    assert!(p.conn.streams().next().is_none(), "no stream admitted");
    assert!(!p.conn.is_closed(), "a refusal, not a dropped connection");
    // Another server's edge on the same path is no loop: admitted, its path kept.
    let mut p = relay_peer(Some(0xc), 4);
    p.send(Frame::Relay {
        path: vec![0xa, 0xb],
    });
    p.send(subscribe(1, 2));
    assert!(p.sent().is_empty());
    assert!(matches!(p.events()[..], [ServerEvent::Subscribe { .. }]));
    assert_eq!(p.conn.relay_path(), [0xa, 0xb]);
}

#[test]
fn a_chain_longer_than_the_hop_limit_is_refused_and_one_within_it_admitted() {
    let mut p = relay_peer(None, 2);
    p.send(Frame::Relay {
        path: vec![1, 2, 3],
    });
    p.send(subscribe(1, 2));
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [Frame::Error(e)]
            if e.code == ErrorCode::Relay && e.message.contains("3 relays")
                && e.message.contains("--max-relay-hops 2")),
        "{sent:?}"
    );
    assert!(
        p.events()
            .contains(&ServerEvent::ErrorSent(ErrorCode::Relay))
    );
    // The same connection, its path now within the limit (a relay may say it again).
    p.advance(Duration::from_secs(1));
    p.send(Frame::Relay { path: vec![1, 2] });
    p.send(subscribe(3, 4));
    assert!(p.sent().is_empty());
    assert!(matches!(
        p.events()[..],
        [ServerEvent::Subscribe { request: 3, .. }]
    ));
}

#[test]
fn relay_without_the_capability_closes_the_connection() {
    let mut p = Peer::connected(); // LZ4 | ANY_FILE: no RELAY
    p.send(Frame::Relay { path: vec![1] });
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [Frame::Error(e)] if e.code == ErrorCode::Relay && e.request == 0),
        "{sent:?}"
    );
    assert!(p.conn.is_closed());
}

#[test]
fn fragment_is_admitted_on_v2_and_refused_with_raw_or_on_v1() {
    let fragment = |request, stream, raw| {
        let Frame::Open(mut o) = open(request, stream) else {
            unreachable!()
        };
        o.fragment = true;
        o.raw = raw;
        Frame::Open(o)
    };
    let mut p = Peer::connected();
    p.send(fragment(1, 1, false));
    assert!(matches!(&p.events()[..], [ServerEvent::Open(o)] if o.fragment));
    p.send(fragment(2, 2, true));
    assert!(matches!(
        &p.sent()[..],
        [Frame::Error(e)] if e.request == 2 && e.code == ErrorCode::BadRequest
    ));
    let ev = p.events();
    assert!(
        matches!(
            &ev[..],
            [
                ServerEvent::ErrorSent(_),
                ServerEvent::Refused { request: 2, .. }
            ]
        ),
        "{ev:?}"
    );

    let mut v1 = Peer::accepted();
    v1.send(Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        caps: Caps::default(),
        token: "secret".into(),
        client_name: "old".into(),
    }));
    v1.sent();
    v1.events();
    v1.send(fragment(3, 1, false));
    assert!(matches!(
        &v1.sent()[..],
        [Frame::Error(e)] if e.request == 3 && e.message.contains("version 2")
    ));
    // The refusal leaves the connection up: a plain open still works.
    v1.events();
    v1.send(open(4, 1));
    assert!(
        matches!(&v1.events()[..], [ServerEvent::Open(_)]),
        "v1 open"
    );
}
