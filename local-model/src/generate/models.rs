//! Model architectures behind one interface, and weight loading with optional requantization.
//!
//! candle's quantized models keep their KV cache inside the model struct, so one model value
//! can serve one sequence at a time. [`ModelWeights`] holds the loaded weights once;
//! [`ModelWeights::instance`] hands each worker its own [`ModelInstance`]:
//!
//! - `llama`, `gemma3` and `qwen3` models are `Clone` and their tensors are reference-counted,
//!   so an instance is a clone that shares every weight with the others. (candle's qwen3 gives
//!   every layer a preallocated 4,096-position f32 KV buffer, `2 × kv_heads × head_dim` floats
//!   a position, and a clone copies it: about 0.9 GB per instance for Qwen3-0.6B, touched
//!   whether used or not.)
//! - candle's `qwen2` model is not `Clone`: each instance is built again from the (possibly
//!   requantized) GGUF bytes kept in memory, so every worker holds its own copy of the weights.
//!
//! # The llama fast path
//!
//! On the CPU, `llama` models whose matrices are Q8_0 or Q4_1 (after requantization) run on
//! this crate's own forward pass ([`crate::fast_llama`]), which is several times faster than
//! candle's for small models; everything else (qwen2, qwen3, gemma3, `quantize: q4k`, GPUs, unusual
//! llama variants) runs on candle's implementations. `SLMGATE_LLAMA_BACKEND=candle` in the
//! environment forces candle for llama too (benchmarks use it to compare).
//!
//! # Requantization
//!
//! candle has fast CPU kernels for Q8_0 and the K-quants but not for every GGUF type (Q4_1 has
//! no SIMD path), so [`Quantize::Q8_0`] (the default) and [`Quantize::Q4K`] convert every
//! matrix on load. Tensors whose row length is not a multiple of the target's block size fall
//! back to Q8_0, then to their original type; vectors (norms, biases) are never touched.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_qwen2, quantized_qwen3,
};

use super::error::LocalModelError;
use super::fast_llama::{LlamaState, LlamaWeights};
pub use super::quantize::Quantize;

/// A model family supported by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `general.architecture = llama` (SmolLM2, TinyLlama, Llama, Mistral-style models).
    Llama,
    /// `general.architecture = qwen2` (Qwen2, Qwen2.5).
    Qwen2,
    /// `general.architecture = gemma3`.
    Gemma3,
    /// `general.architecture = qwen3` (Qwen3: per-head RMS norms on queries and keys, no
    /// attention biases, `<think>` reasoning blocks).
    Qwen3,
}

impl Architecture {
    /// Maps `general.architecture` to a supported family.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "gemma3" => Some(Self::Gemma3),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The GGUF name (and metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
            Self::Qwen3 => "qwen3",
        }
    }

    /// The longest sequence candle's implementation can handle (its RoPE tables' size), if
    /// it is smaller than what the file declares.
    pub fn max_positions(self) -> Option<usize> {
        match self {
            Self::Llama => Some(quantized_llama::MAX_SEQ_LEN),
            Self::Gemma3 => Some(quantized_gemma3::MAX_SEQ_LEN),
            // qwen3's RoPE tables are sized from the file's context length.
            Self::Qwen2 | Self::Qwen3 => None,
        }
    }
}

fn candle_err(path: &Path, what: &str) -> impl FnOnce(candle_core::Error) -> LocalModelError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| LocalModelError::Model {
        path,
        context: what,
        source: Box::new(source),
    }
}

/// Loaded weights that can produce per-sequence [`ModelInstance`]s.
pub struct ModelWeights {
    arch: Architecture,
    path: PathBuf,
    device: Device,
    proto: Proto,
}

impl std::fmt::Debug for ModelWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelWeights")
            .field("arch", &self.arch)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

enum Proto {
    /// The crate's own llama forward pass.
    Fast(Arc<LlamaWeights>),
    Llama(quantized_llama::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    /// GGUF bytes to rebuild the (non-`Clone`) model from, plus one ready instance.
    Qwen2 {
        gguf: Arc<Vec<u8>>,
        spare: std::sync::Mutex<Option<quantized_qwen2::ModelWeights>>,
    },
}

impl ModelWeights {
    /// Loads the tensors of `content` (read from the file at `path`) for `arch`, requantized
    /// according to `quantize`.
    pub fn load(
        arch: Architecture,
        path: &Path,
        content: Content,
        file: &mut std::fs::File,
        quantize: Quantize,
        device: &Device,
    ) -> Result<Self, LocalModelError> {
        // `SLMGATE_LLAMA_BACKEND=candle` forces candle's implementation (for comparisons).
        let candle_forced =
            std::env::var("SLMGATE_LLAMA_BACKEND").is_ok_and(|v| v.eq_ignore_ascii_case("candle"));
        if arch == Architecture::Llama && device.is_cpu() && !candle_forced {
            match LlamaWeights::load(&content, file, quantize) {
                Ok(w) => {
                    tracing::debug!(formats = ?w.formats(), "llama model on the fast CPU path");
                    return Ok(Self {
                        arch,
                        path: path.to_path_buf(),
                        device: device.clone(),
                        proto: Proto::Fast(Arc::new(w)),
                    });
                }
                Err(why) => {
                    tracing::info!(model = %path.display(), reason = %why, "llama model runs on candle");
                }
            }
        }
        let target = match quantize {
            Quantize::Q8_0 => Some(GgmlDType::Q8_0),
            Quantize::Q4K => Some(GgmlDType::Q4K),
            Quantize::Keep => None,
        };
        // Requantizing, and qwen2's rebuilds, both need the tensors as an in-memory GGUF.
        let gguf: Option<Vec<u8>> = match (target, arch) {
            (Some(t), _) => Some(requantize(path, &content, file, t)?),
            (None, Architecture::Qwen2) => {
                use std::io::{Read, Seek};
                let mut bytes = Vec::new();
                file.seek(std::io::SeekFrom::Start(0))
                    .and_then(|_| file.read_to_end(&mut bytes))
                    .map_err(|source| LocalModelError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some(bytes)
            }
            (None, _) => None,
        };
        let build_err = candle_err(path, "building the model");
        let proto = match gguf {
            Some(bytes) => {
                let mut cursor = Cursor::new(bytes.as_slice());
                let mut content =
                    Content::read(&mut cursor).map_err(candle_err(path, "re-reading GGUF"))?;
                qwen3_f32_rope(arch, &mut content);
                match arch {
                    Architecture::Llama => Proto::Llama(
                        quantized_llama::ModelWeights::from_gguf(content, &mut cursor, device)
                            .map_err(build_err)?,
                    ),
                    Architecture::Gemma3 => Proto::Gemma3(
                        quantized_gemma3::ModelWeights::from_gguf(content, &mut cursor, device)
                            .map_err(build_err)?,
                    ),
                    Architecture::Qwen3 => Proto::Qwen3(
                        quantized_qwen3::ModelWeights::from_gguf(content, &mut cursor, device)
                            .map_err(build_err)?,
                    ),
                    Architecture::Qwen2 => {
                        let m =
                            quantized_qwen2::ModelWeights::from_gguf(content, &mut cursor, device)
                                .map_err(build_err)?;
                        Proto::Qwen2 {
                            gguf: Arc::new(bytes),
                            spare: std::sync::Mutex::new(Some(m)),
                        }
                    }
                }
            }
            None => match arch {
                Architecture::Qwen3 => {
                    let mut content = content;
                    qwen3_f32_rope(arch, &mut content);
                    Proto::Qwen3(
                        quantized_qwen3::ModelWeights::from_gguf(content, file, device)
                            .map_err(build_err)?,
                    )
                }
                Architecture::Llama => Proto::Llama(
                    quantized_llama::ModelWeights::from_gguf(content, file, device)
                        .map_err(build_err)?,
                ),
                Architecture::Gemma3 => Proto::Gemma3(
                    quantized_gemma3::ModelWeights::from_gguf(content, file, device)
                        .map_err(build_err)?,
                ),
                Architecture::Qwen2 => {
                    return Err(LocalModelError::Worker(
                        "internal: qwen2 weights must be loaded from memory".into(),
                    ))
                }
            },
        };
        Ok(Self {
            arch,
            path: path.to_path_buf(),
            device: device.clone(),
            proto,
        })
    }

    /// The model family.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A model for one sequence at a time, with an empty KV cache. Cheap for llama, gemma3
    /// and qwen3 (weights are shared); a rebuild from memory for qwen2. The fast llama path
    /// computes on as many threads as there are CPUs (see [`ModelWeights::instance_with_threads`]).
    pub fn instance(&self) -> Result<ModelInstance, LocalModelError> {
        self.instance_with_threads(crate::cpu::threads::default_threads())
    }

    /// Like [`ModelWeights::instance`], with `threads` compute threads for the fast llama path
    /// (candle's models use candle's own thread pool).
    pub fn instance_with_threads(&self, threads: usize) -> Result<ModelInstance, LocalModelError> {
        let inner = match &self.proto {
            Proto::Fast(w) => Inner::Fast(Box::new(LlamaState::new(w.clone(), threads))),
            Proto::Llama(m) => Inner::Llama(m.clone()),
            Proto::Gemma3(m) => Inner::Gemma3(m.clone()),
            Proto::Qwen3(m) => Inner::Qwen3(m.clone()),
            Proto::Qwen2 { gguf, spare } => {
                let taken = spare.lock().ok().and_then(|mut s| s.take());
                match taken {
                    Some(m) => Inner::Qwen2(m),
                    None => {
                        let mut cursor = Cursor::new(gguf.as_slice());
                        let content = Content::read(&mut cursor)
                            .map_err(candle_err(&self.path, "re-reading GGUF"))?;
                        Inner::Qwen2(
                            quantized_qwen2::ModelWeights::from_gguf(
                                content,
                                &mut cursor,
                                &self.device,
                            )
                            .map_err(candle_err(&self.path, "building the model"))?,
                        )
                    }
                }
            }
        };
        Ok(ModelInstance {
            inner,
            device: self.device.clone(),
            mask_shapes: HashSet::new(),
            mask_bytes: 0,
        })
    }

    /// Which implementation runs the model: `"fast-llama"` (this crate's forward pass) or
    /// `"candle"`.
    pub fn backend(&self) -> &'static str {
        match self.proto {
            Proto::Fast(_) => "fast-llama",
            _ => "candle",
        }
    }

    /// Whether [`ModelWeights::instance`] shares the weights (true) or copies them.
    pub fn instances_share_weights(&self) -> bool {
        !matches!(self.proto, Proto::Qwen2 { .. })
    }
}

/// Mask memory a rebuilt (qwen2) instance may accumulate before it is replaced.
const QWEN2_MASK_BUDGET: usize = 64 << 20;

/// One model with its own KV cache: one sequence at a time.
pub struct ModelInstance {
    inner: Inner,
    device: Device,
    /// candle's llama and qwen2 cache one causal mask per (prompt length, context length)
    /// and never evict them; these track how much that cache holds.
    mask_shapes: HashSet<(usize, usize)>,
    mask_bytes: usize,
}

enum Inner {
    Fast(Box<LlamaState>),
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
}

impl ModelInstance {
    /// Runs `tokens` at positions `pos..pos + tokens.len()` and returns the logits of the last
    /// position. `pos == 0` starts a new sequence (the KV cache is replaced).
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        if tokens.len() > 1 && self.mask_shapes.insert((tokens.len(), pos + tokens.len())) {
            self.mask_bytes += tokens.len() * (pos + tokens.len());
        }
        let logits = match &mut self.inner {
            Inner::Fast(s) => {
                return s
                    .forward(tokens, pos)
                    .map(<[f32]>::to_vec)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()));
            }
            Inner::Llama(m) => m.forward(&Tensor::new(tokens, &self.device)?.unsqueeze(0)?, pos)?,
            Inner::Qwen2(m) => m.forward(&Tensor::new(tokens, &self.device)?.unsqueeze(0)?, pos)?,
            Inner::Gemma3(m) => {
                m.forward(&Tensor::new(tokens, &self.device)?.unsqueeze(0)?, pos)?
            }
            Inner::Qwen3(m) => m.forward(&Tensor::new(tokens, &self.device)?.unsqueeze(0)?, pos)?,
        };
        logits
            .squeeze(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()
    }

    /// Runs `tokens` as a new sequence and returns the logits of every position
    /// (`tokens.len() × vocab`) and the final normalised hidden states (`tokens.len() × dim`),
    /// for scoring a text under the model. `None` when this instance's backend computes only
    /// the last position (everything but the fast llama path).
    pub fn forward_all(
        &mut self,
        tokens: &[u32],
    ) -> Option<candle_core::Result<(Vec<f32>, Vec<f32>)>> {
        match &mut self.inner {
            Inner::Fast(s) => Some(
                s.forward_all(tokens, 0)
                    .map(<[f32]>::to_vec)
                    .map(|logits| (logits, s.hidden().to_vec()))
                    .map_err(|e| candle_core::Error::Msg(e.to_string())),
            ),
            _ => None,
        }
    }

    /// Whether this instance should be replaced by a fresh [`ModelWeights::instance`]
    /// between requests, to release candle's ever-growing mask cache. Always true for llama
    /// after a prompt (a fresh instance is a cheap clone); for qwen2 once the cache is large.
    pub fn is_stale(&self) -> bool {
        match self.inner {
            Inner::Fast(_) => false,
            Inner::Llama(_) => self.mask_bytes > 0,
            Inner::Qwen2(_) => self.mask_bytes > QWEN2_MASK_BUDGET,
            // candle's qwen3 caches no masks (none on the CPU, built per call elsewhere).
            Inner::Gemma3(_) | Inner::Qwen3(_) => false,
        }
    }

    /// Whether several tokens can be fed at a position > 0 (prompt prefill in chunks).
    /// candle 0.11's gemma3 fails on that (its offset mask mixes dtypes).
    pub fn supports_chunked_prefill(&self) -> bool {
        !matches!(self.inner, Inner::Gemma3(_))
    }

    /// Drops the KV cache (between requests).
    pub fn clear(&mut self) {
        match &mut self.inner {
            Inner::Fast(s) => s.clear(),
            Inner::Llama(m) => m.clear_kv_cache(),
            Inner::Qwen2(m) => m.clear_kv_cache(),
            Inner::Qwen3(m) => m.clear_kv_cache(),
            // candle's gemma3 has no clear method; a forward at position 0 replaces the cache.
            Inner::Gemma3(_) => {}
        }
    }
}

/// candle's qwen3 computes its RoPE tables in the dtype named by `general.dtype` and defaults
/// to F16 when the key is absent, which it is in llama.cpp's GGUFs. F16 holds positions
/// exactly only up to 2,048 and rounds `position × frequency` to 11 bits (an angle error of
/// 0.03 rad at position 100, 0.25 rad at 1,000), so ask for F32 tables. On the CPU the key
/// changes nothing else (activations are F32 there); elsewhere it also sets the mask's dtype,
/// which is then cast to the scores' dtype.
fn qwen3_f32_rope(arch: Architecture, content: &mut Content) {
    if arch == Architecture::Qwen3 {
        content
            .metadata
            .entry("general.dtype".to_string())
            .or_insert(Value::U32(0));
    }
}

/// Reads every tensor, requantizes the matrices to `target`, and writes an in-memory GGUF
/// with the same metadata.
fn requantize(
    path: &Path,
    content: &Content,
    file: &mut std::fs::File,
    target: GgmlDType,
) -> Result<Vec<u8>, LocalModelError> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let cpu = Device::Cpu;
    for name in names {
        let err = candle_err(path, &format!("tensor {name}"));
        let t = content.tensor(file, name, &cpu).map_err(err)?;
        let t = convert(t, target).map_err(candle_err(path, &format!("requantizing {name}")))?;
        tensors.push((name.clone(), t));
    }
    let metadata: Vec<(&str, &Value)> = sorted_metadata(&content.metadata);
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)
        .map_err(candle_err(path, "writing the requantized GGUF"))?;
    Ok(out.into_inner())
}

fn sorted_metadata(md: &HashMap<String, Value>) -> Vec<(&str, &Value)> {
    let mut v: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn convert(t: QTensor, target: GgmlDType) -> candle_core::Result<QTensor> {
    let dims = t.shape().dims().to_vec();
    if dims.len() < 2 || t.dtype() == target {
        return Ok(t);
    }
    let row = *dims.last().unwrap_or(&0);
    let dtype = [target, GgmlDType::Q8_0]
        .into_iter()
        .find(|d| row.is_multiple_of(d.block_size()));
    let Some(dtype) = dtype else {
        return Ok(t);
    };
    if t.dtype() == dtype {
        return Ok(t);
    }
    let f = t.dequantize(&Device::Cpu)?;
    QTensor::quantize(&f, dtype)
}
