//! Every export format is a table: a fixed list of typed columns, and rows of cells. This module
//! writes such a table as JSON Lines, CSV or Parquet, so the formats themselves only map a
//! [`VoteRecord`](crate::VoteRecord) to cells and every container gets the same columns and types.
//!
//! All three sinks stream: JSON Lines and CSV write each row as it comes; Parquet gathers rows into
//! record batches of at most [`PARQUET_BATCH_ROWS`] rows and closes a row group every
//! [`PARQUET_ROW_GROUP_ROWS`] rows or [`PARQUET_ROW_GROUP_BYTES`] encoded bytes, whichever comes first,
//! so memory stays bounded whatever the number of rows.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListArray, StringBuilder,
    StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::arrow_writer::{
    compute_leaves, get_column_writers, ArrowColumnWriter, ArrowLeafColumn,
};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesPtr};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::SchemaDescriptor;

use crate::Message;

/// The most rows in one Arrow record batch handed to the Parquet writer.
pub const PARQUET_BATCH_ROWS: usize = 1024;
/// The most rows in one Parquet row group.
pub const PARQUET_ROW_GROUP_ROWS: usize = 100_000;
/// A row group is closed once its encoded size reaches this many bytes.
pub const PARQUET_ROW_GROUP_BYTES: usize = 32 << 20;
/// ... or once the Arrow data fed into it reaches this many bytes. The column writers keep a row
/// group's compressed pages in memory until it closes, each in a buffer sized for the worst case
/// (about 1.2× the uncompressed page), so this bounds memory for long texts: with ~2.3 KB of text a
/// row, 64 MiB groups peaked at 300–390 MB, 12 MiB groups (about 5,000 rows) at ~160 MB.
pub const PARQUET_ROW_GROUP_INPUT_BYTES: usize = 12 << 20;

/// The container a table is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    Jsonl,
    Csv,
    Parquet,
}

impl Container {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Some(Container::Jsonl),
            "csv" => Some(Container::Csv),
            "parquet" => Some(Container::Parquet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Container::Jsonl => "jsonl",
            Container::Csv => "csv",
            Container::Parquet => "parquet",
        }
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

/// The compression of Parquet pages. Every reader supports both; Snappy is pyarrow's default and
/// fastest to read, Zstandard (level 1) gives files about half the size at a similar write speed.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    #[default]
    Snappy,
    Zstd,
    None,
}

impl ParquetCompression {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "snappy" => Some(ParquetCompression::Snappy),
            "zstd" | "zstandard" => Some(ParquetCompression::Zstd),
            "none" | "uncompressed" => Some(ParquetCompression::None),
            _ => None,
        }
    }

    fn to_parquet(self) -> Compression {
        match self {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd => {
                Compression::ZSTD(parquet::basic::ZstdLevel::try_new(1).expect("level 1 is valid"))
            }
            ParquetCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

/// The type of a column. Nested chat messages are `{role, content}` structs, as TRL, OpenAI and
/// Hugging Face `datasets` expect them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    OptionalText,
    Int,
    OptionalInt,
    Float,
    Bool,
    /// A list of `{role, content}` messages.
    Messages,
    /// OpenAI's `input`: a struct with one field `messages`, a list of `{role, content}`.
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColumnKind,
    /// Holds long, mostly distinct text (prompts, responses): Parquet then skips dictionary encoding
    /// and min/max statistics, which cost time and memory and gain nothing on such values.
    pub long_text: bool,
}

impl Column {
    pub const fn new(name: &'static str, kind: ColumnKind) -> Self {
        Column {
            name,
            kind,
            long_text: false,
        }
    }

    pub const fn long_text(name: &'static str, kind: ColumnKind) -> Self {
        Column {
            name,
            kind,
            long_text: true,
        }
    }

    /// The Parquet column paths (leaves) under this column.
    fn parquet_paths(&self) -> Vec<parquet::schema::types::ColumnPath> {
        let path = |parts: &[&str]| {
            parquet::schema::types::ColumnPath::new(
                parts.iter().map(|part| part.to_string()).collect(),
            )
        };
        match self.kind {
            ColumnKind::Messages => ["role", "content"]
                .iter()
                .map(|leaf| path(&[self.name, "list", "item", leaf]))
                .collect(),
            ColumnKind::Input => ["role", "content"]
                .iter()
                .map(|leaf| path(&[self.name, "messages", "list", "item", leaf]))
                .collect(),
            _ => vec![path(&[self.name])],
        }
    }
}

/// A conversation borrowed from a record, optionally followed by one more turn (the response), so
/// formats can write "prompt + response" without copying the prompt.
#[derive(Debug, Clone, Copy)]
pub struct Turns<'a> {
    pub head: &'a [Message],
    /// Messages after `head` (a multi-turn arena side's earlier answers and follow-ups).
    pub middle: &'a [Message],
    pub last: Option<(&'a str, &'a str)>,
}

impl<'a> Turns<'a> {
    pub fn of(head: &'a [Message]) -> Self {
        Turns {
            head,
            middle: &[],
            last: None,
        }
    }

    pub fn with_reply(head: &'a [Message], role: &'a str, content: &'a str) -> Self {
        Turns {
            head,
            middle: &[],
            last: Some((role, content)),
        }
    }

    /// `head`, then `middle`, then the message `role: content`.
    pub fn with_history_and_reply(
        head: &'a [Message],
        middle: &'a [Message],
        role: &'a str,
        content: &'a str,
    ) -> Self {
        Turns {
            head,
            middle,
            last: Some((role, content)),
        }
    }

    /// Only the one message `role: content`.
    pub fn single(role: &'a str, content: &'a str) -> Self {
        Turns {
            head: &[],
            middle: &[],
            last: Some((role, content)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let pair = |message: &'a Message| (message.role.as_str(), message.content.as_str());
        self.head
            .iter()
            .map(pair)
            .chain(self.middle.iter().map(pair))
            .chain(self.last)
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.middle.len() + usize::from(self.last.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One value of a row; its variant must match its column's [`ColumnKind`] (`Text` also fills an
/// `OptionalText` column, `Int` an `OptionalInt`).
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    Text(Cow<'a, str>),
    OptionalText(Option<&'a str>),
    Int(i64),
    OptionalInt(Option<i64>),
    Float(f64),
    Bool(bool),
    Messages(Turns<'a>),
    Input(Turns<'a>),
}

impl<'a> Cell<'a> {
    pub fn text(text: &'a str) -> Self {
        Cell::Text(Cow::Borrowed(text))
    }
}

/// A streaming writer of one table.
pub trait TableSink: Send {
    fn write_row(&mut self, cells: &[Cell<'_>]) -> io::Result<()>;
    /// Flushes everything (for Parquet: the last row group and the footer).
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Opens a sink of `container` for `columns` over `out` (which the sink buffers itself).
pub fn table_sink_with(
    container: Container,
    columns: &[Column],
    out: Box<dyn Write + Send>,
    compression: ParquetCompression,
) -> io::Result<Box<dyn TableSink>> {
    Ok(match container {
        Container::Jsonl => Box::new(JsonlSink::new(columns, out)),
        Container::Csv => Box::new(CsvSink::new(columns, out)?),
        Container::Parquet => Box::new(ParquetSink::new(columns, out, compression)?),
    })
}

/// Like [`table_sink_with`], Parquet compressed with Snappy.
pub fn table_sink(
    container: Container,
    columns: &[Column],
    out: Box<dyn Write + Send>,
) -> io::Result<Box<dyn TableSink>> {
    table_sink_with(container, columns, out, ParquetCompression::Snappy)
}

fn kind_mismatch(column: &Column) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a cell does not match the type of column `{}`", column.name),
    )
}

// ---------------------------------------------------------------------------------------------------
// JSON Lines

/// Rows are gathered into a buffer of this many bytes before they are written: with the 1 MiB
/// `BufWriter` of a file export, writes this large go straight through without another copy.
const JSONL_CHUNK: usize = 1 << 20;

/// One compact JSON object a line, keys in column order, so output is byte-stable.
pub struct JsonlSink {
    out: Box<dyn Write + Send>,
    columns: Vec<Column>,
    /// `"name":` for each column, escaped once.
    keys: Vec<Vec<u8>>,
    /// Whole rows not yet written.
    pending: Vec<u8>,
}

impl JsonlSink {
    pub fn new(columns: &[Column], out: Box<dyn Write + Send>) -> Self {
        let keys = columns
            .iter()
            .map(|column| {
                let mut key = serde_json::to_vec(column.name).expect("a column name serializes");
                key.push(b':');
                key
            })
            .collect();
        JsonlSink {
            out,
            columns: columns.to_vec(),
            keys,
            pending: Vec::with_capacity(JSONL_CHUNK + (64 << 10)),
        }
    }
}

/// Appends `text` as a JSON string, byte for byte as `serde_json` writes it (`\"`, `\\`, the short
/// escapes `\b \f \n \r \t`, other control characters as `\u00xx`, everything else as is), but eight
/// bytes at a time: a word without a byte to escape is skipped by three SWAR tests, so long prose is
/// copied in spans. (`serde_json` looks every byte up in a table: a quarter of an export's CPU time.)
pub fn json_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut span_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !word_needs_escape(word) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let byte = bytes[i];
            if byte < 0x20 || byte == b'"' || byte == b'\\' {
                out.extend_from_slice(&bytes[span_start..i]);
                push_escape(out, byte);
                span_start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[span_start..]);
    out.push(b'"');
}

/// Whether any byte of `word` is a control character, `"` or `\`. Never false for such a word (it can
/// be true for a word without one, which then is only checked byte by byte).
#[inline]
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGH_BITS != 0
}

fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

fn json_messages(line: &mut Vec<u8>, turns: &Turns<'_>) {
    line.push(b'[');
    for (index, (role, content)) in turns.iter().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        line.extend_from_slice(b"{\"role\":");
        json_string(line, role);
        line.extend_from_slice(b",\"content\":");
        json_string(line, content);
        line.push(b'}');
    }
    line.push(b']');
}

/// Appends a cell as JSON (shared by JSON Lines and by CSV's nested columns).
fn json_cell(line: &mut Vec<u8>, cell: &Cell<'_>) {
    match cell {
        Cell::Text(text) => json_string(line, text),
        Cell::OptionalText(Some(text)) => json_string(line, text),
        Cell::OptionalText(None) | Cell::OptionalInt(None) => line.extend_from_slice(b"null"),
        Cell::Int(value) | Cell::OptionalInt(Some(value)) => {
            write!(line, "{value}").expect("writing to a Vec cannot fail");
        }
        Cell::Float(value) => {
            serde_json::to_writer(line, value).expect("writing JSON to a Vec cannot fail")
        }
        Cell::Bool(true) => line.extend_from_slice(b"true"),
        Cell::Bool(false) => line.extend_from_slice(b"false"),
        Cell::Messages(turns) => json_messages(line, turns),
        Cell::Input(turns) => {
            line.extend_from_slice(b"{\"messages\":");
            json_messages(line, turns);
            line.push(b'}');
        }
    }
}

fn cell_fits(kind: ColumnKind, cell: &Cell<'_>) -> bool {
    matches!(
        (kind, cell),
        (ColumnKind::Text, Cell::Text(_))
            | (
                ColumnKind::OptionalText,
                Cell::Text(_) | Cell::OptionalText(_)
            )
            | (ColumnKind::Int, Cell::Int(_))
            | (ColumnKind::OptionalInt, Cell::Int(_) | Cell::OptionalInt(_))
            | (ColumnKind::Float, Cell::Float(_))
            | (ColumnKind::Bool, Cell::Bool(_))
            | (ColumnKind::Messages, Cell::Messages(_))
            | (ColumnKind::Input, Cell::Input(_))
    )
}

fn check_row(columns: &[Column], cells: &[Cell<'_>]) -> io::Result<()> {
    if columns.len() != cells.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a row has {} cells for {} columns",
                cells.len(),
                columns.len()
            ),
        ));
    }
    match columns
        .iter()
        .zip(cells)
        .find(|(column, cell)| !cell_fits(column.kind, cell))
    {
        Some((column, _)) => Err(kind_mismatch(column)),
        None => Ok(()),
    }
}

impl TableSink for JsonlSink {
    fn write_row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        check_row(&self.columns, cells)?;
        let line = &mut self.pending;
        line.push(b'{');
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                line.push(b',');
            }
            line.extend_from_slice(&self.keys[index]);
            json_cell(line, cell);
        }
        line.extend_from_slice(b"}\n");
        if self.pending.len() >= JSONL_CHUNK {
            self.out.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------------------------------
// CSV

/// RFC 4180 CSV with a header row. Missing values are empty fields; nested columns (messages) are
/// JSON text in their field, so every row stays one record. Text fields are passed through
/// [`neutralize_formula`], since model output and rationales are untrusted and CSV files are opened
/// in spreadsheets.
pub struct CsvSink {
    out: csv::Writer<Box<dyn Write + Send>>,
    columns: Vec<Column>,
    scratch: Vec<u8>,
}

/// A text cell as a spreadsheet may safely read it: one that starts with `=`, `+`, `-`, `@`, a tab
/// or a carriage return would be taken for a formula (`=HYPERLINK(…)`, `=cmd|…`), so it gets a
/// leading `'`, as OWASP's "CSV injection" page recommends; any other text is unchanged. Numbers
/// are written as numbers and never pass through here: `-0.5` is data, not a formula.
pub fn neutralize_formula(text: &str) -> Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

impl CsvSink {
    pub fn new(columns: &[Column], out: Box<dyn Write + Send>) -> io::Result<Self> {
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(1 << 16)
            .from_writer(out);
        out.write_record(columns.iter().map(|column| column.name))?;
        Ok(CsvSink {
            out,
            columns: columns.to_vec(),
            scratch: Vec::with_capacity(4096),
        })
    }
}

impl TableSink for CsvSink {
    fn write_row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        check_row(&self.columns, cells)?;
        for cell in cells {
            match cell {
                Cell::Text(text) => self.out.write_field(neutralize_formula(text).as_bytes())?,
                Cell::OptionalText(text) => self
                    .out
                    .write_field(neutralize_formula(text.unwrap_or("")).as_bytes())?,
                Cell::OptionalInt(None) => self.out.write_field(b"")?,
                _ => {
                    self.scratch.clear();
                    json_cell(&mut self.scratch, cell);
                    self.out.write_field(&self.scratch)?;
                }
            }
        }
        self.out.write_record(None::<&[u8]>)?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------------------------------
// Parquet

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

fn messages_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(message_fields()),
        false,
    )))
}

/// The Arrow type of a column, the same in every Parquet file Moat writes.
pub fn arrow_field(column: &Column) -> Field {
    match column.kind {
        ColumnKind::Text => Field::new(column.name, DataType::Utf8, false),
        ColumnKind::OptionalText => Field::new(column.name, DataType::Utf8, true),
        ColumnKind::Int => Field::new(column.name, DataType::Int64, false),
        ColumnKind::OptionalInt => Field::new(column.name, DataType::Int64, true),
        ColumnKind::Float => Field::new(column.name, DataType::Float64, false),
        ColumnKind::Bool => Field::new(column.name, DataType::Boolean, false),
        ColumnKind::Messages => Field::new(column.name, messages_type(), false),
        ColumnKind::Input => Field::new(
            column.name,
            DataType::Struct(Fields::from(vec![Field::new(
                "messages",
                messages_type(),
                false,
            )])),
            false,
        ),
    }
}

pub fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(arrow_field).collect::<Vec<_>>(),
    ))
}

struct MessagesBuilder {
    offsets: Vec<i32>,
    roles: StringBuilder,
    contents: StringBuilder,
}

impl MessagesBuilder {
    fn new() -> Self {
        MessagesBuilder {
            offsets: vec![0],
            roles: StringBuilder::new(),
            contents: StringBuilder::new(),
        }
    }

    fn append(&mut self, turns: &Turns<'_>) -> io::Result<()> {
        for (role, content) in turns.iter() {
            self.roles.append_value(role);
            self.contents.append_value(content);
        }
        let last = *self.offsets.last().expect("offsets start with 0");
        let next = i32::try_from(turns.len())
            .ok()
            .and_then(|count| last.checked_add(count));
        let next =
            next.ok_or_else(|| io::Error::other("too many messages in one Parquet batch"))?;
        self.offsets.push(next);
        Ok(())
    }

    fn finish(&mut self) -> ListArray {
        let mut offsets = Vec::with_capacity(self.offsets.len());
        offsets.push(0);
        let offsets = std::mem::replace(&mut self.offsets, offsets);
        let values = StructArray::new(
            message_fields(),
            vec![
                Arc::new(finish_reserving(&mut self.roles)) as ArrayRef,
                Arc::new(finish_reserving(&mut self.contents)) as ArrayRef,
            ],
            None,
        );
        let item = Arc::new(Field::new(
            "item",
            DataType::Struct(message_fields()),
            false,
        ));
        ListArray::new(
            item,
            OffsetBuffer::new(offsets.into()),
            Arc::new(values),
            None,
        )
    }
}

/// Finishes a string builder and gives it room for a batch like the one just finished, so the next
/// batch does not grow its buffers by doubling (copying each value several times over).
fn finish_reserving(builder: &mut StringBuilder) -> arrow::array::StringArray {
    let array = builder.finish();
    *builder = StringBuilder::with_capacity(array.len(), array.value_data().len());
    array
}

/// [`finish_reserving`] for numeric builders.
fn finish_primitive_reserving<T: arrow::datatypes::ArrowPrimitiveType>(
    builder: &mut arrow::array::PrimitiveBuilder<T>,
) -> arrow::array::PrimitiveArray<T> {
    let array = builder.finish();
    *builder = arrow::array::PrimitiveBuilder::with_capacity(array.len());
    array
}

enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Messages(MessagesBuilder),
    Input(MessagesBuilder),
}

impl ColumnBuilder {
    fn new(kind: ColumnKind) -> Self {
        match kind {
            ColumnKind::Text | ColumnKind::OptionalText => {
                ColumnBuilder::Text(StringBuilder::new())
            }
            ColumnKind::Int | ColumnKind::OptionalInt => ColumnBuilder::Int(Int64Builder::new()),
            ColumnKind::Float => ColumnBuilder::Float(Float64Builder::new()),
            ColumnKind::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            ColumnKind::Messages => ColumnBuilder::Messages(MessagesBuilder::new()),
            ColumnKind::Input => ColumnBuilder::Input(MessagesBuilder::new()),
        }
    }

    /// The caller has checked that the cell fits the column.
    fn append(&mut self, cell: &Cell<'_>) -> io::Result<()> {
        match (self, cell) {
            (ColumnBuilder::Text(builder), Cell::Text(text)) => builder.append_value(text),
            (ColumnBuilder::Text(builder), Cell::OptionalText(text)) => {
                builder.append_option(*text)
            }
            (ColumnBuilder::Int(builder), Cell::Int(value)) => builder.append_value(*value),
            (ColumnBuilder::Int(builder), Cell::OptionalInt(value)) => {
                builder.append_option(*value)
            }
            (ColumnBuilder::Float(builder), Cell::Float(value)) => builder.append_value(*value),
            (ColumnBuilder::Bool(builder), Cell::Bool(value)) => builder.append_value(*value),
            (ColumnBuilder::Messages(builder), Cell::Messages(turns)) => builder.append(turns)?,
            (ColumnBuilder::Input(builder), Cell::Input(turns)) => builder.append(turns)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a cell does not match its column",
                ))
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Text(builder) => Arc::new(finish_reserving(builder)),
            ColumnBuilder::Int(builder) => Arc::new(finish_primitive_reserving(builder)),
            ColumnBuilder::Float(builder) => Arc::new(finish_primitive_reserving(builder)),
            ColumnBuilder::Bool(builder) => {
                let array = builder.finish();
                *builder = BooleanBuilder::with_capacity(array.len());
                Arc::new(array)
            }
            ColumnBuilder::Messages(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Input(builder) => {
                let messages = builder.finish();
                let fields = Fields::from(vec![Field::new("messages", messages_type(), false)]);
                Arc::new(StructArray::new(
                    fields,
                    vec![Arc::new(messages) as ArrayRef],
                    None,
                ))
            }
        }
    }
}

/// Parquet, written row group by row group. Each batch's columns are encoded and compressed on up to
/// [`parquet_threads`] threads (compression is most of the cost, and the long text columns are
/// separate), and the column chunks are appended in schema order, so the file is the same bytes
/// whatever the number of threads.
pub struct ParquetSink {
    file: SerializedFileWriter<Box<dyn Write + Send>>,
    schema: SchemaRef,
    parquet_schema: SchemaDescriptor,
    properties: WriterPropertiesPtr,
    columns: Vec<Column>,
    builders: Vec<ColumnBuilder>,
    rows_in_batch: usize,
    /// The column writers of the row group in progress (one per Parquet leaf column).
    writers: Vec<ArrowColumnWriter>,
    rows_in_group: usize,
    /// Arrow buffer bytes encoded into the row group in progress.
    input_bytes_in_group: usize,
    threads: usize,
}

/// How many threads encode Parquet columns: one core fewer than available (the rows come from a
/// reader on a thread of its own: on 2 cores a second encoding thread only competed with it, and its
/// pages, allocated on short-lived threads, raised peak memory by a fifth), at least 1, at most 4.
pub fn parquet_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |threads| threads.get().saturating_sub(1))
        .clamp(1, 4)
}

fn parquet_error(error: parquet::errors::ParquetError) -> io::Error {
    match error {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io_error) => *io_error,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    }
}

impl ParquetSink {
    pub fn new(
        columns: &[Column],
        out: Box<dyn Write + Send>,
        compression: ParquetCompression,
    ) -> io::Result<Self> {
        let schema = arrow_schema(columns);
        let mut properties = WriterProperties::builder()
            .set_compression(compression.to_parquet())
            .set_max_row_group_size(PARQUET_ROW_GROUP_ROWS);
        for column in columns.iter().filter(|column| column.long_text) {
            for path in column.parquet_paths() {
                properties = properties
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_statistics_enabled(path, EnabledStatistics::None);
            }
        }
        let mut properties = properties.build();
        // The Arrow schema in the footer lets pyarrow and `datasets` restore the exact types.
        add_encoded_arrow_schema_to_metadata(&schema, &mut properties);
        let properties = Arc::new(properties);
        let parquet_schema = ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(parquet_error)?;
        // The Parquet writer issues many small writes; buffer them.
        let out: Box<dyn Write + Send> = Box::new(BufWriter::with_capacity(1 << 16, out));
        let file =
            SerializedFileWriter::new(out, parquet_schema.root_schema_ptr(), properties.clone())
                .map_err(parquet_error)?;
        let writers =
            get_column_writers(&parquet_schema, &properties, &schema).map_err(parquet_error)?;
        let builders = columns
            .iter()
            .map(|column| ColumnBuilder::new(column.kind))
            .collect();
        Ok(ParquetSink {
            file,
            schema,
            parquet_schema,
            properties,
            columns: columns.to_vec(),
            builders,
            rows_in_batch: 0,
            writers,
            rows_in_group: 0,
            input_bytes_in_group: 0,
            threads: parquet_threads(),
        })
    }

    /// Encodes on this many threads (at least one) instead of [`parquet_threads`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Encodes the buffered rows into the row group in progress, and closes the row group when it
    /// is full.
    fn flush_batch(&mut self) -> io::Result<()> {
        if self.rows_in_batch == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        debug_assert!(arrays.iter().all(|array| array.len() == self.rows_in_batch));
        let mut leaves = Vec::with_capacity(self.writers.len());
        for (field, array) in self.schema.fields().iter().zip(&arrays) {
            leaves.extend(compute_leaves(field, array).map_err(parquet_error)?);
        }
        // Balance the leaves over the threads by their size in memory, largest first.
        let sizes: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .zip(&arrays)
            .flat_map(|(field, array)| {
                let leaves = leaf_count(field.data_type());
                std::iter::repeat_n(array.get_buffer_memory_size() / leaves, leaves)
            })
            .collect();
        let mut work: Vec<(&mut ArrowColumnWriter, &ArrowLeafColumn, usize)> = self
            .writers
            .iter_mut()
            .zip(&leaves)
            .zip(&sizes)
            .map(|((writer, leaf), &size)| (writer, leaf, size))
            .collect();
        work.sort_by_key(|&(_, _, size)| std::cmp::Reverse(size));
        let mut shares: Vec<(usize, Vec<(&mut ArrowColumnWriter, &ArrowLeafColumn)>)> =
            (0..self.threads).map(|_| (0, Vec::new())).collect();
        for (writer, leaf, size) in work {
            let lightest = shares
                .iter_mut()
                .min_by_key(|(load, _)| *load)
                .expect("at least one thread");
            lightest.0 += size;
            lightest.1.push((writer, leaf));
        }
        let encode = |share: Vec<(&mut ArrowColumnWriter, &ArrowLeafColumn)>| -> parquet::errors::Result<()> {
            share.into_iter().try_for_each(|(writer, leaf)| writer.write(leaf))
        };
        let mut shares = shares
            .into_iter()
            .map(|(_, share)| share)
            .filter(|share| !share.is_empty());
        let first = shares.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let others: Vec<_> = shares
                .map(|share| scope.spawn(move || encode(share)))
                .collect();
            let mut result = encode(first);
            for other in others {
                let joined = other.join().unwrap_or_else(|_| {
                    Err(parquet::errors::ParquetError::General(
                        "a Parquet encoding thread panicked".into(),
                    ))
                });
                result = result.and(joined);
            }
            result
        })
        .map_err(parquet_error)?;
        self.rows_in_group += self.rows_in_batch;
        self.input_bytes_in_group += sizes.iter().sum::<usize>();
        self.rows_in_batch = 0;
        let buffered: usize = self
            .writers
            .iter()
            .map(ArrowColumnWriter::memory_size)
            .sum();
        if self.rows_in_group >= PARQUET_ROW_GROUP_ROWS
            || buffered >= PARQUET_ROW_GROUP_BYTES
            || self.input_bytes_in_group >= PARQUET_ROW_GROUP_INPUT_BYTES
        {
            self.close_row_group()?;
        }
        Ok(())
    }

    fn close_row_group(&mut self) -> io::Result<()> {
        if self.rows_in_group == 0 {
            return Ok(());
        }
        let fresh = get_column_writers(&self.parquet_schema, &self.properties, &self.schema)
            .map_err(parquet_error)?;
        let writers = std::mem::replace(&mut self.writers, fresh);
        let mut row_group = self.file.next_row_group().map_err(parquet_error)?;
        for writer in writers {
            writer
                .close()
                .and_then(|chunk| chunk.append_to_row_group(&mut row_group))
                .map_err(parquet_error)?;
        }
        row_group.close().map_err(parquet_error)?;
        self.rows_in_group = 0;
        self.input_bytes_in_group = 0;
        Ok(())
    }
}

/// The number of Parquet leaf columns under an Arrow type.
fn leaf_count(data_type: &DataType) -> usize {
    match data_type {
        DataType::List(item) => leaf_count(item.data_type()),
        DataType::Struct(fields) => fields
            .iter()
            .map(|field| leaf_count(field.data_type()))
            .sum(),
        _ => 1,
    }
}

impl TableSink for ParquetSink {
    fn write_row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        check_row(&self.columns, cells)?;
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            builder.append(cell)?;
        }
        self.rows_in_batch += 1;
        if self.rows_in_batch >= PARQUET_BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush_batch()?;
        self.close_row_group()?;
        let mut out = self.file.into_inner().map_err(parquet_error)?;
        out.flush()
    }
}
