//! Bytes → frames → the handshake state machines, with time advancing by an input-chosen step.
//!
//! Input layout (missing header bytes read as 0):
//! - byte 0: bit 0 = the server requires the token `tok`; bits 1-2 = the client's token
//!   (0 none, 1 `tok`, 2 `tox`, 3 empty string);
//! - bytes 1, 2: the client's min and max version;
//! - bytes 3, 4: the server's and the client's capability bits;
//! - bytes 5-6: a big-endian step in milliseconds: frame `i` arrives at `t0 + (i + 1) * step`,
//!   so inputs reach both sides of the 10 s handshake deadline;
//! - the rest: a byte stream, decoded with the default `Decoder` as a driver would.
//!
//! Every decoded frame is handed to a fresh `ServerHandshake` and a fresh `ClientHandshake`;
//! the server's reply is decoded and handed to a client in turn. Nothing may panic, and:
//! the server's output is exactly one frame, `WELCOME` on success and an `ERROR` (request 0,
//! the failure's code, never `None`) on failure; a success needs a `HELLO` before the
//! deadline that offers version 1 and the right token; the client accepts only a `WELCOME`
//! in its version range before its deadline, and never gains capabilities it did not offer.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chunkcast_protocol::session::{
    ClientConfig, ClientHandshake, HandshakeError, ServerConfig, ServerHandshake,
};
use chunkcast_protocol::wire::{Caps, Decoder, Frame, MIN_VERSION, VERIFIED_VERSION, VERSION};
use chunkcast_protocol::{DecodeError, ErrorCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = |i: usize| data.get(i).copied().unwrap_or(0);
    let server = ServerConfig {
        caps: Caps(u32::from(h(3))),
        token: (h(0) & 1 != 0).then(|| "tok".to_owned()),
        ..ServerConfig::default()
    };
    let client = ClientConfig {
        min_version: u16::from(h(1)),
        max_version: u16::from(h(2)),
        caps: Caps(u32::from(h(4))),
        token: match (h(0) >> 1) & 3 {
            0 => None,
            1 => Some("tok".to_owned()),
            2 => Some("tox".to_owned()),
            _ => Some(String::new()),
        },
        ..ClientConfig::default()
    };
    let step = Duration::from_millis(u64::from(u16::from_be_bytes([h(5), h(6)])));
    let stream = data.get(7..).unwrap_or_default();
    let t0 = Instant::now();

    // The honest path first: this client's own HELLO.
    let mut hello = BytesMut::new();
    ClientHandshake::new(client.clone(), t0).poll_transmit(&mut hello);
    let hello = decode_one(hello);
    serve(&server, &client, t0, t0 + step, 0, hello);

    let mut decoder = Decoder::default();
    let mut buf = BytesMut::from(stream);
    for i in 0u32.. {
        let now = t0 + step * (i + 1);
        match decoder.decode(&mut buf) {
            Ok(None) => break,
            Ok(Some(frame)) => {
                serve(&server, &client, t0, now, u64::from(i), frame.clone());
                let _ = greet(&client, t0, now, frame);
            }
            Err(e) => {
                // The driver answers with the code of the decode failure and closes.
                let code = HandshakeError::from(e.clone()).code();
                assert_ne!(code, ErrorCode::None);
                if !matches!(e, DecodeError::Checksum { .. }) {
                    break;
                }
            }
        }
    }
});

fn decode_one(mut buf: BytesMut) -> Frame {
    let frame = Decoder::default()
        .decode(&mut buf)
        .expect("our own output decodes")
        .expect("our own output is whole");
    assert!(buf.is_empty(), "more than one frame out");
    frame
}

/// The server's side: `frame` as the first frame of a connection accepted at `t0`.
fn serve(
    server: &ServerConfig,
    client: &ClientConfig,
    t0: Instant,
    now: Instant,
    session_id: u64,
    frame: Frame,
) {
    let s = ServerHandshake::new(server.clone(), t0, session_id);
    let deadline = s.poll_timeout();
    assert_eq!(deadline, t0 + server.timeout);

    let mut out = BytesMut::new();
    let timed = s.handle_timeout(now, &mut out);
    assert_eq!(timed.is_ok(), now < deadline);
    assert_eq!(timed.is_ok(), out.is_empty());
    if timed.is_err() {
        match decode_one(out) {
            Frame::Error(e) => assert_eq!((e.request, e.code), (0, ErrorCode::Timeout)),
            other => panic!("timeout answered with {}", other.name()),
        }
    }

    let mut out = BytesMut::new();
    let hello = match &frame {
        Frame::Hello(h) => Some(h.clone()),
        _ => None,
    };
    let result = s.handle_frame(now, frame, &mut out);
    let reply = decode_one(out);
    match &result {
        Ok(est) => {
            assert!(now < deadline, "accepted after the deadline");
            let hello = hello.expect("accepted something that is not a HELLO");
            assert!(hello.min_version <= VERSION && MIN_VERSION <= hello.max_version);
            let version = hello.max_version.min(VERSION);
            if let Some(token) = &server.token {
                assert_eq!(&hello.token, token, "accepted a wrong token");
            }
            assert_eq!(est.version, version);
            let mut caps = hello.caps.intersect(server.caps);
            if version < VERIFIED_VERSION {
                caps = Caps(caps.0 & !Caps::VERIFIED.0);
            }
            assert_eq!(est.caps, caps);
            assert_eq!(est.session_id, session_id);
            assert_eq!(est.peer_name, hello.client_name);
            match &reply {
                Frame::Welcome(w) => {
                    assert_eq!(
                        (w.version, w.caps, w.session_id),
                        (version, est.caps, session_id)
                    );
                }
                other => panic!("success answered with {}", other.name()),
            }
        }
        Err(err) => match &reply {
            Frame::Error(e) => {
                assert_eq!(e.request, 0);
                assert_eq!(e.code, err.code());
                assert_ne!(e.code, ErrorCode::None);
            }
            other => panic!("failure answered with {}", other.name()),
        },
    }

    // The reply, as the client's first frame from the server.
    let c = greet(client, t0, now, reply);
    if let Err(err) = &result {
        assert!(
            matches!(&c, Err(HandshakeError::Rejected { code, .. }) if *code == err.code())
                || matches!(c, Err(HandshakeError::Timeout)),
            "server failed with {err:?}, client got {c:?}"
        );
    }
}

/// The client's side: `frame` as the server's first frame, for a handshake started at `t0`.
fn greet(
    client: &ClientConfig,
    t0: Instant,
    now: Instant,
    frame: Frame,
) -> Result<chunkcast_protocol::session::Established, HandshakeError> {
    let mut c = ClientHandshake::new(client.clone(), t0);
    let deadline = c.poll_timeout();
    assert_eq!(deadline, t0 + client.timeout);
    let mut out = BytesMut::new();
    c.poll_transmit(&mut out);
    assert!(matches!(decode_one(out), Frame::Hello(_)));
    assert_eq!(c.handle_timeout(now).is_ok(), now < deadline);

    let welcome = match &frame {
        Frame::Welcome(w) => Some(w.clone()),
        _ => None,
    };
    let result = c.handle_frame(now, frame);
    if let Ok(est) = &result {
        assert!(now < deadline, "client accepted after its deadline");
        let w = welcome.expect("client accepted something that is not a WELCOME");
        assert!(client.min_version <= w.version && w.version <= client.max_version);
        assert_eq!(est.version, w.version);
        assert!(
            client.caps.contains(est.caps),
            "client gained capabilities it did not offer"
        );
    }
    result
}
