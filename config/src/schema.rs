//! The typed configuration. Every struct denies unknown keys; defaults are documented on each
//! field and in README.md's config reference.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`). Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Upstream backends (remote OpenAI-compatible APIs and the embedded local model).
    #[serde(default, skip)]
    pub backends: Vec<Backend>,
    /// Public model names clients may ask for.
    #[serde(default)]
    pub models: Vec<Model>,
    /// The embedded sentence embedder (`/v1/embeddings`, routing, semantic cache).
    #[serde(default)]
    pub embedder: Option<Embedder>,
    /// Client API keys. None configured = the gateway is open.
    #[serde(default)]
    pub keys: Vec<Key>,
    /// Whether client requests need a key, said explicitly (absent = they do when `keys`
    /// lists any). A reload that would leave a keyed gateway without keys is refused unless
    /// the new file says `auth: none`.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// Whether the file lists `models:` at all (`models: []` counts, an absent or empty
    /// `models:` key does not): a reload that removes every model must say so with
    /// `models: []`. Set by the loader, not read from a key of that name.
    #[serde(skip)]
    pub models_declared: bool,
    /// Query routing between the local and the remote model (the `auto` alias).
    #[serde(default)]
    pub router: Option<crate::routing::Router>,
    /// Policy rules (see [`crate::policy`]). Absent = no rules.
    #[serde(default)]
    pub policies: Option<slmgate_policies::PoliciesConfig>,
    /// USD per 1M tokens by upstream model name; the entry `local` prices `kind: local`
    /// backends (default 0). Unpriced models cost 0.
    #[serde(default)]
    pub pricing: slmgate_policies::pricing::PriceTable,
    /// Teams with shared budgets.
    #[serde(default)]
    pub teams: Vec<crate::policy::Team>,
    /// Who may use the operator endpoints (`/admin/*`, `/v1/usage`, `/dashboard`) and
    /// whether `/metrics` is open.
    #[serde(default)]
    pub admin: Admin,
    /// Usage records (see [`crate::usage`]). Absent = none written.
    #[serde(default)]
    pub usage: Option<crate::usage::Usage>,
    /// Response caching (exact and semantic); see [`crate::cache`]. Absent = off.
    #[serde(default)]
    pub cache: crate::cache::Cache,
    /// OpenTelemetry trace export (see [`crate::telemetry`]). Off unless an OTLP endpoint is
    /// configured here or in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub telemetry: crate::telemetry::Telemetry,
    /// Where rate-limit cells and budget spend live (see [`crate::state`]). Absent = in
    /// process memory, per instance.
    #[serde(default)]
    pub state: crate::state::State,
}

/// `auth:`: how client requests (`/v1/*`) are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every client request needs one of `keys` (which must list at least one).
    Keys,
    /// No client keys, on purpose: the API is open (`keys` must be empty), and without an
    /// admin key the operator endpoints answer loopback clients only.
    None,
}

/// Operator access (`admin:`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The admin key (`Authorization: Bearer <key>`) for `/admin/*`, `/v1/usage` and
    /// `/dashboard`. Empty or absent = those endpoints answer only to loopback clients.
    /// The embedded default reads `${SLMGATE_ADMIN_KEY}`.
    #[serde(default)]
    pub key: Option<String>,
    /// The admin key as a sha256 hex digest (`slmgate keys hash`), instead of `key`.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// `/metrics` needs the admin key too (default false: open on the listen address, as
    /// Prometheus scrapers expect).
    #[serde(default)]
    pub protect_metrics: bool,
    /// No admin key, on purpose: the operator endpoints answer loopback clients only
    /// (default false). Needed, like `auth: none`, for a reload that removes the admin key
    /// the running config has; conflicts with `key` and `key_sha256`.
    #[serde(default)]
    pub loopback_only: bool,
}

impl Admin {
    /// The configured admin secret, if any (empty strings count as none).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref().filter(|k| !k.is_empty())
    }

    /// Returns true if and only if an admin key is configured (in clear or as a digest).
    pub fn has_key(&self) -> bool {
        self.key().is_some() || self.key_sha256.as_deref().is_some_and(|h| !h.is_empty())
    }
}

pub(crate) fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body in bytes (413 above). Default 4 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Requests processed at once; more are shed with 503 + `Retry-After`. Default 1024.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Whole-request deadline inside the gateway (504 after). Default 10m.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests. Default 30s.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Time a connection has to deliver a complete request head after it opens (and, for
    /// HTTP/1 keep-alive, after its previous response); then it is closed. Default 15s.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest stall between two chunks of a request body (408 after). Default 30s.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Open client connections at most; at the cap new ones wait in the listen backlog.
    /// Lowered at startup to fit the open-file limit. Default 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection. Default 128.
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval; a peer that does not answer within it is dropped.
    /// Default 30s.
    #[serde(default = "default_http2_keepalive_interval", with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
}

fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_max_concurrent() -> usize {
    1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    4096
}
fn default_http2_max_concurrent_streams() -> u32 {
    128
}
fn default_http2_keepalive_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_concurrent_requests: default_max_concurrent(),
            request_timeout: default_request_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            max_connections: default_max_connections(),
            http2_max_concurrent_streams: default_http2_max_concurrent_streams(),
            http2_keepalive_interval: default_http2_keepalive_interval(),
        }
    }
}

/// Whether a backend is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enabled {
    /// Always.
    True,
    /// Never.
    False,
    /// When it can work: an `openai` backend with a non-empty `api_key` (or a `base_url`
    /// on loopback, which needs none); a `local` backend whose model file exists.
    #[default]
    Auto,
}

impl<'de> Deserialize<'de> for Enabled {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Enabled::True),
            Raw::Bool(false) => Ok(Enabled::False),
            Raw::Str(s) => match s.as_str() {
                "true" => Ok(Enabled::True),
                "false" => Ok(Enabled::False),
                "auto" => Ok(Enabled::Auto),
                other => Err(serde::de::Error::custom(format!(
                    "expected true, false or auto, found `{other}`"
                ))),
            },
        }
    }
}

/// A configured backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Unique name, referenced by `models[].backend`.
    pub name: String,
    /// Whether the backend is used.
    pub enabled: Enabled,
    /// What it is.
    pub kind: BackendKind,
}

impl Backend {
    /// Resolves `enabled: auto` (see [`Enabled::Auto`]).
    pub fn is_enabled(&self) -> bool {
        match self.enabled {
            Enabled::True => true,
            Enabled::False => false,
            Enabled::Auto => match &self.kind {
                BackendKind::OpenAi(o) => {
                    o.api_key.as_deref().is_some_and(|k| !k.is_empty())
                        || is_loopback_url(&o.base_url)
                }
                BackendKind::Local(l) => local_model_present(&l.model),
            },
        }
    }

    /// A short description of why `enabled: auto` resolved to false.
    pub fn disabled_reason(&self) -> String {
        match (&self.enabled, &self.kind) {
            (Enabled::False, _) => format!("backend `{}` has `enabled: false`", self.name),
            (_, BackendKind::OpenAi(o)) => format!(
                "backend `{}` is disabled: its api_key is empty (set the environment variable it reads, e.g. {})",
                self.name,
                match o.dialect {
                    Dialect::OpenAi => "OPENAI_API_KEY",
                    Dialect::Azure => "AZURE_OPENAI_API_KEY",
                    Dialect::Anthropic => "ANTHROPIC_API_KEY",
                }
            ),
            (_, BackendKind::Local(l)) => format!(
                "backend `{}` is disabled: model file `{}` not found (run scripts/fetch-models.sh)",
                self.name, l.model
            ),
        }
    }
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// `hf:` references are fetched on demand; a path must exist.
fn local_model_present(model: &str) -> bool {
    model.starts_with("hf:") || std::path::Path::new(model).exists()
}

/// Backend kinds.
#[derive(Debug, Clone)]
pub enum BackendKind {
    /// Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server, ...).
    OpenAi(OpenAiBackend),
    /// The embedded small language model.
    Local(LocalBackend),
}

/// The wire dialect of an HTTP backend: which `kind` it was configured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// `kind: openai`: `POST {base_url}/chat/completions`, `Authorization: Bearer`.
    #[default]
    OpenAi,
    /// `kind: azure`: `POST {base_url}/openai/deployments/{model}/chat/completions?api-version=…`,
    /// `api-key` header; the target's `model` is the deployment name.
    Azure,
    /// `kind: anthropic`: `POST {base_url}/v1/messages`, `x-api-key` and `anthropic-version`
    /// headers; requests and answers translated to and from OpenAI's shape.
    Anthropic,
}

impl Dialect {
    /// The `kind` that selects it.
    pub fn kind(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Azure => "azure",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// The `base_url` of a `kind: anthropic` backend that gives none.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// `kind: openai`, and its variants `kind: azure` and `kind: anthropic` (see [`Dialect`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiBackend {
    /// Which API the backend speaks (set from `kind`, not a key of its own).
    #[serde(skip)]
    pub dialect: Dialect,
    /// `openai`: e.g. `https://api.openai.com/v1` (the path up to `/chat/completions`);
    /// `azure`: the resource endpoint, e.g. `https://myres.openai.azure.com`;
    /// `anthropic`: default `https://api.anthropic.com` (the path up to `/v1/messages`).
    pub base_url: String,
    /// `openai`: sent as `Authorization: Bearer`; `azure`: as `api-key`; `anthropic`: as
    /// `x-api-key`. The client's own key is never forwarded.
    #[serde(default, deserialize_with = "opt_stringish")]
    pub api_key: Option<String>,
    /// `kind: azure` only (and required there): the `api-version` query parameter, e.g.
    /// `2024-10-21`.
    #[serde(default, deserialize_with = "opt_stringish")]
    pub api_version: Option<String>,
    /// Extra headers sent upstream.
    #[serde(default, deserialize_with = "stringish_map")]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt deadline for the response headers and between stream chunks. Default 120s.
    #[serde(default = "default_backend_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// TCP/TLS connect deadline. Default 10s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries after the first attempt on connect errors, 429 and 5xx. Default 2.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff; doubles each retry, with full jitter. Default 200ms.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest wait between attempts, including an upstream `Retry-After`. Default 10s.
    #[serde(default = "default_max_retry_backoff", with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// Outlier ejection: skip this backend for a while after it keeps failing.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
}

/// `backends[].circuit_breaker` (`kind: openai`): when a backend is ejected, and for how long.
/// A failure is a connect error, a timeout, a 5xx, a body that is not a chat completion or a
/// stream broken before its first token; 429 and 4xx answers are not failures.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Whether the backend is ever ejected. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Failed attempts in a row that eject the backend. Default 5.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Share of failed attempts among the last `window` that ejects it. Default 0.5.
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
    /// Attempts the failure rate is measured over (it is only judged once that many were
    /// seen). Default 20.
    #[serde(default = "default_window")]
    pub window: u32,
    /// How long the first ejection lasts; each failed probe doubles it. Default 10s.
    #[serde(default = "default_ejection", with = "humantime_serde")]
    pub ejection: Duration,
    /// The longest ejection. Default 5m.
    #[serde(default = "default_max_ejection", with = "humantime_serde")]
    pub max_ejection: Duration,
}

fn default_true() -> bool {
    true
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_failure_rate() -> f64 {
    0.5
}
fn default_window() -> u32 {
    20
}
fn default_ejection() -> Duration {
    Duration::from_secs(10)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            enabled: true,
            consecutive_failures: default_consecutive_failures(),
            failure_rate: default_failure_rate(),
            window: default_window(),
            ejection: default_ejection(),
            max_ejection: default_max_ejection(),
        }
    }
}

fn default_backend_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_retries() -> u32 {
    2
}
fn default_retry_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_retry_backoff() -> Duration {
    Duration::from_secs(10)
}

/// In-memory weight format for the local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Quantize {
    /// Requantize to Q8_0 on load (the default when `quantize` is absent: fast on every
    /// backend; the embedded default config says `keep` for its llama-architecture Q4_1 file,
    /// which slmgate's own kernels run faster as it is).
    #[serde(rename = "q8_0")]
    #[default]
    Q8_0,
    /// Requantize to Q4K.
    #[serde(rename = "q4k")]
    Q4K,
    /// Keep the file's formats.
    #[serde(rename = "keep")]
    Keep,
}

/// `kind: local`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalBackend {
    /// GGUF file: a path, or `hf:owner/repo/file.gguf[@revision]`.
    pub model: String,
    /// A tokenizer.json overriding the one rebuilt from the GGUF metadata.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// A Jinja chat template overriding the GGUF's `tokenizer.chat_template`.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// `q8_0` (default), `q4k` or `keep`.
    #[serde(default)]
    pub quantize: Quantize,
    /// `cpu` (default), `cuda`, `cuda:N`, `metal`, `auto`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Cap on the context length (prompt + completion); default the model's.
    #[serde(default)]
    pub context_length: Option<usize>,
    /// Concurrent generations. Default 1 (CPU generation is compute-bound).
    #[serde(default = "one")]
    pub workers: usize,
    /// Requests allowed to wait for a worker. Default 32.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Longest wait for a worker. Default 30s.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// `max_tokens` when the client sends none. Default 512.
    #[serde(default = "default_local_max_tokens")]
    pub max_tokens: usize,
    /// `temperature` when the client sends none. Default 0 (greedy): OpenAI's default of 1
    /// makes a small model ramble (see the README's local-model table).
    #[serde(default)]
    pub temperature: f64,
    /// Repetition penalty when the client sends none (> 1 discourages repeats; `null` = off).
    #[serde(default = "default_local_repetition_penalty")]
    pub repetition_penalty: Option<f32>,
    /// Models whose chat template has an `enable_thinking` switch (Qwen3): reason in a
    /// `<think>` block before answering. Default false.
    #[serde(default)]
    pub thinking: bool,
}

pub(crate) fn default_device() -> String {
    "cpu".to_string()
}
fn one() -> usize {
    1
}
fn default_queue_size() -> usize {
    32
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_local_max_tokens() -> usize {
    512
}
fn default_local_repetition_penalty() -> Option<f32> {
    None
}

/// A public model name (alias) and where it goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The name clients send as `model`.
    pub name: String,
    /// Backend that serves it.
    pub backend: String,
    /// Upstream model name; default: the alias itself.
    #[serde(default)]
    pub model: Option<String>,
    /// More deployments of the same rank as `backend`/`model` (another region, another
    /// vLLM replica, another key): each request picks among them by `balance`, and tries
    /// the others of the rank before the `fallbacks`.
    #[serde(default)]
    pub deployments: Vec<Fallback>,
    /// How a request picks among `backend` and the `deployments`.
    #[serde(default)]
    pub balance: Balance,
    /// Tried in order when the previous target fails (after its retries).
    #[serde(default)]
    pub fallbacks: Vec<Fallback>,
}

/// How a request picks among an alias's deployments of equal rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// The one with the fewest requests in flight from this instance.
    LeastBusy,
    /// The lowest expected wait: the moving average of its time to answer (an EWMA of the
    /// response-head latency), times its requests in flight plus one (PeakEWMA-like).
    LatencyEwma,
}

/// One fallback target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Backend name.
    pub backend: String,
    /// Upstream model name; default: the alias.
    #[serde(default)]
    pub model: Option<String>,
}

/// The embedded sentence embedder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedder {
    /// Whether to load it (`auto`: when the model directory exists).
    #[serde(default)]
    pub enabled: Enabled,
    /// Directory with config.json, tokenizer.json, model.safetensors, or `hf:owner/repo`.
    pub model: String,
    /// Name reported by `/v1/embeddings` and accepted as its `model`.
    #[serde(default = "default_embedder_name")]
    pub name: String,
    /// `cpu` (default), `cuda`, `cuda:N`, `metal`, `auto`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Texts per forward pass. Default 32.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Extra time a forward pass waits to gather more texts. Default 0: a pass takes every
    /// text queued while the previous pass ran (no added latency when idle, full batches
    /// under load).
    #[serde(default = "default_batch_wait", with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Embeddings cached by exact text (0 = none). Default 10000.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: u64,
    /// The linear layers' weights for `/v1/embeddings`: `f32` (default: exact), `int16` or
    /// `q8_0` (approximate, less CPU).
    #[serde(default = "default_weights")]
    pub weights: String,
    /// The linear layers' weights for the embeddings slmgate uses itself (routing, the
    /// semantic cache): `int16` (default: ~30 % less CPU per pass, embeddings within 2e-5
    /// cosine of `f32`, the same routing decisions), `f32` or `q8_0`. When it differs from
    /// `weights` a second copy of the model is loaded for them (21 MB for int16 MiniLM).
    #[serde(default = "default_routing_weights")]
    pub routing_weights: String,
}

/// The embedder weight formats `weights` and `routing_weights` accept.
pub const EMBEDDER_WEIGHTS: [&str; 3] = ["f32", "int16", "q8_0"];

fn default_weights() -> String {
    "f32".to_string()
}
fn default_routing_weights() -> String {
    "int16".to_string()
}

fn default_batch_wait() -> Duration {
    Duration::ZERO
}
fn default_cache_entries() -> u64 {
    10_000
}

fn default_embedder_name() -> String {
    "embed".to_string()
}
fn default_max_batch() -> usize {
    32
}

impl Embedder {
    /// Resolves `enabled: auto`.
    pub fn is_enabled(&self) -> bool {
        match self.enabled {
            Enabled::True => true,
            Enabled::False => false,
            Enabled::Auto => local_model_present(&self.model),
        }
    }
}

/// A client API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// Name used in logs and accounting.
    pub name: String,
    /// The secret in clear (prefer `${ENV}` or `key_sha256`).
    #[serde(default, deserialize_with = "opt_stringish")]
    pub key: Option<String>,
    /// sha256 of the secret, 64 hex digits.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Team, for budgets and reports.
    #[serde(default)]
    pub team: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Aliases this key may use; empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// USD per day / month. Absent = unlimited.
    #[serde(default)]
    pub budget: Option<slmgate_policies::budget::BudgetLimits>,
    /// Requests and tokens per minute. Absent = unlimited.
    #[serde(default)]
    pub rate_limit: Option<slmgate_policies::ratelimit::RateLimits>,
}

/// Accepts a string, or a number/bool written where a string was meant (e.g. an env var
/// holding digits), as a string.
fn opt_stringish<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Stringish>::deserialize(d)?.map(|s| s.0))
}

fn stringish_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(BTreeMap::<String, Stringish>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

struct Stringish(String);

impl<'de> Deserialize<'de> for Stringish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Stringish(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
            Raw::B(b) => b.to_string(),
        }))
    }
}
