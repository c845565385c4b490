//! Quantized matrix-multiplication kernels for the CPU forward pass ([`crate::fast_llama`]).
//!
//! Weights are kept in one of two block formats that mirror GGML's, with the block scales
//! (`f16`, as in the file: decoding one token is bound by memory bandwidth, so every byte
//! counts) in arrays of their own:
//!
//! - [`QFormat::Q8_0`]: blocks of 32 signed bytes with one scale (`w = d·q`);
//! - [`QFormat::Q4_1`]: blocks of 32 unsigned nibbles with a scale and a minimum
//!   (`w = d·q + m`), packed exactly like GGML (byte `j` holds element `j` in its low nibble and
//!   element `j + 16` in its high nibble).
//!
//! Activations are quantized per token to 8-bit blocks ([`QActs`]) the way llama.cpp's x86
//! code does it (`d = amax/127` rounded to `f16`, `q = round_half_even(x·127/amax)`, plus
//! `s = d·Σq` for Q4_1's minimum term), so a dot product here is the same integer sum llama.cpp
//! computes, scaled by the same `f32` factors: results differ from llama.cpp only by the order of
//! `f32` additions.
//!
//! [`matmul_concat`] computes `out[t][r] = W[r]·x[t]` for every row and token, the rows split
//! over a [`ComputePool`]'s threads; under it, the crate-internal `matmul_rows` does a range of
//! rows, with the best implementation the CPU supports (picked at run time, once, cached):
//!
//! - AVX-512 VNNI (`vpdpbusd` on 256-bit registers, 32 registers): 4 rows × 4 tokens tiles;
//! - AVX2 (`vpmaddubsw` + `vpmaddwd`): 2 rows × 4 tokens tiles;
//! - portable scalar code (also the reference the SIMD paths are tested against).
//!
//! Tiles load each weight block once and use it for several tokens, so a prefill of many
//! tokens streams the weights from memory once instead of once per token. A single token
//! (decoding) walks the rows one at a time instead: each thread then reads its weights as one
//! sequential stream, which doubled decode speed over 4-row tiles.

use std::sync::OnceLock;

use super::threads::{split, ComputePool, SyncPtr};

/// Elements per quantization block (both formats).
pub const QK: usize = 32;

/// A weight block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    /// 32 × `i8` plus a scale.
    Q8_0,
    /// 32 × 4-bit unsigned plus a scale and a minimum.
    Q4_1,
}

/// A quantized weight matrix, `rows × cols`, row-major, `cols` a multiple of [`QK`].
#[derive(Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    format: QFormat,
    /// Q8_0: `rows·cols` bytes (`i8`); Q4_1: `rows·cols/2` packed nibbles.
    qs: Vec<u8>,
    /// One scale per block, `rows · cols/QK`, as `f16` bits.
    d: Vec<u16>,
    /// Q4_1 only: one minimum per block, as `f16` bits.
    m: Vec<u16>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn f16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Rounds through `f16`, like GGML storing a block scale.
fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

impl QMatrix {
    /// Builds a matrix from GGML block bytes (`block_q8_0`: f16 `d` + 32 `i8`; `block_q4_1`:
    /// f16 `d`, f16 `m` + 16 bytes). Returns an error message if the sizes do not agree.
    pub fn from_ggml(
        format: QFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, String> {
        if cols == 0 || !cols.is_multiple_of(QK) {
            return Err(format!("row length {cols} is not a multiple of {QK}"));
        }
        let nb = rows * cols / QK;
        let block = match format {
            QFormat::Q8_0 => 34,
            QFormat::Q4_1 => 20,
        };
        if bytes.len() != nb * block {
            return Err(format!(
                "{format:?} {rows}x{cols}: expected {} bytes, got {}",
                nb * block,
                bytes.len()
            ));
        }
        let mut d = Vec::with_capacity(nb);
        let mut m = Vec::new();
        let mut qs = Vec::with_capacity(nb * (block - 2));
        for blk in bytes.chunks_exact(block) {
            d.push(f16_at(blk, 0));
            match format {
                QFormat::Q8_0 => qs.extend_from_slice(&blk[2..]),
                QFormat::Q4_1 => {
                    m.push(f16_at(blk, 2));
                    qs.extend_from_slice(&blk[4..]);
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            format,
            qs,
            d,
            m,
        })
    }

    /// Quantizes `values` (`rows × cols`, row-major) to Q8_0 the way GGML's reference
    /// quantizer does (`d = amax/127`, `q = round(x/d)`).
    pub fn quantize_q8_0(rows: usize, cols: usize, values: &[f32]) -> Result<Self, String> {
        if cols == 0 || !cols.is_multiple_of(QK) || values.len() != rows * cols {
            return Err(format!(
                "cannot quantize {} values as {rows}x{cols} Q8_0",
                values.len()
            ));
        }
        let mut d = Vec::with_capacity(values.len() / QK);
        let mut qs = Vec::with_capacity(values.len());
        for blk in values.chunks_exact(QK) {
            let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
            let scale = amax / 127.0;
            let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            d.push(half::f16::from_f32(scale).to_bits());
            qs.extend(blk.iter().map(|x| (x * id).round() as i8 as u8));
        }
        Ok(Self {
            rows,
            cols,
            format: QFormat::Q8_0,
            qs,
            d,
            m: Vec::new(),
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (the input size).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn format(&self) -> QFormat {
        self.format
    }

    /// Bytes of weight data held.
    pub fn size_in_bytes(&self) -> usize {
        self.qs.len() + 2 * (self.d.len() + self.m.len())
    }

    /// Writes row `r`, dequantized, into `out` (`cols` values).
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols);
        let nb = self.cols / QK;
        for b in 0..nb {
            let d = f16_to_f32(self.d[r * nb + b]);
            let o = &mut out[b * QK..(b + 1) * QK];
            match self.format {
                QFormat::Q8_0 => {
                    let q = &self.qs[(r * nb + b) * QK..][..QK];
                    for (o, &q) in o.iter_mut().zip(q) {
                        *o = q as i8 as f32 * d;
                    }
                }
                QFormat::Q4_1 => {
                    let m = f16_to_f32(self.m[r * nb + b]);
                    let q = &self.qs[(r * nb + b) * QK / 2..][..QK / 2];
                    for j in 0..QK / 2 {
                        o[j] = (q[j] & 0xF) as f32 * d + m;
                        o[j + QK / 2] = (q[j] >> 4) as f32 * d + m;
                    }
                }
            }
        }
    }

    /// The whole matrix, dequantized (row-major).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }
}

/// Activations of `tokens` rows of `cols` values, quantized to 8-bit blocks.
#[derive(Debug, Clone, Default)]
pub struct QActs {
    tokens: usize,
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl QActs {
    /// An empty buffer (grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Values per token.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Quantizes `x` (`tokens × cols`, row-major) in place of the previous contents.
    ///
    /// # Panics
    /// If `cols` is not a multiple of [`QK`] or `x.len()` is not a multiple of `cols`.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        assert!(cols > 0 && cols.is_multiple_of(QK) && x.len().is_multiple_of(cols));
        self.tokens = x.len() / cols;
        self.cols = cols;
        self.qs.resize(x.len(), 0);
        let nb = x.len() / QK;
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        for (b, blk) in x.chunks_exact(QK).enumerate() {
            let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let q = &mut self.qs[b * QK..(b + 1) * QK];
            let mut sum = 0i32;
            for (q, &x) in q.iter_mut().zip(blk) {
                let v = (x * id).round_ties_even() as i32;
                sum += v;
                *q = v as i8;
            }
            self.d[b] = round_f16(d);
            self.s[b] = round_f16(d * sum as f32);
        }
    }
}

/// Which implementation [`matmul_rows`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 VNNI + VL: `vpdpbusd` on 256-bit vectors for the quantized generation
    /// kernels, `vpdpwssd` on 512-bit vectors for the `int16` embedder GEMM.
    Avx512Vnni,
    /// AVX2 + FMA.
    Avx2,
    /// Portable code.
    Scalar,
}

/// Every implementation this CPU can run, the portable one first (for tests that compare
/// each with it).
#[cfg(test)]
pub(super) fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if detected_isa() != Isa::Scalar {
            v.push(Isa::Avx2);
        }
        if detected_isa() == Isa::Avx512Vnni {
            v.push(Isa::Avx512Vnni);
        }
    }
    v
}

/// The best implementation this CPU supports (detected once).
pub fn detected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("SLMGATE_KERNEL_SCALAR").is_some() {
                return Isa::Scalar;
            }
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
                && std::env::var_os("SLMGATE_KERNEL_AVX2").is_none()
            {
                return Isa::Avx512Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// `out[t][..] = [W₀·x[t], W₁·x[t], …]` for the matrices `mats` = `[W₀, W₁, …]` and every
/// token `t` of `x`: the products with each matrix's rows, concatenated (`x.tokens()` rows of
/// `Σ rows` values, row-major), with the rows split over the pool's threads in ranges aligned
/// to 4. Several matrices that multiply the same input (q/k/v, gate/up) share one parallel
/// section.
///
/// # Panics
/// If a matrix's columns differ from `x.cols()`.
pub fn matmul_concat(pool: &ComputePool, mats: &[&QMatrix], x: &QActs, out: &mut Vec<f32>) {
    assert!(
        mats.iter().all(|m| m.cols == x.cols),
        "activation and weight sizes differ"
    );
    let total: usize = mats.iter().map(|m| m.rows).sum();
    out.resize(x.tokens * total, 0.0);
    let ptr = SyncPtr(out.as_mut_ptr());
    let n = pool.threads();
    pool.run(|i| {
        let mine = split(total, n, i, 4);
        let mut offset = 0;
        for m in mats {
            let lo = mine.start.max(offset);
            let hi = mine.end.min(offset + m.rows);
            if lo < hi {
                // SAFETY: `out` holds `tokens × total` values; this call writes the elements
                // `t·total + c` for `c` in `lo..hi` only, columns inside `mine`, which `split`
                // keeps disjoint from every other `i`'s (and `run` calls each `i` once).
                unsafe {
                    matmul_rows(
                        m,
                        x,
                        lo - offset..hi - offset,
                        SyncPtr(ptr.get().add(offset)),
                        total,
                    );
                };
            }
            offset += m.rows;
        }
    });
}

/// Computes `out[t·ld + r] = W[r] · x[t]` for `r` in `rows` and every token of `x` (the
/// kernel under [`matmul_concat`] and the `q8_0` linear layers).
///
/// # Safety
/// `out` must be valid for writes at every `t·ld + r` (`t < x.tokens()`, `r ∈ rows`), and no
/// other thread may access those elements during the call.
///
/// # Panics
/// If `x.cols() != w.cols()` or `rows` exceeds the matrix.
pub(super) unsafe fn matmul_rows(
    w: &QMatrix,
    x: &QActs,
    rows: std::ops::Range<usize>,
    out: SyncPtr<f32>,
    ld: usize,
) {
    assert_eq!(x.cols, w.cols, "activation and weight sizes differ");
    assert!(rows.end <= w.rows);
    if rows.is_empty() || x.tokens == 0 {
        return;
    }
    // SAFETY: `detected_isa` is supported by this CPU; the sizes were checked above, `out` is
    // the caller's contract.
    unsafe { matmul_rows_with(detected_isa(), w, x, rows, out, ld) }
}

/// [`matmul_rows`] with an explicit implementation (for tests and benchmarks).
///
/// # Safety
/// As [`matmul_rows`], whose checks (`x.cols() == w.cols()`, `rows.end <= w.rows()`) must
/// hold; additionally `isa` must be supported by the CPU.
pub(super) unsafe fn matmul_rows_with(
    isa: Isa,
    w: &QMatrix,
    x: &QActs,
    rows: std::ops::Range<usize>,
    out: SyncPtr<f32>,
    ld: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract, which includes the CPU support for `isa`.
        Isa::Avx512Vnni => unsafe {
            match w.format {
                QFormat::Q8_0 => vnni::q8_0(w, x, rows, out, ld),
                QFormat::Q4_1 => vnni::q4_1(w, x, rows, out, ld),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe {
            match w.format {
                QFormat::Q8_0 => avx2::q8_0(w, x, rows, out, ld),
                QFormat::Q4_1 => avx2::q4_1(w, x, rows, out, ld),
            }
        },
        // SAFETY: the caller's contract.
        _ => unsafe { scalar(w, x, rows, out, ld) },
    }
}

/// The portable reference: one block at a time, GGML's order of operations.
///
/// # Safety
/// As [`matmul_rows`].
unsafe fn scalar(
    w: &QMatrix,
    x: &QActs,
    rows: std::ops::Range<usize>,
    out: SyncPtr<f32>,
    ld: usize,
) {
    let nb = w.cols / QK;
    for t in 0..x.tokens {
        let xq = &x.qs[t * w.cols..(t + 1) * w.cols];
        for r in rows.clone() {
            let mut sum = 0f32;
            for b in 0..nb {
                let a = &xq[b * QK..(b + 1) * QK];
                let da = x.d[t * nb + b];
                let dw = f16_to_f32(w.d[r * nb + b]);
                let isum: i32 = match w.format {
                    QFormat::Q8_0 => {
                        let q = &w.qs[(r * nb + b) * QK..][..QK];
                        q.iter()
                            .zip(a)
                            .map(|(&q, &a)| q as i8 as i32 * a as i32)
                            .sum()
                    }
                    QFormat::Q4_1 => {
                        let q = &w.qs[(r * nb + b) * QK / 2..][..QK / 2];
                        (0..QK / 2)
                            .map(|j| {
                                (q[j] & 0xF) as i32 * a[j] as i32
                                    + (q[j] >> 4) as i32 * a[j + QK / 2] as i32
                            })
                            .sum()
                    }
                };
                sum += dw * da * isum as f32;
                if w.format == QFormat::Q4_1 {
                    sum += f16_to_f32(w.m[r * nb + b]) * x.s[t * nb + b];
                }
            }
            // SAFETY: the caller guarantees the element is ours to write.
            unsafe { *out.0.add(t * ld + r) = sum };
        }
    }
}

/// Generates the tiled SIMD kernels for one instruction set: `$dot(u, s)` must return the
/// eight `i32` sums of four `u8 × i8` products each.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_kernels {
    ($name:ident, $features:literal, $rt:literal, $tt:literal, $dot:ident) => {
        mod $name {
            use super::{QActs, QMatrix, SyncPtr, QK};
            use std::arch::x86_64::*;

            #[target_feature(enable = $features)]
            fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            /// One `f16` scale, broadcast.
            ///
            /// # Safety
            /// The CPU features; `p` valid for a read.
            #[target_feature(enable = $features)]
            unsafe fn scale(p: *const u16) -> __m256 {
                // SAFETY: the caller's contract.
                let bits = unsafe { *p };
                _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))))
            }

            /// Σ m·s over the blocks of one row (`f16` minimums) and one token (Q4_1's
            /// minimum term).
            ///
            /// # Safety
            /// The CPU features; `m` and `s` valid for reads of `n` values.
            #[target_feature(enable = $features)]
            unsafe fn dot_mins(m: *const u16, s: *const f32, n: usize) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut i = 0;
                while i + 8 <= n {
                    // SAFETY: `i + 8 <= n`: in bounds by the caller's contract.
                    unsafe {
                        let mv = _mm256_cvtph_ps(_mm_loadu_si128(m.add(i) as *const __m128i));
                        acc = _mm256_fmadd_ps(mv, _mm256_loadu_ps(s.add(i)), acc);
                    }
                    i += 8;
                }
                let mut sum = hsum(acc);
                while i < n {
                    // SAFETY: `i < n`: in bounds by the caller's contract.
                    unsafe { sum += super::f16_to_f32(*m.add(i)) * *s.add(i) };
                    i += 1;
                }
                sum
            }

            /// `out[(t0 + t)·ld + r0 + r] = W[r0 + r] · x[t0 + t]` for `r < R`, `t < T`.
            ///
            /// # Safety
            /// The CPU features; `x.cols() == w.cols()`, `r0 + R <= w.rows()`,
            /// `t0 + T <= x.tokens()` (so every block read below is inside `w` and `x`); `out`
            /// valid for the writes, which no other thread may access.
            #[target_feature(enable = $features)]
            unsafe fn q8_tile<const R: usize, const T: usize>(
                w: &QMatrix,
                x: &QActs,
                r0: usize,
                t0: usize,
                out: SyncPtr<f32>,
                ld: usize,
            ) {
                let cols = w.cols;
                let nb = cols / QK;
                let wq = w.qs.as_ptr();
                let xq = x.qs.as_ptr();
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                for b in 0..nb {
                    let mut wv = [_mm256_setzero_si256(); R];
                    let mut wu = [_mm256_setzero_si256(); R];
                    let mut dw = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        // SAFETY: row `r0 + r` < rows, block `b` < blocks per row: inside `w`.
                        unsafe {
                            let p = wq.add((r0 + r) * cols + b * QK);
                            wv[r] = _mm256_loadu_si256(p as *const __m256i);
                            dw[r] = scale(w.d.as_ptr().add((r0 + r) * nb + b));
                        }
                        wu[r] = _mm256_sign_epi8(wv[r], wv[r]);
                    }
                    for t in 0..T {
                        // SAFETY: token `t0 + t` < tokens, block `b`: inside `x`.
                        let (av, da) = unsafe {
                            (
                                _mm256_loadu_si256(
                                    xq.add((t0 + t) * cols + b * QK) as *const __m256i
                                ),
                                _mm256_set1_ps(*x.d.get_unchecked((t0 + t) * nb + b)),
                            )
                        };
                        for r in 0..R {
                            let s = _mm256_sign_epi8(av, wv[r]);
                            let dot = super::$dot(wu[r], s);
                            acc[r][t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(dot),
                                _mm256_mul_ps(dw[r], da),
                                acc[r][t],
                            );
                        }
                    }
                }
                for r in 0..R {
                    for t in 0..T {
                        // SAFETY: the caller's contract on `out`.
                        unsafe { *out.0.add((t0 + t) * ld + r0 + r) = hsum(acc[r][t]) };
                    }
                }
            }

            /// `out[(t0 + t)·ld + r0 + r] = W[r0 + r] · x[t0 + t]` for `r < R`, `t < T`.
            ///
            /// # Safety
            /// The CPU features; `x.cols() == w.cols()`, `r0 + R <= w.rows()`,
            /// `t0 + T <= x.tokens()` (so every block read below is inside `w` and `x`); `out`
            /// valid for the writes, which no other thread may access.
            #[target_feature(enable = $features)]
            unsafe fn q4_1_tile<const R: usize, const T: usize>(
                w: &QMatrix,
                x: &QActs,
                r0: usize,
                t0: usize,
                out: SyncPtr<f32>,
                ld: usize,
            ) {
                let cols = w.cols;
                let nb = cols / QK;
                let wq = w.qs.as_ptr();
                let xq = x.qs.as_ptr();
                let low = _mm256_set1_epi8(0xF);
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                for b in 0..nb {
                    let mut wv = [_mm256_setzero_si256(); R];
                    let mut dw = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        // SAFETY: row `r0 + r` < rows, block `b` < blocks per row: inside `w`.
                        unsafe {
                            let p = wq.add(((r0 + r) * nb + b) * QK / 2) as *const __m128i;
                            let packed = _mm_loadu_si128(p);
                            let both = _mm256_inserti128_si256(
                                _mm256_castsi128_si256(packed),
                                _mm_srli_epi16(packed, 4),
                                1,
                            );
                            wv[r] = _mm256_and_si256(both, low);
                            dw[r] = scale(w.d.as_ptr().add((r0 + r) * nb + b));
                        }
                    }
                    for t in 0..T {
                        // SAFETY: token `t0 + t` < tokens, block `b`: inside `x`.
                        let (av, da) = unsafe {
                            (
                                _mm256_loadu_si256(
                                    xq.add((t0 + t) * cols + b * QK) as *const __m256i
                                ),
                                _mm256_set1_ps(*x.d.get_unchecked((t0 + t) * nb + b)),
                            )
                        };
                        for r in 0..R {
                            let dot = super::$dot(wv[r], av);
                            acc[r][t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(dot),
                                _mm256_mul_ps(dw[r], da),
                                acc[r][t],
                            );
                        }
                    }
                }
                for r in 0..R {
                    for t in 0..T {
                        // SAFETY: the `nb` minimums of row `r0 + r` and sums of token `t0 + t`
                        // are inside `w` and `x`.
                        let mins = unsafe {
                            dot_mins(
                                w.m.as_ptr().add((r0 + r) * nb),
                                x.s.as_ptr().add((t0 + t) * nb),
                                nb,
                            )
                        };
                        // SAFETY: the caller's contract on `out`.
                        unsafe { *out.0.add((t0 + t) * ld + r0 + r) = hsum(acc[r][t]) + mins };
                    }
                }
            }

            /// Walks `rows` × tokens in tiles of `$rt` rows × `$tt` tokens, then the edges.
            macro_rules! drive {
                ($tile:ident, $w:expr, $x:expr, $rows:expr, $out:expr, $ld:expr) => {{
                    let (w, x, rows, out, ld) = ($w, $x, $rows, $out, $ld);
                    let nt = x.tokens();
                    let full_t = nt - nt % $tt;
                    let mut r = rows.start;
                    // One token (decoding): one row at a time, so that each thread reads the
                    // weights as a single sequential stream, which the hardware prefetchers
                    // follow best (measured: 2× the tokens/s of 4-row tiles on Q8_0).
                    let single_row = nt == 1;
                    // Every tile below stays inside `rows` (≤ `w.rows()`) and the tokens.
                    while !single_row && r + $rt <= rows.end {
                        let mut t = 0;
                        while t < full_t {
                            // SAFETY: in bounds (above); features and `out`: the caller's.
                            unsafe { $tile::<$rt, $tt>(w, x, r, t, out, ld) };
                            t += $tt;
                        }
                        while t < nt {
                            // SAFETY: in bounds (above); features and `out`: the caller's.
                            unsafe { $tile::<$rt, 1>(w, x, r, t, out, ld) };
                            t += 1;
                        }
                        r += $rt;
                    }
                    while r < rows.end {
                        let mut t = 0;
                        while t < full_t {
                            // SAFETY: in bounds (above); features and `out`: the caller's.
                            unsafe { $tile::<1, $tt>(w, x, r, t, out, ld) };
                            t += $tt;
                        }
                        while t < nt {
                            // SAFETY: in bounds (above); features and `out`: the caller's.
                            unsafe { $tile::<1, 1>(w, x, r, t, out, ld) };
                            t += 1;
                        }
                        r += 1;
                    }
                }};
            }

            /// Q8_0 weights × 8-bit activations.
            ///
            /// # Safety
            /// As [`super::matmul_rows_with`].
            #[target_feature(enable = $features)]
            pub unsafe fn q8_0(
                w: &QMatrix,
                x: &QActs,
                rows: std::ops::Range<usize>,
                out: SyncPtr<f32>,
                ld: usize,
            ) {
                drive!(q8_tile, w, x, rows, out, ld)
            }

            /// Q4_1 weights × 8-bit activations.
            ///
            /// # Safety
            /// As [`super::matmul_rows_with`].
            #[target_feature(enable = $features)]
            pub unsafe fn q4_1(
                w: &QMatrix,
                x: &QActs,
                rows: std::ops::Range<usize>,
                out: SyncPtr<f32>,
                ld: usize,
            ) {
                drive!(q4_1_tile, w, x, rows, out, ld)
            }
        }
    };
}

/// `vpdpbusd`: four `u8 × i8` products summed into each `i32` lane, no saturation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_vnni(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// `vpmaddubsw` + `vpmaddwd`. The pairwise `i16` sums cannot saturate: one factor is at most
/// 128 in magnitude and the other at most 127 (activations never reach −128).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

#[cfg(target_arch = "x86_64")]
simd_kernels!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    4,
    4,
    dot_vnni
);
#[cfg(target_arch = "x86_64")]
simd_kernels!(avx2, "avx2,fma,f16c", 2, 4, dot_avx2);

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::Lcg;

    fn q4_1_matrix(rows: usize, cols: usize, rng: &mut Lcg) -> QMatrix {
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / QK {
            bytes.extend_from_slice(&half::f16::from_f32(rng.next() * 0.05).to_le_bytes());
            bytes.extend_from_slice(&half::f16::from_f32(rng.next() * 0.3).to_le_bytes());
            for _ in 0..QK / 2 {
                bytes.push(((rng.next() + 1.0) * 127.9) as u8);
            }
        }
        QMatrix::from_ggml(QFormat::Q4_1, rows, cols, &bytes).unwrap()
    }

    fn run(isa: Isa, w: &QMatrix, x: &QActs) -> Vec<f32> {
        let mut out = vec![f32::NAN; x.tokens() * w.rows()];
        // SAFETY: `out` holds tokens × rows elements and is only used here.
        unsafe { matmul_rows_with(isa, w, x, 0..w.rows(), SyncPtr(out.as_mut_ptr()), w.rows()) };
        out
    }

    /// Every implementation agrees with the scalar reference, and the reference with a plain
    /// f32 dot product of the dequantized values, over shapes that exercise every tile edge.
    #[test]
    fn simd_kernels_match_scalar_reference() {
        let mut rng = Lcg(42);
        for &(rows, cols, tokens) in &[(1, 32, 1), (7, 64, 3), (13, 96, 9), (64, 256, 5)] {
            let values: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
            let q8 = QMatrix::quantize_q8_0(rows, cols, &values).unwrap();
            let q4 = q4_1_matrix(rows, cols, &mut rng);
            let xs: Vec<f32> = (0..tokens * cols).map(|_| rng.next() * 3.0).collect();
            let mut x = QActs::new();
            x.quantize(&xs, cols);
            for w in [&q8, &q4] {
                let reference = run(Isa::Scalar, w, &x);
                let deq = w.dequantize();
                for t in 0..tokens {
                    for r in 0..rows {
                        let exact: f32 = (0..cols)
                            .map(|c| deq[r * cols + c] * xs[t * cols + c])
                            .sum();
                        let got = reference[t * rows + r];
                        // Activation quantization error only: ~1% of the magnitudes involved.
                        let scale: f32 = (0..cols)
                            .map(|c| (deq[r * cols + c] * xs[t * cols + c]).abs())
                            .sum();
                        assert!(
                            (got - exact).abs() <= 0.02 * scale + 1e-3,
                            "{:?} r{r} t{t}: {got} vs {exact}",
                            w.format()
                        );
                    }
                }
                for isa in isas() {
                    let got = run(isa, w, &x);
                    for (i, (a, b)) in got.iter().zip(&reference).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{isa:?} {:?} {rows}x{cols}x{tokens} [{i}]: {a} vs {b}",
                            w.format()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activations_quantize_like_ggml() {
        let mut x = QActs::new();
        let mut v = vec![0f32; 32];
        v[0] = 127.0; // amax: the scale is exactly 1
        v[1] = -63.5; // ties round to even
        v[2] = 0.5;
        v[3] = 1.5;
        v[4] = 2.5;
        x.quantize(&v, 32);
        assert_eq!(&x.qs[..5], &[127, -64, 0, 2, 2]);
        assert_eq!(x.d[0], 1.0);
        assert_eq!(x.s[0], 67.0);
        // An all-zero block gives zeros, not NaNs.
        x.quantize(&[0.0; 32], 32);
        assert_eq!(x.d[0], 0.0);
        assert!(x.qs.iter().all(|&q| q == 0));
    }
}
