//! Elementwise add of f32 vectors, the residual connection (`shaders/add.wgsl`).

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/add.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: f32,
    _pad: [u32; 2],
}

/// `out[..n] = a[..n] + b[..n]`. `out` may be `a` or `b` (then it runs in place); `a` may be `b`
/// when `out` is a third buffer.
pub fn add(ctx: &Context, a: &wgpu::Buffer, b: &wgpu::Buffer, out: &wgpu::Buffer, n: u32) -> Result<Kernel> {
    // WebGPU forbids binding one buffer both read-only and writable in a dispatch: f32 add is
    // commutative, so an output that aliases an input is the in-place add onto it.
    if out == a {
        return add_inplace(ctx, a, b, n);
    }
    if out == b {
        return add_inplace(ctx, b, a, n);
    }
    check(a, b, n)?;
    check_len("add", "out", out, n as u64)?;
    let (entry, slots, count) = if n % 4 == 0 { ("add4", [4, 5, 6], n / 4) } else { ("add", [1, 2, 3], n) };
    kernel(ctx, entry, &[(slots[0], a), (slots[1], b), (slots[2], out)], count)
}

/// `a[..n] += b[..n]` (`a` and `b` distinct buffers).
pub fn add_inplace(ctx: &Context, a: &wgpu::Buffer, b: &wgpu::Buffer, n: u32) -> Result<Kernel> {
    ensure(a != b, "add_inplace", || "a and b are one buffer; use add(a, a, out)".into())?;
    check(a, b, n)?;
    let (entry, slots, count) = if n % 4 == 0 { ("add_inplace4", [5, 6], n / 4) } else { ("add_inplace", [2, 3], n) };
    kernel(ctx, entry, &[(slots[0], b), (slots[1], a)], count)
}

/// `a[..n] += c`: a constant added to every element (Gemma's norm weights become `1 + w` at load).
pub fn add_scalar(ctx: &Context, a: &wgpu::Buffer, c: f32, n: u32) -> Result<Kernel> {
    ensure(n > 0 && n < 1 << 31, "add_scalar", || format!("{n} elements: need 1..2^31"))?;
    ensure(c.is_finite(), "add_scalar", || format!("constant {c} is not finite"))?;
    check_len("add_scalar", "a", a, n as u64)?;
    let params = ctx.uniform("add.params", &Params { n, c, _pad: [0; 2] });
    Kernel::new(ctx, &PipelineKey::new(Shader::Add, "add_scalar"), &[(3, a)], Some(params), ctx.grid(n.div_ceil(WG)))
}

fn check(a: &wgpu::Buffer, b: &wgpu::Buffer, n: u32) -> Result<()> {
    ensure(n > 0, "add", || "empty add (n = 0)".into())?;
    // keeps workgroups · WG, the shader's linear id, inside u32
    ensure(n < 1 << 31, "add", || format!("{n} elements exceed 2^31"))?;
    check_len("add", "a", a, n as u64)?;
    check_len("add", "b", b, n as u64)
}

/// `count` = invocations: elements, or vec4s for the *4 entries.
fn kernel(ctx: &Context, entry: &'static str, buffers: &[(u32, &wgpu::Buffer)], count: u32) -> Result<Kernel> {
    let params = ctx.uniform("add.params", &Params { n: count, c: 0.0, _pad: [0; 2] });
    Kernel::new(ctx, &PipelineKey::new(Shader::Add, entry), buffers, Some(params), ctx.grid(count.div_ceil(WG)))
}
