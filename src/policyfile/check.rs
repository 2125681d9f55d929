//! `webrep policy check FILE...`: validate policy files and print a summary or the errors.

use std::io::Write;
use std::path::PathBuf;

use super::{LoadError, load_file};
use crate::exit::Exit;

/// Checks every file. Valid ones get `FILE: ok: SUMMARY` on `out`; problems go to `err` as
/// `file:line:column: message` lines, every one the parser and the compiler find, in line
/// order. Returns the exit status: [`Exit::Ok`] when every file is valid, [`Exit::Config`]
/// when one is not, else [`Exit::NoInput`] when one cannot be read.
pub fn check_command(files: &[PathBuf], out: &mut impl Write, err: &mut impl Write) -> Exit {
    let mut status = Exit::Ok;
    for file in files {
        // Write errors on stdout/stderr are not worth failing the check over.
        match load_file(file) {
            Ok(p) => {
                let _ = writeln!(out, "{}: ok: {}", file.display(), p.summary());
            }
            Err(LoadError::Invalid(errors)) => {
                status = Exit::Config;
                for e in &errors.errors {
                    let _ = writeln!(err, "{e}");
                }
            }
            Err(e @ LoadError::Read(_)) => {
                if status == Exit::Ok {
                    status = Exit::NoInput;
                }
                let _ = writeln!(err, "{e}");
            }
        }
    }
    status
}
