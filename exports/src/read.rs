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

/// The longest record (a line of JSON Lines, an element of a JSON array) a reader accepts. A record is
/// held in memory whole while it is parsed, so a file of one endless line would otherwise take all
/// of it; the largest real records (an OpenAssistant tree, a long multi-turn battle) are a few
/// hundred kilobytes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

fn too_long(line: u64, what: &str) -> ReadError {
    ReadError::Record {
        line,
        problem: format!(
            "the {what} is longer than {} MiB, the most a record may be; is the file JSON Lines (one record per line)?",
            MAX_RECORD_BYTES >> 20
        ),
    }
}

/// Iterates over the JSON objects of a JSON Lines stream with their 1-based line numbers, skipping
/// blank lines. A line that is not a JSON object, or longer than [`MAX_RECORD_BYTES`], is an error
/// naming it.
pub struct JsonLines<R> {
    input: R,
    line: u64,
    buffer: Vec<u8>,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(input: R) -> Self {
        JsonLines {
            input,
            line: 0,
            buffer: Vec::new(),
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
            // At most one byte past the limit is read: a line of a gigabyte is refused, not held.
            let limit = MAX_RECORD_BYTES as u64 + 1;
            match (&mut self.input)
                .take(limit)
                .read_until(b'\n', &mut self.buffer)
            {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => return Some(Err(ReadError::Io { line, source })),
            }
            if self.buffer.len() > MAX_RECORD_BYTES {
                return Some(Err(too_long(line, "line")));
            }
            // Bytes, not a `String`: text that is not UTF-8 is a JSON error naming the line and
            // column, where `read_line` would fail with an I/O error that says neither.
            let text = self.buffer.trim_ascii();
            if text.is_empty() {
                continue;
            }
            return Some(match serde_json::from_slice::<Value>(text) {
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

/// A JSON object with the 1-based line (or array element) it comes from.
pub type Row = (u64, Map<String, Value>);

/// JSON objects with the 1-based line (or array element) each comes from.
pub type ObjectRows = Box<dyn Iterator<Item = Result<Row, ReadError>>>;

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
                if bracket {
                    // The array reader starts after its opening bracket.
                    input.consume(index + 1);
                }
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
    Ok(Box::new(JsonArray {
        input,
        element: 0,
        buffer: Vec::new(),
        done: false,
    }))
}

/// The objects of one JSON array, read one element at a time: memory holds one element (at most
/// [`MAX_RECORD_BYTES`]), not the whole array, so a Chatbot Arena battles file of a gigabyte reads in
/// little memory. Elements are numbered from 1 and reported as the line.
struct JsonArray {
    input: Box<dyn BufRead>,
    /// Elements started so far.
    element: u64,
    buffer: Vec<u8>,
    /// Set by the array's end or the first error.
    done: bool,
}

impl JsonArray {
    /// The next byte that is not whitespace, consumed; `None` at the end of the input.
    fn next_byte(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(None);
            }
            match available
                .iter()
                .position(|byte| !byte.is_ascii_whitespace())
            {
                Some(at) => {
                    let byte = available[at];
                    self.input.consume(at + 1);
                    return Ok(Some(byte));
                }
                None => {
                    let length = available.len();
                    self.input.consume(length);
                }
            }
        }
    }

    /// Reads the rest of an object whose `{` is already in `buffer`, up to its closing `}`.
    fn read_object(&mut self) -> Result<(), ReadError> {
        let line = self.element;
        let (mut depth, mut in_string, mut escaped) = (1usize, false, false);
        loop {
            let available = self
                .input
                .fill_buf()
                .map_err(|source| ReadError::Io { line, source })?;
            if available.is_empty() {
                return Err(ReadError::Json {
                    line,
                    message: "the file ends inside this array element".into(),
                });
            }
            let mut end = None;
            for (at, &byte) in available.iter().enumerate() {
                if in_string {
                    match byte {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(at + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let taken = end.unwrap_or(available.len());
            if self.buffer.len() + taken > MAX_RECORD_BYTES {
                return Err(too_long(line, "array element"));
            }
            self.buffer.extend_from_slice(&available[..taken]);
            self.input.consume(taken);
            if end.is_some() {
                return Ok(());
            }
        }
    }

    fn next_object(&mut self) -> Option<Result<Row, ReadError>> {
        let line = self.element.max(1);
        let io = |source| ReadError::Io { line, source };
        let mut byte = match self.next_byte() {
            Ok(byte) => byte,
            Err(source) => return Some(Err(io(source))),
        };
        if self.element > 0 {
            // After an element: a comma and the next, or the array's end.
            match byte {
                Some(b',') => {}
                Some(b']') => {
                    return match self.next_byte() {
                        Ok(None) => None,
                        Ok(Some(_)) => Some(Err(ReadError::Json {
                            line,
                            message: "text after the array's closing `]`".into(),
                        })),
                        Err(source) => Some(Err(io(source))),
                    };
                }
                _ => {
                    return Some(Err(ReadError::Json {
                        line,
                        message: "expected `,` or `]` after this array element".into(),
                    }))
                }
            }
            byte = match self.next_byte() {
                Ok(byte) => byte,
                Err(source) => return Some(Err(io(source))),
            };
        } else if byte == Some(b']') {
            return None; // `[]`
        }
        self.element += 1;
        let line = self.element;
        match byte {
            Some(b'{') => {}
            Some(_) => {
                return Some(Err(ReadError::Record {
                    line,
                    problem: "array element is not a JSON object".into(),
                }))
            }
            None => {
                return Some(Err(ReadError::Json {
                    line,
                    message: "the file ends before the array's closing `]`".into(),
                }))
            }
        }
        self.buffer.clear();
        self.buffer.push(b'{');
        if let Err(error) = self.read_object() {
            return Some(Err(error));
        }
        Some(match serde_json::from_slice::<Value>(&self.buffer) {
            Ok(Value::Object(object)) => Ok((line, object)),
            Ok(_) => Err(ReadError::Record {
                line,
                problem: "array element is not a JSON object".into(),
            }),
            Err(error) => Err(ReadError::Json {
                line,
                message: error.to_string(),
            }),
        })
    }
}

impl Iterator for JsonArray {
    type Item = Result<Row, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_object();
        // The first error ends the read: what follows a malformed element cannot be trusted.
        if matches!(next, Some(Err(_)) | None) {
            self.done = true;
        }
        next
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Result<Row, ReadError>> {
        let input: Box<dyn BufRead> = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        json_objects(input).unwrap().collect()
    }

    #[test]
    fn an_array_is_read_element_by_element_with_strings_that_hold_brackets() {
        let text = r#" [ {"a": "}{ ][ \" \\", "n": [1, {"b": 2}]},
            {"a": "second"} ,{"a":"third"}] "#;
        let read = rows(text);
        assert_eq!(read.len(), 3);
        let read: Vec<_> = read.into_iter().map(Result::unwrap).collect();
        assert_eq!(read[0].0, 1);
        assert_eq!(read[0].1["a"], "}{ ][ \" \\");
        assert_eq!(read[0].1["n"][1]["b"], 2);
        assert_eq!((read[2].0, read[2].1["a"].as_str()), (3, Some("third")));
        assert!(rows("[]").is_empty());
        assert!(rows(" [ \n ] \n").is_empty());
    }

    #[test]
    fn a_malformed_array_names_the_element() {
        let cases = [
            (r#"[{"a": 1}, 2]"#, 2, "not a JSON object"),
            (r#"[{"a": 1} {"a": 2}]"#, 1, "expected `,` or `]`"),
            (r#"[{"a": 1}, {"a": "#, 2, "ends inside this array element"),
            (r#"[{"a": 1},"#, 2, "ends before the array's closing"),
            (r#"[{"a": 1}] x"#, 1, "text after the array"),
            (r#"[{"a": 1}, {"a" 2}]"#, 2, "not valid JSON"),
        ];
        for (text, line, message) in cases {
            let read = rows(text);
            let error = read
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("{text}: no error"));
            assert_eq!(error.line(), Some(line), "{text}: {error}");
            assert!(error.to_string().contains(message), "{text}: {error}");
        }
    }

    /// An array is not read whole before its first element comes out: an input that fails after
    /// its first megabytes still gives the elements before.
    #[test]
    fn an_array_streams() {
        struct Endless {
            sent: usize,
        }
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.sent > 4 << 20 {
                    return Err(std::io::Error::other("the input broke off"));
                }
                let chunk: &[u8] = if self.sent == 0 {
                    b"["
                } else {
                    br#"{"i": 1},"#
                };
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                self.sent += n;
                Ok(n)
            }
        }
        let input: Box<dyn BufRead> = Box::new(BufReader::new(Endless { sent: 0 }));
        let first: Vec<_> = json_objects(input).unwrap().take(3).collect();
        assert_eq!(first.len(), 3);
        for (at, row) in first.into_iter().enumerate() {
            let (line, object) = row.unwrap();
            assert_eq!((line, &object["i"]), (at as u64 + 1, &Value::from(1)));
        }
    }

    #[test]
    fn text_that_is_not_utf8_names_its_line() {
        let mut bytes = b"{\"a\": 1}\n\n{\"a\": \"".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\"}\n");
        let input: Box<dyn BufRead> = Box::new(std::io::Cursor::new(bytes));
        let read: Vec<_> = json_objects(input).unwrap().collect();
        assert!(read[0].is_ok());
        let error = read[1].as_ref().unwrap_err();
        assert_eq!(error.line(), Some(3), "{error}");
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn a_record_past_the_limit_is_refused_naming_it() {
        let long = "x".repeat(MAX_RECORD_BYTES);
        let lines = format!("{{\"a\": 1}}\n{{\"a\": \"{long}\"}}\n");
        let read = rows(&lines);
        assert!(read[0].is_ok());
        let error = read[1].as_ref().unwrap_err();
        assert_eq!(error.line(), Some(2), "{error}");
        assert!(error.to_string().contains("longer than 64 MiB"), "{error}");
        let array = format!("[{{\"a\": 1}}, {{\"a\": \"{long}\"}}]");
        let read = rows(&array);
        assert!(read[0].is_ok());
        let error = read[1].as_ref().unwrap_err();
        assert_eq!(error.line(), Some(2), "{error}");
        assert!(
            error.to_string().contains("array element is longer"),
            "{error}"
        );
        // Just under the limit is read.
        let fits = "x".repeat(MAX_RECORD_BYTES - 20);
        assert!(rows(&format!("{{\"a\": \"{fits}\"}}\n"))[0].is_ok());
    }
}
