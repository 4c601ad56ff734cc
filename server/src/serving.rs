//! The registry's models, each loaded once ([`ModelHub`]) and shared by the `/v1` endpoints
//! (`openai_api.rs`), the live arena and `moat generate`. Local models answer from this process;
//! `openai` models are proxied to their server (the key is read from the environment by the client
//! and never reaches the caller).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use moat_llm::registry::{Endpoint, ModelSpec, Registry};
use moat_llm::Engine;

/// The registry's models, each loaded once and shared by every request.
pub struct ModelHub {
    registry: Registry,
    engines: HashMap<String, Arc<dyn Engine>>,
}

impl std::fmt::Debug for ModelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHub")
            .field("models", &self.registry.names())
            .finish()
    }
}

impl ModelHub {
    /// Reads a registry file and loads its models (local GGUF files are read here, once).
    pub async fn load_file(path: &Path) -> anyhow::Result<ModelHub> {
        let registry = Registry::load(path)?;
        ModelHub::load(registry).await
    }

    pub async fn load(registry: Registry) -> anyhow::Result<ModelHub> {
        let mut engines: HashMap<String, Arc<dyn Engine>> = HashMap::new();
        for spec in &registry.models {
            let engine: Arc<dyn Engine> = match &spec.endpoint {
                Endpoint::Local(local) => {
                    let (name, local, sampling) =
                        (spec.name.clone(), local.clone(), spec.sampling.clone());
                    let model = tokio::task::spawn_blocking(move || {
                        moat_llm::local::LocalModel::load(&name, &local, &sampling)
                    })
                    .await??;
                    Arc::new(model)
                }
                Endpoint::Openai(remote) => Arc::new(moat_llm::openai::OpenAiClient::new(
                    &spec.name,
                    remote,
                    &spec.sampling,
                )?),
                // Wrapped below, once every model they may wrap is loaded.
                Endpoint::BestOfN(_) => continue,
            };
            engines.insert(spec.name.clone(), engine);
        }
        for spec in &registry.models {
            if let Endpoint::BestOfN(best) = &spec.endpoint {
                // The registry checked that the base exists and is not best-of-n itself.
                let base = engines.get(&best.base).cloned().ok_or_else(|| {
                    anyhow::anyhow!("model `{}`: no base `{}`", spec.name, best.base)
                })?;
                let base_seed = registry.get(&best.base).and_then(|base| base.sampling.seed);
                let engine =
                    crate::best_of_n::BestOfN::load(&spec.name, best, base, base_seed).await?;
                engines.insert(spec.name.clone(), Arc::new(engine));
            }
        }
        Ok(ModelHub { registry, engines })
    }

    /// A hub without models (a server started without `--models`).
    pub fn empty() -> ModelHub {
        ModelHub {
            registry: Registry::default(),
            engines: HashMap::new(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn spec(&self, name: &str) -> Option<&ModelSpec> {
        self.registry.get(name)
    }

    pub fn engine(&self, name: &str) -> Option<Arc<dyn Engine>> {
        self.engines.get(name).cloned()
    }
}

/// The server's current models and, when they came from a file, that file: the admin page edits it,
/// and a saved registry replaces the hub for every request that starts afterwards (requests already
/// running keep the engines they started with).
pub struct Models {
    current: std::sync::RwLock<Arc<ModelHub>>,
    file: Option<std::path::PathBuf>,
}

impl Models {
    pub fn new(hub: ModelHub, file: Option<std::path::PathBuf>) -> Models {
        Models {
            current: std::sync::RwLock::new(Arc::new(hub)),
            file,
        }
    }

    pub fn current(&self) -> Arc<ModelHub> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The registry file the models came from (none for the demo's built-in registry).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Checks `text` as a registry, loads its models, writes it to the registry file (a temporary
    /// file renamed into place, so a crash leaves the old file or the new one) and makes it current.
    /// Nothing changes if any step fails; the error names the model and field, or the file.
    pub async fn replace(&self, text: &str) -> Result<Arc<ModelHub>, String> {
        let file = self.file.clone().ok_or_else(|| {
            "this server's models are built in (the demo); start it with --models FILE to edit them"
                .to_string()
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let registry = Registry::parse(text, &base)?;
        let hub = ModelHub::load(registry)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let temporary = file.with_extension("toml.saving");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &file))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let hub = Arc::new(hub);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = hub.clone();
        tracing::info!(models = ?hub.registry().names(), "model registry replaced from the admin page");
        Ok(hub)
    }

    /// The registry file's text (for the admin page's editor).
    pub fn file_text(&self) -> Option<String> {
        self.file
            .as_ref()
            .and_then(|file| std::fs::read_to_string(file).ok())
    }
}
