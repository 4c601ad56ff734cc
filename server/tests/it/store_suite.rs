//! The store suite: the same tests on SQLite and on PostgreSQL.

use std::collections::HashSet;

use moat_app::backend::{Backend, BackendError};
use moat_app::wire::{NewStudy, RaterView, StudySettings};
use moat_server::domain::StudySlug;
use moat_server::import::{import_jsonl, ImportError};
use moat_server::service::AppService;
use moat_server::store::Store;

use crate::on_both_backends;
use crate::support::{backend_with_open_study, sample_jsonl, vote};

async fn backend_with_study(
    url: &str,
    slug: &str,
    prompts: usize,
    items_per_rater: u32,
) -> std::sync::Arc<AppService> {
    let settings = StudySettings {
        items_per_rater,
        ..Default::default()
    };
    backend_with_open_study(url, slug, prompts, settings).await
}

async fn full_rater_session(url: &str) {
    let backend = backend_with_study(url, "session", 4, 10).await;
    let token = backend
        .consent("session", Some("PID-1"), None)
        .await
        .unwrap();
    let mut seen_assignments = HashSet::new();
    let mut shown_texts = HashSet::new();
    for round in 0..4 {
        let RaterView::Compare(first) = backend.rater_view("session", &token).await.unwrap() else {
            panic!("round {round}: expected a comparison");
        };
        // Asking again before voting shows the same assignment, not a new one.
        let RaterView::Compare(again) = backend.rater_view("session", &token).await.unwrap() else {
            panic!()
        };
        assert_eq!(first.assignment, again.assignment);
        assert_eq!(first.position, round + 1);
        assert!(seen_assignments.insert(first.assignment.clone()));
        // Never the same prompt twice for one rater.
        assert!(
            shown_texts.insert(first.turns[0].html.clone()),
            "prompt repeated: {}",
            first.turns[0].html
        );
        backend
            .vote("session", &token, vote(&first.assignment, "left"))
            .await
            .unwrap();
        // A resubmission of the same vote is harmless; a different one is refused.
        backend
            .vote("session", &token, vote(&first.assignment, "left"))
            .await
            .unwrap();
        let changed = backend
            .vote("session", &token, vote(&first.assignment, "right"))
            .await
            .unwrap_err();
        assert!(matches!(changed, BackendError::Conflict(_)), "{changed:?}");
    }
    // Four prompts, four votes: the session is complete.
    assert!(matches!(
        backend.rater_view("session", &token).await.unwrap(),
        RaterView::Done(_)
    ));
    // Another rater cannot vote on this rater's assignments, and invented ids are refused.
    let other = backend.consent("session", None, None).await.unwrap();
    let RaterView::Compare(theirs) = backend.rater_view("session", &other).await.unwrap() else {
        panic!()
    };
    let stolen = seen_assignments.iter().next().unwrap();
    assert!(matches!(
        backend.vote("session", &other, vote(stolen, "left")).await,
        Err(BackendError::NotFound(_))
    ));
    // An id that is no assignment id at all is refused before the database is asked, naming the
    // field; a well-formed one that names no assignment of this rater is not found.
    match backend
        .vote("session", &other, vote("deadbeef", "left"))
        .await
    {
        Err(BackendError::BadRequest(message)) => {
            assert!(message.starts_with("assignment must be"), "{message}")
        }
        other => panic!("a malformed assignment id: {other:?}"),
    }
    assert!(matches!(
        backend
            .vote("session", &other, vote(&"0".repeat(32), "left"))
            .await,
        Err(BackendError::NotFound(_))
    ));
    assert!(matches!(
        backend
            .vote("session", &other, vote(&theirs.assignment, "sideways"))
            .await,
        Err(BackendError::BadRequest(_))
    ));
    assert!(matches!(
        backend
            .vote("session", "not-a-token", vote(&theirs.assignment, "left"))
            .await,
        Err(BackendError::Unauthorized(_))
    ));
    let report = backend.study_report("session").await.unwrap();
    assert_eq!(report.summary.votes, 4);
    assert_eq!(report.summary.raters, 2);
    assert_eq!(
        report.results.iter().map(|r| r.votes).sum::<i64>(),
        8,
        "each vote counts for two models"
    );
    // A participant id that joins again (another browser, or someone who knows the id) gets a
    // session of its own: the first session's token and pending comparison stay with it, and the
    // researcher sees the duplicate.
    let first = backend
        .consent("session", Some("PID-2"), None)
        .await
        .unwrap();
    let RaterView::Compare(pending) = backend.rater_view("session", &first).await.unwrap() else {
        panic!("a comparison for the first session")
    };
    let again = backend
        .consent("session", Some("PID-2"), None)
        .await
        .unwrap();
    assert_ne!(again, first);
    if let RaterView::Compare(shown) = backend.rater_view("session", &again).await.unwrap() {
        assert_ne!(
            shown.assignment, pending.assignment,
            "never the other session's comparison"
        );
    }
    assert!(
        matches!(
            backend
                .vote("session", &again, vote(&pending.assignment, "left"))
                .await,
            Err(BackendError::BadRequest(_)
                | BackendError::NotFound(_)
                | BackendError::Conflict(_))
        ),
        "the second session cannot vote on the first one's comparison"
    );
    backend
        .vote("session", &first, vote(&pending.assignment, "left"))
        .await
        .expect("the first session still holds its comparison");
    let report = backend.study_report("session").await.unwrap();
    let duplicates = report
        .raters
        .iter()
        .filter(|r| r.other_sessions == 1)
        .count();
    assert_eq!(
        duplicates, 2,
        "both sessions of PID-2 are shown as duplicates"
    );
    // An imported dataset's annotator can never be joined by its name.
    let study = backend.store.study("session").await.unwrap();
    let mut tx = backend.store.begin_write().await.unwrap();
    tx.imported_rater(study.id, "annotator-7").await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        backend.consent("session", Some("annotator-7"), None).await,
        Err(BackendError::Conflict(_))
    ));
    // A study that requires a participant id starts no session without one.
    let mut changes = moat_app::wire::StudyChanges {
        title: "Session".into(),
        instructions: String::new(),
        settings: backend.store.study("session").await.unwrap().settings,
    };
    changes.settings.require_participant = true;
    backend.update_study("session", changes).await.unwrap();
    let refused = backend.consent("session", None, None).await.unwrap_err();
    assert!(
        matches!(&refused, BackendError::BadRequest(m) if m.contains("PROLIFIC_PID")),
        "{refused:?}"
    );
    backend
        .consent("session", Some("PID-3"), None)
        .await
        .unwrap();
    // A closed study takes no votes.
    backend.set_study_status("session", "closed").await.unwrap();
    assert!(matches!(
        backend
            .vote("session", &other, vote(&theirs.assignment, "left"))
            .await,
        Err(BackendError::Conflict(_))
    ));
    backend.store.close().await;
}
on_both_backends!(full_rater_session);

async fn pairs_are_balanced_across_raters(url: &str) {
    let backend = backend_with_study(url, "balance", 30, 6).await;
    for _ in 0..10 {
        let token = backend.consent("balance", None, None).await.unwrap();
        while let RaterView::Compare(c) = backend.rater_view("balance", &token).await.unwrap() {
            backend
                .vote("balance", &token, vote(&c.assignment, "tie"))
                .await
                .unwrap();
        }
    }
    let report = backend.study_report("balance").await.unwrap();
    assert_eq!(report.summary.votes, 60);
    let shown: Vec<i64> = report.pairs.iter().map(|p| p.shown).collect();
    assert_eq!(shown.len(), 3, "{:?}", report.pairs);
    assert_eq!(shown.iter().sum::<i64>(), 60);
    assert!(
        shown.iter().max().unwrap() - shown.iter().min().unwrap() <= 1,
        "unbalanced: {shown:?}"
    );
    backend.store.close().await;
}
on_both_backends!(pairs_are_balanced_across_raters);

async fn bad_imports_write_nothing(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let slug = StudySlug::parse("bad").unwrap();
    let header = r#"{"models":[{"name":"a","provider":"P","openness":"open"},{"name":"b","provider":"Q","openness":"closed"}]}"#;
    let good = r#"{"id":"1","prompt":"q","responses":{"a":"x","b":"y"}}"#;
    let cases: Vec<(String, usize, &str)> = vec![
        (format!("{header}\n{good}\n{{not json"), 3, "(line)"),
        (format!("{header}\n{good}\n{{\"id\":\"2\",\"responses\":{{\"a\":\"x\",\"b\":\"y\"}}}}"), 3, "prompt"),
        (format!("{header}\n{good}\n{{\"id\":\"2\",\"prompt\":\"q\",\"responses\":{{\"a\":\"x\",\"zz\":\"y\"}}}}"), 3, "responses.zz"),
        (format!("{header}\n{good}\n{good}"), 3, "id"),
        (format!("{header}\n{good}\n{{\"id\":\"3\",\"prompt\":\"q\",\"responses\":{{\"a\":\"x\"}}}}"), 3, "responses"),
        (good.to_string(), 1, "responses.a"),
        // A line past the limit is refused before it is held whole (and before its JSON is read).
        (
            format!(
                "{header}\n{good}\n{{\"id\":\"2\",\"prompt\":\"{}\"}}\n",
                "q".repeat(moat_exports::read::MAX_RECORD_BYTES)
            ),
            3,
            "(line)",
        ),
    ];
    for (text, line, field) in cases {
        let error = import_jsonl(&store, &slug, text.as_bytes(), &[])
            .await
            .unwrap_err();
        match error {
            ImportError::Input(e) => {
                assert_eq!((e.line, e.field.as_str()), (line, field), "{text}: {e}")
            }
            other => panic!("{text}: expected an input error, got {other}"),
        }
        // Nothing was written: not even the study the import would have created.
        assert!(
            store.study("bad").await.is_err(),
            "{text}: the study was created"
        );
    }
    // The same file without its bad line imports, and a second import of a duplicate id is refused
    // while the first import stays whole.
    import_jsonl(&store, &slug, format!("{header}\n{good}\n").as_bytes(), &[])
        .await
        .unwrap();
    let again = import_jsonl(&store, &slug, format!("{good}\n").as_bytes(), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(again, ImportError::Input(ref e) if e.field == "id"),
        "{again}"
    );
    let study = store.study("bad").await.unwrap();
    assert_eq!(
        store
            .comparable_prompts(study.id, false, false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.models(study.id).await.unwrap().len(), 2);
    store.close().await;
}
on_both_backends!(bad_imports_write_nothing);

/// Two writers create the same new model of a study at once (two imports, `moat generate`, a battle's
/// end): the second waits for the first and then reuses its row. Before, on PostgreSQL, it failed on
/// the unique key `models(study_id, name)` and its whole import was rolled back.
async fn a_model_created_meanwhile_is_reused(url: &str) {
    use moat_exports::Openness;
    let store = std::sync::Arc::new(Store::connect(url).await.unwrap());
    let slug = StudySlug::parse("race").unwrap();
    let header = r#"{"models":[{"name":"a","provider":"P","openness":"open"},{"name":"b","provider":"Q","openness":"closed"}]}"#;
    let good = r#"{"id":"1","prompt":"q","responses":{"a":"x","b":"y"}}"#;
    import_jsonl(&store, &slug, format!("{header}\n{good}\n").as_bytes(), &[])
        .await
        .unwrap();
    let study_id = store.study("race").await.unwrap().id;
    let mut first = store.begin_write().await.unwrap();
    let created = first
        .insert_model(study_id, "c", "P", Openness::Open, "")
        .await
        .unwrap();
    let other = store.clone();
    let second = tokio::spawn(async move {
        let mut tx = other.begin_write().await.unwrap();
        let id = tx
            .insert_model(study_id, "c", "P", Openness::Open, "")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    });
    // Let the second writer reach its INSERT (and wait on the first) before the first commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), created);
    let models = store.models(study_id).await.unwrap();
    assert_eq!(models.len(), 3);
    assert_eq!(models.iter().filter(|m| m.name == "c").count(), 1);
    store.close().await;
}
on_both_backends!(a_model_created_meanwhile_is_reused);

async fn export_streams_decided_votes(url: &str) {
    let backend = backend_with_study(url, "exp", 6, 6).await;
    let token = backend.consent("exp", None, None).await.unwrap();
    let choices = ["left", "right", "tie", "both_bad", "left", "right"];
    for choice in choices {
        let RaterView::Compare(c) = backend.rater_view("exp", &token).await.unwrap() else {
            panic!()
        };
        backend
            .vote("exp", &token, vote(&c.assignment, choice))
            .await
            .unwrap();
    }
    let study = backend.store.study("exp").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let trl = moat_server::export::ExportRequest::new("trl").unwrap();
    let summary = moat_server::export::export_to_file(&backend.store, &study, &trl, &path)
        .await
        .unwrap();
    assert_eq!(
        (
            summary.rows_written,
            summary.skipped_ties,
            summary.skipped_both_bad
        ),
        (4, 1, 1)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let chosen_model = row["model_chosen"].as_str().unwrap();
        let index = chosen_model_index(chosen_model);
        // The sample answers name their model's index, so the chosen text must match the chosen model.
        assert!(
            row["chosen"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Answer {index} ")),
            "{row}"
        );
        assert_ne!(row["model_chosen"], row["model_rejected"]);
        assert!(row["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Question number"));
        assert_eq!(row["study"], "exp");
        assert!(row["created"].as_str().unwrap().ends_with('Z'));
    }
    // Byte-identical on a second run.
    let again = dir.path().join("again.jsonl");
    moat_server::export::export_to_file(&backend.store, &study, &trl, &again)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
    assert!(moat_server::export::ExportRequest::new("nope").is_err());
    backend.store.close().await;
}
on_both_backends!(export_streams_decided_votes);

fn chosen_model_index(name: &str) -> usize {
    crate::support::MODELS
        .iter()
        .position(|(model, ..)| *model == name)
        .expect("known model")
}

async fn imports_public_datasets_with_votes(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata");
    let oasst = StudySlug::parse("oasst").unwrap();
    let report = moat_server::import::import_dataset(
        &store,
        &oasst,
        moat_exports::import::ImportFormat::Oasst,
        std::path::Path::new(&format!("{data}/oasst/en_100_tree.jsonl")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(report.votes_imported, 754, "{report}");
    assert_eq!(report.prompts_imported, 212, "{report}");
    let study = store.study("oasst").await.unwrap();
    let backend = AppService::new(store.clone(), String::new());
    let records = backend.study_records(&study).await.unwrap();
    assert_eq!(records.len(), 754);
    assert!(
        records
            .iter()
            .all(|r| r.choice == moat_exports::Choice::Left
                || r.choice == moat_exports::Choice::Right)
    );

    // A malformed file is refused whole: nothing of it lands.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    let good_line = r#"{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}"#;
    std::fs::write(&bad, format!("{good_line}\n{{\"chosen\": 5}}\n")).unwrap();
    let hh = StudySlug::parse("hh").unwrap();
    let error = moat_server::import::import_dataset(
        &store,
        &hh,
        moat_exports::import::ImportFormat::HhRlhf,
        &bad,
        &[],
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("line 2"), "{error}");
    assert!(
        store.study("hh").await.is_err(),
        "nothing of the bad file was written"
    );
    store.close().await;
}
on_both_backends!(imports_public_datasets_with_votes);

/// `moat train --study` reads the study's decided votes and writes a model that `moat score` uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_and_score_from_a_study() {
    use clap::Parser;
    let db = crate::support::TestDb::sqlite();
    let backend = backend_with_study(db.url(), "train", 40, 40).await;
    for _ in 0..3 {
        let token = backend.consent("train", None, None).await.unwrap();
        while let RaterView::Compare(c) = backend.rater_view("train", &token).await.unwrap() {
            backend
                .vote("train", &token, vote(&c.assignment, "left"))
                .await
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let cli = moat_server::cli::Cli::try_parse_from([
        "moat",
        "--database-url",
        db.url(),
        "train",
        "--study",
        "train",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "1",
        "--quiet",
    ])
    .unwrap();
    moat_server::cli::run(cli).await.unwrap();
    assert!(out.join("config.json").exists() || std::fs::read_dir(&out).unwrap().count() > 0);

    // Score the study's own export with the trained model.
    let study = backend.store.study("train").await.unwrap();
    let trl = moat_server::export::ExportRequest::new("trl").unwrap();
    let data = dir.path().join("pairs.jsonl");
    let summary = moat_server::export::export_to_file(&backend.store, &study, &trl, &data)
        .await
        .unwrap();
    assert_eq!(summary.rows_written, 120);
    let scores = dir.path().join("scores.jsonl");
    let cli = moat_server::cli::Cli::try_parse_from([
        "moat",
        "score",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
    ])
    .unwrap();
    moat_server::cli::run(cli).await.unwrap();
    let scored = std::fs::read_to_string(&scores).unwrap();
    assert_eq!(scored.lines().count(), 120);
    let first: serde_json::Value = serde_json::from_str(scored.lines().next().unwrap()).unwrap();
    assert!(
        first["reward_chosen"].is_number() && first["reward_rejected"].is_number(),
        "{first}"
    );
    backend.store.close().await;
}

/// With reveal-after-vote on, the models are named only after the vote, on a page of their own, and
/// the next comparison comes after the rater moves on.
async fn reveal_after_vote(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let backend = AppService::new(store, String::new());
    let settings = StudySettings {
        reveal_after_vote: true,
        items_per_rater: 2,
        ..Default::default()
    };
    backend
        .create_study(NewStudy {
            slug: "reveal".into(),
            title: "R".into(),
            instructions: String::new(),
            settings,
        })
        .await
        .unwrap();
    let slug = StudySlug::parse("reveal").unwrap();
    import_jsonl(&backend.store, &slug, sample_jsonl(3).as_bytes(), &[])
        .await
        .unwrap();
    backend.set_study_status("reveal", "open").await.unwrap();
    let token = backend.consent("reveal", None, None).await.unwrap();
    let RaterView::Compare(first) = backend.rater_view("reveal", &token).await.unwrap() else {
        panic!()
    };
    backend
        .vote("reveal", &token, vote(&first.assignment, "right"))
        .await
        .unwrap();
    let RaterView::Reveal(reveal) = backend.rater_view("reveal", &token).await.unwrap() else {
        panic!("expected the reveal page");
    };
    let names: Vec<&str> = crate::support::MODELS
        .iter()
        .map(|(name, ..)| *name)
        .collect();
    assert!(
        names.contains(&reveal.left_model.as_str()) && names.contains(&reveal.right_model.as_str())
    );
    assert_ne!(reveal.left_model, reveal.right_model);
    assert_eq!(reveal.choice, "right");
    // Asking again still shows the reveal; moving on gives the next comparison.
    assert!(matches!(
        backend.rater_view("reveal", &token).await.unwrap(),
        RaterView::Reveal(_)
    ));
    backend
        .continue_after_reveal("reveal", &token)
        .await
        .unwrap();
    let RaterView::Compare(second) = backend.rater_view("reveal", &token).await.unwrap() else {
        panic!()
    };
    assert_ne!(first.assignment, second.assignment);
    assert_eq!(second.position, 2);
    backend.store.close().await;
}
on_both_backends!(reveal_after_vote);

/// Arena battles: several judges per question and model pair, so items are rated more than once.
/// Even questions: model_a, model_a, model_b (agreement 2/3); odd ones: model_b three times.
fn multiply_rated_battles(questions: usize) -> String {
    let mut lines = Vec::new();
    for q in 0..questions {
        let winners: [&str; 3] = if q.is_multiple_of(2) {
            ["model_a", "model_a", "model_b"]
        } else {
            ["model_b", "model_b", "model_b"]
        };
        for (judge, winner) in winners.iter().enumerate() {
            let conversation = |model: &str| {
                serde_json::json!([
                    {"role": "user", "content": format!("Question {q}?")},
                    {"role": "assistant", "content": format!("{model} answers {q}")}
                ])
            };
            lines.push(
                serde_json::json!({
                    "question_id": format!("q{q}"),
                    "model_a": "alpha",
                    "model_b": "beta",
                    "winner": winner,
                    "judge": format!("judge-{judge}"),
                    "conversation_a": conversation("alpha"),
                    "conversation_b": conversation("beta"),
                    "turn": 1,
                    "anony": true,
                    "language": "English",
                    "tstamp": 1_780_000_000.0 + (q * 3 + judge) as f64,
                })
                .to_string(),
            );
        }
    }
    lines.join("\n") + "\n"
}

/// Imports an Arena battles file into the study `slug` and returns the import's report and the study.
async fn import_arena(
    store: &Store,
    slug: &str,
    path: &std::path::Path,
) -> (
    moat_server::import::DatasetImportReport,
    moat_server::store::StudyRow,
) {
    let report = moat_server::import::import_dataset(
        store,
        &StudySlug::parse(slug).unwrap(),
        moat_exports::import::ImportFormat::Arena,
        path,
        &[],
    )
    .await
    .unwrap();
    (report, store.study(slug).await.unwrap())
}

fn jsonl_rows(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn majority_per_item_with_splits(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let battles = dir.path().join("battles.jsonl");
    let questions = 16;
    std::fs::write(&battles, multiply_rated_battles(questions)).unwrap();
    let (report, study) = import_arena(&store, "maj", &battles).await;
    assert_eq!(report.votes_imported as usize, questions * 3, "{report}");

    let splits = moat_exports::options::Splits::parse("test=0.5").unwrap();
    let seed = 11;
    let choices = |min_agreement: Option<f64>| moat_server::export::ExportChoices {
        container: moat_exports::Container::Jsonl,
        conversational: false,
        models: Vec::new(),
        from: None,
        until: None,
        exclude_ties: false,
        exclude_both_bad: false,
        majority: true,
        min_agreement,
    };
    for min_agreement in [None, Some(0.9)] {
        let request =
            moat_server::export::ExportRequest::with_choices("votes", &choices(min_agreement))
                .unwrap();
        let out = dir.path().join(format!("split-{min_agreement:?}"));
        let written = moat_server::export::export_splits(
            &store,
            &study,
            &request,
            splits.clone(),
            seed,
            &out,
        )
        .await
        .unwrap();
        let mut seen = HashSet::new();
        let mut per_split = Vec::new();
        for (split, path, summary) in &written {
            let rows = jsonl_rows(path);
            assert_eq!(rows.len() as u64, summary.rows_written, "{split}");
            per_split.push(rows.len());
            for row in rows {
                let prompt = row["prompt_id"].as_str().unwrap().to_string();
                // Whole prompts go to the split their stable hash picks, and each item is one row.
                assert_eq!(
                    moat_exports::options::split_for(&prompt, seed, &splits),
                    split,
                    "{prompt}"
                );
                assert!(seen.insert(prompt.clone()), "{prompt} is in two rows");
                assert_eq!(row["rater"], "majority-of-3", "{row}");
                let q: usize = prompt[1..].parse().unwrap();
                let winner = if row["choice"] == "left" {
                    row["left_model"].clone()
                } else {
                    assert_eq!(row["choice"], "right", "{row}");
                    row["right_model"].clone()
                };
                assert_eq!(
                    winner,
                    if q.is_multiple_of(2) { "alpha" } else { "beta" },
                    "{row}"
                );
            }
        }
        assert_eq!(written.len(), 2, "a test and a train file");
        assert!(per_split.iter().all(|&rows| rows > 0), "{per_split:?}");
        let expected = match min_agreement {
            None => questions,
            // Only the unanimous (odd) questions reach 0.9 agreement.
            Some(_) => questions / 2,
        };
        assert_eq!(seen.len(), expected, "{min_agreement:?}");
    }

    // Round trip of multiply rated items: the votes export imports into a new study (rows sharing a
    // prompt become one prompt) and exports the same records again.
    let votes = moat_server::export::ExportRequest::new("votes").unwrap();
    let first = dir.path().join("votes-1.jsonl");
    moat_server::export::export_to_file(&store, &study, &votes, &first)
        .await
        .unwrap();
    let copy = StudySlug::parse("maj-copy").unwrap();
    let report = moat_server::import::import_dataset(
        &store,
        &copy,
        moat_exports::import::ImportFormat::Votes,
        &first,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        (report.prompts_imported, report.votes_imported),
        (questions as u64, questions as u64 * 3),
        "{report}"
    );
    let copied = store.study("maj-copy").await.unwrap();
    let second = dir.path().join("votes-2.jsonl");
    moat_server::export::export_to_file(&store, &copied, &votes, &second)
        .await
        .unwrap();
    let comparable = |path: &std::path::Path| {
        jsonl_rows(path)
            .into_iter()
            .map(|mut row| {
                let object = row.as_object_mut().unwrap();
                object.remove("vote_id");
                object.remove("study");
                row
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(comparable(&first), comparable(&second));

    // Per vote, formats that keep ties write them with their texts (exports from SQLite leave the
    // texts of undecided votes unread only where the format drops those votes).
    let mixed = multiply_rated_battles(2)
        .replacen("\"winner\":\"model_a\"", "\"winner\":\"tie\"", 1)
        .replacen("\"winner\":\"model_b\"", "\"winner\":\"tie (bothbad)\"", 1);
    std::fs::write(&battles, &mixed).unwrap();
    let (_, study) = import_arena(&store, "ties", &battles).await;
    for (format, rows, undecided) in [("arena", 6, 2), ("votes", 6, 2), ("kto", 10, 1)] {
        let request = moat_server::export::ExportRequest::new(format).unwrap();
        let path = dir.path().join(format!("ties-{format}.jsonl"));
        let summary = moat_server::export::export_to_file(&store, &study, &request, &path)
            .await
            .unwrap();
        assert_eq!(summary.rows_written, rows, "{format}: {summary}");
        let rows = jsonl_rows(&path);
        let texts: Vec<String> = rows
            .iter()
            .map(|row| match format {
                "arena" => row["conversation_a"][1]["content"].as_str().unwrap().into(),
                "votes" => row["left_response"].as_str().unwrap().into(),
                _ => row["completion"].as_str().unwrap().into(),
            })
            .collect();
        assert!(
            texts.iter().all(|text| text.contains(" answers ")),
            "{format}: {texts:?}"
        );
        let undecided_rows = rows
            .iter()
            .filter(|row| match format {
                "arena" => row["winner"].as_str().unwrap().starts_with("tie"),
                "votes" => row["choice"] == "tie" || row["choice"] == "both_bad",
                // KTO writes a both-bad vote as two undesirable completions.
                _ => false,
            })
            .count();
        if format != "kto" {
            assert_eq!(undecided_rows, undecided, "{format}");
        } else {
            assert_eq!(summary.skipped_ties, 1, "{summary}");
        }
    }
    store.close().await;
}
on_both_backends!(majority_per_item_with_splits);

/// The SQLite export reads on its own thread in batches of recycled records, cut at 256 records or
/// 512 KiB of text. Thousands of votes with texts from a few bytes to ~12 KB cross both limits many
/// times; the file must hold exactly the records the pool reads, in order, ties and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_export_pipeline_matches_the_pool() {
    let db = crate::support::TestDb::sqlite();
    let store = Store::connect(db.url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let battles = dir.path().join("battles.jsonl");
    let winners = ["model_a", "model_b", "tie", "tie (bothbad)", "model_a"];
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            let long = "lorem \"ipsum\"\n".repeat((i * 37) % 900);
            serde_json::json!({
                "question_id": format!("q{i}"),
                "model_a": format!("m{}", i % 3),
                "model_b": format!("m{}", (i + 1) % 3),
                "winner": winners[i % winners.len()],
                "judge": format!("judge-{}", i % 41),
                "conversation_a": [
                    {"role": "user", "content": format!("question {i}")},
                    {"role": "assistant", "content": format!("a{i} {long}")}
                ],
                "conversation_b": [
                    {"role": "user", "content": format!("question {i}")},
                    {"role": "assistant", "content": format!("b{i}")}
                ],
                "tstamp": 1_780_000_000.0 + i as f64,
            })
            .to_string()
        })
        .collect();
    std::fs::write(&battles, lines.join("\n")).unwrap();
    let (_, study) = import_arena(&store, "pipe", &battles).await;
    let backend = AppService::new(store.clone(), String::new());
    let expected = backend.study_records(&study).await.unwrap();
    assert_eq!(expected.len(), 3000);
    let votes = moat_server::export::ExportRequest::new("votes").unwrap();
    let path = dir.path().join("votes.jsonl");
    let summary = moat_server::export::export_to_file(&store, &study, &votes, &path)
        .await
        .unwrap();
    assert_eq!(summary.rows_written, 3000);
    let rows = jsonl_rows(&path);
    for (row, record) in rows.iter().zip(&expected) {
        assert_eq!(row["vote_id"], record.vote_id, "{row}");
        assert_eq!(row["choice"], record.choice.as_str());
        assert_eq!(row["left_model"], record.left_model.as_str());
        assert_eq!(row["left_response"], record.left_response.as_str());
        assert_eq!(row["right_response"], record.right_response.as_str());
        assert_eq!(row["rater"], record.rater.as_str());
        assert_eq!(
            row["conversation"][0]["content"],
            record.conversation[0].content.as_str()
        );
    }
    // A format that drops ties writes the same decided votes as the records say.
    let trl = moat_server::export::ExportRequest::new("trl").unwrap();
    let path = dir.path().join("trl.jsonl");
    let summary = moat_server::export::export_to_file(&store, &study, &trl, &path)
        .await
        .unwrap();
    let decided: Vec<_> = expected
        .iter()
        .filter_map(|record| record.chosen_rejected())
        .collect();
    assert_eq!(summary.rows_written as usize, decided.len());
    assert_eq!((summary.skipped_ties, summary.skipped_both_bad), (600, 600));
    for (row, (model, chosen, _, rejected)) in jsonl_rows(&path).iter().zip(&decided) {
        assert_eq!(row["model_chosen"], *model);
        assert_eq!(row["chosen"], *chosen);
        assert_eq!(row["rejected"], *rejected);
    }
    store.close().await;
}

/// The sample study plus three quality-check items whose expected response says "PICK ME".
fn sample_with_checks(prompts: usize) -> String {
    let mut file = sample_jsonl(prompts);
    for i in 0..3 {
        let check = serde_json::json!({
            "id": format!("check{i}"),
            "prompt": format!("Check {i}: choose the answer that says PICK ME."),
            "responses": {
                "llama-secret-7b": "PICK ME",
                "gpt-hidden-4": "Not this one.",
                "mistral-covert-8x": "Not this one either.",
            },
            "check": { "kind": if i == 0 { "attention" } else { "gold" }, "better": "llama-secret-7b" },
        });
        file += &format!("{check}\n");
    }
    file
}

/// Quality checks: shown in the asked share and looking like any comparison, scored against the
/// expected response; a rater who fails more than allowed is excluded; check votes stay out of the
/// tallies, the leaderboard and the preference exports, and are in the raw votes with their kind.
async fn quality_checks_score_raters(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let backend = AppService::new(store, String::new());
    let new_study = |slug: &str, settings: StudySettings| NewStudy {
        slug: slug.into(),
        title: "Checks".into(),
        instructions: String::new(),
        settings,
    };
    let refused = backend
        .create_study(new_study(
            "bad-rate",
            StudySettings {
                check_rate: 1.5,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(refused, BackendError::BadRequest(ref m) if m.contains("check_rate")));
    let settings = StudySettings {
        items_per_rater: 5,
        check_rate: 0.4,
        max_failed_checks: Some(0),
        ..Default::default()
    };
    backend
        .create_study(new_study("checks", settings))
        .await
        .unwrap();
    backend
        .create_study(new_study("no-checks", StudySettings::default()))
        .await
        .unwrap();
    for slug in ["checks", "no-checks"] {
        let report = import_jsonl(
            &backend.store,
            &StudySlug::parse(slug).unwrap(),
            sample_with_checks(4).as_bytes(),
            &[],
        )
        .await
        .unwrap();
        assert_eq!((report.prompts_imported, report.checks_imported), (7, 3));
        backend.set_study_status(slug, "open").await.unwrap();
    }

    // A careful rater picks the expected response of every check, a careless one the other side.
    for (participant, careful) in [("careful", true), ("careless", false)] {
        let token = backend
            .consent("checks", Some(participant), None)
            .await
            .unwrap();
        let (mut checks, mut votes) = (0, 0);
        loop {
            match backend.rater_view("checks", &token).await.unwrap() {
                RaterView::Compare(c) => {
                    let wire = serde_json::to_string(&c).unwrap();
                    assert!(
                        !wire.contains("gold") && !wire.contains("attention"),
                        "a check must look like any comparison: {wire}"
                    );
                    let choice = if c.turns[0].html.contains("PICK ME") {
                        checks += 1;
                        let expected_left = c.left_html.contains("PICK ME");
                        assert_ne!(expected_left, c.right_html.contains("PICK ME"));
                        if expected_left == careful {
                            "left"
                        } else {
                            "right"
                        }
                    } else {
                        "left"
                    };
                    backend
                        .vote("checks", &token, vote(&c.assignment, choice))
                        .await
                        .unwrap();
                    votes += 1;
                }
                RaterView::Done(done) => {
                    assert_eq!(done.votes, 5);
                    break;
                }
                other => panic!("{participant}: unexpected {other:?}"),
            }
        }
        // Five comparisons, round(0.4 × 5) = 2 of them checks.
        assert_eq!((votes, checks), (5, 2), "{participant}");
    }
    let report = backend.study_report("checks").await.unwrap();
    assert_eq!((report.summary.prompts, report.summary.check_items), (7, 3));
    let rater = |status: &str| {
        report
            .raters
            .iter()
            .find(|r| r.status == status)
            .unwrap_or_else(|| panic!("no {status} rater in {:?}", report.raters))
            .clone()
    };
    let (careful, careless) = (rater("active"), rater("excluded"));
    assert_eq!(
        (careful.votes, careful.checks_passed, careful.checks_failed),
        (5, 2, 0)
    );
    // Every vote decided; "left" on the three regular items, the checks on the expected side.
    assert_eq!(careful.decided, 5);
    assert!((3..=5).contains(&careful.left_choices), "{careful:?}");
    assert!(
        careful.mean_seconds.is_some_and(|s| s >= 0.0),
        "{careful:?}"
    );
    assert_eq!(
        (
            careless.votes,
            careless.checks_passed,
            careless.checks_failed
        ),
        (5, 0, 2)
    );
    // The careful rater's three regular votes in the results (each counts for both of its models):
    // none of the four checks, none of the excluded rater's.
    let counted: i64 = report.results.iter().map(|r| r.votes).sum();
    assert_eq!(counted, 2 * 3);
    let shown: i64 = report.pairs.iter().map(|p| p.shown).sum();
    let voted: i64 = report.pairs.iter().map(|p| p.votes).sum();
    assert_eq!((shown, voted), (6, 6));
    // The leaderboard has the careful rater's three regular votes.
    let board = backend.leaderboard("checks", false).await.unwrap();
    assert_eq!(board.votes, 3);
    let left_out = board
        .sections
        .iter()
        .find(|s| s.title == "Left out")
        .expect("the leaderboard says what it leaves out");
    assert_eq!(
        left_out.text,
        "Not counted: the votes of 1 excluded rater, and 4 votes on quality checks (they score raters, not models)."
    );

    // Preference exports leave the checks out; the raw votes keep them with their kind.
    let study = backend.store.study("checks").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut trl = moat_server::export::ExportRequest::new("trl").unwrap();
    trl.exclude_marked_raters(&backend.store, &study)
        .await
        .unwrap();
    let summary = moat_server::export::export_to_file(
        &backend.store,
        &study,
        &trl,
        &dir.path().join("trl.jsonl"),
    )
    .await
    .unwrap();
    assert_eq!((summary.rows_written, summary.skipped_checks), (3, 2));
    let votes_path = dir.path().join("votes.jsonl");
    let raw = moat_server::export::ExportRequest::new("votes").unwrap();
    moat_server::export::export_to_file(&backend.store, &study, &raw, &votes_path)
        .await
        .unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&votes_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10);
    for row in &rows {
        let kind = row["assignment_kind"].as_str().unwrap();
        let prompt = row["prompt_id"].as_str().unwrap();
        let expected = match prompt {
            "check0" => "attention",
            p if p.starts_with("check") => "gold",
            _ => "regular",
        };
        assert_eq!(kind, expected, "{row}");
    }
    assert_eq!(backend.store.study_checks(study.id).await.unwrap(), (4, 2));
    // The dataset card says how the checks went and what was left out.
    let out = dir.path().join("card").join("trl.jsonl");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let out_arg = out.to_str().unwrap();
    let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from([
        "moat", "export", "--study", "checks", "--format", "trl", "--out", out_arg, "--card",
    ])
    .unwrap();
    let moat_server::cli::Command::Export(args) = cli.command else {
        panic!("parsed as export")
    };
    moat_server::export_cli::run(&backend.store, args)
        .await
        .unwrap();
    let card = std::fs::read_to_string(dir.path().join("card").join("README.md")).unwrap();
    for line in [
        "- Raters: 1 (1 excluded from this export)",
        "- Quality checks (attention and gold items): 40.0% of assignments, 2 failed",
        "4 votes on quality checks (attention and gold items) score raters, not models, and are left out.",
    ] {
        assert!(card.contains(line), "{line:?} missing from the card:\n{card}");
    }

    // A researcher who includes an auto-excluded rater again is overruled only by a new failure.
    let token = backend
        .consent("checks", Some("forgiven"), None)
        .await
        .unwrap();
    let mut checks = 0;
    while let RaterView::Compare(c) = backend.rater_view("checks", &token).await.unwrap() {
        let expected_left = c.left_html.contains("PICK ME");
        let is_check = c.turns[0].html.contains("PICK ME");
        // The first check is failed, the second passed; regular items get "left".
        let choice = if !is_check || expected_left == (checks == 1) {
            "left"
        } else {
            "right"
        };
        checks += u32::from(is_check);
        backend
            .vote("checks", &token, vote(&c.assignment, choice))
            .await
            .unwrap();
        if is_check && checks == 1 {
            let report = backend.study_report("checks").await.unwrap();
            let forgiven = report
                .raters
                .iter()
                .find(|r| r.checks_failed == 1 && r.status == "excluded")
                .expect("excluded after one failed check")
                .pseudonym
                .clone();
            backend
                .set_rater_status("checks", &forgiven, "active")
                .await
                .unwrap();
        }
    }
    assert_eq!(checks, 2);
    let report = backend.study_report("checks").await.unwrap();
    let forgiven = report
        .raters
        .iter()
        .find(|r| r.checks_passed == 1 && r.checks_failed == 1)
        .expect("one check passed, one failed");
    assert_eq!(forgiven.status, "active");

    // Without a check rate, check items are never shown and do not count toward the session.
    let token = backend.consent("no-checks", None, None).await.unwrap();
    let mut shown = 0;
    while let RaterView::Compare(c) = backend.rater_view("no-checks", &token).await.unwrap() {
        assert!(!c.turns[0].html.contains("PICK ME"));
        assert_eq!(c.total, 4);
        backend
            .vote("no-checks", &token, vote(&c.assignment, "tie"))
            .await
            .unwrap();
        shown += 1;
    }
    assert_eq!(shown, 4);
    backend.store.close().await;
}
on_both_backends!(quality_checks_score_raters);

/// Two requests of one rater racing for the same prompt: the second assignment is refused by the
/// unique index without failing its transaction, and the prompt and pair counts move once.
async fn a_prompt_is_assigned_to_a_rater_once(url: &str) {
    let backend = backend_with_study(url, "race", 2, 5).await;
    let token = backend.consent("race", None, None).await.unwrap();
    let study = backend.store.study("race").await.unwrap();
    let rater = backend
        .store
        .rater_by_token(study.id, &token)
        .await
        .unwrap()
        .unwrap();
    let candidates = backend
        .store
        .candidate_prompts(study.id, rater.id, 16, false)
        .await
        .unwrap();
    let first = &candidates[0];
    let new = moat_server::store::NewAssignment {
        rater_id: rater.id,
        study_id: study.id,
        prompt_id: first.prompt_id,
        left_response: first.responses[0],
        right_response: first.responses[1],
        check: None,
        max_for_rater: 5,
        expires_ms: None,
        pair_shards: 1,
    };
    let (a, b) = tokio::join!(
        backend.store.insert_assignment(&new),
        backend.store.insert_assignment(&new)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "exactly one wins: {a:?} {b:?}");
    // And again, after both committed.
    assert_eq!(backend.store.insert_assignment(&new).await.unwrap(), None);
    let after = backend
        .store
        .candidate_prompts(study.id, rater.id, 16, false)
        .await
        .unwrap();
    assert!(after.iter().all(|c| c.prompt_id != first.prompt_id));
    let pairs = backend.store.pair_counts(study.id).await.unwrap();
    assert_eq!(pairs.values().sum::<i64>(), 1, "{pairs:?}");
    // The rater's page shows the one assignment; a vote on it is recorded.
    let RaterView::Compare(shown) = backend.rater_view("race", &token).await.unwrap() else {
        panic!()
    };
    backend
        .vote("race", &token, vote(&shown.assignment, "left"))
        .await
        .unwrap();
    backend.store.close().await;
}
on_both_backends!(a_prompt_is_assigned_to_a_rater_once);

/// A vote and the rater's next comparison commit in one transaction, and the next comparison is
/// written under the same rules as one issued on its own: only after a vote that is recorded (not a
/// repeat, not refused), once when two requests race, never past the session's number.
async fn a_vote_and_the_next_comparison_commit_together(url: &str) {
    use moat_server::domain::AssignmentId;
    use moat_server::store::{NewAssignment, StoreError, VoteOutcome, VoteToRecord};
    let backend = backend_with_study(url, "together", 5, 3).await;
    let store = &backend.store;
    let token = backend.consent("together", None, None).await.unwrap();
    let other_token = backend.consent("together", None, None).await.unwrap();
    let study = store.study("together").await.unwrap();
    let rater = store
        .rater_by_token(study.id, &token)
        .await
        .unwrap()
        .unwrap();
    let other = store
        .rater_by_token(study.id, &other_token)
        .await
        .unwrap()
        .unwrap();
    let RaterView::Compare(first) = backend.rater_view("together", &token).await.unwrap() else {
        panic!("a comparison")
    };
    let (study_id, rater_id) = (study.id, rater.id);
    let next_of = |max_for_rater: u32| {
        let store = store.clone();
        async move {
            let candidates = store
                .candidate_prompts(study_id, rater_id, 16, false)
                .await
                .unwrap();
            let c = &candidates[0];
            NewAssignment {
                rater_id,
                study_id,
                prompt_id: c.prompt_id,
                left_response: c.responses[0],
                right_response: c.responses[1],
                check: None,
                max_for_rater,
                expires_ms: None,
                pair_shards: 1,
            }
        }
    };
    let vote_on = |assignment: &str, rater_id: i64, choice: moat_exports::Choice| VoteToRecord {
        assignment: AssignmentId::parse(assignment).unwrap(),
        rater_id,
        choice,
        source_guess: None,
        source_confidence: None,
        rationale: None,
        reveal: false,
    };
    let issued = |rater_id: i64| {
        let store = store.clone();
        async move {
            store
                .assignment_in_state(rater_id, "issued")
                .await
                .unwrap()
                .map(|shown| shown.public_id.as_str().to_string())
        }
    };
    let pairs_shown = || async {
        store
            .pair_counts(study.id)
            .await
            .unwrap()
            .values()
            .sum::<i64>()
    };
    assert_eq!(pairs_shown().await, 1);

    // Another rater's vote on this comparison is refused, and its next comparison is not written.
    let stranger = NewAssignment {
        rater_id: other.id,
        ..next_of(3).await
    };
    let refused = store
        .record_vote_then_assign(
            &vote_on(&first.assignment, other.id, moat_exports::Choice::Left),
            &stranger,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    assert_eq!(issued(other.id).await, None);

    // Two requests of the rater race with the same vote and the same next comparison: one records
    // the vote and issues the comparison, the other is told the vote is in and issues nothing.
    let next = next_of(3).await;
    let first_vote = vote_on(&first.assignment, rater.id, moat_exports::Choice::Left);
    let (a, b) = tokio::join!(
        store.record_vote_then_assign(&first_vote, &next),
        store.record_vote_then_assign(&first_vote, &next)
    );
    let mut answers = [a.unwrap(), b.unwrap()];
    answers.sort_by_key(|(outcome, _)| matches!(outcome, VoteOutcome::AlreadyRecorded { .. }));
    let [(won, second), (lost, none)] = answers;
    assert!(
        matches!(
            won,
            VoteOutcome::Recorded {
                check_passed: None,
                ..
            }
        ),
        "{won:?}"
    );
    assert!(
        matches!(lost, VoteOutcome::AlreadyRecorded { .. }),
        "{lost:?}"
    );
    let second = second.expect("the recorded vote issues the next comparison");
    assert_eq!(none, None);
    assert_eq!(issued(rater.id).await.as_deref(), Some(second.as_str()));
    assert_eq!(pairs_shown().await, 2, "one more comparison shown, not two");

    // A repeat of that vote later, with another next comparison, changes nothing; a changed choice
    // is a conflict and writes nothing either.
    let again = store
        .record_vote_then_assign(&first_vote, &next_of(3).await)
        .await
        .unwrap();
    assert!(
        matches!(again, (VoteOutcome::AlreadyRecorded { .. }, None)),
        "{again:?}"
    );
    let changed = store
        .record_vote_then_assign(
            &vote_on(&first.assignment, rater.id, moat_exports::Choice::Right),
            &next_of(3).await,
        )
        .await;
    assert!(
        matches!(changed, Err(StoreError::Conflict(_))),
        "{changed:?}"
    );
    assert_eq!(issued(rater.id).await.as_deref(), Some(second.as_str()));

    // At the session's number (here two) the vote is recorded and no comparison is issued.
    let (outcome, none) = store
        .record_vote_then_assign(
            &vote_on(second.as_str(), rater.id, moat_exports::Choice::Tie),
            &next_of(2).await,
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, VoteOutcome::Recorded { .. }),
        "{outcome:?}"
    );
    assert_eq!(none, None);
    assert_eq!(issued(rater.id).await, None);
    let voted = store.voted_assignment_ids(study.id).await.unwrap();
    assert_eq!(voted.len(), 2, "{voted:?}");
    assert_eq!(pairs_shown().await, 2);

    // Through the service: the vote's answer is the comparison its transaction issued, the one the
    // rater's page then shows, at the next position.
    let RaterView::Compare(third) = backend.rater_view("together", &token).await.unwrap() else {
        panic!("a third comparison (the session has three)")
    };
    let fresh = backend.consent("together", None, None).await.unwrap();
    let RaterView::Compare(one) = backend.rater_view("together", &fresh).await.unwrap() else {
        panic!()
    };
    let RaterView::Compare(two) = backend
        .vote("together", &fresh, vote(&one.assignment, "left"))
        .await
        .unwrap()
    else {
        panic!("the vote answers with the next comparison")
    };
    assert_eq!(two.position, 2);
    let RaterView::Compare(shown) = backend.rater_view("together", &fresh).await.unwrap() else {
        panic!()
    };
    assert_eq!(shown.assignment, two.assignment);
    assert_ne!(third.assignment, two.assignment);
    store.close().await;
}
on_both_backends!(a_vote_and_the_next_comparison_commit_together);

/// A pool on the database at `url` with the migrations before `version` applied, as a database made
/// by an earlier Moat.
async fn database_before(url: &str, version: i64) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let mut before = if url.starts_with("sqlite") {
        sqlx::migrate!("../migrations/sqlite")
    } else {
        sqlx::migrate!("../migrations/postgres")
    };
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect(),
    );
    // Store::connect creates a missing SQLite file; a plain pool does so only when asked.
    let create = if url.starts_with("sqlite") {
        "?mode=rwc"
    } else {
        ""
    };
    let pool = sqlx::AnyPool::connect(&format!("{url}{create}"))
        .await
        .unwrap();
    before.run(&pool).await.unwrap();
    pool
}

/// A database made before the pair counts were sharded, holding counts, upgrades when Moat starts on
/// it: every count reads back the same (SQLite copies the table, PostgreSQL changes its key).
async fn pair_counts_survive_the_upgrade_to_shards(url: &str) {
    let pool = database_before(url, 20261130200001).await;
    sqlx::query("INSERT INTO studies (slug, title, created_ms) VALUES ('old', 'Old', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let study_id: i64 = sqlx::Row::get(
        &sqlx::query("SELECT id FROM studies WHERE slug = 'old'")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
    );
    sqlx::query(
        "INSERT INTO pair_counts (study_id, model_low, model_high, shown) \
         VALUES ($1, 1, 2, 5), ($1, 1, 3, 7)",
    )
    .bind(study_id)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let store = Store::connect(url).await.expect("the upgrade runs");
    let counts = store.pair_counts(study_id).await.unwrap();
    assert_eq!(
        counts,
        std::collections::HashMap::from([((1, 2), 5), ((1, 3), 7)])
    );
    store.close().await;
}
on_both_backends!(pair_counts_survive_the_upgrade_to_shards);

/// The plan of the next-prompts read for rater 1 of the study, from `explain` (the database's
/// EXPLAIN form), one line per row from the text in `column`.
async fn next_prompts_plan(
    conn: &mut sqlx::AnyConnection,
    explain: &str,
    column: usize,
    study_id: i64,
) -> String {
    let sql = format!("{explain} {}", moat_server::store::NEXT_REGULAR_PROMPTS_SQL);
    let lines = sqlx::query(&sql)
        .bind(study_id)
        .bind(1_i64)
        .bind(16_i64)
        .bind(0_i64)
        .fetch_all(conn)
        .await
        .unwrap();
    lines
        .iter()
        .map(|line| sqlx::Row::get::<String, _>(line, column))
        .collect::<Vec<_>>()
        .join("\n")
}

/// On PostgreSQL the next prompts are read off an index in (times assigned, id) order and the read
/// stops after the first few, right after an import (no statistics yet) as later: `check_kind IS
/// NULL` does not fix an index column there, so an index that leads with `check_kind` read and sorted
/// every prompt of the study on each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_the_next_prompts_in_index_order() {
    let db = crate::support::TestDb::postgres().await;
    let backend = backend_with_study(db.url(), "plan", 300, 10).await;
    let study = backend.store.study("plan").await.unwrap();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let mut plans = Vec::new();
    for analyze in [false, true] {
        if analyze {
            sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
        }
        plans.push(next_prompts_plan(&mut conn, "EXPLAIN", 0, study.id).await);
    }
    for plan in plans {
        assert!(plan.contains("prompts_next_regular"), "{plan}");
        assert!(!plan.contains("Seq Scan on prompts"), "{plan}");
    }
    drop(conn);
    backend.store.close().await;
    db.cleanup().await;
}

/// On SQLite the rater's open comparison is read with one compiled statement, rater after rater:
/// a bare parameter compared with `state` made SQLite test it against the partial index
/// `assignments_expiry` and recompile the statement at every new binding. Its plan still reads the
/// partial index of open rows, `assignments_open (rater_id, state, id)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_the_open_comparison_without_recompiling() {
    let db = crate::support::TestDb::sqlite();
    let backend = backend_with_study(db.url(), "stmt", 20, 10).await;
    let path = db.url().trim_start_matches("sqlite://").to_string();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let sql = moat_server::store::ASSIGNMENT_IN_STATE_SQL;
    let mut stmt = conn.prepare(sql).unwrap();
    for rater in 1..=5_i64 {
        let rater_at = stmt.parameter_index("$1").unwrap().unwrap();
        let state_at = stmt.parameter_index("$2").unwrap().unwrap();
        stmt.raw_bind_parameter(rater_at, rater).unwrap();
        stmt.raw_bind_parameter(state_at, "issued").unwrap();
        let mut rows = stmt.raw_query();
        while rows.next().unwrap().is_some() {}
    }
    assert_eq!(
        stmt.get_status(rusqlite::StatementStatus::RePrepare),
        0,
        "the statement was compiled again for new bindings"
    );
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map([1_i64, 0], |row| row.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("SEARCH a USING INDEX assignments_open (rater_id=? AND state=?)"),
        "{plan}"
    );
    // A new comparison's "one open comparison at a time" check reads the same small index.
    let insert_plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            moat_server::store::INSERT_ASSIGNMENT
        ))
        .unwrap()
        .query_map(
            rusqlite::params!["x", 1, 1, 1, 2, 1, 2, "regular", 0, 10, None::<i64>],
            |row| row.get::<_, String>(3),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let insert_plan = insert_plan.join("\n");
    assert!(
        insert_plan.contains("USING COVERING INDEX assignments_open (rater_id=? AND state=?)"),
        "{insert_plan}"
    );
    backend.store.close().await;
}

/// `moat study create | status | list | show`: settings from flags, the same checks as the API.
async fn studies_from_the_command_line(url: &str) {
    use moat_server::study_cli::{run, StudyCommand};
    let store = Store::connect(url).await.unwrap();
    let backend = AppService::new(store, String::new());
    let dir = tempfile::tempdir().unwrap();
    let instructions = dir.path().join("instructions.md");
    std::fs::write(&instructions, "Pick the **better** answer.").unwrap();
    let parse = |args: &[&str]| -> StudyCommand {
        let words = ["moat", "study"].iter().chain(args).copied();
        let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from(words).unwrap();
        let moat_server::cli::Command::Study(command) = cli.command else {
            panic!("parsed as study")
        };
        command
    };
    let created = run(
        &backend,
        parse(&[
            "create",
            "cli-study",
            "--title",
            "From the CLI",
            "--instructions",
            instructions.to_str().unwrap(),
            "--items-per-rater",
            "4",
            "--check-rate",
            "0.25",
            "--max-failed-checks",
            "1",
            "--ask-source",
        ]),
    )
    .await
    .unwrap();
    assert!(created.contains("created as draft"), "{created}");
    let study = backend.store.study("cli-study").await.unwrap();
    assert_eq!(
        study.settings,
        StudySettings {
            items_per_rater: 4,
            check_rate: 0.25,
            max_failed_checks: Some(1),
            ask_source: true,
            ..Default::default()
        }
    );
    assert_eq!(study.instructions, "Pick the **better** answer.");

    run(&backend, parse(&["status", "cli-study", "open"]))
        .await
        .unwrap();
    assert_eq!(
        backend.store.study("cli-study").await.unwrap().status,
        moat_server::domain::StudyStatus::Open
    );
    let bad_status = run(&backend, parse(&["status", "cli-study", "paused"]))
        .await
        .unwrap_err();
    assert!(
        bad_status.to_string().contains("draft, open or closed"),
        "{bad_status}"
    );
    let bad_rate = run(
        &backend,
        parse(&["create", "cli-two", "--title", "X", "--check-rate", "2"]),
    )
    .await
    .unwrap_err();
    assert!(bad_rate.to_string().contains("check_rate"), "{bad_rate}");
    assert!(
        backend.store.study("cli-two").await.is_err(),
        "nothing created"
    );
    assert!(
        run(
            &backend,
            parse(&["create", "cli-study", "--title", "Again"])
        )
        .await
        .is_err(),
        "a slug is taken once"
    );

    // Changes: what is given changes, the rest stays; a bad value changes nothing.
    run(
        &backend,
        parse(&[
            "update",
            "cli-study",
            "--title",
            "Renamed",
            "--check-rate",
            "0.5",
            "--ask-source",
            "false",
            "--completion-code",
            "DONE-1",
            "--end-excluded-sessions",
            "--screen-out-code",
            "SO-1",
        ]),
    )
    .await
    .unwrap();
    let updated = backend.store.study("cli-study").await.unwrap();
    assert_eq!(updated.title, "Renamed");
    assert_eq!(updated.instructions, "Pick the **better** answer.");
    assert_eq!(
        updated.settings,
        StudySettings {
            items_per_rater: 4,
            check_rate: 0.5,
            max_failed_checks: Some(1),
            completion_code: Some("DONE-1".into()),
            end_excluded_sessions: true,
            screen_out_code: Some("SO-1".into()),
            ..Default::default()
        }
    );
    let refused = run(
        &backend,
        parse(&["update", "cli-study", "--items-per-rater", "0"]),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("items_per_rater"), "{refused}");
    assert_eq!(
        backend.store.study("cli-study").await.unwrap().settings,
        updated.settings
    );
    run(
        &backend,
        parse(&["update", "cli-study", "--title", "From the CLI"]),
    )
    .await
    .unwrap();

    let list = run(&backend, parse(&["list"])).await.unwrap();
    let line = list
        .lines()
        .find(|l| l.starts_with("cli-study"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("open") && line.ends_with("From the CLI"),
        "{line}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&run(&backend, parse(&["show", "cli-study"])).await.unwrap()).unwrap();
    assert_eq!(shown["settings"]["check_rate"], 0.5);
    assert_eq!(shown["summary"]["status"], "open");
    backend.store.close().await;
}
on_both_backends!(studies_from_the_command_line);

/// With `end_excluded_sessions`, a rater excluded after a failed check (or by the researcher) gets the
/// screen-out page with its code next, instead of more comparisons; others finish as usual.
async fn excluded_raters_are_screened_out(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let backend = AppService::new(store, String::new());
    let settings = StudySettings {
        items_per_rater: 6,
        check_rate: 0.5,
        max_failed_checks: Some(0),
        completion_code: Some("DONE".into()),
        end_excluded_sessions: true,
        screen_out_code: Some("SCREENED".into()),
        ..Default::default()
    };
    backend
        .create_study(NewStudy {
            slug: "screen".into(),
            title: "Screen-out".into(),
            instructions: String::new(),
            settings,
        })
        .await
        .unwrap();
    import_jsonl(
        &backend.store,
        &StudySlug::parse("screen").unwrap(),
        sample_with_checks(4).as_bytes(),
        &[],
    )
    .await
    .unwrap();
    backend.set_study_status("screen", "open").await.unwrap();

    // Votes "left" on everything until the session ends; returns (votes, the last page).
    let session = |token: String, fail_checks: bool| {
        let backend = backend.clone();
        async move {
            let mut votes = 0;
            loop {
                match backend.rater_view("screen", &token).await.unwrap() {
                    RaterView::Compare(c) => {
                        let check = c.turns[0].html.contains("PICK ME");
                        let expected_left = c.left_html.contains("PICK ME");
                        let choice = if check && (expected_left == fail_checks) {
                            "right"
                        } else {
                            "left"
                        };
                        backend
                            .vote("screen", &token, vote(&c.assignment, choice))
                            .await
                            .unwrap();
                        votes += 1;
                    }
                    RaterView::Done(done) => return (votes, done),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    };
    let careless = backend.consent("screen", None, None).await.unwrap();
    let (votes, done) = session(careless, true).await;
    assert!(done.screened_out, "{done:?}");
    assert_eq!(done.code.as_deref(), Some("SCREENED"));
    assert!(
        votes < 6,
        "the session ended at the failed check: {votes} votes"
    );
    assert_eq!(done.votes, votes);

    let careful = backend.consent("screen", None, None).await.unwrap();
    let (votes, done) = session(careful.clone(), false).await;
    assert_eq!((votes, done.screened_out), (6, false));
    // The session's own code, with the study's as prefix.
    assert!(
        done.code.as_deref().is_some_and(|c| c.starts_with("DONE-")),
        "{:?}",
        done.code
    );
    // Excluded by the researcher afterwards: the screen-out page from then on.
    let report = backend.study_report("screen").await.unwrap();
    let active = report
        .raters
        .iter()
        .find(|r| r.status == "active")
        .unwrap()
        .pseudonym
        .clone();
    backend
        .set_rater_status("screen", &active, "excluded")
        .await
        .unwrap();
    let RaterView::Done(done) = backend.rater_view("screen", &careful).await.unwrap() else {
        panic!()
    };
    assert!(done.screened_out);
    backend.store.close().await;
}
on_both_backends!(excluded_raters_are_screened_out);

/// On a SQLite file the rater path reads through per-thread rusqlite connections and writes through
/// a rusqlite writer thread. A database deleted and created again at the same path (a restored
/// backup, a test's fresh file) must be read afresh, not through a connection still open on the old
/// file; and what the native path recorded is what a new process reads through the pool.
#[tokio::test]
async fn native_sqlite_path_reads_the_file_of_its_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("moat.db").display());
    let backend = backend_with_study(&url, "native", 3, 10).await;
    let token = backend.consent("native", None, None).await.unwrap();
    let RaterView::Compare(first) = backend.rater_view("native", &token).await.unwrap() else {
        panic!("expected a comparison");
    };
    backend
        .vote("native", &token, vote(&first.assignment, "left"))
        .await
        .unwrap();
    let RaterView::Compare(second) = backend.rater_view("native", &token).await.unwrap() else {
        panic!("expected a second comparison");
    };
    assert_ne!(first.assignment, second.assignment);
    let rater = backend
        .store
        .rater_by_token(backend.store.study("native").await.unwrap().id, &token)
        .await
        .unwrap()
        .expect("the rater is found");
    assert_eq!(rater.votes, 1);
    backend.store.close().await;
    drop(backend);

    // Read by a fresh store of the same file: the vote and the open assignment are there.
    let again = Store::connect(&url).await.unwrap();
    let study = again.study("native").await.unwrap();
    let rater = again
        .rater_by_token(study.id, &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rater.votes, 1);
    let open = again.assignment_in_state(rater.id, "issued").await.unwrap();
    assert_eq!(
        open.map(|a| a.public_id.into_string()),
        Some(second.assignment.clone())
    );
    again.close().await;
    drop(again);

    // The file replaced by a new database at the same path: the old rater is not found there.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("moat.db{suffix}")));
    }
    let fresh = backend_with_study(&url, "native", 3, 10).await;
    let study = fresh.store.study("native").await.unwrap();
    assert!(fresh
        .store
        .rater_by_token(study.id, &token)
        .await
        .unwrap()
        .is_none());
    let newcomer = fresh.consent("native", None, None).await.unwrap();
    let RaterView::Compare(shown) = fresh.rater_view("native", &newcomer).await.unwrap() else {
        panic!("expected a comparison in the new database");
    };
    assert_eq!(shown.position, 1);
}

/// Active sampling in a running study: after enough votes a reward model is trained in the
/// background, the study report shows its held-out accuracy, and the assigner then puts the pair the
/// model cannot tell apart first. Model A writes long, careful answers and always wins; B and C write
/// the same kind of short reply and split their meetings, so once the model has learnt A, the B–C
/// pair is the uncertain one (uniform balancing would show it a third of the time).
async fn active_sampling_prefers_the_uncertain_pair(url: &str) {
    let models = ["careful-a", "terse-b", "terse-c"];
    let mut lines = vec![
        serde_json::json!({ "models": models.iter().map(|m| serde_json::json!({
        "name": m, "provider": "Test", "openness": "open"
    })).collect::<Vec<_>>() })
        .to_string(),
    ];
    for i in 0..60 {
        lines.push(
            serde_json::json!({ "id": format!("q{i}"), "prompt": format!("How do I do task {i}?"),
                "responses": {
                    "careful-a": format!("Here is a careful, detailed and helpful walk through task {i}, step by step, with the reasons for each step."),
                    "terse-b": format!("no idea {i}"),
                    "terse-c": format!("dunno {i}"),
                } })
            .to_string(),
        );
    }
    let server = crate::support::spawn_server(url, std::path::Path::new("/nonexistent-site")).await;
    let backend = server.backend.clone();
    backend
        .create_study(NewStudy {
            slug: "active".into(),
            title: "Active".into(),
            instructions: String::new(),
            settings: StudySettings {
                items_per_rater: 60,
                active_sampling: "uncertainty".into(),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    import_jsonl(
        &backend.store,
        &StudySlug::parse("active").unwrap(),
        (lines.join("\n") + "\n").as_bytes(),
        &[],
    )
    .await
    .unwrap();
    backend.set_study_status("active", "open").await.unwrap();
    let study = backend.store.study("active").await.unwrap();
    let token = backend.consent("active", None, None).await.unwrap();
    let is_careful = |html: &str| html.contains("careful, detailed");
    // Votes as a careful rater casts them: A whenever it is shown, else the left one.
    let mut terse_pairs_after_training = 0;
    let mut shown_after_training = 0;
    for round in 0..50 {
        if round == 30 {
            // 30 votes in: the training started at vote 21 (a first try at vote 1 found too few).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while backend.active.status(study.id).is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no reward model after 60 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let report = backend.study_report("active").await.unwrap();
            let model = report.reward_model.expect("the report shows the model");
            assert!(model.train_pairs + model.eval_pairs >= 20, "{model:?}");
            assert_eq!(model.responses_scored, 180);
            assert!(model.eval_pairs > 0, "{model:?}");
            assert!(model
                .eval_accuracy
                .is_some_and(|a| (0.0..=1.0).contains(&a)));
            // The study page's curve: one point per training so far, the last one this model's.
            let last = model.history.last().expect("a point per training");
            assert_eq!(Some(last.accuracy), model.eval_accuracy);
            assert_eq!(last.votes, model.train_pairs + model.eval_pairs);
            assert!(last.low <= last.accuracy && last.accuracy <= last.high);
            // The study page shows the model's accuracy and its curve (drawn on the server).
            let page = server.owner_page("/admin/studies/active").await;
            assert!(page.contains("id=\"accuracy-chart\""), "no accuracy chart");
            assert!(
                page.contains("held out (other prompts): accuracy on them"),
                "no accuracy line"
            );
            // The tallies the disagreement policy reads: each of the 30 votes chose a side, each on
            // a pair of its own prompt.
            let tallies = backend.store.response_pair_votes(study.id).await.unwrap();
            assert_eq!(tallies.len(), 30);
            assert_eq!(
                tallies.values().map(|&(low, high)| low + high).sum::<u32>(),
                30
            );
        }
        let RaterView::Compare(shown) = backend.rater_view("active", &token).await.unwrap() else {
            panic!("round {round}: expected a comparison");
        };
        let (left, right) = (is_careful(&shown.left_html), is_careful(&shown.right_html));
        if round >= 30 {
            shown_after_training += 1;
            terse_pairs_after_training += usize::from(!left && !right);
        }
        let choice = if right && !left { "right" } else { "left" };
        backend
            .vote("active", &token, vote(&shown.assignment, choice))
            .await
            .unwrap();
    }
    assert!(
        terse_pairs_after_training * 10 >= shown_after_training * 8,
        "{terse_pairs_after_training} of {shown_after_training} comparisons after training were the uncertain pair"
    );
}

on_both_backends!(active_sampling_prefers_the_uncertain_pair);

/// (rater id, comparisons, answered ones) of every rater, as `sql` reads them.
async fn rater_counts(url: &str, sql: &str) -> Vec<(i64, i64, i64)> {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
    rows.iter()
        .map(|row| {
            (
                sqlx::Row::get(row, 0),
                sqlx::Row::get(row, 1),
                sqlx::Row::get(row, 2),
            )
        })
        .collect()
}

/// Every rater's counts as the rows say, by `COUNT(*)`.
async fn counted_by_rows(url: &str) -> Vec<(i64, i64, i64)> {
    rater_counts(
        url,
        "SELECT r.id, \
         (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id) AS assigned, \
         (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id AND a.state <> 'issued') AS answered \
         FROM raters r ORDER BY r.id",
    )
    .await
}

/// Every rater's counts as the rater path reads them: the columns the triggers keep.
async fn counted_by_triggers(url: &str) -> Vec<(i64, i64, i64)> {
    rater_counts(url, "SELECT id, assigned, answered FROM raters ORDER BY id").await
}

/// A rater's comparisons and answered ones are counted by triggers, not by reading all their
/// assignments at each request: after votes, a reveal seen, comparisons that expired unvoted, a
/// vote refused at the session's end and imported votes, the counts equal the rows', and the
/// session ends at `items_per_rater` as before.
async fn rater_counts_follow_every_path(url: &str) {
    let settings = StudySettings {
        items_per_rater: 3,
        reveal_after_vote: true,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "counted", 5, settings).await;
    let token = backend.consent("counted", None, None).await.unwrap();
    let other = backend.consent("counted", None, None).await.unwrap();
    let mut voted = 0;
    loop {
        match backend.rater_view("counted", &token).await.unwrap() {
            RaterView::Compare(shown) => {
                backend
                    .vote("counted", &token, vote(&shown.assignment, "left"))
                    .await
                    .unwrap();
                voted += 1;
            }
            RaterView::Reveal(_) => backend
                .continue_after_reveal("counted", &token)
                .await
                .unwrap(),
            RaterView::Done(done) => {
                assert_eq!(done.votes, 3);
                break;
            }
            view => panic!("unexpected {view:?}"),
        }
        assert!(voted <= 3, "the session went past items_per_rater");
    }
    // The other rater's comparison expires unvoted (twice), and a third is voted on.
    for _ in 0..2 {
        let RaterView::Compare(_) = backend.rater_view("counted", &other).await.unwrap() else {
            panic!("expected a comparison")
        };
        let far = moat_server::domain::now_ms() + 10 * 24 * 3_600_000;
        assert_eq!(
            backend.store.expire_assignments(far, None).await.unwrap(),
            1
        );
    }
    let RaterView::Compare(shown) = backend.rater_view("counted", &other).await.unwrap() else {
        panic!("expected a comparison")
    };
    backend
        .vote("counted", &other, vote(&shown.assignment, "right"))
        .await
        .unwrap();
    // Two imported votes of an annotator, written `done` straight away.
    let study = backend.store.study("counted").await.unwrap();
    let candidates = backend
        .store
        .candidate_prompts(study.id, 0, 2, true)
        .await
        .unwrap();
    let mut tx = backend.store.begin_write().await.unwrap();
    let annotator = tx.imported_rater(study.id, "annotator-1").await.unwrap();
    for prompt in &candidates {
        tx.insert_imported_vote(
            annotator,
            prompt.prompt_id,
            prompt.responses[0],
            prompt.responses[1],
            "imported",
            moat_exports::Choice::Left,
            0,
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let by_rows = counted_by_rows(url).await;
    assert_eq!(counted_by_triggers(url).await, by_rows);
    let counts: Vec<(i64, i64)> = by_rows.iter().map(|&(_, a, b)| (a, b)).collect();
    // The first rater: 3 voted; the other: 1 voted (the 2 expired are gone); the annotator: 2.
    assert_eq!(counts, vec![(3, 3), (1, 1), (2, 2)]);
    backend.store.close().await;
}
on_both_backends!(rater_counts_follow_every_path);

/// A database with sessions under way, made before the counts were kept, upgrades with every
/// rater's counts backfilled from the rows.
/// A study, three prompts of two models, three raters and four assignments, as rows of the schema
/// of the time (no rater counts yet).
async fn old_rater_rows(pool: &sqlx::AnyPool) {
    for sql in [
        "INSERT INTO studies (id, slug, title, created_ms) VALUES (1, 'old', 'Old', 0)",
        "INSERT INTO models (id, study_id, name, openness) VALUES (1, 1, 'a', 'open'), (2, 1, 'b', 'open')",
        "INSERT INTO prompts (id, study_id, external_id, conversation) VALUES \
         (1, 1, 'p1', '[]'), (2, 1, 'p2', '[]'), (3, 1, 'p3', '[]')",
        "INSERT INTO responses (id, prompt_id, model_id, content) VALUES \
         (1, 1, 1, 'x'), (2, 1, 2, 'y'), (3, 2, 1, 'x'), (4, 2, 2, 'y'), (5, 3, 1, 'x'), (6, 3, 2, 'y')",
        "INSERT INTO raters (id, study_id, token_hash, pseudonym, created_ms) VALUES \
         (1, 1, 'h1', 'r1', 0), (2, 1, 'h2', 'r2', 0), (3, 1, 'h3', 'r3', 0)",
        "INSERT INTO assignments (public_id, rater_id, prompt_id, left_response_id, right_response_id, \
         model_low, model_high, issued_ms, state) VALUES \
         ('a1', 1, 1, 1, 2, 1, 2, 0, 'done'), ('a2', 1, 2, 3, 4, 1, 2, 0, 'voted'), \
         ('a3', 1, 3, 5, 6, 1, 2, 0, 'issued'), ('a4', 2, 1, 2, 1, 1, 2, 0, 'issued')",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

async fn rater_counts_are_backfilled_on_upgrade(url: &str) {
    let pool = database_before(url, 20261201000001).await;
    old_rater_rows(&pool).await;
    pool.close().await;
    let store = Store::connect(url).await.expect("the upgrade runs");
    store.close().await;
    assert_eq!(
        counted_by_triggers(url).await,
        vec![(1, 3, 2), (2, 1, 0), (3, 0, 0)]
    );
    assert_eq!(counted_by_triggers(url).await, counted_by_rows(url).await);
}
on_both_backends!(rater_counts_are_backfilled_on_upgrade);

/// A database from before one index kept "a rater sees a prompt once" for live rows and let imported
/// rows repeat a (rater, prompt) upgrades with its rows, and the rule holds as before: a live repeat
/// is refused, an imported one is not.
async fn a_prompt_once_per_rater_holds_across_the_upgrade(url: &str) {
    let pool = database_before(url, 20261201000004).await;
    old_rater_rows(&pool).await;
    let imported = "INSERT INTO assignments (public_id, rater_id, prompt_id, left_response_id, \
         right_response_id, model_low, model_high, kind, issued_ms, state) VALUES ";
    sqlx::query(&format!(
        "{imported} ('i1', 3, 1, 1, 2, 1, 2, 'imported', 0, 'done'), ('i2', 3, 1, 2, 1, 1, 2, 'imported', 0, 'done')"
    ))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let store = Store::connect(url).await.expect("the upgrade runs");
    store.close().await;
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let live_repeat = sqlx::query(&format!(
        "{imported} ('l1', 1, 1, 1, 2, 1, 2, 'regular', 0, 'issued')"
    ))
    .execute(&pool)
    .await;
    assert!(
        live_repeat.is_err_and(|e| e.to_string().to_lowercase().contains("unique")),
        "a rater's second live comparison of a prompt is refused"
    );
    sqlx::query(&format!(
        "{imported} ('i3', 3, 1, 1, 2, 1, 2, 'imported', 0, 'done')"
    ))
    .execute(&pool)
    .await
    .expect("imported rows may repeat a prompt");
    let rows: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM assignments")
            .fetch_one(&pool)
            .await
            .unwrap(),
        "n",
    );
    assert_eq!(rows, 4 + 3);
    pool.close().await;
}
on_both_backends!(a_prompt_once_per_rater_holds_across_the_upgrade);

/// On SQLite the candidate prompts' responses are read from an index that holds their model ids,
/// never from the table whose rows carry the response text, and "has the rater seen this prompt?"
/// from the index alone: the unique one on (rater, prompt, …) that every comparison is written into
/// anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_the_next_prompts_from_indexes() {
    let db = crate::support::TestDb::sqlite();
    let backend = backend_with_study(db.url(), "covered", 30, 10).await;
    let study = backend.store.study("covered").await.unwrap();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    // EXPLAIN QUERY PLAN's fourth column is the step's text.
    let plan = next_prompts_plan(&mut conn, "EXPLAIN QUERY PLAN", 3, study.id).await;
    assert!(
        plan.contains("SEARCH r USING COVERING INDEX responses_prompt_model"),
        "{plan}"
    );
    assert!(
        plan.contains("USING COVERING INDEX assignments_rater_prompt (rater_id=? AND prompt_id=?)"),
        "{plan}"
    );
    drop(conn);
    backend.store.close().await;
    db.cleanup().await;
}
