//! YAML reading and writing for the configuration and the policy files: the one module that
//! names the YAML crate, so that it can be swapped. Values can carry the line and column of
//! the node they came from ([`Located`]), so that a value that parses but does not validate
//! is still reported at its position.
//!
//! Errors are for admins: [`from_yaml_str_all`] goes on past an error where it can (an
//! unknown key, a value of the wrong type, a duplicate key: the key is blanked out and the
//! text parsed again, up to [`MAX_ERRORS`] times), so that one run reports every such
//! problem in line order, each with its position and the key it is at, in words about the
//! file rather than about the YAML crate (`duplicate key `rules`, first at line 3`, not the
//! crate's advice on its options). A syntax error ends the parse: what follows it cannot be
//! read reliably. Pure: text in, values or positioned errors out; each retry costs one more
//! parse of the text.

mod outline;

use serde::{Deserialize, Serialize};
use serde_saphyr::Error as SaphyrError;

/// The most errors one parse reports (each costs a parse of the whole text).
pub const MAX_ERRORS: usize = 50;

/// Parses YAML into `T`. The one place that names the YAML crate, so it can be swapped.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Renders `T` as YAML (for `webrep config print-default`).
pub fn to_yaml_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// A YAML error with the position it was found at (1-based; 0 when the parser gave none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// What is wrong, without the position and without a source snippet.
    pub message: String,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

/// [`from_yaml_str`] for callers that report `file:line:column` themselves: the first error,
/// with its position apart from its message.
pub fn from_yaml_str_located<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let lines: Vec<&str> = text.lines().collect();
    serde_saphyr::from_str(text).map_err(|e| describe(&e, &lines).0)
}

/// Parses YAML into `T`, going on past errors where it can: every unknown key, value of the
/// wrong type and duplicate key is reported (up to [`MAX_ERRORS`]), in line order. A syntax
/// error is reported too, and ends the parse.
///
/// # Errors
/// Every problem found; never empty.
pub fn from_yaml_str_all<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Vec<YamlError>> {
    let original: Vec<&str> = text.lines().collect();
    let mut doc: Vec<String> = original.iter().map(|l| (*l).to_owned()).collect();
    let mut errors: Vec<YamlError> = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    let mut current = text.to_owned();
    loop {
        let e = match serde_saphyr::from_str::<T>(&current) {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let (error, go_on) = describe(&e, &original);
        // A key blanked out after an earlier error is missing now: not a problem of its own.
        let echo = matches!(e.without_snippet(), SaphyrError::SerdeMissingField { field, .. }
            if blanked.iter().any(|b| b == field));
        let seen = errors
            .iter()
            .any(|p| (p.line, p.column) == (error.line, error.column));
        if echo || seen {
            break;
        }
        let (line, column) = (error.line, error.column);
        errors.push(error);
        if !go_on || line == 0 || errors.len() >= MAX_ERRORS {
            break;
        }
        let view: Vec<&str> = doc.iter().map(String::as_str).collect();
        let path = outline::path_at(&view, line, column);
        if path.is_empty() {
            break;
        }
        blanked.extend(outline::blank(&mut doc, &path));
        current = doc.join("\n");
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Err(errors)
}

/// Every key of `text` with its dotted path (`reputation.sources[0].token_file`), 1-based
/// line and column, in file order; read from the text's outline, so it works on any text
/// (keys of text that is not block-style YAML may be missing).
pub fn key_positions(text: &str) -> Vec<(String, u32, u32)> {
    outline::key_positions(text)
}

/// The crate's error for an admin: the message in words about the file, its position, and
/// whether the parse can go on past it (it can after a problem with one key's value; not
/// after a syntax error).
fn describe(e: &SaphyrError, lines: &[&str]) -> (YamlError, bool) {
    let (line, column) = e
        .location()
        .map_or((0, 0), |l| (clamp_u32(l.line()), clamp_u32(l.column())));
    let mut inner = e;
    while let SaphyrError::WithSnippet { error, .. } | SaphyrError::AliasError { error, .. } = inner
    {
        inner = error;
    }
    let at = At {
        lines,
        line,
        column,
        path: outline::path_at(lines, line, column),
    };
    let (message, go_on) = match key_error(inner, &at).or_else(|| value_error(inner, &at)) {
        Some(message) => (message, true),
        None => {
            use serde_saphyr::MessageFormatter as _;
            let text = serde_saphyr::UserMessageFormatter.format_message(inner);
            (format!("YAML syntax: {}", strip_location(&text)), false)
        }
    };
    (
        YamlError {
            message,
            line,
            column,
        },
        go_on,
    )
}

/// Where an error is: the text, the position and the keys it is in.
struct At<'a> {
    lines: &'a [&'a str],
    line: u32,
    column: u32,
    path: Vec<outline::Segment>,
}

impl At<'_> {
    /// `what`, prefixed with the key it is at.
    fn key(&self, what: &str) -> String {
        if self.path.is_empty() {
            what.to_owned()
        } else {
            format!("`{}`: {what}", outline::dotted(&self.path))
        }
    }

    /// The dotted path of the mapping the key at the position is in.
    fn parent(&self) -> String {
        outline::dotted(&self.path[..self.path.len().saturating_sub(1)])
    }
}

/// A problem with a key: unknown, missing, given twice.
fn key_error(e: &SaphyrError, at: &At<'_>) -> Option<String> {
    Some(match e {
        SaphyrError::SerdeUnknownField {
            field, expected, ..
        } => unknown_key(field, expected, &at.parent()),
        SaphyrError::SerdeMissingField { field, .. } => at.key(&format!("missing key `{field}`")),
        SaphyrError::DuplicateMappingKey { key, .. } => {
            duplicate_key(key.as_deref(), at.lines, at.line, at.column)
        }
        SaphyrError::Message { msg, .. } => match msg.strip_prefix("duplicate field `") {
            Some(rest) => duplicate_key(rest.strip_suffix('`'), at.lines, at.line, at.column),
            None => at.key(strip_location(msg)),
        },
        _ => return None,
    })
}

/// A problem with a value: of the wrong type, not one of those allowed.
fn value_error(e: &SaphyrError, at: &At<'_>) -> Option<String> {
    let found = || scalar_at(at.lines, at.line, at.column);
    Some(match e {
        SaphyrError::SerdeUnknownVariant {
            variant, expected, ..
        } => at.key(&format!(
            "unknown value `{variant}`; expected one of {}",
            expected.join(", ")
        )),
        SaphyrError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | SaphyrError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => at.key(&format!(
            "expected {}, found {}",
            expected_words(expected),
            found_words(unexpected)
        )),
        SaphyrError::SerdeInvalidLength { len, expected, .. } => at.key(&format!(
            "{len} items; expected {}",
            expected_words(expected)
        )),
        SaphyrError::InvalidScalar { ty, .. } => at.key(&format!(
            "expected {}, found {}",
            expected_words(ty),
            found()
        )),
        SaphyrError::Unexpected { expected, .. } => at.key(&format!(
            "expected {}, found {}",
            expected_words(expected),
            node_at(at.lines, at.line, at.column)
        )),
        SaphyrError::InvalidBooleanStrict { .. } => {
            at.key(&format!("expected true or false, found {}", found()))
        }
        SaphyrError::NullIntoString { .. } => {
            at.key("expected text, found nothing (an empty value)")
        }
        SaphyrError::QuotingRequired { value, .. } => {
            at.key(&format!("put the value {value:?} in quotes"))
        }
        _ => return None,
    })
}

/// `unknown key `lisen` in `proxy`; did you mean `listen`?` (or the keys it may be).
fn unknown_key(field: &str, expected: &[&str], parent: &str) -> String {
    let place = if parent.is_empty() {
        String::from("at the top level")
    } else {
        format!("in `{parent}`")
    };
    let close = expected
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match close {
        Some((_, k)) => format!("unknown key `{field}` {place}; did you mean `{k}`?"),
        None if expected.is_empty() => format!("unknown key `{field}` {place}"),
        None => format!(
            "unknown key `{field}` {place}; the keys here are {}",
            expected.join(", ")
        ),
    }
}

/// `duplicate key `rules`, first at line 3`.
fn duplicate_key(key: Option<&str>, lines: &[&str], line: u32, column: u32) -> String {
    match key {
        Some(k) => match outline::first_sibling(lines, line, column, k) {
            Some(first) => format!("duplicate key `{k}`, first at line {first}"),
            None => format!("duplicate key `{k}`"),
        },
        None => "duplicate key".to_owned(),
    }
}

/// The scalar written at a position, quoted for a message (`the value` when there is none).
fn scalar_at(lines: &[&str], line: u32, column: u32) -> String {
    let text = lines
        .get((line as usize).wrapping_sub(1))
        .and_then(|l| l.get((column as usize).saturating_sub(1)..))
        .unwrap_or("");
    let end = text.find([',', ']', '}', '#']).unwrap_or(text.len());
    let value = text[..end].trim();
    if value.is_empty() {
        "another value".to_owned()
    } else {
        format!("`{value}`")
    }
}

/// What is written at a position: a list, a mapping, or the scalar.
fn node_at(lines: &[&str], line: u32, column: u32) -> String {
    let text = lines
        .get((line as usize).wrapping_sub(1))
        .and_then(|l| l.get((column as usize).saturating_sub(1)..))
        .unwrap_or("");
    match text.trim_start().chars().next() {
        Some('[' | '-') => "a list".to_owned(),
        Some('{') => "a mapping".to_owned(),
        _ => scalar_at(lines, line, column),
    }
}

/// What serde expected, in words about the file.
fn expected_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" | "u128" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" | "boolean" => "true or false",
        "string scalar" | "scalar" => "a single value (not a list or mapping)",
        "mapping" | "a mapping" | "mapping start" => "a mapping (`key: value` lines)",
        "sequence" | "sequence start" => "a list",
        "a string" | "string" | "a borrowed string" | "a character" => "text",
        "a sequence" => "a list",
        "a map" => "a mapping (`key: value` lines)",
        e if e.starts_with("struct ") => "a mapping (`key: value` lines)",
        e if e.starts_with("a sequence") => "a list",
        e if e.starts_with("enum ") => "one of the allowed values",
        e => return e.to_owned(),
    };
    words.to_owned()
}

/// What serde found, in words about the file.
fn found_words(unexpected: &str) -> String {
    let (kind, value) = match unexpected.split_once(' ') {
        Some((k, v)) => (k, v.trim_matches('`')),
        None => (unexpected, ""),
    };
    match kind {
        "string" => format!("the text {value}"),
        "integer" | "floating" => format!(
            "the number {}",
            value.trim_start_matches("point ").trim_matches('`')
        ),
        "boolean" => value.to_owned(),
        "sequence" => "a list".to_owned(),
        "map" => "a mapping".to_owned(),
        "unit" | "null" => "nothing (an empty value)".to_owned(),
        _ => unexpected.to_owned(),
    }
}

/// A deserialized value with the line and column of the YAML node it came from, so that a
/// value that parses but does not validate (a bad CIDR, an unknown category) can still be
/// reported at its position. Wraps the YAML crate's span type so that only this file names
/// that crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            line: clamp_u32(spanned.referenced.line()),
            column: clamp_u32(spanned.referenced.column()),
        })
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The YAML crate appends " at line L column C" to some messages; we report the position
/// ourselves.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i + 9..].contains("column") => &message[..i],
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        count: u32,
        #[serde(default)]
        on: bool,
        #[serde(default)]
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        a: Option<Inner>,
        #[serde(default)]
        b: Option<Inner>,
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        map: BTreeMap<String, u32>,
    }

    fn errors(text: &str) -> Vec<(u32, u32, String)> {
        from_yaml_str_all::<Doc>(text)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.column, e.message))
            .collect()
    }

    #[test]
    fn a_valid_document_parses() {
        let d: Doc = from_yaml_str_all("a:\n  count: 3\nitems:\n  - on: true\n").unwrap();
        assert_eq!(d.a.unwrap().count, 3);
        assert!(d.items[0].on);
    }

    #[test]
    fn every_key_and_value_error_is_reported_in_line_order() {
        let text =
            "a:\n  cuont: 3\n  on: maybe\nitems:\n  - count: -1\n  - nme: x\nb:\n  count: [1]\n";
        let got = errors(text);
        assert_eq!(
            got,
            [
                (
                    2,
                    3,
                    "unknown key `cuont` in `a`; did you mean `count`?".into()
                ),
                (3, 7, "`a.on`: expected true or false, found `maybe`".into()),
                (
                    5,
                    12,
                    "`items[0].count`: expected a whole number (0 or more), found `-1`".into()
                ),
                (
                    6,
                    5,
                    "unknown key `nme` in `items[1]`; did you mean `name`?".into()
                ),
                (
                    8,
                    10,
                    "`b.count`: expected a single value (not a list or mapping), found a list"
                        .into()
                ),
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn duplicate_keys_name_the_first_one_without_library_advice() {
        let got = errors("a:\n  count: 1\nb: {}\na:\n  count: 2\nmap:\n  x: 1\n  x: 2\n");
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[0], (4, 1, "duplicate key `a`, first at line 1".into()));
        assert_eq!(got[1].0, 8, "{got:#?}");
        assert!(got[1].2.starts_with("duplicate key `x`"), "{got:#?}");
        assert!(got.iter().all(|e| !e.2.contains("DuplicateKeyPolicy")));
    }

    #[test]
    fn a_syntax_error_ends_the_parse_after_the_errors_before_it() {
        let got = errors("a:\n  cuont: 1\nitems:\n  - on: true\n   nme: x\n  - nme: y\n");
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[0].0, 2);
        assert!(got[1].2.starts_with("YAML syntax: "), "{got:#?}");
        // The first-error form gives the same first error.
        let first = from_yaml_str_located::<Doc>("a:\n  cuont: 1\n").unwrap_err();
        assert_eq!((first.line, first.column), (2, 3));
        assert!(first.message.contains("did you mean `count`"), "{first:?}");
    }

    #[test]
    fn recovery_is_bounded() {
        let text: String = (0..200).map(|i| format!("k{i}: 1\n")).collect();
        assert_eq!(errors(&text).len(), MAX_ERRORS);
    }
}
