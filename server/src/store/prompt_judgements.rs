//! LLM judgements of prompts against LMArena's hard-prompt criteria (`moat judge-prompts`,
//! `moat_stats::hard_prompt`): which prompts still need one, writing one, and the tags they give.

use std::collections::HashMap;

use sqlx::Row;

use super::generation::prompt_to_answer;
use super::{PromptToAnswer, Store, StoreResult};
use crate::domain::now_ms;

/// The longest judge answer kept (characters); the rest is cut.
const ANSWER_KEPT: usize = 2_000;

/// What the study's judgements say, for the leaderboard and the judge's report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PromptJudgements {
    /// Judged prompts.
    pub judged: usize,
    /// Tags by prompt external id (today only `hard-prompt`).
    pub tags: HashMap<String, Vec<String>>,
}

impl Store {
    /// The study's regular prompts (quality checks excluded) that have no judgement yet, or all of
    /// them with `again`, in prompt order.
    pub async fn prompts_to_judge(
        &self,
        study_id: i64,
        again: bool,
    ) -> StoreResult<Vec<PromptToAnswer>> {
        let rows = sqlx::query(
            "SELECT p.id, p.external_id, p.conversation FROM prompts p \
             WHERE p.study_id = $1 AND p.check_kind IS NULL AND ($2 = 1 OR NOT EXISTS ( \
               SELECT 1 FROM prompt_judgements j WHERE j.prompt_id = p.id)) \
             ORDER BY p.id",
        )
        .bind(study_id)
        .bind(i64::from(again))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(prompt_to_answer).collect()
    }

    /// Stores (or replaces) a prompt's judgement: the criteria it meets, as indices into
    /// `moat_stats::hard_prompt::CRITERIA`, the judge's name and its answer.
    pub async fn save_prompt_judgement(
        &self,
        prompt_id: i64,
        judge: &str,
        criteria: &[usize],
        answer: &str,
    ) -> StoreResult<()> {
        let answer: String = answer.chars().take(ANSWER_KEPT).collect();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO prompt_judgements (prompt_id, judge, criteria, answer, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (prompt_id) DO UPDATE SET \
             judge = excluded.judge, criteria = excluded.criteria, answer = excluded.answer, \
             created_ms = excluded.created_ms",
        )
        .bind(prompt_id)
        .bind(judge)
        .bind(moat_stats::hard_prompt::criteria_keys(criteria))
        .bind(answer)
        .bind(now_ms())
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The study's judgements: how many prompts were judged and the tags they earn.
    pub async fn prompt_judgements(&self, study_id: i64) -> StoreResult<PromptJudgements> {
        let rows = sqlx::query(
            "SELECT p.external_id, j.criteria FROM prompt_judgements j \
             JOIN prompts p ON p.id = j.prompt_id WHERE p.study_id = $1",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        let mut judgements = PromptJudgements {
            judged: rows.len(),
            ..PromptJudgements::default()
        };
        for row in &rows {
            let criteria: String = row.try_get("criteria")?;
            if moat_stats::hard_prompt::is_hard(&moat_stats::hard_prompt::criteria_from_keys(
                &criteria,
            )) {
                judgements.tags.insert(
                    row.try_get("external_id")?,
                    vec![moat_stats::hard_prompt::HARD_PROMPT.to_string()],
                );
            }
        }
        Ok(judgements)
    }
}
