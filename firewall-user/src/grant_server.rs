//! The provider's side of licence grants: a grant signed from the store's decision
//! ([`issue`]), and `smf-firewall license serve`, which answers `GET /v1/grants/SERIAL` with
//! the current grant to the adapter that presents SERIAL's bearer token.
//!
//! Answers: 200 with the grant (`application/jose`); 401 without an `Authorization: Bearer`
//! header or with a token the store does not know; 403 with another adapter's token; 503
//! when the store cannot answer. The server reads the store only (a read-only database role
//! is enough) and logs neither tokens nor their hashes nor the store's URL. Connections are
//! bounded and timed out as for `/metrics` (`metrics::server`).

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, TimeDelta, Utc};
use firewall_contracts::{
    Store, StoreError,
    license::{self, Check},
    tokens,
};
use firewall_grants::{Decision, Grant, SigningKey, token};
use tracing::{debug, info, warn};

/// A decision of the store as the unsigned content of a grant.
pub fn decision(check: &Check, at: DateTime<Utc>) -> Decision {
    Decision {
        serial: check.serial.clone(),
        model: check.model.map_or("", |m| m.name()).to_string(),
        role: check.role.map_or("", |r| r.name()).to_string(),
        licensed: check.decision.licensed,
        reason: check.decision.reason.name().to_string(),
        decided_at: at,
    }
}

/// Decides for `serial` at `at` and signs the answer, valid for `valid` from `at`.
pub async fn issue(
    store: &Store,
    key: &SigningKey,
    serial: &str,
    at: DateTime<Utc>,
    valid: TimeDelta,
) -> Result<(Grant, String), StoreError> {
    let check = license::decide(store, serial, at).await?;
    Ok(key.issue(&decision(&check, at), valid))
}

/// What `license serve` answers from.
pub struct GrantServer {
    pub store: Store,
    pub key: SigningKey,
    /// The validity of each grant served, from the instant of the request.
    pub valid: TimeDelta,
}

/// `GET /v1/grants/{serial}`.
pub fn app(server: Arc<GrantServer>) -> Router {
    Router::new()
        .route("/v1/grants/{serial}", get(grant))
        .with_state(server)
}

async fn grant(
    State(server): State<Arc<GrantServer>>,
    Path(serial): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(presented) = bearer(&headers) else {
        debug!(serial, "refused a grant request without a bearer token");
        return unauthorized("a bearer token is needed");
    };
    let owner = match tokens::serial_of(&server.store, &token::hash(presented)).await {
        Ok(owner) => owner,
        Err(error) => return unavailable(&error),
    };
    match owner {
        None => {
            info!(serial, "refused a grant request with an unknown token");
            unauthorized("the token is not known")
        }
        Some(owner) if owner != serial => {
            warn!(
                serial,
                token_of = owner,
                "refused a grant request: the token is another adapter's"
            );
            (
                StatusCode::FORBIDDEN,
                "403 forbidden: an adapter may fetch only its own grant\n",
            )
                .into_response()
        }
        Some(_) => match issue(
            &server.store,
            &server.key,
            &serial,
            Utc::now(),
            server.valid,
        )
        .await
        {
            Ok((grant, text)) => {
                debug!(
                    serial,
                    licensed = grant.licensed,
                    reason = grant.reason,
                    "served a grant"
                );
                (
                    [
                        (
                            CONTENT_TYPE,
                            HeaderValue::from_static(firewall_grants::MEDIA_TYPE),
                        ),
                        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    ],
                    text,
                )
                    .into_response()
            }
            Err(error) => unavailable(&error),
        },
    }
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"smf-firewall grants\""),
        )],
        format!("401 unauthorized: {why}\n"),
    )
        .into_response()
}

fn unavailable(error: &StoreError) -> Response {
    warn!(error = %without_url(error), "cannot answer a grant request: the contract store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "503 service unavailable: the contract store cannot answer\n",
    )
        .into_response()
}

/// A store error for the log: without the store's URL, which may hold a password.
pub fn without_url(error: &StoreError) -> String {
    match error {
        StoreError::Unreachable { source, .. } => {
            format!("cannot reach the contract store: {source}")
        }
        StoreError::NotInitialised { .. } => "the contract store is not initialised".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use firewall_contracts::{NewAdapter, Role, model::parse_day};
    use tower::ServiceExt as _;

    /// A store with two licensed adapters, A-1 (with a token) and B-2.
    async fn server(dir: &std::path::Path) -> (Arc<GrantServer>, String) {
        let url = format!("sqlite:{}", dir.join("contracts.db").display());
        let store = Store::init(&url, None, false).await.unwrap();
        let day = parse_day("2020-01-01").unwrap();
        let mut changes = store.begin().await.unwrap();
        changes.add_management("M-1", day).await.unwrap();
        for (n, serial) in ["A-1", "B-2"].into_iter().enumerate() {
            let adapter = NewAdapter {
                serial: serial.into(),
                model: "x86-fuji".parse().unwrap(),
                management: "M-1".into(),
                role: Role::Entry,
                since: day,
                rental: None,
            };
            changes.add_adapter(&adapter).await.unwrap();
            changes
                .add_option(&format!("O-{n}"), serial, day)
                .await
                .unwrap();
        }
        changes.commit().await.unwrap();
        let (secret, hash) = token::generate();
        tokens::set(&store, "A-1", &hash, "2025-01-01T00:00:00Z")
            .await
            .unwrap();
        let server = GrantServer {
            store,
            key: SigningKey::generate(),
            valid: TimeDelta::hours(1),
        };
        (Arc::new(server), secret.to_string())
    }

    async fn get(
        server: &Arc<GrantServer>,
        path: &str,
        auth: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let response = app(Arc::clone(server))
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    // Each row: the path, the Authorization header, the status.
    #[tokio::test]
    async fn an_adapter_gets_only_its_own_grant_with_its_own_token() {
        let dir = tempfile::tempdir().unwrap();
        let (server, secret) = server(dir.path()).await;
        let own = format!("Bearer {secret}");
        let wrong = format!("Bearer {}", token::generate().0.as_str());
        let cases = [
            ("/v1/grants/A-1", None, StatusCode::UNAUTHORIZED),
            (
                "/v1/grants/A-1",
                Some(wrong.as_str()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/v1/grants/A-1",
                Some("Basic QTox"),
                StatusCode::UNAUTHORIZED,
            ),
            ("/v1/grants/A-1", Some("Bearer "), StatusCode::UNAUTHORIZED),
            ("/v1/grants/B-2", Some(own.as_str()), StatusCode::FORBIDDEN),
            ("/v1/grants/C-3", Some(own.as_str()), StatusCode::FORBIDDEN),
            ("/v1/grants/A-1", Some(own.as_str()), StatusCode::OK),
            ("/v1/grants", Some(own.as_str()), StatusCode::NOT_FOUND),
        ];
        for (path, auth, expected) in cases {
            let (status, body) = get(&server, path, auth).await;
            assert_eq!(status, expected, "{path} {auth:?}: {body}");
        }
        let (_, body) = get(&server, "/v1/grants/A-1", Some(&own)).await;
        let grant =
            firewall_grants::verify(body.as_bytes(), &[server.key.public()], "A-1", Utc::now())
                .unwrap();
        assert!(grant.licensed);
        assert_eq!(
            (grant.model.as_str(), grant.role.as_str()),
            ("x86-fuji", "entry")
        );
        assert_eq!(grant.valid_until - grant.valid_from, TimeDelta::hours(1));
    }

    #[test]
    fn store_errors_are_logged_without_the_url() {
        let error = StoreError::NotInitialised {
            url: "postgres://grants:s3cret@db/contracts".into(),
        };
        assert!(!without_url(&error).contains("s3cret"));
    }
}
