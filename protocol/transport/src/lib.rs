//! chunkcast's transport glue, shared by server and client: dialling and accepting side by
//! side for TCP, TLS, QUIC and WebSocket, and [`link`], which runs a connection over any of
//! them.
//!
//! Where things are:
//! - [`dial`]: the client's side, one `connect` for TCP, TLS and QUIC;
//! - [`accept`]: the server's side, the accept loops (the TCP port's plain/TLS demux, QUIC,
//!   WebSocket upgrades) behind one admit/refuse gate, yielding one stream of connections;
//! - [`ws`]: a WebSocket as a byte stream of frames;
//! - [`tcp`]: socket options (`TCP_NODELAY`, buffer sizes) for both sides;
//! - [`tls`]: rustls configs, certificate trust and identities;
//! - [`quic`]: quinn endpoints, transport tuning and congestion control;
//! - [`io`]: the boxed byte stream and the batching writer;
//! - [`link`]: one connection as a frame sender and receiver, whatever the transport (a TCP
//!   byte stream, or QUIC's control stream plus a stream per media stream).
//!
//! Nothing here knows the connection's rules: those live in `chunkcast-protocol`'s sans-IO
//! state machines; this crate moves their bytes.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod accept;
pub mod dial;
pub mod io;
pub mod link;
pub mod quic;
pub mod tcp;
pub mod tls;
pub mod ws;

/// The ALPN protocol id of chunkcast v1 over TLS and QUIC.
pub const ALPN: &[u8] = b"chunkcast/1";

pub use io::{BoxedIo, FileRegion, Io, Outbox};
pub use link::{LinkError, LinkRx, LinkTx, MediaTx};
