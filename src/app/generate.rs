//! `webrep generate man DIR` and `webrep generate completions SHELL`: the manual pages and
//! the shell completion scripts, rendered from the command line's own clap definition
//! ([`crate::cli::Cli`]), so they cannot drift from it. The Debian package build runs them
//! (`packaging/build-deb.sh`); the command is hidden from `--help`.
//!
//! Cost: a few milliseconds. Fails only on writing: a directory that cannot be created or a
//! page that cannot be written is an error naming the path.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::Cli;

/// Writes `webrep.1` and a page per visible subcommand (`webrep-proxy.1`,
/// `webrep-ca-init.1`, ...) into `dir`, creating it when missing; returns the files written,
/// sorted.
///
/// # Errors
/// `dir` cannot be created, or a page cannot be written there.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("webrep") && n.ends_with(".1"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

/// The completion script of `webrep` for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "webrep", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_for_the_binary_and_each_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(&dir.path().join("man1")).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "webrep.1",
            "webrep-proxy.1",
            "webrep-server.1",
            "webrep-ca-init.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let main = std::fs::read_to_string(dir.path().join("man1/webrep.1")).unwrap();
        assert!(main.contains(".TH webrep 1"), "{main}");
        assert!(main.contains("/etc/webrep/webrep.yaml"), "{main}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _webrep"), "{bash}");
        assert!(bash.contains("proxy") && bash.contains("policy"));
        let zsh = String::from_utf8(completions(clap_complete::Shell::Zsh)).unwrap();
        assert!(zsh.starts_with("#compdef webrep"), "{zsh}");
    }
}
