//! `webrep url [URL|-] [--json]`: shows the canonical form and the lookup expressions of a URL
//! (or of each line of standard input), so an admin can see why a list entry matches a URL or
//! does not. Pure: it reads and writes only the streams it is given; one URL costs one
//! canonicalization; a URL that does not canonicalize is reported, never a panic.

use crate::exit::Exit;
use std::io::{BufRead, Write};

use super::canonicalize_bytes;

/// Runs `webrep url URL`: writes the canonical URL of `input` on the first line, then every
/// lookup expression, one per line; with `json`, one JSON object instead:
///
/// ```json
/// {"canonical":"http://a.b.c/1/","scheme":"http","host":"a.b.c","host_kind":"domain",
///  "port":null,"path":"/1/","query":null,"expressions":["a.b.c/1/","a.b.c/","b.c/1/","b.c/"]}
/// ```
///
/// `input` is raw bytes, as the proxy sees a request target: bytes that are not UTF-8 come out
/// percent-escaped (`http://\x01\x80.com/` is `http://%01%80.com/`). A host with such escapes
/// is shown as the proxy matches it, with a note on `err` that no list entry or feed line can
/// name it; without a scheme (`not a url`) it is refused instead.
///
/// Returns the process exit status: [`Exit::Ok`]; [`Exit::DataErr`] (65) when `input` is not
/// a URL, after writing `error: not a url: ...` to `err`; [`Exit::Failure`] when writing
/// fails.
pub fn url_command(input: &[u8], json: bool, out: &mut impl Write, err: &mut impl Write) -> Exit {
    let written = match render(input, json) {
        Ok((text, note)) => out.write_all(text.as_bytes()).and_then(|()| match note {
            Some(note) => writeln!(err, "note: {note}"),
            None => Ok(()),
        }),
        Err(why) => {
            return match writeln!(err, "error: not a url: {why}") {
                Ok(()) => Exit::DataErr,
                Err(_) => Exit::Failure,
            };
        }
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Failure,
    }
}

/// Runs `webrep url` over standard input: each line of `input` (raw bytes; blank lines are
/// skipped) as [`url_command`] shows it, to `out`. In the text form a blank line separates
/// the URLs; with `json`, one JSON object per line. A line that is not a URL writes
/// `error: line N: not a url: ...` to `err` and the others go on.
///
/// Returns [`Exit::Ok`] when every line is a URL; [`Exit::DataErr`] (65) when one is not;
/// [`Exit::NoInput`] (66) when `input` cannot be read; [`Exit::Failure`] when writing fails.
pub fn url_lines(
    mut input: impl BufRead,
    json: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Exit {
    let mut code = Exit::Ok;
    let mut line = Vec::new();
    let mut shown = 0u64;
    for number in 1u64.. {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(err, "error: cannot read standard input: {e}");
                return Exit::NoInput;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let written = match render(&line, json) {
            Ok((text, note)) => {
                let gap = if shown > 0 && !json { "\n" } else { "" };
                shown += 1;
                write!(out, "{gap}{text}").and_then(|()| match note {
                    Some(note) => writeln!(err, "note: line {number}: {note}"),
                    None => Ok(()),
                })
            }
            Err(why) => {
                code = Exit::DataErr;
                writeln!(err, "error: line {number}: not a url: {why}")
            }
        };
        if written.is_err() {
            return Exit::Failure;
        }
    }
    match out.flush() {
        Ok(()) => code,
        Err(_) => Exit::Failure,
    }
}

/// What `webrep url` prints for `input` (newline-terminated) and a note for the admin, or why
/// it is not a URL.
fn render(input: &[u8], json: bool) -> Result<(String, Option<String>), String> {
    let url = canonicalize_bytes(input).map_err(|e| e.to_string())?;
    let note = if url.host_is_well_formed() {
        None
    } else if has_scheme(input, url.scheme()) {
        Some(format!(
            "no list entry or feed line can name the host {:?} (it has bytes that had to be \
             escaped); the proxy matches it as shown",
            url.host()
        ))
    } else {
        return Err(format!("no host name can be {:?}", url.host()));
    };
    let mut text = String::new();
    if json {
        let expressions: Vec<&str> = url.expressions().map(|e| e.as_str()).collect();
        let value = serde_json::json!({
            "canonical": url.as_str(),
            "scheme": url.scheme(),
            "host": url.host(),
            "host_kind": url.host_kind().as_str(),
            "port": url.port(),
            "path": url.path(),
            "query": url.query(),
            "expressions": expressions,
        });
        text.push_str(&value.to_string());
        text.push('\n');
    } else {
        text.push_str(url.as_str());
        text.push('\n');
        for expression in url.expressions() {
            text.push_str(expression.as_str());
            text.push('\n');
        }
    }
    Ok((text, note))
}

/// Whether `input` starts with `scheme:` (any case, after leading spaces and control bytes):
/// the admin wrote a URL, rather than words canonicalization took for a host.
fn has_scheme(input: &[u8], scheme: &str) -> bool {
    let start = input.iter().position(|&b| b > b' ').unwrap_or(input.len());
    input[start..].get(..=scheme.len()).is_some_and(|head| {
        head[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) && head[scheme.len()] == b':'
    })
}
