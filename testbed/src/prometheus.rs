//! A throwaway Prometheus server (Debian's `prometheus`, which `cargo xtask setup` installs)
//! for the metering tests and the demo: it runs inside a namespace, listens on that
//! namespace's loopback, scrapes the daemon there and evaluates the project's rules; its
//! directory (config, data, log) is temporary. Dropping it stops the server and removes it.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{netns::NetNs, process::Process, scrape::http_get};

const BINARY: &str = "prometheus";

static NEXT_SERVER: AtomicU32 = AtomicU32::new(0);

/// One sample of a query's answer: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

/// A running Prometheus server in a namespace.
pub struct Prometheus<'a> {
    ns: &'a NetNs,
    address: SocketAddr,
    dir: PathBuf,
    process: Option<Process>,
}

impl<'a> Prometheus<'a> {
    /// Starts Prometheus in `ns`, listening on `address` (a loopback address there), scraping
    /// `target` as job `smf-firewall` and evaluating `rule_files`, both every `interval`; waits
    /// until it has scraped the target once (its service discovery hands new targets over
    /// about 5 s after start).
    pub fn start(
        ns: &'a NetNs,
        address: SocketAddr,
        target: SocketAddr,
        interval: Duration,
        rule_files: &[&Path],
    ) -> io::Result<Prometheus<'a>> {
        if !address.ip().is_loopback() {
            return Err(io::Error::other("Prometheus listens on loopback only"));
        }
        let id = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("smf-prom-{}-{id}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        // From here on, dropping the guard removes the directory.
        let mut server = Prometheus {
            ns,
            address,
            dir,
            process: None,
        };
        let config = server.dir.join("prometheus.yml");
        fs::write(&config, config_text(target, interval, rule_files))?;
        let log = File::create(server.log_path())?;
        let child = ns
            .command(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                server.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        server.process = Some(Process::from(child));
        server.until_ready(Duration::from_secs(30))?;
        server.until_scraped(Duration::from_secs(30))?;
        Ok(server)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The server's process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Process::id)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("prometheus.log")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn until_ready(&mut self, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        while http_get(self.ns, self.address, "/-/ready").is_err() {
            let exited = self.process.as_mut().map_or(Ok(true), Process::exited)?;
            if exited || start.elapsed() > limit {
                return Err(io::Error::other(format!(
                    "Prometheus did not become ready:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn until_scraped(&self, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        while self.query("up{job=\"smf-firewall\"} == 1")?.is_empty() {
            if start.elapsed() > limit {
                return Err(io::Error::other(format!(
                    "Prometheus did not scrape its target:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// GET `path` on the server's HTTP API and return its `data`, failing unless the API says
    /// "success".
    pub fn api(&self, path: &str) -> io::Result<Value> {
        let body = http_get(self.ns, self.address, path)?;
        let answer: Value = serde_json::from_str(&body).map_err(io::Error::other)?;
        if answer["status"] != "success" {
            return Err(io::Error::other(format!("{path}: {body}")));
        }
        Ok(answer["data"].clone())
    }

    /// The `data` of an instant query (`/api/v1/query`) now: a vector, or a matrix of raw
    /// samples for a range selector such as `x[5m]`.
    pub fn query_data(&self, promql: &str) -> io::Result<Value> {
        self.api(&format!("/api/v1/query?query={}", encode(promql)))
    }

    /// An instant query now: each series' labels and value.
    pub fn query(&self, promql: &str) -> io::Result<Vec<Series>> {
        let data = self.query_data(promql)?;
        let result = data["result"]
            .as_array()
            .ok_or_else(|| io::Error::other(format!("{promql}: not a vector: {data}")))?;
        result.iter().map(|series| sample(promql, series)).collect()
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        // Killing the process (Process's drop) first: then nothing writes into the directory.
        self.process.take();
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("testbed: cannot remove {}: {err}", self.dir.display());
        }
    }
}

fn config_text(target: SocketAddr, interval: Duration, rule_files: &[&Path]) -> String {
    let interval = format!("{}ms", interval.as_millis());
    let mut text = format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nrule_files:\n"
    );
    for file in rule_files {
        let _ = writeln!(text, "  - {:?}", file.display().to_string());
    }
    let _ = write!(
        text,
        "scrape_configs:\n  - job_name: smf-firewall\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    text
}

fn sample(promql: &str, series: &Value) -> io::Result<Series> {
    let bad = || io::Error::other(format!("{promql}: unexpected series {series}"));
    let labels = series["metric"]
        .as_object()
        .ok_or_else(bad)?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let value = series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    Ok((labels, value))
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the Prometheus server is installed; a test may skip without it, except where
/// skipping would hide a failure (`CI=true`, or `SMF_FIREWALL_KERNEL_TESTS=1` as `cargo xtask
/// test` sets): there a missing server fails the test.
pub fn require_prometheus(test: &str) -> bool {
    let installed = std::process::Command::new(BINARY)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if installed {
        return true;
    }
    let must_run = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SMF_FIREWALL_KERNEL_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !must_run,
        "{test}: needs Prometheus (`{BINARY}`; cargo xtask setup installs Debian's prometheus)"
    );
    eprintln!("skip: {test} needs Prometheus");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("sum(rate(a{b=\"c d\"}[5m])) / 8"),
            "sum%28rate%28a%7Bb%3D%22c%20d%22%7D%5B5m%5D%29%29%20%2F%208"
        );
    }

    #[test]
    fn the_config_scrapes_the_target_and_loads_the_rules() {
        let text = config_text(
            "127.0.0.1:9775".parse().unwrap(),
            Duration::from_secs(1),
            &[Path::new("/r/rules.yml")],
        );
        assert_eq!(
            text,
            "global:\n  scrape_interval: 1000ms\n  evaluation_interval: 1000ms\nrule_files:\n  - \"/r/rules.yml\"\n\
             scrape_configs:\n  - job_name: smf-firewall\n    static_configs:\n      - targets: [\"127.0.0.1:9775\"]\n"
        );
    }
}
