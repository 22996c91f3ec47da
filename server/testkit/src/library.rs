//! The sample library and digests of its files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file every well-behaved download fetches: the largest sample.
pub const BIG: &str = chunkcast_media_samples::RANDOM_BIN;

/// The sample library, generated once per test binary and kept between runs (60 MB: one per
/// run would fill the temporary directory). Each test binary has its own, named after it, so
/// that binaries run side by side never generate into one directory at once.
pub fn samples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chunkcast-{}-samples", test_binary()));
        chunkcast_media_samples::ensure(&dir).expect("generating samples");
        dir
    })
}

/// The running test binary's name without cargo's hash (`adversarial-0a1b…` is
/// `adversarial`), so that its sample directory outlives a rebuild.
fn test_binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .and_then(|s| s.to_str())
        .unwrap_or("tests");
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem.to_owned(),
    }
}

/// BLAKE3 of a sample, computed once for the big one.
pub fn digest_of(name: &str) -> [u8; 32] {
    static BIG_DIGEST: OnceLock<[u8; 32]> = OnceLock::new();
    let compute = || file_digest(&samples().join(name));
    if name == BIG {
        *BIG_DIGEST.get_or_init(compute)
    } else {
        compute()
    }
}

/// BLAKE3 of a file.
pub fn file_digest(path: &Path) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    h.update_reader(f)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    *h.finalize().as_bytes()
}
