//! A composite ranking of two sources that share some models, against the known truth.

use moat_stats::simulate::{simulate, SimulationConfig};
use moat_stats::{composite, Battle, LeaderboardOptions, Source};

/// Nine models with one set of true ratings; source one holds the battles among models 0–5,
/// source two those among models 3–8 (battles between 0–2 and 6–8 are in neither). Only the
/// composite puts all nine on one scale; it must find them where the truth is.
#[test]
fn two_sources_sharing_three_models_recover_one_scale() {
    let simulation = simulate(&SimulationConfig {
        models: 9,
        battles: 60_000,
        tie_rate: 0.0,
        popularity_skew: 0.0,
        rating_sd: 150.0,
        seed: 21,
    });
    let index = |name: &str| {
        simulation
            .model_names
            .iter()
            .position(|m| m == name)
            .unwrap()
    };
    let within = |battle: &Battle, range: std::ops::Range<usize>| {
        range.contains(&index(&battle.model_a)) && range.contains(&index(&battle.model_b))
    };
    let one: Vec<Battle> = simulation
        .battles
        .iter()
        .filter(|b| within(b, 0..6))
        .cloned()
        .collect();
    let two: Vec<Battle> = simulation
        .battles
        .iter()
        .filter(|b| within(b, 3..9))
        .cloned()
        .collect();
    let result = composite(
        &[
            Source {
                name: "one".into(),
                battles: &one,
                weight: 1.0,
            },
            Source {
                name: "two".into(),
                battles: &two,
                weight: 1.0,
            },
        ],
        &LeaderboardOptions {
            bootstrap_rounds: 200,
            seed: 4,
            mean_rating: 0.0,
            ..LeaderboardOptions::default()
        },
    );
    assert_eq!(result.models.len(), 9);
    let mut covered = 0;
    for (name, truth) in simulation.model_names.iter().zip(&simulation.true_ratings) {
        let row = result.models.iter().find(|m| &m.model == name).unwrap();
        let ci = row.ci.unwrap();
        let sandwich = row.ci_sandwich.unwrap();
        assert!(
            (row.rating - truth).abs() < 40.0,
            "{name}: fitted {} truth {truth}",
            row.rating
        );
        // The two kinds of interval agree to within a fifth of their width.
        assert!((ci.width() - sandwich.width()).abs() < 0.2 * sandwich.width());
        covered += usize::from(ci.contains(*truth));
    }
    assert!(covered >= 8, "{covered} of 9 intervals hold the truth");
    let shared = result
        .models
        .iter()
        .find(|m| m.model == simulation.model_names[4])
        .unwrap();
    assert!(shared.votes_by_source.iter().all(|&v| v > 0));
    let only_one = result
        .models
        .iter()
        .find(|m| m.model == simulation.model_names[0])
        .unwrap();
    assert_eq!(only_one.votes_by_source[1], 0);
}
