//! Arbitrary text through the configuration loader: a configuration or an error naming the
//! file, never a panic.
//!
//! Input: the file's text (UTF-8); other inputs are skipped.

#![no_main]

use std::path::Path;

use herald_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Err(error) = Config::parse(text, "fuzz.toml", Path::new("/etc/herald")) {
        assert!(error.to_string().starts_with("fuzz.toml"));
    }
});
