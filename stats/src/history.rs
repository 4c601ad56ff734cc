//! History: ratings and intervals recomputed as votes arrive (by day or every N votes), and how
//! stable the top of the ranking has been ("how often has the top-3 changed in the last N votes").
//!
//! Counts are accumulated once in vote order, so the cost is one pass over the votes plus one fit
//! on pair counts per checkpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregatedBattles, PairCounts};
use crate::leaderboard::{leaderboard_from_counts, LeaderboardOptions};
use crate::model::{Battle, Interval, Outcome};

/// When the ratings are recomputed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryStep {
    /// At the end of every UTC day that has votes (needs a time for every vote).
    Day,
    /// After every this many votes, and after the last.
    Votes(u64),
}

impl HistoryStep {
    /// Parses `day` or a number of votes.
    pub fn parse(text: &str) -> Result<HistoryStep, String> {
        match text.trim() {
            "day" | "daily" => Ok(HistoryStep::Day),
            number => match number.parse::<u64>() {
                Ok(0) | Err(_) => Err(format!(
                    "a history step is `day` or a number of votes above 0, got {text:?}"
                )),
                Ok(votes) => Ok(HistoryStep::Votes(votes)),
            },
        }
    }
}

/// One model at one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRating {
    pub model: String,
    pub rating: f64,
    /// The bootstrap interval when rounds were asked for, else the sandwich interval.
    pub ci: Option<Interval>,
    pub rank: usize,
}

/// The leaderboard after some of the votes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Votes counted so far.
    pub votes: u64,
    /// The day (`YYYY-MM-DD`, UTC) with a daily step, the vote count otherwise.
    pub label: String,
    /// Best first.
    pub models: Vec<HistoryRating>,
    /// The three best models (fewer when fewer have votes), as a sorted set.
    pub top3: Vec<String>,
}

/// How often the top 3 changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopStability {
    /// The window, in votes, counted back from the last vote.
    pub window_votes: u64,
    /// Checkpoints inside the window (each compared with the one before it).
    pub checkpoints: u64,
    /// Of those, how many have a different top-3 set than the checkpoint before.
    pub changes: u64,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub method: String,
    pub step: HistoryStep,
    pub points: Vec<HistoryPoint>,
    pub stability: TopStability,
}

fn day_label(seconds: f64) -> String {
    let days = (seconds / 86_400.0).floor() as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The ratings after each step of votes (`battles` in the order they arrived; `times[i]` in
/// seconds since the epoch, needed for a daily step), and the top-3 stability over the last
/// `window_votes` votes. Style control is not fitted; intervals come from `options` (0 bootstrap
/// rounds give sandwich intervals, the cheap choice for many checkpoints).
pub fn history(
    battles: &[Battle],
    times: Option<&[Option<f64>]>,
    step: HistoryStep,
    window_votes: u64,
    options: &LeaderboardOptions,
) -> Result<History, String> {
    let days: Option<Vec<i64>> = match step {
        HistoryStep::Day => {
            let times = times.filter(|t| t.len() == battles.len()).ok_or(
                "a daily history needs a time for every vote (the battles have no tstamp)",
            )?;
            Some(
                times
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.map(|t| (t / 86_400.0).floor() as i64)
                            .ok_or_else(|| format!("vote {} has no time", i + 1))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        HistoryStep::Votes(_) => None,
    };
    let mut models: Vec<&str> = battles
        .iter()
        .flat_map(|b| [b.model_a.as_str(), b.model_b.as_str()])
        .collect();
    models.sort_unstable();
    models.dedup();
    let index = |name: &str| models.binary_search(&name).expect("every model is listed");
    let options = LeaderboardOptions {
        style_control: false,
        ..options.clone()
    };
    let mut counts: BTreeMap<(usize, usize), PairCounts> = BTreeMap::new();
    let mut points: Vec<HistoryPoint> = Vec::new();
    let mut counted = 0u64;
    let checkpoint =
        |counts: &BTreeMap<(usize, usize), PairCounts>, counted: u64, label: String| {
            let mut present: Vec<usize> = counts.keys().flat_map(|&(a, b)| [a, b]).collect();
            present.sort_unstable();
            present.dedup();
            let local = |global: usize| present.binary_search(&global).expect("present");
            let aggregated = AggregatedBattles {
                models: present.iter().map(|&i| models[i].to_string()).collect(),
                pairs: counts
                    .values()
                    .map(|p| PairCounts {
                        first: local(p.first),
                        second: local(p.second),
                        ..*p
                    })
                    .collect(),
                self_battles_skipped: 0,
            };
            let board = leaderboard_from_counts(&aggregated, &options);
            let mut top3: Vec<String> = board
                .models
                .iter()
                .take(3)
                .map(|m| m.model.clone())
                .collect();
            top3.sort();
            HistoryPoint {
                votes: counted,
                label,
                models: board
                    .models
                    .iter()
                    .map(|m| HistoryRating {
                        model: m.model.clone(),
                        rating: m.rating,
                        ci: m.ci.or(m.ci_sandwich),
                        rank: m.rank,
                    })
                    .collect(),
                top3,
            }
        };
    for (i, battle) in battles.iter().enumerate() {
        if battle.model_a != battle.model_b {
            let (a, b) = (index(&battle.model_a), index(&battle.model_b));
            let (first, second, outcome) = if a < b {
                (a, b, battle.outcome)
            } else {
                (b, a, battle.outcome.swapped())
            };
            let cell = counts.entry((first, second)).or_insert(PairCounts {
                first,
                second,
                ..PairCounts::default()
            });
            match outcome {
                Outcome::AWins => cell.first_wins += 1,
                Outcome::BWins => cell.second_wins += 1,
                Outcome::Tie => cell.ties += 1,
                Outcome::BothBad => cell.both_bad += 1,
            }
            counted += 1;
        }
        let last = i + 1 == battles.len();
        let due = match (&days, step) {
            (Some(days), _) => last || days[i + 1] != days[i],
            (None, HistoryStep::Votes(every)) => last || counted.is_multiple_of(every),
            (None, HistoryStep::Day) => unreachable!("days are computed for a daily step"),
        };
        if due && !counts.is_empty() && points.last().is_none_or(|p| p.votes != counted) {
            let label = match &days {
                Some(days) => day_label(days[i] as f64 * 86_400.0),
                None => counted.to_string(),
            };
            points.push(checkpoint(&counts, counted, label));
        }
    }
    let start = counted.saturating_sub(window_votes);
    let (mut checkpoints, mut changes) = (0u64, 0u64);
    for pair in points.windows(2) {
        if pair[1].votes > start {
            checkpoints += 1;
            changes += u64::from(pair[0].top3 != pair[1].top3);
        }
    }
    let summary = format!(
        "The top 3 changed at {changes} of the {checkpoints} checkpoints in the last {} votes{}.",
        counted.min(window_votes),
        points.last().map_or(String::new(), |p| format!(
            "; now {}",
            p.models
                .iter()
                .take(3)
                .map(|m| m.model.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    );
    Ok(History {
        method: format!(
            "cumulative leaderboards ({}) after {}; top-3 changes counted between consecutive checkpoints",
            if options.bootstrap_rounds > 0 {
                format!("{} bootstrap rounds each", options.bootstrap_rounds)
            } else {
                "sandwich intervals".to_string()
            },
            match step {
                HistoryStep::Day => "each UTC day".to_string(),
                HistoryStep::Votes(n) => format!("every {n} votes"),
            }
        ),
        step,
        points,
        stability: TopStability {
            window_votes,
            checkpoints,
            changes,
            summary,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wins(a: &str, b: &str, n: usize) -> Vec<Battle> {
        vec![Battle::new(a, b, Outcome::AWins); n]
    }

    /// Votes 1–30: A beats B, B beats C, C beats D: the order A, B, C, D.
    /// Votes 31–90: D beats A, B and C in turn, 20 times each, so D enters the top 3.
    #[test]
    fn every_n_votes_and_top3_changes() {
        let mut battles = wins("A", "B", 10);
        battles.extend(wins("B", "C", 10));
        battles.extend(wins("C", "D", 10));
        for _ in 0..20 {
            battles.extend(wins("D", "A", 1));
            battles.extend(wins("D", "B", 1));
            battles.extend(wins("D", "C", 1));
        }
        let options = LeaderboardOptions {
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        };
        let history = history(&battles, None, HistoryStep::Votes(30), 60, &options).unwrap();
        let votes: Vec<u64> = history.points.iter().map(|p| p.votes).collect();
        assert_eq!(votes, vec![30, 60, 90]);
        assert_eq!(history.points[0].top3, vec!["A", "B", "C"]);
        assert!(history.points[2].top3.contains(&"D".to_string()));
        assert_eq!(history.points[0].models.len(), 4);
        // In the last 60 votes: two checkpoints (60, 90) each compared with the one before.
        assert_eq!(history.stability.checkpoints, 2);
        assert!(history.stability.changes >= 1);
        assert!(history
            .points
            .iter()
            .all(|p| p.models.iter().all(|m| m.ci.is_some())));
    }

    #[test]
    fn daily_steps_need_times_and_label_days() {
        let battles = wins("A", "B", 4);
        let options = LeaderboardOptions {
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        };
        assert!(history(&battles, None, HistoryStep::Day, 10, &options).is_err());
        // 2023-11-14 22:13:20 UTC is 1,700,000,000 s; a day later is 2023-11-15.
        let times = vec![
            Some(1_700_000_000.0),
            Some(1_700_000_100.0),
            Some(1_700_086_400.0),
            Some(1_700_090_000.0),
        ];
        let history = history(&battles, Some(&times), HistoryStep::Day, 10, &options).unwrap();
        let labels: Vec<&str> = history.points.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, vec!["2023-11-14", "2023-11-15"]);
        assert_eq!(history.points[1].votes, 4);
        assert_eq!(HistoryStep::parse("day"), Ok(HistoryStep::Day));
        assert_eq!(HistoryStep::parse("500"), Ok(HistoryStep::Votes(500)));
        assert!(HistoryStep::parse("0").is_err());
    }
}
