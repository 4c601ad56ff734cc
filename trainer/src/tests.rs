//! End-to-end tests of the public API: training on real pairs, checkpoints, batch invariance, and the
//! bert path on a tiny random encoder (and on real MiniLM weights when `MOAT_MINILM_DIR` is set).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use moat_exports::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bert::{BertConfig, BertRewardModel, BertSpec, FineTune};
use crate::data::{load_pairs, PreferencePair};
use crate::hashed::HashedConfig;
use crate::model::RewardModel;
use crate::params::ParamGroup;
use crate::train::{
    load_trained, train, AnyModel, BackboneConfig, DeviceChoice, RunOptions, TrainConfig,
};

fn hh_pairs(rows: &str) -> Vec<PreferencePair> {
    load_pairs(&crate::test_data::hh_rlhf(), Some(rows.parse().unwrap()))
        .unwrap()
        .0
}

fn hashed_config(out: Option<PathBuf>) -> TrainConfig {
    let mut config = TrainConfig::new(BackboneConfig::Hashed(HashedConfig::default()));
    config.seed = 3;
    config.run = RunOptions {
        out,
        progress: false,
        ..Default::default()
    };
    config
}

/// Trains the hashed model on 800 real HH-RLHF pairs and evaluates on 312 others (rows 2001–2312). The
/// release benchmark gets 0.6+ on the full 2,000; here the assertion is 0.56, which at n = 312 is about
/// two standard errors above chance, and the run is seeded so it cannot flake.
#[test]
fn hashed_model_learns_real_preferences() {
    let train_pairs = hh_pairs("1-800");
    let eval_pairs = hh_pairs("2001-2312");
    let report = train(train_pairs, Some(eval_pairs), &hashed_config(None)).unwrap();
    let eval = report.eval.clone().unwrap();
    println!("{report}");
    assert_eq!(
        eval.pairs, 311,
        "rows 2001-2312 give 311 pairs (one row's sides differ in context)"
    );
    assert!(
        eval.accuracy > 0.56,
        "held-out accuracy {:.3}",
        eval.accuracy
    );
    assert!(eval.accuracy > eval.length_baseline_accuracy, "{eval}");
}

#[test]
fn save_load_score_gives_identical_rewards_and_scores_are_batch_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = hh_pairs("1-120");
    let mut config = hashed_config(Some(dir.path().to_path_buf()));
    config.epochs = 2;
    let (train_pairs, eval_pairs) = pairs.split_at(100);
    train(train_pairs.to_vec(), Some(eval_pairs.to_vec()), &config).unwrap();
    let first = load_trained(dir.path(), None, &Device::Cpu).unwrap();
    let second = load_trained(dir.path(), None, &Device::Cpu).unwrap();
    let together = first.model.score_pairs(eval_pairs).unwrap();
    let alone: Vec<_> = eval_pairs
        .iter()
        .flat_map(|pair| {
            second
                .model
                .score_pairs(std::slice::from_ref(pair))
                .unwrap()
        })
        .collect();
    assert_eq!(together, alone);
    assert!(
        together.iter().any(|score| score.chosen != 0.0),
        "the model was trained"
    );
    // The training path batches with padding; it agrees with row-at-a-time scoring to rounding.
    let AnyModel::Hashed(model) = &first.model else {
        unreachable!()
    };
    let inputs: Vec<_> = eval_pairs
        .iter()
        .map(|pair| model.encode(&pair.prompt, &pair.chosen).unwrap())
        .collect();
    let batched = model
        .rewards(&inputs.iter().collect::<Vec<_>>(), false)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (batched, alone) in batched.iter().zip(&together) {
        assert!((batched - alone.chosen).abs() < 1e-5);
    }
}

#[test]
fn resume_continues_from_the_saved_step() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = hh_pairs("1-200");
    let (train_pairs, eval_pairs) = pairs.split_at(160);
    let mut config = hashed_config(Some(dir.path().to_path_buf()));
    config.epochs = 2;
    config.max_steps = Some(5);
    let first = train(train_pairs.to_vec(), Some(eval_pairs.to_vec()), &config).unwrap();
    assert_eq!(first.steps, 5);
    config.max_steps = None;
    config.run.resume = true;
    let resumed = train(train_pairs.to_vec(), Some(eval_pairs.to_vec()), &config).unwrap();
    // 160 pairs in batches of 32: 5 steps an epoch, 10 in all.
    assert_eq!(resumed.steps, 10);
    assert_eq!(resumed.epochs_run, 2);
}

#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let error = "cuda"
        .parse::<DeviceChoice>()
        .unwrap()
        .device()
        .unwrap_err()
        .to_string();
    assert!(error.contains("--features moat-trainer/cuda"), "{error}");
}

// ---- the bert path on a tiny random encoder ----

const WORDS: &[&str] = &[
    "good", "bad", "the", "answer", "is", "a", "question", "what", "yes", "no", "maybe", "fine",
];

fn tiny_tokenizer_json() -> String {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(WORDS.iter().map(|s| s.to_string()));
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), serde_json::Value::from(id)))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

fn tiny_config() -> BertConfig {
    BertConfig {
        vocab_size: 4 + WORDS.len(),
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 40,
        ..Default::default()
    }
}

/// Random weights under the names (and without the `bert.` prefix) of MiniLM's file.
fn tiny_weights(config: &BertConfig, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensor = |shape: &[usize], scale: f32, offset: f32| {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| offset + scale * rng.gen_range(-1.0f32..1.0))
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    };
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let mut weights = HashMap::new();
    weights.insert(
        "embeddings.word_embeddings.weight".into(),
        tensor(&[config.vocab_size, h], 1.0, 0.0),
    );
    weights.insert(
        "embeddings.position_embeddings.weight".into(),
        tensor(&[config.max_position_embeddings, h], 0.2, 0.0),
    );
    weights.insert(
        "embeddings.token_type_embeddings.weight".into(),
        tensor(&[2, h], 0.2, 0.0),
    );
    let norm = |weights: &mut HashMap<String, Tensor>,
                prefix: String,
                tensor: &mut dyn FnMut(&[usize], f32, f32) -> Tensor| {
        weights.insert(format!("{prefix}.weight"), tensor(&[h], 0.1, 1.0));
        weights.insert(format!("{prefix}.bias"), tensor(&[h], 0.1, 0.0));
    };
    norm(&mut weights, "embeddings.LayerNorm".into(), &mut tensor);
    for layer in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{layer}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            weights.insert(format!("{p}.{name}.weight"), tensor(&[out, inp], 0.4, 0.0));
            weights.insert(format!("{p}.{name}.bias"), tensor(&[out], 0.1, 0.0));
        }
        norm(
            &mut weights,
            format!("{p}.attention.output.LayerNorm"),
            &mut tensor,
        );
        norm(&mut weights, format!("{p}.output.LayerNorm"), &mut tensor);
    }
    weights
}

/// Writes a tiny model folder like MiniLM's (config.json, tokenizer.json, model.safetensors).
fn tiny_model_dir(dir: &Path) {
    let config = tiny_config();
    let config_json = serde_json::json!({
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0, "model_type": "bert"
    });
    std::fs::write(dir.join("config.json"), config_json.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    candle_core::safetensors::save(&tiny_weights(&config, 11), dir.join("model.safetensors"))
        .unwrap();
}

fn tiny_model(mode: FineTune) -> BertRewardModel {
    tiny_model_with_targets(mode, crate::bert::default_lora_targets())
}

fn tiny_model_with_targets(mode: FineTune, lora_targets: Vec<String>) -> BertRewardModel {
    let spec = BertSpec {
        model_dir: PathBuf::from("unused"),
        mode,
        max_length: 24,
        lora_targets,
    };
    let tokenizer = tokenizers::Tokenizer::from_bytes(tiny_tokenizer_json()).unwrap();
    let config = tiny_config();
    let weights = tiny_weights(&config, 11);
    BertRewardModel::from_parts(spec, config, tokenizer, weights, 5, &Device::Cpu).unwrap()
}

/// This encoder computes what candle-transformers' `BertModel` computes, padding included.
#[test]
fn bert_encoder_matches_candle_transformers() {
    let config = tiny_config();
    let model = tiny_model(FineTune::Lora {
        rank: 4,
        alpha: 8.0,
    });
    let weights = tiny_weights(&config, 11);
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let reference = candle_transformers::models::bert::BertModel::load(vb, &config).unwrap();
    let ids = Tensor::new(
        &[[2u32, 5, 6, 7, 3, 8, 3], [2, 9, 10, 3, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let mask = Tensor::new(
        &[[1f32, 1., 1., 1., 1., 1., 1.], [1., 1., 1., 1., 0., 0., 0.]],
        &Device::Cpu,
    )
    .unwrap();
    let ours = model.hidden_states(&ids, &mask, false).unwrap();
    let theirs = reference
        .forward(
            &ids,
            &ids.zeros_like().unwrap(),
            Some(&mask.to_dtype(DType::U32).unwrap()),
        )
        .unwrap();
    // Compare real tokens only (row 2 has 4).
    let difference = (ours.narrow(1, 0, 4).unwrap() - theirs.narrow(1, 0, 4).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    let difference = difference.to_scalar::<f32>().unwrap();
    assert!(difference < 1e-5, "max difference {difference}");
}

/// LoRA of rank r on query and value adds exactly r·(in + out) parameters per adapted projection.
#[test]
fn lora_adds_the_expected_parameter_count() {
    let config = tiny_config();
    for rank in [1, 4] {
        let model = tiny_model(FineTune::Lora {
            rank,
            alpha: 2.0 * rank as f64,
        });
        let h = config.hidden_size;
        let expected = config.num_hidden_layers * 2 * rank * (h + h);
        assert_eq!(model.params().count(Some(ParamGroup::Encoder)), expected);
        assert_eq!(model.params().count(Some(ParamGroup::Head)), h + 1);
    }
    let (h, i) = (config.hidden_size, config.intermediate_size);
    // All six projections: four h→h, one h→i, one i→h.
    let all: Vec<String> = crate::bert::PROJECTIONS
        .iter()
        .map(|(short, _)| short.to_string())
        .collect();
    let model = tiny_model_with_targets(
        FineTune::Lora {
            rank: 2,
            alpha: 4.0,
        },
        all,
    );
    let per_layer = 2 * (4 * (h + h) + (h + i) + (i + h));
    assert_eq!(
        model.params().count(Some(ParamGroup::Encoder)),
        config.num_hidden_layers * per_layer
    );
    let model = tiny_model(FineTune::Top { layers: 1 });
    let layer = 4 * (h * h + h) + (i * h + i) + (h * i + h) + 2 * 2 * h;
    assert_eq!(model.params().count(Some(ParamGroup::Encoder)), layer);
}

/// The analytic gradient through the whole encoder (LoRA, frozen projections, our softmax and layer
/// norm) agrees with finite differences; so does a top-layer weight trained through the slow norm.
#[test]
fn bert_gradients_match_finite_differences() {
    for mode in [
        FineTune::Lora {
            rank: 2,
            alpha: 4.0,
        },
        FineTune::Top { layers: 1 },
    ] {
        let model = tiny_model(mode);
        let prompt = [Message::new("user", "what is the answer")];
        let inputs = [
            model.encode(&prompt, "yes good").unwrap(),
            model.encode(&prompt, "no").unwrap(),
        ];
        let refs: Vec<_> = inputs.iter().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Make every LoRA B non-zero so A gets a gradient too.
        for param in model.params().iter() {
            if param.name.ends_with("lora_b") {
                let shape = param.var.dims().to_vec();
                let values: Vec<f32> = (0..param.var.elem_count())
                    .map(|_| rng.gen_range(-0.5f32..0.5))
                    .collect();
                param
                    .var
                    .set(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let loss = |model: &BertRewardModel| -> f64 {
            let rewards = model
                .rewards(&refs, false)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (rewards[0] as f64 - 2.0 * rewards[1] as f64).powi(2)
        };
        let rewards = model.rewards(&refs, true).unwrap();
        let objective = (rewards.get(0).unwrap() - (rewards.get(1).unwrap() * 2.0).unwrap())
            .unwrap()
            .sqr()
            .unwrap();
        let grads = objective.backward().unwrap();
        let mut checked = 0;
        for param in model
            .params()
            .iter()
            .filter(|param| param.group == ParamGroup::Encoder)
        {
            let grad = grads
                .get(param.var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {}", param.name));
            let grad = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let values = param.var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The largest-gradient element of each parameter: finite differences in f32 are only
            // meaningful where the gradient is well above rounding noise.
            let (index, analytic) = grad
                .iter()
                .copied()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            if analytic.abs() < 1e-3 {
                continue;
            }
            let step = 1e-2f32;
            let shifted = |delta: f32| {
                let mut changed = values.clone();
                changed[index] += delta;
                param
                    .var
                    .set(&Tensor::from_vec(changed, param.var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let value = loss(&model);
                param
                    .var
                    .set(
                        &Tensor::from_vec(values.clone(), param.var.shape(), &Device::Cpu).unwrap(),
                    )
                    .unwrap();
                value
            };
            let numeric = (shifted(step) - shifted(-step)) / (2.0 * step as f64);
            let relative =
                (numeric - analytic as f64).abs() / numeric.abs().max(analytic.abs() as f64);
            assert!(
                relative < 0.05,
                "{mode}: {} analytic {analytic} numeric {numeric}",
                param.name
            );
            checked += 1;
        }
        assert!(checked >= 4, "{mode}: only {checked} parameters checked");
    }
}

/// Synthetic pairs: "good" answers beat "bad" ones.
fn synthetic_pairs(count: usize, seed: u64) -> Vec<PreferencePair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let filler = [
        "the answer is",
        "a question",
        "what",
        "maybe fine",
        "yes",
        "no",
    ];
    (0..count)
        .map(|index| {
            let pick = |rng: &mut ChaCha8Rng| filler[rng.gen_range(0..filler.len())];
            PreferencePair {
                prompt: vec![Message::new(
                    "user",
                    format!("what {} question {index}", pick(&mut rng)),
                )],
                chosen: format!("{} good {}", pick(&mut rng), pick(&mut rng)),
                rejected: format!("{} bad {}", pick(&mut rng), pick(&mut rng)),
                category: Some(if index % 2 == 0 { "even" } else { "odd" }.into()),
                margin: None,
            }
        })
        .collect()
}

/// LoRA training on the tiny model: learns the synthetic task, changes only head and adapters, and
/// the saved model scores exactly as the trained one.
#[test]
fn bert_lora_trains_saves_and_reloads_with_base_weights_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("base");
    std::fs::create_dir(&model_dir).unwrap();
    tiny_model_dir(&model_dir);
    let out = dir.path().join("out");
    let spec = BertSpec {
        model_dir: model_dir.clone(),
        mode: FineTune::Lora {
            rank: 2,
            alpha: 4.0,
        },
        max_length: 24,
        lora_targets: crate::bert::default_lora_targets(),
    };
    let mut config = TrainConfig::new(BackboneConfig::Bert(spec));
    config.epochs = 3;
    config.lr = 1e-2;
    config.head_lr = 3e-2;
    config.run = RunOptions {
        out: Some(out.clone()),
        progress: false,
        ..Default::default()
    };
    let eval_pairs = synthetic_pairs(40, 2);
    let report = train(synthetic_pairs(120, 1), Some(eval_pairs.clone()), &config).unwrap();
    println!("{report}");
    let eval = report.eval.unwrap();
    assert!(eval.accuracy >= 0.9, "{eval}");
    assert_eq!(eval.per_category.len(), 2);
    for file in [
        "adapters.safetensors",
        "head.safetensors",
        "config.json",
        "base-tokenizer.json",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    let adapters =
        candle_core::safetensors::load(out.join("adapters.safetensors"), &Device::Cpu).unwrap();
    assert!(
        adapters.keys().all(|name| name.contains("lora_")),
        "only adapters are saved"
    );
    let trained = load_trained(&out, None, &Device::Cpu).unwrap();
    let AnyModel::Bert(model) = &trained.model else {
        panic!("a bert model")
    };
    let base = tiny_weights(&tiny_config(), 11);
    for (layer, name) in [
        (0, "attention.self.query"),
        (1, "attention.self.value"),
        (1, "output.dense"),
    ] {
        let original = &base[&format!("encoder.layer.{layer}.{name}.weight")];
        let now = model.base_weight(layer, name).unwrap();
        assert_eq!(
            original.to_vec2::<f32>().unwrap(),
            now.to_vec2::<f32>().unwrap(),
            "{name} untouched"
        );
    }
    let scores = trained.model.score_pairs(&eval_pairs).unwrap();
    let again = crate::eval::EvalReport::compute(&eval_pairs, &scores);
    assert_eq!(again.accuracy, eval.accuracy);
    assert!(
        (again.mean_loss - eval.mean_loss).abs() < 1e-12,
        "save → load → score is identical"
    );
    let alone: Vec<_> = eval_pairs
        .iter()
        .flat_map(|pair| {
            trained
                .model
                .score_pairs(std::slice::from_ref(pair))
                .unwrap()
        })
        .collect();
    assert_eq!(scores, alone);
}

#[test]
fn bert_head_and_top_modes_train() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model_dir(dir.path());
    for mode in [FineTune::Head, FineTune::Top { layers: 1 }] {
        let spec = BertSpec {
            model_dir: dir.path().to_path_buf(),
            mode,
            max_length: 24,
            lora_targets: crate::bert::default_lora_targets(),
        };
        let mut config = TrainConfig::new(BackboneConfig::Bert(spec));
        config.epochs = 3;
        config.lr = 3e-3;
        config.head_lr = 3e-2;
        config.run.progress = false;
        let report = train(
            synthetic_pairs(120, 1),
            Some(synthetic_pairs(40, 2)),
            &config,
        )
        .unwrap();
        let eval = report.eval.unwrap();
        assert!(eval.accuracy >= 0.8, "{mode}: {eval}");
    }
}

/// Sharing a batch's pairs among two workers (`step.rs`) gives the gradient of the whole batch: for
/// top-1 and LoRA on pairs of uneven length (so the shares pad differently), the summed gradient of
/// every parameter, the rewards and the loss equal one worker's to float rounding.
#[test]
fn two_workers_give_the_gradient_of_the_whole_batch() {
    use crate::step::{batch_pass, EncodedPair, Workers};
    let mut raw = synthetic_pairs(7, 3);
    for (index, pair) in raw.iter_mut().enumerate() {
        pair.chosen.push_str(&" and more".repeat(index % 4));
    }
    let workers = Workers::new(2).unwrap();
    for mode in [
        FineTune::Top { layers: 1 },
        FineTune::Lora {
            rank: 2,
            alpha: 4.0,
        },
    ] {
        let model = tiny_model(mode);
        let pairs: Vec<_> = raw
            .iter()
            .enumerate()
            .map(|(index, pair)| {
                let chosen = model.encode(&pair.prompt, &pair.chosen).unwrap();
                let rejected = model.encode(&pair.prompt, &pair.rejected).unwrap();
                EncodedPair {
                    cost: chosen.ids.len().max(rejected.ids.len()),
                    chosen,
                    rejected,
                    margin: if index % 3 == 0 { 0.5 } else { 0.0 },
                }
            })
            .collect();
        let batch: Vec<usize> = (0..pairs.len()).collect();
        let one = batch_pass(&model, &pairs, &batch, 0.5, 0.01, None).unwrap();
        let two = batch_pass(&model, &pairs, &batch, 0.5, 0.01, Some(&workers)).unwrap();
        assert_eq!((one.grads.len(), two.grads.len()), (1, 2));
        assert!((one.loss_sum - two.loss_sum).abs() < 1e-5 * one.loss_sum);
        let sorted = |values: &[f32]| {
            let mut values = values.to_vec();
            values.sort_by(f32::total_cmp);
            values
        };
        for (a, b) in sorted(&one.chosen).iter().zip(sorted(&two.chosen)) {
            assert!((a - b).abs() < 1e-5, "{mode}: reward {a} vs {b}");
        }
        let mut compared = 0;
        for param in model.params().iter() {
            let whole = one.grads[0].get(param.var.as_tensor()).unwrap();
            let shared = (two.grads[0].get(param.var.as_tensor()).unwrap()
                + two.grads[1].get(param.var.as_tensor()).unwrap())
            .unwrap();
            let scale = whole
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let difference = (whole - shared)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                difference <= 1e-4 * scale.max(1e-3),
                "{mode}: {} differs by {difference} (largest {scale})",
                param.name
            );
            compared += 1;
        }
        assert!(compared > 2, "{mode}: {compared} parameters");
    }
}

/// Left truncation keeps the response whole and the end of the context.
#[test]
fn truncation_keeps_the_response_and_cuts_the_context_from_the_left() {
    let model = tiny_model(FineTune::Head);
    let prompt = [Message::new("user", "the question is what what is the question what is the answer yes no maybe fine good bad the answer")];
    let ids = model.tokenize(&prompt, "good answer").unwrap();
    assert_eq!(ids.len(), 24);
    let token = |word: &str| 4 + WORDS.iter().position(|w| *w == word).unwrap() as u32;
    assert_eq!(
        &ids[ids.len() - 4..],
        &[3, token("good"), token("answer"), 3]
    );
    // Context ends "... the answer" right before the first [SEP].
    assert_eq!(
        &ids[ids.len() - 6..ids.len() - 4],
        &[token("the"), token("answer")]
    );
    assert_eq!(ids[0], 2);
}

/// Real MiniLM weights, when the test script fetched them (scripts/fetch-minilm.sh).
#[test]
fn minilm_matches_candle_transformers_and_trains_a_step() {
    let Some(model_dir) = std::env::var_os("MOAT_MINILM_DIR").map(PathBuf::from) else {
        println!("skipped: set MOAT_MINILM_DIR to the all-MiniLM-L6-v2 folder (scripts/fetch-minilm.sh prints it)");
        return;
    };
    let spec = BertSpec {
        model_dir: model_dir.clone(),
        mode: FineTune::Lora {
            rank: 8,
            alpha: 16.0,
        },
        max_length: 64,
        lora_targets: crate::bert::default_lora_targets(),
    };
    let model = BertRewardModel::load(spec.clone(), 0, &Device::Cpu).unwrap();
    let config = crate::bert::read_config(&model_dir).unwrap();
    let weights = crate::bert::read_weights(&model_dir, &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let reference = candle_transformers::models::bert::BertModel::load(vb, &config).unwrap();
    let ids = model
        .tokenize(
            &[Message::new("user", "How do I bake bread?")],
            "Mix flour, water and yeast.",
        )
        .unwrap();
    let n = ids.len();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones((1, n), DType::F32, &Device::Cpu).unwrap();
    let ours = model.hidden_states(&ids, &mask, false).unwrap();
    let theirs = reference
        .forward(&ids, &ids.zeros_like().unwrap(), None)
        .unwrap();
    let difference = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(difference < 1e-4, "max difference {difference}");
    // Six LoRA-adapted layers × (query, value) × 8 · (384 + 384).
    assert_eq!(
        model.params().count(Some(ParamGroup::Encoder)),
        6 * 2 * 8 * 768
    );
    let dir = tempfile::tempdir().unwrap();
    let mut train_config = TrainConfig::new(BackboneConfig::Bert(spec));
    train_config.max_steps = Some(2);
    train_config.batch_size = 2;
    train_config.grad_accum = 1;
    train_config.run = RunOptions {
        out: Some(dir.path().to_path_buf()),
        progress: false,
        ..Default::default()
    };
    let pairs = hh_pairs("1-6");
    let report = train(
        pairs[..4].to_vec(),
        Some(pairs[4..].to_vec()),
        &train_config,
    )
    .unwrap();
    assert_eq!(report.steps, 2);
    let trained = load_trained(dir.path(), None, &Device::Cpu).unwrap();
    let scores = trained.model.score_pairs(&pairs[4..]).unwrap();
    assert_eq!(
        crate::eval::EvalReport::compute(&pairs[4..], &scores),
        report.eval.unwrap()
    );
}

#[derive(clap::Parser)]
struct TrainCli {
    #[command(flatten)]
    args: crate::TrainArgs,
}

#[derive(clap::Parser)]
struct ScoreCli {
    #[command(flatten)]
    args: crate::ScoreArgs,
}

/// `moat train` then `moat score` through the clap surfaces: the scored file has one row per pair with
/// the rewards the trained model reports.
#[test]
fn cli_train_then_score_writes_one_scored_row_per_pair() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let data = crate::test_data::hh_rlhf();
    let out = dir.path().join("model");
    let data_arg = data.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let argv = [
        "train", "--data", data_arg, "--rows", "1-150", "--out", out_arg, "--epochs", "2",
        "--quiet", "--seed", "4",
    ];
    crate::run_train(TrainCli::parse_from(argv).args).unwrap();
    let report: crate::TrainReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.train_pairs + report.eval_pairs, 150);
    let scored = dir.path().join("scored.jsonl");
    let argv = [
        "score",
        "--model",
        out_arg,
        "--data",
        data_arg,
        "--rows",
        "1-20",
        "--out",
        scored.to_str().unwrap(),
    ];
    crate::run_score(ScoreCli::parse_from(argv).args).unwrap();
    let rows: Vec<crate::cli::ScoredPair> = std::fs::read_to_string(&scored)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 20);
    let trained = load_trained(&out, None, &Device::Cpu).unwrap();
    let expected = trained.model.score_pairs(&hh_pairs("1-20")).unwrap();
    for (row, score) in rows.iter().zip(&expected) {
        assert_eq!(
            (row.reward_chosen, row.reward_rejected),
            (score.chosen, score.rejected)
        );
    }
}

/// The same seed gives the same model: identical eval reports and training history.
#[test]
fn training_is_deterministic_for_a_seed() {
    let pairs = hh_pairs("1-240");
    let (train_pairs, eval_pairs) = pairs.split_at(200);
    let mut config = hashed_config(None);
    config.epochs = 2;
    let first = train(train_pairs.to_vec(), Some(eval_pairs.to_vec()), &config).unwrap();
    let second = train(train_pairs.to_vec(), Some(eval_pairs.to_vec()), &config).unwrap();
    assert_eq!(first.eval, second.eval);
    assert_eq!(first.history, second.history);
    config.seed += 1;
    let other = train(train_pairs.to_vec(), Some(eval_pairs.to_vec()), &config).unwrap();
    assert_ne!(first.history, other.history, "the seed matters");
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A hashed model trained on 300 HH-RLHF pairs, saved and loaded back as `moat rm eval` loads it.
fn trained_hashed_model(dir: &Path) -> crate::train::TrainedModel {
    let mut config = hashed_config(Some(dir.to_path_buf()));
    config.epochs = 3;
    train(hh_pairs("1-300"), Some(hh_pairs("301-340")), &config).unwrap();
    load_trained(dir, None, &Device::Cpu).unwrap()
}

/// `moat rm eval` on the RewardBench v1 fixture: the format is recognised, every subset is scored with
/// the rewards `moat score` gives the same pairs (strict v1 rule: a tie is wrong), the four section
/// scores are the count-weighted means of their subsets, and the overall score is their mean.
#[test]
fn rm_eval_scores_the_rewardbench_v1_fixture_like_moat_score() {
    use crate::benchmark::{bench_report, read_bench_file, score_items, BenchFormat};
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_hashed_model(dir.path());
    let file = read_bench_file(&fixture("rewardbench-v1.jsonl"), BenchFormat::Auto).unwrap();
    assert_eq!(file.format, BenchFormat::Rewardbench);
    assert_eq!((file.items.len(), file.rows_read), (36, 36));
    let scores = score_items(&trained.model, &file.items).unwrap();
    let report = bench_report(file.format, &file.items, &scores);
    assert_eq!(report.subsets.len(), 9);
    assert_eq!(report.subsets.iter().map(|s| s.items).sum::<usize>(), 36);
    let pairs: Vec<PreferencePair> = file
        .items
        .iter()
        .map(|item| PreferencePair {
            prompt: item.prompt.clone(),
            chosen: item.chosen[0].clone(),
            rejected: item.rejected[0].clone(),
            category: Some(item.subset.clone()),
            margin: None,
        })
        .collect();
    let pair_scores = trained.model.score_pairs(&pairs).unwrap();
    for subset in &report.subsets {
        let (mut right, mut n) = (0usize, 0usize);
        for (pair, score) in pairs.iter().zip(&pair_scores) {
            if pair.category.as_deref() == Some(subset.subset.as_str()) {
                n += 1;
                right += usize::from(score.chosen > score.rejected);
            }
        }
        assert_eq!(subset.items, n);
        assert_eq!(subset.score, right as f64 / n as f64, "{}", subset.subset);
        let (low, high) = (subset.low.unwrap(), subset.high.unwrap());
        assert!(low <= subset.score && subset.score <= high);
    }
    assert_eq!(report.sections.len(), 4);
    let score_of = |name: &str| {
        report
            .subsets
            .iter()
            .find(|s| s.subset == name)
            .unwrap()
            .score
    };
    let safety = report
        .sections
        .iter()
        .find(|s| s.section == "Safety")
        .unwrap();
    let expected = (score_of("refusals-dangerous") * 100.0
        + score_of("xstest-should-respond") * 250.0
        + score_of("donotanswer") * 136.0)
        / 486.0;
    assert!((safety.score - expected).abs() < 1e-12);
    assert_eq!(
        safety.missing_subsets,
        vec!["refusals-offensive", "xstest-should-refuse"]
    );
    let mean = report.sections.iter().map(|s| s.score).sum::<f64>() / 4.0;
    assert!((report.overall.unwrap() - mean).abs() < 1e-12);
    let text = report.to_string();
    assert!(
        text.contains("section Reasoning") && text.contains("overall"),
        "{text}"
    );
}

/// `moat rm eval` on the RewardBench 2 fixture: best-of-4 items, the Ties subset by its own rule, and
/// the overall score as the mean of the six subsets.
#[test]
fn rm_eval_scores_the_rewardbench_v2_fixture() {
    use crate::benchmark::{
        bench_report, item_result, read_bench_file, score_items, BenchFormat, TieRule,
    };
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_hashed_model(dir.path());
    let file = read_bench_file(&fixture("rewardbench-v2.jsonl"), BenchFormat::Auto).unwrap();
    assert_eq!(file.format, BenchFormat::Rewardbench2);
    assert_eq!(file.items.len(), 32);
    let scores = score_items(&trained.model, &file.items).unwrap();
    assert!(scores
        .iter()
        .zip(&file.items)
        .all(|(s, i)| s.chosen.len() == i.chosen.len() && s.rejected.len() == i.rejected.len()));
    let report = bench_report(file.format, &file.items, &scores);
    assert_eq!(report.subsets.len(), 6);
    let focus: Vec<usize> = (0..file.items.len())
        .filter(|&i| file.items[i].subset == "Focus")
        .collect();
    assert_eq!(focus.len(), 4);
    let expected = focus
        .iter()
        .map(|&i| item_result(&scores[i], TieRule::Split))
        .sum::<f64>()
        / 4.0;
    let reported = report.subsets.iter().find(|s| s.subset == "Focus").unwrap();
    assert_eq!(reported.score, expected);
    let ties = report.subsets.iter().find(|s| s.subset == "Ties").unwrap();
    let parts = ties.ties.as_ref().unwrap();
    assert_eq!((parts.ref_prompts, parts.tied_prompts), (6, 6));
    assert!(ties.low.is_none());
    let mean = report.subsets.iter().map(|s| s.score).sum::<f64>() / 6.0;
    assert!((report.overall.unwrap() - mean).abs() < 1e-12);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["format"], "rewardbench2");
    assert!(json["subsets"][5]["ties"]["ref_accuracy"].is_number());
}

/// Malformed benchmark rows are refused with the line and the field.
#[test]
fn rm_eval_names_the_line_and_field_of_a_bad_row() {
    use crate::benchmark::{read_bench_file, BenchFormat};
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            BenchFormat::Rewardbench2,
            r#"{"prompt": "p", "chosen": ["a"], "rejected": ["b", "c", "d"], "subset": "Math", "id": 1}
{"prompt": "p", "chosen": ["a"], "rejected": ["b"], "num_correct": 2, "subset": "Math", "id": 2}"#,
            "line 2, field `num_correct`",
        ),
        (
            BenchFormat::Rewardbench2,
            r#"{"prompt": "p", "chosen": ["a", "b"], "rejected": ["c"], "subset": "Ties", "id": "7"}"#,
            "line 1, field `id`: a Ties row needs an id `ref:N` or `tied:N`",
        ),
        (
            BenchFormat::Rewardbench2,
            r#"{"prompt": "p", "chosen": ["a"], "rejected": [3], "subset": "Math"}"#,
            "line 1, field `rejected[0]`: expected a string",
        ),
        (
            BenchFormat::Rewardbench,
            r#"{"prompt": "p", "chosen": "a", "rejected": "b", "id": 4}"#,
            "line 1, field `subset`: missing",
        ),
    ];
    for (format, text, expected) in cases {
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, text).unwrap();
        let error = format!("{:#}", read_bench_file(&path, format).unwrap_err());
        assert!(
            error.contains(expected),
            "{error} should contain {expected}"
        );
    }
    // TRL pairs and HH-RLHF transcripts read as pair formats with the category (or `all`) as subset.
    let file = read_bench_file(&crate::test_data::hh_rlhf(), BenchFormat::Auto).unwrap();
    assert_eq!(file.format, BenchFormat::HhRlhf);
    assert!(file.items.iter().all(|item| item.subset == "all"));
}

/// The active-sampling simulation on real pairs (pool: HH-RLHF rows 1–600, held out: 2001–2312),
/// simulated raters who agree with the dataset 80% of the time, three seeds (all the seeds tried):
/// uncertainty sampling reaches 0.58 held-out accuracy after 100, 200 and 100 votes, uniform after
/// 150, never (within 300) and 100; its mean learning curve is above uniform's from 100 votes on.
/// Seeded, so deterministic; the figures at full scale are in trainer/BENCHMARKS.md.
#[test]
fn uncertainty_sampling_reaches_the_target_with_fewer_votes_than_uniform() {
    use crate::active::{simulate, ActivePolicy, SimulationConfig};
    let pool = hh_pairs("1-600");
    let held_out = hh_pairs("2001-2312");
    let config = SimulationConfig {
        rater_accuracy: 0.8,
        first_votes: 50,
        batch: 50,
        max_votes: 300,
        target: 0.58,
        epochs: 5,
    };
    // Votes to the target summed over seeds (a run that never reaches it counts one batch past the
    // end), and the mean held-out accuracy over each run's curve after the shared first batch.
    let mut votes = [0usize; 2];
    let mut area = [0.0f64; 2];
    for seed in [1, 2, 3] {
        for (index, policy) in [ActivePolicy::Uniform, ActivePolicy::Uncertainty]
            .into_iter()
            .enumerate()
        {
            let run = simulate(&pool, &held_out, policy, &config, seed).unwrap();
            println!(
                "seed {seed} {policy:?}: {:?} -> {:?}",
                run.curve, run.votes_to_target
            );
            assert_eq!(run.curve.len(), 6);
            votes[index] += run
                .votes_to_target
                .unwrap_or(config.max_votes + config.batch);
            area[index] += run.curve[1..].iter().map(|&(_, a)| a).sum::<f64>() / 15.0;
        }
    }
    println!("votes to target {votes:?}, mean accuracy {area:?}");
    assert!(
        votes[1] < votes[0],
        "uncertainty {} vs uniform {} votes",
        votes[1],
        votes[0]
    );
    assert!(area[1] > area[0] + 0.01, "{area:?}");
}
