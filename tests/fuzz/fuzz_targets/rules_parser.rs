//! Fuzzes the rules file parser (TOML, then rules, then Jinja templates): any text must load or be
//! refused with an error that names the file, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = opsrelay::rules::Rules::parse("fuzz.toml", text) {
            assert!(error.to_string().starts_with("rules file fuzz.toml: "));
        }
    }
});
