//! Inter-rater agreement on items rated by two or more raters: percent agreement, Fleiss' κ and
//! Krippendorff's α for nominal data, with the conventional reading of α.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::intervals::quantile_sorted;
use crate::model::Interval;

/// Krippendorff's conventional reading of α.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    /// α ≥ 0.8.
    Reliable,
    /// 0.667 ≤ α < 0.8: tentative conclusions only.
    Tentative,
    /// α < 0.667.
    Unreliable,
}

impl Reliability {
    pub fn of_alpha(alpha: f64) -> Reliability {
        if alpha >= 0.8 {
            Reliability::Reliable
        } else if alpha >= 0.667 {
            Reliability::Tentative
        } else {
            Reliability::Unreliable
        }
    }

    pub fn reading(self) -> &'static str {
        match self {
            Reliability::Reliable => "reliable (alpha >= 0.8)",
            Reliability::Tentative => {
                "tentative (0.667 <= alpha < 0.8): draw only tentative conclusions"
            }
            Reliability::Unreliable => "unreliable (alpha < 0.667)",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgreementOptions {
    pub confidence: f64,
    /// Bootstrap rounds over items for the intervals of κ and α (0 for none).
    pub bootstrap_rounds: usize,
    pub seed: u64,
}

impl Default for AgreementOptions {
    fn default() -> Self {
        AgreementOptions {
            confidence: 0.95,
            bootstrap_rounds: 1000,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub method: String,
    /// Items with at least two ratings (the only ones that carry information on agreement).
    pub n_items: u64,
    /// Ratings on those items.
    pub n_ratings: u64,
    pub n_categories: u64,
    /// Mean over items of the share of agreeing rater pairs.
    pub percent_agreement: Option<f64>,
    pub fleiss_kappa: Option<f64>,
    pub fleiss_kappa_interval: Option<Interval>,
    pub krippendorff_alpha: Option<f64>,
    pub krippendorff_alpha_interval: Option<Interval>,
    pub reliability: Option<Reliability>,
    pub summary: String,
}

/// Agreement on `items`, each the list of category labels its raters gave (any number of raters
/// per item; items with fewer than two ratings are left out).
pub fn agreement<L: Ord + Clone>(items: &[Vec<L>], options: &AgreementOptions) -> Agreement {
    // Map labels to category indices, then each item to its category counts.
    let mut categories: BTreeMap<&L, usize> = BTreeMap::new();
    for label in items.iter().filter(|i| i.len() >= 2).flatten() {
        let next = categories.len();
        categories.entry(label).or_insert(next);
    }
    let k = categories.len();
    let counts: Vec<Vec<u64>> = items
        .iter()
        .filter(|item| item.len() >= 2)
        .map(|item| {
            let mut row = vec![0u64; k];
            for label in item {
                row[categories[label]] += 1;
            }
            row
        })
        .collect();
    let statistics = Statistics::of(&counts, k);

    let tail = (1.0 - options.confidence) / 2.0;
    let (kappa_interval, alpha_interval) = if options.bootstrap_rounds > 0 && counts.len() >= 2 {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut kappas = Vec::with_capacity(options.bootstrap_rounds);
        let mut alphas = Vec::with_capacity(options.bootstrap_rounds);
        let mut sample: Vec<Vec<u64>> = Vec::with_capacity(counts.len());
        for _ in 0..options.bootstrap_rounds {
            sample.clear();
            for _ in 0..counts.len() {
                sample.push(counts[rng.gen_range(0..counts.len())].clone());
            }
            let replicate = Statistics::of(&sample, k);
            kappas.extend(replicate.fleiss_kappa);
            alphas.extend(replicate.krippendorff_alpha);
        }
        let interval = |values: &mut Vec<f64>| {
            (!values.is_empty()).then(|| {
                values.sort_by(f64::total_cmp);
                Interval::new(
                    quantile_sorted(values, tail),
                    quantile_sorted(values, 1.0 - tail),
                    options.confidence,
                )
            })
        };
        (interval(&mut kappas), interval(&mut alphas))
    } else {
        (None, None)
    };

    let reliability = statistics.krippendorff_alpha.map(Reliability::of_alpha);
    let summary = match (statistics.krippendorff_alpha, reliability) {
        (Some(alpha), Some(reading)) => format!(
            "Krippendorff's alpha = {alpha:.3} over {} items: {}.",
            counts.len(),
            reading.reading()
        ),
        _ => "Too few items rated by two or more raters to measure agreement.".to_string(),
    };
    Agreement {
        method: format!(
            "percent agreement = mean share of agreeing rater pairs per item; Fleiss' kappa (with the usual \
             generalisation to varying raters per item); Krippendorff's alpha for nominal data from the coincidence \
             matrix; {:.0}% percentile intervals from {} bootstrap rounds over items (seed {})",
            options.confidence * 100.0,
            options.bootstrap_rounds,
            options.seed
        ),
        n_items: counts.len() as u64,
        n_ratings: counts.iter().flatten().sum(),
        n_categories: k as u64,
        percent_agreement: statistics.percent_agreement,
        fleiss_kappa: statistics.fleiss_kappa,
        fleiss_kappa_interval: kappa_interval,
        krippendorff_alpha: statistics.krippendorff_alpha,
        krippendorff_alpha_interval: alpha_interval,
        reliability,
        summary,
    }
}

struct Statistics {
    percent_agreement: Option<f64>,
    fleiss_kappa: Option<f64>,
    krippendorff_alpha: Option<f64>,
}

impl Statistics {
    /// `counts[item][category]`; every item has at least two ratings.
    fn of(counts: &[Vec<u64>], k: usize) -> Statistics {
        if counts.is_empty() {
            return Statistics {
                percent_agreement: None,
                fleiss_kappa: None,
                krippendorff_alpha: None,
            };
        }
        // Per item, P_i = Σ n_ic (n_ic − 1) / (n_i (n_i − 1)); category shares over all ratings.
        let mut agreement_sum = 0.0;
        let mut category_totals = vec![0.0; k];
        let mut total_ratings = 0.0;
        // Krippendorff: coincidences o_cc' = Σ_u n_uc n_uc' / (m_u − 1) (c ≠ c'), n_uc (n_uc − 1) / (m_u − 1) (c = c').
        let mut observed_disagreement = 0.0;
        for item in counts {
            let m: f64 = item.iter().sum::<u64>() as f64;
            let agreeing_pairs: f64 = item.iter().map(|&c| c as f64 * (c as f64 - 1.0)).sum();
            agreement_sum += agreeing_pairs / (m * (m - 1.0));
            // Off-diagonal coincidences of this item: (m² − Σ n²) / (m − 1).
            let squares: f64 = item.iter().map(|&c| (c as f64).powi(2)).sum();
            observed_disagreement += (m * m - squares) / (m - 1.0);
            for (total, &c) in category_totals.iter_mut().zip(item) {
                *total += c as f64;
            }
            total_ratings += m;
        }
        let items = counts.len() as f64;
        let mean_agreement = agreement_sum / items;
        let chance_agreement: f64 = category_totals
            .iter()
            .map(|t| (t / total_ratings).powi(2))
            .sum();
        let fleiss_kappa = (chance_agreement < 1.0)
            .then(|| (mean_agreement - chance_agreement) / (1.0 - chance_agreement));
        // α = 1 − (n − 1) Σ_{c≠c'} o_cc' / Σ_{c≠c'} n_c n_c'.
        let expected_pairs =
            total_ratings * total_ratings - category_totals.iter().map(|t| t * t).sum::<f64>();
        let krippendorff_alpha = (expected_pairs > 0.0)
            .then(|| 1.0 - (total_ratings - 1.0) * observed_disagreement / expected_pairs);
        Statistics {
            percent_agreement: Some(mean_agreement),
            fleiss_kappa,
            krippendorff_alpha,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bootstrap() -> AgreementOptions {
        AgreementOptions {
            bootstrap_rounds: 0,
            ..AgreementOptions::default()
        }
    }

    /// Expands rows of category counts into lists of labels.
    fn items_from_counts(rows: &[[u64; 5]]) -> Vec<Vec<usize>> {
        rows.iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .flat_map(|(category, &count)| std::iter::repeat_n(category, count as usize))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn fleiss_kappa_textbook_example() {
        // Fleiss (1971) worked example as given on Wikipedia ("Fleiss' kappa"): 10 subjects,
        // 14 raters, 5 categories; P̄ = 0.378, P̄e = 0.213, κ = 0.210.
        let rows = [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ];
        let result = agreement(&items_from_counts(&rows), &no_bootstrap());
        assert!((result.percent_agreement.unwrap() - 0.378).abs() < 5e-4);
        assert!((result.fleiss_kappa.unwrap() - 0.210).abs() < 5e-4);
        assert_eq!(result.n_items, 10);
        assert_eq!(result.n_ratings, 140);
    }

    #[test]
    fn krippendorff_alpha_textbook_example() {
        // Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example with
        // missing data: 4 observers, 12 units; α = 0.743. Unit 12 has one value and drops out.
        let units: Vec<Vec<u32>> = vec![
            vec![1, 1, 1],
            vec![2, 2, 3, 2],
            vec![3, 3, 3, 3],
            vec![3, 3, 3, 3],
            vec![2, 2, 2, 2],
            vec![1, 2, 3, 4],
            vec![4, 4, 4, 4],
            vec![1, 1, 2, 1],
            vec![2, 2, 2, 2],
            vec![5, 5, 5],
            vec![1, 1],
            vec![3],
        ];
        let result = agreement(&units, &no_bootstrap());
        assert_eq!(result.n_items, 11);
        let alpha = result.krippendorff_alpha.unwrap();
        assert!((alpha - 0.743).abs() < 5e-4, "{alpha}");
        assert_eq!(result.reliability, Some(Reliability::Tentative));
    }

    #[test]
    fn perfect_agreement_is_reliable_and_the_interval_is_seeded() {
        let items: Vec<Vec<&str>> = (0..30)
            .map(|i| {
                if i % 3 == 0 {
                    vec!["a", "a"]
                } else {
                    vec!["b", "b", "b"]
                }
            })
            .collect();
        let result = agreement(&items, &AgreementOptions::default());
        assert_eq!(result.krippendorff_alpha, Some(1.0));
        assert_eq!(result.percent_agreement, Some(1.0));
        assert_eq!(result.reliability, Some(Reliability::Reliable));
        assert_eq!(result, agreement(&items, &AgreementOptions::default()));
        assert!(agreement::<&str>(&[], &AgreementOptions::default())
            .krippendorff_alpha
            .is_none());
    }
}
