//! Client keys managed at run time: `POST /admin/keys`, `GET /admin/keys`,
//! `DELETE /admin/keys/{name}`, behind [`AdminAuthLayer`] like the other operator endpoints.
//!
//! Runtime keys live in the usage database (`client_keys`, only the secret's sha256), so they
//! need `usage.database`; without one, creating or revoking answers 409
//! (`runtime_keys_unavailable`). Every instance on the same database re-reads the active keys
//! every `usage.keys_poll` (default 5s, [`crate::keys::spawn_poller`]); the instance that
//! serves the call updates its set at once. Auth looks a presented secret up in the YAML
//! `keys:` first, then in the runtime keys ([`crate::layers::auth`]).
//!
//! - `POST /admin/keys` with `{name, team?, tags?, models?, budget?, rate_limit?}` (the shapes
//!   of a YAML key's fields) answers 201 with the key and its secret `key` (`sk-slm-` and 32
//!   random characters), shown this once. 400 for a bad body (`param` names the field), 409
//!   when the name is a YAML key's or a runtime key's (revoked ones included).
//! - `GET /admin/keys` lists the YAML and the runtime keys (`source: yaml | runtime`), never a
//!   secret or a digest.
//! - `DELETE /admin/keys/{name}` revokes a runtime key: 204; 404 when no active runtime key
//!   has that name; 409 for a YAML key (edit the config).

use axum::extract::{Extension, Path};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use bytes::Bytes;
use http::StatusCode;
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{json, Value};

use slmgate_policies::budget::BudgetLimits;
use slmgate_policies::ratelimit::RateLimits;
use slmgate_policies::PathSeg;
use slmgate_usage::keys::{Created, StoredKey};
use slmgate_usage::Store;

use crate::handlers;
use crate::keys::ClientKey;
use crate::layers::admin_auth::AdminAuthLayer;
use crate::layers::snapshot::Snapshot;
use crate::runtime::Gateway;

/// The prefix of generated secrets.
pub const SECRET_PREFIX: &str = "sk-slm-";

/// The usage database, when configured (an extension of these routes).
#[derive(Clone)]
struct KeyStore(Option<Store>);

/// The key endpoints, behind the admin check; `store` is the usage database.
pub fn routes<S: Clone + Send + Sync + 'static>(store: Option<Store>) -> Router<S> {
    Router::new()
        .route(
            "/admin/keys",
            MethodRouter::new()
                .get(list)
                .post(create)
                .fallback(handlers::method_not_allowed),
        )
        .route(
            "/admin/keys/{name}",
            MethodRouter::new()
                .delete(revoke)
                .fallback(handlers::method_not_allowed),
        )
        .route_layer(AdminAuthLayer)
        .layer(Extension(KeyStore(store)))
}

/// An OpenAI-shaped error.
fn error(status: StatusCode, code: &str, param: Option<&str>, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (status, Json(body)).into_response()
}

fn no_database() -> Response {
    error(
        StatusCode::CONFLICT,
        "runtime_keys_unavailable",
        None,
        "runtime keys need `usage.database`: configure the `usage:` section (SQLite or PostgreSQL) to create and revoke keys at run time",
    )
}

fn database_error(e: &sqlx::Error) -> Response {
    tracing::error!(error = %e, "runtime keys: the usage database failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_error",
        None,
        "the usage database failed; see the gateway's log",
    )
}

/// `POST /admin/keys`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    budget: Option<BudgetLimits>,
    #[serde(default)]
    rate_limit: Option<RateLimits>,
}

/// A bad field: (param, message).
type Invalid = (String, String);

fn validate(body: &CreateBody, gw: &Gateway) -> Result<(), Invalid> {
    let bad = |p: &str, m: String| Err((p.to_string(), m));
    let name = body.name.as_str();
    if name.trim().is_empty() {
        return bad("name", "must not be empty".into());
    }
    if name.len() > 128 || name.chars().any(char::is_control) || name.contains('/') {
        return bad(
            "name",
            "must be at most 128 characters, without `/` or control characters".into(),
        );
    }
    if body.team.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return bad("team", "must not be empty".into());
    }
    for m in &body.models {
        if !gw.model_order.contains(m) && !gw.unavailable.contains_key(m) {
            return bad("models", format!("the model `{m}` does not exist"));
        }
    }
    if let Some(b) = &body.budget {
        if let Some(e) = b.validate(&[PathSeg::Key("budget".into())]).first() {
            let p = slmgate_policies::render_path(&e.path);
            return Err((p, e.message.clone()));
        }
    }
    if let Some(r) = &body.rate_limit {
        if r.burst_requests.is_some() && r.requests_per_minute.is_none() {
            return bad(
                "rate_limit.burst_requests",
                "needs rate_limit.requests_per_minute".into(),
            );
        }
        if r.burst_tokens.is_some() && r.tokens_per_minute.is_none() {
            return bad(
                "rate_limit.burst_tokens",
                "needs rate_limit.tokens_per_minute".into(),
            );
        }
    }
    Ok(())
}

/// A new secret: the prefix and 32 random alphanumeric (URL-safe) characters.
fn new_secret() -> String {
    let mut rng = rand::rng();
    let tail: String = (&mut rng)
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("{SECRET_PREFIX}{tail}")
}

fn describe(k: &ClientKey, source: &str) -> Value {
    json!({
        "name": k.name,
        "source": source,
        "team": k.team,
        "tags": k.tags,
        "models": k.models,
        "budget": k.budget,
        "rate_limit": k.rate_limit,
    })
}

fn describe_stored(k: &StoredKey) -> Value {
    json!({
        "name": k.name,
        "source": "runtime",
        "team": k.team,
        "tags": k.tags,
        "models": k.models,
        "budget": k.budget,
        "rate_limit": k.rate_limit,
        "created_ms": k.created_ms,
    })
}

/// `POST /admin/keys`.
async fn create(
    Extension(Snapshot(gw)): Extension<Snapshot>,
    Extension(KeyStore(store)): Extension<KeyStore>,
    body: Bytes,
) -> Response {
    let Some(store) = store else {
        return no_database();
    };
    let body: CreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                None,
                &format!("invalid key: {e}"),
            )
        }
    };
    if let Err((param, message)) = validate(&body, &gw) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some(&param),
            &format!("{param}: {message}"),
        );
    }
    if gw.keys.by_name(&body.name).is_some() {
        return error(
            StatusCode::CONFLICT,
            "key_exists",
            Some("name"),
            &format!("`{}` is a key of the config (`keys:`)", body.name),
        );
    }
    let secret = new_secret();
    let stored = StoredKey {
        name: body.name,
        sha256: hex::encode(crate::keys::sha256(&secret)),
        team: body.team,
        tags: body.tags,
        models: body.models,
        budget: body.budget,
        rate_limit: body.rate_limit,
        created_ms: slmgate_usage::now_ms(),
    };
    match store.create_key(&stored).await {
        Ok(Created::Created) => {}
        Ok(Created::Taken) => {
            return error(
                StatusCode::CONFLICT,
                "key_exists",
                Some("name"),
                &format!(
                    "a runtime key named `{}` exists or existed (revoked names stay taken)",
                    stored.name
                ),
            )
        }
        Err(e) => return database_error(&e),
    }
    // This instance knows the key at once; the others at their next poll.
    if let Err(e) = gw.runtime_keys.refresh(&store).await {
        tracing::warn!(error = %e, "cannot re-read the runtime keys after creating one");
    }
    tracing::info!(key = %stored.name, "runtime key created");
    let mut v = describe_stored(&stored);
    v["key"] = Value::String(secret);
    (StatusCode::CREATED, Json(v)).into_response()
}

/// `GET /admin/keys`.
async fn list(
    Extension(Snapshot(gw)): Extension<Snapshot>,
    Extension(KeyStore(store)): Extension<KeyStore>,
) -> Response {
    let mut data: Vec<Value> = gw.keys.list().iter().map(|k| describe(k, "yaml")).collect();
    if let Some(store) = store {
        match store.active_keys().await {
            Ok(keys) => data.extend(keys.iter().map(describe_stored)),
            Err(e) => return database_error(&e),
        }
    }
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `DELETE /admin/keys/{name}`.
async fn revoke(
    Extension(Snapshot(gw)): Extension<Snapshot>,
    Extension(KeyStore(store)): Extension<KeyStore>,
    Path(name): Path<String>,
) -> Response {
    if gw.keys.by_name(&name).is_some() {
        return error(
            StatusCode::CONFLICT,
            "yaml_key",
            Some("name"),
            &format!("`{name}` is a key of the config: edit the config (`keys:`) and reload"),
        );
    }
    let Some(store) = store else {
        return no_database();
    };
    match store.revoke_key(&name, slmgate_usage::now_ms()).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::NOT_FOUND,
                "key_not_found",
                Some("name"),
                &format!("no active runtime key named `{name}`"),
            )
        }
        Err(e) => return database_error(&e),
    }
    if let Err(e) = gw.runtime_keys.refresh(&store).await {
        tracing::warn!(error = %e, "cannot re-read the runtime keys after revoking one");
    }
    tracing::info!(key = %name, "runtime key revoked");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_url_safe() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_PREFIX.len() + 32);
        assert!(a.starts_with(SECRET_PREFIX));
        assert!(a[SECRET_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
    }
}
