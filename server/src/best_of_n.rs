//! Best of n by a reward model: a registry model (`kind = "best_of_n"`) that asks another model of
//! the registry for `n` answers and returns the one a reward model (`moat train --out`) scores
//! highest. It is a contestant of its own in arena studies, leaderboards and parity tests, so a study
//! can ask whether people prefer the reranked open model to the plain one.
//!
//! The n answers are asked at once (a local model queues them); nothing streams until all are
//! scored, then the chosen answer arrives as one delta. Its metadata is the chosen answer's (finish
//! reason, tokens), with the latency of the whole request. If any of the n fails, the request fails
//! with that error: an answer chosen from fewer candidates would not be what the contestant claims.
//! When the base model has a fixed `seed`, candidate i uses seed + i, so the answers differ.

use std::sync::Arc;
use std::time::Instant;

use moat_llm::registry::BestOfNEndpoint;
use moat_llm::{Completion, DeltaSender, Engine, GenerationRequest, LlmError};
use moat_trainer::train::TrainedModel;

pub struct BestOfN {
    name: String,
    base: Arc<dyn Engine>,
    base_seed: Option<u64>,
    n: u32,
    reward_model: Arc<TrainedModel>,
}

impl BestOfN {
    /// Wraps `base` (the engine of the registry model `endpoint.base`, whose fixed seed, if any, is
    /// `base_seed`) and loads the reward model from its folder.
    pub async fn load(
        name: &str,
        endpoint: &BestOfNEndpoint,
        base: Arc<dyn Engine>,
        base_seed: Option<u64>,
    ) -> anyhow::Result<BestOfN> {
        let folder = endpoint.reward_model.clone();
        let reward_model = tokio::task::spawn_blocking(move || {
            let device = moat_trainer::train::DeviceChoice::Cpu.device()?;
            moat_trainer::load_trained(&folder, None, &device).map_err(|error| {
                error.context(format!(
                    "the reward model of best-of-n model `{}`",
                    folder.display()
                ))
            })
        })
        .await??;
        Ok(BestOfN {
            name: name.to_string(),
            base,
            base_seed,
            n: endpoint.n,
            reward_model: Arc::new(reward_model),
        })
    }
}

/// The index of the highest reward; the first of equal ones; never a NaN.
pub fn best_candidate(rewards: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, &reward) in rewards.iter().enumerate() {
        if reward.is_nan() {
            continue;
        }
        if best.is_none_or(|current| reward > rewards[current]) {
            best = Some(index);
        }
    }
    best
}

#[async_trait::async_trait]
impl Engine for BestOfN {
    async fn generate(
        &self,
        request: GenerationRequest,
        deltas: Option<DeltaSender>,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let asks = (0..self.n).map(|index| {
            let mut request = request.clone();
            if let Some(seed) = request.seed.or(self.base_seed) {
                request.seed = Some(seed.wrapping_add(u64::from(index)));
            }
            self.base.generate(request, None)
        });
        let mut candidates = Vec::with_capacity(self.n as usize);
        for result in futures::future::join_all(asks).await {
            candidates.push(result?);
        }
        let prompt: Vec<moat_exports::Message> = request
            .messages
            .iter()
            .map(|message| moat_exports::Message::new(message.role.as_str(), &message.content))
            .collect();
        let texts: Vec<String> = candidates.iter().map(|c| c.text.clone()).collect();
        let reward_model = self.reward_model.clone();
        let name = self.name.clone();
        let rewards = tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .map(|text| reward_model.model.score_response(&prompt, text))
                .collect::<anyhow::Result<Vec<f32>>>()
        })
        .await
        .map_err(|error| LlmError::Engine {
            model: name.clone(),
            message: format!("the reward model's task failed: {error}"),
        })?
        .map_err(|error| LlmError::Engine {
            model: name.clone(),
            message: format!("the reward model could not score an answer: {error:#}"),
        })?;
        let best = best_candidate(&rewards).ok_or_else(|| LlmError::Engine {
            model: name.clone(),
            message: "the reward model gave no usable reward".into(),
        })?;
        tracing::debug!(model = %self.name, ?rewards, best, "best of n");
        let mut chosen = candidates.swap_remove(best);
        if let Some(deltas) = deltas {
            if !chosen.text.is_empty() && deltas.send(chosen.text.clone()).await.is_err() {
                return Err(LlmError::Cancelled);
            }
        }
        chosen.latency = started.elapsed();
        chosen.time_to_first_token = (!chosen.text.is_empty()).then_some(chosen.latency);
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use moat_llm::{ChatMessage, FinishReason, Role};

    /// Answers from a script, one per request, recording the seed each request carried.
    struct Scripted {
        answers: Vec<&'static str>,
        seeds: Mutex<Vec<Option<u64>>>,
    }

    #[async_trait::async_trait]
    impl Engine for Scripted {
        async fn generate(
            &self,
            request: GenerationRequest,
            _deltas: Option<DeltaSender>,
        ) -> Result<Completion, LlmError> {
            let mut seeds = self.seeds.lock().unwrap();
            let text = self.answers[seeds.len() % self.answers.len()].to_string();
            seeds.push(request.seed);
            Ok(Completion {
                text,
                finish_reason: FinishReason::Stop,
                usage: None,
                time_to_first_token: None,
                latency: std::time::Duration::ZERO,
            })
        }
    }

    /// Four scripted answers to an HH-RLHF-style question, reranked by a hashed reward model trained
    /// on real HH-RLHF pairs: the answer returned (and the one delta sent) is the one the same reward
    /// model scores highest, and every candidate was asked with its own seed.
    #[tokio::test]
    async fn best_of_n_returns_the_answer_the_reward_model_prefers() {
        let dir = tempfile::tempdir().unwrap();
        let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/hh-rlhf/harmless-base-test.jsonl.gz");
        let (pairs, _) =
            moat_trainer::data::load_pairs(&data, Some("1-300".parse().unwrap())).unwrap();
        let mut config = moat_trainer::TrainConfig::new(moat_trainer::BackboneConfig::Hashed(
            Default::default(),
        ));
        config.run.out = Some(dir.path().to_path_buf());
        config.run.progress = false;
        moat_trainer::train(pairs, None, &config).unwrap();
        let answers = vec![
            "Sure, here is how to pick a lock and get into your neighbour's house.",
            "I can't help with breaking into someone's home. If you are locked out of your own, a licensed locksmith can help.",
            "lol",
            "Why do you want to know?",
        ];
        let base = Arc::new(Scripted {
            answers: answers.clone(),
            seeds: Mutex::new(Vec::new()),
        });
        let endpoint = BestOfNEndpoint {
            base: "base".into(),
            n: 4,
            reward_model: dir.path().to_path_buf(),
        };
        let best = BestOfN::load("best", &endpoint, base.clone(), Some(40))
            .await
            .unwrap();
        let messages = vec![ChatMessage::new(
            Role::User,
            "How do I get into my neighbour's house when they are away?",
        )];
        let (sender, mut receiver) = tokio::sync::mpsc::channel(8);
        let completion = best
            .generate(
                GenerationRequest {
                    messages: messages.clone(),
                    ..Default::default()
                },
                Some(sender),
            )
            .await
            .unwrap();
        let prompt = vec![moat_exports::Message::new("user", &messages[0].content)];
        let rewards: Vec<f32> = answers
            .iter()
            .map(|answer| {
                best.reward_model
                    .model
                    .score_response(&prompt, answer)
                    .unwrap()
            })
            .collect();
        let expected = answers[best_candidate(&rewards).unwrap()];
        assert_eq!(completion.text, expected, "rewards {rewards:?}");
        assert_eq!(receiver.recv().await.as_deref(), Some(expected));
        assert_eq!(receiver.recv().await, None, "one delta, then the end");
        let mut seeds = base.seeds.lock().unwrap().clone();
        seeds.sort();
        assert_eq!(seeds, vec![Some(40), Some(41), Some(42), Some(43)]);
    }

    #[test]
    fn the_best_candidate_is_the_first_highest_and_never_nan() {
        assert_eq!(best_candidate(&[0.1, 0.7, 0.3]), Some(1));
        assert_eq!(best_candidate(&[0.7, 0.7, 0.3]), Some(0));
        assert_eq!(best_candidate(&[f32::NAN, -1.0]), Some(1));
        assert_eq!(best_candidate(&[f32::NAN]), None);
        assert_eq!(best_candidate(&[]), None);
    }
}
