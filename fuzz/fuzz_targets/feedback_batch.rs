//! Fuzz target for `webrep::feedback::event::parse_batch`, the reputation server's reading of
//! a proxy's feedback upload: any body is parsed or refused, never panics, and never yields
//! more events than the bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use webrep::feedback::event::parse_batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_batch(data, 8) {
        assert!(events.len() <= 8);
    }
});
