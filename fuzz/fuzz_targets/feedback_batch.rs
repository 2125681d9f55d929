//! Fuzz target for `webrep::api::events::parse_batch`, the reputation server's reading of
//! a proxy's feedback upload: any body is parsed (one result per event) or refused whole,
//! never panics, never yields more events than the bound, and every event it accepts
//! validates and is left alone by `Event::fit` (the proxy's repair changes only what the
//! server would refuse).

#![no_main]

use libfuzzer_sys::fuzz_target;
use webrep::api::events::parse_batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = parse_batch(data, 8) {
        assert!(items.len() <= 8);
        for item in items {
            if let Ok(e) = item.event {
                assert!(e.validate().is_ok());
                let mut fitted = e.clone();
                fitted.fit();
                assert_eq!(fitted, e);
            }
        }
    }
});
