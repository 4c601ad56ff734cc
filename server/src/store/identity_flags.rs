//! Identity flags (see `crate::identity`): which responses name a model or its maker, the prompts
//! that hold them, and the votes cast on comparisons that showed one.

use std::collections::HashSet;

use moat_app::wire::FlaggedResponse;
use sqlx::Row;

use super::{Store, StoreResult, WriteTx};
use crate::identity::IdentityDetector;

impl Store {
    /// The study's flagged responses (the first `limit`, in prompt order) and how many there are.
    pub async fn flagged_responses(
        &self,
        study_id: i64,
        limit: i64,
    ) -> StoreResult<(Vec<FlaggedResponse>, i64)> {
        let rows = sqlx::query(
            "SELECT p.external_id, m.name, r.identity_flag FROM responses r \
             JOIN prompts p ON p.id = r.prompt_id JOIN models m ON m.id = r.model_id \
             WHERE p.study_id = $1 AND p.identity_flagged = 1 AND r.identity_flag IS NOT NULL \
             ORDER BY p.id, r.id LIMIT $2",
        )
        .bind(study_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let flagged = rows
            .iter()
            .map(|row| {
                Ok(FlaggedResponse {
                    prompt: row.try_get("external_id")?,
                    model: row.try_get("name")?,
                    words: row.try_get("identity_flag")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let total: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM responses r JOIN prompts p ON p.id = r.prompt_id \
             WHERE p.study_id = $1 AND p.identity_flagged = 1 AND r.identity_flag IS NOT NULL",
        )
        .bind(study_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok((flagged, total))
    }

    /// The ids of the study's votes on a comparison where either response is flagged: the rater may
    /// have known a model.
    pub async fn flagged_vote_ids(&self, study_id: i64) -> StoreResult<HashSet<i64>> {
        let rows = sqlx::query(
            "SELECT v.id FROM votes v JOIN assignments a ON a.id = v.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id \
             JOIN responses lr ON lr.id = a.left_response_id \
             JOIN responses rr ON rr.id = a.right_response_id \
             WHERE p.study_id = $1 AND p.identity_flagged = 1 \
             AND (lr.identity_flag IS NOT NULL OR rr.identity_flag IS NOT NULL)",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<i64, _>("id")?))
            .collect()
    }
}

impl Store {
    /// Checks every response of the study again with its current models (for responses written
    /// before the check existed, or after models were added) and sets the flags of responses and
    /// prompts to match, in one transaction. Returns (flagged responses before, after).
    pub async fn rescan_identity_flags(&self, study_id: i64) -> StoreResult<(i64, i64)> {
        let mut tx = self.begin_write().await?;
        let detector = IdentityDetector::new(&tx.model_identities(study_id).await?);
        let (mut before, mut after, mut last_id) = (0, 0, 0i64);
        loop {
            // In pages by id, so a large study's texts are never all in memory.
            let rows = sqlx::query(
                "SELECT r.id, r.content, r.identity_flag FROM responses r \
                 JOIN prompts p ON p.id = r.prompt_id \
                 WHERE p.study_id = $1 AND r.id > $2 ORDER BY r.id LIMIT 1000",
            )
            .bind(study_id)
            .bind(last_id)
            .fetch_all(&mut *tx.tx)
            .await?;
            let Some(last) = rows.last() else { break };
            last_id = last.try_get("id")?;
            for row in &rows {
                let old: Option<String> = row.try_get("identity_flag")?;
                let content: String = row.try_get("content")?;
                let new = detector.flag(&content);
                before += i64::from(old.is_some());
                after += i64::from(new.is_some());
                if new != old {
                    sqlx::query("UPDATE responses SET identity_flag = $1 WHERE id = $2")
                        .bind(new)
                        .bind(row.try_get::<i64, _>("id")?)
                        .execute(&mut *tx.tx)
                        .await?;
                }
            }
        }
        sqlx::query(
            "UPDATE prompts SET identity_flagged = CASE WHEN EXISTS (SELECT 1 FROM responses r \
             WHERE r.prompt_id = prompts.id AND r.identity_flag IS NOT NULL) THEN 1 ELSE 0 END \
             WHERE study_id = $1",
        )
        .bind(study_id)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok((before, after))
    }
}

/// Marks a prompt as having a response that names its maker (shared with the arena's writes).
pub(super) const FLAG_PROMPT: &str = "UPDATE prompts SET identity_flagged = 1 WHERE id = $1";

impl WriteTx<'_> {
    /// Marks a prompt as holding an identity-flagged response (`prompts.identity_flagged`).
    pub async fn flag_prompt(&mut self, prompt_id: i64) -> StoreResult<()> {
        sqlx::query(FLAG_PROMPT)
            .bind(prompt_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The study's models as (name, provider): what the identity detector looks for.
    pub async fn model_identities(&mut self, study_id: i64) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, provider FROM models WHERE study_id = $1 ORDER BY id")
            .bind(study_id)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("provider")?)))
            .collect()
    }

    /// The identity flag of one response text in study `study_id` (its models' names and providers
    /// and the common self-identifications); imports keep one detector for many texts instead.
    pub async fn identity_flag(
        &mut self,
        study_id: i64,
        text: &str,
    ) -> StoreResult<Option<String>> {
        let models = self.model_identities(study_id).await?;
        Ok(IdentityDetector::new(&models).flag(text))
    }
}
