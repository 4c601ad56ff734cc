//! Synthetic battles with known true ratings, for simulation tests and the benchmark.

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;
use serde::{Deserialize, Serialize};

use crate::leaderboard::ELO_POINTS_PER_UNIT;
use crate::model::{Battle, Outcome};

/// How to simulate an arena.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulationConfig {
    pub models: usize,
    pub battles: usize,
    /// Probability that a battle is a tie, whatever the ratings (Arena sees about 30%).
    pub tie_rate: f64,
    /// Popularity of the model ranked `i` (from 0) is proportional to `1 / (i + 1)^skew`;
    /// 0 gives uniform popularity.
    pub popularity_skew: f64,
    /// Standard deviation of the true ratings, in Elo points.
    pub rating_sd: f64,
    pub seed: u64,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            models: 20,
            battles: 10_000,
            tie_rate: 0.0,
            popularity_skew: 0.0,
            rating_sd: 100.0,
            seed: 0,
        }
    }
}

/// Simulated battles and the truth behind them.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    pub battles: Vec<Battle>,
    pub model_names: Vec<String>,
    /// True ratings in Elo points, mean-centred at 0, in the order of `model_names`.
    pub true_ratings: Vec<f64>,
}

/// The name of simulated model `i` ("model-007").
pub fn model_name(i: usize) -> String {
    format!("model-{i:03}")
}

/// Draws true ratings, then battles: two distinct models by popularity, a tie with probability
/// `tie_rate`, otherwise a Bradley–Terry outcome.
pub fn simulate(config: &SimulationConfig) -> Simulation {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let normal = Normal::new(0.0, config.rating_sd).expect("finite standard deviation");
    let mut true_ratings: Vec<f64> = (0..config.models)
        .map(|_| normal.sample(&mut rng))
        .collect();
    let mean = true_ratings.iter().sum::<f64>() / config.models.max(1) as f64;
    true_ratings.iter_mut().for_each(|r| *r -= mean);
    let model_names: Vec<String> = (0..config.models).map(model_name).collect();
    let weights: Vec<f64> = (0..config.models)
        .map(|i| 1.0 / ((i + 1) as f64).powf(config.popularity_skew))
        .collect();
    let popularity = WeightedIndex::new(&weights).expect("positive weights");
    let battles = (0..config.battles)
        .map(|_| {
            let a = popularity.sample(&mut rng);
            let b = loop {
                let b = popularity.sample(&mut rng);
                if b != a {
                    break b;
                }
            };
            let outcome = if rng.gen::<f64>() < config.tie_rate {
                Outcome::Tie
            } else {
                let d = (true_ratings[a] - true_ratings[b]) / ELO_POINTS_PER_UNIT;
                if rng.gen::<f64>() < 1.0 / (1.0 + (-d).exp()) {
                    Outcome::AWins
                } else {
                    Outcome::BWins
                }
            };
            Battle::new(model_names[a].clone(), model_names[b].clone(), outcome)
        })
        .collect();
    Simulation {
        battles,
        model_names,
        true_ratings,
    }
}
