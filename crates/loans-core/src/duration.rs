//! Lengths of time as the command lines take them (`90s`, `5m`, `2h`, `1d`) and as messages
//! show them.

use std::time::Duration;

/// Parses `90s`, `5m`, `2h` or `1d`: at most `u64::MAX` seconds, or the error says so.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, u64::MAX, "")
}

/// As [`parse_duration`], refusing more than `max` seconds with a message that names the limit
/// and ends with `why`.
pub fn parse_duration_up_to(text: &str, max: u64, why: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; use s, m, h or d, as in 5m"))?;
    let (number, unit) = text.split_at(split);
    let too_long = || format!("{text:?} is too long: at most {max} seconds{why}");
    let number: u64 = number.parse().map_err(|err: std::num::ParseIntError| {
        if *err.kind() == std::num::IntErrorKind::PosOverflow {
            too_long()
        } else {
            format!("{text:?} does not start with a whole number")
        }
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use s, m, h or d"
            ));
        }
    };
    if number == 0 {
        return Err("must be more than zero".to_owned());
    }
    number
        .checked_mul(seconds)
        .filter(|&total| total <= max)
        .map(Duration::from_secs)
        .ok_or_else(too_long)
}

/// `125s` -> `2m05s`, for messages.
pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("").is_err());
        // The largest number of days whose seconds fit in a u64, and one more: refused, not
        // wrapped around (213503982334602 days would wrap to 61184 seconds).
        let max_days = u64::MAX / 86_400;
        assert_eq!(
            parse_duration(&format!("{max_days}d")),
            Ok(Duration::from_secs(max_days * 86_400))
        );
        let too_long = format!("is too long: at most {} seconds", u64::MAX);
        for text in [
            "213503982334602d".to_owned(),
            format!("{}s", u128::from(u64::MAX) + 1),
            "99999999999999999999999999d".to_owned(),
        ] {
            assert!(
                parse_duration(&text).unwrap_err().ends_with(&too_long),
                "{text}"
            );
        }
        assert_eq!(
            parse_duration(&format!("{}s", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }
}
