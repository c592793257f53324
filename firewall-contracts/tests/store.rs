//! The contract store against both engines: every scenario runs once on SQLite (a file in a
//! temporary directory) and once on PostgreSQL (a throwaway server from `testbed`, a fresh
//! database per test). Each test cites the article it checks.

use std::{future::Future, path::Path};

use chrono::{DateTime, Utc};
use firewall_contracts::{
    ContractKind, ContractState, NewAdapter, Refusal, Role, Store, StoreError, Suspension,
    TerminatedBy, Termination,
    import::{ImportError, import},
    license::{self, Reason},
    model::{BillingDays, Counts, Customer, Model, ModelChange, Outage, parse_day},
    store::NewRental,
};

fn day(text: &str) -> chrono::NaiveDate {
    parse_day(text).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn on_sqlite<F: Future<Output = ()>>(scenario: impl FnOnce(String) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("contracts.db").display());
    runtime().block_on(scenario(url));
}

fn on_postgres<F: Future<Output = ()>>(test: &str, scenario: impl FnOnce(String) -> F) {
    let Some(server) = testbed::require_postgres(test) else {
        return;
    };
    let url = server.database().unwrap();
    runtime().block_on(scenario(url));
}

/// Each scenario becomes `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_engines {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::on_sqlite(super::$name) })+
        }
        mod postgres {
            $(#[test] fn $name() { super::on_postgres(concat!("store::postgres::", stringify!($name)), super::$name) })+
        }
    };
}

on_both_engines!(
    init_is_idempotent_and_sets_the_time_zone,
    a_registered_entry_with_an_option_is_licensed,
    art_4_2_one_option_per_adapter_at_a_time,
    art_5_2_the_database_refuses_to_move_an_option,
    art_23_2_customer_terminations_need_30_days_notice,
    art_23_3_the_option_ends_with_the_management_contract,
    table_1_ineligible_models_get_no_option,
    bad_ids_are_refused_and_a_dropped_transaction_writes_nothing,
    suspensions_and_role_changes_decide_by_day,
    days_are_taken_in_the_stores_time_zone,
    import_is_all_or_nothing_with_positions,
    art_23_3_a_later_option_is_cancelled_before_it_starts,
    art_23_3_a_rentals_end_ends_its_adapters_options,
    art_5_1_registered_adapters_never_exceed_the_counts,
    art_26_outages_are_recorded_and_claimed,
    import_applies_a_dated_history_and_the_new_keys,
    import_of_60000_entries_fails_in_planning_on_a_bad_last_entry,
);

/// M-1 from 2025-04-01; FUJI-1 (x86-fuji) entry from 2025-04-01; option O-1 from 2025-05-01.
async fn seeded(url: &str) -> Store {
    let store = Store::init(url, None, false).await.unwrap();
    let mut changes = store.begin().await.unwrap();
    changes
        .add_management("M-1", day("2025-04-01"))
        .await
        .unwrap();
    changes
        .add_adapter(&adapter("FUJI-1", "SEIL/x86 Fuji"))
        .await
        .unwrap();
    changes
        .add_option("O-1", "FUJI-1", day("2025-05-01"))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    store
}

fn adapter(serial: &str, model: &str) -> NewAdapter {
    NewAdapter {
        serial: serial.into(),
        model: model.parse().unwrap(),
        management: "M-1".into(),
        role: Role::Entry,
        since: day("2025-04-01"),
        rental: None,
    }
}

async fn reason(store: &Store, serial: &str, instant: &str) -> Reason {
    license::decide(store, serial, at(instant))
        .await
        .unwrap()
        .decision
        .reason
}

/// Applies one change in its own transaction and returns the refusal, if any.
async fn refusal<F, Fut>(store: &Store, change: F) -> Option<Refusal>
where
    F: FnOnce(firewall_contracts::Changes) -> Fut,
    Fut: Future<Output = Result<firewall_contracts::Changes, StoreError>>,
{
    let changes = store.begin().await.unwrap();
    // Art. 5-1 is checked at commit.
    let result = match change(changes).await {
        Ok(changes) => changes.commit().await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => None,
        Err(StoreError::Refused(refusal)) => Some(refusal),
        Err(other) => panic!("expected a refusal, got {other}"),
    }
}

fn terminate(on: &str, by: TerminatedBy, notice: Option<&str>) -> Termination {
    Termination {
        on: day(on),
        by,
        notice: notice.map(day),
    }
}

async fn init_is_idempotent_and_sets_the_time_zone(url: String) {
    let store = Store::init(&url, None, false).await.unwrap();
    assert_eq!(store.time_zone().await.unwrap(), chrono_tz::Asia::Tokyo);
    Store::init(&url, Some(chrono_tz::UTC), false)
        .await
        .unwrap();
    let store = Store::init(&url, None, false).await.unwrap();
    assert_eq!(store.time_zone().await.unwrap(), chrono_tz::UTC, "kept");
    assert_eq!(
        Store::open(&url).await.unwrap().time_zone().await.unwrap(),
        chrono_tz::UTC
    );
}

async fn a_registered_entry_with_an_option_is_licensed(url: String) {
    let store = seeded(&url).await;
    // Art 2: x86 Fuji, Entry, management and option active.
    assert_eq!(
        reason(&store, "FUJI-1", "2025-05-01T00:00:00+09:00").await,
        Reason::Licensed
    );
    assert_eq!(
        reason(&store, "FUJI-1", "2025-04-30T23:59:59+09:00").await,
        Reason::OptionNotStarted
    );
    // Art 8-3: serials match exactly.
    assert_eq!(
        reason(&store, "fuji-1", "2025-05-01T00:00:00+09:00").await,
        Reason::UnknownSerial
    );
    let check = license::decide(&store, "FUJI-1", at("2025-05-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        (check.model.map(|m| m.name()), check.role),
        (Some("x86-fuji"), Some(Role::Entry))
    );
}

async fn art_4_2_one_option_per_adapter_at_a_time(url: String) {
    let store = seeded(&url).await;
    let second = |start: &'static str| {
        move |mut c: firewall_contracts::Changes| async move {
            c.add_option("O-2", "FUJI-1", day(start)).await.map(|()| c)
        }
    };
    assert_eq!(
        refusal(&store, second("2026-01-01")).await,
        Some(Refusal::SecondOption {
            serial: "FUJI-1".into(),
            existing: "O-1".into(),
            period: "from 2025-05-01, not terminated".into(),
        })
    );
    let ended = |mut c: firewall_contracts::Changes| async move {
        c.terminate("O-1", terminate("2025-09-30", TerminatedBy::Provider, None))
            .await
            .map(|_| c)
    };
    assert_eq!(refusal(&store, ended).await, None);
    // O-1 runs through 2025-09-30: a second option may not start that day...
    assert_eq!(
        refusal(&store, second("2025-09-30")).await,
        Some(Refusal::SecondOption {
            serial: "FUJI-1".into(),
            existing: "O-1".into(),
            period: "2025-05-01 to 2025-09-30".into(),
        })
    );
    // ...but the next.
    assert_eq!(refusal(&store, second("2025-10-01")).await, None);
    assert_eq!(
        reason(&store, "FUJI-1", "2025-10-01T00:00:00+09:00").await,
        Reason::Licensed
    );
    let facts = store.facts("FUJI-1").await.unwrap().unwrap();
    let ids: Vec<&str> = facts.options.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["O-1", "O-2"]);
}

async fn art_5_2_the_database_refuses_to_move_an_option(url: String) {
    let store = seeded(&url).await;
    let mut changes = store.begin().await.unwrap();
    changes
        .add_adapter(&adapter("FUJI-2", "x86-fuji"))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    // No command moves an option; straight SQL is refused by the schema itself.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    for sql in [
        "UPDATE contracts SET serial = 'FUJI-2' WHERE id = 'O-1'",
        "UPDATE contracts SET serial = NULL, kind = 'management' WHERE id = 'O-1'",
    ] {
        let error = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(
            error.to_string().contains(
                "Art 5-2: the adapter of an Ultra Firewall Option contract cannot be changed"
            ),
            "{sql}: {error}"
        );
    }
    let facts = store.facts("FUJI-1").await.unwrap().unwrap();
    assert_eq!(facts.options.len(), 1);
    assert_eq!(facts.options[0].kind, ContractKind::Option);
    assert!(
        store
            .facts("FUJI-2")
            .await
            .unwrap()
            .unwrap()
            .options
            .is_empty()
    );
}

async fn art_23_2_customer_terminations_need_30_days_notice(url: String) {
    let store = seeded(&url).await;
    let end = |termination: Termination| {
        move |mut c: firewall_contracts::Changes| async move {
            c.terminate("O-1", termination).await.map(|_| c)
        }
    };
    assert_eq!(
        refusal(
            &store,
            end(terminate("2025-06-30", TerminatedBy::Customer, None))
        )
        .await,
        Some(Refusal::NoticeMissing { what: "Art. 23-2" })
    );
    // Straight SQL cannot record a termination earlier than 30 days after the notice.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let early = "INSERT INTO terminations (contract_id, on_day, ended_by, notice_day) \
                 VALUES ('O-1', '2025-06-30', 'customer', '2025-06-01')";
    assert!(sqlx::query(early).execute(&mut conn).await.is_err());
    // A shorter notice is valid: it takes effect 30 days after the notice.
    let mut changes = store.begin().await.unwrap();
    let ended = changes
        .terminate(
            "O-1",
            terminate("2025-06-15", TerminatedBy::Customer, Some("2025-06-01")),
        )
        .await
        .unwrap();
    changes.commit().await.unwrap();
    assert_eq!(ended.termination.on, day("2025-07-01"));
    assert_eq!(
        ended.moved_note().as_deref(),
        Some("effective 2025-07-01 (Art. 23-2: 30 days after the notice of 2025-06-01)")
    );
    assert_eq!(
        reason(&store, "FUJI-1", "2025-07-01T23:59:59+09:00").await,
        Reason::Licensed
    );
    assert_eq!(
        reason(&store, "FUJI-1", "2025-07-02T00:00:00+09:00").await,
        Reason::OptionTerminated
    );
}

async fn art_23_3_the_option_ends_with_the_management_contract(url: String) {
    let store = seeded(&url).await;
    let mut changes = store.begin().await.unwrap();
    let ended = changes
        .terminate("M-1", terminate("2025-08-31", TerminatedBy::Provider, None))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    assert_eq!(ended.cascaded, [("O-1".to_string(), false)]);
    let facts = store.facts("FUJI-1").await.unwrap().unwrap();
    assert_eq!(
        facts.options[0].termination,
        Some(terminate("2025-08-31", TerminatedBy::ManagementEnded, None))
    );
    assert_eq!(
        reason(&store, "FUJI-1", "2025-08-31T12:00:00+09:00").await,
        Reason::Licensed
    );
    assert_eq!(
        reason(&store, "FUJI-1", "2025-09-01T00:00:00+09:00").await,
        Reason::ManagementTerminated
    );
    let later = |mut c: firewall_contracts::Changes| async move {
        c.add_option("O-2", "FUJI-1", day("2025-09-01"))
            .await
            .map(|()| c)
    };
    assert_eq!(
        refusal(&store, later).await,
        Some(Refusal::ManagementEnded {
            serial: "FUJI-1".into(),
            management: "M-1".into(),
            end: day("2025-08-31"),
        })
    );
}

async fn table_1_ineligible_models_get_no_option(url: String) {
    let store = seeded(&url).await;
    let mut changes = store.begin().await.unwrap();
    changes
        .add_adapter(&adapter("B1-1", "SEIL/B1"))
        .await
        .unwrap();
    changes
        .add_adapter(&adapter("BPV4-1", "SEIL/BPV4"))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    let option = |id: &'static str, serial: &'static str| {
        move |mut c: firewall_contracts::Changes| async move {
            c.add_option(id, serial, day("2025-05-01"))
                .await
                .map(|()| c)
        }
    };
    assert_eq!(
        refusal(&store, option("O-B1", "B1-1")).await,
        Some(Refusal::NotEligible {
            serial: "B1-1".into(),
            model: "b1".parse().unwrap(),
        })
    );
    assert_eq!(refusal(&store, option("O-BPV4", "BPV4-1")).await, None);
    assert_eq!(
        reason(&store, "B1-1", "2025-06-01T00:00:00Z").await,
        Reason::ModelNotEligible
    );
    assert_eq!(
        reason(&store, "BPV4-1", "2025-06-01T00:00:00Z").await,
        Reason::Licensed
    );
}

async fn bad_ids_are_refused_and_a_dropped_transaction_writes_nothing(url: String) {
    let store = seeded(&url).await;
    let mut unknown_management = adapter("FUJI-9", "x86-fuji");
    unknown_management.management = "M-9".into();
    let cases: Vec<(&str, Refusal)> = vec![
        ("management", Refusal::UnknownManagement("M-9".into())),
        ("option of nobody", Refusal::UnknownAdapter("NOBODY".into())),
        ("suspend", Refusal::UnknownContract("X-1".into())),
        ("set role", Refusal::UnknownAdapter("NOBODY".into())),
        ("duplicate id", Refusal::DuplicateContract("O-1".into())),
        (
            "duplicate serial",
            Refusal::DuplicateAdapter("FUJI-1".into()),
        ),
        ("blank id", Refusal::BadName("M 2".into())),
        ("escape in id", Refusal::BadName("M\u{1b}2".into())),
        (
            "serial by case",
            Refusal::SerialCase {
                serial: "fuji-1".into(),
                existing: "FUJI-1".into(),
            },
        ),
        (
            "management as an adapter's",
            Refusal::UnknownManagement("O-1".into()),
        ),
    ];
    for (what, expected) in cases {
        let mut changes = store.begin().await.unwrap();
        let result = match what {
            "management" => changes.add_adapter(&unknown_management).await,
            "option of nobody" => changes.add_option("O-9", "NOBODY", day("2025-05-01")).await,
            "suspend" => {
                changes
                    .suspend(
                        "X-1",
                        Suspension {
                            from: day("2025-05-01"),
                            to: None,
                        },
                    )
                    .await
            }
            "set role" => {
                changes
                    .set_role("NOBODY", Role::Standby, day("2025-05-01"))
                    .await
            }
            "duplicate id" => changes.add_management("O-1", day("2025-05-01")).await,
            "duplicate serial" => changes.add_adapter(&adapter("FUJI-1", "x1")).await,
            "blank id" => changes.add_management("M 2", day("2025-05-01")).await,
            "escape in id" => changes.add_management("M\u{1b}2", day("2025-05-01")).await,
            "serial by case" => changes.add_adapter(&adapter("fuji-1", "x1")).await,
            _ => {
                let mut under_option = adapter("FUJI-8", "x1");
                under_option.management = "O-1".into();
                changes.add_adapter(&under_option).await
            }
        };
        match result {
            Err(StoreError::Refused(refusal)) => assert_eq!(refusal, expected, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A change made and then dropped without commit leaves no trace.
    let mut changes = store.begin().await.unwrap();
    changes
        .add_management("M-2", day("2025-05-01"))
        .await
        .unwrap();
    drop(changes);
    let managements: Vec<String> = store
        .everything()
        .await
        .unwrap()
        .into_iter()
        .map(|view| view.management.id)
        .collect();
    assert_eq!(managements, ["M-1"]);
}

async fn suspensions_and_role_changes_decide_by_day(url: String) {
    let store = seeded(&url).await;
    let mut changes = store.begin().await.unwrap();
    // Art 21: an open suspension, then the same first day again gives it an end.
    let open = Suspension {
        from: day("2025-06-10"),
        to: None,
    };
    changes.suspend("O-1", open).await.unwrap();
    changes.commit().await.unwrap();
    assert_eq!(
        reason(&store, "FUJI-1", "2026-01-01T00:00:00+09:00").await,
        Reason::OptionSuspended
    );
    let mut changes = store.begin().await.unwrap();
    let closed = Suspension {
        to: Some(day("2025-06-12")),
        ..open
    };
    changes.suspend("O-1", closed).await.unwrap();
    changes.suspend("M-1", closed).await.unwrap();
    // Art 5-1 / Art 2: standby from 2025-07-01, entry again from 2025-08-01.
    changes
        .set_role("FUJI-1", Role::Standby, day("2025-07-01"))
        .await
        .unwrap();
    changes
        .set_role("FUJI-1", Role::Entry, day("2025-08-01"))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    let cases = [
        ("2025-06-09T12:00:00+09:00", Reason::Licensed),
        ("2025-06-10T00:00:00+09:00", Reason::ManagementSuspended),
        ("2025-06-12T23:59:59+09:00", Reason::ManagementSuspended),
        ("2025-06-13T00:00:00+09:00", Reason::Licensed),
        ("2025-06-30T23:59:59+09:00", Reason::Licensed),
        ("2025-07-01T00:00:00+09:00", Reason::AdapterStandby),
        ("2025-07-31T23:59:59+09:00", Reason::AdapterStandby),
        ("2025-08-01T00:00:00+09:00", Reason::Licensed),
    ];
    for (instant, expected) in cases {
        assert_eq!(
            reason(&store, "FUJI-1", instant).await,
            expected,
            "{instant}"
        );
    }
    let backwards = Suspension {
        from: day("2025-09-02"),
        to: Some(day("2025-09-01")),
    };
    let mut changes = store.begin().await.unwrap();
    assert!(matches!(
        changes.suspend("O-1", backwards).await,
        Err(StoreError::Refused(Refusal::SuspensionBackwards { .. }))
    ));
}

async fn days_are_taken_in_the_stores_time_zone(url: String) {
    let store = seeded(&url).await;
    // 2025-04-30T15:00Z is May 1st in Tokyo but still April 30th in UTC.
    assert_eq!(
        reason(&store, "FUJI-1", "2025-04-30T15:00:00Z").await,
        Reason::Licensed
    );
    // A store holding contracts is re-zoned only with --force.
    assert!(matches!(
        Store::init(&url, Some(chrono_tz::UTC), false).await,
        Err(StoreError::Refused(Refusal::Rezone { .. }))
    ));
    assert_eq!(
        reason(&store, "FUJI-1", "2025-04-30T15:00:00Z").await,
        Reason::Licensed,
        "kept"
    );
    let store = Store::init(&url, Some(chrono_tz::UTC), true).await.unwrap();
    assert_eq!(
        reason(&store, "FUJI-1", "2025-04-30T15:00:00Z").await,
        Reason::OptionNotStarted
    );
    let check = license::decide(&store, "FUJI-1", at("2025-04-30T23:59:59Z"))
        .await
        .unwrap();
    assert_eq!(
        (check.day, check.time_zone),
        (day("2025-04-30"), chrono_tz::UTC)
    );
}

async fn import_is_all_or_nothing_with_positions(url: String) {
    let store = Store::init(&url, None, false).await.unwrap();
    let file = Path::new("contracts.yaml");
    let good = "managements:\n  - id: M-1\n    start: 2025-04-01\n\
                adapters:\n  - serial: FUJI-1\n    model: SEIL/x86 Fuji\n    management: M-1\n    role: entry\n    since: 2025-04-01\n\
                options:\n  - id: O-1\n    serial: FUJI-1\n    start: 2025-05-01\n";
    // Art 4-2 broken by the last entry (line 14): nothing at all is written.
    let bad = format!("{good}  - id: O-2\n    serial: FUJI-1\n    start: 2025-06-01\n");
    let error = import(&store, file, &bad).await.unwrap_err().to_string();
    assert!(
        error.starts_with("contracts.yaml:14:5: error: Art. 4-2: adapter `FUJI-1` already has option contract `O-1` (from 2025-05-01, not terminated, while `O-2` starts on 2025-06-01)"),
        "{error}"
    );
    assert!(store.everything().await.unwrap().is_empty());
    assert_eq!(
        reason(&store, "FUJI-1", "2025-05-01T00:00:00+09:00").await,
        Reason::UnknownSerial
    );

    let imported = import(&store, file, good).await.unwrap();
    assert_eq!(
        (imported.managements, imported.adapters, imported.options),
        (1, 1, 1)
    );
    assert_eq!(
        reason(&store, "FUJI-1", "2025-05-01T00:00:00+09:00").await,
        Reason::Licensed
    );
}

/// Commits one change, panicking with the error if it is refused.
async fn apply<F, Fut>(store: &Store, change: F)
where
    F: FnOnce(firewall_contracts::Changes) -> Fut,
    Fut: Future<Output = Result<firewall_contracts::Changes, StoreError>>,
{
    assert_eq!(refusal(store, change).await, None);
}

async fn art_23_3_a_later_option_is_cancelled_before_it_starts(url: String) {
    let store = seeded(&url).await;
    let mut changes = store.begin().await.unwrap();
    changes
        .terminate("O-1", terminate("2025-06-30", TerminatedBy::Provider, None))
        .await
        .unwrap();
    changes
        .add_option("O-2", "FUJI-1", day("2025-10-01"))
        .await
        .unwrap();
    // The management ends before O-2 starts: O-2 is cancelled the same day, O-1 keeps its end.
    let ended = changes
        .terminate("M-1", terminate("2025-08-31", TerminatedBy::Provider, None))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    assert_eq!(ended.cascaded, [("O-2".to_string(), true)]);
    assert_eq!(
        ended.cascade_notes(),
        ["Art. 23-3: option O-2 is cancelled before its start, on 2025-08-31"]
    );
    let facts = store.facts("FUJI-1").await.unwrap().unwrap();
    let o2 = &facts.options[1];
    assert_eq!(
        o2.termination,
        Some(terminate("2025-08-31", TerminatedBy::ManagementEnded, None))
    );
    // Each row: a day, O-2's state that day.
    for (on, state) in [
        ("2025-08-31", ContractState::NotStarted),
        ("2025-09-01", ContractState::CancelledBeforeStart),
        ("2025-10-01", ContractState::CancelledBeforeStart),
    ] {
        assert_eq!(o2.state_on(day(on)), state, "{on}");
    }
    assert_eq!(
        facts.options[0].termination,
        Some(terminate("2025-06-30", TerminatedBy::Provider, None))
    );
    let again = |mut c: firewall_contracts::Changes| async move {
        c.terminate("O-2", terminate("2025-12-31", TerminatedBy::Provider, None))
            .await
            .map(|_| c)
    };
    assert_eq!(
        refusal(&store, again).await,
        Some(Refusal::AlreadyTerminated {
            id: "O-2".into(),
            on: day("2025-08-31")
        })
    );
}

/// C-1 rents X1-1 (an x1) under R-1 from 2025-04-01; it is registered under M-1 with option O-X.
async fn rented(url: &str) -> Store {
    let store = seeded(url).await;
    let mut changes = store.begin().await.unwrap();
    changes
        .add_customer(&Customer {
            id: "C-1".into(),
            name: "Example K.K.".into(),
            bill_to: None,
        })
        .await
        .unwrap();
    changes
        .add_rental(&NewRental {
            id: "R-1".into(),
            customer: "C-1".into(),
            serial: "X1-1".into(),
            model: Model::X1,
            start: day("2025-04-01"),
            days: BillingDays::from_start(day("2025-04-01")),
        })
        .await
        .unwrap();
    let mut x1 = adapter("X1-1", "x1");
    x1.rental = Some("R-1".into());
    changes.add_adapter(&x1).await.unwrap();
    changes
        .add_option("O-X", "X1-1", day("2025-05-01"))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    store
}

async fn art_23_3_a_rentals_end_ends_its_adapters_options(url: String) {
    let store = rented(&url).await;
    // Each row: the change, the refusal (rentals: table 1, Art. 16-3, 9-3).
    let model_change = |on: &'static str, model: Model| {
        move |mut c: firewall_contracts::Changes| async move {
            c.change_rental_model("R-1", ModelChange { on: day(on), model })
                .await
                .map(|()| c)
        }
    };
    assert_eq!(
        refusal(&store, model_change("2025-04-01", Model::X2)).await,
        Some(Refusal::ModelChangeOutside {
            id: "R-1".into(),
            period: "from 2025-04-01, not terminated".into(),
            on: day("2025-04-01"),
        })
    );
    assert_eq!(
        refusal(&store, model_change("2025-10-01", Model::X86Fuji)).await,
        Some(Refusal::NotRentable {
            model: Model::X86Fuji
        })
    );
    apply(&store, model_change("2025-10-01", Model::X2)).await;
    let early_return = |mut c: firewall_contracts::Changes| async move {
        c.return_rental("R-1", day("2026-04-01")).await.map(|()| c)
    };
    assert_eq!(
        refusal(&store, early_return).await,
        Some(Refusal::RentalNotEnded { id: "R-1".into() })
    );
    // The customer's notice of 2026-03-20 for 2026-03-31 takes effect on 2026-04-19 (23-2);
    // the option ends with the rental (23-3).
    let mut changes = store.begin().await.unwrap();
    let ended = changes
        .terminate(
            "R-1",
            terminate("2026-03-31", TerminatedBy::Customer, Some("2026-03-20")),
        )
        .await
        .unwrap();
    changes.commit().await.unwrap();
    assert_eq!(ended.termination.on, day("2026-04-19"));
    assert_eq!(ended.cascaded, [("O-X".to_string(), false)]);
    assert_eq!(
        reason(&store, "X1-1", "2026-04-19T12:00:00+09:00").await,
        Reason::Licensed
    );
    assert_eq!(
        reason(&store, "X1-1", "2026-04-20T00:00:00+09:00").await,
        Reason::OptionTerminated
    );
    let later = |mut c: firewall_contracts::Changes| async move {
        c.add_option("O-Y", "X1-1", day("2026-05-01"))
            .await
            .map(|()| c)
    };
    assert_eq!(
        refusal(&store, later).await,
        Some(Refusal::RentalEnded {
            serial: "X1-1".into(),
            rental: "R-1".into(),
            end: day("2026-04-19"),
        })
    );
    apply(&store, early_return).await;
    let rentals = store.rentals().await.unwrap();
    let rental = &rentals[0];
    assert_eq!(rental.returned, Some(day("2026-04-01")));
    assert_eq!(rental.model_at_contract(), Model::X1);
    assert_eq!(rental.model_on(day("2025-10-01")), Model::X2);
    assert_eq!(rental.return_due(), Some(day("2026-05-19")));
    // Art. 16-1: a rental's minimum term is a year from its billing start.
    assert_eq!(
        rental.contract.minimum_term_end(rental.days.billing_start),
        day("2026-03-31")
    );
}

async fn art_5_1_registered_adapters_never_exceed_the_counts(url: String) {
    let store = seeded(&url).await;
    let counts = |from: &'static str, entries: u32, standbys: u32| {
        move |mut c: firewall_contracts::Changes| async move {
            c.set_counts(
                "M-1",
                Counts {
                    from: day(from),
                    entries,
                    standbys,
                },
            )
            .await
            .map(|()| c)
        }
    };
    apply(&store, counts("2025-04-01", 1, 0)).await;
    let register = |serial: &'static str, role: Role, since: &'static str| {
        move |mut c: firewall_contracts::Changes| async move {
            let mut new = adapter(serial, "x1");
            new.role = role;
            new.since = day(since);
            c.add_adapter(&new).await.map(|()| c)
        }
    };
    // Each row: a registration, the refusal.
    let cases = [
        (
            register("X1-2", Role::Entry, "2025-05-01"),
            Some((day("2025-05-01"), Role::Entry, 2, 1)),
        ),
        (
            register("X1-2", Role::Standby, "2025-05-01"),
            Some((day("2025-05-01"), Role::Standby, 1, 0)),
        ),
    ];
    for (change, expected) in cases {
        let found = refusal(&store, change).await.map(|r| match r {
            Refusal::CountExceeded {
                management,
                day,
                role,
                registered,
                count,
            } => {
                assert_eq!(management, "M-1");
                (day, role, registered, count)
            }
            other => panic!("{other}"),
        });
        assert_eq!(found, expected);
    }
    assert!(
        Refusal::CountExceeded {
            management: "M-1".into(),
            day: day("2025-05-01"),
            role: Role::Entry,
            registered: 2,
            count: 1
        }
        .to_string()
        .starts_with("Art. 5-1: on 2025-05-01 management contract `M-1` would have 2 registered entry adapters, more than its entry count of 1")
    );
    // A standby from the day the count allows one.
    apply(&store, counts("2025-06-01", 1, 1)).await;
    apply(&store, register("X1-2", Role::Standby, "2025-06-01")).await;
    // Lowering the count below the registered adapters is refused too.
    assert!(matches!(
        refusal(&store, counts("2025-07-01", 1, 0)).await,
        Some(Refusal::CountExceeded { .. })
    ));
    let views = store.everything().await.unwrap();
    assert_eq!(views[0].counts.len(), 2);
}

async fn art_26_outages_are_recorded_and_claimed(url: String) {
    let store = seeded(&url).await;
    let outage = |from: &'static str, to: &'static str| Outage {
        management: "M-1".into(),
        from: at(from),
        to: at(to),
        wholly_unusable: true,
        provider_fault: true,
        claimed: None,
    };
    let add = |o: Outage| {
        move |mut c: firewall_contracts::Changes| async move { c.add_outage(&o).await.map(|()| c) }
    };
    apply(
        &store,
        add(outage(
            "2026-08-03T10:00:00+09:00",
            "2026-08-06T09:30:00+09:00",
        )),
    )
    .await;
    // Each row: an outage, the refusal.
    let cases = [
        (
            outage("2026-08-03T01:00:00Z", "2026-08-04T00:00:00Z"),
            Refusal::DuplicateOutage {
                management: "M-1".into(),
                from: "2026-08-03T01:00:00Z".into(),
            },
        ),
        (
            outage("2026-09-01T00:00:00Z", "2026-09-01T00:00:00Z"),
            Refusal::OutageBackwards {
                from: "2026-09-01T00:00:00Z".into(),
                to: "2026-09-01T00:00:00Z".into(),
            },
        ),
    ];
    for (o, expected) in cases {
        assert_eq!(refusal(&store, add(o)).await, Some(expected));
    }
    let claim = |from: &'static str| {
        move |mut c: firewall_contracts::Changes| async move {
            c.claim_outage("M-1", at(from), day("2026-10-20"))
                .await
                .map(|()| c)
        }
    };
    assert!(matches!(
        refusal(&store, claim("2026-08-03T10:00:01+09:00")).await,
        Some(Refusal::UnknownOutage { .. })
    ));
    apply(&store, claim("2026-08-03T10:00:00+09:00")).await;
    let outages = store.outages().await.unwrap();
    assert_eq!(outages.len(), 1);
    assert_eq!(outages[0].claimed, Some(day("2026-10-20")));
    assert_eq!(outages[0].to, at("2026-08-06T00:30:00Z"));
    // Billing reads it: claimed in October, the management with it.
    let book = store
        .billing_book(day("2026-10-01"), day("2026-10-31"))
        .await
        .unwrap();
    assert_eq!(book.outages, outages);
    assert_eq!(book.managements[0].contract.id, "M-1");
}

async fn import_applies_a_dated_history_and_the_new_keys(url: String) {
    let store = Store::init(&url, None, false).await.unwrap();
    let file = Path::new("contracts.yaml");
    let text = "customers:\n  - {id: C-1, name: Example K.K., bill_to: Osaka office}\n\
managements:\n  - {id: M-1, customer: C-1, start: 2026-01-01, accepted: 2025-12-20, billing_start: 2026-01-05, counts: [{from: 2026-01-01, entries: 1, standbys: 1}]}\n\
rentals:\n  - {id: R-1, customer: C-1, serial: T-1, model: SEIL/Turbo, start: 2026-01-01, model_changes: [{on: 2026-06-01, model: x2}]}\n\
adapters:\n  - {serial: T-1, model: turbo, management: M-1, rental: R-1, role: entry, since: 2026-01-01}\n\
options:\n  - {id: O-2, serial: T-1, start: 2026-05-01, termination: {on: 2026-08-31, by: customer, notice: 2026-08-20}}\n  - {id: O-1, serial: T-1, start: 2026-02-01, accepted: 2026-01-25, termination: {on: 2026-04-30, by: provider}}\n\
outages:\n  - {management: M-1, from: \"2026-08-03T10:00:00+09:00\", to: \"2026-08-06T09:30:00+09:00\", wholly_unusable: true, provider_fault: true, claimed: 2026-10-20}\n";
    let imported = import(&store, file, text).await.unwrap();
    assert_eq!(
        (
            imported.customers,
            imported.managements,
            imported.rentals,
            imported.adapters,
            imported.options,
            imported.outages
        ),
        (1, 1, 1, 1, 2, 1)
    );
    // Art. 23-2 in import: the notice of 2026-08-20 makes O-2 end on 2026-09-19.
    assert_eq!(
        imported.notes,
        ["O-2: effective 2026-09-19 (Art. 23-2: 30 days after the notice of 2026-08-20)"]
    );
    let facts = store.facts("T-1").await.unwrap().unwrap();
    let ends: Vec<_> = facts
        .options
        .iter()
        .map(|o| (o.id.as_str(), o.end()))
        .collect();
    assert_eq!(
        ends,
        [
            ("O-1", Some(day("2026-04-30"))),
            ("O-2", Some(day("2026-09-19")))
        ]
    );
    assert_eq!(
        reason(&store, "T-1", "2026-05-01T00:00:00+09:00").await,
        Reason::Licensed
    );
    // The billing book of August 2026: plain data for the billing engine.
    let book = store
        .billing_book(day("2026-08-01"), day("2026-08-31"))
        .await
        .unwrap();
    assert_eq!(book.time_zone, chrono_tz::Asia::Tokyo);
    assert_eq!(
        book.customers,
        [Customer {
            id: "C-1".into(),
            name: "Example K.K.".into(),
            bill_to: Some("Osaka office".into())
        }]
    );
    let m = &book.managements[0];
    assert_eq!(
        (m.customer.as_str(), m.days, m.counts.clone()),
        (
            "C-1",
            BillingDays {
                accepted: day("2025-12-20"),
                billing_start: day("2026-01-05")
            },
            vec![Counts {
                from: day("2026-01-01"),
                entries: 1,
                standbys: 1
            }]
        )
    );
    // O-1 ended in April: not in August's book.
    let options: Vec<_> = book
        .options
        .iter()
        .map(|o| (o.contract.id.as_str(), o.model, o.customer.as_str()))
        .collect();
    assert_eq!(options, [("O-2", Model::Turbo, "C-1")]);
    assert_eq!(book.rentals[0].models.len(), 2);
    assert_eq!(book.outages.len(), 1);
    let april = store
        .billing_book(day("2026-04-01"), day("2026-04-30"))
        .await
        .unwrap();
    let ids: Vec<_> = april
        .options
        .iter()
        .map(|o| o.contract.id.as_str())
        .collect();
    assert_eq!(ids, ["O-1"]);
    assert!(april.outages.is_empty());
    // The same file again: every id is refused while planning, nothing written twice.
    match import(&store, file, text).await {
        Err(ImportError::Invalid(d)) => assert!(
            d.to_string().contains("customer `C-1` already exists"),
            "{d}"
        ),
        other => panic!("{other:?}"),
    }
}

async fn import_of_60000_entries_fails_in_planning_on_a_bad_last_entry(url: String) {
    let store = Store::init(&url, None, false).await.unwrap();
    let mut text = String::from("managements:\n  - {id: M-1, start: 2026-01-01}\nadapters:\n");
    for n in 0..30_000 {
        text.push_str(&format!(
            "  - {{serial: S-{n}, model: x1, management: M-1, role: entry, since: 2026-01-01}}\n"
        ));
    }
    text.push_str("options:\n");
    for n in 0..29_999 {
        text.push_str(&format!(
            "  - {{id: O-{n}, serial: S-{n}, start: 2026-02-01}}\n"
        ));
    }
    text.push_str("  - {id: O-LAST, serial: NOBODY, start: 2026-02-01}\n");
    let lines = text.lines().count();
    match import(&store, Path::new("big.yaml"), &text).await {
        // Invalid: found while planning, before the transaction began.
        Err(ImportError::Invalid(d)) => {
            assert_eq!(d.items.len(), 1, "{d}");
            assert_eq!(d.items[0].line as usize, lines);
            assert_eq!(
                d.items[0].message,
                "there is no adapter with serial `NOBODY`"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(store.everything().await.unwrap().is_empty());
    assert!(store.customers().await.unwrap().is_empty());
}
