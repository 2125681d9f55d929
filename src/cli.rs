//! Command-line interface (clap derive). No logic here: `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// webrep: a forward web proxy that filters traffic by URL reputation.
#[derive(Debug, Parser)]
#[command(name = "webrep", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the forward proxy (built-in defaults without --config: 127.0.0.1:3128, loopback
    /// clients only).
    Proxy {
        /// YAML configuration file; see config/webrep.example.yaml.
        #[arg(long, short, env = "WEBREP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the canonical form of a URL and its lookup expressions (what list entries and
    /// reputation lookups are matched against).
    Url {
        /// The URL, as a browser would send it.
        url: String,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a users-file line (`NAME:argon2-hash`) for proxy authentication; the password
    /// is read from the first line of standard input.
    Passwd {
        /// The user name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the built-in defaults as YAML.
    PrintDefault,
    /// Validate a configuration file (exit 64 with the reason if it is invalid).
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: a summary per valid file (exit 0), or `file:line:column:
    /// message` lines (exit 1).
    Check {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}
