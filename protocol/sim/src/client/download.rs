//! The downloader: opens library files one after another, reassembles them, checks the
//! digest, and hands the result to the oracle to compare with the library.

use std::time::Duration;

use bytes::BytesMut;
use chunkcast_media::{Expect, Reassembler};
use chunkcast_protocol::conn::client::{ClientEvent, OpenRequest};
use chunkcast_protocol::wire::{FileDigest, Mode, Resume};
use chunkcast_protocol::{Chunk, StreamId, compress};
use rand::Rng;

use super::{Link, Part, REQUEST_TIMEOUT};
use crate::World;
use crate::invariants::Violation;

/// Bound of a download's reorder buffer: far above what an in-order transport needs.
const MAX_PENDING: usize = 1 << 20;

struct Current {
    file: usize,
    request: u32,
    stream: StreamId,
    reassembler: Option<Reassembler>,
    got: BytesMut,
    at_end: bool,
    digest: Option<[u8; 32]>,
    progress: Duration,
    asked: Duration,
}

/// Lists the library on each connection, then downloads files from `files`, one at a time.
pub struct Download {
    files: Vec<usize>,
    next_at: Duration,
    current: Option<Current>,
    listing: Option<u32>,
    /// A download the connection's end cut short: the next request resumes it from the bytes
    /// already received (`Resume::Offset`, as `chunkcast get --resume` does).
    resume: Option<(usize, BytesMut)>,
}

impl Download {
    /// A downloader picking among `files`.
    pub fn new(files: Vec<usize>) -> Self {
        Self {
            files,
            next_at: Duration::ZERO,
            current: None,
            listing: None,
            resume: None,
        }
    }

    fn fail(&mut self, w: &mut World, c: &mut Link<'_>) {
        if let Some(cur) = self.current.take() {
            w.oracle.counts.downloads_failed += 1;
            w.trace.event(
                w.now,
                c.id,
                "download-failed",
                cur.file as u64,
                cur.got.len() as u64,
            );
            c.machine.cancel(cur.stream);
        }
        self.next_at = w.now + Duration::from_millis(c.rng.random_range(0..1_000));
    }

    fn try_finish(&mut self, w: &mut World, c: &mut Link<'_>) {
        let Some(cur) = &mut self.current else { return };
        let Some(re) = &cur.reassembler else { return };
        if !re.is_complete() || (cur.at_end && cur.digest.is_none()) {
            return;
        }
        let Some(cur) = self.current.take() else {
            return;
        };
        let Some(mut re) = cur.reassembler else {
            return;
        };
        if let Some(d) = cur.digest {
            re.expect_digest(d);
        }
        while let Some((_, b)) = re.poll_write() {
            let _ = b;
        }
        match re.finish() {
            Ok(_) => w.oracle.download(&w.library, c.id, cur.file, &cur.got),
            // Control frames carry no CRC: a corruption that slipped past the transport may
            // have altered what OPENED or DIGEST announced. Caught, typed: a failed download.
            Err(_) if w.slipped(c.id) => w.oracle.counts.downloads_failed += 1,
            // Every chunk passed chunkcast's CRC and the transport delivered every announcement
            // intact: a reassembly error is a server or packetizer bug.
            Err(e) => w.oracle.violate(Violation::DownloadMismatch {
                client: c.id,
                path: w.library.file(cur.file).name.clone(),
                detail: e.to_string(),
            }),
        }
        w.trace.event(
            w.now,
            c.id,
            "downloaded",
            cur.file as u64,
            cur.got.len() as u64,
        );
        c.machine.stream_done(cur.stream);
        self.next_at = w.now + Duration::from_millis(c.rng.random_range(0..1_000));
    }
}

impl Part for Download {
    fn connected(&mut self, w: &mut World, c: &mut Link<'_>) {
        self.next_at = self.next_at.max(w.now);
        // The catalog, in pages the client puts together: it must list the library.
        self.listing = c.machine.list("").ok();
    }

    fn event(&mut self, w: &mut World, c: &mut Link<'_>, event: &ClientEvent) {
        if let ClientEvent::Listed { request, entries } = event {
            if Some(*request) == self.listing {
                self.listing = None;
                w.oracle.counts.listings += 1;
                let got: Vec<(&str, Option<u64>)> =
                    entries.iter().map(|e| (e.path.as_str(), e.size)).collect();
                let want: Vec<(&str, Option<u64>)> = w
                    .library
                    .files()
                    .iter()
                    .map(|f| (f.name.as_str(), Some(f.data.len() as u64)))
                    .collect();
                if got != want && !w.slipped(c.id) {
                    w.oracle.violate(Violation::Catalog {
                        client: c.id,
                        detail: format!("listed {got:?}, the library has {want:?}"),
                    });
                }
            }
        }
        let Some(cur) = &mut self.current else { return };
        match event {
            ClientEvent::Opened { request, opened } if *request == cur.request => {
                // The answer must be to the question: where it starts is what was asked. An
                // OPENED altered on the way (control frames carry no CRC) otherwise leaves the
                // reassembler waiting forever, e.g. a flipped bit in `start_seq` makes every
                // chunk look like a duplicate (seed 20508, 10 clients, 30 s).
                let asked = cur.got.len() as u64;
                if opened.start_seq != 0 || opened.start_offset != asked {
                    if !w.slipped(c.id) {
                        w.oracle.violate(Violation::DownloadMismatch {
                            client: c.id,
                            path: w.library.file(cur.file).name.clone(),
                            detail: format!(
                                "asked from byte {asked}, answered from seq {} byte {}",
                                opened.start_seq, opened.start_offset
                            ),
                        });
                    }
                    w.oracle.counts.bad_answers += 1;
                    self.fail(w, c);
                    return;
                }
                let mut expect = Expect::new();
                expect.total_len = opened.total_len;
                expect.chunk_count = opened.chunk_count;
                expect.digest = opened.digest.known();
                expect.max_pending_bytes = MAX_PENDING;
                expect.start_seq = opened.start_seq;
                expect.start_offset = opened.start_offset;
                if opened.start_offset > 0 {
                    let mut prefix = blake3::Hasher::new();
                    prefix.update(&cur.got);
                    expect.prefix = Some(prefix);
                    w.oracle.counts.resumed += 1;
                }
                cur.reassembler = Some(Reassembler::new(expect));
                cur.at_end = opened.digest == FileDigest::AtEnd;
                cur.progress = w.now;
                self.try_finish(w, c);
            }
            ClientEvent::Refused { request, .. } if *request == cur.request => self.fail(w, c),
            ClientEvent::StreamClosed { stream, .. } if *stream == cur.stream => self.fail(w, c),
            ClientEvent::Digest { stream, digest } if *stream == cur.stream => {
                cur.digest = Some(*digest);
                cur.progress = w.now;
                self.try_finish(w, c);
            }
            _ => {}
        }
    }

    fn corrupted(&mut self, w: &mut World, c: &mut Link<'_>, _stream: StreamId) {
        // As `chunkcast get` does: cancel, and open again from the bytes already written.
        if let Some(cur) = &self.current {
            if !cur.got.is_empty() && cur.reassembler.is_some() {
                self.resume = Some((cur.file, cur.got.clone()));
            }
        }
        self.fail(w, c);
    }

    fn owns(&self, stream: StreamId) -> bool {
        self.current.as_ref().is_some_and(|c| c.stream == stream)
    }

    fn chunk(&mut self, w: &mut World, c: &mut Link<'_>, chunk: Chunk) {
        let Some(cur) = &mut self.current else { return };
        let Ok(mut chunk) = compress::decompress(chunk, 1 << 20) else {
            self.fail(w, c);
            return;
        };
        w.oracle.tamper(&mut chunk);
        w.oracle.file_chunk(&w.library, c.id, cur.file, &chunk);
        cur.progress = w.now;
        let Some(re) = &mut cur.reassembler else {
            // Chunks before OPENED: the server sends OPENED first on one byte stream, so its
            // OPENED was altered on the way (only possible past the transport's checksum).
            if w.slipped(c.id) {
                self.fail(w, c);
                return;
            }
            w.oracle.violate(Violation::DownloadMismatch {
                client: c.id,
                path: w.library.file(cur.file).name.clone(),
                detail: format!("chunk {} before OPENED", chunk.seq),
            });
            return;
        };
        if let Err(e) = re.push(chunk) {
            if w.slipped(c.id) {
                self.fail(w, c);
                return;
            }
            w.oracle.violate(Violation::DownloadMismatch {
                client: c.id,
                path: w.library.file(cur.file).name.clone(),
                detail: e.to_string(),
            });
            self.fail(w, c);
            return;
        }
        while let Some((_, b)) = re.poll_write() {
            cur.got.extend_from_slice(&b);
        }
        self.try_finish(w, c);
    }

    fn work(&mut self, w: &mut World, c: &mut Link<'_>) {
        if let Some(cur) = &self.current {
            if cur.reassembler.is_none() && w.now >= cur.asked + REQUEST_TIMEOUT {
                w.oracle.counts.request_timeouts += 1;
                if w.clean {
                    w.oracle.violate(Violation::TimedOut {
                        client: c.id,
                        detail: format!(
                            "download of file {} unanswered for {REQUEST_TIMEOUT:?} on a network that loses nothing",
                            cur.file
                        ),
                    });
                }
                self.fail(w, c);
            }
            return;
        }
        if w.now < self.next_at || self.files.is_empty() {
            return;
        }
        let (file, got) = match self.resume.take() {
            Some((file, got)) => (file, got),
            None => (
                self.files[c.rng.random_range(0..self.files.len())],
                BytesMut::new(),
            ),
        };
        let resume = match got.len() {
            0 => Resume::Start,
            n => Resume::Offset(n as u64),
        };
        let open = OpenRequest {
            path: w.library.file(file).name.clone(),
            mode: Mode::Download,
            resume,
            compress: c.rng.random_bool(0.5),
            raw: c.rng.random_bool(0.2),
            fragment: false,
            header_crc: false,
            chunk_size: [0, 512, 4096, 16384][c.rng.random_range(0..4)],
        };
        match c.machine.open(open) {
            Ok((request, stream)) => {
                w.trace
                    .event(w.now, c.id, "download", file as u64, u64::from(stream.0));
                self.current = Some(Current {
                    file,
                    request,
                    stream,
                    reassembler: None,
                    got,
                    at_end: false,
                    digest: None,
                    progress: w.now,
                    asked: w.now,
                });
            }
            Err(_) => self.next_at = w.now + Duration::from_secs(1),
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match &self.current {
            None => Some(self.next_at),
            Some(cur) if cur.reassembler.is_none() => Some(cur.asked + REQUEST_TIMEOUT),
            Some(_) => None,
        }
    }

    fn closed(&mut self, w: &mut World) {
        if let Some(cur) = self.current.take() {
            w.oracle.counts.downloads_failed += 1;
            // Every byte of `got` passed the CRC and the oracle's check at its offset.
            if !cur.got.is_empty() && cur.reassembler.is_some() {
                self.resume = Some((cur.file, cur.got.clone()));
            }
            w.trace.event(
                w.now,
                0,
                "download-lost",
                cur.file as u64,
                cur.got.len() as u64,
            );
        }
    }

    fn waiting(&self) -> Option<(Duration, String)> {
        self.current
            .as_ref()
            .map(|c| (c.progress, format!("download of file {}", c.file)))
    }

    fn memory(&self) -> usize {
        self.current.as_ref().map_or(0, |c| c.got.len())
    }
}
