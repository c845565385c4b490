//! The cascade's confidence check: answer locally, look at the log-probabilities of the first
//! tokens, and escalate to the remote model when the local model was unsure.
//!
//! Two signals, both over the first `tokens` generated tokens:
//! - the **mean** log-probability (the geometric-mean token probability): a model that is
//!   guessing spreads its probability mass, and the mean drops for the whole answer;
//! - the **minimum** log-probability: a single very unlikely token (a guessed name, number
//!   or date in an otherwise fluent answer) is the typical failure of a small model on
//!   knowledge questions, and the mean dilutes it.
//!
//! The first tokens are enough: the start of an answer is where a small model commits to a
//! reading of the question, and checking early keeps the cost of an escalation (the local
//! time thrown away, and the tokens held back from a stream) small.

/// Thresholds of the check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CascadeCheck {
    /// Tokens to look at (and hold back when streaming).
    pub tokens: usize,
    /// Escalate when the mean log-probability is below this.
    pub min_mean_logprob: f32,
    /// Escalate when any token's log-probability is below this.
    pub min_logprob: f32,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    /// Mean log-probability of the tokens seen.
    pub mean: f32,
    /// Minimum log-probability of the tokens seen.
    pub min: f32,
    /// Tokens seen.
    pub tokens: usize,
    /// Whether the answer passes.
    pub confident: bool,
}

impl CascadeCheck {
    /// Checks the log-probabilities of the first tokens (fewer when the answer ended
    /// sooner). An answer with no tokens at all is not confident.
    pub fn check(&self, logprobs: &[f32]) -> Confidence {
        let seen = &logprobs[..logprobs.len().min(self.tokens)];
        if seen.is_empty() {
            return Confidence {
                mean: f32::NEG_INFINITY,
                min: f32::NEG_INFINITY,
                tokens: 0,
                confident: false,
            };
        }
        let mean = seen.iter().sum::<f32>() / seen.len() as f32;
        let min = seen.iter().copied().fold(f32::INFINITY, f32::min);
        Confidence {
            mean,
            min,
            tokens: seen.len(),
            confident: mean >= self.min_mean_logprob && min >= self.min_logprob,
        }
    }
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mean logprob {:.2}, min {:.2} over {} tokens",
            self.mean, self.min, self.tokens
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: CascadeCheck = CascadeCheck {
        tokens: 4,
        min_mean_logprob: -1.0,
        min_logprob: -5.0,
    };

    #[test]
    fn confident_and_unsure_answers() {
        assert!(CHECK.check(&[-0.1, -0.2, -0.3, -0.1]).confident);
        // Mean too low.
        let c = CHECK.check(&[-1.5, -1.2, -1.1, -1.3]);
        assert!(!c.confident);
        assert!((c.mean + 1.275).abs() < 1e-6);
        // One guessed token sinks it although the mean passes.
        let c = CHECK.check(&[-0.01, -0.01, -6.0, -0.01, -0.01]);
        assert!(c.mean < -1.0 || !c.confident);
        assert_eq!(c.min, -6.0);
        // Only the first `tokens` count.
        assert!(CHECK.check(&[-0.1, -0.1, -0.1, -0.1, -20.0]).confident);
        // Short answers are judged on what there is; empty ones escalate.
        assert!(CHECK.check(&[-0.2]).confident);
        assert!(!CHECK.check(&[]).confident);
    }
}
