//! What a rater sees and does: the next comparison (a static item, a quality check or a live arena
//! battle), the vote, and the arena's prompts and follow-ups.

use super::*;

pub(super) fn render_comparison(
    shown: ShownAssignment,
    position: u32,
    total: u32,
    study: &StudyRow,
) -> Comparison {
    let html = ComparisonHtml {
        public_id: shown.public_id,
        turns: render_turns(&shown.conversation),
        left_html: markdown::render(&shown.left_text),
        right_html: markdown::render(&shown.right_text),
        earlier: earlier_turns(&shown.left_history, &shown.right_history),
        history_turns: shown.left_history.len(),
    };
    comparison_of(html, position, total, study)
}

/// A comparison's texts, rendered.
pub(super) struct ComparisonHtml {
    pub public_id: crate::domain::AssignmentId,
    pub turns: Vec<Turn>,
    pub left_html: String,
    pub right_html: String,
    pub earlier: Vec<EarlierTurn>,
    /// How many messages a side's history holds (a multi-turn battle's earlier turns).
    pub history_turns: usize,
}

/// The comparison the rater is shown: `html` at `position` of the session's `total`.
pub(super) fn comparison_of(
    html: ComparisonHtml,
    position: u32,
    total: u32,
    study: &StudyRow,
) -> Comparison {
    Comparison {
        assignment: html.public_id.into_string(),
        turns: html.turns,
        left_html: html.left_html,
        right_html: html.right_html,
        position,
        total: total.max(position),
        ask_source: study.settings.ask_source,
        ask_rationale: study.settings.ask_rationale,
        earlier: html.earlier,
        follow_ups_left: if study.settings.is_arena() {
            // Each follow-up adds a question and an answer to a side's history.
            let turns = 1 + html.history_turns as u32 / 2;
            study.settings.max_turns.saturating_sub(turns)
        } else {
            0
        },
        max_prompt_chars: study.settings.max_prompt_chars,
    }
}

pub(super) fn render_turns(conversation: &[Message]) -> Vec<Turn> {
    render_turns_with(conversation, markdown::render)
}

/// `conversation`'s turns, each message's HTML from `render`.
pub(super) fn render_turns_with(conversation: &[Message], render: fn(&str) -> String) -> Vec<Turn> {
    conversation
        .iter()
        .map(|m| Turn {
            role: m.role.clone(),
            html: render(&m.content),
        })
        .collect()
}

/// A multi-turn battle's earlier turns from its sides' histories (`answer, question, answer,
/// question, …`, each ending with the question its last answer replies to).
pub(super) fn earlier_turns(left: &[Message], right: &[Message]) -> Vec<EarlierTurn> {
    pair_earlier_turns(left, right, |m| markdown::render(&m.content))
}

/// [`earlier_turns`] from histories of any kind of message (rows, or messages already rendered),
/// `html` giving each one's HTML.
pub(super) fn pair_earlier_turns<T>(
    left: &[T],
    right: &[T],
    html: impl Fn(&T) -> String,
) -> Vec<EarlierTurn> {
    left.chunks(2)
        .zip(right.chunks(2))
        .filter_map(|(l, r)| match (l, r) {
            ([l_answer, question], [r_answer, _]) => Some(EarlierTurn {
                left_html: html(l_answer),
                right_html: html(r_answer),
                question_html: html(question),
            }),
            _ => None,
        })
        .collect()
}

impl AppService {
    pub(crate) async fn rater_view(
        &self,
        slug: &str,
        rater_token: &str,
    ) -> Result<RaterView, BackendError> {
        let study = self.open_study(slug).await?;
        if study.status != StudyStatus::Open {
            return Ok(RaterView::NotOpen {
                status: study.status.as_str().to_string(),
            });
        }
        let Some(rater) = self.store.rater_by_token(study.id, rater_token).await? else {
            return Ok(RaterView::NeedConsent);
        };
        if rater.excluded && study.settings.end_excluded_sessions {
            return Ok(RaterView::Done(Completion {
                code: study.settings.screen_out_code.clone(),
                redirect_url: safe_link(&study.settings.screen_out_url),
                votes: rater.votes as u32,
                screened_out: true,
                reveals: Vec::new(),
            }));
        }
        if study.settings.reveal_after_vote {
            if let Some((left_model, right_model, choice)) =
                self.store.pending_reveal(rater.id).await?
            {
                return Ok(RaterView::Reveal(Reveal {
                    left_model,
                    right_model,
                    choice: choice.as_str().into(),
                }));
            }
        }
        if study.settings.is_arena() {
            // A follow-up question being answered is shown streaming, not the comparison under it.
            let following_up = self
                .arena()
                .is_some_and(|arena| arena.running_for(rater.id).is_some());
            if following_up {
                return self.arena_view(&study, &rater).await;
            }
            if let Some(shown) = self.store.assignment_in_state(rater.id, "issued").await? {
                let (votes, total) = (rater.votes as u32, study.settings.items_per_rater);
                return Ok(RaterView::Compare(render_comparison(
                    shown,
                    votes + 1,
                    total,
                    &study,
                )));
            }
            return self.arena_view(&study, &rater).await;
        }
        let (votes, total) = self.session_totals(&study, &rater).await?;
        if let Some(shown) = self.store.assignment_in_state(rater.id, "issued").await? {
            let now = crate::domain::now_ms();
            if shown.expires_ms.is_none_or(|at| at > now) {
                return Ok(RaterView::Compare(render_comparison(
                    shown,
                    votes + 1,
                    total,
                    &study,
                )));
            }
            // Left unvoted past the study's time: it goes back to the pool; a new one follows.
            self.store.expire_assignments(now, Some(rater.id)).await?;
        }
        if votes >= total {
            return self.completion(&study, &rater, votes).await;
        }
        if let Some(limited) = self.daily_limit(&study, &rater).await? {
            return Ok(limited);
        }
        // A concurrent request of the same rater may take the chosen prompt first; try again then.
        for _ in 0..3 {
            let Some(new) = self.choose_next(&study, rater.id, votes, total).await? else {
                return self.completion(&study, &rater, votes).await;
            };
            if let Some(public_id) = self.store.insert_assignment(&new).await? {
                // Shown from its ids, as a vote's answer is (`comparison_html.rs`).
                return Ok(RaterView::Compare(
                    self.comparison_by_ids(public_id, &new, votes + 1, total, &study)
                        .await?,
                ));
            }
        }
        // Refused three times (the rater's concurrent requests took the prompts): the one they
        // were given, if any.
        match self.store.assignment_in_state(rater.id, "issued").await? {
            Some(shown) => Ok(RaterView::Compare(render_comparison(
                shown,
                votes + 1,
                total,
                &study,
            ))),
            None => self.completion(&study, &rater, votes).await,
        }
    }

    /// The comparison a rater who has cast `votes` of the session's `total` is given next: a quality
    /// check when one is due, else the least-shown pair of the least-assigned prompts the rater has
    /// not seen (or the active-sampling policy's pick), else a remaining check. `None` when nothing
    /// is left to show.
    async fn choose_next(
        &self,
        study: &StudyRow,
        rater_id: i64,
        votes: u32,
        total: u32,
    ) -> Result<Option<NewAssignment>, BackendError> {
        let expires_ms = match study.settings.assignment_minutes {
            0 => None,
            minutes => Some(crate::domain::now_ms() + i64::from(minutes) * 60_000),
        };
        let check_rate = study.settings.check_rate;
        let mut pair_shards = 1;
        let check_due = check_rate > 0.0 && {
            let checks = self.store.rater_checks(rater_id).await?;
            crate::assign::check_is_due(
                check_rate,
                total,
                votes,
                checks.shown as u32,
                &mut rand::thread_rng(),
            )
        };
        let mut pick = None;
        if check_due {
            pick = self.next_check(study, rater_id).await?;
        }
        if pick.is_none() {
            // The least-assigned prompts this rater has not seen; 16 of them cover every model
            // pair of a typical study (from the assigner's memory on a SQLite file).
            let (candidates, pair_counts) = self
                .store
                .assignment_choices(study.id, rater_id, 16, study.settings.show_flagged)
                .await?;
            pair_shards = crate::store::pair_shards_for(pair_counts.len());
            let policy = crate::active_loop::policy_of(study);
            let model = match policy {
                moat_trainer::active::ActivePolicy::Uniform => None,
                _ => self.active.rewards(study.id),
            };
            pick = match model {
                Some(model) => crate::assign::choose_active(
                    &candidates,
                    &pair_counts,
                    &crate::assign::ActiveView {
                        policy,
                        rewards: &model.rewards,
                        votes: &model.votes,
                    },
                    &mut rand::thread_rng(),
                ),
                None => crate::assign::choose(&candidates, &pair_counts, &mut rand::thread_rng()),
            }
            .map(|pick| (pick, None));
        }
        if pick.is_none() && check_rate > 0.0 {
            // Regular items ran out before the session's end: the remaining checks fill it.
            pick = self.next_check(study, rater_id).await?;
        }
        Ok(pick.map(|((prompt_id, left, right), check)| NewAssignment {
            rater_id,
            study_id: study.id,
            prompt_id,
            left_response: left,
            right_response: right,
            check,
            max_for_rater: total,
            expires_ms,
            pair_shards,
        }))
    }

    /// The comparison to issue in the same commit as `rater`'s vote, chosen as [`Self::rater_view`]
    /// would choose it once the vote is in — where that choice cannot depend on the vote itself.
    /// `None` sends the vote the two-commit way (the vote, then the rater's view): in an arena, when
    /// the vote is followed by its reveal, in a study with quality checks (a failed one may end the
    /// session) or a daily limit, for an excluded rater, and at the session's last vote.
    async fn next_with_vote(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<Option<(NewAssignment, u32, u32)>, BackendError> {
        let settings = &study.settings;
        if settings.is_arena()
            || settings.reveal_after_vote
            || settings.check_rate > 0.0
            || settings.votes_per_day > 0
            || rater.excluded
        {
            return Ok(None);
        }
        let (votes, total) = self.session_totals(study, rater).await?;
        let votes = votes + 1;
        if votes >= total {
            return Ok(None);
        }
        Ok(self
            .choose_next(study, rater.id, votes, total)
            .await?
            .map(|new| (new, votes, total)))
    }

    /// Records the vote (acknowledged once committed) and answers with what the rater sees next.
    /// Where the next comparison cannot depend on the vote (see [`Self::next_with_vote`]) it is
    /// chosen first and written in the vote's own transaction.
    pub(crate) async fn vote(
        &self,
        slug: &str,
        rater_token: &str,
        vote: VoteInput,
    ) -> Result<RaterView, BackendError> {
        let study = self.open_study(slug).await?;
        let rater = self.session_rater(&study, rater_token).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is {}; votes are closed",
                study.status.as_str()
            )));
        }
        let assignment = crate::domain::AssignmentId::parse(&vote.assignment)
            .map_err(BackendError::BadRequest)?;
        let choice = Choice::parse(&vote.choice).ok_or_else(|| {
            BackendError::BadRequest(format!(
                "choice must be left, right, tie or both_bad, got {:?}",
                vote.choice
            ))
        })?;
        // What the study does not ask for is dropped unread: a script that posts a rationale or a
        // source guess anyway stores nothing (and cannot fill an export with text nobody requested).
        let mut vote = vote;
        if !study.settings.ask_source {
            vote.source_guess = None;
            vote.source_confidence = None;
        }
        if !study.settings.ask_rationale {
            vote.rationale = None;
        }
        let source_guess = match vote.source_guess.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(side @ ("left" | "right")) => Some(side.to_string()),
            Some(other) => {
                return Err(BackendError::BadRequest(format!(
                    "source_guess must be left or right, got {other:?}"
                )))
            }
        };
        let source_confidence = match vote.source_confidence.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<i64>() {
                Ok(n @ 1..=5) => Some(n),
                _ => {
                    return Err(BackendError::BadRequest(format!(
                        "source_confidence must be 1 to 5, got {text:?}"
                    )))
                }
            },
        };
        let rationale = vote
            .rationale
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        // An arena battle whose follow-up is still being answered is voted on once it is complete.
        if study.settings.is_arena()
            && self
                .arena()
                .is_some_and(|arena| arena.running_for(rater.id).is_some())
        {
            return Err(BackendError::Conflict(
                "the models are still answering your follow-up question; vote once both are done"
                    .into(),
            ));
        }
        if rationale.as_ref().is_some_and(|r| r.chars().count() > 5000) {
            return Err(BackendError::BadRequest(
                "rationale is longer than 5000 characters".into(),
            ));
        }
        let to_record = VoteToRecord {
            assignment,
            rater_id: rater.id,
            choice,
            source_guess,
            source_confidence,
            rationale,
            reveal: study.settings.reveal_after_vote,
        };
        let (outcome, next) = match self.next_with_vote(&study, &rater).await? {
            Some((new, votes, total)) => {
                let (outcome, assigned) =
                    self.store.record_vote_then_assign(&to_record, &new).await?;
                (outcome, assigned.map(|id| (id, new, votes, total)))
            }
            None => (self.store.record_vote(&to_record).await?, None),
        };
        self.after_vote(&study, &rater, &outcome).await?;
        // A vote on a quality check (of a study whose checks were since turned off) may have ended
        // the session: the rater's view decides.
        if let (
            Some((public_id, new, votes, total)),
            VoteOutcome::Recorded {
                check_passed: None, ..
            },
        ) = (next, outcome)
        {
            // The comparison written with the vote is the rater's one open comparison (its insert
            // checked that no other is): shown from its ids (`comparison_html.rs`).
            return Ok(RaterView::Compare(
                self.comparison_by_ids(public_id, &new, votes + 1, total, &study)
                    .await?,
            ));
        }
        self.rater_view(slug, rater_token).await
    }

    /// What a recorded vote sets going: active sampling's count and, for a failed quality check
    /// past the study's limit, the rater's exclusion.
    async fn after_vote(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
        outcome: &VoteOutcome,
    ) -> Result<(), BackendError> {
        if let VoteOutcome::Recorded { .. } = outcome {
            self.active.note_vote(&self.store, study);
        }
        // A failed check past the study's limit excludes the rater. Only a failure does: a researcher
        // who includes the rater again is overruled by a new failure, not by other votes.
        if let (
            VoteOutcome::Recorded {
                check_passed: Some(false),
                ..
            },
            Some(max_failed),
        ) = (outcome, study.settings.max_failed_checks)
        {
            let checks = self.store.rater_checks(rater.id).await?;
            if checks.failed > i64::from(max_failed) && self.store.exclude_rater(rater.id).await? {
                tracing::info!(
                    study = %study.slug,
                    rater = rater.id,
                    failed = checks.failed,
                    "rater excluded after failed quality checks"
                );
            }
        }
        Ok(())
    }

    pub(crate) async fn arena_prompt(
        &self,
        slug: &str,
        rater_token: &str,
        prompt: &str,
        sample: bool,
        follow_up: bool,
        wait: bool,
    ) -> Result<String, BackendError> {
        let study = self.open_study(slug).await?;
        let rater = self.session_rater(&study, rater_token).await?;
        if study.status != StudyStatus::Open {
            return Err(BackendError::Conflict(format!(
                "study {slug:?} is {}; it is not taking prompts",
                study.status.as_str()
            )));
        }
        if !study.settings.is_arena() {
            return Err(BackendError::BadRequest(
                "this study compares prepared answers; it takes no prompts".into(),
            ));
        }
        if rater.excluded && study.settings.end_excluded_sessions {
            return Err(BackendError::Conflict("your session has ended".into()));
        }
        if rater.votes as u32 >= study.settings.items_per_rater {
            return Err(BackendError::Conflict(
                "you have completed every battle of this study".into(),
            ));
        }
        if follow_up {
            let arena = self.arena().ok_or_else(|| {
                BackendError::Conflict("this server has no models for the arena right now".into())
            })?;
            let battle = arena
                .follow_up(
                    &self.store,
                    &study,
                    rater.id,
                    &sha256_hex(rater_token),
                    prompt,
                )
                .await?;
            if wait {
                crate::arena::wait_for_end(&battle).await;
            }
            return Ok(battle.public_id.clone());
        }
        if self
            .store
            .assignment_in_state(rater.id, "issued")
            .await?
            .is_some()
        {
            return Err(BackendError::Conflict(
                "please vote on the current battle first".into(),
            ));
        }
        if let Some(RaterView::DailyLimit { limit, .. }) = self.daily_limit(&study, &rater).await? {
            return Err(BackendError::TooMany(format!(
                "you have cast this study's {limit} votes for today; please come back tomorrow"
            )));
        }
        let arena = self.arena().ok_or_else(|| {
            BackendError::Conflict("this server has no models for the arena right now".into())
        })?;
        let prompt = if sample {
            use rand::seq::SliceRandom;
            study
                .settings
                .sample_prompts
                .choose(&mut rand::thread_rng())
                .cloned()
                .ok_or_else(|| {
                    BackendError::BadRequest("this study has no sample prompts".into())
                })?
        } else {
            prompt.to_string()
        };
        let battle = arena
            .start(
                &self.store,
                &study,
                rater.id,
                &sha256_hex(rater_token),
                &prompt,
            )
            .await?;
        if wait {
            crate::arena::wait_for_end(&battle).await;
        }
        Ok(battle.public_id.clone())
    }

    /// An arena study's page before each battle: the prompt form, the running battle, or the
    /// completion page once the session's battles are voted.
    pub(crate) async fn arena_view(
        &self,
        study: &StudyRow,
        rater: &crate::store::RaterRow,
    ) -> Result<RaterView, BackendError> {
        let votes = rater.votes as u32;
        let total = study.settings.items_per_rater;
        if votes >= total {
            return self.completion(study, rater, votes).await;
        }
        let running = self
            .arena()
            .and_then(|arena| arena.running_for(rater.id))
            .map(|battle| battle.public_id.clone());
        // A battle that ended void in the last ten minutes is explained once, in plain words.
        let notice = match (&running, self.store.latest_battle(rater.id).await?) {
            (None, Some(last))
                if last.state == "void"
                    && last
                        .finished_ms
                        .is_some_and(|t| crate::domain::now_ms() - t < 600_000) =>
            {
                Some(crate::arena::void_notice(last.error.as_deref()))
            }
            _ => None,
        }
        .or_else(|| {
            self.arena()
                .filter(|_| running.is_none())
                .and_then(|arena| arena.take_refusal(rater.id))
        });
        // A follow-up being answered: the conversation so far, above the streaming answers.
        let (mut context, mut earlier) = (Vec::new(), Vec::new());
        let question = self
            .arena()
            .and_then(|arena| arena.running_for(rater.id))
            .and_then(|battle| battle.question.clone());
        if let Some(question) = question {
            if let Some(battle) = self.store.battle_to_continue(rater.id).await? {
                let [left, right] = &battle.sides;
                let shared = 1.min(left.len());
                let side = |messages: &[Message]| {
                    let mut history = messages[shared..].to_vec();
                    history.push(Message::new("user", question.as_str()));
                    history
                };
                context = render_turns(&left[..shared]);
                earlier = earlier_turns(&side(left), &side(right));
            }
        }
        Ok(RaterView::Arena(ArenaTurn {
            position: votes + 1,
            total,
            max_prompt_chars: study.settings.max_prompt_chars,
            running,
            live: study.settings.stream != "together",
            notice,
            has_samples: !study.settings.sample_prompts.is_empty(),
            context,
            earlier,
        }))
    }

    /// A quality-check comparison for this rater, if any check item is left for them.
    pub(crate) async fn next_check(
        &self,
        study: &StudyRow,
        rater_id: i64,
    ) -> Result<Option<(crate::assign::Pick, Option<CheckKind>)>, BackendError> {
        let checks = self
            .store
            .candidate_checks(study.id, rater_id, 16, study.settings.show_flagged)
            .await?;
        Ok(
            crate::assign::choose_check(&checks, &mut rand::thread_rng())
                .map(|(pick, kind)| (pick, Some(kind))),
        )
    }
}
