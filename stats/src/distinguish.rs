//! Distinguishability: can raters tell which response came from the closed model? From the answers
//! to "which one is the closed model?", the identification accuracy per model pair with an exact
//! interval and test against chance, and the sensitivity d′ using the confidence ratings.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::intervals::{exact_proportion, normal_quantile, quantile_sorted};
use crate::model::{Interval, Proportion};

/// One answer to "which response is the closed model's?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentificationGuess {
    pub model_a: String,
    pub model_b: String,
    /// Whether the rater picked the side that really was the closed model.
    pub correct: bool,
    /// Confidence on a scale from 1 (guessing) up to the study's maximum; `None` when not asked.
    pub confidence: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistinguishabilityOptions {
    pub confidence_level: f64,
    /// Bootstrap rounds for the interval of the confidence-rating d′.
    pub bootstrap_rounds: usize,
    pub seed: u64,
}

impl Default for DistinguishabilityOptions {
    fn default() -> Self {
        DistinguishabilityOptions {
            confidence_level: 0.95,
            bootstrap_rounds: 1000,
            seed: 0,
        }
    }
}

/// Sensitivity d′ (two-alternative forced choice) with its interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DPrime {
    pub value: f64,
    pub interval: Option<Interval>,
    /// Answers that entered the estimate.
    pub n: u64,
    pub method: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairDistinguishability {
    /// The pair, names in sorted order; "all pairs" rows use `*`.
    pub model_a: String,
    pub model_b: String,
    pub n: u64,
    /// Identification accuracy with a Clopper–Pearson interval and an exact test against 50%.
    pub accuracy: Proportion,
    pub d_prime: Option<DPrime>,
    /// The result in words.
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distinguishability {
    pub method: String,
    pub n: u64,
    /// All answers pooled.
    pub overall: PairDistinguishability,
    pub pairs: Vec<PairDistinguishability>,
}

pub fn distinguishability(
    guesses: &[IdentificationGuess],
    options: &DistinguishabilityOptions,
) -> Distinguishability {
    let mut by_pair: BTreeMap<(String, String), Vec<&IdentificationGuess>> = BTreeMap::new();
    for guess in guesses {
        let key = if guess.model_a <= guess.model_b {
            (guess.model_a.clone(), guess.model_b.clone())
        } else {
            (guess.model_b.clone(), guess.model_a.clone())
        };
        by_pair.entry(key).or_default().push(guess);
    }
    let all: Vec<&IdentificationGuess> = guesses.iter().collect();
    let overall = summarise("*".to_string(), "*".to_string(), &all, options);
    let pairs = by_pair
        .into_iter()
        .map(|((a, b), group)| summarise(a, b, &group, options))
        .collect();
    Distinguishability {
        method: format!(
            "identification accuracy with {:.0}% Clopper-Pearson interval and exact two-sided binomial test against 50%; \
             d' for two-alternative forced choice (d' = sqrt(2) z(accuracy) without confidence ratings; with them, \
             from the confidence-rating ROC of an unbiased equal-variance observer, averaging z(H) - z(F) over criteria \
             with the log-linear correction, interval from {} bootstrap rounds over answers, seed {})",
            options.confidence_level * 100.0,
            options.bootstrap_rounds,
            options.seed
        ),
        n: guesses.len() as u64,
        overall,
        pairs,
    }
}

fn summarise(
    model_a: String,
    model_b: String,
    guesses: &[&IdentificationGuess],
    options: &DistinguishabilityOptions,
) -> PairDistinguishability {
    let n = guesses.len() as u64;
    let correct = guesses.iter().filter(|g| g.correct).count() as u64;
    let accuracy = exact_proportion(correct, n, options.confidence_level);
    let d_prime = d_prime(guesses, &accuracy, options);
    let summary = match (accuracy.estimate, accuracy.p_value_vs_half) {
        (Some(estimate), Some(p)) if p < 0.05 && estimate > 0.5 => format!(
            "Raters identify the closed model {:.1}% of the time, better than chance (p = {p:.3}, n = {n}).",
            estimate * 100.0
        ),
        (Some(estimate), Some(p)) if p < 0.05 => format!(
            "Raters pick the wrong model {:.1}% of the time, systematically (p = {p:.3}, n = {n}).",
            (1.0 - estimate) * 100.0
        ),
        (Some(estimate), Some(p)) => format!(
            "Raters identify the closed model {:.1}% of the time, not distinguishable from chance (p = {p:.3}, n = {n}).",
            estimate * 100.0
        ),
        _ => "No answers yet.".to_string(),
    };
    PairDistinguishability {
        model_a,
        model_b,
        n,
        accuracy,
        d_prime,
        summary,
    }
}

fn d_prime(
    guesses: &[&IdentificationGuess],
    accuracy: &Proportion,
    options: &DistinguishabilityOptions,
) -> Option<DPrime> {
    let rated: Vec<(bool, u8)> = guesses
        .iter()
        .filter_map(|g| g.confidence.map(|c| (g.correct, c.max(1))))
        .collect();
    if rated.is_empty() {
        let n = accuracy.n;
        // With a log-linear correction so that perfect accuracy gives a finite d′.
        let corrected = (accuracy.successes + 0.5) / (n as f64 + 1.0);
        let value = std::f64::consts::SQRT_2 * normal_quantile(corrected);
        let interval = accuracy.interval.map(|i| {
            let transform = |p: f64| {
                std::f64::consts::SQRT_2
                    * normal_quantile(p.clamp(0.5 / (n as f64 + 1.0), 1.0 - 0.5 / (n as f64 + 1.0)))
            };
            Interval::new(transform(i.lower), transform(i.upper), i.level)
        });
        return (n > 0).then(|| DPrime {
            value,
            interval,
            n,
            method: "sqrt(2) z(accuracy), log-linear corrected; interval transformed from Clopper-Pearson".to_string(),
        });
    }
    let levels = rated.iter().map(|&(_, c)| c).max().unwrap_or(1);
    let value = d_prime_from_ratings(&rated, levels);
    let interval = (options.bootstrap_rounds > 0).then(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut sample = vec![(false, 1u8); rated.len()];
        let mut replicates: Vec<f64> = (0..options.bootstrap_rounds)
            .map(|_| {
                for slot in sample.iter_mut() {
                    *slot = rated[rng.gen_range(0..rated.len())];
                }
                d_prime_from_ratings(&sample, levels)
            })
            .collect();
        replicates.sort_by(f64::total_cmp);
        let tail = (1.0 - options.confidence_level) / 2.0;
        Interval::new(
            quantile_sorted(&replicates, tail),
            quantile_sorted(&replicates, 1.0 - tail),
            options.confidence_level,
        )
    });
    Some(DPrime {
        value,
        interval,
        n: rated.len() as u64,
        method: "confidence-rating ROC, mean of z(H) - z(F) over criteria, log-linear corrected, times 1/sqrt(2); percentile bootstrap interval".to_string(),
    })
}

/// d′ from (correct, confidence) answers with confidence in `1..=levels`.
///
/// The evidence `D` for the true closed side is taken as `N(μ, 1)`; "correct with confidence c" and
/// "wrong with confidence c" are bins of `D` above 0 and below 0, with criteria symmetric around 0
/// because the observer does not know which side is which. For a criterion `t`, the hit rate
/// `P(D > t)` and the mirrored false-alarm rate `P(D < −t)` satisfy `z(H) − z(F) = 2μ`, so `μ` is
/// estimated by averaging over the `levels` criteria (t = 0 is plain accuracy). In two-alternative
/// forced choice `μ = d′/√2`.
fn d_prime_from_ratings(rated: &[(bool, u8)], levels: u8) -> f64 {
    let levels = usize::from(levels);
    // Category 0..2·levels: wrong & most confident first, correct & most confident last.
    let mut counts = vec![0usize; 2 * levels];
    for &(correct, confidence) in rated {
        let c = usize::from(confidence).min(levels);
        let category = if correct { levels + c - 1 } else { levels - c };
        counts[category] += 1;
    }
    let n = rated.len() as f64;
    let corrected = |count: usize| (count as f64 + 0.5) / (n + 1.0);
    let mut total = 0.0;
    for boundary in levels..(2 * levels) {
        // Hits: categories above the boundary; false alarms: categories below its mirror.
        let hits: usize = counts[boundary..].iter().sum();
        let false_alarms: usize = counts[..(2 * levels - boundary)].iter().sum();
        total += normal_quantile(corrected(hits)) - normal_quantile(corrected(false_alarms));
    }
    let mu = total / (2.0 * levels as f64);
    std::f64::consts::SQRT_2 * mu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(correct: bool, confidence: Option<u8>) -> IdentificationGuess {
        IdentificationGuess {
            model_a: "open".to_string(),
            model_b: "closed".to_string(),
            correct,
            confidence,
        }
    }

    #[test]
    fn accuracy_uses_the_exact_interval() {
        let guesses: Vec<_> = (0..20).map(|i| guess(i < 7, None)).collect();
        let result = distinguishability(&guesses, &DistinguishabilityOptions::default());
        assert_eq!(result.pairs.len(), 1);
        let pair = &result.pairs[0];
        assert_eq!(
            (pair.model_a.as_str(), pair.model_b.as_str()),
            ("closed", "open")
        );
        let interval = pair.accuracy.interval.unwrap();
        assert!((interval.lower - 0.153_909_2).abs() < 1e-6);
        assert!((pair.accuracy.p_value_vs_half.unwrap() - 0.263_175_964).abs() < 1e-8);
        // d′ = √2 z((7 + .5) / 21) = −0.5155.
        let d = pair.d_prime.as_ref().unwrap().value;
        assert!((d - std::f64::consts::SQRT_2 * normal_quantile(7.5 / 21.0)).abs() < 1e-12);
    }

    #[test]
    fn confidence_ratings_recover_a_simulated_d_prime() {
        // Simulate an observer with d′ = 1 (μ = 1/√2) and three confidence levels with criteria at
        // |D| = 0.5 and 1.2, using the exact expected proportions of 10,000 answers.
        let mu = 1.0 / std::f64::consts::SQRT_2;
        let cdf = crate::intervals::normal_cdf;
        let probability = |low: f64, high: f64| cdf(high - mu) - cdf(low - mu);
        let bins = [
            (true, 1, probability(0.0, 0.5)),
            (true, 2, probability(0.5, 1.2)),
            (true, 3, probability(1.2, f64::INFINITY)),
            (false, 1, probability(-0.5, 0.0)),
            (false, 2, probability(-1.2, -0.5)),
            (false, 3, probability(f64::NEG_INFINITY, -1.2)),
        ];
        let mut rated = Vec::new();
        for (correct, confidence, p) in bins {
            for _ in 0..(p * 10_000.0).round() as usize {
                rated.push((correct, confidence));
            }
        }
        let estimate = d_prime_from_ratings(&rated, 3);
        assert!((estimate - 1.0).abs() < 0.02, "{estimate}");
    }
}
