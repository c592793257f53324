//! Billing through the contract store, on both engines: each row imports a contract history
//! (the YAML of `contracts import`, with the keys of issue 14) into a fresh store, loads the
//! month's book with `Store::billing_book`, maps it (`Book::try_from`) and bills it with the
//! example sheet `deploy/prices.yaml`, as `smf-firewall billing invoice` does. Each row names
//! the article it checks; the three worked examples come first.

use std::{future::Future, path::Path, sync::Arc};

use firewall_contracts::{
    Store,
    billing::{self, BillingError, Book, Format, Invoice, Month, Prices},
    import::import,
};

const SHEET: &str = include_str!("../../deploy/prices.yaml");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Where fresh stores come from: files in one temporary directory, or databases of one
/// throwaway PostgreSQL server.
enum Engine {
    Sqlite(tempfile::TempDir),
    Postgres(Arc<testbed::Postgres>),
}

impl Engine {
    fn fresh(&self, n: usize) -> String {
        match self {
            Engine::Sqlite(dir) => {
                format!("sqlite:{}", dir.path().join(format!("{n}.db")).display())
            }
            Engine::Postgres(server) => server.database().unwrap(),
        }
    }
}

fn on_sqlite<F: Future<Output = ()>>(scenario: impl FnOnce(Engine) -> F) {
    let engine = Engine::Sqlite(tempfile::tempdir().unwrap());
    runtime().block_on(scenario(engine));
}

fn on_postgres<F: Future<Output = ()>>(test: &str, scenario: impl FnOnce(Engine) -> F) {
    let Some(server) = testbed::require_postgres(test) else {
        return;
    };
    runtime().block_on(scenario(Engine::Postgres(server)));
}

/// Each scenario becomes `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_engines {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::on_sqlite(super::$name) })+
        }
        mod postgres {
            $(#[test] fn $name() { super::on_postgres(concat!("billing_store::postgres::", stringify!($name)), super::$name) })+
        }
    };
}

on_both_engines!(
    every_rule_through_the_store,
    worked_example_1_prints_exactly_this_json,
    unknown_customers_and_prices_are_errors,
);

fn prices() -> Prices {
    Prices::parse(Path::new("deploy/prices.yaml"), SHEET).unwrap()
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

/// A fresh store holding `history`.
async fn store_with(url: &str, history: &str) -> Store {
    let store = Store::init(url, None, false).await.unwrap();
    import(&store, Path::new("history.yaml"), history)
        .await
        .unwrap_or_else(|err| panic!("{err}\n{history}"));
    store
}

/// The invoices of `service_month` (only `customer`'s, if given), as `billing invoice`
/// computes them.
async fn invoices(
    store: &Store,
    service_month: &str,
    customer: Option<&str>,
) -> Result<Vec<Invoice>, BillingError> {
    let month = month(service_month);
    let book = store
        .billing_book(month.first(), month.last())
        .await
        .unwrap();
    billing::invoice(&Book::try_from(book)?, &prices(), month, customer)
}

const C1: &str = "customers: [{id: C1, name: One K.K.}]\n";

/// A management contract of C1 with no counts, so that an invoice holds only its options.
const MG0: &str = "managements:\n  - {id: MG-0, customer: C1, start: 2020-01-01}\n";

/// MG-1 of C1 from 2026-01-01 at these counts, with more fields.
fn mg1(counts: &str, extra: &str) -> String {
    format!(
        "managements:\n  - {{id: MG-1, customer: C1, start: 2026-01-01, counts: [{counts}]{extra}}}\n"
    )
}

const ONE_ENTRY: &str = "{from: 2026-01-01, entries: 1, standbys: 0}";
const TEN_AND_TWO: &str = "{from: 2026-01-01, entries: 10, standbys: 2}";

fn outage(to: &str, claimed: &str) -> String {
    format!(
        "outages:\n  - {{management: MG-1, from: \"2026-08-03T10:00:00+09:00\", to: \"{to}\", wholly_unusable: true, provider_fault: true, claimed: {claimed}}}\n"
    )
}

/// One row: the rule and its article, the history imported (customer C1 given), the service
/// month, C1's lines (article, contract, item, yen), its total, and words of each warning.
struct Row {
    rule: &'static str,
    history: String,
    month: &'static str,
    lines: Vec<(&'static str, &'static str, &'static str, i64)>,
    total: i64,
    warnings: Vec<&'static str>,
}

fn rows() -> Vec<Row> {
    let example_1 = format!(
        "{MG0}adapters:\n  - {{serial: X1-1, model: x1, management: MG-0, role: entry, since: 2026-03-01}}\n\
         options:\n  - {{id: UFO-1, serial: X1-1, start: 2026-03-02, accepted: 2026-03-02, billing_start: 2026-03-10}}\n"
    );
    let example_2 = format!(
        "{}adapters:\n  - {{serial: T-1, model: SEIL/Turbo, management: MG-1, role: entry, since: 2026-01-01}}\n\
         options:\n  - {{id: UFO-1, serial: T-1, start: 2026-01-01}}\n",
        mg1(ONE_ENTRY, ", termination: {on: 2026-07-15, by: provider}")
    );
    let example_3 =
        |to: &str, claimed: &str| format!("{}{}", mg1(TEN_AND_TWO, ""), outage(to, claimed));
    // R-1 rents T-1, which carries O-1; the customer ends the rental early, which ends O-1
    // the same day (23-3).
    let rented = format!(
        "{}rentals:\n  - {{id: R-1, customer: C1, serial: T-1, model: turbo, start: 2026-01-01, termination: {{on: 2026-05-20, by: customer, notice: 2026-04-01}}}}\n\
         adapters:\n  - {{serial: T-1, model: turbo, management: MG-1, rental: R-1, role: entry, since: 2026-01-01}}\n\
         options:\n  - {{id: O-1, serial: T-1, start: 2026-05-10}}\n",
        mg1(ONE_ENTRY, "")
    );
    let short_management = |by: &str, notice: &str| {
        format!(
            "managements:\n  - {{id: MG-1, customer: C1, start: 2026-05-10, accepted: 2026-04-01, counts: [{{from: 2026-05-10, entries: 1, standbys: 0}}], termination: {{on: 2026-05-20, by: {by}, notice: {notice}}}}}\n"
        )
    };
    let raised = mg1(
        "{from: 2026-01-01, entries: 1, standbys: 0}, {from: 2026-05-11, entries: 3, standbys: 0}",
        "",
    );
    let lowered = mg1(
        "{from: 2026-01-01, entries: 3, standbys: 0}, {from: 2026-05-11, entries: 1, standbys: 0}",
        "",
    );
    let young = "managements:\n  - {id: MG-1, customer: C1, start: 2026-05-01, accepted: 2026-04-20, counts: [{from: 2026-05-01, entries: 1, standbys: 0}, {from: 2026-05-05, entries: 3, standbys: 0}, {from: 2026-05-20, entries: 1, standbys: 0}]}\n".to_string();
    let rental = |returned: &str| {
        format!(
            "rentals:\n  - {{id: R-1, customer: C1, serial: X1-9, model: SEIL/X1, start: 2026-01-01, accepted: 2025-12-15, model_changes: [{{on: 2026-03-01, model: x2}}], termination: {{on: 2026-06-30, by: customer, notice: 2026-05-01}}{returned}}}\n"
        )
    };
    // Accepted (and billed from) after its management ended: the book still holds MG-1.
    let accepted_late = format!(
        "{}adapters:\n  - {{serial: X1-1, model: x1, management: MG-1, role: entry, since: 2026-01-01}}\n\
         options:\n  - {{id: UFO-1, serial: X1-1, start: 2026-02-01, accepted: 2026-06-05, billing_start: 2026-06-10}}\n",
        mg1(ONE_ENTRY, ", termination: {on: 2026-05-31, by: provider}")
    );
    let suspended = mg1(
        ONE_ENTRY,
        ", suspensions: [{from: 2026-04-05, to: 2026-04-10}]",
    );
    vec![
        Row {
            rule: "15-2, 15-3: worked example 1 in March, the initial fee and 22 of 31 days",
            history: example_1.clone(),
            month: "2026-03",
            lines: vec![
                ("15-2", "UFO-1", "option initial", 10_000),
                ("15-3", "UFO-1", "option x1", 2200),
            ],
            total: 13_420,
            warnings: vec![],
        },
        Row {
            rule: "15-3: worked example 1 in April, a whole month",
            history: example_1,
            month: "2026-04",
            lines: vec![("15-3", "UFO-1", "option x1", 3100)],
            total: 3410,
            warnings: vec![],
        },
        Row {
            rule: "15-4, 23-3: worked example 2, the provider ends the management and its option ends with it",
            history: example_2.clone(),
            month: "2026-07",
            lines: vec![
                ("15-4", "MG-1", "management entry", 1451),
                ("15-4", "UFO-1", "option turbo", 967),
            ],
            total: 2659,
            warnings: vec![],
        },
        Row {
            rule: "15-4: nothing after the end",
            history: example_2,
            month: "2026-08",
            lines: vec![],
            total: 0,
            warnings: vec![],
        },
        Row {
            rule: "26: worked example 3, 71.5 h wholly unusable by the provider's fault, claimed in time",
            history: example_3("2026-08-06T09:30:00+09:00", "2026-10-20"),
            month: "2026-10",
            lines: vec![
                ("15-3", "MG-1", "management entry", 30_000),
                ("15-3", "MG-1", "management standby", 2000),
                (
                    "26",
                    "MG-1",
                    "outage credit, 2 × 1/30 of 32000 yen (2026-08-03 10:00 to 2026-08-06 09:30)",
                    -2133,
                ),
            ],
            total: 32_853,
            warnings: vec![],
        },
        Row {
            rule: "26: worked example 3, 23 h 59 min gives no credit",
            history: example_3("2026-08-04T09:59:00+09:00", "2026-10-20"),
            month: "2026-10",
            lines: vec![
                ("15-3", "MG-1", "management entry", 30_000),
                ("15-3", "MG-1", "management standby", 2000),
            ],
            total: 35_200,
            warnings: vec![
                "management MG-1: the outage from 2026-08-03 10:00 to 2026-08-04 09:59 claimed on 2026-10-20: no reduction: it lasted 23 h 59 min, less than 24 consecutive hours (Art. 26)",
            ],
        },
        Row {
            rule: "26: worked example 3, a claim on 2026-11-05 is refused with a warning",
            history: example_3("2026-08-06T09:30:00+09:00", "2026-11-05"),
            month: "2026-11",
            lines: vec![
                ("15-3", "MG-1", "management entry", 30_000),
                ("15-3", "MG-1", "management standby", 2000),
            ],
            total: 35_200,
            warnings: vec![
                "management MG-1: the outage from 2026-08-03 10:00 to 2026-08-06 09:30 claimed on 2026-11-05: no reduction: the claim lapsed, it was due by 2026-11-04, 3 months after the 24 hours were reached on 2026-08-04 (Art. 26)",
            ],
        },
        Row {
            rule: "23-3, 16-2, 16-3: a rental ended early ends its adapter's option; both owe the rest of their minimum terms",
            history: rented,
            month: "2026-05",
            lines: vec![
                ("15-3", "MG-1", "management entry", 3000),
                ("15-2", "O-1", "option initial", 10_000),
                ("15-4", "O-1", "option turbo", 709),
                (
                    "16-2",
                    "O-1",
                    "option turbo, rest of the minimum term to 2026-06-09",
                    1309,
                ),
                ("15-4", "R-1", "rental turbo", 1612),
                (
                    "16-2",
                    "R-1",
                    "rental turbo, rest of the minimum term to 2026-12-31",
                    18_387,
                ),
            ],
            total: 38_518,
            warnings: vec![],
        },
        Row {
            rule: "16-2: a management ended before its minimum term owes the rest, prorated per calendar month",
            history: short_management("customer", "2026-04-15"),
            month: "2026-05",
            lines: vec![
                ("15-4", "MG-1", "management entry", 1064),
                (
                    "16-2",
                    "MG-1",
                    "management entry, rest of the minimum term to 2026-06-09",
                    1964,
                ),
            ],
            total: 3330,
            warnings: vec![],
        },
        Row {
            rule: "15-2, 16-2: the initial fee in the acceptance month, the remainder only in the month of the end",
            history: short_management("customer", "2026-04-15"),
            month: "2026-04",
            lines: vec![("15-2", "MG-1", "management entry initial × 1", 5000)],
            total: 5500,
            warnings: vec![],
        },
        Row {
            rule: "22: the provider's abolition owes no remainder",
            history: short_management("abolition", "2026-02-01"),
            month: "2026-05",
            lines: vec![("15-4", "MG-1", "management entry", 1064)],
            total: 1170,
            warnings: vec![],
        },
        Row {
            rule: "15-2, 15-5: a count raised mid-month, initial fees for the added units and billing by segment",
            history: raised,
            month: "2026-05",
            lines: vec![
                ("15-2", "MG-1", "management entry initial × 2", 10_000),
                ("15-5", "MG-1", "management entry", 7064),
            ],
            total: 18_770,
            warnings: vec![],
        },
        Row {
            rule: "15-5: a count lowered mid-month, old units past their first month",
            history: lowered,
            month: "2026-05",
            lines: vec![("15-5", "MG-1", "management entry", 4935)],
            total: 5428,
            warnings: vec![],
        },
        Row {
            rule: "15-5 proviso: young units fallen off stay billed until one month old",
            history: young,
            month: "2026-05",
            lines: vec![
                ("15-2", "MG-1", "management entry initial × 2", 10_000),
                ("15-5", "MG-1", "management entry", 8225),
            ],
            total: 20_047,
            warnings: vec![],
        },
        Row {
            rule: "16-3: a rental's remainder at the model registered at contract time, not the one rented last",
            history: rental(", returned: 2026-07-10"),
            month: "2026-06",
            lines: vec![
                ("15-4", "R-1", "rental x2", 5000),
                (
                    "16-2",
                    "R-1",
                    "rental x1, rest of the minimum term to 2026-12-31",
                    21_000,
                ),
            ],
            total: 28_600,
            warnings: vec![],
        },
        Row {
            rule: "9-3, 11-2: an adapter not returned 30 days after the rental ended",
            history: rental(""),
            month: "2026-07",
            lines: vec![],
            total: 0,
            warnings: vec![
                "rental R-1: the adapter X1-9 was not returned by 2026-07-30, 30 days after the rental ended on 2026-06-30 (Art. 9-3): a loss charge is due, billed on a separate invoice (Art. 11-2)",
            ],
        },
        Row {
            rule: "9-3: returned on the 30th day, no warning",
            history: rental(", returned: 2026-07-30"),
            month: "2026-07",
            lines: vec![],
            total: 0,
            warnings: vec![],
        },
        Row {
            rule: "15-2, 23-3: an option accepted after its management ended bills its initial fee, and no monthly fee",
            history: accepted_late,
            month: "2026-06",
            lines: vec![("15-2", "UFO-1", "option initial", 10_000)],
            total: 11_000,
            warnings: vec![],
        },
        Row {
            rule: "21: a suspension does not stop fees",
            history: suspended,
            month: "2026-04",
            lines: vec![("15-3", "MG-1", "management entry", 3000)],
            total: 3300,
            warnings: vec![
                "management MG-1: suspended from 2026-04-05 to 2026-04-10; fees run on (Art. 21)",
            ],
        },
    ]
}

async fn every_rule_through_the_store(engine: Engine) {
    for (n, row) in rows().into_iter().enumerate() {
        let store = store_with(&engine.fresh(n), &format!("{C1}{}", row.history)).await;
        let mut invoices = invoices(&store, row.month, Some("C1"))
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", row.rule));
        assert_eq!(invoices.len(), 1, "{}", row.rule);
        let invoice = invoices.remove(0);
        let lines: Vec<_> = invoice
            .lines
            .iter()
            .map(|l| {
                (
                    l.article.as_str(),
                    l.contract.as_str(),
                    l.item.as_str(),
                    l.amount,
                )
            })
            .collect();
        assert_eq!(lines, row.lines, "{}", row.rule);
        assert_eq!(invoice.total, row.total, "{}", row.rule);
        assert_eq!(invoice.warnings, row.warnings, "{}", row.rule);
        drop(store);
    }
}

async fn worked_example_1_prints_exactly_this_json(engine: Engine) {
    let history = format!(
        "{C1}{MG0}adapters:\n  - {{serial: X1-1, model: x1, management: MG-0, role: entry, since: 2026-03-01}}\n\
         options:\n  - {{id: UFO-1, serial: X1-1, start: 2026-03-02, accepted: 2026-03-02, billing_start: 2026-03-10}}\n"
    );
    let store = store_with(&engine.fresh(0), &history).await;
    let month = month("2026-03");
    let book = store
        .billing_book(month.first(), month.last())
        .await
        .unwrap();
    let json = billing::bill(
        &Book::try_from(book).unwrap(),
        &prices(),
        month,
        None,
        Format::Json,
    )
    .unwrap();
    assert_eq!(
        json,
        "{\"customer\":\"C1\",\"month\":\"2026-03\",\"issued\":\"2026-04\",\"due\":\"2026-04-30\",\"lines\":[{\"article\":\"15-2\",\"contract\":\"UFO-1\",\"item\":\"option initial\",\"amount\":10000},{\"article\":\"15-3\",\"contract\":\"UFO-1\",\"item\":\"option x1\",\"amount\":2200}],\"subtotal\":12200,\"tax\":1220,\"total\":13420,\"warnings\":[]}\n"
    );
}

async fn unknown_customers_and_prices_are_errors(engine: Engine) {
    let store = store_with(&engine.fresh(0), &format!("{C1}{}", mg1(ONE_ENTRY, ""))).await;
    // A customer the store does not hold is an error, not an empty invoice.
    let err = invoices(&store, "2026-04", Some("C9")).await.unwrap_err();
    assert_eq!(err, BillingError::UnknownCustomer("C9".into()));
    // Every customer with nothing to bill is left out; asked for, it gets an empty invoice.
    let all = invoices(&store, "2025-04", None).await.unwrap();
    assert!(all.is_empty(), "{all:?}");
    let asked = invoices(&store, "2025-04", Some("C1")).await.unwrap();
    assert_eq!((asked.len(), asked[0].total), (1, 0));
    // A price the sheet lacks: here, a sheet without management prices.
    let sheet =
        "default: {from: 2019-10-01, option: {initial: 1}}\ntax: [{from: 2019-10-01, rate: 0.1}]\n";
    let prices = Prices::parse(Path::new("p.yaml"), sheet).unwrap();
    let month = month("2026-04");
    let book = store
        .billing_book(month.first(), month.last())
        .await
        .unwrap();
    let err = billing::invoice(&Book::try_from(book).unwrap(), &prices, month, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml: error: no price `management entry monthly` for customer C1 on 2026-04-01 (neither under `customers: C1:` nor under `default:`)"
    );
}
