//! RMSNorm over the last axis: `y = x / sqrt(mean(x²) + eps) * w`. Shader: `shaders/rmsnorm.wgsl`.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

/// `y[rows, dim] = rmsnorm(x[rows, dim]) * w[dim]`.
pub fn rms_norm(
    ctx: &Context,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    y: &wgpu::Buffer,
    rows: u32,
    dim: u32,
    eps: f32,
) -> Result<Kernel> {
    norm_into(ctx, x, w, y, (rows, dim, eps), false)
}

/// Into a residual: `y[rows, dim] += rmsnorm(x[rows, dim]) * w[dim]` (Gemma's post-norms).
pub fn rms_norm_add(
    ctx: &Context,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    y: &wgpu::Buffer,
    rows: u32,
    dim: u32,
    eps: f32,
) -> Result<Kernel> {
    ensure(x != y && w != y, "rms_norm", || "y must differ from x and w".into())?;
    norm_into(ctx, x, w, y, (rows, dim, eps), true)
}

/// The `rmsnorm` entry: y = (y +) rmsnorm(x) * w, the sum per the `ACCUMULATE` constant.
fn norm_into(
    ctx: &Context,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    y: &wgpu::Buffer,
    (rows, dim, eps): (u32, u32, f32),
    accumulate: bool,
) -> Result<Kernel> {
    check(x, w, rows, dim)?;
    check_len("rms_norm", "y", y, rows as u64 * dim as u64)?;
    let params = ctx.uniform("rmsnorm.params", &Params { rows, dim, eps, _pad: 0 });
    let key = PipelineKey::new(Shader::RmsNorm, "rmsnorm").constant("ACCUMULATE", accumulate as u32);
    Kernel::new(ctx, &key, &[(1, w), (2, x), (3, y)], Some(params), ctx.grid(rows))
}

/// In place: `x[rows, dim] = rmsnorm(x) * w`.
pub fn rms_norm_inplace(
    ctx: &Context,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    rows: u32,
    dim: u32,
    eps: f32,
) -> Result<Kernel> {
    check(x, w, rows, dim)?;
    let params = ctx.uniform("rmsnorm.params", &Params { rows, dim, eps, _pad: 0 });
    let key = PipelineKey::new(Shader::RmsNorm, "rmsnorm_inplace");
    Kernel::new(ctx, &key, &[(1, w), (3, x)], Some(params), ctx.grid(rows))
}

fn check(x: &wgpu::Buffer, w: &wgpu::Buffer, rows: u32, dim: u32) -> Result<()> {
    ensure(rows > 0 && dim > 0, "rms_norm", || format!("empty shape rows={rows} dim={dim}"))?;
    check_len("rms_norm", "x", x, rows as u64 * dim as u64)?;
    check_len("rms_norm", "w", w, dim as u64)
}
