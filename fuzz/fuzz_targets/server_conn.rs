//! Arbitrary client bytes → one server connection, exactly as the TCP path serves it (link,
//! handshake, control loop, streams, the guard wrapper), over an in-memory pipe with a small
//! library in a temporary directory and a current-thread runtime; no sockets.
//!
//! Input layout (see `chunkcast_server::fuzzing::serve_bytes`):
//! - byte 0: flags: bit 0 = put a valid `HELLO` (carrying the token `tok`) before the rest,
//!   so that inputs reach the control loop; bit 1 = the server requires the token `tok`;
//!   bit 2 = a request rate of 2 per second;
//! - the rest: the client's bytes, then EOF.
//!
//! The library holds `a.bin` (64 KiB), `dir/b.bin`, `empty.bin`, `tone.wav` (50 ms) and `out`
//! (a symlink out of the root). Nothing may panic, every byte the server sends must decode
//! as whole frames with the client's limits, and the connection must end within 5 s of the
//! client's EOF.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outcome = chunkcast_server::fuzzing::serve_bytes(data);
    assert!(
        !outcome.timed_out,
        "the connection outlived its client's EOF: {outcome:?}"
    );
});
