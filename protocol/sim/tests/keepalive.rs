//! Chunks count as life for the connection machines' idle timeouts (`handle_data`), found by
//! the simulation: a slow viewer's own `ClientConn` closed its connection as "server silent"
//! while chunks kept arriving, its server's `PING`s queued behind them.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chunkcast_protocol::Caps;
use chunkcast_protocol::conn::ClientConn;
use chunkcast_protocol::conn::client::{ClientConnConfig, ClientEvent, ConnError};
use chunkcast_protocol::wire::{Frame, VERSION, Welcome};

fn established(t0: Instant) -> ClientConn {
    let config = ClientConnConfig {
        epoch: t0,
        idle_timeout: Duration::from_secs(10),
        ..ClientConnConfig::default()
    };
    let mut c = ClientConn::new(config, t0);
    c.handle_frame(
        t0,
        Frame::Welcome(Welcome {
            version: VERSION,
            caps: Caps(0),
            session_id: 1,
            server_name: "s".into(),
        }),
    );
    assert!(matches!(c.poll_event(), Some(ClientEvent::Connected(_))));
    c
}

/// Runs the machine's timers for `secs` seconds, feeding chunk arrivals every second when
/// `data`; whether it is still open at the end.
fn survives(data: bool, secs: u64) -> bool {
    let t0 = Instant::now();
    let mut c = established(t0);
    let mut out = BytesMut::new();
    for s in 1..=secs {
        let now = t0 + Duration::from_secs(s);
        if data {
            c.handle_data(now);
        }
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        c.poll_transmit(&mut out);
    }
    !c.is_closed()
}

#[test]
fn chunks_arriving_keep_a_client_connection_alive_without_control_frames() {
    assert!(survives(true, 60));
}

#[test]
fn a_server_that_sends_nothing_at_all_is_still_given_up() {
    assert!(!survives(false, 60));
    let t0 = Instant::now();
    let mut c = established(t0);
    let at = t0 + Duration::from_secs(10);
    c.handle_timeout(at);
    let mut closed = None;
    while let Some(e) = c.poll_event() {
        if let ClientEvent::Closed(e) = e {
            closed = Some(e);
        }
    }
    assert!(matches!(closed, Some(ConnError::Idle(_))), "{closed:?}");
}
