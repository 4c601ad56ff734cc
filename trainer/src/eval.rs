//! The held-out evaluation report: pairwise accuracy with a binomial interval, loss, reward margin,
//! calibration, the "longer response wins" baseline and per-category accuracy; as text and JSON.

use std::collections::BTreeMap;
use std::fmt;

use crate::data::PreferencePair;
use crate::loss::pair_loss;

/// The rewards a model gave the two sides of one pair.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairScore {
    pub chosen: f32,
    pub rejected: f32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CategoryAccuracy {
    pub pairs: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    pub pairs: usize,
    /// Fraction of pairs with r_chosen > r_rejected; an exact tie counts one half.
    pub accuracy: f64,
    /// 95% Wilson score interval of `accuracy`.
    pub accuracy_low: f64,
    pub accuracy_high: f64,
    /// Mean Bradley–Terry loss (with the pairs' margins where given).
    pub mean_loss: f64,
    /// Mean of r_chosen − r_rejected.
    pub mean_reward_margin: f64,
    /// Expected calibration error of σ(r_c − r_r): 10 equal-width bins of the confidence
    /// max(p, 1 − p) ∈ [0.5, 1], |accuracy − mean confidence| weighted by bin size.
    pub expected_calibration_error: f64,
    /// Accuracy of "the longer response (in characters) wins" on the same pairs; equal lengths count
    /// one half.
    pub length_baseline_accuracy: f64,
    pub per_category: BTreeMap<String, CategoryAccuracy>,
}

/// Wilson score interval for `successes` out of `n` at z = 1.96.
pub fn wilson_interval(successes: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let z = 1.959_964;
    let p = successes / n;
    let denominator = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denominator;
    let half_width = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    // At p = 0 or 1 the bound is exactly 0 or 1; rounding would otherwise leave it a hair inside.
    let low = if successes <= 0.0 {
        0.0
    } else {
        (center - half_width).max(0.0)
    };
    let high = if successes >= n {
        1.0
    } else {
        (center + half_width).min(1.0)
    };
    (low, high)
}

fn win(difference: f64) -> f64 {
    if difference > 0.0 {
        1.0
    } else if difference == 0.0 {
        0.5
    } else {
        0.0
    }
}

impl EvalReport {
    pub fn compute(pairs: &[PreferencePair], scores: &[PairScore]) -> EvalReport {
        assert_eq!(pairs.len(), scores.len(), "one score per pair");
        let n = pairs.len();
        let differences: Vec<f64> = scores
            .iter()
            .map(|score| score.chosen as f64 - score.rejected as f64)
            .collect();
        let correct: f64 = differences.iter().map(|&d| win(d)).sum();
        let accuracy = if n == 0 { 0.0 } else { correct / n as f64 };
        let (accuracy_low, accuracy_high) = wilson_interval(correct, n);
        let mean = |values: &mut dyn Iterator<Item = f64>| {
            if n == 0 {
                0.0
            } else {
                values.sum::<f64>() / n as f64
            }
        };
        let mean_loss = mean(
            &mut pairs
                .iter()
                .zip(&differences)
                .map(|(pair, &d)| pair_loss(d, pair.margin.unwrap_or(0.0) as f64)),
        );
        let mean_reward_margin = mean(&mut differences.iter().copied());
        let length_baseline_accuracy = mean(&mut pairs.iter().map(|pair| {
            win(pair.chosen.chars().count() as f64 - pair.rejected.chars().count() as f64)
        }));
        let mut bins = [(0usize, 0.0f64, 0.0f64); 10];
        for &d in &differences {
            let p = 1.0 / (1.0 + (-d).exp());
            let confidence = p.max(1.0 - p);
            let bin = (((confidence - 0.5) * 20.0) as usize).min(9);
            bins[bin].0 += 1;
            bins[bin].1 += confidence;
            bins[bin].2 += win(d);
        }
        let expected_calibration_error = if n == 0 {
            0.0
        } else {
            bins.iter()
                .filter(|bin| bin.0 > 0)
                .map(|&(_, confidence, hits)| (hits - confidence).abs())
                .sum::<f64>()
                / n as f64
        };
        let mut per_category: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for (pair, &d) in pairs.iter().zip(&differences) {
            if let Some(category) = &pair.category {
                let entry = per_category.entry(category.clone()).or_default();
                entry.0 += 1;
                entry.1 += win(d);
            }
        }
        let per_category = per_category
            .into_iter()
            .map(|(name, (pairs, hits))| {
                (
                    name,
                    CategoryAccuracy {
                        pairs,
                        accuracy: hits / pairs as f64,
                    },
                )
            })
            .collect();
        EvalReport {
            pairs: n,
            accuracy,
            accuracy_low,
            accuracy_high,
            mean_loss,
            mean_reward_margin,
            expected_calibration_error,
            length_baseline_accuracy,
            per_category,
        }
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "held-out pairs {}: accuracy {:.3} (95% CI {:.3}–{:.3}), longer-wins baseline {:.3}",
            self.pairs,
            self.accuracy,
            self.accuracy_low,
            self.accuracy_high,
            self.length_baseline_accuracy
        )?;
        write!(
            f,
            "mean loss {:.4}, mean reward margin {:.4}, ECE {:.4}",
            self.mean_loss, self.mean_reward_margin, self.expected_calibration_error
        )?;
        for (name, category) in &self.per_category {
            write!(
                f,
                "\n  {name}: {:.3} over {} pairs",
                category.accuracy, category.pairs
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_exports::Message;

    fn pair(chosen: &str, rejected: &str, category: Option<&str>) -> PreferencePair {
        PreferencePair {
            prompt: vec![Message::new("user", "q")],
            chosen: chosen.into(),
            rejected: rejected.into(),
            category: category.map(Into::into),
            margin: None,
        }
    }

    /// Wilson interval for 8 of 10 at 95%: 0.490–0.943 (standard tables).
    #[test]
    fn wilson_interval_matches_tables() {
        let (low, high) = wilson_interval(8.0, 10);
        assert!(
            (low - 0.4902).abs() < 1e-3 && (high - 0.9433).abs() < 1e-3,
            "{low} {high}"
        );
    }

    #[test]
    fn report_counts_wins_ties_baseline_and_categories() {
        let pairs = vec![
            pair("long answer", "no", Some("a")),
            pair("x", "longer", Some("a")),
            pair("same", "same", Some("b")),
        ];
        let scores = vec![
            PairScore {
                chosen: 1.0,
                rejected: 0.0,
            },
            PairScore {
                chosen: 0.0,
                rejected: 2.0,
            },
            PairScore {
                chosen: 0.5,
                rejected: 0.5,
            },
        ];
        let report = EvalReport::compute(&pairs, &scores);
        assert!((report.accuracy - 1.5 / 3.0).abs() < 1e-12);
        assert!((report.length_baseline_accuracy - 1.5 / 3.0).abs() < 1e-12);
        assert!((report.mean_reward_margin - (1.0 - 2.0 + 0.0) / 3.0).abs() < 1e-12);
        assert_eq!(
            report.per_category["a"],
            CategoryAccuracy {
                pairs: 2,
                accuracy: 0.5
            }
        );
        // Bins: conf σ(1)=0.7311 (hit 1), σ(2)=0.8808 (hit 0), 0.5 (hit 0.5):
        // |1 − 0.7311| + |0 − 0.8808| + |0.5 − 0.5| over 3 = 0.3832.
        assert!(
            (report.expected_calibration_error - 0.383_23).abs() < 1e-4,
            "{}",
            report.expected_calibration_error
        );
        let (mean_loss, expected) = (
            report.mean_loss,
            (0.313_262 + 2.126_928 + std::f64::consts::LN_2) / 3.0,
        );
        assert!(
            (mean_loss - expected).abs() < 1e-5,
            "{mean_loss} vs {expected}"
        );
    }
}
