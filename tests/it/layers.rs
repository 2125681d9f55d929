//! The layer rules of the crate, checked on its sources: every top-level module of `src/`
//! has a layer, a module imports only modules of lower layers (so no two modules can import
//! each other, directly or around a cycle), the proxy side and the reputation server never
//! import each other, and the pure core does no I/O. The composition roots (`app`, `cli`, and
//! the binary's `main.rs`) are the only places that see everything.
//!
//! Imports are read as text: every `crate::name` path (a `use`, a qualified call, a macro
//! from another module, a `crate::{a, b}` group) outside comments is an edge from the
//! file's top-level module to `name`. A new top-level module must be given a layer in
//! [`LAYERS`] before the suite passes.
//!
//! There are no exceptions: a forbidden edge, I/O in the pure core or a long function
//! fails the suite, and the message says which and where.
//!
//! The same reading keeps production functions under [`MAX_FN_LINES`] lines (test code
//! aside), so that request handling and start-up read as named steps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Helpers with no domain: bounded file reads, connection accounting, shutdown plumbing,
    // YAML positions, wall-clock time, query and form encoding, exit statuses,
    // syslog messages.
    &[
        "fsread", "conns", "shutdown", "output", "yaml", "clock", "urlenc", "exit", "syslog",
    ],
    &["secrets", "metrics", "tls"],
    // The pure core: URL canonicalization, the reputation vocabulary, the policy.
    &["canon"],
    &["model"],
    &["policy"],
    // The wire protocol's types, shared by both sides.
    &["api"],
    // The reputation API's HTTP client, for proxies, server tiers and commands.
    &["client"],
    // Configuration: validated sections, read by everything that runs.
    &["config"],
    &["telemetry", "policyfile"],
    &["accesslog", "intercept"],
    // The two sides: the proxy's reputation client and the reputation server.
    &["reputation", "repserver"],
    &["feedback"],
    &["proxy"],
    // Composition roots: they see both sides.
    &["cli"],
    &["app"],
];

/// Modules of the proxy side and of the server side: neither imports the other.
const PROXY_SIDE: &[&str] = &["reputation", "feedback", "proxy"];
const SERVER_SIDE: &[&str] = &["repserver"];

/// Modules that may not touch the network, the file system, the clock, the environment or
/// the runtime (address types such as `std::net::IpAddr` are values, not I/O).
const PURE: &[&str] = &["canon", "model", "policy", "api"];
const IMPURE: &[&str] = &[
    "tokio::",
    "std::fs",
    "std::env",
    "std::process",
    "std::thread",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "to_socket_addrs",
    "SystemTime::now",
    "Instant::now",
    "notify::",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules `lib.rs` declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .chain(lib.lines().filter_map(|l| l.trim().strip_prefix("mod ")))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its comments (line, doc and block comments).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('/') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("//") {
            rest = tail.find('\n').map_or("", |n| &tail[n..]);
        } else if tail.starts_with("/*") {
            rest = tail.find("*/").map_or("", |n| &tail[n + 2..]);
        } else {
            out.push('/');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment after each `root::` in `code`, groups (`root::{a, b::c}`) opened.
fn targets(code: &str, root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let needle = format!("{root}::");
    let mut at = 0;
    while let Some(i) = code[at..].find(&needle) {
        let start = at + i;
        at = start + needle.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.insert(ident_at(&group[j..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident_at(rest).to_owned());
        }
    }
    found
}

/// The macros each module exports at the crate root (`#[macro_export]`), by name.
fn exported_macros(files: &[(String, String)]) -> BTreeMap<String, String> {
    let mut macros = BTreeMap::new();
    for (module, code) in files {
        let mut rest = code.as_str();
        while let Some(i) = rest.find("#[macro_export]") {
            rest = &rest[i..];
            if let Some(j) = rest.find("macro_rules!") {
                let name = ident_at(rest[j + "macro_rules!".len()..].trim_start());
                macros.insert(name.to_owned(), module.clone());
            }
            rest = &rest[1..];
        }
    }
    macros
}

/// Each top-level module's files, as (module, path below `src/`, code without comments).
fn sources() -> Vec<(String, String, String)> {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src()).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
            let module = first.trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = rel.to_str()?.to_owned();
            Some((module, rel, code_of(&text)))
        })
        .collect()
}

/// The imports between top-level modules, as edges (from, to); a macro exported at the
/// crate root counts as an import of the module that defines it.
fn edges() -> BTreeSet<(String, String)> {
    let files: Vec<_> = sources()
        .into_iter()
        .map(|(m, _, code)| (m, code))
        .collect();
    let modules = declared_modules();
    let macros = exported_macros(&files);
    let mut edges = BTreeSet::new();
    for (module, code) in &files {
        if !modules.contains(module) {
            continue;
        }
        for target in targets(code, "crate") {
            let to = if modules.contains(&target) {
                target
            } else if let Some(home) = macros.get(&target) {
                home.clone()
            } else {
                continue;
            };
            edges.insert((module.clone(), to));
        }
    }
    edges.retain(|(a, b)| a != b);
    edges
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Why an edge breaks the rules, if it does.
fn violation(from: &str, to: &str) -> Option<String> {
    let (Some(lf), Some(lt)) = (layer_of(from), layer_of(to)) else {
        return Some("a module without a layer in LAYERS".to_owned());
    };
    if PROXY_SIDE.contains(&from) && SERVER_SIDE.contains(&to)
        || SERVER_SIDE.contains(&from) && PROXY_SIDE.contains(&to)
    {
        return Some("the proxy side and the server never import each other".to_owned());
    }
    (lt >= lf).then(|| format!("layer {lf} imports layer {lt}: imports point down"))
}

#[test]
fn every_top_level_module_has_a_layer() {
    let unplaced: Vec<_> = declared_modules()
        .into_iter()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "give these modules a layer in tests/it/layers.rs: {unplaced:?}"
    );
}

#[test]
fn imports_point_down_and_the_two_sides_stay_apart() {
    let edges = edges();
    let wrong: Vec<_> = edges
        .iter()
        .filter_map(|(from, to)| violation(from, to).map(|why| format!("{from} -> {to}: {why}")))
        .collect();
    assert!(
        wrong.is_empty(),
        "imports that break the layer rules (see tests/it/layers.rs):\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_pure_core_does_no_io() {
    let mut found = Vec::new();
    for (module, path, code) in sources() {
        if !PURE.contains(&module.as_str()) {
            continue;
        }
        let uses: Vec<_> = IMPURE.iter().filter(|w| code.contains(*w)).collect();
        if !uses.is_empty() {
            found.push(format!("{path} uses {uses:?}"));
        }
    }
    assert!(
        found.is_empty(),
        "the pure core does no I/O: move these to a runtime module: {found:?}"
    );
}

/// The longest a production function may be, its signature and closing brace included.
const MAX_FN_LINES: usize = 100;

/// The name of the function a line starts, if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "fn" => return words.next().map(ident_at),
            "pub" | "async" | "const" | "unsafe" | "extern" | "\"C\"" => {}
            w if w.starts_with("pub(") => {}
            _ => return None,
        }
    }
    None
}

/// Each production function of `code` (comments already stripped) with its length in lines:
/// everything before the first `#[cfg(test)]`.
fn function_lengths(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or(lines.len());
    let mut out = Vec::new();
    let mut i = 0;
    while i < end {
        let Some(name) = fn_name(lines[i]) else {
            i += 1;
            continue;
        };
        let (mut depth, mut opened, mut j) = (0i64, false, i);
        while j < lines.len() {
            let code = without_strings(lines[j]);
            depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
            opened |= code.contains('{');
            if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                break;
            }
            j += 1;
        }
        out.push((name.to_owned(), j - i + 1));
        i = j + 1;
    }
    out
}

/// A line with its string and character literals emptied, so that braces in them do not
/// count.
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            while let Some(d) = chars.next() {
                match d {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            out.push_str("\"\"");
        } else if c == '\'' && chars.clone().nth(1) == Some('\'') {
            chars.nth(1);
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn production_functions_stay_under_the_line_limit() {
    let mut long = Vec::new();
    for (_, path, code) in sources() {
        // A module file of its own that holds only tests.
        if path.ends_with("tests.rs") {
            continue;
        }
        for (name, lines) in function_lengths(&code) {
            if lines > MAX_FN_LINES {
                long.push(format!("{path}:{name}: {lines} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines: split them into named steps: {long:#?}"
    );
}

#[test]
fn the_function_reader_measures_bodies_and_ignores_braces_in_strings() {
    let code = "pub async fn a(x: u8) -> u8 {\n    let s = \"{{\";\n    let c = '{';\n    x\n}\n\
                fn b();\nfn c() {}\n#[cfg(test)]\nfn d() {\n}\n";
    assert_eq!(
        function_lengths(code),
        [
            ("a".to_owned(), 5),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1)
        ]
    );
}

#[test]
fn the_import_reader_sees_groups_macros_and_skips_comments() {
    let code = code_of(
        "use crate::{canon::{self, Url}, model};\n// crate::proxy\n/* crate::feedback */\n\
         let x = crate::config::load(); let y = webrep_crate::other;",
    );
    let t = targets(&code, "crate");
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        ["canon", "config", "model"]
    );
}

#[test]
fn the_rules_refuse_upward_sideways_and_cross_side_edges() {
    for (from, to) in [
        ("proxy", "repserver"),
        ("repserver", "feedback"),
        ("config", "proxy"),
        ("model", "repserver"),
        ("policy", "policyfile"),
        ("canon", "canon"),
        ("proxy", "nowhere"),
    ] {
        assert!(violation(from, to).is_some(), "{from} -> {to} passed");
    }
    for (from, to) in [
        ("app", "proxy"),
        ("app", "repserver"),
        ("proxy", "reputation"),
        ("repserver", "api"),
        ("policy", "model"),
        ("config", "api"),
    ] {
        assert_eq!(violation(from, to), None, "{from} -> {to}");
    }
}
