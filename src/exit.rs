//! The process exit statuses of every `webrep` command, in one place: the BSD `sysexits.h`
//! values, so that scripts and systemd can tell a bad command line from bad input, an
//! unreachable server, a refused token and a bad configuration.
//!
//! A helper with no domain, below everything: commands return an [`Exit`], `main` turns it
//! into the process status, `webrep --help` and the man page print [`help_table`], and the
//! systemd units name [`Exit::Config`] (and [`Exit::Usage`], [`Exit::NoPerm`]) in
//! `RestartPreventExitStatus=` so that a bad configuration is not restarted in a loop. Errors
//! that reach `main` as `anyhow::Error` are sorted by [`classify`]: whatever was wrapped in
//! [`Misconfigured`] on its way up is a configuration problem. No I/O, no cost.

use std::fmt;

/// Why a command ended: each variant is one exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: a failure that fits no class below (a store that failed while running, say).
    Failure = 1,
    /// 64 (`EX_USAGE`): the command line is wrong: an unknown option, a missing or bad
    /// argument, no token given.
    Usage = 64,
    /// 65 (`EX_DATAERR`): the input is wrong: a feed, a URL, items the server refused.
    DataErr = 65,
    /// 66 (`EX_NOINPUT`): a file named on the command line cannot be read.
    NoInput = 66,
    /// 69 (`EX_UNAVAILABLE`): a server cannot be reached, does not answer in time, or fails
    /// (5xx); a listening address is taken.
    Unavailable = 69,
    /// 73 (`EX_CANTCREAT`): an output file cannot be created (`webrep ca init`).
    CantCreate = 73,
    /// 76 (`EX_PROTOCOL`): a server answered something that is not its protocol.
    Protocol = 76,
    /// 77 (`EX_NOPERM`): not allowed: the server refused the token, or the system refused
    /// an operation (a port below 1024 without the capability).
    NoPerm = 77,
    /// 78 (`EX_CONFIG`): the configuration is wrong: `webrep.yaml`, the policy, or a file
    /// either names (CA, users, groups, tokens) is missing or invalid. What `config check`
    /// and `policy check` report, and what `webrep proxy` and `webrep server` exit with when
    /// they find it at start.
    Config = 78,
}

impl Exit {
    /// Every status, in numeric order.
    pub const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::DataErr,
        Exit::NoInput,
        Exit::Unavailable,
        Exit::CantCreate,
        Exit::Protocol,
        Exit::NoPerm,
        Exit::Config,
    ];

    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The short meaning, as the help and the docs print it.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success",
            Exit::Failure => "a failure that fits no class below",
            Exit::Usage => "bad command line (unknown option, missing or bad argument, no token)",
            Exit::DataErr => "bad input data (a feed, a URL, items the server refused)",
            Exit::NoInput => "a file named on the command line cannot be read",
            Exit::Unavailable => {
                "a server is unreachable, too slow or failing; a listen address is taken"
            }
            Exit::CantCreate => "an output file cannot be created",
            Exit::Protocol => "a server's answer is not the reputation API",
            Exit::NoPerm => "not permitted (token refused; a port below 1024)",
            Exit::Config => {
                "bad configuration: webrep.yaml, the policy or a file they name (at start too)"
            }
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// The exit statuses as a text table, for `--help` and the man page.
pub fn help_table() -> String {
    let mut s = String::from("Exit status (sysexits.h):\n");
    for e in Exit::ALL {
        s.push_str(&format!("  {:>2}  {}\n", e.code(), e.meaning()));
    }
    s
}

/// Context for an error caused by the configuration (a file it names that is missing or
/// invalid, a contradiction between settings): [`classify`] maps any error that carries it
/// to [`Exit::Config`]. Its text is the context message.
#[derive(Debug)]
pub struct Misconfigured(pub String);

impl fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// The status for an error that ended `webrep proxy` or `webrep server`: [`Exit::Config`]
/// when it was caused by the configuration ([`Misconfigured`] anywhere in it); for an I/O
/// error at its root, [`Exit::NoPerm`] (permission denied: binding a port below 1024),
/// [`Exit::Unavailable`] (the address is taken or not on this host); else
/// [`Exit::Failure`].
pub fn classify(e: &anyhow::Error) -> Exit {
    if e.downcast_ref::<Misconfigured>().is_some()
        || e.chain()
            .any(|c| c.downcast_ref::<Misconfigured>().is_some())
    {
        return Exit::Config;
    }
    let io = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    match io {
        Some(std::io::ErrorKind::PermissionDenied) => Exit::NoPerm,
        Some(std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable) => {
            Exit::Unavailable
        }
        _ => Exit::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes_are_the_sysexits_values() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 64, 65, 66, 69, 73, 76, 77, 78]);
        assert!(help_table().contains("78  bad configuration"));
    }

    #[test]
    fn misconfigured_anywhere_in_the_chain_is_a_config_error() {
        let root = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = anyhow::Error::new(root)
            .context(Misconfigured("policy.file /x cannot be used".into()))
            .context("starting the proxy");
        assert_eq!(classify(&e), Exit::Config);
        assert!(format!("{e:#}").contains("policy.file /x cannot be used: denied"));
        let e = anyhow::Error::new(Misconfigured("x".into())).context("outer");
        assert_eq!(classify(&e), Exit::Config);
        let busy: anyhow::Result<()> =
            Err(std::io::Error::from(std::io::ErrorKind::AddrInUse)).context("proxy.listen");
        assert_eq!(classify(&busy.unwrap_err()), Exit::Unavailable);
        let denied = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(classify(&denied), Exit::NoPerm);
        assert_eq!(classify(&anyhow::anyhow!("store failed")), Exit::Failure);
    }
}
