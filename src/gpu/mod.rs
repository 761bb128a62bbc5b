//! GPU plumbing shared by every op: the context (device, queue, caches), shader composition,
//! typed errors, and `Kernel`, one recorded dispatch.

pub mod context;
pub mod error;
pub mod shaders;

pub use context::{Capabilities, Context, ContextOptions, PipelineKey};
pub use error::{ensure, GpuError, Result};
pub use shaders::Shader;

/// One compute dispatch, fully bound: building it checks shapes and compiles (or reuses) the
/// pipeline; recording it into a pass is separate, so a model can build its kernels once and
/// record them every step.
pub struct Kernel {
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    /// The op's parameter uniform, kept so callers can rewrite it (e.g. the decode position).
    pub params: Option<wgpu::Buffer>,
}

impl Kernel {
    /// Bind `(slot, buffer)` pairs to `key`'s pipeline; `params`, if any, is bound at slot 0.
    pub fn new(
        ctx: &Context,
        key: &PipelineKey,
        buffers: &[(u32, &wgpu::Buffer)],
        params: Option<wgpu::Buffer>,
        workgroups: [u32; 3],
    ) -> Result<Self> {
        for (slot, b) in buffers.iter() {
            let limit = ctx.limits.max_storage_buffer_binding_size;
            if b.size() > limit && b.usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(GpuError::LimitTooSmall {
                    limit: "maxStorageBufferBindingSize",
                    needed: b.size(),
                    available: limit,
                    what: format!("{} binding {slot}", key.shader.name()),
                });
            }
        }
        let pipeline = ctx.pipeline(key)?;
        let label = format!("{}::{}", key.shader.name(), key.entry);
        let mut all: Vec<(u32, &wgpu::Buffer)> = Vec::with_capacity(buffers.len() + 1);
        if let Some(p) = &params {
            all.push((0, p));
        }
        all.extend_from_slice(buffers);
        let bind_group = ctx.bind(&pipeline, &label, &all)?;
        Ok(Self { label, pipeline, bind_group, workgroups, params })
    }

    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}
