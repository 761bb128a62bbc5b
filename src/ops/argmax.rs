//! Row-wise argmax of logits for greedy decoding, kept on the GPU (`shaders/argmax.wgsl`).
//! Ties go to the lowest index and NaN never wins, as `torch.argmax` on NaN-free rows.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Elements per partial workgroup; equals `CHUNK` in shaders/argmax.wgsl (tests/shaders.rs checks).
pub const CHUNK: u32 = 2048;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    n_chunks: u32,
    _pad: u32,
}

/// The partial pass's (key, index) pairs for up to `rows` rows of `n` logits, allocated once.
pub struct ArgmaxScratch {
    partial: wgpu::Buffer,
    rows: u32,
    n: u32,
}

impl ArgmaxScratch {
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> [&wgpu::Buffer; 1] {
        [&self.partial]
    }

    pub fn new(ctx: &Context, rows: u32, n: u32) -> Result<Self> {
        let chunks = n.div_ceil(CHUNK).max(1) as u64;
        Ok(Self { partial: ctx.storage("argmax.partial", rows.max(1) as u64 * chunks * 8)?, rows, n })
    }
}

/// `ids[r] = argmax(logits[r, ..n])` for each of `rows` rows; a row of only NaN gives `u32::MAX`.
/// Returns the kernels to record in order: one when `n` ≤ 2048, else a partial pass over chunks
/// of 2048 (into a scratch buffer this allocates; see [`argmax_into`]) and a combine pass.
pub fn argmax(ctx: &Context, logits: &wgpu::Buffer, ids: &wgpu::Buffer, rows: u32, n: u32) -> Result<Vec<Kernel>> {
    let scratch = ArgmaxScratch::new(ctx, rows, n)?;
    argmax_into(ctx, logits, ids, rows, n, &scratch)
}

/// [`argmax`] with its partial results in `scratch` (made for at least `rows` rows of `n`).
pub fn argmax_into(
    ctx: &Context,
    logits: &wgpu::Buffer,
    ids: &wgpu::Buffer,
    rows: u32,
    n: u32,
    scratch: &ArgmaxScratch,
) -> Result<Vec<Kernel>> {
    ensure(rows > 0 && n > 0, "argmax", || format!("empty shape rows={rows} n={n}"))?;
    ensure(rows <= scratch.rows && n <= scratch.n, "argmax", || {
        format!("{rows} rows of {n} but the scratch holds {} of {}", scratch.rows, scratch.n)
    })?;
    let elems = rows as u64 * n as u64;
    ensure(elems <= u32::MAX as u64, "argmax", || format!("rows·n = {elems} exceeds u32 indexing"))?;
    check_len("argmax", "logits", logits, elems)?;
    check_len("argmax", "ids", ids, rows as u64)?;
    let n_chunks = n.div_ceil(CHUNK);
    let params = Params { rows, n, n_chunks, _pad: 0 };
    let uniform = || ctx.uniform("argmax.params", &params);
    if n_chunks == 1 {
        let key = PipelineKey::new(Shader::Argmax, "argmax_direct");
        return Ok(vec![Kernel::new(ctx, &key, &[(1, logits), (4, ids)], Some(uniform()), ctx.grid(rows))?]);
    }
    let partial = &scratch.partial;
    let key = PipelineKey::new(Shader::Argmax, "argmax_partial");
    let pass1 = Kernel::new(ctx, &key, &[(1, logits), (2, partial)], Some(uniform()), ctx.grid(rows * n_chunks))?;
    let key = PipelineKey::new(Shader::Argmax, "argmax_combine");
    let pass2 = Kernel::new(ctx, &key, &[(3, partial), (4, ids)], Some(uniform()), ctx.grid(rows))?;
    Ok(vec![pass1, pass2])
}
