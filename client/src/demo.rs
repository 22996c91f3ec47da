//! `chunkcast demo`: the whole job in one command, on loopback.

use std::time::Duration;

use chunkcast_server::{Config, Server};
use chunkcast_transport::tls::Trust;

use chunkcast_client::error::ClientError;
use chunkcast_client::get::{GetOptions, get};
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::{Scheme, Url};

/// Starts a server on loopback with the built-in library, gets every sample over TCP, TLS and
/// QUIC into a temporary directory, verifies each, and prints a table.
pub async fn run() -> Result<(), ClientError> {
    let config = Config::on("127.0.0.1:0".parse().expect("literal address"));
    let server = Server::start(config)
        .await
        .map_err(|e| ClientError::Usage(format!("starting the demo server: {e}")))?;
    println!("{}", server.listening_line());
    let dir =
        tempfile::tempdir().map_err(|e| ClientError::file(std::path::Path::new("tempdir"), e))?;
    let opts = ConnectOptions {
        trust: Trust::pin_from_hex(server.fingerprint())?,
        token: None,
        timeout: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    let mut rows = Vec::new();
    let mut all_ok = true;
    for scheme in [Scheme::Tcp, Scheme::Tcps, Scheme::Quic] {
        let addr = if scheme == Scheme::Quic {
            server.quic_addr()
        } else {
            server.tcp_addr()
        };
        let url = Url {
            scheme,
            host: addr.ip().to_string(),
            port: addr.port(),
            path: String::new(),
        };
        let session = Session::connect(&url, &opts).await?;
        let entries = session.list("").await?;
        for e in entries {
            let out = dir
                .path()
                .join(format!("{}-{}", scheme.name(), e.path.replace('/', "_")));
            let got = get(
                &session,
                &e.path,
                &GetOptions {
                    out: Some(out.clone()),
                    ..Default::default()
                },
            )
            .await;
            let row = match got {
                Ok(r) => {
                    let same =
                        std::fs::read(&out).ok() == std::fs::read(server.root().join(&e.path)).ok();
                    all_ok &= r.verified && same;
                    let verified = if r.verified && same { "yes" } else { "NO" };
                    let ms = r.elapsed.as_secs_f64() * 1e3;
                    [
                        e.path,
                        scheme.name().into(),
                        r.len.to_string(),
                        format!("{ms:.1} ms"),
                        format!("{:.1}", r.mb_per_s()),
                        verified.into(),
                    ]
                }
                Err(err) => {
                    all_ok = false;
                    [
                        e.path,
                        scheme.name().into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        format!("failed: {err}"),
                    ]
                }
            };
            let _ = std::fs::remove_file(&out);
            rows.push(row);
        }
        session.close().await;
    }
    server.shutdown().await;
    print_table(&rows);
    if all_ok {
        Ok(())
    } else {
        Err(ClientError::Usage("demo: some files did not verify".into()))
    }
}

fn print_table(rows: &[[String; 6]]) {
    let head = ["FILE", "TRANSPORT", "BYTES", "TIME", "MB/S", "VERIFIED"].map(str::to_owned);
    let mut w = head.each_ref().map(|h| h.len());
    for r in rows {
        for (wi, c) in w.iter_mut().zip(r) {
            *wi = (*wi).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(rows) {
        println!(
            "{:<a$}  {:<b$}  {:>c$}  {:>d$}  {:>e$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4]
        );
    }
}
