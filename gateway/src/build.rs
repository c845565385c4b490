//! Builds the runtime [`Gateway`] from a validated [`slmgate_config::Config`].
//!
//! The config crate has already checked references and values; what can still fail here is
//! runtime setup (an HTTP client, a header value, a model file), reported with the backend's
//! name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use slmgate_config as cfgs;

use crate::keys::{parse_sha256, sha256, ClientKey, Keys};
use crate::layers::limits::{Accounting, LimitState};
use crate::layers::policy::Policies;
use crate::loaded::Loaded;
use crate::runtime::{unix_now, Gateway, Limits};
use crate::targets::{Balancer, ModelRoute, Target};
use crate::upstream::breaker::Breaker;
use crate::upstream::openai::{Dialect, OpenAiBackend};
use crate::upstream::redact::Secrets;
use crate::upstream::Backend;

/// The process-wide HTTP client: pooled keep-alive connections, HTTP/1.1 and HTTP/2 (ALPN).
pub fn http_client(connect_timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    // reqwest consults the system proxy settings on every request (host parsing, IDNA);
    // with no proxy variables set that work is skipped entirely.
    let proxy_vars = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];
    if !proxy_vars.iter().any(|v| {
        std::env::var_os(v).is_some() || std::env::var_os(v.to_ascii_lowercase()).is_some()
    }) {
        builder = builder.no_proxy();
    }
    builder
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        .user_agent(concat!("slmgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

fn openai_backend(
    b: &cfgs::Backend,
    o: &cfgs::OpenAiBackend,
    client: &reqwest::Client,
    secrets: &Arc<Secrets>,
    breaker: Arc<Breaker>,
) -> anyhow::Result<OpenAiBackend> {
    let mut headers = HeaderMap::new();
    for (k, v) in &o.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .with_context(|| format!("backend `{}`: invalid header name `{k}`", b.name))?;
        let value = HeaderValue::from_str(v)
            .with_context(|| format!("backend `{}`: invalid value for header `{k}`", b.name))?;
        headers.insert(name, value);
    }
    if let Some(key) = o.api_key.as_deref().filter(|k| !k.is_empty()) {
        let (name, value) = match o.dialect {
            Dialect::OpenAi => (header::AUTHORIZATION, format!("Bearer {key}")),
            Dialect::Azure => (HeaderName::from_static("api-key"), key.to_owned()),
            Dialect::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
        };
        let mut v = HeaderValue::from_str(&value).with_context(|| {
            format!("backend `{}`: api_key is not a valid header value", b.name)
        })?;
        v.set_sensitive(true);
        headers.insert(name, v);
    }
    if o.dialect == Dialect::Anthropic && !headers.contains_key("anthropic-version") {
        // A configured `anthropic-version` header wins.
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(slmgate_anthropic::ANTHROPIC_VERSION),
        );
    }
    let base = o.base_url.trim_end_matches('/');
    let path = match o.dialect {
        Dialect::OpenAi => "/chat/completions",
        Dialect::Azure => "/openai/deployments",
        Dialect::Anthropic => slmgate_anthropic::MESSAGES_PATH,
    };
    Ok(OpenAiBackend {
        name: b.name.clone(),
        dialect: o.dialect,
        // Parsed once: parsing (IDNA included) on every request showed in profiles.
        chat_url: reqwest::Url::parse(&format!("{base}{path}"))
            .with_context(|| format!("backend `{}`: invalid base_url `{}`", b.name, o.base_url))?,
        api_version: o.api_version.clone(),
        headers,
        timeout: o.timeout,
        max_retries: o.max_retries,
        retry_backoff: o.retry_backoff,
        max_retry_backoff: o.max_retry_backoff,
        client: client.clone(),
        secrets: secrets.clone(),
        breaker,
    })
}

/// How a `kind: local` backend's model is loaded.
#[cfg(feature = "local")]
fn generator_options(
    name: &str,
    l: &cfgs::LocalBackend,
) -> anyhow::Result<slmgate_local_model::generator::GeneratorOptions> {
    use slmgate_local_model::{device, generator, hub, models};

    let model = hub::resolve_model_file(&l.model)
        .with_context(|| format!("backend `{name}`: model `{}`", l.model))?;
    let mut opts = generator::GeneratorOptions::new(model);
    opts.tokenizer = match &l.tokenizer {
        Some(t) => Some(
            hub::resolve_model_file(t)
                .with_context(|| format!("backend `{name}`: tokenizer `{t}`"))?,
        ),
        None => None,
    };
    opts.chat_template = l.chat_template.clone();
    opts.quantize = match l.quantize {
        cfgs::Quantize::Q8_0 => models::Quantize::Q8_0,
        cfgs::Quantize::Q4K => models::Quantize::Q4K,
        cfgs::Quantize::Keep => models::Quantize::Keep,
    };
    opts.device = device::parse_device(&l.device)
        .with_context(|| format!("backend `{name}`: device `{}`", l.device))?;
    opts.context_length = l.context_length;
    opts.thinking = l.thinking;
    Ok(opts)
}

/// Loads the embedded model for a `kind: local` backend and starts its worker pool.
#[cfg(feature = "local")]
fn local_backend(
    name: &str,
    l: &cfgs::LocalBackend,
) -> anyhow::Result<crate::upstream::local::LocalBackend> {
    use slmgate_local_model::{generator, pool};

    let opts = generator_options(name, l)?;
    let started = std::time::Instant::now();
    let generator = generator::Generator::load(&opts)
        .with_context(|| format!("backend `{name}`: loading `{}`", opts.model.display()))?;
    let info = generator.info().clone();
    tracing::info!(
        backend = name,
        model = %opts.model.display(),
        architecture = %info.architecture,
        context_length = info.context_length,
        quantize = ?info.quantize,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "local model loaded"
    );
    let model_name = opts
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string());
    let pool = pool::LocalPool::new(
        Arc::new(generator),
        pool::PoolOptions {
            workers: l.workers,
            queue_size: l.queue_size,
            queue_timeout: l.queue_timeout,
        },
    );
    Ok(crate::upstream::local::LocalBackend {
        name: name.to_string(),
        model_name,
        pool,
        defaults: crate::upstream::local::SamplingDefaults {
            max_tokens: l.max_tokens,
            temperature: l.temperature,
            repetition_penalty: l.repetition_penalty,
        },
    })
}

/// Loads the sentence embedder when it is configured and enabled.
#[cfg(feature = "local")]
fn build_embedder(
    cfg: &cfgs::Config,
    previous: &Loaded,
) -> anyhow::Result<Option<Arc<crate::embedder::LocalEmbedder>>> {
    use slmgate_local_model::{device, embed, hub};
    let Some(e) = cfg.embedder.as_ref() else {
        return Ok(None);
    };
    if let Some(reused) = previous.reusable_embedder(e) {
        return Ok(Some(reused));
    }
    if !e.is_enabled() {
        tracing::warn!(
            model = %e.model,
            "embedder disabled: model directory not found (run scripts/fetch-models.sh); /v1/embeddings answers 404"
        );
        return Ok(None);
    }
    let dir = hub::resolve_model_dir(&e.model, &embed::REQUIRED_FILES)
        .with_context(|| format!("embedder: model `{}`", e.model))?;
    let mut opts = embed::EmbedderOptions::new(dir);
    opts.device = device::parse_device(&e.device)
        .with_context(|| format!("embedder: device `{}`", e.device))?;
    opts.max_batch = e.max_batch;
    let format = |field: &str, v: &str| -> anyhow::Result<embed::WeightFormat> {
        let configured = v
            .parse()
            .map_err(|m: String| anyhow::anyhow!("embedder.{field}: {m}"))?;
        Ok(embed::weights_from_env(configured)?)
    };
    let (served, routing) = (
        format("weights", &e.weights)?,
        format("routing_weights", &e.routing_weights)?,
    );
    let load = |weights| -> anyhow::Result<Arc<embed::Embedder>> {
        let started = std::time::Instant::now();
        let model = embed::Embedder::load(&embed::EmbedderOptions {
            weights,
            ..opts.clone()
        })
        .context("embedder: loading")?;
        tracing::info!(
            name = %e.name,
            dim = model.dim(),
            backend = model.backend(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedder loaded"
        );
        Ok(Arc::new(model))
    };
    let model = load(served)?;
    let batcher = crate::embed_batcher::BatcherOptions {
        max_batch: e.max_batch,
        max_wait: e.batch_wait,
        queue: 1024,
        cache_entries: e.cache_entries,
    };
    let mut embedder = crate::embedder::LocalEmbedder::new(e.name.clone(), model.clone(), batcher)
        .context("embedder: starting its batching thread")?;
    if routing != served {
        if model.backend() == "candle" {
            // candle's BERT (GPUs, SLMGATE_BERT_BACKEND=candle) has one format.
            tracing::info!(
                routing_weights = %routing,
                "embedder on candle: routing uses the served f32 model"
            );
        } else {
            embedder = embedder
                .with_routing_model(load(routing)?, batcher)
                .context("embedder: starting its batching thread")?;
        }
    }
    Ok(Some(Arc::new(embedder)))
}

#[cfg(not(feature = "local"))]
fn build_embedder(
    cfg: &cfgs::Config,
    _previous: &Loaded,
) -> anyhow::Result<Option<Arc<crate::embedder::LocalEmbedder>>> {
    if cfg.embedder.as_ref().is_some_and(|e| e.is_enabled()) {
        tracing::warn!("embedder configured but slmgate was built without the `local` feature");
    }
    Ok(None)
}

/// Resolves a validated config into a runtime gateway, with fresh budget and rate-limit
/// state.
pub fn build_gateway(cfg: &cfgs::Config) -> anyhow::Result<Gateway> {
    build_gateway_with(cfg, LimitState::default())
}

/// Resolves a validated config into a runtime gateway that keeps `state` (budgets spent,
/// rate-limit cells). A reload passes the running snapshot's `accounting.state`, so spend
/// and limits survive the swap.
pub fn build_gateway_with(cfg: &cfgs::Config, state: LimitState) -> anyhow::Result<Gateway> {
    build_gateway_from(
        cfg,
        Carry {
            limits: state,
            ..Carry::default()
        },
    )
}

/// What a new configuration takes over from the running one on reload.
///
/// State that must outlive a snapshot (spend, rate-limit cells) is always kept; loaded
/// resources ([`Loaded`]) are reused only where their config section did not change.
#[derive(Clone, Default)]
pub struct Carry {
    /// Budget and rate-limit state, shared with the running snapshot.
    pub limits: LimitState,
    /// The response cache's stores, kept when the new config's cache bounds are the same.
    pub cache: Option<crate::layers::cache::CacheState>,
    /// Models and clients the running snapshot loaded, reused when unchanged.
    pub loaded: Loaded,
    /// Dashboard sessions and the failed-key throttle (sessions end by themselves when the
    /// admin key changes).
    pub admin_sessions: crate::layers::admin_auth::AdminSessions,
    /// The keys created at run time (the same set for every snapshot).
    pub runtime_keys: crate::keys::RuntimeKeys,
}

impl Carry {
    /// Everything `gw` can hand over to its successor.
    pub fn from_gateway(gw: &Gateway) -> Carry {
        Carry {
            limits: gw.accounting.state.clone(),
            cache: Some(gw.cache.state.clone()),
            loaded: gw.loaded.clone(),
            admin_sessions: gw.admin.sessions.clone(),
            runtime_keys: gw.runtime_keys.clone(),
        }
    }
}

/// Resolves a validated config into a runtime gateway, taking over `carry` from the running
/// snapshot (see [`Carry`]). Blocking: it may load models, so async callers run it on
/// `spawn_blocking`.
pub fn build_gateway_from(cfg: &cfgs::Config, carry: Carry) -> anyhow::Result<Gateway> {
    let Carry {
        limits: mut state,
        cache: previous_cache,
        loaded: previous,
        admin_sessions,
        runtime_keys,
    } = carry;
    // The Redis connection is kept while `state.redis` stays the same.
    state.redis = match (&cfg.state.redis, state.redis.take()) {
        (Some(c), Some(kept)) if kept.config() == c => Some(kept),
        (Some(c), _) => Some(Arc::new(crate::state::RedisStore::new(c)?)),
        (None, _) => None,
    };
    let mut loaded = Loaded::default();
    let connect_timeout = cfg
        .backends
        .iter()
        .filter_map(|b| match &b.kind {
            cfgs::BackendKind::OpenAi(o) => Some(o.connect_timeout),
            _ => None,
        })
        .max()
        .unwrap_or(Duration::from_secs(10));
    let client = match previous.reusable_client(connect_timeout) {
        Some(c) => c,
        None => http_client(connect_timeout)?,
    };
    loaded.client = Some((connect_timeout, client.clone()));

    let secrets = Arc::new(Secrets::from_config(cfg));
    let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
    let mut disabled: HashMap<String, String> = HashMap::new();
    for b in &cfg.backends {
        if !b.is_enabled() {
            disabled.insert(b.name.clone(), b.disabled_reason());
            continue;
        }
        match &b.kind {
            cfgs::BackendKind::OpenAi(o) => {
                // A reload keeps the breaker's state (an ejected backend stays ejected)
                // while the backend's address and breaker settings are unchanged.
                let breaker = previous
                    .reusable_breaker(&b.name, o)
                    .unwrap_or_else(|| Arc::new(Breaker::new(&b.name, o.circuit_breaker)));
                loaded
                    .breakers
                    .insert(b.name.clone(), (o.base_url.clone(), breaker.clone()));
                let built = openai_backend(b, o, &client, &secrets, breaker)?;
                backends.insert(b.name.clone(), Arc::new(Backend::OpenAi(built)));
            }
            #[cfg(feature = "local")]
            cfgs::BackendKind::Local(l) => {
                let built = match previous.reusable_local(&b.name, l) {
                    Some(reused) => reused,
                    None => Arc::new(local_backend(&b.name, l)?),
                };
                loaded
                    .local
                    .insert(b.name.clone(), (format!("{l:?}"), built.clone()));
                backends.insert(b.name.clone(), Arc::new(Backend::Local(built)));
            }
            #[cfg(not(feature = "local"))]
            cfgs::BackendKind::Local(_) => {
                disabled.insert(
                    b.name.clone(),
                    format!(
                        "backend `{}` (kind: local): slmgate was built without the `local` feature",
                        b.name
                    ),
                );
            }
        }
    }

    let mut models = HashMap::new();
    let mut model_order = Vec::new();
    let mut unavailable = HashMap::new();
    // Aliases whose primary backend cannot serve (served by a fallback, or not at all).
    let mut primary_missing: HashMap<String, String> = HashMap::new();
    for m in &cfg.models {
        let mut targets = Vec::new();
        let mut why_not = Vec::new();
        // The rank of equal deployments, then the fallbacks.
        let mut rank = 0;
        let chain = std::iter::once((&m.backend, m.model.as_deref(), true))
            .chain(
                m.deployments
                    .iter()
                    .map(|d| (&d.backend, d.model.as_deref(), true)),
            )
            .chain(
                m.fallbacks
                    .iter()
                    .map(|f| (&f.backend, f.model.as_deref(), false)),
            );
        for (backend, model, balanced) in chain {
            match backends.get(backend) {
                Some(be) => {
                    rank += usize::from(balanced);
                    targets.push(Target {
                        backend: be.clone(),
                        model: model.unwrap_or(&m.name).to_string(),
                    });
                }
                None => why_not.push(
                    disabled
                        .get(backend)
                        .cloned()
                        .unwrap_or_else(|| format!("backend `{backend}` does not exist")),
                ),
            }
        }
        if !m.backend.is_empty() && !backends.contains_key(&m.backend) {
            primary_missing.insert(
                m.name.clone(),
                disabled
                    .get(&m.backend)
                    .cloned()
                    .unwrap_or_else(|| format!("backend `{}` does not exist", m.backend)),
            );
        }
        if !targets.is_empty() && !why_not.is_empty() {
            tracing::warn!(
                model = %m.name,
                served_by = %targets[0].backend.name(),
                reason = %why_not.join("; "),
                "model served by a fallback backend"
            );
        }
        if targets.is_empty() {
            unavailable.insert(m.name.clone(), why_not.join("; "));
        } else {
            model_order.push(m.name.clone());
            models.insert(
                m.name.clone(),
                Arc::new(ModelRoute {
                    alias: m.name.clone(),
                    targets,
                    // Only a rank of two or more has anything to balance.
                    balance: (rank > 1).then(|| Arc::new(Balancer::new(m.balance, rank))),
                }),
            );
        }
    }

    let mut keys = Vec::new();
    for k in &cfg.keys {
        let digest = match (&k.key, &k.key_sha256) {
            (Some(secret), _) => sha256(secret),
            (None, Some(h)) => parse_sha256(h)
                .with_context(|| format!("key `{}`: key_sha256 is not 64 hex digits", k.name))?,
            (None, None) => anyhow::bail!("key `{}` has neither key nor key_sha256", k.name),
        };
        keys.push(ClientKey {
            name: k.name.clone(),
            sha256: digest,
            team: k.team.clone(),
            tags: k.tags.clone(),
            models: k.models.clone(),
            budget: k.budget,
            rate_limit: k.rate_limit,
        });
    }
    let policy_set = cfgs::policy::compile(cfg).map_err(|errs| {
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid policies: {}", all.join("; "))
    })?;
    let policies = Policies::new(policy_set, cfg.policies.is_some(), backends.clone());
    let accounting = Accounting {
        prices: slmgate_usage::pricing::merged(&cfg.pricing),
        teams: cfg
            .teams
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.budget?)))
            .collect(),
        state,
        resolved: Default::default(),
    };
    let cache = crate::layers::cache::Caching::new(
        &cfg.cache,
        previous_cache.as_ref(),
        accounting.state.redis.as_ref(),
    );

    let embedder = build_embedder(cfg, &previous)?;
    if let (Some(e), Some(section)) = (&embedder, &cfg.embedder) {
        loaded.embedder = Some((format!("{section:?}"), e.clone()));
    }
    // Whatever was not reused is released with the old snapshot, once its last request ends.
    drop(previous);
    let router = match &cfg.router {
        Some(r) => Some(Arc::new(crate::auto::build_router(
            r,
            &models,
            &unavailable,
            &primary_missing,
            embedder.as_ref(),
        )?)),
        None => None,
    };
    if let Some(r) = &router {
        model_order.extend(r.router.aliases.iter().cloned());
    }
    if cfg.cache.semantic.enabled && embedder.is_none() {
        tracing::warn!(
            "cache.semantic is enabled but the embedder is not loaded: semantic cache off"
        );
    }
    let usage_reference = reference_model(cfg);
    Ok(Gateway {
        usage_reference,
        embedder,
        router,
        models,
        model_order,
        unavailable,
        keys: Keys::new(keys),
        runtime_keys,
        open_on_purpose: cfg.auth == Some(cfgs::AuthMode::None),
        limits: Limits {
            max_body_bytes: cfg.limits.max_body_bytes,
            max_concurrent_requests: cfg.limits.max_concurrent_requests,
            request_timeout: cfg.limits.request_timeout,
            shutdown_timeout: cfg.limits.shutdown_timeout,
            header_read_timeout: cfg.limits.header_read_timeout,
            body_read_timeout: cfg.limits.body_read_timeout,
            max_connections: cfg.limits.max_connections,
            http2_max_concurrent_streams: cfg.limits.http2_max_concurrent_streams,
            http2_keepalive_interval: cfg.limits.http2_keepalive_interval,
        },
        created: unix_now(),
        policies,
        accounting,
        loaded,
        admin: crate::layers::admin_auth::AdminAccess {
            sha256: match (cfg.admin.key(), cfg.admin.key_sha256.as_deref()) {
                (Some(secret), _) => Some(sha256(secret)),
                (None, Some(h)) => {
                    Some(parse_sha256(h).context("admin.key_sha256 is not 64 hex digits")?)
                }
                (None, None) => None,
            },
            protect_metrics: cfg.admin.protect_metrics,
            sessions: admin_sessions,
        },
        cache,
    })
}

/// The counterfactual's reference model: `usage.reference_model`, else the configured
/// upstream model of the router's `remote` side (else of the alias `remote`), whether or not
/// its backend is enabled right now: the question is what the large model would cost.
fn reference_model(cfg: &cfgs::Config) -> Option<String> {
    if let Some(m) = cfg.usage.as_ref().and_then(|u| u.reference_model.clone()) {
        return Some(m);
    }
    let remote = cfg.router.as_ref().map_or("remote", |r| r.remote.as_str());
    let m = cfg.models.iter().find(|m| m.name == remote)?;
    Some(m.model.clone().unwrap_or_else(|| m.name.clone()))
}
