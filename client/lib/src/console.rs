//! The terminal's side of a command: stdout that may close early, and Ctrl-C.

use tokio_util::sync::CancellationToken;

use crate::error::ClientError;

/// Cancels `token` on the first Ctrl-C, so that the command stops cleanly and reports; a
/// second Ctrl-C while it finishes exits at once (status 130).
pub fn cancel_on_ctrl_c(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    })
}

/// Writes `text` to stdout; a reader that went away is reported as such (see
/// [`ClientError::is_stdout_closed`]), never as a panic.
pub fn print_stdout(text: &str) -> Result<(), ClientError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ClientError::stdout)
}
