//! Where a command's output goes: the one way every file this crate writes (GGUF, PNG, JSON
//! traces) reaches the disk.
//!
//! - A regular file, or a name that does not exist yet, is written to a temporary file beside it
//!   and renamed into place when complete: a reader never sees half a file, and on any error or
//!   interrupt nothing is left behind and the old file is intact. A symbolic link is followed
//!   (the file it names is replaced, the link stays); the replaced file's permissions are kept.
//! - A character device (`/dev/null`, a terminal) or a FIFO is written directly: renaming over it
//!   would destroy it.
//! - `-` is standard output.
//! - Anything else (a directory, a block device, a socket, a dangling link) is refused with the
//!   reason.
//!
//! Temporary files are listed in [`temporary`] so that an interrupt handler can remove them.
//! This module knows no file format.

pub mod temporary;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use temporary::TemporaryFile;
pub use temporary::{remove_temporary_files, TemporaryPath};

/// The name that means standard output.
pub const STDOUT: &str = "-";

#[derive(Debug, Error)]
pub enum OutputError {
    #[error("{}: is a directory, not an output file", path.display())]
    Directory { path: PathBuf },
    #[error("{}: is a {kind}; outputs go to regular files, character devices, FIFOs or - (stdout)", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{}: is a symbolic link to {} which does not exist", path.display(), target.display())]
    DanglingLink { path: PathBuf, target: PathBuf },
    #[error("{}: cannot write here: directory {} does not exist", path.display(), dir.display())]
    MissingDirectory { path: PathBuf, dir: PathBuf },
    #[error("standard output is a terminal: not writing {what} there (redirect it, or give a file name)")]
    Terminal { what: &'static str },
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
}

impl OutputError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
        move |cause| OutputError::Io {
            path: path.to_path_buf(),
            cause,
        }
    }
}

/// What is written, for the one check that depends on it: binary data never goes to a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// PNG, GGUF: named in the refusal.
    Binary(&'static str),
    Text,
}

/// How an output path will be written, decided from what is there now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Temporary file beside `target`, then renamed onto it (`target` is the path with
    /// symbolic links resolved).
    Replace {
        target: PathBuf,
    },
    /// Opened and written in place: a character device or a FIFO.
    Direct,
    Stdout,
}

impl Destination {
    /// Decides how `path` is written, refusing what cannot be; creates nothing.
    pub fn of(path: &Path, content: Content) -> Result<Destination, OutputError> {
        if path.as_os_str() == STDOUT {
            if let Content::Binary(what) = content {
                if io::stdout().is_terminal() {
                    return Err(OutputError::Terminal { what });
                }
            }
            return Ok(Destination::Stdout);
        }
        let link = fs::symlink_metadata(path);
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if link.is_ok_and(|m| m.file_type().is_symlink()) {
                    let target = fs::read_link(path).unwrap_or_default();
                    return Err(OutputError::DanglingLink {
                        path: path.into(),
                        target,
                    });
                }
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(OutputError::MissingDirectory {
                        path: path.into(),
                        dir: dir.into(),
                    });
                }
                return Ok(Destination::Replace {
                    target: path.into(),
                });
            }
            Err(e) => return Err(OutputError::io(path)(e)),
        };
        let kind = meta.file_type();
        if kind.is_file() {
            let target = if link.is_ok_and(|m| m.file_type().is_symlink()) {
                fs::canonicalize(path).map_err(OutputError::io(path))?
            } else {
                path.into()
            };
            return Ok(Destination::Replace { target });
        }
        if kind.is_dir() {
            return Err(OutputError::Directory { path: path.into() });
        }
        match special_kind(&kind) {
            Special::Streams => Ok(Destination::Direct),
            Special::Refused(kind) => Err(OutputError::Unsupported {
                path: path.into(),
                kind,
            }),
        }
    }
}

enum Special {
    Streams,
    Refused(&'static str),
}

#[cfg(unix)]
fn special_kind(kind: &fs::FileType) -> Special {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_char_device() || kind.is_fifo() {
        Special::Streams
    } else if kind.is_block_device() {
        Special::Refused("block device")
    } else if kind.is_socket() {
        Special::Refused("socket")
    } else {
        Special::Refused("special file")
    }
}

#[cfg(not(unix))]
fn special_kind(_kind: &fs::FileType) -> Special {
    // Windows devices (NUL, CON) are not reported as files or directories.
    Special::Streams
}

/// Fails now, before any compute, if `path` cannot be written: what [`OutputFile::create`] would
/// refuse, and (for a file to be replaced) a directory where no file can be created. Creates
/// nothing that outlives the call and does not open devices or FIFOs (that could block).
pub fn check_writable(path: &Path, content: Content) -> Result<(), OutputError> {
    if let Destination::Replace { target } = Destination::of(path, content)? {
        TemporaryFile::beside(&target).map_err(OutputError::io(path))?;
    }
    Ok(())
}

enum Sink {
    Replace {
        temp: BufWriter<TemporaryFile>,
        target: PathBuf,
    },
    Direct(BufWriter<File>),
    Stdout(BufWriter<io::Stdout>),
}

/// An output being written; see the module documentation. Dropped without
/// [`OutputFile::finish`], a replacing output leaves nothing behind.
pub struct OutputFile {
    path: PathBuf,
    sink: Sink,
}

impl std::fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFile")
            .field("path", &self.path)
            .finish()
    }
}

impl OutputFile {
    pub fn create(path: &Path, content: Content) -> Result<OutputFile, OutputError> {
        let io = OutputError::io(path);
        let sink = match Destination::of(path, content)? {
            Destination::Replace { target } => {
                let temp = TemporaryFile::beside(&target).map_err(io)?;
                Sink::Replace {
                    temp: BufWriter::with_capacity(1 << 20, temp),
                    target,
                }
            }
            Destination::Direct => Sink::Direct(BufWriter::new(
                OpenOptions::new().write(true).open(path).map_err(io)?,
            )),
            Destination::Stdout => Sink::Stdout(BufWriter::new(io::stdout())),
        };
        Ok(OutputFile {
            path: path.into(),
            sink,
        })
    }

    /// The path as the caller gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` with the path in the error.
    pub fn write_all_bytes(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.write_all(bytes).map_err(OutputError::io(&self.path))
    }

    /// Flushes everything; a replacing output is synced and renamed into place (keeping the
    /// permissions of the file it replaces), then the rename itself is made durable.
    pub fn finish(self) -> Result<(), OutputError> {
        let io = OutputError::io(&self.path);
        match self.sink {
            Sink::Replace { temp, target } => {
                let temp = temp.into_inner().map_err(|e| io(e.into_error()))?;
                if let Ok(meta) = fs::metadata(&target) {
                    let _ = fs::set_permissions(temp.path(), meta.permissions());
                }
                temp.persist(&target).map_err(OutputError::io(&self.path))?;
                sync_parent_dir(&target);
                Ok(())
            }
            Sink::Direct(mut file) => file.flush().map_err(io),
            Sink::Stdout(mut out) => match out.flush() {
                // `latte ... -o - | head -c 10`: the reader left, which is its choice.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                result => result.map_err(io),
            },
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Replace { temp, .. } => temp.write(buf),
            Sink::Direct(file) => file.write(buf),
            Sink::Stdout(out) => out.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Replace { temp, .. } => temp.write_all(buf),
            Sink::Direct(file) => file.write_all(buf),
            Sink::Stdout(out) => out.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Replace { temp, .. } => temp.flush(),
            Sink::Direct(file) => file.flush(),
            Sink::Stdout(out) => out.flush(),
        }
    }
}

impl Write for TemporaryFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

/// Writes `bytes` to `path` as an output (see the module documentation).
pub fn write_output(path: &Path, bytes: &[u8], content: Content) -> Result<(), OutputError> {
    let mut out = OutputFile::create(path, content)?;
    out.write_all_bytes(bytes)?;
    out.finish()
}

/// Makes the rename durable. Best effort: the data itself is already synced, and some file
/// systems refuse to sync directories.
fn sync_parent_dir(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_new_file_appears_only_when_finished() {
        let dir = dir();
        let path = dir.path().join("out.bin");
        let mut out = OutputFile::create(&path, Content::Text).unwrap();
        out.write_all_bytes(b"hello").unwrap();
        assert!(!path.exists(), "nothing at the target before finish");
        assert_eq!(leftovers(dir.path()).len(), 1);
        out.finish().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn an_unfinished_output_leaves_the_old_file_and_no_temporary() {
        let dir = dir();
        let path = dir.path().join("out.bin");
        fs::write(&path, b"old").unwrap();
        let mut out = OutputFile::create(&path, Content::Text).unwrap();
        out.write_all_bytes(b"new").unwrap();
        let temp = temporary::live_temporary_files();
        assert!(temp.iter().any(|p| p.starts_with(dir.path())));
        drop(out);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
        assert!(!temporary::live_temporary_files()
            .iter()
            .any(|p| p.starts_with(dir.path())));
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions_and_links_stay_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir();
        let real = dir.path().join("real.bin");
        fs::write(&real, b"old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_output(&link, b"new", Content::Text).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        let mode = fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_in_place_and_never_replaced() {
        let before = fs::metadata("/dev/null").unwrap();
        assert_eq!(
            Destination::of(Path::new("/dev/null"), Content::Binary("PNG")).unwrap(),
            Destination::Direct
        );
        write_output(Path::new("/dev/null"), b"discarded", Content::Text).unwrap();
        let after = fs::metadata("/dev/null").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino(), "/dev/null is the same node");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &after.file_type()
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_written_in_place() {
        let dir = dir();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(&fifo).unwrap())
        };
        write_output(&fifo, b"through the pipe", Content::Binary("PNG")).unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let kind = fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind));
    }

    #[test]
    fn directories_missing_parents_and_dangling_links_are_refused() {
        let dir = dir();
        let error = OutputFile::create(dir.path(), Content::Text).unwrap_err();
        assert!(matches!(error, OutputError::Directory { .. }), "{error}");
        assert!(error.to_string().contains("is a directory"));
        let error =
            OutputFile::create(&dir.path().join("no/such/dir/out.png"), Content::Text).unwrap_err();
        assert!(
            matches!(error, OutputError::MissingDirectory { .. }),
            "{error}"
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
            let error = OutputFile::create(&link, Content::Text).unwrap_err();
            assert!(matches!(error, OutputError::DanglingLink { .. }), "{error}");
        }
        assert!(leftovers(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn sockets_are_refused_by_name() {
        let dir = dir();
        let path = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let error = OutputFile::create(&path, Content::Text).unwrap_err();
        assert!(error.to_string().contains("is a socket"), "{error}");
    }

    #[test]
    fn check_writable_creates_nothing() {
        let dir = dir();
        let path = dir.path().join("later.png");
        check_writable(&path, Content::Binary("PNG")).unwrap();
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_temporary_path_is_removed_on_drop() {
        let dir = dir();
        let scratch = TemporaryPath::new_in(dir.path(), "scratch", ".gguf").unwrap();
        fs::write(scratch.path(), b"x").unwrap();
        let path = scratch.path().to_path_buf();
        assert!(temporary::live_temporary_files().contains(&path));
        drop(scratch);
        assert!(!path.exists());
        assert!(!temporary::live_temporary_files().contains(&path));
    }
}
