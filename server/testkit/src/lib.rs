//! What chunkcast's server and client test suites share, so that neither keeps its own copy:
//!
//! - [`library`]: the sample library, generated once and kept between runs, and digests;
//! - [`server`]: an in-process server on loopback port 0, URLs and pinned trust for it, and
//!   a well-behaved download to run beside an attack;
//! - [`frames`]: raw frame I/O for tests that play a hostile client;
//! - [`metrics`]: scraping `--metrics`, and this process's memory;
//! - [`proxy`]: a TCP proxy that cuts its connections, as a failing network would;
//! - [`process`]: a binary as a child process, signalled by pid and waited for with a bound;
//! - [`tools`]: external tools a test needs, which must be there under `CI`.
//!
//! Every item of the first four is also at the root, as the suites' `support` modules had them.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod frames;
pub mod library;
pub mod metrics;
pub mod nginx;
pub mod process;
pub mod proxy;
pub mod server;
pub mod tools;

pub use frames::*;
pub use library::*;
pub use metrics::*;
pub use server::*;
pub use tools::require_tool;
