//! A study's leaderboard: ratings with intervals, a forest plot and a win-matrix heatmap, and the
//! study's questions (parity, distinguishability, bias, agreement) in plain words.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::get_leaderboard;
use crate::error_text;
use crate::wire::LeaderboardView;

#[component]
pub fn LeaderboardPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    // `?drop_flagged=true` leaves out the raters the rigging tests flag; a plain link switches.
    let drop_flagged = move || query.read().get("drop_flagged").as_deref() == Some("true");
    let board = Resource::new(
        move || (slug(), drop_flagged()),
        |(slug, drop_flagged)| get_leaderboard(slug, drop_flagged),
    );
    view! {
        <Suspense fallback=|| view! { <p>"Computing…"</p> }>
            {move || Suspend::new(async move {
                match board.await {
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> <p><a href="/admin">"Log in"</a></p> }.into_any(),
                    Ok(view) => view! { <LeaderboardBody view=view/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

fn format_interval(lower: Option<f64>, upper: Option<f64>) -> String {
    match (lower, upper) {
        (Some(lower), Some(upper)) => format!("{lower:.0} – {upper:.0}"),
        _ => "—".to_string(),
    }
}

#[component]
fn LeaderboardBody(view: LeaderboardView) -> impl IntoView {
    let rows = view
        .rows
        .iter()
        .map(|row| {
            view! {
                <tr>
                    <td class="num">{row.rank_upper_bound}</td>
                    <td>{row.model.clone()}{row.provisional.then_some(" (provisional)")}</td>
                    <td>{row.openness.clone()}</td>
                    <td class="num">{format!("{:.0}", row.rating)}</td>
                    <td class="num">{format_interval(row.lower, row.upper)}</td>
                    <td class="num">{row.votes}</td>
                    <td class="num">{format!("{:.1}%", row.win_rate * 100.0)}</td>
                </tr>
            }
        })
        .collect_view();
    let sections = view
        .sections
        .iter()
        .map(|section| view! { <section class="finding"><h2>{section.title.clone()}</h2><p>{section.text.clone()}</p></section> })
        .collect_view();
    view! {
        <p><a href=format!("/admin/studies/{}", view.slug)>"← study"</a></p>
        <h1>{format!("Leaderboard: {}", view.title)}</h1>
        <p class="hint">{format!("{} votes. {}", view.votes, view.method)}</p>
        {match (view.flagged_raters, view.flagged_raters_left_out) {
            (0, false) => None,
            (n, false) => Some(view! {
                <p class="hint">{format!("{n} flagged rater{} counted. ", if n == 1 { "" } else { "s" })}
                    <a id="drop-flagged" href=format!("/admin/studies/{}/leaderboard?drop_flagged=true", view.slug)>"Leave out flagged raters"</a>
                </p>
            }.into_any()),
            (n, true) => Some(view! {
                <p class="hint">{format!("{n} flagged rater{} left out. ", if n == 1 { "" } else { "s" })}
                    <a id="count-flagged" href=format!("/admin/studies/{}/leaderboard", view.slug)>"Count all raters"</a>
                </p>
            }.into_any()),
        }}
        <table class="leaderboard" id="leaderboard">
            <thead><tr><th>"Rank (UB)"</th><th>"Model"</th><th>"Openness"</th><th>"Rating"</th><th>"95% CI"</th><th>"Votes"</th><th>"Win rate"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <div class="plots">
            <figure inner_html=view.forest_svg.clone()></figure>
            <figure inner_html=view.heatmap_svg.clone()></figure>
        </div>
        {sections}
    }
}
