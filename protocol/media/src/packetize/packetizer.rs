//! The packetizer front and its format-independent cutting engine.
//!
//! Each format describes the file as a sequence of consecutive *segments* (`Segment`): init
//! bytes, one media unit, or opaque bytes. The engine cuts every segment into pieces of at
//! most the chunk size, stamps them, and takes the bytes from the pushed buffers (slicing
//! where a piece lies within one buffer, copying only to join a piece across buffers).
//!
//! Layouts whose segments follow from the headers read at open (bytes, image, WAV, MP4) answer
//! from arithmetic or a table. Layouts that must see the bytes to know where a unit ends
//! (MJPEG, the `FRAME` lines of Y4M) watch every pushed buffer first (`Layout::observe`).

use std::collections::VecDeque;
use std::io::{Read, Seek};

use bytes::{Bytes, BytesMut};

use super::mjpeg::MjpegLayout;
use super::mp4::Mp4Layout;
use super::wav::WavLayout;
use super::y4m::Y4mLayout;
use super::{Config, MediaError, bytes as bytes_layout, probe};
use chunkcast_protocol::media::Codec;
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags};

/// What a segment of the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Container bytes needed for byte-exactness, not media.
    Init,
    /// One media unit.
    Media {
        /// Decodable on its own.
        key: bool,
        /// Presentation time.
        pts_us: u64,
        /// Duration.
        duration_us: u32,
    },
    /// Opaque bytes: every piece is its own key unit.
    Bytes,
}

/// Where a segment ends, as far as the layout knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The exact end offset (exclusive).
    At(u64),
    /// Not known yet, but strictly after this offset.
    After(u64),
}

/// A run of bytes `[start, end)` of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) start: u64,
    pub(crate) end: End,
    pub(crate) kind: Kind,
}

impl Segment {
    pub(crate) fn new(start: u64, end: u64, kind: Kind) -> Self {
        Self {
            start,
            end: End::At(end),
            kind,
        }
    }
}

/// The per-format description of the file.
#[derive(Debug)]
pub(crate) enum Layout {
    /// One segment covering the whole file (bytes, image).
    Whole(Kind),
    Wav(WavLayout),
    Mjpeg(MjpegLayout),
    Y4m(Y4mLayout),
    Mp4(Mp4Layout),
}

impl Layout {
    fn observe(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        match self {
            Self::Mjpeg(l) => {
                l.observe(offset, data);
                Ok(())
            }
            Self::Y4m(l) => l.observe(offset, data),
            Self::Whole(_) | Self::Wav(_) | Self::Mp4(_) => Ok(()),
        }
    }

    /// Called once every byte has been observed.
    fn end_of_input(&mut self, len: u64) -> Result<(), MediaError> {
        match self {
            Self::Mjpeg(l) => {
                l.end_of_input(len);
                Ok(())
            }
            Self::Y4m(l) => l.end_of_input(len),
            Self::Whole(_) | Self::Wav(_) | Self::Mp4(_) => Ok(()),
        }
    }

    /// The segment containing `pos`, or `None` when the bytes seen so far don't tell yet.
    fn segment_at(&mut self, pos: u64, len: u64) -> Option<Segment> {
        match self {
            Self::Whole(kind) => Some(Segment::new(0, len, *kind)),
            Self::Wav(l) => Some(l.segment_at(pos)),
            Self::Mjpeg(l) => l.segment_at(pos),
            Self::Y4m(l) => l.segment_at(pos),
            Self::Mp4(l) => l.segment_at(pos),
        }
    }
}

/// Cuts one file into [`Chunk`]s. See the [module docs](super) for the layout per format.
///
/// Every chunk has `seq` from 0 without gaps, `offset` = the byte offset of its payload in the
/// file, `raw_len == payload.len()`, no `COMPRESSED` flag; the payloads concatenated in `seq`
/// order are the file exactly.
#[derive(Debug)]
pub struct Packetizer {
    config: Config,
    codec: Codec,
    len: u64,
    duration_us: Option<u64>,
    chunk_count: Option<u64>,
    warning: Option<String>,
    layout: Layout,
    /// Opened with [`Packetizer::open_any`]: a structure that breaks mid-stream turns the rest
    /// of the file into `INIT` bytes instead of failing the stream.
    lenient: bool,
    /// Where and why the stream stopped being cut as media (lenient mode only).
    damage: Option<String>,
    /// Pushed bytes not yet emitted; the front starts at `pos`.
    queue: VecDeque<Bytes>,
    /// File offset of the next chunk.
    pos: u64,
    /// Bytes pushed so far.
    received: u64,
    next_seq: u64,
    finished: bool,
}

/// What a format's probe hands the front.
#[derive(Debug)]
pub(crate) struct Probed {
    pub(crate) codec: Codec,
    pub(crate) layout: Layout,
    pub(crate) duration_us: Option<u64>,
    pub(crate) chunk_count: Option<u64>,
    pub(crate) warning: Option<String>,
}

impl Packetizer {
    /// Probes `source` (of `len` bytes) and prepares to cut it.
    ///
    /// Reads what the format needs: headers; for images their headers (read under
    /// [`MAX_IMAGE_DIMENSION`](super::MAX_IMAGE_DIMENSION) and
    /// [`MAX_IMAGE_ALLOC`](super::MAX_IMAGE_ALLOC)) and a few structural reads; for MP4 the `moov` box
    /// wherever it is; for Y4M every `FRAME` line (one small read per frame). Then seeks
    /// `source` back to 0. `name_hint` (a file name or path) supplies the extension used when
    /// the magic bytes match no known format. See the [module docs](super) for the error
    /// policy.
    pub fn open<R: Read + Seek>(
        config: Config,
        source: &mut R,
        len: u64,
        name_hint: &str,
    ) -> Result<Self, MediaError> {
        Self::open_with(config, source, len, name_hint, false)
    }

    /// Like [`open`](Self::open), but any readable file opens: one whose media structure
    /// cannot be read (damaged header, unknown codec, wrong extension, truncation, a limit
    /// exceeded) is cut as bytes, with [`warning`](Self::warning) saying why
    /// (`served as bytes: …`). A WAV whose audio is cut short is still audio, up to its last
    /// whole frame, with a warning `damaged at byte N: …`; so is a stream whose structure
    /// breaks after open (the rest of the file then travels as `INIT` bytes, and
    /// [`damage`](Self::damage) says where). Errors only for a bad [`Config`] or an I/O error
    /// other than an early end of file.
    pub fn open_any<R: Read + Seek>(
        config: Config,
        source: &mut R,
        len: u64,
        name_hint: &str,
    ) -> Result<Self, MediaError> {
        match Self::open_with(config.clone(), source, len, name_hint, true) {
            Ok(p) => Ok(p),
            Err(e) => match as_bytes_reason(e) {
                Ok(reason) => {
                    let probed = bytes_layout::probed(
                        len,
                        config.chunk_size,
                        Some(format!("served as bytes: {reason}")),
                    );
                    source.seek(std::io::SeekFrom::Start(0))?;
                    Ok(Self::with(config, probed, len, true))
                }
                Err(e) => Err(e),
            },
        }
    }

    fn open_with<R: Read + Seek>(
        config: Config,
        source: &mut R,
        len: u64,
        name_hint: &str,
        lenient: bool,
    ) -> Result<Self, MediaError> {
        config.validate()?;
        let probed = probe::probe(&config, source, len, name_hint, lenient)?;
        source.seek(std::io::SeekFrom::Start(0))?;
        Ok(Self::with(config, probed, len, lenient))
    }

    fn with(config: Config, probed: Probed, len: u64, lenient: bool) -> Self {
        Self {
            config,
            codec: probed.codec,
            len,
            duration_us: probed.duration_us,
            chunk_count: probed.chunk_count,
            warning: probed.warning,
            layout: probed.layout,
            lenient,
            damage: None,
            queue: VecDeque::new(),
            pos: 0,
            received: 0,
            next_seq: 0,
            finished: false,
        }
    }

    /// What the stream carries.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The media duration in microseconds, when known at open (WAV, Y4M, MP4).
    pub fn duration_us(&self) -> Option<u64> {
        self.duration_us
    }

    /// How many chunks the file will be cut into, when known at open (all formats but MJPEG,
    /// and Y4M files of more than 2²⁰ frames).
    pub fn chunk_count(&self) -> Option<u64> {
        self.chunk_count
    }

    /// The file length given at open.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Why the file is served as bytes although it looked like a media format
    /// (`served as bytes: …`), or where its media is damaged (`damaged at byte N: …`), or
    /// another remark (an MP4 whose codec is not H.264): the server's `OPENED.note`.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Where and why a stream opened with [`open_any`](Self::open_any) stopped being cut as
    /// media after open (`damaged at byte N: …`); the bytes from there on went out as `INIT`.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// The sequence number the next chunk will get (= chunks emitted so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Feeds the next bytes of the file (in order from offset 0, any piece sizes) and appends
    /// every chunk that is now complete to `out`.
    ///
    /// Payloads are slices of `data` wherever a chunk lies within one pushed piece. After an
    /// error the packetizer is unusable (the stream must be abandoned).
    pub fn push(&mut self, data: Bytes, out: &mut Vec<Chunk>) -> Result<(), MediaError> {
        let end = self.received + data.len() as u64;
        if end > self.len || (self.finished && !data.is_empty()) {
            return Err(MediaError::TooLong {
                expected: self.len,
                actual: end,
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.layout.observe(self.received, &data) {
            self.broken(e)?;
        }
        self.received = end;
        self.queue.push_back(data);
        self.cut(out)
    }

    /// Ends the input: emits the remaining chunks, the last with `END_OF_STREAM` (an empty
    /// file yields one empty chunk). Errors with [`MediaError::Truncated`] when fewer bytes
    /// than `len` were pushed. Calling it again does nothing.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) -> Result<(), MediaError> {
        if self.finished {
            return Ok(());
        }
        if self.received < self.len {
            return Err(MediaError::Truncated {
                format: "input",
                expected: self.len,
                actual: self.received,
            });
        }
        if let Err(e) = self.layout.end_of_input(self.len) {
            self.broken(e)?;
        }
        self.cut(out)?;
        if self.pos < self.len {
            // Only a layout bug can leave bytes behind: every layout covers the file.
            return Err(MediaError::corrupt(
                "input",
                "layout does not cover the whole file",
            ));
        }
        if self.len == 0 {
            let flags = ChunkFlags::KEY | ChunkFlags::END_OF_UNIT | ChunkFlags::END_OF_STREAM;
            out.push(self.chunk(0, 0, flags, Bytes::new()));
            self.next_seq += 1;
        }
        self.finished = true;
        Ok(())
    }

    /// The layout failed on bytes after open: strict, an error; lenient, everything not yet
    /// emitted goes out as `INIT` bytes, so that the file still arrives whole.
    fn broken(&mut self, e: MediaError) -> Result<(), MediaError> {
        if !self.lenient {
            return Err(e);
        }
        self.damage = Some(format!("damaged at byte {}: {e}", self.pos));
        self.layout = Layout::Whole(Kind::Init);
        Ok(())
    }

    fn chunk(&self, pts_us: u64, duration_us: u32, flags: ChunkFlags, payload: Bytes) -> Chunk {
        Chunk::new(
            self.config.stream,
            self.next_seq,
            self.pos,
            pts_us,
            duration_us,
            flags,
            payload,
        )
    }

    /// Emits every piece whose bytes have all been pushed and whose extent is known.
    fn cut(&mut self, out: &mut Vec<Chunk>) -> Result<(), MediaError> {
        let cs = self.config.chunk_size as u64;
        while self.pos < self.len {
            let Some(seg) = self.layout.segment_at(self.pos, self.len) else {
                break;
            };
            let (n, last) = match seg.end {
                End::At(e) if e > self.pos => {
                    let n = cs.min(e - self.pos);
                    (n, self.pos + n == e)
                }
                End::At(_) => {
                    return Err(MediaError::corrupt(
                        "input",
                        "layout returned an empty segment",
                    ));
                }
                End::After(m) if self.pos + cs <= m => (cs, false),
                End::After(_) => break,
            };
            if self.pos + n > self.received {
                break;
            }
            let (flags, pts_us, duration_us) = match seg.kind {
                Kind::Init => (ChunkFlags::INIT, 0, 0),
                Kind::Bytes => (ChunkFlags::KEY | ChunkFlags::END_OF_UNIT, 0, 0),
                Kind::Media {
                    key,
                    pts_us,
                    duration_us,
                } => {
                    let mut f = ChunkFlags::empty();
                    if key {
                        f = f | ChunkFlags::KEY;
                    }
                    if last {
                        f = f | ChunkFlags::END_OF_UNIT;
                    }
                    (f, pts_us, duration_us)
                }
            };
            let flags = if self.pos + n == self.len {
                flags | ChunkFlags::END_OF_STREAM
            } else {
                flags
            };
            // `n` is at most the chunk size, itself at most MAX_CHUNK_SIZE.
            let payload = self.take(n as usize);
            out.push(self.chunk(pts_us, duration_us, flags, payload));
            self.next_seq += 1;
            self.pos += n;
        }
        Ok(())
    }

    /// Removes the next `n` bytes from the queue (all present): a slice when they lie in one
    /// buffer, a copy otherwise.
    fn take(&mut self, n: usize) -> Bytes {
        while self.queue.front().is_some_and(Bytes::is_empty) {
            self.queue.pop_front();
        }
        let Some(front) = self.queue.front_mut() else {
            return Bytes::new();
        };
        if front.len() >= n {
            return front.split_to(n);
        }
        let mut joined = BytesMut::with_capacity(n);
        while joined.len() < n {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let k = front.len().min(n - joined.len());
            joined.extend_from_slice(&front.split_to(k));
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
        joined.freeze()
    }
}

/// The reason to serve a file as bytes, for an error of a lenient open; the error itself when
/// it is not about the file's content (a bad config, an I/O failure).
fn as_bytes_reason(e: MediaError) -> Result<String, MediaError> {
    match e {
        MediaError::InvalidConfig(_) => Err(e),
        MediaError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok("the file ends inside its headers".to_owned())
        }
        MediaError::Io(io) => Err(MediaError::Io(io)),
        other => Ok(other.to_string()),
    }
}
