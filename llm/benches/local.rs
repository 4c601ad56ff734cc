//! Throughput of the local GGUF engine: prompt processing and greedy generation, in tokens per second,
//! measured through the [`Engine`] interface the server uses (queue and worker thread included).
//!
//! ```text
//! cargo bench -p moat-llm --bench local -- --gguf PATH [--threads 2] [--runs 5] [--tokens 128]
//!     [--weights as-stored|q8_0] [--print-prompt]
//! ```
//!
//! Prompt processing is the prompt's token count over the time to the first token (one forward pass
//! over the prompt, then one sample); generation is the tokens after the first over the time after the
//! first. `bench/llm/run.sh` measures llama.cpp the same way on the same prompt.

use std::path::PathBuf;
use std::time::Duration;

use moat_llm::local::{LocalModel, WeightFormat};
use moat_llm::registry::{LocalEndpoint, Sampling};
use moat_llm::{ChatMessage, Engine, GenerationRequest, Role};

/// About 250 tokens once the chat template is applied; the request asks for a long answer so that
/// greedy decoding does not end its turn before the token budget.
const PROMPT: &str = "The Roman aqueducts were a system of channels, bridges and tunnels that carried \
water from distant springs and rivers into the cities of the empire. Engineers surveyed the land \
carefully so that the water would flow downhill at a steady, gentle gradient over distances of tens \
of kilometres. Most of the length of an aqueduct ran underground in covered stone channels, which \
protected the water from heat, dirt and enemies; the famous arches were needed only where the \
channel had to cross a valley. In Rome itself eleven aqueducts supplied public fountains, baths, \
latrines and the houses of the wealthy, and officials called curatores aquarum were responsible for \
their upkeep. Lead pipes distributed the water within the city, a fact that later writers would \
debate at length. Many aqueducts remained in use for centuries after the fall of the western empire, \
and some, such as the Aqua Virgo, still feed fountains in Rome today. Write a long, detailed essay \
about the engineering, the administration and the social importance of the Roman aqueducts, with an \
introduction, several sections and a conclusion.";

struct Options {
    gguf: PathBuf,
    threads: usize,
    runs: usize,
    tokens: u32,
    weights: WeightFormat,
    print_prompt: bool,
}

fn options() -> Options {
    let mut options = Options {
        gguf: PathBuf::new(),
        threads: 2,
        runs: 5,
        tokens: 128,
        weights: WeightFormat::default(),
        print_prompt: false,
    };
    let mut args = std::env::args().skip(1);
    let usage = "usage: cargo bench -p moat-llm --bench local -- --gguf PATH [--threads N] \
                 [--runs N] [--tokens N] [--weights as-stored|q8_0] [--print-prompt]";
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value; {usage}"))
        };
        match arg.as_str() {
            "--gguf" => options.gguf = PathBuf::from(value("--gguf")),
            "--threads" => options.threads = value("--threads").parse().expect("--threads N"),
            "--runs" => options.runs = value("--runs").parse().expect("--runs N"),
            "--tokens" => options.tokens = value("--tokens").parse().expect("--tokens N"),
            "--weights" => {
                options.weights = match value("--weights").as_str() {
                    "as-stored" => WeightFormat::AsStored,
                    "q8_0" => WeightFormat::Q8_0ForScalarTypes,
                    other => panic!("--weights {other}: as-stored or q8_0"),
                }
            }
            "--print-prompt" => options.print_prompt = true,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}; {usage}"),
        }
    }
    if options.gguf.as_os_str().is_empty() {
        panic!("--gguf is required; {usage}");
    }
    options
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = options();
    // candle sizes its CPU thread pool from these variables the first time it runs a kernel, so they
    // are set before the model is loaded.
    std::env::set_var("CANDLE_NUM_THREADS", options.threads.to_string());
    std::env::set_var("RAYON_NUM_THREADS", options.threads.to_string());

    let endpoint = LocalEndpoint {
        path: options.gguf.clone(),
        max_context: 2048,
        queue: 4,
    };
    let sampling = Sampling {
        max_tokens: options.tokens,
        temperature: Some(0.0),
        top_p: None,
        seed: Some(0),
        system_prompt: None,
    };
    let loading = std::time::Instant::now();
    let model = LocalModel::load_with("bench", &endpoint, &sampling, options.weights)
        .expect("load the model");
    let load_time = loading.elapsed();
    let messages = vec![ChatMessage::new(Role::User, PROMPT)];
    if options.print_prompt {
        print!(
            "{}",
            model.render_chat(&messages).expect("render the prompt")
        );
        return;
    }
    let request = GenerationRequest {
        messages,
        max_tokens: Some(options.tokens),
        temperature: Some(0.0),
        ..GenerationRequest::default()
    };

    // One unmeasured run warms the caches and candle's thread pool.
    model
        .generate(request.clone(), None)
        .await
        .expect("warm-up");
    let mut prompt_rates = Vec::new();
    let mut generation_rates = Vec::new();
    let mut prompt_tokens = 0;
    let mut generated = 0;
    for _ in 0..options.runs {
        let completion = model
            .generate(request.clone(), None)
            .await
            .expect("generate");
        let usage = completion.usage.expect("usage");
        let first = completion
            .time_to_first_token
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let rest = completion.latency.as_secs_f64() - first;
        prompt_tokens = usage.prompt_tokens;
        generated = usage.completion_tokens;
        prompt_rates.push(f64::from(usage.prompt_tokens) / first);
        generation_rates.push(f64::from(usage.completion_tokens.saturating_sub(1)) / rest);
    }
    println!(
        "moat (candle) {} weights={:?} threads={} load={:.2}s",
        options.gguf.display(),
        options.weights,
        options.threads,
        load_time.as_secs_f64()
    );
    println!(
        "prompt processing: {:.1} tokens/s ({} prompt tokens, median of {} runs)",
        median(&mut prompt_rates),
        prompt_tokens,
        options.runs
    );
    println!(
        "generation: {:.1} tokens/s ({} tokens greedy, median of {} runs)",
        median(&mut generation_rates),
        generated,
        options.runs
    );
    if generated < options.tokens {
        println!(
            "note: the model ended its answer after {generated} of {} tokens",
            options.tokens
        );
    }
}
