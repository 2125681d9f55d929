//! Integration tests for `webrep::canon` (URL canonicalization and lookup expressions
//! that cannot be evaded): the published vectors, obfuscations, properties, `webrep url`.

use std::fmt::Write as _;

use proptest::prelude::*;
use webrep::canon::{CanonError, MAX_EXPRESSIONS, canonicalize, canonicalize_bytes, url_command};

// === vectors ===

/// Decodes the input column of `canon_vectors.tsv`: `\t \r \n \\ \xHH` escapes.
fn decode_field(field: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = field.get(i + 2..i + 4).ok_or("short \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 2;
            }
            _ => return Err(format!("unknown escape at byte {i}")),
        }
        i += 2;
    }
    Ok(out)
}

fn error_name(err: &CanonError) -> String {
    let debug = format!("{err:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Every row of tests/fixtures/canon_vectors.tsv; reports every failing row, not just the first.
#[test]
fn table_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/canon_vectors.tsv"
    );
    let text = std::fs::read_to_string(path).expect("fixture file is readable");
    let mut failures = String::new();
    let (mut rows, mut canon_rows, mut expr_rows) = (0, 0, 0);
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        rows += 1;
        let cols: Vec<&str> = line.split('\t').collect();
        let [kind, input, expected] = cols[..] else {
            writeln!(
                failures,
                "line {line_no}: expected 3 columns, got {}",
                cols.len()
            )
            .unwrap();
            continue;
        };
        let bytes = match decode_field(input) {
            Ok(b) => b,
            Err(e) => {
                writeln!(failures, "line {line_no}: bad input field: {e}").unwrap();
                continue;
            }
        };
        let result = canonicalize_bytes(&bytes);
        let got = match (kind, &result) {
            ("canon", Ok(url)) => {
                canon_rows += 1;
                url.as_str().to_owned()
            }
            ("expr", Ok(url)) => {
                expr_rows += 1;
                url.expressions()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            ("error", Err(err)) => error_name(err),
            ("error", Ok(url)) => format!("Ok({url})"),
            ("canon" | "expr", Err(err)) => format!("Err({err:?})"),
            _ => {
                writeln!(failures, "line {line_no}: unknown kind {kind:?}").unwrap();
                continue;
            }
        };
        if got != expected {
            writeln!(
                failures,
                "line {line_no}: {kind} {input:?}\n    expected {expected:?}\n    got      {got:?}"
            )
            .unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "canon_vectors.tsv: failing rows:\n{failures}"
    );
    // Guards against a truncated fixture: the published document alone has 33 + 3 examples.
    assert!(
        canon_rows >= 33 && expr_rows >= 3,
        "{rows} rows, {canon_rows} canon, {expr_rows} expr"
    );
}

// === obfuscations of one URL ===

#[test]
fn listed_obfuscations_reach_one_canonical_form() {
    let groups: &[(&str, &[&str])] = &[
        (
            "http://192.0.2.1/admin/login",
            &[
                "http://192.0.2.1/admin/login",
                "HTTP://192.0.2.1:80/admin/login#top",
                "http://3221225985/admin/login",
                "http://0xc0000201/admin/login",
                "http://0300.0.2.1/admin/login",
                "http://0xc0.0.0x2.01/admin/login",
                "http://192.0.513/admin/login",
                "http://192.513/admin/login",
                "http://user:pw@192.0.2.1.:8080//admin/./x/../login",
                "http://%31%39%32.%30.%32.%31/%61dmin/login",
                "http://[::ffff:192.0.2.1]/admin/login",
                "http://[64:ff9b::c000:201]/admin/login",
                " \thttp://192.0.2.1/ad\nmin/log\rin \n",
                "http:\\\\192.0.2.1\\admin\\login",
            ],
        ),
        (
            "http://xn--bcher-kva.example/katalog/",
            &[
                "http://bücher.example/katalog/",
                "http://BÜCHER.Example./katalog/",
                "http://b%C3%BCcher.example/katalog/",
                "http://b%25C3%25BCcher.example/katalog/",
                "http://XN--BCHER-KVA.example/katalog/",
                "http://bu\u{308}cher.example/katalog/",
                "bücher.example/katalog/./",
                "http://bücher。example/katalog//",
            ],
        ),
    ];
    let mut failures = String::new();
    for (expected, inputs) in groups {
        for input in *inputs {
            match canonicalize(input) {
                Ok(url) if url.as_str() == *expected => {}
                other => {
                    writeln!(failures, "{input:?}: expected {expected}, got {other:?}").unwrap()
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

/// A small deterministic generator, so that one proptest seed drives many choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

fn percent_encode(out: &mut String, b: u8, c: &mut Choices) {
    let hex = if c.chance(2) {
        format!("%{b:02X}")
    } else {
        format!("%{b:02x}")
    };
    if c.chance(4) {
        // double-encoded: %25XX
        out.push_str("%25");
        out.push_str(&hex[1..]);
    } else {
        out.push_str(&hex);
    }
}

fn obfuscate_domain(host: &str, c: &mut Choices) -> String {
    let mut out = String::new();
    for _ in 0..c.below(3) {
        out.push('.');
    }
    for ch in host.chars() {
        let ch = if c.chance(2) {
            ch.to_ascii_uppercase()
        } else {
            ch
        };
        if ch == '.' && c.chance(3) {
            out.push('.');
        }
        if c.chance(5) {
            percent_encode(&mut out, ch as u8, c);
        } else {
            out.push(ch);
        }
    }
    for _ in 0..c.below(3) {
        out.push('.');
    }
    out
}

fn octets_to_form(o: [u8; 4], c: &mut Choices) -> String {
    let part = |v: u32, c: &mut Choices| match c.below(3) {
        0 => v.to_string(),
        1 => format!("0{v:o}"),
        _ => {
            if c.chance(2) {
                format!("0x{v:x}")
            } else {
                format!("0X{v:X}")
            }
        }
    };
    let v = u32::from_be_bytes(o);
    let parts: Vec<String> = match c.below(4) {
        0 => o.iter().map(|&b| part(u32::from(b), c)).collect(),
        1 => vec![
            part(u32::from(o[0]), c),
            part(u32::from(o[1]), c),
            part(u32::from(o[2]) << 8 | u32::from(o[3]), c),
        ],
        2 => vec![part(u32::from(o[0]), c), part(v & 0x00ff_ffff, c)],
        _ => vec![part(v, c)],
    };
    let mut host = parts.join(".");
    if c.chance(3) {
        host.push('.');
    }
    if c.chance(5) {
        host = format!("[::ffff:{}.{}.{}.{}]", o[0], o[1], o[2], o[3]);
    }
    host
}

fn obfuscate_path(segments: &[String], trailing: bool, c: &mut Choices) -> String {
    let mut out = String::new();
    // The first slash ends the host, so it stays literal; the others may be escaped.
    let slash = |out: &mut String, c: &mut Choices| {
        if !out.is_empty() && c.chance(6) {
            percent_encode(out, b'/', c);
        } else {
            out.push('/');
        }
        while c.chance(4) {
            out.push('/');
        }
    };
    for seg in segments {
        slash(&mut out, c);
        match c.below(6) {
            0 => out.push_str("./"),
            1 => out.push_str("zz/../"),
            2 => out.push_str("%2e/"),
            _ => {}
        }
        for b in seg.bytes() {
            if c.chance(6) {
                percent_encode(&mut out, b, c);
            } else {
                out.push(b as char);
            }
        }
    }
    if trailing || segments.is_empty() {
        slash(&mut out, c);
    }
    out
}

fn sprinkle_whitespace(url: &str, c: &mut Choices) -> String {
    let mut out = String::new();
    if c.chance(3) {
        out.push_str("  ");
    }
    for ch in url.chars() {
        if c.chance(12) {
            out.push(['\t', '\r', '\n'][c.below(3) as usize]);
        }
        out.push(ch);
    }
    if c.chance(3) {
        out.push_str(" \n");
    }
    out
}

#[derive(Debug, Clone)]
struct BaseUrl {
    https: bool,
    host: Result<String, [u8; 4]>,
    segments: Vec<String>,
    trailing: bool,
    query: Option<String>,
}

impl BaseUrl {
    fn plain(&self) -> String {
        let host = match &self.host {
            Ok(name) => name.clone(),
            Err(o) => format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]),
        };
        let mut url = format!("{}://{host}", if self.https { "https" } else { "http" });
        for seg in &self.segments {
            url.push('/');
            url.push_str(seg);
        }
        if self.trailing || self.segments.is_empty() {
            url.push('/');
        }
        if let Some(q) = &self.query {
            url.push('?');
            url.push_str(q);
        }
        url
    }

    fn obfuscated(&self, c: &mut Choices) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let scheme: String = scheme
            .chars()
            .map(|ch| {
                if c.chance(2) {
                    ch.to_ascii_uppercase()
                } else {
                    ch
                }
            })
            .collect();
        let userinfo = match c.below(4) {
            0 => "user:pass@",
            1 => "a@b@",
            2 => "@",
            _ => "",
        };
        let host = match &self.host {
            Ok(name) => obfuscate_domain(name, c),
            Err(octets) => octets_to_form(*octets, c),
        };
        let port = match c.below(6) {
            0 => {
                if self.https {
                    ":443"
                } else {
                    ":80"
                }
            }
            1 => ":8080",
            2 => ":",
            3 => ":00080",
            _ => "",
        };
        let path = obfuscate_path(&self.segments, self.trailing, c);
        let query = match &self.query {
            Some(q) => {
                let mut out = String::from("?");
                for b in q.bytes() {
                    if c.chance(5) {
                        percent_encode(&mut out, b, c);
                    } else {
                        out.push(b as char);
                    }
                }
                out
            }
            None => String::new(),
        };
        let fragment = match c.below(4) {
            0 => "#frag",
            1 => "#a#b?c/../d",
            2 => "#",
            _ => "",
        };
        let url = format!("{scheme}://{userinfo}{host}{port}{path}{query}{fragment}");
        sprinkle_whitespace(&url, c)
    }
}

fn base_url() -> impl Strategy<Value = BaseUrl> {
    let domain = prop::collection::vec("[a-z0-9][a-z0-9-]{0,6}[a-z0-9]", 2..6)
        .prop_map(|labels| labels.join("."));
    let host = prop_oneof![domain.prop_map(Ok), any::<[u8; 4]>().prop_map(Err)];
    (
        any::<bool>(),
        host,
        prop::collection::vec("[A-Za-z0-9_~-]{1,6}", 0..5),
        any::<bool>(),
        prop::option::of("[a-z0-9=&]{0,12}"),
    )
        .prop_map(|(https, host, segments, trailing, query)| BaseUrl {
            https,
            host,
            segments,
            trailing,
            query,
        })
}

/// Strings shaped like URLs, with the bytes that matter to the rules over-represented.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just(""),
        Just("http://"),
        Just("HTTPS://"),
        Just("http:"),
        Just("http:\\\\"),
        Just("//"),
        Just("foo://"),
        Just("ws://"),
    ];
    let part = "[a-zA-Z0-9.%/?#:@\\[\\]\\\\ \t\r\n~;=&+xX_-]{0,24}";
    let escape = "%(2[5eEfF]|3[aAfF]|[0-9a-fA-F]{2})";
    let unicode = "[üÜ。ｅ\u{ad}\u{308}é\u{7f}]{0,3}";
    (
        scheme,
        prop::collection::vec(prop_oneof![part, escape, unicode], 0..6),
    )
        .prop_map(|(scheme, parts)| format!("{scheme}{}", parts.concat()))
}

fn check_canonical_invariants(input: &[u8]) -> Result<(), TestCaseError> {
    let Ok(url) = canonicalize_bytes(input) else {
        return Ok(());
    };
    let s = url.as_str();
    prop_assert!(
        s.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "not printable ASCII: {:?}",
        s
    );
    let again = canonicalize(s);
    prop_assert!(again.is_ok(), "canonical {:?} refused: {:?}", s, again);
    let again = again.unwrap();
    prop_assert_eq!(again.as_str(), s);
    let first: Vec<&str> = url.expressions().map(|e| e.as_str()).collect();
    let second: Vec<&str> = again.expressions().map(|e| e.as_str()).collect();
    prop_assert_eq!(&first, &second);
    prop_assert!(!first.is_empty() && first.len() <= MAX_EXPRESSIONS);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic; what canonicalizes is printable ASCII and idempotent.
    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..400)) {
        check_canonical_invariants(&input)?;
    }

    /// URL-shaped input: printable ASCII output, idempotent, same expressions when re-read.
    #[test]
    fn canonicalization_is_idempotent(input in url_like()) {
        check_canonical_invariants(input.as_bytes())?;
    }

    /// Case, dots, escapes, numeric IPv4 forms, `/./` and `/../`, duplicate slashes,
    /// userinfo, default and odd ports, fragments and embedded tab/CR/LF: all one form.
    #[test]
    fn obfuscations_reach_the_same_canonical_form(base in base_url(), seed in any::<u64>()) {
        let expected = canonicalize(&base.plain()).expect("base url canonicalizes");
        let mut choices = Choices(seed | 1);
        for _ in 0..8 {
            let variant = base.obfuscated(&mut choices);
            let got = canonicalize(&variant);
            prop_assert!(got.is_ok(), "{:?} refused: {:?}", variant, got);
            let got = got.unwrap();
            prop_assert_eq!(got.as_str(), expected.as_str(), "variant {:?}", variant);
        }
    }
}

// === webrep url ===

/// (exit status, standard output then standard error).
fn run_url_command(input: &str, json: bool) -> (u8, String) {
    run_url_bytes(input.as_bytes(), json)
}

fn run_url_bytes(input: &[u8], json: bool) -> (u8, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = url_command(input, json, &mut out, &mut err).code();
    out.extend(err);
    (
        code,
        String::from_utf8(out).expect("command output is UTF-8"),
    )
}

#[test]
fn url_command_prints_canonical_then_expressions() {
    let (code, out) = run_url_command("HTTP://A.B.C:8080/1/2.html?param=1#x", false);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "http://a.b.c/1/2.html?param=1",
            "a.b.c/1/2.html?param=1",
            "a.b.c/1/2.html",
            "a.b.c/",
            "a.b.c/1/",
            "b.c/1/2.html?param=1",
            "b.c/1/2.html",
            "b.c/",
            "b.c/1/",
        ]
    );
}

#[test]
fn url_command_json_is_one_object() {
    let (code, out) = run_url_command("http://user@[::ffff:192.0.2.1]:8080/a/", true);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["canonical"], "http://192.0.2.1/a/");
    assert_eq!(v["scheme"], "http");
    assert_eq!(v["host"], "192.0.2.1");
    assert_eq!(v["host_kind"], "ipv4");
    assert_eq!(v["port"], 8080);
    assert_eq!(v["path"], "/a/");
    assert_eq!(v["query"], serde_json::Value::Null);
    assert_eq!(
        v["expressions"],
        serde_json::json!(["192.0.2.1/a/", "192.0.2.1/"])
    );
}

#[test]
fn url_command_refuses_non_urls_with_status_65() {
    for input in [
        "",
        "javascript:alert(1)",
        "http://h:99999/",
        "/only/a/path",
        "not a url",
        "not a url at all",
        "a b.example/",
        "%01%80.com",
    ] {
        for json in [false, true] {
            let (code, out) = run_url_command(input, json);
            assert_eq!(code, 65, "{input:?}");
            assert!(out.starts_with("error: "), "{input:?}: {out:?}");
            assert_eq!(out.lines().count(), 1);
        }
    }
}

/// Raw bytes, as the proxy takes them: the Safe Browsing case `http://\x01\x80.com/` is
/// `http://%01%80.com/`, with a note that no list entry can name that host.
#[test]
fn url_command_takes_raw_bytes_and_notes_a_host_no_entry_can_name() {
    for input in [
        &b"http://\x01\x80.com/"[..],
        b"HTTP://%01%80.com/",
        b" http://\x01\x80.com/",
    ] {
        let (code, out) = run_url_bytes(input, false);
        assert_eq!(code, 0, "{input:?}: {out}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("http://%01%80.com/"), "{out}");
        assert_eq!(lines.next(), Some("%01%80.com/"), "{out}");
        assert!(
            lines.next().is_some_and(|l| l
                .starts_with("note: no list entry or feed line can name the host \"%01%80.com\"")),
            "{out}"
        );
    }
    let (code, out) = run_url_bytes(b"http://a b.example/", true);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("{\"canonical\":\"http://a%20b.example/\""),
        "{out}"
    );
}

/// Standard input: one URL per line, blank lines skipped, a bad line named by its number
/// while the others go on, then exit 65.
#[test]
fn url_lines_reads_one_url_per_line() {
    let input = b"HTTP://A.test/x\r\n\n  \nmailto:x\nhttp://\x01\x80.com/\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = webrep::canon::url_lines(&input[..], false, &mut out, &mut err);
    assert_eq!(code.code(), 65);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "http://a.test/x\na.test/x\na.test/\n\nhttp://%01%80.com/\n%01%80.com/\n"
    );
    let err = String::from_utf8(err).unwrap();
    assert!(err.starts_with("error: line 4: not a url: "), "{err}");
    assert!(err.contains("note: line 5: no list entry"), "{err}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = webrep::canon::url_lines(
        &b"http://a.test/\nhttp://b.test/"[..],
        true,
        &mut out,
        &mut err,
    );
    assert_eq!(code.code(), 0);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 2, "one JSON object per line: {out}");
    assert!(err.is_empty());
}

/// The examples shown in docs/canon.md.
#[test]
fn url_command_matches_the_documented_examples() {
    let (code, out) = run_url_command(
        "HTTP://user@WWW.Example.COM.:8080/a/./b/../c?q=1#frag",
        false,
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "http://www.example.com/a/c?q=1\nwww.example.com/a/c?q=1\nwww.example.com/a/c\n\
         www.example.com/\nwww.example.com/a/\nexample.com/a/c?q=1\nexample.com/a/c\n\
         example.com/\nexample.com/a/\n"
    );
    let (code, out) = run_url_command("http://[::ffff:192.0.2.1]:8080/a/", true);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\"canonical\":\"http://192.0.2.1/a/\",\"expressions\":[\"192.0.2.1/a/\",\"192.0.2.1/\"],\
         \"host\":\"192.0.2.1\",\"host_kind\":\"ipv4\",\"path\":\"/a/\",\"port\":8080,\
         \"query\":null,\"scheme\":\"http\"}\n"
    );
    let (code, out) = run_url_command("mailto:someone@example.com", false);
    assert_eq!(code, 65);
    assert!(out.starts_with("error: not a url: "), "{out}");
}
