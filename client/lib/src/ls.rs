//! `chunkcast ls`: the catalog as a table or as JSON.

use chunkcast_protocol::wire::Entry;

use crate::error::ClientError;
use crate::session::Session;

/// Lists `path` on `session`: the entries under a prefix or a directory, the live channels
/// under `live/`, or the one file `path` names.
pub async fn list(session: &Session, path: &str) -> Result<Vec<Entry>, ClientError> {
    let entries = session.list(path).await?;
    let name = path.trim_matches('/');
    if !entries.is_empty() || name.is_empty() || path.ends_with('/') || name == "live" {
        return Ok(entries);
    }
    // A server lists directories: a file's own row is in its directory's listing.
    let parent = name.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut siblings = session.list(parent).await?;
    siblings.retain(|e| e.path == name);
    Ok(siblings)
}

/// What `ls` prints for `path`: [`table`], or a line saying there is nothing.
pub fn table_for(path: &str, entries: &[Entry]) -> String {
    if !entries.is_empty() {
        return table(entries);
    }
    let name = path.trim_matches('/');
    if name == "live" || name.starts_with("live/") {
        "no live channels\n".to_owned()
    } else if name.is_empty() {
        "no files\n".to_owned()
    } else {
        format!("no files under {name}\n")
    }
}

/// The entries as one JSON array, one object per entry with stable field names: `path`,
/// `kind` (audio, video, image, bytes), `codec` (as in the table), `size_bytes`,
/// `duration_us` (`null` when unknown) and `viewers` (live channels; 0 for files).
pub fn json(entries: &[Entry]) -> String {
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "path": e.path,
                "kind": e.codec.kind().name(),
                "codec": e.codec.summary(),
                "size_bytes": e.size,
                "duration_us": e.duration_us.filter(|d| *d > 0),
                "viewers": e.viewers,
            })
        })
        .collect();
    let mut out = serde_json::Value::Array(rows).to_string();
    out.push('\n');
    out
}

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

/// Bytes as B, kB, MB or GB (powers of 1000, as network rates are): the one convention of
/// every size and rate the client prints. It is indicatif's, so that `ls`, `get`'s progress
/// bar (its `decimal_*` fields) and `get`'s summary (MB/s) agree.
pub fn human_bytes(n: u64) -> String {
    indicatif::DecimalBytes(n).to_string()
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
    fn sizes_are_decimal() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_920_044), "1.92 MB");
        assert_eq!(human_bytes(50_000_000_000), "50.00 GB");
    }

    #[test]
    fn nothing_listed_says_so_and_json_keeps_its_field_names() {
        assert_eq!(table_for("live/", &[]), "no live channels\n");
        assert_eq!(table_for("", &[]), "no files\n");
        assert_eq!(table_for("sub/", &[]), "no files under sub\n");
        assert_eq!(json(&[]), "[]\n");
        let j = json(&[entry("a \"b\".bin", 0)]);
        assert_eq!(
            j,
            "[{\"codec\":\"bytes\",\"duration_us\":null,\"kind\":\"bytes\",\
             \"path\":\"a \\\"b\\\".bin\",\"size_bytes\":1500,\"viewers\":0}]\n"
        );
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
        assert!(t.starts_with("PATH") && t.contains("1.50 kB"), "{t}");
        let t = table(&[entry("live/cam", 7)]);
        assert!(
            t.starts_with("CHANNEL") && t.contains("      7  (no publisher yet)"),
            "{t}"
        );
    }
}
