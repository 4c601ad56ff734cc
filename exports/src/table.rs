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
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::Message;

/// The most rows in one Arrow record batch handed to the Parquet writer.
pub const PARQUET_BATCH_ROWS: usize = 4096;
/// The most rows in one Parquet row group.
pub const PARQUET_ROW_GROUP_ROWS: usize = 100_000;
/// A row group is closed once its encoded size reaches this many bytes (bounds memory for long texts).
pub const PARQUET_ROW_GROUP_BYTES: usize = 64 << 20;

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
}

impl Column {
    pub const fn new(name: &'static str, kind: ColumnKind) -> Self {
        Column { name, kind }
    }
}

/// A conversation borrowed from a record, optionally followed by one more turn (the response), so
/// formats can write "prompt + response" without copying the prompt.
#[derive(Debug, Clone, Copy)]
pub struct Turns<'a> {
    pub head: &'a [Message],
    pub last: Option<(&'a str, &'a str)>,
}

impl<'a> Turns<'a> {
    pub fn of(head: &'a [Message]) -> Self {
        Turns { head, last: None }
    }

    pub fn with_reply(head: &'a [Message], role: &'a str, content: &'a str) -> Self {
        Turns {
            head,
            last: Some((role, content)),
        }
    }

    /// Only the one message `role: content`.
    pub fn single(role: &'a str, content: &'a str) -> Self {
        Turns {
            head: &[],
            last: Some((role, content)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let head = self
            .head
            .iter()
            .map(|message| (message.role.as_str(), message.content.as_str()));
        head.chain(self.last)
    }

    pub fn len(&self) -> usize {
        self.head.len() + usize::from(self.last.is_some())
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
pub fn table_sink(
    container: Container,
    columns: &[Column],
    out: Box<dyn Write + Send>,
) -> io::Result<Box<dyn TableSink>> {
    Ok(match container {
        Container::Jsonl => Box::new(JsonlSink::new(columns, out)),
        Container::Csv => Box::new(CsvSink::new(columns, out)?),
        Container::Parquet => Box::new(ParquetSink::new(columns, out)?),
    })
}

fn kind_mismatch(column: &Column) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a cell does not match the type of column `{}`", column.name),
    )
}

// ---------------------------------------------------------------------------------------------------
// JSON Lines

/// One compact JSON object a line, keys in column order, so output is byte-stable.
pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    columns: Vec<Column>,
    /// `"name":` for each column, escaped once.
    keys: Vec<Vec<u8>>,
    line: Vec<u8>,
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
            out: BufWriter::with_capacity(1 << 16, out),
            columns: columns.to_vec(),
            keys,
            line: Vec::with_capacity(4096),
        }
    }
}

fn json_string(line: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(line, text).expect("writing JSON to a Vec cannot fail");
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
            line.extend_from_slice(itoa_buffer(*value).as_bytes());
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

fn itoa_buffer(value: i64) -> String {
    value.to_string()
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
        self.line.clear();
        self.line.push(b'{');
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                self.line.push(b',');
            }
            self.line.extend_from_slice(&self.keys[index]);
            json_cell(&mut self.line, cell);
        }
        self.line.extend_from_slice(b"}\n");
        self.out.write_all(&self.line)
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------------------------------
// CSV

/// RFC 4180 CSV with a header row. Missing values are empty fields; nested columns (messages) are
/// JSON text in their field, so every row stays one record.
pub struct CsvSink {
    out: csv::Writer<Box<dyn Write + Send>>,
    columns: Vec<Column>,
    scratch: Vec<u8>,
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
                Cell::Text(text) => self.out.write_field(text.as_bytes())?,
                Cell::OptionalText(text) => self.out.write_field(text.unwrap_or("").as_bytes())?,
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
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = StructArray::new(
            message_fields(),
            vec![
                Arc::new(self.roles.finish()) as ArrayRef,
                Arc::new(self.contents.finish()) as ArrayRef,
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
            ColumnBuilder::Text(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Int(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Float(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Bool(builder) => Arc::new(builder.finish()),
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

/// Parquet with Snappy compression (which every reader supports), written batch by batch.
pub struct ParquetSink {
    writer: ArrowWriter<Box<dyn Write + Send>>,
    schema: SchemaRef,
    columns: Vec<Column>,
    builders: Vec<ColumnBuilder>,
    rows_in_batch: usize,
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
    pub fn new(columns: &[Column], out: Box<dyn Write + Send>) -> io::Result<Self> {
        let schema = arrow_schema(columns);
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(PARQUET_ROW_GROUP_ROWS)
            .build();
        // The Parquet writer issues many small writes; buffer them.
        let out: Box<dyn Write + Send> = Box::new(BufWriter::with_capacity(1 << 16, out));
        let writer =
            ArrowWriter::try_new(out, schema.clone(), Some(properties)).map_err(parquet_error)?;
        let builders = columns
            .iter()
            .map(|column| ColumnBuilder::new(column.kind))
            .collect();
        Ok(ParquetSink {
            writer,
            schema,
            columns: columns.to_vec(),
            builders,
            rows_in_batch: 0,
        })
    }

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
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(io::Error::other)?;
        self.writer.write(&batch).map_err(parquet_error)?;
        if self.writer.in_progress_size() >= PARQUET_ROW_GROUP_BYTES {
            self.writer.flush().map_err(parquet_error)?;
        }
        self.rows_in_batch = 0;
        Ok(())
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
        let mut out = self.writer.into_inner().map_err(parquet_error)?;
        out.flush()
    }
}
