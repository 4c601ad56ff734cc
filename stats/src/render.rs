//! Plain-text table and CSV renderings of a leaderboard, for the CLI.

use std::fmt::Write;

use crate::leaderboard::Leaderboard;

/// A fixed-width text table, best model first, followed by the method.
pub fn render_table(board: &Leaderboard) -> String {
    let level = format!("{:.0}% CI", board.options.confidence * 100.0);
    let name_width = board
        .models
        .iter()
        .map(|m| m.model.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 48);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:>4}  {:<name_width$}  {:>7}  {:>17}  {:>7}  {:>8}  {:>7}",
        "Rank", "UB", "Model", "Rating", level, "Votes", "Win rate", "Elo"
    );
    for row in &board.models {
        let interval = row.ci.or(row.ci_sandwich).map_or_else(
            || "-".to_string(),
            |c| format!("[{:.1}, {:.1}]", c.lower, c.upper),
        );
        let mut name: String = row.model.chars().take(name_width).collect();
        // Control characters would break the table (and could drive the terminal).
        name = name
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let _ = writeln!(
            out,
            "{:>4} {:>4}  {:<name_width$}  {:>7.1}  {:>17}  {:>7}  {:>7.1}%  {:>7}{}",
            row.rank,
            row.rank_upper_bound,
            name,
            row.rating,
            interval,
            row.votes,
            row.win_rate * 100.0,
            row.online_elo
                .map_or_else(|| "-".to_string(), |e| format!("{e:.0}")),
            if row.provisional { "  provisional" } else { "" }
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} battles, {} models. UB = rank upper bound. {}",
        board.n_battles,
        board.models.len(),
        board.method
    );
    out
}

/// One CSV field: quoted when needed, and with a leading `'` when it would otherwise start with a
/// spreadsheet formula character (model names are user data).
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(String::new, |v| format!("{v:.4}"))
}

/// CSV with a header row, one row per model, best first.
pub fn to_csv(board: &Leaderboard) -> String {
    let mut out = String::from(
        "rank,rank_upper_bound,model,rating,ci_lower,ci_upper,sandwich_lower,sandwich_upper,standard_error,\
         votes,wins,losses,ties,win_rate,provisional,online_elo\n",
    );
    for row in &board.models {
        let _ = writeln!(
            out,
            "{},{},{},{:.4},{},{},{},{},{},{},{},{},{},{:.6},{},{}",
            row.rank,
            row.rank_upper_bound,
            csv_field(&row.model),
            row.rating,
            number(row.ci.map(|c| c.lower)),
            number(row.ci.map(|c| c.upper)),
            number(row.ci_sandwich.map(|c| c.lower)),
            number(row.ci_sandwich.map(|c| c.upper)),
            number(row.standard_error),
            row.votes,
            row.wins,
            row.losses,
            row.ties,
            row.win_rate,
            row.provisional,
            number(row.online_elo),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderboard::{leaderboard, LeaderboardOptions};
    use crate::model::{Battle, Outcome};

    #[test]
    fn table_and_csv_list_every_model() {
        let mut battles = Vec::new();
        for i in 0..40 {
            let outcome = if i % 4 == 0 {
                Outcome::BWins
            } else {
                Outcome::AWins
            };
            battles.push(Battle::new("strong, \"quoted\"", "=weak", outcome));
        }
        let board = leaderboard(
            &battles,
            &LeaderboardOptions {
                bootstrap_rounds: 20,
                ..LeaderboardOptions::default()
            },
        );
        let table = render_table(&board);
        assert!(table.lines().nth(1).unwrap().contains("strong, \"quoted\""));
        assert!(table.contains("provisional"));
        let csv = to_csv(&board);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("1,1,\"strong, \"\"quoted\"\"\","),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("2,") && lines[2].contains(",'=weak,"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[1].split(',').count(), lines[0].split(',').count() + 1);
    }
}
