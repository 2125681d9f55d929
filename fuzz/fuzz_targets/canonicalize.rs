//! Fuzz target for `webrep::canon`: any byte string either canonicalizes or returns a
//! `CanonError`, never panics, and a canonical URL obeys the invariants checked below.

#![no_main]

use libfuzzer_sys::fuzz_target;
use webrep::canon::{MAX_EXPRESSIONS, canonicalize, canonicalize_bytes};

fuzz_target!(|data: &[u8]| {
    let Ok(url) = canonicalize_bytes(data) else {
        return;
    };
    let s = url.as_str();
    assert!(
        s.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "not printable ASCII: {s:?}"
    );

    let again = canonicalize(s).unwrap_or_else(|e| panic!("canonical {s:?} refused: {e}"));
    assert_eq!(again.as_str(), s, "not idempotent");

    let first: Vec<&str> = url.expressions().map(|e| e.as_str()).collect();
    let second: Vec<&str> = again.expressions().map(|e| e.as_str()).collect();
    assert_eq!(first, second, "expressions differ on the canonical form");
    assert!(!first.is_empty() && first.len() <= MAX_EXPRESSIONS);
    for e in url.expressions() {
        assert!(url.host().ends_with(e.host()), "{e} host");
        assert!(url.path_and_query().starts_with(e.path()), "{e} path");
        assert!(e.path().starts_with('/'), "{e} path start");
    }
});
