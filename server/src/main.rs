//! `chunkcast-server`: parse flags, start, print the listening line, serve until a signal.

use std::io::{IsTerminal, Write};

use anyhow::Context;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chunkcast-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = chunkcast_server::cli::Args::load()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Colour codes only for a person watching: not in a journal, a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let stop = shutdown_signal().context("installing the signal handlers")?;
    let server = chunkcast_server::Server::start(config).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", server.listening_line()).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    drop(stdout);
    stop.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Registers for SIGINT and SIGTERM now (before the `listening` line, so that a supervisor
/// that stops the server as soon as it is up still gets a graceful shutdown); the future ends
/// at the first of them.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
