//! Text in, embeddings out: an encoder model (`model::encoder`) or a decoder (`model::llama`, e.g.
//! Qwen3-Embedding: causal attention, usually last-token pooling), its tokenizer, and the
//! sentence-transformers settings it was trained with (pooling, normalisation, maximum length).
//! Behaves as sentence-transformers does: the tokenizer's post-processor adds [CLS]/[SEP], its own
//! padding and truncation settings in tokenizer.json are ignored, inputs are cut at
//! `max_seq_length` only when asked (`truncate`), vectors are L2-normalised by default. An encoder
//! takes many inputs per GPU pass: sorted by length, padded per batch, as many per pass as fit. A
//! decoder takes one input per pass (its causal attention runs over one sequence's KV cache), each
//! prefilled whole and pooled on the GPU; only the pooled vector is read back.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::engine::{EngineError, Result};
use crate::gpu::Context;
use crate::loader::GpuTensor;
use crate::model::encoder::{encode, EncoderConfig, EncoderState, EncoderWeights};
use crate::model::llama::{Logits, State, StateOptions};
use crate::model::{Config, Model, ModelError};
use crate::ops::attention::KvDtype;
use crate::ops::pool::pool;
pub use crate::ops::pool::Pooling;

/// The package file holding [`EmbedSettings`] (written by `convert` from sentence-transformers' files).
pub const SETTINGS_FILE: &str = "embedding.json";
/// Token rows per GPU pass (sequences × padded length) unless opened with another.
pub const DEFAULT_MAX_ROWS: u32 = 4096;

/// How a model's hidden states become one embedding, as its checkpoint says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedSettings {
    pub pooling: Pooling,
    pub normalize: bool,
    /// Tokens per input (sentence_bert_config.json's `max_seq_length`), `None`: the model's positions.
    pub max_seq_length: Option<u32>,
}

impl EmbedSettings {
    /// Without sentence-transformers files: mean pooling, normalised (what a BERT checkpoint
    /// trained for similarity almost always uses), the model's full length.
    pub const DEFAULT: EmbedSettings = EmbedSettings { pooling: Pooling::Mean, normalize: true, max_seq_length: None };

    /// Read a checkpoint directory's sentence-transformers files (`modules.json`, the pooling
    /// module's `config.json`, `sentence_bert_config.json`); `Ok(None)` when it has none.
    pub fn from_sentence_transformers(dir: &Path) -> std::result::Result<Option<Self>, String> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(None);
        }
        let read = |p: &Path| -> std::result::Result<serde_json::Value, String> {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        };
        let modules = read(&modules_path)?;
        let modules = modules.as_array().ok_or_else(|| format!("{}: not a list", modules_path.display()))?;
        let kind =
            |m: &serde_json::Value| m["type"].as_str().unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
        let mut settings = EmbedSettings { normalize: false, ..Self::DEFAULT };
        for m in modules {
            match kind(m).as_str() {
                "Pooling" => {
                    let path = dir.join(m["path"].as_str().unwrap_or("")).join("config.json");
                    settings.pooling =
                        pooling_from_config(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                "Normalize" => settings.normalize = true,
                "Transformer" => {}
                other => return Err(format!("{}: module `{other}` is not supported", modules_path.display())),
            }
        }
        let st = dir.join("sentence_bert_config.json");
        if st.is_file() {
            settings.max_seq_length = read(&st)?["max_seq_length"].as_u64().map(|v| v.min(u32::MAX as u64) as u32);
        }
        Ok(Some(settings))
    }
}

/// sentence-transformers' Pooling config: exactly one of CLS, mean or last-token.
fn pooling_from_config(c: &serde_json::Value) -> std::result::Result<Pooling, String> {
    let on = |k: &str| c[k].as_bool().unwrap_or(false);
    let modes = [
        (on("pooling_mode_cls_token"), Pooling::Cls),
        (on("pooling_mode_mean_tokens"), Pooling::Mean),
        (on("pooling_mode_lasttoken"), Pooling::Last),
    ];
    if on("pooling_mode_max_tokens")
        || on("pooling_mode_mean_sqrt_len_tokens")
        || on("pooling_mode_weightedmean_tokens")
    {
        return Err("max, sqrt-length and weighted-mean pooling are not supported".into());
    }
    let chosen: Vec<Pooling> = modes.iter().filter(|(b, _)| *b).map(|&(_, p)| p).collect();
    match chosen[..] {
        [p] => Ok(p),
        [] => Err("no pooling mode is set".into()),
        _ => Err("several pooling modes at once (concatenated) are not supported".into()),
    }
}

/// A request's choices; `None` fields take the model's settings.
#[derive(Clone, Debug, Default)]
pub struct EmbedOptions {
    /// Keep the first `dimensions` values (Matryoshka models), normalised after the cut.
    pub dimensions: Option<u32>,
    /// Cut inputs longer than the model's maximum at the end instead of failing.
    pub truncate: bool,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
}

/// What one request gave: one vector per input, in input order.
#[derive(Clone, Debug, Serialize)]
pub struct Embeddings {
    pub dims: u32,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Each input's token ids as fed to the model.
    pub ids: Vec<Vec<u32>>,
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens over all inputs (OpenAI's `usage.prompt_tokens`).
    pub tokens: usize,
    /// GPU passes the inputs took.
    pub passes: usize,
}

/// What a loaded embedding model is (for `modelInfo` and the CLI).
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedderShape {
    /// `model_type` (bert, qwen3, …).
    pub architecture: String,
    pub layers: u32,
    /// The model's width: values per embedding before a `dimensions` cut.
    pub hidden: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub vocab: u32,
    /// Positions the model has.
    pub max_position: u32,
    /// Token rows one GPU pass takes.
    pub max_rows: u32,
}

// One of each per embedder: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backbone {
    Encoder {
        config: EncoderConfig,
        weights: EncoderWeights,
        state: EncoderState,
    },
    /// A causal LM without its head; `lens`/`out` are the pooling's input length and output.
    Decoder {
        model: Box<Model>,
        lens: wgpu::Buffer,
        out: wgpu::Buffer,
    },
}

pub struct Embedder {
    backbone: Backbone,
    pub shape: EmbedderShape,
    pub settings: EmbedSettings,
    tokenizer: Tokenizer,
    /// The same, cutting at `max_tokens` (its post-processor's special tokens kept).
    truncating: Tokenizer,
}

impl Embedder {
    /// An embedder over loaded package tensors: a BERT encoder (HF BertModel names, with or
    /// without `bert.`), or a causal LM the engine runs (its names with or without `model.`, as
    /// Qwen3-Embedding saves them; its lm_head is not needed).
    pub fn new(
        ctx: &Context,
        architecture: &serde_json::Value,
        tensors: &mut HashMap<String, GpuTensor>,
        tokenizer_json: &[u8],
        settings: EmbedSettings,
        max_rows: u32,
    ) -> Result<Self> {
        let model_type = architecture["model_type"].as_str().unwrap_or("").to_string();
        let (backbone, shape) = if EncoderConfig::is_encoder(architecture) {
            let config = EncoderConfig::from_hf(architecture).map_err(|e| EngineError::from(ModelError::Config(e)))?;
            let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
            let weights = EncoderWeights::load(ctx, &config, tensors, prefix)?;
            let state = EncoderState::new(ctx, &config, max_rows)?;
            let shape = EmbedderShape {
                architecture: model_type,
                layers: config.n_layers,
                hidden: config.hidden,
                heads: config.n_heads,
                kv_heads: config.n_heads,
                vocab: config.vocab,
                max_position: config.max_position,
                max_rows,
            };
            (Backbone::Encoder { config, weights, state }, shape)
        } else {
            decoder(ctx, architecture, tensors, max_rows, model_type)?
        };
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_json).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        // tokenizer.json may pad or cut (all-MiniLM's pads to 128): sentence-transformers does neither
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut embedder = Embedder { backbone, shape, settings, truncating: tokenizer.clone(), tokenizer };
        let cut = TruncationParams {
            max_length: embedder.max_tokens() as usize,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        embedder.truncating.with_truncation(Some(cut)).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(embedder)
    }

    /// Values per embedding before a `dimensions` cut: the model's width.
    pub fn dims(&self) -> u32 {
        self.shape.hidden
    }

    /// The most tokens an input may have: `max_seq_length`, within the model's positions.
    pub fn max_tokens(&self) -> u32 {
        self.settings.max_seq_length.unwrap_or(u32::MAX).min(self.shape.max_position).min(self.shape.max_rows)
    }

    /// Token ids of each input as the model will see them (special tokens added; cut at
    /// `max_tokens` with `truncate`, else an input too long is an error).
    pub fn tokenize(&self, inputs: &[String], truncate: bool) -> Result<Vec<Vec<u32>>> {
        if inputs.is_empty() {
            return Err(EngineError::EmptyInput { index: None });
        }
        let tok = if truncate { &self.truncating } else { &self.tokenizer };
        let max = self.max_tokens() as usize;
        inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                if text.is_empty() {
                    return Err(EngineError::EmptyInput { index: Some(index) });
                }
                let enc = tok.encode(text.as_str(), true).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
                let ids = enc.get_ids().to_vec();
                if ids.len() > max {
                    return Err(EngineError::InputTooLong { index, tokens: ids.len(), max });
                }
                Ok(ids)
            })
            .collect()
    }

    /// One embedding per input.
    pub async fn embed(&self, ctx: &Context, inputs: &[String], opts: &EmbedOptions) -> Result<Embeddings> {
        let pooling = opts.pooling.unwrap_or(self.settings.pooling);
        let normalize = opts.normalize.unwrap_or(self.settings.normalize);
        let hidden = self.shape.hidden;
        let dims = opts.dimensions.unwrap_or(hidden);
        if dims == 0 || dims > hidden {
            return Err(EngineError::InvalidOption {
                option: "dimensions",
                message: format!("{dims}: must be 1..={hidden} (the model's width)"),
            });
        }
        let ids = self.tokenize(inputs, opts.truncate)?;
        let mut embeddings = vec![Vec::new(); ids.len()];
        let mut passes = 0;
        match &self.backbone {
            Backbone::Encoder { config, weights, state } => {
                // Longest first, so each pass pads to a length close to its inputs'.
                let mut order: Vec<usize> = (0..ids.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
                let mut start = 0;
                while start < order.len() {
                    let seq = ids[order[start]].len() as u32;
                    let fit = (state.max_rows / seq).max(1) as usize;
                    let group = &order[start..(start + fit).min(order.len())];
                    let seqs: Vec<Vec<u32>> = group.iter().map(|&i| ids[i].clone()).collect();
                    let shape = state.write_batch(ctx, config, &seqs)?;
                    let kernels = encode(ctx, config, weights, state, shape, pooling, dims, normalize)?;
                    ctx.run(&kernels.iter().collect::<Vec<_>>());
                    let out = ctx.read_f32(&state.out, group.len() * dims as usize).await?;
                    for (j, &i) in group.iter().enumerate() {
                        embeddings[i] = out[j * dims as usize..(j + 1) * dims as usize].to_vec();
                    }
                    passes += 1;
                    start += group.len();
                }
            }
            Backbone::Decoder { model, lens, out } => {
                for (i, seq) in ids.iter().enumerate() {
                    // One sequence per pass: prefilled whole (max_tokens ≤ max_batch), then pooled.
                    let t = seq.len() as u32;
                    model.run(ctx, seq, 0, Logits::Hidden)?;
                    ctx.write(lens, 0, bytemuck::bytes_of(&t));
                    let k = pool(ctx, model.state.hidden(), lens, out, (1, t, hidden), dims, pooling, normalize)?;
                    ctx.run(&[&k]);
                    embeddings[i] = ctx.read_f32(out, dims as usize).await?;
                    passes += 1;
                }
            }
        }
        let tokens = ids.iter().map(|v| v.len()).sum();
        Ok(Embeddings { dims, pooling, normalize, ids, embeddings, tokens, passes })
    }

    /// Every GPU buffer (for `Context::release_all`).
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        match &self.backbone {
            Backbone::Encoder { state, .. } => state.buffers(),
            Backbone::Decoder { model, lens, out } => {
                let mut b = model.weights.buffers();
                b.extend(model.state.buffers());
                b.extend([lens, out]);
                b
            }
        }
    }
}

/// The state a decoder embedder runs an input in: prefilled whole, so `max_rows` (within the model's
/// positions) is both its context and its batch; K and V in f16 (half the memory of f32; the vectors
/// move by ~1e-4 relative, tests/embed_decoder.rs).
pub fn decoder_state_options(config: &Config, max_rows: u32) -> StateOptions {
    let rows = max_rows.min(config.max_position);
    StateOptions { context: rows, max_batch: rows, kv_dtype: KvDtype::F16, all_logits: false }
}

/// GPU bytes an embedder's state takes for `max_rows` token rows per pass, within a few KB (its
/// weights not counted): an encoder's batch activations, or a decoder's `State`
/// ([`decoder_state_options`]) and pooled output. For an out-of-memory check before a download.
pub fn embedder_state_bytes(architecture: &serde_json::Value, max_rows: u32) -> Result<u64> {
    let config_error = |e| EngineError::from(ModelError::Config(e));
    if EncoderConfig::is_encoder(architecture) {
        let config = EncoderConfig::from_hf(architecture).map_err(config_error)?;
        return Ok(EncoderState::bytes(&config, max_rows));
    }
    let config = decoder_config(architecture)?;
    // + the pooling's length and output
    Ok(State::bytes(&config, &decoder_state_options(&config, max_rows)) + 4 + 4 * config.hidden as u64)
}

/// Allocate the state an embedder would hold for `max_rows` token rows and free it again: the
/// out-of-memory probe before a download (its size: [`embedder_state_bytes`]).
pub fn probe_state(ctx: &Context, architecture: &serde_json::Value, max_rows: u32) -> Result<()> {
    if EncoderConfig::is_encoder(architecture) {
        let config = EncoderConfig::from_hf(architecture).map_err(|e| EngineError::from(ModelError::Config(e)))?;
        let state = EncoderState::new(ctx, &config, max_rows)?;
        ctx.release_all(state.buffers());
        return Ok(());
    }
    let config = decoder_config(architecture)?;
    let state = State::new(ctx, &config, decoder_state_options(&config, max_rows))?;
    ctx.release_all(state.buffers());
    Ok(())
}

/// A causal LM's config, refused when recurrent (Gated DeltaNet): its state would have to be reset
/// between inputs, and no embedding model has one.
fn decoder_config(architecture: &serde_json::Value) -> Result<Config> {
    let config_error = |e| EngineError::from(ModelError::Config(e));
    let config = Config::from_hf(architecture).map_err(config_error)?;
    if config.delta.is_some() {
        let model_type = architecture["model_type"].as_str().unwrap_or("");
        return Err(config_error(crate::model::ConfigError::Invalid(format!(
            "{model_type}: a recurrent (Gated DeltaNet) model cannot embed"
        ))));
    }
    Ok(config)
}

/// A causal LM as an embedder: its config (tied to the embedding when the checkpoint has no lm_head,
/// which embedding models drop), tensor names given their `model.` prefix when saved without it, and
/// a state that prefills `max_rows` tokens in one pass.
fn decoder(
    ctx: &Context,
    architecture: &serde_json::Value,
    tensors: &mut HashMap<String, GpuTensor>,
    max_rows: u32,
    model_type: String,
) -> Result<(Backbone, EmbedderShape)> {
    if !tensors.contains_key("model.embed_tokens.weight") && tensors.contains_key("embed_tokens.weight") {
        let bare: Vec<String> = tensors.keys().filter(|k| !k.starts_with("model.")).cloned().collect();
        for name in bare {
            if let Some(t) = tensors.remove(&name) {
                tensors.insert(format!("model.{name}"), t);
            }
        }
    }
    let mut arch = architecture.clone();
    if !tensors.contains_key("lm_head.weight") {
        arch["tie_word_embeddings"] = serde_json::Value::Bool(true);
    }
    let config = decoder_config(&arch)?;
    let opts = decoder_state_options(&config, max_rows);
    let rows = opts.max_batch;
    let shape = EmbedderShape {
        architecture: model_type,
        layers: config.n_layers,
        hidden: config.hidden,
        heads: config.n_heads,
        kv_heads: config.n_kv_heads,
        vocab: config.vocab,
        max_position: config.max_position,
        max_rows: rows,
    };
    let model = Model::new(ctx, config, tensors, opts)?;
    let lens = ctx.storage("embed.lens", 4)?;
    let out = ctx.storage("embed.out", shape.hidden as u64 * 4)?;
    Ok((Backbone::Decoder { model: Box::new(model), lens, out }, shape))
}

/// Open an embedding model: a package written by `convert` from a BERT-family checkpoint, or a
/// GGUF file (`open_gguf_embedder`).
#[cfg(not(target_arch = "wasm32"))]
pub fn open_embedder(ctx: &Context, dir: &Path, max_rows: u32) -> Result<Embedder> {
    use crate::loader::LoadError;
    if dir.is_file() {
        return open_gguf_embedder(ctx, dir, max_rows);
    }
    let package = crate::loader::Package::open(dir)?;
    let mut tensors = package.load(ctx)?;
    let read = |f: &str| {
        let path = package.path(f);
        std::fs::read(&path)
            .map_err(|e| EngineError::Load(LoadError::Io { path: path.display().to_string(), source: e }))
    };
    let tokenizer = read("tokenizer.json")?;
    let settings = match read(SETTINGS_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::InvalidOption { option: "embedding.json", message: e.to_string() })?,
        Err(_) => EmbedSettings::DEFAULT,
    };
    Embedder::new(ctx, &package.manifest.architecture, &mut tensors, &tokenizer, settings, max_rows)
}

impl EmbedSettings {
    /// A GGUF embedding model's settings: `<arch>.pooling_type` (mean when the file does not say),
    /// normalised (as llama.cpp's embeddings are by default), the model's full length.
    pub fn from_gguf(md: &crate::loader::gguf::Metadata) -> Result<Self> {
        let pooling = crate::loader::gguf::pooling(md).map_err(EngineError::Gguf)?;
        Ok(EmbedSettings { pooling: pooling.unwrap_or(Pooling::Mean), ..Self::DEFAULT })
    }
}

/// An embedder over a GGUF's tensors as llama.cpp lays out an embedding model (its `bert` and
/// `nomic-bert` architectures, or a decoder with `<arch>.pooling_type`): config, tokenizer and
/// pooling from the metadata.
pub fn embedder_from_gguf(
    ctx: &Context,
    file: &crate::loader::gguf::GgufFile,
    tensors: &mut HashMap<String, GpuTensor>,
    src: &mut dyn crate::loader::gguf::GgufSource,
    max_rows: u32,
) -> Result<Embedder> {
    use crate::loader::{gguf, gguf_tokenizer::GgufTokenizer};
    let architecture = gguf::hf_config(file, src).map_err(crate::engine::gguf_error)?;
    let tok = GgufTokenizer::from_metadata(&file.metadata).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let json = tok.tokenizer_json().map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let settings = EmbedSettings::from_gguf(&file.metadata)?;
    Embedder::new(ctx, &architecture, tensors, &json, settings, max_rows)
}

/// Open a GGUF embedding model (a BERT-family encoder written by llama.cpp's converter).
#[cfg(not(target_arch = "wasm32"))]
pub fn open_gguf_embedder(ctx: &Context, path: &Path, max_rows: u32) -> Result<Embedder> {
    let (file, mut tensors, mut captured) = crate::engine::stream_gguf(ctx, path)?;
    embedder_from_gguf(ctx, &file, &mut tensors, &mut captured, max_rows)
}
