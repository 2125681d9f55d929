//! Validation and compilation: [`schema::RawPolicy`] to the immutable [`Policy`].
//!
//! Everything that can be done once is done here: host patterns go into hash-indexed
//! [`HostSet`]s, regexes are compiled into one regex set per list, networks are parsed,
//! time zones are resolved from jiff's bundled database, schedules become minute-of-week
//! ranges, and every rule gets its complete effective [`Settings`] (the top level with the
//! rule's overrides applied), so evaluation never merges anything. Compilation collects every
//! error it finds rather than stopping at the first one.

use std::sync::Arc;
use std::time::Duration;

use super::pattern::HostSet;
use super::schema::{
    FixedAction, InterceptMode, NonTlsAction, Precedence, RawAction, RawCategories, RawFeedback,
    RawFiles, RawInterception, RawLists, RawPolicy, RawReputationUnavailable, RawRule, RawWarn,
    ReportKind, SecurityLevel,
};
use super::{Action, PolicyError, PolicyErrors};
use crate::model::{BUILTIN_CATEGORIES, Category, CategoryClass, Taxonomy};
use crate::yaml::{self, Located};
use lists::{Lists, UrlList};
use net::{Net, parse_net};

mod files;
mod lists;
mod net;
mod schedule;

pub use files::{DEFAULT_FILE_EXTENSIONS, DEFAULT_FILE_TYPES, FileSettings};
#[cfg(test)]
pub(super) use schedule::test_schedule;
pub(super) use schedule::{OFFSET_BUCKET_SHIFT, Schedule, TRANSITIONS_FROM, TRANSITIONS_UNTIL};

/// The longest regex accepted, in bytes of pattern text.
pub const MAX_REGEX_LEN: usize = 4096;
/// The most regexes per list.
pub const MAX_REGEXES: usize = 1024;
/// Compiled size limit of one list's regex set, in bytes (the `regex` crate's `size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 8 << 20;
/// Lazy DFA cache limit per regex set, in bytes.
pub(super) const REGEX_DFA_LIMIT: usize = 2 << 20;
/// The most rules per policy.
pub const MAX_RULES: usize = 10_000;
/// The longest accepted duration setting, in seconds (30 days).
pub(super) const MAX_SECONDS: u64 = 30 * 24 * 3600;

/// Default for `reputation_unavailable.stale_seconds`.
pub const DEFAULT_STALE_SECONDS: u64 = 3600;
/// Default for `warn.continue_seconds`.
pub const DEFAULT_CONTINUE_SECONDS: u64 = 3600;
/// Default for `interception.tunnel_categories`.
pub const DEFAULT_TUNNEL_CATEGORIES: &[&str] = &["finance", "health"];

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

/// The settings that apply to one request: the top level, or a rule's overlay of it.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) security_level: SecurityLevel,
    pub(super) untested: Action,
    pub(super) precedence: Precedence,
    /// A rule's own lists first, then the top-level lists.
    pub(super) lists: Vec<Arc<Lists>>,
    pub(super) categories: Arc<[(Category, Action)]>,
    pub(super) uncategorized: Action,
    pub(super) interception: Interception,
    pub(super) reputation_unavailable: Action,
    pub(super) stale: Duration,
    pub(super) warn_continue: Duration,
    pub(super) feedback: Feedback,
    pub(super) files: Arc<FileSettings>,
}

/// Interception settings; the sets are shared between the top level and rules.
#[derive(Debug, Clone)]
pub(super) struct Interception {
    pub(super) default: InterceptMode,
    pub(super) intercept_hosts: Arc<HostSet>,
    pub(super) tunnel_hosts: Arc<HostSet>,
    pub(super) intercept_categories: Arc<[Category]>,
    pub(super) tunnel_categories: Arc<[Category]>,
    pub(super) non_tls: NonTlsAction,
}

/// Feedback settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Feedback {
    /// Bit set of [`ReportKind`]s.
    pub(super) report: u8,
    pub(super) anonymize_clients: bool,
    pub(super) anonymize_users: bool,
}

/// One compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) id: Box<str>,
    pub(super) clients: Vec<Net>,
    pub(super) users: Vec<Box<str>>,
    pub(super) groups: Vec<Box<str>>,
    pub(super) hosts: Option<HostSet>,
    pub(super) schedule: Option<Schedule>,
    pub(super) action: Option<Action>,
    pub(super) settings: Settings,
}

pub(super) fn report_bit(kind: ReportKind) -> u8 {
    1 << match kind {
        ReportKind::Block => 0,
        ReportKind::Warn => 1,
        ReportKind::Continue => 2,
        ReportKind::Monitor => 3,
        ReportKind::Allow => 4,
        ReportKind::Untested => 5,
        ReportKind::ReputationUnavailable => 6,
    }
}

const DEFAULT_REPORT: &[ReportKind] = &[
    ReportKind::Block,
    ReportKind::Warn,
    ReportKind::Continue,
    ReportKind::Monitor,
    ReportKind::Untested,
    ReportKind::ReputationUnavailable,
];

impl From<FixedAction> for Action {
    fn from(a: FixedAction) -> Action {
        match a {
            FixedAction::Allow => Action::Allow,
            FixedAction::Warn => Action::Warn,
            FixedAction::Block => Action::Block,
        }
    }
}

impl From<RawAction> for Action {
    fn from(a: RawAction) -> Action {
        match a {
            RawAction::Allow => Action::Allow,
            RawAction::Monitor => Action::Monitor,
            RawAction::Warn => Action::Warn,
            RawAction::Block => Action::Block,
        }
    }
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
            yaml::from_yaml_str_located(text).map_err(|e| {
                PolicyErrors::one(PolicyError {
                    origin: origin.to_owned(),
                    line: e.line,
                    column: e.column,
                    rule_id: rule_at_line(text, e.line),
                    message: e.message,
                })
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
            "security_level {level}, untested {}, approved {ap} (+{apr} regex), blocked {bl} (+{blr} regex), {wild} wildcard, {} category actions ({blocked_cats} block), {} custom categories, {} rules, reputation_unavailable {}",
            b.untested.as_str(),
            b.categories.len(),
            self.taxonomy.custom().count(),
            self.rules.len(),
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

impl Settings {
    fn defaults(taxonomy: &Taxonomy) -> Settings {
        let tunnel: Vec<Category> = DEFAULT_TUNNEL_CATEGORIES
            .iter()
            .filter_map(|c| taxonomy.resolve(c).ok())
            .collect();
        Settings {
            security_level: SecurityLevel::Medium,
            untested: Action::Allow,
            precedence: Precedence::ApprovedFirst,
            lists: Vec::new(),
            categories: Arc::from(Vec::new()),
            uncategorized: Action::Allow,
            interception: Interception {
                default: InterceptMode::Intercept,
                intercept_hosts: Arc::default(),
                tunnel_hosts: Arc::default(),
                intercept_categories: Arc::from(Vec::new()),
                tunnel_categories: tunnel.into(),
                non_tls: NonTlsAction::Block,
            },
            reputation_unavailable: Action::Allow,
            stale: Duration::from_secs(DEFAULT_STALE_SECONDS),
            warn_continue: Duration::from_secs(DEFAULT_CONTINUE_SECONDS),
            feedback: Feedback {
                report: DEFAULT_REPORT.iter().fold(0, |m, k| m | report_bit(*k)),
                anonymize_clients: false,
                anonymize_users: false,
            },
            files: Arc::default(),
        }
    }
}

/// The overridable settings of one scope, borrowed from the raw policy or a raw rule.
struct Overlay<'a> {
    security_level: Option<SecurityLevel>,
    untested: Option<FixedAction>,
    lists: Option<&'a RawLists>,
    categories: Option<&'a RawCategories>,
    interception: Option<&'a RawInterception>,
    reputation_unavailable: Option<&'a RawReputationUnavailable>,
    warn: Option<&'a RawWarn>,
    feedback: Option<&'a RawFeedback>,
    files: Option<&'a RawFiles>,
}

/// A `feedback:` block over the inherited feedback settings.
fn apply_feedback(s: &mut Feedback, f: &RawFeedback) {
    if let Some(r) = &f.report {
        s.report = r.iter().fold(0, |m, k| m | report_bit(*k));
    }
    if let Some(a) = f.anonymize_clients {
        s.anonymize_clients = a;
    }
    if let Some(a) = f.anonymize_users {
        s.anonymize_users = a;
    }
}

/// Compilation context: where errors go and which rule is being compiled.
struct Cx<'o> {
    origin: &'o str,
    rule: Option<String>,
    errors: Vec<PolicyError>,
}

impl Cx<'_> {
    fn error(&mut self, line: u32, column: u32, message: String) {
        self.errors.push(PolicyError {
            origin: self.origin.to_owned(),
            line,
            column,
            rule_id: self.rule.clone(),
            message,
        });
    }

    fn error_at<T>(&mut self, at: &Located<T>, message: String) {
        self.error(at.line, at.column, message);
    }

    fn taxonomy(&mut self, categories: Option<&RawCategories>) -> Taxonomy {
        let mut t = Taxonomy::default();
        for name in categories
            .and_then(|c| c.custom.as_deref())
            .unwrap_or_default()
        {
            match Category::parse(&name.value) {
                Ok(c) => {
                    if let Err(e) = t.define(c) {
                        self.error_at(name, format!("categories.custom: {e}"));
                    }
                }
                Err(e) => self.error_at(name, format!("categories.custom: {e}")),
            }
        }
        t
    }

    fn category(
        &mut self,
        taxonomy: &Taxonomy,
        name: &Located<String>,
        key: &str,
    ) -> Option<Category> {
        match taxonomy.resolve(&name.value) {
            Ok(c) => Some(c),
            Err(e) => {
                self.error_at(
                    name,
                    format!("{key}: {e} (not built in; define it under categories.custom)"),
                );
                None
            }
        }
    }

    fn seconds(&mut self, v: &Located<u64>, key: &str) -> Duration {
        if v.value > MAX_SECONDS {
            self.error_at(
                v,
                format!("{key}: {} is more than {MAX_SECONDS} (30 days)", v.value),
            );
        }
        Duration::from_secs(v.value.min(MAX_SECONDS))
    }

    /// `parent` with `o` applied.
    fn settings(&mut self, parent: &Settings, taxonomy: &Taxonomy, o: Overlay<'_>) -> Settings {
        let mut s = parent.clone();
        if let Some(l) = o.security_level {
            s.security_level = l;
        }
        if let Some(u) = o.untested {
            s.untested = u.into();
        }
        if let Some(lists) = o.lists {
            self.apply_lists(&mut s, lists);
        }
        if let Some(c) = o.categories {
            self.apply_categories(&mut s, taxonomy, c);
        }
        if let Some(i) = o.interception {
            self.apply_interception(&mut s.interception, taxonomy, i);
        }
        if let Some(r) = o.reputation_unavailable {
            if let Some(a) = r.action {
                s.reputation_unavailable = a.into();
            }
            if let Some(v) = &r.stale_seconds {
                s.stale = self.seconds(v, "reputation_unavailable.stale_seconds");
            }
        }
        if let Some(w) = o.warn
            && let Some(v) = &w.continue_seconds
        {
            s.warn_continue = self.seconds(v, "warn.continue_seconds");
        }
        if let Some(f) = o.feedback {
            apply_feedback(&mut s.feedback, f);
        }
        if let Some(f) = o.files {
            s.files = Arc::new(self.files(&s.files, f));
        }
        s
    }

    /// A `categories:` block: actions merged over the inherited ones, the uncategorized
    /// action; custom categories only at the top level.
    fn apply_categories(&mut self, s: &mut Settings, taxonomy: &Taxonomy, c: &RawCategories) {
        if let Some(custom) = c.custom.as_ref().and_then(|v| v.first())
            && self.rule.is_some()
        {
            self.error_at(
                custom,
                "categories.custom: custom categories are defined at the top level only".into(),
            );
        }
        if let Some(actions) = &c.actions {
            let mut merged: Vec<(Category, Action)> = s.categories.to_vec();
            for (name, action) in actions {
                let at = Located {
                    value: name.clone(),
                    line: action.line,
                    column: action.column,
                };
                if let Some(cat) = self.category(taxonomy, &at, "categories.actions") {
                    let a = Action::from(action.value);
                    match merged.iter_mut().find(|(c, _)| *c == cat) {
                        Some(slot) => slot.1 = a,
                        None => merged.push((cat, a)),
                    }
                }
            }
            s.categories = merged.into();
        }
        if let Some(u) = c.uncategorized {
            s.uncategorized = u.into();
        }
    }

    /// An `interception:` block over the inherited interception settings.
    fn apply_interception(
        &mut self,
        si: &mut Interception,
        taxonomy: &Taxonomy,
        i: &RawInterception,
    ) {
        if let Some(d) = i.default {
            si.default = d;
        }
        if let Some(n) = i.non_tls {
            si.non_tls = n;
        }
        if let Some(h) = &i.intercept_hosts {
            si.intercept_hosts = Arc::new(self.host_set(h, false, "interception.intercept_hosts"));
        }
        if let Some(h) = &i.tunnel_hosts {
            si.tunnel_hosts = Arc::new(self.host_set(h, false, "interception.tunnel_hosts"));
        }
        if let Some(c) = &i.intercept_categories {
            si.intercept_categories =
                self.categories(taxonomy, c, "interception.intercept_categories");
        }
        if let Some(c) = &i.tunnel_categories {
            si.tunnel_categories = self.categories(taxonomy, c, "interception.tunnel_categories");
        }
    }

    fn categories(
        &mut self,
        taxonomy: &Taxonomy,
        names: &[Located<String>],
        key: &str,
    ) -> Arc<[Category]> {
        let v: Vec<Category> = names
            .iter()
            .filter_map(|n| self.category(taxonomy, n, key))
            .collect();
        v.into()
    }

    fn rule(&mut self, r: &RawRule, base: &Settings, taxonomy: &Taxonomy) -> Option<Rule> {
        let errors_before = self.errors.len();
        let m = r.when.clone().unwrap_or_default();
        let clients = self.non_empty(m.clients.as_deref(), "match.clients", &r.id);
        let clients: Vec<Net> = clients
            .iter()
            .filter_map(|c| match parse_net(&c.value) {
                Ok(n) => Some(Net::from(n)),
                Err(e) => {
                    self.error_at(c, format!("match.clients: {e}"));
                    None
                }
            })
            .collect();
        let users = self
            .non_empty(m.users.as_deref(), "match.users", &r.id)
            .iter()
            .map(|u| u.value.as_str().into())
            .collect();
        let groups = self
            .non_empty(m.groups.as_deref(), "match.groups", &r.id)
            .iter()
            .map(|u| u.value.as_str().into())
            .collect();
        let hosts = m.hosts.as_deref().map(|h| {
            if h.is_empty() {
                self.error_at(
                    &r.id,
                    "match.hosts is empty and would match nothing; remove it".into(),
                );
            }
            self.host_set(h, false, "match.hosts")
        });
        let schedule = m.schedule.as_ref().and_then(|s| self.schedule(s));
        let settings = self.settings(
            base,
            taxonomy,
            Overlay {
                security_level: r.security_level,
                untested: r.untested,
                lists: r.lists.as_ref(),
                categories: r.categories.as_ref(),
                interception: r.interception.as_ref(),
                reputation_unavailable: r.reputation_unavailable.as_ref(),
                warn: r.warn.as_ref(),
                feedback: r.feedback.as_ref(),
                files: r.files.as_ref(),
            },
        );
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Rule {
            id: r.id.value.as_str().into(),
            clients,
            users,
            groups,
            hosts,
            schedule,
            action: r.action.as_ref().map(|a| a.value.into()),
            settings,
        })
    }

    /// An empty condition list would match nothing, which is never what was meant.
    fn non_empty<'v>(
        &mut self,
        v: Option<&'v [Located<String>]>,
        key: &str,
        id: &Located<String>,
    ) -> &'v [Located<String>] {
        match v {
            Some([]) => {
                self.error_at(
                    id,
                    format!("{key} is empty and would match nothing; remove it"),
                );
                &[]
            }
            Some(v) => v,
            None => &[],
        }
    }
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
