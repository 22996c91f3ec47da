//! `mjpeg:-`: each played JPEG frame on stdout, back to back (Motion JPEG, as
//! `ffmpeg -f mjpeg` reads it).
//!
//! A freeze repeats the last frame once per frame interval, so the output keeps one frame
//! per frame time and a downstream player or muxer stays in real time.

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{Codec, VisualFormat};

use super::{Output, Sink, Target};
use crate::error::ClientError;

/// Writes played JPEG frames.
pub struct Mjpeg {
    out: Output,
    last: Option<Bytes>,
    /// The last frame's duration: the interval at which a freeze repeats it.
    frame_us: u64,
    /// Frozen media time not yet covered by repeated frames (negative when the last repeat
    /// covered more than its share).
    frozen_us: i64,
}

impl Mjpeg {
    /// Starts writing a stream of `codec` (MJPEG video or a JPEG image) to `target`.
    pub fn create(target: &Target, codec: &Codec) -> Result<Self, ClientError> {
        match codec {
            Codec::Video(v) if v.format == VisualFormat::Mjpeg => {}
            Codec::Image(i) if i.format == VisualFormat::Jpeg => {}
            other => {
                return Err(ClientError::Usage(format!(
                    "the mjpeg sink plays Motion JPEG, and this stream is {}; try --sink frames:DIR or file:PATH",
                    other.summary()
                )));
            }
        }
        Ok(Self {
            out: Output::create(target)?,
            last: None,
            frame_us: 0,
            frozen_us: 0,
        })
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        self.out.write_all(frame)?;
        self.out.unit_done()
    }
}

impl Sink for Mjpeg {
    fn play(&mut self, unit: &Unit<Bytes>) -> Result<(), ClientError> {
        self.write(&unit.payload)?;
        self.last = Some(unit.payload.clone());
        self.frame_us = u64::from(unit.duration_us);
        self.frozen_us = 0;
        Ok(())
    }

    fn conceal(&mut self, _: u64, duration_us: u32, _: Concealment) -> Result<(), ClientError> {
        let Some(last) = self.last.clone() else {
            return Ok(());
        };
        if self.frame_us == 0 {
            return Ok(());
        }
        // Repeat on the frame grid, rounding to the nearest frame with the remainder carried,
        // so pieces shorter or longer than a frame still add up to one frame per interval.
        let frame = i64::try_from(self.frame_us).unwrap_or(i64::MAX);
        self.frozen_us = self.frozen_us.saturating_add(i64::from(duration_us));
        while self.frozen_us.saturating_mul(2) >= frame {
            self.write(&last)?;
            self.frozen_us -= frame;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        self.out.finish()
    }
}
