//! The one owner of adapter, device and queue: limits and optional features are probed here once,
//! shader modules and pipelines are compiled once and cached, buffers are created (and size-checked) here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

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
    /// Force the decode GEMVs' activations: `Some(true)` int8 blocks and integer dot products
    /// (`ops::act_q8`), `Some(false)` f32; `None` picks by adapter (see `Capabilities::int8_dot`).
    pub int8_dot: Option<bool>,
    /// Force the tiled prefill GEMM's arithmetic: `Some(false)` f32 tiles even where the device has
    /// `shader-f16`; `None`/`Some(true)` f16 tiles wherever it has (see `Capabilities::f16_gemm`).
    pub f16_gemm: Option<bool>,
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
    /// Quantized decode GEMVs take x as int8 blocks and multiply with `dot4I8Packed` (DP4A):
    /// where WGSL has the packed dot products and `int8_dot_default` says it pays, unless
    /// `ContextOptions::int8_dot` says otherwise.
    pub int8_dot: bool,
    /// The tiled GEMM (m > 1 where `row_gemv` is off) keeps its workgroup tiles in f16 and multiplies
    /// in f16, accumulating in f32: half the workgroup memory traffic. Needs `shader_f16`; on unless
    /// `ContextOptions::f16_gemm` or `WEBGPU_LLM_F16_GEMM=0` says otherwise.
    pub f16_gemm: bool,
}

/// The kernel variants this context chose for its adapter, as benchmarks and `engine.modelInfo`
/// report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelVariants {
    /// One-row matmuls: `"row"` (one invocation per W row) or `"reduce"` (a workgroup reduction).
    pub gemv: &'static str,
    /// Quantized decode GEMVs on int8 activations (`Capabilities::int8_dot`).
    pub int8_dot: bool,
    /// Matmuls of several rows: `"row"` (`gemm_row`), `"tiled"` (f32 workgroup tiles) or
    /// `"tiled-f16"` (`Capabilities::f16_gemm`).
    pub gemm: &'static str,
}

/// Whether int8 activations pay on this adapter: a table by vendor, from measurements
/// (BENCHMARKS.md). Apple GPUs have no DP4A instruction (llama.cpp measured the path slower there);
/// NVIDIA, AMD and Intel execute it natively.
pub fn int8_dot_default(info: &wgpu::AdapterInfo) -> bool {
    const APPLE: u32 = 0x106b;
    info.vendor != APPLE && !info.name.to_ascii_lowercase().contains("apple")
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
    /// The override constants as the pipeline gets them (name, value).
    pub fn constant_values(&self) -> Vec<(&'static str, f64)> {
        self.constants.iter().map(|(n, bits)| (*n, f64::from_bits(*bits))).collect()
    }

    fn label(&self) -> String {
        let mut s = format!("{}::{}", self.shader.name(), self.entry);
        for (name, bits) in &self.constants {
            s.push_str(&format!(" {name}={}", f64::from_bits(*bits)));
        }
        s
    }
}

/// What the context has created and done since it was opened: always on (relaxed atomic adds),
/// so a benchmark or a test can take two snapshots and subtract them ([`Counters::since`]).
/// Everything that creates a GPU object, writes, records, submits or reads back goes through
/// the context, so these are complete for the engine's own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub buffers_created: u64,
    /// Bytes of all buffers created (uniforms, ≤ 64 bytes each and owned by kernels, are counted
    /// in `buffers_created` only).
    pub buffer_bytes_created: u64,
    /// Bytes of buffers alive now: created minus released (see [`Context::release`]); buffers
    /// the engine drops without releasing are few and small (per-call kernel uniforms).
    pub buffer_bytes_live: u64,
    /// The most `buffer_bytes_live` has been.
    pub peak_buffer_bytes: u64,
    pub bind_groups_created: u64,
    pub pipelines_created: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Queue submissions (a `write_buffer` rides on the next one).
    pub submits: u64,
    /// Bytes given to `queue.write_buffer` (not counting new buffers' first contents).
    pub bytes_written: u64,
    /// Bytes copied back to the CPU.
    pub bytes_read_back: u64,
}

impl Counters {
    /// The work done between `earlier` and `self` (`buffer_bytes_live` and `peak_buffer_bytes`
    /// stay `self`'s: they are levels, not counts).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            buffers_created: self.buffers_created - earlier.buffers_created,
            buffer_bytes_created: self.buffer_bytes_created - earlier.buffer_bytes_created,
            buffer_bytes_live: self.buffer_bytes_live,
            peak_buffer_bytes: self.peak_buffer_bytes,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            pipelines_created: self.pipelines_created - earlier.pipelines_created,
            dispatches: self.dispatches - earlier.dispatches,
            submits: self.submits - earlier.submits,
            bytes_written: self.bytes_written - earlier.bytes_written,
            bytes_read_back: self.bytes_read_back - earlier.bytes_read_back,
        }
    }
}

#[derive(Default)]
struct AtomicCounters {
    buffers_created: AtomicU64,
    buffer_bytes_created: AtomicU64,
    buffer_bytes_released: AtomicU64,
    peak_buffer_bytes: AtomicU64,
    bind_groups_created: AtomicU64,
    pipelines_created: AtomicU64,
    dispatches: AtomicU64,
    submits: AtomicU64,
    bytes_written: AtomicU64,
    bytes_read_back: AtomicU64,
}

/// A copy recorded after a submission's kernels: `bytes` from `src` at `src_offset` into
/// `dst` at `dst_offset` (e.g. a step's token id into a [`ReadbackRing`] slot).
pub struct CopyAfter<'a> {
    pub src: &'a wgpu::Buffer,
    pub src_offset: u64,
    pub dst: &'a wgpu::Buffer,
    pub dst_offset: u64,
    pub bytes: u64,
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
    /// Why the device was lost, once it is (driver reset, `destroy`): every later readback fails
    /// with `GpuError::DeviceLost`, and the web layer opens a new device for the next engine.
    lost: std::sync::Arc<Mutex<Option<String>>>,
    counters: AtomicCounters,
    /// Idle MAP_READ buffers, reused by `read_bytes` so repeated readbacks allocate nothing.
    staging: Mutex<Vec<wgpu::Buffer>>,
}

/// `read_bytes` keeps at most this many idle staging buffers, each at most `STAGING_KEEP_BYTES`.
const STAGING_KEEP: usize = 4;
const STAGING_KEEP_BYTES: u64 = 16 << 20;

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
        // WEBGPU_LLM_INT8_DOT=1|0 overrides the table (for benchmarks).
        let env = std::env::var("WEBGPU_LLM_INT8_DOT").ok().and_then(|v| match v.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        let packed_dot =
            instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        caps.int8_dot = packed_dot && opts.int8_dot.or(env).unwrap_or_else(|| int8_dot_default(&info));
        // WEBGPU_LLM_F16_GEMM=0|1 overrides (for benchmarks); it cannot turn on what the device lacks.
        let env = std::env::var("WEBGPU_LLM_F16_GEMM").ok().and_then(|v| match v.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        caps.f16_gemm = caps.shader_f16 && opts.f16_gemm.or(env).unwrap_or(true);
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
        let lost = std::sync::Arc::new(Mutex::new(None));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = sink.lock() {
                l.get_or_insert(if message.is_empty() {
                    format!("{reason:?}")
                } else {
                    format!("{reason:?}: {message}")
                });
            }
        });
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
            lost,
            counters: AtomicCounters::default(),
            staging: Mutex::new(Vec::new()),
        })
    }

    /// `new` for native callers (tests, CLI).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new(opts))
    }

    /// A snapshot of the counters (see [`Counters`]).
    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        Counters {
            buffers_created: c.buffers_created.load(Relaxed),
            buffer_bytes_created: c.buffer_bytes_created.load(Relaxed),
            buffer_bytes_live: c
                .buffer_bytes_created
                .load(Relaxed)
                .saturating_sub(c.buffer_bytes_released.load(Relaxed)),
            peak_buffer_bytes: c.peak_buffer_bytes.load(Relaxed),
            bind_groups_created: c.bind_groups_created.load(Relaxed),
            pipelines_created: c.pipelines_created.load(Relaxed),
            dispatches: c.dispatches.load(Relaxed),
            submits: c.submits.load(Relaxed),
            bytes_written: c.bytes_written.load(Relaxed),
            bytes_read_back: c.bytes_read_back.load(Relaxed),
        }
    }

    fn count_buffer(&self, bytes: u64) {
        let c = &self.counters;
        c.buffers_created.fetch_add(1, Relaxed);
        let created = c.buffer_bytes_created.fetch_add(bytes, Relaxed) + bytes;
        c.peak_buffer_bytes.fetch_max(created.saturating_sub(c.buffer_bytes_released.load(Relaxed)), Relaxed);
    }

    /// Free `buffer` now (wgpu keeps it until submitted work using it is done) and count its
    /// bytes as released, e.g. the parts of a stacked matrix.
    pub fn release(&self, buffer: wgpu::Buffer) {
        self.counters.buffer_bytes_released.fetch_add(buffer.size(), Relaxed);
        buffer.destroy();
    }

    /// Free every buffer of something being dropped (a model's weights and state), each once.
    /// The browser frees a dropped buffer's memory only when the JS garbage collector gets to it;
    /// this frees it now. Uniforms are destroyed but not counted (they are not in the byte counts).
    pub fn release_all<'a>(&self, buffers: impl IntoIterator<Item = &'a wgpu::Buffer>) {
        let mut seen = std::collections::HashSet::new();
        for b in buffers {
            if seen.insert(b) {
                if !b.usage().contains(wgpu::BufferUsages::UNIFORM) {
                    self.counters.buffer_bytes_released.fetch_add(b.size(), Relaxed);
                }
                b.destroy();
            }
        }
    }

    /// `queue.write_buffer`, counted; the data reaches the GPU before the next submission's work.
    pub fn write(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        self.counters.bytes_written.fetch_add(data.len() as u64, Relaxed);
        self.queue.write_buffer(buffer, offset, data);
    }

    fn submit(&self, command_buffers: Vec<wgpu::CommandBuffer>) -> wgpu::SubmissionIndex {
        self.counters.submits.fetch_add(1, Relaxed);
        self.queue.submit(command_buffers)
    }

    /// Largest byte range one storage binding may cover; tensors above it are split by rows.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    /// The kernel variants chosen for this adapter.
    pub fn variants(&self) -> KernelVariants {
        let gemm = match (self.caps.row_gemv, self.caps.f16_gemm) {
            (true, _) => "row",
            (false, false) => "tiled",
            (false, true) => "tiled-f16",
        };
        KernelVariants { gemv: if self.caps.row_gemv { "row" } else { "reduce" }, int8_dot: self.caps.int8_dot, gemm }
    }

    /// One-line description for logs and benchmark headers.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}); binding limit {} MiB; f16={} subgroups={}({}..{}) timestamps={} gemv={}{} gemm={}",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.max_binding_bytes >> 20,
            self.caps.shader_f16,
            self.caps.subgroups,
            self.caps.subgroup_min_size,
            self.caps.subgroup_max_size,
            self.caps.timestamp_query,
            if self.caps.row_gemv { "row" } else { "reduce" },
            if self.caps.int8_dot { "+int8" } else { "" },
            self.variants().gemm
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
        self.counters.pipelines_created.fetch_add(1, Relaxed);
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
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.buffer(label, bytes, usage)
    }

    /// An uninitialised buffer of `bytes` rounded up to 4, size-checked and counted.
    fn buffer(&self, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        self.check_size(label, size)?;
        self.count_buffer(size);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (padded to 4 bytes). The contents go through the queue
    /// (not a mapping at creation, which wgpu turns into a panic once the device is gone) and are
    /// not counted in `bytes_written`.
    pub fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        self.check_size(label, data.len() as u64)?;
        let buffer = self.storage(label, data.len() as u64)?;
        self.init(&buffer, data);
        Ok(buffer)
    }

    /// A small uniform buffer for an op's parameters (filled as `storage_init` fills).
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        let size = std::mem::size_of::<T>() as u64;
        // counted, but not in the byte counts: kernels own them and drop them without `release`
        self.counters.buffers_created.fetch_add(1, Relaxed);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.init(&buffer, bytemuck::bytes_of(params));
        buffer
    }

    /// A new buffer's first contents, padded to 4 bytes; they land before the next submission.
    fn init(&self, buffer: &wgpu::Buffer, data: &[u8]) {
        if data.len() % 4 == 0 {
            self.queue.write_buffer(buffer, 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buffer, 0, &padded);
        }
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
        self.counters.bind_groups_created.fetch_add(1, Relaxed);
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
        self.run_then_copy(kernels, &[]);
    }

    /// `run`, with `copies` recorded after the pass in the same command buffer: one submission.
    pub fn run_then_copy(&self, kernels: &[&super::Kernel], copies: &[CopyAfter<'_>]) -> wgpu::SubmissionIndex {
        let commands = self.encode(kernels, copies);
        self.submit_encoded(commands)
    }

    /// A new storage buffer holding `parts` — `(buffer, bytes from its start)` — one after the
    /// other, copied on the GPU in one submission (stacking matrices and biases at load).
    pub fn concat(&self, label: &str, parts: &[(&wgpu::Buffer, u64)]) -> Result<wgpu::Buffer> {
        let ranges: Vec<_> = parts.iter().map(|&(b, n)| (b, 0..n)).collect();
        self.concat_ranges(label, &ranges)
    }

    /// [`concat`](Self::concat) of byte ranges (splitting a matrix's rows at load).
    pub fn concat_ranges(&self, label: &str, parts: &[(&wgpu::Buffer, std::ops::Range<u64>)]) -> Result<wgpu::Buffer> {
        let out = self.storage(label, parts.iter().map(|(_, r)| r.end - r.start).sum())?;
        let mut at = 0;
        let copies: Vec<CopyAfter> = parts
            .iter()
            .map(|(src, r)| {
                let bytes = r.end - r.start;
                let c = CopyAfter { src, src_offset: r.start, dst: &out, dst_offset: at, bytes };
                at += bytes;
                c
            })
            .collect();
        self.run_then_copy(&[], &copies);
        Ok(out)
    }

    /// Submit what [`encode`](Self::encode) recorded.
    pub fn submit_encoded(&self, commands: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.submit(vec![commands])
    }

    /// Record kernels into one compute pass, then `copies`, without submitting (so the CPU cost
    /// of encoding can be timed apart from the driver's submit, which CPU drivers run inline).
    pub fn encode(&self, kernels: &[&super::Kernel], copies: &[CopyAfter<'_>]) -> wgpu::CommandBuffer {
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("run"), timestamp_writes: None });
            for k in kernels {
                k.record(&mut pass);
            }
        }
        self.counters.dispatches.fetch_add(kernels.len() as u64, Relaxed);
        for c in copies {
            encoder.copy_buffer_to_buffer(c.src, c.src_offset, c.dst, c.dst_offset, c.bytes);
        }
        encoder.finish()
    }

    /// A buffer the CPU can map for reading, filled by [`CopyAfter`]s (see [`ReadbackRing`]).
    pub fn readback_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.buffer(label, bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)
    }

    /// Start mapping `staging` (a [`readback_buffer`](Self::readback_buffer) whose copy went in
    /// submission `after`); [`finish_map`](Self::finish_map) waits for it and takes the bytes.
    pub fn start_map(&self, staging: &wgpu::Buffer, after: wgpu::SubmissionIndex) -> PendingMap {
        let (tx, rx) = futures_oneshot();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        PendingMap { rx, after }
    }

    /// Wait for `pending` (natively by polling the device; in the browser the map resolves on
    /// the event loop, so nothing blocks), copy out the first `bytes` bytes and unmap. Fails with
    /// any GPU error reported since the previous readback.
    pub async fn finish_map(&self, staging: &wgpu::Buffer, pending: PendingMap, bytes: u64) -> Result<Vec<u8>> {
        // Natively, wait for the submission that filled it, not for steps queued after it.
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(pending.after), timeout: None })
            .map_err(|e| self.poll_error(e))?;
        if let Err(e) = pending.rx.await {
            // A map fails when the device is gone; the browser may report the loss a moment later.
            #[cfg(target_arch = "wasm32")]
            for _ in 0..20 {
                if self.lost().is_some() {
                    break;
                }
                sleep_ms(10).await;
            }
            return Err(match self.lost() {
                Some(why) => GpuError::DeviceLost(why),
                None => GpuError::Readback(e.to_string()),
            });
        }
        let view = staging.slice(..).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        self.counters.bytes_read_back.fetch_add(bytes, Relaxed);
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Submit queued `write_buffer` data (natively, wait for it, so wgpu's staging copies stay
    /// bounded while a model streams in) and surface any GPU error reported so far.
    pub fn flush_writes(&self) -> Result<()> {
        self.submit(Vec::new());
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok()?.clone()
    }

    /// The first GPU error reported since the last call, if any (device lost, out-of-memory,
    /// validation).
    pub fn take_error(&self) -> Option<GpuError> {
        if let Some(why) = self.lost() {
            return Some(GpuError::DeviceLost(why));
        }
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
    /// Staging buffers are pooled, so a repeated readback of the same size allocates nothing.
    pub async fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.max(4).next_multiple_of(4);
        let pooled = {
            let mut pool = self.staging.lock().map_err(|_| poisoned())?;
            pool.iter().position(|b| b.size() >= size).map(|i| pool.swap_remove(i))
        };
        let staging = match pooled {
            Some(b) => b,
            None => self.readback_buffer("readback", size)?,
        };
        let copy = CopyAfter { src: buffer, src_offset: offset, dst: &staging, dst_offset: 0, bytes: size };
        let index = self.run_then_copy(&[], &[copy]);
        let pending = self.start_map(&staging, index);
        let out = self.finish_map(&staging, pending, bytes).await;
        let mut pool = self.staging.lock().map_err(|_| poisoned())?;
        if staging.size() <= STAGING_KEEP_BYTES && pool.len() < STAGING_KEEP {
            pool.push(staging);
        } else {
            drop(pool);
            self.release(staging);
        }
        out
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
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| self.poll_error(e))
    }

    /// A failed wait: the device is gone (a destroyed device's submissions fail, and its lost
    /// callback runs on the next maintenance, so that is given a turn first), or a readback error.
    #[cfg(not(target_arch = "wasm32"))]
    fn poll_error(&self, e: wgpu::PollError) -> GpuError {
        let _ = self.device.poll(wgpu::PollType::Poll);
        match self.lost() {
            Some(why) => GpuError::DeviceLost(why),
            None => GpuError::Readback(e.to_string()),
        }
    }
}

/// Resolve after `ms` milliseconds on the JS event loop (window or worker).
#[cfg(target_arch = "wasm32")]
async fn sleep_ms(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(f) = js_sys::Reflect::get(&global, &"setTimeout".into()) {
            let _ = js_sys::Function::from(f).call2(&global, &resolve, &ms.into());
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(p).await;
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

/// A buffer map in flight (see [`Context::start_map`]).
pub struct PendingMap {
    rx: OneshotRx<std::result::Result<(), wgpu::BufferAsyncError>>,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    after: wgpu::SubmissionIndex,
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
