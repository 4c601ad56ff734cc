//! The export formats: each maps a [`VoteRecord`] to zero or more rows of a fixed table, written as
//! JSON Lines, CSV or Parquet by [`crate::table`].

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

use crate::hh::render_transcript;
use crate::record::rfc3339_utc;
use crate::table::{
    table_sink_with, Cell, Column, ColumnKind, Container, ParquetCompression, TableSink, Turns,
};
use crate::{Choice, ExportSummary, RecordWriter, VoteRecord};

/// An export format, as named on the command line and in the admin download.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// TRL explicit-prompt preference: `prompt`, `chosen`, `rejected` plus Moat's metadata columns.
    Trl,
    /// Exactly the three columns TRL's `DPOTrainer` reads: `prompt`, `chosen`, `rejected`.
    Dpo,
    /// TRL's unpaired format for `KTOTrainer`: `prompt`, `completion`, `label`, one row per side.
    Kto,
    /// Anthropic HH-RLHF: `chosen`, `rejected` as whole `\n\nHuman: …\n\nAssistant: …` transcripts.
    HhRlhf,
    /// OpenAI preference fine-tuning: `input.messages`, `preferred_output`, `non_preferred_output`.
    OpenAi,
    /// Chatbot Arena battles (FastChat's `clean_battle` columns).
    Arena,
    /// Every vote with all its recorded fields: the raw dataset for analysis.
    Votes,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Trl,
        Format::Dpo,
        Format::Kto,
        Format::HhRlhf,
        Format::OpenAi,
        Format::Arena,
        Format::Votes,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trl" => Some(Format::Trl),
            "dpo" => Some(Format::Dpo),
            "kto" => Some(Format::Kto),
            "hh-rlhf" | "hh_rlhf" | "hh" | "anthropic" => Some(Format::HhRlhf),
            "openai" | "open-ai" => Some(Format::OpenAi),
            "arena" | "chatbot-arena" => Some(Format::Arena),
            "votes" | "raw" => Some(Format::Votes),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Trl => "trl",
            Format::Dpo => "dpo",
            Format::Kto => "kto",
            Format::HhRlhf => "hh-rlhf",
            Format::OpenAi => "openai",
            Format::Arena => "arena",
            Format::Votes => "votes",
        }
    }

    /// Whether `--conversational` changes this format (prompt and responses as message lists).
    pub fn has_conversational_variant(self) -> bool {
        matches!(self, Format::Trl | Format::Dpo | Format::Kto)
    }

    /// Whether ties and both-bad votes produce rows in this format (otherwise they are counted as
    /// skipped). KTO writes a both-bad vote as two undesirable rows; a tie has no label.
    pub fn keeps(self, choice: Choice) -> bool {
        match choice {
            Choice::Left | Choice::Right => true,
            Choice::Tie => matches!(self, Format::Arena | Format::Votes),
            Choice::BothBad => matches!(self, Format::Arena | Format::Votes | Format::Kto),
        }
    }

    /// The columns of this format, in file order.
    pub fn columns(self, conversational: bool) -> Vec<Column> {
        use ColumnKind::*;
        let conversation = if conversational && self.has_conversational_variant() {
            Messages
        } else {
            Text
        };
        let columns: &[(&'static str, ColumnKind)] = match self {
            Format::Trl => &[
                ("prompt", conversation),
                ("chosen", conversation),
                ("rejected", conversation),
                ("study", Text),
                ("model_chosen", Text),
                ("model_rejected", Text),
                ("rater", Text),
                ("vote_id", Int),
                ("created", Text),
            ],
            Format::Dpo => &[
                ("prompt", conversation),
                ("chosen", conversation),
                ("rejected", conversation),
            ],
            Format::Kto => &[
                ("prompt", conversation),
                ("completion", conversation),
                ("label", Bool),
            ],
            Format::HhRlhf => &[("chosen", Text), ("rejected", Text)],
            Format::OpenAi => &[
                ("input", Input),
                ("preferred_output", Messages),
                ("non_preferred_output", Messages),
            ],
            Format::Arena => &[
                ("question_id", Text),
                ("model_a", Text),
                ("model_b", Text),
                ("winner", Text),
                ("judge", Text),
                ("conversation_a", Messages),
                ("conversation_b", Messages),
                ("turn", Int),
                ("anony", Bool),
                ("language", OptionalText),
                ("tstamp", Float),
            ],
            Format::Votes => &[
                ("vote_id", Int),
                ("study", Text),
                ("prompt_id", Text),
                ("conversation", Messages),
                ("category", OptionalText),
                ("language", OptionalText),
                ("left_model", Text),
                ("left_openness", Text),
                ("left_response", Text),
                ("right_model", Text),
                ("right_openness", Text),
                ("right_response", Text),
                ("choice", Text),
                ("rater", Text),
                ("created", Text),
                ("created_ms", Int),
                ("source_guess", OptionalText),
                ("source_confidence", OptionalInt),
                ("rationale", OptionalText),
                ("time_on_page_ms", OptionalInt),
                ("assignment_kind", Text),
                ("completion_code", OptionalText),
                ("left_history", Messages),
                ("right_history", Messages),
            ],
        };
        columns
            .iter()
            .map(|&(name, kind)| {
                if LONG_TEXT_COLUMNS.contains(&name) {
                    Column::long_text(name, kind)
                } else {
                    Column::new(name, kind)
                }
            })
            .collect()
    }

    /// The file name of this format's export for one split, e.g. `trl-train.parquet`.
    pub fn file_name(self, split: &str, container: Container) -> String {
        format!("{}-{split}.{}", self.as_str(), container.extension())
    }
}

/// Columns that hold prompts, responses or free text: long and mostly distinct values.
const LONG_TEXT_COLUMNS: [&str; 16] = [
    "prompt",
    "chosen",
    "rejected",
    "completion",
    "conversation",
    "conversation_a",
    "conversation_b",
    "left_response",
    "right_response",
    "rationale",
    "input",
    "preferred_output",
    "non_preferred_output",
    "source_guess",
    "left_history",
    "right_history",
];

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an export is written (what is written is chosen by [`crate::options`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportOptions {
    pub container: Container,
    /// Prompt and responses as `{role, content}` message lists (TRL conversational) rather than text.
    pub conversational: bool,
    /// Only for Parquet.
    pub compression: ParquetCompression,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            container: Container::Jsonl,
            conversational: false,
            compression: ParquetCompression::Snappy,
        }
    }
}

/// Opens a streaming writer of `format` over `out`.
pub fn writer_for(
    format: Format,
    options: &ExportOptions,
    out: Box<dyn Write + Send>,
) -> io::Result<Box<dyn RecordWriter + Send>> {
    let conversational = options.conversational && format.has_conversational_variant();
    let columns = format.columns(conversational);
    let sink = table_sink_with(options.container, &columns, out, options.compression)?;
    Ok(Box::new(FormatWriter {
        format,
        conversational,
        sink,
        summary: ExportSummary::default(),
    }))
}

/// The writer behind [`writer_for`].
pub struct FormatWriter {
    format: Format,
    conversational: bool,
    sink: Box<dyn TableSink>,
    summary: ExportSummary,
}

/// "prompt + chosen" and such, as the format's cell for a text or conversational column.
fn prompt_cell<'a>(record: &'a VoteRecord, prompt_text: &'a str, conversational: bool) -> Cell<'a> {
    if conversational {
        Cell::Messages(Turns::of(&record.conversation))
    } else {
        Cell::text(prompt_text)
    }
}

/// The number of user turns, as FastChat counts `turn` (a multi-turn battle's follow-ups included).
fn user_turns(record: &VoteRecord) -> i64 {
    record
        .conversation
        .iter()
        .chain(&record.left_history)
        .filter(|message| message.role == "user")
        .count()
        .max(1) as i64
}

/// One side's turns after the prompt as messages: a multi-turn side's history, then its answer.
fn side_messages(record: &VoteRecord, left: bool) -> Cell<'_> {
    let (history, answer) = if left {
        (&record.left_history, &record.left_response)
    } else {
        (&record.right_history, &record.right_response)
    };
    Cell::Messages(Turns::with_history_and_reply(
        &[],
        history,
        "assistant",
        answer,
    ))
}

/// One side as plain text (see [`VoteRecord::chosen_rejected_text`]).
fn side_text(record: &VoteRecord, left: bool) -> Cow<'_, str> {
    let (history, answer) = if left {
        (&record.left_history, &record.left_response)
    } else {
        (&record.right_history, &record.right_response)
    };
    if !record.is_multi_turn() {
        return Cow::Borrowed(answer.as_str());
    }
    let mut turns: Vec<String> = history
        .iter()
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect();
    turns.push(format!("assistant: {answer}"));
    Cow::Owned(turns.join("\n\n"))
}

/// Arena's `winner` for a choice (model_a is the left side).
pub fn arena_winner(choice: Choice) -> &'static str {
    match choice {
        Choice::Left => "model_a",
        Choice::Right => "model_b",
        Choice::Tie => "tie",
        Choice::BothBad => "tie (bothbad)",
    }
}

impl FormatWriter {
    fn count_skip(&mut self, choice: Choice) {
        match choice {
            Choice::BothBad => self.summary.skipped_both_bad += 1,
            _ => self.summary.skipped_ties += 1,
        }
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        self.sink.write_row(cells)?;
        self.summary.rows_written += 1;
        Ok(())
    }
}

impl RecordWriter for FormatWriter {
    fn write_record(&mut self, record: &VoteRecord) -> io::Result<()> {
        if !self.format.keeps(record.choice) {
            self.count_skip(record.choice);
            return Ok(());
        }
        let conversational = self.conversational;
        let prompt_text = if conversational {
            std::borrow::Cow::Borrowed("")
        } else {
            record.prompt_text()
        };
        match self.format {
            Format::Trl | Format::Dpo => {
                let (model_chosen, chosen_text, model_rejected, rejected_text) = record
                    .chosen_rejected_text()
                    .expect("the format keeps only decided votes");
                let left_chosen = record.choice == Choice::Left;
                let prompt = prompt_cell(record, &prompt_text, conversational);
                let (chosen, rejected) = if conversational {
                    (
                        side_messages(record, left_chosen),
                        side_messages(record, !left_chosen),
                    )
                } else {
                    (Cell::Text(chosen_text), Cell::Text(rejected_text))
                };
                if self.format == Format::Dpo {
                    return self.row(&[prompt, chosen, rejected]);
                }
                let created = rfc3339_utc(record.created_ms);
                self.row(&[
                    prompt,
                    chosen,
                    rejected,
                    Cell::text(&record.study),
                    Cell::text(model_chosen),
                    Cell::text(model_rejected),
                    Cell::text(&record.rater),
                    Cell::Int(record.vote_id),
                    Cell::Text(Cow::Owned(created)),
                ])
            }
            Format::Kto => {
                let labels: [bool; 2] = match record.choice {
                    Choice::Left => [true, false],
                    Choice::Right => [false, true],
                    Choice::BothBad => [false, false],
                    Choice::Tie => unreachable!("KTO does not keep ties"),
                };
                for (left, label) in [(true, labels[0]), (false, labels[1])] {
                    let prompt = prompt_cell(record, &prompt_text, conversational);
                    let completion = if conversational {
                        side_messages(record, left)
                    } else {
                        Cell::Text(side_text(record, left))
                    };
                    self.row(&[prompt, completion, Cell::Bool(label)])?;
                }
                Ok(())
            }
            Format::HhRlhf => {
                let left_chosen = record.choice == Choice::Left;
                let mut chosen_text = render_transcript(&record.conversation);
                let mut rejected_text = chosen_text.clone();
                let (left_turns, right_turns) = (record.left_turns(), record.right_turns());
                let (chosen, rejected) = if left_chosen {
                    (&left_turns, &right_turns)
                } else {
                    (&right_turns, &left_turns)
                };
                crate::hh::append_transcript(&mut chosen_text, chosen);
                crate::hh::append_transcript(&mut rejected_text, rejected);
                self.row(&[
                    Cell::Text(Cow::Owned(chosen_text)),
                    Cell::Text(Cow::Owned(rejected_text)),
                ])
            }
            Format::OpenAi => {
                // OpenAI's preference format has one shared input and one assistant message per
                // side: a multi-turn battle, whose sides differ before their last answers, does not
                // fit it and is left out (counted).
                if record.is_multi_turn() {
                    self.summary.skipped_multi_turn += 1;
                    return Ok(());
                }
                let (_, chosen, _, rejected) = record
                    .chosen_rejected()
                    .expect("the format keeps only decided votes");
                self.row(&[
                    Cell::Input(Turns::of(&record.conversation)),
                    Cell::Messages(Turns::single("assistant", chosen)),
                    Cell::Messages(Turns::single("assistant", rejected)),
                ])
            }
            Format::Arena => self.row(&[
                Cell::text(&record.prompt_id),
                Cell::text(&record.left_model),
                Cell::text(&record.right_model),
                Cell::text(arena_winner(record.choice)),
                Cell::text(&record.rater),
                Cell::Messages(Turns::with_history_and_reply(
                    &record.conversation,
                    &record.left_history,
                    "assistant",
                    &record.left_response,
                )),
                Cell::Messages(Turns::with_history_and_reply(
                    &record.conversation,
                    &record.right_history,
                    "assistant",
                    &record.right_response,
                )),
                Cell::Int(user_turns(record)),
                Cell::Bool(true),
                Cell::OptionalText(record.language.as_deref()),
                Cell::Float(record.created_ms as f64 / 1000.0),
            ]),
            Format::Votes => self.row(&[
                Cell::Int(record.vote_id),
                Cell::text(&record.study),
                Cell::text(&record.prompt_id),
                Cell::Messages(Turns::of(&record.conversation)),
                Cell::OptionalText(record.category.as_deref()),
                Cell::OptionalText(record.language.as_deref()),
                Cell::text(&record.left_model),
                Cell::text(record.left_openness.as_str()),
                Cell::text(&record.left_response),
                Cell::text(&record.right_model),
                Cell::text(record.right_openness.as_str()),
                Cell::text(&record.right_response),
                Cell::text(record.choice.as_str()),
                Cell::text(&record.rater),
                Cell::Text(Cow::Owned(rfc3339_utc(record.created_ms))),
                Cell::Int(record.created_ms),
                Cell::OptionalText(record.source_guess.as_deref()),
                Cell::OptionalInt(record.source_confidence),
                Cell::OptionalText(record.rationale.as_deref()),
                Cell::OptionalInt(record.time_on_page_ms),
                Cell::text(&record.assignment_kind),
                Cell::OptionalText(record.completion_code.as_deref()),
                Cell::Messages(Turns::of(&record.left_history)),
                Cell::Messages(Turns::of(&record.right_history)),
            ]),
        }
    }

    fn finish(self: Box<Self>) -> io::Result<ExportSummary> {
        self.sink.finish()?;
        Ok(self.summary)
    }
}
