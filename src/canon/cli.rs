//! `webrep url URL [--json]`: shows the canonical form and the lookup expressions of a URL, so
//! an admin can see why a list entry matches a URL or does not.

use crate::exit::Exit;
use std::io::Write;

use super::canonicalize;

/// Runs `webrep url`: writes the canonical URL of `input` on the first line, then every lookup
/// expression, one per line; with `json`, one JSON object instead:
///
/// ```json
/// {"canonical":"http://a.b.c/1/","scheme":"http","host":"a.b.c","host_kind":"domain",
///  "port":null,"path":"/1/","query":null,"expressions":["a.b.c/1/","a.b.c/","b.c/1/","b.c/"]}
/// ```
///
/// Returns the process exit status: [`Exit::Ok`]; [`Exit::DataErr`] (65) when `input` is not
/// a URL, after writing `error: ...` to `out`; [`Exit::Failure`] when writing to `out` fails.
pub fn url_command(input: &str, json: bool, out: &mut impl Write) -> Exit {
    let url = match canonicalize(input) {
        Ok(url) if url.host_is_well_formed() => url,
        Ok(url) => return not_a_url(out, &format!("no host name can be {:?}", url.host())),
        Err(err) => return not_a_url(out, &err.to_string()),
    };
    let written = if json {
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
        writeln!(out, "{value}")
    } else {
        writeln!(out, "{url}").and_then(|()| {
            url.expressions()
                .try_for_each(|expression| writeln!(out, "{expression}"))
        })
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Failure,
    }
}
/// Writes why the input is not a URL; the exit status for it.
fn not_a_url(out: &mut impl Write, why: &str) -> Exit {
    match writeln!(out, "error: not a url: {why}") {
        Ok(()) => Exit::DataErr,
        Err(_) => Exit::Failure,
    }
}
