//! Shared access to the embedder: an exact-text cache in front, and micro-batching behind.
//!
//! Concurrent callers' texts are gathered into one forward pass: a batch takes every text
//! queued while the previous pass ran, then waits up to `max_wait` for more, until it holds
//! `max_batch` texts. With `max_wait` 0 (the default) an idle embedder adds no latency and a
//! busy one still runs full batches. Batching is what makes
//! many small requests cheap: one forward pass over 16 short texts costs far less than 16.
//! Results are cached by exact text (moka, entry-bounded), so a text is embedded once for
//! `/v1/embeddings`, routing and the semantic cache alike.
//!
//! The forward passes run on one dedicated thread; callers await a oneshot reply. Dropping
//! the batcher (a config reload that replaces it) closes the queue and ends the thread after
//! the batch in progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A batch-embedding function: the model's forward pass (or a test double).
pub type EmbedFn = dyn Fn(&[&str]) -> Result<Vec<Vec<f32>>, String> + Send + Sync;

/// An embedding, shared between the cache and its users.
pub type Embedding = Arc<[f32]>;

/// Counters (for metrics and tests).
#[derive(Debug, Default)]
pub struct BatcherStats {
    /// Forward passes run.
    pub batches: AtomicU64,
    /// Texts embedded by those passes.
    pub texts: AtomicU64,
    /// Texts answered from the cache.
    pub cache_hits: AtomicU64,
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedding>, String>>,
}

/// Why an embedding could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue is full: the embedder is overloaded.
    #[error("the embedder queue is full")]
    Overloaded,
    /// The batcher thread has stopped.
    #[error("the embedder has stopped")]
    Stopped,
    /// The forward pass failed.
    #[error("embedding failed: {0}")]
    Failed(String),
}

/// See the module docs.
pub struct EmbedBatcher {
    tx: SyncSender<Job>,
    cache: moka::sync::Cache<String, Embedding>,
    stats: Arc<BatcherStats>,
}

/// Batching and caching parameters.
#[derive(Debug, Clone, Copy)]
pub struct BatcherOptions {
    /// Most texts per forward pass.
    pub max_batch: usize,
    /// Longest wait for more texts once a batch has started.
    pub max_wait: Duration,
    /// Jobs (requests) allowed to wait; more are refused with [`BatchError::Overloaded`].
    pub queue: usize,
    /// Cached embeddings (0 = no cache).
    pub cache_entries: u64,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            queue: 1024,
            cache_entries: 10_000,
        }
    }
}

impl EmbedBatcher {
    /// Starts the batching thread around `embed`.
    pub fn new(embed: Arc<EmbedFn>, opts: BatcherOptions) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(opts.queue.max(1));
        let stats = Arc::new(BatcherStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("slmgate-embed".into())
            .spawn(move || run(rx, embed, opts, &thread_stats))?;
        Ok(Self {
            tx,
            cache: moka::sync::Cache::new(opts.cache_entries),
            stats,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &BatcherStats {
        &self.stats
    }

    /// Embeddings of `texts`, in order: cached ones at once, the rest in the next batch.
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, BatchError> {
        let mut out: Vec<Option<Embedding>> = texts.iter().map(|t| self.cache.get(*t)).collect();
        let hits = out.iter().filter(|e| e.is_some()).count();
        self.stats
            .cache_hits
            .fetch_add(hits as u64, Ordering::Relaxed);
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let (reply, rx) = oneshot::channel();
            let job = Job {
                texts: missing.iter().map(|&i| texts[i].to_string()).collect(),
                reply,
            };
            match self.tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(BatchError::Overloaded),
                Err(TrySendError::Disconnected(_)) => return Err(BatchError::Stopped),
            }
            let computed = rx
                .await
                .map_err(|_| BatchError::Stopped)?
                .map_err(BatchError::Failed)?;
            for (&i, e) in missing.iter().zip(computed) {
                self.cache.insert(texts[i].to_string(), e.clone());
                out[i] = Some(e);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or(BatchError::Stopped))
            .collect()
    }
}

fn run(rx: mpsc::Receiver<Job>, embed: Arc<EmbedFn>, opts: BatcherOptions, stats: &BatcherStats) {
    let max_batch = opts.max_batch.max(1);
    // Blocks until the first job of a batch, or returns when every sender is gone.
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut count = jobs[0].texts.len();
        let deadline = Instant::now() + opts.max_wait;
        while count < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(job) => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Callers that went away need no work.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        // A job larger than `max_batch` still goes in one call: the embedder splits it
        // into forward passes of its own `max_batch`.
        let result = embed(&texts);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.texts.fetch_add(texts.len() as u64, Ordering::Relaxed);
        match result {
            Ok(vectors) if vectors.len() == texts.len() => {
                let mut vectors = vectors.into_iter().map(Embedding::from);
                for job in jobs {
                    let mine: Vec<Embedding> = vectors.by_ref().take(job.texts.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Ok(vectors) => {
                let msg = format!("{} embeddings for {} texts", vectors.len(), texts.len());
                for job in jobs {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake embedder: one dimension, the text's length; records batch sizes.
    fn fake(calls: Arc<std::sync::Mutex<Vec<usize>>>, delay: Duration) -> Arc<EmbedFn> {
        Arc::new(move |texts: &[&str]| {
            calls.lock().map_err(|e| e.to_string())?.push(texts.len());
            std::thread::sleep(delay);
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_a_forward_pass() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = Arc::new(
            EmbedBatcher::new(
                fake(calls.clone(), Duration::from_millis(20)),
                BatcherOptions {
                    max_batch: 64,
                    max_wait: Duration::from_millis(50),
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let text = "x".repeat(i + 1);
                    let e = b.embed(&[text.as_str()]).await.unwrap();
                    assert_eq!(e[0][0], (i + 1) as f32);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 16);
        // 16 requests within the 50 ms window: far fewer passes than requests.
        assert!(calls.len() <= 3, "{calls:?}");
    }

    #[tokio::test]
    async fn a_lone_request_waits_at_most_max_wait_and_results_keep_order() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = EmbedBatcher::new(
            fake(calls.clone(), Duration::ZERO),
            BatcherOptions {
                max_wait: Duration::from_millis(5),
                ..Default::default()
            },
        )
        .unwrap();
        let started = Instant::now();
        let e = b.embed(&["a", "bbb", "cc"]).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        let lens: Vec<f32> = e.iter().map(|v| v[0]).collect();
        assert_eq!(lens, [1.0, 3.0, 2.0]);
    }

    #[tokio::test]
    async fn cache_answers_repeated_texts() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = EmbedBatcher::new(
            fake(calls.clone(), Duration::ZERO),
            BatcherOptions::default(),
        )
        .unwrap();
        b.embed(&["hello", "world"]).await.unwrap();
        let e = b.embed(&["world", "new", "hello"]).await.unwrap();
        assert_eq!(e.iter().map(|v| v[0]).collect::<Vec<_>>(), [5.0, 3.0, 5.0]);
        assert_eq!(b.stats().cache_hits.load(Ordering::Relaxed), 2);
        // Only "new" was computed the second time.
        assert_eq!(calls.lock().unwrap().as_slice(), [2, 1]);
    }

    #[tokio::test]
    async fn failures_reach_every_caller() {
        let b = EmbedBatcher::new(
            Arc::new(|_: &[&str]| Err("boom".to_string())),
            BatcherOptions::default(),
        )
        .unwrap();
        match b.embed(&["x"]).await {
            Err(BatchError::Failed(m)) => assert_eq!(m, "boom"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_overloaded() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate_rx);
        let b = Arc::new(
            EmbedBatcher::new(
                Arc::new(move |t: &[&str]| {
                    let _ = gate.lock().map_err(|e| e.to_string())?.recv();
                    Ok(t.iter().map(|_| vec![0.0]).collect())
                }),
                BatcherOptions {
                    queue: 1,
                    max_batch: 1,
                    max_wait: Duration::ZERO,
                    cache_entries: 0,
                },
            )
            .unwrap(),
        );
        // One job in the forward pass (blocked), one in the queue; the next is refused.
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.embed(&["a"]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b2 = b.clone();
        let second = tokio::spawn(async move { b2.embed(&["b"]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(b.embed(&["c"]).await, Err(BatchError::Overloaded)));
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
    }
}
