//! The CPU compute layer the forward passes ([`crate::fast_llama`], [`crate::fast_bert`]) run
//! on, and the only place in the crate where `unsafe` code is allowed:
//!
//! - [`kernels`]: quantized (Q8_0, Q4_1) matrix multiplication with AVX-512 VNNI, AVX2 and
//!   portable kernels;
//! - `int_gemm`: the `int16` embedder weights' integer matrix multiplication;
//! - `linear`: BERT's linear layers (`f32` panels with their AVX2/FMA micro-kernel, or the two
//!   kernels above) with fused bias, residual and activation;
//! - `math`: vectorizable `exp`, `erf` and GELU;
//! - [`threads`]: the spinning fork-join pool, and its methods that split one output buffer
//!   between the threads of a parallel section ([`threads::ComputePool::run_interleaved`],
//!   [`threads::ComputePool::run_dynamic_chunks`],
//!   [`threads::ComputePool::run_dynamic_tiles`]).
//!
//! Everything here that the rest of the crate calls is a safe function: raw pointers, SIMD
//! intrinsics and `unsafe fn`s stay inside this module, each `unsafe` block with a `// SAFETY:`
//! comment saying why its preconditions hold (checked on entry, or guaranteed by the types and
//! the way the work is split).

mod int_gemm;
pub mod kernels;
pub(crate) mod linear;
pub(crate) mod math;
pub mod threads;
