//! Command-line interface (clap derive) and the macros commands print with. No logic here:
//! `main.rs` dispatches.
//!
//! Commands print through [`out!`](crate::out), [`outln!`](crate::outln), [`err!`](crate::err)
//! and [`errln!`](crate::errln) rather than `print!`/`eprintln!`, which panic when the stream is
//! closed (`webrep lookup ... | head -1`, a service whose journal went away): a write that
//! fails is dropped, and the command goes on to its normal exit status.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// webrep: a forward web proxy that filters traffic by URL reputation.
#[derive(Debug, Parser)]
#[command(
    name = "webrep",
    version,
    about,
    after_help = crate::exit::help_table(),
    after_long_help = long_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The end of `webrep --help` and of the webrep(1) manual page: the exit statuses, then
/// where the configuration comes from.
fn long_help() -> String {
    format!("{}\n\n{FILES_HELP}", crate::exit::help_table())
}

/// Where the configuration comes from.
const FILES_HELP: &str = "\
Configuration: `webrep proxy` and `webrep server` read --config FILE, else the file that \
WEBREP_CONFIG names, else /etc/webrep/webrep.yaml when it exists (WEBREP_DEFAULT_CONFIG_DIR \
replaces /etc/webrep), else their built-in defaults. They log which one they read. Every key \
with its default: /usr/share/doc/webrep/webrep.example.yaml (config/ in the source).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the forward proxy (without --config: /etc/webrep/webrep.yaml when it exists, else
    /// the built-in defaults: 127.0.0.1:3128, loopback clients only).
    Proxy {
        /// YAML configuration file; see config/webrep.example.yaml.
        #[arg(long, short, env = "WEBREP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the reputation server (the `server:` section of the config; without --config:
    /// /etc/webrep/webrep.yaml when it exists, else the built-in defaults: 127.0.0.1:8480,
    /// store `reputation.db`).
    Server {
        /// YAML configuration file; see config/webrep.example.yaml.
        #[arg(long, short, env = "WEBREP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Import a feed file into a running reputation server (needs an admin token), or
    /// straight into a store file with --store while no server writes to it.
    Import {
        #[command(flatten)]
        server: ServerArgs,
        /// Write into this store file directly instead of a running server.
        #[arg(long, conflicts_with = "server_url")]
        store: Option<PathBuf>,
        /// urlhaus (abuse.ch CSV dump), domains (UT1/Shallalist list), hosts, jsonl, or the
        /// file-hash lists sha256 (one hash per line) and malwarebazaar (abuse.ch CSV).
        #[arg(long, short)]
        format: String,
        /// Feed name recorded as each entry's source. Default: the format name.
        #[arg(long)]
        feed: Option<String>,
        /// Category of every entry (required for domains, optional for hosts).
        #[arg(long)]
        category: Option<String>,
        /// Score of every entry of a domains or hosts file, 0..=100. Default 0.
        #[arg(long)]
        score: Option<u8>,
        /// The feed file; `-` reads standard input.
        file: PathBuf,
    },
    /// Ask a running reputation server about URLs or hosts (one URL: the explain form).
    Lookup {
        #[command(flatten)]
        server: ServerArgs,
        /// The items are host names, answered per host with their path entries.
        #[arg(long)]
        host: bool,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
        /// URLs (or host names with --host).
        #[arg(required = true)]
        items: Vec<String>,
    },
    /// Read what proxies report to a running reputation server (feedback events; needs an
    /// admin token): aggregates, escalations, and reverting an escalation.
    Feedback {
        #[command(subcommand)]
        command: FeedbackCommand,
    },
    /// Manage the local CA used for HTTPS interception.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the canonical form of a URL and its lookup expressions (what list entries and
    /// reputation lookups are matched against); of each line of standard input with `-` or no
    /// URL. Exit 65 when an input is not a URL.
    Url {
        /// The URL, as a browser would send it: any bytes, UTF-8 or not. `-` or none: read
        /// standard input, one URL per line (blank lines skipped).
        url: Option<std::ffi::OsString>,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a users-file line (`NAME:argon2-hash`) for proxy authentication. From a
    /// terminal it asks for the password twice without echo; otherwise it reads the first line
    /// of standard input (`echo "$PW" | webrep passwd NAME`). At least 8 characters.
    Passwd {
        /// The user name.
        name: String,
    },
    /// Write the manual pages or print shell completions (used when building the package).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write webrep.1 and one page per subcommand (webrep-proxy.1, ...) into DIR.
    Man {
        /// The directory to write into (created when missing).
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on standard output.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedbackCommand {
    /// Event counts per kind, top untested hosts by distinct clients and proxies, blocks by
    /// rule and by category, and user reports with their tickets.
    Summary {
        #[command(flatten)]
        server: ServerArgs,
        /// Only events of the last this many seconds.
        #[arg(long, default_value_t = 86_400)]
        since_secs: u64,
        /// Most rows per list.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// The escalations fired (and reverted) by the server's escalation rules.
    Escalations {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Revert an escalation: deletes the entry it wrote (if still the escalation's) so that
    /// every proxy forgets it; only newer events can fire it again.
    Revert {
        #[command(flatten)]
        server: ServerArgs,
        /// The escalated key, e.g. `bad.example/`.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA (ca.pem, and ca-key.pem with mode 0600). An existing CA is never
    /// replaced without --force.
    Init {
        /// Where to put it (the proxy's `intercept.ca_dir`).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace an existing CA (every client that trusts it must trust the new one).
        #[arg(long)]
        force: bool,
        /// Restrict the CA to this DNS subtree (a name constraint); repeatable. Without it
        /// the CA can intercept any site.
        #[arg(long = "permit", value_name = "DOMAIN")]
        permit: Vec<String>,
    },
    /// Print the CA's fingerprint, validity and how to trust it in browsers and systems.
    Show {
        /// The CA directory.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the built-in defaults as YAML.
    PrintDefault,
    /// Validate a configuration file and the files it names (policy, CA, users, groups,
    /// tokens) as the proxy and the server would load them: every problem as
    /// `file:line:column: message` (exit 78), or `FILE: ok` (exit 0).
    Check {
        /// Check for this service only. Default: what the file configures (a `server:`
        /// section: the server; any other section: the proxy).
        #[arg(long = "for", value_enum, value_name = "SERVICE")]
        service: Option<Service>,
        /// The file to check.
        file: PathBuf,
    },
}

/// How to reach a running reputation server.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long = "server",
        id = "server_url",
        env = "WEBREP_SERVER",
        default_value = "http://127.0.0.1:8480"
    )]
    pub url: String,
    /// A file whose first line is the bearer token (else the WEBREP_TOKEN environment
    /// variable; a token is never taken on the command line, where `ps` would show it).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Extra PEM CA certificates for an https:// server.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for the answer. Default 30 for lookups, 3600 for imports.
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// The services `webrep config check --for` checks a config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// `webrep proxy`.
    Proxy,
    /// `webrep server`.
    Server,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: a summary per valid file (exit 0), or every problem as
    /// `file:line:column: message` lines (exit 78; 66 for a file that cannot be read).
    Check {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}
