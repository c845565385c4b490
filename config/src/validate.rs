//! Checks that need the whole config: unique names, references between sections, value
//! ranges, addresses and URLs.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::ctx::{key, Ctx};
use crate::positions::Seg;
use crate::schema::*;

/// `", did you mean `x`?"` when a candidate is close to `word`, else `""`.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!(", did you mean `{c}`?"),
        None => String::new(),
    }
}

/// The path of field `field` of the `i`th parsed item of `section`.
pub(crate) fn item_path(ctx: &Ctx, section: &'static str, i: usize, field: &str) -> Vec<Seg> {
    let i = ctx
        .indices
        .get(section)
        .and_then(|v| v.get(i).copied())
        .unwrap_or(i);
    let mut p = vec![key(section), Seg::Index(i)];
    if !field.is_empty() {
        p.push(key(field));
    }
    p
}

fn header_path(ctx: &Ctx, i: usize, name: &str) -> Vec<Seg> {
    let mut p = item_path(ctx, "backends", i, "headers");
    p.push(key(name));
    p
}

fn valid_device(d: &str) -> bool {
    matches!(d, "cpu" | "cuda" | "metal" | "auto")
        || d.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok())
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    if cfg.listen.parse::<SocketAddr>().is_err() {
        ctx.err(
            &[key("listen")],
            format!(
                "`{}` is not an address like 127.0.0.1:8080 or [::]:8080",
                cfg.listen
            ),
        );
    }
    let l = &cfg.limits;
    for (field, zero) in [
        ("max_body_bytes", l.max_body_bytes == 0),
        ("max_concurrent_requests", l.max_concurrent_requests == 0),
        ("request_timeout", l.request_timeout.is_zero()),
        ("header_read_timeout", l.header_read_timeout.is_zero()),
        ("body_read_timeout", l.body_read_timeout.is_zero()),
        ("max_connections", l.max_connections == 0),
        (
            "http2_max_concurrent_streams",
            l.http2_max_concurrent_streams == 0,
        ),
        (
            "http2_keepalive_interval",
            l.http2_keepalive_interval.is_zero(),
        ),
    ] {
        if zero {
            ctx.err(&[key("limits"), key(field)], "must be greater than zero");
        }
    }

    let mut backends: HashMap<&str, usize> = HashMap::new();
    for (i, b) in cfg.backends.iter().enumerate() {
        if b.name.is_empty() {
            ctx.err(&item_path(ctx, "backends", i, "name"), "must not be empty");
        } else if backends.insert(&b.name, i).is_some() {
            ctx.err(
                &item_path(ctx, "backends", i, "name"),
                format!("duplicate backend name `{}`", b.name),
            );
        }
        match &b.kind {
            BackendKind::OpenAi(o) => {
                if !(o.base_url.starts_with("http://") || o.base_url.starts_with("https://")) {
                    ctx.err(
                        &item_path(ctx, "backends", i, "base_url"),
                        format!(
                            "`{}` is not an http(s) URL (e.g. https://api.openai.com/v1)",
                            o.base_url
                        ),
                    );
                }
                if o.timeout.is_zero() {
                    ctx.err(
                        &item_path(ctx, "backends", i, "timeout"),
                        "must be greater than zero",
                    );
                }
                if o.max_retries > 20 {
                    ctx.err(&item_path(ctx, "backends", i, "max_retries"), "at most 20");
                }
                let cb = &o.circuit_breaker;
                for (field, problem) in [
                    (
                        "consecutive_failures",
                        (cb.consecutive_failures == 0).then_some("must be at least 1"),
                    ),
                    (
                        "failure_rate",
                        (!(cb.failure_rate > 0.0 && cb.failure_rate <= 1.0))
                            .then_some("must be greater than 0 and at most 1"),
                    ),
                    (
                        "window",
                        (cb.window == 0 || cb.window > 1000).then_some("must be 1 to 1000"),
                    ),
                    (
                        "ejection",
                        cb.ejection.is_zero().then_some("must be greater than zero"),
                    ),
                    (
                        "max_ejection",
                        (cb.max_ejection < cb.ejection).then_some("must be at least `ejection`"),
                    ),
                ] {
                    if let Some(problem) = problem {
                        let mut path = item_path(ctx, "backends", i, "circuit_breaker");
                        path.push(key(field));
                        ctx.err(&path, problem);
                    }
                }
                for (name, value) in &o.headers {
                    let bad_name = name.is_empty()
                        || !name
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&c));
                    if bad_name {
                        ctx.err(
                            &header_path(ctx, i, name),
                            format!("`{name}` is not a valid header name"),
                        );
                    }
                    if value.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) {
                        ctx.err(
                            &header_path(ctx, i, name),
                            "header values must not contain line breaks",
                        );
                    }
                }
            }
            BackendKind::Local(lb) => {
                if !valid_device(&lb.device) {
                    ctx.err(
                        &item_path(ctx, "backends", i, "device"),
                        format!("`{}`: expected cpu, cuda, cuda:N, metal or auto", lb.device),
                    );
                }
                if lb.workers == 0 {
                    ctx.err(
                        &item_path(ctx, "backends", i, "workers"),
                        "must be at least 1",
                    );
                }
                if lb.max_tokens == 0 {
                    ctx.err(
                        &item_path(ctx, "backends", i, "max_tokens"),
                        "must be at least 1",
                    );
                }
                if !(0.0..=2.0).contains(&lb.temperature) {
                    ctx.err(
                        &item_path(ctx, "backends", i, "temperature"),
                        "must be between 0 and 2",
                    );
                }
                if lb
                    .repetition_penalty
                    .is_some_and(|p| !(p.is_finite() && p > 0.0 && p <= 2.0))
                {
                    ctx.err(
                        &item_path(ctx, "backends", i, "repetition_penalty"),
                        "must be above 0 and at most 2",
                    );
                }
                if b.enabled == Enabled::True
                    && !lb.model.starts_with("hf:")
                    && !std::path::Path::new(&lb.model).exists()
                {
                    ctx.err(
                        &item_path(ctx, "backends", i, "model"),
                        format!(
                            "model file `{}` does not exist (run scripts/fetch-models.sh, or use `enabled: auto`)",
                            lb.model
                        ),
                    );
                }
            }
        }
    }
    let backend_names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    let check_backend = |ctx: &mut Ctx, path: Vec<Seg>, name: &str| {
        if !backend_names.contains(&name) {
            let hint = did_you_mean(name, backend_names.iter().copied());
            ctx.err(&path, format!("unknown backend `{name}`{hint}"));
        }
    };

    let mut models: HashMap<&str, usize> = HashMap::new();
    for (i, m) in cfg.models.iter().enumerate() {
        if m.name.is_empty() {
            ctx.err(&item_path(ctx, "models", i, "name"), "must not be empty");
        } else if models.insert(&m.name, i).is_some() {
            ctx.err(
                &item_path(ctx, "models", i, "name"),
                format!("duplicate model name `{}`", m.name),
            );
        }
        let p = item_path(ctx, "models", i, "backend");
        check_backend(ctx, p, &m.backend);
        for (field, list) in [("deployments", &m.deployments), ("fallbacks", &m.fallbacks)] {
            for (j, f) in list.iter().enumerate() {
                let mut p = item_path(ctx, "models", i, field);
                p.extend([Seg::Index(j), key("backend")]);
                check_backend(ctx, p, &f.backend);
            }
        }
    }

    if let Some(e) = &cfg.embedder {
        if !valid_device(&e.device) {
            ctx.err(
                &[key("embedder"), key("device")],
                format!("`{}`: expected cpu, cuda, cuda:N, metal or auto", e.device),
            );
        }
        if e.max_batch == 0 {
            ctx.err(&[key("embedder"), key("max_batch")], "must be at least 1");
        }
        for (field, value) in [
            ("weights", &e.weights),
            ("routing_weights", &e.routing_weights),
        ] {
            if !crate::schema::EMBEDDER_WEIGHTS.contains(&value.as_str()) {
                ctx.err(
                    &[key("embedder"), key(field)],
                    format!("`{value}`: expected f32, int16 or q8_0"),
                );
            }
        }
    }

    let mut model_names: Vec<&str> = cfg.models.iter().map(|m| m.name.as_str()).collect();
    if let Some(r) = &cfg.router {
        model_names.extend(r.aliases.iter().map(String::as_str));
    }
    let mut key_names: HashMap<&str, usize> = HashMap::new();
    let mut secrets: HashMap<&str, usize> = HashMap::new();
    for (i, k) in cfg.keys.iter().enumerate() {
        if key_names.insert(&k.name, i).is_some() {
            ctx.err(
                &item_path(ctx, "keys", i, "name"),
                format!("duplicate key name `{}`", k.name),
            );
        }
        match (&k.key, &k.key_sha256) {
            (Some(_), Some(_)) => ctx.err(
                &item_path(ctx, "keys", i, ""),
                "set either `key` or `key_sha256`, not both",
            ),
            (None, None) => ctx.err(
                &item_path(ctx, "keys", i, ""),
                "missing `key` or `key_sha256` (`slmgate keys hash` prints the hash of a key)",
            ),
            (Some(secret), None) => {
                if secret.is_empty() {
                    ctx.err(
                        &item_path(ctx, "keys", i, "key"),
                        "is empty (is the environment variable it reads set?)",
                    );
                } else if secrets.insert(secret, i).is_some() {
                    ctx.err(
                        &item_path(ctx, "keys", i, "key"),
                        "the same secret is used by two keys",
                    );
                }
            }
            (None, Some(h)) => {
                if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                    ctx.err(
                        &item_path(ctx, "keys", i, "key_sha256"),
                        "must be 64 hex digits (a sha256)",
                    );
                }
            }
        }
        for (j, m) in k.models.iter().enumerate() {
            if !model_names.contains(&m.as_str()) {
                let hint = did_you_mean(m, model_names.iter().copied());
                let mut p = item_path(ctx, "keys", i, "models");
                p.push(Seg::Index(j));
                ctx.err(&p, format!("unknown model `{m}`{hint}"));
            }
        }
    }
    match cfg.auth {
        Some(AuthMode::Keys) if cfg.keys.is_empty() => ctx.err(
            &[key("auth")],
            "`auth: keys` needs at least one entry in `keys` (or `auth: none` for an open gateway)",
        ),
        Some(AuthMode::None) if !cfg.keys.is_empty() => ctx.err(
            &[key("auth")],
            format!(
                "`auth: none` says client requests need no key, but `keys` lists {}: remove one or the other",
                cfg.keys.len()
            ),
        ),
        _ => {}
    }
    if cfg.admin.loopback_only && cfg.admin.has_key() {
        ctx.err(
            &[key("admin"), key("loopback_only")],
            "`loopback_only: true` conflicts with the admin key set here: remove one or the other",
        );
    }
    if let (Some(_), Some(_)) = (cfg.admin.key(), &cfg.admin.key_sha256) {
        ctx.err(
            &[key("admin"), key("key")],
            "set either `key` or `key_sha256`, not both",
        );
    }
    if let Some(h) = &cfg.admin.key_sha256 {
        if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            ctx.err(
                &[key("admin"), key("key_sha256")],
                "must be 64 hex digits (a sha256)",
            );
        }
    }
}
