//! Studies and their settings: creating, listing, changing, opening and closing them, and excluding
//! raters.

use super::*;

/// What a study's title and settings must satisfy, on creation and on every change.
pub(super) fn check_study_fields(
    title: &str,
    settings: &StudySettings,
) -> Result<(), BackendError> {
    if title.trim().is_empty() {
        return Err(BackendError::BadRequest("title must not be empty".into()));
    }
    if settings.items_per_rater == 0 {
        return Err(BackendError::BadRequest(
            "items_per_rater must be at least 1".into(),
        ));
    }
    let rate = settings.check_rate;
    if !(0.0..=1.0).contains(&rate) {
        return Err(BackendError::BadRequest(format!(
            "check_rate must be a share between 0 and 1, got {rate}"
        )));
    }
    for (field, link) in [
        ("redirect_url", &settings.redirect_url),
        ("screen_out_url", &settings.screen_out_url),
    ] {
        if let Some(link) = link {
            crate::domain::check_study_link(field, link).map_err(BackendError::BadRequest)?;
        }
    }
    check_arena_settings(settings)?;
    Ok(())
}

/// What an arena study's settings must satisfy.
pub(super) fn check_arena_settings(settings: &StudySettings) -> Result<(), BackendError> {
    let bad = |m: String| Err(BackendError::BadRequest(m));
    if !matches!(settings.kind.as_str(), "static" | "arena") {
        return bad(format!(
            "kind must be static or arena, got {:?}",
            settings.kind
        ));
    }
    if !matches!(settings.stream.as_str(), "live" | "together") {
        return bad(format!(
            "stream must be live or together, got {:?}",
            settings.stream
        ));
    }
    if !(1..=100_000).contains(&settings.max_prompt_chars) {
        return bad("max_prompt_chars must be between 1 and 100000".into());
    }
    if settings.sample_prompts.len() > 10_000
        || settings
            .sample_prompts
            .iter()
            .any(|p| p.chars().count() > settings.max_prompt_chars as usize)
    {
        return bad(format!(
            "sample_prompts: at most 10000, each at most max_prompt_chars ({}) characters",
            settings.max_prompt_chars
        ));
    }
    if !(1..=20).contains(&settings.max_turns) {
        return bad(format!(
            "max_turns must be between 1 and 20 (the prompt and its follow-ups), got {}",
            settings.max_turns
        ));
    }
    if settings.battles_per_hour == 0 {
        return bad("battles_per_hour must be at least 1".into());
    }
    let mut seen = std::collections::HashSet::new();
    for name in &settings.contestants {
        if name.trim().is_empty() || !seen.insert(name.as_str()) {
            return bad(format!("contestants: {name:?} is empty or listed twice"));
        }
    }
    for (name, weight) in &settings.weights {
        if !(weight.is_finite() && *weight >= 0.0) {
            return bad(format!(
                "weights: {name:?} has the weight {weight}; a weight is 0 or more"
            ));
        }
    }
    if settings.is_arena() && settings.contestants.len() == 1 {
        return bad(
            "contestants: an arena needs at least two models (or none: every registry model)"
                .into(),
        );
    }
    Ok(())
}

impl AppService {
    pub(crate) async fn list_studies_for(
        &self,
        who: &Principal,
    ) -> Result<Vec<StudySummary>, BackendError> {
        let studies = self.store.list_studies().await?;
        Ok(match self.granted_studies(who).await? {
            None => studies,
            Some(slugs) => studies
                .into_iter()
                .filter(|study| slugs.contains(&study.slug))
                .collect(),
        })
    }

    pub(crate) async fn create_study_for(
        &self,
        who: &Principal,
        study: NewStudy,
    ) -> Result<StudySummary, BackendError> {
        self.authorize(who, Permission::CreateStudy).await?;
        let summary = self.create_study(study).await?;
        if who.role != AdminRole::Owner {
            if let Some(token_id) = who.token_id {
                let row = self.store.study(&summary.slug).await?;
                self.store.grant_study(token_id, row.id).await?;
            }
        }
        self.audit(&who.name, "study.create", &summary.slug, "")
            .await;
        Ok(summary)
    }

    pub(crate) async fn list_studies(&self) -> Result<Vec<StudySummary>, BackendError> {
        Ok(self.store.list_studies().await?)
    }

    pub(crate) async fn create_study(&self, study: NewStudy) -> Result<StudySummary, BackendError> {
        let slug = StudySlug::parse(study.slug.trim()).map_err(BackendError::BadRequest)?;
        check_study_fields(&study.title, &study.settings)?;
        self.store
            .create_study(
                &slug,
                study.title.trim(),
                &study.instructions,
                &study.settings,
            )
            .await?;
        Ok(self.store.study_summary(slug.as_str()).await?)
    }

    pub(crate) async fn update_study(
        &self,
        slug: &str,
        changes: StudyChanges,
    ) -> Result<StudySummary, BackendError> {
        check_study_fields(&changes.title, &changes.settings)?;
        self.store
            .update_study(
                slug,
                changes.title.trim(),
                &changes.instructions,
                &changes.settings,
            )
            .await?;
        self.cache().studies.remove(slug);
        Ok(self.store.study_summary(slug).await?)
    }

    pub(crate) async fn set_study_status(
        &self,
        slug: &str,
        status: &str,
    ) -> Result<(), BackendError> {
        let status = StudyStatus::parse(status).ok_or_else(|| {
            BackendError::BadRequest(format!(
                "status must be draft, open or closed, got {status:?}"
            ))
        })?;
        self.store.set_study_status(slug, status).await?;
        self.cache().studies.remove(slug);
        Ok(())
    }

    pub(crate) async fn set_rater_status(
        &self,
        slug: &str,
        pseudonym: &str,
        status: &str,
    ) -> Result<(), BackendError> {
        let excluded = match status {
            "excluded" => true,
            "active" => false,
            other => {
                return Err(BackendError::BadRequest(format!(
                    "status must be excluded or active, got {other:?}"
                )))
            }
        };
        let study = self.open_study(slug).await?;
        Ok(self
            .store
            .set_rater_excluded(study.id, pseudonym, excluded)
            .await?)
    }
}
