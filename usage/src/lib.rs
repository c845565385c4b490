//! Usage records: one row per chat request, written off the request path.
//!
//! The [`crate::layers::account`] step builds a [`UsageRecord`] when a request's answer is
//! complete (a JSON body read, a stream's last event passed or the client gone) and hands it
//! to a [`UsageSink`]. The sink never waits: it `try_send`s into a bounded queue, and when the
//! queue is full (or the writer has stopped) the record is dropped **and counted**
//! (`slmgate_usage_dropped_total{reason}` plus a rate-limited warning), never hidden.
//!
//! The writer ([`UsageWriter`]) is one tokio task per process: it batches records (up to
//! `usage.batch` rows or `usage.flush_interval`, whichever comes first) and writes each batch
//! in one transaction ([`store::Store::insert`]). A batch the database refuses is counted as
//! dropped with `reason="write_error"`. [`UsageWriter::shutdown`] closes the queue, writes
//! everything still in it and waits for the task: the server calls it after serving stops,
//! so a graceful shutdown loses nothing.
//!
//! The writer is created once in [`crate::server::start_on`] and lives as long as the
//! process: a configuration reload (which rebuilds the [`crate::runtime::Gateway`] snapshot)
//! keeps it, as it keeps the budget state. At startup the budget state is seeded from the
//! records ([`restore_budgets`]), so budgets survive a restart too.

#![warn(missing_docs)]

pub mod keys;
pub mod pricing;
pub mod report;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::names as m;

/// The Prometheus names of the usage writer's metrics (the gateway describes and exports
/// them with its own).
pub mod names {
    /// Usage records dropped, by reason.
    pub const USAGE_DROPPED: &str = "slmgate_usage_dropped_total";
    /// Usage records written.
    pub const USAGE_WRITTEN: &str = "slmgate_usage_written_total";
    /// Usage records waiting for the writer.
    pub const USAGE_QUEUE_DEPTH: &str = "slmgate_usage_queue_depth";
}
pub use store::Store;

/// One request, as accounted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRecord {
    /// Row id (a UUIDv7: unique even when clients reuse request ids).
    pub id: String,
    /// Request start, Unix milliseconds.
    pub ts_ms: i64,
    /// `x-request-id`.
    pub request_id: String,
    /// The client key's name (`None` on an open gateway).
    pub key_name: Option<String>,
    /// The key's team.
    pub team: Option<String>,
    /// The model the client asked for.
    pub requested_model: String,
    /// The alias the decision chose (`x-slmgate-route`).
    pub target: Option<String>,
    /// The deciding strategy (`alias`, `rules`, `semantic`, `complexity`, `cascade`, ...).
    pub strategy: Option<String>,
    /// The category the router gave the query.
    pub category: Option<String>,
    /// The score behind the decision.
    pub score: Option<f64>,
    /// The decision's reason.
    pub reason: Option<String>,
    /// The backend that answered.
    pub backend: Option<String>,
    /// The model name that backend was asked for.
    pub upstream_model: Option<String>,
    /// Answered by the embedded model (false for cache hits, which no model answered).
    pub local: bool,
    /// A streamed answer.
    pub stream: bool,
    /// Prompt tokens (the answer's `usage`; 0 when none was reported).
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// USD at the answering model's price (0 for a cache hit).
    pub cost_usd: f64,
    /// USD the same tokens would have cost on the reference model.
    pub counterfactual_usd: f64,
    /// Request start to the last byte of the answer, milliseconds.
    pub latency_ms: f64,
    /// Request start to the first body chunk (streams), or `latency_ms` (JSON answers).
    pub ttft_ms: Option<f64>,
    /// `hit` or `semantic-hit` when the answer came from the response cache.
    pub cache: Option<String>,
    /// HTTP status.
    pub status: i64,
    /// The OpenAI error type (`invalid_request_error`, `rate_limit_error`, ...) for error
    /// answers and streams that ended with an error event.
    pub error_class: Option<String>,
}

/// Counts dropped records and warns about them, at most once per [`WARN_EVERY`].
#[derive(Debug)]
struct Drops {
    total: AtomicU64,
    unlogged: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

/// The shortest interval between two "usage records dropped" warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

impl Drops {
    fn add(&self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        self.total.fetch_add(n, Ordering::Relaxed);
        self.unlogged.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(m::USAGE_DROPPED, "reason" => reason).increment(n);
        let Ok(mut last) = self.last_warn.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            let n = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                dropped = n,
                reason,
                total = self.total.load(Ordering::Relaxed),
                "usage records dropped (see slmgate_usage_dropped_total)"
            );
        }
    }
}

/// Where the request path puts records: never blocks, never fails. Cloning gives another
/// handle to the same queue.
#[derive(Debug, Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageRecord>,
    drops: Arc<Drops>,
    written: Arc<AtomicU64>,
}

impl UsageSink {
    /// A sink with a queue of `capacity` records, and the receiving end for a writer.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<UsageRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sink = UsageSink {
            tx,
            drops: Arc::new(Drops {
                total: AtomicU64::new(0),
                unlogged: AtomicU64::new(0),
                last_warn: Mutex::new(None),
            }),
            written: Arc::new(AtomicU64::new(0)),
        };
        (sink, rx)
    }

    /// Queues `rec`; when the queue is full or closed, drops it and counts the drop.
    pub fn record(&self, rec: UsageRecord) {
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.drops.add("queue_full", 1),
            Err(mpsc::error::TrySendError::Closed(_)) => self.drops.add("closed", 1),
        }
        metrics::gauge!(m::USAGE_QUEUE_DEPTH).set(self.queue_depth() as f64);
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Records dropped so far (queue full, writer stopped, or refused by the database).
    pub fn dropped(&self) -> u64 {
        self.drops.total.load(Ordering::Relaxed)
    }

    /// Records written to the database so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Writer settings (from `usage:`).
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Queue capacity.
    pub queue: usize,
    /// Rows per transaction.
    pub batch: usize,
    /// Longest wait before a partial batch is written.
    pub flush_interval: Duration,
}

impl From<&slmgate_config::usage::Usage> for WriterOptions {
    fn from(u: &slmgate_config::usage::Usage) -> Self {
        WriterOptions {
            queue: u.queue,
            batch: u.batch,
            flush_interval: u.flush_interval,
        }
    }
}

/// The process-wide writer: the sink the request path uses, the store `/v1/usage` reads,
/// and the task that moves records from one to the other.
#[derive(Debug, Clone)]
pub struct UsageWriter {
    /// The queue's sending side.
    pub sink: UsageSink,
    /// The database.
    pub store: Store,
    stop: Arc<Mutex<Option<Stop>>>,
}

/// How to stop the writer task: the stop signal and the task to wait for.
type Stop = (oneshot::Sender<()>, JoinHandle<()>);

impl UsageWriter {
    /// Connects to `usage.database`, applies migrations and starts the writer task.
    pub async fn start(cfg: &slmgate_config::usage::Usage) -> anyhow::Result<Self> {
        let store = Store::connect(&cfg.database).await?;
        Ok(Self::with_store(store, cfg.into()))
    }

    /// Starts the writer task on an open store.
    pub fn with_store(store: Store, opts: WriterOptions) -> Self {
        let (sink, rx) = UsageSink::channel(opts.queue);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(store.clone(), sink.clone(), rx, stop_rx, opts));
        UsageWriter {
            sink,
            store,
            stop: Arc::new(Mutex::new(Some((stop_tx, task)))),
        }
    }

    /// Closes the queue (later records count as dropped, `reason="closed"`), writes every
    /// record still queued and waits for the writer task. Idempotent.
    pub async fn shutdown(&self) {
        let taken = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some((stop, task)) = taken {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::error!(error = %e, "usage writer task failed");
            }
            tracing::info!(
                written = self.sink.written(),
                dropped = self.sink.dropped(),
                "usage writer flushed"
            );
        }
    }
}

async fn flush(store: &Store, sink: &UsageSink, buf: &mut Vec<UsageRecord>) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len() as u64;
    match store.insert(buf).await {
        Ok(()) => {
            sink.written.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(m::USAGE_WRITTEN).increment(n);
        }
        Err(e) => {
            tracing::error!(error = %e, rows = n, "writing usage records failed");
            sink.drops.add("write_error", n);
        }
    }
    buf.clear();
    metrics::gauge!(m::USAGE_QUEUE_DEPTH).set(sink.queue_depth() as f64);
}

async fn run(
    store: Store,
    sink: UsageSink,
    mut rx: mpsc::Receiver<UsageRecord>,
    mut stop: oneshot::Receiver<()>,
    opts: WriterOptions,
) {
    let batch = opts.batch.max(1);
    let mut buf: Vec<UsageRecord> = Vec::with_capacity(batch);
    // `interval` would tick at once: a record queued before this task first ran would be
    // written alone, long before `flush_interval`.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + opts.flush_interval,
        opts.flush_interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            r = rx.recv() => match r {
                Some(r) => {
                    buf.push(r);
                    if buf.len() >= batch {
                        flush(&store, &sink, &mut buf).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&store, &sink, &mut buf).await,
        }
    }
    // Shutdown: refuse new records, then write whatever is queued.
    rx.close();
    while let Some(r) = rx.recv().await {
        buf.push(r);
        if buf.len() >= batch {
            flush(&store, &sink, &mut buf).await;
        }
    }
    flush(&store, &sink, &mut buf).await;
}

/// Puts the current budget windows' spend recorded in `store` back into `ledger`: at startup,
/// so that a restart does not hand every key and team a fresh budget. Returns the number of
/// keys and teams restored.
///
/// The spend is what the usage rows say (`cost_usd`); with several gateway instances on one
/// PostgreSQL database each restores the spend of all of them, while the ledgers are per
/// process after that.
pub async fn restore_budgets(
    store: &Store,
    ledger: &slmgate_policies::budget::BudgetLedger,
    now: std::time::SystemTime,
) -> Result<usize, sqlx::Error> {
    let (day, month) = slmgate_policies::budget::window_starts(now);
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let spend = store.spend_since(ms(day), ms(month)).await?;
    for s in &spend {
        ledger.restore_spent(s.scope, &s.name, s.day_usd, s.month_usd, now);
    }
    Ok(spend.len())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> UsageRecord {
        UsageRecord {
            id: format!("r{i}"),
            ts_ms: i,
            request_id: format!("req-{i}"),
            requested_model: "m".into(),
            status: 200,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_full_queue_counts_drops_instead_of_blocking() {
        let (sink, rx) = UsageSink::channel(3);
        for i in 0..10 {
            sink.record(rec(i));
        }
        assert_eq!(sink.queue_depth(), 3);
        assert_eq!(sink.dropped(), 7);
        drop(rx);
        sink.record(rec(11));
        assert_eq!(sink.dropped(), 8, "a closed queue counts too");
    }

    /// A writer on `store` with these options.
    fn writer(store: &Store, queue: usize, batch: usize, flush_interval: Duration) -> UsageWriter {
        UsageWriter::with_store(
            store.clone(),
            WriterOptions {
                queue,
                batch,
                flush_interval,
            },
        )
    }

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("u.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn shutdown_writes_everything_queued() {
        let (_dir, store) = temp_store().await;
        // A long flush interval and a big batch: only shutdown can write these.
        let w = writer(&store, 1000, 500, Duration::from_secs(3600));
        for i in 0..300 {
            w.sink.record(rec(i));
        }
        w.shutdown().await;
        assert_eq!(store.count().await.unwrap(), 300);
        assert_eq!(w.sink.written(), 300);
        w.sink.record(rec(1000));
        assert_eq!(w.sink.dropped(), 1, "records after shutdown are counted");
        w.shutdown().await;
    }

    /// A record queued before the writer task first runs waits for the flush interval like
    /// any other (a `tokio::time::interval` ticks at once and wrote it alone: CI saw this).
    #[tokio::test]
    async fn the_first_flush_waits_for_the_interval() {
        let (_dir, store) = temp_store().await;
        let w = writer(&store, 10, 10, Duration::from_secs(3600));
        w.sink.record(rec(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(w.sink.written(), 0);
        assert_eq!(store.count().await.unwrap(), 0);
        w.shutdown().await;
        assert_eq!(w.sink.written(), 1);
    }

    #[tokio::test]
    async fn batches_are_written_on_size_and_on_time() {
        let (_dir, store) = temp_store().await;
        let w = writer(&store, 100, 4, Duration::from_millis(50));
        for i in 0..6 {
            w.sink.record(rec(i));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.count().await.unwrap() < 6 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.count().await.unwrap(), 6);
        w.shutdown().await;
    }

    #[tokio::test]
    async fn a_refusing_database_counts_write_errors() {
        let (_dir, store) = temp_store().await;
        let w = writer(&store, 100, 10, Duration::from_secs(3600));
        sqlx::query("DROP TABLE usage_records")
            .execute(store.pool())
            .await
            .unwrap();
        for i in 0..5 {
            w.sink.record(rec(i));
        }
        w.shutdown().await;
        assert_eq!(w.sink.dropped(), 5);
        assert_eq!(w.sink.written(), 0);
    }
}
