//! The texts of a static study's comparison by id, for the comparison a vote answers with: the
//! vote's commit tells its id and which prompt and responses it shows, so its texts come from a
//! bounded cache instead of a read of the rater's open comparison after the commit (a read of pages
//! every commit has just rewritten).
//!
//! A static study's prompts and responses are never changed once imported and ids are never reused
//! (AUTOINCREMENT), so a cached text is always its row's. (An arena battle's responses are written as
//! they stream; a battle's comparison is never read through here.)

use std::sync::Mutex as StdMutex;

use super::*;

const PROMPT_TEXT: &str = "SELECT conversation FROM prompts WHERE id = $1";
const RESPONSE_TEXT: &str = "SELECT content, history FROM responses WHERE id = $1";

/// A response's text and its earlier turns.
type ResponseText = Arc<(String, Vec<Message>)>;

/// Two generations of texts: new ones go into `current`; when it holds [`TextCache::GENERATION_BYTES`]
/// it becomes `previous` (the old `previous` is dropped). Memory stays under two generations.
#[derive(Default, Debug)]
pub(super) struct TextCache {
    inner: StdMutex<Generations>,
}

#[derive(Default, Debug)]
struct Generations {
    current: HashMap<i64, Text>,
    previous: HashMap<i64, Text>,
    current_bytes: usize,
}

/// Prompts and responses have ids of their own tables, so each kind keys its own entries.
#[derive(Clone, Debug)]
enum Text {
    Prompt(Arc<Vec<Message>>),
    Response(ResponseText),
}

/// Prompt ids are keyed negative, response ids positive (both start at 1).
fn prompt_key(id: i64) -> i64 {
    -id
}

impl TextCache {
    const GENERATION_BYTES: usize = 32 << 20;

    fn get(&self, key: i64) -> Option<Text> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(text) = inner.current.get(&key) {
            return Some(text.clone());
        }
        let text = inner.previous.remove(&key)?;
        inner.insert(key, text.clone());
        Some(text)
    }

    fn put(&self, key: i64, text: Text) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.insert(key, text);
    }
}

impl Generations {
    fn insert(&mut self, key: i64, text: Text) {
        let messages_bytes =
            |messages: &[Message]| messages.iter().map(|m| m.content.len() + 32).sum::<usize>();
        self.current_bytes += 64
            + match &text {
                Text::Prompt(conversation) => messages_bytes(conversation),
                Text::Response(response) => response.0.len() + messages_bytes(&response.1),
            };
        self.current.insert(key, text);
        if self.current_bytes >= TextCache::GENERATION_BYTES {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
    }
}

impl Store {
    /// The comparison `public_id` of `new` as the rater sees it, its texts from the cache or read by
    /// id.
    pub async fn shown_comparison(
        &self,
        public_id: AssignmentId,
        new: &NewAssignment,
    ) -> StoreResult<ShownAssignment> {
        let conversation = self.prompt_text(new.prompt_id).await?;
        let left = self.response_text(new.left_response.0).await?;
        let right = self.response_text(new.right_response.0).await?;
        Ok(ShownAssignment {
            public_id,
            conversation: conversation.as_ref().clone(),
            left_text: left.0.clone(),
            right_text: right.0.clone(),
            left_history: left.1.clone(),
            right_history: right.1.clone(),
            expires_ms: new.expires_ms,
        })
    }

    async fn prompt_text(&self, prompt_id: i64) -> StoreResult<Arc<Vec<Message>>> {
        if let Some(Text::Prompt(conversation)) = self.texts.get(prompt_key(prompt_id)) {
            return Ok(conversation);
        }
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
        let conversation: Arc<Vec<Message>> =
            Arc::new(serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?);
        self.texts
            .put(prompt_key(prompt_id), Text::Prompt(conversation.clone()));
        Ok(conversation)
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

    async fn response_text(&self, response_id: i64) -> StoreResult<ResponseText> {
        if let Some(Text::Response(text)) = self.texts.get(response_id) {
            return Ok(text);
        }
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
        let text = Arc::new((content, history_of(history)?));
        self.texts.put(response_id, Text::Response(text.clone()));
        Ok(text)
    }
}
