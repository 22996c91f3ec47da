//! `chunkcast get http://…` against an origin that serves a file as `docs/HTTP.md` says
//! (its index, and chunk bodies built with the protocol's encoder and `Outboard::proof`),
//! through a small HTTP/1.1 responder: every chunk verified, a tampering cache caught at the
//! first chunk it alters (its CRC32C recomputed, so only the tree can tell), resume from the
//! chunk holding the first missing byte with the kept bytes checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, partial_path};
use chunkcast_client::http::HttpClient;
use chunkcast_client::http::get::get;
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::url::{Scheme, Url};
use chunkcast_protocol::verify::{Outboard, VerifyError};
use chunkcast_protocol::wire::codec::encode;
use chunkcast_protocol::{Chunk, ChunkFlags, Frame, StreamId};

mod http_support;
use http_support::{Answer, serve};

const LIMIT: Duration = Duration::from_secs(60);

/// Deterministic bytes that do not repeat within a group.
fn file(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a cache between does to chunk `seq`'s payload.
type Tamper = Box<dyn Fn(u64, &mut Vec<u8>) + Send + Sync>;

/// An origin for one file, `data` at `a.bin`, in chunks of `cs`; `tamper(seq, payload)` is
/// what a cache between does to chunk bodies (re-encoding them: a valid CRC32C). Counts the
/// chunk requests it answers.
struct Origin {
    data: Vec<u8>,
    outboard: Outboard,
    cs: u64,
    tamper: Tamper,
    chunk_requests: AtomicU64,
}

impl Origin {
    fn new(data: Vec<u8>, cs: u64) -> Self {
        Self {
            outboard: Outboard::from_bytes(&data),
            data,
            cs,
            tamper: Box::new(|_, _| {}),
            chunk_requests: AtomicU64::new(0),
        }
    }

    fn digest(&self) -> String {
        blake3::hash(&self.data).to_hex().to_string()
    }

    fn answer(&self, path: &str) -> Answer {
        let size = self.data.len() as u64;
        let chunks = size.div_ceil(self.cs).max(1);
        let json = |v: serde_json::Value| Answer {
            status: 200,
            ty: "application/json",
            body: v.to_string().into_bytes(),
        };
        if path == "/v1/index/a.bin" {
            return json(serde_json::json!({
                "version": 1, "path": "a.bin", "size": size, "digest": self.digest(),
                "group_size": 16384, "chunk_size": self.cs, "chunks": chunks,
                "codec": {"kind": "bytes"}, "duration_us": null,
                "chunk_url": format!("/v1/chunks/{}/{}/{{seq}}/a.bin", self.digest(), self.cs),
            }));
        }
        let prefix = format!("/v1/chunks/{}/{}/", self.digest(), self.cs);
        let seq = path
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix("/a.bin"))
            .and_then(|s| s.parse::<u64>().ok());
        let Some(seq) = seq.filter(|&s| s < chunks) else {
            return Answer {
                status: 404,
                ty: "application/json",
                body: br#"{"code":3,"error":"not found","message":"no such file"}"#.to_vec(),
            };
        };
        self.chunk_requests.fetch_add(1, Ordering::Relaxed);
        let offset = seq * self.cs;
        let end = (offset + self.cs).min(size);
        let mut payload = self.data[offset as usize..end as usize].to_vec();
        (self.tamper)(seq, &mut payload);
        let mut out = BytesMut::new();
        let nodes = self.outboard.proof(offset, offset, end);
        for part in nodes.chunks(1024 * 64) {
            let nodes = Bytes::copy_from_slice(part);
            encode(
                &Frame::Proof {
                    stream: StreamId(1),
                    nodes,
                },
                &mut out,
            );
        }
        let flags = if seq + 1 == chunks {
            ChunkFlags::END_OF_STREAM
        } else {
            ChunkFlags(0)
        };
        let chunk = Chunk::new(StreamId(1), seq, offset, 0, 0, flags, payload.into());
        encode(&Frame::Chunk(chunk), &mut out);
        Answer {
            status: 200,
            ty: "application/x-chunkcast-frames",
            body: out.to_vec(),
        }
    }
}

async fn origin(o: Origin) -> (Arc<Origin>, SocketAddr, tokio::task::JoinHandle<()>) {
    let o = Arc::new(o);
    let served = Arc::clone(&o);
    let (addr, task) = serve(Arc::new(move |p: String| {
        let a = served.answer(&p);
        Box::pin(async move { a })
    }))
    .await;
    (o, addr, task)
}

fn client(addr: SocketAddr) -> HttpClient {
    let url = Url {
        scheme: Scheme::Http,
        host: addr.ip().to_string(),
        port: addr.port(),
        path: String::new(),
    };
    HttpClient::new(&url, &ConnectOptions::default()).unwrap()
}

fn opts(out: &std::path::Path, resume: bool) -> GetOptions {
    GetOptions {
        out: Some(out.to_owned()),
        resume,
        ..GetOptions::default()
    }
}

#[tokio::test]
async fn a_file_over_http_is_byte_identical_every_chunk_verified() {
    tokio::time::timeout(LIMIT, async {
        let data = file(3 * 1024 * 1024 + 12_345);
        let (o, addr, task) = origin(Origin::new(data.clone(), 256 * 1024)).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.bin");
        let r = get(&client(addr), "a.bin", &opts(&out, false))
            .await
            .unwrap();
        assert!(r.verified);
        assert_eq!((r.len, r.resumed_from), (data.len() as u64, 0));
        assert_eq!(std::fs::read(&out).unwrap(), data);
        assert!(!partial_path(&out).exists());
        // Each chunk was asked for once: 13 of them.
        assert_eq!(o.chunk_requests.load(Ordering::Relaxed), 13);
        // An empty file is one empty chunk; a missing one is the server's 404, clearly.
        let (_, addr2, task2) = origin(Origin::new(Vec::new(), 16 * 1024)).await;
        let empty = dir.path().join("empty.bin");
        get(&client(addr2), "a.bin", &opts(&empty, false))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
        let e = get(
            &client(addr),
            "nope.bin",
            &opts(&dir.path().join("n"), false),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/v1/index/nope.bin: HTTP 404: not found: no such file"
        );
        task.abort();
        task2.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_tampering_cache_is_caught_at_the_first_altered_chunk_and_resume_goes_on() {
    tokio::time::timeout(LIMIT, async {
        let cs = 64 * 1024;
        let data = file(40 * cs as usize + 777);
        let mut tampering = Origin::new(data.clone(), cs);
        // From chunk 17 on, one byte in the middle of each chunk is changed.
        tampering.tamper = Box::new(|seq, p| {
            if seq >= 17 {
                let mid = p.len() / 2;
                p[mid] ^= 0x20;
            }
        });
        let (_, addr, task) = origin(tampering).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.bin");
        let e = get(&client(addr), "a.bin", &opts(&out, false))
            .await
            .unwrap_err();
        let ClientError::Cut { cause, have, .. } = &e else {
            panic!("not a cut download: {e}");
        };
        match cause.as_ref() {
            ClientError::Unverified {
                seq: 17,
                error: VerifyError::Data { offset },
            } => assert_eq!(*offset, 17 * cs + cs / 2 / 16384 * 16384),
            other => panic!("not caught at chunk 17: {other}"),
        }
        assert!(
            e.to_string().contains("chunk 17 failed verification"),
            "{e}"
        );
        // Nothing unverified was written: exactly the 17 chunks before it.
        let partial = partial_path(&out);
        assert_eq!(*have, 17 * cs);
        assert_eq!(std::fs::read(&partial).unwrap(), data[..17 * cs as usize]);
        assert!(!out.exists());
        task.abort();

        // The honest origin: --resume starts at chunk 17 and checks the 17 kept.
        let (o, addr, task) = origin(Origin::new(data.clone(), cs)).await;
        let r = get(&client(addr), "a.bin", &opts(&out, true))
            .await
            .unwrap();
        assert_eq!(r.resumed_from, 17 * cs);
        assert_eq!(o.chunk_requests.load(Ordering::Relaxed), 41 - 17);
        assert_eq!(std::fs::read(&out).unwrap(), data);

        // A partial file cut mid-chunk resumes from that chunk's start; one with a damaged
        // byte in what it keeps is refused, naming the file.
        std::fs::write(&partial, &data[..(5 * cs + 100) as usize]).unwrap();
        std::fs::remove_file(&out).unwrap();
        let r = get(&client(addr), "a.bin", &opts(&out, true))
            .await
            .unwrap();
        assert_eq!(r.resumed_from, 5 * cs);
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let mut damaged = data[..(9 * cs) as usize].to_vec();
        damaged[3 * cs as usize + 5] ^= 1;
        std::fs::write(&partial, &damaged).unwrap();
        std::fs::remove_file(&out).unwrap();
        let e = get(&client(addr), "a.bin", &opts(&out, true))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Resume { .. }), "{e}");
        assert!(e.to_string().contains("a.bin.partial"), "{e}");
        // --resume over a complete file verifies it and fetches nothing.
        std::fs::write(&out, &data).unwrap();
        std::fs::remove_file(&partial).unwrap();
        let before = o.chunk_requests.load(Ordering::Relaxed);
        let r = get(&client(addr), "a.bin", &opts(&out, true))
            .await
            .unwrap();
        assert!(r.already_complete && r.verified);
        assert_eq!(o.chunk_requests.load(Ordering::Relaxed), before);
        task.abort();
    })
    .await
    .expect("bounded");
}
