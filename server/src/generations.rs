//! A bounded cache of two generations: new entries go into `current`; when it holds its budget of
//! bytes it becomes `previous` (the old `previous` is dropped), and a hit in `previous` moves back
//! into `current`. Memory stays under two budgets whatever is put in, and what is used keeps its
//! place; no per-entry bookkeeping as an LRU would need. The markdown renderings (`markdown.rs`)
//! and the rater's comparisons by id (`service/comparison_html.rs`) keep theirs in one.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct Generations<K, V> {
    current: HashMap<K, (V, usize)>,
    previous: HashMap<K, (V, usize)>,
    current_bytes: usize,
    budget: usize,
}

impl<K: Hash + Eq, V: Clone> Generations<K, V> {
    /// A cache whose each generation holds up to `budget` bytes (as its callers count them).
    pub fn new(budget: usize) -> Self {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
            current_bytes: 0,
            budget,
        }
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((value, _)) = self.current.get(key) {
            return Some(value.clone());
        }
        let (key, (value, bytes)) = self.previous.remove_entry(key)?;
        self.insert(key, value.clone(), bytes);
        Some(value)
    }

    /// Keeps `value` under `key`, counted as `bytes` of the generation's budget.
    pub fn insert(&mut self, key: K, value: V, bytes: usize) {
        self.current_bytes += bytes;
        self.current.insert(key, (value, bytes));
        if self.current_bytes >= self.budget {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
    }

    /// The bytes both generations hold, as counted at insertion.
    pub fn held_bytes(&self) -> usize {
        self.current
            .values()
            .chain(self.previous.values())
            .map(|(_, bytes)| bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Generations;

    #[test]
    fn stays_within_two_budgets_and_keeps_what_is_used() {
        let budget = 64 << 10;
        let mut cache: Generations<String, usize> = Generations::new(budget);
        let entry = 1 << 10;
        let many = 3 * budget / entry;
        for i in 0..many {
            cache.insert(format!("k{i}"), i, entry);
            // One old key read at every step stays in (a hit in `previous` moves it back).
            assert_eq!(cache.get("k0"), Some(0), "at {i}");
        }
        assert!(
            cache.held_bytes() <= 2 * budget + entry,
            "{}",
            cache.held_bytes()
        );
        // A recent key is found; one written three generations ago and never read again is gone.
        assert_eq!(cache.get(&format!("k{}", many - 1)), Some(many - 1));
        assert_eq!(cache.get("k1"), None);
    }
}
