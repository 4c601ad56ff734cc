//! Server-sent events: an incremental parser that turns a byte stream, fed in chunks of any size, into
//! complete events, following the WHATWG "event stream interpretation" rules.
//!
//! Network reads split a stream anywhere: inside a line, between a CR and its LF, inside a UTF-8
//! character or inside the leading byte-order mark. The parser therefore keeps the unfinished line as
//! raw bytes and decodes a line only once it is complete, so the events it yields do not depend on how
//! the stream was cut.
//!
//! ```
//! use moat_llm::sse::SseParser;
//! let mut parser = SseParser::new();
//! let mut events = parser.feed(b"data: {\"a\":");
//! events.extend(parser.feed(b"1}\n\ndata: [DONE]\n\n"));
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert_eq!(events[1].data, "[DONE]");
//! ```

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `None` means the default type, "message".
    pub event: Option<String>,
    /// The `data:` lines of the event joined with "\n".
    pub data: String,
    /// The last event ID seen so far in the stream (it carries over to later events, as in browsers).
    pub id: Option<String>,
    /// A `retry:` reconnection time in milliseconds, when this event set one.
    pub retry: Option<u64>,
}

impl Event {
    /// The event's type, "message" unless an `event:` field named another.
    pub fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental event-stream parser. Feed it bytes with [`SseParser::feed`]; call
/// [`SseParser::finish`] when the stream ends.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of the line being read (without its terminator).
    line: Vec<u8>,
    /// Whether the byte-order-mark check at the start of the stream is over.
    bom_checked: bool,
    /// The previous chunk ended with a CR, so an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// The event being assembled.
    event_type: Option<String>,
    data: String,
    /// Whether any `data` field was seen for the event being assembled (an event of only `data:` with
    /// an empty value is still an event, with empty data).
    has_data: bool,
    retry: Option<u64>,
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Reads the next piece of the stream and returns the events it completed, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.bom_checked {
            // The BOM may arrive split over several chunks, so hold the first bytes until there are
            // enough of them to tell whether they start with one.
            let wanted = BOM.len() - self.line.len();
            let take = wanted.min(bytes.len());
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return events;
            }
            self.bom_checked = true;
            let held = std::mem::take(&mut self.line);
            let held = held.strip_prefix(BOM).unwrap_or(&held);
            self.scan(held, &mut events);
        }
        self.scan(bytes, &mut events);
        events
    }

    /// Ends the stream. A stream that stops without the blank line that ends its last event would, by
    /// the standard, lose that event; servers that close right after `data: [DONE]` do exist, so the
    /// pending event (including an unterminated last line) is dispatched instead, if it has data.
    pub fn finish(&mut self) -> Option<Event> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let line = if self.bom_checked {
                &line[..]
            } else {
                line.strip_prefix(BOM).unwrap_or(&line)
            };
            self.field(line);
        }
        self.bom_checked = true;
        self.after_cr = false;
        self.dispatch(&mut events);
        events.pop()
    }

    /// Splits bytes into lines at LF, CR or CRLF and handles each complete line.
    fn scan(&mut self, mut bytes: &[u8], events: &mut Vec<Event>) {
        if bytes.is_empty() {
            // An empty read must not use up a pending CR's chance to pair with an LF.
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let terminator = bytes[end];
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(&bytes[..end]);
            self.line_done(&line, events);
            bytes = &bytes[end + 1..];
            if terminator == b'\r' {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(events);
        } else {
            self.field(line);
        }
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            // A comment, often sent as a keep-alive.
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (name, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            // A field without a colon is the whole line as the name, with an empty value.
            None => (&line[..], ""),
        };
        match name {
            "event" => self.event_type = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // The standard ignores IDs containing NUL.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            // Only digits; anything else leaves the reconnection time alone.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    /// A blank line: the event assembled so far is complete. Without data there is no event, only a
    /// reset of the type (as the standard says).
    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let event_type = self.event_type.take();
        let retry = self.retry.take();
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        events.push(Event {
            event: event_type.filter(|t| !t.is_empty()),
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone().filter(|id| !id.is_empty()),
            retry,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream using every feature: BOM, comments, multi-line data, event types, IDs that carry over,
    /// a field without a colon, a value without the space after the colon, retry, unknown fields, an
    /// event without data (no dispatch), multi-byte UTF-8 and a `[DONE]`.
    const STREAM: &str = "\u{feff}: keep-alive comment\n\
        data: {\"a\": 1}\n\
        \n\
        event: update\n\
        id: 7\n\
        data: first line\n\
        data:second line, no space\n\
        data\n\
        unknown: field\n\
        retry: 1500\n\
        \n\
        data: héllo wörld ✓ 🦀\n\
        \n\
        event: lonely\n\
        \n\
        id\n\
        data:  two spaces\n\
        \n\
        data: [DONE]\n\
        \n";

    fn expected() -> Vec<Event> {
        vec![
            Event {
                data: "{\"a\": 1}".into(),
                ..Event::default()
            },
            Event {
                event: Some("update".into()),
                data: "first line\nsecond line, no space\n".into(),
                id: Some("7".into()),
                retry: Some(1500),
            },
            Event {
                data: "héllo wörld ✓ 🦀".into(),
                id: Some("7".into()),
                ..Event::default()
            },
            Event {
                data: " two spaces".into(),
                ..Event::default()
            },
            Event {
                data: "[DONE]".into(),
                ..Event::default()
            },
        ]
    }

    fn parse_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            events.extend(parser.feed(&bytes[start..cut]));
            start = cut;
        }
        events.extend(parser.feed(&bytes[start..]));
        events.extend(parser.finish());
        events
    }

    fn variants() -> Vec<(&'static str, String)> {
        vec![
            ("LF", STREAM.to_string()),
            ("CRLF", STREAM.replace('\n', "\r\n")),
            ("CR", STREAM.replace('\n', "\r")),
            // Mixed endings: CRLF for some lines, CR or LF for others.
            (
                "mixed",
                STREAM
                    .split('\n')
                    .enumerate()
                    .map(|(i, line)| {
                        // A CR is never followed by an LF-terminated blank line here, which would read as one CRLF.
                        let end = ["\r\n", "\n", "\r"][i % 3];
                        format!("{line}{end}")
                    })
                    .collect::<String>()
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
                    + "\n\n",
            ),
        ]
    }

    #[test]
    fn whole_stream_gives_every_event() {
        for (name, text) in variants() {
            assert_eq!(parse_in_pieces(text.as_bytes(), &[]), expected(), "{name}");
        }
    }

    #[test]
    fn a_split_at_every_byte_position_gives_the_same_events() {
        for (name, text) in variants() {
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                assert_eq!(
                    parse_in_pieces(bytes, &[cut]),
                    expected(),
                    "{name}, cut at byte {cut}"
                );
            }
        }
    }

    #[test]
    fn two_splits_at_every_pair_of_positions_give_the_same_events() {
        // Covers a BOM, a CR-LF pair or a UTF-8 character cut in three.
        let text = variants().remove(1).1;
        let bytes = text.as_bytes();
        for first in 0..=bytes.len().min(60) {
            for second in first..=bytes.len() {
                assert_eq!(
                    parse_in_pieces(bytes, &[first, second]),
                    expected(),
                    "cuts at {first} and {second}"
                );
            }
        }
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_events() {
        for (name, text) in variants() {
            let bytes = text.as_bytes();
            let cuts: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(parse_in_pieces(bytes, &cuts), expected(), "{name}");
        }
    }

    #[test]
    fn a_bom_is_only_stripped_at_the_start() {
        let mut parser = SseParser::new();
        let events = parser.feed("data: a\n\n\u{feff}data: b\n\n".as_bytes());
        assert_eq!(events[0].data, "a");
        // Mid-stream, the BOM is part of the field name, so the line is an unknown field.
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_short_stream_that_is_a_bom_prefix_is_kept() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"\xEF").is_empty());
        assert!(parser.feed(b"\xBB").is_empty());
        let events = parser.feed(b"\xBFdata: x\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "x");
        // Bytes that only start like a BOM are kept as they are.
        let mut parser = SseParser::new();
        assert!(parser.feed(b"d").is_empty());
        assert_eq!(parser.feed(b"ata: y\n\n")[0].data, "y");
    }

    #[test]
    fn finish_dispatches_an_unterminated_last_event() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: [DONE]").is_empty());
        assert_eq!(parser.finish().unwrap().data, "[DONE]");
        assert_eq!(parser.finish(), None);

        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: x\n").is_empty());
        assert_eq!(parser.finish().unwrap().data, "x");

        let mut parser = SseParser::new();
        assert!(parser.feed(b": only a comment").is_empty());
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn an_empty_data_field_is_an_event_with_empty_data() {
        let mut parser = SseParser::new();
        let events = parser.feed(b"data:\n\ndata\n\n");
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.data.is_empty()));
    }

    #[test]
    fn the_event_type_is_reset_after_each_event() {
        let mut parser = SseParser::new();
        let events = parser.feed(b"event: error\ndata: {}\n\ndata: {}\n\n");
        assert_eq!(events[0].kind(), "error");
        assert_eq!(events[1].kind(), "message");
    }
}
