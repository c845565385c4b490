//! The `policies:`, `pricing:` and `teams:` sections, and each key's `budget:` and
//! `rate_limit:`.
//!
//! The YAML types come from the pure [`slmgate_policies`] crate; this module only validates
//! them against the rest of the config and turns the crate's error paths into line:column.
//!
//! ```yaml
//! policies:
//!   rules:
//!     - name: pii-stays-local
//!       when: { pii: [email, credit_card] }
//!       then: { route: local }
//! pricing:                        # USD per 1M tokens, by upstream model name (globs allowed)
//!   gpt-4o-mini: { input: 0.15, output: 0.60 }
//!   local: { input: 0, output: 0 }   # what `kind: local` backends cost; default 0
//! teams:
//!   - { name: research, budget: { monthly_usd: 500 } }
//! keys:
//!   - name: alice
//!     key: ${ALICE_KEY}
//!     team: research
//!     budget: { daily_usd: 5, monthly_usd: 100 }
//!     rate_limit: { requests_per_minute: 60, tokens_per_minute: 100000 }
//! ```

use std::collections::HashSet;

use serde::Deserialize;
use slmgate_policies::budget::BudgetLimits;
use slmgate_policies::{KnownTargets, PathSeg, PolicyError, PolicySet};

use crate::ctx::{key, Ctx};
use crate::positions::Seg;
use crate::validate::item_path;
use crate::Config;

/// A team: a shared budget over every key with `team: <name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    /// The name keys refer to with `team:`.
    pub name: String,
    /// USD per day / month for all the team's keys together. Absent = unlimited.
    #[serde(default)]
    pub budget: Option<BudgetLimits>,
}

/// The names a policy may route to: model aliases, router aliases and backend names.
pub fn known_targets(cfg: &Config) -> KnownTargets {
    let mut known = KnownTargets::default();
    for m in &cfg.models {
        known.insert(m.name.clone());
    }
    if let Some(r) = &cfg.router {
        for a in &r.aliases {
            known.insert(a.clone());
        }
    }
    for b in &cfg.backends {
        known.insert(b.name.clone());
    }
    known
}

/// Compiles the `policies:` section against the config's targets (an empty policy set
/// when the section is absent). Errors carry paths from the document root.
pub fn compile(cfg: &Config) -> Result<PolicySet, Vec<PolicyError>> {
    match &cfg.policies {
        Some(p) => PolicySet::compile(p, &known_targets(cfg)),
        None => Ok(PolicySet::empty()),
    }
}

/// A policies-crate path as a config path.
fn segs(path: &[PathSeg]) -> Vec<Seg> {
    path.iter()
        .map(|s| match s {
            PathSeg::Key(k) => Seg::Key(k.clone()),
            PathSeg::Index(i) => Seg::Index(*i),
        })
        .collect()
}

/// The config path of a key's field as a policies-crate path.
fn path_segs(path: &[Seg]) -> Vec<PathSeg> {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => PathSeg::Key(k.clone()),
            Seg::Index(i) => PathSeg::Index(*i),
        })
        .collect()
}

fn report(ctx: &mut Ctx, errs: Vec<PolicyError>) {
    for e in errs {
        ctx.err(&segs(&e.path), e.message);
    }
}

pub(crate) fn validate(cfg: &Config, ctx: &mut Ctx) {
    if let Err(errs) = compile(cfg) {
        report(ctx, errs);
    }
    report(ctx, cfg.pricing.validate(&[PathSeg::Key("pricing".into())]));

    let mut teams = HashSet::new();
    for (i, t) in cfg.teams.iter().enumerate() {
        let p = |f: &str| vec![key("teams"), Seg::Index(i), key(f)];
        if t.name.is_empty() {
            ctx.err(&p("name"), "must not be empty");
        } else if !teams.insert(t.name.as_str()) {
            ctx.err(&p("name"), format!("duplicate team `{}`", t.name));
        }
        if let Some(b) = &t.budget {
            report(ctx, b.validate(&path_segs(&p("budget"))));
        }
    }

    for (i, k) in cfg.keys.iter().enumerate() {
        if let Some(b) = &k.budget {
            let p = item_path(ctx, "keys", i, "budget");
            report(ctx, b.validate(&path_segs(&p)));
        }
        if let Some(r) = &k.rate_limit {
            let p = item_path(ctx, "keys", i, "rate_limit");
            for (burst, base, set) in [
                (
                    "burst_requests",
                    "requests_per_minute",
                    r.burst_requests.is_some() && r.requests_per_minute.is_none(),
                ),
                (
                    "burst_tokens",
                    "tokens_per_minute",
                    r.burst_tokens.is_some() && r.tokens_per_minute.is_none(),
                ),
            ] {
                if set {
                    let mut bp = p.clone();
                    bp.push(key(burst));
                    ctx.err(&bp, format!("`{burst}` needs `{base}`"));
                }
            }
        }
    }
}
