//! Feeds arbitrary text to the fault rule parser (it takes user input from the CLI): no
//! panics, and an accepted rule prints to text that parses back to the same rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigilfs::device::FaultRule;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(rule) = text.parse::<FaultRule>() {
        let printed = rule.to_string();
        let again: FaultRule = printed.parse().expect("a printed rule parses");
        assert_eq!(again, rule);
    }
});
