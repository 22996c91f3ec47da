//! Errors of the wire layer and the codes that carry errors between peers.

use crate::wire::chunk::StreamId;

/// Why bytes from a peer could not be decoded into a frame.
///
/// Every variant is the peer's fault (or the link's, for [`DecodeError::Checksum`]); after any
/// of them but `Checksum` the byte stream is no longer in sync and the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A length prefix larger than the configured maximum (`Limits::max_frame_len`).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared length.
        len: u64,
        /// Configured limit.
        max: u64,
    },
    /// A length prefix of 0: every frame has at least its type byte.
    #[error("empty frame")]
    EmptyFrame,
    /// A frame type this version does not define.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A frame body ended before a field it must hold.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// A frame body holds bytes after its last field.
    #[error("{0} frame has {1} trailing bytes")]
    TrailingBytes(&'static str, usize),
    /// A string longer than `Limits::max_string_len`.
    #[error("string of {len} bytes exceeds the limit of {max}")]
    StringTooLong {
        /// Declared length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// A list longer than its limit.
    #[error("list of {len} entries exceeds the limit of {max}")]
    ListTooLong {
        /// Declared count.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// The first frame is not a chunkcast hello (wrong magic): not our protocol.
    #[error("not a chunkcast peer (bad magic)")]
    BadMagic,
    /// An enumerated field with a value this version does not define.
    #[error("invalid {field}: {value}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// A chunk whose CRC32C does not match its bytes: corrupted in transit.
    #[error("chunk {seq} of stream {stream} is corrupt (checksum mismatch)")]
    Checksum {
        /// Its stream.
        stream: StreamId,
        /// Its sequence number.
        seq: u64,
    },
    /// An lz4 payload that does not expand to exactly its declared size, or a declared size
    /// above the limit.
    #[error("chunk {seq} of stream {stream}: bad compressed payload ({reason})")]
    Decompress {
        /// Its stream.
        stream: StreamId,
        /// Its sequence number.
        seq: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Error codes carried by `ERROR`, `CLOSE` and `GOODBYE` frames. The numbers are part of the
/// wire format and never change meaning (pinned by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No error: a normal close.
    None,
    /// The request is malformed or not allowed in this state.
    BadRequest,
    /// Missing or wrong token.
    Unauthorized,
    /// No such file or channel.
    NotFound,
    /// Something exceeds a limit (frame, file, list, decompressed size).
    TooLarge,
    /// A server limit is reached (connections, streams, viewers); try again later.
    Busy,
    /// A bug or I/O failure on the sender's side.
    Internal,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The peer sent bytes that do not decode.
    Protocol,
    /// Something took too long (handshake, idle).
    Timeout,
    /// A call room already has two participants.
    RoomFull,
    /// A live channel's publisher went away.
    PublisherLost,
    /// A viewer fell too far behind a live channel.
    Lagged,
    /// A media file could not be read as the format it claims.
    BadMedia,
    /// The file changed on the server while it was being sent (rewritten in place, replaced,
    /// grown or shrunk): what arrived may mix two versions, so the download must start over.
    Changed,
    /// A code from a newer version.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::None => 0,
            Self::BadRequest => 1,
            Self::Unauthorized => 2,
            Self::NotFound => 3,
            Self::TooLarge => 4,
            Self::Busy => 5,
            Self::Internal => 6,
            Self::UnsupportedVersion => 7,
            Self::Protocol => 8,
            Self::Timeout => 9,
            Self::RoomFull => 10,
            Self::PublisherLost => 11,
            Self::Lagged => 12,
            Self::BadMedia => 13,
            Self::Changed => 14,
            Self::Unknown(c) => c,
        }
    }

    /// The code for a wire value; unknown values are kept, not rejected, so that a newer
    /// peer's errors still reach the user.
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => Self::None,
            1 => Self::BadRequest,
            2 => Self::Unauthorized,
            3 => Self::NotFound,
            4 => Self::TooLarge,
            5 => Self::Busy,
            6 => Self::Internal,
            7 => Self::UnsupportedVersion,
            8 => Self::Protocol,
            9 => Self::Timeout,
            10 => Self::RoomFull,
            11 => Self::PublisherLost,
            12 => Self::Lagged,
            13 => Self::BadMedia,
            14 => Self::Changed,
            c => Self::Unknown(c),
        }
    }

    /// A short lower-case name, for messages and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::BadRequest => "bad request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not found",
            Self::TooLarge => "too large",
            Self::Busy => "busy",
            Self::Internal => "internal error",
            Self::UnsupportedVersion => "unsupported version",
            Self::Protocol => "protocol error",
            Self::Timeout => "timeout",
            Self::RoomFull => "room full",
            Self::PublisherLost => "publisher lost",
            Self::Lagged => "lagged",
            Self::BadMedia => "bad media",
            Self::Changed => "source changed",
            Self::Unknown(_) => "unknown error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(c) => write!(f, "unknown error {c}"),
            _ => f.write_str(self.name()),
        }
    }
}

impl From<&DecodeError> for ErrorCode {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::FrameTooLarge { .. }
            | DecodeError::StringTooLong { .. }
            | DecodeError::ListTooLong { .. } => Self::TooLarge,
            _ => Self::Protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let pinned = [
            (ErrorCode::None, 0),
            (ErrorCode::BadRequest, 1),
            (ErrorCode::Unauthorized, 2),
            (ErrorCode::NotFound, 3),
            (ErrorCode::TooLarge, 4),
            (ErrorCode::Busy, 5),
            (ErrorCode::Internal, 6),
            (ErrorCode::UnsupportedVersion, 7),
            (ErrorCode::Protocol, 8),
            (ErrorCode::Timeout, 9),
            (ErrorCode::RoomFull, 10),
            (ErrorCode::PublisherLost, 11),
            (ErrorCode::Lagged, 12),
            (ErrorCode::BadMedia, 13),
            (ErrorCode::Changed, 14),
        ];
        for (code, value) in pinned {
            assert_eq!(code.to_u16(), value, "{code:?}");
            assert_eq!(ErrorCode::from_u16(value), code);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
        assert_eq!(ErrorCode::Unknown(999).to_u16(), 999);
    }
}
