//! The transport glue shared by server and client (feature `tokio`): TLS and QUIC setup, the
//! TCP port's plain/TLS demux, and [`link`], which runs a connection over any of them.

pub mod io;
pub mod link;
pub mod quic;
pub mod source;
pub mod tcp;
pub mod tls;

/// The ALPN protocol id of chunkcast v1 over TLS and QUIC.
pub const ALPN: &[u8] = b"chunkcast/1";

pub use io::{BoxedIo, Outbox};
pub use link::{LinkError, LinkRx, LinkTx, MediaTx};
