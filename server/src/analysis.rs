//! A study's statistics: the votes as battles, and every question the stats library answers about
//! them (ratings, open-vs-closed parity, distinguishability, position and length bias, agreement).

use std::collections::BTreeMap;

use moat_exports::{Choice, Openness, VoteRecord};
use moat_stats::{
    agreement, bias, distinguishability, leaderboard, parity, style_features, Agreement,
    AgreementOptions, Battle, BattleStyle, Bias, Distinguishability, DistinguishabilityOptions,
    IdentificationGuess, Leaderboard, LeaderboardOptions, Outcome, Parity, ParityOptions,
    PositionChoice, PositionVote, Side,
};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StudyAnalysis {
    pub study: String,
    pub leaderboard: Leaderboard,
    /// All open-weights models against all closed API models (absent unless both groups voted).
    pub parity_open_vs_closed: Option<Parity>,
    /// From the "which one is the closed model?" answers (absent when none were given).
    pub distinguishability: Option<Distinguishability>,
    pub bias: Bias,
    pub agreement: Agreement,
    /// Votes on comparisons where a response names a model or its maker (identity flags, see
    /// `crate::identity`), and whether they are left out of every figure above.
    pub flagged_votes: u64,
    pub flagged_votes_left_out: bool,
    /// Raters the rigging and carelessness tests flag (`moat_stats::rigging`), with their reasons;
    /// computed on every preference vote of the study, whether or not their votes are left out.
    pub flagged_raters: Vec<moat_stats::RaterCheck>,
    /// The votes of those raters, and whether they are left out of every figure above
    /// (`drop_flagged`; counted by default).
    pub flagged_rater_votes: u64,
    pub flagged_raters_left_out: bool,
}

/// Leaderboard options from what the CLI and the API let a person choose; unset values keep the
/// library's defaults (1,000 bootstrap rounds, seed 0, ties as half a win).
pub fn leaderboard_options(
    seed: Option<u64>,
    rounds: Option<usize>,
    davidson: bool,
) -> LeaderboardOptions {
    let defaults = LeaderboardOptions::default();
    LeaderboardOptions {
        seed: seed.unwrap_or(defaults.seed),
        bootstrap_rounds: rounds.unwrap_or(defaults.bootstrap_rounds),
        tie_model: if davidson {
            moat_stats::TieModel::Davidson
        } else {
            defaults.tie_model
        },
        ..defaults
    }
}

pub fn outcome(choice: Choice) -> Outcome {
    match choice {
        Choice::Left => Outcome::AWins,
        Choice::Right => Outcome::BWins,
        Choice::Tie => Outcome::Tie,
        Choice::BothBad => Outcome::BothBad,
    }
}

/// Each vote as the rigging tests see it: the rater, the models on each side, the verdict and the
/// time on the page.
pub fn rater_votes(records: &[VoteRecord]) -> Vec<moat_stats::RaterVote> {
    records
        .iter()
        .map(|r| {
            moat_stats::RaterVote::new(
                &r.rater,
                &r.left_model,
                &r.right_model,
                outcome(r.choice),
                r.time_on_page_ms.and_then(|ms| u64::try_from(ms).ok()),
            )
        })
        .collect()
}

/// Each vote as a battle, model A being the left response, with style features of both texts.
pub fn battles(records: &[VoteRecord]) -> Vec<Battle> {
    records
        .iter()
        .map(|r| {
            Battle::new(&r.left_model, &r.right_model, outcome(r.choice)).with_style(BattleStyle {
                a: style_features(&r.left_response),
                b: style_features(&r.right_response),
            })
        })
        .collect()
}

pub fn analyse(study: &str, records: &[VoteRecord], options: &LeaderboardOptions) -> StudyAnalysis {
    let battles = battles(records);
    let board = leaderboard(&battles, options);

    let mut openness: BTreeMap<&str, Openness> = BTreeMap::new();
    for r in records {
        openness.insert(&r.left_model, r.left_openness);
        openness.insert(&r.right_model, r.right_openness);
    }
    let both_groups = openness.values().any(|o| *o == Openness::Open)
        && openness.values().any(|o| *o == Openness::Closed);
    let parity_open_vs_closed = both_groups.then(|| {
        parity(
            &battles,
            |model| match openness.get(model) {
                Some(Openness::Open) => Some(Side::A),
                Some(Openness::Closed) => Some(Side::B),
                None => None,
            },
            &ParityOptions::default(),
        )
    });

    // A guess is scored only where exactly one of the two models is closed.
    let guesses: Vec<IdentificationGuess> = records
        .iter()
        .filter(|r| r.left_openness != r.right_openness)
        .filter_map(|r| {
            let guessed_left = match r.source_guess.as_deref()? {
                "left" => true,
                "right" => false,
                _ => return None,
            };
            let left_is_closed = r.left_openness == Openness::Closed;
            let (a, b) = if r.left_model <= r.right_model {
                (&r.left_model, &r.right_model)
            } else {
                (&r.right_model, &r.left_model)
            };
            Some(IdentificationGuess {
                model_a: a.clone(),
                model_b: b.clone(),
                correct: guessed_left == left_is_closed,
                confidence: r.source_confidence.and_then(|c| u8::try_from(c).ok()),
            })
        })
        .collect();
    let distinguishability = (!guesses.is_empty()).then(|| {
        distinguishability(
            &guesses,
            &DistinguishabilityOptions {
                seed: options.seed,
                ..Default::default()
            },
        )
    });

    let positions: Vec<PositionVote> = records
        .iter()
        .map(|r| PositionVote {
            rater: r.rater.clone(),
            choice: match r.choice {
                Choice::Left => PositionChoice::Left,
                Choice::Right => PositionChoice::Right,
                Choice::Tie => PositionChoice::Tie,
                Choice::BothBad => PositionChoice::BothBad,
            },
            left_length: Some(r.left_response.chars().count()),
            right_length: Some(r.right_response.chars().count()),
        })
        .collect();

    // Agreement on an item (a prompt and a model pair) rated by several raters; the label names the
    // winning model, so the sides each rater saw do not matter.
    let mut items: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for r in records {
        let (a, b) = if r.left_model <= r.right_model {
            (r.left_model.clone(), r.right_model.clone())
        } else {
            (r.right_model.clone(), r.left_model.clone())
        };
        let label = match r.chosen_rejected() {
            Some((winner, ..)) => winner.to_string(),
            None => r.choice.as_str().to_string(),
        };
        items
            .entry((r.prompt_id.clone(), a, b))
            .or_default()
            .push(label);
    }
    let items: Vec<Vec<String>> = items.into_values().collect();
    let agreement = agreement(
        &items,
        &AgreementOptions {
            seed: options.seed,
            ..Default::default()
        },
    );

    StudyAnalysis {
        study: study.to_string(),
        leaderboard: board,
        parity_open_vs_closed,
        distinguishability,
        bias: bias(&positions, options.confidence),
        agreement,
        // The records carry no flags: the caller that chose them says (`AppBackend::analysis`).
        flagged_votes: 0,
        flagged_votes_left_out: false,
        flagged_raters: Vec::new(),
        flagged_rater_votes: 0,
        flagged_raters_left_out: false,
    }
}

/// The leaderboard page's view of an analysis.
pub fn page_view(
    slug: &str,
    title: &str,
    analysis: &StudyAnalysis,
    openness: &BTreeMap<String, Openness>,
) -> moat_app::wire::LeaderboardView {
    use moat_app::wire::{LeaderboardRow, LeaderboardView, ResultSection};
    let board = &analysis.leaderboard;
    let rows = board
        .models
        .iter()
        .map(|m| LeaderboardRow {
            rank_upper_bound: m.rank_upper_bound as u32,
            model: m.model.clone(),
            openness: openness
                .get(&m.model)
                .map(|o| o.as_str().to_string())
                .unwrap_or_default(),
            rating: m.rating,
            lower: m.ci.map(|ci| ci.lower),
            upper: m.ci.map(|ci| ci.upper),
            votes: m.votes,
            win_rate: m.win_rate,
            provisional: m.provisional,
        })
        .collect();
    let mut sections = Vec::new();
    if let Some(parity) = &analysis.parity_open_vs_closed {
        sections.push(ResultSection {
            title: "Parity: open-weights vs closed API models".into(),
            text: parity.summary.clone(),
        });
    }
    match &analysis.distinguishability {
        Some(d) => sections.push(ResultSection {
            title: "Can raters tell which response is from the closed model?".into(),
            text: std::iter::once(d.overall.summary.clone())
                .chain(d.pairs.iter().map(|p| p.summary.clone()))
                .collect::<Vec<_>>()
                .join(" "),
        }),
        None => sections.push(ResultSection {
            title: "Can raters tell which response is from the closed model?".into(),
            text:
                "No answers yet to \"which response comes from a closed model?\" on a comparison \
                   of an open and a closed model (the question is a study setting)."
                    .into(),
        }),
    }
    sections.push(ResultSection {
        title: "Position and length bias".into(),
        text: analysis.bias.summary.clone(),
    });
    sections.push(ResultSection {
        title: "Agreement between raters".into(),
        text: analysis.agreement.summary.clone(),
    });
    LeaderboardView {
        slug: slug.to_string(),
        title: title.to_string(),
        method: board.method.clone(),
        votes: board.n_battles,
        rows,
        forest_svg: moat_stats::svg::forest_plot(board),
        heatmap_svg: moat_stats::svg::win_matrix_heatmap(board),
        sections,
        flagged_raters: analysis.flagged_raters.len() as u64,
        flagged_raters_left_out: analysis.flagged_raters_left_out,
    }
}

/// The decided votes as training pairs (ties and both-bad votes carry no preference), and how many
/// were skipped. A multi-turn battle's sides are their whole turns after the first prompt (each
/// turn prefixed by its role), so the model is trained on the conversation the rater judged.
pub fn preference_pairs(
    records: &[VoteRecord],
) -> (Vec<moat_exports::pairs::PreferencePair>, usize) {
    let mut skipped = 0;
    let pairs = records
        .iter()
        .filter_map(|r| match r.chosen_rejected_text() {
            Some((_, chosen, _, rejected)) => Some(moat_exports::pairs::PreferencePair {
                prompt: r.conversation.clone(),
                chosen: chosen.into_owned(),
                rejected: rejected.into_owned(),
                category: r.category.clone(),
                margin: None,
            }),
            None => {
                skipped += 1;
                None
            }
        })
        .collect();
    (pairs, skipped)
}
