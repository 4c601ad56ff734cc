//! The assigner's view of each static study, held in memory on a SQLite file: the regular prompts
//! with their responses and showing counts in count order, the pairs' showing counts, and each active
//! rater's prompts. Choosing a rater's next comparison then reads one row (the study's
//! `assign_epoch`) instead of the least-shown unseen prompts with their responses and the pair counts.
//!
//! The database stays the truth; this is a copy of it, kept equal to what a rebuild from the file
//! gives:
//! - a study's copy is read in one read transaction, with the highest assignment id then committed
//!   (`through`);
//! - the group-commit writer tells the copy of each assignment it committed
//!   ([`AssignerMemory::note_assigned`]); one with an id at or below `through` is in the copy already;
//! - every other change of what the copy holds (prompts or responses added or removed, a prompt
//!   flagged or made a check, a comparison expired, an assignment imported, a count corrected) bumps
//!   the study's `assign_epoch` by a trigger (migration `20261202000001`), whoever made it: the next
//!   choice finds the epoch changed and reads the study again.
//!
//! A rater's prompts are read at the rater's first choice and kept while the study's copy lasts (at
//! most [`MAX_RATERS`] raters a study; then they are read again as needed). Only one server process
//! writes a SQLite file's rater path, so nothing else moves the counts between two epochs. PostgreSQL,
//! which several processes share, reads the database at every choice (`Store::candidate_prompts`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex as StdMutex;

use super::*;

/// Raters whose prompts a study's copy keeps; past it they are dropped and read again when they
/// next choose (memory stays bounded on a study with a stream of one-off raters).
pub const MAX_RATERS: usize = 50_000;

const STUDY_EPOCH: &str = "SELECT assign_epoch FROM studies WHERE id = $1";
/// The highest assignment id ever committed (AUTOINCREMENT's counter): `MAX(id)` would be lower
/// once the latest rows expired, and the writer's notes of those would then count again.
const LAST_ASSIGNMENT: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'assignments'), 0)";
const REGULAR_PROMPTS: &str = "SELECT id, times_assigned, identity_flagged FROM prompts \
     WHERE study_id = $1 AND check_kind IS NULL";
const REGULAR_RESPONSES: &str = "SELECT r.prompt_id, r.id, r.model_id FROM responses r \
     JOIN prompts p ON p.id = r.prompt_id WHERE p.study_id = $1 AND p.check_kind IS NULL \
     ORDER BY r.prompt_id, r.id";
const PAIR_COUNTS: &str = "SELECT model_low, model_high, CAST(SUM(shown) AS BIGINT) \
     FROM pair_counts WHERE study_id = $1 GROUP BY model_low, model_high";
const RATER_PROMPTS: &str = "SELECT prompt_id FROM assignments WHERE rater_id = $1";

/// The copies of the studies whose raters chose on this file, and the writer's latest notes.
#[derive(Default, Debug)]
pub(super) struct AssignerMemory {
    inner: StdMutex<Inner>,
    /// Held while a study's copy is read, so that raters who find it out of date together wait for
    /// one reading instead of each making their own.
    reading: StdMutex<()>,
}

#[derive(Default, Debug)]
struct Inner {
    studies: HashMap<i64, Arc<StdMutex<StudyCopy>>>,
    /// The latest assignments the writer noted, oldest first: a copy read while they committed is
    /// brought up to date from here when it is installed.
    log: std::collections::VecDeque<Note>,
    /// The highest id of a note dropped from `log`.
    dropped_through: i64,
}

/// Notes the log keeps: many more than commit while a study or a rater is read.
const LOG_NOTES: usize = 16_384;

/// An assignment the writer committed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Note {
    pub study_id: i64,
    pub rater_id: i64,
    pub prompt_id: i64,
    /// A regular comparison's models, lower id first (a quality check counts for no pair).
    pub pair: Option<(i64, i64)>,
    /// The assignment's row id.
    pub row_id: i64,
}

/// One study's copy (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StudyCopy {
    epoch: i64,
    /// Assignments with an id up to this one are counted.
    through: i64,
    prompts: HashMap<i64, PromptCopy>,
    /// (times assigned, prompt id) of every regular prompt: the assigner's order.
    order: BTreeSet<(i64, i64)>,
    pairs: HashMap<(i64, i64), i64>,
    /// The prompts of each rater read so far.
    raters: HashMap<i64, HashSet<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PromptCopy {
    times_assigned: i64,
    flagged: bool,
    /// (response id, model id) in id order.
    responses: Vec<(i64, i64)>,
}

/// What the assigner chooses from: the least-shown prompts the rater has not seen and the pairs'
/// showing counts.
pub type AssignmentChoices = (Vec<CandidatePrompt>, HashMap<(i64, i64), i64>);

/// A study's copy as a test compares it with a rebuild: the prompts' counts and the pairs' counts.
pub type AssignerSnapshot = (Vec<(i64, i64)>, Vec<((i64, i64), i64)>);

impl AssignerMemory {
    fn study(&self, study_id: i64) -> Option<Arc<StdMutex<StudyCopy>>> {
        lock(&self.inner).studies.get(&study_id).cloned()
    }

    /// Assignments the writer committed, told before their writers are answered.
    pub(super) fn note_assigned(&self, notes: &[Note]) {
        let mut inner = lock(&self.inner);
        for note in notes {
            if inner.log.len() >= LOG_NOTES {
                if let Some(dropped) = inner.log.pop_front() {
                    inner.dropped_through = inner.dropped_through.max(dropped.row_id);
                }
            }
            inner.log.push_back(*note);
            if let Some(study) = inner.studies.get(&note.study_id) {
                lock(study).apply(note);
            }
        }
    }

    /// Installs a study's copy read through `copy.through`, with the notes committed since; `None`
    /// when some of those notes are no longer in the log (read again).
    fn install(&self, study_id: i64, mut copy: StudyCopy) -> Option<Arc<StdMutex<StudyCopy>>> {
        let mut inner = lock(&self.inner);
        if inner.dropped_through > copy.through {
            return None;
        }
        for note in inner.log.iter().filter(|note| note.study_id == study_id) {
            copy.apply(note);
        }
        let copy = Arc::new(StdMutex::new(copy));
        inner.studies.insert(study_id, copy.clone());
        Some(copy)
    }

    /// Adds a rater's prompts read through assignment `through`, with the rater's notes since, to
    /// the study's copy; false when some of those notes are no longer in the log (read again).
    fn add_rater(
        &self,
        study: &StdMutex<StudyCopy>,
        rater_id: i64,
        mut seen: HashSet<i64>,
        through: i64,
    ) -> bool {
        let inner = lock(&self.inner);
        if inner.dropped_through > through {
            return false;
        }
        seen.extend(
            inner
                .log
                .iter()
                .filter(|note| note.rater_id == rater_id && note.row_id > through)
                .map(|note| note.prompt_id),
        );
        let mut copy = lock(study);
        if copy.raters.len() >= MAX_RATERS {
            copy.raters.clear();
        }
        copy.raters.insert(rater_id, seen);
        true
    }
}

/// A read of a store that has a native file (the caller checked).
fn native<T>(read: Option<StoreResult<T>>) -> StoreResult<T> {
    read.expect("a store with a native file")
}

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StudyCopy {
    /// Counts a committed assignment the copy does not hold yet.
    fn apply(&mut self, note: &Note) {
        if note.row_id <= self.through {
            return;
        }
        if let Some(seen) = self.raters.get_mut(&note.rater_id) {
            seen.insert(note.prompt_id);
        }
        let Some(prompt) = self.prompts.get_mut(&note.prompt_id) else {
            return; // a quality check's prompt
        };
        let before = prompt.times_assigned;
        prompt.times_assigned += 1;
        self.order.remove(&(before, note.prompt_id));
        self.order.insert((before + 1, note.prompt_id));
        if let Some(pair) = note.pair {
            *self.pairs.entry(pair).or_insert(0) += 1;
        }
    }

    /// The study's copy as the file holds it now, in one read transaction.
    fn read(conn: &rusqlite::Connection, study_id: i64) -> StoreResult<StudyCopy> {
        let tx = conn.unchecked_transaction()?;
        let one = |sql: &str, values: &[&dyn rusqlite::ToSql]| -> StoreResult<i64> {
            let mut stmt = tx.prepare_cached(sql)?;
            native_reader::bind(&mut stmt, values)?;
            let mut rows = stmt.raw_query();
            match rows.next()? {
                Some(row) => Ok(row.get(0)?),
                None => Err(StoreError::NotFound(format!("no study with id {study_id}"))),
            }
        };
        let epoch = one(STUDY_EPOCH, &[&study_id])?;
        let through = one(LAST_ASSIGNMENT, &[])?;
        let mut prompts = HashMap::new();
        let mut order = BTreeSet::new();
        {
            let mut stmt = tx.prepare_cached(REGULAR_PROMPTS)?;
            native_reader::bind(&mut stmt, &[&study_id])?;
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                let (id, times_assigned): (i64, i64) = (row.get(0)?, row.get(1)?);
                let flagged: i64 = row.get(2)?;
                order.insert((times_assigned, id));
                prompts.insert(
                    id,
                    PromptCopy {
                        times_assigned,
                        flagged: flagged != 0,
                        responses: Vec::new(),
                    },
                );
            }
        }
        {
            let mut stmt = tx.prepare_cached(REGULAR_RESPONSES)?;
            native_reader::bind(&mut stmt, &[&study_id])?;
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                let prompt_id: i64 = row.get(0)?;
                if let Some(prompt) = prompts.get_mut(&prompt_id) {
                    prompt.responses.push((row.get(1)?, row.get(2)?));
                }
            }
        }
        let mut pairs = HashMap::new();
        {
            let mut stmt = tx.prepare_cached(PAIR_COUNTS)?;
            native_reader::bind(&mut stmt, &[&study_id])?;
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                pairs.insert((row.get(0)?, row.get(1)?), row.get(2)?);
            }
        }
        tx.commit()?;
        Ok(StudyCopy {
            epoch,
            through,
            prompts,
            order,
            pairs,
            raters: HashMap::new(),
        })
    }

    /// What [`NEXT_REGULAR_PROMPTS_SQL`] and the pair counts read from the file, from the copy.
    fn choices(&self, seen: &HashSet<i64>, limit: usize, show_flagged: bool) -> AssignmentChoices {
        let candidates = self
            .order
            .iter()
            .filter(|(_, id)| !seen.contains(id))
            .filter_map(|(_, id)| Some((id, self.prompts.get(id)?)))
            .filter(|(_, prompt)| show_flagged || !prompt.flagged)
            .take(limit)
            .filter(|(_, prompt)| !prompt.responses.is_empty())
            .map(|(id, prompt)| CandidatePrompt {
                prompt_id: *id,
                times_assigned: prompt.times_assigned,
                responses: prompt.responses.clone(),
            })
            .collect();
        (candidates, self.pairs.clone())
    }
}

impl Store {
    /// The least-assigned regular prompts (up to `limit`) this rater has not been given, with their
    /// responses, and the study's pair counts: [`Store::candidate_prompts`] and [`Store::pair_counts`]
    /// in one, from memory on a SQLite file (see `assigner_memory.rs`), from the database elsewhere.
    pub async fn assignment_choices(
        &self,
        study_id: i64,
        rater_id: i64,
        limit: i64,
        show_flagged: bool,
    ) -> StoreResult<AssignmentChoices> {
        if let Some(file) = &self.native {
            return self.choices_from_memory(
                &file.assigner,
                study_id,
                rater_id,
                limit,
                show_flagged,
            );
        }
        let candidates = self
            .candidate_prompts(study_id, rater_id, limit, show_flagged)
            .await?;
        Ok((candidates, self.pair_counts(study_id).await?))
    }

    fn choices_from_memory(
        &self,
        memory: &AssignerMemory,
        study_id: i64,
        rater_id: i64,
        limit: i64,
        show_flagged: bool,
    ) -> StoreResult<AssignmentChoices> {
        let epoch =
            native(self.native_row(STUDY_EPOCH, &[&study_id], |row| Ok(row.get::<_, i64>(0)?)))?
                .ok_or_else(|| StoreError::NotFound(format!("no study with id {study_id}")))?;
        let current = |memory: &AssignerMemory| {
            memory
                .study(study_id)
                .filter(|copy| lock(copy).epoch == epoch)
        };
        let study = match current(memory) {
            Some(copy) => copy,
            None => {
                let _reading = lock(&memory.reading);
                loop {
                    // Another rater may have read it meanwhile.
                    if let Some(copy) = current(memory) {
                        break copy;
                    }
                    let copy = native(self.read_native(|conn| StudyCopy::read(conn, study_id)))?;
                    if let Some(copy) = memory.install(study_id, copy) {
                        break copy;
                    }
                }
            }
        };
        loop {
            {
                let copy = lock(&study);
                if let Some(seen) = copy.raters.get(&rater_id) {
                    return Ok(copy.choices(seen, limit.max(0) as usize, show_flagged));
                }
            }
            let (seen, through) = native(self.read_native(|conn| {
                let tx = conn.unchecked_transaction()?;
                let through: i64 = tx
                    .prepare_cached(LAST_ASSIGNMENT)?
                    .query_row([], |row| row.get(0))?;
                let mut seen = HashSet::new();
                {
                    let mut stmt = tx.prepare_cached(RATER_PROMPTS)?;
                    native_reader::bind(&mut stmt, &[&rater_id])?;
                    let mut rows = stmt.raw_query();
                    while let Some(row) = rows.next()? {
                        seen.insert(row.get::<_, i64>(0)?);
                    }
                }
                tx.commit()?;
                Ok((seen, through))
            }))?;
            memory.add_rater(&study, rater_id, seen, through);
        }
    }

    /// The assigner's memory of a study (`None` when it holds none) and the same read from the file
    /// now: equal whenever the writer is idle. For the tests that check that memory follows the
    /// database and that a restart rebuilds it.
    pub fn assigner_snapshots(
        &self,
        study_id: i64,
    ) -> StoreResult<(Option<AssignerSnapshot>, AssignerSnapshot)> {
        let Some(file) = &self.native else {
            return Err(StoreError::Invalid(
                "only a SQLite file keeps the assigner's memory".into(),
            ));
        };
        let snapshot = |copy: &StudyCopy| -> AssignerSnapshot {
            let mut pairs: Vec<_> = copy
                .pairs
                .iter()
                .filter(|(_, shown)| **shown != 0)
                .map(|(pair, shown)| (*pair, *shown))
                .collect();
            pairs.sort_unstable();
            (copy.order.iter().copied().collect(), pairs)
        };
        let memory = file
            .assigner
            .study(study_id)
            .map(|copy| snapshot(&lock(&copy)));
        let read = native(self.read_native(|conn| StudyCopy::read(conn, study_id)))?;
        Ok((memory, snapshot(&read)))
    }
}
