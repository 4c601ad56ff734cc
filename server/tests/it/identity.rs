//! Identity leaks (issue 10): a response that names its maker is flagged at import, kept from raters
//! unless the study shows flagged items, listed for the researcher, and counted (and by default left
//! out) in the leaderboard and the dataset card. Both backends.

use moat_app::backend::Backend;
use moat_app::wire::{FlaggedResponse, NewStudy, RaterView, StudySettings, VoteInput};
use moat_server::domain::StudySlug;
use moat_server::import::import_jsonl;
use moat_server::service::AppService;
use moat_server::store::{GeneratedResponse, Store};

use crate::on_both_backends;

/// The sentence a rater of a real study was shown before voting.
const LEAK: &str = "I am an ordinary AI assistant created by Anthropic.";

/// Three prompts of two models; the second prompt's answer of `model-one` names its maker.
fn fixture() -> String {
    [
        r#"{"models":[{"name":"model-one","provider":"Acme","openness":"closed"},{"name":"model-two","provider":"Bolt","openness":"open"}]}"#.to_string(),
        serde_json::json!({"id": "p-clean-1", "prompt": "Question alpha?", "responses": {"model-one": "Alpha one.", "model-two": "Alpha two."}}).to_string(),
        serde_json::json!({"id": "p-leak", "prompt": "Question leak?", "responses": {"model-one": format!("Hello! {LEAK} How can I help?"), "model-two": "Leak two."}}).to_string(),
        serde_json::json!({"id": "p-clean-2", "prompt": "Question gamma?", "responses": {"model-one": "Gamma one.", "model-two": "Gamma two."}}).to_string(),
    ]
    .join("\n")
        + "\n"
}

/// Consents a new rater and votes `left` on every comparison until the session ends; returns the
/// rendered prompts the rater was shown.
async fn rate_everything(backend: &AppService, slug: &str, participant: &str) -> Vec<String> {
    let token = backend
        .consent(slug, Some(participant), None)
        .await
        .unwrap();
    let mut prompts = Vec::new();
    loop {
        match backend.rater_view(slug, &token).await.unwrap() {
            RaterView::Compare(comparison) => {
                prompts.push(comparison.turns[0].html.clone());
                backend
                    .vote(
                        slug,
                        &token,
                        VoteInput {
                            assignment: comparison.assignment,
                            choice: "left".into(),
                            source_guess: None,
                            source_confidence: None,
                            rationale: None,
                        },
                    )
                    .await
                    .unwrap();
            }
            RaterView::Done(_) => return prompts,
            other => panic!("unexpected page {other:?}"),
        }
    }
}

async fn identity_leaks_are_flagged_hidden_listed_and_counted(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let backend = AppService::new(store, String::new());
    backend
        .create_study(NewStudy {
            slug: "leaks".into(),
            title: "Leaks".into(),
            instructions: String::new(),
            settings: StudySettings::default(),
        })
        .await
        .unwrap();
    let report = import_jsonl(
        &backend.store,
        &StudySlug::parse("leaks").unwrap(),
        fixture().as_bytes(),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(report.responses_imported, 6);
    assert_eq!(report.responses_flagged, 1);
    assert!(
        report.to_string().ends_with(
            "; 1 response names a model or its maker and is flagged (see the study page)"
        ),
        "{report}"
    );
    backend.set_study_status("leaks", "open").await.unwrap();

    // Listed for the researcher (the admin page and `moat study show` read this report).
    let study_report = backend.study_report("leaks").await.unwrap();
    assert_eq!(
        study_report.flagged,
        [FlaggedResponse {
            prompt: "p-leak".into(),
            model: "model-one".into(),
            words: "I am an ordinary AI assistant created by, Anthropic".into(),
        }]
    );
    assert_eq!(study_report.flagged_total, 1);

    // Not shown to raters by default: the session holds the two clean prompts only.
    let shown = rate_everything(&backend, "leaks", "rater-default").await;
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown.iter().all(|html| !html.contains("leak")), "{shown:?}");

    // Shown once the study says so (through `moat study update --show-flagged`).
    let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from([
        "moat",
        "study",
        "update",
        "leaks",
        "--show-flagged",
    ])
    .unwrap();
    let moat_server::cli::Command::Study(command) = cli.command else {
        panic!("parsed as study")
    };
    moat_server::study_cli::run(&backend, command)
        .await
        .unwrap();
    assert!(
        backend
            .store
            .study("leaks")
            .await
            .unwrap()
            .settings
            .show_flagged
    );
    // The study row and the count of comparable prompts are cached for a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let shown = rate_everything(&backend, "leaks", "rater-flagged").await;
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert!(
        shown.iter().any(|html| html.contains("Question leak?")),
        "{shown:?}"
    );
    let show_json = moat_server::study_cli::run(
        &backend,
        moat_server::study_cli::StudyCommand::Show {
            slug: "leaks".into(),
        },
    )
    .await
    .unwrap();
    let show: serde_json::Value = serde_json::from_str(&show_json).unwrap();
    assert_eq!(show["flagged"][0]["prompt"], "p-leak");
    assert_eq!(show["settings"]["show_flagged"], true);

    // The leaderboard counts the vote on the flagged comparison and leaves it out by default.
    let options = moat_stats::LeaderboardOptions {
        bootstrap_rounds: 20,
        ..Default::default()
    };
    let (_, without) = backend
        .analysis("leaks", options.clone(), false, false)
        .await
        .unwrap();
    assert_eq!(without.flagged_votes, 1);
    assert!(without.flagged_votes_left_out);
    assert_eq!(without.leaderboard.n_battles, 4);
    let (_, with) = backend
        .analysis("leaks", options, true, false)
        .await
        .unwrap();
    assert_eq!(with.flagged_votes, 1);
    assert!(!with.flagged_votes_left_out);
    assert_eq!(with.leaderboard.n_battles, 5);
    let page = backend.leaderboard("leaks", false).await.unwrap();
    assert_eq!(page.votes, 4);
    let section = page
        .sections
        .iter()
        .find(|s| s.title == "Identity flags")
        .expect("the page says what it leaves out");
    assert!(
        section
            .text
            .starts_with("Not counted: 1 vote on comparisons"),
        "{}",
        section.text
    );

    // The dataset card says how many exported votes were on flagged comparisons.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("votes.jsonl");
    let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from([
        "moat",
        "export",
        "--study",
        "leaks",
        "--format",
        "votes",
        "--out",
        out.to_str().unwrap(),
        "--card",
    ])
    .unwrap();
    let moat_server::cli::Command::Export(args) = cli.command else {
        panic!("parsed as export")
    };
    moat_server::export_cli::run(&backend.store, args)
        .await
        .unwrap();
    let card = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(
        card.contains("- 1 vote is on a comparison where a response names a model or its maker"),
        "{card}"
    );
    assert!(card.contains("it is in this export"), "{card}");
    let rows = |path: &std::path::Path| std::fs::read_to_string(path).unwrap().lines().count();
    assert_eq!(rows(&out), 5);

    // `--exclude-flagged` leaves it out of the export, and the card says so.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("votes.jsonl");
    let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from([
        "moat",
        "export",
        "--study",
        "leaks",
        "--format",
        "votes",
        "--out",
        out.to_str().unwrap(),
        "--card",
        "--exclude-flagged",
    ])
    .unwrap();
    let moat_server::cli::Command::Export(args) = cli.command else {
        panic!("parsed as export")
    };
    moat_server::export_cli::run(&backend.store, args)
        .await
        .unwrap();
    assert_eq!(rows(&out), 4);
    let card = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(
        card.contains("it is left out of this export (--exclude-flagged)"),
        "{card}"
    );
}
on_both_backends!(identity_leaks_are_flagged_hidden_listed_and_counted);

/// `moat generate` writes its responses through the store, which flags them as an import does; a
/// rescan (`moat study scan-identity`) flags what names a model added later.
async fn generated_responses_are_flagged(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let slug = StudySlug::parse("generated").unwrap();
    import_jsonl(&store, &slug, fixture().as_bytes(), &[])
        .await
        .unwrap();
    // Names a model the study does not have yet: not a flag at import.
    let mention = serde_json::json!({"id": "p-mention", "prompt": "Question delta?",
        "responses": {"model-one": "Ask Gen Model instead.", "model-two": "Delta two."}});
    let report = import_jsonl(&store, &slug, format!("{mention}\n").as_bytes(), &[])
        .await
        .unwrap();
    assert_eq!(report.responses_flagged, 0);
    let study = store.study("generated").await.unwrap();
    let prompts = store
        .prompts_without_response(study.id, "gen-model")
        .await
        .unwrap();
    let clean = prompts
        .iter()
        .find(|p| p.external_id == "p-clean-2")
        .unwrap();
    for (prompt_id, content) in [
        (clean.prompt_id, "Sure! As ChatGPT, I can help with gamma."),
        (prompts[0].prompt_id, "Alpha, answered plainly."),
    ] {
        let written = store
            .insert_generated_response(
                study.id,
                &GeneratedResponse {
                    prompt_id,
                    model_name: "gen-model",
                    provider: "Local",
                    openness: moat_exports::Openness::Open,
                    version: "",
                    content,
                    metadata: serde_json::json!({}),
                },
            )
            .await
            .unwrap();
        assert!(written);
    }
    let (flagged, total) = store.flagged_responses(study.id, 10).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        flagged[1],
        FlaggedResponse {
            prompt: "p-clean-2".into(),
            model: "gen-model".into(),
            words: "ChatGPT".into(),
        }
    );
    // Its prompt is no longer comparable by default: p-clean-1 and p-mention are left.
    assert_eq!(
        store
            .comparable_prompts(study.id, false, false)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .comparable_prompts(study.id, false, true)
            .await
            .unwrap(),
        4
    );

    // The rescan knows gen-model now.
    let cli = <moat_server::cli::Cli as clap::Parser>::try_parse_from([
        "moat",
        "study",
        "scan-identity",
        "generated",
    ])
    .unwrap();
    let moat_server::cli::Command::Study(command) = cli.command else {
        panic!("parsed as study")
    };
    let backend = AppService::new(store.clone(), String::new());
    let said = moat_server::study_cli::run(&backend, command)
        .await
        .unwrap();
    assert!(
        said.starts_with(
            "study generated: 3 responses name a model or its maker (flagged; 2 before)"
        ),
        "{said}"
    );
    let (flagged, total) = store.flagged_responses(study.id, 10).await.unwrap();
    assert_eq!(total, 3);
    assert!(flagged.contains(&FlaggedResponse {
        prompt: "p-mention".into(),
        model: "model-one".into(),
        words: "Gen Model".into(),
    }));
    assert_eq!(
        store
            .comparable_prompts(study.id, false, false)
            .await
            .unwrap(),
        1
    );
}
on_both_backends!(generated_responses_are_flagged);

/// Over HTTP: the import report counts the flag, the study's JSON lists it, the API changes the
/// setting, and the admin page (rendered on the server) shows the flagged response and the setting.
async fn identity_flags_over_http(url: &str) {
    let site = tempfile::tempdir().unwrap();
    let server = crate::support::spawn_server(url, site.path()).await;
    let opened = server
        .open_study("leaks-http", 2, serde_json::json!({}))
        .await;
    assert_eq!(opened.status(), 200);
    let imported: serde_json::Value = server
        .admin(
            server
                .http
                .post(format!("{}/api/v1/studies/leaks-http/import", server.base)),
        )
        .body(fixture())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(imported["responses_flagged"], 1, "{imported}");
    let study = server.admin_get_json("/api/v1/studies/leaks-http").await;
    assert_eq!(study["flagged_total"], 1, "{study}");
    assert_eq!(
        study["flagged"][0]["words"],
        "I am an ordinary AI assistant created by, Anthropic"
    );
    assert_eq!(study["settings"]["show_flagged"], false);
    let changed = server
        .admin(
            server
                .http
                .put(format!("{}/api/v1/studies/leaks-http", server.base)),
        )
        .json(&serde_json::json!({"title": "Leaks", "settings": {"show_flagged": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "{}", changed.text().await.unwrap());
    let study = server.admin_get_json("/api/v1/studies/leaks-http").await;
    assert_eq!(study["settings"]["show_flagged"], true);

    let page = server.owner_page("/admin/studies/leaks-http").await;
    assert!(page.contains("Identity flags"), "{page}");
    assert!(page.contains(r#"id="flagged""#), "{page}");
    assert!(
        page.contains("I am an ordinary AI assistant created by, Anthropic"),
        "{page}"
    );
    assert!(
        page.contains("1 response names a model or its maker"),
        "{page}"
    );
    assert!(
        page.contains(r#"name="settings[show_flagged]" checked"#),
        "{page}"
    );

    // A rater over HTTP now gets every prompt, the flagged one included; the leaderboard API leaves
    // that vote out unless `include_flagged=true`.
    let rater = moat_server::client::RaterClient::join(&server.base, "leaks-http", None)
        .await
        .unwrap();
    let mut votes = 0;
    while let Some(comparison) = rater.next_comparison().await.unwrap() {
        rater.vote(&comparison.assignment, "left").await.unwrap();
        votes += 1;
    }
    assert_eq!(votes, 5);
    let board = server
        .admin_get_json("/api/v1/studies/leaks-http/leaderboard?rounds=20")
        .await;
    assert_eq!(board["flagged_votes"], 1, "{board}");
    assert_eq!(board["flagged_votes_left_out"], true);
    assert_eq!(board["leaderboard"]["n_battles"], 4);
    let board = server
        .admin_get_json("/api/v1/studies/leaks-http/leaderboard?rounds=20&include_flagged=true")
        .await;
    assert_eq!(board["flagged_votes_left_out"], false);
    assert_eq!(board["leaderboard"]["n_battles"], 5);
}
on_both_backends!(identity_flags_over_http);
