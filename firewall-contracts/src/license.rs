//! Licensing: is the Ultra Firewall Option licensed for this adapter now? The pure rule is in
//! `decision`; `decide` feeds it from the contract store. The daemon's recheck loop that
//! switches the dataplane between enforcing and passing is `firewall_user::licensing`.

pub mod decision;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use decision::{LicenseDecision, Reason};

use crate::{
    model::{Day, Model, Role},
    store::{Store, StoreError},
};

/// A decision with what it was made from, for logs, metrics and `smf-firewall license`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub serial: String,
    pub decision: LicenseDecision,
    /// The contract day `at` fell on, in `time_zone`.
    pub day: Day,
    pub time_zone: Tz,
    /// The adapter's model and its role on `day`, when the store knows them.
    pub model: Option<Model>,
    pub role: Option<Role>,
}

/// Decides for `serial` at the instant `at`: the instant becomes a calendar day in the
/// provider's time zone (kept in the store), then [`decision::decide`] applies the terms.
pub async fn decide(store: &Store, serial: &str, at: DateTime<Utc>) -> Result<Check, StoreError> {
    let time_zone = store.time_zone().await?;
    let day = decision::contract_day(at, time_zone);
    let facts = store.facts(serial).await?;
    Ok(Check {
        serial: serial.to_string(),
        decision: decision::decide(facts.as_ref(), day),
        day,
        time_zone,
        model: facts.as_ref().map(|f| f.adapter.model),
        role: facts.as_ref().and_then(|f| f.adapter.role_on(day)),
    })
}
