//! `smf-firewall contracts ...`: the binary's edge of the contract store (licensing), and
//! where `contracts` and `license` find it. Values are parsed here rather than by clap, so
//! that a bad model, date or id is an ordinary error (exit 1) that names the flag, and
//! nothing is written.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
};

use anyhow::{Context as _, bail};
use chrono::Utc;
use chrono_tz::Tz;
use clap::Subcommand;
use firewall_contracts::{
    Contract, Day, Model, NewAdapter, Role, Store, Suspension, TerminatedBy, Termination, import,
    license::{self, decision},
    model::parse_day,
    store::DEFAULT_URL,
};
use firewall_user::config::Config;

/// The daemon's config, whose `contracts.url` is the default store when it exists.
const SYSTEM_CONFIG: &str = "/etc/smf-firewall/config.yaml";

/// Where the store is: `--db`, the config's `contracts.url`, or the default.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The contract store: sqlite:PATH or postgres://USER@HOST/DB. Default: `contracts.url` of
    /// the config, else sqlite:/var/lib/smf-firewall/contracts.db.
    #[arg(long, global = true, value_name = "URL")]
    db: Option<String>,
    /// The daemon config whose `contracts.url` is the default store [default:
    /// /etc/smf-firewall/config.yaml when it exists].
    #[arg(long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Manage the contract store: management contracts, adapters, Ultra Firewall Options.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: ContractsCommand,
}

#[derive(Subcommand, Debug)]
enum ContractsCommand {
    /// Create the store if needed, apply its schema, and set the provider's time zone.
    Init {
        /// The provider's time zone, in which contract days begin and end [default:
        /// Asia/Tokyo, or the store's current one].
        #[arg(long, value_name = "TZ")]
        time_zone: Option<String>,
    },
    /// Apply a YAML file of managements, adapters and options in one transaction.
    Import {
        /// The YAML file (see README.md, "Licensing").
        file: PathBuf,
    },
    /// Print contracts, their states today and Art. 16 minimum-term end dates.
    Show {
        /// Only this adapter (exact serial) and its management contract.
        #[arg(long, value_name = "S")]
        serial: Option<String>,
    },
    #[command(flatten)]
    Change(ChangeCommand),
}

/// The commands that write, each in one transaction.
#[derive(Subcommand, Debug)]
enum ChangeCommand {
    /// Management contracts.
    #[command(subcommand)]
    Management(ManagementCommand),
    /// Adapters registered under a management contract.
    #[command(subcommand)]
    Adapter(AdapterCommand),
    /// Ultra Firewall Option contracts.
    #[command(subcommand)]
    Option(OptionCommand),
    /// Suspend a management or option contract (Art. 21); the same --from again sets its end.
    Suspend {
        #[arg(long, value_name = "ID")]
        id: String,
        /// The first suspended day.
        #[arg(long, value_name = "DATE")]
        from: String,
        /// The last suspended day [default: until further notice].
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
    },
    /// Terminate a management or option contract at the end of a day (Art. 23).
    Terminate {
        #[arg(long, value_name = "ID")]
        id: String,
        /// The last day of the contract.
        #[arg(long, value_name = "DATE")]
        on: String,
        /// customer (needs --notice, Art. 23-2) or provider.
        #[arg(long, value_name = "customer|provider")]
        by: String,
        /// The day of the customer's written notice.
        #[arg(long, value_name = "DATE")]
        notice: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ManagementCommand {
    /// Add a management contract.
    Add {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "DATE")]
        start: String,
    },
}

#[derive(Subcommand, Debug)]
enum AdapterCommand {
    /// Register an adapter under a management contract.
    Add {
        #[arg(long, value_name = "S")]
        serial: String,
        /// neu-2fe-plus, turbo, x1, x2, b1, bpv4, x86-fuji (or "SEIL/x86 Fuji" ...).
        #[arg(long, value_name = "M")]
        model: String,
        #[arg(long, value_name = "ID")]
        management: String,
        #[arg(long, value_name = "entry|standby")]
        role: String,
        #[arg(long, value_name = "DATE")]
        since: String,
    },
    /// Change an adapter's role from a day on (Art. 5-1).
    SetRole {
        #[arg(long, value_name = "S")]
        serial: String,
        #[arg(long, value_name = "entry|standby")]
        role: String,
        #[arg(long, value_name = "DATE")]
        on: String,
    },
}

#[derive(Subcommand, Debug)]
enum OptionCommand {
    /// Add an Ultra Firewall Option contract for one adapter, fixed for life (Art. 5-2).
    Add {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "S")]
        serial: String,
        #[arg(long, value_name = "DATE")]
        start: String,
    },
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let url = self.store.url()?;
        runtime()?.block_on(dispatch(&url, self.command))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The runtime of the store's client: one thread is plenty.
pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

impl StoreArgs {
    pub(super) fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.db {
            return Ok(url.clone());
        }
        let config = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|path| path.exists()),
        };
        let Some(path) = config else {
            return Ok(DEFAULT_URL.to_string());
        };
        let config = Config::load(&path)
            .with_context(|| format!("cannot take the store from {}", path.display()))?;
        Ok(config
            .licensing
            .and_then(|licensing| licensing.store_url().map(str::to_string))
            .unwrap_or_else(|| DEFAULT_URL.to_string()))
    }
}

async fn dispatch(url: &str, command: ContractsCommand) -> anyhow::Result<()> {
    match command {
        ContractsCommand::Init { time_zone } => init(url, time_zone.as_deref())
            .await
            .context("cannot initialise the contract store"),
        ContractsCommand::Import { file } => {
            let store = Store::open(url).await.context("nothing was imported")?;
            import_file(&store, &file).await
        }
        ContractsCommand::Show { serial } => show(url, serial.as_deref())
            .await
            .context("cannot show the contracts"),
        ContractsCommand::Change(change) => write(url, change).await.context("nothing was changed"),
    }
}

async fn init(url: &str, time_zone: Option<&str>) -> anyhow::Result<()> {
    let zone = time_zone.map(time_zone_arg).transpose()?;
    let store = Store::init(url, zone).await?;
    let zone = store.time_zone().await?;
    println!("contract store {url} is ready (time zone {zone})");
    Ok(())
}

/// A command that writes: one transaction, committed only if the change is allowed.
async fn write(url: &str, command: ChangeCommand) -> anyhow::Result<()> {
    let store = Store::open(url).await?;
    let mut changes = store.begin().await?;
    let done = match command {
        ChangeCommand::Management(ManagementCommand::Add { id, start }) => {
            let start = day_arg("--start", &start)?;
            changes.add_management(&id, start).await?;
            format!("added management contract {id} from {start}")
        }
        ChangeCommand::Adapter(AdapterCommand::Add {
            serial,
            model,
            management,
            role,
            since,
        }) => {
            let new = NewAdapter {
                model: Model::from_str(&model).map_err(|e| flag_error("--model", e))?,
                role: Role::from_str(&role).map_err(|e| flag_error("--role", e))?,
                since: day_arg("--since", &since)?,
                serial,
                management,
            };
            changes.add_adapter(&new).await?;
            format!(
                "registered adapter {} ({}) under {} as {} from {}",
                new.serial, new.model, new.management, new.role, new.since
            )
        }
        ChangeCommand::Adapter(AdapterCommand::SetRole { serial, role, on }) => {
            let role = Role::from_str(&role).map_err(|e| flag_error("--role", e))?;
            let on = day_arg("--on", &on)?;
            changes.set_role(&serial, role, on).await?;
            format!("adapter {serial} is {role} from {on}")
        }
        ChangeCommand::Option(OptionCommand::Add { id, serial, start }) => {
            let start = day_arg("--start", &start)?;
            changes.add_option(&id, &serial, start).await?;
            format!("added Ultra Firewall Option contract {id} for adapter {serial} from {start}")
        }
        ChangeCommand::Suspend { id, from, to } => {
            let suspension = Suspension {
                from: day_arg("--from", &from)?,
                to: to.as_deref().map(|to| day_arg("--to", to)).transpose()?,
            };
            changes.suspend(&id, suspension).await?;
            format!("suspended {id} {}", suspension_text(&suspension))
        }
        ChangeCommand::Terminate { id, on, by, notice } => {
            let termination = Termination {
                on: day_arg("--on", &on)?,
                by: match by.as_str() {
                    "customer" => TerminatedBy::Customer,
                    "provider" => TerminatedBy::Provider,
                    other => bail!("--by: `{other}` is not customer or provider"),
                },
                notice: notice
                    .as_deref()
                    .map(|n| day_arg("--notice", n))
                    .transpose()?,
            };
            let cascaded = changes.terminate(&id, termination).await?;
            let mut text = format!("terminated {id} at the end of {} (by {by})", termination.on);
            for option in cascaded {
                text.push_str(&format!(
                    "\nArt. 23-3: option {option} ends with it on {}",
                    termination.on
                ));
            }
            text
        }
    };
    changes.commit().await?;
    println!("{done}");
    Ok(())
}

async fn import_file(store: &Store, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = import::import(store, file, &text)
        .await
        .context("nothing was imported")?;
    println!(
        "imported {}: {} management contracts, {} adapters, {} option contracts",
        file.display(),
        imported.managements,
        imported.adapters,
        imported.options
    );
    Ok(())
}

async fn show(url: &str, serial: Option<&str>) -> anyhow::Result<()> {
    let store = &Store::open(url).await?;
    let zone = store.time_zone().await?;
    let now = Utc::now();
    let today = decision::contract_day(now, zone);
    let mut views = store.everything().await?;
    if let Some(serial) = serial {
        views.retain_mut(|view| {
            view.adapters
                .retain(|(adapter, _)| adapter.serial == serial);
            !view.adapters.is_empty()
        });
        if views.is_empty() {
            bail!("there is no adapter with serial `{serial}`");
        }
    }
    println!(
        "contract store {} (time zone {zone}); today is {today}",
        store.url()
    );
    for view in views {
        println!("management {}", contract_text(&view.management, today));
        for (adapter, options) in &view.adapters {
            let roles: Vec<String> = adapter
                .roles
                .iter()
                .map(|change| format!("{} from {}", change.role, change.since))
                .collect();
            let check = license::decide(store, &adapter.serial, now).await?;
            println!(
                "  adapter {} ({}): {}; licence today: {}",
                adapter.serial,
                adapter.model,
                roles.join(", "),
                check.decision.reason
            );
            for option in options {
                println!("    option {}", contract_text(option, today));
            }
        }
    }
    Ok(())
}

/// "M-1: active; start 2025-04-01, minimum term (Art. 16) to 2025-04-30; ..."
fn contract_text(contract: &Contract, today: Day) -> String {
    let mut text = format!(
        "{}: {}; start {}, minimum term (Art. 16) to {}",
        contract.id,
        contract.state_on(today).name(),
        contract.start,
        contract.minimum_term_end()
    );
    for suspension in &contract.suspensions {
        text.push_str(&format!("; suspended {}", suspension_text(suspension)));
    }
    if let Some(t) = contract.termination {
        text.push_str(&format!("; terminated on {} by {}", t.on, t.by));
        if let Some(notice) = t.notice {
            text.push_str(&format!(" (notice {notice})"));
        }
        if t.on < contract.minimum_term_end() {
            text.push_str(
                ", before the minimum term ends: the remaining term's fees are due (Art. 16-2)",
            );
        }
    }
    text
}

fn suspension_text(suspension: &Suspension) -> String {
    match suspension.to {
        Some(to) => format!("from {} to {to}", suspension.from),
        None => format!("from {} until further notice", suspension.from),
    }
}

fn day_arg(flag: &str, text: &str) -> anyhow::Result<Day> {
    parse_day(text).map_err(|e| flag_error(flag, e))
}

/// A bad value, with the flag that carried it, as one line.
fn flag_error(flag: &str, error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{flag}: {error}")
}

fn time_zone_arg(text: &str) -> anyhow::Result<Tz> {
    Tz::from_str(text).map_err(|_| {
        anyhow::anyhow!("--time-zone `{text}` is not an IANA time zone name such as Asia/Tokyo")
    })
}
