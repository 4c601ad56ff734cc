//! The live arena: a rater's own prompt, two anonymous registry models answering side by side as
//! they stream, then an ordinary vote.
//!
//! A battle starts as a row (`streaming`) and an in-memory [`RunningBattle`] whose state (the text of
//! each side so far, and how it ended) is broadcast to the rater's event stream. Both models answer at
//! once; when both are complete the battle becomes ordinary rows (prompt, two responses with their
//! generation metadata, an issued assignment with A on the left) in one transaction, so the vote,
//! reveal, leaderboard, exports and training treat it like any comparison. A battle in which a model
//! fails, times out or is cancelled (the rater left) is void: kept with its error for the researcher,
//! never counted, and the rater is told in plain words that name no model.
//!
//! Blindness: the events carry only side `a`/`b` text and an end marker; the battle id is random.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_app::backend::BackendError;
use moat_exports::Message;
use moat_llm::registry::ModelSpec;
use moat_llm::{Completion, GenerationRequest, LlmError};
use rand::distributions::Distribution;
use rand::Rng;
use tokio::sync::watch;

use crate::domain::{now_ms, random_hex};
use crate::serving::ModelHub;
use crate::store::{ContestantAnswer, Dialect, Store, StudyRow};

/// A model that failed this many battles in a row is sampled out for [`SICK_FOR`], then tried again.
const FAILURES_BEFORE_SICK: u32 = 3;
const SICK_FOR: Duration = Duration::from_secs(60);
/// A battle nobody watches for this long (the rater closed the page) is cancelled.
const UNWATCHED_GRACE: Duration = Duration::from_secs(15);
/// No battle runs longer than this, whatever the models' own timeouts say.
const BATTLE_DEADLINE: Duration = Duration::from_secs(600);

/// How a battle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BattleEnd {
    Complete,
    /// The rater-facing reason (names no model).
    Void(String),
}

/// The part of a battle the rater may see: the text of each side so far, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BattleState {
    pub a: String,
    pub b: String,
    pub end: Option<BattleEnd>,
}

pub struct RunningBattle {
    pub public_id: String,
    pub rater_id: i64,
    /// The follow-up question being answered (`None`: the battle's first turn).
    pub question: Option<String>,
    /// The SHA-256 of the rater's session token: the events stream checks the cookie against it
    /// without a database read.
    pub token_sha256: String,
    pub state: watch::Sender<BattleState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ModelHealth {
    consecutive_failures: u32,
    sick_until: Option<Instant>,
}

/// The arena of one server process: the models, the battles running now, and each model's health.
pub struct Arena {
    models: Arc<crate::serving::Models>,
    running: Mutex<HashMap<String, Arc<RunningBattle>>>,
    health: Mutex<HashMap<String, ModelHealth>>,
    /// Per study: the models an identity detector was built for, and the detector (building one
    /// compiles its patterns, a third of a battle's server time when done per answer).
    detectors: Mutex<HashMap<i64, IdentityCache>>,
    /// Per study: how often each pair (by name, in name order) was drawn for a battle that was not
    /// void, read from the database on the study's first battle in this process.
    pair_counts: Mutex<HashMap<i64, PairCounts>>,
    /// Per rater: when each battle of the last hour started (ms), read from the database on the
    /// rater's first battle in this process; `battles_per_hour` is checked against it.
    recent_starts: Mutex<HashMap<i64, std::collections::VecDeque<i64>>>,
    /// Per rater: why their last battle was refused as it started (the hourly limit reached, or
    /// another battle running, through other server processes), until their page has shown it once.
    refusals: Mutex<HashMap<i64, (Instant, String)>>,
}

/// How often each pair (by name, in name order) was drawn.
type PairCounts = HashMap<(String, String), i64>;

/// The key of a pair in [`choose_pair`]'s counts: the two names in order.
fn pair_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

type IdentityCache = (
    Vec<(String, String)>,
    Arc<crate::identity::IdentityDetector>,
);

/// Chooses the pair for a battle among `contestants`: never a model against itself; each pair
/// drawn with probability proportional to the product of its models' `weights` (1 when not given; a
/// pair with weight 0 is never drawn); with `favour_least_shown`, only among the pairs shown least so
/// far (so every pair gets its share of votes). Sides in random order.
pub fn choose_pair<R: Rng>(
    contestants: &[String],
    weights: &std::collections::BTreeMap<String, f64>,
    shown: &HashMap<(String, String), i64>,
    favour_least_shown: bool,
    rng: &mut R,
) -> Option<(String, String)> {
    let weight = |name: &String| weights.get(name).copied().unwrap_or(1.0);
    let mut pairs = Vec::new();
    for (i, a) in contestants.iter().enumerate() {
        for b in &contestants[i + 1..] {
            let w = weight(a) * weight(b);
            // NaN weights are refused with the settings; `w > 0.0` is false for them anyway.
            if a == b || w.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            let key = if a <= b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            pairs.push((shown.get(&key).copied().unwrap_or(0), w, key));
        }
    }
    if favour_least_shown {
        let least = pairs.iter().map(|(count, ..)| *count).min()?;
        pairs.retain(|(count, ..)| *count == least);
    }
    let index = rand::distributions::WeightedIndex::new(pairs.iter().map(|(_, w, _)| *w))
        .ok()?
        .sample(rng);
    let (a, b) = pairs.swap_remove(index).2;
    Some(if rng.gen_bool(0.5) { (a, b) } else { (b, a) })
}

/// What a rater is told when a battle is void: plain words, no model, provider or error text.
pub fn rater_notice(error: &LlmError) -> &'static str {
    match error {
        LlmError::Timeout { .. } => {
            "One of the models took too long to answer, so this battle does not count. Send a new prompt (or the same one again) for a new pair."
        }
        LlmError::Busy { .. } => {
            "One of the models is busy right now, so this battle does not count. Please try again in a moment."
        }
        LlmError::InvalidRequest(_) => {
            "Your prompt is too long for one of the models, so this battle does not count. Please send a shorter prompt."
        }
        LlmError::Cancelled => "The battle was cancelled and does not count.",
        _ => {
            "One of the models failed to answer, so this battle does not count. Send a new prompt (or the same one again) for a new pair."
        }
    }
}

/// The rater's notice for a battle voided earlier, from the error recorded with it.
pub fn void_notice(recorded: Option<&str>) -> String {
    let error = recorded.unwrap_or_default();
    let kind = if error.contains("timed out") {
        LlmError::Timeout {
            endpoint: String::new(),
            what: String::new(),
        }
    } else if error.contains("is busy") {
        LlmError::Busy {
            model: String::new(),
            capacity: 0,
        }
    } else if error.contains("the rater left") {
        LlmError::Cancelled
    } else {
        LlmError::Engine {
            model: String::new(),
            message: String::new(),
        }
    };
    rater_notice(&kind).to_string()
}

fn rater_error(message: impl Into<String>) -> BackendError {
    BackendError::BadRequest(message.into())
}

/// The rater's prompt (or follow-up question), trimmed, if the study takes it.
fn checked_prompt(study: &StudyRow, prompt: &str) -> Result<String, BackendError> {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        return Err(rater_error("Please write a prompt first."));
    }
    let length = prompt.chars().count();
    let limit = study.settings.max_prompt_chars as usize;
    if length > limit {
        return Err(rater_error(format!(
            "Your prompt is {length} characters long; this study takes at most {limit}."
        )));
    }
    Ok(prompt.to_string())
}

impl Arena {
    pub fn new(models: Arc<crate::serving::Models>) -> Arena {
        Arena {
            models,
            running: Mutex::new(HashMap::new()),
            health: Mutex::new(HashMap::new()),
            detectors: Mutex::new(HashMap::new()),
            pair_counts: Mutex::new(HashMap::new()),
            recent_starts: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
        }
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (Instant, String)>> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why this rater's last battle was refused as it started, once, if that was in the last ten
    /// minutes (such a battle has no row whose error the page could show).
    pub fn take_refusal(&self, rater_id: i64) -> Option<String> {
        self.refusals()
            .remove(&rater_id)
            .filter(|(at, _)| at.elapsed() < Duration::from_secs(600))
            .map(|(_, notice)| notice)
    }

    /// The models now (a saved registry replaces them for battles that start afterwards).
    pub fn hub(&self) -> Arc<ModelHub> {
        self.models.current()
    }

    pub fn models(&self) -> &Arc<crate::serving::Models> {
        &self.models
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunningBattle>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModelHealth>> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn battle(&self, public_id: &str) -> Option<Arc<RunningBattle>> {
        self.running().get(public_id).cloned()
    }

    /// The battle this rater has running, if any.
    pub fn running_for(&self, rater_id: i64) -> Option<Arc<RunningBattle>> {
        self.running()
            .values()
            .find(|battle| battle.rater_id == rater_id)
            .cloned()
    }

    /// The study's contestants that this server can reach and that are not sampled out.
    fn available_contestants(&self, study: &StudyRow) -> Vec<String> {
        let hub = self.hub();
        let names: Vec<String> = if study.settings.contestants.is_empty() {
            hub.registry()
                .names()
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            study.settings.contestants.clone()
        };
        let now = Instant::now();
        let health = self.health();
        let mut seen = HashSet::new();
        names
            .into_iter()
            .filter(|name| hub.engine(name).is_some())
            .filter(|name| {
                health
                    .get(name)
                    .and_then(|h| h.sick_until)
                    .is_none_or(|until| until <= now)
            })
            .filter(|name| seen.insert(name.clone()))
            .collect()
    }

    fn starts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, std::collections::VecDeque<i64>>> {
        self.recent_starts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pair_counts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, PairCounts>> {
        self.pair_counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A void battle's pair is not counted as shown (the database does not count it either).
    fn forget_pair(&self, study_id: i64, models: &[String; 2]) {
        if let Some(count) = self
            .pair_counts()
            .get_mut(&study_id)
            .and_then(|counts| counts.get_mut(&pair_key(&models[0], &models[1])))
        {
            *count = (*count - 1).max(0);
        }
    }

    fn record_outcome(&self, model: &str, ok: bool) {
        let mut health = self.health();
        let entry = health.entry(model.to_string()).or_default();
        if ok {
            *entry = ModelHealth::default();
        } else {
            entry.consecutive_failures += 1;
            if entry.consecutive_failures >= FAILURES_BEFORE_SICK {
                // Sampled out for a while; the next battle after that is its trial.
                entry.sick_until = Some(Instant::now() + SICK_FOR);
                entry.consecutive_failures = FAILURES_BEFORE_SICK - 1;
            }
        }
    }

    /// Starts a battle on the rater's prompt (or returns the one already running for this rater).
    pub async fn start(
        self: &Arc<Self>,
        store: &Store,
        study: &StudyRow,
        rater_id: i64,
        token_sha256: &str,
        prompt: &str,
    ) -> Result<Arc<RunningBattle>, BackendError> {
        if let Some(running) = self.running_for(rater_id) {
            return Ok(running);
        }
        let prompt = checked_prompt(study, prompt)?;
        let now = now_ms();
        let hour_ago = now - 3_600_000;
        if !self.starts().contains_key(&rater_id) {
            let stored = store.battle_starts_since(rater_id, hour_ago).await?;
            self.starts().entry(rater_id).or_insert(stored.into());
        }
        {
            let mut starts = self.starts();
            let recent = starts.entry(rater_id).or_default();
            while recent.front().is_some_and(|&at| at < hour_ago) {
                recent.pop_front();
            }
            let started = recent.len();
            if started >= study.settings.battles_per_hour as usize {
                return Err(BackendError::Conflict(crate::store::hourly_limit_message(
                    started as u64,
                )));
            }
            // Counted now (a void battle cost the models work too), so parallel starts cannot
            // pass the limit together.
            recent.push_back(now);
        }
        let contestants = self.available_contestants(study);
        if contestants.len() < 2 {
            return Err(BackendError::Conflict(
                "The models of this arena are not available right now; please try again in a minute."
                    .into(),
            ));
        }
        // Pair counts are kept in memory per study (read from the database once): a battle start
        // then costs no scan of the study's battles. Several server processes each balance their
        // own share; the database stays the truth for statistics.
        if !self.pair_counts().contains_key(&study.id) {
            let stored = store.battle_pair_counts(study.id).await?;
            self.pair_counts().entry(study.id).or_insert(stored);
        }
        let (model_a, model_b) = {
            let mut counts = self.pair_counts();
            let shown = counts.entry(study.id).or_default();
            let pair = choose_pair(
                &contestants,
                &study.settings.weights,
                shown,
                study.settings.favour_least_shown,
                &mut rand::thread_rng(),
            )
            .ok_or_else(|| {
                BackendError::Conflict(
                    "No pair of this arena's models can be drawn right now (check their weights); please try again later."
                        .into(),
                )
            })?;
            *shown.entry(pair_key(&pair.0, &pair.1)).or_insert(0) += 1;
            pair
        };
        let conversation = vec![Message::new("user", prompt)];
        let public_id = random_hex(16);
        let (state, _) = watch::channel(BattleState::default());
        let battle = Arc::new(RunningBattle {
            public_id: public_id.clone(),
            rater_id,
            question: None,
            token_sha256: token_sha256.to_string(),
            state,
        });
        self.running().insert(public_id.clone(), battle.clone());
        let arena = self.clone();
        let store = store.clone();
        let (study_id, per_hour) = (study.id, study.settings.battles_per_hour);
        let task_battle = battle.clone();
        tokio::spawn(async move {
            arena
                .run(
                    store,
                    (study_id, per_hour),
                    task_battle,
                    [model_a, model_b],
                    conversation,
                )
                .await;
        });
        Ok(battle)
    }

    /// Asks the two models of the rater's unvoted battle a follow-up question (a multi-turn battle):
    /// each model sees the conversation with its own earlier answers. The battle keeps its id; its
    /// comparison cannot be voted on until both have answered.
    pub async fn follow_up(
        self: &Arc<Self>,
        store: &Store,
        study: &StudyRow,
        rater_id: i64,
        token_sha256: &str,
        question: &str,
    ) -> Result<Arc<RunningBattle>, BackendError> {
        if let Some(running) = self.running_for(rater_id) {
            return Ok(running);
        }
        let question = checked_prompt(study, question)?;
        let battle = store
            .battle_to_continue(rater_id)
            .await?
            .filter(|battle| battle.study_id == study.id)
            .ok_or_else(|| {
                BackendError::Conflict(
                    "There is no battle to continue; please send a new prompt.".into(),
                )
            })?;
        let max_turns = i64::from(study.settings.max_turns);
        if battle.turns >= max_turns {
            return Err(BackendError::Conflict(format!(
                "This battle has had its {max_turns} turns; please vote on it."
            )));
        }
        let (state, _) = watch::channel(BattleState::default());
        let running = Arc::new(RunningBattle {
            public_id: battle.public_id.clone(),
            rater_id,
            question: Some(question.clone()),
            token_sha256: token_sha256.to_string(),
            state,
        });
        {
            let mut all = self.running();
            if let Some(other) = all.values().find(|b| b.rater_id == rater_id) {
                return Ok(other.clone());
            }
            all.insert(running.public_id.clone(), running.clone());
        }
        let arena = self.clone();
        let store = store.clone();
        let task_battle = running.clone();
        tokio::spawn(async move {
            arena
                .run_follow_up(store, task_battle, battle, Message::new("user", question))
                .await;
        });
        Ok(running)
    }

    async fn run_follow_up(
        self: Arc<Self>,
        store: Store,
        running: Arc<RunningBattle>,
        battle: crate::store::BattleToContinue,
        question: Message,
    ) {
        let conversations = battle.sides.clone().map(|mut side| {
            side.push(question.clone());
            side
        });
        let outcome = self
            .answer_watched(
                &store,
                &running,
                &battle.models,
                [&conversations[0], &conversations[1]],
            )
            .await;
        let end = match outcome {
            Ok([a, b]) => {
                for name in &battle.models {
                    self.record_outcome(name, true);
                }
                let turn = battle.turns + 1;
                let stored = async {
                    let rows = self
                        .answer_rows(
                            &store,
                            battle.study_id,
                            &running,
                            &battle.models,
                            [&a, &b],
                            turn,
                        )
                        .await?;
                    store
                        .complete_follow_up(&battle, &question, [&rows[0], &rows[1]])
                        .await
                };
                match stored.await {
                    Ok(()) => BattleEnd::Complete,
                    Err(error) => {
                        tracing::error!("storing arena follow-up {}: {error}", battle.public_id);
                        self.void_follow_up(
                            &store,
                            &battle,
                            &format!("storing turn {turn} failed: {error}"),
                        )
                        .await;
                        BattleEnd::Void(
                            "The battle could not be saved, so it does not count. Please try again."
                                .into(),
                        )
                    }
                }
            }
            Err((failed, error, context)) => {
                let record = self.failure_record(&battle.models, failed, &error, context);
                let turn = battle.turns + 1;
                self.void_follow_up(&store, &battle, &format!("turn {turn}, {record}"))
                    .await;
                BattleEnd::Void(rater_notice(&error).to_string())
            }
        };
        running.state.send_modify(|state| state.end = Some(end));
        self.running().remove(&running.public_id);
    }

    /// A failed follow-up voids the whole battle (no part of it may be voted on).
    async fn void_follow_up(
        &self,
        store: &Store,
        battle: &crate::store::BattleToContinue,
        record: &str,
    ) {
        self.forget_pair(battle.study_id, &battle.models);
        if let Err(error) = store.void_continued_battle(&battle.public_id, record).await {
            tracing::error!("voiding arena battle {}: {error}", battle.public_id);
        }
    }

    /// Runs a battle of study `study_id` (whose `battles_per_hour` is `per_hour`) to its end.
    async fn run(
        self: Arc<Self>,
        store: Store,
        (study_id, per_hour): (i64, u32),
        battle: Arc<RunningBattle>,
        models: [String; 2],
        conversation: Vec<Message>,
    ) {
        // The battle's row is written while the models start answering (its commit, an fsync, is
        // not on the rater's path to the first words); it exists long before the answers are
        // stored, so a crash from then on leaves a `streaming` row that nothing counts.
        let rater_id = battle.rater_id;
        let insert = store.insert_battle(
            &battle.public_id,
            study_id,
            rater_id,
            (&models[0], &models[1]),
            &conversation,
            per_hour,
        );
        let generate =
            self.answer_watched(&store, &battle, &models, [&conversation, &conversation]);
        tokio::pin!(insert, generate);
        // Usually the row is written first; if the write refuses the battle (the rater's hourly
        // limit, or another battle of theirs running, through other server processes), the models
        // stop at once.
        let mut finished = None;
        let inserted = tokio::select! {
            inserted = &mut insert => inserted,
            outcome = &mut generate => {
                finished = Some(outcome);
                (&mut insert).await
            }
        };
        if let Err(error) = inserted {
            let notice = match error {
                crate::store::StoreError::Conflict(message) => {
                    // This process's count of the rater's starts missed other processes' battles:
                    // it is read again from the database at the rater's next start.
                    self.starts().remove(&rater_id);
                    let mut refusals = self.refusals();
                    refusals.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(600));
                    refusals.insert(rater_id, (Instant::now(), message.clone()));
                    message
                }
                error => {
                    tracing::error!("recording arena battle {}: {error}", battle.public_id);
                    "The battle could not be saved, so it does not count. Please try again.".into()
                }
            };
            self.forget_pair(study_id, &models);
            battle
                .state
                .send_modify(|state| state.end = Some(BattleEnd::Void(notice)));
            self.running().remove(&battle.public_id);
            return;
        }
        let outcome = match finished {
            Some(outcome) => outcome,
            None => generate.await,
        };
        let end = match outcome {
            Ok([a, b]) => {
                for name in &models {
                    self.record_outcome(name, true);
                }
                match self
                    .persist(&store, study_id, &battle, &models, &conversation, [&a, &b])
                    .await
                {
                    Ok(()) => BattleEnd::Complete,
                    Err(error) => {
                        tracing::error!("storing arena battle {}: {error}", battle.public_id);
                        let _ = store
                            .void_battle(&battle.public_id, &format!("storing failed: {error}"))
                            .await;
                        BattleEnd::Void(
                            "The battle could not be saved, so it does not count. Please try again."
                                .into(),
                        )
                    }
                }
            }
            Err((failed, error, context)) => {
                let record = self.failure_record(&models, failed, &error, context);
                self.forget_pair(study_id, &models);
                if let Err(store_error) = store.void_battle(&battle.public_id, &record).await {
                    tracing::error!("voiding arena battle {}: {store_error}", battle.public_id);
                }
                BattleEnd::Void(rater_notice(&error).to_string())
            }
        };
        battle.state.send_modify(|state| state.end = Some(end));
        self.running().remove(&battle.public_id);
    }

    /// [`Arena::generate_both`], cancelled when the rater leaves or the battle runs past
    /// [`BATTLE_DEADLINE`].
    async fn answer_watched(
        &self,
        store: &Store,
        battle: &RunningBattle,
        models: &[String; 2],
        conversations: [&[Message]; 2],
    ) -> Result<[(Completion, ModelSpec); 2], (Option<usize>, LlmError, String)> {
        tokio::select! {
            outcome = self.generate_both(battle, models, conversations) => outcome,
            () = watchdog(store, battle) => Err((None, LlmError::Cancelled, "the rater left".to_string())),
            () = tokio::time::sleep(BATTLE_DEADLINE) => Err((None, LlmError::Timeout {
                endpoint: "arena".into(),
                what: format!("the battle ran past {} s", BATTLE_DEADLINE.as_secs()),
            }, String::new())),
        }
    }

    /// A failed turn: the failing model's health is noted, and the researcher's record of the error
    /// is returned (`A: …`, `B: …` or `battle: …`; never shown to the rater).
    fn failure_record(
        &self,
        models: &[String; 2],
        failed: Option<usize>,
        error: &LlmError,
        context: String,
    ) -> String {
        if let Some(index) = failed {
            self.record_outcome(&models[index], false);
        }
        let side = failed.map_or("battle", |i| if i == 0 { "A" } else { "B" });
        let detail = if context.is_empty() {
            error.to_string()
        } else {
            context
        };
        format!("{side}: {detail}")
    }

    /// Both models answer at once, each side's text broadcast as it arrives. The first failure ends
    /// the battle and cancels the other request.
    async fn generate_both(
        &self,
        battle: &RunningBattle,
        models: &[String; 2],
        conversations: [&[Message]; 2],
    ) -> Result<[(Completion, ModelSpec); 2], (Option<usize>, LlmError, String)> {
        let mut messages = Vec::with_capacity(2);
        for conversation in conversations {
            messages.push(
                crate::generate::chat_messages(conversation)
                    .map_err(|e| (None, LlmError::InvalidRequest(e), String::new()))?,
            );
        }
        // One hub for the whole battle, even if the registry is replaced meanwhile.
        let hub = self.hub();
        let side = |index: usize| {
            let name = models[index].clone();
            let messages = messages[index].clone();
            let hub = hub.clone();
            async move {
                let fail = |error: LlmError| (Some(index), error, String::new());
                let engine = hub.engine(&name).ok_or_else(|| {
                    fail(LlmError::Engine {
                        model: name.clone(),
                        message: "not in this server's registry".into(),
                    })
                })?;
                let spec = hub.spec(&name).cloned().expect("engine has a spec");
                let (sender, mut deltas) = tokio::sync::mpsc::channel::<String>(64);
                // The rater sees text in frames: reading the stream more often would cost wake-ups
                // and reads for nothing.
                let request = GenerationRequest {
                    messages,
                    read_every: Some(crate::arena_events::TEXT_FRAME),
                    ..Default::default()
                };
                let forward = async {
                    while let Some(text) = deltas.recv().await {
                        battle.state.send_modify(|state| {
                            if index == 0 {
                                state.a.push_str(&text);
                            } else {
                                state.b.push_str(&text);
                            }
                        });
                    }
                };
                let (completion, ()) =
                    tokio::join!(engine.generate(request, Some(sender)), forward);
                let completion = completion.map_err(fail)?;
                if completion.text.trim().is_empty() {
                    return Err((
                        Some(index),
                        LlmError::Protocol {
                            endpoint: name,
                            message: "an empty answer".into(),
                        },
                        String::new(),
                    ));
                }
                Ok((completion, spec))
            }
        };
        let (a, b) = tokio::try_join!(side(0), side(1))?;
        Ok([a, b])
    }

    /// The identity detector for a study's models (its stored models and this battle's two).
    async fn detector(
        &self,
        store: &Store,
        study_id: i64,
        contestants: &[(&str, &str)],
    ) -> Result<Arc<crate::identity::IdentityDetector>, crate::store::StoreError> {
        let mut models: Vec<(String, String)> = store
            .models(study_id)
            .await?
            .into_iter()
            .map(|m| (m.name, m.provider))
            .chain(
                contestants
                    .iter()
                    .map(|(name, provider)| (name.to_string(), provider.to_string())),
            )
            .collect();
        models.sort();
        models.dedup();
        let mut cache = self.detectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((for_models, detector)) = cache.get(&study_id) {
            if *for_models == models {
                return Ok(detector.clone());
            }
        }
        let detector = Arc::new(crate::identity::IdentityDetector::new(&models));
        cache.insert(study_id, (models, detector.clone()));
        Ok(detector)
    }

    async fn persist(
        &self,
        store: &Store,
        study_id: i64,
        battle: &RunningBattle,
        models: &[String; 2],
        conversation: &[Message],
        answers: [&(Completion, ModelSpec); 2],
    ) -> Result<(), crate::store::StoreError> {
        let rows = self
            .answer_rows(store, study_id, battle, models, answers, 1)
            .await?;
        store
            .complete_battle(
                &battle.public_id,
                study_id,
                battle.rater_id,
                conversation,
                [&rows[0], &rows[1]],
            )
            .await?;
        Ok(())
    }

    /// The two answers of turn `turn` as rows to store: provider, openness, identity flag and
    /// generation metadata (which never reach the rater before the vote).
    async fn answer_rows<'a>(
        &self,
        store: &Store,
        study_id: i64,
        battle: &RunningBattle,
        models: &'a [String; 2],
        answers: [&'a (Completion, ModelSpec); 2],
        turn: i64,
    ) -> Result<Vec<ContestantAnswer<'a>>, crate::store::StoreError> {
        let contestants: Vec<(&str, &str)> = answers
            .iter()
            .zip(models)
            .map(|((_, spec), name)| (name.as_str(), spec.provider.as_str()))
            .collect();
        let detector = self.detector(store, study_id, &contestants).await?;
        Ok(answers
            .into_iter()
            .zip(models)
            .map(|((completion, spec), name)| ContestantAnswer {
                model_name: name,
                provider: &spec.provider,
                openness: crate::generate::openness(spec),
                version: spec.version.as_deref().unwrap_or_default(),
                content: &completion.text,
                identity_flag: detector.flag(&completion.text),
                metadata: {
                    let mut metadata = crate::generate::generation_metadata(spec, completion);
                    metadata["generated_by"] = "moat arena".into();
                    metadata["battle"] = battle.public_id.clone().into();
                    metadata["turn"] = turn.into();
                    metadata
                },
            })
            .collect())
    }
}

/// Resolves once nobody has watched the battle for [`UNWATCHED_GRACE`]: the rater's page (its event
/// stream) or a plain form post waiting for the answers each hold a receiver in this process; an
/// event stream served by another process on the same database notes the time it last watched in
/// the battle's row instead ([`wait_for_battle_end`]).
async fn watchdog(store: &Store, battle: &RunningBattle) {
    let mut unwatched_since: Option<Instant> = None;
    let mut last_alive = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Other processes serving this battle's events tell a running battle from an orphan by this.
        if store.dialect() == Dialect::Postgres && last_alive.elapsed() >= OTHER_PROCESS_MARK {
            if let Err(error) = store.mark_battle_alive(&battle.public_id).await {
                tracing::warn!(battle = %battle.public_id, %error, "noting that a battle runs");
            }
            last_alive = Instant::now();
        }
        if battle.state.receiver_count() > 0 {
            unwatched_since = None;
            continue;
        }
        let since = *unwatched_since.get_or_insert_with(Instant::now);
        if since.elapsed() < UNWATCHED_GRACE {
            continue;
        }
        let grace_ms = UNWATCHED_GRACE.as_millis() as i64;
        match store.battle_watched_ms(&battle.public_id).await {
            Ok(Some(watched)) if now_ms() - watched < grace_ms => unwatched_since = None,
            _ => return,
        }
    }
}

/// Waits until the battle ends (for plain form posts, JavaScript off).
pub async fn wait_for_end(battle: &RunningBattle) -> BattleEnd {
    let mut receiver = battle.state.subscribe();
    loop {
        if let Some(end) = receiver.borrow_and_update().end.clone() {
            return end;
        }
        if receiver.changed().await.is_err() {
            return receiver
                .borrow()
                .end
                .clone()
                .unwrap_or(BattleEnd::Void("The battle was cancelled.".into()));
        }
    }
}

/// A battle's row. On PostgreSQL it may be another process's battle whose row is still being
/// written (the process running it writes the row while the models already answer, and the
/// rater's event stream may arrive here first): it is waited for a few seconds.
pub(crate) async fn stored_battle(
    store: &Store,
    public_id: &str,
) -> Option<crate::store::BattleRow> {
    let give_up = Instant::now() + ROW_WAIT;
    loop {
        match store.battle(public_id).await {
            Ok(Some(row)) => return Some(row),
            Ok(None) if store.dialect() == Dialect::Postgres && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return None,
        }
    }
}

/// How long an event stream waits for the row of a battle that another process is starting.
const ROW_WAIT: Duration = Duration::from_secs(5);

/// How a battle that is not running in this process ended, by its stored state.
pub(crate) fn stored_battle_end(state: &str) -> BattleEnd {
    match state {
        "complete" => BattleEnd::Complete,
        _ => BattleEnd::Void("This battle does not count.".into()),
    }
}

/// How often a stream of a battle running in another process reads its state.
const OTHER_PROCESS_POLL: Duration = Duration::from_millis(250);
/// How often such a stream notes in the battle's row that the rater is watching (well within
/// [`UNWATCHED_GRACE`]), and how often the running process notes that it is running it.
const OTHER_PROCESS_MARK: Duration = Duration::from_secs(3);
/// A `streaming` battle whose process has shown no sign of running it for this long was cut off
/// (its process died); it never counts.
const ORPHANED_AFTER: Duration = Duration::from_millis(crate::store::BATTLE_ALIVE_FOR_MS as u64);

/// Waits until the battle's row leaves `streaming` (another process finished or voided it), for at
/// most the battle deadline and a margin: a row left `streaming` by a crashed process never counts.
pub(crate) async fn wait_for_battle_end(store: &Store, public_id: &str) -> BattleEnd {
    let give_up = Instant::now() + BATTLE_DEADLINE + Duration::from_secs(30);
    let mut last_mark: Option<Instant> = None;
    while Instant::now() < give_up {
        // The running process ends a battle nobody watches; this stream is someone watching.
        if last_mark.is_none_or(|at| at.elapsed() >= OTHER_PROCESS_MARK) {
            if let Err(error) = store.mark_battle_watched(public_id).await {
                tracing::warn!(battle = public_id, %error, "noting that a battle is watched");
            }
            last_mark = Some(Instant::now());
        }
        tokio::time::sleep(OTHER_PROCESS_POLL).await;
        match store.battle_liveness(public_id).await {
            Ok(Some((state, _))) if state != "streaming" => return stored_battle_end(&state),
            Ok(Some((_, alive_ms))) => {
                if now_ms() - alive_ms > ORPHANED_AFTER.as_millis() as i64 {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(battle = public_id, %error, "reading a battle run by another process");
            }
        }
    }
    BattleEnd::Void("This battle does not count.".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_favour_the_least_shown_and_never_a_model_against_itself() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let contestants = names(&["a", "b", "c", "a"]);
        let mut shown = HashMap::new();
        shown.insert(("a".to_string(), "b".to_string()), 5);
        shown.insert(("a".to_string(), "c".to_string()), 5);
        let mut sides = HashMap::new();
        let no_weights = std::collections::BTreeMap::new();
        for _ in 0..200 {
            let (x, y) = choose_pair(&contestants, &no_weights, &shown, true, &mut rng).unwrap();
            assert_ne!(x, y);
            let mut pair = [x.clone(), y];
            pair.sort();
            assert_eq!(pair, ["b", "c"], "b-c was shown least");
            *sides.entry(x).or_insert(0) += 1;
        }
        // Sides are randomized: each model is on the left about half the time.
        assert!(sides["b"] > 60 && sides["c"] > 60, "{sides:?}");
        assert_eq!(
            choose_pair(&names(&["only"]), &no_weights, &shown, true, &mut rng),
            None
        );
    }

    #[test]
    fn weights_set_how_often_each_pair_is_drawn() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let contestants = names(&["a", "b", "c"]);
        // a:3, b:1, c:0 → only a-b can be drawn; with c at 1, a-b 3, a-c 3, b-c 1 (of 7).
        let mut weights = std::collections::BTreeMap::new();
        weights.insert("a".to_string(), 3.0);
        weights.insert("c".to_string(), 0.0);
        for _ in 0..50 {
            let (x, y) =
                choose_pair(&contestants, &weights, &HashMap::new(), true, &mut rng).unwrap();
            assert!(x != "c" && y != "c", "a weight of 0 keeps c out");
        }
        weights.insert("c".to_string(), 1.0);
        let mut counts: HashMap<[String; 2], u32> = HashMap::new();
        let draws = 7000;
        for _ in 0..draws {
            let (x, y) =
                choose_pair(&contestants, &weights, &HashMap::new(), false, &mut rng).unwrap();
            let mut pair = [x, y];
            pair.sort();
            *counts.entry(pair).or_default() += 1;
        }
        let share = |a: &str, b: &str| {
            f64::from(counts[&[a.to_string(), b.to_string()]]) / f64::from(draws)
        };
        // Expected 3/7, 3/7, 1/7; three standard errors at n = 7000 is about 0.018.
        assert!((share("a", "b") - 3.0 / 7.0).abs() < 0.02, "{counts:?}");
        assert!((share("a", "c") - 3.0 / 7.0).abs() < 0.02, "{counts:?}");
        assert!((share("b", "c") - 1.0 / 7.0).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn rater_notices_name_no_model_or_error_text() {
        let errors = [
            LlmError::Timeout {
                endpoint: "secret-model".into(),
                what: "x".into(),
            },
            LlmError::Http {
                endpoint: "secret-model".into(),
                status: 500,
                message: "secret-model exploded".into(),
            },
            LlmError::Busy {
                model: "secret-model".into(),
                capacity: 1,
            },
        ];
        for error in errors {
            let notice = rater_notice(&error);
            assert!(!notice.contains("secret"), "{notice}");
            assert!(notice.contains("does not count"), "{notice}");
        }
    }
}
