//! The wire format: frames, their encoding and decoding (see `docs/PROTOCOL.md`).

pub mod chunk;
pub mod codec;
pub mod frame;
mod layout;

pub use codec::{
    CHUNK_OVERHEAD, DEFAULT_MAX_PAYLOAD, Decoder, Limits, encode, encode_chunk_head,
    encode_detached_chunk_head, parse,
};
pub use frame::{
    Caps, Catalog, Chat, ChatKind, Entry, ErrorFrame, FileDigest, Frame, FrameType, Hello, MAGIC,
    MAX_CHAT_TEXT, MAX_NOTE_LEN, MAX_RELAY_PATH, MIN_VERSION, Mode, Open, Opened, Resume,
    VERIFIED_VERSION, VERSION, Welcome, clip_note,
};
