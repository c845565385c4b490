//! slmgate's policy engine: rules, PII detection, budgets, prices and rate limits.
//!
//! **Pure logic**: no IO, no async runtime, no HTTP types, no clock reads. The gateway
//! passes in everything a decision depends on (the request's facts, the current time, a
//! per-request hash for A/B splits), which makes every decision reproducible and
//! property-testable. The config crate embeds the YAML types below and turns the
//! [`PolicyError`] paths into line:column positions.
//!
//! # The `policies:` section
//!
//! ```yaml
//! policies:
//!   default: { route: auto }        # optional; absent = no change
//!   pii:                            # optional; what `when.pii` and `redact` see
//!     kinds: [email, phone, credit_card, iban, ssn, ipv4, ipv6]   # default: all
//!     custom:
//!       - { name: employee_id, regex: "\\bEMP-\\d{6}\\b" }
//!   rules:                          # tried in order; the first match wins
//!     - name: pii-stays-local
//!       when: { pii: [email, credit_card] }            # a list = any of
//!       then: { route: local }
//!     - name: eu-team-deny-gpt4
//!       when: { team: eu, model: [gpt-4o, "gpt-4*"] }  # all conditions must hold; globs
//!       then: { deny: { status: 403, message: "EU team may not use GPT-4" } }
//!     - name: cap-free-tier
//!       when: { tags: [free] }
//!       then: { set: { max_tokens: { max: 256 }, temperature: 0 } }
//!     - name: night-batch
//!       when: { time: { between: "22:00-06:00", tz: UTC } }   # tz: UTC or +02:00; days: [mon]
//!       then: { route: [remote, local] }                      # a fallback chain
//!     - name: ab
//!       when: { model: auto, category: [chitchat], score: { lt: 0.3 } }
//!       then: { split: [ { target: local, weight: 90 }, { target: remote, weight: 10 } ] }
//!     - name: redact
//!       when:
//!         header: { x-data-class: confidential }   # or [a, b], { regex: "..." }, { present: true }
//!         path: /v1/chat/completions
//!         prompt_tokens: { gt: 2000 }              # gt, gte, lt, lte
//!       then: { redact: true, restore: true, cache: { enabled: false } }
//! ```
//!
//! Conditions (`when`, all must hold; string lists mean "any of" and accept `*`/`?` globs):
//! `model`, `key`, `team`, `tags`, `header`, `path`, `target`, `category`, `score`,
//! `prompt_tokens`, `pii` (kinds, or `any`), `time` (`between`, `tz`, `days`). An empty
//! `when` matches every request (so it must be the last rule, and then `default` is unused).
//!
//! Actions (`then`, combinable unless noted): `route` (a target or a fallback chain),
//! `split` (weighted arms; not with `route`), `deny` (`status` 4xx/5xx, `message`; alone),
//! `set` (`max_tokens`, `temperature`, `top_p`, `presence_penalty`, `frequency_penalty`: a
//! number sets, `{ min, max }` clamps), `cache` (`true`/`false` or `{ enabled, ttl,
//! semantic }`), `redact` (`true` or a list of kinds) with `restore`. `then: {}` stops
//! evaluation and changes nothing (an exemption).
//!
//! # Using it
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use slmgate_policies::{KnownTargets, PoliciesConfig, PolicySet, RequestFacts};
//!
//! let cfg: PoliciesConfig = serde_norway::from_str(r#"
//! default: { route: auto }
//! rules:
//!   - name: pii-stays-local
//!     when: { pii: [email, credit_card] }
//!     then: { route: local }
//! "#).unwrap();
//! let policy = PolicySet::compile(&cfg, &KnownTargets::new(["auto", "local", "remote"])).unwrap();
//!
//! let prompt = "My card is 4111 1111 1111 1111";
//! let pii = if policy.needs_pii() { policy.pii().kinds_in(prompt) } else { Vec::new() };
//! let facts = RequestFacts {
//!     model: "auto",
//!     path: "/v1/chat/completions",
//!     pii: &pii,
//!     now: UNIX_EPOCH + Duration::from_secs(1_750_000_000),
//!     ..RequestFacts::default()
//! };
//! let outcome = policy.evaluate(&facts);
//! assert_eq!(outcome.rule_name(), "pii-stays-local");
//! assert_eq!(outcome.route(), Some(&["local".to_string()][..]));
//! ```
//!
//! Errors from [`PolicySet::compile`] carry paths such as
//! `policies.rules[3].when.header.x-foo` and every problem is reported at once.
//!
//! # Modules
//!
//! - [`rules`]: the rule engine ([`PolicySet`], [`RequestFacts`], [`Outcome`]).
//! - [`pii`]: detection, redaction with `[EMAIL_1]` placeholders, restoration (also
//!   streaming).
//! - [`budget`]: USD budgets per key/team per day/month with reservations.
//! - [`pricing`]: the price table and request cost.
//! - [`ratelimit`]: requests/min and tokens/min (GCRA).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod budget;
mod error;
mod glob;
pub mod pii;
pub mod pricing;
pub mod ratelimit;
pub mod rules;
mod time;

pub use error::{render_path, PathSeg, PolicyError};
pub use rules::{KnownTargets, Outcome, PoliciesConfig, PolicySet, RequestFacts};

/// A map keyed by names from the operator's config (keys, teams, models), looked up on every
/// request: no client picks these keys, so a fast non-cryptographic hash is enough (std's
/// SipHash is made for keys an attacker chooses).
pub type NameMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;
