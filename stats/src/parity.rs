//! Parity: is model (or group) A at parity with B? Win rate of A over B with ties as half, its
//! interval, and a two one-sided tests (TOST) equivalence test against a margin around 50%.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bt::sigmoid;
use crate::intervals::{exact_proportion, normal_cdf, normal_quantile, wilson, z_for_level};
use crate::leaderboard::LeaderboardOptions;
use crate::model::{Battle, Interval, Outcome, Proportion};
use crate::planning::{votes_for_equivalence, votes_to_detect_difference};
use crate::style::fit_style;

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
    let (mut a_wins, mut b_wins, mut ties) = (0u64, 0u64, 0u64);
    for battle in battles {
        let outcome = if battle.model_a == model_a && battle.model_b == model_b {
            battle.outcome
        } else if battle.model_a == model_b && battle.model_b == model_a {
            battle.outcome.swapped()
        } else {
            continue;
        };
        match outcome {
            Outcome::AWins => a_wins += 1,
            Outcome::BWins => b_wins += 1,
            Outcome::Tie | Outcome::BothBad => ties += 1,
        }
    }
    parity_from_counts_named(a_wins, b_wins, ties, model_a, model_b, options)
}

/// Parity from counts of A wins, B wins and ties; the summary speaks of "A" and "B".
pub fn parity_from_counts(a_wins: u64, b_wins: u64, ties: u64, options: &ParityOptions) -> Parity {
    parity_from_counts_named(a_wins, b_wins, ties, "A", "B", options)
}

/// Parity from counts, with the summary naming the two sides (`a_label` wins `a_wins`).
pub fn parity_from_counts_named(
    a_wins: u64,
    b_wins: u64,
    ties: u64,
    a_label: &str,
    b_label: &str,
    options: &ParityOptions,
) -> Parity {
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
    let summary = summary_in_words(
        verdict,
        win_rate,
        (a_label, b_label),
        n,
        tost.as_ref().map(|t| t.p_value),
        votes_needed,
        options,
    );
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

/// What a summary reports: the verdict and the figures behind it.
struct Finding {
    verdict: ParityVerdict,
    win_rate: Option<f64>,
    n: u64,
    tost_p_value: Option<f64>,
    votes_needed: Option<u64>,
}

/// The verdict in words, naming both sides: `what` is the quantity compared with 50% ("the win
/// rate", or the style-controlled one).
fn verdict_in_words(
    finding: Finding,
    (a, b): (&str, &str),
    what: &str,
    options: &ParityOptions,
) -> String {
    let Finding {
        verdict,
        win_rate,
        n,
        tost_p_value,
        votes_needed,
    } = finding;
    let percent = |x: f64| format!("{:.1}%", x * 100.0);
    let margin = percent(options.margin);
    let p_value = tost_p_value.map_or_else(String::new, |p| format!("TOST p = {p:.3}, "));
    match (verdict, win_rate) {
        (_, None) => format!("{a} vs {b}: no votes between them yet."),
        (ParityVerdict::Equivalent, Some(p)) => format!(
            "{a} vs {b}: parity shown. {what} of {a} against {b} is {} (ties half), and its {:.0}% \
             interval lies within 50% ± {margin} ({p_value}n = {n}).",
            percent(p),
            (1.0 - 2.0 * options.alpha) * 100.0,
        ),
        (ParityVerdict::ABetter, Some(p)) => format!(
            "{a} vs {b}: {a} ahead. {what} of {a} against {b} is {} (ties half), significantly \
             above 50%, and parity within 50% ± {margin} is not shown ({p_value}n = {n}).",
            percent(p)
        ),
        (ParityVerdict::BBetter, Some(p)) => format!(
            "{a} vs {b}: {b} ahead. {what} of {a} against {b} is only {} (ties half), significantly \
             below 50%, and parity within 50% ± {margin} is not shown ({p_value}n = {n}).",
            percent(p)
        ),
        (ParityVerdict::Inconclusive, Some(p)) => format!(
            "{a} vs {b}: inconclusive. {what} of {a} against {b} is {} (ties half); neither parity \
             within 50% ± {margin} nor a difference is shown ({p_value}n = {n}){}.",
            percent(p),
            votes_needed.map_or(String::new(), |v| format!(
                "; about {v} votes between them would decide it at {:.0}% power",
                options.power * 100.0
            ))
        ),
    }
}

fn summary_in_words(
    verdict: ParityVerdict,
    win_rate: Option<f64>,
    labels: (&str, &str),
    n: u64,
    tost_p_value: Option<f64>,
    votes_needed: Option<u64>,
    options: &ParityOptions,
) -> String {
    verdict_in_words(
        Finding {
            verdict,
            win_rate,
            n,
            tost_p_value,
            votes_needed,
        },
        labels,
        "The win rate",
        options,
    )
}

/// Parity at equal style: the win probability of A over B implied by the style-controlled
/// ratings (length and markdown held equal), tested like [`Parity`] on the log-odds scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StyleParity {
    pub method: String,
    /// Votes with style features between the two sides (all votes of the fit inform the ratings).
    pub n: u64,
    /// Expected score of A against B at equal style, `σ(θ_A − θ_B)` (for groups, `θ` averaged
    /// over the pairs, weighted by their votes).
    pub win_rate: f64,
    /// `θ_A − θ_B` in natural units (log-odds), and its sandwich standard error.
    pub log_odds: f64,
    pub standard_error: f64,
    /// Interval of `win_rate` at the confidence level of the options.
    pub interval: Interval,
    pub tost: Tost,
    pub p_value_difference: f64,
    pub verdict: ParityVerdict,
    /// For an inconclusive verdict: votes between the two sides at which the more likely decision
    /// would be reached with the requested power, if the standard error shrinks as 1/√votes.
    pub votes_needed: Option<u64>,
    pub summary: String,
}

/// Parity of one model of side A against one of side B, from their head-to-head votes and, where
/// the battles carry style features, at equal style.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairParity {
    pub model_a: String,
    pub model_b: String,
    pub parity: Parity,
    pub style_controlled: Option<StyleParity>,
}

/// Parity of two groups of models: pooled (every A-vs-B vote counted together), and for each pair
/// of an A model and a B model that met.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupParity {
    /// Names of the two sides in the summaries ("open-weights models", "closed API models").
    pub label_a: String,
    pub label_b: String,
    pub pooled: Parity,
    /// The pooled comparison at equal style: the pairs' style-controlled log-odds averaged with
    /// weights equal to their votes.
    pub pooled_style_controlled: Option<StyleParity>,
    /// Ordered by model A, then model B.
    pub pairs: Vec<PairParity>,
    /// Share of votes in which the longer response won (ties and equal lengths left out), when
    /// the battles carry style features: how much style could sway a raw verdict.
    pub longer_response_preferred: Option<Proportion>,
}

/// Per-side head-to-head counts: A wins, B wins, ties, and how many votes carried style features.
#[derive(Clone, Copy, Default)]
struct HeadToHead {
    a_wins: u64,
    b_wins: u64,
    ties: u64,
    styled: u64,
}

/// Parity of side A against side B for every pair of models that met and for the two sides pooled,
/// each also at equal style when `style` is given and the battles carry style features (one
/// style-controlled fit of all battles, with `style`'s prior and confidence).
pub fn parity_by_pair(
    battles: &[Battle],
    side_of: impl Fn(&str) -> Option<Side>,
    (label_a, label_b): (&str, &str),
    options: &ParityOptions,
    style: Option<&LeaderboardOptions>,
) -> GroupParity {
    let mut pairs: BTreeMap<(&str, &str), HeadToHead> = BTreeMap::new();
    let (mut longer_won, mut longer_decided) = (0u64, 0u64);
    for battle in battles {
        let (a, b, outcome) = match (side_of(&battle.model_a), side_of(&battle.model_b)) {
            (Some(Side::A), Some(Side::B)) => (&battle.model_a, &battle.model_b, battle.outcome),
            (Some(Side::B), Some(Side::A)) => {
                (&battle.model_b, &battle.model_a, battle.outcome.swapped())
            }
            _ => continue,
        };
        let counts = pairs.entry((a.as_str(), b.as_str())).or_default();
        match outcome {
            Outcome::AWins => counts.a_wins += 1,
            Outcome::BWins => counts.b_wins += 1,
            Outcome::Tie | Outcome::BothBad => counts.ties += 1,
        }
        if let Some(style) = &battle.style {
            counts.styled += 1;
            let (left, right) = (style.a.length, style.b.length);
            if left != right && !battle.outcome.is_tie() {
                longer_decided += 1;
                let a_won = battle.outcome == Outcome::AWins;
                if (left > right) == a_won {
                    longer_won += 1;
                }
            }
        }
    }
    let total = pairs
        .values()
        .fold(HeadToHead::default(), |sum, c| HeadToHead {
            a_wins: sum.a_wins + c.a_wins,
            b_wins: sum.b_wins + c.b_wins,
            ties: sum.ties + c.ties,
            styled: sum.styled + c.styled,
        });
    let fit = style.and_then(|style_options| fit_style(battles, style_options));
    let style_parity = |weights: &[(&str, &str, f64)], n: u64, labels: (&str, &str)| {
        let fit = fit.as_ref()?;
        let mut contrast = vec![0.0; fit.models.len()];
        let weight_sum: f64 = weights.iter().map(|w| w.2).sum();
        if n == 0 || weight_sum <= 0.0 {
            return None;
        }
        for &(a, b, weight) in weights {
            contrast[fit.index_of(a)?] += weight / weight_sum;
            contrast[fit.index_of(b)?] -= weight / weight_sum;
        }
        let (log_odds, standard_error) = fit.contrast(&contrast);
        style_parity_from_log_odds(log_odds, standard_error?, n, labels, options)
    };
    let pair_rows: Vec<PairParity> = pairs
        .iter()
        .map(|(&(a, b), counts)| PairParity {
            model_a: a.to_string(),
            model_b: b.to_string(),
            parity: parity_from_counts_named(
                counts.a_wins,
                counts.b_wins,
                counts.ties,
                a,
                b,
                options,
            ),
            style_controlled: style_parity(&[(a, b, 1.0)], counts.styled, (a, b)),
        })
        .collect();
    let weights: Vec<(&str, &str, f64)> = pairs
        .iter()
        .map(|(&(a, b), counts)| (a, b, counts.styled as f64))
        .collect();
    GroupParity {
        label_a: label_a.to_string(),
        label_b: label_b.to_string(),
        pooled: parity_from_counts_named(
            total.a_wins,
            total.b_wins,
            total.ties,
            label_a,
            label_b,
            options,
        ),
        pooled_style_controlled: style_parity(&weights, total.styled, (label_a, label_b)),
        pairs: pair_rows,
        longer_response_preferred: (longer_decided > 0)
            .then(|| exact_proportion(longer_won, longer_decided, options.confidence)),
    }
}

/// The TOST and the difference test on the log-odds scale, where 50% ± margin is
/// `± ln((0.5 + margin) / (0.5 − margin))`.
fn style_parity_from_log_odds(
    log_odds: f64,
    standard_error: f64,
    n: u64,
    labels: (&str, &str),
    options: &ParityOptions,
) -> Option<StyleParity> {
    if !(standard_error > 0.0 && standard_error.is_finite() && log_odds.is_finite()) {
        return None;
    }
    let bound = ((0.5 + options.margin) / (0.5 - options.margin)).ln();
    let p_lower = 1.0 - normal_cdf((log_odds + bound) / standard_error);
    let p_upper = 1.0 - normal_cdf((bound - log_odds) / standard_error);
    let z_tost = z_for_level(1.0 - 2.0 * options.alpha);
    let tost = Tost {
        margin: options.margin,
        p_lower,
        p_upper,
        p_value: p_lower.max(p_upper),
        interval: Interval::new(
            sigmoid(log_odds - z_tost * standard_error),
            sigmoid(log_odds + z_tost * standard_error),
            1.0 - 2.0 * options.alpha,
        ),
    };
    let p_value_difference = 2.0 * (1.0 - normal_cdf(log_odds.abs() / standard_error));
    let verdict = if tost.p_value < options.alpha {
        ParityVerdict::Equivalent
    } else if p_value_difference < options.alpha {
        if log_odds > 0.0 {
            ParityVerdict::ABetter
        } else {
            ParityVerdict::BBetter
        }
    } else {
        ParityVerdict::Inconclusive
    };
    // Standard errors shrink as 1/√n: the votes at which the needed standard error is reached.
    let votes_needed = (verdict == ParityVerdict::Inconclusive)
        .then(|| {
            let z_power = normal_quantile(options.power);
            let for_equivalence = (log_odds.abs() < bound).then(|| {
                (bound - log_odds.abs()) / (normal_quantile(1.0 - options.alpha) + z_power)
            });
            let for_difference = (log_odds != 0.0)
                .then(|| log_odds.abs() / (normal_quantile(1.0 - options.alpha / 2.0) + z_power));
            let needed =
                |target: f64| (n.max(1) as f64 * (standard_error / target).powi(2)).ceil() as u64;
            match (for_equivalence, for_difference) {
                (Some(e), Some(d)) => Some(needed(e).min(needed(d))),
                (e, d) => e.or(d).map(needed),
            }
        })
        .flatten();
    let z = z_for_level(options.confidence);
    let win_rate = sigmoid(log_odds);
    let summary = verdict_in_words(
        Finding {
            verdict,
            win_rate: Some(win_rate),
            n,
            tost_p_value: Some(tost.p_value),
            votes_needed,
        },
        labels,
        "With style held equal (the style-controlled ratings, fitted to all votes), the expected win rate",
        options,
    );
    Some(StyleParity {
        method: format!(
            "style-controlled Bradley-Terry (length and markdown covariates): win rate sigma(theta_A - theta_B) \
             with a {:.0}% interval from the sandwich standard error; TOST on the log-odds against \
             ±ln((0.5 + {m})/(0.5 - {m})) with z tests at alpha = {} per side; votes needed assume the \
             standard error shrinks as 1/sqrt(votes)",
            options.confidence * 100.0,
            options.alpha,
            m = options.margin,
        ),
        n,
        win_rate,
        log_odds,
        standard_error,
        interval: Interval::new(
            sigmoid(log_odds - z * standard_error),
            sigmoid(log_odds + z * standard_error),
            options.confidence,
        ),
        tost,
        p_value_difference,
        verdict,
        votes_needed,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BattleStyle;

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
        assert!(
            result.summary.starts_with("A vs B: B ahead."),
            "{}",
            result.summary
        );
    }

    fn alternating(a: &str, b: &str, outcome: Outcome, k: usize) -> Battle {
        if k.is_multiple_of(2) {
            Battle::new(a, b, outcome)
        } else {
            Battle::new(b, a, outcome.swapped())
        }
    }

    fn open_closed(model: &str) -> Option<Side> {
        match model {
            "vicuna-13b" | "llama" => Some(Side::A),
            "gpt35" | "gpt4" => Some(Side::B),
            _ => None,
        }
    }

    /// vicuna-13b beats gpt35 70–30 and loses to gpt4 20–80; the closed models' own 50 votes are
    /// not a parity question. Pooled, 90 of 200 is 45.0% with a standard error of √(0.2475/200) =
    /// 0.0352 (score variance with one pseudo-win and one pseudo-loss): z = 1.42 for the
    /// difference (p = 0.155) and 0 against the lower margin (TOST p = 0.5), so inconclusive,
    /// while each pair has a clear verdict.
    #[test]
    fn each_pair_gets_its_own_verdict_with_names_beside_the_pooled_one() {
        let mut battles = Vec::new();
        for (a, b, wins, losses) in [
            ("vicuna-13b", "gpt35", 70, 30),
            ("vicuna-13b", "gpt4", 20, 80),
            ("gpt35", "gpt4", 25, 25),
        ] {
            for k in 0..wins {
                battles.push(alternating(a, b, Outcome::AWins, k));
            }
            for k in 0..losses {
                battles.push(alternating(a, b, Outcome::BWins, k));
            }
        }
        let result = parity_by_pair(
            &battles,
            open_closed,
            ("open-weights models", "closed API models"),
            &ParityOptions::default(),
            None,
        );
        assert_eq!(result.pooled.n, 200);
        assert_eq!(result.pooled.win_rate, Some(0.45));
        assert_eq!(result.pooled.verdict, ParityVerdict::Inconclusive);
        assert!((result.pooled.p_value_difference.unwrap() - 0.1553).abs() < 1e-3);
        assert!((result.pooled.tost.as_ref().unwrap().p_value - 0.5).abs() < 1e-9);
        assert!(
            result.pooled.summary.starts_with(
                "open-weights models vs closed API models: inconclusive. The win rate of \
                 open-weights models against closed API models is 45.0%"
            ),
            "{}",
            result.pooled.summary
        );
        let pairs: Vec<(&str, &str, Option<f64>, ParityVerdict)> = result
            .pairs
            .iter()
            .map(|p| {
                (
                    p.model_a.as_str(),
                    p.model_b.as_str(),
                    p.parity.win_rate,
                    p.parity.verdict,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("vicuna-13b", "gpt35", Some(0.7), ParityVerdict::ABetter),
                ("vicuna-13b", "gpt4", Some(0.2), ParityVerdict::BBetter),
            ]
        );
        assert!(result.pairs[0]
            .parity
            .summary
            .starts_with("vicuna-13b vs gpt35: vicuna-13b ahead. The win rate of vicuna-13b against gpt35 is 70.0%"));
        assert!(result.pairs[1]
            .parity
            .summary
            .starts_with("vicuna-13b vs gpt4: gpt4 ahead."));
        assert!(result.pairs.iter().all(|p| p.style_controlled.is_none()));
        assert!(result.pooled_style_controlled.is_none());
        assert!(result.longer_response_preferred.is_none());
    }

    fn length(characters: u32) -> crate::model::StyleFeatures {
        crate::model::StyleFeatures {
            length: characters,
            ..Default::default()
        }
    }

    /// Two equally good models: the longer response wins 75% of votes (every vote with i % 4 != 0)
    /// and the open model writes the longer one in 80% (i % 5 != 0), so it wins 13 of every 20
    /// votes (65%) for its length alone. Sides alternate in blocks of 20, so the fit with a length
    /// covariate is exactly symmetric: the style-controlled log-odds is 0, a 50% win rate.
    #[test]
    fn style_control_separates_a_verbose_open_model_from_an_equal_closed_one() {
        let battles: Vec<Battle> = (0..2000usize)
            .map(|i| {
                let open_longer = i % 5 != 0;
                let longer_wins = i % 4 != 0;
                let outcome = if open_longer == longer_wins {
                    Outcome::AWins
                } else {
                    Outcome::BWins
                };
                let (open, closed) = if open_longer {
                    (length(1000), length(100))
                } else {
                    (length(100), length(1000))
                };
                let battle = Battle::new("llama", "gpt35", outcome)
                    .with_style(BattleStyle { a: open, b: closed });
                if (i / 20) % 2 == 0 {
                    battle
                } else {
                    Battle::new("gpt35", "llama", outcome.swapped())
                        .with_style(BattleStyle { a: closed, b: open })
                }
            })
            .collect();
        let style_options = LeaderboardOptions {
            prior_strength: 0.0,
            ..LeaderboardOptions::default()
        };
        let result = parity_by_pair(
            &battles,
            open_closed,
            ("open", "closed"),
            &ParityOptions::default(),
            Some(&style_options),
        );
        let pair = &result.pairs[0];
        assert_eq!(pair.parity.win_rate, Some(0.65));
        assert_eq!(pair.parity.verdict, ParityVerdict::ABetter);
        let style = pair.style_controlled.as_ref().expect("styled battles");
        assert_eq!(style.n, 2000);
        assert!(style.log_odds.abs() < 1e-6, "{}", style.log_odds);
        assert!((style.win_rate - 0.5).abs() < 1e-6);
        assert_eq!(
            style.verdict,
            ParityVerdict::Equivalent,
            "{}",
            style.summary
        );
        assert!(style.summary.starts_with(
            "llama vs gpt35: parity shown. With style held equal (the style-controlled ratings, fitted to all votes), the expected win rate of llama against gpt35 is 50.0%"
        ));
        // One pair: the pooled style-controlled comparison is that pair's.
        let pooled = result.pooled_style_controlled.as_ref().unwrap();
        assert!((pooled.log_odds - style.log_odds).abs() < 1e-12);
        assert!((pooled.standard_error - style.standard_error).abs() < 1e-12);
        let longer = result.longer_response_preferred.as_ref().unwrap();
        assert_eq!((longer.successes, longer.n), (1500.0, 2000));
    }
}
