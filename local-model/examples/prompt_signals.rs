//! Research tool: what the small models say about a prompt, for studying which routing
//! signals transfer across data sources (see README "Routing").
//!
//! Reads `{"id","prompt"}` JSONL on stdin, writes one JSON line per prompt on stdout:
//! `emb` (the embedder's vector), and from the generator (fast llama path only):
//! `nll` (mean negative log-likelihood of the prompt's first `SIGNAL_TOKENS` tokens),
//! `nll_max`, `tokens`, the first answer token's `entropy` / `top1` / `margin` after the
//! chat template, `gen_mean_lp` / `gen_min_lp` / `gen_entropy` over the first 4 greedy answer
//! tokens, and `hidden` (the mean final hidden state over the prompt's tokens).
//!
//! `cargo run --release -p slmgate-local-model --example prompt_signals -- GGUF EMBEDDER_DIR < in.jsonl > out.jsonl`

use std::io::{BufRead, Write};

use slmgate_local_model::embed::{Embedder, EmbedderOptions};
use slmgate_local_model::generator::{ChatMessage, Generator, GeneratorOptions};

const SIGNAL_TOKENS: usize = 64;
const GEN_TOKENS: usize = 4;

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    logits.iter().map(|x| x - lse).collect()
}

fn entropy(lp: &[f32]) -> f32 {
    -lp.iter().map(|l| l.exp() * l).sum::<f32>()
}

fn top2(lp: &[f32]) -> (usize, f32, f32) {
    let (mut a, mut b) = ((0, f32::NEG_INFINITY), f32::NEG_INFINITY);
    for (i, &x) in lp.iter().enumerate() {
        if x > a.1 {
            b = a.1;
            a = (i, x);
        } else if x > b {
            b = x;
        }
    }
    (a.0, a.1, b)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 3,
        "usage: prompt_signals GGUF EMBEDDER_DIR < in.jsonl"
    );
    let gen = Generator::load(&GeneratorOptions::new(&args[1]))?;
    let embedder = Embedder::load(&EmbedderOptions::new(&args[2]))?;
    let vocab = gen.info().vocab_size;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let prompt = v["prompt"].as_str().unwrap_or_default();
        let emb = embedder.embed(&[prompt])?.remove(0);
        let mut m = gen.instance()?;

        // Raw prompt: per-token NLL and mean hidden state.
        let mut ids = gen.encode_prompt(prompt)?;
        ids.truncate(SIGNAL_TOKENS);
        let (mut nll, mut nll_max, mut hidden) = (0f32, 0f32, Vec::new());
        if ids.len() >= 2 {
            let (logits, h) = m
                .forward_all(&ids)
                .ok_or_else(|| anyhow::anyhow!("not on the fast llama path"))??;
            for t in 0..ids.len() - 1 {
                let lp = log_softmax(&logits[t * vocab..(t + 1) * vocab]);
                let l = -lp[ids[t + 1] as usize];
                nll += l;
                nll_max = nll_max.max(l);
            }
            nll /= (ids.len() - 1) as f32;
            let dim = h.len() / ids.len();
            hidden = vec![0f32; dim];
            for row in h.chunks_exact(dim) {
                for (a, b) in hidden.iter_mut().zip(row) {
                    *a += b / ids.len() as f32;
                }
            }
        }
        m.clear();

        // Chat-templated: first answer token and a short greedy continuation.
        let chat = gen.prompt_tokens(&[ChatMessage::new("user", prompt)])?;
        let chat = &chat[chat.len().saturating_sub(192)..];
        let logits = m.forward(chat, 0)?;
        let lp = log_softmax(&logits);
        let (first, p1, p2) = top2(&lp);
        let (ent0, top1, margin) = (entropy(&lp), p1.exp(), p1 - p2);
        let (mut gsum, mut gmin, mut gent) = (p1, p1, ent0);
        let mut tok = first as u32;
        let mut n = 1;
        for pos in chat.len()..chat.len() + GEN_TOKENS - 1 {
            if gen.info().eos_token_ids.contains(&tok) {
                break;
            }
            let logits = m.forward(&[tok], pos)?;
            let lp = log_softmax(&logits);
            let (t, p, _) = top2(&lp);
            gsum += p;
            gmin = gmin.min(p);
            gent += entropy(&lp);
            n += 1;
            tok = t as u32;
        }
        let rec = serde_json::json!({
            "id": v["id"], "tokens": ids.len(), "nll": nll, "nll_max": nll_max,
            "entropy": ent0, "top1": top1, "margin": margin,
            "gen_mean_lp": gsum / n as f32, "gen_min_lp": gmin, "gen_entropy": gent / n as f32,
            "emb": emb, "hidden": hidden,
        });
        writeln!(out, "{rec}")?;
        out.flush()?;
    }
    Ok(())
}
