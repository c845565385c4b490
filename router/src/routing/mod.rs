//! Query routing: cheap query features, the learned complexity scorer, its training on
//! labelled data, and RouteLLM's evaluation metrics and plots.

pub mod data;
pub mod eval;
pub mod features;
pub mod metrics;
pub mod plot;
pub mod scorer;
pub mod train;

// The router runtime (lead's modules: strategies, cascade, query facts, CLI helpers).
pub mod build;
pub mod cascade;
pub mod engine;
pub mod offline;
pub mod query;
pub mod scoring;
