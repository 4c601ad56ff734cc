//! The dataset record types of Moat and the preference-data formats written and read from them.
//!
//! Everything here is pure: writers take typed records and a `std::io::Write`, readers take a
//! `std::io::BufRead`. The server streams records out of its database into these writers one at a time,
//! so no format may need the whole dataset in memory.
//!
//! - [`record`]: [`VoteRecord`], one decided comparison with everything an export needs.
//! - [`format`]: the export formats ([`Format`]) and [`writer_for`], built on [`table`], which writes
//!   any format's rows as JSON Lines, CSV or Parquet with one stable schema.
//! - [`options`]: filters, splits by prompt ([`options::split_for`]), majority per item.
//! - [`card`]: the dataset card (`README.md` with the Hugging Face header and a datasheet).
//! - [`pairs`]: [`pairs::read_pairs`], preference pairs for training from TRL or HH-RLHF files.
//! - [`import`]: streaming importers of HH-RLHF, TRL, OpenAssistant trees, Arena battles and Moat votes.
//! - [`read`]: what the readers share: gzip detection, JSON Lines, errors naming line and field.
//! - [`trl`]: the original TRL JSON Lines writer (same bytes as `writer_for(Format::Trl, …)`).
//! - [`sample`]: fixed records made from real HH-RLHF pairs, for tests, examples and benchmarks.
//!
//! **Output is deterministic**: the same records and options give byte-identical files (stable column
//! and key order, no clock, Parquet metadata without timestamps).

pub mod arena_parquet;
pub mod card;
pub mod format;
pub mod hh;
pub mod import;
pub mod options;
pub mod pairs;
mod parquet_rows;
pub mod read;
pub mod record;
pub mod sample;
pub mod table;
pub mod trl;

pub use format::{writer_for, ExportOptions, Format};
pub use read::{ReadError, ReadReport, Skipped};
pub use record::{Choice, Message, Openness, VoteRecord};
pub use table::Container;

/// What a writer did with the records it was given: how many rows it wrote and what it left out, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub rows_written: u64,
    pub skipped_ties: u64,
    pub skipped_both_bad: u64,
    /// Votes on attention checks and gold items (they score raters, not models).
    pub skipped_checks: u64,
    /// Multi-turn battles left out by a format that holds one answer per side after a shared input
    /// (OpenAI's preference format).
    pub skipped_multi_turn: u64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} rows; left out {} ties and {} both-bad votes",
            self.rows_written, self.skipped_ties, self.skipped_both_bad
        )?;
        if self.skipped_checks > 0 {
            write!(f, " and {} quality-check votes", self.skipped_checks)?;
        }
        if self.skipped_multi_turn > 0 {
            write!(
                f,
                " and {} multi-turn battles (the format holds one answer per side)",
                self.skipped_multi_turn
            )?;
        }
        Ok(())
    }
}

/// A streaming writer of one export format.
pub trait RecordWriter {
    fn write_record(&mut self, record: &VoteRecord) -> std::io::Result<()>;
    fn finish(self: Box<Self>) -> std::io::Result<ExportSummary>;
}
