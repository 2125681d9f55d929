//! The server's answers outside lookups, file reputation and feedback: errors, `GET /healthz`,
//! writes (`POST /v1/entries`, `POST /v1/files`), feed imports (`POST /v1/import`),
//! categories (`GET` and `POST /v1/categories`), as the server writes them and as the command
//! line reads them (`docs/repserver.md`).

use serde::{Deserialize, Serialize};

use crate::model::BUILTIN_CATEGORIES;

/// Every error answer: the status says what kind, this says what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// The problem, for humans (a bad input is named).
    pub error: String,
}

/// `GET /healthz`: the server is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The change sequence number.
    pub seq: u64,
    /// URLs and hosts looked up since start.
    pub lookups: u64,
    /// How far this server's mirror of its upstream tier is; absent when it follows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<FollowHealth>,
    /// With feedback forwarding to an upstream tier: the events stored and not yet
    /// forwarded, as the forwarder last saw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_behind: Option<u64>,
}

impl Health {
    /// Up, at sequence `seq`, after `lookups` lookups.
    pub fn ok(seq: u64, lookups: u64) -> Health {
        Health {
            status: "ok".to_owned(),
            seq,
            lookups,
            upstream: None,
            forward_behind: None,
        }
    }
}

/// The follower's part of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowHealth {
    /// `new` (nothing copied yet), `snapshot` (copying) or `following`.
    pub state: String,
    /// A whole copy of the upstream's table is in place (it may lag).
    pub complete: bool,
    /// The upstream answered the last exchange.
    pub reachable: bool,
    /// The upstream's change sequence at its last answer.
    pub upstream_seq: u64,
    /// The upstream sequence the mirror is complete through.
    pub applied_seq: u64,
    /// Upstream transactions known and not yet applied.
    pub behind: u64,
    /// Seconds since the upstream last answered; `null` when it never has.
    pub last_answer_secs_ago: Option<u64>,
}

/// The answer to a write (`POST /v1/entries`, `POST /v1/files`): the sequence number of its
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The change sequence number after the write.
    pub seq: u64,
}

/// The answer to `POST /v1/import`: what the import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportAnswer {
    /// The change sequence number of the import.
    pub seq: u64,
    /// Lines read.
    pub lines: u64,
    /// Entries written.
    pub imported: u64,
    /// Comment, blank and header lines and local names.
    pub skipped: u64,
    /// All bad lines, counted.
    pub bad_total: u64,
    /// The first bad lines (as many as the server keeps), in order.
    pub bad: Vec<BadLine>,
    /// The file did not end with a newline.
    pub unterminated_last_line: bool,
}

/// A feed line an import refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// `POST /v1/categories` (admin): categories to define.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefineCategories {
    /// Their names (built-in names are refused).
    pub define: Vec<String>,
}

/// The answer to `GET` and `POST /v1/categories`: the built-in taxonomy and the categories
/// an admin defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categories {
    /// The built-in categories.
    pub builtin: Vec<BuiltinCategory>,
    /// The admin-defined ones, by name.
    pub custom: Vec<String>,
}

/// A built-in category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltinCategory {
    /// Its name.
    pub name: String,
    /// `security` or `content`.
    pub class: String,
}

impl Categories {
    /// The built-in taxonomy with the admin-defined `custom` categories.
    pub fn with_custom(custom: Vec<String>) -> Categories {
        Categories {
            builtin: BUILTIN_CATEGORIES
                .iter()
                .map(|(name, class)| BuiltinCategory {
                    name: (*name).to_owned(),
                    class: format!("{class:?}").to_ascii_lowercase(),
                })
                .collect(),
            custom,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The wire forms, field for field, as `docs/repserver.md` and the command line know them.
    #[test]
    fn answers_have_their_documented_fields() {
        assert_eq!(
            as_json(&Health::ok(3, 4)),
            json!({ "status": "ok", "seq": 3, "lookups": 4 })
        );
        assert_eq!(as_json(&Written { seq: 9 }), json!({ "seq": 9 }));
        assert_eq!(
            as_json(&ErrorAnswer {
                error: "no such path".into()
            }),
            json!({ "error": "no such path" })
        );
        let import = ImportAnswer {
            seq: 5,
            lines: 3,
            imported: 1,
            skipped: 1,
            bad_total: 1,
            bad: vec![BadLine {
                line: 2,
                reason: "not a URL".into(),
            }],
            unterminated_last_line: true,
        };
        assert_eq!(
            as_json(&import),
            json!({
                "seq": 5, "lines": 3, "imported": 1, "skipped": 1, "bad_total": 1,
                "bad": [{ "line": 2, "reason": "not a URL" }],
                "unterminated_last_line": true,
            })
        );
        let categories = Categories::with_custom(vec!["intranet".into()]);
        let v = as_json(&categories);
        assert_eq!(
            v["builtin"][0],
            json!({ "name": "malware", "class": "security" })
        );
        assert_eq!(v["custom"], json!(["intranet"]));
    }

    fn as_json<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }
}
