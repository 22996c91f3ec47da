//! The work a verified `chunkcast get` cannot skip, besides moving bytes over the network,
//! measured one piece at a time on one thread, with nothing else in the way.
//!
//! A download reads the file on the server, hashes every byte with BLAKE3 on the client to
//! verify it against the tree, and writes the file. (Its chunks carry a CRC32C of their header
//! only, `HEADER_CRC`; a stream that is not verified also pays a CRC32C of the payload on each
//! end.) This tool does each of those over `FILE` in 1 MiB pieces through one reused,
//! cache-hot buffer, and prints the CPU seconds each costs per GB:
//!
//! - `read`: `read(2)` of `FILE` (from the page cache when it is warm or on tmpfs);
//! - `crc32c`: one CRC32C pass (an unverified download does two: send and check);
//! - `blake3`: one BLAKE3 pass;
//! - `write`: `write(2)` of the same bytes to a new file `OUT_DIR/get_floor.out` (deleted at
//!   the end): on tmpfs this is the copy plus the allocation of every page of the new file.
//!
//! Added to the transport's own CPU per GB (iperf3 or `quinn_ceiling`), this is the least CPU
//! a verified get can spend per GB; on a machine where both ends share the cores, cores ÷ that
//! sum bounds its throughput (`benches/compare.sh` prints the bound next to each ceiling).
//!
//! Usage: `get_floor FILE [OUT_DIR]` (OUT_DIR defaults to FILE's directory). Prints one line:
//! `get_floor bytes=N read=S crc32c=S blake3=S write=S` (CPU seconds per 10^9 bytes).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const PIECE: usize = 1 << 20;

const USAGE: &str = "usage: get_floor FILE [OUT_DIR]\n\nPrints the CPU seconds per GB of reading FILE, CRC32C, BLAKE3 and writing it to\nOUT_DIR/get_floor.out (deleted at the end; OUT_DIR defaults to FILE's directory).";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(file) = args.next().map(PathBuf::from) else {
        bail!("{USAGE}");
    };
    if file.as_os_str() == "-h" || file.as_os_str() == "--help" {
        println!("{USAGE}");
        return Ok(());
    }
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let out_path = dir.join("get_floor.out");
    let result = measure(&file, &out_path);
    let _ = std::fs::remove_file(&out_path);
    let cost = result?;
    let per_gb = |d: Duration| d.as_secs_f64() / (cost.bytes as f64 / 1e9);
    println!(
        "get_floor bytes={} read={:.3} crc32c={:.3} blake3={:.3} write={:.3}",
        cost.bytes,
        per_gb(cost.read),
        per_gb(cost.crc),
        per_gb(cost.blake3),
        per_gb(cost.write)
    );
    Ok(())
}

struct Cost {
    bytes: u64,
    read: Duration,
    crc: Duration,
    blake3: Duration,
    write: Duration,
}

fn measure(path: &Path, out_path: &Path) -> anyhow::Result<Cost> {
    let mut input = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut output =
        File::create(out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let mut buf = vec![0u8; PIECE];
    let mut hasher = blake3::Hasher::new();
    let mut crc = 0u32;
    let mut cost = Cost {
        bytes: 0,
        read: Duration::ZERO,
        crc: Duration::ZERO,
        blake3: Duration::ZERO,
        write: Duration::ZERO,
    };
    loop {
        let t = Instant::now();
        let n = read_full(&mut input, &mut buf)?;
        cost.read += t.elapsed();
        if n == 0 {
            break;
        }
        let piece = &buf[..n];
        let t = Instant::now();
        crc = crc32c::crc32c_append(crc, piece);
        cost.crc += t.elapsed();
        let t = Instant::now();
        hasher.update(piece);
        cost.blake3 += t.elapsed();
        let t = Instant::now();
        output.write_all(piece).context("writing the output")?;
        cost.write += t.elapsed();
        cost.bytes += n as u64;
    }
    if cost.bytes == 0 {
        bail!("{} is empty", path.display());
    }
    // Keep the results alive so that the work cannot be optimised away.
    std::hint::black_box((crc, hasher.finalize()));
    Ok(cost)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> anyhow::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the input"),
        }
    }
    Ok(n)
}
