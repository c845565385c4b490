//! Client keys: found by the sha256 of the presented secret, never stored in clear.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A client key, known by the sha256 of its secret.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Key name (for logs and accounting).
    pub name: String,
    /// sha256 of the secret.
    pub sha256: [u8; 32],
    /// Team, if any.
    pub team: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Allowed aliases; empty = all.
    pub models: Vec<String>,
    /// USD budget (`keys[].budget`).
    pub budget: Option<slmgate_policies::budget::BudgetLimits>,
    /// Requests and tokens per minute (`keys[].rate_limit`).
    pub rate_limit: Option<slmgate_policies::ratelimit::RateLimits>,
}

/// The identity of an authenticated caller, put in request extensions by the auth layer.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key that matched, or `None` when the gateway is open (no keys configured).
    pub key: Option<Arc<ClientKey>>,
}

/// Client keys, found by the sha256 digest of the presented secret.
///
/// Only digests are stored. A lookup hashes the presented secret and finds the digest in a
/// hash map: O(1) whatever the number of keys (a linear constant-time scan of 100 keys cost
/// ~10 % of the gateway's throughput in `benches/gateway_load.rs`). Lookup timing can at most
/// reveal something about the *digest* of a guess, and sha256's preimage resistance makes that
/// useless for finding a secret, so no constant-time comparison is needed on this path.
/// The map is hashed with foldhash: its keys are sha256 digests, uniformly spread whatever
/// the secrets, so SipHash's flooding protection buys nothing.
#[derive(Debug, Default)]
pub struct Keys {
    keys: HashMap<[u8; 32], Arc<ClientKey>, foldhash::fast::RandomState>,
}

impl Keys {
    /// Builds the key set (a later key with the same secret replaces an earlier one; config
    /// validation rejects duplicate secrets).
    pub fn new(keys: Vec<ClientKey>) -> Self {
        Keys {
            keys: keys.into_iter().map(|k| (k.sha256, Arc::new(k))).collect(),
        }
    }

    /// True when no key is configured (the gateway is open).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key named `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<ClientKey>> {
        self.keys.values().find(|k| k.name == name).cloned()
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<Arc<ClientKey>> {
        let mut v: Vec<_> = self.keys.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Finds the key whose secret is `presented`.
    pub fn find(&self, presented: &str) -> Option<Arc<ClientKey>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.keys.get(&digest).cloned()
    }
}

/// The keys created at run time (`/admin/keys`, stored in the usage database), shared by
/// every snapshot: a reload hands the same handle to the next one ([`crate::build::Carry`]).
/// A background task ([`spawn_poller`]) replaces the whole set every `usage.keys_poll`; the
/// instance that serves an admin call updates it at once.
#[derive(Debug, Clone, Default)]
pub struct RuntimeKeys {
    keys: Arc<arc_swap::ArcSwap<Keys>>,
}

impl RuntimeKeys {
    /// True when no runtime key is active.
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_open()
    }

    /// Finds the runtime key whose secret is `presented`.
    pub fn find(&self, presented: &str) -> Option<Arc<ClientKey>> {
        self.keys.load().find(presented)
    }

    /// Finds the runtime key named `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<ClientKey>> {
        self.keys
            .load()
            .keys
            .values()
            .find(|k| k.name == name)
            .cloned()
    }

    /// The active runtime keys, by name.
    pub fn list(&self) -> Vec<Arc<ClientKey>> {
        let mut v: Vec<_> = self.keys.load().keys.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Replaces the set with the database's active keys (rows with an unreadable digest are
    /// skipped and logged).
    pub fn replace(&self, stored: Vec<slmgate_usage::keys::StoredKey>) {
        let keys = stored
            .into_iter()
            .filter_map(|k| {
                let Some(digest) = parse_sha256(&k.sha256) else {
                    tracing::warn!(key = %k.name, "runtime key with a malformed sha256 skipped");
                    return None;
                };
                Some(ClientKey {
                    name: k.name,
                    sha256: digest,
                    team: k.team,
                    tags: k.tags,
                    models: k.models,
                    budget: k.budget,
                    rate_limit: k.rate_limit,
                })
            })
            .collect();
        self.keys.store(Arc::new(Keys::new(keys)));
    }

    /// Reads the active keys from `store` into this set.
    pub async fn refresh(&self, store: &slmgate_usage::Store) -> Result<(), sqlx::Error> {
        let stored = store.active_keys().await?;
        self.replace(stored);
        Ok(())
    }
}

/// Re-reads the runtime keys from `store` every `every`, until `stop` is cancelled. A failed
/// read is logged and the previous set kept.
pub fn spawn_poller(
    keys: RuntimeKeys,
    store: slmgate_usage::Store,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = keys.refresh(&store).await {
                        tracing::warn!(error = %e, "cannot read the runtime keys; keeping the last set");
                    }
                }
            }
        }
    })
}

/// Decodes a 64-hex-digit sha256.
pub fn parse_sha256(hex_str: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_str.trim()).ok()?;
    v.try_into().ok()
}

/// sha256 of a secret.
pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> ClientKey {
        ClientKey {
            name: name.into(),
            sha256: sha256(secret),
            team: None,
            tags: vec![],
            models: vec![],
            budget: None,
            rate_limit: None,
        }
    }

    #[test]
    fn finds_the_right_key() {
        let keys = Keys::new(vec![key("a", "sk-a"), key("b", "sk-b")]);
        assert_eq!(keys.find("sk-b").unwrap().name, "b");
        assert!(keys.find("sk-c").is_none());
        assert!(keys.find("").is_none());
        assert!(!keys.is_open());
        assert!(Keys::default().is_open());
    }

    #[test]
    fn parses_hex_digests() {
        let h = hex::encode(sha256("x"));
        assert_eq!(parse_sha256(&h), Some(sha256("x")));
        assert_eq!(parse_sha256("abc"), None);
        assert_eq!(parse_sha256("zz"), None);
    }
}
