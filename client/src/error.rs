//! The client's errors: each says what went wrong and, where there is one, what to do.

use chunkcast_protocol::chunk::ReassemblyError;
use chunkcast_protocol::net::tls::TlsError;
use chunkcast_protocol::session::HandshakeError;
use chunkcast_protocol::{DecodeError, ErrorCode};

use crate::url::UrlError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is malformed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The error.
        source: std::io::Error,
    },
    /// Nothing answered at the address.
    #[error("cannot connect to {addr}: {source} (is chunkcast-server running there?)")]
    Connect {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// TLS could not be set up locally.
    #[error(transparent)]
    TlsSetup(#[from] TlsError),
    /// The TLS or QUIC handshake failed (certificate mismatch, untrusted certificate, ...).
    #[error("secure connection to {addr} failed: {reason}")]
    Secure {
        /// The address.
        addr: String,
        /// Why, with the fix where known.
        reason: String,
    },
    /// The connection or handshake took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The chunkcast handshake failed.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// The server answered a request with an error.
    #[error("{code}: {message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server's data did not decode, or a chunk arrived corrupted.
    #[error("corrupted data from the server: {0}; run again with --resume to continue")]
    Corrupt(DecodeError),
    /// The connection closed or failed.
    #[error("connection lost: {0}; run again with --resume to continue")]
    Lost(String),
    /// The received chunks do not rebuild the announced file.
    #[error("received file is wrong: {0}")]
    Reassembly(#[from] ReassemblyError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The request is not valid for what the server has.
    #[error("{0}")]
    Usage(String),
    /// The media is damaged (truncated, a frame cut short): everything before the damage was
    /// played, then playback stopped. Says where (byte offset, units played) and what.
    #[error("damaged media: {0}; `chunkcast get` still saves the file byte for byte")]
    Damaged(String),
    /// A sink could not render what was played (a frame that does not decode, a format it
    /// cannot write); choose another `--sink`, or `file:PATH` to keep the bytes as they came.
    #[error("{sink} sink: {reason}")]
    Sink {
        /// The sink's kind (`frames`, `wav`, ...).
        sink: String,
        /// What went wrong.
        reason: String,
    },
}

impl ClientError {
    /// The server's error code, if the server refused something.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            Self::Handshake(HandshakeError::Rejected { code, .. }) => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::File {
            path: path.display().to_string(),
            source,
        }
    }
}
