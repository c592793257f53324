//! The grant server's credentials (`adapter_tokens`, migration 0003): the SHA-256 of each
//! adapter's bearer token, never the token itself. `smf-firewall license token` writes one,
//! `license serve` finds the adapter a presented token belongs to.

use sqlx::Row;

use crate::store::{Refusal, Store, StoreError};

/// Stores `token_sha256` (64 hex digits) as the token of `serial`, replacing its old one.
pub async fn set(
    store: &Store,
    serial: &str,
    token_sha256: &str,
    issued_at: &str,
) -> Result<(), StoreError> {
    if store.facts(serial).await?.is_none() {
        return Err(Refusal::UnknownAdapter(serial.to_string()).into());
    }
    sqlx::query(
        "INSERT INTO adapter_tokens (serial, token_sha256, issued_at) VALUES ($1, $2, $3) \
         ON CONFLICT (serial) DO UPDATE SET token_sha256 = excluded.token_sha256, issued_at = excluded.issued_at",
    )
    .bind(serial)
    .bind(token_sha256)
    .bind(issued_at)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Removes the token of `serial`; false if it had none.
pub async fn revoke(store: &Store, serial: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM adapter_tokens WHERE serial = $1")
        .bind(serial)
        .execute(store.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The adapter whose token has this hash, if any.
pub async fn serial_of(store: &Store, token_sha256: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT serial FROM adapter_tokens WHERE token_sha256 = $1")
        .bind(token_sha256)
        .fetch_optional(store.pool())
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get("serial")?),
        None => None,
    })
}
