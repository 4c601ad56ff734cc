//! Which comparison a rater sees next: a pure policy over candidate prompts and pair counts.
//!
//! Among prompts the rater has not seen, take the model pair shown least often in the study (so every
//! pair gets about the same number of showings), then the prompt assigned least often (so prompts
//! collect ratings evenly), breaking ties at random; then put the two responses on random sides.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::store::CandidatePrompt;

/// (prompt id, left (response id, model id), right (response id, model id)).
pub type Pick = (i64, (i64, i64), (i64, i64));

/// (times the pair was shown, times the prompt was assigned, prompt id, first, second response).
type CandidatePair = (i64, i64, i64, (i64, i64), (i64, i64));

pub fn choose(
    candidates: &[CandidatePrompt],
    pair_counts: &HashMap<(i64, i64), i64>,
    rng: &mut impl Rng,
) -> Option<Pick> {
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
    // Shuffle first so the stable sort leaves equal options in random order.
    options.shuffle(rng);
    options.sort_by_key(|&(shown, times, ..)| (shown, times));
    let &(_, _, prompt_id, first, second) = options.first()?;
    Some(if rng.gen_bool(0.5) {
        (prompt_id, first, second)
    } else {
        (prompt_id, second, first)
    })
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
    fn prefers_least_assigned_prompt_and_needs_two_models() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut busy = prompt(1, &[1, 2]);
        busy.times_assigned = 5;
        let fresh = prompt(2, &[1, 2]);
        let (chosen, ..) = choose(&[busy, fresh], &HashMap::new(), &mut rng).unwrap();
        assert_eq!(chosen, 2);
        assert!(choose(&[prompt(3, &[1])], &HashMap::new(), &mut rng).is_none());
    }
}
