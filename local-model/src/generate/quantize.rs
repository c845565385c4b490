//! The in-memory weight format asked for at load time: read by the model loaders
//! ([`crate::models`]) and the llama fast path ([`crate::fast_llama`]), re-exported as
//! [`crate::models::Quantize`].

/// How weights are stored in memory after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantize {
    /// Requantize matrices to Q8_0 (the default; runs on the fast llama path).
    #[default]
    Q8_0,
    /// Requantize matrices to Q4K (smaller; always runs on candle's kernels).
    Q4K,
    /// Keep the file's quantization (Q8_0 and Q4_1 llama models run on the fast path, with
    /// the same numerics as llama.cpp on the same file).
    Keep,
}

impl std::str::FromStr for Quantize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "q4k" | "q4_k" => Ok(Self::Q4K),
            "keep" => Ok(Self::Keep),
            other => Err(format!(
                "unknown quantization {other:?} (expected q8_0, q4k or keep)"
            )),
        }
    }
}
