//! The one owner of adapter, device and queue: limits and optional features are probed here once,
//! shader modules and pipelines are compiled once and cached, buffers are created (and size-checked) here.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use super::error::{GpuError, Result};
use super::shaders::{self, Shader};

/// How to open the GPU.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    pub power_preference: wgpu::PowerPreference,
    /// Use a smaller storage-binding limit than the device's: tensors above it are split into row
    /// chunks. Tests set this to prove the split; real devices with 128 MiB limits need it.
    pub max_binding_bytes: Option<u64>,
    /// Ignore `shader-f16`, `subgroups` and `timestamp-query` even when offered, so the portable
    /// path of every op can be tested on any device.
    pub portable_only: bool,
    /// Force the m = 1 matmul strategy: `Some(true)` one invocation per row, `Some(false)` the
    /// workgroup reduction; `None` picks by adapter type (see `Capabilities::row_gemv`).
    pub row_gemv: Option<bool>,
}

/// Optional capabilities found on the adapter and enabled on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// m = 1 matmuls use one invocation per row (no barriers): what CPU-emulated GPUs (SwiftShader,
    /// lavapipe) run fastest. Set for CPU adapters unless `ContextOptions::row_gemv` says otherwise.
    pub row_gemv: bool,
}

/// A compiled pipeline is identified by its shader, entry point and override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// (name, value bits) so the key is hashable; values are f64 per the WebGPU spec.
    pub constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    pub fn new(shader: Shader, entry: &'static str) -> Self {
        Self { shader, entry, constants: Vec::new() }
    }
    pub fn constant(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        self.constants.push((name, value.into().to_bits()));
        self
    }
    fn label(&self) -> String {
        let mut s = format!("{}::{}", self.shader.name(), self.entry);
        for (name, bits) in &self.constants {
            s.push_str(&format!(" {name}={}", f64::from_bits(*bits)));
        }
        s
    }
}

pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Capabilities,
    pub limits: wgpu::Limits,
    /// The binding size tensors are split against (≤ the device limit).
    max_binding_bytes: u64,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Errors wgpu reports outside a scope (it would panic by default); surfaced by the next readback.
    uncaptured: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Context {
    /// Open the default adapter with its own maxima for buffer and binding sizes.
    pub async fn new(opts: ContextOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: opts.power_preference,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter { backends: e.to_string() })?;
        let info = adapter.get_info();
        let offered = adapter.features();
        let want = |f: wgpu::Features| !opts.portable_only && offered.contains(f);
        let mut features = wgpu::Features::empty();
        let mut caps = Capabilities::default();
        if want(wgpu::Features::SHADER_F16) {
            features |= wgpu::Features::SHADER_F16;
            caps.shader_f16 = true;
        }
        if want(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 4 {
            features |= wgpu::Features::SUBGROUP;
            caps.subgroups = true;
            caps.subgroup_min_size = info.subgroup_min_size;
            caps.subgroup_max_size = info.subgroup_max_size;
        }
        // WEBGPU_LLM_GEMV=row|reduce overrides the adapter-type default (for benchmarks).
        let env = std::env::var("WEBGPU_LLM_GEMV").ok().and_then(|v| match v.as_str() {
            "row" => Some(true),
            "reduce" => Some(false),
            _ => None,
        });
        caps.row_gemv = opts.row_gemv.or(env).unwrap_or(info.device_type == wgpu::DeviceType::Cpu);
        if want(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
            caps.timestamp_query = true;
        }
        // Ask for everything the adapter has: the defaults (128 MiB binding, 256 MiB buffer,
        // 16 KiB workgroup memory) are far below what real GPUs give and would split every tensor.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("webgpu-llm"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let uncaptured = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let device_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let max_binding_bytes = match opts.max_binding_bytes {
            Some(forced) => forced.min(device_binding),
            None => device_binding,
        };
        Ok(Self {
            device,
            queue,
            info,
            caps,
            limits,
            max_binding_bytes,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            uncaptured,
        })
    }

    /// `new` for native callers (tests, CLI).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new(opts))
    }

    /// Largest byte range one storage binding may cover; tensors above it are split by rows.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    /// One-line description for logs and benchmark headers.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}); binding limit {} MiB; f16={} subgroups={}({}..{}) timestamps={} gemv={}",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.max_binding_bytes >> 20,
            self.caps.shader_f16,
            self.caps.subgroups,
            self.caps.subgroup_min_size,
            self.caps.subgroup_max_size,
            self.caps.timestamp_query,
            if self.caps.row_gemv { "row" } else { "reduce" }
        )
    }

    fn module(&self, shader: Shader) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().map_err(|_| poisoned())?;
        if let Some(m) = modules.get(&shader) {
            return Ok(m.clone());
        }
        let source = shaders::compose(shader, &self.caps, cfg!(target_arch = "wasm32"));
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        if let Some(err) = block_on_scope(scope) {
            return Err(GpuError::Shader { shader: shader.name(), message: err.to_string() });
        }
        modules.insert(shader, module.clone());
        Ok(module)
    }

    /// The compute pipeline for `key`, compiled on first use and cached for the context's life.
    pub fn pipeline(&self, key: &PipelineKey) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.lock().map_err(|_| poisoned())?.get(key) {
            return Ok(p.clone());
        }
        let module = self.module(key.shader)?;
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|(n, bits)| (*n, f64::from_bits(*bits))).collect();
        let label = key.label();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(err) = block_on_scope(scope) {
            return Err(GpuError::Shader { shader: key.shader.name(), message: format!("{label}: {err}") });
        }
        self.pipelines.lock().map_err(|_| poisoned())?.insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.limits.max_buffer_size {
            return Err(GpuError::LimitTooSmall {
                limit: "maxBufferSize",
                needed: bytes,
                available: self.limits.max_buffer_size,
                what: what.to_string(),
            });
        }
        Ok(())
    }

    /// An uninitialised storage buffer (rounded up to 4 bytes) that can also be copied to and from.
    pub fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        self.check_size(label, size)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (padded to 4 bytes).
    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        self.check_size(label, data.len() as u64)?;
        if data.len() % 4 == 0 && !data.is_empty() {
            return Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: data,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            }));
        }
        let mut padded = data.to_vec();
        padded.resize(data.len().max(4).next_multiple_of(4), 0);
        self.storage_init(label, &padded)
    }

    /// A small uniform buffer for an op's parameters.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// Run `alloc` and report an out-of-memory or validation failure as an error instead of a
    /// device-lost later. Use around large allocations (weights, KV cache).
    pub async fn try_alloc<T>(&self, what: &str, bytes: u64, alloc: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = alloc();
        let val_err = val.pop().await;
        let oom_err = oom.pop().await;
        if oom_err.is_some() {
            return Err(GpuError::OutOfMemory { what: what.to_string(), bytes });
        }
        if let Some(e) = val_err {
            return Err(GpuError::Validation(format!("{what}: {e}")));
        }
        out
    }

    /// Bind whole buffers to (binding slot, buffer) pairs of group 0 of `pipeline`. A mismatch with
    /// the shader's bindings is an error here (natively), not a panic or a silent bad dispatch.
    pub fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        buffers: &[(u32, &wgpu::Buffer)],
    ) -> Result<wgpu::BindGroup> {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: *i, resource: b.as_entire_binding() })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        match block_on_scope(scope) {
            Some(err) => Err(GpuError::Validation(format!("{label}: {err}"))),
            None => Ok(group),
        }
    }

    /// Workgroup counts for `n` workgroups, folded into y when above the per-dimension limit.
    /// Shaders recover the linear id as `wid.x + wid.y * nwg.x` and skip ids ≥ n.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if n <= max {
            [n.max(1), 1, 1]
        } else {
            let y = n.div_ceil(max);
            [n.div_ceil(y), y, 1]
        }
    }

    /// Record kernels into one compute pass of a new command buffer and submit it.
    pub fn run(&self, kernels: &[&super::Kernel]) {
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("run"), timestamp_writes: None });
            for k in kernels {
                k.record(&mut pass);
            }
        }
        self.queue.submit([encoder.finish()]);
    }

    /// Submit queued `write_buffer` data (natively, wait for it, so wgpu's staging copies stay
    /// bounded while a model streams in) and surface any GPU error reported so far.
    pub fn flush_writes(&self) -> Result<()> {
        self.queue.submit([]);
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The first GPU error reported since the last call, if any (out-of-memory, validation).
    pub fn take_error(&self) -> Option<GpuError> {
        let mut v = self.uncaptured.lock().ok()?;
        let first = v.first().cloned();
        v.clear();
        first.map(|msg| {
            if msg.to_ascii_lowercase().contains("out of memory") {
                GpuError::OutOfMemory { what: msg, bytes: 0 }
            } else {
                GpuError::Validation(msg)
            }
        })
    }

    /// Copy `bytes` bytes at `offset` of `buffer` back to the CPU. Fails with any GPU error
    /// reported since the previous readback, so a bad dispatch is not mistaken for a result.
    pub async fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.next_multiple_of(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_oneshot();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.await.map_err(|e| GpuError::Readback(e.to_string()))?;
        let view = staging.slice(..).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    pub async fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buffer, 0, (len * 4) as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub async fn read_u32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(buffer, 0, (len * 4) as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Block until all submitted work is done (native only; the browser has no blocking wait).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))
    }
}

fn poisoned() -> GpuError {
    GpuError::Validation("a pipeline cache lock was poisoned by an earlier panic".into())
}

/// Error scopes resolve immediately on native; in the browser the pipeline error surfaces through
/// the device's uncaptured-error handler instead, so we do not wait there.
fn block_on_scope(scope: wgpu::ErrorScopeGuard) -> Option<wgpu::Error> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(scope.pop())
    }
    #[cfg(target_arch = "wasm32")]
    {
        drop(scope.pop());
        None
    }
}

/// A minimal one-shot channel usable from a wgpu callback on both native and wasm.
fn futures_oneshot<T>() -> (OneshotTx<T>, OneshotRx<T>) {
    let shared = std::sync::Arc::new(Mutex::new(OneshotState { value: None, waker: None }));
    (OneshotTx(shared.clone()), OneshotRx(shared))
}

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<std::task::Waker>,
}
struct OneshotTx<T>(std::sync::Arc<Mutex<OneshotState<T>>>);
struct OneshotRx<T>(std::sync::Arc<Mutex<OneshotState<T>>>);

impl<T> OneshotTx<T> {
    fn send(self, v: T) {
        if let Ok(mut s) = self.0.lock() {
            s.value = Some(v);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl<T> std::future::Future for OneshotRx<T> {
    type Output = T;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let mut s = match self.0.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match s.value.take() {
            Some(v) => std::task::Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}
