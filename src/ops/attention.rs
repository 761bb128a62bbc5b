//! Causal multi-head attention over a KV cache (GQA, f32 or f16 cache), for prefill and decode,
//! with flash-decoding: long key ranges are split across workgroups and merged by a second pass.
//! Shader: `shaders/attention.wgsl`.

use super::kv_write::check_binding;
pub use super::kv_write::{KvCacheShape, KvDtype};
use super::{check_len, Pos};
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Keys per split when the number of splits is chosen automatically.
pub const KEYS_PER_SPLIT: u32 = 256;
/// Automatic splitting stops once `t * n_heads` workgroups alone fill the GPU.
const BUSY_WORKGROUPS: u32 = 1024;
/// The shader keeps two dim pairs per invocation of a 64-wide workgroup.
pub const MAX_HEAD_DIM: u32 = 256;
/// Invocations per workgroup; equals `WG` in shaders/attention.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 64;
/// Invocations (one per (row, head, split)) per `attend_row` workgroup: `RWG` in the shader.
pub const ROW_WG: u32 = 8;

/// Heads and scale of one attention layer; `kv` is the layout of its K and V caches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub n_heads: u32,
    pub kv: KvCacheShape,
    /// Multiplies q·k before the softmax; usually `1 / sqrt(head_dim)`.
    pub scale: f32,
    /// Sliding-window attention: a query at position p sees keys p − window < k ≤ p (Gemma's local
    /// layers); 0 = every earlier key.
    pub window: u32,
    /// Soft-capping of the scaled scores, `c · tanh(s / c)` before the softmax (Gemma 2); 0 = none.
    pub softcap: f32,
}

impl AttentionShape {
    /// The shape with the usual scale `1 / sqrt(head_dim)`, no window and no cap.
    pub fn new(n_heads: u32, kv: KvCacheShape) -> Self {
        Self { n_heads, kv, scale: 1.0 / (kv.head_dim as f32).sqrt(), window: 0, softcap: 0.0 }
    }
}

/// Scratch for flash-decoding partials, preallocated once: room for `max_rows` query rows of
/// `n_heads` heads of `head_dim`, split at most `max_splits` ways.
pub struct AttentionScratch {
    /// `[rows, n_heads, splits, head_dim]` unnormalised outputs.
    part_o: wgpu::Buffer,
    /// `[rows, n_heads, splits, 2]`: running max (base 2) and sum of exp2.
    part_ml: wgpu::Buffer,
    pub max_rows: u32,
    pub n_heads: u32,
    pub head_dim: u32,
    pub max_splits: u32,
}

impl AttentionScratch {
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> [&wgpu::Buffer; 2] {
        [&self.part_o, &self.part_ml]
    }

    pub fn new(ctx: &Context, max_rows: u32, n_heads: u32, head_dim: u32, max_splits: u32) -> Result<Self> {
        const OP: &str = "AttentionScratch";
        let (o_elems, ml_elems) = Self::elems(max_rows, n_heads, head_dim, max_splits);
        let part_o = ctx.storage("attention.part_o", o_elems * 4)?;
        let part_ml = ctx.storage("attention.part_ml", ml_elems * 4)?;
        check_binding(ctx, OP, "part_o", &part_o)?;
        Ok(Self { part_o, part_ml, max_rows, n_heads, head_dim, max_splits: max_splits.max(1) })
    }

    /// The scratch buffers' total size in bytes.
    pub fn bytes(&self) -> u64 {
        self.part_o.size() + self.part_ml.size()
    }

    /// What `new` allocates with these arguments, in bytes.
    pub fn bytes_for(max_rows: u32, n_heads: u32, head_dim: u32, max_splits: u32) -> u64 {
        let (o_elems, ml_elems) = Self::elems(max_rows, n_heads, head_dim, max_splits);
        4 * (o_elems + ml_elems)
    }

    /// f32 elements of `part_o` and `part_ml`.
    fn elems(max_rows: u32, n_heads: u32, head_dim: u32, max_splits: u32) -> (u64, u64) {
        let slots = max_rows as u64 * n_heads as u64 * max_splits as u64;
        // With at most one split the partials are never written; keep a word so binding works.
        if max_splits > 1 {
            (slots * head_dim as u64, slots * 2)
        } else {
            (1, 1)
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    n_heads: u32,
    group: u32,
    head_dim: u32,
    capacity: u32,
    n_splits: u32,
    row_words: u32,
    scale_log2: f32,
    window: u32,
    softcap_log2: f32,
    _pad: [u32; 2],
}

/// The most rows [`auto_splits`] ever splits for a layer of `n_heads` heads (more fill the GPU
/// unsplit): a scratch with room for more rows than this only holds unused memory (a prefill of
/// 4096 rows with 16 heads of 128 would otherwise keep 1 GiB of partials).
pub fn max_split_rows(n_heads: u32) -> u32 {
    ((BUSY_WORKGROUPS - 1) / n_heads.max(1)).max(1)
}

/// The number of splits chosen when none is forced: one per `KEYS_PER_SPLIT` keys, as long as the
/// rows and heads alone do not already give `BUSY_WORKGROUPS` workgroups, and within `scratch`.
pub fn auto_splits(shape: &AttentionShape, pos0: u32, t: u32, scratch: &AttentionScratch) -> u32 {
    // the keys the rows read together: all earlier ones, or a window's worth plus the rows
    let all = pos0.saturating_add(t);
    let keys = if shape.window > 0 { all.min(shape.window.saturating_add(t - 1)) } else { all };
    if t > scratch.max_rows || t.saturating_mul(shape.n_heads) >= BUSY_WORKGROUPS {
        return 1;
    }
    keys.div_ceil(KEYS_PER_SPLIT).clamp(1, scratch.max_splits)
}

/// `out[i, h, :] = softmax(scale · q[i, h] · K[0..=pos0+i]ᵀ) · V[0..=pos0+i]` for query rows
/// `i < t` at absolute positions `pos0 + i` (keys from `pos0 + i + 1 − window` on with a window,
/// scores soft-capped with `softcap`), query head `h` reading kv head
/// `h / (n_heads / n_kv_heads)`. `q`, `out`: f32 `[t, n_heads * head_dim]`; `cache_k`,
/// `cache_v`: layout `shape.kv`, already holding positions `0..pos0 + t` (a ring: the last
/// `window + t − 1` of them, so `shape.window` must be set). `splits` forces the
/// number of key splits (`None`: [`auto_splits`]); more than one adds a combine pass.
#[allow(clippy::too_many_arguments)]
pub fn attention<'a>(
    ctx: &Context,
    q: &wgpu::Buffer,
    cache_k: &wgpu::Buffer,
    cache_v: &wgpu::Buffer,
    out: &wgpu::Buffer,
    shape: &AttentionShape,
    pos: impl Into<Pos<'a>>,
    t: u32,
    scratch: &AttentionScratch,
    splits: Option<u32>,
) -> Result<Vec<Kernel>> {
    const OP: &str = "attention";
    let pos = pos.into();
    let pos0 = pos.first();
    let kv = &shape.kv;
    kv.validate(OP)?;
    kv.check_range(OP, pos0, t)?;
    let n_heads = shape.n_heads;
    ensure(n_heads > 0 && n_heads % kv.n_kv_heads == 0, OP, || {
        format!("n_heads = {n_heads} is not a positive multiple of n_kv_heads = {}", kv.n_kv_heads)
    })?;
    ensure(kv.head_dim <= MAX_HEAD_DIM, OP, || format!("head_dim {} > {MAX_HEAD_DIM}", kv.head_dim))?;
    ensure(shape.scale.is_finite(), OP, || format!("scale {} is not finite", shape.scale))?;
    ensure(shape.softcap.is_finite() && shape.softcap >= 0.0, OP, || {
        format!("softcap {} must be finite and ≥ 0", shape.softcap)
    })?;
    // A ring overwrites slot p mod capacity: row 0's oldest key (pos0 + 1 − window) must survive
    // the step's newest write (pos0 + t − 1).
    ensure(!kv.ring || (shape.window > 0 && shape.window as u64 + t as u64 - 1 <= kv.capacity as u64), OP, || {
        format!("a ring of {} slots cannot serve a window of {} keys to {t} rows", kv.capacity, shape.window)
    })?;
    let q_elems = t as u64 * n_heads as u64 * kv.head_dim as u64;
    check_len(OP, "q", q, q_elems)?;
    check_len(OP, "out", out, q_elems)?;
    kv.check_buffer(ctx, OP, "cache_k", cache_k)?;
    kv.check_buffer(ctx, OP, "cache_v", cache_v)?;
    for (name, b) in [("q", q), ("out", out)] {
        check_binding(ctx, OP, name, b)?;
    }
    ensure(q != out, OP, || "q and out must be different buffers".to_string())?;

    let n_splits = match splits {
        Some(s) => s,
        None => auto_splits(shape, pos0, t, scratch),
    };
    ensure(n_splits >= 1, OP, || "splits must be at least 1".to_string())?;
    if n_splits > 1 {
        ensure(n_splits <= scratch.max_splits, OP, || {
            format!("{n_splits} splits but the scratch holds {}", scratch.max_splits)
        })?;
        let slots = t as u64 * n_heads as u64 * n_splits as u64;
        check_len(OP, "scratch part_o", &scratch.part_o, slots * kv.head_dim as u64)?;
        check_len(OP, "scratch part_ml", &scratch.part_ml, slots * 2)?;
    }
    let n_wg = t as u64 * n_heads as u64 * n_splits as u64;
    ensure(n_wg <= u32::MAX as u64 && q_elems <= u32::MAX as u64, OP, || {
        format!("t = {t}, n_heads = {n_heads}, splits = {n_splits} overflow u32 indices")
    })?;

    let params = Params {
        t,
        n_heads,
        group: n_heads / kv.n_kv_heads,
        head_dim: kv.head_dim,
        capacity: kv.capacity,
        n_splits,
        row_words: kv.row_words(),
        scale_log2: shape.scale * std::f32::consts::LOG2_E,
        window: shape.window,
        softcap_log2: shape.softcap * std::f32::consts::LOG2_E,
        _pad: [0; 2],
    };
    let uniform = ctx.uniform("attention.params", &params);
    // CPU-emulated GPUs take the barrier-free variant (one invocation per (row, head, split)).
    let (entry, groups) =
        if ctx.caps.row_gemv { ("attend_row", (n_wg as u32).div_ceil(ROW_WG)) } else { ("attend", n_wg as u32) };
    let key = PipelineKey::new(Shader::Attention, entry).constant("KV_F16", kv.f16()).constant("RING", kv.ring as u32);
    let step = pos.buffer(ctx);
    let buffers =
        [(1, q), (2, cache_k), (3, cache_v), (4, out), (5, &scratch.part_o), (6, &scratch.part_ml), (7, &step)];
    let mut kernels = vec![Kernel::new(ctx, &key, &buffers, Some(uniform.clone()), ctx.grid(groups))?];
    if n_splits > 1 {
        let key = PipelineKey::new(Shader::Attention, "combine");
        let buffers = [(4, out), (5, &scratch.part_o), (6, &scratch.part_ml)];
        kernels.push(Kernel::new(ctx, &key, &buffers, Some(uniform), ctx.grid(t * n_heads))?);
    }
    Ok(kernels)
}

const _: () = assert!(MAX_HEAD_DIM == 4 * WG && std::mem::size_of::<Params>() % 16 == 0);
