//! Imports: pure, streaming parsers of public preference datasets into typed items (a prompt, its
//! responses and the votes between them), which the server stores in one transaction.
//!
//! | format   | a row is                          | gives                                               |
//! |----------|-----------------------------------|-----------------------------------------------------|
//! | hh-rlhf  | `{chosen, rejected}` transcripts   | shared context → prompt, last turns → 2 responses, 1 vote |
//! | trl      | TRL preference row (any variant)  | the same; `model_chosen`/`model_rejected`/`rater`/`created`/`prompt_id` kept when present |
//! | oasst    | one OpenAssistant message tree    | per group of ranked sibling replies, one item and a vote per pair (lower rank wins) |
//! | arena    | one Chatbot Arena battle          | the shared context → prompt, the two last turns → 2 responses, 1 vote by `winner` |
//! | votes    | one row of Moat's `votes` export  | the vote with every recorded field               |
//!
//! Opened by path ([`import_file`]), a file may be JSON Lines or one JSON array of objects, either
//! gzip-compressed, or Parquet (as Hugging Face hosts many of these datasets); all are recognised by
//! their content. Over a reader ([`ImportReader::new`]), input is JSON Lines (or a JSON array for Arena).
//! A malformed row is an error naming its line and field (nothing should then be imported); a
//! well-formed row that gives nothing (e.g. an HH pair whose sides do not share a context) is
//! skipped with a reason in the [`ReadReport`].

use std::collections::VecDeque;
use std::fmt;
use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::pairs::pair_from_object;
use crate::read::{
    json_objects, messages_from_value, normalize_role, open_rows, Fields, ReadError, ReadReport,
    Skipped,
};
use crate::{Choice, Message, Openness, VoteRecord};

/// The formats `moat import --format` accepts (besides the foundation's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportFormat {
    HhRlhf,
    Trl,
    Oasst,
    Arena,
    Votes,
}

impl ImportFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "hh-rlhf" | "hh_rlhf" | "hh" | "anthropic" => Some(ImportFormat::HhRlhf),
            "trl" | "dpo" => Some(ImportFormat::Trl),
            "oasst" | "oasst1" | "openassistant" => Some(ImportFormat::Oasst),
            "arena" | "chatbot-arena" => Some(ImportFormat::Arena),
            "votes" => Some(ImportFormat::Votes),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::HhRlhf => "hh-rlhf",
            ImportFormat::Trl => "trl",
            ImportFormat::Oasst => "oasst",
            ImportFormat::Arena => "arena",
            ImportFormat::Votes => "votes",
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One response to an imported prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportedResponse {
    /// The model that wrote it, or a stand-in naming the source where the dataset does not say
    /// (`hh-rlhf-chosen`, `human` for OpenAssistant's human-written replies, …).
    pub model: String,
    pub openness: Option<Openness>,
    pub text: String,
    /// The response's id in the source, where it has one (OpenAssistant message ids).
    pub source_id: Option<String>,
    /// A multi-turn battle's side: its messages between the item's conversation and `text` (earlier
    /// answers and follow-up questions); empty for a single answer.
    pub history: Vec<Message>,
}

/// One imported vote between two responses of the same item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportedVote {
    /// Index into [`ImportedItem::responses`] of the response shown as "left".
    pub a_index: usize,
    /// Index of the response shown as "right".
    pub b_index: usize,
    /// In terms of a (left) and b (right).
    pub choice: Choice,
    pub rater: Option<String>,
    pub created_ms: Option<i64>,
    /// The vote's id in the source, where it has one (Moat exports).
    pub vote_id: Option<i64>,
    pub source_guess: Option<String>,
    pub source_confidence: Option<i64>,
    pub rationale: Option<String>,
    pub time_on_page_ms: Option<i64>,
    pub assignment_kind: Option<String>,
    /// The completion code of the session that cast the vote (a `votes` export carries it).
    pub completion_code: Option<String>,
}

impl ImportedVote {
    fn new(a_index: usize, b_index: usize, choice: Choice) -> Self {
        ImportedVote {
            a_index,
            b_index,
            choice,
            rater: None,
            created_ms: None,
            vote_id: None,
            source_guess: None,
            source_confidence: None,
            rationale: None,
            time_on_page_ms: None,
            assignment_kind: None,
            completion_code: None,
        }
    }
}

/// A prompt with its responses and the votes between them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportedItem {
    /// The 1-based line (or array element) it came from.
    pub line: u64,
    /// The source's id for the prompt, or `p-` and 16 hex digits of the SHA-256 of the conversation.
    pub prompt_id: String,
    pub conversation: Vec<Message>,
    pub category: Option<String>,
    pub language: Option<String>,
    pub responses: Vec<ImportedResponse>,
    pub votes: Vec<ImportedVote>,
}

impl ImportedItem {
    /// The item's votes as records of `study`, for re-export or for a store that takes records.
    /// Vote ids come from the source where it had them, else from `next_vote_id` (incremented);
    /// a response's openness comes from the source, else from `openness_of(model)`.
    pub fn vote_records(
        &self,
        study: &str,
        openness_of: &dyn Fn(&str) -> Openness,
        next_vote_id: &mut i64,
    ) -> Vec<VoteRecord> {
        self.votes
            .iter()
            .map(|vote| {
                let left = &self.responses[vote.a_index];
                let right = &self.responses[vote.b_index];
                let vote_id = vote.vote_id.unwrap_or(*next_vote_id);
                *next_vote_id = vote_id + 1;
                VoteRecord {
                    vote_id,
                    study: study.to_string(),
                    prompt_id: self.prompt_id.clone(),
                    conversation: self.conversation.clone(),
                    category: self.category.clone(),
                    language: self.language.clone(),
                    left_model: left.model.clone(),
                    left_openness: left.openness.unwrap_or_else(|| openness_of(&left.model)),
                    left_response: left.text.clone(),
                    right_model: right.model.clone(),
                    right_openness: right.openness.unwrap_or_else(|| openness_of(&right.model)),
                    right_response: right.text.clone(),
                    choice: vote.choice,
                    rater: vote.rater.clone().unwrap_or_else(|| "imported".to_string()),
                    created_ms: vote.created_ms.unwrap_or(0),
                    source_guess: vote.source_guess.clone(),
                    source_confidence: vote.source_confidence,
                    rationale: vote.rationale.clone(),
                    time_on_page_ms: vote.time_on_page_ms,
                    assignment_kind: vote
                        .assignment_kind
                        .clone()
                        .unwrap_or_else(|| "imported".to_string()),
                    completion_code: vote.completion_code.clone(),
                    left_history: left.history.clone(),
                    right_history: right.history.clone(),
                }
            })
            .collect()
    }
}

/// `p-` and the first 16 hex digits of SHA-256 over the conversation's JSON: a stable prompt id for
/// datasets without one (identical conversations get the same id).
pub fn content_prompt_id(conversation: &[Message]) -> String {
    let json = serde_json::to_vec(conversation).expect("messages serialize");
    let digest = Sha256::digest(&json);
    format!("p-{}", &hex::encode(digest)[..16])
}

/// Parses the RFC 3339 UTC text Moat writes (`2024-02-29T12:34:56.789Z`, fraction optional, `Z` or
/// `+00:00`) back into milliseconds since the epoch.
pub fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once(['T', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: i64 = clock_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis = match fraction {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{digits:0<3}");
            padded[..3].parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of `record::rfc3339_utc`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis)
}

type Rows = crate::read::ObjectRows;

/// A streaming importer: yields items one at a time and keeps the report.
pub struct ImportReader {
    format: ImportFormat,
    rows: Rows,
    pending: VecDeque<ImportedItem>,
    report: ReadReport,
}

/// Opens a file for import: JSON Lines or a JSON array (gzip-compressed or not), or Parquet.
pub fn import_file(format: ImportFormat, path: &Path) -> Result<ImportReader, ReadError> {
    Ok(ImportReader::from_rows(format, open_rows(path)?))
}

/// Reads a whole file: all items and the report, or the first error.
pub fn read_import(
    format: ImportFormat,
    path: &Path,
) -> Result<(Vec<ImportedItem>, ReadReport), ReadError> {
    let mut reader = import_file(format, path)?;
    let items = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((items, reader.into_report()))
}

impl ImportReader {
    /// Reads from any buffered input (already decompressed; see [`crate::read::maybe_gunzip`]).
    pub fn new(format: ImportFormat, input: Box<dyn BufRead>) -> Result<Self, ReadError> {
        let rows: Rows = match format {
            ImportFormat::Arena => json_objects(input)?,
            _ => Box::new(crate::read::JsonLines::new(input)),
        };
        Ok(ImportReader {
            format,
            rows,
            pending: VecDeque::new(),
            report: ReadReport::default(),
        })
    }

    /// Reads rows from any source of JSON objects (see [`crate::read::open_rows`]).
    pub fn from_rows(format: ImportFormat, rows: crate::read::ObjectRows) -> Self {
        ImportReader {
            format,
            rows,
            pending: VecDeque::new(),
            report: ReadReport::default(),
        }
    }

    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    pub fn into_report(self) -> ReadReport {
        self.report
    }

    fn parse_row(
        &self,
        line: u64,
        object: &Map<String, Value>,
    ) -> Result<Result<Vec<ImportedItem>, String>, ReadError> {
        match self.format {
            ImportFormat::HhRlhf | ImportFormat::Trl => {
                pair_item(self.format, line, object).map(|item| item.map(|item| vec![item]))
            }
            ImportFormat::Oasst => oasst_items(line, object),
            ImportFormat::Arena => arena_item(line, object).map(|item| item.map(|item| vec![item])),
            ImportFormat::Votes => votes_item(line, object).map(|item| Ok(vec![item])),
        }
    }
}

impl Iterator for ImportReader {
    type Item = Result<ImportedItem, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            let (line, object) = match self.rows.next()? {
                Ok(row) => row,
                Err(error) => return Some(Err(error)),
            };
            self.report.rows_read += 1;
            match self.parse_row(line, &object) {
                Ok(Ok(items)) if items.is_empty() => self.report.skipped.push(Skipped {
                    line,
                    reason: "no ranked replies".to_string(),
                }),
                Ok(Ok(items)) => {
                    self.report.imported += items.len() as u64;
                    self.report.votes += items
                        .iter()
                        .map(|item| item.votes.len() as u64)
                        .sum::<u64>();
                    self.pending.extend(items);
                }
                Ok(Err(reason)) => self.report.skipped.push(Skipped { line, reason }),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

fn response(model: impl Into<String>, text: impl Into<String>) -> ImportedResponse {
    ImportedResponse {
        model: model.into(),
        openness: None,
        text: text.into(),
        source_id: None,
        history: Vec::new(),
    }
}

/// TRL and HH-RLHF rows (either shape is accepted by either format name).
fn pair_item(
    format: ImportFormat,
    line: u64,
    object: &Map<String, Value>,
) -> Result<Result<ImportedItem, String>, ReadError> {
    let pair = match pair_from_object(line, object)? {
        Ok(pair) => pair,
        Err(reason) => return Ok(Err(reason)),
    };
    if pair.prompt.is_empty() {
        return Ok(Err(
            "no prompt: the row has neither a `prompt` nor a shared conversation".to_string(),
        ));
    }
    let fields = Fields::new(line, object);
    let stand_in = format.as_str();
    let model_chosen = fields
        .opt_text("model_chosen")?
        .unwrap_or_else(|| format!("{stand_in}-chosen"));
    let model_rejected = fields
        .opt_text("model_rejected")?
        .unwrap_or_else(|| format!("{stand_in}-rejected"));
    let created_ms = match fields.opt_str("created")? {
        Some(text) => Some(parse_rfc3339_utc(text).ok_or_else(|| {
            ReadError::at_field(
                line,
                "created",
                "expected an RFC 3339 UTC time such as 2024-05-01T12:00:00Z",
            )
        })?),
        None => None,
    };
    let mut vote = ImportedVote::new(0, 1, Choice::Left);
    vote.rater = fields.opt_text("rater")?;
    vote.created_ms = created_ms;
    vote.vote_id = fields.opt_i64("vote_id")?;
    let prompt_id = fields
        .opt_text("prompt_id")?
        .unwrap_or_else(|| content_prompt_id(&pair.prompt));
    Ok(Ok(ImportedItem {
        line,
        prompt_id,
        conversation: pair.prompt,
        category: pair.category,
        language: fields.opt_text("language")?,
        responses: vec![
            response(model_chosen, pair.chosen),
            response(model_rejected, pair.rejected),
        ],
        votes: vec![vote],
    }))
}

/// One OpenAssistant tree: `{message_tree_id, prompt: node}` where a node is
/// `{message_id, text, role, lang, rank?, model_name?, replies: [node]}` (a bare root node is accepted).
fn oasst_items(
    line: u64,
    object: &Map<String, Value>,
) -> Result<Result<Vec<ImportedItem>, String>, ReadError> {
    let (root, root_field) = match object.get("prompt") {
        Some(Value::Object(root)) => (root, "prompt".to_string()),
        Some(_) => {
            return Err(ReadError::at_field(
                line,
                "prompt",
                "expected a message node",
            ))
        }
        None if object.contains_key("message_id") => (object, String::new()),
        None => {
            return Err(ReadError::at_field(
                line,
                "prompt",
                "missing (expected a message tree)",
            ))
        }
    };
    let mut items = Vec::new();
    let mut path = Vec::new();
    oasst_walk(line, root, &root_field, &mut path, &mut items)?;
    Ok(Ok(items))
}

fn join_field(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

fn oasst_walk(
    line: u64,
    node: &Map<String, Value>,
    field: &str,
    path: &mut Vec<Message>,
    items: &mut Vec<ImportedItem>,
) -> Result<(), ReadError> {
    let fields = Fields::new(line, node);
    let text = fields.str("text").map_err(|_| {
        ReadError::at_field(line, join_field(field, "text"), "missing or not a string")
    })?;
    let role = fields.str("role").map_err(|_| {
        ReadError::at_field(line, join_field(field, "role"), "missing or not a string")
    })?;
    path.push(Message::new(normalize_role(role), text));
    let replies = match node.get("replies") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(replies)) => replies.as_slice(),
        Some(_) => {
            return Err(ReadError::at_field(
                line,
                join_field(field, "replies"),
                "expected a list of message nodes",
            ))
        }
    };
    let mut ranked: Vec<(i64, ImportedResponse)> = Vec::new();
    for (index, reply) in replies.iter().enumerate() {
        let reply_field = join_field(field, &format!("replies[{index}]"));
        let Value::Object(reply) = reply else {
            return Err(ReadError::at_field(
                line,
                reply_field,
                "expected a message node",
            ));
        };
        let reply_fields = Fields::new(line, reply);
        let rank = reply_fields.opt_i64("rank").map_err(|_| {
            ReadError::at_field(
                line,
                join_field(&reply_field, "rank"),
                "expected an integer",
            )
        })?;
        if let Some(rank) = rank {
            let text = reply_fields.str("text").map_err(|_| {
                ReadError::at_field(
                    line,
                    join_field(&reply_field, "text"),
                    "missing or not a string",
                )
            })?;
            let model = reply_fields
                .opt_text("model_name")?
                .unwrap_or_else(|| "human".to_string());
            let mut ranked_response = response(model, text);
            ranked_response.source_id = reply_fields.opt_text("message_id")?;
            ranked.push((rank, ranked_response));
        }
        oasst_walk(line, reply, &reply_field, path, items)?;
    }
    if ranked.len() >= 2 {
        // Stable: equal ranks keep file order (and become ties below).
        ranked.sort_by_key(|(rank, _)| *rank);
        let mut votes = Vec::new();
        for a in 0..ranked.len() {
            for b in a + 1..ranked.len() {
                let choice = if ranked[a].0 < ranked[b].0 {
                    Choice::Left
                } else {
                    Choice::Tie
                };
                let mut vote = ImportedVote::new(a, b, choice);
                vote.rater = Some("oasst-rankers".to_string());
                votes.push(vote);
            }
        }
        let prompt_id = fields
            .opt_text("message_id")?
            .unwrap_or_else(|| content_prompt_id(path));
        items.push(ImportedItem {
            line,
            prompt_id,
            conversation: path.clone(),
            category: None,
            language: fields.opt_text("lang")?,
            responses: ranked.into_iter().map(|(_, response)| response).collect(),
            votes,
        });
    }
    path.pop();
    Ok(())
}

fn arena_choice(line: u64, winner: &str) -> Result<Choice, ReadError> {
    match winner {
        "model_a" => Ok(Choice::Left),
        "model_b" => Ok(Choice::Right),
        "tie" => Ok(Choice::Tie),
        "tie (bothbad)" => Ok(Choice::BothBad),
        other => Err(ReadError::at_field(
            line,
            "winner",
            format!("expected model_a, model_b, tie or tie (bothbad), found `{other}`"),
        )),
    }
}

/// One Chatbot Arena battle.
fn arena_item(
    line: u64,
    object: &Map<String, Value>,
) -> Result<Result<ImportedItem, String>, ReadError> {
    let fields = Fields::new(line, object);
    let model_a = fields.str("model_a")?;
    let model_b = fields.str("model_b")?;
    let choice = arena_choice(line, fields.str("winner")?)?;
    if !fields.has("conversation_a") || !fields.has("conversation_b") {
        return Ok(Err("no conversations (battle metadata only)".to_string()));
    }
    let mut conversation_a =
        messages_from_value(line, "conversation_a", fields.value("conversation_a")?)?;
    let mut conversation_b =
        messages_from_value(line, "conversation_b", fields.value("conversation_b")?)?;
    let last = |conversation: &mut Vec<Message>, field: &str| match conversation.pop() {
        Some(message) if message.role == "assistant" => Ok(message.content),
        Some(_) => Err(ReadError::at_field(
            line,
            field,
            "the last turn must be the assistant's",
        )),
        None => Err(ReadError::at_field(line, field, "empty conversation")),
    };
    let response_a = last(&mut conversation_a, "conversation_a")?;
    let response_b = last(&mut conversation_b, "conversation_b")?;
    // A multi-turn battle: the sides share the turns up to the first answer and every user turn;
    // each side's own earlier answers (and the follow-ups between them) become its history.
    let mut history_a = Vec::new();
    let mut history_b = Vec::new();
    if conversation_a != conversation_b {
        let shared = conversation_a
            .iter()
            .zip(&conversation_b)
            .take_while(|(a, b)| a == b)
            .count();
        history_a = conversation_a.split_off(shared);
        history_b = conversation_b.split_off(shared);
        let users = |history: &[Message]| -> Vec<Message> {
            history
                .iter()
                .filter(|m| m.role == "user")
                .cloned()
                .collect()
        };
        if history_a.len() != history_b.len() || users(&history_a) != users(&history_b) {
            return Ok(Err(
                "multi-turn battle: the two conversations ask different questions".to_string(),
            ));
        }
    }
    if conversation_a.is_empty() {
        return Err(ReadError::at_field(
            line,
            "conversation_a",
            "no user turn before the response",
        ));
    }
    let created_ms = match fields.opt_f64("tstamp")? {
        Some(seconds) if seconds.is_finite() => Some((seconds * 1000.0).round() as i64),
        Some(_) => {
            return Err(ReadError::at_field(
                line,
                "tstamp",
                "expected seconds since the epoch",
            ))
        }
        None => None,
    };
    let mut vote = ImportedVote::new(0, 1, choice);
    vote.rater = fields.opt_text("judge")?;
    vote.created_ms = created_ms;
    let prompt_id = fields
        .opt_text("question_id")?
        .unwrap_or_else(|| content_prompt_id(&conversation_a));
    Ok(Ok(ImportedItem {
        line,
        prompt_id,
        conversation: conversation_a,
        category: fields.opt_text("category")?,
        language: fields.opt_text("language")?,
        responses: vec![
            ImportedResponse {
                history: history_a,
                ..response(model_a, response_a)
            },
            ImportedResponse {
                history: history_b,
                ..response(model_b, response_b)
            },
        ],
        votes: vec![vote],
    }))
}

/// One row of Moat's `votes` JSON Lines export.
fn votes_item(line: u64, object: &Map<String, Value>) -> Result<ImportedItem, ReadError> {
    let fields = Fields::new(line, object);
    let openness = |key: &str| -> Result<Openness, ReadError> {
        Openness::parse(fields.str(key)?)
            .ok_or_else(|| ReadError::at_field(line, key, "expected open or closed"))
    };
    let choice = fields.str("choice")?;
    let choice = Choice::parse(choice).ok_or_else(|| {
        ReadError::at_field(line, "choice", "expected left, right, tie or both_bad")
    })?;
    let created_ms = match fields.opt_i64("created_ms")? {
        Some(ms) => ms,
        None => parse_rfc3339_utc(fields.str("created")?)
            .ok_or_else(|| ReadError::at_field(line, "created", "expected an RFC 3339 UTC time"))?,
    };
    let mut vote = ImportedVote::new(0, 1, choice);
    vote.vote_id = fields.opt_i64("vote_id")?;
    vote.rater = Some(fields.str("rater")?.to_string());
    vote.created_ms = Some(created_ms);
    vote.source_guess = fields.opt_text("source_guess")?;
    vote.source_confidence = fields.opt_i64("source_confidence")?;
    vote.rationale = fields.opt_text("rationale")?;
    vote.time_on_page_ms = fields.opt_i64("time_on_page_ms")?;
    vote.assignment_kind = fields.opt_text("assignment_kind")?;
    vote.completion_code = fields.opt_text("completion_code")?;
    let side = |model: &str, openness_key: &str, text: &str, history: &str| {
        Ok::<_, ReadError>(ImportedResponse {
            model: fields.str(model)?.to_string(),
            openness: Some(openness(openness_key)?),
            text: fields.str(text)?.to_string(),
            source_id: None,
            // Older exports have no history columns.
            history: match object.get(history) {
                None | Some(Value::Null) => Vec::new(),
                Some(value) => messages_from_value(line, history, value)?,
            },
        })
    };
    Ok(ImportedItem {
        line,
        prompt_id: fields.str("prompt_id")?.to_string(),
        conversation: messages_from_value(line, "conversation", fields.value("conversation")?)?,
        category: fields.opt_text("category")?,
        language: fields.opt_text("language")?,
        responses: vec![
            side(
                "left_model",
                "left_openness",
                "left_response",
                "left_history",
            )?,
            side(
                "right_model",
                "right_openness",
                "right_response",
                "right_history",
            )?,
        ],
        votes: vec![vote],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::rfc3339_utc;

    fn items(
        format: ImportFormat,
        text: &str,
    ) -> Result<(Vec<ImportedItem>, ReadReport), ReadError> {
        let mut reader = ImportReader::new(
            format,
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        )?;
        let items = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((items, reader.into_report()))
    }

    #[test]
    fn rfc3339_parse_inverts_format() {
        for ms in [
            0,
            1_709_210_096_789,
            951_782_400_000,
            -86_400_000,
            4_102_444_799_999,
        ] {
            assert_eq!(
                parse_rfc3339_utc(&rfc3339_utc(ms)),
                Some(ms),
                "{}",
                rfc3339_utc(ms)
            );
        }
        assert_eq!(
            parse_rfc3339_utc("2024-02-29T12:34:56Z"),
            Some(1_709_210_096_000)
        );
        assert_eq!(
            parse_rfc3339_utc("2024-02-29T12:34:56.7+00:00"),
            Some(1_709_210_096_700)
        );
        assert_eq!(parse_rfc3339_utc("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("yesterday"), None);
    }

    #[test]
    fn arena_battles_as_array_and_lines() {
        let battle = r#"{"question_id":"q1","model_a":"a","model_b":"b","winner":"tie (bothbad)","judge":"j",
            "conversation_a":[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}],
            "conversation_b":[{"role":"user","content":"Q"},{"role":"assistant","content":"B"}],
            "turn":1,"anony":true,"language":"English","tstamp":1700000000.5}"#;
        let (from_array, _) = items(ImportFormat::Arena, &format!("[{battle}]")).unwrap();
        let (from_lines, report) = items(ImportFormat::Arena, &battle.replace('\n', " ")).unwrap();
        assert_eq!(from_array.len(), 1);
        assert_eq!(from_array[0].votes, from_lines[0].votes);
        assert_eq!(from_lines[0].votes[0].choice, Choice::BothBad);
        assert_eq!(from_lines[0].votes[0].created_ms, Some(1_700_000_000_500));
        assert_eq!(from_lines[0].responses[1].text, "B");
        assert_eq!(report.votes, 1);
    }

    #[test]
    fn arena_errors_name_the_field_and_metadata_only_battles_are_skipped() {
        let error = items(
            ImportFormat::Arena,
            r#"{"model_a":"a","model_b":"b","winner":"draw"}"#,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1, field `winner`: expected model_a, model_b, tie or tie (bothbad), found `draw`"
        );
        let (items, report) = items(
            ImportFormat::Arena,
            "\n{\"model_a\":\"a\",\"model_b\":\"b\",\"winner\":\"tie\"}\n",
        )
        .unwrap();
        assert!(items.is_empty());
        assert_eq!(
            report.skipped,
            vec![Skipped {
                line: 2,
                reason: "no conversations (battle metadata only)".into()
            }]
        );
    }

    #[test]
    fn oasst_ranked_siblings_give_pairwise_votes_lower_rank_wins() {
        let tree = r#"{"message_tree_id":"t","prompt":{"message_id":"m0","text":"Q","role":"prompter","lang":"en","replies":[
            {"message_id":"m2","text":"second","role":"assistant","rank":1,"replies":[]},
            {"message_id":"m1","text":"first","role":"assistant","rank":0,"model_name":"x","replies":[]},
            {"message_id":"m3","text":"third","role":"assistant","rank":2,"replies":[]}]}}"#;
        let (items, report) = items(ImportFormat::Oasst, &tree.replace('\n', " ")).unwrap();
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(item.prompt_id, "m0");
        assert_eq!(item.conversation, vec![Message::new("user", "Q")]);
        let texts: Vec<&str> = item.responses.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["first", "second", "third"]);
        assert_eq!(item.responses[0].model, "x");
        assert_eq!(item.responses[1].model, "human");
        assert_eq!(item.votes.len(), 3);
        assert!(item
            .votes
            .iter()
            .all(|vote| vote.choice == Choice::Left && vote.a_index < vote.b_index));
        assert_eq!(report.votes, 3);
    }

    #[test]
    fn oasst_malformed_node_names_its_path() {
        let tree = r#"{"prompt":{"text":"Q","role":"prompter","replies":[{"role":"assistant","rank":"first"}]}}"#;
        let error = items(ImportFormat::Oasst, tree).unwrap_err();
        assert_eq!(error.field(), Some("prompt.replies[0].rank"));
    }

    #[test]
    fn votes_rows_keep_every_field() {
        let row = r#"{"vote_id":9,"study":"s","prompt_id":"p","conversation":[{"role":"user","content":"Q"}],"category":null,"language":"en","left_model":"a","left_openness":"open","left_response":"A","right_model":"b","right_openness":"closed","right_response":"B","choice":"both_bad","rater":"r","created":"2024-05-01T00:00:00.000Z","created_ms":1714521600000,"source_guess":"open","source_confidence":4,"rationale":"meh","time_on_page_ms":1234,"assignment_kind":"gold"}"#;
        let (items, _) = items(ImportFormat::Votes, row).unwrap();
        let records = items[0].vote_records("s", &|_| Openness::Closed, &mut 1);
        assert_eq!(records[0].choice, Choice::BothBad);
        assert_eq!(records[0].left_openness, Openness::Open);
        assert_eq!(records[0].vote_id, 9);
        assert_eq!(records[0].source_confidence, Some(4));
        assert_eq!(records[0].assignment_kind, "gold");
        let error =
            self::items(ImportFormat::Votes, &row.replace("\"both_bad\"", "\"meh\"")).unwrap_err();
        assert_eq!(error.field(), Some("choice"));
    }
}
