//! Conversations with a scripted server: frames in, decoded frames out, on simulated time.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::session::DEFAULT_HANDSHAKE_TIMEOUT;
use crate::wire::{Caps, Decoder, FileDigest, VERSION, Welcome};

const PING: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(30);

struct Harness {
    conn: ClientConn,
    now: Instant,
}

impl Harness {
    /// A client that has sent its `HELLO`, not yet answered.
    fn new() -> Self {
        let now = Instant::now();
        let config = ClientConnConfig {
            epoch: now,
            ping_interval: PING,
            idle_timeout: IDLE,
            ..Default::default()
        };
        let mut h = Self {
            conn: ClientConn::new(config, now),
            now,
        };
        assert!(matches!(h.sent().as_slice(), [Frame::Hello(_)]));
        h
    }

    /// A client the server has welcomed.
    fn connected() -> Self {
        let mut h = Self::new();
        h.recv(welcome());
        match h.events().as_slice() {
            [ClientEvent::Connected(est)] => assert_eq!(est.session_id, 7),
            other => panic!("{other:?}"),
        }
        h
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
        }
    }

    fn recv(&mut self, frame: Frame) {
        self.conn.handle_frame(self.now, frame);
    }

    /// The frames the client wrote since last asked.
    fn sent(&mut self) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        self.conn.poll_transmit(&mut buf);
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        while let Some(f) = decoder.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty(), "a partial frame was written");
        frames
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }
}

fn welcome() -> Frame {
    Frame::Welcome(Welcome {
        version: VERSION,
        caps: Caps::LZ4 | Caps::DIGEST_AT_END,
        session_id: 7,
        server_name: "test-server".into(),
    })
}

fn entry(path: &str) -> Entry {
    Entry {
        path: path.into(),
        codec: Codec::Bytes,
        size: Some(1),
        duration_us: None,
        viewers: 0,
        note: None,
    }
}

fn opened(request: u32, stream: StreamId) -> Opened {
    Opened {
        request,
        stream,
        codec: Codec::Bytes,
        total_len: Some(10),
        chunk_count: Some(1),
        duration_us: None,
        digest: FileDigest::AtEnd,
        start_seq: 0,
        start_offset: 0,
        chunk_size: 10,
        note: None,
    }
}

fn download(path: &str) -> OpenRequest {
    OpenRequest {
        path: path.into(),
        mode: Mode::Download,
        resume: Resume::Start,
        compress: false,
        raw: false,
        fragment: false,
        header_crc: false,
        chunk_size: 0,
    }
}

#[test]
fn handshake_ok_makes_requests_possible() {
    let mut h = Harness::new();
    assert_eq!(h.conn.list(""), Err(ConnError::NotConnected));
    assert!(h.sent().is_empty(), "nothing goes out before WELCOME");
    h.recv(welcome());
    let est = match h.events().as_slice() {
        [ClientEvent::Connected(est)] => est.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(est.caps, Caps::LZ4 | Caps::DIGEST_AT_END);
    assert_eq!(h.conn.established(), Some(&est));
    let request = h.conn.list("live/").unwrap();
    assert_eq!(
        h.sent(),
        [Frame::List {
            request,
            prefix: "live/".into()
        }]
    );
}

#[test]
fn handshake_refused_closes_with_the_servers_reason() {
    let mut h = Harness::new();
    h.recv(Frame::Error(ErrorFrame {
        request: 0,
        code: ErrorCode::Unauthorized,
        message: "wrong token".into(),
    }));
    assert_eq!(
        h.events(),
        [ClientEvent::Closed(ConnError::Handshake(
            HandshakeError::Rejected {
                code: ErrorCode::Unauthorized,
                message: "wrong token".into()
            }
        ))]
    );
    assert!(h.conn.is_closed());
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn handshake_times_out_at_its_deadline() {
    let mut h = Harness::new();
    let deadline = h.now + DEFAULT_HANDSHAKE_TIMEOUT;
    assert_eq!(h.conn.poll_timeout(), Some(deadline));
    h.advance(DEFAULT_HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert!(h.events().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.events(),
        [ClientEvent::Closed(ConnError::Handshake(
            HandshakeError::Timeout
        ))]
    );
    // A WELCOME after the end changes nothing.
    h.recv(welcome());
    assert!(h.events().is_empty());
    assert_eq!(h.conn.established(), None);
}

#[test]
fn server_pings_are_answered() {
    let mut h = Harness::connected();
    h.advance(Duration::from_millis(1500));
    h.recv(Frame::Ping {
        nonce: 99,
        time_us: 123,
    });
    assert_eq!(
        h.sent(),
        [Frame::Pong {
            nonce: 99,
            echo_us: 123,
            time_us: 1_500_000
        }]
    );
}

#[test]
fn client_pings_and_detects_a_silent_server_after_exactly_the_idle_timeout() {
    let mut h = Harness::connected();
    let start = h.now;
    assert_eq!(h.conn.poll_timeout(), Some(start + PING));
    let mut pings = 0;
    while let Some(t) = h.conn.poll_timeout() {
        let by = t - h.now;
        h.advance(by);
        pings += h
            .sent()
            .iter()
            .filter(|f| matches!(f, Frame::Ping { .. }))
            .count();
        if !h.events().is_empty() {
            break;
        }
    }
    assert_eq!(h.now - start, IDLE, "given up at exactly the idle timeout");
    assert_eq!(pings, 5, "a ping every 5 s before");
    assert!(h.conn.is_closed());
    assert_eq!(h.conn.close_reason(), Some(&ConnError::Idle(IDLE)));
    assert_eq!(h.conn.list(""), Err(ConnError::Idle(IDLE)));
}

#[test]
fn a_server_that_answers_keeps_the_connection() {
    let mut h = Harness::connected();
    for _ in 0..20 {
        h.advance(PING);
        for f in h.sent() {
            if let Frame::Ping { nonce, time_us } = f {
                h.recv(Frame::Pong {
                    nonce,
                    echo_us: time_us,
                    time_us: 0,
                });
            }
        }
    }
    assert!(!h.conn.is_closed(), "100 s of answered pings");
    assert!(
        h.events().is_empty(),
        "keepalive pongs are not clock events"
    );
}

#[test]
fn an_explicit_ping_reports_rtt_and_offset() {
    let mut h = Harness::connected();
    h.conn.ping(h.now);
    let Some(Frame::Ping { nonce, time_us }) = h.sent().pop() else {
        panic!()
    };
    h.advance(Duration::from_millis(20));
    // The server's clock reads 1 s ahead of ours at the middle of the round trip.
    h.recv(Frame::Pong {
        nonce,
        echo_us: time_us,
        time_us: time_us + 10_000 + 1_000_000,
    });
    assert_eq!(
        h.events(),
        [ClientEvent::Clock {
            rtt: Duration::from_millis(20),
            offset_us: 1_000_000
        }]
    );
}

#[test]
fn a_late_pong_for_an_earlier_probe_does_not_count() {
    // The old session measured every probe with nonce 1: a pong that came after its caller
    // gave up answered the next probe, with the first one's (longer) round trip.
    let mut h = Harness::connected();
    h.conn.ping(h.now);
    let Some(Frame::Ping {
        nonce: first,
        time_us: first_us,
    }) = h.sent().pop()
    else {
        panic!()
    };
    h.advance(Duration::from_secs(4));
    h.conn.ping(h.now);
    let Some(Frame::Ping {
        nonce: second,
        time_us: second_us,
    }) = h.sent().pop()
    else {
        panic!()
    };
    assert_ne!(first, second);
    h.advance(Duration::from_millis(10));
    h.recv(Frame::Pong {
        nonce: first,
        echo_us: first_us,
        time_us: 0,
    });
    assert!(h.events().is_empty(), "the stale pong is not a measurement");
    h.recv(Frame::Pong {
        nonce: second,
        echo_us: second_us,
        time_us: second_us + 5_000,
    });
    assert_eq!(
        h.events(),
        [ClientEvent::Clock {
            rtt: Duration::from_millis(10),
            offset_us: 0
        }]
    );
}

#[test]
fn catalog_pages_are_assembled_and_bounded() {
    let mut h = Harness::connected();
    let request = h.conn.list("").unwrap();
    h.sent();
    for (last, names) in [(false, ["a", "b"]), (true, ["c", "d"])] {
        h.recv(Frame::Catalog(Catalog {
            request,
            last,
            entries: names.iter().map(|n| entry(n)).collect(),
        }));
        if !last {
            assert!(h.events().is_empty(), "nothing before the last page");
        }
    }
    let paths = match h.events().as_slice() {
        [
            ClientEvent::Listed {
                request: r,
                entries,
            },
        ] if *r == request => entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(paths, ["a", "b", "c", "d"]);
    assert_eq!(h.conn.pending(), 0);

    let mut h = Harness::new();
    h.conn = ClientConn::new(
        ClientConnConfig {
            epoch: h.now,
            max_catalog_entries: 3,
            ..Default::default()
        },
        h.now,
    );
    h.recv(welcome());
    h.events();
    let request = h.conn.list("").unwrap();
    for _ in 0..2 {
        h.recv(Frame::Catalog(Catalog {
            request,
            last: false,
            entries: vec![entry("x"), entry("y")],
        }));
    }
    assert_eq!(
        h.events(),
        [ClientEvent::Failed {
            request,
            error: ConnError::CatalogTooLarge { max: 3 }
        }]
    );
    // Later pages of the failed listing are dropped, not gathered.
    h.recv(Frame::Catalog(Catalog {
        request,
        last: true,
        entries: vec![entry("z")],
    }));
    assert!(h.events().is_empty());
    assert_eq!(h.conn.pending(), 0);
    assert!(!h.conn.is_closed());
}

#[test]
fn answers_are_routed_by_request_id() {
    let mut h = Harness::connected();
    let (r1, s1) = h.conn.open(download("one")).unwrap();
    let (r2, s2) = h.conn.subscribe("live/cam").unwrap();
    let (r3, s3) = h.conn.publish("live/mic", Codec::Bytes).unwrap();
    assert_ne!(s1, s2);
    assert_ne!(s2, s3);
    match h.sent().as_slice() {
        [
            Frame::Open(o),
            Frame::Subscribe {
                request, stream, ..
            },
            Frame::Publish { .. },
        ] => {
            assert_eq!((o.request, o.stream, o.path.as_str()), (r1, s1, "one"));
            assert_eq!((*request, *stream), (r2, s2));
        }
        other => panic!("{other:?}"),
    }
    // Answered out of order.
    h.recv(Frame::Error(ErrorFrame {
        request: r2,
        code: ErrorCode::NotFound,
        message: "no such channel".into(),
    }));
    h.recv(Frame::Opened(opened(r3, s3)));
    h.recv(Frame::Opened(opened(r1, s1)));
    assert_eq!(
        h.events(),
        [
            ClientEvent::Refused {
                request: r2,
                stream: Some(s2),
                code: ErrorCode::NotFound,
                message: "no such channel".into()
            },
            ClientEvent::Opened {
                request: r3,
                opened: opened(r3, s3)
            },
            ClientEvent::Opened {
                request: r1,
                opened: opened(r1, s1)
            },
        ]
    );
    assert_eq!(h.conn.pending(), 0);
    assert_eq!(h.conn.streams(), 2, "the refused stream is forgotten");
}

#[test]
fn answers_to_cancelled_or_unknown_requests_are_ignored() {
    let mut h = Harness::connected();
    let (request, stream) = h.conn.open(download("f")).unwrap();
    h.sent();
    h.conn.cancel(stream);
    assert_eq!(
        h.sent(),
        [Frame::Close {
            stream,
            code: ErrorCode::None,
            message: String::new()
        }]
    );
    h.recv(Frame::Opened(opened(request, stream)));
    h.recv(Frame::Error(ErrorFrame {
        request: 999,
        code: ErrorCode::NotFound,
        message: String::new(),
    }));
    h.recv(Frame::Catalog(Catalog {
        request: 998,
        last: true,
        entries: vec![],
    }));
    h.recv(Frame::Digest {
        stream,
        digest: [1; 32],
    });
    assert!(h.events().is_empty());
    assert!(!h.conn.is_closed());
    // Cancelling again sends nothing.
    h.conn.cancel(stream);
    assert!(h.sent().is_empty());
}

#[test]
fn an_answer_of_the_wrong_kind_is_a_protocol_violation() {
    let mut h = Harness::connected();
    let request = h.conn.list("").unwrap();
    h.sent();
    h.recv(Frame::Opened(opened(request, StreamId(1))));
    match h.events().as_slice() {
        [ClientEvent::Closed(ConnError::Protocol(why))] => assert!(why.contains("LIST"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        h.sent().as_slice(),
        [Frame::Goodbye {
            code: ErrorCode::Protocol,
            ..
        }]
    ));
}

#[test]
fn proofs_are_routed_by_stream_id_only_with_verified() {
    let mut h = Harness::new();
    h.recv(Frame::Welcome(Welcome {
        version: VERSION,
        caps: Caps::LZ4 | Caps::VERIFIED,
        session_id: 7,
        server_name: "test-server".into(),
    }));
    h.events();
    let (r1, s1) = h.conn.open(download("a")).unwrap();
    h.recv(Frame::Opened(opened(r1, s1)));
    h.events();
    let nodes = bytes::Bytes::from(vec![9; 128]);
    h.recv(Frame::Proof {
        stream: s1,
        nodes: nodes.clone(),
    });
    // One for a stream that is not open: late, ignored.
    h.recv(Frame::Proof {
        stream: StreamId(99),
        nodes: nodes.clone(),
    });
    assert_eq!(h.events(), [ClientEvent::Proof { stream: s1, nodes }]);
    assert!(!h.conn.is_closed());
}

#[test]
fn a_proof_without_verified_is_a_protocol_violation() {
    let mut h = Harness::connected();
    let (r1, s1) = h.conn.open(download("a")).unwrap();
    h.recv(Frame::Opened(opened(r1, s1)));
    h.events();
    h.recv(Frame::Proof {
        stream: s1,
        nodes: bytes::Bytes::from(vec![9; 64]),
    });
    assert!(h.conn.is_closed());
}

#[test]
fn close_and_digest_are_routed_by_stream_id() {
    let mut h = Harness::connected();
    let (r1, s1) = h.conn.open(download("a")).unwrap();
    let (r2, s2) = h.conn.open(download("b")).unwrap();
    h.recv(Frame::Opened(opened(r1, s1)));
    h.recv(Frame::Opened(opened(r2, s2)));
    h.events();
    h.recv(Frame::Digest {
        stream: s2,
        digest: [2; 32],
    });
    h.recv(Frame::Close {
        stream: s1,
        code: ErrorCode::Changed,
        message: "rewritten".into(),
    });
    assert_eq!(
        h.events(),
        [
            ClientEvent::Digest {
                stream: s2,
                digest: [2; 32]
            },
            ClientEvent::StreamClosed {
                stream: s1,
                code: ErrorCode::Changed,
                message: "rewritten".into()
            },
        ]
    );
    // A closed stream is forgotten; a done stream too.
    h.recv(Frame::Close {
        stream: s1,
        code: ErrorCode::Internal,
        message: String::new(),
    });
    h.conn.stream_done(s2);
    h.recv(Frame::Digest {
        stream: s2,
        digest: [3; 32],
    });
    assert!(h.events().is_empty());
    assert_eq!(h.conn.streams(), 0);
}

#[test]
fn a_close_before_opened_ends_the_request_too() {
    let mut h = Harness::connected();
    let (request, stream) = h.conn.subscribe("live/x").unwrap();
    h.recv(Frame::Close {
        stream,
        code: ErrorCode::PublisherLost,
        message: String::new(),
    });
    h.recv(Frame::Opened(opened(request, stream)));
    assert_eq!(
        h.events(),
        [ClientEvent::StreamClosed {
            stream,
            code: ErrorCode::PublisherLost,
            message: String::new()
        }]
    );
    assert_eq!(h.conn.pending(), 0);
}

#[test]
fn goodbye_and_error_zero_end_the_connection() {
    let mut h = Harness::connected();
    h.conn.list("").unwrap();
    h.recv(Frame::Goodbye {
        code: ErrorCode::Busy,
        message: "shutting down".into(),
    });
    assert_eq!(
        h.events(),
        [ClientEvent::Closed(ConnError::Goodbye {
            code: ErrorCode::Busy,
            message: "shutting down".into()
        })]
    );
    assert_eq!(h.conn.pending(), 0);

    let mut h = Harness::connected();
    h.recv(Frame::Error(ErrorFrame {
        request: 0,
        code: ErrorCode::Internal,
        message: "boom".into(),
    }));
    assert_eq!(
        h.events(),
        [ClientEvent::Closed(ConnError::Fatal {
            code: ErrorCode::Internal,
            message: "boom".into()
        })]
    );
    assert!(h.conn.is_closed());
}

#[test]
fn a_decode_error_ends_it_with_a_goodbye() {
    let mut h = Harness::connected();
    let error = DecodeError::UnknownFrameType(0x7f);
    h.conn.handle_decode_error(h.now, error.clone());
    assert_eq!(h.events(), [ClientEvent::Closed(ConnError::Decode(error))]);
    assert!(matches!(
        h.sent().as_slice(),
        [Frame::Goodbye {
            code: ErrorCode::Protocol,
            ..
        }]
    ));
}

#[test]
fn eof_ends_it() {
    let mut h = Harness::connected();
    h.conn.handle_eof(h.now);
    assert_eq!(h.events(), [ClientEvent::Closed(ConnError::Eof)]);
    assert!(h.sent().is_empty());
}

#[test]
fn requests_after_close_are_refused_with_the_reason() {
    let mut h = Harness::connected();
    h.conn.close(h.now);
    assert!(matches!(
        h.sent().as_slice(),
        [Frame::Goodbye {
            code: ErrorCode::None,
            ..
        }]
    ));
    assert_eq!(h.events(), [ClientEvent::Closed(ConnError::LocallyClosed)]);
    assert_eq!(h.conn.list(""), Err(ConnError::LocallyClosed));
    assert_eq!(h.conn.open(download("x")), Err(ConnError::LocallyClosed));
    assert_eq!(h.conn.subscribe("x"), Err(ConnError::LocallyClosed));
    h.conn.ping(h.now);
    h.conn.close(h.now);
    assert!(h.sent().is_empty(), "nothing after the end");
    assert!(h.events().is_empty());
}

#[test]
fn pending_requests_are_bounded() {
    let mut h = Harness::new();
    h.conn = ClientConn::new(
        ClientConnConfig {
            epoch: h.now,
            max_pending: 2,
            ..Default::default()
        },
        h.now,
    );
    h.recv(welcome());
    let a = h.conn.list("").unwrap();
    h.conn.subscribe("live/a").unwrap();
    assert_eq!(h.conn.list(""), Err(ConnError::TooManyPending(2)));
    h.recv(Frame::Catalog(Catalog {
        request: a,
        last: true,
        entries: vec![],
    }));
    assert!(h.conn.list("").is_ok(), "an answer frees a slot");
}

#[test]
fn ids_skip_zero_and_those_in_use_when_they_wrap() {
    let mut h = Harness::connected();
    let (r, s) = h.conn.open(download("kept")).unwrap();
    assert_eq!((r, s), (1, StreamId(1)));
    h.conn.next_request = u32::MAX;
    h.conn.next_stream = u32::MAX;
    let (r2, s2) = h.conn.open(download("x")).unwrap();
    assert_eq!((r2, s2), (u32::MAX, StreamId(u32::MAX)));
    let (r3, s3) = h.conn.open(download("y")).unwrap();
    assert_eq!((r3, s3), (2, StreamId(2)), "0 and the ids in use skipped");
}

mod hostile {
    //! Any sequence of server frames, application calls and time steps: no panic, bounded
    //! state, a timer that always moves forward, and nothing after the end.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Recv(Frame),
        Advance(u64),
        List,
        Open,
        Subscribe,
        Cancel(u32),
        Done(u32),
        Ping,
        Close,
        Eof,
        Garbage,
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        // Small ids, so that answers hit the requests and streams the client made.
        let request = 0..6u32;
        let stream = (0..6u32).prop_map(StreamId);
        prop_oneof![
            Just(welcome()),
            (any::<u64>(), any::<u64>())
                .prop_map(|(nonce, time_us)| Frame::Ping { nonce, time_us }),
            (0..4u64, any::<u64>(), any::<u64>()).prop_map(|(nonce, echo_us, time_us)| {
                Frame::Pong {
                    nonce,
                    echo_us,
                    time_us,
                }
            }),
            (request.clone(), any::<bool>(), 0..4usize).prop_map(|(request, last, n)| {
                Frame::Catalog(Catalog {
                    request,
                    last,
                    entries: vec![entry("e"); n],
                })
            }),
            (request.clone(), stream.clone()).prop_map(|(r, s)| Frame::Opened(opened(r, s))),
            request.prop_map(|request| Frame::Error(ErrorFrame {
                request,
                code: ErrorCode::NotFound,
                message: String::new(),
            })),
            stream.clone().prop_map(|stream| Frame::Close {
                stream,
                code: ErrorCode::Internal,
                message: String::new(),
            }),
            stream.prop_map(|stream| Frame::Digest {
                stream,
                digest: [0; 32],
            }),
            Just(Frame::Goodbye {
                code: ErrorCode::None,
                message: String::new(),
            }),
            Just(Frame::List {
                request: 1,
                prefix: String::new(),
            }),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => arb_frame().prop_map(Op::Recv),
            3 => (0..20_000u64).prop_map(Op::Advance),
            2 => Just(Op::List),
            2 => Just(Op::Open),
            1 => Just(Op::Subscribe),
            1 => (0..6u32).prop_map(Op::Cancel),
            1 => (0..6u32).prop_map(Op::Done),
            1 => Just(Op::Ping),
            1 => Just(Op::Close),
            1 => Just(Op::Eof),
            1 => Just(Op::Garbage),
        ]
    }

    proptest! {
        #[test]
        fn any_conversation_stays_bounded_and_ends_cleanly(ops in prop::collection::vec(arb_op(), 1..80)) {
            let now = Instant::now();
            let mut h = Harness {
                conn: ClientConn::new(
                    ClientConnConfig {
                        epoch: now,
                        max_pending: 3,
                        max_catalog_entries: 5,
                        ..Default::default()
                    },
                    now,
                ),
                now,
            };
            // Established first: the handshake's failures have their own tests above.
            h.sent();
            h.recv(welcome());
            h.events();
            let mut closed = false;
            for op in ops {
                match op {
                    Op::Recv(f) => h.recv(f),
                    Op::Advance(ms) => {
                        let until = h.now + Duration::from_millis(ms);
                        // Every timer on the way, as a driver would fire them.
                        while let Some(t) = h.conn.poll_timeout().filter(|&t| t <= until) {
                            h.now = h.now.max(t);
                            h.conn.handle_timeout(h.now);
                            if let Some(next) = h.conn.poll_timeout() {
                                prop_assert!(next > h.now, "a timer that does not move on");
                            }
                        }
                        h.now = until;
                    }
                    Op::List => {
                        let _ = h.conn.list("");
                    }
                    Op::Open => {
                        let _ = h.conn.open(download("f"));
                    }
                    Op::Subscribe => {
                        let _ = h.conn.subscribe("live/x");
                    }
                    Op::Cancel(s) => h.conn.cancel(StreamId(s)),
                    Op::Done(s) => h.conn.stream_done(StreamId(s)),
                    Op::Ping => h.conn.ping(h.now),
                    Op::Close => h.conn.close(h.now),
                    Op::Eof => h.conn.handle_eof(h.now),
                    Op::Garbage => h.conn.handle_decode_error(h.now, DecodeError::EmptyFrame),
                }
                let sent = h.sent();
                let events = h.events();
                if closed {
                    prop_assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
                }
                for e in &events {
                    if let ClientEvent::Listed { entries, .. } = e {
                        prop_assert!(entries.len() <= 5);
                    }
                }
                if events.iter().any(|e| matches!(e, ClientEvent::Closed(_))) {
                    prop_assert!(matches!(events.last(), Some(ClientEvent::Closed(_))));
                    closed = true;
                }
                prop_assert_eq!(closed, h.conn.is_closed());
                prop_assert!(h.conn.pending() <= 3);
                let gathered: usize = h.conn.requests.values().map(|p| match p {
                    Pending::List(e) => e.len(),
                    Pending::Stream(_) => 0,
                }).sum();
                prop_assert!(gathered <= 5);
                if closed {
                    prop_assert_eq!(h.conn.poll_timeout(), None);
                    prop_assert_eq!((h.conn.pending(), h.conn.streams()), (0, 0));
                }
            }
        }
    }
}

fn chat(kind: ChatKind, seq: u64) -> Chat {
    Chat {
        kind,
        room: "call/r".into(),
        author: 3,
        seq,
        sent_us: 0,
        text: String::new(),
    }
}

#[test]
fn chat_needs_the_capability_and_passes_acks_and_messages_on() {
    let mut h = Harness::new();
    assert_eq!(
        h.conn.chat(&chat(ChatKind::Join, 0)),
        Err(ConnError::NotConnected)
    );
    h.recv(welcome()); // LZ4 | DIGEST_AT_END: no CHAT
    h.events();
    h.sent();
    assert_eq!(
        h.conn.chat(&chat(ChatKind::Join, 0)),
        Err(ConnError::NoChat)
    );
    assert!(h.sent().is_empty());

    let mut h = Harness::new();
    h.recv(Frame::Welcome(Welcome {
        version: VERSION,
        caps: Caps::CHAT,
        session_id: 7,
        server_name: "test-server".into(),
    }));
    h.events();
    h.sent();
    h.conn.chat(&chat(ChatKind::Join, 0)).unwrap();
    assert_eq!(h.sent(), [Frame::Chat(chat(ChatKind::Join, 0))]);
    h.recv(Frame::Chat(chat(ChatKind::Ack, 1)));
    h.recv(Frame::Chat(chat(ChatKind::Message, 1)));
    assert_eq!(
        h.events(),
        [
            ClientEvent::Chat(chat(ChatKind::Ack, 1)),
            ClientEvent::Chat(chat(ChatKind::Message, 1))
        ]
    );
    // A kind only a client sends, from the server: a violation.
    h.recv(Frame::Chat(chat(ChatKind::Send, 1)));
    assert!(h.conn.is_closed());
    assert!(matches!(
        h.conn.close_reason(),
        Some(ConnError::Protocol(_))
    ));
}

#[test]
fn relay_path_goes_only_to_a_server_that_agreed_to_relay() {
    let mut h = Harness::new();
    assert_eq!(h.conn.relay(&[1]), Err(ConnError::NotConnected));
    h.recv(welcome()); // LZ4 | DIGEST_AT_END: no RELAY
    h.events();
    assert_eq!(h.conn.relay(&[1, 2]), Ok(false));
    assert!(h.sent().is_empty());

    // An edge offers RELAY (a plain client does not).
    let now = Instant::now();
    let mut config = ClientConnConfig {
        epoch: now,
        ..Default::default()
    };
    config.handshake.caps = config.handshake.caps | Caps::RELAY;
    let mut h = Harness {
        conn: ClientConn::new(config, now),
        now,
    };
    h.sent();
    h.recv(Frame::Welcome(Welcome {
        version: VERSION,
        caps: Caps::RELAY,
        session_id: 7,
        server_name: "test-server".into(),
    }));
    h.events();
    h.sent();
    assert_eq!(h.conn.relay(&[1, 2]), Ok(true));
    assert_eq!(h.sent(), [Frame::Relay { path: vec![1, 2] }]);
}
