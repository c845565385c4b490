//! The CPU compute layer: quantized matrix kernels, integer GEMM and the fork-join pool the
//! forward passes ([`crate::fast_llama`], [`crate::fast_bert`]) run on.

pub(crate) mod int_gemm;
pub mod kernels;
pub mod threads;
