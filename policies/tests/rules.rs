//! The rule engine on the documented example, and every validation error with its path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use slmgate_policies::pii::PiiKind;
use slmgate_policies::rules::ParamAction;
use slmgate_policies::{KnownTargets, PoliciesConfig, PolicySet, RequestFacts};

const EXAMPLE: &str = r#"
policies:
  default: { route: auto }        # optional; default is "no change"
  rules:
    - name: pii-stays-local
      when: { pii: [email, credit_card] }       # any of
      then: { route: local }
    - name: eu-team-deny-gpt4
      when: { team: eu, model: [gpt-4o, "gpt-4*"] }   # all conditions must hold; list = any of; glob allowed
      then: { deny: { status: 403, message: "EU team may not use GPT-4" } }
    - name: cap-free-tier
      when: { tags: [free] }
      then: { set: { max_tokens: { max: 256 }, temperature: 0 } }
    - name: night-batch
      when: { time: { between: "22:00-06:00", tz: UTC } }
      then: { route: [remote, local] }            # a fallback chain
    - name: ab
      when: { model: auto, category: [chitchat], score: { lt: 0.3 } }
      then: { split: [ { target: local, weight: 90 }, { target: remote, weight: 10 } ] }
    - name: redact
      when: { header: { x-data-class: "confidential" }, path: /v1/chat/completions, prompt_tokens: { gt: 2000 } }
      then: { redact: true, restore: true, cache: { enabled: false } }
"#;

#[derive(serde::Deserialize)]
struct Doc {
    policies: PoliciesConfig,
}

fn parse(yaml: &str) -> PoliciesConfig {
    match serde_norway::from_str::<Doc>(yaml) {
        Ok(d) => d.policies,
        Err(e) => panic!("YAML: {e}"),
    }
}

fn known() -> KnownTargets {
    KnownTargets::new(["auto", "local", "remote", "openai"])
}

fn compile(yaml: &str) -> PolicySet {
    match PolicySet::compile(&parse(yaml), &known()) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    }
}

/// Compiles and returns the rendered errors.
fn errors(yaml: &str) -> Vec<String> {
    match PolicySet::compile(&parse(yaml), &known()) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// 2025-03-14 (a Friday) at hh:mm UTC.
fn at(h: u64, m: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_741_910_400 + h * 3600 + m * 60)
}

fn noon() -> RequestFacts<'static> {
    RequestFacts {
        model: "remote",
        path: "/v1/chat/completions",
        now: at(12, 0),
        ..RequestFacts::default()
    }
}

fn local() -> Vec<String> {
    vec!["local".to_string()]
}

#[test]
fn example_compiles_and_reports_what_it_needs() {
    let p = compile(EXAMPLE);
    assert_eq!(p.len(), 6);
    assert!(p.needs_pii());
    assert!(p.needs_decision());
    assert_eq!(p.headers(), ["x-data-class"]);
}

#[test]
fn default_applies_when_nothing_matches() {
    let p = compile(EXAMPLE);
    let o = p.evaluate(&noon());
    assert!(o.is_default());
    assert_eq!(o.rule_name(), "default");
    assert_eq!(o.route(), Some(&["auto".to_string()][..]));
}

#[test]
fn pii_rule() {
    let p = compile(EXAMPLE);
    let pii = [PiiKind::Phone, PiiKind::CreditCard];
    let o = p.evaluate(&RequestFacts {
        pii: &pii,
        ..noon()
    });
    assert_eq!(o.rule_name(), "pii-stays-local");
    assert_eq!(o.rule_index(), Some(0));
    assert_eq!(o.route(), Some(&local()[..]));
    let phone_only = [PiiKind::Phone];
    assert!(p
        .evaluate(&RequestFacts {
            pii: &phone_only,
            ..noon()
        })
        .is_default());
}

#[test]
fn deny_rule_needs_team_and_model() {
    let p = compile(EXAMPLE);
    for model in ["gpt-4o", "gpt-4-turbo", "gpt-4"] {
        let o = p.evaluate(&RequestFacts {
            team: Some("eu"),
            model,
            ..noon()
        });
        let d = o.deny().map(|d| (d.status, d.message.as_str()));
        assert_eq!(d, Some((403, "EU team may not use GPT-4")), "{model}");
    }
    let o = p.evaluate(&RequestFacts {
        team: Some("us"),
        model: "gpt-4o",
        ..noon()
    });
    assert!(o.deny().is_none());
    let o = p.evaluate(&RequestFacts {
        team: Some("eu"),
        model: "gpt-3.5",
        ..noon()
    });
    assert!(o.deny().is_none());
    let o = p.evaluate(&RequestFacts {
        team: None,
        model: "gpt-4o",
        ..noon()
    });
    assert!(o.deny().is_none());
}

#[test]
fn set_caps_and_sets() {
    let p = compile(EXAMPLE);
    let tags = vec!["beta".to_string(), "free".to_string()];
    let o = p.evaluate(&RequestFacts {
        tags: &tags,
        ..noon()
    });
    assert_eq!(o.rule_name(), "cap-free-tier");
    let mt = o.params().max_tokens;
    assert_eq!(
        mt,
        Some(ParamAction::Clamp {
            min: None,
            max: Some(256.0)
        })
    );
    assert_eq!(mt.and_then(|a| a.apply(Some(1000.0))), Some(256.0));
    assert_eq!(mt.and_then(|a| a.apply(Some(100.0))), Some(100.0));
    assert_eq!(mt.and_then(|a| a.apply(None)), Some(256.0));
    assert_eq!(
        o.params().temperature.and_then(|a| a.apply(Some(0.9))),
        Some(0.0)
    );
    let set: Vec<&str> = o.params().iter().map(|(n, _)| n).collect();
    assert_eq!(set, ["max_tokens", "temperature"]);
    assert!(o.route().is_none());
}

#[test]
fn night_window_wraps_midnight() {
    let p = compile(EXAMPLE);
    for (h, m, inside) in [
        (21, 59, false),
        (22, 0, true),
        (23, 59, true),
        (0, 0, true),
        (5, 59, true),
        (6, 0, false),
    ] {
        let o = p.evaluate(&RequestFacts {
            now: at(h, m),
            ..noon()
        });
        assert_eq!(o.rule_name() == "night-batch", inside, "{h:02}:{m:02}");
        if inside {
            assert_eq!(
                o.route(),
                Some(&["remote".to_string(), "local".to_string()][..])
            );
        }
    }
}

#[test]
fn split_is_weighted_and_deterministic() {
    let p = compile(EXAMPLE);
    let base = RequestFacts {
        model: "auto",
        category: Some("chitchat"),
        score: Some(0.1),
        ..noon()
    };
    let mut local_hits = 0;
    for h in 0..1000u64 {
        let o = p.evaluate(&RequestFacts {
            split_hash: h,
            ..base
        });
        assert_eq!(o.rule_name(), "ab");
        let again = p.evaluate(&RequestFacts {
            split_hash: h,
            ..base
        });
        assert_eq!(o.route(), again.route());
        if o.route() == Some(&local()[..]) {
            assert_eq!(o.split_arm(), Some(0));
            local_hits += 1;
        }
    }
    assert_eq!(local_hits, 900);
    // Score out of range or no decision: no match.
    assert!(p
        .evaluate(&RequestFacts {
            score: Some(0.3),
            ..base
        })
        .is_default());
    assert!(p
        .evaluate(&RequestFacts {
            score: None,
            ..base
        })
        .is_default());
}

#[test]
fn redact_rule_checks_header_path_and_tokens() {
    let p = compile(EXAMPLE);
    let headers = [("X-Data-Class", "confidential"), ("accept", "*/*")];
    let base = RequestFacts {
        headers: &headers,
        prompt_tokens: 2001,
        ..noon()
    };
    let o = p.evaluate(&base);
    assert_eq!(o.rule_name(), "redact");
    let r = o.redact().map(|r| (r.kinds.clone(), r.restore));
    assert_eq!(r, Some((None, true)));
    assert_eq!(o.cache().map(|c| c.enabled), Some(false));
    assert!(p
        .evaluate(&RequestFacts {
            prompt_tokens: 2000,
            ..base
        })
        .is_default());
    assert!(p
        .evaluate(&RequestFacts {
            path: "/v1/embeddings",
            ..base
        })
        .is_default());
    let other = [("x-data-class", "public")];
    assert!(p
        .evaluate(&RequestFacts {
            headers: &other,
            ..base
        })
        .is_default());
}

#[test]
fn first_match_wins_over_later_rules() {
    let p = compile(EXAMPLE);
    // Matches pii-stays-local, eu-team-deny-gpt4 and night-batch: the first decides.
    let pii = [PiiKind::Email];
    let o = p.evaluate(&RequestFacts {
        pii: &pii,
        team: Some("eu"),
        model: "gpt-4o",
        now: at(23, 0),
        ..noon()
    });
    assert_eq!(o.rule_name(), "pii-stays-local");
    assert!(o.deny().is_none());
}

#[test]
fn header_regex_presence_and_lists() {
    let p = compile(
        r#"
policies:
  rules:
    - name: ops
      when: { header: { x-user: { regex: "^ops-[0-9]+$" } } }
      then: { route: remote }
    - name: debug
      when: { header: { x-debug: { present: true }, x-env: [dev, staging] } }
      then: { cache: false }
    - name: no-trace
      when: { header: { x-trace: { present: false } }, key: "svc-*" }
      then: {}
"#,
    );
    let f = |h: &'static [(&'static str, &'static str)]| RequestFacts {
        headers: h,
        key: Some("svc-a"),
        ..noon()
    };
    assert_eq!(p.evaluate(&f(&[("x-user", "ops-12")])).rule_name(), "ops");
    assert_eq!(
        p.evaluate(&f(&[("x-user", "ops-12x"), ("x-trace", "1")]))
            .rule_name(),
        "default"
    );
    assert_eq!(
        p.evaluate(&f(&[
            ("x-debug", ""),
            ("x-env", "staging"),
            ("x-trace", "1")
        ]))
        .rule_name(),
        "debug"
    );
    assert_eq!(
        p.evaluate(&f(&[("x-debug", ""), ("x-env", "prod"), ("x-trace", "1")]))
            .rule_name(),
        "default"
    );
    let o = p.evaluate(&f(&[]));
    assert_eq!(o.rule_name(), "no-trace");
    assert!(o.is_no_change());
}

#[test]
fn unquoted_offsets_and_windows_parse() {
    let p = compile(
        "policies:\n  rules:\n    - name: n\n      when: { time: { between: 22:00-06:00, tz: +02:00 } }\n      then: { route: local }\n",
    );
    // 20:00 UTC = 22:00 at +02:00.
    assert_eq!(
        p.evaluate(&RequestFacts {
            now: at(20, 0),
            ..noon()
        })
        .rule_name(),
        "n"
    );
    assert!(p
        .evaluate(&RequestFacts {
            now: at(19, 59),
            ..noon()
        })
        .is_default());
}

#[test]
fn time_days_and_offsets() {
    let p = compile(
        r#"
policies:
  rules:
    - name: weekend-paris
      when: { time: { between: "00:00-24:00", tz: "+02:00", days: [sat, sun] } }
      then: { route: local }
"#,
    );
    // Friday 21:59 UTC = 23:59 local Friday; 22:00 UTC = Saturday 00:00 local.
    assert!(p
        .evaluate(&RequestFacts {
            now: at(21, 59),
            ..noon()
        })
        .is_default());
    assert_eq!(
        p.evaluate(&RequestFacts {
            now: at(22, 0),
            ..noon()
        })
        .rule_name(),
        "weekend-paris"
    );
}

#[test]
fn catch_all_last_is_fine() {
    let p = compile(
        r#"
policies:
  rules:
    - name: a
      when: { model: x }
      then: { route: local }
    - name: everything-else
      then: { route: remote }
"#,
    );
    assert_eq!(p.evaluate(&noon()).rule_name(), "everything-else");
}

#[test]
fn every_validation_error_is_reported_with_its_path() {
    let errs = errors(
        r#"
policies:
  default: { route: local }
  pii:
    custom:
      - { name: Bad-Name, regex: "(" }
      - { name: empty, regex: "x*" }
  rules:
    - name: r0
      when: { header: { x-foo: { regex: "[a-" } }, target: locl }
      then: { route: [remot, local, local] }
    - name: r0
      when: { score: { gt: 0.5, lt: 0.2 }, pii: [emial] }
      then: { deny: { status: 302 }, route: local }
    - name: r2
      when: { time: { between: "25:00-06:00", tz: "Mars/Olympus" } }
      then: { split: [ { target: local, weight: 0 }, { target: remote, weight: 0 } ] }
    - name: catch-all
      then: { set: { max_tokens: 0, temperature: { min: 1.5, max: 1 } }, cache: { ttl: soon } }
    - name: after
      when: { model: [] }
      then: { restore: true }
"#,
    );
    let expected = [
        "policies.pii.custom[0].name: `Bad-Name` is not a valid name: use lower-case letters, digits and `_`, starting with a letter",
        "policies.pii.custom[0].regex: invalid regex: unclosed group",
        "policies.pii.custom[1].regex: the regex matches the empty string; it must match at least one character",
        "policies.rules[0].when.target: unknown target `locl`, did you mean `local`?; known: auto, local, openai, remote",
        "policies.rules[0].when.header.x-foo: invalid regex: unclosed character class",
        "policies.rules[0].then.route[0]: unknown target `remot`, did you mean `remote`?; known: auto, local, openai, remote",
        "policies.rules[0].then.route[2]: `local` appears twice in the same chain",
        "policies.rules[1].name: duplicate rule name `r0`",
        "policies.rules[1].when.score: the range is empty: no value satisfies every bound",
        "policies.rules[1].when.pii[0]: unknown PII kind `emial`, did you mean `email`?",
        "policies.rules[1].then.deny: `deny` ends the request and cannot be combined with `route`",
        "policies.rules[1].then.deny.status: 302 is not an error status: use 400–599",
        "policies.rules[2].when.time.between: `25:00` is not a time between 00:00 and 23:59 (HH:MM)",
        "policies.rules[2].when.time.tz: `Mars/Olympus` is not a timezone: use UTC or a fixed offset such as +02:00 or -05:30",
        "policies.rules[2].then.split: the weights sum to 0: at least one arm needs a weight > 0",
        "policies.rules[3].then.set.max_tokens: 0 is out of range: must be a whole number ≥ 1",
        "policies.rules[3].then.set.temperature: min 1.5 is greater than max 1",
        "policies.rules[3].then.cache.ttl: `soon` is not a duration like 30s, 10m or 1h: expected number at 0",
        "policies.rules[4]: unreachable: rule `catch-all` (rules[3]) has no conditions and matches every request first",
        "policies.rules[4].when.model: an empty list never matches: add values or remove the condition",
        "policies.rules[4].then.restore: `restore` puts redacted values back: it needs `redact`",
        "policies.default: never used: rule `catch-all` (rules[3]) has no conditions and matches every request",
    ];
    assert_eq!(errs, expected, "\n{}", errs.join("\n"));
}

#[test]
fn duplicate_conditions_are_unreachable() {
    let errs = errors(
        r#"
policies:
  rules:
    - { name: a, when: { model: x, team: t }, then: { route: local } }
    - { name: b, when: { team: t, model: x }, then: { route: remote } }
    - { name: c, when: { tags: [x, y] }, then: { route: remote } }
    - { name: d, when: { tags: [y, x, x] }, then: { route: remote } }
    - { name: e, when: { team: [t], model: x }, then: { route: remote } }
    - { name: f, when: { team: [t, u], model: x }, then: { route: remote } }
"#,
    );
    assert_eq!(
        errs,
        [
            "policies.rules[1]: unreachable: rule `a` (rules[0]) has the same conditions and matches first",
            "policies.rules[3]: unreachable: rule `c` (rules[2]) has the same conditions and matches first",
            "policies.rules[4]: unreachable: rule `a` (rules[0]) has the same conditions and matches first",
        ]
    );
}

#[test]
fn pii_kinds_must_be_detected() {
    let errs = errors(
        r#"
policies:
  pii: { kinds: [email], custom: [ { name: employee_id, regex: "EMP-[0-9]{6}" } ] }
  rules:
    - { name: a, when: { pii: [ssn, employee_id] }, then: { redact: [email, phone] } }
    - { name: b, when: { pii: [any, email] }, then: { route: local } }
"#,
    );
    assert_eq!(
        errs,
        [
            "policies.rules[0].when.pii[0]: PII kind `ssn` is not detected: add it to policies.pii.kinds",
            "policies.rules[0].then.redact[1]: PII kind `phone` is not detected: add it to policies.pii.kinds",
            "policies.rules[1].when.pii: `any` already covers every kind: list it alone",
        ]
    );
}

#[test]
fn serde_rejects_unknown_fields_and_shapes() {
    for bad in [
        "policies: { rules: [ { name: a, when: { modle: x }, then: {} } ] }",
        "policies: { rules: [ { name: a, then: { rout: local } } ] }",
        "policies: { rules: [ { name: a, then: { set: { max_token: 5 } } } ] }",
        "policies: { rules: [ { name: a, when: { header: { x: { regex: a, present: true } } }, then: {} } ] }",
        "policies: { rules: [ { name: a, then: { set: { temperature: { max: 1, clamp: 2 } } } } ] }",
        "policies: { rules: [ { name: a, then: { cache: { enabled: true, tll: 5m } } } ] }",
        "policies: { rules: [ { name: a } ] }",
        "policies: { pii: { kinds: [emails] } }",
        "policies: { bogus: 1 }",
    ] {
        assert!(serde_norway::from_str::<Doc>(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn shorthand_forms_parse() {
    let p = compile(
        r#"
policies:
  rules:
    - name: a
      when: { model: local, tags: 2024, header: { x-n: 5 } }
      then: { cache: true, redact: [email], route: local }
    - name: b
      when: { model: local, prompt_tokens: { gte: 10, lte: 10 } }
      then: { cache: { ttl: 10m, semantic: true } }
"#,
    );
    let tags = vec!["2024".to_string()];
    let hdr = [("x-n", "5")];
    let o = p.evaluate(&RequestFacts {
        model: "local",
        tags: &tags,
        headers: &hdr,
        ..noon()
    });
    assert_eq!(o.rule_name(), "a");
    assert_eq!(
        o.redact().and_then(|r| r.kinds.clone()),
        Some(vec![PiiKind::Email])
    );
    let o = p.evaluate(&RequestFacts {
        model: "local",
        prompt_tokens: 10,
        ..noon()
    });
    let c = o.cache().copied();
    assert_eq!(
        c.map(|c| (c.enabled, c.ttl, c.semantic)),
        Some((true, Some(Duration::from_secs(600)), Some(true)))
    );
}

#[test]
fn empty_policy_changes_nothing() {
    let p = PolicySet::empty();
    let o = p.evaluate(&noon());
    assert!(o.is_default() && o.is_no_change());
    assert!(!p.needs_pii() && !p.needs_decision());
}
