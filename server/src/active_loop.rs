//! Active sampling in a running study (the study setting `active_sampling`): a reward model trained
//! on the study's decided votes in the background, retrained as votes arrive, whose rewards of the
//! study's responses the assigner reads to put first the pair it is least sure about
//! (`uncertainty`) or whose votes so far contradict it most (`disagreement`, with the votes as of
//! the last training).
//!
//! - Training uses the hashed backbone (`moat_trainer::hashed`: no weights to download, seconds on a
//!   CPU) on the same pairs `moat train --study` reads: decided votes, quality checks and excluded
//!   raters left out. A fifth of the prompts is held out; the accuracy on them is what the study page
//!   shows, so a researcher sees whether the model has learnt anything before trusting its choices.
//! - A study is retrained after [`FIRST_TRAINING_VOTES`] votes, then whenever the votes since the last
//!   training reach a fifth of those it used (at least [`RETRAIN_EVERY`]) and [`RETRAIN_INTERVAL`]
//!   has passed; one training per study at a time, on the blocking pool. Until the first model exists
//!   the policy is uniform.
//! - State is per process and rebuilt from the database (the first votes a process sees after a
//!   restart retrain it); several processes each train their own model of the same votes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moat_app::wire::{AccuracyPoint, RewardModelStatus};
use moat_trainer::active::ActivePolicy;
use moat_trainer::hashed::HashedConfig;
use moat_trainer::train::{train_keeping_model, BackboneConfig, RunOptions, TrainConfig};

use crate::store::{Store, StudyRow};

/// Decided votes before the first model is trained.
pub const FIRST_TRAINING_VOTES: usize = moat_app::wire::ACTIVE_FIRST_TRAINING_VOTES;
/// Fewest new votes between two trainings.
pub const RETRAIN_EVERY: usize = 10;
/// Shortest time between two trainings of a study once it has a model: a busy study would
/// otherwise retrain back to back (a fifth more votes comes quickly at thousands of votes a second),
/// taking CPU from the raters for a model that barely changes.
pub const RETRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Most decided votes one training uses: the latest ones. A hashed model's held-out accuracy
/// levels off long before (trainer/BENCHMARKS.md), and training on every vote of a busy study took
/// minutes and half a gigabyte (`moat bench votes --active-sampling uncertainty`, BENCHMARKS.md).
pub const MAX_TRAINING_VOTES: usize = 4_000;
/// Trainings kept for the study page's accuracy curve.
const HISTORY_POINTS: usize = 100;

/// A trained model's rewards of the study's responses, by response id, and the decided votes on
/// each pair of responses when it was trained (for the disagreement policy).
#[derive(Debug)]
pub struct StudyRewards {
    pub rewards: HashMap<i64, f64>,
    pub votes: HashMap<(i64, i64), (u32, u32)>,
    pub status: RewardModelStatus,
}

#[derive(Default)]
struct StudyLoop {
    latest: Option<Arc<StudyRewards>>,
    training: bool,
    /// A training was started since this process began (it may have found too few votes).
    tried: bool,
    /// Votes recorded through this process since the last training started.
    votes_since: usize,
    /// Decided votes the last training used.
    trained_on: usize,
    /// When the last successful training started.
    trained_at: Option<std::time::Instant>,
}

/// Every study's active-sampling state in this process.
#[derive(Default)]
pub struct ActiveLoop {
    studies: Mutex<HashMap<i64, StudyLoop>>,
}

/// The study's policy (`uniform` for anything this server does not know).
pub fn policy_of(study: &StudyRow) -> ActivePolicy {
    ActivePolicy::parse(&study.settings.active_sampling).unwrap_or(ActivePolicy::Uniform)
}

impl ActiveLoop {
    /// The latest model's rewards for the study, if one has been trained.
    pub fn rewards(&self, study_id: i64) -> Option<Arc<StudyRewards>> {
        self.lock().get(&study_id).and_then(|s| s.latest.clone())
    }

    /// What the study page shows: the latest model, and whether a newer one is being trained.
    pub fn status(&self, study_id: i64) -> Option<RewardModelStatus> {
        let studies = self.lock();
        let state = studies.get(&study_id)?;
        let mut status = state.latest.as_ref()?.status.clone();
        status.retraining = state.training;
        Some(status)
    }

    /// Notes a recorded vote of a study with active sampling; starts a training when enough votes
    /// have come since the last one. Returns the training's task (tests wait for it).
    pub fn note_vote(
        self: &Arc<Self>,
        store: &Store,
        study: &StudyRow,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if policy_of(study) == ActivePolicy::Uniform {
            return None;
        }
        {
            let mut studies = self.lock();
            let state = studies.entry(study.id).or_default();
            state.votes_since += 1;
            let due = if !state.tried {
                // A restarted process does not know how many votes exist: the first vote it sees
                // starts a training (which counts them), and then the rule below applies.
                true
            } else {
                state.votes_since >= RETRAIN_EVERY.max(state.trained_on / 5)
                    && state
                        .trained_at
                        .is_none_or(|at| at.elapsed() >= RETRAIN_INTERVAL)
            };
            if !due || state.training {
                return None;
            }
            state.training = true;
            state.tried = true;
            state.votes_since = 0;
        }
        let (this, store, study) = (self.clone(), store.clone(), study.clone());
        let started = std::time::Instant::now();
        Some(tokio::spawn(async move {
            let outcome = this.train(&store, &study).await;
            let mut studies = this.lock();
            let state = studies.entry(study.id).or_default();
            state.training = false;
            match outcome {
                Ok(Some((mut rewards, used))) => {
                    state.trained_on = used;
                    state.trained_at = Some(started);
                    // The curve so far, and this training's point on it.
                    let mut history = state
                        .latest
                        .as_ref()
                        .map(|latest| latest.status.history.clone())
                        .unwrap_or_default();
                    let status = &rewards.status;
                    if let (Some(accuracy), Some(low), Some(high)) = (
                        status.eval_accuracy,
                        status.eval_accuracy_low,
                        status.eval_accuracy_high,
                    ) {
                        history.push(AccuracyPoint {
                            // The votes this model learnt from (a vote cast between the count
                            // and the read can make them one more than `used`).
                            votes: status.train_pairs + status.eval_pairs,
                            accuracy,
                            low,
                            high,
                        });
                    }
                    if history.len() > HISTORY_POINTS {
                        history.drain(..history.len() - HISTORY_POINTS);
                    }
                    rewards.status.history = history;
                    state.latest = Some(Arc::new(rewards));
                }
                // Too few decided votes yet: tried again after the next RETRAIN_EVERY.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(study = %study.slug, %error, "active sampling: training failed");
                }
            }
        }))
    }

    /// Trains on the study's decided votes and scores its responses; `None` while there are fewer
    /// than [`FIRST_TRAINING_VOTES`].
    async fn train(
        &self,
        store: &Store,
        study: &StudyRow,
    ) -> anyhow::Result<Option<(StudyRewards, usize)>> {
        use futures::TryStreamExt;
        let excluded = store.excluded_raters(study.id).await?;
        // How many decided votes there are (one count), then the latest MAX_TRAINING_VOTES of them,
        // read newest first so that the older records are never read at all.
        let decided = store.decided_vote_count(study.id).await?;
        let mut pairs = Vec::new();
        if decided >= FIRST_TRAINING_VOTES {
            let mut records = std::pin::pin!(store.vote_records_newest_first(study));
            while let Some(record) = records.try_next().await? {
                if excluded.contains(&record.rater) || record.is_quality_check() {
                    continue;
                }
                if let Some(pair) = crate::analysis::preference_pair(&record) {
                    pairs.push(pair);
                    if pairs.len() == MAX_TRAINING_VOTES {
                        break;
                    }
                }
            }
        }
        // Oldest first, as the training has always seen them.
        pairs.reverse();
        if decided < FIRST_TRAINING_VOTES {
            return Ok(None);
        }
        let responses = store.responses_to_score(study.id).await?;
        let votes = store.response_pair_votes(study.id).await?;
        // A vote committed between the count and the read is among the pairs: never report fewer
        // decided votes than were trained on.
        let used = decided.max(pairs.len());
        let seed = study.id as u64;
        let trained = tokio::task::spawn_blocking(move || -> anyhow::Result<StudyRewards> {
            let mut config = TrainConfig::new(BackboneConfig::Hashed(HashedConfig::default()));
            config.seed = seed;
            config.eval_fraction = 0.2;
            config.run = RunOptions {
                out: None,
                progress: false,
                ..Default::default()
            };
            let (report, model) = train_keeping_model(pairs, None, &config)?;
            let mut rewards = HashMap::with_capacity(responses.len());
            for response in &responses {
                let reward = model.score_response(&response.conversation, &response.content)?;
                rewards.insert(response.response_id, f64::from(reward));
            }
            let eval = report.eval.as_ref();
            Ok(StudyRewards {
                status: RewardModelStatus {
                    votes: used,
                    train_pairs: report.train_pairs,
                    eval_pairs: report.eval_pairs,
                    eval_accuracy: eval.map(|e| e.accuracy),
                    eval_accuracy_low: eval.map(|e| e.accuracy_low),
                    eval_accuracy_high: eval.map(|e| e.accuracy_high),
                    responses_scored: rewards.len(),
                    trained_ms: crate::domain::now_ms(),
                    retraining: false,
                    history: Vec::new(),
                },
                rewards,
                votes,
            })
        })
        .await??;
        tracing::info!(
            study = %study.slug,
            pairs = used,
            accuracy = ?trained.status.eval_accuracy,
            "active sampling: reward model retrained"
        );
        Ok(Some((trained, used)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, StudyLoop>> {
        self.studies.lock().unwrap_or_else(|e| e.into_inner())
    }
}
