//! chunkcast's client: lists, gets and verifies media from a chunkcast server.
//!
//! - [`url`]: `tcp://`, `tcps://` and `quic://` URLs;
//! - [`session`]: connect over any transport, handshake, list and open streams;
//! - [`get`]: save a file byte for byte (temporary file, digest, rename, resume);
//! - [`ls`], [`demo`], [`cli`]: the commands behind the binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chunkcast::error::ClientError> {
//! use chunkcast::session::{ConnectOptions, Session};
//! let url = chunkcast::url::Url::parse("tcp://127.0.0.1:7700/")?;
//! let session = Session::connect(&url, &ConnectOptions::default()).await?;
//! for entry in session.list("").await? {
//!     println!("{}", entry.path);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod demo;
pub mod error;
pub mod get;
pub mod live;
pub mod ls;
pub mod play;
pub mod session;
pub mod sink;
pub mod url;
