//! slmgate's embedded small language model.
//!
//! The crate is laid out in three module folders (each module's path from the crate root is
//! kept stable by the re-exports below):
//! - `generate/`: GGUF text generation — [`generator`], [`models`], [`pool`], [`sampling`],
//!   [`template`], [`gguf_tokenizer`], [`gold`] and the CPU forward pass [`fast_llama`];
//! - [`embed`]: sentence embeddings — the [`embed::Embedder`] and the CPU forward pass
//!   [`fast_bert`];
//! - `cpu/`: the CPU compute layer both forward passes run on — the quantized matrix kernels
//!   ([`kernels`]), the linear layers and the fork-join pool ([`threads`]). **All** of the
//!   crate's `unsafe` code (SIMD intrinsics, raw pointers shared between threads) lives there,
//!   behind safe functions; everywhere else `unsafe` is denied.
//!
//! plus [`device`] (device selection) and [`hub`] (model files).

// `unsafe` is allowed in `cpu` only (`deny`, not `forbid`: a `forbid` cannot be lifted for
// one module).
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(unsafe_code)]
#[warn(clippy::undocumented_unsafe_blocks)]
mod cpu;
pub mod device;
pub mod embed;
mod generate;
pub mod hub;

// Tiny random-weight models for tests and benches (this crate's, and other crates' with the
// `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
pub mod embed_fixtures;
#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;

pub use cpu::{kernels, threads};
pub use embed::fast_bert;
pub use generate::{fast_llama, generator, gguf_tokenizer, gold, models, pool, sampling, template};
