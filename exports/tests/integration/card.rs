use moat_exports::card::{dataset_card, AgreementFigure, CardConfig, CardInfo, CardModel};
use moat_exports::Openness;

fn info() -> CardInfo {
    CardInfo {
        pretty_name: "Open vs closed: \"harmless\" replication".to_string(),
        study_slug: "hh-harmless-replication".to_string(),
        summary: "Blind comparisons of open and closed models on HH-RLHF prompts.".to_string(),
        license: "cc-by-4.0".to_string(),
        language: vec!["en".to_string()],
        instructions:
            "Pick the response that is more helpful.\n\nIf both are harmful, choose *both bad*."
                .to_string(),
        raters: 42,
        raters_excluded: 3,
        recruitment: Some("Prolific, paid £9/hour".to_string()),
        items: 1000,
        votes: 2950,
        target_votes_per_item: Some(3),
        attention_check_rate: Some(0.05),
        attention_checks_failed: Some(7),
        exclusions: vec!["3 raters who failed 2 or more attention checks (61 votes)".to_string()],
        agreement: vec![AgreementFigure {
            label: "Pairwise agreement, items with 3 votes".to_string(),
            value: "0.71 (95% CI 0.68–0.74, n = 950 items, bootstrap)".to_string(),
        }],
        models: vec![
            CardModel {
                name: "llama-3.1-8b-instruct".to_string(),
                openness: Openness::Open,
                provider: Some("Meta".to_string()),
            },
            CardModel {
                name: "gpt-4o-mini".to_string(),
                openness: Openness::Closed,
                provider: None,
            },
        ],
        first_vote_ms: Some(1_714_521_600_000),
        last_vote_ms: Some(1_717_200_000_000),
        rows: 2950,
        configs: vec![
            CardConfig {
                name: "trl".to_string(),
                data_files: vec![
                    ("train".to_string(), "trl-train.parquet".to_string()),
                    ("test".to_string(), "trl-test.parquet".to_string()),
                ],
            },
            CardConfig {
                name: "votes".to_string(),
                data_files: vec![("train".to_string(), "votes-train.parquet".to_string())],
            },
        ],
    }
}

#[test]
fn card_has_the_hugging_face_header_and_the_datasheet() {
    let card = dataset_card(&info());
    let header = card
        .strip_prefix("---\n")
        .unwrap()
        .split("\n---\n")
        .next()
        .unwrap();
    assert!(header.contains("license: \"cc-by-4.0\""));
    assert!(header.contains("pretty_name: \"Open vs closed: \\\"harmless\\\" replication\""));
    assert!(header.contains("size_categories:\n- \"1K<n<10K\""));
    assert!(header.contains("task_categories:\n- text-generation"));
    assert!(header.contains(
        "configs:\n- config_name: \"trl\"\n  default: true\n  data_files:\n  - split: \"train\"\n    path: \"trl-train.parquet\"\n  - split: \"test\""
    ));
    for expected in [
        "- Raters: 42 (3 excluded from this export)",
        "- Votes per item: 2.95 on average (target 3)",
        "- Quality checks (attention and gold items): 5.0% of assignments, 7 failed",
        "- Date range of votes (UTC): 2024-05-01 to 2024-06-01",
        "> Pick the response that is more helpful.\n>\n> If both are harmful",
        "- 3 raters who failed 2 or more attention checks (61 votes)",
        "- Pairwise agreement, items with 3 votes: 0.71 (95% CI 0.68–0.74, n = 950 items, bootstrap)",
        "| llama-3.1-8b-instruct | open weights | Meta |",
        "| gpt-4o-mini | closed (API) |  |",
    ] {
        assert!(card.contains(expected), "missing {expected:?} in\n{card}");
    }
    assert_eq!(card, dataset_card(&info()));
}
