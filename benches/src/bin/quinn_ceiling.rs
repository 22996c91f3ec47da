//! The QUIC ceiling of our own stack: quinn alone, no chunkcast framing, packetizing or
//! hashing, on loopback, sender and receiver in one process.
//!
//! Both endpoints are made exactly as chunkcast makes them (`net::quic::server_endpoint` and
//! `client_endpoint`: the same rustls/ring TLS 1.3 configuration, ALPN, a self-signed rcgen
//! certificate pinned by its SHA-256, and `net::quic::transport_config()` with its stream and
//! connection windows), on the same multi-threaded tokio runtime. The sender writes `BYTES`
//! (default 1 GB) on one unidirectional stream as `Bytes` pieces of `--write` bytes (default
//! 1 MiB), 64 pieces per `write_all_chunks` call (`--per-call N`), with no copy; the receiver takes them with
//! `read_chunk` (no copy) and counts them, or with `--copy` reads them into a `BytesMut` in
//! 512 KiB steps with `read_buf`, the way chunkcast's `net::link` read loop does.
//!
//! `--socket-buffer BYTES` rebinds both endpoints to UDP sockets with `SO_RCVBUF`/`SO_SNDBUF`
//! of that size (the kernel caps it at `net.core.rmem_max`/`wmem_max`), to show what the
//! default socket buffers (`net.core.rmem_default`, usually 208 KiB, which chunkcast keeps)
//! cost: datagrams dropped by a full receive buffer, then congestion-control back-off.
//!
//! Prints one line: `quinn_ceiling bytes=N seconds=S mb_per_s=X gbit_per_s=Y write=W read=R
//! socket_buffer=B udp_rcvbuf_errors=E`, timed from the first write to the receiver's last
//! byte (connection setup excluded); `E` is the machine-wide `RcvbufErrors` counter's growth
//! during the run (from `/proc/net/snmp`), i.e. datagrams the kernel dropped.
//!
//! Two more switches isolate what else could cost: `--quinn-transport` uses quinn's default
//! `TransportConfig` instead of chunkcast's, and `--split` runs the receiver and the sender on
//! two threads with one current-thread runtime each (as two processes would) instead of one
//! shared multi-threaded runtime.
//!
//! Usage: `quinn_ceiling [BYTES] [--write BYTES] [--per-call N] [--copy] [--socket-buffer BYTES]
//! [--quinn-transport] [--split]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use chunkcast_transport::quic;
use chunkcast_transport::tls::{self, Identity, Trust};
use quinn::Endpoint;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::io::AsyncReadExt;

/// 1 GB: long enough (about a second at loopback speed) that setup and slow start vanish.
const DEFAULT_BYTES: u64 = 1_000_000_000;
/// 1 MiB pieces, the size of chunkcast's TCP write batches.
const DEFAULT_WRITE: usize = 1 << 20;
/// Pieces handed to quinn per `write_all_chunks` call by default (chunkcast's server makes
/// one call per chunk: `--write 65536 --per-call 1` is its pattern).
const DEFAULT_PER_CALL: usize = 64;
/// The receive step of `--copy`: chunkcast's link reads reserve 512 KiB at a time.
const COPY_READ: usize = 512 << 10;

#[derive(Clone)]
struct Args {
    bytes: u64,
    write: usize,
    copy: bool,
    socket_buffer: Option<usize>,
    quinn_transport: bool,
    split: bool,
    per_call: usize,
}

const USAGE: &str = "usage: quinn_ceiling [BYTES] [--write BYTES] [--copy] [--per-call N] [--socket-buffer BYTES] [--quinn-transport] [--split]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        bytes: DEFAULT_BYTES,
        write: DEFAULT_WRITE,
        copy: false,
        socket_buffer: None,
        quinn_transport: false,
        split: false,
        per_call: DEFAULT_PER_CALL,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--copy" => args.copy = true,
            "--quinn-transport" => args.quinn_transport = true,
            "--split" => args.split = true,
            "--write" => {
                let v = it.next().context("--write needs a byte count")?;
                args.write = v.parse().with_context(|| format!("--write {v}"))?;
                if args.write == 0 {
                    bail!("--write must be at least 1");
                }
            }
            "--per-call" => {
                let v = it.next().context("--per-call needs a count")?;
                args.per_call = v.parse().with_context(|| format!("--per-call {v}"))?;
                if args.per_call == 0 {
                    bail!("--per-call must be at least 1");
                }
            }
            "--socket-buffer" => {
                let v = it.next().context("--socket-buffer needs a byte count")?;
                args.socket_buffer =
                    Some(v.parse().with_context(|| format!("--socket-buffer {v}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            n => args.bytes = n.parse().with_context(|| format!("BYTES {n}\n{USAGE}"))?,
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let identity = Identity::self_signed(&[]).context("making a certificate")?;
    let trust = Trust::pin_from_hex(&identity.fingerprint_hex())?;
    let drops_before = rcvbuf_errors();
    let (n, secs) = if args.split {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let a = args.clone();
        let receiver = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let server = server_endpoint(&identity, &a)?;
                addr_tx.send(server.local_addr()?)?;
                receive(server, a.copy).await
            })
        });
        let addr = addr_rx.recv().context("the receiver failed to start")?;
        let a = args.clone();
        let sender = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = client_endpoint(addr, &trust, &a)?;
                send(&client, addr, &a).await
            })
        });
        let started = sender.join().expect("sender thread")?;
        let (n, done) = receiver.join().expect("receiver thread")?;
        (n, (done - started).as_secs_f64())
    } else {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let server = server_endpoint(&identity, &args)?;
            let addr = server.local_addr()?;
            let client = client_endpoint(addr, &trust, &args)?;
            let receiver = tokio::spawn(receive(server, args.copy));
            let started = send(&client, addr, &args).await?;
            let (n, done) = receiver.await??;
            Ok::<_, anyhow::Error>((n, (done - started).as_secs_f64()))
        })?
    };
    if n != args.bytes {
        bail!("received {n} bytes of {}", args.bytes);
    }
    let mbps = n as f64 / 1e6 / secs;
    let drops = rcvbuf_errors()
        .zip(drops_before)
        .map_or_else(|| "unknown".to_owned(), |(a, b)| (a - b).to_string());
    println!(
        "quinn_ceiling bytes={n} seconds={secs:.3} mb_per_s={mbps:.1} gbit_per_s={:.2} write={} per_call={} read={} socket_buffer={} transport={} runtime={} udp_rcvbuf_errors={drops}",
        mbps * 8e-3,
        args.write,
        args.per_call,
        if args.copy { "copy" } else { "chunk" },
        args.socket_buffer
            .map_or_else(|| "default".to_owned(), |b| b.to_string()),
        if args.quinn_transport {
            "quinn-default"
        } else {
            "chunkcast"
        },
        if args.split { "split" } else { "shared" },
    );
    Ok(())
}

/// chunkcast's server endpoint on loopback, adjusted as `args` say.
fn server_endpoint(identity: &Identity, args: &Args) -> anyhow::Result<Endpoint> {
    let server = quic::server_endpoint("127.0.0.1:0".parse()?, identity)?;
    if let Some(size) = args.socket_buffer {
        server.rebind(udp_socket(size)?)?;
    }
    if args.quinn_transport {
        let crypto = QuicServerConfig::try_from(tls::server_config(identity)?)?;
        server.set_server_config(Some(quinn::ServerConfig::with_crypto(Arc::new(crypto))));
    }
    Ok(server)
}

/// chunkcast's client endpoint, adjusted as `args` say.
fn client_endpoint(peer: SocketAddr, trust: &Trust, args: &Args) -> anyhow::Result<Endpoint> {
    let mut client = quic::client_endpoint(peer, trust)?;
    if let Some(size) = args.socket_buffer {
        client.rebind(udp_socket(size)?)?;
    }
    if args.quinn_transport {
        let crypto = QuicClientConfig::try_from(tls::client_config(trust)?)?;
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    }
    Ok(client)
}

/// Accepts one connection and one unidirectional stream and reads it to the end; returns the
/// bytes read and when the last arrived.
async fn receive(server: Endpoint, copy: bool) -> anyhow::Result<(u64, Instant)> {
    let conn = server
        .accept()
        .await
        .context("no incoming connection")?
        .await?;
    let mut recv = conn.accept_uni().await?;
    let mut n = 0u64;
    if copy {
        let mut buf = BytesMut::new();
        loop {
            if buf.capacity() - buf.len() < COPY_READ / 4 {
                buf.reserve(COPY_READ);
            }
            match recv.read_buf(&mut buf).await? {
                0 => break,
                k => {
                    n += k as u64;
                    // Consumed, as the decoder's split_to would.
                    drop(buf.split());
                }
            }
        }
    } else {
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            n += chunk.bytes.len() as u64;
        }
    }
    let done = Instant::now();
    // Wait for the sender's close so that its last ACKs are not cut short.
    let _ = conn.closed().await;
    server.wait_idle().await;
    Ok((n, done))
}

/// Connects and sends `args.bytes` on one unidirectional stream; returns when sending started.
async fn send(client: &Endpoint, addr: SocketAddr, args: &Args) -> anyhow::Result<Instant> {
    let conn = client.connect(addr, "localhost")?.await?;
    let mut send = conn.open_uni().await?;
    let piece = Bytes::from(vec![0xa5u8; args.write]);
    let started = Instant::now();
    let mut left = args.bytes;
    let mut batch = Vec::with_capacity(args.per_call);
    while left > 0 {
        batch.clear();
        while batch.len() < args.per_call && left > 0 {
            let k = left.min(args.write as u64) as usize;
            batch.push(piece.slice(..k));
            left -= k as u64;
        }
        send.write_all_chunks(&mut batch).await?;
    }
    send.finish()?;
    // Everything acknowledged: the receiver has it all.
    let _ = send.stopped().await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    Ok(started)
}

/// A loopback UDP socket with receive and send buffers of `size` bytes (as far as the
/// kernel's `rmem_max`/`wmem_max` allow).
fn udp_socket(size: usize) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(size)?;
    s.set_send_buffer_size(size)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    Ok(s.into())
}

/// The machine-wide count of UDP datagrams dropped because a receive buffer was full.
fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}
