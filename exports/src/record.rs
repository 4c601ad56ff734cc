//! Typed records: one `VoteRecord` is one decided comparison with everything an export needs.

use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Whether a model's weights are published or it is only reachable through an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Openness {
    Open,
    Closed,
}

impl Openness {
    pub fn as_str(self) -> &'static str {
        match self {
            Openness::Open => "open",
            Openness::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "open" | "open_weights" | "open-weights" | "open weights" => Some(Openness::Open),
            "closed" | "closed_api" | "closed-api" | "closed api" | "api" => Some(Openness::Closed),
            _ => None,
        }
    }
}

/// The rater's verdict on a comparison, in terms of the two displayed sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    Left,
    Right,
    Tie,
    BothBad,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::Left => "left",
            Choice::Right => "right",
            Choice::Tie => "tie",
            Choice::BothBad => "both_bad",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "left" => Some(Choice::Left),
            "right" => Some(Choice::Right),
            "tie" => Some(Choice::Tie),
            "both_bad" => Some(Choice::BothBad),
            _ => None,
        }
    }
}

/// One vote with the comparison it decided. "Left" and "right" are the sides as the rater saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub vote_id: i64,
    pub study: String,
    /// The prompt's external id within the study.
    pub prompt_id: String,
    pub conversation: Vec<Message>,
    pub category: Option<String>,
    pub language: Option<String>,
    pub left_model: String,
    pub left_openness: Openness,
    pub left_response: String,
    pub right_model: String,
    pub right_openness: Openness,
    pub right_response: String,
    pub choice: Choice,
    pub rater: String,
    /// Milliseconds since the Unix epoch, when the vote was recorded.
    pub created_ms: i64,
    pub source_guess: Option<String>,
    pub source_confidence: Option<i64>,
    pub rationale: Option<String>,
    pub time_on_page_ms: Option<i64>,
    pub assignment_kind: String,
    /// The rater session's own completion code (none for imported votes).
    #[serde(default)]
    pub completion_code: Option<String>,
    /// Multi-turn arena battles: the left side's messages between `conversation` and
    /// `left_response` (its earlier answers and the rater's follow-ups, in order). Empty for a single
    /// answer; the two sides share `conversation` and every user turn but not the answers.
    #[serde(default)]
    pub left_history: Vec<Message>,
    /// The right side's, as `left_history`.
    #[serde(default)]
    pub right_history: Vec<Message>,
}

impl VoteRecord {
    /// A vote on an attention check or a gold item: it scores the rater, not the models.
    pub fn is_quality_check(&self) -> bool {
        matches!(self.assignment_kind.as_str(), "attention" | "gold")
    }

    /// (chosen model, chosen text, rejected model, rejected text) for a decided vote; `None` for ties.
    pub fn chosen_rejected(&self) -> Option<(&str, &str, &str, &str)> {
        match self.choice {
            Choice::Left => Some((
                &self.left_model,
                &self.left_response,
                &self.right_model,
                &self.right_response,
            )),
            Choice::Right => Some((
                &self.right_model,
                &self.right_response,
                &self.left_model,
                &self.left_response,
            )),
            Choice::Tie | Choice::BothBad => None,
        }
    }

    /// The conversation as one plain-text prompt: a lone user turn is its content, a longer
    /// conversation (or any conversation of a multi-turn battle) is each turn on its own paragraph
    /// prefixed by its role.
    pub fn prompt_text(&self) -> std::borrow::Cow<'_, str> {
        match self.conversation.as_slice() {
            [only] if only.role == "user" && !self.is_multi_turn() => {
                std::borrow::Cow::Borrowed(&only.content)
            }
            turns => std::borrow::Cow::Owned(role_transcript(turns.iter())),
        }
    }

    /// Whether the rater asked follow-up questions (a multi-turn arena battle): the sides then
    /// differ before their last answers.
    pub fn is_multi_turn(&self) -> bool {
        !self.left_history.is_empty() || !self.right_history.is_empty()
    }

    /// The left side's messages after `conversation`: its history, then its last answer.
    pub fn left_turns(&self) -> Vec<Message> {
        side_turns(&self.left_history, &self.left_response)
    }

    /// The right side's messages after `conversation`.
    pub fn right_turns(&self) -> Vec<Message> {
        side_turns(&self.right_history, &self.right_response)
    }

    /// Like [`VoteRecord::chosen_rejected`], each side as plain text that follows
    /// [`VoteRecord::prompt_text`]: the answer itself, or, for a multi-turn battle, the side's turns
    /// each on its own paragraph prefixed by its role.
    pub fn chosen_rejected_text(
        &self,
    ) -> Option<(
        &str,
        std::borrow::Cow<'_, str>,
        &str,
        std::borrow::Cow<'_, str>,
    )> {
        fn text<'s>(
            multi: bool,
            history: &'s [Message],
            last: &'s str,
        ) -> std::borrow::Cow<'s, str> {
            if multi {
                let reply = Message::new("assistant", last);
                std::borrow::Cow::Owned(role_transcript(
                    history.iter().chain(std::iter::once(&reply)),
                ))
            } else {
                std::borrow::Cow::Borrowed(last)
            }
        }
        let multi = self.is_multi_turn();
        let (chosen_model, _, rejected_model, _) = self.chosen_rejected()?;
        let (chosen, rejected) = match self.choice {
            Choice::Left => (
                text(multi, &self.left_history, &self.left_response),
                text(multi, &self.right_history, &self.right_response),
            ),
            _ => (
                text(multi, &self.right_history, &self.right_response),
                text(multi, &self.left_history, &self.left_response),
            ),
        };
        Some((chosen_model, chosen, rejected_model, rejected))
    }
}

fn side_turns(history: &[Message], last: &str) -> Vec<Message> {
    let mut turns = history.to_vec();
    turns.push(Message::new("assistant", last));
    turns
}

/// Each message on its own paragraph, prefixed by its role.
fn role_transcript<'a>(messages: impl Iterator<Item = &'a Message>) -> String {
    messages
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// RFC 3339 UTC text for a millisecond timestamp (no dependency on a date crate).
pub fn rfc3339_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z, a leap day, computed with `date -u -d @1709210096`.
        assert_eq!(rfc3339_utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
