//! Gold-answer accuracy of local models under several sampling settings (see
//! `slmgate_local_model::gold`), printed as markdown tables.
//!
//! ```text
//! cargo run --release -p slmgate-local-model --example gold_eval -- \
//!     --model models/SmolLM2-135M-Instruct.Q4_1.gguf --model models/gemma-3-270m-q4_k_m.gguf \
//!     --gold tests/data/gold_answers.jsonl --temperature 0,0.2,0.7,1.0 --top-p 1.0 \
//!     --repetition-penalty 1.0,1.1 --seed 1,2,3 [--max-tokens 48] [--limit N] [--dump DIR] \
//!     [--chat-template FILE]
//! ```
//!
//! Every model × temperature × repetition penalty × seed is one run over the whole set; greedy
//! runs (temperature 0) use only the first seed, since the seed cannot change them. A
//! repetition penalty of 1.0 means none. Before its runs, each model's speed is measured on a
//! short prompt: time to first token and decode tokens/s. `--dump DIR` writes every answer as
//! JSON Lines, one file per run. `--chat-template FILE` replaces every model's own template (or
//! the ChatML fallback of a model without one).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use slmgate_local_model::generator::{ChatMessage, GenerationEvent, Generator, GeneratorOptions};
use slmgate_local_model::gold::{self, GoldItem, GoldReport};
use slmgate_local_model::sampling::SamplingParams;

struct Args {
    models: Vec<PathBuf>,
    gold: PathBuf,
    temperatures: Vec<f64>,
    top_p: f64,
    repetition_penalties: Vec<f32>,
    seeds: Vec<u64>,
    max_tokens: usize,
    limit: Option<usize>,
    dump: Option<PathBuf>,
    chat_template: Option<String>,
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<Vec<T>> {
    v.split(',')
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{flag}: cannot parse {s:?}"))
        })
        .collect()
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        models: Vec::new(),
        gold: PathBuf::from("tests/data/gold_answers.jsonl"),
        temperatures: vec![0.0],
        top_p: 1.0,
        repetition_penalties: vec![1.0],
        seeds: vec![1],
        max_tokens: 48,
        limit: None,
        dump: None,
        chat_template: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.models.push(value()?.into()),
            "--gold" => a.gold = value()?.into(),
            "--temperature" => a.temperatures = list(&flag, &value()?)?,
            "--top-p" => a.top_p = value()?.parse().context("--top-p")?,
            "--repetition-penalty" => a.repetition_penalties = list(&flag, &value()?)?,
            "--seed" => a.seeds = list(&flag, &value()?)?,
            "--max-tokens" => a.max_tokens = value()?.parse().context("--max-tokens")?,
            "--limit" => a.limit = Some(value()?.parse().context("--limit")?),
            "--dump" => a.dump = Some(value()?.into()),
            "--chat-template" => {
                let path = value()?;
                a.chat_template = Some(
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?,
                );
            }
            "-h" | "--help" => {
                eprintln!("see the header of local-model/examples/gold_eval.rs");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if a.models.is_empty() {
        bail!("give at least one --model PATH");
    }
    if a.seeds.is_empty() {
        bail!("--seed needs at least one seed");
    }
    Ok(a)
}

/// Time to first token and decode tokens/s of a short prompt (best of 3 after a warm-up).
fn speed(g: &Generator) -> anyhow::Result<(Duration, f64, usize)> {
    let prompt =
        g.prompt_tokens(&[ChatMessage::new("user", "Write a short story about a dog.")])?;
    let params = SamplingParams {
        max_tokens: 64,
        ..Default::default()
    };
    let mut model = g.instance()?;
    let mut best = (Duration::MAX, 0.0f64);
    for _ in 0..4 {
        let start = Instant::now();
        let mut first = None;
        let mut n = 0usize;
        g.generate_blocking(&mut model, &prompt, &params, |e| {
            if let GenerationEvent::Token { .. } = e {
                first.get_or_insert_with(|| start.elapsed());
                n += 1;
            }
            true
        })?;
        let total = start.elapsed();
        let ttft = first.unwrap_or(total);
        let tps = n.saturating_sub(1) as f64 / (total - ttft).as_secs_f64().max(1e-9);
        best = (best.0.min(ttft), best.1.max(tps));
        if model.is_stale() {
            model = g.instance()?;
        }
    }
    Ok((best.0, best.1, prompt.len()))
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut items: Vec<GoldItem> = gold::load(&args.gold)?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    let categories: Vec<String> = {
        let mut c: Vec<String> = items.iter().map(|i| i.category.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    if let Some(d) = &args.dump {
        std::fs::create_dir_all(d)?;
    }
    let mut speed_rows = Vec::new();
    let mut rows = Vec::new();
    let header = format!(
        "| model | temp | top_p | rep | seed | {} | total | mean latency ms | TTFT ms | decode tok/s |",
        categories.join(" | ")
    );
    let sep = format!("|{}", "---|".repeat(9 + categories.len()));
    println!("{header}\n{sep}");
    for path in &args.models {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let load_start = Instant::now();
        let mut opts = GeneratorOptions::new(path);
        opts.chat_template = args.chat_template.clone();
        let g = Generator::load(&opts).with_context(|| format!("loading {}", path.display()))?;
        let load = load_start.elapsed();
        eprintln!(
            "{name}: loaded in {load:?} ({}, backend {}); template renders a question as {:?}",
            g.info().architecture,
            g.weights().backend(),
            g.render_chat(&[ChatMessage::new("user", "Q?")])?
        );
        let (ttft, tps, n) = speed(&g)?;
        speed_rows.push(format!(
            "| {name} | {} | {} | {:.0} | {n} | {:.0} | {:.1} |",
            g.info().architecture,
            g.weights().backend(),
            load.as_secs_f64() * 1000.0,
            ttft.as_secs_f64() * 1000.0,
            tps
        ));
        for &t in &args.temperatures {
            for &rp in &args.repetition_penalties {
                let seeds = if t == 0.0 {
                    &args.seeds[..1]
                } else {
                    &args.seeds[..]
                };
                for &seed in seeds {
                    let params = SamplingParams {
                        temperature: t,
                        top_p: Some(args.top_p),
                        repetition_penalty: (rp != 1.0).then_some(rp),
                        seed: Some(seed),
                        max_tokens: args.max_tokens,
                        ..Default::default()
                    };
                    params.validate().map_err(anyhow::Error::msg)?;
                    let started = Instant::now();
                    let mut done = 0;
                    let report = gold::run(&g, &items, &params, |a| {
                        done += 1;
                        if done % 28 == 0 {
                            eprintln!(
                                "  {name} t={t} rp={rp} seed={seed}: {done}/{} ({:.0?})",
                                items.len(),
                                started.elapsed()
                            );
                        }
                        let _ = a;
                    })?;
                    let row = row(&name, t, args.top_p, rp, seed, &categories, &report);
                    println!("{row}");
                    rows.push((name.clone(), t, rp, report.total.accuracy()));
                    if let Some(d) = &args.dump {
                        let file = d.join(format!("{name}.t{t}.rp{rp}.s{seed}.jsonl"));
                        let mut out = String::new();
                        for a in &report.answers {
                            out.push_str(&serde_json::to_string(a)?);
                            out.push('\n');
                        }
                        std::fs::write(&file, out)?;
                    }
                }
            }
        }
    }
    println!("\n| model | arch | backend | load ms | prompt tokens | TTFT ms | decode tok/s |");
    println!("|---|---|---|---|---|---|---|");
    for r in &speed_rows {
        println!("{r}");
    }
    // Means over seeds.
    println!("\n| model | temp | rep | runs | mean total % | min | max |");
    println!("|---|---|---|---|---|---|---|");
    let mut keys: Vec<(String, f64, f32)> = Vec::new();
    for (m, t, rp, _) in &rows {
        if !keys.iter().any(|k| k.0 == *m && k.1 == *t && k.2 == *rp) {
            keys.push((m.clone(), *t, *rp));
        }
    }
    for (m, t, rp) in keys {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == m && r.1 == t && r.2 == rp)
            .map(|r| r.3)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {m} | {t} | {rp} | {} | {} | {} | {} |",
            v.len(),
            pct(mean),
            pct(min),
            pct(max)
        );
    }
    Ok(())
}

fn row(
    name: &str,
    t: f64,
    top_p: f64,
    rp: f32,
    seed: u64,
    categories: &[String],
    r: &GoldReport,
) -> String {
    let cats: Vec<String> = categories
        .iter()
        .map(|c| {
            r.per_category
                .get(c)
                .map_or("-".into(), |s| pct(s.accuracy()))
        })
        .collect();
    format!(
        "| {name} | {t} | {top_p} | {rp} | {} | {} | **{}** ({}/{}) | {:.0} | {:.0} | {:.1} |",
        if t == 0.0 {
            "-".into()
        } else {
            seed.to_string()
        },
        cats.join(" | "),
        pct(r.total.accuracy()),
        r.total.correct,
        r.total.total,
        r.mean_latency.as_secs_f64() * 1000.0,
        r.mean_time_to_first_token.as_secs_f64() * 1000.0,
        r.decode_tokens_per_s
    )
}
