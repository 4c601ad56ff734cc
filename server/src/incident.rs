//! Internal failures as a client sees them: a generic message with a short random incident id,
//! while the log gets the same id next to the cause. A 5xx body never holds an internal error's text
//! (SQL, table and column names, file paths, upstream addresses); the id lets whoever reads the log
//! find the cause a user reports.

use moat_app::backend::BackendError;

/// A fresh incident id: 8 random hex digits, enough to find one line in a day's log.
pub fn new_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Logs `cause` under `what` with a new incident id, and returns the error the client is given.
pub fn internal(what: &str, cause: &dyn std::fmt::Debug) -> BackendError {
    let incident = new_id();
    tracing::error!(incident = %incident, error = ?cause, "{what}");
    BackendError::Internal { incident }
}
