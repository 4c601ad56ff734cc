//! Battles reduced to outcome counts per pair of models: every rating fit works on these, so a fit
//! costs O(pairs) rather than O(battles).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::model::{Battle, Outcome};

/// Outcome counts of one unordered pair of models, by index into [`AggregatedBattles::models`];
/// `first < second`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCounts {
    pub first: usize,
    pub second: usize,
    pub first_wins: u64,
    pub second_wins: u64,
    pub ties: u64,
    pub both_bad: u64,
}

impl PairCounts {
    pub fn total(&self) -> u64 {
        self.first_wins + self.second_wins + self.ties + self.both_bad
    }

    /// Ties of both kinds: for ratings a "both bad" vote is a tie.
    pub fn all_ties(&self) -> u64 {
        self.ties + self.both_bad
    }
}

/// Battles aggregated per unordered pair. Models are sorted by name so the result does not depend on
/// the order of the battles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregatedBattles {
    pub models: Vec<String>,
    /// Pairs with at least one battle, sorted by `(first, second)`.
    pub pairs: Vec<PairCounts>,
    /// Battles of a model against itself, which carry no information about ratings and are skipped.
    pub self_battles_skipped: u64,
}

/// Above this many models the pair table is kept sparse instead of as a dense square.
const DENSE_PAIR_TABLE_LIMIT: usize = 512;

impl AggregatedBattles {
    pub fn from_battles(battles: &[Battle]) -> AggregatedBattles {
        Self::from_battles_with_elo(battles, None).0
    }

    /// Aggregates and, when `elo` gives `(k, initial)`, replays online Elo in the same pass (so the
    /// model names are hashed once); the Elo ratings are returned in the order of `models`.
    pub(crate) fn from_battles_with_elo<'a>(
        battles: &'a [Battle],
        elo: Option<(f64, f64)>,
    ) -> (AggregatedBattles, Vec<f64>) {
        // Index models in order of appearance first (one hash lookup per name), then renumber by name.
        let mut index_of: HashMap<&'a str, usize, BuildHasherDefault<Fnv1a>> = HashMap::default();
        let mut names: Vec<&'a str> = Vec::new();
        let mut indexed: Vec<(usize, usize, Outcome)> = Vec::with_capacity(battles.len());
        let mut self_battles_skipped = 0;
        let mut elo_ratings: Vec<f64> = Vec::new();
        for battle in battles {
            if battle.model_a == battle.model_b {
                self_battles_skipped += 1;
                continue;
            }
            let mut lookup = |name: &'a str| -> usize {
                *index_of.entry(name).or_insert_with(|| {
                    names.push(name);
                    names.len() - 1
                })
            };
            let a = lookup(&battle.model_a);
            let b = lookup(&battle.model_b);
            indexed.push((a, b, battle.outcome));
            if let Some((k, initial)) = elo {
                if elo_ratings.len() < names.len() {
                    elo_ratings.resize(names.len(), initial);
                }
                let change =
                    crate::elo::elo_update(elo_ratings[a], elo_ratings[b], battle.outcome, k);
                elo_ratings[a] += change;
                elo_ratings[b] -= change;
            }
        }
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&x, &y| names[x].cmp(names[y]));
        let mut rank_of = vec![0; names.len()];
        for (rank, &original) in order.iter().enumerate() {
            rank_of[original] = rank;
        }
        let models: Vec<String> = order.iter().map(|&i| names[i].to_string()).collect();
        let n = models.len();

        let mut counts = PairTable::new(n);
        for (a, b, outcome) in indexed {
            counts.record(rank_of[a], rank_of[b], outcome);
        }
        let elo_in_model_order = if elo_ratings.is_empty() {
            Vec::new()
        } else {
            order.iter().map(|&i| elo_ratings[i]).collect()
        };
        (
            AggregatedBattles {
                models,
                pairs: counts.into_pairs(),
                self_battles_skipped,
            },
            elo_in_model_order,
        )
    }

    /// Number of battles between different models.
    pub fn n_battles(&self) -> u64 {
        self.pairs.iter().map(PairCounts::total).sum()
    }

    /// Battles each model took part in.
    pub fn votes_per_model(&self) -> Vec<u64> {
        let mut votes = vec![0; self.models.len()];
        for pair in &self.pairs {
            votes[pair.first] += pair.total();
            votes[pair.second] += pair.total();
        }
        votes
    }

    /// Per model: (wins, losses, ties including both-bad).
    pub fn record_per_model(&self) -> Vec<(u64, u64, u64)> {
        let mut record = vec![(0, 0, 0); self.models.len()];
        for pair in &self.pairs {
            record[pair.first].0 += pair.first_wins;
            record[pair.first].1 += pair.second_wins;
            record[pair.first].2 += pair.all_ties();
            record[pair.second].0 += pair.second_wins;
            record[pair.second].1 += pair.first_wins;
            record[pair.second].2 += pair.all_ties();
        }
        record
    }

    pub fn index_of(&self, model: &str) -> Option<usize> {
        self.models
            .binary_search_by(|candidate| candidate.as_str().cmp(model))
            .ok()
    }

    /// The counts as the floating-point cells the fits consume.
    pub(crate) fn pair_data(&self) -> Vec<PairData> {
        self.pairs
            .iter()
            .map(|pair| PairData {
                first: pair.first,
                second: pair.second,
                first_wins: pair.first_wins as f64,
                second_wins: pair.second_wins as f64,
                ties: pair.all_ties() as f64,
            })
            .collect()
    }
}

/// FNV-1a: model names are short and come from our own data, so a simple hash is safe here and
/// several times faster than the DoS-resistant default on a million lookups.
#[derive(Default)]
pub(crate) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Counts of one pair in the form the fits use; ties include both-bad votes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PairData {
    pub(crate) first: usize,
    pub(crate) second: usize,
    pub(crate) first_wins: f64,
    pub(crate) second_wins: f64,
    pub(crate) ties: f64,
}

impl PairData {
    pub(crate) fn total(&self) -> f64 {
        self.first_wins + self.second_wins + self.ties
    }
}

enum PairTable {
    Dense { n: usize, cells: Vec<[u64; 4]> },
    Sparse(BTreeMap<(usize, usize), [u64; 4]>),
}

impl PairTable {
    fn new(n: usize) -> PairTable {
        if n <= DENSE_PAIR_TABLE_LIMIT {
            PairTable::Dense {
                n,
                cells: vec![[0; 4]; n * n],
            }
        } else {
            PairTable::Sparse(BTreeMap::new())
        }
    }

    fn record(&mut self, a: usize, b: usize, outcome: Outcome) {
        let (first, second, outcome) = if a < b {
            (a, b, outcome)
        } else {
            (b, a, outcome.swapped())
        };
        let slot = match outcome {
            Outcome::AWins => 0,
            Outcome::BWins => 1,
            Outcome::Tie => 2,
            Outcome::BothBad => 3,
        };
        match self {
            PairTable::Dense { n, cells } => cells[first * *n + second][slot] += 1,
            PairTable::Sparse(map) => map.entry((first, second)).or_default()[slot] += 1,
        }
    }

    fn into_pairs(self) -> Vec<PairCounts> {
        let make = |first, second, cell: [u64; 4]| PairCounts {
            first,
            second,
            first_wins: cell[0],
            second_wins: cell[1],
            ties: cell[2],
            both_bad: cell[3],
        };
        match self {
            PairTable::Dense { n, cells } => {
                let mut pairs = Vec::new();
                for first in 0..n {
                    for second in (first + 1)..n {
                        let cell = cells[first * n + second];
                        if cell.iter().any(|&count| count > 0) {
                            pairs.push(make(first, second, cell));
                        }
                    }
                }
                pairs
            }
            PairTable::Sparse(map) => map
                .into_iter()
                .map(|((first, second), cell)| make(first, second, cell))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_is_independent_of_battle_order_and_orientation() {
        let battles = vec![
            Battle::new("zeta", "alpha", Outcome::AWins),
            Battle::new("alpha", "zeta", Outcome::Tie),
            Battle::new("alpha", "mid", Outcome::BothBad),
            Battle::new("mid", "mid", Outcome::AWins),
        ];
        let mut reversed = battles.clone();
        reversed.reverse();
        let aggregated = AggregatedBattles::from_battles(&battles);
        assert_eq!(aggregated, AggregatedBattles::from_battles(&reversed));
        assert_eq!(aggregated.models, vec!["alpha", "mid", "zeta"]);
        assert_eq!(aggregated.self_battles_skipped, 1);
        assert_eq!(aggregated.n_battles(), 3);
        let alpha_zeta = aggregated.pairs.iter().find(|p| p.second == 2).unwrap();
        assert_eq!(
            (
                alpha_zeta.first_wins,
                alpha_zeta.second_wins,
                alpha_zeta.ties
            ),
            (0, 1, 1)
        );
        assert_eq!(aggregated.votes_per_model(), vec![3, 1, 2]);
    }
}
