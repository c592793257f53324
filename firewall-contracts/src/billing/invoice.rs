//! Each customer's invoice for one service month (Art. 15, 16, 26, 9-3).

use std::collections::{HashMap, HashSet};

use chrono::TimeDelta;
use serde::Serialize;

use super::{
    book::{Book, End, EndedBy, Management, OptionContract, Outage, Rental, Suspension},
    calendar::Month,
    prices::{Price, PriceError, Prices},
    proration::{Exact, Units},
};
use crate::model::{Day, Role, minimum_term_end};

/// Art. 16-1: the minimum terms in months, from the billing start.
const MANAGEMENT_MONTHS: u32 = 1;
const OPTION_MONTHS: u32 = 1;
const RENTAL_MONTHS: u32 = 12;

/// Art. 9-3: a rented adapter comes back within this many days after its contract ended.
const RETURN_DAYS: i64 = 30;

/// Art. 26: an outage counts in whole periods of 24 hours; the credit is a 30th of the
/// monthly fee per period.
const OUTAGE_PERIOD: TimeDelta = TimeDelta::hours(24);
const CREDIT_DIVISOR: i128 = 30;

/// Art. 26: the claim lapses after this many months.
const CLAIM_MONTHS: u32 = 3;

/// Which service a line bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Management,
    Option,
    Rental,
}

impl Service {
    pub const fn name(self) -> &'static str {
        match self {
            Service::Management => "management",
            Service::Option => "option",
            Service::Rental => "rental",
        }
    }
}

/// One line of an invoice: what it bills, under which article and contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub article: String,
    pub contract: String,
    pub item: String,
    /// Yen; negative only for an Art. 26 credit.
    pub amount: i64,
    /// Days of service the line bills (0 for initial fees and credits).
    #[serde(skip)]
    pub days: u32,
    #[serde(skip)]
    pub service: Service,
}

/// A customer's invoice for service month `month`, issued in the next month and due on its
/// last day (Art. 15-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub customer: String,
    #[serde(skip)]
    pub name: String,
    pub month: Month,
    pub issued: Month,
    pub due: Day,
    pub lines: Vec<Line>,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub warnings: Vec<String>,
    /// Art. 14: where the invoice goes, when not to the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bill_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Price(#[from] PriceError),
    #[error("unknown customer `{0}`")]
    UnknownCustomer(String),
    #[error("{0}")]
    Book(String),
    #[error("the invoice of {customer} for {month} is too large to bill")]
    TooLarge { customer: String, month: Month },
    #[error("no invoice can be issued for {0}: it would be issued after 9999-12")]
    LastMonth(Month),
}

/// The invoices for service month `month`: every customer with a line or a warning, or only
/// `customer` (then always, even when empty).
pub fn invoice(
    book: &Book,
    prices: &Prices,
    month: Month,
    customer: Option<&str>,
) -> Result<Vec<Invoice>, BillingError> {
    let issued = month.next().ok_or(BillingError::LastMonth(month))?;
    let mut biller = Biller::new(book, prices, month, customer)?;
    for management in &book.managements {
        biller.management(management)?;
    }
    for option in &book.options {
        biller.option(option)?;
    }
    for rental in &book.rentals {
        biller.rental(rental)?;
    }
    for outage in &book.outages {
        biller.outage(outage)?;
    }
    let mut invoices = Vec::new();
    for party in &book.customers {
        let Some(draft) = biller.drafts.remove(party.id.as_str()) else {
            continue;
        };
        let lines: Vec<Line> = draft
            .lines
            .into_iter()
            .filter(|line| line.amount != 0)
            .collect();
        if customer.is_none() && lines.is_empty() && draft.warnings.is_empty() {
            continue;
        }
        let too_large = || BillingError::TooLarge {
            customer: party.id.clone(),
            month,
        };
        let subtotal = lines
            .iter()
            .try_fold(0i64, |sum, line| sum.checked_add(line.amount))
            .ok_or_else(too_large)?;
        let tax = match subtotal {
            0 => 0,
            _ => prices.tax_rate(month.last())?.tax_on(subtotal),
        };
        invoices.push(Invoice {
            customer: party.id.clone(),
            name: party.name.clone(),
            month,
            issued,
            due: issued.last(),
            lines,
            subtotal,
            tax,
            total: subtotal.checked_add(tax).ok_or_else(too_large)?,
            warnings: draft.warnings,
            bill_to: party.bill_to.clone(),
        });
    }
    Ok(invoices)
}

#[derive(Default)]
struct Draft {
    lines: Vec<Line>,
    warnings: Vec<String>,
}

/// A monthly fee accrued day by day.
struct Accrued {
    price: Price,
    exact: Exact,
    days: u32,
}

struct Biller<'a> {
    prices: &'a Prices,
    month: Month,
    zone: chrono_tz::Tz,
    managements: HashMap<&'a str, &'a Management>,
    rentals: HashMap<&'a str, &'a Rental>,
    /// Entry and Standby units of each management contract.
    units: HashMap<&'a str, [Units; 2]>,
    /// The wanted customers' drafts.
    drafts: HashMap<&'a str, Draft>,
}

impl<'a> Biller<'a> {
    /// Indexes the book, refusing references to what it does not hold.
    fn new(
        book: &'a Book,
        prices: &'a Prices,
        month: Month,
        wanted: Option<&str>,
    ) -> Result<Self, BillingError> {
        let mut customers = HashSet::new();
        for party in &book.customers {
            if !customers.insert(party.id.as_str()) {
                return Err(book_error(format!("customer {} is listed twice", party.id)));
            }
        }
        if let Some(id) = wanted
            && !customers.contains(id)
        {
            return Err(BillingError::UnknownCustomer(id.to_string()));
        }
        let known = |customer: &str, what: &str| {
            customers
                .contains(customer)
                .then_some(())
                .ok_or_else(|| book_error(format!("{what} names unknown customer `{customer}`")))
        };
        let mut managements = HashMap::new();
        let mut units = HashMap::new();
        for m in &book.managements {
            known(&m.customer, &format!("management {}", m.id))?;
            if managements.insert(m.id.as_str(), m).is_some() {
                return Err(book_error(format!("management {} is listed twice", m.id)));
            }
            units.insert(m.id.as_str(), management_units(m)?);
        }
        let mut rentals = HashMap::new();
        for r in &book.rentals {
            known(&r.customer, &format!("rental {}", r.id))?;
            let models = std::iter::once(r.model).chain(r.model_changes.iter().map(|c| c.model));
            if let Some(model) = models.into_iter().find(|model| !model.rentable()) {
                return Err(book_error(format!(
                    "rental {}: {model} is not a rental model (table 1)",
                    r.id
                )));
            }
            if rentals.insert(r.id.as_str(), r).is_some() {
                return Err(book_error(format!("rental {} is listed twice", r.id)));
            }
        }
        for o in &book.options {
            if !o.model.option_eligible() {
                return Err(book_error(format!(
                    "option {}: {} gets no Ultra Firewall Option (table 1)",
                    o.id, o.model
                )));
            }
            if !managements.contains_key(o.management.as_str()) {
                return Err(book_error(format!(
                    "option {} names unknown management `{}`",
                    o.id, o.management
                )));
            }
            if let Some(rental) = &o.rental
                && !rentals.contains_key(rental.as_str())
            {
                return Err(book_error(format!(
                    "option {} names unknown rental `{rental}`",
                    o.id
                )));
            }
        }
        if let Some(outage) = book
            .outages
            .iter()
            .find(|outage| !managements.contains_key(outage.management.as_str()))
        {
            return Err(book_error(format!(
                "an outage names unknown management `{}`",
                outage.management
            )));
        }
        let drafts = book
            .customers
            .iter()
            .filter(|party| wanted.is_none_or(|id| id == party.id))
            .map(|party| (party.id.as_str(), Draft::default()))
            .collect();
        Ok(Biller {
            prices,
            month,
            zone: book.time_zone,
            managements,
            rentals,
            units,
            drafts,
        })
    }

    /// Management fees: initial fees per unit (15-2), monthly fees by count (15-3 to 15-5),
    /// the remainder of an early end (16-2).
    fn management(&mut self, m: &'a Management) -> Result<(), BillingError> {
        let Some(mut draft) = self.drafts.remove(m.customer.as_str()) else {
            return Ok(());
        };
        let result = self.management_lines(m, &mut draft);
        self.drafts.insert(m.customer.as_str(), draft);
        result
    }

    fn management_lines(&self, m: &Management, draft: &mut Draft) -> Result<(), BillingError> {
        let start = m.billing_start();
        let last = last_day(m.end);
        let units = &self.units[m.id.as_str()];
        let line = |article: &str, item: String, amount, days| Line {
            article: article.to_string(),
            contract: m.id.clone(),
            item,
            amount,
            days,
            service: Service::Management,
        };
        for (role, units) in [Role::Entry, Role::Standby].into_iter().zip(units) {
            for (since, added) in units.added() {
                // The starting units were applied for; later ones came with a count change
                // that the provider accepted on the day it took effect (Art. 5-3).
                let accepted = if since == start {
                    m.accepted
                } else {
                    Some(since)
                };
                let Some(day) = accepted.filter(|day| self.month.contains(*day)) else {
                    continue;
                };
                let price = self.price(&m.customer, Price::ManagementInitial(role), day)?;
                let amount = self.yen(&m.customer, i128::from(price) * i128::from(added))?;
                draft.lines.push(line(
                    "15-2",
                    format!("management {role} initial × {added}"),
                    amount,
                    0,
                ));
            }
        }
        if m.accepted.is_none() && self.month.contains(start) {
            draft.warnings.push(format!(
                "management {}: no acceptance day, so no initial fee is billed (Art. 15-2)",
                m.id
            ));
        }
        if m.counts.is_empty() && self.month.contains(start) {
            draft.warnings.push(format!(
                "management {}: no Entry or Standby counts, so no monthly fee is billed (Art. 5-1)",
                m.id
            ));
        }
        if let Some((first, through)) = self.served(start, last) {
            let ended = m.end.is_some_and(|end| self.month.contains(end.on));
            for (role, units) in [Role::Entry, Role::Standby].into_iter().zip(units) {
                let per_day = |day| (Price::ManagementMonthly(role), units.billed_on(day));
                for accrued in self.accrue(&m.customer, first, through, per_day)? {
                    let article = if units.changes_within(first, through) {
                        "15-5"
                    } else if ended {
                        "15-4"
                    } else {
                        "15-3"
                    };
                    let amount = self.yen(&m.customer, accrued.exact.floor())?;
                    draft.lines.push(line(
                        article,
                        format!("management {role}"),
                        amount,
                        accrued.days,
                    ));
                }
            }
        }
        if let Some((first, through)) = self.remainder(start, m.end, MANAGEMENT_MONTHS, false) {
            for (role, units) in [Role::Entry, Role::Standby].into_iter().zip(units) {
                let per_day = |day| (Price::ManagementMonthly(role), units.billed_on(day));
                for accrued in self.accrue(&m.customer, first, through, per_day)? {
                    let amount = self.yen(&m.customer, accrued.exact.floor())?;
                    let item = format!("management {role}, rest of the minimum term to {through}");
                    draft.lines.push(line("16-2", item, amount, accrued.days));
                }
            }
        }
        self.suspended(&format!("management {}", m.id), &m.suspensions, draft);
        Ok(())
    }

    /// An option is billed to its management contract's customer.
    fn option(&mut self, o: &'a OptionContract) -> Result<(), BillingError> {
        let customer = self.managements[o.management.as_str()].customer.as_str();
        let Some(mut draft) = self.drafts.remove(customer) else {
            return Ok(());
        };
        let result = self.option_lines(o, customer, &mut draft);
        self.drafts.insert(customer, draft);
        result
    }

    fn option_lines(
        &self,
        o: &OptionContract,
        customer: &str,
        draft: &mut Draft,
    ) -> Result<(), BillingError> {
        let abolished = match o.end.map(|end| end.by) {
            Some(EndedBy::Management) => {
                ended_by_abolition(self.managements[o.management.as_str()].end)
            }
            Some(EndedBy::Rental) => {
                let rental = o.rental.as_deref().ok_or_else(|| {
                    book_error(format!(
                        "option {} ended with its rental (Art. 23-3) but names none",
                        o.id
                    ))
                })?;
                ended_by_abolition(self.rentals[rental].end)
            }
            _ => false,
        };
        let model = o.model;
        let lines = self.contract_lines(
            Contract {
                service: Service::Option,
                id: &o.id,
                customer,
                accepted: o.accepted,
                start: o.billing_start(),
                end: o.end,
                initial: Price::OptionInitial,
                months: OPTION_MONTHS,
                abolished,
            },
            |_| Price::OptionMonthly(model),
            Price::OptionMonthly(model),
            draft,
        );
        self.suspended(&format!("option {}", o.id), &o.suspensions, draft);
        lines
    }

    fn rental(&mut self, r: &'a Rental) -> Result<(), BillingError> {
        let Some(mut draft) = self.drafts.remove(r.customer.as_str()) else {
            return Ok(());
        };
        let result = self.rental_lines(r, &mut draft);
        self.drafts.insert(r.customer.as_str(), draft);
        result
    }

    fn rental_lines(&self, r: &Rental, draft: &mut Draft) -> Result<(), BillingError> {
        self.contract_lines(
            Contract {
                service: Service::Rental,
                id: &r.id,
                customer: &r.customer,
                accepted: r.accepted,
                start: r.billing_start(),
                end: r.end,
                initial: Price::RentalInitial,
                months: RENTAL_MONTHS,
                abolished: false,
            },
            |day| Price::RentalMonthly(r.model_on(day)),
            // Art. 16-3: the remainder at the model registered when the contract was made.
            Price::RentalMonthly(r.contract_model()),
            draft,
        )?;
        self.unreturned(r, draft);
        self.suspended(&format!("rental {}", r.id), &r.suspensions, draft);
        Ok(())
    }

    /// Art. 9-3, 11-2: on the invoice of the month of the first day late.
    fn unreturned(&self, r: &Rental, draft: &mut Draft) {
        let Some(end) = r.end else { return };
        let (Some(deadline), Some(late)) = (
            end.on.checked_add_signed(TimeDelta::days(RETURN_DAYS)),
            end.on.checked_add_signed(TimeDelta::days(RETURN_DAYS + 1)),
        ) else {
            return;
        };
        if self.month.contains(late) && r.returned.is_none_or(|day| day > deadline) {
            let serial = r
                .serial
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            draft.warnings.push(format!(
                "rental {}: the adapter{serial} was not returned by {deadline}, 30 days after the rental ended on {} (Art. 9-3): a loss charge is due, billed on a separate invoice (Art. 11-2)",
                r.id, end.on
            ));
        }
    }

    /// Initial fee (15-2), monthly fee (15-3, 15-4) and remainder (16-2) of an option or
    /// rental contract.
    fn contract_lines(
        &self,
        contract: Contract<'_>,
        monthly: impl Fn(Day) -> Price,
        remainder: Price,
        draft: &mut Draft,
    ) -> Result<(), BillingError> {
        let Contract {
            service,
            id,
            customer,
            ..
        } = contract;
        let line = |article: &str, item: String, amount, days| Line {
            article: article.to_string(),
            contract: id.to_string(),
            item,
            amount,
            days,
            service,
        };
        let kind = service.name();
        if let Some(day) = contract.accepted.filter(|day| self.month.contains(*day)) {
            let amount = self.price(customer, contract.initial, day)?;
            let amount = self.yen(customer, i128::from(amount))?;
            draft
                .lines
                .push(line("15-2", format!("{kind} initial"), amount, 0));
        } else if contract.accepted.is_none() && self.month.contains(contract.start) {
            draft.warnings.push(format!(
                "{kind} {id}: no acceptance day, so no initial fee is billed (Art. 15-2)"
            ));
        }
        if let Some((first, through)) = self.served(contract.start, last_day(contract.end)) {
            let ended = contract.end.is_some_and(|end| self.month.contains(end.on));
            let article = if ended { "15-4" } else { "15-3" };
            for accrued in self.accrue(customer, first, through, |day| (monthly(day), 1))? {
                let amount = self.yen(customer, accrued.exact.floor())?;
                let item = monthly_item(accrued.price);
                draft.lines.push(line(article, item, amount, accrued.days));
            }
        }
        if let Some((first, through)) = self.remainder(
            contract.start,
            contract.end,
            contract.months,
            contract.abolished,
        ) {
            for accrued in self.accrue(customer, first, through, |_| (remainder, 1))? {
                let amount = self.yen(customer, accrued.exact.floor())?;
                let item = format!(
                    "{}, rest of the minimum term to {through}",
                    monthly_item(accrued.price)
                );
                draft.lines.push(line("16-2", item, amount, accrued.days));
            }
        }
        Ok(())
    }

    /// Art. 26: the credit for an outage claimed this month, or why there is none.
    fn outage(&mut self, outage: &Outage) -> Result<(), BillingError> {
        let Some(claimed) = outage.claimed.filter(|day| self.month.contains(*day)) else {
            return Ok(());
        };
        let management = self.managements[outage.management.as_str()];
        let Some(mut draft) = self.drafts.remove(management.customer.as_str()) else {
            return Ok(());
        };
        let result = self.credit(outage, management, claimed, &mut draft);
        self.drafts.insert(management.customer.as_str(), draft);
        result
    }

    fn credit(
        &self,
        outage: &Outage,
        m: &Management,
        claimed: Day,
        draft: &mut Draft,
    ) -> Result<(), BillingError> {
        let local =
            |instant: chrono::DateTime<chrono::FixedOffset>| instant.with_timezone(&self.zone);
        let (from, to) = (local(outage.from), local(outage.to));
        let what = format!(
            "management {}: the outage from {} to {} claimed on {claimed}",
            m.id,
            from.format("%Y-%m-%d %H:%M"),
            to.format("%Y-%m-%d %H:%M")
        );
        let lasted = outage.to - outage.from;
        let mut refuse = |why: String| {
            draft.warnings.push(format!("{what}: {why}"));
            Ok(())
        };
        if !outage.wholly_unusable {
            return refuse("no reduction: the service was not wholly unusable (Art. 26)".into());
        }
        if !outage.provider_fault {
            return refuse("no reduction: not the provider's fault (Art. 26-2)".into());
        }
        if lasted <= TimeDelta::zero() {
            return refuse("no reduction: it ends before it begins".into());
        }
        if lasted < OUTAGE_PERIOD {
            let minutes = lasted.num_minutes();
            return refuse(format!(
                "no reduction: it lasted {} h {} min, less than 24 consecutive hours (Art. 26)",
                minutes / 60,
                minutes % 60
            ));
        }
        let reached = local(outage.from + OUTAGE_PERIOD).date_naive();
        // "By the day 3 months pass from the day the claim became possible": the period
        // starts the next day (Civil Code Art. 140) and ends as minimum terms do (Art. 143).
        let deadline = reached
            .succ_opt()
            .map_or(Day::MAX, |next| minimum_term_end(next, CLAIM_MONTHS));
        if claimed < reached {
            return refuse(format!(
                "no reduction: claimed before the 24 hours were reached on {reached}"
            ));
        }
        if claimed > deadline {
            return refuse(format!(
                "no reduction: the claim lapsed, it was due by {deadline}, 3 months after the 24 hours were reached on {reached} (Art. 26)"
            ));
        }
        let periods = i128::from(lasted.num_seconds() / OUTAGE_PERIOD.num_seconds());
        let began = from.date_naive();
        let monthly = self.monthly_management_fee(m, began)?;
        let credit = periods * monthly / CREDIT_DIVISOR;
        let room: i64 = draft
            .lines
            .iter()
            .filter(|line| line.service == Service::Management)
            .map(|line| line.amount)
            .sum();
        let credit = self.yen(&m.customer, credit)?;
        let applied = credit.min(room.max(0));
        if applied < credit {
            draft.warnings.push(format!(
                "{what}: the credit of {credit} yen is limited to the {room} yen of management fees on this invoice (Art. 26)"
            ));
        }
        if applied > 0 {
            draft.lines.push(Line {
                article: "26".to_string(),
                contract: m.id.clone(),
                item: format!(
                    "outage credit, {periods} × 1/30 of {monthly} yen ({} to {})",
                    from.format("%Y-%m-%d %H:%M"),
                    to.format("%Y-%m-%d %H:%M")
                ),
                amount: -applied,
                days: 0,
                service: Service::Management,
            });
        }
        Ok(())
    }

    /// The monthly management fee in force on `day`: each unit billed that day at that day's
    /// price (nothing outside the contract's billed days).
    fn monthly_management_fee(&self, m: &Management, day: Day) -> Result<i128, BillingError> {
        if day < m.billing_start() || day > last_day(m.end) {
            return Ok(0);
        }
        let mut fee = 0i128;
        for (role, units) in [Role::Entry, Role::Standby]
            .into_iter()
            .zip(&self.units[m.id.as_str()])
        {
            let billed = units.billed_on(day);
            if billed > 0 {
                let price = self.price(&m.customer, Price::ManagementMonthly(role), day)?;
                fee += i128::from(price) * i128::from(billed);
            }
        }
        Ok(fee)
    }

    /// Art. 21: fees run on through a suspension; the invoice says so.
    fn suspended(&self, what: &str, suspensions: &[Suspension], draft: &mut Draft) {
        for s in suspensions {
            let overlaps =
                s.from <= self.month.last() && s.to.is_none_or(|to| to >= self.month.first());
            if overlaps {
                let to =
                    s.to.map_or("further notice".to_string(), |to| to.to_string());
                draft.warnings.push(format!(
                    "{what}: suspended from {} to {to}; fees run on (Art. 21)",
                    s.from
                ));
            }
        }
    }

    /// This month's days from the billing start `start` through the last day `last`.
    fn served(&self, start: Day, last: Day) -> Option<(Day, Day)> {
        let first = start.max(self.month.first());
        let through = last.min(self.month.last());
        (first <= through).then_some((first, through))
    }

    /// Art. 16-2: when the contract ended this month, after its billing start and before its
    /// minimum term of `months` ended, the rest of that term (none for an abolition, Art. 22).
    fn remainder(
        &self,
        start: Day,
        end: Option<End>,
        months: u32,
        abolished: bool,
    ) -> Option<(Day, Day)> {
        let end = end.filter(|end| self.month.contains(end.on))?;
        if abolished || end.by == EndedBy::Abolition || end.on < start {
            return None;
        }
        let term_end = minimum_term_end(start, months);
        let first = end.on.succ_opt()?;
        (first <= term_end).then_some((first, term_end))
    }

    /// Monthly fees from `first` through `last`, by price: each run of days billed alike
    /// within a calendar month is its share of that month.
    fn accrue(
        &self,
        customer: &str,
        first: Day,
        last: Day,
        per_day: impl Fn(Day) -> (Price, u32),
    ) -> Result<Vec<Accrued>, BillingError> {
        let mut accrued: Vec<Accrued> = Vec::new();
        let mut day = first;
        while day <= last {
            let (price, units) = per_day(day);
            let month = Month::of(day);
            let repriced = self
                .prices
                .next_change(customer, day)
                .and_then(|next| next.pred_opt());
            let limit = last.min(month.last()).min(repriced.unwrap_or(Day::MAX));
            let mut through = day;
            while let Some(next) = through.succ_opt().filter(|next| *next <= limit) {
                if per_day(next) != (price, units) {
                    break;
                }
                through = next;
            }
            let run = u32::try_from((through - day).num_days() + 1).unwrap_or(u32::MAX);
            let share = match units {
                0 => Exact::default(),
                _ => {
                    let monthly = u128::from(self.price(customer, price, day)?) * u128::from(units);
                    Exact::share(monthly, run, month.days())
                }
            };
            match accrued.iter_mut().find(|a| a.price == price) {
                Some(a) => {
                    a.exact.add(share);
                    a.days += run;
                }
                None => accrued.push(Accrued {
                    price,
                    exact: share,
                    days: run,
                }),
            }
            match through.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        Ok(accrued)
    }

    fn price(&self, customer: &str, price: Price, day: Day) -> Result<u64, BillingError> {
        Ok(self.prices.price(customer, price, day)?)
    }

    fn yen(&self, customer: &str, amount: i128) -> Result<i64, BillingError> {
        i64::try_from(amount).map_err(|_| BillingError::TooLarge {
            customer: customer.to_string(),
            month: self.month,
        })
    }
}

/// What `contract_lines` needs of an option or rental contract.
struct Contract<'c> {
    service: Service,
    id: &'c str,
    customer: &'c str,
    accepted: Option<Day>,
    /// The billing start.
    start: Day,
    end: Option<End>,
    initial: Price,
    months: u32,
    /// Ended with a covering contract that the provider's abolition ended (Art. 22).
    abolished: bool,
}

fn monthly_item(price: Price) -> String {
    match price {
        Price::OptionMonthly(model) => format!("option {model}"),
        Price::RentalMonthly(model) => format!("rental {model}"),
        other => other.to_string(),
    }
}

fn last_day(end: Option<End>) -> Day {
    end.map_or(Day::MAX, |end| end.on)
}

fn ended_by_abolition(end: Option<End>) -> bool {
    end.is_some_and(|end| end.by == EndedBy::Abolition)
}

fn book_error(message: String) -> BillingError {
    BillingError::Book(message)
}

/// The Entry and Standby units of `m`, from its counts history.
fn management_units(m: &Management) -> Result<[Units; 2], BillingError> {
    let mut counts = m.counts.clone();
    counts.sort_by_key(|c| c.from);
    if let Some(pair) = counts.windows(2).find(|pair| pair[0].from == pair[1].from) {
        return Err(book_error(format!(
            "management {}: two counts from {}",
            m.id, pair[0].from
        )));
    }
    let start = m.billing_start();
    let last = last_day(m.end);
    let history = |role: Role| -> Vec<(Day, u32)> {
        counts
            .iter()
            .map(|c| {
                (
                    c.from,
                    if role == Role::Entry {
                        c.entries
                    } else {
                        c.standbys
                    },
                )
            })
            .collect()
    };
    Ok([
        Units::new(&history(Role::Entry), start, last),
        Units::new(&history(Role::Standby), start, last),
    ])
}
