//! The client's side of the handshake.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{DEFAULT_HANDSHAKE_TIMEOUT, Established, HandshakeError};
use crate::wire::{Caps, Frame, Hello, MIN_VERSION, VERIFIED_VERSION, VERSION, encode};

/// What the client offers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Lowest version offered.
    pub min_version: u16,
    /// Highest version offered.
    pub max_version: u16,
    /// Capabilities offered.
    pub caps: Caps,
    /// The server's shared secret, if it needs one.
    pub token: Option<String>,
    /// Our name, for the server's logs.
    pub name: String,
    /// How long to wait for `WELCOME`.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            min_version: MIN_VERSION,
            max_version: VERSION,
            caps: Caps::LZ4
                | Caps::DIGEST_AT_END
                | Caps::ANY_FILE
                | Caps::VERIFIED
                | Caps::DATAGRAMS
                | Caps::CHAT
                | Caps::HEADER_CRC,
            token: None,
            name: concat!("chunkcast/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// A client waiting for the server's `WELCOME`.
#[derive(Debug)]
pub struct ClientHandshake {
    config: ClientConfig,
    deadline: Instant,
    hello_sent: bool,
}

impl ClientHandshake {
    /// Starts a handshake at `now`.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let deadline = now + config.timeout;
        Self {
            config,
            deadline,
            hello_sent: false,
        }
    }

    /// Appends the `HELLO` to `buf` the first time it is called; later calls append nothing.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) {
        if std::mem::replace(&mut self.hello_sent, true) {
            return;
        }
        let hello = Hello {
            min_version: self.config.min_version,
            max_version: self.config.max_version,
            caps: self.config.caps,
            token: self.config.token.clone().unwrap_or_default(),
            client_name: self.config.name.clone(),
        };
        encode(&Frame::Hello(hello), buf);
    }

    /// When [`ClientHandshake::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// Fails the handshake once its deadline has passed.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), HandshakeError> {
        if now >= self.deadline {
            return Err(HandshakeError::Timeout);
        }
        Ok(())
    }

    /// Takes the server's first frame.
    pub fn handle_frame(self, now: Instant, frame: Frame) -> Result<Established, HandshakeError> {
        self.handle_timeout(now)?;
        match frame {
            Frame::Welcome(w) => {
                if w.version < self.config.min_version || w.version > self.config.max_version {
                    return Err(HandshakeError::VersionMismatch {
                        ours_min: self.config.min_version,
                        ours_max: self.config.max_version,
                        theirs_min: w.version,
                        theirs_max: w.version,
                    });
                }
                let mut caps = w.caps.intersect(self.config.caps);
                if w.version < VERIFIED_VERSION {
                    caps = Caps(caps.0 & !(Caps::VERIFIED.0 | Caps::HEADER_CRC.0));
                }
                Ok(Established {
                    version: w.version,
                    caps,
                    session_id: w.session_id,
                    peer_name: w.server_name,
                })
            }
            Frame::Error(e) => Err(HandshakeError::Rejected {
                code: e.code,
                message: e.message,
            }),
            Frame::Goodbye { code, message } => Err(HandshakeError::Rejected { code, message }),
            other => Err(HandshakeError::Unexpected(other.name())),
        }
    }
}
