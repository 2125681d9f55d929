//! What a file's hash verdict makes of a download: one (cached) file-reputation lookup and
//! the policy's action for its verdict; no answer follows `files.unavailable`.

use std::sync::Arc;

use crate::model::FileVerdict;
use crate::policy::{Action, FileSettings};
use crate::reputation::{CacheState, FileAnswer, Reputation};

/// What a file verdict makes of a download.
#[derive(Debug, Clone)]
pub struct FileDecision {
    pub action: Action,
    /// Bytes hashed.
    pub size: u64,
    pub sha256: String,
    pub answer: Option<FileAnswer>,
    pub cache: CacheState,
    pub source: Option<Arc<str>>,
}

impl FileDecision {
    /// `malicious file "Name" (SHA-256 ...)` for pages and logs.
    pub fn describe(&self) -> String {
        let verdict = match self.answer.as_ref().and_then(|a| a.verdict) {
            Some(v) => v.as_str(),
            None if self.answer.is_none() => "unchecked (reputation unavailable)",
            None => "unknown",
        };
        match self.answer.as_ref().and_then(|a| a.name.as_deref()) {
            Some(n) => format!("{verdict} file \"{n}\" (SHA-256 {})", self.sha256),
            None => format!("{verdict} file (SHA-256 {})", self.sha256),
        }
    }
}

/// Looks up `sha256` and applies the policy's file actions.
pub async fn decide(rep: &Reputation, s: &FileSettings, sha256: String) -> FileDecision {
    let l = rep.lookup_file(&sha256).await;
    let action = match &l.answer {
        None => s.unavailable,
        Some(a) => match a.verdict {
            Some(FileVerdict::Malicious) => s.malicious,
            Some(FileVerdict::Suspicious) => s.suspicious,
            _ => Action::Allow,
        },
    };
    FileDecision {
        action,
        size: 0,
        sha256,
        answer: l.answer,
        cache: l.cache,
        source: l.source,
    }
}
