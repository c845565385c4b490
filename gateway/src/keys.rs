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

    /// Finds the key whose secret is `presented`.
    pub fn find(&self, presented: &str) -> Option<Arc<ClientKey>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.keys.get(&digest).cloned()
    }
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
