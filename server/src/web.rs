//! The server side of the web app: `Backend` over the store, for the pages and the JSON API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_app::backend::{Backend, BackendError};
use moat_app::wire::*;
use moat_exports::{Choice, Message};

use crate::domain::{median, sha256_hex, CheckKind, StudySlug, StudyStatus};
use crate::markdown;
use crate::store::{
    NewAssignment, ShownAssignment, Store, StoreError, StudyRow, VoteOutcome, VoteToRecord,
};

pub struct AppBackend {
    pub store: Store,
    admin_token_hash: String,
    session_limits: std::sync::Mutex<SessionLimits>,
    cookie_policy: std::sync::Mutex<CookiePolicy>,
    cache: std::sync::Mutex<StudyCache>,
    /// The live arena, when the server has a model registry (`moat serve --models`).
    arena: std::sync::OnceLock<Arc<crate::arena::Arena>>,
    /// The secret that keys the digests of raters' addresses (made once per database).
    client_salt: tokio::sync::OnceCell<String>,
}

/// How long an admin session lives: it ends after `idle` without a request, and at the latest
/// `absolute` after the login.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: Duration::from_secs(12 * 3600),
            absolute: Duration::from_secs(moat_app::api::ADMIN_SESSION_MAX_AGE_SECONDS),
        }
    }
}

/// When cookies get `Secure`: always (`--secure-cookies`), or when a trusted reverse proxy
/// (`--trust-proxy`) says the browser used HTTPS (`X-Forwarded-Proto: https`). Without
/// `--trust-proxy` that header is ignored: anyone can send it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CookiePolicy {
    pub always_secure: bool,
    pub trust_proxy: bool,
}

impl CookiePolicy {
    /// The rater's address: the peer's, or behind a trusted proxy (`--trust-proxy`) the last entry
    /// of `X-Forwarded-For`, the one the proxy itself appended (earlier entries are whatever the
    /// client claimed). Without `--trust-proxy` the header is ignored: anyone can send it.
    pub fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        if !self.trust_proxy {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|last| last.trim().parse().ok())
            .or(peer)
    }

    pub fn secure(&self, headers: &axum::http::HeaderMap) -> bool {
        self.always_secure
            || (self.trust_proxy
                && headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")))
    }
}

/// How long a study row (status, settings) and its number of comparable prompts are reused between
/// requests: every rater page and vote needs both. A change made through this process (opening or
/// closing the study) takes effect at once; one made by another process (`moat import`, a second
/// server on the same PostgreSQL) within this time.
const STUDY_CACHE_TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct StudyCache {
    studies: HashMap<String, (Instant, StudyRow)>,
    /// (study id, with checks, with flagged items) → comparable prompts.
    comparable: HashMap<(i64, bool, bool), (Instant, i64)>,
}

impl From<StoreError> for BackendError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(m) => BackendError::NotFound(m),
            StoreError::Conflict(m) => BackendError::Conflict(m),
            StoreError::Limited(m) => BackendError::TooMany(m),
            StoreError::Invalid(m) => BackendError::BadRequest(m),
            other => crate::incident::internal("store failure", &other),
        }
    }
}

/// What a study's title and settings must satisfy, on creation and on every change.
fn check_study_fields(title: &str, settings: &StudySettings) -> Result<(), BackendError> {
    if title.trim().is_empty() {
        return Err(BackendError::BadRequest("title must not be empty".into()));
    }
    if settings.items_per_rater == 0 {
        return Err(BackendError::BadRequest(
            "items_per_rater must be at least 1".into(),
        ));
    }
    let rate = settings.check_rate;
    if !(0.0..=1.0).contains(&rate) {
        return Err(BackendError::BadRequest(format!(
            "check_rate must be a share between 0 and 1, got {rate}"
        )));
    }
    for (field, link) in [
        ("redirect_url", &settings.redirect_url),
        ("screen_out_url", &settings.screen_out_url),
    ] {
        if let Some(link) = link {
            crate::domain::check_study_link(field, link).map_err(BackendError::BadRequest)?;
        }
    }
    check_arena_settings(settings)?;
    Ok(())
}

/// What an arena study's settings must satisfy.
fn check_arena_settings(settings: &StudySettings) -> Result<(), BackendError> {
    let bad = |m: String| Err(BackendError::BadRequest(m));
    if !matches!(settings.kind.as_str(), "static" | "arena") {
        return bad(format!(
            "kind must be static or arena, got {:?}",
            settings.kind
        ));
    }
    if !matches!(settings.stream.as_str(), "live" | "together") {
        return bad(format!(
            "stream must be live or together, got {:?}",
            settings.stream
        ));
    }
    if !(1..=100_000).contains(&settings.max_prompt_chars) {
        return bad("max_prompt_chars must be between 1 and 100000".into());
    }
    if settings.sample_prompts.len() > 10_000
        || settings
            .sample_prompts
            .iter()
            .any(|p| p.chars().count() > settings.max_prompt_chars as usize)
    {
        return bad(format!(
            "sample_prompts: at most 10000, each at most max_prompt_chars ({}) characters",
            settings.max_prompt_chars
        ));
    }
    if !(1..=20).contains(&settings.max_turns) {
        return bad(format!(
            "max_turns must be between 1 and 20 (the prompt and its follow-ups), got {}",
            settings.max_turns
        ));
    }
    if settings.battles_per_hour == 0 {
        return bad("battles_per_hour must be at least 1".into());
    }
    let mut seen = std::collections::HashSet::new();
    for name in &settings.contestants {
        if name.trim().is_empty() || !seen.insert(name.as_str()) {
            return bad(format!("contestants: {name:?} is empty or listed twice"));
        }
    }
    for (name, weight) in &settings.weights {
        if !(weight.is_finite() && *weight >= 0.0) {
            return bad(format!(
                "weights: {name:?} has the weight {weight}; a weight is 0 or more"
            ));
        }
    }
    if settings.is_arena() && settings.contestants.len() == 1 {
        return bad(
            "contestants: an arena needs at least two models (or none: every registry model)"
                .into(),
        );
    }
    Ok(())
}

/// A study link as the completion page may use it: one stored before links were checked and not
/// http(s) is dropped rather than shown.
fn safe_link(link: &Option<String>) -> Option<String> {
    link.clone()
        .filter(|url| crate::domain::check_study_link("link", url).is_ok())
}

fn render_comparison(
    shown: ShownAssignment,
    position: u32,
    total: u32,
    study: &StudyRow,
) -> Comparison {
    Comparison {
        assignment: shown.public_id,
        turns: shown
            .conversation
            .iter()
            .map(|m| Turn {
                role: m.role.clone(),
                html: markdown::render(&m.content),
            })
            .collect(),
        left_html: markdown::render(&shown.left_text),
        right_html: markdown::render(&shown.right_text),
        position,
        total: total.max(position),
        ask_source: study.settings.ask_source,
        ask_rationale: study.settings.ask_rationale,
        earlier: earlier_turns(&shown.left_history, &shown.right_history),
        follow_ups_left: if study.settings.is_arena() {
            // Each follow-up adds a question and an answer to a side's history.
            let turns = 1 + shown.left_history.len() as u32 / 2;
            study.settings.max_turns.saturating_sub(turns)
        } else {
            0
        },
        max_prompt_chars: study.settings.max_prompt_chars,
    }
}

/// A multi-turn battle's earlier turns from its sides' histories (`answer, question, answer,
/// question, …`, each ending with the question its last answer replies to).
fn earlier_turns(left: &[Message], right: &[Message]) -> Vec<EarlierTurn> {
    left.chunks(2)
        .zip(right.chunks(2))
        .filter_map(|(l, r)| match (l, r) {
            ([l_answer, question], [r_answer, _]) => Some(EarlierTurn {
                left_html: markdown::render(&l_answer.content),
                right_html: markdown::render(&r_answer.content),
                question_html: markdown::render(&question.content),
            }),
            _ => None,
        })
        .collect()
}

impl AppBackend {
    /// Every preference vote of the study as export records (in vote order): without the votes of
    /// raters marked excluded and without votes on quality checks.
    pub async fn study_records(
        &self,
        study: &StudyRow,
    ) -> Result<Vec<moat_exports::VoteRecord>, StoreError> {
        use futures::TryStreamExt;
        let excluded = self.store.excluded_raters(study.id).await?;
        let records: Vec<moat_exports::VoteRecord> =
            self.store.vote_records(study).try_collect().await?;
        Ok(records
            .into_iter()
            .filter(|r| !excluded.contains(&r.rater) && !r.is_quality_check())
            .collect())
    }

    /// The study's statistics, computed off the async threads (the bootstrap is CPU work). Votes on
    /// comparisons where a response names a model or its maker are counted, and left out unless
    /// `include_flagged` (as Chatbot Arena drops such battles: the rater may have known a model).
    /// Raters the rigging tests flag (`moat_stats::rigging`, run on all of the study's preference
    /// votes) are listed, and their votes left out when `drop_flagged_raters`.
    pub async fn analysis(
        &self,
        slug: &str,
        options: moat_stats::LeaderboardOptions,
        include_flagged: bool,
        drop_flagged_raters: bool,
    ) -> Result<(StudyRow, crate::analysis::StudyAnalysis), BackendError> {
        self.analysis_with(
            slug,
            options,
            include_flagged,
            drop_flagged_raters,
            crate::analysis::StudyQuery::default(),
        )
        .await
    }

    /// [`AppBackend::analysis`] restricted to a category and with de-duplication chosen
    /// (`crate::analysis::StudyQuery`); an unknown category is a bad request naming those there are.
    pub async fn analysis_with(
        &self,
        slug: &str,
        options: moat_stats::LeaderboardOptions,
        include_flagged: bool,
        drop_flagged_raters: bool,
        query: crate::analysis::StudyQuery,
    ) -> Result<(StudyRow, crate::analysis::StudyAnalysis), BackendError> {
        options.validate().map_err(BackendError::BadRequest)?;
        let study = self.open_study(slug).await?;
        let mut records = self.study_records(&study).await?;
        // The rigging tests see the same votes as the rater table's flags (`rater_checks`):
        // identity flags say nothing about the rater, so they do not decide which votes are tested.
        let tested = crate::analysis::rater_votes(&records);
        let flagged = self.store.flagged_vote_ids(study.id).await?;
        let flagged_votes = records
            .iter()
            .filter(|r| flagged.contains(&r.vote_id))
            .count() as u64;
        if !include_flagged {
            records.retain(|r| !flagged.contains(&r.vote_id));
        }
        let name = study.slug.clone();
        let arena = study.settings.is_arena();
        let analysis = tokio::task::spawn_blocking(move || {
            let checks: Vec<moat_stats::RaterCheck> =
                moat_stats::check_raters(&tested, &moat_stats::RiggingOptions::default())
                    .into_iter()
                    .filter(moat_stats::RaterCheck::is_flagged)
                    .collect();
            let flagged_raters: std::collections::BTreeSet<&str> =
                checks.iter().map(|c| c.rater.as_str()).collect();
            let flagged_rater_votes = records
                .iter()
                .filter(|r| flagged_raters.contains(r.rater.as_str()))
                .count() as u64;
            if drop_flagged_raters {
                records.retain(|r| !flagged_raters.contains(r.rater.as_str()));
            }
            let mut analysis =
                crate::analysis::analyse_with(&name, &records, &options, &query, arena)?;
            analysis.flagged_votes = flagged_votes;
            analysis.flagged_votes_left_out = !include_flagged;
            analysis.flagged_rater_votes = flagged_rater_votes;
            analysis.flagged_raters_left_out = drop_flagged_raters;
            analysis.flagged_raters = checks;
            Ok(analysis)
        })
        .await
        .map_err(|e| crate::incident::internal("analysis task failed", &e))?
        .map_err(BackendError::BadRequest)?;
        Ok((study, analysis))
    }

    /// A study's votes as battles (identity-flagged comparisons left out unless `include_flagged`),
    /// for a composite ranking across sources.
    pub async fn study_battles(
        &self,
        slug: &str,
        include_flagged: bool,
    ) -> Result<Vec<moat_stats::Battle>, BackendError> {
        let study = self.open_study(slug).await?;
        let mut records = self.study_records(&study).await?;
        if !include_flagged {
            let flagged = self.store.flagged_vote_ids(study.id).await?;
            records.retain(|r| !flagged.contains(&r.vote_id));
        }
        Ok(crate::analysis::battles(&records))
    }

    /// The rigging and carelessness tests (`moat_stats::rigging`) on the study's preference votes,
    /// by rater: the same votes, and so the same flags, as `analysis` finds. Computed on demand from
    /// the votes (linear in their number), so nothing is stored that could go stale.
    pub async fn rater_checks(
        &self,
        study_id: i64,
    ) -> Result<BTreeMap<String, moat_stats::RaterCheck>, StoreError> {
        let votes = self.store.rater_votes(study_id).await?;
        Ok(
            moat_stats::check_raters(&votes, &moat_stats::RiggingOptions::default())
                .into_iter()
                .map(|check| (check.rater.clone(), check))
                .collect(),
        )
    }

    pub fn new(store: Store, admin_token_hash: String) -> Arc<AppBackend> {
        Arc::new(AppBackend {
            store,
            admin_token_hash,
            session_limits: Default::default(),
            cookie_policy: Default::default(),
            cache: Default::default(),
            arena: Default::default(),
            client_salt: Default::default(),
        })
    }

    /// Sets how long admin sessions live (at start; tests shorten it).
    pub fn set_session_limits(&self, limits: SessionLimits) {
        *self
            .session_limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = limits;
    }

    fn session_limits(&self) -> SessionLimits {
        *self
            .session_limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_cookie_policy(&self, policy: CookiePolicy) {
        *self
            .cookie_policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = policy;
    }

    /// Who `token` is: the bootstrap owner (compared in constant time) or a live per-person token
    /// (found by its digest, the way API keys are).
    pub async fn principal_for_token(
        &self,
        token: &str,
    ) -> Result<Option<Principal>, BackendError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(None);
        }
        if self.admin_token_matches(token) {
            return Ok(Some(Principal {
                name: "owner".into(),
                role: AdminRole::Owner,
                token_id: None,
            }));
        }
        if !token.starts_with(crate::store::ADMIN_TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self
            .store
            .admin_token_by_digest(&sha256_hex(token))
            .await?
            .map(|row| Principal {
                name: row.name,
                role: row.role,
                token_id: Some(row.id),
            }))
    }

    /// The studies granted to `who`, `None` meaning all of them (the owner; a viewer without
    /// grants).
    async fn granted_studies(&self, who: &Principal) -> Result<Option<Vec<String>>, BackendError> {
        match (who.role, who.token_id) {
            (AdminRole::Owner, _) | (_, None) => Ok(None),
            (role, Some(id)) => {
                let slugs = self.store.granted_study_slugs(id).await?;
                Ok(if role == AdminRole::Viewer && slugs.is_empty() {
                    None
                } else {
                    Some(slugs)
                })
            }
        }
    }

    /// Whether `who` may see study `slug`: `NotFound` (with the same text as a missing study) when not.
    async fn check_study_visible(&self, who: &Principal, slug: &str) -> Result<(), BackendError> {
        match self.granted_studies(who).await? {
            None => Ok(()),
            Some(slugs) if slugs.iter().any(|s| s == slug) => Ok(()),
            Some(_) => Err(BackendError::NotFound(format!(
                "no study with slug {slug:?}"
            ))),
        }
    }

    /// Gives the server its arena (once, at start).
    pub fn set_arena(&self, arena: Arc<crate::arena::Arena>) {
        let _ = self.arena.set(arena);
    }

    pub fn arena(&self) -> Option<&Arc<crate::arena::Arena>> {
        self.arena.get()
    }

    /// An arena study's page before each battle: the prompt form, the running battle, or the
    /// completion page once the session's battles are voted.
    async fn arena_view(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<RaterView, BackendError> {
        let votes = rater.votes as u32;
        let total = study.settings.items_per_rater;
        if votes >= total {
            return self.completion(study, rater, votes).await;
        }
        let running = self
            .arena()
            .and_then(|arena| arena.running_for(rater.id))
            .map(|battle| battle.public_id.clone());
        // A battle that ended void in the last ten minutes is explained once, in plain words.
        let notice = match (&running, self.store.latest_battle(rater.id).await?) {
            (None, Some(last))
                if last.state == "void"
                    && last
                        .finished_ms
                        .is_some_and(|t| crate::domain::now_ms() - t < 600_000) =>
            {
                Some(crate::arena::void_notice(last.error.as_deref()))
            }
            _ => None,
        };
        // A follow-up being answered: the conversation so far, above the streaming answers.
        let (mut context, mut earlier) = (Vec::new(), Vec::new());
        let question = self
            .arena()
            .and_then(|arena| arena.running_for(rater.id))
            .and_then(|battle| battle.question.clone());
        if let Some(question) = question {
            if let Some(battle) = self.store.battle_to_continue(rater.id).await? {
                let [left, right] = &battle.sides;
                let shared = 1.min(left.len());
                let side = |messages: &[Message]| {
                    let mut history = messages[shared..].to_vec();
                    history.push(Message::new("user", question.as_str()));
                    history
                };
                context = left[..shared]
                    .iter()
                    .map(|m| Turn {
                        role: m.role.clone(),
                        html: markdown::render(&m.content),
                    })
                    .collect();
                earlier = earlier_turns(&side(left), &side(right));
            }
        }
        Ok(RaterView::Arena(ArenaTurn {
            position: votes + 1,
            total,
            max_prompt_chars: study.settings.max_prompt_chars,
            running,
            live: study.settings.stream != "together",
            notice,
            has_samples: !study.settings.sample_prompts.is_empty(),
            context,
            earlier,
        }))
    }

    /// The session a completion code belongs to; 404 when no session of the study has it.
    pub async fn verify_completion_code(
        &self,
        slug: &str,
        code: &str,
    ) -> Result<SessionByCode, BackendError> {
        let study = self.store.study(slug).await?;
        let (pseudonym, participant_id, status, votes) = self
            .store
            .rater_by_completion_code(study.id, code)
            .await?
            .ok_or_else(|| {
                BackendError::NotFound(format!(
                    "no session of study {slug:?} has the completion code {:?}",
                    code.trim()
                ))
            })?;
        let asked = if study.settings.is_arena() {
            i64::from(study.settings.items_per_rater)
        } else {
            self.comparable_prompts(&study)
                .await?
                .min(i64::from(study.settings.items_per_rater))
        };
        Ok(SessionByCode {
            code: code.trim().to_string(),
            pseudonym,
            participant_id,
            complete: votes >= asked && status != "excluded",
            status,
            votes,
        })
    }

    /// A keyed digest of a rater's address: the same for every session from one address (an IPv6
    /// address counts by its /64, which one household or host usually holds), and useless to
    /// anyone without the database's secret. The address itself is never stored.
    async fn client_hash(&self, client: std::net::IpAddr) -> Result<String, BackendError> {
        let salt = self
            .client_salt
            .get_or_try_init(|| async {
                if let Some(salt) = self.store.get_setting("client_address_key").await? {
                    return Ok::<_, StoreError>(salt);
                }
                // Another server process on the same database may write its own at the same
                // moment: the first one written is the one every process uses. (A process that
                // lost that race used to keep its own, so one address had a digest per process and
                // `sessions_per_ip` allowed as many times the sessions.)
                self.store
                    .put_setting_if_absent("client_address_key", &crate::domain::random_hex(32))
                    .await
            })
            .await?;
        let key = match client {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        };
        Ok(sha256_hex(&format!("{salt}/{key}")))
    }

    /// The completion page of a session that finished its comparisons: the session's own code
    /// (when the study gives codes) and, when the study reveals at the end, every comparison's models.
    async fn completion(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
        votes: u32,
    ) -> Result<RaterView, BackendError> {
        let gives_code = study
            .settings
            .completion_code
            .as_deref()
            .is_some_and(|code| !code.trim().is_empty());
        let reveals = if study.settings.reveal_at_end && !study.settings.is_arena() {
            self.store
                .session_reveals(rater.id)
                .await?
                .into_iter()
                .map(|(left_model, right_model, choice)| Reveal {
                    left_model,
                    right_model,
                    choice: choice.as_str().into(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(RaterView::Done(Completion {
            code: if gives_code {
                rater.completion_code.clone()
            } else {
                None
            },
            redirect_url: safe_link(&study.settings.redirect_url),
            votes,
            screened_out: false,
            reveals,
        }))
    }

    /// The daily-limit page when the participant has cast the study's votes per day.
    async fn daily_limit(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<Option<RaterView>, BackendError> {
        let limit = study.settings.votes_per_day;
        if limit == 0 {
            return Ok(None);
        }
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let since = crate::domain::now_ms() - DAY_MS;
        let (votes, oldest) = self.store.votes_since(rater, since).await?;
        if votes < i64::from(limit) {
            return Ok(None);
        }
        Ok(Some(RaterView::DailyLimit {
            limit,
            until_ms: oldest.unwrap_or(since) + DAY_MS,
        }))
    }

    /// Whether `token` is the admin token (its SHA-256 digest is what is stored).
    /// Compared in constant time: how long a wrong guess takes says nothing about how much of it
    /// was right. (Login attempts are also rate-limited per address; see `security`.)
    pub fn admin_token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        !token.is_empty()
            && bool::from(
                sha256_hex(token)
                    .as_bytes()
                    .ct_eq(self.admin_token_hash.as_bytes()),
            )
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, StudyCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The study (cached for a moment: the rater path reads it on every request).
    pub(crate) async fn open_study(&self, slug: &str) -> Result<StudyRow, BackendError> {
        if let Some((at, study)) = self.cache().studies.get(slug) {
            if at.elapsed() < STUDY_CACHE_TTL {
                return Ok(study.clone());
            }
        }
        let study = self.store.study(slug).await?;
        self.cache()
            .studies
            .insert(slug.to_string(), (Instant::now(), study.clone()));
        Ok(study)
    }

    /// How many prompts a rater of the study can be shown (see [`Store::comparable_prompts`]).
    async fn comparable_prompts(&self, study: &StudyRow) -> Result<i64, BackendError> {
        let key = (
            study.id,
            study.settings.check_rate > 0.0,
            study.settings.show_flagged,
        );
        if let Some(&(at, n)) = self.cache().comparable.get(&key) {
            if at.elapsed() < STUDY_CACHE_TTL {
                return Ok(n);
            }
        }
        let n = self.store.comparable_prompts(key.0, key.1, key.2).await?;
        self.cache().comparable.insert(key, (Instant::now(), n));
        Ok(n)
    }

    /// The rater whose session token this is; a request without one is refused as unauthorized.
    async fn session_rater(
        &self,
        study: &StudyRow,
        rater_token: &str,
    ) -> Result<crate::store::RaterRow, BackendError> {
        self.store
            .rater_by_token(study.id, rater_token)
            .await?
            .ok_or_else(|| {
                BackendError::Unauthorized(
                    "no rater session for this study; open the study link first".into(),
                )
            })
    }

    /// A quality-check comparison for this rater, if any check item is left for them.
    async fn next_check(
        &self,
        study: &StudyRow,
        rater_id: i64,
    ) -> Result<Option<(crate::assign::Pick, Option<CheckKind>)>, BackendError> {
        let checks = self
            .store
            .candidate_checks(study.id, rater_id, 16, study.settings.show_flagged)
            .await?;
        Ok(
            crate::assign::choose_check(&checks, &mut rand::thread_rng())
                .map(|(pick, kind)| (pick, Some(kind))),
        )
    }

    /// (votes cast, comparisons in the session) for a rater looked up in this request.
    async fn session_totals(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<(u32, u32), BackendError> {
        let comparable = self.comparable_prompts(study).await? as u32;
        Ok((
            rater.votes as u32,
            comparable.min(study.settings.items_per_rater),
        ))
    }
}

#[async_trait::async_trait]
impl Backend for AppBackend {
    async fn study_entry(
        &self,
        slug: &str,
        rater_token: Option<&str>,
    ) -> Result<StudyEntry, BackendError> {
        let study = self.open_study(slug).await?;
        // A draft or closed study is nobody's business but its researchers': its link shows only
        // that it is not open (the entry is serialized into the page, so the title and instructions
        // must not be in it at all).
        if study.status != StudyStatus::Open {
            return Ok(StudyEntry {
                slug: study.slug.clone(),
                title: String::new(),
                instructions_html: String::new(),
                participant_param: study.settings.participant_param.clone(),
                status: study.status.as_str().to_string(),
                joined: false,
            });
        }
        let joined = match rater_token {
            Some(token) => self.store.rater_by_token(study.id, token).await?.is_some(),
            None => false,
        };
        Ok(StudyEntry {
            slug: study.slug.clone(),
            title: study.title.clone(),
            instructions_html: markdown::render(&study.instructions),
            participant_param: study.settings.participant_param.clone(),
            status: study.status.as_str().to_string(),
            joined,
        })
    }

    async fn consent(
        &self,
        slug: &str,
        participant: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<String, BackendError> {
        let study = self.open_study(slug).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is not open"
            )));
        }
        if study.settings.require_participant && participant.is_none_or(|p| p.trim().is_empty()) {
            return Err(BackendError::BadRequest(format!(
                "this study needs your participant id: open the link your recruiter gave you (it carries `{}`)",
                study.settings.participant_param
            )));
        }
        if participant.is_some_and(|p| p.len() > 200) {
            return Err(BackendError::BadRequest(
                "participant id is longer than 200 characters".into(),
            ));
        }
        let client_hash = match client {
            Some(ip) if study.settings.sessions_per_ip > 0 => Some(self.client_hash(ip).await?),
            _ => None,
        };
        let limits = crate::store::JoinLimits {
            client_hash,
            sessions_per_client: study.settings.sessions_per_ip,
            per_minute: study.settings.consents_per_minute,
            completion_prefix: study.settings.completion_code.clone(),
        };
        let token = self.store.join_rater(study.id, participant, &limits).await;
        if let Err(StoreError::Limited(reason)) = &token {
            tracing::info!(study = %study.slug, %reason, "consent refused by a study limit");
        }
        Ok(token?)
    }

    async fn rater_view(&self, slug: &str, rater_token: &str) -> Result<RaterView, BackendError> {
        let study = self.open_study(slug).await?;
        if study.status != StudyStatus::Open {
            return Ok(RaterView::NotOpen {
                status: study.status.as_str().to_string(),
            });
        }
        let Some(rater) = self.store.rater_by_token(study.id, rater_token).await? else {
            return Ok(RaterView::NeedConsent);
        };
        if rater.excluded && study.settings.end_excluded_sessions {
            return Ok(RaterView::Done(Completion {
                code: study.settings.screen_out_code.clone(),
                redirect_url: safe_link(&study.settings.screen_out_url),
                votes: rater.votes as u32,
                screened_out: true,
                reveals: Vec::new(),
            }));
        }
        if study.settings.reveal_after_vote {
            if let Some((left_model, right_model, choice)) =
                self.store.pending_reveal(rater.id).await?
            {
                return Ok(RaterView::Reveal(Reveal {
                    left_model,
                    right_model,
                    choice: choice.as_str().into(),
                }));
            }
        }
        if study.settings.is_arena() {
            // A follow-up question being answered is shown streaming, not the comparison under it.
            let following_up = self
                .arena()
                .is_some_and(|arena| arena.running_for(rater.id).is_some());
            if following_up {
                return self.arena_view(&study, &rater).await;
            }
            if let Some(shown) = self.store.assignment_in_state(rater.id, "issued").await? {
                let (votes, total) = (rater.votes as u32, study.settings.items_per_rater);
                return Ok(RaterView::Compare(render_comparison(
                    shown,
                    votes + 1,
                    total,
                    &study,
                )));
            }
            return self.arena_view(&study, &rater).await;
        }
        let (votes, total) = self.session_totals(&study, &rater).await?;
        if let Some(shown) = self.store.assignment_in_state(rater.id, "issued").await? {
            let now = crate::domain::now_ms();
            if shown.expires_ms.is_none_or(|at| at > now) {
                return Ok(RaterView::Compare(render_comparison(
                    shown,
                    votes + 1,
                    total,
                    &study,
                )));
            }
            // Left unvoted past the study's time: it goes back to the pool; a new one follows.
            self.store.expire_assignments(now, Some(rater.id)).await?;
        }
        if votes >= total {
            return self.completion(&study, &rater, votes).await;
        }
        if let Some(limited) = self.daily_limit(&study, &rater).await? {
            return Ok(limited);
        }
        let expires_ms = match study.settings.assignment_minutes {
            0 => None,
            minutes => Some(crate::domain::now_ms() + i64::from(minutes) * 60_000),
        };
        let check_rate = study.settings.check_rate;
        // A concurrent request of the same rater may take the chosen prompt first; try again then.
        for _ in 0..3 {
            let check_due = check_rate > 0.0 && {
                let checks = self.store.rater_checks(rater.id).await?;
                crate::assign::check_is_due(
                    check_rate,
                    total,
                    votes,
                    checks.shown as u32,
                    &mut rand::thread_rng(),
                )
            };
            let mut pick = None;
            if check_due {
                pick = self.next_check(&study, rater.id).await?;
            }
            if pick.is_none() {
                // The least-assigned prompts this rater has not seen; 16 of them cover every model
                // pair of a typical study, and each candidate's responses cost a row read per request.
                let candidates = self
                    .store
                    .candidate_prompts(study.id, rater.id, 16, study.settings.show_flagged)
                    .await?;
                let pair_counts = self.store.pair_counts(study.id).await?;
                pick = crate::assign::choose(&candidates, &pair_counts, &mut rand::thread_rng())
                    .map(|pick| (pick, None));
            }
            if pick.is_none() && check_rate > 0.0 {
                // Regular items ran out before the session's end: the remaining checks fill it.
                pick = self.next_check(&study, rater.id).await?;
            }
            let Some(((prompt_id, left, right), check)) = pick else {
                return self.completion(&study, &rater, votes).await;
            };
            let new = NewAssignment {
                rater_id: rater.id,
                study_id: study.id,
                prompt_id,
                left_response: left,
                right_response: right,
                check,
                max_for_rater: total,
                expires_ms,
            };
            if self.store.insert_assignment(&new).await?.is_some() {
                break;
            }
        }
        match self.store.assignment_in_state(rater.id, "issued").await? {
            Some(shown) => Ok(RaterView::Compare(render_comparison(
                shown,
                votes + 1,
                total,
                &study,
            ))),
            None => self.completion(&study, &rater, votes).await,
        }
    }

    async fn vote(
        &self,
        slug: &str,
        rater_token: &str,
        vote: VoteInput,
    ) -> Result<(), BackendError> {
        let study = self.open_study(slug).await?;
        let rater = self.session_rater(&study, rater_token).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is {}; votes are closed",
                study.status.as_str()
            )));
        }
        let choice = Choice::parse(&vote.choice).ok_or_else(|| {
            BackendError::BadRequest(format!(
                "choice must be left, right, tie or both_bad, got {:?}",
                vote.choice
            ))
        })?;
        // What the study does not ask for is dropped unread: a script that posts a rationale or a
        // source guess anyway stores nothing (and cannot fill an export with text nobody requested).
        let mut vote = vote;
        if !study.settings.ask_source {
            vote.source_guess = None;
            vote.source_confidence = None;
        }
        if !study.settings.ask_rationale {
            vote.rationale = None;
        }
        let source_guess = match vote.source_guess.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(side @ ("left" | "right")) => Some(side.to_string()),
            Some(other) => {
                return Err(BackendError::BadRequest(format!(
                    "source_guess must be left or right, got {other:?}"
                )))
            }
        };
        let source_confidence = match vote.source_confidence.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<i64>() {
                Ok(n @ 1..=5) => Some(n),
                _ => {
                    return Err(BackendError::BadRequest(format!(
                        "source_confidence must be 1 to 5, got {text:?}"
                    )))
                }
            },
        };
        let rationale = vote
            .rationale
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        // An arena battle whose follow-up is still being answered is voted on once it is complete.
        if study.settings.is_arena()
            && self
                .arena()
                .is_some_and(|arena| arena.running_for(rater.id).is_some())
        {
            return Err(BackendError::Conflict(
                "the models are still answering your follow-up question; vote once both are done"
                    .into(),
            ));
        }
        if rationale.as_ref().is_some_and(|r| r.chars().count() > 5000) {
            return Err(BackendError::BadRequest(
                "rationale is longer than 5000 characters".into(),
            ));
        }
        let outcome = self
            .store
            .record_vote(&VoteToRecord {
                assignment_public_id: vote.assignment.trim().to_string(),
                rater_id: rater.id,
                choice,
                source_guess,
                source_confidence,
                rationale,
                reveal: study.settings.reveal_after_vote,
            })
            .await?;
        // A failed check past the study's limit excludes the rater. Only a failure does: a researcher
        // who includes the rater again is overruled by a new failure, not by other votes.
        if let (
            VoteOutcome::Recorded {
                check_passed: Some(false),
                ..
            },
            Some(max_failed),
        ) = (outcome, study.settings.max_failed_checks)
        {
            let checks = self.store.rater_checks(rater.id).await?;
            if checks.failed > i64::from(max_failed) && self.store.exclude_rater(rater.id).await? {
                tracing::info!(
                    study = %study.slug,
                    rater = rater.id,
                    failed = checks.failed,
                    "rater excluded after failed quality checks"
                );
            }
        }
        Ok(())
    }

    async fn arena_prompt(
        &self,
        slug: &str,
        rater_token: &str,
        prompt: &str,
        sample: bool,
        follow_up: bool,
        wait: bool,
    ) -> Result<String, BackendError> {
        let study = self.open_study(slug).await?;
        let rater = self.session_rater(&study, rater_token).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is {}; it is not taking prompts",
                study.status.as_str()
            )));
        }
        if !study.settings.is_arena() {
            return Err(BackendError::BadRequest(
                "this study compares prepared answers; it takes no prompts".into(),
            ));
        }
        if rater.excluded && study.settings.end_excluded_sessions {
            return Err(BackendError::Conflict("your session has ended".into()));
        }
        if rater.votes as u32 >= study.settings.items_per_rater {
            return Err(BackendError::Conflict(
                "you have completed every battle of this study".into(),
            ));
        }
        if follow_up {
            let arena = self.arena().ok_or_else(|| {
                BackendError::Conflict("this server has no models for the arena right now".into())
            })?;
            let battle = arena
                .follow_up(
                    &self.store,
                    &study,
                    rater.id,
                    &sha256_hex(rater_token),
                    prompt,
                )
                .await?;
            if wait {
                crate::arena::wait_for_end(&battle).await;
            }
            return Ok(battle.public_id.clone());
        }
        if self
            .store
            .assignment_in_state(rater.id, "issued")
            .await?
            .is_some()
        {
            return Err(BackendError::Conflict(
                "please vote on the current battle first".into(),
            ));
        }
        if let Some(RaterView::DailyLimit { limit, .. }) = self.daily_limit(&study, &rater).await? {
            return Err(BackendError::TooMany(format!(
                "you have cast this study's {limit} votes for today; please come back tomorrow"
            )));
        }
        let arena = self.arena().ok_or_else(|| {
            BackendError::Conflict("this server has no models for the arena right now".into())
        })?;
        let prompt = if sample {
            use rand::seq::SliceRandom;
            study
                .settings
                .sample_prompts
                .choose(&mut rand::thread_rng())
                .cloned()
                .ok_or_else(|| {
                    BackendError::BadRequest("this study has no sample prompts".into())
                })?
        } else {
            prompt.to_string()
        };
        let battle = arena
            .start(
                &self.store,
                &study,
                rater.id,
                &sha256_hex(rater_token),
                &prompt,
            )
            .await?;
        if wait {
            crate::arena::wait_for_end(&battle).await;
        }
        Ok(battle.public_id.clone())
    }

    async fn continue_after_reveal(
        &self,
        slug: &str,
        rater_token: &str,
    ) -> Result<(), BackendError> {
        let study = self.open_study(slug).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is not open"
            )));
        }
        let rater = self.session_rater(&study, rater_token).await?;
        Ok(self.store.finish_reveals(rater.id).await?)
    }

    async fn admin_bearer(&self, token: &str) -> Option<Principal> {
        self.principal_for_token(token).await.ok().flatten()
    }

    async fn admin_login(&self, token: &str) -> Result<(String, Principal), BackendError> {
        let Some(principal) = self.principal_for_token(token).await? else {
            // Never the guess itself: only that one failed (the address is in the server log).
            self.audit("-", "login.failed", "admin", "wrong token")
                .await;
            return Err(BackendError::Unauthorized("wrong admin token".into()));
        };
        let limits = self.session_limits();
        let session = self
            .store
            .create_admin_session(
                principal.token_id,
                &sha256_hex(token.trim()),
                limits.absolute.as_millis() as i64,
            )
            .await?;
        self.audit(&principal.name, "login", "admin", principal.role.as_str())
            .await;
        Ok((session, principal))
    }

    async fn admin_session(&self, session_id: &str) -> Option<Principal> {
        use subtle::ConstantTimeEq;
        if session_id.is_empty() || session_id.len() > 128 {
            return None;
        }
        let row = match self.store.admin_session(session_id).await {
            Ok(row) => row?,
            Err(error) => {
                tracing::error!(?error, "reading an admin session");
                return None;
            }
        };
        let now = crate::domain::now_ms();
        let limits = self.session_limits();
        let idle_ms = limits.idle.as_millis() as i64;
        if now >= row.expires_ms || now - row.last_seen_ms >= idle_ms || row.token_revoked {
            let _ = self.store.delete_admin_session(session_id).await;
            return None;
        }
        let principal = match row.token {
            Some(token) => Principal {
                name: token.name,
                role: token.role,
                token_id: Some(token.id),
            },
            // The bootstrap owner's session holds only while the configured token is the one it
            // logged in with.
            None if bool::from(
                row.credential_sha256
                    .as_bytes()
                    .ct_eq(self.admin_token_hash.as_bytes()),
            ) =>
            {
                Principal {
                    name: "owner".into(),
                    role: AdminRole::Owner,
                    token_id: None,
                }
            }
            None => {
                let _ = self.store.delete_admin_session(session_id).await;
                return None;
            }
        };
        // The idle clock is moved at most once a minute (or a tenth of the idle time), so browsing
        // does not turn every page into a write.
        if now - row.last_seen_ms > (idle_ms / 10).min(60_000) {
            if let Err(error) = self.store.touch_admin_session(session_id).await {
                tracing::error!(?error, "touching an admin session");
            }
        }
        Some(principal)
    }

    async fn admin_logout(&self, session_id: &str) -> Result<(), BackendError> {
        let who = self.admin_session(session_id).await;
        if self.store.delete_admin_session(session_id).await? {
            let name = who.map_or_else(|| "-".to_string(), |p| p.name);
            self.audit(&name, "logout", "admin", "").await;
        }
        Ok(())
    }

    async fn authorize(
        &self,
        who: &Principal,
        permission: Permission<'_>,
    ) -> Result<(), BackendError> {
        use AdminRole::*;
        let forbidden = |what: &str| {
            Err(BackendError::Forbidden(format!(
                "{} {:?} may not {what}",
                who.role.as_str(),
                who.name
            )))
        };
        match permission {
            Permission::ReadStudy(slug) => self.check_study_visible(who, slug).await,
            Permission::WriteStudy(slug) => {
                if who.role == Viewer {
                    // A viewer learns nothing about studies it cannot see either.
                    self.check_study_visible(who, slug).await?;
                    return forbidden(&format!("change study {slug:?} (read-only role)"));
                }
                self.check_study_visible(who, slug).await
            }
            Permission::CreateStudy => match who.role {
                Owner | Researcher => Ok(()),
                Viewer => forbidden("create studies"),
            },
            Permission::ReadModels | Permission::UseModels => match who.role {
                Owner | Researcher => Ok(()),
                Viewer => forbidden("use the models"),
            },
            Permission::ManageModels => match who.role {
                Owner => Ok(()),
                _ => forbidden("change the model registry (owner only)"),
            },
            Permission::ManageTokens => match who.role {
                Owner => Ok(()),
                _ => forbidden("manage admin tokens (owner only)"),
            },
            Permission::ReadAudit => match who.role {
                Owner => Ok(()),
                _ => forbidden("read the audit log (owner only)"),
            },
            Permission::Compute => Ok(()),
        }
    }

    async fn audit(&self, who: &str, action: &str, target: &str, detail: &str) {
        if let Err(error) = self.store.record_audit(who, action, target, detail).await {
            tracing::error!(?error, who, action, target, "writing the audit log");
        }
    }

    fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        self.cookie_policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .client_address(headers, peer)
    }

    fn secure_cookies(&self, headers: &axum::http::HeaderMap) -> bool {
        self.cookie_policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .secure(headers)
    }

    async fn list_studies_for(&self, who: &Principal) -> Result<Vec<StudySummary>, BackendError> {
        let studies = self.store.list_studies().await?;
        Ok(match self.granted_studies(who).await? {
            None => studies,
            Some(slugs) => studies
                .into_iter()
                .filter(|study| slugs.contains(&study.slug))
                .collect(),
        })
    }

    async fn admin_tokens(&self, who: &Principal) -> Result<Vec<AdminTokenView>, BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        Ok(self.store.list_admin_tokens().await?)
    }

    async fn create_admin_token(
        &self,
        who: &Principal,
        name: &str,
        role: &str,
        studies: &[String],
    ) -> Result<String, BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        let role = AdminRole::parse(role).map_err(BackendError::BadRequest)?;
        let token = self.store.create_admin_token(name, role, studies).await?;
        self.audit(
            &who.name,
            "token.create",
            name.trim(),
            &format!("{} {}", role.as_str(), studies.join(",")),
        )
        .await;
        Ok(token)
    }

    async fn revoke_admin_token(&self, who: &Principal, name: &str) -> Result<(), BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        self.store.revoke_admin_token(name).await?;
        self.audit(&who.name, "token.revoke", name, "").await;
        Ok(())
    }

    async fn create_study_for(
        &self,
        who: &Principal,
        study: NewStudy,
    ) -> Result<StudySummary, BackendError> {
        self.authorize(who, Permission::CreateStudy).await?;
        let summary = self.create_study(study).await?;
        if who.role != AdminRole::Owner {
            if let Some(token_id) = who.token_id {
                let row = self.store.study(&summary.slug).await?;
                self.store.grant_study(token_id, row.id).await?;
            }
        }
        self.audit(&who.name, "study.create", &summary.slug, "")
            .await;
        Ok(summary)
    }

    async fn save_model_registry(&self, text: &str) -> Result<(), BackendError> {
        let arena = self.arena().ok_or_else(|| {
            BackendError::Conflict(
                "this server has no registry file; start it with --models FILE".into(),
            )
        })?;
        arena
            .models()
            .replace(text)
            .await
            .map(|_| ())
            .map_err(BackendError::BadRequest)
    }

    async fn model_registry(&self) -> RegistryView {
        use moat_llm::registry::Endpoint;
        let Some(arena) = self.arena() else {
            return RegistryView {
                models: Vec::new(),
                file: None,
                text: None,
            };
        };
        let models = arena
            .hub()
            .registry()
            .models
            .iter()
            .map(|spec| {
                let (target, api_key_env) = match &spec.endpoint {
                    Endpoint::Openai(remote) => (
                        format!("{} ({})", remote.base_url, remote.model),
                        remote.api_key_env.clone(),
                    ),
                    Endpoint::Local(local) => (
                        local
                            .path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        None,
                    ),
                    Endpoint::BestOfN(best) => (
                        format!(
                            "best of {} from {} by reward model {}",
                            best.n,
                            best.base,
                            best.reward_model
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ),
                        None,
                    ),
                };
                RegistryModelView {
                    name: spec.name.clone(),
                    provider: spec.provider.clone(),
                    openness: spec.openness.as_str().to_string(),
                    kind: spec.kind().to_string(),
                    target,
                    api_key_set: api_key_env
                        .as_deref()
                        .is_some_and(|var| std::env::var_os(var).is_some()),
                    api_key_env,
                    max_tokens: spec.sampling.max_tokens,
                    temperature: spec.sampling.temperature,
                }
            })
            .collect();
        RegistryView {
            models,
            file: arena.models().file().map(|path| path.display().to_string()),
            text: arena.models().file_text(),
        }
    }

    async fn list_studies(&self) -> Result<Vec<StudySummary>, BackendError> {
        Ok(self.store.list_studies().await?)
    }

    async fn create_study(&self, study: NewStudy) -> Result<StudySummary, BackendError> {
        let slug = StudySlug::parse(study.slug.trim()).map_err(BackendError::BadRequest)?;
        check_study_fields(&study.title, &study.settings)?;
        self.store
            .create_study(
                &slug,
                study.title.trim(),
                &study.instructions,
                &study.settings,
            )
            .await?;
        Ok(self.store.study_summary(slug.as_str()).await?)
    }

    async fn update_study(
        &self,
        slug: &str,
        changes: StudyChanges,
    ) -> Result<StudySummary, BackendError> {
        check_study_fields(&changes.title, &changes.settings)?;
        self.store
            .update_study(
                slug,
                changes.title.trim(),
                &changes.instructions,
                &changes.settings,
            )
            .await?;
        self.cache().studies.remove(slug);
        Ok(self.store.study_summary(slug).await?)
    }

    async fn set_study_status(&self, slug: &str, status: &str) -> Result<(), BackendError> {
        let status = StudyStatus::parse(status).ok_or_else(|| {
            BackendError::BadRequest(format!(
                "status must be draft, open or closed, got {status:?}"
            ))
        })?;
        self.store.set_study_status(slug, status).await?;
        self.cache().studies.remove(slug);
        Ok(())
    }

    async fn leaderboard_page(
        &self,
        slug: &str,
        query: LeaderboardPageQuery,
    ) -> Result<LeaderboardView, BackendError> {
        let (study, analysis) = self
            .analysis_with(
                slug,
                moat_stats::LeaderboardOptions::default(),
                false,
                query.drop_flagged,
                crate::analysis::StudyQuery {
                    category: query.category.clone().filter(|c| !c.trim().is_empty()),
                    deduplicate: None,
                    history_step: Some(moat_stats::HistoryStep::Day),
                    history_window: 1000,
                },
            )
            .await?;
        let openness = self
            .store
            .models(study.id)
            .await?
            .into_iter()
            .map(|m| (m.name, m.openness))
            .collect();
        let mut view = crate::analysis::page_view(&study.slug, &study.title, &analysis, &openness);
        view.style_control = query.style_control;
        // What the figures above leave out, so nobody has to guess.
        let excluded = self.store.excluded_raters(study.id).await?.len();
        let (check_votes, _) = self.store.study_checks(study.id).await?;
        if excluded > 0 || check_votes > 0 {
            view.sections.push(ResultSection {
                title: "Left out".into(),
                text: format!(
                    "Not counted: the votes of {}, and {} on quality checks (they score raters, not models).",
                    match excluded {
                        1 => "1 excluded rater".to_string(),
                        n => format!("{n} excluded raters"),
                    },
                    match check_votes {
                        1 => "1 vote".to_string(),
                        n => format!("{n} votes"),
                    }
                ),
            });
        }
        if !analysis.flagged_raters.is_empty() {
            let raters = match analysis.flagged_raters.len() {
                1 => "1 rater".to_string(),
                n => format!("{n} raters"),
            };
            view.sections.push(ResultSection {
                title: "Flagged raters".into(),
                text: format!(
                    "{raters} with {} {} by the rigging and carelessness tests (reasons in the \
                     study's rater table): their votes {}.",
                    match analysis.flagged_rater_votes {
                        1 => "1 vote".to_string(),
                        n => format!("{n} votes"),
                    },
                    if analysis.flagged_raters.len() == 1 {
                        "is flagged"
                    } else {
                        "are flagged"
                    },
                    if analysis.flagged_raters_left_out {
                        "are left out of the figures above"
                    } else {
                        "are counted above (`drop_flagged=true` on the API, `moat leaderboard \
                         --drop-flagged` or the link at the top leave them out)"
                    }
                ),
            });
        }
        if analysis.flagged_votes > 0 {
            view.sections.push(ResultSection {
                title: "Identity flags".into(),
                text: format!(
                    "Not counted: {} on comparisons where a response names a model or its maker (the \
                     rater may have known who wrote it; see the study page). `moat leaderboard \
                     --include-flagged` and the API's `include_flagged=true` count them.",
                    match analysis.flagged_votes {
                        1 => "1 vote".to_string(),
                        n => format!("{n} votes"),
                    }
                ),
            });
        }
        Ok(view)
    }

    async fn set_rater_status(
        &self,
        slug: &str,
        pseudonym: &str,
        status: &str,
    ) -> Result<(), BackendError> {
        let excluded = match status {
            "excluded" => true,
            "active" => false,
            other => {
                return Err(BackendError::BadRequest(format!(
                    "status must be excluded or active, got {other:?}"
                )))
            }
        };
        let study = self.open_study(slug).await?;
        Ok(self
            .store
            .set_rater_excluded(study.id, pseudonym, excluded)
            .await?)
    }

    async fn study_report(&self, slug: &str) -> Result<StudyReport, BackendError> {
        let study = self.open_study(slug).await?;
        let summary = self.store.study_summary(slug).await?;
        let models = self.store.models(study.id).await?;
        let pairs = self.store.pair_progress(study.id, &models).await?;
        let mut durations = self.store.vote_durations_ms(study.id).await?;
        let results = self.store.model_results(study.id).await?;
        let mut raters = self.store.rater_summaries(study.id, 500).await?;
        let checks = self.rater_checks(study.id).await?;
        for rater in &mut raters {
            if let Some(check) = checks.get(&rater.pseudonym) {
                rater.flags = check
                    .flags
                    .iter()
                    .map(|flag| moat_app::wire::RaterFlagView {
                        kind: flag.kind.as_str().to_string(),
                        reason: flag.reason.clone(),
                    })
                    .collect();
            }
        }
        let (flagged, flagged_total) = self.store.flagged_responses(study.id, 500).await?;
        let battles = if study.settings.is_arena() {
            let summary = self.store.battle_summary(study.id).await?;
            Some(BattleReport {
                complete: summary.complete,
                void: summary.void,
                streaming: summary.streaming,
                recent_void: summary
                    .recent_void
                    .into_iter()
                    .map(|v| VoidBattleView {
                        battle: v.battle,
                        model_a: v.model_a,
                        model_b: v.model_b,
                        error: v.error,
                    })
                    .collect(),
                contestants: match self.arena() {
                    Some(arena) if study.settings.contestants.is_empty() => arena
                        .hub()
                        .registry()
                        .names()
                        .iter()
                        .map(|n| n.to_string())
                        .collect(),
                    _ => study.settings.contestants.clone(),
                },
                models_available: self.arena().is_some(),
            })
        } else {
            None
        };
        Ok(StudyReport {
            summary,
            instructions: study.instructions.clone(),
            settings: study.settings.clone(),
            pairs,
            median_seconds_per_vote: median(&mut durations).map(|ms| ms / 1000.0),
            results,
            raters,
            flagged,
            flagged_total,
            battles,
        })
    }
}
