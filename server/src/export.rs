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

use crate::store::{Store, StoreError, StudyRow, TextsFor};

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

impl From<crate::store::RecordReadError> for ExportError {
    fn from(error: crate::store::RecordReadError) -> ExportError {
        match error {
            crate::store::RecordReadError::Read(message) => {
                ExportError::Io(std::io::Error::other(message))
            }
            crate::store::RecordReadError::Invalid(message) => ExportError::Invalid(message),
        }
    }
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
            // Votes on quality checks are preferences of nobody: only the raw votes keep them (with
            // their assignment kind).
            filter: RecordFilter {
                exclude_checks: format != Format::Votes,
                ..RecordFilter::default()
            },
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

    /// Which undecided votes the export writes with their texts (majority needs every vote's texts:
    /// a tie can be an item's majority).
    fn texts_needed(&self) -> TextsFor {
        if self.majority {
            return TextsFor::ALL;
        }
        TextsFor {
            ties: self.format.keeps(moat_exports::Choice::Tie),
            both_bad: self.format.keeps(moat_exports::Choice::BothBad),
        }
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

    /// Votes on comparisons where a response names a model or its maker (identity flags) are left
    /// out; returns how many votes of the study that is.
    pub async fn exclude_flagged_votes(
        &mut self,
        store: &Store,
        study: &StudyRow,
    ) -> Result<usize, ExportError> {
        let flagged = store.flagged_vote_ids(study.id).await?;
        let count = flagged.len();
        self.filter.excluded_votes.extend(flagged);
        Ok(count)
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
        // A writer is built into a sink now, so a combination it refuses (a minimum agreement
        // without majority, a format the container cannot hold) is the caller's error before any
        // byte is sent; found otherwise only once the HTTP answer had begun, as a broken transfer.
        request.writer(Box::new(std::io::sink()))?;
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

/// Records travel from the SQLite reader to the writer in batches of this many ...
const RECORD_BATCH: usize = 256;
/// ... or fewer, once their texts reach this many bytes.
const RECORD_BATCH_BYTES: usize = 512 << 10;
/// Batches in flight between the reader and the writer: enough for the reader to keep reading while
/// the writer encodes a Parquet batch, and at most 32 × 512 KiB of texts whatever their length.
const BATCHES_IN_FLIGHT: usize = 32;

/// Feeds every vote record of the study into `sink` and gives the sink back. On SQLite the file is
/// read directly ([`crate::store::sqlite_vote_records`]) on one thread while the sink formats and
/// writes on another, so reading and encoding overlap; on PostgreSQL the records stream through the
/// pool.
async fn drive<S: RecordSink>(
    store: &Store,
    study: &StudyRow,
    request: &ExportRequest,
    mut sink: S,
) -> Result<S, ExportError> {
    let by_item = request.majority;
    if let Some(path) = store.sqlite_path().map(Path::to_path_buf) {
        let study = study.clone();
        let texts = request.texts_needed();
        return tokio::task::spawn_blocking(move || {
            pump_sqlite(&path, &study, by_item, texts, &mut sink)?;
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

/// Reads on a scoped thread and writes on this one, batches passing through a bounded channel and
/// coming back empty-handed to be refilled: records are overwritten in place by the reading thread,
/// so their strings are allocated and freed on one thread (glibc's malloc makes frees from another
/// thread contend for the allocating thread's arena: that alone took 4× the export's CPU time).
/// The first error wins: a failed write stops the reader (its channel closes), a failed read ends the
/// batches and is returned.
fn pump_sqlite<S: RecordSink>(
    path: &Path,
    study: &StudyRow,
    by_item: bool,
    texts: TextsFor,
    sink: &mut S,
) -> Result<(), ExportError> {
    // A batch travels with the number of its records that are filled (a recycled batch can be longer).
    let (batches, received) =
        std::sync::mpsc::sync_channel::<(Vec<VoteRecord>, usize)>(BATCHES_IN_FLIGHT);
    let (recycle, recycled) = std::sync::mpsc::channel::<Vec<VoteRecord>>();
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("moat-export-read".into())
            .spawn_scoped(scope, move || {
                let writer_stopped = || std::io::Error::other("the export writer stopped");
                let mut batch: Vec<VoteRecord> = Vec::with_capacity(RECORD_BATCH);
                let mut filled = 0;
                let mut bytes = 0;
                crate::store::sqlite_vote_records(path, study, by_item, texts, |row| {
                    if filled == batch.len() {
                        batch.push(blank_record());
                    }
                    row.fill(&mut batch[filled])?;
                    bytes += text_bytes(&batch[filled]);
                    filled += 1;
                    if filled == RECORD_BATCH || bytes >= RECORD_BATCH_BYTES {
                        bytes = 0;
                        let next = recycled
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(RECORD_BATCH));
                        let full = std::mem::replace(&mut batch, next);
                        batches.send((full, filled)).map_err(|_| writer_stopped())?;
                        filled = 0;
                    }
                    Ok::<(), ExportError>(())
                })?;
                if filled > 0 {
                    batches
                        .send((batch, filled))
                        .map_err(|_| writer_stopped())?;
                }
                Ok::<(), ExportError>(())
            })?;
        let mut written = Ok(());
        'batches: for (batch, filled) in received.iter() {
            for record in &batch[..filled] {
                if let Err(error) = sink.put(record) {
                    written = Err(error);
                    break 'batches;
                }
            }
            // Back to the reader to be refilled; it may have finished (then the batch drops here).
            let _ = recycle.send(batch);
        }
        drop(received);
        let read = reader.join().unwrap_or_else(|_| {
            Err(ExportError::Io(std::io::Error::other(
                "the export reader panicked",
            )))
        });
        written?;
        read
    })
}

/// The bytes of a record's texts (what dominates its size).
fn text_bytes(record: &VoteRecord) -> usize {
    record.left_response.len()
        + record.right_response.len()
        + record
            .conversation
            .iter()
            .map(|message| message.content.len())
            .sum::<usize>()
}

/// A record to be overwritten by [`crate::store::RowFiller::fill`].
fn blank_record() -> VoteRecord {
    VoteRecord {
        vote_id: 0,
        study: String::new(),
        prompt_id: String::new(),
        conversation: Vec::new(),
        category: None,
        language: None,
        left_model: String::new(),
        left_openness: moat_exports::Openness::Open,
        left_response: String::new(),
        right_model: String::new(),
        right_openness: moat_exports::Openness::Open,
        right_response: String::new(),
        choice: moat_exports::Choice::Left,
        rater: String::new(),
        created_ms: 0,
        source_guess: None,
        source_confidence: None,
        rationale: None,
        time_on_page_ms: None,
        assignment_kind: String::new(),
        completion_code: None,
        left_history: Vec::new(),
        right_history: Vec::new(),
    }
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
    let sink = drive(store, study, request, sink).await?;
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
struct StagedFile {
    temp: tempfile::NamedTempFile,
    /// The first error of the background writeback, if any (see [`WritebackFile`]).
    writeback_error: Arc<Mutex<Option<std::io::Error>>>,
}

impl StagedFile {
    /// Creates the staged file next to `path` and the buffered writer that fills it.
    fn create(path: &Path) -> std::io::Result<(StagedFile, Box<dyn Write + Send>)> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temp = tempfile::NamedTempFile::new_in(dir)?;
        let writeback_error = Arc::new(Mutex::new(None));
        let file = WritebackFile::new(temp.reopen()?, writeback_error.clone())?;
        Ok((
            StagedFile {
                temp,
                writeback_error,
            },
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
        ))
    }

    /// Makes the (finished and dropped) writer's bytes durable and moves the file to `path`.
    fn commit(self, path: &Path) -> std::io::Result<()> {
        if let Some(error) = self.writeback_error.lock().expect("writeback error").take() {
            return Err(error);
        }
        self.temp.as_file().sync_all()?;
        self.temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Bytes written between two background writebacks.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// A file whose written bytes are flushed to disk by a background thread (`fdatasync`) every
/// [`WRITEBACK_EVERY`] bytes, while writing goes on, so the final `fsync` of a multi-gigabyte export
/// only waits for the tail (on this VM a 2 GB file's final `fsync` took 1.6 s). A writeback error is
/// kept for [`StagedFile::commit`] and returned by the next write: Linux reports it only once.
struct WritebackFile {
    file: std::fs::File,
    since_writeback: u64,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
    error: Arc<Mutex<Option<std::io::Error>>>,
}

impl WritebackFile {
    fn new(
        file: std::fs::File,
        error: Arc<Mutex<Option<std::io::Error>>>,
    ) -> std::io::Result<WritebackFile> {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = file.try_clone()?;
        let slot = error.clone();
        let syncer = std::thread::Builder::new()
            .name("moat-export-sync".into())
            .spawn(move || {
                for () in woken {
                    if let Err(e) = handle.sync_data() {
                        slot.lock().expect("writeback error").get_or_insert(e);
                        return;
                    }
                }
            })?;
        Ok(WritebackFile {
            file,
            since_writeback: 0,
            wake: Some(wake),
            syncer: Some(syncer),
            error,
        })
    }
}

impl Write for WritebackFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.since_writeback += written as u64;
        if self.since_writeback >= WRITEBACK_EVERY {
            self.since_writeback = 0;
            if let Some(error) = self.error.lock().expect("writeback error").as_ref() {
                return Err(std::io::Error::new(error.kind(), error.to_string()));
            }
            if let Some(wake) = &self.wake {
                // Full: a writeback is already pending, which will take these bytes too.
                let _ = wake.try_send(());
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for WritebackFile {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

/// Exports into one file.
pub async fn export_to_file(
    store: &Store,
    study: &StudyRow,
    request: &ExportRequest,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let (staged, out) = StagedFile::create(path)?;
    let writer = request.writer(out)?;
    let writer = drive(store, study, request, writer).await?;
    let summary = writer.finish()?;
    staged.commit(path)?;
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
    let staged: Arc<Mutex<Vec<(String, StagedFile)>>> = Arc::default();
    let opened = staged.clone();
    let opener_request = request.clone();
    let opener_dir = dir.to_path_buf();
    let writer = SplitWriter::new(splits, seed, move |split: &str| {
        let path = opener_dir.join(
            opener_request
                .format
                .file_name(split, opener_request.options.container),
        );
        let (file, out) = StagedFile::create(&path)?;
        opened
            .lock()
            .expect("split files")
            .push((split.to_string(), file));
        opener_request
            .writer(out)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let writer = drive(store, study, request, writer).await?;
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
        file.commit(&path)?;
        written.push((split, path, summary));
    }
    Ok(written)
}
