//! The leaderboard: Bradley–Terry ratings on the Elo scale with bootstrap and sandwich intervals,
//! Arena's rank upper bound, online Elo, the pairwise win matrix and style-controlled ratings.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
#[cfg(feature = "parallel")]
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregatedBattles, PairData};
use crate::bt::{
    bt_hessian_factor, bt_sandwich_covariance, davidson_covariance, fit_bradley_terry,
    fit_bradley_terry_chord, fit_davidson, sigmoid,
};
use crate::intervals::{quantile_sorted, wilson, z_for_level};
use crate::linalg::Matrix;
use crate::model::{Battle, Interval};
use crate::sampling::binomial;
use crate::style::{fit_style_controlled, StyleControlled};

/// Elo points per natural-log unit of odds: 400 points mean 10:1 odds.
pub const ELO_POINTS_PER_UNIT: f64 = 400.0 / std::f64::consts::LN_10;

/// How ties enter the rating model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieModel {
    /// A tie is half a win for each side (Chatbot Arena).
    #[default]
    HalfWin,
    /// Davidson (1970): ties have their own probability `ν √(πᵢ πⱼ)`, with `ν` fitted.
    Davidson,
}

/// Pins one model's rating to a chosen value instead of centring the mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    pub model: String,
    pub rating: f64,
}

/// Options of [`leaderboard`]. `Default` gives Arena-like settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaderboardOptions {
    pub tie_model: TieModel,
    /// Bootstrap rounds for the percentile intervals (0 skips the bootstrap; the sandwich interval
    /// then drives the rank upper bound). Default 1000.
    pub bootstrap_rounds: usize,
    /// Seed of the bootstrap; the same data and seed give identical output on any number of cores.
    pub seed: u64,
    /// Confidence level of every interval. Default 0.95.
    pub confidence: f64,
    /// Mean rating when no anchor is set. Default 1000.
    pub mean_rating: f64,
    /// When set and the model is present, that model is pinned at the given rating.
    pub anchor: Option<Anchor>,
    /// Precision of a Gaussian prior centred on the mean, in natural units. The default 0.01 (a prior
    /// standard deviation of 10 units, about 1,700 Elo points) is irrelevant for real data but keeps
    /// ratings finite when a model has won or lost every one of a handful of votes. 0 gives the
    /// plain maximum-likelihood estimate.
    pub prior_strength: f64,
    /// Models with fewer votes than this are marked provisional. Default 50.
    pub min_votes: u64,
    /// K of the online Elo shown for comparison. Default 4 (Chatbot Arena).
    pub elo_k: f64,
    /// Fit style-controlled ratings from the battles that carry style features. Default true.
    pub style_control: bool,
    /// Reweight over-represented pairs of models: each battle of a pair with `n` battles weighs
    /// `1 / max(n, 50)` (LMArena's 2025 rule), rescaled so the weights sum to the number of
    /// battles; intervals then come from the weighted sandwich and a bootstrap that keeps the
    /// weights. Ties as half a win only. Default false.
    pub reweight_pairs: bool,
}

/// Below this many battles a pair is not down-weighted further (LMArena's floor).
pub const REWEIGHT_FLOOR: u64 = 50;

impl Default for LeaderboardOptions {
    fn default() -> Self {
        LeaderboardOptions {
            tie_model: TieModel::HalfWin,
            bootstrap_rounds: 1000,
            seed: 0,
            confidence: 0.95,
            mean_rating: 1000.0,
            anchor: None,
            prior_strength: 0.01,
            min_votes: 50,
            elo_k: 4.0,
            style_control: true,
            reweight_pairs: false,
        }
    }
}

/// Most bootstrap rounds [`LeaderboardOptions::validate`] accepts.
pub const MAX_BOOTSTRAP_ROUNDS: usize = 100_000;

impl LeaderboardOptions {
    /// Checks options that come from users (CLI flags, API parameters) before they reach the
    /// computation, which would otherwise return NaN intervals or run for a very long time.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(format!(
                "confidence must be between 0 and 1 (exclusive), got {}",
                self.confidence
            ));
        }
        if self.bootstrap_rounds > MAX_BOOTSTRAP_ROUNDS {
            return Err(format!(
                "at most {MAX_BOOTSTRAP_ROUNDS} bootstrap rounds, got {}",
                self.bootstrap_rounds
            ));
        }
        if !(self.prior_strength >= 0.0 && self.prior_strength.is_finite()) {
            return Err(format!(
                "prior strength must be a finite number >= 0, got {}",
                self.prior_strength
            ));
        }
        if !(self.elo_k >= 0.0 && self.elo_k.is_finite()) {
            return Err(format!(
                "Elo K must be a finite number >= 0, got {}",
                self.elo_k
            ));
        }
        if !self.mean_rating.is_finite()
            || self.anchor.as_ref().is_some_and(|a| !a.rating.is_finite())
        {
            return Err("ratings must be finite numbers".to_string());
        }
        if self.reweight_pairs && self.tie_model == TieModel::Davidson {
            return Err(
                "pair reweighting works with ties as half a win, not with the Davidson tie model"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// One row of the leaderboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRating {
    pub model: String,
    /// Position by point estimate, 1 for the best.
    pub rank: usize,
    /// Arena's rank: 1 + the number of models whose lower bound is above this model's upper bound
    /// (bootstrap interval, or the sandwich interval without a bootstrap).
    pub rank_upper_bound: usize,
    pub rating: f64,
    /// Percentile bootstrap interval; `None` when no bootstrap was run.
    pub ci: Option<Interval>,
    /// Normal interval from the sandwich covariance (inverse Fisher information for Davidson).
    pub ci_sandwich: Option<Interval>,
    /// Standard error of the rating, in rating points, from the same covariance.
    pub standard_error: Option<f64>,
    pub votes: u64,
    pub wins: u64,
    pub losses: u64,
    /// Ties including "both bad".
    pub ties: u64,
    /// Share of points won, ties counting half.
    pub win_rate: f64,
    /// Fewer than `min_votes` votes: the rating is shown but should not be relied on.
    pub provisional: bool,
    /// Online Elo after replaying the battles in the order given; `None` from aggregated counts.
    pub online_elo: Option<f64>,
}

/// Head-to-head record of the row model against the column model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WinCell {
    pub wins: u64,
    pub losses: u64,
    pub ties: u64,
    pub n: u64,
    /// Ties count half.
    pub win_rate: f64,
    /// Wilson interval of `win_rate`.
    pub interval: Interval,
}

/// Pairwise win rates in leaderboard order; `observed[r][c]` is row model against column model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WinMatrix {
    pub models: Vec<String>,
    pub observed: Vec<Vec<Option<WinCell>>>,
    /// Win probability of the row model against the column model implied by the ratings
    /// (`σ(θ_row − θ_column)`, ties as half under the half-win model).
    pub predicted: Vec<Vec<f64>>,
    pub method: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    /// What was computed, in words.
    pub method: String,
    /// Battles between different models that entered the ratings.
    pub n_battles: u64,
    pub self_battles_skipped: u64,
    pub options: LeaderboardOptions,
    /// Whether the anchor in the options was applied (its model was present).
    pub anchor_applied: bool,
    /// Davidson's fitted tie parameter ν, under the Davidson tie model.
    pub tie_parameter: Option<f64>,
    /// Bootstrap rounds run.
    pub bootstrap_rounds: usize,
    /// Sorted by rating, best first.
    pub models: Vec<ModelRating>,
    pub win_matrix: WinMatrix,
    /// Ratings with style held equal; `None` without style features or when switched off.
    pub style_control: Option<StyleControlled>,
    /// Whether the main fit converged.
    pub converged: bool,
    /// The pair reweighting and its effect, when `reweight_pairs` is set.
    #[serde(default)]
    pub reweighting: Option<Reweighting>,
    /// What prompt de-duplication left out before the fit, when the caller de-duplicated.
    #[serde(default)]
    pub deduplication: Option<crate::dedup::Deduplication>,
}

/// The effect of reweighting over-represented pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reweighting {
    pub method: String,
    /// Pairs with more than [`REWEIGHT_FLOOR`] battles, whose battles weigh less than the others'.
    pub pairs_down_weighted: u64,
    /// Kish's effective sample size `(Σw)² / Σw²`, against `n_battles` unweighted.
    pub effective_battles: f64,
    /// The model whose rating moved most against the unweighted fit, and by how many points.
    pub largest_change: Option<(String, f64)>,
}

/// Computes the leaderboard of `battles` (given in chronological order, which only online Elo uses).
pub fn leaderboard(battles: &[Battle], options: &LeaderboardOptions) -> Leaderboard {
    let (aggregated, elo) = AggregatedBattles::from_battles_with_elo(
        battles,
        Some((options.elo_k, options.mean_rating)),
    );
    let online: Vec<Option<f64>> = (0..aggregated.models.len())
        .map(|i| elo.get(i).copied())
        .collect();
    let style = if options.style_control {
        fit_style_controlled(battles, options)
    } else {
        None
    };
    build(&aggregated, options, online, style)
}

/// The leaderboard from counts already aggregated (for example by a database query). Online Elo
/// needs the battle order and style control needs per-battle features, so both are absent.
pub fn leaderboard_from_counts(
    aggregated: &AggregatedBattles,
    options: &LeaderboardOptions,
) -> Leaderboard {
    build(
        aggregated,
        options,
        vec![None; aggregated.models.len()],
        None,
    )
}

/// How natural-unit ratings become points: scale, then centre on the mean or on the anchor.
pub(crate) struct Scaling {
    anchor_index: Option<usize>,
    anchor_rating: f64,
    mean_rating: f64,
}

impl Scaling {
    pub(crate) fn new(models: &[String], options: &LeaderboardOptions) -> Scaling {
        let anchor_index = options.anchor.as_ref().and_then(|anchor| {
            models
                .binary_search_by(|candidate| candidate.as_str().cmp(&anchor.model))
                .ok()
        });
        Scaling {
            anchor_index,
            anchor_rating: options.anchor.as_ref().map_or(0.0, |a| a.rating),
            mean_rating: options.mean_rating,
        }
    }

    pub(crate) fn apply(&self, theta: &[f64]) -> Vec<f64> {
        let (reference, offset) = match self.anchor_index {
            Some(index) => (theta[index], self.anchor_rating),
            None => (
                theta.iter().sum::<f64>() / theta.len().max(1) as f64,
                self.mean_rating,
            ),
        };
        theta
            .iter()
            .map(|t| (t - reference) * ELO_POINTS_PER_UNIT + offset)
            .collect()
    }

    /// The contrast whose variance is the variance of model `index`'s reported rating.
    pub(crate) fn contrast(&self, index: usize, n: usize) -> Vec<f64> {
        let mut contrast = match self.anchor_index {
            Some(anchor) => {
                let mut c = vec![0.0; n];
                c[anchor] -= 1.0;
                c
            }
            None => vec![-1.0 / n as f64; n],
        };
        contrast[index] += 1.0;
        contrast
    }
}

fn fit_theta(
    n: usize,
    pairs: &[PairData],
    options: &LeaderboardOptions,
    start: Option<(&[f64], Option<f64>)>,
) -> (Vec<f64>, Option<f64>, bool) {
    match options.tie_model {
        TieModel::HalfWin => {
            let fit = fit_bradley_terry(n, pairs, options.prior_strength, start.map(|s| s.0));
            (fit.theta, None, fit.converged)
        }
        TieModel::Davidson => {
            let start = start.and_then(|(theta, log_tie)| log_tie.map(|l| (theta, l)));
            let fit = fit_davidson(n, pairs, options.prior_strength, start);
            (fit.theta, fit.log_tie_parameter, fit.converged)
        }
    }
}

fn build(
    aggregated: &AggregatedBattles,
    options: &LeaderboardOptions,
    online: Vec<Option<f64>>,
    style_control: Option<StyleControlled>,
) -> Leaderboard {
    let n = aggregated.models.len();
    let raw_pairs = aggregated.pair_data();
    let weights: Option<Vec<f64>> = options.reweight_pairs.then(|| pair_weights(&raw_pairs));
    let pairs = match &weights {
        Some(weights) => weighted(&raw_pairs, weights),
        None => raw_pairs.clone(),
    };
    let scaling = Scaling::new(&aggregated.models, options);
    let (theta, log_tie, converged) = fit_theta(n, &pairs, options, None);
    let ratings = scaling.apply(&theta);

    let bootstrap = bootstrap_intervals(
        aggregated,
        &raw_pairs,
        weights.as_deref(),
        &pairs,
        &theta,
        log_tie,
        &scaling,
        options,
    );
    let reweighting = weights.as_ref().map(|weights| {
        let unweighted = scaling.apply(&fit_theta(n, &raw_pairs, options, None).0);
        let largest_change = (0..n)
            .map(|i| (i, ratings[i] - unweighted[i]))
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, change)| (aggregated.models[i].clone(), change));
        let (sum, sum_squares) = raw_pairs.iter().zip(weights).fold((0.0, 0.0), |(s, q), (p, w)| {
            (s + p.total() * w, q + p.total() * w * w)
        });
        Reweighting {
            method: format!(
                "each battle of a pair with n battles weighs 1/max(n, {REWEIGHT_FLOOR}), rescaled so the \
                 weights sum to the number of battles (LMArena's 2025 rule); weighted sandwich \
                 intervals, and a bootstrap that resamples battles and keeps their weights"
            ),
            pairs_down_weighted: raw_pairs
                .iter()
                .filter(|p| p.total() > REWEIGHT_FLOOR as f64)
                .count() as u64,
            effective_battles: if sum_squares > 0.0 { sum * sum / sum_squares } else { 0.0 },
            largest_change,
        }
    });

    let covariance: Option<Matrix> = match options.tie_model {
        TieModel::HalfWin => bt_sandwich_covariance(
            n,
            &pairs,
            &theta,
            options.prior_strength,
            weights.as_deref(),
        ),
        TieModel::Davidson => davidson_covariance(
            n,
            &pairs,
            &theta,
            log_tie.unwrap_or(f64::NEG_INFINITY),
            options.prior_strength,
        ),
    };
    let z = z_for_level(options.confidence);
    let standard_errors: Vec<Option<f64>> = (0..n)
        .map(|i| {
            let covariance = covariance.as_ref()?;
            let variance = covariance.quadratic_form(&scaling.contrast(i, n));
            (variance.is_finite() && variance >= 0.0).then(|| variance.sqrt() * ELO_POINTS_PER_UNIT)
        })
        .collect();

    let votes = aggregated.votes_per_model();
    let records = aggregated.record_per_model();
    let mut rows: Vec<ModelRating> = (0..n)
        .map(|i| {
            let (wins, losses, ties) = records[i];
            ModelRating {
                model: aggregated.models[i].clone(),
                rank: 0,
                rank_upper_bound: 0,
                rating: ratings[i],
                ci: bootstrap.as_ref().map(|intervals| intervals[i]),
                ci_sandwich: standard_errors[i].map(|se| {
                    Interval::new(ratings[i] - z * se, ratings[i] + z * se, options.confidence)
                }),
                standard_error: standard_errors[i],
                votes: votes[i],
                wins,
                losses,
                ties,
                win_rate: if votes[i] == 0 {
                    0.0
                } else {
                    (wins as f64 + 0.5 * ties as f64) / votes[i] as f64
                },
                provisional: votes[i] < options.min_votes,
                online_elo: online[i],
            }
        })
        .collect();

    // Order by rating, best first; names break exact ties so the order is deterministic.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        ratings[b]
            .total_cmp(&ratings[a])
            .then_with(|| aggregated.models[a].cmp(&aggregated.models[b]))
    });
    assign_ranks(&mut rows);
    let win_matrix = win_matrix(aggregated, &theta, log_tie, &order, options);
    let rows_in_order: Vec<ModelRating> = order.iter().map(|&i| rows[i].clone()).collect();
    rows = rows_in_order;
    for (position, row) in rows.iter_mut().enumerate() {
        row.rank = position + 1;
    }

    let tie_description = match options.tie_model {
        TieModel::HalfWin => "ties counted as half a win for each side",
        TieModel::Davidson => "Davidson tie model",
    };
    let interval_description = if options.bootstrap_rounds > 0 {
        format!(
            "{:.0}% percentile intervals from {} multinomial bootstrap rounds of the pair counts (seed {})",
            options.confidence * 100.0,
            options.bootstrap_rounds,
            options.seed
        )
    } else {
        format!("{:.0}% normal intervals", options.confidence * 100.0)
    };
    let covariance_description = match options.tie_model {
        TieModel::HalfWin => "sandwich covariance",
        TieModel::Davidson => "inverse Fisher information",
    };
    let scale_description = match (&options.anchor, scaling.anchor_index) {
        (Some(anchor), Some(_)) => format!("{} fixed at {}", anchor.model, anchor.rating),
        _ => format!("mean {}", options.mean_rating),
    };
    let weighting_description = if options.reweight_pairs {
        format!(" (pairs reweighted: 1/max(n, {REWEIGHT_FLOOR}) per battle)")
    } else {
        String::new()
    };
    Leaderboard {
        method: format!(
            "Bradley-Terry maximum likelihood on aggregated pair counts{weighting_description}, {tie_description}; \
             Elo scale (400/ln 10 points per log-odds unit, {scale_description}); \
             {interval_description}; second interval from the {covariance_description}; \
             rank upper bound = 1 + models whose lower bound exceeds this model's upper bound"
        ),
        n_battles: aggregated.n_battles(),
        self_battles_skipped: aggregated.self_battles_skipped,
        options: options.clone(),
        anchor_applied: scaling.anchor_index.is_some(),
        tie_parameter: log_tie.map(f64::exp),
        bootstrap_rounds: options.bootstrap_rounds,
        models: rows,
        win_matrix,
        style_control,
        converged,
        reweighting,
        deduplication: None,
    }
}

/// Per-pair battle weights `c / max(n, 50)`, with `c` chosen so the weights of all battles sum to
/// their number.
fn pair_weights(pairs: &[PairData]) -> Vec<f64> {
    let raw: Vec<f64> = pairs
        .iter()
        .map(|p| 1.0 / p.total().max(REWEIGHT_FLOOR as f64))
        .collect();
    let battles: f64 = pairs.iter().map(PairData::total).sum();
    let weighted: f64 = pairs.iter().zip(&raw).map(|(p, w)| p.total() * w).sum();
    let scale = if weighted > 0.0 {
        battles / weighted
    } else {
        1.0
    };
    raw.iter().map(|w| w * scale).collect()
}

/// The pairs' counts multiplied by their weights.
fn weighted(pairs: &[PairData], weights: &[f64]) -> Vec<PairData> {
    pairs
        .iter()
        .zip(weights)
        .map(|(p, w)| PairData {
            first: p.first,
            second: p.second,
            first_wins: p.first_wins * w,
            second_wins: p.second_wins * w,
            ties: p.ties * w,
        })
        .collect()
}

/// Arena's rank: 1 + the number of models whose lower bound is above this model's upper bound.
fn assign_ranks(rows: &mut [ModelRating]) {
    let bounds: Vec<Option<Interval>> = rows.iter().map(|r| r.ci.or(r.ci_sandwich)).collect();
    for (i, row) in rows.iter_mut().enumerate() {
        let upper = bounds[i].map_or(row.rating, |b| b.upper);
        let better = bounds
            .iter()
            .enumerate()
            .filter(|&(j, other)| j != i && other.is_some_and(|o| o.lower > upper))
            .count();
        row.rank_upper_bound = 1 + better;
    }
}

/// Draws one multinomial resample of the cells (first wins, second wins, ties of each pair) with
/// the original total, by sequential conditional binomials: O(cells), independent of the number of
/// battles.
pub(crate) fn resample_pairs(
    pairs: &[PairData],
    total: u64,
    rng: &mut ChaCha8Rng,
) -> Vec<PairData> {
    let mut remaining_draws = total;
    let mut remaining_mass = total;
    let mut draw = |count: f64| -> f64 {
        let count = count as u64;
        if count == 0 || remaining_draws == 0 {
            return 0.0;
        }
        let drawn = if count >= remaining_mass {
            remaining_draws
        } else {
            binomial(remaining_draws, count as f64 / remaining_mass as f64, rng)
        };
        remaining_draws -= drawn;
        remaining_mass -= count;
        drawn as f64
    };
    pairs
        .iter()
        .map(|pair| PairData {
            first: pair.first,
            second: pair.second,
            first_wins: draw(pair.first_wins),
            second_wins: draw(pair.second_wins),
            ties: draw(pair.ties),
        })
        .collect()
}

/// Percentile bootstrap intervals in rating points, or `None` when no rounds are requested.
#[allow(clippy::too_many_arguments)]
fn bootstrap_intervals(
    aggregated: &AggregatedBattles,
    raw_pairs: &[PairData],
    weights: Option<&[f64]>,
    pairs: &[PairData],
    theta: &[f64],
    log_tie: Option<f64>,
    scaling: &Scaling,
    options: &LeaderboardOptions,
) -> Option<Vec<Interval>> {
    let n = aggregated.models.len();
    if options.bootstrap_rounds == 0 || n == 0 {
        return None;
    }
    let total = aggregated.n_battles();
    let chord_factor = match options.tie_model {
        TieModel::HalfWin => bt_hessian_factor(n, pairs, theta, options.prior_strength),
        TieModel::Davidson => None,
    };
    // Every round owns a ChaCha stream numbered by the round, so results do not depend on how rayon
    // schedules rounds over threads.
    let rounds = 0..options.bootstrap_rounds;
    #[cfg(feature = "parallel")]
    let rounds = rounds.into_par_iter();
    let replicates: Vec<Vec<f64>> = rounds
        .map(|round| {
            let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
            rng.set_stream(round as u64);
            let mut resampled = resample_pairs(raw_pairs, total, &mut rng);
            if let Some(weights) = weights {
                resampled = weighted(&resampled, weights);
            }
            let replicate = match &chord_factor {
                Some(factor) => {
                    fit_bradley_terry_chord(n, &resampled, options.prior_strength, theta, factor)
                        .theta
                }
                None => fit_theta(n, &resampled, options, Some((theta, log_tie))).0,
            };
            scaling.apply(&replicate)
        })
        .collect();
    let tail = (1.0 - options.confidence) / 2.0;
    let mut column = vec![0.0; replicates.len()];
    Some(
        (0..n)
            .map(|i| {
                for (slot, replicate) in column.iter_mut().zip(&replicates) {
                    *slot = replicate[i];
                }
                column.sort_by(f64::total_cmp);
                Interval::new(
                    quantile_sorted(&column, tail),
                    quantile_sorted(&column, 1.0 - tail),
                    options.confidence,
                )
            })
            .collect(),
    )
}

/// Expected score (win + half a tie) of a model `d` natural units above its opponent.
fn expected_score(d: f64, log_tie: Option<f64>) -> f64 {
    match log_tie {
        Some(log_tie) if log_tie.is_finite() => {
            // Davidson: P(win) = eˣ/Z, P(tie) = ν/Z with x = d/2, Z = eˣ + e⁻ˣ + ν.
            let x = 0.5 * d;
            let largest = x.abs().max(log_tie);
            let (up, down, tie) = (
                (x - largest).exp(),
                (-x - largest).exp(),
                (log_tie - largest).exp(),
            );
            (up + 0.5 * tie) / (up + down + tie)
        }
        _ => sigmoid(d),
    }
}

fn win_matrix(
    aggregated: &AggregatedBattles,
    theta: &[f64],
    log_tie: Option<f64>,
    order: &[usize],
    options: &LeaderboardOptions,
) -> WinMatrix {
    let n = aggregated.models.len();
    let mut observed: Vec<Vec<Option<WinCell>>> = vec![vec![None; n]; n];
    let mut position = vec![0; n];
    for (p, &model) in order.iter().enumerate() {
        position[model] = p;
    }
    for pair in &aggregated.pairs {
        let total = pair.total();
        let ties = pair.all_ties();
        for (row, column, wins, losses) in [
            (pair.first, pair.second, pair.first_wins, pair.second_wins),
            (pair.second, pair.first, pair.second_wins, pair.first_wins),
        ] {
            let score = wins as f64 + 0.5 * ties as f64;
            observed[position[row]][position[column]] = Some(WinCell {
                wins,
                losses,
                ties,
                n: total,
                win_rate: score / total as f64,
                interval: wilson(score, total, options.confidence).expect("total is positive"),
            });
        }
    }
    let predicted = order
        .iter()
        .map(|&row| {
            order
                .iter()
                .map(|&column| expected_score(theta[row] - theta[column], log_tie))
                .collect()
        })
        .collect();
    WinMatrix {
        models: order.iter().map(|&i| aggregated.models[i].clone()).collect(),
        observed,
        predicted,
        method: format!(
            "observed win rate with ties as half and {:.0}% Wilson interval; predicted = expected score (ties as half) implied by the ratings",
            options.confidence * 100.0
        ),
    }
}
