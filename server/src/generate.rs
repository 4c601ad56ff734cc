//! `moat generate`: fills a study's missing responses from a registry model, so a researcher can build
//! a comparison from prompts alone. Resumable: only prompts without a response of that model are
//! asked, and each answer is committed as it arrives; a failed prompt is reported and left for the
//! next run.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use moat_exports::{Message, Openness};
use moat_llm::registry::{Endpoint, ModelSpec};
use moat_llm::{ChatMessage, Completion, Engine, GenerationRequest, Role};

use crate::domain::now_ms;
use crate::serving::ModelHub;
use crate::store::{GeneratedResponse, PromptToAnswer, Store};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The model registry file (TOML).
    #[arg(long)]
    pub models: PathBuf,
    /// The study whose prompts to answer.
    #[arg(long)]
    pub study: String,
    /// The registry model that answers.
    #[arg(long)]
    pub model: String,
    /// Requests in flight at once (local models answer one at a time whatever this says).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Answer at most this many prompts (all missing ones by default).
    #[arg(long)]
    pub limit: Option<usize>,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GenerateReport {
    pub written: usize,
    /// Prompts that got an answer of the model from elsewhere while this run was asking.
    pub already_answered: usize,
    /// `(prompt external id, error)` for each prompt that failed.
    pub failed: Vec<(String, String)>,
}

impl std::fmt::Display for GenerateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} responses written", self.written)?;
        if self.already_answered > 0 {
            write!(f, ", {} already answered meanwhile", self.already_answered)?;
        }
        write_failed(f, ", ", &self.failed)
    }
}

/// `{separator}N failed (run again to retry them):` and one line per failed prompt (nothing when
/// none failed), for the reports of the commands that ask a model about each prompt.
pub fn write_failed(
    f: &mut std::fmt::Formatter<'_>,
    separator: &str,
    failed: &[(String, String)],
) -> std::fmt::Result {
    if failed.is_empty() {
        return Ok(());
    }
    write!(
        f,
        "{separator}{} failed (run again to retry them):",
        failed.len()
    )?;
    for (prompt, error) in failed {
        write!(f, "\n  prompt {prompt}: {error}")?;
    }
    Ok(())
}

/// A progress bar over `prompts` prompts (hidden with `quiet`), for the commands that ask a model
/// about each prompt of a study (`moat generate`, `moat judge-prompts`).
pub fn prompt_progress(prompts: usize, quiet: bool, message: String) -> indicatif::ProgressBar {
    let progress = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(prompts as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} prompts, {elapsed} elapsed, about {eta} left",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    progress.set_message(message);
    progress
}

/// Turns a stored conversation into the protocol's messages; an unknown role is an error naming it.
pub fn chat_messages(conversation: &[Message]) -> Result<Vec<ChatMessage>, String> {
    conversation
        .iter()
        .map(|message| {
            let role = match message.role.as_str() {
                "user" | "human" | "prompter" => Role::User,
                "assistant" | "gpt" | "bot" => Role::Assistant,
                "system" => Role::System,
                other => {
                    return Err(format!(
                        "a turn has the role {other:?}, which no model reads"
                    ))
                }
            };
            Ok(ChatMessage::new(role, message.content.clone()))
        })
        .collect()
}

/// The response's metadata: how and when it was generated (never a key or an endpoint's address).
pub fn generation_metadata(spec: &ModelSpec, completion: &Completion) -> serde_json::Value {
    let upstream_model = match &spec.endpoint {
        Endpoint::Openai(remote) => Some(remote.model.clone()),
        Endpoint::Local(local) => local
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned()),
        Endpoint::BestOfN(best) => Some(format!("best of {} from {}", best.n, best.base)),
    };
    serde_json::json!({
        "generated_by": "moat generate",
        "registry_model": spec.name,
        "kind": spec.kind(),
        "upstream_model": upstream_model,
        "max_tokens": spec.sampling.max_tokens,
        "temperature": spec.sampling.temperature,
        "top_p": spec.sampling.top_p,
        "seed": spec.sampling.seed,
        "system_prompt": spec.sampling.system_prompt,
        "finish_reason": completion.finish_reason.as_str(),
        "prompt_tokens": completion.usage.map(|u| u.prompt_tokens),
        "completion_tokens": completion.usage.map(|u| u.completion_tokens),
        "latency_ms": completion.latency.as_millis() as u64,
        "time_to_first_token_ms": completion.time_to_first_token.map(|t| t.as_millis() as u64),
        "generated_ms": now_ms(),
    })
}

/// The registry's openness as the store and exports spell it.
pub fn openness(spec: &ModelSpec) -> Openness {
    match spec.openness {
        moat_llm::registry::Openness::Open => Openness::Open,
        moat_llm::registry::Openness::Closed => Openness::Closed,
    }
}

pub async fn run(store: &Store, args: GenerateArgs) -> anyhow::Result<GenerateReport> {
    let hub = ModelHub::load_file(&args.models).await?;
    let spec = hub.spec(&args.model).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no model named {:?} (the registry has: {})",
            args.models.display(),
            args.model,
            hub.registry().names().join(", ")
        )
    })?;
    let engine = hub
        .engine(&args.model)
        .expect("every registry model has an engine");
    let study = store.study(&args.study).await?;
    let mut prompts = store.prompts_without_response(study.id, &spec.name).await?;
    if let Some(limit) = args.limit {
        prompts.truncate(limit);
    }
    generate_all(store, study.id, &spec, engine, prompts, &args).await
}

async fn generate_all(
    store: &Store,
    study_id: i64,
    spec: &ModelSpec,
    engine: Arc<dyn Engine>,
    prompts: Vec<PromptToAnswer>,
    args: &GenerateArgs,
) -> anyhow::Result<GenerateReport> {
    let progress = prompt_progress(
        prompts.len(),
        args.quiet,
        format!("generating with {}", spec.name),
    );
    let mut report = GenerateReport::default();
    let answers = futures::stream::iter(prompts)
        .map(|prompt| {
            let engine = engine.clone();
            async move {
                let answer = match chat_messages(&prompt.conversation) {
                    Ok(messages) => engine
                        .generate(
                            GenerationRequest {
                                messages,
                                ..Default::default()
                            },
                            None,
                        )
                        .await
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error),
                };
                (prompt, answer)
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    futures::pin_mut!(answers);
    while let Some((prompt, answer)) = answers.next().await {
        progress.inc(1);
        let completion = match answer {
            Ok(completion) => completion,
            Err(error) => {
                report.failed.push((prompt.external_id, error));
                continue;
            }
        };
        let version = spec.version.clone().unwrap_or_default();
        let written = store
            .insert_generated_response(
                study_id,
                &GeneratedResponse {
                    prompt_id: prompt.prompt_id,
                    model_name: &spec.name,
                    provider: &spec.provider,
                    openness: openness(spec),
                    version: &version,
                    content: &completion.text,
                    metadata: generation_metadata(spec, &completion),
                },
            )
            .await?;
        if written {
            report.written += 1;
        } else {
            report.already_answered += 1;
        }
    }
    progress.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_roles_map_to_the_protocol_and_unknown_ones_are_named() {
        let conversation = vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
            Message::new("user", "Bye"),
        ];
        let messages = chat_messages(&conversation).unwrap();
        assert_eq!(
            messages.iter().map(|m| m.role).collect::<Vec<_>>(),
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        let error = chat_messages(&[Message::new("narrator", "x")]).unwrap_err();
        assert!(error.contains("narrator"), "{error}");
    }
}
