//! `POST /v1/embeddings` (OpenAI schema), answered in-process by the embedded sentence
//! embedder (all-MiniLM-L6-v2 by default).
//!
//! The forward pass is CPU-bound, so it runs on the blocking pool; its time is reported as
//! upstream time, so `x-slmgate-overhead-ms` stays the gateway's own cost.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use http::Request;
use serde::Deserialize;
use serde_json::json;

use crate::layers::body_limit::read_body;
use crate::layers::snapshot::Snapshot;
use crate::runtime::Caller;
use crate::upstream::UpstreamClock;
use slmgate_openai::error::GatewayError;

/// Most inputs accepted in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// The embedder as the gateway serves it: `/v1/embeddings` on [`LocalEmbedder::model`], and
/// the embeddings slmgate uses itself (routing, the semantic cache) on
/// [`LocalEmbedder::routing_model`] — the same model unless `embedder.routing_weights`
/// differs from `embedder.weights`, in which case a second copy in that format.
pub struct LocalEmbedder {
    /// The model name clients send (`embedder.name`).
    pub name: String,
    /// The loaded model (`/v1/embeddings`).
    #[cfg(feature = "local")]
    pub model: Arc<slmgate_local_model::embed::Embedder>,
    /// Cache and micro-batching in front of the model.
    #[cfg(feature = "local")]
    pub batcher: crate::embed_batcher::EmbedBatcher,
    /// The routing copy and its own cache and batcher, when it differs.
    #[cfg(feature = "local")]
    routing: Option<(
        Arc<slmgate_local_model::embed::Embedder>,
        crate::embed_batcher::EmbedBatcher,
    )>,
}

#[cfg(feature = "local")]
fn batcher_for(
    model: &Arc<slmgate_local_model::embed::Embedder>,
    opts: crate::embed_batcher::BatcherOptions,
) -> std::io::Result<crate::embed_batcher::EmbedBatcher> {
    let m = model.clone();
    let embed: Arc<crate::embed_batcher::EmbedFn> =
        Arc::new(move |texts: &[&str]| m.embed(texts).map_err(|e| e.to_string()));
    crate::embed_batcher::EmbedBatcher::new(embed, opts)
}

impl LocalEmbedder {
    /// Wraps a loaded model with its cache and batcher; routing uses it too.
    #[cfg(feature = "local")]
    pub fn new(
        name: String,
        model: Arc<slmgate_local_model::embed::Embedder>,
        opts: crate::embed_batcher::BatcherOptions,
    ) -> std::io::Result<Self> {
        Ok(Self {
            name,
            batcher: batcher_for(&model, opts)?,
            model,
            routing: None,
        })
    }

    /// Routing and the semantic cache use `model` (with a cache and batcher of its own)
    /// instead of the served one.
    #[cfg(feature = "local")]
    pub fn with_routing_model(
        mut self,
        model: Arc<slmgate_local_model::embed::Embedder>,
        opts: crate::embed_batcher::BatcherOptions,
    ) -> std::io::Result<Self> {
        self.routing = Some((model.clone(), batcher_for(&model, opts)?));
        Ok(self)
    }

    /// The model routing and the semantic cache embed with.
    #[cfg(feature = "local")]
    pub fn routing_model(&self) -> &Arc<slmgate_local_model::embed::Embedder> {
        self.routing.as_ref().map_or(&self.model, |(m, _)| m)
    }

    /// The batcher (and exact-text cache) routing and the semantic cache embed through.
    #[cfg(feature = "local")]
    pub fn routing_batcher(&self) -> &crate::embed_batcher::EmbedBatcher {
        self.routing.as_ref().map_or(&self.batcher, |(_, b)| b)
    }

    #[cfg(feature = "local")]
    fn dim(&self) -> usize {
        self.model.dim()
    }

    /// Embeds `texts`; returns the vectors and the number of tokens read.
    #[cfg(feature = "local")]
    async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), GatewayError> {
        use crate::embed_batcher::BatchError;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens = refs
            .iter()
            .map(|t| self.model.count_tokens(t).min(self.model.max_tokens()))
            .sum();
        match self.batcher.embed(&refs).await {
            Ok(v) => Ok((v.iter().map(|e| e.to_vec()).collect(), tokens)),
            // A full queue is the gateway's capacity, not the caller's pace: 503.
            Err(BatchError::Overloaded) => Err(GatewayError::Overloaded {
                message: "the embedder is overloaded; retry shortly".into(),
                retry_after: std::time::Duration::from_secs(1),
            }),
            Err(e) => Err(GatewayError::Internal(e.to_string())),
        }
    }

    #[cfg(not(feature = "local"))]
    fn dim(&self) -> usize {
        0
    }

    #[cfg(not(feature = "local"))]
    async fn embed(&self, _texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), GatewayError> {
        Err(GatewayError::Unavailable(
            "slmgate was built without the `local` feature".into(),
        ))
    }
}

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
    let result = embedder.embed(texts).await;
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

/// The router's semantic routes and the semantic cache embed through the batcher and cache
/// of the routing model.
#[async_trait::async_trait]
impl slmgate_routing::engine::QueryEmbedder for LocalEmbedder {
    async fn embed(&self, text: &str) -> Result<Arc<[f32]>, GatewayError> {
        #[cfg(feature = "local")]
        {
            use crate::embed_batcher::BatchError;
            match self.routing_batcher().embed(&[text]).await {
                Ok(mut v) if v.len() == 1 => Ok(v.remove(0)),
                Ok(_) => Err(GatewayError::Internal("embedder returned no vector".into())),
                Err(BatchError::Overloaded) => Err(GatewayError::Overloaded {
                    message: "the router's embedder is overloaded; retry shortly".into(),
                    retry_after: std::time::Duration::from_secs(1),
                }),
                Err(err) => Err(GatewayError::Internal(format!("routing: {err}"))),
            }
        }
        #[cfg(not(feature = "local"))]
        {
            let _ = text;
            Err(GatewayError::Unavailable(
                "slmgate was built without the `local` feature".into(),
            ))
        }
    }
}
