//! The contract store against both engines: every scenario runs once on SQLite (a file in a
//! temporary directory) and once on PostgreSQL (a throwaway server from `testbed`, a fresh
//! database per test). Each test cites the article it checks.

use std::{future::Future, path::Path};

use chrono::{DateTime, Utc};
use firewall_contracts::{
    ContractKind, NewAdapter, Refusal, Role, Store, StoreError, Suspension, TerminatedBy,
    Termination,
    import::import,
    license::{self, Reason},
    model::parse_day,
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
    match change(changes).await {
        Ok(changes) => {
            changes.commit().await.unwrap();
            None
        }
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
