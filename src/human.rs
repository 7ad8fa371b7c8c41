//! Ages and durations as a person reads them, for every age the CLI and the logs print: in a sentence
//! `45 s`, `12 min`, `3 h`, `9 days` (rounded down, in the largest unit of which it is at least two:
//! `110 s`, `95 min`); in a table's narrow
//! column `45s`, `12m`, `3h 4m`, `2d 5h` (the units `--older-than` takes).

use std::fmt;
use std::time::Duration;

/// A duration that displays for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age(pub Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        // A unit is used from two of it up, so that no age is off by more than half its value
        // (and two ages side by side, an age and its grace, read apart).
        match seconds {
            0..120 => write!(f, "{seconds} s"),
            120..7_200 => write!(f, "{} min", seconds / 60),
            7_200..172_800 => write!(f, "{} h", seconds / 3_600),
            _ => write!(f, "{} days", seconds / 86_400),
        }
    }
}

impl Age {
    pub fn from_secs(seconds: u64) -> Self {
        Age(Duration::from_secs(seconds))
    }

    /// The table form: `45s`, `12m`, `3h 4m`, `2d 5h`.
    pub fn compact(self) -> String {
        match self.0.as_secs() {
            s if s < 60 => format!("{s}s"),
            s if s < 3_600 => format!("{}m", s / 60),
            s if s < 86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
            s => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
        }
    }
}

/// A duration as a person writes it: `500ms`, `5s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3_600),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_reads_in_the_largest_unit_it_has_two_of() {
        let cases = [
            (0, "0 s"),
            (45, "45 s"),
            (110, "110 s"),
            (3_599, "59 min"),
            (7_200, "2 h"),
            (86_400, "24 h"),
            (817_841_687, "9465 days"),
            (9 * 86_400 + 3_600, "9 days"),
        ];
        for (seconds, text) in cases {
            assert_eq!(Age::from_secs(seconds).to_string(), text);
        }
    }

    #[test]
    fn ages_read_in_the_largest_units() {
        assert_eq!(Age::from_secs(45).compact(), "45s");
        assert_eq!(Age::from_secs(12 * 60 + 5).compact(), "12m");
        assert_eq!(Age::from_secs(3 * 3_600 + 4 * 60).compact(), "3h 4m");
        assert_eq!(Age::from_secs(2 * 86_400 + 5 * 3_600).compact(), "2d 5h");
    }
}
