//! The entry point of `fuzz/fuzz_targets/server_conn.rs`: one connection served exactly as
//! a TCP one is (link, handshake, control loop, streams, the `guard` wrapper), over
//! an in-memory pipe instead of a socket, fed arbitrary client bytes. Not part of the API.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chunkcast_protocol::session::{ClientConfig, ClientHandshake};
use chunkcast_protocol::wire::{Decoder, Limits as WireLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::conn::Shared;
use crate::guard::Guarded;
use crate::library::Library;

/// Time one input may take to be served. With its bytes followed by EOF, a connection ends as
/// soon as its streams are sent, well within this; a run past it is a hang.
const BOUND: Duration = Duration::from_secs(5);
/// The token the server asks for when flag bit 1 is set.
const TOKEN: &str = "tok";

/// What serving one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Frames the server sent.
    pub frames: usize,
    /// Bytes the server sent.
    pub bytes: usize,
    /// Whether the connection was still being served after the bound (a hang).
    pub timed_out: bool,
}

/// Serves `input` as one client connection's bytes, then EOF, and checks what the server
/// sent: every byte must decode as frames with the client's own limits.
///
/// Byte 0 holds flags: bit 0 puts a valid `HELLO` before the rest (so that inputs reach the
/// control loop), bit 1 makes the server require a token (the `HELLO` of bit 0 carries it),
/// bit 2 drops the request rate to 2 per second. The rest is written as it is.
///
/// # Panics
///
/// When the server's output does not decode: that is a bug the fuzzer reports.
pub fn serve_bytes(input: &[u8]) -> Outcome {
    let flags = input.first().copied().unwrap_or(0);
    let rest = input.get(1..).unwrap_or_default();
    let mut bytes = Vec::with_capacity(input.len() + 64);
    if flags & 1 != 0 {
        let mut hello = BytesMut::new();
        let config = ClientConfig {
            token: Some(TOKEN.to_owned()),
            ..ClientConfig::default()
        };
        ClientHandshake::new(config, Instant::now()).poll_transmit(&mut hello);
        bytes.extend_from_slice(&hello);
    }
    bytes.extend_from_slice(rest);

    let mut config = Config::on(([127, 0, 0, 1], 0).into());
    config.root = Some(library_dir().to_owned());
    config.token = (flags & 2 != 0).then(|| TOKEN.to_owned());
    config.limits.handshake_timeout = Duration::from_secs(2);
    // Short: a stream that waits on something the input never sends holds the run this long.
    config.limits.idle_timeout = Duration::from_millis(250);
    if flags & 4 != 0 {
        config.limits.max_requests_per_sec = 2;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let outcome = rt.block_on(run(config, bytes));
    rt.shutdown_timeout(Duration::from_millis(100));
    outcome
}

async fn run(config: Config, input: Vec<u8>) -> Outcome {
    let library = Library::new(library_dir()).expect("the fuzz library opens");
    let shared = std::sync::Arc::new(Shared::new(config, library));
    let (client, server) = tokio::io::duplex(64 << 10);
    let idle = shared.config.limits.idle_timeout;
    let (guarded, handle) = Guarded::new(server, idle, shared.metrics.clone());
    let deadline = tokio::time::Instant::now() + shared.config.limits.handshake_timeout;
    let served = tokio::spawn(crate::listen::serve_io(
        shared,
        Box::new(guarded),
        handle,
        "fuzz".to_owned(),
        deadline,
    ));
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
    });
    let drained = tokio::time::timeout(BOUND, async {
        let mut decoder = Decoder::new(WireLimits::default());
        let mut buf = BytesMut::with_capacity(64 << 10);
        let mut outcome = Outcome {
            frames: 0,
            bytes: 0,
            timed_out: false,
        };
        loop {
            while let Some(_frame) = decoder
                .decode(&mut buf)
                .unwrap_or_else(|e| panic!("the server sent bytes that do not decode: {e}"))
            {
                outcome.frames += 1;
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => outcome.bytes += n,
            }
        }
        assert!(buf.is_empty(), "the server's output ends mid-frame");
        let _ = served.await;
        outcome
    })
    .await;
    writer.abort();
    drained.unwrap_or(Outcome {
        frames: 0,
        bytes: 0,
        timed_out: true,
    })
}

/// A small library made once per process: bytes, a WAV, a nested file, an empty file and a
/// symlink pointing out of the root.
fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chunkcast-fuzz-lib-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("dir"));
        let bytes: Vec<u8> = (0..64u32 << 10)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = std::fs::write(dir.join("a.bin"), &bytes);
        let _ = std::fs::write(dir.join("dir/b.bin"), &bytes[..1000]);
        let _ = std::fs::write(dir.join("empty.bin"), b"");
        let _ = std::fs::write(dir.join("tone.wav"), tiny_wav());
        #[cfg(unix)]
        let _ = std::os::unix::fs::symlink("/etc/hostname", dir.join("out"));
        dir
    })
}

/// 50 ms of 8 kHz mono 16-bit silence-ish: enough for the WAV packetizer and realtime pacing.
fn tiny_wav() -> Vec<u8> {
    let samples: Vec<u8> = (0..400u16).flat_map(|i| (i * 37).to_le_bytes()).collect();
    let data_len = samples.len() as u32;
    let mut w = Vec::with_capacity(44 + samples.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.extend_from_slice(&samples);
    w
}

#[cfg(test)]
mod tests {
    use chunkcast_protocol::StreamId;
    use chunkcast_protocol::wire::{Frame, Mode, Open, Resume, encode};

    use super::*;

    fn frames(fs: &[Frame]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for f in fs {
            encode(f, &mut b);
        }
        b.to_vec()
    }

    fn open(request: u32, path: &str, mode: Mode) -> Frame {
        Frame::Open(Open {
            request,
            stream: StreamId(request),
            path: path.to_owned(),
            mode,
            resume: Resume::Start,
            compress: request % 2 == 1,
            raw: false,
            fragment: false,
            header_crc: false,
            chunk_size: 0,
        })
    }

    /// Seed inputs for the fuzzer, each a flag byte and frames that reach deep paths (a file
    /// name the fuzzer could not guess, pacing, resume, live channels):
    /// `CHUNKCAST_FUZZ_SEEDS=fuzz/corpus/server_conn cargo test -p chunkcast-server --lib
    /// write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore = "writes files; run by hand before fuzzing"]
    fn write_fuzz_seeds() {
        let dir = std::env::var("CHUNKCAST_FUZZ_SEEDS").expect("CHUNKCAST_FUZZ_SEEDS=DIR");
        std::fs::create_dir_all(&dir).unwrap();
        let list = |request| Frame::List {
            request,
            prefix: String::new(),
        };
        let mut resumed = open(4, "dir/b.bin", Mode::Download);
        if let Frame::Open(o) = &mut resumed {
            o.resume = Resume::Offset(500);
            o.chunk_size = 100;
        }
        let seeds: Vec<(u8, Vec<Frame>)> = vec![
            (1, vec![list(1)]),
            (
                1,
                vec![
                    open(2, "a.bin", Mode::Download),
                    open(3, "tone.wav", Mode::Realtime),
                ],
            ),
            (
                1,
                vec![
                    resumed,
                    Frame::Close {
                        stream: StreamId(4),
                        code: chunkcast_protocol::ErrorCode::None,
                        message: String::new(),
                    },
                ],
            ),
            (3, vec![list(1), open(1, "empty.bin", Mode::Download)]),
            (5, (1..12).map(list).collect()),
            (
                1,
                vec![
                    Frame::Ping {
                        nonce: 1,
                        time_us: 5,
                    },
                    Frame::Pong {
                        nonce: 1,
                        echo_us: 0,
                        time_us: 9,
                    },
                    Frame::Goodbye {
                        code: chunkcast_protocol::ErrorCode::None,
                        message: String::new(),
                    },
                ],
            ),
            (
                1,
                vec![
                    Frame::Subscribe {
                        request: 1,
                        stream: StreamId(1),
                        channel: "live/x".to_owned(),
                    },
                    Frame::Publish {
                        request: 2,
                        stream: StreamId(2),
                        channel: "live/x".to_owned(),
                        codec: chunkcast_protocol::Codec::Bytes,
                    },
                ],
            ),
        ];
        for (i, (flags, fs)) in seeds.iter().enumerate() {
            let mut input = vec![*flags];
            input.extend(frames(fs));
            std::fs::write(format!("{dir}/seed-{i}"), &input).unwrap();
            assert!(!serve_bytes(&input).timed_out, "seed {i}");
        }
        let mut raw = vec![0u8];
        let mut hello = BytesMut::new();
        ClientHandshake::new(ClientConfig::default(), Instant::now()).poll_transmit(&mut hello);
        raw.extend_from_slice(&hello);
        raw.extend(frames(&[list(1)]));
        std::fs::write(format!("{dir}/seed-raw-hello"), &raw).unwrap();
    }

    #[test]
    fn garbage_and_nothing_end_quickly() {
        for input in [
            &b""[..],
            b"\x00",
            b"\x00GET / HTTP/1.1\r\n\r\n",
            b"\x01\x00\x00",
        ] {
            let o = serve_bytes(input);
            assert!(!o.timed_out, "{input:?}");
        }
    }

    #[test]
    fn a_valid_session_gets_its_files() {
        let mut input = vec![1u8];
        input.extend(frames(&[
            Frame::List {
                request: 1,
                prefix: String::new(),
            },
            open(2, "a.bin", Mode::Download),
            open(3, "tone.wav", Mode::Realtime),
            open(4, "out", Mode::Download),
            open(5, "../a.bin", Mode::Download),
        ]));
        let o = serve_bytes(&input);
        assert!(!o.timed_out);
        // WELCOME, CATALOG, 2 × (OPENED + chunks), 2 ERRORs: more than 64 KiB of chunks.
        assert!(o.bytes > 64 << 10, "{o:?}");
        assert!(o.frames > 6, "{o:?}");
    }

    #[test]
    fn a_wrong_token_is_answered_and_closed() {
        let o = serve_bytes(&[2]);
        assert!(!o.timed_out);
        let mut input = vec![2u8];
        let mut hello = BytesMut::new();
        ClientHandshake::new(ClientConfig::default(), Instant::now()).poll_transmit(&mut hello);
        input.extend_from_slice(&hello);
        let o = serve_bytes(&input);
        assert_eq!(o.frames, 1, "one ERROR");
    }
}
