//! Offline work on the router, kept out of the server: the `slmgate train` and
//! `slmgate eval` commands use it.
//!
//! - [`data`]: labelled prompts (`{"prompt","label"}`, per-model `scores` files);
//! - [`train`]: trains the complexity scorer (a sign-constrained pairwise ranker and a
//!   calibrator) and writes it in the format `slmgate-routing` loads;
//! - [`eval`]: RouteLLM's metrics per data set and leave-one-source-out evaluation against
//!   random and prompt-length baselines;
//! - [`plot`]: quality-versus-strong-calls curves as SVG.

#![warn(missing_docs)]

pub mod data;
pub mod eval;
pub mod plot;
pub mod train;
