//! Billing (Art. 15, 16, 26, 9-3 of the service terms): the issue's worked examples, one
//! table row per rule, and properties over generated contracts. Prices are the example sheet
//! `deploy/prices.yaml` unless a test says otherwise.

use std::path::Path;

use firewall_contracts::{
    Model, Role,
    billing::{self, BillingError, Book, Format, Invoice, Month, Price, Prices, Service},
};

const SHEET: &str = include_str!("../../deploy/prices.yaml");
const CUSTOMERS: &str =
    "customers:\n  - {id: C1, name: One}\n  - {id: C2, name: Two, bill_to: Two's branch office}\n";
/// A management contract with no units, so that an example's invoice holds only its option.
const MG0: &str = "managements:\n  - {id: MG-0, customer: C1, start: 2020-01-01, accepted: 2019-12-01, counts: [{from: 2020-01-01, entries: 0, standbys: 0}]}\n";

fn book(yaml: &str) -> Book {
    firewall_diagnostic::parse_yaml(Path::new("book.yaml"), &format!("{CUSTOMERS}{yaml}"))
        .unwrap_or_else(|err| panic!("{err}\n{yaml}"))
}

fn prices() -> Prices {
    Prices::parse(Path::new("deploy/prices.yaml"), SHEET).unwrap()
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

/// C1's invoice for `service_month`.
fn invoice_of(book: &Book, prices: &Prices, service_month: &str) -> Invoice {
    let mut invoices = billing::invoice(book, prices, month(service_month), Some("C1")).unwrap();
    assert_eq!(invoices.len(), 1);
    invoices.remove(0)
}

fn lines(invoice: &Invoice) -> Vec<(String, String, String, i64)> {
    invoice
        .lines
        .iter()
        .map(|l| {
            (
                l.article.clone(),
                l.contract.clone(),
                l.item.clone(),
                l.amount,
            )
        })
        .collect()
}

/// Sums and tax (10 %, floored once) agree with the lines.
fn check_sums(invoice: &Invoice) {
    let subtotal: i64 = invoice.lines.iter().map(|l| l.amount).sum();
    assert_eq!(invoice.subtotal, subtotal);
    assert_eq!(invoice.tax, subtotal / 10);
    assert_eq!(invoice.total, subtotal + subtotal / 10);
}

#[test]
fn worked_example_1_an_option_from_the_tenth() {
    let book = book(&format!(
        "{MG0}options:\n  - {{id: UFO-1, management: MG-0, model: x1, start: 2026-03-02, accepted: 2026-03-02, billing_start: 2026-03-10}}\n"
    ));
    let march = invoice_of(&book, &prices(), "2026-03");
    assert_eq!(
        serde_json::to_string(&march).unwrap(),
        r#"{"customer":"C1","month":"2026-03","issued":"2026-04","due":"2026-04-30","lines":[{"article":"15-2","contract":"UFO-1","item":"option initial","amount":10000},{"article":"15-3","contract":"UFO-1","item":"option x1","amount":2200}],"subtotal":12200,"tax":1220,"total":13420,"warnings":[]}"#
    );
    let april = invoice_of(&book, &prices(), "2026-04");
    assert_eq!((april.subtotal, april.tax, april.total), (3100, 310, 3410));
    assert_eq!(april.due.to_string(), "2026-05-31");
}

#[test]
fn worked_example_2_the_provider_ends_management_and_its_option() {
    let book = book(
        "managements:\n  - {id: MG-1, customer: C1, start: 2026-01-01, accepted: 2025-12-01, counts: [{from: 2026-01-01, entries: 1, standbys: 0}], end: {on: 2026-07-15, by: provider}}\n\
                     options:\n  - {id: UFO-1, management: MG-1, model: turbo, start: 2026-01-01, accepted: 2025-12-01, end: {on: 2026-07-15, by: management}}\n",
    );
    let july = invoice_of(&book, &prices(), "2026-07");
    assert_eq!(
        lines(&july),
        [
            (
                "15-4".into(),
                "MG-1".into(),
                "management entry".into(),
                1451
            ),
            ("15-4".into(), "UFO-1".into(), "option turbo".into(), 967),
        ]
    );
    assert_eq!((july.subtotal, july.tax, july.total), (2418, 241, 2659));
    let august = invoice_of(&book, &prices(), "2026-08");
    assert!(august.lines.is_empty(), "{august:?}");
}

const TEN_AND_TWO: &str = "managements:\n  - {id: MG-1, customer: C1, start: 2026-01-01, accepted: 2025-12-01, counts: [{from: 2026-01-01, entries: 10, standbys: 2}]}\n";

fn outage(from: &str, to: &str, claimed: &str) -> String {
    format!(
        "outages:\n  - {{management: MG-1, from: \"{from}\", to: \"{to}\", wholly_unusable: true, provider_fault: true, claimed: {claimed}}}\n"
    )
}

#[test]
fn worked_example_3_an_outage_credit() {
    let book = book(&format!(
        "{TEN_AND_TWO}{}",
        outage(
            "2026-08-03T10:00:00+09:00",
            "2026-08-06T09:30:00+09:00",
            "2026-10-20"
        )
    ));
    let october = invoice_of(&book, &prices(), "2026-10");
    assert_eq!(october.lines.len(), 3);
    let credit = &october.lines[2];
    assert_eq!(
        (
            credit.article.as_str(),
            credit.contract.as_str(),
            credit.amount
        ),
        ("26", "MG-1", -2133)
    );
    assert_eq!(
        credit.item,
        "outage credit, 2 × 1/30 of 32000 yen (2026-08-03 10:00 to 2026-08-06 09:30)"
    );
    assert_eq!(
        (october.subtotal, october.tax, october.total),
        (29_867, 2_986, 32_853)
    );
    assert!(october.warnings.is_empty());
    // The claim is on October's invoice only.
    assert_eq!(invoice_of(&book, &prices(), "2026-08").total, 35_200);

    let short = book_with(outage(
        "2026-08-03T10:00:00+09:00",
        "2026-08-04T09:59:00+09:00",
        "2026-10-20",
    ));
    let october = invoice_of(&short, &prices(), "2026-10");
    assert_eq!(october.total, 35_200);
    assert_eq!(october.warnings.len(), 1);
    assert!(
        october.warnings[0]
            .contains("it lasted 23 h 59 min, less than 24 consecutive hours (Art. 26)"),
        "{:?}",
        october.warnings
    );

    let late = book_with(outage(
        "2026-08-03T10:00:00+09:00",
        "2026-08-06T09:30:00+09:00",
        "2026-11-05",
    ));
    let november = invoice_of(&late, &prices(), "2026-11");
    assert_eq!(november.total, 35_200);
    assert_eq!(november.warnings.len(), 1);
    assert!(
        november.warnings[0].contains("the claim lapsed, it was due by 2026-11-04"),
        "{:?}",
        november.warnings
    );
}

fn book_with(outages: String) -> Book {
    book(&format!("{TEN_AND_TWO}{outages}"))
}

/// One row per rule: the article it checks, contracts (YAML of a `Book`, customers C1 and
/// C2 given), the service month, C1's lines, and words of each of its warnings.
type Row = (
    &'static str,
    String,
    &'static str,
    Vec<(&'static str, &'static str, &'static str, i64)>,
    Vec<&'static str>,
);

fn management(counts: &str, extra: &str) -> String {
    format!(
        "managements:\n  - {{id: MG-1, customer: C1, start: 2026-01-01, accepted: 2025-12-10, counts: [{counts}]{extra}}}\n"
    )
}

fn option_on_mg0(fields: &str) -> String {
    format!("{MG0}options:\n  - {{id: O-1, management: MG-0, model: x1, {fields}}}\n")
}

fn rows() -> Vec<Row> {
    let young = "managements:\n  - {id: MG-1, customer: C1, start: 2026-05-01, accepted: 2026-04-20, counts: [{from: 2026-05-01, entries: 1, standbys: 0}, {from: 2026-05-05, entries: 3, standbys: 0}, {from: 2026-05-20, entries: 1, standbys: 0}]}\n".to_string();
    let partly_young = management(
        "{from: 2026-01-01, entries: 5, standbys: 0}, {from: 2026-05-10, entries: 6, standbys: 0}, {from: 2026-05-15, entries: 3, standbys: 0}",
        "",
    );
    let two_young = management(
        "{from: 2026-01-01, entries: 1, standbys: 0}, {from: 2026-05-03, entries: 2, standbys: 0}, {from: 2026-05-12, entries: 3, standbys: 0}, {from: 2026-05-20, entries: 2, standbys: 0}",
        "",
    );
    let short_management = |by: &str| {
        format!(
            "managements:\n  - {{id: MG-1, customer: C1, start: 2026-05-10, accepted: 2026-04-01, counts: [{{from: 2026-05-10, entries: 1, standbys: 0}}], end: {{on: 2026-05-20, by: {by}}}}}\n"
        )
    };
    let covered_option = "options:\n  - {id: O-1, management: MG-1, model: turbo, start: 2026-05-10, accepted: 2026-04-01, end: {on: 2026-05-20, by: management}}\n";
    let rental = |returned: &str| {
        format!(
            "rentals:\n  - {{id: R-1, customer: C1, serial: SEIL-0001, model: x1, start: 2025-01-01, accepted: 2024-12-01, end: {{on: 2026-07-15, by: customer}}{returned}}}\n"
        )
    };
    let one_entry = management("{from: 2026-01-01, entries: 1, standbys: 0}", "");
    let claim = |from: &str, to: &str, claimed: &str, fault: bool, whole: bool| {
        format!(
            "  - {{management: MG-1, from: \"{from}\", to: \"{to}\", wholly_unusable: {whole}, provider_fault: {fault}, claimed: {claimed}}}\n"
        )
    };
    let raised_in_september = management(
        "{from: 2026-01-01, entries: 1, standbys: 0}, {from: 2026-09-01, entries: 2, standbys: 0}",
        "",
    );
    let utc_outage = claim(
        "2026-08-31T16:00:00Z",
        "2026-09-03T16:00:00Z",
        "2026-09-20",
        true,
        true,
    );
    vec![
        ("15-2: the initial fee on the invoice of the acceptance month", option_on_mg0("start: 2026-03-01, accepted: 2026-02-20"), "2026-02",
            vec![("15-2", "O-1", "option initial", 10_000)], vec![]),
        ("15-3: the monthly fee from the billing start, without the initial fee", option_on_mg0("start: 2026-03-01, accepted: 2026-02-20"), "2026-03",
            vec![("15-3", "O-1", "option x1", 3100)], vec![]),
        ("15-2: management initial fees per unit applied for (a zero price makes no line)",
            "managements:\n  - {id: MG-1, customer: C1, start: 2026-04-01, accepted: 2026-03-15, counts: [{from: 2026-04-01, entries: 2, standbys: 1}]}\n".into(), "2026-03",
            vec![("15-2", "MG-1", "management entry initial × 2", 10_000)], vec![]),
        ("15-3: Entries and Standbys each at their monthly fee",
            "managements:\n  - {id: MG-1, customer: C1, start: 2026-04-01, accepted: 2026-03-15, counts: [{from: 2026-04-01, entries: 2, standbys: 1}]}\n".into(), "2026-04",
            vec![("15-3", "MG-1", "management entry", 6000), ("15-3", "MG-1", "management standby", 1000)], vec![]),
        ("15-2, 15-5: added units bear an initial fee; old count × days before + new × days after",
            management("{from: 2026-01-01, entries: 1, standbys: 0}, {from: 2026-05-11, entries: 3, standbys: 0}", ""), "2026-05",
            vec![("15-2", "MG-1", "management entry initial × 2", 10_000), ("15-5", "MG-1", "management entry", 7064)], vec![]),
        ("15-5: a fall of units past their first month is billed by segment",
            management("{from: 2026-01-01, entries: 3, standbys: 0}, {from: 2026-05-11, entries: 1, standbys: 0}", ""), "2026-05",
            vec![("15-5", "MG-1", "management entry", 4935)], vec![]),
        ("15-5: Entries and Standbys apart",
            management("{from: 2026-01-01, entries: 2, standbys: 1}, {from: 2026-05-11, entries: 2, standbys: 3}", ""), "2026-05",
            vec![("15-3", "MG-1", "management entry", 6000), ("15-5", "MG-1", "management standby", 2354)], vec![]),
        ("15-5 proviso: young units fallen off stay billed until one month old", young.clone(), "2026-05",
            vec![("15-2", "MG-1", "management entry initial × 2", 10_000), ("15-5", "MG-1", "management entry", 8225)], vec![]),
        ("15-5 proviso: oldest young unit first (the starting unit to 05-31, then one of 05-05 to 06-04)", young, "2026-06",
            vec![("15-5", "MG-1", "management entry", 3400)], vec![]),
        ("15-5 proviso: only min(k, y) units kept, the rest off the old units", partly_young.clone(), "2026-05",
            vec![("15-2", "MG-1", "management entry initial × 1", 5000), ("15-5", "MG-1", "management entry", 13_838)], vec![]),
        ("15-5 proviso: the kept unit ends with its first month", partly_young, "2026-06",
            vec![("15-5", "MG-1", "management entry", 9900)], vec![]),
        ("15-5 proviso: of two young cohorts the older is kept (to 06-02, not 06-11)", two_young, "2026-06",
            vec![("15-5", "MG-1", "management entry", 6200)], vec![]),
        ("16-2: a management ended early owes the rest of its month, prorated per calendar month", short_management("customer"), "2026-05",
            vec![("15-4", "MG-1", "management entry", 1064), ("16-2", "MG-1", "management entry, rest of the minimum term to 2026-06-09", 1964)], vec![]),
        ("16-2: the remainder is billed once, on the month of the end", short_management("customer"), "2026-06", vec![], vec![]),
        ("16-2: an option ended early", option_on_mg0("start: 2026-03-01, accepted: 2026-02-20, billing_start: 2026-03-10, end: {on: 2026-03-20, by: customer}"), "2026-03",
            vec![("15-4", "O-1", "option x1", 1100), ("16-2", "O-1", "option x1, rest of the minimum term to 2026-04-09", 2030)], vec![]),
        ("16-2: an option ended with a management the provider terminated early (23-3) owes its remainder",
            format!("{}{covered_option}", short_management("provider")), "2026-05",
            vec![("15-4", "MG-1", "management entry", 1064), ("16-2", "MG-1", "management entry, rest of the minimum term to 2026-06-09", 1964),
                 ("15-4", "O-1", "option turbo", 709), ("16-2", "O-1", "option turbo, rest of the minimum term to 2026-06-09", 1309)], vec![]),
        ("22: the provider's abolition owes no remainder, nor do the options it ends",
            format!("{}{covered_option}", short_management("abolition")), "2026-05",
            vec![("15-4", "MG-1", "management entry", 1064), ("15-4", "O-1", "option turbo", 709)], vec![]),
        ("16-3: a rental's remainder at the model registered at contract time",
            "rentals:\n  - {id: R-1, customer: C1, model: x1, model_changes: [{on: 2026-03-01, model: x2}], start: 2026-01-01, accepted: 2025-12-15, end: {on: 2026-06-30, by: customer}, returned: 2026-07-10}\n".into(), "2026-06",
            vec![("15-4", "R-1", "rental x2", 5000), ("16-2", "R-1", "rental x1, rest of the minimum term to 2026-12-31", 21_000)], vec![]),
        ("16-1: no monthly fee for an option ended before its billing start", option_on_mg0("start: 2026-04-01, accepted: 2026-03-01, end: {on: 2026-03-20, by: customer}"), "2026-04",
            vec![], vec![]),
        ("21: a suspension does not stop fees", option_on_mg0("start: 2025-01-01, accepted: 2025-01-01, suspensions: [{from: 2026-04-05, to: 2026-04-10}]"), "2026-04",
            vec![("15-3", "O-1", "option x1", 3100)], vec!["option O-1: suspended from 2026-04-05 to 2026-04-10; fees run on (Art. 21)"]),
        ("26: a credit never exceeds the invoice's management lines",
            format!("{one_entry}outages:\n{}", claim("2026-08-01T00:00:00+09:00", "2026-09-10T00:00:00+09:00", "2026-09-15", true, true)), "2026-09",
            vec![("15-3", "MG-1", "management entry", 3000), ("26", "MG-1", "outage credit, 40 × 1/30 of 3000 yen (2026-08-01 00:00 to 2026-09-10 00:00)", -3000)],
            vec!["the credit of 4000 yen is limited to the 3000 yen of management fees on this invoice (Art. 26)"]),
        ("26-2: no credit when not the provider's fault",
            format!("{one_entry}outages:\n{}", claim("2026-08-01T00:00:00+09:00", "2026-08-04T00:00:00+09:00", "2026-09-15", false, true)), "2026-09",
            vec![("15-3", "MG-1", "management entry", 3000)], vec!["no reduction: not the provider's fault (Art. 26-2)"]),
        ("26: no credit when not wholly unusable",
            format!("{one_entry}outages:\n{}", claim("2026-08-01T00:00:00+09:00", "2026-08-04T00:00:00+09:00", "2026-09-15", true, false)), "2026-09",
            vec![("15-3", "MG-1", "management entry", 3000)], vec!["no reduction: the service was not wholly unusable (Art. 26)"]),
        ("26: separate outages do not add up",
            format!("{one_entry}outages:\n{}{}", claim("2026-08-01T00:00:00+09:00", "2026-08-01T20:00:00+09:00", "2026-09-15", true, true),
                claim("2026-08-02T00:00:00+09:00", "2026-08-02T20:00:00+09:00", "2026-09-15", true, true)), "2026-09",
            vec![("15-3", "MG-1", "management entry", 3000)], vec!["it lasted 20 h 0 min", "it lasted 20 h 0 min"]),
        ("26: an outage that ends before it begins is no outage",
            format!("{one_entry}outages:\n{}", claim("2026-08-04T00:00:00+09:00", "2026-08-01T00:00:00+09:00", "2026-09-15", true, true)), "2026-09",
            vec![("15-3", "MG-1", "management entry", 3000)], vec!["no reduction: it ends before it begins"]),
        ("26: a claim on the day 3 months after the 24 hours were reached is in time",
            format!("{one_entry}outages:\n{}", claim("2026-08-03T10:00:00+09:00", "2026-08-06T09:30:00+09:00", "2026-11-04", true, true)), "2026-11",
            vec![("15-3", "MG-1", "management entry", 3000), ("26", "MG-1", "outage credit, 2 × 1/30 of 3000 yen (2026-08-03 10:00 to 2026-08-06 09:30)", -200)], vec![]),
        ("26: the monthly fee in force when the outage began, not when claimed",
            format!("{raised_in_september}outages:\n{}", claim("2026-08-10T00:00:00+09:00", "2026-08-13T00:00:00+09:00", "2026-09-20", true, true)), "2026-09",
            vec![("15-2", "MG-1", "management entry initial × 1", 5000), ("15-3", "MG-1", "management entry", 6000),
                 ("26", "MG-1", "outage credit, 3 × 1/30 of 3000 yen (2026-08-10 00:00 to 2026-08-13 00:00)", -300)], vec![]),
        ("26: instants read in the store's zone (JST: the outage began on 09-01, at two Entries)",
            format!("{raised_in_september}outages:\n{utc_outage}"), "2026-09",
            vec![("15-2", "MG-1", "management entry initial × 1", 5000), ("15-3", "MG-1", "management entry", 6000),
                 ("26", "MG-1", "outage credit, 3 × 1/30 of 6000 yen (2026-09-01 01:00 to 2026-09-04 01:00)", -600)], vec![]),
        ("26: instants read in the store's zone (UTC: it began on 08-31, at one Entry)",
            format!("time_zone: UTC\n{raised_in_september}outages:\n{utc_outage}"), "2026-09",
            vec![("15-2", "MG-1", "management entry initial × 1", 5000), ("15-3", "MG-1", "management entry", 6000),
                 ("26", "MG-1", "outage credit, 3 × 1/30 of 3000 yen (2026-08-31 16:00 to 2026-09-03 16:00)", -300)], vec![]),
        ("15-4: a rental ended mid-month is billed for the days served", rental(""), "2026-07",
            vec![("15-4", "R-1", "rental x1", 1693)], vec![]),
        ("9-3, 11-2: an adapter not returned 30 days after the rental ended", rental(""), "2026-08",
            vec![], vec!["rental R-1: the adapter SEIL-0001 was not returned by 2026-08-14, 30 days after the rental ended on 2026-07-15 (Art. 9-3): a loss charge is due, billed on a separate invoice (Art. 11-2)"]),
        ("9-3: returned on the 30th day, no warning", rental(", returned: 2026-08-14"), "2026-08", vec![], vec![]),
        ("9-3: returned later, the loss charge is still due", rental(", returned: 2026-08-20"), "2026-08", vec![], vec!["was not returned by 2026-08-14"]),
    ]
}

#[test]
fn every_rule_by_article() {
    let prices = prices();
    for (rule, yaml, service_month, expected, warnings) in rows() {
        let invoice = invoice_of(&book(&yaml), &prices, service_month);
        let expected: Vec<(String, String, String, i64)> = expected
            .into_iter()
            .map(|(a, c, i, amount)| (a.into(), c.into(), i.into(), amount))
            .collect();
        assert_eq!(lines(&invoice), expected, "{rule}");
        assert_eq!(
            invoice.warnings.len(),
            warnings.len(),
            "{rule}: {:?}",
            invoice.warnings
        );
        for (found, words) in invoice.warnings.iter().zip(warnings) {
            assert!(found.contains(words), "{rule}: {found}");
        }
        check_sums(&invoice);
    }
}

#[test]
fn issued_next_month_and_due_at_its_end_across_a_year() {
    // Art. 15-1.
    let book = book(&option_on_mg0("start: 2025-01-01, accepted: 2024-12-20"));
    let december = invoice_of(&book, &prices(), "2025-12");
    assert_eq!(
        (december.issued.to_string(), december.due.to_string()),
        ("2026-01".into(), "2026-01-31".into())
    );
    let january = invoice_of(&book, &prices(), "2026-01");
    assert_eq!(january.due.to_string(), "2026-02-28");
}

const SMALL_SHEET: &str = "default:\n  - from: 2019-10-01\n    option: {initial: 10000, monthly: {x1: 15, x2: 4650}}\ncustomers:\n  C2:\n    - from: 2026-01-01\n      option: {monthly: {x1: 2800}}\ntax: [{from: 2019-10-01, rate: 0.10}]\n";

#[test]
fn tax_is_floored_once_per_invoice() {
    // Art. 15-1: 15 + 15 yen: 10 % of 30 is 3; per line it would be 1 + 1.
    let prices = Prices::parse(Path::new("p.yaml"), SMALL_SHEET).unwrap();
    let book = book(&format!(
        "{MG0}options:\n  - {{id: O-1, management: MG-0, model: x1, start: 2025-01-01, accepted: 2025-01-01}}\n  - {{id: O-2, management: MG-0, model: x1, start: 2025-01-01, accepted: 2025-01-01}}\n"
    ));
    let april = invoice_of(&book, &prices, "2026-04");
    assert_eq!((april.subtotal, april.tax, april.total), (30, 3, 33));
}

#[test]
fn each_customer_has_its_own_prices() {
    // Table 1: amounts shown separately to each customer.
    let prices = Prices::parse(Path::new("p.yaml"), SMALL_SHEET).unwrap();
    let book = book(
        "managements:\n  - {id: MG-1, customer: C1, start: 2020-01-01, counts: []}\n  - {id: MG-2, customer: C2, start: 2020-01-01, counts: []}\n\
                     options:\n  - {id: O-1, management: MG-1, model: x1, start: 2025-01-01}\n  - {id: O-2, management: MG-2, model: x1, start: 2025-01-01}\n",
    );
    let invoices = billing::invoice(&book, &prices, month("2026-04"), None).unwrap();
    let totals: Vec<(&str, i64)> = invoices
        .iter()
        .map(|i| (i.customer.as_str(), i.subtotal))
        .collect();
    assert_eq!(totals, [("C1", 15), ("C2", 2800)]);
    // Art. 14: the invoice names where it goes.
    let json = serde_json::to_string(&invoices[1]).unwrap();
    assert!(
        json.ends_with(r#""warnings":[],"bill_to":"Two's branch office"}"#),
        "{json}"
    );
}

#[test]
fn a_price_the_sheet_lacks_is_an_error_naming_it() {
    let prices = Prices::parse(Path::new("p.yaml"), SMALL_SHEET).unwrap();
    let book = book(&format!(
        "{MG0}options:\n  - {{id: O-1, management: MG-0, model: bpv4, start: 2026-04-10}}\n"
    ));
    let err = billing::invoice(&book, &prices, month("2026-04"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml: error: no price `option monthly bpv4` for customer C1 on 2026-04-10 (neither under `customers: C1:` nor under `default:`)"
    );
}

#[test]
fn a_book_with_broken_references_is_refused() {
    // Each row: contracts, words of the error.
    let cases = [
        (
            "managements:\n  - {id: MG-1, customer: C9, start: 2026-01-01}\n",
            "management MG-1 names unknown customer `C9`",
        ),
        (
            "options:\n  - {id: O-1, management: MG-9, model: x1, start: 2026-01-01}\n",
            "option O-1 names unknown management `MG-9`",
        ),
        (
            "managements:\n  - {id: MG-1, customer: C1, start: 2026-01-01, counts: [{from: 2026-01-01, entries: 1, standbys: 0}, {from: 2026-01-01, entries: 2, standbys: 0}]}\n",
            "management MG-1: two counts from 2026-01-01",
        ),
        (
            "rentals:\n  - {id: R-1, customer: C1, model: x1, start: 2026-01-01}\n  - {id: R-1, customer: C1, model: x2, start: 2026-01-01}\n",
            "rental R-1 is listed twice",
        ),
        (
            "rentals:\n  - {id: R-1, customer: C1, model: x1, model_changes: [{on: 2026-02-01, model: x86-fuji}], start: 2026-01-01}\n",
            "rental R-1: x86-fuji is not a rental model (table 1)",
        ),
        (
            "managements:\n  - {id: MG-1, customer: C1, start: 2026-01-01}\noptions:\n  - {id: O-1, management: MG-1, model: b1, start: 2026-01-01}\n",
            "option O-1: b1 gets no Ultra Firewall Option (table 1)",
        ),
    ];
    for (yaml, words) in cases {
        let err = billing::invoice(&book(yaml), &prices(), month("2026-04"), None).unwrap_err();
        assert!(err.to_string().contains(words), "{err}");
    }
    let err = billing::invoice(&book(""), &prices(), month("2026-04"), Some("C9")).unwrap_err();
    assert_eq!(err, BillingError::UnknownCustomer("C9".into()));
    let err = billing::invoice(&book(""), &prices(), month("9999-12"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no invoice can be issued for 9999-12: it would be issued after 9999-12"
    );
}

#[test]
fn only_customers_with_something_to_bill_unless_asked_for() {
    let book = book(&option_on_mg0("start: 2026-03-01, accepted: 2026-02-20"));
    let invoices = billing::invoice(&book, &prices(), month("2026-04"), None).unwrap();
    assert_eq!(
        invoices
            .iter()
            .map(|i| i.customer.as_str())
            .collect::<Vec<_>>(),
        ["C1"]
    );
    let two = billing::invoice(&book, &prices(), month("2026-04"), Some("C2")).unwrap();
    assert_eq!((two.len(), two[0].total), (1, 0));
}

#[test]
fn text_and_json_output() {
    let book = book(&format!(
        "{TEN_AND_TWO}{}",
        outage(
            "2026-08-03T10:00:00+09:00",
            "2026-08-06T09:30:00+09:00",
            "2026-10-20"
        )
    ));
    let text = billing::bill(&book, &prices(), month("2026-10"), None, Format::Text).unwrap();
    assert_eq!(
        text,
        "invoice C1 (One) for 2026-10: issued 2026-11, due 2026-11-30\n\
         article  contract  item                                                                         amount\n\
         15-3     MG-1      management entry                                                             30,000\n\
         15-3     MG-1      management standby                                                            2,000\n\
         26       MG-1      outage credit, 2 × 1/30 of 32000 yen (2026-08-03 10:00 to 2026-08-06 09:30)  -2,133\n\
         \u{20}                  subtotal                                                                     29,867\n\
         \u{20}                  tax                                                                           2,986\n\
         \u{20}                  total                                                                        32,853\n"
    );
    let json = billing::bill(&book, &prices(), month("2026-10"), None, Format::Json).unwrap();
    assert_eq!(json.lines().count(), 1);
    let value: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(value["total"], 32_853);
    let none = billing::bill(&book, &prices(), month("2025-10"), None, Format::Text).unwrap();
    assert_eq!(
        none,
        "no invoice for 2025-10: no customer has a fee or a warning\n"
    );
}

#[test]
fn the_example_sheet_has_every_price_of_table_1() {
    let prices = prices();
    let day = "2026-04-01".parse().unwrap();
    let mut table_1 = vec![Price::OptionInitial, Price::RentalInitial];
    for role in [Role::Entry, Role::Standby] {
        table_1.extend([
            Price::ManagementInitial(role),
            Price::ManagementMonthly(role),
        ]);
    }
    for model in Model::ALL {
        if model.option_eligible() {
            table_1.push(Price::OptionMonthly(model));
        }
        if model != Model::X86Fuji {
            table_1.push(Price::RentalMonthly(model));
        }
    }
    assert_eq!(table_1.len(), 17);
    for price in table_1 {
        assert!(prices.price("C1", price, day).is_ok(), "{price}");
    }
}

mod properties {
    use super::*;
    use firewall_contracts::model::{Day, minimum_term_end};
    use proptest::prelude::*;

    fn day_in(first: &str, span: i64) -> impl Strategy<Value = Day> {
        let first: Day = first.parse().unwrap();
        (0..span).prop_map(move |offset| first + chrono::TimeDelta::days(offset))
    }

    /// Every month from `first`'s through `last`'s.
    fn months(first: Day, last: Day) -> Vec<Month> {
        let mut months = vec![Month::of(first)];
        while let Some(next) = months
            .last()
            .and_then(|m| m.next())
            .filter(|m| m.first() <= last)
        {
            months.push(next);
        }
        months
    }

    fn by() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("customer"), Just("provider"), Just("abolition")]
    }

    proptest! {
        /// Over any life, the monthly lines bill exactly the days served (billing start
        /// through end), and an early end's remainder exactly the rest of the minimum term.
        #[test]
        fn days_billed_equal_days_served(
            start in day_in("2024-01-01", 900),
            length in 0i64..800,
            rental in any::<bool>(),
            by in by(),
        ) {
            let end = start + chrono::TimeDelta::days(length);
            let yaml = if rental {
                format!("rentals:\n  - {{id: K-1, customer: C1, model: b1, model_changes: [{{on: 2025-06-15, model: x2}}], start: {start}, end: {{on: {end}, by: {by}}}}}\n")
            } else {
                format!("{MG0}options:\n  - {{id: K-1, management: MG-0, model: x2, start: {start}, end: {{on: {end}, by: {by}}}}}\n")
            };
            let book = book(&yaml);
            let prices = prices();
            let (mut served, mut rest) = (0i64, 0i64);
            for month in months(start, end + chrono::TimeDelta::days(40)) {
                for invoice in billing::invoice(&book, &prices, month, None).unwrap() {
                    for line in invoice.lines.iter().filter(|l| l.contract == "K-1") {
                        match line.article.as_str() {
                            "15-3" | "15-4" => served += i64::from(line.days),
                            "16-2" => rest += i64::from(line.days),
                            _ => {}
                        }
                    }
                }
            }
            prop_assert_eq!(served, length + 1);
            let term_end = minimum_term_end(start, if rental { 12 } else { 1 });
            let expected_rest = if by == "abolition" { 0 } else { (term_end - end).num_days().max(0) };
            prop_assert_eq!(rest, expected_rest);
        }

        /// Whatever the counts, ends and outages, no line is negative but a credit, and no
        /// invoice's total is.
        #[test]
        fn no_line_is_negative_except_credits(
            start in day_in("2025-01-01", 400),
            changes in proptest::collection::vec((1i64..200, 0u32..6, 0u32..4), 0..6),
            length in proptest::option::of(0i64..300),
            by in by(),
            outages in proptest::collection::vec((0i64..300, 0i64..2000, 0i64..150, any::<bool>(), any::<bool>()), 0..4),
        ) {
            let mut counts = format!("{{from: {start}, entries: 2, standbys: 1}}");
            let mut on = start;
            for (gap, entries, standbys) in &changes {
                on += chrono::TimeDelta::days(*gap);
                counts += &format!(", {{from: {on}, entries: {entries}, standbys: {standbys}}}");
            }
            let end = length.map(|l| start + chrono::TimeDelta::days(l));
            let end_yaml = end.map(|e| format!(", end: {{on: {e}, by: {by}}}")).unwrap_or_default();
            let option_end = end.map(|e| format!(", end: {{on: {e}, by: management}}")).unwrap_or_default();
            let mut yaml = format!(
                "managements:\n  - {{id: MG-1, customer: C1, start: {start}, accepted: {start}, counts: [{counts}]{end_yaml}}}\n\
                 options:\n  - {{id: O-1, management: MG-1, model: x86-fuji, start: {start}, accepted: {start}{option_end}}}\n\
                 rentals:\n  - {{id: R-1, customer: C1, model: turbo, start: {start}, accepted: {start}{end_yaml}}}\n"
            );
            yaml += "outages:\n";
            for (offset, hours, claim_after, whole, fault) in &outages {
                let from = chrono::NaiveDateTime::from(start + chrono::TimeDelta::days(*offset));
                let to = from + chrono::TimeDelta::hours(*hours);
                let claimed = to.date() + chrono::TimeDelta::days(*claim_after);
                yaml += &format!("  - {{management: MG-1, from: \"{}+09:00\", to: \"{}+09:00\", wholly_unusable: {whole}, provider_fault: {fault}, claimed: {claimed}}}\n",
                    from.format("%Y-%m-%dT%H:%M:%S"), to.format("%Y-%m-%dT%H:%M:%S"));
            }
            if outages.is_empty() {
                yaml = yaml.replace("outages:\n", "");
            }
            let book = book(&yaml);
            let prices = prices();
            let last = start + chrono::TimeDelta::days(800);
            for month in months(start, last) {
                for invoice in billing::invoice(&book, &prices, month, None).unwrap() {
                    for line in &invoice.lines {
                        if line.article == "26" {
                            prop_assert!(line.amount < 0, "{line:?}");
                            prop_assert_eq!(line.service, Service::Management);
                        } else {
                            prop_assert!(line.amount > 0, "{line:?}");
                        }
                    }
                    let management: i64 = invoice.lines.iter().filter(|l| l.service == Service::Management).map(|l| l.amount).sum();
                    prop_assert!(management >= 0, "{invoice:?}");
                    prop_assert!(invoice.total >= 0 && invoice.tax >= 0, "{invoice:?}");
                }
            }
        }
    }
}
