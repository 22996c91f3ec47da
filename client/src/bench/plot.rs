//! `--plot`: throughput against chunk size, one line per transport, ceilings as dashed lines.

use std::path::Path;

use plotters::prelude::*;

use super::Measurement;
use chunkcast_client::error::ClientError;
use chunkcast_client::url::Scheme;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;

fn colour(name: &str) -> RGBColor {
    match name {
        n if n.starts_with("tcps") || n.starts_with("tls") => RGBColor(0x2c, 0xa0, 0x2c),
        n if n.starts_with("tcp") || n.starts_with("iperf") => RGBColor(0x1f, 0x77, 0xb4),
        n if n.starts_with("quic") || n.starts_with("quinn") => RGBColor(0xd6, 0x27, 0x28),
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

/// Draws MB/s against chunk size (log scale) to the SVG file `path`: one line per transport
/// in `results`, and each `(name, MB/s)` ceiling as a dashed horizontal line.
pub fn svg(
    path: &Path,
    results: &[Measurement],
    ceilings: &[(String, f64)],
) -> Result<(), ClientError> {
    draw(path, results, ceilings)
        .map_err(|e| ClientError::Usage(format!("drawing {}: {e}", path.display())))
}

fn draw(
    path: &Path,
    results: &[Measurement],
    ceilings: &[(String, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let kib = |m: &Measurement| f64::from(m.chunk_size.max(1)) / 1024.0;
    let (lo, hi) = results
        .iter()
        .map(kib)
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (1.0, 1024.0) };
    let (x0, x1) = (lo / 1.5, hi * 1.5);
    let top = results
        .iter()
        .map(Measurement::mb_per_s)
        .chain(ceilings.iter().map(|c| c.1))
        .fold(1.0, f64::max)
        * 1.12;

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let connections = results.first().map_or(1, |m| m.connections);
    let caption = format!(
        "chunkcast bench: download throughput, {connections} connection{}",
        if connections == 1 { "" } else { "s" }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("chunk size (KiB, log scale)")
        .y_desc("MB/s (10^6 bytes/s)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;

    for scheme in [Scheme::Tcp, Scheme::Tcps, Scheme::Quic] {
        let mut points: Vec<(f64, f64)> = results
            .iter()
            .filter(|m| m.transport == scheme)
            .map(|m| (kib(m), m.mb_per_s()))
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = colour(scheme.name());
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
            .label(scheme.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
    }
    for (name, mbps) in ceilings {
        let c = colour(name);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, *mbps), (x1, *mbps)],
                8,
                5,
                c.stroke_width(1),
            ))?
            .label(format!("{name} ceiling ({mbps:.0} MB/s)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
