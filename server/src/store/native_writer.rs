//! The group-commit writer on a SQLite file, run natively: one OS thread owns a rusqlite connection
//! and commits each group of queued writes as one transaction, with cached prepared statements. The
//! `Any` driver runs every statement as a round trip to its connection's worker thread (about three
//! per write, each a wake-up of two threads); here a write is a few calls into SQLite on the thread
//! that already holds the transaction. The SQL is the same as the `Any` path's (`assignments.rs`,
//! `arena.rs`), and so are the answers: each caller is told after its group committed.

use rusqlite::{ToSql, TransactionBehavior};

use super::assigner_memory::Note;
use super::assignments::{
    vote_cannot_change, vote_target_missing, CHECK_TARGET, COUNT_PAIR_SHOWN, COUNT_PROMPT_ASSIGNED,
    INSERT_ASSIGNMENT_ROW, INSERT_VOTE_ROW, MARK_VOTED, VOTE_TARGET_NARROW,
};
use super::battle_rows::{
    battle_assignment, battle_not_running, battle_prompt_id, BattleCompletion, BattleVoid,
    NewBattle, BATTLE_STREAMING, FLAG_PROMPT, INSERT_BATTLE, INSERT_BATTLE_PROMPT,
    INSERT_BATTLE_RESPONSE, INSERT_MODEL, MARK_BATTLE_COMPLETE, MODEL_ID, VOID_BATTLE,
};
use super::group_writer::{answer, WriteDone, WriteOp, GROUP_COMMIT_MAX};
use super::native_reader::bind;
use super::*;

/// Opens the writer's connection with the pool's settings (FULL synchronous: an acknowledged write
/// survives a crash of the process and of the OS).
pub(super) fn open(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; \
         PRAGMA mmap_size=268435456;",
    )?;
    // Assignments, votes and battles: a handful of statements, each prepared once.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

type Reply = tokio::sync::oneshot::Sender<StoreResult<WriteDone>>;

/// The writer thread: waits for a write, takes whatever else has queued (up to
/// [`GROUP_COMMIT_MAX`]), commits them as one transaction under the store's write lock, answers.
pub(super) fn run(
    path: std::path::PathBuf,
    write_lock: Arc<Mutex<()>>,
    mut receiver: tokio::sync::mpsc::Receiver<(WriteOp, Reply)>,
    file: Arc<super::native_reader::NativeFile>,
) {
    let mut conn: Option<rusqlite::Connection> = None;
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(GROUP_COMMIT_MAX);
    let mut notes: Vec<Note> = Vec::with_capacity(GROUP_COMMIT_MAX);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < GROUP_COMMIT_MAX {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcome = {
            let _guard = write_lock.blocking_lock();
            // Opened at the first write, after `Store::connect` ran the migrations; reopened after
            // a failure, so a broken connection does not fail every later group.
            let opened = match conn.take() {
                Some(open) => Ok(open),
                None => open(&path),
            };
            match opened {
                Ok(mut open) => {
                    notes.clear();
                    let outcome = commit_batch(&mut open, &batch, &mut notes);
                    if outcome.is_ok() {
                        conn = Some(open);
                        // Before anyone is answered: a rater's next choice counts this one.
                        file.assigner.note_assigned(&notes);
                    }
                    outcome
                }
                Err(error) => Err(error.into()),
            }
        };
        answer(&mut batch, outcome);
    }
}

/// Commits `batch` as one transaction; `notes` gets the assignments it wrote, for the assigner's
/// memory.
fn commit_batch(
    conn: &mut rusqlite::Connection,
    batch: &[(WriteOp, Reply)],
    notes: &mut Vec<Note>,
) -> Result<Vec<StoreResult<WriteDone>>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        let result = match op {
            WriteOp::Assign(new) => insert_assignment(&tx, new, notes).map(WriteDone::Assigned),
            WriteOp::Vote(vote) => record_vote(&tx, vote).map(WriteDone::Voted),
            WriteOp::VoteThenAssign(pair) => {
                let (vote, next) = &**pair;
                record_vote(&tx, vote).and_then(|outcome| {
                    // The refusals of both are found by reads before they write anything.
                    let assigned = match outcome {
                        VoteOutcome::Recorded { .. } => insert_assignment(&tx, next, notes)?,
                        VoteOutcome::AlreadyRecorded { .. } => None,
                    };
                    Ok(WriteDone::VotedThenAssigned(outcome, assigned))
                })
            }
            WriteOp::Battle(battle) => {
                insert_battle(&tx, battle).map(|()| WriteDone::BattleRecorded)
            }
            WriteOp::VoidBattle(void) => void_battle(&tx, void).map(|()| WriteDone::BattleVoided),
            WriteOp::CompleteBattle(completion) => {
                // Several statements, the last of which may find the battle voided: under a
                // savepoint, so that a refusal or a failure leaves the rest of the group whole.
                tx.execute_batch("SAVEPOINT battle")?;
                match complete_battle(&tx, completion) {
                    Ok(assignment) => {
                        tx.execute_batch("RELEASE battle")?;
                        results.push(Ok(WriteDone::BattleCompleted(assignment)));
                    }
                    Err(error) => {
                        tx.execute_batch("ROLLBACK TO battle; RELEASE battle")?;
                        results.push(Err(error));
                    }
                }
                continue;
            }
        };
        match result {
            // A refusal (not found, conflict) is found by reads before anything is written; a
            // database error fails the whole group, none of which is then acknowledged.
            Err(error @ (StoreError::Database(_) | StoreError::Sqlite(_))) => return Err(error),
            other => results.push(other),
        }
    }
    tx.commit()?;
    Ok(results)
}

fn insert_assignment(
    tx: &rusqlite::Connection,
    new: &NewAssignment,
    notes: &mut Vec<Note>,
) -> StoreResult<Option<AssignmentId>> {
    let public_id = AssignmentId::mint();
    let (a, b) = (new.left_response.1, new.right_response.1);
    let (low, high) = (a.min(b), a.max(b));
    let kind = new.check.map_or("regular", CheckKind::as_str);
    let inserted = {
        let mut stmt = tx.prepare_cached(INSERT_ASSIGNMENT_ROW)?;
        bind(
            &mut stmt,
            &[
                &public_id.as_str(),
                &new.rater_id,
                &new.prompt_id,
                &new.left_response.0,
                &new.right_response.0,
                &low,
                &high,
                &kind,
                &now_ms(),
                &i64::from(new.max_for_rater),
                &new.expires_ms,
            ],
        )?;
        // No row: a refusal (another open comparison, the session's limit, the prompt seen).
        match stmt.raw_execute()? {
            0 => None,
            _ => Some(tx.last_insert_rowid()),
        }
    };
    let Some(row_id) = inserted else {
        return Ok(None);
    };
    notes.push(Note {
        study_id: new.study_id,
        rater_id: new.rater_id,
        prompt_id: new.prompt_id,
        pair: new.check.is_none().then_some((low, high)),
        row_id,
    });
    execute(tx, COUNT_PROMPT_ASSIGNED, &[&new.prompt_id])?;
    if new.check.is_none() {
        execute(tx, COUNT_PAIR_SHOWN, &[&new.study_id, &low, &high, &0, &1])?;
    }
    Ok(Some(public_id))
}

fn execute(tx: &rusqlite::Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<()> {
    let mut stmt = tx.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    stmt.raw_execute()?;
    Ok(())
}

/// What [`VOTE_TARGET_NARROW`] reads.
struct Target {
    assignment_id: i64,
    issued_ms: i64,
    kind: String,
    vote: Option<(i64, String)>,
    /// The prompt and the left and right responses, for a quality check's [`CHECK_TARGET`].
    shown: (i64, i64, i64),
}

fn record_vote(tx: &rusqlite::Connection, vote: &VoteToRecord) -> StoreResult<VoteOutcome> {
    let target = {
        let mut stmt = tx.prepare_cached(VOTE_TARGET_NARROW)?;
        bind(&mut stmt, &[&vote.assignment.as_str(), &vote.rater_id])?;
        let mut rows = stmt.raw_query();
        let Some(row) = rows.next()? else {
            return Err(vote_target_missing());
        };
        Target {
            assignment_id: row.get(0)?,
            issued_ms: row.get(1)?,
            kind: row.get(2)?,
            vote: match row.get::<_, Option<i64>>(3)? {
                Some(id) => Some((id, row.get(4)?)),
                None => None,
            },
            shown: (row.get(5)?, row.get(6)?, row.get(7)?),
        }
    };
    if let Some((vote_id, choice)) = target.vote {
        return if db_choice(&choice)? == vote.choice {
            Ok(VoteOutcome::AlreadyRecorded { vote_id })
        } else {
            Err(vote_cannot_change(&choice))
        };
    }
    let now = now_ms();
    let vote_id: i64 = {
        let mut stmt = tx.prepare_cached(INSERT_VOTE_ROW)?;
        bind(
            &mut stmt,
            &[
                &target.assignment_id,
                &vote.choice.as_str(),
                &vote.source_guess,
                &vote.source_confidence,
                &vote.rationale,
                &(now - target.issued_ms),
                &now,
            ],
        )?;
        stmt.raw_execute()?;
        tx.last_insert_rowid()
    };
    let state = if vote.reveal { "voted" } else { "done" };
    execute(tx, MARK_VOTED, &[&state, &target.assignment_id])?;
    let check_passed = match CheckKind::parse(&target.kind) {
        None => None,
        Some(_) => {
            let (prompt, left, right) = target.shown;
            let (expected, left_model, right_model) = {
                let mut stmt = tx.prepare_cached(CHECK_TARGET)?;
                bind(&mut stmt, &[&prompt, &left, &right])?;
                let mut rows = stmt.raw_query();
                let row = rows.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                (
                    row.get::<_, Option<i64>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                )
            };
            let chosen = match vote.choice {
                Choice::Left => Some(left_model),
                Choice::Right => Some(right_model),
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

fn insert_battle(tx: &rusqlite::Connection, battle: &NewBattle) -> StoreResult<()> {
    let mut stmt = tx.prepare_cached(INSERT_BATTLE)?;
    bind(
        &mut stmt,
        &[
            &battle.public_id,
            &battle.study_id,
            &battle.rater_id,
            &battle.models[0],
            &battle.models[1],
            &battle.conversation,
            &battle.created_ms,
            &battle.hour_before(),
            &i64::from(battle.per_hour),
            &battle.alive_since(),
        ],
    )?;
    if stmt.raw_execute()? == 0 {
        let started: i64 = tx.query_row(
            super::battle_rows::BATTLES_SINCE,
            [battle.rater_id, battle.hour_before()],
            |row| row.get(0),
        )?;
        return Err(super::battle_rows::battle_refused(battle, started));
    }
    Ok(())
}

fn void_battle(tx: &rusqlite::Connection, void: &BattleVoid) -> StoreResult<()> {
    execute(
        tx,
        VOID_BATTLE,
        &[&void.error, &void.finished_ms, &void.public_id],
    )
}

/// The first column of the one row `sql` returns (an id), `None` when it returns none.
fn returned_id(
    tx: &rusqlite::Connection,
    sql: &str,
    values: &[&dyn ToSql],
) -> StoreResult<Option<i64>> {
    let mut stmt = tx.prepare_cached(sql)?;
    bind(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(row) => Ok(Some(row.get(0)?)),
        None => Ok(None),
    }
}

/// [`Store::complete_battle`]'s rows, as `battle_rows::complete_battle_in` writes them on the `Any`
/// path.
fn complete_battle(
    tx: &rusqlite::Connection,
    completion: &BattleCompletion,
) -> StoreResult<AssignmentId> {
    let inserted = |sql: &str, values: &[&dyn ToSql]| -> StoreResult<i64> {
        returned_id(tx, sql, values)?
            .ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    };
    if returned_id(tx, BATTLE_STREAMING, &[&completion.public_id])?.is_none() {
        return Err(battle_not_running());
    }
    let prompt_id = inserted(
        INSERT_BATTLE_PROMPT,
        &[
            &completion.study_id,
            &battle_prompt_id(&completion.public_id),
            &completion.conversation,
        ],
    )?;
    let mut responses = [(0, 0); 2];
    for (slot, answer) in responses.iter_mut().zip(&completion.answers) {
        let model_id = match returned_id(tx, MODEL_ID, &[&completion.study_id, &answer.model_name])?
        {
            Some(id) => id,
            None => {
                execute(
                    tx,
                    INSERT_MODEL,
                    &[
                        &completion.study_id,
                        &answer.model_name,
                        &answer.provider,
                        &answer.openness.as_str(),
                        &answer.version,
                    ],
                )?;
                inserted(MODEL_ID, &[&completion.study_id, &answer.model_name])?
            }
        };
        let response_id = inserted(
            INSERT_BATTLE_RESPONSE,
            &[
                &prompt_id,
                &model_id,
                &answer.content,
                &answer.metadata,
                &answer.identity_flag,
            ],
        )?;
        if answer.identity_flag.is_some() {
            execute(tx, FLAG_PROMPT, &[&prompt_id])?;
        }
        *slot = (response_id, model_id);
    }
    let assignment =
        // An arena battle's comparison: the assigner of static studies does not count it.
        insert_assignment(
            tx,
            &battle_assignment(completion, prompt_id, responses),
            &mut Vec::new(),
        )?
            .ok_or_else(|| StoreError::Conflict("the battle's prompt was assigned twice".into()))?;
    execute(
        tx,
        MARK_BATTLE_COMPLETE,
        &[
            &prompt_id,
            &assignment.as_str(),
            &completion.finished_ms,
            &completion.public_id,
        ],
    )?;
    Ok(assignment)
}
