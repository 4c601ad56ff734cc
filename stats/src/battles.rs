//! Reading and writing Chatbot Arena battle files: a JSON array of records or JSON Lines, each with
//! `model_a`, `model_b` and `winner` ∈ `model_a` / `model_b` / `tie` / `tie (bothbad)`. Other fields
//! (`judge`, `conversation_a`, `tstamp`, …) are ignored. An error names the line and the field.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

use crate::model::{Battle, Outcome};

/// Why a battles file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BattlesError {
    /// 1-based line of the problem (0 when the file could not be read at all).
    pub line: usize,
    pub column: usize,
    /// The field at fault, when one is.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for BattlesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.message);
        }
        write!(f, "line {}", self.line)?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for BattlesError {}

#[derive(Deserialize)]
struct RawBattle {
    #[serde(deserialize_with = "model_a")]
    model_a: String,
    #[serde(deserialize_with = "model_b")]
    model_b: String,
    #[serde(deserialize_with = "winner")]
    winner: Outcome,
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn model_name<'de, D: Deserializer<'de>>(deserializer: D, field: &str) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(name) if !name.trim().is_empty() => Ok(name),
        Value::String(_) => Err(D::Error::custom(format!(
            "field `{field}`: the model name is empty"
        ))),
        other => Err(D::Error::custom(format!(
            "field `{field}`: expected a model name (string), found {}",
            describe(&other)
        ))),
    }
}

fn model_a<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    model_name(deserializer, "model_a")
}

fn model_b<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    model_name(deserializer, "model_b")
}

fn winner<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Outcome, D::Error> {
    let value = Value::deserialize(deserializer)?;
    match value.as_str() {
        Some("model_a") => Ok(Outcome::AWins),
        Some("model_b") => Ok(Outcome::BWins),
        Some("tie") => Ok(Outcome::Tie),
        Some("tie (bothbad)") => Ok(Outcome::BothBad),
        _ => Err(D::Error::custom(format!(
            "field `winner`: expected \"model_a\", \"model_b\", \"tie\" or \"tie (bothbad)\", found {}",
            describe(&value)
        ))),
    }
}

impl From<RawBattle> for Battle {
    fn from(raw: RawBattle) -> Battle {
        Battle::new(raw.model_a, raw.model_b, raw.winner)
    }
}

/// Turns a serde_json error into one that names line and field. `line_offset` is added to the
/// line serde_json reports (for JSON Lines, where each line is parsed alone).
fn located(error: &serde_json::Error, line: usize, column: usize) -> BattlesError {
    let full = error.to_string();
    // serde_json appends " at line L column C"; the position is reported separately.
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    };
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field `"))
        .map(str::to_string);
    let message = match message.find("field `").zip(message.find("`: ")) {
        Some((0, end)) => message[end + 3..].to_string(),
        _ if message.starts_with("missing field `") => "the field is missing".to_string(),
        _ => message,
    };
    BattlesError {
        line,
        column,
        field,
        message,
    }
}

/// Parses battles from text: a JSON array when the first non-blank character is `[`, JSON Lines
/// otherwise (blank lines are skipped).
pub fn parse_battles(text: &str) -> Result<Vec<Battle>, BattlesError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('[') {
        let raw: Vec<RawBattle> = serde_json::from_str(text)
            .map_err(|error| located(&error, error.line(), error.column()))?;
        return Ok(raw.into_iter().map(Battle::from).collect());
    }
    let mut battles = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawBattle = serde_json::from_str(line)
            .map_err(|error| located(&error, index + 1, error.column()))?;
        battles.push(raw.into());
    }
    Ok(battles)
}

/// Reads battles from any reader (see [`parse_battles`]).
pub fn read_battles(mut reader: impl Read) -> Result<Vec<Battle>, BattlesError> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|error| BattlesError {
            line: 0,
            column: 0,
            field: None,
            message: format!("could not read the battles: {error}"),
        })?;
    parse_battles(&text)
}

/// Reads a battles file (see [`parse_battles`]).
pub fn read_battles_file(path: &Path) -> Result<Vec<Battle>, BattlesError> {
    let file = std::fs::File::open(path).map_err(|error| BattlesError {
        line: 0,
        column: 0,
        field: None,
        message: format!("could not open {}: {error}", path.display()),
    })?;
    read_battles(io::BufReader::new(file))
}

/// The Arena spelling of an outcome.
pub fn winner_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::AWins => "model_a",
        Outcome::BWins => "model_b",
        Outcome::Tie => "tie",
        Outcome::BothBad => "tie (bothbad)",
    }
}

/// Writes battles as Arena JSON Lines (`model_a`, `model_b`, `winner`).
pub fn write_battles_jsonl(battles: &[Battle], mut writer: impl Write) -> io::Result<()> {
    for battle in battles {
        let record = serde_json::json!({
            "model_a": battle.model_a,
            "model_b": battle.model_b,
            "winner": winner_label(battle.outcome),
        });
        serde_json::to_writer(&mut writer, &record)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_lines_and_ignores_other_fields() {
        let text = r#"{"model_a": "x", "model_b": "y", "winner": "model_a", "judge": "j", "turn": 1}

{"model_a": "y", "model_b": "x", "winner": "tie (bothbad)", "conversation_a": [{"role": "user"}]}
{"model_a": "x", "model_b": "y", "winner": "tie"}
{"model_a": "x", "model_b": "y", "winner": "model_b"}
"#;
        let battles = parse_battles(text).unwrap();
        let outcomes: Vec<Outcome> = battles.iter().map(|b| b.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                Outcome::AWins,
                Outcome::BothBad,
                Outcome::Tie,
                Outcome::BWins
            ]
        );
        assert_eq!(battles[1].model_a, "y");
    }

    #[test]
    fn reads_a_json_array() {
        let text = r#"[
  {"model_a": "x", "model_b": "y", "winner": "model_b"},
  {"model_a": "y", "model_b": "x", "winner": "model_a"}
]"#;
        assert_eq!(parse_battles(text).unwrap().len(), 2);
    }

    #[test]
    fn bad_winner_names_line_and_field() {
        let text = "{\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"model_a\"}\n\
                    {\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"draw\"}\n";
        let error = parse_battles(text).unwrap_err();
        assert_eq!(error.line, 2);
        assert_eq!(error.field.as_deref(), Some("winner"));
        assert!(error.message.contains("\"draw\""), "{error}");
        assert!(
            error.to_string().starts_with("line 2, field `winner`: "),
            "{error}"
        );
    }

    #[test]
    fn missing_and_mistyped_fields_name_line_and_field() {
        let error = parse_battles("[\n{\"model_a\": \"x\", \"winner\": \"tie\"}\n]").unwrap_err();
        assert_eq!(error.line, 2);
        assert_eq!(error.field.as_deref(), Some("model_b"), "{error}");
        assert_eq!(
            error.to_string(),
            "line 2, field `model_b`: the field is missing"
        );
        let error =
            parse_battles("{\"model_a\": 3, \"model_b\": \"y\", \"winner\": \"tie\"}").unwrap_err();
        assert_eq!(error.line, 1);
        assert_eq!(error.field.as_deref(), Some("model_a"));
        assert!(error.message.contains("the number 3"), "{error}");
        let error = parse_battles("{\"model_a\": \"x\",").unwrap_err();
        assert_eq!((error.line, error.field.clone()), (1, None), "{error}");
    }

    #[test]
    fn written_battles_read_back() {
        let battles = vec![
            Battle::new("a \"quoted\"", "b", Outcome::BothBad),
            Battle::new("b", "a \"quoted\"", Outcome::AWins),
        ];
        let mut buffer = Vec::new();
        write_battles_jsonl(&battles, &mut buffer).unwrap();
        assert_eq!(
            parse_battles(std::str::from_utf8(&buffer).unwrap()).unwrap(),
            battles
        );
    }
}
