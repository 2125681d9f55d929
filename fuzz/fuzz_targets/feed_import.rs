//! Fuzz target for `webrep::repserver::import::parse`: a feed of any bytes, in any of the
//! formats, is imported or refused as a whole with an error, never panics; every entry it
//! yields has a key that parses back to itself, and the report's counts add up.

#![no_main]

use libfuzzer_sys::fuzz_target;
use webrep::repserver::import::{Format, ImportOptions, Item, parse};
use webrep::model::{Category, Key, Sha256Hex, Taxonomy};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, feed)) = data.split_first() else {
        return;
    };
    let format = Format::ALL[usize::from(selector) % Format::ALL.len()];
    let mut opts = ImportOptions::new(format, "fuzz", 1_700_000_000);
    opts.max_line_bytes = 1024;
    opts.max_bad_lines = 4;
    if selector & 0x80 != 0 || format == Format::DomainList {
        opts.category = Some(Category::parse("malware").unwrap());
    }
    let taxonomy = Taxonomy::default();
    let mut yielded = 0u64;
    let report = parse(feed, &opts, &taxonomy, |item| {
        yielded += 1;
        match item {
            Item::Url(e) => {
                let again = Key::parse(e.key.as_str())
                    .unwrap_or_else(|err| panic!("key {:?} does not parse back: {err}", e.key));
                assert_eq!(again, e.key, "key not canonical");
                let mut sorted = e.categories.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted, e.categories, "categories not sorted and unique");
            }
            Item::File(f) => {
                assert!(
                    Sha256Hex::parse(f.sha256.as_str()).is_some(),
                    "hash {:?}",
                    f.sha256
                );
            }
        }
        Ok(())
    });
    if let Ok(r) = report {
        assert_eq!(r.imported, yielded, "imported count");
        assert!(r.bad.len() <= opts.max_bad_lines);
        assert!(r.bad_total >= r.bad.len() as u64);
        assert!(
            r.imported + r.skipped + r.bad_total <= r.lines.max(1) * 64,
            "counts"
        );
    }
});
