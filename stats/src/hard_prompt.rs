//! LMArena's "hard prompt" category: an LLM judge says which of seven criteria a prompt meets, and
//! a prompt that meets six or more is hard (LMArena's blog of 2024-05-17, "Introducing Hard Prompts
//! Category in Chatbot Arena"; its judge was Llama-3-70B-Instruct at temperature 0).
//!
//! This module holds the criteria, the instructions sent to the judge (our wording of the same seven
//! questions, with the same answer format: a list of criterion numbers such as `[1, 2, 6]`), the
//! reading of the judge's answer, and the rule. Public Arena files carry the same judgement as
//! `category_tag["criteria_v0.1"]`, seven booleans keyed by [`CRITERIA`]'s names, which the battles
//! reader turns into the [`HARD_PROMPT`] tag.

/// The tag a hard prompt gets among a leaderboard's categories.
pub const HARD_PROMPT: &str = "hard-prompt";

/// Criteria a prompt must meet to be hard.
pub const HARD_THRESHOLD: usize = 6;

/// The seven criteria: LMArena's key (as in `criteria_v0.1`) and the question the judge answers.
pub const CRITERIA: [(&str, &str); 7] = [
    (
        "specificity",
        "Specificity: does the prompt ask for a specific output, such as code, a mathematical \
         solution, a logical simplification, a problem-solving strategy or a hardware \
         recommendation?",
    ),
    (
        "domain_knowledge",
        "Domain knowledge: does the prompt cover one or more specific domains, such as \
         programming, mathematics, logic or engineering?",
    ),
    (
        "complexity",
        "Complexity: does the prompt have several levels of reasoning, components or variables, \
         as in a multi-step problem?",
    ),
    (
        "problem_solving",
        "Problem solving: does the prompt require the assistant to work out a solution for a \
         specific setup, rather than recall an existing fact?",
    ),
    (
        "creativity",
        "Creativity: does the prompt call for a creative approach, a solution tailored to the \
         user's own needs and limits?",
    ),
    (
        "technical_accuracy",
        "Technical accuracy: does a good answer have to be technically precise and correct?",
    ),
    (
        "real_world",
        "Real-world application: does the prompt relate to a practical use, such as setting up a \
         working system or writing code for a real task?",
    ),
];

/// The judge's instructions (its system message); the user message is the prompt's user turns.
pub fn judge_instructions() -> String {
    let mut text = String::from(
        "Your task is to judge how well an input prompt can test the abilities of advanced AI \
         assistants.\n\nAnalyse the prompt against these 7 criteria:\n",
    );
    for (number, (_, question)) in CRITERIA.iter().enumerate() {
        text.push_str(&format!("{}. {question}\n", number + 1));
    }
    text.push_str(
        "\nList the numbers of the criteria the prompt meets as a Python list, for example \
         \"[1, 3, 6]\" (or \"[]\" for none). Do not explain your choice.",
    );
    text
}

/// Why a judge's answer could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JudgeAnswerError {
    /// No list of criterion numbers in the answer.
    NoList,
    /// Two different lists: the judge hedged, and neither is taken (LMArena's rule).
    Ambiguous(Vec<Vec<usize>>),
}

impl std::fmt::Display for JudgeAnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JudgeAnswerError::NoList => {
                f.write_str("the answer holds no list of criterion numbers such as [1, 2, 6]")
            }
            JudgeAnswerError::Ambiguous(lists) => write!(
                f,
                "the answer holds {} different lists of criterion numbers ({:?}); none is taken",
                lists.len(),
                lists
            ),
        }
    }
}

impl std::error::Error for JudgeAnswerError {}

/// The criteria a judge's answer names, as indices into [`CRITERIA`] in ascending order.
///
/// The answer must hold exactly one distinct bracketed list of the digits 1–7 (`[1, 2, 6]`,
/// `[1,2,6]` or `[]`); anything else around it is ignored. Lists of other numbers (`[2024]`,
/// `[8]`) are not criterion lists and are skipped. No list, or two different ones, is an error:
/// LMArena's reader counts such an answer as meeting no criterion, which would silently make a
/// prompt easy; Moat reports it instead and stores nothing, so a later run asks again.
pub fn parse_judge_answer(answer: &str) -> Result<Vec<usize>, JudgeAnswerError> {
    let mut lists: Vec<Vec<usize>> = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = after[..close].trim();
        rest = &after[close + 1..];
        let numbers: Option<Vec<usize>> = if inside.is_empty() {
            Some(Vec::new())
        } else {
            inside
                .split(',')
                .map(|item| match item.trim() {
                    digit if digit.len() == 1 => digit
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=CRITERIA.len()).contains(n)),
                    _ => None,
                })
                .collect()
        };
        let Some(mut numbers) = numbers else { continue };
        numbers.sort_unstable();
        numbers.dedup();
        let indices: Vec<usize> = numbers.into_iter().map(|n| n - 1).collect();
        if !lists.contains(&indices) {
            lists.push(indices);
        }
    }
    match lists.len() {
        0 => Err(JudgeAnswerError::NoList),
        1 => Ok(lists.pop().expect("one list")),
        _ => Err(JudgeAnswerError::Ambiguous(
            lists
                .into_iter()
                .map(|l| l.into_iter().map(|i| i + 1).collect())
                .collect(),
        )),
    }
}

/// Whether a prompt meeting these criteria (indices into [`CRITERIA`]) is hard.
pub fn is_hard(criteria: &[usize]) -> bool {
    criteria.len() >= HARD_THRESHOLD
}

/// The criteria's keys, comma-separated (how the store keeps a judgement).
pub fn criteria_keys(criteria: &[usize]) -> String {
    criteria
        .iter()
        .filter_map(|&i| CRITERIA.get(i).map(|(key, _)| *key))
        .collect::<Vec<_>>()
        .join(",")
}

/// The indices of comma-separated criterion keys (unknown keys are skipped).
pub fn criteria_from_keys(keys: &str) -> Vec<usize> {
    keys.split(',')
        .filter_map(|key| CRITERIA.iter().position(|(k, _)| *k == key.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instructions_number_all_seven_criteria_and_ask_for_a_list() {
        let text = judge_instructions();
        for number in 1..=7 {
            assert!(text.contains(&format!("\n{number}. ")), "{text}");
        }
        assert!(!text.contains("\n8. "));
        assert!(text.contains("[1, 3, 6]"));
    }

    #[test]
    fn answers_are_read_as_lmarena_writes_them_and_more_leniently() {
        assert_eq!(
            parse_judge_answer("[1, 2, 3, 4, 6, 7]"),
            Ok(vec![0, 1, 2, 3, 5, 6])
        );
        assert_eq!(parse_judge_answer("Criteria met: [7,1]."), Ok(vec![0, 6]));
        assert_eq!(parse_judge_answer("[]"), Ok(vec![]));
        // The same list twice is one answer; a year in brackets is not a list of criteria.
        assert_eq!(
            parse_judge_answer("[2, 5] ... so, again, [5, 2] (as of [2024])"),
            Ok(vec![1, 4])
        );
        assert_eq!(parse_judge_answer("[1, 1, 2]"), Ok(vec![0, 1]));
    }

    #[test]
    fn no_list_or_two_lists_is_an_error_that_says_so() {
        assert_eq!(
            parse_judge_answer("This prompt is hard."),
            Err(JudgeAnswerError::NoList)
        );
        assert_eq!(parse_judge_answer("[8, 9]"), Err(JudgeAnswerError::NoList));
        let two = parse_judge_answer("[1, 2] or maybe [1, 2, 3]").unwrap_err();
        assert_eq!(
            two,
            JudgeAnswerError::Ambiguous(vec![vec![1, 2], vec![1, 2, 3]])
        );
        assert!(two.to_string().contains("2 different lists"), "{two}");
    }

    #[test]
    fn six_criteria_make_a_prompt_hard_and_five_do_not() {
        assert!(is_hard(&[0, 1, 2, 3, 4, 5]));
        assert!(is_hard(&[0, 1, 2, 3, 4, 5, 6]));
        assert!(!is_hard(&[0, 1, 2, 3, 4]));
        assert!(!is_hard(&[]));
    }

    #[test]
    fn keys_round_trip() {
        let criteria = vec![0, 2, 6];
        let keys = criteria_keys(&criteria);
        assert_eq!(keys, "specificity,complexity,real_world");
        assert_eq!(criteria_from_keys(&keys), criteria);
        assert_eq!(criteria_from_keys(""), Vec::<usize>::new());
    }
}
