//! Test databases (a SQLite file in a temp dir, or a fresh PostgreSQL database per test), fixtures
//! and a server started on port 0.

use std::path::Path;

use moat_server::domain::random_hex;
use moat_server::{Application, Secret, ServeConfig};
use sqlx::Connection;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Model names and providers distinctive enough that finding them in a page means a leak.
pub const MODELS: [(&str, &str, &str); 3] = [
    ("llama-secret-7b", "MetaSecretProvider", "open"),
    ("gpt-hidden-4", "OpenHiddenAI", "closed"),
    ("mistral-covert-8x", "MistralCovertLabs", "open"),
];

pub fn sample_jsonl(prompts: usize) -> String {
    let header = serde_json::json!({
        "models": MODELS.iter().map(|(name, provider, openness)| serde_json::json!({
            "name": name, "provider": provider, "openness": openness
        })).collect::<Vec<_>>()
    });
    let mut lines = vec![header.to_string()];
    for i in 0..prompts {
        let responses: serde_json::Map<String, serde_json::Value> = MODELS
            .iter()
            .enumerate()
            .map(|(m, (name, ..))| {
                (
                    name.to_string(),
                    serde_json::json!(format!("Answer {m} to question {i}, in *markdown*.")),
                )
            })
            .collect();
        lines.push(
            serde_json::json!({ "id": format!("q{i}"), "prompt": format!("Question number {i}?"), "category": "test", "responses": responses })
                .to_string(),
        );
    }
    lines.join("\n") + "\n"
}

pub enum TestDb {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("moat.db").display());
        TestDb::Sqlite { url, _dir: dir }
    }

    /// A new, empty database on the local PostgreSQL server (MOAT_TEST_POSTGRES_URL, default the
    /// trust-auth server at 127.0.0.1:5432).
    pub async fn postgres() -> TestDb {
        sqlx::any::install_default_drivers();
        let admin_url = std::env::var("MOAT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let name = format!("moat_test_{}", random_hex(8));
        let mut conn = sqlx::AnyConnection::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin_url);
        TestDb::Postgres {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub async fn cleanup(self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// Runs a test body against both backends, each with its own database.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::support::TestDb::sqlite();
                super::$name(db.url()).await;
                db.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = $crate::support::TestDb::postgres().await;
                super::$name(db.url()).await;
                db.cleanup().await;
            }
        }
    };
}

pub struct TestServer {
    pub base: String,
    pub backend: std::sync::Arc<moat_server::service::AppService>,
    pub http: reqwest::Client,
}

/// Starts the real application on a free port in this process.
pub async fn spawn_server(database_url: &str, site_root: &Path) -> TestServer {
    spawn_server_with_models(database_url, site_root, None).await
}

/// Starts the real application with a model registry file (`--models`).
pub async fn spawn_server_with_models(
    database_url: &str,
    site_root: &Path,
    models: Option<&Path>,
) -> TestServer {
    spawn_configured(database_url, site_root, models, Default::default()).await
}

/// Starts the real application with upload and request-time limits of its own.
pub async fn spawn_server_with_limits(
    database_url: &str,
    limits: moat_server::http::Limits,
) -> TestServer {
    spawn_configured(database_url, Path::new("/nonexistent-site"), None, limits).await
}

async fn spawn_configured(
    database_url: &str,
    site_root: &Path,
    models: Option<&Path>,
    limits: moat_server::http::Limits,
) -> TestServer {
    let app = Application::build(ServeConfig {
        database_url: database_url.to_string(),
        db_connect_timeout: moat_server::store::DEFAULT_CONNECT_TIMEOUT,
        addr: "127.0.0.1:0".parse().unwrap(),
        site: moat_server::site::Site::Dir(site_root.to_path_buf()),
        admin_token: Some(Secret(ADMIN_TOKEN.into())),
        demo: false,
        models: models.map(Path::to_path_buf),
        cookies: Default::default(),
        limits,
    })
    .await
    .expect("application starts");
    let base = format!("http://{}", app.addr);
    let backend = app.backend.clone();
    tokio::spawn(app.run());
    TestServer {
        base,
        backend,
        http: reqwest::Client::new(),
    }
}

impl TestServer {
    /// Logs in through the login form with `token` and returns the `Cookie` header value
    /// (`moat_admin=SESSION`) and the whole `Set-Cookie` line the server sent.
    pub async fn login_with(&self, token: &str) -> (String, String) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client
            .post(format!("{}/rpc/admin_login", self.base))
            .header("Origin", &self.base)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection() || response.status().is_success(),
            "login with a good token: {}",
            response.status()
        );
        let set_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("moat_admin="))
            .expect("the login sets the admin cookie");
        let pair = set_cookie.split(';').next().unwrap().to_string();
        (pair, set_cookie)
    }

    /// The admin cookie (`moat_admin=SESSION`) of a fresh owner session.
    pub async fn owner_cookie(&self) -> String {
        self.login_with(ADMIN_TOKEN).await.0
    }

    /// The HTML of the page at `path`, fetched with a fresh owner session's cookie.
    pub async fn owner_page(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .header("Cookie", self.owner_cookie().await)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(ADMIN_TOKEN)
    }

    /// `GET path` with the admin token, as JSON.
    pub async fn admin_get_json(&self, path: &str) -> serde_json::Value {
        self.admin(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates a study, imports `prompts` sample prompts and opens it.
    pub async fn open_study(
        &self,
        slug: &str,
        prompts: usize,
        settings: serde_json::Value,
    ) -> reqwest::Response {
        open_study_at(&self.http, &self.base, ADMIN_TOKEN, slug, prompts, settings).await
    }
}

/// Creates a study over the JSON API of the server at `base` (any process, with the admin `token`),
/// imports `prompts` sample prompts and opens it; the response of the opening request.
pub async fn open_study_at(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    slug: &str,
    prompts: usize,
    settings: serde_json::Value,
) -> reqwest::Response {
    let created = http
        .post(format!("{base}/api/v1/studies"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "slug": slug, "title": format!("Study {slug}"), "instructions": "Pick the **better** one.", "settings": settings }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let imported = http
        .post(format!("{base}/api/v1/studies/{slug}/import"))
        .bearer_auth(token)
        .body(sample_jsonl(prompts))
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200, "{}", imported.text().await.unwrap());
    http.post(format!("{base}/api/v1/studies/{slug}/status"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "status": "open" }))
        .send()
        .await
        .unwrap()
}

/// A vote as the rater page posts it: an assignment and a choice, nothing else.
pub fn vote(assignment: &str, choice: &str) -> moat_app::wire::VoteInput {
    moat_app::wire::VoteInput {
        assignment: assignment.to_string(),
        choice: choice.to_string(),
        source_guess: None,
        source_confidence: None,
        rationale: None,
    }
}

/// A backend on `url` with an open study `slug` of `prompts` sample prompts and these settings.
pub async fn backend_with_open_study(
    url: &str,
    slug: &str,
    prompts: usize,
    settings: moat_app::wire::StudySettings,
) -> std::sync::Arc<moat_server::service::AppService> {
    use moat_app::backend::Backend;
    let store = moat_server::store::Store::connect(url)
        .await
        .expect("connect and migrate");
    let backend = moat_server::service::AppService::new(store, String::new());
    backend
        .create_study(moat_app::wire::NewStudy {
            slug: slug.into(),
            title: "T".into(),
            instructions: String::new(),
            settings,
        })
        .await
        .unwrap();
    moat_server::import::import_jsonl(
        &backend.store,
        &moat_server::domain::StudySlug::parse(slug).unwrap(),
        sample_jsonl(prompts).as_bytes(),
        &[],
    )
    .await
    .unwrap();
    backend.set_study_status(slug, "open").await.unwrap();
    backend
}
