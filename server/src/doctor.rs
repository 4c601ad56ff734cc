//! `moat doctor`: checks what a running Moat depends on — the database (reachable, migrated, its
//! version), the web app's hydration module, the model registry (each endpoint answers, each key
//! variable is set; keys are never printed) and the free space for the data folder — and says what is
//! wrong and how to fix it. It changes nothing: no database is created or migrated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{Connection, Row};

use crate::problem;
use crate::site::Site;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding: what was checked, what was found, and the fix when something is wrong.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub area: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(area: &str, detail: impl Into<String>) -> Check {
        Check {
            area: area.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(area: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            area: area.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(area: &str, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            area: area.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for check in &self.checks {
            let mark = match check.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{mark}  {:<9} {}", check.area, check.detail)?;
            if let Some(fix) = &check.fix {
                writeln!(f, "      {:<9} fix: {fix}", "")?;
            }
        }
        let (fails, warns) = (
            self.failures(),
            self.checks
                .iter()
                .filter(|c| c.status == Status::Warn)
                .count(),
        );
        if fails == 0 && warns == 0 {
            write!(f, "All {} checks passed.", self.checks.len())
        } else {
            write!(
                f,
                "{fails} problem{} and {warns} warning{}.",
                if fails == 1 { "" } else { "s" },
                if warns == 1 { "" } else { "s" }
            )
        }
    }
}

/// What `moat doctor` looks at.
pub struct DoctorConfig {
    pub database_url: String,
    pub connect_timeout: Duration,
    /// The data folder (`--data-dir`): where the SQLite file and uploads' spool files live.
    pub data_dir: PathBuf,
    pub site: Site,
    pub models: Option<PathBuf>,
    /// Less free space than this for the data folder is a warning.
    pub min_free_bytes: u64,
}

pub async fn run(config: &DoctorConfig) -> Report {
    let mut checks = vec![check_database(&config.database_url, config.connect_timeout).await];
    checks.push(check_site(&config.site));
    checks.extend(check_models(config.models.as_deref()).await);
    let folder = problem::sqlite_path(&config.database_url)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| config.data_dir.clone());
    checks.push(check_disk(&folder, config.min_free_bytes));
    Report { checks }
}

const ANY_COMMAND: &str =
    "any moat command applies them (moat serve does at start; or moat study list)";

async fn check_database(url: &str, timeout: Duration) -> Check {
    const AREA: &str = "database";
    sqlx::any::install_default_drivers();
    let what = problem::describe_database(url);
    let (connect_url, migrator, is_sqlite) = if let Some(path) = problem::sqlite_path(url) {
        if !path.exists() {
            let folder = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return if folder.is_dir() || !folder.exists() {
                Check::ok(
                    AREA,
                    format!(
                        "{what}: not created yet; the first moat command creates and migrates it"
                    ),
                )
            } else {
                Check::fail(
                    AREA,
                    format!("{what}: its folder {} is not a folder", folder.display()),
                    Some("choose another --data-dir or --database-url".into()),
                )
            };
        }
        let base = url.split('?').next().unwrap_or(url);
        (
            format!("{base}?mode=ro"),
            sqlx::migrate!("../migrations/sqlite"),
            true,
        )
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if let Err(problem) = problem::check_postgres(url, timeout).await {
            return Check::fail(AREA, problem.to_string(), None);
        }
        (
            url.to_string(),
            sqlx::migrate!("../migrations/postgres"),
            false,
        )
    } else {
        return Check::fail(
            AREA,
            format!("unsupported database URL {url:?}"),
            Some("use sqlite://PATH or postgres://USER@HOST/DATABASE".into()),
        );
    };
    let connected = tokio::time::timeout(timeout, sqlx::AnyConnection::connect(&connect_url)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            let problem = match problem::sqlite_path(url) {
                Some(path) => problem::sqlite_open_problem(&path, error),
                None => problem::Problem::new(format!("cannot connect to the {what}: {error}")),
            };
            return Check::fail(AREA, problem.to_string(), None);
        }
        Err(_) => {
            return Check::fail(
                AREA,
                format!("{what}: no answer within {} s", timeout.as_secs_f64()),
                None,
            )
        }
    };
    let version_sql = if is_sqlite {
        "SELECT sqlite_version()"
    } else {
        "SELECT current_setting('server_version')"
    };
    let version = match sqlx::query(version_sql).fetch_one(&mut conn).await {
        Ok(row) => row.try_get::<String, _>(0).unwrap_or_default(),
        Err(error) => {
            return Check::fail(
                AREA,
                format!("{what}: reachable, but a first query failed: {error}"),
                None,
            )
        }
    };
    let engine = if is_sqlite {
        format!("SQLite {version}")
    } else {
        format!("PostgreSQL {version}")
    };
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    // `WHERE success` reads a BOOLEAN on PostgreSQL and an integer on SQLite alike.
    let versions = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let applied = versions("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&mut conn)
        .await;
    let failed = versions("SELECT version FROM _sqlx_migrations WHERE NOT success")
        .fetch_all(&mut conn)
        .await;
    let _ = conn.close().await;
    let (applied, failed) = match (applied, failed) {
        (Ok(applied), Ok(failed)) => (applied, failed),
        (Err(error), _) | (_, Err(error)) => {
            let text = error.to_string();
            // No migrations table: an empty database.
            if text.contains("no such table") || text.contains("does not exist") {
                (Vec::new(), Vec::new())
            } else {
                return Check::fail(
                    AREA,
                    format!("{what} ({engine}): reading its migrations failed: {text}"),
                    None,
                );
            }
        }
    };
    let unknown: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|v| !known.contains(v))
        .collect();
    let pending = known
        .iter()
        .filter(|v| !applied.contains(v) && !failed.contains(v))
        .count();
    let latest = known.last().copied().unwrap_or_default();
    if !unknown.is_empty() {
        return Check::fail(
            AREA,
            format!(
                "{what} ({engine}): {} applied migration(s) this moat does not know (latest {}): it was written by a newer moat",
                unknown.len(),
                unknown.iter().max().copied().unwrap_or_default()
            ),
            Some("use the moat version that wrote it".into()),
        );
    }
    if !failed.is_empty() {
        return Check::fail(
            AREA,
            format!("{what} ({engine}): migration {failed:?} failed half-way"),
            Some("restore the database from a backup; a failed migration is not retried".into()),
        );
    }
    if pending > 0 {
        return Check::warn(
            AREA,
            format!(
                "{what} ({engine}): reachable; {pending} of {} migrations not applied yet",
                known.len()
            ),
            ANY_COMMAND,
        );
    }
    Check::ok(
        AREA,
        format!(
            "{what} ({engine}): reachable, all {} migrations applied (latest {latest})",
            known.len()
        ),
    )
}

fn check_site(site: &Site) -> Check {
    const AREA: &str = "site";
    match site {
        _ if site.has_module() => Check::ok(AREA, site.describe()),
        Site::Assets(_) => Check::warn(
            AREA,
            format!("{}: pages work as plain HTML forms, without in-place updates or keyboard shortcuts", site.describe()),
            "build the web app first (scripts/build.sh, then cargo install --path server), or pass --site-root DIR",
        ),
        Site::Dir(dir) => Check::fail(
            AREA,
            format!("{} has no pkg/moat.js and pkg/moat_bg.wasm", dir.display()),
            Some("run scripts/build.sh, or leave --site-root out to use the module built into this binary".into()),
        ),
    }
}

async fn check_models(file: Option<&Path>) -> Vec<Check> {
    const AREA: &str = "models";
    let Some(file) = file else {
        return vec![Check::ok(
            AREA,
            "no model registry given (--models FILE or MOAT_MODELS): nothing to check",
        )];
    };
    let registry = match moat_llm::registry::Registry::load(file) {
        Ok(registry) => registry,
        Err(error) => return vec![Check::fail(AREA, error.to_string(), None)],
    };
    if registry.models.is_empty() {
        return vec![Check::warn(
            AREA,
            format!("{}: no [[model]] entries", file.display()),
            "add models to the file (README, Models)",
        )];
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    // One request per distinct endpoint and key.
    let mut answers: HashMap<(String, Option<String>), Result<u16, String>> = HashMap::new();
    let mut checks = Vec::new();
    for model in &registry.models {
        let label = format!("model {}", model.name);
        match &model.endpoint {
            moat_llm::registry::Endpoint::Local(local) => {
                match std::fs::metadata(&local.path) {
                    Ok(meta) if meta.is_file() => checks.push(Check::ok(
                        AREA,
                        format!("{label}: local file {} ({} MB)", local.path.display(), meta.len() >> 20),
                    )),
                    _ => checks.push(Check::fail(
                        AREA,
                        format!("{label}: the local model file {} does not exist", local.path.display()),
                        Some("fix `path` in the registry (for the demo's SmolLM2: scripts/fetch-smollm2.sh)".into()),
                    )),
                }
            }
            moat_llm::registry::Endpoint::BestOfN(best) => {
                // Its base model is checked as a model of its own; here, the reward model.
                if best.reward_model.join("config.json").is_file() {
                    checks.push(Check::ok(
                        AREA,
                        format!(
                            "{label}: best of {} from {}, reward model {}",
                            best.n,
                            best.base,
                            best.reward_model.display()
                        ),
                    ));
                } else {
                    checks.push(Check::fail(
                        AREA,
                        format!(
                            "{label}: the reward model {} has no config.json",
                            best.reward_model.display()
                        ),
                        Some("fix `reward_model` (a folder written by `moat train --out`)".into()),
                    ));
                }
            }
            moat_llm::registry::Endpoint::Openai(remote) => {
                let key = match &remote.api_key_env {
                    None => None,
                    Some(var) => match std::env::var(var) {
                        Ok(value) if !value.trim().is_empty() => Some(value),
                        _ => {
                            checks.push(Check::fail(
                                AREA,
                                format!("{label}: the key variable {var} is not set"),
                                Some(format!("export {var}=… before starting moat")),
                            ));
                            continue;
                        }
                    },
                };
                let url = format!("{}/models", remote.base_url.trim_end_matches('/'));
                let cache_key = (url.clone(), remote.api_key_env.clone());
                if !answers.contains_key(&cache_key) {
                    let mut request = client.get(&url);
                    if let Some(key) = &key {
                        request = request.bearer_auth(key);
                    }
                    let answer = match request.send().await {
                        Ok(response) => Ok(response.status().as_u16()),
                        Err(error) => Err(request_reason(&error)),
                    };
                    answers.insert(cache_key.clone(), answer);
                }
                let key_note = match &remote.api_key_env {
                    Some(var) => format!("key variable {var} is set"),
                    None => "no key".to_string(),
                };
                checks.push(match &answers[&cache_key] {
                    Ok(status) if (200..300).contains(status) => Check::ok(
                        AREA,
                        format!("{label}: {} answers ({status}); {key_note}", remote.base_url),
                    ),
                    Ok(status @ (401 | 403)) => Check::fail(
                        AREA,
                        format!("{label}: {} answers but refuses the key ({status})", remote.base_url),
                        Some(match &remote.api_key_env {
                            Some(var) => format!("check the key in {var}"),
                            None => "set api_key_env in the registry to the variable holding its key".into(),
                        }),
                    ),
                    Ok(status) => Check::warn(
                        AREA,
                        format!("{label}: {} answers, but GET /models gave {status}; {key_note}", remote.base_url),
                        "check base_url (it should end in /v1)",
                    ),
                    Err(reason) => Check::fail(
                        AREA,
                        format!("{label}: {} does not answer: {reason}", remote.base_url),
                        Some("start the model server, or correct base_url in the registry".into()),
                    ),
                });
            }
        }
    }
    checks
}

fn request_reason(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut deepest = error.to_string();
    while let Some(e) = source {
        deepest = e.to_string();
        source = e.source();
    }
    if error.is_timeout() {
        "no answer within 10 s".into()
    } else if deepest.to_lowercase().contains("refused") {
        "connection refused".into()
    } else {
        deepest
    }
}

/// Free space for the data folder (the nearest existing folder above it, when it is not there yet).
fn check_disk(folder: &Path, min_free: u64) -> Check {
    const AREA: &str = "disk";
    let mut probe = folder.to_path_buf();
    while !probe.exists() {
        match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => probe = parent.to_path_buf(),
            _ => {
                probe = PathBuf::from(".");
                break;
            }
        }
    }
    match rustix::fs::statvfs(&probe) {
        Ok(stat) => {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let text = format!(
                "{}: {} free{}",
                folder.display(),
                human_bytes(free),
                if probe != folder {
                    format!(
                        " (on the disk of {}; the folder is created on first use)",
                        probe.display()
                    )
                } else {
                    String::new()
                }
            );
            if free < min_free {
                Check::warn(
                    AREA,
                    text,
                    format!(
                        "free space or move the data (--data-dir); votes, uploads and exports need room (under {} now)",
                        human_bytes(min_free)
                    ),
                )
            } else {
                Check::ok(AREA, text)
            }
        }
        Err(error) => Check::fail(
            AREA,
            format!("{}: cannot read the free space: {error}", probe.display()),
            None,
        ),
    }
}

fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes as f64 >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.0} MiB", bytes as f64 / MIB)
    }
}
