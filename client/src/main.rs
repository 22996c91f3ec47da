//! `chunkcast`: parse the command line and run it; errors as one line on stderr.
//!
//! Exit status: 0 on success (and when the reader of stdout closed the pipe early, as in
//! `… --sink pcm:- | head -c 1000`), 130 after Ctrl-C, 1 on any other failure.

use std::io::IsTerminal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = chunkcast::cli::Cli::parse();
    // Silent unless asked: the commands tell the user what they need to know themselves.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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
    match runtime.block_on(chunkcast::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_silent() {
                eprintln!("chunkcast: {e}");
            }
            std::process::ExitCode::from(e.exit_status())
        }
    }
}
