//! Handshake and keepalive, driven without sockets, with time passed in.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::error::DecodeError;
use crate::error::ErrorCode;
use crate::wire::{Caps, Decoder, Frame, Hello, MAGIC, encode};

fn decode_all(buf: &mut BytesMut) -> Vec<Frame> {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    while let Some(f) = d.decode(buf).unwrap() {
        out.push(f);
    }
    out
}

/// Runs a whole handshake through bytes, as a driver would.
fn handshake(
    client: ClientConfig,
    server: ServerConfig,
) -> (
    Result<Established, HandshakeError>,
    Result<Established, HandshakeError>,
) {
    let t0 = Instant::now();
    let mut c = ClientHandshake::new(client, t0);
    let s = ServerHandshake::new(server, t0, 42);
    let mut wire = BytesMut::new();
    c.poll_transmit(&mut wire);
    let hello = decode_all(&mut wire).pop().unwrap();
    let mut reply = BytesMut::new();
    let server_side = s.handle_frame(t0, hello, &mut reply);
    let reply = decode_all(&mut reply).pop().unwrap();
    (
        c.handle_frame(t0 + Duration::from_millis(1), reply),
        server_side,
    )
}

#[test]
fn handshake_agrees_on_version_caps_and_session() {
    let (c, s) = handshake(ClientConfig::default(), ServerConfig::default());
    let c = c.unwrap();
    let s = s.unwrap();
    assert_eq!(c.version, crate::wire::VERSION);
    assert_eq!(c.session_id, 42);
    assert_eq!(c.caps, s.caps);
    assert!(c.peer_name.starts_with("chunkcast-server/"));
    assert!(s.peer_name.starts_with("chunkcast/"));
}

#[test]
fn version_mismatch_is_refused_with_a_code() {
    let client = ClientConfig {
        min_version: 7,
        max_version: 9,
        ..Default::default()
    };
    let (c, s) = handshake(client, ServerConfig::default());
    assert!(matches!(
        s,
        Err(HandshakeError::VersionMismatch { theirs_min: 7, .. })
    ));
    match c {
        Err(HandshakeError::Rejected { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert!(message.contains("7..=9"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn token_is_required_and_checked() {
    let server = ServerConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    };
    let (c, s) = handshake(ClientConfig::default(), server.clone());
    assert_eq!(s, Err(HandshakeError::Unauthorized));
    match c {
        Err(HandshakeError::Rejected {
            code: ErrorCode::Unauthorized,
            message,
        }) => {
            assert!(message.contains("--token"), "says how to fix it: {message}")
        }
        other => panic!("{other:?}"),
    }
    let wrong = ClientConfig {
        token: Some("s3creT".into()),
        ..Default::default()
    };
    assert_eq!(
        handshake(wrong, server.clone()).1,
        Err(HandshakeError::Unauthorized)
    );
    let right = ClientConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    };
    assert!(handshake(right, server).1.is_ok());
}

#[test]
fn unexpected_first_frame_is_refused() {
    let t0 = Instant::now();
    let s = ServerHandshake::new(ServerConfig::default(), t0, 1);
    let mut out = BytesMut::new();
    let r = s.handle_frame(
        t0,
        Frame::List {
            request: 1,
            prefix: String::new(),
        },
        &mut out,
    );
    assert_eq!(r, Err(HandshakeError::Unexpected("LIST")));
    match decode_all(&mut out).as_slice() {
        [Frame::Error(e)] => assert_eq!(e.code, ErrorCode::Protocol),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_instead_of_hello_is_a_decode_error() {
    let mut d = Decoder::default();
    let mut junk = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    // "GET " read as a length is ~1.2 GB: refused before any allocation.
    assert!(matches!(
        d.decode(&mut junk),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    let mut bad_magic = BytesMut::new();
    encode(
        &Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            caps: Caps(0),
            token: String::new(),
            client_name: String::new(),
        }),
        &mut bad_magic,
    );
    bad_magic[5..9].copy_from_slice(b"XXXX");
    assert_ne!(&bad_magic[5..9], &MAGIC);
    assert_eq!(
        Decoder::default().decode(&mut bad_magic),
        Err(DecodeError::BadMagic)
    );
}

#[test]
fn server_times_out_a_silent_client() {
    let t0 = Instant::now();
    let s = ServerHandshake::new(ServerConfig::default(), t0, 1);
    let mut out = BytesMut::new();
    assert!(
        s.handle_timeout(t0 + Duration::from_secs(9), &mut out)
            .is_ok()
    );
    assert!(out.is_empty());
    assert_eq!(s.poll_timeout(), t0 + DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(
        s.handle_timeout(s.poll_timeout(), &mut out),
        Err(HandshakeError::Timeout)
    );
    match decode_all(&mut out).as_slice() {
        [Frame::Error(e)] => assert_eq!(e.code, ErrorCode::Timeout),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_times_out_a_silent_server_and_sends_hello_once() {
    let t0 = Instant::now();
    let mut c = ClientHandshake::new(ClientConfig::default(), t0);
    let mut out = BytesMut::new();
    c.poll_transmit(&mut out);
    let once = out.len();
    c.poll_transmit(&mut out);
    assert_eq!(out.len(), once);
    assert_eq!(
        c.handle_timeout(t0 + Duration::from_secs(11)),
        Err(HandshakeError::Timeout)
    );
}

#[test]
fn keepalive_pings_measures_rtt_and_detects_death() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(5);
    let mut a = Keepalive::new(t0, t0, interval, Duration::from_secs(30));
    // The peer's clock started 1 s before ours.
    let mut b = Keepalive::new(
        t0,
        t0 - Duration::from_secs(1),
        interval,
        Duration::from_secs(30),
    );
    let mut out = BytesMut::new();
    a.handle_timeout(t0 + interval, &mut out).unwrap();
    let Some(Frame::Ping { nonce, time_us }) = decode_all(&mut out).pop() else {
        panic!()
    };
    // 10 ms one way, 10 ms back.
    b.handle_ping(
        t0 + interval + Duration::from_millis(10),
        nonce,
        time_us,
        &mut out,
    );
    let Some(Frame::Pong {
        nonce,
        echo_us,
        time_us,
    }) = decode_all(&mut out).pop()
    else {
        panic!()
    };
    a.handle_pong(
        t0 + interval + Duration::from_millis(20),
        nonce,
        echo_us,
        time_us,
    );
    assert_eq!(a.rtt(), Some(Duration::from_millis(20)));
    assert_eq!(a.clock_offset_us(), Some(1_000_000));
    let dead = t0 + interval + Duration::from_millis(20) + Duration::from_secs(30);
    assert!(a.handle_timeout(dead, &mut out).is_err());
}

#[test]
fn hostile_pongs_neither_panic_nor_count() {
    let t0 = Instant::now();
    let mut k = Keepalive::new(t0, t0, Duration::from_secs(5), Duration::from_secs(30));
    // Unsolicited (the fuzzer's find: nonce 0 and extreme times before any ping).
    k.handle_pong(t0, 0, u64::MAX, 0);
    k.handle_pong(t0, 0, 0, u64::MAX);
    assert_eq!(k.rtt(), None);
    let mut out = BytesMut::new();
    k.ping_now(t0, &mut out);
    let Some(Frame::Ping { nonce, .. }) = decode_all(&mut out).pop() else {
        panic!()
    };
    k.handle_pong(t0 + Duration::from_millis(1), nonce, u64::MAX, 0);
    let first = k.clock_offset_us();
    assert_eq!(first, Some(i64::MIN), "clamped, not wrapped");
    // Answered once: a replay is ignored.
    k.handle_pong(t0 + Duration::from_millis(9), nonce, 0, u64::MAX);
    assert_eq!(k.clock_offset_us(), first);
}

#[test]
fn a_v1_client_gets_v1_and_no_verified_streams() {
    let client = ClientConfig {
        min_version: 1,
        max_version: 1,
        // Even if a confused v1 client set the bits, v1 has no PROOF frame.
        caps: Caps::LZ4 | Caps::VERIFIED | Caps::HEADER_CRC,
        ..Default::default()
    };
    let (c, s) = handshake(client, ServerConfig::default());
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!((c.version, s.version), (1, 1));
    assert_eq!(s.caps, Caps::LZ4);
    assert_eq!(c.caps, Caps::LZ4);
}

#[test]
fn a_v2_pair_agrees_on_verified_streams() {
    let (c, s) = handshake(ClientConfig::default(), ServerConfig::default());
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!((c.version, s.version), (2, 2));
    assert!(c.caps.contains(Caps::VERIFIED) && s.caps.contains(Caps::VERIFIED));
    assert!(c.caps.contains(Caps::HEADER_CRC) && s.caps.contains(Caps::HEADER_CRC));
}

#[test]
fn a_v2_client_takes_a_v1_servers_welcome_without_verified() {
    let t0 = Instant::now();
    let mut c = ClientHandshake::new(ClientConfig::default(), t0);
    c.poll_transmit(&mut BytesMut::new());
    let welcome = Frame::Welcome(crate::wire::Welcome {
        version: 1,
        caps: Caps::LZ4 | Caps::VERIFIED | Caps::HEADER_CRC,
        session_id: 1,
        server_name: "old".into(),
    });
    let est = c.handle_frame(t0, welcome).unwrap();
    assert_eq!(est.version, 1);
    assert_eq!(est.caps, Caps::LZ4);
}
