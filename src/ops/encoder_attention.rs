//! Bidirectional (non-causal) multi-head attention over a padded batch of sequences, with GQA and
//! no KV cache: the self-attention of BERT-family text encoders (embeddings). Reads the fused
//! q | k | v projection rows directly. Shader: `shaders/encoder_attention.wgsl`.

use super::check_len;
use super::kv_write::check_binding;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/encoder_attention.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 64;
/// The shader keeps two dim pairs per invocation of a 64-wide workgroup.
pub const MAX_HEAD_DIM: u32 = 256;

/// Heads, padded batch and scale of one encoder attention layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderAttentionShape {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Sequences in the batch.
    pub batch: u32,
    /// Padded length L: sequence b is rows `b·seq .. b·seq + seq`.
    pub seq: u32,
    /// Multiplies q·k before the softmax; usually `1 / sqrt(head_dim)`.
    pub scale: f32,
}

impl EncoderAttentionShape {
    /// Elements of one fused row, `q_dim + 2·kv_dim`.
    pub fn row_elems(&self) -> u64 {
        (self.n_heads as u64 + 2 * self.n_kv_heads as u64) * self.head_dim as u64
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    seq: u32,
    n_heads: u32,
    group: u32,
    head_dim: u32,
    q_dim: u32,
    kv_dim: u32,
    row_elems: u32,
    scale_log2: f32,
    _pad: [u32; 3],
}

/// `out[b·seq + i, h] = softmax(scale · q[b·seq + i, h] · K_bᵀ) · V_b` for rows `i < lens[b]`,
/// where K_b, V_b are kv head `h / (n_heads / n_kv_heads)` of rows `b·seq .. b·seq + lens[b]`;
/// rows `i ≥ lens[b]` (padding) get zeros. `qkv`: f32 `[batch·seq, q_dim + 2·kv_dim]`, each row
/// q | k | v; `lens`: u32 `[batch]`, each in `1..=seq` (the kernel clamps to `seq`; 0 makes the
/// whole sequence padding); `out`: f32 `[batch·seq, q_dim]`, a different buffer from `qkv`.
/// One kernel today (a workgroup per (row, head)); a `Vec` so a split/combine pass for long
/// sequences can be added without changing callers.
pub fn encoder_attention(
    ctx: &Context,
    qkv: &wgpu::Buffer,
    lens: &wgpu::Buffer,
    out: &wgpu::Buffer,
    shape: &EncoderAttentionShape,
) -> Result<Vec<Kernel>> {
    const OP: &str = "encoder_attention";
    let &EncoderAttentionShape { n_heads, n_kv_heads, head_dim, batch, seq, scale } = shape;
    ensure(n_kv_heads > 0 && n_heads > 0 && n_heads % n_kv_heads == 0, OP, || {
        format!("n_heads = {n_heads} is not a positive multiple of n_kv_heads = {n_kv_heads}")
    })?;
    ensure(head_dim > 0 && head_dim <= MAX_HEAD_DIM, OP, || {
        format!("head_dim {head_dim} is not in 1..={MAX_HEAD_DIM}")
    })?;
    ensure(batch > 0 && seq > 0, OP, || format!("empty batch: batch = {batch}, seq = {seq}"))?;
    ensure(scale.is_finite(), OP, || format!("scale {scale} is not finite"))?;
    let rows = batch as u64 * seq as u64;
    let q_dim = n_heads as u64 * head_dim as u64;
    let row_elems = shape.row_elems();
    let n_wg = rows * n_heads as u64;
    ensure(rows * row_elems <= u32::MAX as u64 && n_wg <= u32::MAX as u64, OP, || {
        format!("batch = {batch} × seq = {seq} rows of {row_elems} elements overflow u32 indices")
    })?;
    check_len(OP, "qkv", qkv, rows * row_elems)?;
    check_len(OP, "out", out, rows * q_dim)?;
    check_len(OP, "lens", lens, batch as u64)?;
    for (name, b) in [("qkv", qkv), ("out", out)] {
        check_binding(ctx, OP, name, b)?;
    }
    ensure(qkv != out && lens != out, OP, || "out must differ from qkv and lens".to_string())?;

    let params = Params {
        batch,
        seq,
        n_heads,
        group: n_heads / n_kv_heads,
        head_dim,
        q_dim: q_dim as u32,
        kv_dim: n_kv_heads * head_dim,
        row_elems: row_elems as u32,
        scale_log2: scale * std::f32::consts::LOG2_E,
        _pad: [0; 3],
    };
    let uniform = ctx.uniform("encoder_attention.params", &params);
    let key = PipelineKey::new(Shader::EncoderAttention, "encoder_attend");
    let buffers = [(1, qkv), (2, lens), (3, out)];
    Ok(vec![Kernel::new(ctx, &key, &buffers, Some(uniform), ctx.grid(n_wg as u32))?])
}

const _: () = assert!(MAX_HEAD_DIM == 4 * WG && std::mem::size_of::<Params>() % 16 == 0);
