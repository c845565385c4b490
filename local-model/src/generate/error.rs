//! The error type of text generation, shared by every module of `generate` (its own module, so
//! that the tokenizer, template and model loaders need not depend on the generator that uses
//! them).

use std::path::PathBuf;

/// Errors of the local model. Every variant names what failed; none is a panic.
#[derive(Debug, thiserror::Error)]
pub enum LocalModelError {
    /// A file could not be read.
    #[error("reading {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// candle failed to parse or build the model.
    #[error("model {path}: {context}: {source}", path = .path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// candle's error (boxed: it is large).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// `general.architecture` names a family this crate cannot run.
    #[error("model {path}: unsupported architecture {arch:?} (supported: llama, qwen2, qwen3, gemma3)", path = .path.display())]
    UnsupportedArchitecture {
        /// The model file.
        path: PathBuf,
        /// The architecture found in the file.
        arch: String,
    },
    /// A required GGUF metadata key is missing.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingMetadata(String),
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The GGUF's tokenizer model is not supported.
    #[error("unsupported tokenizer: {0}")]
    UnsupportedTokenizer(String),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A forward pass failed during generation.
    #[error("inference: {0}")]
    Inference(#[source] Box<candle_core::Error>),
    /// A worker could not serve the request (for example its model failed to initialise).
    #[error("worker unavailable: {0}")]
    Worker(String),
}
