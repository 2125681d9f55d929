//! Admin policies: YAML files parsed, validated and compiled into an immutable [`Policy`],
//! evaluated by pure functions; [`crate::policyfile`] loads the files and hot-reloads them
//! behind a [`PolicyHandle`](crate::policyfile::PolicyHandle).
//!
//! # Where it sits
//! For every request (and every CONNECT) the proxy's filter (`crate::proxy::filter`)
//! canonicalizes the URL ([`crate::canon`]), builds [`RequestFacts`] and calls [`prepare`],
//! which selects the rule and matches the lists once. When a list entry or the rule's
//! action decides ([`Prepared::settled`]) no reputation is asked; otherwise the filter asks
//! the reputation cache for a verdict and finishes with [`Prepared::decide`]. ([`evaluate`]
//! is both steps at once.) For a CONNECT it then calls [`intercept`] to choose between
//! decrypting and tunnelling. The policy never does I/O on that path: the proxy takes a
//! lock-free snapshot with [`PolicyHandle::current`](crate::policyfile::PolicyHandle::current)
//! once per request, and the request
//! finishes under that snapshot even if a reload swaps in a new one meanwhile.
//!
//! # Evaluation order
//! 1. **Rule selection.** The first rule (in file order) whose `match` conditions all hold
//!    (client network, user, group, schedule, host) supplies the settings: the top-level
//!    settings with the rule's overrides. No rule matching means the top-level settings.
//! 2. **Lists.** Approved and blocked entries (a rule's own entries, then the top-level
//!    ones; host patterns, path prefixes, then regexes) are looked up; when a URL is on
//!    both lists, `lists.precedence` decides (`approved_first` by default). An approved hit
//!    allows, a blocked hit blocks; either way evaluation stops here, before any reputation
//!    question.
//! 3. **Rule action.** A matching rule with `action` decides with it.
//! 4. **Reputation unavailable.** No verdict: `reputation_unavailable.action`.
//! 5. **Risk.** The verdict's risk level against `security_level` (high blocks dangerous,
//!    highly suspicious and suspicious; medium the first two; low dangerous only): block.
//! 6. **Untested.** No reputation entry: the `untested` action.
//! 7. **Categories.** The strictest action configured for any of the verdict's categories
//!    (`block` > `warn` > `monitor` > `allow`; categories not named are allowed); a tested
//!    URL with no categories takes `categories.uncategorized`.
//! 8. Otherwise **allow**.
//!
//! `monitor` forwards like `allow` and marks the decision for reporting. Whether a decision
//! is reported follows `feedback.report` ([`Decision::report`]).
//!
//! Interception ([`intercept`]): `intercept_hosts`, then `tunnel_hosts`, then
//! `tunnel_categories`, then `intercept_categories`, then `interception.default`; the host
//! lists come first so an admin can pin one host either way whatever its category.
//!
//! # Invariants
//! - A [`Policy`] is valid by construction: only [`Policy::from_yaml`] / [`Policy::compile`]
//!   build one, and they reject unknown keys, wrong types, bad host patterns (a `*` in the
//!   top-level label), bad networks, bad or oversized regexes, unknown categories (a policy
//!   may define its own under `categories.custom`; any other unknown name is an error,
//!   because a typo in a category would silently never match), unknown time zones, bad
//!   times and duplicate rule ids.
//! - List matching works on canonical forms, so every spelling of a URL meets the same
//!   entries.
//!
//! # Cost
//! [`evaluate`] takes no lock and allocates nothing (bar one small allocation when a regex
//! entry matches, to name it). Rule selection is a linear walk over the
//! rules with the cheap conditions first; list lookups are one hash lookup per label boundary
//! of the host (see `pattern.rs`), plus one pass of each list's regex set (linear-time
//! engine) when a list has regexes. Time windows cost one UTC-to-local conversion against
//! jiff's bundled tz database, precomputed per zone for 2000-2100 at compile time.
//! Budget: 1 µs median with a 100,000-entry blocked list and 50 rules (`cargo bench --bench
//! policy`; figures in `docs/performance.md`, "Policy evaluation"); deep hosts and regex
//! hits are the dearest requests, and compiling such a policy takes a fraction of a second.
//!
//! # Failure
//! Compilation collects every problem into [`PolicyErrors`], each naming the file, line,
//! column and rule id. Evaluation cannot fail. A reload with an invalid file keeps the
//! running policy and logs why (see [`crate::policyfile`]).
//!
//! # I/O
//! None: this module is pure (schema, compilation, patterns, evaluation). Reading, watching
//! and reloading the file, and the `policy check` command, are [`crate::policyfile`]'s.
//!
//! # Configuration
//! The file format is documented field by field in `docs/policy.md`; `policies/example.yaml`
//! uses every feature.

mod compile;
mod eval;
mod pattern;
pub mod schema;

pub use compile::{
    DEFAULT_CONTINUE_SECONDS, DEFAULT_FILE_EXTENSIONS, DEFAULT_FILE_TYPES, DEFAULT_STALE_SECONDS,
    DEFAULT_TUNNEL_CATEGORIES, FileSettings, MAX_REGEX_LEN, MAX_REGEXES, MAX_RULES, Policy,
    REGEX_SIZE_LIMIT, is_security_category,
};
pub use eval::{
    Action, Decision, InterceptDecision, InterceptReason, ListHit, ListKind, Prepared, Reason,
    RequestFacts, evaluate, intercept, prepare,
};
pub use schema::{InterceptMode, NonTlsAction, Precedence, SecurityLevel};

use std::fmt;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or other origin) the policy came from.
    pub origin: String,
    /// 1-based line; 0 when the problem has no single position.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    /// The rule the problem is in, if any.
    pub rule_id: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    /// `file:line:column: [rule `id`: ]message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if let Some(id) = &self.rule_id {
            write!(f, "rule `{id}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a policy, in file order of discovery. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    /// The problems.
    pub errors: Vec<PolicyError>,
}

impl fmt::Display for PolicyErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

#[cfg(test)]
mod tests;
