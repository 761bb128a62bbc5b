//! Embedding lookup: `out[i, :] = table[ids[i], :]` dequantized, for a table in any
//! [`WeightFormat`](crate::quant::WeightFormat), split into chunks or not. Shader: `shaders/embedding.wgsl`.

use super::check_len;
use super::matmul::QuantMatrix;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/embedding.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    dim: u32,
    row0: u32,
    rows: u32,
    units: u32,
    groups: u32,
    blocks: u32,
    last: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// `out[t, dim] = scale · table[ids[t], :]` for a `(vocab × dim)` table (scale 1, or Gemma's
/// √hidden); `ids` holds `t` u32s. One kernel per table chunk, each writing the tokens whose id is
/// in its rows. An id ≥ vocab yields a row of zeros (ids live on the GPU, so the host cannot reject
/// them).
pub fn embedding(
    ctx: &Context,
    table: &QuantMatrix,
    ids: &wgpu::Buffer,
    out: &wgpu::Buffer,
    t: u32,
    scale: f32,
) -> Result<Vec<Kernel>> {
    let dim = table.k;
    ensure(scale.is_finite(), "embedding", || format!("scale {scale} is not finite"))?;
    ensure(t > 0, "embedding", || "t = 0 tokens".into())?;
    ensure(t as u64 * dim as u64 <= u32::MAX as u64, "embedding", || {
        format!("t = {t} × dim = {dim} elements exceed u32 indexing")
    })?;
    check_len("embedding", "ids", ids, t as u64)?;
    check_len("embedding", "out", out, t as u64 * dim as u64)?;
    let blocks = table.units().div_ceil(WG);
    let total = t as u64 * blocks as u64;
    ensure(total <= u32::MAX as u64, "embedding", || format!("{total} workgroups exceed u32"))?;
    let key = PipelineKey::new(Shader::Embedding, "embedding").constant("FORMAT", table.format.shader_code());
    let mut kernels = Vec::with_capacity(table.chunks.len());
    for c in &table.chunks {
        let params = Params {
            t,
            dim,
            row0: c.row0,
            rows: c.rows,
            units: table.units(),
            groups: table.groups(),
            blocks,
            last: (c.row0 + c.rows == table.n) as u32,
            scale,
            _pad: [0; 3],
        };
        // F16/F32 have no scales; the weights stand in for the unused binding.
        let scales = c.scales.as_ref().unwrap_or(&c.weights);
        let params = ctx.uniform("embedding.params", &params);
        kernels.push(Kernel::new(
            ctx,
            &key,
            &[(1, ids), (2, &c.weights), (3, scales), (4, out)],
            Some(params),
            ctx.grid(total as u32),
        )?);
    }
    Ok(kernels)
}
