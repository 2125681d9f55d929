//! The settings that apply to one request, their defaults, and the overlay of a scope's
//! overrides (the top level over the defaults, a rule over the top level): security level,
//! untested action, categories, interception, reputation unavailable, warn, feedback; lists
//! and files are compiled in their own files.

use std::sync::Arc;
use std::time::Duration;

use super::MAX_SECONDS;
use super::context::Cx;
use super::files::FileSettings;
use super::lists::Lists;
use crate::model::{Category, Taxonomy};
use crate::policy::Action;
use crate::policy::pattern::HostSet;
use crate::policy::schema::{
    FixedAction, InterceptMode, NonTlsAction, Precedence, RawAction, RawCategories, RawFeedback,
    RawFiles, RawInterception, RawLists, RawReputationUnavailable, RawWarn, ReportKind,
    SecurityLevel,
};
use crate::yaml::Located;

/// Default for `reputation_unavailable.stale_seconds`.
pub const DEFAULT_STALE_SECONDS: u64 = 3600;
/// Default for `warn.continue_seconds`.
pub const DEFAULT_CONTINUE_SECONDS: u64 = 3600;
/// Default for `interception.tunnel_categories`.
pub const DEFAULT_TUNNEL_CATEGORIES: &[&str] = &["finance", "health"];

/// The settings that apply to one request: the top level, or a rule's overlay of it.
#[derive(Debug, Clone)]
pub(in crate::policy) struct Settings {
    pub(in crate::policy) security_level: SecurityLevel,
    pub(in crate::policy) untested: Action,
    pub(in crate::policy) precedence: Precedence,
    /// A rule's own lists first, then the top-level lists.
    pub(in crate::policy) lists: Vec<Arc<Lists>>,
    pub(in crate::policy) categories: Arc<[(Category, Action)]>,
    pub(in crate::policy) uncategorized: Action,
    pub(in crate::policy) interception: Interception,
    pub(in crate::policy) reputation_unavailable: Action,
    pub(in crate::policy) stale: Duration,
    pub(in crate::policy) warn_continue: Duration,
    pub(in crate::policy) feedback: Feedback,
    pub(in crate::policy) files: Arc<FileSettings>,
}

/// Interception settings; the sets are shared between the top level and rules.
#[derive(Debug, Clone)]
pub(in crate::policy) struct Interception {
    pub(in crate::policy) default: InterceptMode,
    pub(in crate::policy) intercept_hosts: Arc<HostSet>,
    pub(in crate::policy) tunnel_hosts: Arc<HostSet>,
    pub(in crate::policy) intercept_categories: Arc<[Category]>,
    pub(in crate::policy) tunnel_categories: Arc<[Category]>,
    pub(in crate::policy) non_tls: NonTlsAction,
}

/// Feedback settings.
#[derive(Debug, Clone, Copy)]
pub(in crate::policy) struct Feedback {
    /// Bit set of [`ReportKind`]s.
    pub(in crate::policy) report: u8,
    pub(in crate::policy) anonymize_clients: bool,
    pub(in crate::policy) anonymize_users: bool,
}

pub(in crate::policy) fn report_bit(kind: ReportKind) -> u8 {
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

impl Settings {
    pub(super) fn defaults(taxonomy: &Taxonomy) -> Settings {
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
pub(super) struct Overlay<'a> {
    pub(super) security_level: Option<SecurityLevel>,
    pub(super) untested: Option<FixedAction>,
    pub(super) lists: Option<&'a RawLists>,
    pub(super) categories: Option<&'a RawCategories>,
    pub(super) interception: Option<&'a RawInterception>,
    pub(super) reputation_unavailable: Option<&'a RawReputationUnavailable>,
    pub(super) warn: Option<&'a RawWarn>,
    pub(super) feedback: Option<&'a RawFeedback>,
    pub(super) files: Option<&'a RawFiles>,
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

impl Cx<'_> {
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
    pub(super) fn settings(
        &mut self,
        parent: &Settings,
        taxonomy: &Taxonomy,
        o: Overlay<'_>,
    ) -> Settings {
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
}
