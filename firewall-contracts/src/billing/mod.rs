//! Provider billing (Art. 15, 16, 26 of the service terms): each customer's invoice for a
//! service month, from plain data about its contracts (`book`) and a price sheet (`prices`).
//! Pure: it reads neither the store nor the clock. `from_store` maps what
//! `Store::billing_book` loads into a [`Book`] (`Book::try_from`), and [`bill`] prints what
//! `billing invoice` shows.
//!
//! `calendar` is months and days, `proration` exact shares of monthly fees and the day-by-day
//! Entry/Standby counts (Art. 15-5), `invoice` the rules, `render` the text and JSON.

pub mod book;
pub mod calendar;
mod from_store;
pub mod invoice;
pub mod prices;
pub mod proration;
pub mod render;

pub use book::{
    Book, Counts, Customer, End, EndedBy, Management, ModelChange, OptionContract, Outage, Rental,
    Suspension,
};
pub use calendar::{BadMonth, Month};
pub use invoice::{BillingError, Invoice, Line, Service, invoice};
pub use prices::{Price, PriceError, Prices, ReadError};
pub use render::{Format, bill};
