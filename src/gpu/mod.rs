//! GPU plumbing shared by every op: the context (device, queue, caches), shader composition,
//! typed errors, and `Kernel`, one recorded dispatch.

pub mod context;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod shader_stats;
pub mod shaders;

pub use context::{
    Capabilities, Context, ContextOptions, CopyAfter, Counters, KernelVariants, PendingMap, PipelineKey,
};
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
    key: PipelineKey,
    /// The op's parameter uniform, held for the kernel's life.
    _params: Option<wgpu::Buffer>,
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
        Ok(Self { label, pipeline, bind_group, workgroups, key: key.clone(), _params: params })
    }

    /// The pipeline it runs: shader, entry point and override constants.
    pub fn key(&self) -> &PipelineKey {
        &self.key
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

/// A ring of small buffers the CPU maps for reading: each submission copies its result (a token
/// id) into the next free slot, and the CPU takes results oldest first. Several steps can be in
/// flight (pipelined decode) and nothing is allocated per step.
pub struct ReadbackRing {
    slots: Vec<(wgpu::Buffer, Option<PendingMap>)>,
    bytes: u64,
    /// Slot the next copy goes to; slots `next - in_flight .. next` (mod len) are in flight.
    next: usize,
    in_flight: usize,
}

impl ReadbackRing {
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.slots.iter().map(|(b, _)| b)
    }

    pub fn new(ctx: &Context, label: &str, slots: usize, bytes: u64) -> Result<Self> {
        ensure(slots > 0 && bytes > 0, "ReadbackRing", || format!("{slots} slots of {bytes} bytes"))?;
        let slots = (0..slots)
            .map(|i| Ok((ctx.readback_buffer(&format!("{label}.{i}"), bytes)?, None)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { slots, bytes, next: 0, in_flight: 0 })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The copy of `src[offset..offset + bytes]` into the next slot, to record in a submission;
    /// call [`submitted`](Self::submitted) after submitting it. Fails when every slot is in flight.
    pub fn copy_from<'a>(&'a self, src: &'a wgpu::Buffer, offset: u64) -> Result<CopyAfter<'a>> {
        ensure(self.in_flight < self.slots.len(), "ReadbackRing", || {
            format!("all {} slots are in flight; read one first", self.slots.len())
        })?;
        let dst = &self.slots[self.next].0;
        Ok(CopyAfter { src, src_offset: offset, dst, dst_offset: 0, bytes: self.bytes })
    }

    /// The copy from [`copy_from`](Self::copy_from) went in submission `index`: start mapping its slot.
    pub fn submitted(&mut self, ctx: &Context, index: wgpu::SubmissionIndex) {
        let slot = &mut self.slots[self.next];
        slot.1 = Some(ctx.start_map(&slot.0, index));
        self.next = (self.next + 1) % self.slots.len();
        self.in_flight += 1;
    }

    /// The oldest result in flight (waits for it).
    pub async fn read(&mut self, ctx: &Context) -> Result<Vec<u8>> {
        ensure(self.in_flight > 0, "ReadbackRing", || "nothing in flight to read".into())?;
        let n = self.slots.len();
        let i = (self.next + n - self.in_flight) % n;
        let pending = self.slots[i].1.take().ok_or_else(|| GpuError::Readback("slot was not mapped".into()))?;
        self.in_flight -= 1;
        ctx.finish_map(&self.slots[i].0, pending, self.bytes).await
    }

    /// Wait for and drop every result in flight (e.g. surplus pipelined steps), leaving the ring empty.
    pub async fn drain(&mut self, ctx: &Context) -> Result<()> {
        while self.in_flight > 0 {
            self.read(ctx).await?;
        }
        Ok(())
    }
}
