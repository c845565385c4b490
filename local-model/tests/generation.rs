//! Generation tests on tiny random-weight GGUF models written by the tests themselves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use futures::StreamExt;
use slmgate_local_model::generator::{
    ChatMessage, GenerationEvent, Generator, GeneratorOptions, LocalModelError,
};
use slmgate_local_model::models::Quantize;
use slmgate_local_model::pool::{GenerateRequest, LocalPool, PoolError, PoolOptions};
use slmgate_local_model::sampling::{FinishReason, IncrementalDecoder, SamplingParams};

use slmgate_local_model::fixtures::{
    bytes_to_unicode, vocab, write_gguf, write_tiny_model as write_model,
};
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fixture(arch: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), arch, 7);
    Fixture { _dir: dir, path }
}

fn load(f: &Fixture, quantize: Quantize) -> Generator {
    let mut opts = GeneratorOptions::new(&f.path);
    opts.quantize = quantize;
    Generator::load(&opts).unwrap()
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    }
}

/// Runs one generation synchronously; returns (events, concatenated text, token ids).
fn run(
    g: &Generator,
    msgs: &[ChatMessage],
    params: &SamplingParams,
) -> (Vec<GenerationEvent>, String, Vec<u32>) {
    let mut model = g.instance().unwrap();
    let prompt = g.prompt_tokens(msgs).unwrap();
    let mut events = Vec::new();
    g.generate_blocking(&mut model, &prompt, params, |e| {
        events.push(e);
        true
    })
    .unwrap();
    let mut text = String::new();
    let mut ids = Vec::new();
    for e in &events {
        if let GenerationEvent::Token {
            text: t, token_id, ..
        } = e
        {
            text.push_str(t);
            ids.push(*token_id);
        }
    }
    (events, text, ids)
}

fn done(events: &[GenerationEvent]) -> (FinishReason, usize, usize) {
    match events.last() {
        Some(GenerationEvent::Done {
            finish_reason,
            prompt_tokens,
            completion_tokens,
        }) => (*finish_reason, *prompt_tokens, *completion_tokens),
        other => panic!("last event is not Done: {other:?}"),
    }
}

#[test]
fn loads_llama_and_reports_info() {
    let f = fixture("llama");
    let g = load(&f, Quantize::Q8_0);
    let info = g.info();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.name.as_deref(), Some("tiny-llama"));
    assert_eq!(info.context_length, 128);
    assert_eq!(info.vocab_size, vocab().0.len());
    assert!(info.eos_token_ids.contains(&2), "{:?}", info.eos_token_ids);
    assert!(info.eos_token_ids.contains(&0), "{:?}", info.eos_token_ids);
    assert!(!info.eos_token_ids.contains(&1));
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send_unpin<T: Send + Unpin>() {}
    assert_send_sync::<Generator>();
    assert_send_sync::<LocalPool>();
    assert_send_unpin::<slmgate_local_model::pool::GenerationStream>();
}

#[test]
fn tokenizer_round_trips_unicode_and_special_tokens() {
    let f = fixture("llama");
    let g = load(&f, Quantize::Keep);
    let tok = g.tokenizer();
    let text = "<|im_start|>user\nhello world, héllo 12 👋 中文<|im_end|>\n";
    let enc = tok.encode(text, false).unwrap();
    let ids = enc.get_ids();
    assert_eq!(ids[0], 1, "<|im_start|> is one special token");
    assert!(ids.contains(&2));
    assert!(
        enc.get_tokens().iter().any(|t| t == "hell"),
        "{:?}",
        enc.get_tokens()
    );
    assert!(
        enc.get_tokens().iter().any(|t| t == "Ġwor"),
        "{:?}",
        enc.get_tokens()
    );
    // smollm splits digits one by one.
    assert!(enc.get_tokens().iter().any(|t| t == "1"));
    assert!(enc.get_tokens().iter().any(|t| t == "2"));
    assert_eq!(tok.decode(ids, false).unwrap(), text);
    // Skipping special tokens drops the ChatML markers only.
    assert_eq!(
        tok.decode(ids, true).unwrap(),
        "user\nhello world, héllo 12 👋 中文\n"
    );
    // A user-defined token is one token; the PAD filler is not an added token.
    let enc = tok.encode("a<tool_call>b", false).unwrap();
    assert_eq!(enc.get_ids().len(), 3);
    let enc = tok.encode("[PAD0]", false).unwrap();
    assert!(enc.get_ids().len() > 1);
}

#[test]
fn qwen2_tokenizer_round_trips() {
    let f = fixture("qwen2");
    let g = load(&f, Quantize::Keep);
    let tok = g.tokenizer();
    let text = "<|im_start|>system\nCafé 2024 naïve 👋\n\n  code()<|im_end|>";
    let enc = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    assert_eq!(enc.get_ids()[0], 1);
}

#[test]
fn renders_chat_template_and_counts_tokens() {
    let f = fixture("llama");
    let g = load(&f, Quantize::Keep);
    let msgs = user("hello");
    let s = g.render_chat(&msgs).unwrap();
    assert_eq!(
        s,
        "<|im_start|>system\nYou are a test model.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    let n = g.count_prompt_tokens(&msgs).unwrap();
    assert_eq!(n, g.tokenizer().encode(s.as_str(), false).unwrap().len());
}

#[test]
fn template_override_pycompat_and_raise_exception() {
    let f = fixture("llama");
    let mut opts = GeneratorOptions::new(&f.path);
    opts.chat_template = Some(
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad roles') }}{% endif %}[{{ m.role|upper }}] {{ m.content.strip() }}\n{% endfor %}{% if add_generation_prompt %}[A]{% endif %}".into(),
    );
    let g = Generator::load(&opts).unwrap();
    let s = g.render_chat(&user("  hi  ")).unwrap();
    assert_eq!(s, "<|endoftext|>[USER] hi\n[A]");
    let err = g.render_chat(&[ChatMessage::new("bad", "x")]).unwrap_err();
    assert!(err.to_string().contains("no bad roles"), "{err}");
}

#[test]
fn chatml_fallback_when_the_file_has_no_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "llama", 7);
    // Rewrite without the template.
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let md: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "tokenizer.chat_template")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|k| {
            (
                k.clone(),
                content.tensor(&mut file, k, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let path = write_gguf(dir.path(), "no-template.gguf", &md, &tensors);
    let g = Generator::load(&GeneratorOptions::new(&path)).unwrap();
    assert_eq!(
        g.render_chat(&user("hi")).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

fn check_generation_basics(arch: &str) {
    let f = fixture(arch);
    let g = load(&f, Quantize::Q8_0);
    let msgs = user("hello world");
    // Greedy is deterministic, across instances too.
    let (ev1, text1, ids1) = run(&g, &msgs, &greedy(24));
    let (_, text2, ids2) = run(&g, &msgs, &greedy(24));
    assert_eq!(ids1, ids2);
    assert_eq!(text1, text2);
    let (reason, prompt, completion) = done(&ev1);
    assert_eq!(reason, FinishReason::Length, "{text1:?}");
    assert_eq!(completion, 24);
    assert_eq!(prompt, g.count_prompt_tokens(&msgs).unwrap());
    // UTF-8 safety: the deltas add up to the decoded completion.
    assert_eq!(text1, g.tokenizer().decode(&ids1, true).unwrap());
    // Logprobs are log-probabilities.
    for e in &ev1 {
        if let GenerationEvent::Token { logprob, .. } = e {
            assert!(logprob.is_finite() && *logprob <= 0.0, "{logprob}");
        }
    }
    // Seeded sampling is deterministic; another seed gives another completion.
    let sampled = |seed| SamplingParams {
        temperature: 1.0,
        top_p: Some(0.95),
        top_k: Some(50),
        seed: Some(seed),
        repetition_penalty: Some(1.1),
        max_tokens: 24,
        ..Default::default()
    };
    let (_, _, a) = run(&g, &msgs, &sampled(42));
    let (_, _, b) = run(&g, &msgs, &sampled(42));
    let (_, _, c) = run(&g, &msgs, &sampled(43));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // max_tokens.
    let (ev, _, ids) = run(&g, &msgs, &greedy(3));
    assert_eq!(ids.len(), 3);
    assert_eq!(done(&ev).0, FinishReason::Length);
    // A stop sequence taken from the middle of the greedy completion: generation ends
    // before its first occurrence, which is not emitted.
    let chars: Vec<char> = text1.chars().collect();
    assert!(chars.len() >= 8, "greedy text too short: {text1:?}");
    let stop: String = chars[4..7].iter().collect();
    let at = text1.find(&stop).unwrap();
    let params = SamplingParams {
        stop: vec!["never-there".into(), stop.clone()],
        ..greedy(24)
    };
    let (ev, text, _) = run(&g, &msgs, &params);
    assert_eq!(text, text1[..at], "stop {stop:?} in {text1:?}");
    assert_eq!(done(&ev).0, FinishReason::Stop);
}

#[test]
fn llama_generation_basics() {
    check_generation_basics("llama");
}

#[test]
fn qwen2_generation_basics() {
    check_generation_basics("qwen2");
}

#[test]
fn gemma3_generation_basics() {
    check_generation_basics("gemma3");
}

#[test]
fn qwen3_generation_basics() {
    check_generation_basics("qwen3");
}

#[test]
fn qwen3_loads_with_tied_output_and_its_own_head_size() {
    let f = fixture("qwen3");
    for q in [Quantize::Keep, Quantize::Q8_0, Quantize::Q4K] {
        let g = load(&f, q);
        let info = g.info();
        assert_eq!(info.architecture, "qwen3");
        assert_eq!(info.name.as_deref(), Some("tiny-qwen3"));
        assert_eq!(info.context_length, 128);
        // <|endoftext|> and <|im_end|> both end a generation.
        assert_eq!(info.eos_token_ids, vec![0, 2]);
        assert_eq!(g.weights().backend(), "candle");
        assert!(g.weights().instances_share_weights());
        let (ev, _, ids) = run(&g, &user("hi"), &greedy(6));
        assert_eq!(ids.len(), 6, "{q:?}");
        assert_eq!(done(&ev).0, FinishReason::Length);
    }
    // Qwen3 GGUFs use the qwen2 pre-tokenizer.
    let g = load(&f, Quantize::Keep);
    let text = "<|im_start|>user\nCafé 2024 naïve 👋\n\n  code()<|im_end|>";
    let enc = g.tokenizer().encode(text, false).unwrap();
    assert_eq!(g.tokenizer().decode(enc.get_ids(), false).unwrap(), text);
    assert_eq!(enc.get_ids()[0], 1);
}

/// Qwen3's chat template (as shipped in its GGUFs): thinking is on unless the caller sets
/// `enable_thinking = false`, and earlier answers lose their reasoning.
#[test]
fn qwen3_chat_template_and_thinking_switch() {
    let f = fixture("qwen3");
    let mut opts = GeneratorOptions::new(&f.path);
    opts.chat_template = Some(include_str!("fixtures/qwen3_chat_template.jinja").into());
    let g = Generator::load(&opts).unwrap();
    let t = g.chat_template();
    assert!(t.has_thinking_switch());
    assert!(!load(&f, Quantize::Keep)
        .chat_template()
        .has_thinking_switch());
    let q = user("What is 2+2?");
    let on = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    // The generator switches thinking off unless told otherwise.
    assert_eq!(
        g.render_chat(&q).unwrap(),
        format!("{on}<think>\n\n</think>\n\n")
    );
    opts.thinking = true;
    let g = Generator::load(&opts).unwrap();
    let t = g.chat_template();
    assert_eq!(g.render_chat(&q).unwrap(), on);
    assert_eq!(t.render_with_thinking(&q, Some(true)).unwrap(), on);
    assert_eq!(
        t.render_with_thinking(&q, Some(false)).unwrap(),
        format!("{on}<think>\n\n</think>\n\n")
    );
    let history = vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "2+2?"),
        ChatMessage::new("assistant", "<think>\nadd them\n</think>\n\n4"),
        ChatMessage::new("user", "3+3?"),
    ];
    assert_eq!(
        g.render_chat(&history).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
         <|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // The rendered prompt runs.
    let (ev, _, _) = run(&g, &history, &greedy(4));
    assert_eq!(done(&ev).2, 4);
}

#[test]
fn requantize_options_load_and_generate() {
    let f = fixture("llama");
    for q in [Quantize::Keep, Quantize::Q4K, Quantize::Q8_0] {
        let g = load(&f, q);
        let (ev, _, ids) = run(&g, &user("hi"), &greedy(5));
        assert_eq!(ids.len(), 5, "{q:?}");
        assert_eq!(done(&ev).0, FinishReason::Length);
    }
}

#[test]
fn incremental_decoder_never_splits_characters() {
    let f = fixture("llama");
    let g = load(&f, Quantize::Keep);
    let tok = g.tokenizer();
    let table = bytes_to_unicode();
    let mut dec = IncrementalDecoder::new();
    let mut deltas = Vec::new();
    for b in "aé👋".bytes() {
        let id = tok.token_to_id(&table[b as usize].to_string()).unwrap();
        deltas.push(dec.push(tok, id).unwrap());
    }
    assert_eq!(deltas, ["a", "", "é", "", "", "", "👋"]);
    // An incomplete character at the end is flushed as U+FFFD.
    let id = tok.token_to_id(&table[0xF0].to_string()).unwrap();
    assert_eq!(dec.push(tok, id).unwrap(), "");
    assert_eq!(dec.flush(tok).unwrap(), "\u{FFFD}");
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let md = vec![(
        "general.architecture".to_string(),
        Value::String("mamba".into()),
    )];
    let path = write_gguf(dir.path(), "mamba.gguf", &md, &[]);
    let err = Generator::load(&GeneratorOptions::new(&path)).unwrap_err();
    assert!(
        matches!(err, LocalModelError::UnsupportedArchitecture { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("mamba"), "{err}");
}

#[test]
fn missing_or_bad_files_are_errors_naming_the_path() {
    let err = Generator::load(&GeneratorOptions::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.gguf");
    std::fs::write(&bad, b"definitely not a gguf file").unwrap();
    let err = Generator::load(&GeneratorOptions::new(&bad)).unwrap_err();
    assert!(err.to_string().contains("garbage.gguf"), "{err}");
    let f = fixture("llama");
    let mut opts = GeneratorOptions::new(&f.path);
    opts.tokenizer = Some("/nonexistent/tokenizer.json".into());
    let err = Generator::load(&opts).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
}

fn pool(g: Generator, workers: usize, queue_size: usize, timeout: Duration) -> LocalPool {
    LocalPool::new(
        Arc::new(g),
        PoolOptions {
            workers,
            queue_size,
            queue_timeout: timeout,
        },
    )
}

fn req(max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        messages: user("hello"),
        params: greedy(max_tokens),
    }
}

/// Collects a stream to (text, done).
async fn collect(
    mut s: slmgate_local_model::pool::GenerationStream,
) -> (String, (FinishReason, usize, usize)) {
    let mut text = String::new();
    let mut events = Vec::new();
    while let Some(e) = s.next().await {
        let e = e.unwrap();
        if let GenerationEvent::Token { text: t, .. } = &e {
            text.push_str(t);
        }
        events.push(e);
    }
    (text, done(&events))
}

#[tokio::test]
async fn pool_generates_and_matches_direct_generation() {
    let f = fixture("qwen2");
    let g = load(&f, Quantize::Q8_0);
    let (_, direct, _) = run(&g, &user("hello"), &greedy(10));
    let p = pool(g, 2, 4, Duration::from_secs(10));
    // The router awaits `generate` inside Send futures.
    fn assert_send<T: Send>(_: &T) {}
    let fut = p.generate(req(1));
    assert_send(&fut);
    drop(fut);
    let (a, b) = tokio::join!(p.generate(req(10)), p.generate(req(10)));
    let ((ta, da), (tb, db)) = tokio::join!(collect(a.unwrap()), collect(b.unwrap()));
    assert_eq!(ta, direct);
    assert_eq!(tb, direct);
    assert_eq!(da.0, FinishReason::Length);
    assert_eq!(db.2, 10);
}

#[tokio::test]
async fn qwen3_pool_streams_like_direct_generation() {
    let f = fixture("qwen3");
    let g = load(&f, Quantize::Q8_0);
    let (_, direct, _) = run(&g, &user("hello"), &greedy(12));
    let p = pool(g, 2, 4, Duration::from_secs(10));
    let (a, b) = tokio::join!(p.generate(req(12)), p.generate(req(12)));
    let ((ta, da), (tb, db)) = tokio::join!(collect(a.unwrap()), collect(b.unwrap()));
    assert_eq!(ta, direct);
    assert_eq!(tb, direct);
    assert_eq!(da.0, FinishReason::Length);
    assert_eq!(db.2, 12);
}

#[tokio::test]
async fn pool_queue_full_timeout_and_cancellation() {
    let f = fixture("llama");
    let g = load(&f, Quantize::Q8_0);
    // Room for 120 tokens: the worker blocks once the unread stream's buffer is full.
    let p = pool(g, 1, 1, Duration::from_millis(300));
    let busy = p.generate(req(120)).await.unwrap();
    // Queue one job (it will time out), then the queue is full.
    let p2 = p.clone();
    let queued = tokio::spawn(async move { p2.generate(req(5)).await });
    for _ in 0..100 {
        if p.queue_depth() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(p.queue_depth(), 1);
    assert!(matches!(
        p.generate(req(5)).await,
        Err(PoolError::QueueFull)
    ));
    assert!(matches!(
        queued.await.unwrap(),
        Err(PoolError::QueueTimeout)
    ));
    assert_eq!(p.queue_depth(), 0);
    // A caller that gives up while queued frees its queue slot at once.
    let waiting = tokio::time::timeout(Duration::from_millis(50), p.generate(req(5))).await;
    assert!(waiting.is_err());
    assert_eq!(p.queue_depth(), 0);
    // Dropping the busy stream cancels it and frees the worker.
    drop(busy);
    let s = tokio::time::timeout(Duration::from_secs(10), p.generate(req(4)))
        .await
        .expect("worker freed")
        .unwrap();
    let (_, d) = collect(s).await;
    assert_eq!(d.2, 4);
}

#[tokio::test]
async fn pool_rejects_long_prompts_and_bad_params() {
    let f = fixture("llama");
    let mut opts = GeneratorOptions::new(&f.path);
    opts.context_length = Some(80);
    let g = Generator::load(&opts).unwrap();
    assert_eq!(g.info().context_length, 80);
    let p = pool(g, 1, 4, Duration::from_secs(5));
    let long = GenerateRequest {
        messages: user(&"hello world ".repeat(20)),
        params: greedy(4),
    };
    match p.generate(long).await {
        Err(PoolError::ContextTooLong { prompt, max }) => {
            assert!(prompt >= 80);
            assert_eq!(max, 80);
        }
        other => panic!("expected ContextTooLong, got {other:?}"),
    }
    let bad = GenerateRequest {
        messages: user("hi"),
        params: SamplingParams {
            top_p: Some(1.5),
            ..greedy(4)
        },
    };
    assert!(matches!(
        p.generate(bad).await,
        Err(PoolError::InvalidRequest(_))
    ));
    // A completion that would overflow the context ends with `length` at the context size.
    let (_, d) = collect(p.generate(req(1000)).await.unwrap()).await;
    assert_eq!(d.0, FinishReason::Length);
    assert_eq!(d.1 + d.2, 80);
}

#[test]
fn sentencepiece_tokenizer_from_metadata() {
    use std::collections::HashMap;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in [
        "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁w", "hell", "or", "▁wor", "hello",
        "▁hello", "ld", "▁world",
    ] {
        tokens.push(p.into());
        types.push(1);
    }
    let mut md = HashMap::new();
    md.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("llama".into()),
    );
    md.insert(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
    );
    md.insert(
        "tokenizer.ggml.token_type".to_string(),
        Value::Array(types.iter().map(|t| Value::I32(*t)).collect()),
    );
    let tok = slmgate_local_model::gguf_tokenizer::tokenizer_from_gguf(&md).unwrap();
    let enc = tok.encode("hello world", false).unwrap();
    assert_eq!(enc.get_tokens(), ["▁hello", "▁world"]);
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "hello world");
    // Unknown characters fall back to bytes and decode back.
    let enc = tok.encode("hé</s>", false).unwrap();
    assert!(
        enc.get_tokens().iter().any(|t| t == "<0xC3>"),
        "{:?}",
        enc.get_tokens()
    );
    assert_eq!(enc.get_ids().last(), Some(&2));
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hé");
    // Other tokenizer models are a clear error.
    md.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("bert".into()),
    );
    let err = slmgate_local_model::gguf_tokenizer::tokenizer_from_gguf(&md).unwrap_err();
    assert!(err.to_string().contains("bert"), "{err}");
}

#[test]
fn chunked_prefill_matches_one_pass() {
    for arch in ["llama", "qwen2", "gemma3", "qwen3"] {
        let f = fixture(arch);
        let g = load(&f, Quantize::Q8_0);
        let ids: Vec<u32> = (10..50).collect();
        let mut m = g.instance().unwrap();
        if !m.supports_chunked_prefill() {
            assert_eq!(arch, "gemma3");
            continue;
        }
        let whole = m.forward(&ids, 0).unwrap();
        m.clear();
        m.forward(&ids[..25], 0).unwrap();
        let split = m.forward(&ids[25..], 25).unwrap();
        let diff = whole
            .iter()
            .zip(&split)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "{arch}: max logit difference {diff}");
    }
}
