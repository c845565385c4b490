//! The loading pipeline: parse → index positions → interpolate → typed parse of each item
//! (collecting every error, not just the first) → semantic validation.

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use crate::ctx::{join, key, Ctx};
use crate::interp::{interpolate, is_single_expression};
use crate::positions::{Positions, Seg};
use crate::schema::*;
use crate::{validate, ConfigError, ConfigErrors};

pub(crate) fn load(
    src: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut value: Value = match serde_norway::from_str(src) {
        Ok(v) => v,
        Err(e) => {
            let loc = e.location();
            let message = e.to_string();
            // serde_norway appends " at line L column C"; the position is printed up front.
            let message = match message.find(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            return Err(ConfigErrors(vec![ConfigError {
                origin: origin.to_string(),
                line: loc.as_ref().map(serde_norway::Location::line),
                column: loc.as_ref().map(serde_norway::Location::column),
                path: "<root>".into(),
                message: format!("invalid YAML: {message}"),
            }]));
        }
    };
    let mut ctx = Ctx {
        origin,
        positions: Positions::index(src),
        errors: Vec::new(),
        indices: Default::default(),
    };
    if value.is_null() {
        value = Value::Mapping(Mapping::new());
    }
    interpolate_tree(&mut value, &mut Vec::new(), env, &mut ctx);

    let Value::Mapping(mut root) = value else {
        ctx.err(
            &[],
            "the config must be a mapping of keys (listen, backends, models, ...)",
        );
        return Err(ConfigErrors(ctx.errors));
    };
    let backends = root.remove("backends");
    let models = root.remove("models");
    let keys = root.remove("keys");
    // `models:` with nothing after it (a file cut short there) is null, not a declaration.
    let models_declared = matches!(models, Some(Value::Sequence(_)));

    let mut cfg: Config = parse_lenient(
        Value::Mapping(root),
        &[],
        &["backends", "models", "keys"],
        &mut ctx,
    )
    .unwrap_or_else(empty_config);
    cfg.backends = each_item(backends, "backends", &mut ctx, parse_backend);
    cfg.models = each_item(models, "models", &mut ctx, |v, p, ctx| {
        parse_lenient(v, p, &[], ctx)
    });
    cfg.keys = each_item(keys, "keys", &mut ctx, |v, p, ctx| {
        parse_lenient(v, p, &[], ctx)
    });
    cfg.models_declared = models_declared;

    crate::telemetry::resolve(&mut cfg, env);
    validate::validate(&cfg, &mut ctx);
    crate::telemetry::validate(&cfg, &mut ctx);
    crate::routing::validate(&cfg, &mut ctx);
    crate::policy::validate(&cfg, &mut ctx);
    crate::usage::validate(&cfg, &mut ctx);
    crate::cache::validate(&cfg, &mut ctx);
    crate::state::validate(&cfg, &mut ctx);
    if ctx.errors.is_empty() {
        Ok(cfg)
    } else {
        ctx.errors
            .sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
        Err(ConfigErrors(ctx.errors))
    }
}

fn empty_config() -> Config {
    Config {
        listen: default_listen(),
        limits: Limits::default(),
        backends: Vec::new(),
        models: Vec::new(),
        embedder: None,
        keys: Vec::new(),
        auth: None,
        models_declared: false,
        router: None,
        policies: None,
        pricing: Default::default(),
        teams: Vec::new(),
        admin: Default::default(),
        usage: None,
        cache: Default::default(),
        telemetry: Default::default(),
        state: Default::default(),
    }
}

fn interpolate_tree(
    v: &mut Value,
    path: &mut Vec<Seg>,
    env: &dyn Fn(&str) -> Option<String>,
    ctx: &mut Ctx,
) {
    match v {
        Value::String(s) => match interpolate(s, env) {
            Ok(out) => {
                let single = is_single_expression(s);
                *v = Value::String(out);
                if single {
                    if let Value::String(out) = &*v {
                        if let Ok(parsed @ (Value::Bool(_) | Value::Number(_))) =
                            serde_norway::from_str::<Value>(out)
                        {
                            *v = parsed;
                        }
                    }
                }
            }
            Err(msg) => {
                ctx.err(path, msg);
                *v = Value::String(String::new());
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                interpolate_tree(item, path, env, ctx);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                path.push(Seg::Key(key_string(k)));
                interpolate_tree(item, path, env, ctx);
                path.pop();
            }
        }
        Value::Tagged(t) => interpolate_tree(&mut t.value, path, env, ctx),
        _ => {}
    }
}

fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// Parses each element of a top-level list with `parse`, dropping the ones that fail.
fn each_item<T>(
    v: Option<Value>,
    name: &'static str,
    ctx: &mut Ctx,
    mut parse: impl FnMut(Value, &[Seg], &mut Ctx) -> Option<T>,
) -> Vec<T> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => {
            let mut out = Vec::new();
            let mut idx = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                if let Some(t) = parse(item, &[key(name), Seg::Index(i)], ctx) {
                    out.push(t);
                    idx.push(i);
                }
            }
            ctx.indices.insert(name, idx);
            out
        }
        Some(_) => {
            ctx.err(&[key(name)], format!("`{name}` must be a list"));
            Vec::new()
        }
    }
}

/// The backend kinds.
const KINDS: [&str; 4] = ["openai", "azure", "anthropic", "local"];
const KINDS_TEXT: &str = "`openai`, `azure`, `anthropic` or `local`";

fn parse_backend(v: Value, path: &[Seg], ctx: &mut Ctx) -> Option<Backend> {
    const COMMON: [&str; 3] = ["name", "kind", "enabled"];
    let Value::Mapping(mut map) = v else {
        ctx.err(path, "a backend must be a mapping with name, kind, ...");
        return None;
    };
    let mut ok = true;
    let name = match map.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => {
            ctx.err(&join(path, [key("name")]), "`name` must be a string");
            ok = false;
            String::new()
        }
        None => {
            ctx.err(path, "missing required key `name`");
            ok = false;
            String::new()
        }
    };
    let enabled = match map.remove("enabled") {
        None => Enabled::Auto,
        Some(e) => match serde_norway::from_value::<Enabled>(e) {
            Ok(e) => e,
            Err(e) => {
                ctx.err(&join(path, [key("enabled")]), e.to_string());
                Enabled::Auto
            }
        },
    };
    let kind = match map.remove("kind") {
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            ctx.err(
                &join(path, [key("kind")]),
                format!("`kind` must be {KINDS_TEXT}"),
            );
            None
        }
        None => {
            ctx.err(path, format!("missing required key `kind` ({KINDS_TEXT})"));
            None
        }
    };
    let dialect = match kind.as_deref() {
        Some("azure") => Some(Dialect::Azure),
        Some("anthropic") => Some(Dialect::Anthropic),
        Some("openai") => Some(Dialect::OpenAi),
        _ => None,
    };
    if dialect == Some(Dialect::Anthropic) && !map.contains_key("base_url") {
        map.insert(
            Value::String("base_url".into()),
            Value::String(ANTHROPIC_BASE_URL.into()),
        );
    }
    let has_api_version = map.contains_key("api_version");
    let rest = Value::Mapping(map);
    let kind = match (kind.as_deref(), dialect) {
        (_, Some(dialect)) => {
            let parsed = parse_lenient::<OpenAiBackend>(rest, path, &COMMON, ctx);
            if dialect == Dialect::Azure && !has_api_version {
                ctx.err(
                    path,
                    "missing required key `api_version` (`kind: azure`; e.g. `api_version: 2024-10-21`)",
                );
                ok = false;
            }
            if dialect != Dialect::Azure && has_api_version {
                ctx.err(
                    &join(path, [key("api_version")]),
                    format!(
                        "`api_version` is for `kind: azure` only, not `kind: {}`",
                        dialect.kind()
                    ),
                );
                ok = false;
            }
            parsed.map(|mut o| {
                o.dialect = dialect;
                BackendKind::OpenAi(o)
            })
        }
        (Some("local"), None) => {
            parse_lenient::<LocalBackend>(rest, path, &COMMON, ctx).map(BackendKind::Local)
        }
        (Some(other), None) => {
            let hint = validate::did_you_mean(other, KINDS);
            ctx.err(
                &join(path, [key("kind")]),
                format!("unknown backend kind `{other}` (expected {KINDS_TEXT}){hint}"),
            );
            None
        }
        (None, None) => None,
    }?;
    ok.then_some(Backend {
        name,
        enabled,
        kind,
    })
}

/// Deserializes `v` as `T`, recording every error: after each failure the offending key is
/// removed and the parse retried, so one run reports all unknown keys and bad values.
pub(crate) fn parse_lenient<T: DeserializeOwned>(
    mut v: Value,
    base: &[Seg],
    extra_fields: &[&str],
    ctx: &mut Ctx,
) -> Option<T> {
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    for _ in 0..256 {
        let err = match serde_path_to_error::deserialize::<_, T>(&v) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let path: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let msg = err.into_inner().to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        let full = join(base, path.iter().cloned());
        if let Some(field) = backticked_after(&msg, "missing field ") {
            let missing = join(&path, [Seg::Key(field.clone())]);
            if !removed.contains(&missing) {
                ctx.err(&full, format!("missing required key `{field}`"));
            }
        } else if let Some(field) = backticked_after(&msg, "unknown field ") {
            let mut expected = backticked_all(msg.split_once("expected").map_or("", |x| x.1));
            // The keys parsed separately belong to the top level only, not to a section's
            // listing (`admin.bogus` must not suggest `backends`).
            let top_level = path.len() <= 1;
            for f in extra_fields.iter().filter(|_| top_level) {
                if !expected.iter().any(|e| e == f) {
                    expected.push(f.to_string());
                }
            }
            let hint = validate::did_you_mean(&field, expected.iter().map(String::as_str));
            let listing = if expected.is_empty() {
                String::new()
            } else {
                format!(" (expected one of: {})", expected.join(", "))
            };
            ctx.err(&full, format!("unknown key `{field}`{hint}{listing}"));
        } else if let Some(variant) = backticked_after(&msg, "unknown variant ") {
            let expected = backticked_all(msg.split_once("expected").map_or("", |x| x.1));
            let hint = validate::did_you_mean(&variant, expected.iter().map(String::as_str));
            ctx.err(
                &full,
                format!(
                    "unknown value `{variant}` (expected one of: {}){hint}",
                    expected.join(", ")
                ),
            );
        } else {
            ctx.err(&full, msg);
        }
        // Repair: drop the deepest mapping key on the path (for a missing key, the key
        // holding the incomplete value) and try again.
        let cut = path.iter().rposition(|s| matches!(s, Seg::Key(_)));
        match cut {
            Some(i) => {
                let target = path[..=i].to_vec();
                if !remove_at(&mut v, &target) {
                    return None;
                }
                removed.push(target);
            }
            None => return None,
        }
    }
    None
}

fn remove_at(v: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Mapping(m)) => match m.get_mut(k.as_str()) {
                Some(next) => next,
                None => return false,
            },
            (Seg::Index(i), Value::Sequence(s)) => match s.get_mut(*i) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        _ => false,
    }
}

/// The first backticked word after `prefix` in `msg`.
fn backticked_after(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.split_once(prefix)?.1.strip_prefix('`')?;
    Some(rest.split_once('`')?.0.to_string())
}

fn backticked_all(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}
