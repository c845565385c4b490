//! OpenAI's chat-completions API as slmgate reads it.
//!
//! - [`chat`]: the request ([`chat::ChatRequest`], parsed once and kept as raw JSON so it can
//!   be forwarded unchanged), the one reader of its `messages`, token usage, and the checks
//!   on a backend's JSON answers and SSE chunks;
//! - [`error`]: every failure of the request path, answered in OpenAI's error shape with the
//!   HTTP status clients expect.
//!
//! No IO: the gateway reads bodies and hands bytes here.

#![warn(missing_docs)]

pub mod chat;
pub mod error;

pub use error::GatewayError;
