//! Builds a [`tokenizers::Tokenizer`] from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! GGUF files converted by llama.cpp carry the whole vocabulary, but no `tokenizer.json`. This
//! module rebuilds an equivalent tokenizer with the `tokenizers` crate:
//!
//! - `tokenizer.ggml.model = gpt2`: a byte-level BPE from `tokens` and `merges`, with the
//!   pre-tokenizer chosen by `tokenizer.ggml.pre` (`smollm`, `qwen2`, `llama-bpe`, or the GPT-2
//!   default for anything else).
//! - `tokenizer.ggml.model = llama`: a SentencePiece-style BPE with byte fallback. The merges
//!   are not stored in the file; they are derived from the vocabulary the way Hugging Face's
//!   converter does it (every split of a piece into two pieces of the vocabulary, ordered by the
//!   merged piece's id).
//!
//! Every token id stays in the model's vocabulary, so ids never shift. Control tokens
//! (`token_type = 3`) are additionally registered as special added tokens, and user-defined
//! tokens (`token_type = 4`) as plain added tokens, so that text like `<|im_start|>` is matched
//! as one token instead of being split by the pre-tokenizer. `[PAD…]` filler entries are not
//! registered as added tokens: they are never meant to match text.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::error::LocalModelError;

/// GGUF `token_type` of a normal token.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// GGUF `token_type` of an unknown-token marker.
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// GGUF `token_type` of a control token (`<|im_start|>`, `</s>`, …).
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF `token_type` of a user-defined token.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// GGUF `token_type` of a byte token (`<0x0A>`) in SentencePiece vocabularies.
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// Qwen2's split regex (also used by `tokenizer.ggml.pre = qwen2`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split regex (`tokenizer.ggml.pre = llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(msg: impl Into<String>) -> LocalModelError {
    LocalModelError::Tokenizer(msg.into())
}

fn md_string<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    md.get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

/// Reads an integer metadata value of any integer type.
pub(crate) fn md_u32(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    let v = md.get(key)?;
    match v {
        Value::U8(x) => Some(*x as u32),
        Value::I8(x) => u32::try_from(*x).ok(),
        Value::U16(x) => Some(*x as u32),
        Value::I16(x) => u32::try_from(*x).ok(),
        Value::U32(x) => Some(*x),
        Value::I32(x) => u32::try_from(*x).ok(),
        Value::U64(x) => u32::try_from(*x).ok(),
        Value::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

fn md_strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, LocalModelError> {
    let v = md
        .get(key)
        .ok_or_else(|| LocalModelError::MissingMetadata(key.to_string()))?;
    let arr = v
        .to_vec()
        .map_err(|e| tok_err(format!("`{key}` is not an array: {e}")))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.to_string()
                .cloned()
                .map_err(|e| tok_err(format!("`{key}[{i}]` is not a string: {e}")))
        })
        .collect()
}

fn md_ints(md: &HashMap<String, Value>, key: &str) -> Option<Vec<i32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    Some(
        arr.iter()
            .map(|v| match v {
                Value::I32(x) => *x,
                Value::U32(x) => *x as i32,
                Value::I8(x) => *x as i32,
                Value::U8(x) => *x as i32,
                Value::I16(x) => *x as i32,
                Value::U16(x) => *x as i32,
                Value::I64(x) => *x as i32,
                Value::U64(x) => *x as i32,
                _ => TOKEN_TYPE_NORMAL,
            })
            .collect(),
    )
}

/// The vocabulary facts a generator needs besides the tokenizer itself.
#[derive(Debug, Clone)]
pub struct GgufVocab {
    /// Token strings, indexed by id.
    pub tokens: Vec<String>,
    /// GGUF token types, indexed by id (`TOKEN_TYPE_*`).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` (end of turn), when present.
    pub eot_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: whether llama.cpp prepends BOS to every prompt.
    pub add_bos_token: bool,
}

impl GgufVocab {
    /// Reads the vocabulary arrays and special ids from GGUF metadata.
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self, LocalModelError> {
        let tokens = md_strings(md, "tokenizer.ggml.tokens")?;
        let mut token_types = md_ints(md, "tokenizer.ggml.token_type")
            .unwrap_or_else(|| vec![TOKEN_TYPE_NORMAL; tokens.len()]);
        token_types.resize(tokens.len(), TOKEN_TYPE_NORMAL);
        let add_bos_token = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let check = |id: Option<u32>| id.filter(|&i| (i as usize) < tokens.len());
        Ok(Self {
            bos_token_id: check(md_u32(md, "tokenizer.ggml.bos_token_id")),
            eos_token_id: check(md_u32(md, "tokenizer.ggml.eos_token_id")),
            eot_token_id: check(md_u32(md, "tokenizer.ggml.eot_token_id")),
            add_bos_token,
            token_types,
            tokens,
        })
    }

    /// The text of token `id`, if it exists.
    pub fn token(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|i| self.tokens.get(i as usize))
            .map(String::as_str)
    }

    fn added_tokens(&self) -> Vec<AddedToken> {
        let mut out = Vec::new();
        for (tok, ty) in self.tokens.iter().zip(&self.token_types) {
            if tok.starts_with("[PAD") {
                continue;
            }
            match *ty {
                TOKEN_TYPE_CONTROL => out.push(AddedToken::from(tok.clone(), true)),
                TOKEN_TYPE_USER_DEFINED => {
                    out.push(AddedToken::from(tok.clone(), false).normalized(false));
                }
                _ => {}
            }
        }
        out
    }

    fn vocab(&self) -> Vocab {
        let mut vocab = Vocab::default();
        for (id, tok) in self.tokens.iter().enumerate() {
            // Keep the first id of a duplicated string: the rest cannot be produced by text.
            vocab.entry(tok.clone()).or_insert(id as u32);
        }
        vocab
    }
}

/// Builds a tokenizer from GGUF metadata (`tokenizer.ggml.*`).
///
/// Returns [`LocalModelError::UnsupportedTokenizer`] for tokenizer models other than `gpt2`
/// and `llama`, and [`LocalModelError::MissingMetadata`] when the vocabulary is absent.
pub fn tokenizer_from_gguf(md: &HashMap<String, Value>) -> Result<Tokenizer, LocalModelError> {
    let model = md_string(md, "tokenizer.ggml.model")
        .ok_or_else(|| LocalModelError::MissingMetadata("tokenizer.ggml.model".into()))?;
    let vocab = GgufVocab::from_metadata(md)?;
    let mut tokenizer = match model {
        "gpt2" => byte_level_bpe(md, &vocab)?,
        "llama" => sentencepiece_bpe(md, &vocab)?,
        other => {
            return Err(LocalModelError::UnsupportedTokenizer(format!(
                "tokenizer.ggml.model = {other:?} (supported: gpt2, llama)"
            )))
        }
    };
    tokenizer.add_special_tokens(&vocab.added_tokens());
    Ok(tokenizer)
}

fn byte_level_bpe(
    md: &HashMap<String, Value>,
    vocab: &GgufVocab,
) -> Result<Tokenizer, LocalModelError> {
    let merges = md_strings(md, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| tok_err(format!("tokenizer.ggml.merges[{i}] = {m:?} has no space")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.vocab(), merges)
        .build()
        .map_err(|e| tok_err(format!("building BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let pre = md_string(md, "tokenizer.ggml.pre").unwrap_or("default");
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, LocalModelError> {
        Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::from)
        .map_err(|e| tok_err(format!("pre-tokenizer regex: {e}")))
    };
    // ByteLevel with its own (GPT-2) regex, or only the byte mapping after a custom Split.
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::from(ByteLevel::new(false, false, use_regex));
    let pre_tokenizer = match pre {
        "smollm" => PreSequence::new(vec![
            PreTokenizerWrapper::from(Digits::new(true)),
            byte_level(true),
        ]),
        "qwen2" | "deepseek-r1-qwen" => {
            tokenizer.with_normalizer(Some(NormalizerWrapper::from(NFC)));
            PreSequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false)])
        }
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            PreSequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false)])
        }
        other => {
            if other != "default" && other != "gpt-2" && other != "gpt2" {
                tracing::warn!(
                    pre = other,
                    "unknown tokenizer.ggml.pre; using the GPT-2 pre-tokenizer"
                );
            }
            PreSequence::new(vec![byte_level(true)])
        }
    };
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::from(pre_tokenizer)));
    tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevelDecoder::default())));
    Ok(tokenizer)
}

fn sentencepiece_bpe(
    _md: &HashMap<String, Value>,
    vocab: &GgufVocab,
) -> Result<Tokenizer, LocalModelError> {
    let map = vocab.vocab();
    // Derive merges: every way to split a normal piece into two pieces of the vocabulary.
    let mut merges: Vec<(u32, u32, u32)> = Vec::new();
    for (id, (piece, ty)) in vocab.tokens.iter().zip(&vocab.token_types).enumerate() {
        if *ty != TOKEN_TYPE_NORMAL && *ty != TOKEN_TYPE_USER_DEFINED {
            continue;
        }
        for (k, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(k);
            if let (Some(&li), Some(&ri)) = (map.get(l), map.get(r)) {
                merges.push((id as u32, li, ri));
            }
        }
    }
    merges.sort_unstable();
    let merges = merges
        .into_iter()
        .map(|(_, l, r)| {
            (
                vocab.tokens[l as usize].clone(),
                vocab.tokens[r as usize].clone(),
            )
        })
        .collect::<Vec<_>>();
    let unk = vocab
        .tokens
        .iter()
        .zip(&vocab.token_types)
        .find(|(_, t)| **t == TOKEN_TYPE_UNKNOWN)
        .map(|(s, _)| s.clone())
        .unwrap_or_else(|| "<unk>".to_string());
    let bpe = BPE::builder()
        .vocab_and_merges(map, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| tok_err(format!("building SentencePiece BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let replace =
        |a: &str, b: &str| Replace::new(a, b).map_err(|e| tok_err(format!("normalizer: {e}")));
    tokenizer.with_normalizer(Some(NormalizerWrapper::from(NormalizerSequence::new(
        vec![
            NormalizerWrapper::from(Prepend::new("▁".to_string())),
            NormalizerWrapper::from(replace(" ", "▁")?),
        ],
    ))));
    let dec_replace = tokenizers::decoders::DecoderWrapper::from(
        tokenizers::normalizers::Replace::new("▁", " ")
            .map_err(|e| tok_err(format!("decoder: {e}")))?,
    );
    tokenizer.with_decoder(Some(DecoderWrapper::from(DecoderSequence::new(vec![
        dec_replace,
        DecoderWrapper::from(ByteFallback::new()),
        DecoderWrapper::from(Fuse::new()),
        DecoderWrapper::from(Strip::new(' ', 1, 0)),
    ]))));
    Ok(tokenizer)
}
