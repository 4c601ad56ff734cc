//! Arena battles from Parquet, read by column: the fast path of `moat leaderboard --battles
//! FILE.parquet` for files shaped like LMArena's published battles without their texts
//! (`model_a`, `model_b`, `winner`, and optionally `conv_metadata` with the style counts,
//! `category_tag` with the hard-prompt criteria, `category`, `language`, `tstamp`).
//!
//! A file with columns this reader does not interpret (the conversations, whose texts the
//! leaderboard reads for prompt keys and tags) is left to the row reader, which turns every row into
//! a JSON object: [`read_arena_parquet`] says so by returning `Ok(false)` before reading any row.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use moat_stats::battles::{style_from_counts, ArenaBattles, ArenaRecord};

use crate::read::ReadError;

/// One battle as the columns give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArenaRow<'a> {
    pub model_a: &'a str,
    pub model_b: &'a str,
    pub winner: &'a str,
    /// Style counts in `conv_metadata` order: answer tokens of A and B, then headers, lists and bold
    /// of A and B (each count object summed); `None` without `conv_metadata` or with a token count
    /// missing.
    pub style: Option<[f64; 8]>,
    /// How many of `category_tag["criteria_v0.1"]`'s criteria are true (`None` without the tag).
    pub criteria_met: Option<usize>,
    pub category: Option<&'a str>,
    pub language: Option<&'a str>,
    pub tstamp: Option<f64>,
}

impl<'a> ArenaRow<'a> {
    /// The battle as the leaderboard takes it: the style counts as its style features, and the
    /// judged criteria as a hard prompt when enough of them are met.
    pub fn record(self) -> ArenaRecord<'a> {
        ArenaRecord {
            model_a: self.model_a,
            model_b: self.model_b,
            winner: self.winner,
            style: self.style.map(style_from_counts),
            hard: self
                .criteria_met
                .is_some_and(|n| n >= moat_stats::hard_prompt::HARD_THRESHOLD),
            category: self.category,
            language: self.language,
            tstamp: self.tstamp,
        }
    }
}

/// The battles of a Parquet file read by column ([`read_arena_parquet`], each row as
/// [`ArenaRow::record`]), finished; `None` when the file needs the row reader.
pub fn read_arena_parquet_battles(
    path: &std::path::Path,
) -> Result<Option<ArenaBattles>, ReadError> {
    let mut battles = ArenaBattles::default();
    if !read_arena_parquet(path, |row, _| battles.push_record(row.record()))? {
        return Ok(None);
    }
    battles.finish();
    Ok(Some(battles))
}

/// Columns the fast path reads; any other top-level column sends the file to the row reader,
/// except those known to carry nothing the leaderboard uses.
const READ: [&str; 8] = [
    "model_a",
    "model_b",
    "winner",
    "conv_metadata",
    "category_tag",
    "category",
    "language",
    "tstamp",
];
const IGNORED: [&str; 8] = [
    "question_id",
    "judge",
    "turn",
    "anony",
    "dedup_tag",
    "is_code",
    "is_refusal",
    "openness_a",
];

const STYLE_KEYS: [&str; 8] = [
    "sum_assistant_a_tokens",
    "sum_assistant_b_tokens",
    "header_count_a",
    "header_count_b",
    "list_count_a",
    "list_count_b",
    "bold_count_a",
    "bold_count_b",
];

/// Rows per record batch.
const BATCH_ROWS: usize = 65_536;

/// Reads the battles of an Arena Parquet file by column, calling `each` with every row and its
/// 1-based number in file order. `Ok(false)`: the file has columns only the row reader handles
/// (nothing was read). An error names the row and the column.
pub fn read_arena_parquet(
    path: &std::path::Path,
    mut each: impl FnMut(ArenaRow<'_>, u64) -> Result<(), String>,
) -> Result<bool, ReadError> {
    let name = path.display().to_string();
    let open_error = |error: parquet::errors::ParquetError| ReadError::Open {
        path: name.clone(),
        source: std::io::Error::other(error),
    };
    let file = File::open(path).map_err(|source| ReadError::Open {
        path: name.clone(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(open_error)?;
    let schema = builder.schema().clone();
    let known = |field: &str| READ.contains(&field) || IGNORED.contains(&field);
    if schema.fields().iter().any(|f| !known(f.name())) {
        return Ok(false);
    }
    for required in ["model_a", "model_b", "winner"] {
        if schema.field_with_name(required).is_err() {
            return Err(ReadError::Field {
                line: 1,
                field: required.to_string(),
                problem: "the column is missing".to_string(),
            });
        }
    }
    let wanted: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| READ.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(open_error)?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|error| ReadError::Io {
            line: row + 1,
            source: std::io::Error::other(error),
        })?;
        let columns = Columns::of(&batch, row)?;
        for index in 0..batch.num_rows() {
            row += 1;
            let style = columns.style.as_ref().and_then(|style| {
                let mut values = [0.0; 8];
                for (k, column) in style.iter().enumerate() {
                    let value = column.as_ref().and_then(|c| {
                        let c = c.as_primitive::<Float64Type>();
                        (!c.is_null(index)).then(|| c.value(index))
                    });
                    match (k, value) {
                        // A missing token count means no style for this battle; a missing
                        // decoration count is zero, as in the JSON reader.
                        (0 | 1, None) => return None,
                        (_, value) => values[k] = value.unwrap_or(0.0),
                    }
                }
                Some(values)
            });
            let criteria_met = columns.criteria.as_ref().and_then(|criteria| {
                (!criteria.is_null(index)).then(|| {
                    criteria
                        .columns()
                        .iter()
                        .filter(|c| {
                            c.data_type() == &DataType::Boolean
                                && !c.is_null(index)
                                && c.as_boolean().value(index)
                        })
                        .count()
                })
            });
            let tstamp = columns.tstamp.as_ref().and_then(|t| {
                let t = t.as_primitive::<Float64Type>();
                (!t.is_null(index)).then(|| t.value(index))
            });
            let battle = ArenaRow {
                model_a: required_at(&columns.model_a, "model_a", index, row)?,
                model_b: required_at(&columns.model_b, "model_b", index, row)?,
                winner: required_at(&columns.winner, "winner", index, row)?,
                style,
                criteria_met,
                category: text_at(columns.category.as_ref(), index),
                language: text_at(columns.language.as_ref(), index),
                tstamp,
            };
            each(battle, row).map_err(|problem| ReadError::Record { line: row, problem })?;
        }
    }
    Ok(true)
}

/// The string at `index` of an optional column (`None` for a null).
fn text_at(column: Option<&StringArray>, index: usize) -> Option<&str> {
    column.filter(|c| !c.is_null(index)).map(|c| c.value(index))
}

/// The string at `index` of a required column; a null is an error naming the row and the field.
fn required_at<'a>(
    column: &'a StringArray,
    field: &str,
    index: usize,
    row: u64,
) -> Result<&'a str, ReadError> {
    if column.is_null(index) {
        Err(ReadError::Field {
            line: row,
            field: field.to_string(),
            problem: "null where a string is expected".to_string(),
        })
    } else {
        Ok(column.value(index))
    }
}

/// One record batch's columns, cast to the types the rows are read in.
struct Columns {
    model_a: StringArray,
    model_b: StringArray,
    winner: StringArray,
    /// The eight style counts as Float64 (a count object summed over its fields).
    style: Option<[Option<ArrayRef>; 8]>,
    /// `category_tag["criteria_v0.1"]`.
    criteria: Option<StructArray>,
    category: Option<StringArray>,
    language: Option<StringArray>,
    tstamp: Option<ArrayRef>,
}

impl Columns {
    fn of(batch: &RecordBatch, rows_before: u64) -> Result<Columns, ReadError> {
        let problem = |field: &str, problem: String| ReadError::Field {
            line: rows_before + 1,
            field: field.to_string(),
            problem,
        };
        let strings = |field: &str| -> Result<Option<StringArray>, ReadError> {
            batch
                .column_by_name(field)
                .map(|column| {
                    cast(column, &DataType::Utf8)
                        .map(|c| c.as_string::<i32>().clone())
                        .map_err(|e| problem(field, format!("not a string column: {e}")))
                })
                .transpose()
        };
        let required = |field: &str| -> Result<StringArray, ReadError> {
            strings(field)?.ok_or_else(|| problem(field, "the column is missing".to_string()))
        };
        let style = batch
            .column_by_name("conv_metadata")
            .map(|metadata| -> Result<_, ReadError> {
                let metadata = metadata
                    .as_struct_opt()
                    .ok_or_else(|| problem("conv_metadata", "not a struct column".to_string()))?;
                let mut columns: [Option<ArrayRef>; 8] = Default::default();
                for (k, key) in STYLE_KEYS.iter().enumerate() {
                    if let Some(column) = metadata.column_by_name(key) {
                        columns[k] = Some(
                            summed(column)
                                .map_err(|e| problem(&format!("conv_metadata.{key}"), e))?,
                        );
                    }
                }
                Ok(columns)
            })
            .transpose()?;
        let criteria = batch
            .column_by_name("category_tag")
            .and_then(|tag| tag.as_struct_opt())
            .and_then(|tag| tag.column_by_name("criteria_v0.1"))
            .and_then(|criteria| criteria.as_struct_opt().cloned());
        let tstamp = batch
            .column_by_name("tstamp")
            .map(|t| {
                cast(t, &DataType::Float64)
                    .map_err(|e| problem("tstamp", format!("not a number column: {e}")))
            })
            .transpose()?;
        Ok(Columns {
            model_a: required("model_a")?,
            model_b: required("model_b")?,
            winner: required("winner")?,
            style,
            criteria,
            category: strings("category")?,
            language: strings("language")?,
            tstamp,
        })
    }
}

/// A count column as Float64: a number, or a struct of numbers (Arena's `{"h1": 2, "h2": 1}`) summed.
fn summed(column: &ArrayRef) -> Result<ArrayRef, String> {
    match column.data_type() {
        DataType::Struct(_) => {
            let structure = column.as_struct();
            let mut total = vec![0.0; structure.len()];
            for child in structure.columns() {
                let child = cast(child, &DataType::Float64).map_err(|e| e.to_string())?;
                let child = child.as_primitive::<Float64Type>();
                for (sum, (i, value)) in total.iter_mut().zip(child.values().iter().enumerate()) {
                    if !child.is_null(i) {
                        *sum += value;
                    }
                }
            }
            let nulls = structure.nulls().cloned();
            Ok(Arc::new(arrow::array::Float64Array::new(
                total.into(),
                nulls,
            )))
        }
        _ => cast(column, &DataType::Float64).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array};
    use arrow::datatypes::{Field, Fields, Schema};

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn ints(values: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn structure(children: Vec<(&str, ArrayRef)>) -> ArrayRef {
        Arc::new(StructArray::from(
            children
                .into_iter()
                .map(|(name, array)| {
                    (
                        Arc::new(Field::new(name, array.data_type().clone(), true)),
                        array,
                    )
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// Writes a Parquet file with these top-level columns.
    fn write(path: &std::path::Path, columns: Vec<(&str, ArrayRef)>) {
        let schema = Arc::new(Schema::new(Fields::from(
            columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        )));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), schema, None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// The file read by column, and row by row as JSON objects the way the JSON reader takes them.
    fn both_ways(path: &std::path::Path) -> (ArenaBattles, ArenaBattles) {
        let columnar = read_arena_parquet_battles(path)
            .unwrap()
            .expect("read by column");
        let mut rows = ArenaBattles::default();
        for row in crate::read::open_rows(path).unwrap() {
            let (number, object) = row.unwrap();
            rows.push_value(serde_json::Value::Object(object), number as usize)
                .unwrap();
        }
        rows.finish();
        (columnar, rows)
    }

    #[test]
    fn columns_give_the_battles_rows_give() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("battles.parquet");
        let criteria = |met: usize| -> Vec<(&'static str, ArrayRef)> {
            moat_stats::hard_prompt::CRITERIA
                .iter()
                .enumerate()
                .map(|(i, (key, _))| {
                    (
                        *key,
                        Arc::new(BooleanArray::from(vec![i < met, i < 7, false])) as ArrayRef,
                    )
                })
                .collect()
        };
        write(
            &path,
            vec![
                ("model_a", strings(&[Some("x"), Some("y"), Some("x")])),
                ("model_b", strings(&[Some("y"), Some("x"), Some("z")])),
                (
                    "winner",
                    strings(&[Some("model_a"), Some("tie (bothbad)"), Some("model_b")]),
                ),
                (
                    "conv_metadata",
                    structure(vec![
                        ("sum_assistant_a_tokens", ints(&[120, 10, 5])),
                        ("sum_assistant_b_tokens", ints(&[40, 300, 5])),
                        (
                            "header_count_a",
                            structure(vec![("h1", ints(&[1, 0, 0])), ("h2", ints(&[2, 0, 0]))]),
                        ),
                        ("header_count_b", structure(vec![("h1", ints(&[0, 4, 0]))])),
                        (
                            "list_count_a",
                            structure(vec![("ordered", ints(&[3, 0, 1]))]),
                        ),
                        (
                            "list_count_b",
                            structure(vec![("ordered", ints(&[0, 0, 0]))]),
                        ),
                        ("bold_count_a", structure(vec![("**", ints(&[2, 0, 0]))])),
                        ("bold_count_b", structure(vec![("**", ints(&[0, 1, 0]))])),
                    ]),
                ),
                (
                    "category_tag",
                    structure(vec![("criteria_v0.1", structure(criteria(6)))]),
                ),
                ("category", strings(&[Some("writing"), None, Some(" ")])),
                (
                    "language",
                    strings(&[Some("English"), Some("German"), None]),
                ),
                (
                    "tstamp",
                    Arc::new(Float64Array::from(vec![Some(1.7e9), None, Some(1.8e9)])),
                ),
            ],
        );
        let (columnar, rows) = both_ways(&path);
        assert_eq!(columnar.battles, rows.battles);
        assert_eq!(columnar.categories, rows.categories);
        assert_eq!(columnar.timestamps, rows.timestamps);
        let style = columnar.battles[0].style.unwrap();
        assert_eq!(
            (style.a.length, style.a.headers, style.a.lists, style.a.bold),
            (120, 3, 3, 2)
        );
        assert_eq!(
            columnar.categories.members_of("hard-prompt"),
            Some(&[0u32, 1][..])
        );
        assert_eq!(
            columnar.categories.members_of("non-english"),
            Some(&[1u32][..])
        );
        assert_eq!(columnar.categories.members_of("writing"), Some(&[0u32][..]));
    }

    #[test]
    fn conversations_go_to_the_row_reader_and_bad_values_name_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let with_text = dir.path().join("texts.parquet");
        write(
            &with_text,
            vec![
                ("model_a", strings(&[Some("x")])),
                ("model_b", strings(&[Some("y")])),
                ("winner", strings(&[Some("tie")])),
                ("conversation_a", strings(&[Some("[]")])),
            ],
        );
        let mut called = false;
        assert!(!read_arena_parquet(&with_text, |_, _| {
            called = true;
            Ok(())
        })
        .unwrap());
        assert!(!called);

        let bad = dir.path().join("bad.parquet");
        write(
            &bad,
            vec![
                ("model_a", strings(&[Some("x"), Some("x")])),
                ("model_b", strings(&[Some("y"), None])),
                ("winner", strings(&[Some("draw"), Some("tie")])),
            ],
        );
        let mut battles = ArenaBattles::default();
        let error =
            read_arena_parquet(&bad, |row, _| battles.push_record(row.record())).unwrap_err();
        assert_eq!(error.line(), Some(1));
        assert!(
            error.to_string().contains("field `winner`") && error.to_string().contains("\"draw\""),
            "{error}"
        );
        let missing = dir.path().join("missing.parquet");
        write(
            &missing,
            vec![
                ("model_a", strings(&[Some("x")])),
                ("winner", strings(&[Some("tie")])),
            ],
        );
        let error = read_arena_parquet(&missing, |_, _| Ok(())).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("field `model_b`: the column is missing"),
            "{error}"
        );
        let null = dir.path().join("null.parquet");
        write(
            &null,
            vec![
                ("model_a", strings(&[Some("x"), Some("x")])),
                ("model_b", strings(&[Some("y"), None])),
                ("winner", strings(&[Some("tie"), Some("tie")])),
            ],
        );
        let error = read_arena_parquet(&null, |_, _| Ok(())).unwrap_err();
        assert_eq!(error.line(), Some(2), "{error}");
        assert!(error.to_string().contains("field `model_b`"), "{error}");
    }
}
