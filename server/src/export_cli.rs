//! `moat export`: options into an export request, files out, and an optional dataset card.

use moat_exports::card::{dataset_card, AgreementFigure, CardConfig, CardInfo, CardModel};
use moat_exports::options::Splits;
use moat_exports::table::Container;

use crate::cli::ExportArgs;
use crate::export::{export_splits, export_to_file, ExportChoices, ExportRequest};
use crate::store::Store;

pub async fn run(store: &Store, args: ExportArgs) -> anyhow::Result<()> {
    let study = store.study(&args.study).await?;
    let choices = ExportChoices {
        container: if args.parquet {
            Container::Parquet
        } else if args.csv {
            Container::Csv
        } else {
            Container::Jsonl
        },
        conversational: args.conversational,
        models: args.models.clone(),
        from: args.from.clone(),
        until: args.until.clone(),
        exclude_ties: args.exclude_ties,
        exclude_both_bad: args.exclude_both_bad,
        majority: args.majority,
        min_agreement: args.min_agreement,
    };
    let mut request = ExportRequest::with_choices(&args.format, &choices)?;
    if !args.include_excluded_raters {
        request.exclude_marked_raters(store, &study).await?;
    }
    if args.exclude_flagged {
        request.exclude_flagged_votes(store, &study).await?;
    }

    let (card_dir, data_files, rows) = match &args.split {
        Some(text) => {
            let splits =
                Splits::parse(text).map_err(|e| anyhow::anyhow!("--split {text:?}: {e}"))?;
            let written =
                export_splits(store, &study, &request, splits, args.seed, &args.out).await?;
            let mut rows = 0;
            let mut files = Vec::new();
            for (split, path, summary) in &written {
                println!("{}: {summary}", path.display());
                rows += summary.rows_written;
                files.push((
                    split.clone(),
                    path.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string(),
                ));
            }
            (args.out.clone(), files, rows)
        }
        None => {
            let summary = export_to_file(store, &study, &request, &args.out).await?;
            println!("{}: {summary}", args.out.display());
            let dir = args
                .out
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            let name = args
                .out
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (dir, vec![("train".to_string(), name)], summary.rows_written)
        }
    };

    if args.card {
        let backend = crate::service::AppService::new(store.clone(), String::new());
        let mut records = backend.study_records(&study).await?;
        let flagged = store.flagged_vote_ids(study.id).await?;
        let flagged_votes = records
            .iter()
            .filter(|r| flagged.contains(&r.vote_id))
            .count();
        if args.exclude_flagged {
            // The card describes the data written: without them.
            records.retain(|r| !flagged.contains(&r.vote_id));
        }
        let options = moat_stats::LeaderboardOptions {
            bootstrap_rounds: 200,
            ..Default::default()
        };
        let analysis = crate::analysis::analyse(&study.slug, &records, &options);
        let models = store.models(study.id).await?;
        let mut raters: Vec<&str> = records.iter().map(|r| r.rater.as_str()).collect();
        raters.sort_unstable();
        raters.dedup();
        let mut items: Vec<&str> = records.iter().map(|r| r.prompt_id.as_str()).collect();
        items.sort_unstable();
        items.dedup();
        let mut exclusions = Vec::new();
        if !request.format.keeps(moat_exports::Choice::Tie) {
            exclusions.push(format!(
                "{} leaves out ties and both-bad votes (no preference).",
                request.format.as_str()
            ));
        }
        if !request.filter.models.is_empty() {
            exclusions.push(format!(
                "Only comparisons between: {}.",
                args.models.join(", ")
            ));
        }
        let excluded = store.excluded_raters(study.id).await?.len() as u64;
        if excluded > 0 && !args.include_excluded_raters {
            exclusions.push(format!(
                "{excluded} raters marked excluded (by the researcher, or automatically after failing more quality checks than allowed) are left out."
            ));
        }
        let (check_votes, checks_failed) = store.study_checks(study.id).await?;
        if check_votes > 0 && request.filter.exclude_checks {
            exclusions.push(format!(
                "{check_votes} votes on quality checks (attention and gold items) score raters, not models, and are left out."
            ));
        }
        if flagged_votes > 0 {
            exclusions.push(format!(
                "{} where a response names a model or its maker (identity flags: the rater may have \
                 known who wrote it); {}.",
                match flagged_votes {
                    1 => "1 vote is on a comparison".to_string(),
                    n => format!("{n} votes are on comparisons"),
                },
                match (args.exclude_flagged, flagged_votes) {
                    (true, 1) => "it is left out of this export (--exclude-flagged)",
                    (true, _) => "they are left out of this export (--exclude-flagged)",
                    (false, 1) => "it is in this export, and Moat's leaderboard leaves it out unless asked",
                    (false, _) => "they are in this export, and Moat's leaderboard leaves them out unless asked",
                },
            ));
        }
        let agreement = &analysis.agreement;
        let info = CardInfo {
            pretty_name: study.title.clone(),
            study_slug: study.slug.clone(),
            summary: format!(
                "Blind pairwise human preferences collected with Moat in the study \"{}\".",
                study.title
            ),
            license: "other".into(),
            language: vec!["en".into()],
            instructions: study.instructions.clone(),
            raters: raters.len() as u64,
            raters_excluded: if args.include_excluded_raters {
                0
            } else {
                excluded
            },
            recruitment: Some(format!(
                "Study link with participant id parameter {}",
                study.settings.participant_param
            )),
            items: items.len() as u64,
            votes: records.len() as u64,
            target_votes_per_item: Some(study.settings.ratings_per_item),
            attention_check_rate: (study.settings.check_rate > 0.0 || check_votes > 0)
                .then_some(study.settings.check_rate),
            attention_checks_failed: (check_votes > 0).then_some(checks_failed as u64),
            exclusions,
            agreement: vec![AgreementFigure {
                label: agreement.method.clone(),
                value: agreement.summary.clone(),
            }],
            models: models
                .iter()
                .map(|m| CardModel {
                    name: m.name.clone(),
                    openness: m.openness,
                    provider: Some(m.provider.clone()).filter(|p| !p.is_empty()),
                })
                .collect(),
            first_vote_ms: records.iter().map(|r| r.created_ms).min(),
            last_vote_ms: records.iter().map(|r| r.created_ms).max(),
            rows,
            configs: vec![CardConfig {
                name: request.format.as_str().to_string(),
                data_files,
            }],
        };
        let path = card_dir.join("README.md");
        std::fs::write(&path, dataset_card(&info))?;
        println!("{}: dataset card", path.display());
    }
    Ok(())
}
