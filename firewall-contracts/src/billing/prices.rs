//! The price sheet: table 1's "amounts shown separately to each customer" as configuration.
//!
//! ```yaml
//! default:                      # a list of dated entries (or one entry)
//!   - from: 2019-10-01
//!     management: {entry: {initial: 5000, monthly: 3000}, standby: {initial: 0, monthly: 1000}}
//!     option: {initial: 10000, monthly: {turbo: 2000, x1: 3100, x2: 4650, x86-fuji: 9300, bpv4: 3100}}
//!     rental: {initial: 3000, monthly: {neu-2fe-plus: 1500, turbo: 2500, x1: 3500, x2: 5000, b1: 2000, bpv4: 3500}}
//! customers:
//!   C2:                         # overrides only what it names, from its day on
//!     - from: 2026-01-01
//!       option: {monthly: {x1: 2800}}
//! tax:
//!   - {from: 2019-10-01, rate: 0.10}
//! ```
//!
//! A price on a day is the customer's latest entry from that day or before that names it, else
//! the default's; a price neither names is an error naming it.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::Path,
};

use serde::{
    Deserialize, Deserializer,
    de::{
        MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer, value::SeqAccessDeserializer,
    },
};
use serde_saphyr::{Location, Spanned};

use crate::model::{Day, Model, Role, parse_day};
use firewall_diagnostic::{Diagnostic, Diagnostics, FileError, decode, parse_yaml};

/// Above this a number is a typing error, not a price; it keeps every sum far from overflow.
const MAX_PRICE: u64 = 1_000_000_000_000;

/// At most this many decimals in a tax rate (0.1, 0.08, 0.125).
const RATE_DECIMALS: u32 = 6;

/// One price of table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Price {
    ManagementInitial(Role),
    ManagementMonthly(Role),
    OptionInitial,
    OptionMonthly(Model),
    RentalInitial,
    RentalMonthly(Model),
}

impl fmt::Display for Price {
    /// As the sheet spells its path: `option monthly x1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Price::ManagementInitial(role) => write!(f, "management {role} initial"),
            Price::ManagementMonthly(role) => write!(f, "management {role} monthly"),
            Price::OptionInitial => f.write_str("option initial"),
            Price::OptionMonthly(model) => write!(f, "option monthly {model}"),
            Price::RentalInitial => f.write_str("rental initial"),
            Price::RentalMonthly(model) => write!(f, "rental monthly {model}"),
        }
    }
}

/// A consumption-tax rate as an exact fraction, in force from a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaxRate {
    pub from: Day,
    pub numerator: u64,
    pub denominator: u64,
}

impl TaxRate {
    /// floor(amount × rate), for a non-negative amount.
    pub fn tax_on(&self, amount: i64) -> i64 {
        let exact = i128::from(amount) * i128::from(self.numerator);
        let tax = exact.div_euclid(i128::from(self.denominator));
        i64::try_from(tax).unwrap_or(i64::MAX)
    }
}

/// Prices named by one dated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dated {
    from: Day,
    /// A handful of prices: a list is all the lookup needs.
    prices: Vec<(Price, u64)>,
}

/// A parsed price sheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    file: String,
    /// Each list by day, latest first.
    default: Vec<Dated>,
    customers: HashMap<String, Vec<Dated>>,
    tax: Vec<TaxRate>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error(
        "{file}: error: no price `{price}` for customer {customer} on {day} (neither under `customers: {customer}:` nor under `default:`)"
    )]
    Missing {
        file: String,
        price: Price,
        customer: String,
        day: Day,
    },
    #[error("{file}: error: no tax rate in force on {day} (`tax:` starts later)")]
    NoTaxRate { file: String, day: Day },
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the price sheet {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the price sheet {path} is not a regular file but {kind}")]
    NotAFile { path: String, kind: &'static str },
    #[error("the price sheet {path} is larger than {} MiB: not a price sheet", MAX_SHEET_BYTES >> 20)]
    TooLarge { path: String },
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}

/// A price sheet is a few kilobytes (one entry per customer with own prices); a file this
/// large is the wrong file.
pub const MAX_SHEET_BYTES: u64 = 16 << 20;

impl Prices {
    /// Reads and parses the sheet at `path`: a regular file of at most [`MAX_SHEET_BYTES`].
    pub fn read(path: &Path) -> Result<Prices, ReadError> {
        let bytes = read_regular(path)?;
        Ok(Self::parse(path, &decode(path, bytes)?)?)
    }

    /// Parses the sheet's text; every problem is reported at its `FILE:LINE:COL`.
    pub fn parse(path: &Path, text: &str) -> Result<Prices, Diagnostics> {
        let raw: RawSheet = parse_yaml(path, text)?;
        let mut check = Check::default();
        let default = check.list(raw.default.0);
        let customers = raw
            .customers
            .into_iter()
            .flatten()
            .map(|(id, list)| (id, check.list(list.0)))
            .collect();
        let tax = check.tax(raw.tax);
        if !check.problems.is_empty() {
            return Err(Diagnostics {
                file: path.display().to_string(),
                items: check.problems,
            });
        }
        Ok(Prices {
            file: path.display().to_string(),
            default,
            customers,
            tax,
        })
    }

    /// The price for `customer` on `day`.
    pub fn price(&self, customer: &str, price: Price, day: Day) -> Result<u64, PriceError> {
        let named = |list: &[Dated]| {
            list.iter()
                .filter(|dated| dated.from <= day)
                .find_map(|dated| {
                    dated
                        .prices
                        .iter()
                        .find(|(named, _)| *named == price)
                        .map(|(_, amount)| *amount)
                })
        };
        self.customers
            .get(customer)
            .and_then(|list| named(list))
            .or_else(|| named(&self.default))
            .ok_or_else(|| PriceError::Missing {
                file: self.file.clone(),
                price,
                customer: customer.to_string(),
                day,
            })
    }

    /// The first day after `day` on which a price of `customer` may change.
    pub fn next_change(&self, customer: &str, day: Day) -> Option<Day> {
        let own = self.customers.get(customer).map_or(&[][..], Vec::as_slice);
        own.iter()
            .chain(&self.default)
            .map(|dated| dated.from)
            .filter(|from| *from > day)
            .min()
    }

    /// The tax rate in force on `day`.
    pub fn tax_rate(&self, day: Day) -> Result<TaxRate, PriceError> {
        self.tax
            .iter()
            .find(|rate| rate.from <= day)
            .copied()
            .ok_or_else(|| PriceError::NoTaxRate {
                file: self.file.clone(),
                day,
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSheet {
    #[serde(default)]
    default: OneOrMany,
    /// `customers:` with every entry commented out is null: no overrides.
    #[serde(default)]
    customers: Option<HashMap<String, OneOrMany>>,
    tax: Vec<RawTax>,
}

/// A list of dated entries, or a single one written as a mapping.
#[derive(Default)]
struct OneOrMany(Vec<RawDated>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of dated price entries (`- from: YYYY-MM-DD ...`)")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawDated::deserialize(MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(vec![one]))
            }
        }
        deserializer.deserialize_any(Entries)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDated {
    from: Spanned<String>,
    management: Option<RawManagement>,
    option: Option<RawPriced>,
    rental: Option<RawPriced>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    entry: Option<RawFee>,
    standby: Option<RawFee>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFee {
    initial: Option<Spanned<u64>>,
    monthly: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriced {
    initial: Option<Spanned<u64>>,
    monthly: Option<HashMap<Spanned<String>, Spanned<u64>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTax {
    from: Spanned<String>,
    rate: Spanned<f64>,
}

/// Conversions that record every positioned problem instead of stopping at the first.
#[derive(Default)]
struct Check {
    problems: Vec<Diagnostic>,
}

impl Check {
    fn problem(&mut self, location: &Location, message: impl Into<String>) {
        self.problems.push(Diagnostic::at(location, message));
    }

    fn day(&mut self, text: &Spanned<String>) -> Option<Day> {
        parse_day(&text.value)
            .map_err(|err| self.problem(&text.referenced, err.to_string()))
            .ok()
    }

    /// A dated list, latest first; two entries from the same day are refused.
    fn list(&mut self, raw: Vec<RawDated>) -> Vec<Dated> {
        let mut seen = HashSet::new();
        let mut list = Vec::new();
        for entry in raw {
            let from = self.day(&entry.from);
            let location = entry.from.referenced;
            let prices = self.dated(entry);
            let Some(from) = from else { continue };
            if seen.insert(from) {
                list.push(Dated { from, prices });
            } else {
                self.problem(
                    &location,
                    format!("a second price entry from {from} in this list"),
                );
            }
        }
        list.sort_by_key(|dated| std::cmp::Reverse(dated.from));
        list
    }

    fn dated(&mut self, entry: RawDated) -> Vec<(Price, u64)> {
        let mut prices = Vec::new();
        if let Some(management) = entry.management {
            for (role, fee) in [
                (Role::Entry, management.entry),
                (Role::Standby, management.standby),
            ] {
                let Some(fee) = fee else { continue };
                self.amount(&mut prices, Price::ManagementInitial(role), fee.initial);
                self.amount(&mut prices, Price::ManagementMonthly(role), fee.monthly);
            }
        }
        if let Some(option) = entry.option {
            self.amount(&mut prices, Price::OptionInitial, option.initial);
            for (model, amount) in self.models(option.monthly, "option") {
                self.amount(&mut prices, Price::OptionMonthly(model), Some(amount));
            }
        }
        if let Some(rental) = entry.rental {
            self.amount(&mut prices, Price::RentalInitial, rental.initial);
            for (model, amount) in self.models(rental.monthly, "rental") {
                self.amount(&mut prices, Price::RentalMonthly(model), Some(amount));
            }
        }
        prices
    }

    fn amount(
        &mut self,
        prices: &mut Vec<(Price, u64)>,
        price: Price,
        amount: Option<Spanned<u64>>,
    ) {
        let Some(amount) = amount else { return };
        if amount.value > MAX_PRICE {
            self.problem(
                &amount.referenced,
                format!(
                    "{price}: {} yen is more than a price can be (at most {MAX_PRICE})",
                    amount.value
                ),
            );
        } else {
            prices.push((price, amount.value));
        }
    }

    /// A `monthly:` mapping by model, checked against table 1's lists for `service`.
    fn models(
        &mut self,
        monthly: Option<HashMap<Spanned<String>, Spanned<u64>>>,
        service: &str,
    ) -> Vec<(Model, Spanned<u64>)> {
        let mut entries: Vec<_> = monthly.into_iter().flatten().collect();
        entries.sort_by_key(|(key, _)| (key.referenced.line(), key.referenced.column()));
        let mut models = Vec::new();
        for (key, amount) in entries {
            let model = match key.value.parse::<Model>() {
                Ok(model) => model,
                Err(err) => {
                    self.problem(&key.referenced, err.to_string());
                    continue;
                }
            };
            let offered = match service {
                "option" => model.option_eligible(),
                _ => model.rentable(),
            };
            if !offered {
                self.problem(
                    &key.referenced,
                    format!("`{}`: table 1 has no {service} for {model}", key.value),
                );
            } else if models.iter().any(|(seen, _)| *seen == model) {
                self.problem(
                    &key.referenced,
                    format!("{service} monthly {model} is priced twice"),
                );
            } else {
                models.push((model, amount));
            }
        }
        models
    }

    /// The tax rates, latest first.
    fn tax(&mut self, raw: Vec<RawTax>) -> Vec<TaxRate> {
        let mut rates: Vec<TaxRate> = Vec::new();
        for entry in raw {
            let from = self.day(&entry.from);
            let rate = self.rate(&entry.rate);
            let (Some(from), Some((numerator, denominator))) = (from, rate) else {
                continue;
            };
            if rates.iter().any(|seen| seen.from == from) {
                self.problem(
                    &entry.from.referenced,
                    format!("a second tax rate from {from}"),
                );
                continue;
            }
            rates.push(TaxRate {
                from,
                numerator,
                denominator,
            });
        }
        rates.sort_by_key(|rate| std::cmp::Reverse(rate.from));
        rates
    }

    /// The rate as written (shortest decimal of the parsed number), as an exact fraction.
    fn rate(&mut self, rate: &Spanned<f64>) -> Option<(u64, u64)> {
        let refuse = |check: &mut Self, why: &str| {
            check.problem(&rate.referenced, format!("tax rate {}: {why}", rate.value));
            None
        };
        if !rate.value.is_finite() || !(0.0..=1.0).contains(&rate.value) {
            return refuse(self, "a rate is between 0 and 1, e.g. 0.10");
        }
        let text = rate.value.to_string();
        let (whole, decimals) = text.split_once('.').unwrap_or((&text, ""));
        let places = u32::try_from(decimals.len()).unwrap_or(u32::MAX);
        if places > RATE_DECIMALS {
            return refuse(self, "at most 6 decimals");
        }
        let denominator = 10u64.pow(places);
        let numerator = format!("{whole}{decimals}").parse::<u64>().ok()?;
        Some((numerator, denominator))
    }
}

/// The bytes of `path`, refusing anything but a regular file before a byte is read, and more
/// than `MAX_SHEET_BYTES`.
fn read_regular(path: &Path) -> Result<Vec<u8>, ReadError> {
    let path_shown = path.display().to_string();
    firewall_diagnostic::read_regular(path, MAX_SHEET_BYTES).map_err(|error| match error {
        FileError::Io(source) => ReadError::Io {
            path: path_shown,
            source,
        },
        FileError::NotAFile(kind) => ReadError::NotAFile {
            path: path_shown,
            kind,
        },
        FileError::TooLarge => ReadError::TooLarge { path: path_shown },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Day {
        parse_day(text).unwrap()
    }

    fn parse(text: &str) -> Result<Prices, Diagnostics> {
        Prices::parse(Path::new("prices.yaml"), text)
    }

    const SHEET: &str = "default:\n  - from: 2019-10-01\n    management: {entry: {initial: 5000, monthly: 3000}, standby: {initial: 0, monthly: 1000}}\n    option: {initial: 10000, monthly: {turbo: 2000, x1: 3100, x2: 4650, x86-fuji: 9300, bpv4: 3100}}\n  - from: 2027-01-01\n    option: {monthly: {x1: 3300}}\ncustomers:\n  C2:\n    - from: 2026-01-01\n      option: {monthly: {SEIL/X1: 2800}}\ntax:\n  - {from: 2014-04-01, rate: 0.08}\n  - {from: 2019-10-01, rate: 0.10}\n";

    // Each row (table 1, "shown separately to each customer"): customer, price, day, amount.
    #[test]
    fn prices_are_per_customer_and_dated() {
        let prices = parse(SHEET).unwrap();
        let x1 = Price::OptionMonthly(Model::X1);
        let cases = [
            ("C1", x1, "2026-03-10", 3100),
            ("C1", x1, "2027-01-01", 3300), // a later default entry
            ("C2", x1, "2025-12-31", 3100), // before the override
            ("C2", x1, "2026-01-01", 2800),
            ("C2", x1, "2027-06-01", 2800), // the override holds over a later default
            ("C2", Price::OptionMonthly(Model::X2), "2026-06-01", 4650), // not overridden
            (
                "C2",
                Price::ManagementMonthly(Role::Entry),
                "2026-06-01",
                3000,
            ),
            (
                "C1",
                Price::ManagementInitial(Role::Standby),
                "2026-06-01",
                0,
            ),
        ];
        for (customer, price, on, amount) in cases {
            assert_eq!(
                prices.price(customer, price, day(on)),
                Ok(amount),
                "{customer} {price} {on}"
            );
        }
    }

    #[test]
    fn a_missing_price_is_an_error_naming_it() {
        let prices = parse(SHEET).unwrap();
        let missing = prices.price("C1", Price::RentalMonthly(Model::B1), day("2026-04-01"));
        assert_eq!(
            missing.unwrap_err().to_string(),
            "prices.yaml: error: no price `rental monthly b1` for customer C1 on 2026-04-01 (neither under `customers: C1:` nor under `default:`)"
        );
        let early = prices.price("C1", Price::OptionInitial, day("2019-09-30"));
        assert!(early.unwrap_err().to_string().contains("`option initial`"));
    }

    // Each row: service day, tax on 12,200 yen (Art. 15-1, rates effective-dated).
    #[test]
    fn tax_rates_are_dated_and_exact() {
        let prices = parse(SHEET).unwrap();
        for (on, tax) in [
            ("2019-09-30", 976),
            ("2019-10-01", 1220),
            ("2026-05-31", 1220),
        ] {
            assert_eq!(
                prices.tax_rate(day(on)).unwrap().tax_on(12_200),
                tax,
                "{on}"
            );
        }
        // 0.1 is not exact in binary; 29,867 × 0.1 must still floor to 2,986.
        assert_eq!(
            prices.tax_rate(day("2026-10-31")).unwrap().tax_on(29_867),
            2986
        );
        assert_eq!(
            prices.tax_rate(day("2014-03-31")).unwrap_err().to_string(),
            "prices.yaml: error: no tax rate in force on 2014-03-31 (`tax:` starts later)"
        );
    }

    #[test]
    fn one_entry_may_be_written_without_a_list() {
        // `customers:` with its entries commented out is null: no overrides.
        let prices = parse("default: {from: 2019-10-01, option: {initial: 7}}\ncustomers:\n# C1: ...\ntax: [{from: 2019-10-01, rate: 0.1}]\n").unwrap();
        assert_eq!(
            prices.price("C", Price::OptionInitial, day("2020-01-01")),
            Ok(7)
        );
    }

    // Each row: a bad sheet, the line and column of the problem and words of its message.
    #[test]
    fn bad_sheets_are_refused_at_their_position() {
        let tax = "tax: [{from: 2019-10-01, rate: 0.1}]\n";
        let cases = [
            (
                format!(
                    "default:\n  - from: 2019-10-01\n    option: {{monthly: {{b1: 100}}}}\n{tax}"
                ),
                3,
                24,
                "table 1 has no option for b1",
            ),
            (
                format!(
                    "default:\n  - from: 2019-10-01\n    rental: {{monthly: {{x86-fuji: 100}}}}\n{tax}"
                ),
                3,
                24,
                "table 1 has no rental for x86-fuji",
            ),
            (
                format!(
                    "default:\n  - from: 2019-10-01\n    rental: {{monthly: {{x9: 100}}}}\n{tax}"
                ),
                3,
                24,
                "unknown model `x9`",
            ),
            (
                format!(
                    "default:\n  - from: 2019-10-01\n    option: {{monthly: {{x1: 1, SEIL/X1: 2}}}}\n{tax}"
                ),
                3,
                31,
                "option monthly x1 is priced twice",
            ),
            (
                format!("default:\n  - from: 2019-13-01\n{tax}"),
                2,
                11,
                "`2019-13-01` is not a date",
            ),
            (
                format!("default:\n  - from: 2019-10-01\n    option: {{initial: -5}}\n{tax}"),
                3,
                23,
                "expected a whole number",
            ),
            (
                format!(
                    "default:\n  - from: 2019-10-01\n    option: {{initial: 1000000000001}}\n{tax}"
                ),
                3,
                23,
                "more than a price can be",
            ),
            (
                format!("default:\n  - from: 2019-10-01\n    colour: red\n{tax}"),
                3,
                5,
                "colour",
            ),
            (
                "tax: [{from: 2019-10-01, rate: 1.5}]\n".to_string(),
                1,
                32,
                "between 0 and 1",
            ),
            (
                "tax: [{from: 2019-10-01, rate: 0.1234567}]\n".to_string(),
                1,
                32,
                "at most 6 decimals",
            ),
            (
                "tax:\n  - {from: 2019-10-01, rate: 0.1}\n  - {from: 2019-10-01, rate: 0.2}\n"
                    .to_string(),
                3,
                12,
                "a second tax rate",
            ),
            (
                format!("default:\n  - from: 2019-10-01\n  - from: 2019-10-01\n{tax}"),
                3,
                11,
                "a second price entry from 2019-10-01",
            ),
        ];
        for (text, line, column, words) in cases {
            let err = parse(&text).unwrap_err();
            let first = &err.items[0];
            assert!(first.message.contains(words), "{text}: {err}");
            assert_eq!((first.line, first.column), (line, column), "{text}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("prices.yaml:{line}:{column}: error: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn only_a_regular_file_of_sane_size_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        // A FIFO no one writes to is refused at once, not waited on.
        let err = Prices::read(&fifo).unwrap_err();
        assert!(
            matches!(err, ReadError::NotAFile { kind: "a FIFO", .. }),
            "{err}"
        );
        let err = Prices::read(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is not a regular file but a directory"),
            "{err}"
        );
        let huge = dir.path().join("huge.yaml");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_SHEET_BYTES + 1)
            .unwrap();
        let err = Prices::read(&huge).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");
        let sheet = dir.path().join("prices.yaml");
        std::fs::write(&sheet, "tax: [{from: 2019-10-01, rate: 0.1}]\ndefault: {from: 2019-10-01, option: {initial: 1}}\n").unwrap();
        let prices = Prices::read(&sheet).unwrap();
        assert_eq!(
            prices.price("C1", Price::OptionInitial, day("2026-01-01")),
            Ok(1)
        );
        std::fs::write(
            &sheet,
            "tax: [{from: 2019-10-01, rate: 0.1}]\ndefault: {from: 2019-13-01}\n",
        )
        .unwrap();
        let err = Prices::read(&sheet).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2:", sheet.display())), "{err}");
    }
}
