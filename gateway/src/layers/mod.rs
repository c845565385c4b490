//! One tower layer per concern of the request path. [`crate::stack::build`] assembles them.
//!
//! Every layer here is `Service<Request<Body>, Response = Response, Error = Infallible>`: a
//! failure becomes an OpenAI-shaped error response at the layer that detects it, so the layers
//! compose in any order without error plumbing.

pub mod account;
pub mod admin_auth;
pub mod auth;
pub mod body_limit;
pub mod cache;
pub mod http_metrics;
pub mod limits;
pub mod load_shed;
pub mod overhead;
pub mod parse;
pub mod policy;
pub mod route;
pub mod snapshot;
pub mod sse_map;
pub mod timeout;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::response::Response;

/// The boxed future every layer returns.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;
