//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) in batches.
//!
//! # The spans of one request
//!
//! ```text
//! request                      server span; joins the caller's trace from `traceparent`
//! ├── auth                     slmgate.auth.result, slmgate.key.name
//! ├── classify                 slmgate.route.{target,strategy,category,score,threshold,reason}
//! ├── policy                   slmgate.policy.{rule,action}     (when `policies:` is set)
//! ├── cache                    slmgate.cache.result             (see [`cache_span`])
//! └── chat {model}             one per target tried: `upstream.call` (client) or
//!                              `local.generate`, with the GenAI attributes
//! ```
//!
//! The model-call spans follow the OpenTelemetry GenAI semantic conventions:
//! `gen_ai.operation.name` (`chat`), `gen_ai.provider.name` and `gen_ai.system` (`openai`, or
//! `slmgate.local` for the embedded model), `gen_ai.request.model`, `gen_ai.request.max_tokens`,
//! `gen_ai.request.temperature`, `gen_ai.request.top_p`, `gen_ai.response.model`,
//! `gen_ai.response.id`, `gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, plus `server.address`, `server.port`,
//! `http.response.status_code` and `error.type`. A streamed answer's span ends when the stream
//! does, so its usage and finish reason are on it. The upstream request carries a W3C
//! `traceparent` naming that span, so the provider's own spans join the trace.
//!
//! # Cost
//!
//! Every span here except `request` is a DEBUG span with the target [`TARGET`]. The log
//! filter (`info` by default) never enables them, so without an exporter each costs one
//! cached callsite check, and every attribute is computed only behind `!span.is_disabled()`
//! (no formatting, no parsing). With an exporter, the OpenTelemetry layer sees only these
//! spans, the request span and slmgate's own WARN/ERROR events (as span events); the layer
//! skips thread, source-location and busy/idle attributes, and a batch processor exports
//! off the request path (`OTEL_BSP_*` variables tune it).
//!
//! # Setting up
//!
//! [`init`] builds the exporter from the config's `telemetry:` section (`None` when tracing is
//! off); [`Telemetry::layer`] goes into the `tracing` subscriber next to the log layer, and
//! [`Telemetry::shutdown`] flushes what is still queued:
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! let cfg = slmgate_config::telemetry::Telemetry {
//!     otlp_endpoint: Some("http://127.0.0.1:4318".into()),
//!     ..Default::default()
//! };
//! let telemetry = slmgate_gateway::telemetry::init(&cfg).unwrap();
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::EnvFilter::new("info")))
//!     .with(telemetry.as_ref().map(|t| t.layer()))
//!     .init();
//! // ... serve ...
//! if let Some(t) = telemetry {
//!     t.shutdown();
//! }
//! ```
//!
//! No global state is touched (no global tracer provider or propagator): W3C trace context is
//! the only propagation format, and tests can run one provider per test.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::Stream;
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Array, InstrumentationScope, StringValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tower_http::trace::{DefaultOnResponse, OnResponse};
use tracing::field::Empty;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context as LayerContext, Filter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::call::Decision;
use slmgate_openai::chat::{ChatRequest, Usage};

/// The `tracing` target of every span made for export.
pub const TARGET: &str = "slmgate::otel";

/// The per-request root span (made by the stack's trace layer).
pub const REQUEST: &str = "request";
/// Client-key check.
pub const AUTH: &str = "auth";
/// The route decision (the router classifies routed aliases here).
pub const CLASSIFY: &str = "classify";
/// The `policies:` rules.
pub const POLICY: &str = "policy";
/// A response-cache lookup (see [`cache_span`]).
pub const CACHE: &str = "cache";
/// A call to an OpenAI-compatible backend (exported as `chat {model}`).
pub const UPSTREAM_CALL: &str = "upstream.call";
/// A generation by the embedded model (exported as `chat {model}`).
pub const LOCAL_GENERATE: &str = "local.generate";

/// `gen_ai.provider.name` of OpenAI-compatible backends.
pub const PROVIDER_OPENAI: &str = "openai";
/// `gen_ai.provider.name` of the embedded model.
pub const PROVIDER_LOCAL: &str = "slmgate.local";

/// How long one export may take (the HTTP request to the collector).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// A running trace pipeline: the tracer provider with its batch exporter.
///
/// Dropping it flushes and shuts the exporter down, like [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    endpoint: String,
    /// Share of requests without a caller's trace that are exported (see [`request_span`]).
    sample_ratio: f64,
    shut_down: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// Builds the OTLP pipeline for `cfg`; `Ok(None)` when tracing is off (no endpoint).
///
/// Safe to call inside or outside a Tokio runtime: export runs on the SDK's own thread with a
/// blocking HTTP client, independent of the server's runtime.
pub fn init(cfg: &slmgate_config::telemetry::Telemetry) -> anyhow::Result<Option<Telemetry>> {
    let Some(url) = cfg.traces_url() else {
        return Ok(None);
    };
    let client = BlockingHttpClient::new(EXPORT_TIMEOUT)?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(client);
    if !cfg.headers.is_empty() {
        builder = builder.with_headers(cfg.headers.clone().into_iter().collect());
    }
    let exporter = builder
        .build()
        .with_context(|| format!("telemetry: cannot build the OTLP exporter for {url}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // The head decision is made by [`request_span`] (the caller's `traceparent` flag,
        // else `sample_ratio`) before any span of the request exists; what it lets through
        // is kept, unless a caller's parent says otherwise.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let mut t = Telemetry::from_provider(provider);
    t.endpoint = url;
    t.sample_ratio = cfg.sample_ratio;
    Ok(Some(t))
}

impl Telemetry {
    /// Wraps an already built provider (a custom exporter or processor, e.g. in tests).
    pub fn from_provider(provider: SdkTracerProvider) -> Self {
        let scope = InstrumentationScope::builder("slmgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Telemetry {
            provider,
            tracer,
            endpoint: String::new(),
            sample_ratio: 1.0,
            shut_down: false,
        }
    }

    /// The `tracing` layer that turns slmgate's spans into OpenTelemetry spans, with its
    /// filter attached: compose it with the log layer in one subscriber.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        EXPORTER_LAYER.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            // Per-span extras that cost an allocation or a clock read each and that the
            // GenAI attributes make redundant.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Nothing here reads `opentelemetry::Context::current()`: skip attaching it on
            // every poll.
            .with_context_activation(false)
            .with_filter(ExportFilter {
                sample_ratio: self.sample_ratio,
            })
    }

    /// Where spans go (`…/v1/traces`); empty for a provider given to [`Telemetry::from_provider`].
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Exports every finished span now (blocks until the collector answered or timed out).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.provider
            .force_flush()
            .context("telemetry: flushing spans")
    }

    /// Flushes and stops the exporter; spans finished after this are dropped.
    pub fn shutdown(mut self) {
        self.shut_down = true;
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry: shutting the exporter down");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if !self.shut_down {
            let _ = self.provider.shutdown();
        }
    }
}

/// OTLP over reqwest's blocking client: the SDK's batch processor exports from its own
/// thread (outside any async runtime), where a blocking client is the natural fit.
#[derive(Debug)]
struct BlockingHttpClient(reqwest::blocking::Client);

impl BlockingHttpClient {
    fn new(timeout: Duration) -> anyhow::Result<Self> {
        // The blocking client starts a runtime of its own, which must not happen on a thread
        // that already runs one (`init` may be called inside Tokio, as tests do).
        let client = std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .build()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("telemetry: building the OTLP HTTP client panicked"))?
        .context("telemetry: building the OTLP HTTP client")?;
        Ok(BlockingHttpClient(client))
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::blocking::Request::try_from(request)?;
        let response = self.0.execute(request)?;
        let status = response.status();
        let headers = response.headers().clone();
        // Collector answers are a few bytes of protobuf (partial-success counts).
        let body = response.bytes()?;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// What the OpenTelemetry layer sees: sampled request spans, [`TARGET`] spans (made only
/// inside sampled requests), and slmgate's WARN/ERROR events. Also the marker [`exporting`] looks for, and where
/// [`request_span`] finds the sampling ratio.
#[derive(Clone, Copy, Debug)]
pub struct ExportFilter {
    sample_ratio: f64,
}

impl ExportFilter {
    fn wants(meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            meta.target() == TARGET || (meta.name() == REQUEST && meta.target() == SAMPLED_TARGET)
        } else {
            *meta.level() <= Level::WARN && meta.target().starts_with("slmgate")
        }
    }
}

impl<S> Filter<S> for ExportFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        Self::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Decided once per callsite and cached by `tracing`. (Step spans of unsampled
        // requests are never made: see `step_spans_wanted`.)
        if Self::wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
}

/// True when `span` is exported: the OpenTelemetry layer made a sampled span of it (a step
/// span of an unsampled request, or a request span that is only logged, is not).
pub fn exporting(span: &Span) -> bool {
    !span.is_disabled()
        && span
            .with_subscriber(|(_, dispatch)| dispatch.downcast_ref::<ExportFilter>().is_some())
            .unwrap_or(false)
        && span.context().span().span_context().is_sampled()
}

/// Set once an OpenTelemetry layer exists in this process (see [`step_spans_wanted`]).
static EXPORTER_LAYER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a step span made now could be exported: always without an exporter (the span is
/// then only a disabled DEBUG callsite, for logs), and with one only inside a sampled
/// request or another exported step span. An unsampled request thus costs no span at all
/// per step: the OpenTelemetry layer would otherwise build (and drop) span data for each.
fn step_spans_wanted() -> bool {
    if !EXPORTER_LAYER.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    Span::current()
        .metadata()
        .is_some_and(|m| m.target() == SAMPLED_TARGET || m.target() == TARGET)
}

// ---------------------------------------------------------------------------------------
// Recording.

/// `Some(value)` as a field value for [`record_all!`].
#[inline]
fn val<T: tracing::Value>(v: &T) -> Option<&dyn tracing::Value> {
    Some(v)
}

/// An optional field value for [`record_all!`].
#[inline]
fn opt<T: tracing::Value>(v: &Option<T>) -> Option<&dyn tracing::Value> {
    v.as_ref().map(|v| v as &dyn tracing::Value)
}

/// Records several fields in one pass through the subscriber (each `Span::record` is a
/// pass of its own). The names are this module's declared fields: an unknown one skips the
/// whole record, which the tests catch as a missing attribute.
macro_rules! record_all {
    ($span:expr, $( $f:ident : $name:literal = $value:expr ),+ $(,)?) => {{
        let span: &Span = $span;
        if let Some(meta) = span.metadata() {
            let fields = meta.fields();
            if let ($(Some($f),)+) = ($(fields.field($name),)+) {
                span.record_all(&fields.value_set(&[$( (&$f, $value) ),+]));
            }
        }
    }};
}

// ---------------------------------------------------------------------------------------
// The request (server) span.

/// The stack's per-request span: `request` with the method, path and request id; when
/// exporting, also a server span joined to the caller's `traceparent`.
pub fn request_span(
    method: &http::Method,
    path: &str,
    request_id: &str,
    headers: &HeaderMap,
) -> Span {
    let ratio = tracing::dispatcher::get_default(|d| {
        d.downcast_ref::<ExportFilter>().map(|f| f.sample_ratio)
    });
    let exporting_now = ratio.is_some();
    // The caller's trace, when it sent one: its sampled flag decides.
    let parent = (exporting_now && headers.contains_key("traceparent"))
        .then(|| PROPAGATOR.extract(&HeaderExtractor(headers)))
        .filter(|cx| cx.span().span_context().is_valid());
    let sampled = exporting_now
        && match &parent {
            Some(cx) => cx.span().span_context().is_sampled(),
            None => head_sampled(ratio.unwrap_or(1.0)),
        };
    if !sampled {
        // Exactly the span the logs always had; not exported, and neither are the steps
        // inside it (see [`ExportFilter`]).
        return tracing::info_span!(target: UNSAMPLED_TARGET, REQUEST,
            method = %method, path = %path, request_id = %request_id);
    }
    let span = tracing::info_span!(target: SAMPLED_TARGET, REQUEST,
        method = %method, path = %path, request_id = %request_id,
        otel.kind = "server",
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    if let Some(cx) = parent {
        // Fails only when the span has already started, which it cannot have yet.
        let _ = span.set_parent(cx);
    }
    span
}

/// The `tracing` target of an exported (sampled) request span.
const SAMPLED_TARGET: &str = "slmgate_gateway::stack";
/// The `tracing` target of a request span that is only logged.
const UNSAMPLED_TARGET: &str = "slmgate_gateway::stack::unsampled";

/// The head-sampling decision for a request that brought no trace of its own: kept with
/// probability `sample_ratio`.
fn head_sampled(ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}

/// The trace layer's response hook: records `http.response.status_code` (and an error status
/// for 5xx) on an exported request span, then logs like tower-http's default.
pub fn on_response<B>(res: &http::Response<B>, latency: Duration, span: &Span) {
    let status = res.status();
    if status.is_server_error() {
        record_all!(span,
            a: "http.response.status_code" = val(&i64::from(status.as_u16())),
            b: "otel.status_code" = val(&"error"),
        );
    } else {
        record_all!(span, a: "http.response.status_code" = val(&i64::from(status.as_u16())));
    }
    DefaultOnResponse::default().on_response(res, latency, span);
}

// ---------------------------------------------------------------------------------------
// Step spans.

/// The span around the client-key check (made only when keys are configured: an open
/// gateway checks nothing).
#[inline]
pub fn auth_span() -> Span {
    if !step_spans_wanted() {
        return Span::none();
    }
    tracing::debug_span!(target: TARGET, AUTH,
        slmgate.auth.result = Empty,
        slmgate.key.name = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records the auth outcome: `key`, `missing` or `invalid`.
pub fn record_auth(span: &Span, result: &'static str, key: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let failed = matches!(result, "missing" | "invalid");
    record_all!(span,
        a: "slmgate.auth.result" = val(&result),
        b: "slmgate.key.name" = opt(&key),
        c: "error.type" = if failed { val(&"unauthorized") } else { None },
        d: "otel.status_code" = if failed { val(&"error") } else { None },
    );
}

/// The span around the route decision.
#[inline]
pub fn classify_span() -> Span {
    if !step_spans_wanted() {
        return Span::none();
    }
    tracing::debug_span!(target: TARGET, CLASSIFY,
        slmgate.route.target = Empty,
        slmgate.route.strategy = Empty,
        slmgate.route.category = Empty,
        slmgate.route.score = Empty,
        slmgate.route.threshold = Empty,
        slmgate.route.reason = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records a [`Decision`] on the classify span.
pub fn record_decision(span: &Span, d: &Decision) {
    if span.is_disabled() {
        return;
    }
    let score = d.score.map(f64::from);
    let threshold = d.threshold.map(f64::from);
    record_all!(span,
        a: "slmgate.route.target" = val(&d.target.as_str()),
        b: "slmgate.route.strategy" = val(&d.strategy),
        c: "slmgate.route.category" = opt(&d.category.as_deref()),
        e: "slmgate.route.score" = opt(&score),
        f: "slmgate.route.threshold" = opt(&threshold),
        g: "slmgate.route.reason" = val(&d.reason.as_str()),
    );
}

/// Marks a span failed with an OpenAI error code as `error.type`.
pub fn record_error(span: &Span, code: &'static str) {
    if span.is_disabled() {
        return;
    }
    record_all!(span,
        a: "error.type" = val(&code),
        b: "otel.status_code" = val(&"error"),
    );
}

/// The span around the policy rules.
#[inline]
pub fn policy_span() -> Span {
    if !step_spans_wanted() {
        return Span::none();
    }
    tracing::debug_span!(target: TARGET, POLICY,
        slmgate.policy.rule = Empty,
        slmgate.policy.action = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records the matched rule and what it did (`deny`, `allow`, `route`, `modify`).
pub fn record_policy(span: &Span, rule: &str, action: &'static str) {
    if span.is_disabled() {
        return;
    }
    record_all!(span,
        a: "slmgate.policy.rule" = val(&rule),
        b: "slmgate.policy.action" = val(&action),
        c: "error.type" = if action == "deny" { val(&"policy_denied") } else { None },
    );
}

/// The span a response cache wraps its lookup in (a child of the request span).
///
/// Convention: create it right before the lookup, record the outcome with
/// [`record_cache`], and drop it before calling the inner service, so a miss's upstream call
/// is not its child:
///
/// ```
/// # async fn lookup() -> Option<String> { None }
/// use tracing::Instrument as _;
/// use slmgate_gateway::telemetry::{cache_span, record_cache};
/// # async fn run() {
/// let span = cache_span();
/// let hit = lookup().instrument(span.clone()).await;
/// record_cache(&span, if hit.is_some() { "hit" } else { "miss" }, Some("exact"), None);
/// drop(span);
/// # }
/// ```
#[inline]
pub fn cache_span() -> Span {
    if !step_spans_wanted() {
        return Span::none();
    }
    tracing::debug_span!(target: TARGET, CACHE,
        slmgate.cache.result = Empty,
        slmgate.cache.kind = Empty,
        slmgate.cache.similarity = Empty,
    )
}

/// Records a cache outcome: `result` is `hit`, `miss` or `bypass`; `kind` is `exact` or
/// `semantic`; `similarity` is a semantic hit's score.
pub fn record_cache(
    span: &Span,
    result: &'static str,
    kind: Option<&'static str>,
    similarity: Option<f32>,
) {
    if span.is_disabled() {
        return;
    }
    let similarity = similarity.map(f64::from);
    record_all!(span,
        a: "slmgate.cache.result" = val(&result),
        b: "slmgate.cache.kind" = opt(&kind),
        c: "slmgate.cache.similarity" = opt(&similarity),
    );
}

// ---------------------------------------------------------------------------------------
// Model-call spans (GenAI conventions).

/// The request side of a model call, known when its span starts.
struct CallFacts<'a> {
    provider: &'static str,
    backend: &'a str,
    model: &'a str,
    stream: bool,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    address: Option<&'a str>,
    port: Option<i64>,
}

impl<'a> CallFacts<'a> {
    fn new(provider: &'static str, backend: &'a str, model: &'a str, req: &ChatRequest) -> Self {
        let max_tokens = req
            .field::<i64>("max_completion_tokens")
            .ok()
            .flatten()
            .or_else(|| req.field::<i64>("max_tokens").ok().flatten());
        CallFacts {
            provider,
            backend,
            model,
            stream: req.stream,
            max_tokens,
            temperature: req.field::<f64>("temperature").ok().flatten(),
            top_p: req.field::<f64>("top_p").ok().flatten(),
            address: None,
            port: None,
        }
    }
}

/// One model-call span, every request-side value given at creation (one pass through the
/// subscriber); `$kind` is the OpenTelemetry span kind. The values are evaluated only when
/// the span is enabled.
macro_rules! model_call_span {
    ($name:expr, $kind:literal, $facts:expr) => {
        tracing::debug_span!(target: TARGET, $name,
            otel.name = %format_args!("chat {}", $facts().model),
            otel.kind = $kind,
            otel.status_code = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = $facts().provider,
            gen_ai.request.model = $facts().model,
            gen_ai.request.max_tokens = $facts().max_tokens,
            gen_ai.request.temperature = $facts().temperature,
            gen_ai.request.top_p = $facts().top_p,
            gen_ai.response.model = Empty,
            gen_ai.response.id = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            server.address = $facts().address,
            server.port = $facts().port,
            http.response.status_code = Empty,
            error.type = Empty,
            slmgate.backend = $facts().backend,
            slmgate.stream = $facts().stream,
            slmgate.cascade.escalated = Empty,
        )
    };
}

/// The span of one call to an OpenAI-compatible backend: a client span named
/// `chat {model}`.
pub fn upstream_span(backend: &str, url: &reqwest::Url, model: &str, req: &ChatRequest) -> Span {
    if !step_spans_wanted() {
        return Span::none();
    }
    // Built at most once, and only when the span is enabled.
    let facts = std::cell::OnceCell::new();
    let facts = || {
        facts.get_or_init(|| CallFacts {
            address: url.host_str(),
            port: url.port_or_known_default().map(i64::from),
            ..CallFacts::new(PROVIDER_OPENAI, backend, model, req)
        })
    };
    model_call_span!(UPSTREAM_CALL, "client", facts)
}

/// The span of one generation by the embedded model, named `chat {model}`.
pub fn local_span(backend: &str, model: &str, req: &ChatRequest) -> Span {
    if !step_spans_wanted() {
        return Span::none();
    }
    let facts = std::cell::OnceCell::new();
    let facts = || facts.get_or_init(|| CallFacts::new(PROVIDER_LOCAL, backend, model, req));
    model_call_span!(LOCAL_GENERATE, "internal", facts)
}

/// The model-call span the current code runs in, or a disabled span. Backends call this
/// instead of taking a span argument: the forwarding service runs each call inside its span.
pub fn current_model_span() -> Span {
    let span = Span::current();
    let ours = span.metadata().is_some_and(|m| {
        m.target() == TARGET && (m.name() == UPSTREAM_CALL || m.name() == LOCAL_GENERATE)
    });
    if ours {
        span
    } else {
        Span::none()
    }
}

/// The W3C trace-context headers (`traceparent`, `tracestate`) naming `span`, for the
/// upstream request; `None` when not exporting.
pub fn trace_headers(span: &Span) -> Option<HeaderMap> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut headers = HeaderMap::new();
    PROPAGATOR.inject_context(&cx, &mut HeaderInjector(&mut headers));
    Some(headers)
}

/// Records the upstream's HTTP status on a model-call span.
pub fn record_status(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    record_all!(span, a: "http.response.status_code" = val(&i64::from(status)));
}

/// Records that a cascade dropped this local answer and escalated.
pub fn record_escalated(span: &Span) {
    if span.is_disabled() {
        return;
    }
    record_all!(span, a: "slmgate.cascade.escalated" = val(&true));
}

/// Records what an answer said on its model-call span: response model and id, token usage
/// (i64: the OpenTelemetry layer would write u64 fields as strings) and finish reasons.
pub fn record_answer(
    span: &Span,
    model: Option<&str>,
    id: Option<&str>,
    usage: Option<(u64, u64)>,
    finish_reasons: &[&str],
) {
    if span.is_disabled() {
        return;
    }
    let input = usage.map(|u| i64::try_from(u.0).unwrap_or(i64::MAX));
    let output = usage.map(|u| i64::try_from(u.1).unwrap_or(i64::MAX));
    record_all!(span,
        a: "gen_ai.response.model" = opt(&model),
        b: "gen_ai.response.id" = opt(&id),
        c: "gen_ai.usage.input_tokens" = opt(&input),
        d: "gen_ai.usage.output_tokens" = opt(&output),
    );
    if !finish_reasons.is_empty() {
        // A string array: not expressible as a `tracing` field.
        let values: Vec<StringValue> = finish_reasons
            .iter()
            .map(|r| StringValue::from(r.to_string()))
            .collect();
        span.set_attribute(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(values)),
        );
    }
}

/// The parts of a completion (or chunk) the span reports.
#[derive(Deserialize)]
struct Facts<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceFacts<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceFacts<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

/// Records a complete JSON answer's model, id, usage and finish reasons on the span, in one
/// parse; returns the usage (for the caller's own accounting). Only call when the span is
/// enabled.
pub fn record_completion(span: &Span, body: &[u8]) -> Option<Usage> {
    let facts: Facts<'_> = serde_json::from_slice(body).ok()?;
    let finish: Vec<&str> = facts
        .choices
        .iter()
        .flatten()
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    record_answer(
        span,
        facts.model.as_deref(),
        facts.id.as_deref(),
        facts
            .usage
            .as_ref()
            .map(|u| (u.prompt_tokens, u.completion_tokens)),
        &finish,
    );
    facts.usage
}

/// Follows a streamed answer for its model-call span: the response model from the first
/// chunk, finish reasons as they come, usage and completeness at the end ([`StreamTrace::end`]).
#[derive(Debug)]
pub struct StreamTrace {
    span: Span,
    seen_first: bool,
    finish: Vec<String>,
}

impl StreamTrace {
    /// Follows `span`; `None` when it is not exported (the stream then costs nothing extra).
    pub fn new(span: Span) -> Option<Self> {
        (!span.is_disabled()).then_some(StreamTrace {
            span,
            seen_first: false,
            finish: Vec::new(),
        })
    }

    /// The span, to poll the stream in (see [`InSpan`]).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Looks at one chunk's JSON. Only the first chunk and chunks with a finish reason are
    /// parsed.
    pub fn observe(&mut self, data: &str) {
        let has_finish =
            data.contains("\"finish_reason\"") && !data.contains("\"finish_reason\":null");
        if self.seen_first && !has_finish {
            return;
        }
        let Ok(facts) = serde_json::from_str::<Facts<'_>>(data) else {
            return;
        };
        if !self.seen_first {
            self.seen_first = true;
            record_answer(
                &self.span,
                facts.model.as_deref(),
                facts.id.as_deref(),
                None,
                &[],
            );
        }
        for c in facts.choices.iter().flatten() {
            if let Some(r) = c.finish_reason.as_deref() {
                self.finish.push(r.to_string());
            }
        }
    }

    /// Records what the whole stream said; `complete` is false when it broke off.
    pub fn end(&self, usage: Option<&Usage>, complete: bool) {
        let finish: Vec<&str> = self.finish.iter().map(String::as_str).collect();
        record_answer(
            &self.span,
            None,
            None,
            usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            &finish,
        );
        if !complete {
            record_error(&self.span, "stream_incomplete");
        }
    }
}

pin_project! {
    /// A stream polled inside `span`, so that a model-call span ends when the answer's stream
    /// does (its end time is the last poll) and closes when the stream is dropped.
    pub struct InSpan<S> {
        #[pin]
        inner: S,
        span: Span,
    }
}

impl<S> InSpan<S> {
    /// Polls `inner` inside `span`.
    pub fn new(inner: S, span: Span) -> Self {
        InSpan { inner, span }
    }
}

impl<S: Stream> Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing_subscriber::prelude::*;

    fn pipeline() -> (Telemetry, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        (Telemetry::from_provider(provider), exporter)
    }

    fn attr(span: &SpanData, key: &str) -> Option<Value> {
        span.attributes
            .iter()
            .rev()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    fn chat(body: &str) -> ChatRequest {
        ChatRequest::parse(Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn nothing_is_exported_without_the_layer() {
        // Only a log layer at `info`. (Whether the step spans are disabled outright depends on
        // `tracing`'s process-wide callsite cache, which the parallel tests here share; in the
        // binary, with one subscriber, they are.)
        let sub = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO));
        tracing::subscriber::with_default(sub, || {
            let req = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
            let url = reqwest::Url::parse("http://127.0.0.1:9/v1").unwrap();
            let s = upstream_span("up", &url, "m", &req);
            assert!(!exporting(&s));
            assert!(trace_headers(&s).is_none());
            let request = request_span(&http::Method::POST, "/", "id", &HeaderMap::new());
            assert!(!request.is_disabled());
            assert!(!exporting(&request));
        });
    }

    #[test]
    fn head_sampling_decides_for_the_request_and_its_steps() {
        let req = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let url = reqwest::Url::parse("http://127.0.0.1:9/v1").unwrap();
        let traceparent = |flags: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "traceparent",
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}")
                    .parse()
                    .unwrap(),
            );
            h
        };
        // (ratio, the caller's headers, exported?)
        for (ratio, headers, want) in [
            (1.0, HeaderMap::new(), true),
            (0.0, HeaderMap::new(), false),
            (0.0, traceparent("01"), true),
            (1.0, traceparent("00"), false),
        ] {
            let (mut t, exporter) = pipeline();
            t.sample_ratio = ratio;
            let sub = tracing_subscriber::registry().with(t.layer());
            tracing::subscriber::with_default(sub, || {
                let request = request_span(&http::Method::POST, "/", "id", &headers);
                assert_eq!(exporting(&request), want, "{ratio} {headers:?}");
                let _in = request.enter();
                let call = upstream_span("up", &url, "m", &req);
                assert_eq!(trace_headers(&call).is_some(), want);
                let auth = auth_span();
                assert_eq!(
                    auth.is_disabled(),
                    !want,
                    "a step span follows its request: {ratio} {headers:?}"
                );
            });
            let n = exporter.get_finished_spans().unwrap().len();
            assert_eq!(n, if want { 3 } else { 0 }, "{ratio} {headers:?}");
        }
    }

    #[test]
    fn model_span_carries_the_genai_attributes() {
        let (t, exporter) = pipeline();
        let sub = tracing_subscriber::registry().with(t.layer());
        tracing::subscriber::with_default(sub, || {
            let req = chat(
                r#"{"model":"remote","messages":[{"role":"user","content":"hi"}],"max_tokens":64,"temperature":0.5}"#,
            );
            let url = reqwest::Url::parse("https://api.example.com/v1/chat/completions").unwrap();
            // Step spans are exported inside a sampled request (open until the end).
            let request = request_span(&http::Method::POST, "/", "id", &HeaderMap::new());
            let _in = request.enter();
            let span = upstream_span("openai", &url, "gpt-x", &req);
            assert!(exporting(&span));
            let headers = trace_headers(&span).expect("traceparent");
            let tp = headers["traceparent"].to_str().unwrap().to_string();
            record_status(&span, 200);
            let usage = record_completion(
                &span,
                br#"{"id":"c1","model":"gpt-x-2024","choices":[{"finish_reason":"stop","message":{}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
            );
            assert_eq!(usage.map(|u| u.completion_tokens), Some(5));
            drop(span);
            let spans = exporter.get_finished_spans().unwrap();
            assert_eq!(spans.len(), 1);
            let s = &spans[0];
            assert_eq!(s.name, "chat gpt-x");
            assert_eq!(s.span_kind, SpanKind::Client);
            let sc = &s.span_context;
            assert_eq!(
                tp,
                format!("00-{}-{}-01", sc.trace_id(), sc.span_id()),
                "the upstream sees this span"
            );
            let a = |k| attr(s, k);
            assert_eq!(a("gen_ai.operation.name"), Some(Value::from("chat")));
            assert_eq!(a("gen_ai.provider.name"), Some(Value::from("openai")));
            assert_eq!(a("gen_ai.request.model"), Some(Value::from("gpt-x")));
            assert_eq!(a("gen_ai.request.max_tokens"), Some(Value::I64(64)));
            assert_eq!(a("gen_ai.request.temperature"), Some(Value::F64(0.5)));
            assert_eq!(a("gen_ai.response.model"), Some(Value::from("gpt-x-2024")));
            assert_eq!(a("gen_ai.response.id"), Some(Value::from("c1")));
            assert_eq!(a("gen_ai.usage.input_tokens"), Some(Value::I64(3)));
            assert_eq!(a("gen_ai.usage.output_tokens"), Some(Value::I64(5)));
            assert_eq!(
                a("gen_ai.response.finish_reasons"),
                Some(Value::Array(Array::String(vec!["stop".into()])))
            );
            assert_eq!(a("server.address"), Some(Value::from("api.example.com")));
            assert_eq!(a("server.port"), Some(Value::I64(443)));
            assert_eq!(a("http.response.status_code"), Some(Value::I64(200)));
            assert_eq!(a("slmgate.stream"), Some(Value::Bool(false)));
            // No per-span extras.
            assert_eq!(a("thread.id"), None);
            assert_eq!(a("code.file.path"), None);
        });
    }

    #[test]
    fn client_traceparent_becomes_the_parent_and_errors_set_status() {
        let (t, exporter) = pipeline();
        let sub = tracing_subscriber::registry().with(t.layer());
        tracing::subscriber::with_default(sub, || {
            let mut h = HeaderMap::new();
            h.insert(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                    .parse()
                    .unwrap(),
            );
            let request = request_span(&http::Method::POST, "/v1/chat/completions", "id", &h);
            let resp = http::Response::builder().status(502).body(()).unwrap();
            on_response(&resp, Duration::from_millis(1), &request);
            let auth = request.in_scope(auth_span);
            record_auth(&auth, "invalid", None);
            drop(auth);
            drop(request);
            let spans = exporter.get_finished_spans().unwrap();
            let root = spans.iter().find(|s| s.name == "request").unwrap();
            let auth = spans.iter().find(|s| s.name == "auth").unwrap();
            assert_eq!(
                root.span_context.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
            assert_eq!(root.parent_span_id.to_string(), "b7ad6b7169203331");
            assert_eq!(root.span_kind, SpanKind::Server);
            assert_eq!(
                attr(root, "http.response.status_code"),
                Some(Value::I64(502))
            );
            assert!(matches!(root.status, Status::Error { .. }));
            assert_eq!(auth.parent_span_id, root.span_context.span_id());
            assert_eq!(attr(auth, "error.type"), Some(Value::from("unauthorized")));
            assert!(matches!(auth.status, Status::Error { .. }));
        });
    }

    #[test]
    fn stream_span_ends_with_the_stream() {
        use futures::StreamExt;
        let (t, exporter) = pipeline();
        let sub = tracing_subscriber::registry().with(t.layer());
        let _g = tracing::subscriber::set_default(sub);
        let req =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
        let request = request_span(&http::Method::POST, "/", "id", &HeaderMap::new());
        let _in = request.enter();
        let span = local_span("local", "qwen", &req);
        let mut trace = StreamTrace::new(span.clone()).unwrap();
        trace.observe(r#"{"id":"x","model":"qwen-0.5b","choices":[{"delta":{"content":"a"},"finish_reason":null}]}"#);
        trace.observe(r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#);
        trace.end(
            Some(&Usage {
                prompt_tokens: 2,
                completion_tokens: 9,
                total_tokens: 11,
                ..Usage::default()
            }),
            true,
        );
        drop(trace);
        let s = InSpan::new(futures::stream::iter([1, 2, 3]), span);
        let items: Vec<i32> = futures::executor::block_on(s.collect());
        assert_eq!(items, [1, 2, 3]);
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1, "closed once the stream is dropped");
        let s = &spans[0];
        assert_eq!(s.name, "chat qwen");
        assert_eq!(s.span_kind, SpanKind::Internal);
        assert_eq!(
            attr(s, "gen_ai.provider.name"),
            Some(Value::from("slmgate.local"))
        );
        assert_eq!(
            attr(s, "gen_ai.response.model"),
            Some(Value::from("qwen-0.5b"))
        );
        assert_eq!(attr(s, "gen_ai.usage.output_tokens"), Some(Value::I64(9)));
        assert_eq!(
            attr(s, "gen_ai.response.finish_reasons"),
            Some(Value::Array(Array::String(vec!["length".into()])))
        );
    }
}
