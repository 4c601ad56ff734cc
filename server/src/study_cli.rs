//! `moat study`: create studies with their settings, open and close them, list and show them, from the
//! command line (the same rules as the admin page and the JSON API: everything goes through
//! [`AppBackend`]).

use std::path::PathBuf;

use clap::Subcommand;
use moat_app::backend::Backend;
use moat_app::wire::{NewStudy, StudySettings};

use crate::web::AppBackend;

#[derive(Subcommand, Debug)]
pub enum StudyCommand {
    /// Create a study (a draft) with its settings; import prompts with `moat import`, then open it.
    Create(CreateStudyArgs),
    /// Set a study's status: open (raters can join and vote), closed, or draft.
    Status { slug: String, status: String },
    /// The studies, with prompts, models, raters and votes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One study's settings, progress by model pair, results and raters, as JSON.
    Show { slug: String },
}

#[derive(clap::Args, Debug)]
pub struct CreateStudyArgs {
    pub slug: String,
    #[arg(long)]
    pub title: String,
    /// A markdown file with the instructions raters read before they consent.
    #[arg(long)]
    pub instructions: Option<PathBuf>,
    /// Comparisons asked of each rater [default: 10].
    #[arg(long)]
    pub items_per_rater: Option<u32>,
    /// Votes each prompt should get before others are preferred [default: 3].
    #[arg(long)]
    pub ratings_per_item: Option<u32>,
    /// Ask which response comes from a closed model, with a confidence.
    #[arg(long)]
    pub ask_source: bool,
    /// Ask for a free-text reason.
    #[arg(long)]
    pub ask_rationale: bool,
    /// Show the models after each vote.
    #[arg(long)]
    pub reveal_after_vote: bool,
    /// Shown on the completion page (e.g. a Prolific completion code).
    #[arg(long)]
    pub completion_code: Option<String>,
    /// Where the completion page sends the rater.
    #[arg(long)]
    pub redirect_url: Option<String>,
    /// The study link's query parameter that carries the participant id [default: PROLIFIC_PID].
    #[arg(long)]
    pub participant_param: Option<String>,
    /// Share of each rater's comparisons that are quality checks (the study's `check` items), 0 to 1.
    #[arg(long)]
    pub check_rate: Option<f64>,
    /// Exclude a rater who fails more quality checks than this.
    #[arg(long)]
    pub max_failed_checks: Option<u32>,
}

impl CreateStudyArgs {
    fn settings(&self) -> StudySettings {
        let defaults = StudySettings::default();
        StudySettings {
            items_per_rater: self.items_per_rater.unwrap_or(defaults.items_per_rater),
            ratings_per_item: self.ratings_per_item.unwrap_or(defaults.ratings_per_item),
            ask_source: self.ask_source,
            ask_rationale: self.ask_rationale,
            reveal_after_vote: self.reveal_after_vote,
            completion_code: self.completion_code.clone(),
            redirect_url: self.redirect_url.clone(),
            participant_param: self
                .participant_param
                .clone()
                .unwrap_or(defaults.participant_param),
            check_rate: self.check_rate.unwrap_or(defaults.check_rate),
            max_failed_checks: self.max_failed_checks,
        }
    }
}

/// Runs a `moat study` command; returns what to print.
pub async fn run(backend: &AppBackend, command: StudyCommand) -> anyhow::Result<String> {
    let fail = |e: moat_app::backend::BackendError| anyhow::anyhow!("{e}");
    match command {
        StudyCommand::Create(args) => {
            let instructions = match &args.instructions {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
                None => String::new(),
            };
            let summary = backend
                .create_study(NewStudy {
                    slug: args.slug.clone(),
                    title: args.title.clone(),
                    instructions,
                    settings: args.settings(),
                })
                .await
                .map_err(fail)?;
            Ok(format!(
                "study {} created as {}; import prompts with `moat import FILE --study {}`, then `moat study status {} open`",
                summary.slug, summary.status, summary.slug, summary.slug
            ))
        }
        StudyCommand::Status { slug, status } => {
            backend
                .set_study_status(&slug, &status)
                .await
                .map_err(fail)?;
            Ok(format!("study {slug} is {status}"))
        }
        StudyCommand::List { json } => {
            let studies = backend.list_studies().await.map_err(fail)?;
            if json {
                return Ok(serde_json::to_string_pretty(&studies)?);
            }
            let mut out = format!(
                "{:<24} {:<7} {:>8} {:>6} {:>7} {:>7}  title",
                "slug", "status", "prompts", "models", "raters", "votes"
            );
            for s in studies {
                out.push_str(&format!(
                    "\n{:<24} {:<7} {:>8} {:>6} {:>7} {:>7}  {}",
                    s.slug, s.status, s.prompts, s.models, s.raters, s.votes, s.title
                ));
            }
            Ok(out)
        }
        StudyCommand::Show { slug } => {
            let report = backend.study_report(&slug).await.map_err(fail)?;
            Ok(serde_json::to_string_pretty(&report)?)
        }
    }
}
