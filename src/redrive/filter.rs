//! Which dead letters a command takes: by event type, failure class, reason, and age.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::deadletter::{Letter, NO_REASON};

/// The failure classes a filter can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Class {
    Transient,
    Permanent,
    /// Messages without a failure record (moved by SQS after `maxReceiveCount` receives).
    None,
}

/// Selects dead letters; every condition given must hold.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Filter {
    /// Only this event type.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only this failure class (`none`: messages that SQS moved without a reason).
    #[arg(long, value_enum)]
    pub class: Option<Class>,
    /// Only failures whose reason or code contains this text (case-insensitive).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only messages that failed longer ago than this (`90s`, `15m`, `2h`, `3d`).
    #[arg(long, value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Only messages that failed more recently than this.
    #[arg(long, value_parser = parse_age)]
    pub newer_than: Option<Duration>,
}

impl Filter {
    pub fn matches(&self, letter: &Letter, now: DateTime<Utc>) -> bool {
        if let Some(kind) = &self.event_type
            && letter.event_type().as_deref() != Some(kind.as_str())
        {
            return false;
        }
        if let Some(class) = self.class {
            let wanted = match class {
                Class::Transient => "transient",
                Class::Permanent => "permanent",
                Class::None => NO_REASON,
            };
            if letter.class() != wanted {
                return false;
            }
        }
        if let Some(text) = &self.reason {
            let text = text.to_lowercase();
            if !letter.reason().to_lowercase().contains(&text)
                && !letter.code().to_lowercase().contains(&text)
            {
                return false;
            }
        }
        if self.older_than.is_some() || self.newer_than.is_some() {
            let Some(age) = letter.age(now) else {
                return false;
            };
            if self.older_than.is_some_and(|limit| age <= limit)
                || self.newer_than.is_some_and(|limit| age >= limit)
            {
                return false;
            }
        }
        true
    }
}

/// `90s`, `15m`, `2h`, `3d` (a bare number is seconds).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not an age: write a number and a unit, e.g. 90s, 15m, 2h, 3d")
    })?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use s, m, h or d"
            ));
        }
    };
    let total = number.checked_mul(seconds).ok_or_else(|| {
        format!(
            "`{text}` is too long an age to count in seconds: write a smaller number, e.g. 3650d"
        )
    })?;
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_seconds_minutes_hours_and_days() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_age("3d"), Ok(Duration::from_secs(259_200)));
        assert_eq!(parse_age("45"), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn an_age_without_a_number_or_with_an_unknown_unit_is_refused() {
        assert!(parse_age("soon").unwrap_err().contains("not an age"));
        assert!(parse_age("3w").unwrap_err().contains("unknown unit `w`"));
    }

    #[test]
    fn an_age_too_long_to_count_in_seconds_is_refused() {
        let age = format!("{}d", u64::MAX / 86_400 + 1);
        assert!(parse_age(&age).unwrap_err().contains("too long an age"));
    }
}
