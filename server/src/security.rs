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
//! - **Login rate limit**: a request that presents admin credentials (a bearer token, the admin
//!   cookie, or the login form) and is answered 401 counts as a failure of its peer address; after
//!   [`MAX_FAILURES`] failures within [`FAILURE_WINDOW`], every credentialed request from that
//!   address gets 429 until the window has passed, the right token included (else the 429 would
//!   tell a guesser which guess was right). The address is the peer's, or behind a reverse proxy
//!   trusted with `--trust-proxy` the one it appended to `X-Forwarded-For` (as for raters); behind
//!   an untrusted proxy every client shares the proxy's address, so the limit is then global and a
//!   guesser can lock the admin out until the window passes.
//!
//! The nonce is minted here and handed to Leptos through the request's extensions
//! ([`provide_request_nonce`], called in the context of every rendered page), so the header and the
//! page agree. A reverse proxy must pass the original `Host` header through (nginx:
//! `proxy_set_header Host $host;`), or every browser form post is refused.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
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

/// Failed logins an address may make within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES: usize = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The middleware's state: failed logins per client address.
pub struct Guard {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// Names a request's client as the rater path does: the peer, or behind a reverse proxy
    /// trusted with `--trust-proxy`, the address it forwarded. `None`: the peer.
    service: Option<Arc<crate::service::AppService>>,
}

impl Guard {
    pub fn new(service: Arc<crate::service::AppService>) -> Arc<Guard> {
        Arc::new(Guard {
            service: Some(service),
            ..Guard::unshared(MAX_FAILURES, FAILURE_WINDOW)
        })
    }

    /// A guard of its own limits that counts failures by peer address (for the tests of the
    /// window).
    #[cfg(test)]
    fn with_limit(max_failures: usize, window: Duration) -> Arc<Guard> {
        Arc::new(Guard::unshared(max_failures, window))
    }

    fn unshared(max_failures: usize, window: Duration) -> Guard {
        Guard {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
            service: None,
        }
    }

    /// The address whose failures a request counts against.
    fn client(&self, request: &Request) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        match &self.service {
            Some(service) => service.client_address(request.headers(), peer),
            None => peer,
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `ip` must still wait, if it has used up its failures.
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut failures = self.failures();
        let times = failures.get_mut(&ip)?;
        while times
            .front()
            .is_some_and(|&at| now.duration_since(at) >= self.window)
        {
            times.pop_front();
        }
        if times.is_empty() {
            failures.remove(&ip);
            return None;
        }
        (times.len() >= self.max_failures).then(|| {
            let oldest = times[times.len() - self.max_failures];
            self.window.saturating_sub(now.duration_since(oldest))
        })
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures();
        // Bounded memory: forget addresses whose failures have all expired once the map grows.
        if failures.len() >= 10_000 {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|&at| now.duration_since(at) < window)
            });
        }
        let times = failures.entry(ip).or_default();
        times.push_back(now);
        while times.len() > self.max_failures {
            times.pop_front();
        }
    }
}

/// Whether the request tries admin (or API key) credentials: a bearer token, the admin cookie, or
/// the login form.
fn presents_credentials(request: &Request) -> bool {
    request.headers().contains_key(header::AUTHORIZATION)
        || moat_app::api::ssr::cookie_value(request.headers(), moat_app::api::ADMIN_COOKIE)
            .is_some()
        || request.uri().path() == "/rpc/admin_login"
}

fn refuse(status: StatusCode, reason: String) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

/// The middleware: refuses cross-origin state changes and addresses that failed to log in too
/// often, mints the response's nonce, and adds the security headers (to refusals too).
pub async fn harden(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let nonce: Arc<str> = crate::domain::random_hex(16).into();
    let peer = guard.client(&request);
    let credentialed = presents_credentials(&request);
    let waiting = match peer {
        Some(ip) if credentialed => guard.retry_after(ip, Instant::now()),
        _ => None,
    };
    let mut response = if let Err(reason) = check_origin(request.method(), request.headers()) {
        tracing::info!(%reason, path = %request.uri().path(), "cross-origin request refused");
        refuse(StatusCode::FORBIDDEN, reason)
    } else if let Some(wait) = waiting {
        let seconds = wait.as_secs().max(1);
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins from this address; try again in {seconds} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    } else {
        request.extensions_mut().insert(CspNonce(nonce.clone()));
        let response = next.run(request).await;
        if let (Some(ip), true) = (peer, credentialed) {
            if response.status() == StatusCode::UNAUTHORIZED {
                guard.record_failure(ip, Instant::now());
            }
        }
        response
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
    fn failures_past_the_limit_wait_out_the_window() {
        let guard = Guard::with_limit(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(guard.retry_after(ip, start), None, "after {i} failures");
            guard.record_failure(ip, start + Duration::from_secs(i * 10));
        }
        // Three failures at 0 s, 10 s and 20 s: refused until the first is a minute old.
        let at_25 = start + Duration::from_secs(25);
        assert_eq!(guard.retry_after(ip, at_25), Some(Duration::from_secs(35)));
        assert_eq!(guard.retry_after(other, at_25), None, "per address");
        assert_eq!(
            guard.retry_after(ip, start + Duration::from_secs(60)),
            None,
            "the oldest failure has expired"
        );
        guard.record_failure(ip, start + Duration::from_secs(61));
        assert_eq!(
            guard.retry_after(ip, start + Duration::from_secs(62)),
            Some(Duration::from_secs(8)),
            "failures at 10, 20 and 61 s: free again at 70 s"
        );
        assert_eq!(
            guard.retry_after(ip, start + Duration::from_secs(200)),
            None
        );
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
