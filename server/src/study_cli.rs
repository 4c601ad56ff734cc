//! `moat study`: create studies with their settings, open and close them, list and show them, from the
//! command line (the same rules as the admin page and the JSON API: everything goes through
//! [`AppService`]).

use std::path::PathBuf;

use clap::Subcommand;
use moat_app::settings::{Kind, SETTINGS};
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

/// Study settings as flags, one per setting of [`moat_app::settings::SETTINGS`] (`--items-per-rater
/// 5`, `--ask-source` or `--ask-source false`, `--sample-prompts FILE` for a setting of lines), and
/// `--set key=value` for any setting; a flag not given leaves the setting (or its default) as it is.
/// An empty text clears an optional setting and restores a required one's default. Built with
/// clap's builder from the table, so a new setting has its flag without a line here.
#[derive(Debug, Default, Clone)]
pub struct SettingsFlags {
    /// (setting key, text) for each setting flag given, in the table's order.
    values: Vec<(&'static str, String)>,
    /// `--set key=value`, in the order given (after the named flags).
    sets: Vec<String>,
    /// A model registry file: arena contestants must be among its models (and are all of them when
    /// --contestants is not given).
    models: Option<PathBuf>,
}

impl clap::FromArgMatches for SettingsFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = SettingsFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS.iter().filter(|s| s.has_own_field()) {
            if let Some(text) = matches.get_one::<String>(setting.key) {
                self.values.push((setting.key, text.clone()));
            }
        }
        if let Some(sets) = matches.get_many::<String>("set") {
            self.sets.extend(sets.cloned());
        }
        if let Some(models) = matches.get_one::<PathBuf>("models") {
            self.models = Some(models.clone());
        }
        Ok(())
    }
}

impl clap::Args for SettingsFlags {
    fn augment_args(mut command: clap::Command) -> clap::Command {
        use clap::{Arg, ArgAction};
        let defaults = StudySettings::default();
        for setting in SETTINGS.iter().filter(|s| s.has_own_field()) {
            // clap keeps flag names as `&'static str`; the table is static and the command is
            // built once per process, so leaking the few dashed names is bounded.
            let long: &'static str = Box::leak(setting.flag().into_boxed_str());
            let mut help = setting.help();
            let default = defaults.text(setting.key).unwrap_or_default();
            let mut arg = Arg::new(setting.key)
                .long(long)
                .action(ArgAction::Set)
                .value_parser(clap::value_parser!(String));
            arg = match setting.kind {
                Kind::Switch => arg
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .value_name("true|false"),
                Kind::Count { .. } | Kind::OptionalCount { .. } => arg.value_name("N"),
                Kind::Share { .. } => arg.value_name("SHARE"),
                Kind::Link => arg.value_name("URL"),
                Kind::Choice(choices) => {
                    arg.value_parser(clap::builder::PossibleValuesParser::new(
                        choices.iter().map(|(value, _)| *value),
                    ))
                }
                Kind::Lines { .. } => {
                    help.push_str(" Given as a text file, one per line.");
                    arg.value_name("FILE")
                }
                Kind::Contestants => arg.value_name("NAME[=WEIGHT],..."),
                Kind::Text | Kind::OptionalText | Kind::Weights => arg.value_name("TEXT"),
            };
            if !default.is_empty() && !matches!(setting.kind, Kind::Choice(_)) {
                help.push_str(&format!(" [default: {default}]"));
            }
            command = command.arg(arg.help(help));
        }
        command
            .arg(
                Arg::new("set")
                    .long("set")
                    .value_name("KEY=VALUE")
                    .action(ArgAction::Append)
                    .help("Any setting by its key (as in the JSON API), e.g. --set max_turns=1"),
            )
            .arg(
                Arg::new("models")
                    .long("models")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "A model registry file: arena contestants must be among its models (and \
                         are all of them when --contestants is not given)",
                    ),
            )
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl SettingsFlags {
    /// Applies the flags given, in the table's order, then `--set`; the error names the flag.
    fn apply(&self, settings: &mut StudySettings) -> anyhow::Result<()> {
        for (key, text) in &self.values {
            let setting = moat_app::settings::setting(key).expect("flags come from the table");
            let text = match setting.kind {
                Kind::Lines { .. } => read_instructions(std::path::Path::new(text))?,
                _ => text.clone(),
            };
            settings
                .set_text(key, &text)
                .map_err(|e| anyhow::anyhow!("--{}: {e}", setting.flag()))?;
        }
        for pair in &self.sets {
            let Some((key, text)) = pair.split_once('=') else {
                anyhow::bail!("--set {pair:?}: write key=value");
            };
            settings
                .set_text(&key.trim().replace('-', "_"), text)
                .map_err(|e| anyhow::anyhow!("--set: {e}"))?;
        }
        Ok(())
    }

    /// Checks an arena's contestants against the registry file given with --models (and takes all
    /// of its models when none were named).
    fn check_contestants(&self, settings: &mut StudySettings) -> anyhow::Result<()> {
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
            flags.apply(&mut settings)?;
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
            flags.apply(&mut settings)?;
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
