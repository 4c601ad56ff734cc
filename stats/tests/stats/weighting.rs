//! Reweighting of over-represented pairs (weight 1/max(n, 50) per battle, LMArena's 2025 rule).

use moat_stats::simulate::{simulate, SimulationConfig};
use moat_stats::{leaderboard, Battle, LeaderboardOptions, Outcome};

fn votes(a: &str, b: &str, a_wins: usize, b_wins: usize) -> Vec<Battle> {
    let mut battles = vec![Battle::new(a, b, Outcome::AWins); a_wins];
    battles.extend(vec![Battle::new(b, a, Outcome::AWins); b_wins]);
    battles
}

fn rating(board: &moat_stats::Leaderboard, model: &str) -> f64 {
    board
        .models
        .iter()
        .find(|m| m.model == model)
        .unwrap()
        .rating
}

/// A–B has 1,000 battles (600–400), A–C and B–C 50 each (30–20 and 25–25). Reweighted, each pair
/// weighs the same in total, so the ratings are those of 100 battles per pair with the same
/// shares (60–40, 60–40, 50–50): the maximum-likelihood fit does not change when counts are
/// scaled. Kish's effective size: with c the common pair total (1,100 / 3),
/// (3c)² / (c² (1/1000 + 2/50)) = 9 / 0.041 = 219.5 battles.
#[test]
fn reweighted_pairs_count_equally() {
    let mut battles = votes("A", "B", 600, 400);
    battles.extend(votes("A", "C", 30, 20));
    battles.extend(votes("B", "C", 25, 25));
    let options = LeaderboardOptions {
        prior_strength: 0.0,
        bootstrap_rounds: 200,
        reweight_pairs: true,
        ..LeaderboardOptions::default()
    };
    let board = leaderboard(&battles, &options);
    let mut balanced = votes("A", "B", 60, 40);
    balanced.extend(votes("A", "C", 60, 40));
    balanced.extend(votes("B", "C", 50, 50));
    let plain = leaderboard(
        &balanced,
        &LeaderboardOptions {
            reweight_pairs: false,
            ..options.clone()
        },
    );
    for model in ["A", "B", "C"] {
        assert!(
            (rating(&board, model) - rating(&plain, model)).abs() < 1e-6,
            "{model}"
        );
    }
    let reweighting = board.reweighting.as_ref().expect("reweighted");
    assert_eq!(reweighting.pairs_down_weighted, 1);
    assert!((reweighting.effective_battles - 9.0 / 0.041).abs() < 1e-6);
    let (model, change) = reweighting.largest_change.clone().unwrap();
    let unweighted = leaderboard(
        &battles,
        &LeaderboardOptions {
            reweight_pairs: false,
            ..options.clone()
        },
    );
    assert!((change - (rating(&board, &model) - rating(&unweighted, &model))).abs() < 1e-9);
    assert!(board.method.contains("1/max(n, 50)"));
    // Fewer effective battles: wider intervals than the unweighted fit's.
    let width = |b: &moat_stats::Leaderboard| b.models[0].ci_sandwich.unwrap().width();
    assert!(width(&board) > width(&unweighted));
}

#[test]
fn reweighting_needs_ties_as_half_a_win() {
    let options = LeaderboardOptions {
        reweight_pairs: true,
        tie_model: moat_stats::TieModel::Davidson,
        ..LeaderboardOptions::default()
    };
    assert!(options.validate().unwrap_err().contains("Davidson"));
}

/// With no pair above 50 battles every weight is 1: the same leaderboard as without reweighting.
#[test]
fn small_pairs_are_left_as_they_are() {
    let mut battles = votes("A", "B", 30, 20);
    battles.extend(votes("B", "C", 20, 25));
    let options = LeaderboardOptions {
        bootstrap_rounds: 100,
        ..LeaderboardOptions::default()
    };
    let plain = leaderboard(&battles, &options);
    let reweighted = leaderboard(
        &battles,
        &LeaderboardOptions {
            reweight_pairs: true,
            ..options
        },
    );
    for (p, r) in plain.models.iter().zip(&reweighted.models) {
        assert_eq!(p.model, r.model);
        assert!((p.rating - r.rating).abs() < 1e-9);
        let (pc, rc) = (p.ci.unwrap(), r.ci.unwrap());
        assert!((pc.lower - rc.lower).abs() < 1e-6 && (pc.upper - rc.upper).abs() < 1e-6);
        let (ps, rs) = (p.ci_sandwich.unwrap(), r.ci_sandwich.unwrap());
        assert!((ps.lower - rs.lower).abs() < 1e-9);
    }
}

/// Popularity skewed so that a few pairs hold most battles; with reweighting, the weighted
/// sandwich intervals and the weight-keeping bootstrap still hold the truth 93–97% of the time
/// (40 replications × 20 models = 800 model-replications, standard error about 0.8 points).
#[test]
fn weighted_intervals_cover_the_truth() {
    let (replications, models) = (40, 20);
    let (mut covered_sandwich, mut covered_bootstrap, mut total) = (0, 0, 0);
    for replication in 0..replications {
        let simulation = simulate(&SimulationConfig {
            models,
            battles: 20_000,
            tie_rate: 0.0,
            popularity_skew: 1.0,
            rating_sd: 100.0,
            seed: 5_000 + replication,
        });
        let board = leaderboard(
            &simulation.battles,
            &LeaderboardOptions {
                bootstrap_rounds: 200,
                seed: replication,
                mean_rating: 0.0,
                reweight_pairs: true,
                ..LeaderboardOptions::default()
            },
        );
        assert!(board.reweighting.as_ref().unwrap().pairs_down_weighted > 0);
        for (name, truth) in simulation.model_names.iter().zip(&simulation.true_ratings) {
            let row = board.models.iter().find(|m| &m.model == name).unwrap();
            covered_sandwich += usize::from(row.ci_sandwich.unwrap().contains(*truth));
            covered_bootstrap += usize::from(row.ci.unwrap().contains(*truth));
            total += 1;
        }
    }
    let sandwich = covered_sandwich as f64 / total as f64;
    let bootstrap = covered_bootstrap as f64 / total as f64;
    eprintln!("reweighted coverage: sandwich {sandwich:.4}, bootstrap {bootstrap:.4} of {total}");
    assert!((0.93..=0.97).contains(&sandwich), "sandwich {sandwich}");
    assert!((0.93..=0.97).contains(&bootstrap), "bootstrap {bootstrap}");
}
