//! External tools (ffmpeg, sox, Chromium, ...) that some tests need.

use std::path::PathBuf;

/// Where `name` is on `PATH`, if it is.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `name` is on `PATH`. When it is not: under `CI` (which installs every tool) the
/// test fails, naming `install` (how to get it); elsewhere it prints that it skips, and the
/// caller returns.
pub fn require_tool(name: &str, install: &str) -> bool {
    if find_tool(name).is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is required under CI ({install})"
    );
    eprintln!("skipped: {name} is not on PATH ({install})");
    false
}
