//! The contract store: one schema on SQLite (`sqlite:PATH`, the default) or PostgreSQL
//! (`postgres://...`), reached through sqlx's `Any` driver with runtime queries. Every change
//! goes through [`Changes`], one transaction that checks the terms' rules before it writes;
//! the schema backs the rules that a database can hold (Art. 5-2, 23-2, the models).

use std::{borrow::Cow, future::Future, path::Path, pin::Pin, str::FromStr, time::Duration};

use chrono_tz::Tz;
use sqlx::{
    Any, AnyConnection, AnyPool, Row, Transaction,
    any::{AnyPoolOptions, AnyRow},
    error::BoxDynError,
    migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator},
};

use super::model::{
    Adapter, AdapterFacts, Contract, ContractKind, Day, Model, Role, RoleChange, Suspension,
    TerminatedBy, Termination, parse_day,
};

/// Where the store is unless `--db` or the config's `contracts.url` says otherwise.
pub const DEFAULT_URL: &str = "sqlite:/var/lib/smf-firewall/contracts.db";

/// The provider's time zone unless `contracts init --time-zone` says otherwise.
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::Asia::Tokyo;

/// Art. 23-2: a customer's termination takes effect this many days after the notice at the
/// earliest (the day on which 30 days have passed, the notice day not counted).
pub const CUSTOMER_NOTICE_DAYS: u64 = 30;

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
        "`{0}` is not a valid id or serial: it must be non-empty, without spaces (Art. 8-1(4): serials are matched exactly)"
    )]
    BadName(String),
    #[error("there is no contract `{0}`")]
    UnknownContract(String),
    #[error("there is no management contract `{0}`")]
    UnknownManagement(String),
    #[error("there is no adapter with serial `{0}`")]
    UnknownAdapter(String),
    #[error("contract `{0}` already exists")]
    DuplicateContract(String),
    #[error("adapter `{0}` already exists")]
    DuplicateAdapter(String),
    #[error(
        "table 1: adapter `{serial}` is a {model}, which cannot have an Ultra Firewall Option; eligible models: turbo, x1, x2, x86-fuji, bpv4"
    )]
    NotEligible { serial: String, model: Model },
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
        "Art. 23-2: a customer's termination needs the day of the written notice (--notice DATE)"
    )]
    NoticeMissing,
    #[error(
        "Art. 23-2: a customer's termination takes effect no earlier than 30 days after the notice of {notice}: the earliest allowed date is {earliest}, not {on}"
    )]
    TooEarly { on: Day, notice: Day, earliest: Day },
    #[error("the notice of {notice} is after the termination day {on}")]
    NoticeAfterTermination { notice: Day, on: Day },
    #[error("contract `{id}` starts on {start}; it cannot end before that ({on})")]
    EndsBeforeStart { id: String, start: Day, on: Day },
    #[error("contract `{id}` is already terminated on {on}")]
    AlreadyTerminated { id: String, on: Day },
    #[error("a suspension cannot end ({to}) before it starts ({from})")]
    SuspensionBackwards { from: Day, to: Day },
    #[error(
        "Art. 23: `--by management` is recorded by the store itself when a management contract ends (Art. 23-3); use customer or provider"
    )]
    ByManagement,
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
}

impl Store {
    /// Creates the store if needed (for SQLite, the file and its directory), applies the
    /// schema, and sets the provider's time zone: `time_zone`, or the default when the store
    /// has none yet.
    pub async fn init(url: &str, time_zone: Option<Tz>) -> Result<Store, StoreError> {
        let engine = Engine::of(url)?;
        let connect_url = match engine {
            Engine::Sqlite => sqlite_create_url(url)?,
            Engine::Postgres => url.to_string(),
        };
        let store = Store::connect(url, &connect_url, engine, Duration::from_secs(10)).await?;
        Migrator::new(Embedded(engine))
            .await?
            .run(&store.pool)
            .await?;
        let (zone, on_conflict) = match time_zone {
            Some(zone) => (zone, "DO UPDATE SET time_zone = excluded.time_zone"),
            None => (DEFAULT_TIME_ZONE, "DO NOTHING"),
        };
        sqlx::query(&format!(
            "INSERT INTO provider (singleton, time_zone) VALUES (1, $1) ON CONFLICT (singleton) {on_conflict}"
        ))
        .bind(zone.name())
        .execute(&store.pool)
        .await?;
        Ok(store)
    }

    /// Opens an initialised store; fails at once if it cannot be reached.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let engine = Engine::of(url)?;
        let store = Store::connect(url, url, engine, Duration::from_secs(10)).await?;
        store.time_zone().await?;
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
        })
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
        let mut conn = self.pool.acquire().await?;
        load_facts(&mut conn, serial).await
    }

    /// Every management contract with its adapters and their options, for `contracts show`.
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
            let serials = ids(
                &mut conn,
                "SELECT serial FROM adapters WHERE management_id = $1 ORDER BY serial",
                Some(&id),
            )
            .await?;
            let mut adapters = Vec::with_capacity(serials.len());
            for serial in serials {
                if let Some(facts) = load_facts(&mut conn, &serial).await? {
                    adapters.push((facts.adapter, facts.options));
                }
            }
            views.push(ManagementView {
                management,
                adapters,
            });
        }
        Ok(views)
    }

    /// Starts a transaction; nothing is written unless it is committed.
    pub async fn begin(&self) -> Result<Changes, StoreError> {
        Ok(Changes {
            tx: self.pool.begin().await?,
            engine: self.engine,
        })
    }
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

/// One management contract with its adapters, each with its option contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementView {
    pub management: Contract,
    pub adapters: Vec<(Adapter, Vec<Contract>)>,
}

/// A new adapter registration (`contracts adapter add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdapter {
    pub serial: String,
    pub model: Model,
    pub management: String,
    pub role: Role,
    pub since: Day,
}

/// Changes in one transaction: each method checks the rules and refuses with a [`Refusal`]
/// before writing. Dropped without [`Changes::commit`], nothing is written.
pub struct Changes {
    tx: Transaction<'static, Any>,
    engine: Engine,
}

impl Changes {
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    pub async fn add_management(&mut self, id: &str, start: Day) -> Result<(), StoreError> {
        check_name(id)?;
        if load_contract(&mut self.tx, id).await?.is_some() {
            return Err(Refusal::DuplicateContract(id.to_string()).into());
        }
        sqlx::query("INSERT INTO contracts (id, kind, start_day) VALUES ($1, 'management', $2)")
            .bind(id)
            .bind(day_text(start))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn add_adapter(&mut self, new: &NewAdapter) -> Result<(), StoreError> {
        check_name(&new.serial)?;
        if load_adapter(&mut self.tx, &new.serial).await?.is_some() {
            return Err(Refusal::DuplicateAdapter(new.serial.clone()).into());
        }
        self.management(&new.management).await?;
        sqlx::query("INSERT INTO adapters (serial, model, management_id) VALUES ($1, $2, $3)")
            .bind(&new.serial)
            .bind(new.model.name())
            .bind(&new.management)
            .execute(&mut *self.tx)
            .await?;
        self.record_role(&new.serial, new.role, new.since).await
    }

    /// From `on`, the adapter has `role` (Art. 5-1: entries and standbys may change).
    pub async fn set_role(&mut self, serial: &str, role: Role, on: Day) -> Result<(), StoreError> {
        self.adapter(serial).await?;
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

    /// A new Ultra Firewall Option contract for the adapter `serial`, which it covers for life
    /// (Art. 5-2). Refused for an ineligible model (table 1), while another option of the
    /// adapter runs on or after `start` (Art. 4-2), and after the adapter's management
    /// contract has ended (Art. 23-3).
    pub async fn add_option(
        &mut self,
        id: &str,
        serial: &str,
        start: Day,
    ) -> Result<(), StoreError> {
        check_name(id)?;
        if load_contract(&mut self.tx, id).await?.is_some() {
            return Err(Refusal::DuplicateContract(id.to_string()).into());
        }
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
        if let Some(existing) = facts
            .options
            .iter()
            .find(|o| o.end().is_none_or(|end| end >= start))
        {
            return Err(Refusal::SecondOption {
                serial: serial.to_string(),
                existing: existing.id.clone(),
                period: period(existing),
            }
            .into());
        }
        sqlx::query(
            "INSERT INTO contracts (id, kind, start_day, serial) VALUES ($1, 'option', $2, $3)",
        )
        .bind(id)
        .bind(day_text(start))
        .bind(serial)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
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
        self.contract(id).await?;
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

    /// Art. 23: ends contract `id` at the end of `termination.on`. Ending a management
    /// contract ends, the same day, the options of every adapter registered under it that
    /// would run longer (Art. 23-3); their ids are returned.
    pub async fn terminate(
        &mut self,
        id: &str,
        termination: Termination,
    ) -> Result<Vec<String>, StoreError> {
        let contract = self.contract(id).await?;
        check_termination(&contract, &termination)?;
        write_termination(&mut self.tx, id, &termination).await?;
        if contract.kind == ContractKind::Option {
            return Ok(Vec::new());
        }
        let ended = Termination {
            on: termination.on,
            by: TerminatedBy::ManagementEnded,
            notice: None,
        };
        let options = ids(
            &mut self.tx,
            "SELECT c.id FROM contracts c JOIN adapters a ON c.serial = a.serial \
             WHERE a.management_id = $1 ORDER BY c.id",
            Some(id),
        )
        .await?;
        let mut cascaded = Vec::new();
        for option_id in options {
            let option = self.contract(&option_id).await?;
            // An option that ends sooner keeps its end; one that would start after the
            // management ended never runs, and has nothing to end.
            let runs_longer = option.end().is_none_or(|end| end > ended.on);
            if runs_longer && option.start <= ended.on {
                write_termination(&mut self.tx, &option_id, &ended).await?;
                cascaded.push(option_id);
            }
        }
        Ok(cascaded)
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

/// The rules of Art. 23 that a termination must follow before it is written.
fn check_termination(contract: &Contract, termination: &Termination) -> Result<(), Refusal> {
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
    if let Some(notice) = termination.notice.filter(|notice| *notice > termination.on) {
        return Err(Refusal::NoticeAfterTermination {
            notice,
            on: termination.on,
        });
    }
    match termination.by {
        TerminatedBy::Customer => {
            let notice = termination.notice.ok_or(Refusal::NoticeMissing)?;
            let earliest = earliest_customer_termination(notice);
            if termination.on < earliest {
                return Err(Refusal::TooEarly {
                    on: termination.on,
                    notice,
                    earliest,
                });
            }
            Ok(())
        }
        TerminatedBy::Provider => Ok(()),
        TerminatedBy::ManagementEnded => Err(Refusal::ByManagement),
    }
}

/// Art. 23-2: the first day on which a customer's termination noticed on `notice` can take
/// effect.
pub fn earliest_customer_termination(notice: Day) -> Day {
    notice
        .checked_add_days(chrono::Days::new(CUSTOMER_NOTICE_DAYS))
        .unwrap_or(Day::MAX)
}

fn check_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(Refusal::BadName(name.to_string()));
    }
    Ok(())
}

async fn write_termination(
    conn: &mut AnyConnection,
    id: &str,
    termination: &Termination,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE contracts SET terminated_on = $1, terminated_by = $2, notice_day = $3 WHERE id = $4",
    )
    .bind(day_text(termination.on))
    .bind(termination.by.name())
    .bind(termination.notice.map(day_text))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

fn day_text(day: Day) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// "from 2025-04-01" or "2025-04-01 to 2025-06-30".
fn period(contract: &Contract) -> String {
    match contract.end() {
        Some(end) => format!("{} to {end}", contract.start),
        None => format!("from {}, not terminated", contract.start),
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
        options,
    }))
}

async fn load_adapter(
    conn: &mut AnyConnection,
    serial: &str,
) -> Result<Option<Adapter>, StoreError> {
    let Some(row) = sqlx::query("SELECT model, management_id FROM adapters WHERE serial = $1")
        .bind(serial)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let model: String = row.try_get("model")?;
    let model = Model::from_str(&model).map_err(|_| StoreError::Corrupt {
        what: "model",
        value: model,
    })?;
    let rows = sqlx::query(
        "SELECT since_day, role FROM adapter_roles WHERE serial = $1 ORDER BY since_day",
    )
    .bind(serial)
    .fetch_all(&mut *conn)
    .await?;
    let roles = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok(RoleChange {
                since: stored_day(row, "since_day")?,
                role: Role::from_str(&role).map_err(|_| StoreError::Corrupt {
                    what: "role",
                    value: role,
                })?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(Adapter {
        serial: serial.to_string(),
        model,
        management: row.try_get("management_id")?,
        roles,
    }))
}

async fn load_contract(conn: &mut AnyConnection, id: &str) -> Result<Option<Contract>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT kind, start_day, terminated_on, terminated_by, notice_day FROM contracts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "management" => ContractKind::Management,
        "option" => ContractKind::Option,
        other => {
            return Err(StoreError::Corrupt {
                what: "contract kind",
                value: other.to_string(),
            });
        }
    };
    let termination = match row.try_get::<Option<String>, _>("terminated_by")? {
        None => None,
        Some(by) => Some(Termination {
            on: stored_day(&row, "terminated_on")?,
            by: TerminatedBy::from_name(&by).ok_or(StoreError::Corrupt {
                what: "terminated_by",
                value: by,
            })?,
            notice: optional_day(&row, "notice_day")?,
        }),
    };
    let rows = sqlx::query(
        "SELECT from_day, to_day FROM suspensions WHERE contract_id = $1 ORDER BY from_day",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let suspensions = rows
        .iter()
        .map(|row| {
            Ok(Suspension {
                from: stored_day(row, "from_day")?,
                to: optional_day(row, "to_day")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(Contract {
        id: id.to_string(),
        kind,
        start: stored_day(&row, "start_day")?,
        suspensions,
        termination,
    }))
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

    // Each row: the termination, the refusal (None: accepted). Art. 23-2 counts 30 days from
    // the notice, the notice day not counted: noticed 2025-04-01, effective 2025-05-01.
    #[test]
    fn terminations_follow_art_23() {
        use TerminatedBy::{Customer, ManagementEnded, Provider};
        let cases = [
            (by(Customer, "2025-05-01", Some("2025-04-01")), None), // Art 23-2: day 30
            (
                by(Customer, "2025-04-30", Some("2025-04-01")), // Art 23-2: day 29
                Some(Refusal::TooEarly {
                    on: day("2025-04-30"),
                    notice: day("2025-04-01"),
                    earliest: day("2025-05-01"),
                }),
            ),
            (
                by(Customer, "2025-05-01", None),
                Some(Refusal::NoticeMissing),
            ), // Art 23-2
            (by(Provider, "2025-01-01", None), None), // Art 23-1: the date given
            (by(Provider, "2025-01-01", Some("2025-01-01")), None),
            (
                by(Provider, "2024-12-31", None), // before the start
                Some(Refusal::EndsBeforeStart {
                    id: "OPT-1".into(),
                    start: day("2025-01-01"),
                    on: day("2024-12-31"),
                }),
            ),
            (
                by(Provider, "2025-02-01", Some("2025-02-02")),
                Some(Refusal::NoticeAfterTermination {
                    notice: day("2025-02-02"),
                    on: day("2025-02-01"),
                }),
            ),
            (
                by(ManagementEnded, "2025-02-01", None), // Art 23-3 is the store's own
                Some(Refusal::ByManagement),
            ),
        ];
        let contract = option("2025-01-01");
        for (termination, refusal) in cases {
            assert_eq!(
                check_termination(&contract, &termination).err(),
                refusal,
                "{termination:?}"
            );
        }
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
