//! KV cache layout and the op that writes new K/V rows into it. Shader: `shaders/kv_write.wgsl`.
//!
//! One cache per layer for K and one for V, each `[n_kv_heads, capacity, head_dim]`, stored as u32
//! words: f32 (one element per word) or f16 (two per word, `pack2x16float`, even dim in the low
//! half). Shaders decode the words themselves, so f16 storage needs no `shader-f16` feature.
//!
//! A ring cache (`ring`, Gemma's sliding-window layers) keeps position p in slot p mod capacity,
//! so it holds the last `capacity` positions whatever the sequence's length. Every kernel indexes
//! slots that way; for a linear cache p < capacity, so the slot is p.

use super::{check_len, Pos};
use crate::gpu::{ensure, Context, GpuError, Kernel, PipelineKey, Result, Shader};

/// Element type of a KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvDtype {
    F32,
    /// Half the memory and bandwidth; values are rounded to f16 when written.
    F16,
}

/// Shape of one K (or V) cache buffer: `[n_kv_heads, capacity, head_dim]` of `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheShape {
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Positions the cache holds (the maximum context length, or a ring's size).
    pub capacity: u32,
    pub dtype: KvDtype,
    /// Slots are positions mod `capacity`: positions may run past it (attention then needs a
    /// window short enough that a step's writes never overwrite a key one of its queries reads).
    pub ring: bool,
}

impl KvCacheShape {
    /// u32 words per cached row (one head, one position).
    pub fn row_words(&self) -> u32 {
        match self.dtype {
            KvDtype::F32 => self.head_dim,
            KvDtype::F16 => self.head_dim / 2,
        }
    }

    /// Bytes of one K (or V) cache buffer.
    pub fn bytes(&self) -> u64 {
        self.n_kv_heads as u64 * self.capacity as u64 * self.row_words() as u64 * 4
    }

    /// Elements (f32) of one token's K or V row across all kv heads: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> u32 {
        self.n_kv_heads * self.head_dim
    }

    /// Check the shape itself; `op` names the caller in the error.
    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        ensure(self.n_kv_heads > 0 && self.head_dim > 0 && self.capacity > 0, op, || {
            format!("empty KV cache shape {self:?}")
        })?;
        ensure(self.dtype == KvDtype::F32 || self.head_dim % 2 == 0, op, || {
            format!("an f16 KV cache packs dims in pairs, so head_dim must be even (got {})", self.head_dim)
        })?;
        ensure(self.kv_dim() as u64 * self.capacity as u64 <= u32::MAX as u64, op, || {
            format!("KV cache {self:?} has more than 2^32 elements (shader indices are u32)")
        })
    }

    /// Check `[pos0, pos0 + t)` is a non-empty range the cache can take in one step: inside a
    /// linear cache, at most `capacity` rows for a ring.
    pub(crate) fn check_range(&self, op: &'static str, pos0: u32, t: u32) -> Result<()> {
        ensure(t > 0, op, || "t = 0 rows".to_string())?;
        if self.ring {
            return ensure(t <= self.capacity && pos0.checked_add(t).is_some(), op, || {
                format!("{t} rows at position {pos0} in a ring of {} slots", self.capacity)
            });
        }
        ensure(pos0 as u64 + t as u64 <= self.capacity as u64, op, || {
            format!("positions {pos0}..{} exceed the cache capacity {}", pos0 as u64 + t as u64, self.capacity)
        })
    }

    /// Check a cache buffer is large enough and bindable whole.
    pub(crate) fn check_buffer(&self, ctx: &Context, op: &'static str, name: &str, buf: &wgpu::Buffer) -> Result<()> {
        check_len(op, name, buf, self.bytes() / 4)?;
        check_binding(ctx, op, name, buf)
    }

    pub(crate) fn f16(&self) -> u32 {
        (self.dtype == KvDtype::F16) as u32
    }
}

/// Whole buffers are bound, so each must fit the device's storage-binding limit; checked here so
/// it is an error rather than a wgpu validation panic.
pub(crate) fn check_binding(ctx: &Context, op: &'static str, name: &str, buf: &wgpu::Buffer) -> Result<()> {
    let limit = ctx.limits.max_storage_buffer_binding_size;
    if buf.size() > limit {
        return Err(GpuError::Shape {
            op,
            message: format!("buffer `{name}` is {} bytes, above maxStorageBufferBindingSize = {limit}", buf.size()),
        });
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    n_kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    row_words: u32,
    n_words: u32,
    _pad: [u32; 2],
}

/// Invocations per workgroup; equals `WG` in shaders/kv_write.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 256;

/// Write `k_new`, `v_new` (f32 `[t, n_kv_heads * head_dim]`, already RoPE'd) to cache positions
/// `pos0..pos0 + t` of every kv head of `cache_k`, `cache_v` (layout `shape`).
#[allow(clippy::too_many_arguments)]
pub fn kv_write<'a>(
    ctx: &Context,
    k_new: &wgpu::Buffer,
    v_new: &wgpu::Buffer,
    cache_k: &wgpu::Buffer,
    cache_v: &wgpu::Buffer,
    shape: &KvCacheShape,
    pos: impl Into<Pos<'a>>,
    t: u32,
) -> Result<Kernel> {
    const OP: &str = "kv_write";
    let pos = pos.into();
    let pos0 = pos.first();
    shape.validate(OP)?;
    shape.check_range(OP, pos0, t)?;
    let new_elems = t as u64 * shape.kv_dim() as u64;
    check_len(OP, "k_new", k_new, new_elems)?;
    check_len(OP, "v_new", v_new, new_elems)?;
    shape.check_buffer(ctx, OP, "cache_k", cache_k)?;
    shape.check_buffer(ctx, OP, "cache_v", cache_v)?;
    for (name, b) in [("k_new", k_new), ("v_new", v_new)] {
        check_binding(ctx, OP, name, b)?;
    }
    ensure(cache_k != cache_v, OP, || "cache_k and cache_v must be different buffers".to_string())?;
    let n_words = t as u64 * shape.n_kv_heads as u64 * shape.row_words() as u64;
    ensure(n_words <= u32::MAX as u64, OP, || format!("{n_words} words to write exceed u32"))?;
    let n_words = n_words as u32;
    let params = Params {
        t,
        n_kv_heads: shape.n_kv_heads,
        head_dim: shape.head_dim,
        capacity: shape.capacity,
        row_words: shape.row_words(),
        n_words,
        _pad: [0; 2],
    };
    let params = ctx.uniform("kv_write.params", &params);
    let key = PipelineKey::new(Shader::KvWrite, "kv_write").constant("KV_F16", shape.f16());
    let step = pos.buffer(ctx);
    let buffers = [(1, k_new), (2, v_new), (3, cache_k), (4, cache_v), (5, &step)];
    Kernel::new(ctx, &key, &buffers, Some(params), ctx.grid(n_words.div_ceil(WG)))
}
