//! Moat's web app: the rater's study pages and the admin pages, rendered on the server (feature
//! `ssr`) and hydrated in the browser (feature `hydrate`). Every page works as plain HTML forms with
//! JavaScript off; hydration adds in-place updates and keyboard shortcuts.

pub mod admin;
pub mod api;
#[cfg(feature = "ssr")]
pub mod backend;
pub mod leaderboard;
pub mod rater;
pub mod settings;
pub mod wire;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

const STYLE: &str = include_str!("../style/moat.css");

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // The nonce lets the Content Security Policy allow this style and no other inline one.
                <style nonce=leptos::nonce::use_nonce()>{STYLE}</style>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Marks the page once the wasm has taken over, so tests (and curious people) can tell.
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "1");
        }
    });
    view! {
        <Title text="Moat"/>
        <Router>
            <main>
                <Routes fallback=|| view! { <p class="error">"Page not found."</p> }>
                    <Route path=path!("") view=Home/>
                    <Route path=path!("/s/:slug") view=rater::StudyEntryPage ssr=SsrMode::Async/>
                    <Route path=path!("/s/:slug/compare") view=rater::ComparePage ssr=SsrMode::Async/>
                    <Route path=path!("/admin") view=admin::AdminHome ssr=SsrMode::Async/>
                    <Route path=path!("/admin/studies/:slug") view=admin::AdminStudy ssr=SsrMode::Async/>
                    <Route path=path!("/admin/studies/:slug/leaderboard") view=leaderboard::LeaderboardPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}

#[component]
fn Home() -> impl IntoView {
    view! {
        <h1>"Moat"</h1>
        <p>"Blind human-preference studies of language models."</p>
        <p>"Raters join a study through the link its researcher sends them. Researchers: "
            <a href="/admin">"admin"</a>"."</p>
    }
}

/// Renders a server-function error for a person: its message without the transport prefix.
pub fn error_text(error: &leptos::server_fn::ServerFnError) -> String {
    let text = error.to_string();
    text.strip_prefix("error running server function: ")
        .unwrap_or(&text)
        .to_string()
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM` in UTC (the same on the server and in the browser).
pub fn utc_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}
