//! `Store::billing_book`: everything billing reads for a period, loaded in a few queries as
//! plain model structs (`model::Book`), so that the billing engine needs no database.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, Row, any::AnyRow};

use super::{
    Engine, Store, StoreError, billing_days, contract_kind, counts, load_customers, load_outages,
    optional_day, stored_day, stored_model, suspension, termination,
};
use crate::model::{
    BillingDays, Book, BookManagement, BookOption, Contract, ContractKind, Counts, Day,
    ModelChange, Rental, Suspension,
};

impl Store {
    /// What billing needs for the days `from` through `to` (both included): every customer;
    /// every management, option and rental contract that bears on those days (accepted in
    /// them, or running on any of them, one cancelled in them included); every outage claimed
    /// in them or overlapping them; the management (and rental) contract of every option and
    /// outage listed, even one that ended before; every rental ended by `to` whose adapter had not come back by `from` (Art. 9-3).
    /// Each contract comes with its customer, billing days, counts history (managements),
    /// adapter model (options) and model changes (rentals). Lists are sorted by id.
    pub async fn billing_book(&self, from: Day, to: Day) -> Result<Book, StoreError> {
        let time_zone = self.time_zone().await?;
        // One snapshot for all the queries, so that a change committed meanwhile cannot
        // leave an option without the contract it names.
        let mut conn = self.pool.begin().await?;
        if self.engine == Engine::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *conn)
                .await?;
        }
        let mut all = load_all(&mut conn).await?;
        let outages: Vec<_> = load_outages(&mut conn)
            .await?
            .into_iter()
            .filter(|o| {
                o.claimed.is_some_and(|c| from <= c && c <= to)
                    || (o.from.with_timezone(&time_zone).date_naive() <= to
                        && o.to.with_timezone(&time_zone).date_naive() >= from)
            })
            .collect();
        all.options
            .retain(|o| bears_on(&o.contract, o.days, from, to));
        // An option's management and rental come with it (billing reads their ends).
        let covering: HashSet<&str> = all
            .options
            .iter()
            .flat_map(|o| std::iter::once(o.management.as_str()).chain(o.rental.as_deref()))
            .chain(outages.iter().map(|o| o.management.as_str()))
            .collect();
        all.managements.retain(|m| {
            bears_on(&m.contract, m.days, from, to) || covering.contains(m.contract.id.as_str())
        });
        all.rentals.retain(|r| {
            let unreturned = r
                .contract
                .end()
                .is_some_and(|end| end <= to && r.returned.is_none_or(|back| back >= from));
            bears_on(&r.contract, r.days, from, to)
                || unreturned
                || covering.contains(r.contract.id.as_str())
        });
        let customers = load_customers(&mut conn).await?;
        conn.rollback().await?;
        Ok(Book {
            from,
            to,
            time_zone,
            customers,
            managements: all.managements,
            options: all.options,
            rentals: all.rentals,
            outages,
        })
    }
}

/// Accepted in the period, or running on one of its days (from the first of the start,
/// acceptance and billing start days through the end).
fn bears_on(contract: &Contract, days: BillingDays, from: Day, to: Day) -> bool {
    let first = contract.start.min(days.accepted).min(days.billing_start);
    let accepted = from <= days.accepted && days.accepted <= to;
    accepted || (first <= to && contract.end().is_none_or(|end| end >= from))
}

struct All {
    managements: Vec<BookManagement>,
    options: Vec<BookOption>,
    rentals: Vec<Rental>,
}

/// Every contract of the store, one query per table.
async fn load_all(conn: &mut AnyConnection) -> Result<All, StoreError> {
    let mut suspensions: HashMap<String, Vec<Suspension>> = HashMap::new();
    for row in sqlx::query(
        "SELECT contract_id, from_day, to_day FROM suspensions ORDER BY contract_id, from_day",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let id: String = row.try_get("contract_id")?;
        suspensions.entry(id).or_default().push(suspension(&row)?);
    }
    let mut counts_of: HashMap<String, Vec<Counts>> = HashMap::new();
    for row in sqlx::query(
        "SELECT management_id, from_day, entries, standbys FROM management_counts \
         ORDER BY management_id, from_day",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let id: String = row.try_get("management_id")?;
        counts_of.entry(id).or_default().push(counts(&row)?);
    }
    let rows = sqlx::query(
        "SELECT c.id, c.kind, c.start_day, c.customer_id, c.accepted_day, c.billing_start_day, \
         c.serial, a.model, a.management_id, a.rental_id, m.customer_id AS adapter_customer, \
         t.on_day, t.ended_by, t.notice_day \
         FROM contracts c LEFT JOIN terminations t ON t.contract_id = c.id \
         LEFT JOIN adapters a ON a.serial = c.serial \
         LEFT JOIN contracts m ON m.id = a.management_id ORDER BY c.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut all = All {
        managements: Vec::new(),
        options: Vec::new(),
        rentals: Vec::new(),
    };
    for row in &rows {
        let kind = contract_kind(&row.try_get::<String, _>("kind")?)?;
        let contract = book_contract(row, kind, &mut suspensions)?;
        let days = billing_days(row)?;
        if kind == ContractKind::Option {
            all.options.push(BookOption {
                customer: row
                    .try_get::<Option<String>, _>("adapter_customer")?
                    .unwrap_or_default(),
                serial: row.try_get("serial")?,
                model: stored_model(row)?,
                management: row.try_get("management_id")?,
                rental: row.try_get("rental_id")?,
                days,
                contract,
            });
        } else {
            all.managements.push(BookManagement {
                customer: row
                    .try_get::<Option<String>, _>("customer_id")?
                    .unwrap_or_default(),
                counts: counts_of.remove(&contract.id).unwrap_or_default(),
                days,
                contract,
            });
        }
    }
    let mut models: HashMap<String, Vec<ModelChange>> = HashMap::new();
    for row in
        sqlx::query("SELECT rental_id, on_day, model FROM rental_models ORDER BY rental_id, on_day")
            .fetch_all(&mut *conn)
            .await?
    {
        let id: String = row.try_get("rental_id")?;
        models.entry(id).or_default().push(ModelChange {
            on: stored_day(&row, "on_day")?,
            model: stored_model(&row)?,
        });
    }
    for row in sqlx::query(
        "SELECT r.id, r.customer_id, r.serial, r.start_day, r.accepted_day, r.billing_start_day, \
         r.returned_day, t.on_day, t.ended_by, t.notice_day \
         FROM rentals r LEFT JOIN terminations t ON t.contract_id = r.id ORDER BY r.id",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let contract = book_contract(&row, ContractKind::Rental, &mut suspensions)?;
        let models = models.remove(&contract.id).unwrap_or_default();
        if models.is_empty() {
            return Err(StoreError::Corrupt {
                what: "a rental without its model",
                value: contract.id,
            });
        }
        all.rentals.push(Rental {
            customer: row.try_get("customer_id")?,
            serial: row.try_get("serial")?,
            models,
            days: billing_days(&row)?,
            returned: optional_day(&row, "returned_day")?,
            contract,
        });
    }
    Ok(all)
}

fn book_contract(
    row: &AnyRow,
    kind: ContractKind,
    suspensions: &mut HashMap<String, Vec<Suspension>>,
) -> Result<Contract, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Contract {
        suspensions: suspensions.remove(&id).unwrap_or_default(),
        kind,
        start: stored_day(row, "start_day")?,
        termination: termination(row)?,
        id,
    })
}
