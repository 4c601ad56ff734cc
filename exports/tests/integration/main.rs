//! One integration-test binary for the crate (faster to link than one per file).

mod card;
mod imports_real_data;
mod options;
mod pairs_real_data;
mod round_trip;
mod writers;

use moat_exports::pairs::{read_pairs, PreferencePair};
use moat_exports::sample::sample_records;
use moat_exports::{writer_for, ExportOptions, ExportSummary, Format, VoteRecord};

/// A file of the repository's real test data (see `testdata/README.md`).
pub fn test_data(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata")).join(relative)
}

/// The first `count` real HH-RLHF pairs.
pub fn hh_pairs(count: usize) -> Vec<PreferencePair> {
    let mut pairs = read_pairs(&test_data("hh-rlhf/harmless-base-test.jsonl.gz")).unwrap();
    pairs.truncate(count);
    pairs
}

/// Sample votes built from the first `count` real HH-RLHF pairs.
pub fn hh_records(count: usize) -> Vec<VoteRecord> {
    sample_records(&hh_pairs(count))
}

/// A `Write` that hands its bytes back when the writer is done with it.
#[derive(Clone, Default)]
pub struct SharedBuffer(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// Writes `records` in `format` and returns the bytes and the summary.
pub fn export(
    format: Format,
    options: &ExportOptions,
    records: &[VoteRecord],
) -> (Vec<u8>, ExportSummary) {
    let buffer = SharedBuffer::default();
    let mut writer = writer_for(format, options, Box::new(buffer.clone())).unwrap();
    for record in records {
        writer.write_record(record).unwrap();
    }
    let summary = writer.finish().unwrap();
    (buffer.bytes(), summary)
}
