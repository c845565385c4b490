//! Speed and sanity checks on a real GGUF model. Ignored by default (no model in the repo).
//!
//! ```text
//! SLMGATE_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf \
//!   cargo test --release -p slmgate-local-model --test generation_speed -- --ignored --nocapture
//! ```
//! `SLMGATE_QUANTIZE` (`q8_0`, `q4k`, `keep`) picks the in-memory format (default q8_0).

use std::path::PathBuf;
use std::time::Instant;

use slmgate_local_model::generator::{ChatMessage, GenerationEvent, Generator, GeneratorOptions};
use slmgate_local_model::models::Quantize;
use slmgate_local_model::sampling::SamplingParams;

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("SLMGATE_GGUF").map(PathBuf::from)?;
    p.exists().then_some(p)
}

#[test]
#[ignore = "needs a real GGUF model in SLMGATE_GGUF"]
fn real_model_answers_and_speed() {
    let Some(path) = model_path() else {
        eprintln!("SLMGATE_GGUF not set or missing; skipping");
        return;
    };
    let quantize: Quantize = std::env::var("SLMGATE_QUANTIZE")
        .ok()
        .map(|s| s.parse().unwrap())
        .unwrap_or_default();
    let mut opts = GeneratorOptions::new(&path);
    opts.quantize = quantize;
    let t = Instant::now();
    let g = Generator::load(&opts).unwrap();
    eprintln!(
        "load ({quantize:?}): {:?}; info {:?}",
        t.elapsed(),
        g.info()
    );
    let mut model = g.instance().unwrap();

    // A greedy answer.
    let msgs = vec![ChatMessage::new("user", "What is the capital of France?")];
    let prompt = g.prompt_tokens(&msgs).unwrap();
    let mut text = String::new();
    let params = SamplingParams {
        max_tokens: 40,
        ..Default::default()
    };
    g.generate_blocking(&mut model, &prompt, &params, |e| {
        if let GenerationEvent::Token { text: t, .. } = e {
            text.push_str(&t);
        }
        true
    })
    .unwrap();
    eprintln!("answer: {text:?}");

    // Prefill: a 64-token prompt.
    let long: Vec<u32> = g
        .tokenizer()
        .encode(
            "The quick brown fox jumps over the lazy dog. ".repeat(8),
            false,
        )
        .unwrap()
        .get_ids()[..64]
        .to_vec();
    let mut best_prefill = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        model.forward(&long, 0).unwrap();
        best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
        model.clear();
    }
    eprintln!("prefill 64 tokens: {:.1} ms", best_prefill * 1e3);

    // Decode: up to 128 tokens after a short prompt, sampling included.
    let n = 128;
    let story = vec![ChatMessage::new(
        "user",
        "Write a long story about a dragon who learns to cook.",
    )];
    let prompt = g.prompt_tokens(&story).unwrap();
    let params = SamplingParams {
        max_tokens: n,
        temperature: 0.7,
        top_p: Some(0.9),
        seed: Some(1),
        ..Default::default()
    };
    let mut first = None;
    let mut count = 0;
    let t = Instant::now();
    g.generate_blocking(&mut model, &prompt, &params, |e| {
        if let GenerationEvent::Token { .. } = e {
            count += 1;
            if first.is_none() {
                first = Some(Instant::now());
            }
        }
        true
    })
    .unwrap();
    let end = Instant::now();
    let first = first.unwrap();
    let decode = (count - 1) as f64 / (end - first).as_secs_f64();
    eprintln!(
        "decode: {count} tokens, first token after {:.1} ms, {decode:.1} tokens/s",
        (first - t).as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "needs a real GGUF model in SLMGATE_GGUF"]
fn real_model_tokenizer_build_time() {
    let Some(path) = model_path() else {
        return;
    };
    let mut f = std::fs::File::open(&path).unwrap();
    let t = Instant::now();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    eprintln!("header: {:?}", t.elapsed());
    let t = Instant::now();
    let tok = slmgate_local_model::gguf_tokenizer::tokenizer_from_gguf(&content.metadata).unwrap();
    eprintln!("tokenizer: {:?}", t.elapsed());
    let enc = tok
        .encode("Hello world, the café is open! 12345", false)
        .unwrap();
    eprintln!("{:?}", enc.get_tokens());
}
