//! Approved and blocked lists: host patterns into hash-indexed host sets, regexes into one
//! size-limited regex set per list, each regex checked alone first so that an error names it.

use std::sync::Arc;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::context::Cx;
use super::settings::Settings;
use super::{MAX_REGEX_LEN, MAX_REGEXES, REGEX_DFA_LIMIT, REGEX_SIZE_LIMIT};
use crate::policy::pattern::{self, HostSet};
use crate::policy::schema::RawLists;
use crate::yaml::Located;

/// Approved and blocked lists of one scope (top level or one rule).
#[derive(Debug, Default)]
pub(in crate::policy) struct Lists {
    pub(in crate::policy) approved: UrlList,
    pub(in crate::policy) blocked: UrlList,
}

/// One list: host patterns plus optional regexes over the canonical URL.
#[derive(Debug, Default)]
pub(in crate::policy) struct UrlList {
    pub(in crate::policy) hosts: HostSet,
    pub(in crate::policy) regexes: Option<(RegexSet, Vec<Box<str>>)>,
}

impl Cx<'_> {
    /// A `lists:` block: its precedence, and its lists ahead of the inherited ones.
    pub(super) fn apply_lists(&mut self, s: &mut Settings, lists: &RawLists) {
        if let Some(p) = lists.precedence {
            s.precedence = p;
        }
        let compiled = Lists {
            approved: self.url_list(
                lists.approved.as_deref(),
                lists.approved_regex.as_deref(),
                "lists.approved",
            ),
            blocked: self.url_list(
                lists.blocked.as_deref(),
                lists.blocked_regex.as_deref(),
                "lists.blocked",
            ),
        };
        // A rule's entries come before the inherited ones so that its hits are found
        // first; which list wins is still decided by `precedence`.
        s.lists.insert(0, Arc::new(compiled));
    }

    pub(super) fn host_set(
        &mut self,
        entries: &[Located<String>],
        allow_path: bool,
        key: &str,
    ) -> HostSet {
        let mut set = HostSet::default();
        for e in entries {
            match pattern::parse(&e.value, allow_path) {
                Ok(p) => set.insert(p, &e.value),
                Err(m) => self.error_at(e, format!("{key}: {m}")),
            }
        }
        set
    }

    fn url_list(
        &mut self,
        hosts: Option<&[Located<String>]>,
        regexes: Option<&[Located<String>]>,
        key: &str,
    ) -> UrlList {
        let hosts = self.host_set(hosts.unwrap_or_default(), true, key);
        let regexes = match regexes {
            Some(r) if !r.is_empty() => self.regex_set(r, &format!("{key}_regex")),
            _ => None,
        };
        UrlList { hosts, regexes }
    }

    fn regex_set(
        &mut self,
        items: &[Located<String>],
        key: &str,
    ) -> Option<(RegexSet, Vec<Box<str>>)> {
        if items.len() > MAX_REGEXES {
            self.error_at(
                &items[MAX_REGEXES],
                format!("{key}: more than {MAX_REGEXES} regexes"),
            );
            return None;
        }
        let mut ok = true;
        for r in items {
            if r.value.len() > MAX_REGEX_LEN {
                self.error_at(r, format!("{key}: regex longer than {MAX_REGEX_LEN} bytes"));
                ok = false;
                continue;
            }
            // Compile each one alone first so that an error names the regex it is about.
            if let Err(e) = RegexBuilder::new(&r.value)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_DFA_LIMIT)
                .build()
            {
                self.error_at(
                    r,
                    format!("{key}: invalid regex: {}", one_line(&e.to_string())),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        match RegexSetBuilder::new(items.iter().map(|r| r.value.as_str()))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .build()
        {
            Ok(set) => Some((set, items.iter().map(|r| r.value.as_str().into()).collect())),
            Err(e) => {
                self.error_at(
                    &items[0],
                    format!(
                        "{key}: the regexes together are too large: {}",
                        one_line(&e.to_string())
                    ),
                );
                None
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
