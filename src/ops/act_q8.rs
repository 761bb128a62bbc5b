//! Activations to int8 blocks (`shaders/act_q8.wgsl`): the input of the integer-dot GEMVs
//! (`ops::matmul::matmul_q8`). Each block of 32 elements of a row becomes 32 int8 with one f32
//! scale d = max|x| / 127 and round-to-nearest (ggml's Q8_0), optionally after an RMSNorm, which
//! this kernel then replaces.

use super::check_len;
use super::matmul::Norm;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Elements per block (one scale).
pub const BLOCK: u32 = 32;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    rows: u32,
    x_row0: u32,
    eps: f32,
}

/// Room for `rows` quantized rows of `k` elements: the int8 words and, per block, the scale d
/// and d·Σq over each half-block (`shaders/act_q8.wgsl` has the layout).
pub struct ActQ8 {
    pub k: u32,
    pub rows: u32,
    /// `[rows, k / 16]` vec4<u32>: block b's 32 int8 in vec4s 2b and 2b + 1.
    pub q: wgpu::Buffer,
    /// `[rows, k / 32]` vec4<f32>: (d, d·Σq[0..16), d·Σq[16..32), 0).
    pub s: wgpu::Buffer,
}

impl ActQ8 {
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> [&wgpu::Buffer; 2] {
        [&self.q, &self.s]
    }

    pub fn new(ctx: &Context, label: &str, rows: u32, k: u32) -> Result<Self> {
        ensure(rows > 0 && k > 0 && k % BLOCK == 0, "act_q8", || {
            format!("int8 activations need k a positive multiple of {BLOCK} and rows > 0; got k = {k}, rows = {rows}")
        })?;
        let blocks = rows as u64 * (k / BLOCK) as u64;
        Ok(Self {
            k,
            rows,
            q: ctx.storage(&format!("{label}.q"), blocks * 32)?,
            s: ctx.storage(&format!("{label}.s"), blocks * 16)?,
        })
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.q.size() + self.s.size()
    }
}

/// `out[r] = int8 blocks of x[x_row0 + r]` for r < rows (k = `out.k` elements per row), after
/// `rmsnorm(x) * weight` when `norm` is given.
pub fn act_q8(
    ctx: &Context,
    x: &wgpu::Buffer,
    out: &ActQ8,
    rows: u32,
    x_row0: u32,
    norm: Option<Norm>,
) -> Result<Kernel> {
    let k = out.k;
    ensure(rows > 0 && rows <= out.rows, "act_q8", || {
        format!("{rows} rows do not fit the {} rows of the int8 activations", out.rows)
    })?;
    ensure(rows <= ctx.limits.max_compute_workgroups_per_dimension, "act_q8", || {
        format!("{rows} rows exceed the workgroups per dispatch dimension")
    })?;
    ensure((x_row0 as u64 + rows as u64) * k as u64 <= u32::MAX as u64, "act_q8", || {
        format!("rows {x_row0}..{} of {k} elements exceed u32 indexing", x_row0 as u64 + rows as u64)
    })?;
    check_len("act_q8", "x", x, (x_row0 as u64 + rows as u64) * k as u64)?;
    if let Some(n) = &norm {
        check_len("act_q8", "norm weight", n.weight, k as u64)?;
    }
    let params = Params { k, rows, x_row0, eps: norm.map_or(0.0, |n| n.eps) };
    let params = ctx.uniform("act_q8.params", &params);
    let key = PipelineKey::new(Shader::ActQ8, "act_q8").constant("NORM", norm.is_some() as u32);
    let weight = norm.map_or(x, |n| n.weight);
    Kernel::new(ctx, &key, &[(1, x), (2, weight), (3, &out.q), (4, &out.s)], Some(params), [rows, 1, 1])
}
