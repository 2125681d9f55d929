//! "Report a mistake", the page behind the link of block and warn pages
//! ([`crate::feedback::REPORT_PATH`], on any host, through the proxy): one of the proxy's
//! own pages ([`super::own`]).
//!
//! `GET ?ticket=T` shows a form for a ticket this client was shown (nothing is recorded: a
//! link that a browser or a scanner follows changes nothing); submitting it sends
//! `POST ticket=T&comment=...` in the body, which records one `user_report` event
//! ([`Feedback::report`]). The comment travels in the body so that it never lands in access
//! logs (ours or another proxy's), which keep URLs. The body is read with a size limit
//! ([`MAX_FORM_BYTES`]) and a deadline ([`FORM_TIMEOUT`]); a bad form is a 400 page, never an
//! error of the connection.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};

use super::body::ProxyBody;
use super::local::escape_html;
use crate::accesslog::RequestId;
use crate::api::events;
use crate::feedback::{Feedback, REPORT_PATH, ReportRefusal};

/// The largest form body taken: the ticket and a comment of [`events::MAX_COMMENT`]
/// characters, each of which may be sent as up to 12 bytes (`%XX` for 4 UTF-8 bytes).
pub const MAX_FORM_BYTES: usize = 256 + events::MAX_COMMENT * 12;

/// How long the client may take to send the form body.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers the request `id` for [`REPORT_PATH`] from `client`: the form (GET, HEAD), the
/// report (POST; its event carries `id`), else 405.
pub async fn serve<B>(
    feedback: &Feedback,
    req: Request<B>,
    client: IpAddr,
    id: RequestId,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match *req.method() {
        Method::GET | Method::HEAD => form(feedback, req.uri().query(), client),
        Method::POST => match read_form(req.into_body()).await {
            Ok(text) => {
                let fields = Fields::parse(&text);
                match feedback.report(fields.ticket, fields.comment, client, id) {
                    Ok(ticket) => thanks(&ticket),
                    Err(refusal) => refusal_page(&refusal),
                }
            }
            Err(why) => page(
                StatusCode::BAD_REQUEST,
                "Not sent",
                format!("<p>{why}</p>\n"),
            ),
        },
        _ => {
            let mut r = page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                String::new(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            r
        }
    }
}

/// The report form for the ticket in `query` (a comment there is ignored, never recorded).
fn form(feedback: &Feedback, query: Option<&str>, client: IpAddr) -> Response<ProxyBody> {
    let fields = Fields::parse(query.unwrap_or(""));
    let id = match feedback.reportable(fields.ticket, client) {
        Ok(id) => id,
        Err(refusal) => return refusal_page(&refusal),
    };
    page(
        StatusCode::OK,
        "Report a mistake",
        format!(
            "<p>Tell the administrator that ticket {id} should not have been refused.</p>\n\
             <form method=\"post\" action=\"{REPORT_PATH}\">\n\
             <input type=\"hidden\" name=\"ticket\" value=\"{id}\">\n\
             <p><label>Anything to add? <textarea name=\"comment\" maxlength=\"{}\"></textarea></label></p>\n\
             <p><button type=\"submit\">Send the report</button></p>\n</form>\n",
            events::MAX_COMMENT,
            id = escape_html(&id),
        ),
    )
}

fn thanks(ticket: &str) -> Response<ProxyBody> {
    page(
        StatusCode::OK,
        "Thank you",
        format!(
            "<p>Your report about ticket {} was recorded; an administrator will review it.</p>\n\
             <p><a href=\"javascript:history.back()\">Go back</a></p>\n",
            escape_html(ticket)
        ),
    )
}

fn refusal_page(refusal: &ReportRefusal) -> Response<ProxyBody> {
    match refusal {
        ReportRefusal::Missing => page(
            StatusCode::BAD_REQUEST,
            "No ticket",
            "<p>This link needs the ticket number of a block or warn page.</p>\n".into(),
        ),
        ReportRefusal::Unknown(id) => page(
            StatusCode::NOT_FOUND,
            "Unknown ticket",
            format!(
                "<p>Ticket {} is unknown or expired here. Tell your administrator the \
                 ticket number instead.</p>\n",
                escape_html(id)
            ),
        ),
        ReportRefusal::AlreadyReported => page(
            StatusCode::TOO_MANY_REQUESTS,
            "Already reported",
            "<p>This ticket was reported already. Thank you.</p>\n".into(),
        ),
    }
}

/// The fields of a report (query or form body).
#[derive(Debug, Default, PartialEq)]
struct Fields {
    ticket: Option<String>,
    /// Not blank.
    comment: Option<String>,
}

impl Fields {
    /// Parses `application/x-www-form-urlencoded` text; fields that do not decode are left
    /// out.
    fn parse(text: &str) -> Self {
        let mut f = Self::default();
        for pair in text.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "ticket" => f.ticket = crate::urlenc::decode(v).ok(),
                "comment" => {
                    f.comment = crate::urlenc::decode(v)
                        .ok()
                        .filter(|c| !c.trim().is_empty());
                }
                _ => {}
            }
        }
        f
    }
}

/// The posted form, within [`MAX_FORM_BYTES`] and [`FORM_TIMEOUT`].
async fn read_form<B>(body: B) -> Result<String, &'static str>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collected =
        tokio::time::timeout(FORM_TIMEOUT, Limited::new(body, MAX_FORM_BYTES).collect())
            .await
            .map_err(|_| "The form did not arrive in time.")?
            .map_err(|_| "The form is too long or did not arrive whole.")?;
    String::from_utf8(collected.to_bytes().to_vec()).map_err(|_| "The form is not UTF-8 text.")
}

/// A small HTML page, never cached.
fn page(status: StatusCode, title: &str, body: String) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n{body}</body></html>\n"
    );
    let mut r = Response::new(ProxyBody::full(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::events::Kind;
    use crate::feedback::REPORTS_PER_TICKET;
    use http_body_util::Full;
    use std::sync::atomic::Ordering;

    fn req(method: Method, uri: &str, body: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    #[tokio::test]
    async fn a_report_is_recorded_by_post_for_a_known_ticket_of_the_same_client() {
        let dir = tempfile::tempdir().unwrap();
        let f = Feedback::new(&crate::feedback::tests::config(dir.path())).unwrap();
        let me: IpAddr = [127, 0, 0, 1].into();
        let mut e = f.event(crate::feedback::tests::test_id(), Kind::Blocked);
        e.host = Some("bad.test".into());
        f.remember_ticket(me, &e);
        let q = format!("ticket={}", e.id);
        let status = |r: Request<Full<Bytes>>, client: IpAddr| {
            let f = &f;
            async move { serve(f, r, client, RequestId(7)).await.status().as_u16() }
        };
        let link = format!("{REPORT_PATH}?{q}");
        assert_eq!(status(req(Method::GET, "/r?x=1", ""), me).await, 400);
        assert_eq!(
            status(req(Method::GET, "/r?ticket=nope", ""), me).await,
            404
        );
        assert_eq!(
            status(req(Method::GET, &link, ""), [127, 0, 0, 2].into()).await,
            404
        );
        // The link shows the form and records nothing, a comment in the URL included.
        assert_eq!(status(req(Method::GET, &link, ""), me).await, 200);
        let commented = format!("{link}&comment=in+the+url");
        assert_eq!(status(req(Method::GET, &commented, ""), me).await, 200);
        assert_eq!(f.stats.queued.load(Ordering::Relaxed), 0);
        // The form posts it.
        let form = format!("{q}&comment=it+is%20fine");
        assert_eq!(status(req(Method::POST, REPORT_PATH, &form), me).await, 200);
        assert_eq!(f.stats.queued.load(Ordering::Relaxed), 1);
        let other = [127, 0, 0, 2].into();
        assert_eq!(
            status(req(Method::POST, REPORT_PATH, &form), other).await,
            404
        );
        assert_eq!(status(req(Method::PUT, REPORT_PATH, &form), me).await, 405);
        let long = format!("{q}&comment={}", "x".repeat(MAX_FORM_BYTES));
        assert_eq!(status(req(Method::POST, REPORT_PATH, &long), me).await, 400);
        for _ in 1..REPORTS_PER_TICKET {
            assert_eq!(status(req(Method::POST, REPORT_PATH, &q), me).await, 200);
        }
        assert_eq!(status(req(Method::POST, REPORT_PATH, &q), me).await, 429);
        assert_eq!(
            Fields::parse("comment=+&ticket=t"),
            Fields {
                ticket: Some("t".into()),
                comment: None
            }
        );
    }
}
