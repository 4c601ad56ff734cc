//! The application service: what Moat does for raters and researchers, over the store, behind the
//! pages, the server functions and the JSON API (`moat_app::backend::Backend`). One file per concern;
//! the `Backend` implementation at the end of this file only hands each call to its file.

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

mod admin;
mod comparison_html;
mod comparisons;
mod results;
mod sessions;
mod studies;
mod throttle;

pub struct AppService {
    pub store: Store,
    admin_token_hash: String,
    session_limits: std::sync::Mutex<SessionLimits>,
    cookie_policy: std::sync::Mutex<CookiePolicy>,
    cache: std::sync::Mutex<StudyCache>,
    /// Each rater session's requests in the last minute (`rater_requests_per_minute`).
    rater_throttle: throttle::RaterThrottle,
    /// The live arena, when the server has a model registry (`moat serve --models`).
    arena: std::sync::OnceLock<Arc<crate::arena::Arena>>,
    /// The secret that keys the digests of raters' addresses (made once per database).
    client_salt: tokio::sync::OnceCell<String>,
    /// Active sampling: each study's reward model, retrained as votes arrive.
    pub active: Arc<crate::active_loop::ActiveLoop>,
    /// Static studies' prompts and responses rendered, by id (`comparison_html.rs`).
    html_by_id: comparison_html::HtmlById,
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

/// A study link as the completion page may use it: one stored before links were checked and not
/// http(s) is dropped rather than shown.
fn safe_link(link: &Option<String>) -> Option<String> {
    link.clone()
        .filter(|url| crate::domain::check_study_link("link", url).is_ok())
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

impl AppService {
    pub fn new(store: Store, admin_token_hash: String) -> Arc<AppService> {
        Arc::new(AppService {
            store,
            admin_token_hash,
            session_limits: Default::default(),
            cookie_policy: Default::default(),
            cache: Default::default(),
            rater_throttle: Default::default(),
            arena: Default::default(),
            client_salt: Default::default(),
            active: Default::default(),
            html_by_id: Default::default(),
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

    /// Gives the server its arena (once, at start).
    pub fn set_arena(&self, arena: Arc<crate::arena::Arena>) {
        let _ = self.arena.set(arena);
    }

    pub fn arena(&self) -> Option<&Arc<crate::arena::Arena>> {
        self.arena.get()
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
}

#[async_trait::async_trait]
impl Backend for AppService {
    async fn study_entry(
        &self,
        slug: &str,
        rater_token: Option<&str>,
    ) -> Result<StudyEntry, BackendError> {
        if let Some(token) = rater_token {
            self.throttle_rater(slug, token).await?;
        }
        AppService::study_entry(self, slug, rater_token).await
    }

    async fn consent(
        &self,
        slug: &str,
        participant: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<String, BackendError> {
        AppService::consent(self, slug, participant, client).await
    }

    async fn rater_view(&self, slug: &str, rater_token: &str) -> Result<RaterView, BackendError> {
        self.throttle_rater(slug, rater_token).await?;
        AppService::rater_view(self, slug, rater_token).await
    }

    async fn vote(
        &self,
        slug: &str,
        rater_token: &str,
        vote: VoteInput,
    ) -> Result<RaterView, BackendError> {
        self.throttle_rater(slug, rater_token).await?;
        AppService::vote(self, slug, rater_token, vote).await
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
        self.throttle_rater(slug, rater_token).await?;
        AppService::arena_prompt(self, slug, rater_token, prompt, sample, follow_up, wait).await
    }

    async fn continue_after_reveal(
        &self,
        slug: &str,
        rater_token: &str,
    ) -> Result<(), BackendError> {
        self.throttle_rater(slug, rater_token).await?;
        AppService::continue_after_reveal(self, slug, rater_token).await
    }

    async fn admin_bearer(&self, token: &str) -> Option<Principal> {
        AppService::admin_bearer(self, token).await
    }

    async fn admin_login(&self, token: &str) -> Result<(String, Principal), BackendError> {
        AppService::admin_login(self, token).await
    }

    async fn admin_session(&self, session_id: &str) -> Option<Principal> {
        AppService::admin_session(self, session_id).await
    }

    async fn admin_logout(&self, session_id: &str) -> Result<(), BackendError> {
        AppService::admin_logout(self, session_id).await
    }

    async fn authorize(
        &self,
        who: &Principal,
        permission: Permission<'_>,
    ) -> Result<(), BackendError> {
        AppService::authorize(self, who, permission).await
    }

    async fn audit(&self, who: &str, action: &str, target: &str, detail: &str) {
        AppService::audit(self, who, action, target, detail).await
    }

    fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        AppService::client_address(self, headers, peer)
    }

    fn secure_cookies(&self, headers: &axum::http::HeaderMap) -> bool {
        AppService::secure_cookies(self, headers)
    }

    async fn list_studies_for(&self, who: &Principal) -> Result<Vec<StudySummary>, BackendError> {
        AppService::list_studies_for(self, who).await
    }

    async fn admin_tokens(&self, who: &Principal) -> Result<Vec<AdminTokenView>, BackendError> {
        AppService::admin_tokens(self, who).await
    }

    async fn audit_log(
        &self,
        who: &Principal,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        AppService::audit_log(self, who, limit).await
    }

    async fn create_admin_token(
        &self,
        who: &Principal,
        name: &str,
        role: &str,
        studies: &[String],
    ) -> Result<String, BackendError> {
        AppService::create_admin_token(self, who, name, role, studies).await
    }

    async fn set_admin_token_studies(
        &self,
        who: &Principal,
        name: &str,
        studies: &[String],
    ) -> Result<(), BackendError> {
        AppService::set_admin_token_studies(self, who, name, studies).await
    }

    async fn revoke_admin_token(&self, who: &Principal, name: &str) -> Result<(), BackendError> {
        AppService::revoke_admin_token(self, who, name).await
    }

    async fn create_study_for(
        &self,
        who: &Principal,
        study: NewStudy,
    ) -> Result<StudySummary, BackendError> {
        AppService::create_study_for(self, who, study).await
    }

    async fn save_model_registry(&self, text: &str) -> Result<(), BackendError> {
        AppService::save_model_registry(self, text).await
    }

    async fn model_registry(&self) -> RegistryView {
        AppService::model_registry(self).await
    }

    async fn list_studies(&self) -> Result<Vec<StudySummary>, BackendError> {
        AppService::list_studies(self).await
    }

    async fn create_study(&self, study: NewStudy) -> Result<StudySummary, BackendError> {
        AppService::create_study(self, study).await
    }

    async fn update_study(
        &self,
        slug: &str,
        changes: StudyChanges,
    ) -> Result<StudySummary, BackendError> {
        AppService::update_study(self, slug, changes).await
    }

    async fn set_study_status(&self, slug: &str, status: &str) -> Result<(), BackendError> {
        AppService::set_study_status(self, slug, status).await
    }

    async fn leaderboard_page(
        &self,
        slug: &str,
        query: LeaderboardPageQuery,
    ) -> Result<LeaderboardView, BackendError> {
        AppService::leaderboard_page(self, slug, query).await
    }

    async fn set_rater_status(
        &self,
        slug: &str,
        pseudonym: &str,
        status: &str,
    ) -> Result<(), BackendError> {
        AppService::set_rater_status(self, slug, pseudonym, status).await
    }

    async fn study_report(&self, slug: &str) -> Result<StudyReport, BackendError> {
        AppService::study_report(self, slug).await
    }
}
