//! The `chunkcast bench` flags and the command they run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::{DEFAULT_SIZE, Options, Source, Sweep, report};
use crate::cli::{Compress, ConnArgs};
use chunkcast_client::error::ClientError;
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::url::{Scheme, Url};

/// Measures download throughput, chunk arrival gaps, CPU and memory over each transport and
/// chunk size. Without a URL, an embedded server in this process serves a generated file (the
/// server and the client then share the machine's cores, and the CPU and memory figures are
/// both ends together).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A file on a running server: tcp://HOST:PORT/PATH, tcps://… or quic://… (without
    /// :PORT, port 7700; every transport uses this host and port).
    pub url: Option<String>,
    /// Transports to measure: tcp, tcps, quic, both (tcp and quic) or all. Default: the URL's,
    /// or all with the embedded server.
    #[arg(long, value_enum)]
    pub transport: Option<Transports>,
    /// Chunk sizes to sweep, comma-separated, each 1 B to 1 MiB (suffixes KiB, MiB, K, M;
    /// KB, MB are powers of ten).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_chunk_size,
          default_value = "1KiB,16KiB,64KiB,256KiB,1MiB")]
    pub chunk_size: Vec<u32>,
    /// Compress chunks where it pays.
    #[arg(long, value_enum, default_value_t = Compress::None)]
    pub compress: Compress,
    /// Concurrent connections, each fetching the whole file.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Seconds each (transport, chunk size) keeps fetching (every connection fetches the whole
    /// file at least once).
    #[arg(long, value_name = "S", default_value_t = 5.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Serve this file with the embedded server instead of a generated one.
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub file: Option<PathBuf>,
    /// Size of the generated file (suffixes as for --chunk-size, plus GB, GiB, G).
    #[arg(long, value_name = "BYTES", value_parser = parse_size, conflicts_with_all = ["url", "file"])]
    pub size: Option<u64>,
    /// One JSON object per result on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw throughput against chunk size, one line per transport, to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Ceilings to draw as horizontal lines, e.g. tcp=2800,quic=1500 (MB/s).
    #[arg(long, value_name = "NAME=MBPS", value_delimiter = ',', value_parser = parse_ceiling)]
    pub ceiling: Vec<(String, f64)>,
    /// Trust and auth (for a remote server; the embedded one is pinned by its fingerprint).
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Which transports to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transports {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tcps,
    /// QUIC.
    Quic,
    /// TCP and QUIC.
    Both,
    /// TCP, TLS over TCP and QUIC.
    All,
}

impl Transports {
    /// The schemes, in measuring order.
    pub fn schemes(self) -> Vec<Scheme> {
        match self {
            Self::Tcp => vec![Scheme::Tcp],
            Self::Tcps => vec![Scheme::Tcps],
            Self::Quic => vec![Scheme::Quic],
            Self::Both => vec![Scheme::Tcp, Scheme::Quic],
            Self::All => vec![Scheme::Tcp, Scheme::Tcps, Scheme::Quic],
        }
    }
}

impl Args {
    /// The options these flags describe.
    pub fn options(&self) -> Result<Options, ClientError> {
        let url = self.url.as_deref().map(Url::parse).transpose()?;
        let transports = match (self.transport, &url) {
            (Some(t), _) => t.schemes(),
            (None, Some(u)) => vec![u.scheme],
            (None, None) => Transports::All.schemes(),
        };
        let (source, connect) = match (url, &self.file) {
            (Some(u), _) => (Source::Remote(u), self.conn.options()?),
            (None, Some(f)) => (Source::File(f.clone()), ConnectOptions::default()),
            (None, None) => (
                Source::Generated(self.size.unwrap_or(DEFAULT_SIZE)),
                ConnectOptions::default(),
            ),
        };
        Ok(Options {
            source,
            transports,
            chunk_sizes: self.chunk_size.clone(),
            compress: self.compress == Compress::Lz4,
            connections: usize::from(self.connections),
            duration: Duration::from_secs_f64(self.duration),
            connect,
        })
    }
}

/// Runs `chunkcast bench`: prints the table (or JSON lines) as results come, then draws the
/// plot if asked.
pub async fn run(args: Args) -> Result<(), ClientError> {
    let opts = args.options()?;
    if let Some(plot) = &args.plot {
        if plot.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(ClientError::Usage(format!(
                "--plot {}: only SVG is drawn; name the file *.svg",
                plot.display()
            )));
        }
    }
    let json = args.json;
    if !json {
        println!("{}", report::TABLE_HEADER);
    }
    let sweep: Sweep = super::sweep(&opts, |m| {
        let line = if json {
            report::json_line(m)
        } else {
            report::table_row(m)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })
    .await?;
    eprintln!(
        "file: {} bytes; first chunk {:.1} ms after the first open (a file the server has not hashed streams at once; its digest follows the last chunk)",
        sweep.file_len,
        sweep.first_open.as_secs_f64() * 1e3
    );
    if matches!(opts.source, Source::Remote(_)) {
        eprintln!("CPU and memory are this client's only (the server runs elsewhere)");
    } else {
        eprintln!(
            "embedded server: client and server share this process and its cores; CPU and memory are both together"
        );
    }
    if !sweep.results.iter().all(|m| m.verified) {
        return Err(ClientError::Usage(
            "bench: some fetches had no digest to verify".into(),
        ));
    }
    if let Some(plot) = &args.plot {
        super::svg(plot, &sweep.results, &args.ceiling)?;
        eprintln!("plot: {}", plot.display());
    }
    Ok(())
}

/// Parses a byte count: a number with an optional suffix. `KiB`, `MiB`, `GiB` and the short
/// `K`, `M`, `G` are powers of two; `KB`, `MB`, `GB` powers of ten; `B` or none is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 64KiB or 256MB"))?;
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a chunk size (`--chunk-size` of `get` and `bench`): a size as [`parse_size`] takes
/// it, from 1 byte to the protocol's largest chunk payload (1 MiB), so that a size the
/// packetizer would refuse is caught on the command line, not reported against the file.
pub fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    let max = chunkcast_media::MAX_CHUNK_SIZE as u64;
    if n == 0 || n > max {
        return Err(format!(
            "chunk size {s} is out of range: use 1 B to 1 MiB ({max} bytes), e.g. 64KiB"
        ));
    }
    Ok(n as u32)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds (0 to 86400)")),
    }
}

fn parse_ceiling(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=MBPS, e.g. tcp=2800"))?;
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && !name.is_empty() => Ok((name.to_owned(), v)),
        _ => Err(format!("{s:?}: expected NAME=MBPS with MBPS > 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("256MB"), Ok(256_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_chunk_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("64KiB"), Ok(65_536));
        assert_eq!(parse_chunk_size("16KB"), Ok(16_000));
        assert_eq!(parse_chunk_size("1"), Ok(1));
        let err = parse_chunk_size("2MiB").unwrap_err();
        assert!(err.contains("1 B to 1 MiB (1048576 bytes)"), "{err}");
        assert!(parse_chunk_size("0").is_err());
    }

    #[test]
    fn ceilings_and_seconds_parse() {
        assert_eq!(parse_ceiling("tcp=2800"), Ok(("tcp".into(), 2800.0)));
        assert!(parse_ceiling("tcp").is_err());
        assert!(parse_ceiling("tcp=-1").is_err());
        assert_eq!(parse_seconds("0.2"), Ok(0.2));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
    }
}
