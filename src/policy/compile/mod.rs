//! Validation and compilation: [`RawPolicy`] to the immutable [`Policy`].
//!
//! Everything that can be done once is done here: host patterns go into hash-indexed
//! host sets, regexes are compiled into one regex set per list, networks are parsed,
//! time zones are resolved from jiff's bundled database, schedules become minute-of-week
//! ranges, and every rule gets its complete effective [`Settings`] (the top level with the
//! rule's overrides applied), so evaluation never merges anything.
//!
//! # Where it sits
//! [`Policy::from_yaml`] parses the text into the raw types of [`super::schema`] and
//! [`Policy::compile`] turns them into a [`Policy`], which `eval.rs` reads and
//! [`crate::policyfile`] loads on start and on every reload. This file holds the entry
//! points, the limits and the rule-id checks; the parts, each compiling one section through
//! the compile context:
//! - `context.rs`: the context (where errors go, which rule is compiled) and category names;
//! - `settings.rs`: the settings of a scope, their defaults and the overlay of a rule's
//!   overrides;
//! - `files.rs`: the `files:` settings of downloads;
//! - `lists.rs`: approved and blocked lists (host patterns and regexes);
//! - `rules.rs`: one rule, its conditions and its settings;
//! - `schedule.rs`: time zones and weekly windows;
//! - `net.rs`: client networks.
//!
//! # Cost
//! Linear in the size of the policy, paid once per load: a policy with a 100,000-entry
//! list and 50 rules compiles in a fraction of a second (`cargo bench --bench policy`).
//! Each list's regex set is bounded by [`REGEX_SIZE_LIMIT`]; each schedule holds its zone's
//! UTC offsets for 2000-2100 (some 200 transitions for a zone with DST, and about 750
//! buckets to find them by).
//!
//! # Failure
//! Compilation collects every error it finds rather than stopping at the first one, each
//! with file, line, column and rule id ([`PolicyErrors`]); one error means no policy. YAML
//! errors (an unknown key, a wrong type, a duplicate key: each of them, up to
//! [`crate::yaml::MAX_ERRORS`]; a syntax error, which ends the parse) come without the
//! compile's: the policy is compiled only once it parses.
//! No I/O.

mod context;
mod files;
mod lists;
mod net;
mod rules;
mod schedule;
mod settings;

use super::schema::{RawPolicy, SecurityLevel};
use super::{Action, PolicyError, PolicyErrors};
use crate::model::{BUILTIN_CATEGORIES, CategoryClass, Taxonomy};
use crate::output::counted;
use crate::yaml::{self, Located};
use context::Cx;
use lists::{Lists, UrlList};
use settings::Overlay;

pub use files::{DEFAULT_FILE_EXTENSIONS, DEFAULT_FILE_TYPES, FileSettings};
pub(super) use rules::Rule;
#[cfg(test)]
pub(super) use schedule::test_schedule;
pub(super) use schedule::{OFFSET_BUCKET_SHIFT, Schedule, TRANSITIONS_FROM, TRANSITIONS_UNTIL};
pub use settings::{DEFAULT_CONTINUE_SECONDS, DEFAULT_STALE_SECONDS, DEFAULT_TUNNEL_CATEGORIES};
pub(super) use settings::{Settings, report_bit};

/// The longest regex accepted, in bytes of pattern text.
pub const MAX_REGEX_LEN: usize = 4096;
/// The most regexes per list.
pub const MAX_REGEXES: usize = 1024;
/// Compiled size limit of one list's regex set, in bytes (the `regex` crate's `size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 8 << 20;
/// Lazy DFA cache limit per regex set, in bytes.
const REGEX_DFA_LIMIT: usize = 2 << 20;
/// The most rules per policy.
pub const MAX_RULES: usize = 10_000;
/// The longest accepted duration setting, in seconds (30 days).
const MAX_SECONDS: u64 = 30 * 24 * 3600;

/// A compiled policy: immutable, cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Policy {
    pub(super) origin: Box<str>,
    pub(super) generation: u64,
    pub(super) description: Option<String>,
    pub(super) taxonomy: Taxonomy,
    pub(super) base: Settings,
    pub(super) rules: Vec<Rule>,
}

impl Policy {
    /// Parses, validates and compiles policy YAML. `origin` names the source in errors
    /// (usually the file path). Pure: no I/O.
    ///
    /// # Errors
    /// [`PolicyErrors`]: every problem found, each with file, line, column and rule id.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        // An empty file (or one holding only comments) is the all-defaults policy.
        let raw: RawPolicy = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            RawPolicy::default()
        } else {
            yaml::from_yaml_str_all(text).map_err(|errors| PolicyErrors {
                errors: errors
                    .into_iter()
                    .map(|e| PolicyError {
                        origin: origin.to_owned(),
                        line: e.line,
                        column: e.column,
                        rule_id: rule_at_line(text, e.line),
                        message: e.message,
                    })
                    .collect(),
            })?
        };
        Self::compile(raw, origin)
    }

    /// Validates and compiles an already parsed policy.
    ///
    /// # Errors
    /// [`PolicyErrors`], as for [`from_yaml`](Self::from_yaml).
    pub fn compile(raw: RawPolicy, origin: &str) -> Result<Policy, PolicyErrors> {
        let mut cx = Cx {
            origin,
            rule: None,
            errors: Vec::new(),
        };
        let taxonomy = cx.taxonomy(raw.categories.as_ref());
        let defaults = Settings::defaults(&taxonomy);
        let base = cx.settings(
            &defaults,
            &taxonomy,
            Overlay {
                security_level: raw.security_level,
                untested: raw.untested,
                lists: raw.lists.as_ref(),
                categories: raw.categories.as_ref(),
                interception: raw.interception.as_ref(),
                reputation_unavailable: raw.reputation_unavailable.as_ref(),
                warn: raw.warn.as_ref(),
                feedback: raw.feedback.as_ref(),
                files: raw.files.as_ref(),
            },
        );
        let raw_rules = raw.rules.unwrap_or_default();
        if raw_rules.len() > MAX_RULES {
            cx.error(
                0,
                0,
                format!("{} rules; at most {MAX_RULES} are allowed", raw_rules.len()),
            );
        }
        let mut rules = Vec::with_capacity(raw_rules.len());
        let mut seen: Vec<(&str, u32)> = Vec::new();
        for r in &raw_rules {
            let id = &r.id;
            cx.rule = Some(id.value.clone());
            if let Some(&(_, first_line)) = seen.iter().find(|(s, _)| *s == id.value) {
                cx.error(
                    id.line,
                    id.column,
                    format!(
                        "duplicate rule id `{}` (first used on line {first_line})",
                        id.value
                    ),
                );
            } else if !valid_rule_id(&id.value) {
                cx.error(
                    id.line,
                    id.column,
                    format!(
                        "invalid rule id {:?}: use 1-64 letters, digits, '-', '_' and '.', starting with a letter or digit",
                        id.value
                    ),
                );
            }
            seen.push((&id.value, id.line));
            if let Some(rule) = cx.rule(r, &base, &taxonomy) {
                rules.push(rule);
            }
        }
        cx.rule = None;
        if !cx.errors.is_empty() {
            return Err(PolicyErrors { errors: cx.errors });
        }
        Ok(Policy {
            origin: origin.into(),
            generation: 0,
            description: raw.description,
            taxonomy,
            base,
            rules,
        })
    }

    /// Where the policy came from (the file path given to the compiler).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Which load this is: 0 for a policy compiled directly, 1 for the first policy a
    /// [`PolicyHandle`](crate::policyfile::PolicyHandle) loaded, +1 for every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stamps the policy with the load it came from (set by the loader, which counts them).
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// The `description` field.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The known categories: built in plus `categories.custom`.
    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// The rule ids, in evaluation order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.id)
    }

    /// A one-line summary for `webrep policy check`.
    pub fn summary(&self) -> String {
        let b = &self.base;
        let lists = b.lists.first();
        let count = |f: fn(&Lists) -> &UrlList| {
            lists.map_or((0, 0), |l| {
                let u = f(l);
                (
                    u.hosts.len(),
                    u.regexes.as_ref().map_or(0, |(_, t)| t.len()),
                )
            })
        };
        let (ap, apr) = count(|l| &l.approved);
        let (bl, blr) = count(|l| &l.blocked);
        let wild = lists.map_or(0, |l| {
            l.approved.hosts.wildcard_count() + l.blocked.hosts.wildcard_count()
        });
        let level = match b.security_level {
            SecurityLevel::High => "high",
            SecurityLevel::Medium => "medium",
            SecurityLevel::Low => "low",
        };
        let blocked_cats = b
            .categories
            .iter()
            .filter(|(_, a)| *a == Action::Block)
            .count();
        format!(
            "security_level {level}, untested {}, approved {ap} (+{apr} regex), blocked {bl} (+{blr} regex), {wild} wildcard, {} ({blocked_cats} block), {}, {}, reputation_unavailable {}",
            b.untested.as_str(),
            counted(
                b.categories.len() as u64,
                "category action",
                "category actions"
            ),
            counted(
                self.taxonomy.custom().count() as u64,
                "custom category",
                "custom categories"
            ),
            counted(self.rules.len() as u64, "rule", "rules"),
            b.reputation_unavailable.as_str(),
        )
    }
}

/// The id of the rule whose text contains `line`, for YAML errors (an unknown key or a
/// wrong type inside a rule), found by a lenient second parse that reads only the positions
/// of the top-level keys and the rules' ids. `None` when the line is not inside `rules:` or
/// the file is too broken for that.
fn rule_at_line(text: &str, line: u32) -> Option<String> {
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    #[derive(Deserialize)]
    struct Probe {
        id: Option<String>,
    }
    #[derive(Deserialize)]
    struct Rules {
        rules: Vec<Located<Probe>>,
    }
    if line == 0 {
        return None;
    }
    let top: std::collections::BTreeMap<String, Located<IgnoredAny>> =
        yaml::from_yaml_str_located(text).ok()?;
    let start = top.get("rules")?.line;
    let end = top
        .values()
        .map(|v| v.line)
        .filter(|&l| l > start)
        .min()
        .unwrap_or(u32::MAX);
    if line < start || line >= end {
        return None;
    }
    let rules: Rules = yaml::from_yaml_str_located(text).ok()?;
    rules
        .rules
        .iter()
        .rev()
        .find(|r| r.line <= line)
        .and_then(|r| r.value.id.clone())
}

fn valid_rule_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether the built-in class of `c` is security (used by docs and the default policy
/// test).
pub fn is_security_category(c: &str) -> bool {
    BUILTIN_CATEGORIES
        .iter()
        .any(|(n, class)| *n == c && *class == CategoryClass::Security)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_categories() {
        assert!(is_security_category("malware"));
        assert!(!is_security_category("news"));
    }
}
