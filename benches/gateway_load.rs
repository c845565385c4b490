//! Load benchmark: the mock upstream directly vs through slmgate, in one run.
//!
//! ```text
//! cargo bench --bench gateway_load            # 10 s per scenario, in 10 round-robin slices
//! BENCH_SECS=12 BENCH_ROUNDS=6 cargo bench --bench gateway_load
//! BENCH_CONFIGS=plain cargo bench --bench gateway_load   # only the plain pass-through
//! ```
//!
//! Several gateway configurations are measured in the same run, each against the same mock
//! (so the ratios are what counts on a shared, noisy machine):
//! - `plain`: one backend, one alias, no keys: the pass-through figure (sent the same keyed,
//!   distinct-prompt requests as the others, which it accepts without checking the key).
//! - `policies`: `benches/configs/policies.yaml`: 20 policy rules, PII scan on, the exact
//!   cache on, 100 client keys with budgets and rate limits (the issue-5 benchmark). Every
//!   request carries one of the keys and a distinct prompt (so the cache misses: the worst
//!   case), one in ten with an e-mail address the PII rules act on.
//! - `observability`: `plain` plus usage records (SQLite in a temp dir) and OpenTelemetry
//!   tracing (head sampling ratio `BENCH_OTLP`, default 0.1, a production setting for a
//!   gateway at thousands of requests per second) exported to an OTLP/HTTP sink in this
//!   process (on the mock's thread) that only counts what it receives; metrics are always
//!   on. The issue-6 benchmark.
//! - `observability-all-traced`: the same with every request traced (ratio 1).
//! - `everything`: `policies` and `observability` together.
//! - `cache-local` / `cache-shared`: `plain` with the exact cache on, in memory only or also
//!   in Redis (`cache.exact.shared`, Redis at `BENCH_REDIS`, default redis://127.0.0.1:6379;
//!   both skipped when none answers). Every request misses (distinct prompts), so
//!   `cache-shared` pays a Redis lookup and a write per request: its worst case.
//!
//! `BENCH_SLMGATE_BIN=path` benchmarks that gateway binary instead of the target dir's;
//! `BENCH_SLICES=1` also prints each round-robin slice's req/s.
//!
//! The mock upstream runs on its own single-threaded runtime in this process, the gateway is
//! the real `slmgate` binary in a child process (release build, logs at `warn`), and the load
//! generator is a closed loop of N keep-alive HTTP/1.1 connections (hyper) on its own runtime.
//! Everything shares this machine's cores, exactly as a sidecar gateway would.
//! Printed: req/s, p50 and p99 latency for each scenario, the gateway process's CPU time per
//! answered request (user + system, all threads, warm-up included: the steadiest figure on
//! a noisy machine), its minor page faults and context switches per answered request (costs
//! an instruction count misses: each is microseconds in a VM), and the gateway's added
//! latency.

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
    /// Answered requests including the warm-up (what the process CPU time covers).
    answered: u64,
    /// req/s of each round-robin slice, in order.
    slices: Vec<f64>,
}

/// CPU seconds (user, system; all threads) a process has used so far, from
/// `/proc/PID/stat`; `None` where there is no procfs.
fn cpu_secs(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = f.get(11)?.parse().ok()?;
    let sys: f64 = f.get(12)?.parse().ok()?;
    Some((user / clock_ticks(), sys / clock_ticks()))
}

/// Minor page faults and context switches (voluntary + involuntary, summed over the live
/// threads) of a process so far, from procfs: costs of a request that instruction counts miss
/// (a fault or a thread wake-up in a VM costs microseconds).
fn faults_switches(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let minflt: u64 = rest.split_whitespace().nth(7)?.parse().ok()?;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some((minflt, switches))
}

/// `sysconf(_SC_CLK_TCK)`, from `getconf` (100 on every Linux seen).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// What each request of a scenario looks like.
#[derive(Clone, Copy)]
enum Load {
    /// The same body every time, no key.
    Fixed,
    /// A client key (by connection) and a distinct prompt per request, one in ten with PII.
    Keyed,
}

/// The next prompt number (see [`keyed_body`]).
static PROMPT_SEQ: AtomicU64 = AtomicU64::new(0);

fn keyed_body(conn: usize, n: u64) -> Bytes {
    let pii = if n % 10 == 0 {
        " My e-mail is jane.doe@example.com."
    } else {
        ""
    };
    Bytes::from(format!(
        r#"{{"model":"remote","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Question {n} from client {conn}: what is the capital of France?{pii}"}}],"temperature":0}}"#
    ))
}

async fn one_connection(
    addr: SocketAddr,
    path: Arc<str>,
    host: Arc<str>,
    until: Instant,
    warmup_until: Instant,
    load: Load,
    conn_no: usize,
) -> (Histogram<u64>, Histogram<u64>, u64, u64) {
    let mut answered = 0u64;
    let mut lat = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut overhead = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (lat, overhead, 1, 0);
    };
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
        return (lat, overhead, 1, 0);
    };
    tokio::spawn(conn);
    let key = format!("Bearer bench-key-{}", conn_no % BENCH_KEYS);
    while Instant::now() < until {
        // Distinct across connections, rounds and scenarios: the cache never hits.
        let n = PROMPT_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut req = Request::post(&*path)
            .header("host", &*host)
            .header("content-type", "application/json");
        let body = match load {
            Load::Fixed => Bytes::from_static(BODY.as_bytes()),
            Load::Keyed => {
                req = req.header("authorization", &key);
                keyed_body(conn_no, n)
            }
        };
        let req = req.body(Full::new(body)).expect("request");
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
                    continue;
                }
                answered += 1;
                if t >= warmup_until {
                    let _ = lat.record(us.max(1));
                    if let Some(ms) = oh {
                        let _ = overhead.record(((ms * 1000.0) as u64).max(1));
                    }
                }
            }
            Err(_) => errors += 1,
        }
    }
    (lat, overhead, errors, answered)
}

/// What one or more runs against a target measured.
struct Raw {
    lat: Histogram<u64>,
    oh: Histogram<u64>,
    errors: u64,
    answered: u64,
    /// Measured seconds (warm-ups excluded).
    secs: f64,
    /// The gateway's CPU seconds over the runs (warm-ups included), when known.
    cpu: Option<(f64, f64)>,
    /// The gateway's minor page faults and context switches over the runs, when known.
    events: Option<(u64, u64)>,
    /// req/s of each slice, in order.
    slices: Vec<f64>,
}

impl Raw {
    fn new() -> Self {
        Raw {
            lat: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            oh: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            errors: 0,
            answered: 0,
            secs: 0.0,
            cpu: Some((0.0, 0.0)),
            events: Some((0, 0)),
            slices: Vec::new(),
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            rps: self.lat.len() as f64 / self.secs.max(1e-9),
            p50_us: self.lat.value_at_quantile(0.5),
            p99_us: self.lat.value_at_quantile(0.99),
            errors: self.errors,
            overhead_p50_us: (!self.oh.is_empty()).then(|| self.oh.value_at_quantile(0.5)),
            answered: self.answered,
            slices: self.slices.clone(),
        }
    }
}

/// One run of `secs` (after a warm-up) against `addr`, added to `raw`.
async fn run(raw: &mut Raw, addr: SocketAddr, path: &str, conns: usize, secs: f64, load: Load) {
    let warm = Duration::from_secs_f64((secs * 0.2).min(1.0));
    let start = Instant::now();
    let warmup_until = start + warm;
    let until = warmup_until + Duration::from_secs_f64(secs);
    let path: Arc<str> = path.into();
    let host: Arc<str> = addr.to_string().into();
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            tokio::spawn(one_connection(
                addr,
                path.clone(),
                host.clone(),
                until,
                warmup_until,
                load,
                i,
            ))
        })
        .collect();
    for t in tasks {
        let (l, o, e, a) = t.await.expect("load task");
        raw.lat.add(&l).expect("merge");
        raw.oh.add(&o).expect("merge");
        raw.errors += e;
        raw.answered += a;
    }
    raw.secs += secs;
}

/// Client keys generated for the keyed configurations.
const BENCH_KEYS: usize = 100;

/// `keys:` with [`BENCH_KEYS`] keys in 10 teams, each with a budget and rate limits far
/// above what the benchmark spends, so every check runs and none refuses.
fn bench_keys_yaml() -> String {
    let mut y = String::from("teams:\n");
    for t in 0..10 {
        y.push_str(&format!(
            "  - {{ name: team-{t}, budget: {{ daily_usd: 100000 }} }}\n"
        ));
    }
    y.push_str("keys:\n");
    for k in 0..BENCH_KEYS {
        y.push_str(&format!(
            "  - name: key-{k}\n    key: bench-key-{k}\n    team: team-{}\n    tags: [{}]\n    budget: {{ daily_usd: 100000 }}\n    rate_limit: {{ requests_per_minute: 10000000, tokens_per_minute: 1000000000 }}\n",
            k % 10,
            if k % 2 == 0 { "free" } else { "paid" }
        ));
    }
    y
}

/// One gateway configuration under test.
struct Scenario {
    name: &'static str,
    extra: String,
    load: Load,
}

fn scenarios(sink_addr: SocketAddr, otlp_ratio: f64) -> Vec<Scenario> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let root = env!("CARGO_MANIFEST_DIR");
    // The plain gateway gets the same traffic as the others (a key header it ignores, a
    // distinct prompt per request), so the ratios measure the configuration alone.
    let obs_at = |ratio: f64| {
        format!(
            "usage:\n  database: sqlite://${{SLMGATE_DATA_DIR}}/usage.db\ntelemetry:\n  otlp_endpoint: http://{sink_addr}\n  sample_ratio: {ratio}\n"
        )
    };
    let obs = obs_at(otlp_ratio);
    let mut out = vec![
        Scenario {
            name: "plain",
            extra: String::new(),
            load: Load::Keyed,
        },
        Scenario {
            name: "observability",
            extra: obs.clone(),
            load: Load::Keyed,
        },
        // Every request traced, whatever `BENCH_OTLP` says: the worst case.
        Scenario {
            name: "observability-all-traced",
            extra: obs_at(1.0),
            load: Load::Keyed,
        },
    ];
    // BENCH_POLICIES=FILE measures another policies file (ablations); BENCH_NO_KEYS=1 leaves
    // the 100 keys out (requests still carry one).
    let policies_file = std::env::var("BENCH_POLICIES")
        .unwrap_or_else(|_| format!("{root}/benches/configs/policies.yaml"));
    if let Some(policies) = read(&policies_file) {
        let keys = if std::env::var_os("BENCH_NO_KEYS").is_some() {
            String::new()
        } else {
            bench_keys_yaml()
        };
        let keyed = format!("{policies}\n{keys}");
        out.push(Scenario {
            name: "policies",
            extra: keyed.clone(),
            load: Load::Keyed,
        });
        out.push(Scenario {
            name: "everything",
            extra: format!("{keyed}\n{obs}"),
            load: Load::Keyed,
        });
    }
    // The exact cache in memory vs shared through Redis (`BENCH_REDIS`, default the local
    // one; left out when none answers). Distinct prompts: every request misses, so the
    // shared one pays a Redis GET before forwarding and a SET after: its worst case.
    let redis = std::env::var("BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_up = redis
        .strip_prefix("redis://")
        .and_then(|hp| hp.split('/').next())
        .and_then(|hp| std::net::ToSocketAddrs::to_socket_addrs(hp).ok()?.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
        });
    if redis_up {
        let prefix = format!("slmgate-bench:{}:", std::process::id());
        let cache = |shared: bool| {
            format!(
                "state:\n  redis: {{ url: \"{redis}\", prefix: \"{prefix}\" }}\ncache:\n  exact: {{ enabled: true, shared: {shared} }}\n"
            )
        };
        out.push(Scenario {
            name: "cache-local",
            extra: cache(false),
            load: Load::Keyed,
        });
        out.push(Scenario {
            name: "cache-shared",
            extra: cache(true),
            load: Load::Keyed,
        });
    } else {
        eprintln!(
            "no Redis answers at {redis}: the cache-local and cache-shared scenarios are skipped"
        );
    }
    if let Ok(only) = std::env::var("BENCH_CONFIGS") {
        let want: Vec<&str> = only.split(',').map(str::trim).collect();
        out.retain(|s| want.contains(&s.name));
    }
    out
}

fn start_gateway(
    mock_addr: SocketAddr,
    extra: &str,
    dir: &std::path::Path,
    name: &str,
) -> (Gateway, SocketAddr) {
    let port = free_port();
    let cfg_path = dir.join(format!("{name}.yaml"));
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).expect("data dir");
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
        .env("SLMGATE_DATA_DIR", &data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start slmgate");
    (
        Gateway(child),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    // as a quick smoke test that the harness and the gateway still work.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 0.3 } else { 10.0 });
    // BENCH_ROUNDS: how many slices each scenario's time is cut into, run round-robin. Short
    // slices spread this shared VM's slow spells evenly over the scenarios: with 3 slices of
    // ~3 s, `policies` as a share of `plain` swung 68-92 % between runs of one binary; with 10
    // slices of 1 s, three runs of one binary agreed within 3 points on one VM, while a VM
    // slow for minutes still spreads them by ~10 (README, Performance).
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(if smoke { 1 } else { 10 });

    // The mock upstream: its own single-threaded runtime on its own thread.
    let otlp_ratio: f64 = std::env::var("BENCH_OTLP")
        .ok()
        .map(|v| {
            v.parse().unwrap_or_else(|_| {
                panic!("BENCH_OTLP=`{v}`: expected a sampling ratio such as 1 or 0.1")
            })
        })
        .unwrap_or(0.1);
    let sink = Arc::new(OtlpSink::default());
    let sink_state = sink.clone();
    // The mock upstream and the OTLP sink: their own single-threaded runtime and thread.
    let (tx, rx) = std::sync::mpsc::channel();
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

    let dir = tempfile::tempdir().expect("tempdir");
    let scenarios = scenarios(sink_addr, otlp_ratio);
    // Every gateway starts before any load, and idles while the others are measured.
    let gateways: Vec<(Gateway, SocketAddr)> = scenarios
        .iter()
        .map(|s| start_gateway(mock_addr, &s.extra, dir.path(), s.name))
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("load runtime");
    rt.block_on(async {
        for (_, addr) in &gateways {
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect(addr).await.is_err() {
                assert!(Instant::now() < deadline, "gateway did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!("slmgate load benchmark, {secs} s per scenario in {rounds} round-robin slices, {} cores", std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(0));
        println!("{:<48} {:>6} {:>10} {:>10} {:>10} {:>7} {:>10} {:>9} {:>10} {:>12}", "scenario", "conns", "req/s", "p50 ms", "p99 ms", "errors", "cpu us/req", "of it sys", "faults/req", "switches/req");
        let mut results: Vec<(String, usize, Stats)> = Vec::new();
        for conns in [16usize, 1] {
            let mut targets: Vec<(String, SocketAddr, Load, Option<u32>)> =
                vec![("mock direct".into(), mock_addr, Load::Fixed, None)];
            for (s, (g, addr)) in scenarios.iter().zip(&gateways) {
                targets.push((format!("through slmgate ({})", s.name), *addr, s.load, Some(g.0.id())));
            }
            // Round-robin: every target gets `rounds` slices of the time, so a slow spell of
            // this shared machine is spread over all of them instead of landing on one.
            let mut raws: Vec<Raw> = targets.iter().map(|_| Raw::new()).collect();
            for _ in 0..rounds {
                for ((_, addr, load, pid), raw) in targets.iter().zip(raws.iter_mut()) {
                    let cpu0 = pid.and_then(cpu_secs);
                    let ev0 = pid.and_then(faults_switches);
                    let (n0, s0) = (raw.lat.len(), raw.secs);
                    run(raw, *addr, "/v1/chat/completions", conns, secs / rounds as f64, *load).await;
                    raw.slices.push((raw.lat.len() - n0) as f64 / (raw.secs - s0).max(1e-9));
                    raw.cpu = match (pid.and_then(cpu_secs), cpu0, raw.cpu) {
                        (Some((bu, bs)), Some((au, as_)), Some((u, s))) => Some((u + bu - au, s + bs - as_)),
                        _ => None,
                    };
                    raw.events = match (pid.and_then(faults_switches), ev0, raw.events) {
                        (Some((bf, bs)), Some((af, as_)), Some((f, s))) => {
                            Some((f + bf.saturating_sub(af), s + bs.saturating_sub(as_)))
                        }
                        _ => None,
                    };
                }
            }
            for ((name, _, _, pid), raw) in targets.into_iter().zip(raws) {
                let s = raw.stats();
                // The gateway's own CPU time per answered request: the cost of the
                // configuration, free of the load generator's and the mock's share.
                let cpu_us = match raw.cpu {
                    Some((u, sys)) if pid.is_some() && s.answered > 0 => {
                        let n = s.answered as f64;
                        format!(
                            "{:>10.1} {:>8.0}%",
                            (u + sys) * 1e6 / n,
                            100.0 * sys / (u + sys).max(1e-9)
                        )
                    }
                    _ => format!("{:>10} {:>9}", "-", "-"),
                };
                let events = match raw.events {
                    Some((f, sw)) if pid.is_some() && s.answered > 0 => {
                        let n = s.answered as f64;
                        format!(" {:>10.2} {:>12.2}", f as f64 / n, sw as f64 / n)
                    }
                    _ => String::new(),
                };
                println!(
                    "{:<48} {:>6} {:>10.0} {:>10.3} {:>10.3} {:>7} {cpu_us}{events}",
                    name,
                    conns,
                    s.rps,
                    s.p50_us as f64 / 1000.0,
                    s.p99_us as f64 / 1000.0,
                    s.errors
                );
                if std::env::var_os("BENCH_SLICES").is_some() {
                    let slices: Vec<String> = s.slices.iter().map(|r| format!("{r:.0}")).collect();
                    println!("  slices (req/s): {}", slices.join(" "));
                }
                results.push((name, conns, s));
            }
        }
        let get = |n: &str, c: usize| results.iter().find(|(a, b, _)| a == n && *b == c).map(|r| &r.2);
        println!();
        if let (Some(d1), Some(g1)) = (get("mock direct", 1), get("through slmgate (plain)", 1)) {
            println!(
                "added p50 latency at 1 connection (plain): {:.3} ms (gateway-reported overhead p50 {:.3} ms)",
                (g1.p50_us as f64 - d1.p50_us as f64) / 1000.0,
                g1.overhead_p50_us.unwrap_or(0) as f64 / 1000.0
            );
        }
        let d16 = get("mock direct", 16).map(|s| s.rps).unwrap_or(0.0);
        let plain16 = get("through slmgate (plain)", 16);
        for s in &scenarios {
            let Some(g) = get(&format!("through slmgate ({})", s.name), 16) else { continue };
            // Also each round's slice against plain's slice of the same round (run seconds
            // apart): a slow spell of the VM then lands on both sides of a ratio.
            let vs_plain = plain16
                .filter(|_| s.name != "plain")
                .map(|p| {
                    let mut per_round: Vec<f64> = g
                        .slices
                        .iter()
                        .zip(&p.slices)
                        .map(|(g, p)| 100.0 * g / p.max(1.0))
                        .collect();
                    per_round.sort_by(f64::total_cmp);
                    let spread = match (per_round.first(), per_round.last()) {
                        (Some(lo), Some(hi)) if per_round.len() > 1 => {
                            let n = per_round.len();
                            let median = (per_round[(n - 1) / 2] + per_round[n / 2]) / 2.0;
                            format!("; per round: median {median:.0}%, {lo:.0}-{hi:.0}%")
                        }
                        _ => String::new(),
                    };
                    format!(", {:.0}% of plain pass-through{spread}", 100.0 * g.rps / p.rps.max(1.0))
                })
                .unwrap_or_default();
            println!(
                "16 connections, {}: {:.0} req/s ({:.0}% of the mock alone{vs_plain})",
                s.name,
                g.rps,
                100.0 * g.rps / d16.max(1.0)
            );
        }
        if scenarios.iter().any(|s| s.name.starts_with("observability") || s.name == "everything") {
            // The batch processor exports every 5 s (or per 512 spans): most have arrived.
            tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 6 })).await;
            println!(
                "OTLP sink received {} export requests, {} KiB",
                sink.requests.load(Ordering::Relaxed),
                sink.bytes.load(Ordering::Relaxed) / 1024
            );
        }
        let errors: u64 = results.iter().map(|r| r.2.errors).sum();
        if smoke {
            assert_eq!(errors, 0, "requests failed during the smoke run");
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
