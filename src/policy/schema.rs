//! The serde mirror of a policy file: plain data, no logic, no defaults applied.
//!
//! Every field is optional here so that one set of types serves the top level (where a
//! missing field takes its default in the compiler) and the rules (where a missing field
//! inherits the top-level value). Unknown keys are errors (`deny_unknown_fields`). Values that
//! need checking after parsing (hosts, networks, regexes, categories, times) are
//! [`Located`], so the compiler can report their line and column. The field-by-field reference
//! is `docs/policy.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::yaml::Located;

/// A whole policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Free text, shown by `webrep policy check`.
    pub description: Option<String>,
    /// Which risk levels are blocked. Default `medium`.
    pub security_level: Option<SecurityLevel>,
    /// The action for URLs the reputation service has no entry for. Default `allow`.
    pub untested: Option<FixedAction>,
    /// Approved and blocked lists.
    pub lists: Option<RawLists>,
    /// Category actions and admin-defined categories.
    pub categories: Option<RawCategories>,
    /// Which CONNECT tunnels are decrypted.
    pub interception: Option<RawInterception>,
    /// What to do when no reputation answer is available.
    pub reputation_unavailable: Option<RawReputationUnavailable>,
    /// Warn page settings.
    pub warn: Option<RawWarn>,
    /// Which decisions are reported as feedback events.
    pub feedback: Option<RawFeedback>,
    /// Which downloads are hashed and looked up, and what a file verdict does.
    pub files: Option<RawFiles>,
    /// First-match rules.
    pub rules: Option<Vec<RawRule>>,
}

/// `security_level`: which risk bands are blocked (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityLevel {
    /// Blocks dangerous, highly suspicious and suspicious.
    High,
    /// Blocks dangerous and highly suspicious.
    Medium,
    /// Blocks dangerous only.
    Low,
}

/// An action where `monitor` makes no sense: `untested`, `reputation_unavailable.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixedAction {
    Allow,
    Warn,
    Block,
}

/// A category or rule action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAction {
    Allow,
    Monitor,
    Warn,
    Block,
}

/// `lists.precedence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    /// An approved hit wins over a blocked hit (the default).
    ApprovedFirst,
    /// A blocked hit wins over an approved hit.
    BlockedFirst,
}

/// `lists:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLists {
    /// Which list wins when a URL is on both.
    pub precedence: Option<Precedence>,
    /// Host patterns and path prefixes that are always allowed.
    pub approved: Option<Vec<Located<String>>>,
    /// Host patterns and path prefixes that are always blocked.
    pub blocked: Option<Vec<Located<String>>>,
    /// Regular expressions over the canonical URL that are always allowed.
    pub approved_regex: Option<Vec<Located<String>>>,
    /// Regular expressions over the canonical URL that are always blocked.
    pub blocked_regex: Option<Vec<Located<String>>>,
}

/// `categories:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCategories {
    /// Admin-defined categories (top level only).
    pub custom: Option<Vec<Located<String>>>,
    /// Category name to action; categories not named are allowed.
    pub actions: Option<BTreeMap<String, Located<RawAction>>>,
    /// The action for a tested URL with no category. Default `allow`.
    pub uncategorized: Option<RawAction>,
}

/// `interception.mode` and `interception.default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterceptMode {
    /// Decrypt (TLS interception with a minted certificate) and filter every inner request.
    Intercept,
    /// Relay the bytes untouched; only the host-level decision applies.
    Tunnel,
}

/// `interception.non_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonTlsAction {
    /// Relay non-TLS bytes inside a CONNECT tunnel.
    Allow,
    /// Close the tunnel (the default).
    Block,
}

/// `interception:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterception {
    /// What happens to a CONNECT that no host or category below names. Default `intercept`.
    pub default: Option<InterceptMode>,
    /// Host patterns always decrypted.
    pub intercept_hosts: Option<Vec<Located<String>>>,
    /// Host patterns never decrypted (pinned apps, banks).
    pub tunnel_hosts: Option<Vec<Located<String>>>,
    /// Categories always decrypted.
    pub intercept_categories: Option<Vec<Located<String>>>,
    /// Categories never decrypted. Default `[finance, health]`.
    pub tunnel_categories: Option<Vec<Located<String>>>,
    /// Non-TLS bytes after CONNECT. Default `block`.
    pub non_tls: Option<NonTlsAction>,
}

/// `reputation_unavailable:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReputationUnavailable {
    /// The action when no source answered and no stale answer may be served. Default `allow`.
    pub action: Option<FixedAction>,
    /// How long past its TTL a cached answer may still be served, in seconds. Default 3600.
    pub stale_seconds: Option<Located<u64>>,
}

/// `warn:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWarn {
    /// How long a user's "continue" on a warn page stays valid, in seconds. Default 3600.
    pub continue_seconds: Option<Located<u64>>,
}

/// A kind of decision that can be reported as a feedback event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Block,
    Warn,
    Continue,
    Monitor,
    Allow,
    Untested,
    ReputationUnavailable,
}

/// `feedback:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedback {
    /// Which decisions are reported. Default
    /// `[block, warn, continue, monitor, untested, reputation_unavailable]`.
    pub report: Option<Vec<ReportKind>>,
    /// Replace client addresses by a keyed hash in events. Default `false`.
    pub anonymize_clients: Option<bool>,
    /// Replace user names by a keyed hash in events. Default `false`.
    pub anonymize_users: Option<bool>,
}

/// `files:` (file reputation): which responses are hashed (SHA-256, while they stream) and
/// looked up by hash, and what each verdict does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    /// Hash and look up the downloads selected below. Default `true`.
    pub scan: Option<bool>,
    /// Media types that select a response: exact (`application/zip`) or `type/*`.
    /// Default: executables, installers, archives, disk images, scripts, PDF and office
    /// documents (see docs/policy.md).
    pub content_types: Option<Vec<Located<String>>>,
    /// File name extensions (of the URL path or the `Content-Disposition` file name), without
    /// the dot, case-insensitive. Default: `exe dll msi scr bat cmd ps1 vbs js jar apk dmg
    /// pkg deb rpm iso img zip rar 7z gz tgz bz2 xz cab pdf doc docm xls xlsm ppt pptm`.
    pub extensions: Option<Vec<Located<String>>>,
    /// Select every `Content-Disposition: attachment` response. Default `true`.
    pub attachments: Option<bool>,
    /// Responses whose `Content-Length` is smaller are not scanned. Default 1.
    pub min_bytes: Option<u64>,
    /// Responses whose `Content-Length` is larger are not scanned; 0 for no limit.
    /// Default 0.
    pub max_bytes: Option<u64>,
    /// What a `malicious` verdict does: `block`, `monitor` or `allow`. Default `block`.
    pub malicious: Option<Located<RawAction>>,
    /// What a `suspicious` verdict does: `block`, `monitor` or `allow`. Default `monitor`.
    pub suspicious: Option<Located<RawAction>>,
    /// No answer from any reputation source: `allow` or `block`. Default `allow`.
    pub unavailable: Option<Located<RawAction>>,
}

/// One entry of `rules:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Stable, unique identifier, reported with every decision the rule makes.
    pub id: Located<String>,
    /// Free text.
    pub description: Option<String>,
    /// Conditions; all given ones must hold. None at all matches every request.
    #[serde(rename = "match")]
    pub when: Option<RawMatch>,
    /// Decide matching requests outright (after the lists).
    pub action: Option<Located<RawAction>>,
    pub security_level: Option<SecurityLevel>,
    pub untested: Option<FixedAction>,
    pub lists: Option<RawLists>,
    pub categories: Option<RawCategories>,
    pub interception: Option<RawInterception>,
    pub reputation_unavailable: Option<RawReputationUnavailable>,
    pub warn: Option<RawWarn>,
    pub feedback: Option<RawFeedback>,
    pub files: Option<RawFiles>,
}

/// `rules[].match:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Client networks (CIDR or single addresses).
    pub clients: Option<Vec<Located<String>>>,
    /// Authenticated user names (exact, case-sensitive).
    pub users: Option<Vec<Located<String>>>,
    /// Group names (exact, case-sensitive).
    pub groups: Option<Vec<Located<String>>>,
    /// Host patterns (as in the lists, without paths).
    pub hosts: Option<Vec<Located<String>>>,
    /// Weekly time windows.
    pub schedule: Option<RawSchedule>,
}

/// `rules[].match.schedule:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// IANA time zone name, e.g. `Europe/Berlin`.
    pub time_zone: Located<String>,
    /// The windows; the schedule matches when any one does.
    pub windows: Vec<RawWindow>,
}

/// One weekly window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Days the window starts on: `mon`..`sun`, or ranges such as `mon-fri`.
    pub days: Vec<Located<String>>,
    /// Local start time, `HH:MM`.
    pub from: Located<String>,
    /// Local end time, `HH:MM` (`24:00` for midnight); earlier than `from` runs past midnight.
    pub to: Located<String>,
}
