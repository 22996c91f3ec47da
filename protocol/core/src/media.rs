//! What a stream carries: its media kind and codec parameters, as announced at open.

/// The broad kind of a stream, which decides how it is cut and how it is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MediaKind {
    /// Opaque bytes: cut at the chunk size, no timing.
    Bytes = 0,
    /// PCM audio (WAV).
    Audio = 1,
    /// Video: one unit per frame (MJPEG, Y4M) or per sample (MP4).
    Video = 2,
    /// A still image, chunked at the chunk size.
    Image = 3,
}

impl MediaKind {
    /// The kind for a wire code, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Bytes,
            1 => Self::Audio,
            2 => Self::Video,
            3 => Self::Image,
            _ => return None,
        })
    }

    /// The lower-case name used in listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Image => "image",
        }
    }
}

/// How audio samples are stored: linear PCM, G.711 companded, or another WAVE codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// Signed integers (unsigned for 8-bit, as WAV stores them).
    Int,
    /// IEEE float.
    Float,
    /// G.711 µ-law, one byte per sample (WAVE format tag 0x0007).
    MuLaw,
    /// G.711 A-law, one byte per sample (WAVE format tag 0x0006).
    ALaw,
    /// Any other coding, cut in whole blocks (ADPCM, GSM 6.10, MPEG, ...).
    Coded(CodedAudio),
}

/// A block-coded audio stream, as its WAVE `fmt ` chunk describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodedAudio {
    /// The WAVE format tag (for WAVE_FORMAT_EXTENSIBLE, the sub-format's): 0x0002 MS-ADPCM,
    /// 0x0011 IMA-ADPCM, 0x0031 GSM 6.10, 0x0050/0x0055 MPEG, ...
    pub tag: u16,
    /// Bytes per block, the smallest unit the stream can be cut at (never 0).
    pub block_align: u16,
    /// Sample frames one block decodes to; 0 when unknown (timing then follows the byte rate).
    pub samples_per_block: u32,
}

impl CodedAudio {
    /// The codec's usual name, e.g. `ms-adpcm`, or `wave-0xNNNN` for an unknown tag.
    pub fn name(&self) -> String {
        coded_name(self.tag)
    }
}

/// The usual name of a WAVE format tag.
pub fn coded_name(tag: u16) -> String {
    match tag {
        0x0001 => "pcm".into(),
        0x0002 => "ms-adpcm".into(),
        0x0003 => "pcm-float".into(),
        0x0006 => "a-law".into(),
        0x0007 => "mu-law".into(),
        0x0011 => "ima-adpcm".into(),
        0x0031 => "gsm610".into(),
        0x0050 => "mpeg".into(),
        0x0055 => "mp3".into(),
        0x0161 => "wma".into(),
        0x2000 => "ac3".into(),
        t => format!("wave-0x{t:04x}"),
    }
}

impl SampleFormat {
    /// The wire code (PROTOCOL.md §2): 0 int, 1 float, 2 µ-law, 3 A-law, 4 coded.
    pub fn code(self) -> u8 {
        match self {
            Self::Int => 0,
            Self::Float => 1,
            Self::MuLaw => 2,
            Self::ALaw => 3,
            Self::Coded(_) => 4,
        }
    }

    /// Whether this is linear PCM (integer or float), which sinks take as it is.
    pub fn is_pcm(self) -> bool {
        matches!(self, Self::Int | Self::Float)
    }
}

/// Audio codec parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioParams {
    /// Frames per second.
    pub sample_rate: u32,
    /// Interleaved channels per frame.
    pub channels: u16,
    /// Bits per sample: 8, 16, 24 or 32 for PCM, 8 for G.711; for coded audio what the
    /// `fmt ` chunk says (4 for ADPCM, often 0).
    pub bits_per_sample: u16,
    /// Integer or float samples, or a coding.
    pub sample_format: SampleFormat,
}

impl AudioParams {
    /// Bytes in one frame (one sample of every channel): the smallest piece the stream can be
    /// cut at. For coded audio, one block.
    pub fn bytes_per_frame(&self) -> u32 {
        match self.sample_format {
            SampleFormat::Coded(c) => u32::from(c.block_align),
            _ => u32::from(self.channels) * u32::from(self.bits_per_sample).div_ceil(8),
        }
    }
}

/// The container or coding of a video or image stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum VisualFormat {
    /// Concatenated JPEG frames (Motion-JPEG).
    Mjpeg = 0,
    /// YUV4MPEG2 raw frames.
    Y4m = 1,
    /// ISO BMFF (MP4) with H.264.
    Mp4 = 2,
    /// PNG image.
    Png = 3,
    /// JPEG image.
    Jpeg = 4,
    /// GIF image.
    Gif = 5,
    /// BMP image.
    Bmp = 6,
    /// WebP image.
    WebP = 7,
    /// TIFF image.
    Tiff = 8,
    /// Fragmented ISO BMFF (fMP4), live: the init segment (`ftyp` + `moov`) travels as `INIT`
    /// chunks and each fragment (`moof` + `mdat`) as one unit; the codecs (H.264/H.265 video,
    /// AAC/Opus audio) are the init segment's.
    Fmp4 = 9,
}

impl VisualFormat {
    /// The format for a wire code, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Mjpeg,
            1 => Self::Y4m,
            2 => Self::Mp4,
            3 => Self::Png,
            4 => Self::Jpeg,
            5 => Self::Gif,
            6 => Self::Bmp,
            7 => Self::WebP,
            8 => Self::Tiff,
            9 => Self::Fmp4,
            _ => return None,
        })
    }

    /// The lower-case name used in listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mjpeg => "mjpeg",
            Self::Y4m => "y4m",
            Self::Mp4 => "mp4",
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Gif => "gif",
            Self::Bmp => "bmp",
            Self::WebP => "webp",
            Self::Tiff => "tiff",
            Self::Fmp4 => "fmp4",
        }
    }

    /// Whether the bytes are already entropy-coded, so that lz4 would only cost time.
    pub fn is_compressed(self) -> bool {
        !matches!(self, Self::Y4m | Self::Bmp | Self::Tiff)
    }
}

/// Video codec parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoParams {
    /// The coding or container.
    pub format: VisualFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate numerator.
    pub fps_num: u32,
    /// Frame rate denominator (never 0 on the wire).
    pub fps_den: u32,
}

/// Image parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageParams {
    /// The coding.
    pub format: VisualFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The `image` crate's colour type, as a code: 0 L8, 1 La8, 2 Rgb8, 3 Rgba8, 4 L16,
    /// 5 La16, 6 Rgb16, 7 Rgba16, 8 Rgb32F, 9 Rgba32F, 255 other.
    pub color: u8,
}

/// What a stream carries, with the parameters a player needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opaque bytes.
    Bytes,
    /// PCM audio.
    Audio(AudioParams),
    /// Video frames.
    Video(VideoParams),
    /// A still image.
    Image(ImageParams),
}

impl Codec {
    /// The broad kind.
    pub fn kind(&self) -> MediaKind {
        match self {
            Self::Bytes => MediaKind::Bytes,
            Self::Audio(_) => MediaKind::Audio,
            Self::Video(_) => MediaKind::Video,
            Self::Image(_) => MediaKind::Image,
        }
    }

    /// Whether peers without `Caps::ANY_FILE` can parse this codec (coded audio sample
    /// formats are newer than them).
    pub fn is_v1_base(&self) -> bool {
        !matches!(self, Self::Audio(a) if !a.sample_format.is_pcm())
    }

    /// Whether lz4 is worth trying on this stream's chunks.
    pub fn worth_compressing(&self) -> bool {
        match self {
            Self::Bytes | Self::Audio(_) => true,
            Self::Video(v) => !v.format.is_compressed(),
            Self::Image(i) => !i.format.is_compressed(),
        }
    }

    /// A one-line human summary, e.g. `pcm s16 48000 Hz 2 ch` or `mjpeg 320x240 25 fps`.
    pub fn summary(&self) -> String {
        match self {
            Self::Bytes => "bytes".to_owned(),
            Self::Audio(a) => {
                let ty = match a.sample_format {
                    SampleFormat::Int if a.bits_per_sample == 8 => "u",
                    SampleFormat::Int => "s",
                    SampleFormat::Float => "f",
                    SampleFormat::MuLaw => "mu-law",
                    SampleFormat::ALaw => "a-law",
                    SampleFormat::Coded(c) => {
                        return format!("{} {} Hz {} ch", c.name(), a.sample_rate, a.channels);
                    }
                };
                if !a.sample_format.is_pcm() {
                    return format!("{ty} {} Hz {} ch", a.sample_rate, a.channels);
                }
                format!(
                    "pcm {ty}{} {} Hz {} ch",
                    a.bits_per_sample, a.sample_rate, a.channels
                )
            }
            Self::Video(v) => {
                let fps = f64::from(v.fps_num) / f64::from(v.fps_den.max(1));
                format!("{} {}x{} {fps:.3} fps", v.format.name(), v.width, v.height)
                    .replace(".000 fps", " fps")
            }
            Self::Image(i) => format!("{} {}x{}", i.format.name(), i.width, i.height),
        }
    }
}
