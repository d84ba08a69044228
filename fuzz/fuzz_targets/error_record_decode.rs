//! Feeds arbitrary bytes to the error record decoder: no panics, and accepted records
//! roundtrip through encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigilfs::format::ErrorRecord;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = ErrorRecord::decode(bytes) {
        let encoded = record
            .encode()
            .expect("a decoded error record is valid, so it encodes");
        assert_eq!(ErrorRecord::decode(&encoded).expect("roundtrip"), record);
    }
});
