//! Server functions: the only calls the browser makes. Each has a fixed endpoint under `/rpc/` so
//! plain HTML forms (JavaScript off) can post to it and its URL never depends on a build hash.

// A server function's arguments are its HTML form's fields, one by one, so a form with many fields
// makes a function with many arguments (the macro copies them into code the lint also sees).
#![allow(clippy::too_many_arguments)]

use leptos::prelude::*;
use leptos::server_fn::ServerFnError;

use crate::wire::*;

/// The cookie that carries a rater's secret token for one study.
pub fn rater_cookie(slug: &str) -> String {
    format!("moat_rater_{slug}")
}

/// The cookie that carries an admin session's random id (never a token).
pub const ADMIN_COOKIE: &str = "moat_admin";

/// The longest an admin session lives (absolute); an idle one ends sooner (see the server's
/// `SessionLimits`).
pub const ADMIN_SESSION_MAX_AGE_SECONDS: u64 = 60 * 60 * 24 * 7;

#[cfg(feature = "ssr")]
pub mod ssr {
    use leptos::prelude::*;
    use leptos::server_fn::ServerFnError;

    use crate::backend::{BackendError, SharedBackend};

    pub fn backend() -> Result<SharedBackend, ServerFnError> {
        use_context::<SharedBackend>()
            .ok_or_else(|| ServerFnError::new("server misconfigured: no backend"))
    }

    /// The value of a request cookie.
    pub async fn cookie(name: &str) -> Option<String> {
        let headers: http::HeaderMap = leptos_axum::extract().await.ok()?;
        cookie_value(&headers, name)
    }

    /// The value of cookie `name` in request headers (also used by the server's JSON API).
    pub fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }

    /// Sets cookie `name` (HttpOnly, SameSite=Lax, and `Secure` when the backend says the request
    /// came over HTTPS).
    pub async fn set_cookie(name: &str, value: &str, max_age_seconds: u64) {
        let secure = match (
            use_context::<SharedBackend>(),
            leptos_axum::extract::<http::HeaderMap>().await,
        ) {
            (Some(backend), Ok(headers)) => backend.secure_cookies(&headers),
            _ => false,
        };
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            let text = cookie_header(name, value, max_age_seconds, secure);
            if let Ok(header) = http::HeaderValue::from_str(&text) {
                response.append_header(http::header::SET_COOKIE, header);
            }
        }
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, and `Secure` when asked.
    pub fn cookie_header(name: &str, value: &str, max_age_seconds: u64, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}")
    }

    /// Turns a backend error into a server-function error with the matching HTTP status.
    pub fn fail(error: BackendError) -> ServerFnError {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(status) = http::StatusCode::from_u16(error.status()) {
                response.set_status(status);
            }
        }
        ServerFnError::new(error.to_string())
    }

    /// Who the admin cookie's session belongs to, if it is live.
    pub async fn admin_principal(backend: &SharedBackend) -> Option<crate::wire::Principal> {
        let session = cookie(super::ADMIN_COOKIE).await.unwrap_or_default();
        if session.is_empty() {
            return None;
        }
        backend.admin_session(&session).await
    }

    /// The backend and the logged-in principal, if the admin cookie holds a live session whose
    /// principal may do `permission`: 401 without a session, 403/404 when the role or the studies
    /// granted do not allow it.
    pub async fn require_admin(
        permission: crate::wire::Permission<'_>,
    ) -> Result<(SharedBackend, crate::wire::Principal), ServerFnError> {
        let backend = backend()?;
        let Some(principal) = admin_principal(&backend).await else {
            return Err(fail(BackendError::Unauthorized(
                "admin login required".into(),
            )));
        };
        backend
            .authorize(&principal, permission)
            .await
            .map_err(fail)?;
        Ok((backend, principal))
    }

    pub async fn rater_token(slug: &str) -> Option<String> {
        cookie(&super::rater_cookie(slug))
            .await
            .filter(|token| !token.is_empty())
    }
}

#[server(prefix = "/rpc", endpoint = "study_entry")]
pub async fn get_study_entry(slug: String) -> Result<StudyEntry, ServerFnError> {
    let backend = ssr::backend()?;
    let token = ssr::rater_token(&slug).await;
    backend
        .study_entry(&slug, token.as_deref())
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/rpc", endpoint = "consent")]
pub async fn consent(slug: String, participant: Option<String>) -> Result<(), ServerFnError> {
    let backend = ssr::backend()?;
    let participant = participant.filter(|p| !p.trim().is_empty());
    // The rater's address, for the study's sessions-per-address limit: the peer (absent only when
    // the server runs without connection info, as some tests do), or behind a trusted proxy the
    // address it forwarded.
    let peer = leptos_axum::extract::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .await
        .ok()
        .map(|info| info.0.ip());
    let headers: http::HeaderMap = leptos_axum::extract().await.unwrap_or_default();
    let client = backend.client_address(&headers, peer);
    let token = backend
        .consent(&slug, participant.as_deref(), client)
        .await
        .map_err(ssr::fail)?;
    ssr::set_cookie(&rater_cookie(&slug), &token, 60 * 60 * 24 * 30).await;
    leptos_axum::redirect(&format!("/s/{slug}/compare"));
    Ok(())
}

#[server(prefix = "/rpc", endpoint = "rater_view")]
pub async fn get_rater_view(slug: String) -> Result<RaterView, ServerFnError> {
    let backend = ssr::backend()?;
    let Some(token) = ssr::rater_token(&slug).await else {
        return Ok(RaterView::NeedConsent);
    };
    backend.rater_view(&slug, &token).await.map_err(ssr::fail)
}

/// Records the vote (acknowledged after it commits) and answers with what the rater sees next (the
/// reveal, the next comparison, the arena's prompt form or the end), so the page needs no second
/// request to move on.
#[server(prefix = "/rpc", endpoint = "vote")]
pub async fn vote(
    slug: String,
    assignment: String,
    choice: String,
    source_guess: Option<String>,
    source_confidence: Option<String>,
    rationale: Option<String>,
) -> Result<RaterView, ServerFnError> {
    let backend = ssr::backend()?;
    let token = ssr::rater_token(&slug).await.ok_or_else(|| {
        ssr::fail(crate::backend::BackendError::Unauthorized(
            "no rater session for this study; open the study link first".into(),
        ))
    })?;
    let input = VoteInput {
        assignment,
        choice,
        source_guess,
        source_confidence,
        rationale,
    };
    backend.vote(&slug, &token, input).await.map_err(ssr::fail)
}

/// Arena studies: the rater's prompt, or with `follow_up` a follow-up question to the two models of
/// the battle not yet voted on. The page sends `live` when it will stream the battle itself
/// (JavaScript on) and gets the battle id at once; a plain form post waits for both answers and the
/// browser comes back to the comparison page.
#[server(prefix = "/rpc", endpoint = "arena_prompt")]
pub async fn arena_prompt(
    slug: String,
    prompt: Option<String>,
    sample: Option<String>,
    live: Option<String>,
    follow_up: Option<String>,
) -> Result<String, ServerFnError> {
    let backend = ssr::backend()?;
    let token = ssr::rater_token(&slug).await.ok_or_else(|| {
        ssr::fail(crate::backend::BackendError::Unauthorized(
            "no rater session for this study; open the study link first".into(),
        ))
    })?;
    backend
        .arena_prompt(
            &slug,
            &token,
            prompt.as_deref().unwrap_or_default(),
            sample.is_some(),
            follow_up.is_some(),
            live.is_none(),
        )
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/rpc", endpoint = "next")]
pub async fn continue_after_reveal(slug: String) -> Result<(), ServerFnError> {
    let backend = ssr::backend()?;
    let token = ssr::rater_token(&slug).await.unwrap_or_default();
    backend
        .continue_after_reveal(&slug, &token)
        .await
        .map_err(ssr::fail)
}

/// The login form: exchanges a token for a session. The cookie carries the session's random id,
/// never the token.
#[server(prefix = "/rpc", endpoint = "admin_login")]
pub async fn admin_login(token: String) -> Result<(), ServerFnError> {
    let backend = ssr::backend()?;
    let (session, _) = backend.admin_login(token.trim()).await.map_err(ssr::fail)?;
    // The cookie lives as long as the session can (the server ends it earlier when idle).
    ssr::set_cookie(ADMIN_COOKIE, &session, ADMIN_SESSION_MAX_AGE_SECONDS).await;
    leptos_axum::redirect("/admin");
    Ok(())
}

/// The log-out button: ends the session on the server and clears the cookie.
#[server(prefix = "/rpc", endpoint = "admin_logout")]
pub async fn admin_logout() -> Result<(), ServerFnError> {
    let backend = ssr::backend()?;
    if let Some(session) = ssr::cookie(ADMIN_COOKIE).await.filter(|s| !s.is_empty()) {
        backend.admin_logout(&session).await.map_err(ssr::fail)?;
    }
    ssr::set_cookie(ADMIN_COOKIE, "", 0).await;
    leptos_axum::redirect("/admin");
    Ok(())
}

/// Who is logged in (name and role); `None` when no one is.
#[server(prefix = "/rpc", endpoint = "admin_whoami")]
pub async fn admin_whoami() -> Result<Option<Principal>, ServerFnError> {
    let backend = ssr::backend()?;
    Ok(ssr::admin_principal(&backend).await)
}

/// The per-person admin tokens; `None` unless the browser is logged in as the owner.
#[server(prefix = "/rpc", endpoint = "admin_tokens")]
pub async fn admin_tokens() -> Result<Option<Vec<AdminTokenView>>, ServerFnError> {
    let backend = ssr::backend()?;
    let Some(principal) = ssr::admin_principal(&backend).await else {
        return Ok(None);
    };
    if backend
        .authorize(&principal, Permission::ManageTokens)
        .await
        .is_err()
    {
        return Ok(None);
    }
    backend
        .admin_tokens(&principal)
        .await
        .map(Some)
        .map_err(ssr::fail)
}

/// The newest entries of the audit log (who did what, when); `None` unless the browser is logged in
/// as the owner.
#[server(prefix = "/rpc", endpoint = "admin_audit")]
pub async fn admin_audit() -> Result<Option<Vec<AuditEntry>>, ServerFnError> {
    let backend = ssr::backend()?;
    let Some(principal) = ssr::admin_principal(&backend).await else {
        return Ok(None);
    };
    if backend
        .authorize(&principal, Permission::ReadAudit)
        .await
        .is_err()
    {
        return Ok(None);
    }
    backend
        .audit_log(&principal, AUDIT_PAGE_ROWS)
        .await
        .map(Some)
        .map_err(ssr::fail)
}

/// How many of the newest audit entries the admin page shows (the JSON API and `moat audit` give
/// up to 10,000).
pub const AUDIT_PAGE_ROWS: i64 = 200;

/// The owner's form: creates a per-person token and returns it (shown once on the page).
/// `studies` is a comma- or space-separated list of study slugs.
#[server(prefix = "/rpc", endpoint = "create_admin_token")]
pub async fn create_admin_token(
    name: String,
    role: String,
    studies: Option<String>,
) -> Result<String, ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::ManageTokens).await?;
    let studies = slug_list(studies.as_deref());
    backend
        .create_admin_token(&principal, &name, &role, &studies)
        .await
        .map_err(ssr::fail)
}

/// The owner's form on a token's row: replaces the studies granted to it (comma- or
/// space-separated slugs; empty: none).
#[server(prefix = "/rpc", endpoint = "set_admin_token_studies")]
pub async fn set_admin_token_studies(
    name: String,
    studies: Option<String>,
) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::ManageTokens).await?;
    backend
        .set_admin_token_studies(&principal, &name, &slug_list(studies.as_deref()))
        .await
        .map_err(ssr::fail)
}

/// Study slugs typed into a form field, separated by commas or spaces.
#[cfg(feature = "ssr")]
fn slug_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[server(prefix = "/rpc", endpoint = "revoke_admin_token")]
pub async fn revoke_admin_token(name: String) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::ManageTokens).await?;
    backend
        .revoke_admin_token(&principal, &name)
        .await
        .map_err(ssr::fail)
}

/// The server's model registry; `None` when the browser is not logged in as admin (or its role may
/// not see it).
#[server(prefix = "/rpc", endpoint = "admin_models")]
pub async fn admin_models() -> Result<Option<RegistryView>, ServerFnError> {
    let backend = ssr::backend()?;
    let Some(principal) = ssr::admin_principal(&backend).await else {
        return Ok(None);
    };
    if backend
        .authorize(&principal, Permission::ReadModels)
        .await
        .is_err()
    {
        return Ok(None);
    }
    Ok(Some(backend.model_registry().await))
}

/// Saves an edited model registry (checked, its models loaded, then written to the file).
#[server(prefix = "/rpc", endpoint = "save_models")]
pub async fn save_models(registry: String) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::ManageModels).await?;
    backend
        .save_model_registry(&registry)
        .await
        .map_err(ssr::fail)?;
    backend
        .audit(&principal.name, "registry.save", "models", "")
        .await;
    Ok(())
}

/// The studies the logged-in principal may see; `None` when the browser is not logged in as admin.
#[server(prefix = "/rpc", endpoint = "admin_studies")]
pub async fn admin_studies() -> Result<Option<Vec<StudySummary>>, ServerFnError> {
    let backend = ssr::backend()?;
    let Some(principal) = ssr::admin_principal(&backend).await else {
        return Ok(None);
    };
    backend
        .list_studies_for(&principal)
        .await
        .map(Some)
        .map_err(ssr::fail)
}

pub use crate::settings::SettingsInput;

/// The settings a form posted, or a 400 naming every field that is wrong (the form shows each
/// message beside its field).
#[cfg(feature = "ssr")]
fn parse_settings(input: &SettingsInput) -> Result<StudySettings, ServerFnError> {
    input.parse().map_err(|errors| {
        ssr::fail(crate::backend::BackendError::BadRequest(
            crate::settings::join_errors(&errors),
        ))
    })
}

#[server(prefix = "/rpc", endpoint = "create_study")]
pub async fn create_study(
    slug: String,
    title: String,
    instructions: String,
    settings: SettingsInput,
) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::CreateStudy).await?;
    let study = NewStudy {
        slug: slug.clone(),
        title,
        instructions,
        settings: parse_settings(&settings)?,
    };
    backend
        .create_study_for(&principal, study)
        .await
        .map_err(ssr::fail)?;
    leptos_axum::redirect(&format!("/admin/studies/{slug}"));
    Ok(())
}

/// The admin's settings form: replaces the title, instructions and settings of a study.
#[server(prefix = "/rpc", endpoint = "update_study")]
pub async fn update_study(
    slug: String,
    title: String,
    instructions: String,
    settings: SettingsInput,
) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::WriteStudy(&slug)).await?;
    let changes = StudyChanges {
        title,
        instructions,
        settings: parse_settings(&settings)?,
    };
    backend
        .update_study(&slug, changes)
        .await
        .map_err(ssr::fail)?;
    backend
        .audit(&principal.name, "study.update", &slug, "settings form")
        .await;
    leptos_axum::redirect(&format!("/admin/studies/{slug}?notice=Settings%20saved"));
    Ok(())
}

#[server(prefix = "/rpc", endpoint = "set_study_status")]
pub async fn set_study_status(slug: String, status: String) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::WriteStudy(&slug)).await?;
    backend
        .set_study_status(&slug, &status)
        .await
        .map_err(ssr::fail)?;
    backend
        .audit(&principal.name, "study.status", &slug, &status)
        .await;
    Ok(())
}

#[server(prefix = "/rpc", endpoint = "study_report")]
pub async fn get_study_report(slug: String) -> Result<StudyReport, ServerFnError> {
    let (backend, _) = ssr::require_admin(Permission::ReadStudy(&slug)).await?;
    backend.study_report(&slug).await.map_err(ssr::fail)
}

#[server(prefix = "/rpc", endpoint = "leaderboard")]
pub async fn get_leaderboard(
    slug: String,
    drop_flagged: bool,
    category: Option<String>,
    style_control: bool,
) -> Result<LeaderboardView, ServerFnError> {
    let (backend, _) = ssr::require_admin(Permission::ReadStudy(&slug)).await?;
    backend
        .leaderboard_page(
            &slug,
            LeaderboardPageQuery {
                drop_flagged,
                category,
                style_control,
            },
        )
        .await
        .map_err(ssr::fail)
}

#[server(prefix = "/rpc", endpoint = "set_rater_status")]
pub async fn set_rater_status(
    slug: String,
    pseudonym: String,
    status: String,
) -> Result<(), ServerFnError> {
    let (backend, principal) = ssr::require_admin(Permission::WriteStudy(&slug)).await?;
    backend
        .set_rater_status(&slug, &pseudonym, &status)
        .await
        .map_err(ssr::fail)?;
    backend
        .audit(
            &principal.name,
            "rater.status",
            &format!("{slug}/{pseudonym}"),
            &status,
        )
        .await;
    Ok(())
}
