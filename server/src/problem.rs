//! Errors a person can act on: what failed, where (the database's host, port and name, the file's
//! path, the busy address), why, and the fix when there is one. A [`Problem`] is a complete message;
//! the `moat` command prints the chain of contexts down to it as one line and leaves its causes (the
//! driver's own words) for `--verbose`.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// A message that says everything a person needs; its cause is detail.
#[derive(Debug)]
pub struct Problem {
    message: String,
    cause: Option<Cause>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            cause: None,
        }
    }

    pub fn caused_by(message: impl Into<String>, cause: impl Into<Cause>) -> Problem {
        Problem {
            message: message.into(),
            cause: Some(cause.into()),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Problem {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn StdError + 'static))
    }
}

/// The error as the `moat` command prints it: one line (contexts joined by `: ` down to the first
/// [`Problem`], a cause already said by the one before it left out), or with `verbose` every cause
/// on a line of its own.
pub fn render(error: &anyhow::Error, verbose: bool) -> String {
    let one_line = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
    if verbose {
        let mut text = format!("error: {error}");
        for cause in error.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        return text;
    }
    let mut line = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if !line.contains(said.trim()) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(said.trim());
        }
        if cause.is::<Problem>() {
            break;
        }
    }
    format!("error: {}", one_line(line))
}

/// `postgres://USER:PASSWORD@HOST:PORT/DB` as `database DB on HOST:PORT (user USER)`, never the password;
/// a SQLite URL as its path.
pub fn describe_database(url: &str) -> String {
    if let Some(path) = sqlite_path(url) {
        return format!("SQLite database {}", path.display());
    }
    match sqlx::postgres::PgConnectOptions::from_str(url) {
        Ok(options) => {
            let user = options.get_username().to_string();
            format!(
                "PostgreSQL database {} on {}:{} (user {user})",
                options.get_database().unwrap_or(&user),
                options.get_host(),
                options.get_port()
            )
        }
        Err(_) => "the database (its URL does not parse)".to_string(),
    }
}

/// The file of a `sqlite:` URL; `None` for an in-memory database or another scheme.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Before SQLite opens `path`: creates a missing parent folder, and refuses a path that is a folder.
pub fn prepare_sqlite_path(path: &Path) -> Result<(), Problem> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent.exists() && !parent.is_dir() {
            return Err(Problem::new(format!(
                "{} is a file, not a folder: the SQLite database {} cannot be created in it (choose another --data-dir or --database-url)",
                parent.display(),
                path.display()
            )));
        }
        if !parent.is_dir() {
            std::fs::create_dir_all(parent).map_err(|e| {
                Problem::caused_by(
                    format!(
                        "cannot create the folder {} for the SQLite database {}: {}",
                        parent.display(),
                        path.display(),
                        io_reason(&e)
                    ),
                    e,
                )
            })?;
        }
    }
    if path.is_dir() {
        return Err(Problem::new(format!(
            "the SQLite database {} is a folder, not a file: give a file path (sqlite://FOLDER/moat.db)",
            path.display()
        )));
    }
    Ok(())
}

/// SQLite could not open or set up the file at `path`.
pub fn sqlite_open_problem(path: &Path, error: sqlx::Error) -> Problem {
    let reason = match &error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            if message.contains("unable to open") {
                let folder = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                format!(
                    "{message} (can this user write to {} and to the folder {}?)",
                    path.display(),
                    folder.display()
                )
            } else if message.contains("not a database") {
                format!(
                    "{message}: the file is something else; move it away or choose another path"
                )
            } else {
                message
            }
        }
        sqlx::Error::Io(e) => io_reason(e),
        other => other.to_string(),
    };
    Problem::caused_by(
        format!(
            "cannot open the SQLite database {}: {reason}",
            path.display()
        ),
        error,
    )
}

/// Connects once to the PostgreSQL server of `url` within `timeout`, and turns a failure into a
/// message naming host, port, database and user, the reason, and the fix.
pub async fn check_postgres(url: &str, timeout: Duration) -> Result<(), Problem> {
    use sqlx::Connection;
    let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
        Problem::caused_by(
            format!("the PostgreSQL URL does not parse ({e}): use postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"),
            e,
        )
    })?;
    let host = options.get_host().to_string();
    let port = options.get_port();
    let user = options.get_username().to_string();
    let database = options.get_database().unwrap_or(&user).to_string();
    let place = format!("PostgreSQL at {host}:{port} (database {database}, user {user})");
    let result = tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options)).await;
    let error = match result {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            return Ok(());
        }
        Ok(Err(error)) => error,
        Err(_) => {
            return Err(Problem::new(format!(
                "cannot connect to {place}: no answer within {} s (is the host right, and does a firewall let port {port} through? --db-connect-timeout waits longer)",
                timeout.as_secs_f64()
            )))
        }
    };
    let reason = match &error {
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "connection refused: nothing listens on port {port} of {host} (start PostgreSQL, or correct the host and port in --database-url)"
        ),
        sqlx::Error::Io(e) if is_unknown_host(e) => format!(
            "unknown host {host:?} ({e}): correct the host in --database-url"
        ),
        sqlx::Error::Io(e) => io_reason(e),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => format!(
                "the database {database:?} does not exist (create it: createdb -h {host} -p {port} -U {user} {database})"
            ),
            Some("28P01") | Some("28000") => format!(
                "authentication failed for user {user:?} ({}): check the user and password in --database-url",
                db.message()
            ),
            Some("57P03") => format!(
                "the server is starting up or shutting down ({}): try again in a moment",
                db.message()
            ),
            Some("53300") => format!(
                "too many connections ({}): close other clients or raise max_connections",
                db.message()
            ),
            _ => db.message().to_string(),
        },
        sqlx::Error::Tls(e) => format!(
            "TLS failed ({e}): check sslmode in --database-url"
        ),
        other => other.to_string(),
    };
    Err(Problem::caused_by(
        format!("cannot connect to {place}: {reason}"),
        error,
    ))
}

fn is_unknown_host(error: &std::io::Error) -> bool {
    let text = error.to_string();
    text.contains("lookup address")
        || text.contains("Name or service not known")
        || text.contains("nodename nor servname")
        || text.contains("No address associated")
        || text.contains("Temporary failure in name resolution")
}

/// An I/O error in words, without Rust's `(os error N)` suffix.
pub fn io_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text,
    }
}

/// Binding `addr` failed: which address, and what to do.
pub fn bind_problem(addr: SocketAddr, error: std::io::Error) -> Problem {
    use std::io::ErrorKind;
    let advice = match error.kind() {
        ErrorKind::AddrInUse => format!(
            "the address is already in use (another program, perhaps another moat serve, listens on port {}): stop it, or choose another address with --addr",
            addr.port()
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied (ports below 1024 need privileges): choose a port above 1023 with --addr, e.g. {}:3000",
            addr.ip()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "no network interface of this machine has the address {}: use 127.0.0.1 or 0.0.0.0 with --addr",
            addr.ip()
        ),
        _ => io_reason(&error),
    };
    Problem::caused_by(format!("cannot listen on {addr}: {advice}"), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_stops_at_the_problem_and_leaves_repeats_out() {
        let inner = std::io::Error::other("driver detail");
        let error = anyhow::Error::new(Problem::caused_by("cannot open X: it is gone", inner))
            .context("starting the server");
        assert_eq!(
            render(&error, false),
            "error: starting the server: cannot open X: it is gone"
        );
        let verbose = render(&error, true);
        assert!(verbose.contains("\n  caused by: cannot open X: it is gone"));
        assert!(verbose.contains("\n  caused by: driver detail"));

        // Without a Problem, the whole chain, a cause already said once left out.
        let twice = anyhow::anyhow!("(code: 14) unable to open database file")
            .context("error returned from database: (code: 14) unable to open database file");
        assert_eq!(
            render(&twice, false),
            "error: error returned from database: (code: 14) unable to open database file"
        );
    }

    #[test]
    fn database_descriptions_never_show_the_password() {
        let text = describe_database("postgres://alice:hunter2@db.example:6543/moat");
        assert_eq!(
            text,
            "PostgreSQL database moat on db.example:6543 (user alice)"
        );
        assert_eq!(
            describe_database("sqlite:///srv/moat/moat.db?mode=rwc"),
            "SQLite database /srv/moat/moat.db"
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(
            sqlite_path("sqlite:data/moat.db"),
            Some(PathBuf::from("data/moat.db"))
        );
    }
}
