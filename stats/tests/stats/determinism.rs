//! Same data and same seed give identical output, whatever the number of threads.

use moat_stats::simulate::{simulate, SimulationConfig};
use moat_stats::{leaderboard, LeaderboardOptions, TieModel};

fn json_of(battles: &[moat_stats::Battle], options: &LeaderboardOptions) -> String {
    serde_json::to_string(&leaderboard(battles, options)).unwrap()
}

#[test]
fn same_data_and_seed_give_identical_output_on_any_thread_count() {
    let simulation = simulate(&SimulationConfig {
        models: 12,
        battles: 5_000,
        tie_rate: 0.3,
        popularity_skew: 1.0,
        ..SimulationConfig::default()
    });
    for tie_model in [TieModel::HalfWin, TieModel::Davidson] {
        let options = LeaderboardOptions {
            bootstrap_rounds: 100,
            seed: 42,
            tie_model,
            ..LeaderboardOptions::default()
        };
        let first = json_of(&simulation.battles, &options);
        assert_eq!(first, json_of(&simulation.battles, &options));
        let single_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| json_of(&simulation.battles, &options));
        assert_eq!(first, single_thread);
        let other_seed = LeaderboardOptions {
            seed: 43,
            ..options.clone()
        };
        assert_ne!(first, json_of(&simulation.battles, &other_seed));
    }
}

#[test]
fn battle_order_changes_only_online_elo() {
    let simulation = simulate(&SimulationConfig::default());
    let mut reversed = simulation.battles.clone();
    reversed.reverse();
    let options = LeaderboardOptions {
        bootstrap_rounds: 50,
        ..LeaderboardOptions::default()
    };
    let (forward, backward) = (
        leaderboard(&simulation.battles, &options),
        leaderboard(&reversed, &options),
    );
    for (a, b) in forward.models.iter().zip(&backward.models) {
        assert_eq!((&a.model, a.rating, a.ci), (&b.model, b.rating, b.ci));
    }
    assert_ne!(
        forward
            .models
            .iter()
            .map(|m| m.online_elo)
            .collect::<Vec<_>>(),
        backward
            .models
            .iter()
            .map(|m| m.online_elo)
            .collect::<Vec<_>>()
    );
}

/// The style-controlled fit sums its passes over battles in chunks of 65,536 (in parallel): with
/// 150,000 battles in three chunks, one thread and many give the same bytes.
#[test]
fn style_control_is_identical_on_any_thread_count() {
    let simulation = simulate(&SimulationConfig {
        models: 8,
        battles: 150_000,
        tie_rate: 0.2,
        ..SimulationConfig::default()
    });
    let battles: Vec<moat_stats::Battle> = simulation
        .battles
        .into_iter()
        .enumerate()
        .map(|(i, battle)| {
            let length = |k: usize| moat_stats::StyleFeatures {
                length: (37 * k % 900 + 50) as u32,
                lists: (k % 5) as u32,
                ..Default::default()
            };
            battle.with_style(moat_stats::BattleStyle {
                a: length(i),
                b: length(i * 7 + 3),
            })
        })
        .collect();
    let options = LeaderboardOptions {
        bootstrap_rounds: 0,
        ..LeaderboardOptions::default()
    };
    let style_json =
        || serde_json::to_string(&leaderboard(&battles, &options).style_control.unwrap()).unwrap();
    let many = style_json();
    let single_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(style_json);
    assert_eq!(many, single_thread);
}
