//! The rater's pages: the study link (instructions and consent) and the comparison page.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::*;
use crate::wire::*;
use crate::{error_text, utc_time};

#[component]
pub fn StudyEntryPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let entry = Resource::new(slug, get_study_entry);
    let consent_action = ServerAction::<Consent>::new();
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match entry.await {
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    Ok(entry) => {
                        let participant = query.read().get(&entry.participant_param).unwrap_or_default();
                        if entry.status != "open" {
                            // Neutral: a draft or closed study shows neither title nor instructions.
                            return view! { <p class="notice" id="not-open">"This study is not open."</p> }.into_any();
                        }
                        let compare_href = format!("/s/{}/compare", entry.slug);
                        view! {
                            <h1>{entry.title.clone()}</h1>
                            <section class="instructions" inner_html=entry.instructions_html.clone()></section>
                            {if entry.joined {
                                view! { <p><a class="button" href=compare_href>"Continue the study"</a></p> }.into_any()
                            } else {
                                view! {
                                    <ActionForm action=consent_action attr:class="consent">
                                        <input type="hidden" name="slug" value=entry.slug.clone()/>
                                        <input type="hidden" name="participant" value=participant/>
                                        <label>
                                            <input type="checkbox" name="agree" required=true/>
                                            " I have read the instructions and agree to take part."
                                        </label>
                                        <button type="submit" id="consent">"Start"</button>
                                    </ActionForm>
                                }.into_any()
                            }}
                            {move || consent_action.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error">{error_text(&e)}</p> })}
                        }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
pub fn ComparePage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let vote_action = ServerAction::<Vote>::new();
    let next_action = ServerAction::<ContinueAfterReveal>::new();
    // Bumped by the arena when a battle starts or ends, so the page asks what to show next.
    let refresh = RwSignal::new(0u32);
    // A vote answers with what comes next (the reveal, the next comparison, the end): after a new
    // vote the page shows that answer instead of asking the server again. A failed vote, and every
    // other change, asks.
    let vote_shown = StoredValue::new(0usize);
    let current = Resource::new(
        move || {
            (
                slug(),
                vote_action.version().get(),
                next_action.version().get(),
                refresh.get(),
            )
        },
        move |(slug, voted, _, _)| {
            let answered = (voted != vote_shown.get_value())
                .then(|| vote_action.value().get_untracked())
                .flatten()
                .and_then(Result::ok);
            vote_shown.set_value(voted);
            async move {
                match answered {
                    Some(view) => Ok(view),
                    None => get_rater_view(slug).await,
                }
            }
        },
    );
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let slug = slug();
                match current.await {
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    Ok(RaterView::NeedConsent) => view! {
                        <p>"Please start from the study link first: "
                            <a href=format!("/s/{slug}")>"instructions and consent"</a>"."</p>
                    }.into_any(),
                    Ok(RaterView::NotOpen { .. }) => view! {
                        <p class="notice" id="not-open">"This study is not open."</p>
                    }.into_any(),
                    Ok(RaterView::Compare(comparison)) => view! {
                        <CompareForm slug=slug comparison=comparison vote_action=vote_action refresh=refresh/>
                    }.into_any(),
                    Ok(RaterView::Arena(turn)) => view! {
                        <ArenaPanel slug=slug turn=turn refresh=refresh/>
                    }.into_any(),
                    Ok(RaterView::Reveal(reveal)) => view! {
                        <RevealPanel slug=slug reveal=reveal next_action=next_action/>
                    }.into_any(),
                    Ok(RaterView::Done(done)) => view! { <CompletionPanel done=done/> }.into_any(),
                    Ok(RaterView::DailyLimit { limit, until_ms }) => view! {
                        <p class="notice" id="daily-limit">
                            {format!("You have cast this study's {limit} votes for today. You can continue after {} (UTC); your progress is kept.", utc_time(until_ms))}
                        </p>
                    }.into_any(),
                }
            })}
        </Suspense>
        {move || vote_action.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error" id="vote-error">{error_text(&e)}</p> })}
    }
}

const CHOICES: [(&str, &str, &str); 4] = [
    ("left", "A is better", "A"),
    ("right", "B is better", "B"),
    ("tie", "Tie", "T"),
    ("both_bad", "Both are bad", "X"),
];

#[component]
fn CompareForm(
    slug: String,
    comparison: Comparison,
    vote_action: ServerAction<Vote>,
    refresh: RwSignal<u32>,
) -> impl IntoView {
    let form_ref = NodeRef::<leptos::html::Form>::new();
    let assignment = comparison.assignment.clone();
    let submit_slug = slug.clone();
    // With JavaScript on, a click or a key press submits through the action (no reload); with it off,
    // the buttons submit the form as a plain POST to the same server function.
    let submit = move |choice: &'static str| {
        if vote_action.pending().get_untracked() {
            return;
        }
        let field = |_name: &str| -> Option<String> {
            #[cfg(feature = "hydrate")]
            {
                let form = form_ref.get_untracked()?;
                let data = web_sys::FormData::new_with_form(&form).ok()?;
                data.get(_name)
                    .as_string()
                    .filter(|value| !value.is_empty())
            }
            #[cfg(not(feature = "hydrate"))]
            {
                let _ = form_ref;
                None
            }
        };
        vote_action.dispatch(Vote {
            slug: submit_slug.clone(),
            assignment: assignment.clone(),
            choice: choice.to_string(),
            source_guess: field("source_guess"),
            source_confidence: field("source_confidence"),
            rationale: field("rationale"),
        });
    };

    #[cfg(feature = "hydrate")]
    {
        let submit = submit.clone();
        let handle = window_event_listener(leptos::ev::keydown, move |event| {
            use wasm_bindgen::JsCast;
            if event.ctrl_key() || event.meta_key() || event.alt_key() {
                return;
            }
            let typing = event
                .target()
                .and_then(|target| target.dyn_into::<web_sys::Element>().ok())
                .map(|element| {
                    matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                })
                .unwrap_or(false);
            if typing {
                return;
            }
            let choice = match event.key().to_ascii_lowercase().as_str() {
                "a" | "1" => "left",
                "b" | "2" => "right",
                "t" | "3" => "tie",
                "x" | "4" => "both_bad",
                _ => return,
            };
            event.prevent_default();
            submit(choice);
        });
        on_cleanup(move || handle.remove());
    }

    let turns = prompt_turns(&comparison.turns);
    let earlier = earlier_turns(&comparison.earlier);
    let follow_up = (comparison.follow_ups_left > 0).then(|| {
        view! {
            <FollowUpForm slug=slug.clone() left=comparison.follow_ups_left
                max_chars=comparison.max_prompt_chars refresh=refresh/>
        }
    });
    let buttons = CHOICES
        .iter()
        .map(|&(value, label, key)| {
            let submit = submit.clone();
            view! {
                <button
                    type="submit"
                    name="choice"
                    value=value
                    id=format!("vote-{value}")
                    disabled=move || vote_action.pending().get()
                    on:click=move |event| {
                        event.prevent_default();
                        submit(value);
                    }
                >
                    {label}
                    " "
                    <kbd>{key}</kbd>
                </button>
            }
        })
        .collect_view();
    view! {
        <p class="progress" id="progress">
            {format!("Comparison {} of {}", comparison.position, comparison.total)}
            <progress max=comparison.total value=comparison.position.saturating_sub(1)></progress>
        </p>
        <form method="post" action="/rpc/vote" node_ref=form_ref class="compare"
            on:submit=|event| event.prevent_default()>
            <input type="hidden" name="slug" value=slug/>
            <input type="hidden" name="assignment" value=comparison.assignment.clone()/>
            <section class="prompt"><h2>"Prompt"</h2>{turns}</section>
            {earlier}
            <div class="pair">
                <article class="response" id="response-a">
                    <h2>"Response A"</h2>
                    <div class="md" inner_html=comparison.left_html.clone()></div>
                </article>
                <article class="response" id="response-b">
                    <h2>"Response B"</h2>
                    <div class="md" inner_html=comparison.right_html.clone()></div>
                </article>
            </div>
            {comparison.ask_source.then(|| view! {
                <fieldset class="source">
                    <legend>"Which response do you think comes from a closed (API) model?"</legend>
                    <label><input type="radio" name="source_guess" value="left"/>" A"</label>
                    <label><input type="radio" name="source_guess" value="right"/>" B"</label>
                    <label>
                        " Confidence "
                        <select name="source_confidence">
                            <option value="">"—"</option>
                            <option value="1">"1 guessing"</option>
                            <option value="2">"2"</option>
                            <option value="3">"3"</option>
                            <option value="4">"4"</option>
                            <option value="5">"5 certain"</option>
                        </select>
                    </label>
                </fieldset>
            })}
            {comparison.ask_rationale.then(|| view! {
                <label class="rationale">"Why? (optional)"
                    <textarea name="rationale" rows="2"></textarea>
                </label>
            })}
            <div class="choices">{buttons}</div>
            <p class="hint">"Keyboard: A, B, T (tie), X (both bad)."</p>
        </form>
        {follow_up}
    }
}

/// A prompt's turns (a conversation's messages before the answers).
fn prompt_turns(turns: &[Turn]) -> impl IntoView {
    turns
        .iter()
        .map(|turn| {
            let label = if turn.role == "user" {
                "User".to_string()
            } else {
                turn.role.clone()
            };
            view! {
                <div class=format!("turn turn-{}", turn.role)>
                    <div class="role">{label}</div>
                    <div class="md" inner_html=turn.html.clone()></div>
                </div>
            }
        })
        .collect_view()
}

/// A multi-turn battle's earlier turns: both answers side by side, then the rater's next question.
fn earlier_turns(earlier: &[EarlierTurn]) -> impl IntoView {
    earlier
        .iter()
        .enumerate()
        .map(|(index, turn)| {
            view! {
                <div class="pair earlier" id=format!("turn-{}", index + 1)>
                    <article class="response">
                        <h2>"Response A"</h2>
                        <div class="md" inner_html=turn.left_html.clone()></div>
                    </article>
                    <article class="response">
                        <h2>"Response B"</h2>
                        <div class="md" inner_html=turn.right_html.clone()></div>
                    </article>
                </div>
                <section class="prompt follow-up-question">
                    <div class="turn turn-user">
                        <div class="role">"User (follow-up)"</div>
                        <div class="md" inner_html=turn.question_html.clone()></div>
                    </div>
                </section>
            }
        })
        .collect_view()
}

/// Arena: ask both models of the battle a follow-up question before voting (a multi-turn battle).
#[component]
fn FollowUpForm(slug: String, left: u32, max_chars: u32, refresh: RwSignal<u32>) -> impl IntoView {
    let action = ServerAction::<ArenaPrompt>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = action.value().get() {
            refresh.update(|n| *n += 1);
        }
    });
    let form_ref = NodeRef::<leptos::html::Form>::new();
    let submit_slug = slug.clone();
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        #[cfg(feature = "hydrate")]
        {
            event.prevent_default();
            if action.pending().get_untracked() {
                return;
            }
            let prompt = form_ref
                .get_untracked()
                .and_then(|form| web_sys::FormData::new_with_form(&form).ok())
                .and_then(|data| data.get("prompt").as_string());
            action.dispatch(ArenaPrompt {
                slug: submit_slug.clone(),
                prompt,
                sample: None,
                live: Some("1".into()),
                follow_up: Some("1".into()),
            });
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = (event, &submit_slug, form_ref);
        }
    };
    let hint = if left == 1 {
        "Or ask both models one follow-up question before you vote.".to_string()
    } else {
        format!("Or ask both models a follow-up question before you vote (up to {left}).")
    };
    view! {
        <form method="post" action="/rpc/arena_prompt" class="arena-follow-up" node_ref=form_ref
            on:submit=on_submit>
            <input type="hidden" name="slug" value=slug/>
            <input type="hidden" name="follow_up" value="1"/>
            <label for="arena-follow-up">{hint}</label>
            <textarea id="arena-follow-up" name="prompt" rows="2" required=true maxlength=max_chars
                placeholder="A follow-up question to both models"></textarea>
            <button type="submit" id="arena-follow-up-send" disabled=move || action.pending().get()>
                "Ask both"
            </button>
        </form>
        {move || action.value().get().and_then(|r| r.err()).map(|e| view! {
            <p class="error" id="arena-follow-up-error">{error_text(&e)}</p>
        })}
    }
}

#[component]
fn RevealPanel(
    slug: String,
    reveal: Reveal,
    next_action: ServerAction<ContinueAfterReveal>,
) -> impl IntoView {
    let verdict = match reveal.choice.as_str() {
        "left" => "You preferred Response A.",
        "right" => "You preferred Response B.",
        "tie" => "You called it a tie.",
        _ => "You found both bad.",
    };
    view! {
        <section class="reveal">
            <p>{verdict}</p>
            <p>"Response A was written by " <strong>{reveal.left_model}</strong>
               "; Response B by " <strong>{reveal.right_model}</strong> "."</p>
            <ActionForm action=next_action>
                <input type="hidden" name="slug" value=slug/>
                <button type="submit" id="next">"Next comparison"</button>
            </ActionForm>
        </section>
    }
}

#[component]
fn CompletionPanel(done: Completion) -> impl IntoView {
    view! {
        <section class="done" id="done">
            <h1>"Thank you!"</h1>
            {if done.screened_out {
                view! { <p id="screened-out">"Your session has ended; there are no more comparisons for you in this study."</p> }.into_any()
            } else {
                view! { <p>{format!("You completed {} comparisons.", done.votes)}</p> }.into_any()
            }}
            {done.code.map(|code| view! {
                <p>{if done.screened_out { "Your code: " } else { "Your completion code: " }}
                    <code id="completion-code">{code}</code></p>
            })}
            {done.redirect_url.map(|url| view! {
                <p><a class="button" href=url>"Finish and return"</a></p>
            })}
            {(!done.reveals.is_empty()).then(|| view! {
                <h2>"Who wrote what"</h2>
                <table class="reveals" id="reveals">
                    <thead><tr><th>"#"</th><th>"Response A"</th><th>"Response B"</th><th>"Your choice"</th></tr></thead>
                    <tbody>
                        {done.reveals.into_iter().enumerate().map(|(i, reveal)| {
                            let choice = match reveal.choice.as_str() {
                                "left" => "A",
                                "right" => "B",
                                "tie" => "tie",
                                _ => "both bad",
                            };
                            view! { <tr><td>{i + 1}</td><td>{reveal.left_model}</td><td>{reveal.right_model}</td><td>{choice}</td></tr> }
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </section>
    }
}

/// Arena studies: the rater's prompt form, or the battle it started streaming in side by side.
#[component]
fn ArenaPanel(slug: String, turn: ArenaTurn, refresh: RwSignal<u32>) -> impl IntoView {
    let prompt_action = ServerAction::<ArenaPrompt>::new();
    // With JavaScript on, the action answers with the battle id at once; the page then asks again
    // what to show and gets the running battle, which streams below.
    Effect::new(move |_| {
        if let Some(Ok(_)) = prompt_action.value().get() {
            refresh.update(|n| *n += 1);
        }
    });
    let form_ref = NodeRef::<leptos::html::Form>::new();
    let submit_slug = slug.clone();
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        #[cfg(feature = "hydrate")]
        {
            event.prevent_default();
            if prompt_action.pending().get_untracked() {
                return;
            }
            use wasm_bindgen::JsCast;
            let prompt = form_ref
                .get_untracked()
                .and_then(|form| web_sys::FormData::new_with_form(&form).ok())
                .and_then(|data| data.get("prompt").as_string());
            // Which button sent the form: "Use a sample prompt" asks the server for one.
            let sample = event
                .submitter()
                .and_then(|button| button.dyn_into::<web_sys::HtmlButtonElement>().ok())
                .filter(|button| button.name() == "sample")
                .map(|_| "1".to_string());
            prompt_action.dispatch(ArenaPrompt {
                slug: submit_slug.clone(),
                prompt,
                sample,
                live: Some("1".into()),
                follow_up: None,
            });
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = (event, &submit_slug, form_ref);
        }
    };
    let body = match turn.running.clone() {
        Some(battle) => view! {
            {(!turn.context.is_empty()).then(|| view! {
                <section class="prompt"><h2>"Prompt"</h2>{prompt_turns(&turn.context)}</section>
            })}
            {earlier_turns(&turn.earlier)}
            <BattleStream slug=slug.clone() battle=battle live=turn.live refresh=refresh/>
        }
        .into_any(),
        None => view! {
            <form method="post" action="/rpc/arena_prompt" class="arena-prompt" node_ref=form_ref
                on:submit=on_submit>
                <input type="hidden" name="slug" value=slug.clone()/>
                <label for="arena-prompt">"Your prompt"</label>
                <textarea id="arena-prompt" name="prompt" rows="4" required=true
                    maxlength=turn.max_prompt_chars
                    placeholder="Ask anything. Two anonymous models will answer side by side."></textarea>
                <button type="submit" id="arena-send" disabled=move || prompt_action.pending().get()>
                    "Send to both models"
                </button>
                {turn.has_samples.then(|| view! {
                    " "
                    <button type="submit" name="sample" value="1" id="arena-sample" formnovalidate=true
                        disabled=move || prompt_action.pending().get()>
                        "Use a sample prompt"
                    </button>
                })}
            </form>
        }
        .into_any(),
    };
    view! {
        <p class="progress" id="progress">
            {format!("Battle {} of {}", turn.position, turn.total)}
            <progress max=turn.total value=turn.position.saturating_sub(1)></progress>
        </p>
        {turn.notice.clone().map(|notice| view! { <p class="notice" id="arena-notice">{notice}</p> })}
        {body}
        {move || prompt_action.value().get().and_then(|r| r.err()).map(|e| view! {
            <p class="error" id="arena-error">{error_text(&e)}</p>
        })}
    }
}

/// The two answers of a running battle as they are written (plain text; the comparison page shows
/// them as sanitized markdown once both are complete). Without JavaScript the page says the models
/// are answering and reloads itself.
#[component]
fn BattleStream(slug: String, battle: String, live: bool, refresh: RwSignal<u32>) -> impl IntoView {
    let text_a = RwSignal::new(String::new());
    let text_b = RwSignal::new(String::new());
    #[cfg(feature = "hydrate")]
    {
        let url = format!("/s/{slug}/battles/{battle}/events");
        Effect::new(move |started: Option<()>| {
            if started.is_none() {
                open_battle_events(&url, text_a, text_b, refresh);
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (&battle, refresh);
    let waiting = if live {
        "Both models are answering…"
    } else {
        "Both models are answering; their answers appear together when both are complete…"
    };
    view! {
        <p class="notice" id="arena-waiting">{waiting}</p>
        // No `<meta http-equiv="refresh">` here: rendered by the browser's own code (JavaScript on),
        // an inserted refresh element is obeyed even inside `<noscript>`, and reloaded the page of
        // any battle that streamed for longer than its delay. Without JavaScript the prompt form
        // waits for both answers; a page opened mid-battle offers this link.
        <noscript>
            <p><a href=format!("/s/{slug}/compare")>"Reload"</a>" to see the answers."</p>
        </noscript>
        <div class="pair">
            <article class="response" id="stream-a">
                <h2>"Response A"</h2>
                <div class="streaming">{move || text_a.get()}</div>
            </article>
            <article class="response" id="stream-b">
                <h2>"Response B"</h2>
                <div class="streaming">{move || text_b.get()}</div>
            </article>
        </div>
    }
}

/// Listens to a battle's server-sent events: `a` and `b` carry text of each side, `end` says the
/// battle is complete or void; then the page asks what to show next.
#[cfg(feature = "hydrate")]
fn open_battle_events(
    url: &str,
    text_a: RwSignal<String>,
    text_b: RwSignal<String>,
    refresh: RwSignal<u32>,
) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    let Ok(source) = web_sys::EventSource::new(url) else {
        return;
    };
    for (name, side) in [("a", text_a), ("b", text_b)] {
        let on_text = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                if let Some(text) = event.data().as_string() {
                    side.update(|all| all.push_str(&text));
                }
            },
        );
        let _ = source.add_event_listener_with_callback(name, on_text.as_ref().unchecked_ref());
        // The listener lives as long as the page's event source; it is small and made once per battle.
        on_text.forget();
    }
    let closer = source.clone();
    let on_end = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| {
        closer.close();
        refresh.update(|n| *n += 1);
    });
    let _ = source.add_event_listener_with_callback("end", on_end.as_ref().unchecked_ref());
    on_end.forget();
}
