//! Simulations with known true ratings (seeded, so every run is identical).

use moat_stats::simulate::{simulate, SimulationConfig};
use moat_stats::{leaderboard, LeaderboardOptions};

/// Spearman rank correlation (no ties in the inputs here).
fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let ranks = |values: &[f64]| {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let mut ranks = vec![0.0; values.len()];
        for (rank, &i) in order.iter().enumerate() {
            ranks[i] = rank as f64;
        }
        ranks
    };
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let d2: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - b).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// Fitted ratings minus the mean rating, in the order of the simulation's model names.
fn centred_ratings(
    board: &moat_stats::Leaderboard,
    names: &[String],
) -> Vec<(f64, Option<moat_stats::Interval>)> {
    names
        .iter()
        .map(|name| {
            let row = board.models.iter().find(|m| &m.model == name).unwrap();
            (row.rating - board.options.mean_rating, row.ci)
        })
        .collect()
}

#[test]
fn bradley_terry_recovers_the_true_order_at_100k_battles() {
    let simulation = simulate(&SimulationConfig {
        models: 40,
        battles: 100_000,
        tie_rate: 0.0,
        popularity_skew: 0.5,
        rating_sd: 100.0,
        seed: 7,
    });
    let board = leaderboard(
        &simulation.battles,
        &LeaderboardOptions {
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        },
    );
    let fitted: Vec<f64> = centred_ratings(&board, &simulation.model_names)
        .into_iter()
        .map(|(rating, _)| rating)
        .collect();
    let rho = spearman(&fitted, &simulation.true_ratings);
    eprintln!("Spearman without ties {rho:.4}");
    assert!(rho >= 0.98, "Spearman {rho}");
    // With Arena-like ties (30%, whatever the ratings) the order is still recovered.
    let with_ties = simulate(&SimulationConfig {
        tie_rate: 0.3,
        seed: 8,
        ..SimulationConfig {
            models: 40,
            battles: 100_000,
            popularity_skew: 0.5,
            rating_sd: 100.0,
            ..SimulationConfig::default()
        }
    });
    let board = leaderboard(
        &with_ties.battles,
        &LeaderboardOptions {
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        },
    );
    let fitted: Vec<f64> = centred_ratings(&board, &with_ties.model_names)
        .into_iter()
        .map(|(rating, _)| rating)
        .collect();
    let rho = spearman(&fitted, &with_ties.true_ratings);
    eprintln!("Spearman with 30% ties {rho:.4}");
    assert!(rho >= 0.98, "Spearman with ties {rho}");
}

/// 60 replications × 20 models = 1,200 model-replications: if the true coverage is 95%, the
/// observed share has a standard error of about 0.63 points, so 93–97% is a ±3 SE band.
#[test]
fn bootstrap_intervals_cover_the_truth_95_percent_of_the_time() {
    let (replications, models) = (60, 20);
    let mut covered = 0;
    let mut total = 0;
    for replication in 0..replications {
        let simulation = simulate(&SimulationConfig {
            models,
            battles: 20_000,
            tie_rate: 0.0,
            popularity_skew: 0.0,
            rating_sd: 100.0,
            seed: 1_000 + replication,
        });
        let board = leaderboard(
            &simulation.battles,
            &LeaderboardOptions {
                bootstrap_rounds: 400,
                seed: replication,
                ..LeaderboardOptions::default()
            },
        );
        for ((_, interval), truth) in centred_ratings(&board, &simulation.model_names)
            .into_iter()
            .zip(&simulation.true_ratings)
        {
            let interval = interval.expect("bootstrap ran");
            let shifted = moat_stats::Interval::new(
                interval.lower - board.options.mean_rating,
                interval.upper - board.options.mean_rating,
                interval.level,
            );
            covered += usize::from(shifted.contains(*truth));
            total += 1;
        }
    }
    let coverage = covered as f64 / total as f64;
    eprintln!("bootstrap coverage {coverage:.4} ({covered} of {total})");
    assert!(
        (0.93..=0.97).contains(&coverage),
        "coverage {coverage} ({covered} of {total})"
    );
}
