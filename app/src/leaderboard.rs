//! A study's leaderboard: ratings with intervals, a forest plot and a win-matrix heatmap, and the
//! study's questions (parity, distinguishability, bias, agreement) in plain words.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::get_leaderboard;
use crate::error_text;
use crate::wire::{LeaderboardView, ParityRow};

#[component]
pub fn LeaderboardPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    // `?drop_flagged=true` leaves out the raters the rigging tests flag; a plain link switches.
    let drop_flagged = move || query.read().get("drop_flagged").as_deref() == Some("true");
    // `?category=NAME` restricts every figure to one category; `?style=true` adds the
    // style-controlled table beside the plain one. The selector below is a plain GET form.
    let category = move || query.read().get("category").filter(|c| !c.is_empty());
    let style_control = move || query.read().get("style").as_deref() == Some("true");
    let board = Resource::new(
        move || (slug(), drop_flagged(), category(), style_control()),
        |(slug, drop_flagged, category, style_control)| {
            get_leaderboard(slug, drop_flagged, category, style_control)
        },
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
    let selector = category_selector(&view);
    let ranks = category_ranks_table(&view);
    let style = style_table(&view);
    let parity = parity_table(&view.parity_rows);
    let deduplication = view
        .deduplication
        .clone()
        .map(|text| view! { <p class="hint" id="deduplication">{text}</p> });
    let sections = view
        .sections
        .iter()
        .map(|section| view! { <section class="finding"><h2>{section.title.clone()}</h2><p>{section.text.clone()}</p></section> })
        .collect_view();
    view! {
        <p><a href=format!("/admin/studies/{}", view.slug)>"← study"</a></p>
        <h1>{format!("Leaderboard: {}", view.title)}{view.category.as_ref().map(|c| format!(" — {c}"))}</h1>
        <p class="hint">{format!("{} votes. {}", view.votes, view.method)}</p>
        {deduplication}
        {selector}
        {match (view.flagged_raters, view.flagged_raters_left_out) {
            (0, false) => None,
            (n, false) => Some(view! {
                <p class="hint">{format!("{n} flagged rater{} counted. ", if n == 1 { "" } else { "s" })}
                    <a id="drop-flagged" href=page_link(&view, true)>"Leave out flagged raters"</a>
                </p>
            }.into_any()),
            (n, true) => Some(view! {
                <p class="hint">{format!("{n} flagged rater{} left out. ", if n == 1 { "" } else { "s" })}
                    <a id="count-flagged" href=page_link(&view, false)>"Count all raters"</a>
                </p>
            }.into_any()),
        }}
        <table class="leaderboard" id="leaderboard">
            <thead><tr><th>"Rank (UB)"</th><th>"Model"</th><th>"Openness"</th><th>"Rating"</th><th>"95% CI"</th><th>"Votes"</th><th>"Win rate"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {style}
        <div class="plots">
            <figure inner_html=view.forest_svg.clone()></figure>
            <figure inner_html=view.heatmap_svg.clone()></figure>
        </div>
        {parity}
        {ranks}
        {view.history_summary.clone().map(|summary| view! {
            <section class="finding" id="history">
                <h2>"Ratings as votes arrived"</h2>
                {view.history_svg.clone().map(|svg| view! { <figure inner_html=svg></figure> })}
                <p>{summary}</p>
            </section>
        })}
        {sections}
    }
}

/// This page with flagged raters left out or counted, keeping the category and the style switch.
fn page_link(view: &LeaderboardView, drop_flagged: bool) -> String {
    let mut query = Vec::new();
    if drop_flagged {
        query.push("drop_flagged=true".to_string());
    }
    if let Some(category) = &view.category {
        let encoded: String = category
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        query.push(format!("category={encoded}"));
    }
    if view.style_control {
        query.push("style=true".to_string());
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!("/admin/studies/{}/leaderboard{query}", view.slug)
}

/// A GET form: the category and the style-control switch (works without JavaScript).
fn category_selector(view: &LeaderboardView) -> impl IntoView {
    let current = view.category.clone().unwrap_or_default();
    let options = view
        .categories
        .iter()
        .map(|c| {
            let selected = c.name == current;
            view! { <option value=c.name.clone() selected=selected>{format!("{} ({} votes)", c.name, c.votes)}</option> }
        })
        .collect_view();
    view! {
        <form method="get" class="leaderboard-options" id="leaderboard-options">
            <label>"Category "
                <select name="category" id="category">
                    <option value="" selected=current.is_empty()>"All votes"</option>
                    {options}
                </select>
            </label>
            <label><input type="checkbox" name="style" value="true" id="style-control" checked=view.style_control/>" Style control (length and markdown held equal)"</label>
            {view.flagged_raters_left_out.then(|| view! { <input type="hidden" name="drop_flagged" value="true"/> })}
            <button type="submit">"Show"</button>
        </form>
    }
}

fn rank_text(rank: Option<u32>) -> String {
    rank.map_or_else(|| "—".to_string(), |r| r.to_string())
}

/// Each model's rank per category, like LMArena's rank-by-category view.
fn category_ranks_table(view: &LeaderboardView) -> Option<impl IntoView> {
    let ranks = view.category_ranks.clone()?;
    let head = ranks
        .categories
        .iter()
        .map(|c| view! { <th>{c.clone()}</th> })
        .collect_view();
    let rows = ranks
        .rows
        .iter()
        .map(|row| {
            let cells = row
                .ranks
                .iter()
                .map(|r| view! { <td class="num">{rank_text(*r)}</td> })
                .collect_view();
            view! { <tr><td>{row.model.clone()}</td><td class="num">{row.overall}</td>{cells}</tr> }
        })
        .collect_view();
    Some(view! {
        <section class="finding">
            <h2>"Rank by category"</h2>
            <p class="hint">"Rank (upper bound) of each model in each category's own leaderboard; — where it has no votes."</p>
            <table class="leaderboard" id="category-ranks">
                <thead><tr><th>"Model"</th><th>"Overall"</th>{head}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    })
}

/// The plain and the style-controlled ranks side by side, when style control is switched on.
fn style_table(view: &LeaderboardView) -> Option<impl IntoView> {
    if !view.style_control {
        return None;
    }
    if view.style_rows.is_empty() {
        return Some(view! { <p class="hint" id="style-table">"No votes with both responses' texts: style control needs them."</p> }.into_any());
    }
    let rows = view
        .style_rows
        .iter()
        .map(|row| {
            let change = match row.rank_change {
                0 => "=".to_string(),
                c if c > 0 => format!("↑{c}"),
                c => format!("↓{}", -c),
            };
            view! {
                <tr>
                    <td>{row.model.clone()}</td>
                    <td class="num">{row.rank}</td>
                    <td class="num">{format!("{:.0}", row.rating)}</td>
                    <td class="num">{row.style_rank}</td>
                    <td class="num">{format!("{:.0}", row.style_rating)}</td>
                    <td class="num">{format_interval(row.style_lower, row.style_upper)}</td>
                    <td class="num">{change}</td>
                </tr>
            }
        })
        .collect_view();
    Some(view! {
        <section class="finding">
            <h2>"With style control"</h2>
            <table class="leaderboard" id="style-table">
                <thead><tr><th>"Model"</th><th>"Rank"</th><th>"Rating"</th><th>"Rank, style controlled"</th><th>"Rating, style controlled"</th><th>"95% CI"</th><th>"Rank change"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    }.into_any())
}

fn verdict_text(verdict: &str) -> &'static str {
    match verdict {
        "equivalent" => "parity shown",
        "a_better" => "open ahead",
        "b_better" => "closed ahead",
        _ => "inconclusive",
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// Parity of each open model against each closed model, then pooled, raw and at equal style.
fn parity_table(rows: &[ParityRow]) -> Option<impl IntoView> {
    if rows.is_empty() {
        return None;
    }
    let body = rows
        .iter()
        .map(|row| {
            let name = if row.pooled {
                format!("{} vs {} (pooled)", row.model_a, row.model_b)
            } else {
                format!("{} vs {}", row.model_a, row.model_b)
            };
            view! {
                <tr title=row.summary.clone()>
                    <td>{name}</td>
                    <td class="num">{row.votes}</td>
                    <td class="num">{percent(row.win_rate)}</td>
                    <td class="num">{match (row.lower, row.upper) {
                        (Some(l), Some(u)) => format!("{:.1} – {:.1}", l * 100.0, u * 100.0),
                        _ => "—".to_string(),
                    }}</td>
                    <td>{verdict_text(&row.verdict)}</td>
                    <td class="num">{row.tost_p_value.map_or_else(|| "—".to_string(), |p| format!("{p:.3}"))}</td>
                    <td class="num">{row.votes_needed.map_or_else(|| "—".to_string(), |v| v.to_string())}</td>
                    <td class="num">{percent(row.style_win_rate)}</td>
                    <td>{row.style_verdict.as_deref().map_or("—", verdict_text)}</td>
                    <td class="num">{row.style_votes_needed.map_or_else(|| "—".to_string(), |v| v.to_string())}</td>
                </tr>
            }
        })
        .collect_view();
    let summaries = rows
        .iter()
        .map(|row| {
            view! {
                <li>{row.summary.clone()}{row.style_summary.clone().map(|s| format!(" {s}"))}</li>
            }
        })
        .collect_view();
    Some(view! {
        <section class="finding">
            <h2>"Parity of each open model against each closed model"</h2>
            <p class="hint">"Win rate of the open model with ties as half, its 95% Wilson interval, the TOST equivalence test against 50% ± 5 points, and the votes that would decide an inconclusive comparison at 80% power; then the same with style held equal."</p>
            <table class="leaderboard" id="parity-pairs">
                <thead><tr><th>"Open vs closed"</th><th>"Votes"</th><th>"Win rate"</th><th>"95% CI"</th><th>"Verdict"</th><th>"TOST p"</th><th>"Votes needed"</th><th>"Win rate, style controlled"</th><th>"Verdict, style controlled"</th><th>"Votes needed"</th></tr></thead>
                <tbody>{body}</tbody>
            </table>
            <ul class="hint">{summaries}</ul>
        </section>
    })
}
