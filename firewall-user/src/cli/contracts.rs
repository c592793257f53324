//! `smf-firewall contracts ...`: the binary's edge of the contract store (licensing), and
//! where `contracts` and `license` find it. Values are parsed here rather than by clap, so
//! that a bad model, date or id is an ordinary error (exit 1) that names the flag, and
//! nothing is written.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
};

use crate::config::Config;
use anyhow::{Context as _, bail};
use chrono::Utc;
use chrono::{DateTime, Utc as UtcZone};
use chrono_tz::Tz;
use clap::Subcommand;
use firewall_contracts::{
    Contract, Day, Model, NewAdapter, Role, Store, Suspension, TerminatedBy, Termination, import,
    license::{self, decision},
    model::{BillingDays, Counts, Customer, ModelChange, Outage, parse_day},
    store::{DEFAULT_URL, Ended, NewManagement, NewOption, NewRental},
};

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

/// Manage the contract store: customers, management and rental contracts, adapters, Ultra
/// Firewall Options, outages.
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
        /// Re-zone a store that already holds contracts (moves every contract's first and
        /// last instant).
        #[arg(long)]
        force: bool,
    },
    /// Apply a YAML file of customers, managements, rentals, adapters, options and outages in
    /// one transaction; every reference is checked before the first write.
    Import {
        /// The YAML file (see README.md, "Contracts").
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
    /// Customers, the parties to management and rental contracts (Art. 7, 14).
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Management contracts.
    #[command(subcommand)]
    Management(ManagementCommand),
    /// Adapter rental contracts (Art. 4-1, 9, 16-3).
    #[command(subcommand)]
    Rental(RentalCommand),
    /// Outages of the management service (Art. 26).
    #[command(subcommand)]
    Outage(OutageCommand),
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
    /// Terminate a management, option or rental contract at the end of a day (Art. 22, 23).
    Terminate {
        #[command(flatten)]
        end: EndArgs,
    },
}

/// A termination: `--id`, `--on`, `--by`, `--notice`.
#[derive(clap::Args, Debug)]
struct EndArgs {
    #[arg(long, value_name = "ID")]
    id: String,
    /// The last day of the contract.
    #[arg(long, value_name = "DATE")]
    on: String,
    /// customer (needs --notice; a notice shorter than 30 days takes effect 30 days after
    /// it, Art. 23-2), provider, or abolition (needs --notice at least 3 months before,
    /// Art. 22).
    #[arg(long, value_name = "customer|provider|abolition")]
    by: String,
    /// The day of the written notice.
    #[arg(long, value_name = "DATE")]
    notice: Option<String>,
}

/// Acceptance and billing start days (Art. 15-2, 15-3), both defaulting to the start.
#[derive(clap::Args, Debug)]
struct DaysArgs {
    /// The day the provider accepted the application (the initial fee accrues) [default: the
    /// start].
    #[arg(long, value_name = "DATE")]
    accepted: Option<String>,
    /// The billing start day of the acceptance letter (monthly fees and Art. 16's minimum
    /// term run from it) [default: the start].
    #[arg(long, value_name = "DATE")]
    billing_start: Option<String>,
}

#[derive(Subcommand, Debug)]
enum CustomerCommand {
    /// Add a customer.
    Add {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "TEXT")]
        name: String,
        /// Art. 14: where the invoice goes, when the customer designated someone else.
        #[arg(long, value_name = "TEXT")]
        bill_to: Option<String>,
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
        /// Its customer [default: the default customer, `default`].
        #[arg(long, value_name = "ID")]
        customer: Option<String>,
        #[command(flatten)]
        days: DaysArgs,
    },
    /// Set the Entry and Standby counts from a day on (Art. 5-1); registered adapters may
    /// never exceed them.
    Counts {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "DATE")]
        from: String,
        #[arg(long, value_name = "N")]
        entries: u32,
        #[arg(long, value_name = "N")]
        standbys: u32,
    },
}

#[derive(Subcommand, Debug)]
enum RentalCommand {
    /// Add an adapter rental contract (minimum term 1 year, Art. 16).
    Add {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "ID")]
        customer: String,
        /// The rented adapter's serial.
        #[arg(long, value_name = "S")]
        serial: String,
        /// The model at contract time: neu-2fe-plus, turbo, x1, x2, b1, bpv4.
        #[arg(long, value_name = "M")]
        model: String,
        #[arg(long, value_name = "DATE")]
        start: String,
        #[command(flatten)]
        days: DaysArgs,
    },
    /// End a rental (Art. 22, 23); the options of its adapter end the same day (Art. 23-3).
    Terminate {
        #[command(flatten)]
        end: EndArgs,
    },
    /// The rented adapter is another model from a day on.
    ModelChange {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "DATE")]
        on: String,
        #[arg(long, value_name = "M")]
        model: String,
    },
    /// The rented adapter came back (Art. 9-3: due within 30 days after the end).
    Return {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "DATE")]
        on: String,
    },
}

#[derive(Subcommand, Debug)]
enum OutageCommand {
    /// Record an outage of a management contract's service.
    Add {
        #[arg(long, value_name = "ID")]
        management: String,
        /// Its first instant (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        from: String,
        /// Its end (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        to: String,
        /// The service was wholly unusable (or as good as).
        #[arg(long)]
        wholly_unusable: bool,
        /// The provider was at fault.
        #[arg(long)]
        provider_fault: bool,
        /// The day the customer claimed the reduction.
        #[arg(long, value_name = "DATE")]
        claimed: Option<String>,
    },
    /// The customer claimed the reduction for an outage (Art. 26).
    Claim {
        #[arg(long, value_name = "ID")]
        management: String,
        /// The outage's first instant, as recorded.
        #[arg(long, value_name = "RFC3339")]
        from: String,
        #[arg(long, value_name = "DATE")]
        on: String,
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
        /// The adapter rental contract it is rented under.
        #[arg(long, value_name = "ID")]
        rental: Option<String>,
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
        #[command(flatten)]
        days: DaysArgs,
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
        ContractsCommand::Init { time_zone, force } => init(url, time_zone.as_deref(), force)
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

async fn init(url: &str, time_zone: Option<&str>, force: bool) -> anyhow::Result<()> {
    let zone = time_zone.map(time_zone_arg).transpose()?;
    let store = Store::init(url, zone, force).await?;
    let zone = store.time_zone().await?;
    println!("contract store {url} is ready (time zone {zone})");
    Ok(())
}

/// A command that writes: one transaction, committed only if the change is allowed.
async fn write(url: &str, command: ChangeCommand) -> anyhow::Result<()> {
    let store = Store::open(url).await?;
    let mut changes = store.begin().await?;
    let done = match command {
        ChangeCommand::Customer(CustomerCommand::Add { id, name, bill_to }) => {
            let customer = Customer { id, name, bill_to };
            changes.add_customer(&customer).await?;
            format!("added customer {} ({})", customer.id, customer.name)
        }
        ChangeCommand::Management(ManagementCommand::Add {
            id,
            start,
            customer,
            days,
        }) => {
            let start = day_arg("--start", &start)?;
            let new = NewManagement {
                days: days.parse(start)?,
                id,
                customer,
                start,
            };
            changes.add_management_contract(&new).await?;
            format!(
                "added management contract {} from {start} (customer {})",
                new.id,
                new.customer
                    .as_deref()
                    .unwrap_or(firewall_contracts::store::DEFAULT_CUSTOMER)
            )
        }
        ChangeCommand::Management(ManagementCommand::Counts {
            id,
            from,
            entries,
            standbys,
        }) => {
            let from = day_arg("--from", &from)?;
            let counts = Counts {
                from,
                entries,
                standbys,
            };
            changes.set_counts(&id, counts).await?;
            format!(
                "management contract {id} is for {entries} entries and {standbys} standbys from {from}"
            )
        }
        ChangeCommand::Rental(command) => rental(&mut changes, command).await?,
        ChangeCommand::Outage(command) => outage(&mut changes, command).await?,
        ChangeCommand::Adapter(AdapterCommand::Add {
            serial,
            model,
            management,
            rental,
            role,
            since,
        }) => {
            let new = NewAdapter {
                model: Model::from_str(&model).map_err(|e| flag_error("--model", e))?,
                role: Role::from_str(&role).map_err(|e| flag_error("--role", e))?,
                since: day_arg("--since", &since)?,
                serial,
                management,
                rental,
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
        ChangeCommand::Option(OptionCommand::Add {
            id,
            serial,
            start,
            days,
        }) => {
            let start = day_arg("--start", &start)?;
            let new = NewOption {
                days: days.parse(start)?,
                id,
                serial,
                start,
            };
            changes.add_option_contract(&new).await?;
            format!(
                "added Ultra Firewall Option contract {} for adapter {} from {start}",
                new.id, new.serial
            )
        }
        ChangeCommand::Suspend { id, from, to } => {
            let suspension = Suspension {
                from: day_arg("--from", &from)?,
                to: to.as_deref().map(|to| day_arg("--to", to)).transpose()?,
            };
            changes.suspend(&id, suspension).await?;
            format!("suspended {id} {}", suspension_text(&suspension))
        }
        ChangeCommand::Terminate { end } => terminate(&mut changes, end).await?,
    };
    changes.commit().await?;
    println!("{done}");
    Ok(())
}

impl DaysArgs {
    fn parse(&self, start: Day) -> anyhow::Result<BillingDays> {
        let day = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| day_arg(flag, t))
                .transpose()
                .map(|d| d.unwrap_or(start))
        };
        Ok(BillingDays {
            accepted: day("--accepted", &self.accepted)?,
            billing_start: day("--billing-start", &self.billing_start)?,
        })
    }
}

/// `terminate` and `rental terminate`: what took effect, and what ended with it.
async fn terminate(
    changes: &mut firewall_contracts::Changes,
    end: EndArgs,
) -> anyhow::Result<String> {
    let termination = Termination {
        on: day_arg("--on", &end.on)?,
        by: TerminatedBy::from_operator(&end.by).ok_or_else(|| {
            anyhow::anyhow!("--by: `{}` is not customer, provider or abolition", end.by)
        })?,
        notice: end
            .notice
            .as_deref()
            .map(|n| day_arg("--notice", n))
            .transpose()?,
    };
    let ended: Ended = changes.terminate(&end.id, termination).await?;
    let mut lines = vec![format!(
        "terminated {} at the end of {} (by {})",
        end.id, ended.termination.on, end.by
    )];
    lines.extend(ended.moved_note());
    lines.extend(ended.cascade_notes());
    Ok(lines.join("\n"))
}

async fn rental(
    changes: &mut firewall_contracts::Changes,
    command: RentalCommand,
) -> anyhow::Result<String> {
    Ok(match command {
        RentalCommand::Add {
            id,
            customer,
            serial,
            model,
            start,
            days,
        } => {
            let start = day_arg("--start", &start)?;
            let new = NewRental {
                model: Model::from_str(&model).map_err(|e| flag_error("--model", e))?,
                days: days.parse(start)?,
                id,
                customer,
                serial,
                start,
            };
            changes.add_rental(&new).await?;
            format!(
                "added adapter rental contract {} of {} ({}) for {} from {start}",
                new.id, new.serial, new.model, new.customer
            )
        }
        RentalCommand::Terminate { end } => terminate(changes, end).await?,
        RentalCommand::ModelChange { id, on, model } => {
            let change = ModelChange {
                on: day_arg("--on", &on)?,
                model: Model::from_str(&model).map_err(|e| flag_error("--model", e))?,
            };
            changes.change_rental_model(&id, change).await?;
            format!("rental {id} is a {} from {}", change.model, change.on)
        }
        RentalCommand::Return { id, on } => {
            let on = day_arg("--on", &on)?;
            changes.return_rental(&id, on).await?;
            format!("rental {id}: the adapter came back on {on}")
        }
    })
}

async fn outage(
    changes: &mut firewall_contracts::Changes,
    command: OutageCommand,
) -> anyhow::Result<String> {
    Ok(match command {
        OutageCommand::Add {
            management,
            from,
            to,
            wholly_unusable,
            provider_fault,
            claimed,
        } => {
            let outage = Outage {
                management,
                from: instant_arg("--from", &from)?,
                to: instant_arg("--to", &to)?,
                wholly_unusable,
                provider_fault,
                claimed: claimed
                    .as_deref()
                    .map(|c| day_arg("--claimed", c))
                    .transpose()?,
            };
            changes.add_outage(&outage).await?;
            format!(
                "recorded an outage of {} from {} to {}",
                outage.management, outage.from, outage.to
            )
        }
        OutageCommand::Claim {
            management,
            from,
            on,
        } => {
            let from = instant_arg("--from", &from)?;
            let on = day_arg("--on", &on)?;
            changes.claim_outage(&management, from, on).await?;
            format!("the outage of {management} from {from} was claimed on {on}")
        }
    })
}

fn instant_arg(flag: &str, text: &str) -> anyhow::Result<DateTime<UtcZone>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&UtcZone))
        .map_err(|_| {
            anyhow::anyhow!(
                "{flag}: `{text}` is not an RFC 3339 instant such as 2026-08-03T10:00:00+09:00"
            )
        })
}

async fn import_file(store: &Store, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = import::import(store, file, &text)
        .await
        .context("nothing was imported")?;
    println!(
        "imported {}: {} management contracts, {} adapters, {} option contracts, {} customers, {} rental contracts, {} outages",
        file.display(),
        imported.managements,
        imported.adapters,
        imported.options,
        imported.customers,
        imported.rentals,
        imported.outages
    );
    for note in &imported.notes {
        println!("{note}");
    }
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
    for view in &views {
        println!(
            "management {}",
            contract_text(&view.management, view.days, today)
        );
        let mut line = format!(
            "  customer {}",
            view.customer.as_deref().unwrap_or("(none)")
        );
        for counts in &view.counts {
            line.push_str(&format!(
                "; from {} {} entries, {} standbys (Art. 5-1)",
                counts.from, counts.entries, counts.standbys
            ));
        }
        println!("{line}");
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
                let days = view
                    .option_days
                    .get(&option.id)
                    .copied()
                    .unwrap_or(BillingDays::from_start(option.start));
                println!("    option {}", contract_text(option, days, today));
            }
        }
    }
    if serial.is_none() {
        for rental in store.rentals().await? {
            let models: Vec<String> = rental
                .models
                .iter()
                .map(|change| format!("{} from {}", change.model, change.on))
                .collect();
            let mut line = format!(
                "rental {}; customer {}, adapter {}: {}",
                contract_text(&rental.contract, rental.days, today),
                rental.customer,
                rental.serial,
                models.join(", ")
            );
            match (rental.returned, rental.return_due()) {
                (Some(back), _) => line.push_str(&format!("; returned {back}")),
                (None, Some(due)) => {
                    line.push_str(&format!("; to be returned by {due} (Art. 9-3)"))
                }
                (None, None) => {}
            }
            println!("{line}");
        }
    }
    Ok(())
}

/// "M-1: active; start 2025-04-01, minimum term (Art. 16) to 2025-04-30; ..." with the
/// acceptance and billing start days where they differ from the start.
fn contract_text(contract: &Contract, days: BillingDays, today: Day) -> String {
    let minimum_term_end = contract.minimum_term_end(days.billing_start);
    let mut text = format!(
        "{}: {}; start {}, minimum term (Art. 16) to {minimum_term_end}",
        contract.id,
        contract.state_on(today).name(),
        contract.start,
    );
    if days != BillingDays::from_start(contract.start) {
        text.push_str(&format!(
            "; accepted {}, billing from {} (Art. 15)",
            days.accepted, days.billing_start
        ));
    }
    for suspension in &contract.suspensions {
        text.push_str(&format!("; suspended {}", suspension_text(suspension)));
    }
    if let Some(t) = contract.termination {
        text.push_str(&format!("; terminated on {} by {}", t.on, t.by));
        if let Some(notice) = t.notice {
            text.push_str(&format!(" (notice {notice})"));
        }
        if let Some(on) = contract.cancelled_before_start() {
            text.push_str(&format!(
                ", cancelled before its start (Art. 23-3, on {on})"
            ));
        } else if t.on < minimum_term_end && t.by != TerminatedBy::Abolition {
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
