//! The contracts as the service terms describe them: customers, management contracts with their
//! Entry/Standby counts, the adapters registered under them, adapter rental contracts, Ultra
//! Firewall Option contracts and outages of the management service. Plain data with the
//! calendar rules that need no database; `Book` is what billing reads.

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

    /// Table 1, the models the provider designates for the Ultra Firewall Option: SEIL/Turbo,
    /// X1, X2, x86 Fuji and BPV4. SEIL/neu 2FE Plus and SEIL/B1 can be rented but get no
    /// option. This and [`Model::rentable`] are the only places the lists are written.
    pub const fn option_eligible(self) -> bool {
        !matches!(self, Model::Neu2FePlus | Model::B1)
    }

    /// Table 1, the models of Adapter Rental: SEIL/neu 2FE Plus, Turbo, X1, X2, B1 and BPV4.
    /// SEIL/x86 Fuji gets the option but is not rented.
    pub const fn rentable(self) -> bool {
        !matches!(self, Model::X86Fuji)
    }

    /// The short names of the models for which `keep` holds, for messages.
    pub fn names_where(keep: fn(Model) -> bool) -> String {
        Model::ALL
            .into_iter()
            .filter(|m| keep(*m))
            .map(Model::name)
            .collect::<Vec<_>>()
            .join(", ")
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
    /// Art. 22: the provider abolishes the service, with written notice at least 3 months
    /// before the last day.
    Abolition,
    /// Art. 23-3: an option ended because its adapter's management contract ended.
    ManagementEnded,
    /// Art. 23-3: an option ended because its adapter's rental contract ended.
    RentalEnded,
}

impl TerminatedBy {
    const ALL: [TerminatedBy; 5] = [
        TerminatedBy::Customer,
        TerminatedBy::Provider,
        TerminatedBy::Abolition,
        TerminatedBy::ManagementEnded,
        TerminatedBy::RentalEnded,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            TerminatedBy::Customer => "customer",
            TerminatedBy::Provider => "provider",
            TerminatedBy::Abolition => "abolition",
            TerminatedBy::ManagementEnded => "management",
            TerminatedBy::RentalEnded => "rental",
        }
    }

    pub fn from_name(text: &str) -> Option<Self> {
        TerminatedBy::ALL.into_iter().find(|by| by.name() == text)
    }

    /// What an operator may give as `--by` / `by:`; the others are the store's own (Art. 23-3).
    pub fn from_operator(text: &str) -> Option<Self> {
        Self::from_name(text).filter(|by| !by.is_cascade())
    }

    /// Art. 23-3: recorded by the store when the covering contract ends.
    pub const fn is_cascade(self) -> bool {
        matches!(
            self,
            TerminatedBy::ManagementEnded | TerminatedBy::RentalEnded
        )
    }
}

impl fmt::Display for TerminatedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Calendar days in the provider's time zone, written `YYYY-MM-DD`.
pub type Day = NaiveDate;

/// The first and last days the store can hold: years 0001-9999, written with four digits.
pub const FIRST_DAY: Day = NaiveDate::from_ymd_opt(1, 1, 1).expect("a valid day");
pub const LAST_DAY: Day = NaiveDate::from_ymd_opt(9999, 12, 31).expect("a valid day");

/// Parses exactly `YYYY-MM-DD`: zero-padded, years 0001-9999, no sign, no spaces, a day that
/// exists. Anything else is refused, so that every stored day sorts as it compares.
pub fn parse_day(text: &str) -> Result<Day, BadDate> {
    let bad = || BadDate(text.to_string());
    let bytes = text.as_bytes();
    let shape = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().map_err(|_| bad());
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if year == 0 {
        return Err(bad());
    }
    let year = i32::try_from(year).map_err(|_| bad())?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(bad)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a date; write YYYY-MM-DD with a year from 0001 to 9999, e.g. 2025-04-01")]
pub struct BadDate(pub String);

/// `day` + `days`, or None past [`LAST_DAY`].
pub fn add_days(day: Day, days: u64) -> Option<Day> {
    day.checked_add_days(chrono::Days::new(days))
        .filter(|d| *d <= LAST_DAY)
}

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

/// Which kind of contract an id names. Management, option and rental contracts share one id
/// space, so that `suspend` and `terminate` name any of them by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractKind {
    Management,
    /// An Ultra Firewall Option contract.
    Option,
    /// An Adapter Rental contract (Art. 4-1).
    Rental,
}

impl ContractKind {
    pub const fn name(self) -> &'static str {
        match self {
            ContractKind::Management => "management",
            ContractKind::Option => "option",
            ContractKind::Rental => "rental",
        }
    }

    /// Art. 16-1: the minimum term in months, counted from the billing start day.
    pub const fn minimum_term_months(self) -> u32 {
        match self {
            ContractKind::Management | ContractKind::Option => 1,
            ContractKind::Rental => 12,
        }
    }
}

/// A management, option or rental contract with its life: start, suspensions, termination. A
/// termination before the start is an option cancelled before it started (Art. 23-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub id: String,
    pub kind: ContractKind,
    /// The first day of service (the licence decision's start).
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
    /// Art. 23-3: its covering contract ended before it started; it never runs.
    CancelledBeforeStart,
    Active,
}

impl ContractState {
    pub const fn name(self) -> &'static str {
        match self {
            ContractState::NotStarted => "not started",
            ContractState::Suspended => "suspended",
            ContractState::Terminated => "terminated",
            ContractState::CancelledBeforeStart => "cancelled before start",
            ContractState::Active => "active",
        }
    }
}

impl Contract {
    /// Active from the start of its start day through the end of its termination day.
    /// One cancelled before its start is not started through the cancellation day, then
    /// cancelled before start for good.
    pub fn state_on(&self, day: Day) -> ContractState {
        if let Some(cancelled) = self.cancelled_before_start() {
            return if day <= cancelled {
                ContractState::NotStarted
            } else {
                ContractState::CancelledBeforeStart
            };
        }
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

    /// The day its covering contract ended, when that was before its start (Art. 23-3).
    pub fn cancelled_before_start(&self) -> Option<Day> {
        self.termination.map(|t| t.on).filter(|on| *on < self.start)
    }

    /// The last day the contract can run, if it is terminated.
    pub fn end(&self) -> Option<Day> {
        self.termination.map(|t| t.on)
    }

    /// Art. 16: the last day of the minimum term (1 month for management and option
    /// contracts, 1 year for rentals), counted from `billing_start`.
    pub fn minimum_term_end(&self, billing_start: Day) -> Day {
        minimum_term_end(billing_start, self.kind.minimum_term_months())
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
    /// The adapter rental contract it is rented under, if it is rented.
    pub rental: Option<String>,
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
    /// Its adapter rental contract, if it is rented.
    pub rental: Option<Contract>,
    /// Its option contracts, by start day.
    pub options: Vec<Contract>,
}

/// A customer, the party to management and rental contracts (Art. 7: the rights cannot be
/// passed on, so a contract's customer never changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub name: String,
    /// Art. 14: where the invoice goes when the customer designated someone else, free text.
    pub bill_to: Option<String>,
}

/// Art. 15-2, 15-3: the day the provider accepted the application (the initial fee accrues)
/// and the billing start day of the acceptance letter (the monthly fee and Art. 16's minimum
/// term run from it). Both default to the contract's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingDays {
    pub accepted: Day,
    pub billing_start: Day,
}

impl BillingDays {
    /// The defaults: both on `start`.
    pub const fn from_start(start: Day) -> Self {
        Self {
            accepted: start,
            billing_start: start,
        }
    }
}

/// Art. 5-1: from `from` on (until the next entry), the management contract is for `entries`
/// Entry and `standbys` Standby adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub from: Day,
    pub entries: u32,
    pub standbys: u32,
}

impl Counts {
    pub const fn of(self, role: Role) -> u32 {
        match role {
            Role::Entry => self.entries,
            Role::Standby => self.standbys,
        }
    }
}

/// The counts in force on `day` (`history` sorted by day), or None before the first entry.
pub fn counts_on(history: &[Counts], day: Day) -> Option<Counts> {
    history.iter().rev().find(|c| c.from <= day).copied()
}

/// A day on which more adapters are registered in a role than the counts allow (Art. 5-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excess {
    pub day: Day,
    pub role: Role,
    pub registered: u32,
    pub count: u32,
}

/// Art. 5-1: the first day on which the registered Entry (Standby) adapters exceed that day's
/// count. Days before the first counts entry are not checked (no count was contracted).
/// Only days on which something changes need a look: the counts' days and the role days.
pub fn first_excess(history: &[Counts], adapters: &[Adapter]) -> Option<Excess> {
    let mut days: Vec<Day> = history.iter().map(|c| c.from).collect();
    days.extend(
        adapters
            .iter()
            .flat_map(|a| a.roles.iter().map(|r| r.since)),
    );
    days.sort_unstable();
    days.dedup();
    days.into_iter().find_map(|day| {
        let counts = counts_on(history, day)?;
        [Role::Entry, Role::Standby].into_iter().find_map(|role| {
            let registered = adapters
                .iter()
                .filter(|a| a.role_on(day) == Some(role))
                .count();
            let registered = u32::try_from(registered).unwrap_or(u32::MAX);
            (registered > counts.of(role)).then_some(Excess {
                day,
                role,
                registered,
                count: counts.of(role),
            })
        })
    })
}

/// From `on`, the rented adapter is this model (Art. 16-3 bills an early end at the model of
/// the first entry, the model at contract time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelChange {
    pub on: Day,
    pub model: Model,
}

/// An Adapter Rental contract (Art. 4-1, 9, 16-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rental {
    /// Kind [`ContractKind::Rental`]; its minimum term is 1 year (Art. 16-1).
    pub contract: Contract,
    pub customer: String,
    /// The rented adapter's serial.
    pub serial: String,
    /// The model at contract time first, then each change, by day.
    pub models: Vec<ModelChange>,
    pub days: BillingDays,
    /// Art. 9-3: the day the adapter came back (due within 30 days after the end).
    pub returned: Option<Day>,
}

impl Rental {
    /// The model registered at contract time (Art. 16-3).
    pub fn model_at_contract(&self) -> Model {
        self.models[0].model
    }

    pub fn model_on(&self, day: Day) -> Model {
        self.models
            .iter()
            .rev()
            .find(|c| c.on <= day)
            .map_or(self.model_at_contract(), |c| c.model)
    }

    /// Art. 9-3: the last day on which the adapter may come back, once the rental ended.
    pub fn return_due(&self) -> Option<Day> {
        self.contract
            .end()
            .map(|end| add_days(end, RETURN_DAYS).unwrap_or(LAST_DAY))
    }
}

/// Art. 9-3: a rented adapter is returned within this many days after the rental ends.
pub const RETURN_DAYS: u64 = 30;

/// An outage of the management service (Art. 26): from `from` to `to`, instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub management: String,
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    /// Wholly unusable, or as good as (Art. 26-1's "全く利用し得ない状態と同じ程度").
    pub wholly_unusable: bool,
    /// Caused by something the provider is responsible for.
    pub provider_fault: bool,
    /// The day the customer claimed the reduction.
    pub claimed: Option<Day>,
}

/// A management contract as billing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookManagement {
    pub contract: Contract,
    pub customer: String,
    pub days: BillingDays,
    /// Art. 5-1, by day; empty when no counts were recorded.
    pub counts: Vec<Counts>,
}

/// An option contract as billing reads it, with its adapter's model (the monthly fee depends
/// on it, table 1) and the customer of its adapter's management contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookOption {
    pub contract: Contract,
    pub customer: String,
    pub serial: String,
    pub model: Model,
    pub management: String,
    /// The rental contract its adapter is rented under, if any (Art. 23-3 may end it).
    pub rental: Option<String>,
    pub days: BillingDays,
}

/// Everything billing needs for the days `from` through `to`, plain data: every customer, and
/// every contract and outage that can bear on those days (see `Store::billing_book`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub from: Day,
    pub to: Day,
    /// The provider's time zone, in which days and outage instants are taken.
    pub time_zone: chrono_tz::Tz,
    pub customers: Vec<Customer>,
    pub managements: Vec<BookManagement>,
    pub options: Vec<BookOption>,
    pub rentals: Vec<Rental>,
    pub outages: Vec<Outage>,
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
