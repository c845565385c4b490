//! Where a model alias goes: a [`ModelRoute`] is an alias's ordered [`Target`]s (a backend
//! and the model name sent to it), the first few of equal rank when the alias has
//! `deployments` ([`Balancer`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slmgate_config::Balance;

use crate::upstream::Backend;

/// One place a request for an alias can be sent: a backend and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The model name sent upstream.
    pub model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.backend.name(), self.model)
    }
}

/// A public model alias and the ordered list of targets that may serve it.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    /// The alias clients ask for.
    pub alias: String,
    /// Primary target first (or the deployments of equal rank, see `balance`), then the
    /// fallbacks, in order. Never empty.
    pub targets: Vec<Target>,
    /// Picks the order of the leading targets of equal rank; `None`: one primary.
    pub balance: Option<Arc<Balancer>>,
}

impl ModelRoute {
    /// An alias served by `targets` in this order.
    pub fn new(alias: String, targets: Vec<Target>) -> Self {
        ModelRoute {
            alias,
            targets,
            balance: None,
        }
    }

    /// The order to try the targets in for one request: the balanced rank in the order its
    /// strategy picks, then the rest as configured.
    /// Allocation-free: it runs once per request.
    pub fn order(&self) -> impl Iterator<Item = usize> {
        order_iter(self.balance.as_deref(), self.targets.len())
    }
}

/// `0..total`, its first balanced rank rotated so that `balance`'s pick comes first.
fn order_iter(balance: Option<&Balancer>, total: usize) -> impl Iterator<Item = usize> {
    let (n, first) = balance.map_or((0, 0), |b| {
        let n = b.stats.len().min(total);
        (n, b.pick(n))
    });
    (0..total).map(move |k| if k < n { (k + first) % n } else { k })
}

/// [`order_iter`], collected (tests).
#[cfg(test)]
fn balanced_order(balance: Option<&Balancer>, total: usize) -> Vec<usize> {
    order_iter(balance, total).collect()
}

/// Load balancing over an alias's first `n` targets (its deployments of equal rank): the
/// strategy and what it measures. Per snapshot and per instance: a reload starts afresh.
#[derive(Debug)]
pub struct Balancer {
    strategy: Balance,
    next: AtomicUsize,
    stats: Vec<TargetStats>,
}

#[derive(Debug, Default)]
struct TargetStats {
    in_flight: AtomicUsize,
    /// EWMA of the response-head latency in microseconds (as f64 bits); 0 until measured.
    ewma_us: AtomicU64,
}

/// The weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.3;

/// Added to a failed attempt's latency sample.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

impl Balancer {
    /// Balances the first `n` targets with `strategy`.
    pub fn new(strategy: Balance, n: usize) -> Self {
        Balancer {
            strategy,
            next: AtomicUsize::new(0),
            stats: (0..n).map(|_| TargetStats::default()).collect(),
        }
    }

    /// The balanced target to try first (an index below `n`). Ties go round robin, so an
    /// idle or unmeasured rank still spreads its load.
    fn pick(&self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let cost = |i: usize| -> f64 {
            let s = &self.stats[i];
            let busy = s.in_flight.load(Ordering::Relaxed) as f64;
            match self.strategy {
                Balance::RoundRobin => 0.0,
                Balance::LeastBusy => busy,
                Balance::LatencyEwma => {
                    f64::from_bits(s.ewma_us.load(Ordering::Relaxed)) * (busy + 1.0)
                }
            }
        };
        (0..n)
            .map(|k| (start + k) % n)
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .unwrap_or(start)
    }

    /// Marks target `i` busy until the guard drops; [`InFlight::answered`] records its
    /// latency.
    pub fn start(self: &Arc<Self>, i: usize) -> Option<InFlight> {
        let s = self.stats.get(i)?;
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            balancer: self.clone(),
            i,
            started: std::time::Instant::now(),
        })
    }

    fn observe(&self, i: usize, took: Duration) {
        let Some(s) = self.stats.get(i) else { return };
        let sample = took.as_secs_f64() * 1e6;
        // A lost update under contention only drops one sample: no CAS loop needed.
        let old = f64::from_bits(s.ewma_us.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        s.ewma_us.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// A request in flight to one balanced target (see [`Balancer::start`]).
#[derive(Debug)]
pub struct InFlight {
    balancer: Arc<Balancer>,
    i: usize,
    started: std::time::Instant,
}

impl InFlight {
    /// The attempt ended: records its latency to the response head, plus a second's
    /// penalty when it failed (a fast failure must not look like a fast deployment).
    pub fn answered(&self, ok: bool) {
        let took = self.started.elapsed();
        let penalty = if ok { Duration::ZERO } else { FAILURE_PENALTY };
        self.balancer.observe(self.i, took + penalty);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = self.balancer.stats.get(self.i) {
            s.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(strategy: Balance, n: usize) -> Arc<Balancer> {
        Arc::new(Balancer::new(strategy, n))
    }

    #[test]
    fn round_robin_rotates_the_rank_and_keeps_fallbacks_last() {
        let b = balancer(Balance::RoundRobin, 3);
        let firsts: Vec<usize> = (0..6).map(|_| balanced_order(Some(&b), 4)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        for _ in 0..3 {
            let o = balanced_order(Some(&b), 4);
            assert_eq!(o[3], 3, "the fallback stays last: {o:?}");
            let mut rank = o[..3].to_vec();
            rank.sort_unstable();
            assert_eq!(rank, [0, 1, 2]);
        }
    }

    #[test]
    fn least_busy_avoids_the_busy_target() {
        let b = balancer(Balance::LeastBusy, 2);
        let busy = b.start(0);
        for _ in 0..5 {
            assert_eq!(balanced_order(Some(&b), 2)[0], 1);
        }
        drop(busy);
        let firsts: Vec<usize> = (0..4).map(|_| balanced_order(Some(&b), 2)[0]).collect();
        assert_eq!(
            firsts.iter().filter(|&&f| f == 0).count(),
            2,
            "idle: round robin"
        );
    }

    #[test]
    fn latency_ewma_prefers_the_faster_target() {
        let b = balancer(Balance::LatencyEwma, 2);
        b.observe(0, Duration::from_millis(50));
        b.observe(1, Duration::from_millis(5));
        for _ in 0..5 {
            assert_eq!(balanced_order(Some(&b), 2)[0], 1);
        }
        // Unmeasured targets cost nothing: they are tried first.
        let b = balancer(Balance::LatencyEwma, 2);
        b.observe(0, Duration::from_millis(5));
        assert_eq!(balanced_order(Some(&b), 2)[0], 1);
        assert_eq!(balanced_order(None, 3), [0, 1, 2]);
    }
}
