//! Statistics of a blind preference study: pure functions over vote counts.
//!
//! Every result states its method, its sample size and its interval, and derives serde so the API
//! can return it as JSON. Anything random (the bootstrap) is seeded: the same data and seed give
//! identical output on any number of cores.

pub mod aggregate;
pub mod agreement;
pub mod battles;
pub mod bias;
mod bt;
pub mod distinguish;
pub mod elo;
pub mod intervals;
pub mod leaderboard;
mod linalg;
pub mod model;
pub mod parity;
pub mod planning;
pub mod render;
pub mod simulate;
pub mod style;
pub mod svg;

pub use aggregate::{AggregatedBattles, PairCounts};
pub use agreement::{agreement, Agreement, AgreementOptions, Reliability};
pub use bias::{bias, Bias, PositionChoice, PositionVote, RaterVotes};
pub use distinguish::{
    distinguishability, DPrime, Distinguishability, DistinguishabilityOptions, IdentificationGuess,
    PairDistinguishability,
};
pub use elo::online_elo;
pub use leaderboard::{
    leaderboard, leaderboard_from_counts, Anchor, Leaderboard, LeaderboardOptions, ModelRating,
    TieModel, WinCell, WinMatrix, ELO_POINTS_PER_UNIT,
};
pub use model::{Battle, BattleStyle, Interval, Outcome, Proportion, StyleFeatures};
pub use parity::{
    parity, parity_between_models, parity_from_counts, Parity, ParityOptions, ParityVerdict, Side,
    Tost,
};
pub use planning::{
    votes_for_equivalence, votes_for_interval_width, votes_to_detect_difference, Plan,
};
pub use render::{render_table, to_csv};
pub use style::{style_features, StyleCoefficient, StyleControlled, StyleRating};
