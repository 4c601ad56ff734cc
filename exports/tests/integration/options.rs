use std::collections::{BTreeMap, BTreeSet};

use moat_exports::options::{
    aggregate_item, aggregate_majority, meets_agreement, split_for, FilteredWriter, MajorityWriter,
    RecordFilter, SplitWriter, Splits,
};
use moat_exports::{writer_for, Choice, ExportOptions, Format, VoteRecord};

use crate::{hh_records, SharedBuffer};

#[test]
fn split_parse_accepts_fractions_and_rejects_nonsense() {
    let splits = Splits::parse("test=0.1,validation=0.05").unwrap();
    assert_eq!(splits.names(), ["test", "validation", "train"]);
    for bad in [
        "test",
        "test=1.5",
        "test=0",
        "train=0.1",
        "a=0.6,b=0.5",
        "Test=0.1",
        "a=0.1,a=0.2",
        "x=abc",
    ] {
        assert!(Splits::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn split_assignment_is_by_prompt_stable_and_near_the_fractions() {
    let splits = Splits::parse("test=0.1").unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for index in 0..20_000 {
        let prompt = format!("prompt-{index}");
        let split = split_for(&prompt, 42, &splits);
        assert_eq!(split, split_for(&prompt, 42, &splits));
        *counts.entry(split).or_default() += 1;
    }
    // Binomial(20000, 0.1): sd ≈ 42, so ±250 is about 6 sd.
    assert!((counts["test"] as i64 - 2000).abs() < 250, "{counts:?}");
    // A different seed reshuffles.
    let moved = (0..1000).filter(|index| {
        let prompt = format!("prompt-{index}");
        split_for(&prompt, 42, &splits) != split_for(&prompt, 43, &splits)
    });
    assert!(moved.count() > 50);
}

#[test]
fn split_writer_never_puts_a_prompt_in_two_splits() {
    let records = hh_records(400);
    let buffers: std::sync::Arc<std::sync::Mutex<BTreeMap<String, SharedBuffer>>> =
        Default::default();
    let opened = buffers.clone();
    let mut writer = SplitWriter::new(Splits::parse("test=0.2").unwrap(), 7, move |split: &str| {
        let buffer = SharedBuffer::default();
        opened
            .lock()
            .unwrap()
            .insert(split.to_string(), buffer.clone());
        writer_for(Format::Votes, &ExportOptions::default(), Box::new(buffer))
    });
    for record in &records {
        writer.write_record(record).unwrap();
    }
    let summaries = writer.finish().unwrap();
    assert_eq!(
        summaries
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["test", "train"]
    );
    assert_eq!(
        summaries
            .iter()
            .map(|(_, summary)| summary.rows_written)
            .sum::<u64>(),
        records.len() as u64
    );
    let prompts_of = |split: &str| -> BTreeSet<String> {
        let bytes = buffers.lock().unwrap()[split].bytes();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["prompt_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (test, train) = (prompts_of("test"), prompts_of("train"));
    assert!(!test.is_empty() && !train.is_empty());
    assert!(test.is_disjoint(&train));
}

/// The summary of writing `records` as votes through a [`FilteredWriter`] with `filter`.
fn votes_through(filter: RecordFilter, records: &[VoteRecord]) -> moat_exports::ExportSummary {
    let inner = writer_for(
        Format::Votes,
        &ExportOptions::default(),
        Box::new(std::io::sink()),
    )
    .unwrap();
    let mut writer = Box::new(FilteredWriter::new(filter, inner));
    for record in records {
        moat_exports::RecordWriter::write_record(writer.as_mut(), record).unwrap();
    }
    moat_exports::RecordWriter::finish(writer).unwrap()
}

#[test]
fn filter_by_models_dates_choices_and_raters() {
    let records = hh_records(200);
    let models: BTreeSet<String> = ["llama-3.1-8b-instruct", "gpt-4o-mini"]
        .map(String::from)
        .into();
    let filter = RecordFilter {
        models: models.clone(),
        ..Default::default()
    };
    let kept: Vec<&VoteRecord> = records
        .iter()
        .filter(|record| filter.accepts(record))
        .collect();
    assert!(!kept.is_empty() && kept.len() < records.len());
    assert!(kept
        .iter()
        .all(|record| models.contains(&record.left_model) && models.contains(&record.right_model)));

    let (from, until) = (records[10].created_ms, records[20].created_ms);
    let filter = RecordFilter {
        from_ms: Some(from),
        until_ms: Some(until),
        ..Default::default()
    };
    // From is inclusive, until exclusive.
    assert!(filter.accepts(&records[10]) && !filter.accepts(&records[20]));
    let kept = records
        .iter()
        .filter(|record| filter.accepts(record))
        .count();
    let expected = records
        .iter()
        .filter(|record| (from..until).contains(&record.created_ms))
        .count();
    assert_eq!(kept, expected);
    assert!(kept > 0 && kept < records.len());

    let filter = RecordFilter {
        exclude_ties: true,
        exclude_both_bad: true,
        excluded_raters: ["rater-01".to_string()].into(),
        ..Default::default()
    };
    let kept: Vec<&VoteRecord> = records
        .iter()
        .filter(|record| filter.accepts(record))
        .collect();
    assert!(kept.iter().all(
        |record| matches!(record.choice, Choice::Left | Choice::Right)
            && record.rater != "rater-01"
    ));

    // Through the wrapper, excluded ties are counted like the ones a format leaves out.
    let summary = votes_through(
        RecordFilter {
            exclude_ties: true,
            ..Default::default()
        },
        &records,
    );
    let ties = records
        .iter()
        .filter(|record| record.choice == Choice::Tie)
        .count() as u64;
    assert_eq!(summary.skipped_ties, ties);
    assert_eq!(summary.rows_written, records.len() as u64 - ties);

    // Votes on quality checks score raters, not models: the filter counts and drops them.
    let mut records = records;
    for (i, record) in records.iter_mut().enumerate() {
        record.assignment_kind = match i % 7 {
            0 => "attention",
            3 => "gold",
            4 => "imported",
            _ => "regular",
        }
        .to_string();
    }
    let checks = records.iter().filter(|r| r.is_quality_check()).count() as u64;
    assert_eq!(
        checks,
        records
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 7 == 0 || i % 7 == 3)
            .count() as u64
    );
    let summary = votes_through(
        RecordFilter {
            exclude_checks: true,
            ..Default::default()
        },
        &records,
    );
    assert_eq!(summary.skipped_checks, checks);
    assert_eq!(summary.rows_written, records.len() as u64 - checks);
    assert!(summary
        .to_string()
        .ends_with(&format!("and {checks} quality-check votes")));
}

fn vote(base: &VoteRecord, vote_id: i64, swapped: bool, choice: Choice) -> VoteRecord {
    let mut record = base.clone();
    record.vote_id = vote_id;
    if swapped {
        std::mem::swap(&mut record.left_model, &mut record.right_model);
        std::mem::swap(&mut record.left_response, &mut record.right_response);
        std::mem::swap(&mut record.left_openness, &mut record.right_openness);
    }
    record.choice = choice;
    record
}

#[test]
fn majority_compares_votes_in_one_orientation() {
    let base = &hh_records(1)[0];
    // Left wins, the same model wins with sides swapped, and one tie: 2 of 3 agree.
    let votes = [
        vote(base, 1, false, Choice::Left),
        vote(base, 2, true, Choice::Right),
        vote(base, 3, false, Choice::Tie),
    ];
    let item = aggregate_item(&votes).unwrap();
    assert_eq!(item.record.choice, Choice::Left);
    assert_eq!(item.record.left_model, base.left_model);
    assert_eq!(item.votes, 3);
    assert!((item.agreement - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(item.record.rater, "majority-of-3");
    assert!(meets_agreement(&item, Some(0.6)));
    assert!(!meets_agreement(&item, Some(0.7)));
    // One vote each way: no majority, a tie at agreement 0.5.
    let split = aggregate_item(&[
        vote(base, 1, false, Choice::Left),
        vote(base, 2, false, Choice::Right),
    ])
    .unwrap();
    assert_eq!(split.record.choice, Choice::Tie);
    assert_eq!(split.agreement, 0.5);
    // Items rated once always pass a minimum agreement.
    let single = aggregate_item(&[vote(base, 1, false, Choice::Right)]).unwrap();
    assert!(meets_agreement(&single, Some(0.9)));
}

#[test]
fn streaming_majority_matches_in_memory_aggregation_and_rejects_ungrouped_input() {
    let records = hh_records(100);
    let expected: Vec<VoteRecord> = aggregate_majority(&records)
        .into_iter()
        .map(|item| item.record)
        .collect();
    assert!(
        expected.len() < records.len(),
        "the sample has multiply-rated items"
    );
    let collected = Collect::default();
    let mut writer = Box::new(MajorityWriter::new(Box::new(collected.clone()), None));
    for record in &records {
        moat_exports::RecordWriter::write_record(writer.as_mut(), record).unwrap();
    }
    moat_exports::RecordWriter::finish(writer).unwrap();
    assert_eq!(*collected.0.lock().unwrap(), expected);

    let mut writer = MajorityWriter::new(Box::new(Collect::default()), None);
    let (a, b) = (&records[0], &records[1]);
    moat_exports::RecordWriter::write_record(&mut writer, a).unwrap();
    moat_exports::RecordWriter::write_record(&mut writer, b).unwrap();
    let error = moat_exports::RecordWriter::write_record(&mut writer, a).unwrap_err();
    assert!(error.to_string().contains("not grouped by item"), "{error}");
}

#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<VoteRecord>>>);

impl moat_exports::RecordWriter for Collect {
    fn write_record(&mut self, record: &VoteRecord) -> std::io::Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
    fn finish(self: Box<Self>) -> std::io::Result<moat_exports::ExportSummary> {
        Ok(Default::default())
    }
}
