//! chunkcast's protocol core: everything server and client share that does no I/O.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod chat;
pub mod compress;
pub mod conn;
pub mod error;
pub mod media;
pub mod session;
pub mod verify;
pub mod wire;

pub use error::{DecodeError, ErrorCode};
pub use media::{
    AudioParams, Codec, CodedAudio, ImageParams, MediaKind, SampleFormat, VideoParams, VisualFormat,
};
pub use wire::chunk::{Chunk, ChunkFlags, StreamId};
pub use wire::frame::{Caps, Frame};
