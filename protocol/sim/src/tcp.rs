//! A small TCP-like reliable byte stream, enough to carry chunkcast as the real one does.
//!
//! MSS-sized segments with byte sequence numbers, cumulative ACKs with the receive window,
//! a retransmission timeout from RTT samples (timestamps echoed, so retransmits sample
//! correctly) with exponential backoff, fast retransmit on three duplicate ACKs, Reno-style
//! congestion control, a bounded send buffer (the application's backpressure), a bounded
//! reorder buffer, a zero-window probe, FIN, RST and a give-up after [`MAX_RETRIES`]
//! timeouts. A checksum over every segment drops corrupted ones. There is no SYN: a
//! connection id names the connection and the server accepts the first segment it sees.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

/// Largest segment payload.
pub const MSS: usize = 1400;
/// Timeouts in a row without progress before the connection is given up.
pub const MAX_RETRIES: u32 = 8;
const MIN_RTO: Duration = Duration::from_millis(200);
const MAX_RTO: Duration = Duration::from_secs(4);
const INITIAL_RTO: Duration = Duration::from_secs(1);

/// Segment flag: the sender's last byte is before this segment's end.
pub const FIN: u8 = 0x1;
/// Segment flag: the sender aborted the connection.
pub const RST: u8 = 0x2;
/// Segment flag: a zero-window probe, which the receiver answers with its window.
pub const PROBE: u8 = 0x4;

/// One segment on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The connection.
    pub conn: u64,
    /// Sequence number of the first payload byte (or of the FIN).
    pub seq: u64,
    /// The next sequence number the sender expects.
    pub ack: u64,
    /// Bytes the sender can receive beyond `ack`.
    pub wnd: u32,
    /// [`FIN`], [`RST`].
    pub flags: u8,
    /// The sender's virtual time in µs, echoed by the receiver for RTT samples.
    pub ts: u64,
    /// The `ts` of the segment this one acknowledges.
    pub ts_echo: u64,
    /// The bytes.
    pub payload: Bytes,
    /// CRC32C over the fields above.
    pub checksum: u32,
}

impl Segment {
    /// A data segment, sealed (for tests).
    pub fn data(conn: u64, seq: u64, payload: Bytes) -> Self {
        let mut s = Self {
            conn,
            seq,
            ack: 0,
            wnd: 0,
            flags: 0,
            ts: 0,
            ts_echo: 0,
            payload,
            checksum: 0,
        };
        s.seal();
        s
    }

    fn sum(&self) -> u32 {
        let mut head = [0u8; 8 * 5 + 4 + 1];
        head[0..8].copy_from_slice(&self.conn.to_le_bytes());
        head[8..16].copy_from_slice(&self.seq.to_le_bytes());
        head[16..24].copy_from_slice(&self.ack.to_le_bytes());
        head[24..32].copy_from_slice(&self.ts.to_le_bytes());
        head[32..40].copy_from_slice(&self.ts_echo.to_le_bytes());
        head[40..44].copy_from_slice(&self.wnd.to_le_bytes());
        head[44] = self.flags;
        crc32c::crc32c_append(crc32c::crc32c(&head), &self.payload)
    }

    /// Computes the checksum (a sender, or a middlebox that rewrote the packet).
    pub fn seal(&mut self) {
        self.checksum = self.sum();
    }

    /// Whether the checksum matches.
    pub fn intact(&self) -> bool {
        self.checksum == self.sum()
    }

    fn end(&self) -> u64 {
        self.seq + self.payload.len() as u64 + u64::from(self.flags & FIN != 0)
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Carrying data (possibly half closed).
    Open,
    /// Both sides sent FIN and every byte was acknowledged.
    Closed,
    /// Aborted by a RST (sent or received).
    Reset,
    /// Too many timeouts in a row: the peer is unreachable.
    GaveUp,
}

/// Sizes of a connection's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes the application may have unacknowledged before it must wait.
    pub send_buffer: usize,
    /// Bytes received and not yet read, plus out-of-order bytes: the receive window.
    pub recv_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            send_buffer: 64 << 10,
            recv_buffer: 64 << 10,
        }
    }
}

/// Counters for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segments dropped because their checksum failed.
    pub bad_checksum: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Fast retransmits.
    pub fast_retransmits: u64,
}

/// One end of a connection.
#[derive(Debug)]
pub struct Tcp {
    conn: u64,
    config: Config,
    state: State,
    // Send side: `send` holds the bytes from `snd_una` on.
    send: BytesMut,
    snd_una: u64,
    snd_nxt: u64,
    snd_max: u64,
    fin_queued: bool,
    fin_acked: bool,
    peer_edge: u64,
    cwnd: u64,
    ssthresh: u64,
    dup_acks: u32,
    fast_retransmit: bool,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    retries: u32,
    timer: Option<Duration>,
    // Receive side.
    recv: BytesMut,
    ooo: BTreeMap<u64, Bytes>,
    ooo_bytes: usize,
    rcv_nxt: u64,
    peer_fin: Option<u64>,
    fin_received: bool,
    ack_due: bool,
    ts_recent: u64,
    advertised: u64,
    rst_due: bool,
    probe_due: bool,
    stats: Stats,
}

impl Tcp {
    /// A connection `conn`, ready to send and receive.
    pub fn new(conn: u64, config: Config) -> Self {
        Self {
            conn,
            config,
            state: State::Open,
            send: BytesMut::new(),
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            fin_queued: false,
            fin_acked: false,
            peer_edge: config.recv_buffer as u64,
            cwnd: 10 * MSS as u64,
            ssthresh: u64::MAX,
            dup_acks: 0,
            fast_retransmit: false,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            retries: 0,
            timer: None,
            recv: BytesMut::new(),
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            rcv_nxt: 0,
            peer_fin: None,
            fin_received: false,
            ack_due: false,
            ts_recent: 0,
            advertised: config.recv_buffer as u64,
            rst_due: false,
            probe_due: false,
            stats: Stats::default(),
        }
    }

    /// The connection id.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Where the connection is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes the application may still write before the send buffer is full.
    pub fn space(&self) -> usize {
        if self.state != State::Open || self.fin_queued {
            return 0;
        }
        self.config.send_buffer.saturating_sub(self.send.len())
    }

    /// Queues bytes to send. Always accepted while open (control frames must not wait); data
    /// writers check [`Self::space`] first, so the buffer exceeds its bound by at most one
    /// frame and the control bytes.
    pub fn write(&mut self, data: &[u8]) {
        if self.state == State::Open && !self.fin_queued {
            self.send.extend_from_slice(data);
        }
    }

    /// Bytes received in order and not yet read.
    pub fn readable(&self) -> usize {
        self.recv.len()
    }

    /// Moves up to `max` received bytes into `dst`.
    pub fn read(&mut self, dst: &mut BytesMut, max: usize) -> usize {
        let n = max.min(self.recv.len());
        if n == 0 {
            return 0;
        }
        let before = self.window();
        dst.extend_from_slice(&self.recv[..n]);
        self.recv.advance(n);
        // Tell the sender when the window reopens, or it waits for its probe timer.
        if before < MSS as u64
            || self.window() >= self.advertised + (self.config.recv_buffer / 2) as u64
        {
            self.ack_due = true;
        }
        n
    }

    /// Whether the peer finished sending and everything before its FIN was read.
    pub fn at_eof(&self) -> bool {
        self.fin_received && self.recv.is_empty()
    }

    /// No more bytes will be written: a FIN follows the queued ones.
    pub fn close(&mut self) {
        self.fin_queued = true;
    }

    /// Aborts: a RST goes out, everything queued is dropped.
    pub fn reset(&mut self) {
        if self.state == State::Open {
            self.state = State::Reset;
            self.rst_due = true;
            self.release();
        }
    }

    /// Bytes held in buffers (send, receive, reorder): for the memory invariant.
    pub fn memory(&self) -> usize {
        self.send.len() + self.recv.len() + self.ooo_bytes
    }

    /// Whether the connection needs no more calls: closed, reset or given up, with nothing
    /// left to send.
    pub fn is_done(&self) -> bool {
        self.state != State::Open && !self.rst_due && !self.ack_due
    }

    fn release(&mut self) {
        self.ack_due = false;
        self.probe_due = false;
        self.send = BytesMut::new();
        self.ooo.clear();
        self.ooo_bytes = 0;
        self.timer = None;
    }

    fn window(&self) -> u64 {
        (self
            .config
            .recv_buffer
            .saturating_sub(self.recv.len() + self.ooo_bytes)) as u64
    }

    fn data_end(&self) -> u64 {
        self.snd_una + self.send.len() as u64
    }

    fn ack_no(&self) -> u64 {
        self.rcv_nxt
    }

    fn segment(&self, now: Duration, seq: u64, flags: u8, payload: Bytes) -> Segment {
        let mut s = Segment {
            conn: self.conn,
            seq,
            ack: self.ack_no(),
            wnd: u32::try_from(self.window()).unwrap_or(u32::MAX),
            flags,
            ts: micros(now),
            ts_echo: self.ts_recent,
            payload,
            checksum: 0,
        };
        s.seal();
        s
    }

    /// Takes a segment that arrived at `now`.
    pub fn handle_segment(&mut self, now: Duration, seg: Segment) {
        if !seg.intact() {
            self.stats.bad_checksum += 1;
            return;
        }
        if self.state == State::Closed && seg.flags & FIN != 0 {
            // Our ACK of its FIN was lost: the peer retransmits it until acknowledged.
            self.ack_due = true;
        }
        if self.state != State::Open {
            return;
        }
        if seg.flags & RST != 0 {
            self.state = State::Reset;
            self.release();
            return;
        }
        self.on_ack(now, &seg);
        self.on_data(seg);
        self.maybe_closed();
    }

    fn on_ack(&mut self, now: Duration, seg: &Segment) {
        let fin_seq = self.fin_queued.then(|| self.data_end());
        let top = self.snd_max;
        if seg.ack > self.snd_una && seg.ack <= top {
            let acked = seg.ack - self.snd_una;
            let data = acked.min(self.send.len() as u64) as usize;
            self.send.advance(data);
            if fin_seq.is_some_and(|f| seg.ack > f) {
                self.fin_acked = true;
            }
            self.snd_una = seg.ack;
            self.snd_nxt = self.snd_nxt.max(self.snd_una);
            self.retries = 0;
            self.dup_acks = 0;
            if seg.ts_echo > 0 {
                self.sample_rtt(Duration::from_micros(
                    micros(now).saturating_sub(seg.ts_echo),
                ));
            }
            self.cwnd += if self.cwnd < self.ssthresh {
                acked
            } else {
                (MSS * MSS) as u64 / self.cwnd.max(1)
            };
            self.cwnd = self.cwnd.min(4 << 20);
            self.timer = (self.snd_max > self.snd_una).then_some(now + self.rto);
        } else if seg.ack == self.snd_una
            && seg.payload.is_empty()
            && seg.flags & FIN == 0
            && self.snd_max > self.snd_una
            && seg.ack + u64::from(seg.wnd) == self.peer_edge
        {
            self.dup_acks += 1;
            if self.dup_acks == 3 {
                self.ssthresh = (self.flight() / 2).max(2 * MSS as u64);
                self.cwnd = self.ssthresh;
                self.fast_retransmit = true;
                self.stats.fast_retransmits += 1;
            }
        }
        if seg.ack >= self.snd_una {
            self.peer_edge = seg.ack + u64::from(seg.wnd);
        }
        if self.snd_una == self.snd_max
            && self.peer_edge <= self.data_end()
            && self.data_end() > self.snd_una
        {
            // Zero window with data waiting: probe on the timer.
            self.timer.get_or_insert(now + self.rto);
        }
    }

    fn on_data(&mut self, seg: Segment) {
        let fin = seg.flags & FIN != 0;
        if seg.flags & PROBE != 0 {
            self.ack_due = true;
        }
        if seg.payload.is_empty() && !fin {
            return;
        }
        self.ack_due = true;
        if seg.seq <= self.rcv_nxt && seg.end() > self.rcv_nxt {
            self.ts_recent = seg.ts;
        }
        if fin {
            self.peer_fin = Some(seg.seq + seg.payload.len() as u64);
        }
        let mut seq = seg.seq;
        let mut payload = seg.payload;
        if seq < self.rcv_nxt {
            let skip = (self.rcv_nxt - seq).min(payload.len() as u64) as usize;
            payload.advance(skip);
            seq += skip as u64;
        }
        if seq < self.rcv_nxt {
            // Old bytes only (a retransmit already received): the ACK is all it needs.
            payload.clear();
            seq = self.rcv_nxt;
        }
        let room = self.window() as usize;
        let offset = (seq - self.rcv_nxt) as usize;
        payload.truncate(room.saturating_sub(offset));
        if !payload.is_empty() {
            if seq == self.rcv_nxt {
                self.rcv_nxt += payload.len() as u64;
                self.recv.extend_from_slice(&payload);
                self.drain_ooo();
            } else if self.ooo.get(&seq).is_none_or(|b| b.len() < payload.len()) {
                self.ooo_bytes += payload.len();
                if let Some(old) = self.ooo.insert(seq, payload) {
                    self.ooo_bytes -= old.len();
                }
            }
        }
        if self.peer_fin == Some(self.rcv_nxt) && !self.fin_received {
            self.fin_received = true;
            self.rcv_nxt += 1;
        }
    }

    fn drain_ooo(&mut self) {
        while let Some((&seq, _)) = self.ooo.first_key_value() {
            if seq > self.rcv_nxt {
                break;
            }
            let Some(mut b) = self.ooo.remove(&seq) else {
                break;
            };
            self.ooo_bytes -= b.len();
            let skip = (self.rcv_nxt - seq) as usize;
            if skip >= b.len() {
                continue;
            }
            b.advance(skip);
            self.rcv_nxt += b.len() as u64;
            self.recv.extend_from_slice(&b);
        }
    }

    fn maybe_closed(&mut self) {
        if self.fin_acked && self.fin_received && self.state == State::Open {
            self.state = State::Closed;
            self.timer = None;
        }
    }

    fn flight(&self) -> u64 {
        self.snd_max - self.snd_una
    }

    fn sample_rtt(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto =
            (srtt + (self.rttvar * 4).max(Duration::from_millis(10))).clamp(MIN_RTO, MAX_RTO);
    }

    /// When [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.rst_due || self.ack_due || self.probe_due {
            return Some(Duration::ZERO);
        }
        self.timer
    }

    /// The retransmission (or probe) timer fired, if it is due.
    pub fn handle_timeout(&mut self, now: Duration) {
        let Some(at) = self.timer else {
            return;
        };
        if at > now || self.state != State::Open {
            return;
        }
        if self.snd_max == self.snd_una {
            // A zero-window probe: the peer answers with its window.
            self.probe_due = true;
            self.timer = Some(now + self.rto);
            return;
        }
        self.retries += 1;
        self.stats.timeouts += 1;
        if self.retries > MAX_RETRIES {
            self.state = State::GaveUp;
            self.release();
            return;
        }
        self.ssthresh = (self.flight() / 2).max(2 * MSS as u64);
        self.cwnd = MSS as u64;
        self.snd_nxt = self.snd_una;
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.timer = Some(now + self.rto);
    }

    /// Appends the segments to send now to `out`.
    pub fn poll_transmit(&mut self, now: Duration, out: &mut Vec<Segment>) {
        if self.rst_due {
            self.rst_due = false;
            out.push(self.segment(now, self.snd_nxt, RST, Bytes::new()));
            return;
        }
        if self.state != State::Open {
            if self.state == State::Closed && self.ack_due {
                self.ack_due = false;
                out.push(self.segment(now, self.snd_nxt, 0, Bytes::new()));
            }
            return;
        }
        let before = out.len();
        if self.fast_retransmit {
            self.fast_retransmit = false;
            let len = MSS.min(self.send.len());
            if len > 0 {
                let payload = Bytes::copy_from_slice(&self.send[..len]);
                out.push(self.segment(now, self.snd_una, 0, payload));
            }
        }
        let limit = self.snd_una + self.cwnd.min(self.peer_edge.saturating_sub(self.snd_una));
        while self.snd_nxt < self.data_end() && self.snd_nxt < limit {
            let at = (self.snd_nxt - self.snd_una) as usize;
            let len = MSS
                .min(self.send.len() - at)
                .min((limit - self.snd_nxt) as usize);
            let payload = Bytes::copy_from_slice(&self.send[at..at + len]);
            out.push(self.segment(now, self.snd_nxt, 0, payload));
            self.snd_nxt += len as u64;
        }
        if self.fin_queued && !self.fin_acked && self.snd_nxt == self.data_end() {
            out.push(self.segment(now, self.snd_nxt, FIN, Bytes::new()));
            self.snd_nxt += 1;
        }
        self.snd_max = self.snd_max.max(self.snd_nxt);
        if out.len() > before {
            self.ack_due = false;
            self.probe_due = false;
            self.advertised = self.window();
            if self.timer.is_none() {
                self.timer = Some(now + self.rto);
            }
        } else if self.ack_due || self.probe_due {
            let flags = if self.probe_due { PROBE } else { 0 };
            self.ack_due = false;
            self.probe_due = false;
            self.advertised = self.window();
            out.push(self.segment(now, self.snd_nxt, flags, Bytes::new()));
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves segments between two ends until both are quiet, dropping the ones `drop` picks.
    fn exchange(
        a: &mut Tcp,
        b: &mut Tcp,
        now: &mut Duration,
        mut drop: impl FnMut(&Segment) -> bool,
    ) {
        for _ in 0..10_000 {
            let mut out = Vec::new();
            a.poll_transmit(*now, &mut out);
            let a_sent = out.len();
            for s in out.drain(..) {
                if !drop(&s) {
                    b.handle_segment(*now, s);
                }
            }
            b.poll_transmit(*now, &mut out);
            let b_sent = out.len();
            for s in out.drain(..) {
                if !drop(&s) {
                    a.handle_segment(*now, s);
                }
            }
            if a_sent + b_sent == 0 {
                let next = [a.poll_timeout(), b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else { return };
                *now = (*now).max(next);
                a.handle_timeout(*now);
                b.handle_timeout(*now);
            }
            *now += Duration::from_millis(1);
        }
    }

    #[test]
    fn bytes_arrive_in_order_through_loss_and_both_sides_close() {
        let mut a = Tcp::new(1, Config::default());
        let mut b = Tcp::new(1, Config::default());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut written = 0;
        let mut got = BytesMut::new();
        let mut now = Duration::ZERO;
        let mut n = 0u32;
        while got.len() < data.len() {
            let take = a.space().min(data.len() - written);
            a.write(&data[written..written + take]);
            written += take;
            if written == data.len() {
                a.close();
            }
            exchange(&mut a, &mut b, &mut now, |_| {
                n += 1;
                n % 7 == 0
            });
            b.read(&mut got, usize::MAX);
            assert_eq!(a.state(), State::Open, "at {now:?}");
        }
        assert_eq!(&got[..], &data[..]);
        assert!(b.at_eof());
        b.close();
        exchange(&mut a, &mut b, &mut now, |_| false);
        assert_eq!((a.state(), b.state()), (State::Closed, State::Closed));
    }

    #[test]
    fn a_silent_peer_is_given_up_after_the_retries() {
        let mut a = Tcp::new(1, Config::default());
        let mut b = Tcp::new(1, Config::default());
        a.write(b"hello");
        let mut now = Duration::ZERO;
        exchange(&mut a, &mut b, &mut now, |_| true);
        assert_eq!(a.state(), State::GaveUp);
        assert!(now > Duration::from_secs(10), "backed off: {now:?}");
    }

    #[test]
    fn a_corrupted_segment_is_dropped_and_retransmitted() {
        let mut a = Tcp::new(1, Config::default());
        let mut b = Tcp::new(1, Config::default());
        a.write(b"hello world");
        let mut out = Vec::new();
        a.poll_transmit(Duration::ZERO, &mut out);
        let mut bad = out.pop().unwrap();
        let mut p = bad.payload.to_vec();
        p[0] ^= 1;
        bad.payload = p.into();
        b.handle_segment(Duration::ZERO, bad);
        assert_eq!(b.readable(), 0);
        assert_eq!(b.stats().bad_checksum, 1);
        let mut now = Duration::ZERO;
        exchange(&mut a, &mut b, &mut now, |_| false);
        let mut got = BytesMut::new();
        b.read(&mut got, 100);
        assert_eq!(&got[..], b"hello world");
    }

    #[test]
    fn a_full_receive_window_holds_the_sender_until_the_reader_reads() {
        let cfg = Config {
            send_buffer: 64 << 10,
            recv_buffer: 8 << 10,
        };
        let mut a = Tcp::new(1, cfg);
        let mut b = Tcp::new(1, cfg);
        a.write(&[5u8; 30_000]);
        let mut now = Duration::ZERO;
        exchange(&mut a, &mut b, &mut now, |_| false);
        assert_eq!(
            b.readable(),
            8 << 10,
            "the window caps what is in the receiver"
        );
        assert!(b.memory() <= 8 << 10);
        let mut got = BytesMut::new();
        for _ in 0..20 {
            b.read(&mut got, usize::MAX);
            exchange(&mut a, &mut b, &mut now, |_| false);
        }
        b.read(&mut got, usize::MAX);
        assert_eq!(got.len(), 30_000);
        assert_eq!(a.state(), State::Open);
    }
}
