//! Streams a study's votes out of the store into the export formats of `moat-exports`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use moat_exports::format::{writer_for, ExportOptions, Format};
use moat_exports::options::{FilteredWriter, MajorityWriter, RecordFilter, SplitWriter, Splits};
use moat_exports::table::Container;
use moat_exports::{ExportSummary, RecordWriter, VoteRecord};
use tokio::sync::mpsc;

use crate::store::{Store, StoreError, StudyRow};

/// Bytes are handed on once this much has accumulated.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "unknown export format {0:?}; available: trl, dpo, kto, hh-rlhf, openai, arena, votes"
    )]
    UnknownFormat(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the reader of the export went away")]
    Disconnected,
}

/// What to export and how: the format, its container, and which records.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub format: Format,
    pub options: ExportOptions,
    pub filter: RecordFilter,
    /// One row per item (prompt and model pair) by majority vote, instead of one per vote.
    pub majority: bool,
    /// With `majority`: leave out items whose majority share is below this (0–1).
    pub min_agreement: Option<f64>,
}

impl ExportRequest {
    pub fn new(format: &str) -> Result<ExportRequest, ExportError> {
        let format =
            Format::parse(format).ok_or_else(|| ExportError::UnknownFormat(format.to_string()))?;
        Ok(ExportRequest {
            format,
            options: ExportOptions::default(),
            filter: RecordFilter::default(),
            majority: false,
            min_agreement: None,
        })
    }

    pub fn file_extension(&self) -> &'static str {
        self.options.container.extension()
    }

    pub fn content_type(&self) -> &'static str {
        match self.options.container {
            Container::Jsonl => "application/jsonl; charset=utf-8",
            Container::Csv => "text/csv; charset=utf-8",
            Container::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Filter, then (optionally) majority per item, then the format.
    fn writer(
        &self,
        out: Box<dyn Write + Send>,
    ) -> Result<Box<dyn RecordWriter + Send>, ExportError> {
        let mut inner = writer_for(self.format, &self.options, out)?;
        if self.majority {
            inner = Box::new(MajorityWriter::new(inner, self.min_agreement));
        } else if self.min_agreement.is_some() {
            return Err(ExportError::Invalid(
                "a minimum agreement needs one row per item (majority)".into(),
            ));
        }
        Ok(Box::new(FilteredWriter::new(self.filter.clone(), inner)))
    }

    /// Raters marked excluded in the study are left out (they can be exported with the votes format
    /// by clearing `filter.excluded_raters`).
    pub async fn exclude_marked_raters(
        &mut self,
        store: &Store,
        study: &StudyRow,
    ) -> Result<(), ExportError> {
        self.filter
            .excluded_raters
            .extend(store.excluded_raters(study.id).await?);
        Ok(())
    }
}

/// The export options a person chooses, as the CLI and the API take them.
#[derive(Debug, Clone)]
pub struct ExportChoices {
    pub container: Container,
    pub conversational: bool,
    /// Model names (blank entries are ignored); both models of a comparison must be listed.
    pub models: Vec<String>,
    /// A date or RFC 3339 instant: votes at or after it.
    pub from: Option<String>,
    /// A date or RFC 3339 instant: votes before it.
    pub until: Option<String>,
    pub exclude_ties: bool,
    pub exclude_both_bad: bool,
    pub majority: bool,
    pub min_agreement: Option<f64>,
}

impl ExportRequest {
    pub fn with_choices(
        format: &str,
        choices: &ExportChoices,
    ) -> Result<ExportRequest, ExportError> {
        let mut request = ExportRequest::new(format)?;
        request.options.container = choices.container;
        request.options.conversational = choices.conversational;
        request.filter.models = choices
            .models
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        request.filter.from_ms = choices.from.as_deref().map(parse_instant).transpose()?;
        request.filter.until_ms = choices.until.as_deref().map(parse_instant).transpose()?;
        request.filter.exclude_ties = choices.exclude_ties;
        request.filter.exclude_both_bad = choices.exclude_both_bad;
        request.majority = choices.majority;
        request.min_agreement = choices.min_agreement;
        Ok(request)
    }
}

/// Parses a date or an RFC 3339 instant (`2026-11-01` or `2026-11-01T12:00:00Z`) into milliseconds.
pub fn parse_instant(text: &str) -> Result<i64, ExportError> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    moat_exports::import::parse_rfc3339_utc(&full).ok_or_else(|| {
        ExportError::Invalid(format!(
            "{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 instant"
        ))
    })
}

/// An in-memory buffer shared between a format writer and the loop that drains it.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take_if_at_least(&self, at_least: usize) -> Option<Vec<u8>> {
        let mut buffer = self.0.lock().expect("export buffer lock");
        (buffer.len() >= at_least && !buffer.is_empty()).then(|| std::mem::take(&mut *buffer))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("export buffer lock")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Something that takes export records one at a time.
trait RecordSink: Send + 'static {
    fn put(&mut self, record: &VoteRecord) -> std::io::Result<()>;
}

impl RecordSink for Box<dyn RecordWriter + Send> {
    fn put(&mut self, record: &VoteRecord) -> std::io::Result<()> {
        self.write_record(record)
    }
}

impl<F> RecordSink for SplitWriter<F>
where
    F: FnMut(&str) -> std::io::Result<Box<dyn RecordWriter + Send>> + Send + 'static,
{
    fn put(&mut self, record: &VoteRecord) -> std::io::Result<()> {
        self.write_record(record)
    }
}

/// A writer whose output is handed on in chunks through a channel (for HTTP downloads).
struct ChunkingSink {
    writer: Box<dyn RecordWriter + Send>,
    buffer: SharedBuffer,
    chunks: mpsc::Sender<Vec<u8>>,
}

impl RecordSink for ChunkingSink {
    fn put(&mut self, record: &VoteRecord) -> std::io::Result<()> {
        self.writer.write_record(record)?;
        if let Some(chunk) = self.buffer.take_if_at_least(CHUNK) {
            self.chunks
                .blocking_send(chunk)
                .map_err(|_| std::io::Error::other("the reader of the export went away"))?;
        }
        Ok(())
    }
}

/// Feeds every vote record of the study into `sink` and gives the sink back. On SQLite the file is
/// read directly on a blocking thread ([`crate::store::sqlite_vote_records`]); on PostgreSQL the
/// records stream through the pool.
async fn drive<S: RecordSink>(
    store: &Store,
    study: &StudyRow,
    by_item: bool,
    mut sink: S,
) -> Result<S, ExportError> {
    if let Some(path) = store.sqlite_path().map(Path::to_path_buf) {
        let study = study.clone();
        return tokio::task::spawn_blocking(move || {
            crate::store::sqlite_vote_records(&path, &study, by_item, |record| sink.put(record))?;
            Ok(sink)
        })
        .await
        .map_err(|e| ExportError::Io(std::io::Error::other(e.to_string())))?;
    }
    let mut records = std::pin::pin!(store.vote_records_ordered(study, by_item));
    while let Some(record) = records.next().await {
        let record = record?;
        sink = tokio::task::block_in_place(|| sink.put(&record).map(|()| sink))?;
    }
    Ok(sink)
}

/// Writes the study's votes, sending chunks of the file through `chunks` as they are produced.
/// Memory is bounded by one record plus one chunk (plus a row group for Parquet).
pub async fn export_study(
    store: &Store,
    study: &StudyRow,
    request: &ExportRequest,
    chunks: mpsc::Sender<Vec<u8>>,
) -> Result<ExportSummary, ExportError> {
    let buffer = SharedBuffer::default();
    let writer = request.writer(Box::new(buffer.clone()))?;
    let sink = ChunkingSink {
        writer,
        buffer: buffer.clone(),
        chunks: chunks.clone(),
    };
    let sink = drive(store, study, request.majority, sink).await?;
    let summary = tokio::task::spawn_blocking(move || sink.writer.finish())
        .await
        .map_err(|e| ExportError::Io(std::io::Error::other(e.to_string())))??;
    if let Some(chunk) = buffer.take_if_at_least(0) {
        chunks
            .send(chunk)
            .await
            .map_err(|_| ExportError::Disconnected)?;
    }
    Ok(summary)
}

/// A file written beside its final path and renamed into place only when complete, so a failed
/// export never leaves a half-written file under the requested name.
fn staged_file(path: &Path) -> std::io::Result<(tempfile::NamedTempFile, Box<dyn Write + Send>)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let staged = tempfile::NamedTempFile::new_in(dir)?;
    let file = staged.reopen()?;
    Ok((
        staged,
        Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
    ))
}

/// Exports into one file.
pub async fn export_to_file(
    store: &Store,
    study: &StudyRow,
    request: &ExportRequest,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let (staged, out) = staged_file(path)?;
    let writer = request.writer(out)?;
    let writer = drive(store, study, request.majority, writer).await?;
    let summary = writer.finish()?;
    staged.as_file().sync_all()?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(summary)
}

/// Exports into one file per split in `dir` (`FORMAT-SPLIT.EXT`), assigning whole prompts to splits
/// by a stable hash of the prompt id and `seed`, so no prompt is in two splits.
pub async fn export_splits(
    store: &Store,
    study: &StudyRow,
    request: &ExportRequest,
    splits: Splits,
    seed: u64,
    dir: &Path,
) -> Result<Vec<(String, PathBuf, ExportSummary)>, ExportError> {
    std::fs::create_dir_all(dir)?;
    let staged: Arc<Mutex<Vec<(String, tempfile::NamedTempFile)>>> = Arc::default();
    let opened = staged.clone();
    let opener_request = request.clone();
    let opener_dir = dir.to_path_buf();
    let writer = SplitWriter::new(splits, seed, move |split: &str| {
        let path = opener_dir.join(
            opener_request
                .format
                .file_name(split, opener_request.options.container),
        );
        let (file, out) = staged_file(&path)?;
        opened
            .lock()
            .expect("split files")
            .push((split.to_string(), file));
        opener_request
            .writer(out)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let writer = drive(store, study, request.majority, writer).await?;
    let summaries = writer.finish()?;
    let mut files = std::mem::take(&mut *staged.lock().expect("split files"));
    let mut written = Vec::new();
    for (split, summary) in summaries {
        let index = files
            .iter()
            .position(|(name, _)| *name == split)
            .expect("each split has its file");
        let (_, file) = files.swap_remove(index);
        let path = dir.join(request.format.file_name(&split, request.options.container));
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        written.push((split, path, summary));
    }
    Ok(written)
}
