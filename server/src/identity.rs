//! Identity leaks in model output: a response that names a model or its maker ("I am an ordinary AI
//! assistant created by Anthropic") tells the rater who wrote it, and the comparison is no longer
//! blind. Chatbot Arena drops such battles from its leaderboard (FastChat's battle cleaning checks each
//! answer against a list of identity words); Moat flags such responses when they are written (import,
//! `moat generate`), keeps flagged items away from raters unless the study says otherwise, and counts
//! the votes on flagged comparisons in its statistics.
//!
//! A flag is a prompt for review, not a verdict: the detector looks for words, not meaning, so "Claude
//! Monet", "a llama", "search Google" and "the Gemini constellation" are flagged too. The terms are
//! chosen to catch what models say about themselves with few flags on ordinary words: some are matched
//! only in their usual spelling (`PaLM`, not "palm"; `Cohere`, not "cohere"), "Meta AI" rather than
//! "meta", and "created by" only where it follows "I am …" or "AI"/"assistant"/"model" ("a painting
//! created by Monet" is not a flag). Pure: text and the study's models in, matches out.

use std::sync::LazyLock;

use regex::Regex;

/// Words that name a model or maker, or that models use to say who made them, each as a regex
/// matched case-insensitively on word boundaries (where a term's own case matters it says `(?-i:…)`).
/// The first part of each pair is the term as the admin page shows what it matched.
///
/// FastChat's `IDENTITY_WORDS` (Chatbot Arena's battle cleaning) served as a starting point; this list
/// is Moat's own: more makers and model families, self-descriptions instead of error strings, and
/// case-sensitive spellings where the lower-case word is ordinary English.
pub const SELF_IDENTIFICATIONS: &[(&str, &str)] = &[
    // Makers.
    ("OpenAI", r"open[- ]?ai"),
    ("Anthropic", r"anthropic"),
    ("Google", r"google"),
    ("DeepMind", r"deep[- ]?mind"),
    ("Meta AI", r"meta[- ]ai"),
    ("Hugging Face", r"hugging[- ]?face"),
    ("Alibaba", r"alibaba"),
    ("Cohere", r"(?-i:Cohere|COHERE)"),
    ("DeepSeek", r"deep[- ]?seek"),
    ("Zhipu", r"zhipu"),
    ("Baidu", r"baidu"),
    ("Moonshot AI", r"moonshot[- ]ai"),
    ("xAI", r"(?-i:xAI)"),
    ("LMSYS", r"lmsys"),
    ("LAION", r"laion"),
    ("AI2", r"(?-i:AI2)|allen institute for ai"),
    ("01.AI", r"01\.ai"),
    ("Stability AI", r"stability[- ]ai"),
    ("Nous Research", r"nous research"),
    ("UC Berkeley", r"uc berkeley"),
    // Model families.
    ("ChatGPT", r"chat[- ]?gpt"),
    ("GPT", r"gpt(?:[-_ ]?\d+(?:\.\d+)?[a-z]*)?"),
    ("Claude", r"claude"),
    ("Gemini", r"gemini"),
    ("Gemma", r"gemma"),
    ("Bard", r"(?-i:Bard)"),
    ("PaLM", r"(?-i:PaLM)"),
    ("LaMDA", r"lamda"),
    ("Llama", r"llama(?:[-_ ]?\d+(?:\.\d+)?)?"),
    ("Mistral", r"mistral"),
    ("Mixtral", r"mixtral"),
    ("Qwen", r"qwen\d*(?:\.\d+)?"),
    ("Tongyi Qianwen", r"tongyi|qianwen"),
    ("SmolLM", r"smol[- ]?lm\d*"),
    ("Vicuna", r"vicuna"),
    ("Koala", r"koala"),
    ("ChatGLM", r"chat[- ]?glm\d*"),
    ("Open Assistant", r"open[- ]?assistant"),
    ("Tulu", r"t[uü]lu"),
    ("OLMo", r"(?-i:OLMo)"),
    ("Command R", r"command[- ]r"),
    ("Grok", r"(?-i:Grok)"),
    ("Copilot", r"(?-i:Copilot)"),
    ("Ernie Bot", r"ernie[- ]?bot"),
    ("Phi", r"(?-i:Phi)-\d+(?:\.\d+)?"),
    ("Nemotron", r"nemotron"),
    ("Falcon LLM", r"falcon[- ]?(?:llm|\d+b)"),
    // What models say about themselves.
    (
        "I was created by",
        r"(?:i am|i['’]m|i was|i['’]ve been|i have been)(?:\s+[\w'’-]+(?:\.\d+)?,?){0,6}?\s+(?:created|developed|trained|built|made|designed|programmed)\s+by",
    ),
    (
        "an AI created by",
        r"(?:ai|assistant|language model|chatbot|model)\s+(?:created|developed|trained|built|made|designed)\s+by",
    ),
    ("my creators", r"my\s+(?:creators?|developers|makers?)"),
];

/// Study model names that are role words or stand-ins (`human` for OpenAssistant's human replies,
/// `assistant`), never matched: every response would say them.
const ORDINARY_MODEL_NAMES: &[&str] = &[
    "human",
    "assistant",
    "user",
    "system",
    "model",
    "bot",
    "chatbot",
    "ai",
    "chosen",
    "rejected",
];

/// What a leak names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakSource {
    /// One of the study's models, by name.
    Model(String),
    /// The provider of one of the study's models.
    Provider(String),
    /// A term of [`SELF_IDENTIFICATIONS`] (its display form).
    SelfIdentification(&'static str),
}

/// One match in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The words as they appear in the text.
    pub matched: String,
    /// Byte offset of the match.
    pub start: usize,
    pub source: LeakSource,
}

/// A detector for one study: the common terms and the study's model names and providers, compiled
/// once (an import checks every response with it).
pub struct IdentityDetector {
    any: Regex,
    /// The study's terms alone, anchored, to say which one a match of `any` was (before the common
    /// ones, as in `any`).
    study_terms: Vec<(Regex, LeakSource)>,
}

/// An ASCII word boundary. A Unicode one would miss a name written against Chinese or Japanese
/// text ("我是Claude"), which it sees as one long word.
const BOUNDARY: &str = r"(?-u:\b)";

/// `pattern` as a whole word: bounded on each side where it begins or ends with an ASCII letter or
/// digit (a name in a script without spaces, "通义千问", has no boundary to look for).
fn whole_word(pattern: &str, first: char, last: char) -> String {
    let side = |c: char| {
        if c.is_ascii_alphanumeric() {
            BOUNDARY
        } else {
            ""
        }
    };
    format!("{}(?:{pattern}){}", side(first), side(last))
}

/// A term as a pattern that matches the whole of a found text.
fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("(?i)^(?:{pattern})$"))
        .expect("identity terms are valid patterns (names are escaped)")
}

/// The common terms, anchored, compiled once per process.
static COMMON_TERMS: LazyLock<Vec<(Regex, LeakSource)>> = LazyLock::new(|| {
    SELF_IDENTIFICATIONS
        .iter()
        .map(|(label, pattern)| (anchored(pattern), LeakSource::SelfIdentification(label)))
        .collect()
});

/// A model name or provider as a pattern that also matches its spelling with `-`, `_`, `.`, a space
/// or nothing between its parts (`gpt-4o` matches "GPT 4o" and "gpt4o"); `None` for a name too short
/// or too ordinary to look for.
fn name_pattern(name: &str, min_chars: usize) -> Option<String> {
    let parts: Vec<&str> = name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect();
    let chars: usize = parts.iter().map(|p| p.chars().count()).sum();
    let joined = parts.join(" ").to_lowercase();
    if chars < min_chars || ORDINARY_MODEL_NAMES.contains(&joined.as_str()) {
        return None;
    }
    let pattern = parts
        .iter()
        .map(|part| regex::escape(part))
        .collect::<Vec<_>>()
        .join(r"[-_. ]?");
    let first = parts.first()?.chars().next()?;
    let last = parts.last()?.chars().last()?;
    Some(whole_word(&pattern, first, last))
}

impl IdentityDetector {
    /// A detector for a study whose models are `(name, provider)`. A name like `org/model` is also
    /// looked for without its `org/`.
    pub fn new<N: AsRef<str>, P: AsRef<str>>(models: &[(N, P)]) -> IdentityDetector {
        let mut terms: Vec<(String, LeakSource)> = Vec::new();
        for (name, provider) in models {
            let name = name.as_ref();
            let mut spellings = vec![name];
            if let Some((_, last)) = name.rsplit_once('/') {
                spellings.push(last);
            }
            for spelling in spellings {
                if let Some(pattern) = name_pattern(spelling, 3) {
                    terms.push((pattern, LeakSource::Model(name.to_string())));
                }
            }
            if let Some(pattern) = name_pattern(provider.as_ref(), 2) {
                terms.push((pattern, LeakSource::Provider(provider.as_ref().to_string())));
            }
        }
        // Every common term begins and ends with an ASCII letter or digit.
        let common = SELF_IDENTIFICATIONS
            .iter()
            .map(|(_, pattern)| format!("{BOUNDARY}(?:{pattern}){BOUNDARY}"));
        let any = Regex::new(&format!(
            "(?i){}",
            terms
                .iter()
                .map(|(pattern, _)| pattern.clone())
                .chain(common)
                .collect::<Vec<_>>()
                .join("|")
        ))
        .expect("identity terms are valid patterns (names are escaped)");
        let study_terms = terms
            .into_iter()
            .map(|(pattern, source)| (anchored(&pattern), source))
            .collect();
        IdentityDetector { any, study_terms }
    }

    /// Every mention of a model, a maker or a self-identification in `text`, in order.
    pub fn find(&self, text: &str) -> Vec<Leak> {
        self.any
            .find_iter(text)
            .map(|m| Leak {
                matched: m.as_str().to_string(),
                start: m.start(),
                source: self
                    .study_terms
                    .iter()
                    .chain(COMMON_TERMS.iter())
                    .find(|(term, _)| term.is_match(m.as_str()))
                    .map(|(_, source)| source.clone())
                    .unwrap_or(LeakSource::SelfIdentification("(unclassified)")),
            })
            .collect()
    }

    /// What a response's `identity_flag` holds: the distinct matched words (compared without case
    /// and extra spaces), in order of appearance, joined by ", "; `None` when the text is clean.
    pub fn flag(&self, text: &str) -> Option<String> {
        flag_text(&self.find(text))
    }
}

/// Mentions of the study's model names and providers and of common self-identifications in `text`
/// (see [`IdentityDetector`], which is what to use for many texts).
pub fn find_identity_leaks<N: AsRef<str>, P: AsRef<str>>(
    text: &str,
    models: &[(N, P)],
) -> Vec<Leak> {
    IdentityDetector::new(models).find(text)
}

/// The distinct matched words of `leaks` as one short text (at most 12 of them), or `None`.
pub fn flag_text(leaks: &[Leak]) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    for leak in leaks {
        let shown = leak
            .matched
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let key = shown.to_lowercase();
        if !seen.contains(&key) {
            seen.push(key);
            words.push(shown);
        }
    }
    if words.is_empty() {
        return None;
    }
    if words.len() > 12 {
        let more = words.len() - 12;
        words.truncate(12);
        words.push(format!("… {more} more"));
    }
    Some(words.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_MODELS: &[(&str, &str)] = &[];

    fn matched(text: &str, models: &[(&str, &str)]) -> Vec<String> {
        find_identity_leaks(text, models)
            .into_iter()
            .map(|leak| leak.matched)
            .collect()
    }

    /// The sentence a rater was shown before voting in a real study (Vicuna's questions, issue 10).
    #[test]
    fn the_real_leak_is_flagged() {
        let text = "As for me, I am an ordinary AI assistant created by Anthropic to be helpful.";
        let leaks = find_identity_leaks(text, NO_MODELS);
        assert_eq!(
            leaks.iter().map(|l| l.matched.as_str()).collect::<Vec<_>>(),
            ["I am an ordinary AI assistant created by", "Anthropic"]
        );
        assert_eq!(leaks[1].source, LeakSource::SelfIdentification("Anthropic"));
        assert_eq!(
            flag_text(&leaks).as_deref(),
            Some("I am an ordinary AI assistant created by, Anthropic")
        );
    }

    #[test]
    fn an_ordinary_answer_is_not_flagged() {
        let text = "To bake bread, mix flour, water, salt and yeast; knead for ten minutes, let it \
            rise until doubled, shape it and bake at 230 °C. A painting created by Monet hangs in the \
            kitchen of many bakers; the palm of your hand tells you when the dough is ready. Metadata, \
            meta-analysis and a coherent plan help. Llamas and alpacas eat grass. The model was built \
            by hand in 1990. Open the assistant drawer.";
        assert_eq!(matched(text, NO_MODELS), Vec::<String>::new());
        assert_eq!(IdentityDetector::new(NO_MODELS).flag(text), None);
    }

    #[test]
    fn study_model_names_match_with_separators_varied_and_case_ignored() {
        let models = [("gpt-4o", "OpenAI"), ("my-open-model-7b", "Acme Labs")];
        assert_eq!(matched("I'm GPT 4o.", &models), ["GPT 4o"]);
        assert_eq!(matched("Ask gpt4o or Gpt_4o", &models), ["gpt4o", "Gpt_4o"]);
        let leaks = find_identity_leaks("This is My Open Model 7B by acme-labs.", &models);
        assert_eq!(
            leaks.iter().map(|l| &l.source).collect::<Vec<_>>(),
            [
                &LeakSource::Model("my-open-model-7b".into()),
                &LeakSource::Provider("Acme Labs".into())
            ]
        );
        // Word-bounded: a name inside a longer word is not a mention.
        let models = [("orca-mini", "Acme Labs")];
        assert_eq!(
            matched("the orca-minimal and Acme Labsx", &models),
            Vec::<String>::new()
        );
    }

    #[test]
    fn names_behind_an_org_prefix_match_alone() {
        let models = [("HuggingFaceTB/SmolLM2-135M-Instruct", "")];
        let leaks = find_identity_leaks("I am SmolLM2-135M-Instruct, nice to meet you", &models);
        assert_eq!(leaks[0].matched, "SmolLM2-135M-Instruct");
        assert_eq!(
            leaks[0].source,
            LeakSource::Model("HuggingFaceTB/SmolLM2-135M-Instruct".into())
        );
    }

    #[test]
    fn names_in_scripts_without_spaces_match_inside_a_sentence() {
        let models = [("通义千问", "阿里云")];
        assert_eq!(
            matched("我是通义千问，由阿里云开发。", &models),
            ["通义千问", "阿里云"]
        );
    }

    #[test]
    fn stand_in_model_names_are_not_looked_for() {
        let models = [("human", ""), ("x", ""), ("trl-chosen", "")];
        assert_eq!(
            matched("As a human, I think the user is right.", &models),
            Vec::<String>::new()
        );
    }

    #[test]
    fn common_self_identifications() {
        for (text, expected) in [
            ("I'm ChatGPT, a large language model.", "ChatGPT"),
            (
                "As an AI language model developed by OpenAI, I",
                "language model developed by",
            ),
            ("I was trained by Google.", "I was trained by"),
            ("My creators at Meta AI", "My creators"),
            ("Je suis Mistral, un modèle.", "Mistral"),
            ("我是Claude，由Anthropic开发。", "Claude"),
            (
                "I am Qwen2.5, made by Alibaba Cloud.",
                "I am Qwen2.5, made by",
            ),
            ("Based on LLaMA-2 weights.", "LLaMA-2"),
            ("GPT-4-turbo here", "GPT-4"),
            ("I am DeepSeek-V3.", "DeepSeek"),
            ("SmolLM answers briefly.", "SmolLM"),
            ("Hugging Face hosts me.", "Hugging Face"),
            ("Ask Bard instead", "Bard"),
            ("Command R+ is a model by Cohere.", "Command R"),
        ] {
            let found = matched(text, NO_MODELS);
            assert!(
                found.iter().any(|m| m == expected),
                "{text:?}: expected {expected:?} among {found:?}"
            );
        }
    }

    /// Flags are prompts for review: ordinary uses of a name are flagged too, as documented.
    #[test]
    fn ordinary_uses_of_names_are_still_flagged() {
        assert_eq!(
            matched("Claude Monet painted water lilies.", NO_MODELS),
            ["Claude"]
        );
        assert_eq!(matched("Search Google for it.", NO_MODELS), ["Google"]);
    }

    #[test]
    fn case_matters_only_where_the_word_is_ordinary() {
        assert_eq!(
            matched("a palm tree; ideas cohere; the bard sang", NO_MODELS),
            Vec::<String>::new()
        );
        assert_eq!(matched("PaLM and Cohere", NO_MODELS), ["PaLM", "Cohere"]);
        assert_eq!(
            matched("OPENAI and anthropic", NO_MODELS),
            ["OPENAI", "anthropic"]
        );
    }

    #[test]
    fn flag_text_keeps_distinct_words_in_order() {
        let detector = IdentityDetector::new(&[("claude-3-haiku", "Anthropic")]);
        assert_eq!(
            detector
                .flag("Anthropic made Claude 3 Haiku; anthropic  again, ANTHROPIC")
                .as_deref(),
            Some("Anthropic, Claude 3 Haiku")
        );
    }
}
