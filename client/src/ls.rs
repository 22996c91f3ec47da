//! `chunkcast ls`: the catalog as a table.

use chunkcast_protocol::wire::Entry;

/// Formats entries as an aligned table: path, kind, size, duration, codec, and the server's
/// note when any entry has one (why a file is served as bytes, or what is damaged in it);
/// live channels get their viewer count in place of the size and duration.
pub fn table(entries: &[Entry]) -> String {
    if entries.iter().any(|e| e.path.starts_with("live/")) {
        return live_table(entries);
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.path.clone(),
                e.codec.kind().name().to_owned(),
                e.size.map(human_bytes).unwrap_or_else(|| "-".into()),
                e.duration_us
                    .filter(|d| *d > 0)
                    .map(|d| format!("{:.2}s", d as f64 / 1e6))
                    .unwrap_or_else(|| "-".into()),
                e.codec.summary(),
                e.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut head = ["PATH", "KIND", "SIZE", "DURATION", "CODEC", "NOTE"].map(str::to_owned);
    if entries.iter().all(|e| e.note.is_none()) {
        head[5].clear();
    }
    let mut widths = head.each_ref().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as B, KB, MB or GB (powers of 1000, as network rates are).
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} KB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

fn live_table(entries: &[Entry]) -> String {
    let width = entries
        .iter()
        .map(|e| e.path.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!("{:<width$}  {:>7}  CODEC\n", "CHANNEL", "VIEWERS");
    for e in entries {
        let codec = if e.codec.kind() == chunkcast_protocol::MediaKind::Bytes {
            "(no publisher yet)".to_owned()
        } else {
            e.codec.summary()
        };
        out.push_str(&format!("{:<width$}  {:>7}  {codec}\n", e.path, e.viewers));
    }
    out
}

#[cfg(test)]
mod tests {
    use chunkcast_protocol::Codec;

    use super::*;

    fn entry(path: &str, viewers: u32) -> Entry {
        Entry {
            path: path.into(),
            codec: Codec::Bytes,
            size: Some(1500),
            duration_us: None,
            viewers,
            note: None,
        }
    }

    #[test]
    fn a_note_gets_its_column() {
        let plain = table(&[entry("a.bin", 0)]);
        assert!(!plain.contains("NOTE"), "{plain}");
        let mut bad = entry("x.png", 0);
        bad.note = Some("served as bytes: corrupt png: CRC error".into());
        let t = table(&[entry("a.bin", 0), bad]);
        let line = t.lines().find(|l| l.starts_with("x.png")).unwrap();
        assert!(
            line.contains("bytes") && line.ends_with("served as bytes: corrupt png: CRC error"),
            "{t}"
        );
    }

    #[test]
    fn files_show_sizes_and_channels_show_viewers() {
        let t = table(&[entry("a.bin", 0)]);
        assert!(t.starts_with("PATH") && t.contains("1.5 KB"), "{t}");
        let t = table(&[entry("live/cam", 7)]);
        assert!(
            t.starts_with("CHANNEL") && t.contains("      7  (no publisher yet)"),
            "{t}"
        );
    }
}
