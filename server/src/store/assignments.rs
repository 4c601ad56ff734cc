//! The rater path's reads and writes: candidate prompts and quality checks for the assigner, pair
//! counts, and recording an assignment and a vote (through the group-commit writer on SQLite).

use super::*;

/// The responses of the next regular prompts a rater may be given ([`unseen_prompts_sql`]; `$1`
/// study, `$2` rater, `$3` how many prompts, `$4` 1 to include identity-flagged ones). Only columns of
/// the index `prompts_assignable` (SQLite) or `prompts_next_regular` (PostgreSQL): the prompts are read
/// off it in order. Public for the test that checks PostgreSQL's plan.
pub const NEXT_REGULAR_PROMPTS_SQL: &str = unseen_prompts_sql!("IS NULL");

impl Store {
    /// Up to `limit` prompts of the study this rater has not been assigned, least-assigned first,
    /// with their responses, in one query. (Every prompt has two or more responses: import checks.)
    pub async fn candidate_prompts(
        &self,
        study_id: i64,
        rater_id: i64,
        limit: i64,
        show_flagged: bool,
    ) -> StoreResult<Vec<CandidatePrompt>> {
        const SQL: &str = NEXT_REGULAR_PROMPTS_SQL;
        let flagged = i64::from(show_flagged);
        if let Some(read) = self.native_rows(
            SQL,
            &[&study_id, &rater_id, &limit, &flagged],
            // By position (`prompt_id, id, model_id, times_assigned`): a read by name compares
            // the name with every column's, for each of the ~50 rows of every new comparison.
            |row| -> StoreResult<(i64, i64, (i64, i64))> {
                Ok((row.get(0)?, row.get(3)?, (row.get(1)?, row.get(2)?)))
            },
        ) {
            return read.map(|rows| gather_candidates(rows.into_iter()));
        }
        let rows = self
            .unseen_prompt_rows(
                NEXT_REGULAR_PROMPTS_SQL,
                (study_id, rater_id, limit),
                show_flagged,
            )
            .await?;
        let rows = rows
            .iter()
            .map(|row| -> StoreResult<(i64, i64, (i64, i64))> {
                Ok((
                    row.try_get("prompt_id")?,
                    row.try_get("times_assigned")?,
                    (row.try_get("id")?, row.try_get("model_id")?),
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(gather_candidates(rows.into_iter()))
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

    /// How often each (lower model id, higher model id) pair was shown in the study.
    pub async fn pair_counts(&self, study_id: i64) -> StoreResult<HashMap<(i64, i64), i64>> {
        // A pair's count may be spread over shards (see `COUNT_PAIR_SHOWN`).
        const SQL: &str = "SELECT model_low, model_high, CAST(SUM(shown) AS BIGINT) AS shown \
             FROM pair_counts WHERE study_id = $1 GROUP BY model_low, model_high";
        if let Some(read) = self.native_rows(SQL, &[&study_id], |row| {
            Ok(((row.get(0)?, row.get(1)?), row.get(2)?))
        }) {
            return read.map(|rows| rows.into_iter().collect());
        }
        let rows = sqlx::query(SQL)
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
    pub async fn insert_assignment(
        &self,
        new: &NewAssignment,
    ) -> StoreResult<Option<AssignmentId>> {
        match self.write(WriteOp::Assign(new.clone())).await? {
            WriteDone::Assigned(id) => Ok(id),
            _ => unreachable!("an assignment answers with an assignment"),
        }
    }

    // ----- votes -----

    /// Records a vote for an assignment issued to this rater. A repeat of the same choice is
    /// harmless; a different choice for an assignment already voted on is a conflict. Returns only
    /// once the vote is committed.
    pub async fn record_vote(&self, vote: &VoteToRecord) -> StoreResult<VoteOutcome> {
        match self.write(WriteOp::Vote(vote.clone())).await? {
            WriteDone::Voted(outcome) => Ok(outcome),
            _ => unreachable!("a vote answers with a vote"),
        }
    }

    /// Records a vote and, if it is recorded (not a repeat of a vote already recorded, not
    /// refused), the rater's next comparison, in one transaction: one commit for the rater's whole
    /// cycle. `next` is chosen by the caller as it would be once the vote is in; it is written under
    /// the same checks as [`Store::insert_assignment`] (one unvoted comparison at a time, at most
    /// the session's number, a prompt once), run after the vote, and comes back `None` when they
    /// refuse it. Returns only once both are committed.
    pub async fn record_vote_then_assign(
        &self,
        vote: &VoteToRecord,
        next: &NewAssignment,
    ) -> StoreResult<(VoteOutcome, Option<AssignmentId>)> {
        let op = WriteOp::VoteThenAssign(Box::new((vote.clone(), next.clone())));
        match self.write(op).await? {
            WriteDone::VotedThenAssigned(outcome, assigned) => Ok((outcome, assigned)),
            _ => unreachable!("a vote with its next comparison answers with both"),
        }
    }
}

/// Candidate prompts from rows of (prompt id, times assigned, (response id, model id)) in prompt
/// order.
fn gather_candidates(rows: impl Iterator<Item = (i64, i64, (i64, i64))>) -> Vec<CandidatePrompt> {
    let mut candidates: Vec<CandidatePrompt> = Vec::new();
    for (prompt_id, times_assigned, response) in rows {
        match candidates.last_mut() {
            Some(last) if last.prompt_id == prompt_id => last.responses.push(response),
            _ => candidates.push(CandidatePrompt {
                prompt_id,
                times_assigned,
                responses: vec![response],
            }),
        }
    }
    candidates
}

// The rater path's writes, shared by the `Any` code below and the native SQLite writer
// (`native_writer.rs`), so both run the same SQL.

/// The text of [`INSERT_ASSIGNMENT`] without its `RETURNING`.
macro_rules! insert_assignment_row_sql {
    () => {
        "INSERT INTO assignments (public_id, rater_id, prompt_id, left_response_id, right_response_id, \
         model_low, model_high, kind, issued_ms, state, expires_ms) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'issued', $11 \
         WHERE NOT EXISTS (SELECT 1 FROM assignments WHERE rater_id = $2 AND state = 'issued' AND state <> 'done') \
         AND (SELECT assigned FROM raters WHERE id = $2) < $10 \
         ON CONFLICT DO NOTHING"
    };
}
/// The text of [`INSERT_ASSIGNMENT`], for the statements that include it.
macro_rules! insert_assignment_sql {
    () => {
        concat!(insert_assignment_row_sql!(), " RETURNING id")
    };
}
/// The SQLite writer's [`INSERT_ASSIGNMENT`]: the row's id is the connection's last insert rowid
/// when one row changed. SQLite gathers a statement's `RETURNING` rows in a temporary b-tree, opened
/// and closed at every statement: a few percent of the rater path's CPU.
pub(super) const INSERT_ASSIGNMENT_ROW: &str = insert_assignment_row_sql!();
/// One unvoted comparison at a time (found through the partial index `assignments_open`, which the
/// written-out `state <> 'done'` lets SQLite use) and at most `$10` in the session (the rater's
/// `assigned`, which a trigger keeps), checked where the row is written: parallel requests of one
/// rater get the same answer as serial ones. The unique index `assignments_rater_prompt` (a rater
/// sees a prompt once) turns a concurrent second assignment of the same prompt into no row, without
/// an error that would end the transaction.
///
/// Public for the test that checks its plan.
pub const INSERT_ASSIGNMENT: &str = insert_assignment_sql!();
/// PostgreSQL: [`INSERT_ASSIGNMENT`], the prompt's count (`COUNT_PROMPT_ASSIGNED`) and, for a
/// regular comparison, the pair's (`COUNT_PAIR_SHOWN`, study `$12`, shard `$13`) as one statement:
/// one round trip instead of three. The counts move only if the row was written. Run after the
/// rater's row is locked, so its checks see the rater's other assignments as committed.
const INSERT_ASSIGNMENT_COUNTED: &str = concat!(
    "WITH ins AS (",
    insert_assignment_sql!(),
    "), counted AS (UPDATE prompts SET times_assigned = times_assigned + 1 \
     WHERE id = $3 AND EXISTS (SELECT 1 FROM ins)), \
     paired AS (INSERT INTO pair_counts (study_id, model_low, model_high, shard, shown) \
     SELECT $12, $6, $7, $13, 1 FROM ins WHERE $8 = 'regular' \
     ON CONFLICT (study_id, model_low, model_high, shard) DO UPDATE SET shown = pair_counts.shown + 1) \
     SELECT id FROM ins"
);
pub(super) const COUNT_PROMPT_ASSIGNED: &str =
    "UPDATE prompts SET times_assigned = times_assigned + 1 WHERE id = $1";
/// A pair's shown count is spread over shards (`$4`), summed when read: on PostgreSQL concurrent
/// raters' transactions would otherwise queue behind one row's lock per pair, each holding it through
/// its commit. SQLite's one writer always writes shard 0.
/// `$5` is +1 for a new comparison, −1 for one that expired unvoted: a shard may go below zero,
/// the sum is exact.
pub(super) const COUNT_PAIR_SHOWN: &str =
    "INSERT INTO pair_counts (study_id, model_low, model_high, shard, shown) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (study_id, model_low, model_high, shard) DO UPDATE SET shown = pair_counts.shown + $5";
/// The assignment a vote is for, its vote if any, and what a quality check expects.
pub(super) const VOTE_TARGET: &str =
    "SELECT a.id, a.issued_ms, a.kind, v.id AS vote_id, v.choice, p.check_model_id, \
     lr.model_id AS left_model, rr.model_id AS right_model \
     FROM assignments a LEFT JOIN votes v ON v.assignment_id = a.id \
     JOIN prompts p ON p.id = a.prompt_id \
     JOIN responses lr ON lr.id = a.left_response_id JOIN responses rr ON rr.id = a.right_response_id \
     WHERE a.public_id = $1 AND a.rater_id = $2";
/// The SQLite writer's [`VOTE_TARGET`] in two: the assignment and its vote, by position (`id,
/// issued_ms, kind, vote_id, choice, prompt_id, left_response_id, right_response_id`), and, for a
/// quality check only, [`CHECK_TARGET`]. A regular comparison's vote reads no prompt or response row.
pub(super) const VOTE_TARGET_NARROW: &str =
    "SELECT a.id, a.issued_ms, a.kind, v.id, v.choice, a.prompt_id, a.left_response_id, a.right_response_id \
     FROM assignments a LEFT JOIN votes v ON v.assignment_id = a.id \
     WHERE a.public_id = $1 AND a.rater_id = $2";
/// What a quality check expects (`check_model_id`) and the models shown left and right, by prompt
/// `$1` and responses `$2` (left) and `$3` (right).
pub(super) const CHECK_TARGET: &str =
    "SELECT p.check_model_id, lr.model_id, rr.model_id FROM prompts p, responses lr, responses rr \
     WHERE p.id = $1 AND lr.id = $2 AND rr.id = $3";
/// The text of [`INSERT_VOTE`], for the statements that include it.
macro_rules! insert_vote_row_sql {
    () => {
        "INSERT INTO votes (assignment_id, choice, source_guess, source_confidence, rationale, time_on_page_ms, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    };
}
macro_rules! insert_vote_sql {
    () => {
        concat!(insert_vote_row_sql!(), " RETURNING id")
    };
}
/// The SQLite writer's [`INSERT_VOTE`], without `RETURNING` (see [`INSERT_ASSIGNMENT_ROW`]).
pub(super) const INSERT_VOTE_ROW: &str = insert_vote_row_sql!();
pub(super) const INSERT_VOTE: &str = insert_vote_sql!();
/// PostgreSQL: [`INSERT_VOTE`] and the assignment's new state (`$8`, as `MARK_VOTED`) as one
/// statement.
const INSERT_VOTE_MARKED: &str = concat!(
    "WITH v AS (",
    insert_vote_sql!(),
    "), marked AS (UPDATE assignments SET state = $8 WHERE id = $1) SELECT id FROM v"
);
pub(super) const MARK_VOTED: &str = "UPDATE assignments SET state = $1 WHERE id = $2";
/// What a vote on an assignment already voted on is told when its choice differs.
pub(super) fn vote_cannot_change(choice: &str) -> StoreError {
    StoreError::Conflict(format!(
        "this comparison was already answered with {choice:?}; a vote cannot be changed"
    ))
}
pub(super) fn vote_target_missing() -> StoreError {
    StoreError::NotFound(
        "this comparison is not open for you (it may have expired unvoted); \
         reload the page for your next one"
            .into(),
    )
}

/// Records an assignment before it is shown. Returns `None` if the rater was given this prompt
/// concurrently (the caller shows that one instead).
pub(super) async fn insert_assignment_in(
    conn: &mut AnyConnection,
    new: &NewAssignment,
) -> StoreResult<Option<AssignmentId>> {
    let public_id = AssignmentId::mint();
    let (low, high) = {
        let (a, b) = (new.left_response.1, new.right_response.1);
        (a.min(b), a.max(b))
    };
    // The rater's requests take turns here, so the checks below see each other's rows.
    lock_rater(conn, new.rater_id).await?;
    let postgres = is_postgres(conn);
    // One unvoted comparison at a time, at most `max_for_rater` (see `INSERT_ASSIGNMENT`).
    let kind = new.check.map_or("regular", CheckKind::as_str);
    let sql = if postgres {
        INSERT_ASSIGNMENT_COUNTED
    } else {
        INSERT_ASSIGNMENT
    };
    let mut query = sqlx::query(sql)
        .bind(public_id.as_str())
        .bind(new.rater_id)
        .bind(new.prompt_id)
        .bind(new.left_response.0)
        .bind(new.right_response.0)
        .bind(low)
        .bind(high)
        .bind(kind)
        .bind(now_ms())
        .bind(i64::from(new.max_for_rater))
        .bind(new.expires_ms);
    if postgres {
        query = query.bind(new.study_id).bind(pair_shard(new.pair_shards));
    }
    let inserted = query.fetch_optional(&mut *conn).await?;
    if inserted.is_none() {
        return Ok(None);
    }
    if postgres {
        return Ok(Some(public_id));
    }
    sqlx::query(COUNT_PROMPT_ASSIGNED)
        .bind(new.prompt_id)
        .execute(&mut *conn)
        .await?;
    if new.check.is_some() {
        return Ok(Some(public_id));
    }
    count_pair_shown(conn, new.study_id, (low, high), 1, new.pair_shards).await?;
    Ok(Some(public_id))
}

/// Adds `delta` to a pair's shown count, in one of its `shards` rows on PostgreSQL (see
/// `COUNT_PAIR_SHOWN`), in shard 0 on SQLite.
pub(super) async fn count_pair_shown(
    conn: &mut AnyConnection,
    study_id: i64,
    (low, high): (i64, i64),
    delta: i64,
    shards: u32,
) -> StoreResult<()> {
    let shard = if is_postgres(conn) {
        pair_shard(shards)
    } else {
        0
    };
    sqlx::query(COUNT_PAIR_SHOWN)
        .bind(study_id)
        .bind(low)
        .bind(high)
        .bind(shard)
        .bind(delta)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Most rows a pair's shown count is spread over.
pub const MAX_PAIR_SHARDS: u32 = 16;

/// How many shards a pair's count gets in a study where `known_pairs` pairs were shown: about 64
/// count rows in all, so that a study of a few models spreads its few pairs and one of many models,
/// whose pairs are spread already, does not multiply the rows every assignment reads.
pub fn pair_shards_for(known_pairs: usize) -> u32 {
    (64 / known_pairs.max(1)).clamp(1, MAX_PAIR_SHARDS as usize) as u32
}

/// One of a pair's `shards` count rows on PostgreSQL, at random.
fn pair_shard(shards: u32) -> i32 {
    use rand::Rng;
    rand::thread_rng().gen_range(0..shards.clamp(1, MAX_PAIR_SHARDS)) as i32
}

/// On PostgreSQL, locks the rater's row until the transaction ends, so that the rater's writes in
/// several requests (or server processes) take turns and each one's checks see the others' rows. On
/// SQLite every write already holds the one writer lock.
pub(super) async fn lock_rater(conn: &mut AnyConnection, rater_id: i64) -> StoreResult<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT id FROM raters WHERE id = $1 FOR UPDATE")
            .bind(rater_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

/// Records a vote for an assignment issued to this rater. A repeat of the same choice is
/// harmless; a different choice for an assignment already voted on is a conflict.
pub(super) async fn record_vote_in(
    conn: &mut AnyConnection,
    vote: &VoteToRecord,
) -> StoreResult<VoteOutcome> {
    if is_postgres(conn) {
        // Two racing votes on one assignment take turns: the second then reads the first's vote
        // and gets the answer a serial repeat gets (recorded already, or a conflict), not a unique-key
        // error. (SQLite's writer lock serializes them already.)
        sqlx::query("SELECT id FROM assignments WHERE public_id = $1 AND rater_id = $2 FOR UPDATE")
            .bind(vote.assignment.as_str())
            .bind(vote.rater_id)
            .execute(&mut *conn)
            .await?;
    }
    // One read: the assignment, its vote if any, and what a quality check expects.
    let row = sqlx::query(VOTE_TARGET)
        .bind(vote.assignment.as_str())
        .bind(vote.rater_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(vote_target_missing)?;
    let assignment_id: i64 = row.try_get("id")?;
    let issued_ms: i64 = row.try_get("issued_ms")?;
    let kind: String = row.try_get("kind")?;
    if let Some(vote_id) = row.try_get::<Option<i64>, _>("vote_id")? {
        let choice: String = row.try_get("choice")?;
        return if db_choice(&choice)? == vote.choice {
            Ok(VoteOutcome::AlreadyRecorded { vote_id })
        } else {
            Err(vote_cannot_change(&choice))
        };
    }
    let now = now_ms();
    let state = if vote.reveal { "voted" } else { "done" };
    let postgres = is_postgres(conn);
    let insert = sqlx::query(if postgres {
        INSERT_VOTE_MARKED
    } else {
        INSERT_VOTE
    })
    .bind(assignment_id)
    .bind(vote.choice.as_str())
    .bind(vote.source_guess.clone())
    .bind(vote.source_confidence)
    .bind(vote.rationale.clone())
    .bind(now - issued_ms)
    .bind(now);
    let insert = if postgres { insert.bind(state) } else { insert };
    let vote_id: i64 = insert.fetch_one(&mut *conn).await?.try_get("id")?;
    if !postgres {
        sqlx::query(MARK_VOTED)
            .bind(state)
            .bind(assignment_id)
            .execute(&mut *conn)
            .await?;
    }
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

/// A response of a study's regular prompt, for scoring by a reward model (active sampling).
#[derive(Debug, Clone)]
pub struct ResponseToScore {
    pub response_id: i64,
    pub conversation: Vec<Message>,
    pub content: String,
}

impl Store {
    /// Every response of the study's regular prompts (quality checks left out), in prompt order.
    pub async fn responses_to_score(&self, study_id: i64) -> StoreResult<Vec<ResponseToScore>> {
        let rows = sqlx::query(
            "SELECT r.id, p.conversation, r.content FROM responses r JOIN prompts p ON p.id = r.prompt_id \
             WHERE p.study_id = $1 AND p.check_kind IS NULL ORDER BY p.id, r.id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let conversation: String = row.try_get("conversation")?;
                Ok(ResponseToScore {
                    response_id: row.try_get("id")?,
                    conversation: serde_json::from_str(&conversation)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    content: row.try_get("content")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// Decided votes on each pair of responses of the study's regular comparisons, keyed by (lower
    /// response id, higher): (votes for the lower, votes for the higher). Excluded raters are left out.
    pub async fn response_pair_votes(
        &self,
        study_id: i64,
    ) -> StoreResult<HashMap<(i64, i64), (u32, u32)>> {
        let rows = sqlx::query(
            "SELECT a.left_response_id, a.right_response_id, v.choice FROM assignments a \
             JOIN votes v ON v.assignment_id = a.id JOIN prompts p ON p.id = a.prompt_id \
             JOIN raters r ON r.id = a.rater_id \
             WHERE p.study_id = $1 AND a.kind = 'regular' AND r.status <> 'excluded' \
             AND v.choice IN ('left', 'right')",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        let mut tallies: HashMap<(i64, i64), (u32, u32)> = HashMap::new();
        for row in &rows {
            let (left, right): (i64, i64) = (
                row.try_get("left_response_id")?,
                row.try_get("right_response_id")?,
            );
            let chosen = match row.try_get::<String, _>("choice")?.as_str() {
                "left" => left,
                _ => right,
            };
            let tally = tallies
                .entry((left.min(right), left.max(right)))
                .or_default();
            if chosen == left.min(right) {
                tally.0 += 1;
            } else {
                tally.1 += 1;
            }
        }
        Ok(tallies)
    }
}
