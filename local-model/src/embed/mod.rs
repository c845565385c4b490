//! Sentence embeddings with a BERT-family encoder (all-MiniLM-L6-v2 by default).
//!
//! [`Embedder::load`] reads a model directory holding the three files a Hugging Face
//! sentence-transformers export has: `config.json` (a BERT config), `tokenizer.json` and
//! `model.safetensors`. [`Embedder::embed`] then computes exactly what sentence-transformers'
//! `Transformer → Pooling(mean) → Normalize` pipeline computes: the encoder's last hidden
//! states, averaged over the real (non-padding) tokens, scaled to unit L2 norm. The cosine
//! similarity of two embeddings is then their dot product ([`cosine`]).
//!
//! # Backends and speed
//! On the CPU the model runs on [`crate::fast_bert`] by default: an own forward pass with
//! pre-packed weights and SIMD kernels, several times faster than candle's `BertModel` for
//! short queries (op-dispatch and allocation overhead dominated there). Texts of a batch are
//! packed end to end without padding, attention runs per text, and an embedding is bit-for-bit
//! the same whatever it is batched with. [`EmbedderOptions::weights`] picks `f32` weights (the
//! default, exact) or int8 ones.
//!
//! candle's implementation runs on GPU devices, with [`EmbedBackend::Candle`], or when the
//! environment sets `SLMGATE_BERT_BACKEND=candle` (for comparisons). There several texts share
//! one forward pass, padded to the longest text of the batch (never to a fixed length: the
//! stock tokenizer.json pads everything to 128 tokens, which made a 9-token query cost as much
//! as a 128-token one). As in sentence-transformers, texts are sorted by length before being
//! cut into batches so that texts of similar length are padded together; results come back in
//! input order. The attention mask keeps padding out of both the attention and the pooling, so
//! an embedding does not depend on what it was batched with (up to float rounding, ~1e-6).
//!
//! An `Embedder` is immutable and `Send + Sync`: share it in an `Arc`. `embed` is blocking and
//! CPU-heavy; call it from a blocking thread (`tokio::task::spawn_blocking`), not from an async
//! task.
//!
//! ```no_run
//! use slmgate_local_model::embed::{cosine, Embedder, EmbedderOptions};
//! # fn main() -> Result<(), slmgate_local_model::embed::EmbedError> {
//! let embedder = Embedder::load(&EmbedderOptions::new("models/all-MiniLM-L6-v2"))?;
//! let v = embedder.embed(&["What is the capital of France?", "Which city is France's capital?"])?;
//! assert_eq!(v[0].len(), embedder.dim());
//! println!("similarity {}", cosine(&v[0], &v[1]));
//! # Ok(())
//! # }
//! ```

pub mod fast_bert;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use crate::cpu::threads::ComputePool;
use fast_bert::{BertWeights, Scratch, Sequence};

pub use fast_bert::WeightFormat;

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// The model configuration file in an embedder directory.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer file in an embedder directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The weights file in an embedder directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The files an embedder directory must hold, in the order they are read.
pub const REQUIRED_FILES: [&str; 3] = [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE];

/// The default token limit per text (sentence-transformers' `max_seq_length` for
/// all-MiniLM-L6-v2). Longer texts are truncated.
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// The default number of texts per forward pass.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// Errors of the embedder. Every variant names what failed; none is a panic.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory does not exist or is not a directory.
    #[error("embedding model directory {path} does not exist (run scripts/fetch-models.sh to download the default embedder)", path = .path.display())]
    MissingDir {
        /// The directory.
        path: PathBuf,
    },
    /// A required file is missing from the model directory.
    #[error("embedding model file {path} is missing (an embedder directory needs config.json, tokenizer.json and model.safetensors; run scripts/fetch-models.sh to download the default embedder)", path = .path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a BERT configuration this crate can run.
    #[error("{path}: not a supported BERT config: {source}", path = .path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The tokenizer could not be loaded, configured or used.
    #[error("tokenizer {path}: {message}", path = .path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// candle failed to build the model from the weights.
    #[error("{path}: loading the model: {source}", path = .path.display())]
    Model {
        /// The weights file.
        path: PathBuf,
        /// candle's error (boxed: it is large).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// The options are inconsistent.
    #[error("invalid embedder options: {0}")]
    Options(String),
    /// A forward pass failed.
    #[error("embedding inference: {0}")]
    Inference(#[source] Box<candle_core::Error>),
}

impl From<candle_core::Error> for EmbedError {
    fn from(err: candle_core::Error) -> Self {
        EmbedError::Inference(Box::new(err))
    }
}

/// The environment variable that, set to `candle`, makes [`EmbedBackend::Auto`] use candle's
/// `BertModel` instead of [`crate::fast_bert`].
pub const BACKEND_ENV: &str = "SLMGATE_BERT_BACKEND";

/// The environment variable that, when set (`f32`, `q8_0` or `int16`), overrides
/// [`EmbedderOptions::weights`] for every embedder the process loads — `/v1/embeddings`
/// included, so it is for measurements and opt-in deployments that accept approximate
/// embeddings (see [`WeightFormat`]). An unknown value fails the load.
pub const WEIGHTS_ENV: &str = "SLMGATE_BERT_WEIGHTS";

/// The weight format to load: [`WEIGHTS_ENV`] if set and not empty, else `configured`.
pub fn weights_from_env(configured: WeightFormat) -> Result<WeightFormat, EmbedError> {
    match std::env::var(WEIGHTS_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .parse()
            .map_err(|e: String| EmbedError::Options(format!("{WEIGHTS_ENV}: {e}"))),
        _ => Ok(configured),
    }
}

/// Which implementation runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbedBackend {
    /// [`EmbedBackend::Fast`] on the CPU, candle elsewhere; `SLMGATE_BERT_BACKEND=candle` in
    /// the environment forces candle.
    #[default]
    Auto,
    /// [`crate::fast_bert`] (CPU only: loading fails on another device).
    Fast,
    /// candle's `BertModel`, on any device.
    Candle,
}

/// How to load an [`Embedder`].
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// The model directory: `config.json`, `tokenizer.json`, `model.safetensors`.
    pub dir: PathBuf,
    /// The device to run on.
    pub device: Device,
    /// At most this many texts per forward pass (≥ 1). Larger batches amortise per-pass
    /// overhead; past a few dozen texts they only add latency and memory. Peak memory grows
    /// with `max_batch × max_tokens²` (the attention scores: 32 texts × 12 heads × 256² floats
    /// is 100 MB for all-MiniLM-L6-v2 at the defaults, reached only when 32 long texts come
    /// together).
    pub max_batch: usize,
    /// Truncate texts to this many tokens, special tokens included. Capped at the model's
    /// `max_position_embeddings`; 0 means that cap.
    pub max_tokens: usize,
    /// The implementation ([`EmbedBackend::Auto`] by default).
    pub backend: EmbedBackend,
    /// The linear layers' weight format on the fast backend ([`WeightFormat::F32`] by default:
    /// exact; see [`WeightFormat`] for the int8 trade-offs). candle always uses `f32`.
    /// [`WEIGHTS_ENV`] overrides it.
    pub weights: WeightFormat,
    /// Compute threads of the fast backend; 0 (the default) means every CPU this process may
    /// use.
    pub threads: usize,
}

impl EmbedderOptions {
    /// Options for the model in `dir` with defaults: CPU, [`DEFAULT_MAX_BATCH`] texts per
    /// pass, [`DEFAULT_MAX_TOKENS`] tokens per text.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            device: Device::Cpu,
            max_batch: DEFAULT_MAX_BATCH,
            max_tokens: DEFAULT_MAX_TOKENS,
            backend: EmbedBackend::Auto,
            weights: WeightFormat::F32,
            threads: 0,
        }
    }
}

/// A loaded sentence-embedding model. `Send + Sync`; share it in an `Arc`.
pub struct Embedder {
    backend: Backend,
    /// Truncates to `max_tokens`; with candle, also pads to the longest text of a batch.
    tokenizer: Tokenizer,
    /// Neither pads nor truncates: counts tokens.
    counter: Tokenizer,
    /// For error messages.
    tokenizer_path: PathBuf,
    device: Device,
    dim: usize,
    max_batch: usize,
    max_tokens: usize,
    name: String,
}

// The embedder is shared between request handlers: keep it thread-safe.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
};

enum Backend {
    Candle(Box<BertModel>),
    Fast(Box<FastModel>),
}

/// The fast backend: weights, plus the compute threads and buffers that one forward pass at a
/// time uses (concurrent callers queue on the mutex: the threads already use every core).
struct FastModel {
    weights: BertWeights,
    state: Mutex<FastState>,
}

struct FastState {
    pool: ComputePool,
    scratch: Scratch,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("backend", &self.backend())
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("max_batch", &self.max_batch)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model in `options.dir`.
    ///
    /// Fails with an error naming the missing directory or file, an unparsable config or
    /// tokenizer, or weights that do not match the config.
    pub fn load(options: &EmbedderOptions) -> Result<Embedder, EmbedError> {
        let dir = options.dir.as_path();
        if !dir.is_dir() {
            return Err(EmbedError::MissingDir {
                path: dir.to_path_buf(),
            });
        }
        for file in REQUIRED_FILES {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(EmbedError::MissingFile { path });
            }
        }
        if options.max_batch == 0 {
            return Err(EmbedError::Options("max_batch must be at least 1".into()));
        }

        let config_path = dir.join(CONFIG_FILE);
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|source| EmbedError::Io {
                path: config_path.clone(),
                source,
            })?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|source| EmbedError::Config {
                path: config_path.clone(),
                source,
            })?;
        check_config(&config, &config_path)?;

        let max_tokens = match options.max_tokens {
            0 => config.max_position_embeddings,
            n => n.min(config.max_position_embeddings),
        };
        if max_tokens < 2 {
            return Err(EmbedError::Options(format!(
                "max_tokens must leave room for the [CLS] and [SEP] tokens (got {max_tokens})"
            )));
        }

        let fast = match options.backend {
            EmbedBackend::Fast if !options.device.is_cpu() => {
                return Err(EmbedError::Options(format!(
                    "the fast BERT backend runs on the CPU only, not on {:?}",
                    options.device
                )));
            }
            EmbedBackend::Fast => true,
            EmbedBackend::Candle => false,
            EmbedBackend::Auto => {
                options.device.is_cpu()
                    && !std::env::var(BACKEND_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("candle"))
            }
        };

        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let (tokenizer, counter) = load_tokenizers(&tokenizer_path, &config, max_tokens, !fast)?;

        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path).map_err(|source| EmbedError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let model_err = |source| EmbedError::Model {
            path: weights_path.clone(),
            source: Box::new(source),
        };
        // Read rather than mmapped: a file replaced while mapped would be undefined behaviour,
        // and 90 MB is read in well under a second.
        let backend = if fast {
            let tensors =
                candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(model_err)?;
            drop(bytes);
            let format = weights_from_env(options.weights)?;
            let weights =
                BertWeights::from_tensors(&tensors, &config, format).map_err(model_err)?;
            let threads = match options.threads {
                0 => crate::cpu::threads::default_threads(),
                n => n,
            };
            Backend::Fast(Box::new(FastModel {
                weights,
                state: Mutex::new(FastState {
                    pool: ComputePool::new(threads),
                    scratch: Scratch::new(),
                }),
            }))
        } else {
            let tensors = load_weights(&bytes, &options.device).map_err(model_err)?;
            drop(bytes);
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &options.device);
            Backend::Candle(Box::new(BertModel::load(vb, &config).map_err(model_err)?))
        };

        let name = model_name_of(dir);
        tracing::debug!(
            model = %name,
            dim = config.hidden_size,
            layers = config.num_hidden_layers,
            max_tokens,
            "embedder loaded"
        );
        let embedder = Embedder {
            backend,
            tokenizer,
            counter,
            tokenizer_path,
            device: options.device.clone(),
            dim: config.hidden_size,
            max_batch: options.max_batch,
            max_tokens,
            name,
        };
        tracing::debug!(model = %embedder.name, backend = %embedder.backend(), "embedder backend");
        Ok(embedder)
    }

    /// Embeds each text: a unit-length vector of [`Embedder::dim`] floats per text, in input
    /// order. An empty slice gives an empty result; an empty text is embedded like any other
    /// (from its `[CLS] [SEP]` tokens). Texts longer than [`Embedder::max_tokens`] are
    /// truncated.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = match &self.backend {
            Backend::Fast(fast) => {
                let mut out = Vec::with_capacity(texts.len());
                for chunk in texts.chunks(self.max_batch) {
                    out.extend(self.embed_fast(fast, chunk)?);
                }
                return Ok(out);
            }
            Backend::Candle(model) => model,
        };
        // Longest first, as sentence-transformers does: texts of similar length share a batch,
        // so little compute goes to padding. The sort is stable, so equal lengths keep order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.max_batch) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self.embed_batch(model, batch)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One fast forward pass over `batch` (at most `max_batch` texts), packed without padding.
    fn embed_fast(&self, fast: &FastModel, batch: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // One text at a time: `encode_batch_fast` would wake rayon's thread pool, whose
        // threads then compete for the cores with the compute threads, for no gain on short
        // texts (tokenizing is a few µs per text next to a forward pass).
        let encodings = batch
            .iter()
            .map(|&text| self.tokenizer.encode_fast(text, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EmbedError::Tokenizer {
                path: self.tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        let seqs: Vec<Sequence<'_>> = encodings
            .iter()
            .map(|e| Sequence {
                ids: e.get_ids(),
                type_ids: e.get_type_ids(),
            })
            .collect();
        // A panic while holding the lock leaves nothing half-updated that matters: the pool
        // and the buffers are reset by the next pass.
        let mut state = fast.state.lock().unwrap_or_else(PoisonError::into_inner);
        let FastState { pool, scratch } = &mut *state;
        let result = fast.weights.embed(pool, scratch, &seqs);
        // Requests come in bursts: the compute threads sleep until the next pass instead of
        // spinning on the cores the server's other threads need.
        pool.rest();
        result.map_err(|e| EmbedError::Inference(Box::new(candle_core::Error::msg(e))))
    }

    /// One candle forward pass over `batch` (at most `max_batch` texts), padded to its longest
    /// text.
    fn embed_batch(
        &self,
        model: &BertModel,
        batch: Vec<&str>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings =
            self.tokenizer
                .encode_batch_fast(batch, true)
                .map_err(|e| EmbedError::Tokenizer {
                    path: self.tokenizer_path.clone(),
                    message: e.to_string(),
                })?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, tokenizers::Encoding::len);
        let mut ids = Vec::with_capacity(rows * len);
        let mut type_ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for encoding in &encodings {
            // BatchLongest padding makes every encoding `len` long; anything else is a bug in
            // the tokenizer configuration, reported rather than mis-shaped.
            if encoding.len() != len {
                return Err(EmbedError::Tokenizer {
                    path: self.tokenizer_path.clone(),
                    message: format!(
                        "batch padding produced rows of {} and {len} tokens",
                        encoding.len()
                    ),
                });
            }
            ids.extend_from_slice(encoding.get_ids());
            type_ids.extend_from_slice(encoding.get_type_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }

        let ids_t = Tensor::from_vec(ids, (rows, len), &self.device)?;
        let type_ids_t = Tensor::from_vec(type_ids, (rows, len), &self.device)?;
        let mask_t = Tensor::from_vec(mask.clone(), (rows, len), &self.device)?;
        let hidden = model.forward(&ids_t, &type_ids_t, Some(&mask_t))?;
        let hidden = hidden
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;

        Ok(mean_pool_normalize(&hidden, &mask, rows, len, self.dim))
    }

    /// The embedding dimension (the model's hidden size; 384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The model's name: its directory's name (`all-MiniLM-L6-v2`).
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// The number of tokens the model would see for `text` without truncation, special tokens
    /// included (a tokenizer failure counts as 0). Compare with [`Embedder::max_tokens`] to
    /// know whether a text will be truncated.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode_fast(text, true)
            .map_or(0, |encoding| encoding.len())
    }

    /// The token limit per text: longer texts are truncated.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The maximum number of texts per forward pass.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The implementation in use, for logs and benchmarks: `fast f32`, `fast q8_0`,
    /// `fast int16` or `candle`.
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Candle(_) => "candle",
            Backend::Fast(fast) => match fast.weights.format() {
                WeightFormat::F32 => "fast f32",
                WeightFormat::Q8_0 => "fast q8_0",
                WeightFormat::Int16 => "fast int16",
            },
        }
    }
}

/// Cosine similarity of two vectors: 1 for the same direction, 0 for orthogonal, -1 for
/// opposite. For the unit-length vectors of [`Embedder::embed`] this is their dot product.
/// Returns 0 if either vector is all zeros; extra elements of the longer vector are ignored.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers'
/// `Pooling(mean)` + `Normalize` do: `sum(h_i * m_i) / max(sum(m_i), 1e-9)`, then
/// `v / max(|v|, 1e-12)`. `hidden` is `rows × len × dim`, row-major.
fn mean_pool_normalize(
    hidden: &[f32],
    mask: &[u32],
    rows: usize,
    len: usize,
    dim: usize,
) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            let mut sum = vec![0f32; dim];
            let mut count = 0f32;
            for t in 0..len {
                if mask[r * len + t] == 0 {
                    continue;
                }
                count += 1.0;
                let start = (r * len + t) * dim;
                for (s, h) in sum.iter_mut().zip(&hidden[start..start + dim]) {
                    *s += h;
                }
            }
            let count = count.max(1e-9);
            sum.iter_mut().for_each(|s| *s /= count);
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            sum.iter_mut().for_each(|s| *s /= norm);
            sum
        })
        .collect()
}

/// Reads the weights as f32 on `device`. On the CPU, linear layers' weights are stored
/// transposed in memory (same shape, column-major strides).
///
/// Why: candle's `Linear` computes `x · Wᵀ`. With `W` row-major, `Wᵀ` is a strided view and
/// the gemm kernel repacks the whole weight matrix on every call, 42 MB of copying per
/// all-MiniLM-L6-v2 forward pass, which showed as 60% of a short query's profile. With `W`
/// stored column-major, `Wᵀ` is contiguous and is used in place (about 10% faster overall:
/// the multiplications themselves then dominate). Embedding tables (rows are looked up) and vectors
/// keep their layout. GPU backends handle either layout natively, so they get the file's.
fn load_weights(bytes: &[u8], device: &Device) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut tensors = candle_core::safetensors::load_buffer(bytes, device)?;
    for (name, tensor) in &mut tensors {
        let mut t = tensor.to_dtype(DType::F32)?;
        if device.is_cpu()
            && t.rank() == 2
            && name.ends_with(".weight")
            && !name.contains("embeddings")
        {
            t = t.t()?.contiguous()?.t()?;
        }
        *tensor = t;
    }
    Ok(tensors)
}

/// Rejects configs that deserialise but cannot be run.
fn check_config(config: &BertConfig, path: &Path) -> Result<(), EmbedError> {
    let bad = |msg: String| EmbedError::Options(format!("{}: {msg}", path.display()));
    if config.hidden_size == 0 || config.num_attention_heads == 0 {
        return Err(bad(
            "hidden_size and num_attention_heads must be positive".into()
        ));
    }
    let head_dim = config.hidden_size / config.num_attention_heads;
    if head_dim * config.num_attention_heads != config.hidden_size {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    Ok(())
}

/// Loads `tokenizer.json` twice: configured for embedding (truncate to `max_tokens`, and with
/// `pad`, pad to the longest text of the batch) and for counting (no padding, no truncation).
fn load_tokenizers(
    path: &Path,
    config: &BertConfig,
    max_tokens: usize,
    pad: bool,
) -> Result<(Tokenizer, Tokenizer), EmbedError> {
    let tok_err = |message: String| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| tok_err(e.to_string()))?;

    // Keep the file's pad token if it names one; otherwise use the config's pad id.
    let padding = match tokenizer.get_padding() {
        Some(p) => PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            ..p.clone()
        },
        None => {
            let pad_id = u32::try_from(config.pad_token_id).map_err(|_| {
                tok_err(format!(
                    "pad_token_id {} is out of range",
                    config.pad_token_id
                ))
            })?;
            PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                direction: PaddingDirection::Right,
                pad_to_multiple_of: None,
                pad_id,
                pad_type_id: 0,
                pad_token: tokenizer
                    .id_to_token(pad_id)
                    .unwrap_or_else(|| "[PAD]".to_string()),
            }
        }
    };

    let mut counter = tokenizer.clone();
    counter.with_padding(None);
    counter
        .with_truncation(None)
        .map_err(|e| tok_err(e.to_string()))?;

    tokenizer.with_padding(pad.then_some(padding));
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| tok_err(e.to_string()))?;
    Ok((tokenizer, counter))
}

/// The model's name: the directory's last component (resolving `.` and the like).
fn model_name_of(dir: &Path) -> String {
    let named = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
    };
    named(dir)
        .or_else(|| dir.canonicalize().ok().as_deref().and_then(named))
        .unwrap_or_else(|| "embedder".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[], &[]), 0.0);
    }

    #[test]
    fn pooling_ignores_masked_tokens_and_normalises() {
        // Two rows of three tokens of dim 2; the second row's last token is padding.
        let hidden = [
            1.0, 0.0, 3.0, 0.0, 2.0, 0.0, //
            0.0, 1.0, 0.0, 3.0, 100.0, 100.0,
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        let v = mean_pool_normalize(&hidden, &mask, 2, 3, 2);
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        // An all-masked row stays finite (zero) instead of dividing by zero.
        let v = mean_pool_normalize(&[5.0, 5.0], &[0], 1, 1, 2);
        assert_eq!(v, vec![vec![0.0, 0.0]]);
    }

    #[test]
    fn model_names() {
        assert_eq!(
            model_name_of(Path::new("models/all-MiniLM-L6-v2")),
            "all-MiniLM-L6-v2"
        );
        assert_eq!(model_name_of(Path::new("models/x/")), "x");
        assert!(!model_name_of(Path::new(".")).is_empty());
    }

    #[test]
    fn missing_dir_is_an_error() {
        let err =
            Embedder::load(&EmbedderOptions::new("/nonexistent/slmgate/embedder")).unwrap_err();
        assert!(matches!(err, EmbedError::MissingDir { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/slmgate/embedder"));
    }
}
