//! The client's errors: each says what went wrong and, where there is one, what to do.

use chunkcast_media::ReassemblyError;
use chunkcast_protocol::conn::client::ConnError;
use chunkcast_protocol::session::HandshakeError;
use chunkcast_protocol::{DecodeError, ErrorCode};
use chunkcast_transport::tls::TlsError;

use crate::url::UrlError;

/// The name [`ClientError::File`] gives standard output.
pub(crate) const STDOUT: &str = "stdout";

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
    /// The HTTP server, or a cache in front of it, answered a request with an error status
    /// (the server's JSON body gives the native code and its explanation; a cache's page
    /// gives at least the status).
    #[error("{path}: HTTP {status}: {message}")]
    Http {
        /// The request's path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The native error code of the server's JSON body, if it sent one.
        code: Option<ErrorCode>,
        /// The server's explanation (or what the status means).
        message: String,
    },
    /// An HTTP server's answer is not what `docs/HTTP.md` says (a malformed index, a body of
    /// the wrong type or size): a broken server, or something else at that address.
    #[error("bad answer from the HTTP server: {0}")]
    BadResponse(String),
    /// The server's data did not decode, or a chunk arrived corrupted.
    #[error("corrupted data from the server: {0}")]
    Corrupt(DecodeError),
    /// A verified download's bytes (or the tree nodes proving them) did not match the file's
    /// BLAKE3 digest: altered on the way. Nothing unverified was written.
    #[error("chunk {seq} failed verification: {error}")]
    Unverified {
        /// The chunk whose bytes completed the group that failed.
        seq: u64,
        /// Where and how.
        error: chunkcast_protocol::verify::VerifyError,
    },
    /// The connection closed or failed.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server sent nothing, not even an answer to the client's pings, for this long: it
    /// hangs, or the path to it is gone. The connection is given up.
    #[error("connection lost: the server has been silent for {0:?} (pings unanswered)")]
    Silent(std::time::Duration),
    /// A request would pass one of the client's own bounds (requests awaiting an answer, the
    /// entries of a listing).
    #[error("{0}")]
    Limit(ConnError),
    /// A download stopped before its end (a lost connection, a corrupted chunk, Ctrl-C); what
    /// arrived intact is kept in the partial file, which `--resume` continues.
    #[error("{cause}; {partial} keeps the first {have} bytes: {hint}")]
    Cut {
        /// What stopped it.
        cause: Box<Self>,
        /// The partial file.
        partial: String,
        /// Bytes in it.
        have: u64,
        /// How to continue (the command line, where known).
        hint: String,
    },
    /// `--resume` cannot continue what is on disk: it is not a prefix of the file on the
    /// server (the file changed since, or the partial file is damaged).
    #[error(
        "{reason}: {file} does not match the file on the server (it changed since, or \
             was damaged); delete {file}, or run again without --resume to start over"
    )]
    Resume {
        /// The file on disk (`FILE.partial`, or `FILE` when verifying a complete one).
        file: String,
        /// What did not match.
        reason: String,
    },
    /// The user pressed Ctrl-C; whatever the command reports on an interruption was printed.
    #[error("interrupted")]
    Interrupted,
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
            Self::Http { code, .. } => *code,
            Self::Handshake(HandshakeError::Rejected { code, .. }) => Some(*code),
            _ => None,
        }
    }

    /// The exit status `chunkcast` ends with on this error: 130 after Ctrl-C (the shell's
    /// convention for SIGINT), 0 when the reader of stdout went away (`… | head` got what it
    /// wanted: success, as for other Unix tools), 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        if self.is_interrupted() {
            130
        } else if self.is_stdout_closed() {
            0
        } else {
            1
        }
    }

    /// Whether there is nothing to tell the user: the interruption's report was printed, or
    /// nobody reads stdout any more.
    pub fn is_silent(&self) -> bool {
        matches!(self, Self::Interrupted) || self.is_stdout_closed()
    }

    /// What caused this error: the cause of a [`ClientError::Cut`], else the error itself.
    pub fn cause(&self) -> &Self {
        match self {
            Self::Cut { cause, .. } => cause.cause(),
            other => other,
        }
    }

    /// Whether the user interrupted the command (Ctrl-C).
    pub fn is_interrupted(&self) -> bool {
        match self {
            Self::Interrupted => true,
            Self::Cut { cause, .. } => cause.is_interrupted(),
            _ => false,
        }
    }

    /// Whether a write to stdout failed because its reader closed the pipe.
    pub fn is_stdout_closed(&self) -> bool {
        matches!(self, Self::File { path, source }
            if path == STDOUT && source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// A failed write to stdout.
    pub fn stdout(source: std::io::Error) -> Self {
        Self::File {
            path: STDOUT.into(),
            source,
        }
    }

    /// A file at `path` could not be read or written.
    pub fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::File {
            path: path.display().to_string(),
            source,
        }
    }
}
