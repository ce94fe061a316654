//! Noticing that a few small files (certificates, keys, a token) changed.
//!
//! Polled, as the model registry does for model files, rather than inotify:
//! it works the same on every file system, through Kubernetes' symlink swaps
//! of mounted secrets, and costs a few reads of kilobyte files per interval.
//! The fingerprint is a hash of the contents, not mtime and size, so a file
//! rewritten within the same second with the same length is still noticed.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

pub struct FileWatch {
    paths: Vec<PathBuf>,
    last: u64,
}

impl FileWatch {
    /// Starts from the files' current contents.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let last = fingerprint(&paths);
        Self { paths, last }
    }

    /// Whether any file changed (or appeared, or vanished) since the last
    /// call that said so. A change is reported once, whether or not the new
    /// contents turn out usable, so a bad file is not retried every tick.
    pub fn changed(&mut self) -> bool {
        let now = fingerprint(&self.paths);
        if now == self.last {
            return false;
        }
        self.last = now;
        true
    }
}

fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        match std::fs::read(p) {
            Ok(bytes) => {
                1u8.hash(&mut h);
                bytes.hash(&mut h);
            }
            Err(e) => {
                0u8.hash(&mut h);
                e.kind().hash(&mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_size_rewrite_is_noticed_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.pem");
        std::fs::write(&f, "aaaa").unwrap();
        let mut w = FileWatch::new(vec![f.clone()]);
        assert!(!w.changed());
        std::fs::write(&f, "bbbb").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        std::fs::remove_file(&f).unwrap();
        assert!(w.changed());
    }
}
