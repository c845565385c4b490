//! Validation and compilation of `policies:` into a [`PolicySet`].

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use regex::RegexBuilder;

use super::config::*;
use super::eval::{CacheDirective, Cond, DenyAction, Effect, HeaderCond, RedactDirective};
use super::window::{parse_between, parse_day, parse_tz, Window};
use super::{KnownTargets, PolicySet};
use crate::error::{did_you_mean, Errors, Path};
use crate::glob::{is_glob, Matcher};
use crate::pii::{one_line, PiiConfig, PiiDetector, PiiKind};
use crate::PolicyError;

/// Largest compiled program accepted for a header regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) conds: Vec<Cond>,
    pub(crate) effect: Arc<Effect>,
}

struct Ctx<'a> {
    known: &'a KnownTargets,
    pii: &'a PiiConfig,
    errs: Errors,
}

pub(crate) fn compile(
    cfg: &PoliciesConfig,
    known: &KnownTargets,
) -> Result<PolicySet, Vec<PolicyError>> {
    let root = Path::root(&["policies"]);
    let mut cx = Ctx {
        known,
        pii: &cfg.pii,
        errs: Errors::default(),
    };
    let detector = match PiiDetector::new_at(&cfg.pii, &root.key("pii")) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.errs.extend(e);
            None
        }
    };

    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(cfg.rules.len());
    let mut catch_all: Option<usize> = None;
    let mut needs_pii = false;
    let mut needs_decision = false;
    let mut headers = BTreeSet::new();
    for (i, rule) in cfg.rules.iter().enumerate() {
        let p = root.key("rules").idx(i);
        if rule.name.trim().is_empty() {
            cx.errs
                .push(&p.key("name"), "a rule needs a non-empty name");
        } else if rule.name == "default" {
            cx.errs.push(
                &p.key("name"),
                "`default` is reserved for the default outcome; choose another name",
            );
        } else if !names.insert(rule.name.as_str()) {
            cx.errs.push(
                &p.key("name"),
                format!("duplicate rule name `{}`", rule.name),
            );
        }
        if let Some(k) = catch_all {
            cx.errs.push(
                &p,
                format!(
                    "unreachable: rule `{}` (rules[{k}]) has no conditions and matches every request first",
                    cfg.rules[k].name
                ),
            );
        } else if let Some(k) = (!rule.when.is_empty())
            .then(|| {
                cfg.rules[..i]
                    .iter()
                    .position(|r| r.when.same_as(&rule.when))
            })
            .flatten()
        {
            cx.errs.push(
                &p,
                format!(
                    "unreachable: rule `{}` (rules[{k}]) has the same conditions and matches first",
                    cfg.rules[k].name
                ),
            );
        }
        if rule.when.is_empty() && catch_all.is_none() {
            catch_all = Some(i);
        }
        let w = &rule.when;
        needs_pii |= w.pii.is_some() || redacts(&rule.then);
        needs_decision |= w.target.is_some() || w.category.is_some() || w.score.is_some();
        if let Some(h) = &w.header {
            headers.extend(h.keys().map(|k| k.to_ascii_lowercase()));
        }
        let conds = cx.conditions(w, &p.key("when"));
        let effect = cx.actions(&rule.then, &p.key("then"), &rule.name);
        rules.push(CompiledRule {
            name: rule.name.as_str().into(),
            conds,
            effect: Arc::new(effect),
        });
    }

    let default = match &cfg.default {
        Some(actions) => {
            let p = root.key("default");
            if let Some(k) = catch_all {
                cx.errs.push(
                    &p,
                    format!(
                        "never used: rule `{}` (rules[{k}]) has no conditions and matches every request",
                        cfg.rules[k].name
                    ),
                );
            }
            needs_pii |= redacts(actions);
            cx.actions(actions, &p, "")
        }
        None => Effect::default(),
    };

    match detector {
        Some(pii) if cx.errs.is_empty() => Ok(PolicySet {
            rules,
            default: Arc::new(default),
            pii,
            needs_pii,
            needs_decision,
            headers: headers.into_iter().collect(),
        }),
        _ => Err(cx.errs.0),
    }
}

fn redacts(a: &Actions) -> bool {
    !matches!(a.redact, None | Some(RedactSetting::All(false)))
}

/// The values of a one-or-many with the path of each.
fn each<'a>(v: &'a OneOrMany, p: &Path) -> Vec<(Path, &'a str)> {
    match v {
        OneOrMany::One(s) => vec![(p.clone(), s.as_str())],
        OneOrMany::Many(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| (p.idx(i), s.as_str()))
            .collect(),
    }
}

impl Ctx<'_> {
    fn non_empty(&mut self, v: &OneOrMany, p: &Path) -> bool {
        if v.as_slice().is_empty() {
            self.errs.push(
                p,
                "an empty list never matches: add values or remove the condition",
            );
            false
        } else {
            true
        }
    }

    fn matcher(&mut self, v: &OneOrMany, p: &Path) -> Matcher {
        self.non_empty(v, p);
        Matcher::new(v.as_slice().iter().map(String::as_str))
    }

    fn target(&mut self, name: &str, p: &Path) {
        if !self.known.contains(name) {
            let known: Vec<&str> = self.known.iter().collect();
            self.errs.push(
                p,
                format!(
                    "unknown target `{name}`{}; known: {}",
                    did_you_mean(name, known.iter().copied()),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }

    fn targets(&mut self, v: &OneOrMany, p: &Path) -> Vec<String> {
        if !self.non_empty(v, p) {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        for (pp, t) in each(v, p) {
            self.target(t, &pp);
            if !seen.insert(t) {
                self.errs
                    .push(&pp, format!("`{t}` appears twice in the same chain"));
            }
        }
        v.as_slice().to_vec()
    }

    fn pii_kind(&mut self, name: &str, p: &Path) -> Option<PiiKind> {
        if let Some(k) = PiiKind::builtin(name) {
            if self.pii.kinds.iter().any(|b| PiiKind::from(*b) == k) {
                return Some(k);
            }
            self.errs.push(
                p,
                format!("PII kind `{name}` is not detected: add it to policies.pii.kinds"),
            );
            return None;
        }
        if self.pii.custom.iter().any(|c| c.name == name) {
            return Some(PiiKind::Custom(name.into()));
        }
        let mut names: Vec<String> = self
            .pii
            .kinds
            .iter()
            .map(|b| PiiKind::from(*b).name().to_string())
            .collect();
        names.extend(self.pii.custom.iter().map(|c| c.name.clone()));
        self.errs.push(
            p,
            format!(
                "unknown PII kind `{name}`{}",
                did_you_mean(name, names.iter().map(String::as_str))
            ),
        );
        None
    }

    fn range(&mut self, r: &Range, p: &Path) -> Range {
        let bounds = [("gt", r.gt), ("gte", r.gte), ("lt", r.lt), ("lte", r.lte)];
        if bounds.iter().all(|(_, b)| b.is_none()) {
            self.errs
                .push(p, "a range needs at least one of gt, gte, lt, lte");
        }
        for (name, b) in bounds {
            if b.is_some_and(|b| !b.is_finite()) {
                self.errs.push(&p.key(name), "must be a finite number");
            }
        }
        // The tightest lower and upper bounds, and whether each is strict.
        let lo = match (r.gt, r.gte) {
            (Some(a), Some(b)) if a >= b => Some((a, true)),
            (_, Some(b)) => Some((b, false)),
            (Some(a), None) => Some((a, true)),
            (None, None) => None,
        };
        let hi = match (r.lt, r.lte) {
            (Some(a), Some(b)) if a <= b => Some((a, true)),
            (_, Some(b)) => Some((b, false)),
            (Some(a), None) => Some((a, true)),
            (None, None) => None,
        };
        if let (Some((l, ls)), Some((h, hs))) = (lo, hi) {
            if l > h || (l == h && (ls || hs)) {
                self.errs
                    .push(p, "the range is empty: no value satisfies every bound");
            }
        }
        *r
    }

    fn conditions(&mut self, w: &Conditions, p: &Path) -> Vec<Cond> {
        let mut conds = Vec::new();
        if let Some(v) = &w.model {
            conds.push(Cond::Model(self.matcher(v, &p.key("model"))));
        }
        if let Some(v) = &w.key {
            conds.push(Cond::Key(self.matcher(v, &p.key("key"))));
        }
        if let Some(v) = &w.team {
            conds.push(Cond::Team(self.matcher(v, &p.key("team"))));
        }
        if let Some(v) = &w.tags {
            conds.push(Cond::Tags(self.matcher(v, &p.key("tags"))));
        }
        if let Some(v) = &w.path {
            conds.push(Cond::Path(self.matcher(v, &p.key("path"))));
        }
        if let Some(v) = &w.target {
            let pp = p.key("target");
            for (tp, t) in each(v, &pp) {
                if !is_glob(t) {
                    self.target(t, &tp);
                }
            }
            conds.push(Cond::Target(self.matcher(v, &pp)));
        }
        if let Some(v) = &w.category {
            conds.push(Cond::Category(self.matcher(v, &p.key("category"))));
        }
        if let Some(h) = &w.header {
            let hp = p.key("header");
            if h.is_empty() {
                self.errs
                    .push(&hp, "no headers listed: add some or remove the condition");
            }
            for (name, m) in h {
                let np = hp.key(name);
                let valid_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !valid_name {
                    self.errs
                        .push(&np, format!("`{name}` is not a valid header name"));
                }
                let cond = match m {
                    HeaderMatch::Equals(vals) => {
                        if vals.is_empty() {
                            self.errs.push(
                                &np,
                                "an empty list never matches: add values or remove the header",
                            );
                        }
                        HeaderCond::Equals(vals.clone())
                    }
                    HeaderMatch::Present(b) => HeaderCond::Present(*b),
                    HeaderMatch::Regex(r) => {
                        match RegexBuilder::new(r).size_limit(REGEX_SIZE_LIMIT).build() {
                            Ok(re) => HeaderCond::Regex(re),
                            Err(e) => {
                                self.errs
                                    .push(&np, format!("invalid regex: {}", one_line(&e)));
                                continue;
                            }
                        }
                    }
                };
                conds.push(Cond::Header(name.to_ascii_lowercase().into(), cond));
            }
        }
        if let Some(r) = &w.score {
            conds.push(Cond::Score(self.range(r, &p.key("score"))));
        }
        if let Some(r) = &w.prompt_tokens {
            conds.push(Cond::PromptTokens(self.range(r, &p.key("prompt_tokens"))));
        }
        if let Some(v) = &w.pii {
            let pp = p.key("pii");
            if self.non_empty(v, &pp) {
                let any = v.as_slice().iter().any(|s| s == "any");
                if any && v.as_slice().len() > 1 {
                    self.errs
                        .push(&pp, "`any` already covers every kind: list it alone");
                }
                if any {
                    conds.push(Cond::Pii(None));
                } else {
                    let kinds: Vec<PiiKind> = each(v, &pp)
                        .into_iter()
                        .filter_map(|(kp, k)| self.pii_kind(k, &kp))
                        .collect();
                    conds.push(Cond::Pii(Some(kinds)));
                }
            }
        }
        if let Some(t) = &w.time {
            if let Some(win) = self.window(t, &p.key("time")) {
                conds.push(Cond::Time(win));
            }
        }
        conds
    }

    fn window(&mut self, t: &TimeWindow, p: &Path) -> Option<Window> {
        let between = parse_between(&t.between)
            .map_err(|e| self.errs.push(&p.key("between"), e))
            .ok();
        let offset = match &t.tz {
            Some(tz) => parse_tz(tz)
                .map_err(|e| self.errs.push(&p.key("tz"), e))
                .ok(),
            None => Some(0),
        };
        let mut days = 0x7fu8;
        if let Some(d) = &t.days {
            let dp = p.key("days");
            if self.non_empty(d, &dp) {
                days = 0;
                for (pp, name) in each(d, &dp) {
                    match parse_day(name) {
                        Ok(n) => days |= 1 << n,
                        Err(e) => self.errs.push(&pp, e),
                    }
                }
            }
        }
        let (start, end) = between?;
        Some(Window::new(start, end, offset?, days))
    }

    fn actions(&mut self, a: &Actions, p: &Path, rule: &str) -> Effect {
        let mut e = Effect::default();
        if let Some(d) = &a.deny {
            let others: Vec<&str> = [
                ("route", a.route.is_some()),
                ("set", a.set.is_some()),
                ("cache", a.cache.is_some()),
                ("redact", a.redact.is_some()),
                ("restore", a.restore.is_some()),
                ("split", a.split.is_some()),
            ]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
            if !others.is_empty() {
                self.errs.push(
                    &p.key("deny"),
                    format!(
                        "`deny` ends the request and cannot be combined with {}",
                        others
                            .iter()
                            .map(|o| format!("`{o}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if !(400..=599).contains(&d.status) {
                self.errs.push(
                    &p.key("deny").key("status"),
                    format!("{} is not an error status: use 400–599", d.status),
                );
            }
            let message = d.message.clone().unwrap_or_else(|| {
                if rule.is_empty() {
                    "request denied by the default policy".to_string()
                } else {
                    format!("request denied by policy `{rule}`")
                }
            });
            e.deny = Some(DenyAction {
                status: d.status,
                message,
            });
        }
        if let Some(r) = &a.route {
            e.route = Some(self.targets(r, &p.key("route")));
        }
        if let Some(arms) = &a.split {
            let sp = p.key("split");
            if a.route.is_some() {
                self.errs.push(
                    &sp,
                    "`split` and `route` both choose the target: use one of them",
                );
            }
            let mut cum = 0u64;
            let mut out = Vec::with_capacity(arms.len());
            for (i, arm) in arms.iter().enumerate() {
                let t = self.targets(&arm.target, &sp.idx(i).key("target"));
                cum += u64::from(arm.weight);
                out.push((t, cum));
            }
            if arms.is_empty() {
                self.errs.push(&sp, "a split needs at least one arm");
            } else if cum == 0 {
                self.errs.push(
                    &sp,
                    "the weights sum to 0: at least one arm needs a weight > 0",
                );
            }
            e.split = Some(out);
        }
        if let Some(s) = &a.set {
            self.params(s, &p.key("set"));
            e.params = *s;
        }
        if let Some(c) = &a.cache {
            e.cache = self.cache(c, &p.key("cache"));
        }
        let redact_on = redacts(a);
        if let Some(r) = &a.redact {
            let kinds = match r {
                RedactSetting::All(_) => None,
                RedactSetting::Kinds(list) => {
                    let rp = p.key("redact");
                    if list.is_empty() {
                        self.errs.push(
                            &rp,
                            "an empty list redacts nothing: list kinds or use `redact: true`",
                        );
                    }
                    let as_one = OneOrMany::Many(list.clone());
                    Some(
                        each(&as_one, &rp)
                            .into_iter()
                            .filter_map(|(kp, k)| self.pii_kind(k, &kp))
                            .collect(),
                    )
                }
            };
            if redact_on {
                e.redact = Some(RedactDirective {
                    kinds,
                    restore: a.restore.unwrap_or(false),
                });
            }
        }
        if a.restore == Some(true) && !redact_on {
            self.errs.push(
                &p.key("restore"),
                "`restore` puts redacted values back: it needs `redact`",
            );
        }
        e
    }

    fn params(&mut self, s: &SetParams, p: &Path) {
        type Check = fn(f64) -> bool;
        let specs: [(&str, Option<ParamAction>, Check, &str); 5] = [
            (
                "max_tokens",
                s.max_tokens,
                |v| v >= 1.0 && v.fract() == 0.0 && v <= 1e9,
                "a whole number ≥ 1",
            ),
            (
                "temperature",
                s.temperature,
                |v| (0.0..=2.0).contains(&v),
                "between 0 and 2",
            ),
            (
                "top_p",
                s.top_p,
                |v| (0.0..=1.0).contains(&v),
                "between 0 and 1",
            ),
            (
                "presence_penalty",
                s.presence_penalty,
                |v| (-2.0..=2.0).contains(&v),
                "between -2 and 2",
            ),
            (
                "frequency_penalty",
                s.frequency_penalty,
                |v| (-2.0..=2.0).contains(&v),
                "between -2 and 2",
            ),
        ];
        if s.is_empty() {
            self.errs
                .push(p, "nothing to set: remove `set` or add a parameter");
        }
        for (name, action, ok, want) in specs {
            let pp = p.key(name);
            match action {
                None => {}
                Some(ParamAction::Set(v)) if !ok(v) => {
                    self.errs
                        .push(&pp, format!("{v} is out of range: must be {want}"));
                }
                Some(ParamAction::Set(_)) => {}
                Some(ParamAction::Clamp { min, max }) => {
                    for (b, v) in [("min", min), ("max", max)] {
                        if let Some(v) = v.filter(|v| !ok(*v)) {
                            self.errs
                                .push(&pp.key(b), format!("{v} is out of range: must be {want}"));
                        }
                    }
                    if let (Some(lo), Some(hi)) = (min, max) {
                        if lo > hi {
                            self.errs
                                .push(&pp, format!("min {lo} is greater than max {hi}"));
                        }
                    }
                }
            }
        }
    }

    fn cache(&mut self, c: &CacheSetting, p: &Path) -> Option<CacheDirective> {
        let enabled = c.enabled.unwrap_or(true);
        if !enabled && (c.ttl.is_some() || c.semantic.is_some()) {
            self.errs.push(
                p,
                "`ttl` and `semantic` have no effect with `enabled: false`",
            );
        }
        let ttl = match &c.ttl {
            None => None,
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) if d.is_zero() => {
                    self.errs.push(
                        &p.key("ttl"),
                        "a TTL of 0 caches nothing: use `enabled: false`",
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    self.errs.push(
                        &p.key("ttl"),
                        format!("`{t}` is not a duration like 30s, 10m or 1h: {e}"),
                    );
                    None
                }
            },
        };
        Some(CacheDirective {
            enabled,
            ttl,
            semantic: c.semantic,
        })
    }
}
