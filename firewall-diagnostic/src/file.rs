//! Reading an operator's file without waiting on one that is not a file: it is opened with
//! O_NONBLOCK (opening a FIFO that no one writes to does not wait) and checked with fstat
//! before a byte is read.

use std::{
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Why `read_regular` read nothing.
#[derive(Debug)]
pub enum FileError {
    Io(io::Error),
    /// What it is instead of a regular file ("a FIFO", "a directory", ...).
    NotAFile(&'static str),
    /// Longer than the limit the caller gave.
    TooLarge,
}

/// The bytes of the regular file at `path`, at most `max_bytes` of them (reading one more, in
/// case it grows meanwhile).
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(FileError::Io)?;
    let kind = file.metadata().map_err(FileError::Io)?.file_type();
    if !kind.is_file() {
        return Err(FileError::NotAFile(match () {
            () if kind.is_fifo() => "a FIFO",
            () if kind.is_char_device() => "a character device",
            () if kind.is_block_device() => "a block device",
            () if kind.is_socket() => "a socket",
            () if kind.is_dir() => "a directory",
            () => "not a file",
        }));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(FileError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = std::env::temp_dir().join(format!("smf-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        assert!(matches!(read_regular(&file, 4), Err(FileError::TooLarge)));
        assert!(matches!(
            read_regular(&dir, 5),
            Err(FileError::NotAFile("a directory"))
        ));
        let fifo = dir.join("p");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_regular(&fifo, 5),
            Err(FileError::NotAFile("a FIFO"))
        ));
        assert!(matches!(
            read_regular(&dir.join("absent"), 5),
            Err(FileError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
