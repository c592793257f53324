//! Where the log goes: stderr, through a writer that never fails. A log line that cannot be
//! written (the pipe's reader is gone: journald restarted, a `tee` killed; a full disk) is
//! lost, and the daemon goes on: tracing-subscriber would otherwise report the error on
//! stderr itself, and `eprintln!` panics when that fails too.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes [`Swallowing`] stderr writers, for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Swallowing<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Swallowing(io::stderr())
    }
}

/// A writer that reports every write as done, whether or not `W` took it.
#[derive(Debug)]
pub struct Swallowing<W>(pub W);

impl<W: Write> Write for Swallowing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    #[test]
    fn write_errors_are_swallowed() {
        let mut writer = Swallowing(Broken);
        assert_eq!(writer.write(b"a log line\n").unwrap(), 11);
        writer.write_all(b"another\n").unwrap();
        writer.flush().unwrap();
    }
}
