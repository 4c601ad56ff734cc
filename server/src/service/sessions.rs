//! Rater sessions: entering a study, consent under the study's limits, the completion and
//! screen-out pages, and what a session has done so far.

use super::*;

impl AppService {
    pub(crate) async fn study_entry(
        &self,
        slug: &str,
        rater_token: Option<&str>,
    ) -> Result<StudyEntry, BackendError> {
        let study = self.open_study(slug).await?;
        // A draft or closed study is nobody's business but its researchers': its link shows only
        // that it is not open (the entry is serialized into the page, so the title and instructions
        // must not be in it at all).
        if study.status != StudyStatus::Open {
            return Ok(StudyEntry {
                slug: study.slug.clone(),
                title: String::new(),
                instructions_html: String::new(),
                participant_param: study.settings.participant_param.clone(),
                status: study.status.as_str().to_string(),
                joined: false,
            });
        }
        let joined = match rater_token {
            Some(token) => self.store.rater_by_token(study.id, token).await?.is_some(),
            None => false,
        };
        Ok(StudyEntry {
            slug: study.slug.clone(),
            title: study.title.clone(),
            instructions_html: markdown::render(&study.instructions),
            participant_param: study.settings.participant_param.clone(),
            status: study.status.as_str().to_string(),
            joined,
        })
    }

    pub(crate) async fn consent(
        &self,
        slug: &str,
        participant: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<String, BackendError> {
        let study = self.open_study(slug).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is not open"
            )));
        }
        if study.settings.require_participant && participant.is_none_or(|p| p.trim().is_empty()) {
            return Err(BackendError::BadRequest(format!(
                "this study needs your participant id: open the link your recruiter gave you (it carries `{}`)",
                study.settings.participant_param
            )));
        }
        if participant.is_some_and(|p| p.len() > 200) {
            return Err(BackendError::BadRequest(
                "participant id is longer than 200 characters".into(),
            ));
        }
        let client_hash = match client {
            Some(ip) if study.settings.sessions_per_ip > 0 => Some(self.client_hash(ip).await?),
            _ => None,
        };
        let limits = crate::store::JoinLimits {
            client_hash,
            sessions_per_client: study.settings.sessions_per_ip,
            per_minute: study.settings.consents_per_minute,
            completion_prefix: study.settings.completion_code.clone(),
        };
        let token = self.store.join_rater(study.id, participant, &limits).await;
        if let Err(StoreError::Limited(reason)) = &token {
            tracing::info!(study = %study.slug, %reason, "consent refused by a study limit");
        }
        Ok(token?)
    }

    pub(crate) async fn continue_after_reveal(
        &self,
        slug: &str,
        rater_token: &str,
    ) -> Result<(), BackendError> {
        let study = self.open_study(slug).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is not open"
            )));
        }
        let rater = self.session_rater(&study, rater_token).await?;
        Ok(self.store.finish_reveals(rater.id).await?)
    }

    /// The session a completion code belongs to; 404 when no session of the study has it.
    pub async fn verify_completion_code(
        &self,
        slug: &str,
        code: &str,
    ) -> Result<SessionByCode, BackendError> {
        let study = self.store.study(slug).await?;
        let (pseudonym, participant_id, status, votes) = self
            .store
            .rater_by_completion_code(study.id, code)
            .await?
            .ok_or_else(|| {
                BackendError::NotFound(format!(
                    "no session of study {slug:?} has the completion code {:?}",
                    code.trim()
                ))
            })?;
        let asked = if study.settings.is_arena() {
            i64::from(study.settings.items_per_rater)
        } else {
            self.comparable_prompts(&study)
                .await?
                .min(i64::from(study.settings.items_per_rater))
        };
        Ok(SessionByCode {
            code: code.trim().to_string(),
            pseudonym,
            participant_id,
            complete: votes >= asked && status != "excluded",
            status,
            votes,
        })
    }

    /// A keyed digest of a rater's address: the same for every session from one address (an IPv6
    /// address counts by its /64, which one household or host usually holds), and useless to
    /// anyone without the database's secret. The address itself is never stored.
    pub(crate) async fn client_hash(
        &self,
        client: std::net::IpAddr,
    ) -> Result<String, BackendError> {
        let salt = self
            .client_salt
            .get_or_try_init(|| async {
                if let Some(salt) = self.store.get_setting("client_address_key").await? {
                    return Ok::<_, StoreError>(salt);
                }
                // Another server process on the same database may write its own at the same
                // moment: the first one written is the one every process uses. (A process that
                // lost that race used to keep its own, so one address had a digest per process and
                // `sessions_per_ip` allowed as many times the sessions.)
                self.store
                    .put_setting_if_absent("client_address_key", &crate::domain::random_hex(32))
                    .await
            })
            .await?;
        let key = match client {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        };
        Ok(sha256_hex(&format!("{salt}/{key}")))
    }

    /// The completion page of a session that finished its comparisons: the session's own code
    /// (when the study gives codes) and, when the study reveals at the end, every comparison's models.
    pub(crate) async fn completion(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
        votes: u32,
    ) -> Result<RaterView, BackendError> {
        let gives_code = study
            .settings
            .completion_code
            .as_deref()
            .is_some_and(|code| !code.trim().is_empty());
        let reveals = if study.settings.reveal_at_end && !study.settings.is_arena() {
            self.store
                .session_reveals(rater.id)
                .await?
                .into_iter()
                .map(|(left_model, right_model, choice)| Reveal {
                    left_model,
                    right_model,
                    choice: choice.as_str().into(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(RaterView::Done(Completion {
            code: if gives_code {
                rater.completion_code.clone()
            } else {
                None
            },
            redirect_url: safe_link(&study.settings.redirect_url),
            votes,
            screened_out: false,
            reveals,
        }))
    }

    /// The daily-limit page when the participant has cast the study's votes per day.
    pub(crate) async fn daily_limit(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<Option<RaterView>, BackendError> {
        let limit = study.settings.votes_per_day;
        if limit == 0 {
            return Ok(None);
        }
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let since = crate::domain::now_ms() - DAY_MS;
        let (votes, oldest) = self.store.votes_since(rater, since).await?;
        if votes < i64::from(limit) {
            return Ok(None);
        }
        Ok(Some(RaterView::DailyLimit {
            limit,
            until_ms: oldest.unwrap_or(since) + DAY_MS,
        }))
    }

    /// The rater whose session token this is; a request without one is refused as unauthorized.
    pub(crate) async fn session_rater(
        &self,
        study: &StudyRow,
        rater_token: &str,
    ) -> Result<crate::store::RaterRow, BackendError> {
        self.store
            .rater_by_token(study.id, rater_token)
            .await?
            .ok_or_else(|| {
                BackendError::Unauthorized(
                    "no rater session for this study; open the study link first".into(),
                )
            })
    }

    /// (votes cast, comparisons in the session) for a rater looked up in this request.
    pub(crate) async fn session_totals(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<(u32, u32), BackendError> {
        let comparable = self.comparable_prompts(study).await? as u32;
        Ok((
            rater.votes as u32,
            comparable.min(study.settings.items_per_rater),
        ))
    }

    /// How many prompts a rater of the study can be shown (see [`Store::comparable_prompts`]).
    pub(crate) async fn comparable_prompts(&self, study: &StudyRow) -> Result<i64, BackendError> {
        let key = (
            study.id,
            study.settings.check_rate > 0.0,
            study.settings.show_flagged,
        );
        if let Some(&(at, n)) = self.cache().comparable.get(&key) {
            if at.elapsed() < STUDY_CACHE_TTL {
                return Ok(n);
            }
        }
        let n = self.store.comparable_prompts(key.0, key.1, key.2).await?;
        self.cache().comparable.insert(key, (Instant::now(), n));
        Ok(n)
    }
}
