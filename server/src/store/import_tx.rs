//! A write transaction holding SQLite's writer lock (imports, admin changes), with the statements an
//! import runs inside it.

use super::*;

/// A write transaction; on SQLite it holds the store's writer lock until it ends.
pub struct WriteTx<'a> {
    pub(crate) tx: OpenTransaction,
    /// SQLite's write lock, held until the transaction has committed or rolled back.
    guard: Option<OwnedMutexGuard<()>>,
    _store: std::marker::PhantomData<&'a Store>,
}

/// The transaction of a [`WriteTx`]; it reads as the connection it runs on. Present until the
/// transaction is committed or handed to the rollback on drop.
pub(crate) struct OpenTransaction(Option<Transaction<'static, Any>>);

impl std::ops::Deref for OpenTransaction {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.0
            .as_ref()
            .expect("the transaction is open until commit or drop")
    }
}

impl std::ops::DerefMut for OpenTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.0
            .as_mut()
            .expect("the transaction is open until commit or drop")
    }
}

/// A write transaction that ends without commit (an import refused halfway, any error) rolls back
/// before SQLite's write lock is released. sqlx only queues the rollback of a dropped transaction
/// and runs it later on a task of its own, so the next writer could take the lock, start on another
/// connection and fail at once with "database is locked" (SQLite refuses a reader's upgrade while
/// the old connection still holds the write lock): a 500 for whoever wrote next. Found by
/// `properties::a_refused_import_writes_nothing`.
impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        let Some(tx) = self.tx.0.take() else {
            return;
        };
        let guard = self.guard.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = tx.rollback().await {
                    tracing::warn!(%error, "rolling back a write transaction");
                }
                drop(guard);
            });
        }
    }
}

impl WriteTx<'_> {
    pub async fn commit(mut self) -> StoreResult<()> {
        let tx = self.tx.0.take().expect("a transaction commits once");
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_study(
        &mut self,
        slug: &StudySlug,
        title: &str,
        instructions: &str,
        settings: &StudySettings,
    ) -> StoreResult<StudyRow> {
        let exists = sqlx::query("SELECT id FROM studies WHERE slug = $1")
            .bind(slug.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "a study with slug {:?} already exists",
                slug.as_str()
            )));
        }
        let settings_json = serde_json::to_string(settings).expect("settings serialize");
        let id: i64 = sqlx::query(
            "INSERT INTO studies (slug, title, instructions, status, settings, created_ms) \
             VALUES ($1, $2, $3, 'draft', $4, $5) RETURNING id",
        )
        .bind(slug.as_str())
        .bind(title)
        .bind(instructions)
        .bind(settings_json)
        .bind(now_ms())
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("id")?;
        Ok(StudyRow {
            id,
            slug: slug.as_str().to_string(),
            title: title.to_string(),
            instructions: instructions.to_string(),
            status: StudyStatus::Draft,
            settings: settings.clone(),
        })
    }

    pub async fn study(&mut self, slug: &str) -> StoreResult<Option<StudyRow>> {
        let row = sqlx::query(
            "SELECT id, slug, title, instructions, status, settings FROM studies WHERE slug = $1",
        )
        .bind(slug)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.as_ref().map(study_from_row).transpose()?)
    }

    pub async fn models(&mut self, study_id: i64) -> StoreResult<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT id, name FROM models WHERE study_id = $1")
            .bind(study_id)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("id")?)))
            .collect()
    }

    pub async fn insert_model(
        &mut self,
        study_id: i64,
        name: &str,
        provider: &str,
        openness: Openness,
        version: &str,
    ) -> StoreResult<i64> {
        // Another writer (a concurrent import, `moat generate`, a battle's end) may create it first.
        super::battle_rows::create_model_in(
            &mut self.tx,
            study_id,
            name,
            provider,
            openness,
            version,
        )
        .await
    }

    pub async fn prompt_exists(&mut self, study_id: i64, external_id: &str) -> StoreResult<bool> {
        Ok(
            sqlx::query("SELECT 1 AS x FROM prompts WHERE study_id = $1 AND external_id = $2")
                .bind(study_id)
                .bind(external_id)
                .fetch_optional(&mut *self.tx)
                .await?
                .is_some(),
        )
    }

    pub async fn prompt_count(&mut self, study_id: i64) -> StoreResult<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM prompts WHERE study_id = $1")
                .bind(study_id)
                .fetch_one(&mut *self.tx)
                .await?
                .try_get("n")?,
        )
    }

    pub async fn insert_prompt(
        &mut self,
        study_id: i64,
        external_id: &str,
        conversation: &[Message],
        category: Option<&str>,
        language: Option<&str>,
    ) -> StoreResult<i64> {
        Ok(sqlx::query(
            "INSERT INTO prompts (study_id, external_id, conversation, category, language) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(study_id)
        .bind(external_id)
        .bind(serde_json::to_string(conversation).expect("messages serialize"))
        .bind(category.map(str::to_string))
        .bind(language.map(str::to_string))
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("id")?)
    }

    /// Makes a prompt a quality-check item whose better response is `better_model`'s.
    pub async fn mark_check(
        &mut self,
        prompt_id: i64,
        kind: CheckKind,
        better_model: i64,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE prompts SET check_kind = $1, check_model_id = $2 WHERE id = $3")
            .bind(kind.as_str())
            .bind(better_model)
            .bind(prompt_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Writes a response with its identity flag (the words of [`crate::identity`] it matched, `None`
    /// when clean) and, for a multi-turn battle's side, its history; a flagged response flags its
    /// prompt.
    pub async fn insert_response(
        &mut self,
        prompt_id: i64,
        model_id: i64,
        content: &str,
        identity_flag: Option<&str>,
        history: &[Message],
    ) -> StoreResult<i64> {
        let id = sqlx::query(
            "INSERT INTO responses (prompt_id, model_id, content, identity_flag, history) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(prompt_id)
        .bind(model_id)
        .bind(content)
        .bind(identity_flag.map(str::to_string))
        .bind((!history.is_empty()).then(|| serde_json::to_string(history).expect("messages serialize")))
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("id")?;
        if identity_flag.is_some() {
            self.flag_prompt(prompt_id).await?;
        }
        Ok(id)
    }

    /// The rater of an imported dataset's annotator (created on first use; it can never log in: its
    /// token is random and thrown away).
    pub async fn imported_rater(&mut self, study_id: i64, annotator: &str) -> StoreResult<i64> {
        if let Some(row) =
            sqlx::query("SELECT id FROM raters WHERE study_id = $1 AND external_id = $2 AND origin = 'imported'")
                .bind(study_id)
                .bind(annotator)
                .fetch_optional(&mut *self.tx)
                .await?
        {
            return Ok(row.try_get("id")?);
        }
        Ok(sqlx::query(
            "INSERT INTO raters (study_id, external_id, token_hash, pseudonym, status, created_ms, origin) \
             VALUES ($1, $2, $3, $4, 'imported', $5, 'imported') RETURNING id",
        )
        .bind(study_id)
        .bind(annotator)
        .bind(sha256_hex(&random_hex(32)))
        .bind(annotator)
        .bind(now_ms())
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("id")?)
    }

    /// A vote from an imported dataset, with its (already decided) assignment.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_imported_vote(
        &mut self,
        rater_id: i64,
        prompt_id: i64,
        left: (i64, i64),
        right: (i64, i64),
        kind: &str,
        choice: Choice,
        created_ms: i64,
        source_guess: Option<String>,
        source_confidence: Option<i64>,
        rationale: Option<String>,
        time_on_page_ms: Option<i64>,
    ) -> StoreResult<()> {
        let assignment_id: i64 = sqlx::query(
            "INSERT INTO assignments (public_id, rater_id, prompt_id, left_response_id, right_response_id, \
             model_low, model_high, kind, issued_ms, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'done') RETURNING id",
        )
        .bind(AssignmentId::mint().into_string())
        .bind(rater_id)
        .bind(prompt_id)
        .bind(left.0)
        .bind(right.0)
        .bind(left.1.min(right.1))
        .bind(left.1.max(right.1))
        .bind(kind)
        .bind(created_ms)
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("id")?;
        sqlx::query(
            "INSERT INTO votes (assignment_id, choice, source_guess, source_confidence, rationale, time_on_page_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(assignment_id)
        .bind(choice.as_str())
        .bind(source_guess)
        .bind(source_confidence)
        .bind(rationale)
        .bind(time_on_page_ms)
        .bind(created_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Begins a write transaction (serialized with other writers on SQLite).
    pub async fn begin_write(&self) -> StoreResult<WriteTx<'_>> {
        let guard = match self.dialect {
            Dialect::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            Dialect::Postgres => None,
        };
        let tx = self.pool.begin().await?;
        Ok(WriteTx {
            tx: OpenTransaction(Some(tx)),
            guard,
            _store: std::marker::PhantomData,
        })
    }
}
