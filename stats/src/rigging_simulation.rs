//! A simulated study under attack, to measure what [`crate::rigging`] catches and what leaving the
//! flagged raters out does to the leaderboard.
//!
//! Each repetition draws true ratings for the models, then votes:
//!
//! - **Honest raters** vote by Bradley–Terry with their own discrimination (the rating differences
//!   are multiplied by a factor drawn uniformly from 0.5–1.5, so some raters are noisier than
//!   others), tie at `tie_rate`, and spend a median of 8–40 s per vote (log-normal per vote).
//! - **Careless raters** alternate between two kinds: the *clicker* picks a side at random in a median
//!   of 0.8–2 s, the *left-clicker* reads at an honest pace but picks the left response 95% of the time.
//! - **The attacker** casts `attacker_votes` votes spread over `attacker_accounts` accounts with the
//!   omnipresent strategy of Min et al. (2025): it cannot choose its battles (pairs and sides are the
//!   server's, uniformly at random), votes for the target whenever the target appears, and votes like
//!   an honest rater on every other battle to look ordinary; it also fakes an honest time per vote.
//!
//! Three leaderboards are fitted (Bradley–Terry, ties as half a win, no bootstrap): *clean* (honest
//! and careless raters: the study without the attack), *attacked* (everyone) and *filtered*
//! (everyone the tests did not flag). The target's shift is its rating on the latter two minus its
//! clean rating; ratings are centred on 1000, so shifts compare across fits.

use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::leaderboard::{leaderboard, LeaderboardOptions, ELO_POINTS_PER_UNIT};
use crate::model::{Battle, Outcome};
use crate::rigging::{check_raters, FlagKind, RaterVote, RiggingOptions};
use crate::simulate::model_name;

/// What to simulate; the defaults are the benchmark's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RiggingSimulationConfig {
    pub models: usize,
    /// Standard deviation of the true ratings in Elo points. Default 100: eight models then span
    /// about 300 points, like the top of a public leaderboard.
    pub rating_sd: f64,
    pub honest_raters: usize,
    /// Mean votes per honest or careless rater (each casts between half and one and a half times this).
    pub votes_per_rater: usize,
    pub careless_raters: usize,
    pub tie_rate: f64,
    pub attacker_votes: usize,
    pub attacker_accounts: usize,
    /// The target's place by true rating, 1 for the best. Default 6 of 8: a model worth promoting.
    pub target_rank: usize,
    pub repetitions: usize,
    pub seed: u64,
    pub rigging: RiggingOptions,
}

impl Default for RiggingSimulationConfig {
    fn default() -> Self {
        RiggingSimulationConfig {
            models: 8,
            rating_sd: 100.0,
            honest_raters: 150,
            votes_per_rater: 30,
            careless_raters: 6,
            tie_rate: 0.1,
            attacker_votes: 300,
            attacker_accounts: 3,
            target_rank: 6,
            repetitions: 10,
            seed: 0,
            rigging: RiggingOptions::default(),
        }
    }
}

impl RiggingSimulationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.models < 2 {
            return Err("at least 2 models".into());
        }
        if !(1..=self.models).contains(&self.target_rank) {
            return Err(format!(
                "the target rank must be between 1 and {}, got {}",
                self.models, self.target_rank
            ));
        }
        if self.attacker_accounts == 0 && self.attacker_votes > 0 {
            return Err("attacker votes need at least one attacker account".into());
        }
        if !(0.0..1.0).contains(&self.tie_rate) {
            return Err(format!("tie rate must be in [0, 1), got {}", self.tie_rate));
        }
        if !(self.rating_sd >= 0.0 && self.rating_sd.is_finite()) {
            return Err(format!("rating sd must be >= 0, got {}", self.rating_sd));
        }
        if self.repetitions == 0 {
            return Err("at least one repetition".into());
        }
        self.rigging.validate()
    }
}

/// Who cast a simulated vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Honest,
    Careless,
    Attacker,
}

/// How many raters of one group each test flagged (a rater may be flagged by several).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagCounts {
    pub unlikely_votes: usize,
    pub model_loyalty: usize,
    pub one_sided: usize,
    pub too_fast: usize,
}

impl FlagCounts {
    fn add(&mut self, kind: FlagKind) {
        match kind {
            FlagKind::UnlikelyVotes => self.unlikely_votes += 1,
            FlagKind::ModelLoyalty => self.model_loyalty += 1,
            FlagKind::OneSided => self.one_sided += 1,
            FlagKind::TooFast => self.too_fast += 1,
        }
    }

    fn plus(self, other: FlagCounts) -> FlagCounts {
        FlagCounts {
            unlikely_votes: self.unlikely_votes + other.unlikely_votes,
            model_loyalty: self.model_loyalty + other.model_loyalty,
            one_sided: self.one_sided + other.one_sided,
            too_fast: self.too_fast + other.too_fast,
        }
    }
}

impl fmt::Display for FlagCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unlikely votes {}, model loyalty {}, one side {}, too fast {}",
            self.unlikely_votes, self.model_loyalty, self.one_sided, self.too_fast
        )
    }
}

/// One repetition's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiggingRepetition {
    pub seed: u64,
    pub target: String,
    pub honest_raters: usize,
    pub honest_flagged: usize,
    pub careless_raters: usize,
    pub careless_flagged: usize,
    pub attacker_accounts: usize,
    pub attackers_flagged: usize,
    /// Which tests flagged the raters of each group.
    pub honest_flags: FlagCounts,
    pub careless_flags: FlagCounts,
    pub attacker_flags: FlagCounts,
    /// Attacker votes the filter leaves out, of all attacker votes.
    pub attacker_votes_left_out: usize,
    pub honest_votes_left_out: usize,
    pub honest_votes: usize,
    pub target_rating_clean: f64,
    pub target_rating_attacked: f64,
    pub target_rating_filtered: f64,
    pub target_rank_clean: usize,
    pub target_rank_attacked: usize,
    pub target_rank_filtered: usize,
}

/// The repetitions and their summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiggingSimulationReport {
    pub config: RiggingSimulationConfig,
    pub repetitions: Vec<RiggingRepetition>,
    /// Attacker accounts flagged, of all attacker accounts in all repetitions.
    pub detection_rate: f64,
    /// Attacker votes left out by the filter, of all attacker votes.
    pub attacker_votes_left_out_rate: f64,
    pub careless_detection_rate: f64,
    /// Honest raters flagged, of all honest raters.
    pub false_flag_rate: f64,
    /// Which tests flagged the raters of each group, summed over repetitions.
    pub honest_flags: FlagCounts,
    pub careless_flags: FlagCounts,
    pub attacker_flags: FlagCounts,
    /// Mean over repetitions of the target's rating minus its clean rating, in Elo points.
    pub mean_shift_without_filter: f64,
    pub mean_shift_with_filter: f64,
    /// Mean over repetitions of places gained by the target (clean rank minus rank).
    pub mean_rank_gain_without_filter: f64,
    pub mean_rank_gain_with_filter: f64,
}

fn draw_pair(rng: &mut ChaCha8Rng, models: usize) -> (usize, usize) {
    let a = rng.gen_range(0..models);
    let b = (a + rng.gen_range(1..models)) % models;
    (a, b)
}

/// An honest verdict on `a` (left) against `b` with discrimination `beta`.
fn honest_outcome(
    rng: &mut ChaCha8Rng,
    ratings: &[f64],
    a: usize,
    b: usize,
    beta: f64,
    tie_rate: f64,
) -> Outcome {
    if rng.gen::<f64>() < tie_rate {
        return Outcome::Tie;
    }
    let d = beta * (ratings[a] - ratings[b]) / ELO_POINTS_PER_UNIT;
    if rng.gen::<f64>() < 1.0 / (1.0 + (-d).exp()) {
        Outcome::AWins
    } else {
        Outcome::BWins
    }
}

/// A time per vote around `median_ms` (log-normal, σ = 0.5).
fn duration(rng: &mut ChaCha8Rng, median_ms: f64) -> u64 {
    let z: f64 = Normal::new(0.0, 0.5).expect("finite").sample(rng);
    (median_ms * z.exp()).round().max(1.0) as u64
}

fn fit(
    votes: &[(Role, RaterVote)],
    keep: impl Fn(&(Role, RaterVote)) -> bool,
    target: &str,
) -> (f64, usize) {
    let battles: Vec<Battle> = votes
        .iter()
        .filter(|v| keep(v))
        .map(|(_, v)| Battle::new(&v.model_a, &v.model_b, v.outcome))
        .collect();
    let options = LeaderboardOptions {
        bootstrap_rounds: 0,
        style_control: false,
        ..LeaderboardOptions::default()
    };
    let board = leaderboard(&battles, &options);
    board
        .models
        .iter()
        .find(|m| m.model == target)
        .map(|m| (m.rating, m.rank))
        .unwrap_or((f64::NAN, 0))
}

fn repetition(config: &RiggingSimulationConfig, seed: u64) -> RiggingRepetition {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, config.rating_sd).expect("finite standard deviation");
    let mut ratings: Vec<f64> = (0..config.models)
        .map(|_| normal.sample(&mut rng))
        .collect();
    let mean = ratings.iter().sum::<f64>() / config.models as f64;
    ratings.iter_mut().for_each(|r| *r -= mean);
    let names: Vec<String> = (0..config.models).map(model_name).collect();
    let mut by_rating: Vec<usize> = (0..config.models).collect();
    by_rating.sort_by(|&a, &b| ratings[b].total_cmp(&ratings[a]));
    let target = by_rating[config.target_rank - 1];

    let mut votes: Vec<(Role, RaterVote)> = Vec::new();
    let push =
        |votes: &mut Vec<(Role, RaterVote)>, role, rater: &str, a: usize, b: usize, outcome, ms| {
            votes.push((
                role,
                RaterVote::new(rater, &names[a], &names[b], outcome, Some(ms)),
            ));
        };
    let count = |rng: &mut ChaCha8Rng| {
        let mean = config.votes_per_rater.max(1);
        rng.gen_range(mean.div_ceil(2)..=mean + mean / 2)
    };
    for rater in 0..config.honest_raters {
        let name = format!("honest-{rater:04}");
        let beta = rng.gen_range(0.5..1.5);
        let median_ms = rng.gen_range(8_000.0..40_000.0);
        for _ in 0..count(&mut rng) {
            let (a, b) = draw_pair(&mut rng, config.models);
            let outcome = honest_outcome(&mut rng, &ratings, a, b, beta, config.tie_rate);
            let ms = duration(&mut rng, median_ms);
            push(&mut votes, Role::Honest, &name, a, b, outcome, ms);
        }
    }
    for rater in 0..config.careless_raters {
        let clicker = rater % 2 == 0;
        let name = format!("careless-{rater:04}");
        let median_ms = if clicker {
            rng.gen_range(800.0..2_000.0)
        } else {
            rng.gen_range(8_000.0..40_000.0)
        };
        for _ in 0..count(&mut rng) {
            let (a, b) = draw_pair(&mut rng, config.models);
            let left = if clicker { 0.5 } else { 0.95 };
            let outcome = if rng.gen::<f64>() < left {
                Outcome::AWins
            } else {
                Outcome::BWins
            };
            let ms = duration(&mut rng, median_ms);
            push(&mut votes, Role::Careless, &name, a, b, outcome, ms);
        }
    }
    for account in 0..config.attacker_accounts {
        let name = format!("attacker-{account:04}");
        let share = config.attacker_votes / config.attacker_accounts
            + usize::from(account < config.attacker_votes % config.attacker_accounts);
        let median_ms = rng.gen_range(8_000.0..40_000.0);
        for _ in 0..share {
            let (a, b) = draw_pair(&mut rng, config.models);
            let outcome = if a == target {
                Outcome::AWins
            } else if b == target {
                Outcome::BWins
            } else {
                honest_outcome(&mut rng, &ratings, a, b, 1.0, config.tie_rate)
            };
            let ms = duration(&mut rng, median_ms);
            push(&mut votes, Role::Attacker, &name, a, b, outcome, ms);
        }
    }
    // The order of votes does not matter to the tests or the fits, but a real log interleaves them.
    votes.shuffle(&mut rng);

    let raters: Vec<RaterVote> = votes.iter().map(|(_, v)| v.clone()).collect();
    let checks = check_raters(&raters, &config.rigging);
    let kinds_of = |prefix: &str| {
        let mut counts = FlagCounts::default();
        for check in checks.iter().filter(|c| c.rater.starts_with(prefix)) {
            let mut kinds: Vec<FlagKind> = check.flags.iter().map(|f| f.kind).collect();
            kinds.sort();
            kinds.dedup();
            kinds.into_iter().for_each(|kind| counts.add(kind));
        }
        counts
    };
    let (honest_flags, careless_flags, attacker_flags) = (
        kinds_of("honest-"),
        kinds_of("careless-"),
        kinds_of("attacker-"),
    );
    let flagged: std::collections::BTreeSet<String> = checks
        .into_iter()
        .filter(|c| c.is_flagged())
        .map(|c| c.rater)
        .collect();
    let flagged_of = |prefix: &str| flagged.iter().filter(|r| r.starts_with(prefix)).count();
    let votes_left_out = |role: Role| {
        votes
            .iter()
            .filter(|(r, v)| *r == role && flagged.contains(&v.rater))
            .count()
    };
    let target_name = &names[target];
    let clean = fit(&votes, |(role, _)| *role != Role::Attacker, target_name);
    let attacked = fit(&votes, |_| true, target_name);
    let filtered = fit(&votes, |(_, v)| !flagged.contains(&v.rater), target_name);
    RiggingRepetition {
        seed,
        target: target_name.clone(),
        honest_raters: config.honest_raters,
        honest_flagged: flagged_of("honest-"),
        careless_raters: config.careless_raters,
        careless_flagged: flagged_of("careless-"),
        attacker_accounts: config.attacker_accounts,
        attackers_flagged: flagged_of("attacker-"),
        honest_flags,
        careless_flags,
        attacker_flags,
        attacker_votes_left_out: votes_left_out(Role::Attacker),
        honest_votes_left_out: votes_left_out(Role::Honest),
        honest_votes: votes.iter().filter(|(r, _)| *r == Role::Honest).count(),
        target_rating_clean: clean.0,
        target_rating_attacked: attacked.0,
        target_rating_filtered: filtered.0,
        target_rank_clean: clean.1,
        target_rank_attacked: attacked.1,
        target_rank_filtered: filtered.1,
    }
}

fn rate(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        f64::NAN
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Runs the repetitions (repetition `i` is seeded with `seed + i`, so the report is reproducible).
/// The configuration is assumed valid ([`RiggingSimulationConfig::validate`]).
pub fn simulate_rigging(config: &RiggingSimulationConfig) -> RiggingSimulationReport {
    let repetitions: Vec<RiggingRepetition> = (0..config.repetitions as u64)
        .map(|i| repetition(config, config.seed.wrapping_add(i)))
        .collect();
    let sum = |f: &dyn Fn(&RiggingRepetition) -> usize| repetitions.iter().map(f).sum::<usize>();
    let total = |f: &dyn Fn(&RiggingRepetition) -> FlagCounts| {
        repetitions
            .iter()
            .map(f)
            .fold(FlagCounts::default(), FlagCounts::plus)
    };
    let mean = |f: &dyn Fn(&RiggingRepetition) -> f64| {
        repetitions.iter().map(f).sum::<f64>() / repetitions.len() as f64
    };
    RiggingSimulationReport {
        config: config.clone(),
        detection_rate: rate(sum(&|r| r.attackers_flagged), sum(&|r| r.attacker_accounts)),
        attacker_votes_left_out_rate: rate(
            sum(&|r| r.attacker_votes_left_out),
            config.attacker_votes * repetitions.len(),
        ),
        careless_detection_rate: rate(sum(&|r| r.careless_flagged), sum(&|r| r.careless_raters)),
        false_flag_rate: rate(sum(&|r| r.honest_flagged), sum(&|r| r.honest_raters)),
        honest_flags: total(&|r| r.honest_flags),
        careless_flags: total(&|r| r.careless_flags),
        attacker_flags: total(&|r| r.attacker_flags),
        mean_shift_without_filter: mean(&|r| r.target_rating_attacked - r.target_rating_clean),
        mean_shift_with_filter: mean(&|r| r.target_rating_filtered - r.target_rating_clean),
        mean_rank_gain_without_filter: mean(&|r| {
            r.target_rank_clean as f64 - r.target_rank_attacked as f64
        }),
        mean_rank_gain_with_filter: mean(&|r| {
            r.target_rank_clean as f64 - r.target_rank_filtered as f64
        }),
        repetitions,
    }
}

impl fmt::Display for RiggingSimulationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "{} repetitions (seeds {}–{}): {} models, {} honest and {} careless raters (~{} votes each), \
             an omnipresent attacker with {} votes over {} accounts promoting the model ranked {}; α = {}",
            c.repetitions,
            c.seed,
            c.seed.wrapping_add(c.repetitions as u64 - 1),
            c.models,
            c.honest_raters,
            c.careless_raters,
            c.votes_per_rater,
            c.attacker_votes,
            c.attacker_accounts,
            c.target_rank,
            c.rigging.alpha
        )?;
        writeln!(
            f,
            "{:>6} {:>11} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
            "seed", "target", "attackers", "careless", "honest", "clean", "attacked", "filtered"
        )?;
        for r in &self.repetitions {
            writeln!(
                f,
                "{:>6} {:>11} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
                r.seed,
                r.target,
                format!("{}/{}", r.attackers_flagged, r.attacker_accounts),
                format!("{}/{}", r.careless_flagged, r.careless_raters),
                format!("{}/{}", r.honest_flagged, r.honest_raters),
                format!("{:.0} #{}", r.target_rating_clean, r.target_rank_clean),
                format!(
                    "{:.0} #{}",
                    r.target_rating_attacked, r.target_rank_attacked
                ),
                format!(
                    "{:.0} #{}",
                    r.target_rating_filtered, r.target_rank_filtered
                ),
            )?;
        }
        writeln!(
            f,
            "attacker accounts flagged: {:.1}% ({:.1}% of their votes left out); careless raters flagged: {:.1}%; \
             honest raters flagged (false flags): {:.2}%",
            100.0 * self.detection_rate,
            100.0 * self.attacker_votes_left_out_rate,
            100.0 * self.careless_detection_rate,
            100.0 * self.false_flag_rate
        )?;
        writeln!(
            f,
            "flags by test (raters, all repetitions): attackers: {}",
            self.attacker_flags
        )?;
        writeln!(f, "  careless: {}", self.careless_flags)?;
        writeln!(f, "  honest: {}", self.honest_flags)?;
        write!(
            f,
            "target's rating shift vs the clean study: {:+.1} Elo without the filter, {:+.1} with it; \
             places gained: {:+.2} without, {:+.2} with",
            self.mean_shift_without_filter,
            self.mean_shift_with_filter,
            self.mean_rank_gain_without_filter,
            self.mean_rank_gain_with_filter
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RiggingSimulationConfig {
        RiggingSimulationConfig {
            honest_raters: 80,
            careless_raters: 4,
            repetitions: 3,
            seed: 1,
            ..RiggingSimulationConfig::default()
        }
    }

    #[test]
    fn the_filter_catches_an_omnipresent_attacker_and_undoes_most_of_its_shift() {
        let report = simulate_rigging(&small());
        println!("{report}");
        // The attack works without the filter (otherwise the comparison below says nothing) …
        assert!(
            report.mean_shift_without_filter > 15.0,
            "{}",
            report.mean_shift_without_filter
        );
        // … and the filter leaves out the attacker and few honest raters.
        assert!(report.detection_rate >= 0.9, "{report}");
        assert!(report.false_flag_rate <= 0.05, "{report}");
        assert!(
            report.mean_shift_with_filter.abs() < report.mean_shift_without_filter / 2.0,
            "{report}"
        );
        assert!(report.mean_rank_gain_with_filter <= report.mean_rank_gain_without_filter);
        // It is the loyalty test that catches the omnipresent attacker, and the careless raters are
        // caught by the tests meant for them (clickers by speed, left-clickers by side).
        let attackers: usize = report.repetitions.iter().map(|r| r.attackers_flagged).sum();
        assert_eq!(report.attacker_flags.model_loyalty, attackers, "{report}");
        assert_eq!(report.careless_flags.too_fast, 6, "{report}");
        assert_eq!(report.careless_flags.one_sided, 6, "{report}");
    }

    #[test]
    fn the_same_seed_gives_the_same_report_and_another_seed_another() {
        let config = RiggingSimulationConfig {
            repetitions: 1,
            honest_raters: 30,
            ..small()
        };
        assert_eq!(simulate_rigging(&config), simulate_rigging(&config));
        let other = RiggingSimulationConfig {
            seed: 2,
            ..config.clone()
        };
        assert_ne!(
            simulate_rigging(&config).repetitions[0].target_rating_attacked,
            simulate_rigging(&other).repetitions[0].target_rating_attacked
        );
    }

    #[test]
    fn without_an_attacker_nothing_moves_and_nobody_is_an_attacker() {
        let config = RiggingSimulationConfig {
            attacker_votes: 0,
            attacker_accounts: 0,
            repetitions: 1,
            ..small()
        };
        let report = simulate_rigging(&config);
        assert_eq!(report.mean_shift_without_filter, 0.0);
        assert_eq!(report.repetitions[0].attackers_flagged, 0);
        assert!(report.detection_rate.is_nan());
    }

    #[test]
    fn bad_configurations_are_rejected() {
        assert!(RiggingSimulationConfig::default().validate().is_ok());
        let bad = RiggingSimulationConfig {
            target_rank: 9,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("target rank"));
        let bad = RiggingSimulationConfig {
            attacker_accounts: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
