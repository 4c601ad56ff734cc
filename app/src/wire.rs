//! Types that cross the wire between the server and the browser.
//!
//! Blindness lives here: the types a rater's browser receives before a vote (`StudyEntry`,
//! `Comparison`) have no field that could hold a model name, provider, openness or a stable response
//! id. Leptos serializes every resource into the page for hydration, so a field a component does not
//! render would still reach the browser: the only safe identity field is one that does not exist.

use serde::{Deserialize, Serialize};

pub use crate::settings::{parse_contestants, StudySettings};

/// What the study link shows before consent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyEntry {
    pub slug: String,
    pub title: String,
    /// Sanitized HTML rendered from the study's markdown instructions.
    pub instructions_html: String,
    pub participant_param: String,
    pub status: String,
    /// The browser already holds a rater cookie for this study.
    pub joined: bool,
}

/// One turn of the prompt conversation, rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub html: String,
}

/// One blind comparison. `assignment` is a random id minted for this rater and this showing; it
/// names neither response nor model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub assignment: String,
    pub turns: Vec<Turn>,
    pub left_html: String,
    pub right_html: String,
    /// 1-based position of this comparison in the rater's session.
    pub position: u32,
    pub total: u32,
    pub ask_source: bool,
    pub ask_rationale: bool,
    /// Arena battles with follow-up questions: the turns before the last answers (shown between
    /// `turns` and the last answers).
    #[serde(default)]
    pub earlier: Vec<EarlierTurn>,
    /// Arena: how many more follow-up questions the rater may ask before voting (0: none).
    #[serde(default)]
    pub follow_ups_left: u32,
    /// Arena: the longest follow-up question, in characters.
    #[serde(default)]
    pub max_prompt_chars: u32,
}

/// A turn of a multi-turn arena battle before its last one: both answers, then the rater's next
/// question. Like the rest of a comparison, nothing here names a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlierTurn {
    pub left_html: String,
    pub right_html: String,
    pub question_html: String,
}

/// Shown after a vote when the study reveals models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reveal {
    pub left_model: String,
    pub right_model: String,
    pub choice: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub code: Option<String>,
    pub redirect_url: Option<String>,
    pub votes: u32,
    /// The session ended early because the rater was excluded (the code and URL are the screen-out
    /// ones).
    pub screened_out: bool,
    /// The session's comparisons with their models, when the study reveals at the end.
    #[serde(default)]
    pub reveals: Vec<Reveal>,
}

/// An arena study waits for the rater's prompt, or streams the battle it started. Like
/// [`Comparison`], nothing here can name a model: the battle id is random and minted per battle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArenaTurn {
    /// 1-based number of the battle in the rater's session, and the session's length.
    pub position: u32,
    pub total: u32,
    pub max_prompt_chars: u32,
    /// A battle of this rater that is still being answered (a reloaded page resumes it).
    pub running: Option<String>,
    /// Both answers stream in as they are written (`false`: shown together when both are done).
    pub live: bool,
    /// Why the last battle did not count, in plain words (a model failed or timed out).
    pub notice: Option<String>,
    /// The study has sample prompts a rater may use instead of writing one.
    pub has_samples: bool,
    /// A follow-up being answered: the battle's first prompt and its earlier turns (ending with the
    /// question being answered), shown above the streaming answers.
    #[serde(default)]
    pub context: Vec<Turn>,
    #[serde(default)]
    pub earlier: Vec<EarlierTurn>,
}

/// What the rater's comparison page shows next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RaterView {
    NeedConsent,
    NotOpen {
        status: String,
    },
    Compare(Comparison),
    /// Arena studies: write a prompt (or watch the running battle).
    Arena(ArenaTurn),
    Reveal(Reveal),
    Done(Completion),
    /// The participant reached the study's votes per day: they may come back at `until_ms`.
    DailyLimit {
        limit: u32,
        until_ms: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StudySummary {
    pub slug: String,
    pub title: String,
    pub status: String,
    pub prompts: i64,
    /// Prompts among `prompts` that are quality-check items.
    pub check_items: i64,
    pub models: i64,
    pub raters: i64,
    pub votes: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct PairProgress {
    pub model_a: String,
    pub model_b: String,
    pub shown: i64,
    pub votes: i64,
}

/// Wins, ties and losses of one model; a tie or a both-bad vote counts for both models in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelResult {
    pub model: String,
    pub provider: String,
    pub openness: String,
    pub wins: i64,
    pub ties: i64,
    pub both_bad: i64,
    pub losses: i64,
    pub votes: i64,
    /// (wins + ties/2 + both_bad/2) / votes, the convention of Chatbot Arena.
    pub win_rate: f64,
}

/// One rater of a study, for the admin page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RaterSummary {
    pub pseudonym: String,
    /// active, excluded, or imported (an annotator of an imported dataset).
    pub status: String,
    pub votes: i64,
    /// Mean time on the comparison page per vote (speeders stand out).
    pub mean_seconds: Option<f64>,
    /// Of the rater's decided votes (left or right), how many chose the left side.
    pub left_choices: i64,
    pub decided: i64,
    /// Quality checks answered as expected, and not.
    pub checks_passed: i64,
    pub checks_failed: i64,
    /// Other sessions with the same participant id (the id joined again from another browser, or
    /// someone else used it): each session keeps its own cookie and comparisons.
    #[serde(default)]
    pub other_sessions: i64,
    /// The session's own completion code (none for an imported annotator).
    #[serde(default)]
    pub completion_code: Option<String>,
    /// Comparisons the session let expire unvoted.
    #[serde(default)]
    pub expired: i64,
    /// Why the rigging and carelessness tests distrust this rater (empty when they do not).
    #[serde(default)]
    pub flags: Vec<RaterFlagView>,
}

/// One reason to distrust a rater: the test (`unlikely_votes`, `model_loyalty`, `one_sided`,
/// `too_fast`) and its finding in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RaterFlagView {
    pub kind: String,
    pub reason: String,
}

/// A response that names a model or its maker (an identity leak), for the researcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FlaggedResponse {
    /// The prompt's external id.
    pub prompt: String,
    pub model: String,
    /// The words that matched, e.g. "created by, Anthropic".
    pub words: String,
}

/// The session a completion code belongs to (for the researcher checking a code a participant
/// submitted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SessionByCode {
    pub code: String,
    pub pseudonym: String,
    pub participant_id: Option<String>,
    /// active, excluded or imported.
    pub status: String,
    pub votes: i64,
    /// Whether the session cast every vote it was asked for (an excluded one never completes).
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StudyReport {
    pub summary: StudySummary,
    pub instructions: String,
    pub settings: StudySettings,
    pub pairs: Vec<PairProgress>,
    pub median_seconds_per_vote: Option<f64>,
    pub results: Vec<ModelResult>,
    /// The study's raters (the first 500), most votes first.
    pub raters: Vec<RaterSummary>,
    /// Responses that name a model or its maker (the first 500), in prompt order.
    pub flagged: Vec<FlaggedResponse>,
    /// How many responses are flagged in all.
    pub flagged_total: i64,
    /// Arena studies: battles by state and the latest void ones with their errors.
    #[serde(default)]
    pub battles: Option<BattleReport>,
    /// Studies with active sampling: the reward model the assigner uses, once one is trained.
    #[serde(default)]
    pub reward_model: Option<RewardModelStatus>,
}

/// Decided votes before a study's first reward model is trained (active sampling).
pub const ACTIVE_FIRST_TRAINING_VOTES: usize = 20;

/// The reward model behind a study's active sampling (`active_sampling`), trained in the background
/// on the study's decided votes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct RewardModelStatus {
    /// Decided votes of the study when it was trained (it uses the latest few thousand of them).
    #[serde(default)]
    pub votes: usize,
    /// Decided votes (pairs) it was trained on, and the held-out pairs it was scored on (split by
    /// prompt, so no held-out prompt was seen in training).
    pub train_pairs: usize,
    pub eval_pairs: usize,
    /// Accuracy on the held-out pairs, with its 95% Wilson interval.
    pub eval_accuracy: Option<f64>,
    pub eval_accuracy_low: Option<f64>,
    pub eval_accuracy_high: Option<f64>,
    /// Responses of the study it scored (the assigner's input).
    pub responses_scored: usize,
    /// When it was trained (ms since the Unix epoch), and whether a newer one is being trained.
    pub trained_ms: i64,
    pub retraining: bool,
    /// Every training of this server process so far, oldest first (the last 100): how the held-out
    /// accuracy moved as votes arrived.
    #[serde(default)]
    pub history: Vec<AccuracyPoint>,
}

/// One training of a study's reward model: the decided votes it used and its held-out accuracy with
/// the 95% Wilson interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AccuracyPoint {
    pub votes: usize,
    pub accuracy: f64,
    pub low: f64,
    pub high: f64,
}

/// A new study, as the admin form and `POST /api/v1/studies` give it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NewStudy {
    #[cfg_attr(feature = "ssr", schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub slug: String,
    pub title: String,
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub settings: StudySettings,
}

/// A study's title, instructions and settings, as `PUT /api/v1/studies/{slug}` and the admin's settings
/// form replace them (the slug and the data stay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StudyChanges {
    pub title: String,
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub settings: StudySettings,
}

/// A vote as a rater submits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteInput {
    pub assignment: String,
    pub choice: String,
    pub source_guess: Option<String>,
    pub source_confidence: Option<String>,
    pub rationale: Option<String>,
}

/// One row of a study's leaderboard, formatted for display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRow {
    pub rank_upper_bound: u32,
    pub model: String,
    pub openness: String,
    pub rating: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub votes: u64,
    pub win_rate: f64,
    pub provisional: bool,
}

/// A titled paragraph of plain-words results (parity, distinguishability, bias, agreement).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultSection {
    pub title: String,
    pub text: String,
}

/// The leaderboard page: rendered on the server (the SVG is generated there from numbers and
/// escaped names, never from user markup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardView {
    pub slug: String,
    pub title: String,
    pub method: String,
    pub votes: u64,
    pub rows: Vec<LeaderboardRow>,
    pub forest_svg: String,
    pub heatmap_svg: String,
    pub sections: Vec<ResultSection>,
    /// Raters the rigging and carelessness tests flag, and whether their votes are left out above.
    #[serde(default)]
    pub flagged_raters: u64,
    #[serde(default)]
    pub flagged_raters_left_out: bool,
    /// The category the page is restricted to (`None`: all votes), and every category there is.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub categories: Vec<CategoryOption>,
    /// Each model's rank per category (shown on the overall page).
    #[serde(default)]
    pub category_ranks: Option<CategoryRanksView>,
    /// Whether the page shows the style-controlled table beside the plain one.
    #[serde(default)]
    pub style_control: bool,
    #[serde(default)]
    pub style_rows: Vec<StyleRow>,
    /// Parity of each open model against each closed model, then the groups pooled.
    #[serde(default)]
    pub parity_rows: Vec<ParityRow>,
    /// What prompt de-duplication left out, in words (`None` when it was off).
    #[serde(default)]
    pub deduplication: Option<String>,
    /// Ratings as votes arrived (daily), drawn on the server, and the top-3 stability in words.
    #[serde(default)]
    pub history_svg: Option<String>,
    #[serde(default)]
    pub history_summary: Option<String>,
}

/// What the leaderboard page shows: which raters count, which category, whether style is held equal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardPageQuery {
    pub drop_flagged: bool,
    pub category: Option<String>,
    pub style_control: bool,
}

/// A category on the page's selector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryOption {
    pub name: String,
    pub votes: u64,
}

/// Ranks (upper bounds) of each model per category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryRanksView {
    pub categories: Vec<String>,
    pub rows: Vec<CategoryRankRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryRankRow {
    pub model: String,
    pub overall: u32,
    /// In the order of [`CategoryRanksView::categories`]; `None` without votes there.
    pub ranks: Vec<Option<u32>>,
}

/// One model in the plain and the style-controlled tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleRow {
    pub model: String,
    pub rank: u32,
    pub rating: f64,
    pub style_rank: u32,
    pub style_rating: f64,
    pub style_lower: Option<f64>,
    pub style_upper: Option<f64>,
    /// Positive when the model moves up with style held equal.
    pub rank_change: i64,
}

/// Parity of one open model against one closed model (or the two groups pooled).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParityRow {
    pub model_a: String,
    pub model_b: String,
    pub pooled: bool,
    pub votes: u64,
    pub win_rate: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// `equivalent`, `a_better`, `b_better` or `inconclusive`.
    pub verdict: String,
    pub tost_p_value: Option<f64>,
    pub votes_needed: Option<u64>,
    pub summary: String,
    /// The same with style held equal, where the votes carry style features.
    pub style_win_rate: Option<f64>,
    pub style_verdict: Option<String>,
    pub style_votes_needed: Option<u64>,
    pub style_summary: Option<String>,
}

/// An arena study's battles, for the researcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BattleReport {
    pub complete: i64,
    pub void: i64,
    /// Started and not finished: running now, or cut off by a crash (never counted).
    pub streaming: i64,
    pub recent_void: Vec<VoidBattleView>,
    /// The models that compete (the study's list, or every model of the server's registry).
    pub contestants: Vec<String>,
    /// Whether this server has a model registry (without one the arena cannot start battles).
    pub models_available: bool,
}

/// A battle that did not count, with the error that voided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct VoidBattleView {
    pub battle: String,
    pub model_a: String,
    pub model_b: String,
    pub error: String,
}

/// One model of the server's registry (`moat serve --models`), for the admin page. API keys never
/// appear: only the name of the environment variable and whether it is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryModelView {
    pub name: String,
    pub provider: String,
    pub openness: String,
    /// `openai` (a chat-completions server) or `local` (a GGUF file run by Moat).
    pub kind: String,
    /// The server address and its model name, or the GGUF file's name.
    pub target: String,
    pub api_key_env: Option<String>,
    pub api_key_set: bool,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

/// The admin page's view of the model registry: its models, and the file's text when the server
/// reads its registry from a file it may edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryView {
    pub models: Vec<RegistryModelView>,
    pub file: Option<String>,
    pub text: Option<String>,
}

/// What a person may do in the admin area. `Owner` may do everything, including managing tokens and
/// reading the audit log; `Researcher` creates studies (and then owns them) and works on the studies
/// granted to it; `Viewer` reads results and exports and changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    Owner,
    Researcher,
    Viewer,
}

impl AdminRole {
    pub fn parse(text: &str) -> Result<AdminRole, String> {
        match text.trim() {
            "owner" => Ok(AdminRole::Owner),
            "researcher" => Ok(AdminRole::Researcher),
            "viewer" => Ok(AdminRole::Viewer),
            other => Err(format!(
                "role must be owner, researcher or viewer, got {other:?}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Owner => "owner",
            AdminRole::Researcher => "researcher",
            AdminRole::Viewer => "viewer",
        }
    }
}

/// Who an admin request comes from: the name of their token (`owner` for the configured bootstrap
/// token) and its role. `token_id` is `None` for the bootstrap owner and the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    pub role: AdminRole,
    pub token_id: Option<i64>,
}

impl Principal {
    /// The command line (`moat study`, `moat admin-token`): whoever can read the database is owner.
    pub fn command_line() -> Principal {
        Principal {
            name: "cli".into(),
            role: AdminRole::Owner,
            token_id: None,
        }
    }
}

/// One thing an admin request wants to do; `Backend::authorize` says whether its principal may.
#[derive(Clone, Debug, PartialEq)]
pub enum Permission<'a> {
    /// Read a study's report, results, raters and exports.
    ReadStudy(&'a str),
    /// Change a study: settings, status, imports, rater exclusion.
    WriteStudy(&'a str),
    CreateStudy,
    /// Read the model registry (contestants for arena studies).
    ReadModels,
    /// Replace the model registry.
    ManageModels,
    /// Call the models under `/v1`.
    UseModels,
    /// Create, list and revoke per-person tokens.
    ManageTokens,
    ReadAudit,
    /// Pure computations on uploaded data that touch no study (the battles leaderboard).
    Compute,
}

/// A per-person admin token as listed (never the token itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenView {
    pub name: String,
    pub role: AdminRole,
    pub studies: Vec<String>,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked: bool,
}

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}
