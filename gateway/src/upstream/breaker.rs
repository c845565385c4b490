//! Outlier ejection (circuit breaking) for one remote backend.
//!
//! Without it a failing backend costs every request its full retry budget, and a hanging
//! one its full timeout, before the fallback is tried. The breaker watches each attempt's
//! outcome and **ejects** the backend after `consecutive_failures` failures in a row, or
//! when at least `failure_rate` of the last `window` attempts failed. While ejected, the
//! forwarding service skips the backend at once (the next fallback answers; with none left
//! the client gets 503 `backend_ejected` with `Retry-After`). When the ejection time is up
//! the breaker is **half-open**: exactly one request is let through as a probe, the others
//! still skip. A probe that succeeds closes the breaker; one that fails ejects the backend
//! again for twice as long (up to `max_ejection`).
//!
//! A failure is what says the backend is unwell: a connect error, a timeout, a 5xx, a body
//! that is not a chat completion, a stream that breaks before its first token. A 429 (busy,
//! not broken), a 4xx the client caused, or a 401/403/404 (a configuration problem) count as
//! answers. The state is shown under `backends[].circuit` in `GET /admin/status` and as the
//! metrics `slmgate_backend_ejected{backend}` (1 while ejected or probing) and
//! `slmgate_backend_ejections_total{backend}`.
//!
//! ```
//! use slmgate_gateway::upstream::breaker::{Admission, Breaker};
//! let b = Breaker::new("up", slmgate_config::CircuitBreaker {
//!     consecutive_failures: 2,
//!     ..Default::default()
//! });
//! for _ in 0..2 {
//!     let Admission::Pass(ticket) = b.admit() else { unreachable!() };
//!     ticket.failed();
//! }
//! assert!(matches!(b.admit(), Admission::Rejected(_)));
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::metrics as m;

/// The breaker of one backend. Cheap while closed: admitting an attempt is one atomic load.
#[derive(Debug)]
pub struct Breaker {
    backend: String,
    cfg: slmgate_config::CircuitBreaker,
    /// Set while ejected or half-open: the fast path for a healthy backend takes no lock.
    tripped: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    consecutive: u32,
    /// The last `window` outcomes, newest last (`true` = failure).
    recent: VecDeque<bool>,
    failures: u32,
    /// Set while ejected; in the past once half-open.
    ejected_until: Option<Instant>,
    /// The current ejection's length (doubles after each failed probe).
    ejection: Duration,
    ejections: u64,
    probing: bool,
}

/// Whether an attempt may go to the backend.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Closed: go ahead and report the outcome.
    Pass(Ticket<'a>),
    /// Half-open: this attempt is the probe.
    Probe(Ticket<'a>),
    /// Ejected (or another request is probing): skip the backend; it may be tried again
    /// after about this long.
    Rejected(Duration),
}

/// One admitted attempt. Report its outcome with [`Ticket::succeeded`] or
/// [`Ticket::failed`]; dropping it unreported (the request was cancelled) frees the probe
/// slot and counts as nothing.
#[derive(Debug)]
pub struct Ticket<'a> {
    breaker: Option<&'a Breaker>,
    probe: bool,
}

impl Ticket<'_> {
    /// The backend answered.
    pub fn succeeded(mut self) {
        if let Some(b) = self.breaker.take() {
            b.record(self.probe, false);
        }
    }

    /// The backend failed (see the module docs for what counts).
    pub fn failed(mut self) {
        if let Some(b) = self.breaker.take() {
            b.record(self.probe, true);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let (Some(b), true) = (self.breaker, self.probe) {
            if let Ok(mut s) = b.state.lock() {
                s.probing = false;
            }
        }
    }
}

impl Breaker {
    /// A closed breaker for `backend`.
    pub fn new(backend: &str, cfg: slmgate_config::CircuitBreaker) -> Self {
        Breaker {
            backend: backend.to_string(),
            cfg,
            tripped: AtomicBool::new(false),
            state: Mutex::new(State {
                consecutive: 0,
                recent: VecDeque::with_capacity(cfg.window as usize),
                failures: 0,
                ejected_until: None,
                ejection: cfg.ejection,
                ejections: 0,
                probing: false,
            }),
        }
    }

    /// The settings it runs with (a reload keeps the breaker only when they are unchanged).
    pub fn config(&self) -> &slmgate_config::CircuitBreaker {
        &self.cfg
    }

    /// Asks to send one attempt.
    pub fn admit(&self) -> Admission<'_> {
        if !self.cfg.enabled {
            return Admission::Pass(Ticket {
                breaker: None,
                probe: false,
            });
        }
        if !self.tripped.load(Ordering::Acquire) {
            return Admission::Pass(Ticket {
                breaker: Some(self),
                probe: false,
            });
        }
        let Ok(mut s) = self.state.lock() else {
            // A poisoned lock (a panic mid-update) must not take the backend down with it.
            return Admission::Pass(Ticket {
                breaker: None,
                probe: false,
            });
        };
        let now = Instant::now();
        match s.ejected_until {
            Some(until) if until > now => Admission::Rejected(until - now),
            // Half-open, and someone else is probing: wait for that probe's outcome.
            _ if s.probing => Admission::Rejected(Duration::from_secs(1)),
            _ => {
                s.probing = true;
                tracing::info!(backend = %self.backend, "circuit half-open: probing the backend");
                Admission::Probe(Ticket {
                    breaker: Some(self),
                    probe: true,
                })
            }
        }
    }

    fn record(&self, probe: bool, failed: bool) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if probe {
            s.probing = false;
            if failed {
                let next = s.ejection.saturating_mul(2).min(self.cfg.max_ejection);
                s.ejection = next;
                self.eject(&mut s, "the probe failed");
            } else {
                s.consecutive = 0;
                s.recent.clear();
                s.failures = 0;
                s.ejected_until = None;
                s.ejection = self.cfg.ejection;
                self.tripped.store(false, Ordering::Release);
                metrics::gauge!(m::BACKEND_EJECTED, "backend" => self.backend.clone()).set(0.0);
                tracing::info!(backend = %self.backend, "circuit closed: the probe succeeded");
            }
            return;
        }
        if s.ejected_until.is_some() {
            // Admitted before another attempt ejected the backend: that decision stands.
            return;
        }
        if s.recent.len() >= self.cfg.window as usize && s.recent.pop_front() == Some(true) {
            s.failures -= 1;
        }
        s.recent.push_back(failed);
        if failed {
            s.failures += 1;
            s.consecutive += 1;
        } else {
            s.consecutive = 0;
        }
        let full = s.recent.len() >= self.cfg.window as usize;
        let rate = f64::from(s.failures) / s.recent.len().max(1) as f64;
        if s.consecutive >= self.cfg.consecutive_failures {
            let why = format!("{} consecutive failures", s.consecutive);
            self.eject(&mut s, &why);
        } else if full && rate >= self.cfg.failure_rate {
            let why = format!(
                "{} of the last {} attempts failed",
                s.failures,
                s.recent.len()
            );
            self.eject(&mut s, &why);
        }
    }

    fn eject(&self, s: &mut State, why: &str) {
        s.ejected_until = Some(Instant::now() + s.ejection);
        s.ejections += 1;
        s.consecutive = 0;
        s.recent.clear();
        s.failures = 0;
        self.tripped.store(true, Ordering::Release);
        metrics::gauge!(m::BACKEND_EJECTED, "backend" => self.backend.clone()).set(1.0);
        metrics::counter!(m::BACKEND_EJECTIONS, "backend" => self.backend.clone()).increment(1);
        tracing::warn!(backend = %self.backend, ejection = ?s.ejection, reason = why, "circuit open: backend ejected");
    }

    /// The breaker's state for `GET /admin/status`.
    pub fn status(&self) -> Value {
        let Ok(s) = self.state.lock() else {
            return json!({"state": "unknown"});
        };
        let now = Instant::now();
        let state = match s.ejected_until {
            _ if !self.cfg.enabled => "disabled",
            None => "closed",
            Some(until) if until > now => "open",
            Some(_) => "half_open",
        };
        let remaining = s
            .ejected_until
            .map_or(0, |u| u.saturating_duration_since(now).as_millis() as u64);
        json!({
            "state": state,
            "consecutive_failures": s.consecutive,
            "recent_failures": s.failures,
            "recent_attempts": s.recent.len(),
            "ejections": s.ejections,
            "ejected_for_ms": remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32, rate: f64, window: u32, ejection_ms: u64) -> Breaker {
        Breaker::new(
            "b",
            slmgate_config::CircuitBreaker {
                enabled: true,
                consecutive_failures: consecutive,
                failure_rate: rate,
                window,
                ejection: Duration::from_millis(ejection_ms),
                max_ejection: Duration::from_millis(ejection_ms * 4),
            },
        )
    }

    fn attempt(b: &Breaker, fail: bool) -> &'static str {
        match b.admit() {
            Admission::Pass(t) => {
                if fail {
                    t.failed();
                } else {
                    t.succeeded();
                }
                "pass"
            }
            Admission::Probe(t) => {
                if fail {
                    t.failed();
                } else {
                    t.succeeded();
                }
                "probe"
            }
            Admission::Rejected(_) => "rejected",
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let b = breaker(3, 1.0, 100, 60_000);
        for fail in [true, true, false, true, true] {
            assert_eq!(attempt(&b, fail), "pass");
        }
        assert_eq!(b.status()["state"], "closed");
        assert_eq!(attempt(&b, true), "pass");
        assert_eq!(b.status()["state"], "open");
        assert_eq!(attempt(&b, false), "rejected");
        assert_eq!(b.status()["ejections"], 1);
    }

    #[test]
    fn the_failure_rate_ejects_once_the_window_is_full() {
        let b = breaker(100, 0.5, 4, 60_000);
        for fail in [true, false, true] {
            assert_eq!(attempt(&b, fail), "pass");
        }
        assert_eq!(b.status()["state"], "closed", "window not full yet");
        assert_eq!(attempt(&b, false), "pass");
        assert_eq!(b.status()["state"], "open");
    }

    #[test]
    fn one_probe_at_a_time_and_its_outcome_decides() {
        let b = breaker(1, 1.0, 10, 20);
        attempt(&b, true);
        assert_eq!(attempt(&b, false), "rejected");
        std::thread::sleep(Duration::from_millis(30));
        // Half-open: one probe; the others wait for it.
        let Admission::Probe(probe) = b.admit() else {
            panic!("expected a probe")
        };
        assert_eq!(b.status()["state"], "half_open");
        assert_eq!(attempt(&b, false), "rejected");
        probe.failed();
        // Ejected again, for twice as long.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(attempt(&b, false), "rejected");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(attempt(&b, false), "probe");
        assert_eq!(b.status()["state"], "closed");
        assert_eq!(attempt(&b, true), "pass");
    }

    #[test]
    fn a_cancelled_probe_frees_the_slot() {
        let b = breaker(1, 1.0, 10, 1);
        attempt(&b, true);
        std::thread::sleep(Duration::from_millis(5));
        let Admission::Probe(probe) = b.admit() else {
            panic!("expected a probe")
        };
        drop(probe);
        assert_eq!(attempt(&b, false), "probe");
    }

    #[test]
    fn disabled_never_ejects() {
        let b = Breaker::new(
            "b",
            slmgate_config::CircuitBreaker {
                enabled: false,
                consecutive_failures: 1,
                ..Default::default()
            },
        );
        for _ in 0..10 {
            assert_eq!(attempt(&b, true), "pass");
        }
        assert_eq!(b.status()["state"], "disabled");
    }
}
