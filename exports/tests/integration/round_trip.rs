//! Export → import → export gives the same records (and so the same bytes).

use std::io::Cursor;

use moat_exports::import::{ImportFormat, ImportReader};
use moat_exports::{Container, ExportOptions, Format, Openness, VoteRecord};

use crate::{export, hh_records};

fn import(format: ImportFormat, bytes: &[u8], study: &str) -> Vec<VoteRecord> {
    let reader = ImportReader::new(format, Box::new(Cursor::new(bytes.to_vec()))).unwrap();
    let mut next_vote_id = 1;
    let openness_of = |model: &str| {
        moat_exports::sample::SAMPLE_MODELS
            .iter()
            .find(|(name, _)| *name == model)
            .map_or(Openness::Closed, |m| m.1)
    };
    reader
        .map(Result::unwrap)
        .flat_map(|item| item.vote_records(study, &openness_of, &mut next_vote_id))
        .collect()
}

#[test]
fn votes_jsonl_round_trip_keeps_every_record_exactly() {
    let records = hh_records(300);
    let (first, _) = export(Format::Votes, &ExportOptions::default(), &records);
    let imported = import(
        ImportFormat::Votes,
        &first,
        "ignored: the file names its study",
    );
    assert_eq!(imported.len(), records.len());
    for (imported, original) in imported.iter().zip(&records) {
        assert_eq!(imported.vote_id, original.vote_id);
        let mut imported = imported.clone();
        imported.study = original.study.clone();
        assert_eq!(&imported, original);
    }
}

#[test]
fn arena_round_trip_gives_the_same_bytes() {
    let records = hh_records(300);
    let (first, summary) = export(Format::Arena, &ExportOptions::default(), &records);
    let imported = import(ImportFormat::Arena, &first, &records[0].study);
    assert_eq!(imported.len() as u64, summary.rows_written);
    let (second, _) = export(Format::Arena, &ExportOptions::default(), &imported);
    assert_eq!(
        String::from_utf8(second).unwrap(),
        String::from_utf8(first).unwrap()
    );
}

#[test]
fn trl_round_trips_plain_and_conversational() {
    let records = hh_records(300);
    for conversational in [false, true] {
        let options = ExportOptions {
            container: Container::Jsonl,
            conversational,
            ..Default::default()
        };
        let (first, _) = export(Format::Trl, &options, &records);
        let imported = import(ImportFormat::Trl, &first, &records[0].study);
        let (second, _) = export(Format::Trl, &options, &imported);
        assert_eq!(
            String::from_utf8(second).unwrap(),
            String::from_utf8(first).unwrap(),
            "conversational: {conversational}"
        );
    }
}

#[test]
fn hh_rlhf_round_trip_gives_the_same_bytes() {
    let records = hh_records(300);
    let (first, _) = export(Format::HhRlhf, &ExportOptions::default(), &records);
    let imported = import(ImportFormat::HhRlhf, &first, "s");
    let (second, _) = export(Format::HhRlhf, &ExportOptions::default(), &imported);
    assert_eq!(
        String::from_utf8(second).unwrap(),
        String::from_utf8(first).unwrap()
    );
}

#[test]
fn trl_exports_read_back_as_training_pairs() {
    let records = hh_records(100);
    let options = ExportOptions {
        container: Container::Jsonl,
        conversational: true,
        ..Default::default()
    };
    let (bytes, _) = export(Format::Trl, &options, &records);
    let pairs: Vec<_> = moat_exports::pairs::PairReader::new(bytes.as_slice())
        .map(Result::unwrap)
        .collect();
    let decided: Vec<&VoteRecord> = records
        .iter()
        .filter(|record| record.chosen_rejected().is_some())
        .collect();
    assert_eq!(pairs.len(), decided.len());
    for (pair, record) in pairs.iter().zip(decided) {
        let (_, chosen, _, rejected) = record.chosen_rejected().unwrap();
        assert_eq!(pair.prompt, record.conversation);
        assert_eq!(
            (pair.chosen.as_str(), pair.rejected.as_str()),
            (chosen, rejected)
        );
    }
}

/// Writes `records` in `format` to a file in `directory` and returns its path.
fn export_file(
    directory: &std::path::Path,
    name: &str,
    format: Format,
    options: &ExportOptions,
    records: &[VoteRecord],
) -> std::path::PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, export(format, options, records).0).unwrap();
    path
}

#[test]
fn parquet_exports_import_like_their_json_lines_twins() {
    let directory = tempfile::tempdir().unwrap();
    let records = hh_records(300);
    let parquet = ExportOptions {
        container: Container::Parquet,
        ..Default::default()
    };
    let jsonl = ExportOptions::default();
    for (format, import_format) in [
        (Format::Arena, ImportFormat::Arena),
        (Format::Votes, ImportFormat::Votes),
        (Format::HhRlhf, ImportFormat::HhRlhf),
    ] {
        let path = export_file(
            directory.path(),
            &format!("{format}.parquet"),
            format,
            &parquet,
            &records,
        );
        let (items, report) = moat_exports::import::read_import(import_format, &path).unwrap();
        assert!(report.skipped.is_empty(), "{format}: {report}");
        let mut next_vote_id = 1;
        let imported: Vec<VoteRecord> = items
            .iter()
            .flat_map(|item| {
                item.vote_records(&records[0].study, &|_| Openness::Closed, &mut next_vote_id)
            })
            .collect();
        assert_eq!(
            export(format, &jsonl, &imported).0,
            export(format, &jsonl, &records).0,
            "{format}"
        );
    }
}

#[test]
fn read_pairs_reads_trl_parquet_plain_and_conversational() {
    let directory = tempfile::tempdir().unwrap();
    let records = hh_records(200);
    for conversational in [false, true] {
        let options = ExportOptions {
            container: Container::Parquet,
            conversational,
            ..Default::default()
        };
        let path = export_file(
            directory.path(),
            &format!("trl-{conversational}.parquet"),
            Format::Trl,
            &options,
            &records,
        );
        let from_parquet = moat_exports::pairs::read_pairs(&path).unwrap();
        let jsonl = ExportOptions {
            container: Container::Jsonl,
            conversational,
            ..Default::default()
        };
        let (bytes, _) = export(Format::Trl, &jsonl, &records);
        let from_jsonl: Vec<_> = moat_exports::pairs::PairReader::new(bytes.as_slice())
            .map(Result::unwrap)
            .collect();
        assert_eq!(from_parquet, from_jsonl);
        assert!(!from_parquet.is_empty());
    }
}
