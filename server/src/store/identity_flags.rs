//! Identity flags (see `crate::identity`): which responses name a model or its maker, the prompts
//! that hold them, and the votes cast on comparisons that showed one.

use std::collections::HashSet;

use moat_app::wire::FlaggedResponse;
use sqlx::Row;

use super::{Store, StoreResult, WriteTx};

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

impl WriteTx<'_> {
    /// Marks a prompt as holding an identity-flagged response (`prompts.identity_flagged`).
    pub async fn flag_prompt(&mut self, prompt_id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE prompts SET identity_flagged = 1 WHERE id = $1")
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
        Ok(crate::identity::IdentityDetector::new(&models).flag(text))
    }
}
