//! The connection state machines: one per side, for the whole life of a connection.
//!
//! Sans-IO, in the shape of quinn-proto's `Connection` and str0m's `Rtc`: the driver hands in
//! what arrived (decoded control frames, a decode error, the peer's end of stream) and the time,
//! and takes out control bytes to send (`poll_transmit`), events for the
//! application (`poll_event`) and the next instant it must call
//! `handle_timeout` (`poll_timeout`). Time enters only as an argument, so a
//! connection runs the same on tokio's clock, a paused test clock or the simulation's.
//!
//! Each machine owns the handshake, keepalive (a silent peer is detected on both sides),
//! request ids, the stream table with its limits, draining and catalog paging. Chunks do not
//! pass through it: the transport routes them by stream id straight to the stream that reads or
//! writes them, and the application tells the machine when a stream ends.
//!
//! - [`server`]: `ServerConn`, what `chunkcast-server` runs for each client;
//! - [`client`]: `ClientConn`, what a client session runs.

pub mod client;
pub mod rate;
pub mod server;

pub use client::ClientConn;
pub use server::ServerConn;
