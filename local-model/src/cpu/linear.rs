//! Linear layers on the CPU, `y = act(x · Wᵀ + b [+ residual])`, for [`crate::fast_bert`]:
//! the weight formats ([`WeightFormat`]), their packing at load time and the parallel,
//! tiled matrix multiplication ([`matmul`]) with its `f32` AVX2/FMA micro-kernel; the
//! `q8_0` and `int16` formats run on [`super::kernels`] and `int_gemm`.
//!
//! The `f32` weights are packed once, at load time, into 64-byte aligned panels of 16 output
//! columns ([`NR`]), so the multiplication streams each weight once per tile of [`MR`] tokens
//! with a micro-kernel holding 6 tokens × 16 columns of `f32` accumulators in registers that
//! also prefetches the next panel; bias and residual are added as a tile is stored, the
//! activation right after, while the values are in the cache. Each output value is computed
//! by the same sequence of operations whatever the number of tokens or threads.

use super::int_gemm::{self, Dst, IntActs, IntMatrix};
use super::kernels::{detected_isa, matmul_rows, Isa, QActs, QMatrix, QK};
use super::math::{gelu_erf, gelu_tanh};
use super::threads::{ComputePool, SyncPtr};

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
    /// whole input and dequantized once per output (see the `int_gemm` kernels).
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
pub(crate) struct Linear {
    n: usize,
    k: usize,
    bias: Vec<f32>,
    w: Weights,
}

impl Linear {
    /// `w` is `n × k`, row-major (the PyTorch layout).
    ///
    /// # Panics
    /// If `w` does not hold `n × k` values or `bias` `n`.
    pub(crate) fn new(w: &[f32], bias: Vec<f32>, n: usize, k: usize, format: WeightFormat) -> Self {
        assert!(
            w.len() == n * k && bias.len() == n,
            "a {n}x{k} linear layer with {} weights and {} biases",
            w.len(),
            bias.len()
        );
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
    pub(crate) fn format(&self) -> WeightFormat {
        match self.w {
            Weights::F32(_) => WeightFormat::F32,
            Weights::Q8(_) => WeightFormat::Q8_0,
            Weights::Int16(_) => WeightFormat::Int16,
        }
    }

    /// Bytes of weight data held.
    pub(crate) fn weight_bytes(&self) -> usize {
        match &self.w {
            Weights::F32(_) => 4 * self.n * self.k,
            Weights::Q8(q) => q.size_in_bytes(),
            Weights::Int16(q) => q.size_in_bytes(),
        }
    }
}

/// The activation [`matmul`] applies to its results (BERT's intermediate layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    None,
    Gelu,
    GeluTanh,
    Relu,
}

/// Quantized copies of a matrix multiplication's input.
#[derive(Default)]
pub(crate) struct Acts {
    q8: QActs,
    int: IntActs,
}

/// `out = act(x · Wᵀ + b [+ residual])` for `tokens` rows of `x`, in chunks of output columns
/// (and of token rows, for long inputs) shared out over the pool's threads.
///
/// # Panics
/// If `x` does not hold `tokens × k` values (`k` the layer's input size), or `residual`
/// `tokens × n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
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
    // What the kernels below rely on: `x` holds the `tokens` rows read, the residual (if any)
    // and `out` the `tokens` rows written; the bias holds `n` values (`Linear::new`).
    assert_eq!(x.len(), tokens * k, "input size");
    if let Some(r) = residual {
        assert_eq!(r.len(), tokens * n, "residual size");
    }
    out.resize(tokens * n, 0.0);
    let optr = SyncPtr(out.as_mut_ptr());
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
                        );
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
    optr: SyncPtr<f32>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Lcg;

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

/// CPU time of [`matmul`] per weight format on BERT-sized shapes, and an FMA peak probe:
/// `cargo test -p slmgate-local-model --lib zz_kernel_speed -- --ignored --nocapture`.
#[cfg(test)]
mod kernel_speed {
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
        // SAFETY: `clock_gettime` writes one `timespec` through a valid pointer
        // (clock 2: CLOCK_PROCESS_CPUTIME_ID on Linux).
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
            for v in &mut acc {
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
