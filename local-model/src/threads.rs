//! A tiny fork-join pool for the forward pass.
//!
//! A 135M-parameter model runs ~150 parallel sections per token (five per layer), each only
//! tens of microseconds long, so the cost of starting one matters: general-purpose pools
//! (rayon) park their threads and pay a futex wake-up per section. [`ComputePool::run`] instead
//! publishes the job through an atomic counter that the helper threads spin on, like
//! llama.cpp's thread pool does. Helpers spin for [`SPIN`] after their last job (long enough to
//! span the gap between two tokens, sampling included), then yield, then sleep on a condition
//! variable, so an idle model does not burn CPU.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it yields and then sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented for every published job.
    epoch: AtomicU64,
    /// Points at a `Job` on the stack of the thread inside [`ComputePool::run`].
    job: AtomicPtr<()>,
    /// Helpers that have not finished the current job.
    pending: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

/// A pool of `threads - 1` helper threads plus the calling thread.
pub struct ComputePool {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePool")
            .field("threads", &self.threads)
            .finish()
    }
}

/// The number of threads to use by default: the CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ComputePool {
    /// A pool running jobs on `threads` threads (at least 1; the caller counts as one). If a
    /// helper thread cannot be spawned, the pool runs with fewer.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let mut helpers = Vec::new();
        for i in 1..threads.max(1) {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("slm-compute-{i}"))
                .spawn(move || helper(i, &s))
            {
                Ok(h) => helpers.push(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a compute thread; using fewer");
                    break;
                }
            }
        }
        let threads = helpers.len() + 1;
        Self {
            shared,
            helpers,
            threads,
        }
    }

    /// Threads that run each job (helpers plus the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every `i` in `0..threads()` in parallel (`f(0)` on the calling thread)
    /// and returns when all calls have returned.
    ///
    /// # Panics
    /// If any call panics (after every call has finished).
    pub fn run<F: Fn(usize) + Sync>(&self, f: F) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let job: Job<'_> = &f;
        let s = &*self.shared;
        s.pending.store(self.threads - 1, Ordering::Relaxed);
        s.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if let Ok(sleepers) = s.sleepers.lock() {
            if *sleepers > 0 {
                s.wake.notify_all();
            }
        }
        // The helpers borrow `f` and `job`: wait for them even if `f(0)` panics.
        struct WaitHelpers<'a>(&'a Shared);
        impl Drop for WaitHelpers<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.pending.load(Ordering::Acquire) != 0 {
                    spins += 1;
                    if spins < 1 << 16 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        let wait = WaitHelpers(s);
        f(0);
        drop(wait);
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a compute thread panicked");
        }
    }
}

fn helper(index: usize, s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut idle_since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let idle = since.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
            } else if idle < SPIN * 4 {
                std::thread::yield_now();
            } else {
                let Ok(mut sleepers) = s.sleepers.lock() else {
                    return;
                };
                if s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Relaxed) {
                    *sleepers += 1;
                    sleepers = match s.wake.wait(sleepers) {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                    *sleepers -= 1;
                }
                idle_since = None;
            }
        }
        let ptr = s.job.load(Ordering::Relaxed) as *const Job<'_>;
        // SAFETY: `run` stored a pointer to a live `Job` before bumping the epoch, and keeps it
        // alive until `pending` reaches zero, which happens only after this call returns.
        let job = unsafe { &*ptr };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        if let Ok(_g) = self.shared.sleepers.lock() {
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Splits `0..n` into `parts` contiguous ranges whose starts are multiples of `align` and
/// returns part `i`.
pub fn split(n: usize, parts: usize, i: usize, align: usize) -> std::ops::Range<usize> {
    let units = n.div_ceil(align);
    let per = units / parts;
    let extra = units % parts;
    let start = i * per + i.min(extra);
    let len = per + usize::from(i < extra);
    (start * align).min(n)..((start + len) * align).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_index_and_survives_panics() {
        let pool = ComputePool::new(3);
        for _ in 0..1000 {
            let hits: Vec<AtomicUsize> = (0..pool.threads()).map(|_| AtomicUsize::new(0)).collect();
            pool.run(|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(|i| assert_ne!(i, 1, "boom"))
        }));
        assert!(r.is_err());
        // Still usable after a panic, and after the helpers went to sleep.
        std::thread::sleep(SPIN * 6);
        let total = AtomicUsize::new(0);
        pool.run(|i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn split_covers_the_range() {
        for n in [0, 1, 5, 64, 961] {
            for parts in 1..5 {
                let mut next = 0;
                for i in 0..parts {
                    let r = split(n, parts, i, 4);
                    assert_eq!(r.start, next.min(n));
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
