//! `smf-firewall contracts import FILE`: customers, managements, rentals, adapters, options and
//! outages from YAML, applied in one transaction (all or nothing), every problem reported as
//! `FILE:LINE:COL: error: ...`.
//!
//! ```yaml
//! customers:
//!   - {id: C-1, name: Example K.K., bill_to: "Example Branch, Osaka"}   # bill_to optional, Art. 14
//! managements:
//!   - id: M-1001
//!     customer: C-1                 # optional: the default customer
//!     start: 2025-04-01
//!     accepted: 2025-03-20          # optional, Art. 15-2 (default: start)
//!     billing_start: 2025-04-01     # optional, Art. 15-3 (default: start)
//!     counts: [{from: 2025-04-01, entries: 1, standbys: 0}]    # optional, Art. 5-1
//!     suspensions: [{from: 2025-06-01, to: 2025-06-03}]        # optional, Art. 21
//!     termination: {on: 2026-03-31, by: customer, notice: 2026-02-01}  # optional, Art. 22, 23
//! rentals:
//!   - {id: R-1, customer: C-1, serial: X1-0001, model: SEIL/X1, start: 2025-04-01,
//!      model_changes: [{on: 2025-10-01, model: x2}], termination: {...}, returned: 2026-04-10}
//! adapters:
//!   - serial: FUJI-0001
//!     model: SEIL/x86 Fuji          # or x86-fuji
//!     management: M-1001
//!     rental: R-1                   # optional: the rental it is rented under
//!     role: entry
//!     since: 2025-04-01
//!     role_changes: [{role: standby, on: 2025-09-01}]        # optional, Art. 5-1
//! options:
//!   - id: UFO-1
//!     serial: FUJI-0001
//!     start: 2025-04-01             # accepted, billing_start, suspensions, termination as above
//! outages:
//!   - {management: M-1001, from: "2026-08-03T10:00:00+09:00", to: "2026-08-06T09:30:00+09:00",
//!      wholly_unusable: true, provider_fault: true, claimed: 2026-10-20}  # claimed optional
//! ```
//!
//! Planning reads the whole file, then checks every reference against the file and the store
//! (ids, serials, customers, rentals, eligibility, Art. 4-2 overlaps, Art. 23-3 ends) before
//! the first write. Application: customers, managements with their counts, rentals, adapters
//! with their role changes, outages; then, in date order, options, model changes,
//! suspensions, terminations and returns (a termination at the end of its day, after that
//! day's starts), so that a sequential history in one file applies as it happened.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    str::FromStr,
};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{
    model::{
        BillingDays, ContractKind, Counts, Customer, Day, Model, ModelChange, Outage, Role,
        Suspension, TerminatedBy, Termination, parse_day,
    },
    store::{
        Known, KnownAdapter, NewAdapter, NewManagement, NewOption, NewRental, Refusal, Store,
        StoreError, check_name, customer_termination_day, serial_key,
    },
};
use firewall_diagnostic::{Diagnostic, Diagnostics, parse_yaml};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Found while planning, before anything was written.
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    /// Refused by the store while applying; the transaction was rolled back.
    #[error("{0}")]
    Refused(Diagnostics),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How much an import wrote, and what the operator should read (Art. 23-2 moves, Art. 23-3
/// cascades).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Imported {
    pub customers: usize,
    pub managements: usize,
    pub rentals: usize,
    pub adapters: usize,
    pub options: usize,
    pub outages: usize,
    pub notes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    customers: Vec<Spanned<RawCustomer>>,
    #[serde(default)]
    managements: Vec<Spanned<RawManagement>>,
    #[serde(default)]
    rentals: Vec<Spanned<RawRental>>,
    #[serde(default)]
    adapters: Vec<Spanned<RawAdapter>>,
    #[serde(default)]
    options: Vec<Spanned<RawOption>>,
    #[serde(default)]
    outages: Vec<Spanned<RawOutage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomer {
    id: Spanned<String>,
    name: String,
    bill_to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    id: Spanned<String>,
    customer: Option<Spanned<String>>,
    start: Spanned<String>,
    accepted: Option<Spanned<String>>,
    billing_start: Option<Spanned<String>>,
    #[serde(default)]
    counts: Vec<Spanned<RawCounts>>,
    #[serde(default)]
    suspensions: Vec<Spanned<RawSuspension>>,
    termination: Option<Spanned<RawTermination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounts {
    from: Spanned<String>,
    entries: u32,
    standbys: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRental {
    id: Spanned<String>,
    customer: Spanned<String>,
    serial: Spanned<String>,
    model: Spanned<String>,
    start: Spanned<String>,
    accepted: Option<Spanned<String>>,
    billing_start: Option<Spanned<String>>,
    #[serde(default)]
    model_changes: Vec<Spanned<RawModelChange>>,
    termination: Option<Spanned<RawTermination>>,
    returned: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelChange {
    on: Spanned<String>,
    model: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    id: Spanned<String>,
    serial: Spanned<String>,
    start: Spanned<String>,
    accepted: Option<Spanned<String>>,
    billing_start: Option<Spanned<String>>,
    #[serde(default)]
    suspensions: Vec<Spanned<RawSuspension>>,
    termination: Option<Spanned<RawTermination>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    serial: Spanned<String>,
    model: Spanned<String>,
    management: Spanned<String>,
    rental: Option<Spanned<String>>,
    role: Spanned<String>,
    since: Spanned<String>,
    #[serde(default)]
    role_changes: Vec<Spanned<RawRoleChange>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleChange {
    role: Spanned<String>,
    on: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuspension {
    from: Spanned<String>,
    to: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTermination {
    on: Spanned<String>,
    by: Spanned<String>,
    notice: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutage {
    management: Spanned<String>,
    from: Spanned<String>,
    to: Spanned<String>,
    wholly_unusable: bool,
    provider_fault: bool,
    claimed: Option<Spanned<String>>,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Customer(Customer),
    Management(NewManagement),
    Counts {
        id: String,
        counts: Counts,
    },
    Rental(NewRental),
    Adapter(NewAdapter),
    Role {
        serial: String,
        role: Role,
        on: Day,
    },
    Outage(Outage),
    Option(NewOption),
    ModelChange {
        id: String,
        change: ModelChange,
    },
    /// `start`: the contract's, which a suspension or termination never comes before in
    /// the ordering (so that the store, not the ordering, judges a day before the start).
    Suspend {
        id: String,
        suspension: Suspension,
        start: Day,
    },
    Terminate {
        id: String,
        termination: Termination,
        start: Day,
    },
    Return {
        id: String,
        on: Day,
    },
}

impl Step {
    /// Where a dated step goes among the others: its day, then options before model changes,
    /// suspensions, terminations (at the end of their day) and returns.
    fn order(&self) -> (Day, u8) {
        match self {
            Step::Option(o) => (o.start, 0),
            Step::ModelChange { change, .. } => (change.on, 1),
            Step::Suspend {
                suspension, start, ..
            } => (suspension.from.max(*start), 2),
            Step::Terminate {
                termination, start, ..
            } => (termination.on.max(*start), 3),
            Step::Return { on, .. } => (*on, 4),
            _ => (Day::MIN, 0),
        }
    }
}

type Steps = Vec<(Location, Step)>;

/// Reads the whole file and checks it against the store, then applies it in one transaction.
/// Nothing is written unless every entry is valid and every change is allowed.
pub async fn import(store: &Store, path: &Path, text: &str) -> Result<Imported, ImportError> {
    let (mut plan, mut imported) = parse(path, text)?;
    let known = store.known().await?;
    check_references(path, &plan, &known)?;
    let dated = plan.dated.split_off(0);
    let mut changes = store.begin().await?;
    let refused = |location: &Location, refusal: Refusal| {
        ImportError::Refused(at(path, location, refusal.to_string()))
    };
    for (location, step) in plan.undated.into_iter().chain(dated) {
        let applied = match step {
            Step::Customer(customer) => changes.add_customer(&customer).await,
            Step::Management(new) => changes.add_management_contract(&new).await,
            Step::Counts { id, counts } => changes.set_counts(&id, counts).await,
            Step::Rental(new) => changes.add_rental(&new).await,
            Step::Adapter(new) => changes.add_adapter(&new).await,
            Step::Role { serial, role, on } => changes.set_role(&serial, role, on).await,
            Step::Outage(outage) => changes.add_outage(&outage).await,
            Step::Option(new) => changes.add_option_contract(&new).await,
            Step::ModelChange { id, change } => changes.change_rental_model(&id, change).await,
            Step::Suspend { id, suspension, .. } => changes.suspend(&id, suspension).await,
            Step::Return { id, on } => changes.return_rental(&id, on).await,
            Step::Terminate {
                id, termination, ..
            } => changes.terminate(&id, termination).await.map(|ended| {
                let notes = ended.moved_note().into_iter().chain(ended.cascade_notes());
                imported
                    .notes
                    .extend(notes.map(|note| format!("{id}: {note}")));
            }),
        };
        match applied {
            Ok(()) => {}
            Err(StoreError::Refused(refusal)) => return Err(refused(&location, refusal)),
            Err(other) => return Err(other.into()),
        }
    }
    match changes.check_counts().await {
        Ok(()) => {}
        Err(StoreError::Refused(refusal)) => {
            let location = match &refusal {
                Refusal::CountExceeded { management, .. } => plan.counted.get(management),
                _ => None,
            };
            let item = match location {
                Some(location) => Diagnostic::at(location, refusal.to_string()),
                // Only role changes of the store's adapters touched it: the file as a whole.
                None => Diagnostic {
                    line: 1,
                    column: 1,
                    message: refusal.to_string(),
                },
            };
            return Err(ImportError::Refused(Diagnostics {
                file: path.display().to_string(),
                items: vec![item],
            }));
        }
        Err(other) => return Err(other.into()),
    }
    changes.commit().await?;
    Ok(imported)
}

/// Checks the whole file as `import` does before it writes anything, without a store: what a
/// file can be refused for by itself.
pub fn check(path: &Path, text: &str) -> Result<Imported, Diagnostics> {
    let (plan, imported) = parse(path, text)?;
    check_references(path, &plan, &Known::default()).map(|()| imported)
}

fn at(path: &Path, location: &Location, message: String) -> Diagnostics {
    Diagnostics {
        file: path.display().to_string(),
        items: vec![Diagnostic::at(location, message)],
    }
}

/// The file as steps: the undated ones in application order, the dated ones sorted by day.
#[derive(Default)]
struct Plan {
    undated: Steps,
    dated: Steps,
    /// Where each management contract's adapters or counts are, for an Art. 5-1 refusal.
    counted: HashMap<String, Location>,
}

/// Every problem of the file by itself (syntax, fields), or its plan.
fn parse(path: &Path, text: &str) -> Result<(Plan, Imported), Diagnostics> {
    let raw: RawFile = parse_yaml(path, text)?;
    let mut fields = Fields::default();
    let imported = Imported {
        customers: raw.customers.len(),
        managements: raw.managements.len(),
        rentals: raw.rentals.len(),
        adapters: raw.adapters.len(),
        options: raw.options.len(),
        outages: raw.outages.len(),
        notes: Vec::new(),
    };
    let mut plan = Plan::default();
    let mut counts = Vec::new();
    let mut roles = Vec::new();
    for entry in raw.customers {
        let c = entry.value;
        let customer = Customer {
            id: c.id.value,
            name: c.name,
            bill_to: c.bill_to,
        };
        plan.undated
            .push((entry.referenced, Step::Customer(customer)));
    }
    for entry in raw.managements {
        let m = entry.value;
        let id = m.id.value.clone();
        plan.counted.insert(id.clone(), entry.referenced);
        let dated = fields.start_and_days(&m.start, &m.accepted, &m.billing_start);
        if let Some((start, days)) = dated {
            let new = NewManagement {
                id: id.clone(),
                customer: m.customer.map(|c| c.value),
                start,
                days,
            };
            plan.undated.push((entry.referenced, Step::Management(new)));
        }
        let start = dated.map_or(Day::MIN, |(start, _)| start);
        fields.life(&id, start, m.suspensions, m.termination, &mut plan.dated);
        for c in m.counts {
            if let Some(from) = fields.day(&c.value.from) {
                let step = Step::Counts {
                    id: id.clone(),
                    counts: Counts {
                        from,
                        entries: c.value.entries,
                        standbys: c.value.standbys,
                    },
                };
                counts.push((c.referenced, step));
            }
        }
    }
    plan.undated.append(&mut counts);
    for entry in raw.rentals {
        let r = entry.value;
        let id = r.id.value.clone();
        let model = fields.model(&r.model);
        let dated = fields.start_and_days(&r.start, &r.accepted, &r.billing_start);
        if let (Some(model), Some((start, days))) = (model, dated) {
            let new = NewRental {
                id: id.clone(),
                customer: r.customer.value,
                serial: r.serial.value,
                model,
                start,
                days,
            };
            plan.undated.push((entry.referenced, Step::Rental(new)));
        }
        let start = dated.map_or(Day::MIN, |(start, _)| start);
        fields.life(&id, start, Vec::new(), r.termination, &mut plan.dated);
        for c in r.model_changes {
            if let (Some(on), Some(model)) = (fields.day(&c.value.on), fields.model(&c.value.model))
            {
                let change = ModelChange { on, model };
                let step = Step::ModelChange {
                    id: id.clone(),
                    change,
                };
                plan.dated.push((c.referenced, step));
            }
        }
        if let Some(returned) = r.returned
            && let Some(on) = fields.day(&returned)
        {
            let step = Step::Return { id, on };
            plan.dated.push((returned.referenced, step));
        }
    }
    for entry in raw.adapters {
        let a = entry.value;
        plan.counted
            .entry(a.management.value.clone())
            .or_insert(entry.referenced);
        let (model, role, since) = (
            fields.model(&a.model),
            fields.role(&a.role),
            fields.day(&a.since),
        );
        if let (Some(model), Some(role), Some(since)) = (model, role, since) {
            let new = NewAdapter {
                serial: a.serial.value.clone(),
                model,
                management: a.management.value,
                role,
                since,
                rental: a.rental.map(|r| r.value),
            };
            plan.undated.push((entry.referenced, Step::Adapter(new)));
        }
        for change in a.role_changes {
            if let (Some(role), Some(on)) = (
                fields.role(&change.value.role),
                fields.day(&change.value.on),
            ) {
                let step = Step::Role {
                    serial: a.serial.value.clone(),
                    role,
                    on,
                };
                roles.push((change.referenced, step));
            }
        }
    }
    plan.undated.append(&mut roles);
    for entry in raw.outages {
        let o = entry.value;
        let claimed = fields.optional_day(o.claimed.as_ref());
        if let (Some(from), Some(to), Some(claimed)) =
            (fields.instant(&o.from), fields.instant(&o.to), claimed)
        {
            let outage = Outage {
                management: o.management.value,
                from,
                to,
                wholly_unusable: o.wholly_unusable,
                provider_fault: o.provider_fault,
                claimed,
            };
            plan.undated.push((entry.referenced, Step::Outage(outage)));
        }
    }
    for entry in raw.options {
        let o = entry.value;
        let id = o.id.value.clone();
        let dated = fields.start_and_days(&o.start, &o.accepted, &o.billing_start);
        if let Some((start, days)) = dated {
            let new = NewOption {
                id: id.clone(),
                serial: o.serial.value,
                start,
                days,
            };
            plan.dated.push((entry.referenced, Step::Option(new)));
        }
        let start = dated.map_or(Day::MIN, |(start, _)| start);
        fields.life(&id, start, o.suspensions, o.termination, &mut plan.dated);
    }
    if !fields.problems.is_empty() {
        return Err(Diagnostics {
            file: path.display().to_string(),
            items: fields.problems,
        });
    }
    // Stable: a day's steps keep the file's order.
    plan.dated.sort_by_key(|(_, step)| step.order());
    Ok((plan, imported))
}

/// An option of the file: start, last day (once terminated), id.
type PlannedOption<'a> = (Day, Option<Day>, &'a str);

/// What the file declares, for the reference checks.
#[derive(Default)]
struct Declared<'a> {
    contracts: HashMap<&'a str, ContractKind>,
    customers: HashSet<&'a str>,
    /// By case-folded serial.
    adapters: HashMap<String, KnownAdapter>,
    rentals: HashMap<&'a str, &'a str>,
    /// The last day of each contract the file terminates (as it takes effect).
    ends: HashMap<&'a str, Day>,
    /// Each adapter's options.
    options: HashMap<&'a str, Vec<PlannedOption<'a>>>,
}

/// Every reference of the file checked against the file and the store, before any write;
/// every problem found, with its position.
fn check_references(path: &Path, plan: &Plan, known: &Known) -> Result<(), Diagnostics> {
    let mut problems = Vec::new();
    let mut refuse = |location: &Location, refusal: Refusal| {
        problems.push(Diagnostic::at(location, refusal.to_string()));
    };
    let mut declared = Declared::default();
    for (location, step) in plan.undated.iter().chain(&plan.dated) {
        if let Some(name) = declared_name(step)
            && let Err(refusal) = check_name(name)
        {
            refuse(location, refusal);
            continue;
        }
        let is_new_contract = |id: &str, declared: &Declared| {
            !known.contracts.contains_key(id) && !declared.contracts.contains_key(id)
        };
        match step {
            Step::Customer(c) => {
                if known.customers.contains(&c.id) || !declared.customers.insert(&c.id) {
                    refuse(location, Refusal::DuplicateCustomer(c.id.clone()));
                }
            }
            Step::Management(m) => {
                if !is_new_contract(&m.id, &declared) {
                    refuse(location, Refusal::DuplicateContract(m.id.clone()));
                }
                declared.contracts.insert(&m.id, ContractKind::Management);
                if let Some(customer) = &m.customer
                    && !known.customers.contains(customer)
                    && !declared.customers.contains(customer.as_str())
                {
                    refuse(location, Refusal::UnknownCustomer(customer.clone()));
                }
            }
            Step::Rental(r) => {
                if let Err(refusal) = check_name(&r.serial) {
                    refuse(location, refusal);
                }
                if !r.model.rentable() {
                    refuse(location, Refusal::NotRentable { model: r.model });
                }
                if !is_new_contract(&r.id, &declared) {
                    refuse(location, Refusal::DuplicateContract(r.id.clone()));
                }
                declared.contracts.insert(&r.id, ContractKind::Rental);
                declared.rentals.insert(&r.id, &r.serial);
                if !known.customers.contains(&r.customer)
                    && !declared.customers.contains(r.customer.as_str())
                {
                    refuse(location, Refusal::UnknownCustomer(r.customer.clone()));
                }
            }
            Step::Adapter(a) => check_adapter(location, a, known, &mut declared, &mut refuse),
            Step::Option(o) => check_option(location, o, known, &mut declared, &mut refuse),
            Step::Terminate {
                id, termination, ..
            } => {
                // Customer terminations as they take effect (Art. 23-2); the store refuses
                // the rest when it applies them.
                let on = match termination.by {
                    TerminatedBy::Customer => termination
                        .notice
                        .and_then(|n| customer_termination_day(termination.on, n))
                        .unwrap_or(termination.on),
                    _ => termination.on,
                };
                declared.ends.insert(id, on);
                if let Some(option) = declared.options.values_mut().flatten().find(|o| o.2 == id) {
                    option.1 = Some(on);
                }
            }
            Step::Counts { id, .. } | Step::Outage(Outage { management: id, .. }) => {
                let kind = known
                    .contracts
                    .get(id)
                    .or(declared.contracts.get(id.as_str()));
                if kind != Some(&ContractKind::Management) {
                    refuse(location, Refusal::UnknownManagement(id.clone()));
                }
            }
            Step::Role { .. }
            | Step::ModelChange { .. }
            | Step::Suspend { .. }
            | Step::Return { .. } => {}
        }
    }
    check_overlaps(plan, &declared, &mut refuse);
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by_key(|d| (d.line, d.column));
    Err(Diagnostics {
        file: path.display().to_string(),
        items: problems,
    })
}

/// The id or serial a step brings into the store.
fn declared_name(step: &Step) -> Option<&str> {
    match step {
        Step::Customer(c) => Some(&c.id),
        Step::Management(m) => Some(&m.id),
        Step::Rental(r) => Some(&r.id),
        Step::Adapter(a) => Some(&a.serial),
        Step::Option(o) => Some(&o.id),
        _ => None,
    }
}

fn check_adapter<'a>(
    location: &Location,
    a: &'a NewAdapter,
    known: &Known,
    declared: &mut Declared<'a>,
    refuse: &mut impl FnMut(&Location, Refusal),
) {
    let key = serial_key(&a.serial);
    let existing = known.adapters.get(&key).or(declared.adapters.get(&key));
    match existing {
        Some(existing) if existing.serial == a.serial => {
            refuse(location, Refusal::DuplicateAdapter(a.serial.clone()));
        }
        Some(existing) => refuse(
            location,
            Refusal::SerialCase {
                serial: a.serial.clone(),
                existing: existing.serial.clone(),
            },
        ),
        None => {}
    }
    let management = known
        .contracts
        .get(&a.management)
        .or(declared.contracts.get(a.management.as_str()));
    if management != Some(&ContractKind::Management) {
        refuse(location, Refusal::UnknownManagement(a.management.clone()));
    }
    if let Some(rental) = &a.rental {
        let rented = known
            .rentals
            .get(rental)
            .map(String::as_str)
            .or(declared.rentals.get(rental.as_str()).copied());
        match rented {
            None => refuse(location, Refusal::UnknownRental(rental.clone())),
            Some(rented) if rented != a.serial => refuse(
                location,
                Refusal::RentalSerial {
                    serial: a.serial.clone(),
                    rental: rental.clone(),
                    rented: rented.to_string(),
                },
            ),
            Some(_) => {}
        }
    }
    if existing.is_none() {
        declared.adapters.insert(
            key,
            KnownAdapter {
                serial: a.serial.clone(),
                model: a.model,
                management: a.management.clone(),
                rental: a.rental.clone(),
            },
        );
    }
}

fn check_option<'a>(
    location: &Location,
    o: &'a NewOption,
    known: &Known,
    declared: &mut Declared<'a>,
    refuse: &mut impl FnMut(&Location, Refusal),
) {
    if known.contracts.contains_key(&o.id) || declared.contracts.contains_key(o.id.as_str()) {
        refuse(location, Refusal::DuplicateContract(o.id.clone()));
    }
    declared.contracts.insert(&o.id, ContractKind::Option);
    let key = serial_key(&o.serial);
    let adapter = known
        .adapters
        .get(&key)
        .or(declared.adapters.get(&key))
        .filter(|a| a.serial == o.serial);
    let Some(adapter) = adapter else {
        refuse(location, Refusal::UnknownAdapter(o.serial.clone()));
        return;
    };
    if !adapter.model.option_eligible() {
        refuse(
            location,
            Refusal::NotEligible {
                serial: o.serial.clone(),
                model: adapter.model,
            },
        );
    }
    let end_of = |id: &str| known.ends.get(id).or(declared.ends.get(id)).copied();
    if let Some(end) = end_of(&adapter.management).filter(|end| o.start > *end) {
        refuse(
            location,
            Refusal::ManagementEnded {
                serial: o.serial.clone(),
                management: adapter.management.clone(),
                end,
            },
        );
    }
    if let Some(rental) = &adapter.rental
        && let Some(end) = end_of(rental).filter(|end| o.start > *end)
    {
        refuse(
            location,
            Refusal::RentalEnded {
                serial: o.serial.clone(),
                rental: rental.clone(),
                end,
            },
        );
    }
    declared
        .options
        .entry(&o.serial)
        .or_default()
        .push((o.start, None, &o.id));
}

/// Art. 4-2 within the file: an adapter's options, by start, each ending before the next
/// starts. The error names both contracts and their periods.
fn check_overlaps(plan: &Plan, declared: &Declared, refuse: &mut impl FnMut(&Location, Refusal)) {
    let location_of: HashMap<&str, &Location> = plan
        .dated
        .iter()
        .filter_map(|(location, step)| match step {
            Step::Option(o) => Some((o.id.as_str(), location)),
            _ => None,
        })
        .collect();
    for (serial, options) in &declared.options {
        let mut options = options.clone();
        options.sort();
        for pair in options.windows(2) {
            let ((start, end, id), (next_start, _, next)) = (pair[0], pair[1]);
            if end.is_none_or(|end| end >= next_start) {
                let period = match end {
                    Some(end) => format!("{start} to {end}"),
                    None => format!("from {start}, not terminated"),
                };
                refuse(
                    location_of[next],
                    Refusal::SecondOption {
                        serial: serial.to_string(),
                        existing: id.to_string(),
                        period: format!("{period}, while `{next}` starts on {next_start}"),
                    },
                );
            }
        }
    }
}

/// Field conversions that record a positioned problem instead of stopping at the first.
#[derive(Default)]
struct Fields {
    problems: Vec<Diagnostic>,
}

impl Fields {
    fn day(&mut self, text: &Spanned<String>) -> Option<Day> {
        self.parsed(text, parse_day)
    }

    /// `Some(None)` for an absent day, `Some(Some(day))` for a valid one, None for a bad one.
    fn optional_day(&mut self, text: Option<&Spanned<String>>) -> Option<Option<Day>> {
        match text {
            None => Some(None),
            Some(text) => self.day(text).map(Some),
        }
    }

    /// The start day and the billing days, which default to it (Art. 15-2, 15-3).
    fn start_and_days(
        &mut self,
        start: &Spanned<String>,
        accepted: &Option<Spanned<String>>,
        billing_start: &Option<Spanned<String>>,
    ) -> Option<(Day, BillingDays)> {
        let start = self.day(start);
        let accepted = self.optional_day(accepted.as_ref());
        let billing_start = self.optional_day(billing_start.as_ref());
        let (start, accepted, billing_start) = (start?, accepted?, billing_start?);
        Some((
            start,
            BillingDays {
                accepted: accepted.unwrap_or(start),
                billing_start: billing_start.unwrap_or(start),
            },
        ))
    }

    fn instant(&mut self, text: &Spanned<String>) -> Option<DateTime<Utc>> {
        self.parsed(text, |text| {
            DateTime::parse_from_rfc3339(text)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|_| {
                    format!(
                        "`{text}` is not an RFC 3339 instant; write e.g. 2026-08-03T10:00:00+09:00"
                    )
                })
        })
    }

    fn model(&mut self, text: &Spanned<String>) -> Option<Model> {
        self.parsed(text, Model::from_str)
    }

    fn role(&mut self, text: &Spanned<String>) -> Option<Role> {
        self.parsed(text, Role::from_str)
    }

    fn parsed<T, E: ToString>(
        &mut self,
        text: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        parse(&text.value)
            .map_err(|error| {
                self.problems
                    .push(Diagnostic::at(&text.referenced, error.to_string()))
            })
            .ok()
    }

    /// A contract's suspensions and termination as dated steps.
    fn life(
        &mut self,
        id: &str,
        start: Day,
        suspensions: Vec<Spanned<RawSuspension>>,
        termination: Option<Spanned<RawTermination>>,
        dated: &mut Steps,
    ) {
        for entry in suspensions {
            let from = self.day(&entry.value.from);
            let to = self.optional_day(entry.value.to.as_ref());
            if let (Some(from), Some(to)) = (from, to) {
                let suspension = Suspension { from, to };
                let step = Step::Suspend {
                    id: id.to_string(),
                    suspension,
                    start,
                };
                dated.push((entry.referenced, step));
            }
        }
        let Some(entry) = termination else {
            return;
        };
        let t = entry.value;
        let on = self.day(&t.on);
        let by = TerminatedBy::from_operator(&t.by.value);
        if by.is_none() {
            self.problems.push(Diagnostic::at(
                &t.by.referenced,
                format!(
                    "`by: {}`: a termination is by `customer`, `provider` or `abolition`",
                    t.by.value
                ),
            ));
        }
        let notice = self.optional_day(t.notice.as_ref());
        if let (Some(on), Some(by), Some(notice)) = (on, by, notice) {
            let step = Step::Terminate {
                id: id.to_string(),
                termination: Termination { on, by, notice },
                start,
            };
            dated.push((entry.referenced, step));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(u32, String)> {
        match check(Path::new("c.yaml"), text) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics
                .items
                .into_iter()
                .map(|d| (d.line, d.message))
                .collect(),
        }
    }

    fn kinds(text: &str) -> Vec<String> {
        let (plan, _) = parse(Path::new("c.yaml"), text).unwrap();
        plan.undated
            .iter()
            .chain(&plan.dated)
            .map(|(_, step)| match step {
                Step::Customer(c) => format!("customer {}", c.id),
                Step::Management(m) => format!("management {}", m.id),
                Step::Counts { id, .. } => format!("counts {id}"),
                Step::Rental(r) => format!("rental {}", r.id),
                Step::Adapter(a) => format!("adapter {}", a.serial),
                Step::Role { serial, .. } => format!("role {serial}"),
                Step::Outage(o) => format!("outage {}", o.management),
                Step::Option(o) => format!("option {}", o.id),
                Step::ModelChange { id, .. } => format!("model {id}"),
                Step::Suspend { id, .. } => format!("suspend {id}"),
                Step::Terminate { id, .. } => format!("end {id}"),
                Step::Return { id, .. } => format!("return {id}"),
            })
            .collect()
    }

    #[test]
    fn steps_come_in_application_order() {
        let text = "managements:\n  - {id: M-1, start: 2025-04-01, termination: {on: 2025-12-31, by: provider}}\n\
                    adapters:\n  - {serial: S-1, model: SEIL/X1, management: M-1, role: standby, since: 2025-04-01, role_changes: [{role: entry, on: 2025-05-01}]}\n\
                    options:\n  - {id: O-1, serial: S-1, start: 2025-05-01, suspensions: [{from: 2025-06-01}], termination: {on: 2025-11-30, by: customer, notice: 2025-10-01}}\n";
        assert_eq!(
            kinds(text),
            [
                "management M-1",
                "adapter S-1",
                "role S-1",
                "option O-1",
                "suspend O-1",
                "end O-1",
                "end M-1"
            ]
        );
        assert_eq!(
            check(Path::new("c.yaml"), text).unwrap(),
            Imported {
                managements: 1,
                adapters: 1,
                options: 1,
                ..Imported::default()
            }
        );
    }

    // Art. 4-2: entries apply in date order, so a sequential history in one file imports.
    #[test]
    fn a_sequential_history_applies_in_date_order() {
        let text = "managements:\n  - {id: M-1, start: 2026-01-01}\n\
                    adapters:\n  - {serial: S-1, model: x1, management: M-1, role: entry, since: 2026-01-01}\n\
                    options:\n  - {id: O-2, serial: S-1, start: 2026-05-01}\n  \
                    - {id: O-1, serial: S-1, start: 2026-02-01, termination: {on: 2026-04-30, by: provider}}\n";
        assert_eq!(
            kinds(text),
            [
                "management M-1",
                "adapter S-1",
                "option O-1",
                "end O-1",
                "option O-2"
            ]
        );
        assert_eq!(problems(text), []);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_line() {
        let text = "managements:\n  - {id: M-1, start: 2025-13-01}\n\
                    adapters:\n  - {serial: S-1, model: SEIL/X9, management: M-1, role: boss, since: 2025-04-01}\n\
                    options:\n  - {id: O-1, serial: S-1, start: +10000-01-01, termination: {on: 2025-11-30, by: nobody}}\n";
        let found = problems(text);
        assert_eq!(found.len(), 5, "{found:?}");
        assert_eq!(found[0].0, 2);
        assert!(
            found[0].1.contains("`2025-13-01` is not a date"),
            "{found:?}"
        );
        assert_eq!(found[1].0, 4);
        assert!(found[1].1.contains("unknown model `SEIL/X9`"), "{found:?}");
        assert_eq!(found[2].0, 4);
        assert!(found[2].1.contains("unknown role `boss`"), "{found:?}");
        assert_eq!(found[3].0, 6);
        assert!(
            found[3].1.contains("`+10000-01-01` is not a date"),
            "{found:?}"
        );
        assert_eq!(found[4].0, 6);
        assert!(found[4].1.contains("`by: nobody`"), "{found:?}");
    }

    // Each row: the file's entries after a management M-1 and an x1 S-1, the line and the
    // refusal every reference check gives while planning.
    #[test]
    fn references_are_checked_while_planning() {
        let base = "managements:\n  - {id: M-1, start: 2026-01-01, termination: {on: 2026-06-30, by: provider}}\n\
                    adapters:\n  - {serial: S-1, model: x1, management: M-1, role: entry, since: 2026-01-01}\n";
        let cases = [
            (
                "  - {serial: s-1, model: x1, management: M-1, role: entry, since: 2026-01-01}\n",
                5,
                "differs from the existing adapter `S-1` only by case",
            ),
            (
                "  - {serial: S-2, model: x1, management: M-9, role: entry, since: 2026-01-01}\n",
                5,
                "there is no management contract `M-9`",
            ),
            (
                "  - {serial: \"S\\u200b2\", model: x1, management: M-1, role: entry, since: 2026-01-01}\n",
                5,
                "is not a valid id or serial",
            ),
            (
                "options:\n  - {id: O-1, serial: S-9, start: 2026-02-01}\n",
                6,
                "there is no adapter with serial `S-9`",
            ),
            // Art. 23-3: after the covering contract's end.
            (
                "options:\n  - {id: O-1, serial: S-1, start: 2026-07-01}\n",
                6,
                "Art. 23-3: the management contract `M-1` of adapter `S-1` ends on 2026-06-30",
            ),
            // Art. 4-2: a real overlap names both options.
            (
                "options:\n  - {id: O-1, serial: S-1, start: 2026-02-01, termination: {on: 2026-04-30, by: provider}}\n  - {id: O-2, serial: S-1, start: 2026-04-15}\n",
                7,
                "Art. 4-2: adapter `S-1` already has option contract `O-1` (2026-02-01 to 2026-04-30, while `O-2` starts on 2026-04-15)",
            ),
            // Art. 23-2 applies: notice 2026-04-10 makes O-1 run through 2026-05-10.
            (
                "options:\n  - {id: O-1, serial: S-1, start: 2026-02-01, termination: {on: 2026-04-30, by: customer, notice: 2026-04-10}}\n  - {id: O-2, serial: S-1, start: 2026-05-01}\n",
                7,
                "(2026-02-01 to 2026-05-10, while `O-2` starts on 2026-05-01)",
            ),
            (
                "options:\n  - {id: M-1, serial: S-1, start: 2026-02-01}\n",
                6,
                "contract `M-1` already exists",
            ),
            (
                "rentals:\n  - {id: R-1, customer: C-9, serial: S-1, model: x86-fuji, start: 2026-01-01}\n",
                6,
                "there is no customer `C-9`",
            ),
        ];
        for (more, line, fragment) in cases {
            let found = problems(&format!("{base}{more}"));
            assert!(
                found
                    .iter()
                    .any(|(l, m)| *l == line && m.contains(fragment)),
                "{more}: {found:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let found = problems("managements:\n  - {id: M-1, start: 2025-04-01, colour: red}\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 2);
        assert!(found[0].1.contains("colour"), "{found:?}");
    }
}
