//! What a playback did: [`PlayReport`], printed as a table or as one line of JSON.

use std::fmt;
use std::time::Duration;

use chunkcast_media::playout::Stats;
use chunkcast_protocol::Codec;

use crate::url::Scheme;

/// What a playback did.
#[derive(Debug, Clone)]
pub struct PlayReport {
    /// The transport, when known (set by [`run`](super::run); [`play`](super::play) only
    /// sees a session).
    pub transport: Option<Scheme>,
    /// What was played.
    pub codec: Codec,
    /// The playout buffer's statistics.
    pub stats: Stats,
    /// Units played (frames, audio blocks, or the image).
    pub played: u64,
    /// From the open request to the first unit played.
    pub startup_delay: Option<Duration>,
    /// From the open request to the end of the last unit played (or to the interruption).
    pub elapsed: Duration,
    /// Whether playback was cancelled before the stream ended.
    pub interrupted: bool,
    /// Units the assembler dropped (malformed or over the size bound).
    pub dropped_units: u64,
    /// Times a live channel's publisher was lost and playback waited for a new one.
    pub publisher_gaps: u32,
    /// How long playback stood still in those gaps: from the end of the last unit played
    /// before each loss to the first unit played after it (or to the end).
    pub gap_time: Duration,
    /// The error that ended playback, if one did.
    pub error: Option<String>,
}

impl PlayReport {
    /// One line of JSON: `transport`, `codec`, `interrupted`, `elapsed_us`, `dropped_units`,
    /// `publisher_gaps`, `gap_time_us`, `error` (`null`, or the message), then every key of
    /// [`Stats::to_json`] (durations in integer microseconds).
    pub fn to_json(&self) -> String {
        let transport = self
            .transport
            .map_or_else(|| "null".to_owned(), |s| json_string(s.name()));
        let stats = self.stats.to_json();
        let stats = stats.strip_prefix('{').unwrap_or(&stats);
        format!(
            "{{\"transport\":{transport},\"codec\":{},\"interrupted\":{},\"elapsed_us\":{},\"dropped_units\":{},\"publisher_gaps\":{},\"gap_time_us\":{},\"error\":{},{stats}",
            json_string(&self.codec.summary()),
            self.interrupted,
            self.elapsed.as_micros(),
            self.dropped_units,
            self.publisher_gaps,
            self.gap_time.as_micros(),
            self.error
                .as_deref()
                .map_or_else(|| "null".to_owned(), json_string),
        )
    }
}

impl fmt::Display for PlayReport {
    /// A table: transport, stream and elapsed time, then [`Stats`]' rows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = self.transport.map_or("-", Scheme::name);
        writeln!(f, "{:<15} {transport}", "transport")?;
        writeln!(f, "{:<15} {}", "stream", self.codec.summary())?;
        let how = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        writeln!(
            f,
            "{:<15} {:.3} s{how}",
            "elapsed",
            self.elapsed.as_secs_f64()
        )?;
        if self.dropped_units > 0 {
            writeln!(f, "{:<15} {}", "dropped units", self.dropped_units)?;
        }
        if self.publisher_gaps > 0 {
            writeln!(
                f,
                "{:<15} {} ({:.3} s without a publisher)",
                "publisher gaps",
                self.publisher_gaps,
                self.gap_time.as_secs_f64()
            )?;
        }
        if let Some(error) = &self.error {
            writeln!(f, "{:<15} {error}", "ended by")?;
        }
        write!(f, "{}", self.stats)
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_line_with_transport_first() {
        let report = PlayReport {
            transport: Some(Scheme::Quic),
            codec: Codec::Bytes,
            stats: Stats::default(),
            played: 0,
            startup_delay: None,
            elapsed: Duration::from_millis(5),
            interrupted: true,
            dropped_units: 0,
            publisher_gaps: 1,
            gap_time: Duration::from_millis(1500),
            error: Some("x \"y\"".into()),
        };
        let json = report.to_json();
        assert!(!json.contains('\n'));
        assert!(
            json.starts_with(
                "{\"transport\":\"quic\",\"codec\":\"bytes\",\"interrupted\":true,\"elapsed_us\":5000,\"dropped_units\":0,\"publisher_gaps\":1,\"gap_time_us\":1500000,\"error\":\"x \\\"y\\\"\",\"startup_delay_us\":null,"
            ),
            "{json}"
        );
        assert!(json.ends_with('}'));
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
        let table = report.to_string();
        assert!(table.contains("(interrupted)"));
        assert!(
            table.contains("publisher gaps  1 (1.500 s without a publisher)"),
            "{table}"
        );
    }
}
