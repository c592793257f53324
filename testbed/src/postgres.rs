//! A throwaway PostgreSQL server for the contract store's tests: `initdb` in a temporary
//! directory, listening only on a Unix socket in that directory (no TCP port to collide on),
//! stopped and removed on drop. Debian's `postgresql` package provides the binaries
//! (`cargo xtask setup` installs it). PostgreSQL refuses to run as root, so as root the server
//! runs as the `postgres` user, in a directory owned by it.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::process::checked;

/// Debian installs each major version's server binaries here.
const DEBIAN_BINARIES: &str = "/usr/lib/postgresql";
/// The user that runs the server when the tests run as root.
const SERVER_USER: &str = "postgres";

static NEXT_SERVER: AtomicU32 = AtomicU32::new(0);
static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());

/// A running server; dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    /// Who runs the server's programs: `postgres` when we are root, else ourselves.
    run_as: Option<nix::unistd::User>,
    next_database: AtomicU32,
}

impl Postgres {
    /// The server of this test process, started on first use and shared by every test that
    /// holds it; the last one to drop it stops it.
    pub fn shared() -> io::Result<Arc<Postgres>> {
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(server) = shared.upgrade() {
            return Ok(server);
        }
        let server = Arc::new(Postgres::start()?);
        *shared = Arc::downgrade(&server);
        Ok(server)
    }

    /// Initialises and starts a new server.
    pub fn start() -> io::Result<Postgres> {
        let bin = binaries()?;
        let id = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("smf-pg-{}-{id}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(SERVER_USER)
                .map_err(io::Error::from)?
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "user `{SERVER_USER}` is missing; install postgresql"
                    ))
                })?;
            std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            Some(user)
        } else {
            None
        };
        // From here on, dropping the guard cleans up whatever was made.
        let server = Postgres {
            bin,
            dir,
            run_as,
            next_database: AtomicU32::new(0),
        };
        let data = server.data();
        checked(server.program("initdb").args([
            "--pgdata",
            &data,
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]))?;
        // Unix socket only, in our directory; no fsync: the data is thrown away.
        let options = format!("-k {} -c listen_addresses='' -F", server.dir.display());
        let log = server.dir.join("server.log");
        checked(server.program("pg_ctl").args([
            "start",
            "--wait",
            "--pgdata",
            &data,
            "--log",
            &log.to_string_lossy(),
            "-o",
            &options,
        ]))?;
        Ok(server)
    }

    /// Creates a new empty database and returns its URL for sqlx.
    pub fn database(&self) -> io::Result<String> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let name = format!("test{n}");
        checked(self.program("createdb").args([
            "--host",
            &self.dir.to_string_lossy(),
            "--username",
            SERVER_USER,
            &name,
        ]))?;
        Ok(self.url(&name))
    }

    /// The URL of database `name` on this server (over its Unix socket).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{SERVER_USER}@localhost/{name}?host={}",
            self.dir.display()
        )
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// One of the server's programs, run as the server's user.
    fn program(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", &user.name, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The server's user may not be allowed into the test's working directory.
        cmd.current_dir(&self.dir);
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        if Path::new(&data).join("postmaster.pid").exists()
            && let Err(err) = checked(self.program("pg_ctl").args([
                "stop",
                "--wait",
                "--mode",
                "immediate",
                "--pgdata",
                &data,
            ]))
        {
            eprintln!(
                "testbed: cannot stop PostgreSQL in {}: {err}",
                self.dir.display()
            );
        }
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("testbed: cannot remove {}: {err}", self.dir.display());
        }
    }
}

/// The newest installed server's binary directory (`SMF_FIREWALL_PG_BIN` overrides).
fn binaries() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SMF_FIREWALL_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_BINARIES)
        .map_err(|err| io::Error::new(err.kind(), format!("{DEBIAN_BINARIES}: {err}")))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no PostgreSQL server under {DEBIAN_BINARIES}; `cargo xtask setup` installs it"
            ),
        )
    })
}

/// The shared server, or None when PostgreSQL is not installed and the test may be skipped:
/// under `CI=true` a missing PostgreSQL fails the test instead (never a silent skip).
pub fn require_postgres(test: &str) -> Option<Arc<Postgres>> {
    match binaries() {
        Ok(_) => Some(Postgres::shared().unwrap_or_else(|err| {
            panic!("{test}: cannot start a throwaway PostgreSQL server: {err}")
        })),
        Err(err) => {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "{test}: needs PostgreSQL: {err}"
            );
            eprintln!("skip: {test} needs PostgreSQL ({err})");
            None
        }
    }
}
