//! Group commit on SQLite: the hot writes (assignments, votes, arena battles as they start, complete
//! or end void) queue to one writer that commits whatever has queued as one transaction and answers
//! each caller after the commit. On a SQLite file the writer is a thread with its own rusqlite
//! connection (`native_writer.rs`); on an in-memory database, which only the pool's connections can
//! see, it is a task on the pool.

use super::*;

/// A write that goes through the group-commit writer.
pub(super) enum WriteOp {
    Assign(NewAssignment),
    Vote(VoteToRecord),
    /// A vote and, if it is recorded (not a repeat, not refused), the rater's next comparison, in the
    /// same transaction: one commit per rater cycle instead of two.
    VoteThenAssign(Box<(VoteToRecord, NewAssignment)>),
    /// An arena battle's row as it starts.
    Battle(battle_rows::NewBattle),
    /// A finished battle's rows (prompt, responses, assignment); all or nothing within the group.
    CompleteBattle(Box<battle_rows::BattleCompletion>),
    /// A battle that ends void.
    VoidBattle(battle_rows::BattleVoid),
}

pub(super) enum WriteDone {
    Assigned(Option<AssignmentId>),
    Voted(VoteOutcome),
    VotedThenAssigned(VoteOutcome, Option<AssignmentId>),
    BattleRecorded,
    BattleCompleted(AssignmentId),
    BattleVoided,
}

pub(super) type Reply = tokio::sync::oneshot::Sender<StoreResult<WriteDone>>;

/// On SQLite, the hot writes (assignments, votes, battles) are queued to one task that commits
/// whatever has queued up as one transaction: one fsync for many writes, and no lock hand-offs
/// between requests. Each caller is answered only after that transaction committed. A write that is refused (not
/// found, conflict) is detected by reads before it writes anything, so it never spoils the batch; an
/// unexpected database error fails every write of the batch, none of which is then acknowledged.
#[derive(Clone)]
pub(super) struct GroupWriter {
    queue: tokio::sync::mpsc::Sender<(WriteOp, Reply)>,
}

/// Most writes one transaction takes.
pub(super) const GROUP_COMMIT_MAX: usize = 512;

/// Answers every write of a group: each its own result once the group committed, or all of them
/// the group's failure (none of them is then acknowledged). Empties `batch`.
pub(super) fn answer(
    batch: &mut Vec<(WriteOp, Reply)>,
    outcome: Result<Vec<StoreResult<WriteDone>>, StoreError>,
) {
    match outcome {
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

/// One write's statements on `conn`, inside a transaction the caller commits: the group writer's on
/// an in-memory database, a transaction of its own on PostgreSQL (see [`Store::write`]).
pub(super) async fn apply_in(conn: &mut AnyConnection, op: &WriteOp) -> StoreResult<WriteDone> {
    match op {
        WriteOp::Assign(new) => insert_assignment_in(conn, new)
            .await
            .map(WriteDone::Assigned),
        WriteOp::Vote(vote) => record_vote_in(conn, vote).await.map(WriteDone::Voted),
        WriteOp::VoteThenAssign(pair) => {
            let (vote, next) = &**pair;
            let outcome = record_vote_in(conn, vote).await?;
            let assigned = match outcome {
                VoteOutcome::Recorded { .. } => insert_assignment_in(conn, next).await?,
                VoteOutcome::AlreadyRecorded { .. } => None,
            };
            Ok(WriteDone::VotedThenAssigned(outcome, assigned))
        }
        WriteOp::Battle(battle) => battle_rows::insert_battle_in(conn, battle)
            .await
            .map(|()| WriteDone::BattleRecorded),
        WriteOp::VoidBattle(void) => battle_rows::void_battle_in(conn, void)
            .await
            .map(|()| WriteDone::BattleVoided),
        WriteOp::CompleteBattle(completion) => battle_rows::complete_battle_in(conn, completion)
            .await
            .map(WriteDone::BattleCompleted),
    }
}

impl Store {
    /// A hot write, acknowledged once committed: through the group-commit writer on SQLite, in a
    /// transaction of its own on PostgreSQL (where concurrent transactions commit together anyway).
    pub(super) async fn write(&self, op: WriteOp) -> StoreResult<WriteDone> {
        match &self.group_writer {
            Some(writer) => writer.submit(op).await,
            None => {
                let mut tx = self.begin_write().await?;
                let done = apply_in(&mut tx.tx, &op).await?;
                tx.commit().await?;
                Ok(done)
            }
        }
    }
}

impl GroupWriter {
    /// The writer of a SQLite file: a thread of its own (see `native_writer.rs`).
    pub(super) fn start_native(
        path: std::path::PathBuf,
        write_lock: Arc<Mutex<()>>,
        file: Arc<super::native_reader::NativeFile>,
    ) -> std::io::Result<GroupWriter> {
        let (queue, receiver) = tokio::sync::mpsc::channel::<(WriteOp, Reply)>(4096);
        std::thread::Builder::new()
            .name("moat-sqlite-writer".into())
            .spawn(move || super::native_writer::run(path, write_lock, receiver, file))?;
        Ok(GroupWriter { queue })
    }

    /// The writer of an in-memory database: a task that writes through the pool.
    pub(super) fn start(pool: AnyPool, write_lock: Arc<Mutex<()>>) -> GroupWriter {
        let (queue, mut receiver) = tokio::sync::mpsc::channel::<(WriteOp, Reply)>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
            while receiver.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
                let _guard = write_lock.lock().await;
                let outcome = Self::commit_batch(&pool, &batch).await;
                answer(&mut batch, outcome);
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
            if let WriteOp::CompleteBattle(_) = op {
                // Several statements, the last of which may find the battle voided: under a
                // savepoint, so that a refusal or a failure leaves the rest of the group whole.
                sqlx::query("SAVEPOINT battle").execute(&mut *tx).await?;
                let result = apply_in(&mut tx, op).await;
                if result.is_ok() {
                    sqlx::query("RELEASE battle").execute(&mut *tx).await?;
                } else {
                    sqlx::query("ROLLBACK TO battle").execute(&mut *tx).await?;
                    sqlx::query("RELEASE battle").execute(&mut *tx).await?;
                }
                results.push(result);
                continue;
            }
            match apply_in(&mut tx, op).await {
                Err(StoreError::Database(error)) => return Err(StoreError::Database(error)),
                other => results.push(other),
            }
        }
        tx.commit().await?;
        Ok(results)
    }

    pub(super) async fn submit(&self, op: WriteOp) -> StoreResult<WriteDone> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let closed = || StoreError::Database(sqlx::Error::PoolClosed);
        self.queue.send((op, reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}
