//! What every reader shares: opening a file that may be gzip-compressed, walking JSON Lines with line
//! numbers, the error type that names a line and a field, and the report of what was read and skipped.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::Message;

/// Why a read stopped. Every malformed-record variant names the 1-based line and, where one is at
/// fault, the field (a path such as `chosen[2].content`), so a user can fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: cannot read: {source}")]
    Io { line: u64, source: std::io::Error },
    #[error("line {line}: not valid JSON: {message}")]
    Json { line: u64, message: String },
    #[error("line {line}, field `{field}`: {problem}")]
    Field {
        line: u64,
        field: String,
        problem: String,
    },
    #[error("line {line}: {problem}")]
    Record { line: u64, problem: String },
}

impl ReadError {
    /// The 1-based line the error is about, where there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            ReadError::Open { .. } => None,
            ReadError::Io { line, .. }
            | ReadError::Json { line, .. }
            | ReadError::Field { line, .. }
            | ReadError::Record { line, .. } => Some(*line),
        }
    }

    /// The field the error is about, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ReadError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn at_field(
        line: u64,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ReadError::Field {
            line,
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A well-formed record that a reader left out, and why (e.g. the two sides of an HH-RLHF pair do not
/// share their context, so there is no single prompt to attach them to).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub line: u64,
    pub reason: String,
}

/// What a reader did: rows (non-blank lines or JSON array elements) read, records produced, and each
/// skipped row with its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadReport {
    pub rows_read: u64,
    /// Items (pairs, for the pair reader) produced.
    pub imported: u64,
    /// Votes carried by the imported items.
    pub votes: u64,
    pub skipped: Vec<Skipped>,
}

impl ReadReport {
    /// Skip counts grouped by reason, in first-seen order, for a one-line summary.
    pub fn skipped_by_reason(&self) -> Vec<(String, u64)> {
        let mut grouped: Vec<(String, u64)> = Vec::new();
        for skip in &self.skipped {
            match grouped
                .iter_mut()
                .find(|(reason, _)| *reason == skip.reason)
            {
                Some((_, count)) => *count += 1,
                None => grouped.push((skip.reason.clone(), 1)),
            }
        }
        grouped
    }
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {} rows, imported {} items with {} votes, skipped {}",
            self.rows_read,
            self.imported,
            self.votes,
            self.skipped.len()
        )?;
        for (reason, count) in self.skipped_by_reason() {
            write!(f, "; {count} skipped: {reason}")?;
        }
        Ok(())
    }
}

/// Opens a file for reading, decompressing it when it starts with the gzip magic bytes (whatever its
/// extension says).
pub fn open_maybe_gzip(path: &Path) -> Result<Box<dyn BufRead>, ReadError> {
    let open_error = |source| ReadError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(open_error)?);
    let is_gzip = file
        .fill_buf()
        .map_err(open_error)?
        .starts_with(&[0x1f, 0x8b]);
    if is_gzip {
        Ok(Box::new(BufReader::new(
            flate2::bufread::MultiGzDecoder::new(file),
        )))
    } else {
        Ok(Box::new(file))
    }
}

/// Opens a file of rows for any reader: Parquet (by its `PAR1` magic bytes), or else JSON Lines or one
/// JSON array of objects, gzip-compressed or not.
pub fn open_rows(path: &Path) -> Result<ObjectRows, ReadError> {
    let open_error = |source| ReadError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(open_error)?;
    let is_parquet = matches!(file.read_exact(&mut magic), Ok(()) if &magic == b"PAR1");
    if is_parquet {
        return crate::parquet_rows::parquet_rows(
            File::open(path).map_err(open_error)?,
            &path.display().to_string(),
        );
    }
    json_objects(open_maybe_gzip(path)?)
}

/// Wraps any reader, decompressing gzip by its magic bytes.
pub fn maybe_gunzip<R: BufRead + 'static>(mut input: R) -> std::io::Result<Box<dyn BufRead>> {
    if input.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(
            flate2::bufread::MultiGzDecoder::new(input),
        )))
    } else {
        Ok(Box::new(input))
    }
}

/// Iterates over the JSON objects of a JSON Lines stream with their 1-based line numbers, skipping
/// blank lines. A line that is not a JSON object is an error naming it.
pub struct JsonLines<R> {
    input: R,
    line: u64,
    buffer: String,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(input: R) -> Self {
        JsonLines {
            input,
            line: 0,
            buffer: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = Result<(u64, Map<String, Value>), ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buffer.clear();
            self.line += 1;
            let line = self.line;
            match self.input.read_line(&mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => return Some(Err(ReadError::Io { line, source })),
            }
            let text = self.buffer.trim();
            if text.is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(object)) => Ok((line, object)),
                Ok(_) => Err(ReadError::Record {
                    line,
                    problem: "expected a JSON object".into(),
                }),
                Err(error) => Err(ReadError::Json {
                    line,
                    message: error.to_string(),
                }),
            });
        }
    }
}

/// JSON objects with the 1-based line (or array element) each comes from.
pub type ObjectRows = Box<dyn Iterator<Item = Result<(u64, Map<String, Value>), ReadError>>>;

/// Reads a whole input that is either one JSON array of objects or JSON Lines, yielding objects with
/// the line they start on (array elements are numbered by their 1-based index, reported as the line,
/// since a pretty-printed array has no useful line per record).
pub fn json_objects(mut input: Box<dyn BufRead>) -> Result<ObjectRows, ReadError> {
    let starts_with_bracket = loop {
        let buffer = input
            .fill_buf()
            .map_err(|source| ReadError::Io { line: 1, source })?;
        match buffer.iter().position(|byte| !byte.is_ascii_whitespace()) {
            Some(index) => {
                let bracket = buffer[index] == b'[';
                break bracket;
            }
            None if buffer.is_empty() => break false,
            None => {
                let length = buffer.len();
                input.consume(length);
            }
        }
    };
    if !starts_with_bracket {
        return Ok(Box::new(JsonLines::new(input)));
    }
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|source| ReadError::Io { line: 1, source })?;
    let values: Vec<Value> = serde_json::from_str(&text).map_err(|error| ReadError::Json {
        line: error.line() as u64,
        message: error.to_string(),
    })?;
    Ok(Box::new(values.into_iter().enumerate().map(
        |(index, value)| {
            let element = index as u64 + 1;
            match value {
                Value::Object(object) => Ok((element, object)),
                _ => Err(ReadError::Record {
                    line: element,
                    problem: "array element is not a JSON object".into(),
                }),
            }
        },
    )))
}

/// Typed access to the fields of one JSON object, with errors that name the line and the field.
pub(crate) struct Fields<'a> {
    pub line: u64,
    pub object: &'a Map<String, Value>,
}

// Some accessors exist for the importers of other formats.
#[allow(dead_code)]
impl<'a> Fields<'a> {
    pub fn new(line: u64, object: &'a Map<String, Value>) -> Self {
        Fields { line, object }
    }

    pub fn has(&self, key: &str) -> bool {
        self.object.get(key).is_some_and(|value| !value.is_null())
    }

    pub fn value(&self, key: &str) -> Result<&'a Value, ReadError> {
        match self.object.get(key) {
            Some(value) if !value.is_null() => Ok(value),
            _ => Err(ReadError::at_field(self.line, key, "missing")),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str, ReadError> {
        self.value(key)?
            .as_str()
            .ok_or_else(|| ReadError::at_field(self.line, key, "expected a string"))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ReadError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ReadError::at_field(self.line, key, "expected a string")),
        }
    }

    /// A string, or a number/bool written as text (ids are often numbers in public datasets).
    pub fn opt_text(&self, key: &str) -> Result<Option<String>, ReadError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(Value::Bool(flag)) => Ok(Some(flag.to_string())),
            Some(_) => Err(ReadError::at_field(
                self.line,
                key,
                "expected a string or a number",
            )),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ReadError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| ReadError::at_field(self.line, key, "expected a number")),
        }
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, ReadError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| ReadError::at_field(self.line, key, "expected an integer")),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ReadError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(ReadError::at_field(
                self.line,
                key,
                "expected true or false",
            )),
        }
    }
}

/// Reads a list of chat messages. Accepts OpenAI/TRL `{role, content}` and ShareGPT `{from, value}`
/// objects; `content` may also be a list of `{type: "text", text}` parts, which are joined.
pub(crate) fn messages_from_value(
    line: u64,
    field: &str,
    value: &Value,
) -> Result<Vec<Message>, ReadError> {
    let Value::Array(items) = value else {
        return Err(ReadError::at_field(
            line,
            field,
            "expected a list of {role, content} messages",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| message_from_value(line, &format!("{field}[{index}]"), item))
        .collect()
}

pub(crate) fn message_from_value(
    line: u64,
    field: &str,
    value: &Value,
) -> Result<Message, ReadError> {
    let Value::Object(object) = value else {
        return Err(ReadError::at_field(
            line,
            field,
            "expected a {role, content} message",
        ));
    };
    let role = match object.get("role").or_else(|| object.get("from")) {
        Some(Value::String(role)) => normalize_role(role),
        _ => {
            return Err(ReadError::at_field(
                line,
                format!("{field}.role"),
                "missing or not a string",
            ))
        }
    };
    let content = match object.get("content").or_else(|| object.get("value")) {
        Some(Value::String(content)) => content.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                match part.get("text").and_then(Value::as_str) {
                    Some(piece) => text.push_str(piece),
                    None => {
                        return Err(ReadError::at_field(
                            line,
                            format!("{field}.content[{index}]"),
                            "only text parts are supported",
                        ))
                    }
                }
            }
            text
        }
        Some(Value::Null) => String::new(),
        _ => {
            return Err(ReadError::at_field(
                line,
                format!("{field}.content"),
                "missing or not a string",
            ))
        }
    };
    Ok(Message { role, content })
}

/// Maps the role names of public datasets onto the OpenAI ones used throughout Moat.
pub fn normalize_role(role: &str) -> String {
    match role {
        "human" | "Human" | "prompter" | "user" | "USER" => "user".to_string(),
        "gpt" | "assistant" | "Assistant" | "bot" | "model" | "ASSISTANT" => {
            "assistant".to_string()
        }
        other => other.to_string(),
    }
}
