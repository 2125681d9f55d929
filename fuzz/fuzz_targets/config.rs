//! Fuzz target for the proxy configuration: any text either loads (`Config::from_yaml`) or is
//! refused with an error naming the problem, never panics. Seed it with
//! `config/webrep.example.yaml` (see `fuzz/README.md`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use webrep::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_yaml(text, "fuzz.yaml") {
        assert!(!e.to_string().is_empty());
    }
});
