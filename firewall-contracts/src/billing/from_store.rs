//! The store's [`model::Book`] (what `Store::billing_book` loads) as the engine's [`Book`]:
//! the same facts under the engine's names. The store always knows a contract's acceptance
//! and billing start days (they default to its start), so every contract gets both.

use super::{
    book::{
        Book, Counts, Customer, End, EndedBy, Management, ModelChange, OptionContract, Outage,
        Rental, Suspension,
    },
    invoice::BillingError,
};
use crate::model::{self, TerminatedBy};

impl TryFrom<model::Book> for Book {
    type Error = BillingError;

    /// Refuses only a rental without its model at contract time, which the store never holds.
    fn try_from(book: model::Book) -> Result<Self, Self::Error> {
        Ok(Book {
            time_zone: book.time_zone,
            customers: book.customers.into_iter().map(customer).collect(),
            managements: book.managements.into_iter().map(management).collect(),
            options: book.options.into_iter().map(option).collect(),
            rentals: book
                .rentals
                .into_iter()
                .map(rental)
                .collect::<Result<_, _>>()?,
            outages: book.outages.into_iter().map(outage).collect(),
        })
    }
}

fn customer(c: model::Customer) -> Customer {
    Customer {
        id: c.id,
        name: c.name,
        bill_to: c.bill_to,
    }
}

fn management(m: model::BookManagement) -> Management {
    Management {
        customer: m.customer,
        start: m.contract.start,
        accepted: Some(m.days.accepted),
        billing_start: Some(m.days.billing_start),
        end: m.contract.termination.map(end),
        counts: m
            .counts
            .into_iter()
            .map(|c| Counts {
                from: c.from,
                entries: c.entries,
                standbys: c.standbys,
            })
            .collect(),
        suspensions: suspensions(m.contract.suspensions),
        id: m.contract.id,
    }
}

fn option(o: model::BookOption) -> OptionContract {
    OptionContract {
        management: o.management,
        rental: o.rental,
        model: o.model,
        start: o.contract.start,
        accepted: Some(o.days.accepted),
        billing_start: Some(o.days.billing_start),
        end: o.contract.termination.map(end),
        suspensions: suspensions(o.contract.suspensions),
        id: o.contract.id,
    }
}

/// The store lists the model at contract time first, then each change.
fn rental(r: model::Rental) -> Result<Rental, BillingError> {
    let mut models = r.models.into_iter();
    let Some(first) = models.next() else {
        return Err(BillingError::Book(format!(
            "rental {}: no model at contract time",
            r.contract.id
        )));
    };
    Ok(Rental {
        customer: r.customer,
        serial: Some(r.serial),
        model: first.model,
        model_changes: models
            .map(|c| ModelChange {
                on: c.on,
                model: c.model,
            })
            .collect(),
        start: r.contract.start,
        accepted: Some(r.days.accepted),
        billing_start: Some(r.days.billing_start),
        end: r.contract.termination.map(end),
        returned: r.returned,
        suspensions: suspensions(r.contract.suspensions),
        id: r.contract.id,
    })
}

fn outage(o: model::Outage) -> Outage {
    Outage {
        management: o.management,
        from: o.from.fixed_offset(),
        to: o.to.fixed_offset(),
        wholly_unusable: o.wholly_unusable,
        provider_fault: o.provider_fault,
        claimed: o.claimed,
    }
}

fn end(t: model::Termination) -> End {
    End {
        on: t.on,
        by: match t.by {
            TerminatedBy::Customer => EndedBy::Customer,
            TerminatedBy::Provider => EndedBy::Provider,
            TerminatedBy::Abolition => EndedBy::Abolition,
            TerminatedBy::ManagementEnded => EndedBy::Management,
            TerminatedBy::RentalEnded => EndedBy::Rental,
        },
    }
}

fn suspensions(list: Vec<model::Suspension>) -> Vec<Suspension> {
    list.into_iter()
        .map(|s| Suspension {
            from: s.from,
            to: s.to,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::DateTime;

    use super::*;
    use crate::model::{
        BillingDays, BookManagement, BookOption, Contract, ContractKind, Model, Termination,
        parse_day,
    };

    fn day(text: &str) -> model::Day {
        parse_day(text).unwrap()
    }

    fn contract(id: &str, kind: ContractKind, start: &str, end: Option<Termination>) -> Contract {
        Contract {
            id: id.into(),
            kind,
            start: day(start),
            suspensions: Vec::new(),
            termination: end,
        }
    }

    fn ended(on: &str, by: TerminatedBy) -> Option<Termination> {
        Some(Termination {
            on: day(on),
            by,
            notice: None,
        })
    }

    fn days(accepted: &str, billing_start: &str) -> BillingDays {
        BillingDays {
            accepted: day(accepted),
            billing_start: day(billing_start),
        }
    }

    /// One of each, as the store loads them.
    fn store_book() -> model::Book {
        let mut management = contract(
            "MG-1",
            ContractKind::Management,
            "2026-01-01",
            ended("2026-07-15", TerminatedBy::Provider),
        );
        management.suspensions.push(model::Suspension {
            from: day("2026-03-01"),
            to: None,
        });
        model::Book {
            from: day("2026-07-01"),
            to: day("2026-07-31"),
            time_zone: chrono_tz::Asia::Tokyo,
            customers: vec![model::Customer {
                id: "C1".into(),
                name: "One".into(),
                bill_to: Some("Branch".into()),
            }],
            managements: vec![BookManagement {
                contract: management,
                customer: "C1".into(),
                days: days("2025-12-01", "2026-01-01"),
                counts: vec![model::Counts {
                    from: day("2026-01-01"),
                    entries: 1,
                    standbys: 2,
                }],
            }],
            options: vec![BookOption {
                contract: contract(
                    "UFO-1",
                    ContractKind::Option,
                    "2026-08-01",
                    ended("2026-07-15", TerminatedBy::ManagementEnded),
                ),
                customer: "C1".into(),
                serial: "T-1".into(),
                model: Model::Turbo,
                management: "MG-1".into(),
                rental: Some("R-1".into()),
                days: days("2026-07-01", "2026-08-02"),
            }],
            rentals: vec![model::Rental {
                contract: contract(
                    "R-1",
                    ContractKind::Rental,
                    "2026-01-01",
                    ended("2026-07-15", TerminatedBy::Abolition),
                ),
                customer: "C1".into(),
                serial: "T-1".into(),
                models: vec![
                    model::ModelChange {
                        on: day("2026-01-01"),
                        model: Model::Turbo,
                    },
                    model::ModelChange {
                        on: day("2026-05-01"),
                        model: Model::X2,
                    },
                ],
                days: days("2026-01-01", "2026-01-01"),
                returned: Some(day("2026-08-01")),
            }],
            outages: vec![model::Outage {
                management: "MG-1".into(),
                from: DateTime::parse_from_rfc3339("2026-06-01T01:00:00Z")
                    .unwrap()
                    .to_utc(),
                to: DateTime::parse_from_rfc3339("2026-06-03T01:00:00Z")
                    .unwrap()
                    .to_utc(),
                wholly_unusable: true,
                provider_fault: false,
                claimed: Some(day("2026-07-02")),
            }],
        }
    }

    /// The same book as the engine's tests write it.
    const ENGINE_BOOK: &str = "\
time_zone: Asia/Tokyo
customers: [{id: C1, name: One, bill_to: Branch}]
managements:
  - {id: MG-1, customer: C1, start: 2026-01-01, accepted: 2025-12-01, billing_start: 2026-01-01,
     end: {on: 2026-07-15, by: provider}, counts: [{from: 2026-01-01, entries: 1, standbys: 2}],
     suspensions: [{from: 2026-03-01}]}
options:
  - {id: UFO-1, management: MG-1, rental: R-1, model: turbo, start: 2026-08-01,
     accepted: 2026-07-01, billing_start: 2026-08-02, end: {on: 2026-07-15, by: management}}
rentals:
  - {id: R-1, customer: C1, serial: T-1, model: turbo, model_changes: [{on: 2026-05-01, model: x2}],
     start: 2026-01-01, accepted: 2026-01-01, billing_start: 2026-01-01,
     end: {on: 2026-07-15, by: abolition}, returned: 2026-08-01}
outages:
  - {management: MG-1, from: \"2026-06-01T01:00:00Z\", to: \"2026-06-03T01:00:00Z\",
     wholly_unusable: true, provider_fault: false, claimed: 2026-07-02}
";

    #[test]
    fn every_field_of_the_store_book_reaches_the_engine() {
        let expected: Book = firewall_diagnostic::parse_yaml(Path::new("book.yaml"), ENGINE_BOOK)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(Book::try_from(store_book()), Ok(expected));
    }

    #[test]
    fn every_way_of_ending_maps_to_its_own() {
        // Each row: the store's `by`, the engine's.
        let cases = [
            (TerminatedBy::Customer, EndedBy::Customer),
            (TerminatedBy::Provider, EndedBy::Provider),
            (TerminatedBy::Abolition, EndedBy::Abolition),
            (TerminatedBy::ManagementEnded, EndedBy::Management),
            (TerminatedBy::RentalEnded, EndedBy::Rental),
        ];
        for (by, expected) in cases {
            let mapped = end(Termination {
                on: day("2026-01-31"),
                by,
                notice: Some(day("2025-12-01")),
            });
            assert_eq!(
                mapped,
                End {
                    on: day("2026-01-31"),
                    by: expected
                }
            );
        }
    }

    #[test]
    fn a_rental_without_a_model_is_refused() {
        let mut book = store_book();
        book.rentals[0].models.clear();
        assert_eq!(
            Book::try_from(book),
            Err(BillingError::Book(
                "rental R-1: no model at contract time".into()
            ))
        );
    }
}
