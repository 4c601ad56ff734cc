//! A static study's comparison shown from its ids: the vote's commit (or a new comparison's) tells
//! which prompt and responses it shows, and their rendered HTML comes from a bounded cache by id, or
//! is read by id (`Store::prompt_text`, `Store::response_text`) and rendered once.
//!
//! Rendering is markdown and then sanitizing (an HTML parse), the largest part of a page's own CPU
//! time. The markdown cache is keyed by the whole text; a study whose raters go through thousands of
//! prompts (least-shown first, so in turn) cycles past it, and every key is a hash of the text. Here
//! a comparison costs three lookups by id. A static study's prompts and responses are never changed
//! once imported and ids are never reused (AUTOINCREMENT), so a rendering kept by id is always its
//! row's. (An arena battle's responses are written as they stream; a battle is never shown
//! through here.)

use std::sync::Mutex as StdMutex;

use super::comparisons::{comparison_of, pair_earlier_turns, render_turns_with, ComparisonHtml};
use super::*;
use crate::generations::Generations;

/// Renderings by id: prompt ids keyed negative, response ids positive (both start at 1).
pub(super) struct HtmlById {
    inner: StdMutex<Generations<i64, Rendered>>,
}

impl Default for HtmlById {
    fn default() -> Self {
        HtmlById {
            inner: StdMutex::new(Generations::new(HtmlById::GENERATION_BYTES)),
        }
    }
}

#[derive(Clone)]
enum Rendered {
    Prompt(Arc<[Turn]>),
    Response(Arc<RenderedResponse>),
}

struct RenderedResponse {
    html: String,
    /// A multi-turn side's earlier messages, each rendered, in order.
    history: Vec<String>,
}

fn prompt_key(id: i64) -> i64 {
    -id
}

impl HtmlById {
    /// Each of the two generations holds this many bytes of renderings.
    const GENERATION_BYTES: usize = 32 << 20;

    fn get(&self, key: i64) -> Option<Rendered> {
        self.lock().get(&key)
    }

    fn put(&self, key: i64, rendered: Rendered) {
        let bytes = 64
            + match &rendered {
                Rendered::Prompt(turns) => turns.iter().map(|t| t.html.len() + 32).sum::<usize>(),
                Rendered::Response(response) => {
                    response.html.len() + response.history.iter().map(String::len).sum::<usize>()
                }
            };
        self.lock().insert(key, rendered, bytes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<i64, Rendered>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AppService {
    /// The static study's comparison `public_id`, which shows `new`, at `position` of `total`.
    pub(super) async fn comparison_by_ids(
        &self,
        public_id: crate::domain::AssignmentId,
        new: &NewAssignment,
        position: u32,
        total: u32,
        study: &StudyRow,
    ) -> Result<Comparison, BackendError> {
        let turns = self.prompt_html(new.prompt_id).await?;
        let left = self.response_html(new.left_response.0).await?;
        let right = self.response_html(new.right_response.0).await?;
        let html = ComparisonHtml {
            public_id,
            turns: turns.to_vec(),
            left_html: left.html.clone(),
            right_html: right.html.clone(),
            earlier: pair_earlier_turns(&left.history, &right.history, String::clone),
            history_turns: left.history.len(),
        };
        Ok(comparison_of(html, position, total, study))
    }

    async fn prompt_html(&self, prompt_id: i64) -> Result<Arc<[Turn]>, BackendError> {
        if let Some(Rendered::Prompt(turns)) = self.html_by_id.get(prompt_key(prompt_id)) {
            return Ok(turns);
        }
        let conversation = self.store.prompt_text(prompt_id).await?;
        let turns: Arc<[Turn]> = render_turns_with(&conversation, markdown::render_uncached).into();
        self.html_by_id
            .put(prompt_key(prompt_id), Rendered::Prompt(turns.clone()));
        Ok(turns)
    }

    async fn response_html(&self, response_id: i64) -> Result<Arc<RenderedResponse>, BackendError> {
        if let Some(Rendered::Response(response)) = self.html_by_id.get(response_id) {
            return Ok(response);
        }
        let (content, history) = self.store.response_text(response_id).await?;
        let response = Arc::new(RenderedResponse {
            html: markdown::render_uncached(&content),
            history: history
                .iter()
                .map(|m| markdown::render_uncached(&m.content))
                .collect(),
        });
        self.html_by_id
            .put(response_id, Rendered::Response(response.clone()));
        Ok(response)
    }
}
