//! What billing reads: customers and their contracts as plain data, independent of the store's
//! schema so that a thin adapter can fill it from the store (or a test from YAML or JSON).
//! Days are calendar days in `time_zone`; a contract runs from the start of its first day
//! through the end of its last.

use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::model::{Day, Model};

/// Everything billed, for every customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Book {
    /// The store's time zone: days, and the instants of outages, are read in it.
    #[serde(default = "default_time_zone")]
    pub time_zone: Tz,
    #[serde(default)]
    pub customers: Vec<Customer>,
    #[serde(default)]
    pub managements: Vec<Management>,
    #[serde(default)]
    pub options: Vec<OptionContract>,
    #[serde(default)]
    pub rentals: Vec<Rental>,
    #[serde(default)]
    pub outages: Vec<Outage>,
}

fn default_time_zone() -> Tz {
    crate::store::DEFAULT_TIME_ZONE
}

impl Default for Book {
    fn default() -> Self {
        Self {
            time_zone: default_time_zone(),
            customers: Vec::new(),
            managements: Vec::new(),
            options: Vec::new(),
            rentals: Vec::new(),
            outages: Vec::new(),
        }
    }
}

/// A contracting party (Art. 7); its invoice may be sent to `bill_to` (Art. 14), the customer
/// staying liable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_to: Option<String>,
}

/// How a contract's life ended; `on` is its last day of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub on: Day,
    pub by: EndedBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    /// Art. 23-2.
    Customer,
    /// Art. 21, 23-1, 25-4: the provider ends this contract.
    Provider,
    /// Art. 22: the provider abolishes the service; no Art. 16-2 remainder is due.
    Abolition,
    /// Art. 23-3: an option ended with its adapter's management contract (as that one ended).
    Management,
    /// Art. 23-3: an option ended with its adapter's rental contract (as that one ended).
    Rental,
}

/// Art. 21: suspended from `from` through `to` (open-ended without). Fees run on; billing
/// only mentions it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspension {
    pub from: Day,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Day>,
}

/// Art. 5-1: from `from` on, this many Entries and Standbys (until the next row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub from: Day,
    pub entries: u32,
    pub standbys: u32,
}

/// A management contract (Art. 4-1). Its units' ages (for the proviso of Art. 15-5) follow
/// from `counts`: each increase adds units in use from that day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    pub id: String,
    pub customer: String,
    pub start: Day,
    /// Art. 15-2: the day the provider accepted the application; no initial fee without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Day>,
    /// Art. 15-3: defaults to `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_start: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    #[serde(default)]
    pub counts: Vec<Counts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspensions: Vec<Suspension>,
}

/// An Ultra Firewall Option contract (Art. 4-2), billed to its management's customer at the
/// monthly fee of its adapter's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionContract {
    pub id: String,
    pub management: String,
    /// The rental contract of its adapter, if the adapter is rented (for `ended_by: rental`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rental: Option<String>,
    #[serde(with = "model_name")]
    pub model: Model,
    pub start: Day,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_start: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspensions: Vec<Suspension>,
}

/// From `on`, the rented adapter is of `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChange {
    pub on: Day,
    #[serde(with = "model_name")]
    pub model: Model,
}

/// An Adapter Rental contract (Art. 4-1, 9); `model` is the model registered when the
/// contract was made (Art. 16-3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rental {
    pub id: String,
    pub customer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(with = "model_name")]
    pub model: Model,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_changes: Vec<ModelChange>,
    pub start: Day,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_start: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// Art. 9-3: the day the adapter came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<Day>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspensions: Vec<Suspension>,
}

/// A state of the management service (Art. 26), between two instants (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub management: String,
    pub from: DateTime<FixedOffset>,
    pub to: DateTime<FixedOffset>,
    pub wholly_unusable: bool,
    pub provider_fault: bool,
    /// The day the customer claimed the reduction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Day>,
}

impl Management {
    pub fn billing_start(&self) -> Day {
        self.billing_start.unwrap_or(self.start)
    }
}

impl OptionContract {
    pub fn billing_start(&self) -> Day {
        self.billing_start.unwrap_or(self.start)
    }
}

impl Rental {
    pub fn billing_start(&self) -> Day {
        self.billing_start.unwrap_or(self.start)
    }

    /// The rented model on `day`.
    pub fn model_on(&self, day: Day) -> Model {
        self.model_changes
            .iter()
            .filter(|change| change.on <= day)
            .max_by_key(|change| change.on)
            .map_or(self.model, |change| change.model)
    }

    /// Art. 16-3: the model whose fee prices an early end's remainder: the one registered
    /// when the contract was made, or on 2009-11-01 for a contract made before that day
    /// (supplementary provision of 2009-11-01).
    pub fn contract_model(&self) -> Model {
        let made = self.accepted.unwrap_or(self.start);
        match Day::from_ymd_opt(2009, 11, 1) {
            Some(cutover) if made < cutover => self.model_on(cutover),
            _ => self.model,
        }
    }
}

/// Models as their short names (`x86-fuji`), read also as the terms write them.
mod model_name {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::model::Model;

    pub fn serialize<S: Serializer>(model: &Model, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(model.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Model, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}
