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
    /// A chunk whose CRC covers its header only ([`crate::ChunkFlags::HEADER_CRC`]) on a
    /// stream that no hash tree proves: nothing would check its payload.
    #[error(
        "chunk {seq} of stream {stream} has no payload checksum, and the stream is not verified"
    )]
    Unproven {
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

/// Declares [`ErrorCode`] from one table, so that each code's value, variant, human name and
/// metric label are written once and cannot drift apart (they used to be four matches).
macro_rules! error_codes {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $value:literal, $name:literal, $label:literal;
    )*) => {
        /// Error codes carried by `ERROR`, `CLOSE` and `GOODBYE` frames. The numbers are part
        /// of the wire format and never change meaning (pinned by a test).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                $(#[doc = $doc])*
                $variant,
            )*
            /// A code from a newer version.
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every code this version defines, in value order ([`ErrorCode::Unknown`] aside).
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),*];

            /// The code's wire value.
            pub const fn to_u16(self) -> u16 {
                match self {
                    $(Self::$variant => $value,)*
                    Self::Unknown(c) => c,
                }
            }

            /// The code for a wire value; unknown values are kept, not rejected, so that a
            /// newer peer's errors still reach the user.
            pub const fn from_u16(code: u16) -> Self {
                match code {
                    $($value => Self::$variant,)*
                    c => Self::Unknown(c),
                }
            }

            /// A short lower-case name, for messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Unknown(_) => "unknown error",
                }
            }

            /// The code as a metric label value: its name in snake case (`unknown` for a code
            /// from a newer version, so that a peer cannot grow the label set).
            pub const fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                    Self::Unknown(_) => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// No error: a normal close.
    None = 0, "none", "none";
    /// The request is malformed or not allowed in this state.
    BadRequest = 1, "bad request", "bad_request";
    /// Missing or wrong token.
    Unauthorized = 2, "unauthorized", "unauthorized";
    /// No such file or channel.
    NotFound = 3, "not found", "not_found";
    /// Something exceeds a limit (frame, file, list, decompressed size).
    TooLarge = 4, "too large", "too_large";
    /// A server limit is reached (connections, streams, viewers); try again later.
    Busy = 5, "busy", "busy";
    /// A bug or I/O failure on the sender's side.
    Internal = 6, "internal error", "internal";
    /// No protocol version in common.
    UnsupportedVersion = 7, "unsupported version", "unsupported_version";
    /// The peer sent bytes that do not decode.
    Protocol = 8, "protocol error", "protocol";
    /// Something took too long (handshake, idle).
    Timeout = 9, "timeout", "timeout";
    /// A call room already has two participants.
    RoomFull = 10, "room full", "room_full";
    /// A live channel's publisher went away.
    PublisherLost = 11, "publisher lost", "publisher_lost";
    /// A viewer fell too far behind a live channel.
    Lagged = 12, "lagged", "lagged";
    /// A media file could not be read as the format it claims.
    BadMedia = 13, "bad media", "bad_media";
    /// The file changed on the server while it was being sent (rewritten in place, replaced,
    /// grown or shrunk): what arrived may mix two versions, so the download must start over.
    Changed = 14, "source changed", "source_changed";
    /// Bytes or tree nodes of a verified stream did not match the file's BLAKE3 tree: they
    /// were altered on the way (a tampering cache or proxy) or the server's tree is wrong.
    Unverified = 15, "verification failed", "verification_failed";
    /// A chat frame broke the chat rules (over the rate, a room not joined, a kind only the
    /// other side sends, no `CHAT` capability).
    ChatRefused = 16, "chat refused", "chat_refused";
    /// An edge relay cannot serve the channel: its origin is unknown or unreachable (the
    /// directory is down, no origin has the channel), the relay chain is too long or loops,
    /// or a publisher tried an edge (publish at an origin).
    Relay = 18, "relay refused", "relay";
    /// A live channel's publisher stopped because its input (a pipe, a camera) was not the
    /// media it claimed: garbage, a lying header, a unit over the limits.
    BadInput = 17, "bad input", "bad_input";
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

    /// The values, names and labels written out literally, apart from the table, so that
    /// renumbering or renaming a code fails here.
    #[test]
    fn codes_are_stable() {
        let pinned = [
            (0, ErrorCode::None, "none", "none"),
            (1, ErrorCode::BadRequest, "bad request", "bad_request"),
            (2, ErrorCode::Unauthorized, "unauthorized", "unauthorized"),
            (3, ErrorCode::NotFound, "not found", "not_found"),
            (4, ErrorCode::TooLarge, "too large", "too_large"),
            (5, ErrorCode::Busy, "busy", "busy"),
            (6, ErrorCode::Internal, "internal error", "internal"),
            (
                7,
                ErrorCode::UnsupportedVersion,
                "unsupported version",
                "unsupported_version",
            ),
            (8, ErrorCode::Protocol, "protocol error", "protocol"),
            (9, ErrorCode::Timeout, "timeout", "timeout"),
            (10, ErrorCode::RoomFull, "room full", "room_full"),
            (
                11,
                ErrorCode::PublisherLost,
                "publisher lost",
                "publisher_lost",
            ),
            (12, ErrorCode::Lagged, "lagged", "lagged"),
            (13, ErrorCode::BadMedia, "bad media", "bad_media"),
            (14, ErrorCode::Changed, "source changed", "source_changed"),
            (
                15,
                ErrorCode::Unverified,
                "verification failed",
                "verification_failed",
            ),
            (16, ErrorCode::ChatRefused, "chat refused", "chat_refused"),
            (18, ErrorCode::Relay, "relay refused", "relay"),
            (17, ErrorCode::BadInput, "bad input", "bad_input"),
        ];
        assert_eq!(ErrorCode::ALL.len(), pinned.len());
        for ((value, code, name, label), listed) in pinned.into_iter().zip(ErrorCode::ALL) {
            assert_eq!(*listed, code, "ALL is in value order");
            assert_eq!(code.to_u16(), value, "{code:?}");
            assert_eq!(ErrorCode::from_u16(value), code);
            assert_eq!((code.name(), code.label()), (name, label), "{code:?}");
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
        assert_eq!(ErrorCode::Unknown(999).to_u16(), 999);
        assert_eq!(ErrorCode::Unknown(999).label(), "unknown");
        assert_eq!(ErrorCode::Unknown(999).to_string(), "unknown error 999");
    }
}
