//! Feeds arbitrary bytes to the journal entry decoder, as replay does with
//! whatever it finds in the journal region: it must return a result, never
//! panic, and every record and data claim it accepts must lie inside the
//! input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigilfs::journal::{decode_entry, decode_header};

const UUID: [u8; 16] = [0x5A; 16];

fuzz_target!(|bytes: &[u8]| {
    // Make the magic and UUID line up often, so the fuzzer gets past them.
    let mut input = bytes.to_vec();
    if input.len() >= 40 && input[0] & 1 == 1 {
        input[..8].copy_from_slice(b"VGFSJENT");
        input[24..40].copy_from_slice(&UUID);
    }
    for block_size in [512usize, 4096] {
        let _ = decode_header(&input, &UUID, block_size);
        if let Ok(entry) = decode_entry(&input, &UUID, block_size) {
            let records: usize = entry.records.iter().map(|record| record.len()).sum();
            let claims: usize = entry.claims.iter().map(|claim| claim.record_bytes()).sum();
            assert!(records + claims <= entry.header.payload_bytes as usize);
        }
    }
});
