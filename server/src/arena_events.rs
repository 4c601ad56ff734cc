//! The live arena's event stream: `GET /s/{slug}/battles/{id}/events`, a running battle's text as
//! server-sent events for the rater who started it, then how it ended.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use tokio::sync::watch;

use crate::arena::{stored_battle, stored_battle_end, wait_for_battle_end, BattleEnd, BattleState};
use crate::service::AppService;
use crate::store::Dialect;

/// `GET /s/{slug}/battles/{id}/events`: the battle's text as it is written, for the rater who
/// started it (the study's rater cookie).
pub fn router(backend: Arc<AppService>) -> Router {
    Router::new()
        .route("/s/{slug}/battles/{battle}/events", get(battle_events))
        .with_state(backend)
}

/// SSE text cannot hold a carriage return; answers keep their line breaks as `\n`.
fn sse_text(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_string();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

async fn battle_events(
    State(backend): State<Arc<AppService>>,
    Path((slug, battle_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let not_found = || {
        (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": "no such battle for this rater" })),
        )
            .into_response()
    };
    let Ok(study) = backend.open_study(&slug).await else {
        return not_found();
    };
    let token = moat_app::api::ssr::cookie_value(&headers, &moat_app::api::rater_cookie(&slug))
        .unwrap_or_default();
    let live = study.settings.stream != "together";
    // A running battle is checked against its rater's token in memory (no database read on the
    // way to the first words); a finished one against the database.
    let token_sha256 = crate::domain::sha256_hex(&token);
    let running = backend
        .arena()
        .and_then(|arena| arena.battle(&battle_id))
        .filter(|battle| !token.is_empty() && battle.token_sha256 == token_sha256);
    let receiver = match running {
        Some(battle) => battle.state.subscribe(),
        None => {
            let Ok(Some(rater)) = backend.store.rater_by_token(study.id, &token).await else {
                return not_found();
            };
            // Finished (or run by another process): its end, from the database.
            let Some(row) = stored_battle(&backend.store, &battle_id).await else {
                return not_found();
            };
            if row.rater_id != rater.id {
                return not_found();
            }
            if row.state == "streaming" && backend.store.dialect() == Dialect::Postgres {
                // Running in another server process (several behind one load balancer): its text
                // lives in that process's memory, so this stream carries only its end, read from
                // the database once that process writes it.
                let (sender, receiver) = watch::channel(BattleState::default());
                let store = backend.store.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        end = wait_for_battle_end(&store, &row.public_id) => {
                            let _ = sender.send(BattleState {
                                end: Some(end),
                                ..Default::default()
                            });
                        }
                        // The rater went away: stop reading.
                        () = sender.closed() => {}
                    }
                });
                receiver
            } else {
                let (_, receiver) = watch::channel(BattleState {
                    end: Some(stored_battle_end(&row.state)),
                    ..Default::default()
                });
                receiver
            }
        }
    };
    Sse::new(battle_stream(receiver, live))
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

/// Events `a` and `b` with each side's new text (only when `live`), then `end` with `complete` or
/// `void`.
fn battle_stream(
    receiver: watch::Receiver<BattleState>,
    live: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (receiver, 0usize, 0usize, false),
        move |(mut receiver, sent_a, sent_b, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let mut events: Vec<Result<Event, Infallible>> = Vec::new();
                let (mut next_a, mut next_b) = (sent_a, sent_b);
                // Only the new text is copied out, under the channel's read lock (not the whole
                // state, whose texts grow with every token).
                let ended = {
                    let state = receiver.borrow_and_update();
                    if live {
                        if state.a.len() > sent_a {
                            events.push(Ok(Event::default()
                                .event("a")
                                .data(sse_text(&state.a[sent_a..]))));
                            next_a = state.a.len();
                        }
                        if state.b.len() > sent_b {
                            events.push(Ok(Event::default()
                                .event("b")
                                .data(sse_text(&state.b[sent_b..]))));
                            next_b = state.b.len();
                        }
                    }
                    state.end.as_ref().map(|end| match end {
                        BattleEnd::Complete => "complete",
                        BattleEnd::Void(_) => "void",
                    })
                };
                if let Some(end) = ended {
                    events.push(Ok(Event::default().event("end").data(end)));
                }
                if !events.is_empty() {
                    let stream = futures::stream::iter(events);
                    return Some((stream, (receiver, next_a, next_b, ended.is_some())));
                }
                if receiver.changed().await.is_err() {
                    let end = receiver.borrow().end.is_some();
                    if !end {
                        let stream = futures::stream::iter(vec![Ok(Event::default()
                            .event("end")
                            .data("void"))]);
                        return Some((stream, (receiver, next_a, next_b, true)));
                    }
                }
            }
        },
    )
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_returns_become_line_breaks_in_events() {
        assert_eq!(sse_text("a\r\nb\rc\n"), "a\nb\nc\n");
    }
}
