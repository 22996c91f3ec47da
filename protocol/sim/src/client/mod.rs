//! The clients: one [`ClientConn`] per connection over the simulated TCP, and the
//! applications on top (parts: downloads, plays, publishing, viewing). A client whose
//! connection ends connects again after a seeded pause, for as long as the run lasts.

mod download;
mod live;
mod play;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chunkcast_protocol::conn::ClientConn;
use chunkcast_protocol::conn::client::{
    ClientConnConfig, ClientEvent, ConnError, DEFAULT_MAX_CATALOG_ENTRIES, DEFAULT_MAX_PENDING,
};
use chunkcast_protocol::session::ClientConfig;
use chunkcast_protocol::wire::{Decoder, Frame};
use chunkcast_protocol::{Chunk, DecodeError, ErrorCode, StreamId};
use rand::Rng;
use rand::rngs::StdRng;

pub use download::Download;
pub use live::{Publish, View};
pub use play::Play;

use crate::World;
use crate::invariants::Violation;
use crate::net::HostId;
use crate::tcp::{self, Tcp};

/// A client's role in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Downloads library files, one after another, and verifies them.
    Downloader,
    /// Plays audio and video files in realtime mode through the playout buffer.
    Player,
    /// Publishes a file to a live channel at its media pace, looping.
    Publisher,
    /// Watches a live channel, reading everything as it comes.
    Viewer,
    /// Watches a live channel but reads its socket slowly.
    SlowViewer,
    /// One side of a two-party call: publishes its leg, watches the other.
    Caller,
}

impl Role {
    /// A short name for traces and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Downloader => "downloader",
            Self::Player => "player",
            Self::Publisher => "publisher",
            Self::Viewer => "viewer",
            Self::SlowViewer => "slow-viewer",
            Self::Caller => "caller",
        }
    }
}

/// What a part of a client application can be asked.
pub(crate) trait Part {
    /// The connection is up: make requests.
    fn connected(&mut self, w: &mut World, c: &mut Link<'_>);
    /// An event about one of the part's requests or streams (others ignore it).
    fn event(&mut self, w: &mut World, c: &mut Link<'_>, event: &ClientEvent);
    /// Whether a chunk's stream is this part's.
    fn owns(&self, stream: StreamId) -> bool;
    /// A chunk of one of the part's streams, CRC checked.
    fn chunk(&mut self, w: &mut World, c: &mut Link<'_>, chunk: Chunk);
    /// A chunk of one of the part's streams failed its CRC32C and was dropped: the stream
    /// has a hole, and the part decides (resume, re-subscribe, give up).
    fn corrupted(&mut self, w: &mut World, c: &mut Link<'_>, stream: StreamId);
    /// Time passes: start the next request, send paced chunks, play out.
    fn work(&mut self, w: &mut World, c: &mut Link<'_>);
    /// When `work` must run next.
    fn poll_timeout(&self) -> Option<Duration>;
    /// The connection ended.
    fn closed(&mut self, w: &mut World);
    /// What the part waits for, and since when it last progressed, if it waits for anything
    /// that must progress.
    fn waiting(&self) -> Option<(Duration, String)>;
    /// Bytes the part holds.
    fn memory(&self) -> usize;
}

/// What a part may use of its connection.
pub(crate) struct Link<'a> {
    /// The client.
    pub(crate) id: HostId,
    /// The connection id.
    pub(crate) conn: u64,
    /// The machine.
    pub(crate) machine: &'a mut ClientConn,
    /// The transport.
    pub(crate) tcp: &'a mut Tcp,
    /// The client's randomness.
    pub(crate) rng: &'a mut StdRng,
}

struct Session {
    conn: u64,
    tcp: Tcp,
    machine: ClientConn,
    decoder: Decoder,
    inbuf: BytesMut,
    out: BytesMut,
    closed_at: Option<Duration>,
    established: bool,
}

/// How clients connect.
#[derive(Debug, Clone)]
pub struct Config {
    /// The machine's settings (the epoch is the simulation's).
    pub conn: ClientConnConfig,
    /// Transport buffers.
    pub tcp: tcp::Config,
    /// A slow viewer reads this many bytes a second.
    pub slow_read_rate: u64,
}

impl Config {
    /// The simulation's defaults: the machine's own but for a shorter idle timeout, and
    /// every field named (the machine's `Default` reads the real clock for its epoch).
    pub fn new(epoch: Instant) -> Self {
        Self {
            conn: ClientConnConfig {
                handshake: ClientConfig::default(),
                epoch,
                ping_interval: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(10),
                max_catalog_entries: DEFAULT_MAX_CATALOG_ENTRIES,
                max_pending: DEFAULT_MAX_PENDING,
            },
            tcp: tcp::Config::default(),
            slow_read_rate: 6_000,
        }
    }
}

/// One client host.
pub struct Client {
    id: HostId,
    role: Role,
    config: Config,
    rng: StdRng,
    parts: Vec<Box<dyn Part>>,
    session: Option<Session>,
    attempts: u64,
    connect_at: Duration,
    read_budget: f64,
    read_at: Duration,
}

impl Client {
    /// Client `id` in `role`, running `parts`, first connecting at `start`.
    pub(crate) fn new(
        id: HostId,
        role: Role,
        config: Config,
        rng: StdRng,
        parts: Vec<Box<dyn Part>>,
        start: Duration,
    ) -> Self {
        Self {
            id,
            role,
            config,
            rng,
            parts,
            session: None,
            attempts: 0,
            connect_at: start,
            read_budget: 0.0,
            read_at: start,
        }
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A segment arrived.
    pub fn handle_segment(&mut self, w: &mut World, seg: tcp::Segment) {
        match &mut self.session {
            Some(s) if s.conn == seg.conn => s.tcp.handle_segment(w.now, seg),
            _ => {}
        }
    }

    /// When the client must run next.
    pub fn poll_timeout(&self, w: &World) -> Option<Duration> {
        let mut next = None;
        match &self.session {
            None => next = Some(self.connect_at),
            Some(s) => {
                next = min(next, s.tcp.poll_timeout());
                if let Some(t) = s.machine.poll_timeout() {
                    next = min(next, Some(w.clock.since_start(t)));
                }
                if let Some(t) = s.closed_at {
                    next = min(next, Some(t + LINGER));
                }
                if self.role == Role::SlowViewer && s.tcp.readable() > 0 {
                    next = min(next, Some(w.now + Duration::from_millis(50)));
                }
                // Parts work only on an established connection: their past-due timers would
                // otherwise spin while it connects.
                if s.established && !s.machine.is_closed() {
                    for p in &self.parts {
                        next = min(next, p.poll_timeout());
                    }
                }
            }
        }
        next
    }

    /// Bytes held: transport, decode buffer, the parts' state.
    pub fn memory(&self) -> usize {
        let parts: usize = self.parts.iter().map(|p| p.memory()).sum();
        parts
            + self
                .session
                .as_ref()
                .map_or(0, |s| s.tcp.memory() + s.inbuf.len() + s.out.len())
    }

    /// What the client waits for that must progress, and since when.
    pub fn waiting(&self) -> Option<(Duration, String)> {
        self.parts.iter().filter_map(|p| p.waiting()).min()
    }

    /// Runs the client at `w.now`.
    pub fn pump(&mut self, w: &mut World) {
        if self.session.is_none() {
            if w.now < self.connect_at {
                return;
            }
            self.connect(w);
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let now_i = w.clock.now();
        s.tcp.handle_timeout(w.now);
        let mut link = Link {
            id: self.id,
            conn: s.conn,
            machine: &mut s.machine,
            tcp: &mut s.tcp,
            rng: &mut self.rng,
        };
        // Input. A slow viewer takes only what its read rate allows.
        let max = if self.role == Role::SlowViewer {
            let dt = w.now.saturating_sub(self.read_at).as_secs_f64();
            self.read_at = w.now;
            self.read_budget = (self.read_budget + dt * self.config.slow_read_rate as f64)
                .min(self.config.slow_read_rate as f64);
            self.read_budget as usize
        } else {
            usize::MAX
        };
        if s.closed_at.is_none() {
            let n = link.tcp.read(&mut s.inbuf, max);
            self.read_budget -= n as f64;
        }
        while s.closed_at.is_none() && !link.machine.is_closed() {
            match s.decoder.decode(&mut s.inbuf) {
                Ok(Some(Frame::Chunk(c))) => {
                    link.machine.handle_data(now_i);
                    // A stream already given up: its chunks in flight are dropped.
                    if let Some(p) = self.parts.iter_mut().find(|p| p.owns(c.stream)) {
                        p.chunk(w, &mut link, c);
                    }
                }
                Ok(Some(frame)) => {
                    link.machine.handle_frame(now_i, frame);
                    // An OPENED must reach its part before the stream's first chunk.
                    events(&mut self.parts, w, &mut link, &mut s.established, self.role);
                }
                Ok(None) => break,
                // A chunk that fails its CRC: the byte stream is still in sync, so, as the
                // real link does, only the stream's owner hears of it, and decides.
                Err(DecodeError::Checksum { stream, seq })
                    if self.parts.iter().any(|p| p.owns(stream)) =>
                {
                    w.oracle.counts.crc_caught += 1;
                    w.trace
                        .event(w.now, self.id, "crc-caught", u64::from(stream.0), seq);
                    if let Some(p) = self.parts.iter_mut().find(|p| p.owns(stream)) {
                        p.corrupted(w, &mut link, stream);
                    }
                }
                Err(e) => {
                    if matches!(e, DecodeError::Checksum { .. }) {
                        w.oracle.counts.crc_caught += 1;
                    }
                    w.trace.event(w.now, self.id, "decode-error", s.conn, 0);
                    link.machine.handle_decode_error(now_i, e);
                }
            }
        }
        match link.tcp.state() {
            tcp::State::Reset | tcp::State::GaveUp => {
                let why = format!("transport {:?}", link.tcp.state());
                link.machine.handle_transport_error(now_i, why);
            }
            _ if link.tcp.at_eof() && s.inbuf.is_empty() => link.machine.handle_eof(now_i),
            _ => {}
        }
        if link.machine.poll_timeout().is_some_and(|t| t <= now_i) {
            link.machine.handle_timeout(now_i);
        }
        events(&mut self.parts, w, &mut link, &mut s.established, self.role);
        if !link.machine.is_closed() && s.established {
            for p in &mut self.parts {
                p.work(w, &mut link);
            }
        }
        link.machine.poll_transmit(&mut s.out);
        if !s.out.is_empty() {
            s.tcp.write(&s.out);
            s.out.clear();
        }
        if s.machine.is_closed() && s.closed_at.is_none() {
            s.closed_at = Some(w.now);
            s.tcp.close();
        }
        let mut segs = Vec::new();
        s.tcp.poll_transmit(w.now, &mut segs);
        for seg in segs {
            w.send(self.id, 0, seg);
        }
        let linger_over = s.closed_at.is_some_and(|t| w.now >= t + LINGER);
        if s.tcp.is_done() || linger_over {
            if !s.tcp.is_done() {
                s.tcp.reset();
                let mut segs = Vec::new();
                s.tcp.poll_transmit(w.now, &mut segs);
                for seg in segs {
                    w.send(self.id, 0, seg);
                }
            }
            if !s.machine.is_closed() {
                s.machine
                    .handle_transport_error(now_i, "transport ended".into());
                for p in &mut self.parts {
                    p.closed(w);
                }
            }
            w.trace.event(w.now, self.id, "disconnected", s.conn, 0);
            self.session = None;
            self.connect_at = w.now + Duration::from_millis(self.rng.random_range(200..2_000));
        }
    }

    fn connect(&mut self, w: &mut World) {
        self.attempts += 1;
        let conn = (u64::from(self.id) << 24) | self.attempts;
        w.oracle.counts.connections += 1;
        w.trace.event(w.now, self.id, "connect", conn, 0);
        self.read_at = w.now;
        self.session = Some(Session {
            conn,
            tcp: Tcp::new(conn, self.config.tcp),
            machine: ClientConn::new(self.config.conn.clone(), w.clock.now()),
            decoder: Decoder::default(),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            closed_at: None,
            established: false,
        });
    }
}

/// Hands the machine's events to the parts.
fn events(
    parts: &mut [Box<dyn Part>],
    w: &mut World,
    link: &mut Link<'_>,
    established: &mut bool,
    role: Role,
) {
    while let Some(event) = link.machine.poll_event() {
        match &event {
            ClientEvent::Connected(_) => {
                *established = true;
                w.trace.event(w.now, link.id, "connected", link.conn, 0);
                for p in parts.iter_mut() {
                    p.connected(w, link);
                }
            }
            ClientEvent::Closed(e) => {
                w.trace.event(w.now, link.id, "conn-closed", link.conn, 0);
                if !matches!(e, ConnError::LocallyClosed) {
                    w.oracle.counts.connection_errors += 1;
                }
                w.oracle
                    .closed(&format!("{} {}", role.name(), close_kind(e)));
                let timed_out = matches!(e, ConnError::Idle(_))
                    || matches!(e, ConnError::Goodbye { code, .. } if *code == ErrorCode::Timeout);
                if w.clean && timed_out {
                    w.oracle.violate(Violation::TimedOut {
                        client: link.id,
                        detail: format!(
                            "{} connection ended by {e} on a network that loses nothing",
                            role.name()
                        ),
                    });
                }
                for p in parts.iter_mut() {
                    p.closed(w);
                }
            }
            _ => {
                for p in parts.iter_mut() {
                    p.event(w, link, &event);
                }
            }
        }
    }
}

/// A connection error's kind, without the details that vary.
fn close_kind(e: &ConnError) -> String {
    let s = format!("{e:?}");
    let end = s.find([' ', '(', '{']).unwrap_or(s.len());
    match e {
        ConnError::Decode(d) => format!("Decode({})", {
            let d = format!("{d:?}");
            d[..d.find([' ', '(', '{']).unwrap_or(d.len())].to_owned()
        }),
        ConnError::Goodbye { code, .. } | ConnError::Fatal { code, .. } => {
            format!("{}({code:?})", &s[..end])
        }
        _ => s[..end].to_owned(),
    }
}

/// How long an application waits for the answer to a request before it cancels it.
/// `ClientConn` has no deadline of its own: an `OPENED` whose request id was corrupted on the
/// way (control frames carry no CRC) would leave the request pending for as long as the
/// connection lives.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closed connection waits for its FIN exchange before it is reset.
const LINGER: Duration = Duration::from_secs(3);

pub(crate) fn min(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
