//! A direct CPU forward pass for BERT sentence encoders (all-MiniLM-L6-v2 and the like).
//!
//! candle's `BertModel` builds a graph of tensor ops per layer; for a 6-layer, 384-wide encoder
//! and a query of ten tokens the per-op overhead (dispatch, allocation, transposes, padding
//! masks, weight repacking inside the gemm) costs more than the arithmetic. This module runs the
//! same model as straight-line code over pre-allocated buffers, like [`crate::fast_llama`] does
//! for llama:
//!
//! - the linear layers' weights are packed once, at load time, into 64-byte aligned panels of
//!   16 output columns, so the matrix multiplication streams each weight once per tile of 6
//!   tokens with an AVX2/FMA micro-kernel (6 tokens × 16 columns of `f32` accumulators in
//!   registers) that also prefetches the next panel (a short query is bound by streaming the
//!   42 MB of weights); q, k and v share one multiplication; bias and residual are added as a
//!   tile is stored, GELU right after, while the values are in the cache;
//! - texts are **packed**, not padded: a batch is one matrix of every text's tokens end to end,
//!   and attention runs per text and head over that text's own tokens only, so no work goes to
//!   padding and no mask is needed;
//! - every parallel section (chunks of matrix columns, attention heads, LayerNorm rows) runs
//!   on a [`ComputePool`] whose threads spin between sections, with
//!   [`ComputePool::run_dynamic`]: chunks go to whichever threads are running, so a helper
//!   thread that the OS has descheduled (a busy machine) does not stall the pass.
//!
//! Each output value is computed by the same sequence of operations whatever else is in the
//! batch (a token's row never mixes with another's, and the column split does not change the
//! order of the sums), so an embedding is bit-for-bit the same alone or batched.
//!
//! The numerics are those of the Hugging Face model in `f32`: embeddings (word + token type +
//! position) and LayerNorm, post-LN encoder layers with exact-erf GELU (`hidden_act: gelu`;
//! `gelu_new`-style tanh and ReLU are supported too), then sentence-transformers' mean pooling
//! over the tokens and L2 normalisation. `erf` and `exp` are vectorizable approximations
//! accurate to a few `f32` ulps.
//!
//! [`WeightFormat::Q8_0`] keeps the linear layers' weights as 8-bit blocks instead and runs them
//! with [`crate::kernels`]' int8 kernels (activations quantized per 32-value block): a quarter
//! of the memory, at a small cost in accuracy (see [`WeightFormat`]). [`WeightFormat::Int16`]
//! runs them as integer matrix multiplications instead ([`crate::int_gemm`]: 12-bit weights
//! per output column × 16-bit activations per token, exact `i32` sums over the whole input).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};

use crate::cpu::int_gemm::{self, Dst, IntActs, IntMatrix};
use crate::cpu::kernels::{detected_isa, matmul_rows, Isa, OutPtr, QActs, QMatrix, QK};
use crate::cpu::threads::ComputePool;

/// Output columns per packed weight panel (two 8-lane registers).
const NR: usize = 16;
/// Token rows per micro-kernel tile (12 accumulators + 2 weights + 1 broadcast = 15 of the 16
/// AVX2 registers).
const MR: usize = 6;
/// Activation bytes a chunk of token rows may take: every weight panel of a thread passes over
/// the chunk while it stays in the L2 cache.
const CHUNK_BYTES: usize = 192 * 1024;

/// How the linear layers' weights are held in memory (embeddings, biases and LayerNorms are
/// always `f32`).
///
/// Measured on all-MiniLM-L6-v2 (2-core Zen 3, AVX2): `f32` reproduces candle's `f32` results
/// to ~1e-6 and is the default; `q8_0` holds 4× fewer weight bytes (10.6 MB instead of 42 MB
/// for the encoder layers) with embeddings at cosine ≥ 0.999 of the exact ones, but this CPU's
/// int8 kernels are not faster than the `f32` micro-kernel once the `f32` weights sit in the
/// cache, so it is an option for memory-constrained hosts, not the default. `int16` holds
/// half the bytes (21 MB) and runs the matrix multiplications ~1.4–1.7× faster than `f32`
/// (`vpmaddwd`, 16 multiply-adds per instruction), with embeddings at cosine ≥ 0.99998 of
/// the exact ones (CLINC150 and the router's prompts; nearest-centroid intent accuracy and
/// `slmgate eval` unchanged) — close, but not the exact values `/v1/embeddings` promises
/// (a reference similarity moves by 1.5e-4), so the gateway uses it for routing and the
/// semantic cache only (`embedder.routing_weights`, a second copy of the model) and serves
/// `/v1/embeddings` from `f32` weights (`embedder.weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Exact `f32` weights.
    #[default]
    F32,
    /// GGML Q8_0 blocks (32 × `i8` + an `f16` scale); matrices whose input size is not a
    /// multiple of 32 stay `f32`.
    Q8_0,
    /// 12-bit integer weights (held as `i16`, one scale per output column) multiplied by
    /// activations quantized per token to 16-bit integers, summed exactly in `i32` over the
    /// whole input and dequantized once per output ([`crate::int_gemm`]).
    Int16,
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Int16 => "int16",
        })
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    /// `f32`, `q8_0` (also `q8`) or `int16` (also `i16`), case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightFormat::F32),
            "q8_0" | "q8" => Ok(WeightFormat::Q8_0),
            "int16" | "i16" => Ok(WeightFormat::Int16),
            other => Err(format!(
                "unknown embedder weight format `{other}` (expected f32, q8_0 or int16)"
            )),
        }
    }
}

/// One text's token ids and token type ids (the same length).
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// Token ids, special tokens included.
    pub ids: &'a [u32],
    /// Token type (segment) ids, one per token.
    pub type_ids: &'a [u32],
}

/// Errors of a forward pass: bad inputs, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A token id is outside the vocabulary.
    #[error("token id {0} is outside the vocabulary ({1} tokens)")]
    BadToken(u32, usize),
    /// A token type id is outside the model's token types.
    #[error("token type id {0} is outside the model's {1} token types")]
    BadTokenType(u32, usize),
    /// A sequence is longer than the model's position embeddings.
    #[error("a sequence of {0} tokens is longer than the model's {1} positions")]
    TooLong(usize, usize),
    /// `ids` and `type_ids` differ in length.
    #[error("{0} token ids but {1} token type ids")]
    LengthMismatch(usize, usize),
}

/// A 64-byte aligned row of a weight panel: the weights of [`NR`] output columns for one input.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Row16([f32; NR]);

enum Weights {
    /// `panels × k` rows: row `p·k + i` holds `W[p·NR + j][i]` for `j < NR` (zero past `n`).
    F32(Vec<Row16>),
    Q8(QMatrix),
    Int16(IntMatrix),
}

/// `y = x · Wᵀ + b` with `W` of `n × k`.
struct Linear {
    n: usize,
    k: usize,
    bias: Vec<f32>,
    w: Weights,
}

impl Linear {
    /// `w` is `n × k`, row-major (the PyTorch layout).
    fn new(w: &[f32], bias: Vec<f32>, n: usize, k: usize, format: WeightFormat) -> Self {
        debug_assert_eq!(w.len(), n * k);
        if format == WeightFormat::Int16 {
            return Self {
                n,
                k,
                bias,
                w: Weights::Int16(IntMatrix::quantize(w, n, k)),
            };
        }
        if format == WeightFormat::Q8_0 && k.is_multiple_of(QK) {
            if let Ok(q) = QMatrix::quantize_q8_0(n, k, w) {
                return Self {
                    n,
                    k,
                    bias,
                    w: Weights::Q8(q),
                };
            }
        }
        let panels = n.div_ceil(NR);
        let mut data = vec![Row16([0.0; NR]); panels * k];
        for p in 0..panels {
            for (i, row) in data[p * k..(p + 1) * k].iter_mut().enumerate() {
                for (j, v) in row.0.iter_mut().enumerate() {
                    let r = p * NR + j;
                    if r < n {
                        *v = w[r * k + i];
                    }
                }
            }
        }
        Self {
            n,
            k,
            bias,
            w: Weights::F32(data),
        }
    }

    /// The format the weights are actually held in.
    fn format(&self) -> WeightFormat {
        match self.w {
            Weights::F32(_) => WeightFormat::F32,
            Weights::Q8(_) => WeightFormat::Q8_0,
            Weights::Int16(_) => WeightFormat::Int16,
        }
    }

    fn weight_bytes(&self) -> usize {
        match &self.w {
            Weights::F32(_) => 4 * self.n * self.k,
            Weights::Q8(q) => q.size_in_bytes(),
            Weights::Int16(q) => q.size_in_bytes(),
        }
    }
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    /// Query, key and value, rows concatenated.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// The activation applied to the intermediate layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    None,
    Gelu,
    GeluTanh,
    Relu,
}

/// The weights of a BERT encoder, ready for [`BertWeights::embed`]. Immutable; share it.
pub struct BertWeights {
    hidden: usize,
    heads: usize,
    head_dim: usize,
    vocab: usize,
    types: usize,
    positions: usize,
    eps: f32,
    act: Act,
    format: WeightFormat,
    word_emb: Vec<f32>,
    pos_emb: Vec<f32>,
    type_emb: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for BertWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertWeights")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .field("heads", &self.heads)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Scratch buffers of a forward pass, reused from one call to the next.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    tmp: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    h: Vec<f32>,
    acts: Acts,
}

/// Quantized copies of a matrix multiplication's input.
#[derive(Default)]
struct Acts {
    q8: QActs,
    int: IntActs,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("floats", &(self.capacity()))
            .finish_non_exhaustive()
    }
}

impl Scratch {
    /// Empty buffers (they grow on first use).
    pub fn new() -> Self {
        Self::default()
    }

    fn capacity(&self) -> usize {
        self.x.capacity()
            + self.tmp.capacity()
            + self.qkv.capacity()
            + self.ctx.capacity()
            + self.h.capacity()
    }
}

fn missing(name: &str) -> candle_core::Error {
    candle_core::Error::msg(format!("tensor {name} is missing"))
}

impl BertWeights {
    /// Builds the encoder from the tensors of a Hugging Face `BertModel` checkpoint (names
    /// optionally prefixed with `bert.` or `<model_type>.`), checking every shape against
    /// `config`. Fails, naming the tensor, on a missing tensor or a shape mismatch.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        config: &BertConfig,
        format: WeightFormat,
    ) -> candle_core::Result<Self> {
        let bad = |msg: String| candle_core::Error::msg(msg);
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        if hidden == 0 || heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(bad(format!(
                "hidden_size {hidden} is not a positive multiple of num_attention_heads {heads}"
            )));
        }
        if config.vocab_size == 0
            || config.type_vocab_size == 0
            || config.max_position_embeddings == 0
            || config.intermediate_size == 0
        {
            return Err(bad("the config has a zero-sized dimension".into()));
        }
        let mut prefixes = vec![String::new(), "bert.".to_string()];
        if let Some(t) = &config.model_type {
            prefixes.push(format!("{t}."));
        }
        let prefix = prefixes
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| missing("embeddings.word_embeddings.weight"))?;
        let get = |name: &str, shape: &[usize]| -> candle_core::Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let t = tensors.get(&full).ok_or_else(|| missing(&full))?;
            if t.dims() != shape {
                return Err(bad(format!(
                    "tensor {full} has shape {:?}, the config says {shape:?}",
                    t.dims()
                )));
            }
            t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
        };
        let norm = |p: &str| -> candle_core::Result<Norm> {
            Ok(Norm {
                w: get(&format!("{p}.weight"), &[hidden])?,
                b: get(&format!("{p}.bias"), &[hidden])?,
            })
        };
        let inter = config.intermediate_size;
        let linear = |p: &str, n: usize, k: usize| -> candle_core::Result<Linear> {
            let w = get(&format!("{p}.weight"), &[n, k])?;
            let b = get(&format!("{p}.bias"), &[n])?;
            Ok(Linear::new(&w, b, n, k, format))
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut w = Vec::with_capacity(3 * hidden * hidden);
            let mut b = Vec::with_capacity(3 * hidden);
            for part in ["query", "key", "value"] {
                let name = format!("{p}.attention.self.{part}");
                w.extend(get(&format!("{name}.weight"), &[hidden, hidden])?);
                b.extend(get(&format!("{name}.bias"), &[hidden])?);
            }
            layers.push(Layer {
                qkv: Linear::new(&w, b, 3 * hidden, hidden, format),
                attn_out: linear(&format!("{p}.attention.output.dense"), hidden, hidden)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: linear(&format!("{p}.intermediate.dense"), inter, hidden)?,
                down: linear(&format!("{p}.output.dense"), hidden, inter)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let format = layers.first().map_or(WeightFormat::F32, |l| l.qkv.format());
        Ok(Self {
            hidden,
            heads,
            head_dim: hidden / heads,
            vocab: config.vocab_size,
            types: config.type_vocab_size,
            positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
            act: match config.hidden_act {
                HiddenAct::Gelu => Act::Gelu,
                HiddenAct::GeluApproximate => Act::GeluTanh,
                HiddenAct::Relu => Act::Relu,
            },
            format,
            word_emb: get(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, hidden],
            )?,
            pos_emb: get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, hidden],
            )?,
            type_emb: get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, hidden],
            )?,
            emb_norm: norm("embeddings.LayerNorm")?,
            layers,
        })
    }

    /// The hidden size (= embedding dimension).
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The format the linear layers actually use ([`WeightFormat::F32`] if `Q8_0` was asked
    /// for but no matrix could take it).
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes of linear-layer weights (what a forward pass streams through the caches).
    pub fn linear_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                [&l.qkv, &l.attn_out, &l.up, &l.down]
                    .iter()
                    .map(|m| m.weight_bytes())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Runs the encoder over `seqs` packed end to end and returns the last hidden states,
    /// `Σ len × hidden` values, the rows of each sequence in order.
    pub fn forward<'s>(
        &self,
        pool: &ComputePool,
        scratch: &'s mut Scratch,
        seqs: &[Sequence<'_>],
    ) -> Result<&'s [f32], ForwardError> {
        let h = self.hidden;
        let mut spans = Vec::with_capacity(seqs.len());
        let mut tokens = 0;
        for s in seqs {
            if s.ids.len() != s.type_ids.len() {
                return Err(ForwardError::LengthMismatch(s.ids.len(), s.type_ids.len()));
            }
            if s.ids.len() > self.positions {
                return Err(ForwardError::TooLong(s.ids.len(), self.positions));
            }
            if let Some(&bad) = s.ids.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(ForwardError::BadToken(bad, self.vocab));
            }
            if let Some(&bad) = s.type_ids.iter().find(|&&t| t as usize >= self.types) {
                return Err(ForwardError::BadTokenType(bad, self.types));
            }
            spans.push((tokens, s.ids.len()));
            tokens += s.ids.len();
        }
        let b = scratch;
        b.x.resize(tokens * h, 0.0);
        if tokens == 0 {
            return Ok(&b.x);
        }

        // Embeddings: (word + token type) + position, as the Hugging Face model adds them.
        for (s, &(start, _)) in seqs.iter().zip(&spans) {
            for (p, (&id, &tt)) in s.ids.iter().zip(s.type_ids).enumerate() {
                let row = &mut b.x[(start + p) * h..][..h];
                let word = &self.word_emb[id as usize * h..][..h];
                let ty = &self.type_emb[tt as usize * h..][..h];
                let pos = &self.pos_emb[p * h..][..h];
                for (((x, &w), &t), &q) in row.iter_mut().zip(word).zip(ty).zip(pos) {
                    *x = (w + t) + q;
                }
            }
        }
        layer_norm(pool, &mut b.x, h, &self.emb_norm, self.eps);

        for layer in &self.layers {
            matmul(
                pool,
                &layer.qkv,
                &b.x,
                tokens,
                None,
                Act::None,
                &mut b.acts,
                &mut b.qkv,
            );
            b.ctx.resize(tokens * h, 0.0);
            attention(pool, self.heads, self.head_dim, &b.qkv, &spans, &mut b.ctx);
            matmul(
                pool,
                &layer.attn_out,
                &b.ctx,
                tokens,
                Some(&b.x),
                Act::None,
                &mut b.acts,
                &mut b.tmp,
            );
            layer_norm(pool, &mut b.tmp, h, &layer.attn_norm, self.eps);
            std::mem::swap(&mut b.x, &mut b.tmp);
            matmul(
                pool,
                &layer.up,
                &b.x,
                tokens,
                None,
                self.act,
                &mut b.acts,
                &mut b.h,
            );
            matmul(
                pool,
                &layer.down,
                &b.h,
                tokens,
                Some(&b.x),
                Act::None,
                &mut b.acts,
                &mut b.tmp,
            );
            layer_norm(pool, &mut b.tmp, h, &layer.out_norm, self.eps);
            std::mem::swap(&mut b.x, &mut b.tmp);
        }
        Ok(&b.x)
    }

    /// Sentence embeddings of `seqs`: the last hidden states averaged over each sequence's
    /// tokens, scaled to unit L2 norm (sentence-transformers' `Pooling(mean)` + `Normalize`:
    /// `v / max(|v|, 1e-12)`). An empty sequence gives a zero vector.
    pub fn embed(
        &self,
        pool: &ComputePool,
        scratch: &mut Scratch,
        seqs: &[Sequence<'_>],
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        let h = self.hidden;
        let hidden = self.forward(pool, scratch, seqs)?;
        let mut start = 0;
        Ok(seqs
            .iter()
            .map(|s| {
                let len = s.ids.len();
                let mut sum = vec![0f32; h];
                for row in hidden[start * h..(start + len) * h].chunks_exact(h) {
                    for (s, &x) in sum.iter_mut().zip(row) {
                        *s += x;
                    }
                }
                start += len;
                let count = (len as f32).max(1e-9);
                sum.iter_mut().for_each(|s| *s /= count);
                let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                sum.iter_mut().for_each(|s| *s /= norm);
                sum
            })
            .collect())
    }
}

/// `out = act(x · Wᵀ + b [+ residual])` for `tokens` rows of `x`, in chunks of output columns
/// (and of token rows, for long inputs) shared out over the pool's threads.
#[allow(clippy::too_many_arguments)]
fn matmul(
    pool: &ComputePool,
    lin: &Linear,
    x: &[f32],
    tokens: usize,
    residual: Option<&[f32]>,
    act: Act,
    acts: &mut Acts,
    out: &mut Vec<f32>,
) {
    let (n, k) = (lin.n, lin.k);
    debug_assert_eq!(x.len(), tokens * k);
    out.resize(tokens * n, 0.0);
    let optr = OutPtr(out.as_mut_ptr());
    let threads = pool.threads();
    let finish_row = |t: usize, cols: std::ops::Range<usize>| {
        // SAFETY: `out` holds `tokens × n` values; the columns `cols` of row `t` belong to the
        // caller's chunk, disjoint from every other chunk.
        let o = unsafe {
            std::slice::from_raw_parts_mut(optr.get().add(t * n + cols.start), cols.len())
        };
        let bias = &lin.bias[cols.clone()];
        match residual {
            Some(r) => {
                let r = &r[t * n + cols.start..t * n + cols.end];
                for ((o, &b), &r) in o.iter_mut().zip(bias).zip(r) {
                    *o = (*o + b) + r;
                }
            }
            None => {
                for (o, &b) in o.iter_mut().zip(bias) {
                    *o += b;
                }
            }
        }
        activate(o, act);
    };
    match &lin.w {
        Weights::F32(panels) => {
            let isa = detected_isa();
            let panel = |p: usize| panels.get(p * k..(p + 1) * k);
            tiled(
                pool,
                lin,
                tokens,
                MR,
                4 * k,
                residual,
                act,
                optr,
                |t, m, p, first, dst| {
                    let Some(w) = panel(p) else { return };
                    let cols = NR.min(n - p * NR);
                    // The next panel is fetched from memory during the first tile.
                    let next = panel(p + 1).filter(|_| first);
                    // SAFETY: `tiled` hands out rows `t..t + m` and the panel's columns of `out`
                    // (and of the residual) to this chunk only, in bounds; the bias holds `n`
                    // values.
                    unsafe { tile_f32(isa, m, &x[t * k..], k, w, next, cols, dst) };
                },
            );
        }
        Weights::Int16(q) => {
            let isa = detected_isa();
            let ldx = 2 * q.pairs();
            let int = &mut acts.int;
            int.prepare(tokens, q.pairs());
            // Quantize the input rows, eight at a time, over the pool.
            const QROWS: usize = 8;
            let qmax = q.act_max();
            let (qptr, sptr) = (
                SyncPtr(int.q.as_mut_ptr()),
                SyncPtr(int.scales.as_mut_ptr()),
            );
            pool.run_dynamic(tokens.div_ceil(QROWS), |c| {
                for t in c * QROWS..((c + 1) * QROWS).min(tokens) {
                    // SAFETY: `int` holds `tokens` rows of `ldx` values and `tokens` scales;
                    // row `t` belongs to this chunk only.
                    unsafe {
                        let row = std::slice::from_raw_parts_mut(qptr.get().add(t * ldx), ldx);
                        *sptr.get().add(t) =
                            int_gemm::quantize_row(isa, &x[t * k..][..k], row, qmax);
                    }
                }
            });
            let int = &*int;
            tiled(
                pool,
                lin,
                tokens,
                int_gemm::mr(isa),
                2 * ldx,
                residual,
                act,
                optr,
                |t, m, p, first, dst| {
                    let Some(w) = q.panel(p) else { return };
                    let cols = NR.min(n - p * NR);
                    let next = q.panel(p + 1).filter(|_| first);
                    // SAFETY: as for the `f32` panels.
                    unsafe {
                        int_gemm::tile(
                            isa,
                            m,
                            &int.q[t * ldx..],
                            ldx,
                            &int.scales[t..],
                            w,
                            next,
                            q.panel_scales(p),
                            cols,
                            dst,
                        )
                    };
                },
            );
        }
        Weights::Q8(q) => {
            acts.q8.quantize(x, k);
            let acts = &acts.q8;
            // Row chunks a multiple of the kernels' 4-row tiles.
            let per = (n.div_ceil(8 * threads).div_ceil(4) * 4).max(4);
            pool.run_dynamic(n.div_ceil(per), |c| {
                let mine = c * per..((c + 1) * per).min(n);
                // SAFETY: `out` holds `tokens × n` values; this chunk writes only the columns
                // `mine`, disjoint from the other chunks' columns.
                unsafe { matmul_rows(q, acts, mine.clone(), optr, n) };
                for t in 0..tokens {
                    finish_row(t, mine.clone());
                }
            });
        }
    }
}

/// A raw pointer that several threads write disjoint elements of.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: users guarantee that concurrent writers touch disjoint elements.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Runs `tile(t, m, p, first, dst)` over every tile of `m ≤ mr` token rows × panel `p` of
/// `NR` output columns, in chunks of rows (whose inputs, `row_bytes` each, stay in L2 while
/// the chunk's panels pass over them) × chunks of panels shared out over the pool's threads;
/// `first` is true for a chunk's first tile of rows (prefetch the next panel then), `dst`
/// points at the tile's place in `out`. Applies `act` to each chunk once its tiles are done.
#[allow(clippy::too_many_arguments)]
fn tiled(
    pool: &ComputePool,
    lin: &Linear,
    tokens: usize,
    mr: usize,
    row_bytes: usize,
    residual: Option<&[f32]>,
    act: Act,
    optr: OutPtr,
    tile: impl Fn(usize, usize, usize, bool, Dst) + Sync,
) {
    let n = lin.n;
    let np = n.div_ceil(NR);
    // Token rows per chunk: the rows' activations stay in L2 while panels pass over them.
    let rows = ((CHUNK_BYTES / row_bytes.max(1)) / mr * mr).max(mr);
    let row_chunks = tokens.div_ceil(rows);
    // About 8 chunks of panels per thread: small enough to balance, large enough that
    // taking one costs nothing.
    let per = np.div_ceil(8 * pool.threads()).max(1);
    let panel_chunks = np.div_ceil(per);
    let res = residual.map_or(std::ptr::null(), <[f32]>::as_ptr) as usize;
    if let Some(r) = residual {
        assert_eq!(r.len(), tokens * n, "residual size");
    }
    pool.run_dynamic(row_chunks * panel_chunks, |c| {
        let (rc, pc) = (c / panel_chunks, c % panel_chunks);
        let (t0, t1) = (rc * rows, ((rc + 1) * rows).min(tokens));
        let (p0, p1) = (pc * per, ((pc + 1) * per).min(np));
        // Tiles of token rows outer, panels inner: the tile's activations stay in L1
        // while the chunk's panels (a few hundred KB) stream from L2.
        let mut t = t0;
        while t < t1 {
            let m = (t1 - t).min(mr);
            for p in p0..p1 {
                let c0 = p * NR;
                let res = res as *const f32;
                let dst = Dst {
                    out: optr.get().wrapping_add(t * n + c0),
                    ldo: n,
                    bias: lin.bias[c0..].as_ptr(),
                    res: if res.is_null() {
                        res
                    } else {
                        res.wrapping_add(t * n + c0)
                    },
                    ldr: n,
                };
                tile(t, m, p, t == t0, dst);
            }
            t += m;
        }
        if act != Act::None {
            let cols = p0 * NR..(p1 * NR).min(n);
            for t in t0..t1 {
                // SAFETY: this chunk's rows and columns, written above.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(optr.get().add(t * n + cols.start), cols.len())
                };
                activate(o, act);
            }
        }
    });
}

/// Multiplies `m` (1..=MR) token rows of `x` (row stride `ldx`, `panel.len()` values used per
/// row) by one weight panel and stores the `cols` (≤ NR) first columns to `dst`, prefetching
/// the `next` panel into the cache meanwhile (for few tokens the pass is bound by streaming
/// the weights from memory).
///
/// # Safety
/// `dst.out` must be valid for writes, `dst.bias` for reads of `cols` values per row (`dst.res`
/// too unless null) for the `m` rows, and no other thread may access those elements.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32(
    isa: Isa,
    m: usize,
    x: &[f32],
    ldx: usize,
    panel: &[Row16],
    next: Option<&[Row16]>,
    cols: usize,
    dst: Dst,
) {
    let k = panel.len();
    assert!((1..=MR).contains(&m) && cols <= NR && x.len() >= (m - 1) * ldx + k);
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && cols == NR {
        // SAFETY: AVX2 and FMA are available (any non-scalar `Isa` implies them); `x` was
        // checked above, `dst` is the caller's contract.
        unsafe {
            let x = x.as_ptr();
            match (m, next) {
                (1, None) => avx2::tile::<1, false>(x, ldx, panel, std::ptr::null(), dst),
                (2, None) => avx2::tile::<2, false>(x, ldx, panel, std::ptr::null(), dst),
                (3, None) => avx2::tile::<3, false>(x, ldx, panel, std::ptr::null(), dst),
                (4, None) => avx2::tile::<4, false>(x, ldx, panel, std::ptr::null(), dst),
                (5, None) => avx2::tile::<5, false>(x, ldx, panel, std::ptr::null(), dst),
                (_, None) => avx2::tile::<6, false>(x, ldx, panel, std::ptr::null(), dst),
                (1, Some(n)) => avx2::tile::<1, true>(x, ldx, panel, n.as_ptr(), dst),
                (2, Some(n)) => avx2::tile::<2, true>(x, ldx, panel, n.as_ptr(), dst),
                (3, Some(n)) => avx2::tile::<3, true>(x, ldx, panel, n.as_ptr(), dst),
                (4, Some(n)) => avx2::tile::<4, true>(x, ldx, panel, n.as_ptr(), dst),
                (5, Some(n)) => avx2::tile::<5, true>(x, ldx, panel, n.as_ptr(), dst),
                (_, Some(n)) => avx2::tile::<6, true>(x, ldx, panel, n.as_ptr(), dst),
            }
        }
        return;
    }
    let _ = (isa, next);
    for r in 0..m {
        let mut acc = [0f32; NR];
        for (i, w) in panel.iter().enumerate() {
            let a = x[r * ldx + i];
            for (acc, &w) in acc.iter_mut().zip(&w.0) {
                *acc += a * w;
            }
        }
        for (j, &acc) in acc.iter().enumerate().take(cols) {
            // SAFETY: the caller's contract.
            unsafe {
                let mut v = acc + *dst.bias.add(j);
                if !dst.res.is_null() {
                    v += *dst.res.add(r * dst.ldr + j);
                }
                *dst.out.add(r * dst.ldo + j) = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Dst, Row16, NR};
    use std::arch::x86_64::*;

    /// `Σ_i x[r·ldx + i] · panel[i][j]` for `r < M`, `j < 16`, with fused multiply-adds in
    /// the order of `i`, finished and stored as [`Dst`] says. With `PREFETCH`, row `i` of the
    /// `next` panel is prefetched along with row `i` of this one.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `x` must be valid for reads at `r·ldx + i` for every
    /// `r < M`, `i < panel.len()`; `dst` as for [`super::tile_f32`] with 16 columns.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const M: usize, const PREFETCH: bool>(
        x: *const f32,
        ldx: usize,
        panel: &[Row16],
        next: *const Row16,
        dst: Dst,
    ) {
        let mut lo = [_mm256_setzero_ps(); M];
        let mut hi = [_mm256_setzero_ps(); M];
        let w = panel.as_ptr() as *const f32;
        for i in 0..panel.len() {
            // SAFETY: row `i` of the panel is 16 aligned floats; `x` reads are in bounds by
            // the caller's contract; a prefetch is a hint that cannot fault.
            unsafe {
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i) as *const i8);
                }
                let w0 = _mm256_load_ps(w.add(i * NR));
                let w1 = _mm256_load_ps(w.add(i * NR + 8));
                for r in 0..M {
                    let a = _mm256_broadcast_ss(&*x.add(r * ldx + i));
                    lo[r] = _mm256_fmadd_ps(a, w0, lo[r]);
                    hi[r] = _mm256_fmadd_ps(a, w1, hi[r]);
                }
            }
        }
        // SAFETY: the caller's contract on `dst`.
        unsafe {
            let b0 = _mm256_loadu_ps(dst.bias);
            let b1 = _mm256_loadu_ps(dst.bias.add(8));
            for r in 0..M {
                let mut v0 = _mm256_add_ps(lo[r], b0);
                let mut v1 = _mm256_add_ps(hi[r], b1);
                if !dst.res.is_null() {
                    let res = dst.res.add(r * dst.ldr);
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(res));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(res.add(8)));
                }
                let out = dst.out.add(r * dst.ldo);
                _mm256_storeu_ps(out, v0);
                _mm256_storeu_ps(out.add(8), v1);
            }
        }
    }
}

/// Applies `act` to every value (branch-free, so the loops vectorize).
fn activate(v: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::Gelu => v.iter_mut().for_each(|x| *x = gelu_erf(*x)),
        Act::GeluTanh => v.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        Act::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
    }
}

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, BERT's exact GELU.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let hx = 0.5 * x;
    erf(x * std::f32::consts::FRAC_1_SQRT_2).mul_add(hx, hx)
}

/// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    // tanh(u) = 1 − 2/(e^{2u} + 1), exact at both ends of the clamped range.
    let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + t)
}

/// `erf(x)` to within 5e-7 (a few `f32` ulps of 1): the rational approximation Eigen and XLA use for `f32` (odd
/// degree-13 numerator over even degree-8 denominator on `[-4, 4]`, where `erf` rounds to ±1
/// beyond).
#[inline(always)]
fn erf(x: f32) -> f32 {
    // Horner steps as fused multiply-adds: half the instructions of `x2 * p + c`, and each
    // step rounds once.
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_600_5e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    p *= x;
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    p / q
}

/// `e^x` to ~1 ulp on `[-87, 88]` (clamped outside): `2^n · p(r)` with `x = n·ln2 + r`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Sums with eight independent lanes (vectorizes without `-ffast-math`).
fn sum8(v: &[f32], mut f: impl FnMut(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// LayerNorm of every `h`-wide row of `x`, in place, in chunks of rows shared out over the
/// pool's threads.
fn layer_norm(pool: &ComputePool, x: &mut [f32], h: usize, norm: &Norm, eps: f32) {
    const ROWS: usize = 8;
    let rows = x.len() / h;
    let ptr = OutPtr(x.as_mut_ptr());
    pool.run_dynamic(rows.div_ceil(ROWS), |c| {
        for t in c * ROWS..((c + 1) * ROWS).min(rows) {
            // SAFETY: row `t` belongs to this chunk only.
            let row = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(t * h), h) };
            let mean = sum8(row, |v| v) / h as f32;
            let var = sum8(row, |v| (v - mean) * (v - mean)) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(&norm.w).zip(&norm.b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    });
}

/// Multi-head self-attention of each sequence over its own tokens. `qkv` rows are
/// `[q | k | v]` (`3·heads·head_dim` wide); `spans` are `(first row, length)`; the context
/// vectors go to `ctx` (`heads·head_dim` wide).
fn attention(
    pool: &ComputePool,
    heads: usize,
    hd: usize,
    qkv: &[f32],
    spans: &[(usize, usize)],
    ctx: &mut [f32],
) {
    let h = heads * hd;
    let w3 = 3 * h;
    let scale = 1.0 / (hd as f32).sqrt();
    assert!(ctx.len() >= spans.iter().map(|&(s, l)| (s + l) * h).max().unwrap_or(0));
    let optr = OutPtr(ctx.as_mut_ptr());
    // One chunk per (sequence, head).
    pool.run_dynamic(spans.len() * heads, |u| {
        let (s, head) = (u / heads, u % heads);
        let (start, len) = spans[s];
        if len == 0 {
            return;
        }
        let at = |row: usize, part: usize| (start + row) * w3 + part * h + head * hd;
        // Keys transposed (`kt[d][j]`) and padded with zero keys to whole pairs of 8-lane
        // vectors (`lp` columns; the padding's scores are computed, then ignored).
        let lp = len.next_multiple_of(16);
        let mut kt = vec![0f32; hd * lp];
        // Row by row of `kt`: contiguous stores, the reads strided (stores to a new cache line
        // for every value took a fifth of the attention's time).
        for (d, kd) in kt.chunks_exact_mut(lp).enumerate() {
            for (j, k) in kd[..len].iter_mut().enumerate() {
                *k = qkv[at(j, 1) + d];
            }
        }
        // Scores, then probabilities (unnormalized; `inv` holds each row's 1/Σ).
        let mut p = vec![0f32; len * lp];
        let mut inv = vec![0f32; len];
        let mut q0 = 0;
        while q0 < len {
            let rows = (len - q0).min(4);
            let q = |r: usize| &qkv[at(q0 + r, 0)..][..hd];
            let out = &mut p[q0 * lp..(q0 + rows) * lp];
            match rows {
                4 => scores_block::<4>(q, &kt, lp, scale, out),
                3 => scores_block::<3>(q, &kt, lp, scale, out),
                2 => scores_block::<2>(q, &kt, lp, scale, out),
                _ => scores_block::<1>(q, &kt, lp, scale, out),
            }
            q0 += rows;
        }
        for (row, inv) in p.chunks_exact_mut(lp).zip(inv.iter_mut()) {
            let max = row[..len].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|s| *s = exp(*s - max));
            *inv = 1.0 / sum8(&row[..len], |v| v);
        }
        // Context vectors: probabilities × values, four queries at a time.
        let v = |j: usize| &qkv[at(j, 2)..][..hd];
        let mut q0 = 0;
        while q0 < len {
            let rows = (len - q0).min(4);
            let probs = &p[q0 * lp..(q0 + rows) * lp];
            let inv = &inv[q0..q0 + rows];
            // SAFETY: chunk (sequence, head) owns these `hd` values of the rows `start + q0..`;
            // chunks are disjoint, and the rows are inside `ctx` (checked above).
            let out = |r: usize| unsafe {
                std::slice::from_raw_parts_mut(optr.get().add((start + q0 + r) * h + head * hd), hd)
            };
            match rows {
                4 => context_block::<4>(probs, lp, len, inv, v, out),
                3 => context_block::<3>(probs, lp, len, inv, v, out),
                2 => context_block::<2>(probs, lp, len, inv, v, out),
                _ => context_block::<1>(probs, lp, len, inv, v, out),
            }
            q0 += rows;
        }
    });
}

/// `out[r][j] = scale · q(r) · k_j` for `Q` queries and the `lp` (padded to 16) keys of `kt`
/// (`kt[d·lp + j]`): a 4 × 16 register tile of fused multiply-adds, so the sums over `d` run
/// as eight independent chains (enough to hide the FMA latency).
#[inline(always)]
fn scores_block<'a, const Q: usize>(
    q: impl Fn(usize) -> &'a [f32],
    kt: &[f32],
    lp: usize,
    scale: f32,
    out: &mut [f32],
) {
    let qs: [&[f32]; Q] = std::array::from_fn(q);
    for jc in (0..lp).step_by(16) {
        let mut acc = [[0f32; 16]; Q];
        for (d, kd) in kt.chunks_exact(lp).enumerate() {
            let k16 = &kd[jc..jc + 16];
            for r in 0..Q {
                let qd = qs[r][d];
                for l in 0..16 {
                    acc[r][l] = qd.mul_add(k16[l], acc[r][l]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (o, &a) in out[r * lp + jc..r * lp + jc + 16].iter_mut().zip(acc) {
                *o = a * scale;
            }
        }
    }
}

/// `out(r)[d] = inv[r] · Σ_j probs[r·lp + j] · v(j)[d]` for `Q` queries over `len` keys,
/// sixteen dimensions × `Q` queries at a time (eight independent chains of fused
/// multiply-adds), then eight, then one.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `j` indexes the `Q` probability rows and `v` at once
fn context_block<'a, 'o, const Q: usize>(
    probs: &[f32],
    lp: usize,
    len: usize,
    inv: &[f32],
    v: impl Fn(usize) -> &'a [f32],
    out: impl Fn(usize) -> &'o mut [f32],
) {
    let outs: [&mut [f32]; Q] = std::array::from_fn(out);
    let pr: [&[f32]; Q] = std::array::from_fn(|r| &probs[r * lp..r * lp + len]);
    let hd = outs[0].len();
    let mut dc = 0;
    while dc + 16 <= hd {
        let mut acc = [[0f32; 16]; Q];
        for j in 0..len {
            let v16 = &v(j)[dc..dc + 16];
            for r in 0..Q {
                let p = pr[r][j];
                for l in 0..16 {
                    acc[r][l] = p.mul_add(v16[l], acc[r][l]);
                }
            }
        }
        for r in 0..Q {
            for (o, &a) in outs[r][dc..dc + 16].iter_mut().zip(&acc[r]) {
                *o = a * inv[r];
            }
        }
        dc += 16;
    }
    while dc + 8 <= hd {
        let mut acc = [[0f32; 8]; Q];
        for j in 0..len {
            let v8 = &v(j)[dc..dc + 8];
            for r in 0..Q {
                let p = pr[r][j];
                for l in 0..8 {
                    acc[r][l] = p.mul_add(v8[l], acc[r][l]);
                }
            }
        }
        for r in 0..Q {
            for (o, &a) in outs[r][dc..dc + 8].iter_mut().zip(&acc[r]) {
                *o = a * inv[r];
            }
        }
        dc += 8;
    }
    for (r, out) in outs.into_iter().enumerate() {
        for (d, o) in out.iter_mut().enumerate().skip(dc) {
            let sum = (0..len).fold(0f32, |s, j| pr[r][j].mul_add(v(j)[d], s));
            *o = sum * inv[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Lcg;

    /// erf in f64 by its Taylor series (exact enough on [-5, 5] for a 1e-7 check).
    fn erf64(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_exp_are_accurate() {
        // (The series loses digits past |x| = 4, where erf is ±1 in f32 anyway.)
        for i in -4000..=4000 {
            let x = i as f32 / 1000.0;
            let want = erf64(x as f64);
            assert!(
                (erf(x) as f64 - want).abs() < 5e-7,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
        }
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got} vs {want}"
            );
        }
        assert_eq!((erf(4.5), erf(-1e9)), (1.0, -1.0));
        assert!(exp(-1000.0).is_finite() && exp(-1000.0) < 1e-37);
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_erf(-3.0) + 0.004_049_8).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(gelu_tanh(-100.0), 0.0);
        assert_eq!(gelu_tanh(100.0), 100.0);
    }

    /// The packed `f32` multiplication (every tile height, a partial last panel, several
    /// threads) against a naive one, bias and residual included.
    #[test]
    fn matmul_matches_naive() {
        let mut rng = Lcg(3);
        for &(n, k, tokens, threads) in &[
            (16, 8, 1, 1),
            (40, 33, 7, 2),
            (96, 64, 13, 3),
            (1152, 384, 20, 2),
        ] {
            let w: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
            let x: Vec<f32> = (0..tokens * k).map(|_| rng.next()).collect();
            let res: Vec<f32> = (0..tokens * n).map(|_| rng.next()).collect();
            let pool = ComputePool::new(threads);
            for format in [WeightFormat::F32, WeightFormat::Q8_0, WeightFormat::Int16] {
                let lin = Linear::new(&w, bias.clone(), n, k, format);
                let mut out = Vec::new();
                let mut acts = Acts::default();
                matmul(
                    &pool,
                    &lin,
                    &x,
                    tokens,
                    Some(&res),
                    Act::None,
                    &mut acts,
                    &mut out,
                );
                for t in 0..tokens {
                    for r in 0..n {
                        let want: f32 = (0..k).map(|c| w[r * k + c] * x[t * k + c]).sum::<f32>()
                            + bias[r]
                            + res[t * n + r];
                        // Q8_0: the quantization errors of both factors, ~1% of the magnitudes;
                        // int16: the weights' (per column, up to half of max|W[r]|/2047).
                        let scale: f32 = (0..k)
                            .map(|c| (w[r * k + c] * x[t * k + c]).abs())
                            .sum::<f32>();
                        let tol = match lin.format() {
                            WeightFormat::F32 => 1e-5 * (scale + 1.0),
                            WeightFormat::Q8_0 => 0.005 * scale,
                            WeightFormat::Int16 => {
                                let wmax = (0..k).fold(0f32, |a, c| a.max(w[r * k + c].abs()));
                                let xsum: f32 = (0..k).map(|c| x[t * k + c].abs()).sum();
                                wmax / 250.0 * xsum + 1e-4 * (scale + 1.0)
                            }
                        };
                        let got = out[t * n + r];
                        assert!(
                            (got - want).abs() <= tol,
                            "{format} {n}x{k}x{tokens} t{t} r{r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Attention per sequence against a naive softmax(q·kᵀ/√d)·v.
    #[test]
    fn attention_matches_naive() {
        let mut rng = Lcg(9);
        // Head sizes with and without remainders past whole 16- and 8-lane blocks.
        for (heads, hd) in [(3, 8), (2, 13), (2, 21), (1, 32)] {
            check_attention(&mut rng, heads, hd);
        }
    }

    fn check_attention(rng: &mut Lcg, heads: usize, hd: usize) {
        let h = heads * hd;
        let spans = [(0, 5), (5, 1), (6, 9)];
        let tokens = 15;
        let qkv: Vec<f32> = (0..tokens * 3 * h).map(|_| rng.next() * 2.0).collect();
        let mut ctx = vec![0f32; tokens * h];
        attention(&ComputePool::new(2), heads, hd, &qkv, &spans, &mut ctx);
        for &(start, len) in &spans {
            for head in 0..heads {
                for i in 0..len {
                    let q = &qkv[(start + i) * 3 * h + head * hd..][..hd];
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            let k = &qkv[(start + j) * 3 * h + h + head * hd..][..hd];
                            q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = (0..len)
                            .map(|j| {
                                e[j] / sum * qkv[(start + j) * 3 * h + 2 * h + head * hd + d] as f64
                            })
                            .sum();
                        let got = ctx[(start + i) * h + head * hd + d] as f64;
                        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn weight_formats_parse() {
        assert_eq!("F32".parse::<WeightFormat>(), Ok(WeightFormat::F32));
        assert_eq!("q8_0".parse::<WeightFormat>(), Ok(WeightFormat::Q8_0));
        assert_eq!("q8".parse::<WeightFormat>(), Ok(WeightFormat::Q8_0));
        assert!("q4".parse::<WeightFormat>().is_err());
        assert_eq!(WeightFormat::Q8_0.to_string(), "q8_0");
        assert_eq!("Int16".parse::<WeightFormat>(), Ok(WeightFormat::Int16));
        assert_eq!("i16".parse::<WeightFormat>(), Ok(WeightFormat::Int16));
        assert!("int8".parse::<WeightFormat>().is_err());
        assert_eq!(WeightFormat::Int16.to_string(), "int16");
    }
}
#[cfg(test)]
mod zz_tmp {
    use super::*;
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
    }
    fn cpu() -> f64 {
        let mut t = Timespec { sec: 0, nsec: 0 };
        unsafe { clock_gettime(2, &mut t) };
        t.sec as f64 * 1e3 + t.nsec as f64 / 1e6
    }
    #[test]
    #[ignore]
    fn zz_kernel_speed() {
        let mut rng = crate::fixtures::Lcg(1);
        let pool = ComputePool::new(1);
        for &(n, k, t) in &[
            (1536usize, 384usize, 224usize),
            (384, 1536, 224),
            (1152, 384, 11),
            (1536, 384, 11),
        ] {
            let w: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
            let x: Vec<f32> = (0..t * k).map(|_| rng.next()).collect();
            for fmt in [WeightFormat::F32, WeightFormat::Q8_0, WeightFormat::Int16] {
                let lin = Linear::new(&w, vec![0.0; n], n, k, fmt);
                let mut out = Vec::new();
                let mut acts = Acts::default();
                for _ in 0..3 {
                    matmul(&pool, &lin, &x, t, None, Act::None, &mut acts, &mut out);
                }
                let iters = 20;
                let c0 = cpu();
                for _ in 0..iters {
                    matmul(&pool, &lin, &x, t, None, Act::None, &mut acts, &mut out);
                }
                let ms = (cpu() - c0) / iters as f64;
                let gmac = (n * k * t) as f64 / 1e9;
                println!(
                    "{fmt} n{n} k{k} t{t}: {ms:.3} ms cpu, {:.1} GMAC/s",
                    gmac / (ms / 1e3)
                );
            }
        }
        // FMA peak probe: 12 independent chains.
        let c0 = cpu();
        let mut acc = [1.0f32; 96];
        for i in 0..20_000_000u32 {
            let a = (i & 7) as f32 * 1e-9;
            for v in acc.iter_mut() {
                *v = v.mul_add(0.999_999, a);
            }
        }
        let ms = cpu() - c0;
        println!(
            "fma probe: {:.1} GFMA/s ({})",
            20_000_000.0 * 96.0 / (ms / 1e3) / 1e9,
            acc.iter().sum::<f32>()
        );
    }
}
