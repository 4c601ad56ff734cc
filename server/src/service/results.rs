//! What a study's votes say: export records, the analysis and the leaderboard page, battles, quality
//! checks, and the study report.

use super::*;

impl AppService {
    /// Every preference vote of the study as export records (in vote order): without the votes of
    /// raters marked excluded and without votes on quality checks.
    pub async fn study_records(
        &self,
        study: &StudyRow,
    ) -> Result<Vec<moat_exports::VoteRecord>, StoreError> {
        use futures::TryStreamExt;
        let excluded = self.store.excluded_raters(study.id).await?;
        let records: Vec<moat_exports::VoteRecord> =
            self.store.vote_records(study).try_collect().await?;
        Ok(records
            .into_iter()
            .filter(|r| !excluded.contains(&r.rater) && !r.is_quality_check())
            .collect())
    }

    /// The study's statistics, computed off the async threads (the bootstrap is CPU work). Votes on
    /// comparisons where a response names a model or its maker are counted, and left out unless
    /// `include_flagged` (as Chatbot Arena drops such battles: the rater may have known a model).
    /// Raters the rigging tests flag (`moat_stats::rigging`, run on all of the study's preference
    /// votes) are listed, and their votes left out when `drop_flagged_raters`.
    pub async fn analysis(
        &self,
        slug: &str,
        options: moat_stats::LeaderboardOptions,
        include_flagged: bool,
        drop_flagged_raters: bool,
    ) -> Result<(StudyRow, crate::analysis::StudyAnalysis), BackendError> {
        self.analysis_with(
            slug,
            options,
            include_flagged,
            drop_flagged_raters,
            crate::analysis::StudyQuery::default(),
        )
        .await
    }

    /// [`AppService::analysis`] restricted to a category and with de-duplication chosen
    /// (`crate::analysis::StudyQuery`); an unknown category is a bad request naming those there are.
    pub async fn analysis_with(
        &self,
        slug: &str,
        options: moat_stats::LeaderboardOptions,
        include_flagged: bool,
        drop_flagged_raters: bool,
        mut query: crate::analysis::StudyQuery,
    ) -> Result<(StudyRow, crate::analysis::StudyAnalysis), BackendError> {
        options.validate().map_err(BackendError::BadRequest)?;
        let study = self.open_study(slug).await?;
        let mut records = self.study_records(&study).await?;
        query.prompt_tags = self.store.prompt_judgements(study.id).await?.tags;
        // The rigging tests see the same votes as the rater table's flags (`rater_checks`):
        // identity flags say nothing about the rater, so they do not decide which votes are tested.
        let tested = crate::analysis::rater_votes(&records);
        let flagged = self.store.flagged_vote_ids(study.id).await?;
        let flagged_votes = records
            .iter()
            .filter(|r| flagged.contains(&r.vote_id))
            .count() as u64;
        if !include_flagged {
            records.retain(|r| !flagged.contains(&r.vote_id));
        }
        let name = study.slug.clone();
        let arena = study.settings.is_arena();
        let analysis = tokio::task::spawn_blocking(move || {
            let checks: Vec<moat_stats::RaterCheck> =
                moat_stats::check_raters(&tested, &moat_stats::RiggingOptions::default())
                    .into_iter()
                    .filter(moat_stats::RaterCheck::is_flagged)
                    .collect();
            let flagged_raters: std::collections::BTreeSet<&str> =
                checks.iter().map(|c| c.rater.as_str()).collect();
            let flagged_rater_votes = records
                .iter()
                .filter(|r| flagged_raters.contains(r.rater.as_str()))
                .count() as u64;
            if drop_flagged_raters {
                records.retain(|r| !flagged_raters.contains(r.rater.as_str()));
            }
            let mut analysis =
                crate::analysis::analyse_with(&name, &records, &options, &query, arena)?;
            analysis.flagged_votes = flagged_votes;
            analysis.flagged_votes_left_out = !include_flagged;
            analysis.flagged_rater_votes = flagged_rater_votes;
            analysis.flagged_raters_left_out = drop_flagged_raters;
            analysis.flagged_raters = checks;
            Ok(analysis)
        })
        .await
        .map_err(|e| crate::incident::internal("analysis task failed", &e))?
        .map_err(BackendError::BadRequest)?;
        Ok((study, analysis))
    }

    /// A study's votes as battles (identity-flagged comparisons left out unless `include_flagged`),
    /// for a composite ranking across sources.
    pub async fn study_battles(
        &self,
        slug: &str,
        include_flagged: bool,
    ) -> Result<Vec<moat_stats::Battle>, BackendError> {
        let study = self.open_study(slug).await?;
        let mut records = self.study_records(&study).await?;
        if !include_flagged {
            let flagged = self.store.flagged_vote_ids(study.id).await?;
            records.retain(|r| !flagged.contains(&r.vote_id));
        }
        Ok(crate::analysis::battles(&records))
    }

    /// The rigging and carelessness tests (`moat_stats::rigging`) on the study's preference votes,
    /// by rater: the same votes, and so the same flags, as `analysis` finds. Computed on demand from
    /// the votes (linear in their number), so nothing is stored that could go stale.
    pub async fn rater_checks(
        &self,
        study_id: i64,
    ) -> Result<BTreeMap<String, moat_stats::RaterCheck>, StoreError> {
        let votes = self.store.rater_votes(study_id).await?;
        Ok(
            moat_stats::check_raters(&votes, &moat_stats::RiggingOptions::default())
                .into_iter()
                .map(|check| (check.rater.clone(), check))
                .collect(),
        )
    }

    pub(crate) async fn leaderboard_page(
        &self,
        slug: &str,
        query: LeaderboardPageQuery,
    ) -> Result<LeaderboardView, BackendError> {
        let (study, analysis) = self
            .analysis_with(
                slug,
                moat_stats::LeaderboardOptions::default(),
                false,
                query.drop_flagged,
                crate::analysis::StudyQuery {
                    category: query.category.clone().filter(|c| !c.trim().is_empty()),
                    deduplicate: None,
                    history_step: Some(moat_stats::HistoryStep::Day),
                    history_window: 1000,
                    ..Default::default()
                },
            )
            .await?;
        let openness = self
            .store
            .models(study.id)
            .await?
            .into_iter()
            .map(|m| (m.name, m.openness))
            .collect();
        let mut view = crate::analysis::page_view(&study.slug, &study.title, &analysis, &openness);
        view.style_control = query.style_control;
        // What the figures above leave out, so nobody has to guess.
        let excluded = self.store.excluded_raters(study.id).await?.len();
        let (check_votes, _) = self.store.study_checks(study.id).await?;
        if excluded > 0 || check_votes > 0 {
            view.sections.push(ResultSection {
                title: "Left out".into(),
                text: format!(
                    "Not counted: the votes of {}, and {} on quality checks (they score raters, not models).",
                    match excluded {
                        1 => "1 excluded rater".to_string(),
                        n => format!("{n} excluded raters"),
                    },
                    match check_votes {
                        1 => "1 vote".to_string(),
                        n => format!("{n} votes"),
                    }
                ),
            });
        }
        if !analysis.flagged_raters.is_empty() {
            let raters = match analysis.flagged_raters.len() {
                1 => "1 rater".to_string(),
                n => format!("{n} raters"),
            };
            view.sections.push(ResultSection {
                title: "Flagged raters".into(),
                text: format!(
                    "{raters} with {} {} by the rigging and carelessness tests (reasons in the \
                     study's rater table): their votes {}.",
                    match analysis.flagged_rater_votes {
                        1 => "1 vote".to_string(),
                        n => format!("{n} votes"),
                    },
                    if analysis.flagged_raters.len() == 1 {
                        "is flagged"
                    } else {
                        "are flagged"
                    },
                    if analysis.flagged_raters_left_out {
                        "are left out of the figures above"
                    } else {
                        "are counted above (`drop_flagged=true` on the API, `moat leaderboard \
                         --drop-flagged` or the link at the top leave them out)"
                    }
                ),
            });
        }
        if analysis.flagged_votes > 0 {
            view.sections.push(ResultSection {
                title: "Identity flags".into(),
                text: format!(
                    "Not counted: {} on comparisons where a response names a model or its maker (the \
                     rater may have known who wrote it; see the study page). `moat leaderboard \
                     --include-flagged` and the API's `include_flagged=true` count them.",
                    match analysis.flagged_votes {
                        1 => "1 vote".to_string(),
                        n => format!("{n} votes"),
                    }
                ),
            });
        }
        Ok(view)
    }

    pub(crate) async fn study_report(&self, slug: &str) -> Result<StudyReport, BackendError> {
        let study = self.open_study(slug).await?;
        let summary = self.store.study_summary(slug).await?;
        let models = self.store.models(study.id).await?;
        let pairs = self.store.pair_progress(study.id, &models).await?;
        let mut durations = self.store.vote_durations_ms(study.id).await?;
        let results = self.store.model_results(study.id).await?;
        let mut raters = self.store.rater_summaries(study.id, 500).await?;
        let checks = self.rater_checks(study.id).await?;
        for rater in &mut raters {
            if let Some(check) = checks.get(&rater.pseudonym) {
                rater.flags = check
                    .flags
                    .iter()
                    .map(|flag| moat_app::wire::RaterFlagView {
                        kind: flag.kind.as_str().to_string(),
                        reason: flag.reason.clone(),
                    })
                    .collect();
            }
        }
        let (flagged, flagged_total) = self.store.flagged_responses(study.id, 500).await?;
        let battles = if study.settings.is_arena() {
            let summary = self.store.battle_summary(study.id).await?;
            Some(BattleReport {
                complete: summary.complete,
                void: summary.void,
                streaming: summary.streaming,
                recent_void: summary
                    .recent_void
                    .into_iter()
                    .map(|v| VoidBattleView {
                        battle: v.battle,
                        model_a: v.model_a,
                        model_b: v.model_b,
                        error: v.error,
                    })
                    .collect(),
                contestants: match self.arena() {
                    Some(arena) if study.settings.contestants.is_empty() => arena
                        .hub()
                        .registry()
                        .names()
                        .iter()
                        .map(|n| n.to_string())
                        .collect(),
                    _ => study.settings.contestants.clone(),
                },
                models_available: self.arena().is_some(),
            })
        } else {
            None
        };
        Ok(StudyReport {
            summary,
            instructions: study.instructions.clone(),
            settings: study.settings.clone(),
            pairs,
            median_seconds_per_vote: median(&mut durations).map(|ms| ms / 1000.0),
            results,
            raters,
            flagged,
            flagged_total,
            battles,
            reward_model: self.active.status(study.id),
        })
    }
}
