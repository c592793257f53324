//! Fees for parts of months, exactly, and the Entry/Standby counts billed day by day (Art.
//! 15-5 with its proviso).

use crate::model::{Day, minimum_term_end};

/// The least common multiple of 28, 29, 30 and 31: one day of a monthly fee in any month
/// is a whole number of these parts of a yen, so sums are exact until a line is floored.
const PARTS: i128 = 377_580;

/// An amount in parts of a yen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exact(i128);

impl Exact {
    /// The share of `monthly` yen for `days` days of a calendar month of `month_days`.
    pub fn share(monthly: u128, days: u32, month_days: u32) -> Exact {
        let monthly = i128::try_from(monthly).unwrap_or(i128::MAX);
        let parts = PARTS / i128::from(month_days.clamp(28, 31)) * i128::from(days);
        Exact(monthly.saturating_mul(parts))
    }

    pub fn add(&mut self, other: Exact) {
        self.0 = self.0.saturating_add(other.0);
    }

    /// Whole yen, rounded down.
    pub fn floor(self) -> i128 {
        self.0.div_euclid(PARTS)
    }
}

/// Units kept billed after a fall (15-5 proviso): `units` from `from` through `through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    from: Day,
    through: Day,
    units: u32,
}

/// Units that came into use on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cohort {
    since: Day,
    units: u32,
}

/// How many units of one kind (Entries or Standbys) a management contract bills on each day.
///
/// Units come into use on the billing start (the count in force that day) or on the day of
/// an increase. When the count falls by k while y units are still in their first month, the
/// min(k, y) oldest of those young units leave the count but stay billed through the last
/// day of their first month (`minimum_term_end`); the rest of the fall comes off units past
/// their first month. Changes before the billing start only set the starting count, and
/// changes after the contract's last day are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    /// The count from each day on, by day.
    steps: Vec<(Day, u32)>,
    kept: Vec<Kept>,
    /// Units that came into use, by day: the first on the billing start.
    added: Vec<Cohort>,
    last: Day,
}

impl Units {
    /// `history`: (from, count) by day, each day once.
    pub fn new(history: &[(Day, u32)], billing_start: Day, last: Day) -> Units {
        let starting = history
            .iter()
            .take_while(|(from, _)| *from <= billing_start)
            .last()
            .map_or(0, |(_, count)| *count);
        let mut units = Units {
            steps: vec![(billing_start, starting)],
            kept: Vec::new(),
            added: Vec::new(),
            last,
        };
        let mut cohorts = Vec::new();
        if starting > 0 {
            cohorts.push(Cohort {
                since: billing_start,
                units: starting,
            });
        }
        let mut count = starting;
        for &(from, new) in history
            .iter()
            .filter(|(from, _)| billing_start < *from && *from <= last)
        {
            if new == count {
                continue;
            }
            if new > count {
                cohorts.push(Cohort {
                    since: from,
                    units: new - count,
                });
            } else {
                units.fall(&mut cohorts, from, count - new);
            }
            count = new;
            units.steps.push((from, new));
        }
        units.added = units_added(&units.steps);
        units
    }

    /// The count falls by `by` on `day`.
    fn fall(&mut self, cohorts: &mut Vec<Cohort>, day: Day, by: u32) {
        let mut left = by;
        // Young cohorts, oldest first, become kept units.
        for cohort in cohorts.iter_mut() {
            let through = minimum_term_end(cohort.since, 1);
            if left == 0 || through < day {
                continue;
            }
            let taken = cohort.units.min(left);
            cohort.units -= taken;
            left -= taken;
            self.kept.push(Kept {
                from: day,
                through,
                units: taken,
            });
        }
        // The rest comes off units past their first month, which are all alike.
        for cohort in cohorts.iter_mut() {
            let taken = cohort.units.min(left);
            cohort.units -= taken;
            left -= taken;
        }
        cohorts.retain(|cohort| cohort.units > 0);
    }

    /// The registered count on `day` (the last day's count after the contract ended).
    pub fn count_on(&self, day: Day) -> u32 {
        let day = day.min(self.last);
        self.steps
            .iter()
            .take_while(|(from, _)| *from <= day)
            .last()
            .map_or(0, |(_, count)| *count)
    }

    /// Units billed on `day` beyond the count under the 15-5 proviso.
    pub fn kept_on(&self, day: Day) -> u32 {
        self.kept
            .iter()
            .filter(|kept| kept.from <= day && day <= kept.through)
            .map(|kept| kept.units)
            .sum()
    }

    pub fn billed_on(&self, day: Day) -> u32 {
        self.count_on(day).saturating_add(self.kept_on(day))
    }

    /// Units that came into use, as (day, how many): the count on the billing start first,
    /// then every increase.
    pub fn added(&self) -> impl Iterator<Item = (Day, u32)> + '_ {
        self.added.iter().map(|cohort| (cohort.since, cohort.units))
    }

    /// Whether the count changed, or units were kept, on a day from `first` through `last`
    /// other than `first`: the days billed at different counts.
    pub fn changes_within(&self, first: Day, last: Day) -> bool {
        self.steps
            .iter()
            .any(|(from, _)| first < *from && *from <= last)
            || self
                .kept
                .iter()
                .any(|kept| kept.from <= last && first <= kept.through)
    }
}

fn units_added(steps: &[(Day, u32)]) -> Vec<Cohort> {
    let mut previous = 0;
    let mut added = Vec::new();
    for &(since, count) in steps {
        if count > previous {
            added.push(Cohort {
                since,
                units: count - previous,
            });
        }
        previous = count;
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_day;

    fn day(text: &str) -> Day {
        parse_day(text).unwrap()
    }

    #[test]
    fn shares_of_any_month_are_exact() {
        // Each row: monthly fee, days, days of the month, whole yen.
        let cases = [
            (3100, 1, 31, 100),
            (3000, 1, 28, 107),
            (3000, 1, 29, 103),
            (3000, 1, 30, 100),
            (3100, 22, 31, 2200), // exactly, not 2,199.99...
            (3000, 15, 31, 1451),
            (3000, 31, 31, 3000),
        ];
        for (monthly, days, month_days, yen) in cases {
            assert_eq!(
                Exact::share(monthly, days, month_days).floor(),
                yen,
                "{monthly} × {days}/{month_days}"
            );
        }
        // Shares add up exactly across months: 11/31 + 9/30 of 3,100 is 1,100 + 930.
        let mut sum = Exact::share(3100, 11, 31);
        sum.add(Exact::share(3100, 9, 30));
        assert_eq!(sum.floor(), 2030);
    }

    // Each row (Art. 15-5): history, billing start, a day, count, kept units.
    #[test]
    fn counts_by_day_with_the_proviso() {
        let history = [
            (day("2026-01-01"), 5),
            (day("2026-03-01"), 8), // +3 young until 2026-03-31
            (day("2026-03-10"), 6), // -2 while 3 are young: 2 kept through 2026-03-31
            (day("2026-03-20"), 2), // -4 while 1 is young: 1 kept, 3 off the old units
        ];
        let units = Units::new(&history, day("2026-01-01"), Day::MAX);
        let cases = [
            ("2026-02-28", 5, 0),
            ("2026-03-09", 8, 0),
            ("2026-03-10", 6, 2),
            ("2026-03-20", 2, 3),
            ("2026-03-31", 2, 3),
            ("2026-04-01", 2, 0),
        ];
        for (on, count, kept) in cases {
            assert_eq!(
                (units.count_on(day(on)), units.kept_on(day(on))),
                (count, kept),
                "{on}"
            );
        }
        assert_eq!(
            units.added().collect::<Vec<_>>(),
            [(day("2026-01-01"), 5), (day("2026-03-01"), 3)]
        );
    }

    #[test]
    fn changes_before_billing_start_only_set_the_count() {
        let history = [
            (day("2026-03-01"), 5),
            (day("2026-03-05"), 3),
            (day("2026-03-20"), 1),
        ];
        let units = Units::new(&history, day("2026-03-10"), day("2026-04-30"));
        assert_eq!(units.added().collect::<Vec<_>>(), [(day("2026-03-10"), 3)]);
        // All three are young on 2026-03-20: two are kept through 2026-04-09.
        assert_eq!(units.billed_on(day("2026-04-09")), 3);
        assert_eq!(units.billed_on(day("2026-04-10")), 1);
        // After the last day the last count holds (for Art. 16-2's remainder).
        assert_eq!(units.count_on(day("2026-06-01")), 1);
    }
}
