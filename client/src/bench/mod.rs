//! `chunkcast bench`: download throughput, chunk arrival gaps, CPU and peak memory, swept
//! over transports and chunk sizes.
//!
//! # Method
//!
//! - Without a URL, an embedded [`Server`] on `127.0.0.1:0` serves a temporary directory
//!   holding a generated file (deterministic pseudo-random bytes, incompressible) or the file
//!   given with `--file`. Server and client then run in one process and one tokio runtime and
//!   share the machine's cores: every figure is both ends together.
//! - For each (transport, chunk size), `connections` sessions each fetch the file in download
//!   mode again and again until `duration` has passed, and at least once. Every fetch goes
//!   through the same code as `chunkcast get` up to the disk: [`Session::open`], chunks from
//!   [`Incoming::next`](chunkcast_client::session::Incoming::next) (CRC32C-checked, decompressed), fed to
//!   a [`Reassembler`] which BLAKE3-hashes the bytes in order; the bytes are then dropped
//!   instead of written, and [`Reassembler::finish`] checks length, chunk count and the
//!   server's digest. So the figures measure the network path and the verification, not the
//!   disk, and memory stays bounded (the file is never held).
//! - Before the sweep, the file is fetched once, unmeasured: it warms the page cache and the
//!   server's cached whole-file digest (a file it has not hashed before is hashed while it is
//!   sent, the digest following the last chunk; later opens announce it up front). The time
//!   from that first open to its first chunk is reported as [`Sweep::first_open`].
//! - Throughput is file bytes over the wall time from the first connect to the last fetch's
//!   end (MB = 10^6 bytes). Per-chunk latency is the *arrival gap*: the time between
//!   consecutive chunks handed to the consumer within one fetch (chunks decoded from one
//!   socket read come back to back, so small chunks show sub-microsecond p50s; p99 and max
//!   show stalls); the wait from open to the first chunk is kept apart
//!   ([`Measurement::first_chunk`]). CPU is the process's user + system time (`/proc/self/stat`)
//!   per GB moved; peak memory is `VmHWM`, reset before each measurement.

mod args;
mod histogram;
mod plot;
pub mod process;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chunkcast_media::{Expect, Reassembler};
use chunkcast_server::{Config, Server};
use chunkcast_transport::tls::Trust;
use tokio::task::JoinSet;

pub use args::{Args, Transports, parse_chunk_size, parse_size, run};
pub use histogram::Histogram;
pub use plot::svg;
pub use report::{TABLE_HEADER, json_line, table_row};

use chunkcast_client::error::ClientError;
use chunkcast_client::session::{ConnectOptions, OpenOptions, Session};
use chunkcast_client::url::{Scheme, Url};

/// The default size of the generated test file: 256 MB, large enough that a fetch lasts
/// long past connection setup at loopback speed, small enough to write in a second.
pub const DEFAULT_SIZE: u64 = 256_000_000;

/// The default chunk sizes swept: 1 KiB to the 1 MiB maximum.
pub const DEFAULT_CHUNK_SIZES: [u32; 5] = [1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// Where the bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on a running server, named by its URL. The other transports use the same host
    /// and port (a chunkcast server listens with TCP and QUIC on one port by default).
    Remote(Url),
    /// An embedded server serving this file (its directory becomes the library root).
    File(PathBuf),
    /// An embedded server serving a generated file of this many pseudo-random bytes.
    Generated(u64),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the bytes come from.
    pub source: Source,
    /// Transports, in order.
    pub transports: Vec<Scheme>,
    /// Chunk sizes to ask for, in order (0: the server's default).
    pub chunk_sizes: Vec<u32>,
    /// Ask for lz4 where it pays.
    pub compress: bool,
    /// Concurrent connections, each fetching the file.
    pub connections: usize,
    /// How long each (transport, chunk size) keeps fetching; every connection fetches the
    /// whole file at least once.
    pub duration: Duration,
    /// Trust and auth for a remote server (an embedded one is pinned by its fingerprint).
    pub connect: ConnectOptions,
}

impl Options {
    /// A sweep of the default chunk sizes over `transports`, against an embedded server with a
    /// generated file of `size` bytes, one connection, `duration` each.
    pub fn embedded(size: u64, transports: Vec<Scheme>, duration: Duration) -> Self {
        Self {
            source: Source::Generated(size),
            transports,
            chunk_sizes: DEFAULT_CHUNK_SIZES.to_vec(),
            compress: false,
            connections: 1,
            duration,
            connect: ConnectOptions::default(),
        }
    }
}

/// One (transport, chunk size) result.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Transport.
    pub transport: Scheme,
    /// Chunk size asked for (0: the server's default).
    pub chunk_size: u32,
    /// lz4 asked for.
    pub compress: bool,
    /// Concurrent connections.
    pub connections: usize,
    /// Whether the server ran in this process (CPU and memory then include it).
    pub embedded: bool,
    /// Whole files fetched.
    pub files: u64,
    /// File bytes received (after decompression).
    pub bytes: u64,
    /// Chunks received.
    pub chunks: u64,
    /// Wall time from the first connect to the last fetch's end.
    pub elapsed: Duration,
    /// Gaps between consecutive chunks within a fetch.
    pub gaps: Histogram,
    /// Time from the open request to the first chunk, per fetch.
    pub first_chunk: Histogram,
    /// Process CPU time (user + system) spent, when `/proc` tells.
    pub cpu: Option<Duration>,
    /// Peak resident memory during the measurement, when `/proc` tells.
    pub peak_rss: Option<u64>,
    /// Whether every fetch's BLAKE3 matched the digest the server announced.
    pub verified: bool,
}

impl Measurement {
    /// File bytes per second, in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs()
    }

    /// Chunks per second.
    pub fn chunks_per_s(&self) -> f64 {
        self.chunks as f64 / self.secs()
    }

    /// CPU seconds per GB (10^9 bytes) moved.
    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        let cpu = self.cpu?.as_secs_f64();
        (self.bytes > 0).then(|| cpu / (self.bytes as f64 / 1e9))
    }

    /// Average cores busy (CPU time over wall time).
    pub fn cores(&self) -> Option<f64> {
        Some(self.cpu?.as_secs_f64() / self.secs())
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A whole sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The file's length.
    pub file_len: u64,
    /// From the first open of the file to its first chunk.
    pub first_open: Duration,
    /// One result per (transport, chunk size), in order.
    pub results: Vec<Measurement>,
}

/// Runs the sweep, calling `each` with every result as soon as it is measured.
pub async fn sweep(
    opts: &Options,
    mut each: impl FnMut(&Measurement),
) -> Result<Sweep, ClientError> {
    if opts.transports.is_empty() || opts.chunk_sizes.is_empty() || opts.connections == 0 {
        return Err(ClientError::Usage(
            "bench: nothing to measure (no transport, chunk size or connection)".into(),
        ));
    }
    let target = Target::start(opts).await?;
    let run = async {
        let (first_open, file_len) = target.warm_up(opts.transports[0]).await?;
        let mut results = Vec::new();
        for &scheme in &opts.transports {
            for &chunk_size in &opts.chunk_sizes {
                let m = measure(&target, scheme, chunk_size, opts).await?;
                each(&m);
                results.push(m);
            }
        }
        Ok(Sweep {
            file_len,
            first_open,
            results,
        })
    };
    let out = run.await;
    target.stop().await;
    out
}

/// The server and file being measured.
struct Target {
    server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
    host: String,
    tcp_port: u16,
    quic_port: u16,
    path: String,
    connect: ConnectOptions,
}

impl Target {
    async fn start(opts: &Options) -> Result<Self, ClientError> {
        let (root, path, dir) = match &opts.source {
            Source::Remote(url) => {
                if url.path.is_empty() {
                    return Err(ClientError::Usage(
                        "bench: the URL names no file: add its path, e.g. tcp://HOST:PORT/file.bin"
                            .into(),
                    ));
                }
                return Ok(Self {
                    server: None,
                    _dir: None,
                    host: url.host.clone(),
                    tcp_port: url.port,
                    quic_port: url.port,
                    path: url.path.clone(),
                    connect: opts.connect.clone(),
                });
            }
            Source::File(file) => {
                let file = file
                    .canonicalize()
                    .map_err(|e| ClientError::file(file, e))?;
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| ClientError::Usage(format!("bench: {file:?} names no file")))?
                    .to_owned();
                let root = file.parent().unwrap_or(Path::new("/")).to_owned();
                (root, name, None)
            }
            Source::Generated(size) => {
                let dir = tempfile::Builder::new()
                    .prefix("chunkcast-bench-")
                    .tempdir()
                    .map_err(|e| ClientError::file(Path::new("temporary directory"), e))?;
                let file = dir.path().join("bench.bin");
                let (f, size) = (file.clone(), *size);
                tokio::task::spawn_blocking(move || write_test_file(&f, size))
                    .await
                    .map_err(|e| ClientError::Usage(e.to_string()))?
                    .map_err(|e| ClientError::file(&file, e))?;
                (dir.path().to_owned(), "bench.bin".to_owned(), Some(dir))
            }
        };
        let mut config = Config::on("127.0.0.1:0".parse().expect("literal address"));
        config.root = Some(root);
        config.grace = Duration::from_millis(100);
        // The bench measures the data path, not the admission limits: its own server lets every
        // connection in and lets each open as often as it finishes fetching a (small) file.
        config.limits.max_requests_per_sec = u32::MAX;
        config.limits.max_connections_per_ip = config.limits.max_connections;
        let server = Server::start(config)
            .await
            .map_err(|e| ClientError::Usage(format!("bench: starting the embedded server: {e}")))?;
        let connect = ConnectOptions {
            trust: Trust::pin_from_hex(server.fingerprint())?,
            token: None,
            timeout: Duration::from_secs(10),
            ..ConnectOptions::default()
        };
        Ok(Self {
            host: server.tcp_addr().ip().to_string(),
            tcp_port: server.tcp_addr().port(),
            quic_port: server.quic_addr().port(),
            server: Some(server),
            _dir: dir,
            path,
            connect,
        })
    }

    fn url(&self, scheme: Scheme) -> Url {
        Url {
            scheme,
            host: self.host.clone(),
            port: if scheme == Scheme::Quic {
                self.quic_port
            } else {
                self.tcp_port
            },
            path: self.path.clone(),
        }
    }

    /// Fetches the file once, unmeasured: returns the time from the open to the first chunk,
    /// and the file length.
    async fn warm_up(&self, scheme: Scheme) -> Result<(Duration, u64), ClientError> {
        let session = Session::connect(&self.url(scheme), &self.connect).await?;
        let started = Instant::now();
        let mut incoming = session.open(&OpenOptions::download(&self.path)).await?;
        let len = incoming.opened.total_len.unwrap_or(0);
        let mut first = None;
        while let Some(chunk) = incoming.next().await {
            chunk?;
            first.get_or_insert_with(|| started.elapsed());
        }
        incoming.file_digest().await?;
        session.close().await;
        Ok((first.unwrap_or_else(|| started.elapsed()), len))
    }

    async fn stop(self) {
        if let Some(s) = self.server {
            s.shutdown().await;
        }
    }
}

/// Writes `size` deterministic pseudo-random bytes (splitmix64) to `path`, 1 MiB at a time.
fn write_test_file(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = 0x0123_4567_89ab_cdefu64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Seen {
    files: u64,
    bytes: u64,
    chunks: u64,
    gaps: Histogram,
    first_chunk: Histogram,
    verified: bool,
}

async fn measure(
    target: &Target,
    scheme: Scheme,
    chunk_size: u32,
    opts: &Options,
) -> Result<Measurement, ClientError> {
    process::reset_peak_rss();
    let cpu0 = process::cpu_time();
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..opts.connections {
        let url = target.url(scheme);
        let connect = target.connect.clone();
        let open = OpenOptions {
            chunk_size,
            compress: opts.compress,
            ..OpenOptions::download(&target.path)
        };
        tasks.spawn(async move { fetch_until(url, connect, open, deadline).await });
    }
    let mut total = Seen {
        verified: true,
        ..Seen::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let seen = joined.map_err(|e| ClientError::Usage(format!("bench task: {e}")))??;
        total.files += seen.files;
        total.bytes += seen.bytes;
        total.chunks += seen.chunks;
        total.gaps.merge(&seen.gaps);
        total.first_chunk.merge(&seen.first_chunk);
        total.verified &= seen.verified;
    }
    let elapsed = started.elapsed();
    let cpu = cpu0
        .zip(process::cpu_time())
        .map(|(a, b)| b.saturating_sub(a));
    Ok(Measurement {
        transport: scheme,
        chunk_size,
        compress: opts.compress,
        connections: opts.connections,
        embedded: target.server.is_some(),
        files: total.files,
        bytes: total.bytes,
        chunks: total.chunks,
        elapsed,
        gaps: total.gaps,
        first_chunk: total.first_chunk,
        cpu,
        peak_rss: process::peak_rss(),
        verified: total.verified,
    })
}

/// One connection: fetches the whole file again and again until `deadline`, at least once.
async fn fetch_until(
    url: Url,
    connect: ConnectOptions,
    open: OpenOptions,
    deadline: Instant,
) -> Result<Seen, ClientError> {
    let session = Session::connect(&url, &connect).await?;
    let mut seen = Seen {
        verified: true,
        ..Seen::default()
    };
    let result = loop {
        if let Err(e) = fetch(&session, &open, &mut seen).await {
            break Err(e);
        }
        if Instant::now() >= deadline {
            break Ok(());
        }
    };
    session.close().await;
    result.map(|()| seen)
}

/// Fetches the file once: chunks into a reassembler, bytes dropped, digest checked.
async fn fetch(session: &Session, open: &OpenOptions, seen: &mut Seen) -> Result<(), ClientError> {
    let asked = Instant::now();
    let mut incoming = session.open(open).await?;
    let info = incoming.opened.clone();
    let mut expect = Expect::new();
    expect.total_len = info.total_len;
    expect.chunk_count = info.chunk_count;
    expect.start_seq = info.start_seq;
    let mut reasm = Reassembler::new(expect);
    let mut last: Option<Instant> = None;
    while let Some(chunk) = incoming.next().await {
        let chunk = chunk?;
        let now = Instant::now();
        match last {
            Some(t) => seen.gaps.record(now - t),
            None => seen.first_chunk.record(now - asked),
        }
        last = Some(now);
        seen.chunks += 1;
        reasm.push(chunk)?;
        while let Some((_, bytes)) = reasm.poll_write() {
            seen.bytes += bytes.len() as u64;
        }
    }
    let digest = incoming.file_digest().await?;
    if let Some(d) = digest {
        reasm.expect_digest(d);
    }
    let summary = reasm.finish()?;
    seen.files += 1;
    seen.verified &= digest.is_some() && summary.digest.is_some();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_file_is_deterministic_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_test_file(&a, 3_000_001).unwrap();
        write_test_file(&b, 3_000_001).unwrap();
        let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        assert_eq!(a.len(), 3_000_001);
        assert_eq!(a, b);
        // Incompressible: no byte value dominates.
        let zeros = a.iter().filter(|&&x| x == 0).count();
        assert!(zeros < a.len() / 100);
    }
}
