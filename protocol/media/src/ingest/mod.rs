//! Live input: a byte stream of unknown length (a pipe, a camera through ffmpeg) → timed
//! chunks, sans-IO and incremental.
//!
//! [`Packetizer`](crate::Packetizer) cuts a *file*: it knows the length and may seek at open.
//! [`LiveInput`] knows neither: bytes are pushed as they arrive, with the arrival time, and
//! every unit that is complete goes out at once. Per format:
//!
//! | format | `INIT` chunks | units (`KEY` on every piece unless said) | timestamps |
//! |---|---|---|---|
//! | MJPEG | none | one JPEG (SOI … EOI) | arrival time of the frame's last byte; duration: the average arrival gap |
//! | Y4M | the stream header line | `FRAME…\n` line + planes | frame count at the header's `F` rate |
//! | WAV | everything before the `data` payload | [`Config::audio_chunk_us`] of whole frames | sample count |
//! | PCM (`pcm:RATE:CH:FMT`) | none | as WAV | sample count |
//! | fMP4 | `ftyp` … `moov` (the init segment) | one fragment: any `styp`/`sidx`/`prft`/`emsg` boxes, `moof`, `mdat`; `KEY` when its first sample is a sync sample | the fragment's `tfdt`, relative to the first fragment's |
//!
//! The stream's [`Codec`] is known once its header has been read ([`LiveInput::codec`]):
//! a publisher waits for it before it announces the channel.
//!
//! # Hostile input
//!
//! Memory is bounded by [`Limits`]: a header, a unit or a run of bytes that is not the format
//! is refused with a [`MediaError`] as soon as its size is known to exceed the limit (a box or
//! frame size is checked before anything is buffered for it). Garbage where a header or a
//! unit must start is [`MediaError::Corrupt`]; nothing is guessed past it. The end of the
//! input in the middle of a unit is not an error (a producer that is killed stops anywhere):
//! [`LiveInput::finish`] drops the partial unit and says how many bytes it dropped.

mod fmp4;
pub mod record;

use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};
use chunkcast_protocol::media::{AudioParams, Codec, SampleFormat, VideoParams, VisualFormat};
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags};

use crate::packetize::{self, Config, MediaError, frame_pts_us, frames_to_us, span_us};

/// What a live input carries, as `--format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Concatenated JPEG frames (`ffmpeg -f mjpeg -`).
    Mjpeg,
    /// YUV4MPEG2 (`ffmpeg -f yuv4mpegpipe -`).
    Y4m,
    /// WAV (`ffmpeg -f wav -`): a header whose sizes a pipe leaves at 0 or 0xFFFFFFFF.
    Wav,
    /// Headerless PCM with these parameters (`pcm:48000:2:s16le`).
    Pcm(AudioParams),
    /// Fragmented MP4 (`ffmpeg -f mp4 -movflags frag_keyframe+empty_moov+default_base_moof -`).
    Fmp4,
}

impl InputFormat {
    /// The format the first bytes of a stream show, if any: `None` when they match none, or
    /// when fewer than 12 bytes are given. Headerless PCM is never detected.
    pub fn detect(head: &[u8]) -> Option<Self> {
        if head.len() < 12 {
            return None;
        }
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Some(Self::Mjpeg);
        }
        if head.starts_with(b"YUV4MPEG2") {
            return Some(Self::Y4m);
        }
        if head.starts_with(b"RIFF") && &head[8..12] == b"WAVE" {
            return Some(Self::Wav);
        }
        if matches!(&head[4..8], b"ftyp" | b"styp" | b"moov") {
            return Some(Self::Fmp4);
        }
        None
    }
}

impl FromStr for InputFormat {
    type Err = String;

    /// `mjpeg`, `y4m`, `wav`, `fmp4` (or `mp4`), or `pcm:RATE:CHANNELS:FORMAT` where FORMAT
    /// is `u8`, `s16le`, `s24le`, `s32le`, `f32le`, `mulaw` or `alaw`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mjpeg" => return Ok(Self::Mjpeg),
            "y4m" => return Ok(Self::Y4m),
            "wav" => return Ok(Self::Wav),
            "fmp4" | "mp4" => return Ok(Self::Fmp4),
            _ => {}
        }
        let usage = || {
            format!(
                "unknown format {s:?}: use mjpeg, y4m, wav, fmp4 or pcm:RATE:CHANNELS:FORMAT \
                 (FORMAT u8, s16le, s24le, s32le, f32le, mulaw or alaw)"
            )
        };
        let Some(rest) = s.strip_prefix("pcm:") else {
            return Err(usage());
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let [rate, channels, fmt] = parts.as_slice() else {
            return Err(usage());
        };
        let rate: u32 = rate
            .parse()
            .ok()
            .filter(|r| (1..=768_000).contains(r))
            .ok_or_else(|| format!("pcm sample rate {rate:?}: use 1..=768000"))?;
        let channels: u16 = channels
            .parse()
            .ok()
            .filter(|c| (1..=64).contains(c))
            .ok_or_else(|| format!("pcm channels {channels:?}: use 1..=64"))?;
        let (bits, sample_format) = match *fmt {
            "u8" => (8, SampleFormat::Int),
            "s16le" => (16, SampleFormat::Int),
            "s24le" => (24, SampleFormat::Int),
            "s32le" => (32, SampleFormat::Int),
            "f32le" => (32, SampleFormat::Float),
            "mulaw" => (8, SampleFormat::MuLaw),
            "alaw" => (8, SampleFormat::ALaw),
            _ => return Err(usage()),
        };
        Ok(Self::Pcm(AudioParams {
            sample_rate: rate,
            channels,
            bits_per_sample: bits,
            sample_format,
        }))
    }
}

/// Memory bounds of one live input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest header (WAV header, Y4M header line, fMP4 init segment): 1 MiB, the fan-out's
    /// init cache, so that every late joiner gets the whole header.
    pub max_header_bytes: usize,
    /// The largest unit (JPEG frame, Y4M frame, fMP4 fragment): 32 MiB.
    pub max_unit_bytes: usize,
    /// The most bytes skipped looking for the start of the stream or of a unit: 64 KiB.
    pub max_skip_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 1 << 20,
            max_unit_bytes: 32 << 20,
            max_skip_bytes: 64 << 10,
        }
    }
}

/// One live input being cut into chunks. See the [module docs](self).
#[derive(Debug)]
pub struct LiveInput {
    config: Config,
    limits: Limits,
    format: Option<InputFormat>,
    parser: Parser,
    codec: Option<Codec>,
    /// Bytes pushed and not yet consumed.
    buf: BytesMut,
    /// Arrival time of the first byte, the zero of arrival timestamps.
    t0: Option<u64>,
    next_seq: u64,
    offset: u64,
    /// Media end of the last unit emitted.
    end_us: u64,
    units: u64,
    finished: bool,
}

#[derive(Debug)]
enum Parser {
    /// Waiting for enough bytes to detect the format.
    Detect,
    Mjpeg(Mjpeg),
    Y4m(Y4m),
    Wav(Wav),
    Fmp4(fmp4::Fmp4),
}

/// What a parser found at the front of the buffer.
enum Found {
    /// Need more bytes.
    More,
    /// Drop this many bytes (not part of the stream: padding between frames, trailing data).
    Skip(usize),
    /// The first `len` bytes are init bytes.
    Init(usize),
    /// The first `len` bytes are a unit.
    Unit {
        len: usize,
        key: bool,
        pts_us: u64,
        duration_us: u32,
    },
}

impl LiveInput {
    /// A live input of `format` (`None`: detected from the first bytes), cut by `config`
    /// (its `mjpeg_fps` gives MJPEG frames their nominal duration).
    pub fn new(
        config: Config,
        format: Option<InputFormat>,
        limits: Limits,
    ) -> Result<Self, MediaError> {
        config.validate()?;
        let mut input = Self {
            config,
            limits,
            format: None,
            parser: Parser::Detect,
            codec: None,
            buf: BytesMut::new(),
            t0: None,
            next_seq: 0,
            offset: 0,
            end_us: 0,
            units: 0,
            finished: false,
        };
        if let Some(f) = format {
            input.start(f);
        }
        Ok(input)
    }

    fn start(&mut self, format: InputFormat) {
        self.format = Some(format);
        self.parser = match format {
            InputFormat::Mjpeg => Parser::Mjpeg(Mjpeg::default()),
            InputFormat::Y4m => Parser::Y4m(Y4m::default()),
            InputFormat::Wav => Parser::Wav(Wav::default()),
            InputFormat::Pcm(params) => {
                self.codec = Some(Codec::Audio(params));
                Parser::Wav(Wav::headerless(params, self.config.audio_chunk_us))
            }
            InputFormat::Fmp4 => Parser::Fmp4(fmp4::Fmp4::default()),
        };
    }

    /// The format, once given or detected.
    pub fn format(&self) -> Option<InputFormat> {
        self.format
    }

    /// What the stream carries, once its header has been read.
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// Units emitted so far.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Bytes held waiting for the rest of a header or unit.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next bytes of the stream, which arrived at `now_us` (any monotonic clock, in
    /// µs), and appends every chunk now complete to `out`. After an error the input is
    /// unusable.
    pub fn push(
        &mut self,
        data: &[u8],
        now_us: u64,
        out: &mut Vec<Chunk>,
    ) -> Result<(), MediaError> {
        if self.finished {
            return Err(MediaError::corrupt("input", "bytes pushed after the end"));
        }
        if data.is_empty() {
            return Ok(());
        }
        let t0 = *self.t0.get_or_insert(now_us);
        self.buf.extend_from_slice(data);
        self.cut(now_us.saturating_sub(t0), out)
    }

    /// The end of the input: emits what is complete (the last whole audio frames) and drops
    /// a partial unit. Returns the bytes dropped (an fMP4 trailer of whole boxes without
    /// media, such as the `mfra` index ffmpeg writes last, is not counted). The caller marks the end of the stream itself (the channel's end chunk).
    pub fn finish(&mut self, out: &mut Vec<Chunk>) -> Result<usize, MediaError> {
        if self.finished {
            return Ok(0);
        }
        self.finished = true;
        if matches!(self.parser, Parser::Detect) && !self.buf.is_empty() {
            return Err(MediaError::corrupt(
                "input",
                format!(
                    "{} bytes that are no known format (give --format)",
                    self.buf.len()
                ),
            ));
        }
        if let Parser::Wav(w) = &mut self.parser
            && let Some(found) = w.tail(&self.buf)
        {
            self.emit(found, out);
        }
        let trailer = matches!(self.parser, Parser::Fmp4(_)) && fmp4::is_trailer(&self.buf);
        let dropped = if trailer { 0 } else { self.buf.len() };
        self.buf.clear();
        Ok(dropped)
    }

    fn cut(&mut self, arrival_us: u64, out: &mut Vec<Chunk>) -> Result<(), MediaError> {
        loop {
            let found = match &mut self.parser {
                Parser::Detect => {
                    if self.buf.len() < 12 {
                        return Ok(());
                    }
                    let Some(f) = InputFormat::detect(&self.buf) else {
                        return Err(MediaError::corrupt(
                            "input",
                            "the first bytes are not MJPEG, Y4M, WAV or fragmented MP4 \
                             (give --format for headerless PCM)",
                        ));
                    };
                    self.start(f);
                    continue;
                }
                Parser::Mjpeg(p) => p.next(&self.buf, &self.limits, arrival_us, &self.config)?,
                Parser::Y4m(p) => p.next(&self.buf, &self.limits)?,
                Parser::Wav(p) => p.next(&self.buf, &self.limits, self.config.audio_chunk_us)?,
                Parser::Fmp4(p) => p.next(&self.buf, &self.limits)?,
            };
            if self.codec.is_none() {
                self.codec = match &self.parser {
                    Parser::Mjpeg(p) => p.codec(),
                    Parser::Y4m(p) => p.codec(),
                    Parser::Wav(p) => p.params.map(Codec::Audio),
                    Parser::Fmp4(p) => p.codec(),
                    Parser::Detect => None,
                };
            }
            match found {
                Found::More => return Ok(()),
                found => self.emit(found, out),
            }
        }
    }

    fn emit(&mut self, found: Found, out: &mut Vec<Chunk>) {
        let (len, kind) = match found {
            Found::More => return,
            Found::Skip(n) => {
                self.buf.advance(n);
                return;
            }
            Found::Init(len) => (len, None),
            Found::Unit {
                len,
                key,
                pts_us,
                duration_us,
            } => (len, Some((key, pts_us, duration_us))),
        };
        let mut bytes: Bytes = self.buf.split_to(len).freeze();
        if let Some((_, pts, d)) = kind {
            self.units += 1;
            self.end_us = self.end_us.max(pts + u64::from(d));
        }
        let cs = self.config.chunk_size;
        loop {
            let piece = bytes.split_to(cs.min(bytes.len()));
            let last = bytes.is_empty();
            let (flags, pts_us, duration_us) = match kind {
                None => (ChunkFlags::INIT, 0, 0),
                Some((key, pts, d)) => {
                    let mut f = if key {
                        ChunkFlags::KEY
                    } else {
                        ChunkFlags::empty()
                    };
                    if last {
                        f = f | ChunkFlags::END_OF_UNIT;
                    }
                    (f, pts, d)
                }
            };
            let raw = piece.len() as u64;
            out.push(Chunk::new(
                self.config.stream,
                self.next_seq,
                self.offset,
                pts_us,
                duration_us,
                flags,
                piece,
            ));
            self.next_seq += 1;
            self.offset += raw;
            if last {
                break;
            }
        }
    }

    /// The `seq` the next chunk will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The stream offset the next chunk will carry (bytes emitted so far).
    pub fn next_offset(&self) -> u64 {
        self.offset
    }

    /// The media time at which the last unit emitted ends.
    pub fn end_us(&self) -> u64 {
        self.end_us
    }
}

fn too_large(what: &'static str, size: u64, limit: usize) -> MediaError {
    MediaError::TooLarge {
        what,
        size,
        limit: limit as u64,
    }
}

// ---------------------------------------------------------------------------------------
// MJPEG

/// Scans JPEG marker segments, resuming where the last push left off.
#[derive(Debug, Default)]
struct Mjpeg {
    /// Where the scan of the frame at the front resumes; 0 = not in a frame.
    pos: usize,
    /// Inside entropy-coded data (after SOS).
    entropy: bool,
    /// Width and height from the first frame's SOF.
    size: Option<(u32, u32)>,
    fps: (u32, u32),
    /// pts of the previous frame, so that timestamps strictly increase.
    last_pts: Option<u64>,
    /// The frame interval seen so far (a moving average of arrival gaps), a frame's duration.
    interval_us: Option<u64>,
}

impl Mjpeg {
    fn codec(&self) -> Option<Codec> {
        let (width, height) = self.size?;
        Some(Codec::Video(VideoParams {
            format: VisualFormat::Mjpeg,
            width,
            height,
            fps_num: self.fps.0,
            fps_den: self.fps.1,
        }))
    }

    fn next(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        arrival_us: u64,
        config: &Config,
    ) -> Result<Found, MediaError> {
        const FORMAT: &str = "mjpeg";
        self.fps = config.mjpeg_fps;
        if self.pos == 0 {
            // Between frames: a frame starts with SOI; anything else is skipped, boundedly.
            match buf.windows(2).position(|w| w == [0xFF, 0xD8]) {
                Some(0) => {
                    self.pos = 2;
                    self.entropy = false;
                }
                Some(n) if n <= limits.max_skip_bytes => return Ok(Found::Skip(n)),
                None if buf.len() <= limits.max_skip_bytes => return Ok(Found::More),
                _ => {
                    return Err(MediaError::corrupt(
                        FORMAT,
                        format!(
                            "no JPEG start-of-image marker in {} bytes",
                            limits.max_skip_bytes
                        ),
                    ));
                }
            }
        }
        let mut pos = self.pos;
        let end = loop {
            if pos > limits.max_unit_bytes {
                return Err(too_large("JPEG frame", pos as u64, limits.max_unit_bytes));
            }
            if self.entropy {
                // Entropy-coded data ends at a marker: 0xFF not followed by 0x00 (stuffing) or
                // RSTn.
                let Some(i) = buf[pos..]
                    .windows(2)
                    .position(|w| w[0] == 0xFF && w[1] != 0 && !(0xD0..=0xD7).contains(&w[1]))
                else {
                    self.pos = buf.len().saturating_sub(1).max(pos);
                    return Ok(Found::More);
                };
                pos += i;
                self.entropy = false;
            }
            if pos + 2 > buf.len() {
                self.pos = pos;
                return Ok(Found::More);
            }
            if buf[pos] != 0xFF {
                return Err(MediaError::corrupt(
                    FORMAT,
                    format!("expected a marker {} bytes into a frame", pos),
                ));
            }
            let m = buf[pos + 1];
            match m {
                0xFF => pos += 1, // fill byte
                0xD9 => break pos + 2,
                0x01 | 0xD0..=0xD7 => pos += 2,
                0xD8 => {
                    return Err(MediaError::corrupt(
                        FORMAT,
                        "a start-of-image marker inside a frame",
                    ));
                }
                _ => {
                    if pos + 4 > buf.len() {
                        self.pos = pos;
                        return Ok(Found::More);
                    }
                    let len = usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]));
                    if len < 2 {
                        return Err(MediaError::corrupt(
                            FORMAT,
                            "a marker segment of length < 2",
                        ));
                    }
                    if pos + 2 + len > buf.len() {
                        if pos + 2 + len > limits.max_unit_bytes {
                            return Err(too_large(
                                "JPEG frame",
                                (pos + 2 + len) as u64,
                                limits.max_unit_bytes,
                            ));
                        }
                        self.pos = pos;
                        return Ok(Found::More);
                    }
                    let is_sof = matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC);
                    if is_sof && self.size.is_none() && len >= 7 {
                        let h = u16::from_be_bytes([buf[pos + 5], buf[pos + 6]]);
                        let w = u16::from_be_bytes([buf[pos + 7], buf[pos + 8]]);
                        if w == 0 || h == 0 {
                            return Err(MediaError::corrupt(FORMAT, "a frame of zero size"));
                        }
                        self.size = Some((u32::from(w), u32::from(h)));
                    }
                    pos += 2 + len;
                    if m == 0xDA {
                        self.entropy = true;
                    }
                }
            }
        };
        if self.size.is_none() {
            return Err(MediaError::corrupt(
                FORMAT,
                "a frame without a frame header (SOF)",
            ));
        }
        self.pos = 0;
        let pts = match self.last_pts {
            Some(p) => arrival_us.max(p + 1),
            None => arrival_us,
        };
        // A frame lasts the interval the stream shows (arrival gaps, averaged: a stall is
        // one long gap, not a slower stream, so gaps over a second are left out), the
        // configured rate until there is one.
        if let Some(gap) = self.last_pts.map(|p| pts - p).filter(|&g| g < 1_000_000) {
            self.interval_us = Some(match self.interval_us {
                Some(i) => (i * 7 + gap) / 8,
                None => gap,
            });
        }
        self.last_pts = Some(pts);
        let nominal = frame_pts_us(1, self.fps.0, self.fps.1);
        Ok(Found::Unit {
            len: end,
            key: true,
            pts_us: pts,
            duration_us: span_us(0, self.interval_us.unwrap_or(nominal)),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Y4M

#[derive(Debug, Default)]
struct Y4m {
    header: Option<packetize::y4m::Header>,
    frames: u64,
}

impl Y4m {
    fn codec(&self) -> Option<Codec> {
        let h = self.header?;
        Some(Codec::Video(VideoParams {
            format: VisualFormat::Y4m,
            width: h.width,
            height: h.height,
            fps_num: h.fps.0,
            fps_den: h.fps.1,
        }))
    }

    fn next(&mut self, buf: &[u8], limits: &Limits) -> Result<Found, MediaError> {
        const FORMAT: &str = "y4m";
        const MAX_HEADER: usize = 4096;
        const MAX_LINE: usize = 256;
        let Some(h) = self.header else {
            if !buf.contains(&b'\n') && buf.len() < MAX_HEADER {
                return Ok(Found::More);
            }
            let h = packetize::y4m::parse_header(&buf[..buf.len().min(MAX_HEADER)])?;
            if h.frame_bytes + MAX_LINE as u64 > limits.max_unit_bytes as u64 {
                return Err(too_large("Y4M frame", h.frame_bytes, limits.max_unit_bytes));
            }
            self.header = Some(h);
            return Ok(Found::Init(h.len as usize));
        };
        let Some(nl) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
            if buf.len() >= MAX_LINE {
                return Err(MediaError::corrupt(
                    FORMAT,
                    "a FRAME line longer than 256 bytes",
                ));
            }
            if buf.len() >= 5 && !buf.starts_with(b"FRAME") {
                return Err(MediaError::corrupt(FORMAT, "expected a FRAME line"));
            }
            return Ok(Found::More);
        };
        let line = &buf[..nl];
        if !(line == b"FRAME" || line.starts_with(b"FRAME ")) {
            return Err(MediaError::corrupt(FORMAT, "expected a FRAME line"));
        }
        let len = nl + 1 + h.frame_bytes as usize;
        if buf.len() < len {
            return Ok(Found::More);
        }
        let pts = frame_pts_us(self.frames, h.fps.0, h.fps.1);
        let next = frame_pts_us(self.frames + 1, h.fps.0, h.fps.1);
        self.frames += 1;
        Ok(Found::Unit {
            len,
            key: true,
            pts_us: pts,
            duration_us: span_us(pts, next),
        })
    }
}

// ---------------------------------------------------------------------------------------
// WAV and headerless PCM

#[derive(Debug, Default)]
struct Wav {
    /// Known once the `fmt ` chunk has been read (at once for headerless PCM).
    params: Option<AudioParams>,
    /// Header bytes walked so far (before `data`).
    walked: usize,
    /// The header has been emitted; audio follows.
    in_data: bool,
    /// Audio bytes left per the `data` size; `None`: to the end of the stream.
    left: Option<u64>,
    /// Frames emitted.
    frames: u64,
    /// Frames per unit.
    per_unit: u64,
}

impl Wav {
    fn headerless(params: AudioParams, chunk_us: u32) -> Self {
        Self {
            params: Some(params),
            in_data: true,
            per_unit: per_unit(&params, chunk_us),
            ..Self::default()
        }
    }

    fn next(&mut self, buf: &[u8], limits: &Limits, chunk_us: u32) -> Result<Found, MediaError> {
        const FORMAT: &str = "wav";
        if !self.in_data {
            return self.header(buf, limits, chunk_us);
        }
        let Some(params) = self.params else {
            return Err(MediaError::corrupt(FORMAT, "no fmt chunk before data"));
        };
        if self.left == Some(0) {
            // Past the `data` chunk: a pipe's trailer (LIST, id3) is not audio.
            return Ok(if buf.is_empty() {
                Found::More
            } else {
                Found::Skip(buf.len())
            });
        }
        let bpf = u64::from(params.bytes_per_frame());
        let want = self.per_unit * bpf;
        let want = self.left.map_or(want, |l| want.min(l / bpf * bpf));
        if want == 0 {
            // Less than a frame left in `data`: skip it.
            let n = self.left.unwrap_or(0).min(buf.len() as u64);
            self.left = self.left.map(|l| l - n);
            return Ok(if n == 0 {
                Found::More
            } else {
                Found::Skip(n as usize)
            });
        }
        if (buf.len() as u64) < want {
            return Ok(Found::More);
        }
        Ok(self.unit(want, bpf, params.sample_rate))
    }

    fn unit(&mut self, len: u64, bpf: u64, rate: u32) -> Found {
        let frames = len / bpf;
        let pts = frames_to_us(self.frames, rate);
        let end = frames_to_us(self.frames + frames, rate);
        self.frames += frames;
        self.left = self.left.map(|l| l - len);
        Found::Unit {
            len: len as usize,
            key: true,
            pts_us: pts,
            duration_us: span_us(pts, end),
        }
    }

    /// At the end of the input: the whole frames left, as a last unit.
    fn tail(&mut self, buf: &[u8]) -> Option<Found> {
        let params = self.params.filter(|_| self.in_data)?;
        let bpf = u64::from(params.bytes_per_frame());
        let have = self
            .left
            .map_or(buf.len() as u64, |l| l.min(buf.len() as u64));
        let len = have / bpf * bpf;
        (len > 0).then(|| self.unit(len, bpf, params.sample_rate))
    }

    /// Walks RIFF chunks up to `data`; the whole header goes out as init once `data` is seen.
    fn header(&mut self, buf: &[u8], limits: &Limits, chunk_us: u32) -> Result<Found, MediaError> {
        const FORMAT: &str = "wav";
        if buf.len() < 12 {
            return Ok(Found::More);
        }
        if &buf[0..4] != b"RIFF" || &buf[8..12] != b"WAVE" {
            return Err(MediaError::corrupt(FORMAT, "missing RIFF/WAVE header"));
        }
        let mut pos = self.walked.max(12);
        loop {
            if pos + 8 > buf.len() {
                self.walked = pos;
                return Ok(Found::More);
            }
            let id = &buf[pos..pos + 4];
            let size = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
            if id == b"data" {
                let params = self
                    .params
                    .ok_or_else(|| MediaError::corrupt(FORMAT, "no fmt chunk before data"))?;
                if !matches!(
                    params.sample_format,
                    SampleFormat::Int
                        | SampleFormat::Float
                        | SampleFormat::MuLaw
                        | SampleFormat::ALaw
                ) {
                    return Err(MediaError::unsupported(
                        FORMAT,
                        "live input takes PCM, float, µ-law or A-law audio",
                    ));
                }
                self.left = match size {
                    0 | u32::MAX => None,
                    n => Some(u64::from(n)),
                };
                self.in_data = true;
                self.per_unit = per_unit(&params, chunk_us);
                return Ok(Found::Init(pos + 8));
            }
            let body = size as usize + (size as usize & 1);
            let next = pos + 8 + body;
            if next > limits.max_header_bytes {
                return Err(too_large(
                    "WAV header",
                    next as u64,
                    limits.max_header_bytes,
                ));
            }
            if next > buf.len() {
                self.walked = pos;
                return Ok(Found::More);
            }
            if id == b"fmt " {
                let fmt = packetize::wav::parse_fmt(&buf[pos + 8..pos + 8 + size as usize])?;
                self.params = Some(fmt.params);
            }
            pos = next;
        }
    }
}

fn per_unit(params: &AudioParams, chunk_us: u32) -> u64 {
    (u64::from(params.sample_rate) * u64::from(chunk_us) / 1_000_000).max(1)
}

#[cfg(test)]
mod tests;
