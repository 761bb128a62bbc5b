//! Buffer-to-buffer copy by a compute kernel (`shaders/copy.wgsl`): the benchmark's bandwidth
//! yardstick, so it must be a plain vec4 load/store with nothing else in the way.

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/copy.wgsl (tests/shaders.rs checks)
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_vec4: u32,
    _pad: [u32; 3],
}

/// `dst[..n] = src[..n]` for `n` 4-byte elements, `n` a multiple of 4.
pub fn copy(ctx: &Context, src: &wgpu::Buffer, dst: &wgpu::Buffer, n: u32) -> Result<Kernel> {
    ensure(n % 4 == 0, "copy", || format!("element count {n} is not a multiple of 4"))?;
    check_len("copy", "src", src, n as u64)?;
    check_len("copy", "dst", dst, n as u64)?;
    let params = ctx.uniform("copy.params", &Params { n_vec4: n / 4, _pad: [0; 3] });
    let key = PipelineKey::new(Shader::Copy, "copy");
    Kernel::new(ctx, &key, &[(1, src), (2, dst)], Some(params), ctx.grid((n / 4).div_ceil(WG)))
}
