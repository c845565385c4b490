//! A tiny random-weight BERT (config.json, tokenizer.json, model.safetensors) for tests,
//! benchmarks and demos of the embedder: the real loading, tokenization, padding and pooling
//! code runs on it in milliseconds.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Hidden size (= embedding dimension) of the tiny BERT.
pub const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const HEADS: usize = 2;
const INTERMEDIATE: usize = 64;
/// Position embeddings of the tiny BERT.
pub const MAX_POSITIONS: usize = 64;

/// The words of the tiny vocabulary (after the special tokens).
pub const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "ran", "on", "mat", "quick", "brown", "fox", "jumps", "over",
    "lazy", "hello", "world", "what", "is", "capital", "of", "france", "paris", "?", ".", ",",
    "##s", "##ing", "##ed",
];

/// `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4, then [`WORDS`]: a token's id is its
/// index, as in a BERT `vocab.txt`.
pub fn vocab() -> Vec<&'static str> {
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .chain(WORDS.iter().copied())
        .collect()
}

/// Writes a random-weight BERT (seeded, so deterministic) into `dir`.
pub fn write_tiny_bert(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = vocab();
    let vocab_size = vocab.len();

    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    // A BERT-style WordPiece tokenizer: [CLS] text [SEP]. Like the stock all-MiniLM-L6-v2
    // tokenizer.json it pads to a fixed length, here 100: longer than the model's 64 positions,
    // so an embedder that kept this padding would fail every forward pass.
    let vocab_txt = dir.join("vocab.txt");
    std::fs::write(&vocab_txt, vocab.join("\n") + "\n").unwrap();
    let model = WordPiece::builder()
        .files(vocab_txt.to_str().unwrap().to_string())
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(BertNormalizer::default()));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(100),
        pad_id: 0,
        pad_token: "[PAD]".into(),
        ..Default::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: 128,
            ..Default::default()
        }))
        .unwrap();
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();

    // Weights with the names and shapes of a Hugging Face BertModel checkpoint.
    let mut w = RandomWeights::new(7);
    w.add(
        "embeddings.word_embeddings.weight",
        &[vocab_size, HIDDEN],
        0.0,
        1.0,
    );
    w.add(
        "embeddings.position_embeddings.weight",
        &[MAX_POSITIONS, HIDDEN],
        0.0,
        0.5,
    );
    w.add(
        "embeddings.token_type_embeddings.weight",
        &[2, HIDDEN],
        0.0,
        0.5,
    );
    w.layer_norm("embeddings.LayerNorm");
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for qkv in ["query", "key", "value"] {
            w.linear(&format!("{p}.attention.self.{qkv}"), HIDDEN, HIDDEN);
        }
        w.linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN);
        w.layer_norm(&format!("{p}.attention.output.LayerNorm"));
        w.linear(&format!("{p}.intermediate.dense"), INTERMEDIATE, HIDDEN);
        w.linear(&format!("{p}.output.dense"), HIDDEN, INTERMEDIATE);
        w.layer_norm(&format!("{p}.output.LayerNorm"));
    }
    candle_core::safetensors::save(&w.tensors, dir.join("model.safetensors")).unwrap();
}

/// Seeded uniform random tensors, by name.
struct RandomWeights {
    rng: StdRng,
    tensors: HashMap<String, Tensor>,
}

impl RandomWeights {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            tensors: HashMap::new(),
        }
    }

    /// A tensor of values uniform in `center ± scale`.
    fn add(&mut self, name: &str, shape: &[usize], center: f32, scale: f32) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| center + scale * self.rng.random_range(-1.0f32..1.0))
            .collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
        self.tensors.insert(name.to_string(), t);
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) {
        self.add(&format!("{prefix}.weight"), &[out, inp], 0.0, 0.3);
        self.add(&format!("{prefix}.bias"), &[out], 0.0, 0.1);
    }

    fn layer_norm(&mut self, prefix: &str) {
        self.add(&format!("{prefix}.weight"), &[HIDDEN], 1.0, 0.1);
        self.add(&format!("{prefix}.bias"), &[HIDDEN], 0.0, 0.1);
    }
}
