//! Printing results: a fixed-width table row, or one JSON object per line with stable keys.

use std::fmt::Write;

use super::Measurement;

/// The table's header line (the rows of [`table_row`] line up under it).
pub const TABLE_HEADER: &str = "TRANSPORT   CHUNK     MB/s  Gbit/s   chunks/s   gap p50    p90    p99     max (µs)  first(ms)  CPU s/GB  cores  peak MB  files  verified";

/// One result as a row under [`TABLE_HEADER`].
pub fn table_row(m: &Measurement) -> String {
    let us = |q: f64| m.gaps.quantile(q).as_secs_f64() * 1e6;
    let opt = |v: Option<f64>, prec: usize| match v {
        Some(v) if v.is_finite() => format!("{v:.prec$}"),
        _ => "-".to_owned(),
    };
    let transport = if m.compress {
        format!("{}+lz4", m.transport.name())
    } else {
        m.transport.name().to_owned()
    };
    format!(
        "{:<9} {:>7} {:>8.1} {:>7.2} {:>10.0} {:>9.1} {:>6.1} {:>6.1} {:>8.1}  {:>9.2} {:>9} {:>6} {:>8} {:>6}  {}",
        transport,
        human_size(m.chunk_size),
        m.mb_per_s(),
        m.mb_per_s() * 8e-3,
        m.chunks_per_s(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(1.0),
        m.first_chunk.quantile(0.5).as_secs_f64() * 1e3,
        opt(m.cpu_s_per_gb(), 2),
        opt(m.cores(), 2),
        opt(m.peak_rss.map(|b| b as f64 / 1e6), 0),
        m.files,
        if m.verified { "yes" } else { "NO" },
    )
}

/// One result as a one-line JSON object. Keys are stable (scripts read them by name; new
/// keys may be appended). Times are in the unit their key names; unknown values are `null`.
pub fn json_line(m: &Measurement) -> String {
    let mut s = String::with_capacity(640);
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "null".to_owned()
        }
    };
    let opt = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), num);
    let us = |q: f64| num(m.gaps.quantile(q).as_secs_f64() * 1e6);
    let ms = |q: f64| num(m.first_chunk.quantile(q).as_secs_f64() * 1e3);
    let _ = write!(
        s,
        "{{\"transport\":\"{}\",\"chunk_size\":{},\"compress\":\"{}\",\"connections\":{},\"server\":\"{}\"",
        m.transport.name(),
        m.chunk_size,
        if m.compress { "lz4" } else { "none" },
        m.connections,
        if m.embedded { "embedded" } else { "remote" },
    );
    let _ = write!(
        s,
        ",\"files\":{},\"bytes\":{},\"chunks\":{},\"seconds\":{},\"mb_per_s\":{},\"gbit_per_s\":{},\"chunks_per_s\":{}",
        m.files,
        m.bytes,
        m.chunks,
        num(m.elapsed.as_secs_f64()),
        num(m.mb_per_s()),
        num(m.mb_per_s() * 8e-3),
        num(m.chunks_per_s()),
    );
    let _ = write!(
        s,
        ",\"gap_us_p50\":{},\"gap_us_p90\":{},\"gap_us_p99\":{},\"gap_us_max\":{},\"first_chunk_ms_p50\":{},\"first_chunk_ms_max\":{}",
        us(0.5),
        us(0.9),
        us(0.99),
        us(1.0),
        ms(0.5),
        ms(1.0),
    );
    let _ = write!(
        s,
        ",\"cpu_s\":{},\"cpu_s_per_gb\":{},\"cores\":{},\"peak_rss_mb\":{},\"verified\":{}}}",
        opt(m.cpu.map(|c| c.as_secs_f64())),
        opt(m.cpu_s_per_gb()),
        opt(m.cores()),
        opt(m.peak_rss.map(|b| b as f64 / 1e6)),
        m.verified,
    );
    s
}

/// `1024` → `1KiB`, `65536` → `64KiB`, `1048576` → `1MiB`; other sizes in bytes.
pub(crate) fn human_size(n: u32) -> String {
    match n {
        0 => "default".to_owned(),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::Histogram;
    use chunkcast_client::url::Scheme;

    fn sample() -> Measurement {
        let mut gaps = Histogram::default();
        gaps.record(Duration::from_micros(20));
        let mut first_chunk = Histogram::default();
        first_chunk.record(Duration::from_millis(3));
        Measurement {
            transport: Scheme::Quic,
            chunk_size: 64 << 10,
            compress: false,
            connections: 1,
            embedded: true,
            files: 2,
            bytes: 2_000_000,
            chunks: 31,
            elapsed: Duration::from_millis(10),
            gaps,
            first_chunk,
            cpu: None,
            peak_rss: Some(50_000_000),
            verified: true,
        }
    }

    #[test]
    fn json_has_stable_keys_and_nulls() {
        let j = json_line(&sample());
        assert!(j.starts_with("{\"transport\":\"quic\",\"chunk_size\":65536,"));
        assert!(j.contains("\"mb_per_s\":200.000"));
        assert!(j.contains("\"cpu_s\":null"));
        assert!(j.ends_with("\"verified\":true}"));
        assert!(!j.contains('\n'));
    }

    #[test]
    fn rows_and_sizes_format() {
        let row = table_row(&sample());
        assert!(row.starts_with("quic"));
        assert!(row.contains("64KiB"));
        assert_eq!(human_size(1 << 20), "1MiB");
        assert_eq!(human_size(1000), "1000B");
    }
}
