//! The licence decision itself: pure, from an adapter's contracts and a day, so that every
//! reason and every boundary day is table-tested without a database.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::model::{AdapterFacts, Contract, ContractState, Day, Role};

/// Why the option is or is not licensed, in the order the decision checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No adapter has this exact serial (Art. 8-1(4), 8-3).
    UnknownSerial,
    /// The model has no Ultra Firewall Option (table 1).
    ModelNotEligible,
    /// The adapter is not (yet) registered under its management contract on that day.
    NoManagementContract,
    ManagementNotStarted,
    /// Art. 21.
    ManagementSuspended,
    /// Art. 23.
    ManagementTerminated,
    /// The option applies only to an adapter in the Entry state (Art. 2).
    AdapterStandby,
    NoOptionContract,
    OptionNotStarted,
    /// Art. 21.
    OptionSuspended,
    /// Art. 23 (and 23-3, which ends it with the management contract).
    OptionTerminated,
    Licensed,
}

impl Reason {
    /// Every reason, in the order the decision checks.
    pub const ALL: [Reason; 12] = [
        Reason::UnknownSerial,
        Reason::ModelNotEligible,
        Reason::NoManagementContract,
        Reason::ManagementNotStarted,
        Reason::ManagementSuspended,
        Reason::ManagementTerminated,
        Reason::AdapterStandby,
        Reason::NoOptionContract,
        Reason::OptionNotStarted,
        Reason::OptionSuspended,
        Reason::OptionTerminated,
        Reason::Licensed,
    ];

    /// The reason named `name` (as in a signed grant), if this version knows it.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Reason::UnknownSerial => "unknown_serial",
            Reason::ModelNotEligible => "model_not_eligible",
            Reason::NoManagementContract => "no_management_contract",
            Reason::ManagementNotStarted => "management_not_started",
            Reason::ManagementSuspended => "management_suspended",
            Reason::ManagementTerminated => "management_terminated",
            Reason::AdapterStandby => "adapter_standby",
            Reason::NoOptionContract => "no_option_contract",
            Reason::OptionNotStarted => "option_not_started",
            Reason::OptionSuspended => "option_suspended",
            Reason::OptionTerminated => "option_terminated",
            Reason::Licensed => "licensed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the Ultra Firewall Option is licensed for an adapter, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LicenseDecision {
    pub licensed: bool,
    pub reason: Reason,
}

impl LicenseDecision {
    fn because(reason: Reason) -> Self {
        Self {
            licensed: reason == Reason::Licensed,
            reason,
        }
    }
}

/// The calendar day of `at` in the provider's time zone: contracts run from the start of their
/// start day through the end of their termination day there.
pub fn contract_day(at: DateTime<Utc>, time_zone: Tz) -> Day {
    at.with_timezone(&time_zone).date_naive()
}

/// The decision for the adapter described by `facts` (None: unknown serial) on `day`, the
/// calendar day in the provider's time zone.
pub fn decide(facts: Option<&AdapterFacts>, day: Day) -> LicenseDecision {
    LicenseDecision::because(reason(facts, day))
}

fn reason(facts: Option<&AdapterFacts>, day: Day) -> Reason {
    let Some(facts) = facts else {
        return Reason::UnknownSerial;
    };
    if !facts.adapter.model.option_eligible() {
        return Reason::ModelNotEligible;
    }
    let Some(role) = facts.adapter.role_on(day) else {
        return Reason::NoManagementContract;
    };
    match facts.management.state_on(day) {
        ContractState::NotStarted => return Reason::ManagementNotStarted,
        ContractState::Suspended => return Reason::ManagementSuspended,
        ContractState::Terminated | ContractState::CancelledBeforeStart => {
            return Reason::ManagementTerminated;
        }
        ContractState::Active => {}
    }
    if role == Role::Standby {
        return Reason::AdapterStandby;
    }
    let Some(option) = current_option(&facts.options, day) else {
        return if facts.options.is_empty() {
            Reason::NoOptionContract
        } else {
            Reason::OptionNotStarted
        };
    };
    match option.state_on(day) {
        ContractState::NotStarted => Reason::OptionNotStarted,
        ContractState::Suspended => Reason::OptionSuspended,
        // Art. 23-3: cancelled before it started, it has ended as surely as a terminated one.
        ContractState::Terminated | ContractState::CancelledBeforeStart => Reason::OptionTerminated,
        ContractState::Active => Reason::Licensed,
    }
}

/// The option that speaks for `day`: of those started by then, the latest (Art. 4-2 allows
/// one at a time, so an earlier one has ended). None if none has started.
fn current_option(options: &[Contract], day: Day) -> Option<&Contract> {
    options
        .iter()
        .filter(|option| option.start <= day)
        .max_by_key(|option| option.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Adapter, ContractKind, Model, RoleChange, Suspension, TerminatedBy, Termination, parse_day,
    };

    fn day(text: &str) -> Day {
        parse_day(text).unwrap()
    }

    fn contract(kind: ContractKind, id: &str, start: &str) -> Contract {
        Contract {
            id: id.into(),
            kind,
            start: day(start),
            suspensions: Vec::new(),
            termination: None,
        }
    }

    fn terminated(mut c: Contract, on: &str, by: TerminatedBy) -> Contract {
        c.termination = Some(Termination {
            on: day(on),
            by,
            notice: None,
        });
        c
    }

    fn suspended(mut c: Contract, from: &str, to: Option<&str>) -> Contract {
        c.suspensions.push(Suspension {
            from: day(from),
            to: to.map(day),
        });
        c
    }

    /// An x86-fuji adapter, entry from 2025-04-01 under M-1 (from 2025-04-01), with one
    /// option OPT-1 from 2025-05-01: licensed from 2025-05-01 on.
    fn licensed() -> AdapterFacts {
        AdapterFacts {
            adapter: Adapter {
                serial: "FUJI-0001".into(),
                model: Model::X86Fuji,
                management: "M-1".into(),
                rental: None,
                roles: vec![RoleChange {
                    since: day("2025-04-01"),
                    role: Role::Entry,
                }],
            },
            management: contract(ContractKind::Management, "M-1", "2025-04-01"),
            rental: None,
            options: vec![contract(ContractKind::Option, "OPT-1", "2025-05-01")],
        }
    }

    fn with(change: impl FnOnce(&mut AdapterFacts)) -> AdapterFacts {
        let mut facts = licensed();
        change(&mut facts);
        facts
    }

    // Each row: what it checks (the article), the facts, the day, the expected reason.
    // Boundary days come in pairs: the last day of one state and the first of the next.
    #[test]
    fn every_reason_on_every_boundary_day() {
        use ContractKind::Option as Opt;
        use Reason::*;
        let standby_from_june = with(|f| {
            f.adapter.roles.push(RoleChange {
                since: day("2025-06-01"),
                role: Role::Standby,
            })
        });
        let cases: Vec<(&str, AdapterFacts, &str, Reason)> = vec![
            // Art 8-1(4): the serial is looked up exactly; None stands for "not found".
            ("Art 8-3: unknown serial", licensed(), "", UnknownSerial),
            // Table 1: the two rental-only models never get the option...
            (
                "table 1: SEIL/B1",
                with(|f| f.adapter.model = Model::B1),
                "2025-05-01",
                ModelNotEligible,
            ),
            (
                "table 1: SEIL/neu 2FE Plus",
                with(|f| f.adapter.model = Model::Neu2FePlus),
                "2025-05-01",
                ModelNotEligible,
            ),
            // ...and the five others may.
            (
                "table 1: SEIL/Turbo",
                with(|f| f.adapter.model = Model::Turbo),
                "2025-05-01",
                Licensed,
            ),
            (
                "table 1: SEIL/X1",
                with(|f| f.adapter.model = Model::X1),
                "2025-05-01",
                Licensed,
            ),
            (
                "table 1: SEIL/X2",
                with(|f| f.adapter.model = Model::X2),
                "2025-05-01",
                Licensed,
            ),
            (
                "table 1: SEIL/BPV4",
                with(|f| f.adapter.model = Model::Bpv4),
                "2025-05-01",
                Licensed,
            ),
            // Art 2: registered under the management contract from its first role day.
            (
                "Art 2: day before registration",
                with(|f| f.adapter.roles[0].since = day("2025-04-10")),
                "2025-04-09",
                NoManagementContract,
            ),
            // Management contract starts 2025-04-01 (registered earlier on paper).
            (
                "Art 2: management's start, day before",
                with(|f| f.adapter.roles[0].since = day("2025-03-01")),
                "2025-03-31",
                ManagementNotStarted,
            ),
            // Art 21: management suspended 2025-06-10 through 2025-06-12.
            (
                "Art 21: day before the management suspension",
                with(|f| {
                    f.management = suspended(f.management.clone(), "2025-06-10", Some("2025-06-12"))
                }),
                "2025-06-09",
                Licensed,
            ),
            (
                "Art 21: first day of the management suspension",
                with(|f| {
                    f.management = suspended(f.management.clone(), "2025-06-10", Some("2025-06-12"))
                }),
                "2025-06-10",
                ManagementSuspended,
            ),
            (
                "Art 21: last day of the management suspension",
                with(|f| {
                    f.management = suspended(f.management.clone(), "2025-06-10", Some("2025-06-12"))
                }),
                "2025-06-12",
                ManagementSuspended,
            ),
            (
                "Art 21: day after the management suspension",
                with(|f| {
                    f.management = suspended(f.management.clone(), "2025-06-10", Some("2025-06-12"))
                }),
                "2025-06-13",
                Licensed,
            ),
            (
                "Art 21: open-ended management suspension",
                with(|f| f.management = suspended(f.management.clone(), "2025-06-10", None)),
                "2030-01-01",
                ManagementSuspended,
            ),
            // Art 23: management terminated on 2025-08-31, active through its end.
            (
                "Art 23: management's termination day",
                with(|f| {
                    f.management =
                        terminated(f.management.clone(), "2025-08-31", TerminatedBy::Provider)
                }),
                "2025-08-31",
                Licensed,
            ),
            (
                "Art 23-3: day after the management ended, option still open",
                with(|f| {
                    f.management =
                        terminated(f.management.clone(), "2025-08-31", TerminatedBy::Customer)
                }),
                "2025-09-01",
                ManagementTerminated,
            ),
            // Art 2: the option applies only while the adapter is an Entry.
            (
                "Art 2: last day as entry",
                standby_from_june.clone(),
                "2025-05-31",
                Licensed,
            ),
            (
                "Art 2: first day as standby",
                standby_from_june.clone(),
                "2025-06-01",
                AdapterStandby,
            ),
            (
                "Art 5-1: promoted back to entry",
                with(|f| {
                    f.adapter.roles.push(RoleChange {
                        since: day("2025-06-01"),
                        role: Role::Standby,
                    });
                    f.adapter.roles.push(RoleChange {
                        since: day("2025-07-01"),
                        role: Role::Entry,
                    });
                }),
                "2025-07-01",
                Licensed,
            ),
            (
                "Art 4-2: no option contract",
                with(|f| f.options.clear()),
                "2025-05-01",
                NoOptionContract,
            ),
            (
                "option's start: day before",
                licensed(),
                "2025-04-30",
                OptionNotStarted,
            ),
            ("option's start day", licensed(), "2025-05-01", Licensed),
            // Art 21: option suspended 2025-07-01 through 2025-07-01.
            (
                "Art 21: one-day option suspension, that day",
                with(|f| {
                    f.options[0] = suspended(f.options[0].clone(), "2025-07-01", Some("2025-07-01"))
                }),
                "2025-07-01",
                OptionSuspended,
            ),
            (
                "Art 21: one-day option suspension, next day",
                with(|f| {
                    f.options[0] = suspended(f.options[0].clone(), "2025-07-01", Some("2025-07-01"))
                }),
                "2025-07-02",
                Licensed,
            ),
            // Art 23: option terminated on 2025-09-30.
            (
                "Art 23: option's termination day",
                with(|f| {
                    f.options[0] =
                        terminated(f.options[0].clone(), "2025-09-30", TerminatedBy::Provider)
                }),
                "2025-09-30",
                Licensed,
            ),
            (
                "Art 23: day after the option's termination",
                with(|f| {
                    f.options[0] =
                        terminated(f.options[0].clone(), "2025-09-30", TerminatedBy::Provider)
                }),
                "2025-10-01",
                OptionTerminated,
            ),
            // Art 4-2: one at a time: OPT-1 ends 2025-09-30, OPT-2 starts 2025-10-02.
            (
                "Art 4-2: gap between two options",
                with(|f| {
                    f.options[0] =
                        terminated(f.options[0].clone(), "2025-09-30", TerminatedBy::Customer);
                    f.options.push(contract(Opt, "OPT-2", "2025-10-02"));
                }),
                "2025-10-01",
                OptionTerminated,
            ),
            (
                "Art 4-2: the next option's first day",
                with(|f| {
                    f.options[0] =
                        terminated(f.options[0].clone(), "2025-09-30", TerminatedBy::Customer);
                    f.options.push(contract(Opt, "OPT-2", "2025-10-02"));
                }),
                "2025-10-02",
                Licensed,
            ),
            // The order of the checks: the first failure wins.
            (
                "order: standby and no option -> adapter_standby",
                with(|f| {
                    f.adapter.roles[0].role = Role::Standby;
                    f.options.clear();
                }),
                "2025-05-01",
                AdapterStandby,
            ),
            (
                "order: management suspended and terminated -> suspended",
                with(|f| {
                    f.management = suspended(f.management.clone(), "2025-06-01", None);
                    f.management =
                        terminated(f.management.clone(), "2025-06-30", TerminatedBy::Provider);
                }),
                "2025-07-01",
                ManagementSuspended,
            ),
            (
                "order: ineligible model before everything else",
                with(|f| {
                    f.adapter.model = Model::B1;
                    f.options.clear();
                }),
                "2020-01-01",
                ModelNotEligible,
            ),
            (
                "order: option suspended and terminated -> suspended",
                with(|f| {
                    f.options[0] = suspended(f.options[0].clone(), "2025-09-01", None);
                    f.options[0] =
                        terminated(f.options[0].clone(), "2025-09-30", TerminatedBy::Provider);
                }),
                "2025-10-01",
                OptionSuspended,
            ),
        ];
        for (what, facts, on, expected) in cases {
            let decision = if on.is_empty() {
                decide(None, day("2025-05-01"))
            } else {
                decide(Some(&facts), day(on))
            };
            assert_eq!(
                decision,
                LicenseDecision {
                    licensed: expected == Licensed,
                    reason: expected
                },
                "{what} on {on}"
            );
        }
    }

    // Each row: the instant, the time zone, the reason for `licensed()` (option from
    // 2025-05-01): the day turns at local midnight, not at UTC's.
    #[test]
    fn days_turn_at_midnight_in_the_providers_time_zone() {
        use chrono_tz::{Asia::Tokyo, UTC};
        let cases = [
            ("2025-04-30T14:59:59Z", Tokyo, Reason::OptionNotStarted), // 23:59:59 JST
            ("2025-04-30T15:00:00Z", Tokyo, Reason::Licensed),         // 00:00:00 JST
            ("2025-04-30T23:59:59+09:00", Tokyo, Reason::OptionNotStarted),
            ("2025-05-01T00:00:00+09:00", Tokyo, Reason::Licensed),
            ("2025-04-30T15:00:00Z", UTC, Reason::OptionNotStarted), // still April in UTC
            ("2025-05-01T00:00:00Z", UTC, Reason::Licensed),
        ];
        let facts = licensed();
        for (at, zone, expected) in cases {
            let at = DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(
                decide(Some(&facts), contract_day(at, zone)).reason,
                expected,
                "{at} in {zone}"
            );
        }
        // The termination day runs to its end in Tokyo, 15:00 UTC.
        let ended = with(|f| {
            f.options[0] = terminated(f.options[0].clone(), "2025-09-30", TerminatedBy::Provider)
        });
        for (at, expected) in [
            ("2025-09-30T14:59:59Z", Reason::Licensed),
            ("2025-09-30T15:00:00Z", Reason::OptionTerminated),
        ] {
            let at = DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(
                decide(Some(&ended), contract_day(at, Tokyo)).reason,
                expected,
                "{at}"
            );
        }
    }

    #[test]
    fn every_reason_has_its_snake_case_name_in_json() {
        let decision = LicenseDecision {
            licensed: false,
            reason: Reason::ManagementNotStarted,
        };
        assert_eq!(
            serde_json::to_string(&decision).unwrap(),
            r#"{"licensed":false,"reason":"management_not_started"}"#
        );
        assert_eq!(
            serde_json::to_value(Reason::OptionTerminated).unwrap(),
            Reason::OptionTerminated.name()
        );
    }
}
