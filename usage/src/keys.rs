//! Client keys created at run time (`POST /admin/keys`), stored in the usage database's
//! `client_keys` table next to the usage records (migration `0002_client_keys.sql`).
//!
//! Only the sha256 of a secret is stored (64 hex digits). Every gateway instance on the same
//! database reads the active keys ([`crate::Store::active_keys`]) every `usage.keys_poll`, so a
//! key created or revoked on one instance is known to all of them within that interval. A
//! revoked key keeps its row (its name stays taken, so usage rows keep meaning one key).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use slmgate_policies::budget::BudgetLimits;
use slmgate_policies::ratelimit::RateLimits;

use crate::Store;

/// A key created at run time, as stored (no secret: its digest only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Unique name (usage rows, budgets and rate limits are kept by name).
    pub name: String,
    /// sha256 of the secret, 64 lowercase hex digits.
    pub sha256: String,
    /// Team, for budgets and reports.
    pub team: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Aliases the key may use; empty = all.
    pub models: Vec<String>,
    /// USD per day / month.
    pub budget: Option<BudgetLimits>,
    /// Requests and tokens per minute.
    pub rate_limit: Option<RateLimits>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// What [`Store::create_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The key is stored.
    Created,
    /// A key (active or revoked) already has this name or this secret.
    Taken,
}

const KEY_COLUMNS: &str = "name, sha256, team, tags, models, budget, rate_limit, created_ms";

fn to_json<T: Serialize>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str, column: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(e),
    })
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<StoredKey, sqlx::Error> {
    let opt = |column: &str| -> Result<Option<String>, sqlx::Error> { row.try_get(column) };
    Ok(StoredKey {
        name: row.try_get("name")?,
        sha256: row.try_get("sha256")?,
        team: opt("team")?,
        tags: from_json(&row.try_get::<String, _>("tags")?, "tags")?,
        models: from_json(&row.try_get::<String, _>("models")?, "models")?,
        budget: opt("budget")?
            .map(|s| from_json(&s, "budget"))
            .transpose()?,
        rate_limit: opt("rate_limit")?
            .map(|s| from_json(&s, "rate_limit"))
            .transpose()?,
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Stores `key`, unless a key (active or revoked) has its name or its digest.
    pub async fn create_key(&self, key: &StoredKey) -> Result<Created, sqlx::Error> {
        let taken = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM client_keys WHERE name = $1 OR sha256 = $2",
        )
        .bind(key.name.clone())
        .bind(key.sha256.clone())
        .fetch_one(self.pool())
        .await?
        .try_get::<i64, _>(0)?;
        if taken > 0 {
            return Ok(Created::Taken);
        }
        let budget = key.budget.as_ref().map(to_json).transpose()?;
        let rate_limit = key.rate_limit.as_ref().map(to_json).transpose()?;
        let res = sqlx::query(&format!(
            "INSERT INTO client_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(key.name.clone())
        .bind(key.sha256.clone())
        .bind(key.team.clone())
        .bind(to_json(&key.tags)?)
        .bind(to_json(&key.models)?)
        .bind(budget)
        .bind(rate_limit)
        .bind(key.created_ms)
        .execute(self.pool())
        .await;
        match res {
            Ok(_) => Ok(Created::Created),
            // Another instance created the same name between the check and the insert.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Created::Taken),
            Err(e) => Err(e),
        }
    }

    /// The keys not revoked, by name.
    pub async fn active_keys(&self) -> Result<Vec<StoredKey>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM client_keys WHERE revoked_ms IS NULL ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes the active key `name` at `now_ms`; false when no active key has that name.
    pub async fn revoke_key(&self, name: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "UPDATE client_keys SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(name.to_string())
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, sha: &str) -> StoredKey {
        StoredKey {
            name: name.into(),
            sha256: sha.into(),
            team: Some("t".into()),
            tags: vec!["a".into()],
            models: vec!["remote".into()],
            budget: Some(BudgetLimits {
                daily_usd: Some(1.5),
                monthly_usd: None,
            }),
            rate_limit: None,
            created_ms: 7,
        }
    }

    #[tokio::test]
    async fn keys_are_created_listed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("u.db").display());
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(
            store.create_key(&key("a", "aa")).await.unwrap(),
            Created::Created
        );
        assert_eq!(
            store.create_key(&key("a", "bb")).await.unwrap(),
            Created::Taken
        );
        assert_eq!(
            store.create_key(&key("b", "aa")).await.unwrap(),
            Created::Taken,
            "the same secret twice"
        );
        let mut plain = key("b", "bb");
        plain.team = None;
        plain.budget = None;
        store.create_key(&plain).await.unwrap();
        assert_eq!(
            store.active_keys().await.unwrap(),
            vec![key("a", "aa"), plain]
        );
        assert!(store.revoke_key("a", 9).await.unwrap());
        assert!(!store.revoke_key("a", 9).await.unwrap(), "already revoked");
        assert!(!store.revoke_key("zz", 9).await.unwrap());
        let names: Vec<String> = store
            .active_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["b"]);
        assert_eq!(
            store.create_key(&key("a", "cc")).await.unwrap(),
            Created::Taken,
            "a revoked key's name stays taken"
        );
    }
}
