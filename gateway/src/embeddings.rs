//! `POST /v1/embeddings` (OpenAI schema), answered in-process by the embedded sentence
//! embedder (all-MiniLM-L6-v2 by default).
//!
//! The forward pass is CPU-bound, so it runs on the blocking pool; its time is reported as
//! upstream time, so `x-slmgate-overhead-ms` stays the gateway's own cost.

use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use http::Request;
use serde::Deserialize;
use serde_json::json;

use crate::keys::Caller;
use crate::layers::body_limit::read_body;
use crate::layers::snapshot::Snapshot;
use crate::upstream::UpstreamClock;
use slmgate_openai::error::GatewayError;

/// Most inputs accepted in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

// Token-array inputs are recognised (to answer them with a precise 400), never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

fn parse(bytes: &[u8]) -> Result<EmbeddingsRequest, GatewayError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(GatewayError::bad_request("the body must be a JSON object"));
    }
    for field in ["model", "input"] {
        if v.get(field).is_none() {
            return Err(GatewayError::bad_param(
                field,
                format!("`{field}` is required"),
            ));
        }
    }
    if !v["model"].is_string() {
        return Err(GatewayError::bad_param("model", "`model` must be a string"));
    }
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("Input") {
            GatewayError::bad_param("input", "`input` must be a string or an array of strings")
        } else {
            GatewayError::bad_request(format!("invalid request: {msg}"))
        }
    })
}

/// `POST /v1/embeddings`.
pub async fn handler(req: Request<Body>) -> Response {
    match run(req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(req: Request<Body>) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let Some(Snapshot(gw)) = parts.extensions.get::<Snapshot>().cloned() else {
        return Err(GatewayError::Internal("no config snapshot".into()));
    };
    let clock = parts
        .extensions
        .get::<UpstreamClock>()
        .cloned()
        .unwrap_or_default();
    let bytes = read_body(&parts, body).await?;
    let request = parse(&bytes)?;
    let Some(embedder) = gw.embedder.clone() else {
        return Err(GatewayError::ModelNotFound {
            message: format!(
                "the model `{}` does not exist: no embedder is configured or its files are missing (run scripts/fetch-models.sh)",
                request.model
            ),
        });
    };
    if request.model != embedder.name {
        return Err(GatewayError::ModelNotFound {
            message: format!(
                "the model `{}` does not exist; the embeddings model here is `{}`",
                request.model, embedder.name
            ),
        });
    }
    if let Some(key) = parts
        .extensions
        .get::<Caller>()
        .and_then(|c| c.key.as_ref())
    {
        if !key.models.is_empty() && !key.models.contains(&embedder.name) {
            return Err(GatewayError::Forbidden(format!(
                "key `{}` may not use model `{}`",
                key.name, embedder.name
            )));
        }
    }
    let texts = match request.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
        Input::Tokens(_) | Input::TokenBatches(_) => {
            return Err(GatewayError::bad_param(
                "input",
                "token-array inputs are not supported by the local embedder; send strings",
            ))
        }
    };
    if texts.is_empty() {
        return Err(GatewayError::bad_param(
            "input",
            "`input` must not be empty",
        ));
    }
    if texts.len() > MAX_INPUTS {
        return Err(GatewayError::bad_param(
            "input",
            format!("at most {MAX_INPUTS} inputs per request"),
        ));
    }
    if texts.iter().any(std::string::String::is_empty) {
        return Err(GatewayError::bad_param(
            "input",
            "inputs must not be empty strings",
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(GatewayError::bad_param(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    if let Some(d) = request.dimensions {
        if d != embedder.dim() {
            return Err(GatewayError::bad_param(
                "dimensions",
                format!(
                    "`{}` produces {}-dimensional embeddings only",
                    embedder.name,
                    embedder.dim()
                ),
            ));
        }
    }

    let started = Instant::now();
    let result = embedder.embed_batch(texts).await;
    clock.add(started.elapsed());
    let (vectors, tokens) = result?;
    let data: Vec<serde_json::Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": embedder.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}
