//! `smf-firewall contracts ...` and `smf-firewall license` through the real binary: exit codes
//! (0, 1, and 4 for "not licensed"), the JSON shape, and that bad input changes nothing.

use std::{path::Path, process::Command};

mod common;

use common::{SMF_FIREWALL, ok, smf};

fn sqlite(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("contracts.db").display())
}

/// A store with M-1, adapter FUJI-1 (x86 Fuji, entry) and option O-1 from 2025-05-01.
fn seed(db: &str) {
    ok(db, &["contracts", "init"]);
    ok(
        db,
        &[
            "contracts",
            "management",
            "add",
            "--id",
            "M-1",
            "--start",
            "2025-04-01",
        ],
    );
    ok(
        db,
        &[
            "contracts",
            "adapter",
            "add",
            "--serial",
            "FUJI-1",
            "--model",
            "SEIL/x86 Fuji",
            "--management",
            "M-1",
            "--role",
            "entry",
            "--since",
            "2025-04-01",
        ],
    );
    ok(
        db,
        &[
            "contracts",
            "option",
            "add",
            "--id",
            "O-1",
            "--serial",
            "FUJI-1",
            "--start",
            "2025-05-01",
        ],
    );
}

fn license_json(db: &str, at: &str) -> (Option<i32>, String) {
    let out = smf(db, &["license", "--serial", "FUJI-1", "--at", at, "--json"]);
    (out.code, out.stdout)
}

#[test]
fn license_exits_0_when_licensed_and_4_when_not_with_the_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    seed(&db);
    assert_eq!(
        license_json(&db, "2025-05-01T00:00:00+09:00"),
        (
            Some(0),
            "{\"serial\":\"FUJI-1\",\"licensed\":true,\"reason\":\"licensed\"}\n".into()
        )
    );
    assert_eq!(
        license_json(&db, "2025-04-30T14:59:59Z"),
        (
            Some(4),
            "{\"serial\":\"FUJI-1\",\"licensed\":false,\"reason\":\"option_not_started\"}\n".into()
        )
    );
    let text = smf(
        &db,
        &[
            "license",
            "--serial",
            "FUJI-1",
            "--at",
            "2025-06-01T00:00:00Z",
        ],
    );
    assert_eq!(text.code, Some(0));
    assert_eq!(
        text.stdout,
        "FUJI-1: licensed (licensed) on 2025-06-01 in Asia/Tokyo\n"
    );

    let out = ok(
        &db,
        &[
            "contracts",
            "terminate",
            "--id",
            "O-1",
            "--on",
            "2025-06-30",
            "--by",
            "provider",
        ],
    );
    assert_eq!(
        out,
        "terminated O-1 at the end of 2025-06-30 (by provider)\n"
    );
    assert_eq!(
        license_json(&db, "2025-07-01T00:00:00+09:00"),
        (
            Some(4),
            "{\"serial\":\"FUJI-1\",\"licensed\":false,\"reason\":\"option_terminated\"}\n".into()
        )
    );
    let unknown = smf(&db, &["license", "--serial", "NOPE", "--json"]);
    assert_eq!(unknown.code, Some(4));
    assert_eq!(
        unknown.stdout,
        "{\"serial\":\"NOPE\",\"licensed\":false,\"reason\":\"unknown_serial\"}\n"
    );
}

#[test]
fn show_lists_states_and_art_16_minimum_terms() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    seed(&db);
    ok(
        &db,
        &[
            "contracts",
            "suspend",
            "--id",
            "M-1",
            "--from",
            "2025-06-01",
            "--to",
            "2025-06-02",
        ],
    );
    ok(
        &db,
        &[
            "contracts",
            "adapter",
            "set-role",
            "--serial",
            "FUJI-1",
            "--role",
            "standby",
            "--on",
            "2099-01-01",
        ],
    );
    let shown = ok(&db, &["contracts", "show", "--serial", "FUJI-1"]);
    assert!(
        shown.contains(
            "management M-1: active; start 2025-04-01, minimum term (Art. 16) to 2025-04-30; suspended from 2025-06-01 to 2025-06-02\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "  adapter FUJI-1 (x86-fuji): entry from 2025-04-01, standby from 2099-01-01; licence today: licensed\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "    option O-1: active; start 2025-05-01, minimum term (Art. 16) to 2025-05-31\n"
        ),
        "{shown}"
    );
    let missing = smf(&db, &["contracts", "show", "--serial", "NOPE"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing
            .stderr
            .contains("there is no adapter with serial `NOPE`"),
        "{}",
        missing.stderr
    );
}

#[test]
fn bad_input_is_exit_1_with_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    seed(&db);
    let before = ok(&db, &["contracts", "show"]);
    // Each row: the command, a fragment of its error.
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "contracts",
                "adapter",
                "add",
                "--serial",
                "X-1",
                "--model",
                "SEIL/X9",
                "--management",
                "M-1",
                "--role",
                "entry",
                "--since",
                "2025-04-01",
            ],
            "--model: unknown model `SEIL/X9`",
        ),
        (
            &[
                "contracts",
                "management",
                "add",
                "--id",
                "M-2",
                "--start",
                "2025-02-30",
            ],
            "--start: `2025-02-30` is not a date",
        ),
        (
            &[
                "contracts",
                "option",
                "add",
                "--id",
                "O-9",
                "--serial",
                "NOPE",
                "--start",
                "2025-05-01",
            ],
            "there is no adapter with serial `NOPE`",
        ),
        (
            &[
                "contracts",
                "suspend",
                "--id",
                "NOPE",
                "--from",
                "2025-05-01",
            ],
            "there is no contract `NOPE`",
        ),
        (
            &[
                "contracts",
                "option",
                "add",
                "--id",
                "O-2",
                "--serial",
                "FUJI-1",
                "--start",
                "2030-01-01",
            ],
            "Art. 4-2: adapter `FUJI-1` already has option contract `O-1`",
        ),
        (
            &[
                "contracts",
                "terminate",
                "--id",
                "O-1",
                "--on",
                "2025-06-15",
                "--by",
                "abolition",
                "--notice",
                "2025-06-01",
            ],
            "Art. 22: the provider abolishes the service with written notice at least 3 months ahead: a last day of 2025-06-15 needs notice by 2025-03-15, not 2025-06-01",
        ),
        (
            &[
                "contracts",
                "terminate",
                "--id",
                "O-1",
                "--on",
                "2025-06-15",
                "--by",
                "nobody",
            ],
            "--by: `nobody` is not customer, provider or abolition",
        ),
        (
            &[
                "contracts",
                "adapter",
                "set-role",
                "--serial",
                "FUJI-1",
                "--role",
                "boss",
                "--on",
                "2025-06-01",
            ],
            "--role: unknown role `boss`",
        ),
    ];
    for (args, fragment) in cases {
        let out = smf(&db, args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.starts_with("error: nothing was changed\n"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(fragment), "{args:?}: {}", out.stderr);
    }
    assert_eq!(ok(&db, &["contracts", "show"]), before);

    let bad_at = smf(&db, &["license", "--serial", "FUJI-1", "--at", "yesterday"]);
    assert_eq!(bad_at.code, Some(1));
    assert!(
        bad_at
            .stderr
            .contains("--at `yesterday` is not an RFC 3339 instant"),
        "{}",
        bad_at.stderr
    );
}

#[test]
fn import_applies_all_or_nothing_and_reports_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    ok(&db, &["contracts", "init"]);
    let file = dir.path().join("contracts.yaml");
    std::fs::write(
        &file,
        "managements:\n  - {id: M-1, start: 2025-04-01}\n\
         adapters:\n  - {serial: FUJI-1, model: x86-fuji, management: M-1, role: entry, since: 2025-04-01}\n  \
         - {serial: B1-1, model: SEIL/B1, management: M-1, role: entry, since: 2025-04-01}\n\
         options:\n  - {id: O-1, serial: FUJI-1, start: 2025-05-01}\n  - {id: O-2, serial: B1-1, start: 2025-05-01}\n",
    )
    .unwrap();
    let out = smf(&db, &["contracts", "import", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let expected = format!(
        "error: nothing was imported\n{}:8:5: error: table 1: adapter `B1-1` is a b1, which cannot have an Ultra Firewall Option",
        file.display()
    );
    assert!(out.stderr.starts_with(&expected), "{}", out.stderr);
    assert_eq!(
        license_json(&db, "2025-05-01T00:00:00+09:00"),
        (
            Some(4),
            "{\"serial\":\"FUJI-1\",\"licensed\":false,\"reason\":\"unknown_serial\"}\n".into()
        )
    );

    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.lines().take(7).collect::<Vec<_>>().join("\n")).unwrap();
    let out = ok(&db, &["contracts", "import", file.to_str().unwrap()]);
    assert!(
        out.contains("1 management contracts, 2 adapters, 1 option contracts, 0 customers"),
        "{out}"
    );
    assert_eq!(license_json(&db, "2025-05-01T00:00:00+09:00").0, Some(0));
}

#[test]
fn an_uninitialised_or_unreachable_store_is_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = sqlite(dir.path());
    let out = smf(&missing, &["license", "--serial", "FUJI-1"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("cannot reach the contract store"),
        "{}",
        out.stderr
    );

    let bad = smf("mysql://nowhere/db", &["contracts", "show"]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr
            .contains("`mysql://nowhere/db` is not a contract store URL"),
        "{}",
        bad.stderr
    );
}

#[test]
fn the_store_defaults_to_the_configs_contracts_url() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    seed(&db);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("rules: rules.yaml\ninterfaces: [lan0]\nadapter: {{serial: FUJI-1}}\ncontracts: {{url: \"{db}\"}}\n"),
    )
    .unwrap();
    let out = Command::new(SMF_FIREWALL)
        .args([
            "license",
            "--serial",
            "FUJI-1",
            "--at",
            "2025-05-01T00:00:00Z",
            "--json",
        ])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_same_commands_work_on_postgresql() {
    let Some(server) = testbed::require_postgres("contracts_cli::postgresql") else {
        return;
    };
    let db = server.database().unwrap();
    seed(&db);
    assert_eq!(license_json(&db, "2025-05-01T00:00:00+09:00").0, Some(0));
    ok(
        &db,
        &[
            "contracts",
            "suspend",
            "--id",
            "O-1",
            "--from",
            "2025-06-01",
        ],
    );
    assert_eq!(
        license_json(&db, "2025-06-01T00:00:00+09:00"),
        (
            Some(4),
            "{\"serial\":\"FUJI-1\",\"licensed\":false,\"reason\":\"option_suspended\"}\n".into()
        )
    );
}

#[test]
fn customers_rentals_counts_and_outages_through_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    ok(&db, &["contracts", "init"]);
    let commands: [&[&str]; 7] = [
        &[
            "contracts",
            "customer",
            "add",
            "--id",
            "C-1",
            "--name",
            "Example",
        ],
        &[
            "contracts",
            "management",
            "add",
            "--id",
            "M-1",
            "--start",
            "2026-01-01",
            "--customer",
            "C-1",
            "--billing-start",
            "2026-01-05",
        ],
        &[
            "contracts",
            "management",
            "counts",
            "--id",
            "M-1",
            "--from",
            "2026-01-01",
            "--entries",
            "1",
            "--standbys",
            "0",
        ],
        &[
            "contracts",
            "rental",
            "add",
            "--id",
            "R-1",
            "--customer",
            "C-1",
            "--serial",
            "T-1",
            "--model",
            "SEIL/Turbo",
            "--start",
            "2026-01-01",
        ],
        &[
            "contracts",
            "adapter",
            "add",
            "--serial",
            "T-1",
            "--model",
            "turbo",
            "--management",
            "M-1",
            "--rental",
            "R-1",
            "--role",
            "entry",
            "--since",
            "2026-01-01",
        ],
        &[
            "contracts",
            "option",
            "add",
            "--id",
            "O-1",
            "--serial",
            "T-1",
            "--start",
            "2026-09-10",
        ],
        &[
            "contracts",
            "outage",
            "add",
            "--management",
            "M-1",
            "--from",
            "2026-08-03T10:00:00+09:00",
            "--to",
            "2026-08-06T09:30:00+09:00",
            "--wholly-unusable",
            "--provider-fault",
        ],
    ];
    for args in commands {
        ok(&db, args);
    }
    // Art. 5-1: a second entry exceeds the count.
    let out = smf(
        &db,
        &[
            "contracts",
            "adapter",
            "add",
            "--serial",
            "T-2",
            "--model",
            "turbo",
            "--management",
            "M-1",
            "--role",
            "entry",
            "--since",
            "2026-02-01",
        ],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("Art. 5-1: on 2026-02-01"),
        "{}",
        out.stderr
    );
    // Art. 23-2 and 23-3: a short notice, and the option that would start later is cancelled.
    let out = ok(
        &db,
        &[
            "contracts",
            "rental",
            "terminate",
            "--id",
            "R-1",
            "--on",
            "2026-08-10",
            "--by",
            "customer",
            "--notice",
            "2026-08-03",
        ],
    );
    assert_eq!(
        out,
        "terminated R-1 at the end of 2026-09-02 (by customer)\n\
         effective 2026-09-02 (Art. 23-2: 30 days after the notice of 2026-08-03)\n\
         Art. 23-3: option O-1 is cancelled before its start, on 2026-09-02\n"
    );
    let shown = ok(&db, &["contracts", "show"]);
    assert!(
        shown.contains("  customer C-1; from 2026-01-01 1 entries, 0 standbys (Art. 5-1)\n"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "rental R-1: terminated; start 2026-01-01, minimum term (Art. 16) to 2026-12-31"
        ),
        "{shown}"
    );
    ok(
        &db,
        &[
            "contracts",
            "outage",
            "claim",
            "--management",
            "M-1",
            "--from",
            "2026-08-03T01:00:00Z",
            "--on",
            "2026-10-20",
        ],
    );
}
