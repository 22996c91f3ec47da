//! The media library: a directory tree served read-only, with every request path confined to
//! it, its catalog, and cached whole-file digests.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::SystemTime;

use chunkcast_media::{Config as ChunkConfig, Packetizer};
use chunkcast_protocol::verify::Outboard;
use chunkcast_protocol::wire::{Entry, clip_note};
use chunkcast_protocol::{Codec, ErrorCode};

/// Bytes of BLAKE3 trees the library keeps at most: 256 MiB, the trees of 64 GiB of files.
const OUTBOARD_BUDGET: usize = 256 << 20;
/// Files listed at most, so that a huge tree cannot make a listing unbounded.
const MAX_ENTRIES: usize = 10_000;
/// Directory depth walked at most.
const MAX_DEPTH: usize = 16;

/// Why a request for a path failed; each maps to a wire error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path tries to leave the root or is not a plain relative path.
    #[error("bad path {0:?}: paths are relative to the library, without '..'")]
    Invalid(String),
    /// No such file in the library.
    #[error("no such file in the library: {0}")]
    NotFound(String),
}

impl PathError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::BadRequest,
            Self::NotFound(_) => ErrorCode::NotFound,
        }
    }
}

/// What tells one version of a file from another without reading it: size and modification
/// time, and on Unix the inode (a file replaced by a rename keeps neither) and the change time
/// (which no writer can set back, unlike the modification time; but a hard link or a chmod
/// moves it too, so only the digest cache, where a false miss costs a re-hash, uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Stamp {
    /// The stamp of the file `meta` describes.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
            #[cfg(unix)]
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether `other` is the same file with the same size and modification time: what a
    /// writer changes. The change time is left out: a backup's hard link or a chmod during a
    /// download must not fail it.
    pub(crate) fn same_version(&self, other: &Self) -> bool {
        let same = self.len == other.len && self.modified == other.modified;
        #[cfg(unix)]
        let same = same && self.inode == other.inode;
        same
    }
}

/// A library rooted at a directory.
pub struct Library {
    root: PathBuf,
    /// Serve and list paths with a component starting with `.`.
    hidden: bool,
    digests: Mutex<HashMap<PathBuf, (Stamp, [u8; 32])>>,
    /// The BLAKE3 trees of files sent verified, beside their digests: 1/256 of each file.
    outboards: Mutex<HashMap<PathBuf, (Stamp, Arc<Outboard>)>>,
    probes: Mutex<HashMap<PathBuf, (Stamp, Entry)>>,
}

impl Library {
    /// A library serving `root` (canonicalized, so that confinement checks compare real paths).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self {
            root,
            hidden: false,
            digests: Mutex::default(),
            outboards: Mutex::default(),
            probes: Mutex::default(),
        })
    }

    /// Whether to serve and list hidden paths (a component starting with `.`); off by
    /// default, when they are answered as not found, so that a `.env` or `.git/` left in the
    /// tree does not leak and its existence is not revealed.
    #[must_use]
    pub fn serve_hidden(mut self, yes: bool) -> Self {
        self.hidden = yes;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a request path to a regular file inside the root.
    ///
    /// The path arrives already percent-decoded by the client; it must be relative, `/`-separated,
    /// free of `.`/`..` components, backslashes and NULs; the file it names, after following
    /// symlinks, must still lie under the root. A hidden component (`.env`, `a/.git/b`) is not
    /// found unless [`serve_hidden`](Self::serve_hidden).
    pub fn resolve(&self, request: &str) -> Result<PathBuf, PathError> {
        let invalid = || PathError::Invalid(request.to_owned());
        if request.contains(['\0', '\\']) || request.starts_with('/') {
            return Err(invalid());
        }
        let mut rel = PathBuf::new();
        for part in request.split('/').filter(|p| !p.is_empty()) {
            let mut comps = Path::new(part).components();
            match (comps.next(), comps.next()) {
                (Some(Component::Normal(_)), None) => rel.push(part),
                _ => return Err(invalid()),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(invalid());
        }
        if !self.hidden && request.split('/').any(|p| p.starts_with('.')) {
            return Err(PathError::NotFound(request.to_owned()));
        }
        let real = self
            .root
            .join(&rel)
            .canonicalize()
            .map_err(|_| PathError::NotFound(request.to_owned()))?;
        if !real.starts_with(&self.root) {
            // A symlink pointing out of the root: reported as not found, so that the answer
            // does not reveal what exists outside.
            return Err(PathError::NotFound(request.to_owned()));
        }
        if !real.is_file() {
            return Err(PathError::NotFound(request.to_owned()));
        }
        // A visible name that is a symlink to a hidden file is hidden too.
        if !self.hidden && is_hidden(real.strip_prefix(&self.root).unwrap_or(&real)) {
            return Err(PathError::NotFound(request.to_owned()));
        }
        Ok(real)
    }

    /// The cached digest of a resolved file whose metadata is `meta`, if it was computed for
    /// this version of it (size, mtime, inode and change time).
    pub fn cached_digest(&self, path: &Path, meta: &std::fs::Metadata) -> Option<[u8; 32]> {
        let digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        digests
            .get(path)
            .filter(|(s, _)| *s == Stamp::of(meta))
            .map(|(_, d)| *d)
    }

    /// Caches `digest` for `path` as it was when `meta` was read (hashed while it was being
    /// sent): if the file changed meanwhile, its new stamp will not match.
    pub fn remember_digest(&self, path: &Path, meta: &std::fs::Metadata, digest: [u8; 32]) {
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (Stamp::of(meta), digest));
    }

    /// The BLAKE3 tree of the resolved file `path`, opened as `file` whose metadata is
    /// `meta`: cached per version of the file, else computed from `file` in one pass (and its
    /// digest cached too). `file`'s position is left anywhere: the caller seeks.
    pub fn outboard(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        file: &mut File,
    ) -> std::io::Result<Arc<Outboard>> {
        let stamp = Stamp::of(meta);
        let lock = || self.outboards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, ob)) = lock().get(path) {
            if *s == stamp {
                return Ok(ob.clone());
            }
        }
        file.seek(SeekFrom::Start(0))?;
        let reader = BufReader::with_capacity(1 << 20, &mut *file);
        let ob = Arc::new(Outboard::from_reader(reader, meta.len())?);
        self.remember_digest(path, meta, ob.root());
        let mut cache = lock();
        // Bounded: past the budget, forget other trees (a miss costs one hashing pass).
        let mut held: usize = cache.values().map(|(_, o)| o.size()).sum();
        while held + ob.size() > OUTBOARD_BUDGET {
            let Some(victim) = cache.keys().next().cloned() else {
                break;
            };
            if let Some((_, o)) = cache.remove(&victim) {
                held -= o.size();
            }
        }
        cache.insert(path.to_owned(), (stamp, ob.clone()));
        Ok(ob)
    }

    /// The BLAKE3 digest of a resolved file, computed once per version (size, mtime, inode and change time).
    pub fn digest(&self, path: &Path) -> std::io::Result<[u8; 32]> {
        let meta = std::fs::metadata(path)?;
        let stamp = Stamp::of(&meta);
        if let Some((s, d)) = self
            .digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            if *s == stamp {
                return Ok(*d);
            }
        }
        let mut hasher = blake3::Hasher::new();
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
        std::io::copy(&mut reader, &mut hasher)?;
        let digest = *hasher.finalize().as_bytes();
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (stamp, digest));
        Ok(digest)
    }

    /// Lists the files under `prefix` (a directory path relative to the root, or `""`).
    ///
    /// Hidden files, symlinks leading out of the root and unreadable files are skipped.
    /// Blocking: call it from a blocking thread.
    pub fn list(&self, prefix: &str) -> Result<Vec<Entry>, PathError> {
        let prefix = prefix.trim_matches('/');
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            let dir = self.root.join(prefix);
            let real = dir
                .canonicalize()
                .map_err(|_| PathError::NotFound(prefix.to_owned()))?;
            if !real.starts_with(&self.root) || prefix.split('/').any(|p| p == ".." || p == ".") {
                return Err(PathError::Invalid(prefix.to_owned()));
            }
            if !self.hidden && prefix.split('/').any(|p| p.starts_with('.')) {
                return Err(PathError::NotFound(prefix.to_owned()));
            }
            real
        };
        let mut files = Vec::new();
        self.walk(&start, 0, &mut files);
        files.sort();
        Ok(files.iter().filter_map(|p| self.entry(p)).collect())
    }

    fn walk(&self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if out.len() >= MAX_ENTRIES {
                return;
            }
            if !self.hidden && e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(real) = e.path().canonicalize() else {
                continue;
            };
            if !real.starts_with(&self.root) {
                continue;
            }
            if !self.hidden && is_hidden(real.strip_prefix(&self.root).unwrap_or(&real)) {
                continue;
            }
            if real.is_dir() {
                self.walk(&e.path(), depth + 1, out);
            } else if real.is_file() {
                out.push(e.path());
            }
        }
    }

    fn entry(&self, path: &Path) -> Option<Entry> {
        let meta = std::fs::metadata(path).ok()?;
        let stamp = Stamp::of(&meta);
        if let Some((s, e)) = self
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            if *s == stamp {
                return Some(e.clone());
            }
        }
        let rel = path.strip_prefix(&self.root).ok()?;
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>();
        let name = rel.join("/");
        let (codec, duration_us, note) = match probe(path, &name) {
            Ok(p) => (p.codec(), p.duration_us(), p.warning().map(clip_note)),
            Err(e) => (
                Codec::Bytes,
                None,
                Some(clip_note(&format!("unreadable: {e}"))),
            ),
        };
        let entry = Entry {
            path: name,
            codec,
            size: Some(meta.len()),
            duration_us,
            viewers: 0,
            note,
        };
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (stamp, entry.clone()));
        Some(entry)
    }
}

/// Whether a relative path has a component starting with `.`.
fn is_hidden(rel: &Path) -> bool {
    rel.components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

fn probe(path: &Path, name: &str) -> Result<Packetizer, chunkcast_media::MediaError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    Packetizer::open_any(ChunkConfig::default(), &mut f, len, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib() -> (tempfile::TempDir, Library) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a b ç.bin"), b"hello").unwrap();
        std::fs::write(dir.path().join("top.bin"), b"x").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let lib = Library::new(dir.path()).unwrap();
        (dir, lib)
    }

    #[test]
    fn resolves_names_with_spaces_and_unicode() {
        let (_d, lib) = lib();
        assert!(lib.resolve("sub/a b ç.bin").unwrap().ends_with("a b ç.bin"));
        assert!(lib.resolve("sub//a b ç.bin").is_ok());
    }

    #[test]
    fn traversal_is_refused() {
        let (_d, lib) = lib();
        for bad in [
            "../etc/passwd",
            "sub/../../x",
            "/etc/passwd",
            "sub/./a",
            "a\\..\\b",
            "x\0y",
            "",
            ".",
        ] {
            assert!(
                matches!(lib.resolve(bad), Err(PathError::Invalid(_))),
                "{bad:?}"
            );
        }
        // Encoded forms are literal names here (the client decodes once): they do not exist.
        for literal in ["%2e%2e/etc/passwd", "..%2fetc", "．．/etc"] {
            assert!(
                matches!(lib.resolve(literal), Err(PathError::NotFound(_))),
                "{literal:?}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_the_root_is_not_served_nor_listed() {
        let (d, lib) = lib();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("escape")).unwrap();
        assert!(matches!(lib.resolve("escape"), Err(PathError::NotFound(_))));
        assert!(lib.list("").unwrap().iter().all(|e| e.path != "escape"));
    }

    #[test]
    fn lists_files_skipping_hidden_ones() {
        let (_d, lib) = lib();
        let names: Vec<_> = lib.list("").unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(names, ["sub/a b ç.bin", "top.bin"]);
        assert!(lib.list("../").is_err());
    }

    #[test]
    fn hidden_paths_are_not_found_unless_served() {
        let (d, lib) = lib();
        std::fs::create_dir_all(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/config"), b"[core]").unwrap();
        std::fs::create_dir_all(d.path().join("sub/.secret")).unwrap();
        std::fs::write(d.path().join("sub/.secret/b"), b"s").unwrap();
        for hidden in [".hidden", ".git/config", "sub/.secret/b", ".nope"] {
            // Not found, the same answer as for a file that does not exist.
            assert!(
                matches!(lib.resolve(hidden), Err(PathError::NotFound(_))),
                "{hidden}"
            );
        }
        assert!(matches!(lib.list(".git"), Err(PathError::NotFound(_))));
        let lib = lib.serve_hidden(true);
        for hidden in [".hidden", ".git/config", "sub/.secret/b"] {
            assert!(lib.resolve(hidden).is_ok(), "{hidden}");
        }
        let names: Vec<_> = lib.list("").unwrap().into_iter().map(|e| e.path).collect();
        assert!(names.contains(&".git/config".to_owned()), "{names:?}");
    }

    #[test]
    fn damaged_files_are_listed_with_a_note() {
        let (d, lib) = lib();
        std::fs::write(d.path().join("notes.png"), b"not a picture at all").unwrap();
        let e = lib
            .list("")
            .unwrap()
            .into_iter()
            .find(|e| e.path == "notes.png")
            .unwrap();
        assert_eq!(e.codec, Codec::Bytes);
        let note = e.note.unwrap();
        assert!(note.starts_with("served as bytes: corrupt png"), "{note}");
    }
}
