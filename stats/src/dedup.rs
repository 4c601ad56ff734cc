//! Prompt de-duplication as LMArena does it (FastChat's `serve/monitor/deduplication.py`): a
//! prompt is the text of its user turns, each followed by a newline, cut at 10,000 characters;
//! prompts asked more often than the 99.99th percentile of the prompts' counts are down-sampled to
//! that count, the battles kept being drawn at random (seeded). Everything else is kept.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Characters of the user turns that identify a prompt (FastChat's cut).
pub const PROMPT_KEY_CHARACTERS: usize = 10_000;
/// LMArena's percentile of the prompt counts above which a prompt is down-sampled.
pub const DEFAULT_PERCENTILE: f64 = 0.9999;

/// The identity of a prompt: a 64-bit hash of its user turns as FastChat joins them
/// (`turn + "\n"` for each, cut at 10,000 characters).
pub fn prompt_key<S: AsRef<str>>(user_turns: &[S]) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut remaining = PROMPT_KEY_CHARACTERS;
    for turn in user_turns {
        for piece in [turn.as_ref(), "\n"] {
            if remaining == 0 {
                break;
            }
            let cut = piece
                .char_indices()
                .nth(remaining)
                .map_or(piece.len(), |(at, _)| at);
            let kept = &piece[..cut];
            remaining -= kept.chars().count();
            hasher.write(kept.as_bytes());
        }
    }
    remaining.hash(&mut hasher);
    hasher.finish()
}

/// What de-duplication left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deduplication {
    pub method: String,
    /// Battles with a prompt (the others are kept as they are).
    pub battles_with_prompt: u64,
    pub distinct_prompts: u64,
    /// The percentile count: prompts asked more often keep this many battles (rounded down).
    pub cutoff: f64,
    pub high_frequency_prompts: u64,
    pub battles_left_out: u64,
}

/// Pandas' default (linear) quantile of sorted values.
fn linear_quantile(sorted: &[u64], probability: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let position = (sorted.len() - 1) as f64 * probability;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] as f64 + fraction * (sorted[above] as f64 - sorted[below] as f64)
}

/// Which battles to keep: `keys[i]` is battle `i`'s prompt key (`None`: always kept). The same
/// keys, percentile and seed keep the same battles.
pub fn deduplicate(keys: &[Option<u64>], percentile: f64, seed: u64) -> (Vec<bool>, Deduplication) {
    let mut groups: HashMap<u64, Vec<u32>> = HashMap::new();
    for (index, key) in keys.iter().enumerate() {
        if let Some(key) = key {
            groups
                .entry(*key)
                .or_default()
                .push(u32::try_from(index).expect("fewer than 4 billion battles"));
        }
    }
    let mut counts: Vec<u64> = groups.values().map(|g| g.len() as u64).collect();
    counts.sort_unstable();
    let cutoff = linear_quantile(&counts, percentile);
    let keep_per_prompt = cutoff.floor() as usize;
    let mut keep = vec![true; keys.len()];
    let mut frequent: Vec<(&u64, &Vec<u32>)> = groups
        .iter()
        .filter(|(_, members)| members.len() as f64 > cutoff)
        .collect();
    // Sorted by key, each with its own random stream, so the draw does not depend on hash order.
    frequent.sort_unstable_by_key(|(key, _)| **key);
    let mut left_out = 0u64;
    for (stream, (_, members)) in frequent.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream as u64);
        for &member in members.iter() {
            keep[member as usize] = false;
        }
        for chosen in sample(&mut rng, members.len(), keep_per_prompt.min(members.len())) {
            keep[members[chosen] as usize] = true;
        }
        left_out += (members.len() - keep_per_prompt.min(members.len())) as u64;
    }
    let report = Deduplication {
        method: format!(
            "prompts = user turns joined with newlines, cut at {PROMPT_KEY_CHARACTERS} characters; \
             prompts asked more often than the {} percentile of prompt counts ({cutoff:.2}) keep \
             {keep_per_prompt} battles drawn at random (seed {seed}), as LMArena does",
            percentile * 100.0
        ),
        battles_with_prompt: keys.iter().filter(|k| k.is_some()).count() as u64,
        distinct_prompts: groups.len() as u64,
        cutoff,
        high_frequency_prompts: frequent.len() as u64,
        battles_left_out: left_out,
    };
    (keep, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_user_turns_only() {
        assert_eq!(prompt_key(&["hi"]), prompt_key(&["hi".to_string()]));
        assert_ne!(prompt_key(&["hi", "there"]), prompt_key(&["hi there"]));
        // Beyond 10,000 characters the text no longer matters.
        let long = "x".repeat(PROMPT_KEY_CHARACTERS);
        assert_eq!(
            prompt_key(&[format!("{long}a")]),
            prompt_key(&[format!("{long}b")])
        );
        assert_ne!(
            prompt_key(&[&long[1..]]),
            prompt_key(&[format!("{}a", &long[1..])])
        );
    }

    /// 10,000 prompts asked once and one asked 50 times: pandas' quantile(0.9999) of the 10,001
    /// counts is at position 10,000 × 0.9999 = 9,999, between the two largest counts (1 and 50):
    /// exactly 1, so the frequent prompt keeps 1 battle and 49 are left out.
    #[test]
    fn a_prompt_asked_fifty_times_keeps_the_percentile_count() {
        let mut keys: Vec<Option<u64>> = (0..10_000u64).map(Some).collect();
        keys.extend(std::iter::repeat_n(Some(99_999), 50));
        keys.push(None);
        let (keep, report) = deduplicate(&keys, DEFAULT_PERCENTILE, 0);
        assert_eq!(report.distinct_prompts, 10_001);
        assert_eq!(report.cutoff, 1.0);
        assert_eq!(report.high_frequency_prompts, 1);
        assert_eq!(report.battles_left_out, 49);
        assert_eq!(keep.iter().filter(|k| !**k).count(), 49);
        assert!(keep[..10_000].iter().all(|k| *k) && keep[10_050]);
        assert_eq!(keep[10_000..10_050].iter().filter(|k| **k).count(), 1);
        // The same seed keeps the same battle.
        assert_eq!(deduplicate(&keys, DEFAULT_PERCENTILE, 0).0, keep);
    }

    /// Counts 1, 2, 3, 4, 10 at the 75th percentile: position 4 × 0.75 = 3 → 4, so the prompt
    /// asked 10 times keeps 4 and the others are untouched.
    #[test]
    fn interpolated_cutoff() {
        let mut keys = Vec::new();
        for (key, count) in [(1u64, 1), (2, 2), (3, 3), (4, 4), (5, 10)] {
            keys.extend(std::iter::repeat_n(Some(key), count));
        }
        let (keep, report) = deduplicate(&keys, 0.75, 3);
        assert_eq!(report.cutoff, 4.0);
        assert_eq!(report.battles_left_out, 6);
        assert_eq!(keep.iter().filter(|k| **k).count(), 20 - 6);
        // At the 80th percentile, position 3.2: 4 + 0.2 × 6 = 5.2, so 5 are kept.
        let (_, report) = deduplicate(&keys, 0.8, 3);
        assert!((report.cutoff - 5.2).abs() < 1e-12);
        assert_eq!(report.battles_left_out, 5);
    }
}
