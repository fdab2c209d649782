//! Sizes and CPU counts in docker's syntax ("256m", "0.5"), parsed the same way by cm-client's flags and
//! cm-server's defaults.

/// Parses a memory size in docker's syntax: a number with an optional unit b, k, m, g or t (case-insensitive,
/// 1024-based, optionally followed by "b" or "ib": "512k", "256m", "1GB", "2GiB", "1.5g"); no unit means bytes.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "invalid memory size {s:?}: {why}; expected a number with an optional unit b, k, m, g or t, like 256m or 1g"
        )
    };
    let text = s.trim().to_ascii_lowercase();
    let digits_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let shift = match unit.trim_start() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad("unknown unit")),
    };
    let (whole, fraction) = split_decimal(number).ok_or_else(|| bad("not a non-negative number"))?;
    let scale = 1u128 << shift;
    // fraction/10^len of a unit, rounded down to whole bytes.
    let fraction_bytes = if fraction.is_empty() {
        0
    } else {
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| bad("not a number"))?;
        numerator * scale / 10u128.pow(digits.len() as u32)
    };
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("too large"))? };
    let total = whole.checked_mul(scale).and_then(|b| b.checked_add(fraction_bytes)).ok_or_else(|| bad("too large"))?;
    u64::try_from(total).map_err(|_| bad("too large"))
}

/// Parses a number of CPUs as docker's `--cpus` does ("0.5", "2", "1.25") into thousandths of a CPU; digits
/// past the third decimal round half up. Zero, negative and non-numbers are refused.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid number of CPUs {s:?}: {why}; expected a number more than 0, like 0.5 or 2");
    let (whole, fraction) = split_decimal(s.trim()).ok_or_else(|| bad("not a positive number"))?;
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("too large"))? };
    let millis_digits = fraction.chars().chain(std::iter::repeat('0')).take(3).collect::<String>();
    let mut millis: u64 = millis_digits.parse().map_err(|_| bad("not a number"))?;
    if fraction.as_bytes().get(3).is_some_and(|&d| d >= b'5') {
        millis += 1;
    }
    let total = whole.checked_mul(1000).and_then(|m| m.checked_add(millis)).ok_or_else(|| bad("too large"))?;
    if total == 0 {
        return Err(bad("must be more than 0 (at least 0.001)"));
    }
    Ok(total)
}

/// Splits "12.345" into ("12", "345"): ASCII digits around at most one dot, at least one digit in all.
fn split_decimal(s: &str) -> Option<(&str, &str)> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    (all_digits(whole) && all_digits(fraction) && !(whole.is_empty() && fraction.is_empty()))
        .then_some((whole, fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parse_memory_accepts_docker_units_1024_based_case_insensitive() {
        let cases = [
            ("1073741824", 1 << 30),
            ("0", 0),
            ("1024b", 1024),
            ("1024B", 1024),
            ("512k", 512 * 1024),
            ("512K", 512 * 1024),
            ("256m", 256 * MIB),
            ("256M", 256 * MIB),
            ("256mb", 256 * MIB),
            ("256MiB", 256 * MIB),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1gb", 1 << 30),
            ("2t", 2 << 40),
            ("1.5g", 3 << 29),
            ("0.5m", 512 * 1024),
            (" 64m ", 64 * MIB),
            ("64 m", 64 * MIB),
        ];
        for (input, want) in cases {
            assert_eq!(parse_memory(input), Ok(want), "parse_memory({input:?})");
        }
    }

    #[test]
    fn parse_memory_refuses_negatives_garbage_and_overflow_naming_the_input() {
        for input in ["", " ", "-1", "-256m", "abc", "m", "12x", "1.2.3", "1e9", "256mm", "0x10", "16777216t", "+5"] {
            let err = parse_memory(input).expect_err(input);
            assert!(err.contains(&format!("{input:?}")), "error for {input:?} does not name it: {err}");
        }
    }

    #[test]
    fn parse_cpus_gives_thousandths_and_rounds_past_three_decimals() {
        let cases = [
            ("0.5", 500),
            ("2", 2000),
            ("1.25", 1250),
            (".5", 500),
            ("1.", 1000),
            ("0.001", 1),
            ("1.2344", 1234),
            ("1.2345", 1235),
            ("0.9999", 1000),
            ("0.0005", 1),
            (" 3 ", 3000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_cpus(input), Ok(want), "parse_cpus({input:?})");
        }
    }

    #[test]
    fn parse_cpus_refuses_zero_negative_and_garbage_naming_the_input() {
        for input in ["0", "0.0", "0.0004", "-1", "-0.5", "", ".", "abc", "1.2.3", "1e3", "inf", "NaN", "2 cpus"] {
            let err = parse_cpus(input).expect_err(input);
            assert!(err.contains(&format!("{input:?}")), "error for {input:?} does not name it: {err}");
        }
        assert!(parse_cpus("99999999999999999999").unwrap_err().contains("too large"));
    }
}
