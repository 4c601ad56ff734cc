//! Live-arena battles: starting, completing, continuing and voiding them, and what the rater's page,
//! the events stream and the researcher read of them. The rows each write puts down, and their SQL,
//! are in `battle_rows.rs`.

use std::collections::HashMap;

use moat_exports::{Message, Openness};
use sqlx::Row;

use super::battle_rows::{AnswerRow, BattleCompletion, BattleVoid, NewBattle};
use super::{Store, StoreError, StoreResult};
use crate::domain::now_ms;

/// A battle as stored, for the rater's page and the events stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattleRow {
    pub public_id: String,
    pub rater_id: i64,
    pub state: String,
    pub error: Option<String>,
    pub finished_ms: Option<i64>,
}

/// A complete battle whose comparison is not voted yet, as a follow-up question continues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattleToContinue {
    pub public_id: String,
    pub study_id: i64,
    pub rater_id: i64,
    /// A's and B's model names.
    pub models: [String; 2],
    /// Turns answered so far.
    pub turns: i64,
    /// The rater's messages so far (the first prompt and each follow-up).
    pub user_turns: Vec<Message>,
    /// Each side's whole conversation so far: the shared first turn, then its answers and the
    /// follow-ups between them.
    pub sides: [Vec<Message>; 2],
}

/// One contestant's finished answer.
#[derive(Debug, Clone)]
pub struct ContestantAnswer<'a> {
    pub model_name: &'a str,
    pub provider: &'a str,
    pub openness: Openness,
    pub version: &'a str,
    pub content: &'a str,
    pub metadata: serde_json::Value,
    /// The words by which the answer names a model or its maker, if it does (`crate::identity`).
    pub identity_flag: Option<String>,
}

impl Store {
    /// Records a battle as it starts (`streaming`): a crash from here on leaves a row nothing counts.
    /// On SQLite it goes through the group-commit writer (one fsync for the battles that start
    /// together), like votes. Refused with a conflict, nothing written, if the rater has started
    /// `per_hour` battles in the last hour (counted in the database: all server processes').
    pub async fn insert_battle(
        &self,
        public_id: &str,
        study_id: i64,
        rater_id: i64,
        models: (&str, &str),
        conversation: &[Message],
        per_hour: u32,
    ) -> StoreResult<()> {
        let battle = NewBattle {
            public_id: public_id.to_string(),
            study_id,
            rater_id,
            models: [models.0.to_string(), models.1.to_string()],
            conversation: serde_json::to_string(conversation).expect("messages serialize"),
            created_ms: now_ms(),
            per_hour,
        };
        self.write(super::WriteOp::Battle(battle)).await.map(|_| ())
    }

    /// When each battle the rater started since `since_ms` started, oldest first (void ones
    /// included: each cost the models work).
    pub async fn battle_starts_since(&self, rater_id: i64, since_ms: i64) -> StoreResult<Vec<i64>> {
        const SQL: &str = "SELECT created_ms FROM arena_battles WHERE rater_id = $1 \
             AND created_ms >= $2 ORDER BY created_ms";
        // On a rater's first battle start: read where the request is (`native_reader.rs`).
        if let Some(read) = self.native_rows(SQL, &[&rater_id, &since_ms], |row| Ok(row.get(0)?)) {
            return read;
        }
        let rows = sqlx::query(SQL)
            .bind(rater_id)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get("created_ms").map_err(StoreError::from))
            .collect()
    }

    /// How often each pair of models (by name, in the order stored) met in the study's battles that
    /// were not void.
    pub async fn battle_pair_counts(
        &self,
        study_id: i64,
    ) -> StoreResult<HashMap<(String, String), i64>> {
        let rows = sqlx::query(
            "SELECT model_a, model_b, COUNT(*) AS n FROM arena_battles \
             WHERE study_id = $1 AND state <> 'void' GROUP BY model_a, model_b",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = HashMap::new();
        for row in rows {
            let (a, b): (String, String) = (row.try_get("model_a")?, row.try_get("model_b")?);
            let key = if a <= b { (a, b) } else { (b, a) };
            *counts.entry(key).or_insert(0) += row.try_get::<i64, _>("n")?;
        }
        Ok(counts)
    }

    pub async fn battle(&self, public_id: &str) -> StoreResult<Option<BattleRow>> {
        const SQL: &str =
            "SELECT public_id, rater_id, state, error, finished_ms FROM arena_battles \
             WHERE public_id = $1";
        if let Some(read) = self.native_row(SQL, &[&public_id], |row| {
            Ok(BattleRow {
                public_id: row.get("public_id")?,
                rater_id: row.get("rater_id")?,
                state: row.get("state")?,
                error: row.get("error")?,
                finished_ms: row.get("finished_ms")?,
            })
        }) {
            return read;
        }
        let row = sqlx::query(SQL)
            .bind(public_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| battle_from_row(&row))
            .transpose()
            .map_err(StoreError::from)
    }

    /// The rater's most recent battle.
    pub async fn latest_battle(&self, rater_id: i64) -> StoreResult<Option<BattleRow>> {
        let row = sqlx::query(
            "SELECT public_id, rater_id, state, error, finished_ms FROM arena_battles \
             WHERE rater_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(rater_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| battle_from_row(&row))
            .transpose()
            .map_err(StoreError::from)
    }

    /// The rater's battle that a follow-up question may continue: complete, its comparison not voted.
    pub async fn battle_to_continue(&self, rater_id: i64) -> StoreResult<Option<BattleToContinue>> {
        let row = sqlx::query(
            "SELECT b.public_id, b.study_id, b.rater_id, b.model_a, b.model_b, b.turns, b.conversation, \
             p.conversation AS shared, lr.content AS left_text, lr.history AS left_history, \
             rr.content AS right_text, rr.history AS right_history \
             FROM arena_battles b JOIN assignments a ON a.id = b.assignment_id \
             JOIN prompts p ON p.id = a.prompt_id \
             JOIN responses lr ON lr.id = a.left_response_id JOIN responses rr ON rr.id = a.right_response_id \
             WHERE b.rater_id = $1 AND b.state = 'complete' AND a.state = 'issued' \
             ORDER BY b.id DESC LIMIT 1",
        )
        .bind(rater_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let messages = |column: &str| -> Result<Vec<Message>, sqlx::Error> {
            let text: String = row.try_get(column)?;
            serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        };
        let shared = messages("shared")?;
        let side = |text: &str, history: &str| -> Result<Vec<Message>, sqlx::Error> {
            let mut side = shared.clone();
            side.extend(super::history_of(row.try_get(history)?)?);
            side.push(Message::new("assistant", row.try_get::<String, _>(text)?));
            Ok(side)
        };
        Ok(Some(BattleToContinue {
            public_id: row.try_get("public_id")?,
            study_id: row.try_get("study_id")?,
            rater_id: row.try_get("rater_id")?,
            models: [row.try_get("model_a")?, row.try_get("model_b")?],
            turns: row.try_get("turns")?,
            user_turns: messages("conversation")?,
            sides: [
                side("left_text", "left_history")?,
                side("right_text", "right_history")?,
            ],
        }))
    }

    /// Records a follow-up turn's answers in one transaction: each side's last answer moves into its
    /// history with the new question, the new answers become the responses' text (and metadata), and
    /// the battle counts one more turn. Refused (nothing written) if the comparison was voted on or
    /// the battle changed meanwhile.
    pub async fn complete_follow_up(
        &self,
        battle: &BattleToContinue,
        question: &Message,
        answers: [&ContestantAnswer<'_>; 2],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT a.left_response_id, a.right_response_id, a.prompt_id FROM arena_battles b \
             JOIN assignments a ON a.id = b.assignment_id \
             WHERE b.public_id = $1 AND b.state = 'complete' AND b.turns = $2 AND a.state = 'issued'",
        )
        .bind(&battle.public_id)
        .bind(battle.turns)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| {
            StoreError::Conflict("the battle was voted on or changed meanwhile".into())
        })?;
        let prompt_id: i64 = row.try_get("prompt_id")?;
        let shared = battle.user_turns.len().min(1);
        for (index, (column, answer)) in ["left_response_id", "right_response_id"]
            .into_iter()
            .zip(answers)
            .enumerate()
        {
            let response_id: i64 = row.try_get(column)?;
            // The side's history: everything after the shared first turn, then the new question.
            let mut history: Vec<Message> = battle.sides[index][shared..].to_vec();
            history.push(question.clone());
            sqlx::query(
                "UPDATE responses SET content = $1, history = $2, metadata = $3, \
                 identity_flag = COALESCE(identity_flag, $4) WHERE id = $5",
            )
            .bind(answer.content)
            .bind(serde_json::to_string(&history).expect("messages serialize"))
            .bind(answer.metadata.to_string())
            .bind(answer.identity_flag.clone())
            .bind(response_id)
            .execute(&mut *tx.tx)
            .await?;
            if answer.identity_flag.is_some() {
                tx.flag_prompt(prompt_id).await?;
            }
        }
        let mut user_turns = battle.user_turns.clone();
        user_turns.push(question.clone());
        sqlx::query(
            "UPDATE arena_battles SET turns = turns + 1, conversation = $1, finished_ms = $2 \
             WHERE public_id = $3 AND turns = $4",
        )
        .bind(serde_json::to_string(&user_turns).expect("messages serialize"))
        .bind(now_ms())
        .bind(&battle.public_id)
        .bind(battle.turns)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A follow-up failed: the whole battle is void (kept with its error, never counted) and its
    /// unvoted comparison is withdrawn, so no part of the conversation can be voted on.
    pub async fn void_continued_battle(&self, public_id: &str, error: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let assignment: Option<i64> = sqlx::query(
            "SELECT assignment_id FROM arena_battles WHERE public_id = $1 AND state = 'complete'",
        )
        .bind(public_id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .map(|row| row.try_get("assignment_id"))
        .transpose()?
        .flatten();
        let Some(assignment) = assignment else {
            return Ok(());
        };
        // The battle row points at the assignment: unlink it first (unless it was voted on).
        let voided = sqlx::query(
            "UPDATE arena_battles SET state = 'void', error = $1, finished_ms = $2, assignment_id = NULL \
             WHERE public_id = $3 AND state = 'complete' \
             AND NOT EXISTS (SELECT 1 FROM votes WHERE assignment_id = $4)",
        )
        .bind(error)
        .bind(now_ms())
        .bind(public_id)
        .bind(assignment)
        .execute(&mut *tx.tx)
        .await?;
        if voided.rows_affected() == 1 {
            sqlx::query("DELETE FROM assignments WHERE id = $1 AND state = 'issued'")
                .bind(assignment)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notes that the rater is watching a running battle's events through a process other than the
    /// one running it (see [`Store::battle_watched_ms`]).
    pub async fn mark_battle_watched(&self, public_id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE arena_battles SET watched_ms = $1 WHERE public_id = $2 AND state = 'streaming'",
        )
        .bind(now_ms())
        .bind(public_id)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Notes that the process running this battle is still at it (PostgreSQL only: a SQLite file is
    /// served by one process, which knows its own battles).
    pub async fn mark_battle_alive(&self, public_id: &str) -> StoreResult<()> {
        if self.dialect() == super::Dialect::Sqlite {
            return Ok(());
        }
        sqlx::query(
            "UPDATE arena_battles SET alive_ms = $1 WHERE public_id = $2 AND state = 'streaming'",
        )
        .bind(now_ms())
        .bind(public_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A battle's state and when its process last showed it was running it (its start, if never).
    pub async fn battle_liveness(&self, public_id: &str) -> StoreResult<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT state, COALESCE(alive_ms, created_ms) AS alive FROM arena_battles \
             WHERE public_id = $1",
        )
        .bind(public_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Some((row.try_get("state")?, row.try_get("alive")?)),
            None => None,
        })
    }

    /// When another process last noted that the rater watches this battle (ms), if ever.
    pub async fn battle_watched_ms(&self, public_id: &str) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT watched_ms FROM arena_battles WHERE public_id = $1")
            .bind(public_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>, _>("watched_ms")?,
            None => None,
        })
    }

    /// Marks a battle void with its error (kept for the researcher, never counted). On SQLite it goes
    /// through the group-commit writer.
    pub async fn void_battle(&self, public_id: &str, error: &str) -> StoreResult<()> {
        let void = BattleVoid {
            public_id: public_id.to_string(),
            error: error.to_string(),
            finished_ms: now_ms(),
        };
        self.write(super::WriteOp::VoidBattle(void))
            .await
            .map(|_| ())
    }

    /// Turns a finished battle into ordinary rows in one transaction: the models (created on first
    /// use), a prompt holding the conversation, the two responses with their generation metadata, and
    /// an issued assignment of the rater with A on the left and B on the right. Returns the
    /// assignment's public id. Refused (nothing written) if the battle is no longer `streaming`
    /// (voided meanwhile: the rater left). On SQLite it goes through the group-commit writer: the
    /// battles that end together share one fsync, as votes do.
    pub async fn complete_battle(
        &self,
        public_id: &str,
        study_id: i64,
        rater_id: i64,
        conversation: &[Message],
        answers: [&ContestantAnswer<'_>; 2],
    ) -> StoreResult<crate::domain::AssignmentId> {
        let row = |answer: &ContestantAnswer<'_>| AnswerRow {
            model_name: answer.model_name.to_string(),
            provider: answer.provider.to_string(),
            openness: answer.openness,
            version: answer.version.to_string(),
            content: answer.content.to_string(),
            metadata: answer.metadata.to_string(),
            // An answer that names a model or its maker is flagged (crate::identity): the rater
            // has seen it already, but the leaderboard leaves such battles out by default. The
            // caller checks the text before (a detector is costly to build, and the write holds
            // SQLite's write lock).
            identity_flag: answer.identity_flag.clone(),
        };
        let completion = BattleCompletion {
            public_id: public_id.to_string(),
            study_id,
            rater_id,
            conversation: serde_json::to_string(conversation).expect("messages serialize"),
            answers: [row(answers[0]), row(answers[1])],
            finished_ms: now_ms(),
        };
        match self
            .write(super::WriteOp::CompleteBattle(Box::new(completion)))
            .await?
        {
            super::WriteDone::BattleCompleted(id) => Ok(id),
            _ => unreachable!("a battle's completion answers with its assignment"),
        }
    }

    /// Battles of a study by state, and the latest errors of void ones, for the researcher.
    pub async fn battle_summary(&self, study_id: i64) -> StoreResult<BattleSummary> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM arena_battles WHERE study_id = $1 GROUP BY state",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        let mut summary = BattleSummary::default();
        for row in rows {
            let n: i64 = row.try_get("n")?;
            match row.try_get::<String, _>("state")?.as_str() {
                "complete" => summary.complete = n,
                "void" => summary.void = n,
                _ => summary.streaming = n,
            }
        }
        let errors = sqlx::query(
            "SELECT public_id, model_a, model_b, error FROM arena_battles \
             WHERE study_id = $1 AND state = 'void' ORDER BY id DESC LIMIT 20",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        for row in errors {
            summary.recent_void.push(VoidBattle {
                battle: row.try_get("public_id")?,
                model_a: row.try_get("model_a")?,
                model_b: row.try_get("model_b")?,
                error: row
                    .try_get::<Option<String>, _>("error")?
                    .unwrap_or_default(),
            });
        }
        Ok(summary)
    }
}

/// Battles of an arena study, for the researcher (`moat study show`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BattleSummary {
    pub complete: i64,
    pub void: i64,
    /// Started and not finished: running now, or cut off by a crash (never counted).
    pub streaming: i64,
    pub recent_void: Vec<VoidBattle>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VoidBattle {
    pub battle: String,
    pub model_a: String,
    pub model_b: String,
    pub error: String,
}

fn battle_from_row(row: &sqlx::any::AnyRow) -> Result<BattleRow, sqlx::Error> {
    Ok(BattleRow {
        public_id: row.try_get("public_id")?,
        rater_id: row.try_get("rater_id")?,
        state: row.try_get("state")?,
        error: row.try_get("error")?,
        finished_ms: row.try_get("finished_ms")?,
    })
}
