//! What must hold on every run, and the record of what happened.
//!
//! The [`Oracle`] knows the truth the system under test must not contradict: the library's
//! bytes, which channel chunk came from which file offset, how many chunks the fan-out dropped
//! for each viewer by its policy. Clients report what reached their sinks; every mismatch is a
//! [`Violation`] that fails the run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chunkcast_protocol::Chunk;

use crate::library::Library;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A completed download differs from the library's file.
    DownloadMismatch {
        /// The client.
        client: u32,
        /// The file.
        path: String,
        /// How it differs.
        detail: String,
    },
    /// A chunk whose payload is not the source's bytes reached a sink.
    CorruptChunk {
        /// The client.
        client: u32,
        /// The file or channel.
        source: String,
        /// The chunk's seq.
        seq: u64,
    },
    /// A viewer saw a gap in `seq` that the fan-out's policy did not make (or a repeat).
    OutOfOrder {
        /// The client.
        client: u32,
        /// The channel.
        channel: String,
        /// The seq expected.
        expected: u64,
        /// The seq received.
        got: u64,
        /// Chunks the fan-out dropped for this viewer by its policy.
        dropped: u64,
    },
    /// A viewer on a good path was disconnected as lagging, or a slow video viewer was handed
    /// a group without its keyframe.
    SlowViewerPolicy {
        /// The client.
        client: u32,
        /// What went wrong.
        detail: String,
    },
    /// A listing that is not the library.
    Catalog {
        /// The client.
        client: u32,
        /// What was listed.
        detail: String,
    },
    /// A connection ended by an idle timeout on a network that loses nothing: a peer that
    /// was never silent was taken for a silent one.
    TimedOut {
        /// The client.
        client: u32,
        /// Which connection, and how.
        detail: String,
    },
    /// The bytes held by the whole system exceeded the cap.
    Memory {
        /// When.
        at: Duration,
        /// Bytes held.
        held: usize,
        /// The cap.
        cap: usize,
    },
    /// A client with a request or stream outstanding saw neither progress nor failure for
    /// longer than allowed.
    Stuck {
        /// The client.
        client: u32,
        /// What it waits for.
        what: String,
        /// Since when.
        since: Duration,
        /// When it was noticed.
        at: Duration,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DownloadMismatch {
                client,
                path,
                detail,
            } => write!(f, "client {client}: download of {path} differs: {detail}"),
            Self::CorruptChunk {
                client,
                source,
                seq,
            } => write!(
                f,
                "client {client}: chunk {seq} of {source} reached a sink corrupted"
            ),
            Self::OutOfOrder {
                client,
                channel,
                expected,
                got,
                dropped,
            } => write!(
                f,
                "client {client}: {channel}: expected seq {expected}, got {got} ({dropped} dropped by the fan-out)"
            ),
            Self::SlowViewerPolicy { client, detail }
            | Self::TimedOut { client, detail }
            | Self::Catalog { client, detail } => {
                write!(f, "client {client}: {detail}")
            }
            Self::Memory { at, held, cap } => {
                write!(f, "at {at:?}: {held} bytes held, over the cap of {cap}")
            }
            Self::Stuck {
                client,
                what,
                since,
                at,
            } => write!(
                f,
                "client {client}: stuck on {what}: no progress from {since:?} to {at:?}"
            ),
        }
    }
}

/// Counts for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Downloads verified byte for byte.
    pub downloads_completed: u64,
    /// Downloads that ended in an error (connection lost, stream closed, refused).
    pub downloads_failed: u64,
    /// Realtime plays that reached the end of their stream.
    pub plays_completed: u64,
    /// Units played (audio blocks, video frames).
    pub units_played: u64,
    /// Chunks that reached a sink (checked against the source).
    pub chunks_delivered: u64,
    /// Payload bytes of those chunks.
    pub bytes_delivered: u64,
    /// Chunks published into channels.
    pub chunks_published: u64,
    /// Connections opened by clients.
    pub connections: u64,
    /// Connections that ended in an error.
    pub connection_errors: u64,
    /// Frames refused by chunkcast's own CRC32C (corruption that slipped past the transport).
    pub crc_caught: u64,
    /// Viewers disconnected by the fan-out as lagging.
    pub lagged: u64,
    /// Chunks the fan-out dropped for viewers by its policy.
    pub fanout_drops: u64,
    /// Answers that did not match their request (an `OPENED` altered on the way), given up.
    pub bad_answers: u64,
    /// Downloads resumed from the bytes an earlier connection delivered.
    pub resumed: u64,
    /// Catalog listings received whole (every page put together).
    pub listings: u64,
    /// Requests the client application gave up on, unanswered after [`REQUEST_TIMEOUT`].
    ///
    /// [`REQUEST_TIMEOUT`]: crate::client::REQUEST_TIMEOUT
    pub request_timeouts: u64,
}

/// The truth and the record.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Channel chunk → (file id, file offset) of the publisher's chunk it was made from.
    live: BTreeMap<(String, u64), (usize, u64)>,
    /// (connection, stream) of a viewer → chunks the fan-out dropped for it.
    drops: BTreeMap<(u64, u32), u64>,
    /// (connection, stream, seq) of a chunk sent to a viewer → the chunks its queue had
    /// dropped by then. Taken out when the viewer receives it.
    sent: BTreeMap<(u64, u32, u64), u64>,
    /// (connection, stream) of a viewer → the channel (hub) the server serves it from.
    hubs: BTreeMap<(u64, u32), String>,
    violations: Vec<Violation>,
    /// What happened.
    pub counts: Counts,
    /// Sabotage for the invariant tests: flip a bit in every Nth chunk before it reaches a
    /// sink, as a client that skipped the CRC check would let through.
    pub sabotage_every: Option<u64>,
    /// How client connections ended, by the machine's error.
    pub closes: BTreeMap<String, u64>,
}

impl Oracle {
    /// An oracle with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client connection ended with `why` (the machine's error, its kind only).
    pub fn closed(&mut self, why: &str) {
        *self.closes.entry(why.to_owned()).or_default() += 1;
    }

    /// Records a broken invariant.
    pub fn violate(&mut self, v: Violation) {
        self.violations.push(v);
    }

    /// Every violation so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The server fanned out a chunk of `channel` made from `file`'s bytes at `offset`.
    pub fn published(&mut self, channel: &str, seq: u64, file: usize, offset: u64) {
        self.counts.chunks_published += 1;
        self.live.insert((channel.to_owned(), seq), (file, offset));
    }

    /// The fan-out has dropped `drops` chunks in all for the viewer on (`conn`, `stream`).
    pub fn viewer_drops(&mut self, conn: u64, stream: u32, drops: u64) {
        let d = self.drops.entry((conn, stream)).or_default();
        self.counts.fanout_drops += drops.saturating_sub(*d);
        *d = drops;
    }

    /// The server serves the viewer on (`conn`, `stream`) from `hub` (a call's leg has a name
    /// of its own).
    pub fn subscribed(&mut self, conn: u64, stream: u32, hub: &str) {
        self.hubs.insert((conn, stream), hub.to_owned());
    }

    /// The hub a viewer is served from.
    pub fn hub_of(&self, conn: u64, stream: u32) -> Option<&str> {
        self.hubs.get(&(conn, stream)).map(String::as_str)
    }

    /// Chunks the fan-out dropped for a viewer so far.
    pub fn drops_for(&self, conn: u64, stream: u32) -> u64 {
        self.drops.get(&(conn, stream)).copied().unwrap_or(0)
    }

    /// The server sent chunk `seq` to the viewer on (`conn`, `stream`), whose queue had
    /// dropped `drops` chunks by then.
    pub fn sent(&mut self, conn: u64, stream: u32, seq: u64, drops: u64) {
        self.sent.insert((conn, stream, seq), drops);
    }

    /// The chunks a viewer's queue had dropped when chunk `seq` left it: the drops that may
    /// explain a gap before it (a later drop cannot, although a slow reader may only see the
    /// chunk after it).
    pub fn drops_before(&mut self, conn: u64, stream: u32, seq: u64) -> u64 {
        self.sent
            .remove(&(conn, stream, seq))
            .unwrap_or_else(|| self.drops_for(conn, stream))
    }

    /// Applies the sabotage, if any, to a chunk about to reach a sink.
    pub fn tamper(&mut self, chunk: &mut Chunk) {
        let Some(every) = self.sabotage_every else {
            return;
        };
        if chunk.payload.is_empty() || (self.counts.chunks_delivered + 1) % every != 0 {
            return;
        }
        let mut p = chunk.payload.to_vec();
        p[0] ^= 0x80;
        chunk.payload = p.into();
    }

    /// A chunk of library file `file` reached client `client`'s sink: its payload must be the
    /// file's bytes at its offset.
    pub fn file_chunk(&mut self, library: &Library, client: u32, file: usize, chunk: &Chunk) {
        let f = library.file(file);
        let ok = usize::try_from(chunk.offset)
            .ok()
            .and_then(|at| f.data.get(at..at + chunk.payload.len()))
            .is_some_and(|want| want == &chunk.payload[..]);
        self.delivered(chunk);
        if !ok {
            self.violate(Violation::CorruptChunk {
                client,
                source: f.name.clone(),
                seq: chunk.seq,
            });
        }
    }

    /// A chunk of `channel` reached a viewer's sink: its payload must be the bytes of the file
    /// its publisher cut it from.
    pub fn live_chunk(&mut self, library: &Library, client: u32, channel: &str, chunk: &Chunk) {
        let ok = match self.live.get(&(channel.to_owned(), chunk.seq)) {
            Some(&(file, offset)) => usize::try_from(offset)
                .ok()
                .and_then(|at| library.file(file).data.get(at..at + chunk.payload.len()))
                .is_some_and(|want| want == &chunk.payload[..]),
            None => false,
        };
        self.delivered(chunk);
        if !ok {
            self.violate(Violation::CorruptChunk {
                client,
                source: channel.to_owned(),
                seq: chunk.seq,
            });
        }
    }

    fn delivered(&mut self, chunk: &Chunk) {
        self.counts.chunks_delivered += 1;
        self.counts.bytes_delivered += chunk.payload.len() as u64;
    }

    /// A download finished: `got` must be the file.
    pub fn download(&mut self, library: &Library, client: u32, file: usize, got: &[u8]) {
        let f = library.file(file);
        if got == &f.data[..] {
            self.counts.downloads_completed += 1;
            return;
        }
        let at = got
            .iter()
            .zip(f.data.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(f.data.len()));
        self.violate(Violation::DownloadMismatch {
            client,
            path: f.name.clone(),
            detail: format!(
                "{} bytes, the file has {}; first difference at byte {at}",
                got.len(),
                f.data.len()
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chunkcast_protocol::{ChunkFlags, StreamId};

    use super::*;
    use crate::rng;

    fn lib() -> Library {
        Library::generate(&mut rng::derive(1, "library"))
    }

    #[test]
    fn a_download_that_differs_by_one_bit_is_a_violation() {
        let lib = lib();
        let mut o = Oracle::new();
        let mut got = lib.file(0).data.to_vec();
        o.download(&lib, 1, 0, &got);
        assert!(o.violations().is_empty());
        got[1000] ^= 4;
        o.download(&lib, 1, 0, &got);
        assert!(matches!(
            &o.violations()[0],
            Violation::DownloadMismatch { detail, .. } if detail.contains("byte 1000")
        ));
        o.download(&lib, 1, 0, &got[..10]);
        assert_eq!(o.violations().len(), 2, "a short download too");
    }

    #[test]
    fn a_chunk_that_is_not_its_source_is_a_violation() {
        let lib = lib();
        let mut o = Oracle::new();
        let data = lib.file(0).data.slice(100..200);
        let good = Chunk::new(StreamId(1), 3, 100, 0, 0, ChunkFlags::empty(), data);
        o.file_chunk(&lib, 1, 0, &good);
        assert!(o.violations().is_empty());
        let mut bad = good.clone();
        o.sabotage_every = Some(1);
        o.tamper(&mut bad);
        o.file_chunk(&lib, 1, 0, &bad);
        assert_eq!(o.violations().len(), 1);
        let wrong_place = Chunk {
            offset: 101,
            ..good
        };
        o.file_chunk(&lib, 1, 0, &wrong_place);
        assert_eq!(o.violations().len(), 2);
    }

    #[test]
    fn a_live_chunk_is_checked_against_the_file_its_publisher_cut() {
        let lib = lib();
        let mut o = Oracle::new();
        o.published("live/a", 7, 2, 50);
        let payload = lib.file(2).data.slice(50..90);
        let c = Chunk::new(StreamId(9), 7, 0, 0, 0, ChunkFlags::empty(), payload);
        o.live_chunk(&lib, 1, "live/a", &c);
        assert!(o.violations().is_empty());
        o.live_chunk(&lib, 1, "live/b", &c);
        let other = Chunk {
            payload: Bytes::from_static(b"nope"),
            ..c
        };
        o.live_chunk(&lib, 1, "live/a", &other);
        assert_eq!(o.violations().len(), 2);
    }
}
