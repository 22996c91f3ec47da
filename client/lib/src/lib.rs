//! chunkcast's client library: lists, gets, plays, publishes and watches media on a chunkcast
//! server. The `chunkcast` binary (the `chunkcast` crate) puts a command line over it and
//! composes it with the server for `demo` and `bench`.
//!
//! - [`url`]: `tcp://`, `tcps://`, `quic://`, `http://` and `https://` URLs;
//! - [`session`]: connect over any transport, handshake, list and open streams;
//! - [`get`]: save a file byte for byte (temporary file, digest, rename, resume);
//! - [`http`]: `get` and `watch` over the server's HTTP interface, or any cache in front of it;
//! - [`ls`], [`play`], [`live`]: the commands behind the binary's `ls`, `play`, `watch`,
//!   `publish` and `call`;
//! - [`sink`]: where played media goes (players, files, frames);
//! - [`console`]: stdout and Ctrl-C.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chunkcast_client::error::ClientError> {
//! use chunkcast_client::session::{ConnectOptions, Session};
//! let url = chunkcast_client::url::Url::parse("tcp://127.0.0.1:7700/")?;
//! let session = Session::connect(&url, &ConnectOptions::default()).await?;
//! for entry in session.list("").await? {
//!     println!("{}", entry.path);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod chat;
pub mod console;
pub mod error;
pub mod get;
pub mod http;
pub mod live;
pub mod ls;
pub mod play;
pub mod record;
pub mod session;
pub mod sink;
pub mod url;
