//! The `webrep import`, `webrep lookup` and `webrep feedback` commands: thin clients of a running server (or,
//! for `import --store`, of a store file), printing what happened for a human or as JSON.
//!
//! Exit statuses ([`crate::exit::Exit`]): 0 done; 64 a usage error (no token, bad
//! arguments); 65 the input was refused (a feed line, a URL, by the server or the store);
//! 66 a file named on the command line cannot be read; 69 the server cannot be reached,
//! timed out or failed (5xx); 76 its answer is not the API's; 77 it refused the token; 1 a
//! store that failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::admin::ImportAnswer;
use crate::api::feedback::{Escalation, Escalations, Revert, Reverted, Summary};
use crate::api::lookup::{BatchAnswer, BatchRequest, EntryView, HostItem, UrlItem, VerdictView};
use crate::cli::ServerArgs;
use crate::client::{ClientError, RepClient};
use crate::exit::Exit;
use crate::model::{Category, Score};
use crate::output::counted;
use crate::repserver::import::{self, Format, ImportOptions};
use crate::repserver::store::Store;
use crate::urlenc::encode_query_value;

/// A command's failure with its exit code.
#[derive(Debug)]
pub struct CommandError {
    /// The exit status.
    pub code: Exit,
    /// What to print.
    pub message: String,
}

impl CommandError {
    fn usage(message: impl Into<String>) -> CommandError {
        Self::new(Exit::Usage, message)
    }

    /// A failure with `code` and `message`.
    pub fn new(code: Exit, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> CommandError {
        let code = match &e {
            ClientError::Status { status, .. } if matches!(status.as_u16(), 401 | 403) => {
                Exit::NoPerm
            }
            ClientError::Status { status, .. } if status.is_client_error() => Exit::DataErr,
            ClientError::Status { .. } | ClientError::Transport(_) | ClientError::Timeout(_) => {
                Exit::Unavailable
            }
            ClientError::Setup(_) => Exit::Usage,
            ClientError::Json(_) => Exit::Protocol,
        };
        CommandError {
            code,
            message: e.to_string(),
        }
    }
}

/// The failure of a request to the server at `client`'s base URL: [`CommandError`]'s
/// conversion with that URL named, so that an admin sees which server could not be reached
/// (`--server` or `WEBREP_SERVER`, or the default).
fn at_server(client: &RepClient) -> impl FnOnce(ClientError) -> CommandError + '_ {
    move |e| {
        let base = client.base();
        let message = match &e {
            ClientError::Transport(m) => format!("cannot reach the server {base}: {m}"),
            ClientError::Timeout(d) => {
                format!("no answer from the server {base} within {}s", d.as_secs())
            }
            ClientError::Setup(m) => m.clone(),
            ClientError::Status { .. } | ClientError::Json(_) => format!("server {base}: {e}"),
        };
        CommandError {
            message,
            ..CommandError::from(e)
        }
    }
}

impl From<anyhow::Error> for CommandError {
    fn from(e: anyhow::Error) -> CommandError {
        CommandError {
            code: Exit::Failure,
            message: format!("{e:#}"),
        }
    }
}

fn client(args: &ServerArgs) -> Result<RepClient, CommandError> {
    let token = match &args.token_file {
        Some(path) => {
            if let Some(w) = crate::secrets::warning(path, "--token-file") {
                crate::errln!("webrep: warning: {w}");
            }
            crate::secrets::read_token_file(path, "--token-file")
                .map_err(|e| CommandError::new(Exit::NoInput, e.to_string()))?
        }
        None => std::env::var("WEBREP_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(CommandError::usage(
            "no token: give --token-file FILE or set WEBREP_TOKEN",
        ));
    }
    Ok(RepClient::new(&args.url, &token, args.ca_file.as_deref())?)
}

/// The client for `args` and its timeout (`--timeout`, else `default_secs`).
fn client_within(
    args: &ServerArgs,
    default_secs: u64,
) -> Result<(RepClient, Duration), CommandError> {
    let timeout = Duration::from_secs(args.timeout.unwrap_or(default_secs));
    Ok((client(args)?, timeout))
}

/// The server's answer to `route` as its wire type: a missing field or one of the wrong type
/// fails the command (exit 1) with serde's account of it, rather than printing a guess.
fn typed<T: DeserializeOwned>(route: &str, answer: &Value) -> Result<T, CommandError> {
    T::deserialize(answer).map_err(|e| CommandError {
        code: Exit::Protocol,
        message: format!("bad answer to {route}: {e}"),
    })
}

/// Prints the server's JSON answer as it came (`--json`).
fn print_json(answer: &Value) {
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(answer).unwrap_or_default()
    );
}

/// What `webrep import` was asked to do.
#[derive(Debug)]
pub struct ImportArgs {
    /// Format name.
    pub format: String,
    /// Feed name.
    pub feed: Option<String>,
    /// Category name.
    pub category: Option<String>,
    /// Score.
    pub score: Option<u8>,
    /// File, or `-`.
    pub file: PathBuf,
}

/// `webrep import`: prints the report (a line per bad line, then a summary).
///
/// # Errors
/// [`CommandError`] with its exit code.
pub async fn import(
    server: &ServerArgs,
    store: Option<&Path>,
    args: ImportArgs,
) -> Result<(), CommandError> {
    let format = Format::from_name(&args.format).ok_or_else(|| {
        CommandError::usage(format!(
            "unknown format {:?}; one of {}",
            args.format,
            Format::NAMES
        ))
    })?;
    let report = match store {
        Some(path) => import_into_store(path, format, &args).await?,
        None => import_via_server(server, format, &args).await?,
    };
    print_import(&args.file, &report);
    Ok(())
}

/// An import's report, from the server or the store alike: each bad line the report holds
/// (and how many more there were) on stderr, the counts on stdout.
fn print_import(file: &Path, report: &ImportAnswer) {
    for bad in &report.bad {
        crate::errln!("{}:{}: {}", file.display(), bad.line, bad.reason);
    }
    let shown = report.bad.len() as u64;
    if report.bad_total > shown {
        let more = counted(report.bad_total - shown, "more bad line", "more bad lines");
        crate::errln!("... and {more}");
    }
    crate::outln!(
        "{}: {} imported, {} skipped, {} (sequence {})",
        file.display(),
        counted(report.imported, "entry", "entries"),
        counted(report.skipped, "line", "lines"),
        counted(report.bad_total, "bad line", "bad lines"),
        report.seq
    );
}

async fn import_via_server(
    server: &ServerArgs,
    format: Format,
    args: &ImportArgs,
) -> Result<ImportAnswer, CommandError> {
    let (client, timeout) = client_within(server, 3600)?;
    let mut path = format!("/v1/import?format={}", format.as_str());
    if let Some(f) = &args.feed {
        path.push_str(&format!("&feed={}", encode_query_value(f)));
    }
    if let Some(c) = &args.category {
        path.push_str(&format!("&category={}", encode_query_value(c)));
    }
    if let Some(s) = args.score {
        path.push_str(&format!("&score={s}"));
    }
    let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = if args.file.as_os_str() == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(&args.file).await.map_err(|e| {
            CommandError::new(Exit::NoInput, format!("{}: {e}", args.file.display()))
        })?)
    };
    let stream =
        tokio_util::io::ReaderStream::new(reader).map_ok(|b: Bytes| http_body::Frame::data(b));
    let body = StreamBody::new(stream).boxed_unsync();
    let answer = client
        .post_body(&path, "application/octet-stream", body, timeout)
        .await
        .map_err(at_server(&client))?;
    typed("/v1/import", &answer)
}

async fn import_into_store(
    path: &Path,
    format: Format,
    args: &ImportArgs,
) -> Result<ImportAnswer, CommandError> {
    let path = path.to_owned();
    let file = args.file.clone();
    let feed = args
        .feed
        .clone()
        .unwrap_or_else(|| format.as_str().to_owned());
    let category = args.category.clone();
    let score = args.score;
    tokio::task::spawn_blocking(move || -> Result<ImportAnswer, CommandError> {
        let mut store = Store::open(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        let mut opts = ImportOptions::new(format, &feed, crate::clock::unix_secs());
        if let Some(s) = score {
            opts.score = Score::new(s)
                .ok_or_else(|| CommandError::usage(format!("score {s} is above 100")))?;
        }
        if let Some(c) = category {
            opts.category = Some(
                store
                    .taxonomy()
                    .resolve(&c)
                    .or_else(|_| Category::parse(&c))
                    .map_err(|e| CommandError::usage(format!("category {c:?}: {e}")))?,
            );
        }
        let result = if file.as_os_str() == "-" {
            import::import(&mut store, std::io::stdin().lock(), &opts)
        } else {
            let f = std::fs::File::open(&file).map_err(|e| {
                CommandError::new(Exit::NoInput, format!("{}: {e}", file.display()))
            })?;
            import::import(&mut store, std::io::BufReader::new(f), &opts)
        };
        let r = result.map_err(|e| CommandError {
            code: match e {
                import::ImportError::Store(_) => Exit::Failure,
                _ => Exit::DataErr,
            },
            message: e.to_string(),
        })?;
        Ok(ImportAnswer::from(r))
    })
    .await
    .map_err(|e| CommandError::from(anyhow::anyhow!("import task failed: {e}")))?
}

/// `webrep lookup`: one URL gets the explain form; several (or hosts) a batch.
///
/// # Errors
/// [`CommandError`] with its exit code.
pub async fn lookup(
    server: &ServerArgs,
    hosts: bool,
    json_out: bool,
    items: &[String],
) -> Result<(), CommandError> {
    let (client, timeout) = client_within(server, 30)?;
    let (raw, answer) = if !hosts && items.len() == 1 {
        let path = format!("/v1/lookup?url={}", encode_query_value(&items[0]));
        let raw = client
            .get(&path, timeout)
            .await
            .map_err(at_server(&client))?;
        let item: UrlItem = typed("/v1/lookup", &raw)?;
        let answer = BatchAnswer {
            urls: vec![item],
            hosts: vec![],
        };
        (raw, answer)
    } else {
        let (urls, hosts) = if hosts {
            (vec![], items.to_vec())
        } else {
            (items.to_vec(), vec![])
        };
        let body = BatchRequest { urls, hosts };
        let raw = client
            .post_json("/v1/lookup", &body, timeout)
            .await
            .map_err(at_server(&client))?;
        let answer: BatchAnswer = typed("/v1/lookup", &raw)?;
        (raw, answer)
    };
    if json_out {
        print_json(&raw);
    } else {
        print_lookup(&answer);
    }
    let refused = answer
        .urls
        .iter()
        .any(|u| matches!(u, UrlItem::Refused { .. }))
        || answer
            .hosts
            .iter()
            .any(|h| matches!(h, HostItem::Refused { .. }));
    if refused {
        return Err(CommandError {
            code: Exit::DataErr,
            message: "some items were refused".into(),
        });
    }
    Ok(())
}

/// A lookup's answers for a human: a line per URL with the entries that matched it, a line
/// per host with the path entries under it.
fn print_lookup(answer: &BatchAnswer) {
    for item in &answer.urls {
        match item {
            UrlItem::Refused { url, error } => crate::outln!("{url}: error: {error}"),
            UrlItem::Answer(a) => {
                crate::outln!("{}", verdict_line(&a.url, &a.verdict));
                for e in &a.explain.matched {
                    crate::outln!(
                        "  matched {} score={} categories={} source={}{}",
                        e.key,
                        e.score,
                        join(&e.categories),
                        e.source,
                        entry_tier(e)
                    );
                }
            }
        }
    }
    for item in &answer.hosts {
        match item {
            HostItem::Refused { host, error } => crate::outln!("{host}: error: {error}"),
            HostItem::Answer(a) => {
                crate::outln!("{}", verdict_line(&a.host, &a.verdict));
                for e in &a.paths {
                    crate::outln!(
                        "  path {} score={} categories={}{}",
                        e.key,
                        e.score,
                        join(&e.categories),
                        entry_tier(e)
                    );
                }
                if a.truncated {
                    crate::outln!("  (more path entries: ask per URL)");
                }
            }
        }
    }
}

/// ` tier=N` for an entry from a tier above the server (1: its upstream's own table);
/// nothing for the server's own.
fn entry_tier(e: &EntryView) -> String {
    if e.tier == 0 {
        String::new()
    } else {
        format!(" tier={}", e.tier)
    }
}

/// An item's verdict on one line; an untested item's score shows as `null`, as the JSON has it.
fn verdict_line(item: &str, v: &VerdictView) -> String {
    let score = v.score.map_or_else(|| "null".to_owned(), |s| s.to_string());
    let mut line = format!(
        "{item}: {} score={score} categories={} ttl={}s tier={}",
        v.risk,
        join(&v.categories),
        v.ttl_secs,
        v.tier.as_str()
    );
    if v.upstream.is_some() {
        line.push_str(" (upstream unavailable)");
    }
    line
}

/// Category names, comma-separated; `-` for none.
fn join(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

/// `webrep feedback summary|escalations|revert`: prints the server's answer for a human
/// (tables) or as JSON.
///
/// # Errors
/// [`CommandError`] with its exit code.
pub async fn feedback(command: crate::cli::FeedbackCommand) -> Result<(), CommandError> {
    use crate::cli::FeedbackCommand;
    match command {
        FeedbackCommand::Summary {
            server,
            since_secs,
            limit,
            json,
        } => {
            let (c, timeout) = client_within(&server, 30)?;
            let path = format!("/v1/feedback/summary?since_secs={since_secs}&limit={limit}");
            let raw = c.get(&path, timeout).await.map_err(at_server(&c))?;
            let summary: Summary = typed("/v1/feedback/summary", &raw)?;
            if json {
                print_json(&raw);
            } else {
                crate::out!("{}", summary_text(&summary, since_secs));
            }
        }
        FeedbackCommand::Escalations { server, json } => {
            let (c, timeout) = client_within(&server, 30)?;
            let raw = c
                .get("/v1/escalations", timeout)
                .await
                .map_err(at_server(&c))?;
            let list: Escalations = typed("/v1/escalations", &raw)?;
            if json {
                print_json(&raw);
            } else if list.escalations.is_empty() {
                crate::outln!("no escalations");
            } else {
                for e in &list.escalations {
                    crate::outln!("{}", escalation_line(e));
                }
            }
        }
        FeedbackCommand::Revert { server, key } => {
            let (c, timeout) = client_within(&server, 30)?;
            let body = Revert { key };
            let raw = c
                .post_json("/v1/escalations/revert", &body, timeout)
                .await
                .map_err(at_server(&c))?;
            let r: Reverted = typed("/v1/escalations/revert", &raw)?;
            crate::outln!("reverted {} (seq {})", r.reverted, r.seq);
        }
    }
    Ok(())
}

/// An escalation on one line; `reverted_ms` only once it was reverted.
fn escalation_line(e: &Escalation) -> String {
    let reverted = e
        .reverted_ms
        .map_or_else(String::new, |ms| format!(" reverted_ms={ms}"));
    format!(
        "{} score={} category={} rule={} clients={} fired_ms={}{reverted}",
        e.key,
        e.score,
        e.category.as_deref().unwrap_or("-"),
        e.rule,
        e.clients,
        e.fired_ms
    )
}

/// The human form of a feedback summary.
pub fn summary_text(s: &Summary, since_secs: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "events of the last {since_secs} s:");
    if s.kinds.is_empty() {
        out.push_str("  none\n");
    }
    for (k, n) in &s.kinds {
        let _ = writeln!(out, "  {k}: {n}");
    }
    out.push_str("top untested hosts (distinct clients, proxies, events):\n");
    for r in &s.untested_hosts {
        let _ = writeln!(out, "  {} {} {} {}", r.host, r.clients, r.proxies, r.events);
    }
    out.push_str("blocks by rule:\n");
    for r in &s.blocks_by_rule {
        let name = r.rule.as_deref().unwrap_or("(none)");
        let _ = writeln!(out, "  {name} {}", r.blocks);
    }
    out.push_str("blocks by category:\n");
    for r in &s.blocks_by_category {
        let name = r.category.as_deref().unwrap_or("(none)");
        let _ = writeln!(out, "  {name} {}", r.blocks);
    }
    out.push_str("user reports (ticket, proxy, host, comment):\n");
    for r in &s.user_reports {
        let _ = writeln!(
            out,
            "  {} {} {} {}",
            r.ticket.as_deref().unwrap_or("-"),
            r.proxy,
            r.host.as_deref().unwrap_or("-"),
            r.comment
                .as_deref()
                .map_or_else(|| "-".to_owned(), |c| format!("{c:?}"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::feedback::{CategoryBlocks, RuleBlocks, UntestedHost, UserReport};
    use crate::api::lookup::{Tier, UpstreamState};

    #[test]
    fn a_malformed_answer_fails_with_exit_76_and_names_the_route() {
        let e = typed::<ImportAnswer>("/v1/import", &serde_json::json!({ "seq": 1 })).unwrap_err();
        assert_eq!(e.code, Exit::Protocol);
        assert_eq!(e.message, "bad answer to /v1/import: missing field `lines`");
        let e =
            typed::<ImportAnswer>("/v1/import", &serde_json::json!({ "seq": "1" })).unwrap_err();
        assert_eq!(e.code, Exit::Protocol);
    }

    #[test]
    fn verdicts_print_untested_scores_as_null_and_say_when_upstream_failed() {
        let mut v = VerdictView::of(&crate::model::Verdict::untested(), 60, Tier::Local);
        v.upstream = Some(UpstreamState::Unavailable);
        assert_eq!(
            verdict_line("http://a.test/", &v),
            "http://a.test/: untested score=null categories=- ttl=60s tier=local \
             (upstream unavailable)"
        );
        v.score = Some(3);
        v.risk = "dangerous".into();
        v.categories = vec!["malware".into(), "phishing".into()];
        v.tier = Tier::Upstream;
        v.upstream = None;
        assert_eq!(
            verdict_line("a.test", &v),
            "a.test: dangerous score=3 categories=malware,phishing ttl=60s tier=upstream"
        );
    }

    #[test]
    fn escalations_show_reverted_ms_once_reverted() {
        let mut e = Escalation {
            key: "odd.test/".into(),
            host: "odd.test".into(),
            rule: 0,
            score: 70,
            category: None,
            clients: 2,
            fired_ms: 1000,
            reverted_ms: None,
            seq: 3,
        };
        assert_eq!(
            escalation_line(&e),
            "odd.test/ score=70 category=- rule=0 clients=2 fired_ms=1000"
        );
        e.category = Some("phishing".into());
        e.reverted_ms = Some(2000);
        assert_eq!(
            escalation_line(&e),
            "odd.test/ score=70 category=phishing rule=0 clients=2 fired_ms=1000 \
             reverted_ms=2000"
        );
    }

    #[test]
    fn the_summary_prints_every_list_with_its_placeholders() {
        assert_eq!(
            summary_text(&Summary::default(), 60),
            "events of the last 60 s:\n  none\n\
             top untested hosts (distinct clients, proxies, events):\n\
             blocks by rule:\nblocks by category:\n\
             user reports (ticket, proxy, host, comment):\n"
        );
        let s = Summary {
            since_ms: 0,
            kinds: [("blocked".to_owned(), 2), ("user_report".to_owned(), 1)].into(),
            untested_hosts: vec![UntestedHost {
                host: "new.test".into(),
                clients: 3,
                proxies: 2,
                events: 5,
            }],
            blocks_by_rule: vec![RuleBlocks {
                rule: None,
                blocks: 1,
            }],
            blocks_by_category: vec![CategoryBlocks {
                category: Some("gambling".into()),
                blocks: 1,
            }],
            user_reports: vec![UserReport {
                time: 0,
                proxy: "p1".into(),
                id: "e1".into(),
                ticket: None,
                host: Some("odd.test".into()),
                url: None,
                client: None,
                comment: Some("looks \"fine\"".into()),
            }],
        };
        assert_eq!(
            summary_text(&s, 60),
            "events of the last 60 s:\n  blocked: 2\n  user_report: 1\n\
             top untested hosts (distinct clients, proxies, events):\n  new.test 3 2 5\n\
             blocks by rule:\n  (none) 1\nblocks by category:\n  gambling 1\n\
             user reports (ticket, proxy, host, comment):\n  - p1 odd.test \"looks \\\"fine\\\"\"\n"
        );
    }
}
