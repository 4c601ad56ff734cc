//! Studies and their settings: creating, listing, changing, opening and closing them, and excluding
//! raters.

use super::*;

/// What a study's title and settings must satisfy, on creation and on every change (the settings'
/// rules live with their definitions, `moat_app::settings`; the 400 names each wrong field).
pub(super) fn check_study_fields(
    title: &str,
    settings: &StudySettings,
) -> Result<(), BackendError> {
    if title.trim().is_empty() {
        return Err(BackendError::BadRequest("title must not be empty".into()));
    }
    settings
        .validate()
        .map_err(|errors| BackendError::BadRequest(moat_app::settings::join_errors(&errors)))
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
