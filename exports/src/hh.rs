//! Anthropic HH-RLHF transcripts: a conversation as one string of `\n\nHuman: …\n\nAssistant: …` turns.

use crate::Message;

const HUMAN_MARKER: &str = "\n\nHuman:";
const ASSISTANT_MARKER: &str = "\n\nAssistant:";

/// Renders messages as an HH-RLHF transcript. A leading system message becomes untagged preamble text
/// (HH-RLHF has no system role); every other non-assistant role is rendered as `Human`.
pub fn render_transcript(messages: &[Message]) -> String {
    let mut text = String::new();
    append_transcript(&mut text, messages);
    text
}

/// Appends the transcript of `messages` to `text` (so a caller can add one more turn without cloning).
pub fn append_transcript(text: &mut String, messages: &[Message]) {
    for (index, message) in messages.iter().enumerate() {
        if index == 0 && message.role == "system" {
            text.push_str(&message.content);
            continue;
        }
        let marker = if message.role == "assistant" {
            ASSISTANT_MARKER
        } else {
            HUMAN_MARKER
        };
        text.push_str(marker);
        text.push(' ');
        text.push_str(&message.content);
    }
}

/// Parses an HH-RLHF transcript into messages with roles `user` and `assistant`. Exactly one space after
/// each `Human:`/`Assistant:` tag is part of the tag, so `parse_transcript(render_transcript(m)) == m`
/// for messages that do not themselves contain the tags. Text before the first tag, if not blank,
/// becomes a leading `system` message. Returns `None` when the text has no tag at all.
pub fn parse_transcript(text: &str) -> Option<Vec<Message>> {
    // Some HH-derived files start with "Human:" without the two newlines.
    let owned;
    let text = if text.starts_with("Human:") || text.starts_with("Assistant:") {
        owned = format!("\n\n{text}");
        owned.as_str()
    } else {
        text
    };
    let mut tags: Vec<(usize, usize, &str)> = Vec::new();
    for (marker, role) in [(HUMAN_MARKER, "user"), (ASSISTANT_MARKER, "assistant")] {
        tags.extend(
            text.match_indices(marker)
                .map(|(start, _)| (start, start + marker.len(), role)),
        );
    }
    if tags.is_empty() {
        return None;
    }
    tags.sort_unstable_by_key(|&(start, _, _)| start);
    let mut messages = Vec::with_capacity(tags.len() + 1);
    let preamble = &text[..tags[0].0];
    if !preamble.trim().is_empty() {
        messages.push(Message::new("system", preamble));
    }
    for (index, &(_, content_start, role)) in tags.iter().enumerate() {
        let content_end = tags.get(index + 1).map_or(text.len(), |next| next.0);
        let content = &text[content_start..content_end];
        let content = content.strip_prefix(' ').unwrap_or(content);
        messages.push(Message::new(role, content));
    }
    Some(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_round_trips_including_leading_spaces_and_empty_turns() {
        let messages = vec![
            Message::new("user", "Hi there"),
            Message::new("assistant", " two spaces after the tag in the original"),
            Message::new("user", ""),
            Message::new("assistant", "line one\nline two"),
        ];
        let text = render_transcript(&messages);
        assert_eq!(
            text,
            "\n\nHuman: Hi there\n\nAssistant:  two spaces after the tag in the original\n\nHuman: \n\nAssistant: line one\nline two"
        );
        assert_eq!(parse_transcript(&text).unwrap(), messages);
    }

    #[test]
    fn transcript_without_leading_newlines_and_with_preamble() {
        assert_eq!(
            parse_transcript("Human: a\n\nAssistant: b").unwrap(),
            vec![Message::new("user", "a"), Message::new("assistant", "b")]
        );
        assert_eq!(
            parse_transcript("Be nice.\n\nHuman: a\n\nAssistant: b").unwrap(),
            vec![
                Message::new("system", "Be nice."),
                Message::new("user", "a"),
                Message::new("assistant", "b")
            ]
        );
        assert_eq!(parse_transcript("no tags here"), None);
    }
}
