//! The contract store: one schema on SQLite (`sqlite:PATH`, the default) or PostgreSQL
//! (`postgres://...`), reached through sqlx's `Any` driver with runtime queries. Every change
//! goes through [`Changes`], one transaction that checks the terms' rules before it writes;
//! the schema backs the rules that a database can hold (Art. 5-2, 23-2, the models).
//! `Store::billing_book` (in `book`) is what billing reads.

mod book;

use std::{
    borrow::Cow,
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    path::Path,
    pin::Pin,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Months, SecondsFormat, Utc};
use chrono_tz::Tz;
use sqlx::{
    Any, AnyConnection, AnyPool, Row, Transaction,
    any::{AnyPoolOptions, AnyRow},
    error::BoxDynError,
    migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator},
};

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::model::{
    Adapter, AdapterFacts, BillingDays, Contract, ContractKind, Counts, Customer, Day, FIRST_DAY,
    Model, ModelChange, Outage, Rental, Role, RoleChange, Suspension, TerminatedBy, Termination,
    add_days, first_excess, parse_day,
};

/// Where the store is unless `--db` or the config's `contracts.url` says otherwise.
pub const DEFAULT_URL: &str = "sqlite:/var/lib/smf-firewall/contracts.db";

/// The provider's time zone unless `contracts init --time-zone` says otherwise.
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::Asia::Tokyo;

/// Art. 23-2: a customer's termination takes effect this many days after the notice at the
/// earliest (the day on which 30 days have passed, the notice day not counted).
pub const CUSTOMER_NOTICE_DAYS: u64 = 30;

/// Art. 22: the provider gives written notice of an abolition this many months ahead.
pub const ABOLITION_NOTICE_MONTHS: u32 = 3;

/// The customer of management contracts made without one: those of stores from before
/// customers existed, and `management add` / `import` entries without `customer`.
pub const DEFAULT_CUSTOMER: &str = "default";
pub const DEFAULT_CUSTOMER_NAME: &str = "Default customer";

/// The longest id or serial, in characters.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a contract store URL; write sqlite:PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("cannot create the directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot reach the contract store {url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error("the contract store {url} is not initialised; run `smf-firewall contracts init` first")]
    NotInitialised { url: String },
    #[error("cannot set up the contract store's schema: {0}")]
    Migrate(#[from] MigrateError),
    #[error("the contract store failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the contract store holds {what} `{value}`, which this version cannot read")]
    Corrupt { what: &'static str, value: String },
    #[error("the store's time zone `{0}` is not an IANA time zone name")]
    BadTimeZone(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// A change that the terms or the data do not allow. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "`{}` is not a valid id or serial: 1 to 64 characters without spaces, control or format characters (NUL, ESC, zero-width, bidi) (Art. 8-1(4): serials are matched exactly)",
        .0.escape_debug()
    )]
    BadName(String),
    #[error(
        "serial `{serial}` differs from the existing adapter `{existing}` only by case; serials are matched exactly (Art. 8-3), so a second one that reads the same is refused"
    )]
    SerialCase { serial: String, existing: String },
    #[error("there is no contract `{0}`")]
    UnknownContract(String),
    #[error("there is no management contract `{0}`")]
    UnknownManagement(String),
    #[error("there is no adapter with serial `{0}`")]
    UnknownAdapter(String),
    #[error("there is no customer `{0}`")]
    UnknownCustomer(String),
    #[error("there is no adapter rental contract `{0}`")]
    UnknownRental(String),
    #[error("contract `{0}` already exists")]
    DuplicateContract(String),
    #[error("adapter `{0}` already exists")]
    DuplicateAdapter(String),
    #[error("customer `{0}` already exists")]
    DuplicateCustomer(String),
    #[error(
        "table 1: adapter `{serial}` is a {model}, which cannot have an Ultra Firewall Option; eligible models: {}",
        Model::names_where(Model::option_eligible)
    )]
    NotEligible { serial: String, model: Model },
    #[error(
        "table 1: {model} is not an Adapter Rental model; rental models: {}",
        Model::names_where(Model::rentable)
    )]
    NotRentable { model: Model },
    #[error(
        "Art. 4-2: adapter `{serial}` already has option contract `{existing}` ({period}); an adapter has one option contract at a time"
    )]
    SecondOption {
        serial: String,
        existing: String,
        period: String,
    },
    #[error(
        "Art. 23-3: the management contract `{management}` of adapter `{serial}` ends on {end}; an option cannot start after it"
    )]
    ManagementEnded {
        serial: String,
        management: String,
        end: Day,
    },
    #[error(
        "Art. 23-3: the adapter rental contract `{rental}` of adapter `{serial}` ends on {end}; an option cannot start after it"
    )]
    RentalEnded {
        serial: String,
        rental: String,
        end: Day,
    },
    #[error(
        "Art. 5-1: on {day} management contract `{management}` would have {registered} registered {role} adapters, more than its {role} count of {count}"
    )]
    CountExceeded {
        management: String,
        day: Day,
        role: Role,
        registered: u32,
        count: u32,
    },
    #[error(
        "adapter `{serial}` cannot be the one rented under `{rental}`, which rents adapter `{rented}`"
    )]
    RentalSerial {
        serial: String,
        rental: String,
        rented: String,
    },
    #[error("{what}: a customer's termination needs the day of the written notice (--notice DATE)")]
    NoticeMissing { what: &'static str },
    #[error(
        "Art. 22: the provider abolishes the service with written notice at least 3 months ahead: a last day of {on} needs notice by {latest}, not {notice}"
    )]
    AbolitionTooLate { on: Day, notice: Day, latest: Day },
    #[error("the notice of {notice} is after the termination day {on}")]
    NoticeAfterTermination { notice: Day, on: Day },
    #[error("contract `{id}` starts on {start}; it cannot end before that ({on})")]
    EndsBeforeStart { id: String, start: Day, on: Day },
    #[error("contract `{id}` is already terminated on {on}")]
    AlreadyTerminated { id: String, on: Day },
    #[error("a suspension cannot end ({to}) before it starts ({from})")]
    SuspensionBackwards { from: Day, to: Day },
    #[error(
        "Art. 23: `--by {0}` is recorded by the store itself when the covering contract ends (Art. 23-3); use customer, provider or abolition"
    )]
    ByCascade(TerminatedBy),
    #[error("{0} is past 9999-12-31, the last day the store can hold")]
    PastLastDay(&'static str),
    #[error(
        "Art. 15-3: the billing start day {billing_start} is given in the acceptance letter, so it cannot be before the acceptance day {accepted}"
    )]
    BillingBeforeAcceptance { accepted: Day, billing_start: Day },
    #[error(
        "rental `{id}` runs {period}; a model change on {on} is outside it (the model at contract time, on its start, is fixed: Art. 16-3)"
    )]
    ModelChangeOutside { id: String, period: String, on: Day },
    #[error("rental `{id}` has not ended; an adapter is returned after its rental ends (Art. 9-3)")]
    RentalNotEnded { id: String },
    #[error("rental `{id}` starts on {start}; its adapter cannot come back before that ({on})")]
    ReturnBeforeStart { id: String, start: Day, on: Day },
    #[error("rental `{id}`'s adapter was already returned on {on}")]
    AlreadyReturned { id: String, on: Day },
    #[error("an outage must end after it starts ({from} to {to})")]
    OutageBackwards { from: String, to: String },
    #[error("management contract `{management}` already has an outage from {from}")]
    DuplicateOutage { management: String, from: String },
    #[error("management contract `{management}` has no outage from {from}")]
    UnknownOutage { management: String, from: String },
    #[error("Art. 21: suspensions are of management and option contracts; `{0}` is a rental")]
    RentalSuspension(String),
    #[error(
        "the store holds contracts whose days are calendar days in {from}; re-zoning it to {to} moves every contract's first and last instant. Pass --force to re-zone anyway"
    )]
    Rezone { from: Tz, to: Tz },
}

/// The two engines, told apart by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn of(url: &str) -> Result<Engine, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    /// The schema in this engine's dialect, embedded in the binary.
    fn migrations(self) -> &'static [(i64, &'static str, &'static str)] {
        match self {
            Engine::Sqlite => &[
                (
                    1,
                    "contracts",
                    include_str!("../migrations/sqlite/0001_contracts.sql"),
                ),
                (
                    2,
                    "terms",
                    include_str!("../migrations/sqlite/0002_terms.sql"),
                ),
                (
                    3,
                    "adapter_tokens",
                    include_str!("../migrations/sqlite/0003_adapter_tokens.sql"),
                ),
            ],
            Engine::Postgres => &[
                (
                    1,
                    "contracts",
                    include_str!("../migrations/postgres/0001_contracts.sql"),
                ),
                (
                    2,
                    "terms",
                    include_str!("../migrations/postgres/0002_terms.sql"),
                ),
                (
                    3,
                    "adapter_tokens",
                    include_str!("../migrations/postgres/0003_adapter_tokens.sql"),
                ),
            ],
        }
    }
}

/// The embedded migrations as a sqlx migration source (no files are read at run time).
#[derive(Debug)]
struct Embedded(Engine);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .0
            .migrations()
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// A connection pool to one store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    url: String,
    /// Set once the schema is known to be current in this process.
    migrated: Arc<AtomicBool>,
}

impl Store {
    /// Creates the store if needed (for SQLite, the file and its directory), applies the
    /// schema, and sets the provider's time zone: `time_zone`, or the default when the store
    /// has none yet. A store that holds contracts keeps its zone unless `force` (re-zoning
    /// moves every contract's first and last instant).
    pub async fn init(url: &str, time_zone: Option<Tz>, force: bool) -> Result<Store, StoreError> {
        let engine = Engine::of(url)?;
        let connect_url = match engine {
            Engine::Sqlite => sqlite_create_url(url)?,
            Engine::Postgres => url.to_string(),
        };
        let store = Store::connect(url, &connect_url, engine, Duration::from_secs(10)).await?;
        store.migrate().await?;
        let current = sqlx::query("SELECT time_zone FROM provider WHERE singleton = 1")
            .fetch_optional(&store.pool)
            .await?
            .map(|row| row.try_get::<String, _>("time_zone"))
            .transpose()?;
        let zone = match (time_zone, current) {
            (None, Some(_)) => return Ok(store),
            (None, None) => DEFAULT_TIME_ZONE,
            (Some(zone), Some(current)) if zone.name() != current && !force => {
                if store.holds_contracts().await? {
                    let from =
                        Tz::from_str(&current).map_err(|_| StoreError::BadTimeZone(current))?;
                    return Err(Refusal::Rezone { from, to: zone }.into());
                }
                zone
            }
            (Some(zone), _) => zone,
        };
        sqlx::query(
            "INSERT INTO provider (singleton, time_zone) VALUES (1, $1) \
             ON CONFLICT (singleton) DO UPDATE SET time_zone = excluded.time_zone",
        )
        .bind(zone.name())
        .execute(&store.pool)
        .await?;
        Ok(store)
    }

    /// Opens an initialised store; fails at once if it cannot be reached. Applies a newer
    /// schema (an upgrade) as `init` does.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let engine = Engine::of(url)?;
        let store = Store::connect(url, url, engine, Duration::from_secs(10)).await?;
        store.time_zone().await?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store that connects on first use, for the daemon: an unreachable store is a failed
    /// check, not a failed start. Each use waits at most `timeout` for a connection.
    pub fn lazy(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        let engine = Engine::of(url)?;
        sqlx::any::install_default_drivers();
        let pool =
            pool_options(timeout)
                .connect_lazy(url)
                .map_err(|source| StoreError::Unreachable {
                    url: url.to_string(),
                    source,
                })?;
        Ok(Store {
            pool,
            engine,
            url: url.to_string(),
            migrated: Arc::default(),
        })
    }

    async fn connect(
        url: &str,
        connect_url: &str,
        engine: Engine,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = pool_options(timeout)
            .connect(connect_url)
            .await
            .map_err(|source| StoreError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        Ok(Store {
            pool,
            engine,
            url: url.to_string(),
            migrated: Arc::default(),
        })
    }

    /// Applies the embedded migrations not applied yet (once per process), then gives
    /// adapters of older stores their case-folded serial.
    async fn migrate(&self) -> Result<(), StoreError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        // Only when something is pending: the migrator creates its own table first, which a
        // read-only role (the grant server's, README "A fleet") may not.
        if self.pending_migrations().await {
            Migrator::new(Embedded(self.engine))
                .await?
                .run(&self.pool)
                .await?;
        }
        let mut conn = self.pool.acquire().await?;
        let unkeyed = ids(
            &mut conn,
            "SELECT serial FROM adapters WHERE serial_key IS NULL",
            None,
        )
        .await?;
        for serial in unkeyed {
            sqlx::query("UPDATE adapters SET serial_key = $1 WHERE serial = $2")
                .bind(serial_key(&serial))
                .bind(&serial)
                .execute(&mut *conn)
                .await?;
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Is a migration of this binary not applied yet (or can the store not tell)?
    async fn pending_migrations(&self) -> bool {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(applied) => applied,
                Err(_) => return true,
            };
        self.engine
            .migrations()
            .iter()
            .any(|(version, _, _)| !applied.contains(version))
    }

    async fn holds_contracts(&self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM contracts) + (SELECT COUNT(*) FROM rentals) AS n",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// For the store's other modules (`tokens`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The provider's time zone, in which instants become contract days.
    pub async fn time_zone(&self) -> Result<Tz, StoreError> {
        let row = sqlx::query("SELECT time_zone FROM provider WHERE singleton = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| match error {
                // The table is missing: the schema was never applied.
                sqlx::Error::Database(_) => StoreError::NotInitialised {
                    url: self.url.clone(),
                },
                source => StoreError::Unreachable {
                    url: self.url.clone(),
                    source,
                },
            })?
            .ok_or_else(|| StoreError::NotInitialised {
                url: self.url.clone(),
            })?;
        let name: String = row.try_get("time_zone")?;
        Tz::from_str(&name).map_err(|_| StoreError::BadTimeZone(name))
    }

    /// Everything the licence decision needs about `serial`, or None for an unknown serial.
    pub async fn facts(&self, serial: &str) -> Result<Option<AdapterFacts>, StoreError> {
        self.time_zone().await?;
        self.migrate().await?;
        let mut conn = self.pool.acquire().await?;
        load_facts(&mut conn, serial).await
    }

    /// Every management contract with its adapters and their options, and every rental, for
    /// `contracts show`.
    pub async fn everything(&self) -> Result<Vec<ManagementView>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let managements = ids(
            &mut conn,
            "SELECT id FROM contracts WHERE kind = 'management' ORDER BY id",
            None,
        )
        .await?;
        let mut views = Vec::with_capacity(managements.len());
        for id in managements {
            let management = load_contract(&mut conn, &id)
                .await?
                .ok_or(Refusal::UnknownManagement(id.clone()))?;
            let (customer, days) = load_terms(&mut conn, &id).await?;
            let serials = ids(
                &mut conn,
                "SELECT serial FROM adapters WHERE management_id = $1 ORDER BY serial",
                Some(&id),
            )
            .await?;
            let mut adapters = Vec::with_capacity(serials.len());
            let mut option_days = HashMap::new();
            for serial in serials {
                if let Some(facts) = load_facts(&mut conn, &serial).await? {
                    for option in &facts.options {
                        let (_, days) = load_terms(&mut conn, &option.id).await?;
                        option_days.insert(option.id.clone(), days);
                    }
                    adapters.push((facts.adapter, facts.options));
                }
            }
            views.push(ManagementView {
                counts: load_counts(&mut conn, &id).await?,
                customer,
                days,
                management,
                adapters,
                option_days,
            });
        }
        Ok(views)
    }

    /// Every customer, by id.
    pub async fn customers(&self) -> Result<Vec<Customer>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_customers(&mut conn).await
    }

    /// Every adapter rental contract, by id.
    pub async fn rentals(&self) -> Result<Vec<Rental>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let ids = ids(&mut conn, "SELECT id FROM rentals ORDER BY id", None).await?;
        let mut rentals = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rental) = load_rental(&mut conn, &id).await? {
                rentals.push(rental);
            }
        }
        Ok(rentals)
    }

    /// Every outage, by management contract and start.
    pub async fn outages(&self) -> Result<Vec<Outage>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_outages(&mut conn).await
    }

    /// What `import` checks its references against before it writes: the ids, serials and
    /// customers the store holds, read in a few queries.
    pub async fn known(&self) -> Result<Known, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut known = Known::default();
        for row in sqlx::query("SELECT id, kind FROM contracts")
            .fetch_all(&mut *conn)
            .await?
        {
            let kind = contract_kind(&row.try_get::<String, _>("kind")?)?;
            known.contracts.insert(row.try_get("id")?, kind);
        }
        for row in sqlx::query("SELECT id, serial FROM rentals")
            .fetch_all(&mut *conn)
            .await?
        {
            let id: String = row.try_get("id")?;
            known.contracts.insert(id.clone(), ContractKind::Rental);
            known.rentals.insert(id, row.try_get("serial")?);
        }
        for row in sqlx::query("SELECT serial, model, management_id, rental_id FROM adapters")
            .fetch_all(&mut *conn)
            .await?
        {
            let serial: String = row.try_get("serial")?;
            known.adapters.insert(
                serial_key(&serial),
                KnownAdapter {
                    model: stored_model(&row)?,
                    management: row.try_get("management_id")?,
                    rental: row.try_get("rental_id")?,
                    serial,
                },
            );
        }
        known.customers = ids(&mut conn, "SELECT id FROM customers", None)
            .await?
            .into_iter()
            .collect();
        for row in sqlx::query("SELECT contract_id, on_day FROM terminations")
            .fetch_all(&mut *conn)
            .await?
        {
            known
                .ends
                .insert(row.try_get("contract_id")?, stored_day(&row, "on_day")?);
        }
        Ok(known)
    }

    /// Starts a transaction; nothing is written unless it is committed.
    pub async fn begin(&self) -> Result<Changes, StoreError> {
        Ok(Changes {
            tx: self.pool.begin().await?,
            engine: self.engine,
            recount: BTreeSet::new(),
        })
    }
}

/// The store's ids and serials, for `import`'s planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Management, option and rental contract ids.
    pub contracts: HashMap<String, ContractKind>,
    /// By case-folded serial ([`serial_key`]).
    pub adapters: HashMap<String, KnownAdapter>,
    pub customers: HashSet<String>,
    /// Rental id to the rented serial.
    pub rentals: HashMap<String, String>,
    /// Contract id to its last day, for terminated contracts.
    pub ends: HashMap<String, Day>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAdapter {
    pub serial: String,
    pub model: Model,
    pub management: String,
    pub rental: Option<String>,
}

/// One connection is enough for a command or a daemon's check, and keeps SQLite simple.
fn pool_options(timeout: Duration) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
}

/// `url` with `mode=rwc`, so that SQLite creates the file, after creating its directory.
fn sqlite_create_url(url: &str) -> Result<String, StoreError> {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.strip_prefix("//").unwrap_or(path);
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(if query.contains("mode=") {
        url.to_string()
    } else if query.is_empty() {
        format!("{url}?mode=rwc")
    } else {
        format!("{url}&mode=rwc")
    })
}

/// One management contract with its terms, adapters, each with its option contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementView {
    pub management: Contract,
    pub customer: Option<String>,
    pub days: BillingDays,
    pub counts: Vec<Counts>,
    pub adapters: Vec<(Adapter, Vec<Contract>)>,
    /// The billing days of each option listed.
    pub option_days: HashMap<String, BillingDays>,
}

/// A new management contract (`contracts management add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewManagement {
    pub id: String,
    /// None: the default customer ([`DEFAULT_CUSTOMER`]).
    pub customer: Option<String>,
    pub start: Day,
    pub days: BillingDays,
}

/// A new adapter registration (`contracts adapter add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdapter {
    pub serial: String,
    pub model: Model,
    pub management: String,
    pub role: Role,
    pub since: Day,
    /// The adapter rental contract it is rented under, if it is rented.
    pub rental: Option<String>,
}

/// A new Ultra Firewall Option contract (`contracts option add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOption {
    pub id: String,
    pub serial: String,
    pub start: Day,
    pub days: BillingDays,
}

/// A new adapter rental contract (`contracts rental add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRental {
    pub id: String,
    pub customer: String,
    pub serial: String,
    /// The model at contract time (Art. 16-3).
    pub model: Model,
    pub start: Day,
    pub days: BillingDays,
}

/// What a termination did: the day it took effect and the contracts that ended with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub termination: Termination,
    /// The day asked for, when Art. 23-2 moved it to `termination.on`.
    pub moved_from: Option<Day>,
    /// Art. 23-3: the options that ended the same day; `true` for one cancelled before it
    /// started.
    pub cascaded: Vec<(String, bool)>,
}

impl Ended {
    /// `effective 2026-09-02 (Art. 23-2: 30 days after the notice of 2026-08-03)`, when the
    /// customer's notice was shorter than 30 days.
    pub fn moved_note(&self) -> Option<String> {
        self.moved_from?;
        let notice = self.termination.notice?;
        Some(format!(
            "effective {} (Art. 23-2: 30 days after the notice of {notice})",
            self.termination.on
        ))
    }

    /// One line per option that ended with the contract (Art. 23-3).
    pub fn cascade_notes(&self) -> Vec<String> {
        self.cascaded
            .iter()
            .map(|(id, before_start)| {
                if *before_start {
                    format!(
                        "Art. 23-3: option {id} is cancelled before its start, on {}",
                        self.termination.on
                    )
                } else {
                    format!(
                        "Art. 23-3: option {id} ends with it on {}",
                        self.termination.on
                    )
                }
            })
            .collect()
    }
}

/// Changes in one transaction: each method checks the rules and refuses with a [`Refusal`]
/// before writing. Dropped without [`Changes::commit`], nothing is written.
pub struct Changes {
    tx: Transaction<'static, Any>,
    engine: Engine,
    /// Management contracts whose adapters or counts changed: Art. 5-1 is checked for each
    /// once, at commit, so that a long import checks each contract once.
    recount: BTreeSet<String>,
}

impl Changes {
    /// Checks Art. 5-1 for every management contract changed, then commits.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.check_counts().await?;
        Ok(self.tx.commit().await?)
    }

    /// Art. 5-1 for every management contract changed so far: on no day do its registered
    /// Entry (Standby) adapters exceed that day's count.
    pub async fn check_counts(&mut self) -> Result<(), StoreError> {
        for management in std::mem::take(&mut self.recount) {
            let counts = load_counts(&mut self.tx, &management).await?;
            if counts.is_empty() {
                continue;
            }
            let adapters = load_adapters_of(&mut self.tx, &management).await?;
            if let Some(excess) = first_excess(&counts, &adapters) {
                return Err(Refusal::CountExceeded {
                    management,
                    day: excess.day,
                    role: excess.role,
                    registered: excess.registered,
                    count: excess.count,
                }
                .into());
            }
        }
        Ok(())
    }

    pub async fn add_customer(&mut self, customer: &Customer) -> Result<(), StoreError> {
        check_name(&customer.id)?;
        if customer_exists(&mut self.tx, &customer.id).await? {
            return Err(Refusal::DuplicateCustomer(customer.id.clone()).into());
        }
        sqlx::query("INSERT INTO customers (id, name, bill_to) VALUES ($1, $2, $3)")
            .bind(&customer.id)
            .bind(&customer.name)
            .bind(customer.bill_to.as_deref())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// A management contract of the default customer, accepted and billed from `start`.
    pub async fn add_management(&mut self, id: &str, start: Day) -> Result<(), StoreError> {
        self.add_management_contract(&NewManagement {
            id: id.to_string(),
            customer: None,
            start,
            days: BillingDays::from_start(start),
        })
        .await
    }

    pub async fn add_management_contract(&mut self, new: &NewManagement) -> Result<(), StoreError> {
        check_name(&new.id)?;
        check_days(new.days)?;
        self.id_is_free(&new.id).await?;
        let customer = self.customer_or_default(new.customer.as_deref()).await?;
        sqlx::query(
            "INSERT INTO contracts (id, kind, start_day, customer_id, accepted_day, billing_start_day) \
             VALUES ($1, 'management', $2, $3, $4, $5)",
        )
        .bind(&new.id)
        .bind(day_text(new.start))
        .bind(customer)
        .bind(day_text(new.days.accepted))
        .bind(day_text(new.days.billing_start))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Art. 5-1: from `counts.from`, management contract `id` is for this many Entry and
    /// Standby adapters. The same day again replaces that day's counts.
    pub async fn set_counts(&mut self, id: &str, counts: Counts) -> Result<(), StoreError> {
        self.management(id).await?;
        sqlx::query(
            "INSERT INTO management_counts (management_id, from_day, entries, standbys) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (management_id, from_day) \
             DO UPDATE SET entries = excluded.entries, standbys = excluded.standbys",
        )
        .bind(id)
        .bind(day_text(counts.from))
        .bind(i64::from(counts.entries))
        .bind(i64::from(counts.standbys))
        .execute(&mut *self.tx)
        .await?;
        self.recount.insert(id.to_string());
        Ok(())
    }

    pub async fn add_adapter(&mut self, new: &NewAdapter) -> Result<(), StoreError> {
        check_name(&new.serial)?;
        if load_adapter(&mut self.tx, &new.serial).await?.is_some() {
            return Err(Refusal::DuplicateAdapter(new.serial.clone()).into());
        }
        let same = ids(
            &mut self.tx,
            "SELECT serial FROM adapters WHERE serial_key = $1",
            Some(&serial_key(&new.serial)),
        )
        .await?;
        if let Some(existing) = same.into_iter().next() {
            return Err(Refusal::SerialCase {
                serial: new.serial.clone(),
                existing,
            }
            .into());
        }
        self.management(&new.management).await?;
        if let Some(rental) = &new.rental {
            let rented = self.rental(rental).await?;
            if rented.serial != new.serial {
                return Err(Refusal::RentalSerial {
                    serial: new.serial.clone(),
                    rental: rental.clone(),
                    rented: rented.serial,
                }
                .into());
            }
        }
        sqlx::query(
            "INSERT INTO adapters (serial, model, management_id, rental_id, serial_key) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&new.serial)
        .bind(new.model.name())
        .bind(&new.management)
        .bind(new.rental.as_deref())
        .bind(serial_key(&new.serial))
        .execute(&mut *self.tx)
        .await?;
        self.recount.insert(new.management.clone());
        self.record_role(&new.serial, new.role, new.since).await
    }

    /// From `on`, the adapter has `role` (Art. 5-1: entries and standbys may change).
    pub async fn set_role(&mut self, serial: &str, role: Role, on: Day) -> Result<(), StoreError> {
        let adapter = self.adapter(serial).await?;
        self.recount.insert(adapter.management);
        self.record_role(serial, role, on).await
    }

    async fn record_role(&mut self, serial: &str, role: Role, on: Day) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO adapter_roles (serial, since_day, role) VALUES ($1, $2, $3) \
             ON CONFLICT (serial, since_day) DO UPDATE SET role = excluded.role",
        )
        .bind(serial)
        .bind(day_text(on))
        .bind(role.name())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// An option accepted and billed from `start`.
    pub async fn add_option(
        &mut self,
        id: &str,
        serial: &str,
        start: Day,
    ) -> Result<(), StoreError> {
        self.add_option_contract(&NewOption {
            id: id.to_string(),
            serial: serial.to_string(),
            start,
            days: BillingDays::from_start(start),
        })
        .await
    }

    /// A new Ultra Firewall Option contract for the adapter `serial`, which it covers for life
    /// (Art. 5-2). Refused for an ineligible model (table 1), while another option of the
    /// adapter runs on or after `start` (Art. 4-2), and after the adapter's management or
    /// rental contract has ended (Art. 23-3).
    pub async fn add_option_contract(&mut self, new: &NewOption) -> Result<(), StoreError> {
        let (id, serial, start) = (new.id.as_str(), new.serial.as_str(), new.start);
        check_name(id)?;
        check_days(new.days)?;
        self.id_is_free(id).await?;
        // Holds the adapter's row until commit, so that two writers cannot both add one.
        self.lock_adapter(serial).await?;
        let facts = load_facts(&mut self.tx, serial)
            .await?
            .ok_or_else(|| Refusal::UnknownAdapter(serial.to_string()))?;
        if !facts.adapter.model.option_eligible() {
            return Err(Refusal::NotEligible {
                serial: serial.to_string(),
                model: facts.adapter.model,
            }
            .into());
        }
        if let Some(end) = facts.management.end().filter(|end| start > *end) {
            return Err(Refusal::ManagementEnded {
                serial: serial.to_string(),
                management: facts.management.id,
                end,
            }
            .into());
        }
        if let Some(rental) = &facts.rental
            && let Some(end) = rental.end().filter(|end| start > *end)
        {
            return Err(Refusal::RentalEnded {
                serial: serial.to_string(),
                rental: rental.id.clone(),
                end,
            }
            .into());
        }
        if let Some(existing) = facts.options.iter().find(|o| {
            o.cancelled_before_start().is_none() && o.end().is_none_or(|end| end >= start)
        }) {
            return Err(Refusal::SecondOption {
                serial: serial.to_string(),
                existing: existing.id.clone(),
                period: period(existing),
            }
            .into());
        }
        sqlx::query(
            "INSERT INTO contracts (id, kind, start_day, serial, accepted_day, billing_start_day) \
             VALUES ($1, 'option', $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(day_text(start))
        .bind(serial)
        .bind(day_text(new.days.accepted))
        .bind(day_text(new.days.billing_start))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// A new adapter rental contract (Art. 4-1) for a rental model (table 1).
    pub async fn add_rental(&mut self, new: &NewRental) -> Result<(), StoreError> {
        check_name(&new.id)?;
        check_name(&new.serial)?;
        check_days(new.days)?;
        if !new.model.rentable() {
            return Err(Refusal::NotRentable { model: new.model }.into());
        }
        self.id_is_free(&new.id).await?;
        if !customer_exists(&mut self.tx, &new.customer).await? {
            return Err(Refusal::UnknownCustomer(new.customer.clone()).into());
        }
        sqlx::query(
            "INSERT INTO rentals (id, customer_id, serial, start_day, accepted_day, billing_start_day) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&new.id)
        .bind(&new.customer)
        .bind(&new.serial)
        .bind(day_text(new.start))
        .bind(day_text(new.days.accepted))
        .bind(day_text(new.days.billing_start))
        .execute(&mut *self.tx)
        .await?;
        self.record_model(&new.id, new.start, new.model).await
    }

    /// From `change.on`, the rented adapter is another model (within the rental's term, after
    /// its first day: the model at contract time is fixed, Art. 16-3).
    pub async fn change_rental_model(
        &mut self,
        id: &str,
        change: ModelChange,
    ) -> Result<(), StoreError> {
        let rental = self.rental(id).await?;
        if !change.model.rentable() {
            return Err(Refusal::NotRentable {
                model: change.model,
            }
            .into());
        }
        let contract = &rental.contract;
        if change.on <= contract.start || contract.end().is_some_and(|end| change.on > end) {
            return Err(Refusal::ModelChangeOutside {
                id: id.to_string(),
                period: period(contract),
                on: change.on,
            }
            .into());
        }
        self.record_model(id, change.on, change.model).await
    }

    async fn record_model(&mut self, id: &str, on: Day, model: Model) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rental_models (rental_id, on_day, model) VALUES ($1, $2, $3) \
             ON CONFLICT (rental_id, on_day) DO UPDATE SET model = excluded.model",
        )
        .bind(id)
        .bind(day_text(on))
        .bind(model.name())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Art. 9-3: the rented adapter came back on `on` (once the rental has ended; late
    /// returns are recorded too, billing warns about them).
    pub async fn return_rental(&mut self, id: &str, on: Day) -> Result<(), StoreError> {
        let rental = self.rental(id).await?;
        if let Some(returned) = rental.returned {
            return Err(Refusal::AlreadyReturned {
                id: id.to_string(),
                on: returned,
            }
            .into());
        }
        if rental.contract.termination.is_none() {
            return Err(Refusal::RentalNotEnded { id: id.to_string() }.into());
        }
        if on < rental.contract.start {
            return Err(Refusal::ReturnBeforeStart {
                id: id.to_string(),
                start: rental.contract.start,
                on,
            }
            .into());
        }
        sqlx::query("UPDATE rentals SET returned_day = $1 WHERE id = $2")
            .bind(day_text(on))
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Art. 26: an outage of management contract `outage.management`'s service.
    pub async fn add_outage(&mut self, outage: &Outage) -> Result<(), StoreError> {
        self.management(&outage.management).await?;
        let (from, to) = (instant_text(outage.from), instant_text(outage.to));
        if outage.to <= outage.from {
            return Err(Refusal::OutageBackwards { from, to }.into());
        }
        if self.outage_exists(&outage.management, &from).await? {
            return Err(Refusal::DuplicateOutage {
                management: outage.management.clone(),
                from,
            }
            .into());
        }
        sqlx::query(
            "INSERT INTO outages (management_id, from_instant, to_instant, wholly_unusable, \
             provider_fault, claimed_day) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&outage.management)
        .bind(from)
        .bind(to)
        .bind(i64::from(outage.wholly_unusable))
        .bind(i64::from(outage.provider_fault))
        .bind(outage.claimed.map(day_text))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Art. 26: the customer claimed the reduction for the outage that began at `from`.
    pub async fn claim_outage(
        &mut self,
        management: &str,
        from: DateTime<Utc>,
        on: Day,
    ) -> Result<(), StoreError> {
        let from = instant_text(from);
        if !self.outage_exists(management, &from).await? {
            return Err(Refusal::UnknownOutage {
                management: management.to_string(),
                from,
            }
            .into());
        }
        sqlx::query(
            "UPDATE outages SET claimed_day = $1 WHERE management_id = $2 AND from_instant = $3",
        )
        .bind(day_text(on))
        .bind(management)
        .bind(from)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn outage_exists(&mut self, management: &str, from: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT management_id FROM outages WHERE management_id = $1 AND from_instant = $2",
        )
        .bind(management)
        .bind(from)
        .fetch_optional(&mut *self.tx)
        .await?
        .is_some())
    }

    /// Art. 21: suspends contract `id` (management or option) for the given days. A second
    /// suspension with the same first day replaces the first: that is how an open-ended
    /// suspension is given its last day.
    pub async fn suspend(&mut self, id: &str, suspension: Suspension) -> Result<(), StoreError> {
        if let Some(to) = suspension.to.filter(|to| *to < suspension.from) {
            return Err(Refusal::SuspensionBackwards {
                from: suspension.from,
                to,
            }
            .into());
        }
        if self.contract(id).await?.kind == ContractKind::Rental {
            return Err(Refusal::RentalSuspension(id.to_string()).into());
        }
        sqlx::query(
            "INSERT INTO suspensions (contract_id, from_day, to_day) VALUES ($1, $2, $3) \
             ON CONFLICT (contract_id, from_day) DO UPDATE SET to_day = excluded.to_day",
        )
        .bind(id)
        .bind(day_text(suspension.from))
        .bind(suspension.to.map(day_text))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Art. 22, 23: ends contract `id` (management, option or rental) at the end of
    /// `termination.on`, or, for a customer's notice shorter than 30 days, at the end of the
    /// day 30 days after it (Art. 23-2). Ending a management or rental contract ends, the
    /// same day, every option of its adapters that would run longer, and cancels one that
    /// would start later (Art. 23-3).
    pub async fn terminate(
        &mut self,
        id: &str,
        termination: Termination,
    ) -> Result<Ended, StoreError> {
        let contract = self.contract(id).await?;
        let effective = check_termination(&contract, &termination)?;
        write_termination(&mut self.tx, id, &effective).await?;
        let cascade = match contract.kind {
            ContractKind::Option => None,
            ContractKind::Management => Some((
                "SELECT c.id FROM contracts c JOIN adapters a ON c.serial = a.serial \
                 WHERE a.management_id = $1 ORDER BY c.id",
                TerminatedBy::ManagementEnded,
            )),
            ContractKind::Rental => Some((
                "SELECT c.id FROM contracts c JOIN adapters a ON c.serial = a.serial \
                 WHERE a.rental_id = $1 ORDER BY c.id",
                TerminatedBy::RentalEnded,
            )),
        };
        let mut cascaded = Vec::new();
        if let Some((sql, by)) = cascade {
            let ended = Termination {
                on: effective.on,
                by,
                notice: None,
            };
            for option_id in ids(&mut self.tx, sql, Some(id)).await? {
                let option = self.contract(&option_id).await?;
                // One that ends sooner keeps its end; one that starts later is cancelled.
                if option.end().is_none_or(|end| end > ended.on) {
                    write_termination(&mut self.tx, &option_id, &ended).await?;
                    cascaded.push((option_id, option.start > ended.on));
                }
            }
        }
        Ok(Ended {
            moved_from: (effective.on != termination.on).then_some(termination.on),
            termination: effective,
            cascaded,
        })
    }

    async fn id_is_free(&mut self, id: &str) -> Result<(), StoreError> {
        if load_contract(&mut self.tx, id).await?.is_some() {
            return Err(Refusal::DuplicateContract(id.to_string()).into());
        }
        Ok(())
    }

    /// The customer given, or the default customer (created when first needed).
    async fn customer_or_default(&mut self, customer: Option<&str>) -> Result<String, StoreError> {
        match customer {
            Some(id) if customer_exists(&mut self.tx, id).await? => Ok(id.to_string()),
            Some(id) => Err(Refusal::UnknownCustomer(id.to_string()).into()),
            None => {
                sqlx::query(
                    "INSERT INTO customers (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                )
                .bind(DEFAULT_CUSTOMER)
                .bind(DEFAULT_CUSTOMER_NAME)
                .execute(&mut *self.tx)
                .await?;
                Ok(DEFAULT_CUSTOMER.to_string())
            }
        }
    }

    async fn contract(&mut self, id: &str) -> Result<Contract, StoreError> {
        load_contract(&mut self.tx, id)
            .await?
            .ok_or_else(|| Refusal::UnknownContract(id.to_string()).into())
    }

    async fn management(&mut self, id: &str) -> Result<Contract, StoreError> {
        load_contract(&mut self.tx, id)
            .await?
            .filter(|c| c.kind == ContractKind::Management)
            .ok_or_else(|| Refusal::UnknownManagement(id.to_string()).into())
    }

    async fn rental(&mut self, id: &str) -> Result<Rental, StoreError> {
        load_rental(&mut self.tx, id)
            .await?
            .ok_or_else(|| Refusal::UnknownRental(id.to_string()).into())
    }

    async fn adapter(&mut self, serial: &str) -> Result<Adapter, StoreError> {
        load_adapter(&mut self.tx, serial)
            .await?
            .ok_or_else(|| Refusal::UnknownAdapter(serial.to_string()).into())
    }

    async fn lock_adapter(&mut self, serial: &str) -> Result<(), StoreError> {
        // SQLite has one writer at a time already; PostgreSQL needs the row lock.
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT serial FROM adapters WHERE serial = $1 FOR UPDATE")
                .bind(serial)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }
}

/// The rules of Art. 22 and 23 that a termination must follow; the termination as it takes
/// effect (Art. 23-2 moves a customer's short notice to 30 days after it).
fn check_termination(
    contract: &Contract,
    termination: &Termination,
) -> Result<Termination, Refusal> {
    if let Some(t) = contract.termination {
        return Err(Refusal::AlreadyTerminated {
            id: contract.id.clone(),
            on: t.on,
        });
    }
    if termination.on < contract.start {
        return Err(Refusal::EndsBeforeStart {
            id: contract.id.clone(),
            start: contract.start,
            on: termination.on,
        });
    }
    match termination.by {
        TerminatedBy::Customer => {
            let notice = termination
                .notice
                .ok_or(Refusal::NoticeMissing { what: "Art. 23-2" })?;
            let on = customer_termination_day(termination.on, notice)
                .ok_or(Refusal::PastLastDay("30 days after the notice"))?;
            Ok(Termination { on, ..*termination })
        }
        TerminatedBy::Provider => {
            if let Some(notice) = termination.notice.filter(|n| *n > termination.on) {
                return Err(Refusal::NoticeAfterTermination {
                    notice,
                    on: termination.on,
                });
            }
            Ok(*termination)
        }
        TerminatedBy::Abolition => {
            let notice = termination
                .notice
                .ok_or(Refusal::NoticeMissing { what: "Art. 22" })?;
            let latest = latest_abolition_notice(termination.on);
            if notice > latest {
                return Err(Refusal::AbolitionTooLate {
                    on: termination.on,
                    notice,
                    latest,
                });
            }
            Ok(*termination)
        }
        by @ (TerminatedBy::ManagementEnded | TerminatedBy::RentalEnded) => {
            Err(Refusal::ByCascade(by))
        }
    }
}

/// Art. 23-2: a customer's termination asked for `on` with notice on `notice` takes effect
/// on max(on, notice + 30 days); None past the last day the store holds.
pub fn customer_termination_day(on: Day, notice: Day) -> Option<Day> {
    Some(on.max(add_days(notice, CUSTOMER_NOTICE_DAYS)?))
}

/// Art. 22: the last day on which the provider can give written notice of an abolition whose
/// last day of service is `on`: 3 months before (a month without that day: its last day).
pub fn latest_abolition_notice(on: Day) -> Day {
    on.checked_sub_months(Months::new(ABOLITION_NOTICE_MONTHS))
        .unwrap_or(FIRST_DAY)
}

/// Art. 15-3: the acceptance letter, which names the billing start day, follows the acceptance.
fn check_days(days: BillingDays) -> Result<(), Refusal> {
    if days.billing_start < days.accepted {
        return Err(Refusal::BillingBeforeAcceptance {
            accepted: days.accepted,
            billing_start: days.billing_start,
        });
    }
    Ok(())
}

/// Ids and serials: 1 to 64 characters, no whitespace, no control characters (NUL, ESC) and
/// no format characters (zero-width, bidi controls: Unicode category Cf), which would make
/// two serials look the same.
pub fn check_name(name: &str) -> Result<(), Refusal> {
    let bad = |c: char| {
        c.is_whitespace() || c.is_control() || c.general_category() == GeneralCategory::Format
    };
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(bad) {
        return Err(Refusal::BadName(name.to_string()));
    }
    Ok(())
}

/// A serial folded for "differs only by case" (Unicode lower case).
pub fn serial_key(serial: &str) -> String {
    serial.to_lowercase()
}

async fn customer_exists(conn: &mut AnyConnection, id: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query("SELECT id FROM customers WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// Writes (or, for Art. 23-3, replaces) a contract's termination.
async fn write_termination(
    conn: &mut AnyConnection,
    id: &str,
    termination: &Termination,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO terminations (contract_id, on_day, ended_by, notice_day) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (contract_id) DO UPDATE SET on_day = excluded.on_day, \
         ended_by = excluded.ended_by, notice_day = excluded.notice_day",
    )
    .bind(id)
    .bind(day_text(termination.on))
    .bind(termination.by.name())
    .bind(termination.notice.map(day_text))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) fn day_text(day: Day) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Instants are kept in UTC, RFC 3339.
fn instant_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// "from 2025-04-01, not terminated", "2025-04-01 to 2025-06-30", or for an option cancelled
/// before its start "from 2025-09-01, cancelled before its start on 2025-08-31".
fn period(contract: &Contract) -> String {
    match (contract.cancelled_before_start(), contract.end()) {
        (Some(on), _) => format!(
            "from {}, cancelled before its start on {on}",
            contract.start
        ),
        (None, Some(end)) => format!("{} to {end}", contract.start),
        (None, None) => format!("from {}, not terminated", contract.start),
    }
}

async fn ids(
    conn: &mut AnyConnection,
    sql: &str,
    arg: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut query = sqlx::query(sql);
    if let Some(arg) = arg {
        query = query.bind(arg);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String, _>(0)?))
        .collect()
}

async fn load_facts(
    conn: &mut AnyConnection,
    serial: &str,
) -> Result<Option<AdapterFacts>, StoreError> {
    let Some(adapter) = load_adapter(conn, serial).await? else {
        return Ok(None);
    };
    let management = load_contract(conn, &adapter.management)
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            what: "a management reference",
            value: adapter.management.clone(),
        })?;
    let rental = match &adapter.rental {
        Some(id) => Some(
            load_contract(conn, id)
                .await?
                .ok_or_else(|| StoreError::Corrupt {
                    what: "a rental reference",
                    value: id.clone(),
                })?,
        ),
        None => None,
    };
    let option_ids = ids(
        conn,
        "SELECT id FROM contracts WHERE kind = 'option' AND serial = $1 ORDER BY start_day, id",
        Some(serial),
    )
    .await?;
    let mut options = Vec::with_capacity(option_ids.len());
    for id in option_ids {
        if let Some(option) = load_contract(conn, &id).await? {
            options.push(option);
        }
    }
    Ok(Some(AdapterFacts {
        adapter,
        management,
        rental,
        options,
    }))
}

async fn load_adapter(
    conn: &mut AnyConnection,
    serial: &str,
) -> Result<Option<Adapter>, StoreError> {
    let Some(row) =
        sqlx::query("SELECT model, management_id, rental_id FROM adapters WHERE serial = $1")
            .bind(serial)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT since_day, role FROM adapter_roles WHERE serial = $1 ORDER BY since_day",
    )
    .bind(serial)
    .fetch_all(&mut *conn)
    .await?;
    let roles = rows.iter().map(role_change).collect::<Result<_, _>>()?;
    Ok(Some(Adapter {
        serial: serial.to_string(),
        model: stored_model(&row)?,
        management: row.try_get("management_id")?,
        rental: row.try_get("rental_id")?,
        roles,
    }))
}

/// Every adapter registered under `management`, with its roles, in two queries.
async fn load_adapters_of(
    conn: &mut AnyConnection,
    management: &str,
) -> Result<Vec<Adapter>, StoreError> {
    let rows = sqlx::query(
        "SELECT serial, model, rental_id FROM adapters WHERE management_id = $1 ORDER BY serial",
    )
    .bind(management)
    .fetch_all(&mut *conn)
    .await?;
    let mut adapters = rows
        .iter()
        .map(|row| {
            Ok(Adapter {
                serial: row.try_get("serial")?,
                model: stored_model(row)?,
                management: management.to_string(),
                rental: row.try_get("rental_id")?,
                roles: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let rows = sqlx::query(
        "SELECT r.serial, r.since_day, r.role FROM adapter_roles r JOIN adapters a ON a.serial = r.serial \
         WHERE a.management_id = $1 ORDER BY r.serial, r.since_day",
    )
    .bind(management)
    .fetch_all(&mut *conn)
    .await?;
    let mut index: HashMap<String, usize> = HashMap::new();
    for (at, adapter) in adapters.iter().enumerate() {
        index.insert(adapter.serial.clone(), at);
    }
    for row in &rows {
        let serial: String = row.try_get("serial")?;
        if let Some(at) = index.get(&serial) {
            adapters[*at].roles.push(role_change(row)?);
        }
    }
    Ok(adapters)
}

fn role_change(row: &AnyRow) -> Result<RoleChange, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(RoleChange {
        since: stored_day(row, "since_day")?,
        role: Role::from_str(&role).map_err(|_| StoreError::Corrupt {
            what: "role",
            value: role,
        })?,
    })
}

fn stored_model(row: &AnyRow) -> Result<Model, StoreError> {
    let model: String = row.try_get("model")?;
    Model::from_str(&model).map_err(|_| StoreError::Corrupt {
        what: "model",
        value: model,
    })
}

pub(crate) fn contract_kind(text: &str) -> Result<ContractKind, StoreError> {
    match text {
        "management" => Ok(ContractKind::Management),
        "option" => Ok(ContractKind::Option),
        other => Err(StoreError::Corrupt {
            what: "contract kind",
            value: other.to_string(),
        }),
    }
}

/// A management, option or rental contract with its suspensions and termination.
async fn load_contract(conn: &mut AnyConnection, id: &str) -> Result<Option<Contract>, StoreError> {
    let row = sqlx::query(
        "SELECT c.kind, c.start_day, t.on_day, t.ended_by, t.notice_day FROM contracts c \
         LEFT JOIN terminations t ON t.contract_id = c.id WHERE c.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let (row, kind) = match row {
        Some(row) => {
            let kind = contract_kind(&row.try_get::<String, _>("kind")?)?;
            (row, kind)
        }
        None => {
            let Some(row) = sqlx::query(
                "SELECT r.start_day, t.on_day, t.ended_by, t.notice_day FROM rentals r \
                 LEFT JOIN terminations t ON t.contract_id = r.id WHERE r.id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            else {
                return Ok(None);
            };
            (row, ContractKind::Rental)
        }
    };
    let suspensions = if kind == ContractKind::Rental {
        Vec::new()
    } else {
        let rows = sqlx::query(
            "SELECT from_day, to_day FROM suspensions WHERE contract_id = $1 ORDER BY from_day",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(suspension).collect::<Result<_, _>>()?
    };
    Ok(Some(Contract {
        id: id.to_string(),
        kind,
        start: stored_day(&row, "start_day")?,
        suspensions,
        termination: termination(&row)?,
    }))
}

fn suspension(row: &AnyRow) -> Result<Suspension, StoreError> {
    Ok(Suspension {
        from: stored_day(row, "from_day")?,
        to: optional_day(row, "to_day")?,
    })
}

/// The termination of a row with `on_day`, `ended_by` and `notice_day` (NULL: none).
pub(crate) fn termination(row: &AnyRow) -> Result<Option<Termination>, StoreError> {
    let Some(by) = row.try_get::<Option<String>, _>("ended_by")? else {
        return Ok(None);
    };
    Ok(Some(Termination {
        on: stored_day(row, "on_day")?,
        by: TerminatedBy::from_name(&by).ok_or(StoreError::Corrupt {
            what: "ended_by",
            value: by,
        })?,
        notice: optional_day(row, "notice_day")?,
    }))
}

/// A management or option contract's customer (managements only) and billing days (the start
/// day where rows from before 0002 have none).
async fn load_terms(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<(Option<String>, BillingDays), StoreError> {
    let row = sqlx::query(
        "SELECT start_day, customer_id, accepted_day, billing_start_day FROM contracts WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("customer_id")?, billing_days(&row)?))
}

fn billing_days(row: &AnyRow) -> Result<BillingDays, StoreError> {
    let start = stored_day(row, "start_day")?;
    Ok(BillingDays {
        accepted: optional_day(row, "accepted_day")?.unwrap_or(start),
        billing_start: optional_day(row, "billing_start_day")?.unwrap_or(start),
    })
}

async fn load_counts(
    conn: &mut AnyConnection,
    management: &str,
) -> Result<Vec<Counts>, StoreError> {
    let rows = sqlx::query(
        "SELECT from_day, entries, standbys FROM management_counts WHERE management_id = $1 \
         ORDER BY from_day",
    )
    .bind(management)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(counts).collect()
}

fn counts(row: &AnyRow) -> Result<Counts, StoreError> {
    let number = |column: &'static str| -> Result<u32, StoreError> {
        let n: i64 = row.try_get(column)?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt {
            what: column,
            value: n.to_string(),
        })
    };
    Ok(Counts {
        from: stored_day(row, "from_day")?,
        entries: number("entries")?,
        standbys: number("standbys")?,
    })
}

async fn load_customers(conn: &mut AnyConnection) -> Result<Vec<Customer>, StoreError> {
    let rows = sqlx::query("SELECT id, name, bill_to FROM customers ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Customer {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                bill_to: row.try_get("bill_to")?,
            })
        })
        .collect()
}

async fn load_rental(conn: &mut AnyConnection, id: &str) -> Result<Option<Rental>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT customer_id, serial, start_day, accepted_day, billing_start_day, returned_day \
         FROM rentals WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let contract = load_contract(conn, id)
        .await?
        .ok_or_else(|| Refusal::UnknownRental(id.to_string()))?;
    let rows =
        sqlx::query("SELECT on_day, model FROM rental_models WHERE rental_id = $1 ORDER BY on_day")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let models = rows
        .iter()
        .map(|row| {
            Ok(ModelChange {
                on: stored_day(row, "on_day")?,
                model: stored_model(row)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if models.is_empty() {
        return Err(StoreError::Corrupt {
            what: "a rental without its model",
            value: id.to_string(),
        });
    }
    Ok(Some(Rental {
        contract,
        customer: row.try_get("customer_id")?,
        serial: row.try_get("serial")?,
        models,
        days: billing_days(&row)?,
        returned: optional_day(&row, "returned_day")?,
    }))
}

async fn load_outages(conn: &mut AnyConnection) -> Result<Vec<Outage>, StoreError> {
    let rows = sqlx::query(
        "SELECT management_id, from_instant, to_instant, wholly_unusable, provider_fault, \
         claimed_day FROM outages ORDER BY management_id, from_instant",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Outage {
                management: row.try_get("management_id")?,
                from: stored_instant(row, "from_instant")?,
                to: stored_instant(row, "to_instant")?,
                wholly_unusable: row.try_get::<i64, _>("wholly_unusable")? != 0,
                provider_fault: row.try_get::<i64, _>("provider_fault")? != 0,
                claimed: optional_day(row, "claimed_day")?,
            })
        })
        .collect()
}

fn stored_instant(row: &AnyRow, column: &'static str) -> Result<DateTime<Utc>, StoreError> {
    let text: String = row.try_get(column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            what: column,
            value: text,
        })
}

pub(crate) fn stored_day(row: &AnyRow, column: &'static str) -> Result<Day, StoreError> {
    let text: String = row.try_get(column)?;
    parse_day(&text).map_err(|_| StoreError::Corrupt {
        what: column,
        value: text,
    })
}

pub(crate) fn optional_day(row: &AnyRow, column: &'static str) -> Result<Option<Day>, StoreError> {
    match row.try_get::<Option<String>, _>(column)? {
        None => Ok(None),
        Some(text) => parse_day(&text).map(Some).map_err(|_| StoreError::Corrupt {
            what: column,
            value: text,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Day {
        parse_day(text).unwrap()
    }

    fn option(start: &str) -> Contract {
        Contract {
            id: "OPT-1".into(),
            kind: ContractKind::Option,
            start: day(start),
            suspensions: Vec::new(),
            termination: None,
        }
    }

    fn by(by: TerminatedBy, on: &str, notice: Option<&str>) -> Termination {
        Termination {
            on: day(on),
            by,
            notice: notice.map(day),
        }
    }

    // Each row: the termination asked for, the day it takes effect or the refusal. Art. 23-2
    // counts 30 days from the notice, the notice day not counted: noticed 2025-04-01, effective
    // 2025-05-01 at the earliest; a shorter notice is moved there. Art. 22: an abolition needs
    // notice 3 months before the last day.
    #[test]
    fn terminations_follow_art_22_and_23() {
        use TerminatedBy::{Abolition, Customer, ManagementEnded, Provider, RentalEnded};
        let cases: Vec<(Termination, Result<&str, Refusal>)> = vec![
            (
                by(Customer, "2025-05-01", Some("2025-04-01")),
                Ok("2025-05-01"),
            ), // 23-2: day 30
            (
                by(Customer, "2025-06-15", Some("2025-04-01")),
                Ok("2025-06-15"),
            ), // 23-2: more
            (
                by(Customer, "2025-04-30", Some("2025-04-01")),
                Ok("2025-05-01"),
            ), // 23-2: moved
            (
                by(Customer, "2025-01-01", Some("2025-04-01")),
                Ok("2025-05-01"),
            ), // 23-2: moved
            (
                by(Customer, "2025-05-01", None), // 23-2: written notice
                Err(Refusal::NoticeMissing { what: "Art. 23-2" }),
            ),
            (
                by(Customer, "9999-12-31", Some("9999-12-15")), // past the last day
                Err(Refusal::PastLastDay("30 days after the notice")),
            ),
            (by(Provider, "2025-01-01", None), Ok("2025-01-01")), // 23-1: the date given
            (
                by(Provider, "2025-01-01", Some("2025-01-01")),
                Ok("2025-01-01"),
            ),
            (
                by(Provider, "2024-12-31", None), // before the start
                Err(Refusal::EndsBeforeStart {
                    id: "OPT-1".into(),
                    start: day("2025-01-01"),
                    on: day("2024-12-31"),
                }),
            ),
            (
                by(Provider, "2025-02-01", Some("2025-02-02")),
                Err(Refusal::NoticeAfterTermination {
                    notice: day("2025-02-02"),
                    on: day("2025-02-01"),
                }),
            ),
            (
                by(Abolition, "2025-06-30", Some("2025-03-30")),
                Ok("2025-06-30"),
            ), // 22: 3 months
            (
                by(Abolition, "2025-05-31", Some("2025-02-28")),
                Ok("2025-05-31"),
            ), // no 31 Feb
            (
                by(Abolition, "2025-06-30", Some("2025-03-31")), // 22: a day short
                Err(Refusal::AbolitionTooLate {
                    on: day("2025-06-30"),
                    notice: day("2025-03-31"),
                    latest: day("2025-03-30"),
                }),
            ),
            (
                by(Abolition, "2025-06-30", None), // 22: written notice
                Err(Refusal::NoticeMissing { what: "Art. 22" }),
            ),
            (
                by(ManagementEnded, "2025-02-01", None), // 23-3 is the store's own
                Err(Refusal::ByCascade(ManagementEnded)),
            ),
            (
                by(RentalEnded, "2025-02-01", None),
                Err(Refusal::ByCascade(RentalEnded)),
            ),
        ];
        let contract = option("2025-01-01");
        for (termination, expected) in cases {
            assert_eq!(
                check_termination(&contract, &termination).map(|t| t.on),
                expected.map(day),
                "{termination:?}"
            );
        }
    }

    // Ids and serials: each row a name and whether it is refused.
    #[test]
    fn names_refuse_control_and_format_characters() {
        let long = "A".repeat(65);
        let cases = [
            ("FUJI-0001", true),
            ("M-1/2025", true),
            (&"A".repeat(64), true),
            ("日本-1", true),
            ("", false),
            (long.as_str(), false),
            ("A B", false),
            ("A\0B", false),
            ("A\u{1b}B", false),   // ESC
            ("A\u{200b}B", false), // zero-width space
            ("A\u{200d}B", false), // zero-width joiner
            ("A\u{202e}B", false), // bidi override
            ("A\u{2066}B", false), // bidi isolate
            ("\u{feff}A", false),  // byte order mark
        ];
        for (name, ok) in cases {
            assert_eq!(check_name(name).is_ok(), ok, "{name:?}");
        }
        assert!(
            Refusal::BadName("A\u{1b}B".into())
                .to_string()
                .starts_with("`A\\u{1b}B` is not a valid id or serial"),
            "{}",
            Refusal::BadName("A\u{1b}B".into())
        );
    }

    #[test]
    fn a_terminated_contract_cannot_be_terminated_again() {
        let mut contract = option("2025-01-01");
        contract.termination = Some(by(TerminatedBy::Provider, "2025-03-01", None));
        assert_eq!(
            check_termination(&contract, &by(TerminatedBy::Provider, "2025-02-01", None)),
            Err(Refusal::AlreadyTerminated {
                id: "OPT-1".into(),
                on: day("2025-03-01")
            })
        );
    }

    #[test]
    fn urls_name_the_engine() {
        assert_eq!(Engine::of("sqlite:/tmp/x.db").unwrap(), Engine::Sqlite);
        assert_eq!(
            Engine::of("postgres://u@localhost/db").unwrap(),
            Engine::Postgres
        );
        assert!(matches!(
            Engine::of("mysql://x"),
            Err(StoreError::BadUrl(url)) if url == "mysql://x"
        ));
    }

    #[test]
    fn sqlite_urls_get_create_mode_once() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("smf-url-{}/c.db", std::process::id()));
        let url = format!("sqlite:{}", path.display());
        assert_eq!(sqlite_create_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(path.parent().unwrap().is_dir());
        assert_eq!(
            sqlite_create_url(&format!("{url}?mode=ro")).unwrap(),
            format!("{url}?mode=ro")
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
