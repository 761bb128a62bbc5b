//! One module per op: each checks shapes, picks a pipeline by key and returns bound `Kernel`s.
//! Recording and submitting are the caller's (see `Context::run`).

pub mod act_q8;
pub mod add;
pub mod argmax;
pub mod attention;
pub mod copy;
pub mod delta_net;
pub mod embedding;
pub mod encoder_attention;
pub mod gelu;
pub mod kv_write;
pub mod layer_norm;
pub mod matmul;
pub mod pool;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod softcap;
pub mod swiglu;

use crate::gpu::{GpuError, Result};

/// Fail unless `buf` holds at least `elems` 4-byte elements.
pub(crate) fn check_len(op: &'static str, name: &str, buf: &wgpu::Buffer, elems: u64) -> Result<()> {
    let needed = elems * 4;
    if buf.size() < needed {
        return Err(GpuError::Shape {
            op,
            message: format!("buffer `{name}` holds {} bytes but {needed} are needed ({elems} elements)", buf.size()),
        });
    }
    Ok(())
}

/// The step buffer's layout: a 16-byte uniform that position-dependent shaders (RoPE, the KV
/// write, attention) read as `step.pos0`.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    pub pos0: u32,
    pub _pad: [u32; 3],
}

/// The per-step values of a model, in one small uniform written once per step, so kernels built
/// once can serve every decode step (the decode plan).
pub struct StepBuffer(wgpu::Buffer);

impl StepBuffer {
    /// Its GPU buffer (for `Context::release_all`).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.0
    }

    pub fn new(ctx: &crate::gpu::Context) -> Self {
        Self(ctx.uniform("step", &StepParams::default()))
    }

    /// Set the position of row 0 for the next submission.
    pub fn set(&self, ctx: &crate::gpu::Context, pos0: u32) {
        ctx.write(&self.0, 0, bytemuck::bytes_of(&StepParams { pos0, _pad: [0; 3] }));
    }
}

/// Where a position-dependent kernel finds the position of its first row.
#[derive(Clone, Copy)]
pub enum Pos<'a> {
    /// Fixed when the kernel is built (it gets its own step uniform).
    At(u32),
    /// Read from `buf` when the kernel runs; `first` is the position it is built for: shapes are
    /// checked and choices (attention splits) made there, and the caller keeps later positions
    /// in range.
    Step { buf: &'a StepBuffer, first: u32 },
}

impl From<u32> for Pos<'_> {
    fn from(pos0: u32) -> Self {
        Pos::At(pos0)
    }
}

impl Pos<'_> {
    pub fn first(&self) -> u32 {
        match self {
            Pos::At(p) => *p,
            Pos::Step { first, .. } => *first,
        }
    }

    /// The uniform to bind as `step`.
    pub(crate) fn buffer(&self, ctx: &crate::gpu::Context) -> wgpu::Buffer {
        match self {
            Pos::At(pos0) => ctx.uniform("step.fixed", &StepParams { pos0: *pos0, _pad: [0; 3] }),
            Pos::Step { buf, .. } => buf.0.clone(),
        }
    }
}
