//! The server's side of the handshake.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use subtle::ConstantTimeEq;

use super::{DEFAULT_HANDSHAKE_TIMEOUT, Established, HandshakeError};
use crate::error::ErrorCode;
use crate::wire::{
    Caps, ErrorFrame, Frame, MIN_VERSION, VERIFIED_VERSION, VERSION, Welcome, encode,
};

/// What the server accepts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Capabilities the server has.
    pub caps: Caps,
    /// The shared secret every client must present, if any.
    pub token: Option<String>,
    /// Our name, for the client's logs.
    pub name: String,
    /// How long a client has to send a valid `HELLO`.
    pub timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            caps: Caps::LZ4
                | Caps::DIGEST_AT_END
                | Caps::ANY_FILE
                | Caps::VERIFIED
                | Caps::DATAGRAMS
                | Caps::CHAT
                | Caps::HEADER_CRC,
            token: None,
            name: concat!("chunkcast-server/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// A server waiting for the client's `HELLO`.
#[derive(Debug)]
pub struct ServerHandshake {
    config: ServerConfig,
    deadline: Instant,
    session_id: u64,
}

impl ServerHandshake {
    /// Starts a handshake at `now` for the connection the server calls `session_id`.
    pub fn new(config: ServerConfig, now: Instant, session_id: u64) -> Self {
        let deadline = now + config.timeout;
        Self {
            config,
            deadline,
            session_id,
        }
    }

    /// When [`ServerHandshake::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// Once the deadline has passed, appends an `ERROR` for the client to `out` and fails.
    pub fn handle_timeout(&self, now: Instant, out: &mut BytesMut) -> Result<(), HandshakeError> {
        if now < self.deadline {
            return Ok(());
        }
        let err = HandshakeError::Timeout;
        reject(&err, "no HELLO within the handshake timeout", out);
        Err(err)
    }

    /// Takes the client's first frame. On success appends `WELCOME` to `out`; on failure
    /// appends an `ERROR` explaining why, which the driver sends before closing.
    pub fn handle_frame(
        self,
        now: Instant,
        frame: Frame,
        out: &mut BytesMut,
    ) -> Result<Established, HandshakeError> {
        self.handle_timeout(now, out)?;
        let hello = match frame {
            Frame::Hello(h) => h,
            other => {
                let err = HandshakeError::Unexpected(other.name());
                reject(&err, "the first frame must be HELLO", out);
                return Err(err);
            }
        };
        if hello.min_version > VERSION || hello.max_version < MIN_VERSION {
            let err = HandshakeError::VersionMismatch {
                ours_min: MIN_VERSION,
                ours_max: VERSION,
                theirs_min: hello.min_version,
                theirs_max: hello.max_version,
            };
            reject(&err, &err.to_string(), out);
            return Err(err);
        }
        if let Some(token) = &self.config.token {
            // Constant time, so that response timing does not reveal how much of a guess
            // matched. The length may leak; that is accepted (it is not the secret).
            let ok: bool = token.as_bytes().ct_eq(hello.token.as_bytes()).into();
            if !ok {
                let err = HandshakeError::Unauthorized;
                let msg = if hello.token.is_empty() {
                    "this server needs a token: pass --token or set CHUNKCAST_TOKEN"
                } else {
                    "wrong token"
                };
                reject(&err, msg, out);
                return Err(err);
            }
        }
        // The highest version both speak; a v1 client keeps v1 exactly (its caps never
        // include a bit it does not know, and VERIFIED needs v2).
        let version = hello.max_version.min(VERSION);
        let mut caps = hello.caps.intersect(self.config.caps);
        if version < VERIFIED_VERSION {
            caps = Caps(caps.0 & !(Caps::VERIFIED.0 | Caps::HEADER_CRC.0));
        }
        encode(
            &Frame::Welcome(Welcome {
                version,
                caps,
                session_id: self.session_id,
                server_name: self.config.name.clone(),
            }),
            out,
        );
        Ok(Established {
            version,
            caps,
            session_id: self.session_id,
            peer_name: hello.client_name,
        })
    }
}

fn reject(err: &HandshakeError, message: &str, out: &mut BytesMut) {
    let code = err.code();
    debug_assert_ne!(code, ErrorCode::None);
    encode(
        &Frame::Error(ErrorFrame {
            request: 0,
            code,
            message: message.to_owned(),
        }),
        out,
    );
}
