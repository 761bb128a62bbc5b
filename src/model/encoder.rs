//! BERT-family text encoders for sentence embeddings: `BertModel` (all-MiniLM, bge, e5: learned
//! absolute positions, biases, erf-GELU feed-forward) and nomic-bert (nomic-embed-text: rotary
//! positions, a fused bias-free q|k|v projection, SwiGLU feed-forward). Both are post-LayerNorm
//! blocks with token types and bidirectional attention over a padded batch, then pooling, so
//! they differ only as data in [`EncoderConfig`]. `encode` reads top to bottom like
//! `llama::forward`; the ops say how.

use serde_json::Value;

use super::config::ConfigError;
use super::error::Result;
use super::weights::{Linear, TensorSource};
use crate::gpu::{ensure, Context, Kernel};
use crate::ops::add::add_inplace;
use crate::ops::embedding::embedding;
use crate::ops::encoder_attention::{encoder_attention, EncoderAttentionShape};
use crate::ops::gelu::gelu;
use crate::ops::layer_norm::layer_norm;
use crate::ops::matmul::{matmul, Epilogue, QuantMatrix};
use crate::ops::pool::{pool, Pooling};
use crate::ops::rope::{rope_rows, RopeConfig, RopePairing, RopeTable};
use crate::ops::swiglu::{swiglu_fused, Act};

/// How a token's position enters the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    /// A learned table added to the embeddings (`position_embeddings`, BERT).
    Absolute,
    /// Rotary embeddings on q and k in every layer (nomic-bert): the first `rotary_dim` dims of
    /// each head, pairs (i, i + rotary_dim/2) or interleaved (2i, 2i + 1), frequencies base^(-2i/rotary_dim).
    Rotary { base: f64, rotary_dim: u32, interleaved: bool },
}

/// The feed-forward block between the attention and the second LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedForward {
    /// `gelu(x·W1 + b1)·W2 + b2`, exact erf GELU (BERT's `intermediate`/`output`).
    Gelu,
    /// `(silu(x·Wg) ⊙ x·Wu)·W2` (nomic-bert's `fc12` gate, `fc11` up, `fc2`).
    SwiGlu,
}

/// Which checkpoint names the tensors have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face `BertModel`: `encoder.layer.N.attention.self.query`, …
    Bert,
    /// nomic-ai's `NomicBertModel` (`modeling_hf_nomic_bert.py`): `encoder.layers.N.attn.Wqkv`, …
    NomicBert,
}

/// An encoder's hyperparameters (config.json of `model_type` "bert" or "nomic_bert").
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub naming: Naming,
    pub positions: Positions,
    pub feed_forward: FeedForward,
    /// Biases on the q/k/v and output projections (BERT: yes; nomic: `qkv_proj_bias`).
    pub attn_bias: bool,
    /// Biases on the feed-forward's first (up and gate) and second projections.
    pub ffn_bias: (bool, bool),
    pub hidden: u32,
    pub n_layers: u32,
    pub n_heads: u32,
    pub head_dim: u32,
    /// The feed-forward's inner width (`intermediate_size`).
    pub ffn: u32,
    pub vocab: u32,
    /// The longest input: positions the model has embeddings for (`max_position_embeddings`), or
    /// for rotary models the length it declares (nomic's `n_positions`, beyond the 2048 it was
    /// trained on: rotary positions extrapolate).
    pub max_position: u32,
    /// Rows of the token-type table (`type_vocab_size`), 0 for none; every input uses type 0.
    pub type_vocab: u32,
    pub eps: f32,
}

impl EncoderConfig {
    /// Whether a config.json is one of the encoders this module runs (others are decoders).
    pub fn is_encoder(c: &Value) -> bool {
        matches!(c["model_type"].as_str(), Some("bert" | "nomic_bert"))
    }

    pub fn from_hf(c: &Value) -> Result<Self, ConfigError> {
        match c["model_type"].as_str().unwrap_or("") {
            "bert" => Self::from_bert(c),
            "nomic_bert" => Self::from_nomic_bert(c),
            other => Err(ConfigError::UnsupportedArch(other.to_string())),
        }
    }

    fn from_bert(c: &Value) -> Result<Self, ConfigError> {
        let u = |key: &'static str| positive(c, key);
        let act = c["hidden_act"].as_str().unwrap_or("gelu");
        if act != "gelu" {
            return Err(ConfigError::Invalid(format!("hidden_act `{act}`: only \"gelu\" (erf) is supported for BERT")));
        }
        let positions = c["position_embedding_type"].as_str().unwrap_or("absolute");
        if positions != "absolute" {
            return Err(ConfigError::Invalid(format!("position_embedding_type `{positions}`: only \"absolute\"")));
        }
        let (hidden, n_heads) = (u("hidden_size")?, u("num_attention_heads")?);
        Ok(Self {
            naming: Naming::Bert,
            positions: Positions::Absolute,
            feed_forward: FeedForward::Gelu,
            attn_bias: true,
            ffn_bias: (true, true),
            hidden,
            n_layers: u("num_hidden_layers")?,
            n_heads,
            head_dim: head_dim(hidden, n_heads)?,
            ffn: u("intermediate_size")?,
            vocab: u("vocab_size")?,
            max_position: u("max_position_embeddings")?,
            type_vocab: c["type_vocab_size"].as_u64().unwrap_or(2).max(1) as u32,
            eps: c["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
        })
    }

    /// nomic-ai's config (a GPT2Config: `n_embd`, `n_head`, …) as `modeling_hf_nomic_bert.py`
    /// reads it; the variants that code has and this encoder does not run are refused by name.
    fn from_nomic_bert(c: &Value) -> Result<Self, ConfigError> {
        let u = |key: &'static str| positive(c, key);
        let flag = |key: &str, default: bool| c[key].as_bool().unwrap_or(default);
        let refuse = |what: String| Err(ConfigError::Invalid(format!("nomic_bert: {what} is not supported")));
        for (key, default) in
            [("prenorm", false), ("parallel_block", false), ("causal", false), ("use_rms_norm", false)]
        {
            if flag(key, default) {
                return refuse(format!("{key}: true"));
            }
        }
        if c.get("norm_mlp").is_some_and(|v| v.as_bool() == Some(true)) {
            return refuse("norm_mlp: true".into());
        }
        // dynamic NTK scaling picks its base from each batch's length, xPos scales q and k apart
        for key in ["rotary_scaling_factor", "rotary_emb_scale_base"] {
            if !c[key].is_null() {
                return refuse(format!("{key} {}", c[key]));
            }
        }
        let (hidden, n_heads) = (u("n_embd")?, u("n_head")?);
        if let Some(kv) = c["num_heads_kv"].as_u64().filter(|&kv| kv != n_heads as u64) {
            return refuse(format!("num_heads_kv {kv} (≠ n_head {n_heads})"));
        }
        let head_dim = head_dim(hidden, n_heads)?;
        let fraction = c["rotary_emb_fraction"].as_f64().unwrap_or(0.0);
        let max_position = u("n_positions")?;
        let positions = if fraction <= 0.0 {
            Positions::Absolute
        } else {
            // the reference rotates head_dim · fraction dims (a float there; an even integer here)
            let dims = head_dim as f64 * fraction;
            if dims.fract() != 0.0 || dims as u32 % 2 != 0 || dims > head_dim as f64 {
                return refuse(format!("rotary_emb_fraction {fraction} ({dims} of {head_dim} dims)"));
            }
            Positions::Rotary {
                base: c["rotary_emb_base"].as_f64().unwrap_or(10_000.0),
                rotary_dim: dims as u32,
                interleaved: flag("rotary_emb_interleaved", false),
            }
        };
        let act = c["activation_function"].as_str().unwrap_or("gelu_new");
        let feed_forward = match act {
            "swiglu" => FeedForward::SwiGlu,
            "gelu" => FeedForward::Gelu,
            _ => return refuse(format!("activation_function `{act}` (swiglu and gelu are)")),
        };
        // NomciBertGatedMLP: n_inner (default 8/3 of the width) rounded up to a multiple of 256;
        // the plain MLP takes n_inner as it is (default 4× the width)
        let ffn = match (feed_forward, c["n_inner"].as_u64()) {
            (FeedForward::SwiGlu, inner) => {
                let inner = inner.unwrap_or(8 * hidden as u64 / 3);
                inner.div_ceil(256) * 256
            }
            (FeedForward::Gelu, inner) => inner.unwrap_or(4 * hidden as u64),
        };
        let ffn = u32::try_from(ffn).ok().filter(|&f| f > 0).ok_or(ConfigError::Missing("n_inner"))?;
        // the word table has vocab_size rounded up to pad_vocab_size_multiple rows
        let multiple = c["pad_vocab_size_multiple"].as_u64().unwrap_or(1).max(1);
        let vocab = u32::try_from((u("vocab_size")? as u64).div_ceil(multiple) * multiple)
            .map_err(|_| ConfigError::Invalid("vocab_size overflows u32".into()))?;
        let qkv_bias = flag("qkv_proj_bias", true);
        Ok(Self {
            naming: Naming::NomicBert,
            positions,
            feed_forward,
            attn_bias: qkv_bias,
            ffn_bias: (flag("mlp_fc1_bias", true), flag("mlp_fc2_bias", true)),
            hidden,
            n_layers: u("n_layer")?,
            n_heads,
            head_dim,
            ffn,
            vocab,
            max_position,
            type_vocab: c["type_vocab_size"].as_u64().unwrap_or(2) as u32,
            eps: c["layer_norm_epsilon"].as_f64().unwrap_or(1e-5) as f32,
        })
    }

    /// The rotary table's settings, for a rotary model.
    pub fn rope(&self) -> Option<RopeConfig> {
        match self.positions {
            Positions::Absolute => None,
            Positions::Rotary { base, rotary_dim, interleaved } => {
                let pairing = if interleaved { RopePairing::Interleaved } else { RopePairing::Half };
                Some(RopeConfig { rotary_dim, ..RopeConfig::new(self.head_dim, base, pairing) })
            }
        }
    }
}

fn positive(c: &Value, key: &'static str) -> Result<u32, ConfigError> {
    c[key].as_u64().filter(|&v| v > 0 && v <= u32::MAX as u64).map(|v| v as u32).ok_or(ConfigError::Missing(key))
}

fn head_dim(hidden: u32, n_heads: u32) -> Result<u32, ConfigError> {
    if hidden % n_heads != 0 {
        return Err(ConfigError::Invalid(format!("hidden_size {hidden} is not a multiple of {n_heads} heads")));
    }
    Ok(hidden / n_heads)
}

/// A LayerNorm's weight and bias, each `[hidden]`.
pub struct LayerNormW {
    pub w: wgpu::Buffer,
    pub b: wgpu::Buffer,
}

pub struct EncoderLayer {
    /// Projections whose outputs sit side by side in a q | k | v row: q, k and v (BERT), or one
    /// fused `Wqkv` (nomic).
    pub qkv: Vec<Linear>,
    pub o: Linear,
    pub attn_norm: LayerNormW,
    pub up: Linear,
    /// SwiGLU's gate (nomic's `fc12`); `None` for GELU.
    pub gate: Option<Linear>,
    pub down: Linear,
    pub ffn_norm: LayerNormW,
}

pub struct EncoderWeights {
    pub word: QuantMatrix,
    /// `None` for rotary models.
    pub position: Option<QuantMatrix>,
    /// `None` when the model has no token types.
    pub token_type: Option<QuantMatrix>,
    pub embed_norm: LayerNormW,
    pub layers: Vec<EncoderLayer>,
    /// Rotary models' inverse frequencies.
    pub rope: Option<RopeTable>,
}

impl EncoderWeights {
    /// Tensors by the checkpoint's names under `prefix` ("" as sentence-transformers and
    /// nomic-embed save them, "bert." inside task models): Hugging Face `BertModel`'s, or
    /// nomic-ai's `NomicBertModel`'s (`embeddings.word_embeddings`, `emb_ln`,
    /// `encoder.layers.N.{attn.Wqkv, attn.out_proj, norm1, mlp.fc11, mlp.fc12, mlp.fc2, norm2}`).
    pub fn load(ctx: &Context, cfg: &EncoderConfig, src: &mut dyn TensorSource, prefix: &str) -> Result<Self> {
        let (h, f) = (cfg.hidden, cfg.ffn);
        let (ab, (b1, b2)) = (cfg.attn_bias, cfg.ffn_bias);
        let gated = cfg.feed_forward == FeedForward::SwiGlu;
        let mut l = Loader { ctx, src, prefix };
        let mut layers = Vec::with_capacity(cfg.n_layers as usize);
        for i in 0..cfg.n_layers {
            layers.push(match cfg.naming {
                Naming::Bert => {
                    let p = format!("encoder.layer.{i}.");
                    EncoderLayer {
                        qkv: vec![
                            l.linear(&format!("{p}attention.self.query"), h, h, ab)?,
                            l.linear(&format!("{p}attention.self.key"), h, h, ab)?,
                            l.linear(&format!("{p}attention.self.value"), h, h, ab)?,
                        ],
                        o: l.linear(&format!("{p}attention.output.dense"), h, h, ab)?,
                        attn_norm: l.norm(&format!("{p}attention.output.LayerNorm"), h)?,
                        up: l.linear(&format!("{p}intermediate.dense"), f, h, b1)?,
                        gate: None,
                        down: l.linear(&format!("{p}output.dense"), h, f, b2)?,
                        ffn_norm: l.norm(&format!("{p}output.LayerNorm"), h)?,
                    }
                }
                Naming::NomicBert => {
                    let p = format!("encoder.layers.{i}.");
                    // NomciBertGatedMLP: fc11(x) * silu(fc12(x)), so fc12 is the gate
                    let (up, gate) = if gated {
                        (
                            l.linear(&format!("{p}mlp.fc11"), f, h, b1)?,
                            Some(l.linear(&format!("{p}mlp.fc12"), f, h, b1)?),
                        )
                    } else {
                        (l.linear(&format!("{p}mlp.fc1"), f, h, b1)?, None)
                    };
                    EncoderLayer {
                        qkv: vec![l.linear(&format!("{p}attn.Wqkv"), 3 * h, h, ab)?],
                        o: l.linear(&format!("{p}attn.out_proj"), h, h, ab)?,
                        attn_norm: l.norm(&format!("{p}norm1"), h)?,
                        up,
                        gate,
                        down: l.linear(&format!("{p}mlp.fc2"), h, f, b2)?,
                        ffn_norm: l.norm(&format!("{p}norm2"), h)?,
                    }
                }
            });
        }
        let position = match cfg.positions {
            Positions::Absolute => Some(l.matrix("embeddings.position_embeddings.weight", cfg.max_position, h)?),
            Positions::Rotary { .. } => None,
        };
        let token_type = match cfg.type_vocab {
            0 => None,
            n => Some(l.matrix("embeddings.token_type_embeddings.weight", n, h)?),
        };
        let embed_norm = match cfg.naming {
            Naming::Bert => l.norm("embeddings.LayerNorm", h)?,
            Naming::NomicBert => l.norm("emb_ln", h)?,
        };
        let rope = cfg.rope().map(|r| RopeTable::new(ctx, &r, cfg.max_position)).transpose()?;
        Ok(Self {
            word: l.matrix("embeddings.word_embeddings.weight", cfg.vocab, h)?,
            position,
            token_type,
            embed_norm,
            layers,
            rope,
        })
    }
}

struct Loader<'a> {
    ctx: &'a Context,
    src: &'a mut dyn TensorSource,
    prefix: &'a str,
}

impl Loader<'_> {
    fn matrix(&mut self, name: &str, n: u32, k: u32) -> Result<QuantMatrix> {
        let name = format!("{}{name}", self.prefix);
        let w = self.src.matrix(self.ctx, &name)?;
        check_shape(&name, &w, n, k)?;
        Ok(w)
    }

    fn linear(&mut self, name: &str, n: u32, k: u32, bias: bool) -> Result<Linear> {
        let w = self.matrix(&format!("{name}.weight"), n, k)?;
        let bias =
            if bias { Some(self.src.vector(self.ctx, &format!("{}{name}.bias", self.prefix), n)?) } else { None };
        Ok(Linear { w, bias })
    }

    fn norm(&mut self, name: &str, dim: u32) -> Result<LayerNormW> {
        let w = self.src.vector(self.ctx, &format!("{}{name}.weight", self.prefix), dim)?;
        let b = self.src.vector(self.ctx, &format!("{}{name}.bias", self.prefix), dim)?;
        Ok(LayerNormW { w, b })
    }
}

fn check_shape(name: &str, w: &QuantMatrix, n: u32, k: u32) -> Result<()> {
    if w.n != n || w.k != k {
        return Err(super::ModelError::TensorShape {
            name: name.into(),
            found: format!("[{}, {}]", w.n, w.k),
            expected: format!("[{n}, {k}]"),
        });
    }
    Ok(())
}

/// Activations for up to `max_rows` token rows (sequences × padded length) per pass, allocated once.
pub struct EncoderState {
    pub max_rows: u32,
    ids: wgpu::Buffer,   // (max_rows) u32 token ids, padding 0
    pos: wgpu::Buffer,   // (max_rows) u32 position of each row in its sequence
    types: wgpu::Buffer, // (max_rows) u32 zeros: token type 0 everywhere
    lens: wgpu::Buffer,  // (max_rows) u32 real length of each sequence
    x: wgpu::Buffer,     // (rows, hidden) the hidden states
    tmp: wgpu::Buffer,   // (rows, hidden) a sublayer's output before its add & norm
    qkv: wgpu::Buffer,   // (rows, 3 hidden) q | k | v
    att: wgpu::Buffer,   // (rows, hidden)
    up: wgpu::Buffer,    // (rows, ffn) the feed-forward's activation
    /// (rows, 2 ffn) SwiGLU's gate | up side by side; `None` for GELU.
    gate_up: Option<wgpu::Buffer>,
    /// (max_rows, hidden) pooled vectors, read back.
    pub out: wgpu::Buffer,
}

impl EncoderState {
    /// GPU bytes `new` allocates: four u32 rows, seven f32 rows of `hidden` (x, tmp, q|k|v, att,
    /// out) and one of `ffn` (three with SwiGLU's gate | up), per token row.
    pub fn bytes(cfg: &EncoderConfig, max_rows: u32) -> u64 {
        let ffn_rows = if cfg.feed_forward == FeedForward::SwiGlu { 3 } else { 1 };
        max_rows as u64 * 4 * (4 + 7 * cfg.hidden as u64 + ffn_rows * cfg.ffn as u64)
    }

    pub fn new(ctx: &Context, cfg: &EncoderConfig, max_rows: u32) -> Result<Self> {
        ensure(max_rows > 0, "EncoderState", || "max_rows = 0".into())?;
        let r = max_rows as u64;
        let f32s = |label: &str, width: u32| ctx.storage(label, r * width as u64 * 4);
        Ok(Self {
            max_rows,
            ids: ctx.storage("enc.ids", r * 4)?,
            pos: ctx.storage("enc.pos", r * 4)?,
            types: ctx.storage("enc.types", r * 4)?,
            lens: ctx.storage("enc.lens", r * 4)?,
            x: f32s("enc.x", cfg.hidden)?,
            tmp: f32s("enc.tmp", cfg.hidden)?,
            qkv: f32s("enc.qkv", 3 * cfg.hidden)?,
            att: f32s("enc.att", cfg.hidden)?,
            up: f32s("enc.up", cfg.ffn)?,
            gate_up: match cfg.feed_forward {
                FeedForward::SwiGlu => Some(f32s("enc.gate_up", 2 * cfg.ffn)?),
                FeedForward::Gelu => None,
            },
            out: f32s("enc.out", cfg.hidden)?,
        })
    }

    /// Every GPU buffer (for `Context::release_all`).
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        let mut b = vec![
            &self.ids,
            &self.pos,
            &self.types,
            &self.lens,
            &self.x,
            &self.tmp,
            &self.qkv,
            &self.att,
            &self.up,
            &self.out,
        ];
        b.extend(&self.gate_up);
        b
    }

    /// `(rows, hidden)` the last hidden states of the latest pass (batch-major, padded rows
    /// included), for tests and token-level use.
    pub fn hidden(&self) -> &wgpu::Buffer {
        &self.x
    }

    /// Write a batch of token sequences, padded to the longest: returns (batch, padded length).
    pub fn write_batch(&self, ctx: &Context, cfg: &EncoderConfig, seqs: &[Vec<u32>]) -> Result<(u32, u32)> {
        const OP: &str = "encode";
        let seq = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        ensure(!seqs.is_empty() && seqs.iter().all(|s| !s.is_empty()), OP, || "an empty sequence".into())?;
        ensure(seq <= cfg.max_position as usize, OP, || {
            format!("{seq} tokens: the model has {} positions", cfg.max_position)
        })?;
        let rows = seqs.len() * seq;
        ensure(rows <= self.max_rows as usize, OP, || format!("{rows} rows: the state holds {}", self.max_rows))?;
        super::check_ids(&seqs.concat(), cfg.vocab)?;
        let mut ids = vec![0u32; rows];
        for (b, s) in seqs.iter().enumerate() {
            ids[b * seq..b * seq + s.len()].copy_from_slice(s);
        }
        let pos: Vec<u32> = (0..rows).map(|r| (r % seq) as u32).collect();
        let lens: Vec<u32> = seqs.iter().map(|s| s.len() as u32).collect();
        ctx.write(&self.ids, 0, bytemuck::cast_slice(&ids));
        ctx.write(&self.pos, 0, bytemuck::cast_slice(&pos));
        ctx.write(&self.lens, 0, bytemuck::cast_slice(&lens));
        Ok((seqs.len() as u32, seq as u32))
    }
}

fn bias(l: &Linear) -> Epilogue<'_> {
    Epilogue { bias: l.bias.as_ref(), ..Default::default() }
}

/// Kernels for one pass over the batch `write_batch` wrote (`batch` sequences padded to `seq`):
/// the pooled vectors' first `dims` values (normalised if asked) land in `s.out [batch, dims]`.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    cfg: &EncoderConfig,
    w: &EncoderWeights,
    s: &EncoderState,
    (batch, seq): (u32, u32),
    pooling: Pooling,
    dims: u32,
    normalize: bool,
) -> Result<Vec<Kernel>> {
    let (h, eps) = (cfg.hidden, cfg.eps);
    let rows = batch * seq;
    ensure(rows > 0 && rows <= s.max_rows, "encode", || format!("{rows} rows: the state holds {}", s.max_rows))?;
    let mut k: Vec<Kernel> = Vec::new();

    // x = LayerNorm(word[ids] + position[pos] + token_type[0]), without the tables a model lacks
    k.extend(embedding(ctx, &w.word, &s.ids, &s.x, rows, 1.0)?);
    for (table, index) in [(&w.position, &s.pos), (&w.token_type, &s.types)] {
        if let Some(table) = table {
            k.extend(embedding(ctx, table, index, &s.tmp, rows, 1.0)?);
            k.push(add_inplace(ctx, &s.x, &s.tmp, rows * h)?);
        }
    }
    k.push(layer_norm(ctx, &s.x, None, &w.embed_norm.w, &w.embed_norm.b, &s.x, rows, h, eps)?);

    let shape = EncoderAttentionShape {
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_heads,
        head_dim: cfg.head_dim,
        batch,
        seq,
        scale: 1.0 / (cfg.head_dim as f32).sqrt(),
    };
    for layer in &w.layers {
        // q | k | v = x·W + b side by side (BERT's three projections, or nomic's fused Wqkv)
        let mut col = 0;
        for lin in &layer.qkv {
            k.extend(matmul(ctx, &s.x, &lin.w, &s.qkv, rows, Epilogue { y_stride: 3 * h, y_col0: col, ..bias(lin) })?);
            col += lin.w.n;
        }
        // rotary models turn the q and k heads, each row by its position in its sequence
        if let Some(rope) = &w.rope {
            k.push(rope_rows(ctx, &s.qkv, rope, 2 * cfg.n_heads, rows, 3 * h, &s.pos)?);
        }
        // attention within each sequence (padding masked)
        k.extend(encoder_attention(ctx, &s.qkv, &s.lens, &s.att, &shape)?);
        // x = LayerNorm(x + att·Wo + b)
        k.extend(matmul(ctx, &s.att, &layer.o.w, &s.tmp, rows, bias(&layer.o))?);
        k.push(layer_norm(ctx, &s.x, Some(&s.tmp), &layer.attn_norm.w, &layer.attn_norm.b, &s.x, rows, h, eps)?);
        // up = gelu(x·W1 + b1), or silu(x·Wg) ⊙ x·Wu
        match (&layer.gate, &s.gate_up) {
            (None, _) => {
                k.extend(matmul(ctx, &s.x, &layer.up.w, &s.up, rows, bias(&layer.up))?);
                k.push(gelu(ctx, &s.up, rows * cfg.ffn)?);
            }
            (Some(gate), Some(gate_up)) => {
                let f = cfg.ffn;
                for (lin, col) in [(gate, 0), (&layer.up, f)] {
                    k.extend(matmul(
                        ctx,
                        &s.x,
                        &lin.w,
                        gate_up,
                        rows,
                        Epilogue { y_stride: 2 * f, y_col0: col, ..bias(lin) },
                    )?);
                }
                k.push(swiglu_fused(ctx, gate_up, &s.up, rows, f, Act::Silu)?);
            }
            (Some(_), None) => ensure(false, "encode", || "a SwiGLU model needs a state made for its config".into())?,
        }
        // x = LayerNorm(x + up·W2 + b2)
        k.extend(matmul(ctx, &s.up, &layer.down.w, &s.tmp, rows, bias(&layer.down))?);
        k.push(layer_norm(ctx, &s.x, Some(&s.tmp), &layer.ffn_norm.w, &layer.ffn_norm.b, &s.x, rows, h, eps)?);
    }

    // one vector per sequence from its real rows
    k.push(pool(ctx, &s.x, &s.lens, &s.out, (batch, seq, h), dims, pooling, normalize)?);
    Ok(k)
}
