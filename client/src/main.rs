//! `chunkcast`: parse the command line and run it; errors as one line on stderr.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = chunkcast::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match chunkcast::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chunkcast: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
