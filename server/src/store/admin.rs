//! The admin area's people and their traces: per-person tokens with a role (stored as a SHA-256
//! digest, shown once, revocable), the studies granted to each, browser sessions (a random id in the
//! cookie, only its digest here) and the audit log.

use moat_app::wire::{AdminRole, AdminTokenView, AuditEntry};
use sqlx::Row;

use super::{Store, StoreError, StoreResult, WriteTx};
use crate::domain::{now_ms, random_hex, sha256_hex};

/// Every per-person admin token starts with this, so a leaked one can be recognised (and found by
/// secret scanners), and told apart from an API key (`moat_sk_`).
pub const ADMIN_TOKEN_PREFIX: &str = "moat_at_";

/// A per-person token found by its digest: who it is.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTokenRow {
    pub id: i64,
    pub name: String,
    pub role: AdminRole,
}

/// A session found by the digest of its id, before its expiry is judged.
#[derive(Debug, Clone)]
pub struct AdminSessionRow {
    /// `None`: the bootstrap owner (configured admin token).
    pub token: Option<AdminTokenRow>,
    /// The token's row was revoked (the session must not be honoured).
    pub token_revoked: bool,
    /// The digest of the token the session was opened with.
    pub credential_sha256: String,
    pub last_seen_ms: i64,
    pub expires_ms: i64,
}

fn role_of(text: &str) -> Result<AdminRole, StoreError> {
    AdminRole::parse(text).map_err(|e| StoreError::Invalid(format!("admin_tokens.role: {e}")))
}

/// The ids of the studies `slugs` name, or which one does not exist.
async fn study_ids_to_grant(tx: &mut WriteTx<'_>, slugs: &[String]) -> StoreResult<Vec<i64>> {
    let mut study_ids = Vec::new();
    for slug in slugs {
        let row = sqlx::query("SELECT id FROM studies WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no study with slug {slug:?} to grant")))?;
        study_ids.push(row.try_get::<i64, _>("id")?);
    }
    Ok(study_ids)
}

/// Gives token `token_id` the studies `study_ids` (those it has already stay).
async fn grant_studies(tx: &mut WriteTx<'_>, token_id: i64, study_ids: &[i64]) -> StoreResult<()> {
    for &study_id in study_ids {
        sqlx::query(
            "INSERT INTO admin_token_studies (token_id, study_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(token_id)
        .bind(study_id)
        .execute(&mut *tx.tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Creates a token named `name` with `role`, granted the studies `study_slugs`, and returns the
    /// token (shown once; only its digest is stored).
    pub async fn create_admin_token(
        &self,
        name: &str,
        role: AdminRole,
        study_slugs: &[String],
    ) -> StoreResult<String> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 100
            || name.chars().any(char::is_control)
            || name == "owner"
            || name == "cli"
        {
            return Err(StoreError::Invalid(
                "an admin token's name is 1 to 100 printable characters, not \"owner\" or \"cli\""
                    .into(),
            ));
        }
        let token = format!("{ADMIN_TOKEN_PREFIX}{}", random_hex(24));
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT 1 AS x FROM admin_tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx.tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "an admin token named {name:?} already exists"
            )));
        }
        let study_ids = study_ids_to_grant(&mut tx, study_slugs).await?;
        let id: i64 = sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_sha256, created_ms) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(sha256_hex(&token))
        .bind(now_ms())
        .fetch_one(&mut *tx.tx)
        .await?
        .try_get("id")?;
        grant_studies(&mut tx, id, &study_ids).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The live (not revoked) token whose digest is `token_sha256`, recording its use.
    pub async fn admin_token_by_digest(
        &self,
        token_sha256: &str,
    ) -> StoreResult<Option<AdminTokenRow>> {
        let row = sqlx::query(
            "SELECT id, name, role, last_used_ms FROM admin_tokens WHERE token_sha256 = $1 AND revoked_ms IS NULL",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let token = AdminTokenRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: role_of(&row.try_get::<String, _>("role")?)?,
        };
        let last_used: Option<i64> = row.try_get("last_used_ms")?;
        // Recorded at most once a minute per token, so a busy script does not turn reads into writes.
        let now = now_ms();
        if last_used.is_none_or(|t| now - t > 60_000) {
            let mut tx = self.begin_write().await?;
            sqlx::query("UPDATE admin_tokens SET last_used_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(token.id)
                .execute(&mut *tx.tx)
                .await?;
            tx.commit().await?;
        }
        Ok(Some(token))
    }

    pub async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminTokenView>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_ms, last_used_ms, revoked_ms FROM admin_tokens ORDER BY created_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let grants = sqlx::query(
            "SELECT g.token_id, s.slug FROM admin_token_studies g JOIN studies s ON s.id = g.study_id ORDER BY s.slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let mut studies = Vec::new();
            for grant in &grants {
                if grant.try_get::<i64, _>("token_id")? == id {
                    studies.push(grant.try_get("slug")?);
                }
            }
            views.push(AdminTokenView {
                name: row.try_get("name")?,
                role: role_of(&row.try_get::<String, _>("role")?)?,
                studies,
                created_ms: row.try_get("created_ms")?,
                last_used_ms: row.try_get("last_used_ms")?,
                revoked: row.try_get::<Option<i64>, _>("revoked_ms")?.is_some(),
            });
        }
        Ok(views)
    }

    /// Replaces the studies granted to the live token named `name` with `study_slugs` (all of them
    /// must exist; none are changed otherwise).
    pub async fn set_admin_token_studies(
        &self,
        name: &str,
        study_slugs: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query("SELECT id, revoked_ms FROM admin_tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no admin token named {name:?}")))?;
        if found.try_get::<Option<i64>, _>("revoked_ms")?.is_some() {
            return Err(StoreError::Conflict(format!(
                "the admin token {name:?} is revoked; create a new one"
            )));
        }
        let id: i64 = found.try_get("id")?;
        let study_ids = study_ids_to_grant(&mut tx, study_slugs).await?;
        sqlx::query("DELETE FROM admin_token_studies WHERE token_id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        grant_studies(&mut tx, id, &study_ids).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes the token named `name` and ends its sessions (a second revocation is a no-op).
    pub async fn revoke_admin_token(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query("SELECT id FROM admin_tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no admin token named {name:?}")))?;
        let id: i64 = found.try_get("id")?;
        sqlx::query("UPDATE admin_tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query("DELETE FROM admin_sessions WHERE token_id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives token `token_id` study `study_id` (a researcher's new study, or the owner's grant).
    pub async fn grant_study(&self, token_id: i64, study_id: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        grant_studies(&mut tx, token_id, &[study_id]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The slugs of the studies granted to token `token_id`.
    pub async fn granted_study_slugs(&self, token_id: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT s.slug FROM admin_token_studies g JOIN studies s ON s.id = g.study_id WHERE g.token_id = $1",
        )
        .bind(token_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("slug"))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// Opens a session for `token_id` (`None`: the bootstrap owner) and returns its id (for the
    /// cookie; only its digest is stored). Expired sessions of anyone are deleted on the way.
    pub async fn create_admin_session(
        &self,
        token_id: Option<i64>,
        credential_sha256: &str,
        absolute_ms: i64,
    ) -> StoreResult<String> {
        let id = random_hex(32);
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_ms < $1")
            .bind(now)
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions (id_sha256, token_id, credential_sha256, created_ms, last_seen_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(sha256_hex(&id))
        .bind(token_id)
        .bind(credential_sha256)
        .bind(now)
        .bind(now + absolute_ms)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The session whose id is `session_id`, with its token, whatever its expiry.
    pub async fn admin_session(&self, session_id: &str) -> StoreResult<Option<AdminSessionRow>> {
        let row = sqlx::query(
            "SELECT s.token_id, s.credential_sha256, s.last_seen_ms, s.expires_ms, t.name, t.role, t.revoked_ms \
             FROM admin_sessions s LEFT JOIN admin_tokens t ON t.id = s.token_id WHERE s.id_sha256 = $1",
        )
        .bind(sha256_hex(session_id))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let token_id: Option<i64> = row.try_get("token_id")?;
        let (token, token_revoked) = match token_id {
            None => (None, false),
            Some(id) => {
                let name: Option<String> = row.try_get("name")?;
                let role: Option<String> = row.try_get("role")?;
                let revoked: Option<i64> = row.try_get("revoked_ms")?;
                match (name, role) {
                    (Some(name), Some(role)) => (
                        Some(AdminTokenRow {
                            id,
                            name,
                            role: role_of(&role)?,
                        }),
                        revoked.is_some(),
                    ),
                    // The token row is gone: treat as revoked.
                    _ => (None, true),
                }
            }
        };
        Ok(Some(AdminSessionRow {
            token,
            token_revoked,
            credential_sha256: row.try_get("credential_sha256")?,
            last_seen_ms: row.try_get("last_seen_ms")?,
            expires_ms: row.try_get("expires_ms")?,
        }))
    }

    /// Records that session `session_id` was used now.
    pub async fn touch_admin_session(&self, session_id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE admin_sessions SET last_seen_ms = $1 WHERE id_sha256 = $2")
            .bind(now_ms())
            .bind(sha256_hex(session_id))
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends session `session_id`; whether there was one.
    pub async fn delete_admin_session(&self, session_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM admin_sessions WHERE id_sha256 = $1")
            .bind(sha256_hex(session_id))
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Appends one row to the audit log.
    pub async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit rows, newest first.
    pub async fn audit_log(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
