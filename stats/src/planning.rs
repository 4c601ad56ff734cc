//! Planning a study: how many votes a question needs.
//!
//! A vote's score is 1 (win), ½ (tie) or 0 (loss). With win rate `p` (ties as half) and tie rate
//! `τ`, its variance is `p(1 − p) − τ/4`: ties make votes more informative about the win rate, so
//! `tie_rate = 0` gives the conservative answer.

use serde::{Deserialize, Serialize};

use crate::intervals::{normal_quantile, z_for_level};

/// A sample size with the assumptions behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Votes needed (between the two sides compared).
    pub votes: u64,
    pub method: String,
}

/// Variance of one vote's score at win rate `p` with ties counted half.
pub fn score_variance(win_rate: f64, tie_rate: f64) -> f64 {
    let p = win_rate.clamp(0.0, 1.0);
    (p * (1.0 - p) - tie_rate.clamp(0.0, 1.0) / 4.0).max(1e-12)
}

fn ceil_votes(value: f64) -> u64 {
    if value.is_finite() {
        value.ceil().max(1.0) as u64
    } else {
        u64::MAX
    }
}

/// Votes for a normal-approximation interval of total width `width` (0.10 = ±5 points) around a
/// win rate expected near `expected_rate`.
pub fn votes_for_interval_width(
    width: f64,
    expected_rate: f64,
    tie_rate: f64,
    confidence: f64,
) -> Plan {
    let z = z_for_level(confidence);
    let half = width / 2.0;
    let variance = score_variance(expected_rate, tie_rate);
    Plan {
        votes: ceil_votes(z * z * variance / (half * half)),
        method: format!(
            "n = z² σ² / (w/2)² with z for {:.0}% confidence, σ² = p(1-p) - τ/4 at p = {expected_rate}, τ = {tie_rate}",
            confidence * 100.0
        ),
    }
}

/// Votes for a two-sided test at level `alpha` to detect, with probability `power`, a win rate of
/// `0.5 + difference` against the null of 50%.
pub fn votes_to_detect_difference(difference: f64, tie_rate: f64, power: f64, alpha: f64) -> Plan {
    let z_alpha = normal_quantile(1.0 - alpha / 2.0);
    let z_power = normal_quantile(power);
    let null_sd = score_variance(0.5, tie_rate).sqrt();
    let alternative_sd = score_variance(0.5 + difference, tie_rate).sqrt();
    let root = (z_alpha * null_sd + z_power * alternative_sd) / difference.abs();
    Plan {
        votes: ceil_votes(root * root),
        method: format!(
            "two-sided z test of the win rate against 50% at alpha = {alpha}, power {power}: \
             n = ((z(1-alpha/2) sd0 + z(power) sd1) / difference)², tie rate {tie_rate}"
        ),
    }
}

/// Votes for a TOST equivalence test (margin `±margin` around 50%, each one-sided test at level
/// `alpha`) to show equivalence with probability `power` when the true win rate is
/// `0.5 + true_difference`; `None` when the true difference is not inside the margin.
pub fn votes_for_equivalence(
    margin: f64,
    true_difference: f64,
    tie_rate: f64,
    power: f64,
    alpha: f64,
) -> Option<Plan> {
    let slack = margin - true_difference.abs();
    if slack <= 0.0 {
        return None;
    }
    let z_alpha = normal_quantile(1.0 - alpha);
    // At zero difference both one-sided tests can fail, so each gets half of the type II error.
    let z_power = if true_difference == 0.0 {
        normal_quantile(1.0 - (1.0 - power) / 2.0)
    } else {
        normal_quantile(power)
    };
    let variance = score_variance(0.5 + true_difference, tie_rate);
    Some(Plan {
        votes: ceil_votes((z_alpha + z_power).powi(2) * variance / (slack * slack)),
        method: format!(
            "TOST against ±{margin} at alpha = {alpha} per side, power {power}: \
             n = (z(1-alpha) + z(power'))² σ² / (margin - |difference|)², true difference {true_difference}, tie rate {tie_rate}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_sample_sizes() {
        // ±5 points at 95% around 50%: 1.96² · 0.25 / 0.05² = 384.1 → 385.
        assert_eq!(votes_for_interval_width(0.10, 0.5, 0.0, 0.95).votes, 385);
        // Detecting 55% vs 50% at alpha 0.05, power 0.8: ((1.96·0.5 + 0.8416·0.4975)/0.05)² = 783.
        assert_eq!(votes_to_detect_difference(0.05, 0.0, 0.8, 0.05).votes, 783);
        // Equivalence within ±5 points when truly equal: (1.645 + 1.2816)² · 0.25 / 0.05² = 856.5.
        assert_eq!(
            votes_for_equivalence(0.05, 0.0, 0.0, 0.8, 0.05)
                .unwrap()
                .votes,
            857
        );
        assert!(votes_for_equivalence(0.05, 0.06, 0.0, 0.8, 0.05).is_none());
        // Ties shrink the variance and so the votes needed.
        assert!(votes_for_interval_width(0.10, 0.5, 0.3, 0.95).votes < 385);
    }
}
