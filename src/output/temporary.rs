//! Temporary files the process made, in one registry, so that an interrupt can remove them all.
//!
//! Every temporary file (an output being written before its rename, a scratch model for a
//! benchmark peer) is created and renamed or removed while holding the registry's lock, and is
//! listed there while it exists. [`remove_temporary_files`] (what a signal handler calls) takes
//! the lock, removes every listed file and refuses new ones from then on, so no file can be
//! created after the sweep or escape it. The registry knows no command and installs no handler:
//! the CLI does that.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

struct Registry {
    live: Vec<PathBuf>,
    /// Set by [`remove_temporary_files`]: the process is exiting, nothing new may appear.
    closed: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    closed: false,
});

/// The lock, also after a panic elsewhere (the list stays valid: every change is one push or
/// one removal).
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    fn forget(&mut self, path: &Path) {
        self.live.retain(|p| p != path);
    }

    fn refuse_if_closed(&self) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted: no new temporary files",
            ));
        }
        Ok(())
    }
}

/// Removes every temporary file this process has open or pending and refuses new ones; returns
/// how many were removed. For signal handlers (called from a normal thread, not from the signal
/// context) and tests.
pub fn remove_temporary_files() -> usize {
    let mut registry = registry();
    registry.closed = true;
    let removed = registry
        .live
        .drain(..)
        .filter(|path| fs::remove_file(path).is_ok())
        .count();
    removed
}

/// The temporary files that exist now (for tests and diagnostics).
pub fn live_temporary_files() -> Vec<PathBuf> {
    registry().live.clone()
}

/// A new file beside its target, removed on drop unless [`TemporaryFile::persist`] renamed it.
pub(crate) struct TemporaryFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TemporaryFile {
    /// `.<name>.<pid>.<n>.tmp` in `target`'s directory, so that the rename stays on one file system
    /// and a directory listing shows what it belongs to.
    pub(crate) fn beside(target: &Path) -> io::Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut registry = registry();
        registry.refuse_if_closed()?;
        for attempt in 0..1000u32 {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".{}.{attempt}.tmp", std::process::id()));
            let path = dir.join(temp_name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    registry.live.push(path.clone());
                    return Ok(TemporaryFile {
                        path,
                        file,
                        persisted: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "1000 temporary names beside it are taken",
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Syncs the data and renames the file onto `target` (a regular file or none).
    pub(crate) fn persist(mut self, target: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        let mut registry = registry();
        registry.refuse_if_closed()?;
        fs::rename(&self.path, target)?;
        registry.forget(&self.path);
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let mut registry = registry();
        // Best effort: the error that got us here is already being reported.
        let _ = fs::remove_file(&self.path);
        registry.forget(&self.path);
    }
}

/// A path reserved for a scratch file another writer creates (a benchmark's extracted text
/// model): removed on drop and by [`remove_temporary_files`].
pub struct TemporaryPath {
    path: PathBuf,
}

impl TemporaryPath {
    /// `<dir>/<stem>-<pid>-<n><suffix>`, registered before anything is written there.
    pub fn new_in(dir: &Path, stem: &str, suffix: &str) -> io::Result<Self> {
        let mut registry = registry();
        registry.refuse_if_closed()?;
        for attempt in 0..1000u32 {
            let path = dir.join(format!("{stem}-{}-{attempt}{suffix}", std::process::id()));
            if fs::symlink_metadata(&path).is_err() && !registry.live.contains(&path) {
                registry.live.push(path.clone());
                return Ok(TemporaryPath { path });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("1000 scratch names in {} are taken", dir.display()),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TemporaryPath {
    fn drop(&mut self) {
        let mut registry = registry();
        let _ = fs::remove_file(&self.path);
        registry.forget(&self.path);
    }
}
