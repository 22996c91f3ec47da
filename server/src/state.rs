//! The state directory (`--state-dir`): the self-signed certificate and its key, kept so that
//! the certificate's SHA-256, which clients pin, survives restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use chunkcast_transport::tls::{self, Identity};
use tracing::info;

use crate::config::SetupError;

/// The one file that holds the certificate and its key (PEM, readable by the owner only): one
/// file, so that it appears whole or not at all, and two servers starting at once cannot pair
/// one's certificate with the other's key.
pub(crate) const IDENTITY_FILE: &str = "identity.pem";

/// The default state directory: `chunkcast` under the user's data directory
/// (`~/.local/share/chunkcast` on Linux), if there is one.
pub fn default_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("chunkcast"))
}

/// The certificate kept in `dir`, or a new self-signed one for `names`, saved there.
pub(crate) fn identity(dir: &Path, names: &[String]) -> Result<Identity, SetupError> {
    let fail = |message: String| SetupError::State {
        dir: dir.display().to_string(),
        message,
    };
    let file = dir.join(IDENTITY_FILE);
    match std::fs::read(&file) {
        Ok(pem) => {
            let id = load(&pem, &file).map_err(|why| {
                fail(format!(
                    "{} is unusable ({why}); to start over with a new certificate, delete it \
                     (every client must then pin the new cert-sha256)",
                    file.display()
                ))
            })?;
            info!(file = %file.display(), "using the kept certificate");
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (id, cert, key) = Identity::self_signed_pem(names)
                .map_err(|e| fail(format!("generating a certificate: {e}")))?;
            match save(dir, &file, &format!("{cert}{key}")) {
                Ok(true) => {
                    info!(file = %file.display(), "new self-signed certificate, kept for restarts");
                    Ok(id)
                }
                // Another server starting at the same time saved its own first: use that one,
                // so that both agree with the file.
                Ok(false) => identity(dir, names),
                Err(e) => Err(fail(format!(
                    "cannot save the certificate: {e}; pass another --state-dir"
                ))),
            }
        }
        Err(e) => Err(fail(format!("cannot read {}: {e}", file.display()))),
    }
}

/// Parses a kept identity and checks that its key belongs to its certificate.
fn load(pem: &[u8], file: &Path) -> Result<Identity, String> {
    let id = Identity::from_pem(pem, file, pem, file).map_err(|e| e.to_string())?;
    tls::server_config(&id).map_err(|e| e.to_string())?;
    Ok(id)
}

/// Writes `pem` to `file` unless it exists: `Ok(false)` if another process got there first.
fn save(dir: &Path, file: &Path, pem: &str) -> std::io::Result<bool> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let tmp = tempfile_in(dir)?;
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        // A hard link fails if the name exists: the file appears whole, and only once.
        match std::fs::hard_link(&tmp, file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Ok(dir.join(format!(
        ".{IDENTITY_FILE}.{}.{nanos}.tmp",
        std::process::id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = identity(&state, &[]).unwrap();
        let b = identity(&state, &[]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&state.join(IDENTITY_FILE)), 0o600);
            assert_eq!(mode(&state), 0o700);
        }
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_kept_certificate_is_an_error_not_a_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(IDENTITY_FILE);
        for junk in [&b"not a pem file"[..], b""] {
            std::fs::write(&file, junk).unwrap();
            let e = identity(dir.path(), &[]).unwrap_err().to_string();
            assert!(e.contains("is unusable") && e.contains("delete it"), "{e}");
            assert_eq!(std::fs::read(&file).unwrap(), junk, "the file was replaced");
        }
        // A certificate whose key is another certificate's.
        let (_, cert, _) = Identity::self_signed_pem(&[]).unwrap();
        let (_, _, key) = Identity::self_signed_pem(&[]).unwrap();
        std::fs::write(&file, format!("{cert}{key}")).unwrap();
        let e = identity(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("is unusable"), "{e}");
    }
}
