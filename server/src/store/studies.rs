//! Studies, their models and prompts, and per-model results.

use super::*;

impl Store {
    pub async fn create_study(
        &self,
        slug: &StudySlug,
        title: &str,
        instructions: &str,
        settings: &StudySettings,
    ) -> StoreResult<StudyRow> {
        let mut tx = self.begin_write().await?;
        let study = tx.create_study(slug, title, instructions, settings).await?;
        tx.commit().await?;
        Ok(study)
    }

    pub async fn study(&self, slug: &str) -> StoreResult<StudyRow> {
        let row = sqlx::query(
            "SELECT id, slug, title, instructions, status, settings FROM studies WHERE slug = $1",
        )
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no study with slug {slug:?}")))?;
        Ok(study_from_row(&row)?)
    }

    pub async fn update_study(
        &self,
        slug: &str,
        title: &str,
        instructions: &str,
        settings: &StudySettings,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE studies SET title = $1, instructions = $2, settings = $3 WHERE slug = $4",
        )
        .bind(title)
        .bind(instructions)
        .bind(serde_json::to_string(settings).expect("settings serialize"))
        .bind(slug)
        .execute(&mut *tx.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no study with slug {slug:?}")));
        }
        tx.commit().await
    }

    pub async fn set_study_status(&self, slug: &str, status: StudyStatus) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE studies SET status = $1 WHERE slug = $2")
            .bind(status.as_str())
            .bind(slug)
            .execute(&mut *tx.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no study with slug {slug:?}")));
        }
        tx.commit().await
    }

    pub async fn list_studies(&self) -> StoreResult<Vec<StudySummary>> {
        let rows = sqlx::query(study_summaries_sql!(""))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(summary_from_row).collect()
    }

    pub async fn study_summary(&self, slug: &str) -> StoreResult<StudySummary> {
        let row = sqlx::query(study_summaries_sql!("WHERE s.slug = $1"))
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no study with slug {slug:?}")))?;
        summary_from_row(&row)
    }

    pub async fn models(&self, study_id: i64) -> StoreResult<Vec<ModelRow>> {
        const SQL: &str =
            "SELECT id, name, provider, openness FROM models WHERE study_id = $1 ORDER BY id";
        // Read at each arena battle's end (its identity check): where the request is, on a file.
        if let Some(read) = self.native_rows(SQL, &[&study_id], |row| {
            let openness: String = row.get("openness")?;
            Ok(ModelRow {
                id: row.get("id")?,
                name: row.get("name")?,
                provider: row.get("provider")?,
                openness: db_openness(&openness)?,
            })
        }) {
            return read;
        }
        let rows = sqlx::query(SQL)
            .bind(study_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let openness: String = row.try_get("openness")?;
                Ok(ModelRow {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    provider: row.try_get("provider")?,
                    openness: db_openness(&openness)?,
                })
            })
            .collect()
    }

    /// How many prompts a rater of the study can be shown (each has two or more responses): the
    /// regular ones, and the quality-check items when the study shows checks; those with an
    /// identity-flagged response only when the study shows flagged items.
    pub async fn comparable_prompts(
        &self,
        study_id: i64,
        with_checks: bool,
        show_flagged: bool,
    ) -> StoreResult<i64> {
        let sql = if with_checks {
            "SELECT COUNT(*) AS n FROM prompts p WHERE p.study_id = $1 AND p.identity_flagged <= $2"
        } else {
            "SELECT COUNT(*) AS n FROM prompts p WHERE p.study_id = $1 AND p.identity_flagged <= $2 \
             AND p.check_kind IS NULL"
        };
        Ok(sqlx::query(sql)
            .bind(study_id)
            .bind(i64::from(show_flagged))
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    // ----- raters -----

    /// Results per model from the study's vote tallies.
    pub async fn model_results(&self, study_id: i64) -> StoreResult<Vec<ModelResult>> {
        let models = self.models(study_id).await?;
        let tallies = self.vote_tallies(study_id).await?;
        Ok(crate::domain::model_results(&models, &tallies))
    }
}
