//! How often one rater session may ask for anything: a token bucket per session, in this process's
//! memory, checked before any database read. A person voting makes a few requests a minute; a
//! script flooding the study from one session is answered 429 past the study's
//! `rater_requests_per_minute` and costs the server a hash lookup, not a rater cycle.
//!
//! Each process keeps its own buckets: behind a load balancer with N processes a session can get up
//! to N times the limit, which still holds a flood to a known rate.

use super::*;

/// Sessions whose buckets are remembered at once; past it the full ones (idle long enough to have
/// refilled) are forgotten, and if that is not enough, all of them (a flood of made-up tokens must
/// not grow the map without end; forgetting only ever gives a session more, never less).
const MAX_BUCKETS: usize = 100_000;

#[derive(Default)]
pub(super) struct RaterThrottle {
    keys: std::collections::hash_map::RandomState,
    buckets: std::sync::Mutex<HashMap<u64, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RaterThrottle {
    /// Takes one request from the bucket of (`study`, `session`) at `per_minute` requests a
    /// minute (a full bucket holds a minute's worth). `false` when it is empty.
    pub(super) fn take(&self, study: i64, session: &str, per_minute: u32, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        use std::hash::BuildHasher;
        let key = self.keys.hash_one((study, session));
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| refilled(bucket, now, per_second) < capacity);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let tokens = refilled(bucket, now, per_second).min(capacity);
        let allowed = tokens >= 1.0;
        *bucket = Bucket {
            tokens: if allowed { tokens - 1.0 } else { tokens },
            at: now,
        };
        allowed
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64) -> f64 {
    bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * per_second
}

impl AppService {
    /// Refuses a rater session's request past its study's `rater_requests_per_minute`. An unknown
    /// study passes here and is refused by the request itself.
    pub(crate) async fn throttle_rater(
        &self,
        slug: &str,
        rater_token: &str,
    ) -> Result<(), BackendError> {
        let Ok(study) = self.open_study(slug).await else {
            return Ok(());
        };
        let per_minute = study.settings.rater_requests_per_minute;
        if self
            .rater_throttle
            .take(study.id, rater_token, per_minute, Instant::now())
        {
            return Ok(());
        }
        Err(BackendError::TooMany(format!(
            "this session made more than {per_minute} requests in a minute; \
             wait a few seconds and try again"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_minute_and_refills_at_the_rate() {
        let throttle = RaterThrottle::default();
        let start = Instant::now();
        for n in 0..60 {
            assert!(
                throttle.take(1, "s", 60, start),
                "request {n} of the first minute"
            );
        }
        assert!(!throttle.take(1, "s", 60, start), "the 61st at once");
        // Another session, and the same token in another study, have buckets of their own.
        assert!(throttle.take(1, "t", 60, start));
        assert!(throttle.take(2, "s", 60, start));
        // One request a second comes back (60 a minute), never more than a full bucket.
        assert!(!throttle.take(1, "s", 60, start + Duration::from_millis(500)));
        assert!(throttle.take(1, "s", 60, start + Duration::from_millis(1100)));
        assert!(!throttle.take(1, "s", 60, start + Duration::from_millis(1200)));
        let later = start + Duration::from_secs(3600);
        for _ in 0..60 {
            assert!(throttle.take(1, "s", 60, later));
        }
        assert!(!throttle.take(1, "s", 60, later));
        // 0 is no limit.
        for _ in 0..1000 {
            assert!(throttle.take(1, "u", 0, start));
        }
    }

    #[test]
    fn made_up_tokens_do_not_grow_the_map_and_a_flooding_session_stays_refused() {
        let throttle = RaterThrottle::default();
        let start = Instant::now();
        for n in 0..(MAX_BUCKETS - 1) {
            assert!(throttle.take(1, &n.to_string(), 120, start));
        }
        // A minute later those buckets are full again; one session uses its bucket up.
        let later = start + Duration::from_secs(61);
        for _ in 0..120 {
            assert!(throttle.take(1, "hot", 120, later));
        }
        assert!(!throttle.take(1, "hot", 120, later));
        // The map is full: a new session makes room by forgetting the full buckets, not the
        // empty one.
        assert!(throttle.take(1, "new", 120, later));
        assert_eq!(throttle.buckets.lock().unwrap().len(), 2);
        assert!(!throttle.take(1, "hot", 120, later));
        // Made-up tokens all at once: the map never holds more than its bound.
        for n in 0..(MAX_BUCKETS + 10) {
            throttle.take(1, &format!("x{n}"), 120, later);
        }
        assert!(throttle.buckets.lock().unwrap().len() <= MAX_BUCKETS);
    }
}
