//! Bias checks: do raters prefer the left response, the longer one, or always the same button?

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::intervals::{binomial_test_half, wilson, wilson_proportion};
use crate::model::Proportion;

/// A vote as the rater saw it: by screen position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionChoice {
    Left,
    Right,
    Tie,
    BothBad,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionVote {
    pub rater: String,
    pub choice: PositionChoice,
    /// Length of the left and right responses (characters), when known.
    pub left_length: Option<usize>,
    pub right_length: Option<usize>,
}

/// One rater's votes by kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterVotes {
    pub rater: String,
    pub left: u64,
    pub right: u64,
    pub tie: u64,
    pub both_bad: u64,
    pub total: u64,
    /// Share of left among this rater's decisive votes, Wilson interval, exact test against 50%.
    pub left_share: Proportion,
    /// Exact p-value below `flag_p_value`: the rater favours one side (or always presses one button).
    pub flagged: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bias {
    pub method: String,
    pub n_votes: u64,
    /// Share of decisive votes that went to the left response (should be 50%).
    pub left_preference: Proportion,
    /// Share of decisive votes between responses of different length that went to the longer one.
    pub longer_wins: Proportion,
    pub raters: Vec<RaterVotes>,
    /// The threshold used to flag raters.
    pub flag_p_value: f64,
    pub summary: String,
}

/// Position and length bias, and per-rater vote distributions.
pub fn bias(votes: &[PositionVote], confidence: f64) -> Bias {
    // Many raters are tested at once, so only strong evidence flags one.
    let flag_p_value = 0.001;
    let (mut left, mut right) = (0u64, 0u64);
    let (mut longer, mut length_decisive) = (0u64, 0u64);
    let mut per_rater: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for vote in votes {
        let tally = per_rater.entry(vote.rater.as_str()).or_default();
        match vote.choice {
            PositionChoice::Left => tally[0] += 1,
            PositionChoice::Right => tally[1] += 1,
            PositionChoice::Tie => tally[2] += 1,
            PositionChoice::BothBad => tally[3] += 1,
        }
        let left_won = match vote.choice {
            PositionChoice::Left => true,
            PositionChoice::Right => false,
            PositionChoice::Tie | PositionChoice::BothBad => continue,
        };
        if left_won {
            left += 1;
        } else {
            right += 1;
        }
        if let (Some(l), Some(r)) = (vote.left_length, vote.right_length) {
            if l != r {
                length_decisive += 1;
                if (l > r) == left_won {
                    longer += 1;
                }
            }
        }
    }
    let left_preference = wilson_proportion(left as f64, left + right, confidence);
    let longer_wins = wilson_proportion(longer as f64, length_decisive, confidence);
    let raters: Vec<RaterVotes> = per_rater
        .into_iter()
        .map(|(rater, [l, r, t, b])| {
            let decisive = l + r;
            let p = binomial_test_half(l, decisive);
            RaterVotes {
                rater: rater.to_string(),
                left: l,
                right: r,
                tie: t,
                both_bad: b,
                total: l + r + t + b,
                left_share: wilson_proportion(l as f64, decisive, confidence),
                flagged: decisive > 0 && p < flag_p_value,
            }
        })
        .collect();
    let flagged = raters.iter().filter(|r| r.flagged).count();
    let describe = |name: &str, proportion: &Proportion| match (
        proportion.estimate,
        proportion.p_value_vs_half,
        wilson(proportion.successes, proportion.n, confidence),
    ) {
        (Some(estimate), Some(p), Some(interval)) => format!(
            "{name} {:.1}% ({:.1}–{:.1}%, p = {p:.3}, n = {})",
            estimate * 100.0,
            interval.lower * 100.0,
            interval.upper * 100.0,
            proportion.n
        ),
        _ => format!("{name}: no decisive votes"),
    };
    let summary = format!(
        "{}; {}; {flagged} of {} raters flagged for a one-sided pattern.",
        describe("Left response chosen", &left_preference),
        describe("longer response chosen", &longer_wins),
        raters.len()
    );
    Bias {
        method: format!(
            "shares among decisive votes (ties and both-bad left out) with {:.0}% Wilson intervals and exact two-sided \
             binomial tests against 50%; raters flagged when their left share has p < {flag_p_value}",
            confidence * 100.0
        ),
        n_votes: votes.len() as u64,
        left_preference,
        longer_wins,
        raters,
        flag_p_value,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(rater: &str, choice: PositionChoice, left: usize, right: usize) -> PositionVote {
        PositionVote {
            rater: rater.to_string(),
            choice,
            left_length: Some(left),
            right_length: Some(right),
        }
    }

    #[test]
    fn counts_position_length_and_raters() {
        let mut votes = Vec::new();
        for _ in 0..20 {
            votes.push(vote("always-left", PositionChoice::Left, 10, 200));
        }
        for i in 0..20 {
            let choice = if i % 2 == 0 {
                PositionChoice::Left
            } else {
                PositionChoice::Right
            };
            votes.push(vote("balanced", choice, 300, 100));
        }
        votes.push(vote("balanced", PositionChoice::Tie, 5, 5));
        let result = bias(&votes, 0.95);
        assert_eq!(result.n_votes, 41);
        assert_eq!(result.left_preference.n, 40);
        assert_eq!(result.left_preference.successes, 30.0);
        // always-left picked the shorter 20 times; balanced picked the longer (left) 10 times.
        assert_eq!(result.longer_wins.n, 40);
        assert_eq!(result.longer_wins.successes, 10.0);
        let always = result
            .raters
            .iter()
            .find(|r| r.rater == "always-left")
            .unwrap();
        assert!(always.flagged);
        let balanced = result
            .raters
            .iter()
            .find(|r| r.rater == "balanced")
            .unwrap();
        assert!(!balanced.flagged);
        assert_eq!(balanced.tie, 1);
        assert_eq!(balanced.total, 21);
    }
}
