//! The YAML schema of `policies:` (serde types; every struct denies unknown keys).
//!
//! These types only describe what was written; [`PolicySet::compile`](crate::PolicySet::compile)
//! checks values and references and reports every problem with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::pii::PiiConfig;

/// The `policies:` section: ordered rules (first match wins), a default, and PII detection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Actions when no rule matches. Absent = no change.
    #[serde(default)]
    pub default: Option<Actions>,
    /// Rules, tried in order; the first whose `when` holds decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What the PII detector looks for (conditions `pii:` and the `redact` action use it).
    #[serde(default)]
    pub pii: PiiConfig,
}

/// One rule: a name, conditions and actions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name, reported in the outcome (and so in logs and headers).
    pub name: String,
    /// Conditions, all of which must hold. Absent or `{}` = matches every request.
    #[serde(default)]
    pub when: Conditions,
    /// What to do when the rule matches. `{}` = stop here and change nothing.
    pub then: Actions,
}

/// Conditions of a rule. Every condition present must hold; a list means "any of".
///
/// String conditions accept globs (`*`, `?`). A condition on a fact the request does not have
/// (no key, no router decision) does not hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// The `model` the client asked for (an alias such as `auto`, `local`, `gpt-4*`).
    #[serde(default)]
    pub model: Option<OneOrMany>,
    /// The client key's name.
    #[serde(default)]
    pub key: Option<OneOrMany>,
    /// The client key's team.
    #[serde(default)]
    pub team: Option<OneOrMany>,
    /// Any of the key's tags.
    #[serde(default)]
    pub tags: Option<OneOrMany>,
    /// Request headers, by (case-insensitive) name; all listed headers must match.
    #[serde(default)]
    pub header: Option<BTreeMap<String, HeaderMatch>>,
    /// The request path, e.g. `/v1/chat/completions`.
    #[serde(default)]
    pub path: Option<OneOrMany>,
    /// The router's decision: the target it picked.
    #[serde(default)]
    pub target: Option<OneOrMany>,
    /// The router's decision: the category label it gave.
    #[serde(default)]
    pub category: Option<OneOrMany>,
    /// The router's decision: its score.
    #[serde(default)]
    pub score: Option<Range>,
    /// Estimated prompt tokens.
    #[serde(default)]
    pub prompt_tokens: Option<Range>,
    /// PII kinds found in the request (any of); `any` = any kind at all.
    #[serde(default)]
    pub pii: Option<OneOrMany>,
    /// Time-of-day window.
    #[serde(default)]
    pub time: Option<TimeWindow>,
}

impl Conditions {
    /// Returns true if and only if no condition is set, i.e. the rule matches every request.
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// Returns true if and only if `self` and `other` state the same conditions, up to the
    /// order of "any of" lists and one-vs-list spelling (`model: x` = `model: [x]`).
    pub fn same_as(&self, other: &Conditions) -> bool {
        fn set(v: &Option<OneOrMany>) -> Option<BTreeSet<&str>> {
            v.as_ref()
                .map(|v| v.as_slice().iter().map(String::as_str).collect())
        }
        fn hdr(v: &Option<BTreeMap<String, HeaderMatch>>) -> Option<BTreeMap<String, HeaderMatch>> {
            v.as_ref().map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            HeaderMatch::Equals(vals) => {
                                let mut vals = vals.clone();
                                vals.sort();
                                vals.dedup();
                                HeaderMatch::Equals(vals)
                            }
                            other => other.clone(),
                        };
                        (k.to_ascii_lowercase(), v)
                    })
                    .collect()
            })
        }
        let same_time = match (&self.time, &other.time) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.between.trim() == b.between.trim() && a.tz == b.tz && set(&a.days) == set(&b.days)
            }
            _ => false,
        };
        set(&self.model) == set(&other.model)
            && set(&self.key) == set(&other.key)
            && set(&self.team) == set(&other.team)
            && set(&self.tags) == set(&other.tags)
            && hdr(&self.header) == hdr(&other.header)
            && set(&self.path) == set(&other.path)
            && set(&self.target) == set(&other.target)
            && set(&self.category) == set(&other.category)
            && self.score == other.score
            && self.prompt_tokens == other.prompt_tokens
            && set(&self.pii) == set(&other.pii)
            && same_time
    }
}

/// A string or a list of strings (`model: auto` or `model: [gpt-4o, "gpt-4*"]`).
///
/// Numbers and booleans are read as strings, so `tags: [2024]` works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list; empty lists are rejected by validation.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, one or many.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A string, or a number or boolean read as one.
struct Stringish(String);

impl<'de> Deserialize<'de> for Stringish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringishVisitor).map(Stringish)
    }
}

struct StringishVisitor;

impl Visitor<'_> for StringishVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

pub(crate) fn de_opt_stringish<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<Stringish>::deserialize(d)?.map(|s| s.0))
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(Stringish(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// How a header must look: exact value(s), a regex, or presence.
///
/// `x-data-class: confidential`, `x-env: [prod, staging]`, `x-user: { regex: "^ops-" }`,
/// `x-debug: { present: true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// The value equals one of these (case-sensitive).
    Equals(Vec<String>),
    /// The value matches this regex (unanchored; use `^…$` for a whole-value match).
    Regex(String),
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderMatchMap {
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    present: Option<bool>,
}

impl<'de> Deserialize<'de> for HeaderMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderMatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a value, a list of values, `{ regex: ... }` or `{ present: true|false }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderMatch, E> {
                Ok(HeaderMatch::Equals(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderMatch, E> {
                Ok(HeaderMatch::Equals(vec![v.to_string()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderMatch, E> {
                Ok(HeaderMatch::Equals(vec![v.to_string()]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HeaderMatch, E> {
                Ok(HeaderMatch::Equals(vec![v.to_string()]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderMatch, E> {
                Ok(HeaderMatch::Equals(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderMatch, A::Error> {
                let mut out = Vec::new();
                while let Some(Stringish(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(HeaderMatch::Equals(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderMatch, A::Error> {
                let m = HeaderMatchMap::deserialize(MapAccessDeserializer::new(map))?;
                match (m.regex, m.present) {
                    (Some(r), None) => Ok(HeaderMatch::Regex(r)),
                    (None, Some(p)) => Ok(HeaderMatch::Present(p)),
                    _ => Err(de::Error::custom(
                        "expected exactly one of `regex` or `present`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A numeric range; every bound given must hold (`{ gt: 2000 }`, `{ gte: 0.2, lt: 0.5 }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Greater than.
    #[serde(default)]
    pub gt: Option<f64>,
    /// Greater than or equal.
    #[serde(default)]
    pub gte: Option<f64>,
    /// Less than.
    #[serde(default)]
    pub lt: Option<f64>,
    /// Less than or equal.
    #[serde(default)]
    pub lte: Option<f64>,
}

impl Range {
    /// Returns true if and only if `v` satisfies every bound.
    pub fn contains(&self, v: f64) -> bool {
        self.gt.is_none_or(|b| v > b)
            && self.gte.is_none_or(|b| v >= b)
            && self.lt.is_none_or(|b| v < b)
            && self.lte.is_none_or(|b| v <= b)
    }
}

/// A time-of-day window: `{ between: "22:00-06:00", tz: UTC, days: [mon, tue] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// `HH:MM-HH:MM`, start inclusive, end exclusive; wraps past midnight when end < start.
    pub between: String,
    /// `UTC` (default), `Z`, or a fixed offset: `+02:00`, `-0530`, `UTC+2`.
    #[serde(default, deserialize_with = "de_opt_stringish")]
    pub tz: Option<String>,
    /// Days of the week (in `tz`) on which the window applies: `mon`…`sun` or full names.
    /// Absent = every day. The day is the one at evaluation time, so with `22:00-06:00`
    /// and `days: [fri]`, Friday 23:00 matches and Saturday 03:00 does not.
    #[serde(default)]
    pub days: Option<OneOrMany>,
}

/// What a matching rule (or the default) does. Compatible actions combine (`set` + `route`);
/// `deny` stands alone, and `route` excludes `split`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// Send to this target, or try these in order (a fallback chain).
    #[serde(default)]
    pub route: Option<OneOrMany>,
    /// Refuse the request.
    #[serde(default)]
    pub deny: Option<Deny>,
    /// Set or cap request parameters.
    #[serde(default)]
    pub set: Option<SetParams>,
    /// Response cache behaviour.
    #[serde(default)]
    pub cache: Option<CacheSetting>,
    /// Replace PII in the prompt with placeholders before forwarding: `true`, or a list of kinds.
    #[serde(default)]
    pub redact: Option<RedactSetting>,
    /// Put redacted values back into the response (needs `redact`).
    #[serde(default)]
    pub restore: Option<bool>,
    /// Weighted choice between targets (A/B tests).
    #[serde(default)]
    pub split: Option<Vec<SplitArm>>,
}

impl Actions {
    /// Returns true if and only if no action is set.
    pub fn is_empty(&self) -> bool {
        *self == Actions::default()
    }
}

/// `deny: { status: 403, message: "..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deny {
    /// HTTP status, 400–599. Default 403.
    #[serde(default = "default_deny_status")]
    pub status: u16,
    /// Message for the client. Default: "request denied by policy `<rule>`".
    #[serde(default)]
    pub message: Option<String>,
}

fn default_deny_status() -> u16 {
    403
}

/// Parameters a rule may set or cap: `{ max_tokens: { max: 256 }, temperature: 0 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetParams {
    /// `max_tokens` (also governs `max_completion_tokens`): whole number ≥ 1.
    #[serde(default)]
    pub max_tokens: Option<ParamAction>,
    /// `temperature`: 0–2.
    #[serde(default)]
    pub temperature: Option<ParamAction>,
    /// `top_p`: 0–1.
    #[serde(default)]
    pub top_p: Option<ParamAction>,
    /// `presence_penalty`: −2–2.
    #[serde(default)]
    pub presence_penalty: Option<ParamAction>,
    /// `frequency_penalty`: −2–2.
    #[serde(default)]
    pub frequency_penalty: Option<ParamAction>,
}

impl SetParams {
    /// Returns true if and only if no parameter is set.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The parameters that are set, by their OpenAI field name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, ParamAction)> + '_ {
        [
            ("max_tokens", self.max_tokens),
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ]
        .into_iter()
        .filter_map(|(n, a)| a.map(|a| (n, a)))
    }
}

/// A number sets the parameter; `{ max: n }` / `{ min: n }` clamps what the client sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamAction {
    /// Always this value.
    Set(f64),
    /// Clamp into `[min, max]`. A request that sent no value gets `max` when there is one
    /// (a cap must bound requests that rely on the upstream default), else nothing.
    Clamp {
        /// Lower bound.
        min: Option<f64>,
        /// Upper bound.
        max: Option<f64>,
    },
}

impl ParamAction {
    /// The value to send, given what the client sent (`None` = leave the field out).
    pub fn apply(&self, current: Option<f64>) -> Option<f64> {
        match *self {
            ParamAction::Set(v) => Some(v),
            ParamAction::Clamp { min, max } => match current {
                None => max,
                Some(mut v) => {
                    if let Some(hi) = max {
                        v = v.min(hi);
                    }
                    if let Some(lo) = min {
                        v = v.max(lo);
                    }
                    Some(v)
                }
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClampMap {
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

impl<'de> Deserialize<'de> for ParamAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamAction;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or `{ min: n, max: n }`")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamAction, E> {
                Ok(ParamAction::Set(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamAction, E> {
                Ok(ParamAction::Set(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamAction, E> {
                Ok(ParamAction::Set(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ParamAction, A::Error> {
                let m = ClampMap::deserialize(MapAccessDeserializer::new(map))?;
                if m.min.is_none() && m.max.is_none() {
                    return Err(de::Error::custom("expected `min`, `max` or both"));
                }
                Ok(ParamAction::Clamp {
                    min: m.min,
                    max: m.max,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `cache: false`, `cache: true`, or `cache: { enabled: true, ttl: 10m, semantic: false }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSetting {
    /// Use the cache (lookup and store). Absent = true when other fields are given.
    pub enabled: Option<bool>,
    /// Entry lifetime, e.g. `30s`, `10m`, `1h`.
    pub ttl: Option<String>,
    /// Also use the semantic (embedding) cache.
    pub semantic: Option<bool>,
}

impl<'de> Deserialize<'de> for CacheSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_cache(d)
    }
}

fn de_cache<'de, D: Deserializer<'de>>(d: D) -> Result<CacheSetting, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = CacheSetting;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true, false, or `{ enabled, ttl, semantic }`")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<CacheSetting, E> {
            Ok(CacheSetting {
                enabled: Some(v),
                ..CacheSetting::default()
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CacheSetting, A::Error> {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct M {
                #[serde(default)]
                enabled: Option<bool>,
                #[serde(default, deserialize_with = "de_opt_stringish")]
                ttl: Option<String>,
                #[serde(default)]
                semantic: Option<bool>,
            }
            let m = M::deserialize(MapAccessDeserializer::new(map))?;
            Ok(CacheSetting {
                enabled: m.enabled,
                ttl: m.ttl,
                semantic: m.semantic,
            })
        }
    }
    d.deserialize_any(V)
}

/// `redact: true` (every detected kind), `redact: false`, or `redact: [email, phone]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactSetting {
    /// Redact every kind the detector finds (`true`), or nothing (`false`).
    All(bool),
    /// Redact only these kinds.
    Kinds(Vec<String>),
}

impl<'de> Deserialize<'de> for RedactSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RedactSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a list of PII kinds")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RedactSetting, E> {
                Ok(RedactSetting::All(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RedactSetting, E> {
                Ok(RedactSetting::Kinds(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RedactSetting, A::Error> {
                let mut out = Vec::new();
                while let Some(Stringish(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(RedactSetting::Kinds(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One arm of a weighted `split`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// Target, or fallback chain, for this arm.
    pub target: OneOrMany,
    /// Relative weight (0 = never chosen).
    pub weight: u32,
}
