//! Output to standard output and standard error that never takes the process down: the
//! [`out!`](crate::out), [`outln!`](crate::outln), [`err!`](crate::err) and
//! [`errln!`](crate::errln) macros drop their text when the stream is closed or failing
//! (a reader that went away, `| head -1`), where `print!` would panic. Used by the commands
//! and by anything that prints outside the log. No cost beyond the write itself; a failed
//! write is lost, never retried.

/// Writes `args` to `to`, dropping them if the write fails: what the output macros expand to.
#[doc(hidden)]
pub fn write_lossy(mut to: impl std::io::Write, args: std::fmt::Arguments<'_>) {
    let _ = to.write_fmt(args);
}

/// `n` and the noun for it: `counted(1, "entry", "entries")` is `1 entry`, `counted(2, ...)`
/// `2 entries`.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `print!` that drops the text when standard output is closed or failing.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_lossy(::std::io::stdout().lock(), ::std::format_args!($($arg)*))
    };
}

/// `println!` that drops the line when standard output is closed or failing.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out!("{}\n", ::std::format_args!($($arg)*))
    };
}

/// `eprint!` that drops the text when standard error is closed or failing.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::output::write_lossy(::std::io::stderr().lock(), ::std::format_args!($($arg)*))
    };
}

/// `eprintln!` that drops the line when standard error is closed or failing.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::err!("{}\n", ::std::format_args!($($arg)*))
    };
}
