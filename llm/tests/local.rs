//! The local GGUF engine against the real SmolLM2-135M-Instruct (Q4_1). The model file is not part of
//! the repository: `export MOAT_SMOLLM2_GGUF="$(scripts/fetch-smollm2.sh)"` first. The tests fail
//! rather than skip without it, so that a CI run cannot pass by not testing the engine.
//!
//! Each model is loaded once per test binary; answers are kept to a few tokens because CI builds the
//! dependencies at opt-level 1 and runs on two cores.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use moat_llm::local::LocalModel;
use moat_llm::registry::{LocalEndpoint, Sampling};
use moat_llm::{ChatMessage, Engine, FinishReason, GenerationRequest, LlmError, Role};

const OUR_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

fn gguf() -> PathBuf {
    std::env::var_os("MOAT_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .expect("run scripts/fetch-smollm2.sh and set MOAT_SMOLLM2_GGUF")
}

fn sampling(system_prompt: Option<&str>) -> Sampling {
    Sampling {
        max_tokens: 16,
        temperature: Some(0.0),
        top_p: None,
        seed: None,
        system_prompt: system_prompt.map(str::to_string),
    }
}

/// The model as shipped: no system prompt configured, a roomy queue and context.
fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let endpoint = LocalEndpoint {
            path: gguf(),
            max_context: 2048,
            queue: 64,
        };
        LocalModel::load("smollm2", &endpoint, &sampling(None)).expect("load the model")
    })
}

/// A second copy with our own system prompt, a queue of one and a 64-token context.
fn small_model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let endpoint = LocalEndpoint {
            path: gguf(),
            max_context: 64,
            queue: 1,
        };
        LocalModel::load(
            "smollm2-small",
            &endpoint,
            &sampling(Some(OUR_SYSTEM_PROMPT)),
        )
        .expect("load the model")
    })
}

/// The small model's queue holds one request, so the tests that generate with it take turns.
static SMALL_MODEL_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ask(question: &str, max_tokens: u32) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage::new(Role::User, question)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..GenerationRequest::default()
    }
}

#[tokio::test]
async fn greedy_decoding_repeats_itself_and_knows_paris() {
    let request = ask(
        "What is the capital of France? Explain in two sentences.",
        8,
    );
    let first = model().generate(request.clone(), None).await.unwrap();
    let second = model().generate(request, None).await.unwrap();
    assert_eq!(first.text, second.text);
    assert!(first.text.contains("Paris"), "{:?}", first.text);
    let usage = first.usage.unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert!(first.time_to_first_token.unwrap() <= first.latency);
}

#[test]
fn the_gguf_chat_template_renders_chatml() {
    let model = model();
    assert!(model.chat_template().contains("<|im_start|>"));
    assert!(model.chat_template().contains("<|im_end|>"));
    let conversation = [
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, "Hi!"),
        ChatMessage::new(Role::Assistant, "Hello. How can I help?"),
        ChatMessage::new(Role::User, "Name a colour.\nJust one."),
    ];
    assert_eq!(
        model.render_chat(&conversation).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n\
         <|im_start|>user\nHi!<|im_end|>\n\
         <|im_start|>assistant\nHello. How can I help?<|im_end|>\n\
         <|im_start|>user\nName a colour.\nJust one.<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn the_system_prompt_is_the_templates_default_unless_one_is_configured() {
    let question = [ChatMessage::new(Role::User, "Who are you?")];
    assert_eq!(
        model().render_chat(&question).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\
         <|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        small_model().render_chat(&question).unwrap(),
        format!(
            "<|im_start|>system\n{OUR_SYSTEM_PROMPT}<|im_end|>\n\
             <|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
        )
    );
    // A conversation's own system turn wins over the configured one.
    let with_system = [
        ChatMessage::new(Role::System, "Talk like a pirate."),
        ChatMessage::new(Role::User, "Who are you?"),
    ];
    let rendered = small_model().render_chat(&with_system).unwrap();
    assert!(rendered.starts_with("<|im_start|>system\nTalk like a pirate.<|im_end|>\n"));
    assert!(!rendered.contains(OUR_SYSTEM_PROMPT));
}

#[test]
fn the_tokenizer_round_trips_and_knows_the_chatml_markers() {
    let model = model();
    assert_eq!(model.encode("<|im_start|>").unwrap(), vec![1]);
    assert_eq!(model.encode("<|im_end|>").unwrap(), vec![2]);
    assert_eq!(model.encode("<|endoftext|>").unwrap(), vec![0]);
    for text in [
        "Hello, world!",
        " leading space and  double  spaces\n\ttabs",
        "Grüße aus Köln, 世界 🌍, 2024-11-29.",
    ] {
        let ids = model.encode(text).unwrap();
        assert_eq!(model.decode(&ids), text);
    }
    // SmolLM's pre-tokenizer writes numbers one digit a token.
    assert_eq!(model.encode("2024").unwrap().len(), 4);
    let prompt = model
        .render_chat(&[ChatMessage::new(Role::User, "Hi")])
        .unwrap();
    let ids = model.encode(&prompt).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 3);
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2);
}

#[tokio::test]
async fn max_tokens_ends_the_answer_with_length() {
    let completion = model()
        .generate(ask("Write a long poem about the sea.", 5), None)
        .await
        .unwrap();
    assert_eq!(completion.finish_reason, FinishReason::Length);
    let usage = completion.usage.unwrap();
    assert_eq!(usage.completion_tokens, 5);
    assert_eq!(usage.total_tokens, usage.prompt_tokens + 5);
    assert!(!completion.text.is_empty());
}

#[tokio::test]
async fn the_deltas_add_up_to_the_text() {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1024);
    let completion = model()
        .generate(
            ask("Say hello in French, Japanese and with an emoji.", 10),
            Some(sender),
        )
        .await
        .unwrap();
    let mut streamed = String::new();
    let mut count = 0;
    while let Some(delta) = receiver.recv().await {
        assert!(!delta.is_empty());
        assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
        streamed.push_str(&delta);
        count += 1;
    }
    assert!(count > 1, "the answer came in {count} piece(s)");
    assert_eq!(streamed, completion.text);
}

#[tokio::test]
async fn a_closed_receiver_stops_the_answer() {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
    let model = model();
    let answer = tokio::spawn(model.generate(ask("Count from 1 to 100.", 300), Some(sender)));
    receiver.recv().await.expect("a first delta");
    drop(receiver);
    let result = tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .expect("the worker gives up soon")
        .unwrap();
    assert!(matches!(result, Err(LlmError::Cancelled)), "{result:?}");
}

#[tokio::test]
async fn dropping_the_future_stops_the_answer() {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(1024);
    let model = model();
    let answer = tokio::spawn(model.generate(ask("Count from 1 to 100.", 300), Some(sender)));
    receiver.recv().await.expect("a first delta");
    answer.abort();
    // The worker drops the sender when it leaves the request, which ends this stream; had it gone
    // on, 300 tokens would have arrived.
    let mut after = 0;
    while tokio::time::timeout(Duration::from_secs(60), receiver.recv())
        .await
        .expect("the worker gives up soon")
        .is_some()
    {
        after += 1;
    }
    assert!(after < 20, "{after} deltas after the future was dropped");
}

#[tokio::test]
async fn a_full_queue_answers_busy() {
    let _turn = SMALL_MODEL_TURN.lock().await;
    let model = small_model();
    let results =
        futures::future::join_all((0..4).map(|_| model.generate(ask("Hi!", 4), None))).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(LlmError::Busy { capacity: 1, .. })))
        .count();
    let answered = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy >= 1, "{results:?}");
    assert!(answered >= 1, "{results:?}");
    assert_eq!(busy + answered, 4, "{results:?}");
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_refused() {
    let long = "many words ".repeat(60);
    let result = small_model().generate(ask(&long, 4), None).await;
    match result {
        Err(LlmError::InvalidRequest(message)) => {
            assert!(message.contains("context of 64 tokens"), "{message}");
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[tokio::test]
async fn max_tokens_is_clamped_to_the_context() {
    let model = small_model();
    let request = ask(&"Tell me a story about a dragon. ".repeat(3), 500);
    let prompt = model.render_chat(&request.messages).unwrap();
    let prompt_tokens = model.encode(&prompt).unwrap().len() as u32;
    assert!(prompt_tokens + 2 <= 64, "{prompt_tokens}");
    let _turn = SMALL_MODEL_TURN.lock().await;
    let completion = model.generate(request, None).await.unwrap();
    let usage = completion.usage.unwrap();
    assert_eq!(usage.prompt_tokens, prompt_tokens);
    if completion.finish_reason == FinishReason::Length {
        assert_eq!(usage.total_tokens, 64);
    } else {
        assert!(usage.total_tokens < 64);
    }
}

/// Each model's worker waits for its next request outside candle's thread pool (one thread per
/// core): when it waited inside, every loaded model held a pool thread for good, and with as many
/// models as cores the next request to any of them never started. More models than cores, all
/// asked at once, twice, must all answer.
#[tokio::test]
async fn more_local_models_than_cores_all_answer() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let endpoint = LocalEndpoint {
        path: gguf(),
        max_context: 256,
        queue: 4,
    };
    let models: Vec<LocalModel> = (0..=cores)
        .map(|index| {
            LocalModel::load(&format!("smollm2-{index}"), &endpoint, &sampling(None))
                .expect("load the model")
        })
        .collect();
    for _round in 0..2 {
        let answers = tokio::time::timeout(
            Duration::from_secs(300),
            futures::future::join_all(models.iter().map(|m| m.generate(ask("Hi!", 2), None))),
        )
        .await
        .expect("every model answers");
        for answer in answers {
            let tokens = answer.expect("an answer").usage.unwrap().completion_tokens;
            assert!((1..=2).contains(&tokens), "{tokens} tokens");
        }
    }
}
