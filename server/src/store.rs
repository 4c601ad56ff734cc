//! The store: every SQL statement Moat runs lives in this module.
//!
//! One set of runtime-checked queries serves SQLite and PostgreSQL through sqlx's `Any` driver: the
//! schemas (one migrations folder per dialect) use only BIGINT, TEXT and `$n` placeholders, which both
//! databases read the same way. Times are milliseconds since the Unix epoch.
//!
//! SQLite allows one writer at a time; a write transaction that starts as a reader and upgrades can
//! fail with SQLITE_BUSY instead of waiting. All write transactions therefore take `write_lock` first
//! on SQLite, which turns contention into a queue. PostgreSQL needs no such lock.
//!
//! The hot writes on SQLite (assignments and votes) go through a group-commit writer: one task commits
//! whatever has queued as one transaction (one fsync for many writes) and answers each caller after the
//! commit, so an acknowledged vote is always a committed one.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use moat_app::wire::{ModelResult, PairProgress, StudySettings, StudySummary};
use moat_exports::{Choice, Message, Openness, VoteRecord};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::AnyConnection;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::domain::{now_ms, random_hex, sha256_hex, CheckKind, StudySlug, StudyStatus};

mod admin;
mod api_keys;
mod arena;
mod generation;
mod identity_flags;
pub use admin::{AdminSessionRow, AdminTokenRow, ADMIN_TOKEN_PREFIX};
pub use api_keys::{ApiKeyRow, API_KEY_PREFIX};
pub use arena::{BattleRow, BattleSummary, BattleToContinue, ContestantAnswer, VoidBattle};
pub use generation::{GeneratedResponse, PromptToAnswer};

/// The join behind every export record, with the given ORDER BY.
macro_rules! vote_records_sql {
    ($order:literal) => {
        concat!("SELECT v.id, v.choice, v.source_guess, v.source_confidence, v.rationale, \
     v.time_on_page_ms, v.created_ms, a.kind, p.external_id, p.conversation, p.category, p.language, r.pseudonym, \
     r.completion_code, lm.name AS left_model, lm.openness AS left_openness, lr.content AS left_text, \
     rm.name AS right_model, rm.openness AS right_openness, rr.content AS right_text, \
     lr.history AS left_history, rr.history AS right_history \
     FROM votes v JOIN assignments a ON a.id = v.assignment_id JOIN prompts p ON p.id = a.prompt_id \
     JOIN raters r ON r.id = a.rater_id \
     JOIN responses lr ON lr.id = a.left_response_id JOIN models lm ON lm.id = lr.model_id \
     JOIN responses rr ON rr.id = a.right_response_id JOIN models rm ON rm.id = rr.model_id \
     WHERE p.study_id = $1 ORDER BY ", $order)
    };
}

/// The responses (`prompt_id`, `id`, `model_id`, `times_assigned` and any extra prompt columns) of up
/// to `$3` prompts of study `$1` that rater `$2` has not been assigned, least-assigned first, in prompt
/// order: regular prompts (`check_kind IS NULL`) or quality-check items (`IS NOT NULL`); prompts with
/// an identity-flagged response only when `$4` is 1 (the study shows flagged items).
macro_rules! unseen_prompts_sql {
    ($check_kind:literal) => {
        unseen_prompts_sql!($check_kind, "", "")
    };
    ($check_kind:literal, $inner_columns:literal, $outer_columns:literal) => {
        concat!(
            "SELECT r.prompt_id, r.id, r.model_id, c.times_assigned", $outer_columns,
            " FROM responses r JOIN (SELECT p.id, p.times_assigned", $inner_columns,
            " FROM prompts p WHERE p.study_id = $1 AND p.check_kind ", $check_kind,
            " AND p.identity_flagged <= $4 AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.rater_id = $2 AND a.prompt_id = p.id) \
             ORDER BY p.times_assigned, p.id LIMIT $3) c ON c.id = r.prompt_id \
             ORDER BY c.times_assigned, r.prompt_id, r.id"
        )
    };
}

/// `passed` and `failed` counts of quality-check votes, over rows of `a` (assignments) and `v` (their
/// votes, possibly NULL) joined with [`check_outcome_joins`]: a rater passes a check by choosing the
/// side of the expected model's response; a tie or both-bad fails it.
macro_rules! check_outcome_sums {
    () => {
        "COALESCE(SUM(CASE WHEN a.kind IN ('attention', 'gold') AND v.id IS NOT NULL AND \
         ((v.choice = 'left' AND lr.model_id = p.check_model_id) OR (v.choice = 'right' AND rr.model_id = p.check_model_id)) \
         THEN 1 ELSE 0 END), 0) AS passed, \
         COALESCE(SUM(CASE WHEN a.kind IN ('attention', 'gold') AND v.id IS NOT NULL AND NOT \
         ((v.choice = 'left' AND lr.model_id = p.check_model_id) OR (v.choice = 'right' AND rr.model_id = p.check_model_id)) \
         THEN 1 ELSE 0 END), 0) AS failed"
    };
}

/// The prompt and the two responses of assignment `a`, for [`check_outcome_sums`].
macro_rules! check_outcome_joins {
    () => {
        "LEFT JOIN prompts p ON p.id = a.prompt_id \
         LEFT JOIN responses lr ON lr.id = a.left_response_id LEFT JOIN responses rr ON rr.id = a.right_response_id"
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// A study's limit on sessions or votes was reached (the message says which and when to return).
    #[error("{0}")]
    Limited(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How long `Store::connect` waits for a PostgreSQL server to answer (`--db-connect-timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    write_lock: Arc<Mutex<()>>,
    group_writer: Option<GroupWriter>,
    /// The database file, for readers that bypass the pool (exports).
    sqlite_path: Option<std::path::PathBuf>,
}

/// A study as stored.
#[derive(Debug, Clone)]
pub struct StudyRow {
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub instructions: String,
    pub status: StudyStatus,
    pub settings: StudySettings,
}

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub openness: Openness,
}

#[derive(Debug, Clone)]
pub struct RaterRow {
    pub id: i64,
    pub study_id: i64,
    /// Votes the rater has cast, when the lookup was made.
    pub votes: i64,
    /// Marked excluded (by the researcher, or after failed quality checks).
    pub excluded: bool,
    /// The participant id the session consented with.
    pub external_id: Option<String>,
    /// The session's own completion code.
    pub completion_code: Option<String>,
}

/// The limits a study puts on new sessions (see `StudySettings`), checked in the transaction that
/// creates the session so that racing consents cannot slip past them.
#[derive(Debug, Clone, Default)]
pub struct JoinLimits {
    /// A keyed digest of the address the consent came from (`None`: not known).
    pub client_hash: Option<String>,
    /// Most sessions one address may start in the study (0: no limit).
    pub sessions_per_client: u32,
    /// Most sessions the whole study may start in one minute (0: no limit).
    pub per_minute: u32,
    /// The study's completion code, the prefix of each session's own code.
    pub completion_prefix: Option<String>,
}

/// An assignment with the two texts the rater sees (but not who wrote them).
#[derive(Debug, Clone)]
pub struct ShownAssignment {
    pub public_id: String,
    pub conversation: Vec<Message>,
    pub left_text: String,
    pub right_text: String,
    /// A multi-turn arena battle's sides: their turns between `conversation` and the last answers.
    pub left_history: Vec<Message>,
    pub right_history: Vec<Message>,
    /// When the comparison expires unvoted (`None`: never).
    pub expires_ms: Option<i64>,
}

/// A prompt the rater has not seen yet, with its responses as (response id, model id).
#[derive(Debug, Clone)]
pub struct CandidatePrompt {
    pub prompt_id: i64,
    pub times_assigned: i64,
    pub responses: Vec<(i64, i64)>,
}

/// A quality-check item the rater has not seen: the response a careful rater prefers and the others,
/// as (response id, model id).
#[derive(Debug, Clone)]
pub struct CheckCandidate {
    pub prompt_id: i64,
    pub kind: CheckKind,
    pub times_assigned: i64,
    pub better: (i64, i64),
    pub others: Vec<(i64, i64)>,
}

/// A rater's quality checks so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckTally {
    /// Check assignments issued (voted or not).
    pub shown: i64,
    pub passed: i64,
    pub failed: i64,
}

#[derive(Debug, Clone)]
pub struct NewAssignment {
    pub rater_id: i64,
    pub study_id: i64,
    pub prompt_id: i64,
    pub left_response: (i64, i64),
    pub right_response: (i64, i64),
    /// `None` for a regular comparison; quality checks leave the pair counts alone.
    pub check: Option<CheckKind>,
    /// Most comparisons the rater may be given (`items_per_rater`): checked in the writing
    /// transaction, with one unvoted comparison at a time, so parallel requests cannot exceed it.
    pub max_for_rater: u32,
    /// When an unvoted comparison expires and gives its prompt and pair back (`None`: never).
    pub expires_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct VoteToRecord {
    pub assignment_public_id: String,
    pub rater_id: i64,
    pub choice: Choice,
    pub source_guess: Option<String>,
    pub source_confidence: Option<i64>,
    pub rationale: Option<String>,
    /// Set the assignment to `voted` (the rater will see a reveal) instead of `done`.
    pub reveal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    Recorded {
        vote_id: i64,
        /// For a vote on a quality check: whether it chose the expected response.
        check_passed: Option<bool>,
    },
    /// The same vote was already recorded; nothing changed.
    AlreadyRecorded { vote_id: i64 },
}

/// One aggregated line of a study's votes: left model, right model, choice, count.
#[derive(Debug, Clone)]
pub struct VoteTally {
    pub left_model: i64,
    pub right_model: i64,
    pub choice: Choice,
    pub count: i64,
}

fn db_choice(text: &str) -> Result<Choice, sqlx::Error> {
    Choice::parse(text).ok_or_else(|| {
        sqlx::Error::Decode(format!("unknown choice {text:?} in the database").into())
    })
}

fn db_openness(text: &str) -> Result<Openness, sqlx::Error> {
    Openness::parse(text).ok_or_else(|| {
        sqlx::Error::Decode(format!("unknown openness {text:?} in the database").into())
    })
}

/// Each study (filtered by `$where`) with its counts, in creation order.
macro_rules! study_summaries_sql {
    ($where:literal) => {
        concat!(
            "SELECT s.slug, s.title, s.status, \
               (SELECT COUNT(*) FROM prompts p WHERE p.study_id = s.id) AS prompts, \
               (SELECT COUNT(*) FROM prompts p WHERE p.study_id = s.id AND p.check_kind IS NOT NULL) AS check_items, \
               (SELECT COUNT(*) FROM models m WHERE m.study_id = s.id) AS models, \
               (SELECT COUNT(*) FROM raters r WHERE r.study_id = s.id) AS raters, \
               (SELECT COUNT(*) FROM votes v JOIN assignments a ON a.id = v.assignment_id \
                  JOIN raters r ON r.id = a.rater_id WHERE r.study_id = s.id) AS votes \
             FROM studies s ",
            $where,
            " ORDER BY s.id"
        )
    };
}

fn summary_from_row(row: &AnyRow) -> StoreResult<StudySummary> {
    Ok(StudySummary {
        slug: row.try_get("slug")?,
        title: row.try_get("title")?,
        status: row.try_get("status")?,
        prompts: row.try_get("prompts")?,
        check_items: row.try_get("check_items")?,
        models: row.try_get("models")?,
        raters: row.try_get("raters")?,
        votes: row.try_get("votes")?,
    })
}

fn study_from_row(row: &AnyRow) -> Result<StudyRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let settings: String = row.try_get("settings")?;
    Ok(StudyRow {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        title: row.try_get("title")?,
        instructions: row.try_get("instructions")?,
        status: StudyStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown study status {status:?}").into())
        })?,
        settings: serde_json::from_str(&settings).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// FULL synchronous mode: an acknowledged vote survives a crash of the process and of the OS.
fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        for pragma in [
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
            "PRAGMA mmap_size=268435456",
        ] {
            sqlx::Executor::execute(&mut *conn, pragma).await?;
        }
        Ok(())
    })
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`), creating a SQLite file if it is missing,
    /// and applies the migrations of that dialect; gives up on an unreachable PostgreSQL server after
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Store::connect_within(url, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`Store::connect`], waiting at most `timeout` for the PostgreSQL server to answer. A failure
    /// is a [`crate::problem::Problem`] naming the database (host, port, name; a SQLite file's path),
    /// the reason and the fix.
    pub async fn connect_within(url: &str, timeout: Duration) -> anyhow::Result<Store> {
        use crate::problem::{self, Problem};
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(Problem::new(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DATABASE"
            ))
            .into());
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        // One plain connection first: the pool retries a refused connection until its acquire
        // timeout and then reports only that it timed out.
        let file = problem::sqlite_path(&url);
        match (dialect, &file) {
            (Dialect::Postgres, _) => problem::check_postgres(&url, timeout).await?,
            (Dialect::Sqlite, Some(path)) => {
                problem::prepare_sqlite_path(path)?;
                // The pool retries a connection whose setup fails (a file that is not a database)
                // until its acquire timeout: open and set up one connection alone first.
                let opened = async {
                    let mut conn = <AnyConnection as sqlx::Connection>::connect(&url).await?;
                    sqlite_pragmas(&mut conn).await?;
                    sqlx::Connection::close(conn).await
                };
                opened
                    .await
                    .map_err(|error| problem::sqlite_open_problem(path, error))?;
            }
            (Dialect::Sqlite, None) => {}
        }
        let options = AnyConnectOptions::from_str(&url).map_err(|e| {
            Problem::caused_by(
                format!("the database URL does not parse ({e}): use sqlite://PATH or postgres://USER@HOST/DATABASE"),
                e,
            )
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 8,
                Dialect::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| match dialect {
                Dialect::Sqlite => sqlite_pragmas(conn),
                Dialect::Postgres => Box::pin(async { Ok(()) }),
            })
            .connect_with(options)
            .await
            .map_err(|error| match &file {
                Some(path) => problem::sqlite_open_problem(path, error),
                None => Problem::caused_by(
                    format!(
                        "cannot connect to the {}: {error}",
                        problem::describe_database(&url)
                    ),
                    error,
                ),
            })?;
        let write_lock = Arc::new(Mutex::new(()));
        let group_writer = match dialect {
            Dialect::Sqlite => Some(GroupWriter::start(pool.clone(), write_lock.clone())),
            Dialect::Postgres => None,
        };
        let sqlite_path = match dialect {
            Dialect::Sqlite => {
                let rest = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                Some(std::path::PathBuf::from(
                    rest.split('?').next().unwrap_or(rest),
                ))
            }
            Dialect::Postgres => None,
        };
        let store = Store {
            pool,
            dialect,
            write_lock,
            group_writer,
            sqlite_path,
        };
        store.migrate().await.map_err(|error| {
            anyhow::Error::new(error).context(format!(
                "cannot bring the {} up to date (migrations)",
                problem::describe_database(&url)
            ))
        })?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let _guard = self.write_lock.lock().await;
        match self.dialect {
            Dialect::Sqlite => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Dialect::Postgres => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

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

    // ----- settings -----

    pub async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("value"))
            .transpose()?)
    }

    /// Sets `key` to `value`. One statement (an upsert): two processes that set the same key at once
    /// (both starting with `--admin-token`) both succeed, where a delete and an insert made the
    /// second fail on the primary key.
    pub async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Sets `key` to `value` unless it has a value already, and returns the value it has now: the
    /// first of several processes to set it wins, and all of them then use that one.
    pub async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(self
            .get_setting(key)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }

    // ----- studies -----

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
        let rows = sqlx::query(
            "SELECT id, name, provider, openness FROM models WHERE study_id = $1 ORDER BY id",
        )
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
        // the transaction that records its vote, and imported votes are written `done`, so counting
        // the rater's non-issued assignments reads the (rater, state) index alone.
        let row = sqlx::query(
            "SELECT r.id, r.study_id, r.status, r.external_id, r.completion_code, \
             (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id AND a.state <> 'issued') AS votes \
             FROM raters r WHERE r.token_hash = $1 AND r.study_id = $2",
        )
        .bind(sha256_hex(token))
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

    /// The rater's assignment in state `state` (the oldest one), with its texts.
    pub async fn assignment_in_state(
        &self,
        rater_id: i64,
        state: &str,
    ) -> StoreResult<Option<ShownAssignment>> {
        let row = sqlx::query(
            "SELECT a.public_id, a.expires_ms, p.conversation, lr.content AS left_text, rr.content AS right_text, \
             lr.history AS left_history, rr.history AS right_history \
             FROM assignments a JOIN prompts p ON p.id = a.prompt_id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN responses rr ON rr.id = a.right_response_id \
             WHERE a.rater_id = $1 AND a.state = $2 ORDER BY a.id LIMIT 1",
        )
        .bind(rater_id)
        .bind(state)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let conversation: String = row.try_get("conversation")?;
        Ok(Some(ShownAssignment {
            public_id: row.try_get("public_id")?,
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
        let row = sqlx::query(
            "SELECT lm.name AS left_model, rm.name AS right_model, v.choice \
             FROM assignments a JOIN votes v ON v.assignment_id = a.id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN models lm ON lm.id = lr.model_id \
             JOIN responses rr ON rr.id = a.right_response_id JOIN models rm ON rm.id = rr.model_id \
             WHERE a.rater_id = $1 AND a.state = 'voted' ORDER BY a.id LIMIT 1",
        )
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
                sqlx::query("SELECT id FROM raters WHERE id = $1 FOR UPDATE")
                    .bind(row.try_get::<i64, _>("rater_id")?)
                    .execute(&mut *tx.tx)
                    .await?;
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
            "UPDATE assignments SET state = 'done' WHERE rater_id = $1 AND state = 'voted'",
        )
        .bind(rater_id)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Up to `limit` prompts of the study this rater has not been assigned, least-assigned first,
    /// with their responses, in one query. (Every prompt has two or more responses: import checks.)
    pub async fn candidate_prompts(
        &self,
        study_id: i64,
        rater_id: i64,
        limit: i64,
        show_flagged: bool,
    ) -> StoreResult<Vec<CandidatePrompt>> {
        // Only columns of the index `prompts_assignable`: the prompts are read off it in order.
        let rows = self
            .unseen_prompt_rows(
                unseen_prompts_sql!("IS NULL"),
                (study_id, rater_id, limit),
                show_flagged,
            )
            .await?;
        let mut candidates: Vec<CandidatePrompt> = Vec::new();
        for row in &rows {
            let prompt_id: i64 = row.try_get("prompt_id")?;
            let response = (row.try_get("id")?, row.try_get("model_id")?);
            match candidates.last_mut() {
                Some(last) if last.prompt_id == prompt_id => last.responses.push(response),
                _ => candidates.push(CandidatePrompt {
                    prompt_id,
                    times_assigned: row.try_get("times_assigned")?,
                    responses: vec![response],
                }),
            }
        }
        Ok(candidates)
    }

    /// Up to `limit` quality-check items of the study this rater has not been assigned, least-assigned
    /// first, with their responses.
    pub async fn candidate_checks(
        &self,
        study_id: i64,
        rater_id: i64,
        limit: i64,
        show_flagged: bool,
    ) -> StoreResult<Vec<CheckCandidate>> {
        let sql = unseen_prompts_sql!(
            "IS NOT NULL",
            ", p.check_kind, p.check_model_id",
            ", c.check_kind, c.check_model_id"
        );
        let rows = self
            .unseen_prompt_rows(sql, (study_id, rater_id, limit), show_flagged)
            .await?;
        // A check item as its rows come in: its expected response may not be among the first.
        struct Gathering {
            prompt_id: i64,
            kind: CheckKind,
            times_assigned: i64,
            better: Option<(i64, i64)>,
            others: Vec<(i64, i64)>,
        }
        let mut gathered: Vec<Gathering> = Vec::new();
        for row in &rows {
            let prompt_id: i64 = row.try_get("prompt_id")?;
            let response: (i64, i64) = (row.try_get("id")?, row.try_get("model_id")?);
            let better_model: i64 = row.try_get("check_model_id")?;
            if gathered
                .last()
                .is_none_or(|last| last.prompt_id != prompt_id)
            {
                let kind: String = row.try_get("check_kind")?;
                gathered.push(Gathering {
                    prompt_id,
                    kind: CheckKind::parse(&kind).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown check kind {kind:?}").into())
                    })?,
                    times_assigned: row.try_get("times_assigned")?,
                    better: None,
                    others: Vec::new(),
                });
            }
            let last = gathered.last_mut().expect("pushed above");
            // The first response of the expected model is the one to show (import allows one per
            // model in Moat's format, where checks come from).
            if response.1 == better_model && last.better.is_none() {
                last.better = Some(response);
            } else {
                last.others.push(response);
            }
        }
        Ok(gathered
            .into_iter()
            .filter(|item| !item.others.is_empty())
            .filter_map(|item| {
                Some(CheckCandidate {
                    prompt_id: item.prompt_id,
                    kind: item.kind,
                    times_assigned: item.times_assigned,
                    better: item.better?,
                    others: item.others,
                })
            })
            .collect())
    }

    /// The responses of unseen prompts, by one of the [`unseen_prompts_sql`] queries.
    async fn unseen_prompt_rows(
        &self,
        sql: &'static str,
        (study_id, rater_id, limit): (i64, i64, i64),
        show_flagged: bool,
    ) -> StoreResult<Vec<AnyRow>> {
        Ok(sqlx::query(sql)
            .bind(study_id)
            .bind(rater_id)
            .bind(limit)
            .bind(i64::from(show_flagged))
            .fetch_all(&self.pool)
            .await?)
    }

    /// The rater's quality checks: issued, passed and failed.
    pub async fn rater_checks(&self, rater_id: i64) -> StoreResult<CheckTally> {
        let row = sqlx::query(concat!(
            "SELECT COUNT(a.id) AS shown, ",
            check_outcome_sums!(),
            " FROM assignments a LEFT JOIN votes v ON v.assignment_id = a.id ",
            check_outcome_joins!(),
            " WHERE a.rater_id = $1 AND a.kind IN ('attention', 'gold')"
        ))
        .bind(rater_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(CheckTally {
            shown: row.try_get("shown")?,
            passed: row.try_get("passed")?,
            failed: row.try_get("failed")?,
        })
    }

    /// The study's quality checks: (votes on checks, failed ones).
    pub async fn study_checks(&self, study_id: i64) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(concat!(
            "SELECT ",
            check_outcome_sums!(),
            " FROM assignments a JOIN votes v ON v.assignment_id = a.id ",
            check_outcome_joins!(),
            " WHERE p.study_id = $1 AND a.kind IN ('attention', 'gold')"
        ))
        .bind(study_id)
        .fetch_one(&self.pool)
        .await?;
        let passed: i64 = row.try_get("passed")?;
        let failed: i64 = row.try_get("failed")?;
        Ok((passed + failed, failed))
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

    /// How often each (lower model id, higher model id) pair was shown in the study.
    pub async fn pair_counts(&self, study_id: i64) -> StoreResult<HashMap<(i64, i64), i64>> {
        let rows =
            sqlx::query("SELECT model_low, model_high, shown FROM pair_counts WHERE study_id = $1")
                .bind(study_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    (row.try_get("model_low")?, row.try_get("model_high")?),
                    row.try_get("shown")?,
                ))
            })
            .collect()
    }

    /// Records an assignment before it is shown. Returns `None` if the rater was given this prompt
    /// concurrently (the caller shows that one instead).
    pub async fn insert_assignment(&self, new: &NewAssignment) -> StoreResult<Option<String>> {
        match &self.group_writer {
            Some(writer) => {
                writer
                    .submit(WriteOp::Assign(new.clone()))
                    .await
                    .map(|done| match done {
                        WriteDone::Assigned(id) => id,
                        _ => unreachable!("an assignment answers with an assignment"),
                    })
            }
            None => {
                let mut tx = self.begin_write().await?;
                let id = insert_assignment_in(&mut tx.tx, new).await?;
                tx.commit().await?;
                Ok(id)
            }
        }
    }

    // ----- votes -----

    /// Records a vote for an assignment issued to this rater. A repeat of the same choice is
    /// harmless; a different choice for an assignment already voted on is a conflict. Returns only
    /// once the vote is committed.
    pub async fn record_vote(&self, vote: &VoteToRecord) -> StoreResult<VoteOutcome> {
        match &self.group_writer {
            Some(writer) => {
                writer
                    .submit(WriteOp::Vote(vote.clone()))
                    .await
                    .map(|done| match done {
                        WriteDone::Voted(outcome) => outcome,
                        _ => unreachable!("a vote answers with a vote"),
                    })
            }
            None => {
                let mut tx = self.begin_write().await?;
                let outcome = record_vote_in(&mut tx.tx, vote).await?;
                tx.commit().await?;
                Ok(outcome)
            }
        }
    }

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
                    // Computed from the votes by `AppBackend::study_report`.
                    flags: Vec::new(),
                })
            })
            .collect()
    }

    /// The study's preference votes as the rigging tests read them (rater, models on each side,
    /// verdict, time on the page), in vote order: the same votes as `AppBackend::study_records`
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

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    /// Results per model from the study's vote tallies.
    pub async fn model_results(&self, study_id: i64) -> StoreResult<Vec<ModelResult>> {
        let models = self.models(study_id).await?;
        let tallies = self.vote_tallies(study_id).await?;
        Ok(crate::domain::model_results(&models, &tallies))
    }
}

/// Records an assignment before it is shown. Returns `None` if the rater was given this prompt
/// concurrently (the caller shows that one instead).
async fn insert_assignment_in(
    conn: &mut AnyConnection,
    new: &NewAssignment,
) -> StoreResult<Option<String>> {
    let public_id = random_hex(16);
    let (low, high) = {
        let (a, b) = (new.left_response.1, new.right_response.1);
        (a.min(b), a.max(b))
    };
    if is_postgres(conn) {
        // The rater's requests take turns here, so the checks below see each other's rows (on
        // SQLite every write already holds the one writer lock).
        sqlx::query("SELECT id FROM raters WHERE id = $1 FOR UPDATE")
            .bind(new.rater_id)
            .execute(&mut *conn)
            .await?;
    }
    // One unvoted comparison at a time and at most `max_for_rater` in the session, checked where the
    // row is written: parallel requests of one rater get the same answer as serial ones. The unique
    // index `assignments_once` (a rater sees a prompt once) turns a concurrent second assignment of
    // the same prompt into no row, without an error that would end the transaction.
    let inserted = sqlx::query(
        "INSERT INTO assignments (public_id, rater_id, prompt_id, left_response_id, right_response_id, \
         model_low, model_high, kind, issued_ms, state, expires_ms) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'issued', $11 \
         WHERE NOT EXISTS (SELECT 1 FROM assignments WHERE rater_id = $2 AND state = 'issued') \
         AND (SELECT COUNT(*) FROM assignments WHERE rater_id = $2) < $10 \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&public_id)
    .bind(new.rater_id)
    .bind(new.prompt_id)
    .bind(new.left_response.0)
    .bind(new.right_response.0)
    .bind(low)
    .bind(high)
    .bind(new.check.map_or("regular", CheckKind::as_str))
    .bind(now_ms())
    .bind(i64::from(new.max_for_rater))
    .bind(new.expires_ms)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        return Ok(None);
    }
    sqlx::query("UPDATE prompts SET times_assigned = times_assigned + 1 WHERE id = $1")
        .bind(new.prompt_id)
        .execute(&mut *conn)
        .await?;
    if new.check.is_some() {
        return Ok(Some(public_id));
    }
    sqlx::query(
        "INSERT INTO pair_counts (study_id, model_low, model_high, shown) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (study_id, model_low, model_high) DO UPDATE SET shown = pair_counts.shown + 1",
    )
    .bind(new.study_id)
    .bind(low)
    .bind(high)
    .execute(&mut *conn)
    .await?;
    Ok(Some(public_id))
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
        sqlx::query(
            "UPDATE pair_counts SET shown = shown - 1 WHERE study_id = $1 AND model_low = $2 \
             AND model_high = $3 AND shown > 0",
        )
        .bind(row.try_get::<i64, _>("study_id")?)
        .bind(row.try_get::<i64, _>("model_low")?)
        .bind(row.try_get::<i64, _>("model_high")?)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE raters SET expired_assignments = expired_assignments + 1 WHERE id = $1")
        .bind(row.try_get::<i64, _>("rater_id")?)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

/// Records a vote for an assignment issued to this rater. A repeat of the same choice is
/// harmless; a different choice for an assignment already voted on is a conflict.
async fn record_vote_in(conn: &mut AnyConnection, vote: &VoteToRecord) -> StoreResult<VoteOutcome> {
    if is_postgres(conn) {
        // Two racing votes on one assignment take turns: the second then reads the first's vote
        // and gets the answer a serial repeat gets (recorded already, or a conflict), not a unique-key
        // error. (SQLite's writer lock serializes them already.)
        sqlx::query("SELECT id FROM assignments WHERE public_id = $1 AND rater_id = $2 FOR UPDATE")
            .bind(&vote.assignment_public_id)
            .bind(vote.rater_id)
            .execute(&mut *conn)
            .await?;
    }
    // One read: the assignment, its vote if any, and what a quality check expects.
    let row = sqlx::query(
        "SELECT a.id, a.issued_ms, a.kind, v.id AS vote_id, v.choice, p.check_model_id, \
         lr.model_id AS left_model, rr.model_id AS right_model \
         FROM assignments a LEFT JOIN votes v ON v.assignment_id = a.id \
         JOIN prompts p ON p.id = a.prompt_id \
         JOIN responses lr ON lr.id = a.left_response_id JOIN responses rr ON rr.id = a.right_response_id \
         WHERE a.public_id = $1 AND a.rater_id = $2",
    )
    .bind(&vote.assignment_public_id)
    .bind(vote.rater_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| {
        StoreError::NotFound(
            "this comparison is not open for you (it may have expired unvoted); \
             reload the page for your next one"
                .into(),
        )
    })?;
    let assignment_id: i64 = row.try_get("id")?;
    let issued_ms: i64 = row.try_get("issued_ms")?;
    let kind: String = row.try_get("kind")?;
    if let Some(vote_id) = row.try_get::<Option<i64>, _>("vote_id")? {
        let choice: String = row.try_get("choice")?;
        return if db_choice(&choice)? == vote.choice {
            Ok(VoteOutcome::AlreadyRecorded { vote_id })
        } else {
            Err(StoreError::Conflict(format!(
                "this comparison was already answered with {choice:?}; a vote cannot be changed"
            )))
        };
    }
    let now = now_ms();
    let vote_id: i64 = sqlx::query(
        "INSERT INTO votes (assignment_id, choice, source_guess, source_confidence, rationale, time_on_page_ms, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(assignment_id)
    .bind(vote.choice.as_str())
    .bind(vote.source_guess.clone())
    .bind(vote.source_confidence)
    .bind(vote.rationale.clone())
    .bind(now - issued_ms)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    .try_get("id")?;
    sqlx::query("UPDATE assignments SET state = $1 WHERE id = $2")
        .bind(if vote.reveal { "voted" } else { "done" })
        .bind(assignment_id)
        .execute(&mut *conn)
        .await?;
    let check_passed = match CheckKind::parse(&kind) {
        None => None,
        Some(_) => {
            let expected: Option<i64> = row.try_get("check_model_id")?;
            let chosen: Option<i64> = match vote.choice {
                Choice::Left => Some(row.try_get("left_model")?),
                Choice::Right => Some(row.try_get("right_model")?),
                Choice::Tie | Choice::BothBad => None,
            };
            Some(chosen.is_some() && chosen == expected)
        }
    };
    Ok(VoteOutcome::Recorded {
        vote_id,
        check_passed,
    })
}

// ----- group commit (SQLite) -----

/// A write that goes through the group-commit writer.
enum WriteOp {
    Assign(NewAssignment),
    Vote(VoteToRecord),
    /// An arena battle's row as it starts.
    Battle(arena::NewBattle),
}

enum WriteDone {
    Assigned(Option<String>),
    Voted(VoteOutcome),
    BattleRecorded,
}

type Reply = tokio::sync::oneshot::Sender<StoreResult<WriteDone>>;

/// On SQLite, the hot writes (assignments and votes) are queued to one task that commits whatever has
/// queued up as one transaction: one fsync for many writes, and no lock hand-offs between requests.
/// Each caller is answered only after that transaction committed. A write that is refused (not
/// found, conflict) is detected by reads before it writes anything, so it never spoils the batch; an
/// unexpected database error fails every write of the batch, none of which is then acknowledged.
#[derive(Clone)]
struct GroupWriter {
    queue: tokio::sync::mpsc::Sender<(WriteOp, Reply)>,
}

/// Most writes one transaction takes.
const GROUP_COMMIT_MAX: usize = 512;

impl GroupWriter {
    fn start(pool: AnyPool, write_lock: Arc<Mutex<()>>) -> GroupWriter {
        let (queue, mut receiver) = tokio::sync::mpsc::channel::<(WriteOp, Reply)>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
            while receiver.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
                let _guard = write_lock.lock().await;
                let results = Self::commit_batch(&pool, &batch).await;
                match results {
                    Ok(results) => {
                        for ((_, reply), result) in batch.drain(..).zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, writes = batch.len(), "group commit failed");
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(StoreError::Database(sqlx::Error::Protocol(
                                "the transaction of this write failed".into(),
                            ))));
                        }
                    }
                }
            }
        });
        GroupWriter { queue }
    }

    async fn commit_batch(
        pool: &AnyPool,
        batch: &[(WriteOp, Reply)],
    ) -> Result<Vec<StoreResult<WriteDone>>, StoreError> {
        let mut tx = pool.begin().await?;
        let mut results = Vec::with_capacity(batch.len());
        for (op, _) in batch {
            let result = match op {
                WriteOp::Assign(new) => insert_assignment_in(&mut tx, new)
                    .await
                    .map(WriteDone::Assigned),
                WriteOp::Vote(vote) => record_vote_in(&mut tx, vote).await.map(WriteDone::Voted),
                WriteOp::Battle(battle) => arena::insert_battle_in(&mut tx, battle)
                    .await
                    .map(|()| WriteDone::BattleRecorded),
            };
            match result {
                Err(StoreError::Database(error)) => return Err(StoreError::Database(error)),
                other => results.push(other),
            }
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn submit(&self, op: WriteOp) -> StoreResult<WriteDone> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let closed = || StoreError::Database(sqlx::Error::PoolClosed);
        self.queue.send((op, reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// Which undecided votes need their texts: the others are still read (filters and summaries count
/// them) but with empty prompt and responses, so SQLite does not load and copy texts nobody writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextsFor {
    pub ties: bool,
    pub both_bad: bool,
}

impl TextsFor {
    pub const ALL: TextsFor = TextsFor {
        ties: true,
        both_bad: true,
    };
}

/// Reads a study's vote records straight from its SQLite file with rusqlite, on the calling (blocking)
/// thread, in vote order (or item order with `by_item`). For each row, `each` gets a filler that
/// writes the row into a record of the caller's choosing, reusing that record's strings, so a reader
/// that recycles its records allocates almost nothing per row. Exports use this instead of the pool:
/// the `Any` driver's per-row hand-off between threads limited them to a third of this speed.
pub fn sqlite_vote_records(
    path: &std::path::Path,
    study: &StudyRow,
    by_item: bool,
    texts: TextsFor,
    mut each: impl FnMut(&mut RowFiller<'_, '_>) -> Result<(), crate::export::ExportError>,
) -> Result<(), crate::export::ExportError> {
    use rusqlite::OpenFlags;
    // The models of a study are few: read them once instead of joining them into every row.
    // Texts only where the export writes them: `?2` and `?3` say whether ties and both-bad votes do.
    let kept = |column: &str| {
        format!(
            "CASE WHEN v.choice IN ('left', 'right') OR (v.choice = 'tie' AND ?2) \
             OR (v.choice = 'both_bad' AND ?3) THEN {column} ELSE '' END"
        )
    };
    let order = if by_item {
        "p.id, a.model_low, a.model_high, v.id"
    } else {
        "v.id"
    };
    // CROSS JOIN fixes SQLite's join order: votes in id order, everything else by primary key, so the
    // export streams without sorting whatever the planner's statistics say (with `sqlite_stat1` from an
    // ANALYZE that predates an index, it once chose to walk raters first and sort a million rows).
    let sql = format!(
        "SELECT v.id, v.choice, v.source_guess, v.source_confidence, v.rationale, \
         v.time_on_page_ms, v.created_ms, a.kind, p.external_id, {conversation}, p.category, \
         p.language, r.pseudonym, lr.model_id, {left}, rr.model_id, {right}, r.completion_code, \
         lr.history, rr.history \
         FROM votes v CROSS JOIN assignments a ON a.id = v.assignment_id \
         CROSS JOIN prompts p ON p.id = a.prompt_id CROSS JOIN raters r ON r.id = a.rater_id \
         CROSS JOIN responses lr ON lr.id = a.left_response_id \
         CROSS JOIN responses rr ON rr.id = a.right_response_id \
         WHERE p.study_id = ?1 ORDER BY {order}",
        conversation = kept("p.conversation"),
        left = kept("lr.content"),
        right = kept("rr.content"),
    );
    let db_error = |e: rusqlite::Error| sqlite_read_error(path, e);
    let connection = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    connection
        .busy_timeout(Duration::from_secs(30))
        .map_err(db_error)?;
    let mut models: Vec<(i64, String, Openness)> = Vec::new();
    {
        let mut statement = connection
            .prepare("SELECT id, name, openness FROM models WHERE study_id = ?1")
            .map_err(db_error)?;
        let mut rows = statement.query([study.id]).map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            let openness: String = row.get(2).map_err(db_error)?;
            let openness = db_openness(&openness)
                .map_err(|e| crate::export::ExportError::Invalid(e.to_string()))?;
            models.push((
                row.get::<_, i64>(0).map_err(db_error)?,
                row.get::<_, String>(1).map_err(db_error)?,
                openness,
            ));
        }
    }
    let mut statement = connection.prepare(&sql).map_err(db_error)?;
    let mut rows = statement
        .query(rusqlite::params![study.id, texts.ties, texts.both_bad])
        .map_err(db_error)?;
    while let Some(row) = rows.next().map_err(db_error)? {
        each(&mut RowFiller {
            row,
            study,
            models: &models,
            path,
        })?;
    }
    Ok(())
}

fn sqlite_read_error(path: &std::path::Path, e: rusqlite::Error) -> crate::export::ExportError {
    crate::export::ExportError::Io(std::io::Error::other(format!(
        "reading {}: {e}",
        path.display()
    )))
}

/// One row of [`sqlite_vote_records`], to be written into a record.
pub struct RowFiller<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    study: &'r StudyRow,
    /// (model id, name, openness) of the study's models: a handful, searched in order.
    models: &'r [(i64, String, Openness)],
    path: &'r std::path::Path,
}

impl RowFiller<'_, '_> {
    /// Overwrites every field of `record` with this row, reusing its strings' buffers.
    pub fn fill(&self, record: &mut VoteRecord) -> Result<(), crate::export::ExportError> {
        let row = self.row;
        let db_error = |e: rusqlite::Error| sqlite_read_error(self.path, e);
        let invalid = |e: sqlx::Error| crate::export::ExportError::Invalid(e.to_string());
        let text = |i: usize| -> Result<&str, crate::export::ExportError> {
            row.get_ref(i)
                .and_then(|value| value.as_str().map_err(rusqlite::Error::from))
                .map_err(db_error)
        };
        let optional_text = |i: usize| -> Result<Option<&str>, crate::export::ExportError> {
            row.get_ref(i)
                .and_then(|value| value.as_str_or_null().map_err(rusqlite::Error::from))
                .map_err(db_error)
        };
        fn set(field: &mut String, value: &str) {
            field.clear();
            field.push_str(value);
        }
        fn set_optional(field: &mut Option<String>, value: Option<&str>) {
            match (field.as_mut(), value) {
                (Some(field), Some(value)) => set(field, value),
                (_, value) => *field = value.map(str::to_string),
            }
        }
        let conversation = text(9)?;
        record.conversation = if conversation.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(conversation).map_err(|e| {
                crate::export::ExportError::Invalid(format!(
                    "a stored conversation is not valid: {e}"
                ))
            })?
        };
        record.vote_id = row.get(0).map_err(db_error)?;
        set(&mut record.study, &self.study.slug);
        set(&mut record.prompt_id, text(8)?);
        set_optional(&mut record.category, optional_text(10)?);
        set_optional(&mut record.language, optional_text(11)?);
        let model = |i: usize| -> Result<(&str, Openness), crate::export::ExportError> {
            let id: i64 = row.get(i).map_err(db_error)?;
            let found = self.models.iter().find(|(model_id, ..)| *model_id == id);
            found
                .map(|(_, name, openness)| (name.as_str(), *openness))
                .ok_or_else(|| {
                    crate::export::ExportError::Invalid(format!(
                        "a response of study {:?} names model {id}, which is not the study's",
                        self.study.slug
                    ))
                })
        };
        let (left_model, left_openness) = model(13)?;
        set(&mut record.left_model, left_model);
        record.left_openness = left_openness;
        set(&mut record.left_response, text(14)?);
        let (right_model, right_openness) = model(15)?;
        set(&mut record.right_model, right_model);
        record.right_openness = right_openness;
        set(&mut record.right_response, text(16)?);
        record.choice = db_choice(text(1)?).map_err(invalid)?;
        set(&mut record.rater, text(12)?);
        record.created_ms = row.get(6).map_err(db_error)?;
        set_optional(&mut record.source_guess, optional_text(2)?);
        record.source_confidence = row.get(3).map_err(db_error)?;
        set_optional(&mut record.rationale, optional_text(4)?);
        record.time_on_page_ms = row.get(5).map_err(db_error)?;
        set(&mut record.assignment_kind, text(7)?);
        set_optional(&mut record.completion_code, optional_text(17)?);
        let history = |i: usize| -> Result<Vec<Message>, crate::export::ExportError> {
            history_of(optional_text(i)?.map(str::to_string)).map_err(invalid)
        };
        record.left_history = history(18)?;
        record.right_history = history(19)?;
        Ok(())
    }
}

/// A response's `history` column (a multi-turn battle side's earlier turns): NULL is none.
pub(crate) fn history_of(text: Option<String>) -> Result<Vec<Message>, sqlx::Error> {
    match text.as_deref() {
        None | Some("") => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e))),
    }
}

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
        Ok(sqlx::query(
            "INSERT INTO models (study_id, name, provider, openness, version) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(study_id)
        .bind(name)
        .bind(provider)
        .bind(openness.as_str())
        .bind(version)
        .fetch_one(&mut *self.tx)
        .await?
        .try_get("id")?)
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
        .bind(random_hex(16))
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
