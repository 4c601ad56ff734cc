//! The `moat` binary when something around it is wrong: each error names the thing (host and port,
//! database, path, address), says what to do, comes within a few seconds, is one line, and exits
//! non-zero; `moat doctor`; and the hydration module embedded in the binary, served under hashed
//! names with long cache lifetimes.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_server::domain::random_hex;
use moat_server::site::{EmbeddedFile, Site, SiteAssets};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `moat ARGS` in `cwd` with a clean environment for the variables Moat reads; gives up after 20 s.
async fn moat(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
    command
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in [
        "DATABASE_URL",
        "MOAT_DATA_DIR",
        "MOAT_ADMIN_TOKEN",
        "MOAT_MODELS",
        "MOAT_ADDR",
        "MOAT_DB_CONNECT_TIMEOUT",
    ] {
        command.env_remove(var);
    }
    command.env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .unwrap_or_else(|_| panic!("moat {args:?} still running after 20 s"))
        .expect("moat runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The error line: exactly one line on stderr that starts with `error: `, non-zero exit, fast.
fn one_error_line(run: &Run, within: Duration) -> String {
    assert_ne!(run.code, Some(0), "should fail: {}", run.stdout);
    assert!(run.code.is_some(), "ended by a signal");
    assert!(run.took < within, "took {:?}: {}", run.took, run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", run.stderr);
    assert!(
        !run.stderr.contains("caused by"),
        "causes only with --verbose: {}",
        run.stderr
    );
    errors[0].to_string()
}

fn postgres_base() -> String {
    let admin = std::env::var("MOAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap()
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
    // dropped here: nothing listens on it any more
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_fails_fast_naming_host_port_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let url = format!("postgres://moatuser@127.0.0.1:{port}/moatdb");
    let run = moat(dir.path(), &["--database-url", &url, "study", "list"], &[]).await;
    let line = one_error_line(&run, Duration::from_secs(4));
    for needle in [
        &format!("127.0.0.1:{port}") as &str,
        "database moatdb",
        "user moatuser",
        "connection refused",
        "start PostgreSQL",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line}");
    }

    // --verbose adds the driver's own words.
    let verbose = moat(
        dir.path(),
        &["--verbose", "--database-url", &url, "study", "list"],
        &[],
    )
    .await;
    assert_ne!(verbose.code, Some(0));
    assert!(
        verbose.stderr.contains("caused by:"),
        "causes with --verbose: {}",
        verbose.stderr
    );

    // A server that accepts the connection and never answers: the configurable timeout, not the
    // pool's 30 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let url = format!("postgres://moatuser@127.0.0.1:{silent_port}/moatdb");
    let run = moat(
        dir.path(),
        &[
            "--db-connect-timeout",
            "1",
            "--database-url",
            &url,
            "study",
            "list",
        ],
        &[],
    )
    .await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(run.took >= Duration::from_secs(1), "{:?}", run.took);
    assert!(line.contains(&format!("127.0.0.1:{silent_port}")), "{line}");
    assert!(line.contains("database moatdb"), "{line}");
    assert!(line.contains("no answer within 1 s"), "{line}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_named_with_the_createdb_command() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("moat_missing_{}", random_hex(6));
    let url = format!("{}/{name}", postgres_base());
    let run = moat(dir.path(), &["--database-url", &url, "study", "list"], &[]).await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(line.contains(&format!("{name:?} does not exist")), "{line}");
    assert!(line.contains("createdb -h 127.0.0.1"), "{line}");
    assert!(line.ends_with(&format!("{name})")), "{line}");

    // moat doctor says the same, as a FAIL line, and exits non-zero.
    let doctor = moat(dir.path(), &["--database-url", &url, "doctor"], &[]).await;
    assert_ne!(doctor.code, Some(0));
    assert!(doctor.took < Duration::from_secs(4), "{:?}", doctor.took);
    let fail = doctor
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL  database"))
        .unwrap_or_else(|| panic!("a database FAIL line: {}", doctor.stdout));
    assert!(fail.contains(&name), "{fail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_errors_name_the_path_and_a_missing_folder_is_created() {
    let dir = tempfile::tempdir().unwrap();
    // A folder that cannot be created: its parent is a file (this holds for root too).
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let db = blocker.join("sub").join("moat.db");
    let url = format!("sqlite://{}", db.display());
    let run = moat(dir.path(), &["--database-url", &url, "study", "list"], &[]).await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(
        line.contains(&format!(
            "cannot create the folder {}",
            blocker.join("sub").display()
        )),
        "{line}"
    );
    assert!(line.contains(&db.display().to_string()), "{line}");

    // The same through --data-dir.
    let run = moat(
        dir.path(),
        &[
            "--data-dir",
            &blocker.join("data").display().to_string(),
            "study",
            "list",
        ],
        &[],
    )
    .await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(
        line.contains(&blocker.join("data").join("moat.db").display().to_string()),
        "{line}"
    );

    // A file that is not a database: named once, with its path.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let run = moat(
        dir.path(),
        &[
            "--database-url",
            &format!("sqlite://{}", junk.display()),
            "study",
            "list",
        ],
        &[],
    )
    .await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(
        line.contains(&format!(
            "cannot open the SQLite database {}",
            junk.display()
        )),
        "{line}"
    );
    assert_eq!(line.matches("not a database").count(), 1, "{line}");

    // A path that is a folder.
    let run = moat(
        dir.path(),
        &[
            "--database-url",
            &format!("sqlite://{}", dir.path().display()),
            "study",
            "list",
        ],
        &[],
    )
    .await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(line.contains("is a folder, not a file"), "{line}");

    // Missing parent folders are created.
    let nested = dir.path().join("x").join("y").join("moat.db");
    let run = moat(
        dir.path(),
        &[
            "--database-url",
            &format!("sqlite://{}", nested.display()),
            "study",
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(nested.is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_busy_port_names_the_address_before_making_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let run = moat(dir.path(), &["serve", "--addr", &addr], &[]).await;
    let line = one_error_line(&run, Duration::from_secs(4));
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    assert!(line.contains("already in use"), "{line}");
    assert!(line.contains("--addr"), "{line}");
    assert!(
        !run.stdout.contains("Admin token"),
        "no token for a server that never started: {}",
        run.stdout
    );
    // Nothing was written either: the address is checked before the database is opened.
    assert!(!dir.path().join("data").exists());
    drop(busy);
}

/// A registry with a model whose endpoint refuses connections, one whose key variable is unset,
/// and a local model whose file is missing; the set key's value must never be printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_database_site_models_and_disk_without_printing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    // A healthy SQLite database first.
    let created = moat(cwd, &["study", "list"], &[]).await;
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let healthy = moat(cwd, &["doctor"], &[]).await;
    assert_eq!(
        healthy.code,
        Some(0),
        "{}\n{}",
        healthy.stdout,
        healthy.stderr
    );
    assert!(
        healthy
            .stdout
            .lines()
            .any(|l| l.starts_with("ok    database") && l.contains("migrations applied")),
        "{}",
        healthy.stdout
    );
    assert!(healthy.stdout.contains("free"), "{}", healthy.stdout);

    let port = closed_port();
    let registry = cwd.join("models.toml");
    std::fs::write(
        &registry,
        format!(
            r#"
[[model]]
name = "refusing"
provider = "Nobody"
openness = "open"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
model = "x"
api_key_env = "MOAT_DOCTOR_TEST_KEY"

[[model]]
name = "keyless"
provider = "Nobody"
openness = "closed"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
model = "y"
api_key_env = "MOAT_DOCTOR_UNSET_KEY"

[[model]]
name = "local-gone"
provider = "Nobody"
openness = "open"
kind = "local"
path = "missing.gguf"
"#
        ),
    )
    .unwrap();
    let secret = "sk-doctor-must-never-print-this";
    let run = moat(
        cwd,
        &[
            "doctor",
            "--models",
            "models.toml",
            "--site-root",
            "/nonexistent-site",
        ],
        &[("MOAT_DOCTOR_TEST_KEY", secret)],
    )
    .await;
    assert_ne!(run.code, Some(0));
    assert!(run.took < Duration::from_secs(10), "{:?}", run.took);
    let out = &run.stdout;
    assert!(!out.contains(secret) && !run.stderr.contains(secret));
    let fail = |needle: &str| {
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains(needle)),
            "a FAIL line with {needle:?}:\n{out}"
        )
    };
    fail(&format!(
        "model refusing: http://127.0.0.1:{port}/v1 does not answer: connection refused"
    ));
    fail("model keyless: the key variable MOAT_DOCTOR_UNSET_KEY is not set");
    fail("model local-gone: the local model file");
    fail("/nonexistent-site has no pkg/moat.js");
    assert!(out.contains("fix: export MOAT_DOCTOR_UNSET_KEY="), "{out}");
    assert!(
        run.stderr.contains("moat doctor found 4 problems"),
        "{}",
        run.stderr
    );
}

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

/// The embedded module: the page asks for hashed names, which are served gzipped when accepted and
/// cached for a year; the unhashed names are not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_assets_go_out_under_hashed_names_with_long_cache_lifetimes() {
    use std::io::{Read, Write};
    let wasm: Vec<u8> = b"\0asm\x01\0\0\0"
        .iter()
        .copied()
        .chain((0..100_000u32).map(|i| (i % 251) as u8 ^ (i / 4096) as u8))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm).unwrap();
    let assets = SiteAssets {
        hash: "feedc0de12345678".into(),
        files: vec![
            EmbeddedFile {
                name: "moat.js",
                body: b"export default function init() {}\n",
                gzip: None,
            },
            EmbeddedFile {
                name: "moat_bg.wasm",
                body: leak(wasm.clone()),
                gzip: Some(leak(gz.finish().unwrap())),
            },
        ],
    };
    let db = crate::support::TestDb::sqlite();
    let app = moat_server::Application::build(moat_server::ServeConfig {
        database_url: db.url().to_string(),
        db_connect_timeout: moat_server::store::DEFAULT_CONNECT_TIMEOUT,
        addr: "127.0.0.1:0".parse().unwrap(),
        site: Site::Assets(Arc::new(assets)),
        admin_token: Some(moat_server::Secret("t".into())),
        demo: false,
        models: None,
        cookies: Default::default(),
        limits: Default::default(),
    })
    .await
    .unwrap();
    let base = format!("http://{}", app.addr);
    tokio::spawn(app.run());
    let http = reqwest::Client::builder().no_gzip().build().unwrap();

    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/pkg/moat-feedc0de12345678.js"), "{page}");
    assert!(
        page.contains("/pkg/moat-feedc0de12345678_bg.wasm"),
        "{page}"
    );

    let wasm_url = format!("{base}/pkg/moat-feedc0de12345678_bg.wasm");
    let zipped = http
        .get(&wasm_url)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["content-type"], "application/wasm");
    assert_eq!(
        zipped.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(zipped.headers()["vary"], "accept-encoding");
    let etag = zipped.headers()["etag"].clone();
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped.bytes().await.unwrap()[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, wasm);

    let plain = http.get(&wasm_url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.bytes().await.unwrap(), wasm);

    let again = http
        .get(&wasm_url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let script = http
        .get(format!("{base}/pkg/moat-feedc0de12345678.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    for stale in [
        "/pkg/moat.js",
        "/pkg/moat_bg.wasm",
        "/pkg/moat-0000000000000000.js",
    ] {
        let response = http.get(format!("{base}{stale}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{stale}");
    }
    db.cleanup().await;
}

/// The binary's own embed: when the web app was built before the server (scripts/build.sh, the
/// CI), it holds the module and its gzip copies; otherwise it is empty and says so.
#[test]
fn the_binarys_embed_is_complete_or_empty() {
    let assets = SiteAssets::embedded();
    if assets.files.is_empty() {
        assert!(assets.hash.is_empty());
        assert!(!Site::embedded().has_module());
        return;
    }
    assert_eq!(assets.hash.len(), 16);
    let names: Vec<&str> = assets.files.iter().map(|f| f.name).collect();
    assert!(
        names.contains(&"moat.js") && names.contains(&"moat_bg.wasm"),
        "{names:?}"
    );
    let wasm = assets
        .files
        .iter()
        .find(|f| f.name == "moat_bg.wasm")
        .unwrap();
    assert!(wasm.body.starts_with(b"\0asm"));
    assert!(wasm.gzip.is_some_and(|gz| gz.len() < wasm.body.len()));
}
