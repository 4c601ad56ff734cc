//! The rater path's reads on a SQLite file, run natively on the calling thread.
//!
//! Through sqlx's `Any` driver every statement is a round trip to a connection's worker thread, and a
//! rater's page takes five of them; `perf` showed most of the rater path's time in those wake-ups, not
//! in SQLite. These reads are index lookups of tens of microseconds, so they run where the request
//! is: each thread keeps its own rusqlite connection to the file (WAL lets readers run beside the
//! writer and see every committed write). The SQL is the `Any` path's, shared as constants; only
//! the reading of columns is written twice. PostgreSQL and in-memory databases use the `Any` path.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{CachedStatement, ToSql};

use super::*;

/// A SQLite file a store reads natively; `id` tells apart two stores opened on one path (a test
/// that deletes a file and creates another in its place must not read the old one's open handle).
#[derive(Debug)]
pub(super) struct NativeFile {
    id: u64,
    path: std::path::PathBuf,
    /// The assigner's copy of the file's studies, which the file's writer keeps up to date.
    pub(super) assigner: super::assigner_memory::AssignerMemory,
}

impl NativeFile {
    pub(super) fn new(path: std::path::PathBuf) -> NativeFile {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NativeFile {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            path,
            assigner: Default::default(),
        }
    }
}

/// Connections a thread keeps open, most recently opened last; a few, for processes (tests) that
/// open several stores.
const CONNECTIONS_PER_THREAD: usize = 4;

thread_local! {
    static CONNECTIONS: RefCell<Vec<(u64, rusqlite::Connection)>> = const { RefCell::new(Vec::new()) };
}

fn open_reader(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )?;
    // A WAL reader waits only while another connection recovers the log: rare and short.
    conn.busy_timeout(Duration::from_secs(5))?;
    // No memory map: a reader that finds the log changed since its last read (with a busy writer,
    // nearly every read) drops its map of the file, and reading it again faults the pages back in;
    // `perf` put the unmapping, remapping and faults at ~4% of the rater path's CPU. Reads by
    // `pread` into the connection's cache cost less here.
    conn.execute_batch("PRAGMA mmap_size=0;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The `$1 … $8` parameter names of the shared SQL, bound by name: SQLite numbers `$n` parameters
/// in the order they first appear, which is not always `n`.
pub(super) fn bind(stmt: &mut CachedStatement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
    const NAMES: [&str; 16] = [
        "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14",
        "$15", "$16",
    ];
    for (name, value) in NAMES.iter().zip(values) {
        if let Some(index) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(index, value)?;
        }
    }
    Ok(())
}

impl Store {
    /// Runs `read` on this thread's connection to the store's SQLite file; `None` when the store is
    /// not a SQLite file (the caller reads through the pool).
    pub(super) fn read_native<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> StoreResult<T>,
    ) -> Option<StoreResult<T>> {
        let file = self.native.as_ref()?;
        Some(CONNECTIONS.with(|cell| {
            let mut connections = cell.borrow_mut();
            let at = match connections.iter().position(|(id, _)| *id == file.id) {
                Some(at) => at,
                None => {
                    if connections.len() >= CONNECTIONS_PER_THREAD {
                        connections.remove(0);
                    }
                    connections.push((file.id, open_reader(&file.path)?));
                    connections.len() - 1
                }
            };
            let result = read(&connections[at].1);
            if matches!(result, Err(StoreError::Sqlite(_))) {
                // Not reused after an error of its own: the next read opens a fresh one.
                connections.remove(at);
            }
            result
        }))
    }

    /// One row of `sql` (or none), read by `row`.
    pub(super) fn native_row<T>(
        &self,
        sql: &str,
        values: &[&dyn ToSql],
        row: impl FnOnce(&rusqlite::Row<'_>) -> StoreResult<T>,
    ) -> Option<StoreResult<Option<T>>> {
        self.read_native(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            bind(&mut stmt, values)?;
            let mut rows = stmt.raw_query();
            match rows.next()? {
                Some(found) => row(found).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Every row of `sql`, each read by `row`.
    pub(super) fn native_rows<T>(
        &self,
        sql: &str,
        values: &[&dyn ToSql],
        mut row: impl FnMut(&rusqlite::Row<'_>) -> StoreResult<T>,
    ) -> Option<StoreResult<Vec<T>>> {
        self.read_native(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            bind(&mut stmt, values)?;
            let mut rows = stmt.raw_query();
            let mut read = Vec::new();
            while let Some(found) = rows.next()? {
                read.push(row(found)?);
            }
            Ok(read)
        })
    }
}
