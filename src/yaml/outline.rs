//! The outline of block-style YAML, read from the text line by line without parsing it: the
//! keys and list items a position is nested in, where each key is, and how to blank one key
//! (its line and the lines under it) so that a parse can go on past an error in it.
//!
//! It reads what a YAML file edited by hand looks like (block mappings and lists, one key per
//! line, flow collections on one line), which is what the configuration and the policy files
//! are. Text it cannot read that way yields no path (messages then name no key) or nothing to
//! blank (the parse stops at that error). Linear in the lines walked; no allocation beyond
//! the path it returns.

/// One step of a path: a mapping key, or the index of a list item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Item(usize),
}

/// A step with the 1-based line and column of its key (or of the item's `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub step: Step,
    pub line: u32,
    pub column: u32,
}

/// What one line holds: its indentation, the columns of its `- ` item markers and its key.
struct Shape<'a> {
    /// Column (1-based) of the first character that is not a space; 0 for a blank line or
    /// one holding only a comment.
    first: u32,
    dashes: Vec<u32>,
    key: Option<(&'a str, u32)>,
}

fn shape(line: &str) -> Shape<'_> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let mut rest = &line[indent..];
    if rest.trim().is_empty() || rest.starts_with('#') {
        return Shape {
            first: 0,
            dashes: Vec::new(),
            key: None,
        };
    }
    let mut at = indent;
    let mut dashes = Vec::new();
    while rest == "-" || rest.starts_with("- ") {
        dashes.push(col(at));
        let skipped = 1 + rest[1..].len() - rest[1..].trim_start_matches(' ').len();
        at += skipped;
        rest = &rest[skipped..];
    }
    Shape {
        first: col(indent),
        dashes,
        key: key_of(rest).map(|k| (k, col(at))),
    }
}

fn col(byte_index: usize) -> u32 {
    u32::try_from(byte_index + 1).unwrap_or(u32::MAX)
}

/// The key at the start of `rest` (`key:` or `key: value`, the key plain or quoted).
fn key_of(rest: &str) -> Option<&str> {
    let (key, after) = if let Some(q @ ('"' | '\'')) = rest.chars().next() {
        let end = rest[1..].find(q)? + 1;
        (&rest[1..end], &rest[end + 1..])
    } else {
        if rest.starts_with(['[', '{', '#', '&', '*', '!', '|', '>']) {
            return None;
        }
        let end = rest
            .match_indices(':')
            .map(|(i, _)| i)
            .find(|&i| rest[i + 1..].is_empty() || rest[i + 1..].starts_with([' ', '\t']))?;
        (rest[..end].trim_end(), &rest[end..])
    };
    let after = after.strip_prefix(':')?;
    ((after.is_empty() || after.starts_with([' ', '\t'])) && !key.is_empty()).then_some(key)
}

/// The keys and items that the position (1-based line and column) is in, outermost first.
/// A key that starts exactly at the position counts (errors about a key point at it).
pub(crate) fn path_at(lines: &[&str], line: u32, column: u32) -> Vec<Segment> {
    let mut out = Vec::new();
    let last = (line as usize).min(lines.len());
    // A parent key may be at the column of its list's `-`, a parent item only left of it.
    let mut key_limit = column.saturating_add(1);
    let mut dash_limit = key_limit;
    for l in (1..=last).rev() {
        let s = shape(lines[l - 1]);
        if s.first == 0 || s.first >= key_limit {
            continue;
        }
        let l32 = u32::try_from(l).unwrap_or(u32::MAX);
        if let Some((k, kc)) = s.key
            && kc < key_limit
            && kc < dash_limit.saturating_add(1)
        {
            out.push(Segment {
                step: Step::Key(k.to_owned()),
                line: l32,
                column: kc,
            });
            key_limit = kc;
            dash_limit = kc;
        }
        for &d in s.dashes.iter().rev() {
            if d < dash_limit {
                out.push(Segment {
                    step: Step::Item(item_index(lines, l, d)),
                    line: l32,
                    column: d,
                });
                dash_limit = d;
                key_limit = d + 1;
            }
        }
        if key_limit <= 1 {
            break;
        }
    }
    out.reverse();
    out
}

/// Which item of its list the `-` at column `d` of line `l` (1-based) is.
fn item_index(lines: &[&str], l: usize, d: u32) -> usize {
    let mut n = 0;
    for above in lines[..l - 1].iter().rev() {
        let s = shape(above);
        if s.first == 0 || s.first > d {
            continue;
        }
        if s.first == d && s.dashes.first() == Some(&d) {
            n += 1;
            continue;
        }
        break;
    }
    n
}

/// A path as admins write it: `reputation.sources[0].token_file`.
pub(crate) fn dotted(path: &[Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match &seg.step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Item(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Every key of the text with its dotted path, line and column, in file order.
pub(crate) fn key_positions(text: &str) -> Vec<(String, u32, u32)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some((_, kc)) = shape(line).key {
            let l = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let path = path_at(&lines, l, kc);
            out.push((dotted(&path), l, kc));
        }
    }
    out
}

/// The line of the first `key` among the siblings of the key at (`line`, `column`): for a
/// duplicate key, where the first one is.
pub(crate) fn first_sibling(lines: &[&str], line: u32, column: u32, key: &str) -> Option<u32> {
    let mut first = None;
    for l in (1..(line as usize).min(lines.len() + 1)).rev() {
        let s = shape(lines[l - 1]);
        if s.first == 0 {
            continue;
        }
        match s.key {
            Some((k, kc)) if kc == column => {
                if k == key {
                    first = u32::try_from(l).ok();
                }
                if s.dashes.last().is_some_and(|&d| d < column) {
                    break;
                }
            }
            _ if s.first > column => {}
            _ => break,
        }
    }
    first
}

/// Blanks the key or item `seg` of `lines` (its text from its column, and the lines nested
/// under it), then every enclosing key or item left empty by that, so that a parse of the
/// rest goes on as if it had never been written. Returns the names of the keys blanked.
pub(crate) fn blank(lines: &mut [String], path: &[Segment]) -> Vec<String> {
    let mut names = Vec::new();
    for (depth, seg) in path.iter().enumerate().rev() {
        let is_target = depth + 1 == path.len();
        if !is_target && !is_empty_block(lines, seg) {
            break;
        }
        blank_one(lines, seg);
        if let Step::Key(k) = &seg.step {
            names.push(k.clone());
        }
    }
    names
}

fn blank_one(lines: &mut [String], seg: &Segment) {
    let l = seg.line as usize - 1;
    let c = seg.column as usize - 1;
    if let Some(line) = lines.get_mut(l) {
        line.truncate(c.min(line.len()));
    }
    for line in lines.iter_mut().skip(l + 1) {
        let s = shape(line);
        let nested = s.first == 0
            || s.first > seg.column
            || (matches!(seg.step, Step::Key(_))
                && s.first == seg.column
                && s.dashes.first() == Some(&seg.column));
        if !nested {
            break;
        }
        line.clear();
    }
}

/// Whether the key or item holds nothing any more: no value after it on its line, and no
/// line under it.
fn is_empty_block(lines: &[String], seg: &Segment) -> bool {
    let l = seg.line as usize - 1;
    let Some(line) = lines.get(l) else {
        return false;
    };
    let c = (seg.column as usize - 1).min(line.len());
    let after = match &seg.step {
        Step::Key(_) => line[c..].split_once(':').map_or("", |(_, v)| v),
        Step::Item(_) => line.get(c + 1..).unwrap_or(""),
    };
    let after = after.trim();
    if !(after.is_empty() || after.starts_with('#')) {
        return false;
    }
    for next in lines.iter().skip(l + 1) {
        let s = shape(next);
        if s.first == 0 {
            continue;
        }
        let nested = s.first > seg.column
            || (matches!(seg.step, Step::Key(_))
                && s.first == seg.column
                && s.dashes.first() == Some(&seg.column));
        return !nested;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
proxy:
  listen: [\"127.0.0.1:3128\"]
  # a comment
  max_connections: 10
rules:
  - id: r1
    match:
      clients: [\"10.0.0.0/40\"]
  - id: r2
    action: block
list:
- a
- b: 1
";

    fn lines() -> Vec<&'static str> {
        DOC.lines().collect()
    }

    #[test]
    fn paths_name_keys_and_items() {
        let l = lines();
        assert_eq!(dotted(&path_at(&l, 4, 20)), "proxy.max_connections");
        assert_eq!(dotted(&path_at(&l, 4, 3)), "proxy.max_connections");
        assert_eq!(dotted(&path_at(&l, 8, 17)), "rules[0].match.clients");
        assert_eq!(dotted(&path_at(&l, 10, 13)), "rules[1].action");
        assert_eq!(dotted(&path_at(&l, 9, 5)), "rules[1].id");
        assert_eq!(dotted(&path_at(&l, 13, 6)), "list[1].b");
        assert_eq!(dotted(&path_at(&l, 12, 3)), "list[0]");
    }

    #[test]
    fn key_positions_list_every_key() {
        let keys = key_positions(DOC);
        assert!(keys.contains(&("proxy.listen".into(), 2, 3)), "{keys:?}");
        assert!(
            keys.contains(&("rules[1].action".into(), 10, 5)),
            "{keys:?}"
        );
        assert!(keys.contains(&("rules[0].match.clients".into(), 8, 7)));
    }

    #[test]
    fn first_sibling_finds_the_earlier_duplicate() {
        let text = "a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\nb: 2\n";
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(first_sibling(&l, 5, 3, "x"), Some(3));
        assert_eq!(first_sibling(&l, 6, 1, "b"), Some(2));
        assert_eq!(first_sibling(&l, 4, 3, "y"), None);
    }

    #[test]
    fn blanking_a_key_removes_its_block_and_emptied_parents() {
        let mut doc: Vec<String> = DOC.lines().map(str::to_owned).collect();
        let l = lines();
        let names = blank(&mut doc, &path_at(&l, 8, 7));
        // `clients` was all of `match`, so `match` goes too; the item keeps its id.
        assert_eq!(names, ["clients", "match"]);
        assert_eq!(doc[5], "  - id: r1");
        assert!(doc[6].trim().is_empty() && doc[7].trim().is_empty());
        assert_eq!(doc[8], "  - id: r2");
        let names = blank(&mut doc, &path_at(&l, 4, 3));
        assert_eq!(names, ["max_connections"]);
        assert_eq!(doc[1], "  listen: [\"127.0.0.1:3128\"]");
    }
}
