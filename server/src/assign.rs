//! Which comparison a rater sees next: a pure policy over candidate prompts and pair counts.
//!
//! Among prompts the rater has not seen, take the model pair shown least often in the study (so every
//! pair gets about the same number of showings), then the prompt assigned least often (so prompts
//! collect ratings evenly), breaking ties at random; then put the two responses on random sides.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::Rng;

use moat_trainer::active::ActivePolicy;

use crate::domain::CheckKind;
use crate::store::{CandidatePrompt, CheckCandidate};

/// (prompt id, left (response id, model id), right (response id, model id)).
pub type Pick = (i64, (i64, i64), (i64, i64));

/// (times the pair was shown, times the prompt was assigned, prompt id, first, second response).
type CandidatePair = (i64, i64, i64, (i64, i64), (i64, i64));

/// Every pair of responses by two different models of each candidate prompt, with how often its
/// model pair was shown and its prompt assigned.
fn candidate_pairs(
    candidates: &[CandidatePrompt],
    pair_counts: &HashMap<(i64, i64), i64>,
) -> Vec<CandidatePair> {
    let mut options: Vec<CandidatePair> = Vec::new();
    for prompt in candidates {
        for (i, &first) in prompt.responses.iter().enumerate() {
            for &second in &prompt.responses[i + 1..] {
                if first.1 == second.1 {
                    continue;
                }
                let key = (first.1.min(second.1), first.1.max(second.1));
                let shown = pair_counts.get(&key).copied().unwrap_or(0);
                options.push((
                    shown,
                    prompt.times_assigned,
                    prompt.prompt_id,
                    first,
                    second,
                ));
            }
        }
    }
    options
}

pub fn choose(
    candidates: &[CandidatePrompt],
    pair_counts: &HashMap<(i64, i64), i64>,
    rng: &mut impl Rng,
) -> Option<Pick> {
    let mut options = candidate_pairs(candidates, pair_counts);
    // Shuffle first so the stable sort leaves equal options in random order.
    options.shuffle(rng);
    options.sort_by_key(|&(shown, times, ..)| (shown, times));
    let &(_, _, prompt_id, first, second) = options.first()?;
    Some(on_random_sides(prompt_id, first, second, rng))
}

/// What active sampling knows of a study: its reward model's rewards by response id, and the decided
/// votes on each pair of responses as of that training, keyed by (lower response id, higher) with
/// (votes for the lower, votes for the higher).
pub struct ActiveView<'a> {
    pub policy: ActivePolicy,
    pub rewards: &'a HashMap<i64, f64>,
    pub votes: &'a HashMap<(i64, i64), (u32, u32)>,
}

/// Active sampling (`active_sampling = uncertainty | disagreement`): among the candidates, the pair
/// of highest priority ([`moat_trainer::active::priority`]: for uncertainty, rewards closest, the
/// predicted preference nearest a coin flip; for disagreement, the votes so far furthest from the
/// model's prediction, and unvoted pairs by uncertainty); then the least-shown pair and the
/// least-assigned prompt, ties at random. A response the model has not scored (imported after its
/// training) counts as reward 0.
pub fn choose_active(
    candidates: &[CandidatePrompt],
    pair_counts: &HashMap<(i64, i64), i64>,
    active: &ActiveView<'_>,
    rng: &mut impl Rng,
) -> Option<Pick> {
    let reward = |response: (i64, i64)| active.rewards.get(&response.0).copied().unwrap_or(0.0);
    let mut options: Vec<(f64, CandidatePair)> = candidate_pairs(candidates, pair_counts)
        .into_iter()
        .map(|option| {
            let (.., first, second) = option;
            // The tally is keyed by response ids, lower first; `priority` wants (for first, for
            // second).
            let votes = match active
                .votes
                .get(&(first.0.min(second.0), first.0.max(second.0)))
            {
                Some(&(low, high)) if first.0 < second.0 => (low, high),
                Some(&(low, high)) => (high, low),
                None => (0, 0),
            };
            let priority =
                moat_trainer::active::priority(active.policy, reward(first), reward(second), votes);
            (priority, option)
        })
        .collect();
    options.shuffle(rng);
    options.sort_by(|(pa, (sa, ta, ..)), (pb, (sb, tb, ..))| {
        pb.total_cmp(pa).then((sa, ta).cmp(&(sb, tb)))
    });
    let &(_, (_, _, prompt_id, first, second)) = options.first()?;
    Some(on_random_sides(prompt_id, first, second, rng))
}

/// The two responses of a comparison on sides chosen by a fair coin (recorded with the assignment).
fn on_random_sides(prompt_id: i64, a: (i64, i64), b: (i64, i64), rng: &mut impl Rng) -> Pick {
    if rng.gen_bool(0.5) {
        (prompt_id, a, b)
    } else {
        (prompt_id, b, a)
    }
}

/// Whether the next comparison should be a quality check. Checks are drawn without replacement over
/// the session's positions, so a rater of `total` comparisons sees `round(rate × total)` of them (when
/// the study has that many) at uniformly random positions; `issued` comparisons came before, of which
/// `checks_shown` were checks.
pub fn check_is_due(
    rate: f64,
    total: u32,
    issued: u32,
    checks_shown: u32,
    rng: &mut impl Rng,
) -> bool {
    if rate <= 0.0 || issued >= total {
        return false;
    }
    let wanted = (rate * f64::from(total)).round() as u32;
    let left = wanted.saturating_sub(checks_shown);
    left > 0 && rng.gen_range(0..total - issued) < left
}

/// A quality-check comparison: the least-assigned check item (ties at random), its expected response
/// against one of its others, on random sides.
pub fn choose_check(
    candidates: &[CheckCandidate],
    rng: &mut impl Rng,
) -> Option<(Pick, CheckKind)> {
    let least = candidates.iter().map(|c| c.times_assigned).min()?;
    let fewest: Vec<&CheckCandidate> = candidates
        .iter()
        .filter(|c| c.times_assigned == least)
        .collect();
    let check = fewest.choose(rng)?;
    let other = *check.others.choose(rng)?;
    Some((
        on_random_sides(check.prompt_id, check.better, other, rng),
        check.kind,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn prompt(id: i64, models: &[i64]) -> CandidatePrompt {
        CandidatePrompt {
            prompt_id: id,
            times_assigned: 0,
            responses: models.iter().map(|&m| (id * 100 + m, m)).collect(),
        }
    }

    #[test]
    fn balances_pairs_and_randomizes_sides() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts: HashMap<(i64, i64), i64> = HashMap::new();
        let mut left_first = 0;
        for round in 0..300 {
            let candidates: Vec<_> = (0..5).map(|p| prompt(round * 10 + p, &[1, 2, 3])).collect();
            let (_, left, right) = choose(&candidates, &counts, &mut rng).unwrap();
            if left.1 < right.1 {
                left_first += 1;
            }
            *counts
                .entry((left.1.min(right.1), left.1.max(right.1)))
                .or_default() += 1;
        }
        // Three pairs, 300 showings: the least-shown rule keeps them exactly level.
        assert_eq!(
            counts
                .values()
                .copied()
                .collect::<Vec<_>>()
                .iter()
                .sum::<i64>(),
            300
        );
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
        // Sides are a fair coin: 300 flips stay within 150 ± 45 except with vanishing probability.
        assert!((105..=195).contains(&left_first), "{left_first}");
    }

    #[test]
    fn active_sampling_puts_the_least_certain_pair_first() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Prompt 1: rewards 3.0 / 0.0 / -3.0 (the model is sure of every pair); prompt 2: 1.0 / 1.1
        // / 5.0 (it cannot tell its first two responses apart).
        let candidates = [prompt(1, &[1, 2, 3]), prompt(2, &[1, 2, 3])];
        let rewards: HashMap<i64, f64> = [
            (101, 3.0),
            (102, 0.0),
            (103, -3.0),
            (201, 1.0),
            (202, 1.1),
            (203, 5.0),
        ]
        .into_iter()
        .collect();
        // However often the pair was shown before: uncertainty comes first.
        let counts: HashMap<(i64, i64), i64> = [((1, 2), 50), ((1, 3), 0), ((2, 3), 0)]
            .into_iter()
            .collect();
        for _ in 0..50 {
            let (prompt_id, left, right) = choose_active(
                &candidates,
                &counts,
                &ActiveView {
                    policy: ActivePolicy::Uncertainty,
                    rewards: &rewards,
                    votes: &HashMap::new(),
                },
                &mut rng,
            )
            .unwrap();
            assert_eq!(prompt_id, 2);
            let mut responses = [left.0, right.0];
            responses.sort();
            assert_eq!(responses, [201, 202]);
        }
        // Equal rewards everywhere (no model knowledge): balance decides, as in the uniform policy.
        let nothing = HashMap::new();
        let no_votes = HashMap::new();
        let unknown = ActiveView {
            policy: ActivePolicy::Uncertainty,
            rewards: &nothing,
            votes: &no_votes,
        };
        let (_, left, right) = choose_active(&candidates, &counts, &unknown, &mut rng).unwrap();
        assert_ne!((left.1.min(right.1), left.1.max(right.1)), (1, 2));
        assert!(choose_active(&[prompt(3, &[1])], &counts, &unknown, &mut rng).is_none());
    }

    #[test]
    fn disagreement_puts_the_most_contradicted_pair_first() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        // One prompt, the model sure of every pair: 1 > 2 > 3 by three points each.
        let candidates = [prompt(1, &[1, 2, 3])];
        let rewards: HashMap<i64, f64> = [(101, 6.0), (102, 3.0), (103, 0.0)].into_iter().collect();
        // People preferred 3 over 2 twice (against the model), and 1 over 3 twice (with it).
        let votes: HashMap<(i64, i64), (u32, u32)> = [((102, 103), (0, 2)), ((101, 103), (2, 0))]
            .into_iter()
            .collect();
        let view = ActiveView {
            policy: ActivePolicy::Disagreement,
            rewards: &rewards,
            votes: &votes,
        };
        for _ in 0..20 {
            let (_, left, right) =
                choose_active(&candidates, &HashMap::new(), &view, &mut rng).unwrap();
            let mut responses = [left.0, right.0];
            responses.sort();
            assert_eq!(responses, [102, 103], "the contradicted pair first");
        }
        // Under uncertainty the same model finds no pair uncertain enough to beat the others by
        // votes: the closest rewards (3 apart) tie, and balance decides among all three.
        let uncertainty = ActiveView {
            policy: ActivePolicy::Uncertainty,
            ..view
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..60 {
            let (_, left, right) =
                choose_active(&candidates, &HashMap::new(), &uncertainty, &mut rng).unwrap();
            seen.insert((left.0.min(right.0), left.0.max(right.0)));
        }
        assert!(
            seen.contains(&(101, 102)) && seen.contains(&(102, 103)),
            "{seen:?}"
        );
        assert!(
            !seen.contains(&(101, 103)),
            "the surest pair never comes first: {seen:?}"
        );
    }

    #[test]
    fn prefers_least_assigned_prompt_and_needs_two_models() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut busy = prompt(1, &[1, 2]);
        busy.times_assigned = 5;
        let fresh = prompt(2, &[1, 2]);
        let (chosen, ..) = choose(&[busy, fresh], &HashMap::new(), &mut rng).unwrap();
        assert_eq!(chosen, 2);
        assert!(choose(&[prompt(3, &[1])], &HashMap::new(), &mut rng).is_none());
    }

    #[test]
    fn checks_come_in_the_asked_share_at_random_positions() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut at_position = [0u32; 10];
        for _ in 0..2000 {
            let mut shown = 0;
            for issued in 0..10 {
                if check_is_due(0.2, 10, issued, shown, &mut rng) {
                    shown += 1;
                    at_position[issued as usize] += 1;
                }
            }
            // Exactly round(0.2 × 10) = 2 checks per rater, never more, never fewer.
            assert_eq!(shown, 2);
        }
        // 4,000 checks over 10 positions: 400 each on average; a binomial(2000, 0.2) stays within
        // 400 ± 90 except with vanishing probability.
        assert!(
            at_position.iter().all(|&n| (310..=490).contains(&n)),
            "{at_position:?}"
        );
        // No checks asked, or none left to show.
        assert!(!check_is_due(0.0, 10, 0, 0, &mut rng));
        assert!(!check_is_due(0.2, 10, 9, 2, &mut rng));
        assert!(!check_is_due(0.2, 10, 10, 0, &mut rng));
    }

    #[test]
    fn a_check_pairs_its_expected_response_with_another() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let check = |id: i64, times_assigned: i64| CheckCandidate {
            prompt_id: id,
            kind: CheckKind::Gold,
            times_assigned,
            better: (id * 10 + 1, 1),
            others: vec![(id * 10 + 2, 2), (id * 10 + 3, 3)],
        };
        let mut left_better = 0;
        for _ in 0..200 {
            let ((prompt, left, right), kind) =
                choose_check(&[check(1, 4), check(2, 1), check(3, 1)], &mut rng).unwrap();
            assert!(prompt == 2 || prompt == 3, "least assigned first: {prompt}");
            assert_eq!(kind, CheckKind::Gold);
            assert!(
                left.1 == 1 || right.1 == 1,
                "the expected response is shown"
            );
            assert_ne!(left.1, right.1);
            left_better += u32::from(left.1 == 1);
        }
        assert!((60..=140).contains(&left_better), "{left_better}");
        assert!(choose_check(&[], &mut rng).is_none());
    }
}
