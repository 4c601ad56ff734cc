//! `moat import` and the admin upload: Moat's JSONL format into a study, in one transaction.
//!
//! Format, one JSON object per line (blank lines ignored):
//! - optional header, the first line: `{"models": [{"name", "provider", "openness": "open"|"closed", "version"?}]}`
//! - each other line is one prompt: `{"id"?, "prompt": "text" | [{"role", "content"}…], "category"?,
//!   "language"?, "responses": {"<model name>": "text", …}, "check"?}`
//! - `check` makes the prompt a quality-check item: `{"kind": "attention"|"gold", "better": "<model
//!   name>"}`; a rater passes it by preferring that model's response. Check items are shown at the
//!   study's check rate and their votes never count as preferences.
//!
//! Any malformed line, missing field, unknown model, duplicate id or prompt with fewer than two
//! responses refuses the whole file with an error naming the line and the field; nothing is written.
//! The file is read line by line, so its size is bounded by the database, not by memory.

use std::collections::{HashMap, HashSet};

use moat_exports::{Message, Openness};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::domain::{sha256_hex, CheckKind, StudySlug};
use crate::identity::IdentityDetector;
use crate::store::{Store, StoreError};

/// A model declared in the file header or on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub provider: String,
    pub openness: Openness,
    pub version: String,
}

impl ModelSpec {
    /// Parses the command-line form `NAME=open|closed[,PROVIDER]`.
    pub fn parse_flag(text: &str) -> Result<ModelSpec, String> {
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("--model {text:?}: expected NAME=open|closed[,PROVIDER]"))?;
        let (openness, provider) = rest.split_once(',').unwrap_or((rest, ""));
        let openness = Openness::parse(openness).ok_or_else(|| {
            format!("--model {text:?}: openness must be open or closed, got {openness:?}")
        })?;
        if name.trim().is_empty() {
            return Err(format!("--model {text:?}: the model name is empty"));
        }
        Ok(ModelSpec {
            name: name.trim().into(),
            provider: provider.trim().into(),
            openness,
            version: String::new(),
        })
    }
}

/// What is wrong with an input file, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, field `{field}`: {message}")]
pub struct InputError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

fn input_error(line: usize, field: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError {
        line,
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("{0}")]
    Study(String),
    #[error("reading the input failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Header(Vec<ModelSpec>),
    Item(PromptItem),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    pub id: String,
    pub conversation: Vec<Message>,
    pub category: Option<String>,
    pub language: Option<String>,
    /// (model name, text), in the order of the file.
    pub responses: Vec<(String, String)>,
    pub check: Option<QualityCheck>,
}

/// What makes a prompt a quality-check item.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityCheck {
    pub kind: CheckKind,
    /// The model whose response a careful rater prefers.
    pub better: String,
}

fn parse_check(
    value: Option<&Value>,
    responses: &[(String, String)],
    line: usize,
) -> Result<Option<QualityCheck>, InputError> {
    let check = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(check)) => check,
        Some(_) => return Err(input_error(
            line,
            "check",
            "must be an object {\"kind\": \"attention\"|\"gold\", \"better\": \"<model name>\"}",
        )),
    };
    let kind_text = check
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| input_error(line, "check.kind", "missing; use \"attention\" or \"gold\""))?;
    let kind = CheckKind::parse(kind_text).ok_or_else(|| {
        input_error(
            line,
            "check.kind",
            format!("must be \"attention\" or \"gold\", got {kind_text:?}"),
        )
    })?;
    let better = check.get("better").and_then(Value::as_str).ok_or_else(|| {
        input_error(
            line,
            "check.better",
            "missing; name the model whose response a careful rater prefers",
        )
    })?;
    if !responses.iter().any(|(model, _)| model == better) {
        return Err(input_error(
            line,
            "check.better",
            format!("{better:?} is not one of this prompt's responses"),
        ));
    }
    Ok(Some(QualityCheck {
        kind,
        better: better.to_string(),
    }))
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub study: String,
    pub created_study: bool,
    pub lines_read: u64,
    pub prompts_imported: u64,
    pub responses_imported: u64,
    /// Prompts among `prompts_imported` that are quality-check items.
    pub checks_imported: u64,
    pub models_added: u64,
    /// Responses that name a model or its maker (identity flags; listed on the study page).
    pub responses_flagged: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "study {}{}: {} lines read, {} prompts ({} quality checks) and {} responses imported, {} new models",
            self.study,
            if self.created_study {
                " (created as draft)"
            } else {
                ""
            },
            self.lines_read,
            self.prompts_imported,
            self.checks_imported,
            self.responses_imported,
            self.models_added
        )?;
        write_flagged(f, self.responses_flagged)
    }
}

/// The import report's sentence on identity flags (nothing when no response was flagged).
fn write_flagged(f: &mut std::fmt::Formatter<'_>, flagged: u64) -> std::fmt::Result {
    match flagged {
        0 => Ok(()),
        1 => write!(
            f,
            "; 1 response names a model or its maker and is flagged (see the study page)"
        ),
        n => write!(
            f,
            "; {n} responses name a model or its maker and are flagged (see the study page)"
        ),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    key: &str,
    line: usize,
) -> Result<Option<String>, InputError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(input_error(line, key, "must be a string")),
    }
}

fn parse_models(value: &Value, line: usize) -> Result<Vec<ModelSpec>, InputError> {
    let list = value
        .as_array()
        .ok_or_else(|| input_error(line, "models", "must be a list of models"))?;
    list.iter()
        .enumerate()
        .map(|(i, model)| {
            let field = |name: &str| format!("models[{i}].{name}");
            let object = model
                .as_object()
                .ok_or_else(|| input_error(line, format!("models[{i}]"), "must be an object"))?;
            let name = object
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| {
                    input_error(line, field("name"), "missing or not a non-empty string")
                })?;
            let openness_text =
                object
                    .get("openness")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        input_error(
                            line,
                            field("openness"),
                            "missing; use \"open\" or \"closed\"",
                        )
                    })?;
            let openness = Openness::parse(openness_text).ok_or_else(|| {
                input_error(
                    line,
                    field("openness"),
                    format!("must be \"open\" or \"closed\", got {openness_text:?}"),
                )
            })?;
            let text = |key: &str| {
                object
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            Ok(ModelSpec {
                name: name.trim().to_string(),
                provider: text("provider"),
                openness,
                version: text("version"),
            })
        })
        .collect()
}

fn parse_conversation(value: &Value, line: usize) -> Result<Vec<Message>, InputError> {
    match value {
        Value::String(text) if !text.trim().is_empty() => {
            Ok(vec![Message::new("user", text.clone())])
        }
        Value::String(_) => Err(input_error(line, "prompt", "is empty")),
        Value::Array(turns) if !turns.is_empty() => turns
            .iter()
            .enumerate()
            .map(|(i, turn)| {
                let role = turn.get("role").and_then(Value::as_str).ok_or_else(|| {
                    input_error(line, format!("prompt[{i}].role"), "missing or not a string")
                })?;
                if !matches!(role, "user" | "assistant" | "system") {
                    return Err(input_error(
                        line,
                        format!("prompt[{i}].role"),
                        format!("must be user, assistant or system, got {role:?}"),
                    ));
                }
                let content = turn.get("content").and_then(Value::as_str).ok_or_else(|| {
                    input_error(
                        line,
                        format!("prompt[{i}].content"),
                        "missing or not a string",
                    )
                })?;
                Ok(Message::new(role, content))
            })
            .collect(),
        Value::Array(_) => Err(input_error(line, "prompt", "the conversation has no turns")),
        _ => Err(input_error(
            line,
            "prompt",
            "must be a string or a list of {role, content} messages",
        )),
    }
}

/// Parses one non-blank line (1-based `line`).
pub fn parse_line(text: &str, line: usize) -> Result<Line, InputError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| input_error(line, "(line)", format!("not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| input_error(line, "(line)", "must be a JSON object"))?;
    if object.contains_key("models") && !object.contains_key("responses") {
        return Ok(Line::Header(parse_models(&object["models"], line)?));
    }
    let prompt = object
        .get("prompt")
        .ok_or_else(|| input_error(line, "prompt", "missing"))?;
    let conversation = parse_conversation(prompt, line)?;
    let responses = object
        .get("responses")
        .ok_or_else(|| input_error(line, "responses", "missing"))?
        .as_object()
        .ok_or_else(|| {
            input_error(
                line,
                "responses",
                "must be an object mapping model name to response text",
            )
        })?;
    let responses = responses
        .iter()
        .map(|(model, text)| match text {
            Value::String(text) => Ok((model.clone(), text.clone())),
            _ => Err(input_error(
                line,
                format!("responses.{model}"),
                "must be a string",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if responses.len() < 2 {
        return Err(input_error(
            line,
            "responses",
            format!(
                "a prompt needs at least two responses to compare, found {}",
                responses.len()
            ),
        ));
    }
    let id = match object.get("id") {
        None | Some(Value::Null) => format!(
            "p-{}",
            &sha256_hex(&serde_json::to_string(prompt).unwrap_or_default())[..16]
        ),
        Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(input_error(
                line,
                "id",
                "must be a non-empty string or a number",
            ))
        }
    };
    let check = parse_check(object.get("check"), &responses, line)?;
    Ok(Line::Item(PromptItem {
        id,
        conversation,
        category: optional_string(object, "category", line)?,
        language: optional_string(object, "language", line)?,
        responses,
        check,
    }))
}

/// The study an import writes into: the existing one (refused if closed) or a new draft titled by
/// its slug. Returns whether it was created.
async fn open_or_create_study(
    tx: &mut crate::store::WriteTx<'_>,
    slug: &StudySlug,
) -> Result<(crate::store::StudyRow, bool), ImportError> {
    match tx.study(slug.as_str()).await? {
        Some(study) if study.status == crate::domain::StudyStatus::Closed => {
            Err(ImportError::Study(format!(
                "study {:?} is closed; reopen it before importing",
                slug.as_str()
            )))
        }
        Some(study) => Ok((study, false)),
        None => Ok((
            tx.create_study(slug, slug.as_str(), "", &Default::default())
                .await?,
            true,
        )),
    }
}

/// A prompt about to be written by an import.
struct NewPrompt<'a> {
    id: &'a str,
    conversation: &'a [Message],
    category: Option<&'a str>,
    language: Option<&'a str>,
}

/// Writes a prompt unless its id is `repeated` (seen earlier in the file, where the format does not
/// allow that) or already in the study.
async fn insert_new_prompt(
    tx: &mut crate::store::WriteTx<'_>,
    study_id: i64,
    repeated: bool,
    line: usize,
    prompt: NewPrompt<'_>,
) -> Result<i64, ImportError> {
    if repeated || tx.prompt_exists(study_id, prompt.id).await? {
        return Err(input_error(line, "id", format!("duplicate prompt id {:?}", prompt.id)).into());
    }
    Ok(tx
        .insert_prompt(
            study_id,
            prompt.id,
            prompt.conversation,
            prompt.category,
            prompt.language,
        )
        .await?)
}

/// Imports a JSONL stream into the study `slug` (created as a draft if it does not exist).
pub async fn import_jsonl<R: AsyncBufRead + Unpin>(
    store: &Store,
    slug: &StudySlug,
    reader: R,
    flag_models: &[ModelSpec],
) -> Result<ImportReport, ImportError> {
    let mut tx = store.begin_write().await?;
    let mut report = ImportReport {
        study: slug.as_str().to_string(),
        ..Default::default()
    };
    let (study, created) = open_or_create_study(&mut tx, slug).await?;
    report.created_study = created;
    let mut models: HashMap<String, i64> = tx.models(study.id).await?;
    let mut pending = flag_models.to_vec();
    // Rebuilt when models are added (the header and --model flags, before any item).
    let mut detector: Option<IdentityDetector> = None;
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut reader = reader;
    let mut bytes = Vec::new();
    let mut line_no = 0usize;
    let mut first_content_line = true;
    loop {
        for spec in pending.drain(..) {
            if !models.contains_key(&spec.name) {
                let id = tx
                    .insert_model(
                        study.id,
                        &spec.name,
                        &spec.provider,
                        spec.openness,
                        &spec.version,
                    )
                    .await?;
                models.insert(spec.name.clone(), id);
                report.models_added += 1;
                detector = None;
            }
        }
        bytes.clear();
        // At most one byte past the limit: a line of a gigabyte is refused, not held in memory.
        let limit = moat_exports::read::MAX_RECORD_BYTES as u64 + 1;
        if (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut bytes)
            .await?
            == 0
        {
            break;
        }
        line_no += 1;
        if bytes.len() > moat_exports::read::MAX_RECORD_BYTES {
            return Err(input_error(
                line_no,
                "(line)",
                format!(
                    "longer than {} MiB, the most a line may be",
                    moat_exports::read::MAX_RECORD_BYTES >> 20
                ),
            )
            .into());
        }
        // Lines are read as bytes so that text which is not UTF-8 is refused naming its line (a
        // `lines()` reader fails with an I/O error that says neither line nor field).
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            input_error(
                line_no,
                "(line)",
                format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to()),
            )
        })?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        report.lines_read += 1;
        let is_first = std::mem::replace(&mut first_content_line, false);
        match parse_line(text, line_no)? {
            Line::Header(specs) if is_first => pending = specs,
            Line::Header(_) => {
                return Err(input_error(
                    line_no,
                    "models",
                    "the models header must be the first line",
                )
                .into());
            }
            Line::Item(item) => {
                for (model, _) in &item.responses {
                    if !models.contains_key(model) {
                        return Err(input_error(
                            line_no,
                            format!("responses.{model}"),
                            format!(
                                "unknown model {model:?}: declare it in the header line or with --model {model}=open|closed"
                            ),
                        )
                        .into());
                    }
                }
                let prompt = NewPrompt {
                    id: &item.id,
                    conversation: &item.conversation,
                    category: item.category.as_deref(),
                    language: item.language.as_deref(),
                };
                let repeated = !seen_ids.insert(item.id.clone());
                let prompt_id =
                    insert_new_prompt(&mut tx, study.id, repeated, line_no, prompt).await?;
                if detector.is_none() {
                    detector = Some(IdentityDetector::new(&tx.model_identities(study.id).await?));
                }
                let detector = detector.as_ref().expect("built above");
                for (model, text) in &item.responses {
                    let flag = detector.flag(text);
                    report.responses_flagged += u64::from(flag.is_some());
                    tx.insert_response(prompt_id, models[model], text, flag.as_deref(), &[])
                        .await?;
                    report.responses_imported += 1;
                }
                if let Some(check) = &item.check {
                    tx.mark_check(prompt_id, check.kind, models[&check.better])
                        .await?;
                    report.checks_imported += 1;
                }
                report.prompts_imported += 1;
            }
        }
    }
    if report.prompts_imported == 0 {
        return Err(ImportError::Study("the file holds no prompts".into()));
    }
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_items_parse() {
        let header = parse_line(
            r#"{"models":[{"name":"m1","provider":"P","openness":"closed"}]}"#,
            1,
        )
        .unwrap();
        assert!(matches!(header, Line::Header(ref m) if m[0].openness == Openness::Closed));
        let item = parse_line(
            r#"{"id":7,"prompt":[{"role":"user","content":"hi"}],"responses":{"a":"x","b":"y"},"category":"c"}"#,
            2,
        )
        .unwrap();
        let Line::Item(item) = item else { panic!() };
        assert_eq!(item.id, "7");
        assert_eq!(item.responses.len(), 2);
        assert_eq!(item.category.as_deref(), Some("c"));
        assert_eq!(item.check, None);
        let Line::Item(check) = parse_line(
            r#"{"prompt":"q","responses":{"a":"x","b":"y"},"check":{"kind":"attention","better":"b"}}"#,
            3,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            check.check,
            Some(QualityCheck {
                kind: CheckKind::Attention,
                better: "b".into()
            })
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            ("not json", "(line)"),
            (r#"{"responses":{"a":"x","b":"y"}}"#, "prompt"),
            (r#"{"prompt":"q"}"#, "responses"),
            (r#"{"prompt":"q","responses":{"a":"x"}}"#, "responses"),
            (
                r#"{"prompt":"q","responses":{"a":"x","b":3}}"#,
                "responses.b",
            ),
            (
                r#"{"prompt":[{"role":"robot","content":"x"}],"responses":{"a":"x","b":"y"}}"#,
                "prompt[0].role",
            ),
            (
                r#"{"models":[{"name":"m","openness":"maybe"}]}"#,
                "models[0].openness",
            ),
            (
                r#"{"id":[],"prompt":"q","responses":{"a":"x","b":"y"}}"#,
                "id",
            ),
            (
                r#"{"prompt":"q","responses":{"a":"x","b":"y"},"check":"a"}"#,
                "check",
            ),
            (
                r#"{"prompt":"q","responses":{"a":"x","b":"y"},"check":{"kind":"trick","better":"a"}}"#,
                "check.kind",
            ),
            (
                r#"{"prompt":"q","responses":{"a":"x","b":"y"},"check":{"kind":"gold","better":"c"}}"#,
                "check.better",
            ),
        ];
        for (text, field) in cases {
            let error = parse_line(text, 9).unwrap_err();
            assert_eq!(
                (error.line, error.field.as_str()),
                (9, field),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn model_flags_parse() {
        let spec = ModelSpec::parse_flag("gpt-4o=closed,OpenAI").unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.provider.as_str(), spec.openness),
            ("gpt-4o", "OpenAI", Openness::Closed)
        );
        assert!(ModelSpec::parse_flag("x=sometimes").is_err());
        assert!(ModelSpec::parse_flag("nothing").is_err());
    }
}

/// What an import of a public dataset did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DatasetImportReport {
    pub study: String,
    pub format: String,
    pub created_study: bool,
    pub rows_read: u64,
    pub prompts_imported: u64,
    pub votes_imported: u64,
    pub models_added: Vec<String>,
    /// (line, reason) of each row left out.
    pub skipped: Vec<(u64, String)>,
    /// Responses that name a model or its maker (identity flags; listed on the study page).
    pub responses_flagged: u64,
}

impl std::fmt::Display for DatasetImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "study {}{} ({}): {} rows read, {} prompts and {} votes imported, {} skipped",
            self.study,
            if self.created_study {
                " (created as draft)"
            } else {
                ""
            },
            self.format,
            self.rows_read,
            self.prompts_imported,
            self.votes_imported,
            self.skipped.len()
        )?;
        write_flagged(f, self.responses_flagged)?;
        for (line, reason) in self.skipped.iter().take(10) {
            write!(f, "\n  skipped line {line}: {reason}")?;
        }
        if self.skipped.len() > 10 {
            write!(f, "\n  … and {} more", self.skipped.len() - 10)?;
        }
        Ok(())
    }
}

/// A prompt written earlier in the same dataset import.
struct SeenPrompt {
    row_id: i64,
    line: usize,
    conversation: [u8; 32],
    /// (model id, digest of the text) → response row id, for the responses of earlier rows.
    responses: HashMap<(i64, [u8; 32]), i64>,
}

/// SHA-256 of a value's JSON, to compare repeated rows without keeping their texts.
fn digest_of<T: serde::Serialize + ?Sized>(value: &T) -> [u8; 32] {
    use sha2::Digest;
    let json = serde_json::to_vec(value).expect("imported values serialize");
    sha2::Sha256::digest(json).into()
}

/// Imports a public preference dataset (HH-RLHF, OpenAssistant trees, Chatbot Arena battles, TRL, or
/// Moat's own votes export) into a study, votes included, in one transaction. Models the file does not
/// declare take their openness from `flag_models`, else are recorded as open.
pub async fn import_dataset(
    store: &Store,
    slug: &StudySlug,
    format: moat_exports::import::ImportFormat,
    path: &std::path::Path,
    flag_models: &[ModelSpec],
) -> Result<DatasetImportReport, ImportError> {
    let reader_error = |e: moat_exports::read::ReadError| {
        ImportError::Input(InputError {
            line: e.line().unwrap_or(0) as usize,
            field: e.field().unwrap_or("(file)").to_string(),
            message: e.to_string(),
        })
    };
    // The dataset readers are blocking iterators (files, gzip, Parquet): they run on a blocking thread
    // and hand items over a small channel, so the file streams and the async side stays Send.
    let (item_sender, mut items) = tokio::sync::mpsc::channel(64);
    let owned_path = path.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || {
        let mut reader = moat_exports::import::import_file(format, &owned_path)?;
        for item in reader.by_ref() {
            if item_sender.blocking_send(item).is_err() {
                break;
            }
        }
        Ok::<_, moat_exports::read::ReadError>(reader.into_report())
    });
    let mut tx = store.begin_write().await?;
    let mut report = DatasetImportReport {
        study: slug.as_str().to_string(),
        format: format!("{format:?}"),
        ..Default::default()
    };
    let (study, created) = open_or_create_study(&mut tx, slug).await?;
    report.created_study = created;
    let mut models: HashMap<String, i64> = tx.models(study.id).await?;
    let mut raters: HashMap<String, i64> = HashMap::new();
    // Rebuilt when a row brings a new model.
    let mut detector: Option<IdentityDetector> = None;
    // Rows that share a prompt id (several votes on one item, as Moat's own `votes` and `arena`
    // exports write them) become one prompt with one response per model; they must agree on the
    // conversation and on each model's text.
    let mut seen: HashMap<String, SeenPrompt> = HashMap::new();
    while let Some(item) = items.recv().await {
        let item = item.map_err(reader_error)?;
        let line = item.line as usize;
        let conversation_digest = digest_of(&item.conversation);
        let prompt_id = match seen.get(&item.prompt_id) {
            Some(earlier) => {
                if earlier.conversation != conversation_digest {
                    return Err(input_error(
                        line,
                        "prompt",
                        format!(
                            "prompt id {:?} was imported from line {} with a different conversation",
                            item.prompt_id, earlier.line
                        ),
                    )
                    .into());
                }
                earlier.row_id
            }
            None => {
                let prompt = NewPrompt {
                    id: &item.prompt_id,
                    conversation: &item.conversation,
                    category: item.category.as_deref(),
                    language: item.language.as_deref(),
                };
                let row_id = insert_new_prompt(&mut tx, study.id, false, line, prompt).await?;
                seen.insert(
                    item.prompt_id.clone(),
                    SeenPrompt {
                        row_id,
                        line,
                        conversation: conversation_digest,
                        responses: HashMap::new(),
                    },
                );
                report.prompts_imported += 1;
                row_id
            }
        };
        let mut response_ids = Vec::with_capacity(item.responses.len());
        let mut new_responses = Vec::new();
        for response in &item.responses {
            let model_id = match models.get(&response.model) {
                Some(&id) => id,
                None => {
                    let declared = flag_models.iter().find(|m| m.name == response.model);
                    let openness = response
                        .openness
                        .or(declared.map(|m| m.openness))
                        .unwrap_or(Openness::Open);
                    let provider = declared.map(|m| m.provider.as_str()).unwrap_or("");
                    let id = tx
                        .insert_model(study.id, &response.model, provider, openness, "")
                        .await?;
                    models.insert(response.model.clone(), id);
                    report.models_added.push(response.model.clone());
                    detector = None;
                    id
                }
            };
            // A row repeating an earlier row's response (same model, same text) votes on that
            // response; anything else is a response of its own.
            // (A multi-turn side is the same response only with the same history.)
            let key = if response.history.is_empty() {
                (model_id, digest_of(&response.text))
            } else {
                (model_id, digest_of(&(&response.history, &response.text)))
            };
            let earlier = seen
                .get(&item.prompt_id)
                .and_then(|prompt| prompt.responses.get(&key).copied());
            let response_id = match earlier {
                Some(id) => id,
                None => {
                    if detector.is_none() {
                        detector =
                            Some(IdentityDetector::new(&tx.model_identities(study.id).await?));
                    }
                    let detector = detector.as_ref().expect("built above");
                    // A multi-turn side that names its maker in any of its answers is flagged.
                    let flag = detector.flag(&response.text).or_else(|| {
                        response
                            .history
                            .iter()
                            .filter(|m| m.role == "assistant")
                            .find_map(|m| detector.flag(&m.content))
                    });
                    report.responses_flagged += u64::from(flag.is_some());
                    let id = tx
                        .insert_response(
                            prompt_id,
                            model_id,
                            &response.text,
                            flag.as_deref(),
                            &response.history,
                        )
                        .await?;
                    new_responses.push((key, id));
                    id
                }
            };
            response_ids.push((response_id, model_id));
        }
        seen.get_mut(&item.prompt_id)
            .expect("the prompt was recorded above")
            .responses
            .extend(new_responses);
        for vote in &item.votes {
            let annotator = vote
                .rater
                .clone()
                .unwrap_or_else(|| format!("{}-annotator", report.format.to_lowercase()));
            let rater_id = match raters.get(&annotator) {
                Some(&id) => id,
                None => {
                    let id = tx.imported_rater(study.id, &annotator).await?;
                    raters.insert(annotator, id);
                    id
                }
            };
            tx.insert_imported_vote(
                rater_id,
                prompt_id,
                response_ids[vote.a_index],
                response_ids[vote.b_index],
                vote.assignment_kind.as_deref().unwrap_or("imported"),
                vote.choice,
                vote.created_ms.unwrap_or(0),
                vote.source_guess.clone(),
                vote.source_confidence,
                vote.rationale.clone(),
                vote.time_on_page_ms,
            )
            .await?;
            report.votes_imported += 1;
        }
    }
    let read = reading
        .await
        .map_err(|e| ImportError::Io(std::io::Error::other(e.to_string())))?
        .map_err(reader_error)?;
    report.rows_read = read.rows_read;
    report.skipped = read
        .skipped
        .into_iter()
        .map(|s| (s.line, s.reason))
        .collect();
    if report.prompts_imported == 0 {
        return Err(ImportError::Study(
            "the file holds no importable rows".into(),
        ));
    }
    tx.commit().await?;
    Ok(report)
}
