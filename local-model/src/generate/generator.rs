//! The generator: a GGUF model's weights, tokenizer and chat template, and the token loop.
//!
//! [`Generator::load`] reads a GGUF file, picks the architecture from
//! `general.architecture` (see [`crate::models`]), builds the tokenizer from the file's
//! metadata unless a `tokenizer.json` is given (see [`crate::gguf_tokenizer`]) and compiles the
//! chat template (see [`crate::template`]). A `Generator` is immutable and `Send + Sync`;
//! sequences run on [`ModelInstance`]s obtained from [`Generator::instance`], one per worker
//! (see [`crate::pool`]), through the blocking [`Generator::generate_blocking`].

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
use tokenizers::Tokenizer;

pub use super::error::LocalModelError;
pub use super::template::ChatMessage;

use super::gguf_tokenizer::{self, GgufVocab, TOKEN_TYPE_CONTROL};
use super::models::{Architecture, ModelInstance, ModelWeights, Quantize};
use super::sampling::{
    FinishReason, IncrementalDecoder, Sampler, SamplingParams, StopMatcher, StopOutcome,
};
use super::template::{ChatTemplate, CHATML_TEMPLATE};

/// How to load a [`Generator`].
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    /// The GGUF model file.
    pub model: PathBuf,
    /// A `tokenizer.json` to use instead of the one rebuilt from the GGUF metadata.
    pub tokenizer: Option<PathBuf>,
    /// A Jinja chat template overriding the model's `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// In-memory weight format (requantize on load); Q8_0 by default.
    pub quantize: Quantize,
    /// The device to run on.
    pub device: Device,
    /// Limit the context length below the model's.
    pub context_length: Option<usize>,
    /// For templates with an `enable_thinking` switch (Qwen3 and other hybrid reasoning
    /// models): whether the model reasons in a `<think>` block before answering. Off by
    /// default: a gateway's local model serves short answers, and reasoning would spend
    /// `max_tokens` and reach the client.
    pub thinking: bool,
}

impl GeneratorOptions {
    /// Options for `model` with defaults: tokenizer and template from the file, Q8_0, CPU.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            tokenizer: None,
            chat_template: None,
            thinking: false,
            quantize: Quantize::default(),
            device: Device::Cpu,
            context_length: None,
        }
    }
}

/// Facts about a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model family (`llama`, `qwen2`, `qwen3`, `gemma3`).
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// The usable context length in tokens (prompt + completion).
    pub context_length: usize,
    /// Vocabulary size (including added tokens).
    pub vocab_size: usize,
    /// Tokens that end a generation.
    pub eos_token_ids: Vec<u32>,
    /// The BOS token, if any.
    pub bos_token_id: Option<u32>,
    /// The in-memory weight format requested at load.
    pub quantize: Quantize,
}

/// What a generation produces, in order: `Token`s, then one `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// One generated token.
    Token {
        /// New text; always whole UTF-8 characters, possibly empty (text held back because it
        /// is an incomplete character or could start a stop sequence).
        text: String,
        /// The token id.
        token_id: u32,
        /// The token's log-probability under the model's temperature-1 distribution (≤ 0).
        logprob: f32,
    },
    /// The generation ended.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens generated (including an EOS token).
        completion_tokens: usize,
    },
}

/// A loaded model: weights, tokenizer and chat template. `Send + Sync`; share it in an `Arc`.
pub struct Generator {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    thinking: bool,
    info: ModelInfo,
    bos_to_add: Option<u32>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Prompt tokens per prefill forward pass.
pub const PREFILL_CHUNK: usize = 512;

/// End-of-turn markers that also stop generation when they are control tokens.
const END_MARKERS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
];

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> LocalModelError + '_ {
    move |source| LocalModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Generator {
    /// Loads the model described by `opts`.
    pub fn load(opts: &GeneratorOptions) -> Result<Self, LocalModelError> {
        let path = opts.model.as_path();
        let mut file = std::fs::File::open(path).map_err(read_err(path))?;
        let content = Content::read(&mut file).map_err(|source| LocalModelError::Model {
            path: path.to_path_buf(),
            context: "reading GGUF header".into(),
            source: Box::new(source),
        })?;
        let md = &content.metadata;
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| LocalModelError::MissingMetadata("general.architecture".into()))?;
        let arch = Architecture::from_gguf_name(&arch_name).ok_or_else(|| {
            LocalModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: arch_name.clone(),
            }
        })?;
        let name = md
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned();

        // Tokenizer and vocabulary facts.
        let vocab = GgufVocab::from_metadata(md).ok();
        let tokenizer = match &opts.tokenizer {
            Some(p) => {
                if !p.exists() {
                    return Err(LocalModelError::Io {
                        path: p.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
                    });
                }
                Tokenizer::from_file(p).map_err(|e| {
                    LocalModelError::Tokenizer(format!("loading {}: {e}", p.display()))
                })?
            }
            None => gguf_tokenizer::tokenizer_from_gguf(md)?,
        };
        let text_of = |id: Option<u32>| -> String {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let bos_token_id = vocab.as_ref().and_then(|v| v.bos_token_id);
        let mut eos_token_ids: Vec<u32> = Vec::new();
        if let Some(v) = &vocab {
            eos_token_ids.extend(v.eos_token_id);
            eos_token_ids.extend(v.eot_token_id);
            for (id, (tok, ty)) in v.tokens.iter().zip(&v.token_types).enumerate() {
                if *ty == TOKEN_TYPE_CONTROL && END_MARKERS.contains(&tok.as_str()) {
                    eos_token_ids.push(id as u32);
                }
            }
        } else {
            for m in END_MARKERS {
                eos_token_ids.extend(tokenizer.token_to_id(m));
            }
        }
        eos_token_ids.sort_unstable();
        eos_token_ids.dedup();
        let bos_text = text_of(bos_token_id);
        let eos_text = text_of(vocab.as_ref().and_then(|v| v.eos_token_id));

        // Chat template: configuration, then the file, then ChatML.
        let source = opts.chat_template.clone().or_else(|| {
            md.get("tokenizer.chat_template")
                .and_then(|v| v.to_string().ok())
                .cloned()
        });
        let template = ChatTemplate::new(
            source.as_deref().unwrap_or(CHATML_TEMPLATE),
            &bos_text,
            &eos_text,
        )?;

        // Context length: the file's, capped by candle's implementation and the options.
        let mut context_length =
            gguf_tokenizer::md_u32(md, &format!("{}.context_length", arch.name()))
                .map(|c| c as usize)
                .unwrap_or(2048);
        if let Some(max) = arch.max_positions() {
            context_length = context_length.min(max);
        }
        if let Some(c) = opts.context_length {
            context_length = context_length.min(c.max(1));
        }
        let add_bos = vocab.as_ref().is_some_and(|v| v.add_bos_token);
        let bos_to_add = bos_token_id.filter(|_| add_bos);
        let vocab_size = tokenizer.get_vocab_size(true);

        let weights =
            ModelWeights::load(arch, path, content, &mut file, opts.quantize, &opts.device)?;
        let info = ModelInfo {
            architecture: arch.name().to_string(),
            name,
            context_length,
            vocab_size,
            eos_token_ids,
            bos_token_id,
            quantize: opts.quantize,
        };
        tracing::info!(model = %path.display(), ?info, "local model loaded");
        Ok(Self {
            weights,
            tokenizer,
            template,
            thinking: opts.thinking,
            info,
            bos_to_add,
        })
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The compiled chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Renders `messages` with the chat template, ending with the assistant turn's prompt.
    /// A template with an `enable_thinking` switch gets [`GeneratorOptions::thinking`].
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, LocalModelError> {
        if self.template.has_thinking_switch() {
            self.template
                .render_with_thinking(messages, Some(self.thinking))
        } else {
            self.template.render(messages)
        }
    }

    /// Tokenizes a rendered prompt (special tokens in the text are matched as such; BOS is
    /// prepended when the model asks for it and the text does not start with it).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, LocalModelError> {
        let enc = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| LocalModelError::Tokenizer(format!("encoding the prompt: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if let Some(bos) = self.bos_to_add {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Renders and tokenizes `messages`.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, LocalModelError> {
        self.encode_prompt(&self.render_chat(messages)?)
    }

    /// The number of prompt tokens `messages` take.
    pub fn count_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize, LocalModelError> {
        Ok(self.prompt_tokens(messages)?.len())
    }

    /// A fresh model instance for one sequence at a time (see [`ModelWeights::instance`]).
    pub fn instance(&self) -> Result<ModelInstance, LocalModelError> {
        self.weights.instance()
    }

    /// Like [`Generator::instance`], computing on `threads` threads (see
    /// [`ModelWeights::instance_with_threads`]).
    pub fn instance_with_threads(&self, threads: usize) -> Result<ModelInstance, LocalModelError> {
        self.weights.instance_with_threads(threads)
    }

    /// The loaded weights.
    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// Generates a completion of `prompt` on `model`, calling `on_event` for every event.
    /// Blocking and CPU-bound: call it from a dedicated thread.
    ///
    /// If `on_event` returns `false` the generation stops at once (the caller went away) and
    /// no `Done` event follows. The token budget is `params.max_tokens`, cut to what fits in
    /// the context. The model's KV cache is cleared before returning.
    pub fn generate_blocking(
        &self,
        model: &mut ModelInstance,
        prompt: &[u32],
        params: &SamplingParams,
        on_event: impl FnMut(GenerationEvent) -> bool,
    ) -> Result<(), LocalModelError> {
        self.generate_cancellable(model, prompt, params, || false, on_event)
    }

    /// [`Generator::generate_blocking`], also stopping (without a `Done` event) as soon as
    /// `cancelled()` returns true; it is checked between prefill chunks and before every
    /// token, so a long prompt is abandoned without waiting for its first token.
    pub fn generate_cancellable(
        &self,
        model: &mut ModelInstance,
        prompt: &[u32],
        params: &SamplingParams,
        cancelled: impl Fn() -> bool,
        mut on_event: impl FnMut(GenerationEvent) -> bool,
    ) -> Result<(), LocalModelError> {
        let result = self.run(model, prompt, params, &cancelled, &mut on_event);
        model.clear();
        result
    }

    fn run(
        &self,
        model: &mut ModelInstance,
        prompt: &[u32],
        params: &SamplingParams,
        cancelled: &impl Fn() -> bool,
        on_event: &mut impl FnMut(GenerationEvent) -> bool,
    ) -> Result<(), LocalModelError> {
        if prompt.is_empty() {
            return Err(LocalModelError::Tokenizer(
                "the prompt has no tokens".into(),
            ));
        }
        let room = self.info.context_length.saturating_sub(prompt.len());
        let budget = params.max_tokens.min(room);
        let mut sampler = Sampler::new(params);
        let mut decoder = IncrementalDecoder::new();
        let mut stops = StopMatcher::new(&params.stop);
        let mut context: Vec<u32> = prompt.to_vec();
        let tok_err = |e: String| LocalModelError::Tokenizer(format!("decoding: {e}"));
        let done = |finish_reason, completion_tokens| GenerationEvent::Done {
            finish_reason,
            prompt_tokens: prompt.len(),
            completion_tokens,
        };
        if budget == 0 {
            on_event(done(FinishReason::Length, 0));
            return Ok(());
        }
        // Prefill in chunks: bounds the attention scratch memory of long prompts.
        let mut logits = Vec::new();
        let chunk_len = if model.supports_chunked_prefill() {
            PREFILL_CHUNK
        } else {
            prompt.len()
        };
        for (i, chunk) in prompt.chunks(chunk_len).enumerate() {
            if cancelled() {
                return Ok(());
            }
            logits = model
                .forward(chunk, i * chunk_len)
                .map_err(|e| LocalModelError::Inference(Box::new(e)))?;
        }
        let mut completion = 0usize;
        loop {
            let (token, logprob) = sampler.sample(&mut logits, &context);
            completion += 1;
            if self.info.eos_token_ids.contains(&token) {
                // Emit whatever was held back, then stop; the EOS text itself is not output.
                let mut text = decoder.flush(&self.tokenizer).map_err(tok_err)?;
                text = match stops.push(&text) {
                    StopOutcome::Continue(t) => t + &stops.flush(),
                    StopOutcome::Stop(t) => t,
                };
                if !text.is_empty()
                    && !on_event(GenerationEvent::Token {
                        text,
                        token_id: token,
                        logprob,
                    })
                {
                    return Ok(());
                }
                on_event(done(FinishReason::Stop, completion));
                return Ok(());
            }
            let delta = decoder.push(&self.tokenizer, token).map_err(tok_err)?;
            let last = completion >= budget;
            let (mut text, stopped) = match stops.push(&delta) {
                StopOutcome::Continue(t) => (t, false),
                StopOutcome::Stop(t) => (t, true),
            };
            if last && !stopped {
                // Out of budget: release everything held back.
                let tail = decoder.flush(&self.tokenizer).map_err(tok_err)?;
                match stops.push(&tail) {
                    StopOutcome::Continue(t) => {
                        text.push_str(&t);
                        text.push_str(&stops.flush());
                    }
                    StopOutcome::Stop(t) => {
                        text.push_str(&t);
                        if !on_event(GenerationEvent::Token {
                            text,
                            token_id: token,
                            logprob,
                        }) {
                            return Ok(());
                        }
                        on_event(done(FinishReason::Stop, completion));
                        return Ok(());
                    }
                }
            }
            if !on_event(GenerationEvent::Token {
                text,
                token_id: token,
                logprob,
            }) {
                return Ok(());
            }
            if stopped {
                on_event(done(FinishReason::Stop, completion));
                return Ok(());
            }
            if last {
                on_event(done(FinishReason::Length, completion));
                return Ok(());
            }
            if cancelled() {
                return Ok(());
            }
            let pos = context.len();
            context.push(token);
            logits = model
                .forward(&[token], pos)
                .map_err(|e| LocalModelError::Inference(Box::new(e)))?;
        }
    }
}
