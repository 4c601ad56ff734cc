//! Rater sessions worth trusting (issue 10, part 1), on both backends: flood limits, per-session
//! completion codes, `items_per_rater` under parallel requests, expiring comparisons, the daily
//! vote limit, the reveal at the end, and racing votes answered like serial ones.

use std::net::IpAddr;

use moat_app::backend::{Backend, BackendError};
use moat_app::wire::{RaterView, StudySettings};
use moat_server::service::AppService;

use crate::on_both_backends;
use crate::support::{backend_with_open_study, vote, MODELS};

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

/// The comparison the rater's page shows, voted `choice`; panics if the page shows anything else.
async fn vote_next(backend: &AppService, slug: &str, token: &str, choice: &str) -> String {
    let view = backend.rater_view(slug, token).await.unwrap();
    let RaterView::Compare(shown) = view else {
        panic!("expected a comparison, got {view:?}")
    };
    backend
        .vote(slug, token, vote(&shown.assignment, choice))
        .await
        .unwrap();
    shown.assignment
}

/// Sessions per address and new sessions per minute: past either limit a consent is refused with
/// 429 and a message a person understands; another address (an IPv6 address counts by its /64)
/// still gets in until the study-wide rate is reached.
async fn floods_of_sessions_are_refused(url: &str) {
    let settings = StudySettings {
        sessions_per_ip: 2,
        consents_per_minute: 5,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "flood", 3, settings).await;
    for _ in 0..2 {
        backend
            .consent("flood", None, ip("203.0.113.7"))
            .await
            .unwrap();
    }
    let refused = backend
        .consent("flood", None, ip("203.0.113.7"))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 429, "{refused}");
    assert!(
        refused.to_string().contains("sessions from your network"),
        "{refused}"
    );
    // A participant id does not get around the address limit either.
    assert!(matches!(
        backend
            .consent("flood", Some("PID-9"), ip("203.0.113.7"))
            .await,
        Err(BackendError::TooMany(_))
    ));
    // Two addresses of one IPv6 /64 are one network.
    backend
        .consent("flood", None, ip("2001:db8:1:2::10"))
        .await
        .unwrap();
    backend
        .consent("flood", None, ip("2001:db8:1:2::20"))
        .await
        .unwrap();
    assert!(matches!(
        backend.consent("flood", None, ip("2001:db8:1:2::30")).await,
        Err(BackendError::TooMany(_))
    ));
    // Five sessions started this minute: the study-wide rate refuses a sixth from a new address.
    backend
        .consent("flood", None, ip("198.51.100.1"))
        .await
        .unwrap();
    let refused = backend
        .consent("flood", None, ip("198.51.100.2"))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 429);
    assert!(
        refused.to_string().contains("try again in a minute"),
        "{refused}"
    );
    // The address itself is stored nowhere; its keyed digest is.
    let study = backend.store.study("flood").await.unwrap();
    let summaries = backend.store.rater_summaries(study.id, 100).await.unwrap();
    assert_eq!(summaries.len(), 5);
    backend.store.close().await;
}
on_both_backends!(floods_of_sessions_are_refused);

/// Racing consents cannot slip past the address limit: of 12 parallel consents from one address
/// with a limit of 3, exactly 3 start a session.
async fn racing_consents_respect_the_limit(url: &str) {
    let settings = StudySettings {
        sessions_per_ip: 3,
        consents_per_minute: 0,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "racing", 2, settings).await;
    let attempts = (0..12).map(|_| {
        let backend = backend.clone();
        tokio::spawn(async move { backend.consent("racing", None, ip("192.0.2.44")).await })
    });
    let results = futures::future::join_all(attempts).await;
    let started = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(started, 3);
    for result in results {
        if let Err(e) = result.unwrap() {
            assert_eq!(e.status(), 429, "{e}");
        }
    }
    backend.store.close().await;
}
on_both_backends!(racing_consents_respect_the_limit);

/// Each session gets its own completion code, with the study's code as prefix; the researcher can
/// look a code up (API and CLI share `verify_completion_code`), and the `votes` export carries it.
async fn completion_codes_are_per_session_and_verifiable(url: &str) {
    let settings = StudySettings {
        items_per_rater: 2,
        completion_code: Some("C0DE".into()),
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "codes", 3, settings).await;
    let mut codes = Vec::new();
    for participant in ["P-1", "P-2"] {
        let token = backend
            .consent("codes", Some(participant), None)
            .await
            .unwrap();
        vote_next(&backend, "codes", &token, "left").await;
        vote_next(&backend, "codes", &token, "right").await;
        let RaterView::Done(done) = backend.rater_view("codes", &token).await.unwrap() else {
            panic!("two votes complete the session")
        };
        let code = done.code.expect("the study gives codes");
        assert!(
            code.starts_with("C0DE-") && code.len() == "C0DE-".len() + 12,
            "{code}"
        );
        codes.push((participant, code));
    }
    assert_ne!(codes[0].1, codes[1].1, "codes are per session");
    for (participant, code) in &codes {
        let session = backend
            .verify_completion_code("codes", &format!(" {code} "))
            .await
            .unwrap();
        assert_eq!(session.participant_id.as_deref(), Some(*participant));
        assert_eq!(session.votes, 2);
        assert!(session.complete);
    }
    let unknown = backend
        .verify_completion_code("codes", "C0DE")
        .await
        .unwrap_err();
    assert_eq!(
        unknown.status(),
        404,
        "the study's bare code is no session's"
    );
    // A session that has not finished has a code but is not complete.
    let partial = backend.consent("codes", Some("P-3"), None).await.unwrap();
    vote_next(&backend, "codes", &partial, "tie").await;
    let study = backend.store.study("codes").await.unwrap();
    let summaries = backend.store.rater_summaries(study.id, 10).await.unwrap();
    let partial_code = summaries
        .iter()
        .find(|r| r.votes == 1)
        .and_then(|r| r.completion_code.clone())
        .unwrap();
    let session = backend
        .verify_completion_code("codes", &partial_code)
        .await
        .unwrap();
    assert!(!session.complete);
    // The export lists each vote with its session's code.
    let records = backend.study_records(&study).await.unwrap();
    assert_eq!(records.len(), 5);
    for (_, code) in &codes {
        assert_eq!(
            records
                .iter()
                .filter(|r| r.completion_code.as_deref() == Some(code))
                .count(),
            2
        );
    }
    backend.store.close().await;
}
on_both_backends!(completion_codes_are_per_session_and_verifiable);

/// Parallel page requests of one rater are issued one comparison at a time, and never more than
/// `items_per_rater` in all: the limit is checked where the assignment row is written.
async fn parallel_requests_never_exceed_items_per_rater(url: &str) {
    let settings = StudySettings {
        items_per_rater: 2,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "parallel", 8, settings).await;
    let token = backend.consent("parallel", None, None).await.unwrap();
    let study = backend.store.study("parallel").await.unwrap();
    let rater = backend
        .store
        .rater_by_token(study.id, &token)
        .await
        .unwrap()
        .unwrap();
    let mut voted = std::collections::HashSet::new();
    for _round in 0..4 {
        let views = futures::future::join_all((0..8).map(|_| {
            let (backend, token) = (backend.clone(), token.clone());
            tokio::spawn(async move { backend.rater_view("parallel", &token).await.unwrap() })
        }))
        .await;
        let shown: std::collections::HashSet<String> = views
            .into_iter()
            .filter_map(|v| match v.unwrap() {
                RaterView::Compare(c) => Some(c.assignment),
                _ => None,
            })
            .collect();
        assert!(shown.len() <= 1, "one comparison at a time: {shown:?}");
        // Vote on every comparison any of the parallel pages showed.
        for assignment in shown {
            backend
                .vote("parallel", &token, vote(&assignment, "left"))
                .await
                .unwrap();
            voted.insert(assignment);
        }
    }
    assert_eq!(voted.len(), 2, "items_per_rater holds");
    // And straight at the store: parallel inserts of different prompts give one assignment.
    let second = backend.consent("parallel", None, None).await.unwrap();
    let other = backend
        .store
        .rater_by_token(study.id, &second)
        .await
        .unwrap()
        .unwrap();
    let candidates = backend
        .store
        .candidate_prompts(study.id, other.id, 16, false)
        .await
        .unwrap();
    let inserts = candidates.iter().take(6).map(|c| {
        let store = backend.store.clone();
        let new = moat_server::store::NewAssignment {
            rater_id: other.id,
            study_id: study.id,
            prompt_id: c.prompt_id,
            left_response: c.responses[0],
            right_response: c.responses[1],
            check: None,
            max_for_rater: 2,
            expires_ms: None,
            pair_shards: 1,
        };
        tokio::spawn(async move { store.insert_assignment(&new).await.unwrap() })
    });
    let made = futures::future::join_all(inserts)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(made, 1);
    let _ = rater;
    backend.store.close().await;
}
on_both_backends!(parallel_requests_never_exceed_items_per_rater);

/// A comparison left unvoted past the study's time gives its prompt and pair back: the counts go
/// down, a late vote is refused with a message, the rater's next page is a new comparison, and
/// the researcher sees the expiry in the rater table.
async fn unvoted_comparisons_expire(url: &str) {
    let settings = StudySettings {
        items_per_rater: 3,
        assignment_minutes: 5,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "expiry", 4, settings).await;
    let token = backend.consent("expiry", None, None).await.unwrap();
    let study = backend.store.study("expiry").await.unwrap();
    let RaterView::Compare(first) = backend.rater_view("expiry", &token).await.unwrap() else {
        panic!()
    };
    let pairs = backend.store.pair_counts(study.id).await.unwrap();
    assert_eq!(pairs.values().sum::<i64>(), 1);
    let now = moat_server::domain::now_ms();
    // Not yet: four minutes on, nothing expires.
    assert_eq!(
        backend
            .store
            .expire_assignments(now + 4 * 60_000, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        backend
            .store
            .expire_assignments(now + 6 * 60_000, None)
            .await
            .unwrap(),
        1
    );
    let pairs = backend.store.pair_counts(study.id).await.unwrap();
    assert_eq!(pairs.values().sum::<i64>(), 0, "the pair is given back");
    let late = backend
        .vote("expiry", &token, vote(&first.assignment, "left"))
        .await
        .unwrap_err();
    assert_eq!(late.status(), 404);
    assert!(late.to_string().contains("expired"), "{late}");
    let RaterView::Compare(next) = backend.rater_view("expiry", &token).await.unwrap() else {
        panic!("a new comparison follows")
    };
    assert_ne!(next.assignment, first.assignment);
    assert_eq!(next.position, 1, "the expired one was not a vote");
    // The vote answers with the third comparison, issued in the vote's transaction.
    let RaterView::Compare(third) = backend
        .vote("expiry", &token, vote(&next.assignment, "right"))
        .await
        .unwrap()
    else {
        panic!("the vote answers with the next comparison")
    };
    assert_eq!(third.position, 2);
    // A voted comparison never expires; the third, unvoted, does.
    assert_eq!(
        backend
            .store
            .expire_assignments(now + 60 * 60_000, None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        backend.store.voted_assignment_ids(study.id).await.unwrap(),
        std::slice::from_ref(&next.assignment)
    );
    let summaries = backend.store.rater_summaries(study.id, 10).await.unwrap();
    assert_eq!(summaries[0].expired, 2);
    assert_eq!(summaries[0].votes, 1);
    backend.store.close().await;
}
on_both_backends!(unvoted_comparisons_expire);

/// Many raters at once: each pair's shown count is spread over several rows on PostgreSQL (one row
/// per pair made their transactions take turns), and the counts read back are still exact, also
/// after unvoted comparisons expire and give their pairs back.
async fn pair_counts_spread_over_shards_stay_exact(url: &str) {
    let settings = StudySettings {
        items_per_rater: 10,
        assignment_minutes: 5,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "shards", 30, settings).await;
    let study = backend.store.study("shards").await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(backend.consent("shards", None, None).await.unwrap());
    }
    // Three rounds: every rater fetches a comparison at the same moment; in the first two they vote.
    let mut voted = 0;
    for round in 0..3 {
        let views = futures::future::join_all(
            tokens
                .iter()
                .map(|token| backend.rater_view("shards", token)),
        )
        .await;
        for (token, view) in tokens.iter().zip(views) {
            let RaterView::Compare(shown) = view.unwrap() else {
                panic!("a comparison")
            };
            if round < 2 {
                backend
                    .vote("shards", token, vote(&shown.assignment, "left"))
                    .await
                    .unwrap();
                voted += 1;
            }
        }
    }
    let shown: i64 = backend
        .store
        .pair_counts(study.id)
        .await
        .unwrap()
        .values()
        .sum();
    assert_eq!(shown, 36, "12 raters × 3 comparisons");
    let rows = crate::properties::table_counts(url).await["pair_counts"];
    let pairs = (MODELS.len() * (MODELS.len() - 1) / 2) as i64;
    if url.starts_with("postgres") {
        assert!(
            rows > pairs,
            "{rows} count rows for {pairs} pairs: not spread"
        );
    } else {
        assert!(
            rows <= pairs,
            "SQLite's one writer keeps one row per pair: {rows}"
        );
    }
    let now = moat_server::domain::now_ms();
    let expired = backend
        .store
        .expire_assignments(now + 6 * 60_000, None)
        .await
        .unwrap();
    assert_eq!(expired, 12);
    let shown: i64 = backend
        .store
        .pair_counts(study.id)
        .await
        .unwrap()
        .values()
        .sum();
    assert_eq!(
        shown, voted,
        "the expired comparisons gave their pairs back"
    );
    backend.store.close().await;
}
on_both_backends!(pair_counts_spread_over_shards_stay_exact);

/// Votes per participant per day: past the limit the page says when to come back, and a new
/// session with the same participant id does not reset the count (an anonymous one has its own).
async fn votes_per_day_are_capped(url: &str) {
    let settings = StudySettings {
        items_per_rater: 5,
        votes_per_day: 2,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "daily", 6, settings).await;
    let token = backend.consent("daily", Some("P-D"), None).await.unwrap();
    vote_next(&backend, "daily", &token, "left").await;
    vote_next(&backend, "daily", &token, "left").await;
    let before = moat_server::domain::now_ms();
    let RaterView::DailyLimit { limit, until_ms } =
        backend.rater_view("daily", &token).await.unwrap()
    else {
        panic!("the daily limit is reached")
    };
    assert_eq!(limit, 2);
    let day = 24 * 60 * 60 * 1000;
    assert!(until_ms > before + day - 60_000 && until_ms <= before + day);
    let again = backend.consent("daily", Some("P-D"), None).await.unwrap();
    assert!(matches!(
        backend.rater_view("daily", &again).await.unwrap(),
        RaterView::DailyLimit { .. }
    ));
    let anonymous = backend.consent("daily", None, None).await.unwrap();
    vote_next(&backend, "daily", &anonymous, "tie").await;
    backend.store.close().await;
}
on_both_backends!(votes_per_day_are_capped);

/// A static study reveals the models of the session's comparisons on its completion page by
/// default (and only there); with `reveal_at_end` off it does not.
async fn the_reveal_comes_at_the_end(url: &str) {
    let settings = StudySettings {
        items_per_rater: 2,
        ..Default::default()
    };
    assert!(settings.reveal_at_end && !settings.reveal_after_vote);
    let backend = backend_with_open_study(url, "reveal-end", 3, settings).await;
    let token = backend.consent("reveal-end", None, None).await.unwrap();
    vote_next(&backend, "reveal-end", &token, "left").await;
    // Between votes, no model name anywhere in what the rater is given.
    let view = backend.rater_view("reveal-end", &token).await.unwrap();
    let json = serde_json::to_string(&view).unwrap();
    assert!(matches!(view, RaterView::Compare(_)));
    for (model, provider, _) in MODELS {
        assert!(
            !json.contains(model) && !json.contains(provider),
            "{model} before the end: {json}"
        );
    }
    vote_next(&backend, "reveal-end", &token, "right").await;
    let RaterView::Done(done) = backend.rater_view("reveal-end", &token).await.unwrap() else {
        panic!()
    };
    assert_eq!(done.reveals.len(), 2);
    assert_eq!(done.reveals[0].choice, "left");
    assert_eq!(done.reveals[1].choice, "right");
    assert!(done.reveals.iter().all(|r| r.left_model != r.right_model
        && [&r.left_model, &r.right_model]
            .iter()
            .all(|m| MODELS.iter().any(|(name, ..)| name == m))));

    let quiet = StudySettings {
        items_per_rater: 1,
        reveal_at_end: false,
        ..Default::default()
    };
    let backend2 = backend_with_open_study(url, "no-reveal", 2, quiet).await;
    let token = backend2.consent("no-reveal", None, None).await.unwrap();
    vote_next(&backend2, "no-reveal", &token, "left").await;
    let RaterView::Done(done) = backend2.rater_view("no-reveal", &token).await.unwrap() else {
        panic!()
    };
    assert!(done.reveals.is_empty());
    backend.store.close().await;
    backend2.store.close().await;
}
on_both_backends!(the_reveal_comes_at_the_end);

/// Racing votes on one comparison get the answers serial ones get: the same choice twice is
/// recorded once (both succeed), different choices leave one vote and a 409, never a 500.
async fn racing_votes_answer_like_serial_ones(url: &str) {
    let settings = StudySettings {
        items_per_rater: 3,
        ..Default::default()
    };
    let backend = backend_with_open_study(url, "race-votes", 4, settings).await;
    let token = backend.consent("race-votes", None, None).await.unwrap();
    for (first, second) in [("left", "left"), ("left", "right")] {
        let RaterView::Compare(shown) = backend.rater_view("race-votes", &token).await.unwrap()
        else {
            panic!()
        };
        let results = futures::future::join_all([first, second].map(|choice| {
            let (backend, token, id) = (backend.clone(), token.clone(), shown.assignment.clone());
            tokio::spawn(async move { backend.vote("race-votes", &token, vote(&id, choice)).await })
        }))
        .await;
        let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
        if first == second {
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        } else {
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{results:?}"
            );
            let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
            assert_eq!(refused.status(), 409, "{refused}");
        }
    }
    let study = backend.store.study("race-votes").await.unwrap();
    assert_eq!(backend.study_records(&study).await.unwrap().len(), 2);
    backend.store.close().await;
}
on_both_backends!(racing_votes_answer_like_serial_ones);

/// Over HTTP, with the peer address the real server sees: a script that consents again and again
/// from one address gets 429 with the reason once the study's limit is reached (the existing
/// sessions go on), and the researcher looks up a session's code through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_flood_is_refused_over_http() {
    use moat_server::client::{ClientError, RaterClient};
    let db = crate::support::TestDb::sqlite();
    let server =
        crate::support::spawn_server(db.url(), std::path::Path::new("/nonexistent-site")).await;
    let opened = server
        .open_study(
            "http-flood",
            3,
            serde_json::json!({ "sessions_per_ip": 3, "items_per_rater": 1, "completion_code": "FLOOD" }),
        )
        .await;
    assert_eq!(opened.status(), 200);
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            RaterClient::join(&server.base, "http-flood", None)
                .await
                .unwrap(),
        );
    }
    for _ in 0..5 {
        match RaterClient::join(&server.base, "http-flood", None).await {
            Err(ClientError::Status { status, body }) => {
                assert_eq!(status, 429, "{body}");
                assert!(body.contains("sessions from your network"), "{body}");
            }
            other => panic!(
                "the fourth session from one address is refused: {:?}",
                other.is_ok()
            ),
        }
    }
    // The sessions that got in are unaffected.
    let first = &sessions[0];
    let shown = first.next_comparison().await.unwrap().unwrap();
    first.vote(&shown.assignment, "left").await.unwrap();
    let RaterView::Done(done) = first.next().await.unwrap() else {
        panic!()
    };
    let code = done.code.unwrap();
    let looked_up = server
        .admin_get_json(&format!(
            "/api/v1/studies/http-flood/completion-codes/{code}"
        ))
        .await;
    assert_eq!(looked_up["votes"], 1);
    assert_eq!(looked_up["complete"], true);
    let unknown = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/http-flood/completion-codes/FLOOD-000000000000",
            server.base
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let anonymous = server
        .http
        .get(format!(
            "{}/api/v1/studies/http-flood/completion-codes/{code}",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // The votes export carries the code.
    let export = server
        .admin(server.http.get(format!(
            "{}/api/v1/studies/http-flood/export?format=votes",
            server.base
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        export.contains(&format!("\"completion_code\":\"{code}\"")),
        "{export}"
    );
    db.cleanup().await;
}

/// Behind a reverse proxy every connection comes from the proxy: with `--trust-proxy` the limit
/// counts the address the proxy appended to `X-Forwarded-For` (earlier entries are the client's own
/// claim and are ignored); without it the header is ignored and the peer address counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let db = crate::support::TestDb::sqlite();
    let server =
        crate::support::spawn_server(db.url(), std::path::Path::new("/nonexistent-site")).await;
    server
        .open_study(
            "proxied",
            2,
            serde_json::json!({ "sessions_per_ip": 1, "consents_per_minute": 0 }),
        )
        .await;
    let consent = |forwarded: &'static str| {
        let request = server
            .http
            .post(format!("{}/rpc/consent", server.base))
            .header("Origin", &server.base)
            .header("X-Forwarded-For", forwarded)
            .form(&[("slug", "proxied")]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Untrusted: the header changes nothing; the peer (127.0.0.1) has its one session after the first.
    assert!(consent("198.51.100.1").await < 400);
    assert_eq!(consent("198.51.100.2").await, 429);
    server
        .backend
        .set_cookie_policy(moat_server::service::CookiePolicy {
            always_secure: false,
            trust_proxy: true,
        });
    // Trusted: each forwarded address has its own limit; a spoofed first entry does not help.
    assert!(consent("198.51.100.3").await < 400);
    assert_eq!(consent("198.51.100.3").await, 429);
    assert_eq!(consent("203.0.113.9, 198.51.100.3").await, 429);
    assert!(consent("198.51.100.3, 198.51.100.4").await < 400);
    db.cleanup().await;
}
