//! The contracts as the service terms describe them: management contracts, the adapters
//! registered under them, and Ultra Firewall Option contracts. Plain data with the calendar
//! rules that need no database.

use std::{fmt, str::FromStr};

use chrono::{Datelike, Months, NaiveDate};

/// A service adapter model (table 1). Written in the store as its short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    Neu2FePlus,
    Turbo,
    X1,
    X2,
    B1,
    Bpv4,
    X86Fuji,
}

impl Model {
    pub const ALL: [Model; 7] = [
        Model::Neu2FePlus,
        Model::Turbo,
        Model::X1,
        Model::X2,
        Model::B1,
        Model::Bpv4,
        Model::X86Fuji,
    ];

    /// The short name used in commands, files and the store.
    pub const fn name(self) -> &'static str {
        match self {
            Model::Neu2FePlus => "neu-2fe-plus",
            Model::Turbo => "turbo",
            Model::X1 => "x1",
            Model::X2 => "x2",
            Model::B1 => "b1",
            Model::Bpv4 => "bpv4",
            Model::X86Fuji => "x86-fuji",
        }
    }

    /// Table 1: the Ultra Firewall Option exists only for SEIL/Turbo, X1, X2, x86 Fuji and
    /// BPV4; SEIL/neu 2FE Plus and SEIL/B1 can be rented but get no option.
    pub const fn option_eligible(self) -> bool {
        !matches!(self, Model::Neu2FePlus | Model::B1)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown model `{0}`; known models: neu-2fe-plus, turbo, x1, x2, b1, bpv4, x86-fuji (or SEIL/... names such as \"SEIL/x86 Fuji\")"
)]
pub struct UnknownModel(pub String);

impl FromStr for Model {
    type Err = UnknownModel;

    /// Accepts the short names and the terms' names ("SEIL/x86 Fuji", "SEIL/neu 2FE Plus"),
    /// in any case, with spaces, hyphens or underscores between words.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("seil/").unwrap_or(&lower);
        let canonical: String = bare
            .chars()
            .map(|c| if c == ' ' || c == '_' { '-' } else { c })
            .collect();
        Model::ALL
            .into_iter()
            .find(|model| model.name() == canonical)
            .ok_or_else(|| UnknownModel(text.to_string()))
    }
}

/// An adapter's state under its management contract (Art. 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Under active control; the only state in which the option applies.
    Entry,
    /// A registered spare.
    Standby,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Role::Entry => "entry",
            Role::Standby => "standby",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`; a role is `entry` or `standby`")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "entry" => Ok(Role::Entry),
            "standby" => Ok(Role::Standby),
            _ => Err(UnknownRole(text.to_string())),
        }
    }
}

/// Who ended a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminatedBy {
    /// Art. 23-2: with written notice, effective no earlier than 30 days after it.
    Customer,
    /// Art. 21-23: effective on the date given.
    Provider,
    /// Art. 23-3: an option ended because its adapter's management contract ended.
    ManagementEnded,
}

impl TerminatedBy {
    pub const fn name(self) -> &'static str {
        match self {
            TerminatedBy::Customer => "customer",
            TerminatedBy::Provider => "provider",
            TerminatedBy::ManagementEnded => "management",
        }
    }

    pub fn from_name(text: &str) -> Option<Self> {
        [
            TerminatedBy::Customer,
            TerminatedBy::Provider,
            TerminatedBy::ManagementEnded,
        ]
        .into_iter()
        .find(|by| by.name() == text)
    }
}

impl fmt::Display for TerminatedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Calendar days in the provider's time zone, written `YYYY-MM-DD`.
pub type Day = NaiveDate;

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<Day, BadDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| BadDate(text.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a date; write YYYY-MM-DD, e.g. 2025-04-01")]
pub struct BadDate(pub String);

/// Art. 21: suspended from `from` through `to` (both whole days); open-ended without `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspension {
    pub from: Day,
    pub to: Option<Day>,
}

impl Suspension {
    pub fn covers(&self, day: Day) -> bool {
        self.from <= day && self.to.is_none_or(|to| day <= to)
    }
}

/// Art. 23: the contract ends at the end of `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    pub on: Day,
    pub by: TerminatedBy,
    pub notice: Option<Day>,
}

/// Which kind of contract an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractKind {
    Management,
    /// An Ultra Firewall Option contract.
    Option,
}

impl ContractKind {
    pub const fn name(self) -> &'static str {
        match self {
            ContractKind::Management => "management",
            ContractKind::Option => "option",
        }
    }
}

/// A management or option contract with its life: start, suspensions, termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub id: String,
    pub kind: ContractKind,
    /// Also the billing start date from which Art. 16's minimum term runs.
    pub start: Day,
    pub suspensions: Vec<Suspension>,
    pub termination: Option<Termination>,
}

/// Where a contract stands on a day, in the order the licence decision asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractState {
    NotStarted,
    Suspended,
    Terminated,
    Active,
}

impl ContractState {
    pub const fn name(self) -> &'static str {
        match self {
            ContractState::NotStarted => "not started",
            ContractState::Suspended => "suspended",
            ContractState::Terminated => "terminated",
            ContractState::Active => "active",
        }
    }
}

impl Contract {
    /// Active from the start of its start day through the end of its termination day.
    pub fn state_on(&self, day: Day) -> ContractState {
        if day < self.start {
            ContractState::NotStarted
        } else if self.suspensions.iter().any(|s| s.covers(day)) {
            ContractState::Suspended
        } else if self.termination.is_some_and(|t| day > t.on) {
            ContractState::Terminated
        } else {
            ContractState::Active
        }
    }

    /// The last day the contract can run, if it is terminated.
    pub fn end(&self) -> Option<Day> {
        self.termination.map(|t| t.on)
    }

    /// Art. 16: the last day of the minimum term (1 month for management and option
    /// contracts), counted from the start (billing start) day.
    pub fn minimum_term_end(&self) -> Day {
        minimum_term_end(self.start, 1)
    }
}

/// The last day of a term of `months` months that starts on (and counts) `start`: the day
/// before the corresponding day of the last month, or that month's last day when it has no
/// corresponding day (Civil Code Art. 143, which the terms' "1ヶ月間" follows).
pub fn minimum_term_end(start: Day, months: u32) -> Day {
    let Some(shifted) = start.checked_add_months(Months::new(months)) else {
        return Day::MAX;
    };
    if shifted.day() == start.day() {
        shifted.pred_opt().unwrap_or(shifted)
    } else {
        // chrono clamped to the month's last day: the month has no corresponding day.
        shifted
    }
}

/// From `since` on, the adapter has `role` (until the next change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleChange {
    pub since: Day,
    pub role: Role,
}

/// An adapter with its role history (sorted by day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    pub serial: String,
    pub model: Model,
    /// The management contract the adapter is registered under.
    pub management: String,
    pub roles: Vec<RoleChange>,
}

impl Adapter {
    /// The role on `day`, or None before the adapter was registered.
    pub fn role_on(&self, day: Day) -> Option<Role> {
        self.roles
            .iter()
            .rev()
            .find(|change| change.since <= day)
            .map(|change| change.role)
    }
}

/// Everything the licence decision needs about one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterFacts {
    pub adapter: Adapter,
    pub management: Contract,
    /// Its option contracts, by start day.
    pub options: Vec<Contract>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Day {
        parse_day(text).unwrap()
    }

    #[test]
    fn model_names_short_and_from_the_terms() {
        // Each row: what the operator writes, the model (table 1).
        let cases = [
            ("x86-fuji", Model::X86Fuji),
            ("SEIL/x86 Fuji", Model::X86Fuji),
            ("seil/X86_FUJI", Model::X86Fuji),
            ("SEIL/neu 2FE Plus", Model::Neu2FePlus),
            ("neu-2fe-plus", Model::Neu2FePlus),
            ("SEIL/Turbo", Model::Turbo),
            ("SEIL/X1", Model::X1),
            ("x2", Model::X2),
            ("SEIL/B1", Model::B1),
            ("SEIL/BPV4", Model::Bpv4),
        ];
        for (text, model) in cases {
            assert_eq!(text.parse::<Model>(), Ok(model), "{text}");
        }
        assert_eq!(
            "SEIL/X3".parse::<Model>(),
            Err(UnknownModel("SEIL/X3".into()))
        );
    }

    #[test]
    fn only_the_five_table_1_models_are_eligible() {
        let eligible: Vec<&str> = Model::ALL
            .into_iter()
            .filter(|m| m.option_eligible())
            .map(Model::name)
            .collect();
        assert_eq!(eligible, ["turbo", "x1", "x2", "bpv4", "x86-fuji"]);
    }

    // Each row: start, months, last day of the term (Art. 16 with Civil Code Art. 143).
    #[test]
    fn minimum_terms_end_the_day_before_the_corresponding_day() {
        let cases = [
            ("2025-04-01", 1, "2025-04-30"),
            ("2025-01-15", 1, "2025-02-14"),
            ("2025-01-31", 1, "2025-02-28"), // February has no 31st: its last day
            ("2024-01-30", 1, "2024-02-29"), // leap year, no 30th: the 29th
            ("2024-01-29", 1, "2024-02-28"), // the 29th exists: the day before
            ("2025-03-31", 1, "2025-04-30"),
            ("2025-12-01", 1, "2025-12-31"),
            ("2025-04-01", 12, "2026-03-31"), // adapter rental's year
            ("2024-02-29", 12, "2025-02-28"),
        ];
        for (start, months, end) in cases {
            assert_eq!(
                minimum_term_end(day(start), months),
                day(end),
                "{start} + {months}"
            );
        }
    }

    #[test]
    fn contract_states_on_boundary_days() {
        let contract = Contract {
            id: "M-1".into(),
            kind: ContractKind::Management,
            start: day("2025-04-01"),
            suspensions: vec![Suspension {
                from: day("2025-05-10"),
                to: Some(day("2025-05-12")),
            }],
            termination: Some(Termination {
                on: day("2025-06-30"),
                by: TerminatedBy::Provider,
                notice: None,
            }),
        };
        let cases = [
            ("2025-03-31", ContractState::NotStarted),
            ("2025-04-01", ContractState::Active),
            ("2025-05-09", ContractState::Active),
            ("2025-05-10", ContractState::Suspended),
            ("2025-05-12", ContractState::Suspended),
            ("2025-05-13", ContractState::Active),
            ("2025-06-30", ContractState::Active),
            ("2025-07-01", ContractState::Terminated),
        ];
        for (on, state) in cases {
            assert_eq!(contract.state_on(day(on)), state, "{on}");
        }
    }

    #[test]
    fn bad_dates_are_refused() {
        for text in ["2025-02-30", "2025/04/01", "tomorrow", ""] {
            assert_eq!(parse_day(text), Err(BadDate(text.to_string())));
        }
    }
}
