//! The server-side operations the pages need, as a trait the `server` crate implements.
//!
//! The app crate must not depend on the store (that would pull sqlx towards the wasm build and point
//! dependencies the wrong way), so the server provides an `Arc<dyn Backend>` as Leptos context.

use std::sync::Arc;

use crate::wire::*;

/// An error a page or API call can show its user. `Internal` never carries the cause: the
/// implementation logs it with a short random incident id, and the user sees only that id (to quote
/// to whoever reads the log).
#[derive(Debug, Clone, PartialEq)]
pub enum BackendError {
    BadRequest(String),
    Unauthorized(String),
    /// Authenticated, but the role (or the studies granted) does not allow it.
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// A limit of the study was reached (sessions per address, consents per minute, votes per day).
    TooMany(String),
    /// Something failed inside the server; `incident` also appears in the log line with the cause.
    Internal {
        incident: String,
    },
}

impl BackendError {
    pub fn status(&self) -> u16 {
        match self {
            BackendError::BadRequest(_) => 400,
            BackendError::Unauthorized(_) => 401,
            BackendError::Forbidden(_) => 403,
            BackendError::NotFound(_) => 404,
            BackendError::Conflict(_) => 409,
            BackendError::TooMany(_) => 429,
            BackendError::Internal { .. } => 500,
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::BadRequest(m)
            | BackendError::Unauthorized(m)
            | BackendError::Forbidden(m)
            | BackendError::NotFound(m)
            | BackendError::Conflict(m)
            | BackendError::TooMany(m) => f.write_str(m),
            BackendError::Internal { incident } => write!(
                f,
                "internal error (incident {incident}); the server log has the details"
            ),
        }
    }
}

impl std::error::Error for BackendError {}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn study_entry(
        &self,
        slug: &str,
        rater_token: Option<&str>,
    ) -> Result<StudyEntry, BackendError>;
    /// Records consent and returns the rater's secret token (for the cookie). `client` is the
    /// address the request came from (for the study's sessions-per-address limit), when known.
    async fn consent(
        &self,
        slug: &str,
        participant: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<String, BackendError>;
    async fn rater_view(&self, slug: &str, rater_token: &str) -> Result<RaterView, BackendError>;
    /// Records the vote (acknowledged once it commits) and answers with what the rater sees next:
    /// the reveal, the next comparison, the arena's prompt form or the end.
    async fn vote(
        &self,
        slug: &str,
        rater_token: &str,
        vote: VoteInput,
    ) -> Result<RaterView, BackendError>;
    /// Arena studies: starts a battle on the rater's prompt (or, with `sample`, on one of the study's
    /// sample prompts) and returns its id; with `follow_up`, asks the two models of the rater's
    /// unvoted battle the prompt as a follow-up question instead (a multi-turn battle). With `wait` (a
    /// plain form post, JavaScript off) it returns only once both answers are complete or the battle
    /// is void.
    async fn arena_prompt(
        &self,
        slug: &str,
        rater_token: &str,
        prompt: &str,
        sample: bool,
        follow_up: bool,
        wait: bool,
    ) -> Result<String, BackendError>;
    async fn continue_after_reveal(
        &self,
        slug: &str,
        rater_token: &str,
    ) -> Result<(), BackendError>;

    /// Who presents `token` as `Authorization: Bearer` (the configured owner token or a live
    /// per-person token); `None` for anything else. Never a session id.
    async fn admin_bearer(&self, token: &str) -> Option<Principal>;
    /// Exchanges a token for a new session (the login form): the session id for the cookie and
    /// who it is. A wrong token is `Unauthorized` and written to the audit log.
    async fn admin_login(&self, token: &str) -> Result<(String, Principal), BackendError>;
    /// Who holds the session `session_id` (the admin cookie's value), unless it has expired, was
    /// logged out or its token was revoked.
    async fn admin_session(&self, session_id: &str) -> Option<Principal>;
    /// Ends the session `session_id` (logout); a missing one is not an error.
    async fn admin_logout(&self, session_id: &str) -> Result<(), BackendError>;
    /// Whether `who` may do `permission`: `Forbidden` when the role does not allow it, `NotFound`
    /// for a study the principal may not see (so its existence is not revealed either).
    async fn authorize(
        &self,
        who: &Principal,
        permission: Permission<'_>,
    ) -> Result<(), BackendError>;
    /// Appends to the audit log (failures are logged, never shown to the caller).
    async fn audit(&self, who: &str, action: &str, target: &str, detail: &str);
    /// Whether cookies set in answer to a request with these headers get `Secure` (`--secure-cookies`,
    /// or `X-Forwarded-Proto: https` behind a proxy trusted with `--trust-proxy`).
    fn secure_cookies(&self, headers: &http::HeaderMap) -> bool;
    /// The address a request comes from for per-address limits: the peer, or what a proxy trusted
    /// with `--trust-proxy` appended to `X-Forwarded-For`.
    fn client_address(
        &self,
        headers: &http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr>;
    /// The studies `who` may see (all of them for the owner; the granted ones for a researcher).
    async fn list_studies_for(&self, who: &Principal) -> Result<Vec<StudySummary>, BackendError>;
    /// The per-person tokens (owner only); never the tokens themselves.
    async fn admin_tokens(&self, who: &Principal) -> Result<Vec<AdminTokenView>, BackendError>;
    /// The newest `limit` entries of the audit log, newest first (owner only).
    async fn audit_log(&self, who: &Principal, limit: i64)
        -> Result<Vec<AuditEntry>, BackendError>;
    /// Creates a per-person token (owner only) and returns it: shown once, only its digest is kept.
    async fn create_admin_token(
        &self,
        who: &Principal,
        name: &str,
        role: &str,
        studies: &[String],
    ) -> Result<String, BackendError>;
    /// Revokes a token by name (owner only); its sessions end.
    /// Replaces the studies granted to the token `name` (owner only); every slug must exist.
    async fn set_admin_token_studies(
        &self,
        who: &Principal,
        name: &str,
        studies: &[String],
    ) -> Result<(), BackendError>;
    async fn revoke_admin_token(&self, who: &Principal, name: &str) -> Result<(), BackendError>;
    /// Creates a study for `who`: a researcher is granted the study it creates.
    async fn create_study_for(
        &self,
        who: &Principal,
        study: NewStudy,
    ) -> Result<StudySummary, BackendError>;
    /// The server's model registry (empty without `--models`), with the file's text if it has one.
    async fn model_registry(&self) -> RegistryView;
    /// Replaces the registry file with `text` after checking it and loading its models.
    async fn save_model_registry(&self, text: &str) -> Result<(), BackendError>;
    async fn list_studies(&self) -> Result<Vec<StudySummary>, BackendError>;
    async fn create_study(&self, study: NewStudy) -> Result<StudySummary, BackendError>;
    /// Replaces a study's title, instructions and settings (same checks as on creation).
    async fn update_study(
        &self,
        slug: &str,
        changes: StudyChanges,
    ) -> Result<StudySummary, BackendError>;
    async fn set_study_status(&self, slug: &str, status: &str) -> Result<(), BackendError>;
    async fn study_report(&self, slug: &str) -> Result<StudyReport, BackendError>;
    /// The leaderboard page; `drop_flagged` leaves out the votes of raters the rigging and
    /// carelessness tests flag.
    async fn leaderboard(
        &self,
        slug: &str,
        drop_flagged: bool,
    ) -> Result<LeaderboardView, BackendError> {
        self.leaderboard_page(
            slug,
            LeaderboardPageQuery {
                drop_flagged,
                ..LeaderboardPageQuery::default()
            },
        )
        .await
    }
    /// The leaderboard page restricted to a category, with the style-controlled table when asked.
    async fn leaderboard_page(
        &self,
        slug: &str,
        query: LeaderboardPageQuery,
    ) -> Result<LeaderboardView, BackendError>;
    /// Marks a rater `excluded` (left out of statistics and exports) or `active`.
    async fn set_rater_status(
        &self,
        slug: &str,
        pseudonym: &str,
        status: &str,
    ) -> Result<(), BackendError>;
}

pub type SharedBackend = Arc<dyn Backend>;
