//! A direct CPU forward pass for `llama`-architecture GGUF models (SmolLM2, TinyLlama, Llama).
//!
//! candle's `quantized_llama` builds a graph of tensor ops per layer; for a 135M-parameter model
//! the per-op overhead (dispatch, allocation, thread-pool wake-ups, the KV-cache `cat`, the
//! logits of every prompt position, dequantizing matmuls during prefill) costs more than the
//! arithmetic. This module runs the same model as straight-line code over pre-allocated
//! buffers:
//!
//! - matrices use the SIMD kernels of [`crate::kernels`] (Q8_0 and Q4_1, the default model's
//!   own format, so `quantize: keep` runs the file's weights as they are); q/k/v and gate/up
//!   share one quantized input and one parallel section each;
//! - a prefill multiplies all prompt tokens at once, streaming every weight block once for
//!   four tokens at a time;
//! - the KV cache grows in place (amortized), and only the last position gets logits;
//! - work is split over a [`ComputePool`] whose threads spin between sections.
//!
//! The numerics follow llama.cpp's CPU path (activations quantized to 8 bits per 32-value
//! block, `f16` block scales, the same RoPE and RMSNorm formulas, an `f16` KV cache), so greedy
//! decoding gives the same tokens as llama.cpp on the same file.
//!
//! [`LlamaWeights::load`] refuses (with the reason) what it does not cover — other block types
//! with `quantize: keep`, mixture-of-experts, RoPE scaling, rows not a multiple of 32 — and the
//! caller then uses candle's implementation.

use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::gguf_tokenizer::md_u32;
use super::quantize::Quantize;
use crate::cpu::kernels::{matmul_concat, QActs, QFormat, QMatrix};
use crate::cpu::threads::ComputePool;

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Hidden size.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Per-head size.
    pub head_dim: usize,
    /// Feed-forward hidden size.
    pub ff: usize,
    /// Output rows (vocabulary).
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dims: usize,
}

struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// `[attn_q, attn_k, attn_v]`.
    qkv: [QMatrix; 3],
    wo: QMatrix,
    /// `[ffn_gate, ffn_up]`.
    gate_up: [QMatrix; 2],
    down: QMatrix,
}

/// The weights of a llama model, shared by every [`LlamaState`].
pub struct LlamaWeights {
    cfg: LlamaConfig,
    embed: QMatrix,
    /// `output.weight`, or `None` when tied to the embeddings.
    output: Option<QMatrix>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for LlamaWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaWeights")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn md_f32(md: &std::collections::HashMap<String, Value>, key: &str) -> Option<f32> {
    match md.get(key)? {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        other => other.to_u32().ok().map(|x| x as f32),
    }
}

impl LlamaWeights {
    /// Reads a llama model from `content` (the GGUF header) and `file`, converting matrices as
    /// `quantize` asks: [`Quantize::Keep`] keeps Q8_0 and Q4_1 matrices and refuses others;
    /// [`Quantize::Q8_0`] keeps Q8_0 and requantizes the rest. [`Quantize::Q4K`] is not served
    /// here.
    ///
    /// The error says why this model cannot run here (the caller falls back to candle).
    pub fn load<R: std::io::Read + std::io::Seek>(
        content: &Content,
        reader: &mut R,
        quantize: Quantize,
    ) -> Result<Self, String> {
        if quantize == Quantize::Q4K {
            return Err("quantize: q4k uses candle's Q4K kernels".into());
        }
        let md = &content.metadata;
        let need = |k: &str| {
            md_u32(md, &format!("llama.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| format!("metadata llama.{k} is missing"))
        };
        let dim = need("embedding_length")?;
        let layers = need("block_count")?;
        let heads = need("attention.head_count")?;
        let kv_heads = md_u32(md, "llama.attention.head_count_kv")
            .map(|v| v as usize)
            .unwrap_or(heads);
        let ff = need("feed_forward_length")?;
        if md_u32(md, "llama.expert_count").unwrap_or(0) > 1 {
            return Err("mixture-of-experts models are not supported".into());
        }
        if let Some(kind) = md.get("llama.rope.scaling.type") {
            if kind.to_string().map(|s| s != "none").unwrap_or(true) {
                return Err("RoPE scaling is not supported".into());
            }
        }
        if content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err("RoPE frequency factors are not supported".into());
        }
        if heads == 0
            || kv_heads == 0
            || !dim.is_multiple_of(heads)
            || !heads.is_multiple_of(kv_heads)
        {
            return Err(format!(
                "bad head counts {heads}/{kv_heads} for width {dim}"
            ));
        }
        let head_dim = dim / heads;
        let rope_dims = md_u32(md, "llama.rope.dimension_count")
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(format!("bad RoPE dimension count {rope_dims}"));
        }
        let eps = md_f32(md, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
        let rope_base = md_f32(md, "llama.rope.freq_base").unwrap_or(10_000.0);

        let mut load = |name: &str| -> Result<candle_core::quantized::QTensor, String> {
            content
                .tensor(reader, name, &Device::Cpu)
                .map_err(|e| format!("tensor {name}: {e}"))
        };
        let mut vector = |name: &str, len: usize| -> Result<Vec<f32>, String> {
            let t = load(name)?;
            let v = t
                .dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("tensor {name}: {e}"))?;
            if v.len() != len {
                return Err(format!("tensor {name}: {} values, expected {len}", v.len()));
            }
            Ok(v)
        };
        let output_norm = vector("output_norm.weight", dim)?;
        let mut norms = Vec::with_capacity(layers);
        for l in 0..layers {
            norms.push((
                vector(&format!("blk.{l}.attn_norm.weight"), dim)?,
                vector(&format!("blk.{l}.ffn_norm.weight"), dim)?,
            ));
        }
        let mut matrix = |name: &str, rows: Option<usize>, cols: usize| {
            let t = load(name)?;
            let dims = t.shape().dims().to_vec();
            let bad = || format!("tensor {name}: shape {dims:?}, expected [{rows:?}, {cols}]");
            let [r, c] = dims[..] else {
                return Err(bad());
            };
            if c != cols || rows.is_some_and(|rows| rows != r) {
                return Err(bad());
            }
            let raw = |fmt| {
                t.data()
                    .map_err(|e| format!("tensor {name}: {e}"))
                    .and_then(|b| QMatrix::from_ggml(fmt, r, c, &b))
            };
            match (t.dtype(), quantize) {
                (GgmlDType::Q8_0, _) => raw(QFormat::Q8_0),
                (GgmlDType::Q4_1, Quantize::Keep) => raw(QFormat::Q4_1),
                (other, Quantize::Keep) => Err(format!(
                    "tensor {name} is {other:?}; quantize: keep runs Q8_0 and Q4_1 only"
                )),
                _ => {
                    let v = t
                        .dequantize(&Device::Cpu)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(|e| format!("tensor {name}: {e}"))?;
                    QMatrix::quantize_q8_0(r, c, &v)
                }
            }
            .map_err(|e| format!("tensor {name}: {e}"))
        };
        let embed = matrix("token_embd.weight", None, dim)?;
        let vocab = embed.rows();
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(matrix("output.weight", Some(vocab), dim)?)
        } else {
            None
        };
        let kv_dim = kv_heads * head_dim;
        let mut blocks = Vec::with_capacity(layers);
        for (l, (attn_norm, ffn_norm)) in norms.into_iter().enumerate() {
            let p = format!("blk.{l}");
            blocks.push(Layer {
                attn_norm,
                ffn_norm,
                qkv: [
                    matrix(&format!("{p}.attn_q.weight"), Some(dim), dim)?,
                    matrix(&format!("{p}.attn_k.weight"), Some(kv_dim), dim)?,
                    matrix(&format!("{p}.attn_v.weight"), Some(kv_dim), dim)?,
                ],
                wo: matrix(&format!("{p}.attn_output.weight"), Some(dim), dim)?,
                gate_up: [
                    matrix(&format!("{p}.ffn_gate.weight"), Some(ff), dim)?,
                    matrix(&format!("{p}.ffn_up.weight"), Some(ff), dim)?,
                ],
                down: matrix(&format!("{p}.ffn_down.weight"), Some(dim), ff)?,
            });
        }
        Ok(Self {
            cfg: LlamaConfig {
                dim,
                layers,
                heads,
                kv_heads,
                head_dim,
                ff,
                vocab,
                eps,
                rope_base,
                rope_dims,
            },
            embed,
            output,
            output_norm,
            layers: blocks,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The in-memory formats of the matrices (for logs and benchmarks), e.g. `["Q4_1", "Q8_0"]`.
    pub fn formats(&self) -> Vec<QFormat> {
        let mut v: Vec<QFormat> = self
            .layers
            .iter()
            .flat_map(|l| {
                l.qkv
                    .iter()
                    .chain(&l.gate_up)
                    .chain([&l.wo, &l.down])
                    .map(QMatrix::format)
            })
            .chain(std::iter::once(self.embed.format()))
            .collect();
        v.sort_by_key(|f| *f as u8);
        v.dedup();
        v
    }
}

/// One sequence on a [`LlamaWeights`]: the KV cache, scratch buffers and compute threads.
pub struct LlamaState {
    w: Arc<LlamaWeights>,
    pool: ComputePool,
    /// Per layer, `[position][kv_heads · head_dim]`, values rounded to `f16` like llama.cpp's
    /// cache.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    bufs: Buffers,
}

impl std::fmt::Debug for LlamaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaState")
            .field("len", &self.len)
            .field("threads", &self.pool.threads())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    gu: Vec<f32>,
    h: Vec<f32>,
    acts: QActs,
    logits: Vec<f32>,
}

/// Errors of [`LlamaState::forward`].
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No tokens were given.
    #[error("forward pass with no tokens")]
    Empty,
    /// A token id is outside the vocabulary.
    #[error("token id {0} is outside the vocabulary ({1} tokens)")]
    BadToken(u32, usize),
    /// The position does not continue the cached sequence.
    #[error("position {pos} does not continue the cached sequence of {len} tokens")]
    BadPosition {
        /// The requested position.
        pos: usize,
        /// Tokens in the cache.
        len: usize,
    },
}

fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `out = x / rms(x) · weight`, one row of `weight.len()` values at a time (llama.cpp sums the
/// squares in `f64`).
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.resize(x.len(), 0.0);
    let n = weight.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let scale = 1.0 / ((sum / n as f64) as f32 + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Rotates pairs `(2i, 2i+1)` of the first `dims` values of every head in `x` by
/// `pos · base^(−2i/dims)` (GGML's "normal" RoPE, angles computed the same way).
fn rope(x: &mut [f32], head_dim: usize, dims: usize, pos: usize, base: f32) {
    let theta_scale = base.powf(-2.0 / dims as f32);
    let mut cs = [(0f32, 0f32); 256];
    let mut theta = pos as f32;
    for c in cs.iter_mut().take(dims / 2) {
        *c = (theta.cos(), theta.sin());
        theta *= theta_scale;
    }
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(cos, sin)) in cs.iter().enumerate().take(dims / 2) {
            let (x0, x1) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = x0 * cos - x1 * sin;
            head[2 * i + 1] = x0 * sin + x1 * cos;
        }
    }
}

/// Dot product with eight independent lanes (vectorizes without reassociating).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl LlamaState {
    /// A state with an empty cache and `threads` compute threads.
    pub fn new(w: Arc<LlamaWeights>, threads: usize) -> Self {
        let layers = w.cfg.layers;
        Self {
            w,
            pool: ComputePool::new(threads),
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            len: 0,
            bufs: Buffers::default(),
        }
    }

    /// Tokens in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the KV cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the KV cache (keeps its memory).
    pub fn clear(&mut self) {
        self.len = 0;
        for c in self.k.iter_mut().chain(self.v.iter_mut()) {
            c.clear();
        }
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` and returns the logits of the last
    /// one. `pos` must be 0 (a new sequence) or at most the number of cached tokens (the cache is
    /// cut back to `pos`).
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<&[f32], ForwardError> {
        let nt = self.run_layers(tokens, pos)?;
        let (w, b) = (&*self.w, &mut self.bufs);
        let dim = w.cfg.dim;
        // Logits of the last position only.
        rms_norm(&b.x[(nt - 1) * dim..], &w.output_norm, w.cfg.eps, &mut b.xn);
        b.acts.quantize(&b.xn, dim);
        let out = w.output.as_ref().unwrap_or(&w.embed);
        matmul_concat(&self.pool, &[out], &b.acts, &mut b.logits);
        Ok(&b.logits)
    }

    /// Like [`forward`](Self::forward), but returns the logits of every position
    /// (`tokens.len() × vocab`, row-major): what scoring a text under the model needs (the
    /// log-probability of each token given the ones before it). Afterwards
    /// [`hidden`](Self::hidden) holds the final normalised hidden state of every position.
    pub fn forward_all(&mut self, tokens: &[u32], pos: usize) -> Result<&[f32], ForwardError> {
        self.run_layers(tokens, pos)?;
        let (w, b) = (&*self.w, &mut self.bufs);
        rms_norm(&b.x, &w.output_norm, w.cfg.eps, &mut b.xn);
        b.acts.quantize(&b.xn, w.cfg.dim);
        let out = w.output.as_ref().unwrap_or(&w.embed);
        matmul_concat(&self.pool, &[out], &b.acts, &mut b.logits);
        Ok(&b.logits)
    }

    /// The final normalised hidden states (`tokens × dim`) of the last
    /// [`forward_all`](Self::forward_all) (after [`forward`](Self::forward): the last row only).
    pub fn hidden(&self) -> &[f32] {
        &self.bufs.xn
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.w.cfg.dim
    }

    /// The transformer layers on `tokens` at `pos..`: leaves the residual stream of every
    /// position in `bufs.x` and returns the number of tokens.
    fn run_layers(&mut self, tokens: &[u32], pos: usize) -> Result<usize, ForwardError> {
        let w = &*self.w;
        let cfg = &w.cfg;
        if tokens.is_empty() {
            return Err(ForwardError::Empty);
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(ForwardError::BadToken(bad, cfg.vocab));
        }
        if pos > self.len {
            return Err(ForwardError::BadPosition { pos, len: self.len });
        }
        let kv_dim = cfg.kv_heads * cfg.head_dim;
        for c in self.k.iter_mut().chain(self.v.iter_mut()) {
            c.truncate(pos * kv_dim);
        }
        self.len = pos;
        let nt = tokens.len();
        let (dim, hd, ff) = (cfg.dim, cfg.head_dim, cfg.ff);
        let qkv_width = dim + 2 * kv_dim;
        let b = &mut self.bufs;
        let pool = &self.pool;

        b.x.resize(nt * dim, 0.0);
        for (row, &t) in b.x.chunks_exact_mut(dim).zip(tokens) {
            w.embed.dequantize_row(t as usize, row);
        }
        for (l, layer) in w.layers.iter().enumerate() {
            // Attention.
            rms_norm(&b.x, &layer.attn_norm, cfg.eps, &mut b.xn);
            b.acts.quantize(&b.xn, dim);
            let [q, k, v] = &layer.qkv;
            matmul_concat(pool, &[q, k, v], &b.acts, &mut b.qkv);
            let (kc, vc) = (&mut self.k[l], &mut self.v[l]);
            for (i, row) in b.qkv.chunks_exact_mut(qkv_width).enumerate() {
                let (qs, rest) = row.split_at_mut(dim);
                let (ks, vs) = rest.split_at_mut(kv_dim);
                rope(qs, hd, cfg.rope_dims, pos + i, cfg.rope_base);
                rope(ks, hd, cfg.rope_dims, pos + i, cfg.rope_base);
                kc.extend(ks.iter().map(|&x| round_f16(x)));
                vc.extend(vs.iter().map(|&x| round_f16(x)));
            }
            b.attn.resize(nt * dim, 0.0);
            Self::attention(pool, cfg, pos, &b.qkv, kc, vc, &mut b.attn);
            b.acts.quantize(&b.attn, dim);
            matmul_concat(pool, &[&layer.wo], &b.acts, &mut b.tmp);
            for (x, y) in b.x.iter_mut().zip(&b.tmp) {
                *x += y;
            }
            // Feed-forward.
            rms_norm(&b.x, &layer.ffn_norm, cfg.eps, &mut b.xn);
            b.acts.quantize(&b.xn, dim);
            let [gate, up] = &layer.gate_up;
            matmul_concat(pool, &[gate, up], &b.acts, &mut b.gu);
            b.h.resize(nt * ff, 0.0);
            for (h, gu) in b.h.chunks_exact_mut(ff).zip(b.gu.chunks_exact(2 * ff)) {
                let (g, u) = gu.split_at(ff);
                for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
                    *h = g / (1.0 + (-g).exp()) * u;
                }
            }
            b.acts.quantize(&b.h, ff);
            matmul_concat(pool, &[&layer.down], &b.acts, &mut b.tmp);
            for (x, y) in b.x.iter_mut().zip(&b.tmp) {
                *x += y;
            }
        }
        self.len = pos + nt;
        Ok(nt)
    }

    /// Causal attention of the `qkv` rows (queries at `pos..`) over the cache, into `out`.
    fn attention(
        pool: &ComputePool,
        cfg: &LlamaConfig,
        pos: usize,
        qkv: &[f32],
        kc: &[f32],
        vc: &[f32],
        out: &mut [f32],
    ) {
        let (dim, hd) = (cfg.dim, cfg.head_dim);
        let kv_dim = cfg.kv_heads * hd;
        let qkv_width = dim + 2 * kv_dim;
        let group = cfg.heads / cfg.kv_heads;
        let nt = qkv.len() / qkv_width;
        let scale = 1.0 / (hd as f32).sqrt();
        // One unit per (token, head): unit `t·heads + h` writes `out[t][h·hd..(h+1)·hd]`, the
        // `hd`-value chunk number `t·heads + h` of `out` (`dim = heads·hd`). Interleaved units
        // balance the causal (growing) cost of later tokens.
        pool.run_interleaved(
            out,
            hd,
            || (Vec::with_capacity(pos + nt), vec![0f32; hd]),
            |(scores, q16): &mut (Vec<f32>, Vec<f32>), u, o| {
                let (t, h) = (u / cfg.heads, u % cfg.heads);
                let ctx = pos + t + 1;
                let kvh = h / group;
                // llama.cpp multiplies an f16 cache by the query converted to f16.
                let q = &qkv[t * qkv_width + h * hd..][..hd];
                for (d, &s) in q16.iter_mut().zip(q) {
                    *d = round_f16(s);
                }
                scores.clear();
                scores
                    .extend((0..ctx).map(|j| dot(q16, &kc[j * kv_dim + kvh * hd..][..hd]) * scale));
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f64;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s as f64;
                }
                let inv = (1.0 / sum) as f32;
                o.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let p = round_f16(p * inv);
                    let vrow = &vc[j * kv_dim + kvh * hd..][..hd];
                    for (o, &v) in o.iter_mut().zip(vrow) {
                        *o += p * v;
                    }
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_pairs() {
        let mut x = vec![1.0, 0.0, 0.0, 1.0];
        rope(&mut x, 4, 4, 1, 10_000.0);
        // Pair 0 turns by 1 radian, pair 1 by 1/100.
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        assert!((x[2] + 0.01f32.sin()).abs() < 1e-6 && (x[3] - 0.01f32.cos()).abs() < 1e-6);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..67).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..67).map(|i| 1.0 - i as f32 * 0.01).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
