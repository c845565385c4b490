//! A bounded queue in front of N generation workers.
//!
//! Each worker is a dedicated OS thread that owns one [`ModelInstance`] (its own KV cache), so
//! inference never runs on the async runtime's threads. [`LocalPool::generate`]:
//!
//! 1. validates the sampling parameters and renders and tokenizes the prompt, rejecting
//!    prompts that leave no room in the context ([`PoolError::ContextTooLong`]);
//! 2. enqueues the job, or fails at once with [`PoolError::QueueFull`] when `queue_size` jobs
//!    are already waiting;
//! 3. waits until a worker picks the job up, or fails with [`PoolError::QueueTimeout`] after
//!    `queue_timeout`;
//! 4. returns a [`GenerationStream`] of [`GenerationEvent`]s.
//!
//! Dropping the stream cancels the generation: the worker sees the closed channel when it
//! tries to send the next token, stops, clears its KV cache and takes the next job.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use super::error::LocalModelError;
pub use super::generator::GenerationEvent;
use super::generator::Generator;
use super::models::ModelInstance;
use super::sampling::SamplingParams;
use super::template::ChatMessage;

/// Events buffered between a worker and a slow consumer before the worker waits.
const EVENT_BUFFER: usize = 64;

/// A chat completion request for the pool.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The conversation; rendered with the model's chat template.
    pub messages: Vec<ChatMessage>,
    /// Sampling parameters.
    pub params: SamplingParams,
}

/// Pool sizing.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Worker threads, each with its own model instance (at least 1).
    pub workers: usize,
    /// Jobs allowed to wait for a worker; more fail with [`PoolError::QueueFull`].
    pub queue_size: usize,
    /// How long a job may wait for a worker before [`PoolError::QueueTimeout`].
    pub queue_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_size: 16,
            queue_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request was not started.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The wait queue is full.
    #[error("local model queue is full")]
    QueueFull,
    /// No worker became free within the queue timeout.
    #[error("timed out waiting for a local model worker")]
    QueueTimeout,
    /// The request is invalid (bad parameters, template rejected the messages, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit in the model's context.
    #[error("prompt is {prompt} tokens; the local model's context is {max} tokens")]
    ContextTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// The context length.
        max: usize,
    },
    /// The pool's workers are gone (shut down or failed to start).
    #[error("local model unavailable: {0}")]
    Unavailable(String),
}

/// The events of one generation. Dropping it cancels the generation.
pub struct GenerationStream {
    rx: mpsc::Receiver<Result<GenerationEvent, LocalModelError>>,
}

impl std::fmt::Debug for GenerationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationStream").finish_non_exhaustive()
    }
}

impl Stream for GenerationStream {
    type Item = Result<GenerationEvent, LocalModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

struct Job {
    prompt: Vec<u32>,
    params: SamplingParams,
    events: mpsc::Sender<Result<GenerationEvent, LocalModelError>>,
    started: oneshot::Sender<()>,
    abandoned: Arc<AtomicBool>,
}

struct Queue {
    jobs: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    shutdown: bool,
    live_workers: usize,
    last_worker_error: Option<String>,
}

struct Inner {
    generator: Arc<Generator>,
    queue: Arc<Queue>,
    opts: PoolOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.jobs.lock() {
            q.shutdown = true;
        }
        self.queue.ready.notify_all();
    }
}

/// A pool of generation workers over one shared [`Generator`]. Cheap to clone.
#[derive(Clone)]
pub struct LocalPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPool")
            .field("opts", &self.inner.opts)
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl LocalPool {
    /// Starts `opts.workers` worker threads (at least one). Each creates its model instance
    /// on its own thread; a worker whose instance fails logs the error and exits, and once no
    /// worker is left [`LocalPool::generate`] fails with [`PoolError::Unavailable`].
    pub fn new(generator: Arc<Generator>, opts: PoolOptions) -> Self {
        let workers = opts.workers.max(1);
        let queue = Arc::new(Queue {
            jobs: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                shutdown: false,
                live_workers: workers,
                last_worker_error: None,
            }),
            ready: Condvar::new(),
        });
        // Workers share the CPUs: each computes on its share of them, so that concurrent
        // generations do not fight over cores (the fast path's threads spin between steps).
        let threads = (crate::cpu::threads::default_threads() / workers).max(1);
        for i in 0..workers {
            let generator = generator.clone();
            let worker_queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("slm-worker-{i}"))
                .spawn(move || worker(i, threads, generator, worker_queue));
            if let Err(e) = spawned {
                tracing::error!(worker = i, error = %e, "cannot start a local model worker");
                worker_gone(&queue, e.to_string());
            }
        }
        Self {
            inner: Arc::new(Inner {
                generator,
                queue,
                opts,
            }),
        }
    }

    /// The shared generator.
    pub fn generator(&self) -> &Arc<Generator> {
        &self.inner.generator
    }

    /// Jobs waiting for a worker (not counting those running).
    pub fn queue_depth(&self) -> usize {
        self.inner
            .queue
            .jobs
            .lock()
            .map(|q| q.jobs.len())
            .unwrap_or(0)
    }

    /// Starts a generation; see the module docs for the steps and errors.
    pub async fn generate(&self, req: GenerateRequest) -> Result<GenerationStream, PoolError> {
        req.params.validate().map_err(PoolError::InvalidRequest)?;
        if req.messages.is_empty() {
            return Err(PoolError::InvalidRequest("`messages` is empty".into()));
        }
        let generator = &self.inner.generator;
        let prompt = generator
            .prompt_tokens(&req.messages)
            .map_err(|e| match e {
                LocalModelError::Template(m) => PoolError::InvalidRequest(m),
                other => PoolError::InvalidRequest(other.to_string()),
            })?;
        let max = generator.info().context_length;
        if prompt.len() >= max {
            return Err(PoolError::ContextTooLong {
                prompt: prompt.len(),
                max,
            });
        }
        let (events, rx) = mpsc::channel(EVENT_BUFFER);
        let (started, started_rx) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        {
            let mut q = self
                .inner
                .queue
                .jobs
                .lock()
                .map_err(|_| PoolError::Unavailable("queue lock poisoned".into()))?;
            if q.live_workers == 0 {
                return Err(PoolError::Unavailable(
                    q.last_worker_error
                        .clone()
                        .unwrap_or_else(|| "no workers".into()),
                ));
            }
            if q.jobs.len() >= self.inner.opts.queue_size {
                return Err(PoolError::QueueFull);
            }
            q.jobs.push_back(Job {
                prompt,
                params: req.params,
                events,
                started,
                abandoned: abandoned.clone(),
            });
        }
        self.inner.queue.ready.notify_one();
        // Dropping this future (the caller went away) marks the job abandoned too.
        let mut guard = AbandonOnDrop {
            flag: abandoned,
            queue: self.inner.queue.clone(),
            armed: true,
        };
        match tokio::time::timeout(self.inner.opts.queue_timeout, started_rx).await {
            Ok(Ok(())) => {
                guard.armed = false;
                Ok(GenerationStream { rx })
            }
            Ok(Err(_)) => Err(PoolError::Unavailable(
                "the worker dropped the request".into(),
            )),
            // `guard` takes the job out of the queue (a worker that already took it skips it).
            Err(_) => Err(PoolError::QueueTimeout),
        }
    }
}

/// Withdraws a queued job when `generate` gives up or is dropped before the job starts, so
/// that it no longer takes a queue slot.
struct AbandonOnDrop {
    flag: Arc<AtomicBool>,
    queue: Arc<Queue>,
    armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
            if let Ok(mut q) = self.queue.jobs.lock() {
                q.jobs.retain(|j| !j.abandoned.load(Ordering::Relaxed));
            }
        }
    }
}

fn worker_gone(queue: &Queue, error: String) {
    if let Ok(mut q) = queue.jobs.lock() {
        q.live_workers = q.live_workers.saturating_sub(1);
        q.last_worker_error = Some(error);
        if q.live_workers == 0 {
            // Nobody will ever run the waiting jobs: fail them now.
            q.jobs.clear();
        }
    }
}

fn worker(index: usize, threads: usize, generator: Arc<Generator>, queue: Arc<Queue>) {
    let mut model: ModelInstance = match generator.instance_with_threads(threads) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "local model worker failed to start");
            worker_gone(&queue, e.to_string());
            return;
        }
    };
    loop {
        let job = {
            let Ok(mut q) = queue.jobs.lock() else {
                return;
            };
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                q = match queue.ready.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        if job.abandoned.load(Ordering::Relaxed) || job.events.is_closed() {
            continue;
        }
        if job.started.send(()).is_err() {
            continue;
        }
        let events = job.events;
        // A panic inside candle must not take the worker (and its queue slot) down with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generator.generate_cancellable(
                &mut model,
                &job.prompt,
                &job.params,
                || events.is_closed(),
                |ev| events.blocking_send(Ok(ev)).is_ok(),
            )
        }));
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                // The instance's KV cache may be inconsistent: start from a fresh one.
                match generator.instance_with_threads(threads) {
                    Ok(m) => model = m,
                    Err(e) => {
                        let _ = events.blocking_send(Err(LocalModelError::Worker(e.to_string())));
                        worker_gone(&queue, e.to_string());
                        return;
                    }
                }
                Err(LocalModelError::Worker("generation panicked".into()))
            }
        };
        if let Err(e) = result {
            tracing::warn!(worker = index, error = %e, "local generation failed");
            let _ = events.blocking_send(Err(e));
        }
        drop(events);
        if model.is_stale() {
            match generator.instance_with_threads(threads) {
                Ok(m) => model = m,
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot refresh the model instance");
                    worker_gone(&queue, e.to_string());
                    return;
                }
            }
        }
    }
}
