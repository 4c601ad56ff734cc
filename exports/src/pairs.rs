//! Preference pairs for training: read from any of the pair formats people already have.
//!
//! Each JSON Lines row is recognised on its own:
//! - TRL explicit prompt: `prompt`, `chosen`, `rejected` as plain strings, or conversational lists of
//!   `{role, content}` messages (the prompt as a string is one user turn);
//! - TRL implicit prompt: `chosen` and `rejected` as whole conversations (lists of messages) that share
//!   everything but the last assistant turn;
//! - Anthropic HH-RLHF: `chosen` and `rejected` as `\n\nHuman: …\n\nAssistant: …` transcripts, shared
//!   context → prompt messages, the last Assistant turns → the two responses.
//!
//! Files may be gzip-compressed (recognised by their magic bytes). An optional `margin` (or
//! `score_chosen` − `score_rejected`) and `category` are kept. A row whose two sides do not share their
//! context has no single prompt; it is skipped and the reason recorded in the [`ReadReport`].

use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value};

use crate::hh::parse_transcript;
use crate::read::{
    messages_from_value, open_rows, Fields, JsonLines, ObjectRows, ReadError, ReadReport, Skipped,
};
use crate::Message;

/// One preference: given `prompt`, the response `chosen` was preferred to `rejected`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreferencePair {
    pub prompt: Vec<Message>,
    pub chosen: String,
    pub rejected: String,
    pub category: Option<String>,
    /// How much more `chosen` was preferred, where the dataset says (TRL's reward `margin`).
    pub margin: Option<f32>,
}

/// Reads every pair of a TRL or HH-RLHF JSON Lines file (optionally gzip-compressed) or Parquet file. Rows that are
/// well formed but give no pair are left out; use [`read_pairs_with_report`] to see them.
pub fn read_pairs(path: &Path) -> Result<Vec<PreferencePair>, ReadError> {
    read_pairs_with_report(path).map(|(pairs, _)| pairs)
}

/// Like [`read_pairs`], and also returns what was read and skipped.
pub fn read_pairs_with_report(path: &Path) -> Result<(Vec<PreferencePair>, ReadReport), ReadError> {
    let mut reader = PairReader::open(path)?;
    let pairs = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((pairs, reader.into_report()))
}

/// A streaming reader of preference pairs over JSON Lines; yields pairs one at a time and keeps a
/// report of skipped rows. After an error the iterator should not be used further.
pub struct PairReader<R = Box<dyn BufRead>> {
    rows: RowSource<R>,
    report: ReadReport,
}

enum RowSource<R> {
    Lines(JsonLines<R>),
    Rows(ObjectRows),
}

impl PairReader<Box<dyn BufRead>> {
    /// Opens a file: JSON Lines (gzip-compressed or not) or Parquet, recognised by its content.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        Ok(PairReader {
            rows: RowSource::Rows(open_rows(path)?),
            report: ReadReport::default(),
        })
    }
}

impl<R: BufRead> PairReader<R> {
    /// Reads JSON Lines (already decompressed; see [`crate::read::open_maybe_gzip`]).
    pub fn new(input: R) -> Self {
        PairReader {
            rows: RowSource::Lines(JsonLines::new(input)),
            report: ReadReport::default(),
        }
    }

    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    pub fn into_report(self) -> ReadReport {
        self.report
    }
}

impl<R: BufRead> Iterator for PairReader<R> {
    type Item = Result<PreferencePair, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let next = match &mut self.rows {
                RowSource::Lines(lines) => lines.next(),
                RowSource::Rows(rows) => rows.next(),
            };
            let (line, object) = match next? {
                Ok(row) => row,
                Err(error) => return Some(Err(error)),
            };
            self.report.rows_read += 1;
            match pair_from_object(line, &object) {
                Ok(Ok(pair)) => {
                    self.report.imported += 1;
                    self.report.votes += 1;
                    return Some(Ok(pair));
                }
                Ok(Err(reason)) => self.report.skipped.push(Skipped { line, reason }),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// The reason a well-formed HH-RLHF or implicit-prompt row gives no pair.
pub(crate) const CONTEXTS_DIFFER: &str =
    "chosen and rejected do not share the context before their last assistant turn";

/// Parses one row into a pair. The outer error is a malformed row; the inner one a skip reason.
pub fn pair_from_object(
    line: u64,
    object: &Map<String, Value>,
) -> Result<Result<PreferencePair, String>, ReadError> {
    let fields = Fields::new(line, object);
    let prompt = match object.get("prompt") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![Message::new("user", text.as_str())],
        Some(value @ Value::Array(_)) => messages_from_value(line, "prompt", value)?,
        Some(_) => {
            return Err(ReadError::at_field(
                line,
                "prompt",
                "expected a string or a list of {role, content} messages",
            ))
        }
    };
    let has_prompt = !prompt.is_empty() || fields.has("prompt");
    let chosen_side = side(line, "chosen", fields.value("chosen")?, has_prompt)?;
    let rejected_side = side(line, "rejected", fields.value("rejected")?, has_prompt)?;
    let (context, chosen, rejected) =
        match split_shared_context(prompt, chosen_side, rejected_side, line)? {
            Ok(split) => split,
            Err(reason) => return Ok(Err(reason)),
        };
    let margin = match fields.opt_f64("margin")? {
        Some(margin) => Some(margin as f32),
        None => match (
            fields.opt_f64("score_chosen")?,
            fields.opt_f64("score_rejected")?,
        ) {
            (Some(chosen), Some(rejected)) => Some((chosen - rejected) as f32),
            _ => None,
        },
    };
    Ok(Ok(PreferencePair {
        prompt: context,
        chosen,
        rejected,
        category: fields.opt_text("category")?,
        margin,
    }))
}

/// One side of a pair as messages. With an explicit prompt a plain string is the assistant's
/// response; without one it is an HH-RLHF transcript, or (TRL implicit prompt, plain text) a
/// whole completion with an empty prompt.
fn side(
    line: u64,
    field: &str,
    value: &Value,
    has_prompt: bool,
) -> Result<Vec<Message>, ReadError> {
    match value {
        Value::String(text) if has_prompt => Ok(vec![Message::new("assistant", text.as_str())]),
        Value::String(text) => Ok(parse_transcript(text)
            .unwrap_or_else(|| vec![Message::new("assistant", text.as_str())])),
        Value::Array(_) => messages_from_value(line, field, value),
        _ => Err(ReadError::at_field(
            line,
            field,
            "expected a string or a list of {role, content} messages",
        )),
    }
}

/// `prompt ++ chosen` and `prompt ++ rejected` must each end in an assistant turn and agree before it.
#[allow(clippy::type_complexity)]
fn split_shared_context(
    prompt: Vec<Message>,
    mut chosen: Vec<Message>,
    mut rejected: Vec<Message>,
    line: u64,
) -> Result<Result<(Vec<Message>, String, String), String>, ReadError> {
    let chosen_last = take_last_assistant(&mut chosen, line, "chosen")?;
    let rejected_last = take_last_assistant(&mut rejected, line, "rejected")?;
    if chosen != rejected {
        return Ok(Err(CONTEXTS_DIFFER.to_string()));
    }
    let mut context = prompt;
    context.extend(chosen);
    Ok(Ok((context, chosen_last, rejected_last)))
}

fn take_last_assistant(
    side: &mut Vec<Message>,
    line: u64,
    field: &str,
) -> Result<String, ReadError> {
    match side.pop() {
        Some(message) if message.role == "assistant" => Ok(message.content),
        Some(message) => Err(ReadError::at_field(
            line,
            format!("{field}[{}].role", side.len()),
            format!(
                "the last turn must be the assistant's, found `{}`",
                message.role
            ),
        )),
        None => Err(ReadError::at_field(line, field, "empty: no assistant turn")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(line: &str) -> Result<Result<PreferencePair, String>, ReadError> {
        let Value::Object(object) = serde_json::from_str(line).unwrap() else {
            panic!("not an object")
        };
        pair_from_object(7, &object)
    }

    #[test]
    fn trl_plain_explicit_prompt() {
        let pair =
            pair(r#"{"prompt":"Q?","chosen":"A","rejected":"B","margin":2,"category":"qa"}"#)
                .unwrap()
                .unwrap();
        assert_eq!(pair.prompt, vec![Message::new("user", "Q?")]);
        assert_eq!((pair.chosen.as_str(), pair.rejected.as_str()), ("A", "B"));
        assert_eq!(pair.margin, Some(2.0));
        assert_eq!(pair.category.as_deref(), Some("qa"));
    }

    #[test]
    fn trl_conversational_explicit_and_implicit_prompt() {
        let explicit = pair(
            r#"{"prompt":[{"role":"system","content":"S"},{"role":"user","content":"Q"}],
                "chosen":[{"role":"assistant","content":"A"}],"rejected":[{"role":"assistant","content":"B"}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            explicit.prompt,
            vec![Message::new("system", "S"), Message::new("user", "Q")]
        );
        let implicit = pair(
            r#"{"chosen":[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}],
                "rejected":[{"role":"user","content":"Q"},{"role":"assistant","content":"B"}],
                "score_chosen":8.5,"score_rejected":6}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(implicit.prompt, vec![Message::new("user", "Q")]);
        assert_eq!(implicit.chosen, "A");
        assert_eq!(implicit.margin, Some(2.5));
    }

    #[test]
    fn hh_rlhf_transcripts_split_into_context_and_last_turns() {
        let pair = pair(r#"{"chosen":"\n\nHuman: Hi\n\nAssistant: Hello","rejected":"\n\nHuman: Hi\n\nAssistant: Go away"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(pair.prompt, vec![Message::new("user", "Hi")]);
        assert_eq!(
            (pair.chosen.as_str(), pair.rejected.as_str()),
            ("Hello", "Go away")
        );
        let skipped = self::pair(
            r#"{"chosen":"\n\nHuman: Hi\n\nAssistant: A","rejected":"\n\nHuman: Yo\n\nAssistant: B"}"#,
        );
        assert_eq!(skipped.unwrap().unwrap_err(), CONTEXTS_DIFFER);
    }

    #[test]
    fn malformed_rows_name_line_and_field() {
        let error = pair(r#"{"prompt":"Q","chosen":"A"}"#).unwrap_err();
        assert_eq!(error.to_string(), "line 7, field `rejected`: missing");
        let error =
            pair(r#"{"prompt":"Q","chosen":[{"role":"assistant","content":3}],"rejected":"B"}"#)
                .unwrap_err();
        assert_eq!(error.field(), Some("chosen[0].content"));
        let error = pair(r#"{"chosen":"\n\nHuman: Hi\n\nAssistant: A\n\nHuman: more","rejected":"\n\nHuman: Hi\n\nAssistant: B"}"#)
            .unwrap_err();
        assert_eq!(error.field(), Some("chosen[2].role"));
        let error =
            pair(r#"{"prompt":"Q","chosen":"A","rejected":"B","margin":"big"}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 7, field `margin`: expected a number"
        );
    }

    #[test]
    fn reader_reports_json_errors_with_line_numbers_and_skips_blank_lines() {
        let input = "{\"prompt\":\"Q\",\"chosen\":\"A\",\"rejected\":\"B\"}\n\n{not json\n";
        let mut reader = PairReader::new(input.as_bytes());
        assert!(reader.next().unwrap().is_ok());
        let error = reader.next().unwrap().unwrap_err();
        assert_eq!(error.line(), Some(3));
        assert!(matches!(error, ReadError::Json { .. }));
    }
}
