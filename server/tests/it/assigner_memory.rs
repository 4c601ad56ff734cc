//! On a SQLite file the assigner chooses from a copy of each study held in memory
//! (`store/assigner_memory.rs`): it must give the choices the database gives, through the rater
//! path's own writes and through every other change, whoever makes it, and a restart must rebuild it.

use moat_app::backend::Backend;
use moat_app::wire::{RaterView, StudySettings};
use moat_server::store::Store;

use crate::support::{backend_with_open_study, sample_jsonl, vote, TestDb};

type Choice = (i64, i64, Vec<(i64, i64)>);

/// The choices from memory and from the database's queries, for each rater and both flag settings.
async fn assert_choices_are_the_databases(
    store: &Store,
    study_id: i64,
    raters: &[i64],
    when: &str,
) {
    for &rater in raters {
        for show_flagged in [false, true] {
            let (candidates, pairs) = store
                .assignment_choices(study_id, rater, 16, show_flagged)
                .await
                .unwrap();
            let from_memory: Vec<Choice> = candidates
                .into_iter()
                .map(|c| (c.prompt_id, c.times_assigned, c.responses))
                .collect();
            let from_database: Vec<Choice> = store
                .candidate_prompts(study_id, rater, 16, show_flagged)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.prompt_id, c.times_assigned, c.responses))
                .collect();
            assert_eq!(
                from_memory, from_database,
                "{when}: rater {rater}, show_flagged {show_flagged}"
            );
            assert_eq!(pairs, store.pair_counts(study_id).await.unwrap(), "{when}");
        }
    }
    let (memory, read) = store.assigner_snapshots(study_id).unwrap();
    assert_eq!(memory.as_ref(), Some(&read), "{when}: the counts in memory");
}

async fn rater_ids(store: &Store, study_id: i64, tokens: &[String]) -> Vec<i64> {
    let mut ids = Vec::new();
    for token in tokens {
        ids.push(
            store
                .rater_by_token(study_id, token)
                .await
                .unwrap()
                .unwrap()
                .id,
        );
    }
    ids
}

/// Each rater votes on `rounds` comparisons, the raters at once.
async fn vote_rounds(backend: &moat_server::service::AppService, tokens: &[String], rounds: usize) {
    let sessions = tokens.iter().map(|token| async move {
        for _ in 0..rounds {
            let RaterView::Compare(shown) = backend.rater_view("memory", token).await.unwrap()
            else {
                panic!("expected a comparison");
            };
            let answered = backend
                .vote("memory", token, vote(&shown.assignment, "left"))
                .await
                .unwrap();
            // The comparison the vote answers with (its texts by id, from their cache) is the one
            // the rater's page then shows (read from the database).
            if let RaterView::Compare(next) = answered {
                let RaterView::Compare(page) = backend.rater_view("memory", token).await.unwrap()
                else {
                    panic!("the page shows another view than the vote's answer");
                };
                let texts = |c: &moat_app::wire::Comparison| {
                    let turns: Vec<String> = c.turns.iter().map(|t| t.html.clone()).collect();
                    (
                        c.assignment.clone(),
                        turns,
                        c.left_html.clone(),
                        c.right_html.clone(),
                    )
                };
                assert_eq!(texts(&next), texts(&page));
                assert_eq!((next.position, next.total), (page.position, page.total));
            }
        }
    });
    futures::future::join_all(sessions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assigners_memory_gives_the_databases_choices() {
    let db = TestDb::sqlite();
    let settings = StudySettings {
        items_per_rater: 12,
        assignment_minutes: 30,
        ..Default::default()
    };
    let backend = backend_with_open_study(db.url(), "memory", 40, settings).await;
    let study = backend.store.study("memory").await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(backend.consent("memory", None, None).await.unwrap());
    }
    let raters = rater_ids(&backend.store, study.id, &tokens).await;

    // The rater path's own writes: votes, each answered with the next comparison in its commit.
    vote_rounds(&backend, &tokens, 4).await;
    assert_choices_are_the_databases(&backend.store, study.id, &raters, "after votes").await;

    // Open comparisons expired: the prompts and pairs are offered again.
    let expired = backend
        .store
        .expire_assignments(moat_server::domain::now_ms() + 3_600_000, None)
        .await
        .unwrap();
    assert_eq!(expired, 6, "each rater's open comparison");
    assert_choices_are_the_databases(&backend.store, study.id, &raters, "after expiry").await;

    // Another connection flags the least-shown prompt as naming its model: no rater is offered it
    // unless the study shows flagged prompts.
    let (least, _) = backend
        .store
        .assignment_choices(study.id, raters[0], 1, false)
        .await
        .unwrap();
    let flagged = least[0].prompt_id;
    let path = backend.store.sqlite_path().unwrap().to_path_buf();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE prompts SET identity_flagged = 1 WHERE id = ?1",
            [flagged],
        )
        .unwrap();
    let (after, _) = backend
        .store
        .assignment_choices(study.id, raters[0], 16, false)
        .await
        .unwrap();
    assert!(after.iter().all(|c| c.prompt_id != flagged));
    assert_choices_are_the_databases(&backend.store, study.id, &raters, "after a flag").await;

    // More prompts imported into the open study are offered at once.
    moat_server::import::import_jsonl(
        &backend.store,
        &moat_server::domain::StudySlug::parse("memory").unwrap(),
        sample_jsonl(50)
            .replace("\"id\":\"q", "\"id\":\"more-q")
            .as_bytes(),
        &[],
    )
    .await
    .unwrap_or_else(|error| panic!("import: {error}"));
    assert_choices_are_the_databases(&backend.store, study.id, &raters, "after an import").await;

    // More votes, then a restart: the new store's memory is rebuilt the same.
    vote_rounds(&backend, &tokens, 3).await;
    assert_choices_are_the_databases(&backend.store, study.id, &raters, "after more votes").await;
    let (before_restart, _) = backend.store.assigner_snapshots(study.id).unwrap();
    backend.store.close().await;
    drop(backend);
    let store = Store::connect(db.url()).await.unwrap();
    assert_choices_are_the_databases(&store, study.id, &raters, "after a restart").await;
    let (rebuilt, _) = store.assigner_snapshots(study.id).unwrap();
    assert_eq!(rebuilt, before_restart);
    store.close().await;
}

/// Many raters of one study choosing at once while their votes commit: the memory never drifts
/// from the database, and no rater is given a prompt twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_raters_keep_the_memory_exact() {
    let db = TestDb::sqlite();
    let settings = StudySettings {
        items_per_rater: 15,
        ..Default::default()
    };
    let backend = backend_with_open_study(db.url(), "memory", 60, settings).await;
    let study = backend.store.study("memory").await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..24 {
        tokens.push(backend.consent("memory", None, None).await.unwrap());
    }
    let sessions = tokens.iter().map(|token| {
        let backend = backend.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut prompts = std::collections::HashSet::new();
            while let RaterView::Compare(shown) =
                backend.rater_view("memory", &token).await.unwrap()
            {
                assert!(
                    prompts.insert(shown.turns[0].html.clone()),
                    "a prompt twice"
                );
                backend
                    .vote("memory", &token, vote(&shown.assignment, "tie"))
                    .await
                    .unwrap();
            }
            prompts.len()
        })
    });
    for done in futures::future::join_all(sessions).await {
        assert_eq!(done.unwrap(), 15);
    }
    let raters = rater_ids(&backend.store, study.id, &tokens).await;
    assert_choices_are_the_databases(&backend.store, study.id, &raters, "after the sessions").await;
    // 24 raters × 15 comparisons, every one counted once.
    let (_, (counts, pairs)) = backend.store.assigner_snapshots(study.id).unwrap();
    assert_eq!(counts.iter().map(|(times, _)| times).sum::<i64>(), 24 * 15);
    assert_eq!(pairs.iter().map(|(_, shown)| shown).sum::<i64>(), 24 * 15);
    backend.store.close().await;
}
