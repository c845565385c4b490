//! The integration tests, one binary: each module starts the real gateway on a loopback
//! port (or runs the real `slmgate` binary) against mock upstreams it starts itself
//! ([`common`]).

mod common;

mod admin_keys;
mod anthropic_in;
mod anthropic_out;
mod anthropic_sdk;
mod bad_requests;
mod balance;
mod cache;
mod cli;
mod connections;
mod dashboard;
mod embeddings;
mod faults;
mod gateway;
mod local;
mod metrics;
mod openai_sdk;
mod openai_surface;
mod policies;
mod reload;
mod routing;
mod shared_state;
mod telemetry;
mod usage;
mod usage_rows;
