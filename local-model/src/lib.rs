//! slmgate's embedded small language model.
//!
//! Module ownership while the crate is being built (keep to your own files):
//! - generation: `gguf_tokenizer`, `template`, `sampling`, `generator`, `pool`, `models`, `gold`,
//!   and the CPU fast path `fast_llama`, `kernels`, `threads`
//! - embeddings, model files and devices: `embed`, `hub`, `device`

pub mod device;
pub mod embed;
pub mod embed_fixtures;
pub mod fast_bert;
pub mod fast_llama;
pub mod fixtures;
pub mod generator;
pub mod gguf_tokenizer;
pub mod gold;
pub mod hub;
mod int_gemm;
pub mod kernels;
pub mod models;
pub mod pool;
pub mod sampling;
pub mod template;
pub mod threads;
