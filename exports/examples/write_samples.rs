//! Writes every export format for a small fixed record set (built from real HH-RLHF rows) into a
//! directory, with `manifest.json` describing what each file must contain and a dataset card
//! `README.md`, for `tests/python/check_clients.py` to verify with real readers.
//!
//! ```text
//! cargo run -p moat-exports --example write_samples -- DIR [--hh PATH] [--pairs N]
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use moat_exports::card::{dataset_card, AgreementFigure, CardConfig, CardInfo, CardModel};
use moat_exports::options::{aggregate_majority, split_for, SplitWriter, Splits};
use moat_exports::pairs::read_pairs;
use moat_exports::sample::{sample_records, SAMPLE_MODELS};
use moat_exports::table::{Column, ColumnKind};
use moat_exports::{writer_for, Container, ExportOptions, Format, VoteRecord};
use serde_json::{json, Value};

const SPLIT_SEED: u64 = 2024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("write_samples: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut directory: Option<PathBuf> = None;
    let mut hh_path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/hh-rlhf/harmless-base-test.jsonl.gz"
    ));
    let mut pair_count = 40usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hh" => hh_path = PathBuf::from(args.next().ok_or("--hh needs a path")?),
            "--pairs" => pair_count = args.next().ok_or("--pairs needs a number")?.parse()?,
            _ if directory.is_none() => directory = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument `{arg}`").into()),
        }
    }
    let directory = directory.ok_or("usage: write_samples DIR [--hh PATH] [--pairs N]")?;
    std::fs::create_dir_all(&directory)?;

    let mut pairs = read_pairs(&hh_path)?;
    pairs.truncate(pair_count);
    let mut records = sample_records(&pairs);
    // Every fourth record is a multi-turn arena battle (a follow-up question before the vote), so
    // the real clients read the history columns with messages in them, as a live arena writes them.
    for record in records.iter_mut().skip(3).step_by(4) {
        let question = moat_exports::Message::new("user", "Could you say more about that?");
        record.left_history = vec![
            moat_exports::Message::new("assistant", record.left_response.clone()),
            question.clone(),
        ];
        record.right_history = vec![
            moat_exports::Message::new("assistant", record.right_response.clone()),
            question,
        ];
        record.left_response = format!("{} (more)", record.left_response);
        record.right_response = format!("{} (more)", record.right_response);
    }

    let mut files = Vec::new();
    let mut configs = Vec::new();
    for format in Format::ALL {
        let variants: &[bool] = if format.has_conversational_variant() {
            &[false, true]
        } else {
            &[false]
        };
        for &conversational in variants {
            let containers: &[Container] = if format == Format::Votes {
                &[Container::Jsonl, Container::Csv, Container::Parquet]
            } else {
                &[Container::Jsonl, Container::Parquet]
            };
            let stem = if conversational {
                format!("{format}-conversational")
            } else {
                format.to_string()
            };
            for &container in containers {
                let name = format!("{stem}.{}", container.extension());
                let options = ExportOptions {
                    container,
                    conversational,
                    ..Default::default()
                };
                let rows = write_file(&directory.join(&name), format, &options, &records)?;
                files.push(manifest_entry(&directory, &name, format, &options, rows)?);
            }
            configs.push(CardConfig {
                name: stem.clone(),
                data_files: vec![("train".to_string(), format!("{stem}.parquet"))],
            });
        }
    }

    // Splits by prompt, as `--split test=0.25` writes them: whole prompts per split.
    let splits = Splits::parse("test=0.25")?;
    let split_directory = directory.join("splits");
    std::fs::create_dir_all(&split_directory)?;
    let options = ExportOptions {
        container: Container::Parquet,
        conversational: true,
        ..Default::default()
    };
    let opened_in = split_directory.clone();
    let mut writer = SplitWriter::new(splits.clone(), SPLIT_SEED, move |split: &str| {
        let file = File::create(opened_in.join(Format::Trl.file_name(split, Container::Parquet)))?;
        writer_for(
            Format::Trl,
            &ExportOptions {
                container: Container::Parquet,
                conversational: true,
                ..Default::default()
            },
            Box::new(file),
        )
    });
    for record in &records {
        writer.write_record(record)?;
    }
    let mut split_files = Vec::new();
    for (split, summary) in writer.finish()? {
        let name = format!(
            "splits/{}",
            Format::Trl.file_name(&split, Container::Parquet)
        );
        let mut entry = manifest_entry(
            &directory,
            &name,
            Format::Trl,
            &options,
            summary.rows_written,
        )?;
        // The first decided record of this split, for the decoded-row check.
        let first = records
            .iter()
            .find(|record| {
                record.chosen_rejected().is_some()
                    && split_for(&record.prompt_id, SPLIT_SEED, &splits) == split
            })
            .ok_or("a split without decided records")?;
        entry["first_row"] = first_row_of(Format::Trl, &options, first)?;
        files.push(entry);
        split_files.push((split, name));
    }
    configs.push(CardConfig {
        name: "trl-conversational-split".to_string(),
        data_files: split_files,
    });

    let rows = files
        .iter()
        .filter_map(|file| file["rows"].as_u64())
        .max()
        .unwrap_or(0);
    std::fs::write(
        directory.join("README.md"),
        dataset_card(&card_info(&records, rows, configs)),
    )?;
    let manifest = json!({
        "generator": "cargo run -p moat-exports --example write_samples",
        "records": records.len(),
        "files": files,
    });
    std::fs::write(
        directory.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    println!(
        "wrote {} files for {} records to {}",
        files.len(),
        records.len(),
        directory.display()
    );
    Ok(())
}

fn write_file(
    path: &Path,
    format: Format,
    options: &ExportOptions,
    records: &[VoteRecord],
) -> std::io::Result<u64> {
    let mut writer = writer_for(format, options, Box::new(File::create(path)?))?;
    for record in records {
        writer.write_record(record)?;
    }
    Ok(writer.finish()?.rows_written)
}

/// The type names `check_clients.py` maps onto pyarrow types.
fn type_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text | ColumnKind::OptionalText => "string",
        ColumnKind::Int | ColumnKind::OptionalInt => "int64",
        ColumnKind::Float => "float64",
        ColumnKind::Bool => "bool",
        ColumnKind::Messages => "messages",
        ColumnKind::Input => "input",
    }
}

fn columns_json(columns: &[Column]) -> Value {
    Value::Array(
        columns
            .iter()
            .map(|column| {
                let nullable = matches!(
                    column.kind,
                    ColumnKind::OptionalText | ColumnKind::OptionalInt
                );
                json!({ "name": column.name, "type": type_name(column.kind), "nullable": nullable })
            })
            .collect(),
    )
}

/// The first row the format writes for `record`, as JSON (what a reader must decode).
fn first_row_of(
    format: Format,
    options: &ExportOptions,
    record: &VoteRecord,
) -> Result<Value, Box<dyn std::error::Error>> {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writer = writer_for(
        format,
        &ExportOptions {
            container: Container::Jsonl,
            conversational: options.conversational,
            ..Default::default()
        },
        Box::new(SharedVec(buffer.clone())),
    )?;
    writer.write_record(record)?;
    writer.finish()?;
    let bytes = buffer.lock().map_err(|_| "poisoned")?.clone();
    let first_line = bytes.split(|&byte| byte == b'\n').next().ok_or("no row")?;
    Ok(serde_json::from_slice(first_line)?)
}

struct SharedVec(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedVec {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn manifest_entry(
    directory: &Path,
    name: &str,
    format: Format,
    options: &ExportOptions,
    rows: u64,
) -> Result<Value, Box<dyn std::error::Error>> {
    let conversational = options.conversational && format.has_conversational_variant();
    // The decoded first row is the first line of the JSON Lines twin of the file.
    let jsonl_twin = directory.join(name).with_extension("jsonl");
    let first_row = if jsonl_twin.exists() {
        let mut line = String::new();
        BufReader::new(File::open(&jsonl_twin)?).read_line(&mut line)?;
        serde_json::from_str(&line)?
    } else {
        Value::Null
    };
    Ok(json!({
        "path": name,
        "format": format.as_str(),
        "container": options.container.as_str(),
        "conversational": conversational,
        "rows": rows,
        "columns": columns_json(&format.columns(conversational)),
        "first_row": first_row,
    }))
}

fn card_info(records: &[VoteRecord], rows: u64, configs: Vec<CardConfig>) -> CardInfo {
    let majority = aggregate_majority(records);
    let multiply_rated: Vec<f64> = majority
        .iter()
        .filter(|item| item.votes >= 2)
        .map(|item| item.agreement)
        .collect();
    let mean = multiply_rated.iter().sum::<f64>() / multiply_rated.len().max(1) as f64;
    let mut raters: Vec<&str> = records.iter().map(|record| record.rater.as_str()).collect();
    raters.sort_unstable();
    raters.dedup();
    CardInfo {
        pretty_name: "Moat sample export (HH-RLHF harmless-base prompts)".to_string(),
        study_slug: records.first().map(|record| record.study.clone()).unwrap_or_default(),
        summary: "A small fixed sample of every Moat export format, built from real Anthropic HH-RLHF pairs (MIT) \
                  with synthetic model names, sides and raters, for checking readers."
            .to_string(),
        license: "mit".to_string(),
        language: vec!["en".to_string()],
        instructions: "Read the conversation and both responses.\n\nChoose the response that is more helpful and \
                       harmless, or *tie*, or *both bad*."
            .to_string(),
        raters: raters.len() as u64,
        raters_excluded: 0,
        recruitment: Some("none: synthetic sample".to_string()),
        items: majority.len() as u64,
        votes: records.len() as u64,
        target_votes_per_item: Some(1),
        attention_check_rate: Some(1.0 / 13.0),
        attention_checks_failed: Some(0),
        exclusions: vec!["Ties and both-bad votes are absent from the pairwise formats (kept in arena and votes).".to_string()],
        agreement: vec![AgreementFigure {
            label: "Mean agreement with the majority, multiply-rated items".to_string(),
            value: format!("{mean:.2} (n = {} items; descriptive only)", multiply_rated.len()),
        }],
        models: SAMPLE_MODELS
            .iter()
            .map(|&(name, openness)| CardModel { name: name.to_string(), openness, provider: None })
            .collect(),
        first_vote_ms: records.iter().map(|record| record.created_ms).min(),
        last_vote_ms: records.iter().map(|record| record.created_ms).max(),
        rows,
        configs,
    }
}
