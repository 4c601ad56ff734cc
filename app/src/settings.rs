//! A study's settings, defined once.
//!
//! [`study_settings!`] below is the only place a setting is spelled out: its field, type and default,
//! the fieldset it belongs to, its label, its kind (which says how it is written as text, how the
//! admin form asks for it and what values it may take), and its help text (the doc comment, which is
//! also what rustdoc, the OpenAPI document and `moat study --help` show). Everything else is derived
//! from the table [`SETTINGS`]: the JSON API takes [`StudySettings`] itself, the admin forms render
//! one row per entry (`admin::SettingsFieldsets`) and post them as [`SettingsInput`], `moat study`'s
//! flags are built from the entries (`server/src/study_cli.rs`), and [`StudySettings::validate`]
//! checks every value against its kind before a study is created or changed. Adding a setting is one
//! entry here (and a migration only if a column must change: settings are stored as JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The fieldsets of the admin forms, in the order they are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Study,
    Raters,
    Checks,
    ScreenOut,
    Arena,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Study,
        Group::Raters,
        Group::Checks,
        Group::ScreenOut,
        Group::Arena,
    ];

    pub fn legend(self) -> &'static str {
        match self {
            Group::Study => "Study",
            Group::Raters => "Raters and Prolific",
            Group::Checks => "Quality checks",
            Group::ScreenOut => "Screen-out",
            Group::Arena => "Kind of study and arena",
        }
    }

    /// The fieldset's class and id suffix (`settings-group-raters`).
    pub fn name(self) -> &'static str {
        match self {
            Group::Study => "study",
            Group::Raters => "raters",
            Group::Checks => "checks",
            Group::ScreenOut => "screen-out",
            Group::Arena => "arena",
        }
    }
}

/// What a setting's value is: its type in [`StudySettings`], how it is written as text (a form
/// field, a command-line flag) and which values are allowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// `bool`: a checkbox; on the command line `--flag` or `--flag false`.
    Switch,
    /// `u32` between `min` and `max`.
    Count { min: u32, max: u32 },
    /// `Option<u32>` between `min` and `max`; empty text is none.
    OptionalCount { min: u32, max: u32 },
    /// `f64` between 0 and 1. The admin form asks for a percentage, under the field name
    /// `percent_field`.
    Share { percent_field: &'static str },
    /// `String` that must not be empty (empty text stands for the default).
    Text,
    /// `Option<String>`; empty text is none.
    OptionalText,
    /// `Option<String>` holding an absolute http(s) URL; empty text is none.
    Link,
    /// `String`, one of the values (value, what it means).
    Choice(&'static [(&'static str, &'static str)]),
    /// `Vec<String>`, one entry per line (on the command line: a file of lines), at most `max`.
    Lines { max: usize },
    /// `Vec<String>` of registry model names, written `a, b=2`: the weights go to the setting of
    /// kind [`Kind::Weights`].
    Contestants,
    /// `BTreeMap<String, f64>`: set through the JSON API, or as `name=weight` in the contestants.
    Weights,
}

/// One setting of [`StudySettings`], as the forms, the command line and validation see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    /// The field's name: the JSON key, the form's `settings[key]`, the flag `--key-with-dashes`.
    pub key: &'static str,
    pub group: Group,
    /// The form's label.
    pub label: &'static str,
    pub kind: Kind,
    /// The doc comment, one line per doc line; [`Setting::help`] joins them.
    doc: &'static str,
}

impl Setting {
    /// The help text: the doc comment as one paragraph.
    pub fn help(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The command-line flag without its dashes (`items-per-rater`).
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// Whether the forms and the command line ask for it (the weights travel with the contestants).
    pub fn has_own_field(&self) -> bool {
        self.kind != Kind::Weights
    }

    /// The admin form's field name inside `settings[…]`.
    pub fn form_field(&self) -> &'static str {
        match self.kind {
            Kind::Share { percent_field } => percent_field,
            _ => self.key,
        }
    }
}

/// Looks a setting up by its key.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

macro_rules! study_settings {
    ($(
        $group:ident {
            $(
                $(#[doc = $doc:tt])*
                $field:ident : $ty:ty = $default:expr, $label:literal, $kind:expr;
            )*
        }
    )*) => {
        /// The settings a researcher chooses for a study. Every field has a default so that older
        /// rows and partial API requests stay readable. Each field is described in [`SETTINGS`].
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
        #[serde(default)]
        pub struct StudySettings {
            $($(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*)*
        }

        impl Default for StudySettings {
            fn default() -> Self {
                StudySettings { $($( $field: $default, )*)* }
            }
        }

        /// Every setting, in the order of the struct and of the forms.
        pub const SETTINGS: &[Setting] = &[
            $($(
                Setting {
                    key: stringify!($field),
                    group: Group::$group,
                    label: $label,
                    kind: $kind,
                    doc: concat!($($doc, "\n"),*),
                },
            )*)*
        ];
    };
}

const NO_MAX: u32 = u32::MAX;

study_settings! {
    Study {
        /// How many comparisons one rater is asked for (in an arena: battles per session).
        items_per_rater: u32 = 10, "Comparisons per rater", Kind::Count { min: 1, max: NO_MAX };
        /// How many votes each prompt should receive before the assigner prefers other prompts.
        ratings_per_item: u32 = 3, "Ratings per prompt", Kind::Count { min: 1, max: NO_MAX };
        /// Ask "which response do you think comes from a closed (API) model?" with a confidence.
        ask_source: bool = false, "Ask which response comes from a closed model", Kind::Switch;
        /// Ask the rater for a free-text reason with each vote.
        ask_rationale: bool = false, "Ask for a reason", Kind::Switch;
        /// At the end of the session, show which model wrote which response of every comparison
        /// voted on; it comes when the session can no longer vote.
        reveal_at_end: bool = true, "Reveal the models at the end of the session", Kind::Switch;
        /// After each vote, show the rater which model wrote which response. A script that opens
        /// many sessions can then learn who wrote every response and vote knowing it; a study whose
        /// raters must stay blind across sessions reveals neither.
        reveal_after_vote: bool = false, "Reveal the models after each vote", Kind::Switch;
        /// Show raters the items with a response that names a model or its maker (flagged when
        /// written, listed under Identity flags); off, such items are never assigned.
        show_flagged: bool = false, "Show items whose responses name a model", Kind::Switch;
        /// A comparison not voted on within this many minutes expires: its prompt and pair go back
        /// to the pool and the rater is given another (0: never).
        assignment_minutes: u32 = 60, "Minutes before an unvoted comparison goes to someone else",
            Kind::Count { min: 0, max: NO_MAX };
        /// Which comparison a rater gets next. uniform: the model pair shown least often, then the
        /// prompt assigned least often. uncertainty: a reward model is trained on the study's votes in
        /// the background (hashed features, retrained as votes arrive, its held-out accuracy shown
        /// on the study page), and among the rater's candidates the pair it is least sure about comes
        /// first; disagreement: the pair whose votes so far contradict the model most (unvoted
        /// pairs by uncertainty). Uniform until the model has been trained.
        active_sampling: String = "uniform".to_string(), "Assignment policy",
            Kind::Choice(&[
                ("uniform", "uniform: every model pair and prompt about equally often"),
                ("uncertainty", "uncertainty: the pairs a reward model of the votes is least sure about"),
                ("disagreement", "disagreement: the pairs whose votes contradict that model most"),
            ]);
    }
    Raters {
        /// Shown on the completion page (e.g. a Prolific completion code); each session gets its
        /// own code made from it.
        completion_code: Option<String> = None, "Completion code", Kind::OptionalText;
        /// Where the completion page sends the rater (e.g. Prolific's completion URL): an http or
        /// https address.
        redirect_url: Option<String> = None, "Completion redirect URL", Kind::Link;
        /// The query parameter of the study link that carries the participant id.
        participant_param: String = "PROLIFIC_PID".to_string(), "Participant id parameter", Kind::Text;
        /// Refuse a session whose study link carries no participant id.
        require_participant: bool = false, "Require a participant id", Kind::Switch;
        /// Most sessions one network address may start in this study (0: no limit). Behind a
        /// reverse proxy the server must trust it (--trust-proxy) to see raters' own addresses.
        sessions_per_ip: u32 = 20, "Sessions per network address", Kind::Count { min: 0, max: NO_MAX };
        /// Most new sessions the whole study takes in one minute (0: no limit): a flood of scripted
        /// consents is held to this rate.
        consents_per_minute: u32 = 120, "New sessions per minute, whole study",
            Kind::Count { min: 0, max: NO_MAX };
        /// Most votes one participant (every session with their participant id, or one anonymous
        /// session) may cast in 24 hours (0: no limit).
        votes_per_day: u32 = 0, "Votes per participant per day", Kind::Count { min: 0, max: NO_MAX };
        /// Most requests one rater session may make in a minute: pages, votes, prompts, battle
        /// streams (0: no limit). A person needs a few; a script flooding the study from one session
        /// is answered 429 past it, before the server reads anything. Each server process counts
        /// its own.
        rater_requests_per_minute: u32 = 120, "Requests per rater session per minute",
            Kind::Count { min: 0, max: NO_MAX };
    }
    Checks {
        /// The share of a rater's comparisons that are quality checks (attention or gold items of
        /// the study, shown at random positions and looking like any other comparison); 0 shows
        /// none.
        check_rate: f64 = 0.0, "Quality checks, % of comparisons",
            Kind::Share { percent_field: "check_percent" };
        /// A rater who fails more checks than this is marked excluded (their votes leave the
        /// leaderboard and the exports); empty never excludes automatically.
        max_failed_checks: Option<u32> = None, "Exclude a rater after more failed checks than",
            Kind::OptionalCount { min: 0, max: NO_MAX };
    }
    ScreenOut {
        /// End the session of a rater who is excluded (after failed checks, or by the researcher):
        /// the next page is the screen-out page instead of another comparison.
        end_excluded_sessions: bool = false, "End the session of an excluded rater", Kind::Switch;
        /// Shown to a screened-out rater instead of the completion code (e.g. Prolific's
        /// screen-out code).
        screen_out_code: Option<String> = None, "Screen-out code", Kind::OptionalText;
        /// Where the screen-out page sends the rater: an http or https address.
        screen_out_url: Option<String> = None, "Screen-out redirect URL", Kind::Link;
    }
    Arena {
        /// static (imported prompts and responses) or arena (each rater writes prompts and two
        /// models of the server's registry answer live; comparisons per rater are then battles per
        /// session).
        kind: String = "static".to_string(), "Kind",
            Kind::Choice(&[
                ("static", "static: imported prompts and responses"),
                ("arena", "arena: raters write prompts, two models answer live"),
            ]);
        /// Arena: the registry models that compete, comma-separated, each optionally name=weight
        /// (empty: every model of the registry).
        contestants: Vec<String> = Vec::new(), "Arena contestants", Kind::Contestants;
        /// Arena: how often each contestant is drawn relative to the others (default 1; a pair's
        /// weight is the product of its two models' weights; 0 keeps a model out).
        weights: BTreeMap<String, f64> = BTreeMap::new(), "Contestant weights", Kind::Weights;
        /// Arena: draw among the pairs shown least so far (balanced votes per pair), then by weight.
        favour_least_shown: bool = true, "Favour the pairs shown least", Kind::Switch;
        /// Arena: live (both answers stream in as they are written) or together (both are shown
        /// once both are complete, which hides differences in speed).
        stream: String = "live".to_string(), "Answers",
            Kind::Choice(&[
                ("live", "stream in as they are written"),
                ("together", "appear together when both are done (hides speed)"),
            ]);
        /// Arena: the longest prompt a rater may send, in characters.
        max_prompt_chars: u32 = 4000, "Longest prompt (characters)", Kind::Count { min: 1, max: 100_000 };
        /// Arena: battles one rater may start per hour.
        battles_per_hour: u32 = 60, "Battles per rater per hour", Kind::Count { min: 1, max: NO_MAX };
        /// Arena: turns per battle: the rater's prompt and its follow-up questions to the same two
        /// models before the vote (1: no follow-ups).
        max_turns: u32 = 3, "Turns per battle", Kind::Count { min: 1, max: 20 };
        /// Arena: prompts a rater may use instead of writing one ("Use a sample prompt"), one per
        /// line, each no longer than the longest prompt.
        sample_prompts: Vec<String> = Vec::new(), "Sample prompts", Kind::Lines { max: 10_000 };
    }
}

/// A setting whose value is wrong, and why. Displayed as `key message` (`max_turns must be between
/// 1 and 20, got 50`), so an error read back as text still names its field ([`field_errors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    pub key: &'static str,
    pub message: String,
}

impl SettingError {
    fn new(key: &'static str, message: impl Into<String>) -> SettingError {
        SettingError {
            key,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key, self.message)
    }
}

/// Several errors as one line: `a must …; b must …` (the 400 body of the API and the forms).
pub fn join_errors(errors: &[SettingError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The messages of an error text (as [`join_errors`] writes it) that name setting `key`, without
/// the key: what the form shows beside that field.
pub fn field_errors(text: &str, key: &str) -> Vec<String> {
    text.split("; ")
        .filter_map(|part| part.strip_prefix(key)?.strip_prefix(' '))
        .map(str::to_string)
        .collect()
}

/// Whether an error text names a setting (the form then shows it beside the field instead).
pub fn names_a_setting(part: &str) -> bool {
    SETTINGS
        .iter()
        .any(|s| !field_errors(part, s.key).is_empty())
}

/// Parses contestants written `name` or `name=weight`, separated by commas: the names in order and
/// the weights given. The error says which entry does not parse.
pub fn parse_contestants(line: &str) -> Result<(Vec<String>, BTreeMap<String, f64>), String> {
    let mut names = Vec::new();
    let mut weights = BTreeMap::new();
    for entry in line.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            None => names.push(entry.to_string()),
            Some((name, weight)) => {
                let weight: f64 = weight.trim().parse().map_err(|_| {
                    format!("contestant {entry:?}: the weight after = is not a number")
                })?;
                names.push(name.trim().to_string());
                weights.insert(name.trim().to_string(), weight);
            }
        }
    }
    Ok((names, weights))
}

/// Checks a link a study sends raters to (`redirect_url`, `screen_out_url`): it must be an absolute
/// http(s) URL with a host, so a `javascript:` or `data:` link can never reach the completion page.
/// The error names the field.
pub fn check_link(field: &str, url: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "{field} must be an http:// or https:// URL, got {url:?}"
        ))
    };
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return refuse();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty()
        || host.starts_with(':')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.contains(['<', '>', '"', '\\'])
    {
        return refuse();
    }
    Ok(())
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_switch(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

impl StudySettings {
    pub fn is_arena(&self) -> bool {
        self.kind == "arena"
    }

    /// The contestants as one line: `name` or `name=weight` when the weight is not 1.
    pub fn contestants_line(&self) -> String {
        self.contestants
            .iter()
            .map(|name| match self.weights.get(name) {
                Some(weight) if *weight != 1.0 => format!("{name}={weight}"),
                _ => name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn object(&self) -> Object {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => unreachable!("settings serialize as an object"),
        }
    }

    /// One setting's value as JSON (`None` for a key that is not a setting).
    pub fn value(&self, key: &str) -> Option<serde_json::Value> {
        self.object().remove(key)
    }

    /// One setting written as text, the way [`StudySettings::set_text`] reads it back (a share as
    /// a number between 0 and 1; lines joined by newlines; contestants with their weights).
    pub fn text(&self, key: &str) -> Option<String> {
        let setting = setting(key)?;
        let value = self.value(key)?;
        Some(match (setting.kind, value) {
            (Kind::Contestants, _) => self.contestants_line(),
            (Kind::Lines { .. }, serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            (_, serde_json::Value::Null) => String::new(),
            (_, serde_json::Value::String(text)) => text,
            (_, other) => other.to_string(),
        })
    }

    /// Sets one setting from text (a form field, a command-line flag): empty text is none for an
    /// optional setting and the default for a required one. The error names the setting; ranges
    /// and rules are checked by [`StudySettings::validate`].
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), SettingError> {
        let Some(setting) = setting(key) else {
            return Err(SettingError {
                key: "settings",
                message: format!("have no setting {key:?}"),
            });
        };
        let key = setting.key;
        let trimmed = text.trim();
        let default = || StudySettings::default().value(key).unwrap_or_default();
        let number =
            |what: &str| SettingError::new(key, format!("must be {what}, got {trimmed:?}"));
        use serde_json::Value;
        let mut object = self.object();
        let value = match setting.kind {
            Kind::Switch => Value::Bool(parse_switch(trimmed).ok_or_else(|| {
                SettingError::new(key, format!("must be true or false, got {trimmed:?}"))
            })?),
            Kind::Count { .. } if trimmed.is_empty() => default(),
            Kind::OptionalCount { .. } if trimmed.is_empty() => Value::Null,
            Kind::Count { .. } | Kind::OptionalCount { .. } => Value::from(
                trimmed
                    .parse::<u32>()
                    .map_err(|_| number("a whole number of 0 or more"))?,
            ),
            Kind::Share { .. } if trimmed.is_empty() => default(),
            Kind::Share { .. } => Value::from(
                trimmed
                    .parse::<f64>()
                    .ok()
                    .filter(|share| share.is_finite())
                    .ok_or_else(|| number("a number"))?,
            ),
            Kind::Text | Kind::Choice(_) if trimmed.is_empty() => default(),
            Kind::Text | Kind::Choice(_) => Value::from(trimmed),
            Kind::OptionalText | Kind::Link if trimmed.is_empty() => Value::Null,
            Kind::OptionalText | Kind::Link => Value::from(trimmed),
            Kind::Lines { .. } => Value::from(lines(text)),
            Kind::Contestants => {
                let (names, weights) =
                    parse_contestants(text).map_err(|message| SettingError::new(key, message))?;
                // The weights are the contestants' own: a line that gives none sets them all to 1.
                let weights_key = SETTINGS
                    .iter()
                    .find(|s| s.kind == Kind::Weights)
                    .map_or("weights", |s| s.key);
                object.insert(
                    weights_key.to_string(),
                    serde_json::to_value(weights).unwrap_or_default(),
                );
                Value::from(names)
            }
            Kind::Weights => {
                return Err(SettingError::new(
                    key,
                    "are given with the contestants, as name=weight",
                ))
            }
        };
        object.insert(key.to_string(), value);
        *self = serde_json::from_value(Value::Object(object))
            .map_err(|e| SettingError::new(key, format!("does not fit: {e}")))?;
        Ok(())
    }

    /// Checks every setting against its kind, and the rules between settings. Each error names
    /// its setting; all are returned, not only the first.
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut errors = Vec::new();
        let object = self.object();
        for setting in SETTINGS {
            let key = setting.key;
            let value = object.get(key).cloned().unwrap_or_default();
            let mut fail = |message: String| errors.push(SettingError::new(key, message));
            match setting.kind {
                Kind::Count { min, max } | Kind::OptionalCount { min, max } => {
                    if let Some(n) = value.as_u64() {
                        if n < u64::from(min) || n > u64::from(max) {
                            fail(if max == NO_MAX {
                                format!("must be at least {min}, got {n}")
                            } else {
                                format!("must be between {min} and {max}, got {n}")
                            });
                        }
                    }
                }
                Kind::Share { .. } => {
                    let share = value.as_f64().unwrap_or(f64::NAN);
                    if !(0.0..=1.0).contains(&share) {
                        fail(format!("must be a share between 0 and 1, got {share}"));
                    }
                }
                Kind::Text => {
                    if value.as_str().is_none_or(|text| text.trim().is_empty()) {
                        fail("must not be empty".into());
                    }
                }
                Kind::Link => {
                    if let Some(link) = value.as_str() {
                        if let Err(message) = check_link(key, link) {
                            let message = message.strip_prefix(key).unwrap_or(&message);
                            fail(message.trim_start().to_string());
                        }
                    }
                }
                Kind::Choice(choices) => {
                    let text = value.as_str().unwrap_or_default();
                    if !choices.iter().any(|(choice, _)| *choice == text) {
                        let names: Vec<&str> = choices.iter().map(|(c, _)| *c).collect();
                        fail(format!("must be {}, got {text:?}", names.join(" or ")));
                    }
                }
                Kind::Lines { max } => {
                    let count = value.as_array().map_or(0, Vec::len);
                    if count > max {
                        fail(format!("must be at most {max} lines, got {count}"));
                    }
                }
                Kind::Contestants => {
                    let mut seen = std::collections::HashSet::new();
                    for name in value.as_array().into_iter().flatten() {
                        let name = name.as_str().unwrap_or_default();
                        if name.trim().is_empty() || !seen.insert(name) {
                            fail(format!("name {name:?} empty or twice"));
                        }
                    }
                }
                Kind::Weights => {
                    for (name, weight) in value.as_object().into_iter().flatten() {
                        let weight = weight.as_f64().unwrap_or(f64::NAN);
                        if !(weight.is_finite() && weight >= 0.0) {
                            fail(format!(
                                "give {name:?} the weight {weight}, but a weight is 0 or more"
                            ));
                        }
                    }
                }
                Kind::Switch | Kind::OptionalText => {}
            }
        }
        // Rules between settings.
        if self.is_arena() && self.contestants.len() == 1 {
            errors.push(SettingError::new(
                "contestants",
                "must name at least two models for an arena (or none: every registry model)",
            ));
        }
        let longest = self.max_prompt_chars as usize;
        if let Some(prompt) = self
            .sample_prompts
            .iter()
            .find(|p| p.chars().count() > longest)
        {
            errors.push(SettingError::new(
                "sample_prompts",
                format!(
                    "must each be at most max_prompt_chars ({longest}) characters, and one has {}",
                    prompt.chars().count()
                ),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The settings fields of the admin's create and settings forms, as the browser posts them
/// (`settings[items_per_rater]=5`, …; an unchecked box is absent). Keys are the settings' form
/// fields ([`Setting::form_field`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SettingsInput(pub BTreeMap<String, String>);

impl SettingsInput {
    /// The settings the form describes: every setting it has no field for takes its default (a
    /// checkbox not posted is off). Every field that does not parse is named, and the result is
    /// checked with [`StudySettings::validate`].
    pub fn parse(&self) -> Result<StudySettings, Vec<SettingError>> {
        let mut settings = StudySettings::default();
        let mut errors = Vec::new();
        for field in self.0.keys() {
            if !SETTINGS
                .iter()
                .any(|s| s.has_own_field() && s.form_field() == field.as_str())
            {
                errors.push(SettingError::new(
                    "settings",
                    format!("have no field {field:?}"),
                ));
            }
        }
        for setting in SETTINGS.iter().filter(|s| s.has_own_field()) {
            let posted = self.0.get(setting.form_field());
            let result = match (setting.kind, posted) {
                (Kind::Switch, posted) => {
                    settings.set_text(setting.key, if posted.is_some() { "true" } else { "false" })
                }
                (Kind::Share { .. }, Some(percent)) if !percent.trim().is_empty() => {
                    match percent.trim().parse::<f64>() {
                        Ok(percent) if (0.0..=100.0).contains(&percent) => {
                            settings.set_text(setting.key, &(percent / 100.0).to_string())
                        }
                        _ => Err(SettingError::new(
                            setting.key,
                            format!("must be a percentage between 0 and 100, got {percent:?}"),
                        )),
                    }
                }
                (_, Some(text)) => settings.set_text(setting.key, text),
                (_, None) => Ok(()),
            };
            errors.extend(result.err());
        }
        if let Err(more) = settings.validate() {
            // A field that did not parse kept its default; its message is the one that counts.
            let fresh: Vec<SettingError> = more
                .into_iter()
                .filter(|e| errors.iter().all(|f| f.key != e.key))
                .collect();
            errors.extend(fresh);
        }
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }

    /// A form filled with `settings` (what the admin form posts when nothing is changed).
    pub fn from_settings(settings: &StudySettings) -> SettingsInput {
        let mut fields = BTreeMap::new();
        for setting in SETTINGS.iter().filter(|s| s.has_own_field()) {
            let text = match setting.kind {
                Kind::Switch if settings.value(setting.key) != Some(true.into()) => continue,
                Kind::Switch => "on".to_string(),
                Kind::Share { .. } => (settings
                    .value(setting.key)
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0)
                    * 100.0)
                    .to_string(),
                _ => settings.text(setting.key).unwrap_or_default(),
            };
            fields.insert(setting.form_field().to_string(), text);
        }
        SettingsInput(fields)
    }
}
