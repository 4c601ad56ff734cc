//! A study's statistics: the votes as battles, and every question the stats library answers about
//! them (ratings, open-vs-closed parity, distinguishability, position and length bias, agreement).

use std::collections::BTreeMap;

use moat_exports::{Choice, Openness, VoteRecord};
use moat_stats::{
    agreement, bias, distinguishability, leaderboard, parity_by_pair, style_features, Agreement,
    AgreementOptions, Battle, BattleStyle, Bias, CategoryIndex, CategoryRanks, Deduplication,
    Distinguishability, DistinguishabilityOptions, GroupParity, IdentificationGuess, Leaderboard,
    LeaderboardOptions, Outcome, Parity, ParityOptions, PositionChoice, PositionVote, Side,
};
use serde::Serialize;

use moat_stats::StyleComparison;

#[derive(Debug, Clone, Serialize)]
pub struct StudyAnalysis {
    pub study: String,
    pub leaderboard: Leaderboard,
    /// The category the figures are restricted to (`None`: all votes).
    pub category: Option<String>,
    /// Every category of the study's votes (imported categories and automatic tags) with its
    /// votes, before any restriction to one category.
    pub categories: Vec<moat_stats::categories::CategoryCount>,
    /// Each model's rank in each category (absent with a category chosen, or with no categories).
    pub ranks_by_category: Option<CategoryRanks>,
    /// What prompt de-duplication left out (absent when it was off).
    pub deduplication: Option<Deduplication>,
    /// The leaderboard with style held equal beside the plain one, with each model's rank change
    /// (absent without style control).
    pub style_comparison: Option<StyleComparison>,
    /// Ratings recomputed as votes arrived, with the top-3 stability (absent unless asked).
    pub history: Option<moat_stats::History>,
    /// All open-weights models against all closed API models (absent unless both groups voted).
    pub parity_open_vs_closed: Option<Parity>,
    /// The same pooled comparison and, for each open model against each closed model that met,
    /// its own verdict; each also with style held equal.
    pub parity_by_pair: Option<GroupParity>,
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

/// What a person chose beyond the rating options: one category, and prompt de-duplication.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StudyQuery {
    /// Restrict every figure to the votes of this category (imported or automatic).
    pub category: Option<String>,
    /// Down-sample prompts asked far more often than the rest (LMArena's rule); `None` means on
    /// for arena studies, where raters write the prompts, and off for imported prompts, which
    /// every rater sees by design.
    pub deduplicate: Option<bool>,
    /// Recompute the ratings as votes arrived (`None`: no history).
    pub history_step: Option<moat_stats::HistoryStep>,
    /// The window, in votes, of the top-3 stability count (0: all votes).
    pub history_window: u64,
    /// Categories an LLM judge gave prompts (`moat judge-prompts`), by prompt external id; filled
    /// from the store, not by the person asking.
    pub prompt_tags: std::collections::HashMap<String, Vec<String>>,
}

/// The user turns of a vote's prompt, with a multi-turn arena battle's follow-up questions (the same
/// on both sides).
fn user_turns(record: &VoteRecord) -> Vec<&str> {
    record
        .conversation
        .iter()
        .chain(&record.left_history)
        .filter(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .collect()
}

/// A vote's categories: the category it was imported with, the automatic tags of its prompt
/// (`moat_stats::categories`), then the tags an LLM judge gave the prompt (`prompt_tags`, by prompt
/// external id; `moat_stats::hard_prompt`).
pub fn categories_of(
    record: &VoteRecord,
    prompt_tags: &std::collections::HashMap<String, Vec<String>>,
) -> Vec<String> {
    let mut categories: Vec<String> = record
        .category
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let judged = prompt_tags
        .get(&record.prompt_id)
        .into_iter()
        .flatten()
        .map(String::as_str);
    for tag in moat_stats::tag_prompt(&user_turns(record), record.language.as_deref())
        .into_iter()
        .chain(judged)
    {
        if !categories.iter().any(|c| c == tag) {
            categories.push(tag.to_string());
        }
    }
    categories
}

fn category_index(
    records: &[VoteRecord],
    prompt_tags: &std::collections::HashMap<String, Vec<String>>,
) -> CategoryIndex {
    let mut index = CategoryIndex::default();
    for (i, record) in records.iter().enumerate() {
        for category in categories_of(record, prompt_tags) {
            index.add(&category, i);
        }
    }
    index
}

pub fn analyse(study: &str, records: &[VoteRecord], options: &LeaderboardOptions) -> StudyAnalysis {
    analyse_with(study, records, options, &StudyQuery::default(), false)
        .expect("no category was asked for")
}

/// The analysis of a study's votes, restricted to `query.category` when one is given (an error
/// names the categories there are when it has no votes). `arena` says whether the study is an
/// arena study, which switches de-duplication on by default.
pub fn analyse_with(
    study: &str,
    records: &[VoteRecord],
    options: &LeaderboardOptions,
    query: &StudyQuery,
    arena: bool,
) -> Result<StudyAnalysis, String> {
    let mut records: Vec<VoteRecord> = records.to_vec();
    let deduplication = query.deduplicate.unwrap_or(arena).then(|| {
        let keys: Vec<Option<u64>> = records
            .iter()
            .map(|r| {
                let turns = user_turns(r);
                (!turns.is_empty()).then(|| moat_stats::prompt_key(&turns))
            })
            .collect();
        let (keep, report) =
            moat_stats::deduplicate(&keys, moat_stats::dedup::DEFAULT_PERCENTILE, options.seed);
        let mut keep = keep.into_iter();
        records.retain(|_| keep.next().unwrap_or(true));
        report
    });
    let index = category_index(&records, &query.prompt_tags);
    let categories = index.counts();
    let all_battles = battles(&records);
    if let Some(category) = &query.category {
        let members = index.members_of(category).ok_or_else(|| {
            format!(
                "no votes in category {category:?}; the study's categories are {}",
                if categories.is_empty() {
                    "none".to_string()
                } else {
                    categories
                        .iter()
                        .map(|c| format!("{} ({} votes)", c.category, c.battles))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        })?;
        let mut keep = vec![false; records.len()];
        for &member in members {
            keep[member as usize] = true;
        }
        let mut keep = keep.into_iter();
        records.retain(|_| keep.next().unwrap_or(false));
    }
    let records = records.as_slice();
    let battles = battles(records);
    let mut board = leaderboard(&battles, options);
    board.deduplication = deduplication.clone();
    let ranks_by_category = (query.category.is_none() && !categories.is_empty())
        .then(|| moat_stats::category_ranks(&all_battles, &index, &board, options));
    let style_comparison = moat_stats::style_comparison(&board);
    let history = match query.history_step {
        None => None,
        Some(step) => {
            // Votes in the order they were cast; sandwich intervals keep many checkpoints cheap.
            let mut order: Vec<usize> = (0..records.len()).collect();
            order.sort_by_key(|&i| (records[i].created_ms, records[i].vote_id));
            let ordered: Vec<Battle> = order.iter().map(|&i| battles[i].clone()).collect();
            let times: Vec<Option<f64>> = order
                .iter()
                .map(|&i| Some(records[i].created_ms as f64 / 1000.0))
                .collect();
            let window = if query.history_window == 0 {
                u64::MAX
            } else {
                query.history_window
            };
            Some(moat_stats::history(
                &ordered,
                Some(&times),
                step,
                window,
                &LeaderboardOptions {
                    bootstrap_rounds: 0,
                    ..options.clone()
                },
            )?)
        }
    };

    let mut openness: BTreeMap<&str, Openness> = BTreeMap::new();
    for r in records {
        openness.insert(&r.left_model, r.left_openness);
        openness.insert(&r.right_model, r.right_openness);
    }
    let both_groups = openness.values().any(|o| *o == Openness::Open)
        && openness.values().any(|o| *o == Openness::Closed);
    let parity_by_pair = both_groups.then(|| {
        parity_by_pair(
            &battles,
            |model| match openness.get(model) {
                Some(Openness::Open) => Some(Side::A),
                Some(Openness::Closed) => Some(Side::B),
                None => None,
            },
            ("open-weights models", "closed API models"),
            &ParityOptions::default(),
            Some(options),
        )
    });
    let parity_open_vs_closed = parity_by_pair.as_ref().map(|p| p.pooled.clone());

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

    Ok(StudyAnalysis {
        study: study.to_string(),
        leaderboard: board,
        category: query.category.clone(),
        categories,
        ranks_by_category,
        deduplication,
        style_comparison,
        history,
        parity_open_vs_closed,
        parity_by_pair,
        distinguishability,
        bias: bias(&positions, options.confidence),
        agreement,
        // The records carry no flags: the caller that chose them says (`AppService::analysis`).
        flagged_votes: 0,
        flagged_votes_left_out: false,
        flagged_raters: Vec::new(),
        flagged_rater_votes: 0,
        flagged_raters_left_out: false,
    })
}

/// The leaderboard page's view of an analysis.
pub fn page_view(
    slug: &str,
    title: &str,
    analysis: &StudyAnalysis,
    openness: &BTreeMap<String, Openness>,
) -> moat_app::wire::LeaderboardView {
    use moat_app::wire::{
        CategoryOption, CategoryRankRow, CategoryRanksView, LeaderboardRow, LeaderboardView,
        ResultSection, StyleRow,
    };
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
    if let Some(parity) = &analysis.parity_by_pair {
        let mut text = parity.pooled.summary.clone();
        if let Some(styled) = &parity.pooled_style_controlled {
            text.push(' ');
            text.push_str(&styled.summary);
        }
        if let Some(longer) = &parity.longer_response_preferred {
            if let Some(share) = longer.estimate {
                text.push_str(&format!(
                    " Raters preferred the longer response in {:.0}% of the decided votes between \
                     responses of different lengths (n = {}).",
                    share * 100.0,
                    longer.n
                ));
            }
        }
        sections.push(ResultSection {
            title: "Parity: open-weights vs closed API models (pooled)".into(),
            text,
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
        category: analysis.category.clone(),
        categories: analysis
            .categories
            .iter()
            .map(|c| CategoryOption {
                name: c.category.clone(),
                votes: c.battles,
            })
            .collect(),
        category_ranks: analysis
            .ranks_by_category
            .as_ref()
            .map(|ranks| CategoryRanksView {
                categories: ranks
                    .categories
                    .iter()
                    .map(|c| c.category.clone())
                    .collect(),
                rows: ranks
                    .models
                    .iter()
                    .map(|m| CategoryRankRow {
                        model: m.model.clone(),
                        overall: m.overall as u32,
                        ranks: m.ranks.iter().map(|r| r.map(|r| r as u32)).collect(),
                    })
                    .collect(),
            }),
        style_control: false,
        style_rows: analysis
            .style_comparison
            .iter()
            .flat_map(|c| &c.rows)
            .map(|row| StyleRow {
                model: row.model.clone(),
                rank: row.rank as u32,
                rating: row.rating,
                style_rank: row.style_rank as u32,
                style_rating: row.style_rating,
                style_lower: row.style_ci.map(|c| c.lower),
                style_upper: row.style_ci.map(|c| c.upper),
                rank_change: row.rank_change,
            })
            .collect(),
        parity_rows: analysis
            .parity_by_pair
            .as_ref()
            .map(parity_rows)
            .unwrap_or_default(),
        history_svg: analysis
            .history
            .as_ref()
            .filter(|h| h.points.len() > 1)
            .map(|h| moat_stats::svg::history_plot(h, 8)),
        history_summary: analysis
            .history
            .as_ref()
            .map(|h| h.stability.summary.clone()),
        deduplication: analysis.deduplication.as_ref().map(|d| {
            format!(
                "Prompt de-duplication left out {} of {} votes: {} prompts asked more often than \
                 the 99.99th percentile ({:.1} times) keep {} votes each.",
                d.battles_left_out,
                d.battles_with_prompt,
                d.high_frequency_prompts,
                d.cutoff,
                d.cutoff.floor()
            )
        }),
    }
}

fn verdict_name(verdict: moat_stats::ParityVerdict) -> String {
    match verdict {
        moat_stats::ParityVerdict::Equivalent => "equivalent",
        moat_stats::ParityVerdict::ABetter => "a_better",
        moat_stats::ParityVerdict::BBetter => "b_better",
        moat_stats::ParityVerdict::Inconclusive => "inconclusive",
    }
    .to_string()
}

/// The page's parity table: each pair, then the pooled row.
fn parity_rows(parity: &GroupParity) -> Vec<moat_app::wire::ParityRow> {
    let row =
        |a: &str, b: &str, pooled: bool, p: &Parity, styled: Option<&moat_stats::StyleParity>| {
            moat_app::wire::ParityRow {
                model_a: a.to_string(),
                model_b: b.to_string(),
                pooled,
                votes: p.n,
                win_rate: p.win_rate,
                lower: p.interval.map(|i| i.lower),
                upper: p.interval.map(|i| i.upper),
                verdict: verdict_name(p.verdict),
                tost_p_value: p.tost.as_ref().map(|t| t.p_value),
                votes_needed: p.votes_needed,
                summary: p.summary.clone(),
                style_win_rate: styled.map(|s| s.win_rate),
                style_verdict: styled.map(|s| verdict_name(s.verdict)),
                style_votes_needed: styled.and_then(|s| s.votes_needed),
                style_summary: styled.map(|s| s.summary.clone()),
            }
        };
    parity
        .pairs
        .iter()
        .map(|pair| {
            row(
                &pair.model_a,
                &pair.model_b,
                false,
                &pair.parity,
                pair.style_controlled.as_ref(),
            )
        })
        .chain(std::iter::once(row(
            &parity.label_a,
            &parity.label_b,
            true,
            &parity.pooled,
            parity.pooled_style_controlled.as_ref(),
        )))
        .collect()
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
        .filter_map(|r| {
            let pair = preference_pair(r);
            skipped += usize::from(pair.is_none());
            pair
        })
        .collect();
    (pairs, skipped)
}

/// One decided vote as a training pair (`None` for a tie or both-bad vote); see
/// [`preference_pairs`].
pub fn preference_pair(record: &VoteRecord) -> Option<moat_exports::pairs::PreferencePair> {
    let (_, chosen, _, rejected) = record.chosen_rejected_text()?;
    Some(moat_exports::pairs::PreferencePair {
        prompt: record.conversation.clone(),
        chosen: chosen.into_owned(),
        rejected: rejected.into_owned(),
        category: record.category.clone(),
        margin: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_exports::record::Message;

    fn record(
        id: i64,
        (left, left_openness): (&str, Openness),
        (right, right_openness): (&str, Openness),
        choice: Choice,
        prompt: &str,
        category: Option<&str>,
    ) -> VoteRecord {
        VoteRecord {
            vote_id: id,
            study: "s".into(),
            prompt_id: format!("p{id}"),
            conversation: vec![Message::new("user", prompt)],
            category: category.map(str::to_string),
            language: None,
            left_model: left.into(),
            left_openness,
            left_response: format!("answer {id} from {left}"),
            right_model: right.into(),
            right_openness,
            right_response: format!("answer {id} from {right}"),
            choice,
            rater: format!("r{}", id % 7),
            created_ms: 1_700_000_000_000 + id * 60_000,
            source_guess: None,
            source_confidence: None,
            rationale: None,
            time_on_page_ms: Some(20_000),
            assignment_kind: "normal".into(),
            completion_code: None,
            left_history: Vec::new(),
            right_history: Vec::new(),
        }
    }

    /// vicuna-13b (open) beats gpt35 70–30 and loses to gpt4 20–80, sides alternating; the
    /// even-numbered votes carry the imported category "writing", and every fifth prompt asks
    /// for Python code. Pooled, 90 of 200 (45.0%) is inconclusive; each pair has its own verdict.
    fn fixture() -> Vec<VoteRecord> {
        let mut records = Vec::new();
        let mut id = 0;
        for (closed, wins, losses) in [("gpt35", 70, 30), ("gpt4", 20, 80)] {
            for k in 0..(wins + losses) {
                let open_won = k < wins;
                let prompt = if id % 5 == 0 {
                    format!("Write a Python function number {id}.")
                } else {
                    format!("Tell me a story about the number {id}.")
                };
                let category = (id % 2 == 0).then_some("writing");
                let (left, right, choice) = if k % 2 == 0 {
                    let choice = if open_won {
                        Choice::Left
                    } else {
                        Choice::Right
                    };
                    (
                        ("vicuna-13b", Openness::Open),
                        (closed, Openness::Closed),
                        choice,
                    )
                } else {
                    let choice = if open_won {
                        Choice::Right
                    } else {
                        Choice::Left
                    };
                    (
                        (closed, Openness::Closed),
                        ("vicuna-13b", Openness::Open),
                        choice,
                    )
                };
                records.push(record(id, left, right, choice, &prompt, category));
                id += 1;
            }
        }
        records
    }

    fn options() -> LeaderboardOptions {
        LeaderboardOptions {
            bootstrap_rounds: 50,
            ..LeaderboardOptions::default()
        }
    }

    #[test]
    fn parity_per_pair_names_the_models_beside_the_pooled_verdict() {
        let analysis = analyse("s", &fixture(), &options());
        let parity = analysis.parity_by_pair.as_ref().expect("both groups voted");
        assert_eq!(parity.pooled.win_rate, Some(0.45));
        assert_eq!(
            parity.pooled.verdict,
            moat_stats::ParityVerdict::Inconclusive
        );
        assert_eq!(
            analysis.parity_open_vs_closed.as_ref(),
            Some(&parity.pooled)
        );
        let pairs: Vec<(&str, &str, Option<f64>)> = parity
            .pairs
            .iter()
            .map(|p| (p.model_a.as_str(), p.model_b.as_str(), p.parity.win_rate))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("vicuna-13b", "gpt35", Some(0.7)),
                ("vicuna-13b", "gpt4", Some(0.2))
            ]
        );
        assert!(parity.pairs[0]
            .parity
            .summary
            .starts_with("vicuna-13b vs gpt35: vicuna-13b ahead."));
        // The votes carry the response texts, so each pair also has a style-controlled verdict,
        // from the same fit as the leaderboard's style-controlled ratings.
        let styled = analysis.leaderboard.style_control.as_ref().unwrap();
        let rating = |model: &str| {
            styled
                .models
                .iter()
                .find(|m| m.model == model)
                .unwrap()
                .rating
        };
        for pair in &parity.pairs {
            let style = pair.style_controlled.as_ref().unwrap();
            let gap =
                (rating(&pair.model_a) - rating(&pair.model_b)) / moat_stats::ELO_POINTS_PER_UNIT;
            assert!(
                (style.log_odds - gap).abs() < 1e-9,
                "{} vs {gap}",
                style.log_odds
            );
        }
        let view = page_view("s", "S", &analysis, &BTreeMap::new());
        assert_eq!(view.parity_rows.len(), 3);
        assert!(view.parity_rows[2].pooled);
        assert_eq!(view.parity_rows[0].verdict, "a_better");
        assert_eq!(view.parity_rows[1].verdict, "b_better");
        assert_eq!(view.parity_rows[2].verdict, "inconclusive");
        assert!(view.parity_rows[2].votes_needed.is_some());
    }

    #[test]
    fn categories_come_from_the_import_and_from_tags() {
        let records = fixture();
        let analysis = analyse("s", &records, &options());
        let counts: BTreeMap<&str, u64> = analysis
            .categories
            .iter()
            .map(|c| (c.category.as_str(), c.battles))
            .collect();
        // 200 votes: ids 0..200, even ids are "writing", ids divisible by 5 ask for code.
        assert_eq!(counts.get("writing"), Some(&100));
        assert_eq!(counts.get("code"), Some(&40));
        let ranks = analysis.ranks_by_category.as_ref().expect("categories");
        assert_eq!(ranks.models.len(), 3);
        assert!(ranks
            .models
            .iter()
            .all(|m| m.ranks.len() == ranks.categories.len()));

        let query = StudyQuery {
            category: Some("code".into()),
            ..StudyQuery::default()
        };
        let code = analyse_with("s", &records, &options(), &query, false).unwrap();
        assert_eq!(code.leaderboard.n_battles, 40);
        assert_eq!(code.category.as_deref(), Some("code"));
        assert!(code.ranks_by_category.is_none());
        let query = StudyQuery {
            category: Some("poetry".into()),
            ..StudyQuery::default()
        };
        let error = analyse_with("s", &records, &options(), &query, false).unwrap_err();
        assert!(
            error.contains("\"poetry\"") && error.contains("writing (100 votes)"),
            "{error}"
        );
    }

    /// 150 prompts asked once and one ("hi") asked 50 times: pandas' 99.99th percentile of the
    /// 151 counts is at position 150 × 0.9999 = 149.985, between 1 and 50: 1 + 0.985 × 49 =
    /// 49.265, so "hi" keeps 49 votes and 1 is left out. On by default for arena studies only.
    #[test]
    fn arena_studies_deduplicate_prompts_by_default() {
        let mut records = fixture();
        for r in records.iter_mut().take(50) {
            r.conversation = vec![Message::new("user", "hi")];
        }
        let arena = analyse_with("s", &records, &options(), &StudyQuery::default(), true).unwrap();
        let report = arena.deduplication.clone().expect("on for arena studies");
        assert_eq!(report.distinct_prompts, 151);
        assert!((report.cutoff - 49.265).abs() < 1e-9, "{}", report.cutoff);
        assert_eq!(report.high_frequency_prompts, 1);
        assert_eq!(report.battles_left_out, 1);
        assert_eq!(arena.leaderboard.n_battles, 199);
        assert_eq!(arena.leaderboard.deduplication.as_ref(), Some(&report));
        let view = page_view("s", "S", &arena, &BTreeMap::new());
        assert!(view
            .deduplication
            .unwrap()
            .starts_with("Prompt de-duplication left out 1 of 200 votes"));
        let static_study =
            analyse_with("s", &records, &options(), &StudyQuery::default(), false).unwrap();
        assert!(static_study.deduplication.is_none());
        assert_eq!(static_study.leaderboard.n_battles, 200);
        // Asked for explicitly, a static study is de-duplicated too.
        let asked = StudyQuery {
            deduplicate: Some(true),
            ..StudyQuery::default()
        };
        let asked = analyse_with("s", &records, &options(), &asked, false).unwrap();
        assert_eq!(asked.leaderboard.n_battles, 199);
    }

    #[test]
    fn history_by_day_counts_top3_changes() {
        let records = fixture();
        let query = StudyQuery {
            history_step: Some(moat_stats::HistoryStep::Votes(50)),
            history_window: 100,
            ..StudyQuery::default()
        };
        let analysis = analyse_with("s", &records, &options(), &query, false).unwrap();
        let history = analysis.history.as_ref().unwrap();
        let votes: Vec<u64> = history.points.iter().map(|p| p.votes).collect();
        assert_eq!(votes, vec![50, 100, 150, 200]);
        // gpt4 first appears after vote 100, so the top 3 changes once it has votes.
        assert_eq!(history.points[0].models.len(), 2);
        assert_eq!(history.points[3].models.len(), 3);
        assert_eq!(history.stability.checkpoints, 2);
        let view = page_view("s", "S", &analysis, &BTreeMap::new());
        assert!(view.history_svg.unwrap().starts_with("<svg"));
        assert!(view
            .history_summary
            .unwrap()
            .starts_with("The top 3 changed at"));
    }
}
