//! Two things are embedded in the `moat` binary at compile time:
//! - the migrations (`sqlx::migrate!`): rebuild when one is added or edited;
//! - the web app's hydration module (`target/site/pkg`, written by `scripts/build.sh` before it builds
//!   the server): this script lists its files and their `.gz` copies into `$OUT_DIR/site_assets.rs`
//!   (`include_bytes!`) with one content hash over all of them. When the site has not been built, the
//!   list is empty and the server says so when it starts; `cargo build -p moat-server` still works.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-env-changed=MOAT_SITE_ROOT");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let site = match std::env::var_os("MOAT_SITE_ROOT").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => manifest.join("../target/site"),
    };
    let pkg = site.join("pkg");
    // Cargo reruns a script whose watched path is missing on every build (recompiling the server
    // each time), so the folder is created empty; `scripts/build.sh` fills it later, and a change
    // of any file in it reruns this script.
    if let Err(error) = std::fs::create_dir_all(&pkg) {
        println!(
            "cargo:warning=cannot create {} ({error}); the server is built without the hydration module",
            pkg.display()
        );
    }
    println!("cargo:rerun-if-changed={}", pkg.display());

    let mut files: Vec<PathBuf> = std::fs::read_dir(&pkg)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                .filter(|path| path.extension().is_none_or(|ext| ext != "gz"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let has_module = files.iter().any(|p| p.ends_with("moat.js"))
        && files.iter().any(|p| p.ends_with("moat_bg.wasm"));
    if !has_module {
        files.clear();
        println!(
            "cargo:warning=no hydration module in {} (run scripts/build.sh): this moat binary serves pages as plain HTML forms unless given --site-root",
            pkg.display()
        );
    }

    let mut hasher = Sha256::new();
    let mut entries = String::new();
    for path in &files {
        let name = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        hasher.update(name.as_bytes());
        hasher.update((body.len() as u64).to_le_bytes());
        hasher.update(&body);
        let gzip_path = gz_copy(path);
        let gzip = if is_fresh_copy(&gzip_path, path) {
            format!("Some(include_bytes!({:?}))", absolute(&gzip_path))
        } else {
            println!(
                "cargo:warning={} has no up-to-date .gz copy (scripts/build.sh writes one); it is served uncompressed",
                path.display()
            );
            "None".to_string()
        };
        writeln!(
            entries,
            "    EmbeddedFile {{ name: {name:?}, body: include_bytes!({:?}), gzip: {gzip} }},",
            absolute(path)
        )
        .unwrap();
    }
    let hash = if files.is_empty() {
        String::new()
    } else {
        hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let code = format!(
        "/// The content hash of the embedded files (empty when none are embedded).\n\
         pub const SITE_HASH: &str = {hash:?};\n\
         /// The files of `target/site/pkg` when the server was built.\n\
         pub static SITE_FILES: &[EmbeddedFile] = &[\n{entries}];\n"
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("site_assets.rs"), code).expect("write site_assets.rs");
}

fn gz_copy(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// A `.gz` copy older than its file is stale (a rebuilt module beside an old copy).
fn is_fresh_copy(gzip: &Path, original: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(gzip), modified(original)) {
        (Some(gz), Some(orig)) => gz >= orig,
        _ => false,
    }
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
