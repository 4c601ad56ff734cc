//! `moat judge-prompts`: asks a registry model which of LMArena's seven hard-prompt criteria each
//! of a study's prompts meets (`moat_stats::hard_prompt`), and stores the answer, so the
//! leaderboard gets a `hard-prompt` category (six criteria or more) beside the rule-based tags.
//! Resumable like `moat generate`: only unjudged prompts are asked (all of them with `--again`),
//! each judgement is committed as it arrives, and an answer that cannot be read is reported and
//! left for the next run rather than stored as "meets nothing".

use std::path::PathBuf;

use futures::StreamExt;
use moat_llm::{ChatMessage, GenerationRequest, Role};
use moat_stats::hard_prompt;

use crate::serving::ModelHub;
use crate::store::{PromptToAnswer, Store};

/// The user turns sent to the judge are cut to this many characters (LMArena's labeller does the same).
const PROMPT_CHARACTERS: usize = 12_500;
/// The judge's answer is a short list; this bounds a rambling one.
const JUDGE_MAX_TOKENS: u32 = 512;

#[derive(clap::Args, Debug)]
pub struct JudgeArgs {
    /// The model registry file (TOML).
    #[arg(long)]
    pub models: PathBuf,
    /// The study whose prompts to judge.
    #[arg(long)]
    pub study: String,
    /// The registry model that judges (LMArena used Llama-3-70B-Instruct at temperature 0).
    #[arg(long)]
    pub judge: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Judge at most this many prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Judge every prompt again, replacing earlier judgements.
    #[arg(long)]
    pub again: bool,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JudgeReport {
    pub judged: usize,
    /// Of those, prompts that meet six criteria or more.
    pub hard: usize,
    /// `(prompt external id, error)` for each prompt whose judgement failed or could not be read.
    pub failed: Vec<(String, String)>,
}

impl std::fmt::Display for JudgeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} prompts judged, {} of them hard (at least {} of the {} criteria)",
            self.judged,
            self.hard,
            hard_prompt::HARD_THRESHOLD,
            hard_prompt::CRITERIA.len()
        )?;
        crate::generate::write_failed(f, "; ", &self.failed)
    }
}

/// The judge's conversation for a prompt: the instructions, then the prompt's user turns joined by
/// newlines and cut to [`PROMPT_CHARACTERS`] (an assistant's turns are not the prompt's difficulty).
pub fn judge_messages(prompt: &PromptToAnswer) -> Vec<ChatMessage> {
    let user_text: Vec<&str> = prompt
        .conversation
        .iter()
        .filter(|m| matches!(m.role.as_str(), "user" | "human" | "prompter"))
        .map(|m| m.content.as_str())
        .collect();
    let text: String = user_text
        .join("\n")
        .chars()
        .take(PROMPT_CHARACTERS)
        .collect();
    vec![
        ChatMessage::new(Role::System, hard_prompt::judge_instructions()),
        ChatMessage::new(Role::User, text),
    ]
}

pub async fn run(store: &Store, args: JudgeArgs) -> anyhow::Result<JudgeReport> {
    let hub = ModelHub::load_file(&args.models).await?;
    let engine = hub.engine(&args.judge).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no model named {:?} (the registry has: {})",
            args.models.display(),
            args.judge,
            hub.registry().names().join(", ")
        )
    })?;
    let study = store.study(&args.study).await?;
    let mut prompts = store.prompts_to_judge(study.id, args.again).await?;
    if let Some(limit) = args.limit {
        prompts.truncate(limit);
    }
    let progress = crate::generate::prompt_progress(
        prompts.len(),
        args.quiet,
        format!("judging with {}", args.judge),
    );
    let answers = futures::stream::iter(prompts)
        .map(|prompt| {
            let engine = engine.clone();
            async move {
                let request = GenerationRequest {
                    messages: judge_messages(&prompt),
                    max_tokens: Some(JUDGE_MAX_TOKENS),
                    temperature: Some(0.0),
                    ..Default::default()
                };
                let answer = engine
                    .generate(request, None)
                    .await
                    .map(|completion| completion.text)
                    .map_err(|e| e.to_string());
                (prompt, answer)
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    futures::pin_mut!(answers);
    let mut report = JudgeReport::default();
    while let Some((prompt, answer)) = answers.next().await {
        progress.inc(1);
        let criteria = answer.and_then(|text| {
            hard_prompt::parse_judge_answer(&text)
                .map(|criteria| (criteria, text.clone()))
                .map_err(|e| format!("{e}: {:?}", text.chars().take(200).collect::<String>()))
        });
        match criteria {
            Ok((criteria, text)) => {
                store
                    .save_prompt_judgement(prompt.prompt_id, &args.judge, &criteria, &text)
                    .await?;
                report.judged += 1;
                report.hard += usize::from(hard_prompt::is_hard(&criteria));
            }
            Err(error) => report.failed.push((prompt.external_id, error)),
        }
    }
    progress.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_exports::Message;

    #[test]
    fn the_judge_sees_the_instructions_and_only_the_user_turns_cut_to_length() {
        let prompt = PromptToAnswer {
            prompt_id: 1,
            external_id: "p".into(),
            conversation: vec![
                Message::new("system", "Be brief."),
                Message::new("user", "Write a parser."),
                Message::new("assistant", "Here it is."),
                Message::new("user", "x".repeat(20_000)),
            ],
        };
        let messages = judge_messages(&prompt);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].role, Role::System);
        assert!(messages[0].content.contains("7. Real-world application"));
        assert_eq!(messages[1].role, Role::User);
        assert!(messages[1].content.starts_with("Write a parser.\nxxx"));
        assert!(!messages[1].content.contains("Here it is"));
        assert_eq!(messages[1].content.chars().count(), PROMPT_CHARACTERS);
    }
}
