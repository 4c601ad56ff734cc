//! Parquet input for the readers: each row of a Parquet file as a JSON object, so every reader parses
//! Parquet exactly as it parses JSON Lines (Hugging Face hosts many preference datasets as Parquet).
//! Rows are numbered from 1 and reported as the "line" in errors.

use std::fs::File;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Number, Value};

use crate::read::{ObjectRows, ReadError};

/// Rows of a Parquet file, read one record batch (1,024 rows) at a time.
pub(crate) fn parquet_rows(file: File, path: &str) -> Result<ObjectRows, ReadError> {
    let open_error = |error: parquet::errors::ParquetError| ReadError::Open {
        path: path.to_string(),
        source: std::io::Error::other(error),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(open_error)?
        .with_batch_size(1024)
        .build()
        .map_err(open_error)?;
    Ok(Box::new(ParquetRows {
        reader,
        batch: None,
        index_in_batch: 0,
        row: 0,
    }))
}

struct ParquetRows {
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    index_in_batch: usize,
    row: u64,
}

impl Iterator for ParquetRows {
    type Item = Result<(u64, Map<String, Value>), ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = &self.batch {
                if self.index_in_batch < batch.num_rows() {
                    let index = self.index_in_batch;
                    self.index_in_batch += 1;
                    self.row += 1;
                    return Some(
                        row_object(batch, index, self.row).map(|object| (self.row, object)),
                    );
                }
            }
            match self.reader.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.index_in_batch = 0;
                }
                Err(error) => {
                    return Some(Err(ReadError::Io {
                        line: self.row + 1,
                        source: std::io::Error::other(error),
                    }))
                }
            }
        }
    }
}

fn row_object(
    batch: &RecordBatch,
    index: usize,
    row: u64,
) -> Result<Map<String, Value>, ReadError> {
    let mut object = Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let value = value_at(column.as_ref(), index)
            .map_err(|problem| ReadError::at_field(row, field.name().as_str(), problem))?;
        object.insert(field.name().clone(), value);
    }
    Ok(object)
}

fn number(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The JSON value of one cell, for the types preference datasets use.
fn value_at(array: &dyn Array, index: usize) -> Result<Value, String> {
    if array.is_null(index) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(index)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(index).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(index).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(index).to_string()),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(index)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(index)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(index)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(index)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(index)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(index)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(index)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(index)),
        DataType::Float32 => number(f64::from(array.as_primitive::<Float32Type>().value(index))),
        DataType::Float64 => number(array.as_primitive::<Float64Type>().value(index)),
        DataType::List(_) => list(array.as_list::<i32>().value(index).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(index).as_ref())?,
        DataType::Struct(fields) => {
            let structure = array.as_struct();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(structure.columns()) {
                object.insert(field.name().clone(), value_at(column.as_ref(), index)?);
            }
            Value::Object(object)
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary.normalized_keys()[index];
            value_at(dictionary.values().as_ref(), key)?
        }
        other => return Err(format!("unsupported Parquet column type {other}")),
    })
}

fn list(values: &dyn Array) -> Result<Value, String> {
    (0..values.len())
        .map(|index| value_at(values, index))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}
