//! The router: decides, query by query, whether the local model or the remote one answers.
//!
//! - [`query`]: the facts of a chat request the strategies read (its text, turns, tools);
//! - [`features`] and [`scorer`]: cheap text features and the learned complexity scorer
//!   (a ranker and a calibrator, trained offline by `slmgate-routing-lab`);
//! - [`engine`]: the strategies of the `router:` config (rules, semantic routes,
//!   complexity, cascade) composed into one [`engine::Routed`] decision, a plain value that
//!   names a side and its alias; the gateway resolves the alias to targets;
//! - [`cascade`]: the confidence check on a local answer;
//! - [`metrics`]: RouteLLM's routing metrics (APGR, CPT, AUC), saved with every scorer;
//! - [`provenance`]: what a scorer was trained on.
//!
//! No network or server code: the gateway (`slmgate-gateway`) calls [`engine::Router::decide`].

#![warn(missing_docs)]

pub mod cascade;
pub mod engine;
pub mod features;
pub mod metrics;
pub mod provenance;
pub mod query;
pub mod scorer;
pub mod scoring;
