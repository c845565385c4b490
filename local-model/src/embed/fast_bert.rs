//! A direct CPU forward pass for BERT sentence encoders (all-MiniLM-L6-v2 and the like).
//!
//! candle's `BertModel` builds a graph of tensor ops per layer; for a 6-layer, 384-wide encoder
//! and a query of ten tokens the per-op overhead (dispatch, allocation, transposes, padding
//! masks, weight repacking inside the gemm) costs more than the arithmetic. This module runs the
//! same model as straight-line code over pre-allocated buffers, like [`crate::fast_llama`] does
//! for llama (the linear layers, their SIMD kernels and the splitting of each parallel
//! section's output between threads are the crate's `cpu` layer, where all its `unsafe` code
//! is; this module holds the model and safe code only):
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
//! runs them as integer matrix multiplications instead (`int_gemm`: 12-bit weights
//! per output column × 16-bit activations per token, exact `i32` sums over the whole input).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};

use crate::cpu::linear::{matmul, Act, Acts, Linear};
use crate::cpu::math::exp;
use crate::cpu::threads::ComputePool;

pub use crate::cpu::linear::WeightFormat;

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
    pool.run_dynamic_chunks(x, ROWS * h, |_, rows| {
        for row in rows.chunks_exact_mut(h) {
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
    // One chunk per (sequence, head): its tile of `ctx` is the sequence's rows × the head's
    // `hd` columns.
    pool.run_dynamic_tiles(ctx, h, hd, spans, |s, head, mut out| {
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
            match rows {
                4 => context_block(probs, lp, len, inv, v, out.rows_mut::<4>(q0)),
                3 => context_block(probs, lp, len, inv, v, out.rows_mut::<3>(q0)),
                2 => context_block(probs, lp, len, inv, v, out.rows_mut::<2>(q0)),
                _ => context_block(probs, lp, len, inv, v, out.rows_mut::<1>(q0)),
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

/// `outs[r][d] = inv[r] · Σ_j probs[r·lp + j] · v(j)[d]` for `Q` queries over `len` keys,
/// sixteen dimensions × `Q` queries at a time (eight independent chains of fused
/// multiply-adds), then eight, then one.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `j` indexes the `Q` probability rows and `v` at once
fn context_block<'a, const Q: usize>(
    probs: &[f32],
    lp: usize,
    len: usize,
    inv: &[f32],
    v: impl Fn(usize) -> &'a [f32],
    outs: [&mut [f32]; Q],
) {
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
}
