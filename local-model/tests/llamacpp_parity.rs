//! Parity with llama.cpp on the real default model (SmolLM2-135M-Instruct, Q4_1).
//!
//! The expected ids were recorded once from llama.cpp (llama-cpp-python 0.3.36, built with
//! `CMAKE_ARGS="-DGGML_NATIVE=ON"`, 2 threads) by the command stored in the fixture's
//! `command` field:
//!
//! ```text
//! .venv/bin/python scripts/llamacpp_ref.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --skip-speed --fixture local-model/tests/fixtures/smollm2_q4_1_llamacpp.json
//! ```
//!
//! The tests run when the model file is present (`SLMGATE_GGUF`, or `models/` at the repository
//! root, as `scripts/fetch-models.sh` leaves it; CI fetches it) and are skipped with a note
//! otherwise.
//!
//! # How greedy decoding is compared
//!
//! At 135M parameters, with activations quantized to 8 bits per block of 32 (as llama.cpp does),
//! this model's logits are chaotic in the last bits: changing only where attention rounds to
//! `f16` moves the top logits by up to ~0.6 (measured). Two implementations that are not
//! bit-identical kernel by kernel therefore agree on every token except where llama.cpp's own
//! top two candidates are nearly tied. With the file's weights (`quantize: keep`) llama.cpp's
//! greedy answer to the main question ("What is the capital of France?") has such a step at
//! token 8, where its top two logits are 2.635 and 2.617.
//!
//! So the tests decode with teacher forcing along llama.cpp's 16 greedy tokens, and at each step
//! require our greedy pick to be llama.cpp's, unless llama.cpp rates our pick within
//! [`NEAR_TIE`] of its own (a tie at this precision); and our logit for llama.cpp's pick to be
//! within [`LOGIT_TOL`] of llama.cpp's (twice that after requantizing to Q8_0). A real bug (wrong
//! RoPE, a bad kernel, a misread tensor) moves logits by whole units and fails both checks.
//! Free-running greedy decoding must agree up to the first near-tie step.
//!
//! The fixture holds eight fixed chat questions (the main one above and seven more, listed in
//! `scripts/llamacpp_ref.py` before either implementation decoded them). With the file's own
//! weights (`keep`) five of them give llama.cpp's 16 tokens exactly, free-running, and the test
//! requires at least half; the default `q8_0` path gives them exactly on the main question.

use slmgate_local_model::sampling::argmax;
use std::path::PathBuf;

use serde_json::Value;
use slmgate_local_model::generator::{ChatMessage, GenerationEvent, Generator, GeneratorOptions};
use slmgate_local_model::models::Quantize;
use slmgate_local_model::sampling::SamplingParams;

const FIXTURE: &str = include_str!("fixtures/smollm2_q4_1_llamacpp.json");

fn model() -> Option<PathBuf> {
    let path = std::env::var_os("SLMGATE_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not found (run scripts/fetch-models.sh)",
            path.display()
        );
        None
    }
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn load(path: &PathBuf, quantize: Quantize) -> Generator {
    let mut opts = GeneratorOptions::new(path);
    opts.quantize = quantize;
    Generator::load(&opts).expect("the model loads")
}

/// The main fixed chat question (the template adds SmolLM2's system message).
const MAIN_QUESTION: &str = "What is the capital of France?";

/// One chat prompt of the fixture and llama.cpp's greedy decoding of it.
struct Case {
    /// The user message.
    user: String,
    /// The prompt as llama.cpp was given it (SmolLM2's template, rendered by the script).
    prompt: String,
    prompt_ids: Vec<u32>,
    /// llama.cpp's 16 greedy tokens.
    want: Vec<u32>,
    /// llama.cpp's top candidates (id, logit) at each greedy step, best first.
    tops: Vec<Vec<(u32, f32)>>,
}

impl Case {
    fn from_json(user: &str, v: &Value) -> Case {
        let tops = v["greedy_top"]
            .as_array()
            .expect("greedy_top")
            .iter()
            .map(|step| {
                step.as_array()
                    .expect("a step's candidates")
                    .iter()
                    .map(|p| {
                        (
                            p[0].as_u64().expect("an id") as u32,
                            p[1].as_f64().expect("a logit") as f32,
                        )
                    })
                    .collect()
            })
            .collect();
        Case {
            user: user.to_string(),
            prompt: v["prompt"].as_str().expect("prompt").to_string(),
            prompt_ids: ids(&v["prompt_ids"]),
            want: ids(&v["greedy_ids"]),
            tops,
        }
    }

    fn chat(&self) -> Vec<ChatMessage> {
        vec![ChatMessage::new("user", self.user.as_str())]
    }

    /// llama.cpp's own smallest top-1 − top-2 gap over the 16 steps (reported: every chat of
    /// the fixture has some step below [`NEAR_TIE`], this model's logits are that flat).
    fn min_margin(&self) -> f32 {
        self.tops
            .iter()
            .map(|t| t[0].1 - t[1].1)
            .fold(f32::INFINITY, f32::min)
    }
}

/// Every chat of the fixture: the main question first, then `more_chats` (fixed questions
/// listed in `scripts/llamacpp_ref.py` before either implementation decoded them).
fn cases() -> Vec<Case> {
    let f = fixture();
    let mut cases = vec![Case::from_json(MAIN_QUESTION, &f)];
    for c in f["more_chats"].as_array().expect("more_chats") {
        cases.push(Case::from_json(c["user"].as_str().expect("user"), c));
    }
    cases
}

/// A llama.cpp margin below this is a tie at the precision both implementations work at.
const NEAR_TIE: f32 = 0.5;
/// How far our logit for llama.cpp's greedy token may be from llama.cpp's with the same
/// weights (`keep`); requantizing to Q8_0 rounds every weight again, which doubles it.
const LOGIT_TOL: f32 = 1.0;

/// Free-running greedy decoding of `n` tokens after `chat`.
fn greedy(g: &Generator, chat: &[ChatMessage], n: usize) -> Vec<u32> {
    let mut model = g.instance().expect("an instance");
    let prompt = g.prompt_tokens(chat).expect("the prompt renders");
    let params = SamplingParams {
        max_tokens: n,
        ..Default::default()
    };
    let mut out = Vec::new();
    g.generate_blocking(&mut model, &prompt, &params, |e| {
        if let GenerationEvent::Token { token_id, .. } = e {
            out.push(token_id);
        }
        true
    })
    .expect("generation succeeds");
    out
}

/// Checks one chat against llama.cpp as described in the module docs; returns how many
/// leading tokens free-running greedy decoding shares with llama.cpp.
fn check_case(g: &Generator, quantize: Quantize, case: &Case) -> usize {
    let chat = case.chat();
    let prompt = g.prompt_tokens(&chat).unwrap();
    assert_eq!(prompt, case.prompt_ids, "{:?}: prompt tokens", case.user);
    let mut model = g.instance().unwrap();
    let mut logits = model.forward(&prompt, 0).unwrap();
    let mut near_ties = Vec::new();
    for (step, &expected) in case.want.iter().enumerate() {
        let theirs = &case.tops[step];
        let (best_id, best_logit) = theirs[0];
        assert_eq!(best_id, expected);
        let ours = argmax(&logits);
        if ours != expected {
            let margin = theirs
                .iter()
                .find(|(id, _)| *id == ours)
                .map(|(_, l)| best_logit - l);
            assert!(
                margin.is_some_and(|m| m <= NEAR_TIE),
                "{quantize:?} {:?} step {step}: we pick {ours}, llama.cpp {expected} \
                 (llama.cpp margin {margin:?}; top {theirs:?})",
                case.user
            );
            near_ties.push(step);
        }
        let tol = if quantize == Quantize::Keep {
            LOGIT_TOL
        } else {
            2.0 * LOGIT_TOL
        };
        let diff = (logits[expected as usize] - best_logit).abs();
        assert!(
            diff <= tol,
            "{quantize:?} {:?} step {step}: logit of {expected} is {} here, {best_logit} in \
             llama.cpp",
            case.user,
            logits[expected as usize]
        );
        logits = model.forward(&[expected], prompt.len() + step).unwrap();
    }
    let free = greedy(g, &chat, 16);
    // llama.cpp's loop decodes past an end-of-generation token; ours stops there (and does
    // not emit it), so its 16 tokens are compared up to that token.
    let eos = &g.info().eos_token_ids;
    let want = match case.want.iter().position(|t| eos.contains(t)) {
        Some(end) => &case.want[..end],
        None => &case.want[..],
    };
    let mut same = free.iter().zip(want).take_while(|(a, b)| a == b).count();
    if same == want.len() && free.len() == want.len() {
        same = case.want.len();
    }
    eprintln!(
        "{quantize:?} {:?}: llama.cpp's smallest margin {:.3}; near-tie steps {near_ties:?}; \
         free-running greedy shares {same}/16 tokens with llama.cpp ({:?})",
        case.user,
        case.min_margin(),
        g.tokenizer().decode(&free, false)
    );
    let first_tie = near_ties.first().copied().unwrap_or(16);
    assert!(
        same >= first_tie,
        "{quantize:?} {:?}: greedy diverges at token {same}, before any near-tie: {free:?} vs \
         {:?}",
        case.user,
        case.want
    );
    same
}

/// Checks every chat of the fixture for `quantize` (see [`check_case`]); returns the
/// shared-prefix length per chat (main question first).
fn check_greedy(quantize: Quantize) -> Option<Vec<usize>> {
    let path = model()?;
    let g = load(&path, quantize);
    assert_eq!(g.weights().backend(), "fast-llama");
    Some(
        cases()
            .iter()
            .map(|c| check_case(&g, quantize, c))
            .collect(),
    )
}

#[test]
fn chat_prompts_tokenize_like_llamacpp() {
    let Some(path) = model() else { return };
    let g = load(&path, Quantize::Keep);
    for case in cases() {
        let rendered = g.render_chat(&case.chat()).unwrap();
        assert_eq!(rendered, case.prompt, "{:?}", case.user);
        assert_eq!(
            g.prompt_tokens(&case.chat()).unwrap(),
            case.prompt_ids,
            "{:?}",
            case.user
        );
    }
}

/// The file's own Q4_1 weights (`quantize: keep`), as llama.cpp runs them: every chat agrees
/// up to its first near-tie, and at least half of them give llama.cpp's 16 tokens exactly
/// (5 of the 8 when this test was written: "haiku", "12 times 7", "primary colors", "CPU",
/// "days of the week"; the other three part at a step where llama.cpp's own top two logits
/// are within 0.02–0.06).
#[test]
fn greedy_first_16_tokens_match_llamacpp_keep() {
    if let Some(shared) = check_greedy(Quantize::Keep) {
        let exact = shared.iter().filter(|&&s| s == 16).count();
        assert!(
            2 * exact >= shared.len(),
            "only {exact} of {} chats give llama.cpp's 16 greedy tokens exactly: {shared:?}",
            shared.len()
        );
    }
}

/// The default in-memory format: Q4_1 requantized to Q8_0. On the main question its
/// free-running greedy output is llama.cpp's 16 tokens exactly.
#[test]
fn greedy_first_16_tokens_match_llamacpp_q8_0() {
    if let Some(shared) = check_greedy(Quantize::Q8_0) {
        assert_eq!(shared[0], 16);
    }
}

#[test]
fn tricky_strings_tokenize_like_llamacpp() {
    let Some(path) = model() else { return };
    let f = fixture();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tok = slmgate_local_model::gguf_tokenizer::tokenizer_from_gguf(&content.metadata).unwrap();
    let cases = f["tokenize"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        if got != want {
            failures.push(format!("{text:?}: ours {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
