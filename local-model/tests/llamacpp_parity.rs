//! Parity with llama.cpp on the real default model (SmolLM2-135M-Instruct, Q4_1).
//!
//! The expected ids were recorded once from llama.cpp (llama-cpp-python 0.3.36, built with
//! `CMAKE_ARGS="-DGGML_NATIVE=ON"`, 2 threads) by the command stored in the fixture's
//! `command` field:
//!
//! ```text
//! .venv/bin/python scripts/llamacpp_ref.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --skip-speed --fixture local-model/tests/fixtures/smollm2_q4_1_llamacpp.json
//! ```
//!
//! The tests run when the model file is present (`SLMGATE_GGUF`, or `models/` at the repository
//! root, as `scripts/fetch-models.sh` leaves it; CI fetches it) and are skipped with a note
//! otherwise.
//!
//! # How greedy decoding is compared
//!
//! At 135M parameters, with activations quantized to 8 bits per block of 32 (as llama.cpp does),
//! this model's logits are chaotic in the last bits: changing only where attention rounds to
//! `f16` moves the top logits by up to ~0.6 (measured). Two implementations that are not
//! bit-identical kernel by kernel therefore agree on every token except where llama.cpp's own
//! top two candidates are nearly tied. With the file's weights (`quantize: keep`) llama.cpp's
//! greedy answer has one such step: at token 8 its top two logits are 2.635 and 2.617.
//!
//! So the tests decode with teacher forcing along llama.cpp's 16 greedy tokens, and at each step
//! require our greedy pick to be llama.cpp's, unless llama.cpp rates our pick within
//! [`NEAR_TIE`] of its own (a tie at this precision); and our logit for llama.cpp's pick to be
//! within [`LOGIT_TOL`] of llama.cpp's (twice that after requantizing to Q8_0). A real bug (wrong RoPE, a bad kernel, a misread tensor)
//! moves logits by whole units and fails both checks. Free-running greedy decoding must agree up
//! to the first near-tie step; the default `q8_0` path currently agrees on all 16 tokens.

use slmgate_local_model::sampling::argmax;
use std::path::PathBuf;

use serde_json::Value;
use slmgate_local_model::generator::{ChatMessage, GenerationEvent, Generator, GeneratorOptions};
use slmgate_local_model::models::Quantize;
use slmgate_local_model::sampling::SamplingParams;

const FIXTURE: &str = include_str!("fixtures/smollm2_q4_1_llamacpp.json");

fn model() -> Option<PathBuf> {
    let path = std::env::var_os("SLMGATE_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not found (run scripts/fetch-models.sh)",
            path.display()
        );
        None
    }
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn load(path: &PathBuf, quantize: Quantize) -> Generator {
    let mut opts = GeneratorOptions::new(path);
    opts.quantize = quantize;
    Generator::load(&opts).expect("the model loads")
}

/// The fixed chat prompt: one user message (the template adds SmolLM2's system message).
fn chat() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "What is the capital of France?")]
}

/// A llama.cpp margin below this is a tie at the precision both implementations work at.
const NEAR_TIE: f32 = 0.5;
/// How far our logit for llama.cpp's greedy token may be from llama.cpp's with the same
/// weights (`keep`); requantizing to Q8_0 rounds every weight again, which doubles it.
const LOGIT_TOL: f32 = 1.0;

/// Free-running greedy decoding of `n` tokens after the fixed chat prompt.
fn greedy(g: &Generator, n: usize) -> Vec<u32> {
    let mut model = g.instance().expect("an instance");
    let prompt = g.prompt_tokens(&chat()).expect("the prompt renders");
    let params = SamplingParams {
        max_tokens: n,
        ..Default::default()
    };
    let mut out = Vec::new();
    g.generate_blocking(&mut model, &prompt, &params, |e| {
        if let GenerationEvent::Token { token_id, .. } = e {
            out.push(token_id);
        }
        true
    })
    .expect("generation succeeds");
    out
}

/// Checks `quantize` against the fixture as described in the module docs; returns how many
/// leading tokens free-running greedy decoding shares with llama.cpp.
fn check_greedy(quantize: Quantize) -> Option<usize> {
    let path = model()?;
    let f = fixture();
    let g = load(&path, quantize);
    assert_eq!(g.weights().backend(), "fast-llama");
    let want = ids(&f["greedy_ids"]);
    let tops = f["greedy_top"].as_array().expect("greedy_top");
    let top = |step: usize| -> Vec<(u32, f32)> {
        tops[step]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
            .collect()
    };
    let mut model = g.instance().unwrap();
    let prompt = g.prompt_tokens(&chat()).unwrap();
    let mut logits = model.forward(&prompt, 0).unwrap();
    let mut near_ties = Vec::new();
    for (step, &expected) in want.iter().enumerate() {
        let theirs = top(step);
        let (best_id, best_logit) = theirs[0];
        assert_eq!(best_id, expected);
        let ours = argmax(&logits);
        if ours != expected {
            let margin = theirs
                .iter()
                .find(|(id, _)| *id == ours)
                .map(|(_, l)| best_logit - l);
            assert!(
                margin.is_some_and(|m| m <= NEAR_TIE),
                "{quantize:?} step {step}: we pick {ours}, llama.cpp {expected} \
                 (llama.cpp margin {margin:?}; top {theirs:?})"
            );
            near_ties.push(step);
        }
        let tol = if quantize == Quantize::Keep {
            LOGIT_TOL
        } else {
            2.0 * LOGIT_TOL
        };
        let diff = (logits[expected as usize] - best_logit).abs();
        assert!(
            diff <= tol,
            "{quantize:?} step {step}: logit of {expected} is {} here, {best_logit} in llama.cpp",
            logits[expected as usize]
        );
        logits = model.forward(&[expected], prompt.len() + step).unwrap();
    }
    let free = greedy(&g, 16);
    let same = free.iter().zip(&want).take_while(|(a, b)| a == b).count();
    eprintln!(
        "{quantize:?}: near-tie steps {near_ties:?}; free-running greedy shares {same}/16 tokens \
         with llama.cpp ({:?})",
        g.tokenizer().decode(&free, false)
    );
    let first_tie = near_ties.first().copied().unwrap_or(16);
    assert!(
        same >= first_tie,
        "{quantize:?}: greedy diverges at token {same}, before any near-tie: {free:?} vs {want:?}"
    );
    Some(same)
}

#[test]
fn chat_prompt_tokenizes_like_llamacpp() {
    let Some(path) = model() else { return };
    let f = fixture();
    let g = load(&path, Quantize::Keep);
    let rendered = g.render_chat(&chat()).unwrap();
    assert_eq!(rendered, f["prompt"].as_str().unwrap());
    assert_eq!(g.prompt_tokens(&chat()).unwrap(), ids(&f["prompt_ids"]));
}

/// The file's own Q4_1 weights (`quantize: keep`), as llama.cpp runs them.
#[test]
fn greedy_first_16_tokens_match_llamacpp_keep() {
    check_greedy(Quantize::Keep);
}

/// The default in-memory format: Q4_1 requantized to Q8_0. Its free-running greedy output is
/// llama.cpp's 16 tokens exactly.
#[test]
fn greedy_first_16_tokens_match_llamacpp_q8_0() {
    if let Some(same) = check_greedy(Quantize::Q8_0) {
        assert_eq!(same, 16);
    }
}

#[test]
fn tricky_strings_tokenize_like_llamacpp() {
    let Some(path) = model() else { return };
    let f = fixture();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tok = slmgate_local_model::gguf_tokenizer::tokenizer_from_gguf(&content.metadata).unwrap();
    let cases = f["tokenize"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        if got != want {
            failures.push(format!("{text:?}: ours {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
