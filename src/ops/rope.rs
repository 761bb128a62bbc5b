//! Rotary position embedding, in place on q or k (`shaders/rope.wgsl`). The inverse frequencies
//! are computed once on the CPU, in f64 with the formulas of Hugging Face transformers
//! (`modeling_rope_utils.py`), rounded to f32 and kept in a small GPU buffer, [`RopeTable`].

use bytemuck::Zeroable;

use super::kv_write::{check_binding, KvCacheShape};
use super::{check_len, Pos};
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/rope.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 64;

/// Which dims form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairing {
    /// Hugging Face `rotate_half` (GPT-NeoX): pairs (i, i + rotary_dim/2).
    Half,
    /// GGUF / Meta's original llama: pairs (2i, 2i+1).
    Interleaved,
}

/// Frequency scaling for long context (`rope_scaling` in a Hugging Face config).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every inverse frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1/3.2: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: u32,
    },
    /// LongRoPE (Phi-3/3.5): per-frequency factors, `long_factor` when the context in use exceeds
    /// `original_max_position`, else `short_factor` (each of length rotary_dim/2); cos and sin are
    /// multiplied by `attention_factor`, by default sqrt(1 + ln(max/orig) / ln(orig)).
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position: u32,
        max_position: u32,
        attention_factor: Option<f64>,
    },
}

/// Everything that fixes the rotation of one head, for q and k alike.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub head_dim: u32,
    /// Rotated dims at the start of each head (even, ≤ head_dim); the rest pass through.
    pub rotary_dim: u32,
    pub theta: f64,
    pub pairing: RopePairing,
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Plain RoPE over the whole head.
    pub fn new(head_dim: u32, theta: f64, pairing: RopePairing) -> Self {
        Self { head_dim, rotary_dim: head_dim, theta, pairing, scaling: RopeScaling::None }
    }

    pub fn validate(&self) -> Result<()> {
        let (hd, rd) = (self.head_dim, self.rotary_dim);
        ensure(rd > 0 && rd % 2 == 0 && rd <= hd, "rope", || {
            format!("rotary_dim {rd} must be even, positive and ≤ head_dim {hd}")
        })?;
        ensure(self.theta.is_finite() && self.theta > 1.0, "rope", || format!("theta {} must be > 1", self.theta))?;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        match &self.scaling {
            RopeScaling::None => Ok(()),
            RopeScaling::Linear { factor } => {
                ensure(positive(*factor), "rope", || format!("linear scaling factor {factor} must be > 0"))
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => ensure(
                positive(*factor)
                    && positive(*low_freq_factor)
                    && high_freq_factor > low_freq_factor
                    && high_freq_factor.is_finite()
                    && *original_max_position > 0,
                "rope",
                || {
                    format!(
                        "llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and an original \
                         length > 0; got {factor}, {low_freq_factor}, {high_freq_factor}, {original_max_position}"
                    )
                },
            ),
            RopeScaling::LongRope { short_factor, long_factor, original_max_position, attention_factor, .. } => {
                let half = (rd / 2) as usize;
                for (name, f) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                    ensure(f.len() == half, "rope", || {
                        format!("longrope {name} has {} entries but rotary_dim/2 = {half}", f.len())
                    })?;
                    ensure(f.iter().all(|&v| positive(v as f64)), "rope", || {
                        format!("longrope {name} entries must be finite and > 0")
                    })?;
                }
                ensure(*original_max_position > 1, "rope", || {
                    format!("longrope original_max_position {original_max_position} must be > 1")
                })?;
                ensure(attention_factor.is_none_or(positive), "rope", || {
                    format!("longrope attention_factor {attention_factor:?} must be > 0")
                })
            }
        }
    }

    /// The rotary_dim/2 inverse frequencies for a model run with a context window of `context_len`
    /// tokens (only LongRoPE looks at it: long factors above `original_max_position`, as
    /// transformers' `longrope_frequency_update` and llama.cpp's n_ctx check do).
    pub fn inv_freq(&self, context_len: u32) -> Result<Vec<f32>> {
        self.validate()?;
        let dim = self.rotary_dim as f64;
        // _compute_default_rope_parameters: 1 / theta^(2i / dim)
        let base = (0..self.rotary_dim / 2).map(|i| 1.0 / self.theta.powf((2 * i) as f64 / dim));
        let inv: Vec<f64> = match &self.scaling {
            RopeScaling::None => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                // _compute_llama3_parameters
                let old = *original_max_position as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
            RopeScaling::LongRope { short_factor, long_factor, original_max_position, .. } => {
                // _compute_longrope_parameters: 1 / (ext[i] * theta^(2i / dim))
                let ext = if context_len > *original_max_position { long_factor } else { short_factor };
                base.zip(ext).map(|(f, &e)| f / e as f64).collect()
            }
        };
        Ok(inv.into_iter().map(|f| f as f32).collect())
    }

    /// The multiplier of cos and sin: 1, except LongRoPE's attention factor.
    pub fn attention_factor(&self) -> f64 {
        match &self.scaling {
            RopeScaling::LongRope { attention_factor: Some(a), .. } => *a,
            RopeScaling::LongRope { original_max_position, max_position, .. } => {
                let orig = *original_max_position as f64;
                let factor = *max_position as f64 / orig;
                if factor <= 1.0 {
                    1.0
                } else {
                    (1.0 + factor.ln() / orig.ln()).sqrt()
                }
            }
            _ => 1.0,
        }
    }
}

/// A [`RopeConfig`] made ready for the GPU: its inverse frequencies in a storage buffer. Built
/// once per model (per context window for LongRoPE: the short/long choice is baked in).
pub struct RopeTable {
    pub config: RopeConfig,
    /// The context window the table was built for.
    pub context_len: u32,
    inv_freq: wgpu::Buffer,
    mscale: f32,
}

impl RopeTable {
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> [&wgpu::Buffer; 1] {
        [&self.inv_freq]
    }

    pub fn new(ctx: &Context, config: &RopeConfig, context_len: u32) -> Result<Self> {
        let inv = config.inv_freq(context_len)?;
        let inv_freq = ctx.storage_init("rope.inv_freq", bytemuck::cast_slice(&inv))?;
        let mscale = config.attention_factor() as f32;
        Ok(Self { config: config.clone(), context_len, inv_freq, mscale })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pairs: u32,
    n_heads: u32,
    head_dim: u32,
    half: u32,
    mscale: f32,
    t: u32,
    n_kv_heads: u32,
    capacity: u32,
    row_words: u32,
    eps: f32,
    interleaved: u32,
    row_stride: u32,
}

/// Rotate `x[t, n_heads * head_dim]` in place; row r is at position `pos0 + r`.
pub fn rope<'a>(
    ctx: &Context,
    x: &wgpu::Buffer,
    table: &RopeTable,
    n_heads: u32,
    t: u32,
    pos: impl Into<Pos<'a>>,
) -> Result<Kernel> {
    let pos = pos.into();
    let pos0 = pos.first();
    let cfg = &table.config;
    ensure(n_heads > 0 && t > 0, "rope", || format!("empty shape t={t} n_heads={n_heads}"))?;
    ensure(pos0.checked_add(t - 1).is_some(), "rope", || format!("positions {pos0} + {t} overflow u32"))?;
    let half = cfg.rotary_dim / 2;
    let pairs = t as u64 * n_heads as u64 * half as u64;
    // Keeps the shader's linear pair id, workgroups * WG, inside u32.
    ensure(pairs < 1 << 31, "rope", || format!("{pairs} rotated pairs exceed 2^31"))?;
    check_len("rope", "x", x, t as u64 * n_heads as u64 * cfg.head_dim as u64)?;
    let params =
        Params { pairs: pairs as u32, n_heads, head_dim: cfg.head_dim, half, mscale: table.mscale, ..Params::zeroed() };
    let entry = match cfg.pairing {
        RopePairing::Half => "rope_half",
        RopePairing::Interleaved => "rope_interleaved",
    };
    let key = PipelineKey::new(Shader::Rope, entry);
    let workgroups = ctx.grid((pairs as u32).div_ceil(WG));
    let step = pos.buffer(ctx);
    Kernel::new(
        ctx,
        &key,
        &[(1, &table.inv_freq), (2, x), (3, &step)],
        Some(ctx.uniform("rope.params", &params)),
        workgroups,
    )
}

/// Rotate, in place, the first `n_heads` heads of each of `t` rows of `x`, rows of `row_stride`
/// floats, row r at position `positions[r]` (`[t]` u32): an encoder's fused q|k|v rows
/// (`row_stride` = 3 · hidden, `n_heads` = the q and k heads), where each sequence of a padded
/// batch counts its positions from 0.
pub fn rope_rows(
    ctx: &Context,
    x: &wgpu::Buffer,
    table: &RopeTable,
    n_heads: u32,
    t: u32,
    row_stride: u32,
    positions: &wgpu::Buffer,
) -> Result<Kernel> {
    const OP: &str = "rope_rows";
    let cfg = &table.config;
    ensure(n_heads > 0 && t > 0, OP, || format!("empty shape t={t} n_heads={n_heads}"))?;
    ensure(n_heads as u64 * cfg.head_dim as u64 <= row_stride as u64, OP, || {
        format!("{n_heads} heads of {} do not fit rows of {row_stride}", cfg.head_dim)
    })?;
    let half = cfg.rotary_dim / 2;
    let pairs = t as u64 * n_heads as u64 * half as u64;
    ensure(pairs < 1 << 31 && t as u64 * row_stride as u64 <= u32::MAX as u64, OP, || {
        format!("{t} rows of {row_stride} exceed u32 indexing")
    })?;
    check_len(OP, "x", x, t as u64 * row_stride as u64)?;
    check_len(OP, "positions", positions, t as u64)?;
    let params = Params {
        pairs: pairs as u32,
        n_heads,
        head_dim: cfg.head_dim,
        half,
        mscale: table.mscale,
        interleaved: (cfg.pairing == RopePairing::Interleaved) as u32,
        row_stride,
        ..Params::zeroed()
    };
    let key = PipelineKey::new(Shader::Rope, "rope_rows");
    let workgroups = ctx.grid((pairs as u32).div_ceil(WG));
    let buffers = [(1, &table.inv_freq), (2, x), (10, positions)];
    Kernel::new(ctx, &key, &buffers, Some(ctx.uniform("rope_rows.params", &params)), workgroups)
}

/// Invocations per `rope_kv` workgroup can hold a head of at most this many dims.
pub const MAX_HEAD_DIM: u32 = 256;

/// Qwen3's per-head RMSNorm of q and k before RoPE: weights `[head_dim]` each, and eps.
#[derive(Clone, Copy)]
pub struct QkNorm<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub eps: f32,
}

/// RoPE and the KV-cache write in one kernel. `qkv`: fused projection rows
/// `[t, n_heads * head_dim + 2 * kv.kv_dim()]` (q heads, then k, then v). Each q head is
/// (per-head RMS-normed when `qk_norm` is given, then) rotated into `q_out [t, n_heads * head_dim]`;
/// each k head likewise, then written with its v head to cache positions `pos0..pos0 + t` of
/// `cache_k`/`cache_v` (layout `kv`). Replaces rope(q), rope(k) and kv_write. With `rotate` false
/// nothing is rotated (a NoPE layer, SmolLM3): the heads are only normed and stored.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv<'a>(
    ctx: &Context,
    qkv: &wgpu::Buffer,
    q_out: &wgpu::Buffer,
    cache_k: &wgpu::Buffer,
    cache_v: &wgpu::Buffer,
    table: &RopeTable,
    rotate: bool,
    n_heads: u32,
    kv: &KvCacheShape,
    t: u32,
    pos: impl Into<Pos<'a>>,
    qk_norm: Option<QkNorm<'_>>,
) -> Result<Kernel> {
    const OP: &str = "rope_kv";
    let pos = pos.into();
    let cfg = &table.config;
    let hd = cfg.head_dim;
    kv.validate(OP)?;
    kv.check_range(OP, pos.first(), t)?;
    ensure(kv.head_dim == hd, OP, || format!("cache head_dim {} ≠ RoPE head_dim {hd}", kv.head_dim))?;
    ensure(hd <= MAX_HEAD_DIM, OP, || format!("head_dim {hd} > {MAX_HEAD_DIM}"))?;
    ensure(n_heads > 0, OP, || "n_heads = 0".into())?;
    let q_dim = n_heads as u64 * hd as u64;
    let stride = q_dim + 2 * kv.kv_dim() as u64;
    let slots = t as u64 * (n_heads + kv.n_kv_heads) as u64;
    ensure(t as u64 * stride <= u32::MAX as u64 && slots <= u32::MAX as u64, OP, || {
        format!("t = {t} rows of {stride} exceed u32 indexing")
    })?;
    check_len(OP, "qkv", qkv, t as u64 * stride)?;
    check_len(OP, "q_out", q_out, t as u64 * q_dim)?;
    kv.check_buffer(ctx, OP, "cache_k", cache_k)?;
    kv.check_buffer(ctx, OP, "cache_v", cache_v)?;
    for (name, b) in [("qkv", qkv), ("q_out", q_out)] {
        check_binding(ctx, OP, name, b)?;
    }
    ensure(qkv != q_out && cache_k != cache_v, OP, || "qkv/q_out and cache_k/cache_v must be distinct".into())?;
    if let Some(n) = &qk_norm {
        check_len(OP, "q_norm", n.q, hd as u64)?;
        check_len(OP, "k_norm", n.k, hd as u64)?;
    }
    let params = Params {
        n_heads,
        head_dim: hd,
        // No pairs rotated: every dim passes through (mscale too: attention_factor is RoPE's).
        half: if rotate { cfg.rotary_dim / 2 } else { 0 },
        mscale: if rotate { table.mscale } else { 1.0 },
        t,
        n_kv_heads: kv.n_kv_heads,
        capacity: kv.capacity,
        row_words: kv.row_words(),
        eps: qk_norm.map_or(0.0, |n| n.eps),
        interleaved: (cfg.pairing == RopePairing::Interleaved) as u32,
        ..Params::zeroed()
    };
    // Without the per-head norm every output dim is independent: one invocation per dim pair and no
    // barrier (what CPU-emulated GPUs pay for in every invocation); the norm needs the workgroup.
    let pairs = hd.div_ceil(2) as u64;
    let (entry, workgroups) = if qk_norm.is_some() {
        ("rope_kv", ctx.grid(slots as u32))
    } else {
        let n = slots * pairs;
        ensure(n < 1 << 31, OP, || format!("{n} dim pairs exceed 2^31"))?;
        ("rope_kv_flat", ctx.grid((n as u32).div_ceil(WG)))
    };
    let key = PipelineKey::new(Shader::Rope, entry)
        .constant("KV_F16", kv.f16())
        .constant("QK_NORM", qk_norm.is_some() as u32);
    let step = pos.buffer(ctx);
    // Without the norm its bindings still need a buffer: the inverse frequencies stand in.
    let (qn, kn) = qk_norm.map_or((&table.inv_freq, &table.inv_freq), |n| (n.q, n.k));
    let mut buffers = vec![(1, &table.inv_freq), (3, &step), (4, qkv), (5, q_out), (6, cache_k), (7, cache_v)];
    if qk_norm.is_some() {
        buffers.extend([(8, qn), (9, kn)]);
    }
    Kernel::new(ctx, &key, &buffers, Some(ctx.uniform("rope_kv.params", &params)), workgroups)
}
