//! The block and warn pages: what a refused request is answered with, in the client's format
//! (HTML, JSON or plain text by `Accept`), always 403 and `no-store`.
//!
//! Rendered by [`crate::proxy::service::error_response`] for a
//! [`ProxyError::Filtered`](crate::proxy::error::ProxyError::Filtered), so a refused request
//! never reaches the upstream. Rendering is a few string formats; it cannot fail. Everything
//! taken from the request is escaped.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::accesslog::{Decided, RequestId};
use crate::model::{RiskLevel, Verdict};
use crate::policy::{Action, Reason};
use crate::proxy::body::ProxyBody;
use crate::proxy::local::escape_html;
use crate::reputation::CacheState;

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

    /// The refusal (block page) for a download whose file verdict blocks it.
    pub fn for_file(
        canonical: crate::canon::CanonicalUrl,
        url: String,
        d: &crate::proxy::filescan::FileDecision,
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

fn risk_words(r: RiskLevel) -> &'static str {
    match r {
        RiskLevel::Dangerous => "dangerous",
        RiskLevel::HighlySuspicious => "highly suspicious",
        RiskLevel::Suspicious => "suspicious",
        RiskLevel::Safe => "safe",
        RiskLevel::Untested => "untested",
    }
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
