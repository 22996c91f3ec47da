//! Recording a live channel to a file players open, sans-IO: chunks in, file bytes out.
//!
//! | codec | file | what is written |
//! |---|---|---|
//! | MJPEG | `.mjpeg` | each whole JPEG |
//! | Y4M | `.y4m` | the header line once, then each whole frame |
//! | PCM, float, µ-law, A-law audio | `.wav` | a 44-byte header, then the samples; [`Recorder::header`] gives the header with the final sizes, to write over the first one when the recording stops |
//! | fMP4 | `.mp4` | the init segment once, then each whole fragment, its `tfdt` decode times shifted so that they continue across publisher restarts and start at 0 |
//!
//! Only whole units are written: a unit cut by a gap (a viewer that lagged, a publisher that
//! went away mid-unit) is dropped whole, and so is the unit after a gap unless init chunks
//! show where it starts (a chunk does not say whether it is a unit's first piece). A new publisher run ([`Recorder::restart`]) whose
//! header differs from the one written cannot continue the same file: [`Recorder::chunk`] then
//! says [`Written::NewFile`], and the caller starts a new file with a new `Recorder`.

use chunkcast_protocol::media::{AudioParams, Codec, SampleFormat, VisualFormat};
use chunkcast_protocol::wire::chunk::{Chunk, ChunkFlags};

use super::fmp4;
use crate::packetize::MediaError;

/// The kind of file a recording writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mjpeg,
    Y4m,
    Wav(AudioParams),
    Fmp4,
}

/// What [`Recorder::chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Bytes were appended to `out` (possibly none).
    Appended,
    /// The channel's header changed (a publisher restart with other parameters): this file is
    /// finished; start a new one with a new recorder and give it this chunk again.
    NewFile,
}

/// One recording file's state.
#[derive(Debug)]
pub struct Recorder {
    kind: Kind,
    /// The header written (Y4M line, fMP4 init segment).
    header: Option<Vec<u8>>,
    /// INIT bytes of the current run, until its first unit.
    run_init: Vec<u8>,
    /// The unit being gathered.
    unit: Vec<u8>,
    unit_pts: u64,
    in_unit: bool,
    /// After a gap: dropping chunks up to the end of the unit it cut.
    skipping: bool,
    expect_seq: Option<u64>,
    /// Media bytes written (WAV: the `data` size).
    data_bytes: u64,
    /// pts of the first unit written, and the end of the last.
    first_pts: Option<u64>,
    end_us: u64,
    /// fMP4: track timescales, and this run's per-track tfdt shift.
    timescales: Vec<(u32, u32)>,
    shifts: Vec<(u32, i128)>,
    units: u64,
}

/// The largest unit gathered: 64 MiB, above every limit a publisher's input has.
const MAX_UNIT: usize = 64 << 20;

impl Recorder {
    /// A recorder for a channel of `codec`; `Unsupported` for what has no file format here.
    pub fn new(codec: Codec) -> Result<Self, MediaError> {
        let kind = match codec {
            Codec::Video(v) if v.format == VisualFormat::Mjpeg => Kind::Mjpeg,
            Codec::Video(v) if v.format == VisualFormat::Y4m => Kind::Y4m,
            Codec::Video(v) if v.format == VisualFormat::Fmp4 => Kind::Fmp4,
            Codec::Audio(a)
                if matches!(
                    a.sample_format,
                    SampleFormat::Int
                        | SampleFormat::Float
                        | SampleFormat::MuLaw
                        | SampleFormat::ALaw
                ) =>
            {
                Kind::Wav(a)
            }
            other => {
                return Err(MediaError::unsupported(
                    "recording",
                    format!(
                        "{} channels are not recorded (MJPEG, Y4M, PCM audio and fMP4 are)",
                        other.summary()
                    ),
                ));
            }
        };
        Ok(Self {
            kind,
            header: None,
            run_init: Vec::new(),
            unit: Vec::new(),
            unit_pts: 0,
            in_unit: false,
            skipping: false,
            expect_seq: None,
            data_bytes: 0,
            first_pts: None,
            end_us: 0,
            timescales: Vec::new(),
            shifts: Vec::new(),
            units: 0,
        })
    }

    /// The file extension players expect: `mjpeg`, `y4m`, `wav` or `mp4`.
    pub fn extension(&self) -> &'static str {
        match self.kind {
            Kind::Mjpeg => "mjpeg",
            Kind::Y4m => "y4m",
            Kind::Wav(_) => "wav",
            Kind::Fmp4 => "mp4",
        }
    }

    /// Whole units written.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Media time recorded, from the first unit's start to the last one's end.
    pub fn duration_us(&self) -> u64 {
        self.first_pts.map_or(0, |f| self.end_us.saturating_sub(f))
    }

    /// The file's header as it must read once the recording stops (WAV: with the sizes of
    /// what was written); write it at offset 0. `None`: the format has no header to rewrite.
    pub fn header(&self) -> Option<Vec<u8>> {
        self.wav_header(u32::try_from(self.data_bytes).unwrap_or(u32::MAX))
    }

    /// A WAV header for `data` bytes of samples; `u32::MAX`: unknown yet, as streaming
    /// writers leave it (players then read to the end of the file), so that a recording killed
    /// before it could rewrite its header still opens.
    fn wav_header(&self, data: u32) -> Option<Vec<u8>> {
        let Kind::Wav(a) = self.kind else {
            return None;
        };
        let tag: u16 = match a.sample_format {
            SampleFormat::Float => 3,
            SampleFormat::MuLaw => 7,
            SampleFormat::ALaw => 6,
            _ => 1,
        };
        let block = a.bytes_per_frame();
        let mut h = Vec::with_capacity(44);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&data.saturating_add(36).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&tag.to_le_bytes());
        h.extend_from_slice(&a.channels.to_le_bytes());
        h.extend_from_slice(&a.sample_rate.to_le_bytes());
        h.extend_from_slice(&(a.sample_rate.saturating_mul(block)).to_le_bytes());
        h.extend_from_slice(&(block as u16).to_le_bytes());
        h.extend_from_slice(&a.bits_per_sample.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data.to_le_bytes());
        Some(h)
    }

    /// A new publisher run starts (the viewer subscribed again after its publisher was lost):
    /// a unit in progress is dropped, and the run's header is compared with the file's.
    pub fn restart(&mut self) {
        self.unit.clear();
        self.in_unit = false;
        self.skipping = false;
        self.expect_seq = None;
        self.run_init.clear();
        self.shifts.clear();
    }

    /// Takes the channel's next chunk; appends what goes to the file to `out`.
    pub fn chunk(&mut self, c: &Chunk, out: &mut Vec<u8>) -> Result<Written, MediaError> {
        if self.expect_seq.is_some_and(|s| s != c.seq) {
            // A gap: the unit it cuts is lost whole, and since a chunk does not say whether it
            // starts a unit, everything up to the next unit's end goes too (unless init
            // chunks come first, which only ever precede a unit's start).
            self.unit.clear();
            self.in_unit = false;
            self.skipping = !c.has(ChunkFlags::INIT);
        }
        self.expect_seq = Some(c.seq + 1);
        if self.skipping && !c.has(ChunkFlags::INIT) {
            self.skipping = !c.has(ChunkFlags::END_OF_UNIT);
            return Ok(Written::Appended);
        }
        self.skipping = false;
        if c.has(ChunkFlags::INIT) {
            if !c.payload.is_empty() && self.run_init.len() + c.payload.len() <= MAX_UNIT {
                self.run_init.extend_from_slice(&c.payload);
            }
            return Ok(Written::Appended);
        }
        if !self.run_init.is_empty() || (self.header.is_none() && self.units == 0) {
            // The first unit of a run: its header decides whether this file goes on.
            let init = std::mem::take(&mut self.run_init);
            match (&self.kind, &self.header) {
                (Kind::Y4m | Kind::Fmp4, Some(h)) if *h != init => {
                    self.run_init = init;
                    return Ok(Written::NewFile);
                }
                (Kind::Y4m | Kind::Fmp4, None) => {
                    if init.is_empty() {
                        return Err(MediaError::corrupt(
                            "recording",
                            "the channel's header did not arrive before its first unit",
                        ));
                    }
                    if self.kind == Kind::Fmp4 {
                        self.timescales = fmp4::timescales(&init)?;
                    }
                    out.extend_from_slice(&init);
                    self.header = Some(init);
                }
                (Kind::Wav(_), _) if self.header.is_none() && self.units == 0 => {
                    out.extend_from_slice(&self.wav_header(u32::MAX).unwrap_or_default());
                    self.header = Some(Vec::new());
                }
                _ => {}
            }
        }
        if !self.in_unit {
            self.in_unit = true;
            self.unit_pts = c.pts_us;
            self.unit.clear();
        }
        if self.unit.len() + c.payload.len() > MAX_UNIT {
            return Err(MediaError::TooLarge {
                what: "recorded unit",
                size: (self.unit.len() + c.payload.len()) as u64,
                limit: MAX_UNIT as u64,
            });
        }
        self.unit.extend_from_slice(&c.payload);
        if !c.has(ChunkFlags::END_OF_UNIT) {
            return Ok(Written::Appended);
        }
        self.in_unit = false;
        let mut unit = std::mem::take(&mut self.unit);
        let first = *self.first_pts.get_or_insert(self.unit_pts);
        if self.kind == Kind::Fmp4 {
            let at_us = i128::from(self.unit_pts.saturating_sub(first));
            let (timescales, shifts) = (&self.timescales, &mut self.shifts);
            fmp4::map_tfdt(&mut unit, |track, dts| {
                let shift = match shifts.iter().find(|(t, _)| *t == track) {
                    Some((_, s)) => *s,
                    None => {
                        let ts = timescales
                            .iter()
                            .find(|(t, _)| *t == track)
                            .map_or(1, |(_, ts)| i128::from(*ts));
                        let s = at_us * ts / 1_000_000 - i128::from(dts);
                        shifts.push((track, s));
                        s
                    }
                };
                u64::try_from((i128::from(dts) + shift).max(0)).unwrap_or(u64::MAX)
            })?;
        }
        self.end_us = self.end_us.max(self.unit_pts + u64::from(c.duration_us));
        self.data_bytes += unit.len() as u64;
        self.units += 1;
        out.extend_from_slice(&unit);
        self.unit = unit;
        self.unit.clear();
        Ok(Written::Appended)
    }

    /// Whether the chunk starts a keyframe unit: where a new segment file may begin.
    pub fn at_key(&self, c: &Chunk) -> bool {
        !self.in_unit && !c.has(ChunkFlags::INIT) && c.has(ChunkFlags::KEY)
    }

    /// The header bytes of the current run, for a new file begun at [`Written::NewFile`] or
    /// at a segment boundary: gives them to `next`, so that its file starts with them.
    pub fn hand_over(&mut self, next: &mut Self) {
        next.run_init = match (&self.header, self.run_init.is_empty()) {
            (_, false) => std::mem::take(&mut self.run_init),
            (Some(h), true) => h.clone(),
            (None, true) => Vec::new(),
        };
        // The chunk that asked for the new file is given to `next` again: no gap before it.
        next.expect_seq = None;
    }
}
