//! Go `time.ParseDuration` syntax, which `resyncInterval` uses in the upstream agents:
//! a sequence of decimal numbers with units, e.g. `60s`, `1.5h`, `1h30m`, `300ms`.

/// Nanoseconds per unit, longest spellings first so `ms` is not read as `m`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Go caps durations at the largest `int64` of nanoseconds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration into signed nanoseconds; the error says what is wrong.
pub(crate) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest.is_empty() {
        return Err("empty".to_string());
    }
    // Go accepts a bare zero without a unit, and nothing else without one.
    if rest == "0" {
        return Ok(0);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!("expected a number at {rest:?}"));
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!(
                "missing unit after {number:?} (use ns, us, ms, s, m or h)"
            ));
        }
        let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} (use ns, us, ms, s, m or h)"));
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(scale(number, nanos_per_unit)?)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(|| "too large".to_string())?;
    }
    let total = total as i128;
    Ok(if negative { -total } else { total })
}

/// `number` (digits with at most one dot) times `nanos_per_unit`, truncating below a nanosecond
/// as Go does.
fn scale(number: &str, nanos_per_unit: u128) -> Result<u128, String> {
    let too_large = || "too large".to_string();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let mut nanos: u128 = 0;
    for digit in whole.bytes() {
        nanos = nanos
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(digit - b'0')))
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(too_large)?;
    }
    nanos = nanos.checked_mul(nanos_per_unit).ok_or_else(too_large)?;
    let mut place = nanos_per_unit;
    for digit in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos += u128::from(digit - b'0') * place;
    }
    Ok(nanos)
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;

    const SECOND: i128 = 1_000_000_000;

    #[test]
    fn accepts_go_spellings() {
        assert_eq!(parse_go_duration("60s"), Ok(60 * SECOND));
        assert_eq!(parse_go_duration("5m"), Ok(300 * SECOND));
        assert_eq!(parse_go_duration("1h30m"), Ok(5400 * SECOND));
        assert_eq!(parse_go_duration("1.5h"), Ok(5400 * SECOND));
        assert_eq!(parse_go_duration("1m0.5s"), Ok(60 * SECOND + SECOND / 2));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("2us"), Ok(2_000));
        assert_eq!(parse_go_duration("2\u{b5}s"), Ok(2_000));
        assert_eq!(parse_go_duration("7ns"), Ok(7));
        assert_eq!(parse_go_duration("+3s"), Ok(3 * SECOND));
        assert_eq!(parse_go_duration("-3s"), Ok(-3 * SECOND));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration(".5s"), Ok(SECOND / 2));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "-",
            "60",
            "s",
            "5x",
            "1h30",
            "1..5s",
            ".s",
            "5 m",
            "1d",
            "9999999999h",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let unit = parse_go_duration("5x").unwrap_err();
        assert!(unit.contains("\"x\""), "{unit}");
    }
}
