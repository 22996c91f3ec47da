//! The `chunkcast` command: a command line over the client library (`chunkcast-client`), and
//! the two commands that compose it with the server in one process.
//!
//! - [`cli`]: the clap definition and the dispatch to the client library;
//! - [`demo`]: a server on the built-in sample library, and a client playing from it;
//! - [`bench`](mod@bench): chunk throughput against an in-process or a remote server.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod demo;
