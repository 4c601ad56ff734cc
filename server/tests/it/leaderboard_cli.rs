//! `moat leaderboard` on Arena battles files: categories, de-duplication, style control, history,
//! and a composite of two files with weights.

use std::path::Path;

/// Runs `moat` with `args` (no database is touched for battles files); stdout, or the failure.
fn moat(args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .output()
        .expect("run moat");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `a_wins` battles won by `a` and `b_wins` by `b`, sides alternating, each with a conversation:
/// every third asks for code, `repeat` of them ask the same "hi", the longer answer is `a`'s.
fn battles_file(path: &Path, a: &str, b: &str, a_wins: usize, b_wins: usize, repeat: usize) {
    let mut lines = Vec::new();
    for k in 0..(a_wins + b_wins) {
        let prompt = if k < repeat {
            "hi".to_string()
        } else if k % 3 == 0 {
            format!("Write a Python function number {k}.")
        } else {
            format!("Tell me about the number {k}.")
        };
        let a_won = k < a_wins;
        let (left, right, winner) = if k % 2 == 0 {
            (a, b, if a_won { "model_a" } else { "model_b" })
        } else {
            (b, a, if a_won { "model_b" } else { "model_a" })
        };
        let answer = |model: &str| {
            if model == a {
                format!("- {model}\n- a long answer with a list\n- and more")
            } else {
                format!("{model} short")
            }
        };
        let conversation = |model: &str| {
            serde_json::json!([
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer(model)}
            ])
        };
        lines.push(
            serde_json::json!({
                "model_a": left, "model_b": right, "winner": winner,
                "tstamp": 1_700_000_000 + 3_600 * k,
                "conversation_a": conversation(left),
                "conversation_b": conversation(right),
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn battles_files_by_category_deduplicated_with_style_control_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("battles.jsonl");
    battles_file(&path, "x", "y", 120, 80, 60);
    let file = path.to_str().unwrap();
    let text = moat(&[
        "leaderboard",
        "--battles",
        file,
        "--rounds",
        "20",
        "--by-category",
        "--style-control",
        "--history",
        "50",
    ])
    .unwrap();
    for expected in [
        "De-duplication: ",
        "With style control (length and markdown held equal):",
        "Rank by category",
        "History (",
        "The top 3 changed at",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // 200 battles, 141 distinct prompts ("hi" 60 times): pandas' 99.99th percentile of the counts
    // is 1 + 0.986 × 59 = 59.174, so "hi" keeps 59 and one battle is left out.
    let json: serde_json::Value = serde_json::from_str(
        &moat(&["leaderboard", "--battles", file, "--rounds", "0", "--json"]).unwrap(),
    )
    .unwrap();
    assert_eq!(json["deduplication"]["battles_left_out"], 1);
    assert_eq!(json["n_battles"], 199);
    let all = moat(&[
        "leaderboard",
        "--battles",
        file,
        "--rounds",
        "0",
        "--json",
        "--no-dedup",
    ])
    .unwrap();
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["n_battles"], 200);
    assert!(all["deduplication"].is_null());
    // Code prompts: k % 3 == 0 among k = 60..200, that is 60..=198 in steps of 3 (47 battles).
    let code: serde_json::Value = serde_json::from_str(
        &moat(&[
            "leaderboard",
            "--battles",
            file,
            "--rounds",
            "0",
            "--json",
            "--no-dedup",
            "--category",
            "code",
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(code["n_battles"], 47);
    assert_eq!(code["category"], "code");
    let error = moat(&["leaderboard", "--battles", file, "--category", "poetry"]).unwrap_err();
    assert!(
        error.contains("no battles in category \"poetry\""),
        "{error}"
    );
    assert!(error.contains("code (47)"), "{error}");
}

/// File one: x beats y 30–10; file two: 10–10, weighted 3. One fit to 30 + 30 = 60 wins against
/// 10 + 30 = 40: x − y = ln 1.5 natural units = 70.4 points (prior 0.01 aside: within 0.5).
#[test]
fn a_composite_of_two_files_weighs_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.jsonl"), dir.path().join("two.jsonl"));
    battles_file(&one, "x", "y", 30, 10, 0);
    battles_file(&two, "x", "y", 10, 10, 0);
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    let json: serde_json::Value = serde_json::from_str(
        &moat(&[
            "leaderboard",
            "--battles",
            one,
            "--battles",
            two,
            "--weights",
            "1,3",
            "--rounds",
            "0",
            "--json",
        ])
        .unwrap(),
    )
    .unwrap();
    let gap = json["models"][0]["rating"].as_f64().unwrap()
        - json["models"][1]["rating"].as_f64().unwrap();
    assert!(
        (gap - 1.5f64.ln() * 400.0 / std::f64::consts::LN_10).abs() < 0.5,
        "{gap}"
    );
    assert_eq!(json["sources"][1]["weight"], 3.0);
    assert_eq!(
        json["models"][0]["votes_by_source"],
        serde_json::json!([40, 20])
    );
    let error = moat(&[
        "leaderboard",
        "--battles",
        one,
        "--battles",
        two,
        "--weights",
        "1",
    ])
    .unwrap_err();
    assert!(
        error.contains("--weights has 1 values for 2 sources"),
        "{error}"
    );
    let text = moat(&[
        "leaderboard",
        "--battles",
        one,
        "--battles",
        two,
        "--rounds",
        "10",
    ])
    .unwrap();
    assert!(text.contains("S2: ") && text.contains("weight 1"), "{text}");
}

/// Votes exported as Arena battles in Parquet and in JSON Lines read back to the same leaderboard
/// (Parquet by its magic bytes, with conversations, languages and times).
#[test]
fn parquet_battles_read_like_json_lines() {
    use moat_exports::{
        writer_for, Choice, Container, ExportOptions, Format, Message, Openness, VoteRecord,
    };
    let records: Vec<VoteRecord> = (0..120i64)
        .map(|id| {
            let (left, right) = match id % 3 {
                0 => ("x", "y"),
                1 => ("y", "z"),
                _ => ("z", "x"),
            };
            VoteRecord {
                vote_id: id,
                study: "s".into(),
                prompt_id: format!("p{id}"),
                conversation: vec![Message::new(
                    "user",
                    if id % 4 == 0 {
                        "Write Python code, please."
                    } else {
                        "Tell me a joke."
                    },
                )],
                category: None,
                language: Some("en".into()),
                left_model: left.into(),
                left_openness: Openness::Open,
                left_response: format!("answer {id} from {left}"),
                right_model: right.into(),
                right_openness: Openness::Closed,
                right_response: format!("{right} says hi"),
                choice: [
                    Choice::Left,
                    Choice::Right,
                    Choice::Left,
                    Choice::Tie,
                    Choice::BothBad,
                ][id as usize % 5],
                rater: "r".into(),
                created_ms: 1_700_000_000_000 + id * 1_000,
                source_guess: None,
                source_confidence: None,
                rationale: None,
                time_on_page_ms: None,
                assignment_kind: "normal".into(),
                completion_code: None,
                left_history: Vec::new(),
                right_history: Vec::new(),
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, container: Container| {
        let path = dir.path().join(name);
        let options = ExportOptions {
            container,
            ..ExportOptions::default()
        };
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = writer_for(Format::Arena, &options, Box::new(file)).unwrap();
        for record in &records {
            writer.write_record(record).unwrap();
        }
        writer.finish().unwrap();
        path
    };
    let parquet = write("battles.parquet", Container::Parquet);
    let jsonl = write("battles.jsonl", Container::Jsonl);
    let board = |path: &Path| -> serde_json::Value {
        let args = [
            "leaderboard",
            "--battles",
            path.to_str().unwrap(),
            "--rounds",
            "30",
            "--json",
            "--by-category",
            "--no-dedup",
        ];
        serde_json::from_str(&moat(&args).unwrap()).unwrap()
    };
    let (from_parquet, from_jsonl) = (board(&parquet), board(&jsonl));
    assert_eq!(from_parquet["n_battles"], 120);
    assert_eq!(from_parquet["models"], from_jsonl["models"]);
    assert_eq!(from_parquet["categories"], from_jsonl["categories"]);
    // Every fourth prompt asks for code: 30 battles.
    assert_eq!(from_parquet["categories"][0]["category"], "code");
    assert_eq!(from_parquet["categories"][0]["battles"], 30);
}

/// A Parquet file shaped like LMArena's battles without texts (style counts as nested structs, the
/// judged hard-prompt criteria, times) is read by column and gives the same leaderboard as the
/// same battles in JSON Lines, with the hard-prompt category.
#[test]
fn arena_parquet_with_style_counts_reads_by_column_like_json_lines() {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, StructArray,
    };
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    let n = 300usize;
    let models = ["x", "y", "z"];
    let model_a: Vec<&str> = (0..n).map(|i| models[i % 3]).collect();
    let model_b: Vec<&str> = (0..n).map(|i| models[(i + 1) % 3]).collect();
    let winner: Vec<&str> = (0..n)
        .map(|i| ["model_a", "model_b", "model_a", "tie"][(i * 7 / 3) % 4])
        .collect();
    let tokens_a: Vec<i64> = (0..n as i64).map(|i| 100 + (i * 37) % 400).collect();
    let tokens_b: Vec<i64> = (0..n as i64).map(|i| 80 + (i * 53) % 300).collect();
    let headers: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let hard: Vec<bool> = (0..n).map(|i| i % 5 == 0).collect();
    let field =
        |name: &str, array: &ArrayRef| Arc::new(Field::new(name, array.data_type().clone(), true));
    let structure = |children: Vec<(&str, ArrayRef)>| -> ArrayRef {
        Arc::new(StructArray::from(
            children
                .into_iter()
                .map(|(name, a)| (field(name, &a), a))
                .collect::<Vec<_>>(),
        ))
    };
    let ints = |values: &[i64]| -> ArrayRef { Arc::new(Int64Array::from(values.to_vec())) };
    let criteria = structure(
        moat_stats::hard_prompt::CRITERIA
            .iter()
            .map(|(key, _)| (*key, Arc::new(BooleanArray::from(hard.clone())) as ArrayRef))
            .collect(),
    );
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("model_a", Arc::new(StringArray::from(model_a.clone()))),
        ("model_b", Arc::new(StringArray::from(model_b.clone()))),
        ("winner", Arc::new(StringArray::from(winner.clone()))),
        (
            "conv_metadata",
            structure(vec![
                ("sum_assistant_a_tokens", ints(&tokens_a)),
                ("sum_assistant_b_tokens", ints(&tokens_b)),
                ("header_count_a", structure(vec![("h1", ints(&headers))])),
                ("header_count_b", structure(vec![("h1", ints(&vec![0; n]))])),
                (
                    "list_count_a",
                    structure(vec![("ordered", ints(&vec![0; n]))]),
                ),
                ("list_count_b", structure(vec![("ordered", ints(&headers))])),
                ("bold_count_a", structure(vec![("**", ints(&vec![1; n]))])),
                ("bold_count_b", structure(vec![("**", ints(&vec![0; n]))])),
            ]),
        ),
        ("category_tag", structure(vec![("criteria_v0.1", criteria)])),
        (
            "tstamp",
            Arc::new(Float64Array::from(
                (0..n)
                    .map(|i| 1.7e9 + 3600.0 * i as f64)
                    .collect::<Vec<_>>(),
            )),
        ),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| field(name, a))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("battles.parquet");
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        schema,
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let counts = |key: &str, value: i64| serde_json::json!({ key: value });
            serde_json::json!({
                "model_a": model_a[i], "model_b": model_b[i], "winner": winner[i],
                "tstamp": 1.7e9 + 3600.0 * i as f64,
                "conv_metadata": {
                    "sum_assistant_a_tokens": tokens_a[i], "sum_assistant_b_tokens": tokens_b[i],
                    "header_count_a": counts("h1", headers[i]), "header_count_b": counts("h1", 0),
                    "list_count_a": counts("ordered", 0), "list_count_b": counts("ordered", headers[i]),
                    "bold_count_a": counts("**", 1), "bold_count_b": counts("**", 0),
                },
                "category_tag": { "criteria_v0.1": moat_stats::hard_prompt::CRITERIA.iter()
                    .map(|(key, _)| (key.to_string(), serde_json::json!(hard[i])))
                    .collect::<serde_json::Map<_, _>>() },
            })
            .to_string()
        })
        .collect();
    let jsonl = dir.path().join("battles.jsonl");
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let board = |path: &Path, category: Option<&str>| -> serde_json::Value {
        let mut args = vec![
            "leaderboard",
            "--battles",
            path.to_str().unwrap(),
            "--style-control",
            "--rounds",
            "10",
            "--json",
        ];
        if let Some(category) = category {
            args.extend(["--category", category]);
        }
        serde_json::from_str(&moat(&args).unwrap()).unwrap()
    };
    let ratings = |report: &serde_json::Value, table: &str| -> Vec<(String, f64)> {
        let rows = if table == "style" {
            &report["style_control"]["models"]
        } else {
            &report["models"]
        };
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["model"].as_str().unwrap().to_string(),
                    r["rating"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (from_parquet, from_json) = (board(&parquet, None), board(&jsonl, None));
    assert_eq!(
        ratings(&from_parquet, "plain"),
        ratings(&from_json, "plain")
    );
    assert_eq!(
        ratings(&from_parquet, "style"),
        ratings(&from_json, "style")
    );
    assert!(!ratings(&from_parquet, "style").is_empty());
    let hard_parquet = board(&parquet, Some("hard-prompt"));
    assert_eq!(hard_parquet["n_battles"], n as u64 / 5, "{hard_parquet}");
    assert_eq!(
        ratings(&hard_parquet, "plain"),
        ratings(&board(&jsonl, Some("hard-prompt")), "plain")
    );
}
