//! The embedded model through the HTTP API: time to first token and tokens/s with 1 and 4
//! concurrent streaming clients, and the gateway process's resident memory.
//!
//! ```text
//! cargo bench --bench local_http                    # the default model in models/
//! SLMGATE_GGUF=path/to/model.gguf cargo bench --bench local_http
//! LOCAL_WORKERS=2 cargo bench --bench local_http    # workers of the local backend
//! LOCAL_QUANTIZE=q8_0 cargo bench --bench local_http # keep (default), q8_0, q4k
//! ```
//!
//! Runs the real `slmgate` binary (release) on a config with one `kind: local` backend.
//! Without `--bench` (under `cargo test --all-targets`) it is a quick smoke test on a tiny
//! generated model.

mod support;

use support::{free_port, Gateway};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

/// VmRSS and VmHWM (peak) of `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct One {
    ttft: Duration,
    total: Duration,
    tokens: u64,
}

/// One streaming request; returns TTFT (first content chunk), total time and tokens.
async fn one(client: &reqwest::Client, url: &str, prompt: &str, max_tokens: u32) -> One {
    let started = Instant::now();
    let resp = client
        .post(url)
        .json(&json!({
            "model": "local",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "local request failed");
    let mut stream = resp.bytes_stream();
    let mut ttft = None;
    let mut tokens = 0;
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("stream");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let event: String = buf.drain(..i + 2).collect();
            let data = event.trim().trim_start_matches("data: ");
            if data == "[DONE]" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if ttft.is_none()
                && v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            {
                ttft = Some(started.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    let total = started.elapsed();
    One {
        ttft: ttft.unwrap_or(total),
        total,
        tokens,
    }
}

/// `/v1/embeddings` with one short query per request (cache off): latency at 1 client and
/// throughput at 16 (where the batcher gathers concurrent texts into one forward pass).
async fn embeddings(client: &reqwest::Client, url: &str, smoke: bool) {
    let secs = if smoke { 0.2 } else { 5.0 };
    println!();
    println!("/v1/embeddings, one ~10-token query per request, cache off, {secs} s per row");
    println!(
        "{:>8} {:>10} {:>10} {:>10}",
        "clients", "req/s", "p50 ms", "p99 ms"
    );
    for clients in [1usize, 16] {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let runs = futures::future::join_all((0..clients).map(|c| {
            let client = client.clone();
            async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    // Distinct texts: nothing is served from a cache.
                    let text = format!("How do I reverse a list in Python, variant {c}-{i}?");
                    i += 1;
                    let t = Instant::now();
                    let resp = client
                        .post(url)
                        .json(&json!({"model": "minilm", "input": text}))
                        .send()
                        .await
                        .expect("embeddings request");
                    assert_eq!(resp.status(), 200);
                    let _ = resp.bytes().await;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            }
        }))
        .await;
        let wall = started.elapsed().as_secs_f64();
        let mut all: Vec<f64> = runs.into_iter().flatten().collect();
        let n = all.len();
        all.sort_by(f64::total_cmp);
        let p99 = all.get(n * 99 / 100).copied().unwrap_or(0.0);
        println!(
            "{:>8} {:>10.0} {:>10.2} {:>10.2}",
            clients,
            n as f64 / wall,
            median(all),
            p99
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().expect("tempdir");
    let model: PathBuf = if smoke {
        slmgate_local_model::fixtures::write_tiny_model(tmp.path(), "llama", 7)
    } else {
        let p = std::env::var_os("SLMGATE_GGUF")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let dir = std::env::var_os("SLMGATE_MODELS_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
                dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")
            });
        if !p.exists() {
            println!(
                "SKIPPED: {} not found (scripts/fetch-models.sh)",
                p.display()
            );
            return;
        }
        p
    };
    let embedder_dir: Option<PathBuf> = if smoke {
        let d = tmp.path().join("tiny-bert");
        slmgate_local_model::embed_fixtures::write_tiny_bert(&d);
        Some(d)
    } else {
        let d = std::env::var_os("SLMGATE_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
            .join("all-MiniLM-L6-v2");
        d.exists().then_some(d)
    };
    let embedder_cfg = embedder_dir
        .as_ref()
        .map(|d| {
            format!(
                "embedder:\n  enabled: true\n  model: {}\n  name: minilm\n  cache_entries: 0\n",
                d.display()
            )
        })
        .unwrap_or_default();
    let workers: usize = std::env::var("LOCAL_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let quantize = std::env::var("LOCAL_QUANTIZE").unwrap_or_else(|_| "keep".into());
    let (rounds, max_tokens) = if smoke { (1, 4) } else { (5, 64) };

    let port = free_port();
    let cfg_path = tmp.path().join("bench.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "listen: 127.0.0.1:{port}\nbackends:\n  - name: slm\n    kind: local\n    enabled: true\n    model: {}\n    workers: {workers}\n    quantize: {quantize}\n    queue_size: 64\nmodels:\n  - name: local\n    backend: slm\n{embedder_cfg}",
            model.display()
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_slmgate"))
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .env("SLMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start slmgate");
    let pid = child.id();
    let _gw = Gateway(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let url = format!("http://{addr}/v1/chat/completions");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (rss_idle, _) = rss_mib(pid);
        let client = reqwest::Client::new();
        let prompt = "Write a short paragraph about why the sky is blue.";
        // Warm-up.
        one(&client, &url, prompt, 4).await;
        println!(
            "local model over HTTP: {} (quantize {quantize}, workers {workers}), max_tokens {max_tokens}, streaming",
            model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        );
        println!(
            "{:>8} {:>12} {:>12} {:>16} {:>16}",
            "clients", "TTFT p50 ms", "TTFT max ms", "tok/s per client", "tok/s aggregate"
        );
        for clients in [1usize, 4] {
            let mut ttfts = Vec::new();
            let mut per_client = Vec::new();
            let mut total_tokens = 0u64;
            let started = Instant::now();
            for _ in 0..rounds {
                let runs = futures::future::join_all(
                    (0..clients).map(|_| one(&client, &url, prompt, max_tokens)),
                )
                .await;
                for r in runs {
                    ttfts.push(r.ttft.as_secs_f64() * 1000.0);
                    let gen_time = (r.total - r.ttft).as_secs_f64();
                    if r.tokens > 1 && gen_time > 0.0 {
                        per_client.push((r.tokens - 1) as f64 / gen_time);
                    }
                    total_tokens += r.tokens;
                }
            }
            let wall = started.elapsed().as_secs_f64();
            let ttft_max = ttfts.iter().copied().fold(0.0, f64::max);
            println!(
                "{:>8} {:>12.1} {:>12.1} {:>16.1} {:>16.1}",
                clients,
                median(ttfts),
                ttft_max,
                median(per_client),
                total_tokens as f64 / wall
            );
        }
        if embedder_dir.is_some() {
            embeddings(&client, &format!("http://{addr}/v1/embeddings"), smoke).await;
        }
        let (rss, peak) = rss_mib(pid);
        println!("gateway RSS: {rss_idle:.0} MiB before the first request, {rss:.0} MiB after the run, peak {peak:.0} MiB");
    });
}
