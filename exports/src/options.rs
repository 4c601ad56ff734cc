//! What goes into an export, as pure logic over records: filters, splits by prompt, and one row per
//! item by majority with a minimum agreement. The server applies these to the records it streams;
//! the wrappers here ([`FilteredWriter`], [`SplitWriter`], [`MajorityWriter`]) compose with any
//! [`RecordWriter`].

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io;

use sha2::{Digest, Sha256};

use crate::{Choice, ExportSummary, RecordWriter, VoteRecord};

/// Which records an export keeps. The default keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordFilter {
    /// Keep only comparisons whose two models are both in this set; empty keeps every model.
    pub models: BTreeSet<String>,
    /// Keep votes recorded at or after this instant (milliseconds since the epoch).
    pub from_ms: Option<i64>,
    /// Keep votes recorded strictly before this instant.
    pub until_ms: Option<i64>,
    pub exclude_ties: bool,
    pub exclude_both_bad: bool,
    /// Raters marked excluded (e.g. failed attention checks), by pseudonym.
    pub excluded_raters: BTreeSet<String>,
    /// Leave out votes on attention checks and gold items ([`VoteRecord::is_quality_check`]).
    pub exclude_checks: bool,
    /// Votes left out by id (Moat: those on comparisons where a response names a model or its
    /// maker).
    #[serde(default)]
    pub excluded_votes: BTreeSet<i64>,
}

/// Why a record was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Model,
    Date,
    Tie,
    BothBad,
    ExcludedRater,
    QualityCheck,
    ExcludedVote,
}

impl RecordFilter {
    pub fn check(&self, record: &VoteRecord) -> Result<(), Rejection> {
        let models_allowed = self.models.is_empty()
            || (self.models.contains(&record.left_model)
                && self.models.contains(&record.right_model));
        if !models_allowed {
            return Err(Rejection::Model);
        }
        if self.from_ms.is_some_and(|from| record.created_ms < from)
            || self
                .until_ms
                .is_some_and(|until| record.created_ms >= until)
        {
            return Err(Rejection::Date);
        }
        match record.choice {
            Choice::Tie if self.exclude_ties => return Err(Rejection::Tie),
            Choice::BothBad if self.exclude_both_bad => return Err(Rejection::BothBad),
            _ => {}
        }
        if self.excluded_raters.contains(&record.rater) {
            return Err(Rejection::ExcludedRater);
        }
        if self.exclude_checks && record.is_quality_check() {
            return Err(Rejection::QualityCheck);
        }
        if self.excluded_votes.contains(&record.vote_id) {
            return Err(Rejection::ExcludedVote);
        }
        Ok(())
    }

    pub fn accepts(&self, record: &VoteRecord) -> bool {
        self.check(record).is_ok()
    }
}

/// Applies a [`RecordFilter`] in front of another writer. Excluded ties and both-bad votes are
/// counted in the summary like the ones a format leaves out.
pub struct FilteredWriter<W: ?Sized> {
    filter: RecordFilter,
    inner: Box<W>,
    excluded_ties: u64,
    excluded_both_bad: u64,
    excluded_checks: u64,
}

impl<W: RecordWriter + ?Sized> FilteredWriter<W> {
    pub fn new(filter: RecordFilter, inner: Box<W>) -> Self {
        FilteredWriter {
            filter,
            inner,
            excluded_ties: 0,
            excluded_both_bad: 0,
            excluded_checks: 0,
        }
    }
}

impl<W: RecordWriter + ?Sized> RecordWriter for FilteredWriter<W> {
    fn write_record(&mut self, record: &VoteRecord) -> io::Result<()> {
        match self.filter.check(record) {
            Ok(()) => self.inner.write_record(record),
            Err(Rejection::Tie) => {
                self.excluded_ties += 1;
                Ok(())
            }
            Err(Rejection::BothBad) => {
                self.excluded_both_bad += 1;
                Ok(())
            }
            Err(Rejection::QualityCheck) => {
                self.excluded_checks += 1;
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    fn finish(self: Box<Self>) -> io::Result<ExportSummary> {
        let mut summary = self.inner.finish()?;
        summary.skipped_ties += self.excluded_ties;
        summary.skipped_both_bad += self.excluded_both_bad;
        summary.skipped_checks += self.excluded_checks;
        Ok(summary)
    }
}

// ---------------------------------------------------------------------------------------------------
// Splits

/// Named fractions of the prompts (`test=0.1,validation=0.05`); the rest go to `train`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Splits {
    pub named: Vec<(String, f64)>,
    /// The split of the prompts no named fraction takes.
    pub rest: String,
}

impl Default for Splits {
    /// Everything in `train`.
    fn default() -> Self {
        Splits {
            named: Vec::new(),
            rest: "train".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid split `{text}`: {problem}")]
pub struct SplitParseError {
    pub text: String,
    pub problem: String,
}

impl Splits {
    /// Parses `NAME=FRACTION[,NAME=FRACTION…]`. Names are lowercase letters, digits, `-` and `_`,
    /// distinct and not `train`; fractions are in (0, 1) and sum to less than 1.
    pub fn parse(text: &str) -> Result<Self, SplitParseError> {
        let error = |problem: &str| SplitParseError {
            text: text.to_string(),
            problem: problem.to_string(),
        };
        let mut named: Vec<(String, f64)> = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, fraction) = part
                .split_once('=')
                .ok_or_else(|| error("expected NAME=FRACTION"))?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(error(
                    "a split name is lowercase letters, digits, '-' and '_'",
                ));
            }
            if name == "train" || named.iter().any(|(existing, _)| existing == name) {
                return Err(error(
                    "split names must be distinct and not `train` (train takes the rest)",
                ));
            }
            let fraction: f64 = fraction
                .trim()
                .parse()
                .map_err(|_| error("a fraction is a number such as 0.1"))?;
            if !(fraction > 0.0 && fraction < 1.0) {
                return Err(error("a fraction is between 0 and 1"));
            }
            named.push((name.to_string(), fraction));
        }
        if named.iter().map(|(_, fraction)| fraction).sum::<f64>() >= 1.0 {
            return Err(error(
                "the fractions must sum to less than 1, leaving some prompts for train",
            ));
        }
        Ok(Splits {
            named,
            rest: "train".to_string(),
        })
    }

    /// Every split name, the named ones first, then the rest.
    pub fn names(&self) -> Vec<&str> {
        self.named
            .iter()
            .map(|(name, _)| name.as_str())
            .chain([self.rest.as_str()])
            .collect()
    }
}

impl fmt::Display for Splits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .named
            .iter()
            .map(|(name, fraction)| format!("{name}={fraction}"))
            .collect();
        write!(f, "{} (rest: {})", parts.join(","), self.rest)
    }
}

/// A number in [0, 1) fixed by the prompt id and the seed alone: the first 8 bytes of
/// SHA-256(seed as 8 little-endian bytes ‖ prompt id), as a big-endian integer over 2^64.
pub fn prompt_unit(prompt_id: &str, seed: u64) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(prompt_id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits keep the value exactly representable and strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The split of every vote on `prompt_id`: all votes on a prompt land in the same split, whatever
/// order or subset of records is exported.
pub fn split_for<'a>(prompt_id: &str, seed: u64, splits: &'a Splits) -> &'a str {
    let unit = prompt_unit(prompt_id, seed);
    let mut upper = 0.0;
    for (name, fraction) in &splits.named {
        upper += fraction;
        if unit < upper {
            return name;
        }
    }
    &splits.rest
}

/// Sends each record to the writer of its prompt's split. Writers are opened by `open` on the first
/// record of their split, so a split with no records produces no file.
pub struct SplitWriter<F> {
    splits: Splits,
    seed: u64,
    open: F,
    writers: Vec<(String, Box<dyn RecordWriter + Send>)>,
}

impl<F> SplitWriter<F>
where
    F: FnMut(&str) -> io::Result<Box<dyn RecordWriter + Send>>,
{
    pub fn new(splits: Splits, seed: u64, open: F) -> Self {
        SplitWriter {
            splits,
            seed,
            open,
            writers: Vec::new(),
        }
    }

    pub fn write_record(&mut self, record: &VoteRecord) -> io::Result<()> {
        let split = split_for(&record.prompt_id, self.seed, &self.splits);
        let index = match self.writers.iter().position(|(name, _)| name == split) {
            Some(index) => index,
            None => {
                let writer = (self.open)(split)?;
                self.writers.push((split.to_string(), writer));
                self.writers.len() - 1
            }
        };
        self.writers[index].1.write_record(record)
    }

    /// Finishes every split's writer; summaries come in the order of [`Splits::names`].
    pub fn finish(self) -> io::Result<Vec<(String, ExportSummary)>> {
        let order = self
            .splits
            .names()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        let mut finished = self
            .writers
            .into_iter()
            .map(|(name, writer)| writer.finish().map(|summary| (name, summary)))
            .collect::<io::Result<Vec<_>>>()?;
        finished.sort_by_key(|(name, _)| order.iter().position(|candidate| candidate == name));
        Ok(finished)
    }
}

// ---------------------------------------------------------------------------------------------------
// One row per item by majority

/// What identifies an item: the prompt and the unordered pair of models compared on it.
pub fn item_key(record: &VoteRecord) -> (String, String, String) {
    let (first, second) = if record.left_model <= record.right_model {
        (&record.left_model, &record.right_model)
    } else {
        (&record.right_model, &record.left_model)
    };
    (record.prompt_id.clone(), first.clone(), second.clone())
}

/// The majority verdict on one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMajority {
    /// The item's first vote (lowest vote id) with `choice` replaced by the majority, in that vote's
    /// orientation; `created_ms` is the last vote's, `rater` is `majority-of-N`, and the per-vote
    /// fields (source guess, confidence, rationale, time on page) are cleared.
    pub record: VoteRecord,
    pub votes: usize,
    /// The share of votes that agree with the majority verdict (1.0 for a single vote).
    pub agreement: f64,
}

/// Aggregates the votes on one item. Votes are compared in one orientation (a vote with the sides
/// swapped and the opposite choice agrees). The verdict is the outcome with strictly the most votes
/// among "first model", "second model", tie and both-bad; when two outcomes share the most votes,
/// the verdict is a tie. Returns `None` for no records.
pub fn aggregate_item(records: &[VoteRecord]) -> Option<ItemMajority> {
    let first = records.iter().min_by_key(|record| record.vote_id)?;
    // Outcome counts in the orientation of `first`: [left wins, right wins, tie, both bad].
    let mut counts = [0usize; 4];
    for record in records {
        let same_orientation =
            record.left_model == first.left_model && record.right_model == first.right_model;
        let outcome = match (record.choice, same_orientation) {
            (Choice::Left, true) | (Choice::Right, false) => 0,
            (Choice::Right, true) | (Choice::Left, false) => 1,
            (Choice::Tie, _) => 2,
            (Choice::BothBad, _) => 3,
        };
        counts[outcome] += 1;
    }
    let most = *counts.iter().max().expect("four outcomes");
    let leaders: Vec<usize> = (0..4).filter(|&outcome| counts[outcome] == most).collect();
    let choice = match leaders.as_slice() {
        [0] => Choice::Left,
        [1] => Choice::Right,
        [3] => Choice::BothBad,
        _ => Choice::Tie,
    };
    let agreeing = match choice {
        Choice::Left => counts[0],
        Choice::Right => counts[1],
        Choice::Tie => counts[2].max(most),
        Choice::BothBad => counts[3],
    };
    // A tie by split vote: the agreement is that of the largest faction (no faction won).
    let votes = records.len();
    let mut record = first.clone();
    record.choice = choice;
    record.created_ms = records
        .iter()
        .map(|record| record.created_ms)
        .max()
        .unwrap_or(first.created_ms);
    record.rater = format!("majority-of-{votes}");
    record.source_guess = None;
    record.source_confidence = None;
    record.rationale = None;
    record.time_on_page_ms = None;
    record.completion_code = None;
    Some(ItemMajority {
        record,
        votes,
        agreement: agreeing as f64 / votes as f64,
    })
}

/// Whether an item passes a minimum agreement: items rated once always pass (agreement is only
/// defined on multiply-rated items).
pub fn meets_agreement(item: &ItemMajority, min_agreement: Option<f64>) -> bool {
    match min_agreement {
        Some(minimum) if item.votes >= 2 => item.agreement + 1e-12 >= minimum,
        _ => true,
    }
}

/// Aggregates records in memory: one majority per item, in the order of each item's first vote id.
pub fn aggregate_majority(records: &[VoteRecord]) -> Vec<ItemMajority> {
    let mut groups: Vec<((String, String, String), Vec<VoteRecord>)> = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    for record in records {
        let key = item_key(record);
        let index = *index_of.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[index].1.push(record.clone());
    }
    let mut items: Vec<ItemMajority> = groups
        .iter()
        .filter_map(|(_, group)| aggregate_item(group))
        .collect();
    items.sort_by_key(|item| item.record.vote_id);
    items
}

/// One row per item by majority, streaming: records must arrive grouped by item (e.g. ordered by
/// prompt, then model pair, then vote id); a group is aggregated and written when the next begins.
/// An item that reappears after its group closed is an error rather than a silently split item.
pub struct MajorityWriter<W: ?Sized> {
    inner: Box<W>,
    min_agreement: Option<f64>,
    current: Vec<VoteRecord>,
    current_key: Option<(String, String, String)>,
    closed: HashSet<(String, String, String)>,
    below_agreement: u64,
}

impl<W: RecordWriter + ?Sized> MajorityWriter<W> {
    pub fn new(inner: Box<W>, min_agreement: Option<f64>) -> Self {
        MajorityWriter {
            inner,
            min_agreement,
            current: Vec::new(),
            current_key: None,
            closed: HashSet::new(),
            below_agreement: 0,
        }
    }

    fn close_group(&mut self) -> io::Result<()> {
        if let Some(key) = self.current_key.take() {
            if let Some(item) = aggregate_item(&self.current) {
                if meets_agreement(&item, self.min_agreement) {
                    self.inner.write_record(&item.record)?;
                } else {
                    self.below_agreement += 1;
                }
            }
            self.current.clear();
            self.closed.insert(key);
        }
        Ok(())
    }

    /// Items left out for agreement below the minimum (so far).
    pub fn below_agreement(&self) -> u64 {
        self.below_agreement
    }
}

impl<W: RecordWriter + ?Sized> RecordWriter for MajorityWriter<W> {
    fn write_record(&mut self, record: &VoteRecord) -> io::Result<()> {
        let key = item_key(record);
        if self.current_key.as_ref() != Some(&key) {
            self.close_group()?;
            if self.closed.contains(&key) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "records are not grouped by item: prompt `{}` ({} vs {}) appears again",
                        key.0, key.1, key.2
                    ),
                ));
            }
            self.current_key = Some(key);
        }
        self.current.push(record.clone());
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<ExportSummary> {
        self.close_group()?;
        self.inner.finish()
    }
}
