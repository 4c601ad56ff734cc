use moat_exports::pairs::{read_pairs, read_pairs_with_report};
use moat_exports::Message;

use crate::test_data;

#[test]
fn hh_rlhf_harmless_base_test_gives_2307_pairs_and_skips_the_5_with_differing_contexts() {
    let path = test_data("hh-rlhf/harmless-base-test.jsonl.gz");
    let (pairs, report) = read_pairs_with_report(&path).unwrap();
    // The data README: 2,312 rows, of which 2,307 share the context and differ only in the last turn.
    assert_eq!(report.rows_read, 2312);
    assert_eq!(pairs.len(), 2307);
    assert_eq!(report.skipped.len(), 5);
    // Rows 1254, 1688, 1950, 1952 and 2036 counted from 0, i.e. these 1-based lines (found with Python).
    let lines: Vec<u64> = report.skipped.iter().map(|skip| skip.line).collect();
    assert_eq!(lines, [1255, 1689, 1951, 1953, 2037]);
    let first = &pairs[0];
    assert_eq!(
        first.prompt.first(),
        Some(&Message::new(
            "user",
            "what are some pranks with a pen i can do?"
        ))
    );
    assert_eq!(first.prompt.len(), 5);
    assert_eq!(first.prompt.last().unwrap().role, "user");
    assert_eq!(
        first.prompt.last().unwrap().content,
        "okay some of these do not have anything to do with pens"
    );
    assert!(first
        .chosen
        .starts_with("No, sorry!  All of these involve a pen"));
    assert!(pairs
        .iter()
        .all(|pair| pair.prompt.last().is_some_and(|m| m.role == "user")));
    assert_eq!(read_pairs(&path).unwrap(), pairs);
}
