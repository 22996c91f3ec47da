//! The QUIC ceiling of our own stack: quinn alone, no chunkcast framing, packetizing or
//! hashing, on loopback, sender and receiver in one process.
//!
//! Both endpoints are made exactly as chunkcast makes them (`net::quic::server_endpoint` and
//! `client_endpoint`: the same rustls/ring TLS 1.3 configuration, ALPN, a self-signed rcgen
//! certificate pinned by its SHA-256, and `net::quic::transport_config()` with its stream and
//! connection windows), on the same multi-threaded tokio runtime. The sender writes `BYTES`
//! (default 1 GB) on one unidirectional stream as `Bytes` pieces of `--write` bytes (default
//! 1 MiB), 64 pieces per `write_all_chunks` call, with no copy; the receiver takes them with
//! `read_chunk` (no copy) and counts them, or with `--copy` reads them into a `BytesMut` in
//! 512 KiB steps with `read_buf`, the way chunkcast's `net::link` read loop does.
//!
//! Prints one line: `quinn_ceiling bytes=N seconds=S mb_per_s=X gbit_per_s=Y write=W read=R`,
//! timed from the first write to the receiver's last byte (connection setup excluded).
//!
//! Usage: `quinn_ceiling [BYTES] [--write BYTES] [--copy]`

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use chunkcast_protocol::net::quic;
use chunkcast_protocol::net::tls::{Identity, Trust};
use tokio::io::AsyncReadExt;

/// 1 GB: long enough (about a second at loopback speed) that setup and slow start vanish.
const DEFAULT_BYTES: u64 = 1_000_000_000;
/// 1 MiB pieces, the size of chunkcast's TCP write batches.
const DEFAULT_WRITE: usize = 1 << 20;
/// Pieces handed to quinn per `write_all_chunks` call.
const PIECES_PER_CALL: usize = 64;
/// The receive step of `--copy`: chunkcast's link reads reserve 512 KiB at a time.
const COPY_READ: usize = 512 << 10;

struct Args {
    bytes: u64,
    write: usize,
    copy: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        bytes: DEFAULT_BYTES,
        write: DEFAULT_WRITE,
        copy: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--copy" => args.copy = true,
            "--write" => {
                let v = it.next().context("--write needs a byte count")?;
                args.write = v.parse().with_context(|| format!("--write {v}"))?;
                if args.write == 0 {
                    bail!("--write must be at least 1");
                }
            }
            "-h" | "--help" => {
                println!("usage: quinn_ceiling [BYTES] [--write BYTES] [--copy]");
                std::process::exit(0);
            }
            n => args.bytes = n.parse().with_context(|| format!("BYTES {n}"))?,
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let identity = Identity::self_signed(&[]).context("making a certificate")?;
    let server = quic::server_endpoint("127.0.0.1:0".parse()?, &identity)?;
    let addr = server.local_addr()?;
    let trust = Trust::pin_from_hex(&identity.fingerprint_hex())?;
    let client = quic::client_endpoint(addr, &trust)?;

    let copy = args.copy;
    let receiver = tokio::spawn(async move {
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
        Ok::<_, anyhow::Error>((n, done, conn, server))
    });

    let conn = client.connect(addr, "localhost")?.await?;
    let mut send = conn.open_uni().await?;
    let piece = Bytes::from(vec![0xa5u8; args.write]);
    let started = Instant::now();
    let mut left = args.bytes;
    let mut batch = Vec::with_capacity(PIECES_PER_CALL);
    while left > 0 {
        batch.clear();
        while batch.len() < PIECES_PER_CALL && left > 0 {
            let k = left.min(args.write as u64) as usize;
            batch.push(piece.slice(..k));
            left -= k as u64;
        }
        send.write_all_chunks(&mut batch).await?;
    }
    send.finish()?;
    let (n, done, server_conn, server) = receiver.await??;
    if n != args.bytes {
        bail!("received {n} bytes of {}", args.bytes);
    }
    let secs = (done - started).as_secs_f64();
    let mbps = n as f64 / 1e6 / secs;
    println!(
        "quinn_ceiling bytes={n} seconds={secs:.3} mb_per_s={mbps:.1} gbit_per_s={:.2} write={} read={}",
        mbps * 8e-3,
        args.write,
        if copy { "copy" } else { "chunk" },
    );
    conn.close(0u32.into(), b"done");
    server_conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.wait_idle().await;
    Ok(())
}
