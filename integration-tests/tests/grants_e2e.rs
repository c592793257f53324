//! Licence grants for a fleet end to end (issue 15): the provider's store on a real
//! PostgreSQL read by `smf-firewall license serve` with a read-only role, in the WAN
//! namespace over real HTTPS; the adapter's daemon fetching its own grant with its token and
//! enforcing by it; a grant file tampered with in every way the issue names, each refused
//! and counted while the grant in force holds; key rotation.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use chrono::{Days, TimeDelta, Utc};
use firewall_grants::{Grant, SigningKey};
use testbed::{DaemonDir, NetNs, Process, Signal, WAN_HOST};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::{
    common::{self, DISCARD_RULES, DROPPED, metric, text},
    smf_firewall,
};

const SERIAL: &str = "FUJI-0001";
const OTHER: &str = "FUJI-0002";
const PORT: u16 = 8443;

/// `smf-firewall ARGS`, which must succeed; its stdout.
fn run(args: &[&str]) -> String {
    let out = Command::new(smf_firewall()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Two licensed x86 Fuji adapters, SERIAL and OTHER, options UFO-1 and UFO-2 since 2020.
fn seed(db: &str, dir: &Path) {
    run(&["contracts", "init", "--db", db]);
    let file = dir.join("fleet.yaml");
    std::fs::write(
        &file,
        format!(
            "managements: [{{id: M-1, start: 2020-01-01}}]\nadapters:\n\
             - {{serial: {SERIAL}, model: x86-fuji, management: M-1, role: entry, since: 2020-01-01}}\n\
             - {{serial: {OTHER}, model: x86-fuji, management: M-1, role: entry, since: 2020-01-01}}\n\
             options:\n- {{id: UFO-1, serial: {SERIAL}, start: 2020-01-01}}\n\
             - {{id: UFO-2, serial: {OTHER}, start: 2020-01-01}}\n"
        ),
    )
    .unwrap();
    run(&["contracts", "import", file.to_str().unwrap(), "--db", db]);
}

/// Yesterday in the store's time zone (the default, Asia/Tokyo).
fn yesterday() -> String {
    (Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .date_naive()
        - Days::new(1))
    .to_string()
}

/// `license keygen --out DIR/NAME`: the signing key's and the public key's paths.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    run(&["license", "keygen", "--out", out.to_str().unwrap()]);
    (out.join("grant-signing.key"), out.join("grant-signing.pub"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits (at most `limit`) until the daemon's sample of `name` with `labels` is at least
/// `value`.
fn until_at_least(
    adapter: &NetNs,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
    limit: Duration,
) {
    assert!(
        testbed::eventually(limit, || metric(adapter, name, labels)
            .is_some_and(|v| v >= value)),
        "{name}{labels:?} did not reach {value} within {limit:?}: {:?}",
        metric(adapter, name, labels)
    );
}

/// Waits (at most `limit`) until the daemon's sample of `name` with `labels` is `value`.
fn until_metric(adapter: &NetNs, name: &str, labels: &[(&str, &str)], value: f64, limit: Duration) {
    assert!(
        testbed::eventually(limit, || metric(adapter, name, labels) == Some(value)),
        "{name}{labels:?} did not become {value} within {limit:?}: {:?}",
        metric(adapter, name, labels)
    );
}

fn reason_is(adapter: &NetNs, reason: &str) -> bool {
    common::scrape(adapter).lines().any(|line| {
        line.starts_with("smf_firewall_license_info{")
            && line.contains(&format!("reason=\"{reason}\""))
    })
}

/// The HTTP status of GET `url` from `ns` with `token` (None: no HTTP answer).
fn status_of(ns: &NetNs, url: &str, ca: &Path, token: Option<&str>) -> Option<u16> {
    let (url, pem, token) = (
        url.to_string(),
        std::fs::read(ca).unwrap(),
        token.map(str::to_string),
    );
    ns.run(move || {
        let certificates: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(certificate)) => Some(certificate),
                _ => None,
            })
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&certificates))
                    .build(),
            )
            .build()
            .into();
        let mut request = agent.get(&url);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request
            .call()
            .ok()
            .map(|response| response.status().as_u16())
    })
    .unwrap()
}

/// `license serve` in `ns` on WAN_HOST:PORT, once it accepts connections.
fn serve(ns: &NetNs, db: &str, key: &Path, dir: &Path, valid: &str) -> Process {
    let listen = format!("{WAN_HOST}:{PORT}");
    let address: SocketAddr = listen.parse().unwrap();
    let (cert, tls_key) = (dir.join("server.crt"), dir.join("server.key"));
    let args = [
        "license",
        "serve",
        "--listen",
        &listen,
        "--key",
        path(key),
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&tls_key),
        "--valid",
        valid,
        "--db",
        db,
    ];
    ns.start_until(smf_firewall(), &args, || {
        ns.run(move || TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok())
            .unwrap()
    })
    .unwrap()
}

/// A read-only role on the store's database, and the store's URL as that role.
fn read_only_role(db: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let role = format!("smf_grants_{}_{n}", std::process::id());
    let sql =
        format!("CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};");
    let out = Command::new("psql")
        .args([db, "-v", "ON_ERROR_STOP=1", "-qc", &sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", text(&out.stderr));
    db.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1)
}

/// The provider's side: a seeded store, a signing key, both adapters' tokens, and the grant
/// server's TLS certificate (its own CA) for WAN_HOST.
struct Provider {
    dir: tempfile::TempDir,
    db: String,
    key: PathBuf,
    public: PathBuf,
    token: String,
    other_token: String,
    ca: PathBuf,
}

impl Provider {
    fn new(db: String) -> Provider {
        let dir = tempfile::tempdir().unwrap();
        seed(&db, dir.path());
        let (key, public) = keygen(dir.path(), "k1");
        let token = |serial| {
            run(&["license", "token", "--serial", serial, "--db", &db])
                .trim()
                .to_string()
        };
        let (token, other_token) = (token(SERIAL), token(OTHER));
        assert!(
            token.starts_with("smfg_") && token != other_token,
            "{token}"
        );
        let tls = rcgen::generate_simple_self_signed(vec![WAN_HOST.to_string()]).unwrap();
        std::fs::write(dir.path().join("server.crt"), tls.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("server.key"),
            tls.signing_key.serialize_pem(),
        )
        .unwrap();
        let ca = dir.path().join("server.crt");
        Provider {
            dir,
            db,
            key,
            public,
            token,
            other_token,
            ca,
        }
    }

    /// `license serve` in `ns` as a read-only role, grants valid for `valid`.
    fn serve(&self, ns: &NetNs, valid: &str) -> Process {
        serve(
            ns,
            &read_only_role(&self.db),
            &self.key,
            self.dir.path(),
            valid,
        )
    }

    /// The adapter's files and config in `dir`: its token, the server's CA, the public key.
    fn adapter(&self, dir: &DaemonDir) -> PathBuf {
        std::fs::write(dir.path().join("grant.token"), format!("{}\n", self.token)).unwrap();
        std::fs::copy(&self.ca, dir.path().join("ca.pem")).unwrap();
        std::fs::copy(&self.public, dir.path().join("provider.pub")).unwrap();
        dir.write(
            &format!(
                "rules: rules.yaml\ninterfaces: [lan0, wan0]\nadapter: {{serial: {SERIAL}}}\n\
                 license: {{url: \"https://{WAN_HOST}:{PORT}\", token_file: grant.token, \
                 ca_file: ca.pem, keys: [provider.pub], recheck: 1s}}\n"
            ),
            DISCARD_RULES,
        )
        .unwrap()
    }
}

#[test]
fn an_adapter_fetches_its_grant_over_https_follows_the_store_and_holds_until_expiry() {
    let Some(site) = common::site("grants_e2e::fetch_follow_expire") else {
        return;
    };
    let Some(postgres) = testbed::require_postgres("grants_e2e::fetch_follow_expire") else {
        return;
    };
    let provider = Provider::new(postgres.database().unwrap());
    let (db, key, ca) = (&provider.db, &provider.key, &provider.ca);
    let (token, other_token) = (&provider.token, &provider.other_token);
    // The server reads the store as a role that may only SELECT; grants hold 6 s.
    let server = provider.serve(&site.wan, "6s");

    // Only the adapter's own token fetches its own grant.
    let url = format!("https://{WAN_HOST}:{PORT}/v1/grants/{SERIAL}");
    let cases = [
        (None, Some(401)),
        (Some("smfg_not-a-token"), Some(401)),
        (Some(other_token.as_str()), Some(403)),
        (Some(token.as_str()), Some(200)),
    ];
    for (presented, expected) in cases {
        assert_eq!(
            status_of(&site.lan, &url, ca, presented),
            expected,
            "{presented:?}"
        );
    }

    // Clients that connect and say nothing (no TLS handshake) do not stop it answering.
    let address: SocketAddr = format!("{WAN_HOST}:{PORT}").parse().unwrap();
    let idle: Vec<TcpStream> = site
        .lan
        .run(move || {
            (0..100)
                .map(|_| TcpStream::connect(address).unwrap())
                .collect()
        })
        .unwrap();
    assert_eq!(
        status_of(&site.lan, &url, ca, Some(token)),
        Some(200),
        "beside 100 idle clients"
    );
    drop(idle);

    // The adapter: its token, the server's CA and the provider's public key; no store.
    let dir = DaemonDir::new().unwrap();
    let config = provider.adapter(&dir);
    let daemon = common::start(&site.adapter, &config);
    let adapter = &site.adapter;
    assert_eq!(
        metric(adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    assert!(reason_is(adapter, "licensed"));
    assert_eq!(
        metric(
            adapter,
            "smf_firewall_license_mode_info",
            &[("mode", "url")]
        ),
        Some(1.0)
    );
    let signing = SigningKey::read(key).unwrap();
    assert_eq!(
        metric(
            adapter,
            "smf_firewall_license_grant_info",
            &[("key_id", signing.id())]
        ),
        Some(1.0)
    );
    let expiry = metric(
        adapter,
        "smf_firewall_license_grant_expiry_timestamp_seconds",
        &[],
    )
    .unwrap();
    assert!(expiry > Utc::now().timestamp() as f64, "{expiry}");
    assert_eq!(
        site.udp_through(DROPPED, 3).unwrap(),
        0,
        "licensed: UDP 9 is dropped"
    );

    // `status` shows the mode, the key id and the expiry, and neither token nor address.
    let status = common::cli(adapter, &["status", "--json"], &config);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["license"]["mode"], "url", "{json}");
    assert_eq!(json["license"]["key_id"], signing.id(), "{json}");
    assert!(json["license"]["valid_until"].is_string(), "{json}");
    let shown = text(&status.stdout);
    assert!(
        !shown.contains(token.as_str()) && !shown.contains(WAN_HOST),
        "{shown}"
    );

    // The provider ends the option: the next renewal turns enforcement off.
    run(&[
        "contracts",
        "terminate",
        "--id",
        "UFO-1",
        "--on",
        &yesterday(),
        "--by",
        "provider",
        "--db",
        db,
    ]);
    until_metric(
        adapter,
        "smf_firewall_license_licensed",
        &[],
        0.0,
        Duration::from_secs(5),
    );
    assert!(reason_is(adapter, "option_terminated"));
    assert_eq!(
        site.udp_through(DROPPED, 3).unwrap(),
        3,
        "not licensed: UDP 9 passes"
    );
    // A new option from today: licensed again at the next renewal.
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .date_naive()
        .to_string();
    run(&[
        "contracts",
        "option",
        "add",
        "--id",
        "UFO-3",
        "--serial",
        SERIAL,
        "--start",
        &today,
        "--db",
        db,
    ]);
    until_metric(
        adapter,
        "smf_firewall_license_licensed",
        &[],
        1.0,
        Duration::from_secs(5),
    );

    // The server stops: the grant holds until its expiry (6 s), then `grant_expired`.
    let expiry = metric(
        adapter,
        "smf_firewall_license_grant_expiry_timestamp_seconds",
        &[],
    )
    .unwrap();
    let stopped = std::time::Instant::now();
    server.signal(Signal::SIGTERM).unwrap();
    let served = server.wait().unwrap();
    let log = text(&served.stderr);
    assert!(
        !log.contains(token.as_str()) && !log.contains(other_token.as_str()),
        "the server logged a token: {log}"
    );
    assert!(log.contains("the token is another adapter's"), "{log}");
    until_at_least(
        adapter,
        "smf_firewall_license_checks_total",
        &[("result", "error")],
        1.0,
        Duration::from_secs(5),
    );
    // The last grant was renewed at most a recheck (1 s) before the stop and holds 6 s.
    if stopped.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            metric(adapter, "smf_firewall_license_licensed", &[]),
            Some(1.0),
            "held while the grant is valid"
        );
    }
    until_metric(
        adapter,
        "smf_firewall_license_licensed",
        &[],
        0.0,
        Duration::from_secs(10),
    );
    assert!(reason_is(adapter, "grant_expired"));
    assert!(
        Utc::now().timestamp() as f64 >= expiry,
        "lapsed before the held grant's expiry"
    );
    assert_eq!(
        site.udp_through(DROPPED, 3).unwrap(),
        3,
        "expired: UDP 9 passes"
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    let log = text(&exit.stderr);
    assert!(exit.status.success(), "{log}");
    assert!(
        !log.contains(token.as_str()),
        "the adapter logged its token: {log}"
    );
    assert!(
        log.contains("the grant in force holds until its expiry"),
        "{log}"
    );
}

/// `grant` with `change` applied, signed by `key`.
fn signed(key: &SigningKey, grant: &Grant, change: impl FnOnce(&mut Grant)) -> String {
    let mut grant = grant.clone();
    change(&mut grant);
    key.sign(&grant)
}

/// `text` with its payload's JSON changed and the signature kept (tampering after signing).
fn tampered(text: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let parts: Vec<&str> = text.trim().split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    change(&mut payload);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// Replaces the grant file whole, as a management system should.
fn deliver(file: &Path, text: &str) {
    let temporary = file.with_extension("tmp");
    std::fs::write(&temporary, format!("{text}\n")).unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

#[test]
fn tampered_grant_files_are_each_refused_and_counted_and_both_keys_verify_during_rotation() {
    let Some(site) = common::site("grants_e2e::tampering_and_rotation") else {
        return;
    };
    let provider = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", provider.path().join("contracts.db").display());
    seed(&db, provider.path());
    let (old_key, old_public) = keygen(provider.path(), "old");
    let (new_key, new_public) = keygen(provider.path(), "new");
    let (stranger_key, _) = keygen(provider.path(), "stranger");
    let grant = |key: &Path, serial: &str, extra: &[&str]| {
        let mut args = vec![
            "license",
            "grant",
            "--serial",
            serial,
            "--key",
            path(key),
            "--valid",
            "1h",
            "--db",
            &db,
        ];
        args.extend_from_slice(extra);
        run(&args).trim().to_string()
    };

    let dir = DaemonDir::new().unwrap();
    let file = dir.path().join("grant.jws");
    let first = grant(
        &old_key,
        SERIAL,
        &["--at", &(Utc::now() - TimeDelta::minutes(10)).to_rfc3339()],
    );
    deliver(&file, &first);
    let config = dir
        .write(
            &format!(
                "rules: rules.yaml\ninterfaces: [lan0, wan0]\nadapter: {{serial: {SERIAL}}}\n\
                 license: {{grant: grant.jws, keys: [{}, {}], recheck: 1h}}\n",
                old_public.display(),
                new_public.display()
            ),
            DISCARD_RULES,
        )
        .unwrap();
    let daemon = common::start(&site.adapter, &config);
    let adapter = &site.adapter;
    assert_eq!(
        metric(adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            adapter,
            "smf_firewall_license_mode_info",
            &[("mode", "grant")]
        ),
        Some(1.0)
    );
    assert_eq!(
        site.udp_through(DROPPED, 2).unwrap(),
        0,
        "licensed: dropped"
    );

    let old = SigningKey::read(&old_key).unwrap();
    let held: Grant =
        firewall_grants::verify(first.as_bytes(), &[old.public()], SERIAL, Utc::now()).unwrap();
    let mut flipped = first.clone().into_bytes();
    let at = flipped.len() - 5;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let older_revocation = signed(&old, &held, |g| {
        g.licensed = false;
        g.reason = "option_terminated".into();
        g.decided_at -= TimeDelta::minutes(5);
        g.valid_from -= TimeDelta::minutes(5);
    });
    // Each row: what the issue names, the file delivered, the reason it is refused. The
    // daemon re-reads the file on each change (no recheck in between: recheck is 1 h).
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a flipped byte",
            String::from_utf8(flipped).unwrap(),
            "grant_bad_signature",
        ),
        (
            "a changed serial",
            tampered(&first, |p| p["serial"] = OTHER.into()),
            "grant_bad_signature",
        ),
        (
            "an extended valid_until",
            tampered(&first, |p| p["valid_until"] = "2099-01-01T00:00:00Z".into()),
            "grant_bad_signature",
        ),
        (
            "a grant signed by an unknown key",
            grant(&stranger_key, SERIAL, &[]),
            "grant_unknown_key",
        ),
        (
            "a truncated file",
            first[..first.len() / 2].to_string(),
            "grant_malformed",
        ),
        (
            "a grant for another adapter",
            grant(&old_key, OTHER, &[]),
            "grant_other_serial",
        ),
        (
            "a grant not valid yet",
            grant(
                &old_key,
                SERIAL,
                &["--at", &(Utc::now() + TimeDelta::hours(1)).to_rfc3339()],
            ),
            "grant_not_yet_valid",
        ),
        (
            "an expired grant",
            grant(
                &old_key,
                SERIAL,
                &["--at", &(Utc::now() - TimeDelta::hours(2)).to_rfc3339()],
            ),
            "grant_expired",
        ),
        (
            "an old not-licensed grant after a newer licensed one",
            older_revocation,
            "grant_replayed",
        ),
    ];
    for (what, text, reason) in cases {
        let labels = [("reason", reason)];
        let before = metric(adapter, "smf_firewall_license_grant_refused_total", &labels).unwrap();
        deliver(&file, &text);
        until_at_least(
            adapter,
            "smf_firewall_license_grant_refused_total",
            &labels,
            before + 1.0,
            Duration::from_secs(5),
        );
        assert_eq!(
            metric(adapter, "smf_firewall_license_licensed", &[]),
            Some(1.0),
            "{what}: the grant in force holds"
        );
        assert!(reason_is(adapter, "licensed"), "{what}");
    }
    assert_eq!(
        site.udp_through(DROPPED, 2).unwrap(),
        0,
        "still enforced after every refusal"
    );

    // Rotation: a grant by the new key verifies beside the old key's.
    let new = SigningKey::read(&new_key).unwrap();
    deliver(&file, &grant(&new_key, SERIAL, &[]));
    until_metric(
        adapter,
        "smf_firewall_license_grant_info",
        &[("key_id", new.id())],
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        metric(adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );

    // Revoking: a newer not-licensed grant turns enforcement off; replaying the older
    // licensed one does not turn it back on.
    let licensed_before = grant(
        &new_key,
        SERIAL,
        &["--at", &(Utc::now() - TimeDelta::minutes(1)).to_rfc3339()],
    );
    run(&[
        "contracts",
        "terminate",
        "--id",
        "UFO-1",
        "--on",
        &yesterday(),
        "--by",
        "provider",
        "--db",
        &db,
    ]);
    deliver(&file, &grant(&new_key, SERIAL, &[]));
    until_metric(
        adapter,
        "smf_firewall_license_licensed",
        &[],
        0.0,
        Duration::from_secs(5),
    );
    assert!(reason_is(adapter, "option_terminated"));
    let labels = [("reason", "grant_replayed")];
    let before = metric(adapter, "smf_firewall_license_grant_refused_total", &labels).unwrap();
    deliver(&file, &licensed_before);
    until_at_least(
        adapter,
        "smf_firewall_license_grant_refused_total",
        &labels,
        before + 1.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        metric(adapter, "smf_firewall_license_licensed", &[]),
        Some(0.0)
    );
    assert_eq!(site.udp_through(DROPPED, 2).unwrap(), 2, "revoked: passed");

    // `reload` re-reads the file too.
    let checks = metric(
        adapter,
        "smf_firewall_license_checks_total",
        &[("result", "refused")],
    )
    .unwrap();
    let out = common::cli(adapter, &["reload"], &config);
    assert!(out.status.success(), "{out:?}");
    until_at_least(
        adapter,
        "smf_firewall_license_checks_total",
        &[("result", "refused")],
        checks + 1.0,
        Duration::from_secs(5),
    );

    daemon.signal(Signal::SIGTERM).unwrap();
    let exit = daemon.wait().unwrap();
    assert!(exit.status.success(), "{}", text(&exit.stderr));
}

#[test]
fn a_daemon_restarted_while_the_grant_server_is_down_holds_the_grant_it_fetched() {
    let Some(site) = common::site("grants_e2e::restart_server_down") else {
        return;
    };
    let Some(postgres) = testbed::require_postgres("grants_e2e::restart_server_down") else {
        return;
    };
    let provider = Provider::new(postgres.database().unwrap());
    let server = provider.serve(&site.wan, "1h");
    let dir = DaemonDir::new().unwrap();
    let config = provider.adapter(&dir);
    let daemon = common::start(&site.adapter, &config);
    assert_eq!(
        metric(&site.adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    // Killed: the kernel goes on enforcing; then the server goes away too.
    daemon.signal(Signal::SIGKILL).unwrap();
    daemon.wait().unwrap();
    server.signal(Signal::SIGTERM).unwrap();
    server.wait().unwrap();
    assert_eq!(
        site.udp_through(DROPPED, 2).unwrap(),
        0,
        "enforced with no daemon"
    );
    // The new daemon cannot fetch, and holds the grant the last one fetched.
    let daemon = common::start(&site.adapter, &config);
    assert_eq!(
        metric(&site.adapter, "smf_firewall_license_licensed", &[]),
        Some(1.0)
    );
    assert!(reason_is(&site.adapter, "licensed"));
    assert!(
        metric(
            &site.adapter,
            "smf_firewall_license_checks_total",
            &[("result", "error")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        site.udp_through(DROPPED, 2).unwrap(),
        0,
        "still enforced after the restart"
    );
    daemon.signal(Signal::SIGTERM).unwrap();
    let log = text(&daemon.wait().unwrap().stderr);
    assert!(
        log.contains("holding the grant fetched before the restart"),
        "{log}"
    );
}
