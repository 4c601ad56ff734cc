//! Active sampling: which comparison to ask people about next, given the current reward model and the
//! votes so far, and a seeded simulation that measures whether it saves votes.
//!
//! - [`priority`]: `uncertainty` prefers the pairs whose predicted preference p = σ(r_a − r_b) is
//!   nearest a coin flip; `disagreement` prefers the pairs whose votes so far disagree most with the
//!   model (|p − share of votes for a|), and among pairs without votes the uncertain ones.
//! - [`simulate`]: a pool of real HH-RLHF pairs whose labels the simulated raters know (each vote
//!   agrees with the dataset's choice with probability `rater_accuracy`); each round the policy picks a
//!   batch of unasked pairs, the raters vote once on each, the hashed reward model is retrained from
//!   scratch on all the votes, and its accuracy on held-out pairs is recorded. The question answered
//!   is how many votes each policy needs to reach a target held-out accuracy.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::PreferencePair;
use crate::hashed::HashedConfig;
use crate::train::{train_keeping_model, BackboneConfig, RunOptions, TrainConfig};

/// How the next comparisons are chosen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ActivePolicy {
    /// Every unasked pair alike (the baseline).
    Uniform,
    /// The pairs the model is least sure about.
    Uncertainty,
    /// The pairs whose votes disagree most with the model; without votes, the uncertain ones.
    Disagreement,
}

impl ActivePolicy {
    pub fn parse(text: &str) -> Option<ActivePolicy> {
        match text {
            "uniform" | "off" | "" => Some(ActivePolicy::Uniform),
            "uncertainty" => Some(ActivePolicy::Uncertainty),
            "disagreement" => Some(ActivePolicy::Disagreement),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ActivePolicy::Uniform => "uniform",
            ActivePolicy::Uncertainty => "uncertainty",
            ActivePolicy::Disagreement => "disagreement",
        }
    }
}

/// How much asking about a pair is worth, higher first, in [0, 1]: `reward_a`, `reward_b` are the
/// current model's rewards of the two responses and `votes` the (for a, for b) votes so far.
/// Uniform gives every pair 0 (the caller breaks ties at random).
pub fn priority(policy: ActivePolicy, reward_a: f64, reward_b: f64, votes: (u32, u32)) -> f64 {
    let p = 1.0 / (1.0 + (reward_b - reward_a).exp());
    let uncertainty = 1.0 - (2.0 * p - 1.0).abs();
    match policy {
        ActivePolicy::Uniform => 0.0,
        ActivePolicy::Uncertainty => uncertainty,
        ActivePolicy::Disagreement => {
            let (for_a, for_b) = votes;
            if for_a + for_b == 0 {
                // Below any pair whose votes contradict the model by more than half, above agreeing ones.
                0.5 * uncertainty
            } else {
                (p - f64::from(for_a) / f64::from(for_a + for_b)).abs()
            }
        }
    }
}

/// The `count` indices of the highest priorities; equal priorities in random order.
pub fn top_by_priority(priorities: &[f64], count: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..priorities.len()).collect();
    order.shuffle(rng);
    order.sort_by(|&x, &y| priorities[y].total_cmp(&priorities[x]));
    order.truncate(count);
    order
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimulationConfig {
    /// Probability that a simulated vote agrees with the dataset's own choice.
    pub rater_accuracy: f64,
    /// Votes asked before the first model (chosen uniformly by every policy).
    pub first_votes: usize,
    /// Votes per round between retrainings.
    pub batch: usize,
    pub max_votes: usize,
    /// The held-out accuracy to reach.
    pub target: f64,
    /// Epochs of each retraining of the hashed model.
    pub epochs: usize,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            rater_accuracy: 0.8,
            first_votes: 100,
            batch: 100,
            max_votes: 1000,
            target: 0.60,
            epochs: 5,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimulationRun {
    pub policy: ActivePolicy,
    pub seed: u64,
    /// (votes so far, held-out accuracy of the model trained on them).
    pub curve: Vec<(usize, f64)>,
    /// The first point of the curve at or above the target, if any.
    pub votes_to_target: Option<usize>,
}

fn hashed_training(seed: u64, epochs: usize) -> TrainConfig {
    let mut config = TrainConfig::new(BackboneConfig::Hashed(HashedConfig::default()));
    config.seed = seed;
    config.epochs = epochs;
    config.run = RunOptions {
        out: None,
        progress: false,
        ..Default::default()
    };
    config
}

/// One simulated study (see the module documentation).
pub fn simulate(
    pool: &[PreferencePair],
    held_out: &[PreferencePair],
    policy: ActivePolicy,
    config: &SimulationConfig,
    seed: u64,
) -> anyhow::Result<SimulationRun> {
    // The raters' coin flips and the first batch are the same for every policy with one seed, so
    // policies are compared on the same luck.
    let mut rater_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a7e_5eed);
    let rater_agrees: Vec<bool> = pool
        .iter()
        .map(|_| rater_rng.gen_bool(config.rater_accuracy))
        .collect();
    let mut pick_rng = ChaCha8Rng::seed_from_u64(seed);
    let mut unasked: Vec<usize> = (0..pool.len()).collect();
    unasked.shuffle(&mut pick_rng);
    let mut asked: Vec<usize> = unasked
        .drain(..config.first_votes.min(pool.len()))
        .collect();
    let mut curve = Vec::new();
    loop {
        let votes: Vec<PreferencePair> = asked
            .iter()
            .map(|&index| {
                let pair = &pool[index];
                if rater_agrees[index] {
                    pair.clone()
                } else {
                    PreferencePair {
                        chosen: pair.rejected.clone(),
                        rejected: pair.chosen.clone(),
                        ..pair.clone()
                    }
                }
            })
            .collect();
        let (report, model) = train_keeping_model(
            votes,
            Some(held_out.to_vec()),
            &hashed_training(seed, config.epochs),
        )?;
        let accuracy = report.eval.as_ref().map_or(0.0, |eval| eval.accuracy);
        curve.push((asked.len(), accuracy));
        if asked.len() >= config.max_votes || unasked.is_empty() {
            break;
        }
        let batch = config
            .batch
            .min(config.max_votes - asked.len())
            .min(unasked.len());
        let chosen_positions = if policy == ActivePolicy::Uniform {
            (0..batch).collect::<Vec<_>>()
        } else {
            // Which side is "a" is the dataset's order, which the model never sees; votes so far are
            // none for unasked pairs, so disagreement ranks them by uncertainty too.
            let unasked_pairs: Vec<PreferencePair> =
                unasked.iter().map(|&index| pool[index].clone()).collect();
            let scores = model.score_pairs(&unasked_pairs)?;
            let priorities: Vec<f64> = scores
                .iter()
                .map(|s| priority(policy, s.chosen as f64, s.rejected as f64, (0, 0)))
                .collect();
            top_by_priority(&priorities, batch, &mut pick_rng)
        };
        let mut chosen_positions = chosen_positions;
        chosen_positions.sort_unstable_by(|a, b| b.cmp(a));
        for position in chosen_positions {
            asked.push(unasked.swap_remove(position));
        }
    }
    let votes_to_target = curve
        .iter()
        .find(|(_, accuracy)| *accuracy >= config.target)
        .map(|&(votes, _)| votes);
    Ok(SimulationRun {
        policy,
        seed,
        curve,
        votes_to_target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_prefer_uncertain_and_contradicted_pairs() {
        let rng = &mut ChaCha8Rng::seed_from_u64(1);
        // Rewards 0 and 0: p = 0.5, uncertainty 1; rewards 3 and 0: p = 0.9526, uncertainty 0.0949.
        assert_eq!(priority(ActivePolicy::Uncertainty, 0.0, 0.0, (0, 0)), 1.0);
        let sure = priority(ActivePolicy::Uncertainty, 3.0, 0.0, (0, 0));
        assert!((sure - 0.094_85).abs() < 1e-4, "{sure}");
        assert_eq!(
            top_by_priority(&[sure, 1.0, 0.3], 2, rng),
            vec![1, 2],
            "the least certain first"
        );
        // The model is sure of a (p = 0.9526); two votes for b contradict it by 0.9526, one each way
        // by 0.4526, two for a agree (0.0474); an unvoted pair with p = 0.5 gets 0.5.
        let against = priority(ActivePolicy::Disagreement, 3.0, 0.0, (0, 2));
        let split = priority(ActivePolicy::Disagreement, 3.0, 0.0, (1, 1));
        let agree = priority(ActivePolicy::Disagreement, 3.0, 0.0, (2, 0));
        let unvoted = priority(ActivePolicy::Disagreement, 0.0, 0.0, (0, 0));
        assert!((against - 0.952_57).abs() < 1e-4);
        assert!((split - 0.452_57).abs() < 1e-4);
        assert!(against > unvoted && unvoted > split && split > agree);
        assert_eq!(priority(ActivePolicy::Uniform, 3.0, 0.0, (0, 2)), 0.0);
    }

    #[test]
    fn policies_parse_from_the_study_setting() {
        assert_eq!(ActivePolicy::parse("off"), Some(ActivePolicy::Uniform));
        assert_eq!(
            ActivePolicy::parse("uncertainty"),
            Some(ActivePolicy::Uncertainty)
        );
        assert_eq!(ActivePolicy::parse("most-votes"), None);
    }
}
