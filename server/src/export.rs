//! Streams a study's votes out of the store into an export format, a chunk at a time.

use std::io::Write;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use moat_exports::trl::TrlJsonlWriter;
use moat_exports::{ExportSummary, RecordWriter};
use tokio::sync::mpsc;

use crate::store::{Store, StoreError, StudyRow};

/// Bytes are handed on once this much has accumulated.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export format {0:?}; available: trl")]
    UnknownFormat(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the reader of the export went away")]
    Disconnected,
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
        self.0.lock().expect("export buffer lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn check_format(format: &str) -> Result<(), ExportError> {
    match format {
        "trl" => Ok(()),
        other => Err(ExportError::UnknownFormat(other.to_string())),
    }
}

fn writer_for(format: &str, out: SharedBuffer) -> Result<Box<dyn RecordWriter + Send>, ExportError> {
    match format {
        "trl" => Ok(Box::new(TrlJsonlWriter::new(out))),
        other => Err(ExportError::UnknownFormat(other.to_string())),
    }
}

/// Writes the study's votes in `format`, sending chunks of the file through `chunks` as they are
/// produced. Memory use is bounded by one record plus one chunk, whatever the study's size.
pub async fn export_study(
    store: &Store,
    study: &StudyRow,
    format: &str,
    chunks: mpsc::Sender<Vec<u8>>,
) -> Result<ExportSummary, ExportError> {
    let buffer = SharedBuffer::default();
    let mut writer = writer_for(format, buffer.clone())?;
    let mut records = std::pin::pin!(store.vote_records(study));
    while let Some(record) = records.next().await {
        writer.write_record(&record?)?;
        if let Some(chunk) = buffer.take_if_at_least(CHUNK) {
            chunks.send(chunk).await.map_err(|_| ExportError::Disconnected)?;
        }
    }
    let summary = writer.finish()?;
    if let Some(chunk) = buffer.take_if_at_least(0) {
        chunks.send(chunk).await.map_err(|_| ExportError::Disconnected)?;
    }
    Ok(summary)
}

/// Exports into a file, written beside its final path and renamed into place only when complete,
/// so a failed export never leaves a half-written file under the requested name.
pub async fn export_to_file(
    store: &Store,
    study: &StudyRow,
    format: &str,
    path: &std::path::Path,
) -> Result<ExportSummary, ExportError> {
    check_format(format)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let temporary = tempfile::NamedTempFile::new_in(dir)?;
    let (sender, mut receiver) = mpsc::channel::<Vec<u8>>(4);
    let file = temporary.reopen()?;
    let writer_task = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(file);
        while let Some(chunk) = receiver.blocking_recv() {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        out.get_ref().sync_all()
    });
    let summary = export_study(store, study, format, sender).await;
    writer_task.await.map_err(|e| std::io::Error::other(e.to_string()))??;
    let summary = summary?;
    temporary.persist(path).map_err(|e| e.error)?;
    Ok(summary)
}
