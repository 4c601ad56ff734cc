//! Checks of the repository itself: what a fresh clone needs is inside it.

use std::path::{Path, PathBuf};

/// Folders that are not sources: build outputs, installed packages, git's own files.
const SKIPPED_FOLDERS: &[&str] = &["target", "node_modules", ".git", ".venv", "__pycache__"];

/// Source files (code and scripts) of every crate, script and test, recursively.
fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            if !SKIPPED_FOLDERS.contains(&name.to_str().unwrap_or_default()) {
                source_files(&path, found);
            }
        } else if file_type.is_file()
            && matches!(
                path.extension().and_then(|extension| extension.to_str()),
                Some("rs" | "sh" | "mjs" | "js" | "py" | "toml")
            )
        {
            found.push(path);
        }
    }
}

/// Tests, examples, scripts and benchmarks once read a `shared` data folder beside the
/// repository that a user who clones Moat does not have (25 exports tests failed with "No such file
/// or directory" on a fresh clone). The data now ships in `testdata/`; this fails, naming the file,
/// when a source reaches outside the repository for it again.
#[test]
fn no_source_reads_data_from_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // Spelled in pieces so this file does not match itself.
    let needles = [["shared", "data"].join("/"), ["..", "shared", ""].join("/")];
    let mut files = Vec::new();
    source_files(root, &mut files);
    assert!(
        files
            .iter()
            .any(|file| file.ends_with("server/tests/it/repository.rs")),
        "the walk found this file"
    );
    let offenders: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).ok()?;
            let needle = needles
                .iter()
                .find(|needle| text.contains(needle.as_str()))?;
            Some(format!(
                "{} mentions {needle:?}",
                file.strip_prefix(root).unwrap().display()
            ))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "sources read data from outside the repository; use testdata/ (see testdata/README.md):\n{}",
        offenders.join("\n")
    );
}

/// The shipped test data is the bytes its README lists, so a test's figures (2,312 pairs, 754
/// OASST preferences) refer to the same files everywhere.
#[test]
fn the_shipped_test_data_matches_its_readme() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let readme = std::fs::read_to_string(testdata.join("README.md")).unwrap();
    for file in [
        "hh-rlhf/harmless-base-test.jsonl.gz",
        "oasst/en_100_tree.jsonl",
    ] {
        let bytes = std::fs::read(testdata.join(file)).unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{file}`")))
            .unwrap_or_else(|| panic!("testdata/README.md has no row for {file}"));
        assert!(
            row.contains(&digest),
            "testdata/{file} has sha256 {digest}, not the one testdata/README.md lists"
        );
        let licence = testdata.join(file).parent().unwrap().join("LICENSE");
        assert!(licence.is_file(), "{} is missing", licence.display());
    }
}

/// `migrations/checksums.txt` as a map from a migration's path (`sqlite/…`, `postgres/…`) to its
/// sha256, in hex.
fn committed_migration_checksums(migrations: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(migrations.join("checksums.txt")).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (digest, path) = line.split_once("  ").unwrap_or_else(|| {
                panic!("migrations/checksums.txt: not `SHA256  PATH`: {line:?}")
            });
            (path.to_string(), digest.to_string())
        })
        .collect()
}

/// Every file of both dialects' migration folders with its sha256, in hex.
fn current_migration_checksums(migrations: &Path) -> std::collections::BTreeMap<String, String> {
    let mut found = std::collections::BTreeMap::new();
    for dialect in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(migrations.join(dialect)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            found.insert(
                format!("{dialect}/{name}"),
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            );
        }
    }
    found
}

/// What is wrong with a migrations folder against its `checksums.txt`: landed migrations edited or
/// deleted, and migrations without a line.
fn migration_checksum_problems(migrations: &Path) -> Vec<String> {
    let committed = committed_migration_checksums(migrations);
    let current = current_migration_checksums(migrations);
    let mut problems = Vec::new();
    for (path, digest) in &committed {
        match current.get(path) {
            None => problems.push(format!(
                "migrations/{path} has landed and was deleted; restore it (a correction is a new migration)"
            )),
            Some(now) if now != digest => problems.push(format!(
                "migrations/{path} has landed and was edited (sha256 {now}, committed {digest}); \
                 restore it and put the change in a new migration"
            )),
            Some(_) => {}
        }
    }
    for (path, digest) in &current {
        if !committed.contains_key(path) {
            problems.push(format!(
                "migrations/{path} is not in migrations/checksums.txt; append its line: {digest}  {path}"
            ));
        }
    }
    problems
}

/// A migration that has landed is never edited: a database that applied it would keep the old
/// schema (sqlx refuses to start on a changed checksum, which a user meets only on upgrade). The
/// digests of landed migrations are committed; an edited or deleted one fails here by name, and a new
/// one fails until its line is appended, so the list stays complete.
#[test]
fn landed_migrations_are_never_edited() {
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let problems = migration_checksum_problems(&migrations);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let listed = committed_migration_checksums(&migrations).len();
    assert!(
        listed >= 18,
        "the list holds the 18 migrations landed by 2026-11-29, not {listed}"
    );
}

/// The check above can fail: on a copy of the folder, an edited landed migration and a new one
/// without a line are both reported, by name.
#[test]
fn an_edited_or_unlisted_migration_is_reported_by_name() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        source.join("checksums.txt"),
        copy.path().join("checksums.txt"),
    )
    .unwrap();
    for dialect in ["sqlite", "postgres"] {
        std::fs::create_dir(copy.path().join(dialect)).unwrap();
        for entry in std::fs::read_dir(source.join(dialect)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(
                &path,
                copy.path().join(dialect).join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    assert_eq!(
        migration_checksum_problems(copy.path()),
        Vec::<String>::new()
    );

    let edited = copy.path().join("postgres/20261126000001_initial.sql");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("\n-- an innocent-looking comment\n");
    std::fs::write(&edited, text).unwrap();
    std::fs::write(
        copy.path().join("sqlite/20991231000001_new.sql"),
        "SELECT 1;\n",
    )
    .unwrap();
    let problems = migration_checksum_problems(copy.path());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "migrations/postgres/20261126000001_initial.sql has landed and was edited"
        ),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("migrations/sqlite/20991231000001_new.sql is not in migrations/checksums.txt; append its line: "),
        "{problems:?}"
    );
    assert!(
        problems[1].ends_with("  sqlite/20991231000001_new.sql"),
        "{problems:?}"
    );
}
