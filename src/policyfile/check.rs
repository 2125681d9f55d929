//! `webrep policy check FILE...`: validate policy files and print a summary or the errors.

use std::io::Write;
use std::path::PathBuf;

use super::{LoadError, load_file};

/// Checks every file. Valid ones get `FILE: ok: SUMMARY` on `out`; problems go to `err` as
/// `file:line:column: message` lines. Returns the exit status: 0 when every file is valid,
/// 1 otherwise.
pub fn check_command(files: &[PathBuf], out: &mut impl Write, err: &mut impl Write) -> i32 {
    let mut status = 0;
    for file in files {
        // Write errors on stdout/stderr are not worth failing the check over.
        match load_file(file) {
            Ok(p) => {
                let _ = writeln!(out, "{}: ok: {}", file.display(), p.summary());
            }
            Err(LoadError::Invalid(errors)) => {
                status = 1;
                for e in &errors.errors {
                    let _ = writeln!(err, "{e}");
                }
            }
            Err(e @ LoadError::Read(_)) => {
                status = 1;
                let _ = writeln!(err, "{e}");
            }
        }
    }
    status
}
