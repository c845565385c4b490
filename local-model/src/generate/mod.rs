//! Text generation with GGUF models: loading ([`models`]), tokenizers rebuilt from GGUF
//! metadata ([`gguf_tokenizer`]), chat templates ([`template`]), sampling ([`sampling`]), the
//! token loop ([`generator`]), the worker pool ([`pool`]), the golden-set evaluation
//! ([`gold`]) and the CPU forward pass for llama models ([`fast_llama`]).

mod error;
pub mod fast_llama;
pub mod generator;
pub mod gguf_tokenizer;
pub mod gold;
pub mod models;
pub mod pool;
mod quantize;
pub mod sampling;
pub mod template;
