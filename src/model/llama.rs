//! The Llama-family forward pass (Llama, Qwen2, Qwen3, Phi-3): one function that reads top to
//! bottom like llama2.c's `forward()`. It only builds kernels; the caller records and submits them,
//! and nothing is read back inside it.

use super::config::Config;
use super::weights::{GateUp, Linear, Qkv, Weights};
use crate::gpu::{ensure, Context, Kernel, Result};
use crate::ops::attention::{attention, AttentionScratch, AttentionShape, KvCacheShape, KvDtype};
use crate::ops::copy::{copy_cols, Cols};
use crate::ops::matmul::{matmul, Epilogue};
use crate::ops::rmsnorm::{rms_norm, rms_norm_inplace};
use crate::ops::rope::{rope, RopeTable};
use crate::ops::{argmax::argmax, embedding::embedding, kv_write::kv_write, swiglu};

/// Sizes the activations and the KV cache are allocated for.
#[derive(Clone, Copy, Debug)]
pub struct StateOptions {
    /// Tokens the KV cache holds (the context window in use).
    pub context: u32,
    /// Most tokens one forward call processes (a prompt longer than this is prefilled in chunks).
    pub max_batch: u32,
    pub kv_dtype: KvDtype,
}

/// Activations and the KV cache, allocated once. Shapes: t ≤ max_batch rows.
pub struct State {
    pub opts: StateOptions,
    ids: wgpu::Buffer,         // (max_batch) u32 token ids of this step
    x: wgpu::Buffer,           // (t, hidden) the residual stream
    xb: wgpu::Buffer,          // (t, hidden) normed x
    q: wgpu::Buffer,           // (t, q_dim)
    k: wgpu::Buffer,           // (t, kv_dim)
    v: wgpu::Buffer,           // (t, kv_dim)
    qkv: Option<wgpu::Buffer>, // (t, q_dim + 2 kv_dim) fused projection output (Phi-3)
    att: wgpu::Buffer,         // (t, q_dim) attention output
    gate: wgpu::Buffer,        // (t, ffn), or (t, 2 ffn) gate|up when fused
    up: wgpu::Buffer,          // (t, ffn)
    hb: wgpu::Buffer,          // (t, ffn) swiglu(gate, up)
    pub logits: wgpu::Buffer,  // (max_batch, vocab)
    pub next_id: wgpu::Buffer, // (max_batch) u32 greedy token per logits row
    kv_shape: KvCacheShape,
    cache: Vec<(wgpu::Buffer, wgpu::Buffer)>, // per layer (K, V): (n_kv_heads, context, head_dim)
    scratch: AttentionScratch,
    rope: RopeTable,
}

impl State {
    pub fn new(ctx: &Context, cfg: &Config, opts: StateOptions) -> Result<Self> {
        ensure(opts.context > 0 && opts.max_batch > 0, "State", || format!("empty state {opts:?}"))?;
        let t = opts.max_batch as u64;
        let f32s = |label: &str, elems: u64| ctx.storage(label, elems * 4);
        let kv_shape = KvCacheShape {
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            capacity: opts.context,
            dtype: opts.kv_dtype,
        };
        let mut cache = Vec::with_capacity(cfg.n_layers as usize);
        for l in 0..cfg.n_layers {
            cache.push((
                ctx.storage(&format!("cache.k.{l}"), kv_shape.bytes())?,
                ctx.storage(&format!("cache.v.{l}"), kv_shape.bytes())?,
            ));
        }
        let gate_width = if cfg.fused_proj { 2 * cfg.ffn } else { cfg.ffn } as u64;
        Ok(Self {
            opts,
            ids: ctx.storage("ids", t * 4)?,
            x: f32s("x", t * cfg.hidden as u64)?,
            xb: f32s("xb", t * cfg.hidden as u64)?,
            q: f32s("q", t * cfg.q_dim() as u64)?,
            k: f32s("k", t * cfg.kv_dim() as u64)?,
            v: f32s("v", t * cfg.kv_dim() as u64)?,
            qkv: if cfg.fused_proj { Some(f32s("qkv", t * (cfg.q_dim() + 2 * cfg.kv_dim()) as u64)?) } else { None },
            att: f32s("att", t * cfg.q_dim() as u64)?,
            gate: f32s("gate", t * gate_width)?,
            up: f32s("up", t * cfg.ffn as u64)?,
            hb: f32s("hb", t * cfg.ffn as u64)?,
            logits: f32s("logits", t * cfg.vocab as u64)?,
            next_id: ctx.storage("next_id", t * 4)?,
            kv_shape,
            cache,
            scratch: AttentionScratch::new(ctx, opts.max_batch, cfg.n_heads, cfg.head_dim, 32)?,
            rope: RopeTable::new(ctx, &cfg.rope, opts.context)?,
        })
    }
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (tests, scoring).
    All,
}

fn linear(
    ctx: &Context,
    x: &wgpu::Buffer,
    l: &Linear,
    y: &wgpu::Buffer,
    t: u32,
    accumulate: bool,
) -> Result<Vec<Kernel>> {
    matmul(ctx, x, &l.w, y, t, Epilogue { bias: l.bias.as_ref(), accumulate })
}

/// Kernels for one forward step over `tokens` at cache positions `pos0..pos0 + tokens.len()`:
/// logits into `s.logits` (rows per `which`) and their greedy ids into `s.next_id`. The ids are
/// written to the GPU here; record the kernels after this call and before the next one.
pub fn forward(
    ctx: &Context,
    cfg: &Config,
    w: &Weights,
    s: &State,
    tokens: &[u32],
    pos0: u32,
    which: Logits,
) -> Result<Vec<Kernel>> {
    let t = tokens.len() as u32;
    ensure(t > 0 && t <= s.opts.max_batch, "forward", || {
        format!("{t} tokens in one step; the state holds 1..={}", s.opts.max_batch)
    })?;
    ensure(pos0 as u64 + t as u64 <= s.opts.context as u64, "forward", || {
        format!("positions {pos0}..{} exceed the context of {} tokens", pos0 + t, s.opts.context)
    })?;
    if let Some(&bad) = tokens.iter().find(|&&id| id >= cfg.vocab) {
        return Err(crate::gpu::GpuError::Shape {
            op: "forward",
            message: format!("token id {bad} ≥ vocab {}", cfg.vocab),
        });
    }
    ctx.queue.write_buffer(&s.ids, 0, bytemuck::cast_slice(tokens));
    let (h, eps) = (cfg.hidden, cfg.norm_eps);
    let att_shape = AttentionShape::new(cfg.n_heads, s.kv_shape);
    let mut k: Vec<Kernel> = Vec::new();

    // x = embedding(tokens)
    k.extend(embedding(ctx, &w.embed, &s.ids, &s.x, t)?);
    for (layer, (cache_k, cache_v)) in w.layers.iter().zip(&s.cache) {
        // attention: xb = rmsnorm(x); q, k, v = xb·Wqkv (+ b)
        k.push(rms_norm(ctx, &s.x, &layer.attn_norm, &s.xb, t, h, eps)?);
        match &layer.qkv {
            Qkv::Separate { q, k: wk, v } => {
                k.extend(linear(ctx, &s.xb, q, &s.q, t, false)?);
                k.extend(linear(ctx, &s.xb, wk, &s.k, t, false)?);
                k.extend(linear(ctx, &s.xb, v, &s.v, t, false)?);
            }
            Qkv::Fused(qkv) => {
                let fused = s.qkv.as_ref().ok_or_else(|| missing("qkv buffer"))?;
                k.extend(linear(ctx, &s.xb, qkv, fused, t, false)?);
                let stride = cfg.q_dim() + 2 * cfg.kv_dim();
                for (dst, col, width) in [
                    (&s.q, 0, cfg.q_dim()),
                    (&s.k, cfg.q_dim(), cfg.kv_dim()),
                    (&s.v, cfg.q_dim() + cfg.kv_dim(), cfg.kv_dim()),
                ] {
                    k.push(copy_cols(
                        ctx,
                        Cols { buf: fused, stride, col },
                        Cols { buf: dst, stride: width, col: 0 },
                        t,
                        width,
                    )?);
                }
            }
        }
        // Qwen3: RMSNorm over each head of q and k
        if let Some((qn, kn)) = &layer.qk_norm {
            k.push(rms_norm_inplace(ctx, &s.q, qn, t * cfg.n_heads, cfg.head_dim, eps)?);
            k.push(rms_norm_inplace(ctx, &s.k, kn, t * cfg.n_kv_heads, cfg.head_dim, eps)?);
        }
        // RoPE on q and k at positions pos0.., then k, v into the cache
        k.push(rope(ctx, &s.q, &s.rope, cfg.n_heads, t, pos0)?);
        k.push(rope(ctx, &s.k, &s.rope, cfg.n_kv_heads, t, pos0)?);
        k.push(kv_write(ctx, &s.k, &s.v, cache_k, cache_v, &s.kv_shape, pos0, t)?);
        // att = softmax(q·Kᵀ/√d)·V over the cache, causal
        k.extend(attention(ctx, &s.q, cache_k, cache_v, &s.att, &att_shape, pos0, t, &s.scratch, None)?);
        // x += att·Wo (+ b)
        k.extend(linear(ctx, &s.att, &layer.o, &s.x, t, true)?);

        // feed-forward: xb = rmsnorm(x); x += (silu(xb·Wg) * (xb·Wu))·Wd
        k.push(rms_norm(ctx, &s.x, &layer.ffn_norm, &s.xb, t, h, eps)?);
        match &layer.gate_up {
            GateUp::Separate { gate, up } => {
                k.extend(matmul(ctx, &s.xb, gate, &s.gate, t, Epilogue::default())?);
                k.extend(matmul(ctx, &s.xb, up, &s.up, t, Epilogue::default())?);
                k.push(swiglu::swiglu(ctx, &s.gate, &s.up, &s.hb, t, cfg.ffn)?);
            }
            GateUp::Fused(gate_up) => {
                k.extend(matmul(ctx, &s.xb, gate_up, &s.gate, t, Epilogue::default())?);
                k.push(swiglu::swiglu_fused(ctx, &s.gate, &s.hb, t, cfg.ffn)?);
            }
        }
        k.extend(matmul(ctx, &s.hb, &layer.down, &s.x, t, Epilogue { bias: None, accumulate: true })?);
    }

    // final norm, then logits = xb·W_lmᵀ for the rows asked for
    let lm_head = w.lm_head.as_ref().unwrap_or(&w.embed);
    let rows = match which {
        Logits::All => t,
        Logits::Last => 1,
    };
    k.push(rms_norm(ctx, &s.x, &w.norm, &s.xb, t, h, eps)?);
    let lm_in = if which == Logits::Last && t > 1 {
        // only the last row: copy it out of xb so the lm_head GEMV reads one row
        k.push(copy_cols(
            ctx,
            Cols { buf: &s.xb, stride: t * h, col: (t - 1) * h },
            Cols { buf: &s.att, stride: h, col: 0 },
            1,
            h,
        )?);
        &s.att
    } else {
        &s.xb
    };
    k.extend(matmul(ctx, lm_in, lm_head, &s.logits, rows, Epilogue::default())?);
    k.extend(argmax(ctx, &s.logits, &s.next_id, rows, cfg.vocab)?);
    Ok(k)
}

fn missing(what: &str) -> crate::gpu::GpuError {
    crate::gpu::GpuError::Shape { op: "forward", message: format!("{what} was not allocated") }
}
