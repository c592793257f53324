//! Calendar months, the unit of an invoice (Art. 15-1), and the days they hold.

use std::{fmt, str::FromStr};

use chrono::{Datelike, Months};
use serde::{Serialize, Serializer};

use crate::model::Day;

/// A calendar month, written `YYYY-MM` (years 0001-9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    first: Day,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        if !(1..=9999).contains(&year) {
            return None;
        }
        Day::from_ymd_opt(year, month, 1).map(|first| Self { first })
    }

    /// The month that holds `day`.
    pub fn of(day: Day) -> Self {
        Self {
            first: day.with_day(1).unwrap_or(day),
        }
    }

    pub fn first(self) -> Day {
        self.first
    }

    pub fn last(self) -> Day {
        self.first
            .checked_add_months(Months::new(1))
            .and_then(|next| next.pred_opt())
            .unwrap_or(Day::MAX)
    }

    pub fn days(self) -> u32 {
        self.last().day()
    }

    pub fn contains(self, day: Day) -> bool {
        self.first <= day && day <= self.last()
    }

    /// The month after, if it is within the years 0001-9999.
    pub fn next(self) -> Option<Self> {
        let next = self.first.checked_add_months(Months::new(1))?;
        Self::new(next.year(), next.month())
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), self.first.month())
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a month; write YYYY-MM, e.g. 2026-04")]
pub struct BadMonth(pub String);

impl FromStr for Month {
    type Err = BadMonth;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadMonth(text.to_string());
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return Err(bad());
        }
        let (year, month) = (
            year.parse().map_err(|_| bad())?,
            month.parse().map_err(|_| bad())?,
        );
        Month::new(year, month).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_written_yyyy_mm() {
        // Each row: text, and the month's days if it is one.
        let cases = [
            ("2026-04", Some(30)),
            ("2026-02", Some(28)),
            ("2024-02", Some(29)),
            ("0001-01", Some(31)),
            ("9999-12", Some(31)),
            ("2026-4", None),
            ("2026-13", None),
            ("2026-00", None),
            ("0000-01", None),
            ("+2026-04", None),
            ("2026-04-01", None),
            ("", None),
        ];
        for (text, days) in cases {
            let month = text.parse::<Month>();
            assert_eq!(month.as_ref().ok().map(|m| m.days()), days, "{text}");
            if let Ok(month) = month {
                assert_eq!(month.to_string(), text);
            }
        }
        let december = "2026-12".parse::<Month>().unwrap();
        assert_eq!(december.next().unwrap().to_string(), "2027-01");
        assert_eq!("9999-12".parse::<Month>().unwrap().next(), None);
    }
}
