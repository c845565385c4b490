//! Loading, interpolation and validation of whole config documents.

use std::time::Duration;

use slmgate_config::{load_str_with_env, BackendKind, ConfigErrors, Enabled};

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(src: &str) -> ConfigErrors {
    match load_str_with_env(src, "t.yaml", &no_env) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e,
    }
}

/// Finds the error whose message contains `needle` and returns "line:col path message".
fn find<'a>(errs: &'a ConfigErrors, needle: &str) -> &'a slmgate_config::ConfigError {
    errs.0
        .iter()
        .find(|e| e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error containing `{needle}` in:\n{errs}"))
}

#[test]
fn embedded_default_parses_and_validates() {
    let cfg = load_str_with_env(slmgate_config::DEFAULT_CONFIG_YAML, "default", &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, "127.0.0.1:8080");
    let remote = cfg.models.iter().find(|m| m.name == "remote").unwrap();
    assert_eq!(remote.model.as_deref(), Some("gpt-4o-mini"));
    let openai = cfg
        .backends
        .iter()
        .find(|b| b.name == remote.backend)
        .unwrap();
    assert_eq!(openai.enabled, Enabled::Auto);
    // No OPENAI_API_KEY: the remote backend is off, with the reason said.
    assert!(!openai.is_enabled());
    assert!(openai.disabled_reason().contains("api_key"));
    match &openai.kind {
        BackendKind::OpenAi(o) => assert_eq!(o.base_url, "https://api.openai.com/v1"),
        other => panic!("{other:?}"),
    }
    assert!(cfg.models.iter().any(|m| m.name == "local"));
}

#[test]
fn embedded_default_reads_the_environment() {
    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-test".to_string()),
        "OPENAI_BASE_URL" => Some("http://10.0.0.1:8000/v1".to_string()),
        "SLMGATE_REMOTE_MODEL" => Some("llama-70b".to_string()),
        "SLMGATE_LISTEN" => Some("0.0.0.0:9999".to_string()),
        _ => None,
    };
    let cfg = load_str_with_env(slmgate_config::DEFAULT_CONFIG_YAML, "default", &env).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:9999");
    let remote = cfg.models.iter().find(|m| m.name == "remote").unwrap();
    assert_eq!(remote.model.as_deref(), Some("llama-70b"));
    let openai = cfg.backends.iter().find(|b| b.name == "openai").unwrap();
    assert!(openai.is_enabled());
    match &openai.kind {
        BackendKind::OpenAi(o) => {
            assert_eq!(o.base_url, "http://10.0.0.1:8000/v1");
            assert_eq!(o.api_key.as_deref(), Some("sk-test"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn full_schema_round_trip() {
    let src = r#"
listen: "[::1]:7000"
limits:
  max_body_bytes: 1000
  max_concurrent_requests: 8
  request_timeout: 1m 30s
  shutdown_timeout: 500ms
backends:
  - name: a
    kind: openai
    base_url: http://127.0.0.1:1/v1
    api_key: ${KEY}
    headers:
      OpenAI-Organization: org-1
      X-Num: 5
    timeout: 3s
    connect_timeout: 1s
    max_retries: ${RETRIES:-4}
    retry_backoff: 50ms
    max_retry_backoff: 2s
  - name: b
    kind: openai
    enabled: false
    base_url: https://example.invalid/v1
models:
  - name: big
    backend: a
    model: gpt-x
    fallbacks:
      - backend: b
      - backend: a
        model: gpt-y
keys:
  - name: alice
    key: ${ALICE}
    team: t1
    tags: [x, y]
    models: [big]
  - name: bob
    key_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
"#;
    let env = |n: &str| match n {
        "KEY" => Some("12345".to_string()),
        "ALICE" => Some("sk-alice".to_string()),
        _ => None,
    };
    let cfg = load_str_with_env(src, "t.yaml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits.request_timeout, Duration::from_secs(90));
    assert_eq!(cfg.limits.shutdown_timeout, Duration::from_millis(500));
    let BackendKind::OpenAi(a) = &cfg.backends[0].kind else {
        panic!()
    };
    // A digits-only key from the environment stays a string.
    assert_eq!(a.api_key.as_deref(), Some("12345"));
    assert_eq!(a.max_retries, 4);
    assert_eq!(a.headers["X-Num"], "5");
    assert!(cfg.backends[0].is_enabled(), "loopback/keyed backend is on");
    assert!(!cfg.backends[1].is_enabled());
    assert_eq!(cfg.models[0].fallbacks.len(), 2);
    assert_eq!(cfg.models[0].fallbacks[1].model.as_deref(), Some("gpt-y"));
    assert_eq!(cfg.keys[0].key.as_deref(), Some("sk-alice"));
    assert_eq!(cfg.keys[0].tags, ["x", "y"]);
}

#[test]
fn reports_every_error_with_line_and_column() {
    let src = "\
listen: 127.0.0.1:8080
limts:
  max_body_bytes: 10
limits:
  max_body_bytes: lots
  request_timeout: 5 parsecs
backends:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:1/v1
    timout: 3s
    max_retries: -1
  - name: up
    kind: openia
  - kind: openai
    base_url: http://x
  - name: other
    kind: openai
    base_url: ftp://x
models:
  - name: m
    backend: upp
    fallbacks:
      - backend: nowhere
  - name: m
    backend: up
    modle: x
keys:
  - name: k
    models: [mm]
";
    let errs = errors(src);
    let text = errs.to_string();
    // One line per error, each `origin:line:col: path: message`.
    assert!(errs.0.len() >= 11, "{text}");
    for line in text.lines() {
        assert!(line.starts_with("t.yaml:"), "{line}");
    }

    let e = find(&errs, "unknown key `limts`");
    assert_eq!((e.line, e.column), (Some(2), Some(1)), "{e}");
    assert!(e.message.contains("did you mean `limits`?"), "{e}");

    let e = find(&errs, "expected usize");
    assert_eq!(e.path, "limits.max_body_bytes");
    assert_eq!(e.line, Some(5));

    let e = find(&errs, "parsecs");
    assert_eq!(e.path, "limits.request_timeout");

    let e = find(&errs, "unknown key `timout`");
    assert_eq!(e.path, "backends[0].timout");
    assert_eq!((e.line, e.column), (Some(11), Some(5)));
    assert!(e.message.contains("did you mean `timeout`?"), "{e}");

    let e = find(&errs, "expected u32");
    assert_eq!(e.path, "backends[0].max_retries");

    let e = find(&errs, "unknown backend kind `openia`");
    assert!(e.message.contains("did you mean `openai`?"), "{e}");
    assert_eq!(e.line, Some(14));

    let e = find(&errs, "missing required key `name`");
    assert_eq!(e.path, "backends[2]");
    assert_eq!((e.line, e.column), (Some(15), Some(5)));

    let e = find(&errs, "ftp://x");
    assert_eq!(e.path, "backends[3].base_url");

    let e = find(&errs, "unknown backend `upp`");
    assert!(e.message.contains("did you mean `up`?"), "{e}");
    assert_eq!(e.path, "models[0].backend");
    assert_eq!(e.line, Some(22));

    let e = find(&errs, "unknown backend `nowhere`");
    assert_eq!(e.path, "models[0].fallbacks[0].backend");

    find(&errs, "duplicate model name `m`");
    let e = find(&errs, "unknown key `modle`");
    assert!(e.message.contains("did you mean `model`?"), "{e}");

    find(&errs, "missing `key` or `key_sha256`");
    let e = find(&errs, "unknown model `mm`");
    assert!(e.message.contains("did you mean `m`?"), "{e}");

    // Errors are in document order.
    let lines: Vec<usize> = errs.0.iter().filter_map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn yaml_syntax_error_has_position() {
    let errs = errors("listen: 127.0.0.1:8080\nbackends:\n  - name: a\n   kind: [unclosed\n");
    assert_eq!(errs.0.len(), 1);
    let e = &errs.0[0];
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert!(e.line.is_some() && e.column.is_some(), "{e}");
}

#[test]
fn duplicate_keys_are_errors() {
    let errs = errors("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n");
    assert!(errs.to_string().contains("duplicate"), "{errs}");
}

#[test]
fn required_env_var_error() {
    let errs = errors(
        "backends:\n  - name: a\n    kind: openai\n    base_url: ${BASE:?set BASE to the vLLM URL}\n",
    );
    let e = find(&errs, "set BASE to the vLLM URL");
    assert_eq!(e.path, "backends[0].base_url");
    assert_eq!(e.line, Some(4));
}

#[test]
fn wrong_top_level_shapes() {
    let errs = errors("- just\n- a list\n");
    assert!(errs.to_string().contains("must be a mapping"), "{errs}");
    let errs = errors("backends: {name: a}\n");
    assert!(
        errs.to_string().contains("`backends` must be a list"),
        "{errs}"
    );
}

#[test]
fn local_backend_schema() {
    let src = "\
backends:
  - name: slm
    kind: local
    model: /nonexistent/model.gguf
    quantize: q4k
    device: cuda:1
    workers: 2
models:
  - name: local
    backend: slm
";
    let cfg = load_str_with_env(src, "t.yaml", &no_env).unwrap_or_else(|e| panic!("{e}"));
    let BackendKind::Local(l) = &cfg.backends[0].kind else {
        panic!()
    };
    assert_eq!(l.quantize, slmgate_config::Quantize::Q4K);
    assert_eq!(l.workers, 2);
    // enabled: auto and the file is missing: off, with the reason.
    assert!(!cfg.backends[0].is_enabled());
    assert!(cfg.backends[0]
        .disabled_reason()
        .contains("/nonexistent/model.gguf"));

    let errs = errors(
        "backends:\n  - name: slm\n    kind: local\n    enabled: true\n    model: /nonexistent.gguf\n    quantize: q3\n    device: gpu\n",
    );
    find(&errs, "does not exist");
    find(&errs, "unknown value `q3`");
    find(&errs, "`gpu`: expected cpu");
}

#[test]
fn embedder_weight_formats() {
    let cfg = load_str_with_env("embedder:\n  model: /m\n", "e.yaml", &no_env).unwrap();
    let e = cfg.embedder.as_ref().unwrap();
    assert_eq!(
        (e.weights.as_str(), e.routing_weights.as_str()),
        ("f32", "int16")
    );
    let errs = errors("embedder:\n  model: /m\n  weights: int8\n  routing_weights: q4\n");
    let w = find(&errs, "`int8`: expected f32, int16 or q8_0");
    assert_eq!(
        (w.path.as_str(), w.line),
        ("embedder.weights", Some(3)),
        "{w:?}"
    );
    find(&errs, "`q4`: expected f32, int16 or q8_0");
}

#[test]
fn missing_file_is_an_error() {
    let errs = slmgate_config::load_file("/nonexistent/slmgate.yaml").unwrap_err();
    assert!(errs.to_string().contains("cannot read"), "{errs}");
}

#[test]
fn empty_document_is_valid() {
    let cfg = load_str_with_env("", "empty.yaml", &no_env).unwrap();
    assert!(cfg.models.is_empty());
    assert_eq!(cfg.listen, "127.0.0.1:8080");
}

#[test]
fn telemetry_section_and_env_default() {
    // Absent section and no variable: off.
    let cfg = load_str_with_env("listen: 127.0.0.1:1\n", "t.yaml", &no_env).unwrap();
    assert!(!cfg.telemetry.enabled());
    assert_eq!(cfg.telemetry.service_name, "slmgate");
    assert_eq!(cfg.telemetry.sample_ratio, 1.0);

    // The standard variable fills in a missing endpoint.
    let env = |name: &str| {
        (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://collector:4318".to_string())
    };
    let cfg = load_str_with_env("listen: 127.0.0.1:1\n", "t.yaml", &env).unwrap();
    assert_eq!(
        cfg.telemetry.traces_url().as_deref(),
        Some("http://collector:4318/v1/traces")
    );

    // The config wins over the variable; "" turns tracing off despite it.
    let src = "telemetry:\n  otlp_endpoint: https://otlp.example.com\n  service_name: gw\n  sample_ratio: 0.25\n  headers: { x-api-key: secret }\n";
    let cfg = load_str_with_env(src, "t.yaml", &env).unwrap();
    let t = &cfg.telemetry;
    assert_eq!(t.otlp_endpoint.as_deref(), Some("https://otlp.example.com"));
    assert_eq!((t.service_name.as_str(), t.sample_ratio), ("gw", 0.25));
    assert_eq!(t.headers["x-api-key"], "secret");
    let cfg = load_str_with_env("telemetry:\n  otlp_endpoint: \"\"\n", "t.yaml", &env).unwrap();
    assert!(!cfg.telemetry.enabled());
}

#[test]
fn telemetry_errors_have_positions() {
    let errs = errors(
        "telemetry:\n  otlp_endpoint: collector:4318\n  sample_ratio: 1.5\n  headers:\n    \"bad header\": x\n  exporter: zipkin\n",
    );
    let e = find(&errs, "is not an http(s) URL");
    assert_eq!(
        e.to_string(),
        "t.yaml:2:3: telemetry.otlp_endpoint: `collector:4318` is not an http(s) URL (e.g. http://127.0.0.1:4318)"
    );
    let e = find(&errs, "between 0 and 1");
    assert_eq!((e.line, e.column), (Some(3), Some(3)));
    assert_eq!(e.path, "telemetry.sample_ratio");
    let e = find(&errs, "not a valid header name");
    assert_eq!(e.path, "telemetry.headers.bad header");
    assert_eq!(e.line, Some(5));
    let e = find(&errs, "unknown key `exporter`");
    assert_eq!(e.line, Some(6));

    // A bad variable is reported with its name.
    let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "4318".to_string());
    let errs = load_str_with_env("listen: 127.0.0.1:1\n", "t.yaml", &env).unwrap_err();
    let e = find(
        &errs,
        "OTEL_EXPORTER_OTLP_ENDPOINT `4318` is not an http(s) URL",
    );
    assert_eq!(e.path, "telemetry");
}

#[test]
fn admin_errors_list_only_the_sections_own_keys() {
    let errs = errors("admin:\n  key_sha256: nothex\n  bogus: 1\n");
    let e = find(&errs, "must be 64 hex digits");
    assert_eq!(e.path, "admin.key_sha256");
    assert_eq!((e.line, e.column), (Some(2), Some(3)));
    let e = find(&errs, "unknown key `bogus`");
    assert_eq!(e.path, "admin.bogus");
    assert!(
        e.message
            .ends_with("(expected one of: key, key_sha256, protect_metrics, loopback_only)"),
        "{}",
        e.message
    );
}

#[test]
fn an_empty_file_is_an_error_but_an_empty_string_is_not() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty.yaml", ""),
        ("blank.yaml", "  \n\n"),
        ("comments.yaml", "# nothing yet\n---\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let errs = slmgate_config::load_file(&path).unwrap_err();
        assert!(
            errs.to_string().contains("the config file is empty"),
            "{errs}"
        );
    }
    assert!(slmgate_config::load_file_text("listen: 127.0.0.1:1\n", "x.yaml").is_ok());
}

#[test]
fn auth_says_explicitly_whether_keys_are_needed() {
    let one_key = "keys:\n  - { name: a, key: sk-a }\n";
    let cfg = load_str_with_env(one_key, "t.yaml", &no_env).unwrap();
    assert_eq!(cfg.auth, None);
    let cfg = load_str_with_env(&format!("auth: keys\n{one_key}"), "t.yaml", &no_env).unwrap();
    assert_eq!(cfg.auth, Some(slmgate_config::AuthMode::Keys));
    let cfg = load_str_with_env("auth: none\n", "t.yaml", &no_env).unwrap();
    assert_eq!(cfg.auth, Some(slmgate_config::AuthMode::None));

    let errs = errors("auth: keys\n");
    let e = find(&errs, "`auth: keys` needs at least one entry in `keys`");
    assert_eq!(
        (e.path.as_str(), e.line, e.column),
        ("auth", Some(1), Some(1))
    );
    let errs = errors(&format!("auth: none\n{one_key}"));
    find(&errs, "but `keys` lists 1: remove one or the other");
    let errs = errors("auth: off\n");
    find(&errs, "unknown value `off` (expected one of: keys, none)");

    let errs = errors("admin:\n  key: s3cret\n  loopback_only: true\n");
    let e = find(&errs, "`loopback_only: true` conflicts with the admin key");
    assert_eq!(e.path, "admin.loopback_only");
    assert_eq!(e.line, Some(3));
}

#[test]
fn models_declared_tells_an_explicit_empty_list_from_a_missing_one() {
    for (src, declared) in [
        ("models: []\n", true),
        ("models:\n", false),
        ("listen: 127.0.0.1:1\n", false),
    ] {
        let cfg = load_str_with_env(src, "t.yaml", &no_env).unwrap();
        assert_eq!(cfg.models_declared, declared, "{src:?}");
    }
}

#[test]
fn connection_limits_and_circuit_breakers_are_checked() {
    let cfg = load_str_with_env("listen: 127.0.0.1:1\n", "t.yaml", &no_env).unwrap();
    assert_eq!(cfg.limits.header_read_timeout, Duration::from_secs(15));
    assert_eq!(cfg.limits.body_read_timeout, Duration::from_secs(30));
    assert_eq!(cfg.limits.max_connections, 4096);
    assert_eq!(cfg.limits.http2_max_concurrent_streams, 128);
    let errs = errors(
        r#"limits:
  header_read_timeout: 0s
  max_connections: 0
backends:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:9/v1
    circuit_breaker:
      failure_rate: 1.5
      window: 0
      ejection: 1m
      max_ejection: 10s
"#,
    );
    let e = find(&errs, "must be greater than zero");
    assert_eq!(e.path, "limits.header_read_timeout");
    for (path, message) in [
        ("limits.max_connections", "must be greater than zero"),
        (
            "backends[0].circuit_breaker.failure_rate",
            "must be greater than 0 and at most 1",
        ),
        ("backends[0].circuit_breaker.window", "must be 1 to 1000"),
        (
            "backends[0].circuit_breaker.max_ejection",
            "must be at least `ejection`",
        ),
    ] {
        assert!(
            errs.0
                .iter()
                .any(|e| e.path == path && e.message == message),
            "no `{path}: {message}` in:\n{errs}"
        );
    }
}

#[test]
fn azure_and_anthropic_kinds() {
    use slmgate_config::Dialect;
    let src = "backends:
  - name: az
    kind: azure
    base_url: https://res.openai.azure.com
    api_key: k1
    api_version: 2024-10-21
  - name: claude
    kind: anthropic
    api_key: k2
models:
  - name: a
    backend: az
    model: my-deployment
  - name: c
    backend: claude
    model: claude-sonnet-4-5
";
    let cfg = load_str_with_env(src, "t.yaml", &no_env).unwrap_or_else(|e| panic!("{e}"));
    let BackendKind::OpenAi(az) = &cfg.backends[0].kind else {
        panic!("azure is an OpenAI variant")
    };
    assert_eq!(az.dialect, Dialect::Azure);
    assert_eq!(az.api_version.as_deref(), Some("2024-10-21"));
    let BackendKind::OpenAi(claude) = &cfg.backends[1].kind else {
        panic!("anthropic is an OpenAI variant")
    };
    assert_eq!(claude.dialect, Dialect::Anthropic);
    assert_eq!(claude.base_url, "https://api.anthropic.com");
    assert!(cfg.backends[1].is_enabled());
}

#[test]
fn azure_needs_api_version_and_only_azure_takes_it() {
    let errs = errors(
        "backends:
  - name: az
    kind: azure
    base_url: https://res.openai.azure.com
  - name: claude
    kind: anthropic
    api_version: 2024-10-21
  - name: x
    kind: azur
    base_url: http://127.0.0.1:1
",
    );
    let e = find(&errs, "missing required key `api_version`");
    assert_eq!(e.path, "backends[0]");
    assert_eq!((e.line, e.column), (Some(2), Some(5)));
    let e = find(&errs, "`api_version` is for `kind: azure` only");
    assert_eq!(e.path, "backends[1].api_version");
    assert_eq!((e.line, e.column), (Some(7), Some(5)));
    let e = find(&errs, "unknown backend kind `azur`");
    assert!(e.message.contains("did you mean `azure`?"), "{e}");
}

#[test]
fn state_redis_section_defaults_and_errors() {
    // Absent: in-process state (the embedded default stays Redis-free).
    let cfg = load_str_with_env(slmgate_config::DEFAULT_CONFIG_YAML, "default", &no_env).unwrap();
    assert!(cfg.state.redis.is_none());

    let cfg = load_str_with_env(
        "state:\n  redis:\n    url: redis://127.0.0.1:6379/1\n",
        "t.yaml",
        &no_env,
    )
    .unwrap();
    let r = cfg.state.redis.unwrap();
    assert_eq!(r.url, "redis://127.0.0.1:6379/1");
    assert_eq!(r.prefix, "slmgate:");
    assert_eq!(r.on_error, slmgate_config::state::OnError::Open);
    assert_eq!(r.timeout, Duration::from_millis(250));

    let cfg = load_str_with_env(
        "state:\n  redis: { url: rediss://h:6380, prefix: \"gw:\", on_error: closed, timeout: 1s }\n",
        "t.yaml",
        &no_env,
    )
    .unwrap();
    let r = cfg.state.redis.unwrap();
    assert_eq!(r.on_error, slmgate_config::state::OnError::Closed);
    assert_eq!(r.timeout, Duration::from_secs(1));

    let errs = errors(
        "listen: 127.0.0.1:1\nstate:\n  redis:\n    url: http://127.0.0.1:6379\n    timeout: 0s\n",
    );
    let e = find(&errs, "is not a redis:// or rediss:// URL");
    assert_eq!((e.line, e.column), (Some(4), Some(5)), "{e}");
    assert_eq!(e.path, "state.redis.url");
    let e = find(&errs, "must be greater than zero");
    assert_eq!((e.line, e.column), (Some(5), Some(5)), "{e}");

    // Unknown keys are refused, with their position.
    let errs = errors("state:\n  redis:\n    url: redis://h\n    on_eror: open\n");
    let e = find(&errs, "on_eror");
    assert_eq!(e.line, Some(4), "{e}");
    let errs = errors("state:\n  redis:\n    url: redis://h\n    on_error: maybe\n");
    let e = find(&errs, "maybe");
    assert_eq!(e.line, Some(4), "{e}");
}
