//! Throwaway experiments (ignored tests). Run:
//! CARGO_TARGET_DIR=/work/target-ml cargo test --release -p slmgate-router experiments -- --ignored --nocapture

use std::path::{Path, PathBuf};

use slmgate_local_model::embed::{Embedder, EmbedderOptions};

use super::data::{self, Example, LoadOptions};
use super::train::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files() -> Vec<PathBuf> {
    vec![
        root().join("../shared/data/arena-bench-v1.jsonl"),
        root().join("../shared/data/routerarena-809.jsonl"),
    ]
}

fn load(opts: &LoadOptions, emb: &Embedder) -> Vec<Sample> {
    let (ex, _) = data::load_files(&files(), opts).expect("load");
    let prompts: Vec<&str> = ex.iter().map(|e| e.prompt.as_str()).collect();
    let v = embed_prompts(emb, &prompts, Some(Path::new("/tmp/slmgate-emb-cache.jsonl")))
        .expect("embed");
    ex.into_iter().zip(v).map(|(e, v)| Sample::new(e, v)).collect()
}

fn per_ds(examples: &[&Example], scores: &[f32]) -> String {
    let mut out = Vec::new();
    for ds in ["arena-bench-v1", "routerarena-809"] {
        let rows: Vec<_> = examples
            .iter()
            .zip(scores)
            .filter(|(e, _)| e.dataset == ds)
            .map(|(e, s)| super::metrics::Routed {
                score: *s,
                weak: e.weak,
                strong: e.strong,
            })
            .collect();
        let m = super::metrics::RouteMetrics::of(&rows);
        out.push(format!("{:.3}", m.apgr.unwrap_or(f64::NAN)));
    }
    out.join(" ")
}

fn embedder() -> Embedder {
    Embedder::load(&EmbedderOptions::new(root().join("models/all-MiniLM-L6-v2"))).expect("embedder")
}

/// CV on the train split, averaged over 3 CV seeds; prints per-dataset APGR.
fn cv_report(name: &str, train: &[Sample], opts: &TrainOptions, eval_on: &[Sample]) {
    for &l2 in &opts.l2_grid {
        let mut line = Vec::new();
        let mut mean = 0.0;
        for seed in [2u64, 3, 4] {
            let o = TrainOptions {
                cv_seed: seed,
                ..opts.clone()
            };
            let oof = cross_validate(train, l2, &o).expect("cv");
            // Evaluate on eval_on's labels (same ids/order as train).
            let ex: Vec<&Example> = eval_on.iter().map(|s| &s.example).collect();
            let r = per_ds(&ex, &oof);
            mean += mean_dataset_apgr(ex.iter().copied(), &oof) / 3.0;
            line.push(r);
        }
        println!("{name:40} l2={l2:<6} mean={mean:.3}  [{}]", line.join(" | "));
    }
}

fn knn_oof(train: &[Sample], k: usize, target: Target, folds: usize, seed: u64) -> Vec<f32> {
    let fold: Vec<usize> = train
        .iter()
        .map(|s| ((data::unit_hash(seed, &s.example.id) * folds as f64) as usize).min(folds - 1))
        .collect();
    let t: Vec<f64> = train.iter().map(|s| target.of(&s.example)).collect();
    (0..train.len())
        .map(|i| {
            let mut sims: Vec<(f32, usize)> = (0..train.len())
                .filter(|&j| fold[j] != fold[i])
                .map(|j| {
                    let d: f32 = train[i].embedding.iter().zip(&train[j].embedding).map(|(a, b)| a * b).sum();
                    (d, j)
                })
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0));
            let top = &sims[..k.min(sims.len())];
            let wsum: f32 = top.iter().map(|(d, _)| d.max(0.0) + 1e-3).sum();
            top.iter().map(|(d, j)| (d.max(0.0) + 1e-3) * t[*j] as f32).sum::<f32>() / wsum
        })
        .collect()
}

fn rank01(v: &[f32]) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0f32; v.len()];
    for (r, &i) in idx.iter().enumerate() {
        out[i] = r as f32 / v.len() as f32;
    }
    out
}

#[test]
#[ignore]
fn experiments2() {
    let emb = embedder();
    let all = load(&LoadOptions::default(), &emb);
    let (train, _test): (Vec<Sample>, Vec<Sample>) = all
        .iter()
        .cloned()
        .partition(|s| !data::is_test(&s.example.id, 1, 0.3));
    let ex: Vec<&Example> = train.iter().map(|s| &s.example).collect();
    let base = TrainOptions {
        l2_grid: vec![0.1, 0.2, 0.3, 0.5],
        ..TrainOptions::default()
    };
    // Weak group averaged for arena-bench training targets.
    for (name, group) in [
        ("7b group", vec!["mistralai/Mistral-7B-Instruct-v0.1", "Starling-LM-7B-alpha", "openchat_3.5"]),
        ("small group", vec!["mistralai/Mistral-7B-Instruct-v0.1", "Starling-LM-7B-alpha", "openchat_3.5", "Llama-2-70b-chat", "vicuna-33b-v1.3", "llama-13b"]),
    ] {
        let lo = LoadOptions {
            weak_models: group.iter().map(|s| s.to_string()).collect(),
            strong_models: vec!["gpt-4-1106-preview".into()],
            ..LoadOptions::default()
        };
        let (arena, _) = data::load_file(&files()[0], &lo).expect("load");
        let map: std::collections::HashMap<String, f64> = arena.into_iter().map(|e| (e.id, e.weak)).collect();
        let modified: Vec<Sample> = train
            .iter()
            .cloned()
            .map(|mut s| {
                if s.example.dataset == "arena-bench-v1" {
                    if let Some(w) = map.get(&s.example.id) {
                        s.example.weak = *w;
                    }
                }
                s
            })
            .collect();
        cv_report(name, &modified, &base, &train);
    }
    // Meteor rows dropped from training (evaluated on all).
    {
        let no_meteor: Vec<Sample> = train
            .iter()
            .cloned()
            .map(|mut s| {
                let cont = [s.example.weak, s.example.strong].iter().any(|&x| x != 0.0 && x != 1.0);
                if s.example.dataset == "routerarena-809" && cont {
                    // Neutral target: no gain.
                    s.example.weak = 0.5;
                    s.example.strong = 0.5;
                }
                s
            })
            .collect();
        cv_report("meteor neutral", &no_meteor, &base, &train);
    }
    // kNN and blends.
    for k in [10, 20, 40, 80] {
        let mut line = Vec::new();
        for seed in [2u64, 3, 4] {
            let oof = knn_oof(&train, k, Target::Gain, 5, seed);
            line.push(per_ds(&ex, &oof));
        }
        println!("knn k={k:<3} [{}]", line.join(" | "));
    }
    for (k, l2, wk) in [(20, 0.3, 0.5), (40, 0.3, 0.5), (40, 0.3, 0.3)] {
        let mut line = Vec::new();
        for seed in [2u64, 3, 4] {
            let o = TrainOptions { cv_seed: seed, ..base.clone() };
            let lr = rank01(&cross_validate(&train, l2, &o).expect("cv"));
            let kn = rank01(&knn_oof(&train, k, Target::Gain, 5, seed));
            let blend: Vec<f32> = lr.iter().zip(&kn).map(|(a, b)| (1.0 - wk) * a + wk * b).collect();
            line.push(per_ds(&ex, &blend));
        }
        println!("blend k={k} l2={l2} wk={wk} [{}]", line.join(" | "));
    }
}

#[test]
#[ignore]
fn experiments() {
    let emb = embedder();
    let all = load(&LoadOptions::default(), &emb);
    let (train, _test): (Vec<Sample>, Vec<Sample>) = all
        .iter()
        .cloned()
        .partition(|s| !data::is_test(&s.example.id, 1, 0.3));
    println!("train {} rows", train.len());
    let ex: Vec<&Example> = train.iter().map(|s| &s.example).collect();
    let len: Vec<f32> = train.iter().map(|s| s.example.prompt.chars().count() as f32).collect();
    println!("length baseline on train: {}", per_ds(&ex, &len));
    let grid = vec![0.01, 0.03, 0.1, 0.3, 1.0];
    let base = TrainOptions {
        l2_grid: grid.clone(),
        ..TrainOptions::default()
    };
    cv_report("default (gain, perdim, feats, balance)", &train, &base, &train);
    cv_report(
        "shared scaling",
        &train,
        &TrainOptions {
            embedding_scaling: EmbeddingScaling::Shared,
            ..base.clone()
        },
        &train,
    );
    cv_report(
        "positive gain",
        &train,
        &TrainOptions {
            target: Target::PositiveGain,
            ..base.clone()
        },
        &train,
    );
    cv_report(
        "margin 0.5",
        &train,
        &TrainOptions {
            target: Target::Margin { margin: 0.5 },
            ..base.clone()
        },
        &train,
    );
    cv_report(
        "margin 0.3",
        &train,
        &TrainOptions {
            target: Target::Margin { margin: 0.3 },
            ..base.clone()
        },
        &train,
    );
    cv_report(
        "no features",
        &train,
        &TrainOptions {
            use_features: false,
            ..base.clone()
        },
        &train,
    );
    cv_report(
        "features only",
        &train,
        &TrainOptions {
            use_embedding: false,
            ..base.clone()
        },
        &train,
    );
    cv_report(
        "no balance",
        &train,
        &TrainOptions {
            balance_datasets: false,
            ..base.clone()
        },
        &train,
    );
}

/// Top-`k` principal directions (rows, unit length) of `x` (rows), by subspace iteration.
fn pca(x: &[Vec<f32>], k: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    let d = x[0].len();
    let n = x.len() as f64;
    let mut mean = vec![0f64; d];
    for r in x {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += f64::from(*v) / n;
        }
    }
    let mut cov = vec![0f64; d * d];
    for r in x {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(v, m)| f64::from(*v) - m).collect();
        for a in 0..d {
            for b in a..d {
                cov[a * d + b] += c[a] * c[b];
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[a * d + b] = cov[b * d + a];
        }
    }
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|i| (0..d).map(|j| ((i * 31 + j * 17) % 97) as f64 / 97.0 - 0.5).collect())
        .collect();
    for _ in 0..60 {
        let mut z: Vec<Vec<f64>> = q
            .iter()
            .map(|v| (0..d).map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum()).collect())
            .collect();
        // Gram-Schmidt.
        for i in 0..k {
            for j in 0..i {
                let p: f64 = z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum();
                let zj = z[j].clone();
                z[i].iter_mut().zip(&zj).for_each(|(a, b)| *a -= p * b);
            }
            let nrm = z[i].iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
            z[i].iter_mut().for_each(|a| *a /= nrm);
        }
        q = z;
    }
    (
        mean.iter().map(|m| *m as f32).collect(),
        q.iter().map(|v| v.iter().map(|a| *a as f32).collect()).collect(),
    )
}

fn project(s: &Sample, mean: &[f32], basis: &[Vec<f32>]) -> Vec<f32> {
    let c: Vec<f32> = s.embedding.iter().zip(mean).map(|(a, m)| a - m).collect();
    let mut p: Vec<f32> = basis.iter().map(|b| b.iter().zip(&c).map(|(x, y)| x * y).sum()).collect();
    let n = p.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
    p.iter_mut().for_each(|a| *a /= n);
    p
}

#[test]
#[ignore]
fn experiments3() {
    let emb = embedder();
    let all = load(&LoadOptions::default(), &emb);
    let (train, _test): (Vec<Sample>, Vec<Sample>) = all
        .iter()
        .cloned()
        .partition(|s| !data::is_test(&s.example.id, 1, 0.3));
    let ex: Vec<&Example> = train.iter().map(|s| &s.example).collect();
    let base = TrainOptions {
        l2_grid: vec![0.3],
        ..TrainOptions::default()
    };
    let embs: Vec<Vec<f32>> = train.iter().map(|s| s.embedding.clone()).collect();
    for dims in [16usize, 32, 64] {
        let (mean, basis) = pca(&embs, dims);
        let projected: Vec<Sample> = train
            .iter()
            .map(|s| Sample { embedding: project(s, &mean, &basis), ..s.clone() })
            .collect();
        for k in [20, 40, 80] {
            let mut line = Vec::new();
            let mut line_b = Vec::new();
            for seed in [2u64, 3, 4] {
                let kn = knn_oof(&projected, k, Target::Gain, 5, seed);
                line.push(per_ds(&ex, &kn));
                let o = TrainOptions { cv_seed: seed, ..base.clone() };
                let lr = rank01(&cross_validate(&train, 0.3, &o).expect("cv"));
                let knr = rank01(&kn);
                let blend: Vec<f32> = lr.iter().zip(&knr).map(|(a, b)| 0.5 * a + 0.5 * b).collect();
                line_b.push(per_ds(&ex, &blend));
            }
            println!("pca{dims} knn k={k:<3} [{}]   blend [{}]", line.join(" | "), line_b.join(" | "));
        }
    }
}
