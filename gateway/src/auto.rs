//! The routed aliases (`auto`): the [`Router`] of `slmgate-routing` (which decides a side
//! and names its alias) and the target chains each side's alias resolves to here.
//!
//! [`build_router`] builds it from the `router:` config: resolves both sides, embeds the
//! semantic routes' examples, loads the complexity scorer and calibrates its threshold.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use slmgate_config::routing as cfg;

use slmgate_config::routing::Side;
use slmgate_routing::cascade::CascadeCheck;
use slmgate_routing::engine::{QueryEmbedder, Router, RouterSide, Rules, SemanticRoute};

use crate::embedder::LocalEmbedder;
use crate::targets::{ModelRoute, Target};

/// A router and the targets of its two sides.
#[derive(Debug)]
pub struct AutoRouter {
    /// Decides the side (a plain value naming an alias).
    pub router: Router,
    /// The local side's targets (its own, then the remote side's as fallbacks); `None` when
    /// it cannot serve.
    pub local: Option<Arc<ModelRoute>>,
    /// The remote side's targets (its own, then the local side's); `None` when it cannot
    /// serve.
    pub remote: Option<Arc<ModelRoute>>,
}

impl AutoRouter {
    /// The targets of a side, when it can serve.
    pub fn chain(&self, side: Side) -> Option<&Arc<ModelRoute>> {
        match side {
            Side::Local => self.local.as_ref(),
            Side::Remote => self.remote.as_ref(),
        }
    }
}

fn side(
    alias: &str,
    models: &HashMap<String, Arc<ModelRoute>>,
    unavailable: &HashMap<String, String>,
    primary_missing: &HashMap<String, String>,
) -> (Option<Arc<ModelRoute>>, Option<String>) {
    if let Some(why) = primary_missing.get(alias) {
        return (None, Some(why.clone()));
    }
    match models.get(alias) {
        Some(r) => (Some(r.clone()), None),
        None => (
            None,
            Some(
                unavailable
                    .get(alias)
                    .cloned()
                    .unwrap_or_else(|| format!("model `{alias}` is not configured")),
            ),
        ),
    }
}

/// `first`'s targets, then `then`'s targets that are not already there.
fn chain(alias: &str, first: &Arc<ModelRoute>, then: Option<&Arc<ModelRoute>>) -> Arc<ModelRoute> {
    let mut targets: Vec<Target> = first.targets.clone();
    for t in then.map(|r| r.targets.as_slice()).unwrap_or_default() {
        let dup = targets
            .iter()
            .any(|x| Arc::ptr_eq(&x.backend, &t.backend) && x.model == t.model);
        if !dup {
            targets.push(t.clone());
        }
    }
    Arc::new(ModelRoute {
        alias: alias.to_string(),
        targets,
        // The chain starts with `first`'s targets: its balanced rank keeps its indices.
        balance: first.balance.clone(),
    })
}

/// Reads a route's examples file: JSONL lines with `text` or `prompt`, or plain lines.
fn read_examples(path: &str) -> anyhow::Result<Vec<String>> {
    let raw = std::fs::read_to_string(path).with_context(|| format!("reading `{path}`"))?;
    let mut out = Vec::new();
    for line in raw.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("`{path}`: a line is not valid JSON"))?;
            let text = v
                .get("text")
                .or_else(|| v.get("prompt"))
                .and_then(|t| t.as_str())
                .with_context(|| format!("`{path}`: a JSON line has no `text` or `prompt`"))?;
            out.push(text.to_string());
        } else {
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// Embeds texts with the loaded model (startup only: blocking).
#[cfg(feature = "local")]
fn embed_all(e: &LocalEmbedder, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    e.routing_model()
        .embed(texts)
        .map_err(|err| anyhow::anyhow!("{err}"))
}

#[cfg(not(feature = "local"))]
fn embed_all(_e: &LocalEmbedder, _texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    anyhow::bail!("slmgate was built without the `local` feature")
}

fn semantic_routes(
    r: &cfg::Router,
    embedder: Option<&Arc<LocalEmbedder>>,
) -> anyhow::Result<Vec<SemanticRoute>> {
    if r.semantic.routes.is_empty() || !r.strategies.contains(&cfg::Strategy::Semantic) {
        return Ok(Vec::new());
    }
    let Some(e) = embedder else {
        tracing::warn!("router: the semantic strategy needs the embedder, which is not loaded; it will not decide");
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for route in &r.semantic.routes {
        let mut examples = route.examples.clone();
        if let Some(file) = &route.examples_file {
            examples.extend(
                read_examples(file).with_context(|| format!("semantic route `{}`", route.name))?,
            );
        }
        let refs: Vec<&str> = examples.iter().map(String::as_str).collect();
        let vectors = embed_all(e, &refs)
            .with_context(|| format!("semantic route `{}`: embedding examples", route.name))?;
        let dim = vectors.first().map(Vec::len).unwrap_or(0);
        out.push(SemanticRoute {
            name: route.name.clone(),
            target: route.target,
            threshold: route.threshold.unwrap_or(r.semantic.threshold),
            examples: vectors.into_iter().flatten().collect(),
            dim,
        });
    }
    Ok(out)
}

/// Builds the router and its sides' targets.
pub fn build_router(
    r: &cfg::Router,
    models: &HashMap<String, Arc<ModelRoute>>,
    unavailable: &HashMap<String, String>,
    primary_missing: &HashMap<String, String>,
    embedder: Option<&Arc<LocalEmbedder>>,
) -> anyhow::Result<AutoRouter> {
    let (local, local_why) = side(&r.local, models, unavailable, primary_missing);
    let (remote, remote_why) = side(&r.remote, models, unavailable, primary_missing);
    let local_chain = local.as_ref().map(|l| chain(&r.local, l, remote.as_ref()));
    let remote_chain = remote
        .as_ref()
        .map(|rm| chain(&r.remote, rm, models.get(&r.local)));

    // The local model's context bounds what may go local.
    #[allow(unused_mut)]
    let mut context: Option<(usize, usize)> = None;
    #[cfg(feature = "local")]
    if let Some(l) = &local {
        if let crate::upstream::Backend::Local(b) = &*l.targets[0].backend {
            context = Some((
                b.pool.generator().info().context_length,
                b.defaults.max_tokens,
            ));
        }
    }
    let rules = Rules {
        tools: r.rules.tools,
        images: r.rules.images,
        max_local_prompt_tokens: r.rules.max_local_prompt_tokens.or(context.map(|c| c.0)),
        max_local_turns: r.rules.max_local_turns,
        default_max_tokens: context.map(|c| c.1).unwrap_or(0),
    };

    let semantic = semantic_routes(r, embedder)?;
    let complexity = if r.strategies.contains(&cfg::Strategy::Complexity) {
        Some(slmgate_routing::scoring::complexity(&r.complexity)?)
    } else {
        None
    };
    if let Some(c) = &complexity {
        tracing::info!(threshold = c.threshold, source = %c.threshold_source, "router: complexity threshold");
    }
    let cascade = r
        .strategies
        .contains(&cfg::Strategy::Cascade)
        .then_some(CascadeCheck {
            tokens: r.cascade.tokens,
            min_mean_logprob: r.cascade.min_mean_logprob,
            min_logprob: r.cascade.min_logprob,
        });
    for (name, why) in [(&r.local, &local_why), (&r.remote, &remote_why)] {
        if let Some(why) = why {
            tracing::warn!(side = %name, reason = %why, aliases = ?r.aliases, "router: side unavailable; routed aliases use the other side");
        }
    }
    let router = Router {
        aliases: r.aliases.clone(),
        local: RouterSide {
            alias: r.local.clone(),
            serves: local_chain.is_some(),
            unavailable: local_why,
        },
        remote: RouterSide {
            alias: r.remote.clone(),
            serves: remote_chain.is_some(),
            unavailable: remote_why,
        },
        strategies: r.strategies.clone(),
        default: r.default,
        rules,
        semantic,
        complexity,
        cascade,
        embedder: embedder.map(|e| e.clone() as Arc<dyn QueryEmbedder>),
    };
    Ok(AutoRouter {
        router,
        local: local_chain,
        remote: remote_chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_files_take_lines_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ex.txt");
        std::fs::write(
            &p,
            "# comment\nhello there\n\n{\"text\": \"good morning\"}\n{\"prompt\": \"hi\"}\n",
        )
        .unwrap();
        let got = read_examples(p.to_str().unwrap()).unwrap();
        assert_eq!(got, vec!["hello there", "good morning", "hi"]);
        std::fs::write(&p, "{\"other\": 1}\n").unwrap();
        assert!(read_examples(p.to_str().unwrap()).is_err());
    }
}
