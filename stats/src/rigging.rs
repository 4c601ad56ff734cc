//! Raters whose votes should not be trusted: vote riggers and careless raters.
//!
//! Chatbot Arena screens raters with a likelihood test (Chiang et al., "Chatbot Arena", 2024, §5.1):
//! each vote gets the probability `p` that the crowd gives the same verdict on the same model pair,
//! and a rater's statistic is the product of `1 / (2p)` over their votes. Under the hypothesis that
//! the rater votes like the crowd, each factor has expectation exactly 1 (`p · 1/(2p) + (1 − p) ·
//! 1/(2(1 − p)) = 1`), so the product is a likelihood ratio ("a coin flip" against "the crowd") whose
//! expectation is 1, and by Markov's inequality it exceeds `1/α` with probability at most `α`. The
//! 2025 vote-rigging papers (Min et al., "Improving Your Model Ranking on Chatbot Arena by Vote
//! Rigging"; Huang et al., "Exploring and Mitigating Adversarial Manipulation of Voting-Based
//! Leaderboards") show that a few hundred votes that always favour one model move its rank, and that
//! an "omnipresent" rigger also votes on battles without the target so as to look ordinary. Such a
//! rigger may well pass the Arena statistic (their ordinary-looking votes pull it down), so
//! [`check_raters`] runs four tests, each an e-value or a plain threshold with its reason spelled out:
//!
//! - **Unlikely votes** ([`FlagKind::UnlikelyVotes`]): the Arena statistic above, `∏ 1/(2p)` over the
//!   rater's decided votes, flagged above `1/α`.
//! - **Model loyalty** ([`FlagKind::ModelLoyalty`]): for each model the rater saw, the likelihood
//!   ratio of "chooses this model with probability `loyalty_share` (or, for a demotion, `1 −
//!   loyalty_share`) whenever it appears" against the crowd's rate of that model winning that pair.
//!   Its expectation under the crowd hypothesis is again 1; with `K` models and two directions the
//!   threshold is `2K/α` (Bonferroni), so the test as a whole keeps level `α`. This is the test an
//!   omnipresent rigger cannot pass: the target wins every battle it appears in.
//! - **One side** ([`FlagKind::OneSided`]): the same kind of e-value for "chooses the left (or right)
//!   side with probability `side_share`" against 1/2. Sides are randomized by the server, so 1/2 is
//!   exact for a rater who reads; threshold `2/α`.
//! - **Too fast** ([`FlagKind::TooFast`]): the median time on the comparison page is below
//!   `min_median_ms` (over at least `min_timed_votes` timed votes). Not a statistical test: nobody
//!   reads two answers in under a few seconds. The time is reported by the rater's browser, so a
//!   rigger can fake it; it catches the careless, not the malicious.
//!
//! `p` comes from everyone else's decided votes on the pair (the rater's own votes are left out, so a
//! prolific rater cannot vouch for themself) with `prior_votes` pseudo-votes each way, so a pair
//! nobody else rated gives `p = 1/2` and a factor of 1. The loyalty test skips pairs with fewer than
//! `min_history` votes of others (there is no crowd to be loyal against). Ties and "both bad" carry no side: they are
//! left out of the likelihood tests (each decided vote's factor is conditional on the vote being
//! decided, so the expectations stay 1), and count only for the time test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::Outcome;

/// One vote of one rater: the model shown on each side and the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterVote {
    /// The rater's pseudonym (any stable identifier).
    pub rater: String,
    /// The model shown on the left (side A of [`Outcome`]).
    pub model_a: String,
    /// The model shown on the right.
    pub model_b: String,
    pub outcome: Outcome,
    /// Time on the comparison page in milliseconds, when the browser reported it.
    pub duration_ms: Option<u64>,
}

impl RaterVote {
    pub fn new(
        rater: impl Into<String>,
        model_a: impl Into<String>,
        model_b: impl Into<String>,
        outcome: Outcome,
        duration_ms: Option<u64>,
    ) -> RaterVote {
        RaterVote {
            rater: rater.into(),
            model_a: model_a.into(),
            model_b: model_b.into(),
            outcome,
            duration_ms,
        }
    }
}

/// The parameters of [`check_raters`]; the defaults are what the server uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RiggingOptions {
    /// Level of each statistical test: an honest rater is flagged by one test with probability at
    /// most `alpha`. Default 0.01 (the Arena's statistic is compared with 1/α in the same way); with
    /// three tests an honest rater's chance of any statistical flag is at most 3%.
    pub alpha: f64,
    /// Pseudo-votes added to each direction of a pair's history before `p` is read off it. Default 1
    /// (Laplace's rule): a pair nobody else rated gives 1/2, and one vote of history cannot give a
    /// `p` of 0 or 1.
    pub prior_votes: f64,
    /// The alternative of the loyalty test: how often a loyal rater picks their model. Default 0.9
    /// (a rater who picks a model at least ~3/4 of the time more often than the crowd gains evidence).
    pub loyalty_share: f64,
    /// The alternative of the one-side test. Default 0.9: a rater gains evidence when about 3/4 or more
    /// of their decided votes go to one side; ten votes all on one side are enough.
    pub side_share: f64,
    /// The loyalty test counts a vote only when everyone else cast at least this many decided votes
    /// on its model pair. Default 10. Without a crowd to compare with, `p` is the prior's 1/2, and a
    /// rater who always prefers the better of two models would look loyal to it.
    pub min_history: usize,
    /// A rater whose median time per vote is below this is flagged. Default 3,000 ms.
    pub min_median_ms: u64,
    /// The time test needs at least this many timed votes. Default 5.
    pub min_timed_votes: usize,
}

impl Default for RiggingOptions {
    fn default() -> Self {
        RiggingOptions {
            alpha: 0.01,
            prior_votes: 1.0,
            loyalty_share: 0.9,
            side_share: 0.9,
            min_history: 10,
            min_median_ms: 3_000,
            min_timed_votes: 5,
        }
    }
}

impl RiggingOptions {
    /// Checks options that come from users before they reach the computation.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!(
                "alpha must be between 0 and 1 (exclusive), got {}",
                self.alpha
            ));
        }
        if !(self.prior_votes > 0.0 && self.prior_votes.is_finite()) {
            return Err(format!(
                "prior votes must be a finite number > 0, got {}",
                self.prior_votes
            ));
        }
        for (name, share) in [
            ("loyalty share", self.loyalty_share),
            ("side share", self.side_share),
        ] {
            if !(share > 0.5 && share < 1.0) {
                return Err(format!(
                    "{name} must be between 0.5 and 1 (exclusive), got {share}"
                ));
            }
        }
        Ok(())
    }
}

/// Which test flagged a rater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The rater's verdicts are unlikely under the crowd's (Chatbot Arena's statistic).
    UnlikelyVotes,
    /// The rater favours (or disfavours) one model whenever it appears, more than the crowd does.
    ModelLoyalty,
    /// The rater nearly always picks the same side.
    OneSided,
    /// The rater's median time per vote is too short to have read the responses.
    TooFast,
}

impl FlagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::UnlikelyVotes => "unlikely_votes",
            FlagKind::ModelLoyalty => "model_loyalty",
            FlagKind::OneSided => "one_sided",
            FlagKind::TooFast => "too_fast",
        }
    }
}

/// One reason to distrust a rater, in words a researcher can check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterFlag {
    pub kind: FlagKind,
    pub reason: String,
}

/// The tests' results for one rater.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterCheck {
    pub rater: String,
    pub votes: usize,
    /// Votes for the left or the right response (ties and "both bad" excluded).
    pub decided: usize,
    /// Natural log of the Arena statistic `∏ 1/(2p)` (0 without decided votes).
    pub log_statistic: f64,
    /// Natural log of the largest loyalty e-value over the rater's models and both directions.
    pub log_loyalty: f64,
    /// Natural log of the larger one-side e-value (left or right).
    pub log_one_side: f64,
    /// Median time on the comparison page over the timed votes.
    pub median_ms: Option<u64>,
    /// Empty when no test flagged the rater.
    pub flags: Vec<RaterFlag>,
}

impl RaterCheck {
    pub fn is_flagged(&self) -> bool {
        !self.flags.is_empty()
    }
}

/// Decided votes of one rater as (winner index, loser index, the winner was on the left).
struct RaterHistory {
    votes: usize,
    decided: Vec<(usize, usize, bool)>,
    durations: Vec<u64>,
}

/// Runs the four tests of the module documentation on every rater; one result per rater, in the
/// order of their pseudonyms. Options are assumed valid ([`RiggingOptions::validate`]).
pub fn check_raters<'a>(votes: &'a [RaterVote], options: &RiggingOptions) -> Vec<RaterCheck> {
    let mut model_index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut index_of = |name: &'a str| -> usize {
        *model_index.entry(name).or_insert_with(|| {
            names.push(name);
            names.len() - 1
        })
    };
    let mut raters: BTreeMap<&str, RaterHistory> = BTreeMap::new();
    // (winner, loser) → decided votes of everyone.
    let mut wins: HashMap<(usize, usize), f64> = HashMap::new();
    for vote in votes {
        let a = index_of(&vote.model_a);
        let b = index_of(&vote.model_b);
        let history = raters.entry(&vote.rater).or_insert_with(|| RaterHistory {
            votes: 0,
            decided: Vec::new(),
            durations: Vec::new(),
        });
        history.votes += 1;
        if let Some(ms) = vote.duration_ms {
            history.durations.push(ms);
        }
        let decided = match vote.outcome {
            Outcome::AWins => Some((a, b, true)),
            Outcome::BWins => Some((b, a, false)),
            Outcome::Tie | Outcome::BothBad => None,
        };
        // A model against itself says nothing about either side.
        if let Some((winner, loser, left)) = decided.filter(|_| a != b) {
            history.decided.push((winner, loser, left));
            *wins.entry((winner, loser)).or_default() += 1.0;
        }
    }

    let threshold = (1.0 / options.alpha).ln();
    let side_threshold = (2.0 / options.alpha).ln();
    raters
        .into_iter()
        .map(|(rater, history)| {
            let mut own: HashMap<(usize, usize), f64> = HashMap::new();
            for &(winner, loser, _) in &history.decided {
                *own.entry((winner, loser)).or_default() += 1.0;
            }
            // The crowd's probability that `winner` beats `loser`, without this rater's votes.
            // The crowd's probability that `winner` beats `loser` without this rater's votes, and
            // how many decided votes it rests on.
            let crowd = |winner: usize, loser: usize| -> (f64, f64) {
                let others = |w: usize, l: usize| {
                    wins.get(&(w, l)).copied().unwrap_or(0.0)
                        - own.get(&(w, l)).copied().unwrap_or(0.0)
                };
                let (w, l) = (others(winner, loser), others(loser, winner));
                let p = (w + options.prior_votes) / (w + l + 2.0 * options.prior_votes);
                (p, w + l)
            };

            // The Arena statistic, and per model the log e-values of loyalty (+) and demotion (−).
            let mut log_statistic = 0.0;
            let mut per_model: BTreeMap<usize, (f64, f64, usize, usize)> = BTreeMap::new();
            let q = options.loyalty_share;
            for &(winner, loser, _) in &history.decided {
                let (p, history_votes) = crowd(winner, loser);
                log_statistic -= (2.0 * p).ln();
                if history_votes < options.min_history as f64 {
                    continue;
                }
                // The winner was chosen: evidence for loyalty to it and against it being demoted.
                let entry = per_model.entry(winner).or_default();
                entry.0 += (q / p).ln();
                entry.1 += ((1.0 - q) / p).ln();
                entry.2 += 1;
                entry.3 += 1;
                // The loser was passed over, which the crowd does with probability p; a loyal
                // rater would with probability 1 − q, a demoting one with probability q.
                let entry = per_model.entry(loser).or_default();
                entry.0 += ((1.0 - q) / p).ln();
                entry.1 += (q / p).ln();
                entry.3 += 1;
            }

            let mut flags = Vec::new();
            if log_statistic > threshold {
                flags.push(RaterFlag {
                    kind: FlagKind::UnlikelyVotes,
                    reason: format!(
                        "unlikely votes: over {} decided votes the crowd's verdicts make this rater's \
                         {:.3e} times less likely than a coin flip's (flagged above {:.0})",
                        history.decided.len(),
                        log_statistic.exp(),
                        1.0 / options.alpha
                    ),
                });
            }

            let loyalty_threshold = (2.0 * per_model.len() as f64 / options.alpha).ln();
            let mut log_loyalty = f64::NEG_INFINITY;
            let mut loyalty_flags = Vec::new();
            for (&model, &(for_model, against_model, chosen, seen)) in &per_model {
                log_loyalty = log_loyalty.max(for_model).max(against_model);
                let direction = if for_model > loyalty_threshold {
                    "for"
                } else if against_model > loyalty_threshold {
                    "against"
                } else {
                    continue;
                };
                loyalty_flags.push(RaterFlag {
                    kind: FlagKind::ModelLoyalty,
                    reason: format!(
                        "model loyalty: voted {direction} {} in {} of {} decided votes where it \
                         appeared (e-value {:.3e} against the crowd, flagged above {:.0})",
                        names[model],
                        if direction == "for" {
                            chosen
                        } else {
                            seen - chosen
                        },
                        seen,
                        for_model.max(against_model).exp(),
                        2.0 * per_model.len() as f64 / options.alpha
                    ),
                });
            }
            flags.extend(loyalty_flags);
            if per_model.is_empty() {
                log_loyalty = 0.0;
            }

            let lefts = history.decided.iter().filter(|d| d.2).count() as f64;
            let rights = history.decided.len() as f64 - lefts;
            let s = options.side_share;
            let log_left = lefts * (2.0 * s).ln() + rights * (2.0 * (1.0 - s)).ln();
            let log_right = rights * (2.0 * s).ln() + lefts * (2.0 * (1.0 - s)).ln();
            let log_one_side = log_left.max(log_right);
            if log_one_side > side_threshold {
                let (side, count) = if log_left >= log_right {
                    ("left", lefts)
                } else {
                    ("right", rights)
                };
                flags.push(RaterFlag {
                    kind: FlagKind::OneSided,
                    reason: format!(
                        "one side: chose the {side} response in {count:.0} of {} decided votes \
                         (sides are random; e-value {:.3e}, flagged above {:.0})",
                        history.decided.len(),
                        log_one_side.exp(),
                        2.0 / options.alpha
                    ),
                });
            }

            let mut durations = history.durations;
            let median_ms = median(&mut durations);
            if let Some(ms) = median_ms.filter(|&ms| {
                durations.len() >= options.min_timed_votes.max(1) && ms < options.min_median_ms
            }) {
                flags.push(RaterFlag {
                    kind: FlagKind::TooFast,
                    reason: format!(
                        "too fast: median {:.1} s per vote over {} timed votes (flagged under {:.1} s)",
                        ms as f64 / 1000.0,
                        durations.len(),
                        options.min_median_ms as f64 / 1000.0
                    ),
                });
            }

            RaterCheck {
                rater: rater.to_string(),
                votes: history.votes,
                decided: history.decided.len(),
                log_statistic,
                log_loyalty,
                log_one_side: if history.decided.is_empty() {
                    0.0
                } else {
                    log_one_side
                },
                median_ms,
                flags,
            }
        })
        .collect()
}

/// The pseudonyms of the raters [`check_raters`] flags.
pub fn flagged_raters(votes: &[RaterVote], options: &RiggingOptions) -> BTreeSet<String> {
    check_raters(votes, options)
        .into_iter()
        .filter(RaterCheck::is_flagged)
        .map(|check| check.rater)
        .collect()
}

/// The lower median (an observed value, so it is a whole number of milliseconds).
fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn vote(rater: &str, a: &str, b: &str, outcome: Outcome) -> RaterVote {
        RaterVote::new(rater, a, b, outcome, Some(20_000))
    }

    /// `n` votes of distinct crowd raters (so none of them has enough votes to be flagged).
    fn crowd(votes: &mut Vec<RaterVote>, winner: &str, loser: &str, n: usize) {
        for i in 0..n {
            let rater = format!("crowd-{}", votes.len() + i);
            // Alternate sides so that the crowd is not one-sided either.
            if i % 2 == 0 {
                votes.push(vote(&rater, winner, loser, Outcome::AWins));
            } else {
                votes.push(vote(&rater, loser, winner, Outcome::BWins));
            }
        }
    }

    fn check_of<'c>(checks: &'c [RaterCheck], rater: &str) -> &'c RaterCheck {
        checks.iter().find(|c| c.rater == rater).unwrap()
    }

    fn kinds(check: &RaterCheck) -> Vec<FlagKind> {
        check.flags.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn the_statistic_is_the_product_of_one_over_two_p_against_everyone_else() {
        // Others: x beat y 8 times, never lost. With one pseudo-vote each way, p(y beats x) =
        // (0 + 1) / (8 + 0 + 2) = 0.1, so the rater's vote for y has factor 1/(2 · 0.1) = 5, and
        // their vote for x has p = 9/10, factor 1/1.8.
        let mut votes = Vec::new();
        crowd(&mut votes, "x", "y", 8);
        votes.push(vote("r", "y", "x", Outcome::AWins));
        votes.push(vote("r", "x", "y", Outcome::AWins));
        let checks = check_raters(&votes, &RiggingOptions::default());
        let r = check_of(&checks, "r");
        assert!(
            (r.log_statistic - (5.0f64 / 1.8).ln()).abs() < 1e-12,
            "{r:?}"
        );
        assert_eq!((r.votes, r.decided), (2, 2));
    }

    #[test]
    fn a_pair_nobody_else_rated_gives_a_factor_of_one_even_after_many_own_votes() {
        // Were the rater's own votes part of the history, p would approach 1 and the statistic 0.
        let votes: Vec<RaterVote> = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    vote("solo", "x", "y", Outcome::AWins)
                } else {
                    vote("solo", "y", "x", Outcome::BWins)
                }
            })
            .collect();
        let checks = check_raters(&votes, &RiggingOptions::default());
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].log_statistic, 0.0);
        assert!(checks[0].flags.is_empty(), "{:?}", checks[0].flags);
    }

    #[test]
    fn ties_are_neutral_in_the_likelihood_tests() {
        let mut votes = Vec::new();
        crowd(&mut votes, "x", "y", 8);
        votes.push(vote("r", "y", "x", Outcome::AWins));
        let alone = check_raters(&votes, &RiggingOptions::default());
        for _ in 0..20 {
            votes.push(vote("r", "x", "y", Outcome::Tie));
            votes.push(vote("r", "y", "x", Outcome::BothBad));
        }
        let with_ties = check_raters(&votes, &RiggingOptions::default());
        let (before, after) = (check_of(&alone, "r"), check_of(&with_ties, "r"));
        assert_eq!(before.log_statistic, after.log_statistic);
        assert_eq!((after.votes, after.decided), (41, 1));
    }

    #[test]
    fn a_contrarian_is_flagged_for_unlikely_votes_and_a_mostly_agreeing_rater_is_not() {
        let mut votes = Vec::new();
        crowd(&mut votes, "x", "y", 300);
        crowd(&mut votes, "y", "x", 30);
        // p(y beats x) = 31/332: ten such votes give a statistic of (332/62)^10 ≈ 2e7 > 100.
        for i in 0..10 {
            let side = if i % 2 == 0 {
                Outcome::AWins
            } else {
                Outcome::BWins
            };
            let (a, b) = if i % 2 == 0 { ("y", "x") } else { ("x", "y") };
            votes.push(vote("contrarian", a, b, side));
        }
        // Nine votes with the crowd and one against: 0.9^9 · ... well below 1.
        for i in 0..10 {
            let (a, b) = if i % 2 == 0 { ("x", "y") } else { ("y", "x") };
            let chose_x = i != 3;
            let outcome = match (a == "x", chose_x) {
                (true, true) | (false, false) => Outcome::AWins,
                _ => Outcome::BWins,
            };
            votes.push(vote("agreeing", a, b, outcome));
        }
        let checks = check_raters(&votes, &RiggingOptions::default());
        let contrarian = check_of(&checks, "contrarian");
        assert!(
            kinds(contrarian).contains(&FlagKind::UnlikelyVotes),
            "{contrarian:?}"
        );
        assert!(contrarian.flags[0].reason.contains("10 decided votes"));
        let agreeing = check_of(&checks, "agreeing");
        assert!(agreeing.flags.is_empty(), "{agreeing:?}");
        assert!(agreeing.log_statistic < 0.0);
    }

    /// The crowd's history for an omnipresent-rigging scenario: `t` is an average model (wins half
    /// its battles against a, b and c) and a beats b and c four times out of five.
    fn rigging_crowd() -> Vec<RaterVote> {
        let mut votes = Vec::new();
        for other in ["a", "b", "c"] {
            crowd(&mut votes, "t", other, 50);
            crowd(&mut votes, other, "t", 50);
        }
        for (w, l) in [("a", "b"), ("a", "c"), ("b", "c")] {
            crowd(&mut votes, w, l, 80);
            crowd(&mut votes, l, w, 20);
        }
        votes
    }

    #[test]
    fn an_omnipresent_rigger_passes_the_arena_statistic_but_not_the_loyalty_test() {
        let mut votes = rigging_crowd();
        // Sixteen battles with the target, all won by it; forty ordinary-looking votes elsewhere.
        for i in 0..16 {
            let other = ["a", "b", "c"][i % 3];
            if i % 2 == 0 {
                votes.push(vote("rigger", "t", other, Outcome::AWins));
            } else {
                votes.push(vote("rigger", other, "t", Outcome::BWins));
            }
        }
        for i in 0..40 {
            let (w, l) = [("a", "b"), ("a", "c"), ("b", "c")][i % 3];
            if i % 2 == 0 {
                votes.push(vote("rigger", w, l, Outcome::AWins));
            } else {
                votes.push(vote("rigger", l, w, Outcome::BWins));
            }
        }
        let checks = check_raters(&votes, &RiggingOptions::default());
        let rigger = check_of(&checks, "rigger");
        assert_eq!(kinds(rigger), vec![FlagKind::ModelLoyalty], "{rigger:?}");
        assert!(
            rigger.log_statistic < (100.0f64).ln(),
            "the camouflage hides the rigger from the Arena statistic: {rigger:?}"
        );
        let reason = &rigger.flags[0].reason;
        assert!(reason.contains("voted for t in 16 of 16"), "{reason}");
        // None of the crowd (one vote each) is flagged.
        assert_eq!(flagged_raters(&votes, &RiggingOptions::default()).len(), 1);
    }

    #[test]
    fn a_rater_who_always_votes_against_one_model_is_flagged_for_demoting_it() {
        let mut votes = rigging_crowd();
        for i in 0..16 {
            let other = ["a", "b", "c"][i % 3];
            if i % 2 == 0 {
                votes.push(vote("demoter", "t", other, Outcome::BWins));
            } else {
                votes.push(vote("demoter", other, "t", Outcome::AWins));
            }
        }
        let checks = check_raters(&votes, &RiggingOptions::default());
        let demoter = check_of(&checks, "demoter");
        assert_eq!(kinds(demoter), vec![FlagKind::ModelLoyalty], "{demoter:?}");
        assert!(demoter.flags[0]
            .reason
            .contains("voted against t in 16 of 16"));
    }

    #[test]
    fn ten_votes_on_one_side_are_flagged_and_nine_of_ten_are_not() {
        // e-value of 10 lefts: 1.8^10 ≈ 357 > 2/α = 200; of 9 lefts and a right: 1.8^9 · 0.2 ≈ 40.
        let mut votes = Vec::new();
        for i in 0..10 {
            let (a, b) = if i % 2 == 0 { ("x", "y") } else { ("y", "x") };
            votes.push(vote("lefty", a, b, Outcome::AWins));
            let outcome = if i == 0 {
                Outcome::BWins
            } else {
                Outcome::AWins
            };
            votes.push(vote("mostly-left", a, b, outcome));
        }
        let checks = check_raters(&votes, &RiggingOptions::default());
        let lefty = check_of(&checks, "lefty");
        assert_eq!(kinds(lefty), vec![FlagKind::OneSided]);
        assert!(lefty.flags[0].reason.contains("left response in 10 of 10"));
        assert!((lefty.log_one_side - 10.0 * 1.8f64.ln()).abs() < 1e-12);
        assert!(check_of(&checks, "mostly-left").flags.is_empty());
    }

    #[test]
    fn a_median_under_the_threshold_is_too_fast_once_there_are_enough_timed_votes() {
        let timed = |rater: &str, durations: &[Option<u64>]| -> Vec<RaterVote> {
            durations
                .iter()
                .enumerate()
                .map(|(i, &ms)| {
                    let outcome = if i % 2 == 0 {
                        Outcome::AWins
                    } else {
                        Outcome::Tie
                    };
                    RaterVote::new(rater, "x", "y", outcome, ms)
                })
                .collect()
        };
        let mut votes = timed(
            "speeder",
            &[
                Some(900),
                Some(1200),
                Some(40_000),
                Some(1500),
                Some(800),
                None,
            ],
        );
        votes.extend(timed(
            "few",
            &[Some(900), Some(1000), Some(1100), Some(1200)],
        ));
        votes.extend(timed("at-threshold", &[Some(3000); 5]));
        votes.extend(timed("untimed", &[None; 10]));
        let checks = check_raters(&votes, &RiggingOptions::default());
        let speeder = check_of(&checks, "speeder");
        assert_eq!(speeder.median_ms, Some(1200));
        assert_eq!(kinds(speeder), vec![FlagKind::TooFast]);
        assert!(speeder.flags[0]
            .reason
            .contains("median 1.2 s per vote over 5 timed votes"));
        for rater in ["few", "at-threshold", "untimed"] {
            assert!(check_of(&checks, rater).flags.is_empty(), "{rater}");
        }
    }

    #[test]
    fn raters_who_vote_like_the_crowd_are_rarely_flagged() {
        // 400 raters of 40 votes each, all drawing verdicts from the same Bradley–Terry model over
        // six models: the statistical tests must keep close to their level (at most 3α in all).
        let strengths = [1.2, 0.8, 0.3, 0.0, -0.5, -1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut votes = Vec::new();
        for rater in 0..400 {
            for _ in 0..40 {
                let a = rng.gen_range(0..6);
                let b = (a + rng.gen_range(1..6)) % 6;
                let p_a = 1.0 / (1.0 + f64::exp(strengths[b] - strengths[a]));
                let outcome = if rng.gen::<f64>() < 0.1 {
                    Outcome::Tie
                } else if rng.gen::<f64>() < p_a {
                    Outcome::AWins
                } else {
                    Outcome::BWins
                };
                votes.push(RaterVote::new(
                    format!("r{rater}"),
                    format!("m{a}"),
                    format!("m{b}"),
                    outcome,
                    Some(15_000),
                ));
            }
        }
        let flagged = flagged_raters(&votes, &RiggingOptions::default());
        assert!(flagged.len() <= 12, "{} of 400 flagged", flagged.len());
    }

    #[test]
    fn options_are_validated() {
        assert!(RiggingOptions::default().validate().is_ok());
        for bad in [
            RiggingOptions {
                alpha: 0.0,
                ..Default::default()
            },
            RiggingOptions {
                alpha: 1.0,
                ..Default::default()
            },
            RiggingOptions {
                prior_votes: 0.0,
                ..Default::default()
            },
            RiggingOptions {
                loyalty_share: 0.5,
                ..Default::default()
            },
            RiggingOptions {
                side_share: 1.0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
