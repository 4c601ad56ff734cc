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
