//! `chunkcast`: parse the command line and run it; errors as one line on stderr.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = chunkcast::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Blocking work (the file writer, file reads) has its own threads either way.
    let runtime = if cli.embeds_server() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chunkcast: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Only `get` can continue a cut transfer: no other command may suggest `--resume`.
    let resumable = matches!(cli.command, chunkcast::cli::Command::Get { .. });
    match runtime.block_on(chunkcast::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Ctrl-C, handled: the command already said what it did. 130 = 128 + SIGINT.
        Err(chunkcast::error::ClientError::Interrupted) => std::process::ExitCode::from(130),
        Err(e) => {
            let e = if resumable {
                e
            } else {
                e.without_resume_hint()
            };
            eprintln!("chunkcast: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
