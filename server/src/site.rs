//! The web app's hydration module (wasm-bindgen's `moat.js` and `moat_bg.wasm`, with their `.gz`
//! copies), embedded in the binary by `build.rs` so that `moat serve` serves the whole app from any
//! folder. Embedded files go out under names that carry their content hash (`/pkg/moat-HASH.js`,
//! `/pkg/moat-HASH_bg.wasm`) with a year-long `immutable` cache lifetime: a new build has new names,
//! so a browser never runs a stale module. `--site-root DIR` serves a folder instead (development).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// One file of `target/site/pkg` as it was when the server was built.
#[derive(Debug)]
pub struct EmbeddedFile {
    pub name: &'static str,
    pub body: &'static [u8],
    /// Its gzip copy, when the build left an up-to-date one.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/site_assets.rs"));

/// Where the pages' hydration module comes from.
#[derive(Debug, Clone)]
pub enum Site {
    /// Files in memory: the binary's own ([`SiteAssets::embedded`]) or a test's.
    Assets(Arc<SiteAssets>),
    /// A folder with `pkg/moat.js` and `pkg/moat_bg.wasm` (`--site-root`), served as they are.
    Dir(PathBuf),
}

impl Site {
    /// The binary's embedded files.
    pub fn embedded() -> Site {
        Site::Assets(Arc::new(SiteAssets::embedded()))
    }

    /// Whether pages will load a hydration module: false for an empty embed or a folder without it.
    pub fn has_module(&self) -> bool {
        match self {
            Site::Assets(assets) => !assets.files.is_empty(),
            Site::Dir(dir) => {
                dir.join("pkg/moat.js").is_file() && dir.join("pkg/moat_bg.wasm").is_file()
            }
        }
    }

    /// One line for `moat serve` and `moat doctor`.
    pub fn describe(&self) -> String {
        match self {
            Site::Assets(assets) if assets.files.is_empty() => {
                "this moat binary was built without the web app's hydration module".to_string()
            }
            Site::Assets(assets) => format!(
                "embedded hydration module {} ({} files, {} KB, gzip copies for {})",
                assets.output_name(),
                assets.files.len(),
                assets.files.iter().map(|f| f.body.len()).sum::<usize>() / 1024,
                assets.files.iter().filter(|f| f.gzip.is_some()).count()
            ),
            Site::Dir(dir) => format!("hydration module from the folder {}", dir.display()),
        }
    }
}

/// A set of files served from memory, and the hash their served names carry.
#[derive(Debug)]
pub struct SiteAssets {
    pub hash: String,
    pub files: Vec<EmbeddedFile>,
}

impl SiteAssets {
    pub fn embedded() -> SiteAssets {
        SiteAssets {
            hash: SITE_HASH.to_string(),
            files: SITE_FILES
                .iter()
                .map(|f| EmbeddedFile {
                    name: f.name,
                    body: f.body,
                    gzip: f.gzip,
                })
                .collect(),
        }
    }

    /// Leptos's output name: the page asks for `/pkg/{output_name}.js` and `/pkg/{output_name}_bg.wasm`.
    pub fn output_name(&self) -> String {
        if self.hash.is_empty() {
            "moat".to_string()
        } else {
            format!("moat-{}", self.hash)
        }
    }

    /// The name a file is served under: `moat.js` → `moat-HASH.js`, `moat_bg.wasm` →
    /// `moat-HASH_bg.wasm`, any other `NAME` → `HASH-NAME`.
    pub fn served_name(&self, name: &str) -> String {
        match name.strip_prefix("moat") {
            Some(rest) if rest.starts_with(['.', '_']) => format!("{}{rest}", self.output_name()),
            _ => format!("{}-{name}", self.hash),
        }
    }

    fn find(&self, served: &str) -> Option<&EmbeddedFile> {
        self.files
            .iter()
            .find(|f| self.served_name(f.name) == served)
    }
}

/// The router serving `assets` under `/pkg/`.
pub fn router(assets: Arc<SiteAssets>) -> axum::Router {
    axum::Router::new()
        .route("/pkg/{name}", axum::routing::get(serve_file))
        .with_state(assets)
}

/// One embedded file: gzipped when the browser accepts it and a copy exists, cached for a year
/// (the name changes with the content), `304 Not Modified` for a matching `If-None-Match`.
async fn serve_file(
    State(assets): State<Arc<SiteAssets>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(file) = assets.find(&name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = HeaderValue::from_str(&format!("\"{}-{}\"", assets.hash, file.name))
        .unwrap_or(HeaderValue::from_static("\"moat\""));
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match file.gzip.filter(|_| accepts_gzip(&headers)) {
            Some(gzip) => {
                let mut response = Body::from(gzip).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response
            }
            None => Body::from(file.body).into_response(),
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(file.name));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(header::ETAG, etag);
    if file.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a weight above zero.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                param
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn content_type(name: &str) -> HeaderValue {
    let ext = name.rsplit('.').next().unwrap_or("");
    HeaderValue::from_static(match ext {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> SiteAssets {
        SiteAssets {
            hash: "0123abcd".into(),
            files: vec![],
        }
    }

    #[test]
    fn served_names_carry_the_hash() {
        let a = assets();
        assert_eq!(a.output_name(), "moat-0123abcd");
        assert_eq!(a.served_name("moat.js"), "moat-0123abcd.js");
        assert_eq!(a.served_name("moat_bg.wasm"), "moat-0123abcd_bg.wasm");
        assert_eq!(a.served_name("moatish.txt"), "0123abcd-moatish.txt");
        assert_eq!(a.served_name("icon.svg"), "0123abcd-icon.svg");
    }

    #[test]
    fn gzip_is_accepted_only_when_listed_with_a_weight() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br, deflate"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
