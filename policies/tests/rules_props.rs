//! Property tests of the rule engine against a small reference model: first-match semantics,
//! the default when nothing matches, and validation accepting exactly the valid rule sets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use slmgate_policies::pii::PiiKind;
use slmgate_policies::rules::{
    Actions, Conditions, Deny, HeaderMatch, OneOrMany, Range, Rule, SplitArm, TimeWindow,
};
use slmgate_policies::{KnownTargets, PoliciesConfig, PolicySet, RequestFacts};

const MODELS: [&str; 6] = ["auto", "local", "remote", "gpt-4o", "gpt-4-turbo", "other"];
const MODEL_PATTERNS: [&str; 6] = ["auto", "local", "remote", "gpt-4o", "gpt-4*", "*"];
const TEAMS: [&str; 3] = ["eu", "us", "apac"];
const TAGS: [&str; 3] = ["free", "beta", "pro"];
const CATEGORIES: [&str; 3] = ["chitchat", "code", "math"];
const TARGETS: [&str; 2] = ["local", "remote"];
const PII: [PiiKind; 3] = [PiiKind::Email, PiiKind::Phone, PiiKind::CreditCard];

fn known() -> KnownTargets {
    KnownTargets::new(["auto", "local", "remote"])
}

/// A condition in the reference model.
#[derive(Debug, Clone)]
enum C {
    Model(Vec<usize>),
    Team(usize),
    Tags(Vec<usize>),
    Category(usize),
    Target(usize),
    ScoreLt(f64),
    TokensGt(u64),
    Pii(Vec<usize>),
    Header(bool),
    /// Hours [start, end) UTC, may wrap.
    Time(u64, u64),
}

#[derive(Debug, Clone)]
struct F {
    model: usize,
    team: Option<usize>,
    tags: Vec<usize>,
    category: Option<usize>,
    target: Option<usize>,
    score: Option<f64>,
    tokens: u64,
    pii: Vec<usize>,
    header: Option<bool>,
    hour: u64,
    hash: u64,
}

fn glob_ref(pattern: &str, s: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => pattern == s,
    }
}

/// Reference semantics of one condition.
fn holds(c: &C, f: &F) -> bool {
    match c {
        C::Model(ps) => ps
            .iter()
            .any(|&p| glob_ref(MODEL_PATTERNS[p], MODELS[f.model])),
        C::Team(t) => f.team == Some(*t),
        C::Tags(ts) => f.tags.iter().any(|t| ts.contains(t)),
        C::Category(c) => f.category == Some(*c),
        C::Target(t) => f.target == Some(*t),
        C::ScoreLt(x) => f.score.is_some_and(|s| s < *x),
        C::TokensGt(n) => f.tokens > *n,
        C::Pii(ks) => f.pii.iter().any(|k| ks.contains(k)),
        C::Header(v) => f.header == Some(*v),
        C::Time(a, b) => {
            if a < b {
                *a <= f.hour && f.hour < *b
            } else {
                f.hour >= *a || f.hour < *b
            }
        }
    }
}

fn om(v: Vec<String>) -> OneOrMany {
    if v.len() == 1 {
        OneOrMany::One(v[0].clone())
    } else {
        OneOrMany::Many(v)
    }
}

fn to_conditions(cs: &[C]) -> Conditions {
    let mut w = Conditions::default();
    for c in cs {
        match c {
            C::Model(ps) => {
                w.model = Some(om(ps
                    .iter()
                    .map(|&p| MODEL_PATTERNS[p].to_string())
                    .collect()));
            }
            C::Team(t) => w.team = Some(OneOrMany::One(TEAMS[*t].into())),
            C::Tags(ts) => w.tags = Some(om(ts.iter().map(|&t| TAGS[t].to_string()).collect())),
            C::Category(c) => w.category = Some(OneOrMany::One(CATEGORIES[*c].into())),
            C::Target(t) => w.target = Some(OneOrMany::One(TARGETS[*t].into())),
            C::ScoreLt(x) => {
                w.score = Some(Range {
                    lt: Some(*x),
                    ..Range::default()
                });
            }
            C::TokensGt(n) => {
                w.prompt_tokens = Some(Range {
                    gt: Some(*n as f64),
                    ..Range::default()
                });
            }
            C::Pii(ks) => w.pii = Some(om(ks.iter().map(|&k| PII[k].name().to_string()).collect())),
            C::Header(v) => {
                let mut h = BTreeMap::new();
                h.insert(
                    "x-flag".to_string(),
                    HeaderMatch::Equals(vec![v.to_string()]),
                );
                w.header = Some(h);
            }
            C::Time(a, b) => {
                w.time = Some(TimeWindow {
                    between: format!("{a:02}:00-{b:02}:00"),
                    tz: Some("UTC".into()),
                    days: None,
                });
            }
        }
    }
    w
}

fn cond() -> impl Strategy<Value = C> {
    prop_oneof![
        prop::collection::btree_set(0..MODEL_PATTERNS.len() - 1, 1..3)
            .prop_map(|s| C::Model(s.into_iter().collect())),
        (0..TEAMS.len()).prop_map(C::Team),
        prop::collection::btree_set(0..TAGS.len(), 1..3)
            .prop_map(|s| C::Tags(s.into_iter().collect())),
        (0..CATEGORIES.len()).prop_map(C::Category),
        (0..TARGETS.len()).prop_map(C::Target),
        (1..10u32).prop_map(|x| C::ScoreLt(f64::from(x) / 10.0)),
        (0..4u64).prop_map(|n| C::TokensGt(n * 500)),
        prop::collection::btree_set(0..PII.len(), 1..3)
            .prop_map(|s| C::Pii(s.into_iter().collect())),
        any::<bool>().prop_map(C::Header),
        (0..24u64, 0..24u64)
            .prop_filter("non-empty window", |(a, b)| a != b)
            .prop_map(|(a, b)| C::Time(a, b)),
    ]
}

/// One to three conditions, at most one of each kind (a later one would replace an earlier one
/// in the YAML struct).
fn conds() -> impl Strategy<Value = Vec<C>> {
    prop::collection::vec(cond(), 1..4).prop_map(|cs| {
        let mut seen = std::collections::HashSet::new();
        cs.into_iter()
            .filter(|c| seen.insert(std::mem::discriminant(c)))
            .collect()
    })
}

fn facts() -> impl Strategy<Value = F> {
    (
        (
            0..MODELS.len(),
            prop::option::of(0..TEAMS.len()),
            prop::collection::vec(0..TAGS.len(), 0..3),
        ),
        (
            prop::option::of(0..CATEGORIES.len()),
            prop::option::of(0..TARGETS.len()),
            prop::option::of(0..100u32),
        ),
        (
            0..2500u64,
            prop::collection::vec(0..PII.len(), 0..3),
            prop::option::of(any::<bool>()),
        ),
        (0..24u64, any::<u64>()),
    )
        .prop_map(
            |(
                (model, team, tags),
                (category, target, score),
                (tokens, pii, header),
                (hour, hash),
            )| F {
                model,
                team,
                tags,
                category,
                target,
                score: score.map(|s| f64::from(s) / 100.0),
                tokens,
                pii,
                header,
                hour,
                hash,
            },
        )
}

/// Evaluates with the real engine.
fn run(set: &PolicySet, f: &F) -> slmgate_policies::Outcome {
    let tags: Vec<String> = f.tags.iter().map(|&t| TAGS[t].to_string()).collect();
    let pii: Vec<PiiKind> = f.pii.iter().map(|&k| PII[k].clone()).collect();
    let hv = f.header.map(|v| v.to_string());
    let headers: Vec<(&str, &str)> = hv.iter().map(|v| ("X-Flag", v.as_str())).collect();
    set.evaluate(&RequestFacts {
        model: MODELS[f.model],
        team: f.team.map(|t| TEAMS[t]),
        tags: &tags,
        headers: &headers,
        path: "/v1/chat/completions",
        category: f.category.map(|c| CATEGORIES[c]),
        target: f.target.map(|t| TARGETS[t]),
        score: f.score,
        prompt_tokens: f.tokens,
        pii: &pii,
        now: UNIX_EPOCH + Duration::from_secs(1_741_910_400 + f.hour * 3600 + 1799),
        split_hash: f.hash,
        ..RequestFacts::default()
    })
}

fn rules_from(cs: &[Vec<C>]) -> Vec<Rule> {
    cs.iter()
        .enumerate()
        .map(|(i, c)| Rule {
            name: format!("r{i}"),
            when: to_conditions(c),
            then: Actions {
                route: Some(OneOrMany::One(TARGETS[i % 2].into())),
                ..Actions::default()
            },
        })
        .collect()
}

fn default_actions() -> Actions {
    Actions {
        route: Some(OneOrMany::One("auto".into())),
        ..Actions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The outcome is the first rule whose conditions all hold, else the default.
    #[test]
    fn first_match_wins(rule_conds in prop::collection::vec(conds(), 0..8), fs in prop::collection::vec(facts(), 1..16)) {
        let cfg = PoliciesConfig { default: Some(default_actions()), rules: rules_from(&rule_conds), ..PoliciesConfig::default() };
        // Two generated rules may have identical conditions: that set is (rightly) invalid.
        let set = match PolicySet::compile(&cfg, &known()) {
            Ok(s) => s,
            Err(errs) => {
                prop_assert!(errs.iter().all(|e| e.message.contains("same conditions")), "{errs:?}");
                return Ok(());
            }
        };
        for f in &fs {
            let expected = rule_conds.iter().position(|cs| cs.iter().all(|c| holds(c, f)));
            let out = run(&set, f);
            prop_assert_eq!(out.rule_index(), expected, "facts {:?}", f);
            match expected {
                Some(i) => {
                    prop_assert_eq!(out.rule_name(), format!("r{i}"));
                    prop_assert_eq!(out.route(), Some(&[TARGETS[i % 2].to_string()][..]));
                }
                None => {
                    // The default is reached whenever no rule matches.
                    prop_assert!(out.is_default());
                    prop_assert_eq!(out.route(), Some(&["auto".to_string()][..]));
                }
            }
            // Evaluation is deterministic.
            prop_assert_eq!(run(&set, f).rule_index(), out.rule_index());
        }
    }

    /// Facts that no condition can hold for always reach the default, whatever the rules.
    #[test]
    fn default_is_reachable(rule_conds in prop::collection::vec(conds(), 0..8), with_default in any::<bool>()) {
        let cfg = PoliciesConfig {
            default: with_default.then(default_actions),
            rules: rules_from(&rule_conds),
            ..PoliciesConfig::default()
        };
        let Ok(set) = PolicySet::compile(&cfg, &known()) else { return Ok(()); };
        // Every generated rule has a condition on a string fact, a score, a token count above
        // a bound, PII, a header or a time window. Pick facts that fail all but time, then a
        // time outside every window of a rule that has only a time condition, if one exists.
        let windows: Vec<(u64, u64)> = rule_conds.iter().filter_map(|cs| match cs.as_slice() {
            [C::Time(a, b)] => Some((*a, *b)),
            _ => None,
        }).collect();
        let hour = (0..24).find(|h| windows.iter().all(|&(a, b)| !holds(&C::Time(a, b), &F { hour: *h, ..nothing() })));
        let Some(hour) = hour else { return Ok(()); };
        let out = run(&set, &F { hour, ..nothing() });
        prop_assert!(out.is_default(), "matched {}", out.rule_name());
        prop_assert_eq!(out.route().is_some(), with_default);
    }

    /// A split picks arm i exactly for hashes whose residue falls in arm i's weight band.
    #[test]
    fn split_follows_weights(weights in prop::collection::vec(0..5u32, 1..5), hash in any::<u64>()) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let arms: Vec<SplitArm> = weights.iter().enumerate().map(|(i, w)| SplitArm {
            target: OneOrMany::One(["auto", "local", "remote"][i % 3].into()),
            weight: *w,
        }).collect();
        let cfg = PoliciesConfig {
            default: Some(Actions { split: Some(arms), ..Actions::default() }),
            ..PoliciesConfig::default()
        };
        let set = PolicySet::compile(&cfg, &known()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let out = set.evaluate(&RequestFacts { split_hash: hash, ..RequestFacts::default() });
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let r = hash % total;
        let mut acc = 0u64;
        let expected = weights.iter().position(|w| { acc += u64::from(*w); r < acc });
        prop_assert_eq!(out.split_arm(), expected);
        prop_assert!(expected.is_some_and(|i| weights[i] > 0));
        // Picking the arm after evaluating (what the gateway does, hashing its request id
        // only for outcomes that split) gives the same arm.
        let late = set.evaluate(&RequestFacts::default());
        prop_assert!(late.splits());
        prop_assert_eq!(late.with_split_hash(hash).split_arm(), expected);
    }
}

/// Facts that satisfy no generated condition except possibly a time window.
fn nothing() -> F {
    F {
        model: 5,
        team: None,
        tags: Vec::new(),
        category: None,
        target: None,
        score: None,
        tokens: 0,
        pii: Vec::new(),
        header: None,
        hour: 0,
        hash: 0,
    }
}

// --- Validation: generated rule sets with known defects. ---

#[derive(Debug, Clone)]
enum Then {
    Route(bool),
    Deny(u16),
    Split(u32, u32, bool),
}

#[derive(Debug, Clone)]
struct Spec {
    catch_all: bool,
    dup_name: bool,
    bad_regex: Option<bool>,
    bad_time: Option<bool>,
    then: Then,
}

fn spec() -> impl Strategy<Value = Spec> {
    let then = prop_oneof![
        any::<bool>().prop_map(Then::Route),
        prop::sample::select(vec![400u16, 403, 429, 503, 599, 200, 302, 600, 399])
            .prop_map(Then::Deny),
        (0..3u32, 0..3u32, any::<bool>()).prop_map(|(a, b, k)| Then::Split(a, b, k)),
    ];
    (
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::option::of(prop::bool::weighted(0.3)),
        prop::option::of(prop::bool::weighted(0.3)),
        then,
    )
        .prop_map(|(catch_all, dup_name, bad_regex, bad_time, then)| Spec {
            catch_all,
            dup_name,
            bad_regex,
            bad_time,
            then,
        })
}

fn build(specs: &[Spec], default_bad: Option<bool>) -> (PoliciesConfig, BTreeSet<String>) {
    let mut expected = BTreeSet::new();
    let mut rules = Vec::new();
    let mut first_catch_all = None;
    for (i, s) in specs.iter().enumerate() {
        let p = format!("policies.rules[{i}]");
        let name = if s.dup_name && i > 0 {
            "r0".to_string()
        } else {
            format!("r{i}")
        };
        if s.dup_name && i > 0 {
            expected.insert(format!("{p}.name"));
        }
        let mut when = Conditions::default();
        if !s.catch_all {
            // A unique condition per rule, so no two rules share conditions.
            when.model = Some(OneOrMany::One(format!("m{i}")));
            if let Some(bad) = s.bad_regex {
                let mut h = BTreeMap::new();
                h.insert(
                    "x-h".to_string(),
                    HeaderMatch::Regex(if bad { "(".into() } else { "^a+$".into() }),
                );
                when.header = Some(h);
                if bad {
                    expected.insert(format!("{p}.when.header.x-h"));
                }
            }
            if let Some(bad) = s.bad_time {
                when.time = Some(TimeWindow {
                    between: if bad {
                        "22:00-22:00".into()
                    } else {
                        "22:00-06:00".into()
                    },
                    tz: None,
                    days: None,
                });
                if bad {
                    expected.insert(format!("{p}.when.time.between"));
                }
            }
        }
        if let Some(k) = first_catch_all {
            let _: usize = k;
            expected.insert(p.clone());
        }
        if s.catch_all && first_catch_all.is_none() {
            first_catch_all = Some(i);
        }
        let then = match s.then {
            Then::Route(ok) => {
                if !ok {
                    expected.insert(format!("{p}.then.route"));
                }
                Actions {
                    route: Some(OneOrMany::One(if ok { "local" } else { "nowhere" }.into())),
                    ..Actions::default()
                }
            }
            Then::Deny(status) => {
                if !(400..=599).contains(&status) {
                    expected.insert(format!("{p}.then.deny.status"));
                }
                Actions {
                    deny: Some(Deny {
                        status,
                        message: None,
                    }),
                    ..Actions::default()
                }
            }
            Then::Split(a, b, known_target) => {
                if a + b == 0 {
                    expected.insert(format!("{p}.then.split"));
                }
                if !known_target {
                    expected.insert(format!("{p}.then.split[1].target"));
                }
                Actions {
                    split: Some(vec![
                        SplitArm {
                            target: OneOrMany::One("local".into()),
                            weight: a,
                        },
                        SplitArm {
                            target: OneOrMany::One(
                                if known_target { "remote" } else { "remote2" }.into(),
                            ),
                            weight: b,
                        },
                    ]),
                    ..Actions::default()
                }
            }
        };
        rules.push(Rule { name, when, then });
    }
    let default = default_bad.map(|bad| {
        if bad {
            expected.insert("policies.default.route".to_string());
        }
        if first_catch_all.is_some() {
            expected.insert("policies.default".to_string());
        }
        Actions {
            route: Some(OneOrMany::One(if bad { "locl" } else { "local" }.into())),
            ..Actions::default()
        }
    });
    (
        PoliciesConfig {
            default,
            rules,
            ..PoliciesConfig::default()
        },
        expected,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Compilation succeeds exactly for the sets without defects, and otherwise reports
    /// exactly the defective paths (a catch-all before the last rule makes every later rule an
    /// error; a catch-all with a default makes the default one).
    #[test]
    fn validation_accepts_exactly_valid_sets(specs in prop::collection::vec(spec(), 0..7), default_bad in prop::option::of(prop::bool::weighted(0.2))) {
        let (cfg, expected) = build(&specs, default_bad);
        match PolicySet::compile(&cfg, &known()) {
            Ok(_) => prop_assert!(expected.is_empty(), "accepted, but expected errors at {expected:?}"),
            Err(errs) => {
                let got: BTreeSet<String> = errs.iter().map(slmgate_policies::PolicyError::path_string).collect();
                prop_assert_eq!(&got, &expected, "errors: {:?}", errs);
                prop_assert_eq!(errs.len(), got.len(), "one error per path: {:?}", errs);
            }
        }
    }
}

#[test]
fn catch_all_in_the_middle_is_rejected() {
    let specs = [
        Spec {
            catch_all: false,
            dup_name: false,
            bad_regex: None,
            bad_time: None,
            then: Then::Route(true),
        },
        Spec {
            catch_all: true,
            dup_name: false,
            bad_regex: None,
            bad_time: None,
            then: Then::Route(true),
        },
        Spec {
            catch_all: false,
            dup_name: false,
            bad_regex: None,
            bad_time: None,
            then: Then::Route(true),
        },
    ];
    let (cfg, expected) = build(&specs, None);
    assert_eq!(
        expected.into_iter().collect::<Vec<_>>(),
        ["policies.rules[2]"]
    );
    let errs = PolicySet::compile(&cfg, &known()).err().unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path_string(), "policies.rules[2]");
}
