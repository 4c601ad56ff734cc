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
//! The hot writes on SQLite (assignments, votes, arena battles) go through a group-commit writer: one
//! task commits whatever has queued as one transaction (one fsync for many writes) and answers each
//! caller after the commit, so an acknowledged vote is always a committed one.

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

use crate::domain::{
    now_ms, random_hex, sha256_hex, AssignmentId, CheckKind, StudySlug, StudyStatus,
};

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

mod admin;
mod api_keys;
mod arena;
mod assigner_memory;
pub use assigner_memory::{AssignerSnapshot, AssignmentChoices, MAX_RATERS};
mod assignments;
mod battle_rows;
mod comparison_texts;
pub use battle_rows::{hourly_limit_message, BATTLE_ALIVE_FOR_MS};
mod connection;
mod export_reader;
mod generation;
mod group_writer;
mod identity_flags;
mod import_tx;
mod native_reader;
mod native_writer;
mod prompt_judgements;
mod reports;
mod sessions;
mod studies;

pub use crate::domain::{ModelRow, VoteTally};
pub use admin::{AdminSessionRow, AdminTokenRow, ADMIN_TOKEN_PREFIX};
pub use api_keys::{ApiKeyRow, API_KEY_PREFIX};
pub use arena::{BattleRow, BattleSummary, BattleToContinue, ContestantAnswer, VoidBattle};
use assignments::{insert_assignment_in, record_vote_in};
pub use assignments::{
    pair_shards_for, ResponseToScore, INSERT_ASSIGNMENT, MAX_PAIR_SHARDS, NEXT_REGULAR_PROMPTS_SQL,
};
pub use export_reader::{sqlite_vote_records, RecordReadError, RowFiller, TextsFor};
pub use generation::{GeneratedResponse, PromptToAnswer};
use group_writer::{GroupWriter, WriteDone, WriteOp};
pub use import_tx::WriteTx;
pub use prompt_judgements::PromptJudgements;
pub use sessions::ASSIGNMENT_IN_STATE_SQL;

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
    /// An error of the native SQLite writer (`store/native_writer.rs`).
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
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
    /// The SQLite file the rater path reads natively (`native_reader.rs`); `None` on PostgreSQL and
    /// for an in-memory database.
    native: Option<Arc<native_reader::NativeFile>>,
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
    pub public_id: AssignmentId,
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
    /// Over how many rows (1 to [`MAX_PAIR_SHARDS`]) the pair's shown count may be spread on
    /// PostgreSQL, where one row per pair made concurrent raters take turns; SQLite writes one.
    pub pair_shards: u32,
}

#[derive(Debug, Clone)]
pub struct VoteToRecord {
    pub assignment: AssignmentId,
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

/// A response's `history` column (a multi-turn battle side's earlier turns): NULL is none.
pub(crate) fn history_of(text: Option<String>) -> Result<Vec<Message>, sqlx::Error> {
    match text.as_deref() {
        None | Some("") => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e))),
    }
}
