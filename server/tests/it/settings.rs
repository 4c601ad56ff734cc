//! Study settings defined once (`moat_app::settings`): every field of `StudySettings` has its entry
//! in the table, the defaults, the text forms, the admin form and the command line agree with the
//! type, and a wrong value is refused naming its field, through the JSON API, the admin form and
//! `moat study`.

use std::collections::BTreeMap;

use moat_app::settings::{field_errors, setting, Kind, SettingsInput, StudySettings, SETTINGS};
use serde_json::{json, Value};

use crate::support::{spawn_server, TestDb};

/// The JSON object of the default settings: its keys are the struct's fields, in order.
fn default_object() -> serde_json::Map<String, Value> {
    match serde_json::to_value(StudySettings::default()).unwrap() {
        Value::Object(object) => object,
        other => panic!("settings serialize as an object, got {other}"),
    }
}

#[test]
fn every_field_has_one_entry_whose_kind_fits_its_default() {
    // The JSON object's keys are the struct's fields (sorted: serde_json's map is ordered by key).
    let fields: Vec<String> = default_object().keys().cloned().collect();
    let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    keys.sort();
    assert_eq!(fields, keys, "one entry per field");
    let mut flags = std::collections::HashSet::new();
    let mut form_fields = std::collections::HashSet::new();
    for setting in SETTINGS {
        assert!(
            !setting.label.trim().is_empty(),
            "{} has a label",
            setting.key
        );
        let help = setting.help();
        assert!(
            help.len() > 20 && help.ends_with('.') && !help.contains("  "),
            "{}'s help is a sentence: {help:?}",
            setting.key
        );
        assert!(
            flags.insert(setting.flag()),
            "{} has its own flag",
            setting.key
        );
        assert!(
            form_fields.insert(setting.form_field()),
            "{} has its own form field",
            setting.key
        );
        let default = &default_object()[setting.key];
        let fits = match setting.kind {
            Kind::Switch => default.is_boolean(),
            Kind::Count { min, max } => default
                .as_u64()
                .is_some_and(|n| (u64::from(min)..=u64::from(max)).contains(&n)),
            Kind::OptionalCount { .. } | Kind::OptionalText | Kind::Link => {
                default.is_null() || default.is_string() || default.is_u64()
            }
            Kind::Share { .. } => default.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)),
            Kind::Text => default.as_str().is_some_and(|t| !t.is_empty()),
            Kind::Choice(choices) => choices
                .iter()
                .any(|(choice, _)| default.as_str() == Some(*choice)),
            Kind::Lines { .. } | Kind::Contestants => default.is_array(),
            Kind::Weights => default.is_object(),
        };
        assert!(
            fits,
            "{}: the default {default} fits {:?}",
            setting.key, setting.kind
        );
    }
    assert_eq!(
        StudySettings::default().validate(),
        Ok(()),
        "the defaults are valid"
    );
}

/// A study that differs from the defaults in every setting.
fn every_setting_changed() -> StudySettings {
    StudySettings {
        items_per_rater: 7,
        ratings_per_item: 2,
        ask_source: true,
        ask_rationale: true,
        reveal_at_end: false,
        reveal_after_vote: true,
        show_flagged: true,
        assignment_minutes: 0,
        active_sampling: "uncertainty".into(),
        completion_code: Some("DONE-7".into()),
        redirect_url: Some("https://app.prolific.com/submissions/complete?cc=DONE".into()),
        participant_param: "PID".into(),
        require_participant: true,
        sessions_per_ip: 0,
        consents_per_minute: 5,
        votes_per_day: 40,
        rater_requests_per_minute: 30,
        check_rate: 0.25,
        max_failed_checks: Some(2),
        end_excluded_sessions: true,
        screen_out_code: Some("OUT".into()),
        screen_out_url: Some("https://example.org/out".into()),
        kind: "arena".into(),
        contestants: vec!["alpha".into(), "beta".into(), "gamma".into()],
        weights: BTreeMap::from([("beta".to_string(), 2.5), ("gamma".to_string(), 0.0)]),
        favour_least_shown: false,
        stream: "together".into(),
        max_prompt_chars: 300,
        battles_per_hour: 9,
        max_turns: 1,
        sample_prompts: vec!["Write a haiku.".into(), "Explain recursion.".into()],
    }
}

#[test]
fn text_and_the_admin_form_round_trip_every_setting() {
    for settings in [StudySettings::default(), every_setting_changed()] {
        assert_eq!(settings.validate(), Ok(()));
        // Each setting written as text and read back onto the defaults.
        let mut rebuilt = StudySettings::default();
        for entry in SETTINGS.iter().filter(|s| s.has_own_field()) {
            let text = settings.text(entry.key).unwrap();
            rebuilt.set_text(entry.key, &text).unwrap();
        }
        assert_eq!(rebuilt, settings, "set_text(text) is the identity");
        // The admin form filled with the settings posts them back unchanged.
        let form = SettingsInput::from_settings(&settings);
        assert_eq!(form.parse(), Ok(settings.clone()));
    }
    // What the browser posts when the form is left alone: the existing field names stay.
    let form = SettingsInput::from_settings(&StudySettings::default());
    assert_eq!(form.0["items_per_rater"], "10");
    assert_eq!(form.0["check_percent"], "0");
    assert_eq!(form.0["reveal_at_end"], "on");
    assert!(
        !form.0.contains_key("ask_source"),
        "an unchecked box is absent"
    );
    assert!(
        !form.0.contains_key("weights"),
        "the weights travel with the contestants"
    );
    // Empty text: none for an optional setting, the default for a required one.
    let mut settings = every_setting_changed();
    for key in [
        "completion_code",
        "max_failed_checks",
        "participant_param",
        "kind",
    ] {
        settings.set_text(key, " ").unwrap();
    }
    assert_eq!(settings.completion_code, None);
    assert_eq!(settings.max_failed_checks, None);
    assert_eq!(settings.participant_param, "PROLIFIC_PID");
    assert_eq!(settings.kind, "static");
}

#[test]
fn validation_names_the_field_and_finds_every_wrong_one() {
    let cases: Vec<(Value, Vec<&str>, &str)> = vec![
        (
            json!({ "items_per_rater": 0 }),
            vec!["items_per_rater"],
            "must be at least 1, got 0",
        ),
        (
            json!({ "ratings_per_item": 0 }),
            vec!["ratings_per_item"],
            "at least 1",
        ),
        (
            json!({ "check_rate": 1.5 }),
            vec!["check_rate"],
            "between 0 and 1",
        ),
        (
            json!({ "max_turns": 50 }),
            vec!["max_turns"],
            "between 1 and 20, got 50",
        ),
        (
            json!({ "max_prompt_chars": 0 }),
            vec!["max_prompt_chars"],
            "between 1 and 100000",
        ),
        (
            json!({ "battles_per_hour": 0 }),
            vec!["battles_per_hour"],
            "at least 1",
        ),
        (
            json!({ "kind": "duel" }),
            vec!["kind"],
            "must be static or arena",
        ),
        (
            json!({ "stream": "sometimes" }),
            vec!["stream"],
            "must be live or together",
        ),
        (
            json!({ "participant_param": " " }),
            vec!["participant_param"],
            "must not be empty",
        ),
        (
            json!({ "redirect_url": "javascript:alert(1)" }),
            vec!["redirect_url"],
            "http:// or https://",
        ),
        (
            json!({ "screen_out_url": "data:x" }),
            vec!["screen_out_url"],
            "http:// or https://",
        ),
        (
            json!({ "contestants": ["a", "a"] }),
            vec!["contestants"],
            "empty or twice",
        ),
        (
            json!({ "kind": "arena", "contestants": ["a"] }),
            vec!["contestants"],
            "at least two",
        ),
        (
            json!({ "weights": { "a": -1.0 } }),
            vec!["weights"],
            "a weight is 0 or more",
        ),
        (
            json!({ "max_prompt_chars": 5, "sample_prompts": ["far too long"] }),
            vec!["sample_prompts"],
            "at most max_prompt_chars (5)",
        ),
        (
            json!({ "max_turns": 0, "items_per_rater": 0, "kind": "duel" }),
            vec!["items_per_rater", "kind", "max_turns"],
            "",
        ),
    ];
    for (json, keys, message) in cases {
        let settings: StudySettings = serde_json::from_value(json.clone()).unwrap();
        let errors = settings.validate().expect_err(&json.to_string());
        let mut named: Vec<&str> = errors.iter().map(|e| e.key).collect();
        named.sort();
        assert_eq!(named, keys, "{json}");
        let text = moat_app::settings::join_errors(&errors);
        for key in keys {
            assert!(setting(key).is_some());
            let beside = field_errors(&text, key);
            assert_eq!(beside.len(), 1, "{text}: one message for {key}");
            assert!(text.contains(&format!("{key} {}", beside[0])), "{text}");
        }
        assert!(text.contains(message), "{text} says {message:?}");
    }
    // Text that does not parse names its setting too.
    let mut settings = StudySettings::default();
    for (key, text, says) in [
        ("items_per_rater", "ten", "whole number"),
        ("ask_source", "maybe", "true or false"),
        ("check_rate", "a lot", "a number"),
        ("contestants", "a, b=heavy", "not a number"),
        ("weights", "a=1", "with the contestants"),
    ] {
        let error = settings.set_text(key, text).unwrap_err();
        assert_eq!(error.key, key);
        assert!(
            error.to_string().starts_with(key) && error.message.contains(says),
            "{error}"
        );
    }
    assert_eq!(
        settings,
        StudySettings::default(),
        "a refused text changes nothing"
    );
    // The form: a percentage out of range, a number that is not one, a field that is no setting.
    let form = SettingsInput(BTreeMap::from([
        ("check_percent".to_string(), "150".to_string()),
        ("max_turns".to_string(), "x".to_string()),
        ("no_such_field".to_string(), "1".to_string()),
    ]));
    let mut keys: Vec<&str> = form.parse().unwrap_err().iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(keys, ["check_rate", "max_turns", "settings"]);
}

/// The JSON API and the admin form refuse a wrong setting with a 400 that names it; the OpenAPI
/// document describes every setting with its help text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_form_name_the_wrong_field_and_the_document_describes_every_setting() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let server = spawn_server(db.url(), site.path()).await;
    let response = server
        .admin(server.http.post(format!("{}/api/v1/studies", server.base)))
        .json(&json!({ "slug": "wrong", "title": "Wrong", "settings": { "max_turns": 50, "check_rate": -1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("check_rate must be a share between 0 and 1, got -1")
            && body.contains("max_turns must be between 1 and 20, got 50"),
        "{body}"
    );

    let cookie = server.owner_cookie().await;
    let response = server
        .http
        .post(format!("{}/rpc/create_study", server.base))
        .header("Cookie", &cookie)
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .form(&[
            ("slug", "formed"),
            ("title", "Formed"),
            ("instructions", ""),
            ("settings[items_per_rater]", "4"),
            ("settings[max_turns]", "21"),
            ("settings[sample_prompts]", "One\n\nTwo\n"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("max_turns must be between 1 and 20, got 21"),
        "{body}"
    );
    let response = server
        .http
        .post(format!("{}/rpc/create_study", server.base))
        .header("Cookie", &cookie)
        .header("Origin", &server.base)
        .header("Accept", "application/json")
        .form(&[
            ("slug", "formed"),
            ("title", "Formed"),
            ("instructions", ""),
            ("settings[items_per_rater]", "4"),
            ("settings[ask_source]", "on"),
            ("settings[check_percent]", "12.5"),
            ("settings[sample_prompts]", "One\n\nTwo\n"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success() || response.status().is_redirection(),
        "{}",
        response.status()
    );
    let study = server.admin_get_json("/api/v1/studies/formed").await;
    assert_eq!(study["settings"]["items_per_rater"], 4);
    assert_eq!(study["settings"]["ask_source"], true);
    assert_eq!(study["settings"]["check_rate"], 0.125);
    assert_eq!(study["settings"]["sample_prompts"], json!(["One", "Two"]));
    assert_eq!(
        study["settings"]["reveal_at_end"], false,
        "a box not posted is off"
    );

    let document = server.admin_get_json("/api/v1/openapi.json").await;
    let schema = &document["components"]["schemas"]["StudySettings"];
    let properties = schema["properties"].as_object().expect("properties");
    let keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    assert_eq!(
        properties
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        keys.iter().copied().collect(),
        "{schema}"
    );
    for entry in SETTINGS {
        let description = properties[entry.key]["description"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            description.split_whitespace().collect::<Vec<_>>().join(" "),
            entry.help(),
            "{}",
            entry.key
        );
    }
    db.cleanup().await;
}

#[test]
fn the_command_line_has_a_flag_per_setting_and_set_takes_any() {
    use clap::CommandFactory;
    let mut command = moat_server::cli::Cli::command();
    command.build();
    for name in ["create", "update"] {
        let sub = command
            .find_subcommand("study")
            .and_then(|study| study.find_subcommand(name))
            .expect("moat study create/update");
        let longs: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
        for entry in SETTINGS.iter().filter(|s| s.has_own_field()) {
            assert!(
                longs.contains(&entry.flag().as_str()),
                "moat study {name} --{} ({longs:?})",
                entry.flag()
            );
        }
        assert!(longs.contains(&"set") && longs.contains(&"models"));
    }
    let parsed = <moat_server::cli::Cli as clap::Parser>::try_parse_from([
        "moat",
        "study",
        "create",
        "x",
        "--title",
        "X",
        "--stream",
        "sometimes",
    ]);
    assert!(
        parsed.is_err(),
        "a choice outside its values is refused by clap"
    );
}
