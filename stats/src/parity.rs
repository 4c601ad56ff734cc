//! Parity: is model (or group) A at parity with B? Win rate of A over B with ties as half, its
//! interval, and a two one-sided tests (TOST) equivalence test against a margin around 50%.

use serde::{Deserialize, Serialize};

use crate::intervals::{exact_proportion, normal_cdf, wilson, z_for_level};
use crate::model::{Battle, Interval, Outcome, Proportion};
use crate::planning::{votes_for_equivalence, votes_to_detect_difference};

/// Which side of a parity comparison a model is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParityVerdict {
    /// The TOST shows the win rate within the margin of 50%: parity shown.
    Equivalent,
    /// A wins significantly more than half, and parity is not shown.
    ABetter,
    /// B wins significantly more than half, and parity is not shown.
    BBetter,
    /// Neither parity nor a difference is shown: more votes are needed.
    Inconclusive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParityOptions {
    /// Equivalence margin around 50% (0.05 = ±5 percentage points).
    pub margin: f64,
    /// Level of each test (each one-sided test of the TOST, and the two-sided difference test).
    pub alpha: f64,
    /// Power for the votes-needed estimate.
    pub power: f64,
    /// Level of the reported intervals.
    pub confidence: f64,
}

impl Default for ParityOptions {
    fn default() -> Self {
        ParityOptions {
            margin: 0.05,
            alpha: 0.05,
            power: 0.8,
            confidence: 0.95,
        }
    }
}

/// The result of a TOST equivalence test.
impl ParityOptions {
    /// Checks options that come from users before they reach the computation.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.margin > 0.0 && self.margin < 0.5) {
            return Err(format!(
                "margin must be between 0 and 0.5, got {}",
                self.margin
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!(
                "alpha must be between 0 and 0.5, got {}",
                self.alpha
            ));
        }
        if !(self.power > 0.0 && self.power < 1.0) {
            return Err(format!("power must be between 0 and 1, got {}", self.power));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(format!(
                "confidence must be between 0 and 1, got {}",
                self.confidence
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tost {
    pub margin: f64,
    /// p-value of H₀: win rate ≤ 50% − margin.
    pub p_lower: f64,
    /// p-value of H₀: win rate ≥ 50% + margin.
    pub p_upper: f64,
    /// The larger of the two: equivalence is shown when it is below alpha.
    pub p_value: f64,
    /// The (1 − 2·alpha) interval; equivalence is shown when it lies inside 50% ± margin.
    pub interval: Interval,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parity {
    pub method: String,
    /// Votes between a model of side A and a model of side B.
    pub n: u64,
    pub a_wins: u64,
    pub b_wins: u64,
    /// Ties including "both bad".
    pub ties: u64,
    /// Win rate of A over B with ties as half; `None` without votes.
    pub win_rate: Option<f64>,
    /// Wilson interval of the win rate.
    pub interval: Option<Interval>,
    /// Share of A among decisive votes (ties left out), with an exact interval and test.
    pub decisive: Proportion,
    pub tost: Option<Tost>,
    /// Two-sided p-value of the difference from 50%.
    pub p_value_difference: Option<f64>,
    pub verdict: ParityVerdict,
    /// For an inconclusive verdict: total votes at which the more likely decision (equivalence,
    /// or a difference) would be reached with the requested power if the observed win rate were
    /// the truth.
    pub votes_needed: Option<u64>,
    pub votes_needed_for_equivalence: Option<u64>,
    pub votes_needed_for_difference: Option<u64>,
    /// The verdict in words.
    pub summary: String,
}

/// Parity of side A against side B, where `side_of` places each model on a side (or on neither:
/// battles not between the two sides are left out). Groups such as "open" against "closed" are a
/// `side_of` that looks the model up in a map.
pub fn parity(
    battles: &[Battle],
    side_of: impl Fn(&str) -> Option<Side>,
    options: &ParityOptions,
) -> Parity {
    let (mut a_wins, mut b_wins, mut ties) = (0u64, 0u64, 0u64);
    for battle in battles {
        let outcome = match (side_of(&battle.model_a), side_of(&battle.model_b)) {
            (Some(Side::A), Some(Side::B)) => battle.outcome,
            (Some(Side::B), Some(Side::A)) => battle.outcome.swapped(),
            _ => continue,
        };
        match outcome {
            Outcome::AWins => a_wins += 1,
            Outcome::BWins => b_wins += 1,
            Outcome::Tie | Outcome::BothBad => ties += 1,
        }
    }
    parity_from_counts(a_wins, b_wins, ties, options)
}

/// Parity of one model against another.
pub fn parity_between_models(
    battles: &[Battle],
    model_a: &str,
    model_b: &str,
    options: &ParityOptions,
) -> Parity {
    parity(
        battles,
        |model| {
            if model == model_a {
                Some(Side::A)
            } else if model == model_b {
                Some(Side::B)
            } else {
                None
            }
        },
        options,
    )
}

/// Parity from counts of A wins, B wins and ties.
pub fn parity_from_counts(a_wins: u64, b_wins: u64, ties: u64, options: &ParityOptions) -> Parity {
    let n = a_wins + b_wins + ties;
    let score = a_wins as f64 + 0.5 * ties as f64;
    let decisive = exact_proportion(a_wins, a_wins + b_wins, options.confidence);
    let margin = options.margin;
    let tie_rate = if n > 0 { ties as f64 / n as f64 } else { 0.0 };

    let (win_rate, tost, p_difference, verdict) = if n == 0 {
        (None, None, None, ParityVerdict::Inconclusive)
    } else {
        let p = score / n as f64;
        // Variance of the per-vote score (1, ½, 0) with one pseudo-win and one pseudo-loss added, so
        // that a handful of identical votes (say, all ties) does not give a zero standard error.
        let sum_squares = a_wins as f64 + 0.25 * ties as f64 + 1.0;
        let pseudo_n = n as f64 + 2.0;
        let pseudo_mean = (score + 1.0) / pseudo_n;
        let variance = (sum_squares / pseudo_n - pseudo_mean * pseudo_mean).max(1e-12);
        let standard_error = (variance / n as f64).sqrt();
        let p_lower = 1.0 - normal_cdf((p - (0.5 - margin)) / standard_error);
        let p_upper = 1.0 - normal_cdf(((0.5 + margin) - p) / standard_error);
        let z_tost = z_for_level(1.0 - 2.0 * options.alpha);
        let tost = Tost {
            margin,
            p_lower,
            p_upper,
            p_value: p_lower.max(p_upper),
            interval: Interval::new(
                p - z_tost * standard_error,
                p + z_tost * standard_error,
                1.0 - 2.0 * options.alpha,
            ),
        };
        let p_difference = 2.0 * (1.0 - normal_cdf((p - 0.5).abs() / standard_error));
        let verdict = if tost.p_value < options.alpha {
            ParityVerdict::Equivalent
        } else if p_difference < options.alpha {
            if p > 0.5 {
                ParityVerdict::ABetter
            } else {
                ParityVerdict::BBetter
            }
        } else {
            ParityVerdict::Inconclusive
        };
        (Some(p), Some(tost), Some(p_difference), verdict)
    };

    let difference = win_rate.map_or(0.0, |p| p - 0.5);
    let (for_equivalence, for_difference) = if verdict == ParityVerdict::Inconclusive {
        // Plans use the observed win rate and tie rate as the truth.
        (
            votes_for_equivalence(margin, difference, tie_rate, options.power, options.alpha)
                .map(|plan| plan.votes),
            (difference != 0.0).then(|| {
                votes_to_detect_difference(difference, tie_rate, options.power, options.alpha).votes
            }),
        )
    } else {
        (None, None)
    };
    let votes_needed = match (for_equivalence, for_difference) {
        (Some(e), Some(d)) => Some(e.min(d)),
        (e, d) => e.or(d),
    };
    let percent = |x: f64| format!("{:.1}%", x * 100.0);
    let summary = match (verdict, win_rate) {
        (_, None) => "No votes between the two sides yet.".to_string(),
        (ParityVerdict::Equivalent, Some(p)) => format!(
            "Parity shown: A wins {} of votes against B (ties half), and the {:.0}% interval lies within 50% ± {} (TOST, n = {n}).",
            percent(p), (1.0 - 2.0 * options.alpha) * 100.0, percent(margin)
        ),
        (ParityVerdict::ABetter, Some(p)) => format!(
            "A is better: it wins {} of votes against B (ties half), significantly more than half and not within ± {} (n = {n}).",
            percent(p), percent(margin)
        ),
        (ParityVerdict::BBetter, Some(p)) => format!(
            "B is better: A wins only {} of votes against it (ties half), significantly less than half and not within ± {} (n = {n}).",
            percent(p), percent(margin)
        ),
        (ParityVerdict::Inconclusive, Some(p)) => format!(
            "Inconclusive: A wins {} of votes against B (ties half); neither parity within ± {} nor a difference is shown with n = {n}{}.",
            percent(p),
            percent(margin),
            votes_needed.map_or(String::new(), |v| format!("; about {v} votes would decide it at {:.0}% power", options.power * 100.0))
        ),
    };
    Parity {
        method: format!(
            "win rate of A over B with ties as half; {:.0}% Wilson interval; TOST equivalence against 50% ± {margin} \
             (z tests with the per-vote score variance, alpha = {} per side); two-sided z test of the difference; \
             votes needed assume the observed win rate and tie rate are the truth",
            options.confidence * 100.0,
            options.alpha
        ),
        n,
        a_wins,
        b_wins,
        ties,
        win_rate,
        interval: wilson(score, n, options.confidence),
        decisive,
        tost,
        p_value_difference: p_difference,
        verdict,
        votes_needed,
        votes_needed_for_equivalence: for_equivalence,
        votes_needed_for_difference: for_difference,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_users_are_checked() {
        assert!(ParityOptions::default().validate().is_ok());
        let wide = ParityOptions {
            margin: 0.7,
            ..ParityOptions::default()
        };
        assert!(wide.validate().unwrap_err().contains("margin"));
    }

    #[test]
    fn no_votes_is_inconclusive_with_a_plan() {
        let result = parity_from_counts(0, 0, 0, &ParityOptions::default());
        assert_eq!(result.verdict, ParityVerdict::Inconclusive);
        assert_eq!(result.votes_needed, Some(857));
    }

    #[test]
    fn a_few_ties_do_not_prove_parity() {
        let result = parity_from_counts(0, 0, 5, &ParityOptions::default());
        assert_eq!(result.verdict, ParityVerdict::Inconclusive);
    }

    #[test]
    fn clear_gap_is_a_difference() {
        let result = parity_from_counts(700, 300, 0, &ParityOptions::default());
        assert_eq!(result.verdict, ParityVerdict::ABetter);
        let result = parity_from_counts(300, 700, 0, &ParityOptions::default());
        assert_eq!(result.verdict, ParityVerdict::BBetter);
        assert!(result.summary.starts_with("B is better"));
    }
}
