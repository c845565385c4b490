//! Load benchmark: the mock upstream directly vs through slmgate, in one run.
//!
//! ```text
//! cargo bench --bench gateway_load            # 5 s per scenario
//! BENCH_SECS=10 cargo bench --bench gateway_load
//! BENCH_CONFIG_EXTRA=benches/policy-extra.yaml cargo bench --bench gateway_load
//! BENCH_OTLP=1 cargo bench --bench gateway_load   # with OpenTelemetry tracing on (all sampled)
//! BENCH_OTLP=0.1 cargo bench --bench gateway_load # ... sampling 10 % of traces
//! ```
//!
//! `BENCH_SLMGATE_BIN=path` benchmarks that gateway binary instead of the target dir's.
//! With `BENCH_OTLP`, the gateway exports its spans to an OTLP/HTTP sink in this process
//! (on the mock's thread) that only counts what it receives.
//!
//! The mock upstream runs on its own single-threaded runtime in this process, the gateway is
//! the real `slmgate` binary in a child process (release build, logs at `warn`), and the load
//! generator is a closed loop of N keep-alive HTTP/1.1 connections (hyper) on its own runtime.
//! Everything shares this machine's cores, exactly as a sidecar gateway would.
//! Printed: req/s, p50 and p99 latency for each scenario, and the gateway's added latency.

mod support;

use support::{free_port, Gateway};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::net::TcpStream;

const BODY: &str = r#"{"model":"remote","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}],"temperature":0}"#;

struct Stats {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    overhead_p50_us: Option<u64>,
}

async fn one_connection(
    addr: SocketAddr,
    path: Arc<str>,
    host: Arc<str>,
    until: Instant,
    warmup_until: Instant,
) -> (Histogram<u64>, Histogram<u64>, u64) {
    let mut lat = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut overhead = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => return (lat, overhead, 1),
    };
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
        return (lat, overhead, 1);
    };
    tokio::spawn(conn);
    while Instant::now() < until {
        let req = Request::post(&*path)
            .header("host", &*host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("request");
        let t = Instant::now();
        if sender.ready().await.is_err() {
            errors += 1;
            break;
        }
        match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let oh = resp
                    .headers()
                    .get("x-slmgate-overhead-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<f64>().ok());
                let body = resp.into_body().collect().await;
                let us = t.elapsed().as_micros() as u64;
                if !ok || body.is_err() {
                    errors += 1;
                } else if t >= warmup_until {
                    let _ = lat.record(us.max(1));
                    if let Some(ms) = oh {
                        let _ = overhead.record(((ms * 1000.0) as u64).max(1));
                    }
                }
            }
            Err(_) => errors += 1,
        }
    }
    (lat, overhead, errors)
}

async fn run(addr: SocketAddr, path: &str, conns: usize, secs: f64) -> Stats {
    let warm = Duration::from_secs_f64((secs * 0.2).min(1.0));
    let start = Instant::now();
    let warmup_until = start + warm;
    let until = warmup_until + Duration::from_secs_f64(secs);
    let path: Arc<str> = path.into();
    let host: Arc<str> = addr.to_string().into();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(one_connection(
                addr,
                path.clone(),
                host.clone(),
                until,
                warmup_until,
            ))
        })
        .collect();
    let mut lat = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut oh = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for t in tasks {
        let (l, o, e) = t.await.expect("load task");
        lat.add(&l).expect("merge");
        oh.add(&o).expect("merge");
        errors += e;
    }
    Stats {
        rps: lat.len() as f64 / secs,
        p50_us: lat.value_at_quantile(0.5),
        p99_us: lat.value_at_quantile(0.99),
        errors,
        overhead_p50_us: (!oh.is_empty()).then(|| oh.value_at_quantile(0.5)),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    // as a quick smoke test that the harness and the gateway still work.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 0.3 } else { 5.0 });
    let extra = std::env::var("BENCH_CONFIG_EXTRA")
        .ok()
        .map(|p| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .unwrap_or_default();
    let otlp_ratio: Option<f64> = std::env::var("BENCH_OTLP").ok().map(|v| {
        v.parse().unwrap_or_else(|_| {
            panic!("BENCH_OTLP=`{v}`: expected a sampling ratio such as 1 or 0.1")
        })
    });
    let label = std::env::var("BENCH_LABEL").unwrap_or_else(|_| match otlp_ratio {
        Some(r) => format!("pass-through, OTLP tracing at sample ratio {r}"),
        None => "pass-through".into(),
    });
    let sink = Arc::new(OtlpSink::default());

    // The mock upstream: its own single-threaded runtime on its own thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let sink_state = sink.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("mock runtime");
        rt.block_on(async move {
            let mock = mock_provider::Mock::start_with(false).await;
            let sink_addr = start_sink(sink_state).await;
            tx.send((mock.addr(), sink_addr)).expect("send addr");
            std::future::pending::<()>().await;
        });
    });
    let (mock_addr, sink_addr) = rx.recv().expect("mock addr");
    let extra = match otlp_ratio {
        Some(r) => format!(
            "{extra}\ntelemetry:\n  otlp_endpoint: http://{sink_addr}\n  sample_ratio: {r}\n"
        ),
        None => extra,
    };

    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("bench.yaml");
    let cfg = format!(
        "listen: 127.0.0.1:{port}\nlimits:\n  max_concurrent_requests: 4096\nbackends:\n  - name: mock\n    kind: openai\n    base_url: http://{mock_addr}/v1\n    api_key: sk-bench\nmodels:\n  - name: remote\n    backend: mock\n    model: mock-model\n{extra}"
    );
    std::fs::write(&cfg_path, cfg).expect("write config");
    // BENCH_SLMGATE_BIN: another build of the gateway (the target dir's binary may be
    // rebuilt by someone else meanwhile).
    let bin =
        std::env::var("BENCH_SLMGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_slmgate").into());
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .env("SLMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start slmgate");
    let _gw = Gateway(child);
    let gw_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("load runtime");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(gw_addr).await.is_err() {
            assert!(Instant::now() < deadline, "gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("slmgate load benchmark ({label}), {secs} s per scenario, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        println!("{:<28} {:>6} {:>10} {:>10} {:>10} {:>7}", "scenario", "conns", "req/s", "p50 ms", "p99 ms", "errors");
        let mut results = Vec::new();
        for conns in [16usize, 1] {
            for (name, addr) in [("mock direct", mock_addr), ("through slmgate", gw_addr)] {
                let s = run(addr, "/v1/chat/completions", conns, secs).await;
                println!(
                    "{:<28} {:>6} {:>10.0} {:>10.3} {:>10.3} {:>7}",
                    name,
                    conns,
                    s.rps,
                    s.p50_us as f64 / 1000.0,
                    s.p99_us as f64 / 1000.0,
                    s.errors
                );
                results.push((name, conns, s));
            }
        }
        let get = |n: &str, c: usize| results.iter().find(|(a, b, _)| *a == n && *b == c).map(|r| &r.2);
        if let (Some(d1), Some(g1), Some(d16), Some(g16)) = (
            get("mock direct", 1),
            get("through slmgate", 1),
            get("mock direct", 16),
            get("through slmgate", 16),
        ) {
            println!();
            println!(
                "added p50 latency at 1 connection: {:.3} ms (gateway-reported overhead p50 {:.3} ms)",
                (g1.p50_us as f64 - d1.p50_us as f64) / 1000.0,
                g1.overhead_p50_us.unwrap_or(0) as f64 / 1000.0
            );
            println!(
                "throughput through slmgate at 16 connections: {:.0} req/s ({:.0}% of the mock alone)",
                g16.rps,
                100.0 * g16.rps / d16.rps.max(1.0)
            );
        }
        if otlp_ratio.is_some() {
            // The batch processor exports every 5 s (or per 512 spans): most have arrived.
            tokio::time::sleep(Duration::from_secs(6)).await;
            println!(
                "OTLP sink received {} export requests, {} KiB",
                sink.requests.load(Ordering::Relaxed),
                sink.bytes.load(Ordering::Relaxed) / 1024
            );
        }
    });
}

/// Counts OTLP/HTTP export requests (the bench measures the gateway, not a collector).
#[derive(Default)]
struct OtlpSink {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn start_sink(sink: Arc<OtlpSink>) -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.requests.fetch_add(1, Ordering::Relaxed);
                sink.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind OTLP sink");
    let addr = listener.local_addr().expect("sink addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
