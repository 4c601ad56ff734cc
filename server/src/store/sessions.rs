//! Rater sessions: joining a study (under its limits), finding a rater by token or completion code,
//! reveals after votes, expiring unvoted assignments, and excluding raters.

use super::*;

/// A rater's oldest open assignment in a state (`$1` rater, `$2` 'issued' or 'voted'). The state is
/// compared as `CAST($2 AS TEXT)`, not `$2`: SQLite's planner would otherwise test a bare parameter
/// against the partial index `assignments_expiry (… WHERE state = 'issued')` with its bound value,
/// and then compile the statement anew each time the parameter is bound — on every rater request
/// (5% of the server's time at a battle's start, `perf`). `state <> 'done'`, written out, lets it
/// read the partial index `assignments_open (rater_id, state, id)` of open rows.
pub const ASSIGNMENT_IN_STATE_SQL: &str = "SELECT a.public_id, a.expires_ms, p.conversation, lr.content AS left_text, rr.content AS right_text, \
     lr.history AS left_history, rr.history AS right_history \
     FROM assignments a JOIN prompts p ON p.id = a.prompt_id \
     JOIN responses lr ON lr.id = a.left_response_id JOIN responses rr ON rr.id = a.right_response_id \
     WHERE a.rater_id = $1 AND a.state = CAST($2 AS TEXT) AND a.state <> 'done' ORDER BY a.id LIMIT 1";

impl Store {
    /// Starts a rater session and returns its secret token, within the study's `limits` (refused
    /// with [`StoreError::Limited`] past them).
    pub async fn join_rater(
        &self,
        study_id: i64,
        external_id: Option<&str>,
        limits: &JoinLimits,
    ) -> StoreResult<String> {
        let token = random_hex(32);
        let hash = sha256_hex(&token);
        let mut tx = self.begin_write().await?;
        if self.dialect == Dialect::Postgres {
            // Consents of one study take turns, so two racing ones cannot both pass a limit
            // (SQLite's writer lock already serializes them).
            sqlx::query("SELECT id FROM studies WHERE id = $1 FOR UPDATE")
                .bind(study_id)
                .execute(&mut *tx.tx)
                .await?;
        }
        // A session is bound to its cookie: a participant id that joins again (another browser, or
        // someone who knows the id) gets a session of its own, never the other one's token or pending
        // comparison; the researcher sees the duplicate sessions. An imported dataset's annotator is
        // no session at all and can never be joined.
        if let Some(external) = external_id {
            let imported = sqlx::query(
                "SELECT 1 AS x FROM raters WHERE study_id = $1 AND external_id = $2 AND origin = 'imported'",
            )
            .bind(study_id)
            .bind(external)
            .fetch_optional(&mut *tx.tx)
            .await?;
            if imported.is_some() {
                return Err(StoreError::Conflict(
                    "this participant id cannot join this study".into(),
                ));
            }
        }
        let now = now_ms();
        if limits.per_minute > 0 {
            let recent: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM raters WHERE study_id = $1 AND created_ms > $2 AND origin = 'session'",
            )
            .bind(study_id)
            .bind(now - 60_000)
            .fetch_one(&mut *tx.tx)
            .await?
            .try_get("n")?;
            if recent >= i64::from(limits.per_minute) {
                return Err(StoreError::Limited(
                    "this study is taking in as many new participants as it can right now; \
                     please try again in a minute"
                        .into(),
                ));
            }
        }
        if let (Some(client), true) = (&limits.client_hash, limits.sessions_per_client > 0) {
            let sessions: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM raters WHERE study_id = $1 AND client_hash = $2",
            )
            .bind(study_id)
            .bind(client)
            .fetch_one(&mut *tx.tx)
            .await?
            .try_get("n")?;
            if sessions >= i64::from(limits.sessions_per_client) {
                return Err(StoreError::Limited(format!(
                    "this study has already started {sessions} sessions from your network, its limit; \
                     if you share a network with other participants, ask the researcher"
                )));
            }
        }
        // 48 random bits: codes of a million sessions collide with a chance of about 1 in 500,
        // and the unique index turns that into an error rather than a shared code.
        let code = format!(
            "{}-{}",
            limits
                .completion_prefix
                .as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .unwrap_or("MOAT"),
            random_hex(6).to_uppercase()
        );
        sqlx::query(
            "INSERT INTO raters (study_id, external_id, token_hash, pseudonym, created_ms, origin, \
             client_hash, completion_code) VALUES ($1, $2, $3, $4, $5, 'session', $6, $7)",
        )
        .bind(study_id)
        .bind(external_id.map(str::to_string))
        .bind(&hash)
        .bind(format!("rater-{}", random_hex(6)))
        .bind(now)
        .bind(limits.client_hash.clone())
        .bind(code)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    pub async fn rater_by_token(
        &self,
        study_id: i64,
        token: &str,
    ) -> StoreResult<Option<RaterRow>> {
        // The vote count comes along (one round trip fewer per page): an assignment leaves `issued` in
        // the transaction that records its vote, and imported votes are written `done`; the rater's
        // `answered`, kept by a trigger on assignments, counts the ones not `issued`.
        const SQL: &str = "SELECT r.id, r.study_id, r.status, r.external_id, r.completion_code, \
             r.answered AS votes FROM raters r WHERE r.token_hash = $1 AND r.study_id = $2";
        let hash = sha256_hex(token);
        // By position (a read by name compares the name with every column's, at every request).
        if let Some(read) = self.native_row(SQL, &[&hash, &study_id], |row| {
            Ok(RaterRow {
                id: row.get(0)?,
                study_id: row.get(1)?,
                excluded: matches!(
                    row.get_ref(2)?,
                    rusqlite::types::ValueRef::Text(b"excluded")
                ),
                external_id: row.get(3)?,
                completion_code: row.get(4)?,
                votes: row.get(5)?,
            })
        }) {
            return read;
        }
        let row = sqlx::query(SQL)
            .bind(hash)
            .bind(study_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(RaterRow {
                id: row.try_get("id")?,
                study_id: row.try_get("study_id")?,
                votes: row.try_get("votes")?,
                excluded: row.try_get::<String, _>("status")? == "excluded",
                external_id: row.try_get("external_id")?,
                completion_code: row.try_get("completion_code")?,
            }),
            None => None,
        })
    }

    // ----- assignments -----

    /// The session whose completion code this is, if any: (pseudonym, participant id, status,
    /// votes).
    pub async fn rater_by_completion_code(
        &self,
        study_id: i64,
        code: &str,
    ) -> StoreResult<Option<(String, Option<String>, String, i64)>> {
        let row = sqlx::query(
            "SELECT r.pseudonym, r.external_id, r.status, (SELECT COUNT(*) FROM assignments a \
             JOIN votes v ON v.assignment_id = a.id WHERE a.rater_id = r.id) AS votes \
             FROM raters r WHERE r.study_id = $1 AND r.completion_code = $2",
        )
        .bind(study_id)
        .bind(code.trim())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok((
                row.try_get("pseudonym")?,
                row.try_get("external_id")?,
                row.try_get("status")?,
                row.try_get("votes")?,
            ))
        })
        .transpose()
    }

    /// The rater's assignment in state `state` (the oldest one), with its texts.
    pub async fn assignment_in_state(
        &self,
        rater_id: i64,
        state: &str,
    ) -> StoreResult<Option<ShownAssignment>> {
        const SQL: &str = ASSIGNMENT_IN_STATE_SQL;
        if let Some(read) = self.native_row(SQL, &[&rater_id, &state], |row| {
            let conversation: String = row.get("conversation")?;
            Ok(ShownAssignment {
                public_id: AssignmentId::stored(row.get("public_id")?),
                conversation: serde_json::from_str(&conversation)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                left_text: row.get("left_text")?,
                right_text: row.get("right_text")?,
                left_history: history_of(row.get("left_history")?)?,
                right_history: history_of(row.get("right_history")?)?,
                expires_ms: row.get("expires_ms")?,
            })
        }) {
            return read;
        }
        let row = sqlx::query(SQL)
            .bind(rater_id)
            .bind(state)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let conversation: String = row.try_get("conversation")?;
        Ok(Some(ShownAssignment {
            public_id: AssignmentId::stored(row.try_get("public_id")?),
            conversation: serde_json::from_str(&conversation)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            left_text: row.try_get("left_text")?,
            right_text: row.try_get("right_text")?,
            left_history: history_of(row.try_get("left_history")?)?,
            right_history: history_of(row.try_get("right_history")?)?,
            expires_ms: row.try_get("expires_ms")?,
        }))
    }

    /// The models and choice of the rater's assignment awaiting its reveal, if any.
    pub async fn pending_reveal(
        &self,
        rater_id: i64,
    ) -> StoreResult<Option<(String, String, Choice)>> {
        const SQL: &str = "SELECT lm.name AS left_model, rm.name AS right_model, v.choice \
             FROM assignments a JOIN votes v ON v.assignment_id = a.id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN models lm ON lm.id = lr.model_id \
             JOIN responses rr ON rr.id = a.right_response_id JOIN models rm ON rm.id = rr.model_id \
             WHERE a.rater_id = $1 AND a.state = 'voted' AND a.state <> 'done' ORDER BY a.id LIMIT 1";
        if let Some(read) = self.native_row(SQL, &[&rater_id], |row| {
            let choice: String = row.get("choice")?;
            Ok((
                row.get("left_model")?,
                row.get("right_model")?,
                db_choice(&choice)?,
            ))
        }) {
            return read;
        }
        let row = sqlx::query(SQL)
            .bind(rater_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let choice: String = row.try_get("choice")?;
        Ok(Some((
            row.try_get("left_model")?,
            row.try_get("right_model")?,
            db_choice(&choice)?,
        )))
    }

    /// The models and choices of the session's voted comparisons, in order (the reveal at the end
    /// of a session). Quality checks are included: they are comparisons the rater saw.
    pub async fn session_reveals(
        &self,
        rater_id: i64,
    ) -> StoreResult<Vec<(String, String, Choice)>> {
        let rows = sqlx::query(
            "SELECT lm.name AS left_model, rm.name AS right_model, v.choice \
             FROM assignments a JOIN votes v ON v.assignment_id = a.id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN models lm ON lm.id = lr.model_id \
             JOIN responses rr ON rr.id = a.right_response_id JOIN models rm ON rm.id = rr.model_id \
             WHERE a.rater_id = $1 ORDER BY a.id",
        )
        .bind(rater_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let choice: String = row.try_get("choice")?;
                Ok((
                    row.try_get("left_model")?,
                    row.try_get("right_model")?,
                    db_choice(&choice)?,
                ))
            })
            .collect()
    }

    pub async fn finish_reveals(&self, rater_id: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            // `state <> 'done'` lets SQLite find the rows through `assignments_open`.
            "UPDATE assignments SET state = 'done' WHERE rater_id = $1 AND state = 'voted' AND state <> 'done'",
        )
        .bind(rater_id)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Gives back comparisons issued before `now` expired them and never voted on (all raters', or
    /// only `rater_id`'s): each is deleted, its prompt's and pair's showing counts go down by one
    /// (so the assigner offers them again), and the rater's `expired_assignments` goes up. Returns
    /// how many expired. A vote that races the expiry wins: a voted comparison is never deleted.
    pub async fn expire_assignments(&self, now: i64, rater_id: Option<i64>) -> StoreResult<u64> {
        let select =
            "SELECT a.id, a.prompt_id, a.kind, a.model_low, a.model_high, a.rater_id, r.study_id \
             FROM assignments a JOIN raters r ON r.id = a.rater_id \
             WHERE a.state = 'issued' AND a.expires_ms IS NOT NULL AND a.expires_ms < $1 \
             AND ($2 = 0 OR a.rater_id = $2) ORDER BY a.expires_ms LIMIT 1000";
        if self.dialect == Dialect::Postgres {
            // One transaction per comparison, which locks its rater first: the order in which an
            // assignment takes its rows (rater, prompt, pair count). One transaction for many
            // comparisons held one's prompt and pair rows while it waited for another's, and an
            // assignment holding that other prompt and waiting for the pair made a deadlock, which
            // PostgreSQL breaks by failing one of them (more likely with several processes, each
            // running its own sweep).
            let rows = sqlx::query(select)
                .bind(now)
                .bind(rater_id.unwrap_or(0))
                .fetch_all(&self.pool)
                .await?;
            let mut expired = 0;
            for row in &rows {
                let mut tx = self.begin_write().await?;
                super::assignments::lock_rater(&mut tx.tx, row.try_get("rater_id")?).await?;
                if expire_one(&mut tx.tx, row).await? {
                    expired += 1;
                }
                tx.commit().await?;
            }
            return Ok(expired);
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(select)
            .bind(now)
            .bind(rater_id.unwrap_or(0))
            .fetch_all(&mut *tx.tx)
            .await?;
        let mut expired = 0;
        for row in &rows {
            if expire_one(&mut tx.tx, row).await? {
                expired += 1;
            }
        }
        tx.commit().await?;
        Ok(expired)
    }

    /// Votes cast since `since_ms` by this session and, when it has a participant id, by every
    /// other session of the study with the same id (a participant who opens a new session keeps
    /// their daily count): how many, and when the oldest of them was cast.
    pub async fn votes_since(
        &self,
        rater: &RaterRow,
        since_ms: i64,
    ) -> StoreResult<(i64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(v.created_ms) AS oldest FROM votes v \
             JOIN assignments a ON a.id = v.assignment_id \
             WHERE v.created_ms >= $1 AND a.rater_id IN (SELECT id FROM raters WHERE id = $2 \
             OR (study_id = $3 AND external_id = $4))",
        )
        .bind(since_ms)
        .bind(rater.id)
        .bind(rater.study_id)
        .bind(rater.external_id.clone())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    /// Marks an active rater excluded (after failed checks); an imported or already excluded rater is
    /// left as is. Returns whether the status changed.
    pub async fn exclude_rater(&self, rater_id: i64) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE raters SET status = 'excluded' WHERE id = $1 AND status = 'active'",
        )
        .bind(rater_id)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Deletes one unvoted comparison past its time (a voted one is never deleted) and gives its prompt's
/// and pair's showing back; `row` is one of [`Store::expire_assignments`]' selection. Whether it was
/// deleted.
async fn expire_one(conn: &mut AnyConnection, row: &AnyRow) -> StoreResult<bool> {
    let id: i64 = row.try_get("id")?;
    let deleted = sqlx::query(
        "DELETE FROM assignments WHERE id = $1 AND state = 'issued' \
         AND NOT EXISTS (SELECT 1 FROM votes WHERE assignment_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE prompts SET times_assigned = times_assigned - 1 WHERE id = $1 AND times_assigned > 0",
    )
    .bind(row.try_get::<i64, _>("prompt_id")?)
    .execute(&mut *conn)
    .await?;
    if row.try_get::<String, _>("kind")? == "regular" {
        let pair = (row.try_get("model_low")?, row.try_get("model_high")?);
        super::assignments::count_pair_shown(
            conn,
            row.try_get("study_id")?,
            pair,
            -1,
            MAX_PAIR_SHARDS,
        )
        .await?;
    }
    sqlx::query("UPDATE raters SET expired_assignments = expired_assignments + 1 WHERE id = $1")
        .bind(row.try_get::<i64, _>("rater_id")?)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}
