//! Fixed, realistic records for tests, examples and benchmarks: real HH-RLHF pairs dressed as
//! Moat votes (models, sides, raters and timestamps assigned by a fixed rule, no randomness).

use crate::pairs::PreferencePair;
use crate::{Choice, Openness, VoteRecord};

/// The models sample records compare: two open-weights and two closed-API models.
pub const SAMPLE_MODELS: [(&str, Openness); 4] = [
    ("llama-3.1-8b-instruct", Openness::Open),
    ("gpt-4o-mini", Openness::Closed),
    ("mistral-7b-instruct-v0.3", Openness::Open),
    ("claude-3-haiku", Openness::Closed),
];

/// 2024-05-01T00:00:00Z.
pub const SAMPLE_START_MS: i64 = 1_714_521_600_000;

/// The `index`-th sample vote made from `pair`: the rater preferred the pair's chosen response
/// except for every 7th record (a tie) and every 11th (both bad); the chosen response is shown on
/// the left for even indices; every 5th prompt is rated twice (the second time by another rater,
/// with sides swapped), so majority aggregation has multiply-rated items.
pub fn sample_record(index: usize, pair: &PreferencePair) -> VoteRecord {
    let (model_a, openness_a) = SAMPLE_MODELS[index % 4];
    let (model_b, openness_b) = SAMPLE_MODELS[(index / 4 + index + 1) % 4];
    let (model_b, openness_b) = if model_b == model_a {
        SAMPLE_MODELS[(index + 2) % 4]
    } else {
        (model_b, openness_b)
    };
    let chosen_left = index.is_multiple_of(2);
    let choice = if index % 11 == 10 {
        Choice::BothBad
    } else if index % 7 == 6 {
        Choice::Tie
    } else if chosen_left {
        Choice::Left
    } else {
        Choice::Right
    };
    let (left_response, right_response) = if chosen_left {
        (&pair.chosen, &pair.rejected)
    } else {
        (&pair.rejected, &pair.chosen)
    };
    VoteRecord {
        vote_id: index as i64 + 1,
        study: "hh-harmless-replication".to_string(),
        prompt_id: format!("hh-{:05}", index),
        conversation: pair.prompt.clone(),
        category: Some(
            if index.is_multiple_of(3) {
                "harmlessness"
            } else {
                "helpfulness"
            }
            .to_string(),
        ),
        language: Some("en".to_string()),
        left_model: model_a.to_string(),
        left_openness: openness_a,
        left_response: left_response.clone(),
        right_model: model_b.to_string(),
        right_openness: openness_b,
        right_response: right_response.clone(),
        choice,
        rater: format!("rater-{:02}", index % 9 + 1),
        created_ms: SAMPLE_START_MS + index as i64 * 61_250,
        source_guess: (index % 4 == 1)
            .then(|| if index % 8 == 1 { "open" } else { "closed" }.to_string()),
        source_confidence: (index % 4 == 1).then_some((index % 5) as i64 + 1),
        rationale: (index.is_multiple_of(6))
            .then(|| "The chosen answer \"declines\" politely,\nwithout lecturing.".to_string()),
        time_on_page_ms: (index % 10 != 9).then_some(8_000 + (index as i64 * 7_919) % 50_000),
        assignment_kind: if index % 13 == 12 {
            "attention"
        } else {
            "regular"
        }
        .to_string(),
        completion_code: index
            .is_multiple_of(3)
            .then(|| format!("MOAT-{:012X}", index * 7_919)),
        left_history: Vec::new(),
        right_history: Vec::new(),
    }
}

/// Sample records for the given pairs: one per pair, plus a second, side-swapped vote by another
/// rater on every 5th prompt (placed right after it, so records stay grouped by item).
pub fn sample_records(pairs: &[PreferencePair]) -> Vec<VoteRecord> {
    let mut records = Vec::with_capacity(pairs.len() + pairs.len() / 5 + 1);
    for (index, pair) in pairs.iter().enumerate() {
        let record = sample_record(index, pair);
        if index % 5 == 4 {
            let mut second = record.clone();
            std::mem::swap(&mut second.left_model, &mut second.right_model);
            std::mem::swap(&mut second.left_openness, &mut second.right_openness);
            std::mem::swap(&mut second.left_response, &mut second.right_response);
            second.choice = match record.choice {
                Choice::Left => Choice::Right,
                Choice::Right => Choice::Left,
                other => other,
            };
            // Every other second vote disagrees with the first.
            if index % 10 == 9 {
                second.choice = Choice::Tie;
            }
            second.rater = format!("rater-{:02}", (index + 4) % 9 + 1);
            second.created_ms += 3_600_000;
            records.push(record);
            records.push(second);
        } else {
            records.push(record);
        }
    }
    for (position, record) in records.iter_mut().enumerate() {
        record.vote_id = position as i64 + 1;
    }
    records
}
