//! The dataset record types of Moat and the preference-data formats written and read from them.
//!
//! Everything here is pure: writers take typed records and a `std::io::Write`, readers take a
//! `std::io::BufRead`. The server streams records out of its database into these writers one at a time,
//! so no format may need the whole dataset in memory.

pub mod card;
pub mod format;
pub mod hh;
pub mod import;
pub mod options;
pub mod pairs;
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
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} rows; left out {} ties and {} both-bad votes",
            self.rows_written, self.skipped_ties, self.skipped_both_bad
        )
    }
}

/// A streaming writer of one export format.
pub trait RecordWriter {
    fn write_record(&mut self, record: &VoteRecord) -> std::io::Result<()>;
    fn finish(self: Box<Self>) -> std::io::Result<ExportSummary>;
}
