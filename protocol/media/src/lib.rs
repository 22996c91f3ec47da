//! chunkcast's media layer: everything between a media file and the wire's chunks, sans-IO.
//!
//! Where things are:
//! - [`packetize`]: [`Packetizer`] cuts a file into timed, flagged chunks whose payloads are
//!   the file byte for byte; one layout per format (WAV, MJPEG, Y4M, MP4, images, bytes);
//! - [`reassemble`]: [`Reassembler`] puts chunks back in file order, checks length and digest;
//! - [`units`]: [`UnitAssembler`] groups in-order chunks into whole media units for playback;
//! - [`playout`]: the jitter buffer that schedules units against a clock;
//! - [`fragment`]: [`Fragmenter`](fragment::Fragmenter) turns a progressive MP4 into an init
//!   segment and fragments (fMP4), for Media Source Extensions, HLS and `FRAGMENT` opens;
//! - [`fanout`]: one live channel to many viewers, by reference, with a slow-viewer policy;
//! - [`pace`]: sends at media time;
//! - [`ingest`]: [`LiveInput`](ingest::LiveInput) cuts a live byte stream (a pipe: MJPEG,
//!   Y4M, WAV, PCM, fragmented MP4) into chunks as it arrives;
//! - [`reader`] (feature `reader`): a file read on a blocking thread into a bounded queue of
//!   chunks, for the server's files and the client's publisher.
//!
//! The wire format these chunks travel in is `chunkcast-protocol`'s; this crate depends on it
//! and on the media parsers (hound, image, mp4parse), which the protocol crate does not.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod adapt;
pub mod fanout;
pub mod fragment;
pub mod ingest;
pub mod pace;
pub mod packetize;
pub mod playout;
#[cfg(feature = "reader")]
pub mod reader;
pub mod reassemble;
pub mod units;

pub use packetize::{
    Config, DEFAULT_AUDIO_CHUNK_US, DEFAULT_CHUNK_SIZE, MAX_AUDIO_CHUNK_US, MAX_CHUNK_SIZE,
    MAX_FRAME_BYTES, MAX_IMAGE_ALLOC, MAX_IMAGE_DIMENSION, MAX_MOOV_BYTES, MAX_MP4_SAMPLES,
    MediaError, Packetizer, frame_pts_us, frames_to_us,
};
pub use reassemble::{DEFAULT_MAX_PENDING_BYTES, Expect, Reassembler, ReassemblyError, Summary};
pub use units::{Unit, UnitAssembler, UnitError, pcm_to_f32};
