//! The frames of protocol v1 and their fields. Byte layouts are in `docs/PROTOCOL.md`.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::media::Codec;
use crate::wire::chunk::{Chunk, StreamId};

/// The highest protocol version this build speaks: 2 adds verified streaming
/// ([`Caps::VERIFIED`], [`Frame::Proof`]). Version 1 peers are still served as before.
pub const VERSION: u16 = 2;

/// The lowest protocol version this build speaks.
pub const MIN_VERSION: u16 = 1;

/// The first version with [`Caps::VERIFIED`] and the `PROOF` frame.
pub const VERIFIED_VERSION: u16 = 2;

/// The four bytes that open every `HELLO`: they tell a chunkcast peer from a stray client
/// (and, being ASCII, from a TLS record, whose first byte is 0x16).
pub const MAGIC: [u8; 4] = *b"CKCS";

/// Capability bits exchanged in `HELLO` and `WELCOME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caps(pub u32);

impl Caps {
    /// Per-chunk lz4 compression.
    pub const LZ4: Self = Self(0x1);
    /// QUIC datagrams for realtime audio.
    pub const DATAGRAMS: Self = Self(0x2);
    /// The receiver understands `OPENED` announcing the digest for the end
    /// ([`FileDigest::AtEnd`]) and the `DIGEST` frame that then follows the stream.
    pub const DIGEST_AT_END: Self = Self(0x4);
    /// The receiver takes files of any content: the optional `note` of `OPENED` and of
    /// `CATALOG` entries (why a file is served as bytes, or what is damaged in it), and the
    /// coded audio sample formats (µ-law, A-law, any other WAVE format tag). A peer without
    /// it gets neither: such files reach it as plain bytes streams.
    pub const ANY_FILE: Self = Self(0x8);
    /// Verified streaming (version 2): a file stream that starts on a group boundary comes
    /// with the BLAKE3 tree nodes (`PROOF` frames) that prove each chunk against the file's
    /// digest as it arrives (see [`crate::verify`]).
    pub const VERIFIED: Self = Self(0x10);
    /// Chat beside calls and live channels: the `CHAT` frame (see [`Chat`]).
    pub const CHAT: Self = Self(0x20);
    /// The receiver takes chunks of a verified stream whose CRC covers their header only
    /// ([`crate::ChunkFlags::HEADER_CRC`]): the hash tree proves the payload.
    pub const HEADER_CRC: Self = Self(0x40);
    /// The client is an edge relay of this server: its subscriptions are counted as upstream
    /// subscriptions (one per channel per edge), and the server may be one itself (chains).
    pub const RELAY: Self = Self(0x80);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits both sides set.
    #[must_use]
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
}

impl std::ops::BitOr for Caps {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Client → server, the first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest version the client speaks.
    pub min_version: u16,
    /// Highest version the client speaks.
    pub max_version: u16,
    /// What the client can do.
    pub caps: Caps,
    /// The shared secret, empty when none.
    pub token: String,
    /// A free-form name for logs, e.g. `chunkcast/0.1.0`.
    pub client_name: String,
}

/// Server → client: the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version both speak from now on.
    pub version: u16,
    /// The capabilities both have.
    pub caps: Caps,
    /// The server's id for this connection, for logs on both sides.
    pub session_id: u64,
    /// A free-form name for logs.
    pub server_name: String,
}

/// Either direction: a request failed, or (`request` 0) the connection is failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The request it answers; 0 for the connection.
    pub request: u32,
    /// What kind of failure.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

/// How a stream is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// As fast as backpressure allows.
    Download,
    /// Paced by presentation timestamps.
    Realtime,
}

/// Where an opened stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resume {
    /// From the beginning.
    Start,
    /// From this chunk sequence number (chunking as the first open did).
    Seq(u64),
    /// From this byte offset of the file, as plain bytes chunks.
    Offset(u64),
}

/// Client → server: open a stream of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Request id, echoed by `OPENED` or `ERROR`.
    pub request: u32,
    /// The id the client gives the stream; unique among its open streams.
    pub stream: StreamId,
    /// Path within the server's library, `/`-separated, no leading `/`.
    pub path: String,
    /// Pacing.
    pub mode: Mode,
    /// Start position.
    pub resume: Resume,
    /// Ask for lz4 where it pays (needs the `LZ4` capability).
    pub compress: bool,
    /// Serve as bytes whatever the format.
    pub raw: bool,
    /// Serve a progressive MP4 as fragmented MP4 (protocol version 2; see PROTOCOL.md §4.8).
    pub fragment: bool,
    /// The client checks every chunk of this stream against its hash tree, so the server may
    /// send them with a CRC over their header only ([`crate::ChunkFlags::HEADER_CRC`]). Only
    /// with [`Caps::HEADER_CRC`].
    pub header_crc: bool,
    /// Requested payload bytes per chunk; 0 lets the server choose.
    pub chunk_size: u32,
}

/// Server → client: a stream is open; what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The request it answers.
    pub request: u32,
    /// The stream.
    pub stream: StreamId,
    /// Kind and codec parameters.
    pub codec: Codec,
    /// Size of the whole file in bytes, when known.
    pub total_len: Option<u64>,
    /// Number of chunks from the stream's start, when known.
    pub chunk_count: Option<u64>,
    /// Media duration in microseconds, when known.
    pub duration_us: Option<u64>,
    /// BLAKE3 of the whole file: here, after the stream, or not at all (live channels).
    pub digest: FileDigest,
    /// Sequence number of the first chunk that will be sent.
    pub start_seq: u64,
    /// Byte offset of the first chunk's payload.
    pub start_offset: u64,
    /// Payload bytes per chunk that the server uses.
    pub chunk_size: u32,
    /// Why the file is served as it is, for the user: the reason it is served as bytes
    /// although it looked like media (`served as bytes: corrupt png: …`), or what is damaged
    /// in a file served as media. Only sent to a peer with [`Caps::ANY_FILE`].
    pub note: Option<String>,
}

/// What an `OPENED` says about the BLAKE3 digest of the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileDigest {
    /// No digest (live channels).
    #[default]
    None,
    /// The digest, known before the first chunk (the server had it cached, or the stream
    /// resumes from a byte offset and the server hashed the whole file first).
    Known([u8; 32]),
    /// The server hashes the file as it sends it and sends the digest in a `DIGEST` frame
    /// once the stream's last chunk is on its way: the first chunk need not wait for a
    /// whole-file hash.
    AtEnd,
}

impl FileDigest {
    /// The digest, if this frame carries it.
    pub fn known(self) -> Option<[u8; 32]> {
        match self {
            Self::Known(d) => Some(d),
            Self::None | Self::AtEnd => None,
        }
    }
}

/// One entry of a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path within the library (or `live/NAME`).
    pub path: String,
    /// Kind and parameters.
    pub codec: Codec,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Duration in microseconds, when known.
    pub duration_us: Option<u64>,
    /// Current viewers (live channels); 0 for files.
    pub viewers: u32,
    /// As [`Opened::note`]: why the file would be served as bytes, or what is damaged in it.
    /// Only sent to a peer with [`Caps::ANY_FILE`].
    pub note: Option<String>,
}

impl Entry {
    /// The entry as a peer with `caps` may receive it: without [`Caps::ANY_FILE`], no note,
    /// and a coded audio file listed as bytes (which is how it would be served to that peer).
    #[must_use]
    pub fn for_peer(mut self, caps: Caps) -> Self {
        if !caps.contains(Caps::ANY_FILE) {
            self.note = None;
            if !self.codec.is_v1_base() {
                self.codec = Codec::Bytes;
                self.duration_us = None;
            }
        }
        self
    }
}

/// The longest note sent (`OPENED.note`, a catalog entry's note), in bytes: a decoder's error
/// text can be long, and a listing carries one per file.
pub const MAX_NOTE_LEN: usize = 512;

/// `note` cut to at most [`MAX_NOTE_LEN`] bytes, at a character boundary, with `…` when cut.
pub fn clip_note(note: &str) -> String {
    if note.len() <= MAX_NOTE_LEN {
        return note.to_owned();
    }
    let mut end = MAX_NOTE_LEN - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

/// Server → client: part of a listing. A listing is one or more of these, the last one with
/// `last` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The `LIST` request it answers.
    pub request: u32,
    /// Whether this is the listing's final part.
    pub last: bool,
    /// Entries in this part.
    pub entries: Vec<Entry>,
}

/// What a `CHAT` frame does ([`Chat::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    /// Client → server: a message by `author`, its `seq`-th (from 1).
    Send,
    /// Server → client: every message of `author` up to `seq` is stored and relayed.
    Ack,
    /// Client → server: receive the room's messages after room sequence number `seq` (0 for
    /// all the server still holds), then every new one.
    Join,
    /// Server → client: the room's `seq`-th message (from 1), by `author`.
    Message,
}

impl ChatKind {
    /// The kind's wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Send => 0,
            Self::Ack => 1,
            Self::Join => 2,
            Self::Message => 3,
        }
    }

    /// The kind for a wire value; `None` for one this version does not define.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Send),
            1 => Some(Self::Ack),
            2 => Some(Self::Join),
            3 => Some(Self::Message),
            _ => None,
        }
    }
}

/// The longest chat text, in bytes: a message is a line a person typed, not a file.
pub const MAX_CHAT_TEXT: usize = 4096;

/// Either direction, with [`Caps::CHAT`]: a chat message, its acknowledgement, or a join. One
/// layout for the four kinds; a field a kind does not use is 0 (or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// What this frame does.
    pub kind: ChatKind,
    /// The room: a call room (`call/ROOM`) or a live channel (`live/NAME`).
    pub room: String,
    /// Who wrote it: an id the writer chose, the same across its reconnections, so that the
    /// server can tell a resent message from a new one.
    pub author: u64,
    /// The author's sequence number (`Send`, `Ack`) or the room's (`Join`, `Message`).
    pub seq: u64,
    /// When the author sent it, µs on the server's clock (as calls stamp media).
    pub sent_us: u64,
    /// The message, at most [`MAX_CHAT_TEXT`] bytes of UTF-8.
    pub text: String,
}

/// One protocol v1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`ErrorFrame`].
    Error(ErrorFrame),
    /// Either direction: asks for a `PONG`.
    Ping {
        /// Echoed back.
        nonce: u64,
        /// The sender's clock, microseconds since an arbitrary epoch of its own.
        time_us: u64,
    },
    /// The answer to a `PING`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
        /// The ping's `time_us`, echoed.
        echo_us: u64,
        /// The responder's clock when it answered, for clock-offset estimates.
        time_us: u64,
    },
    /// Client → server: list what is under a prefix (`""` for the library, `live/` for channels).
    List {
        /// Request id.
        request: u32,
        /// Path prefix.
        prefix: String,
    },
    /// See [`Catalog`].
    Catalog(Catalog),
    /// See [`Open`].
    Open(Open),
    /// See [`Opened`].
    Opened(Opened),
    /// See [`Chunk`].
    Chunk(Chunk),
    /// Either direction: stop a stream (the client cancels; the server aborts with a code).
    Close {
        /// The stream.
        stream: StreamId,
        /// Why; [`ErrorCode::None`] for a plain cancel.
        code: ErrorCode,
        /// A human-readable explanation, may be empty.
        message: String,
    },
    /// Client → server: announce a live source; its chunks follow on `stream`.
    Publish {
        /// Request id, answered by `OPENED` or `ERROR`.
        request: u32,
        /// The stream the client will send on.
        stream: StreamId,
        /// Channel name (`live/NAME` or `call/ROOM`).
        channel: String,
        /// What the source carries.
        codec: Codec,
    },
    /// Client → server: receive a live channel on `stream`.
    Subscribe {
        /// Request id, answered by `OPENED` or `ERROR`.
        request: u32,
        /// The stream the server will send on.
        stream: StreamId,
        /// Channel name.
        channel: String,
    },
    /// Server → client: the BLAKE3 of the whole file of a stream whose `OPENED` said
    /// [`FileDigest::AtEnd`], sent after the stream's last chunk.
    Digest {
        /// The stream.
        stream: StreamId,
        /// BLAKE3-256 of the whole file.
        digest: [u8; 32],
    },
    /// Server → client, version 2 with [`Caps::VERIFIED`]: the BLAKE3 tree nodes the client
    /// needs before the groups that start in the stream's next chunk (see
    /// [`crate::verify::Outboard::proof`]).
    Proof {
        /// The stream.
        stream: StreamId,
        /// Whole 64-byte parent nodes (left CV, right CV), in the order they are needed.
        nodes: Bytes,
    },
    /// Either direction: the sender closes the connection after this frame.
    Goodbye {
        /// Why; [`ErrorCode::None`] for a normal close.
        code: ErrorCode,
        /// A human-readable explanation, may be empty.
        message: String,
    },
    /// See [`Chat`].
    Chat(Chat),
    /// Client → server, with [`Caps::RELAY`], before the relay's subscriptions: the relays the
    /// subscriptions come through, the farthest from this server first and the sender last.
    /// Its length is the number of relay hops; a server finding its own id in it, or more
    /// hops than it allows, refuses the connection's subscriptions with `relay` (18).
    Relay {
        /// Each relay's id (random, chosen once per server process), at most
        /// [`MAX_RELAY_PATH`].
        path: Vec<u64>,
    },
}

/// The most relay ids a `RELAY` frame carries (its count is one byte).
pub const MAX_RELAY_PATH: usize = 255;

/// Declares [`FrameType`] from one table: each type's byte and name are written once.
macro_rules! frame_types {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $value:literal, $name:literal;
    )*) => {
        /// The type byte that follows a frame's length prefix (see `docs/PROTOCOL.md`). The
        /// values are part of the wire format (pinned by a test).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum FrameType {
            $(
                $(#[doc = $doc])*
                $variant = $value,
            )*
        }

        impl FrameType {
            /// Every frame type this version defines, in value order.
            pub const ALL: &'static [FrameType] = &[$(Self::$variant),*];

            /// The type byte.
            pub const fn to_u8(self) -> u8 {
                self as u8
            }

            /// The type for a type byte; `None` for one this version does not define.
            pub const fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The frame's name as the specification writes it (`HELLO`), for logs and errors.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

frame_types! {
    /// [`Frame::Hello`].
    Hello = 0x01, "HELLO";
    /// [`Frame::Welcome`].
    Welcome = 0x02, "WELCOME";
    /// [`Frame::Error`].
    Error = 0x03, "ERROR";
    /// [`Frame::Ping`].
    Ping = 0x04, "PING";
    /// [`Frame::Pong`].
    Pong = 0x05, "PONG";
    /// [`Frame::List`].
    List = 0x06, "LIST";
    /// [`Frame::Catalog`].
    Catalog = 0x07, "CATALOG";
    /// [`Frame::Open`].
    Open = 0x08, "OPEN";
    /// [`Frame::Opened`].
    Opened = 0x09, "OPENED";
    /// [`Frame::Chunk`].
    Chunk = 0x0a, "CHUNK";
    /// [`Frame::Close`].
    Close = 0x0b, "CLOSE";
    /// [`Frame::Publish`].
    Publish = 0x0c, "PUBLISH";
    /// [`Frame::Subscribe`].
    Subscribe = 0x0d, "SUBSCRIBE";
    /// [`Frame::Goodbye`].
    Goodbye = 0x0e, "GOODBYE";
    /// [`Frame::Digest`].
    Digest = 0x0f, "DIGEST";
    /// [`Frame::Proof`].
    Proof = 0x10, "PROOF";
    /// [`Frame::Chat`].
    Chat = 0x11, "CHAT";
    /// [`Frame::Relay`].
    Relay = 0x13, "RELAY";
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Hello(_) => FrameType::Hello,
            Self::Welcome(_) => FrameType::Welcome,
            Self::Error(_) => FrameType::Error,
            Self::Ping { .. } => FrameType::Ping,
            Self::Pong { .. } => FrameType::Pong,
            Self::List { .. } => FrameType::List,
            Self::Catalog(_) => FrameType::Catalog,
            Self::Open(_) => FrameType::Open,
            Self::Opened(_) => FrameType::Opened,
            Self::Chunk(_) => FrameType::Chunk,
            Self::Close { .. } => FrameType::Close,
            Self::Publish { .. } => FrameType::Publish,
            Self::Subscribe { .. } => FrameType::Subscribe,
            Self::Digest { .. } => FrameType::Digest,
            Self::Goodbye { .. } => FrameType::Goodbye,
            Self::Proof { .. } => FrameType::Proof,
            Self::Chat(_) => FrameType::Chat,
            Self::Relay { .. } => FrameType::Relay,
        }
    }

    /// The frame's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.frame_type().name()
    }

    /// Payload bytes this frame carries by reference (a chunk's), for accounting.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Self::Chunk(c) => Some(&c.payload),
            _ => None,
        }
    }
}
