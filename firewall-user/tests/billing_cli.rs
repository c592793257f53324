//! `smf-firewall billing invoice` through the real binary, on an imported SQLite store: the
//! exact JSON and table of one invoice (README "Billing" shows the same), and exit 1 with
//! nothing printed for a bad month, a bad price sheet (at FILE:LINE:COL), a FIFO for one and
//! an unknown customer.

use std::{path::Path, process::Command};

mod common;

use common::{ok, smf};
const PRICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prices.yaml");

/// Worked example 3 of issue 14 (10 Entries, 2 Standbys, the outage of 2026-08-03 claimed on
/// 2026-10-20) with an x86 Fuji option from 2026-10-15.
const HISTORY: &str = "\
customers: [{id: C1, name: Example K.K.}, {id: C2, name: Idle K.K.}]
managements:
  - {id: MG-1, customer: C1, start: 2026-01-01, counts: [{from: 2026-01-01, entries: 10, standbys: 2}]}
adapters:
  - {serial: FUJI-1, model: SEIL/x86 Fuji, management: MG-1, role: entry, since: 2026-01-01}
options:
  - {id: UFO-1, serial: FUJI-1, start: 2026-10-15}
outages:
  - {management: MG-1, from: \"2026-08-03T10:00:00+09:00\", to: \"2026-08-06T09:30:00+09:00\",
     wholly_unusable: true, provider_fault: true, claimed: 2026-10-20}
";

/// An SQLite store in `dir` holding [`HISTORY`].
fn store(dir: &Path) -> String {
    let db = format!("sqlite:{}", dir.join("contracts.db").display());
    let file = dir.join("history.yaml");
    std::fs::write(&file, HISTORY).unwrap();
    ok(&db, &["contracts", "init"]);
    ok(&db, &["contracts", "import", file.to_str().unwrap()]);
    db
}

#[test]
fn json_prints_one_object_per_customer_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let json = ok(
        &db,
        &[
            "billing", "invoice", "--month", "2026-10", "--prices", PRICES, "--json",
        ],
    );
    // C2 has nothing to bill: left out.
    assert_eq!(
        json,
        "{\"customer\":\"C1\",\"month\":\"2026-10\",\"issued\":\"2026-11\",\"due\":\"2026-11-30\",\"lines\":[\
{\"article\":\"15-3\",\"contract\":\"MG-1\",\"item\":\"management entry\",\"amount\":30000},\
{\"article\":\"15-3\",\"contract\":\"MG-1\",\"item\":\"management standby\",\"amount\":2000},\
{\"article\":\"15-2\",\"contract\":\"UFO-1\",\"item\":\"option initial\",\"amount\":10000},\
{\"article\":\"15-3\",\"contract\":\"UFO-1\",\"item\":\"option x86-fuji\",\"amount\":5100},\
{\"article\":\"26\",\"contract\":\"MG-1\",\"item\":\"outage credit, 2 × 1/30 of 32000 yen (2026-08-03 10:00 to 2026-08-06 09:30)\",\"amount\":-2133}],\
\"subtotal\":44967,\"tax\":4496,\"total\":49463,\"warnings\":[]}\n"
    );
    // Asked for, C2 gets its empty invoice.
    let idle = ok(
        &db,
        &[
            "billing",
            "invoice",
            "--month",
            "2026-10",
            "--prices",
            PRICES,
            "--customer",
            "C2",
            "--json",
        ],
    );
    assert_eq!(
        idle,
        "{\"customer\":\"C2\",\"month\":\"2026-10\",\"issued\":\"2026-11\",\"due\":\"2026-11-30\",\"lines\":[],\"subtotal\":0,\"tax\":0,\"total\":0,\"warnings\":[]}\n"
    );
}

#[test]
fn the_text_form_is_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let text = ok(
        &db,
        &[
            "billing", "invoice", "--month", "2026-10", "--prices", PRICES,
        ],
    );
    assert_eq!(
        text,
        "\
invoice C1 (Example K.K.) for 2026-10: issued 2026-11, due 2026-11-30
article  contract  item                                                                         amount
15-3     MG-1      management entry                                                             30,000
15-3     MG-1      management standby                                                            2,000
15-2     UFO-1     option initial                                                               10,000
15-3     UFO-1     option x86-fuji                                                               5,100
26       MG-1      outage credit, 2 × 1/30 of 32000 yen (2026-08-03 10:00 to 2026-08-06 09:30)  -2,133
                   subtotal                                                                     44,967
                   tax                                                                           4,496
                   total                                                                        49,463
"
    );
    let none = ok(
        &db,
        &[
            "billing", "invoice", "--month", "2025-10", "--prices", PRICES,
        ],
    );
    assert_eq!(
        none,
        "no invoice for 2025-10: no customer has a fee or a warning\n"
    );
}

#[test]
fn bad_input_is_exit_1_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let bad_sheet = dir.path().join("bad.yaml");
    std::fs::write(
        &bad_sheet,
        "default:\n  - from: 2019-10-01\n    option: {initial: -5}\ntax: [{from: 2019-10-01, rate: 0.1}]\n",
    )
    .unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let lacking = dir.path().join("lacking.yaml");
    std::fs::write(
        &lacking,
        "default: {from: 2019-10-01, option: {initial: 1}}\ntax: [{from: 2019-10-01, rate: 0.1}]\n",
    )
    .unwrap();
    let (bad_sheet, fifo, lacking) = (
        bad_sheet.to_str().unwrap(),
        fifo.to_str().unwrap(),
        lacking.to_str().unwrap(),
    );
    // Each row: the arguments after `billing invoice`, the start of stderr's first line.
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--month", "2026-13", "--prices", PRICES],
            "error: --month: `2026-13` is not a month; write YYYY-MM, e.g. 2026-04".into(),
        ),
        (
            vec!["--month", "10000-01", "--prices", PRICES],
            "error: --month: `10000-01` is not a month".into(),
        ),
        (
            vec!["--month", "2026-4", "--prices", PRICES],
            "error: --month: `2026-4` is not a month".into(),
        ),
        (
            vec!["--month", "2026-10", "--prices", bad_sheet],
            format!("{bad_sheet}:3:23: error: expected a whole number"),
        ),
        (
            vec!["--month", "2026-10", "--prices", fifo],
            "error: nothing was billed".into(),
        ),
        (
            vec!["--month", "2026-10", "--prices", lacking],
            "error: nothing was billed".into(),
        ),
        (
            vec!["--month", "2026-10", "--prices", PRICES, "--customer", "C9"],
            "error: nothing was billed".into(),
        ),
    ];
    for (args, start) in cases {
        let mut all = vec!["billing", "invoice"];
        all.extend(&args);
        let out = smf(&db, &all);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert!(out.stderr.contains(&start), "{args:?}: {}", out.stderr);
    }
    // The causes, on the following lines.
    let out = smf(
        &db,
        &["billing", "invoice", "--month", "2026-10", "--prices", fifo],
    );
    assert!(
        out.stderr.contains("is not a regular file but a FIFO"),
        "{}",
        out.stderr
    );
    let out = smf(
        &db,
        &[
            "billing",
            "invoice",
            "--month",
            "2026-10",
            "--prices",
            PRICES,
            "--customer",
            "C9",
        ],
    );
    assert!(
        out.stderr.contains("unknown customer `C9`"),
        "{}",
        out.stderr
    );
    let out = smf(
        &db,
        &[
            "billing", "invoice", "--month", "2026-10", "--prices", lacking,
        ],
    );
    assert!(
        out.stderr
            .contains("no price `management entry monthly` for customer C1 on 2026-10-01"),
        "{}",
        out.stderr
    );
    // A missing flag is clap's usage error.
    assert_eq!(
        smf(&db, &["billing", "invoice", "--prices", PRICES]).code,
        Some(2)
    );
}
