//! Chat end to end: two writers in a call room, one of them through a proxy that cuts its
//! connection mid-conversation. Every line arrives once, in order, at both.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use chunkcast_client::chat::{ChatLine, ChatOptions, ChatReport, run_chat};
use chunkcast_client::session::ConnectOptions;
use chunkcast_client::url::{Scheme, Url};
use chunkcast_testkit::proxy::cutting_proxy;
use chunkcast_testkit::{server_with, url, url_at};
use tokio::sync::mpsc;

/// A hang is a failure, not a stuck CI.
const LIMIT: Duration = Duration::from_secs(60);
/// Lines each side writes: at the client's rate (5 a second after a burst of 16), a few
/// seconds of chat, long enough for the cut to land in the middle.
const LINES: usize = 30;

struct Writer {
    input: mpsc::Sender<String>,
    output: mpsc::Receiver<ChatLine>,
    task: tokio::task::JoinHandle<Result<ChatReport, chunkcast_client::error::ClientError>>,
}

fn writer(u: Url) -> Writer {
    let (input, lines) = mpsc::channel(LINES);
    let (out, output) = mpsc::channel(4 * LINES);
    let task = tokio::spawn(async move {
        run_chat(
            &u,
            &ConnectOptions::default(),
            "call/standup",
            lines,
            out,
            &ChatOptions::default(),
        )
        .await
    });
    Writer {
        input,
        output,
        task,
    }
}

/// Reads `n` lines.
async fn read(w: &mut Writer, n: usize) -> Vec<ChatLine> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(w.output.recv().await.expect("the chat delivers every line"));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_arrives_once_in_order_through_a_cut_connection() {
    tokio::time::timeout(LIMIT, async {
        let server = server_with(|_| {}).await;
        // The first connection carries ~1.5 KB from the server (the welcome, the clock's
        // pong, a dozen acks and lines), then is cut; later ones carry everything.
        let proxy = cutting_proxy(
            server.tcp_addr(),
            1_500,
            Arc::new(AtomicUsize::new(usize::MAX)),
        )
        .await;
        let mut a = writer(url_at(proxy, Scheme::Tcp, "call/standup"));
        let mut b = writer(url(&server, Scheme::Tcp, "call/standup"));
        let (ai, bi) = (a.input.clone(), b.input.clone());
        let typing = tokio::spawn(async move {
            for i in 0..LINES {
                ai.send(format!("a{i}")).await.unwrap();
                bi.send(format!("b{i}")).await.unwrap();
            }
        });
        let (seen_a, seen_b) = tokio::join!(read(&mut a, 2 * LINES), read(&mut b, 2 * LINES));
        typing.await.unwrap();
        drop((a.input, b.input));
        let report_a = a.task.await.unwrap().unwrap();
        let report_b = b.task.await.unwrap().unwrap();
        assert!(
            report_a.connections >= 2,
            "the proxy cut the first connection: {report_a:?}"
        );
        assert_eq!(report_b.connections, 1, "{report_b:?}");
        assert_eq!((report_a.sent, report_b.sent), (LINES as u64, LINES as u64));
        for seen in [&seen_a, &seen_b] {
            // The room's numbering, without a hole or a repeat.
            let seqs: Vec<u64> = seen.iter().map(|l| l.seq).collect();
            assert_eq!(seqs, (1..=2 * LINES as u64).collect::<Vec<_>>());
            assert!(seen.iter().all(|l| l.missed == 0));
            // Each writer's lines once each, in the order written.
            for w in ["a", "b"] {
                let theirs: Vec<&str> = seen
                    .iter()
                    .map(|l| l.text.as_str())
                    .filter(|t| t.starts_with(w))
                    .collect();
                let written: Vec<String> = (0..LINES).map(|i| format!("{w}{i}")).collect();
                assert_eq!(theirs, written, "{w}'s lines");
            }
        }
        // One room order for both.
        let texts = |s: &[ChatLine]| s.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&seen_a), texts(&seen_b));
        assert!(
            seen_a
                .iter()
                .filter(|l| l.mine)
                .all(|l| l.text.starts_with('a'))
        );
        server.shutdown().await;
    })
    .await
    .expect("the chat finishes within its bound");
}
