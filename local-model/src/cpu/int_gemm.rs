//! Integer matrix multiplication for [`crate::fast_bert`]'s `int16` weight format: weights
//! quantized to 12-bit integers (one scale per output column, held as `i16`) × activations
//! quantized to 16-bit integers (one scale per token row, computed per multiplication), summed
//! exactly over the **whole** input dimension in `i32` and dequantized once per output value:
//! `out[t][n] = acc[t][n] · s_x[t] · s_w[n] + bias[n]`.
//!
//! The AVX2 kernel is `vpmaddwd`: two `i16 × i16` products summed into each of eight `i32`
//! lanes, 16 multiply-adds per instruction where an `f32` FMA does 8 (without VNNI the sum
//! goes to the accumulator with a separate `vpaddd`, so the gain over the `f32` kernel is
//! ~1.4–1.7×, not 2×). Where the CPU has AVX-512 VNNI, `vpdpwssd` fuses the two on 512-bit
//! vectors (see `vnni`; ~2× the `f32` kernel). Nothing can overflow: a column's `Σ|q_w|` is
//! known at load time, and the activations are quantized to at most [`IntMatrix::act_max`] =
//! `(2³¹ − 1) / max Σ|q_w|` (capped at `i16::MAX`), so every sum is exact.
//!
//! Why 12-bit weights and not 8: with one scale per output column (the whole-`K` `i32` sum
//! needs one scale per column, not per block) 8-bit weights lose too much on MiniLM (min
//! cosine 0.9965 to the exact embeddings, worse than Q8_0's 32-value blocks), while `i16`
//! operands cost the same whatever their range; the balance between the weights' bits and
//! the activations' range is measured at [`WMAX`]. (`vpmaddubsw`, `u8 × i8` pairs, would need
//! 7-bit activations to stay clear of its `i16` saturation, which BERT's outlier dimensions
//! do not survive.)
//!
//! Weights are packed like the `f32` ones: panels of [`NR`] output columns, one 64-byte row
//! per pair of inputs (`w[j][2i], w[j][2i+1]` for each column `j`), so a tile of [`MR`] tokens
//! × 16 columns holds 12 `i32` accumulators in registers and streams each panel once per
//! tile (half the bytes of the `f32` panels). The scalar code computes the same integer sums
//! and the same fused final multiply-add, so both paths give bit-identical results.

use crate::cpu::kernels::Isa;

/// Output columns per packed panel (two 8-lane registers of `i32` sums).
pub(crate) const NR: usize = 16;
/// Token rows per tile (12 accumulators + 2 weights + 1 broadcast + 1 product = 16 registers).
pub(crate) const MR: usize = 6;
/// Token rows per tile of the AVX-512 VNNI kernel: one 512-bit accumulator per row, and
/// AVX-512 has 32 vector registers, so 16 rows fit. Each weight row loaded then feeds 16
/// multiply-adds, and 16 independent sums keep two 512-bit units busy where 6 could not
/// (measurements on `vnni`).
pub(crate) const MR_VNNI: usize = 16;

/// The tallest tile [`tile`] takes for `isa`.
pub(crate) fn mr(isa: Isa) -> usize {
    if isa == Isa::Avx512Vnni {
        MR_VNNI
    } else {
        MR
    }
}

/// The largest quantized weight magnitude (12-bit symmetric). Measured on all-MiniLM-L6-v2
/// (min cosine to the exact embeddings over a varied text set): ±127 (8-bit) 0.9965, ±511
/// 0.99990, ±2047 0.999985, ±8191 0.99989 (the activations' range shrinks as the weights'
/// grows: see [`IntMatrix::act_max`]).
pub(crate) const WMAX: i32 = 2047;

/// One pair of inputs for [`NR`] columns: element `2j + e` is `W[col j][2i + e]`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct PairRow(pub(crate) [i16; 2 * NR]);

/// A weight matrix `n × k` quantized per output column and packed into panels.
pub(crate) struct IntMatrix {
    /// `k` rounded up to an even number, halved: rows per panel.
    pairs: usize,
    /// `panels × pairs` rows.
    panels: Vec<PairRow>,
    /// One scale per output column, zero-padded to whole panels.
    scales: Vec<f32>,
    /// The largest `Σ_c |q[r][c]|` over the columns `r`: bounds every sum with the
    /// activations.
    l1: i64,
}

impl IntMatrix {
    /// Quantizes `w` (`n × k`, row-major, the PyTorch layout): each output column `r` gets
    /// `s = max|W[r]| / WMAX` and `q = round(W[r] / s)`.
    pub(crate) fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        Self::quantize_to(w, n, k, WMAX)
    }

    /// [`IntMatrix::quantize`] to `±wmax` (at most `i16::MAX`).
    pub(crate) fn quantize_to(w: &[f32], n: usize, k: usize, wmax: i32) -> Self {
        debug_assert_eq!(w.len(), n * k);
        let wmax = wmax.clamp(1, i16::MAX as i32);
        let mut l1 = 0i64;
        let pairs = k.div_ceil(2);
        let np = n.div_ceil(NR);
        let mut scales = vec![0f32; np * NR];
        let mut panels = vec![PairRow([0; 2 * NR]); np * pairs];
        for (r, row) in w.chunks_exact(k).enumerate().take(n) {
            let amax = row.iter().fold(0f32, |a, x| a.max(x.abs()));
            let s = amax / wmax as f32;
            let inv = if amax > 0.0 { wmax as f32 / amax } else { 0.0 };
            let mut row_l1 = 0i64;
            scales[r] = s;
            let (p, j) = (r / NR, r % NR);
            for (c, &v) in row.iter().enumerate() {
                let q = (v * inv).round().clamp(-wmax as f32, wmax as f32) as i16;
                panels[p * pairs + c / 2].0[2 * j + c % 2] = q;
                row_l1 += (q as i64).abs();
            }
            l1 = l1.max(row_l1);
        }
        Self {
            pairs,
            panels,
            scales,
            l1,
        }
    }

    /// Panel rows (pairs of inputs).
    pub(crate) fn pairs(&self) -> usize {
        self.pairs
    }

    /// Panel `p`'s rows.
    pub(crate) fn panel(&self, p: usize) -> Option<&[PairRow]> {
        self.panels.get(p * self.pairs..(p + 1) * self.pairs)
    }

    /// The per-column scales of panel `p` ([`NR`] values).
    pub(crate) fn panel_scales(&self, p: usize) -> &[f32] {
        &self.scales[p * NR..(p + 1) * NR]
    }

    /// Bytes held (the `i16` panels and the scales).
    pub(crate) fn size_in_bytes(&self) -> usize {
        std::mem::size_of_val(self.panels.as_slice()) + 4 * self.scales.len()
    }

    /// The largest activation magnitude that keeps every `i32` sum exact: no column's
    /// `Σ|q_w| · act_max` exceeds `2³¹ − 1` (nor any `vpmaddwd` pair, `2 · i16::MAX²`);
    /// capped at `i16::MAX`.
    pub(crate) fn act_max(&self) -> i32 {
        (i32::MAX as i64 / self.l1.max(1)).min(i16::MAX as i64) as i32
    }
}

/// Token rows quantized to `i16`, one scale per row, ready for [`tile`].
#[derive(Debug, Default)]
pub(crate) struct IntActs {
    /// `tokens × 2·pairs` values (the odd padding input is zero).
    pub(crate) q: Vec<i16>,
    /// One scale per token.
    pub(crate) scales: Vec<f32>,
}

impl IntActs {
    /// Sizes the buffers for `tokens` rows of `pairs` input pairs.
    pub(crate) fn prepare(&mut self, tokens: usize, pairs: usize) {
        self.q.resize(tokens * 2 * pairs, 0);
        self.scales.resize(tokens, 0.0);
    }
}

/// Quantizes one row symmetrically to `±qmax` (`q = round_half_even(x · qmax / max|x|)`)
/// and returns its scale (`max|x| / qmax`; 0 for an all-zero row). `q` may be one longer
/// than `x` (an odd input size): that padding value is set to zero.
pub(crate) fn quantize_row(isa: Isa, x: &[f32], q: &mut [i16], qmax: i32) -> f32 {
    assert!(q.len() >= x.len());
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: AVX2 is available (any non-scalar `Isa` implies it); `q` is at least as
        // long as `x` (checked above).
        return unsafe { avx2::quantize_row(x, q, qmax) };
    }
    let _ = isa;
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let lim = qmax as f32;
    let inv = if amax > 0.0 { lim / amax } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * inv).round_ties_even().clamp(-lim, lim) as i16;
    }
    for q in q.iter_mut().skip(x.len()) {
        *q = 0;
    }
    amax / lim
}

/// Where a tile's results go: `out[r·ldo + j] = (acc[r][j] · (sx[r] · sw[j]) + bias[j]) +
/// res[r·ldr + j]` (no residual term when `res` is null).
#[derive(Clone, Copy)]
pub(crate) struct Dst {
    pub(crate) out: *mut f32,
    pub(crate) ldo: usize,
    pub(crate) bias: *const f32,
    pub(crate) res: *const f32,
    pub(crate) ldr: usize,
}

/// Multiplies `m` (1..=[`mr`]`(isa)`) quantized token rows of `x` (row stride `ldx` values,
/// `2·panel.len()` used per row, with scales `sx`) by one panel (column scales `sw`) and
/// stores the first `cols` (≤ NR) columns to `dst`, prefetching the `next` panel meanwhile.
///
/// # Safety
/// `dst.out` must be valid for writes, `dst.bias` for reads of `cols` values per row
/// (`dst.res` too unless null) for the `m` rows, and no other thread may access those
/// elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    isa: Isa,
    m: usize,
    x: &[i16],
    ldx: usize,
    sx: &[f32],
    panel: &[PairRow],
    next: Option<&[PairRow]>,
    sw: &[f32],
    cols: usize,
    dst: Dst,
) {
    let pairs = panel.len();
    assert!(
        (1..=mr(isa)).contains(&m)
            && cols <= NR
            && sw.len() >= NR
            && sx.len() >= m
            && ldx >= 2 * pairs
            && x.len() >= (m - 1) * ldx + 2 * pairs
    );
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && cols == NR {
        let (x, sx, sw) = (x.as_ptr(), sx.as_ptr(), sw.as_ptr());
        let np = next.map_or(std::ptr::null(), <[PairRow]>::as_ptr);
        // The instance of module `$isa`'s tile for these rows and prefetching.
        macro_rules! tile_of {
            ($isa:ident, $($m:literal)*) => {
                match (m, next.is_some()) {
                    $(($m, false) => $isa::tile::<$m, false>(x, ldx, sx, panel, np, sw, dst),)*
                    $(($m, true) => $isa::tile::<$m, true>(x, ldx, sx, panel, np, sw, dst),)*
                    _ => unreachable!("tile height {m} checked above"),
                }
            };
        }
        // SAFETY: `Isa::Avx512Vnni` means AVX-512 F/BW/VL + VNNI are available, and any
        // non-scalar `Isa` implies AVX2; `x`, `sx` and `sw` were checked above, `dst` is the
        // caller's contract.
        unsafe {
            if isa == Isa::Avx512Vnni {
                tile_of!(vnni, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
            } else {
                tile_of!(avx2, 1 2 3 4 5 6);
            }
        }
        return;
    }
    let _ = (isa, next);
    for r in 0..m {
        let mut acc = [0i32; NR];
        let xr = &x[r * ldx..r * ldx + 2 * pairs];
        for (row, a) in panel.iter().zip(xr.chunks_exact(2)) {
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc += a[0] as i32 * row.0[2 * j] as i32 + a[1] as i32 * row.0[2 * j + 1] as i32;
            }
        }
        for (j, &acc) in acc.iter().enumerate().take(cols) {
            // SAFETY: the caller's contract.
            unsafe {
                let mut v = (acc as f32).mul_add(sx[r] * sw[j], *dst.bias.add(j));
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
    use super::{Dst, PairRow, NR};
    use std::arch::x86_64::*;

    /// [`super::quantize_row`] with AVX2: the same results (`vcvtps2dq` rounds half to
    /// even, like `round_ties_even`).
    ///
    /// # Safety
    /// AVX2 must be available and `q.len() >= x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_row(x: &[f32], q: &mut [i16], qmax: i32) -> f32 {
        let n = x.len();
        let whole = n - n % 16;
        let xp = x.as_ptr();
        let qp = q.as_mut_ptr();
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let mut m0 = _mm256_setzero_ps();
        let mut m1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: every access is below `whole ≤ n` (or `n`, in the scalar tails).
        unsafe {
            while i < whole {
                m0 = _mm256_max_ps(m0, _mm256_and_ps(abs, _mm256_loadu_ps(xp.add(i))));
                m1 = _mm256_max_ps(m1, _mm256_and_ps(abs, _mm256_loadu_ps(xp.add(i + 8))));
                i += 16;
            }
        }
        let m = _mm256_max_ps(m0, m1);
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = x[whole..]
            .iter()
            .fold(_mm_cvtss_f32(m), |a, v| a.max(v.abs()));
        let lim = qmax as f32;
        let inv = if amax > 0.0 { lim / amax } else { 0.0 };
        let (vinv, hi, lo) = (
            _mm256_set1_ps(inv),
            _mm256_set1_ps(lim),
            _mm256_set1_ps(-lim),
        );
        let mut i = 0;
        // SAFETY: as above; `q` is at least `n` long.
        unsafe {
            while i < whole {
                let a = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), vinv);
                let b = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i + 8)), vinv);
                let a = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(a, lo), hi));
                let b = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(b, lo), hi));
                // `packs` interleaves the 128-bit halves: put them back in order.
                let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
                _mm256_storeu_si256(qp.add(i) as *mut __m256i, p);
                i += 16;
            }
        }
        for (q, &v) in q[whole..].iter_mut().zip(&x[whole..]) {
            *q = (v * inv).round_ties_even().clamp(-lim, lim) as i16;
        }
        for q in q.iter_mut().skip(n) {
            *q = 0;
        }
        amax / lim
    }

    /// `Σ_i x[r·ldx + 2i..2i+2] · panel[i][col j]` for `r < M`, `j < 16`, in `i32`, then
    /// dequantized and stored as [`Dst`] says. With `PREFETCH`, row `i` of the `next` panel
    /// is prefetched along with row `i` of this one.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `x` must be valid for reads of `2·panel.len()` values
    /// at each `r·ldx` (`r < M`), `sx` of `M` values, `sw` of 16; `dst` as for
    /// [`super::tile`] with 16 columns.
    // Not inlined: compiled on its own, the 6-row tile keeps its 12 accumulators, 2 weight
    // vectors, the broadcast and the product in the 16 registers; inlined into the caller's
    // loop, LLVM spilled an accumulator to the stack (a store-forwarding chain per step).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const M: usize, const PREFETCH: bool>(
        x: *const i16,
        ldx: usize,
        sx: *const f32,
        panel: &[PairRow],
        next: *const PairRow,
        sw: *const f32,
        dst: Dst,
    ) {
        let mut lo = [_mm256_setzero_si256(); M];
        let mut hi = [_mm256_setzero_si256(); M];
        let w = panel.as_ptr() as *const i16;
        for i in 0..panel.len() {
            // SAFETY: row `i` of the panel is 32 aligned `i16`; the `x` reads are in bounds by
            // the caller's contract; a prefetch is a hint that cannot fault.
            unsafe {
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i) as *const i8);
                }
                let w0 = _mm256_load_si256(w.add(i * 2 * NR) as *const __m256i);
                let w1 = _mm256_load_si256(w.add(i * 2 * NR + NR) as *const __m256i);
                for r in 0..M {
                    let pair = std::ptr::read_unaligned(x.add(r * ldx + 2 * i) as *const i32);
                    let a = _mm256_set1_epi32(pair);
                    lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(a, w0));
                    hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(a, w1));
                }
            }
        }
        // SAFETY: the caller's contract on `sx`, `sw` and `dst`.
        unsafe {
            let s0 = _mm256_loadu_ps(sw);
            let s1 = _mm256_loadu_ps(sw.add(8));
            let b0 = _mm256_loadu_ps(dst.bias);
            let b1 = _mm256_loadu_ps(dst.bias.add(8));
            for r in 0..M {
                let sr = _mm256_set1_ps(*sx.add(r));
                let mut v0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo[r]), _mm256_mul_ps(sr, s0), b0);
                let mut v1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi[r]), _mm256_mul_ps(sr, s1), b1);
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

/// The AVX-512 VNNI tile: `vpdpwssd` multiplies the `i16` pairs and adds both products to
/// the `i32` accumulator in one instruction (AVX2 needs `vpmaddwd` + `vpaddd`), and one
/// 512-bit register holds a row's 16 column sums, so a panel row is one load and each token
/// row one multiply-add with the pair broadcast from memory. The sums are the same exact
/// integers as the AVX2 and scalar paths (`vpdpwssd` wraps, and nothing can overflow: see
/// [`IntMatrix::act_max`]), and the dequantization is the same fused multiply-add, so all
/// three give identical bits. Measured one thread at a time with `cargo test --release -p
/// slmgate-local-model --lib zz_kernel_speed -- --ignored --nocapture`: on a 2-core AMD EPYC
/// VM (AVX-512), six-row tiles ran at ~111 G multiply-adds/s (the AVX2 tile ~87, the `f32`
/// tile ~55); on a 2-core Intel Xeon (Emerald Rapids) six rows gave 87–91 and
/// [`MR_VNNI`]` = 16` rows 150–169 (12 rows 138–150, 24 rows 144–164).
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Dst, PairRow};
    use std::arch::x86_64::*;

    /// [`super::avx2::tile`] with `vpdpwssd` on 512-bit vectors.
    ///
    /// # Safety
    /// AVX-512 F, BW, VL and VNNI must be available; otherwise as for
    /// [`super::avx2::tile`].
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn tile<const M: usize, const PREFETCH: bool>(
        x: *const i16,
        ldx: usize,
        sx: *const f32,
        panel: &[PairRow],
        next: *const PairRow,
        sw: *const f32,
        dst: Dst,
    ) {
        let mut acc = [_mm512_setzero_si512(); M];
        let w = panel.as_ptr() as *const __m512i;
        for i in 0..panel.len() {
            // SAFETY: row `i` of the panel is one aligned 64-byte `PairRow`; the `x` reads are
            // in bounds by the caller's contract; a prefetch is a hint that cannot fault.
            unsafe {
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i) as *const i8);
                }
                let wv = _mm512_load_si512(w.add(i));
                for (r, acc) in acc.iter_mut().enumerate() {
                    // `_mm512_dpwssd_epi32` would do, but LLVM splits it back into
                    // `vpmaddwd` + `vpaddd` unless it tunes for a CPU it knows has a fast
                    // `vpdpwssd` (seen in the release build: the tile then ran at the AVX2
                    // tile's speed).
                    std::arch::asm!(
                        "vpdpwssd {acc}, {w}, dword ptr [{p}]{{1to16}}",
                        acc = inout(zmm_reg) *acc,
                        w = in(zmm_reg) wv,
                        p = in(reg) x.add(r * ldx + 2 * i),
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
        }
        // SAFETY: the caller's contract on `sx`, `sw` and `dst`.
        unsafe {
            let s = _mm512_loadu_ps(sw);
            let b = _mm512_loadu_ps(dst.bias);
            for (r, acc) in acc.iter().enumerate() {
                let sr = _mm512_set1_ps(*sx.add(r));
                let mut v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*acc), _mm512_mul_ps(sr, s), b);
                if !dst.res.is_null() {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(dst.res.add(r * dst.ldr)));
                }
                _mm512_storeu_ps(dst.out.add(r * dst.ldo), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{detected_isa, isas};
    use crate::fixtures::Lcg;

    fn run(
        isa: Isa,
        w: &IntMatrix,
        n: usize,
        acts: &IntActs,
        tokens: usize,
        bias: &[f32],
    ) -> Vec<f32> {
        let ldx = 2 * w.pairs();
        let mut out = vec![f32::NAN; tokens * n];
        for p in 0..n.div_ceil(NR) {
            let Some(panel) = w.panel(p) else { break };
            let c0 = p * NR;
            let mut t = 0;
            while t < tokens {
                let m = (tokens - t).min(mr(isa));
                let dst = Dst {
                    out: out[t * n + c0..].as_mut_ptr(),
                    ldo: n,
                    bias: bias[c0..].as_ptr(),
                    res: std::ptr::null(),
                    ldr: n,
                };
                // SAFETY: rows `t..t + m`, columns `c0..c0 + cols` of `out` are in bounds.
                unsafe {
                    tile(
                        isa,
                        m,
                        &acts.q[t * ldx..],
                        ldx,
                        &acts.scales[t..],
                        panel,
                        w.panel(p + 1),
                        w.panel_scales(p),
                        NR.min(n - c0),
                        dst,
                    );
                };
                t += m;
            }
        }
        out
    }

    /// Every SIMD tile (AVX2, and AVX-512 VNNI where the CPU has it) gives bit-for-bit the
    /// scalar results, which are within the quantization error of the exact product; shapes
    /// cover partial panels, every tile height and an odd input size.
    #[test]
    fn tiles_match_scalar_reference_and_exact_product() {
        let mut rng = Lcg(5);
        // Every tile height of every ISA: 1–16 token rows in one tile, 33 = 16 + 16 + 1.
        let heights = (1..=16).map(|t| (16, 24, t));
        let shapes = [
            (16, 2, 1),
            (40, 33, 7),
            (96, 64, 13),
            (48, 1536, 11),
            (32, 48, 33),
        ];
        for (n, k, tokens) in heights.chain(shapes) {
            let w: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
            let mut x: Vec<f32> = (0..tokens * k).map(|_| rng.next() * 4.0).collect();
            // An outlier input and an all-zero row, as BERT activations have.
            x[3 % k] = 60.0;
            if tokens > 2 {
                x[2 * k..3 * k].fill(0.0);
            }
            let m = IntMatrix::quantize(&w, n, k);
            assert!(m.l1 * m.act_max() as i64 <= i32::MAX as i64);
            let mut acts = IntActs::default();
            acts.prepare(tokens, m.pairs());
            let ldx = 2 * m.pairs();
            for t in 0..tokens {
                let s = quantize_row(
                    Isa::Scalar,
                    &x[t * k..(t + 1) * k],
                    &mut acts.q[t * ldx..(t + 1) * ldx],
                    m.act_max(),
                );
                acts.scales[t] = s;
            }
            let reference = run(Isa::Scalar, &m, n, &acts, tokens, &bias);
            for t in 0..tokens {
                let xt = &x[t * k..(t + 1) * k];
                let xmax = xt.iter().fold(0f32, |a, v| a.max(v.abs()));
                let xsum: f32 = xt.iter().map(|v| v.abs()).sum();
                for r in 0..n {
                    let wr = &w[r * k..(r + 1) * k];
                    let exact: f32 = wr.iter().zip(xt).map(|(a, b)| a * b).sum::<f32>() + bias[r];
                    let wmax = wr.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let wsum: f32 = wr.iter().map(|v| v.abs()).sum();
                    let got = reference[t * n + r];
                    // Rounding: at most half a step per factor (max|W[r]|/(2·WMAX) for the
                    // weights, max|x[t]|/(2·act_max) for the activations), plus f32 sums.
                    let tol = 1.01
                        * (wmax / (2 * WMAX) as f32 * xsum
                            + xmax / (2 * m.act_max()) as f32 * wsum)
                        + 1e-4 * (1.0 + exact.abs());
                    assert!(
                        (got - exact).abs() <= tol,
                        "{n}x{k}x{tokens} t{t} r{r}: {got} vs {exact} (tolerance {tol})"
                    );
                }
            }
            for isa in isas().into_iter().skip(1) {
                let simd = run(isa, &m, n, &acts, tokens, &bias);
                for (i, (a, b)) in simd.iter().zip(&reference).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{isa:?} {n}x{k}x{tokens} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_quantize_symmetrically() {
        for isa in [Isa::Scalar, detected_isa()] {
            let mut q = vec![7i16; 6];
            let s = quantize_row(isa, &[1.0, -2.0, 0.5, 0.25, 2.0], &mut q, 100);
            assert_eq!(s, 0.02);
            assert_eq!(q, [50, -100, 25, 12, 100, 0]); // 12.5 rounds to even; padding zeroed
            let s = quantize_row(isa, &[0.0; 4], &mut q[..4], 100);
            assert_eq!((s, &q[..4]), (0.0, &[0i16; 4][..]));
        }
        // The SIMD path (whole vectors and a tail) gives the scalar results.
        let mut rng = Lcg(8);
        for len in [16, 37, 384] {
            let x: Vec<f32> = (0..len).map(|i| rng.next() * (1 + i % 7) as f32).collect();
            let (mut a, mut b) = (vec![0i16; len + 1], vec![1i16; len + 1]);
            let sa = quantize_row(Isa::Scalar, &x, &mut a, 11_008);
            let sb = quantize_row(detected_isa(), &x, &mut b, 11_008);
            assert_eq!((sa, &a), (sb, &b), "{len}");
        }
        // The weights: per output column, zero columns stay zero.
        let m = IntMatrix::quantize_to(&[0.5, -1.0, 0.0, 0.0], 2, 2, 127);
        assert_eq!(m.panel_scales(0)[..2], [1.0 / 127.0, 0.0]);
        let p = m.panel(0).map(|p| p[0].0[..4].to_vec());
        assert_eq!(p, Some(vec![64, -127, 0, 0])); // 63.5 rounds away from zero
                                                   // The activations' range: i32::MAX over the largest Σ|q_w| of a column.
        assert_eq!(m.act_max(), i16::MAX as i32);
        let all_ones = IntMatrix::quantize(&vec![1.0; 1536], 1, 1536);
        assert_eq!(all_ones.act_max(), (i32::MAX / (1536 * WMAX)));
        let mut w = vec![0.5; 1536];
        w[0] = -1.0; // the others quantize to 1024 (1023.5 rounds up)
        assert_eq!(
            IntMatrix::quantize(&w, 1, 1536).act_max(),
            i32::MAX / (WMAX + 1024 * 1535)
        );
    }
}
