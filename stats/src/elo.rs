//! Online Elo, for comparison with the Bradley–Terry ratings. It depends on the order of the battles
//! (recent votes weigh more), which is why the leaderboard's main rating is Bradley–Terry.

use std::collections::BTreeMap;

use crate::model::{Battle, Outcome};

/// Elo ratings after replaying `battles` in order, with update size `k`, on the scale where a
/// 400-point gap means 10:1 odds, starting every model at `initial` (Chatbot Arena's `compute_elo`
/// uses k = 4 and initial = 1000). Ties count as half a win. Battles of a model against itself are
/// skipped.
pub fn online_elo(battles: &[Battle], k: f64, initial: f64) -> BTreeMap<String, f64> {
    let mut ratings: BTreeMap<String, f64> = BTreeMap::new();
    for battle in battles {
        if battle.model_a == battle.model_b {
            continue;
        }
        let mut rating = |name: &str| match ratings.get(name) {
            Some(rating) => *rating,
            None => {
                ratings.insert(name.to_string(), initial);
                initial
            }
        };
        let (rating_a, rating_b) = (rating(&battle.model_a), rating(&battle.model_b));
        let change = elo_update(rating_a, rating_b, battle.outcome, k);
        *ratings
            .get_mut(battle.model_a.as_str())
            .expect("inserted above") += change;
        *ratings
            .get_mut(battle.model_b.as_str())
            .expect("inserted above") -= change;
    }
    ratings
}

/// The change to A's rating (B's changes by the opposite) after one battle.
#[inline]
pub(crate) fn elo_update(rating_a: f64, rating_b: f64, outcome: Outcome, k: f64) -> f64 {
    // 10^x written as e^(x ln 10): the same value, and exp is much cheaper than powf.
    let expected_a =
        1.0 / (1.0 + ((rating_b - rating_a) * (std::f64::consts::LN_10 / 400.0)).exp());
    k * (outcome.score_a() - expected_a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_win_moves_ratings_by_half_k() {
        let ratings = online_elo(&[Battle::new("a", "b", Outcome::AWins)], 4.0, 1000.0);
        assert_eq!(ratings["a"], 1002.0);
        assert_eq!(ratings["b"], 998.0);
        let tied = online_elo(&[Battle::new("a", "b", Outcome::Tie)], 4.0, 1000.0);
        assert_eq!(tied["a"], 1000.0);
    }
}
