//! Connection state machines: the handshake on each side, then keepalive.
//!
//! Both are sans-IO. The driver decodes frames with [`crate::wire::Decoder`], hands them in
//! with the current time, writes whatever the machine put in its output buffer, and calls
//! `handle_timeout` when the instant from `poll_timeout` passes:
//!
//! 1. client: [`ClientHandshake::new`], write [`ClientHandshake::poll_transmit`]'s `HELLO`;
//! 2. server: [`ServerHandshake::new`] on accept; feed it the first frame; it writes `WELCOME`
//!    (or an `ERROR` to send before closing) and returns the [`Established`] parameters;
//! 3. client: feed the reply to [`ClientHandshake::handle_frame`];
//! 4. both: a [`Keepalive`] pings on idle links, measures RTT and fails dead ones.
//!
//! The handshake types are consumed by `handle_frame`: a connection cannot be both
//! handshaking and established.

mod client;
mod keepalive;
mod server;

use std::time::Duration;

pub use client::{ClientConfig, ClientHandshake};
pub use keepalive::{DEFAULT_IDLE_TIMEOUT, DEFAULT_PING_INTERVAL, IdleTimeout, Keepalive};
pub use server::{ServerConfig, ServerHandshake};

use crate::error::{DecodeError, ErrorCode};
use crate::wire::Caps;

/// A handshake that does not finish within this is abandoned: long enough for a TLS
/// handshake over a slow link, short enough that a slowloris peer holds a slot briefly.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// Protocol version in use.
    pub version: u16,
    /// Capabilities both sides have.
    pub caps: Caps,
    /// The server's id for the connection.
    pub session_id: u64,
    /// The peer's self-declared name.
    pub peer_name: String,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer did not complete the handshake in time (local timer).
    #[error("handshake timed out")]
    Timeout,
    /// The version ranges do not overlap.
    #[error(
        "no protocol version in common: we speak {ours_min}..={ours_max}, peer {theirs_min}..={theirs_max}"
    )]
    VersionMismatch {
        /// Our lowest.
        ours_min: u16,
        /// Our highest.
        ours_max: u16,
        /// The peer's lowest.
        theirs_min: u16,
        /// The peer's highest.
        theirs_max: u16,
    },
    /// The client's token is missing or wrong (server side).
    #[error("missing or wrong token")]
    Unauthorized,
    /// The peer sent a frame that has no place in the handshake.
    #[error("unexpected {0} frame during the handshake")]
    Unexpected(&'static str),
    /// The server refused the handshake with an `ERROR` (client side).
    #[error("server refused the connection: {code}: {message}")]
    Rejected {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The peer's bytes did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl HandshakeError {
    /// The code to send the peer for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Timeout => ErrorCode::Timeout,
            Self::VersionMismatch { .. } => ErrorCode::UnsupportedVersion,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Unexpected(_) => ErrorCode::Protocol,
            Self::Rejected { code, .. } => *code,
            Self::Decode(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests;
