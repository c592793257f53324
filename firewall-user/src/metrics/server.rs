//! Serving `/metrics`: plain HTTP on loopback by default; HTTPS (rustls) and HTTP basic auth
//! against bcrypt hashes when configured, as in Prometheus' exporter-toolkit web config. The
//! config refuses a non-loopback address without both (Art. 17).

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{
        HeaderValue, StatusCode,
        header::{AUTHORIZATION, WWW_AUTHENTICATE},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use axum_server::tls_rustls::RustlsConfig;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::config::{MetricsConfig, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot serve metrics on {address}: {source}")]
    Io {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot use the TLS certificate {} with the key {}: {source}",
        files.cert_file.display(),
        files.key_file.display()
    )]
    Tls {
        files: TlsFiles,
        source: std::io::Error,
    },
}

/// A bound listener with its TLS settings and users, ready to serve.
pub struct Endpoint {
    listener: std::net::TcpListener,
    address: SocketAddr,
    tls: Option<RustlsConfig>,
    users: Arc<Users>,
}

impl Endpoint {
    /// Binds the address and reads the TLS files, so that a mistake stops the daemon before
    /// it attaches anywhere; nothing is served yet.
    pub async fn bind(config: &MetricsConfig) -> Result<Self, ServeError> {
        let address = config.listen;
        let io = |source| ServeError::Io { address, source };
        let listener = std::net::TcpListener::bind(address).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let tls = match &config.tls {
            Some(files) => Some(
                RustlsConfig::from_pem_file(&files.cert_file, &files.key_file)
                    .await
                    .map_err(|source| ServeError::Tls {
                        files: files.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            address,
            tls,
            users: Arc::new(Users(config.basic_auth_users.clone())),
        })
    }

    /// "https" or "http", for the log.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves `app` until the task is dropped, behind basic auth when users are configured.
    ///
    /// One client never stops the server: at most [`MAX_CONNECTIONS`] connections are served
    /// at once and the ones beyond are closed as soon as they are accepted (not queued); a
    /// connection that completes no TLS handshake or sends no complete request head within
    /// [`HEADER_READ_TIMEOUT`] (also between the requests of a kept-alive connection) or lives
    /// longer than [`CONNECTION_LIFETIME`] is closed; an accept() error (out of file
    /// descriptors, a connection aborted) is logged and retried after [`ACCEPT_BACKOFF`].
    pub async fn serve(self, app: Router) -> Result<(), ServeError> {
        let app = if self.users.0.is_empty() {
            app
        } else {
            app.layer(middleware::from_fn_with_state(
                Arc::clone(&self.users),
                authenticate,
            ))
        };
        let address = self.address;
        let io = |source| ServeError::Io { address, source };
        let listener = tokio::net::TcpListener::from_std(self.listener).map_err(io)?;
        let tls = self.tls.map(|config| {
            // Only HTTP/1 is served: offering h2 in ALPN (as RustlsConfig does) makes clients
            // such as curl speak HTTP/2 into an HTTP/1 server.
            let mut inner = (*config.get_inner()).clone();
            inner.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(inner))
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "cannot accept a metrics connection; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                debug!(
                    limit = MAX_CONNECTIONS,
                    "too many metrics connections: closed a new one"
                );
                drop(stream);
                continue;
            };
            let (app, tls) = (app.clone(), tls.clone());
            tokio::spawn(async move {
                let served = tokio::time::timeout(CONNECTION_LIFETIME, async move {
                    match tls {
                        // A handshake gets the time of a request head, not a connection's.
                        Some(tls) => {
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => serve_connection(stream, app).await,
                                Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
                                Err(_) => debug!("TLS handshake not done in time: closed"),
                            }
                        }
                        None => serve_connection(stream, app).await,
                    }
                })
                .await;
                if served.is_err() {
                    debug!("closed a metrics connection open too long");
                }
                drop(slot);
            });
        }
    }
}

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to send a request's head, and stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may stay open, whatever it does (a client reading slowly).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The pause after an accept() error (EMFILE, ENFILE, ECONNABORTED, ...) before the next one.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One HTTP/1 connection, with the header-read (and keep-alive idle) timeout.
async fn serve_connection<S>(stream: S, app: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
    if let Err(error) = served {
        debug!(%error, "metrics connection ended");
    }
}

/// User names and their bcrypt hashes.
struct Users(BTreeMap<String, String>);

impl Users {
    /// Checks a password on a blocking thread: bcrypt is slow on purpose. An unknown user
    /// costs the same check against another user's hash, so timing does not tell which names
    /// exist.
    async fn verify(self: Arc<Self>, user: String, password: String) -> bool {
        let checked = tokio::task::spawn_blocking(move || {
            let (hash, known) = match self.0.get(&user) {
                Some(hash) => (hash, true),
                None => match self.0.values().next() {
                    Some(hash) => (hash, false),
                    None => return false,
                },
            };
            match bcrypt::verify(password, hash) {
                Ok(matched) => known && matched,
                Err(error) => {
                    warn!(user, %error, "cannot check a password against its bcrypt hash");
                    false
                }
            }
        })
        .await;
        checked.unwrap_or(false)
    }
}

/// Lets a request through with the right `Authorization: Basic ...`, else answers 401.
async fn authenticate(State(users): State<Arc<Users>>, request: Request, next: Next) -> Response {
    let credentials = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(basic_credentials);
    let allowed = match credentials {
        Some((user, password)) => users.verify(user, password).await,
        None => false,
    };
    if allowed {
        return next.run(request).await;
    }
    debug!("refused a request for metrics without valid credentials");
    (
        StatusCode::UNAUTHORIZED,
        [(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"smf-firewall\""),
        )],
        "401 unauthorized: metrics need a user name and password\n",
    )
        .into_response()
}

/// The user and password of an `Authorization: Basic base64(user:password)` header.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let encoded = header.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each row: the header, the credentials it carries.
    #[test]
    fn basic_credentials_are_decoded() {
        let cases = [
            ("Basic cHJvbTpzM2NyZXQ=", Some(("prom", "s3cret"))),
            ("Basic cHJvbTpzOmM=", Some(("prom", "s:c"))), // a ':' in the password
            ("Basic cHJvbQ==", None),                      // no ':'
            ("Bearer cHJvbTpzM2NyZXQ=", None),
            ("Basic !!!", None),
        ];
        for (header, expected) in cases {
            let got = basic_credentials(&HeaderValue::from_static(header));
            let expected = expected.map(|(u, p)| (u.to_string(), p.to_string()));
            assert_eq!(got, expected, "{header}");
        }
    }

    #[tokio::test]
    async fn only_the_right_password_of_a_known_user_passes() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let users = Arc::new(Users([("prom".to_string(), hash)].into()));
        let cases = [
            ("prom", "right", true),
            ("prom", "wrong", false),
            ("other", "right", false),
            ("prom", "", false),
        ];
        for (user, password, allowed) in cases {
            let got = Arc::clone(&users)
                .verify(user.to_string(), password.to_string())
                .await;
            assert_eq!(got, allowed, "{user}:{password}");
        }
    }
}
