//! The questions a study asks, on simulated votes: parity (TOST) and style control.

use moat_stats::{
    leaderboard, parity, parity_between_models, Battle, BattleStyle, LeaderboardOptions, Outcome,
    ParityOptions, ParityVerdict, Side, StyleFeatures,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` battles of "open" (A) against "closed" (B) where A wins a decisive vote with probability
/// `a_wins_decisive` and 30% of votes are ties; sides alternate.
fn head_to_head(n: usize, a_wins_decisive: f64, seed: u64) -> Vec<Battle> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let outcome = if rng.gen::<f64>() < 0.3 {
                Outcome::Tie
            } else if rng.gen::<f64>() < a_wins_decisive {
                Outcome::AWins
            } else {
                Outcome::BWins
            };
            if i % 2 == 0 {
                Battle::new("open", "closed", outcome)
            } else {
                Battle::new("closed", "open", outcome.swapped())
            }
        })
        .collect()
}

#[test]
fn equal_models_at_large_n_are_declared_equivalent() {
    for seed in 0..5 {
        let battles = head_to_head(20_000, 0.5, seed);
        let result = parity_between_models(&battles, "open", "closed", &ParityOptions::default());
        assert_eq!(
            result.verdict,
            ParityVerdict::Equivalent,
            "seed {seed}: {}",
            result.summary
        );
        assert_eq!(result.n, 20_000);
        let tost = result.tost.unwrap();
        assert!(tost.p_value < 0.05);
        assert!(tost.interval.lower > 0.45 && tost.interval.upper < 0.55);
        assert!(result.votes_needed.is_none());
    }
}

#[test]
fn a_ten_point_gap_is_not_equivalent() {
    // Win rate with ties as half = 0.3 · 0.5 + 0.7 · p; p = 0.643 gives 0.60, a 10-point gap.
    for seed in 0..5 {
        let battles = head_to_head(20_000, 0.643, seed);
        let result = parity_between_models(&battles, "open", "closed", &ParityOptions::default());
        assert_eq!(
            result.verdict,
            ParityVerdict::ABetter,
            "seed {seed}: {}",
            result.summary
        );
        assert!((result.win_rate.unwrap() - 0.60).abs() < 0.01);
        // Seen from the other side, the same votes say B is better.
        let reversed = parity_between_models(&battles, "closed", "open", &ParityOptions::default());
        assert_eq!(reversed.verdict, ParityVerdict::BBetter);
    }
    // With few votes the same gap is not yet shown, and a plan says how many would show it.
    let battles = head_to_head(60, 0.643, 1);
    let result = parity_between_models(&battles, "open", "closed", &ParityOptions::default());
    assert_ne!(result.verdict, ParityVerdict::Equivalent);
    if result.verdict == ParityVerdict::Inconclusive {
        assert!(result.votes_needed.unwrap() > 60);
    }
}

#[test]
fn groups_are_compared_through_a_side_function() {
    let mut battles = head_to_head(4_000, 0.5, 3);
    // Renaming gives two models per group; open-vs-open battles must be ignored.
    for (i, battle) in battles.iter_mut().enumerate() {
        if i % 4 < 2 {
            battle.model_a = battle.model_a.replace("open", "open-2").into();
            battle.model_b = battle.model_b.replace("open", "open-2").into();
        }
    }
    battles.push(Battle::new("open", "open-2", Outcome::AWins));
    let side_of = |model: &str| {
        if model.starts_with("open") {
            Some(Side::A)
        } else if model.starts_with("closed") {
            Some(Side::B)
        } else {
            None
        }
    };
    let result = parity(&battles, side_of, &ParityOptions::default());
    assert_eq!(result.n, 4_000);
}

#[test]
fn style_control_separates_length_from_quality() {
    // Two equally good models; "verbose" writes three times longer answers, and raters prefer the
    // longer answer: P(longer wins) = 0.65. Raw ratings favour "verbose"; with style held equal,
    // the two are level and the length coefficient is clearly positive.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut battles = Vec::new();
    for i in 0..6_000 {
        let short = 200 + rng.gen_range(0..200);
        let long = 3 * short;
        // Some pairs swap who is longer, so length and model are not confounded completely.
        let verbose_is_longer = rng.gen::<f64>() < 0.8;
        let (verbose_length, terse_length) = if verbose_is_longer {
            (long, short)
        } else {
            (short, long)
        };
        let longer_wins = rng.gen::<f64>() < 0.65;
        let verbose_wins = longer_wins == verbose_is_longer;
        let style = |length: u32| StyleFeatures {
            length,
            ..StyleFeatures::default()
        };
        let battle = if i % 2 == 0 {
            Battle::new(
                "verbose",
                "terse",
                if verbose_wins {
                    Outcome::AWins
                } else {
                    Outcome::BWins
                },
            )
            .with_style(BattleStyle {
                a: style(verbose_length),
                b: style(terse_length),
            })
        } else {
            Battle::new(
                "terse",
                "verbose",
                if verbose_wins {
                    Outcome::BWins
                } else {
                    Outcome::AWins
                },
            )
            .with_style(BattleStyle {
                a: style(terse_length),
                b: style(verbose_length),
            })
        };
        battles.push(battle);
    }
    let board = leaderboard(
        &battles,
        &LeaderboardOptions {
            bootstrap_rounds: 0,
            ..LeaderboardOptions::default()
        },
    );
    let raw_gap = board.models[0].rating - board.models[1].rating;
    assert_eq!(board.models[0].model, "verbose");
    assert!(raw_gap > 50.0, "raw gap {raw_gap}");
    let style = board.style_control.expect("battles carry style");
    assert!(style.converged);
    assert_eq!(style.n_battles, 6_000);
    let rating = |model: &str| style.models.iter().find(|m| m.model == model).unwrap();
    let (verbose, terse) = (rating("verbose"), rating("terse"));
    let controlled_gap = verbose.rating - terse.rating;
    // The standard error of the gap is twice that of one rating around the mean (two models).
    let gap_se = 2.0 * verbose.standard_error.unwrap();
    assert!(
        controlled_gap.abs() < 2.5 * gap_se,
        "gap {controlled_gap} ± {gap_se}"
    );
    let length = &style.coefficients[0];
    assert_eq!(length.feature, "length");
    assert!(length.ci.unwrap().lower > 0.0, "{length:?}");
    // Features that never vary stay at zero.
    assert_eq!(style.coefficients[1].coefficient, 0.0);
}
