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
use futures::{StreamExt, TryStreamExt};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use moat_app::api::ssr::cookie_value;
use moat_app::backend::{Backend, BackendError, SharedBackend};
use moat_app::wire::NewStudy;
use moat_app::wire::StudyChanges;
use moat_app::{shell, App};
use serde::{Deserialize, Serialize};
use tokio::io::BufReader;
use tokio_util::io::StreamReader;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::StudySlug;
use crate::export::{export_study, ExportRequest};
use crate::import::{import_jsonl, ImportError};
use crate::web::AppBackend;

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

/// Proof that the request carries the admin token, as `Authorization: Bearer …` or the admin cookie.
pub struct Admin;

impl FromRequestParts<Arc<AppBackend>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        backend: &Arc<AppBackend>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let token = bearer
            .or_else(|| cookie_value(&parts.headers, moat_app::api::ADMIN_COOKIE))
            .unwrap_or_default();
        if backend.admin_authorized(token.trim()).await {
            Ok(Admin)
        } else {
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "admin token required (Authorization: Bearer TOKEN)".into(),
            ))
        }
    }
}

pub fn router(backend: Arc<AppBackend>, leptos_options: LeptosOptions) -> Router {
    // The hydration module is 1.2 MB of wasm, 0.37 MB gzipped: `scripts/build.sh` writes `.gz` copies
    // beside it, served to browsers that accept gzip (raters on slow connections wait 3× less).
    let pkg_dir =
        std::path::Path::new(&*leptos_options.site_root).join(&*leptos_options.site_pkg_dir);
    let pkg_route = format!("/{}", leptos_options.site_pkg_dir);
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
        .route("/admin/studies/{slug}/import", post(import_form))
        .with_state(backend)
        .nest_service(
            &pkg_route,
            tower_http::services::ServeDir::new(pkg_dir).precompressed_gzip(),
        );
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
            Errors are JSON `{\"error\": \"...\"}`; a 5xx never carries its cause."
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
pub fn api_routes() -> OpenApiRouter<Arc<AppBackend>> {
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
}

/// The OpenAPI 3.1 description of the JSON API, built once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| api_routes().into_openapi())
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(backend.list_studies().await?))
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    body: Result<Json<NewStudy>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(study) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid study: {}", e.body_text()),
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(backend.create_study(study).await?),
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
    body: Result<Json<StudyChanges>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(changes) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid study changes: {}", e.body_text()),
        )
    })?;
    Ok(Json(backend.update_study(&slug, changes).await?))
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    backend.set_study_status(&slug, &body.status).await?;
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

/// Imports a public dataset from a stream: spooled to a temporary file first (the dataset readers
/// detect gzip and Parquet, which need to look at the file).
async fn import_dataset_stream<S>(
    backend: &AppBackend,
    slug: &StudySlug,
    format: &str,
    stream: S,
) -> Result<crate::import::DatasetImportReport, ApiError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let format = moat_exports::import::ImportFormat::parse(format).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown import format {format:?}; use moat, hh-rlhf, oasst, arena, trl or votes"
            ),
        )
    })?;
    let spool = tempfile::NamedTempFile::new().map_err(|e| ApiError::from(ImportError::Io(e)))?;
    let mut file = tokio::fs::File::from_std(
        spool
            .reopen()
            .map_err(|e| ApiError::from(ImportError::Io(e)))?,
    );
    let mut stream = stream;
    tokio::io::copy(&mut stream, &mut file)
        .await
        .map_err(|e| ApiError::from(ImportError::Io(e)))?;
    Ok(crate::import::import_dataset(&backend.store, slug, format, spool.path(), &[]).await?)
}

/// What an import did: the JSONL format's report, or a public dataset's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum ImportAnswer {
    Moat(crate::import::ImportReport),
    Dataset(crate::import::DatasetImportReport),
}

/// `POST /api/v1/studies/{slug}/import[?format=hh-rlhf|oasst|arena|trl|votes]` with the file as the body.
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let slug = StudySlug::parse(&slug).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    if query.format != "moat" {
        let report = import_dataset_stream(&backend, &slug, &query.format, reader).await?;
        return Ok(Json(ImportAnswer::Dataset(report)).into_response());
    }
    let report = import_jsonl(&backend.store, &slug, BufReader::new(reader), &[]).await?;
    Ok(Json(ImportAnswer::Moat(report)).into_response())
}

/// The admin page's upload form (multipart, field `file`); answers with a redirect back to the page.
async fn import_form(
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let token = cookie_value(&headers, moat_app::api::ADMIN_COOKIE).unwrap_or_default();
    if !backend.admin_authorized(&token).await {
        return Redirect::to("/admin").into_response();
    }
    let page = format!("/admin/studies/{slug}");
    let outcome: Result<String, String> = async {
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
            let reader = StreamReader::new(field.map_err(std::io::Error::other));
            if format != "moat" {
                return import_dataset_stream(&backend, &slug, &format, reader)
                    .await
                    .map(|report| report.to_string())
                    .map_err(|e| e.1);
            }
            return import_jsonl(&backend.store, &slug, BufReader::new(reader), &[])
                .await
                .map(|report| report.to_string())
                .map_err(|e| match e {
                    ImportError::Store(_) => ApiError::from(e).1,
                    other => other.to_string(),
                });
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
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
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    if query.exclude_flagged {
        request
            .exclude_flagged_votes(&backend.store, &study)
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
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
}

impl LeaderboardQuery {
    fn options(&self) -> moat_stats::LeaderboardOptions {
        crate::analysis::leaderboard_options(self.seed, self.rounds, self.davidson == Some(true))
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path(slug): Path<String>,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let (_, analysis) = backend
        .analysis(
            &slug,
            query.options(),
            query.include_flagged == Some(true),
            query.drop_flagged == Some(true),
        )
        .await?;
    Ok(Json(analysis))
}

/// `POST /api/v1/leaderboard` with a Chatbot Arena battles file (JSON array or JSONL) as the body.
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
    _: Admin,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let options = query.options();
    options
        .validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let battles = moat_stats::battles::parse_battles(&body)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let board = tokio::task::spawn_blocking(move || moat_stats::leaderboard(&battles, &options))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))?;
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path((slug, pseudonym)): Path<(String, String)>,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    backend
        .set_rater_status(&slug, &pseudonym, &body.status)
        .await?;
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
    _: Admin,
    State(backend): State<Arc<AppBackend>>,
    Path((slug, code)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(backend.verify_completion_code(&slug, &code).await?))
}
