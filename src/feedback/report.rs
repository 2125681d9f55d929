//! "Report a mistake", the feedback side: a client names a ticket it was shown on a block or
//! warn page, and a `user_report` event is recorded for it, carrying what the ticket's
//! decision said and the client's comment. A ticket takes at most [`REPORTS_PER_TICKET`]
//! reports and only from the client it was shown to. The page and its form are the proxy's
//! ([`crate::proxy::report`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Feedback, Ticket};
use crate::accesslog::RequestId;
use crate::api::events::{self, Kind};

/// Reports accepted per ticket.
pub const REPORTS_PER_TICKET: u32 = 3;

/// Why a report cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRefusal {
    /// No ticket named.
    Missing,
    /// Unknown, expired, or shown to another client.
    Unknown(String),
    /// The ticket took its [`REPORTS_PER_TICKET`] reports.
    AlreadyReported,
}

impl Feedback {
    /// The ticket `id`, when `client` was shown it and may report it.
    ///
    /// # Errors
    /// [`ReportRefusal::Missing`] or [`ReportRefusal::Unknown`].
    pub fn reportable(&self, id: Option<String>, client: IpAddr) -> Result<String, ReportRefusal> {
        self.ticket_of(id, client).map(|(id, _)| id)
    }

    /// Records a `user_report` for ticket `id` from `client`, with `comment` (cut to the
    /// schema's limit); the event's id is `request`, the request that sent the report.
    /// Returns the ticket's id.
    ///
    /// # Errors
    /// [`ReportRefusal`].
    pub fn report(
        &self,
        id: Option<String>,
        comment: Option<String>,
        client: IpAddr,
        request: RequestId,
    ) -> Result<String, ReportRefusal> {
        let (id, t) = self.ticket_of(id, client)?;
        if t.reports.fetch_add(1, Ordering::Relaxed) >= REPORTS_PER_TICKET {
            return Err(ReportRefusal::AlreadyReported);
        }
        let mut e = self.event(request.to_string(), Kind::UserReport);
        e.ticket = Some(id.clone());
        e.comment = comment.map(|c| c.chars().take(events::MAX_COMMENT).collect());
        let from = &t.event;
        e.client = from.client.clone();
        e.user = from.user.clone();
        e.url = from.url.clone();
        e.host = from.host.clone();
        e.action = from.action.clone();
        e.reason = from.reason.clone();
        e.risk = from.risk.clone();
        e.score = from.score;
        e.categories = from.categories.clone();
        e.rule = from.rule.clone();
        e.list_hit = from.list_hit.clone();
        self.emit(e);
        tracing::info!(ticket = %id, client.addr = %client, "user reported a mistake");
        Ok(id)
    }

    /// The ticket named `id` when `client` was shown it.
    fn ticket_of(
        &self,
        id: Option<String>,
        client: IpAddr,
    ) -> Result<(String, Arc<Ticket>), ReportRefusal> {
        let id = id.ok_or(ReportRefusal::Missing)?;
        match self.tickets.get(&id).filter(|t| t.client == client) {
            Some(t) => Ok((id, t)),
            None => Err(ReportRefusal::Unknown(id)),
        }
    }
}
