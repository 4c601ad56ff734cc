//! Reading and writing Chatbot Arena battle files: a JSON array of records or JSON Lines, each with
//! `model_a`, `model_b` and `winner` ∈ `model_a` / `model_b` / `tie` / `tie (bothbad)`. Other fields
//! (`judge`, `conversation_a`, `tstamp`, …) are ignored. An error names the line and the field.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

use crate::aggregate::Fnv1a;
use crate::categories::{is_english, tag_prompt, CategoryIndex};
use crate::dedup::prompt_key;
use crate::model::{Battle, BattleStyle, ModelName, Outcome, StyleFeatures};
use crate::style::style_features;

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

/// A model name as written in the file: borrowed from the line when it has no escapes. An empty
/// name or a value of another type is an error naming the field and what was found.
fn model_name<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &'static str,
) -> Result<Cow<'de, str>, D::Error> {
    struct Name(&'static str);
    impl Name {
        fn found<E: serde::de::Error, T>(&self, what: String) -> Result<T, E> {
            Err(E::custom(format!(
                "field `{}`: expected a model name (string), found {what}",
                self.0
            )))
        }
        fn checked<'a, E: serde::de::Error>(&self, name: Cow<'a, str>) -> Result<Cow<'a, str>, E> {
            if name.trim().is_empty() {
                Err(E::custom(format!(
                    "field `{}`: the model name is empty",
                    self.0
                )))
            } else {
                Ok(name)
            }
        }
    }
    impl<'de> serde::de::Visitor<'de> for Name {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a model name (string)")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            self.checked(Cow::Borrowed(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.checked(Cow::Owned(v.to_string()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            self.checked(Cow::Owned(v))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.found(format!("the boolean {v}"))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.found(format!("the number {v}"))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.found(format!("the number {v}"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.found(format!("the number {}", describe(&Value::from(v))))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.found("null".to_string())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.found("null".to_string())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            self.found("an array".to_string())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            self.found("an object".to_string())
        }
    }
    deserializer.deserialize_any(Name(field))
}

fn model_a<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    model_name(deserializer, "model_a").map(Cow::into_owned)
}

fn model_b<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    model_name(deserializer, "model_b").map(Cow::into_owned)
}

fn borrowed_model_a<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'de, str>, D::Error> {
    model_name(deserializer, "model_a")
}

fn borrowed_model_b<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'de, str>, D::Error> {
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
/// otherwise (blank lines are skipped; a UTF-8 byte-order mark is skipped). See [`read_battles`].
pub fn parse_battles(text: &str) -> Result<Vec<Battle>, BattlesError> {
    read_battles(text.as_bytes())
}

/// Reads battles from any reader without holding its text: JSON Lines a line at a time, a JSON array
/// element by element (serde reads it from the stream), so a battles file of gigabytes costs the
/// battles' memory, not the file's. Errors name the line (and the field where one is at fault).
pub fn read_battles(reader: impl Read) -> Result<Vec<Battle>, BattlesError> {
    let mut reader = io::BufReader::new(reader);
    let unreadable = |line: usize, error: io::Error| BattlesError {
        line,
        column: 0,
        field: None,
        message: format!("could not read the battles: {error}"),
    };
    // The first non-blank byte says which shape; a UTF-8 byte-order mark is skipped, and the blank
    // lines before it are counted.
    let mut number = 0;
    let is_array = loop {
        let buffer = reader.fill_buf().map_err(|e| unreadable(1, e))?;
        let Some(&first) = buffer.first() else {
            return Ok(Vec::new());
        };
        if buffer.starts_with("\u{feff}".as_bytes()) {
            reader.consume(3);
        } else if first.is_ascii_whitespace() {
            number += usize::from(first == b'\n');
            reader.consume(1);
        } else {
            break first == b'[';
        }
    };
    if is_array {
        let raw: Vec<RawBattle> = serde_json::from_reader(reader)
            .map_err(|error| located(&error, error.line(), error.column()))?;
        return Ok(raw.into_iter().map(Battle::from).collect());
    }
    let mut battles = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(|e| unreadable(number + 1, e))?
            == 0
        {
            return Ok(battles);
        }
        number += 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let raw: RawBattle = serde_json::from_slice(&line)
            .map_err(|error| located(&error, number, error.column()))?;
        battles.push(raw.into());
    }
}

/// Reads a battles file (see [`parse_battles`]).
pub fn read_battles_file(path: &Path) -> Result<Vec<Battle>, BattlesError> {
    let file = std::fs::File::open(path).map_err(|error| BattlesError {
        line: 0,
        column: 0,
        field: None,
        message: format!("could not open {}: {error}", path.display()),
    })?;
    read_battles(file)
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

/// One turn of an Arena conversation (`conversation_a` / `conversation_b`).
#[derive(Deserialize)]
struct Turn {
    role: String,
    #[serde(default)]
    content: Value,
}

impl Turn {
    fn text(&self) -> &str {
        self.content.as_str().unwrap_or("")
    }
}

/// The sum of the values of a JSON object of counts (`{"h1": 2, "h2": 1}` is 3), read without
/// allocating its keys: Arena files carry six such objects per battle.
#[derive(Default, Clone, Copy)]
struct SummedCounts(f64);

impl<'de> Deserialize<'de> for SummedCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SummedCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of counts")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SummedCounts, A::Error> {
                let mut sum = 0.0;
                while let Some((_, count)) =
                    map.next_entry::<serde::de::IgnoredAny, Option<f64>>()?
                {
                    sum += count.unwrap_or(0.0);
                }
                Ok(SummedCounts(sum))
            }
            fn visit_unit<E>(self) -> Result<SummedCounts, E> {
                Ok(SummedCounts(0.0))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Arena's precomputed style counts (`conv_metadata`), used when the texts are absent.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConversationMetadata {
    sum_assistant_a_tokens: Option<f64>,
    sum_assistant_b_tokens: Option<f64>,
    header_count_a: SummedCounts,
    header_count_b: SummedCounts,
    list_count_a: SummedCounts,
    list_count_b: SummedCounts,
    bold_count_a: SummedCounts,
    bold_count_b: SummedCounts,
}

#[derive(Deserialize)]
struct RawArenaBattle<'a> {
    #[serde(borrow, deserialize_with = "borrowed_model_a")]
    model_a: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "borrowed_model_b")]
    model_b: Cow<'a, str>,
    #[serde(deserialize_with = "winner")]
    winner: Outcome,
    #[serde(default)]
    conversation_a: Option<Vec<Turn>>,
    #[serde(default)]
    conversation_b: Option<Vec<Turn>>,
    #[serde(default)]
    conv_metadata: Option<ConversationMetadata>,
    #[serde(default)]
    category: Option<Value>,
    #[serde(default)]
    language: Option<Value>,
    #[serde(default)]
    tstamp: Option<Value>,
    /// LMArena's LLM-judged tags; only the hard-prompt criteria are read.
    #[serde(default)]
    category_tag: Option<CategoryTag>,
}

/// `category_tag` of a public Arena record: `{"criteria_v0.1": {"specificity": true, …}, …}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct CategoryTag {
    #[serde(rename = "criteria_v0.1")]
    criteria: Option<std::collections::BTreeMap<String, Value>>,
}

impl CategoryTag {
    /// Whether the judged criteria make the prompt hard (six or more of the seven are true).
    fn is_hard(&self) -> bool {
        self.criteria.as_ref().is_some_and(|criteria| {
            crate::hard_prompt::CRITERIA
                .iter()
                .filter(|(key, _)| criteria.get(*key).and_then(Value::as_bool) == Some(true))
                .count()
                >= crate::hard_prompt::HARD_THRESHOLD
        })
    }
}

/// Battles with what the per-category, de-duplicated and history views need, as read from an
/// Arena file: the prompt of each battle (its key, for de-duplication), its categories and its
/// time. Style features are filled from the response texts (`conversation_a` / `_b`) or from
/// Arena's `conv_metadata` counts, when the file has either.
#[derive(Clone, Debug, Default)]
pub struct ArenaBattles {
    pub battles: Vec<Battle>,
    /// `prompt_keys[i]`: battle `i`'s prompt key ([`crate::dedup::prompt_key`] of its user turns);
    /// empty when no battle carries a conversation.
    pub prompt_keys: Vec<Option<u64>>,
    pub categories: CategoryIndex,
    /// `timestamps[i]`: battle `i`'s `tstamp` in seconds since the epoch; empty when none has one.
    pub timestamps: Vec<Option<f64>>,
    /// The model names read so far, each held once.
    names: HashMap<Box<str>, ModelName, BuildHasherDefault<Fnv1a>>,
}

impl ArenaBattles {
    /// The shared copy of a model name.
    fn intern(&mut self, name: &str) -> ModelName {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared = ModelName::from(name);
        self.names.insert(name.into(), shared.clone());
        shared
    }

    /// Appends the battles of `other` (read from the lines after this one's), with their prompts,
    /// times and categories. Both must be [`finish`](ArenaBattles::finish)ed.
    fn append(&mut self, other: ArenaBattles) {
        let offset = self.battles.len();
        let total = offset + other.battles.len();
        // A per-battle column is empty while no battle has a value, and then as long as the battles.
        fn join<T: Clone>(
            column: &mut Vec<Option<T>>,
            theirs: Vec<Option<T>>,
            offset: usize,
            total: usize,
        ) {
            if theirs.is_empty() && column.is_empty() {
                return;
            }
            column.resize(offset, None);
            column.extend(theirs);
            column.resize(total, None);
        }
        join(&mut self.prompt_keys, other.prompt_keys, offset, total);
        join(&mut self.timestamps, other.timestamps, offset, total);
        let shift = u32::try_from(offset).expect("fewer than 4 billion battles");
        for (name, members) in other.categories.names.iter().zip(other.categories.members) {
            self.categories
                .extend_shifted(name, members.into_iter().map(|m| m + shift));
        }
        for (name, shared) in other.names {
            self.names.entry(name).or_insert(shared);
        }
        self.battles.extend(other.battles);
    }

    /// Keeps the battles whose `keep` entry is true, with their prompts, times and categories
    /// (categories left empty are dropped).
    pub fn retain(&mut self, keep: &[bool]) {
        let mut new_index = vec![u32::MAX; keep.len()];
        let mut next = 0u32;
        for (index, &kept) in keep.iter().enumerate() {
            if kept {
                new_index[index] = next;
                next += 1;
            }
        }
        let mut flags = keep.iter();
        self.battles.retain(|_| *flags.next().unwrap_or(&true));
        if !self.prompt_keys.is_empty() {
            let mut flags = keep.iter();
            self.prompt_keys.retain(|_| *flags.next().unwrap_or(&true));
        }
        if !self.timestamps.is_empty() {
            let mut flags = keep.iter();
            self.timestamps.retain(|_| *flags.next().unwrap_or(&true));
        }
        let mut categories = CategoryIndex::default();
        for (name, members) in self.categories.names.iter().zip(&self.categories.members) {
            for &member in members {
                if keep.get(member as usize).copied().unwrap_or(true) {
                    categories.add(name, new_index[member as usize] as usize);
                }
            }
        }
        self.categories = categories;
    }
}

fn style_from_metadata(meta: &ConversationMetadata) -> Option<BattleStyle> {
    Some(style_from_counts([
        meta.sum_assistant_a_tokens?,
        meta.sum_assistant_b_tokens?,
        meta.header_count_a.0,
        meta.header_count_b.0,
        meta.list_count_a.0,
        meta.list_count_b.0,
        meta.bold_count_a.0,
        meta.bold_count_b.0,
    ]))
}

/// Style features from Arena's `conv_metadata` counts, in its order: answer tokens of A and B,
/// then headers, lists and bold of A and B (each count object summed; negatives count as zero).
pub fn style_from_counts(counts: [f64; 8]) -> BattleStyle {
    let count = |value: f64| value.max(0.0) as u32;
    BattleStyle {
        a: StyleFeatures {
            length: count(counts[0]),
            headers: count(counts[2]),
            lists: count(counts[4]),
            bold: count(counts[6]),
        },
        b: StyleFeatures {
            length: count(counts[1]),
            headers: count(counts[3]),
            lists: count(counts[5]),
            bold: count(counts[7]),
        },
    }
}

/// One battle from a columnar source (a Parquet file read by column): what the JSON Lines reader
/// takes from a record without conversations.
#[derive(Clone, Copy, Debug)]
pub struct ArenaRecord<'a> {
    pub model_a: &'a str,
    pub model_b: &'a str,
    /// `model_a`, `model_b`, `tie` or `tie (bothbad)`.
    pub winner: &'a str,
    pub style: Option<BattleStyle>,
    /// LMArena's judged criteria make the prompt hard.
    pub hard: bool,
    pub category: Option<&'a str>,
    pub language: Option<&'a str>,
    pub tstamp: Option<f64>,
}

impl ArenaBattles {
    /// Adds one battle read by column; the error (naming the field) is the JSON reader's for the
    /// same values. Call [`ArenaBattles::finish`] after the last.
    pub fn push_record(&mut self, record: ArenaRecord<'_>) -> Result<(), String> {
        for (field, name) in [("model_a", record.model_a), ("model_b", record.model_b)] {
            if name.trim().is_empty() {
                return Err(format!("field `{field}`: the model name is empty"));
            }
        }
        let outcome = match record.winner {
            "model_a" => Outcome::AWins,
            "model_b" => Outcome::BWins,
            "tie" => Outcome::Tie,
            "tie (bothbad)" => Outcome::BothBad,
            other => {
                return Err(format!(
                    "field `winner`: expected \"model_a\", \"model_b\", \"tie\" or \"tie (bothbad)\", found {other:?}"
                ))
            }
        };
        let index = self.battles.len();
        let (model_a, model_b) = (self.intern(record.model_a), self.intern(record.model_b));
        let mut battle = Battle::new(model_a, model_b, outcome);
        battle.style = record.style;
        if let Some(category) = record.category.map(str::trim).filter(|c| !c.is_empty()) {
            self.categories.add(category, index);
        }
        if record
            .language
            .is_some_and(|l| !l.trim().is_empty() && !is_english(l))
        {
            self.categories.add(crate::categories::NON_ENGLISH, index);
        }
        if record.hard {
            self.categories.add(crate::hard_prompt::HARD_PROMPT, index);
        }
        if let Some(tstamp) = record.tstamp {
            if self.timestamps.len() < index {
                self.timestamps.resize(index, None);
            }
            self.timestamps.push(Some(tstamp));
        }
        self.battles.push(battle);
        Ok(())
    }
}

fn assistant_style(turns: &[Turn]) -> StyleFeatures {
    let text: Vec<&str> = turns
        .iter()
        .filter(|t| t.role == "assistant")
        .map(Turn::text)
        .collect();
    style_features(&text.join("\n"))
}

/// Adds one parsed record to the collection.
fn push_arena(out: &mut ArenaBattles, raw: RawArenaBattle) {
    let index = out.battles.len();
    let (model_a, model_b) = (out.intern(&raw.model_a), out.intern(&raw.model_b));
    let mut battle = Battle::new(model_a, model_b, raw.winner);
    let user_turns: Option<Vec<&str>> = raw.conversation_a.as_ref().map(|turns| {
        turns
            .iter()
            .filter(|t| t.role == "user")
            .map(Turn::text)
            .collect()
    });
    battle.style = match (&raw.conversation_a, &raw.conversation_b) {
        (Some(a), Some(b)) if a.iter().chain(b).any(|t| t.role == "assistant") => {
            Some(BattleStyle {
                a: assistant_style(a),
                b: assistant_style(b),
            })
        }
        _ => raw.conv_metadata.as_ref().and_then(style_from_metadata),
    };
    if let Some(turns) = user_turns.as_ref().filter(|t| !t.is_empty()) {
        if out.prompt_keys.len() < index {
            out.prompt_keys.resize(index, None);
        }
        out.prompt_keys.push(Some(prompt_key(turns)));
    }
    let language = raw.language.as_ref().and_then(Value::as_str);
    if let Some(category) = raw.category.as_ref().and_then(Value::as_str) {
        if !category.trim().is_empty() {
            out.categories.add(category.trim(), index);
        }
    }
    if let Some(turns) = &user_turns {
        for tag in tag_prompt(turns, language) {
            out.categories.add(tag, index);
        }
    } else if language.is_some_and(|l| !l.trim().is_empty() && !is_english(l)) {
        out.categories.add(crate::categories::NON_ENGLISH, index);
    }
    if raw.category_tag.as_ref().is_some_and(CategoryTag::is_hard) {
        out.categories.add(crate::hard_prompt::HARD_PROMPT, index);
    }
    let tstamp = raw.tstamp.as_ref().and_then(|t| match t {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    if let Some(tstamp) = tstamp {
        if out.timestamps.len() < index {
            out.timestamps.resize(index, None);
        }
        out.timestamps.push(Some(tstamp));
    }
    out.battles.push(battle);
}

impl ArenaBattles {
    /// Adds one record given as a JSON value (a row of a Parquet file, say); `line` is reported in
    /// errors. Call [`ArenaBattles::finish`] after the last.
    pub fn push_value(&mut self, row: Value, line: usize) -> Result<(), BattlesError> {
        let raw = RawArenaBattle::deserialize(&row).map_err(|error| located(&error, line, 0))?;
        push_arena(self, raw);
        Ok(())
    }

    /// Pads the per-battle columns to the number of battles.
    pub fn finish(&mut self) {
        let n = self.battles.len();
        if !self.prompt_keys.is_empty() {
            self.prompt_keys.resize(n, None);
        }
        if !self.timestamps.is_empty() {
            self.timestamps.resize(n, None);
        }
    }
}

/// Parses an Arena battles file with its prompts, categories, times and style features (see
/// [`ArenaBattles`]); the same formats as [`parse_battles`].
pub fn parse_arena_battles(text: &str) -> Result<ArenaBattles, BattlesError> {
    read_arena_battles(io::Cursor::new(text.as_bytes()))
}

/// Reads Arena battles from a reader: a JSON array (read whole) or JSON Lines, read line by line
/// so that a large file is never held in memory as text.
pub fn read_arena_battles(reader: impl BufRead + Send) -> Result<ArenaBattles, BattlesError> {
    read_arena_battles_sized(reader, None)
}

/// [`read_arena_battles`] knowing the input's size in bytes, so the battles can be allocated once.
fn read_arena_battles_sized(
    mut reader: impl BufRead + Send,
    size: Option<u64>,
) -> Result<ArenaBattles, BattlesError> {
    let unreadable = |error: io::Error| BattlesError {
        line: 0,
        column: 0,
        field: None,
        message: format!("could not read the battles: {error}"),
    };
    // Skip a byte-order mark and leading white space to see whether this is an array.
    let first = loop {
        let buffer = reader.fill_buf().map_err(unreadable)?;
        if buffer.is_empty() {
            break None;
        }
        if buffer.starts_with("\u{feff}".as_bytes()) {
            reader.consume(3);
            continue;
        }
        match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(at) => break Some(buffer[at]),
            None => {
                let length = buffer.len();
                reader.consume(length);
            }
        }
    };
    let mut out = ArenaBattles::default();
    if first == Some(b'[') {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(unreadable)?;
        let raw: Vec<RawArenaBattle> = serde_json::from_str(&text)
            .map_err(|error| located(&error, error.line(), error.column()))?;
        for record in raw {
            push_arena(&mut out, record);
        }
    } else {
        read_json_lines(reader, &mut out, size)?;
    }
    out.finish();
    Ok(out)
}

/// Bytes of JSON Lines parsed as one block (a block ends at the end of a line).
const BLOCK_BYTES: usize = 4 << 20;

/// Reads JSON Lines in blocks of whole lines and parses the blocks on all cores (with the
/// `parallel` feature), appending them in file order: the result is the one a line-by-line read
/// gives, and at most a few blocks of text are held at a time.
fn read_json_lines(
    mut reader: impl BufRead + Send,
    out: &mut ArenaBattles,
    size: Option<u64>,
) -> Result<(), BattlesError> {
    #[cfg(feature = "parallel")]
    let in_flight = 2 * rayon::current_num_threads().max(1);
    #[cfg(not(feature = "parallel"))]
    let in_flight = 1;
    // Lines before the current batch of blocks; a block's errors name lines counted from its start.
    let mut lines_before = 0;
    // Block buffers are reused: a fresh 4 MB buffer is a fresh mapping whose pages fault in one by one.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut current = read_batch(&mut reader, in_flight, &mut spare)?;
    while !current.is_empty() {
        // The next batch is read while this one is parsed.
        #[cfg(feature = "parallel")]
        let (parsed, next) = {
            use rayon::prelude::*;
            rayon::join(
                || {
                    current
                        .par_iter()
                        .map(|block| parse_block(block))
                        .collect::<Vec<_>>()
                },
                || read_batch(&mut reader, in_flight, &mut spare),
            )
        };
        #[cfg(not(feature = "parallel"))]
        let (parsed, next) = {
            let parsed: Vec<_> = current.iter().map(|block| parse_block(block)).collect();
            (parsed, read_batch(&mut reader, in_flight, &mut spare))
        };
        if let (Some(size), Some(Ok((first, _)))) = (size, parsed.first()) {
            // After the first blocks: reserve for the whole file at their bytes per battle (with a
            // little to spare), so the battles are moved once instead of copied at every doubling.
            if out.battles.is_empty() && !first.battles.is_empty() {
                let bytes: usize = current.iter().map(Vec::len).sum();
                let battles: usize = parsed
                    .iter()
                    .filter_map(|p| p.as_ref().ok())
                    .map(|(b, _)| b.battles.len())
                    .sum();
                let expected = (size as f64 / bytes as f64 * battles as f64 * 1.02) as usize;
                out.battles.reserve(expected.min(1 << 32));
            }
        }
        for block in parsed {
            match block {
                Ok((battles, lines)) => {
                    out.append(battles);
                    lines_before += lines;
                }
                Err(mut error) => {
                    error.line += lines_before;
                    return Err(error);
                }
            }
        }
        spare.append(&mut current);
        current = next?;
    }
    Ok(())
}

/// Up to `count` blocks, in buffers taken from `spare` where it has some.
fn read_batch(
    reader: &mut impl BufRead,
    count: usize,
    spare: &mut Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, BattlesError> {
    let mut blocks = Vec::with_capacity(count);
    while blocks.len() < count {
        let mut block = spare.pop().unwrap_or_default();
        read_block(reader, &mut block)?;
        if block.is_empty() {
            break;
        }
        blocks.push(block);
    }
    Ok(blocks)
}

/// The next block of whole lines into `block` (about [`BLOCK_BYTES`]; empty at the end of the input).
fn read_block(reader: &mut impl BufRead, block: &mut Vec<u8>) -> Result<(), BattlesError> {
    let unreadable = |error: io::Error| BattlesError {
        line: 0,
        column: 0,
        field: None,
        message: format!("could not read the battles: {error}"),
    };
    block.clear();
    block.reserve(BLOCK_BYTES + 4096);
    while block.len() < BLOCK_BYTES {
        let buffer = reader.fill_buf().map_err(unreadable)?;
        if buffer.is_empty() {
            return Ok(());
        }
        let take = buffer.len().min(BLOCK_BYTES - block.len());
        block.extend_from_slice(&buffer[..take]);
        reader.consume(take);
    }
    // Finish the line the block stopped in.
    if block.last() != Some(&b'\n') {
        reader.read_until(b'\n', block).map_err(unreadable)?;
    }
    Ok(())
}

/// Parses a block of whole JSON Lines: its battles and its number of lines, or the first error
/// (its line counted from 1 at the block's first line).
fn parse_block(block: &[u8]) -> Result<(ArenaBattles, usize), BattlesError> {
    let mut out = ArenaBattles::default();
    // Arena lines with style metadata are ~350 bytes; a guess that is off only costs a regrowth.
    out.battles.reserve(block.len() / 256);
    // One check of the whole block (fast on ASCII) spares serde_json a check of every string.
    let text = std::str::from_utf8(block).map_err(|error| {
        let line = 1 + block[..error.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        let line_start = block[..error.valid_up_to()]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        BattlesError {
            line,
            column: error.valid_up_to() - line_start + 1,
            field: None,
            message: "the line is not valid UTF-8".to_string(),
        }
    })?;
    let mut lines = 0;
    for line in text.split('\n') {
        lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawArenaBattle =
            serde_json::from_str(line).map_err(|error| located(&error, lines, error.column()))?;
        push_arena(&mut out, raw);
    }
    // `split` yields an empty piece after a final newline, which is not a line.
    if block.last() == Some(&b'\n') {
        lines -= 1;
    }
    out.finish();
    Ok((out, lines))
}

/// Reads an Arena battles file with its prompts and categories (see [`read_arena_battles`]).
pub fn read_arena_battles_file(path: &Path) -> Result<ArenaBattles, BattlesError> {
    let file = std::fs::File::open(path).map_err(|error| BattlesError {
        line: 0,
        column: 0,
        field: None,
        message: format!("could not open {}: {error}", path.display()),
    })?;
    let size = file.metadata().ok().map(|m| m.len());
    read_arena_battles_sized(io::BufReader::with_capacity(1 << 20, file), size)
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

    /// Blank lines before the first record are counted in the lines an error names, a byte-order
    /// mark and blank input are nothing, and an array may start after blanks.
    #[test]
    fn leading_blanks_and_a_byte_order_mark() {
        let battle = |winner: &str| {
            format!("{{\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"{winner}\"}}")
        };
        let read = |text: &str| read_battles(text.as_bytes());
        let one = read(&format!("\u{feff}\n\n  {}\r\n", battle("model_b"))).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].outcome, Outcome::BWins);
        let array = read(&format!(" \n [{},\n {}]", battle("tie"), battle("model_a"))).unwrap();
        let outcomes: Vec<Outcome> = array.iter().map(|b| b.outcome).collect();
        assert_eq!(outcomes, vec![Outcome::Tie, Outcome::AWins]);
        let error = read(&format!("\n\n{}\n", battle("draw"))).unwrap_err();
        assert_eq!(
            (error.line, error.field.as_deref()),
            (3, Some("winner")),
            "{error}"
        );
        assert!(read("").unwrap().is_empty());
        assert!(read("  \n \r\n").unwrap().is_empty());
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

    #[test]
    fn arena_records_carry_prompts_categories_times_and_style() {
        let text = r#"{"model_a": "x", "model_b": "y", "winner": "model_a", "tstamp": 1700000000.5, "language": "English", "conversation_a": [{"role": "user", "content": "Write a Python function."}, {"role": "assistant", "content": "- one\n- two"}], "conversation_b": [{"role": "user", "content": "Write a Python function."}, {"role": "assistant", "content": "ok"}]}
{"model_a": "y", "model_b": "x", "winner": "tie", "category": "writing", "language": "German"}
{"model_a": "x", "model_b": "y", "winner": "model_b", "conv_metadata": {"sum_assistant_a_tokens": 120, "sum_assistant_b_tokens": 40, "header_count_a": {"h1": 1, "h2": 2}, "header_count_b": {}, "list_count_a": {"ordered": 3, "unordered": 0}, "list_count_b": {}, "bold_count_a": {"**": 2, "__": 0}, "bold_count_b": {}}}
"#;
        let file = parse_arena_battles(text).unwrap();
        assert_eq!(file.battles.len(), 3);
        assert_eq!(
            file.prompt_keys,
            vec![Some(prompt_key(&["Write a Python function."])), None, None]
        );
        assert_eq!(file.timestamps, vec![Some(1_700_000_000.5), None, None]);
        assert_eq!(file.categories.members_of("code"), Some(&[0u32][..]));
        assert_eq!(file.categories.members_of("writing"), Some(&[1u32][..]));
        assert_eq!(file.categories.members_of("non-english"), Some(&[1u32][..]));
        let style = file.battles[0].style.unwrap();
        assert_eq!((style.a.lists, style.a.length, style.b.length), (2, 11, 2));
        assert!(file.battles[1].style.is_none());
        let style = file.battles[2].style.unwrap();
        assert_eq!(
            (
                style.a.length,
                style.a.headers,
                style.a.lists,
                style.a.bold,
                style.b.length
            ),
            (120, 3, 3, 2, 40)
        );
        // The plain reader reads the same battles.
        let plain = parse_battles(text).unwrap();
        assert_eq!(plain.len(), 3);
    }

    #[test]
    fn lmarena_judged_criteria_make_the_hard_prompt_category() {
        // Six of seven criteria true: hard; five: not; a record without the tag: not.
        let criteria = |true_count: usize| {
            let fields: Vec<String> = crate::hard_prompt::CRITERIA
                .iter()
                .enumerate()
                .map(|(i, (key, _))| format!("\"{key}\": {}", i < true_count))
                .collect();
            format!(
                "{{\"criteria_v0.1\": {{{}}}, \"if_v0.1\": {{\"if\": true, \"score\": 4}}}}",
                fields.join(", ")
            )
        };
        let text = format!(
            "{{\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"model_a\", \"category_tag\": {}}}\n\
             {{\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"model_b\", \"category_tag\": {}}}\n\
             {{\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"tie\"}}\n\
             {{\"model_a\": \"y\", \"model_b\": \"x\", \"winner\": \"tie\", \"category_tag\": {}}}\n",
            criteria(6),
            criteria(5),
            criteria(7)
        );
        let file = parse_arena_battles(&text).unwrap();
        assert_eq!(
            file.categories.members_of(crate::hard_prompt::HARD_PROMPT),
            Some(&[0u32, 3][..])
        );
    }

    #[test]
    fn a_file_of_many_blocks_reads_as_one_with_its_lines_counted() {
        // About 11 MB: the reader parses it in blocks of 4 MB on several threads.
        let lines = 40_000;
        let mut text = String::new();
        for k in 0..lines {
            let category = if k % 7 == 0 {
                ", \"category\": \"seventh\""
            } else {
                ""
            };
            let tstamp = if k % 1000 == 999 {
                format!(", \"tstamp\": {k}")
            } else {
                String::new()
            };
            let padding = "x".repeat(200);
            text.push_str(&format!(
                "{{\"model_a\": \"m{}\", \"model_b\": \"m{}\", \"winner\": \"model_a\", \"note\": \"{padding}\"{category}{tstamp}}}\n",
                k % 5,
                (k + 1) % 5
            ));
            if k == 20_000 {
                text.push('\n');
            }
        }
        assert!(text.len() > 2 * BLOCK_BYTES);
        let file = parse_arena_battles(&text).unwrap();
        assert_eq!(file.battles.len(), lines);
        assert_eq!(file.battles[12_345].model_a, "m0");
        assert_eq!(file.battles[12_345].model_b, "m1");
        let seventh: Vec<u32> = (0..lines as u32).filter(|k| k % 7 == 0).collect();
        assert_eq!(file.categories.members_of("seventh"), Some(&seventh[..]));
        assert_eq!(file.timestamps.len(), lines);
        assert_eq!(file.timestamps[39_999], Some(39_999.0));
        assert_eq!(file.timestamps.iter().flatten().count(), 40);
        // The names are shared: one copy per block at most, not one per battle.
        assert_eq!(file.names.len(), 5);

        // An error in a late block names its line of the file (the blank line counts).
        let mut broken: Vec<&str> = text.lines().collect();
        broken[35_000] = "{\"model_a\": \"m0\", \"model_b\": \"m1\", \"winner\": \"draw\"}";
        let error = parse_arena_battles(&(broken.join("\n") + "\n")).unwrap_err();
        assert_eq!(error.line, 35_001);
        assert_eq!(error.field.as_deref(), Some("winner"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named() {
        let mut bytes = b"{\"model_a\": \"x\", \"model_b\": \"y\", \"winner\": \"tie\"}\n".to_vec();
        bytes.extend_from_slice(
            b"{\"model_a\": \"x\xff\", \"model_b\": \"y\", \"winner\": \"tie\"}\n",
        );
        let error = read_arena_battles(io::Cursor::new(bytes)).unwrap_err();
        assert_eq!((error.line, error.column), (2, 15), "{error}");
        assert!(error.message.contains("UTF-8"), "{error}");
    }
}
