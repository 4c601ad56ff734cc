//! The agreement ceiling: on items that two or more people rated, how often a rater agrees with the
//! others, next to how often the reward model does. People disagree on preference data (HH-RLHF's
//! authors report about 63% agreement between crowdworkers and themselves), so a reward model's
//! accuracy means little until it is put beside the raters' own agreement on the same items.
//!
//! Measures, over items with at least two decided votes (ties and both-bad votes are left out):
//! - **rater agreement with the majority**: each vote against the majority of the *other* votes on its
//!   item (leave one out, so a vote never agrees with itself; an even split of the others counts one
//!   half). With two votes per item it is the pairwise agreement. This is the ceiling.
//! - **model agreement with the votes**: the model's pick (the response with the higher reward; equal
//!   rewards count one half) against each vote, the same unit as the line above.
//! - **model accuracy against the majority**: on items with a strict majority of all their votes.

use std::fmt;

use moat_exports::Message;

use crate::eval::wilson_interval;
use crate::train::AnyModel;

/// One item (a prompt and two responses) with its decided votes.
#[derive(Debug, Clone, PartialEq)]
pub struct RatedItem {
    pub prompt: Vec<Message>,
    pub a: String,
    pub b: String,
    pub votes_for_a: usize,
    pub votes_for_b: usize,
}

/// A share with its 95% Wilson interval and how many it is out of.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Share {
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub n: usize,
}

impl Share {
    fn of(successes: f64, n: usize) -> Share {
        let (low, high) = wilson_interval(successes, n);
        Share {
            value: if n == 0 { 0.0 } else { successes / n as f64 },
            low,
            high,
            n,
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} (95% CI {:.3}–{:.3}, n = {})",
            self.value, self.low, self.high, self.n
        )
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CeilingReport {
    /// Items with at least two decided votes.
    pub items: usize,
    /// Their decided votes.
    pub votes: usize,
    /// Items left out for having fewer than two decided votes.
    pub single_vote_items: usize,
    pub rater_agreement_with_majority: Share,
    pub model_agreement_with_votes: Share,
    pub model_accuracy_against_majority: Share,
}

/// The ceiling from items and the model's rewards for each item's two responses.
pub fn agreement_ceiling(items: &[RatedItem], rewards: &[(f64, f64)]) -> CeilingReport {
    assert_eq!(items.len(), rewards.len(), "one reward pair per item");
    let (mut kept, mut votes, mut single) = (0, 0, 0);
    let (mut rater_hits, mut model_vote_hits) = (0.0, 0.0);
    let (mut majority_items, mut model_majority_hits) = (0, 0.0);
    for (item, &(reward_a, reward_b)) in items.iter().zip(rewards) {
        let (for_a, for_b) = (item.votes_for_a, item.votes_for_b);
        if for_a + for_b < 2 {
            single += 1;
            continue;
        }
        kept += 1;
        votes += for_a + for_b;
        // A vote for a agrees with the others' majority when, without it, a still leads.
        let leave_one_out = |same: usize, other: usize| -> f64 {
            let same = same - 1;
            if same > other {
                1.0
            } else if same == other {
                0.5
            } else {
                0.0
            }
        };
        if for_a > 0 {
            rater_hits += for_a as f64 * leave_one_out(for_a, for_b);
        }
        if for_b > 0 {
            rater_hits += for_b as f64 * leave_one_out(for_b, for_a);
        }
        let model_picks_a = if reward_a > reward_b {
            1.0
        } else if reward_a == reward_b {
            0.5
        } else {
            0.0
        };
        model_vote_hits += for_a as f64 * model_picks_a + for_b as f64 * (1.0 - model_picks_a);
        if for_a != for_b {
            majority_items += 1;
            model_majority_hits += if for_a > for_b {
                model_picks_a
            } else {
                1.0 - model_picks_a
            };
        }
    }
    CeilingReport {
        items: kept,
        votes,
        single_vote_items: single,
        rater_agreement_with_majority: Share::of(rater_hits, votes),
        model_agreement_with_votes: Share::of(model_vote_hits, votes),
        model_accuracy_against_majority: Share::of(model_majority_hits, majority_items),
    }
}

/// Scores each item's two responses with `model` (each alone) and computes the ceiling.
pub fn model_ceiling(model: &AnyModel, items: &[RatedItem]) -> anyhow::Result<CeilingReport> {
    let rewards = items
        .iter()
        .map(|item| {
            Ok((
                model.score_response(&item.prompt, &item.a)? as f64,
                model.score_response(&item.prompt, &item.b)? as f64,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(agreement_ceiling(items, &rewards))
}

impl fmt::Display for CeilingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "agreement ceiling: {} items with two or more decided votes ({} votes; {} items with one left out)",
            self.items, self.votes, self.single_vote_items
        )?;
        writeln!(
            f,
            "  raters agree with the others' majority: {}",
            self.rater_agreement_with_majority
        )?;
        writeln!(
            f,
            "  reward model agrees with the votes:     {}",
            self.model_agreement_with_votes
        )?;
        write!(
            f,
            "  reward model against the majority:      {}",
            self.model_accuracy_against_majority
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(votes_for_a: usize, votes_for_b: usize) -> RatedItem {
        RatedItem {
            prompt: vec![Message::new("user", "q")],
            a: "a".into(),
            b: "b".into(),
            votes_for_a,
            votes_for_b,
        }
    }

    /// Hand-checked: items (3 for a, 0 for b), (2, 1), (1, 1), (1, 0).
    /// - (3, 0): each a-vote's others are 2–0 → 3 hits.
    /// - (2, 1): a-votes' others 1–1 → 0.5 each = 1; the b-vote's others 0–2 → 0. Total 1.
    /// - (1, 1): each vote's other disagrees → 0.
    /// - (1, 0): one vote, left out.
    ///
    /// Rater agreement 4 / 8 = 0.5. The model prefers a on the first, b on the second, ties the
    /// third: votes 3 + 1 (the b-vote) + 0.5 + 0.5 = 5 of 8 = 0.625; against the majority (items 1
    /// and 2): 1 + 0 = 1 of 2.
    #[test]
    fn ceiling_is_leave_one_out_and_the_model_is_measured_on_the_same_votes() {
        let items = vec![item(3, 0), item(2, 1), item(1, 1), item(1, 0)];
        let rewards = vec![(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (1.0, 0.0)];
        let report = agreement_ceiling(&items, &rewards);
        assert_eq!(
            (report.items, report.votes, report.single_vote_items),
            (3, 8, 1)
        );
        assert_eq!(report.rater_agreement_with_majority.value, 0.5);
        assert_eq!(report.model_agreement_with_votes.value, 0.625);
        assert_eq!(
            (
                report.model_accuracy_against_majority.value,
                report.model_accuracy_against_majority.n
            ),
            (0.5, 2)
        );
    }
}
