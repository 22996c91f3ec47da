//! quinn endpoints for both sides, with the transport tuned for bulk media.

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{
    BbrConfig, Controller, ControllerFactory, ControllerMetrics, CubicConfig, NewRenoConfig,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use quinn_proto::RttEstimator;

use super::tls::{self, Identity, TlsError, Trust};

/// Receive window of one stream. quinn's default (1.25 MB) caps one stream near 100 MB/s at
/// 10 ms RTT; 8 MiB keeps a loopback or LAN download window-bound only beyond the CPU's rate.
const STREAM_WINDOW: u32 = 8 << 20;
/// Receive window of the whole connection: several concurrent media streams at full rate.
const CONNECTION_WINDOW: u32 = 32 << 20;
/// Unidirectional streams a peer may have open at once: one per media stream, so this also
/// bounds the media streams of a QUIC connection.
const MAX_UNI_STREAMS: u32 = 64;
/// UDP socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
/// With the system default (about 208 KiB) a receiver that is a few milliseconds late drops
/// datagrams (hundreds per GB on loopback), and each loss costs a congestion back-off.
const SOCKET_BUFFER: usize = 8 << 20;

/// Where a connection's packets travel, as far as their size goes.
///
/// quinn's defaults (packets of 1 200 bytes, grown by MTU discovery to at most 1 452, batched by
/// GSO) fit any Ethernet path. Loopback carries 64 KiB: with packets 45 times larger, a byte
/// costs a fraction of the per-packet work (a `sendmsg`/`recvmsg`, a header, an AEAD seal and an
/// ACK range), which is where a loopback download spent its time (BENCHMARKS.md, "QUIC against
/// its ceiling").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The peer is this host: the loopback device's 64 KiB MTU.
    Loopback,
    /// Any other path: quinn's defaults.
    Network,
}

impl Path {
    /// The path to `ip` (an IPv4-mapped IPv6 loopback address counts as loopback).
    pub fn to(ip: IpAddr) -> Self {
        if ip.to_canonical().is_loopback() {
            Self::Loopback
        } else {
            Self::Network
        }
    }
}

/// The largest UDP payload a loopback path carries in one datagram: the device's MTU (65 536)
/// less the IPv6 and UDP headers; IPv4's 16-bit total length allows 65 507, so MTU discovery,
/// probing up to this, settles a little below either.
pub const LOOPBACK_MAX_UDP_PAYLOAD: u16 = 65_488;

/// Environment variable that overrides the largest UDP payload on a loopback path (1200 to
/// 65527; 1452 gives quinn's default behaviour), for measurements.
pub const ENV_MAX_UDP_PAYLOAD: &str = "CHUNKCAST_QUIC_MAX_UDP_PAYLOAD";
/// Environment variable that overrides whether a loopback path uses GSO (`on`/`off`), for
/// measurements.
pub const ENV_GSO: &str = "CHUNKCAST_QUIC_GSO";

/// The congestion controller of a QUIC connection: quinn's three, or a choice between two of
/// them by the path's round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// RFC 8312 CUBIC, quinn's default: loss-based, so every packet declared lost (real or
    /// spurious) cuts the window by 30 %.
    Cubic,
    /// NewReno: loss-based, halves the window per loss event.
    NewReno,
    /// BBR (v1, after Chromium's): paces at the measured bottleneck rate and does not back off
    /// on random loss.
    Bbr,
    /// CUBIC where a round trip of the first few is under [`NEAR_RTT`] (the same host or a
    /// LAN), BBR beyond. BBR keeps about two bandwidth-delay products in flight, which on
    /// loopback (an RTT of microseconds, a CPU-bound "bottleneck") cost 11 % of quinn's
    /// throughput and 23 % of a `chunkcast get`'s, against CUBIC's unbounded growth.
    Auto,
}

/// The round trip under which [`Congestion::Auto`] takes the path for local: loopback and
/// LANs are well under it, the impaired paths measured (60 ms) and the Internet well over.
pub const NEAR_RTT: Duration = Duration::from_millis(5);

impl Congestion {
    /// The name `FromStr` reads back.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cubic => "cubic",
            Self::NewReno => "newreno",
            Self::Bbr => "bbr",
            Self::Auto => "auto",
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Congestion {
    type Err = TuningError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cubic" => Ok(Self::Cubic),
            "newreno" | "new-reno" | "reno" => Ok(Self::NewReno),
            "bbr" => Ok(Self::Bbr),
            "auto" => Ok(Self::Auto),
            _ => Err(TuningError {
                what: ENV_CONGESTION,
                value: s.to_owned(),
                expected: "cubic, newreno, bbr or auto",
            }),
        }
    }
}

/// Loss detection and congestion control of QUIC connections.
///
/// quinn's defaults (RFC 9002: packet threshold 3, time threshold 9/8 RTT, CUBIC) take any
/// packet overtaken by three later ones for lost. On a path with a few milliseconds of jitter
/// a fast sender's packets are overtaken by dozens, so nearly every flight had a spurious
/// loss and a congestion back-off: a 1.9 MB download over 30 ms ± 2 ms took 20× TCP's time.
/// Linux TCP copes because RACK judges loss by time, not by count; [`Tuning::default`] does
/// the same (the packet threshold is out of reach of any jitter, the time threshold decides)
/// and uses BBR, which does not back off on random loss, on any path but a local one
/// ([`Congestion::Auto`]): measured in BENCHMARKS.md, "QUIC on an impaired path".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// The congestion controller.
    pub congestion: Congestion,
    /// Packets that may overtake one before it is declared lost.
    pub packet_threshold: u32,
    /// How long after the RTT a packet may still arrive before it is declared lost, as a
    /// factor of the RTT (`1.125`: an eighth of the RTT).
    pub time_threshold: f32,
    /// The congestion window before the first acknowledgement, in bytes; `None`: the
    /// controller's own (quinn's: 12 000 bytes for CUBIC and NewReno, 240 000 for BBR).
    pub initial_window: Option<u64>,
    /// The largest UDP payload on a [`Path::Loopback`]: what MTU discovery probes up to, and
    /// what an endpoint that may have a loopback peer accepts.
    pub loopback_max_udp_payload: u16,
    /// Whether a [`Path::Loopback`] batches packets with GSO. A 64 KiB packet is already as
    /// large as a GSO batch may be, so GSO only adds the cost of setting it up per send.
    pub loopback_gso: bool,
}

/// Environment variable that overrides [`Tuning::congestion`] (`cubic`, `newreno`, `bbr`),
/// for measurements: both ends read it when they make their endpoint.
pub const ENV_CONGESTION: &str = "CHUNKCAST_QUIC_CONGESTION";
/// Environment variable that overrides [`Tuning::packet_threshold`].
pub const ENV_PACKET_THRESHOLD: &str = "CHUNKCAST_QUIC_PACKET_THRESHOLD";
/// Environment variable that overrides [`Tuning::time_threshold`].
pub const ENV_TIME_THRESHOLD: &str = "CHUNKCAST_QUIC_TIME_THRESHOLD";
/// Environment variable that overrides [`Tuning::initial_window`].
pub const ENV_INITIAL_WINDOW: &str = "CHUNKCAST_QUIC_INITIAL_WINDOW";

/// quinn's own defaults (RFC 9002), kept for comparison.
pub const RFC9002: Tuning = Tuning {
    congestion: Congestion::Cubic,
    packet_threshold: 3,
    time_threshold: 9.0 / 8.0,
    initial_window: None,
    loopback_max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
    loopback_gso: true,
};

/// quinn's upper bound of MTU discovery, what [`RFC9002`] keeps on every path.
const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1452;

impl Default for Tuning {
    fn default() -> Self {
        Self {
            congestion: DEFAULT_CONGESTION,
            packet_threshold: DEFAULT_PACKET_THRESHOLD,
            time_threshold: DEFAULT_TIME_THRESHOLD,
            initial_window: DEFAULT_INITIAL_WINDOW,
            loopback_max_udp_payload: LOOPBACK_MAX_UDP_PAYLOAD,
            loopback_gso: false,
        }
    }
}

/// Measured on 30 ms ± 2 ms and 30 ms ± 10 ms with 2 % loss, and on loopback (BENCHMARKS.md).
/// Calls too (BENCHMARKS.md, "Calls between network namespaces"): with CUBIC or NewReno on a
/// 60 ms path capped at half a call's video rate, the 20 s call did not even end within 60 s
/// (5 runs), where BBR ends it on time and adapts. BBR's slow regrowth after a cap (full video
/// 1.3–9.9 s after the lift) is still the better of the three.
const DEFAULT_CONGESTION: Congestion = Congestion::Auto;
/// High enough that reordering never counts as loss at any rate this machine reaches (±2 ms
/// of jitter at 1 Gbit/s reorders by ~200 packets), so the time threshold decides, as RACK
/// does for TCP; still finite, so that a burst of losses in a long flight is found before
/// the time threshold when packets keep arriving.
const DEFAULT_PACKET_THRESHOLD: u32 = 1000;
/// 3/2 RTT, not RFC 9002's 9/8: with 30 ms ± 5 ms each way a round trip varies by ± 10 ms
/// around 60 ms, so 9/8 (67.5 ms) took every packet whose round trip came out long for lost:
/// 5–15 % of a loss-free path's packets, each a loss event for the sender. A call capped and
/// then freed came back to full video 1.4–9.2 s after the lift with 9/8, 0.6–2.0 s with 3/2
/// (BENCHMARKS.md, "Calls between network namespaces"). A real loss is found 3/8 RTT later.
const DEFAULT_TIME_THRESHOLD: f32 = 1.5;
/// Each controller's own: CUBIC's ten 1200-byte datagrams, and BBR's 200 (240 000 bytes),
/// paced over the first round trip. With
/// RFC 9002's ten datagrams BBR was slower and less steady on 30 ms ± 2 ms (BENCHMARKS.md): a
/// jittery path reorders the handshake, the client drops the server's first 1-RTT packet
/// (its keys are not there yet), and that loss can end BBR's startup while its bandwidth
/// estimate is still one small window per round trip.
const DEFAULT_INITIAL_WINDOW: Option<u64> = None;

impl Tuning {
    /// The defaults, with any of [`ENV_CONGESTION`], [`ENV_PACKET_THRESHOLD`],
    /// [`ENV_TIME_THRESHOLD`] and [`ENV_INITIAL_WINDOW`] that is set applied over them.
    pub fn from_env() -> Result<Self, TuningError> {
        Self::default().with_overrides(|name| std::env::var(name).ok())
    }

    /// `self` with the overrides `var` gives for the environment variables' names.
    pub fn with_overrides(
        mut self,
        var: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, TuningError> {
        if let Some(v) = var(ENV_CONGESTION) {
            self.congestion = v.trim().parse()?;
        }
        if let Some(v) = var(ENV_PACKET_THRESHOLD) {
            self.packet_threshold =
                v.trim()
                    .parse()
                    .ok()
                    .filter(|&n| n >= 3)
                    .ok_or(TuningError {
                        what: ENV_PACKET_THRESHOLD,
                        value: v,
                        expected: "an integer of at least 3",
                    })?;
        }
        if let Some(v) = var(ENV_TIME_THRESHOLD) {
            self.time_threshold = v
                .trim()
                .parse()
                .ok()
                .filter(|&f: &f32| (1.0..=10.0).contains(&f))
                .ok_or(TuningError {
                    what: ENV_TIME_THRESHOLD,
                    value: v,
                    expected: "a factor of the RTT from 1.0 to 10.0",
                })?;
        }
        if let Some(v) = var(ENV_INITIAL_WINDOW) {
            self.initial_window = v
                .trim()
                .parse()
                .ok()
                .filter(|&n| (2_400..=16 << 20).contains(&n))
                .map(Some)
                .ok_or(TuningError {
                    what: ENV_INITIAL_WINDOW,
                    value: v,
                    expected: "bytes, from 2400 to 16 MiB",
                })?;
        }
        if let Some(v) = var(ENV_MAX_UDP_PAYLOAD) {
            self.loopback_max_udp_payload = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1200..=65_527).contains(n))
                .ok_or(TuningError {
                    what: ENV_MAX_UDP_PAYLOAD,
                    value: v,
                    expected: "bytes, from 1200 to 65527",
                })?;
        }
        if let Some(v) = var(ENV_GSO) {
            self.loopback_gso = match v.trim().to_ascii_lowercase().as_str() {
                "on" | "1" | "true" => true,
                "off" | "0" | "false" => false,
                _ => {
                    return Err(TuningError {
                        what: ENV_GSO,
                        value: v,
                        expected: "on or off",
                    });
                }
            };
        }
        Ok(self)
    }
}

/// A QUIC tuning override that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}={value:?}: expected {expected}")]
pub struct TuningError {
    /// The environment variable.
    pub what: &'static str,
    /// Its value.
    pub value: String,
    /// What it should have been.
    pub expected: &'static str,
}

/// The transport configuration both sides use on a network path, with the default [`Tuning`].
pub fn transport_config() -> TransportConfig {
    transport_config_with(&Tuning::default(), Path::Network)
}

/// The transport configuration both sides use on `path`, with `tuning`'s loss detection,
/// congestion control and packet size.
pub fn transport_config_with(tuning: &Tuning, path: Path) -> TransportConfig {
    let mut t = TransportConfig::default();
    if path == Path::Loopback {
        // Discovery rather than a large initial MTU: a loopback device with a smaller MTU
        // costs a few lost probes, not lost packets and a black-hole fallback to 1 200 bytes.
        let mut mtud = quinn::MtuDiscoveryConfig::default();
        mtud.upper_bound(tuning.loopback_max_udp_payload);
        t.mtu_discovery_config(Some(mtud));
        t.enable_segmentation_offload(tuning.loopback_gso);
    }
    t.packet_threshold(tuning.packet_threshold);
    t.time_threshold(tuning.time_threshold);
    let window = tuning.initial_window;
    match tuning.congestion {
        Congestion::Cubic => {
            let mut c = CubicConfig::default();
            if let Some(w) = window {
                c.initial_window(w);
            }
            t.congestion_controller_factory(Arc::new(c))
        }
        Congestion::NewReno => {
            let mut c = NewRenoConfig::default();
            if let Some(w) = window {
                c.initial_window(w);
            }
            t.congestion_controller_factory(Arc::new(c))
        }
        Congestion::Bbr => t.congestion_controller_factory(Arc::new(bbr(window))),
        Congestion::Auto => {
            let mut near = CubicConfig::default();
            if let Some(w) = window {
                near.initial_window(w);
            }
            t.congestion_controller_factory(Arc::new(ByRtt {
                near: Arc::new(near),
                far: Arc::new(bbr(window)),
            }))
        }
    };
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS));
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    // The protocol's own keepalive runs on the control stream; quinn's keeps NAT bindings.
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    t
}

fn bbr(window: Option<u64>) -> BbrConfig {
    let mut c = BbrConfig::default();
    if let Some(w) = window {
        c.initial_window(w);
    }
    c
}

/// [`Congestion::Auto`]'s factory.
struct ByRtt {
    near: Arc<CubicConfig>,
    far: Arc<BbrConfig>,
}

impl ControllerFactory for ByRtt {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(RttSwitch {
            inner: self.far.clone().build(now, current_mtu),
            near: Some(self.near.clone()),
            acks: 0,
            mtu: current_mtu,
        })
    }
}

/// Starts as the far controller and becomes the near one as soon as a packet is
/// acknowledged less than [`NEAR_RTT`] after it was sent, if that happens within the first
/// [`DECIDE_ACKS`] acknowledgements. A busy host or a delayed ACK can only make a round trip
/// look longer, never shorter, so one short sample is proof and several long ones are needed
/// to rule it out. quinn, not the controller, counts the bytes in flight, so the switch loses
/// nothing (the new controller starts from its initial window).
struct RttSwitch {
    inner: Box<dyn Controller>,
    /// The near controller's configuration until the choice is made.
    near: Option<Arc<CubicConfig>>,
    /// Acknowledgements seen while undecided.
    acks: u32,
    mtu: u16,
}

/// Acknowledged packets after which [`RttSwitch`] stays with the far controller.
const DECIDE_ACKS: u32 = 16;

impl Controller for RttSwitch {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        if let Some(near) = &self.near {
            // quinn updates its RTT estimate after this call: take this packet's own sample.
            if now.saturating_duration_since(sent) < NEAR_RTT {
                self.inner = near.clone().build(now, self.mtu);
                self.near = None;
            } else {
                self.acks += 1;
                if self.acks >= DECIDE_ACKS {
                    self.near = None;
                }
            }
        }
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu;
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            inner: self.inner.clone_box(),
            near: self.near.clone(),
            acks: self.acks,
            mtu: self.mtu,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Why a QUIC endpoint could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicSetupError {
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A tuning override in the environment does not parse.
    #[error(transparent)]
    Tuning(#[from] TuningError),
    /// rustls' configuration is not usable for QUIC.
    #[error("TLS configuration not usable for QUIC: {0}")]
    Crypto(String),
    /// The UDP socket could not be bound.
    #[error("binding UDP {addr}: {cause}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// The error (in the message, not a `source()`: see [`TlsError`]).
        cause: std::io::Error,
    },
}

/// A server endpoint on `addr` presenting `identity`.
pub fn server_endpoint(addr: SocketAddr, identity: &Identity) -> Result<Endpoint, QuicSetupError> {
    let crypto = QuicServerConfig::try_from(tls::server_config(identity)?)
        .map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let tuning = Tuning::from_env()?;
    // A server on a wildcard address takes the network path for every peer, loopback ones
    // included: one transport configuration per endpoint.
    cfg.transport_config(Arc::new(transport_config_with(
        &tuning,
        Path::to(addr.ip()),
    )));
    let socket = udp_socket(addr).map_err(|cause| QuicSetupError::Bind { addr, cause })?;
    let loopback_peers = Path::to(addr.ip()) == Path::Loopback || addr.ip().is_unspecified();
    Endpoint::new(
        endpoint_config(&tuning, loopback_peers),
        Some(cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|cause| QuicSetupError::Bind { addr, cause })
}

/// A client endpoint bound to an ephemeral port of `peer`'s address family, for the path to
/// `peer`.
pub fn client_endpoint(peer: SocketAddr, trust: &Trust) -> Result<Endpoint, QuicSetupError> {
    client_endpoint_on(peer, trust, Path::to(peer.ip()))
}

/// A client endpoint for `peer` with `path`'s packet sizes, whatever `peer`'s address.
pub fn client_endpoint_on(
    peer: SocketAddr,
    trust: &Trust,
    path: Path,
) -> Result<Endpoint, QuicSetupError> {
    let crypto = QuicClientConfig::try_from(tls::client_config(trust)?)
        .map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let tuning = Tuning::from_env()?;
    cfg.transport_config(Arc::new(transport_config_with(&tuning, path)));
    let bind: SocketAddr = if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let bind_err = |cause| QuicSetupError::Bind { addr: bind, cause };
    let socket = udp_socket(bind).map_err(bind_err)?;
    let mut ep = Endpoint::new(
        endpoint_config(&tuning, path == Path::Loopback),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// The endpoint's configuration: one that takes `large` datagrams (it may have a peer on a
/// loopback path) accepts them as large as a loopback sender makes them. quinn sizes its
/// receive buffers by this (address space, touched only as datagrams fill it), and a peer
/// sends none larger, so other endpoints keep its default (1 472).
fn endpoint_config(tuning: &Tuning, large: bool) -> quinn::EndpointConfig {
    let mut cfg = quinn::EndpointConfig::default();
    if large {
        let size = tuning.loopback_max_udp_payload.clamp(1472, 65_527);
        cfg.max_udp_payload_size(size)
            .expect("clamped into quinn's range, 1200..=65527");
    }
    cfg
}

/// A UDP socket bound to `addr` with large buffers where the system allows them.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer is slower, not wrong.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Auto` on loopback becomes CUBIC at the first acknowledgement, on both ends.
    #[tokio::test]
    async fn auto_is_cubic_on_loopback() {
        use quinn::congestion::Cubic;

        let identity = Identity::self_signed(&["localhost".to_owned()]).unwrap();
        let trust = Trust::pin_from_hex(&identity.fingerprint_hex()).unwrap();
        let tuning = Tuning {
            congestion: Congestion::Auto,
            ..Tuning::default()
        };
        let server = server_endpoint("127.0.0.1:0".parse().unwrap(), &identity).unwrap();
        let crypto = QuicServerConfig::try_from(tls::server_config(&identity).unwrap()).unwrap();
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(Arc::new(transport_config_with(&tuning, Path::Loopback)));
        server.set_server_config(Some(cfg));
        let peer = server.local_addr().unwrap();
        let mut client = client_endpoint(peer, &trust).unwrap();
        let crypto = QuicClientConfig::try_from(tls::client_config(&trust).unwrap()).unwrap();
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(Arc::new(transport_config_with(&tuning, Path::Loopback)));
        client.set_default_client_config(cfg);

        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let mut send = conn.open_uni().await.unwrap();
            send.write_all(&[7; 100_000]).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            (conn, server)
        });
        let conn = client.connect(peer, "localhost").unwrap().await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        assert_eq!(recv.read_to_end(1 << 20).await.unwrap().len(), 100_000);
        let (server_conn, _server) = accept.await.unwrap();
        for c in [&conn, &server_conn] {
            let switch = c
                .congestion_state()
                .into_any()
                .downcast::<RttSwitch>()
                .unwrap_or_else(|_| panic!("not the Auto controller"));
            assert!(switch.near.is_none(), "no choice made");
            assert!(
                switch.inner.into_any().downcast::<Cubic>().is_ok(),
                "a loopback connection is not on CUBIC"
            );
        }
    }

    /// Moves `bytes` each way between a server on 127.0.0.1 and a client made for `path`:
    /// the server's in two halves 200 ms apart, so that MTU discovery runs while the first
    /// is in flight. Returns the client's and the server's connections.
    async fn transfer_on_loopback(
        path: Path,
        bytes: usize,
    ) -> (quinn::Connection, quinn::Connection, Endpoint) {
        let identity = Identity::self_signed(&["localhost".to_owned()]).unwrap();
        let trust = Trust::pin_from_hex(&identity.fingerprint_hex()).unwrap();
        let server = server_endpoint("127.0.0.1:0".parse().unwrap(), &identity).unwrap();
        let peer = server.local_addr().unwrap();
        let client = client_endpoint_on(peer, &trust, path).unwrap();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let mut send = conn.open_uni().await.unwrap();
            send.write_all(&vec![7; bytes / 2]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            send.write_all(&vec![7; bytes - bytes / 2]).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            (conn, server)
        });
        let conn = client.connect(peer, "localhost").unwrap().await.unwrap();
        let mut up = conn.open_uni().await.unwrap();
        up.write_all(&vec![9; bytes]).await.unwrap();
        up.finish().unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        assert_eq!(recv.read_to_end(bytes).await.unwrap().len(), bytes);
        let (server_conn, server) = accept.await.unwrap();
        (conn, server_conn, server)
    }

    /// Over loopback, MTU discovery takes both ends' packets far beyond Ethernet's 1 452
    /// bytes (what a network path is held to), and a bulk transfer is carried in them.
    #[tokio::test]
    async fn loopback_paths_find_large_datagrams() {
        const BYTES: usize = 8 << 20;
        let (conn, server_conn, _server) = transfer_on_loopback(Path::Loopback, BYTES).await;
        let sent = server_conn.stats();
        assert!(
            sent.path.current_mtu > 16_000,
            "the server's packets stayed at {} bytes",
            sent.path.current_mtu
        );
        // Most of the bytes went in the large packets, not in 1 200-byte ones.
        assert!(
            sent.udp_tx.datagrams < (BYTES / 4_000) as u64,
            "{} datagrams for {BYTES} bytes",
            sent.udp_tx.datagrams
        );
        assert!(
            conn.stats().path.current_mtu > 16_000,
            "the client stayed small"
        );
    }

    /// A realtime client (`Path::Network` to a loopback address) keeps both directions'
    /// packets at Ethernet's size: its own by its discovery bound, the server's by the
    /// datagram size it accepts.
    #[tokio::test]
    async fn a_network_path_to_a_loopback_peer_keeps_small_packets() {
        let (conn, server_conn, _server) = transfer_on_loopback(Path::Network, 4 << 20).await;
        assert!(
            conn.stats().path.current_mtu <= 1452,
            "{:?}",
            conn.stats().path
        );
        assert!(
            server_conn.stats().path.current_mtu <= 1472,
            "{:?}",
            server_conn.stats().path
        );
    }

    #[test]
    fn only_loopback_addresses_are_loopback_paths() {
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(Path::to(ip.parse().unwrap()), Path::Loopback, "{ip}");
        }
        for ip in [
            "192.0.2.1",
            "10.0.0.1",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "0.0.0.0",
        ] {
            assert_eq!(Path::to(ip.parse().unwrap()), Path::Network, "{ip}");
        }
    }

    fn env<'a>(pairs: &'a [(&'static str, &'a str)]) -> impl Fn(&'static str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn overrides_apply_over_the_defaults_and_bad_ones_are_named() {
        let t = Tuning::default()
            .with_overrides(env(&[
                (ENV_CONGESTION, "NewReno"),
                (ENV_PACKET_THRESHOLD, "3"),
                (ENV_TIME_THRESHOLD, "2"),
                (ENV_INITIAL_WINDOW, "12000"),
                (ENV_MAX_UDP_PAYLOAD, "9000"),
                (ENV_GSO, "on"),
            ]))
            .unwrap();
        assert_eq!(
            t,
            Tuning {
                congestion: Congestion::NewReno,
                packet_threshold: 3,
                time_threshold: 2.0,
                initial_window: Some(12_000),
                loopback_max_udp_payload: 9000,
                loopback_gso: true,
            }
        );
        assert_eq!(
            Tuning::default().with_overrides(env(&[])),
            Ok(Tuning::default())
        );
        for (name, bad) in [
            (ENV_CONGESTION, "vegas"),
            (ENV_PACKET_THRESHOLD, "2"),
            (ENV_TIME_THRESHOLD, "0.5"),
            (ENV_INITIAL_WINDOW, "lots"),
            (ENV_MAX_UDP_PAYLOAD, "1000"),
            (ENV_MAX_UDP_PAYLOAD, "70000"),
            (ENV_GSO, "maybe"),
        ] {
            let e = Tuning::default()
                .with_overrides(env(&[(name, bad)]))
                .unwrap_err();
            assert_eq!(e.what, name);
            assert!(e.to_string().contains(bad), "{e}");
        }
        for c in [
            Congestion::Cubic,
            Congestion::NewReno,
            Congestion::Bbr,
            Congestion::Auto,
        ] {
            assert_eq!(c.name().parse::<Congestion>(), Ok(c));
        }
    }
}
