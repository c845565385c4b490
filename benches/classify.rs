//! Router classification speed: latency at 1 client and classifications/s at 16 clients.
//!
//! ```text
//! cargo bench --bench classify          # the embedded default config, models/ (real MiniLM)
//! SLMGATE_DATA_DIR=../shared/data cargo bench --bench classify
//! BENCH_WEIGHTS=f32,int16,f32,int16 cargo bench --bench classify   # compare weight formats
//! ```
//!
//! Classifies distinct real queries (CLINC150 utterances, and arena-bench prompts cut to
//! about 64 tokens) with the same router `serve` builds from the embedded default config:
//! rules → semantic → complexity, one embedding per query, no cache hits (every text is
//! new). Measured twice: in-process (`Router::decide`) and over HTTP (`POST /v1/route`
//! against the running server). Without `--bench` (under `cargo test --all-targets`) it is a
//! quick smoke run on a tiny generated embedder.
//!
//! `BENCH_WEIGHTS` (a comma-separated list of `f32`, `q8_0`, `int16`) runs the whole bench once
//! per entry, in order, each in a fresh child process with `SLMGATE_BERT_WEIGHTS` set to it
//! (the embedder's weight format); repeat entries to interleave them on a noisy machine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slmgate_gateway::auto::AutoRouter;
use slmgate_routing::engine::{Availability, Router};
use slmgate_routing::query::Query;

fn data_dir() -> PathBuf {
    std::env::var_os("SLMGATE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// Distinct short queries: CLINC150 utterances, or generated ones when the data is absent.
fn short_queries(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Ok(raw) = std::fs::read_to_string(data_dir().join("clinc150.jsonl")) {
        for line in raw.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(t) = v["text"].as_str() {
                    if seen.insert(t.to_string()) {
                        out.push(t.to_string());
                    }
                }
            }
        }
    }
    let words = [
        "what", "is", "the", "weather", "in", "paris", "tomorrow", "book", "a", "table", "for",
        "two", "how", "do", "i", "reset", "my", "password", "transfer", "money", "to",
    ];
    let mut x = 7u64;
    while out.len() < n {
        let len = 4 + (out.len() % 8);
        let q: Vec<&str> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                words[(x >> 33) as usize % words.len()]
            })
            .collect();
        let q = format!("{} {}", q.join(" "), out.len());
        if seen.insert(q.clone()) {
            out.push(q);
        }
    }
    // Spread over intents rather than taking the first intent's rows.
    let stride = (out.len() / n).max(1);
    out.into_iter().step_by(stride).take(n).collect()
}

/// Real prompts (arena-bench) cut to at most `max` tokens of the embedder, special tokens
/// included, taken from those at least `max - 8` tokens long: the top of the "≤ 64-token
/// query" range. Generated prompts fill in when the data is absent.
fn long_queries(n: usize, max: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let mut prompts: Vec<String> = Vec::new();
    if let Ok(raw) = std::fs::read_to_string(data_dir().join("arena-bench-v1.jsonl")) {
        for line in raw.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(t) = v["prompt"].as_str() {
                    prompts.push(t.to_string());
                }
            }
        }
    }
    let mut i = 0;
    let mut out = Vec::new();
    let mut next = prompts.into_iter();
    while out.len() < n && i < 100 * n {
        let p = next.next().unwrap_or_else(|| {
            i += 1;
            format!("Explain, step by step and with an example, how {i} distinct processes share memory safely in a modern operating system, and compare the costs of the approaches you describe. ").repeat(3)
        });
        if count(&p) + 8 < max {
            continue;
        }
        // The longest prefix (in characters) that fits in `max` tokens.
        let chars: Vec<(usize, char)> = p.char_indices().collect();
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let end = chars.get(mid).map_or(p.len(), |c| c.0);
            if count(&p[..end]) <= max {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let end = chars.get(lo).map_or(p.len(), |c| c.0);
        let cut = p[..end].trim_end().to_string();
        if count(&cut) + 8 >= max {
            out.push(cut);
        }
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn sequential(router: &Router, qs: &[String]) -> Vec<Duration> {
    let mut t = Vec::with_capacity(qs.len());
    for q in qs {
        let started = Instant::now();
        let d = router
            .decide(&Query::from_text(q), Availability::Ignore)
            .await
            .expect("decide");
        std::hint::black_box(d);
        t.push(started.elapsed());
    }
    t.sort();
    t
}

async fn concurrent(auto: Arc<AutoRouter>, qs: Arc<Vec<String>>, clients: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (auto, qs, next) = (auto.clone(), qs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(q) = qs.get(i) else { break };
                let d = auto
                    .router
                    .decide(&Query::from_text(q), Availability::Ignore)
                    .await
                    .expect("decide");
                std::hint::black_box(d);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    qs.len() as f64 / started.elapsed().as_secs_f64()
}

async fn http_sequential(addr: std::net::SocketAddr, qs: &[String]) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/route");
    let mut t = Vec::with_capacity(qs.len());
    for q in qs {
        let started = Instant::now();
        let resp = client
            .post(&url)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": q}]}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
        t.push(started.elapsed());
    }
    t.sort();
    t
}

async fn http_concurrent(addr: std::net::SocketAddr, qs: Arc<Vec<String>>, clients: usize) -> f64 {
    let client = reqwest::Client::new();
    let url = Arc::new(format!("http://{addr}/v1/route"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, qs, next) = (client.clone(), url.clone(), qs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(q) = qs.get(i) else { break };
                let resp = client
                    .post(url.as_str())
                    .json(&json!({"model": "auto", "messages": [{"role": "user", "content": q}]}))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    qs.len() as f64 / started.elapsed().as_secs_f64()
}

fn config(bench: bool, tmp: &Path) -> Option<slmgate_config::Config> {
    if bench {
        let models = std::env::var("SLMGATE_MODELS_DIR").unwrap_or_else(|_| "models".into());
        if !Path::new(&models)
            .join("all-MiniLM-L6-v2/model.safetensors")
            .exists()
        {
            eprintln!("classify bench: {models}/all-MiniLM-L6-v2 missing (run scripts/fetch-models.sh); skipped");
            return None;
        }
        // The embedded default, with the remote side "available" (a loopback URL) so that
        // routing classifies instead of short-circuiting to local.
        let env = move |k: &str| match k {
            "OPENAI_BASE_URL" => Some("http://127.0.0.1:9/v1".to_string()),
            "SLMGATE_MODELS_DIR" => Some(models.clone()),
            "SLMGATE_LISTEN" => Some("127.0.0.1:0".to_string()),
            _ => std::env::var(k).ok(),
        };
        let cfg = slmgate_config::load_str_with_env(
            slmgate_config::DEFAULT_CONFIG_YAML,
            "<embedded default>",
            &env,
        )
        .expect("default config");
        return Some(cfg);
    }
    let bert = tmp.join("bert");
    slmgate_local_model::embed_fixtures::write_tiny_bert(&bert);
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
backends:
  - {{name: up, kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  - {{name: remote, backend: up}}
  - {{name: local, backend: up, model: small}}
embedder: {{enabled: true, model: {}}}
router:
  strategies: [rules, semantic]
  semantic:
    routes:
      - {{name: greeting, target: local, examples: ["hello there", "good morning"]}}
"#,
        bert.display()
    );
    Some(slmgate_config::load_str_with_env(&yaml, "smoke.yaml", &|_| None).expect("smoke config"))
}

/// Runs this bench again in a child process per `BENCH_WEIGHTS` entry. Returns false when
/// `BENCH_WEIGHTS` is unset (run in this process).
fn run_per_weight_format() -> bool {
    let Ok(list) = std::env::var("BENCH_WEIGHTS") else {
        return false;
    };
    let exe = std::env::current_exe().expect("current exe");
    for format in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        println!("== embedder weights: {format}");
        let status = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env_remove("BENCH_WEIGHTS")
            .env("SLMGATE_BERT_WEIGHTS", format)
            .status()
            .expect("run the bench for one weight format");
        assert!(status.success(), "bench with weights {format}: {status}");
    }
    true
}

fn main() {
    if run_per_weight_format() {
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(cfg) = config(bench, tmp.path()) else {
        return;
    };
    let (n1, n16, nlong) = if bench {
        (400, 4000, 200)
    } else {
        (20, 64, 10)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let gw = slmgate_gateway::build::build_gateway(&cfg).expect("gateway");
        let auto = gw.router.clone().expect("the config has a router");
        let router = &auto.router;
        let all = short_queries(n1 + n16 + 50);
        let (warm, rest) = all.split_at(50);
        let (one, many) = rest.split_at(n1);
        let count = |t: &str| {
            gw.embedder
                .as_ref()
                .map_or(t.len() / 4, |e| e.routing_model().count_tokens(t))
        };
        let long = long_queries(nlong, 64, &count);
        let lens: Vec<usize> = long.iter().map(|t| count(t)).collect();
        sequential(router, warm).await;

        let t1 = sequential(router, one).await;
        let tl = sequential(router, &long).await;
        let rate = concurrent(auto.clone(), Arc::new(many.to_vec()), 16).await;
        println!(
            "classify (in-process Router::decide, distinct queries, {} strategies, embedder {})",
            router.strategies.len(),
            gw.embedder
                .as_ref()
                .map_or("none", |e| e.routing_model().backend())
        );
        println!(
            "  1 client, short queries (CLINC150, n={}): p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
            t1.len(),
            pct(&t1, 0.5),
            pct(&t1, 0.9),
            pct(&t1, 0.99)
        );
        println!(
            "  1 client, 56–64-token queries (n={}, {}–{} tokens, mean {:.1}): p50 {:.2} ms  p90 {:.2} ms",
            tl.len(),
            lens.iter().min().unwrap_or(&0),
            lens.iter().max().unwrap_or(&0),
            lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64,
            pct(&tl, 0.5),
            pct(&tl, 0.9)
        );
        println!(
            "  16 clients (n={}): {rate:.0} classifications/s",
            many.len()
        );
        // The complexity scorer alone (features + ranker + calibrator, no embedding): what
        // a `strategies: [rules, complexity]` router spends per query.
        if let Some(c) = &router.complexity {
            let mut times = Vec::with_capacity(long.len() * 20);
            for _ in 0..20 {
                for q in &long {
                    let q = slmgate_routing::query::Query::from_text(q);
                    let t = std::time::Instant::now();
                    std::hint::black_box((c.score)(&q));
                    times.push(t.elapsed());
                }
            }
            times.sort();
            println!(
                "  complexity scorer alone, 56–64-token queries (n={}): p50 {:.1} µs  p99 {:.1} µs",
                times.len(),
                pct(&times, 0.5) * 1000.0,
                pct(&times, 0.99) * 1000.0
            );
        }

        // Over HTTP: the real server's /v1/route.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = slmgate_gateway::start_on(&cfg, listener)
            .await
            .expect("server");
        let addr = running.addr;
        // A fresh server has a fresh embedding cache: the same queries are new to it.
        http_sequential(addr, warm).await;
        let th = http_sequential(addr, one).await;
        let hrate = http_concurrent(addr, Arc::new(many.to_vec()), 16).await;
        println!("classify over HTTP (POST /v1/route)");
        println!(
            "  1 client (n={}): p50 {:.2} ms  p90 {:.2} ms",
            th.len(),
            pct(&th, 0.5),
            pct(&th, 0.9)
        );
        println!(
            "  16 clients (n={}): {hrate:.0} classifications/s",
            many.len()
        );
    });
}
