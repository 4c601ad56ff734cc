//! Connecting (a SQLite file or a PostgreSQL server), the pragmas and pool, migrations, and the
//! key-value settings table.

use super::*;

/// FULL synchronous mode: an acknowledged vote survives a crash of the process and of the OS.
fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        for pragma in [
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA busy_timeout=30000",
            "PRAGMA foreign_keys=ON",
            "PRAGMA mmap_size=268435456",
        ] {
            sqlx::Executor::execute(&mut *conn, pragma).await?;
        }
        Ok(())
    })
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`), creating a SQLite file if it is missing,
    /// and applies the migrations of that dialect; gives up on an unreachable PostgreSQL server after
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Store::connect_within(url, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`Store::connect`], waiting at most `timeout` for the PostgreSQL server to answer. A failure
    /// is a [`crate::problem::Problem`] naming the database (host, port, name; a SQLite file's path),
    /// the reason and the fix.
    pub async fn connect_within(url: &str, timeout: Duration) -> anyhow::Result<Store> {
        use crate::problem::{self, Problem};
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(Problem::new(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DATABASE"
            ))
            .into());
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        // One plain connection first: the pool retries a refused connection until its acquire
        // timeout and then reports only that it timed out.
        let file = problem::sqlite_path(&url);
        match (dialect, &file) {
            (Dialect::Postgres, _) => problem::check_postgres(&url, timeout).await?,
            (Dialect::Sqlite, Some(path)) => {
                problem::prepare_sqlite_path(path)?;
                // The pool retries a connection whose setup fails (a file that is not a database)
                // until its acquire timeout: open and set up one connection alone first.
                let opened = async {
                    let mut conn = <AnyConnection as sqlx::Connection>::connect(&url).await?;
                    sqlite_pragmas(&mut conn).await?;
                    sqlx::Connection::close(conn).await
                };
                opened
                    .await
                    .map_err(|error| problem::sqlite_open_problem(path, error))?;
            }
            (Dialect::Sqlite, None) => {}
        }
        let options = AnyConnectOptions::from_str(&url).map_err(|e| {
            Problem::caused_by(
                format!("the database URL does not parse ({e}): use sqlite://PATH or postgres://USER@HOST/DATABASE"),
                e,
            )
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 8,
                Dialect::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| match dialect {
                Dialect::Sqlite => sqlite_pragmas(conn),
                Dialect::Postgres => Box::pin(async { Ok(()) }),
            })
            .connect_with(options)
            .await
            .map_err(|error| match &file {
                Some(path) => problem::sqlite_open_problem(path, error),
                None => Problem::caused_by(
                    format!(
                        "cannot connect to the {}: {error}",
                        problem::describe_database(&url)
                    ),
                    error,
                ),
            })?;
        let write_lock = Arc::new(Mutex::new(()));
        let native = match dialect {
            Dialect::Sqlite => file
                .clone()
                .map(|path| Arc::new(native_reader::NativeFile::new(path))),
            Dialect::Postgres => None,
        };
        let group_writer = match (dialect, &file, &native) {
            (Dialect::Sqlite, Some(path), Some(native)) => Some(
                GroupWriter::start_native(path.clone(), write_lock.clone(), native.clone())
                    .map_err(|error| {
                        Problem::new(format!("cannot start the database writer thread: {error}"))
                    })?,
            ),
            (Dialect::Sqlite, _, _) => Some(GroupWriter::start(pool.clone(), write_lock.clone())),
            (Dialect::Postgres, _, _) => None,
        };
        let sqlite_path = match dialect {
            Dialect::Sqlite => {
                let rest = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                Some(std::path::PathBuf::from(
                    rest.split('?').next().unwrap_or(rest),
                ))
            }
            Dialect::Postgres => None,
        };
        let store = Store {
            pool,
            dialect,
            write_lock,
            group_writer,
            sqlite_path,
            native,
        };
        store.migrate().await.map_err(|error| {
            anyhow::Error::new(error).context(format!(
                "cannot bring the {} up to date (migrations)",
                problem::describe_database(&url)
            ))
        })?;
        Ok(store)
    }

    pub(super) async fn migrate(&self) -> StoreResult<()> {
        let _guard = self.write_lock.lock().await;
        match self.dialect {
            Dialect::Sqlite => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Dialect::Postgres => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    pub async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("value"))
            .transpose()?)
    }

    /// Sets `key` to `value`. One statement (an upsert): two processes that set the same key at once
    /// (both starting with `--admin-token`) both succeed, where a delete and an insert made the
    /// second fail on the primary key.
    pub async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Sets `key` to `value` unless it has a value already, and returns the value it has now: the
    /// first of several processes to set it wins, and all of them then use that one.
    pub async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(self
            .get_setting(key)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }

    // ----- studies -----
}
