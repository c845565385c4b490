//! The fast llama forward pass against candle's `quantized_llama` on a generated tiny model:
//! same weights, so the logits must agree up to 8-bit activation quantization noise, for a
//! prefill and for single-token steps after it (KV cache, RoPE positions, GQA).

use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama;
use slmgate_local_model::fast_llama::{LlamaState, LlamaWeights};
use slmgate_local_model::fixtures::write_tiny_model;
use slmgate_local_model::models::Quantize;

fn candle_logits(m: &mut quantized_llama::ModelWeights, tokens: &[u32], pos: usize) -> Vec<f32> {
    let input = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    m.forward(&input, pos)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 0.05 * scale,
        "{what}: max difference {worst} for logits up to {scale}"
    );
}

#[test]
fn fast_path_matches_candle_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), "llama", 11);
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let weights = Arc::new(LlamaWeights::load(&content, &mut file, Quantize::Keep).unwrap());
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut reference =
        quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();

    for threads in [1, 2, 3] {
        let mut state = LlamaState::new(weights.clone(), threads);
        reference.clear_kv_cache();
        let prompt: Vec<u32> = (0..13).map(|i| 3 + (i * 37) % 250).collect();
        let ours = state.forward(&prompt, 0).unwrap().to_vec();
        assert_close(&ours, &candle_logits(&mut reference, &prompt, 0), "prefill");
        let mut pos = prompt.len();
        for tok in [40u32, 7, 199, 255] {
            let ours = state.forward(&[tok], pos).unwrap().to_vec();
            let theirs = candle_logits(&mut reference, &[tok], pos);
            assert_close(
                &ours,
                &theirs,
                &format!("step at {pos} ({threads} threads)"),
            );
            pos += 1;
        }
        assert_eq!(state.len(), pos);
    }
}

#[test]
fn forward_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), "llama", 3);
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let weights = Arc::new(LlamaWeights::load(&content, &mut file, Quantize::Q8_0).unwrap());
    let mut state = LlamaState::new(weights, 1);
    assert!(state.forward(&[], 0).is_err());
    assert!(state.forward(&[1_000_000], 0).is_err());
    assert!(state.forward(&[5], 3).is_err(), "position past the cache");
    state.forward(&[5, 6, 7], 0).unwrap();
    // Rewinding to an earlier position cuts the cache there.
    state.forward(&[9], 1).unwrap();
    assert_eq!(state.len(), 2);
}

#[test]
fn q4k_is_left_to_candle() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), "llama", 3);
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let err = LlamaWeights::load(&content, &mut file, Quantize::Q4K).unwrap_err();
    assert!(err.contains("q4k"), "{err}");
}
