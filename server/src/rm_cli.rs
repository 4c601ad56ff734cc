//! `moat rm`: reward models after training — `moat rm eval` on a benchmark file (RewardBench v1 or 2,
//! TRL, HH-RLHF; the arithmetic is `moat_trainer::benchmark`'s) or on a study's items that two or more
//! people rated, next to the raters' own agreement (`moat_trainer::ceiling`).

use std::collections::BTreeMap;

use moat_exports::{Choice, VoteRecord};
use moat_trainer::ceiling::RatedItem;

use crate::store::Store;

#[derive(clap::Subcommand, Debug)]
pub enum RmCommand {
    /// Score a trained reward model on a benchmark file (--data: RewardBench v1 or 2, TRL or HH-RLHF;
    /// per-subset accuracy with 95% intervals, RewardBench's section and overall scores), or on a
    /// study's items rated by two or more people (--study), next to the raters' own agreement with the
    /// majority: the ceiling.
    Eval {
        /// Read this study's votes instead of --data.
        #[arg(long, conflicts_with = "data", required_unless_present = "data")]
        study: Option<String>,
        #[command(flatten)]
        args: moat_trainer::RmEvalArgs,
    },
}

/// A study's decided votes grouped into items: one prompt and one model pair, sides normalised (the
/// model whose name sorts first is `a`). Ties and both-bad votes are not decided and left out.
pub fn rated_items(records: &[VoteRecord]) -> Vec<RatedItem> {
    let mut items: BTreeMap<(&str, &str, &str), RatedItem> = BTreeMap::new();
    for record in records {
        let winner_is_left = match record.choice {
            Choice::Left => true,
            Choice::Right => false,
            _ => continue,
        };
        let left_is_a = record.left_model <= record.right_model;
        let (a_model, b_model, a_text, b_text) = if left_is_a {
            (
                &record.left_model,
                &record.right_model,
                &record.left_response,
                &record.right_response,
            )
        } else {
            (
                &record.right_model,
                &record.left_model,
                &record.right_response,
                &record.left_response,
            )
        };
        let item = items
            .entry((record.prompt_id.as_str(), a_model, b_model))
            .or_insert_with(|| RatedItem {
                prompt: record.conversation.clone(),
                a: a_text.clone(),
                b: b_text.clone(),
                votes_for_a: 0,
                votes_for_b: 0,
            });
        if winner_is_left == left_is_a {
            item.votes_for_a += 1;
        } else {
            item.votes_for_b += 1;
        }
    }
    items.into_values().collect()
}

pub async fn run(command: RmCommand, database_url: &str) -> anyhow::Result<()> {
    match command {
        RmCommand::Eval { study: None, args } => {
            tokio::task::spawn_blocking(move || moat_trainer::run_rm_eval(args)).await??;
        }
        RmCommand::Eval {
            study: Some(slug),
            args,
        } => {
            let store = Store::connect(database_url).await?;
            let backend = crate::service::AppService::new(store, String::new());
            let study = backend.store.study(&slug).await?;
            let records = backend.study_records(&study).await?;
            backend.store.close().await;
            let items = rated_items(&records);
            eprintln!(
                "study {slug}: {} votes on {} items (prompt and model pair); quality checks and excluded raters left out",
                records.len(),
                items.len()
            );
            tokio::task::spawn_blocking(move || moat_trainer::run_rm_ceiling(args, items))
                .await??;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_exports::{Message, Openness};

    fn vote(prompt: &str, left: &str, right: &str, choice: Choice) -> VoteRecord {
        VoteRecord {
            vote_id: 0,
            study: "s".into(),
            prompt_id: prompt.into(),
            conversation: vec![Message::new("user", prompt)],
            category: None,
            language: None,
            left_model: left.into(),
            left_openness: Openness::Open,
            left_response: format!("{left} answers {prompt}"),
            right_model: right.into(),
            right_openness: Openness::Closed,
            right_response: format!("{right} answers {prompt}"),
            choice,
            rater: "r".into(),
            created_ms: 0,
            source_guess: None,
            source_confidence: None,
            rationale: None,
            time_on_page_ms: None,
            assignment_kind: "regular".into(),
            completion_code: None,
            left_history: Vec::new(),
            right_history: Vec::new(),
        }
    }

    /// `moat rm eval` takes a file or a study, never both, and needs one of them.
    #[test]
    fn rm_eval_takes_a_file_or_a_study() {
        use crate::cli::{Cli, Command};
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["moat", "rm", "eval", "--model", "m"], args].concat())
        };
        let cli = parse(&["--study", "s", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rm(RmCommand::Eval { study: Some(ref slug), ref args }) if slug == "s" && args.json
        ));
        let cli = parse(&["--data", "f.jsonl", "--format", "rewardbench2"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Rm(RmCommand::Eval { study: None, ref args })
                if args.format == moat_trainer::benchmark::BenchFormat::Rewardbench2
        ));
        assert!(parse(&[]).is_err(), "neither a file nor a study");
        assert!(parse(&["--data", "f", "--study", "s"]).is_err(), "both");
        assert!(parse(&["--data", "f", "--format", "csv"]).is_err());
    }

    /// Votes with the models on either side land in one item per prompt and pair, counted for the
    /// right model; ties are not decided and are left out.
    #[test]
    fn votes_on_either_side_count_for_the_same_item() {
        let records = vec![
            vote("p1", "llama", "gpt", Choice::Left),  // llama
            vote("p1", "gpt", "llama", Choice::Right), // llama
            vote("p1", "gpt", "llama", Choice::Left),  // gpt
            vote("p1", "gpt", "llama", Choice::Tie),
            vote("p2", "gpt", "llama", Choice::Left), // gpt
        ];
        let items = rated_items(&records);
        assert_eq!(items.len(), 2);
        let p1 = &items[0];
        assert_eq!(p1.a, "gpt answers p1");
        assert_eq!(p1.b, "llama answers p1");
        assert_eq!((p1.votes_for_a, p1.votes_for_b), (1, 2));
        assert_eq!((items[1].votes_for_a, items[1].votes_for_b), (1, 0));
    }
}
