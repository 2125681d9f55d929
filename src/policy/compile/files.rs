//! The `files:` settings of one scope: which downloads are hashed and checked against file
//! reputation, and what to do with a malicious, suspicious or unavailable answer.

use super::context::Cx;
use crate::policy::Action;
use crate::policy::schema::RawFiles;

/// The compiled `files:` settings of one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    pub scan: bool,
    /// Lower-case media types; `type/*` entries as `type/`.
    pub content_types: Vec<String>,
    /// Lower-case extensions without the dot.
    pub extensions: Vec<String>,
    pub attachments: bool,
    pub min_bytes: u64,
    /// 0: no limit.
    pub max_bytes: u64,
    pub malicious: Action,
    pub suspicious: Action,
    pub unavailable: Action,
}

/// Default `files.content_types`.
pub const DEFAULT_FILE_TYPES: &[&str] = &[
    "application/octet-stream",
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-ms-installer",
    "application/x-msi",
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-elf",
    "application/x-sharedlib",
    "application/x-mach-binary",
    "application/java-archive",
    "application/vnd.android.package-archive",
    "application/x-apple-diskimage",
    "application/x-iso9660-image",
    "application/zip",
    "application/x-zip-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/x-7z-compressed",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/x-bzip2",
    "application/x-xz",
    "application/vnd.ms-cab-compressed",
    "application/x-sh",
    "application/x-bat",
    "application/pdf",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.ms-word.document.macroenabled.12",
    "application/vnd.ms-excel.sheet.macroenabled.12",
    "application/vnd.ms-powerpoint.presentation.macroenabled.12",
];

/// Default `files.extensions`.
pub const DEFAULT_FILE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "msi", "scr", "bat", "cmd", "ps1", "vbs", "js", "jar", "apk", "dmg", "pkg",
    "deb", "rpm", "iso", "img", "zip", "rar", "7z", "gz", "tgz", "bz2", "xz", "cab", "pdf", "doc",
    "docm", "xls", "xlsm", "ppt", "pptm",
];

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            scan: true,
            content_types: DEFAULT_FILE_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            extensions: DEFAULT_FILE_EXTENSIONS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            attachments: true,
            min_bytes: 1,
            max_bytes: 0,
            malicious: Action::Block,
            suspicious: Action::Monitor,
            unavailable: Action::Allow,
        }
    }
}

impl Cx<'_> {
    /// `parent`'s file settings with `f` applied.
    pub(super) fn files(&mut self, parent: &FileSettings, f: &RawFiles) -> FileSettings {
        let mut out = parent.clone();
        if let Some(v) = f.scan {
            out.scan = v;
        }
        if let Some(v) = f.attachments {
            out.attachments = v;
        }
        if let Some(v) = f.min_bytes {
            out.min_bytes = v;
        }
        if let Some(v) = f.max_bytes {
            out.max_bytes = v;
        }
        if let Some(list) = &f.content_types {
            out.content_types = Vec::new();
            for t in list {
                let v = t.value.trim().to_ascii_lowercase();
                let ok = v.split_once('/').is_some_and(|(a, b)| {
                    let token = |x: &str| {
                        !x.is_empty()
                            && x.bytes()
                                .all(|c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c))
                    };
                    token(a) && (b == "*" || token(b))
                });
                if !ok {
                    self.error_at(t, format!("files.content_types: {:?} is not a media type (type/subtype or type/*)", t.value));
                    continue;
                }
                out.content_types.push(v.trim_end_matches('*').to_owned());
            }
        }
        if let Some(list) = &f.extensions {
            out.extensions = Vec::new();
            for e in list {
                let v = e.value.trim().trim_start_matches('.').to_ascii_lowercase();
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                {
                    self.error_at(
                        e,
                        format!("files.extensions: {:?} is not a file extension", e.value),
                    );
                    continue;
                }
                out.extensions.push(v);
            }
        }
        for (raw, slot, key, allowed) in [
            (
                &f.malicious,
                &mut out.malicious,
                "files.malicious",
                "block, monitor or allow",
            ),
            (
                &f.suspicious,
                &mut out.suspicious,
                "files.suspicious",
                "block, monitor or allow",
            ),
            (
                &f.unavailable,
                &mut out.unavailable,
                "files.unavailable",
                "block or allow",
            ),
        ] {
            let Some(a) = raw else { continue };
            let action: Action = a.value.into();
            let fits = match action {
                Action::Warn => false,
                Action::Monitor => key != "files.unavailable",
                _ => true,
            };
            if fits {
                *slot = action;
            } else {
                self.error_at(
                    a,
                    format!(
                        "{key}: {} does not apply to a download; use {allowed}",
                        action.as_str()
                    ),
                );
            }
        }
        out
    }
}
