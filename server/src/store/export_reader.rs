//! Vote records read straight from a study's SQLite file with rusqlite, for fast exports.

use super::*;

/// Which undecided votes need their texts: the others are still read (filters and summaries count
/// them) but with empty prompt and responses, so SQLite does not load and copy texts nobody writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextsFor {
    pub ties: bool,
    pub both_bad: bool,
}

impl TextsFor {
    pub const ALL: TextsFor = TextsFor {
        ties: true,
        both_bad: true,
    };
}

/// Reads a study's vote records straight from its SQLite file with rusqlite, on the calling (blocking)
/// thread, in vote order (or item order with `by_item`). For each row, `each` gets a filler that
/// writes the row into a record of the caller's choosing, reusing that record's strings, so a reader
/// that recycles its records allocates almost nothing per row. Exports use this instead of the pool:
/// the `Any` driver's per-row hand-off between threads limited them to a third of this speed.
pub fn sqlite_vote_records<E>(
    path: &std::path::Path,
    study: &StudyRow,
    by_item: bool,
    texts: TextsFor,
    mut each: impl FnMut(&mut RowFiller<'_, '_>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<RecordReadError>,
{
    use rusqlite::OpenFlags;
    // The models of a study are few: read them once instead of joining them into every row.
    // Texts only where the export writes them: `?2` and `?3` say whether ties and both-bad votes do.
    let kept = |column: &str| {
        format!(
            "CASE WHEN v.choice IN ('left', 'right') OR (v.choice = 'tie' AND ?2) \
             OR (v.choice = 'both_bad' AND ?3) THEN {column} ELSE '' END"
        )
    };
    let order = if by_item {
        "p.id, a.model_low, a.model_high, v.id"
    } else {
        "v.id"
    };
    // CROSS JOIN fixes SQLite's join order: votes in id order, everything else by primary key, so the
    // export streams without sorting whatever the planner's statistics say (with `sqlite_stat1` from an
    // ANALYZE that predates an index, it once chose to walk raters first and sort a million rows).
    let sql = format!(
        "SELECT v.id, v.choice, v.source_guess, v.source_confidence, v.rationale, \
         v.time_on_page_ms, v.created_ms, a.kind, p.external_id, {conversation}, p.category, \
         p.language, r.pseudonym, lr.model_id, {left}, rr.model_id, {right}, r.completion_code, \
         lr.history, rr.history \
         FROM votes v CROSS JOIN assignments a ON a.id = v.assignment_id \
         CROSS JOIN prompts p ON p.id = a.prompt_id CROSS JOIN raters r ON r.id = a.rater_id \
         CROSS JOIN responses lr ON lr.id = a.left_response_id \
         CROSS JOIN responses rr ON rr.id = a.right_response_id \
         WHERE p.study_id = ?1 ORDER BY {order}",
        conversation = kept("p.conversation"),
        left = kept("lr.content"),
        right = kept("rr.content"),
    );
    let db_error = |e: rusqlite::Error| sqlite_read_error(path, e);
    let connection = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    connection
        .busy_timeout(Duration::from_secs(30))
        .map_err(db_error)?;
    let mut models: Vec<(i64, String, Openness)> = Vec::new();
    {
        let mut statement = connection
            .prepare("SELECT id, name, openness FROM models WHERE study_id = ?1")
            .map_err(db_error)?;
        let mut rows = statement.query([study.id]).map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            let openness: String = row.get(2).map_err(db_error)?;
            let openness =
                db_openness(&openness).map_err(|e| RecordReadError::Invalid(e.to_string()))?;
            models.push((
                row.get::<_, i64>(0).map_err(db_error)?,
                row.get::<_, String>(1).map_err(db_error)?,
                openness,
            ));
        }
    }
    let mut statement = connection.prepare(&sql).map_err(db_error)?;
    let mut rows = statement
        .query(rusqlite::params![study.id, texts.ties, texts.both_bad])
        .map_err(db_error)?;
    while let Some(row) = rows.next().map_err(db_error)? {
        each(&mut RowFiller {
            row,
            study,
            models: &models,
            path,
        })?;
    }
    Ok(())
}

/// Why a vote record could not be read from a study's SQLite file.
#[derive(Debug, thiserror::Error)]
pub enum RecordReadError {
    /// The file could not be opened or read (the message names it).
    #[error("{0}")]
    Read(String),
    /// A row holds a value Moat never writes (the message says which).
    #[error("{0}")]
    Invalid(String),
}

fn sqlite_read_error(path: &std::path::Path, e: rusqlite::Error) -> RecordReadError {
    RecordReadError::Read(format!("reading {}: {e}", path.display()))
}

/// One row of [`sqlite_vote_records`], to be written into a record.
pub struct RowFiller<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    study: &'r StudyRow,
    /// (model id, name, openness) of the study's models: a handful, searched in order.
    models: &'r [(i64, String, Openness)],
    path: &'r std::path::Path,
}

impl RowFiller<'_, '_> {
    /// Overwrites every field of `record` with this row, reusing its strings' buffers.
    pub fn fill(&self, record: &mut VoteRecord) -> Result<(), RecordReadError> {
        let row = self.row;
        let db_error = |e: rusqlite::Error| sqlite_read_error(self.path, e);
        let invalid = |e: sqlx::Error| RecordReadError::Invalid(e.to_string());
        let text = |i: usize| -> Result<&str, RecordReadError> {
            row.get_ref(i)
                .and_then(|value| value.as_str().map_err(rusqlite::Error::from))
                .map_err(db_error)
        };
        let optional_text = |i: usize| -> Result<Option<&str>, RecordReadError> {
            row.get_ref(i)
                .and_then(|value| value.as_str_or_null().map_err(rusqlite::Error::from))
                .map_err(db_error)
        };
        fn set(field: &mut String, value: &str) {
            field.clear();
            field.push_str(value);
        }
        fn set_optional(field: &mut Option<String>, value: Option<&str>) {
            match (field.as_mut(), value) {
                (Some(field), Some(value)) => set(field, value),
                (_, value) => *field = value.map(str::to_string),
            }
        }
        let conversation = text(9)?;
        record.conversation = if conversation.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(conversation).map_err(|e| {
                RecordReadError::Invalid(format!("a stored conversation is not valid: {e}"))
            })?
        };
        record.vote_id = row.get(0).map_err(db_error)?;
        set(&mut record.study, &self.study.slug);
        set(&mut record.prompt_id, text(8)?);
        set_optional(&mut record.category, optional_text(10)?);
        set_optional(&mut record.language, optional_text(11)?);
        let model = |i: usize| -> Result<(&str, Openness), RecordReadError> {
            let id: i64 = row.get(i).map_err(db_error)?;
            let found = self.models.iter().find(|(model_id, ..)| *model_id == id);
            found
                .map(|(_, name, openness)| (name.as_str(), *openness))
                .ok_or_else(|| {
                    RecordReadError::Invalid(format!(
                        "a response of study {:?} names model {id}, which is not the study's",
                        self.study.slug
                    ))
                })
        };
        let (left_model, left_openness) = model(13)?;
        set(&mut record.left_model, left_model);
        record.left_openness = left_openness;
        set(&mut record.left_response, text(14)?);
        let (right_model, right_openness) = model(15)?;
        set(&mut record.right_model, right_model);
        record.right_openness = right_openness;
        set(&mut record.right_response, text(16)?);
        record.choice = db_choice(text(1)?).map_err(invalid)?;
        set(&mut record.rater, text(12)?);
        record.created_ms = row.get(6).map_err(db_error)?;
        set_optional(&mut record.source_guess, optional_text(2)?);
        record.source_confidence = row.get(3).map_err(db_error)?;
        set_optional(&mut record.rationale, optional_text(4)?);
        record.time_on_page_ms = row.get(5).map_err(db_error)?;
        set(&mut record.assignment_kind, text(7)?);
        set_optional(&mut record.completion_code, optional_text(17)?);
        let history = |i: usize| -> Result<Vec<Message>, RecordReadError> {
            history_of(optional_text(i)?.map(str::to_string)).map_err(invalid)
        };
        record.left_history = history(18)?;
        record.right_history = history(19)?;
        Ok(())
    }
}
