//! A deterministic simulation of a chunkcast server and many clients.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod net;
pub mod rng;
pub mod tcp;
pub mod time;
pub mod trace;
