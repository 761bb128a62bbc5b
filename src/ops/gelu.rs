//! Exact (erf) GELU in place, `x = x · ½ (1 + erf(x / √2))`: torch's default `nn.GELU()` and HF's
//! `"gelu"` (BERT's MLP), not the tanh approximation. Shader: `shaders/gelu.wgsl` (erfc from
//! Numerical Recipes' `erfcc`, fractional error < 1.2e-7).

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/gelu.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// `x[..n] = gelu(x[..n])` in place.
pub fn gelu(ctx: &Context, x: &wgpu::Buffer, n: u32) -> Result<Kernel> {
    ensure(n > 0 && n < 1 << 31, "gelu", || format!("{n} elements: need 1..2^31"))?;
    check_len("gelu", "x", x, n as u64)?;
    let params = ctx.uniform("gelu.params", &Params { n, _pad: [0; 3] });
    let key = PipelineKey::new(Shader::Gelu, "gelu");
    Kernel::new(ctx, &key, &[(1, x)], Some(params), ctx.grid(n.div_ceil(WG)))
}
