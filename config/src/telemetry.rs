//! The `telemetry:` section: OpenTelemetry traces exported over OTLP/HTTP.
//!
//! ```yaml
//! telemetry:
//!   otlp_endpoint: http://127.0.0.1:4318   # the collector's base URL; /v1/traces is appended
//!   service_name: slmgate
//!   sample_ratio: 0.1                      # share of new traces kept (a client's decision wins)
//!   headers: { x-honeycomb-team: ${HONEYCOMB_KEY} }
//! ```
//!
//! Without `otlp_endpoint` the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable is used; with
//! neither, tracing is off (no exporter, no OpenTelemetry layer). `otlp_endpoint: ""` turns it
//! off even when the variable is set.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ctx::{key, Ctx};
use crate::positions::Seg;
use crate::Config;

/// The environment variable read when `telemetry.otlp_endpoint` is absent.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The OTLP/HTTP path for traces, appended to a base endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// OpenTelemetry trace export (`telemetry:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces` is
    /// appended unless the URL already ends with it. Absent = the `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// variable; empty (or neither set) = tracing off.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource. Default `slmgate`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1 (default 1). A request that arrives with a
    /// W3C `traceparent` follows the caller's sampling decision instead.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Extra headers on every export request (a vendor's API key, a tenant id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Where `otlp_endpoint` came from, for messages (`telemetry.otlp_endpoint` or the
    /// variable's name). Set by the loader.
    #[serde(skip)]
    pub endpoint_origin: &'static str,
}

fn default_service_name() -> String {
    "slmgate".to_string()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            otlp_endpoint: None,
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
            headers: BTreeMap::new(),
            endpoint_origin: "",
        }
    }
}

impl Telemetry {
    /// True when traces are exported.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty())
    }

    /// The full URL spans are POSTed to (`{otlp_endpoint}/v1/traces`), when enabled.
    ///
    /// ```
    /// let t = slmgate_config::telemetry::Telemetry {
    ///     otlp_endpoint: Some("http://collector:4318/".into()),
    ///     ..Default::default()
    /// };
    /// assert_eq!(t.traces_url().as_deref(), Some("http://collector:4318/v1/traces"));
    /// ```
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())?;
        let base = base.trim_end_matches('/');
        if base.ends_with(TRACES_PATH) {
            Some(base.to_string())
        } else {
            Some(format!("{base}{TRACES_PATH}"))
        }
    }
}

/// Fills `otlp_endpoint` from the environment when the config leaves it out.
pub(crate) fn resolve(cfg: &mut Config, env: &dyn Fn(&str) -> Option<String>) {
    let t = &mut cfg.telemetry;
    if t.otlp_endpoint.is_some() {
        t.endpoint_origin = "telemetry.otlp_endpoint";
    } else if let Some(v) = env(OTLP_ENDPOINT_ENV).filter(|v| !v.trim().is_empty()) {
        t.otlp_endpoint = Some(v.trim().to_string());
        t.endpoint_origin = OTLP_ENDPOINT_ENV;
    }
}

/// Why `url` is not an http(s) URL with a host, if it is not.
fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Some("is not an http(s) URL");
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Some("has no host");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or control characters");
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().is_err() {
            return Some("has an invalid port");
        }
    }
    None
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    let t = &cfg.telemetry;
    let path = |field: &str| -> Vec<Seg> { vec![key("telemetry"), key(field)] };
    if let Some(url) = t.otlp_endpoint.as_deref().filter(|u| !u.is_empty()) {
        if let Some(problem) = url_problem(url) {
            let from_env = t.endpoint_origin == OTLP_ENDPOINT_ENV;
            let example = "(e.g. http://127.0.0.1:4318)";
            if from_env {
                ctx.err(
                    &[key("telemetry")],
                    format!("{OTLP_ENDPOINT_ENV} `{url}` {problem} {example}"),
                );
            } else {
                ctx.err(
                    &path("otlp_endpoint"),
                    format!("`{url}` {problem} {example}"),
                );
            }
        }
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        ctx.err(
            &path("sample_ratio"),
            format!("must be between 0 and 1, found {}", t.sample_ratio),
        );
    }
    if t.service_name.trim().is_empty() {
        ctx.err(&path("service_name"), "must not be empty");
    }
    for (name, value) in &t.headers {
        let mut p = path("headers");
        p.push(key(name));
        let bad_name = name.is_empty()
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&c));
        if bad_name {
            ctx.err(&p, format!("`{name}` is not a valid header name"));
        }
        if value.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) {
            ctx.err(&p, "header values must not contain line breaks");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_checks() {
        assert_eq!(url_problem("http://127.0.0.1:4318"), None);
        assert_eq!(url_problem("https://otlp.example.com/v1/traces"), None);
        assert_eq!(url_problem("http://[::1]:4318"), None);
        assert_eq!(url_problem("localhost:4318"), Some("is not an http(s) URL"));
        assert_eq!(url_problem("http://"), Some("has no host"));
        assert_eq!(url_problem("http://:4318"), Some("has no host"));
        assert_eq!(url_problem("http://host:port"), Some("has an invalid port"));
        assert_eq!(
            url_problem("http://a b"),
            Some("contains spaces or control characters")
        );
    }

    #[test]
    fn traces_url_appends_the_path_once() {
        let t = |e: &str| Telemetry {
            otlp_endpoint: Some(e.to_string()),
            ..Default::default()
        };
        assert_eq!(
            t("http://c:4318").traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            t("http://c:4318/v1/traces").traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            t("http://c/otlp/").traces_url().as_deref(),
            Some("http://c/otlp/v1/traces")
        );
        assert_eq!(t("").traces_url(), None);
        assert!(!t("").enabled());
        assert!(!Telemetry::default().enabled());
    }
}
