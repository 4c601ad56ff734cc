//! Statistics of a blind preference study: pure functions over votes, tested without a server.
//!
//! - [`leaderboard()`]: Bradley–Terry ratings on the Elo scale (ties as half a win, or Davidson's tie
//!   model) with seeded multinomial-bootstrap and sandwich intervals, Arena's rank upper bound,
//!   provisional flags, online Elo, the pairwise win matrix and style-controlled ratings
//!   ([`style_features()`] measures a response). [`leaderboard_from_counts()`] starts from counts a
//!   database already aggregated.
//! - [`parity()`]: the win rate of one model or group over another with a TOST equivalence test and
//!   a verdict; [`parity_by_pair()`] gives it for each pair of an A model and a B model as well as
//!   pooled, with names, and at equal style (style-controlled log-odds); [`distinguishability()`], [`bias()`], [`agreement()`] and the [`planning`] functions
//!   answer the other questions a study asks.
//! - [`categories`] tags prompts (code, math, non-English, multi-turn, long query) and ranks each
//!   model per category; [`dedup`] down-samples prompts asked far more often than the rest, as
//!   LMArena does; `reweight_pairs` weighs over-represented pairs down; [`composite()`] fits one
//!   rating vector to several sources with per-source weights; [`history()`] recomputes the
//!   ratings as votes arrive and counts changes of the top 3.
//! - [`svg`] draws a forest plot and a win-matrix heatmap; [`render_table()`] and [`to_csv()`] are
//!   for the CLI; [`battles`] reads and writes Chatbot Arena battle files.
//! - [`check_raters()`] flags raters whose votes look rigged or careless (Chatbot Arena's likelihood
//!   statistic, model loyalty, one side, speed), each flag with its reason;
//!   [`rigging_simulation`] measures it against a simulated omnipresent attacker.
//!
//! Every result states its method, its sample size and its interval, and derives serde so the API
//! can return it as JSON. Anything random (bootstraps) is seeded and split into one random stream
//! per round, so **the same data and seed give identical output on any number of cores**. Fits run
//! on aggregated pair counts, so their cost grows with the number of model pairs, not of votes.
//!
//! ```
//! use moat_stats::{leaderboard, parity_between_models, Battle, LeaderboardOptions, Outcome, ParityOptions};
//!
//! let battles: Vec<Battle> = (0..300)
//!     .map(|i| match i % 3 {
//!         0 => Battle::new("open-13b", "closed-api", Outcome::AWins),
//!         1 => Battle::new("closed-api", "open-13b", Outcome::AWins),
//!         _ => Battle::new("open-13b", "closed-api", Outcome::Tie),
//!     })
//!     .collect();
//! let options = LeaderboardOptions { bootstrap_rounds: 200, seed: 7, ..LeaderboardOptions::default() };
//! let board = leaderboard(&battles, &options);
//! assert_eq!(board.models.len(), 2);
//! println!("{}", moat_stats::render_table(&board));
//! let json = serde_json::to_string(&board).unwrap();
//! assert!(json.contains("\"rank_upper_bound\""));
//!
//! let parity = parity_between_models(&battles, "open-13b", "closed-api", &ParityOptions::default());
//! assert_eq!(parity.win_rate, Some(0.5));
//! println!("{}", parity.summary);
//! ```
//!
//! The `parallel` feature (default) spreads bootstrap rounds over cores with rayon; without it the
//! results are the same, computed on one thread.

pub mod aggregate;
pub mod agreement;
pub mod battles;
pub mod bias;
mod bt;
pub mod categories;
pub mod composite;
pub mod dedup;
pub mod distinguish;
pub mod elo;
pub mod hard_prompt;
pub mod history;
pub mod intervals;
pub mod leaderboard;
mod linalg;
pub mod model;
pub mod parity;
pub mod planning;
pub mod render;
pub mod rigging;
pub mod rigging_simulation;
mod sampling;
pub mod simulate;
pub mod style;
pub mod svg;

pub use aggregate::{AggregatedBattles, PairCounts};
pub use agreement::{agreement, Agreement, AgreementOptions, Reliability};
pub use bias::{bias, Bias, PositionChoice, PositionVote, RaterVotes};
pub use categories::{category_ranks, tag_prompt, CategoryIndex, CategoryRanks};
pub use composite::{composite, Composite, CompositeRating, Source, SourceSummary};
pub use dedup::{deduplicate, prompt_key, Deduplication};
pub use distinguish::{
    distinguishability, DPrime, Distinguishability, DistinguishabilityOptions, IdentificationGuess,
    PairDistinguishability,
};
pub use elo::online_elo;
pub use history::{history, History, HistoryPoint, HistoryStep, TopStability};
pub use leaderboard::{
    leaderboard, leaderboard_from_counts, Anchor, Leaderboard, LeaderboardOptions, ModelRating,
    Reweighting, TieModel, WinCell, WinMatrix, ELO_POINTS_PER_UNIT, MAX_BOOTSTRAP_ROUNDS,
    REWEIGHT_FLOOR,
};
pub use model::{Battle, BattleStyle, Interval, ModelName, Outcome, Proportion, StyleFeatures};
pub use parity::{
    parity, parity_between_models, parity_by_pair, parity_from_counts, parity_from_counts_named,
    GroupParity, PairParity, Parity, ParityOptions, ParityVerdict, Side, StyleParity, Tost,
};
pub use planning::{
    votes_for_equivalence, votes_for_interval_width, votes_to_detect_difference, Plan,
};
pub use render::{render_table, to_csv};
pub use rigging::{
    check_raters, flagged_raters, FlagKind, RaterCheck, RaterFlag, RaterVote, RiggingOptions,
};
pub use style::{
    style_comparison, style_features, StyleCoefficient, StyleComparison, StyleComparisonRow,
    StyleControlled, StyleRating,
};
