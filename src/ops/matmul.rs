//! Matrix product with a packed weight matrix: `y[m, n] = x[m, k] · Wᵀ (+ bias[n]) (+ y)`, W in any
//! [`WeightFormat`]. Shader: `shaders/matmul.wgsl` (GEMV for m = 1, tiled GEMM for m > 1).
//!
//! W lives on the GPU as row chunks, each ≤ the context's binding limit (128 MiB on many devices,
//! less than one vocabulary projection): one kernel per chunk, writing its own columns of y.

use std::ops::Range;

use super::check_len;
use crate::gpu::{ensure, Context, GpuError, Kernel, PipelineKey, Result, Shader};
use crate::quant::{PackedMatrix, WeightFormat};

/// Rows of W per GEMV workgroup; equals `GEMV_ROWS` in shaders/matmul.wgsl (tests/shaders.rs checks).
pub const GEMV_ROWS: u32 = 2;
/// Rows of W per `gemv_row`/`gemv_row_q` workgroup (one per invocation): `WG` in shaders/matmul.wgsl.
pub const GEMV_ROW_WG: u32 = 64;
/// Rows of x per `gemm_row`/`gemm_row_q` invocation: `MB` in shaders/matmul.wgsl.
pub const GEMM_ROW_M: u32 = 8;
/// GEMM tile: x rows (`TM`) and W rows (`TN`) per workgroup, as in shaders/matmul.wgsl (checked there too).
pub const TM: u32 = 32;
pub const TN: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    rows: u32,
    row0: u32,
    units: u32,
    groups: u32,
    flags: u32,
}

/// Rows `[row0, row0 + rows)` of a matrix in their own buffers.
pub struct MatrixChunk {
    pub row0: u32,
    pub rows: u32,
    /// `rows * weight_row_bytes(k)` bytes.
    pub weights: wgpu::Buffer,
    /// The chunk's scale words (`None` for F16/F32).
    pub scales: Option<wgpu::Buffer>,
}

/// A weight matrix (`n` rows × `k`) on the GPU, split into row chunks by [`chunk_rows`].
pub struct QuantMatrix {
    pub format: WeightFormat,
    pub n: u32,
    pub k: u32,
    pub chunks: Vec<MatrixChunk>,
}

/// Split `n` rows into chunks whose weight and scale buffers each fit `max_binding_bytes`, as
/// evenly as possible. For Q4/Q8 with an odd number of groups per row every chunk but the last has
/// an even row count, so each chunk's scales start on a word of the global f16-pair packing: a
/// chunk's bytes are then plain sub-ranges of `PackedMatrix::{weights, scales}` ([`chunk_byte_ranges`]),
/// which a streaming loader can write directly.
pub fn chunk_rows(format: WeightFormat, n: usize, k: usize, max_binding_bytes: u64) -> Result<Vec<(u32, u32)>> {
    format.check_shape(n, k)?;
    let row_bytes = format.weight_row_bytes(k);
    let groups = format.groups_per_row(k) as u64;
    let scale_row_bytes = format.scale_row_bytes(k);
    let even = matches!(format, WeightFormat::Q8 | WeightFormat::Q4) && groups % 2 == 1;
    let mut max_rows = max_binding_bytes / row_bytes;
    if let Some(r) = max_binding_bytes.checked_div(scale_row_bytes) {
        max_rows = max_rows.min(r);
    }
    if even && max_rows < n as u64 {
        max_rows -= max_rows % 2;
    }
    let needed = row_bytes.max(scale_row_bytes) * if even { 2 } else { 1 };
    if max_rows == 0 {
        return Err(GpuError::LimitTooSmall {
            limit: "max_binding_bytes",
            needed,
            available: max_binding_bytes,
            what: format!("one chunk of a {format:?} {n}×{k} matrix"),
        });
    }
    let count = (n as u64).div_ceil(max_rows);
    let mut per = (n as u64).div_ceil(count);
    if even && count > 1 {
        per += per % 2; // still ≤ max_rows, which is even here
    }
    let mut chunks = Vec::with_capacity(count as usize);
    let mut row0 = 0u64;
    while row0 < n as u64 {
        let rows = per.min(n as u64 - row0);
        chunks.push((row0 as u32, rows as u32));
        row0 += rows;
    }
    Ok(chunks)
}

/// Byte ranges of `PackedMatrix::weights` and `::scales` (empty for F16/F32) that hold rows
/// `[row0, row0 + rows)`, for a chunk from [`chunk_rows`].
pub fn chunk_byte_ranges(format: WeightFormat, k: usize, row0: u32, rows: u32) -> (Range<u64>, Range<u64>) {
    let row_bytes = format.weight_row_bytes(k);
    let (row0, end) = (row0 as u64, row0 as u64 + rows as u64);
    let weights = row0 * row_bytes..end * row_bytes;
    let groups = format.groups_per_row(k) as u64;
    let scales = match format {
        WeightFormat::Q8 | WeightFormat::Q4 => (row0 * groups / 2) * 4..(end * groups).div_ceil(2) * 4,
        _ => {
            let per_row = format.scale_row_bytes(k);
            row0 * per_row..end * per_row
        }
    };
    (weights, scales)
}

impl QuantMatrix {
    /// Upload `packed`, split by [`chunk_rows`] against `ctx.max_binding_bytes()`.
    pub fn upload(ctx: &Context, label: &str, packed: &PackedMatrix) -> Result<Self> {
        packed.validate()?;
        let (format, n, k) = (packed.format, packed.n, packed.k);
        let mut chunks = Vec::new();
        for (i, (row0, rows)) in chunk_rows(format, n, k, ctx.max_binding_bytes())?.into_iter().enumerate() {
            let (w, s) = chunk_byte_ranges(format, k, row0, rows);
            let weights = ctx.storage_init(&format!("{label}.w{i}"), slice(packed.weight_bytes(), w)?)?;
            let scales = if s.is_empty() {
                None
            } else {
                Some(ctx.storage_init(&format!("{label}.s{i}"), slice(packed.scale_bytes(), s)?)?)
            };
            chunks.push(MatrixChunk { row0, rows, weights, scales });
        }
        Ok(Self { format, n: n as u32, k: k as u32, chunks })
    }

    /// `vec4<u32>` units per row.
    pub fn units(&self) -> u32 {
        self.format.units_per_row(self.k as usize) as u32
    }

    /// Quantization groups per row (0 for F16/F32).
    pub fn groups(&self) -> u32 {
        self.format.groups_per_row(self.k as usize) as u32
    }
}

fn slice(bytes: &[u8], r: Range<u64>) -> Result<&[u8]> {
    bytes.get(r.start as usize..r.end as usize).ok_or_else(|| GpuError::Shape {
        op: "matmul",
        message: format!("byte range {r:?} is outside a packed matrix of {} bytes", bytes.len()),
    })
}

/// What happens to the product before it is stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Add `bias[n]` (f32).
    pub bias: Option<&'a wgpu::Buffer>,
    /// `y += …` instead of `y = …` (a fused residual add).
    pub accumulate: bool,
}

/// `y[m, n] = x[m, k] · Wᵀ` (+ bias, or accumulated into y per `epilogue`); x and y are f32,
/// row-major, distinct buffers. One kernel per chunk of `w`.
pub fn matmul(
    ctx: &Context,
    x: &wgpu::Buffer,
    w: &QuantMatrix,
    y: &wgpu::Buffer,
    m: u32,
    epilogue: Epilogue<'_>,
) -> Result<Vec<Kernel>> {
    let (n, k) = (w.n, w.k);
    ensure(m > 0, "matmul", || "m = 0".into())?;
    ensure(m as u64 * k as u64 <= u32::MAX as u64 && m as u64 * n as u64 <= u32::MAX as u64, "matmul", || {
        format!("m = {m} × n = {n} or k = {k} elements exceed u32 indexing")
    })?;
    check_len("matmul", "x", x, m as u64 * k as u64)?;
    check_len("matmul", "y", y, m as u64 * n as u64)?;
    ensure(x != y, "matmul", || "x and y must be different buffers".into())?;
    if let Some(b) = epilogue.bias {
        check_len("matmul", "bias", b, n as u64)?;
        ensure(b != y, "matmul", || "bias and y must be different buffers".into())?;
    }
    let flags = epilogue.bias.is_some() as u32 | (epilogue.accumulate as u32) << 1;
    // Quantized GEMV reads x as vec4 (k is a multiple of 32 there) at its own binding slot.
    let row_gemv = ctx.caps.row_gemv;
    let (entry, x_slot) = match (m, w.format.is_quantized(), row_gemv) {
        (1, true, false) => ("gemv_q", 6),
        (1, false, false) => ("gemv", 1),
        (1, true, true) => ("gemv_row_q", 6),
        (1, false, true) => ("gemv_row", 1),
        (_, true, true) => ("gemm_row_q", 6),
        (_, false, true) => ("gemm_row", 1),
        _ => ("gemm", 1),
    };
    let key = PipelineKey::new(Shader::Matmul, entry).constant("FORMAT", w.format.shader_code());
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension;
    let mut kernels = Vec::with_capacity(w.chunks.len());
    for c in &w.chunks {
        let params = Params { m, n, k, rows: c.rows, row0: c.row0, units: w.units(), groups: w.groups(), flags };
        let workgroups = if m == 1 && row_gemv {
            ctx.grid(c.rows.div_ceil(GEMV_ROW_WG))
        } else if m == 1 {
            ctx.grid(c.rows.div_ceil(GEMV_ROWS))
        } else {
            let (gx, gy) = if row_gemv {
                (c.rows.div_ceil(GEMV_ROW_WG), m.div_ceil(GEMM_ROW_M))
            } else {
                (c.rows.div_ceil(TN), m.div_ceil(TM))
            };
            if gx.max(gy) > max_dim {
                return Err(GpuError::LimitTooSmall {
                    limit: "maxComputeWorkgroupsPerDimension",
                    needed: gx.max(gy) as u64,
                    available: max_dim as u64,
                    what: format!("matmul gemm tiles for m = {m}, {} rows", c.rows),
                });
            }
            [gx, gy, 1]
        };
        // Unused bindings still need a buffer: the weights stand in for scales, x for the bias.
        let scales = c.scales.as_ref().unwrap_or(&c.weights);
        let bias = epilogue.bias.unwrap_or(x);
        let params = ctx.uniform("matmul.params", &params);
        let mut bindings = vec![(x_slot, x), (2, &c.weights), (4, bias), (5, y)];
        if !matches!(entry, "gemv" | "gemv_row" | "gemm_row") {
            bindings.push((3, scales)); // the F32/F16 GEMVs have no scales binding
        }
        kernels.push(Kernel::new(ctx, &key, &bindings, Some(params), workgroups)?);
    }
    Ok(kernels)
}
