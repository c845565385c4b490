//! Token sampling, incremental detokenization and stop sequences.
//!
//! - [`Sampler`] turns a logits vector into the next token: greedy at temperature 0, otherwise
//!   temperature, top-k and top-p (nucleus) sampling with a seedable RNG, after an optional
//!   repetition penalty. It also reports the chosen token's log-probability under the model's
//!   unmodified (temperature 1) distribution.
//! - [`IncrementalDecoder`] turns a growing list of token ids into text deltas that are always
//!   whole UTF-8 characters: a character split over several byte-level tokens is held back
//!   until it is complete.
//! - [`StopMatcher`] cuts the text at the first stop sequence and holds back any tail that
//!   could be the start of one, so stop text is never emitted even when it spans tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::Tokenizer;

/// How many recent tokens the repetition penalty looks at.
pub const REPEAT_LAST_N: usize = 64;

/// Sampling parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: Option<f64>,
    /// Keep only the `top_k` most likely tokens.
    pub top_k: Option<usize>,
    /// RNG seed: the same seed, prompt and parameters give the same completion.
    pub seed: Option<u64>,
    /// Penalty (> 1 discourages) for tokens among the last [`REPEAT_LAST_N`] tokens.
    pub repetition_penalty: Option<f32>,
    /// Maximum number of completion tokens.
    pub max_tokens: usize,
    /// Stop sequences: generation ends before the first occurrence, which is not emitted.
    pub stop: Vec<String>,
    /// Whether the caller wants log-probabilities (they are always computed; this is a hint
    /// for the caller's response format).
    pub logprobs: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            seed: None,
            repetition_penalty: None,
            max_tokens: 256,
            stop: Vec::new(),
            logprobs: false,
        }
    }
}

impl SamplingParams {
    /// Checks the parameters, returning a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top_p must be in (0, 1], got {p}"));
            }
        }
        if self.top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        if let Some(r) = self.repetition_penalty {
            if !r.is_finite() || r <= 0.0 {
                return Err(format!("repetition_penalty must be > 0, got {r}"));
            }
        }
        if self.max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return Err("stop sequences must not be empty".into());
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

/// Picks tokens from logits according to [`SamplingParams`].
pub struct Sampler {
    temperature: f64,
    top_p: Option<f64>,
    top_k: Option<usize>,
    repetition_penalty: Option<f32>,
    rng: StdRng,
    // Scratch buffers reused between tokens.
    probs: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params`; without a seed the RNG is seeded from the OS.
    pub fn new(params: &SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            temperature: params.temperature,
            top_p: params.top_p.filter(|p| *p < 1.0),
            top_k: params.top_k,
            repetition_penalty: params.repetition_penalty.filter(|r| *r != 1.0),
            rng,
            probs: Vec::new(),
        }
    }

    /// Chooses the next token. `recent` are the latest context tokens (for the repetition
    /// penalty). Returns the token and its log-probability under the unmodified logits.
    ///
    /// `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> (u32, f32) {
        let log_z = log_sum_exp(logits);
        if let Some(penalty) = self.repetition_penalty {
            let start = recent.len().saturating_sub(REPEAT_LAST_N);
            let mut seen = recent[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            // Penalize a copy of the affected logits; the logprob uses the original values,
            // which are restored from `originals` below.
            let originals: Vec<(u32, f32)> = seen
                .iter()
                .filter_map(|&t| logits.get(t as usize).map(|&l| (t, l)))
                .collect();
            for &(t, l) in &originals {
                logits[t as usize] = if l >= 0.0 { l / penalty } else { l * penalty };
            }
            let tok = self.choose(logits);
            let raw = originals
                .iter()
                .find(|(t, _)| *t == tok)
                .map(|(_, l)| *l)
                .unwrap_or(logits[tok as usize]);
            return (tok, (raw - log_z).min(0.0));
        }
        let tok = self.choose(logits);
        (tok, (logits[tok as usize] - log_z).min(0.0))
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let t = self.temperature as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.probs.clear();
        self.probs.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, ((l - max) / t).exp())),
        );
        let probs = &mut self.probs;
        if let Some(k) = self.top_k.filter(|&k| k < probs.len()) {
            probs.select_nth_unstable_by(k - 1, by_prob_desc);
            probs.truncate(k);
        }
        if let Some(top_p) = self.top_p {
            nucleus(probs, top_p);
        }
        let total: f32 = probs.iter().map(|p| p.1).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax(logits);
        }
        let mut r = self.rng.random::<f32>() * total;
        for &(id, p) in probs.iter() {
            if r < p {
                return id;
            }
            r -= p;
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }
}

/// Most likely first; ties by token id, so that results never depend on the input order.
fn by_prob_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the smallest most-likely prefix of `probs` (unnormalized) whose mass reaches
/// `top_p`, sorted by [`by_prob_desc`]. Sorts only as many candidates as needed: the top 64,
/// then 4× more while the mass is not reached, instead of the whole vocabulary every token.
fn nucleus(probs: &mut Vec<(u32, f32)>, top_p: f64) {
    let n = probs.len();
    if n == 0 {
        return;
    }
    let total: f64 = probs.iter().map(|p| p.1 as f64).sum();
    let target = top_p * total;
    // Exact pre-filter: if the tokens at least 1/1000 as likely as the best one already
    // carry the target mass, the nucleus lies among them (every other token ranks after
    // all of them), so the rest can be dropped in one linear pass.
    let max = probs.iter().map(|p| p.1).fold(0f32, f32::max);
    let tau = max * 1e-3;
    let above: f64 = probs
        .iter()
        .filter(|p| p.1 >= tau)
        .map(|p| p.1 as f64)
        .sum();
    if above >= target {
        probs.retain(|p| p.1 >= tau);
    }
    let n = probs.len();
    let mut k = n.min(64);
    loop {
        if k < n {
            probs.select_nth_unstable_by(k - 1, by_prob_desc);
        }
        probs[..k].sort_unstable_by(by_prob_desc);
        let mut cum = 0.0f64;
        for i in 0..k {
            cum += probs[i].1 as f64;
            if cum >= target {
                probs.truncate(i + 1);
                return;
            }
        }
        if k == n {
            return;
        }
        k = (k * 4).min(n);
    }
}

/// The index of the largest logit (the first one on ties): the greedy pick.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    max + sum.ln()
}

/// Turns a growing token sequence into UTF-8-safe text deltas.
///
/// It decodes a small window of recent tokens twice (with and without the newest ones) and
/// emits the difference only when it does not end in a replacement character, i.e. when every
/// character is complete. This also keeps SentencePiece's leading-space handling right.
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// All token ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds `id` and returns the newly completed text (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, String> {
        self.ids.push(id);
        let prefix = decode(tokenizer, &self.ids[self.prefix_offset..self.read_offset])?;
        let full = decode(tokenizer, &self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(delta) = full.get(prefix.len()..) {
                let delta = delta.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                return Ok(delta);
            }
        }
        Ok(String::new())
    }

    /// Returns whatever text is still held back (an incomplete character is rendered as
    /// U+FFFD) and marks it as emitted.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String, String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let prefix = decode(tokenizer, &self.ids[self.prefix_offset..self.read_offset])?;
        let full = decode(tokenizer, &self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, String> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    tokenizer.decode(ids, true).map_err(|e| e.to_string())
}

/// Finds stop sequences in streamed text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that is safe to emit (possibly empty); generation continues.
    Continue(String),
    /// A stop sequence was found: emit this text (what preceded it) and stop.
    Stop(String),
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds `text`; returns what can be emitted now.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_string());
        }
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stop(out);
        }
        // Hold back the longest tail that is a prefix of some stop sequence.
        let mut hold = 0;
        for s in &self.stops {
            let max = s.len().saturating_sub(1).min(self.pending.len());
            for n in (1..=max).rev() {
                if n <= hold {
                    break;
                }
                let start = self.pending.len() - n;
                if self.pending.is_char_boundary(start) && s.starts_with(&self.pending[start..]) {
                    hold = n;
                    break;
                }
            }
        }
        let emit_to = self.pending.len() - hold;
        let out = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        StopOutcome::Continue(out)
    }

    /// Returns the held-back text at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_matcher_holds_prefixes_and_cuts() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("abc E"), StopOutcome::Continue("abc ".into()));
        assert_eq!(m.push("N"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("X"), StopOutcome::Continue("ENX".into()));
        assert_eq!(m.push("yyEN"), StopOutcome::Continue("yy".into()));
        assert_eq!(m.push("Dzz"), StopOutcome::Stop(String::new()));
        let mut m = StopMatcher::new(&["é!".to_string()]);
        assert_eq!(m.push("aé"), StopOutcome::Continue("a".into()));
        assert_eq!(m.flush(), "é");
    }

    #[test]
    fn sampler_greedy_and_logprob() {
        let p = SamplingParams::default();
        let mut s = Sampler::new(&p);
        let mut logits = vec![0.0, 2.0, 1.0];
        let (t, lp) = s.sample(&mut logits, &[]);
        assert_eq!(t, 1);
        let z = (1f32 + 2f32.exp() + 1f32.exp()).ln();
        assert!((lp - (2.0 - z)).abs() < 1e-5);
    }

    #[test]
    fn sampler_top_k_one_is_greedy() {
        let p = SamplingParams {
            temperature: 1.5,
            top_k: Some(1),
            seed: Some(3),
            ..Default::default()
        };
        let mut s = Sampler::new(&p);
        for _ in 0..20 {
            let mut logits = vec![0.5, 0.1, 0.9, 0.2];
            assert_eq!(s.sample(&mut logits, &[]).0, 2);
        }
    }

    #[test]
    fn nucleus_matches_a_full_sort() {
        let mut rng = StdRng::seed_from_u64(9);
        for &(n, top_p) in &[(10usize, 0.5f64), (1000, 0.9), (5000, 0.999), (300, 0.01)] {
            let probs: Vec<(u32, f32)> = (0..n as u32)
                .map(|i| (i, rng.random::<f32>().powi(8)))
                .collect();
            let mut expected = probs.clone();
            expected.sort_by(by_prob_desc);
            let total: f64 = expected.iter().map(|p| p.1 as f64).sum();
            let mut cum = 0.0;
            let keep = expected
                .iter()
                .position(|p| {
                    cum += p.1 as f64;
                    cum >= top_p * total
                })
                .map_or(n, |i| i + 1);
            expected.truncate(keep);
            let mut got = probs;
            nucleus(&mut got, top_p);
            assert_eq!(got, expected, "n={n} top_p={top_p}");
        }
    }

    #[test]
    fn repetition_penalty_changes_choice() {
        let p = SamplingParams {
            repetition_penalty: Some(10.0),
            ..Default::default()
        };
        let mut s = Sampler::new(&p);
        let mut logits = vec![1.0, 2.0, 1.5];
        assert_eq!(s.sample(&mut logits, &[1]).0, 2);
    }
}
