//! Filtering on the request path: canonicalize, ask the policy's lists, look up
//! reputation, decide by policy, and render the block or warn page.
//!
//! # Where it sits
//! In [`super::forward`] before anything is sent upstream (plain HTTP and requests decrypted
//! from an intercepted tunnel, by their full URL), and in [`super::connect`] before the
//! upstream is dialled (CONNECT, by host, as `https://host/`). A request that is not allowed
//! becomes [`ProxyError::Filtered`], which [`super::service::error_response`] renders with
//! [`page`]: it never reaches the upstream.
//!
//! # What it costs
//! One canonicalization; one policy evaluation with an untested stand-in verdict to settle
//! list and rule hits without any lookup; then, only when reputation matters, one cache
//! lookup ([`crate::reputation`]; a round trip on a cold host) and a second evaluation.
//!
//! # How it fails
//! A URL that does not canonicalize is a 400. No reputation answer (and nothing stale within
//! the policy's window) is decided by the policy's `reputation_unavailable` action, and the
//! page says so. Pages escape everything taken from the request.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;
use super::error::ProxyError;
use super::local::escape_html;
use crate::accesslog::{Decided, RequestId};
use crate::canon::canonicalize;
use crate::model::{RiskLevel, Verdict};
use crate::policy::{Action, PolicyHandle, Reason, RequestFacts, evaluate};
use crate::reputation::{CacheState, Reputation};

/// What filtering needs at run time.
pub struct Filter {
    pub reputation: Arc<Reputation>,
    pub policy: Arc<PolicyHandle>,
    /// "Continue" on a warn page: (client address, canonical host) → allowed until.
    pub continues: moka::sync::Cache<(IpAddr, String), std::time::SystemTime>,
    /// Signs continue tokens (random per process: a restart invalidates open warn pages).
    pub secret: [u8; 32],
    /// Decision counters (served as JSON on the admin listener's `/stats` page).
    pub stats: FilterStats,
    /// User → groups for rules that match on `groups` (`auth.groups_file`).
    /// Swapped whole by [`crate::proxy::ProxyState::reload`].
    pub groups: arc_swap::ArcSwap<super::auth::Groups>,
    /// Feedback events, when `feedback.enabled`.
    pub feedback: Option<Arc<crate::feedback::Feedback>>,
}

/// Counts of decisions by action and by reputation cache state: relaxed atomics, a few
/// nanoseconds per request.
#[derive(Debug, Default)]
pub struct FilterStats {
    /// allow, monitor, warn, continue, block.
    pub actions: [std::sync::atomic::AtomicU64; 5],
    /// hit, miss, stale, unavailable, none (decided by a list or rule).
    pub cache: [std::sync::atomic::AtomicU64; 5],
    /// By reason, in the order of [`crate::policy::Reason::ALL`].
    pub reasons: [std::sync::atomic::AtomicU64; crate::policy::Reason::ALL.len()],
}

impl FilterStats {
    const ACTIONS: [&'static str; 5] = ["allow", "monitor", "warn", "continue", "block"];
    const CACHE: [&'static str; 5] = ["hit", "miss", "stale", "unavailable", "none"];

    fn count(&self, d: &Decided) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(i) = Self::ACTIONS.iter().position(|a| *a == d.action) {
            self.actions[i].fetch_add(1, Relaxed);
        }
        if let Some(i) = Self::CACHE.iter().position(|c| *c == d.cache) {
            self.cache[i].fetch_add(1, Relaxed);
        }
        if let Some(i) = crate::policy::Reason::ALL
            .iter()
            .position(|r| r.as_str() == d.reason)
        {
            self.reasons[i].fetch_add(1, Relaxed);
        }
    }

    /// `{"actions": {"allow": n, ...}, "cache": {"hit": n, ...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let map = |names: &[&str], v: &[std::sync::atomic::AtomicU64]| {
            names
                .iter()
                .zip(v)
                .map(|(n, c)| ((*n).to_owned(), serde_json::Value::from(c.load(Relaxed))))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "actions": map(&Self::ACTIONS, &self.actions),
            "cache": map(&Self::CACHE, &self.cache),
            "reasons": map(
                &crate::policy::Reason::ALL.map(crate::policy::Reason::as_str),
                &self.reasons
            ),
        })
    }
}

/// The path, on any host, that a warn page's "continue" link points at.
pub const CONTINUE_PATH: &str = "/.webrep/continue";

impl Filter {
    /// A filter over `reputation` and `policy`, with a fresh signing secret.
    pub fn new(reputation: Arc<Reputation>, policy: Arc<PolicyHandle>) -> Filter {
        use rand::RngCore as _;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Filter {
            reputation,
            policy,
            continues: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(7 * 86_400))
                .build(),
            secret,
            stats: FilterStats::default(),
            groups: arc_swap::ArcSwap::from_pointee(Default::default()),
            feedback: None,
        }
    }

    fn sign(&self, payload: &str) -> String {
        use base64::Engine as _;
        use hmac::{KeyInit as _, Mac as _};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A continue token for `client` on `host`, valid for `valid`, returning to `url`.
    fn continue_token(
        &self,
        client: IpAddr,
        host: &str,
        url: &str,
        valid: std::time::Duration,
    ) -> String {
        use base64::Engine as _;
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + valid.as_secs();
        let payload = format!("{until}|{client}|{host}|{url}");
        let sig = self.sign(&payload);
        format!(
            "{}.{sig}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
        )
    }

    /// Handles a request for [`CONTINUE_PATH`] on `host`: a valid token (signed by us, for
    /// this client and host, not expired) lets the client past warn pages on the host until
    /// the token's time and answers 303 to the URL it was warned about; anything else is 403.
    pub fn continue_request(
        &self,
        query: Option<&str>,
        client: IpAddr,
        host: &str,
    ) -> Response<ProxyBody> {
        use base64::Engine as _;
        let refused = |why: &'static str| {
            let mut r = Response::new(ProxyBody::full(format!("webrep: {why}\n")));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        let Some(token) = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
        else {
            return refused("no continue token");
        };
        let Some((payload64, sig)) = token.split_once('.') else {
            return refused("malformed continue token");
        };
        let Some(payload) = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return refused("malformed continue token");
        };
        // Constant-time comparison of the signature.
        let want = self.sign(&payload);
        if want.len() != sig.len()
            || want
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                != 0
        {
            return refused("invalid continue token");
        }
        let mut parts = payload.splitn(4, '|');
        let (Some(until), Some(who), Some(for_host), Some(url)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return refused("malformed continue token");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Ok(until) = until.parse::<u64>() else {
            return refused("malformed continue token");
        };
        if until <= now {
            return refused("this continue link has expired; reload the page");
        }
        if who != client.to_string() || !for_host.eq_ignore_ascii_case(host) {
            return refused("this continue link is for another client or site");
        }
        self.continues.insert(
            (client, for_host.to_owned()),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(until),
        );
        tracing::info!(client.addr = %client, host = for_host, "continued after a warn page");
        self.report_continue(client, url);
        let mut r = Response::new(ProxyBody::empty());
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(url) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// The groups of `user` (none without a user or a groups file).
    fn groups_of(&self, user: Option<&str>) -> Option<Arc<[String]>> {
        user.and_then(|u| self.groups.load().get(u).cloned())
    }

    /// Whether `client` continued past a warning for `host` and that is still valid.
    fn continued(&self, client: IpAddr, host: &str) -> bool {
        self.continues
            .get(&(client, host.to_owned()))
            .is_some_and(|until| until > std::time::SystemTime::now())
    }
}

/// How the client wants its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFormat {
    Html,
    Json,
    Text,
}

impl PageFormat {
    /// By `Accept`: HTML for browsers, JSON when asked for, plain text otherwise.
    pub fn from_headers(h: &HeaderMap) -> PageFormat {
        let accept = h
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains("text/html") {
            PageFormat::Html
        } else if accept.contains("application/json") {
            PageFormat::Json
        } else {
            PageFormat::Text
        }
    }
}

/// Why a request was not forwarded: everything the page and the log show.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub action: Action,
    pub reason: Reason,
    /// The URL as the client asked for it (shown escaped).
    pub url: String,
    pub rule_id: Option<String>,
    pub list_entry: Option<String>,
    pub category: Option<String>,
    pub risk: Option<RiskLevel>,
    pub score: Option<u8>,
    /// The reputation cache's state; `None` when no lookup was made (a list or rule hit).
    pub cache: Option<CacheState>,
    /// The reputation source that answered.
    pub source: Option<Arc<str>>,
    pub format: PageFormat,
    /// For a warning: the path (on the warned site) of the "continue" link.
    pub continue_link: Option<String>,
    /// For a file verdict: what is known of the file (verdict, name, SHA-256).
    pub detail: Option<String>,
    /// What was decided on (for the bump-to-block decision of a CONNECT).
    pub canonical: crate::canon::CanonicalUrl,
    pub verdict: Option<Verdict>,
    /// With feedback on: the path (on the same site) of the "report a mistake" link.
    pub report_link: Option<String>,
}

impl Refusal {
    /// The decision, for the access log.
    pub fn decided(&self) -> Decided {
        Decided {
            action: self.action.as_str(),
            reason: self.reason.as_str(),
            rule: self.rule_id.as_deref().map(Into::into),
            cache: self.cache.map_or("none", CacheState::as_str),
            source: self.source.clone(),
            risk: self.risk.map(RiskLevel::as_str),
            score: self.score,
        }
    }

    /// The reason in plain words.
    pub fn explanation(&self) -> String {
        match self.reason {
            Reason::Blocked => format!(
                "the address is on the blocked list ({})",
                self.list_entry.as_deref().unwrap_or("?")
            ),
            Reason::Rule => format!(
                "policy rule {} applies to this request",
                self.rule_id.as_deref().unwrap_or("?")
            ),
            Reason::ReputationUnavailable => {
                "the reputation service could not be reached, and the policy does not allow \
                 unchecked sites"
                    .to_owned()
            }
            Reason::Risk => format!(
                "the site's reputation is {} (score {})",
                self.risk.map_or("unknown", risk_words),
                self.score
                    .map_or_else(|| "none".to_owned(), |s| s.to_string())
            ),
            Reason::Untested => "the site has no reputation yet (untested)".to_owned(),
            Reason::Category => format!(
                "the site is in the category {}",
                self.category.as_deref().unwrap_or("?")
            ),
            Reason::Uncategorized => "the site has no category".to_owned(),
            Reason::Approved | Reason::Allowed => "allowed".to_owned(),
            Reason::File => format!(
                "the downloaded file is known as {}",
                self.detail.as_deref().unwrap_or("bad")
            ),
        }
    }
}

fn risk_words(r: RiskLevel) -> &'static str {
    match r {
        RiskLevel::Dangerous => "dangerous",
        RiskLevel::HighlySuspicious => "highly suspicious",
        RiskLevel::Suspicious => "suspicious",
        RiskLevel::Safe => "safe",
        RiskLevel::Untested => "untested",
    }
}

impl Filter {
    /// Decides a request for `url` (as the client wrote it): `Ok(())` to forward, or the
    /// [`ProxyError::Filtered`] to answer with.
    ///
    /// # Errors
    /// [`ProxyError::BadRequest`] for a URL that does not canonicalize,
    /// [`ProxyError::Filtered`] for a request the policy does not forward.
    pub async fn check(
        &self,
        url: &str,
        client: IpAddr,
        user: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Allowed, ProxyError> {
        let canonical = canonicalize(url)
            .map_err(|_| ProxyError::BadRequest("the URL cannot be checked (not a valid URL)"))?;
        let policy = self.policy.snapshot();
        let groups = self.groups_of(user);
        let facts = RequestFacts {
            url: &canonical,
            client,
            user,
            groups: groups.as_deref().unwrap_or(&[]),
            now: jiff::Timestamp::now(),
        };
        let (decision, verdict, cache, source) = self.decide(&policy, &facts).await;
        let score = verdict.as_ref().and_then(|v| v.score).map(|s| s.get());
        let continued = decision.action == Action::Warn && self.continued(client, canonical.host());
        let ticket = self.feedback.as_ref().and_then(|fb| {
            feedback_event(
                fb,
                &decision,
                continued,
                &canonical,
                verdict.as_ref(),
                cache.unwrap_or(CacheState::Hit),
                source.as_deref(),
                client,
                user,
            )
        });
        if decision.action.forwards() || continued {
            let decided = Arc::new(Decided {
                action: if continued {
                    "continue"
                } else {
                    decision.action.as_str()
                },
                reason: decision.reason.as_str(),
                rule: decision.rule_id.map(Into::into),
                cache: cache.map_or("none", CacheState::as_str),
                source,
                risk: decision.risk.map(RiskLevel::as_str),
                score,
            });
            self.stats.count(&decided);
            return Ok(Allowed {
                canonical,
                verdict,
                decided,
                anonymize: (decision.anonymize_clients, decision.anonymize_users),
                files: decision.files.clone(),
            });
        }
        let continue_link = (decision.action == Action::Warn).then(|| {
            let token = self.continue_token(client, canonical.host(), url, decision.warn_continue);
            format!("{CONTINUE_PATH}?token={token}")
        });
        let refusal = Refusal {
            action: decision.action,
            reason: decision.reason,
            url: url.to_owned(),
            rule_id: decision.rule_id.map(str::to_owned),
            list_entry: decision.list_hit.map(|h| h.entry.to_owned()),
            category: decision
                .category
                .map(|c| c.as_str().to_owned())
                .or_else(|| {
                    verdict
                        .as_ref()
                        .and_then(|v| v.categories.first())
                        .map(|c| c.as_str().to_owned())
                }),
            risk: decision.risk,
            score,
            cache,
            source,
            format: PageFormat::from_headers(headers),
            continue_link,
            detail: None,
            report_link: ticket.map(|t| format!("{}?ticket={t}", crate::feedback::REPORT_PATH)),
            canonical,
            verdict,
        };
        self.stats.count(&refusal.decided());
        Err(ProxyError::Filtered(Box::new(refusal)))
    }
}

/// What an allowed request was decided on (for the interception decision of a CONNECT).
#[derive(Debug)]
pub struct Allowed {
    pub canonical: crate::canon::CanonicalUrl,
    /// `None` when decided by a list or rule without a lookup, or when no answer came.
    pub verdict: Option<Verdict>,
    /// The decision, for the access log.
    pub decided: Arc<Decided>,
    /// The policy's `feedback.anonymize_*` for this request (for later events about it).
    pub anonymize: (bool, bool),
    /// The policy's `files:` settings for this request (which downloads are scanned).
    pub files: Arc<crate::policy::FileSettings>,
}

impl Filter {
    /// How a CONNECT to `canonical` (`https://host/`) is handled inside the tunnel, by the
    /// policy's `interception` settings (hosts, then categories of the verdict, then the
    /// default): decrypted or relayed untouched, and what to do with bytes that are not TLS.
    pub fn interception(
        &self,
        canonical: &crate::canon::CanonicalUrl,
        verdict: Option<&Verdict>,
        client: IpAddr,
        user: Option<&str>,
    ) -> Interception {
        let policy = self.policy.snapshot();
        let groups = self.groups_of(user);
        let facts = RequestFacts {
            url: canonical,
            client,
            user,
            groups: groups.as_deref().unwrap_or(&[]),
            now: jiff::Timestamp::now(),
        };
        let d = crate::policy::intercept(&policy, &facts, verdict);
        Interception {
            intercept: d.mode == crate::policy::InterceptMode::Intercept,
            non_tls: match d.non_tls {
                crate::policy::NonTlsAction::Allow => crate::config::NonTlsAction::Tunnel,
                crate::policy::NonTlsAction::Block => crate::config::NonTlsAction::Refuse,
            },
        }
    }
}

/// A decision and what it rested on: the verdict (`None` for list and rule hits, or no
/// answer), the cache state (`None` when no lookup was made) and the answering source.
type DecisionBasis<'p> = (
    crate::policy::Decision<'p>,
    Option<Verdict>,
    Option<CacheState>,
    Option<Arc<str>>,
);

impl Filter {
    /// The policy's decision for `facts`: lists and rule actions first, without any lookup;
    /// otherwise the reputation (stale answers past the policy's window count as none).
    /// Shared by [`Filter::check`] and [`Filter::explain`], so both decide alike.
    async fn decide<'p>(
        &self,
        policy: &'p crate::policy::Policy,
        facts: &RequestFacts<'_>,
    ) -> DecisionBasis<'p> {
        let prepared = crate::policy::prepare(policy, facts);
        if let Some(d) = prepared.settled() {
            return (d, None, None, None);
        }
        let lookup = self.reputation.lookup(facts.url).await;
        let mut verdict = lookup.verdict;
        if lookup.cache == CacheState::Stale
            && lookup
                .stale_for
                .is_some_and(|d| d > prepared.stale_window())
        {
            verdict = None;
        }
        (
            prepared.decide(verdict.as_ref()),
            verdict,
            Some(lookup.cache),
            lookup.source,
        )
    }

    /// What the proxy would do with a request for `url` from `client` (and `user`) at `at`
    /// (default now: rule schedules depend on it; the reputation is today's), without doing
    /// it: the decision, the rule and list entry, the reputation and whether it
    /// was cached, and whether a CONNECT to the host would be intercepted. No counters, no
    /// feedback event. For the admin API.
    ///
    /// # Errors
    /// A URL that does not canonicalize.
    pub async fn explain(
        &self,
        url: &str,
        client: IpAddr,
        user: Option<&str>,
        at: Option<jiff::Timestamp>,
    ) -> Result<serde_json::Value, String> {
        let canonical = canonicalize(url).map_err(|e| format!("not a URL: {e}"))?;
        let policy = self.policy.snapshot();
        let now = at.unwrap_or_else(jiff::Timestamp::now);
        let groups = self.groups_of(user);
        let facts = RequestFacts {
            url: &canonical,
            client,
            user,
            groups: groups.as_deref().unwrap_or(&[]),
            now,
        };
        let (d, verdict, cache, source) = self.decide(&policy, &facts).await;
        let continued = d.action == Action::Warn && self.continued(client, canonical.host());
        let i = crate::policy::intercept(&policy, &facts, verdict.as_ref());
        Ok(serde_json::json!({
            "url": url,
            "canonical": canonical.as_str(),
            "client": client.to_string(),
            "user": user,
            "groups": groups.as_deref().unwrap_or(&[]),
            "action": d.action.as_str(),
            "reason": d.reason.as_str(),
            "continued": continued,
            "rule": d.rule_id,
            "list_entry": d.list_hit.map(|h| h.entry),
            "category": d.category.map(|c| c.as_str()),
            "risk": d.risk.map(RiskLevel::as_str),
            "score": verdict.as_ref().and_then(|v| v.score).map(|s| s.get()),
            "categories": verdict.as_ref().map(|v| v.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
            "cache": cache.map_or("none", CacheState::as_str),
            "source": source.as_deref(),
            "intercept": i.mode == crate::policy::InterceptMode::Intercept,
            "time": now.to_string(),
            "policy_generation": policy.generation(),
        }))
    }

    /// The refusal (block page) for a download whose file verdict blocks it.
    pub fn file_refusal(
        canonical: crate::canon::CanonicalUrl,
        url: String,
        d: &super::filescan::FileDecision,
        format: PageFormat,
    ) -> Refusal {
        Refusal {
            action: Action::Block,
            reason: if d.answer.is_none() {
                Reason::ReputationUnavailable
            } else {
                Reason::File
            },
            url,
            rule_id: None,
            list_entry: None,
            category: None,
            risk: None,
            score: None,
            cache: Some(d.cache),
            source: d.source.clone(),
            format,
            continue_link: None,
            report_link: None,
            detail: Some(d.describe()),
            canonical,
            verdict: None,
        }
    }
}

/// The policy's interception decision for one CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interception {
    /// Decrypt (true) or relay untouched.
    pub intercept: bool,
    /// Bytes that are neither TLS nor HTTP after the CONNECT.
    pub non_tls: crate::config::NonTlsAction,
}

/// The block or warn page for a refusal: 403, in the client's format, with the ticket id
/// (the request id, also in the access log).
pub fn page(r: &Refusal, ticket: RequestId) -> Response<ProxyBody> {
    let verb = if r.action == Action::Warn {
        "warned about"
    } else {
        "blocked"
    };
    let explanation = r.explanation();
    let (body, ctype) = match r.format {
        PageFormat::Json => (
            serde_json::json!({
                "action": r.action.as_str(),
                "reason": r.reason.as_str(),
                "explanation": explanation,
                "url": r.url,
                "rule": r.rule_id,
                "list_entry": r.list_entry,
                "category": r.category,
                "risk": r.risk.map(RiskLevel::as_str),
                "score": r.score,
                "ticket": ticket.to_string(),
                "continue": r.continue_link,
                "report": r.report_link,
            })
            .to_string(),
            "application/json",
        ),
        PageFormat::Text => (
            format!(
                "webrep {verb} this request: {explanation}.\nURL: {}\nrule: {}\nticket: {ticket}\n{}",
                r.url.escape_debug(),
                r.rule_id.as_deref().unwrap_or("-"),
                r.report_link
                    .as_deref()
                    .map_or_else(String::new, |l| format!("report a mistake: {l}\n")),
            ),
            "text/plain; charset=utf-8",
        ),
        PageFormat::Html => (
            html_page(r, verb, &explanation, ticket),
            "text/html; charset=utf-8",
        ),
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn html_page(r: &Refusal, verb: &str, explanation: &str, ticket: RequestId) -> String {
    let title = if r.action == Action::Warn {
        "Warning: this site may be unsafe"
    } else {
        "This site is blocked"
    };
    let mut facts = String::new();
    let mut row = |k: &str, v: &str| {
        facts.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape_html(k),
            escape_html(v)
        ));
    };
    row("Address", &r.url);
    row("Reason", explanation);
    if let Some(c) = &r.category {
        row("Category", c);
    }
    if let Some(risk) = r.risk {
        row(
            "Reputation",
            &format!(
                "{}{}",
                risk_words(risk),
                r.score
                    .map_or_else(String::new, |s| format!(" (score {s})"))
            ),
        );
    }
    if let Some(rule) = &r.rule_id {
        row("Policy rule", rule);
    }
    row("Ticket", &ticket.to_string());
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n<p>webrep {verb} this request: {}.</p>\n<table>\n{facts}</table>\n\
         <p><a href=\"javascript:history.back()\">Go back</a>{}</p>\n\
         <p>If you think this is a mistake, {}tell your administrator the ticket number {ticket}.</p>\n\
         </body></html>\n",
        escape_html(explanation),
        r.continue_link
            .as_deref()
            .map_or_else(String::new, |l| format!(
                " &middot; <a href=\"{}\">Continue anyway</a>",
                escape_html(l)
            )),
        r.report_link
            .as_deref()
            .map_or_else(String::new, |l| format!(
                "<a href=\"{}\">report it</a> or ",
                escape_html(l)
            ))
    )
}

impl Filter {
    /// With feedback on and the policy reporting continues: a `continued` event for `url`.
    fn report_continue(&self, client: IpAddr, url: &str) {
        let Some(fb) = &self.feedback else { return };
        let Ok(canonical) = canonicalize(url) else {
            return;
        };
        let policy = self.policy.snapshot();
        let facts = RequestFacts {
            url: &canonical,
            client,
            user: None,
            groups: &[],
            now: jiff::Timestamp::now(),
        };
        if !policy.reports_continue(&facts) {
            return;
        }
        let decision = evaluate(&policy, &facts, None);
        let mut e = fb.event(crate::api::events::Kind::Continued);
        e.client = Some(fb.pseudonym(&client.to_string(), decision.anonymize_clients));
        e.url = Some(canonical.as_str().to_owned());
        e.host = Some(canonical.host().to_owned());
        e.action = Some(Action::Allow.as_str().to_owned());
        fb.emit(e);
    }
}

/// The feedback event of a decision, when the policy reports it (a block or warn decision is
/// also remembered for a user report, reported or not). Returns the ticket for the page's
/// report link on block and warn decisions.
#[allow(clippy::too_many_arguments)]
fn feedback_event(
    fb: &crate::feedback::Feedback,
    decision: &crate::policy::Decision<'_>,
    continued: bool,
    canonical: &crate::canon::CanonicalUrl,
    verdict: Option<&Verdict>,
    cache: CacheState,
    source: Option<&str>,
    client: IpAddr,
    user: Option<&str>,
) -> Option<String> {
    use crate::api::events::Kind;
    let kind = match decision.action {
        Action::Block => Kind::Blocked,
        // The continue link reported it already.
        Action::Warn if continued => return None,
        Action::Warn => Kind::Warned,
        Action::Monitor => Kind::Monitored,
        Action::Allow => match decision.reason {
            Reason::Untested => Kind::Untested,
            Reason::ReputationUnavailable => Kind::ReputationUnavailable,
            _ => Kind::Allowed,
        },
    };
    let refused = matches!(kind, Kind::Blocked | Kind::Warned);
    if !decision.report && !refused {
        return None;
    }
    let mut e = fb.event(kind);
    e.client = Some(fb.pseudonym(&client.to_string(), decision.anonymize_clients));
    e.user = user.map(|u| fb.pseudonym(u, decision.anonymize_users));
    e.url = Some(canonical.as_str().to_owned());
    e.host = Some(canonical.host().to_owned());
    e.action = Some(decision.action.as_str().to_owned());
    e.reason = Some(decision.reason.as_str().to_owned());
    e.risk = decision.risk.map(|r| r.as_str().to_owned());
    e.rule = decision.rule_id.map(str::to_owned);
    e.list_hit = decision.list_hit.map(|h| h.entry.to_owned());
    e.cache = Some(cache.as_str().to_owned());
    e.source = source.map(str::to_owned);
    if let Some(c) = decision.category {
        e.categories.push(c.as_str().to_owned());
    }
    if let Some(v) = verdict {
        e.score = v.score.map(|s| s.get());
        for c in &v.categories {
            if !e.categories.iter().any(|x| x == c.as_str()) {
                e.categories.push(c.as_str().to_owned());
            }
        }
    }
    let ticket = refused.then(|| {
        fb.remember_ticket(client, &e);
        e.id.clone()
    });
    if decision.report {
        fb.emit(e);
    }
    ticket
}
