use moat_exports::import::{read_import, ImportFormat};
use moat_exports::Choice;

use crate::test_data;

#[test]
fn oasst_en_100_tree_gives_754_pairs_from_212_ranked_groups() {
    let (items, report) =
        read_import(ImportFormat::Oasst, &test_data("oasst/en_100_tree.jsonl")).unwrap();
    assert_eq!(report.rows_read, 100);
    assert_eq!(items.len(), 212);
    assert_eq!(
        items.iter().map(|item| item.votes.len()).sum::<usize>(),
        754
    );
    assert_eq!(report.votes, 754);
    // Every vote goes to the lower rank: responses are in rank order and a (left) always wins.
    assert!(items
        .iter()
        .flat_map(|item| &item.votes)
        .all(|vote| vote.choice == Choice::Left && vote.a_index < vote.b_index));
    let first = &items[0];
    assert_eq!(first.conversation.len(), 1);
    assert_eq!(
        first.conversation[0].content,
        "How can I find the best 401k plan for my needs?"
    );
    assert!(first.responses[0]
        .text
        .starts_with("The first step is to research your options."));
    assert_eq!(
        first.responses[0].source_id.as_deref(),
        Some("fa783ef0-4f4e-457d-b429-afd89edf8757")
    );
    assert_eq!(first.language.as_deref(), Some("en"));
    // Prompts of deeper groups are whole conversations ending with the user's turn.
    assert!(items
        .iter()
        .all(|item| item.conversation.last().unwrap().role == "user"));
}

#[test]
fn hh_rlhf_import_reports_rows_imported_and_skipped_with_reason() {
    let (items, report) = read_import(
        ImportFormat::HhRlhf,
        &test_data("hh-rlhf/harmless-base-test.jsonl.gz"),
    )
    .unwrap();
    assert_eq!(report.rows_read, 2312);
    assert_eq!(items.len(), 2307);
    assert_eq!(report.skipped.len(), 5);
    assert_eq!(
        report.skipped_by_reason(),
        [(
            "chosen and rejected do not share the context before their last assistant turn"
                .to_string(),
            5
        )]
    );
    assert_eq!(items[0].responses[0].model, "hh-rlhf-chosen");
    assert_eq!(items[0].votes[0].choice, Choice::Left);
    assert!(items[0].prompt_id.starts_with("p-") && items[0].prompt_id.len() == 18);
    assert_eq!(report.to_string().lines().count(), 1);
}

#[test]
fn malformed_gzip_line_is_an_error_naming_the_line_and_field() {
    use std::io::Write;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("bad.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    writeln!(
        encoder,
        r#"{{"chosen":"\n\nHuman: a\n\nAssistant: b","rejected":"\n\nHuman: a\n\nAssistant: c"}}"#
    )
    .unwrap();
    writeln!(
        encoder,
        r#"{{"chosen":"\n\nHuman: a\n\nAssistant: b","rejected":7}}"#
    )
    .unwrap();
    encoder.finish().unwrap();
    let error = read_import(ImportFormat::HhRlhf, &path).unwrap_err();
    assert_eq!(error.line(), Some(2));
    assert_eq!(error.field(), Some("rejected"));
}
