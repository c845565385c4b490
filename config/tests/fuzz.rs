//! Fuzzing the YAML loader with proptest (cargo-fuzz needs a nightly toolchain): arbitrary
//! text, the embedded default config cut at every kind of place (a file caught mid-write),
//! and the default config with lines dropped, repeated or re-indented. Loading must always
//! return a config or errors whose positions lie inside the document, never panic.
//!
//! Runs are bounded for CI: each property runs `FUZZ_CASES` cases (a few seconds in a debug
//! build); set `SLMGATE_FUZZ_CASES` to run more. The files in `tests/fuzz-corpus/yaml/` are
//! replayed first on every run: keep any input that ever failed there, and proptest's own
//! shrunk failures are kept in `tests/fuzz.proptest-regressions`.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use slmgate_config::{load_str_with_env, ConfigErrors, DEFAULT_CONFIG_YAML};

/// Cases per property unless `SLMGATE_FUZZ_CASES` says otherwise.
const FUZZ_CASES: u32 = 2048;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("SLMGATE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(FUZZ_CASES),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// A fixed environment in which some variables are set, so interpolation takes both
/// branches.
fn env(name: &str) -> Option<String> {
    name.bytes()
        .next()
        .is_some_and(|b| b < b'M')
        .then(|| format!("v-{name}"))
}

/// Loads `src`; errors must point inside it.
fn check(src: &str) -> Result<(), TestCaseError> {
    match load_str_with_env(src, "fuzz.yaml", &env) {
        Ok(_) => Ok(()),
        Err(ConfigErrors(errors)) => {
            prop_assert!(!errors.is_empty());
            // Lines as YAML counts them (`\r`, NEL and the Unicode line and paragraph
            // separators break lines too), plus the end of the input after the last one.
            let lines = yaml_lines(src) + 1;
            for e in &errors {
                if let Some(line) = e.line {
                    prop_assert!(line >= 1 && line <= lines, "{e} outside {lines} lines");
                }
                prop_assert!(!e.message.is_empty());
            }
            Ok(())
        }
    }
}

/// The number of lines of `src` by YAML's line breaks.
fn yaml_lines(src: &str) -> usize {
    let breaks = src
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    breaks + 1
}

#[test]
fn the_corpus_loads_or_fails_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/yaml");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        check(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 5, "corpus missing in {}", dir.display());
}

/// Character boundaries of the default config, for cutting it.
fn default_cut() -> impl Strategy<Value = usize> {
    (0..=DEFAULT_CONFIG_YAML.len()).prop_map(|mut i| {
        while !DEFAULT_CONFIG_YAML.is_char_boundary(i) {
            i -= 1;
        }
        i
    })
}

/// A line edit of the default config.
#[derive(Debug, Clone)]
enum Edit {
    Drop(usize),
    Repeat(usize),
    Indent(usize, usize),
    Replace(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let lines = DEFAULT_CONFIG_YAML.lines().count();
    prop_oneof![
        (0..lines).prop_map(Edit::Drop),
        (0..lines).prop_map(Edit::Repeat),
        (0..lines, 0usize..6).prop_map(|(l, n)| Edit::Indent(l, n)),
        (0..lines, "[ -~\t]{0,24}").prop_map(|(l, s)| Edit::Replace(l, s)),
    ]
}

fn apply(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = DEFAULT_CONFIG_YAML.lines().map(String::from).collect();
    for e in edits {
        let n = lines.len();
        if n == 0 {
            break;
        }
        match e {
            Edit::Drop(i) => {
                lines.remove(i % n);
            }
            Edit::Repeat(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Indent(i, by) => lines[i % n] = format!("{}{}", " ".repeat(*by), lines[i % n]),
            Edit::Replace(i, s) => lines[i % n] = s.clone(),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_loads_or_fails_cleanly(src in "\\PC{0,400}") {
        check(&src)?;
    }

    #[test]
    fn yaml_shaped_text_loads_or_fails_cleanly(
        src in "([a-z_]{1,12}:( [-a-z0-9:./${}\\[\\],]{0,20})?\n( {2,6}(- )?[a-z_]{1,10}: [-a-z0-9${}]{0,12}\n){0,4}){0,12}"
    ) {
        check(&src)?;
    }

    /// A file caught mid-write: any prefix of a real config.
    #[test]
    fn a_cut_default_config_loads_or_fails_cleanly(cut in default_cut()) {
        check(&DEFAULT_CONFIG_YAML[..cut])?;
    }

    #[test]
    fn an_edited_default_config_loads_or_fails_cleanly(edits in prop::collection::vec(edit(), 1..6)) {
        check(&apply(&edits))?;
    }
}
