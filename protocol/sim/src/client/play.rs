//! The player: realtime streams of audio and video files, put together into media units and
//! played out on virtual time through the playout buffer.

use std::time::Duration;

use bytes::Bytes;
use chunkcast_media::UnitAssembler;
use chunkcast_media::playout::{self, Kind, Output, PlayoutBuffer};
use chunkcast_protocol::conn::client::{ClientEvent, OpenRequest};
use chunkcast_protocol::media::MediaKind;
use chunkcast_protocol::wire::{Mode, Resume};
use chunkcast_protocol::{Chunk, ChunkFlags, StreamId, compress};
use rand::Rng;

use super::{Link, Part, REQUEST_TIMEOUT};
use crate::World;

struct Current {
    file: usize,
    request: u32,
    stream: StreamId,
    units: Option<(UnitAssembler, PlayoutBuffer<Bytes>)>,
    ended: bool,
    wait: Option<Duration>,
    progress: Duration,
    asked: Duration,
}

/// Plays files from `files`, one at a time, in realtime mode.
pub struct Play {
    files: Vec<usize>,
    next_at: Duration,
    current: Option<Current>,
}

impl Play {
    /// A player picking among `files`.
    pub fn new(files: Vec<usize>) -> Self {
        Self {
            files,
            next_at: Duration::ZERO,
            current: None,
        }
    }

    fn end(&mut self, w: &mut World, c: &mut Link<'_>, completed: bool) {
        if let Some(cur) = self.current.take() {
            if completed {
                w.oracle.counts.plays_completed += 1;
                c.machine.stream_done(cur.stream);
            } else {
                c.machine.cancel(cur.stream);
            }
            w.trace.event(
                w.now,
                c.id,
                "play-end",
                cur.file as u64,
                u64::from(completed),
            );
        }
        self.next_at = w.now + Duration::from_millis(c.rng.random_range(0..2_000));
    }

    /// Plays out what is due.
    fn play(&mut self, w: &mut World, c: &mut Link<'_>) {
        let Some(cur) = &mut self.current else { return };
        let Some((_, buffer)) = &mut cur.units else {
            return;
        };
        cur.wait = None;
        loop {
            match buffer.poll(w.clock.now()) {
                Output::Play(_) => w.oracle.counts.units_played += 1,
                Output::Conceal { .. } => {}
                Output::Wait(t) => {
                    cur.wait = Some(w.clock.since_start(t));
                    return;
                }
                Output::Idle => break,
            }
        }
        if cur.ended {
            self.end(w, c, true);
        }
    }
}

impl Part for Play {
    fn connected(&mut self, w: &mut World, _c: &mut Link<'_>) {
        self.next_at = self.next_at.max(w.now);
    }

    fn event(&mut self, w: &mut World, c: &mut Link<'_>, event: &ClientEvent) {
        let Some(cur) = &mut self.current else { return };
        match event {
            ClientEvent::Opened { request, opened } if *request == cur.request => {
                let kind = match opened.codec.kind() {
                    MediaKind::Video => Kind::Video,
                    _ => Kind::Audio,
                };
                let config = playout::Config {
                    buffer: Duration::from_millis(300),
                    kind,
                    ..playout::Config::default()
                };
                cur.units = Some((
                    UnitAssembler::new(opened.codec, 1 << 20),
                    PlayoutBuffer::new(config),
                ));
                cur.progress = w.now;
            }
            ClientEvent::Refused { request, .. } if *request == cur.request => {
                self.end(w, c, false);
            }
            ClientEvent::StreamClosed { stream, .. } if *stream == cur.stream => {
                self.end(w, c, false);
            }
            _ => {}
        }
    }

    fn corrupted(&mut self, w: &mut World, c: &mut Link<'_>, _stream: StreamId) {
        self.end(w, c, false);
    }

    fn owns(&self, stream: StreamId) -> bool {
        self.current.as_ref().is_some_and(|c| c.stream == stream)
    }

    fn chunk(&mut self, w: &mut World, c: &mut Link<'_>, chunk: Chunk) {
        let Some(cur) = &mut self.current else { return };
        let Ok(mut chunk) = compress::decompress(chunk, 1 << 20) else {
            self.end(w, c, false);
            return;
        };
        w.oracle.tamper(&mut chunk);
        w.oracle.file_chunk(&w.library, c.id, cur.file, &chunk);
        cur.progress = w.now;
        let Some((assembler, buffer)) = &mut cur.units else {
            // OPENED comes first on the byte stream: this one was altered on the way.
            if !w.slipped(c.id) {
                w.oracle
                    .violate(crate::invariants::Violation::CorruptChunk {
                        client: c.id,
                        source: format!("realtime stream {} before its OPENED", cur.stream),
                        seq: chunk.seq,
                    });
            }
            self.end(w, c, false);
            return;
        };
        if chunk.has(ChunkFlags::END_OF_STREAM) {
            cur.ended = true;
            buffer.end_of_stream();
        }
        if let Ok(Some(unit)) = assembler.push(chunk) {
            let unit = playout::Unit {
                seq: unit.index,
                pts_us: unit.pts_us,
                duration_us: unit.duration_us,
                key: unit.key,
                payload: unit.data,
            };
            buffer.push(w.clock.now(), unit);
        }
        self.play(w, c);
    }

    fn work(&mut self, w: &mut World, c: &mut Link<'_>) {
        if let Some(cur) = &self.current {
            if cur.units.is_none() && w.now >= cur.asked + REQUEST_TIMEOUT {
                w.oracle.counts.request_timeouts += 1;
                if w.clean {
                    w.oracle.violate(crate::invariants::Violation::TimedOut {
                        client: c.id,
                        detail: format!(
                            "play of file {} unanswered for {REQUEST_TIMEOUT:?} on a network that loses nothing",
                            cur.file
                        ),
                    });
                }
                self.end(w, c, false);
                return;
            }
            self.play(w, c);
            return;
        }
        if w.now < self.next_at || self.files.is_empty() {
            return;
        }
        let file = self.files[c.rng.random_range(0..self.files.len())];
        let open = OpenRequest {
            path: w.library.file(file).name.clone(),
            mode: Mode::Realtime,
            resume: Resume::Start,
            compress: c.rng.random_bool(0.5),
            raw: false,
            fragment: false,
            header_crc: false,
            chunk_size: 0,
        };
        match c.machine.open(open) {
            Ok((request, stream)) => {
                w.trace
                    .event(w.now, c.id, "play", file as u64, u64::from(stream.0));
                self.current = Some(Current {
                    file,
                    request,
                    stream,
                    units: None,
                    ended: false,
                    wait: None,
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
            Some(cur) if cur.units.is_none() => Some(cur.asked + REQUEST_TIMEOUT),
            Some(cur) => cur.wait,
        }
    }

    fn closed(&mut self, w: &mut World) {
        if let Some(cur) = self.current.take() {
            w.trace.event(w.now, 0, "play-lost", cur.file as u64, 0);
        }
    }

    fn waiting(&self) -> Option<(Duration, String)> {
        // A play that has all its chunks only plays out: that is progress.
        self.current
            .as_ref()
            .filter(|c| !c.ended)
            .map(|c| (c.progress, format!("realtime play of file {}", c.file)))
    }

    fn memory(&self) -> usize {
        self.current
            .as_ref()
            .and_then(|c| c.units.as_ref())
            .map_or(0, |(_, b)| b.len() * 2048)
    }
}
