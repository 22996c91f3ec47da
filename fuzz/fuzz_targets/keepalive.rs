//! Bytes → frames → `Keepalive` of an established connection; never panic.
//!
//! Input layout (missing header bytes read as 0): bytes 0-1 are a big-endian step in
//! milliseconds (frame `i` arrives at `t0 + (i + 1) * step`); byte 2 bit 0 sends a ping at
//! `t0` first; the rest is a byte stream decoded as a driver would. `PING` goes to
//! `handle_ping` (whose `PONG` must echo it), `PONG` to `handle_pong`, anything else to
//! `handle_rx`; `handle_timeout` runs before every frame.
//!
//! Kept apart from the `handshake` target so that a keepalive finding does not stop the
//! handshake's fuzzing.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chunkcast_protocol::session::{DEFAULT_IDLE_TIMEOUT, DEFAULT_PING_INTERVAL, Keepalive};
use chunkcast_protocol::wire::{Decoder, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = |i: usize| data.get(i).copied().unwrap_or(0);
    let step = Duration::from_millis(u64::from(u16::from_be_bytes([h(0), h(1)])));
    let t0 = Instant::now();
    let mut ka = Keepalive::new(t0, t0, DEFAULT_PING_INTERVAL, DEFAULT_IDLE_TIMEOUT);
    let mut out = BytesMut::new();
    if h(2) & 1 != 0 {
        ka.ping_now(t0, &mut out);
    }
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::from(data.get(3..).unwrap_or_default());
    for i in 0u32.. {
        let now = t0 + step * (i + 1);
        if ka.handle_timeout(now, &mut out).is_err() {
            break;
        }
        let frame = match decoder.decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        match frame {
            Frame::Ping { nonce, time_us } => {
                let mut pong = BytesMut::new();
                ka.handle_ping(now, nonce, time_us, &mut pong);
                match Decoder::default().decode(&mut pong) {
                    Ok(Some(Frame::Pong {
                        nonce: n, echo_us, ..
                    })) => {
                        assert_eq!((n, echo_us), (nonce, time_us));
                    }
                    other => panic!("PING answered with {other:?}"),
                }
            }
            Frame::Pong {
                nonce,
                echo_us,
                time_us,
            } => ka.handle_pong(now, nonce, echo_us, time_us),
            _ => ka.handle_rx(now),
        }
        let _ = (ka.rtt(), ka.clock_offset_us(), ka.poll_timeout());
    }
});
