//! `smf-firewall license serve`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use crate::{
    config::{MetricsConfig, TlsFiles},
    grant_server::{self, GrantServer, without_url},
    metrics::server::Endpoint,
};
use anyhow::Context as _;
use firewall_contracts::{Store, tokens};
use firewall_grants::SigningKey;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use super::when::validity;

/// Serve each adapter its current grant over HTTPS.
///
/// `GET /v1/grants/SERIAL` with `Authorization:
/// Bearer TOKEN` (`license token`) answers the grant decided from the store at that instant,
/// signed with --key and valid for --valid; 401 without or with an unknown token, 403 with
/// another adapter's. Reads the store only: a read-only database role is enough (README,
/// "Operating"). Logs no token and no store URL. Runs until SIGTERM or SIGINT.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The address to listen on, e.g. 198.18.0.1:8443 or [::]:8443.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The provider's signing key (`license keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The server's certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// How long each grant served holds: how long an adapter keeps its decision while this
    /// server cannot be reached.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    valid: String,
}

impl Args {
    pub fn run(self, url: &str) -> anyhow::Result<ExitCode> {
        let valid = validity(&self.valid)?;
        let key = SigningKey::read(&self.key)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")?;
        runtime.block_on(async {
            let store = Store::open(url)
                .await
                .map_err(|error| anyhow::anyhow!(without_url(&error)))
                .context("cannot serve grants")?;
            // Fails now, not at the first request, on a store without the token table.
            tokens::serial_of(&store, &"0".repeat(64))
                .await
                .map_err(|error| anyhow::anyhow!(without_url(&error)))
                .context(
                    "the store has no adapter tokens table: run `smf-firewall contracts init` on it (as its owner) first",
                )?;
            let endpoint = Endpoint::bind(&MetricsConfig {
                listen: self.listen,
                tls: Some(TlsFiles {
                    cert_file: self.tls_cert.clone(),
                    key_file: self.tls_key.clone(),
                }),
                basic_auth_users: Default::default(),
            })
            .await
            .context("cannot serve grants")?;
            info!(
                listen = %self.listen,
                key_id = key.id(),
                valid = %humantime::format_duration(valid.to_std().unwrap_or_default()),
                "serving grants on https://{}/v1/grants/SERIAL",
                self.listen
            );
            let app = grant_server::app(Arc::new(GrantServer { store, key, valid }));
            let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for signals")?;
            tokio::select! {
                served = endpoint.serve(app) => served.context("the grant server stopped")?,
                _ = sigterm.recv() => info!(signal = "SIGTERM", "stopping"),
                _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "stopping"),
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}
