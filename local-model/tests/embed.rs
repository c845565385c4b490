//! Integration tests of the embedder.
//!
//! The first group builds a tiny random-weight BERT (config.json, tokenizer.json,
//! model.safetensors) in a temporary directory and runs the real loading and embedding path
//! on it. The second group runs the real all-MiniLM-L6-v2 when its files are present
//! (`$SLMGATE_MODELS_DIR/all-MiniLM-L6-v2` or `<workspace>/models/all-MiniLM-L6-v2`, put there
//! by `scripts/fetch-models.sh`) and skips with a note otherwise. The `#[ignore]`d
//! `embed_latency` test prints timings; run it in release:
//!
//! ```text
//! cargo test --release -p slmgate-local-model --test embed -- --ignored --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slmgate_local_model::embed::{cosine, EmbedError, Embedder, EmbedderOptions};

// ---------------------------------------------------------------------------------------------
// A tiny random BERT
// ---------------------------------------------------------------------------------------------

use slmgate_local_model::embed_fixtures::{write_tiny_bert, HIDDEN, MAX_POSITIONS};

/// A tiny BERT in a fresh temporary directory named `tiny-bert`.
fn tiny_bert() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-bert");
    write_tiny_bert(&dir);
    (tmp, dir)
}

fn load(dir: &Path) -> Embedder {
    Embedder::load(&EmbedderOptions::new(dir)).unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max abs difference {worst} > {tol}");
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

const TEXTS: &[&str] = &[
    "the cat sat on the mat.",
    "hello",
    "what is the capital of france? paris.",
    "the quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog",
    "",
    "cats jumping, dogs jumped",
    "a",
];

// ---------------------------------------------------------------------------------------------
// Tiny-model tests
// ---------------------------------------------------------------------------------------------

#[test]
fn tiny_model_embeds_unit_vectors() {
    let (_tmp, dir) = tiny_bert();
    let embedder = load(&dir);
    assert_eq!(embedder.dim(), HIDDEN);
    assert_eq!(embedder.model_name(), "tiny-bert");
    // The default 256-token limit is capped by the model's 64 positions.
    assert_eq!(embedder.max_tokens(), MAX_POSITIONS);

    let vectors = embedder.embed(TEXTS).unwrap();
    assert_eq!(vectors.len(), TEXTS.len());
    for (text, v) in TEXTS.iter().zip(&vectors) {
        assert_eq!(v.len(), HIDDEN, "{text:?}");
        assert!(v.iter().all(|x| x.is_finite()), "{text:?}");
        assert!((norm(v) - 1.0).abs() < 1e-5, "{text:?}: norm {}", norm(v));
    }
    // Different texts, different vectors; the same text, the same vector.
    assert!(cosine(&vectors[0], &vectors[1]) < 0.9999);
    let again = embedder.embed(&[TEXTS[0]]).unwrap();
    assert_close(&again[0], &vectors[0], 1e-6, "repeat");
    assert!(embedder.embed(&[]).unwrap().is_empty());
}

#[test]
fn batch_equals_one_by_one() {
    let (_tmp, dir) = tiny_bert();
    let embedder = load(&dir);
    let batched = embedder.embed(TEXTS).unwrap();
    for (text, b) in TEXTS.iter().zip(&batched) {
        let single = embedder.embed(&[text]).unwrap();
        assert_close(b, &single[0], 1e-5, text);
    }

    // Batches smaller than the input: several forward passes, results still in input order.
    let mut options = EmbedderOptions::new(&dir);
    options.max_batch = 3;
    let small_batches = Embedder::load(&options).unwrap().embed(TEXTS).unwrap();
    for ((text, a), b) in TEXTS.iter().zip(&small_batches).zip(&batched) {
        assert_close(a, b, 1e-5, text);
    }
}

#[test]
fn padding_does_not_change_the_embedding() {
    let (_tmp, dir) = tiny_bert();
    let embedder = load(&dir);
    let short = "hello world";
    let alone = embedder.embed(&[short]).unwrap();
    // Batched with a much longer text, `short` is padded with 15+ [PAD] tokens.
    let long = "the quick brown fox jumps over the lazy dog on the mat and the cat sat";
    assert!(embedder.count_tokens(long) > embedder.count_tokens(short) + 10);
    let padded = embedder.embed(&[long, short, long]).unwrap();
    assert_close(&padded[1], &alone[0], 1e-5, "padded vs alone");
    assert_close(&padded[0], &padded[2], 1e-6, "same text twice in a batch");
}

#[test]
fn long_texts_are_truncated() {
    let (_tmp, dir) = tiny_bert();
    // 81 words: more tokens than the model's 64 positions.
    let long = ["the cat sat"; 27].join(" ");
    let embedder = load(&dir);
    assert_eq!(embedder.count_tokens(&long), 81 + 2);
    let v = embedder.embed(&[&long]).unwrap();
    assert!((norm(&v[0]) - 1.0).abs() < 1e-5);

    // With an 8-token limit only [CLS], the first six words and [SEP] count.
    let mut options = EmbedderOptions::new(&dir);
    options.max_tokens = 8;
    let embedder = Embedder::load(&options).unwrap();
    assert_eq!(embedder.max_tokens(), 8);
    let v = embedder
        .embed(&[
            "the cat sat on the mat hello world",
            "the cat sat on the mat quick fox jumps",
        ])
        .unwrap();
    assert_close(&v[0], &v[1], 1e-6, "same first six words");
}

#[test]
fn counts_tokens() {
    let (_tmp, dir) = tiny_bert();
    let embedder = load(&dir);
    // [CLS] + words + [SEP]; the file's fixed padding does not count.
    assert_eq!(embedder.count_tokens(""), 2);
    assert_eq!(embedder.count_tokens("the cat"), 4);
    // cat ##s , [UNK] [UNK]: "jumping" has no matching word piece and "!" is not in the vocabulary.
    assert_eq!(embedder.count_tokens("Cats, jumping!"), 2 + 5);
}

#[test]
fn shared_between_threads() {
    let (_tmp, dir) = tiny_bert();
    let embedder = Arc::new(load(&dir));
    let expected = embedder.embed(TEXTS).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let embedder = Arc::clone(&embedder);
            std::thread::spawn(move || embedder.embed(TEXTS).unwrap())
        })
        .collect();
    for h in handles {
        let got = h.join().unwrap();
        for (a, b) in got.iter().zip(&expected) {
            assert_close(a, b, 1e-6, "thread");
        }
    }
}

#[test]
fn missing_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();

    let err = Embedder::load(&EmbedderOptions::new(tmp.path().join("nope"))).unwrap_err();
    assert!(matches!(err, EmbedError::MissingDir { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(err.to_string().contains("scripts/fetch-models.sh"), "{err}");

    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let dir = tmp.path().join(format!("without-{file}"));
        write_tiny_bert(&dir);
        std::fs::remove_file(dir.join(file)).unwrap();
        let err = Embedder::load(&EmbedderOptions::new(&dir)).unwrap_err();
        match &err {
            EmbedError::MissingFile { path } => assert_eq!(path, &dir.join(file)),
            other => panic!("{file}: {other:?}"),
        }
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn broken_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        write_tiny_bert(&dir);
        dir
    };

    let dir = fresh("bad-config");
    std::fs::write(dir.join("config.json"), r#"{"hidden_size": 32}"#).unwrap();
    let err = Embedder::load(&EmbedderOptions::new(&dir)).unwrap_err();
    assert!(matches!(err, EmbedError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("config.json"), "{err}");

    let dir = fresh("bad-tokenizer");
    std::fs::write(dir.join("tokenizer.json"), "not json").unwrap();
    let err = Embedder::load(&EmbedderOptions::new(&dir)).unwrap_err();
    assert!(matches!(err, EmbedError::Tokenizer { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let dir = fresh("bad-weights");
    std::fs::write(dir.join("model.safetensors"), b"\x08\0\0\0\0\0\0\0{}").unwrap();
    let err = Embedder::load(&EmbedderOptions::new(&dir)).unwrap_err();
    assert!(matches!(err, EmbedError::Model { .. }), "{err:?}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // Weights of another shape than the config says.
    let dir = fresh("wrong-shape");
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\":64", "\"intermediate_size\":65");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = Embedder::load(&EmbedderOptions::new(&dir)).unwrap_err();
    assert!(matches!(err, EmbedError::Model { .. }), "{err:?}");

    let dir = fresh("zero-batch");
    let mut options = EmbedderOptions::new(&dir);
    options.max_batch = 0;
    let err = Embedder::load(&options).unwrap_err();
    assert!(matches!(err, EmbedError::Options(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Real-model tests (all-MiniLM-L6-v2)
// ---------------------------------------------------------------------------------------------

/// The real all-MiniLM-L6-v2 directory, or `None` (with a note) when its files are absent.
fn real_model_dir(test: &str) -> Option<PathBuf> {
    let base = std::env::var_os("SLMGATE_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let dir = base.join("all-MiniLM-L6-v2");
    let complete = ["config.json", "tokenizer.json", "model.safetensors"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if complete {
        Some(dir)
    } else {
        eprintln!(
            "skipping {test}: {} not found (run scripts/fetch-models.sh)",
            dir.display()
        );
        None
    }
}

// Reference values, computed once with `tokenizers` 0.23.3 + numpy 2.4.6 from the same
// tokenizer.json and model.safetensors: a float64 numpy implementation of the BERT forward
// pass (embeddings + LayerNorm, 6 post-LN encoder layers with exact-erf GELU), mean pooling
// over the tokens and L2 normalisation, with the tokenizer's padding off and truncation at 256
// — the computation of sentence-transformers' Transformer → Pooling(mean) → Normalize
// pipeline (torch could not be installed here). The same script reproduces the similarities
// published in sentence-transformers' quickstart for all-MiniLM-L6-v2 (0.6660, 0.1046,
// 0.1411; see `matches_published_sentence_transformers_values`), which checks the reference.
const REFERENCE_PAIRS: &[(&str, &str, f32)] = &[
    (
        "What is the capital of France?",
        "Which city is the capital of France?",
        0.941636,
    ),
    (
        "How do I reverse a list in Python?",
        "Python: reverse the order of a list",
        0.857383,
    ),
    (
        "The cat sits on the mat.",
        "Quarterly revenue grew by twelve percent.",
        -0.016183,
    ),
    (
        "Translate 'good morning' into Spanish.",
        "What will the weather be like in Berlin tomorrow?",
        0.207274,
    ),
    (
        "A man is playing a guitar.",
        "Someone plays an instrument.",
        0.667446,
    ),
];

/// The first 8 components of the reference embedding of "What is the capital of France?".
const REFERENCE_FRANCE_HEAD: [f32; 8] = [
    0.082048, 0.036055, -0.003893, -0.004881, 0.025651, -0.057143, 0.012192, 0.004679,
];

#[test]
fn real_model_matches_reference_similarities() {
    let Some(dir) = real_model_dir("real_model_matches_reference_similarities") else {
        return;
    };
    let embedder = load(&dir);
    assert_eq!(embedder.dim(), 384);
    assert_eq!(embedder.model_name(), "all-MiniLM-L6-v2");
    assert_eq!(embedder.max_tokens(), 256);
    assert_eq!(embedder.count_tokens("What is the capital of France?"), 9);

    // One-by-one and all in one batch: both must match the reference.
    let texts: Vec<&str> = REFERENCE_PAIRS
        .iter()
        .flat_map(|(a, b, _)| [*a, *b])
        .collect();
    let batched = embedder.embed(&texts).unwrap();
    for (i, (a, b, expected)) in REFERENCE_PAIRS.iter().enumerate() {
        let va = embedder.embed(&[a]).unwrap().remove(0);
        let vb = embedder.embed(&[b]).unwrap().remove(0);
        let single = cosine(&va, &vb);
        let batch = cosine(&batched[2 * i], &batched[2 * i + 1]);
        assert!(
            (single - expected).abs() < 1e-4,
            "{a:?} / {b:?}: {single} vs reference {expected}"
        );
        assert!(
            (batch - expected).abs() < 1e-4,
            "{a:?} / {b:?} batched: {batch} vs reference {expected}"
        );
        assert_close(&batched[2 * i], &va, 1e-5, a);
    }
    let france = embedder
        .embed(&["What is the capital of France?"])
        .unwrap()
        .remove(0);
    assert_close(&france[..8], &REFERENCE_FRANCE_HEAD, 1e-5, "France head");
    assert!((norm(&france) - 1.0).abs() < 1e-5);
}

#[test]
fn matches_published_sentence_transformers_values() {
    let Some(dir) = real_model_dir("matches_published_sentence_transformers_values") else {
        return;
    };
    let embedder = load(&dir);
    let v = embedder
        .embed(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .unwrap();
    for (i, j, expected) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&v[i], &v[j]);
        assert!(
            (got - expected).abs() < 1e-3,
            "({i},{j}): {got} vs {expected}"
        );
    }
}

/// A ~10-token query (11 tokens with [CLS]/[SEP]).
const QUERY_10: &str = "How do I reverse a list in Python?";
/// A ~60-token query.
const QUERY_60: &str = "I have a large CSV file with several million rows of sensor readings, \
    and I would like to compute a rolling average per device over a five minute window without \
    loading the entire file into memory; what is the most efficient way to do this in Python \
    with pandas or another library?";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_it(iterations: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    median(
        (0..iterations)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn embed_latency() {
    let Some(dir) = real_model_dir("embed_latency") else {
        return;
    };
    let embedder = load(&dir);
    let batch: Vec<String> = (0..16)
        .map(|i| format!("What is the capital of country number {i} on the list?"))
        .collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    println!(
        "embedder {} on {} cpu threads",
        embedder.model_name(),
        slmgate_local_model::device::cpu_threads()
    );
    for (label, texts) in [
        ("~10-token query", vec![QUERY_10]),
        ("~60-token query", vec![QUERY_60]),
        ("batch of 16 queries", batch.clone()),
    ] {
        let tokens: Vec<usize> = texts.iter().map(|t| embedder.count_tokens(t)).collect();
        let t = time_it(30, || {
            embedder.embed(&texts).unwrap();
        });
        println!(
            "{label:>20} ({} tokens{}): median {:.2} ms{}",
            tokens[0],
            if texts.len() > 1 { " each" } else { "" },
            t.as_secs_f64() * 1e3,
            if texts.len() > 1 {
                format!(" ({:.0} texts/s)", texts.len() as f64 / t.as_secs_f64())
            } else {
                String::new()
            }
        );
    }
}
