//! `webrep passwd NAME`: reads a password and prints the users-file line `NAME:$argon2id$...`
//! that `auth.users_file` takes.
//!
//! From a terminal it prompts on standard error with echo turned off (termios on standard
//! input), asks twice and refuses a mismatch. Otherwise (a pipe, a file: scripts) it reads the
//! first line of standard input, without its line ending. Either way a password shorter than
//! [`MIN_PASSWORD_CHARS`] is refused. Cost: one argon2id hash (19 MiB, about 0.1 s).
//! Failures are [`CommandError`]s: 64 a bad name, 65 a short or mismatched password, 66
//! standard input unreadable (or closed before a line), 1 hashing failed. Echo is restored
//! when the prompt ends, also on a read error (not when the process is killed by a signal
//! while it waits, as with other prompts: `stty sane` restores it).

use std::io::{BufRead, IsTerminal as _, Write as _};

use crate::app::commands::CommandError;
use crate::exit::Exit;

/// The fewest characters (Unicode scalar values) a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Runs `webrep passwd NAME`: the users-file line for `name`, or why not.
///
/// # Errors
/// [`CommandError`] with its exit status (see the module docs).
pub fn passwd(name: &str) -> Result<String, CommandError> {
    if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
        return Err(CommandError::new(
            Exit::Usage,
            "a user name must be non-empty, without ':' or spaces",
        ));
    }
    let password = if std::io::stdin().is_terminal() {
        prompt_twice(name)?
    } else {
        read_line(&mut std::io::stdin().lock())?
    };
    check_length(&password)?;
    crate::proxy::auth::hash_password(&password)
        .map(|hash| format!("{name}:{hash}"))
        .map_err(|e| CommandError::new(Exit::Failure, e.to_string()))
}

/// Refuses a password under [`MIN_PASSWORD_CHARS`].
fn check_length(password: &str) -> Result<(), CommandError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(CommandError::new(
            Exit::DataErr,
            format!(
                "the password is too short ({}); at least {MIN_PASSWORD_CHARS} characters",
                crate::output::counted(chars as u64, "character", "characters")
            ),
        ));
    }
    Ok(())
}

/// One line of `input` without its line ending.
fn read_line(input: &mut impl BufRead) -> Result<String, CommandError> {
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) => Err(CommandError::new(
            Exit::NoInput,
            "no password: standard input ended before a line",
        )),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
        Err(e) => Err(CommandError::new(
            Exit::NoInput,
            format!("cannot read the password from standard input: {e}"),
        )),
    }
}

/// Asks for the password twice on the terminal, without echo; the two must match.
fn prompt_twice(name: &str) -> Result<String, CommandError> {
    let first = prompt(&format!("Password for {name}: "))?;
    check_length(&first)?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err(CommandError::new(
            Exit::DataErr,
            "the two passwords differ; nothing was written",
        ));
    }
    Ok(first)
}

/// Turns echo off (discarding what was typed ahead), writes `text` to standard error and
/// reads one line from the terminal. Echo goes off before the prompt shows, so that nothing
/// typed after it is echoed.
fn prompt(text: &str) -> Result<String, CommandError> {
    let stdin = std::io::stdin();
    let _echo = EchoOff::new(&stdin)?;
    crate::err!("{text}");
    let _ = std::io::stderr().flush();
    read_line(&mut stdin.lock())
}

/// Echo turned off on a terminal until dropped; the newline the user types is still echoed
/// (`ECHONL`), so that what follows starts on a new line.
#[cfg(target_os = "linux")]
struct EchoOff<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: nix::sys::termios::Termios,
}

#[cfg(target_os = "linux")]
impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> Result<EchoOff<'a>, CommandError> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        use std::os::fd::AsFd as _;
        let fd = stdin.as_fd();
        let failed = |e: nix::Error| {
            CommandError::new(
                Exit::NoInput,
                format!("cannot turn the terminal's echo off: {e}"),
            )
        };
        let saved = tcgetattr(fd).map_err(failed)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(fd, SetArg::TCSAFLUSH, &quiet).map_err(failed)?;
        Ok(EchoOff { fd, saved })
    }
}

#[cfg(target_os = "linux")]
impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Without termios support here, a terminal prompt would echo: refused.
#[cfg(not(target_os = "linux"))]
struct EchoOff;

#[cfg(not(target_os = "linux"))]
impl EchoOff {
    fn new(_stdin: &std::io::Stdin) -> Result<EchoOff, CommandError> {
        Err(CommandError::new(
            Exit::Usage,
            "cannot turn the terminal's echo off here: give the password on standard input \
             (`webrep passwd NAME < file`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_loses_its_ending_and_an_empty_input_is_no_password() {
        assert_eq!(
            read_line(&mut &b"pass word\r\nrest"[..]).unwrap(),
            "pass word"
        );
        assert_eq!(read_line(&mut &b"last"[..]).unwrap(), "last");
        assert_eq!(read_line(&mut &b""[..]).unwrap_err().code, Exit::NoInput);
    }

    #[test]
    fn passwords_under_the_minimum_are_refused() {
        assert!(check_length("12345678").is_ok());
        assert!(check_length("ééééééé\u{1F600}").is_ok());
        let e = check_length("1234567").unwrap_err();
        assert_eq!(e.code, Exit::DataErr);
        assert!(e.message.contains("(7 characters)"), "{}", e.message);
        let e = check_length("a").unwrap_err();
        assert!(e.message.contains("(1 character)"), "{}", e.message);
    }
}
