//! The HTTP surface: the Leptos pages and server functions, the JSON API under `/api/v1/`, and the
//! admin upload form. Errors are JSON `{ "error": "…" }`; a 5xx never carries its cause.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use moat_app::api::ssr::cookie_value;
use moat_app::backend::{BackendError, SharedBackend};
use moat_app::wire::StudyChanges;
use moat_app::wire::{NewStudy, Permission, Principal};
use moat_app::{shell, App};
use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::StudySlug;
use crate::export::{export_study, ExportRequest};
use crate::import::{import_jsonl, ImportError};
use crate::incident::internal;
use crate::service::AppService;

/// An API error: status and a message meant for the client.
pub struct ApiError(StatusCode, String);

/// The body of every error the JSON API answers with.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person; never an internal cause (a 5xx says only that the log has it).
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        ApiError(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error.to_string(),
        )
    }
}

/// A query string that does not parse is the client's mistake, answered as JSON like every other.
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid query string: {}", rejection.body_text()),
        )
    }
}

impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        match error {
            ImportError::Input(_) | ImportError::Study(_) | ImportError::Io(_) => {
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            ImportError::Store(store) => BackendError::from(store).into(),
        }
    }
}

/// Who an admin request comes from: a token as `Authorization: Bearer …` (the configured owner
/// token or a per-person token), or the session id in the admin cookie. Handlers then ask
/// `Backend::authorize` whether this principal may do what the route does.
pub struct Admin(pub Principal);

impl FromRequestParts<Arc<AppService>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        backend: &Arc<AppService>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let principal = match bearer {
            Some(token) => backend.admin_bearer(token.trim()).await,
            None => match cookie_value(&parts.headers, moat_app::api::ADMIN_COOKIE) {
                Some(session) => backend.admin_session(session.trim()).await,
                None => None,
            },
        };
        principal.map(Admin).ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "admin token required (Authorization: Bearer TOKEN, or log in at /admin)".into(),
            )
        })
    }
}

impl Admin {
    /// This principal, if it may do `permission` (else 403, or 404 for a study it may not see).
    async fn may(
        self,
        backend: &AppService,
        permission: Permission<'_>,
    ) -> Result<Principal, ApiError> {
        backend.authorize(&self.0, permission).await?;
        Ok(self.0)
    }
}

/// How much and how slowly a client may upload, and how long an ordinary request may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest upload (import, battles file) spooled to disk.
    pub upload_max_bytes: u64,
    /// An upload that sends nothing for this long is dropped (a slow-body attack holds nothing).
    pub upload_idle: std::time::Duration,
    /// An ordinary request (not a stream, not an upload) that takes longer is answered 503.
    pub request_timeout: std::time::Duration,
    /// A connection must deliver a request's headers within this time, or it is closed (slowloris).
    pub header_read: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upload_max_bytes: 8 << 30,
            upload_idle: std::time::Duration::from_secs(30),
            request_timeout: std::time::Duration::from_secs(60),
            header_read: std::time::Duration::from_secs(30),
        }
    }
}

/// Whether a path streams or uploads and so must not be cut off by the request timeout: model
/// serving (`/v1/*`, streamed completions and long whole ones; the model client has its own
/// timeouts), battle events, an arena prompt posted without JavaScript (it waits for both answers),
/// and uploads (which have their own idle timeout). Exports answer at once and stream their body,
/// which the timeout never covers.
pub fn exempt_from_timeout(path: &str) -> bool {
    path.starts_with("/v1/")
        || path == "/rpc/arena_prompt"
        || path == "/api/v1/leaderboard"
        || (path.starts_with("/s/") && path.ends_with("/events"))
        || ((path.starts_with("/api/v1/studies/") || path.starts_with("/admin/studies/"))
            && path.ends_with("/import"))
}

/// Answers 503 when an ordinary request takes longer than [`Limits::request_timeout`].
pub async fn request_timeout(
    axum::Extension(limits): axum::Extension<Limits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if exempt_from_timeout(request.uri().path()) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, "request timed out");
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {} s and was stopped",
                    limits.request_timeout.as_secs()
                ),
            )
            .into_response()
        }
    }
}

/// Writes an upload to a temporary file, chunk by chunk, before anything takes the store's write
/// lock: a slow or huge upload then holds a file, not SQLite's single writer. Refuses more than
/// `limits.upload_max_bytes` and a sender that goes quiet for `limits.upload_idle`.
pub async fn spool_upload<S, E>(
    mut stream: S,
    limits: &Limits,
) -> Result<tempfile::NamedTempFile, ApiError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use tokio::io::AsyncWriteExt;
    // The spool is the server's own file: failing to write it is not the client's mistake.
    let io = |e: std::io::Error| ApiError::from(internal("spooling an upload", &e));
    let spool = tempfile::NamedTempFile::new().map_err(io)?;
    let mut file = tokio::fs::File::from_std(spool.reopen().map_err(io)?);
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(limits.upload_idle, stream.next()).await {
            Err(_) => {
                return Err(ApiError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "upload stopped: nothing arrived for {} s (after {written} bytes)",
                        limits.upload_idle.as_secs()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("upload failed after {written} bytes: {error}"),
                ))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        written += chunk.len() as u64;
        if written > limits.upload_max_bytes {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "upload refused: larger than the server's limit of {} bytes (--max-upload-bytes)",
                    limits.upload_max_bytes
                ),
            ));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(spool)
}

pub fn router(
    backend: Arc<AppService>,
    site: &crate::site::Site,
    leptos_options: LeptosOptions,
) -> Router {
    let routes = generate_route_list(App);
    let shared: SharedBackend = backend.clone();
    let pages = Router::new()
        .leptos_routes_with_context(
            &leptos_options,
            routes,
            move || {
                provide_context(shared.clone());
                crate::security::provide_request_nonce();
            },
            {
                let options = leptos_options.clone();
                move || shell(options.clone())
            },
        )
        .fallback(leptos_axum::file_and_error_handler_with_context(
            crate::security::provide_request_nonce,
            shell,
        ))
        .with_state(leptos_options)
        .layer(axum::middleware::from_fn(
            server_function_input_errors_are_400,
        ));
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .route(
            "/admin/studies/{slug}/import",
            // The form's file is spooled by `spool_upload`, which enforces its own limit.
            post(import_form).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .with_state(backend);
    let api = match site {
        crate::site::Site::Assets(assets) => api.merge(crate::site::router(assets.clone())),
        // The hydration module is 1.2 MB of wasm, 0.37 MB gzipped: `scripts/build.sh` writes `.gz`
        // copies beside it, served to browsers that accept gzip (raters on slow connections wait 3×
        // less).
        crate::site::Site::Dir(dir) => api.nest_service(
            "/pkg",
            tower_http::services::ServeDir::new(dir.join("pkg")).precompressed_gzip(),
        ),
    };
    api.merge(pages)
}

/// A server function whose arguments do not decode (a form that is not UTF-8, a missing field)
/// is the client's mistake: Leptos answers it 500 with the error kind first in the body
/// (`Deserialization|…`), and this makes it the 400 it is. Found by the property tests
/// (`properties::server_function_forms_are_refused_with_a_4xx_never_a_5xx`). Other 500s stay.
async fn server_function_input_errors_are_400(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_server_function = request.uri().path().starts_with("/rpc/");
    let response = next.run(request).await;
    if !is_server_function || response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are one short message; anything longer is not one of these and stays a 500.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    const CLIENT_ERRORS: [&[u8]; 3] = [b"Deserialization|", b"Args|", b"MissingArg|"];
    if CLIENT_ERRORS.iter().any(|kind| bytes.starts_with(kind)) {
        parts.status = StatusCode::BAD_REQUEST;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The OpenAPI document's frame: title, the bearer scheme every operation requires unless it says
/// otherwise, and the error schema. The operations come from [`api_routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Moat JSON API",
        description = "The researcher's API: studies, imports, exports, results and raters. \
            Every operation but this document's requires the admin token as `Authorization: Bearer TOKEN`. \
            Errors are JSON `{\"error\": \"...\"}`; a 5xx never carries its cause. \
            Under `/v1`, the model registry served as an OpenAI-compatible server: an API key or the \
            admin token, and the OpenAI protocol's own error shape."
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("the admin token (`moat serve --admin-token`)"))
                        .build(),
                ),
            );
    }
}

/// Every route under `/api/v1/`: the router and the OpenAPI document are built from these entries
/// (each handler's `#[utoipa::path]`), so a route cannot be served without being described.
/// `api::openapi_document_lists_every_api_route` also checks that no `/api/v1` path is routed
/// anywhere else.
pub fn api_routes() -> OpenApiRouter<Arc<AppService>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_document))
        .routes(routes!(list_studies, create_study))
        .routes(routes!(study_report, update_study))
        .routes(routes!(set_status))
        .routes(routes!(import_body))
        .routes(routes!(export))
        .routes(routes!(study_leaderboard))
        .routes(routes!(battles_leaderboard))
        .routes(routes!(set_rater_status))
        .routes(routes!(verify_completion_code))
        .routes(routes!(list_admin_tokens, create_admin_token))
        .routes(routes!(revoke_admin_token))
        .routes(routes!(set_admin_token_studies))
        .routes(routes!(audit_log))
        .routes(routes!(whoami))
        .routes(routes!(logout))
}

/// The OpenAPI 3.1 description of the JSON API, built once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        api_routes()
            .into_openapi()
            .merge_from(<crate::openai_api::OpenAiDoc as OpenApi>::openapi())
    })
}

/// `GET /api/v1/openapi.json`: public, since it describes the API and holds nothing secret.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = serde_json::Value))
)]
async fn openapi_document() -> Response {
    Json(openapi()).into_response()
}

/// The slug path parameter, as every study route names it.
const SLUG: &str = "the study's slug (lowercase letters, digits and dashes)";

#[utoipa::path(
    get,
    path = "/api/v1/studies",
    tag = "studies",
    responses(
        (status = 200, description = "Every study", body = Vec<moat_app::wire::StudySummary>),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
    )
)]
async fn list_studies(
    Admin(who): Admin,
    State(backend): State<Arc<AppService>>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(backend.list_studies_for(&who).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/studies",
    tag = "studies",
    request_body = NewStudy,
    responses(
        (status = 201, description = "Created", body = moat_app::wire::StudySummary),
        (status = 400, description = "Invalid study (the message names the field)", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Neither the bearer token nor an Origin or Referer naming this host (the CSRF check)", body = ErrorBody),
        (status = 409, description = "The slug is taken", body = ErrorBody),
    )
)]
async fn create_study(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    body: Result<Json<NewStudy>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(study) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid study: {}", e.body_text()),
        )
    })?;
    let who = admin.may(&backend, Permission::CreateStudy).await?;
    Ok((
        StatusCode::CREATED,
        Json(backend.create_study_for(&who, study).await?),
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/studies/{slug}",
    tag = "studies",
    params(("slug" = String, Path, description = SLUG, example = "demo")),
    request_body = StudyChanges,
    responses(
        (status = 200, description = "The study after the change", body = moat_app::wire::StudySummary),
        (status = 400, description = "Invalid changes (the message names the field)", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Neither the bearer token nor an Origin or Referer naming this host (the CSRF check)", body = ErrorBody),
        (status = 404, description = "No such study", body = ErrorBody),
    )
)]
async fn update_study(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path(slug): Path<String>,
    body: Result<Json<StudyChanges>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(changes) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid study changes: {}", e.body_text()),
        )
    })?;
    let who = admin.may(&backend, Permission::WriteStudy(&slug)).await?;
    let summary = backend.update_study(&slug, changes).await?;
    backend.audit(&who.name, "study.update", &slug, "api").await;
    Ok(Json(summary))
}

#[utoipa::path(
    get,
    path = "/api/v1/studies/{slug}",
    tag = "studies",
    params(("slug" = String, Path, description = SLUG, example = "demo")),
    responses(
        (status = 200, description = "Progress, results, raters and flagged responses", body = moat_app::wire::StudyReport),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such study", body = ErrorBody),
    )
)]
async fn study_report(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    admin.may(&backend, Permission::ReadStudy(&slug)).await?;
    Ok(Json(backend.study_report(&slug).await?))
}

/// A new status: for a study `draft`, `open` or `closed`; for a rater `active` or `excluded`.
#[derive(Deserialize, ToSchema)]
struct StatusBody {
    #[schema(examples("open", "closed", "draft", "active", "excluded"))]
    status: String,
}

/// A study's status after a change.
#[derive(Serialize, ToSchema)]
struct StudyStatusAnswer {
    slug: String,
    status: String,
}

/// A rater's status after a change.
#[derive(Serialize, ToSchema)]
struct RaterStatusAnswer {
    rater: String,
    status: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/studies/{slug}/status",
    tag = "studies",
    params(("slug" = String, Path, description = SLUG, example = "demo")),
    request_body(content = StatusBody, description = "`draft`, `open` or `closed`"),
    responses(
        (status = 200, description = "The new status", body = StudyStatusAnswer),
        (status = 400, description = "Not a status, or a malformed body", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Neither the bearer token nor an Origin or Referer naming this host (the CSRF check)", body = ErrorBody),
        (status = 404, description = "No such study", body = ErrorBody),
    )
)]
async fn set_status(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path(slug): Path<String>,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let who = admin.may(&backend, Permission::WriteStudy(&slug)).await?;
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    backend.set_study_status(&slug, &body.status).await?;
    backend
        .audit(&who.name, "study.status", &slug, &body.status)
        .await;
    Ok(Json(StudyStatusAnswer {
        slug,
        status: body.status,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// `moat` (the JSONL format, default), `hh-rlhf`, `oasst`, `arena`, `trl` or `votes`.
    #[serde(default = "default_import_format")]
    #[param(default = "moat")]
    format: String,
}

fn default_import_format() -> String {
    "moat".into()
}

/// Imports a spooled upload in `format` (`moat` JSONL or a public dataset's format); only now is the
/// store's write lock taken.
async fn import_spooled(
    backend: &AppService,
    slug: &StudySlug,
    format: &str,
    spool: &tempfile::NamedTempFile,
) -> Result<(String, String), ApiError> {
    let both = |json: Result<String, serde_json::Error>, text: String| {
        json.map(|json| (json, text))
            .map_err(|e| ApiError::from(internal("encoding an import report", &e)))
    };
    if format == "moat" {
        let file = tokio::fs::File::open(spool.path())
            .await
            .map_err(|e| ApiError::from(internal("opening a spooled upload", &e)))?;
        let report = import_jsonl(&backend.store, slug, BufReader::new(file), &[]).await?;
        return both(serde_json::to_string(&report), report.to_string());
    }
    let format = moat_exports::import::ImportFormat::parse(format).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown import format {format:?}; use moat, hh-rlhf, oasst, arena, trl or votes"
            ),
        )
    })?;
    let report =
        crate::import::import_dataset(&backend.store, slug, format, spool.path(), &[]).await?;
    both(serde_json::to_string(&report), report.to_string())
}

/// What an import did: the JSONL format's report, or a public dataset's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
// Only its schema is used: `import_spooled` writes the JSON of one of these itself.
#[allow(dead_code)]
enum ImportAnswer {
    Moat(crate::import::ImportReport),
    Dataset(crate::import::DatasetImportReport),
}

/// `POST /api/v1/studies/{slug}/import[?format=hh-rlhf|oasst|arena|trl|votes]` with the file as the
/// body: spooled to a temporary file, then imported in one transaction.
#[utoipa::path(
    post,
    path = "/api/v1/studies/{slug}/import",
    tag = "studies",
    params(("slug" = String, Path, description = SLUG, example = "demo"), ImportQuery),
    request_body(
        content = String,
        description = "The file: JSON Lines for `moat` (a header line with the models, then one prompt per line), or the dataset's own format (JSON Lines, gzip or Parquet)",
        content_type = "text/plain"
    ),
    responses(
        (status = 200, description = "Imported, all in one transaction", body = ImportAnswer),
        (status = 400, description = "Bad slug or format", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Neither the bearer token nor an Origin or Referer naming this host (the CSRF check)", body = ErrorBody),
        (status = 422, description = "Nothing was imported: the message names the line and field", body = ErrorBody),
    )
)]
async fn import_body(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    axum::Extension(limits): axum::Extension<Limits>,
    Path(slug): Path<String>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let who = admin.may(&backend, Permission::WriteStudy(&slug)).await?;
    let slug = StudySlug::parse(&slug).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let spool = spool_upload(body.into_data_stream(), &limits).await?;
    let (report, _) = import_spooled(&backend, &slug, &query.format, &spool).await?;
    backend
        .audit(&who.name, "study.import", slug.as_str(), &query.format)
        .await;
    Ok(([(header::CONTENT_TYPE, "application/json")], report).into_response())
}

/// The admin page's upload form (multipart, field `file`); answers with a redirect back to the page.
async fn import_form(
    State(backend): State<Arc<AppService>>,
    axum::Extension(limits): axum::Extension<Limits>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let session = cookie_value(&headers, moat_app::api::ADMIN_COOKIE).unwrap_or_default();
    let Some(who) = backend.admin_session(&session).await else {
        return Redirect::to("/admin").into_response();
    };
    let page = format!("/admin/studies/{slug}");
    let outcome: Result<String, String> = async {
        backend
            .authorize(&who, Permission::WriteStudy(&slug))
            .await
            .map_err(|e| e.to_string())?;
        let slug = StudySlug::parse(&slug)?;
        let mut format = "moat".to_string();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| format!("upload failed: {e}"))?
        {
            if field.name() == Some("format") {
                format = field
                    .text()
                    .await
                    .map_err(|e| format!("upload failed: {e}"))?;
                continue;
            }
            if field.name() != Some("file") {
                continue;
            }
            let spool = spool_upload(field, &limits).await.map_err(|e| e.1)?;
            let (_, report) = import_spooled(&backend, &slug, &format, &spool)
                .await
                .map_err(|e| e.1)?;
            backend
                .audit(&who.name, "study.import", slug.as_str(), &format)
                .await;
            return Ok(report);
        }
        Err("the form has no file".to_string())
    }
    .await;
    let (key, text) = match outcome {
        Ok(report) => ("notice", format!("Imported: {report}")),
        Err(error) => ("error", format!("Nothing was imported: {error}")),
    };
    Redirect::to(&format!("{page}?{key}={}", percent_encode(&text))).into_response()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// `trl` (default), `votes`, `dpo`, `reward`, `arena`, or another format `moat export` knows.
    #[serde(default = "default_format")]
    #[param(default = "trl")]
    format: String,
    /// jsonl (default), csv or parquet.
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    conversational: bool,
    /// Comma-separated model names; both models of a comparison must be listed.
    #[serde(default)]
    models: Option<String>,
    from: Option<String>,
    until: Option<String>,
    #[serde(default)]
    exclude_ties: bool,
    #[serde(default)]
    exclude_both_bad: bool,
    #[serde(default)]
    majority: bool,
    min_agreement: Option<f64>,
    #[serde(default)]
    include_excluded_raters: bool,
    /// Leave out votes on identity-flagged comparisons.
    #[serde(default)]
    exclude_flagged: bool,
}

fn default_format() -> String {
    "trl".into()
}

impl ExportQuery {
    fn request(&self) -> Result<ExportRequest, crate::export::ExportError> {
        let container = match self.container.as_deref().unwrap_or("jsonl") {
            "jsonl" => moat_exports::table::Container::Jsonl,
            "csv" => moat_exports::table::Container::Csv,
            "parquet" => moat_exports::table::Container::Parquet,
            other => {
                return Err(crate::export::ExportError::Invalid(format!(
                    "container must be jsonl, csv or parquet, got {other:?}"
                )))
            }
        };
        let choices = crate::export::ExportChoices {
            container,
            conversational: self.conversational,
            models: self
                .models
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect(),
            from: self.from.clone(),
            until: self.until.clone(),
            exclude_ties: self.exclude_ties,
            exclude_both_bad: self.exclude_both_bad,
            majority: self.majority,
            min_agreement: self.min_agreement,
        };
        ExportRequest::with_choices(&self.format, &choices)
    }
}

/// Streams the export as it is produced; a failure midway aborts the transfer rather than ending it
/// cleanly, so a client never mistakes a truncated file for a complete one.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{slug}/export",
    tag = "studies",
    params(("slug" = String, Path, description = SLUG, example = "demo"), ExportQuery),
    responses(
        (status = 200, description = "The votes as a file, streamed", content(
            (String = "application/jsonl; charset=utf-8"),
            (String = "text/csv; charset=utf-8"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        )),
        (status = 400, description = "Unknown format, container or option", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such study", body = ErrorBody),
    )
)]
async fn export(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path(slug): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let who = admin.may(&backend, Permission::ReadStudy(&slug)).await?;
    let mut request = query
        .request()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let study = backend
        .store
        .study(&slug)
        .await
        .map_err(BackendError::from)?;
    if !query.include_excluded_raters {
        request
            .exclude_marked_raters(&backend.store, &study)
            .await
            .map_err(|e| ApiError::from(internal("reading an export's exclusions", &e)))?;
    }
    if query.exclude_flagged {
        request
            .exclude_flagged_votes(&backend.store, &study)
            .await
            .map_err(|e| ApiError::from(internal("reading an export's exclusions", &e)))?;
    }
    backend
        .audit(&who.name, "study.export", &slug, request.format.as_str())
        .await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (done_sender, done_receiver) = tokio::sync::oneshot::channel();
    let task_backend = backend.clone();
    let content_type = request.content_type();
    let filename = format!(
        "{slug}-{}.{}",
        request.format.as_str(),
        request.file_extension()
    );
    tokio::spawn(async move {
        let result = export_study(&task_backend.store, &study, &request, sender).await;
        if let Err(error) = &result {
            tracing::error!(%error, "export failed");
        }
        let _ = done_sender.send(result.is_ok());
    });
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), receiver))
    });
    let ending = futures::stream::once(async move {
        match done_receiver.await {
            Ok(true) => None,
            _ => Some(Err(std::io::Error::other("export failed"))),
        }
    })
    .filter_map(|item| async move { item });
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(chunks.chain(ending)),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LeaderboardQuery {
    /// Seed of the bootstrap (default 0): the same seed gives the same intervals.
    seed: Option<u64>,
    /// Bootstrap rounds (default 1,000).
    rounds: Option<usize>,
    /// Fit the Davidson model (ties as their own outcome) instead of Bradley–Terry.
    davidson: Option<bool>,
    /// Count votes on identity-flagged comparisons (left out by default).
    include_flagged: Option<bool>,
    /// Leave out the votes of raters the rigging and carelessness tests flag (counted by default).
    drop_flagged: Option<bool>,
    /// Only the votes of this category (an imported category, or an automatic tag: code, math,
    /// non-english, multi-turn, long-query).
    category: Option<String>,
    /// De-duplicate prompts as LMArena does (default: on for arena studies).
    dedup: Option<bool>,
    /// Reweight over-represented pairs of models (1/max(n, 50) per battle).
    reweight: Option<bool>,
    /// Recompute the ratings as votes arrived: `day` or a number of votes.
    history: Option<String>,
}

impl LeaderboardQuery {
    fn options(&self) -> moat_stats::LeaderboardOptions {
        moat_stats::LeaderboardOptions {
            reweight_pairs: self.reweight == Some(true),
            ..crate::analysis::leaderboard_options(
                self.seed,
                self.rounds,
                self.davidson == Some(true),
            )
        }
    }

    fn study_query(&self) -> Result<crate::analysis::StudyQuery, ApiError> {
        Ok(crate::analysis::StudyQuery {
            category: self.category.clone().filter(|c| !c.trim().is_empty()),
            deduplicate: self.dedup,
            history_step: self
                .history
                .as_deref()
                .map(moat_stats::HistoryStep::parse)
                .transpose()
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?,
            history_window: 1000,
            ..Default::default()
        })
    }
}

/// `GET /api/v1/studies/{slug}/leaderboard?seed=&rounds=&davidson=&include_flagged=&drop_flagged=`:
/// ratings and every study question, with the raters the rigging tests flag.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{slug}/leaderboard",
    tag = "results",
    params(("slug" = String, Path, description = SLUG, example = "demo"), LeaderboardQuery),
    responses(
        (status = 200, description = "Ratings with intervals, parity, distinguishability, bias and agreement", body = serde_json::Value),
        (status = 400, description = "An option out of range", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such study", body = ErrorBody),
    )
)]
async fn study_leaderboard(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path(slug): Path<String>,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    admin.may(&backend, Permission::ReadStudy(&slug)).await?;
    let (_, analysis) = backend
        .analysis_with(
            &slug,
            query.options(),
            query.include_flagged == Some(true),
            query.drop_flagged == Some(true),
            query.study_query()?,
        )
        .await?;
    Ok(Json(analysis))
}

/// `POST /api/v1/leaderboard` with a Chatbot Arena battles file (JSON array or JSONL) as the body,
/// spooled to disk first (a battles file can be gigabytes; axum's 2 MB default body limit does not
/// apply to a streamed body).
#[utoipa::path(
    post,
    path = "/api/v1/leaderboard",
    tag = "results",
    params(LeaderboardQuery),
    request_body(
        content = String,
        description = "Chatbot Arena battles: a JSON array or JSON Lines of `{model_a, model_b, winner}`",
        content_type = "text/plain"
    ),
    responses(
        (status = 200, description = "Ratings with intervals", body = serde_json::Value),
        (status = 400, description = "An option out of range, or a body that is not UTF-8", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Neither the bearer token nor an Origin or Referer naming this host (the CSRF check)", body = ErrorBody),
        (status = 422, description = "The battles do not parse (the message names the line)", body = ErrorBody),
    )
)]
async fn battles_leaderboard(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    axum::Extension(limits): axum::Extension<Limits>,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    admin.may(&backend, Permission::Compute).await?;
    let options = query.options();
    options
        .validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let spool = spool_upload(body.into_data_stream(), &limits).await?;
    let board = tokio::task::spawn_blocking(move || {
        // Read as it parses: the file's text is never held whole.
        let battles = moat_stats::battles::read_battles_file(spool.path())
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        Ok::<_, ApiError>(moat_stats::leaderboard(&battles, &options))
    })
    .await
    .map_err(|e| ApiError::from(internal("leaderboard task failed", &e)))??;
    Ok(Json(board))
}

/// `POST /api/v1/studies/{slug}/raters/{pseudonym}/status` with `{"status": "excluded" | "active"}`:
/// excluded raters are left out of the leaderboard, the statistics and (by default) the exports.
#[utoipa::path(
    post,
    path = "/api/v1/studies/{slug}/raters/{pseudonym}/status",
    tag = "studies",
    params(
        ("slug" = String, Path, description = SLUG, example = "demo"),
        ("pseudonym" = String, Path, description = "the rater's pseudonym, as the study report lists it"),
    ),
    request_body(content = StatusBody, description = "`active` or `excluded`"),
    responses(
        (status = 200, description = "The rater's new status", body = RaterStatusAnswer),
        (status = 400, description = "Not a status, or a malformed body", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Neither the bearer token nor an Origin or Referer naming this host (the CSRF check)", body = ErrorBody),
        (status = 404, description = "No such study or rater", body = ErrorBody),
    )
)]
async fn set_rater_status(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path((slug, pseudonym)): Path<(String, String)>,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let who = admin.may(&backend, Permission::WriteStudy(&slug)).await?;
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    backend
        .set_rater_status(&slug, &pseudonym, &body.status)
        .await?;
    backend
        .audit(
            &who.name,
            "rater.status",
            &format!("{slug}/{pseudonym}"),
            &body.status,
        )
        .await;
    Ok(Json(RaterStatusAnswer {
        rater: pseudonym,
        status: body.status,
    }))
}

/// `GET /api/v1/studies/{slug}/completion-codes/{code}`: the session a completion code belongs to
/// (each session has its own), or 404.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{slug}/completion-codes/{code}",
    tag = "raters",
    params(
        ("slug" = String, Path, description = SLUG, example = "demo"),
        ("code" = String, Path, description = "a completion code a participant submitted", example = "MOAT-DEMO-0123456789AB"),
    ),
    responses(
        (status = 200, description = "The session the code belongs to", body = moat_app::wire::SessionByCode),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No session of the study has this code, or no such study", body = ErrorBody),
    )
)]
async fn verify_completion_code(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    Path((slug, code)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    admin.may(&backend, Permission::ReadStudy(&slug)).await?;
    Ok(Json(backend.verify_completion_code(&slug, &code).await?))
}

#[derive(Deserialize, ToSchema)]
struct NewAdminToken {
    name: String,
    role: String,
    #[serde(default)]
    studies: Vec<String>,
}

/// `POST /api/v1/admin-tokens` with `{"name", "role", "studies": [slug…]}` (owner only): the token is
/// in the answer, once.
#[utoipa::path(
    post,
    path = "/api/v1/admin-tokens",
    tag = "admin",
    request_body = NewAdminToken,
    responses(
        (status = 201, description = "Created: `{name, role, studies, token}`; the token is shown only here", body = serde_json::Value),
        (status = 400, description = "A bad name, role or study list", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Not the owner, or the CSRF check", body = ErrorBody),
        (status = 409, description = "A token of that name exists", body = ErrorBody),
    )
)]
async fn create_admin_token(
    Admin(who): Admin,
    State(backend): State<Arc<AppService>>,
    body: Result<Json<NewAdminToken>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    backend.authorize(&who, Permission::ManageTokens).await?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid admin token: {}", e.body_text()),
        )
    })?;
    let token = backend
        .create_admin_token(&who, &body.name, &body.role, &body.studies)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "name": body.name.trim(), "role": body.role.trim(), "studies": body.studies, "token": token
        })),
    ))
}

/// `GET /api/v1/admin-tokens` (owner only): names, roles, studies, use; never the tokens.
#[utoipa::path(
    get,
    path = "/api/v1/admin-tokens",
    tag = "admin",
    responses(
        (status = 200, description = "Every per-person token's name, role, studies and use", body = serde_json::Value),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
    )
)]
async fn list_admin_tokens(
    Admin(who): Admin,
    State(backend): State<Arc<AppService>>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(backend.admin_tokens(&who).await?))
}

/// `DELETE /api/v1/admin-tokens/{name}` (owner only): the token and its sessions stop working.
#[utoipa::path(
    delete,
    path = "/api/v1/admin-tokens/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "the token's name", example = "alice")),
    responses(
        (status = 200, description = "Revoked", body = serde_json::Value),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Not the owner, or the CSRF check", body = ErrorBody),
        (status = 404, description = "No token of that name", body = ErrorBody),
    )
)]
async fn revoke_admin_token(
    Admin(who): Admin,
    State(backend): State<Arc<AppService>>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    backend.revoke_admin_token(&who, &name).await?;
    Ok(Json(serde_json::json!({ "name": name, "revoked": true })))
}

#[derive(Deserialize, ToSchema)]
struct TokenStudies {
    /// The slugs of the studies the token may work on (a researcher) or read (a viewer; none:
    /// all); they replace the ones it had.
    studies: Vec<String>,
}

/// `PUT /api/v1/admin-tokens/{name}/studies` with `{"studies": [slug…]}` (owner only): replaces the
/// studies granted to a live token.
#[utoipa::path(
    put,
    path = "/api/v1/admin-tokens/{name}/studies",
    tag = "admin",
    params(("name" = String, Path, description = "the token's name", example = "alice")),
    request_body = TokenStudies,
    responses(
        (status = 200, description = "`{name, studies}`: the token's studies now", body = serde_json::Value),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Not the owner, or the CSRF check", body = ErrorBody),
        (status = 404, description = "No token of that name, or no study of a slug", body = ErrorBody),
        (status = 409, description = "The token is revoked", body = ErrorBody),
    )
)]
async fn set_admin_token_studies(
    Admin(who): Admin,
    State(backend): State<Arc<AppService>>,
    Path(name): Path<String>,
    body: Result<Json<TokenStudies>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    backend.authorize(&who, Permission::ManageTokens).await?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid study list: {}", e.body_text()),
        )
    })?;
    backend
        .set_admin_token_studies(&who, &name, &body.studies)
        .await?;
    Ok(Json(
        serde_json::json!({ "name": name, "studies": body.studies }),
    ))
}

#[derive(Deserialize, IntoParams)]
struct AuditQuery {
    /// The newest entries to return (default 200, at most 10,000).
    limit: Option<i64>,
}

/// `GET /api/v1/audit?limit=N` (owner only): the newest entries first (default 200, at most 10,000).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, description = "Who did what when, newest first", body = serde_json::Value),
        (status = 400, description = "A bad query string", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
    )
)]
async fn audit_log(
    admin: Admin,
    State(backend): State<Arc<AppService>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let limit = query.limit.unwrap_or(200);
    Ok(Json(backend.audit_log(&admin.0, limit).await?))
}

/// `GET /api/v1/whoami`: the principal's name and role.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "admin",
    responses(
        (status = 200, description = "The token's or session's name, role and studies", body = serde_json::Value),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
    )
)]
async fn whoami(Admin(who): Admin) -> impl IntoResponse {
    Json(who)
}

/// `POST /api/v1/logout`: ends the admin cookie's session and clears the cookie.
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "admin",
    security(()),
    responses(
        (status = 200, description = "The session (if any) is over and the cookie cleared", body = serde_json::Value),
        (status = 403, description = "The CSRF check", body = ErrorBody),
    )
)]
async fn logout(
    State(backend): State<Arc<AppService>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(session) = cookie_value(&headers, moat_app::api::ADMIN_COOKIE) {
        backend.admin_logout(session.trim()).await?;
    }
    let clear = moat_app::api::ssr::cookie_header(
        moat_app::api::ADMIN_COOKIE,
        "",
        0,
        backend.secure_cookies(&headers),
    );
    Ok((
        [(header::SET_COOKIE, clear)],
        Json(serde_json::json!({ "logged_out": true })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::exempt_from_timeout;

    /// Streams and uploads are left to their own limits; everything else is timed.
    #[test]
    fn streams_and_uploads_are_exempt_from_the_request_timeout() {
        for path in [
            "/v1/chat/completions",
            "/v1/models",
            "/s/arena/battles/0123abcd/events",
            "/rpc/arena_prompt",
            "/api/v1/studies/big/import",
            "/admin/studies/big/import",
            "/api/v1/leaderboard",
        ] {
            assert!(exempt_from_timeout(path), "{path} must not be cut off");
        }
        for path in [
            "/admin",
            "/api/v1/studies",
            "/api/v1/studies/big",
            "/api/v1/studies/big/export",
            "/rpc/vote",
            "/rpc/admin_login",
            "/s/demo/compare",
            "/api/v1/studies/big/leaderboard",
        ] {
            assert!(!exempt_from_timeout(path), "{path} must be timed");
        }
    }
}
