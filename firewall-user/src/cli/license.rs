//! `smf-firewall license`: the licence decision for one adapter, from the contract store;
//! and the provider's side of signed grants for a fleet: `keygen`, `grant`, `token`, `serve`.

mod grant;
mod keygen;
mod serve;
mod token;
mod when;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use firewall_contracts::{Store, license};
use serde::Serialize;

use super::contracts::{StoreArgs, runtime};

/// Exit code of `smf-firewall license` when the option is not licensed.
const NOT_LICENSED: u8 = 4;

/// Decide whether the Ultra Firewall Option is licensed for an adapter: exit 0 licensed,
/// 4 not licensed, 1 on error. With a subcommand: the provider's signed grants for a fleet.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Option<LicenseCommand>,
    /// The adapter's serial number, exactly.
    #[arg(long, value_name = "S", required = true)]
    serial: Option<String>,
    /// The instant to decide for [default: now].
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Print {"serial":S,"licensed":bool,"reason":"..."}.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum LicenseCommand {
    Keygen(keygen::Args),
    Grant(grant::Args),
    Token(token::Args),
    Serve(serve::Args),
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let url = || self.store.url();
        match self.command {
            Some(LicenseCommand::Keygen(args)) => args.run(),
            Some(LicenseCommand::Grant(args)) => args.run(&url()?),
            Some(LicenseCommand::Token(args)) => args.run(&url()?),
            Some(LicenseCommand::Serve(args)) => args.run(&url()?),
            None => decide(
                &url()?,
                self.serial.as_deref().unwrap_or_default(),
                self.at.as_deref(),
                self.json,
            ),
        }
    }
}

fn decide(url: &str, serial: &str, at: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let at = when::instant(at)?;
    let check = runtime()?
        .block_on(async {
            let store = Store::open(url).await?;
            license::decide(&store, serial, at).await
        })
        .context("cannot decide")?;
    if json {
        #[derive(Serialize)]
        struct Json<'a> {
            serial: &'a str,
            licensed: bool,
            reason: &'static str,
        }
        let json = Json {
            serial: &check.serial,
            licensed: check.decision.licensed,
            reason: check.decision.reason.name(),
        };
        println!("{}", serde_json::to_string(&json)?);
    } else {
        let verdict = if check.decision.licensed {
            "licensed"
        } else {
            "not licensed"
        };
        println!(
            "{}: {verdict} ({}) on {} in {}",
            check.serial, check.decision.reason, check.day, check.time_zone
        );
    }
    Ok(if check.decision.licensed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_LICENSED)
    })
}
