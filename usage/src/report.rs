//! Usage reports: totals, cost, savings and local share over a time window, optionally
//! grouped. One query function, [`report`], serves `GET /v1/usage` and
//! `slmgate usage report`, so both always agree.
//!
//! - **savings** = counterfactual cost (the same tokens on the reference model) − cost.
//! - **local share** = requests answered by the embedded model / all requests (and the same
//!   by tokens).
//! - **cache hit rate** = answers from the response cache / all requests.
//! - latency percentiles are nearest-rank over the window's rows.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::Row;

use super::store::Store;

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Client key name.
    Key,
    /// The key's team.
    Team,
    /// The model the client asked for.
    Model,
    /// The decision's target alias.
    Target,
    /// The backend that answered.
    Backend,
    /// The router's category.
    Category,
    /// Calendar day (UTC).
    Day,
    /// Hour (UTC).
    Hour,
    /// Minute (UTC).
    Minute,
}

impl GroupBy {
    /// Parses `key|team|model|target|backend|category|day|hour|minute`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "key" => GroupBy::Key,
            "team" => GroupBy::Team,
            "model" => GroupBy::Model,
            "target" => GroupBy::Target,
            "backend" => GroupBy::Backend,
            "category" => GroupBy::Category,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            "minute" => GroupBy::Minute,
            _ => return None,
        })
    }

    /// The accepted names, for messages.
    pub const NAMES: &'static str =
        "key, team, model, target, backend, category, day, hour, minute";

    /// The SQL expression grouped on (fixed text, never user input).
    fn expr(self) -> &'static str {
        match self {
            GroupBy::Key => "key_name",
            GroupBy::Team => "team",
            GroupBy::Model => "requested_model",
            GroupBy::Target => "target",
            GroupBy::Backend => "backend",
            GroupBy::Category => "category",
            GroupBy::Day => "CAST((ts_ms / 86400000) * 86400000 AS BIGINT)",
            GroupBy::Hour => "CAST((ts_ms / 3600000) * 3600000 AS BIGINT)",
            GroupBy::Minute => "CAST((ts_ms / 60000) * 60000 AS BIGINT)",
        }
    }

    fn is_time(self) -> bool {
        matches!(self, GroupBy::Day | GroupBy::Hour | GroupBy::Minute)
    }
}

/// A report request.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Window start, Unix ms (inclusive).
    pub from_ms: i64,
    /// Window end, Unix ms (exclusive).
    pub to_ms: i64,
    /// Grouping, if any.
    pub group_by: Option<GroupBy>,
}

/// A report parameter that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter (`from`, `to` or `group_by`).
    pub param: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Query {
    /// Parses the report parameters shared by `GET /usage` and `slmgate usage report`:
    /// `from`, `to` (RFC 3339, a date, or a duration ago such as `24h`) and `group_by`
    /// (`bucket` is an alias).
    pub fn from_params(p: &std::collections::HashMap<String, String>) -> Result<Query, ParamError> {
        let (from_ms, to_ms) = window(
            p.get("from").map(String::as_str),
            p.get("to").map(String::as_str),
        )
        .map_err(|message| ParamError {
            param: "from",
            message,
        })?;
        let group = p
            .get("group_by")
            .or(p.get("bucket"))
            .filter(|s| !s.is_empty());
        let group_by = match group {
            None => None,
            Some(g) => Some(GroupBy::parse(g).ok_or_else(|| ParamError {
                param: "group_by",
                message: format!("unknown group_by `{g}`: use one of {}", GroupBy::NAMES),
            })?),
        };
        Ok(Query {
            from_ms,
            to_ms,
            group_by,
        })
    }
}

/// Sums over a set of rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests.
    pub requests: i64,
    /// Requests answered with status >= 400 or a stream error.
    pub errors: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Both.
    pub total_tokens: i64,
    /// USD spent.
    pub cost_usd: f64,
    /// USD the same tokens would have cost on the reference model.
    pub counterfactual_usd: f64,
    /// `counterfactual_usd - cost_usd`.
    pub savings_usd: f64,
    /// Requests answered by the embedded model.
    pub local_requests: i64,
    /// `local_requests / requests` (0 with no requests).
    pub local_share: f64,
    /// Tokens of local answers / all tokens.
    pub local_token_share: f64,
    /// Answers from the response cache.
    pub cache_hits: i64,
    /// `cache_hits / requests`.
    pub cache_hit_rate: f64,
    /// Mean latency, ms.
    pub avg_latency_ms: f64,
}

/// One group of a grouped report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The group's value: key/team/model/... name (`null` when unset), or for time groups
    /// the bucket start as RFC 3339.
    pub key: Option<String>,
    /// For time groups: the bucket start, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    /// The sums.
    #[serde(flatten)]
    pub totals: Totals,
}

/// Nearest-rank percentiles, ms (`null` with no rows).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The answer of `GET /v1/usage` and `slmgate usage report`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Always `"usage.report"`.
    pub object: &'static str,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339, exclusive).
    pub to: String,
    /// Sums over the window.
    pub totals: Totals,
    /// Latency percentiles over the window.
    pub latency_ms: Percentiles,
    /// Time-to-first-token percentiles over the window's streamed answers.
    pub ttft_ms: Percentiles,
    /// The grouping, when asked for.
    pub group_by: Option<GroupBy>,
    /// Groups: by spend (highest first), or by time (oldest first) for time groupings.
    pub groups: Vec<Group>,
    /// The ten keys that spent most in the window.
    pub top_keys: Vec<Group>,
    /// Requests per router category (`null` = not routed).
    pub categories: Vec<Group>,
}

const SUMS: &str = "CAST(COUNT(*) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN status >= 400 OR error_class IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), \
    CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT), \
    CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION), \
    CAST(COALESCE(SUM(counterfactual_usd), 0) AS DOUBLE PRECISION), \
    CAST(COALESCE(SUM(is_local), 0) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN is_local <> 0 THEN prompt_tokens + completion_tokens ELSE 0 END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN cache IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
    CAST(COALESCE(AVG(latency_ms), 0) AS DOUBLE PRECISION)";

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Reads the [`SUMS`] columns starting at column `at`.
fn totals(row: &sqlx::any::AnyRow, at: usize) -> Result<Totals, sqlx::Error> {
    let requests: i64 = row.try_get(at)?;
    let prompt_tokens: i64 = row.try_get(at + 2)?;
    let completion_tokens: i64 = row.try_get(at + 3)?;
    let cost_usd: f64 = row.try_get(at + 4)?;
    let counterfactual_usd: f64 = row.try_get(at + 5)?;
    let local_requests: i64 = row.try_get(at + 6)?;
    let local_tokens: i64 = row.try_get(at + 7)?;
    let cache_hits: i64 = row.try_get(at + 8)?;
    Ok(Totals {
        requests,
        errors: row.try_get(at + 1)?,
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        cost_usd,
        counterfactual_usd,
        savings_usd: counterfactual_usd - cost_usd,
        local_requests,
        local_share: ratio(local_requests, requests),
        local_token_share: ratio(local_tokens, prompt_tokens + completion_tokens),
        cache_hits,
        cache_hit_rate: ratio(cache_hits, requests),
        avg_latency_ms: row.try_get(at + 9)?,
    })
}

/// RFC 3339 (seconds) of Unix ms.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn groups(
    store: &Store,
    q: &Query,
    by: GroupBy,
    order: &str,
    limit: Option<i64>,
) -> Result<Vec<Group>, sqlx::Error> {
    let expr = by.expr();
    let mut sql = format!(
        "SELECT {expr} AS g, {SUMS} FROM usage_records WHERE ts_ms >= $1 AND ts_ms < $2 \
         GROUP BY {expr} ORDER BY {order}"
    );
    if let Some(l) = limit {
        let _ = write!(sql, " LIMIT {l}");
    }
    let rows = sqlx::query(&sql)
        .bind(q.from_ms)
        .bind(q.to_ms)
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|row| {
            let (key, start_ms) = if by.is_time() {
                let ms: i64 = row.try_get(0)?;
                (Some(rfc3339(ms)), Some(ms))
            } else {
                (row.try_get::<Option<String>, _>(0)?, None)
            };
            Ok(Group {
                key,
                start_ms,
                totals: totals(row, 1)?,
            })
        })
        .collect()
}

/// Nearest-rank percentiles of `column` (a fixed column name) over the window's rows where
/// it is set and `filter` (fixed SQL) holds.
async fn percentiles(
    store: &Store,
    q: &Query,
    column: &str,
    filter: &str,
) -> Result<Percentiles, sqlx::Error> {
    let n: i64 = sqlx::query(&format!(
        "SELECT CAST(COUNT({column}) AS BIGINT) FROM usage_records \
         WHERE ts_ms >= $1 AND ts_ms < $2 AND {filter}"
    ))
    .bind(q.from_ms)
    .bind(q.to_ms)
    .fetch_one(store.pool())
    .await?
    .try_get(0)?;
    if n == 0 {
        return Ok(Percentiles::default());
    }
    let sql = format!(
        "SELECT CAST({column} AS DOUBLE PRECISION) FROM usage_records \
         WHERE ts_ms >= $1 AND ts_ms < $2 AND {column} IS NOT NULL AND {filter} \
         ORDER BY {column} LIMIT 1 OFFSET $3"
    );
    let at = |p: f64| {
        let sql = sql.clone();
        let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
        async move {
            sqlx::query(&sql)
                .bind(q.from_ms)
                .bind(q.to_ms)
                .bind(rank - 1)
                .fetch_one(store.pool())
                .await?
                .try_get::<f64, _>(0)
        }
    };
    Ok(Percentiles {
        p50: Some(at(0.50).await?),
        p95: Some(at(0.95).await?),
        p99: Some(at(0.99).await?),
    })
}

/// Runs a report.
pub async fn report(store: &Store, q: &Query) -> Result<Report, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {SUMS} FROM usage_records WHERE ts_ms >= $1 AND ts_ms < $2"
    ))
    .bind(q.from_ms)
    .bind(q.to_ms)
    .fetch_one(store.pool())
    .await?;
    let totals = totals(&row, 0)?;
    let by_spend = "CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) DESC, g";
    let grouped = match q.group_by {
        Some(by) if by.is_time() => groups(store, q, by, "g", None).await?,
        Some(by) => groups(store, q, by, by_spend, None).await?,
        None => Vec::new(),
    };
    Ok(Report {
        object: "usage.report",
        from: rfc3339(q.from_ms),
        to: rfc3339(q.to_ms),
        totals,
        latency_ms: percentiles(store, q, "latency_ms", "1 = 1").await?,
        // Streams only: for a JSON answer the first token arrives with the last.
        ttft_ms: percentiles(store, q, "ttft_ms", "stream <> 0").await?,
        group_by: q.group_by,
        groups: grouped,
        top_keys: groups(store, q, GroupBy::Key, by_spend, Some(10)).await?,
        categories: groups(
            store,
            q,
            GroupBy::Category,
            "CAST(COUNT(*) AS BIGINT) DESC, g",
            None,
        )
        .await?,
    })
}

/// Parses a time bound: RFC 3339 (`2026-01-31T12:00:00Z`), a date (`2026-01-31`, UTC
/// midnight), Unix seconds, or a duration ago (`24h`, `7d`, `-30m`).
pub fn parse_time(s: &str, now: SystemTime) -> Result<i64, String> {
    let s = s.trim();
    let ms = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(ms(t));
    }
    if s.len() == 10 {
        if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s}T00:00:00Z")) {
            return Ok(ms(t));
        }
    }
    let ago = s.strip_prefix('-').unwrap_or(s);
    if let Ok(d) = humantime::parse_duration(ago) {
        return Ok(ms(now.checked_sub(d).unwrap_or(UNIX_EPOCH)));
    }
    Err(format!(
        "`{s}` is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), \
         Unix seconds, or a duration ago (24h, 7d)"
    ))
}

/// The window of optional `from` / `to` strings: default all time up to now.
pub fn window(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), String> {
    let now = SystemTime::now();
    let from_ms = from.map(|s| parse_time(s, now)).transpose()?.unwrap_or(0);
    let to_ms = match to {
        Some(s) => parse_time(s, now)?,
        // Exclusive bound: include the current millisecond.
        None => super::now_ms() + 1,
    };
    if from_ms > to_ms {
        return Err("`from` is after `to`".into());
    }
    Ok((from_ms, to_ms))
}

/// The top-level entry point for `slmgate usage report`: opens the database at `url` (it
/// must exist), parses the parameters exactly as `GET /v1/usage` does and runs the report.
pub async fn run_cli(
    url: &str,
    from: Option<&str>,
    to: Option<&str>,
    group_by: Option<&str>,
) -> anyhow::Result<Report> {
    if let Some(path) = super::store::sqlite_file(url) {
        anyhow::ensure!(
            std::path::Path::new(path).exists(),
            "no usage database at `{path}` (has the gateway run with `usage:` on?)"
        );
    }
    let mut params = std::collections::HashMap::new();
    for (k, v) in [("from", from), ("to", to), ("group_by", group_by)] {
        if let Some(v) = v {
            params.insert(k.to_string(), v.to_string());
        }
    }
    let q = Query::from_params(&params).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let store = Store::connect(url).await?;
    let r = report(&store, &q).await;
    store.close().await;
    Ok(r?)
}

const HEAD: [&str; 12] = [
    "group",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "counterfactual_usd",
    "savings_usd",
    "local_share",
    "cache_hit_rate",
    "avg_latency_ms",
    "local_requests",
];

fn cells(name: &str, t: &Totals) -> [String; 12] {
    [
        name.to_string(),
        t.requests.to_string(),
        t.errors.to_string(),
        t.prompt_tokens.to_string(),
        t.completion_tokens.to_string(),
        format!("{:.6}", t.cost_usd),
        format!("{:.6}", t.counterfactual_usd),
        format!("{:.6}", t.savings_usd),
        format!("{:.4}", t.local_share),
        format!("{:.4}", t.cache_hit_rate),
        format!("{:.1}", t.avg_latency_ms),
        t.local_requests.to_string(),
    ]
}

fn lines(r: &Report) -> Vec<[String; 12]> {
    let mut out: Vec<[String; 12]> = r
        .groups
        .iter()
        .map(|g| cells(g.key.as_deref().unwrap_or("-"), &g.totals))
        .collect();
    out.push(cells("TOTAL", &r.totals));
    out
}

/// The report as CSV: a header, one line per group, then `TOTAL`.
pub fn to_csv(r: &Report) -> String {
    let mut s = HEAD.join(",");
    s.push('\n');
    for l in lines(r) {
        let quoted: Vec<String> = l
            .iter()
            .map(|c| {
                if c.contains([',', '"', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.clone()
                }
            })
            .collect();
        s.push_str(&quoted.join(","));
        s.push('\n');
    }
    s
}

/// The report as an aligned text table, with the window and percentiles above it.
pub fn to_table(r: &Report) -> String {
    let rows = lines(r);
    let mut width = HEAD.map(str::len);
    for l in &rows {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = format!("usage from {} to {}", r.from, r.to);
    if let Some(g) = r.group_by {
        let _ = write!(
            s,
            ", by {}",
            serde_json::to_value(g)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
    }
    s.push('\n');
    let fmt_p = |p: Option<f64>| p.map_or("-".to_string(), |v| format!("{v:.1}"));
    let _ = writeln!(
        s,
        "latency ms p50 {} p95 {} p99 {}; ttft ms p50 {} p95 {} p99 {}",
        fmt_p(r.latency_ms.p50),
        fmt_p(r.latency_ms.p95),
        fmt_p(r.latency_ms.p99),
        fmt_p(r.ttft_ms.p50),
        fmt_p(r.ttft_ms.p95),
        fmt_p(r.ttft_ms.p99),
    );
    let mut line = |cols: &[String]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        s.push_str(parts.join("  ").trim_end());
        s.push('\n');
    };
    line(&HEAD.map(String::from));
    for l in &rows {
        line(l);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_form() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400_000));
        assert_eq!(parse_time("1h", now), Ok(1_000_000_000 - 3_600_000));
        assert_eq!(parse_time("-1h", now), Ok(1_000_000_000 - 3_600_000));
        assert!(parse_time("yesterday-ish", now).is_err());
        assert!(window(Some("2000-01-02"), Some("2000-01-01")).is_err());
    }

    #[test]
    fn csv_quotes_and_totals() {
        let r = Report {
            object: "usage.report",
            from: rfc3339(0),
            to: rfc3339(1000),
            totals: Totals {
                requests: 2,
                ..Default::default()
            },
            latency_ms: Percentiles::default(),
            ttft_ms: Percentiles::default(),
            group_by: Some(GroupBy::Key),
            groups: vec![Group {
                key: Some("a,b".into()),
                start_ms: None,
                totals: Totals {
                    requests: 2,
                    ..Default::default()
                },
            }],
            top_keys: vec![],
            categories: vec![],
        };
        let csv = to_csv(&r);
        let mut l = csv.lines();
        assert!(l.next().unwrap().starts_with("group,requests,errors"));
        assert!(l.next().unwrap().starts_with("\"a,b\",2,0"));
        assert!(l.next().unwrap().starts_with("TOTAL,2,0"));
        let table = to_table(&r);
        assert!(table.contains("TOTAL"), "{table}");
        assert!(table.contains("by key"), "{table}");
    }
}
