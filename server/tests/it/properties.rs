//! Property tests of everything the server parses from outside: the import formats (Moat's JSONL and
//! the public datasets) and every request body (the JSON API, the rater and admin server functions
//! posted as forms, `/v1/chat/completions`). Inputs are arbitrary bytes, invalid UTF-8, deep nesting,
//! huge fields, and text full of bidi controls and zero-width characters.
//!
//! The property: a clear refusal (a 4xx, or an import error naming line and field), never a panic or
//! a 5xx, and a refused import leaves every table as it was. Case counts are modest so each test takes
//! a few seconds; proptest prints the seed of a failure, and a failure found that way is pinned below
//! as a regression test of its own.

use std::collections::BTreeMap;
use std::io::Cursor;

use moat_exports::import::{ImportFormat, ImportReader};
use moat_server::domain::StudySlug;
use moat_server::import::{import_dataset, import_jsonl, parse_line, ImportError};
use moat_server::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::{Connection, Row};

use crate::support::{sample_jsonl, spawn_server, TestDb, TestServer, ADMIN_TOKEN};

/// Characters that change how text displays without being seen: bidi overrides and isolates,
/// zero-width joiners and spaces, the byte-order mark, a line separator.
const INVISIBLE: [char; 10] = [
    '\u{202E}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{200D}', '\u{200E}', '\u{FEFF}',
    '\u{2028}', '\u{0000}',
];

/// Text made of JSON punctuation, invisible characters and a few letters: it gets further into the
/// parsers than uniformly random characters do.
fn tricky_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just(":".to_string()),
        Just(",".to_string()),
        Just("\n".to_string()),
        Just("\\u0000".to_string()),
        Just("\\ud800".to_string()),
        Just("\"prompt\":".to_string()),
        Just("\"responses\":".to_string()),
        Just("\"models\":".to_string()),
        Just("1e999".to_string()),
        Just("-0".to_string()),
        Just("null".to_string()),
        prop::sample::select(INVISIBLE.to_vec()).prop_map(String::from),
        "[a-z]{1,6}",
    ];
    prop::collection::vec(pieces, 0..40).prop_map(|parts| parts.concat())
}

/// A string for a field: ordinary, hostile, or both.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        tricky_text(),
        prop::collection::vec(prop::sample::select(INVISIBLE.to_vec()), 0..20)
            .prop_map(|chars| chars.into_iter().collect()),
        (1usize..200_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Any JSON value, nested a few levels, with hostile strings and keys.
fn hostile_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        hostile_string().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "slug",
                        "title",
                        "instructions",
                        "settings",
                        "status",
                        "prompt",
                        "responses",
                        "models",
                        "id",
                        "model",
                        "messages",
                        "role",
                        "content",
                        "stream",
                        "max_tokens",
                        "temperature",
                        "items_per_rater",
                        "kind",
                        "weights",
                        "check_rate",
                        "model_a",
                        "model_b",
                        "winner",
                    ])
                    .prop_map(str::to_string),
                    hostile_string(),
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Bytes that are no valid input, or almost valid: random bytes, hostile text, a valid file with
/// invalid UTF-8 or a broken line spliced in after its first lines.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        tricky_text().prop_map(String::into_bytes),
        hostile_json().prop_map(|value| value.to_string().into_bytes()),
        (
            1usize..4,
            prop::collection::vec(any::<u8>(), 1..64),
            prop::bool::ANY
        )
            .prop_map(|(keep, junk, invalid_utf8)| {
                let valid = sample_jsonl(3);
                let mut bytes: Vec<u8> = valid
                    .lines()
                    .take(keep)
                    .flat_map(|line| format!("{line}\n").into_bytes())
                    .collect();
                if invalid_utf8 {
                    bytes.extend_from_slice(b"{\"id\":\"x\",\"prompt\":\"\xff\xfe\"}\n");
                }
                bytes.extend(junk);
                bytes
            }),
    ]
}

/// `depth` nested arrays: far past serde_json's recursion limit (128), so a parser that recursed
/// without one would overflow the stack.
fn deep_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn deep_objects(depth: usize) -> String {
    "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth)
}

/// The number of rows of every table: equal before and after means nothing was written.
pub async fn table_counts(url: &str) -> BTreeMap<String, i64> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let tables: Vec<String> = if url.starts_with("sqlite") {
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect()
    } else {
        sqlx::query("SELECT tablename::TEXT FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect()
    };
    let mut counts = BTreeMap::new();
    for table in tables {
        let count: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM \"{table}\""))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        counts.insert(table, count);
    }
    conn.close().await.ok();
    counts
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // Failures are pinned as regression tests in this file, not in a side file.
        failure_persistence: None,
        ..Config::default()
    })
}

const FORMATS: [ImportFormat; 5] = [
    ImportFormat::HhRlhf,
    ImportFormat::Trl,
    ImportFormat::Oasst,
    ImportFormat::Arena,
    ImportFormat::Votes,
];

/// The JSONL line parser: any text is a line item, a header or an error at that line naming a field.
#[test]
fn any_line_parses_or_names_its_line_and_field() {
    runner(512)
        .run(&(tricky_text(), 1usize..10_000), |(text, line)| {
            if let Err(error) = parse_line(&text, line) {
                prop_assert_eq!(error.line, line);
                prop_assert!(!error.field.is_empty());
                prop_assert!(!error.message.is_empty());
            }
            Ok(())
        })
        .unwrap();
    runner(128)
        .run(&hostile_json(), |value| {
            if let Err(error) = parse_line(&value.to_string(), 7) {
                prop_assert_eq!(error.line, 7);
                prop_assert!(!error.field.is_empty());
            }
            Ok(())
        })
        .unwrap();
    for text in [deep_arrays(100_000), deep_objects(100_000)] {
        let error = parse_line(&text, 3).unwrap_err();
        assert_eq!((error.line, error.field.as_str()), (3, "(line)"));
        assert!(error.message.contains("recursion limit"), "{error}");
    }
}

/// The public dataset readers: any bytes read as items or as an error that says where.
#[test]
fn dataset_readers_refuse_any_bytes_with_a_located_error() {
    let read_all = |format: ImportFormat, bytes: Vec<u8>| -> Result<(), TestCaseError> {
        let reader = match ImportReader::new(format, Box::new(Cursor::new(bytes))) {
            Ok(reader) => reader,
            Err(error) => {
                prop_assert!(!error.to_string().is_empty());
                return Ok(());
            }
        };
        for item in reader {
            if let Err(error) = item {
                prop_assert!(
                    error.line().is_some(),
                    "{format:?}: an error without its line: {error}"
                );
                prop_assert!(!error.to_string().is_empty());
                break;
            }
        }
        Ok(())
    };
    runner(256)
        .run(
            &(prop::sample::select(FORMATS.to_vec()), hostile_bytes()),
            |(format, bytes)| read_all(format, bytes),
        )
        .unwrap();
    for format in FORMATS {
        for text in [deep_arrays(100_000), deep_objects(100_000)] {
            read_all(format, text.into_bytes()).unwrap();
        }
    }
}

/// Imports through the store: a refused file changes no row, whatever it holds and wherever it
/// breaks (after valid lines too, which the transaction must take back).
/// The refusals of a file with nothing to import, which name no line: Moat's JSONL and the datasets.
const WHOLE_FILE_REFUSALS: [&str; 2] = [
    "the file holds no prompts",
    "the file holds no importable rows",
];

/// Pinned from `a_refused_import_writes_nothing`: an empty Moat file and an empty HH-RLHF array are
/// refused whole with their reason, and write nothing (not even the study the import would create).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_files_are_refused_whole() {
    let db = TestDb::sqlite();
    let store = Store::connect(db.url()).await.unwrap();
    let slug = StudySlug::parse("empty").unwrap();
    let before = table_counts(db.url()).await;
    let error = import_jsonl(&store, &slug, &b""[..], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ImportError::Study(reason) if reason == WHOLE_FILE_REFUSALS[0]),
        "{error}"
    );
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("input");
    std::fs::write(&path, b"[]").unwrap();
    let error = import_dataset(&store, &slug, ImportFormat::HhRlhf, &path, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ImportError::Study(reason) if reason == WHOLE_FILE_REFUSALS[1]),
        "{error}"
    );
    assert_eq!(table_counts(db.url()).await, before);
    store.close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_import_writes_nothing() {
    let db = TestDb::sqlite();
    let store = Store::connect(db.url()).await.unwrap();
    // Another study has data; the hostile files go to a new one, created inside the transaction.
    import_jsonl(
        &store,
        &StudySlug::parse("props").unwrap(),
        sample_jsonl(2).as_bytes(),
        &[],
    )
    .await
    .unwrap();
    let slug = StudySlug::parse("props-new").unwrap();
    let files = tempfile::tempdir().unwrap();
    let handle = tokio::runtime::Handle::current();
    let url = db.url().to_string();
    let refused = std::cell::Cell::new(0);
    tokio::task::block_in_place(|| {
        runner(48)
            .run(
                &(
                    prop::option::of(prop::sample::select(FORMATS.to_vec())),
                    hostile_bytes(),
                ),
                |(format, bytes)| {
                    handle.block_on(async {
                        let before = table_counts(&url).await;
                        let result = match format {
                            None => import_jsonl(&store, &slug, bytes.as_slice(), &[])
                                .await
                                .map(|_| ()),
                            Some(format) => {
                                let path = files.path().join("input");
                                std::fs::write(&path, &bytes).unwrap();
                                import_dataset(&store, &slug, format, &path, &[])
                                    .await
                                    .map(|_| ())
                            }
                        };
                        match result {
                            Ok(()) => {}
                            Err(ImportError::Input(error)) => {
                                refused.set(refused.get() + 1);
                                prop_assert!(!error.field.is_empty());
                                prop_assert_eq!(&table_counts(&url).await, &before, "{}", error);
                            }
                            // A file with no row to import at all is refused whole, with that
                            // reason (there is no line to name), and writes nothing either.
                            Err(ImportError::Study(reason))
                                if WHOLE_FILE_REFUSALS.contains(&reason.as_str()) =>
                            {
                                refused.set(refused.get() + 1);
                                prop_assert_eq!(&table_counts(&url).await, &before, "{}", reason);
                            }
                            Err(other) => {
                                return Err(TestCaseError::fail(format!(
                                    "{format:?}: not an input error naming line and field: {other}"
                                )))
                            }
                        }
                        Ok(())
                    })
                },
            )
            .unwrap();
    });
    let refused = refused.get();
    assert!(refused > 24, "most hostile files are refused ({refused})");
    db.cleanup().await;
}

/// A file that breaks after valid lines, on both backends: refused with the line, every table as it
/// was (the prompts of the valid lines were written inside the transaction and are taken back).
async fn refused_imports_leave_no_trace(url: &str) {
    let store = Store::connect(url).await.unwrap();
    import_jsonl(
        &store,
        &StudySlug::parse("trace").unwrap(),
        sample_jsonl(2).as_bytes(),
        &[],
    )
    .await
    .unwrap();
    // A new study, created inside the refused import's transaction and taken back with it.
    let slug = StudySlug::parse("trace-new").unwrap();
    let valid = sample_jsonl(5);
    let cases: Vec<(Vec<u8>, usize)> = vec![
        // Invalid UTF-8 on line 4.
        (
            [
                valid
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .as_bytes(),
                b"\n{\"id\":\"\xff\"}\n",
            ]
            .concat(),
            4,
        ),
        // 100,000 nested arrays on line 3.
        (
            format!(
                "{}\n{}\n",
                valid.lines().take(2).collect::<Vec<_>>().join("\n"),
                deep_arrays(100_000)
            )
            .into_bytes(),
            3,
        ),
        // An unknown model whose name is a bidi override, on line 2.
        (
            format!(
                "{}\n{{\"id\":\"b\",\"prompt\":\"p\",\"responses\":{{\"\u{202E}evil\":\"x\"}}}}\n",
                valid.lines().next().unwrap()
            )
            .into_bytes(),
            2,
        ),
    ];
    for (bytes, line) in cases {
        let before = table_counts(url).await;
        let error = import_jsonl(&store, &slug, bytes.as_slice(), &[])
            .await
            .unwrap_err();
        let ImportError::Input(error) = error else {
            panic!("not an input error: {error}");
        };
        assert_eq!(error.line, line, "{error}");
        assert!(!error.field.is_empty());
        assert_eq!(table_counts(url).await, before, "{error}");
    }
    store.close().await;
}
crate::on_both_backends!(refused_imports_leave_no_trace);

/// Sends `body` and checks the answer: never a 5xx, and a JSON API error is JSON with its message.
async fn assert_refused_or_accepted(
    request: reqwest::RequestBuilder,
    body: Vec<u8>,
    what: &str,
) -> Result<u16, TestCaseError> {
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = response.text().await.unwrap_or_default();
    prop_assert!(status < 500, "{what}: {status} {text}");
    if (400..500).contains(&status) && json && what.starts_with("/api/") {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert!(value["error"].is_string(), "{what}: {text}");
    }
    Ok(status)
}

/// The study routes the JSON API takes bodies on, with their methods.
const JSON_BODIES: [(&str, &str); 6] = [
    ("POST", "/api/v1/studies"),
    ("PUT", "/api/v1/studies/bodies"),
    ("POST", "/api/v1/studies/bodies/status"),
    ("POST", "/api/v1/studies/bodies/raters/nobody/status"),
    ("POST", "/api/v1/leaderboard"),
    ("POST", "/v1/chat/completions"),
];

/// The server functions (fixed endpoints under /rpc, form posts), but the login form (its refusals
/// count towards the failed-login limit).
const SERVER_FUNCTIONS: [&str; 12] = [
    "study_entry",
    "consent",
    "rater_view",
    "vote",
    "arena_prompt",
    "next",
    "save_models",
    "create_study",
    "update_study",
    "set_study_status",
    "study_report",
    "set_rater_status",
];

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn http_server(db: &TestDb, site: &std::path::Path) -> (TestServer, String) {
    let server = spawn_server(db.url(), site).await;
    server.open_study("bodies", 3, serde_json::json!({})).await;
    // A rater of the open study, so the rater functions get past the cookie.
    let consent = server
        .http
        .post(format!("{}/rpc/consent", server.base))
        .header("origin", &server.base)
        .form(&[("slug", "bodies")])
        .send()
        .await
        .unwrap();
    let rater = consent
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("moat_rater_bodies="))
        .and_then(|v| v.split(';').next())
        .expect("consent sets the rater cookie")
        .to_string();
    let cookies = format!("moat_rater_bodies={rater}; moat_admin={ADMIN_TOKEN}");
    (server, cookies)
}

/// Every JSON body the server accepts: hostile JSON and arbitrary bytes are a 4xx or accepted,
/// never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_refused_with_a_4xx_never_a_5xx() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let (server, _) = http_server(&db, site.path()).await;
    let handle = tokio::runtime::Handle::current();
    let body = prop_oneof![
        hostile_json().prop_map(|value| value.to_string().into_bytes()),
        hostile_bytes(),
        // A study-shaped body whose fields are hostile.
        (hostile_string(), hostile_string(), hostile_json()).prop_map(|(slug, title, settings)| {
            serde_json::json!({ "slug": slug, "title": title, "settings": settings, "status": slug })
                .to_string()
                .into_bytes()
        }),
        // A chat request whose messages are hostile.
        (hostile_string(), hostile_json()).prop_map(|(model, messages)| {
            serde_json::json!({ "model": model, "messages": messages, "max_tokens": -1 })
                .to_string()
                .into_bytes()
        }),
    ];
    tokio::task::block_in_place(|| {
        runner(40)
            .run(
                &(prop::sample::select(JSON_BODIES.to_vec()), body),
                |((method, path), body)| {
                    handle.block_on(async {
                        let request =
                            server
                                .admin(server.http.request(
                                    method.parse().unwrap(),
                                    format!("{}{path}", server.base),
                                ))
                                .header("content-type", "application/json");
                        assert_refused_or_accepted(request, body, path).await?;
                        Ok(())
                    })
                },
            )
            .unwrap();
    });
    for (method, path) in JSON_BODIES {
        for body in [deep_arrays(100_000), deep_objects(100_000)] {
            let request = server
                .admin(
                    server
                        .http
                        .request(method.parse().unwrap(), format!("{}{path}", server.base)),
                )
                .header("content-type", "application/json");
            let status = assert_refused_or_accepted(request, body.into_bytes(), path)
                .await
                .unwrap();
            assert!((400..500).contains(&status), "{path}: {status}");
        }
    }
    db.cleanup().await;
}

/// The import endpoint: a refused body is a 4xx naming the line, and the database is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_bodies_are_refused_whole() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let (server, _) = http_server(&db, site.path()).await;
    let handle = tokio::runtime::Handle::current();
    let formats = prop::sample::select(vec!["moat", "hh-rlhf", "oasst", "arena", "trl", "votes"]);
    tokio::task::block_in_place(|| {
        runner(32)
            .run(&(formats, hostile_bytes()), |(format, body)| {
                handle.block_on(async {
                    let before = table_counts(db.url()).await;
                    let path = format!("/api/v1/studies/bodies/import?format={format}");
                    let request = server.admin(server.http.post(format!("{}{path}", server.base)));
                    let status = assert_refused_or_accepted(request, body, &path).await?;
                    if status != 200 {
                        prop_assert_eq!(status, 422);
                        prop_assert_eq!(table_counts(db.url()).await, before);
                    }
                    Ok(())
                })
            })
            .unwrap();
    });
    db.cleanup().await;
}

/// The server functions, posted as forms the way a browser without JavaScript posts them: any
/// bytes, hostile field values and deeply nested keys are a 4xx or accepted, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_function_forms_are_refused_with_a_4xx_never_a_5xx() {
    let db = TestDb::sqlite();
    let site = tempfile::tempdir().unwrap();
    let (server, cookies) = http_server(&db, site.path()).await;
    let handle = tokio::runtime::Handle::current();
    let field_names = prop::sample::select(vec![
        "slug",
        "participant",
        "assignment",
        "choice",
        "source_guess",
        "source_confidence",
        "rationale",
        "prompt",
        "sample",
        "registry",
        "title",
        "instructions",
        "status",
        "pseudonym",
        "settings[items_per_rater]",
        "settings[check_rate]",
        "settings[kind]",
        "settings[contestants]",
        "settings[redirect_url]",
    ]);
    let form = prop_oneof![
        hostile_bytes(),
        prop::collection::vec((field_names, hostile_string()), 0..8).prop_map(|fields| {
            let mut form = String::from("slug=bodies");
            for (name, value) in fields {
                form.push_str(&format!("&{}={}", form_encode(name), form_encode(&value)));
            }
            form.into_bytes()
        }),
        (1usize..5_000)
            .prop_map(|depth| format!("slug=bodies&{}=1", "a[".repeat(depth)).into_bytes()),
    ];
    tokio::task::block_in_place(|| {
        runner(48)
            .run(
                &(prop::sample::select(SERVER_FUNCTIONS.to_vec()), form),
                |(function, body)| {
                    handle.block_on(async {
                        let request = server
                            .http
                            .post(format!("{}/rpc/{function}", server.base))
                            .header("origin", &server.base)
                            .header("cookie", &cookies)
                            .header("content-type", "application/x-www-form-urlencoded");
                        assert_refused_or_accepted(request, body, function).await?;
                        Ok(())
                    })
                },
            )
            .unwrap();
    });
    db.cleanup().await;
}
