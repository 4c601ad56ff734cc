//! Categories of prompts for per-category leaderboards: rule-based tags computed from the user's
//! turns, and the ranks of each model in each category (LMArena's rank-by-category view).
//!
//! The rules are deliberately simple and documented so that a reader can predict them:
//!
//! | tag | rule |
//! |---|---|
//! | `code` | a fenced code block (```` ``` ````), or a line that looks like code (ends in `;` or `{`, or starts with `def `, `class `, `import `, `#include`, `fn `, `function `, `SELECT `, `public `), or a programming word (`python`, `javascript`, `sql`, `regex`, `compile`, `debug`, `function`, `code`, …) |
//! | `math` | LaTeX (`\frac`, `\sum`, `$…$`), an arithmetic expression (a digit, an operator among `+ − * / ^ =`, a digit), or a mathematical word (`equation`, `integral`, `derivative`, `probability`, `prime`, `solve`, …) |
//! | `non-english` | the language given with the prompt is not English; without one, the letters are mostly of a non-Latin script, or the Latin-script words contain more stop words of French, German, Spanish, Portuguese or Italian than of English |
//! | `multi-turn` | more than one user turn |
//! | `long-query` | the user's turns hold more than 500 tokens, counted as 4 characters per token (LMArena's threshold with its tokenizer) |
//!
//! LMArena's "hard prompt" criteria need an LLM judge and are not computed here; a study's
//! imported `category` is used as given, beside these tags.

use serde::{Deserialize, Serialize};

use crate::leaderboard::{leaderboard, Leaderboard, LeaderboardOptions};
use crate::model::Battle;

pub const CODE: &str = "code";
pub const MATH: &str = "math";
pub const NON_ENGLISH: &str = "non-english";
pub const MULTI_TURN: &str = "multi-turn";
pub const LONG_QUERY: &str = "long-query";

/// The automatic tags, in the order [`tag_prompt`] returns them.
pub const AUTOMATIC_TAGS: [&str; 5] = [CODE, MATH, NON_ENGLISH, MULTI_TURN, LONG_QUERY];

/// Tokens over which a query is long (LMArena's "long user query" category).
pub const LONG_QUERY_TOKENS: usize = 500;
/// Characters per token in the long-query estimate.
const CHARACTERS_PER_TOKEN: usize = 4;

const PROGRAMMING_WORDS: &[&str] = &[
    "code",
    "coding",
    "program",
    "programming",
    "function",
    "script",
    "python",
    "javascript",
    "typescript",
    "java",
    "rust",
    "golang",
    "c++",
    "c#",
    "sql",
    "html",
    "css",
    "regex",
    "compile",
    "compiler",
    "debug",
    "bug",
    "api",
    "json",
    "bash",
    "algorithm",
    "github",
    "stack trace",
];

const MATH_WORDS: &[&str] = &[
    "equation",
    "equations",
    "integral",
    "derivative",
    "probability",
    "prime",
    "theorem",
    "proof",
    "prove",
    "solve",
    "calculate",
    "arithmetic",
    "algebra",
    "geometry",
    "matrix",
    "polynomial",
    "logarithm",
    "factorial",
    "fraction",
    "percentage",
];

/// Stop words frequent in running text of each language, and rare in the others.
const STOP_WORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "and", "is", "are", "of", "to", "in", "that", "it", "you", "what", "how",
            "with", "for", "this", "write", "can", "please",
        ],
    ),
    (
        "fr",
        &[
            "le", "la", "les", "des", "est", "et", "une", "un", "que", "pour", "dans", "avec",
            "pas", "qui", "vous", "je", "du",
        ],
    ),
    (
        "de",
        &[
            "der", "die", "das", "und", "ist", "nicht", "ein", "eine", "mit", "ich", "sie", "wie",
            "was", "auf", "den", "zu",
        ],
    ),
    (
        "es",
        &[
            "el", "los", "las", "es", "y", "una", "que", "para", "con", "por", "del", "como",
            "qué", "cómo", "se", "en",
        ],
    ),
    (
        "pt",
        &[
            "o", "os", "as", "é", "e", "um", "uma", "que", "para", "com", "não", "do", "da",
            "como", "você", "em",
        ],
    ),
    (
        "it",
        &[
            "il", "lo", "gli", "è", "e", "di", "che", "per", "con", "non", "una", "sono", "come",
            "della", "mi",
        ],
    ),
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '+' || c == '#' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn looks_like_code(text: &str) -> bool {
    if text.contains("```") {
        return true;
    }
    let code_line = text.lines().any(|line| {
        let trimmed = line.trim();
        (trimmed.len() > 3 && (trimmed.ends_with(';') || trimmed.ends_with('{')))
            || [
                "def ",
                "class ",
                "import ",
                "#include",
                "fn ",
                "function ",
                "SELECT ",
                "public ",
                "console.log",
                "print(",
            ]
            .iter()
            .any(|start| trimmed.starts_with(start))
    });
    if code_line {
        return true;
    }
    let lower = text.to_lowercase();
    words(text).any(|w| PROGRAMMING_WORDS.contains(&w.as_str())) || lower.contains("stack trace")
}

fn looks_like_math(text: &str) -> bool {
    if ["\\frac", "\\sum", "\\int", "\\sqrt", "\\cdot"]
        .iter()
        .any(|latex| text.contains(latex))
    {
        return true;
    }
    let dollars = text.matches('$').count();
    if dollars >= 2
        && text.split('$').nth(1).is_some_and(|inner| {
            inner.chars().any(|c| c.is_ascii_alphabetic()) && inner.contains(['^', '_', '=', '\\'])
        })
    {
        return true;
    }
    // A digit, optional spaces, an operator, optional spaces, a digit or a variable.
    let characters: Vec<char> = text.chars().collect();
    for (i, &c) in characters.iter().enumerate() {
        if !matches!(c, '+' | '-' | '*' | '/' | '^' | '=' | '×' | '÷') {
            continue;
        }
        let before = characters[..i].iter().rev().find(|c| !c.is_whitespace());
        let after = characters[i + 1..].iter().find(|c| !c.is_whitespace());
        if before.is_some_and(char::is_ascii_digit)
            && after.is_some_and(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == '(')
        {
            return true;
        }
    }
    words(text).any(|w| MATH_WORDS.contains(&w.as_str()))
}

/// Guesses the language of a text: an ISO 639-1 code for the scripts and stop-word lists it knows
/// (`en`, `fr`, `de`, `es`, `pt`, `it`, `zh`, `ja`, `ko`, `ru`, `ar`, `hi`, `el`, `he`, `th`), or
/// `None` when the text has too few letters to tell.
pub fn detect_language(text: &str) -> Option<&'static str> {
    let (mut latin, mut other) = (0usize, 0usize);
    let mut scripts: [usize; 10] = [0; 10];
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        let script = match c as u32 {
            0x3040..=0x30FF => Some(1), // kana
            0x4E00..=0x9FFF | 0x3400..=0x4DBF => Some(0),
            0xAC00..=0xD7AF | 0x1100..=0x11FF => Some(2),
            0x0400..=0x04FF => Some(3),
            0x0600..=0x06FF => Some(4),
            0x0900..=0x097F => Some(5),
            0x0370..=0x03FF => Some(6),
            0x0590..=0x05FF => Some(7),
            0x0E00..=0x0E7F => Some(8),
            _ if c.is_ascii_alphabetic() || ('\u{C0}'..='\u{24F}').contains(&c) => None,
            _ => Some(9),
        };
        match script {
            Some(index) => {
                scripts[index] += 1;
                other += 1;
            }
            None => latin += 1,
        }
    }
    if latin + other < 3 {
        return None;
    }
    if other > latin {
        // Japanese text mixes kanji with kana; any kana share above a tenth says Japanese.
        if scripts[1] * 10 > other {
            return Some("ja");
        }
        let largest = (0..scripts.len()).max_by_key(|&i| scripts[i]).unwrap_or(9);
        return Some(match largest {
            0 => "zh",
            2 => "ko",
            3 => "ru",
            4 => "ar",
            5 => "hi",
            6 => "el",
            7 => "he",
            8 => "th",
            _ => "und",
        });
    }
    let mut counts = [0usize; STOP_WORDS.len()];
    for word in words(text) {
        for (i, (_, list)) in STOP_WORDS.iter().enumerate() {
            if list.contains(&word.as_str()) {
                counts[i] += 1;
            }
        }
    }
    // English wins ties: a short prompt with no stop words at all is taken as English.
    let best = (1..counts.len()).fold(0, |best, i| if counts[i] > counts[best] { i } else { best });
    Some(STOP_WORDS[best].0)
}

/// Whether a language given with a prompt (a code such as `en`, `en-US`, or a name such as
/// Arena's `English`) is English.
pub fn is_english(language: &str) -> bool {
    let language = language.trim().to_ascii_lowercase();
    language == "english"
        || language == "en"
        || language.starts_with("en-")
        || language.starts_with("en_")
}

/// The automatic tags of a prompt from its user turns (in order) and, when the data gives one,
/// its language. See the module documentation for the rules.
pub fn tag_prompt(user_turns: &[&str], language: Option<&str>) -> Vec<&'static str> {
    let mut tags = Vec::new();
    let text = user_turns.join("\n");
    if looks_like_code(&text) {
        tags.push(CODE);
    }
    if looks_like_math(&text) {
        tags.push(MATH);
    }
    let english = match language.filter(|l| !l.trim().is_empty()) {
        Some(language) => is_english(language),
        None => detect_language(&text).is_none_or(|code| code == "en"),
    };
    if !english {
        tags.push(NON_ENGLISH);
    }
    if user_turns.len() > 1 {
        tags.push(MULTI_TURN);
    }
    if text.chars().count() > LONG_QUERY_TOKENS * CHARACTERS_PER_TOKEN {
        tags.push(LONG_QUERY);
    }
    tags
}

/// Battles in one category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub category: String,
    pub battles: u64,
}

/// One model's rank in each category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCategoryRanks {
    pub model: String,
    /// Rank (upper bound, as Arena shows it) on the whole leaderboard.
    pub overall: usize,
    /// Rank (upper bound) in each category of [`CategoryRanks::categories`]; `None` where the
    /// model has no votes in it.
    pub ranks: Vec<Option<usize>>,
}

/// Each model's rank per category, like LMArena's rank-by-category view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryRanks {
    pub method: String,
    pub categories: Vec<CategoryCount>,
    /// In the order of the overall leaderboard.
    pub models: Vec<ModelCategoryRanks>,
}

/// Battles grouped by category: `members[c]` lists the indices of the battles in category `c`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryIndex {
    pub names: Vec<String>,
    pub members: Vec<Vec<u32>>,
}

impl CategoryIndex {
    /// Adds battle `battle` to category `name`.
    pub fn add(&mut self, name: &str, battle: usize) {
        let index = self.slot(name);
        let battle = u32::try_from(battle).expect("fewer than 4 billion battles");
        if self.members[index].last() != Some(&battle) {
            self.members[index].push(battle);
        }
    }

    /// Adds battles (in ascending order, after every battle already in the category) to category
    /// `name`: one name lookup for all of them.
    pub fn extend_shifted(&mut self, name: &str, battles: impl IntoIterator<Item = u32>) {
        let index = self.slot(name);
        self.members[index].extend(battles);
    }

    /// The index of category `name`, added (empty) if it is new.
    fn slot(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(index) => index,
            None => {
                self.names.push(name.to_string());
                self.members.push(Vec::new());
                self.names.len() - 1
            }
        }
    }

    pub fn members_of(&self, name: &str) -> Option<&[u32]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.members[i].as_slice())
    }

    /// Categories and their battle counts, largest first (names break ties).
    pub fn counts(&self) -> Vec<CategoryCount> {
        let mut counts: Vec<CategoryCount> = self
            .names
            .iter()
            .zip(&self.members)
            .map(|(name, members)| CategoryCount {
                category: name.clone(),
                battles: members.len() as u64,
            })
            .collect();
        counts.sort_by(|a, b| {
            b.battles
                .cmp(&a.battles)
                .then_with(|| a.category.cmp(&b.category))
        });
        counts
    }
}

/// The battles of one category.
pub fn select(battles: &[Battle], members: &[u32]) -> Vec<Battle> {
    members
        .iter()
        .map(|&i| battles[i as usize].clone())
        .collect()
}

/// Fits the leaderboard of every category and reports each model's rank (upper bound) in each,
/// next to its overall rank in `overall`.
pub fn category_ranks(
    battles: &[Battle],
    index: &CategoryIndex,
    overall: &Leaderboard,
    options: &LeaderboardOptions,
) -> CategoryRanks {
    let categories = index.counts();
    let options = LeaderboardOptions {
        style_control: false,
        ..options.clone()
    };
    let boards: Vec<Leaderboard> = categories
        .iter()
        .map(|c| {
            let members = index.members_of(&c.category).unwrap_or(&[]);
            leaderboard(&select(battles, members), &options)
        })
        .collect();
    let models = overall
        .models
        .iter()
        .map(|row| ModelCategoryRanks {
            model: row.model.clone(),
            overall: row.rank_upper_bound,
            ranks: boards
                .iter()
                .map(|board| {
                    board
                        .models
                        .iter()
                        .find(|m| m.model == row.model)
                        .map(|m| m.rank_upper_bound)
                })
                .collect(),
        })
        .collect();
    CategoryRanks {
        method: format!(
            "one leaderboard per category with the overall options ({} bootstrap rounds); rank = \
             rank upper bound within the category",
            options.bootstrap_rounds
        ),
        categories,
        models,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_hand_checked_prompts() {
        assert_eq!(
            tag_prompt(&["Write a Python function that reverses a list."], None),
            vec![CODE]
        );
        assert_eq!(
            tag_prompt(&["```\nlet x = 1;\n```\nWhy does this fail?"], None),
            vec![CODE]
        );
        assert_eq!(tag_prompt(&["What is 17 * 23?"], None), vec![MATH]);
        assert_eq!(
            tag_prompt(&["Solve for x: $x^2 = 4$"], None),
            vec![MATH],
            "a math word and LaTeX"
        );
        assert_eq!(
            tag_prompt(
                &["Quelle est la capitale de la France et pourquoi est-elle célèbre ?"],
                None
            ),
            vec![NON_ENGLISH]
        );
        assert_eq!(
            tag_prompt(&["请用三句话介绍一下长城。"], None),
            vec![NON_ENGLISH]
        );
        assert_eq!(
            tag_prompt(&["Tell me a joke."], Some("English")),
            Vec::<&str>::new()
        );
        assert_eq!(
            tag_prompt(&["Tell me a joke."], Some("German")),
            vec![NON_ENGLISH]
        );
        assert_eq!(
            tag_prompt(&["Hello there.", "And then what happened?"], None),
            vec![MULTI_TURN]
        );
        let long = "word ".repeat(401); // 2,005 characters > 500 tokens × 4
        assert_eq!(tag_prompt(&[long.as_str()], None), vec![LONG_QUERY]);
        let short = "word ".repeat(400); // exactly 2,000 characters: not long
        assert_eq!(tag_prompt(&[short.as_str()], None), Vec::<&str>::new());
        assert_eq!(
            tag_prompt(&["Write a story about a dragon who learns to paint."], None),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn detects_languages_by_script_and_stop_words() {
        assert_eq!(
            detect_language("Wie spät ist es und was ist das?"),
            Some("de")
        );
        assert_eq!(
            detect_language("¿Cómo se dice esto en el idioma de los gatos?"),
            Some("es")
        );
        assert_eq!(detect_language("これは日本語の文章です。"), Some("ja"));
        assert_eq!(detect_language("Привет, как дела?"), Some("ru"));
        assert_eq!(detect_language("What is the meaning of this?"), Some("en"));
        assert_eq!(detect_language("42"), None);
        assert!(is_english("en-GB") && is_english("English") && !is_english("Spanish"));
    }
}
