//! Tiny random-weight GGUF models for tests, benchmarks and demos: the real loading,
//! tokenizer-from-metadata, chat-template and generation code runs on them in milliseconds.
//!
//! The vocabulary is the 256 byte-level tokens plus a few merges and ChatML control tokens, so
//! any text tokenizes; the weights are random, so the output is gibberish (but deterministic
//! for a seed and greedy sampling).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Hidden size of the tiny models.
pub const HIDDEN: usize = 64;
/// Feed-forward size of the tiny models.
pub const FF: usize = 128;
/// Attention heads of the tiny models.
pub const HEADS: u32 = 4;
/// Key/value heads (grouped-query attention) of the tiny models.
pub const KV_HEADS: u32 = 2;
/// Layers of the tiny models.
pub const LAYERS: usize = 2;
/// Head size of the tiny qwen3 model: larger than `HIDDEN / HEADS`, as in Qwen3-0.6B (128
/// against 1024 / 16 = 64), so a loader that derives it from the hidden size fails.
pub const QWEN3_HEAD_DIM: usize = 32;

/// The ChatML template written into the tiny models.
pub const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a test model.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// BPE merges of the tiny vocabulary.
pub const MERGES: &[(&str, &str)] = &[
    ("h", "e"),
    ("l", "l"),
    ("he", "ll"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġw", "or"),
];

/// GPT-2's byte → printable char table.
pub fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// Token strings and types: 3 control tokens, 256 bytes, merges, a user token, a PAD filler.
/// The tiny vocabulary: tokens and their GGUF token types.
pub fn vocab() -> (Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3, 3, 3];
    for c in bytes_to_unicode() {
        tokens.push(c.to_string());
        types.push(1);
    }
    for (a, b) in MERGES {
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    tokens.push("<tool_call>".into());
    types.push(4);
    tokens.push("[PAD0]".into());
    types.push(4);
    (tokens, types)
}

/// Deterministic pseudo-random numbers in [-1, 1) (a 64-bit LCG), seeded by its field.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number in [-1, 1).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], scale: f32, dtype: GgmlDType) -> QTensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next() * scale).collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    }
}

fn ones(n: usize) -> QTensor {
    QTensor::quantize(
        &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap()
}

/// An embedding-like matrix whose control-token rows are zero (so they never win greedily).
fn vocab_matrix(rng: &mut Lcg, types: &[i32], scale: f32) -> QTensor {
    let mut v = Vec::with_capacity(types.len() * HIDDEN);
    for ty in types {
        for _ in 0..HIDDEN {
            let x = rng.next();
            v.push(if *ty == 3 { 0.0 } else { x * scale });
        }
    }
    let t = Tensor::from_vec(v, (types.len(), HIDDEN), &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()
}

/// Writes `tiny-{arch}.gguf` (`llama`, `qwen2`, `qwen3` or `gemma3`) into `dir` and returns its
/// path. The qwen3 model, like Qwen3-0.6B, has no `output.weight` (the output layer is tied to
/// the embeddings) and a head size (`attention.key_length`) that differs from
/// `embedding_length / head_count`, as in every Qwen3 model.
pub fn write_tiny_model(dir: &Path, arch: &str, seed: u64) -> PathBuf {
    let (tokens, types) = vocab();
    let mut rng = Lcg(seed);
    // Gemma multiplies embeddings by sqrt(hidden): smaller weights keep its logits spread out.
    let scale = if arch == "gemma3" { 0.1 } else { 1.0 };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    tensors.push((
        "token_embd.weight".into(),
        vocab_matrix(&mut rng, &types, scale),
    ));
    tensors.push(("output_norm.weight".into(), ones(HIDDEN)));
    if arch == "qwen2" {
        tensors.push((
            "output.weight".into(),
            vocab_matrix(&mut rng, &types, scale),
        ));
    }
    // Query and key/value widths: qwen3's head size is its own parameter.
    let head_dim = if arch == "qwen3" {
        QWEN3_HEAD_DIM
    } else {
        HIDDEN / HEADS as usize
    };
    let q_width = head_dim * HEADS as usize;
    let kv = head_dim * KV_HEADS as usize;
    let q8 = GgmlDType::Q8_0;
    for l in 0..LAYERS {
        let p = format!("blk.{l}");
        let s = 1.0 / (HIDDEN as f32).sqrt() * 1.7;
        tensors.push((format!("{p}.attn_norm.weight"), ones(HIDDEN)));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(HIDDEN)));
        tensors.push((
            format!("{p}.attn_q.weight"),
            rng.tensor(&[q_width, HIDDEN], s, q8),
        ));
        tensors.push((
            format!("{p}.attn_k.weight"),
            rng.tensor(&[kv, HIDDEN], s, q8),
        ));
        tensors.push((
            format!("{p}.attn_v.weight"),
            rng.tensor(&[kv, HIDDEN], s, q8),
        ));
        tensors.push((
            format!("{p}.attn_output.weight"),
            rng.tensor(&[HIDDEN, q_width], s, q8),
        ));
        tensors.push((
            format!("{p}.ffn_gate.weight"),
            rng.tensor(&[FF, HIDDEN], s, q8),
        ));
        tensors.push((
            format!("{p}.ffn_up.weight"),
            rng.tensor(&[FF, HIDDEN], s, q8),
        ));
        tensors.push((
            format!("{p}.ffn_down.weight"),
            rng.tensor(&[HIDDEN, FF], s, q8),
        ));
        if arch == "qwen3" {
            // Per-head RMS norms on queries and keys, with non-trivial weights.
            let f32t = GgmlDType::F32;
            let norm = |rng: &mut Lcg| {
                let v: Vec<f32> = (0..QWEN3_HEAD_DIM)
                    .map(|_| 1.0 + 0.2 * rng.next())
                    .collect();
                QTensor::quantize(
                    &Tensor::from_vec(v, QWEN3_HEAD_DIM, &Device::Cpu).unwrap(),
                    f32t,
                )
                .unwrap()
            };
            let qn = norm(&mut rng);
            let kn = norm(&mut rng);
            tensors.push((format!("{p}.attn_q_norm.weight"), qn));
            tensors.push((format!("{p}.attn_k_norm.weight"), kn));
        }
        if arch == "gemma3" {
            let hd = HIDDEN / HEADS as usize;
            tensors.push((format!("{p}.attn_q_norm.weight"), ones(hd)));
            tensors.push((format!("{p}.attn_k_norm.weight"), ones(hd)));
            tensors.push((format!("{p}.post_attention_norm.weight"), ones(HIDDEN)));
            tensors.push((format!("{p}.post_ffw_norm.weight"), ones(HIDDEN)));
        }
        if arch == "qwen2" {
            let f32t = GgmlDType::F32;
            tensors.push((format!("{p}.attn_q.bias"), rng.tensor(&[HIDDEN], 0.1, f32t)));
            tensors.push((format!("{p}.attn_k.bias"), rng.tensor(&[kv], 0.1, f32t)));
            tensors.push((format!("{p}.attn_v.bias"), rng.tensor(&[kv], 0.1, f32t)));
        }
    }
    let arr_s = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let merges: Vec<String> = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let key = |k: &str| format!("{arch}.{k}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("tiny-{arch}"))),
        (key("context_length"), Value::U32(128)),
        (key("embedding_length"), Value::U32(HIDDEN as u32)),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("feed_forward_length"), Value::U32(FF as u32)),
        (key("attention.head_count"), Value::U32(HEADS)),
        (key("attention.head_count_kv"), Value::U32(KV_HEADS)),
        (
            key("rope.dimension_count"),
            Value::U32(HIDDEN as u32 / HEADS),
        ),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (key("rope.freq_base"), Value::F32(10000.0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String(
                if arch == "qwen2" || arch == "qwen3" {
                    "qwen2"
                } else {
                    "smollm"
                }
                .into(),
            ),
        ),
        ("tokenizer.ggml.tokens".into(), arr_s(&tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|t| Value::I32(*t)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), arr_s(&merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML.into()),
        ),
    ];
    if arch == "qwen3" {
        md.push((
            key("attention.key_length"),
            Value::U32(QWEN3_HEAD_DIM as u32),
        ));
        md.push((
            key("attention.value_length"),
            Value::U32(QWEN3_HEAD_DIM as u32),
        ));
    }
    if arch == "gemma3" {
        let hd = HIDDEN as u32 / HEADS;
        md.push((key("attention.key_length"), Value::U32(hd)));
        md.push((key("attention.value_length"), Value::U32(hd)));
        md.push((key("attention.sliding_window"), Value::U32(16)));
    }
    write_gguf(dir, &format!("tiny-{arch}.gguf"), &md, &tensors)
}

/// Writes a GGUF file with the given metadata and tensors.
pub fn write_gguf(
    dir: &Path,
    name: &str,
    md: &[(String, Value)],
    tensors: &[(String, QTensor)],
) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    path
}
