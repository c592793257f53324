//! What the grant server and `license grant --all` read, on both engines: the token hashes
//! (`adapter_tokens`) and every adapter's decision at once (`fleet`).

use std::future::Future;

use chrono::{DateTime, Utc};
use firewall_contracts::{
    NewAdapter, Refusal, Role, Store, StoreError, Suspension, TerminatedBy, Termination, fleet,
    license, model::parse_day, tokens,
};

fn on_both<F: Future<Output = ()>>(test: &str, scenario: impl Fn(String) -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("contracts.db").display());
    runtime.block_on(scenario(url));
    if let Some(server) = testbed::require_postgres(test) {
        runtime.block_on(scenario(server.database().unwrap()));
    }
}

/// Two adapters, B-2 and A-1, under M-1.
async fn seeded(url: &str) -> Store {
    let store = Store::init(url, None, false).await.unwrap();
    let day = parse_day("2025-04-01").unwrap();
    let mut changes = store.begin().await.unwrap();
    changes.add_management("M-1", day).await.unwrap();
    for serial in ["B-2", "A-1"] {
        let adapter = NewAdapter {
            serial: serial.into(),
            model: "x86-fuji".parse().unwrap(),
            management: "M-1".into(),
            role: Role::Entry,
            since: day,
            rental: None,
        };
        changes.add_adapter(&adapter).await.unwrap();
    }
    changes.commit().await.unwrap();
    store
}

const HASH_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const HASH_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn one_token_per_adapter_found_by_its_hash(url: String) {
    let store = seeded(&url).await;
    assert_eq!(tokens::serial_of(&store, HASH_1).await.unwrap(), None);
    tokens::set(&store, "A-1", HASH_1, "2025-05-01T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(
        tokens::serial_of(&store, HASH_1).await.unwrap().as_deref(),
        Some("A-1")
    );
    // A new token replaces the old one.
    tokens::set(&store, "A-1", HASH_2, "2025-05-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(tokens::serial_of(&store, HASH_1).await.unwrap(), None);
    assert_eq!(
        tokens::serial_of(&store, HASH_2).await.unwrap().as_deref(),
        Some("A-1")
    );
    // One hash is one adapter's only.
    assert!(
        tokens::set(&store, "B-2", HASH_2, "2025-05-02T00:00:00Z")
            .await
            .is_err()
    );
    assert!(matches!(
        tokens::set(&store, "C-3", HASH_1, "2025-05-02T00:00:00Z").await,
        Err(StoreError::Refused(Refusal::UnknownAdapter(serial))) if serial == "C-3"
    ));
    assert!(tokens::revoke(&store, "A-1").await.unwrap());
    assert!(!tokens::revoke(&store, "A-1").await.unwrap());
    assert_eq!(tokens::serial_of(&store, HASH_2).await.unwrap(), None);
    // Not a hash: the schema refuses it.
    assert!(
        tokens::set(&store, "B-2", "short", "2025-05-02T00:00:00Z")
            .await
            .is_err()
    );
}

#[test]
fn tokens_on_sqlite_and_postgres() {
    on_both(
        "tokens::tokens_on_sqlite_and_postgres",
        one_token_per_adapter_found_by_its_hash,
    );
}

/// Adapters in every state: licensed, suspended, terminated, standby, without an option.
async fn every_state(url: &str) -> Store {
    let store = seeded(url).await;
    let day = |text| parse_day(text).unwrap();
    let mut changes = store.begin().await.unwrap();
    changes
        .add_option("O-A", "A-1", day("2025-04-01"))
        .await
        .unwrap();
    changes
        .add_option("O-B", "B-2", day("2025-04-01"))
        .await
        .unwrap();
    changes
        .suspend(
            "O-B",
            Suspension {
                from: day("2025-05-01"),
                to: Some(day("2025-05-03")),
            },
        )
        .await
        .unwrap();
    changes
        .terminate(
            "O-A",
            Termination {
                on: day("2025-06-30"),
                by: TerminatedBy::Provider,
                notice: None,
            },
        )
        .await
        .unwrap();
    changes
        .set_role("B-2", Role::Standby, day("2025-07-01"))
        .await
        .unwrap();
    changes
        .add_option("O-A2", "A-1", day("2025-08-01"))
        .await
        .unwrap();
    changes.commit().await.unwrap();
    store
}

async fn all_at_once_decides_as_one_by_one(url: String) {
    let store = every_state(&url).await;
    for at in [
        "2025-03-31T00:00:00Z",
        "2025-05-02T00:00:00Z",
        "2025-06-30T00:00:00Z",
        "2025-07-15T00:00:00Z",
        "2025-08-02T00:00:00Z",
    ] {
        let at: DateTime<Utc> = at.parse().unwrap();
        let all = fleet::decide_all(&store, at).await.unwrap();
        assert_eq!(all.len(), 2);
        for check in all {
            let one = license::decide(&store, &check.serial, at).await.unwrap();
            assert_eq!(check, one, "{} at {at}", check.serial);
        }
    }
}

#[test]
fn all_at_once_on_sqlite_and_postgres() {
    on_both(
        "tokens::all_at_once_on_sqlite_and_postgres",
        all_at_once_decides_as_one_by_one,
    );
}
