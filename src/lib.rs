//! The `slmgate` command line as a library: one module per command, so the integration
//! tests and benchmarks run the same code as the binary (`src/main.rs` only parses flags
//! and dispatches).

#![warn(missing_docs)]

pub mod commands;
