//! `smf-firewall billing invoice`: each customer's invoice for a service month (Art. 15, 16,
//! 26 of the terms), from the contract store and a price sheet. The store's book is read in
//! one go and billed by the pure engine, `firewall_contracts::billing`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Subcommand;
use firewall_contracts::{
    Store,
    billing::{self, Book, Format, Month, Prices},
};

use super::contracts::{StoreArgs, runtime};

/// Bill the provider's customers from the contract store (Art. 15, 16, 26; see README.md,
/// "Billing").
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: BillingCommand,
}

#[derive(Subcommand, Debug)]
enum BillingCommand {
    /// Print the invoice for service month M of every customer with a fee or a warning
    /// (issued in M+1, due on its last day; integer yen). Exit 0 when printed, 1 on an error
    /// (a bad month, a price sheet error at FILE:LINE:COL, a price it lacks, an unknown
    /// customer), and then nothing is printed.
    Invoice {
        /// The service month.
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
        /// The price sheet: YAML, a regular file (the example is deploy/prices.yaml).
        #[arg(long, value_name = "FILE")]
        prices: PathBuf,
        /// Only this customer's invoice, printed even when it bills nothing; a customer the
        /// store does not hold is an error.
        #[arg(long, value_name = "ID")]
        customer: Option<String>,
        /// One JSON object per customer, one per line: {"customer", "month", "issued", "due",
        /// "lines": [{"article", "contract", "item", "amount"}], "subtotal", "tax", "total",
        /// "warnings"} (and "bill_to" when set).
        #[arg(long)]
        json: bool,
    },
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let BillingCommand::Invoice {
            month,
            prices,
            customer,
            json,
        } = self.command;
        let month: Month = month.parse().map_err(|e| anyhow::anyhow!("--month: {e}"))?;
        let prices = Prices::read(&prices).context("nothing was billed")?;
        let url = self.store.url()?;
        let format = if json { Format::Json } else { Format::Text };
        let printed = runtime()?
            .block_on(invoices(&url, &prices, month, customer.as_deref(), format))
            .context("nothing was billed")?;
        print!("{printed}");
        Ok(ExitCode::SUCCESS)
    }
}

/// What `billing invoice` prints: the store's book of `month`, billed.
async fn invoices(
    url: &str,
    prices: &Prices,
    month: Month,
    customer: Option<&str>,
    format: Format,
) -> anyhow::Result<String> {
    let store = Store::open(url).await?;
    let book = store.billing_book(month.first(), month.last()).await?;
    let book = Book::try_from(book)?;
    Ok(billing::bill(&book, prices, month, customer, format)?)
}
