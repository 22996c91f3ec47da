//! Keepalive: ping an idle link, measure its round-trip time, and give up on a dead one.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::wire::{Frame, encode};

/// Pings go out this often, busy link or not: frequent enough to keep the RTT estimate fresh
/// and NAT bindings alive, rare enough to cost nothing.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// A peer silent for this long (pings unanswered) is considered gone.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Keepalive state of an established connection.
#[derive(Debug, Clone)]
pub struct Keepalive {
    interval: Duration,
    idle_timeout: Duration,
    epoch: Instant,
    last_rx: Instant,
    next_ping: Instant,
    nonce: u64,
    /// The nonce of the ping awaiting its pong; a pong for anything else is ignored.
    outstanding: Option<u64>,
    rtt: Option<Duration>,
    clock_offset_us: Option<i64>,
}

/// The link is dead: nothing arrived within the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer silent for {0:?}")]
pub struct IdleTimeout(pub Duration);

impl Keepalive {
    /// Starts at `now`; `epoch` is the instant our `time_us` fields count from.
    pub fn new(now: Instant, epoch: Instant, interval: Duration, idle_timeout: Duration) -> Self {
        Self {
            interval,
            idle_timeout,
            epoch,
            last_rx: now,
            next_ping: now + interval,
            nonce: 0,
            outstanding: None,
            rtt: None,
            clock_offset_us: None,
        }
    }

    /// Something arrived from the peer.
    pub fn handle_rx(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// Answers a `PING` by appending a `PONG` to `out`.
    pub fn handle_ping(&mut self, now: Instant, nonce: u64, time_us: u64, out: &mut BytesMut) {
        self.handle_rx(now);
        encode(
            &Frame::Pong {
                nonce,
                echo_us: time_us,
                time_us: self.clock_us(now),
            },
            out,
        );
    }

    /// Takes a `PONG`: updates the RTT and the estimate of the peer's clock offset.
    pub fn handle_pong(&mut self, now: Instant, nonce: u64, echo_us: u64, peer_time_us: u64) {
        self.handle_rx(now);
        if self.outstanding != Some(nonce) {
            return; // unsolicited, or an answer to an older ping: its RTT would be wrong
        }
        self.outstanding = None;
        let now_us = self.clock_us(now);
        let rtt_us = now_us.saturating_sub(echo_us);
        self.rtt = Some(Duration::from_micros(rtt_us));
        // The peer's clock read `peer_time_us` half an RTT before `now_us`, on the
        // symmetric-path assumption (as NTP and RTCP make). The peer's values are arbitrary:
        // computed wide and clamped, never overflowing.
        let ours_then = i128::from(echo_us) + i128::from(rtt_us / 2);
        let offset = i128::from(peer_time_us) - ours_then;
        self.clock_offset_us =
            Some(offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64);
    }

    /// Microseconds since our epoch.
    pub fn clock_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Whether a ping awaits its pong (a pong that clears this answered our latest ping).
    pub fn awaiting_pong(&self) -> bool {
        self.outstanding.is_some()
    }

    /// The latest round-trip time measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The peer's clock minus ours, in microseconds, as last estimated.
    pub fn clock_offset_us(&self) -> Option<i64> {
        self.clock_offset_us
    }

    /// Sends a ping now regardless of the schedule (e.g. to measure RTT at start).
    pub fn ping_now(&mut self, now: Instant, out: &mut BytesMut) {
        self.nonce = self.nonce.wrapping_add(1);
        self.outstanding = Some(self.nonce);
        encode(
            &Frame::Ping {
                nonce: self.nonce,
                time_us: self.clock_us(now),
            },
            out,
        );
        self.next_ping = now + self.interval;
    }

    /// When [`Keepalive::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_ping.min(self.last_rx + self.idle_timeout)
    }

    /// Pings if the link has been quiet, and fails once the peer has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut BytesMut) -> Result<(), IdleTimeout> {
        let silent = now.saturating_duration_since(self.last_rx);
        if silent >= self.idle_timeout {
            return Err(IdleTimeout(silent));
        }
        if now >= self.next_ping {
            self.ping_now(now, out);
        }
        Ok(())
    }
}
