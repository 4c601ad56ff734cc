//! Preference pairs in: reading files through the exports crate, row ranges, and the seeded split by
//! prompt.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use moat_exports::pairs::PairReader;
pub use moat_exports::pairs::PreferencePair;
use moat_exports::Message;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// An inclusive, 1-based range of data rows (lines of a JSON Lines file), as in `--rows 1-2000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowRange {
    pub first: u64,
    pub last: u64,
}

impl FromStr for RowRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (first, last) = text
            .split_once('-')
            .ok_or_else(|| format!("expected FIRST-LAST, got {text:?}"))?;
        let first: u64 = first
            .trim()
            .parse()
            .map_err(|_| format!("bad first row in {text:?}"))?;
        let last: u64 = if last.trim().is_empty() {
            u64::MAX
        } else {
            last.trim()
                .parse()
                .map_err(|_| format!("bad last row in {text:?}"))?
        };
        if first == 0 || last < first {
            return Err(format!(
                "rows are numbered from 1 and FIRST <= LAST, got {text:?}"
            ));
        }
        Ok(RowRange { first, last })
    }
}

impl fmt::Display for RowRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.last == u64::MAX {
            write!(f, "{}-", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// What reading a file gave: pairs kept, rows read and the rows that gave no pair, by reason.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadSummary {
    pub rows_read: u64,
    pub pairs: u64,
    pub skipped: Vec<(String, u64)>,
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pairs from {} rows", self.pairs, self.rows_read)?;
        for (reason, count) in &self.skipped {
            write!(f, "; skipped {count}: {reason}")?;
        }
        Ok(())
    }
}

/// Reads the pairs of a TRL / HH-RLHF JSON Lines file (gzip or not) or a Parquet file, through the
/// exports crate, keeping those whose row numbers fall in `rows`.
pub fn load_pairs(
    path: &Path,
    rows: Option<RowRange>,
) -> anyhow::Result<(Vec<PreferencePair>, LoadSummary)> {
    let mut reader =
        PairReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut pairs = Vec::new();
    // Not a `for` loop: the body reads the reader's running report.
    while let Some(pair) = reader.next() {
        let pair = pair.with_context(|| format!("reading {}", path.display()))?;
        // The reader counts rows as it goes, so after yielding a pair this is that pair's row number.
        let row = reader.report().rows_read;
        match rows {
            Some(range) if row < range.first => continue,
            Some(range) if row > range.last => break,
            _ => pairs.push(pair),
        }
    }
    let report = reader.into_report();
    let skipped = report
        .skipped
        .iter()
        .filter(|skip| rows.is_none_or(|range| (range.first..=range.last).contains(&skip.line)))
        .fold(HashMap::<String, u64>::new(), |mut counts, skip| {
            *counts.entry(skip.reason.clone()).or_default() += 1;
            counts
        });
    let mut skipped: Vec<_> = skipped.into_iter().collect();
    skipped.sort();
    let rows_read = match rows {
        Some(range) => report
            .rows_read
            .min(range.last)
            .saturating_sub(range.first - 1),
        None => report.rows_read,
    };
    let summary = LoadSummary {
        rows_read,
        pairs: pairs.len() as u64,
        skipped,
    };
    Ok((pairs, summary))
}

/// The prompt as one text, in the HH-RLHF transcript form both backbones read.
pub fn prompt_text(prompt: &[Message]) -> String {
    moat_exports::hh::render_transcript(prompt)
        .trim_start()
        .to_string()
}

/// Splits pairs into train and eval by prompt, seeded: all pairs of one prompt land on the same side,
/// and about `eval_fraction` of the pairs end up in eval.
pub fn split_by_prompt(
    pairs: Vec<PreferencePair>,
    eval_fraction: f64,
    seed: u64,
) -> (Vec<PreferencePair>, Vec<PreferencePair>) {
    let mut groups: HashMap<String, Vec<PreferencePair>> = HashMap::new();
    let mut order = Vec::new();
    for pair in pairs {
        let key = prompt_text(&pair.prompt);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(pair);
    }
    // First-seen order, then a seeded shuffle: independent of HashMap iteration order.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_SALT);
    order.shuffle(&mut rng);
    let total: usize = groups.values().map(Vec::len).sum();
    let eval_target = (total as f64 * eval_fraction).round() as usize;
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for key in order {
        let group = groups.remove(&key).expect("every key has a group");
        if eval.len() < eval_target {
            eval.extend(group);
        } else {
            train.extend(group);
        }
    }
    (train, eval)
}

/// Mixed into the seed so the split and the training order differ for the same `--seed`.
const SPLIT_SALT: u64 = 0x5eed_5917;

/// How many eval pairs share their prompt with some training pair (reported for an explicit `--eval`).
pub fn shared_prompts(train: &[PreferencePair], eval: &[PreferencePair]) -> usize {
    let train_prompts: std::collections::HashSet<String> =
        train.iter().map(|pair| prompt_text(&pair.prompt)).collect();
    eval.iter()
        .filter(|pair| train_prompts.contains(&prompt_text(&pair.prompt)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(prompt: &str, index: usize) -> PreferencePair {
        PreferencePair {
            prompt: vec![Message::new("user", prompt)],
            chosen: format!("good {index}"),
            rejected: format!("bad {index}"),
            category: None,
            margin: None,
        }
    }

    #[test]
    fn split_never_puts_one_prompt_on_both_sides() {
        let pairs: Vec<_> = (0..200)
            .map(|index| pair(&format!("prompt {}", index % 37), index))
            .collect();
        let (train, eval) = split_by_prompt(pairs, 0.2, 7);
        assert_eq!(train.len() + eval.len(), 200);
        assert_eq!(shared_prompts(&train, &eval), 0);
        assert!((30..=55).contains(&eval.len()), "{}", eval.len());
        let (train_again, _) = split_by_prompt(
            (0..200)
                .map(|index| pair(&format!("prompt {}", index % 37), index))
                .collect(),
            0.2,
            7,
        );
        assert_eq!(train, train_again, "the split is a function of the seed");
    }

    #[test]
    fn row_ranges_parse() {
        assert_eq!(
            "1-2000".parse::<RowRange>(),
            Ok(RowRange {
                first: 1,
                last: 2000
            })
        );
        assert_eq!("2001-".parse::<RowRange>().unwrap().last, u64::MAX);
        assert!("0-5".parse::<RowRange>().is_err());
        assert!("9-5".parse::<RowRange>().is_err());
    }

    #[test]
    fn loads_row_ranges_of_the_real_hh_file() {
        let path = crate::test_data::hh_rlhf();
        let (pairs, summary) = load_pairs(&path, Some("3-12".parse().unwrap())).unwrap();
        assert_eq!(summary.rows_read, 10);
        assert_eq!(
            pairs.len() as u64 + summary.skipped.iter().map(|(_, n)| n).sum::<u64>(),
            10
        );
        let (all, _) = load_pairs(&path, Some("1-12".parse().unwrap())).unwrap();
        assert_eq!(&all[all.len() - pairs.len()..], &pairs[..]);
    }
}
