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

/// Tests, examples, scripts and benchmarks once read `../shared/data/`, a folder beside the
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
