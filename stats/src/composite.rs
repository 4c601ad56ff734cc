//! A composite ranking: one rating vector fitted to several sources (studies, imported datasets,
//! battles files) at once, each source's votes counted with its own weight.
//!
//! The fit is Bradley–Terry (ties as half) on the weighted sum of every source's pair counts, so a
//! model seen in only one source is still placed on the common scale through the models it shares
//! with the others. Intervals: the sandwich covariance with each source's battles weighted (`H`
//! from the weighted counts, `M` with the squared weights), and a bootstrap that resamples every
//! source on its own (its number of battles kept) before weighting.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
#[cfg(feature = "parallel")]
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregatedBattles, PairData};
use crate::bt::{bt_sandwich_covariance_cells, fit_bradley_terry};
use crate::intervals::{quantile_sorted, z_for_level};
use crate::leaderboard::{resample_pairs, LeaderboardOptions, Scaling, ELO_POINTS_PER_UNIT};
use crate::model::{Battle, Interval};

/// One source of a composite ranking.
pub struct Source<'a> {
    pub name: String,
    pub battles: &'a [Battle],
    /// How much each of its battles counts (1 = as much as a battle of an unweighted source).
    pub weight: f64,
}

/// A source as it entered the fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub name: String,
    pub weight: f64,
    pub battles: u64,
    pub models: Vec<String>,
}

/// One model of the composite ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompositeRating {
    pub model: String,
    pub rank: usize,
    /// 1 + the models whose lower bound is above this model's upper bound.
    pub rank_upper_bound: usize,
    pub rating: f64,
    /// Percentile bootstrap interval (each source resampled on its own); `None` without rounds.
    pub ci: Option<Interval>,
    pub ci_sandwich: Option<Interval>,
    /// Battles of the model in each source, in the order of [`Composite::sources`].
    pub votes_by_source: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Composite {
    pub method: String,
    pub sources: Vec<SourceSummary>,
    /// Best first.
    pub models: Vec<CompositeRating>,
    pub converged: bool,
}

/// Checks the weights a person gave: finite, not negative, and not all zero.
pub fn validate_weights(weights: &[f64]) -> Result<(), String> {
    if let Some(bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(format!(
            "a source weight must be a finite number >= 0, got {bad}"
        ));
    }
    if !weights.is_empty() && weights.iter().all(|w| *w == 0.0) {
        return Err("at least one source weight must be above 0".to_string());
    }
    Ok(())
}

/// Fits one rating vector to all sources. Options as for [`crate::leaderboard()`]: the half-win
/// tie model, the prior, the seed, rounds and confidence level, mean rating or anchor.
pub fn composite(sources: &[Source<'_>], options: &LeaderboardOptions) -> Composite {
    let aggregated: Vec<AggregatedBattles> = sources
        .iter()
        .map(|s| AggregatedBattles::from_battles(s.battles))
        .collect();
    let mut models: Vec<String> = aggregated
        .iter()
        .flat_map(|a| a.models.iter().cloned())
        .collect();
    models.sort();
    models.dedup();
    let index: BTreeMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let n = models.len();
    // Every source's cells renumbered to the common models: (raw counts, weight).
    let cells_by_source: Vec<Vec<PairData>> = aggregated
        .iter()
        .map(|a| {
            a.pair_data()
                .into_iter()
                .map(|p| {
                    let (x, y) = (
                        index[a.models[p.first].as_str()],
                        index[a.models[p.second].as_str()],
                    );
                    if x < y {
                        PairData {
                            first: x,
                            second: y,
                            ..p
                        }
                    } else {
                        PairData {
                            first: y,
                            second: x,
                            first_wins: p.second_wins,
                            second_wins: p.first_wins,
                            ties: p.ties,
                        }
                    }
                })
                .collect()
        })
        .collect();
    let weights: Vec<f64> = sources.iter().map(|s| s.weight).collect();
    let combine = |cells: &[Vec<PairData>]| -> Vec<PairData> {
        let mut combined: BTreeMap<(usize, usize), PairData> = BTreeMap::new();
        for (source_cells, weight) in cells.iter().zip(&weights) {
            if *weight == 0.0 {
                continue;
            }
            for cell in source_cells {
                let entry = combined
                    .entry((cell.first, cell.second))
                    .or_insert(PairData {
                        first: cell.first,
                        second: cell.second,
                        first_wins: 0.0,
                        second_wins: 0.0,
                        ties: 0.0,
                    });
                entry.first_wins += weight * cell.first_wins;
                entry.second_wins += weight * cell.second_wins;
                entry.ties += weight * cell.ties;
            }
        }
        combined.into_values().collect()
    };
    let combined = combine(&cells_by_source);
    let fit = fit_bradley_terry(n, &combined, options.prior_strength, None);
    let scaling = Scaling::new(&models, options);
    let ratings = scaling.apply(&fit.theta);

    let weighted_cells: Vec<(PairData, f64)> = cells_by_source
        .iter()
        .zip(&weights)
        .flat_map(|(cells, w)| cells.iter().map(move |c| (*c, *w)))
        .collect();
    let covariance = bt_sandwich_covariance_cells(
        n,
        &combined,
        &weighted_cells,
        &fit.theta,
        options.prior_strength,
    );
    let z = z_for_level(options.confidence);
    let sandwich: Vec<Option<Interval>> = (0..n)
        .map(|i| {
            let covariance = covariance.as_ref()?;
            let variance = covariance.quadratic_form(&scaling.contrast(i, n));
            (variance.is_finite() && variance >= 0.0).then(|| {
                let se = variance.sqrt() * ELO_POINTS_PER_UNIT;
                Interval::new(ratings[i] - z * se, ratings[i] + z * se, options.confidence)
            })
        })
        .collect();

    let bootstrap: Option<Vec<Interval>> = (options.bootstrap_rounds > 0 && n > 0).then(|| {
        let totals: Vec<u64> = aggregated
            .iter()
            .map(AggregatedBattles::n_battles)
            .collect();
        let rounds = 0..options.bootstrap_rounds;
        #[cfg(feature = "parallel")]
        let rounds = rounds.into_par_iter();
        let replicates: Vec<Vec<f64>> = rounds
            .map(|round| {
                let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
                rng.set_stream(round as u64);
                let resampled: Vec<Vec<PairData>> = cells_by_source
                    .iter()
                    .zip(&totals)
                    .map(|(cells, &total)| resample_pairs(cells, total, &mut rng))
                    .collect();
                let replicate = fit_bradley_terry(
                    n,
                    &combine(&resampled),
                    options.prior_strength,
                    Some(&fit.theta),
                );
                scaling.apply(&replicate.theta)
            })
            .collect();
        let tail = (1.0 - options.confidence) / 2.0;
        (0..n)
            .map(|i| {
                let mut column: Vec<f64> = replicates.iter().map(|r| r[i]).collect();
                column.sort_by(f64::total_cmp);
                Interval::new(
                    quantile_sorted(&column, tail),
                    quantile_sorted(&column, 1.0 - tail),
                    options.confidence,
                )
            })
            .collect()
    });

    let votes_by_source: Vec<Vec<u64>> = aggregated
        .iter()
        .map(|a| {
            let per_model = a.votes_per_model();
            let mut votes = vec![0; n];
            for (i, model) in a.models.iter().enumerate() {
                votes[index[model.as_str()]] = per_model[i];
            }
            votes
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        ratings[b]
            .total_cmp(&ratings[a])
            .then_with(|| models[a].cmp(&models[b]))
    });
    let bounds: Vec<Option<Interval>> = (0..n)
        .map(|i| bootstrap.as_ref().map(|b| b[i]).or(sandwich[i]))
        .collect();
    let rows = order
        .iter()
        .enumerate()
        .map(|(position, &i)| {
            let upper = bounds[i].map_or(ratings[i], |b| b.upper);
            CompositeRating {
                model: models[i].clone(),
                rank: position + 1,
                rank_upper_bound: 1 + bounds
                    .iter()
                    .enumerate()
                    .filter(|&(j, b)| j != i && b.is_some_and(|b| b.lower > upper))
                    .count(),
                rating: ratings[i],
                ci: bootstrap.as_ref().map(|b| b[i]),
                ci_sandwich: sandwich[i],
                votes_by_source: votes_by_source.iter().map(|v| v[i]).collect(),
            }
        })
        .collect();
    Composite {
        method: format!(
            "one Bradley-Terry fit (ties as half) to the weighted sum of every source's pair counts \
             ({}); {:.0}% percentile intervals from {} bootstrap rounds resampling each source on its \
             own (seed {}), and weighted sandwich intervals",
            sources
                .iter()
                .map(|s| format!("{} x{}", s.name, s.weight))
                .collect::<Vec<_>>()
                .join(", "),
            options.confidence * 100.0,
            options.bootstrap_rounds,
            options.seed
        ),
        sources: sources
            .iter()
            .zip(&aggregated)
            .map(|(s, a)| SourceSummary {
                name: s.name.clone(),
                weight: s.weight,
                battles: a.n_battles(),
                models: a.models.clone(),
            })
            .collect(),
        models: rows,
        converged: fit.converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    fn votes(a: &str, b: &str, a_wins: usize, b_wins: usize) -> Vec<Battle> {
        let mut battles = vec![Battle::new(a, b, Outcome::AWins); a_wins];
        battles.extend(vec![Battle::new(b, a, Outcome::AWins); b_wins]);
        battles
    }

    /// Source one: A beats B 30–10; source two: 10–10, weighted 3. Combined: 30 + 30 = 60 wins
    /// against 10 + 30 = 40, so A − B = ln 1.5 natural units = 70.4 Elo points.
    #[test]
    fn weights_multiply_each_sources_counts() {
        let one = votes("A", "B", 30, 10);
        let two = votes("A", "B", 10, 10);
        let options = LeaderboardOptions {
            prior_strength: 0.0,
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        };
        let result = composite(
            &[
                Source {
                    name: "one".into(),
                    battles: &one,
                    weight: 1.0,
                },
                Source {
                    name: "two".into(),
                    battles: &two,
                    weight: 3.0,
                },
            ],
            &options,
        );
        let a = result.models.iter().find(|m| m.model == "A").unwrap();
        let b = result.models.iter().find(|m| m.model == "B").unwrap();
        assert!((a.rating - b.rating - 1.5f64.ln() * ELO_POINTS_PER_UNIT).abs() < 1e-6);
        assert_eq!(a.votes_by_source, vec![40, 20]);
        assert_eq!(result.sources[1].battles, 20);
        // Weight 0 leaves the second source out: 30–10 is ln 3.
        let result = composite(
            &[
                Source {
                    name: "one".into(),
                    battles: &one,
                    weight: 1.0,
                },
                Source {
                    name: "two".into(),
                    battles: &two,
                    weight: 0.0,
                },
            ],
            &options,
        );
        let gap = result.models[0].rating - result.models[1].rating;
        assert!((gap - 3f64.ln() * ELO_POINTS_PER_UNIT).abs() < 1e-6);
    }

    #[test]
    fn weights_from_users_are_checked() {
        assert!(validate_weights(&[1.0, 0.5]).is_ok());
        assert!(validate_weights(&[1.0, -1.0]).unwrap_err().contains("-1"));
        assert!(validate_weights(&[0.0, 0.0]).is_err());
        assert!(validate_weights(&[f64::NAN]).is_err());
    }
}
