//! Domain values parsed at the edge (slugs, statuses, choices) and small pure helpers.

use moat_app::wire::ModelResult;
use moat_exports::{Choice, Openness};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A model of a study, as stored.
#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub openness: Openness,
}

/// One aggregated line of a study's votes: left model, right model, choice, count.
#[derive(Debug, Clone)]
pub struct VoteTally {
    pub left_model: i64,
    pub right_model: i64,
    pub choice: Choice,
    pub count: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `bytes` random bytes from the OS-seeded generator, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A study's URL name: 1–63 characters of lowercase ASCII letters, digits and dashes, starting with
/// a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySlug(String);

impl StudySlug {
    pub fn parse(text: &str) -> Result<StudySlug, String> {
        let ok = !text.is_empty()
            && text.len() <= 63
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-');
        if ok {
            Ok(StudySlug(text.to_string()))
        } else {
            Err(format!(
                "invalid study slug {text:?}: use 1-63 lowercase letters, digits and dashes, not starting with a dash"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The public id of an assignment (a comparison recorded for one rater): 32 lowercase hex digits,
/// the only name a page and a vote give it. Anything else a client sends is refused before the
/// database is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssignmentId(String);

impl AssignmentId {
    /// A new id: the time in milliseconds (12 hex digits) and 80 random bits (20 digits), as a
    /// UUIDv7 is made. Unguessable by its random part (and a vote must also come from the rater the
    /// comparison was issued to); ordered by time, so that each new id lands at the end of the
    /// unique index on `public_id` instead of on a random page of it: one page written per group
    /// commit, not one per comparison (BENCHMARKS.md). It tells its holder when it was issued,
    /// which the holder knows.
    pub fn mint() -> AssignmentId {
        let ms = u64::try_from(now_ms()).unwrap_or(0) & 0xffff_ffff_ffff;
        AssignmentId(format!("{ms:012x}{}", random_hex(10)))
    }

    /// An id as a client sends it (surrounding spaces are ignored).
    pub fn parse(text: &str) -> Result<AssignmentId, String> {
        let text = text.trim();
        if text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(AssignmentId(text.to_string()))
        } else {
            Err(format!(
                "assignment must be the 32-character id of a comparison (lowercase hex), got {:?}",
                text.chars().take(40).collect::<String>()
            ))
        }
    }

    /// An id read back from the database (written by [`AssignmentId::mint`]).
    pub fn stored(text: String) -> AssignmentId {
        AssignmentId(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for AssignmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyStatus {
    Draft,
    Open,
    Closed,
}

impl StudyStatus {
    pub fn parse(text: &str) -> Option<StudyStatus> {
        match text {
            "draft" => Some(StudyStatus::Draft),
            "open" => Some(StudyStatus::Open),
            "closed" => Some(StudyStatus::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StudyStatus::Draft => "draft",
            StudyStatus::Open => "open",
            StudyStatus::Closed => "closed",
        }
    }
}

/// A quality-check item: an attention check (an instructed or obvious answer anyone reading gets
/// right) or a gold item (a comparison experts agreed on). Both have a known better response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Attention,
    Gold,
}

impl CheckKind {
    pub fn parse(text: &str) -> Option<CheckKind> {
        match text {
            "attention" => Some(CheckKind::Attention),
            "gold" => Some(CheckKind::Gold),
            _ => None,
        }
    }

    /// Also the kind of the assignments that show such an item.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Attention => "attention",
            CheckKind::Gold => "gold",
        }
    }
}

/// Checks a link a study sends raters to (`redirect_url`, `screen_out_url`): it must be an absolute
/// http(s) URL with a host, so a `javascript:` or `data:` link can never reach the completion page.
/// The error names the field.
pub fn check_study_link(field: &str, url: &str) -> Result<(), String> {
    moat_app::settings::check_link(field, url)
}

/// Wins, ties, both-bad and losses per model from vote tallies, sorted by win rate (best first).
pub fn model_results(models: &[ModelRow], tallies: &[VoteTally]) -> Vec<ModelResult> {
    let mut results: Vec<ModelResult> = models
        .iter()
        .map(|m| ModelResult {
            model: m.name.clone(),
            provider: m.provider.clone(),
            openness: m.openness.as_str().to_string(),
            wins: 0,
            ties: 0,
            both_bad: 0,
            losses: 0,
            votes: 0,
            win_rate: 0.0,
        })
        .collect();
    let index = |id: i64| models.iter().position(|m| m.id == id);
    for tally in tallies {
        let (Some(left), Some(right)) = (index(tally.left_model), index(tally.right_model)) else {
            continue;
        };
        for (me, won, lost) in [
            (left, Choice::Left, Choice::Right),
            (right, Choice::Right, Choice::Left),
        ] {
            let row = &mut results[me];
            row.votes += tally.count;
            match tally.choice {
                c if c == won => row.wins += tally.count,
                c if c == lost => row.losses += tally.count,
                Choice::Tie => row.ties += tally.count,
                _ => row.both_bad += tally.count,
            }
        }
    }
    for row in &mut results {
        if row.votes > 0 {
            row.win_rate =
                (row.wins as f64 + 0.5 * (row.ties + row.both_bad) as f64) / row.votes as f64;
        }
    }
    results.sort_by(|a, b| {
        b.win_rate
            .total_cmp(&a.win_rate)
            .then_with(|| a.model.cmp(&b.model))
    });
    results
}

pub fn median(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) as f64 / 2.0
    } else {
        values[mid] as f64
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn assignment_ids_are_32_lowercase_hex_digits() {
        let id = AssignmentId::mint();
        assert_eq!(AssignmentId::parse(id.as_str()), Ok(id.clone()));
        // Ordered by time; random past the time.
        let later = AssignmentId::mint();
        assert!(later.as_str()[..12] >= id.as_str()[..12], "{id} {later}");
        assert_ne!(later.as_str()[12..], id.as_str()[12..]);
        let ms = i64::from_str_radix(&id.as_str()[..12], 16).unwrap();
        assert!((now_ms() - ms).abs() < 60_000, "{id}");
        assert_eq!(AssignmentId::parse(&format!("  {id} ")), Ok(id));
        for bad in [
            "",
            "deadbeef",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(33),
            "' OR 1=1 --",
        ] {
            let error = AssignmentId::parse(bad).unwrap_err();
            assert!(error.starts_with("assignment must be"), "{bad:?}: {error}");
        }
        // A huge value is quoted short in the message.
        assert!(AssignmentId::parse(&"x".repeat(1 << 20)).unwrap_err().len() < 200);
    }

    use super::*;
    use moat_exports::Openness;

    #[test]
    fn study_links_must_be_http_urls() {
        for good in [
            "https://app.prolific.com/submissions/complete?cc=ABC123",
            "http://localhost:8080/done",
            "HTTPS://Example.org",
        ] {
            assert_eq!(check_study_link("redirect_url", good), Ok(()), "{good}");
        }
        for bad in [
            "javascript:alert(document.cookie)",
            "JavaScript:alert(1)",
            " javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox",
            "//evil.example/x",
            "/relative",
            "https://",
            "https:///path",
            "http://user@/x",
            "https://exa mple.org",
            "https://example.org/\njavascript:x",
            "ftp://example.org/",
        ] {
            let error = check_study_link("screen_out_url", bad).unwrap_err();
            assert!(
                error.starts_with("screen_out_url must be"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn slugs_are_checked() {
        assert!(StudySlug::parse("open-vs-closed-2").is_ok());
        for bad in ["", "-x", "Upper", "has space", "a/b", &"x".repeat(64)] {
            assert!(StudySlug::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn results_count_each_vote_for_both_models() {
        let models = vec![
            ModelRow {
                id: 1,
                name: "a".into(),
                provider: "p".into(),
                openness: Openness::Open,
            },
            ModelRow {
                id: 2,
                name: "b".into(),
                provider: "q".into(),
                openness: Openness::Closed,
            },
        ];
        let tallies = vec![
            VoteTally {
                left_model: 1,
                right_model: 2,
                choice: Choice::Left,
                count: 3,
            },
            VoteTally {
                left_model: 2,
                right_model: 1,
                choice: Choice::Left,
                count: 1,
            },
            VoteTally {
                left_model: 2,
                right_model: 1,
                choice: Choice::Tie,
                count: 2,
            },
        ];
        let results = model_results(&models, &tallies);
        let a = results.iter().find(|r| r.model == "a").unwrap();
        assert_eq!((a.wins, a.losses, a.ties, a.votes), (3, 1, 2, 6));
        assert!((a.win_rate - 4.0 / 6.0).abs() < 1e-12);
        let b = results.iter().find(|r| r.model == "b").unwrap();
        assert_eq!((b.wins, b.losses, b.ties, b.votes), (1, 3, 2, 6));
        assert_eq!(results[0].model, "a");
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5, 1, 3]), Some(3.0));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2.5));
    }
}
