//! Matrix product with a packed weight matrix: `y[m, n] = x[m, k] · Wᵀ (+ bias[n]) (+ y)`, W in any
//! [`WeightFormat`]. Shader: `shaders/matmul.wgsl` (GEMV for m = 1, tiled GEMM for m > 1).
//!
//! W lives on the GPU as row chunks, each ≤ the context's binding limit (128 MiB on many devices,
//! less than one vocabulary projection): one kernel per chunk, writing its own columns of y.

use std::ops::Range;

use super::act_q8::ActQ8;
use super::check_len;
use super::swiglu::Act;
use crate::gpu::{ensure, Context, GpuError, Kernel, PipelineKey, Result, Shader};
use crate::quant::{PackedMatrix, WeightFormat};

/// Rows of W per GEMV workgroup; equals `GEMV_ROWS` in shaders/matmul.wgsl (tests/shaders.rs checks).
pub const GEMV_ROWS: u32 = 2;

/// Weight bytes one invocation reads per iteration of a GEMV entry point's main loop (SwiGLU
/// off), and how many times its nested row loop runs: the denominator of `alu_per_byte`
/// (`gpu::shader_stats`). `None` for the GEMMs.
pub fn gemv_loop_bytes(entry: &str, format: WeightFormat) -> Option<(u64, u64)> {
    let rows = GEMV_ROWS as u64;
    match entry {
        "gemv_q" => Some((2 * 4 * rows, rows)), // words wi and wi + WG of each row
        // one group of its row: 32 nibbles or 32 bytes
        "gemv_row_q" if matches!(format, WeightFormat::Q4 | WeightFormat::Q4Asym) => Some((16, 1)),
        "gemv_row_q" if matches!(format, WeightFormat::Q8 | WeightFormat::Q8Asym) => Some((32, 1)),
        "gemv_row_q" => Some((4, 1)),      // one word of its row
        "gemv" => Some((16 * rows, rows)), // one 16-byte unit of each row
        "gemv_row" => Some((16, 1)),
        // one group per row: 32 bytes (Q8), else 16 bytes of nibbles (the K-quants' high bits
        // and side data not counted, as for gemv_row_q)
        "gemv_row_q8" if matches!(format, WeightFormat::Q8 | WeightFormat::Q8Asym) => Some((32, 1)),
        "gemv_row_q8" => Some((16, 1)),
        "gemv_q8" if matches!(format, WeightFormat::Q8 | WeightFormat::Q8Asym) => Some((32 * rows, rows)),
        "gemv_q8" => Some((16 * rows, rows)),
        _ => None,
    }
}
/// Rows of W per `gemv_row`/`gemv_row_q` workgroup (one per invocation): `WG` in shaders/matmul.wgsl.
pub const GEMV_ROW_WG: u32 = 64;
/// Rows of x per `gemm_row`/`gemm_row_q` invocation: `MB` in shaders/matmul.wgsl.
pub const GEMM_ROW_M: u32 = 8;
/// GEMM tile: x rows (`TM`) and W rows (`TN`) per workgroup, as in shaders/matmul.wgsl (checked there too).
pub const TM: u32 = 32;
pub const TN: u32 = 64;
/// The longest x row a GEMV can RMS-norm itself (`Epilogue::norm`): `NORM_MAX_K` in shaders/matmul.wgsl.
pub const NORM_MAX_K: u32 = 3072;

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
    y_stride: u32,
    y_col0: u32,
    x_row0: u32,
    half: u32,
    eps: f32,
    _pad: [u32; 3],
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
    /// Its GPU buffers (for `Context::release_all`).
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.chunks.iter().flat_map(|c| std::iter::once(&c.weights).chain(c.scales.as_ref()))
    }

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

    /// `parts` stacked by rows into one matrix (q over k over v, or gate over up), so one dispatch
    /// serves them all; copied on the GPU, the parts are left as they were. `None` when they
    /// cannot be stacked: formats or `k` differ, a part or the result spans more than one chunk,
    /// or a part's bytes do not end where the next part's may begin (a 4-byte boundary, and for
    /// Q4/Q8 a whole f16 scale pair).
    pub fn stack(ctx: &Context, label: &str, parts: &[&QuantMatrix]) -> Result<Option<QuantMatrix>> {
        let Some(first) = parts.first() else { return Ok(None) };
        let (format, k) = (first.format, first.k as usize);
        if parts.iter().any(|p| p.format != format || p.k != first.k || p.chunks.len() != 1) {
            return Ok(None);
        }
        let n: u32 = parts.iter().map(|p| p.n).sum();
        if chunk_rows(format, n as usize, k, ctx.max_binding_bytes())?.len() != 1 {
            return Ok(None);
        }
        let pairs = matches!(format, WeightFormat::Q8 | WeightFormat::Q4);
        let lens: Vec<(u64, u64)> = parts
            .iter()
            .map(|p| {
                let (w, s) = chunk_byte_ranges(format, k, 0, p.n);
                (w.end, s.end)
            })
            .collect();
        let whole_pairs = parts.iter().all(|p| !pairs || (p.n as u64 * p.groups() as u64) % 2 == 0);
        if !whole_pairs || lens.iter().any(|(w, s)| w % 4 != 0 || s % 4 != 0) {
            return Ok(None);
        }
        let weights: Vec<_> = parts.iter().zip(&lens).map(|(p, l)| (&p.chunks[0].weights, l.0)).collect();
        let weights = ctx.concat(&format!("{label}.w0"), &weights)?;
        let scales: Vec<_> =
            parts.iter().zip(&lens).filter_map(|(p, l)| p.chunks[0].scales.as_ref().map(|s| (s, l.1))).collect();
        let scales = if scales.is_empty() { None } else { Some(ctx.concat(&format!("{label}.s0"), &scales)?) };
        Ok(Some(QuantMatrix { format, n, k: first.k, chunks: vec![MatrixChunk { row0: 0, rows: n, weights, scales }] }))
    }

    /// Runs of rows `(first, count)` of this matrix gathered into a new one, in order (Qwen3.5's
    /// q_proj, whose query and gate rows alternate per head). `None` when the rows cannot be cut
    /// out as whole bytes: more than one chunk, or a run not starting and ending on a 4-byte
    /// boundary (for Q4/Q8, a whole f16 scale pair).
    pub fn gather_rows(
        ctx: &Context,
        label: &str,
        m: &QuantMatrix,
        runs: &[(u32, u32)],
    ) -> Result<Option<QuantMatrix>> {
        let k = m.k as usize;
        if m.chunks.len() != 1 || runs.is_empty() || runs.iter().any(|&(r0, n)| n == 0 || r0 + n > m.n) {
            return Ok(None);
        }
        let pairs = matches!(m.format, WeightFormat::Q8 | WeightFormat::Q4);
        let groups = m.groups() as u64;
        let mut w_parts = Vec::new();
        let mut s_parts = Vec::new();
        for &(row0, rows) in runs {
            if pairs && ((row0 as u64 * groups) % 2 != 0 || (rows as u64 * groups) % 2 != 0) {
                return Ok(None);
            }
            let (w, s) = chunk_byte_ranges(m.format, k, row0, rows);
            if [w.start, w.end, s.start, s.end].iter().any(|b| b % 4 != 0) {
                return Ok(None);
            }
            w_parts.push((&m.chunks[0].weights, w));
            if let Some(sb) = &m.chunks[0].scales {
                s_parts.push((sb, s));
            }
        }
        let n: u32 = runs.iter().map(|r| r.1).sum();
        let weights = ctx.concat_ranges(&format!("{label}.w0"), &w_parts)?;
        let scales = if s_parts.is_empty() { None } else { Some(ctx.concat_ranges(&format!("{label}.s0"), &s_parts)?) };
        Ok(Some(QuantMatrix {
            format: m.format,
            n,
            k: m.k,
            chunks: vec![MatrixChunk { row0: 0, rows: n, weights, scales }],
        }))
    }

    /// Free the matrix's buffers now (see [`Context::release`]).
    pub fn release(self, ctx: &Context) {
        for c in self.chunks {
            ctx.release(c.weights);
            if let Some(s) = c.scales {
                ctx.release(s);
            }
        }
    }

    /// Bytes on the GPU (weights and scales).
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.weights.size() + c.scales.as_ref().map_or(0, |s| s.size())).sum()
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

/// What happens to the product before it is stored, and where x and y sit in their buffers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Add `bias[n]` (f32).
    pub bias: Option<&'a wgpu::Buffer>,
    /// `y += …` instead of `y = …` (a fused residual add).
    pub accumulate: bool,
    /// y's row width in elements, ≥ n; 0 means n (y is exactly `[m, n]`).
    pub y_stride: u32,
    /// The column of y where output column 0 goes (e.g. k's place in a fused q|k|v row).
    pub y_col0: u32,
    /// The first row of x read (x is `[x_row0 + m, k]`): e.g. only the last token's row.
    pub x_row0: u32,
    /// Multiply by `rmsnorm(x) * weight` instead of x (GEMVs, k ≤ [`NORM_MAX_K`]; see
    /// [`norm_fusable`]): the norm before a projection costs no dispatch of its own.
    pub norm: Option<Norm<'a>>,
    /// The gate's activation in [`matmul_swiglu`] (ignored elsewhere).
    pub act: Act,
}

/// An RMSNorm folded into a GEMV: weight `[k]` and epsilon.
#[derive(Clone, Copy, Debug)]
pub struct Norm<'a> {
    pub weight: &'a wgpu::Buffer,
    pub eps: f32,
}

/// Whether a matmul of `m` rows over `k` inputs can take `Epilogue::norm`.
pub fn norm_fusable(m: u32, k: u32) -> bool {
    m == 1 && k <= NORM_MAX_K
}

/// Whether to fold an RMSNorm into the matmul on this device: where it can be, except on
/// CPU-emulated GPUs (`row_gemv`), whose barrier-free row GEMVs would each gain the norm's
/// workgroup reduction: SwiftShader decoded SmolLM2 2.6× slower with it (BENCHMARKS.md).
pub fn fold_norm(ctx: &Context, m: u32, k: u32) -> bool {
    norm_fusable(m, k) && !ctx.caps.row_gemv
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
    build(ctx, X::F32(x), w, y, m, epilogue, false)
}

/// Whether `format` has the integer-dot GEMVs (`matmul_q8`): the 4- and 8-bit formats and the
/// K-quants; F16/F32 have nothing to gain from int8 activations.
pub fn q8_format(format: WeightFormat) -> bool {
    format.is_quantized()
}

/// `y[0, n] = xq · Wᵀ` (+ bias, or accumulated, per `epilogue`) for one row of int8 activations
/// (`ops::act_q8`, which also applies any norm and picks the row: `epilogue.norm` and `x_row0`
/// must be unset). The products are integer dot products (`dot4I8Packed`), the scales applied
/// per group; x's rounding to int8 (relative error ≤ 1/254 of each block's largest |x|) is the
/// only difference from [`matmul`].
pub fn matmul_q8(
    ctx: &Context,
    xq: &ActQ8,
    w: &QuantMatrix,
    y: &wgpu::Buffer,
    epilogue: Epilogue<'_>,
) -> Result<Vec<Kernel>> {
    build(ctx, X::Q8(xq), w, y, 1, epilogue, false)
}

/// [`matmul_swiglu`] on int8 activations (see [`matmul_q8`]).
pub fn matmul_swiglu_q8(
    ctx: &Context,
    xq: &ActQ8,
    w: &QuantMatrix,
    y: &wgpu::Buffer,
    epilogue: Epilogue<'_>,
) -> Result<Vec<Kernel>> {
    check_swiglu(w, &epilogue)?;
    build(ctx, X::Q8(xq), w, y, 1, epilogue, true)
}

/// The matmul's x: f32 rows, or one row of int8 blocks.
#[derive(Clone, Copy)]
enum X<'a> {
    F32(&'a wgpu::Buffer),
    Q8(&'a ActQ8),
}

/// Whether [`matmul_swiglu`] takes `w` (a stacked gate|up matrix) for `m` rows.
pub fn swiglu_fusable(w: &QuantMatrix, m: u32) -> bool {
    m == 1 && w.n % 2 == 0 && w.chunks.len() == 1
}

/// `y[0, r] = act(x · W[r]) * (x · W[r + n/2])` for r < n/2 (act per `epilogue.act`): the MLP's gate, up and SwiGLU in
/// one GEMV over a stacked gate|up matrix (one chunk, m = 1; see [`swiglu_fusable`]). Only the
/// layout fields, the norm and the activation of `epilogue` apply.
pub fn matmul_swiglu(
    ctx: &Context,
    x: &wgpu::Buffer,
    w: &QuantMatrix,
    y: &wgpu::Buffer,
    epilogue: Epilogue<'_>,
) -> Result<Vec<Kernel>> {
    check_swiglu(w, &epilogue)?;
    build(ctx, X::F32(x), w, y, 1, epilogue, true)
}

fn check_swiglu(w: &QuantMatrix, epilogue: &Epilogue) -> Result<()> {
    ensure(swiglu_fusable(w, 1), "matmul", || {
        format!("SwiGLU GEMV needs an even row count in one chunk; got {} rows in {} chunks", w.n, w.chunks.len())
    })?;
    ensure(epilogue.bias.is_none() && !epilogue.accumulate, "matmul", || {
        "SwiGLU GEMV takes no bias or accumulate".into()
    })?;
    ensure(epilogue.act != Act::Sigmoid, "matmul", || "the fused GEMV gates with silu or tanh-GELU only".into())
}

fn build(
    ctx: &Context,
    input: X,
    w: &QuantMatrix,
    y: &wgpu::Buffer,
    m: u32,
    epilogue: Epilogue<'_>,
    swiglu: bool,
) -> Result<Vec<Kernel>> {
    let (n, k) = (w.n, w.k);
    let out_n = if swiglu { n / 2 } else { n };
    let y_stride = if epilogue.y_stride == 0 { out_n } else { epilogue.y_stride };
    ensure(m > 0, "matmul", || "m = 0".into())?;
    ensure(epilogue.y_col0 as u64 + out_n as u64 <= y_stride as u64, "matmul", || {
        format!(
            "columns {}..{} do not fit y rows of {y_stride}",
            epilogue.y_col0,
            epilogue.y_col0 as u64 + out_n as u64
        )
    })?;
    let x_rows = epilogue.x_row0 as u64 + m as u64;
    ensure(x_rows * k as u64 <= u32::MAX as u64 && m as u64 * y_stride as u64 <= u32::MAX as u64, "matmul", || {
        format!("m = {m} × n = {n} or k = {k} elements exceed u32 indexing")
    })?;
    // x stands in for unused bindings
    let x = match input {
        X::F32(x) => {
            check_len("matmul", "x", x, x_rows * k as u64)?;
            x
        }
        X::Q8(xq) => {
            ensure(q8_format(w.format), "matmul", || format!("{:?} weights have no int8-activation GEMV", w.format))?;
            ensure(m == 1 && xq.k == k, "matmul", || {
                format!("int8 activations of k = {} for a {m}-row product over k = {k}; need m = 1 and equal k", xq.k)
            })?;
            ensure(epilogue.norm.is_none() && epilogue.x_row0 == 0, "matmul", || {
                "int8 activations are normed and picked by act_q8: no norm or x_row0 here".into()
            })?;
            &xq.s
        }
    };
    check_len("matmul", "y", y, m as u64 * y_stride as u64)?;
    ensure(x != y, "matmul", || "x and y must be different buffers".into())?;
    if let Some(b) = epilogue.bias {
        check_len("matmul", "bias", b, n as u64)?;
        ensure(b != y, "matmul", || "bias and y must be different buffers".into())?;
    }
    if let Some(nw) = &epilogue.norm {
        ensure(norm_fusable(m, k), "matmul", || {
            format!("a folded RMSNorm needs m = 1 and k ≤ {NORM_MAX_K}; got m = {m}, k = {k}")
        })?;
        check_len("matmul", "norm weight", nw.weight, k as u64)?;
        ensure(nw.weight != y, "matmul", || "norm weight and y must be different buffers".into())?;
    }
    let flags = epilogue.bias.is_some() as u32 | (epilogue.accumulate as u32) << 1;
    // Quantized GEMV reads x as vec4 (k is a multiple of 32 there) at its own binding slot.
    let row_gemv = ctx.caps.row_gemv;
    let q8 = matches!(input, X::Q8(_));
    let (entry, x_slot) = match (m, w.format.is_quantized(), row_gemv) {
        _ if q8 && row_gemv => ("gemv_row_q8", 9),
        _ if q8 => ("gemv_q8", 9),
        (1, true, false) => ("gemv_q", 6),
        (1, false, false) => ("gemv", 1),
        (1, true, true) => ("gemv_row_q", 6),
        (1, false, true) => ("gemv_row", 1),
        (_, true, true) => ("gemm_row_q", 6),
        (_, false, true) => ("gemm_row", 1),
        _ => ("gemm", 1),
    };
    let key = PipelineKey::new(Shader::Matmul, entry)
        .constant("FORMAT", w.format.shader_code())
        .constant("SWIGLU", swiglu as u32)
        .constant("GELU", if swiglu { epilogue.act.gelu() } else { 0 })
        .constant("NORM", epilogue.norm.is_some() as u32);
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension;
    let mut kernels = Vec::with_capacity(w.chunks.len());
    for c in &w.chunks {
        let rows = if swiglu { c.rows / 2 } else { c.rows };
        let params = Params {
            m,
            n,
            k,
            rows,
            row0: c.row0,
            units: w.units(),
            groups: w.groups(),
            flags,
            y_stride,
            y_col0: epilogue.y_col0,
            x_row0: epilogue.x_row0,
            half: rows,
            eps: epilogue.norm.map_or(0.0, |nw| nw.eps),
            _pad: [0; 3],
        };
        let workgroups = if m == 1 && row_gemv {
            ctx.grid(rows.div_ceil(GEMV_ROW_WG))
        } else if m == 1 && swiglu {
            ctx.grid(rows) // one row pair per workgroup
        } else if m == 1 {
            ctx.grid(rows.div_ceil(GEMV_ROWS))
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
        if let X::Q8(xq) = input {
            bindings.push((8, &xq.q));
        } else if m == 1 {
            // GEMVs may norm x themselves: they read x at slot 1 and the weight at 7 (x stands in).
            if x_slot != 1 {
                bindings.push((1, x));
            }
            bindings.push((7, epilogue.norm.map_or(x, |nw| nw.weight)));
        }
        if !matches!(entry, "gemv" | "gemv_row" | "gemm_row") {
            bindings.push((3, scales)); // the F32/F16 GEMVs have no scales binding
        }
        kernels.push(Kernel::new(ctx, &key, &bindings, Some(params), workgroups)?);
    }
    Ok(kernels)
}
