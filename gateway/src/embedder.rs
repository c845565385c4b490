//! The sentence embedder the gateway loads once: the model, its cache and micro-batcher,
//! and a second (routing) copy when the router reads a different format. Serves
//! `/v1/embeddings` ([`crate::embeddings`]), the router's semantic routes and the semantic
//! cache (through [`slmgate_routing::engine::QueryEmbedder`]).

use std::sync::Arc;

use slmgate_openai::error::GatewayError;

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
    pub(crate) fn dim(&self) -> usize {
        self.model.dim()
    }

    /// Embeds `texts`; returns the vectors and the number of tokens read.
    #[cfg(feature = "local")]
    pub(crate) async fn embed_batch(
        &self,
        texts: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, usize), GatewayError> {
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
    pub(crate) fn dim(&self) -> usize {
        0
    }

    #[cfg(not(feature = "local"))]
    pub(crate) async fn embed_batch(
        &self,
        _texts: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, usize), GatewayError> {
        Err(GatewayError::Unavailable(
            "slmgate was built without the `local` feature".into(),
        ))
    }
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
