//! API keys for Moat's OpenAI-compatible endpoint: named, stored as a SHA-256 digest, revocable.

use sqlx::Row;

use super::{Store, StoreError, StoreResult};
use crate::domain::{now_ms, random_hex, sha256_hex};

/// Every key starts with this, so a leaked key can be recognised (and found by secret scanners).
pub const API_KEY_PREFIX: &str = "moat_sk_";

/// A key as listed: never the key itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyRow {
    pub name: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked: bool,
}

impl Store {
    /// Creates a key named `name` and returns the key (shown once; only its digest is stored).
    pub async fn create_api_key(&self, name: &str) -> StoreResult<String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "an API key's name is 1 to 100 printable characters".into(),
            ));
        }
        let key = format!("{API_KEY_PREFIX}{}", random_hex(24));
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT 1 AS x FROM api_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx.tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "an API key named {name:?} already exists"
            )));
        }
        sqlx::query("INSERT INTO api_keys (name, key_sha256, created_ms) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(sha256_hex(&key))
            .bind(now_ms())
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(key)
    }

    /// The name of the live key whose digest is `key_sha256`, recording its use.
    pub async fn api_key_owner(&self, key_sha256: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT name, last_used_ms FROM api_keys WHERE key_sha256 = $1 AND revoked_ms IS NULL",
        )
        .bind(key_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let name: String = row.try_get("name")?;
        let last_used: Option<i64> = row.try_get("last_used_ms")?;
        // Recorded at most once a minute per key, so a busy client does not turn reads into writes.
        let now = now_ms();
        if last_used.is_none_or(|t| now - t > 60_000) {
            let mut tx = self.begin_write().await?;
            sqlx::query("UPDATE api_keys SET last_used_ms = $1 WHERE key_sha256 = $2")
                .bind(now)
                .bind(key_sha256)
                .execute(&mut *tx.tx)
                .await?;
            tx.commit().await?;
        }
        Ok(Some(name))
    }

    pub async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let rows = sqlx::query(
            "SELECT name, created_ms, last_used_ms, revoked_ms FROM api_keys ORDER BY created_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiKeyRow {
                    name: row.try_get("name")?,
                    created_ms: row.try_get("created_ms")?,
                    last_used_ms: row.try_get("last_used_ms")?,
                    revoked: row.try_get::<Option<i64>, _>("revoked_ms")?.is_some(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Revokes the key named `name` (a second revocation is a no-op).
    pub async fn revoke_api_key(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query("SELECT 1 AS x FROM api_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx.tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("no API key named {name:?}")));
        }
        sqlx::query("UPDATE api_keys SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
