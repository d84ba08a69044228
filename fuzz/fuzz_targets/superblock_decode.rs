//! Feeds arbitrary bytes to the superblock decoder: it must return a result, never panic, and
//! whatever it accepts must re-encode to a superblock that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigilfs::format::Superblock;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(superblock) = Superblock::decode(bytes) {
        let encoded = superblock
            .encode()
            .expect("a decoded superblock is valid, so it encodes");
        let again = Superblock::decode(&encoded).expect("an encoded superblock decodes");
        assert_eq!(again, superblock);
    }
});
