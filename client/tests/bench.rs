//! `chunkcast bench` as a behaviour: a tiny sweep against the embedded server yields one
//! verified, non-empty result per transport, and its JSON lines carry the documented keys.
//! No timing is asserted.

use std::time::Duration;

use chunkcast::bench::{self, Options};
use chunkcast_client::url::Scheme;

/// The sweep is bounded: a hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(60);

const KEYS: [&str; 23] = [
    "transport",
    "chunk_size",
    "compress",
    "connections",
    "server",
    "files",
    "bytes",
    "chunks",
    "seconds",
    "mb_per_s",
    "gbit_per_s",
    "chunks_per_s",
    "gap_us_p50",
    "gap_us_p90",
    "gap_us_p99",
    "gap_us_max",
    "first_chunk_ms_p50",
    "first_chunk_ms_max",
    "cpu_s",
    "cpu_s_per_gb",
    "cores",
    "peak_rss_mb",
    "verified",
];

/// The value of `"key":` in a one-line JSON object, up to the next `,` or `}`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let at = line
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing in {line}"))
        + pat.len();
    let rest = &line[at..];
    let end = rest.find([',', '}']).expect("value ends");
    rest[..end].trim_matches('"')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_sweep_reports_verified_bytes_over_both_transports() {
    let mut opts = Options::embedded(
        2_000_000,
        vec![Scheme::Tcp, Scheme::Quic],
        Duration::from_millis(200),
    );
    opts.chunk_sizes = vec![64 << 10];
    let mut lines = Vec::new();
    let sweep = tokio::time::timeout(
        LIMIT,
        bench::sweep(&opts, |m| lines.push(bench::json_line(m))),
    )
    .await
    .expect("the sweep finishes in time")
    .expect("the sweep succeeds");

    assert_eq!(sweep.file_len, 2_000_000);
    assert_eq!(sweep.results.len(), 2);
    assert_eq!(lines.len(), 2);
    for (line, transport) in lines.iter().zip(["tcp", "quic"]) {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        assert!(!line.contains('\n'));
        for key in KEYS {
            field(line, key);
        }
        assert_eq!(line.matches("\":").count(), KEYS.len(), "{line}");
        assert_eq!(field(line, "transport"), transport);
        assert_eq!(field(line, "chunk_size"), "65536");
        assert_eq!(field(line, "server"), "embedded");
        assert_eq!(field(line, "verified"), "true");
        let files: u64 = field(line, "files").parse().expect("files is a number");
        let bytes: u64 = field(line, "bytes").parse().expect("bytes is a number");
        assert!(files >= 1);
        assert_eq!(bytes, files * 2_000_000, "whole files only");
        let chunks: u64 = field(line, "chunks").parse().unwrap();
        assert_eq!(chunks, files * 2_000_000u64.div_ceil(65_536));
        let mbps: f64 = field(line, "mb_per_s")
            .parse()
            .expect("mb_per_s is a number");
        assert!(mbps > 0.0);
    }
    let row = bench::table_row(&sweep.results[0]);
    assert!(row.starts_with("tcp") && row.ends_with("yes"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plot_is_an_svg_with_one_line_per_transport() {
    let mut opts = Options::embedded(300_000, vec![Scheme::Tcp, Scheme::Quic], Duration::ZERO);
    opts.chunk_sizes = vec![16 << 10, 64 << 10];
    let sweep = tokio::time::timeout(LIMIT, bench::sweep(&opts, |_| {}))
        .await
        .expect("the sweep finishes in time")
        .expect("the sweep succeeds");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.svg");
    bench::svg(&path, &sweep.results, &[("tcp".into(), 100.0)]).expect("plot drawn");
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"));
    let text = |t: &str| svg.lines().any(|l| l.trim() == t);
    assert!(
        text("tcp") && text("quic"),
        "the legend names both transports"
    );
    assert!(text("tcp ceiling (100 MB/s)"));
}
