//! Models and clients a configuration snapshot loaded, handed to the next snapshot on a
//! reload ([`crate::build::Carry`]) so that unchanged sections are not loaded twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use slmgate_config as cfgs;

use crate::upstream::breaker::Breaker;

/// Expensive resources a snapshot loaded, each with the config it was built from.
///
/// Loading a GGUF model or the BERT embedder takes seconds and hundreds of MB; a reload that
/// does not touch their config section reuses them (the same `Arc`) instead of loading a
/// second copy. The fingerprint is the section's `Debug` form, which lists every field.
#[derive(Clone, Default)]
pub struct Loaded {
    /// The upstream HTTP client (and its warm connection pool), by connect timeout.
    pub(crate) client: Option<(Duration, reqwest::Client)>,
    /// `kind: openai` backends' circuit breakers by name, with the `base_url` they watch.
    pub(crate) breakers: HashMap<String, (String, Arc<Breaker>)>,
    /// `kind: local` backends by name.
    #[cfg(feature = "local")]
    pub(crate) local: HashMap<String, (String, Arc<crate::upstream::local::LocalBackend>)>,
    /// The embedder.
    pub(crate) embedder: Option<(String, Arc<crate::embedder::LocalEmbedder>)>,
}

impl Loaded {
    /// Names of the loaded resources (for `/admin/status`).
    pub fn describe(&self) -> Vec<String> {
        #[allow(unused_mut)]
        let mut out: Vec<String> = Vec::new();
        #[cfg(feature = "local")]
        {
            let mut local: Vec<String> = self
                .local
                .keys()
                .map(|n| format!("local backend `{n}`"))
                .collect();
            local.sort();
            out.extend(local);
        }
        if let Some((_, e)) = &self.embedder {
            out.push(format!("embedder `{}`", e.name));
            #[cfg(feature = "local")]
            if !Arc::ptr_eq(&e.model, e.routing_model()) {
                out.push(format!(
                    "embedder `{}` for routing ({})",
                    e.name,
                    e.routing_model().backend()
                ));
            }
        }
        out
    }

    pub(crate) fn reusable_breaker(
        &self,
        name: &str,
        o: &cfgs::OpenAiBackend,
    ) -> Option<Arc<Breaker>> {
        self.breakers
            .get(name)
            .filter(|(url, b)| *url == o.base_url && *b.config() == o.circuit_breaker)
            .map(|(_, b)| b.clone())
    }

    pub(crate) fn reusable_client(&self, connect_timeout: Duration) -> Option<reqwest::Client> {
        self.client
            .as_ref()
            .filter(|(t, _)| *t == connect_timeout)
            .map(|(_, c)| c.clone())
    }

    #[cfg(feature = "local")]
    pub(crate) fn reusable_local(
        &self,
        name: &str,
        l: &cfgs::LocalBackend,
    ) -> Option<Arc<crate::upstream::local::LocalBackend>> {
        let (fingerprint, backend) = self.local.get(name)?;
        (*fingerprint == format!("{l:?}")).then(|| {
            tracing::info!(
                backend = name,
                "local model unchanged: reusing the loaded one"
            );
            backend.clone()
        })
    }

    #[cfg(feature = "local")]
    pub(crate) fn reusable_embedder(
        &self,
        e: &cfgs::Embedder,
    ) -> Option<Arc<crate::embedder::LocalEmbedder>> {
        let (fingerprint, embedder) = self.embedder.as_ref()?;
        (*fingerprint == format!("{e:?}")).then(|| {
            tracing::info!(name = %e.name, "embedder unchanged: reusing the loaded one");
            embedder.clone()
        })
    }
}
