//! A rater's side of the HTTP protocol, as the browser speaks it: join a study through the consent
//! server function, ask for the next comparison, vote. Used by the load benchmark and the tests.

use std::time::Duration;

use moat_app::wire::{Comparison, RaterView};

pub struct RaterClient {
    http: reqwest::Client,
    /// The rater's cookies, shared with a [`RaterClient::rebased`] copy.
    jar: std::sync::Arc<reqwest::cookie::Jar>,
    base: String,
    slug: String,
}

/// An HTTP client that behaves like the rater's browser on `base`: it keeps cookies in `jar` and says
/// where each request comes from (the server refuses a cookie-authenticated post without an Origin;
/// see `security`).
fn browser_like(
    base: &str,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(origin) = reqwest::header::HeaderValue::from_str(base.trim_end_matches('/')) {
        headers.insert(reqwest::header::ORIGIN, origin);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

impl RaterClient {
    /// Consents to the study (as participant `participant`, if given) and keeps the rater cookie.
    pub async fn join(
        base: &str,
        slug: &str,
        participant: Option<&str>,
    ) -> Result<RaterClient, ClientError> {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let http = browser_like(base, jar.clone())?;
        let client = RaterClient {
            http,
            jar,
            base: base.trim_end_matches('/').to_string(),
            slug: slug.to_string(),
        };
        let mut form = vec![("slug", slug.to_string())];
        if let Some(participant) = participant {
            form.push(("participant", participant.to_string()));
        }
        let response = client
            .http
            .post(format!("{}/rpc/consent", client.base))
            .form(&form)
            .send()
            .await?;
        client.check(response).await?;
        Ok(client)
    }

    async fn check(&self, response: reqwest::Response) -> Result<String, ClientError> {
        let status = response.status();
        let body = response.text().await?;
        if status.is_client_error() || status.is_server_error() {
            return Err(ClientError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(body)
    }

    /// The raw JSON of the `rater_view` server function.
    pub async fn next_raw(&self) -> Result<String, ClientError> {
        let response = self
            .http
            .post(format!("{}/rpc/rater_view", self.base))
            .header("Accept", "application/json")
            .form(&[("slug", self.slug.as_str())])
            .send()
            .await?;
        self.check(response).await
    }

    pub async fn next(&self) -> Result<RaterView, ClientError> {
        let body = self.next_raw().await?;
        json_answer(&body)
    }

    /// The next comparison, or `None` when the rater is done (or the study is not open).
    pub async fn next_comparison(&self) -> Result<Option<Comparison>, ClientError> {
        Ok(match self.next().await? {
            RaterView::Compare(comparison) => Some(comparison),
            _ => None,
        })
    }

    pub async fn vote(&self, assignment: &str, choice: &str) -> Result<(), ClientError> {
        self.vote_with(assignment, choice, &[]).await
    }

    /// Votes and returns what the vote answers with: what the rater sees next, as the page does.
    pub async fn vote_then_next(
        &self,
        assignment: &str,
        choice: &str,
    ) -> Result<RaterView, ClientError> {
        let body = self.vote_raw(assignment, choice, &[]).await?;
        json_answer(&body)
    }

    /// A vote with more form fields (`rationale`, `source_guess`, `source_confidence`).
    pub async fn vote_with(
        &self,
        assignment: &str,
        choice: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        self.vote_raw(assignment, choice, fields).await.map(|_| ())
    }

    /// The raw JSON the `vote` server function answers with.
    pub async fn vote_raw(
        &self,
        assignment: &str,
        choice: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, ClientError> {
        let mut form = vec![
            ("slug", self.slug.as_str()),
            ("assignment", assignment),
            ("choice", choice),
        ];
        form.extend_from_slice(fields);
        let response = self
            .http
            .post(format!("{}/rpc/vote", self.base))
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await?;
        self.check(response).await
    }

    /// GET a page with this rater's cookies (HTML as the browser receives it).
    pub async fn page(
        &self,
        path: &str,
    ) -> Result<(reqwest::header::HeaderMap, String), ClientError> {
        let response = self
            .http
            .get(format!("{}{}", self.base, path))
            .send()
            .await?;
        let headers = response.headers().clone();
        Ok((headers, self.check(response).await?))
    }
}

/// The arena's side of the protocol: send a prompt, follow the battle's events.
impl RaterClient {
    /// The same rater (same cookies) talking to a server at another address, e.g. the same data
    /// restarted on a new port (cookies are per host, not per port).
    pub fn rebased(&self, base: &str) -> Result<RaterClient, ClientError> {
        Ok(RaterClient {
            http: browser_like(base, self.jar.clone())?,
            jar: self.jar.clone(),
            base: base.trim_end_matches('/').to_string(),
            slug: self.slug.clone(),
        })
    }

    /// Sends a prompt to an arena study; `live` as the hydrated page does (the battle id comes back
    /// at once), else as a plain form post (the answer comes once both models are done).
    pub async fn arena_prompt(&self, prompt: &str, live: bool) -> Result<String, ClientError> {
        self.arena_send(&[("prompt", prompt)], live).await
    }

    /// Asks both models of the unvoted battle a follow-up question (a multi-turn battle).
    pub async fn arena_follow_up(&self, question: &str, live: bool) -> Result<String, ClientError> {
        self.arena_send(&[("prompt", question), ("follow_up", "1")], live)
            .await
    }

    /// Asks for one of the study's sample prompts instead of writing one.
    pub async fn arena_sample(&self, live: bool) -> Result<String, ClientError> {
        self.arena_send(&[("sample", "1")], live).await
    }

    async fn arena_send(&self, fields: &[(&str, &str)], live: bool) -> Result<String, ClientError> {
        let mut form = vec![("slug", self.slug.as_str())];
        form.extend_from_slice(fields);
        if live {
            form.push(("live", "1"));
        }
        let response = self
            .http
            .post(format!("{}/rpc/arena_prompt", self.base))
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await?;
        let body = self.check(response).await?;
        json_answer(&body)
    }

    /// A battle's server-sent events, as the page's EventSource receives them (read to the end).
    pub async fn battle_events(&self, battle: &str) -> Result<String, ClientError> {
        let response = self
            .http
            .get(format!(
                "{}/s/{}/battles/{battle}/events",
                self.base, self.slug
            ))
            .send()
            .await?;
        self.check(response).await
    }

    /// The battle's events as a stream of raw bytes (to watch the answers grow).
    pub async fn battle_events_response(
        &self,
        battle: &str,
    ) -> Result<reqwest::Response, ClientError> {
        Ok(self
            .http
            .get(format!(
                "{}/s/{}/battles/{battle}/events",
                self.base, self.slug
            ))
            .send()
            .await?)
    }
}

/// A server function's JSON answer; one that does not parse is reported with its text.
fn json_answer<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ClientError> {
    serde_json::from_str(body).map_err(|e| ClientError::Status {
        status: 200,
        body: format!("{e}: {body}"),
    })
}
