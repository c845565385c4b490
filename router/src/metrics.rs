//! RouteLLM's routing metrics (Ong et al., "RouteLLM: Learning to Route LLMs with Preference
//! Data", arXiv 2406.18665, section 4 and `routellm/evals/evaluate.py`).
//!
//! Input: one [`Routed`] per prompt: the router's score (higher = more need for the strong
//! model) and the quality each model reaches on that prompt (any scale, typically 0/1
//! correctness or a judge's 1–10 mapped to 0–1). A threshold `t` sends every prompt with
//! `score ≥ t` to the strong model and the rest to the weak one. Sweeping `t` over the scores
//! gives the **curve** of (share of strong calls, average quality) from `(0, q_weak)` (nothing
//! strong) to `(1, q_strong)` (everything strong):
//!
//! - Prompts with the **same score always get the same decision**: a tie group enters the
//!   curve as one step, so there is exactly one point per distinct score.
//! - Between two points the curve is a straight line: that is what a router reaches in
//!   expectation by sending a random part of the next tie group to the strong model (and what
//!   RouteLLM's `np.trapz`/`np.interp` assume).
//! - **PGR** (performance gap recovered) of a point: `(q − q_weak) / (q_strong − q_weak)`.
//! - **APGR**: the area under PGR as a function of the strong-call share over `[0, 1]`, i.e.
//!   `(AUC − q_weak) / (q_strong − q_weak)`. Random routing scores 0.5 (in expectation), a
//!   perfect router more (it can exceed 1 when the weak model wins on some prompts).
//! - **CPT(x)**: the smallest strong-call share at which the curve reaches PGR ≥ x (first
//!   crossing, linearly interpolated like RouteLLM's `np.interp`). Random routing: CPT(x) = x.
//! - **AUC**: the area under average quality as a function of the strong-call share.
//!
//! Degenerate inputs never panic: an empty input gives an empty curve and no metrics; when
//! both models have the same average quality, PGR, APGR and CPT are undefined (`None`). A NaN
//! score ranks above every number (an unknown score goes to the strong model).

use std::cmp::Ordering;
use std::fmt;

/// One prompt as the router saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routed {
    /// The router's score: higher means more need for the strong model.
    pub score: f32,
    /// Quality of the weak (small, local) model's answer.
    pub weak: f64,
    /// Quality of the strong (large, remote) model's answer.
    pub strong: f64,
}

/// One point of the curve: everything with `score ≥ threshold` goes to the strong model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Share of prompts sent to the strong model, in `[0, 1]`.
    pub strong_share: f64,
    /// Average quality over all prompts at this operating point.
    pub quality: f64,
    /// The threshold: the lowest score sent to the strong model (`+∞` for the first point,
    /// where nothing is).
    pub threshold: f32,
}

/// The quality-vs-strong-calls curve of one router on one set of prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Points by increasing strong-call share, from `(0, q_weak)` to `(1, q_strong)`; empty for
    /// an empty input.
    pub points: Vec<CurvePoint>,
    /// Average quality when every prompt goes to the weak model.
    pub weak_quality: f64,
    /// Average quality when every prompt goes to the strong model.
    pub strong_quality: f64,
    /// Number of prompts.
    pub n: usize,
}

/// Gaps between the two models' average quality at most this large count as no gap.
const DEGENERATE_GAP: f64 = 1e-12;

impl Curve {
    /// Builds the curve by sweeping the threshold over every distinct score.
    pub fn new(rows: &[Routed]) -> Curve {
        let n = rows.len();
        if n == 0 {
            return Curve {
                points: Vec::new(),
                weak_quality: 0.0,
                strong_quality: 0.0,
                n: 0,
            };
        }
        let nf = n as f64;
        let weak_quality = rows.iter().map(|r| r.weak).sum::<f64>() / nf;
        let strong_quality = rows.iter().map(|r| r.strong).sum::<f64>() / nf;

        let key = |s: f32| if s.is_nan() { f32::INFINITY } else { s };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| key(rows[b].score).total_cmp(&key(rows[a].score)));

        let mut points = Vec::with_capacity(n + 1);
        points.push(CurvePoint {
            strong_share: 0.0,
            quality: weak_quality,
            threshold: f32::INFINITY,
        });
        let mut gain = 0.0;
        let mut i = 0;
        while i < n {
            let s = key(rows[order[i]].score);
            let mut j = i;
            // -0.0 and 0.0 compare equal with `==`: one group, as a threshold would treat them.
            while j < n && key(rows[order[j]].score) == s {
                let r = &rows[order[j]];
                gain += r.strong - r.weak;
                j += 1;
            }
            points.push(CurvePoint {
                strong_share: j as f64 / nf,
                quality: weak_quality + gain / nf,
                threshold: s,
            });
            i = j;
        }
        // The last point is exactly "everything strong" (no rounding drift from the sums).
        if let Some(last) = points.last_mut() {
            last.strong_share = 1.0;
            last.quality = strong_quality;
        }
        Curve {
            points,
            weak_quality,
            strong_quality,
            n,
        }
    }

    /// Whether PGR is undefined: no prompts, or both models have the same average quality.
    pub fn is_degenerate(&self) -> bool {
        self.n == 0 || (self.strong_quality - self.weak_quality).abs() <= DEGENERATE_GAP
    }

    /// PGR of an average quality `q` on this prompt set; `None` when degenerate.
    pub fn pgr(&self, quality: f64) -> Option<f64> {
        if self.is_degenerate() {
            return None;
        }
        Some((quality - self.weak_quality) / (self.strong_quality - self.weak_quality))
    }

    /// Area under average quality vs strong-call share over `[0, 1]` (trapezoids between the
    /// points); `None` for an empty input.
    pub fn auc(&self) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(
            self.points
                .windows(2)
                .map(|w| {
                    (w[1].strong_share - w[0].strong_share) * (w[0].quality + w[1].quality) / 2.0
                })
                .sum(),
        )
    }

    /// Average PGR over the strong-call share in `[0, 1]`: `(AUC − q_weak) / (q_strong −
    /// q_weak)`; `None` when degenerate.
    pub fn apgr(&self) -> Option<f64> {
        let auc = self.auc()?;
        self.pgr(auc)
    }

    /// The smallest strong-call share (in `[0, 1]`) at which PGR reaches `target` (e.g. 0.5
    /// for CPT(50 %)), interpolating linearly between points; `None` when degenerate or never
    /// reached (only possible for targets above 1).
    pub fn cpt(&self, target: f64) -> Option<f64> {
        if self.is_degenerate() || target.is_nan() {
            return None;
        }
        let pgr = |p: &CurvePoint| self.pgr(p.quality).unwrap_or(0.0);
        let first = self.points.first()?;
        if pgr(first) >= target {
            return Some(first.strong_share);
        }
        for w in self.points.windows(2) {
            let (a, b) = (pgr(&w[0]), pgr(&w[1]));
            if a < target && b >= target {
                let t = (target - a) / (b - a);
                return Some(w[0].strong_share + t * (w[1].strong_share - w[0].strong_share));
            }
        }
        None
    }

    /// The summary metrics of this curve.
    pub fn metrics(&self) -> RouteMetrics {
        RouteMetrics {
            n: self.n,
            weak_quality: self.weak_quality,
            strong_quality: self.strong_quality,
            apgr: self.apgr(),
            cpt50: self.cpt(0.5),
            cpt80: self.cpt(0.8),
            auc: self.auc(),
        }
    }
}

/// The summary metrics of a router on a prompt set. Shares are fractions in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteMetrics {
    /// Number of prompts.
    pub n: usize,
    /// Average quality with everything on the weak model.
    pub weak_quality: f64,
    /// Average quality with everything on the strong model.
    pub strong_quality: f64,
    /// Average performance gap recovered (random routing: 0.5).
    pub apgr: Option<f64>,
    /// Smallest strong-call share reaching 50 % PGR (random routing: 0.5).
    pub cpt50: Option<f64>,
    /// Smallest strong-call share reaching 80 % PGR (random routing: 0.8).
    pub cpt80: Option<f64>,
    /// Area under quality vs strong-call share.
    pub auc: Option<f64>,
}

impl RouteMetrics {
    /// The metrics of a score computed on `rows`.
    pub fn of(rows: &[Routed]) -> RouteMetrics {
        Curve::new(rows).metrics()
    }

    /// The expected metrics of random routing (each prompt goes strong with probability `c`,
    /// for every `c`): the straight line from `(0, q_weak)` to `(1, q_strong)`. This equals
    /// the metrics of a constant score, which puts every prompt in one tie group.
    pub fn random(rows: &[Routed]) -> RouteMetrics {
        let constant: Vec<Routed> = rows.iter().map(|r| Routed { score: 0.0, ..*r }).collect();
        RouteMetrics::of(&constant)
    }

    /// The metrics of the oracle that knows each prompt's gain `strong − weak` (an upper bound
    /// for any router on this prompt set).
    pub fn oracle(rows: &[Routed]) -> RouteMetrics {
        let ideal: Vec<Routed> = rows
            .iter()
            .map(|r| Routed {
                score: (r.strong - r.weak) as f32,
                ..*r
            })
            .collect();
        RouteMetrics::of(&ideal)
    }
}

/// Formats an optional fraction as a percentage (`–` when undefined).
pub fn fmt_pct(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{:.1}%", x * 100.0),
        _ => "–".to_string(),
    }
}

/// Formats an optional number with 3 decimals (`–` when undefined).
pub fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "–".to_string(),
    }
}

impl fmt::Display for RouteMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} APGR={} CPT(50%)={} CPT(80%)={} AUC={} (weak {:.3}, strong {:.3})",
            self.n,
            fmt_num(self.apgr),
            fmt_pct(self.cpt50),
            fmt_pct(self.cpt80),
            fmt_num(self.auc),
            self.weak_quality,
            self.strong_quality
        )
    }
}

/// Sorts scores descending with NaN first (the order the curve uses); exposed for callers that
/// pick thresholds from a sample (calibration).
pub fn cmp_scores_desc(a: f32, b: f32) -> Ordering {
    let key = |s: f32| if s.is_nan() { f32::INFINITY } else { s };
    key(b).total_cmp(&key(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(score: f32, weak: f64, strong: f64) -> Routed {
        Routed {
            score,
            weak,
            strong,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// Worked by hand. Five prompts (score, weak, strong):
    ///
    /// ```text
    /// A 0.9  0 1   gain +1
    /// B 0.7  1 1   gain  0   } same score: one decision
    /// C 0.7  0 1   gain +1   }
    /// D 0.4  0 0   gain  0
    /// E 0.1  1 0   gain -1
    /// ```
    ///
    /// q_weak = 2/5 = 0.4, q_strong = 3/5 = 0.6, gap 0.2.
    /// Points (share, quality): (0, 0.4) → A (0.2, 0.6) → B+C (0.6, 0.8) → D (0.8, 0.8) →
    /// E (1.0, 0.6). PGR at the points: 0, 1, 2, 2, 1.
    /// AUC = 0.2·(0.4+0.6)/2 + 0.4·(0.6+0.8)/2 + 0.2·0.8 + 0.2·(0.8+0.6)/2
    ///     = 0.1 + 0.28 + 0.16 + 0.14 = 0.68.
    /// APGR = (0.68 − 0.4)/0.2 = 1.4 (also: trapezoids of PGR 0.1 + 0.6 + 0.4 + 0.3).
    /// CPT(50 %) = 0.1 (half-way to A), CPT(80 %) = 0.16, CPT(100 %) = 0.2, CPT(150 %) = 0.4
    /// (half-way from A to B+C: 0.2 + 0.5·0.4), CPT(300 %) never.
    #[test]
    fn hand_computed_five_prompts_with_a_tie() {
        let rows = [
            r(0.4, 0.0, 0.0),
            r(0.7, 1.0, 1.0),
            r(0.1, 1.0, 0.0),
            r(0.9, 0.0, 1.0),
            r(0.7, 0.0, 1.0),
        ];
        let c = Curve::new(&rows);
        let shares: Vec<f64> = c.points.iter().map(|p| p.strong_share).collect();
        let quals: Vec<f64> = c.points.iter().map(|p| p.quality).collect();
        for (a, b) in shares.iter().zip([0.0, 0.2, 0.6, 0.8, 1.0]) {
            assert!((a - b).abs() < 1e-12, "{shares:?}");
        }
        for (a, b) in quals.iter().zip([0.4, 0.6, 0.8, 0.8, 0.6]) {
            assert!((a - b).abs() < 1e-12, "{quals:?}");
        }
        assert_eq!(c.points[2].threshold, 0.7);
        assert!(close(c.auc(), 0.68));
        assert!(close(c.apgr(), 1.4));
        assert!(close(c.cpt(0.5), 0.1));
        assert!(close(c.cpt(0.8), 0.16));
        assert!(close(c.cpt(1.0), 0.2));
        assert!(close(c.cpt(1.5), 0.4));
        assert_eq!(c.cpt(3.0), None);
        assert!(close(c.cpt(0.0), 0.0));
        let m = c.metrics();
        assert!(close(m.apgr, 1.4) && close(m.cpt50, 0.1) && close(m.cpt80, 0.16));
    }

    /// Four prompts, a router that ranks the prompts that gain most from the strong model
    /// last (score, weak, strong):
    ///
    /// ```text
    /// P 0.9 weak 0.5 strong 0.5   gain 0
    /// Q 0.8 weak 1.0 strong 1.0   gain 0
    /// R 0.3 weak 0.0 strong 0.5   gain 0.5
    /// S 0.2 weak 0.0 strong 1.0   gain 1
    /// ```
    ///
    /// q_weak = 1.5/4 = 0.375, q_strong = 3/4 = 0.75, gap 0.375.
    /// Points: (0, .375) (.25, .375) (.5, .375) (.75, .5) (1, .75); PGR 0, 0, 0, 1/3, 1.
    /// AUC = .25·.375·2 + .25·(.375+.5)/2 + .25·(.5+.75)/2 = .1875 + .109375 + .15625 = .453125.
    /// APGR = (.453125 − .375)/.375 = 0.208333… (= 5/24).
    /// CPT(50 %): between (.75, 1/3) and (1, 1): .75 + .25·(.5−1/3)/(2/3) = .8125.
    /// CPT(80 %): .75 + .25·(.8−1/3)/(2/3) = .925.
    #[test]
    fn hand_computed_bad_router() {
        let rows = [
            r(0.9, 0.5, 0.5),
            r(0.8, 1.0, 1.0),
            r(0.3, 0.0, 0.5),
            r(0.2, 0.0, 1.0),
        ];
        let m = RouteMetrics::of(&rows);
        assert!(close(m.auc, 0.453125), "{m}");
        assert!(close(m.apgr, 5.0 / 24.0), "{m}");
        assert!(close(m.cpt50, 0.8125), "{m}");
        assert!(close(m.cpt80, 0.925), "{m}");
        // The oracle orders S, R, then the zero-gain pair (one tie group).
        let o = RouteMetrics::oracle(&rows);
        // Points (0,.375) (.25,.625) (.5,.75) (1,.75): AUC = .125 + .171875 + .375 = .671875.
        assert!(close(o.auc, 0.671875), "{o}");
        assert!(close(o.cpt50, 0.1875), "{o}");
    }

    #[test]
    fn random_and_constant_scores_are_the_diagonal() {
        let rows = [
            r(0.3, 0.0, 1.0),
            r(0.1, 1.0, 1.0),
            r(0.8, 0.0, 0.0),
            r(0.5, 0.2, 0.9),
        ];
        let m = RouteMetrics::random(&rows);
        assert!(close(m.apgr, 0.5));
        assert!(close(m.cpt50, 0.5));
        assert!(close(m.cpt80, 0.8));
        let qw = (0.0 + 1.0 + 0.0 + 0.2) / 4.0;
        let qs = (1.0 + 1.0 + 0.0 + 0.9) / 4.0;
        assert!(close(m.auc, (qw + qs) / 2.0));
        let c = Curve::new(&rows.map(|x| Routed { score: 7.0, ..x }));
        assert_eq!(c.points.len(), 2);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let empty = Curve::new(&[]);
        assert!(empty.points.is_empty());
        assert_eq!(empty.metrics().apgr, None);
        assert_eq!(empty.auc(), None);
        assert_eq!(empty.cpt(0.5), None);

        // Same average quality: PGR undefined, AUC still defined.
        let flat = [r(0.2, 1.0, 1.0), r(0.9, 0.0, 0.0)];
        let m = RouteMetrics::of(&flat);
        assert_eq!((m.apgr, m.cpt50, m.cpt80), (None, None, None));
        assert!(close(m.auc, 0.5));

        // NaN and infinite scores: NaN ranks first, no panic, shares stay in [0, 1].
        let odd = [
            r(f32::NAN, 0.0, 1.0),
            r(f32::NEG_INFINITY, 1.0, 0.0),
            r(f32::INFINITY, 0.0, 1.0),
            r(0.0, 0.0, 0.0),
            r(-0.0, 0.0, 1.0),
        ];
        let c = Curve::new(&odd);
        // NaN and +∞ share the top key: one group of 2, then the two zeros together.
        let shares: Vec<f64> = c.points.iter().map(|p| p.strong_share).collect();
        assert_eq!(shares, vec![0.0, 0.4, 0.8, 1.0]);
        assert!(c.apgr().is_some_and(f64::is_finite));

        // One prompt.
        let one = RouteMetrics::of(&[r(0.5, 0.0, 1.0)]);
        assert!(close(one.apgr, 0.5));
        assert!(close(one.cpt50, 0.5));
    }

    #[test]
    fn a_perfect_binary_router() {
        // Two of four prompts need the strong model; a router ranking them first reaches full
        // PGR at 50 % strong calls: CPT(50 %) = 25 %, CPT(80 %) = 40 %,
        // APGR = (0.5·(0+1)/2 + 0.5·1) = 0.75.
        let rows = [
            r(0.9, 0.0, 1.0),
            r(0.8, 0.0, 1.0),
            r(0.2, 1.0, 1.0),
            r(0.1, 0.0, 0.0),
        ];
        let m = RouteMetrics::of(&rows);
        assert!(close(m.apgr, 0.75), "{m}");
        assert!(close(m.cpt50, 0.25), "{m}");
        assert!(close(m.cpt80, 0.4), "{m}");
        assert_eq!(cmp_scores_desc(0.9, 0.1), Ordering::Less);
        assert_eq!(cmp_scores_desc(f32::NAN, 5.0), Ordering::Less);
    }
}
