//! The grant modes of the licence loop: the decision comes as a signed grant, from a file
//! (`license: {grant}`) or from `smf-firewall license serve` (`license: {url}`), and is
//! verified here against the provider's public keys (`firewall_grants`). A grant in force
//! holds until its `valid_until` whatever happens to the file or the server (that window
//! replaces `grace`); a refused grant never replaces it, and once it has expired the adapter
//! is not licensed (`grant_expired`).

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, Utc};
use firewall_contracts::{Model, Role, license::Reason};
use firewall_grants::{Grant, Holder, InForce, MAX_GRANT_BYTES, PublicKey, Refusal};
use tracing::{info, warn};
use ureq::{
    Agent,
    tls::{RootCerts, TlsConfig},
};

use super::applied::Applied;
use crate::config::LicenseSource;

/// How long one fetch from the grant server may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The `reason` when the grant file cannot be read and no grant is held.
pub const GRANT_MISSING: &str = "grant_missing";
/// The `reason` when the grant server cannot be reached and no grant is held.
pub const GRANT_UNREACHABLE: &str = "grant_unreachable";

#[derive(Debug, thiserror::Error)]
pub enum GrantSetupError {
    #[error(transparent)]
    Key(#[from] firewall_grants::KeyError),
    #[error("`ca_file`: {0}")]
    Ca(String),
}

/// Where grants come from.
enum Delivery {
    File(PathBuf),
    Server {
        url: String,
        token_file: PathBuf,
        agent: Agent,
        /// The last grant accepted, for a restart while the server is unreachable.
        cache: PathBuf,
    },
}

/// The grant held and how to get the next one.
pub struct GrantSource {
    serial: String,
    key_files: Vec<PathBuf>,
    keys: Vec<PublicKey>,
    delivery: Delivery,
    holder: Holder,
}

/// What one check found.
#[derive(Debug)]
pub struct Checked {
    pub applied: Applied,
    /// `licensed` or `not_licensed` (a grant was accepted), `refused`, or `error` (none
    /// could be read or fetched), for `smf_firewall_license_checks_total`.
    pub result: &'static str,
    pub refusal: Option<Refusal>,
    /// Why no grant could be read or fetched.
    pub problem: Option<String>,
    /// The grant held, valid or expired.
    pub held: Option<Grant>,
}

impl GrantSource {
    /// Reads the public keys (a missing or bad key stops the start) and prepares the client.
    pub fn new(serial: &str, source: &LicenseSource) -> Result<Option<Self>, GrantSetupError> {
        let (delivery, key_files) = match source {
            LicenseSource::Store { .. } => return Ok(None),
            LicenseSource::Grant { file, keys } => (Delivery::File(file.clone()), keys),
            LicenseSource::Url {
                url,
                token_file,
                ca_file,
                keys,
                cache,
            } => (
                Delivery::Server {
                    url: grant_url(url, serial),
                    token_file: token_file.clone(),
                    agent: agent(ca_file.as_deref())?,
                    cache: cache.clone(),
                },
                keys,
            ),
        };
        let keys = read_keys(key_files)?;
        Ok(Some(Self {
            serial: serial.to_string(),
            key_files: key_files.clone(),
            keys,
            delivery,
            holder: Holder::default(),
        }))
    }

    /// The ids of the keys grants are checked against.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(PublicKey::id).collect()
    }

    /// The grant file to watch, in the file mode.
    pub fn file(&self) -> Option<&Path> {
        match &self.delivery {
            Delivery::File(path) => Some(path),
            Delivery::Server { .. } => None,
        }
    }

    /// From a server: the grant last fetched by an earlier daemon holds, if it still verifies,
    /// until a fetch succeeds (a restart while the server is down does not fall open).
    pub fn resume(&mut self) {
        let Delivery::Server { cache, .. } = &self.delivery else {
            return;
        };
        let Ok(text) = read_capped(cache) else {
            return;
        };
        match firewall_grants::verify(&text, &self.keys, &self.serial, Utc::now()) {
            Ok(grant) => {
                info!(valid_until = %grant.valid_until, licensed = grant.licensed, "holding the grant fetched before the restart until a fetch succeeds");
                let _ = self.holder.offer(grant);
            }
            Err(refusal) => info!(
                reason = refusal.reason(),
                "the grant fetched before the restart does not hold"
            ),
        }
    }

    /// Reads or fetches the grant, verifies it, and says what the dataplane does now.
    pub async fn check(&mut self) -> Checked {
        self.reread_keys();
        let obtained = self.obtain().await;
        let now = Utc::now();
        let (result, refusal, problem) = match obtained {
            Err(problem) => ("error", None, Some(problem)),
            Ok(text) => match firewall_grants::verify(&text, &self.keys, &self.serial, now)
                .and_then(|grant| {
                    let licensed = grant.licensed;
                    self.holder.offer(grant).map(|()| licensed)
                }) {
                Ok(licensed) => {
                    self.remember(&text).await;
                    (
                        if licensed { "licensed" } else { "not_licensed" },
                        None,
                        None,
                    )
                }
                Err(refusal) => ("refused", Some(refusal), None),
            },
        };
        let (applied, held) = match self.holder.in_force(now) {
            InForce::Valid(grant) => (applied(grant, None), Some(grant.clone())),
            InForce::Expired(grant) => (applied(grant, Some("grant_expired")), Some(grant.clone())),
            InForce::None => {
                let reason = match (&refusal, &self.delivery) {
                    (Some(refusal), _) => refusal.reason(),
                    (None, Delivery::File(_)) => GRANT_MISSING,
                    (None, Delivery::Server { .. }) => GRANT_UNREACHABLE,
                };
                let applied = Applied {
                    licensed: false,
                    reason,
                    serial: self.serial.clone(),
                    model: "",
                    role: "",
                };
                (applied, None)
            }
        };
        Checked {
            applied,
            result,
            refusal,
            problem,
            held,
        }
    }

    /// When to check next: after `recheck`, but at the latest when a quarter of the held
    /// grant's window has passed (renewed well before it expires), and at its expiry.
    pub fn next_check(&self, recheck: Duration, now: DateTime<Utc>) -> Duration {
        let InForce::Valid(grant) = self.holder.in_force(now) else {
            return recheck;
        };
        let quarter = ((grant.valid_until - grant.valid_from) / 4)
            .to_std()
            .unwrap_or(recheck);
        let expiry = (grant.valid_until - now).to_std().unwrap_or(Duration::ZERO);
        recheck
            .min(quarter)
            .min(expiry)
            .max(Duration::from_millis(200))
    }

    /// Key files are re-read at each check, so that a rotated file takes effect; one that
    /// cannot be read keeps the keys read last.
    fn reread_keys(&mut self) {
        match read_keys(&self.key_files) {
            Ok(keys) => self.keys = keys,
            Err(error) => {
                warn!(%error, "cannot re-read the public keys; checking against the ones read before")
            }
        }
    }

    async fn obtain(&self) -> Result<Vec<u8>, String> {
        let job = match &self.delivery {
            Delivery::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    read_capped(&path).map_err(|error| {
                        format!("cannot read the grant {}: {error}", path.display())
                    })
                })
            }
            Delivery::Server {
                url,
                token_file,
                agent,
                ..
            } => {
                let (url, token_file, agent) = (url.clone(), token_file.clone(), agent.clone());
                tokio::task::spawn_blocking(move || fetch(&agent, &url, &token_file))
            }
        };
        // A read that hangs (a stuck mount) is given up: the loop must wake at expiry.
        match tokio::time::timeout(FETCH_TIMEOUT * 2, job).await {
            Err(_) => Err("reading or fetching the grant did not finish in time".to_string()),
            Ok(joined) => {
                joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
            }
        }
    }

    /// Keeps the grant fetched last in runtime_dir, whole or not at all.
    async fn remember(&self, text: &[u8]) {
        let Delivery::Server { cache, .. } = &self.delivery else {
            return;
        };
        let (cache, text) = (cache.clone(), text.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            let temporary = cache.with_extension("jws.tmp");
            fs::write(&temporary, text)?;
            fs::rename(&temporary, &cache)
        })
        .await;
        if let Ok(Err(error)) = written {
            warn!(%error, "cannot keep the grant in the runtime directory; a restart without the server will not hold it");
        }
    }
}

/// The dataplane's state from a grant (`override_reason`: an expired one's).
fn applied(grant: &Grant, override_reason: Option<&'static str>) -> Applied {
    Applied {
        licensed: grant.licensed && override_reason.is_none(),
        reason: override_reason.unwrap_or_else(|| {
            Reason::from_name(&grant.reason).map_or("unrecognised_reason", Reason::name)
        }),
        serial: grant.serial.clone(),
        model: grant.model.parse::<Model>().map_or("", Model::name),
        role: grant.role.parse::<Role>().map_or("", Role::name),
    }
}

fn read_keys(files: &[PathBuf]) -> Result<Vec<PublicKey>, firewall_grants::KeyError> {
    files.iter().map(|file| PublicKey::read(file)).collect()
}

/// A regular file's first bytes, at most one more than a grant may have (a huge file is
/// refused, not read). Opened without waiting (O_NONBLOCK): a FIFO or a device is refused at
/// once rather than blocking the licence loop.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = Vec::new();
    file.take(MAX_GRANT_BYTES as u64 + 1)
        .read_to_end(&mut text)?;
    Ok(text)
}

/// `BASE/v1/grants/SERIAL`, unless `url` already ends so.
pub fn grant_url(url: &str, serial: &str) -> String {
    let path = format!("/v1/grants/{}", encode_segment(serial));
    if url.ends_with(&path) {
        url.to_string()
    } else {
        format!("{}{path}", url.trim_end_matches('/'))
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn agent(ca_file: Option<&Path>) -> Result<Agent, GrantSetupError> {
    let mut config = Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(false);
    if let Some(path) = ca_file {
        let certificates = crate::top::certificates(path)
            .map_err(|error| GrantSetupError::Ca(error.to_string()))?;
        config = config.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&certificates))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// One GET with the adapter's token (read anew each time: a replaced token file takes
/// effect). Errors name the status or the failure, never the token.
fn fetch(agent: &Agent, url: &str, token_file: &Path) -> Result<Vec<u8>, String> {
    let token = fs::read_to_string(token_file).map_err(|error| {
        format!(
            "cannot read the token file {}: {error}",
            token_file.display()
        )
    })?;
    let mut response = agent
        .get(url)
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call()
        .map_err(|error| format!("cannot fetch the grant: {error}"))?;
    let status = response.status();
    if status != ureq::http::StatusCode::OK {
        return Err(format!("the grant server answered {status}"));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_GRANT_BYTES as u64 + 1)
        .read_to_vec()
        .map_err(|error| format!("cannot read the grant server's answer: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use firewall_grants::{Decision, SigningKey};

    fn decision(licensed: bool, decided_at: DateTime<Utc>) -> Decision {
        Decision {
            serial: "FUJI-0001".into(),
            model: "x86-fuji".into(),
            role: "entry".into(),
            licensed,
            reason: if licensed {
                "licensed"
            } else {
                "option_suspended"
            }
            .into(),
            decided_at,
        }
    }

    /// A change of the grant file, and the (licensed, reason, check result) after it.
    type Step<'a> = (Box<dyn Fn() + 'a>, (bool, &'static str, &'static str));

    // Each step: what is in the grant file, then (licensed, reason, check result) of the
    // check: a refused or unreadable grant never replaces the one in force.
    #[tokio::test]
    async fn a_grant_file_is_verified_held_and_never_replaced_by_a_worse_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let public = dir.path().join("provider.pub");
        fs::write(&public, key.public().to_pem()).unwrap();
        let file = dir.path().join("grant.jws");
        let source = LicenseSource::Grant {
            file: file.clone(),
            keys: vec![public],
        };
        let mut grants = GrantSource::new("FUJI-0001", &source).unwrap().unwrap();
        let now = Utc::now();
        let (_, licensed) = key.issue(&decision(true, now), TimeDelta::hours(1));
        let (_, older_no) = key.issue(
            &decision(false, now - TimeDelta::hours(1)),
            TimeDelta::hours(2),
        );
        let (_, newer_no) = key.issue(
            &decision(false, now + TimeDelta::seconds(1)),
            TimeDelta::hours(1),
        );
        let fifo = || {
            let _ = fs::remove_file(&file);
            let made = std::process::Command::new("mkfifo")
                .arg(&file)
                .status()
                .unwrap();
            assert!(made.success());
        };
        let steps: Vec<Step> = vec![
            (Box::new(|| {}), (false, GRANT_MISSING, "error")),
            (
                Box::new(|| fs::write(&file, format!("{licensed}\n")).unwrap()),
                (true, "licensed", "licensed"),
            ),
            (
                Box::new(|| fs::write(&file, &licensed[..40]).unwrap()),
                (true, "licensed", "refused"),
            ),
            (
                Box::new(|| fs::write(&file, &older_no).unwrap()),
                (true, "licensed", "refused"),
            ),
            (Box::new(fifo), (true, "licensed", "error")),
            (
                Box::new(|| fs::write(&file, "x".repeat(20_000)).unwrap()),
                (true, "licensed", "refused"),
            ),
            (
                Box::new(|| fs::write(&file, &newer_no).unwrap()),
                (false, "option_suspended", "not_licensed"),
            ),
            (
                Box::new(|| fs::write(&file, &licensed).unwrap()),
                (false, "option_suspended", "refused"),
            ),
        ];
        for (n, (deliver, (licensed, reason, result))) in steps.into_iter().enumerate() {
            if file.exists() {
                fs::remove_file(&file).unwrap();
            }
            deliver();
            let checked = grants.check().await;
            assert_eq!(
                (
                    checked.applied.licensed,
                    checked.applied.reason,
                    checked.result
                ),
                (licensed, reason, result),
                "step {n}: {checked:?}"
            );
        }
    }

    #[test]
    fn the_grant_url_is_the_base_and_the_encoded_serial() {
        let cases = [
            (
                "https://g.example:8443",
                "FUJI-0001",
                "https://g.example:8443/v1/grants/FUJI-0001",
            ),
            (
                "https://g.example:8443/",
                "FUJI-0001",
                "https://g.example:8443/v1/grants/FUJI-0001",
            ),
            (
                "https://g.example/v1/grants/FUJI-0001",
                "FUJI-0001",
                "https://g.example/v1/grants/FUJI-0001",
            ),
            (
                "https://g.example",
                "A/B?c",
                "https://g.example/v1/grants/A%2FB%3Fc",
            ),
        ];
        for (base, serial, expected) in cases {
            assert_eq!(grant_url(base, serial), expected, "{base} {serial}");
        }
    }
}
