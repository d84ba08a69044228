//! CRC-32C checksums for on-disk structures.
//!
//! CRC-32C (Castagnoli) because CPUs compute it in hardware and it is what ext4, btrfs and
//! XFS metadata use. A structure stores its checksum inside itself; the checksum is computed
//! with that field taken as zero bytes, so writer and reader agree without a second buffer.

use std::ops::Range;

/// The CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC-32C over more bytes, so a checksum can cover several slices.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// The CRC-32C of `bytes` with the bytes in `zeroed` replaced by zeros: the checksum of a
/// structure whose own checksum field is `zeroed`. Parts of `zeroed` outside `bytes` are
/// ignored.
pub fn crc32c_with_zeroed(bytes: &[u8], zeroed: Range<usize>) -> u32 {
    let start = zeroed.start.min(bytes.len());
    let end = zeroed.end.clamp(start, bytes.len());
    let mut crc = crc32c(&bytes[..start]);
    const ZEROS: [u8; 64] = [0; 64];
    let mut remaining = end - start;
    while remaining > 0 {
        let step = remaining.min(ZEROS.len());
        crc = crc32c_append(crc, &ZEROS[..step]);
        remaining -= step;
    }
    crc32c_append(crc, &bytes[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn zeroed_field_checksum_equals_checksum_of_the_zeroed_copy() {
        let bytes: Vec<u8> = (0..200u8).collect();
        let mut copy = bytes.clone();
        copy[16..20].fill(0);
        assert_eq!(crc32c_with_zeroed(&bytes, 16..20), crc32c(&copy));
        assert_eq!(crc32c_with_zeroed(&bytes, 300..400), crc32c(&bytes));
        assert_eq!(crc32c_with_zeroed(&bytes, 190..400), {
            let mut tail = bytes.clone();
            tail[190..].fill(0);
            crc32c(&tail)
        });
    }
}
