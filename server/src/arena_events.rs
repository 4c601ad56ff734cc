//! The live arena's event stream: `GET /s/{slug}/battles/{id}/events`, a running battle's text as
//! server-sent events for the rater who started it, then how it ended.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    if let Err(refused) = backend.throttle_rater(&slug, &token).await {
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({ "error": refused.to_string() })),
        )
            .into_response();
    }
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

/// After a frame that carried text, the next one waits this long: text that arrives meanwhile
/// (both sides, several tokens) goes out together. The first text of a battle, and text after a
/// quiet spell, go out at once. At 20 frames a second the answers still visibly grow, and a
/// battle costs the server (and the rater's device) a fraction of a write per token: one write per
/// upstream token was most of the server's CPU at 1,000 battles (`moat bench arena`).
pub const TEXT_FRAME: Duration = Duration::from_millis(50);

/// One write to the rater: each side's new text (only when `live`), and how the battle ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Frame {
    a: Option<String>,
    b: Option<String>,
    end: Option<&'static str>,
}

/// Events `a` and `b` with each side's new text (only when `live`), then `end` with `complete` or
/// `void`.
fn battle_stream(
    receiver: watch::Receiver<BattleState>,
    live: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    battle_frames(receiver, live).flat_map(|frame| {
        let mut events: Vec<Result<Event, Infallible>> = Vec::with_capacity(3);
        if let Some(a) = frame.a {
            events.push(Ok(Event::default().event("a").data(a)));
        }
        if let Some(b) = frame.b {
            events.push(Ok(Event::default().event("b").data(b)));
        }
        if let Some(end) = frame.end {
            events.push(Ok(Event::default().event("end").data(end)));
        }
        futures::stream::iter(events)
    })
}

/// The battle's state as frames: at most one with text per [`TEXT_FRAME`], the last one with its
/// end.
fn battle_frames(receiver: watch::Receiver<BattleState>, live: bool) -> impl Stream<Item = Frame> {
    struct Sent {
        receiver: watch::Receiver<BattleState>,
        a: usize,
        b: usize,
        last_text: Option<Instant>,
        finished: bool,
    }
    let sent = Sent {
        receiver,
        a: 0,
        b: 0,
        last_text: None,
        finished: false,
    };
    futures::stream::unfold(sent, move |mut sent| async move {
        if sent.finished {
            return None;
        }
        loop {
            if let Some(last) = sent.last_text {
                let next = last + TEXT_FRAME;
                if Instant::now() < next {
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            let mut frame = Frame::default();
            // Only the new text is copied out, under the channel's read lock (not the whole
            // state, whose texts grow with every token).
            {
                let state = sent.receiver.borrow_and_update();
                if live {
                    if state.a.len() > sent.a {
                        frame.a = Some(sse_text(&state.a[sent.a..]));
                        sent.a = state.a.len();
                    }
                    if state.b.len() > sent.b {
                        frame.b = Some(sse_text(&state.b[sent.b..]));
                        sent.b = state.b.len();
                    }
                }
                frame.end = state.end.as_ref().map(|end| match end {
                    BattleEnd::Complete => "complete",
                    BattleEnd::Void(_) => "void",
                });
            }
            if frame.a.is_some() || frame.b.is_some() {
                sent.last_text = Some(Instant::now());
            }
            if frame != Frame::default() {
                sent.finished = frame.end.is_some();
                return Some((frame, sent));
            }
            if sent.receiver.changed().await.is_err() && sent.receiver.borrow().end.is_none() {
                // The battle's task went away without an end.
                sent.finished = true;
                let frame = Frame {
                    end: Some("void"),
                    ..Frame::default()
                };
                return Some((frame, sent));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_returns_become_line_breaks_in_events() {
        assert_eq!(sse_text("a\r\nb\rc\n"), "a\nb\nc\n");
    }

    /// Tokens arriving every 2 ms on both sides reach the rater in frames at most one per
    /// [`TEXT_FRAME`], every character once and in order, the end last.
    #[tokio::test]
    async fn tokens_go_out_in_frames_whole_and_in_order() {
        let (sender, receiver) = watch::channel(BattleState::default());
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for i in 0..150u32 {
                let digit = char::from_digit(i % 10, 10).unwrap();
                sender.send_modify(|state| {
                    state.a.push(digit);
                    if i % 3 == 0 {
                        state.b.push_str("b\r\n");
                    }
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sender.send_modify(|state| state.end = Some(BattleEnd::Complete));
        });
        let frames: Vec<Frame> = battle_frames(receiver, true).collect().await;
        let elapsed = started.elapsed();
        writer.await.unwrap();
        let a: String = frames.iter().filter_map(|f| f.a.clone()).collect();
        let b: String = frames.iter().filter_map(|f| f.b.clone()).collect();
        let expected_a: String = (0..150u32)
            .map(|i| char::from_digit(i % 10, 10).unwrap())
            .collect();
        assert_eq!(a, expected_a);
        assert_eq!(b, "b\n".repeat(50));
        assert_eq!(frames.last().unwrap().end, Some("complete"));
        assert!(frames[..frames.len() - 1].iter().all(|f| f.end.is_none()));
        let with_text = frames
            .iter()
            .filter(|f| f.a.is_some() || f.b.is_some())
            .count();
        let most = (elapsed.as_millis() / TEXT_FRAME.as_millis()) as usize + 2;
        assert!(
            (2..=most).contains(&with_text),
            "{with_text} frames with text in {elapsed:?}: the answer should grow in frames, at most {most}"
        );
    }

    #[tokio::test]
    async fn together_mode_sends_only_the_end_and_a_lost_battle_is_void() {
        let (sender, receiver) = watch::channel(BattleState::default());
        sender.send_modify(|state| state.a.push_str("secret speed"));
        sender.send_modify(|state| state.end = Some(BattleEnd::Complete));
        let frames: Vec<Frame> = battle_frames(receiver, false).collect().await;
        assert_eq!(
            frames,
            vec![Frame {
                end: Some("complete"),
                ..Frame::default()
            }]
        );
        let (sender, receiver) = watch::channel(BattleState::default());
        sender.send_modify(|state| state.a.push_str("half"));
        drop(sender);
        let frames: Vec<Frame> = battle_frames(receiver, true).collect().await;
        let ends: Vec<_> = frames.iter().map(|f| f.end).collect();
        assert_eq!(ends.last(), Some(&Some("void")));
    }
}
