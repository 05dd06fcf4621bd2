//! The one duration syntax of the command line, for every option that takes one
//! (`--timeout`, `--expires-in`, `--lease-duration`): a plain number of seconds (`30`), or
//! numbers with units (`90s`, `5m`, `1h30m`, `30d`, `2w`, `300ms`; ISO 8601 `P30D` too).
//! A day is 24 hours, so a lifetime does not depend on a time zone; months and years are
//! refused, their length depends on the date. Go durations (`1h30m`, `1.5h`), which
//! `wait --timeout` and `--lease-duration` took before, keep working.

use std::time::Duration;

use jiff::{Span, SpanRelativeTo};

/// What every refusal says: how to write a duration.
pub const HINT: &str =
    "write a number of seconds (30) or a number with a unit: 90s, 5m, 1h, 30d, 2w";

/// A command-line duration that is not one.
#[derive(Debug, thiserror::Error)]
#[error("{problem}; {HINT}")]
pub struct DurationError {
    problem: Problem,
}

#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("not a duration")]
    Syntax,
    #[error("months and years have no fixed length")]
    Calendar,
    #[error("it must not be negative")]
    Negative,
    #[error("it must be longer than zero")]
    Zero,
    #[error("it must be at least {0:?}")]
    TooShort(Duration),
}

/// Any duration, zero included.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let fail = |problem| DurationError { problem };
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| fail(Problem::Syntax));
    }
    let span: Span = text.parse().map_err(|_| fail(Problem::Syntax))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(fail(Problem::Calendar));
    }
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| fail(Problem::Syntax))?;
    Duration::try_from(signed).map_err(|_| fail(Problem::Negative))
}

/// A duration longer than zero (`--expires-in`).
pub fn positive(text: &str) -> Result<Duration, DurationError> {
    at_least(text, Duration::from_nanos(1), Problem::Zero)
}

/// A duration of at least a second (`--lease-duration`: Leases count whole seconds).
pub fn at_least_a_second(text: &str) -> Result<Duration, DurationError> {
    let second = Duration::from_secs(1);
    at_least(text, second, Problem::TooShort(second))
}

fn at_least(text: &str, min: Duration, problem: Problem) -> Result<Duration, DurationError> {
    let d = parse(text)?;
    if d < min {
        return Err(DurationError { problem });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .as_secs()
    }

    #[test]
    fn a_plain_number_is_seconds_and_units_mean_what_they_say() {
        assert_eq!(secs("30"), 30);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h"), 3600);
        assert_eq!(secs("30d"), 30 * 86_400);
        assert_eq!(secs("2w"), 14 * 86_400);
        assert_eq!(secs("P2D"), 2 * 86_400);
        assert_eq!(secs("1w 2d"), 9 * 86_400);
        assert_eq!(parse("300ms").unwrap(), Duration::from_millis(300));
    }

    #[test]
    fn go_durations_the_kubernetes_options_took_still_parse() {
        assert_eq!(secs("15s"), 15);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("2h45m10s"), 9910);
        assert_eq!(secs("1.5h"), 5400);
    }

    #[test]
    fn refusals_say_how_to_write_a_duration() {
        for bad in ["soon", "", "1mo", "1y", "-1d", "5 parsecs", "1.5"] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.ends_with(HINT), "{bad}: {e}");
        }
        assert!(parse("1mo").unwrap_err().to_string().starts_with("months"));
        assert!(positive("0s").is_err());
        assert!(positive("0").is_err());
        assert_eq!(positive("1h").unwrap().as_secs(), 3600);
        assert!(at_least_a_second("500ms").is_err());
        assert_eq!(at_least_a_second("1s").unwrap().as_secs(), 1);
    }
}
