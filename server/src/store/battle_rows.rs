//! The rows a live-arena battle writes: its row as it starts, and, when it ends, either the ordinary
//! rows it becomes (models on first use, a prompt holding the conversation, two responses, an issued
//! assignment) or its voiding. The SQL is shared, as constants, by the `Any` path here (the pool's
//! writer and PostgreSQL) and the native SQLite writer (`native_writer.rs`).

use moat_exports::Openness;
use sqlx::Row;

pub(super) use super::identity_flags::FLAG_PROMPT;
use super::{insert_assignment_in, NewAssignment, StoreError, StoreResult};

/// A battle's row as it starts.
#[derive(Debug, Clone)]
pub struct NewBattle {
    pub public_id: String,
    pub study_id: i64,
    pub rater_id: i64,
    pub models: [String; 2],
    /// The rater's messages, as JSON.
    pub conversation: String,
    pub created_ms: i64,
    /// The study's `battles_per_hour`: the row is written only if the rater started fewer battles in
    /// the hour before `created_ms`, counted in the database, so that the limit holds across server
    /// processes (each process also counts in memory, which stops a rater before any model answers).
    pub per_hour: u32,
}

impl NewBattle {
    /// The start of the hour `per_hour` counts over.
    pub(super) fn hour_before(&self) -> i64 {
        self.created_ms - 3_600_000
    }

    /// Since when another `streaming` battle of the rater must have been noted alive to count as
    /// running ([`BATTLE_ALIVE_FOR_MS`]).
    pub(super) fn alive_since(&self) -> i64 {
        self.created_ms - BATTLE_ALIVE_FOR_MS
    }
}

/// A battle's row as it starts, unless the rater has started `$9` battles in the hour since `$8`, or
/// has another battle running: `streaming` and shown alive since `$10` (its process notes that every
/// few seconds on PostgreSQL; a row left by a crashed process stops counting after that). Also run by
/// the native SQLite writer. On PostgreSQL the rater's row is locked first, so that two processes
/// starting battles of one rater take turns.
pub(super) const INSERT_BATTLE: &str =
    "INSERT INTO arena_battles (public_id, study_id, rater_id, model_a, model_b, conversation, \
     state, created_ms) SELECT $1, $2, $3, $4, $5, $6, 'streaming', $7 \
     WHERE (SELECT COUNT(*) FROM arena_battles WHERE rater_id = $3 AND created_ms >= $8) < $9 \
     AND NOT EXISTS (SELECT 1 FROM arena_battles WHERE rater_id = $3 AND state = 'streaming' \
     AND COALESCE(alive_ms, created_ms) >= $10)";
/// How many battles the rater started since `$2` (why [`INSERT_BATTLE`] wrote nothing).
pub(super) const BATTLES_SINCE: &str =
    "SELECT COUNT(*) FROM arena_battles WHERE rater_id = $1 AND created_ms >= $2";

/// How long a `streaming` row counts as a running battle after its process last noted it alive.
pub const BATTLE_ALIVE_FOR_MS: i64 = 15_000;

/// What a rater who has started `started` battles in the last hour is told.
pub fn hourly_limit_message(started: u64) -> String {
    format!(
        "You have started {started} battles in the last hour, the most this study allows; please come back later."
    )
}

/// Why [`INSERT_BATTLE`] refused a battle, given how many the rater started in the last hour.
pub(super) fn battle_refused(battle: &NewBattle, started: i64) -> StoreError {
    StoreError::Conflict(if started >= i64::from(battle.per_hour) {
        hourly_limit_message(started as u64)
    } else {
        "Your other battle is still being answered; please wait for it to finish, then vote on it."
            .into()
    })
}

pub(super) async fn insert_battle_in(
    tx: &mut sqlx::AnyConnection,
    battle: &NewBattle,
) -> StoreResult<()> {
    super::assignments::lock_rater(tx, battle.rater_id).await?;
    let inserted = sqlx::query(INSERT_BATTLE)
        .bind(&battle.public_id)
        .bind(battle.study_id)
        .bind(battle.rater_id)
        .bind(&battle.models[0])
        .bind(&battle.models[1])
        .bind(&battle.conversation)
        .bind(battle.created_ms)
        .bind(battle.hour_before())
        .bind(i64::from(battle.per_hour))
        .bind(battle.alive_since())
        .execute(&mut *tx)
        .await?;
    if inserted.rows_affected() == 0 {
        let started: i64 = sqlx::query(BATTLES_SINCE)
            .bind(battle.rater_id)
            .bind(battle.hour_before())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        return Err(battle_refused(battle, started));
    }
    Ok(())
}

/// A finished battle to store as ordinary rows (owned: it travels to the group-commit writer).
#[derive(Debug, Clone)]
pub(super) struct BattleCompletion {
    pub public_id: String,
    pub study_id: i64,
    pub rater_id: i64,
    /// The rater's messages, as JSON.
    pub conversation: String,
    /// A's answer, then B's.
    pub answers: [AnswerRow; 2],
    pub finished_ms: i64,
}

/// One contestant's answer as it is stored.
#[derive(Debug, Clone)]
pub(super) struct AnswerRow {
    pub model_name: String,
    pub provider: String,
    pub openness: Openness,
    pub version: String,
    pub content: String,
    /// The generation metadata, as JSON.
    pub metadata: String,
    pub identity_flag: Option<String>,
}

/// A battle that ends void, with its error.
#[derive(Debug, Clone)]
pub(super) struct BattleVoid {
    pub public_id: String,
    pub error: String,
    pub finished_ms: i64,
}

// The statements of a battle's completion and voiding, shared by the `Any` path below and the
// native SQLite writer (`native_writer.rs`).
pub(super) const BATTLE_STREAMING: &str =
    "SELECT 1 AS x FROM arena_battles WHERE public_id = $1 AND state = 'streaming'";
pub(super) const MODEL_ID: &str = "SELECT id FROM models WHERE study_id = $1 AND name = $2";
/// A contestant's model row on its first battle; two battles ending together (on PostgreSQL, in two
/// transactions) may both find it missing: the second waits for the first and then reads its row.
pub(super) const INSERT_MODEL: &str =
    "INSERT INTO models (study_id, name, provider, openness, version) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (study_id, name) DO NOTHING";
pub(super) const INSERT_BATTLE_PROMPT: &str =
    "INSERT INTO prompts (study_id, external_id, conversation) VALUES ($1, $2, $3) RETURNING id";
pub(super) const INSERT_BATTLE_RESPONSE: &str =
    "INSERT INTO responses (prompt_id, model_id, content, metadata, identity_flag) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";
pub(super) const MARK_BATTLE_COMPLETE: &str =
    "UPDATE arena_battles SET state = 'complete', prompt_id = $1, \
     assignment_id = (SELECT id FROM assignments WHERE public_id = $2), finished_ms = $3 \
     WHERE public_id = $4 AND state = 'streaming'";
pub(super) const VOID_BATTLE: &str =
    "UPDATE arena_battles SET state = 'void', error = $1, finished_ms = $2 \
     WHERE public_id = $3 AND state = 'streaming'";

/// What a completion of a battle that is no longer running is told.
pub(super) fn battle_not_running() -> StoreError {
    StoreError::Conflict("the battle is no longer running".into())
}

/// The external id of a battle's prompt.
pub(super) fn battle_prompt_id(public_id: &str) -> String {
    format!("arena-{public_id}")
}

/// The issued assignment a battle's comparison becomes: A on the left, B on the right.
pub(super) fn battle_assignment(
    completion: &BattleCompletion,
    prompt_id: i64,
    responses: [(i64, i64); 2],
) -> NewAssignment {
    NewAssignment {
        rater_id: completion.rater_id,
        study_id: completion.study_id,
        prompt_id,
        left_response: responses[0],
        right_response: responses[1],
        check: None,
        // The arena's own limits (one running battle, a vote before the next) apply; a battle's
        // comparison never expires: the rater wrote its prompt.
        max_for_rater: u32::MAX,
        expires_ms: None,
        // The arena samples its pairs from its own counts; only the admin page reads these.
        pair_shards: super::MAX_PAIR_SHARDS,
    }
}

/// Creates a study's model row unless another transaction has (on PostgreSQL a plain INSERT would
/// fail on the unique key `models(study_id, name)` when two writers create the same model at once;
/// the second waits for the first), and returns its id, whoever created it.
pub(super) async fn create_model_in(
    conn: &mut sqlx::AnyConnection,
    study_id: i64,
    name: &str,
    provider: &str,
    openness: Openness,
    version: &str,
) -> StoreResult<i64> {
    sqlx::query(INSERT_MODEL)
        .bind(study_id)
        .bind(name)
        .bind(provider)
        .bind(openness.as_str())
        .bind(version)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query(MODEL_ID)
        .bind(study_id)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?
        .try_get("id")?)
}

/// [`super::Store::complete_battle`] on an open transaction (the pool's writer or PostgreSQL).
/// Refusals are found before anything is written.
pub(super) async fn complete_battle_in(
    conn: &mut sqlx::AnyConnection,
    completion: &BattleCompletion,
) -> StoreResult<crate::domain::AssignmentId> {
    let running = sqlx::query(BATTLE_STREAMING)
        .bind(&completion.public_id)
        .fetch_optional(&mut *conn)
        .await?;
    if running.is_none() {
        return Err(battle_not_running());
    }
    let prompt_id: i64 = sqlx::query(INSERT_BATTLE_PROMPT)
        .bind(completion.study_id)
        .bind(battle_prompt_id(&completion.public_id))
        .bind(&completion.conversation)
        .fetch_one(&mut *conn)
        .await?
        .try_get("id")?;
    let mut responses = [(0, 0); 2];
    for (slot, answer) in responses.iter_mut().zip(&completion.answers) {
        let known = sqlx::query(MODEL_ID)
            .bind(completion.study_id)
            .bind(&answer.model_name)
            .fetch_optional(&mut *conn)
            .await?;
        let model_id: i64 = match known {
            Some(row) => row.try_get("id")?,
            None => {
                create_model_in(
                    conn,
                    completion.study_id,
                    &answer.model_name,
                    &answer.provider,
                    answer.openness,
                    &answer.version,
                )
                .await?
            }
        };
        let response_id: i64 = sqlx::query(INSERT_BATTLE_RESPONSE)
            .bind(prompt_id)
            .bind(model_id)
            .bind(&answer.content)
            .bind(&answer.metadata)
            .bind(answer.identity_flag.clone())
            .fetch_one(&mut *conn)
            .await?
            .try_get("id")?;
        if answer.identity_flag.is_some() {
            sqlx::query(FLAG_PROMPT)
                .bind(prompt_id)
                .execute(&mut *conn)
                .await?;
        }
        *slot = (response_id, model_id);
    }
    let assignment =
        insert_assignment_in(conn, &battle_assignment(completion, prompt_id, responses))
            .await?
            .ok_or_else(|| StoreError::Conflict("the battle's prompt was assigned twice".into()))?;
    let updated = sqlx::query(MARK_BATTLE_COMPLETE)
        .bind(prompt_id)
        .bind(assignment.as_str())
        .bind(completion.finished_ms)
        .bind(&completion.public_id)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() != 1 {
        // Voided meanwhile by another process (PostgreSQL): nothing of it may count.
        return Err(battle_not_running());
    }
    Ok(assignment)
}

/// [`super::Store::void_battle`] on an open transaction.
pub(super) async fn void_battle_in(
    conn: &mut sqlx::AnyConnection,
    void: &BattleVoid,
) -> StoreResult<()> {
    sqlx::query(VOID_BATTLE)
        .bind(&void.error)
        .bind(void.finished_ms)
        .bind(&void.public_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
