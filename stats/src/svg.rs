//! Self-contained SVG charts of a leaderboard (no JavaScript): a forest plot of ratings with their
//! intervals and a heatmap of the pairwise win matrix. Model names are escaped, since they come
//! from user data.

use std::fmt::Write;

use crate::leaderboard::Leaderboard;
use crate::model::Interval;

/// Escapes text for SVG/XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => escaped.push('\u{fffd}'),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Shortens long names so labels fit; the full name stays in the `<title>` tooltip.
fn label(name: &str, limit: usize) -> String {
    if name.chars().count() <= limit {
        name.to_string()
    } else {
        let mut short: String = name.chars().take(limit.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

const FONT: &str =
    "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\" font-size=\"12\"";

/// A round step (1, 2 or 5 times a power of ten) giving about `ticks` ticks over `span`.
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(1e-9);
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction < 1.5 {
        1.0
    } else if fraction < 3.5 {
        2.0
    } else if fraction < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// Forest plot: one row per model (best first) with the rating as a dot and the interval as a bar
/// (bootstrap interval, else sandwich). Provisional models are drawn hollow.
pub fn forest_plot(board: &Leaderboard) -> String {
    let rows = board.models.len();
    let (left, right, top, row_height) = (200.0, 30.0, 40.0, 22.0);
    let plot_width = 480.0;
    let width = left + plot_width + right;
    let height = top + rows.max(1) as f64 * row_height + 40.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Ratings with {:.0}% intervals\" {FONT}>",
        board.options.confidence * 100.0
    );
    let _ = write!(
        svg,
        "<title>Ratings with {:.0}% intervals</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>",
        board.options.confidence * 100.0
    );
    if rows == 0 {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No votes yet</text></svg>",
            width / 2.0,
            height / 2.0
        );
        return svg;
    }
    let bounds = |i: usize| {
        let row = &board.models[i];
        row.ci
            .or(row.ci_sandwich)
            .map_or((row.rating, row.rating), |c| (c.lower, c.upper))
    };
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..rows {
        let (l, h) = bounds(i);
        low = low.min(l).min(board.models[i].rating);
        high = high.max(h).max(board.models[i].rating);
    }
    // Also catches NaN bounds.
    if (high - low).partial_cmp(&1e-9) != Some(std::cmp::Ordering::Greater) {
        low -= 10.0;
        high += 10.0;
    }
    let padding = (high - low) * 0.05;
    let (low, high) = (low - padding, high + padding);
    let x = |value: f64| left + (value - low) / (high - low) * plot_width;
    let step = nice_step(high - low, 6.0);
    let mut tick = (low / step).ceil() * step;
    let axis_bottom = top + rows as f64 * row_height;
    while tick <= high {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{axis_bottom}\" stroke=\"#e5e7eb\"/><text x=\"{0:.1}\" y=\"{1}\" text-anchor=\"middle\" fill=\"#4b5563\">{2}</text>",
            x(tick),
            axis_bottom + 16.0,
            tick.round()
        );
        tick += step;
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#111827\">Rating ({:.0}% interval)</text>",
        left + plot_width / 2.0,
        axis_bottom + 34.0,
        board.options.confidence * 100.0
    );
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"24\" font-weight=\"600\" fill=\"#111827\">Ratings, n = {} votes</text>",
        board.n_battles
    );
    for (i, row) in board.models.iter().enumerate() {
        let y = top + (i as f64 + 0.5) * row_height;
        let (l, h) = bounds(i);
        let name = escape(&row.model);
        let _ = write!(
            svg,
            "<g><title>{name}: {:.1} ({:.1} to {:.1}), {} votes{}</title>",
            row.rating,
            l,
            h,
            row.votes,
            if row.provisional { ", provisional" } else { "" }
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#111827\">{}. {}</text>",
            left - 10.0,
            y,
            row.rank,
            escape(&label(&row.model, 26))
        );
        let _ = write!(
            svg,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#2563eb\" stroke-width=\"2\"/>",
            x(l),
            x(h)
        );
        let fill = if row.provisional { "#fff" } else { "#2563eb" };
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4.5\" fill=\"{fill}\" stroke=\"#2563eb\" stroke-width=\"1.5\"/></g>",
            x(row.rating)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Colour for a win rate: blue above 50%, red below, white at 50%.
fn heat_colour(rate: f64) -> String {
    let t = ((rate - 0.5) * 2.0).clamp(-1.0, 1.0);
    let (r, g, b) = if t >= 0.0 {
        (
            255.0 - t * (255.0 - 37.0),
            255.0 - t * (255.0 - 99.0),
            255.0 - t * (255.0 - 235.0),
        )
    } else {
        let t = -t;
        (
            255.0 - t * (255.0 - 220.0),
            255.0 - t * (255.0 - 38.0),
            255.0 - t * (255.0 - 38.0),
        )
    };
    format!("rgb({},{},{})", r.round(), g.round(), b.round())
}

/// Heatmap of observed win rates of the row model against the column model (ties as half), in
/// leaderboard order; empty cells had no battles. Each cell's tooltip gives the counts, the
/// interval and the win rate the ratings predict.
pub fn win_matrix_heatmap(board: &Leaderboard) -> String {
    let matrix = &board.win_matrix;
    let n = matrix.models.len();
    let cell = if n > 40 { 14.0 } else { 32.0 };
    let (left, top) = (180.0, 150.0);
    // At least wide enough for the title line, however few the models.
    let width = (left + n.max(1) as f64 * cell + 20.0).max(420.0);
    let height = top + n.max(1) as f64 * cell + 20.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Win rate of row model against column model\" {FONT}>"
    );
    svg.push_str("<title>Win rate of row model against column model (ties as half)</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>");
    let _ = write!(
        svg,
        "<text x=\"10\" y=\"20\" font-weight=\"600\" fill=\"#111827\">Win rate of row against column (ties as half)</text>"
    );
    for (i, model) in matrix.models.iter().enumerate() {
        let name = escape(&label(model, 22));
        let y = top + (i as f64 + 0.5) * cell;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{y:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#111827\"><title>{}</title>{name}</text>",
            left - 6.0,
            escape(model)
        );
        let x = left + (i as f64 + 0.5) * cell;
        let _ = write!(
            svg,
            "<text transform=\"translate({x:.1},{}) rotate(-60)\" fill=\"#111827\"><title>{}</title>{name}</text>",
            top - 6.0,
            escape(model)
        );
    }
    for (r, row) in matrix.observed.iter().enumerate() {
        for (c, entry) in row.iter().enumerate() {
            let (x, y) = (left + c as f64 * cell, top + r as f64 * cell);
            match entry {
                Some(observed) => {
                    let _ = write!(
                        svg,
                        "<g><title>{} vs {}: {:.1}% ({:.1}–{:.1}%), {} wins, {} losses, {} ties; predicted {:.1}%</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"{}\" stroke=\"#fff\"/>",
                        escape(&matrix.models[r]),
                        escape(&matrix.models[c]),
                        observed.win_rate * 100.0,
                        observed.interval.lower * 100.0,
                        observed.interval.upper * 100.0,
                        observed.wins,
                        observed.losses,
                        observed.ties,
                        matrix.predicted[r][c] * 100.0,
                        heat_colour(observed.win_rate)
                    );
                    if cell >= 30.0 {
                        let _ = write!(
                            svg,
                            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"middle\" font-size=\"10\" fill=\"#111827\">{:.0}</text>",
                            x + cell / 2.0,
                            y + cell / 2.0,
                            observed.win_rate * 100.0
                        );
                    }
                    svg.push_str("</g>");
                }
                None => {
                    let _ = write!(
                        svg,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"#f3f4f6\" stroke=\"#fff\"/>"
                    );
                }
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

const LINE_COLOURS: [&str; 8] = [
    "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563",
];

/// Ratings over time: one line per model (the `limit` best at the last checkpoint), x = votes
/// counted, with each model's interval as a faint band. Names are escaped.
pub fn history_plot(history: &crate::history::History, limit: usize) -> String {
    let (left, right, top, bottom) = (60.0, 180.0, 40.0, 50.0);
    let (plot_width, plot_height) = (520.0, 300.0);
    let (width, height) = (left + plot_width + right, top + plot_height + bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Ratings as votes arrived\" {FONT}><title>Ratings as votes arrived</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
    );
    let Some(last) = history.points.last() else {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">No votes yet</text></svg>",
            width / 2.0,
            height / 2.0
        );
        return svg;
    };
    let shown: Vec<&str> = last
        .models
        .iter()
        .take(limit)
        .map(|m| m.model.as_str())
        .collect();
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for point in &history.points {
        for m in point
            .models
            .iter()
            .filter(|m| shown.contains(&m.model.as_str()))
        {
            let (l, h) = m.ci.map_or((m.rating, m.rating), |c| (c.lower, c.upper));
            low = low.min(l).min(m.rating);
            high = high.max(h).max(m.rating);
        }
    }
    if (high - low).partial_cmp(&1e-9) != Some(std::cmp::Ordering::Greater) {
        low -= 10.0;
        high += 10.0;
    }
    let max_votes = last.votes.max(1) as f64;
    let x = |votes: u64| left + votes as f64 / max_votes * plot_width;
    let y = |rating: f64| top + (high - rating) / (high - low) * plot_height;
    let step = nice_step(high - low, 6.0);
    let mut tick = (low / step).ceil() * step;
    while tick <= high {
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#e5e7eb\"/><text x=\"{2}\" y=\"{1:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"#4b5563\">{3}</text>",
            left + plot_width,
            y(tick),
            left - 6.0,
            tick.round()
        );
        tick += step;
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#111827\">Votes counted ({} checkpoints, {})</text><text x=\"{left}\" y=\"24\" font-weight=\"600\" fill=\"#111827\">Ratings as votes arrived</text>",
        left + plot_width / 2.0,
        top + plot_height + 34.0,
        history.points.len(),
        match history.step {
            crate::history::HistoryStep::Day => "daily".to_string(),
            crate::history::HistoryStep::Votes(n) => format!("every {n} votes"),
        }
    );
    for (k, model) in shown.iter().enumerate() {
        let colour = LINE_COLOURS[k % LINE_COLOURS.len()];
        let series: Vec<(u64, f64, Option<Interval>)> = history
            .points
            .iter()
            .filter_map(|p| {
                p.models
                    .iter()
                    .find(|m| m.model == *model)
                    .map(|m| (p.votes, m.rating, m.ci))
            })
            .collect();
        let band_top: Vec<String> = series
            .iter()
            .filter_map(|(v, _, ci)| ci.map(|c| format!("{:.1},{:.1}", x(*v), y(c.upper))))
            .collect();
        let band_bottom: Vec<String> = series
            .iter()
            .rev()
            .filter_map(|(v, _, ci)| ci.map(|c| format!("{:.1},{:.1}", x(*v), y(c.lower))))
            .collect();
        let line: Vec<String> = series
            .iter()
            .map(|(v, r, _)| format!("{:.1},{:.1}", x(*v), y(*r)))
            .collect();
        let name = escape(model);
        let _ = write!(svg, "<g><title>{name}</title>");
        if band_top.len() > 1 {
            let _ = write!(
                svg,
                "<polygon points=\"{} {}\" fill=\"{colour}\" fill-opacity=\"0.08\" stroke=\"none\"/>",
                band_top.join(" "),
                band_bottom.join(" ")
            );
        }
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            line.join(" ")
        );
        if let Some((v, r, _)) = series.last() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" dominant-baseline=\"middle\" fill=\"{colour}\">{}</text>",
                x(*v) + 6.0,
                y(*r),
                escape(&label(model, 22))
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderboard::{leaderboard, LeaderboardOptions};
    use crate::model::{Battle, Outcome};

    fn board() -> Leaderboard {
        let evil = "<script>alert('x')</script> & \"co\"";
        let mut battles = Vec::new();
        for i in 0..30 {
            let outcome = if i % 3 == 0 {
                Outcome::BWins
            } else {
                Outcome::AWins
            };
            battles.push(Battle::new(evil, "plain", outcome));
            battles.push(Battle::new("plain", "third", Outcome::Tie));
        }
        leaderboard(
            &battles,
            &LeaderboardOptions {
                bootstrap_rounds: 50,
                ..LeaderboardOptions::default()
            },
        )
    }

    #[test]
    fn model_names_are_escaped() {
        let board = board();
        for svg in [forest_plot(&board), win_matrix_heatmap(&board)] {
            assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
            assert!(svg.ends_with("</svg>"));
            assert!(!svg.contains("<script"), "{svg}");
            assert!(svg
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;"));
            assert_eq!(svg.matches("<svg").count(), 1);
        }
    }

    #[test]
    fn empty_leaderboard_still_renders() {
        let board = leaderboard(&[], &LeaderboardOptions::default());
        assert!(forest_plot(&board).contains("No votes yet"));
        assert!(win_matrix_heatmap(&board).ends_with("</svg>"));
    }
}
