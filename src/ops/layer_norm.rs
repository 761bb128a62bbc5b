//! LayerNorm over the last axis with an optional residual added first (BERT's post-LN
//! `LayerNorm(x + sublayer(x))`): `out = (y − mean(y)) / sqrt(var(y) + eps) · weight + bias`,
//! `y = x (+ residual)`. Shader: `shaders/layer_norm.wgsl`.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup (one workgroup per row); equals `WG` in shaders/layer_norm.wgsl.
pub const WG: u32 = 256;
/// The longest row: each invocation holds `MAX_DIM / WG` elements in registers (`MAX_DIM` in the shader).
pub const MAX_DIM: u32 = 8192;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

/// `out[r] = LayerNorm(x[r] (+ residual[r])) · weight + bias` for rows `r < rows` of `dim` f32,
/// variance biased (÷ dim) as torch. `out` may be `x` itself (in place) but not `residual`,
/// `weight` or `bias`. `x`, `residual`, `out`: `[rows, dim]`; `weight`, `bias`: `[dim]`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    ctx: &Context,
    x: &wgpu::Buffer,
    residual: Option<&wgpu::Buffer>,
    weight: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    out: &wgpu::Buffer,
    rows: u32,
    dim: u32,
    eps: f32,
) -> Result<Kernel> {
    const OP: &str = "layer_norm";
    ensure(rows > 0 && dim > 0, OP, || format!("empty shape rows={rows} dim={dim}"))?;
    ensure(dim <= MAX_DIM, OP, || format!("dim {dim} > {MAX_DIM}"))?;
    let elems = rows as u64 * dim as u64;
    ensure(elems <= u32::MAX as u64, OP, || format!("rows = {rows} × dim = {dim} overflows u32 indices"))?;
    ensure(eps.is_finite() && eps >= 0.0, OP, || format!("eps {eps} must be finite and ≥ 0"))?;
    check_len(OP, "x", x, elems)?;
    check_len(OP, "out", out, elems)?;
    check_len(OP, "weight", weight, dim as u64)?;
    check_len(OP, "bias", bias, dim as u64)?;
    if let Some(r) = residual {
        check_len(OP, "residual", r, elems)?;
        ensure(r != out, OP, || "out must differ from residual".into())?;
    }
    ensure(weight != out && bias != out, OP, || "out must differ from weight and bias".into())?;

    let params = ctx.uniform("layer_norm.params", &Params { rows, dim, eps, _pad: 0 });
    let in_place = x == out;
    let entry = match (residual.is_some(), in_place) {
        (false, false) => "layer_norm",
        (true, false) => "layer_norm_add",
        (false, true) => "layer_norm_inplace",
        (true, true) => "layer_norm_add_inplace",
    };
    let mut buffers = vec![(1, weight), (2, bias), (5, out)];
    if !in_place {
        buffers.push((3, x));
    }
    if let Some(r) = residual {
        buffers.push((4, r));
    }
    let key = PipelineKey::new(Shader::LayerNorm, entry);
    Kernel::new(ctx, &key, &buffers, Some(params), ctx.grid(rows))
}

const _: () = assert!(MAX_DIM % WG == 0);
