//! Ratings against reference values computed independently with scipy.
//!
//! The constants come from `stats/reference/bt_reference.py`, which fits the same fixture with
//! `scipy.optimize.minimize` (BFGS on the plain likelihood, no prior) and computes the sandwich
//! standard errors from a finite-difference Hessian with numpy (numpy 2.4, scipy 1.17).

use moat_stats::{leaderboard, Battle, LeaderboardOptions, Outcome, TieModel, ELO_POINTS_PER_UNIT};

const MODELS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
/// (first, second, first wins, second wins, ties, both bad); same as FIXTURE in bt_reference.py.
const FIXTURE: [(usize, usize, usize, usize, usize, usize); 10] = [
    (0, 1, 30, 18, 10, 2),
    (0, 2, 41, 12, 9, 3),
    (0, 3, 25, 25, 12, 0),
    (0, 4, 50, 8, 6, 1),
    (1, 2, 22, 17, 11, 4),
    (1, 3, 14, 29, 7, 2),
    (1, 4, 33, 15, 10, 0),
    (2, 3, 9, 31, 8, 1),
    (2, 4, 27, 20, 12, 3),
    (3, 4, 38, 9, 5, 2),
];
const SCIPY_BT_RATINGS: [f64; 5] = [1098.310158, 994.50228, 934.266652, 1096.295036, 876.625873];
const SCIPY_BT_SANDWICH_SE: [f64; 5] = [16.836422, 17.312128, 16.954901, 18.332024, 17.74489];
const SCIPY_DAVIDSON_RATINGS: [f64; 5] =
    [1124.579193, 993.067189, 916.789132, 1122.016913, 843.547574];
const SCIPY_DAVIDSON_NU: f64 = 0.51314348;

pub fn fixture_battles() -> Vec<Battle> {
    let mut battles = Vec::new();
    for &(first, second, wins, losses, ties, both_bad) in &FIXTURE {
        // Alternate the sides so the fixture does not depend on orientation.
        for k in 0..wins {
            battles.push(oriented(first, second, Outcome::AWins, k));
        }
        for k in 0..losses {
            battles.push(oriented(first, second, Outcome::BWins, k));
        }
        for k in 0..ties {
            battles.push(oriented(first, second, Outcome::Tie, k));
        }
        for k in 0..both_bad {
            battles.push(oriented(first, second, Outcome::BothBad, k));
        }
    }
    battles
}

fn oriented(first: usize, second: usize, outcome: Outcome, k: usize) -> Battle {
    if k.is_multiple_of(2) {
        Battle::new(MODELS[first], MODELS[second], outcome)
    } else {
        Battle::new(MODELS[second], MODELS[first], outcome.swapped())
    }
}

fn plain_mle() -> LeaderboardOptions {
    LeaderboardOptions {
        prior_strength: 0.0,
        bootstrap_rounds: 0,
        ..LeaderboardOptions::default()
    }
}

fn rating_of(board: &moat_stats::Leaderboard, model: &str) -> f64 {
    board
        .models
        .iter()
        .find(|m| m.model == model)
        .unwrap()
        .rating
}

#[test]
fn bradley_terry_matches_scipy() {
    let board = leaderboard(&fixture_battles(), &plain_mle());
    assert!(board.converged);
    for (model, expected) in MODELS.iter().zip(SCIPY_BT_RATINGS) {
        let rating = rating_of(&board, model);
        assert!(
            (rating - expected).abs() < 1e-4,
            "{model}: {rating} vs {expected}"
        );
    }
}

#[test]
fn sandwich_standard_errors_match_numpy() {
    let board = leaderboard(&fixture_battles(), &plain_mle());
    for (model, expected) in MODELS.iter().zip(SCIPY_BT_SANDWICH_SE) {
        let row = board.models.iter().find(|m| m.model == *model).unwrap();
        let se = row.standard_error.unwrap();
        assert!((se - expected).abs() < 1e-3, "{model}: {se} vs {expected}");
        let ci = row.ci_sandwich.unwrap();
        assert!((ci.upper - row.rating - 1.959964 * se).abs() < 1e-4);
    }
}

#[test]
fn davidson_matches_scipy() {
    let options = LeaderboardOptions {
        tie_model: TieModel::Davidson,
        ..plain_mle()
    };
    let board = leaderboard(&fixture_battles(), &options);
    assert!(board.converged);
    for (model, expected) in MODELS.iter().zip(SCIPY_DAVIDSON_RATINGS) {
        let rating = rating_of(&board, model);
        assert!(
            (rating - expected).abs() < 1e-4,
            "{model}: {rating} vs {expected}"
        );
    }
    let nu = board.tie_parameter.unwrap();
    assert!((nu - SCIPY_DAVIDSON_NU).abs() < 1e-7, "{nu}");
}

#[test]
fn anchor_shifts_every_rating_by_the_same_amount() {
    let anchored = LeaderboardOptions {
        anchor: Some(moat_stats::Anchor {
            model: "bravo".to_string(),
            rating: 1200.0,
        }),
        ..plain_mle()
    };
    let board = leaderboard(&fixture_battles(), &anchored);
    assert!(board.anchor_applied);
    let shift = 1200.0 - SCIPY_BT_RATINGS[1];
    for (model, expected) in MODELS.iter().zip(SCIPY_BT_RATINGS) {
        assert!((rating_of(&board, model) - (expected + shift)).abs() < 1e-4);
    }
    // The anchor itself carries no uncertainty; the others carry that of their gap to it.
    let bravo = board.models.iter().find(|m| m.model == "bravo").unwrap();
    assert!(bravo.standard_error.unwrap() < 1e-6);
}

#[test]
fn default_prior_barely_moves_real_data() {
    let board = leaderboard(
        &fixture_battles(),
        &LeaderboardOptions {
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        },
    );
    for (model, expected) in MODELS.iter().zip(SCIPY_BT_RATINGS) {
        assert!((rating_of(&board, model) - expected).abs() < 0.05);
    }
    // One natural unit is 400 / ln 10 Elo points.
    assert!((ELO_POINTS_PER_UNIT - 173.717_792_761).abs() < 1e-6);
}

#[test]
fn nonsense_options_are_rejected_not_panicked_on() {
    assert!(LeaderboardOptions::default().validate().is_ok());
    let bad = LeaderboardOptions {
        confidence: 1.5,
        bootstrap_rounds: 10,
        ..LeaderboardOptions::default()
    };
    assert!(bad.validate().unwrap_err().contains("confidence"));
    // Even unvalidated, the computation returns rather than panicking.
    let board = leaderboard(&fixture_battles(), &bad);
    assert_eq!(board.models.len(), 5);
    let too_many = LeaderboardOptions {
        bootstrap_rounds: moat_stats::MAX_BOOTSTRAP_ROUNDS + 1,
        ..LeaderboardOptions::default()
    };
    assert!(too_many.validate().is_err());
}
