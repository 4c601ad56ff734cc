//! `moat study`: create studies with their settings, open and close them, list and show them, from the
//! command line (the same rules as the admin page and the JSON API: everything goes through
//! [`AppService`]).

use std::path::PathBuf;

use clap::Subcommand;
use moat_app::wire::{NewStudy, StudyChanges, StudySettings};

use crate::service::AppService;

#[derive(Subcommand, Debug)]
pub enum StudyCommand {
    /// Create a study (a draft) with its settings; import prompts with `moat import`, then open it.
    Create {
        slug: String,
        #[arg(long)]
        title: String,
        /// A markdown file with the instructions raters read before they consent.
        #[arg(long)]
        instructions: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsFlags,
    },
    /// Change a study's title, instructions or settings; what is not given stays as it is.
    Update {
        slug: String,
        #[arg(long)]
        title: Option<String>,
        /// A markdown file with the instructions raters read before they consent.
        #[arg(long)]
        instructions: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsFlags,
    },
    /// Set a study's status: open (raters can join and vote), closed, or draft.
    Status { slug: String, status: String },
    /// The studies, with prompts, models, raters and votes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One study's settings, progress by model pair, results and raters, as JSON.
    Show { slug: String },
    /// Check every response of a study again for identity leaks (names of the study's models and
    /// providers, common self-identifications) and update the flags: for responses imported before
    /// the check existed, or after adding models.
    ScanIdentity { slug: String },
    /// Which session a completion code belongs to (each session gets its own code): its pseudonym,
    /// participant id, status and votes; exits with an error when no session of the study has it.
    VerifyCode { slug: String, code: String },
}

/// Study settings as flags; a flag not given leaves the setting (or its default) as it is. Yes/no
/// settings take `--ask-source` or `--ask-source false`; an empty text clears a text setting.
#[derive(clap::Args, Debug)]
pub struct SettingsFlags {
    /// Comparisons asked of each rater [default: 10].
    #[arg(long)]
    pub items_per_rater: Option<u32>,
    /// Votes each prompt should get before others are preferred [default: 3].
    #[arg(long)]
    pub ratings_per_item: Option<u32>,
    /// Ask which response comes from a closed model, with a confidence.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ask_source: Option<bool>,
    /// Ask for a free-text reason.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ask_rationale: Option<bool>,
    /// Show the models after each vote.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub reveal_after_vote: Option<bool>,
    /// Show raters the items whose responses name a model or its maker (identity flags).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub show_flagged: Option<bool>,
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
    /// End the session of an excluded rater (the screen-out page instead of more comparisons).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub end_excluded_sessions: Option<bool>,
    /// Shown to a screened-out rater instead of the completion code.
    #[arg(long)]
    pub screen_out_code: Option<String>,
    /// Where the screen-out page sends the rater.
    #[arg(long)]
    pub screen_out_url: Option<String>,
    /// `static` (imported prompts and responses) or `arena` (raters write prompts, two registry
    /// models answer live) [default: static].
    #[arg(long)]
    pub kind: Option<String>,
    /// Arena: the competing registry models, comma-separated, each optionally `name=weight`
    /// (default: every model of --models, weight 1).
    #[arg(long)]
    pub contestants: Option<String>,
    /// Arena: draw among the pairs shown least so far, then by weight [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub favour_least_shown: Option<bool>,
    /// Arena: `live` (answers stream in) or `together` (shown when both are done) [default: live].
    #[arg(long)]
    pub stream: Option<String>,
    /// Arena: the longest prompt, in characters [default: 4000].
    #[arg(long)]
    pub max_prompt_chars: Option<u32>,
    /// Arena: battles a rater may start per hour [default: 60].
    #[arg(long)]
    pub battles_per_hour: Option<u32>,
    /// Arena: turns per battle, the prompt and its follow-up questions; 1 for none [default: 3].
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Refuse a session whose study link carries no participant id.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub require_participant: Option<bool>,
    /// Most sessions one network address may start in the study, 0 for no limit [default: 20].
    #[arg(long)]
    pub sessions_per_ip: Option<u32>,
    /// Most new sessions the study takes per minute, 0 for no limit [default: 120].
    #[arg(long)]
    pub consents_per_minute: Option<u32>,
    /// Most votes per participant per 24 hours, 0 for no limit [default: 0].
    #[arg(long)]
    pub votes_per_day: Option<u32>,
    /// Minutes before an unvoted comparison goes to someone else, 0 for never [default: 60].
    #[arg(long)]
    pub assignment_minutes: Option<u32>,
    /// Show the models of every comparison at the end of the session [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub reveal_at_end: Option<bool>,
    /// Arena: a text file of sample prompts (one per line) a rater may use instead of writing one.
    #[arg(long)]
    pub sample_prompts: Option<PathBuf>,
    /// A model registry file: arena contestants must be among its models (and are all of them when
    /// --contestants is not given).
    #[arg(long)]
    pub models: Option<PathBuf>,
}

impl SettingsFlags {
    fn apply(&self, settings: &mut StudySettings) {
        let text = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        if let Some(n) = self.items_per_rater {
            settings.items_per_rater = n;
        }
        if let Some(n) = self.ratings_per_item {
            settings.ratings_per_item = n;
        }
        if let Some(on) = self.ask_source {
            settings.ask_source = on;
        }
        if let Some(on) = self.ask_rationale {
            settings.ask_rationale = on;
        }
        if let Some(on) = self.reveal_after_vote {
            settings.reveal_after_vote = on;
        }
        if let Some(on) = self.show_flagged {
            settings.show_flagged = on;
        }
        if self.completion_code.is_some() {
            settings.completion_code = text(&self.completion_code);
        }
        if self.redirect_url.is_some() {
            settings.redirect_url = text(&self.redirect_url);
        }
        if let Some(param) = text(&self.participant_param) {
            settings.participant_param = param;
        }
        if let Some(rate) = self.check_rate {
            settings.check_rate = rate;
        }
        if self.max_failed_checks.is_some() {
            settings.max_failed_checks = self.max_failed_checks;
        }
        if let Some(on) = self.end_excluded_sessions {
            settings.end_excluded_sessions = on;
        }
        if self.screen_out_code.is_some() {
            settings.screen_out_code = text(&self.screen_out_code);
        }
        if self.screen_out_url.is_some() {
            settings.screen_out_url = text(&self.screen_out_url);
        }
        if let Some(kind) = text(&self.kind) {
            settings.kind = kind.trim().to_string();
        }
        if let Some(on) = self.require_participant {
            settings.require_participant = on;
        }
        if let Some(n) = self.sessions_per_ip {
            settings.sessions_per_ip = n;
        }
        if let Some(n) = self.consents_per_minute {
            settings.consents_per_minute = n;
        }
        if let Some(n) = self.votes_per_day {
            settings.votes_per_day = n;
        }
        if let Some(n) = self.assignment_minutes {
            settings.assignment_minutes = n;
        }
        if let Some(on) = self.reveal_at_end {
            settings.reveal_at_end = on;
        }
        if let Some(on) = self.favour_least_shown {
            settings.favour_least_shown = on;
        }
        if let Some(stream) = text(&self.stream) {
            settings.stream = stream.trim().to_string();
        }
        if let Some(n) = self.max_prompt_chars {
            settings.max_prompt_chars = n;
        }
        if let Some(n) = self.max_turns {
            settings.max_turns = n;
        }
        if let Some(n) = self.battles_per_hour {
            settings.battles_per_hour = n;
        }
    }

    /// Checks an arena's contestants against the registry file given with --models (and takes all
    /// of its models when none were named).
    fn check_contestants(&self, settings: &mut StudySettings) -> anyhow::Result<()> {
        if let Some(path) = &self.sample_prompts {
            settings.sample_prompts = read_instructions(path)?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(line) = &self.contestants {
            let (names, weights) =
                moat_app::wire::parse_contestants(line).map_err(anyhow::Error::msg)?;
            settings.contestants = names;
            settings.weights = weights;
        }
        let Some(path) = &self.models else {
            return Ok(());
        };
        let registry = moat_llm::registry::Registry::load(path)?;
        if settings.contestants.is_empty() && settings.is_arena() {
            settings.contestants = registry.names().iter().map(|n| n.to_string()).collect();
        }
        for name in &settings.contestants {
            if registry.get(name).is_none() {
                anyhow::bail!(
                    "contestant {name:?} is not in {} (it has: {})",
                    path.display(),
                    registry.names().join(", ")
                );
            }
        }
        Ok(())
    }
}

fn read_instructions(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Runs a `moat study` command; returns what to print.
pub async fn run(backend: &AppService, command: StudyCommand) -> anyhow::Result<String> {
    let fail = |e: moat_app::backend::BackendError| anyhow::anyhow!("{e}");
    match command {
        StudyCommand::Create {
            slug,
            title,
            instructions,
            settings: flags,
        } => {
            let instructions = match &instructions {
                Some(path) => read_instructions(path)?,
                None => String::new(),
            };
            let mut settings = StudySettings::default();
            flags.apply(&mut settings);
            flags.check_contestants(&mut settings)?;
            let summary = backend
                .create_study(NewStudy {
                    slug,
                    title,
                    instructions,
                    settings,
                })
                .await
                .map_err(fail)?;
            backend
                .audit("cli", "study.create", &summary.slug, "")
                .await;
            Ok(format!(
                "study {} created as {}; import prompts with `moat import FILE --study {}`, then `moat study status {} open`",
                summary.slug, summary.status, summary.slug, summary.slug
            ))
        }
        StudyCommand::Update {
            slug,
            title,
            instructions,
            settings: flags,
        } => {
            let current = backend.store.study(&slug).await?;
            let mut settings = current.settings;
            flags.apply(&mut settings);
            flags.check_contestants(&mut settings)?;
            let changes = StudyChanges {
                title: title.unwrap_or(current.title),
                instructions: match &instructions {
                    Some(path) => read_instructions(path)?,
                    None => current.instructions,
                },
                settings,
            };
            backend.update_study(&slug, changes).await.map_err(fail)?;
            backend.audit("cli", "study.update", &slug, "").await;
            Ok(format!("study {slug} updated"))
        }
        StudyCommand::Status { slug, status } => {
            backend
                .set_study_status(&slug, &status)
                .await
                .map_err(fail)?;
            backend.audit("cli", "study.status", &slug, &status).await;
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
        StudyCommand::ScanIdentity { slug } => {
            let study = backend.store.study(&slug).await?;
            let (before, after) = backend.store.rescan_identity_flags(study.id).await?;
            Ok(format!(
                "study {slug}: {after} responses name a model or its maker (flagged; {before} before); \
                 `moat study show {slug}` lists them"
            ))
        }
        StudyCommand::VerifyCode { slug, code } => {
            let session = backend
                .verify_completion_code(&slug, &code)
                .await
                .map_err(fail)?;
            Ok(serde_json::to_string_pretty(&session)?)
        }
    }
}
