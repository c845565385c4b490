//! A tiny fork-join pool for the forward pass.
//!
//! A 135M-parameter model runs ~150 parallel sections per token (five per layer), each only
//! tens of microseconds long, so the cost of starting one matters: general-purpose pools
//! (rayon) park their threads and pay a futex wake-up per section. [`ComputePool::run`] instead
//! publishes the job through an atomic counter that the helper threads spin on, like
//! llama.cpp's thread pool does. Helpers spin for [`SPIN`] after their last job (long enough to
//! span the gap between two tokens, sampling included), then yield, then sleep on a condition
//! variable, so an idle model does not burn CPU.
//!
//! [`ComputePool::run`] waits for every helper, so one helper that the OS has not scheduled (a
//! busy or oversubscribed machine) stalls every parallel section for a time slice.
//! [`ComputePool::run_dynamic`] instead hands out chunks of work to whichever threads come to
//! take them: the caller works through the chunks itself and waits only for the helpers that
//! joined in time.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it yields and then sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Bit 0 of [`Shared::epoch`]: the job is a [`ComputePool::run_dynamic`] one.
const DYNAMIC: u64 = 1;
/// In [`Shared::joined`]: the dynamic job takes no more helpers.
const CLOSED: u64 = 1 << 31;

struct Shared {
    /// Advanced by 2 for every published job; bit 0 is [`DYNAMIC`].
    epoch: AtomicU64,
    /// For the current dynamic job: its epoch's counter (`epoch >> 1`, low 32 bits) in the high
    /// half, [`CLOSED`] and the number of helpers working on it in the low half.
    joined: AtomicU64,
    /// Points at a `Job` on the stack of the thread inside [`ComputePool::run`].
    job: AtomicPtr<()>,
    /// Helpers that have not finished the current job.
    pending: AtomicUsize,
    panicked: AtomicBool,
    /// Set by [`ComputePool::rest`]: idle helpers sleep at once instead of spinning.
    resting: AtomicBool,
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
        .map(std::num::NonZero::get)
        .unwrap_or(1)
}

impl ComputePool {
    /// A pool running jobs on `threads` threads (at least 1; the caller counts as one). If a
    /// helper thread cannot be spawned, the pool runs with fewer.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            resting: AtomicBool::new(false),
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
        s.resting.store(false, Ordering::Relaxed);
        s.pending.store(self.threads - 1, Ordering::Relaxed);
        s.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        s.epoch.store(s.next_epoch(), Ordering::Release);
        s.wake_sleepers();
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

    /// Runs `f(c)` once for every chunk `c` in `0..chunks`, in parallel, and returns when all
    /// calls have returned. Chunks are taken in increasing order by the calling thread and by
    /// the helpers that arrive while chunks remain; a helper that is not running at the time
    /// (descheduled, or busy elsewhere) is not waited for. Which thread runs a chunk varies from
    /// call to call, so `f` must not depend on it.
    ///
    /// # Panics
    /// If any call panics (after every started call has finished).
    pub fn run_dynamic<F: Fn(usize) + Sync>(&self, chunks: usize, f: F) {
        if self.threads == 1 || chunks <= 1 {
            (0..chunks).for_each(f);
            return;
        }
        let next = AtomicUsize::new(0);
        let work = |_: usize| loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            f(c);
        };
        let job: Job<'_> = &work;
        let s = &*self.shared;
        s.resting.store(false, Ordering::Relaxed);
        let epoch = s.next_epoch() | DYNAMIC;
        s.joined
            .store(((epoch >> 1) & 0xFFFF_FFFF) << 32, Ordering::Relaxed);
        s.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        s.epoch.store(epoch, Ordering::Release);
        s.wake_sleepers();
        // Helpers that joined borrow `work` and `job`: close the job and wait for them, even if
        // the caller's share panics.
        struct CloseAndWait<'a>(&'a Shared);
        impl Drop for CloseAndWait<'_> {
            fn drop(&mut self) {
                let mut state = self.0.joined.fetch_or(CLOSED, Ordering::AcqRel);
                let mut spins = 0u32;
                while state & (CLOSED - 1) != 0 {
                    spins += 1;
                    if spins < 1 << 16 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                    state = self.0.joined.load(Ordering::Acquire);
                }
            }
        }
        let wait = CloseAndWait(s);
        work(0);
        drop(wait);
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a compute thread panicked");
        }
    }

    /// Tells the helpers that no job is coming soon: instead of spinning for [`SPIN`] after
    /// their last job, they go to sleep at once (until the next `run` or `run_dynamic`, which
    /// wakes them). For callers whose bursts of parallel sections are separated by idle
    /// periods (an embedder between requests), so that the helpers leave the cores to other
    /// threads.
    pub fn rest(&self) {
        self.shared.resting.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    /// The epoch of the next job (before its [`DYNAMIC`] bit). Only the thread inside `run` or
    /// `run_dynamic` publishes jobs.
    fn next_epoch(&self) -> u64 {
        ((self.epoch.load(Ordering::Relaxed) >> 1) + 1) << 1
    }

    fn wake_sleepers(&self) {
        if let Ok(sleepers) = self.sleepers.lock() {
            if *sleepers > 0 {
                self.wake.notify_all();
            }
        }
    }

    /// Joins the dynamic job of `epoch` if it is still open.
    fn join(&self, epoch: u64) -> bool {
        let tag = ((epoch >> 1) & 0xFFFF_FFFF) << 32;
        let mut state = self.joined.load(Ordering::Acquire);
        loop {
            if state & !(CLOSED | (CLOSED - 1)) != tag || state & CLOSED != 0 {
                return false;
            }
            match self.joined.compare_exchange_weak(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
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
            let resting = s.resting.load(Ordering::Relaxed);
            if idle < SPIN && !resting {
                std::hint::spin_loop();
            } else if idle < SPIN * 4 && !resting {
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
        if seen & DYNAMIC != 0 {
            // The caller may have finished this job (and even published others) already: work
            // on it only if it still takes helpers.
            if !s.join(seen) {
                continue;
            }
            let ptr = s.job.load(Ordering::Relaxed) as *const Job<'_>;
            // SAFETY: the job was open when this thread joined, so `job` still points at its
            // `Job`, which `run_dynamic` keeps alive until every joined helper has left.
            let job = unsafe { &*ptr };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
            s.joined.fetch_sub(1, Ordering::Release);
            continue;
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

/// Disjoint writes into one output from every thread of a [`ComputePool`].
///
/// A forward pass's parallel sections each write their own part of a shared output buffer.
/// These methods hand each call of the job exactly its part, as a `&mut` slice or [`Tile`],
/// so the callers need no raw pointers: the parts are disjoint by construction (which part
/// goes to which call is decided here, from [`ComputePool::run`]'s and
/// [`ComputePool::run_dynamic`]'s guarantee that each index runs exactly once).
impl ComputePool {
    /// Splits `out` into chunks of `chunk` values (a shorter remainder is not handed out) and
    /// runs `f(&mut state, u, chunk_u)` for every chunk `u`: thread `i` takes the chunks
    /// `i, i + threads, i + 2·threads, …` (interleaved, which balances work that grows with
    /// `u`) with its own `state = init()`.
    ///
    /// # Panics
    /// If `chunk` is 0, or as [`ComputePool::run`].
    pub fn run_interleaved<T: Send, S>(
        &self,
        out: &mut [T],
        chunk: usize,
        init: impl Fn() -> S + Sync,
        f: impl Fn(&mut S, usize, &mut [T]) + Sync,
    ) {
        assert!(chunk > 0, "empty chunks");
        let units = out.len() / chunk;
        let n = self.threads;
        let ptr = SyncPtr(out.as_mut_ptr());
        self.run(|i| {
            let mut state = init();
            for u in (i..units).step_by(n) {
                // SAFETY: `u < units`, so the chunk lies inside `out`, which this call borrows
                // mutably; `run` calls each `i` once, and chunk `u` goes to `i = u mod n`
                // only, so no two calls hold the same chunk.
                let c = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(u * chunk), chunk) };
                f(&mut state, u, c);
            }
        });
    }

    /// Splits `out` into chunks of `chunk` values (the last one possibly shorter) and runs
    /// `f(c, chunk_c)` for every chunk `c`, the chunks taken by whichever threads come, as
    /// [`ComputePool::run_dynamic`] does.
    ///
    /// # Panics
    /// If `chunk` is 0, or as [`ComputePool::run_dynamic`].
    pub fn run_dynamic_chunks<T: Send>(
        &self,
        out: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        assert!(chunk > 0, "empty chunks");
        let len = out.len();
        let ptr = SyncPtr(out.as_mut_ptr());
        self.run_dynamic(len.div_ceil(chunk), |c| {
            let start = c * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: `c < len.div_ceil(chunk)`, so `start < end ≤ len`: the chunk lies inside
            // `out`, which this call borrows mutably; `run_dynamic` runs each `c` once, and
            // the chunks do not overlap.
            let part = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(start), end - start) };
            f(c, part);
        });
    }

    /// Treats `out` as a row-major matrix of rows `ld` values wide, cut into column bands of
    /// `width` values (`ld / width` of them) and into the row spans `spans` (`(first row,
    /// rows)`), and runs `f(s, b, tile)` for every span `s` and band `b`, where `tile` is the
    /// [`Tile`] of span `s`'s rows and band `b`'s columns; the tiles are taken by whichever
    /// threads come, as [`ComputePool::run_dynamic`] does.
    ///
    /// # Panics
    /// If `width` is 0 or does not divide `ld`, if the spans overlap or are not in increasing
    /// order, if a span reaches past the end of `out`, or as [`ComputePool::run_dynamic`].
    pub fn run_dynamic_tiles<T: Send>(
        &self,
        out: &mut [T],
        ld: usize,
        width: usize,
        spans: &[(usize, usize)],
        f: impl Fn(usize, usize, Tile<'_, T>) + Sync,
    ) {
        assert!(
            width > 0 && ld.is_multiple_of(width),
            "bands of {width} in rows of {ld}"
        );
        let mut next = 0;
        for &(start, rows) in spans {
            assert!(start >= next, "row spans overlap or are out of order");
            next = start + rows;
        }
        assert!(
            next * ld <= out.len(),
            "row spans past the end of the output"
        );
        let bands = ld / width;
        let ptr = SyncPtr(out.as_mut_ptr());
        self.run_dynamic(spans.len() * bands, |u| {
            let (s, b) = (u / bands, u % bands);
            let (start, rows) = spans[s];
            let tile = Tile {
                // In bounds (or one past the end for an empty span at the end): checked above.
                ptr: ptr.get().wrapping_add(start * ld + b * width),
                ld,
                rows,
                width,
                _out: std::marker::PhantomData,
            };
            f(s, b, tile);
        });
    }
}

/// Part of a row-major matrix that one call of a [`ComputePool::run_dynamic_tiles`] job owns:
/// `rows` rows of `width` consecutive values, `ld` values apart.
pub struct Tile<'a, T> {
    /// Points at the tile's first value. Invariant: for `r < rows`, the `width` values at
    /// `ptr + r·ld` are inside the matrix and belong to this tile only.
    ptr: *mut T,
    ld: usize,
    rows: usize,
    width: usize,
    _out: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `Tile` is a set of `&mut` slices of `T`; sending it to another thread is sending
// those (sound for `T: Send`).
unsafe impl<T: Send> Send for Tile<'_, T> {}

impl<T> Tile<'_, T> {
    /// Rows in the tile.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The `Q` rows `r0..r0 + Q` of the tile, `width` values each.
    ///
    /// # Panics
    /// If `r0 + Q > rows()`.
    #[inline]
    pub fn rows_mut<const Q: usize>(&mut self, r0: usize) -> [&mut [T]; Q] {
        assert!(
            r0 + Q <= self.rows,
            "rows {r0}..{} of {}",
            r0 + Q,
            self.rows
        );
        std::array::from_fn(|r| {
            // SAFETY: row `r0 + r < rows` of the tile: inside the matrix and this tile's only
            // (the type's invariant); the `Q` rows are distinct, and `&mut self` keeps any
            // other borrow of them out for the arrays' lifetime.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.add((r0 + r) * self.ld), self.width) }
        })
    }
}

/// A raw pointer that several threads write disjoint elements of.
pub(super) struct SyncPtr<T>(pub(super) *mut T);

// (Not derived: a derive would require `T: Copy`.)
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}
// SAFETY: users guarantee that concurrent writers touch disjoint elements.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    #[inline]
    pub(super) fn get(self) -> *mut T {
        self.0
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
            pool.run(|i| assert_ne!(i, 1, "boom"));
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
    fn run_dynamic_runs_every_chunk_once() {
        for threads in [1, 2, 3] {
            let pool = ComputePool::new(threads);
            for round in 0..500 {
                let chunks = round % 37;
                let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                pool.run_dynamic(chunks, |c| {
                    hits[c].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                // Interleaved with static jobs, which must still reach every thread once.
                if round % 3 == 0 {
                    let total = AtomicUsize::new(0);
                    pool.run(|_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    });
                    assert_eq!(total.load(Ordering::Relaxed), pool.threads());
                }
            }
        }
    }

    #[test]
    fn run_dynamic_does_not_wait_for_sleeping_helpers_and_survives_panics() {
        let pool = ComputePool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run_dynamic(8, |c| assert_ne!(c, 5, "boom"));
        }));
        assert!(r.is_err());
        // Helpers asleep: the caller does the chunks without waiting for them to wake up.
        std::thread::sleep(SPIN * 6);
        let done = AtomicUsize::new(0);
        pool.run_dynamic(4, |_| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 4);
        let total = AtomicUsize::new(0);
        pool.run(|i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn resting_helpers_sleep_and_wake_for_the_next_job() {
        let pool = ComputePool::new(2);
        pool.run(|_| {});
        pool.rest();
        // (Within microseconds on an idle machine; the bound leaves room for a busy one.)
        let start = Instant::now();
        while pool.shared.sleepers.lock().map(|n| *n).unwrap_or(0) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the helper never slept"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        let total = AtomicUsize::new(0);
        pool.run(|i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 3);
        let done = AtomicUsize::new(0);
        pool.run_dynamic(16, |_| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn output_splitting_hands_out_every_part_once() {
        for threads in [1, 2, 3] {
            let pool = ComputePool::new(threads);
            // Interleaved chunks (the remainder past whole chunks untouched), per-thread state.
            let mut out = vec![0usize; 10 * 7 + 3];
            pool.run_interleaved(
                &mut out,
                7,
                || 0usize,
                |seen, u, c| {
                    *seen += 1;
                    assert_eq!(c.len(), 7);
                    c.iter_mut().for_each(|v| *v += u + 1);
                },
            );
            for (i, &v) in out.iter().enumerate() {
                assert_eq!(
                    v,
                    if i < 70 { i / 7 + 1 } else { 0 },
                    "{threads} threads [{i}]"
                );
            }
            // Dynamic chunks, the last one shorter.
            let mut out = vec![0usize; 23];
            pool.run_dynamic_chunks(&mut out, 5, |c, part| {
                assert_eq!(part.len(), if c == 4 { 3 } else { 5 });
                part.iter_mut().for_each(|v| *v += c + 1);
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == i / 5 + 1));
            // Tiles: row spans (one empty, a gap) × column bands of a 6-wide matrix.
            let mut out = vec![0usize; 9 * 6];
            let spans = [(0, 2), (2, 0), (3, 4), (7, 1)];
            pool.run_dynamic_tiles(&mut out, 6, 2, &spans, |s, b, mut tile| {
                assert_eq!(tile.rows(), spans[s].1);
                for r in 0..tile.rows() {
                    let [row] = tile.rows_mut::<1>(r);
                    assert_eq!(row.len(), 2);
                    row.iter_mut().for_each(|v| *v += 10 * (s + 1) + b);
                }
            });
            for (i, &v) in out.iter().enumerate() {
                let (row, col) = (i / 6, i % 6);
                let want = match row {
                    0 | 1 => 10 + col / 2,
                    3..=6 => 30 + col / 2,
                    7 => 40 + col / 2,
                    _ => 0,
                };
                assert_eq!(v, want, "{threads} threads row {row} col {col}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn overlapping_tiles_are_refused() {
        let mut out = vec![0f32; 16];
        ComputePool::new(2).run_dynamic_tiles(&mut out, 4, 4, &[(0, 2), (1, 2)], |_, _, _| {});
    }

    #[test]
    #[should_panic(expected = "past the end")]
    fn tiles_past_the_end_are_refused() {
        let mut out = vec![0f32; 16];
        ComputePool::new(2).run_dynamic_tiles(&mut out, 4, 4, &[(0, 2), (2, 3)], |_, _, _| {});
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
