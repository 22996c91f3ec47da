//! `file:PATH`: the stream's bytes as they arrived, init chunks included.
//!
//! Chunk payloads concatenated in order are the served file byte for byte, so a `file:` sink
//! of a WAV rebuilds the WAV (header, PCM and trailing chunks). Bytes are written on arrival,
//! not at play time: this sink records the stream, it does not render it.

use bytes::Bytes;
use chunkcast_media::playout::{Concealment, Unit};
use chunkcast_protocol::{Chunk, ChunkFlags};

use super::{Output, Sink, Target};
use crate::error::ClientError;

/// Saves the stream's bytes.
pub struct File {
    out: Output,
    /// Whether the `END_OF_STREAM` chunk arrived: only a whole stream goes under the final
    /// name.
    complete: bool,
}

impl File {
    /// Starts writing to `target` (`PATH.partial` for a file).
    pub fn create(target: &Target) -> Result<Self, ClientError> {
        Ok(Self {
            out: Output::create(target)?,
            complete: false,
        })
    }
}

impl Sink for File {
    fn arrived(&mut self, chunk: &Chunk) -> Result<(), ClientError> {
        self.out.write_all(&chunk.payload)?;
        self.out.unit_done()?;
        self.complete |= chunk.has(ChunkFlags::END_OF_STREAM);
        Ok(())
    }

    fn play(&mut self, _: &Unit<Bytes>) -> Result<(), ClientError> {
        Ok(())
    }

    fn conceal(&mut self, _: u64, _: u32, _: Concealment) -> Result<(), ClientError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ClientError> {
        if self.complete {
            return self.out.finish();
        }
        // Interrupted: what arrived stays in PATH.partial, and the final name stays free of a
        // truncated file (as `get` does).
        if let Some(partial) = self.out.keep_partial()? {
            eprintln!(
                "chunkcast: file sink: the stream did not finish; what arrived is in {}",
                partial.display()
            );
        }
        Ok(())
    }
}
