//! Hardening every request and response gets, as one axum middleware ([`harden`]) around the whole
//! router:
//!
//! - **Origin check** (the CSRF defence): a state-changing request (POST, PUT, DELETE, PATCH) must
//!   come from this site. Browsers send `Origin` on every such request (and `Referer` under our
//!   `same-origin` referrer policy); its host must be the request's `Host`. A request with neither
//!   header is a script's, allowed only when it authenticates with `Authorization: Bearer`, which a
//!   browser never attaches by itself; one that would rely on a cookie is refused. SameSite=Lax
//!   cookies alone would still let a sibling subdomain or a top-level form post through.
//! - **Security headers** on every response: `nosniff`, `Referrer-Policy: same-origin`,
//!   `X-Frame-Options: DENY` and a Content Security Policy that allows only this site's scripts and
//!   styles plus the inline ones carrying this response's nonce (Leptos' hydration script and
//!   resource data, the shell's `<style>`), never `'unsafe-inline'`. `'wasm-unsafe-eval'` lets the
//!   hydration module compile its wasm; it does not allow `eval`.
//!
//! The nonce is minted here and handed to Leptos through the request's extensions
//! ([`provide_request_nonce`], called in the context of every rendered page), so the header and the
//! page agree. A reverse proxy must pass the original `Host` header through (nginx:
//! `proxy_set_header Host $host;`), or every browser form post is refused.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The CSP nonce of one response, in the request's extensions.
#[derive(Clone, Debug)]
pub struct CspNonce(pub Arc<str>);

/// The Content Security Policy of a response whose inline scripts and styles carry `nonce`.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )
}

/// The middleware: refuses cross-origin state changes, mints the response's nonce and adds the
/// security headers (to refusals too).
pub async fn harden(mut request: Request, next: Next) -> Response {
    let nonce: Arc<str> = crate::domain::random_hex(16).into();
    let mut response = match check_origin(request.method(), request.headers()) {
        Ok(()) => {
            request.extensions_mut().insert(CspNonce(nonce.clone()));
            next.run(request).await
        }
        Err(reason) => {
            tracing::info!(%reason, path = %request.uri().path(), "cross-origin request refused");
            (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({ "error": reason })),
            )
                .into_response()
        }
    };
    add_security_headers(response.headers_mut(), &nonce);
    response
}

/// Makes the nonce of this request's response the one Leptos renders into inline scripts and
/// styles (Leptos mints its own otherwise, which the header would not name). Call it in the
/// context Leptos builds for a page or a server function.
pub fn provide_request_nonce() {
    use leptos::prelude::{provide_context, use_context};
    let nonce = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<CspNonce>().cloned());
    if let Some(CspNonce(nonce)) = nonce {
        provide_context(leptos::nonce::Nonce::from_value(nonce));
    }
}

fn add_security_headers(headers: &mut HeaderMap, nonce: &str) {
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(nonce)) {
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(policy);
    }
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    )
}

/// Whether a request may go on, by its method and headers alone; the error says why not.
pub fn check_origin(method: &Method, headers: &HeaderMap) -> Result<(), String> {
    if !is_state_changing(method) {
        return Ok(());
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).map(str::to_ascii_lowercase);
    let source = text(header::ORIGIN)
        .map(|origin| ("Origin", origin))
        .or_else(|| text(header::REFERER).map(|referer| ("Referer", referer)));
    match source {
        Some((name, value)) => {
            let same = host
                .as_deref()
                .is_some_and(|host| same_site_authority(value, host));
            if same {
                Ok(())
            } else {
                Err(format!(
                    "cross-origin request refused: {name} {value:?} is not this site ({})",
                    host.as_deref().unwrap_or("no Host header")
                ))
            }
        }
        None if bearer(headers) => Ok(()),
        None => Err(
            "request refused: a browser request must carry Origin or Referer; \
             scripts authenticate with Authorization: Bearer TOKEN"
                .into(),
        ),
    }
}

fn bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
}

/// Whether `url` (an `Origin` or `Referer` value) names the authority `host` (a `Host` header),
/// where an absent port is the scheme's default.
fn same_site_authority(url: &str, host: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false; // `Origin: null` and anything else that is not a URL
    };
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return false;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_string();
    strip(&authority) == strip(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn origin_must_name_the_host() {
        let post = Method::POST;
        let host = ("host", "moat.example:8080");
        let allowed = [
            vec![host, ("origin", "http://moat.example:8080")],
            vec![host, ("origin", "HTTPS://MOAT.example:8080")],
            vec![host, ("referer", "http://moat.example:8080/admin?x=1")],
            vec![
                ("host", "moat.example"),
                ("origin", "https://moat.example:443"),
            ],
            vec![
                ("host", "moat.example:80"),
                ("origin", "http://moat.example"),
            ],
            vec![host, ("authorization", "Bearer abc")],
        ];
        for case in allowed {
            assert_eq!(check_origin(&post, &headers(&case)), Ok(()), "{case:?}");
        }
        let refused = [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://moat.example:8081")],
            vec![host, ("origin", "http://moat.example:8080.evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://evil.example@moat.example:8080")],
            vec![host, ("referer", "http://evil.example/moat.example:8080")],
            vec![host, ("cookie", "moat_admin=t")],
            vec![host],
            vec![("origin", "http://moat.example:8080")],
            // A bearer token does not excuse a foreign origin.
            vec![
                host,
                ("origin", "http://evil.example"),
                ("authorization", "Bearer abc"),
            ],
        ];
        for case in refused {
            assert!(check_origin(&post, &headers(&case)).is_err(), "{case:?}");
        }
        for method in [Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(check_origin(&method, &headers(&[host])).is_err());
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(check_origin(&method, &headers(&[host])), Ok(()));
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script_without_the_nonce() {
        let policy = content_security_policy("abc123");
        assert!(policy.contains("script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval';"));
        assert!(!policy.contains("unsafe-inline"));
        for directive in [
            "default-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "object-src 'none'",
        ] {
            assert!(policy.contains(directive), "{directive}");
        }
    }
}
