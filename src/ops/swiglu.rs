//! The gated activation of the MLP, `out = act(gate) · up`: SwiGLU (Llama/Qwen/Phi-3,
//! `silu(g) = g / (1 + exp(-g))`) or GeGLU (Gemma, tanh-approximated GELU) (`shaders/swiglu.wgsl`).

use super::check_len;
use crate::gpu::{ensure, Context, Kernel, PipelineKey, Result, Shader};

/// Invocations per workgroup; equals `WG` in shaders/swiglu.wgsl (tests/shaders.rs checks).
pub const WG: u32 = 256;

/// The gate's activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Act {
    /// `g · sigmoid(g)`.
    #[default]
    Silu,
    /// `0.5 g (1 + tanh(√(2/π) (g + 0.044715 g³)))` (PyTorch's `gelu(approximate="tanh")`).
    GeluTanh,
    /// `sigmoid(g)`: a plain gate (Qwen3.5's attention output gate; not in the fused GEMV).
    Sigmoid,
}

impl Act {
    /// The fused SwiGLU GEMV's `GELU` pipeline constant.
    pub fn gelu(self) -> u32 {
        (self == Act::GeluTanh) as u32
    }

    /// swiglu.wgsl's `ACT` pipeline constant.
    fn code(self) -> u32 {
        match self {
            Act::Silu => 0,
            Act::GeluTanh => 1,
            Act::Sigmoid => 2,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    f: u32,
    _pad: [u32; 2],
}

/// `out[t, f] = act(gate[t, f]) · up[t, f]` (separate gate_proj and up_proj outputs).
#[allow(clippy::too_many_arguments)]
pub fn swiglu(
    ctx: &Context,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    t: u32,
    f: u32,
    act: Act,
) -> Result<Kernel> {
    let n = elems(t, f)?;
    check_len("swiglu", "gate", gate, n as u64)?;
    check_len("swiglu", "up", up, n as u64)?;
    check_len("swiglu", "out", out, n as u64)?;
    // vec4 when the flat length allows it; buffers were checked to hold n elements
    let (entry, slots, count) = if n % 4 == 0 { ("swiglu4", [5, 6, 8], n / 4) } else { ("swiglu", [1, 2, 4], n) };
    let params = ctx.uniform("swiglu.params", &Params { n: count, f, _pad: [0; 2] });
    let key = PipelineKey::new(Shader::SwiGlu, entry).constant("ACT", act.code());
    let buffers = [(slots[0], gate), (slots[1], up), (slots[2], out)];
    Kernel::new(ctx, &key, &buffers, Some(params), ctx.grid(count.div_ceil(WG)))
}

/// `out[t, f] = act(gate_up[t, ..f]) · gate_up[t, f..]`: a stacked gate|up projection's output
/// `[t, 2f]`, gate in the first half of each row, up in the second.
pub fn swiglu_fused(
    ctx: &Context,
    gate_up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    t: u32,
    f: u32,
    act: Act,
) -> Result<Kernel> {
    let n = elems(t, f)?;
    check_len("swiglu_fused", "gate_up", gate_up, 2 * n as u64)?;
    check_len("swiglu_fused", "out", out, n as u64)?;
    let (entry, slots, count, row) =
        if f % 4 == 0 { ("swiglu_fused4", [7, 8], n / 4, f / 4) } else { ("swiglu_fused", [3, 4], n, f) };
    let params = ctx.uniform("swiglu.params", &Params { n: count, f: row, _pad: [0; 2] });
    let key = PipelineKey::new(Shader::SwiGlu, entry).constant("ACT", act.code());
    Kernel::new(ctx, &key, &[(slots[0], gate_up), (slots[1], out)], Some(params), ctx.grid(count.div_ceil(WG)))
}

/// t · f, checked: non-empty, and 2·t·f (the fused input) and the grid's ids fit in u32.
fn elems(t: u32, f: u32) -> Result<u32> {
    let n = t as u64 * f as u64;
    ensure(n > 0, "swiglu", || format!("empty shape t={t} f={f}"))?;
    ensure(n < 1 << 31, "swiglu", || format!("t·f = {n} elements exceed 2^31"))?;
    Ok(n as u32)
}
