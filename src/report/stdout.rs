//! stdout: results only (tables, JSON documents, plans); logs go to stderr.

use std::io::Write;

use crate::error::Error;

/// Writes results to stdout; a closed pipe (`| head`) is not an error.
pub fn print_stdout(s: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
