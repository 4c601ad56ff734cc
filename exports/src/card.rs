//! The dataset card: a `README.md` with the Hugging Face YAML header (license, task categories, size
//! category, configs and their split files) and a datasheet of how the data was collected. Every
//! figure is passed in; nothing here computes statistics or reads a clock.

use std::fmt::Write as _;

use crate::record::rfc3339_utc;
use crate::Openness;

/// One Hugging Face config: a format's files, one per split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CardConfig {
    /// e.g. `trl`, `votes`.
    pub name: String,
    /// (split, path relative to the README).
    pub data_files: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CardModel {
    pub name: String,
    pub openness: Openness,
    pub provider: Option<String>,
}

/// An agreement figure, already computed and stated with its uncertainty and method, e.g.
/// ("Krippendorff's alpha, 3 raters/item", "0.41 (95% CI 0.35–0.47, n = 812 items, bootstrap)").
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgreementFigure {
    pub label: String,
    pub value: String,
}

/// Everything the card states.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CardInfo {
    pub pretty_name: String,
    pub study_slug: String,
    pub summary: String,
    /// An SPDX id or a Hugging Face licence id (`apache-2.0`, `cc-by-4.0`, `mit`, …).
    pub license: String,
    pub language: Vec<String>,
    /// The instructions raters were shown (markdown), quoted verbatim.
    pub instructions: String,
    pub raters: u64,
    /// Raters excluded from the export, and why.
    pub raters_excluded: u64,
    pub recruitment: Option<String>,
    pub items: u64,
    pub votes: u64,
    /// The configured number of ratings per item.
    pub target_votes_per_item: Option<u32>,
    /// The share of each rater's comparisons that were quality checks (attention or gold items).
    pub attention_check_rate: Option<f64>,
    /// Check votes that did not pick the expected response.
    pub attention_checks_failed: Option<u64>,
    /// Free-text statements of what was left out (filters, excluded raters, ties, …).
    pub exclusions: Vec<String>,
    pub agreement: Vec<AgreementFigure>,
    pub models: Vec<CardModel>,
    pub first_vote_ms: Option<i64>,
    pub last_vote_ms: Option<i64>,
    /// Rows in the largest config, which sets the size category.
    pub rows: u64,
    pub configs: Vec<CardConfig>,
}

/// Hugging Face's `size_categories` bucket for a row count.
pub fn size_category(rows: u64) -> &'static str {
    match rows {
        0..=999 => "n<1K",
        1_000..=9_999 => "1K<n<10K",
        10_000..=99_999 => "10K<n<100K",
        100_000..=999_999 => "100K<n<1M",
        1_000_000..=9_999_999 => "1M<n<10M",
        10_000_000..=99_999_999 => "10M<n<100M",
        100_000_000..=999_999_999 => "100M<n<1B",
        _ => "1B<n<10B",
    }
}

/// A YAML double-quoted scalar (valid JSON strings are valid YAML double-quoted scalars).
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Renders the card. Deterministic: the same info gives the same text.
pub fn dataset_card(info: &CardInfo) -> String {
    let mut card = String::new();
    let out = &mut card;
    // --- YAML header ---
    out.push_str("---\n");
    let _ = writeln!(out, "pretty_name: {}", yaml_string(&info.pretty_name));
    let _ = writeln!(out, "license: {}", yaml_string(&info.license));
    if !info.language.is_empty() {
        out.push_str("language:\n");
        for language in &info.language {
            let _ = writeln!(out, "- {}", yaml_string(language));
        }
    }
    out.push_str("task_categories:\n- text-generation\n- text-classification\n");
    out.push_str("tags:\n- human-feedback\n- preference\n- rlhf\n- dpo\n- moat\n");
    let _ = writeln!(
        out,
        "size_categories:\n- {}",
        yaml_string(size_category(info.rows))
    );
    if !info.configs.is_empty() {
        out.push_str("configs:\n");
        for (index, config) in info.configs.iter().enumerate() {
            let _ = writeln!(out, "- config_name: {}", yaml_string(&config.name));
            if index == 0 {
                out.push_str("  default: true\n");
            }
            out.push_str("  data_files:\n");
            for (split, path) in &config.data_files {
                let _ = writeln!(
                    out,
                    "  - split: {}\n    path: {}",
                    yaml_string(split),
                    yaml_string(path)
                );
            }
        }
    }
    out.push_str("---\n\n");

    // --- Body ---
    let _ = writeln!(out, "# {}\n", info.pretty_name);
    let _ = writeln!(out, "{}\n", info.summary.trim());
    let _ = writeln!(
        out,
        "Collected with Moat, study `{}`: blind pairwise comparisons of model responses \
         by human raters, who saw two anonymous responses side by side (sides randomized per comparison) \
         and chose the better one, a tie, or \"both bad\".\n",
        info.study_slug
    );

    out.push_str("## Configurations\n\n| config | split | file |\n|---|---|---|\n");
    for config in &info.configs {
        for (split, path) in &config.data_files {
            let _ = writeln!(out, "| `{}` | {} | `{}` |", config.name, split, path);
        }
    }
    out.push('\n');

    out.push_str("## Datasheet\n\n### Collection\n\n");
    let _ = writeln!(
        out,
        "- Raters: {} ({} excluded from this export)",
        info.raters, info.raters_excluded
    );
    if let Some(recruitment) = &info.recruitment {
        let _ = writeln!(out, "- Recruitment: {recruitment}");
    }
    let _ = writeln!(out, "- Items (prompt and response pair): {}", info.items);
    let _ = writeln!(out, "- Votes: {}", info.votes);
    let achieved = if info.items > 0 {
        format!("{:.2}", info.votes as f64 / info.items as f64)
    } else {
        "n/a".to_string()
    };
    match info.target_votes_per_item {
        Some(target) => {
            let _ = writeln!(
                out,
                "- Votes per item: {achieved} on average (target {target})"
            );
        }
        None => {
            let _ = writeln!(out, "- Votes per item: {achieved} on average");
        }
    }
    match (info.attention_check_rate, info.attention_checks_failed) {
        (Some(rate), failed) => {
            let _ = write!(
                out,
                "- Quality checks (attention and gold items): {:.1}% of assignments",
                rate * 100.0
            );
            if let Some(failed) = failed {
                let _ = write!(out, ", {failed} failed");
            }
            out.push('\n');
        }
        (None, _) => out.push_str("- Quality checks (attention and gold items): none\n"),
    }
    let date = |ms: Option<i64>| {
        ms.map(|ms| rfc3339_utc(ms)[..10].to_string())
            .unwrap_or_else(|| "n/a".to_string())
    };
    let _ = writeln!(
        out,
        "- Date range of votes (UTC): {} to {}",
        date(info.first_vote_ms),
        date(info.last_vote_ms)
    );

    out.push_str("\n### Instructions shown to raters\n\n");
    if info.instructions.trim().is_empty() {
        out.push_str("(none)\n");
    } else {
        for line in info.instructions.trim().lines() {
            if line.is_empty() {
                out.push_str(">\n");
            } else {
                let _ = writeln!(out, "> {line}");
            }
        }
    }

    out.push_str("\n### Exclusions\n\n");
    if info.exclusions.is_empty() {
        out.push_str("None.\n");
    } else {
        for exclusion in &info.exclusions {
            let _ = writeln!(out, "- {exclusion}");
        }
    }

    out.push_str("\n### Agreement\n\n");
    if info.agreement.is_empty() {
        out.push_str("Not computed (no multiply-rated items).\n");
    } else {
        for figure in &info.agreement {
            let _ = writeln!(out, "- {}: {}", figure.label, figure.value);
        }
    }

    out.push_str("\n### Models\n\n| model | weights | provider |\n|---|---|---|\n");
    for model in &info.models {
        let openness = match model.openness {
            Openness::Open => "open weights",
            Openness::Closed => "closed (API)",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            model.name,
            openness,
            model.provider.as_deref().unwrap_or("")
        );
    }

    out.push_str(
        "\n### Formats\n\n\
         - `trl`/`dpo`: `prompt`, `chosen`, `rejected` (TRL preference, explicit prompt; conversational when \
         these are lists of `{role, content}`).\n\
         - `kto`: `prompt`, `completion`, `label`, one row per side of a decided vote.\n\
         - `hh-rlhf`: `chosen`, `rejected` as `\\n\\nHuman: …\\n\\nAssistant: …` transcripts.\n\
         - `openai`: OpenAI preference fine-tuning (`input.messages`, `preferred_output`, `non_preferred_output`).\n\
         - `arena`: Chatbot Arena battles (`model_a`, `model_b`, `winner`, `judge`, `conversation_a/b`, …).\n\
         - `votes`: every vote with all recorded fields.\n\n\
         Ties and both-bad votes appear only in `arena`, `votes` and (both-bad, as two undesirable rows) `kto`. \
         Splits are by prompt: a prompt is never in two splits.\n",
    );
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_category_boundaries() {
        assert_eq!(size_category(999), "n<1K");
        assert_eq!(size_category(1000), "1K<n<10K");
        assert_eq!(size_category(1_000_000), "1M<n<10M");
    }
}
