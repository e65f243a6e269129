//! Opening the files that are memory-mapped (GGUF models, safetensors checkpoints): only
//! regular files can be mapped, and anything else is named for what it is rather than left to
//! the kernel's `mmap` error ("No such device"). This module owns that check and nothing else.

use std::fs::File;
use std::io::{Error, ErrorKind};
use std::path::Path;

/// Opens `path` for mapping; a directory, FIFO, socket or device is an error that says which.
pub fn open_mappable(path: &Path) -> std::io::Result<File> {
    let file = File::open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "is a directory"
    } else {
        "is not a regular file (a pipe, socket or device)"
    };
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!("{what}; a model file is memory-mapped and must be a regular file"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open() {
        let dir = std::env::temp_dir();
        let err = open_mappable(&dir).unwrap_err();
        assert!(err.to_string().starts_with("is a directory"), "{err}");
        #[cfg(unix)]
        {
            let err = open_mappable(Path::new("/dev/null")).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let file = dir.join(format!("latte-input-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        assert!(open_mappable(&file).is_ok());
        std::fs::remove_file(&file).unwrap();
    }
}
