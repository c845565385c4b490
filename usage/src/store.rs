//! The usage database: SQLite (a file in WAL mode, the embedded default) or PostgreSQL (for
//! several gateway instances), one schema and the same SQL for both.
//!
//! Both go through sqlx's `Any` driver with runtime queries (nothing needs a database at
//! build time). The SQL is written to the common subset: `$N` placeholders (SQLite accepts
//! them too), `BIGINT` / `DOUBLE PRECISION` / `TEXT` columns, booleans stored as 0/1, times
//! as Unix milliseconds (so time buckets are integer division), and every aggregate `CAST`
//! to the type it is read as (PostgreSQL's `SUM(bigint)` is `numeric`, which `Any` cannot
//! read).
//!
//! Migrations are the numbered files in `usage/migrations/`, embedded in the binary and
//! applied at connect time by sqlx's migrator (which takes an advisory lock on PostgreSQL,
//! so instances starting together do not race).

use std::borrow::Cow;

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use super::UsageRecord;
use slmgate_config::usage::{database_kind, DatabaseKind};
use slmgate_policies::budget::BudgetScope;

/// The embedded migrations: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "usage records",
        include_str!("../migrations/0001_usage_records.sql"),
    ),
    (
        2,
        "client keys",
        include_str!("../migrations/0002_client_keys.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The columns of `usage_records`, in insert order.
pub const COLUMNS: &[&str] = &[
    "id",
    "ts_ms",
    "request_id",
    "key_name",
    "team",
    "requested_model",
    "target",
    "strategy",
    "category",
    "score",
    "reason",
    "backend",
    "upstream_model",
    "is_local",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "counterfactual_usd",
    "latency_ms",
    "ttft_ms",
    "cache",
    "status",
    "error_class",
];

/// Rows per `INSERT` statement on PostgreSQL, far below its bound-parameter limit.
const ROWS_PER_STATEMENT: usize = 500;

/// Rows per `INSERT` statement on SQLite. Its placeholders are anonymous (`?`): sqlx's
/// SQLite driver looks every numbered one (`$N`) up by name, a scan of the statement's
/// parameter list each, which made a 500-row statement quadratic (seen with callgrind under
/// the gateway_load traffic: `strncmp` and `sqlite3_bind_parameter_name` dominated the
/// writer). Anonymous ones are bound in order at no search cost; 32 rows × 24 columns stay
/// far below SQLite's bound-parameter limit, and full statements repeat the same text, so
/// sqlx's prepared-statement cache skips re-parsing it.
const SQLITE_ROWS_PER_STATEMENT: usize = 32;

/// A connection pool to the usage database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DatabaseKind,
}

/// The file of a `sqlite:` URL (`None` for in-memory databases).
pub fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// For SQLite: the URL with `mode=rwc` (create the file when missing) unless a mode is set.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

impl Store {
    /// Connects to `url` (`sqlite://file` or `postgres://...`), creating the SQLite file
    /// when missing, and applies the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let kind = database_kind(url).with_context(|| {
            format!("usage.database `{url}`: use sqlite://<file> or postgres://...")
        })?;
        let (url, max) = match kind {
            DatabaseKind::Sqlite => {
                // Create the data directory (e.g. a fresh `$SLMGATE_DATA_DIR`) like the file.
                if let Some(dir) = sqlite_file(url).and_then(|f| std::path::Path::new(f).parent()) {
                    if !dir.as_os_str().is_empty() && !dir.exists() {
                        std::fs::create_dir_all(dir).with_context(|| {
                            format!(
                                "cannot create the usage database's directory {}",
                                dir.display()
                            )
                        })?;
                    }
                }
                (sqlite_url(url), 4)
            }
            DatabaseKind::Postgres => (url.to_string(), 8),
        };
        let sqlite = kind == DatabaseKind::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // In WAL mode NORMAL is crash-safe for the database (a power cut may
                        // lose the last commits, never corrupt the file) and skips the fsync
                        // per commit that FULL does; usage records are batched anyway.
                        sqlx::query("PRAGMA synchronous=NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("cannot open the usage database `{}`", redact(&url)))?;
        if kind == DatabaseKind::Sqlite {
            // WAL: readers (`/v1/usage`) never block the writer. The mode is stored in the
            // file, so setting it once on any connection is enough.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .context("setting the usage database to WAL mode")?;
        }
        Migrator::new(Embedded)
            .await
            .context("loading usage migrations")?
            .run(&pool)
            .await
            .context("migrating the usage database")?;
        Ok(Store { pool, kind })
    }

    /// The pool (for tests and tools).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// Writes `rows` in one transaction.
    pub async fn insert(&self, rows: &[UsageRecord]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut rest = rows;
        while !rest.is_empty() {
            let n = statement_rows(rest.len(), self.kind);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let sql: std::borrow::Cow<'static, str> = match self.kind {
                DatabaseKind::Sqlite => sqlite_insert_sql(n).into(),
                DatabaseKind::Postgres => insert_sql(n, self.kind).into(),
            };
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind(r.ts_ms)
                    .bind(r.request_id.clone())
                    .bind(r.key_name.clone())
                    .bind(r.team.clone())
                    .bind(r.requested_model.clone())
                    .bind(r.target.clone())
                    .bind(r.strategy.clone())
                    .bind(r.category.clone())
                    .bind(r.score)
                    .bind(r.reason.clone())
                    .bind(r.backend.clone())
                    .bind(r.upstream_model.clone())
                    .bind(i64::from(r.local))
                    .bind(i64::from(r.stream))
                    .bind(r.prompt_tokens)
                    .bind(r.completion_tokens)
                    .bind(r.cost_usd)
                    .bind(r.counterfactual_usd)
                    .bind(r.latency_ms)
                    .bind(r.ttft_ms)
                    .bind(r.cache.clone())
                    .bind(r.status)
                    .bind(r.error_class.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Number of rows (all time).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records")
            .fetch_one(&self.pool)
            .await?;
        row.try_get(0)
    }

    /// The latest `limit` rows, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<UsageRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM usage_records ORDER BY ts_ms DESC, id DESC LIMIT $1",
            COLUMNS.join(", ")
        );
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Rows with `from <= ts_ms < to`, oldest first (for tests and exports).
    pub async fn rows(&self, from: i64, to: i64) -> Result<Vec<UsageRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM usage_records WHERE ts_ms >= $1 AND ts_ms < $2 ORDER BY ts_ms, id",
            COLUMNS.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// What each key and each team spent (`cost_usd`) in rows since `month_start_ms`, and of
    /// that since `day_start_ms`: the current budget windows' spend, which
    /// [`super::restore_budgets`] puts back into the budget ledger at startup. Rows without a
    /// key (an open gateway) or team are not anyone's spend.
    pub async fn spend_since(
        &self,
        day_start_ms: i64,
        month_start_ms: i64,
    ) -> Result<Vec<Spend>, sqlx::Error> {
        let mut out = Vec::new();
        for (scope, column) in [(BudgetScope::Key, "key_name"), (BudgetScope::Team, "team")] {
            let sql = format!(
                "SELECT {column}, \
                 CAST(COALESCE(SUM(CASE WHEN ts_ms >= $1 THEN cost_usd ELSE 0 END), 0) AS DOUBLE PRECISION), \
                 CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
                 FROM usage_records WHERE ts_ms >= $2 AND {column} IS NOT NULL GROUP BY {column}"
            );
            let rows = sqlx::query(&sql)
                .bind(day_start_ms)
                .bind(month_start_ms)
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                out.push(Spend {
                    scope,
                    name: row.try_get(0)?,
                    day_usd: row.try_get(1)?,
                    month_usd: row.try_get(2)?,
                });
            }
        }
        Ok(out)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One key's or team's spend in the current budget windows ([`Store::spend_since`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// A key's or a team's.
    pub scope: BudgetScope,
    /// The key's or team's name.
    pub name: String,
    /// USD since the start of the UTC day.
    pub day_usd: f64,
    /// USD since the start of the UTC month (the day included).
    pub month_usd: f64,
}

/// Rows in the next statement when `left` rows remain. SQLite statements come in three
/// sizes only (32, 4 and 1 rows), so every statement text is one sqlx has prepared and cached
/// before: a partial batch (flushed on time, not size) would otherwise be parsed afresh.
fn statement_rows(left: usize, kind: DatabaseKind) -> usize {
    match kind {
        DatabaseKind::Postgres => left.min(ROWS_PER_STATEMENT),
        DatabaseKind::Sqlite if left >= SQLITE_ROWS_PER_STATEMENT => SQLITE_ROWS_PER_STATEMENT,
        DatabaseKind::Sqlite if left >= 4 => 4,
        DatabaseKind::Sqlite => 1,
    }
}

/// The SQLite insert for `n` rows (one of [`statement_rows`]' sizes), built once.
fn sqlite_insert_sql(n: usize) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 3] = [
        std::sync::OnceLock::new(),
        std::sync::OnceLock::new(),
        std::sync::OnceLock::new(),
    ];
    let slot = match n {
        1 => 0,
        4 => 1,
        _ => 2,
    };
    let n = [1, 4, SQLITE_ROWS_PER_STATEMENT][slot];
    SQL[slot].get_or_init(|| insert_sql(n, DatabaseKind::Sqlite))
}

/// `INSERT ... VALUES (...), (...)` for `n` rows: numbered placeholders (`$1`) for
/// PostgreSQL, anonymous ones (`?`) for SQLite (see [`SQLITE_ROWS_PER_STATEMENT`]).
fn insert_sql(n: usize, kind: DatabaseKind) -> String {
    use std::fmt::Write as _;
    let cols = COLUMNS.len();
    let mut sql = format!("INSERT INTO usage_records ({}) VALUES ", COLUMNS.join(", "));
    for r in 0..n {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            match kind {
                DatabaseKind::Sqlite => sql.push('?'),
                // Writing into a String cannot fail.
                DatabaseKind::Postgres => {
                    let _ = write!(sql, "${}", r * cols + c + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}

fn from_row(row: &AnyRow) -> Result<UsageRecord, sqlx::Error> {
    Ok(UsageRecord {
        id: row.try_get("id")?,
        ts_ms: row.try_get("ts_ms")?,
        request_id: row.try_get("request_id")?,
        key_name: row.try_get("key_name")?,
        team: row.try_get("team")?,
        requested_model: row.try_get("requested_model")?,
        target: row.try_get("target")?,
        strategy: row.try_get("strategy")?,
        category: row.try_get("category")?,
        score: row.try_get("score")?,
        reason: row.try_get("reason")?,
        backend: row.try_get("backend")?,
        upstream_model: row.try_get("upstream_model")?,
        local: row.try_get::<i64, _>("is_local")? != 0,
        stream: row.try_get::<i64, _>("stream")? != 0,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
        counterfactual_usd: row.try_get("counterfactual_usd")?,
        latency_ms: row.try_get("latency_ms")?,
        ttft_ms: row.try_get("ttft_ms")?,
        cache: row.try_get("cache")?,
        status: row.try_get("status")?,
        error_class: row.try_get("error_class")?,
    })
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_statements_come_in_three_sizes() {
        for total in [1usize, 3, 4, 5, 31, 32, 33, 100, 256, 257] {
            let (mut left, mut sizes) = (total, Vec::new());
            while left > 0 {
                let n = statement_rows(left, DatabaseKind::Sqlite);
                sizes.push(n);
                left -= n;
            }
            assert!(
                sizes.iter().all(|n| [1, 4, 32].contains(n)),
                "{total}: {sizes:?}"
            );
            assert_eq!(sizes.iter().sum::<usize>(), total);
        }
        assert_eq!(sqlite_insert_sql(4).matches('?').count(), 4 * COLUMNS.len());
        assert_eq!(
            statement_rows(900, DatabaseKind::Postgres),
            ROWS_PER_STATEMENT
        );
    }

    #[test]
    fn placeholders_are_numbered_across_rows_on_postgres_and_anonymous_on_sqlite() {
        let sql = insert_sql(2, DatabaseKind::Postgres);
        assert!(sql.contains("($1, $2,"));
        assert!(sql.ends_with(&format!("${})", 2 * COLUMNS.len())));
        let sql = insert_sql(2, DatabaseKind::Sqlite);
        assert_eq!(sql.matches('?').count(), 2 * COLUMNS.len());
        assert!(!sql.contains('$'));
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn rows_round_trip_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("u.db").display());
        let store = Store::connect(&url).await.unwrap();
        let rec = UsageRecord {
            id: "a".into(),
            ts_ms: 1_700_000_000_000,
            request_id: "req".into(),
            key_name: Some("alice".into()),
            team: None,
            requested_model: "auto".into(),
            target: Some("local".into()),
            strategy: Some("semantic".into()),
            category: Some("smalltalk".into()),
            score: Some(0.75),
            reason: Some("why".into()),
            backend: Some("local".into()),
            upstream_model: Some("smol".into()),
            local: true,
            stream: true,
            prompt_tokens: 12,
            completion_tokens: 34,
            cost_usd: 0.0,
            counterfactual_usd: 0.5,
            latency_ms: 12.5,
            ttft_ms: Some(3.25),
            cache: None,
            status: 200,
            error_class: None,
        };
        store.insert(std::slice::from_ref(&rec)).await.unwrap();
        store.close().await;
        // Reopening applies no migration twice and finds the row.
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.recent(10).await.unwrap(), vec![rec.clone()]);
        assert_eq!(store.rows(0, i64::MAX).await.unwrap(), vec![rec]);
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
    }

    #[tokio::test]
    async fn spend_is_summed_per_key_and_team_in_the_current_windows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("u.db").display());
        let store = Store::connect(&url).await.unwrap();
        let (month, day) = (1_000_000i64, 2_000_000i64);
        let row =
            |id: &str, ts_ms: i64, key: Option<&str>, team: Option<&str>, cost_usd| UsageRecord {
                id: id.into(),
                ts_ms,
                key_name: key.map(Into::into),
                team: team.map(Into::into),
                cost_usd,
                status: 200,
                ..Default::default()
            };
        store
            .insert(&[
                row("old", month - 1, Some("a"), Some("t"), 100.0),
                row("m1", month, Some("a"), Some("t"), 1.0),
                row("d1", day, Some("a"), Some("t"), 0.25),
                row("d2", day + 5, Some("b"), None, 0.5),
                row("open", day + 6, None, None, 7.0),
            ])
            .await
            .unwrap();
        let mut spend = store.spend_since(day, month).await.unwrap();
        spend.sort_by(|x, y| {
            (x.name.as_str(), x.day_usd)
                .partial_cmp(&(y.name.as_str(), y.day_usd))
                .unwrap()
        });
        let got: Vec<_> = spend
            .iter()
            .map(|s| (s.scope, s.name.as_str(), s.day_usd, s.month_usd))
            .collect();
        assert_eq!(
            got,
            [
                (BudgetScope::Key, "a", 0.25, 1.25),
                (BudgetScope::Key, "b", 0.5, 0.5),
                (BudgetScope::Team, "t", 0.25, 1.25),
            ]
        );
    }

    #[tokio::test]
    async fn missing_directories_are_created_and_bad_ones_reported() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a/b/u.db").display());
        Store::connect(&url).await.unwrap().close().await;
        assert!(dir.path().join("a/b/u.db").exists());
        // A parent that is a file is no directory.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let url = format!("sqlite://{}", dir.path().join("file/u.db").display());
        let err = Store::connect(&url).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot open the usage database"),
            "{err:#}"
        );
    }
}
