//! The texts of a static study's comparison by id: the vote's commit tells which prompt and
//! responses the rater's next comparison shows, so the service reads (or finds rendered in its own
//! cache, `service/comparison_html.rs`) their texts by primary key instead of reading the rater's
//! open comparison back after the commit (a read of pages every commit has just rewritten).
//!
//! A static study's prompts and responses are never changed once imported and ids are never reused
//! (AUTOINCREMENT), so what is read here may be kept by id. (An arena battle's responses are written
//! as they stream; a battle's comparison is never read through here.)

use super::*;

const PROMPT_TEXT: &str = "SELECT conversation FROM prompts WHERE id = $1";
const RESPONSE_TEXT: &str = "SELECT content, history FROM responses WHERE id = $1";

impl Store {
    /// A prompt's conversation by id.
    pub async fn prompt_text(&self, prompt_id: i64) -> StoreResult<Vec<Message>> {
        let json = match self.native_prompt(prompt_id) {
            Some(read) => read?,
            None => {
                let row = sqlx::query(PROMPT_TEXT)
                    .bind(prompt_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| row.try_get::<String, _>(0)).transpose()?
            }
        }
        .ok_or_else(|| StoreError::NotFound(format!("no prompt with id {prompt_id}")))?;
        Ok(serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?)
    }

    // The native reads are functions of their own: their parameter arrays must not live across the
    // pool path's await (they are not `Send`).
    fn native_prompt(&self, prompt_id: i64) -> Option<StoreResult<Option<String>>> {
        self.native_row(PROMPT_TEXT, &[&prompt_id], |row| Ok(row.get(0)?))
    }

    #[allow(clippy::type_complexity)]
    fn native_response(
        &self,
        response_id: i64,
    ) -> Option<StoreResult<Option<(String, Option<String>)>>> {
        self.native_row(RESPONSE_TEXT, &[&response_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
    }

    /// A response's text and, for a multi-turn side, its earlier turns, by id.
    pub async fn response_text(&self, response_id: i64) -> StoreResult<(String, Vec<Message>)> {
        let (content, history) = match self.native_response(response_id) {
            Some(read) => read?,
            None => {
                let row = sqlx::query(RESPONSE_TEXT)
                    .bind(response_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?)))
                    .transpose()?
            }
        }
        .ok_or_else(|| StoreError::NotFound(format!("no response with id {response_id}")))?;
        Ok((content, history_of(history)?))
    }
}
