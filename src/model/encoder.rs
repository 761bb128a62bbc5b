//! BERT-family text encoders (`BertModel`: all-MiniLM, bge, e5) for sentence embeddings: learned
//! absolute positions and token types, post-LayerNorm blocks with biases, erf-GELU feed-forward,
//! bidirectional attention over a padded batch, then pooling. `encode` reads top to bottom like
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

/// A BERT encoder's hyperparameters (config.json of `model_type: "bert"`).
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub hidden: u32,
    pub n_layers: u32,
    pub n_heads: u32,
    pub head_dim: u32,
    /// The feed-forward's inner width (`intermediate_size`).
    pub ffn: u32,
    pub vocab: u32,
    /// Positions the model has embeddings for (`max_position_embeddings`).
    pub max_position: u32,
    /// Rows of the token-type table (`type_vocab_size`); every input uses type 0.
    pub type_vocab: u32,
    pub eps: f32,
}

impl EncoderConfig {
    /// Whether a config.json is one of the encoders this module runs (others are decoders).
    pub fn is_encoder(c: &Value) -> bool {
        c["model_type"].as_str() == Some("bert")
    }

    pub fn from_hf(c: &Value) -> Result<Self, ConfigError> {
        let model_type = c["model_type"].as_str().unwrap_or("");
        if model_type != "bert" {
            return Err(ConfigError::UnsupportedArch(model_type.to_string()));
        }
        let u = |key: &'static str| -> Result<u32, ConfigError> {
            c[key]
                .as_u64()
                .filter(|&v| v > 0 && v <= u32::MAX as u64)
                .map(|v| v as u32)
                .ok_or(ConfigError::Missing(key))
        };
        let act = c["hidden_act"].as_str().unwrap_or("gelu");
        if act != "gelu" {
            return Err(ConfigError::Invalid(format!("hidden_act `{act}`: only \"gelu\" (erf) is supported for BERT")));
        }
        let positions = c["position_embedding_type"].as_str().unwrap_or("absolute");
        if positions != "absolute" {
            return Err(ConfigError::Invalid(format!("position_embedding_type `{positions}`: only \"absolute\"")));
        }
        let (hidden, n_heads) = (u("hidden_size")?, u("num_attention_heads")?);
        if hidden % n_heads != 0 {
            return Err(ConfigError::Invalid(format!("hidden_size {hidden} is not a multiple of {n_heads} heads")));
        }
        Ok(Self {
            hidden,
            n_layers: u("num_hidden_layers")?,
            n_heads,
            head_dim: hidden / n_heads,
            ffn: u("intermediate_size")?,
            vocab: u("vocab_size")?,
            max_position: u("max_position_embeddings")?,
            type_vocab: c["type_vocab_size"].as_u64().unwrap_or(2).max(1) as u32,
            eps: c["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
        })
    }
}

/// A LayerNorm's weight and bias, each `[hidden]`.
pub struct LayerNormW {
    pub w: wgpu::Buffer,
    pub b: wgpu::Buffer,
}

pub struct EncoderLayer {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub attn_norm: LayerNormW,
    pub up: Linear,
    pub down: Linear,
    pub ffn_norm: LayerNormW,
}

pub struct EncoderWeights {
    pub word: QuantMatrix,
    pub position: QuantMatrix,
    pub token_type: QuantMatrix,
    pub embed_norm: LayerNormW,
    pub layers: Vec<EncoderLayer>,
}

impl EncoderWeights {
    /// Tensors by Hugging Face's BertModel names under `prefix` ("" as sentence-transformers saves
    /// them, "bert." inside task models).
    pub fn load(ctx: &Context, cfg: &EncoderConfig, src: &mut dyn TensorSource, prefix: &str) -> Result<Self> {
        let h = cfg.hidden;
        let mut l = Loader { ctx, src, prefix };
        let mut layers = Vec::with_capacity(cfg.n_layers as usize);
        for i in 0..cfg.n_layers {
            let p = format!("encoder.layer.{i}.");
            layers.push(EncoderLayer {
                q: l.linear(&format!("{p}attention.self.query"), h, h)?,
                k: l.linear(&format!("{p}attention.self.key"), h, h)?,
                v: l.linear(&format!("{p}attention.self.value"), h, h)?,
                o: l.linear(&format!("{p}attention.output.dense"), h, h)?,
                attn_norm: l.norm(&format!("{p}attention.output.LayerNorm"), h)?,
                up: l.linear(&format!("{p}intermediate.dense"), cfg.ffn, h)?,
                down: l.linear(&format!("{p}output.dense"), h, cfg.ffn)?,
                ffn_norm: l.norm(&format!("{p}output.LayerNorm"), h)?,
            });
        }
        Ok(Self {
            word: l.matrix("embeddings.word_embeddings.weight", cfg.vocab, h)?,
            position: l.matrix("embeddings.position_embeddings.weight", cfg.max_position, h)?,
            token_type: l.matrix("embeddings.token_type_embeddings.weight", cfg.type_vocab, h)?,
            embed_norm: l.norm("embeddings.LayerNorm", h)?,
            layers,
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

    fn linear(&mut self, name: &str, n: u32, k: u32) -> Result<Linear> {
        let w = self.matrix(&format!("{name}.weight"), n, k)?;
        let bias = Some(self.src.vector(self.ctx, &format!("{}{name}.bias", self.prefix), n)?);
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
    up: wgpu::Buffer,    // (rows, ffn)
    /// (max_rows, hidden) pooled vectors, read back.
    pub out: wgpu::Buffer,
}

impl EncoderState {
    /// GPU bytes `new` allocates: four u32 rows, seven f32 rows of `hidden` (x, tmp, q|k|v, att,
    /// out) and one of `ffn`, per token row.
    pub fn bytes(cfg: &EncoderConfig, max_rows: u32) -> u64 {
        max_rows as u64 * 4 * (4 + 7 * cfg.hidden as u64 + cfg.ffn as u64)
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
            out: f32s("enc.out", cfg.hidden)?,
        })
    }

    /// Every GPU buffer (for `Context::release_all`).
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        vec![
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
        ]
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

    // x = LayerNorm(word[ids] + position[pos] + token_type[0])
    k.extend(embedding(ctx, &w.word, &s.ids, &s.x, rows, 1.0)?);
    k.extend(embedding(ctx, &w.position, &s.pos, &s.tmp, rows, 1.0)?);
    k.push(add_inplace(ctx, &s.x, &s.tmp, rows * h)?);
    k.extend(embedding(ctx, &w.token_type, &s.types, &s.tmp, rows, 1.0)?);
    k.push(add_inplace(ctx, &s.x, &s.tmp, rows * h)?);
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
        // q | k | v = x·W + b side by side; attention within each sequence (padding masked)
        for (lin, col) in [(&layer.q, 0), (&layer.k, h), (&layer.v, 2 * h)] {
            k.extend(matmul(ctx, &s.x, &lin.w, &s.qkv, rows, Epilogue { y_stride: 3 * h, y_col0: col, ..bias(lin) })?);
        }
        k.extend(encoder_attention(ctx, &s.qkv, &s.lens, &s.att, &shape)?);
        // x = LayerNorm(x + att·Wo + b)
        k.extend(matmul(ctx, &s.att, &layer.o.w, &s.tmp, rows, bias(&layer.o))?);
        k.push(layer_norm(ctx, &s.x, Some(&s.tmp), &layer.attn_norm.w, &layer.attn_norm.b, &s.x, rows, h, eps)?);
        // x = LayerNorm(x + gelu(x·W1 + b1)·W2 + b2)
        k.extend(matmul(ctx, &s.x, &layer.up.w, &s.up, rows, bias(&layer.up))?);
        k.push(gelu(ctx, &s.up, rows * cfg.ffn)?);
        k.extend(matmul(ctx, &s.up, &layer.down.w, &s.tmp, rows, bias(&layer.down))?);
        k.push(layer_norm(ctx, &s.x, Some(&s.tmp), &layer.ffn_norm.w, &layer.ffn_norm.b, &s.x, rows, h, eps)?);
    }

    // one vector per sequence from its real rows
    k.push(pool(ctx, &s.x, &s.lens, &s.out, (batch, seq, h), dims, pooling, normalize)?);
    Ok(k)
}
