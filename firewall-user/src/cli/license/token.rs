//! `smf-firewall license token --serial S`.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{SecondsFormat, Utc};
use firewall_contracts::{Store, tokens};
use firewall_grants::token;

use crate::cli::contracts::runtime;

/// Make an adapter's bearer token for `license serve`.
///
/// A new token for adapter S's grant requests, printed once
/// (put it in the adapter's `license.token_file`) and store only its SHA-256. A new token
/// replaces the adapter's old one at once.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The adapter's serial number, exactly.
    #[arg(long, value_name = "S")]
    serial: String,
    /// Remove the adapter's token instead: its grant requests are refused from now on.
    #[arg(long)]
    revoke: bool,
}

impl Args {
    pub fn run(self, url: &str) -> anyhow::Result<ExitCode> {
        runtime()?.block_on(async {
            let store = Store::open(url).await.context("no token was made")?;
            // Adds the token table to a store made before it existed.
            let store = Store::init(store.url(), None, false)
                .await
                .context("cannot update the store's schema")?;
            if self.revoke {
                let removed = tokens::revoke(&store, &self.serial).await?;
                eprintln!(
                    "{}: {}",
                    self.serial,
                    if removed { "token revoked" } else { "had no token" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            let (secret, hash) = token::generate();
            let issued = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
            tokens::set(&store, &self.serial, &hash, &issued)
                .await
                .context("no token was made")?;
            println!("{}", secret.as_str());
            eprintln!(
                "the token of {} (shown once; the store keeps only its hash): put it in the adapter's license.token_file, mode 0600",
                self.serial
            );
            Ok(ExitCode::SUCCESS)
        })
    }
}
