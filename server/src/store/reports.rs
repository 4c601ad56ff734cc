//! What the researcher's pages, the statistics and the exports read: tallies, progress per pair,
//! vote records (through the pool), raters' summaries and exclusions.

use super::*;

impl Store {
    /// The public ids of the study's assignments that have a vote.
    pub async fn voted_assignment_ids(&self, study_id: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT a.public_id FROM votes v JOIN assignments a ON a.id = v.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id WHERE p.study_id = $1 ORDER BY v.id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("public_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Preference votes of the study aggregated by (left model, right model, choice): no votes on
    /// quality checks, none of raters marked excluded (as in the leaderboard and the exports).
    pub async fn vote_tallies(&self, study_id: i64) -> StoreResult<Vec<VoteTally>> {
        let rows = sqlx::query(
            "SELECT lr.model_id AS left_model, rr.model_id AS right_model, v.choice, COUNT(*) AS n \
             FROM votes v JOIN assignments a ON a.id = v.assignment_id JOIN prompts p ON p.id = a.prompt_id \
             JOIN raters r ON r.id = a.rater_id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN responses rr ON rr.id = a.right_response_id \
             WHERE p.study_id = $1 AND a.kind NOT IN ('attention', 'gold') AND r.status <> 'excluded' \
             GROUP BY lr.model_id, rr.model_id, v.choice",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let choice: String = row.try_get("choice")?;
                Ok(VoteTally {
                    left_model: row.try_get("left_model")?,
                    right_model: row.try_get("right_model")?,
                    choice: db_choice(&choice)?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }

    /// Shown and voted counts per model pair.
    pub async fn pair_progress(
        &self,
        study_id: i64,
        models: &[ModelRow],
    ) -> StoreResult<Vec<PairProgress>> {
        let shown = self.pair_counts(study_id).await?;
        let voted: HashMap<(i64, i64), i64> = sqlx::query(
            "SELECT a.model_low, a.model_high, COUNT(*) AS n FROM votes v JOIN assignments a ON a.id = v.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id WHERE p.study_id = $1 AND a.kind NOT IN ('attention', 'gold') \
             GROUP BY a.model_low, a.model_high",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok(((row.try_get("model_low")?, row.try_get("model_high")?), row.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let name = |id: i64| {
            models
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        let mut pairs: Vec<PairProgress> = shown
            .iter()
            .map(|(&(low, high), &n)| PairProgress {
                model_a: name(low),
                model_b: name(high),
                shown: n,
                votes: voted.get(&(low, high)).copied().unwrap_or(0),
            })
            .collect();
        pairs.sort_by(|a, b| (&a.model_a, &a.model_b).cmp(&(&b.model_a, &b.model_b)));
        Ok(pairs)
    }

    pub async fn vote_durations_ms(&self, study_id: i64) -> StoreResult<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT v.time_on_page_ms FROM votes v JOIN assignments a ON a.id = v.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id WHERE p.study_id = $1 AND v.time_on_page_ms IS NOT NULL",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("time_on_page_ms"))
            .collect::<Result<_, _>>()?)
    }

    /// Every vote of the study as an export record, in vote-id order, streamed from the database.
    pub fn vote_records<'a>(
        &'a self,
        study: &'a StudyRow,
    ) -> impl Stream<Item = StoreResult<VoteRecord>> + 'a {
        self.vote_records_ordered(study, false)
    }

    /// The study's votes as export records, newest first (for a reader that wants only the latest).
    pub fn vote_records_newest_first<'a>(
        &'a self,
        study: &'a StudyRow,
    ) -> impl Stream<Item = StoreResult<VoteRecord>> + 'a {
        self.records_in_order(study, vote_records_sql!("v.id DESC"))
    }

    /// How many training pairs the study's votes give: decided votes (`left` or `right`) on regular
    /// comparisons (not quality checks) by raters who are not excluded, as `moat train --study`
    /// reads them.
    pub async fn decided_vote_count(&self, study_id: i64) -> StoreResult<usize> {
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM votes v JOIN assignments a ON a.id = v.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id JOIN raters r ON r.id = a.rater_id \
             WHERE p.study_id = $1 AND v.choice IN ('left', 'right') \
             AND a.kind NOT IN ('attention', 'gold') AND r.status <> 'excluded'",
        )
        .bind(study_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Every vote of the study as an export record, streamed; `by_item` groups the votes of each item
    /// (a prompt and a model pair) together, in vote order within the item.
    pub fn vote_records_ordered<'a>(
        &'a self,
        study: &'a StudyRow,
        by_item: bool,
    ) -> impl Stream<Item = StoreResult<VoteRecord>> + 'a {
        let sql: &'static str = if by_item {
            vote_records_sql!("p.id, a.model_low, a.model_high, v.id")
        } else {
            vote_records_sql!("v.id")
        };
        self.records_in_order(study, sql)
    }

    /// The study's votes as export records, in the order `sql` (a [`vote_records_sql`]) gives.
    fn records_in_order<'a>(
        &'a self,
        study: &'a StudyRow,
        sql: &'static str,
    ) -> impl Stream<Item = StoreResult<VoteRecord>> + 'a {
        sqlx::query(sql)
            .bind(study.id)
            .fetch(&self.pool)
            .map_err(StoreError::from)
            .map(move |row| {
                let row = row?;
                let record = || -> Result<VoteRecord, sqlx::Error> {
                    let conversation: String = row.try_get("conversation")?;
                    let choice: String = row.try_get("choice")?;
                    let left_openness: String = row.try_get("left_openness")?;
                    let right_openness: String = row.try_get("right_openness")?;
                    Ok(VoteRecord {
                        vote_id: row.try_get("id")?,
                        study: study.slug.clone(),
                        prompt_id: row.try_get("external_id")?,
                        conversation: serde_json::from_str(&conversation)
                            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                        category: row.try_get("category")?,
                        language: row.try_get("language")?,
                        left_model: row.try_get("left_model")?,
                        left_openness: db_openness(&left_openness)?,
                        left_response: row.try_get("left_text")?,
                        right_model: row.try_get("right_model")?,
                        right_openness: db_openness(&right_openness)?,
                        right_response: row.try_get("right_text")?,
                        choice: db_choice(&choice)?,
                        rater: row.try_get("pseudonym")?,
                        created_ms: row.try_get("created_ms")?,
                        source_guess: row.try_get("source_guess")?,
                        source_confidence: row.try_get("source_confidence")?,
                        rationale: row.try_get("rationale")?,
                        time_on_page_ms: row.try_get("time_on_page_ms")?,
                        assignment_kind: row.try_get("kind")?,
                        completion_code: row.try_get("completion_code")?,
                        left_history: history_of(row.try_get("left_history")?)?,
                        right_history: history_of(row.try_get("right_history")?)?,
                    })
                };
                Ok(record()?)
            })
    }

    /// Marks a rater (by pseudonym) excluded from analyses and exports, or active again.
    pub async fn set_rater_excluded(
        &self,
        study_id: i64,
        pseudonym: &str,
        excluded: bool,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let done =
            // An imported annotator included again is `imported` again, not a live session.
            sqlx::query(
                "UPDATE raters SET status = CASE WHEN $1 = 1 THEN 'excluded' \
                 WHEN origin = 'imported' THEN 'imported' ELSE 'active' END \
                 WHERE study_id = $2 AND pseudonym = $3",
            )
                .bind(i64::from(excluded))
                .bind(study_id)
                .bind(pseudonym)
                .execute(&mut *tx.tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no rater {pseudonym:?} in this study"
            )));
        }
        tx.commit().await
    }

    /// The study's raters with their vote counts, most votes first (at most `limit`).
    pub async fn rater_summaries(
        &self,
        study_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<moat_app::wire::RaterSummary>> {
        let rows = sqlx::query(concat!(
            "SELECT r.pseudonym, r.status, r.completion_code, r.expired_assignments, COUNT(v.id) AS votes, \
             (SELECT COUNT(*) FROM raters d WHERE d.study_id = r.study_id AND d.external_id = r.external_id \
               AND d.id <> r.id) AS other_sessions, \
             AVG(CAST(v.time_on_page_ms AS DOUBLE PRECISION)) AS mean_ms, \
             COALESCE(SUM(CASE WHEN v.choice = 'left' THEN 1 ELSE 0 END), 0) AS lefts, \
             COALESCE(SUM(CASE WHEN v.choice IN ('left', 'right') THEN 1 ELSE 0 END), 0) AS decided, ",
            check_outcome_sums!(),
            " FROM raters r LEFT JOIN assignments a ON a.rater_id = r.id LEFT JOIN votes v ON v.assignment_id = a.id ",
            check_outcome_joins!(),
            " WHERE r.study_id = $1 GROUP BY r.id, r.pseudonym, r.status, r.study_id, r.external_id, \
             r.completion_code, r.expired_assignments ORDER BY COUNT(v.id) DESC, r.id LIMIT $2"
        ))
        .bind(study_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(moat_app::wire::RaterSummary {
                    pseudonym: row.try_get("pseudonym")?,
                    status: row.try_get("status")?,
                    votes: row.try_get("votes")?,
                    mean_seconds: row
                        .try_get::<Option<f64>, _>("mean_ms")?
                        .map(|ms| ms / 1000.0),
                    left_choices: row.try_get("lefts")?,
                    decided: row.try_get("decided")?,
                    checks_passed: row.try_get("passed")?,
                    checks_failed: row.try_get("failed")?,
                    other_sessions: row.try_get("other_sessions")?,
                    completion_code: row.try_get("completion_code")?,
                    expired: row.try_get("expired_assignments")?,
                    // Computed from the votes by `AppService::study_report`.
                    flags: Vec::new(),
                })
            })
            .collect()
    }

    /// The study's preference votes as the rigging tests read them (rater, models on each side,
    /// verdict, time on the page), in vote order: the same votes as `AppService::study_records`
    /// (no quality checks, no excluded raters), without the texts.
    pub async fn rater_votes(&self, study_id: i64) -> StoreResult<Vec<moat_stats::RaterVote>> {
        let rows = sqlx::query(
            "SELECT r.pseudonym, lm.name AS left_model, rm.name AS right_model, v.choice, \
             v.time_on_page_ms FROM votes v JOIN assignments a ON a.id = v.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id JOIN raters r ON r.id = a.rater_id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN models lm ON lm.id = lr.model_id \
             JOIN responses rr ON rr.id = a.right_response_id JOIN models rm ON rm.id = rr.model_id \
             WHERE p.study_id = $1 AND a.kind NOT IN ('attention', 'gold') AND r.status <> 'excluded' \
             ORDER BY v.id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let choice: String = row.try_get("choice")?;
                Ok(moat_stats::RaterVote::new(
                    row.try_get::<String, _>("pseudonym")?,
                    row.try_get::<String, _>("left_model")?,
                    row.try_get::<String, _>("right_model")?,
                    crate::analysis::outcome(db_choice(&choice)?),
                    row.try_get::<Option<i64>, _>("time_on_page_ms")?
                        .and_then(|ms| u64::try_from(ms).ok()),
                ))
            })
            .collect()
    }

    /// Pseudonyms of the study's raters marked excluded.
    pub async fn excluded_raters(
        &self,
        study_id: i64,
    ) -> StoreResult<std::collections::BTreeSet<String>> {
        let rows =
            sqlx::query("SELECT pseudonym FROM raters WHERE study_id = $1 AND status = 'excluded'")
                .bind(study_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("pseudonym"))
            .collect::<Result<_, _>>()?)
    }
}
