//! Byte sizes on the command line: `4096`, `64M`, `1.5G`... (powers of 1024),
//! or hexadecimal (`0x1f400`), as kernel logs and `hexdump` print offsets.

use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from a number with an optional K/M/G/T suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.starts_with('-') {
            return Err(format!(
                "`{text}` is negative: sizes and offsets start at 0"
            ));
        }
        if let Some(hex) = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
        {
            return match u64::from_str_radix(hex, 16) {
                Ok(bytes) if bytes > 0 => Ok(ByteSize(bytes)),
                Err(error) if *error.kind() == std::num::IntErrorKind::PosOverflow => Err(format!(
                    "`{text}` is too large: sizes and offsets end at 0xffffffffffffffff"
                )),
                _ => Err(format!(
                    "`{text}` is not a size (hexadecimal: 0x followed by hex digits, not 0)"
                )),
            };
        }
        let split = trimmed
            .find(|character: char| !(character.is_ascii_digit() || character == '.'))
            .unwrap_or(trimmed.len());
        let (number, suffix) = trimmed.split_at(split);
        let multiplier: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size suffix `{other}` in `{text}` (use K, M, G or T)"
                ))
            }
        };
        let not_a_size = || format!("`{text}` is not a size (examples: 4096, 64M, 1.5G)");
        let out_of_range = || format!("size `{text}` is out of range");
        // Exact decimal arithmetic (an f64 rounds: 4095.9999999999999 is
        // 4096 to it): whole part and fraction as integers.
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(not_a_size());
        }
        if fraction.len() > 30 {
            return Err(format!("`{text}` has more decimals than any size needs"));
        }
        let digits = |part: &str| -> Result<u128, String> {
            if part.is_empty() {
                return Ok(0);
            }
            part.parse::<u128>().map_err(|error| match error.kind() {
                std::num::IntErrorKind::PosOverflow => out_of_range(),
                _ => not_a_size(),
            })
        };
        let multiplier = u128::from(multiplier);
        let scale = 10u128.pow(fraction.len() as u32);
        let whole_bytes = digits(whole)?
            .checked_mul(multiplier)
            .ok_or_else(out_of_range)?;
        let fraction_scaled = digits(fraction)?
            .checked_mul(multiplier)
            .ok_or_else(out_of_range)?;
        if fraction_scaled % scale != 0 {
            return Err(format!("`{text}` is not a whole number of bytes"));
        }
        let bytes = whole_bytes
            .checked_add(fraction_scaled / scale)
            .ok_or_else(out_of_range)?;
        match u64::try_from(bytes) {
            Ok(0) | Err(_) => Err(out_of_range()),
            Ok(bytes) => Ok(ByteSize(bytes)),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("T", 1 << 40),
            ("G", 1 << 30),
            ("M", 1 << 20),
            ("K", 1 << 10),
        ];
        for (unit, scale) in UNITS {
            if self.0 >= scale && self.0 % scale == 0 {
                return write!(formatter, "{}{unit}", self.0 / scale);
            }
        }
        write!(formatter, "{} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("64M".parse(), Ok(ByteSize(64 << 20)));
        assert_eq!("1g".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("1.5G".parse(), Ok(ByteSize(3 << 29)));
        assert_eq!("2TiB".parse(), Ok(ByteSize(2 << 40)));
    }

    #[test]
    fn hexadecimal_sizes_parse_as_kernel_logs_print_them() {
        assert_eq!("0x1000".parse(), Ok(ByteSize(4096)));
        assert_eq!("0XfFfF".parse(), Ok(ByteSize(0xffff)));
        assert!("0x".parse::<ByteSize>().is_err());
        assert!("0x0".parse::<ByteSize>().is_err());
        assert!("0x1g".parse::<ByteSize>().is_err());
        assert!("0x10000000000000000"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        assert!("".parse::<ByteSize>().is_err());
        assert!("12Q".parse::<ByteSize>().unwrap_err().contains("suffix"));
        for negative in ["-5M", "-0x10", " -1"] {
            let error = negative.parse::<ByteSize>().unwrap_err();
            assert!(error.contains("negative"), "{negative}: {error}");
        }
        assert!("0".parse::<ByteSize>().is_err());
        assert!("99999999T".parse::<ByteSize>().is_err());
        assert!("1.9"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("whole number of bytes"));
        assert!("18446744073709551616".parse::<ByteSize>().is_err());
    }

    #[test]
    fn whole_numbers_of_bytes_are_exact() {
        assert_eq!(
            "9007199254740993".parse(),
            Ok(ByteSize(9_007_199_254_740_993))
        );
        assert_eq!("18446744073709551615".parse(), Ok(ByteSize(u64::MAX)));
        assert_eq!("1.5K".parse(), Ok(ByteSize(1536)));
        assert_eq!("0.5K".parse(), Ok(ByteSize(512)));
        assert_eq!(".5K".parse(), Ok(ByteSize(512)));
        assert_eq!("4096.000".parse(), Ok(ByteSize(4096)));
    }

    #[test]
    fn fractions_of_a_byte_are_refused_whatever_the_unit() {
        for text in [
            "0.1K",
            "1.0000000001K",
            "4095.9999999999999",
            "7.99999999999999999999G",
            "0.5",
        ] {
            let error = text.parse::<ByteSize>().unwrap_err();
            assert!(error.contains("whole number of bytes"), "{text}: {error}");
        }
        assert!("1.2.3".parse::<ByteSize>().is_err());
        assert!(".".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64M");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }
}
