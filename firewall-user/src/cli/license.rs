//! `smf-firewall license`: the licence decision for one adapter, from the contract store.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use firewall_contracts::{Store, license};
use serde::Serialize;

use super::contracts::{StoreArgs, runtime};

/// Exit code of `smf-firewall license` when the option is not licensed.
const NOT_LICENSED: u8 = 4;

/// Decide whether the Ultra Firewall Option is licensed for an adapter: exit 0 licensed,
/// 4 not licensed, 1 on error.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The adapter's serial number, exactly.
    #[arg(long, value_name = "S")]
    serial: String,
    /// The instant to decide for [default: now].
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Print {"serial":S,"licensed":bool,"reason":"..."}.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let at = match &args.at {
            None => Utc::now(),
            Some(text) => DateTime::parse_from_rfc3339(text)
                .with_context(|| {
                    format!(
                        "--at `{text}` is not an RFC 3339 instant such as 2025-04-01T09:00:00+09:00"
                    )
                })?
                .with_timezone(&Utc),
        };
        let url = args.store.url()?;
        let check = runtime()?
            .block_on(async {
                let store = Store::open(&url).await?;
                license::decide(&store, &args.serial, at).await
            })
            .context("cannot decide")?;
        if args.json {
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
}
