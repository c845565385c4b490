//! Elementwise math for the forward passes: vectorizable `f32` approximations of `exp` and
//! `erf` (a few ulps), and the GELU activations built on them.

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, BERT's exact GELU.
#[inline(always)]
pub(super) fn gelu_erf(x: f32) -> f32 {
    let hx = 0.5 * x;
    erf(x * std::f32::consts::FRAC_1_SQRT_2).mul_add(hx, hx)
}

/// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
pub(super) fn gelu_tanh(x: f32) -> f32 {
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
pub(crate) fn exp(x: f32) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
