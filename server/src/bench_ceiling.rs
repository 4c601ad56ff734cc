//! The ceiling `moat bench votes` is compared with: the same durable writes a rater cycle makes (its
//! vote and its next assignment, in one transaction acknowledged after its group commit) straight
//! through the store,
//! with no HTTP, no session lookups and no assignment policy. Same SQLite settings (WAL,
//! `synchronous=FULL`), same study file, same number of concurrent raters, in the bench's process.
//! What the full path reaches divided by this is the share of the ceiling that the rater path keeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_exports::Choice;

use crate::domain::StudySlug;
use crate::store::{JoinLimits, NewAssignment, Store, VoteOutcome, VoteToRecord};

#[derive(Debug, serde::Serialize)]
pub struct CeilingReport {
    pub raters: usize,
    pub seconds: f64,
    /// Votes committed and acknowledged, each with the next assignment where one was left.
    pub cycles: usize,
    pub cycles_per_second: f64,
    pub errors: usize,
}

impl std::fmt::Display for CeilingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ceiling (the same writes through the store's group commit, no HTTP or assignment logic): \
             {:.0} cycles/s ({} cycles in {:.1} s, {} errors)",
            self.cycles_per_second, self.cycles, self.seconds, self.errors
        )
    }
}

/// Writes the study file into a fresh SQLite database in `dir`, joins `raters` raters, then lets each
/// of them vote and take its next unseen prompt, one commit per cycle, for `seconds`, `raters` at
/// a time.
pub async fn raw_group_commit(
    dir: &std::path::Path,
    study_file: &str,
    raters: usize,
    seconds: u64,
) -> anyhow::Result<CeilingReport> {
    let url = format!("sqlite://{}", dir.join("ceiling.sqlite").display());
    let store = Store::connect(&url).await?;
    let slug = StudySlug::parse("ceiling").map_err(anyhow::Error::msg)?;
    crate::import::import_jsonl(&store, &slug, study_file.as_bytes(), &[]).await?;
    let study = store.study("ceiling").await?;
    let mut plans = Vec::with_capacity(raters);
    for _ in 0..raters {
        let token = store
            .join_rater(study.id, None, &JoinLimits::default())
            .await?;
        let rater = store
            .rater_by_token(study.id, &token)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a rater just joined is not found"))?;
        // Every prompt, read before the clock starts: the ceiling times writes only.
        let prompts = store
            .candidate_prompts(study.id, rater.id, i64::MAX, true)
            .await?;
        plans.push((rater.id, prompts));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(raters);
    for (rater_id, prompts) in plans {
        let (store, stop, study_id) = (store.clone(), stop.clone(), study.id);
        tasks.push(tokio::spawn(async move {
            let (mut cycles, mut errors) = (0usize, 0usize);
            let assignments: Vec<NewAssignment> = prompts
                .iter()
                .filter_map(|prompt| match prompt.responses[..] {
                    [left, right, ..] => Some(NewAssignment {
                        rater_id,
                        study_id,
                        prompt_id: prompt.prompt_id,
                        left_response: left,
                        right_response: right,
                        check: None,
                        max_for_rater: u32::MAX,
                        expires_ms: None,
                        pair_shards: 1,
                    }),
                    _ => None,
                })
                .collect();
            // A comparison is issued alone when none is open (a rater's first page); then each
            // cycle commits the vote on the open one together with the next one.
            let mut open: Option<crate::domain::AssignmentId> = None;
            for new in assignments.iter().map(Some).chain([None]) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Some(assignment) = open.take() else {
                    if let Some(new) = new {
                        match store.insert_assignment(new).await {
                            Ok(Some(public_id)) => open = Some(public_id),
                            _ => errors += 1,
                        }
                    }
                    continue;
                };
                let vote = VoteToRecord {
                    assignment,
                    rater_id,
                    choice: Choice::Left,
                    source_guess: None,
                    source_confidence: None,
                    rationale: None,
                    reveal: false,
                };
                let outcome =
                    match new {
                        Some(new) => store.record_vote_then_assign(&vote, new).await.map(
                            |(outcome, next)| {
                                open = next;
                                outcome
                            },
                        ),
                        None => store.record_vote(&vote).await,
                    };
                match outcome {
                    Ok(VoteOutcome::Recorded { .. }) => cycles += 1,
                    _ => errors += 1,
                }
            }
            (cycles, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut cycles, mut errors) = (0, 0);
    for task in tasks {
        let (c, e) = task.await?;
        cycles += c;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    store.close().await;
    Ok(CeilingReport {
        raters,
        seconds: elapsed,
        cycles,
        cycles_per_second: cycles as f64 / elapsed,
        errors,
    })
}
