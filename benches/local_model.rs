//! Local-model benchmark: slmgate's generator vs llama.cpp on the same GGUF, and the sentence
//! embedder's fast backend vs candle, in one run.
//!
//! ```text
//! scripts/bench-local.sh                       # installs llama-cpp-python if needed, then:
//! cargo bench --bench local_model              # every quantization, llama.cpp included
//! BENCH_QUANTS=keep,q8_0 cargo bench --bench local_model
//! BENCH_LLAMACPP=0 cargo bench --bench local_model   # skip the llama.cpp reference
//! BENCH_CANDLE=1 cargo bench --bench local_model     # add rows for candle's llama path
//! BENCH_GROUPS=embed cargo bench --bench local_model # only the embedder group
//! ```
//!
//! `BENCH_GROUPS` lists the groups to run (`generate,embed` by default); `BENCH_EMBEDDERS`
//! the embedders (`candle,f32,q8_0,int16` by default).
//!
//! The model is `SLMGATE_GGUF` or `models/SmolLM2-135M-Instruct.Q4_1.gguf`; threads are
//! `BENCH_THREADS` or every CPU. For each quantization (`q8_0`, `q4k`, `keep`) it measures,
//! with the same definitions as `scripts/llamacpp_ref.py`:
//!
//! - **decode tok/s**: 128 single-token forward passes with greedy picks after the chat prompt;
//! - **prefill ms**: one 64-token forward pass (best of 5 after a warm-up);
//! - **TTFT ms**: render + tokenize the chat prompt, prefill it, pick the first token (median
//!   of 5).
//!
//! llama.cpp runs the file as it is (`keep`), and on a Q8_0 copy made by its own quantizer for
//! the `q8_0` row, through the repository's `.venv` (or `SLMGATE_PYTHON`). Without
//! llama-cpp-python the llama.cpp columns say so and the rest still runs.
//!
//! The **embed** group loads `SLMGATE_EMBEDDER` or `models/all-MiniLM-L6-v2` four times
//! (candle's `BertModel`, the fast backend with `f32`, `q8_0` and `int16` weights) and
//! measures, on `BENCH_THREADS` threads (candle uses its own pool):
//!
//! - the median latency of embedding one ~10-token and one ~60-token query;
//! - the median time of one call with a batch of 16 queries of ~14 tokens, and texts/s;
//! - the smallest cosine similarity to candle's embeddings over those texts.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it only loads generated tiny
//! models and runs a few tokens and embeddings: a smoke test that finishes in about a second.

use slmgate_local_model::sampling::argmax;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use slmgate_local_model::embed::{EmbedBackend, Embedder, EmbedderOptions, WeightFormat};
use slmgate_local_model::generator::{ChatMessage, Generator, GeneratorOptions};
use slmgate_local_model::models::{ModelInstance, Quantize};

const PREFILL_TEXT: &str = "The quick brown fox jumps over the lazy dog. ";
const DECODE_TOKENS: usize = 128;

#[derive(Debug, Default, Clone)]
struct Figures {
    decode_tps: f64,
    prefill_ms: f64,
    ttft_ms: f64,
}

fn chat() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "What is the capital of France?")]
}

fn forward(m: &mut ModelInstance, ids: &[u32], pos: usize) -> anyhow::Result<Vec<f32>> {
    m.forward(ids, pos)
        .map_err(|e| anyhow::anyhow!("forward pass: {e}"))
}

/// Measures one loaded generator (see the module docs for the definitions).
fn measure(g: &Generator, threads: usize, prefill_len: usize) -> anyhow::Result<Figures> {
    let mut m = g.instance_with_threads(threads)?;
    let text = PREFILL_TEXT.repeat(prefill_len / 8 + 2);
    let enc = g
        .tokenizer()
        .encode(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    let ids = enc
        .get_ids()
        .get(..prefill_len)
        .ok_or_else(|| anyhow::anyhow!("prefill text is too short"))?
        .to_vec();
    let mut best = f64::MAX;
    for i in 0..6 {
        let t = Instant::now();
        forward(&mut m, &ids, 0)?;
        if i > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    let prefill_ms = best * 1e3;

    let mut ttfts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let prompt = g.prompt_tokens(&chat())?;
        let logits = forward(&mut m, &prompt, 0)?;
        std::hint::black_box(argmax(&logits));
        ttfts.push(t.elapsed().as_secs_f64());
    }
    ttfts.sort_by(f64::total_cmp);
    let ttft_ms = ttfts[ttfts.len() / 2] * 1e3;

    let prompt = g.prompt_tokens(&chat())?;
    let budget = DECODE_TOKENS.min(g.info().context_length.saturating_sub(prompt.len() + 1));
    let mut decode_tps = 0f64;
    for _ in 0..2 {
        let mut tok = argmax(&forward(&mut m, &prompt, 0)?);
        let t = Instant::now();
        for i in 0..budget {
            tok = argmax(&forward(&mut m, &[tok], prompt.len() + i)?);
        }
        decode_tps = decode_tps.max(budget as f64 / t.elapsed().as_secs_f64());
    }
    Ok(Figures {
        decode_tps,
        prefill_ms,
        ttft_ms,
    })
}

fn python() -> PathBuf {
    std::env::var_os("SLMGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

/// Runs `scripts/llamacpp_ref.py`; `Err` carries the reason to print instead of figures.
fn llamacpp(model: &Path, threads: usize, requantize: Option<&str>) -> Result<Figures, String> {
    let py = python();
    if !py.exists() {
        return Err(format!(
            "{} not found (run scripts/bench-local.sh)",
            py.display()
        ));
    }
    let mut cmd = Command::new(&py);
    cmd.arg("scripts/llamacpp_ref.py")
        .arg("--model")
        .arg(model)
        .arg("--threads")
        .arg(threads.to_string());
    if let Some(q) = requantize {
        cmd.arg("--requantize").arg(q);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", py.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("llamacpp_ref.py printed no JSON: {e}"))?;
    let num = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("no `{k}` in the output"))
    };
    Ok(Figures {
        decode_tps: num("decode_tps")?,
        prefill_ms: num("prefill_ms")?,
        ttft_ms: num("ttft_ms")?,
    })
}

fn load(model: &Path, quantize: Quantize) -> anyhow::Result<(Generator, f64)> {
    let mut opts = GeneratorOptions::new(model);
    opts.quantize = quantize;
    let t = Instant::now();
    let g = Generator::load(&opts)?;
    Ok((g, t.elapsed().as_secs_f64()))
}

fn smoke() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = slmgate_local_model::fixtures::write_tiny_model(dir.path(), "llama", 7);
    let (g, _) = load(&path, Quantize::Q8_0)?;
    let f = measure(&g, 1, 16)?;
    println!(
        "local_model smoke run (tiny random llama, {}): {:.0} tok/s, prefill {:.2} ms; \
         run with `cargo bench --bench local_model` for the real benchmark",
        g.weights().backend(),
        f.decode_tps,
        f.prefill_ms
    );
    let bert = dir.path().join("tiny-bert");
    slmgate_local_model::embed_fixtures::write_tiny_bert(&bert);
    for (backend, weights) in EMBEDDERS {
        let e = load_embedder(&bert, backend, weights, 1)?;
        let t = Instant::now();
        let v = e.embed(&["the quick brown fox", "hello world"])?;
        anyhow::ensure!(v.len() == 2 && v[0].len() == e.dim(), "bad embeddings");
        println!(
            "embed smoke run (tiny random bert, {}): {:.2} ms for 2 texts",
            e.backend(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Embedder group
// ---------------------------------------------------------------------------------------------

/// The embedder configurations compared, reference (candle) first.
const EMBEDDERS: [(EmbedBackend, WeightFormat); 4] = [
    (EmbedBackend::Candle, WeightFormat::F32),
    (EmbedBackend::Fast, WeightFormat::F32),
    (EmbedBackend::Fast, WeightFormat::Q8_0),
    (EmbedBackend::Fast, WeightFormat::Int16),
];

/// A ~10-token query (11 tokens with [CLS]/[SEP]).
const QUERY_10: &str = "How do I reverse a list in Python?";
/// A ~60-token query.
const QUERY_60: &str = "I have a large CSV file with several million rows of sensor readings, \
    and I would like to compute a rolling average per device over a five minute window without \
    loading the entire file into memory; what is the most efficient way to do this in Python \
    with pandas or another library?";

fn load_embedder(
    dir: &Path,
    backend: EmbedBackend,
    weights: WeightFormat,
    threads: usize,
) -> anyhow::Result<Embedder> {
    let mut opts = EmbedderOptions::new(dir);
    opts.backend = backend;
    opts.weights = weights;
    opts.threads = threads;
    Ok(Embedder::load(&opts)?)
}

/// The median duration of `f` in ms, over `iterations` runs after 3 warm-up runs.
fn median_ms(iterations: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn bench_embed(threads: usize) -> anyhow::Result<()> {
    let dir = std::env::var_os("SLMGATE_EMBEDDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/all-MiniLM-L6-v2"));
    if !dir.join("model.safetensors").is_file() {
        println!(
            "embed group skipped: {} not found (run scripts/fetch-models.sh or set SLMGATE_EMBEDDER)",
            dir.display()
        );
        return Ok(());
    }
    let batch: Vec<String> = (0..16)
        .map(|i| format!("What is the capital of country number {i} on the list?"))
        .collect();
    let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
    let all: Vec<&str> = [QUERY_10, QUERY_60]
        .into_iter()
        .chain(batch.clone())
        .collect();
    println!(
        "\nembedder {} · {threads} threads · kernels {:?}",
        dir.display(),
        slmgate_local_model::kernels::detected_isa()
    );
    let mut reference: Option<Vec<Vec<f32>>> = None;
    let mut rows = Vec::new();
    // BENCH_EMBEDDERS=int16 (a list of candle, f32, q8_0, int16) measures only those (for a
    // profiler); the cosine column is then against the first one listed.
    let only = std::env::var("BENCH_EMBEDDERS").ok();
    let wanted = |backend: EmbedBackend, weights: WeightFormat| {
        let name = match backend {
            EmbedBackend::Candle => "candle".to_string(),
            _ => weights.to_string(),
        };
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w.trim() == name))
    };
    for (backend, weights) in EMBEDDERS {
        if !wanted(backend, weights) {
            continue;
        }
        let e = load_embedder(&dir, backend, weights, threads)?;
        let tokens = [QUERY_10, QUERY_60, batch[0]].map(|t| e.count_tokens(t));
        let vectors = e.embed(&all)?;
        let min_cos = match &reference {
            None => 1.0,
            Some(r) => r
                .iter()
                .zip(&vectors)
                .map(|(a, b)| slmgate_local_model::embed::cosine(a, b))
                .fold(1f32, f32::min),
        };
        reference.get_or_insert(vectors);
        eprintln!("embed: {} measuring…", e.backend());
        let q10 = median_ms(200, || e.embed(&[QUERY_10]).map(drop).map_err(Into::into))?;
        let q60 = median_ms(100, || e.embed(&[QUERY_60]).map(drop).map_err(Into::into))?;
        let b16 = median_ms(30, || e.embed(&batch).map(drop).map_err(Into::into))?;
        rows.push((e.backend(), tokens, q10, q60, b16, min_cos));
    }
    if rows.is_empty() {
        println!("no embedder matches BENCH_EMBEDDERS={only:?}");
        return Ok(());
    }
    println!();
    println!(
        "| embedder | 1 query, {} tok: p50 ms | 1 query, {} tok: p50 ms | batch 16 × {} tok: p50 ms | texts/s (batch 16) | min cosine vs candle |",
        rows[0].1[0], rows[0].1[1], rows[0].1[2]
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, _, q10, q60, b16, min_cos) in &rows {
        println!(
            "| {name} | {q10:.2} | {q60:.2} | {b16:.1} | {:.0} | {min_cos:.6} |",
            16.0 / (b16 / 1e3)
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return smoke();
    }
    let groups = std::env::var("BENCH_GROUPS").unwrap_or_else(|_| "generate,embed".into());
    let groups: Vec<&str> = groups.split(',').map(str::trim).collect();
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(slmgate_local_model::threads::default_threads);
    if groups.contains(&"generate") {
        bench_generate(threads)?;
    }
    if groups.contains(&"embed") {
        bench_embed(threads)?;
    }
    Ok(())
}

fn bench_generate(threads: usize) -> anyhow::Result<()> {
    let model = std::env::var_os("SLMGATE_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !model.exists() {
        anyhow::bail!(
            "model {} not found: run scripts/fetch-models.sh or set SLMGATE_GGUF",
            model.display()
        );
    }
    let quants: Vec<String> = std::env::var("BENCH_QUANTS")
        .unwrap_or_else(|_| "q8_0,q4k,keep".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let with_llamacpp = std::env::var("BENCH_LLAMACPP").map_or(true, |v| v != "0");
    let with_candle = std::env::var("BENCH_CANDLE").is_ok_and(|v| v == "1");
    println!(
        "model {} · {threads} threads · kernels {:?}",
        model.display(),
        slmgate_local_model::kernels::detected_isa()
    );
    let mut rows: Vec<(String, String, Result<Figures, String>)> = Vec::new();
    for q in &quants {
        let quantize: Quantize = q.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let mut backends = vec![false];
        if with_candle && quantize != Quantize::Q4K {
            backends.push(true);
        }
        for force_candle in backends {
            // SAFETY (env): single-threaded at this point; only read by Generator::load.
            if force_candle {
                std::env::set_var("SLMGATE_LLAMA_BACKEND", "candle");
            } else {
                std::env::remove_var("SLMGATE_LLAMA_BACKEND");
            }
            let (g, secs) = load(&model, quantize)?;
            let name = format!("slmgate {}", g.weights().backend());
            eprintln!("{q}: {name} loaded in {secs:.2} s; measuring…");
            rows.push((
                q.clone(),
                name,
                measure(&g, threads, 64).map_err(|e| e.to_string()),
            ));
        }
        std::env::remove_var("SLMGATE_LLAMA_BACKEND");
        if with_llamacpp {
            let requant = match quantize {
                Quantize::Keep => Some(None),
                Quantize::Q8_0 => Some(Some("q8_0")),
                Quantize::Q4K => None,
            };
            if let Some(r) = requant {
                eprintln!("{q}: llama.cpp…");
                rows.push((q.clone(), "llama.cpp".into(), llamacpp(&model, threads, r)));
            }
        }
    }
    println!();
    println!(
        "| quantize | engine | decode tok/s | prefill 64 tok (ms) | TTFT (ms) | vs llama.cpp, same quantize |"
    );
    println!("|---|---|---:|---:|---:|---|");
    for (q, name, r) in &rows {
        match r {
            Ok(f) => {
                let reference = rows.iter().find_map(|(q2, n2, r2)| match r2 {
                    Ok(f2) if q2 == q && n2 == "llama.cpp" && n2 != name => Some(f2),
                    _ => None,
                });
                let vs = reference.map_or("–".to_string(), |l| {
                    format!(
                        "decode {:.2}×, prefill time {:.2}×",
                        f.decode_tps / l.decode_tps,
                        f.prefill_ms / l.prefill_ms
                    )
                });
                println!(
                    "| {q} | {name} | {:.1} | {:.1} | {:.1} | {vs} |",
                    f.decode_tps, f.prefill_ms, f.ttft_ms
                );
            }
            Err(e) => println!("| {q} | {name} | – | – | – | skipped: {e} |"),
        }
    }
    Ok(())
}
