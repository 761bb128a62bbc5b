//! Soft-capping, `x = c · tanh(x / c)` in place: Gemma 2's final logits (`shaders/softcap.wgsl`).
//! Attention's score cap lives in the attention kernel itself.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/softcap.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: f32,
    _pad: [u32; 2],
}

/// `x[..n] = c · tanh(x[..n] / c)`, c > 0.
pub fn softcap(ctx: &Context, x: &wgpu::Buffer, c: f32, n: u32) -> Result<Kernel> {
    ensure(n > 0 && n < 1 << 31, "softcap", || format!("{n} elements: need 1..2^31"))?;
    ensure(c.is_finite() && c > 0.0, "softcap", || format!("cap {c} must be finite and > 0"))?;
    check_len("softcap", "x", x, n as u64)?;
    let params = ctx.uniform("softcap.params", &Params { n, c, _pad: [0; 2] });
    let key = PipelineKey::new(Shader::Softcap, "softcap");
    Kernel::new(ctx, &key, &[(1, x)], Some(params), ctx.grid(n.div_ceil(WG)))
}
